"""The embedded OpenBao of `chamberlain up`: start it, initialize or unseal it, mount KV v2.

LOCAL-ONLY CONVENIENCE. Until the initialize-authority step exists, `up` initializes the
authority itself with a single unseal share and keeps that share and the root token in
``<state>/authority.json`` (mode 0600), so that a restart can unseal without a human. This is
exactly what production must never do (RFC-SECOPS-0001: shares leave the initializer only
encrypted to age recipients, the root token is revoked); the initialize-authority step replaces
it. The file lives only in the local state dir, which is git-ignored.

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

import hvac

from chamberlain.adapters import bao_server
from chamberlain.adapters.bao_server import BaoServer
from chamberlain.logs import get_logger, register_secret

STATE_FILE = "authority.json"
DEV_STATE_FILE = "authority.dev.json"
PID_FILE = "openbao.pid"
KV_MOUNT = "secret"

log = get_logger("chamberlain.up.authority")


@dataclass
class Authority:
    """A running embedded OpenBao and how to reach it."""

    server: BaoServer
    mode: Literal["dev", "raft"]
    state_file: Path
    initialized_now: bool
    unsealed_from_state: bool

    @property
    def addr(self) -> str:
        return self.server.addr

    def token(self) -> str:
        """The root token kept in the state file (local convenience; see module docstring)."""
        return str(_read_state(self.state_file)["root_token"])

    def stop(self) -> None:
        self.server.stop()
        pid_file = self.state_file.parent / PID_FILE
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def start_authority(state_dir: Path, *, dev: bool = False) -> Authority:
    """Start the embedded authority; initialized, unsealed, with KV v2 at ``secret``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_orphan(state_dir)
    if dev:
        return _start_dev(state_dir)
    return _start_raft(state_dir)


def _start_dev(state_dir: Path) -> Authority:
    server = bao_server.start_dev(state_dir / "openbao-dev")
    _record_pid(state_dir, server)
    assert server.root_token is not None
    register_secret(server.root_token)
    state_file = state_dir / DEV_STATE_FILE
    _write_state(state_file, {"mode": "dev", "addr": server.addr, "root_token": server.root_token})
    _ensure_kv(server.addr, server.root_token)
    log.info("openbao dev server started (in memory)", extra={"fields": {"addr": server.addr}})
    return Authority(server, "dev", state_file, initialized_now=True, unsealed_from_state=False)


def _start_raft(state_dir: Path) -> Authority:
    workdir = state_dir / "openbao"
    server = bao_server.start_raft(workdir, audit_log=workdir / "audit.log")
    _record_pid(state_dir, server)
    state_file = state_dir / STATE_FILE
    try:
        _, status = bao_server.health(server.addr)
        initialized = bool(status.get("initialized"))
        initialized_now = False
        if not initialized:
            keys, root_token = _initialize(server)
            for value in (*keys, root_token):
                register_secret(value)
            _write_state(
                state_file,
                {
                    "mode": "raft",
                    "note": "local-only convenience until the initialize-authority step exists",
                    "unseal_keys_b64": keys,
                    "root_token": root_token,
                },
            )
            initialized_now = True
            log.warning(
                "openbao initialized by `up` with 1 share; unseal key and root token kept "
                "in the state file (local-only convenience, replaced by initialize-authority)",
                extra={"fields": {"state_file": str(state_file), "mode": "0600"}},
            )
        state = _read_state(state_file)
        stored_keys = state.get("unseal_keys_b64")
        if not isinstance(stored_keys, list) or not stored_keys:
            raise AuthorityStateError(f"{state_file} holds no unseal keys")
        keys = [str(k) for k in stored_keys]
        for value in (*keys, str(state["root_token"])):
            register_secret(value)
        bao_server.unseal(server.addr, keys)
        log.info(
            "openbao unsealed",
            extra={"fields": {"addr": server.addr, "from_state": not initialized_now}},
        )
        _ensure_kv(server.addr, str(state["root_token"]))
    except BaseException:
        server.stop()
        raise
    return Authority(
        server,
        "raft",
        state_file,
        initialized_now=initialized_now,
        unsealed_from_state=not initialized_now,
    )


def _initialize(server: BaoServer) -> tuple[list[str], str]:
    """Initialize with one share; recover from an init interrupted by a previous kill.

    A kill during ``sys/init`` leaves raft storage bootstrapped but the authority uninitialized
    ("cluster already has state"). An uninitialized authority holds nothing, so its storage is
    wiped and the init retried once.
    """
    try:
        return bao_server.initialize(server, shares=1, threshold=1)
    except Exception as exc:
        if "already has state" not in str(exc):
            raise
    log.warning(
        "openbao storage holds an interrupted initialization; resetting it",
        extra={"fields": {"data_dir": str(server.data_dir)}},
    )
    server.stop()
    shutil.rmtree(server.data_dir)
    server.data_dir.mkdir()
    server.restart()
    return bao_server.initialize(server, shares=1, threshold=1)


def _ensure_kv(addr: str, token: str) -> None:
    """Mount KV v2 at ``secret`` unless something is mounted there already."""
    client = hvac.Client(url=addr, token=token, timeout=30)
    mounts = client.sys.list_mounted_secrets_engines()
    mounts = mounts.get("data", mounts)
    if f"{KV_MOUNT}/" in mounts:
        return
    client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
    log.info("kv v2 mounted", extra={"fields": {"mount": KV_MOUNT}})


def _write_state(path: Path, state: dict[str, object]) -> None:
    """Write atomically, readable by the owner only (created 0600, never widened)."""
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class AuthorityStateError(RuntimeError):
    """The state file is missing or unreadable although OpenBao is initialized."""


def _read_state(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuthorityStateError(
            f"OpenBao in {path.parent / 'openbao'} is initialized but {path} is missing: "
            "cannot unseal it (remove the state dir to start from scratch)"
        ) from None
    except ValueError:
        raise AuthorityStateError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise AuthorityStateError(f"{path} does not hold a JSON object")
    return data


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
