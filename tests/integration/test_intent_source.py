"""IntentSource against real git remotes: a bare repo on disk and a smart-HTTP server."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chamberlain.adapters.gitrepo import ZERO_SHA
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError, display_url
from tests.harness.gitrepo import IntentRepo

pytestmark = pytest.mark.integration

TOKEN = "ghp_intentSourceTestToken0123456789"


@pytest.fixture
def source(tmp_path: Path) -> IntentSource:
    return IntentSource(tmp_path / "cache", environ={})


@pytest.fixture
def history(intent_repo: IntentRepo) -> dict[str, str]:
    """Three commits on main: add, modify + add binary, remove + rename."""
    first = intent_repo.commit(
        {"intent/db.yaml": "name: db\n", "intent/api.yaml": "name: api\n", "README.md": "hi\n"},
        "declare db and api",
    )
    second = intent_repo.commit(
        {"intent/db.yaml": "name: db\nrotate: 30d\n", "blob.bin": "\x00\x01\x02"}, "rotate db"
    )
    intent_repo.git("mv", "intent/api.yaml", "intent/web-api.yaml")
    third = intent_repo.commit({"README.md": None}, "rename api, drop readme")
    intent_repo.push()
    return {"first": first, "second": second, "third": third}


def test_files_at_reads_each_commit_as_it_was(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str]
) -> None:
    first = source.files_at(intent_repo.url, history["first"])
    assert first == {
        "intent/db.yaml": b"name: db\n",
        "intent/api.yaml": b"name: api\n",
        "README.md": b"hi\n",
    }
    third = source.files_at(intent_repo.url, history["third"])
    assert third == {
        "intent/db.yaml": b"name: db\nrotate: 30d\n",
        "intent/web-api.yaml": b"name: api\n",
        "blob.bin": b"\x00\x01\x02",
    }
    assert set(source.files_at(intent_repo.url, history["third"], under="intent")) == {
        "intent/db.yaml",
        "intent/web-api.yaml",
    }


def test_symlinks_are_not_returned(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str]
) -> None:
    (intent_repo.work / "intent" / "link.yaml").symlink_to("db.yaml")
    intent_repo.git("add", "intent/link.yaml")
    sha = intent_repo.commit({}, "add a symlink")
    intent_repo.push()
    assert "intent/link.yaml" not in source.files_at(intent_repo.url, sha)


def test_changed_paths_counts_renames_as_delete_and_add(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str]
) -> None:
    url = intent_repo.url
    assert source.changed_paths(url, history["first"], history["second"]) == {
        "intent/db.yaml",
        "blob.bin",
    }
    assert source.changed_paths(url, history["second"], history["third"]) == {
        "intent/api.yaml",
        "intent/web-api.yaml",
        "README.md",
    }
    # Branch creation: everything in the new commit.
    assert source.changed_paths(url, ZERO_SHA, history["first"]) == {
        "intent/db.yaml",
        "intent/api.yaml",
        "README.md",
    }
    assert source.changed_paths(url, history["third"], history["third"]) == set()


def test_is_ancestor_follows_history_and_force_pushes(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str]
) -> None:
    url = intent_repo.url
    assert source.is_ancestor(url, history["first"], history["third"])
    assert not source.is_ancestor(url, history["third"], history["first"])
    assert source.is_ancestor(url, history["second"], history["second"])
    intent_repo.reset_hard(history["first"])
    rewritten = intent_repo.commit({"intent/db.yaml": "name: db\nrotate: 7d\n"}, "rewrite")
    intent_repo.push(force=True)
    assert not source.is_ancestor(url, history["third"], rewritten)
    assert source.is_ancestor(url, history["first"], rewritten)
    # The overwritten commit was cached before the force push and stays readable.
    assert "intent/web-api.yaml" in source.files_at(url, history["third"])


def test_second_fetch_of_a_known_commit_needs_no_remote(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str], tmp_path: Path
) -> None:
    url = intent_repo.url
    source.fetch(url, history["second"])
    intent_repo.bare.rename(tmp_path / "gone.git")

    source.fetch(url, history["second"])  # no remote any more, and no error
    assert source.files_at(url, history["second"])["intent/db.yaml"] == b"name: db\nrotate: 30d\n"
    assert source.exists(url, history["first"])  # an ancestor came with the first fetch

    with pytest.raises(IntentSourceError) as info:
        source.fetch(url, history["third"])
    assert info.value.transient, "an unreachable remote is worth retrying"


def test_a_fresh_instance_reuses_the_cache(
    intent_repo: IntentRepo, history: dict[str, str], tmp_path: Path
) -> None:
    IntentSource(tmp_path / "shared", environ={}).fetch(intent_repo.url, history["third"])
    intent_repo.bare.rename(tmp_path / "gone.git")
    again = IntentSource(tmp_path / "shared", environ={})
    assert "blob.bin" in again.files_at(intent_repo.url, history["third"])


def test_unknown_commit_is_a_permanent_error(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str]
) -> None:
    unknown = "1234567890abcdef1234567890abcdef12345678"
    with pytest.raises(IntentSourceError) as info:
        source.files_at(intent_repo.url, unknown)
    assert not info.value.transient
    assert unknown in str(info.value)
    assert source.exists(intent_repo.url, unknown) is False
    assert source.exists(intent_repo.url, history["first"]) is True


@pytest.mark.parametrize("bad", ["main", "--upload-pack=touch /tmp/pwned", ZERO_SHA, "abc"])
def test_only_full_shas_are_fetched(
    source: IntentSource, intent_repo: IntentRepo, bad: str
) -> None:
    with pytest.raises(IntentSourceError) as info:
        source.fetch(intent_repo.url, bad)
    assert not info.value.transient


def test_url_credentials_are_never_echoed(
    source: IntentSource, intent_repo: IntentRepo, history: dict[str, str], tmp_path: Path
) -> None:
    secret_url = intent_repo.url.replace("file://", "file://deploy:hunter2-s3cret@")
    assert "hunter2" not in display_url(secret_url)
    # Credentials do not change which cache is used, and the fetch works.
    assert "intent/db.yaml" in source.files_at(secret_url, history["first"])

    missing = f"file://deploy:hunter2-s3cret@{tmp_path}/missing.git"
    closed = "https://deploy:hunter2-s3cret@127.0.0.1:9/acme/intent.git"
    token_only = "https://hunter2-s3cret@127.0.0.1:9/acme/intent.git"
    for url in (missing, closed, token_only):
        with pytest.raises(IntentSourceError) as info:
            source.fetch(url, history["third"])
        assert info.value.transient
        assert "hunter2" not in str(info.value)
        assert "127.0.0.1" in str(info.value) or "missing.git" in str(info.value)
    for config in (tmp_path / "cache").glob("*.git/config"):
        assert "hunter2" not in config.read_text()


# -- https-style remotes with a token: a real git smart-HTTP server ------------------------------


class GitHttpServer(ThreadingHTTPServer):
    """``git http-backend`` behind Basic auth, serving the repositories under ``root``."""

    def __init__(self, root: Path, credentials: tuple[str, str]) -> None:
        self.root = root
        self.expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.authorizations: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._backend()

            def do_POST(self) -> None:
                self._backend()

            def _backend(self) -> None:
                auth = self.headers.get("Authorization")
                server.authorizations.append(auth)
                if auth != server.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                    "REMOTE_USER": "deploy",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                out = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
                ).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                headers = [line.split(b":", 1) for line in head.split(b"\r\n") if b":" in line]
                status = 200
                for name, value in headers:
                    if name.lower() == b"status":
                        status = int(value.split()[0])
                self.send_response(status)
                for name, value in headers:
                    if name.lower() != b"status":
                        self.send_header(name.decode(), value.strip().decode())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def git_http(intent_repo: IntentRepo) -> Iterator[GitHttpServer]:
    server = GitHttpServer(intent_repo.bare.parent, ("x-access-token", TOKEN))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_token_from_env_authenticates_an_http_remote(
    git_http: GitHttpServer, intent_repo: IntentRepo, history: dict[str, str], tmp_path: Path
) -> None:
    url = git_http.url(intent_repo.bare.name)
    anonymous = IntentSource(tmp_path / "anon", environ={})
    with pytest.raises(IntentSourceError) as info:
        anonymous.fetch(url, history["third"])
    assert info.value.transient

    authed = IntentSource(tmp_path / "authed", environ={"CHAMBERLAIN_GIT_TOKEN": TOKEN})
    assert authed.files_at(url, history["third"])["intent/web-api.yaml"] == b"name: api\n"
    assert git_http.expected in git_http.authorizations
    cache_files = [p for p in (tmp_path / "authed").rglob("*") if p.is_file()]
    assert cache_files
    for path in cache_files:
        assert TOKEN.encode() not in path.read_bytes()


def test_wrong_token_fails_without_echoing_it(
    git_http: GitHttpServer, intent_repo: IntentRepo, history: dict[str, str], tmp_path: Path
) -> None:
    wrong = "ghp_wrongTokenValue987654321"
    source = IntentSource(tmp_path / "c", environ={"CHAMBERLAIN_GIT_TOKEN": wrong})
    with pytest.raises(IntentSourceError) as info:
        source.fetch(git_http.url(intent_repo.bare.name), history["first"])
    assert wrong not in str(info.value)


def test_credentials_in_an_http_url_become_a_header(
    git_http: GitHttpServer, intent_repo: IntentRepo, history: dict[str, str], tmp_path: Path
) -> None:
    plain = git_http.url(intent_repo.bare.name)
    with_creds = plain.replace("http://", f"http://x-access-token:{TOKEN}@")
    source = IntentSource(tmp_path / "c", environ={})
    assert source.exists(with_creds, history["second"])
    # Same cache for the URL with and without credentials: no second network round.
    git_http.authorizations.clear()
    assert source.exists(plain, history["second"])
    assert git_http.authorizations == []
