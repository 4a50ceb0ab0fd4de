"""`func deploy` and the container image answer alike: each registered function's func-python
``new()`` (through func-python's ASGI middleware) and its Flask app (what gunicorn serves) give
the same status and the same reply, against a real OpenBao, a real intent repository and a real
HTTP sink for ``K_SINK``.

Each function gets one event (a real push for issue-secrets, a dead letter for the sink, the
catalog example of the first type it consumes for the others). It is delivered three times:
Flask, func-python, Flask. The first delivery changes state (steps are idempotent, not pure);
the second and third see the same state, so they must answer the same. Timestamps in replies are
compared as "a timestamp".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent
from func_python.cloudevent import ASGIApplication
from func_python.http import ASGIApplication as HttpASGIApplication

from chamberlain.model import event_types as T
from chamberlain.model.events import parse_http
from chamberlain.packaging import FUNCTIONS, FunctionSpec
from chamberlain.runtime.serve import make_app_for
from tests.harness.environments import ConfiguredEnv, secret_intent
from tests.unit.test_functions_packages import (
    Response,
    comparable,
    load_function_package,
    post_asgi,
    post_flask,
    registered,
    sample_event,
)
from tests.unit.test_runtime_funcpy import call_asgi

pytestmark = pytest.mark.integration

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
WEBHOOK_SECRET = "parity-webhook-secret-7c1d"


class Sink:
    """A real HTTP endpoint for K_SINK that keeps every CloudEvent posted to it."""

    def __init__(self) -> None:
        self.events: list[BaseCloudEvent] = []
        received = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append(parse_http(dict(self.headers), body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink()
    yield running
    running.close()


@pytest.fixture
def function_env(
    configured_env: ConfiguredEnv, sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ConfiguredEnv:
    """Every function's settings pointed at this test's authority namespace, repo and sink."""
    env = {
        **configured_env.environ(),
        "CHAMBERLAIN_IDENTITY_DIR": str(tmp_path / "identities"),
        "CHAMBERLAIN_SHARE_DIR": str(tmp_path / "shares"),
        "CHAMBERLAIN_WEBHOOK_SECRET_GITHUB": WEBHOOK_SECRET,
        "K_SINK": sink.url,
    }
    for name in ("KUBERNETES_SERVICE_HOST", "CHAMBERLAIN_KUBE_HOST"):
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return configured_env


def normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str) and TIMESTAMP.match(value):
        return "<timestamp>"
    return value


def push(env: ConfiguredEnv) -> BaseCloudEvent:
    payload = env.repo.commit_and_push(
        {"secrets/billing.yaml": secret_intent("billing-db", "platform-data/postgres/billing")},
        "billing secret",
    )
    return env.push_event(payload, id_="parity-push-1")


def event_for(spec: FunctionSpec, env: ConfiguredEnv) -> BaseCloudEvent:
    """A push for issue-secrets, issue-secrets' real reply for its consumers, else the sample."""
    if spec.name == "issue-secrets":
        return push(env)
    if spec.consumes and spec.consumes[0].type == T.SECRETS_ISSUED:
        reply = env.step()(push(env))
        assert reply is not None and reply.get_type() == T.SECRETS_ISSUED
        return reply
    return sample_event(spec)


@pytest.mark.parametrize("spec", registered(), ids=lambda s: s.name)
def test_func_python_answers_like_the_flask_app(
    spec: FunctionSpec, function_env: ConfiguredEnv
) -> None:
    event = event_for(spec, function_env)
    flask_app = make_app_for(spec.name)
    func_app = ASGIApplication(load_function_package(spec.name).new())

    first = post_flask(flask_app, event)
    via_func = post_asgi(func_app, event)
    via_flask = post_flask(flask_app, event)

    assert normalized(comparable(via_func)) == normalized(comparable(via_flask))
    assert first.status != 400, first.body[:500]  # the event suits the function
    if spec.name == "issue-secrets":  # a real reconcile happened on the way
        status, (type_, _, _, data) = comparable(first)
        assert (status, type_) == (200, T.SECRETS_ISSUED)
        assert {e["status"] for e in data["environments"]} == {"applied"}
        assert function_env.authority("prod").read_metadata("platform-data/postgres/billing")
        again = comparable(via_func)[1][3]
        assert {e["status"] for e in again["environments"]} == {"already-applied"}


def _signed(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": delivery,
        "x-hub-signature-256": f"sha256={digest}",
    }


def test_git_ingress_forwards_the_same_event_both_ways(
    function_env: ConfiguredEnv, sink: Sink
) -> None:
    from chamberlain.ingress.webhook_app import from_env

    spec = FUNCTIONS["git-ingress"]
    payload = function_env.repo.commit_and_push({"secrets/a.yaml": "a: 1\n"}, "a")
    body = json.dumps(payload).encode()
    headers = _signed(body, "delivery-parity-1")

    func_app = HttpASGIApplication(load_function_package(spec.name).new())
    via_func = call_asgi(func_app, "POST", "/webhooks/github", headers, body)
    answer = from_env().test_client().post("/webhooks/github", headers=headers, data=body)
    via_flask = Response(answer.status_code, {}, answer.data)

    assert (via_func.status, json.loads(via_func.body)) == (202, json.loads(via_flask.body))
    assert via_flask.status == 202
    assert [e.get_type() for e in sink.events] == [T.GIT_PUSH, T.GIT_PUSH]
    first, second = sink.events
    assert first.get_id() == second.get_id()  # same delivery -> deduplicated downstream
    assert first.get_data() == second.get_data()
    assert first.get_data()["after"] == payload["after"]
