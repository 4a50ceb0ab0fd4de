"""Read intent exactly as it was at one commit, from any Git remote, through a local cache.

Steps receive a push event naming a commit; they must read *that* commit (not whatever the branch
points at by the time they run), so this adapter fetches a single sha into a bare cache per remote
and reads blobs from there. A commit already in the cache is never fetched again: commits are
immutable, so the cache needs no invalidation and a replayed event costs no network call.

Credentials never reach a command line, an error message, a log line or the cache's config:
user:password in an http(s) URL and the token from ``CHAMBERLAIN_GIT_TOKEN`` are sent as an
``Authorization: Basic`` header through git's ``GIT_CONFIG_*`` environment variables (scoped to
the remote's origin), and every message shows the URL with its credentials removed.
``CHAMBERLAIN_GIT_USERNAME`` names the user that goes with the token (default
``x-access-token``, which GitHub expects; Gitea and GitLab accept any user with a token).

Each fetched commit is pinned under ``refs/chamberlain/commits/<sha>`` so ``git gc`` in the
cache never prunes it. Symlinks and submodules are not intent: :meth:`IntentSource.files_at`
returns regular files only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

from chamberlain.adapters.gitrepo import ZERO_SHA
from chamberlain.logs import register_secret

TOKEN_ENV = "CHAMBERLAIN_GIT_TOKEN"  # noqa: S105 - a variable name, not a secret
USERNAME_ENV = "CHAMBERLAIN_GIT_USERNAME"
DEFAULT_USERNAME = "x-access-token"
FETCH_TIMEOUT_S = 300.0
LOCAL_TIMEOUT_S = 120.0

_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_NOT_FOUND_MARKERS = (
    "not our ref",
    "couldn't find remote ref",
    "no such remote ref",
    "unadvertised object",
    "not a valid object",
)
_REGULAR_FILE_MODES = frozenset({"100644", "100755"})
_INIT_LOCK = threading.Lock()
# Inherited variables that would point git at another repository or inject configuration.
_REPO_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
    }
)


class IntentSourceError(Exception):
    """Reading intent failed. ``transient`` says whether retrying later may succeed.

    Transient: the remote is unreachable, refuses our credentials or times out. Permanent: the
    commit does not exist there (or is not a commit). Messages never carry URL credentials.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def display_url(url: str) -> str:
    """The URL as it may be shown: no password, and no http(s) user (it may be a token)."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return _USERINFO_RE.sub(r"\1", url)
    user, _, host = parts.netloc.rpartition("@")
    keep_user = parts.scheme == "ssh" and ":" not in user
    netloc = f"{user}@{host}" if keep_user else host
    return urlunsplit(parts._replace(netloc=netloc))


def cache_key(url: str) -> str:
    """Name of the cache for a remote: a hash of its URL without credentials."""
    return hashlib.sha256(display_url(url).encode("utf-8")).hexdigest()[:24]


class IntentSource:
    """Fetch single commits of Git remotes into ``cache_dir`` and read files from them."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        token: str | None = None,
        username: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.cache_dir = Path(cache_dir)
        self._token = token if token is not None else env.get(TOKEN_ENV) or None
        self._username = username or env.get(USERNAME_ENV) or DEFAULT_USERNAME
        if self._token:
            register_secret(self._token)
        # ``environ`` only supplies chamberlain's settings; git runs in this process's env.
        self._base_env = {
            k: v for k, v in os.environ.items() if k not in _REPO_ENV and not _is_config_env(k)
        }
        self._locks: dict[str, threading.Lock] = {}
        # Commits are immutable: what is known about them once stays true.
        self._known: set[tuple[str, str]] = set()  # (cache repo, sha) present in the cache
        self._ancestry: dict[tuple[str, str, str], bool] = {}
        self._locks_guard = threading.Lock()

    # -- public API -------------------------------------------------------------------------

    def fetch(self, url: str, sha: str) -> None:
        """Make commit ``sha`` of ``url`` available locally; no network call if it already is."""
        _check_sha(sha)
        repo = self._repo(url)
        if (str(repo), sha) in self._known:
            return
        with self._lock(repo):
            if self._has_commit(repo, sha):
                self._known.add((str(repo), sha))
                return
            try:
                self._fetch(repo, url, sha)
            except IntentSourceError:
                # Another process sharing the cache may have fetched it meanwhile (ref lock).
                if self._has_commit(repo, sha):
                    return
                raise
            if not self._has_commit(repo, sha):
                raise IntentSourceError(
                    f"{sha} is not a commit in {display_url(url)}", transient=False
                )
            self._known.add((str(repo), sha))

    def exists(self, url: str, sha: str) -> bool:
        """Whether ``url`` has commit ``sha`` (fetching it if needed). Transient errors raise."""
        try:
            self.fetch(url, sha)
        except IntentSourceError as exc:
            if exc.transient:
                raise
            return False
        return True

    def files_at(self, url: str, sha: str, *, under: str | None = None) -> dict[str, bytes]:
        """Every regular file of the commit (optionally below directory ``under``) by path."""
        tree = self.tree_at(url, sha, under=under)
        contents = self.blobs(url, tree.values())
        return {path: contents[object_id] for path, object_id in tree.items()}

    def tree_at(self, url: str, sha: str, *, under: str | None = None) -> dict[str, str]:
        """Blob id of every regular file of the commit, by path (no content read).

        Blob ids name contents, so a caller can cache whatever it derives from a file by id
        and read (:meth:`blobs`) only the files a new commit changed.
        """
        self.fetch(url, sha)
        repo = self._repo(url)
        args = ["ls-tree", "-r", "-z", "--full-tree", sha]
        if under:
            args += ["--", under.strip("/") + "/"]
        listing = self._run(repo, args, url=url).stdout
        tree: dict[str, str] = {}
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, path = entry.partition(b"\t")
            mode, kind, object_id = meta.decode("ascii").split(" ")
            if kind == "blob" and mode in _REGULAR_FILE_MODES:
                tree[path.decode("utf-8", "surrogateescape")] = object_id
        return tree

    def blobs(self, url: str, object_ids: Iterable[str]) -> dict[str, bytes]:
        """Contents of blobs already in the cache (ids from :meth:`tree_at`), by id."""
        wanted = sorted(set(object_ids))
        for object_id in wanted:
            if not _SHA_RE.match(object_id):
                raise IntentSourceError(f"not an object id: {object_id[:80]!r}", transient=False)
        return self._read_blobs(self._repo(url), url, wanted)

    def head_of(self, url: str, ref: str) -> str | None:
        """The commit ``ref`` (``refs/heads/main``, or ``HEAD``) points at on the remote, or None.

        Asks the remote (``git ls-remote``), not the cache: the cache only knows commits.
        """
        if not (ref == "HEAD" or ref.startswith("refs/")) or any(c.isspace() for c in ref):
            raise IntentSourceError(f"not a full ref name: {ref[:80]!r}", transient=False)
        fetch_url, auth = self._split_credentials(url)
        try:
            result = self._run(
                self._repo(url),
                ["ls-remote", "--end-of-options", fetch_url, ref],
                url=url,
                ok_codes=None,
                extra_env=auth,
                timeout=FETCH_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise IntentSourceError(
                f"listing {ref} of {display_url(url)} timed out", transient=True
            ) from None
        if result.returncode != 0:
            detail = self._clean(result.stderr.decode("utf-8", "replace"), url)
            raise IntentSourceError(
                f"cannot list {ref} of {display_url(url)}: {detail}", transient=True
            )
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            object_id, _, name = line.partition("\t")
            if name == ref and _SHA_RE.match(object_id):
                return object_id
        return None

    def changed_paths(self, url: str, before: str, after: str) -> set[str]:
        """Paths that differ between two commits, renames counted as delete + add.

        A zero ``before`` (branch created) yields every path of ``after``; a zero ``after``
        (branch deleted) every path of ``before``.
        """
        if before == ZERO_SHA and after == ZERO_SHA:
            return set()
        if before == ZERO_SHA or after == ZERO_SHA:
            only = after if before == ZERO_SHA else before
            return set(self.files_at(url, only))
        self.fetch(url, before)
        self.fetch(url, after)
        out = self._run(
            self._repo(url),
            ["diff", "--name-only", "-z", "--no-renames", before, after, "--"],
            url=url,
        ).stdout
        return {p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p}

    def is_ancestor(self, url: str, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
        key = (str(self._repo(url)), ancestor, descendant)
        known = self._ancestry.get(key)
        if known is not None:
            return known
        self.fetch(url, ancestor)
        self.fetch(url, descendant)
        result = self._run(
            self._repo(url),
            ["merge-base", "--is-ancestor", ancestor, descendant],
            url=url,
            ok_codes=(0, 1),
        )
        self._ancestry[key] = result.returncode == 0
        return result.returncode == 0

    # -- internals --------------------------------------------------------------------------

    def _repo(self, url: str) -> Path:
        if not url or url.startswith("-"):
            raise IntentSourceError("invalid Git remote URL", transient=False)
        repo = self.cache_dir / f"{cache_key(url)}.git"
        if (repo / "HEAD").exists():
            return repo
        with _INIT_LOCK:
            if (repo / "HEAD").exists():
                return repo
            repo.parent.mkdir(parents=True, exist_ok=True)
            # Initialize beside the cache and rename into place, so another process sharing
            # the cache never sees (or trips over) a half-initialized repository.
            staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", dir=repo.parent))
            try:
                self._run(
                    staging, ["init", "--quiet", "--bare", str(staging)], url=url, git_dir=False
                )
                self._run(staging, ["config", "gc.auto", "0"], url=url)
                try:
                    staging.rename(repo)
                except OSError:
                    if not (repo / "HEAD").exists():
                        raise
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        return repo

    def _lock(self, repo: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(str(repo), threading.Lock())

    def _has_commit(self, repo: Path, sha: str) -> bool:
        result = self._run(repo, ["cat-file", "-e", f"{sha}^{{commit}}"], ok_codes=(0, 1, 128))
        return result.returncode == 0

    def _fetch(self, repo: Path, url: str, sha: str) -> None:
        fetch_url, auth = self._split_credentials(url)
        args = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--end-of-options",
            fetch_url,
            f"+{sha}:refs/chamberlain/commits/{sha}",
        ]
        try:
            result = self._run(
                repo, args, url=url, ok_codes=None, extra_env=auth, timeout=FETCH_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise IntentSourceError(
                f"fetching {sha} from {display_url(url)} timed out", transient=True
            ) from None
        if result.returncode == 0:
            return
        detail = self._clean(result.stderr.decode("utf-8", "replace"), url)
        lowered = detail.lower()
        not_found = any(marker in lowered for marker in _NOT_FOUND_MARKERS)
        what = "not found in" if not_found else "could not be fetched from"
        raise IntentSourceError(
            f"commit {sha} {what} {display_url(url)}: {detail}", transient=not not_found
        )

    def _split_credentials(self, url: str) -> tuple[str, dict[str, str]]:
        """Move http(s) credentials out of the URL into a header passed through the env."""
        parts = urlsplit(url)
        if parts.scheme == "file":
            return display_url(url), {}
        if parts.scheme not in ("http", "https"):
            return url, {}
        user: str | None = None
        secret: str | None = None
        if "@" in parts.netloc:
            userinfo = parts.netloc.rpartition("@")[0]
            name, has_password, password = userinfo.partition(":")
            user, secret = (name, password) if has_password else (self._username, name)
        elif self._token:
            user, secret = self._username, self._token
        clean = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        if secret is None:
            return clean, {}
        basic = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        origin = urlunsplit(SplitResult(parts.scheme, urlsplit(clean).netloc, "/", "", ""))
        return clean, {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{origin}.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }

    def _read_blobs(self, repo: Path, url: str, object_ids: list[str]) -> dict[str, bytes]:
        """Read many blobs through one ``git cat-file --batch`` process."""
        if not object_ids:
            return {}
        request = "".join(f"{oid}\n" for oid in object_ids).encode("ascii")
        out = self._run(repo, ["cat-file", "--batch"], url=url, stdin=request).stdout
        contents: dict[str, bytes] = {}
        pos = 0
        for oid in object_ids:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode("ascii").split(" ")
            if len(header) != 3 or header[0] != oid:
                raise IntentSourceError(
                    f"object {oid} missing from the cache of {display_url(url)}",
                    transient=False,
                )
            size = int(header[2])
            contents[oid] = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
        return contents

    def _run(
        self,
        repo: Path,
        args: list[str],
        *,
        url: str | None = None,
        ok_codes: tuple[int, ...] | None = (0,),
        extra_env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = LOCAL_TIMEOUT_S,
        git_dir: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run git on the cache; ``ok_codes=None`` leaves exit-code handling to the caller."""
        env = dict(self._base_env)
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_ALLOW_PROTOCOL="file:git:http:https:ssh",
            GIT_CONFIG_NOSYSTEM="1",
            LC_ALL="C",
        )
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        env.update(extra_env or {})
        command = ["git", f"--git-dir={repo}", *args] if git_dir else ["git", *args]
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if ok_codes is not None and result.returncode not in ok_codes:
            detail = self._clean(result.stderr.decode("utf-8", "replace"), url)
            where = f" for {display_url(url)}" if url else ""
            raise IntentSourceError(f"git {args[0]} failed{where}: {detail}", transient=False)
        return result

    def _clean(self, text: str, url: str | None) -> str:
        """Last lines of git's stderr with every credential removed."""
        if url:
            text = text.replace(url, display_url(url))
        text = _USERINFO_RE.sub(r"\1", text)
        for secret in [*(_url_secrets(url) if url else []), self._token or ""]:
            if secret:
                text = text.replace(secret, "***")
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return " / ".join(lines[-3:])[:500] or "no error output"


def _is_config_env(name: str) -> bool:
    return name.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))


def _url_secrets(url: str) -> list[str]:
    """The user and password parts of a URL, which must not survive into a message."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    user, _, password = netloc.rpartition("@")[0].partition(":")
    return [part for part in (password, user) if len(part) >= 4]


def _check_sha(sha: str) -> None:
    if not _SHA_RE.match(sha) or sha == ZERO_SHA:
        raise IntentSourceError(f"not a commit sha: {sha[:80]!r}", transient=False)
