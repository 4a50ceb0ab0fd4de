"""Cold start: a function that does not talk to Kubernetes never imports the kubernetes client.

The client costs ~0.45 s of import time, a large part of a scale-from-zero start. Each check runs
in a fresh interpreter that builds the app the way gunicorn does (``make_app_for``, or the
webhook app for git-ingress), answers one CloudEvent, and reports ``sys.modules``. No timing is
asserted here; bench/bench_cold_start.py measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cloudevents.core.bindings.http import to_structured_event

from chamberlain.packaging import FUNCTIONS, FunctionSpec
from chamberlain.steps.registry import STEP_FACTORIES
from tests.unit.test_functions_packages import offline_env, sample_event

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from pathlib import Path
request = json.loads(Path(sys.argv[2]).read_text())
if sys.argv[3] == "import-kubernetes":
    import kubernetes  # the control: proves the probe sees the client
if sys.argv[1] == "git-ingress":
    from chamberlain.ingress.webhook_app import from_env
    app, path = from_env(), "/webhooks/github"
else:
    from chamberlain.runtime.serve import make_app_for
    app, path = make_app_for(sys.argv[1]), "/"
answer = app.test_client().post(path, headers=request["headers"], data=request["body"])
print(json.dumps({"status": answer.status_code, "kubernetes": "kubernetes" in sys.modules}))
"""


def cluster_free() -> list[FunctionSpec]:
    """Functions that exist now and whose table entry grants no Kubernetes API access."""
    return [
        spec
        for spec in FUNCTIONS.values()
        if not spec.talks_to_kubernetes and (spec.name in STEP_FACTORIES or spec.role == "ingress")
    ]


def probe(spec: FunctionSpec, tmp_path: Path, mode: str = "plain") -> dict[str, object]:
    if spec.role == "ingress":
        request = {"headers": {"content-type": "application/json", "x-github-event": "push"}}
        request["body"] = "{}"
    else:
        message = to_structured_event(sample_event(spec))
        request = {"headers": dict(message.headers), "body": message.body.decode()}
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request))
    env = {**os.environ, **offline_env(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, spec.name, str(request_file), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("spec", cluster_free(), ids=lambda s: s.name)
def test_serving_a_function_without_cluster_access_never_imports_kubernetes(
    spec: FunctionSpec, tmp_path: Path
) -> None:
    result = probe(spec, tmp_path)
    assert result["kubernetes"] is False
    assert result["status"] != 400 or spec.role == "ingress"


def test_the_probe_sees_the_client_when_it_is_imported(tmp_path: Path) -> None:
    result = probe(FUNCTIONS["dead-letter"], tmp_path, "import-kubernetes")
    assert result == {"status": 200, "kubernetes": True}
