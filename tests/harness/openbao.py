"""Pytest fixtures for a real OpenBao: one shared dev server, a namespace per test, raft servers.

A dev server starts in ~0.3 s but raft initialization costs ~10 s, so tests that only need the
API share one dev server and get isolation from a fresh namespace each; tests about
init/unseal/restart/audit get their own raft server. When a test fails, the tail of every
OpenBao log it used is attached to the report as an "openbao log" section.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest

from chamberlain.adapters.bao_server import BaoServer, start_dev, start_raft, started_servers

_USED_SERVERS = pytest.StashKey[list[BaoServer]]()
_FIRST_STARTED = pytest.StashKey[int]()
_SESSION_DEV: list[BaoServer] = []


@dataclass(frozen=True)
class BaoScope:
    """An isolated OpenBao namespace inside the shared dev server."""

    server: BaoServer
    addr: str
    token: str
    namespace: str

    def client(self) -> hvac.Client:
        """A client bound to this test's namespace (every path is relative to it)."""
        return hvac.Client(url=self.addr, token=self.token, namespace=self.namespace)

    def root_client(self) -> hvac.Client:
        """A client for the root namespace of the dev server (for sys-level calls)."""
        return hvac.Client(url=self.addr, token=self.token)


def _mark_used(request: pytest.FixtureRequest, server: BaoServer) -> None:
    item = request.node
    used = item.stash.setdefault(_USED_SERVERS, [])
    if server not in used:
        used.append(server)


@pytest.fixture(scope="session")
def bao_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """One in-memory dev-mode OpenBao for the whole session (root token in .root_token)."""
    server = start_dev(tmp_path_factory.mktemp("openbao-dev"))
    _SESSION_DEV.append(server)
    try:
        yield server
    finally:
        server.stop()
        _SESSION_DEV.remove(server)


def _child_namespaces(client: hvac.Client) -> list[str]:
    try:
        listed = client.sys.list_namespaces()
    except hvac.exceptions.InvalidPath:
        return []
    keys: list[str] = listed["data"]["keys"]
    return [key.rstrip("/") for key in keys]


def _delete_namespace_tree(server: BaoServer, token: str, path: str, depth: int = 0) -> None:
    """Delete ``path`` and its child namespaces (OpenBao refuses to delete a non-leaf)."""
    inside = hvac.Client(url=server.addr, token=token, namespace=path)
    if depth < 8:
        for child in _child_namespaces(inside):
            _delete_namespace_tree(server, token, f"{path}/{child}", depth + 1)
    parent, _, name = path.rpartition("/")
    outer = hvac.Client(url=server.addr, token=token, namespace=parent or None)
    # Children are deleted asynchronously: retry briefly, then give up (a leftover namespace
    # in a throwaway dev server is harmless).
    for _ in range(40):
        try:
            outer.sys.delete_namespace(name)
            return
        except hvac.exceptions.InvalidRequest:
            time.sleep(0.05)


@pytest.fixture
def bao(request: pytest.FixtureRequest, bao_dev: BaoServer) -> Iterator[BaoScope]:
    """A fresh namespace ``t-<8 hex>`` in the shared dev server, deleted after the test."""
    assert bao_dev.root_token is not None
    namespace = f"t-{secrets.token_hex(4)}"
    root = hvac.Client(url=bao_dev.addr, token=bao_dev.root_token)
    root.sys.create_namespace(namespace)
    _mark_used(request, bao_dev)
    yield BaoScope(server=bao_dev, addr=bao_dev.addr, token=bao_dev.root_token, namespace=namespace)
    with contextlib.suppress(Exception):
        _delete_namespace_tree(bao_dev, bao_dev.root_token, namespace)


@pytest.fixture
def bao_raft(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaoServer]:
    """A fresh, UNINITIALIZED single-node raft server with a file audit device (.audit_log)."""
    workdir = tmp_path / "openbao-raft"
    server = start_raft(workdir, audit_log=workdir / "audit.log")
    _mark_used(request, server)
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_STARTED] = len(started_servers())


def _servers_of(item: pytest.Item) -> list[BaoServer]:
    empty: list[BaoServer] = []
    used = item.stash.get(_USED_SERVERS, empty)
    servers = list(used)
    if "bao_dev" in getattr(item, "fixturenames", ()):
        servers.extend(_SESSION_DEV)
    servers.extend(started_servers()[item.stash.get(_FIRST_STARTED, 0) :])
    unique: list[BaoServer] = []
    for server in servers:
        if server not in unique:
            unique.append(server)
    return unique


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for server in _servers_of(item):
        tail = server.log_tail(80)
        if tail:
            report.sections.append((f"openbao log ({server.mode} {server.addr})", tail))
