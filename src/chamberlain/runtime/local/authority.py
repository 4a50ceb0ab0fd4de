"""The embedded OpenBao of `chamberlain up`: start it; the initialize-authority step does the rest.

Raft mode (the default) starts OpenBao and nothing more: on the first start it is
uninitialized, and the ``cluster.created`` event that `up` publishes makes the
initialize-authority step initialize it (unseal shares encrypted to the intent's age
recipients in ``<state>/unseal-shares/``, function identities in ``<state>/identities/``, root
token revoked). After a restart it is sealed, and the same event makes the step unseal it with
``--unseal-identity`` (an age identity file). `up` itself never holds a share or a root token.

Dev mode (``--dev``) is in memory and comes up initialized and unsealed with a throwaway root
token; `up` uses that token once to give the initializer its identity (the very bootstrap the
step performs after ``sys/init``) and revokes it, so from then on dev mode runs exactly like
raft mode.

A previous `up` killed with SIGKILL leaves its OpenBao running (it runs in its own session so a
Ctrl-C in the terminal reaches only `up`, which then stops it cleanly). Its pid is recorded in
``<state>/openbao.pid`` and the orphan is stopped before a new server starts on the same data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chamberlain.adapters import bao_server
from chamberlain.adapters.bao_server import BaoServer
from chamberlain.logs import get_logger, register_secret

PID_FILE = "openbao.pid"
KV_MOUNT = "secret"
IDENTITY_DIR = "identities"
SHARE_DIR = "unseal-shares"
OPENBAO_DIR = "openbao"

log = get_logger("chamberlain.up.authority")


@dataclass
class Authority:
    """A running embedded OpenBao, how to reach it, and its state when `up` started it."""

    server: BaoServer
    mode: Literal["dev", "raft"]
    state_dir: Path
    initialized: bool
    sealed: bool

    @property
    def addr(self) -> str:
        return self.server.addr

    def stop(self) -> None:
        self.server.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / PID_FILE).unlink()


def start_authority(
    state_dir: Path, *, dev: bool = False, identities: Path | None = None
) -> Authority:
    """Start the embedded authority (raft: as it is; dev: with the initializer's identity)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_orphan(state_dir)
    if dev:
        return _start_dev(state_dir, identities or state_dir / IDENTITY_DIR)
    return _start_raft(state_dir)


def _start_dev(state_dir: Path, identities: Path) -> Authority:
    server = bao_server.start_dev(state_dir / "openbao-dev")
    _record_pid(state_dir, server)
    assert server.root_token is not None
    register_secret(server.root_token)
    try:
        _bootstrap_dev(server, identities)
    except BaseException:
        server.stop()
        raise
    log.info("openbao dev server started (in memory)", extra={"fields": {"addr": server.addr}})
    return Authority(server, "dev", state_dir, initialized=True, sealed=False)


def _bootstrap_dev(server: BaoServer, identities: Path) -> None:
    """Give the initializer its identity with the dev root token, then revoke that token."""
    from chamberlain.adapters.authority import Authority as Session
    from chamberlain.adapters.authority_admin import AdminAuthority
    from chamberlain.model.intent import Intent
    from chamberlain.steps.initialize_authority import bootstrap_with_root

    assert server.root_token is not None
    root = AdminAuthority.of(Session.connect(server.addr, server.root_token))
    try:
        bootstrap_with_root(root, Intent(), system=None, identities=identities)
    finally:
        root.revoke_self()


BREAK_GLASS_OPTION = "disable_unauthed_generate_root_endpoints = false"


def start_raft_with_break_glass(workdir: Path, *, audit_log: Path | None = None) -> BaoServer:
    """Like :func:`bao_server.start_raft`, with the unauthenticated generate-root endpoints on.

    OpenBao >= 2.5.3 turns ``sys/generate-root/*`` off by default. With it on (here: a
    loopback-only listener), a quorum of unseal shares alone can mint a new root token, which
    is how initialize-authority recovers when its own identity is lost (identities deleted, a
    crash between ``sys/init`` and the identity's creation). The token is revoked at once.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "raft"
    data_dir.mkdir(exist_ok=True)
    api_port = bao_server.free_port()
    cluster_port = bao_server.free_port()
    while cluster_port == api_port:
        cluster_port = bao_server.free_port()
    text = bao_server.raft_config(data_dir, api_port, cluster_port, audit_log)
    marker = 'listener "tcp" {\n'
    if marker not in text:
        raise RuntimeError("unexpected OpenBao configuration layout: no tcp listener block")
    text = text.replace(marker, marker + f"  {BREAK_GLASS_OPTION}\n", 1)
    config_path = workdir / "bao.hcl"
    config_path.write_text(text, encoding="utf-8")
    server = BaoServer(
        addr=f"http://127.0.0.1:{api_port}",
        data_dir=data_dir,
        log_path=workdir / "bao.log",
        mode="raft",
        command=[str(bao_server.find_bao_binary()), "server", f"-config={config_path}"],
        config_path=config_path,
        audit_log=audit_log,
    )
    server.start()
    return server


def _start_raft(state_dir: Path) -> Authority:
    workdir = state_dir / OPENBAO_DIR
    existed = (workdir / "raft").is_dir()
    server = start_raft_with_break_glass(workdir, audit_log=workdir / "audit.log")
    _record_pid(state_dir, server)
    try:
        _, status = bao_server.health(server.addr)
        if existed and not status.get("initialized"):
            server = _reset_interrupted(server)
            _record_pid(state_dir, server)
            _, status = bao_server.health(server.addr)
    except BaseException:
        server.stop()
        raise
    initialized = bool(status.get("initialized"))
    sealed = bool(status.get("sealed", True))
    log.info(
        "openbao started (raft)",
        extra={"fields": {"addr": server.addr, "initialized": initialized, "sealed": sealed}},
    )
    return Authority(server, "raft", state_dir, initialized=initialized, sealed=sealed)


def _reset_interrupted(server: BaoServer) -> BaoServer:
    """Storage left by an initialization that never finished holds nothing: start afresh.

    A kill during ``sys/init`` leaves raft bootstrapped but the authority uninitialized, and a
    new ``sys/init`` then fails with "cluster already has state".
    """
    log.warning(
        "openbao storage holds an interrupted initialization; resetting it",
        extra={"fields": {"data_dir": str(server.data_dir)}},
    )
    server.stop()
    shutil.rmtree(server.data_dir)
    server.data_dir.mkdir()
    server.restart()
    return server


def _record_pid(state_dir: Path, server: BaoServer) -> None:
    pid_file = state_dir / PID_FILE
    pid_file.write_text(json.dumps({"pid": server.pid, "addr": server.addr}) + "\n")


def stop_orphan(state_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop an OpenBao left running by a killed `up` on this state dir; return its pid."""
    pid_file = state_dir / PID_FILE
    try:
        pid = int(json.loads(pid_file.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if not _is_bao(pid):
        pid_file.unlink(missing_ok=True)
        return None
    log.warning("stopping orphaned openbao of a previous run", extra={"fields": {"pid": pid}})
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_alive(pid):
        _kill_group(pid, signal.SIGKILL)
        while _is_alive(pid) and time.monotonic() < deadline + timeout:
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return pid


def _is_bao(pid: int) -> bool:
    """True if ``pid`` runs `bao server` (a recycled pid must not be killed)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        len(argv) >= 2
        and Path(argv[0].decode(errors="replace")).name == "bao"
        and (argv[1] == b"server")
    )


def _is_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone for our purposes


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
