"""Git as chamberlain sees it: real `git` commands, push webhooks, and their normalized form.

Intent lives in Git, so the ingress must turn whatever a forge sends (GitHub, Gitea, GitLab, or
a local repository in `chamberlain up`) into one ``dev.chamberlain.git.push.v1`` payload. For the
local case and for tests, :func:`push_payload` computes the GitHub webhook body from a real
repository, so the same ingress code path is exercised end to end.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ZERO_SHA = "0" * 40
MAX_PAYLOAD_COMMITS = 20  # GitHub's limit for the commits list of a push webhook
PROVIDERS = ("github", "gitea", "gitlab", "local")

# SHA-1 ids, or SHA-256 ids for repositories created with --object-format=sha256.
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_FIELD_SEP = "\x1f"


class GitError(RuntimeError):
    """A git command failed; the message carries the command and git's stderr."""


def _run(
    repo: Path, args: tuple[str, ...], env: Mapping[str, str] | None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    full_env["GIT_TERMINAL_PROMPT"] = "0"
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``git -C repo ARGS`` and return its stdout; raise :class:`GitError` on failure."""
    result = _run(repo, args, env)
    if result.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed in {repo} (exit {result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return result.stdout


def is_zero(sha: str) -> bool:
    """True for the all-zeros id forges use for "no commit" (branch created or deleted)."""
    return bool(sha) and set(sha) == {"0"}


def _succeeds(repo: Path, *args: str) -> bool:
    return _run(repo, args, None).returncode == 0


def _has_commit(repo: Path, sha: str) -> bool:
    return _succeeds(repo, "cat-file", "-e", f"{sha}^{{commit}}")


# ---------------------------------------------------------------------------------------------
# GitHub push webhook, computed from a real repository
# ---------------------------------------------------------------------------------------------


def _repository_info(repo: Path, repository_url: str | None) -> dict[str, Any]:
    url = repository_url or repo.resolve().as_uri()
    html_url = url[:-4] if url.endswith(".git") else url
    parts = [p for p in re.split(r"[/:]", html_url) if p]
    name = parts[-1] if parts else "repository"
    owner = parts[-2] if len(parts) >= 2 else "local"
    head = _run(repo, ("symbolic-ref", "--short", "HEAD"), None)
    default_branch = head.stdout.strip() if head.returncode == 0 else "main"
    return {
        # Stable across calls so consumers may key on it like GitHub's numeric id.
        "id": int(hashlib.sha256(url.encode()).hexdigest()[:12], 16),
        "name": name,
        "full_name": f"{owner}/{name}",
        "clone_url": url,
        "html_url": html_url,
        "default_branch": default_branch,
        "private": True,
    }


def _changed_paths(repo: Path, sha: str, first_parent: str | None) -> dict[str, list[str]]:
    # First-parent diff, like GitHub; a root commit is compared with the empty tree.
    base = [first_parent] if first_parent else ["--root"]
    out = git(
        repo, "diff-tree", "--no-commit-id", "-r", "-z", "--name-status", "--no-renames", *base, sha
    )
    changes: dict[str, list[str]] = {"added": [], "modified": [], "removed": []}
    fields = out.split("\0")
    for status, path in zip(fields[0::2], fields[1::2], strict=False):
        if not status:
            continue
        kind = {"A": "added", "D": "removed"}.get(status[0], "modified")
        changes[kind].append(path)
    return changes


def _commit_object(repo: Path, sha: str, html_url: str) -> dict[str, Any]:
    fmt = _FIELD_SEP.join(["%H", "%T", "%P", "%cI", "%an", "%ae", "%cn", "%ce", "%B"])
    raw = git(repo, "show", "-s", f"--format={fmt}", sha)
    commit_id, tree_id, parents, timestamp, an, ae, cn, ce, message = raw.split(_FIELD_SEP, 8)
    first_parent = parents.split()[0] if parents.strip() else None
    return {
        "id": commit_id,
        "tree_id": tree_id,
        "distinct": True,
        "message": message.rstrip("\n"),
        "timestamp": timestamp,
        "url": f"{html_url}/commit/{commit_id}",
        "author": {"name": an, "email": ae, "username": None},
        "committer": {"name": cn, "email": ce, "username": None},
        **_changed_paths(repo, commit_id, first_parent),
    }


def _pushed_commits(repo: Path, ref: str, before: str, after: str) -> list[str]:
    """Commit ids new to the repository with this push, oldest first (as GitHub lists them)."""
    if is_zero(after) or not ref.startswith("refs/heads/"):
        return []
    if not is_zero(before) and _has_commit(repo, before):
        spec = [f"{after}^{{commit}}", "--not", f"{before}^{{commit}}"]
    else:
        others = [
            line
            for line in git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/").split()
            if line != ref
        ]
        spec = [f"{after}^{{commit}}", "--not", *others]
    out = git(repo, "rev-list", "--reverse", "--topo-order", *spec, "--")
    return out.split()


def _pusher(repo: Path) -> dict[str, Any]:
    name = _run(repo, ("config", "user.name"), None).stdout.strip() or "chamberlain"
    email = _run(repo, ("config", "user.email"), None).stdout.strip() or None
    return {"name": name, "email": email}


def push_payload(
    repo: Path,
    *,
    ref: str,
    before: str,
    after: str,
    repository_url: str | None = None,
) -> dict[str, Any]:
    """The GitHub push webhook body for ``ref`` moving from ``before`` to ``after`` in ``repo``.

    ``repo`` (bare or not) must already hold ``after``. Branch creations list the commits no other
    branch has; tag pushes and deletions list none; ``forced`` is set when ``before`` is not an
    ancestor of ``after``.
    """
    for label, sha in (("before", before), ("after", after)):
        if not _SHA_RE.match(sha):
            raise ValueError(f"{label} must be a full hex commit id, got {sha!r}")
    if not ref.startswith("refs/"):
        raise ValueError(f"ref must be a full ref name (refs/...), got {ref!r}")
    repository = _repository_info(repo, repository_url)
    html_url = repository["html_url"]
    created, deleted = is_zero(before), is_zero(after)
    forced = (
        not created
        and not deleted
        and _has_commit(repo, before)
        and not _succeeds(repo, "merge-base", "--is-ancestor", before, f"{after}^{{commit}}")
    )
    commit_ids = _pushed_commits(repo, ref, before, after)[-MAX_PAYLOAD_COMMITS:]
    commits = [_commit_object(repo, sha, html_url) for sha in commit_ids]
    head_commit: dict[str, Any] | None = None
    if not deleted:
        head_sha = git(repo, "rev-parse", f"{after}^{{commit}}").strip()
        head_commit = next((c for c in commits if c["id"] == head_sha), None) or _commit_object(
            repo, head_sha, html_url
        )
    if created:
        compare = f"{html_url}/commit/{after[:12]}"
    else:
        compare = f"{html_url}/compare/{before[:12]}...{after[:12]}"
    pusher = _pusher(repo)
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": created,
        "deleted": deleted,
        "forced": forced,
        "base_ref": None,
        "compare": compare,
        "commits": commits,
        "head_commit": head_commit,
        "repository": repository,
        "pusher": pusher,
        "sender": {"login": pusher["name"]},
    }


# ---------------------------------------------------------------------------------------------
# Normalization of GitHub / Gitea / GitLab webhooks into dev.chamberlain.git.push.v1 data
# ---------------------------------------------------------------------------------------------


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} must be an object")
    if key not in obj:
        raise ValueError(f"{where}.{key} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _sha(obj: Mapping[str, Any], key: str, where: str) -> str:
    value: str = _require(obj, key, str, where)
    if not _SHA_RE.match(value):
        raise ValueError(f"{where}.{key} must be a full lowercase hex commit id")
    return value


def _flag(obj: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key} must be a boolean")
    return value


def _commits(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError("payload.commits must be a list")
    commits = []
    for index, commit in enumerate(raw):
        where = f"payload.commits[{index}]"
        entry: dict[str, Any] = {"id": _sha(commit, "id", where)}
        for key in ("added", "modified", "removed"):
            paths = _require(commit, key, list, where)
            if not all(isinstance(p, str) for p in paths):
                raise ValueError(f"{where}.{key} must be a list of strings")
            entry[key] = list(paths)
        commits.append(entry)
    return commits


def _first_str(obj: Mapping[str, Any], keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    raise ValueError(f"{where} needs one of {', '.join(keys)}")


def normalized_push(
    payload: Mapping[str, Any], provider: str, *, delivery: str | None = None
) -> dict[str, Any]:
    """Turn a forge's push webhook into ``dev.chamberlain.git.push.v1`` data.

    GitHub, Gitea and local payloads share GitHub's shape; GitLab's is recognised by its
    ``project``. ``repository.name`` is the namespaced name (``owner/repo``). GitLab does not
    report force pushes, so ``forced`` is false for it. Raises ValueError on a malformed payload.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown git provider {provider!r} (known: {', '.join(PROVIDERS)})")
    if not isinstance(payload, Mapping):
        raise ValueError("push payload must be a JSON object")
    ref: str = _require(payload, "ref", str, "payload")
    if not ref.startswith("refs/"):
        raise ValueError(f"payload.ref must be a full ref name (refs/...), got {ref!r}")
    before = _sha(payload, "before", "payload")
    after = _sha(payload, "after", "payload")
    if provider == "gitlab":
        kind = payload.get("object_kind", "push")
        if kind not in ("push", "tag_push"):
            raise ValueError(f"GitLab object_kind {kind!r} is not a push")
        project = _require(payload, "project", Mapping, "payload")
        url = _first_str(project, ("git_http_url", "http_url", "web_url"), "payload.project")
        name = _first_str(project, ("path_with_namespace", "name"), "payload.project")
        forced = False
    else:
        repository = _require(payload, "repository", Mapping, "payload")
        url = _first_str(repository, ("clone_url", "html_url", "url"), "payload.repository")
        name = _first_str(repository, ("full_name", "name"), "payload.repository")
        forced = _flag(payload, "forced", False, "payload")
    if delivery is not None and not isinstance(delivery, str):
        raise ValueError("delivery must be a string")
    return {
        "provider": provider,
        "repository": {"url": url, "name": name},
        "ref": ref,
        "before": before,
        "after": after,
        "created": _flag(payload, "created", is_zero(before), "payload"),
        "deleted": _flag(payload, "deleted", is_zero(after), "payload"),
        "forced": forced,
        "commits": _commits(payload.get("commits", [])),
        "delivery": delivery,
    }
