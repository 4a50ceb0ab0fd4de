"""Cold start of each function against a bare Flask app: process start -> first event answered.

Scale-to-zero means a request waits for a fresh process. For every function that exists (the
CloudEvent steps in ``STEP_FACTORIES`` and git-ingress), a child interpreter builds the app the
way gunicorn does (``chamberlain.runtime.serve.make_app_for``; the webhook app for git-ingress)
and answers one request through the Flask test client; the baseline child builds a bare Flask
app that parses one CloudEvent with the same SDK and answers 202. Runs alternate (function,
bare, function, ...) so machine noise hits both alike; the figure is the ratio of medians, timed
from ``Popen`` to the child's answer line. Peak memory is the child's ``VmHWM``.

Figures (``name: value``): ``cold_start_ratio_<fn>`` (target <= 2.0), ``peak_rss_mib_<fn>``
(target < 80), ``cold_start_s_<fn>``, and the baseline's ``cold_start_s_bare_flask`` and
``peak_rss_mib_bare_flask``. The authority is unreachable (a closed local port): the first
request pays for building the step and handling the event, not for a network round trip.

    python bench/bench_cold_start.py [--runs N] [function ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chamberlain.model.events import example_event  # noqa: E402
from chamberlain.packaging import FUNCTIONS, FunctionSpec  # noqa: E402
from chamberlain.steps.registry import STEP_FACTORIES  # noqa: E402

BARE = "bare-flask"
CHILD = r"""
import sys
name, request_file = sys.argv[1], sys.argv[2]
import json
request = json.loads(open(request_file).read())
if name == "bare-flask":
    from cloudevents.core.bindings.http import HTTPMessage, from_http_event
    from flask import Flask, request as incoming

    app = Flask("bare")

    @app.post("/")
    def receive():
        body = incoming.get_data()
        from_http_event(HTTPMessage(headers=dict(incoming.headers), body=body))
        return "", 202

    path = "/"
elif name == "git-ingress":
    from chamberlain.ingress.webhook_app import from_env

    app, path = from_env(), "/webhooks/github"
else:
    from chamberlain.runtime.serve import make_app_for

    app, path = make_app_for(name), "/"
answer = app.test_client().post(path, headers=request["headers"], data=request["body"])
peak_kib = 0
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            peak_kib = int(line.split()[1])
print(json.dumps({"status": answer.status_code, "peak_kib": peak_kib}), flush=True)
"""


def functions(wanted: list[str]) -> list[FunctionSpec]:
    found = [
        spec for spec in FUNCTIONS.values() if spec.role == "ingress" or spec.name in STEP_FACTORIES
    ]
    return [s for s in found if not wanted or s.name in wanted]


def request_for(spec: FunctionSpec | None, tmp: Path) -> dict[str, object]:
    if spec is not None and spec.role == "ingress":
        headers = {"content-type": "application/json", "x-github-event": "push"}
        return {"headers": headers, "body": "{}"}
    if spec is None or not spec.consumes:
        event = example_event("dev.chamberlain.git.push.v1")
    else:
        event = example_event(spec.consumes[0].type)
        if spec.consumes[0].task:
            task = spec.consumes[0].task
            attributes = {**event.get_attributes(), "task": task}
            event = CloudEvent(attributes=attributes, data={"task": task})
    data = event.get_data()
    if isinstance(data, dict) and isinstance(data.get("repository"), dict):
        # a local repository that does not exist: the step fails fast, with no network call
        repository = {**data["repository"], "url": (tmp / "no-such-repo.git").as_uri()}
        event = CloudEvent(
            attributes=event.get_attributes(), data={**data, "repository": repository}
        )
    message = to_structured_event(event)
    return {"headers": dict(message.headers), "body": message.body.decode()}


def environment(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "CHAMBERLAIN_LOG_LEVEL": "WARNING",
        "CHAMBERLAIN_AUTHORITY_ADDR": "http://127.0.0.1:9",
        "CHAMBERLAIN_AUTHORITY_TOKEN": "bench-token",
        "CHAMBERLAIN_CACHE_DIR": str(tmp / "cache"),
        "CHAMBERLAIN_IDENTITY_DIR": str(tmp / "identities"),
        "CHAMBERLAIN_SHARE_DIR": str(tmp / "shares"),
        "CHAMBERLAIN_INTENT_REPO": str(tmp / "no-such-repo.git"),
        "CHAMBERLAIN_WEBHOOK_SECRET_GITHUB": "bench-webhook-secret",
        "K_SINK": "http://127.0.0.1:9/",
    }


def run_once(name: str, request_file: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawn to the answer line, and peak RSS in MiB."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, name, str(request_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    elapsed = time.perf_counter() - started
    child.wait(timeout=60)
    if not line:
        raise RuntimeError(f"{name}: the child answered nothing (exit {child.returncode})")
    result = json.loads(line)
    if result["status"] == 400:  # refused at the door: it would time a shortcut
        raise RuntimeError(f"{name}: the sample request was refused as malformed")
    return elapsed, result["peak_kib"] / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("functions", nargs="*")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chamberlain-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        env = environment(tmp)
        # The image byte-compiles everything it installs (Dockerfile: compileall), and pip did
        # the same for the baseline's site-packages. Sources run from src/ under
        # PYTHONDONTWRITEBYTECODE would be recompiled on every start instead, which no
        # deployment does: compile them once (into src/**/__pycache__, git-ignored).
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], env=env, check=True
        )
        bare_request = tmp / "bare.json"
        bare_request.write_text(json.dumps(request_for(None, tmp)))
        run_once(BARE, bare_request, env)  # warm the OS page cache for both sides
        bare_times: list[float] = []
        bare_rss: list[float] = []
        for spec in functions(args.functions):
            request_file = tmp / f"{spec.name}.json"
            request_file.write_text(json.dumps(request_for(spec, tmp)))
            run_once(spec.name, request_file, env)
            times, rss = [], []
            for _ in range(args.runs):
                elapsed, peak = run_once(spec.name, request_file, env)
                times.append(elapsed)
                rss.append(peak)
                elapsed, peak = run_once(BARE, bare_request, env)
                bare_times.append(elapsed)
                bare_rss.append(peak)
            key = spec.name.replace("-", "_")
            ratio = statistics.median(times) / statistics.median(bare_times[-args.runs :])
            print(f"cold_start_ratio_{key}: {ratio:.2f}", flush=True)
            print(f"cold_start_s_{key}: {statistics.median(times):.3f}", flush=True)
            print(f"peak_rss_mib_{key}: {max(rss):.1f}", flush=True)
        print(f"cold_start_s_bare_flask: {statistics.median(bare_times):.3f}")
        print(f"peak_rss_mib_bare_flask: {max(bare_rss):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
