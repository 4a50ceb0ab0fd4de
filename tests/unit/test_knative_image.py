"""The container image: Dockerfile properties, and its entrypoint serving real functions.

No container engine runs on these machines, so the Dockerfile is checked statically (multi-stage,
non-root final stage, no build tools or pip there, only what .dockerignore lets in), and the
entrypoint script is run as the container would run it, with the real gunicorn from the
virtualenv on PATH, on a free local port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event

from chamberlain import packaging
from chamberlain.model import event_types as T
from tests.unit.test_functions_packages import offline_env, sample_event

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|cmake|cargo|rustc|[a-z0-9.+-]+-dev)\b"
)


def stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined), split into stages at each FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or (line.startswith("ARG") and not result):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def test_the_image_is_multi_stage_and_its_final_stage_is_lean_and_non_root() -> None:
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert any(i.startswith("COPY --from=build") for i in final)
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    assert users, "the final stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit()  # numeric: runAsNonRoot can verify it
    for instruction in final:
        if instruction.startswith("RUN "):
            installs = " ".join(re.findall(r"apt-get install ([^&;]+)", instruction))
            assert not BUILD_TOOLS.search(installs), instruction
            assert "pip install" not in instruction
    assert any("pip install ." in i for i in build)
    assert any("pip uninstall --yes pip" in i for i in build)  # no pip in the copied venv
    (entrypoint,) = [i for i in final if i.startswith("ENTRYPOINT")]
    assert "chamberlain-entrypoint" in entrypoint
    target = entrypoint.split('"')[1]
    assert f"COPY docker/entrypoint.sh {target}" in final


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copied = set()
    for stage in stages():
        for instruction in stage:
            if instruction.startswith("COPY ") and "--from" not in instruction:
                copied.update(p.rstrip("/") for p in shlex.split(instruction)[1:-1])
    assert {p.split("/")[0] for p in copied} == allowed
    for path in copied:
        assert (ROOT / path).exists(), path


def test_the_entrypoint_is_valid_bash_and_executable() -> None:
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=False).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK)


def test_the_entrypoint_refuses_to_guess_the_function(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHAMBERLAIN_FUNCTION"}
    done = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode == 64
    assert "CHAMBERLAIN_FUNCTION" in done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def served(function: str, tmp_path: Path, ready_path: str) -> Iterator[str]:
    """Run the entrypoint like the container does; yield its base URL once it answers."""
    port = free_port()
    env = {
        **os.environ,
        **offline_env(tmp_path),
        "CHAMBERLAIN_FUNCTION": function,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT / "src"),
    }
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT)], env=env, stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()[-2000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + ready_path, timeout=2) as answer,  # noqa: S310
            ):
                if answer.status == 200:
                    break
            assert time.monotonic() < deadline, "the function never became ready"
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.timeout(120)
def test_the_entrypoint_serves_a_step_with_gunicorn(tmp_path: Path) -> None:
    event = sample_event(packaging.dead_letter_sink())
    message = to_binary_event(event)
    with served("dead-letter", tmp_path, "/health/readiness") as url:
        status, headers, body = post(url + "/", dict(message.headers), message.body)
    assert status == 200
    reply = from_http_event(HTTPMessage(headers=headers, body=body))
    assert reply.get_type() == T.STEP_FAILED
    assert reply.get_data()["eventId"] == event.get_id()
    log = (tmp_path / "gunicorn.log").read_text()
    assert '"event dead-lettered"' in log or "event dead-lettered" in log
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())  # JSON logs


@pytest.mark.timeout(120)
def test_the_entrypoint_serves_git_ingress_as_the_webhook_app(tmp_path: Path) -> None:
    headers = {"content-type": "application/json", "x-github-event": "push"}
    with served("git-ingress", tmp_path, "/healthz") as url:
        status, _, _ = post(url + "/webhooks/github", headers, b"{}")
    assert status == 401
