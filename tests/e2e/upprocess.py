"""Run `chamberlain up` as a real subprocess and observe it from outside (e2e helper).

:class:`UpProcess` starts the command with a state dir and a free port, reads its stdout (the
timeline) on a thread, and exposes the addresses it prints. Test steps (tests/e2e/steps.py) are
added through the CHAMBERLAIN_EXTRA_STEPS hook and record what they receive in files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chamberlain.runtime.local.authority import stop_orphan

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
TEST_STEPS = "alpha=tests.e2e.steps:alpha,beta=tests.e2e.steps:beta,slow=tests.e2e.steps:slow"
START_TIMEOUT = 60.0


class UpProcess:
    """One `chamberlain up` subprocess; its stdout lines accumulate in ``lines``."""

    def __init__(
        self,
        state_dir: Path,
        record_dir: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.record_dir = record_dir
        record_dir.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
            ),
            "PYTHONUNBUFFERED": "1",
            "CHAMBERLAIN_EXTRA_STEPS": TEST_STEPS,
            "CHAMBERLAIN_TEST_RECORD_DIR": str(record_dir),
            **(env or {}),
        }
        command = [sys.executable, "-m", "chamberlain.cli", "up"]
        command += ["--state-dir", str(state_dir), "--port", "0", *args]
        self.stderr_path = record_dir / "up.stderr"
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("a"),
            env=full_env,
            cwd=REPO_ROOT,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ingress = ""
        self.openbao = ""

    def ready(self) -> UpProcess:
        """Wait for the start banner; remember where the ingress and OpenBao listen."""
        self.ingress = self._address("ingress")
        self.openbao = self._address("openbao")
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines:
                    if regex.search(line):
                        return line
            if self.proc.poll() is not None:
                self._reader.join(2)
                with self._lock:
                    found = next((ln for ln in self.lines if regex.search(ln)), None)
                if found:
                    return found
                raise AssertionError(
                    f"`chamberlain up` exited ({self.proc.returncode}) before printing "
                    f"{pattern!r}\n--- stdout ---\n{self.output()}\n--- stderr ---\n{self.stderr()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stdout:\n{self.output()}")

    def _address(self, label: str) -> str:
        line = self.wait_for_line(rf"^\s+{label}\s+http://", timeout=START_TIMEOUT)
        match = re.search(r"http://[0-9.]+:\d+", line)
        assert match, line
        return match.group(0)

    # -- HTTP ----------------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.ingress + path, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310
            self.ingress + "/", data=body, headers=dict(headers), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def post_binary(self, type_: str, id_: str, data: Mapping[str, Any]) -> tuple[int, Any]:
        headers = {
            "ce-specversion": "1.0",
            "ce-type": type_,
            "ce-source": "/tests/e2e",
            "ce-id": id_,
            "content-type": "application/json",
        }
        return self.post(json.dumps(data).encode(), headers)

    def post_structured(self, type_: str, id_: str, data: Mapping[str, Any]) -> tuple[int, Any]:
        event = {
            "specversion": "1.0",
            "type": type_,
            "source": "/tests/e2e",
            "id": id_,
            "datacontenttype": "application/json",
            "data": data,
        }
        headers = {"content-type": "application/cloudevents+json"}
        return self.post(json.dumps(event).encode(), headers)

    # -- what the test steps saw ---------------------------------------------------------------
    def received(self, step: str) -> list[dict[str, Any]]:
        path = self.record_dir / f"{step}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_received(
        self, step: str, ids: set[str], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.received(step)
            if ids <= {r["id"] for r in seen}:
                return seen
            time.sleep(0.05)
        raise AssertionError(
            f"{step} did not receive {sorted(ids)}; got {[r['id'] for r in self.received(step)]}"
            f"\n--- stdout ---\n{self.output()}"
        )

    def wait_received_where(
        self, step: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Records of ``step`` matching ``predicate``, once there is at least one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matching = [r for r in self.received(step) if predicate(r)]
            if matching:
                return matching
            time.sleep(0.05)
        raise AssertionError(
            f"{step} received nothing matching; got {self.received(step)}"
            f"\n--- stdout ---\n{self.output()}"
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill_process_only(self) -> None:
        """Kill `up` but leave the state dir's OpenBao (it may belong to another `up`)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        """Leave nothing behind, whatever state the test ended in."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        stop_orphan(self.state_dir)


def port_is_closed(addr: str) -> bool:
    host, port = addr.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) != 0


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
