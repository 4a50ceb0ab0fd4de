"""The dead-letter function: what Knative dead-letters becomes a log line and step.failed.

Driven through :func:`chamberlain.runtime.outcome.invoke` like every runtime does, with the
extensions Knative adds (``knativeerrorcode``/``dest``/``data``) and the local broker's form.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from cloudevents.core.v1.event import CloudEvent

from chamberlain.logs import configure
from chamberlain.model import event_types as T
from chamberlain.model.events import example_event, validate_event
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.dead_letter import build, error_text, failed_function, failed_status

SECRET_LOOKING = "s3cr3t-value-never-logged-9f2c"


def dead_letter(**extensions: str) -> CloudEvent:
    event = example_event(T.SECRET_ROTATE_REQUESTED)
    data = {**event.get_data(), "reason": f"leaked as {SECRET_LOOKING}"}
    return CloudEvent(attributes={**event.get_attributes(), **extensions}, data=data)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_permanent_failure_becomes_a_non_retryable_step_failed() -> None:
    event = dead_letter(
        knativeerrorcode="422",
        knativeerrordest="http://rotate-secrets.chamberlain-system.svc.cluster.local",
        knativeerrordata=b64(json.dumps({"error": "secret is bootstrap", "retryable": False})),
    )
    outcome = invoke(build(), event, function="dead-letter")
    assert outcome.status == 200 and outcome.reply is not None
    validate_event(outcome.reply)
    assert outcome.reply.get_subject() == "rotate-secrets"
    assert outcome.reply.get_data() == {
        "function": "rotate-secrets",
        "eventType": T.SECRET_ROTATE_REQUESTED,
        "eventId": event.get_id(),
        "eventSource": event.get_source(),
        "status": 422,
        "retryable": False,
        "reason": "rotate-secrets answered 422: secret is bootstrap",
    }


def test_exhausted_retries_and_missing_answers_are_retryable_failures() -> None:
    step = build()
    timeout = invoke(step, dead_letter(knativeerrordest="renew-lease"), function="dead-letter")
    assert timeout.reply is not None
    assert timeout.reply.get_data()["status"] == 503
    assert timeout.reply.get_data()["retryable"] is True
    assert timeout.reply.get_data()["reason"] == "renew-lease gave no HTTP answer"
    sealed = invoke(
        step,
        dead_letter(knativeerrorcode="503", knativeerrordata=b64("upstream down")),
        function="dead-letter",
    )
    assert sealed.reply is not None
    assert sealed.reply.get_data()["function"] == "unknown"
    assert sealed.reply.get_data()["reason"] == "unknown answered 503: upstream down"


def test_a_dead_lettered_step_failed_is_logged_but_not_answered_again() -> None:
    failed = example_event(T.STEP_FAILED)
    outcome = invoke(build(), failed, function="dead-letter")
    assert (outcome.status, outcome.reply) == (202, None)


def test_the_log_line_names_the_event_never_its_data() -> None:
    stream = io.StringIO()
    event = dead_letter(knativeerrorcode="500", knativeerrordest="http://issue-secrets.ns.svc")
    configure("INFO", stream)
    try:
        invoke(build(), event, function="dead-letter")
    finally:
        configure("INFO")  # back to stderr for the tests that follow
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (line,) = [entry for entry in lines if entry.get("msg") == "event dead-lettered"]
    assert line["event_id"] == event.get_id()
    assert line["event_type"] == T.SECRET_ROTATE_REQUESTED
    assert line["knativeerrorcode"] == "500"
    assert line["level"] == "WARNING"
    assert SECRET_LOOKING not in stream.getvalue()
    assert "platform-data" not in json.dumps(line)  # the event's data (its path) is not logged


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        ("http://issue-secrets.chamberlain-system.svc.cluster.local", "issue-secrets"),
        ("https://renew-lease.example.com/path", "renew-lease"),
        ("watch-leases", "watch-leases"),
        ("http://10.0.0.1:8080/", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_the_failed_function_is_read_from_the_destination(dest: str | None, expected: str) -> None:
    assert failed_function(dest) == expected


def test_codes_and_error_data_are_parsed_defensively() -> None:
    assert [failed_status(c) for c in ("404", "200", "abc", None, "599")] == [
        404,
        503,
        503,
        503,
        599,
    ]
    assert error_text("!!not base64!!") is None
    assert error_text(b64("  two\n lines  ")) == "two lines"
