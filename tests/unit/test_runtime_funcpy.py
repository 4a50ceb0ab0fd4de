"""The func-python adapter, driven through func-python's real ASGI middleware.

No server: the test speaks raw ASGI to ``func_python.cloudevent.ASGIApplication`` wrapping a
:class:`FunctionAdapter`, and checks it answers exactly like the Flask app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from func_python.cloudevent import ASGIApplication

from chamberlain.runtime.flask_app import create_app
from chamberlain.runtime.funcpy import FunctionAdapter, new_for
from chamberlain.runtime.outcome import MAX_BODY_BYTES
from chamberlain.steps import registry
from chamberlain.steps.base import Step
from tests.unit.test_runtime_flask import MODES
from tests.unit.test_runtime_outcome import CASES, ROTATED, Case, noop, ping


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def call_asgi(
    app: Any, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
) -> Response:
    """One HTTP request through an ASGI app, the way hypercorn would deliver it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {
        (k.decode() if isinstance(k, bytes) else k).lower(): (
            v.decode() if isinstance(v, bytes) else v
        )
        for k, v in start.get("headers", [])
    }
    return Response(start["status"], names, raw)


def asgi_for(step: Step, function: str = "test-fn") -> ASGIApplication:
    return ASGIApplication(FunctionAdapter(step, function))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_answer_as_the_flask_app(case: Case, mode: str) -> None:
    message = MODES[mode](ping())
    got = call_asgi(asgi_for(case.step), "POST", "/", message.headers, message.body)
    flask = create_app(case.step, function="test-fn").test_client()
    expected = flask.post("/", headers=message.headers, data=message.body)

    assert got.status == expected.status_code == case.status
    if case.status == 200:
        assert got.headers["ce-type"] == expected.headers["ce-type"] == ROTATED
        reply = from_http_event(HTTPMessage(headers=got.headers, body=got.body))
        assert reply.get_type() == ROTATED
    elif case.status == 202:
        assert got.body == expected.data == b""
    else:
        assert json.loads(got.body) == json.loads(expected.data)
        assert got.headers["content-type"] == "application/json"


def test_not_a_cloudevent_gets_400_from_the_middleware() -> None:
    got = call_asgi(asgi_for(noop), "POST", "/", {"content-type": "text/plain"}, b"hello")
    assert got.status == 400


def test_a_body_over_10_mib_gets_413() -> None:
    message = to_binary_event(ping())
    headers = {**message.headers, "content-type": "text/plain"}
    got = call_asgi(asgi_for(noop), "POST", "/", headers, b"a" * (MAX_BODY_BYTES + 1))
    assert got.status == 413
    assert json.loads(got.body)["retryable"] is False


@pytest.mark.parametrize("path", ["/health/liveness", "/health/readiness"])
def test_health(path: str) -> None:
    got = call_asgi(asgi_for(noop), "GET", path, {})
    assert (got.status, got.body) == (200, b"OK")


def test_lifespan_start_and_stop_drive_readiness() -> None:
    adapter = FunctionAdapter(noop, "test-fn")
    app = ASGIApplication(adapter)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert call_asgi(app, "GET", "/health/readiness", {}).status == 500
    assert call_asgi(app, "GET", "/health/liveness", {}).status == 200


def test_new_for_loads_the_registered_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        registry.STEP_FACTORIES, "test-reply", "tests.unit.test_runtime_outcome:reply_factory"
    )
    adapter = new_for("test-reply")
    message = to_binary_event(ping())
    got = call_asgi(ASGIApplication(adapter), "POST", "/", message.headers, message.body)
    assert (got.status, got.headers["ce-type"]) == (200, ROTATED)


def test_new_for_an_unknown_function_fails_loudly() -> None:
    with pytest.raises(registry.UnknownStepError):
        new_for("no-such-function")
