"""The Flask app: the HTTP answers a Knative broker (and gunicorn) sees for each outcome."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from flask.testing import FlaskClient

from chamberlain.runtime.flask_app import create_app
from chamberlain.runtime.outcome import MAX_BODY_BYTES
from chamberlain.steps.base import Step
from tests.unit.test_runtime_outcome import CASES, PING, ROTATED, Case, fn_name, noop, ping

MODES = {"binary": to_binary_event, "structured": to_structured_event}


def client_for(step: Step, function: str = "test-fn") -> FlaskClient:
    return create_app(step, function=function).test_client()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_status_and_reply_for_every_outcome(case: Case, mode: str) -> None:
    message = MODES[mode](ping())
    response = client_for(case.step).post("/", headers=message.headers, data=message.body)

    assert response.status_code == case.status
    if case.status == 200:
        assert response.headers["ce-type"] == case.reply_type
        assert response.headers["ce-specversion"] == "1.0"
        reply = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.data))
        assert reply.get_type() == ROTATED
        assert isinstance(reply.get_data(), dict)
    elif case.status == 202:
        assert response.data == b""
    else:
        body = json.loads(response.data)
        assert body["retryable"] is case.retryable
        assert isinstance(body["error"], str) and body["error"]
        assert response.mimetype == "application/json"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"Content-Type": "application/json"}, b'{"hello": "world"}', id="plain-json"),
        pytest.param({"Content-Type": "text/plain"}, b"hello", id="text"),
        pytest.param(
            {"Content-Type": "application/cloudevents+json"}, b"{not json", id="broken-structured"
        ),
        pytest.param({"ce-type": PING, "ce-id": "1"}, b"{}", id="binary-missing-source"),
    ],
)
def test_a_request_that_is_not_a_cloudevent_gets_400(headers: dict[str, str], body: bytes) -> None:
    response = client_for(noop).post("/", headers=headers, data=body)
    assert response.status_code == 400
    assert json.loads(response.data)["retryable"] is False


def test_a_body_over_10_mib_gets_413() -> None:
    message = to_binary_event(ping())
    headers = {**message.headers, "Content-Type": "text/plain"}
    response = client_for(noop).post("/", headers=headers, data=b"a" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert json.loads(response.data)["retryable"] is False


def test_a_body_of_exactly_10_mib_is_read() -> None:
    message = to_binary_event(ping())
    headers = {**message.headers, "Content-Type": "text/plain"}
    response = client_for(noop).post("/", headers=headers, data=b"a" * MAX_BODY_BYTES)
    # Read and decoded, then judged by the catalog (ping text data is at most 64 KiB).
    assert response.status_code == 400
    assert "maxLength" in json.loads(response.data)["error"]


@pytest.mark.parametrize("path", ["/health/liveness", "/health/readiness"])
def test_health(path: str) -> None:
    response = client_for(noop).get(path)
    assert (response.status_code, response.data) == (200, b"OK")


def test_metrics_count_the_calls() -> None:
    function = fn_name("flask-metrics")
    client = client_for(noop, function)
    for _ in range(3):
        message = to_binary_event(ping())
        assert client.post("/", headers=message.headers, data=message.body).status_code == 202

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.data.decode()
    assert (
        f'chamberlain_events_total{{function="{function}",type="{PING}",outcome="noop"}} 3' in text
    )
    assert f'chamberlain_step_duration_seconds_count{{function="{function}"}} 3' in text
    assert "chamberlain_up 1" in text


def test_get_on_the_event_endpoint_is_405() -> None:
    assert client_for(noop).get("/").status_code == 405
