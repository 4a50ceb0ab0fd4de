"""invoke(): how each step result becomes the status the broker acts on, and its guards.

``CASES`` (one step per outcome) is shared with the Flask and func-python tests, which must
answer exactly what ``invoke`` decides.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from chamberlain import logs
from chamberlain.model.events import make_event
from chamberlain.runtime.metrics import METRICS
from chamberlain.runtime.outcome import Outcome, invoke
from chamberlain.steps.base import PermanentError, Step, TransientError

PING = "dev.knative.sources.ping"
ROTATED = "dev.chamberlain.secret.rotated.v1"
REJECTED = "dev.chamberlain.intent.rejected.v1"


def ping(task: str = "rotate", **extra: Any) -> CloudEvent:
    return make_event(PING, {"task": task, **extra}, source="/tests/ping")


def rotated(reason: str = "rotation period elapsed") -> CloudEvent:
    data = {
        "trigger": "schedule",
        "rotations": [
            {
                "environment": "prod",
                "path": "platform-data/redis/checkout",
                "version": 4,
                "previousVersion": 3,
                "reason": reason,
                "rotatedAt": "2026-11-28T03:00:03Z",
            }
        ],
    }
    return make_event(ROTATED, data, source="/tests/rotate-secrets")


def rejected() -> CloudEvent:
    data = {
        "environment": "prod",
        "commit": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b",
        "errors": [{"file": "secrets/a.yaml", "line": 3, "code": "path-invalid", "message": "x"}],
    }
    return make_event(REJECTED, data, source="/tests/issue-secrets")


def reply_ok(event: BaseCloudEvent) -> BaseCloudEvent | None:
    return rotated()


def noop(event: BaseCloudEvent) -> BaseCloudEvent | None:
    return None


def permanent_422(event: BaseCloudEvent) -> BaseCloudEvent | None:
    raise PermanentError("intent is invalid")


def permanent_401(event: BaseCloudEvent) -> BaseCloudEvent | None:
    raise PermanentError("bad signature", status=401)


def transient_503(event: BaseCloudEvent) -> BaseCloudEvent | None:
    raise TransientError("authority is sealed")


def transient_409(event: BaseCloudEvent) -> BaseCloudEvent | None:
    raise TransientError("check-and-set conflict", status=409)


def crash(event: BaseCloudEvent) -> BaseCloudEvent | None:
    raise ValueError("a bug")


@dataclass(frozen=True)
class Case:
    name: str
    step: Step
    status: int
    kind: str
    retryable: bool
    reply_type: str | None


CASES = [
    Case("ok", reply_ok, 200, "ok", False, ROTATED),
    Case("noop", noop, 202, "noop", False, None),
    Case("permanent-422", permanent_422, 422, "permanent", False, None),
    Case("permanent-401", permanent_401, 401, "permanent", False, None),
    Case("transient-503", transient_503, 503, "transient", True, None),
    Case("transient-409", transient_409, 409, "transient", True, None),
    Case("crash", crash, 500, "error", True, None),
]


def fn_name(label: str) -> str:
    """A function name no other test uses, so metrics counters start at zero."""
    return f"{label}-{secrets.token_hex(3)}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_status_mapping(case: Case) -> None:
    outcome = invoke(case.step, ping(), function=fn_name("mapping"))

    assert isinstance(outcome, Outcome)
    assert outcome.status == case.status
    assert outcome.kind == case.kind
    assert outcome.retryable is case.retryable
    assert (outcome.reply.get_type() if outcome.reply else None) == case.reply_type
    assert (outcome.error is None) is (case.status < 300)
    assert outcome.duration_s >= 0


def test_error_text_says_what_went_wrong() -> None:
    assert invoke(crash, ping(), function="t").error == "ValueError: a bug"
    assert invoke(transient_503, ping(), function="t").error == "authority is sealed"


def test_unknown_event_type_is_rejected_before_the_step_runs() -> None:
    calls: list[BaseCloudEvent] = []

    def step(event: BaseCloudEvent) -> BaseCloudEvent | None:
        calls.append(event)
        return None

    event = CloudEvent(
        attributes={"type": "com.example.unknown", "source": "/x", "id": "1"}, data={"a": 1}
    )
    outcome = invoke(step, event, function="t")

    assert (outcome.status, outcome.kind, outcome.retryable) == (400, "permanent", False)
    assert "com.example.unknown" in (outcome.error or "")
    assert calls == []


def test_schema_invalid_data_is_rejected_with_400() -> None:
    event = CloudEvent(
        attributes={"type": PING, "source": "/x", "id": "2", "datacontenttype": "application/json"},
        data={"task": ""},
    )
    outcome = invoke(reply_ok, event, function="t")
    assert outcome.status == 400


def test_secret_values_in_the_event_are_registered_before_anything_is_logged() -> None:
    value = f"pw-{secrets.token_hex(8)}"
    outcome = invoke(noop, ping(password=value), function="t")

    assert outcome.status == 202
    assert logs.redact(f"leaked {value}") == f"leaked {logs.REDACTED}"


def test_reply_carrying_a_secret_value_becomes_500(caplog: pytest.LogCaptureFixture) -> None:
    value = f"pw-{secrets.token_hex(8)}"
    caplog.set_level(logging.INFO)

    def leaky(event: BaseCloudEvent) -> BaseCloudEvent | None:
        return rotated(reason=f"new password is {value}")

    outcome = invoke(leaky, ping(password=value), function="t")

    assert (outcome.status, outcome.reply, outcome.retryable) == (500, None, True)
    assert any(r.getMessage() == "reply carried a secret value" for r in caplog.records)
    assert value not in caplog.text


@pytest.mark.parametrize(
    "bad_reply",
    [
        pytest.param(lambda: ping(), id="same-type-as-input"),
        pytest.param(lambda: {"type": ROTATED}, id="not-an-event"),
        pytest.param(
            lambda: CloudEvent(attributes={"type": ROTATED, "source": "/x", "id": "3"}, data={}),
            id="schema-invalid",
        ),
    ],
)
def test_bad_replies_become_500(bad_reply: Any) -> None:
    def step(event: BaseCloudEvent) -> Any:
        return bad_reply()

    outcome = invoke(step, ping(), function="t")
    assert (outcome.status, outcome.reply, outcome.kind) == (500, None, "error")


def test_a_permanent_error_keeps_its_reply_event() -> None:
    def step(event: BaseCloudEvent) -> BaseCloudEvent | None:
        raise PermanentError("intent has 1 error", reply=rejected())

    outcome = invoke(step, ping(), function="t")
    assert outcome.status == 422
    assert outcome.reply is not None and outcome.reply.get_type() == REJECTED


def test_one_structured_log_line_per_invocation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chamberlain.runtime")
    event = ping()
    invoke(reply_ok, event, function="fn-log")
    invoke(transient_409, event, function="fn-log")

    records = [r for r in caplog.records if r.name == "chamberlain.runtime"]
    assert len(records) == 2
    first, second = (r.__dict__["fields"] for r in records)
    assert first["event_id"] == event.get_id()
    assert first["event_type"] == PING
    assert first["event_source"] == "/tests/ping"
    assert first["function"] == "fn-log"
    assert (first["outcome"], first["status"], first["reply_type"]) == ("ok", 200, ROTATED)
    assert isinstance(first["duration_ms"], float)
    assert (second["outcome"], second["status"]) == ("transient", 409)
    assert second["error"] == "check-and-set conflict"
    assert records[1].levelno == logging.WARNING


def test_metrics_count_every_outcome() -> None:
    function = fn_name("metrics")
    for case in CASES:
        invoke(case.step, ping(), function=function)
    invoke(noop, ping(), function=function)

    expected = Counter(case.kind for case in CASES) + Counter(["noop"])
    assert expected == {"ok": 1, "noop": 2, "permanent": 2, "transient": 2, "error": 1}
    for kind, count in expected.items():
        assert METRICS.events_total(function=function, type_=PING, outcome=kind) == count
    text = METRICS.render()
    assert f'chamberlain_step_duration_seconds_count{{function="{function}"}} 8' in text


def noop_factory() -> Step:
    """A step factory for registry-driven tests (``module:factory`` targets)."""
    return noop


def reply_factory() -> Step:
    return reply_ok
