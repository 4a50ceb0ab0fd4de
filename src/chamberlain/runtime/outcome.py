"""Run one step on one event and say, as data, how the runtime must answer.

Every runtime (the Flask app, the func-python adapter, the local broker) calls :func:`invoke`
so that they all map step results onto the Knative data-plane statuses the same way
(``chamberlain.steps.base``), guard the same invariants and write the same log line:

* the incoming event is checked against the catalog schema before the step sees it (400);
* values under secret-looking keys of its data are registered for redaction first, so a value
  that arrived in an event can never be logged back, not even in a schema error;
* a reply must be a valid catalog event, must not have the incoming event's type (it would
  re-trigger the same step forever) and must not carry a registered secret value; otherwise
  the step has a bug and the answer is 500.

``invoke`` never raises: an exception in a step is an outcome like any other.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from chamberlain.logs import contains_secret, get_logger, redact, register_secret, secret_values
from chamberlain.runtime.metrics import METRICS
from chamberlain.steps.base import PERMANENT_STATUSES, Step, StepError

_log = get_logger("chamberlain.runtime")

MAX_BODY_BYTES = 10 * 1024 * 1024
"""Largest request body an HTTP runtime accepts (413 beyond); events are small JSON."""

OK, NOOP, PERMANENT, TRANSIENT, ERROR = "ok", "noop", "permanent", "transient", "error"
_LEVELS = {
    OK: logging.INFO,
    NOOP: logging.INFO,
    PERMANENT: logging.WARNING,
    TRANSIENT: logging.WARNING,
    ERROR: logging.ERROR,
}


@dataclass(frozen=True)
class Outcome:
    """How to answer one delivery.

    ``reply`` may accompany an error status too (a :class:`StepError` that carries, e.g., an
    ``intent.rejected`` event); ``error`` is already redacted; ``kind`` is one of ok, noop,
    permanent, transient, error (the ``outcome`` label of the metrics and logs).
    """

    status: int
    reply: BaseCloudEvent | None
    error: str | None
    retryable: bool
    duration_s: float
    kind: str = OK


class _BadReply(Exception):
    """The step returned something the runtime must not send on."""


def invoke(step: Step, event: BaseCloudEvent, *, function: str) -> Outcome:
    """Run ``step`` on ``event`` and return the outcome; never raises."""
    started = time.perf_counter()
    exc_info: BaseException | None = None
    try:
        for value in secret_values(event.get_data()):
            register_secret(value)
        status, reply, error, kind, exc_info = _run(step, event)
    except Exception as exc:  # defensive: nothing above should raise, but invoke must not
        status, reply, error, kind, exc_info = 500, None, _describe(exc), ERROR, exc
    duration = time.perf_counter() - started
    outcome = Outcome(
        status=status,
        reply=reply,
        error=redact(error) if error is not None else None,
        retryable=status not in PERMANENT_STATUSES and status >= 300,
        duration_s=duration,
        kind=kind,
    )
    _record(outcome, event, function, exc_info)
    return outcome


_Result = tuple[int, BaseCloudEvent | None, str | None, str, BaseException | None]


def _run(step: Step, event: BaseCloudEvent) -> _Result:
    from chamberlain.model.events import validate_event  # jsonschema: loaded on first use

    if not isinstance(event, CloudEvent):
        return 400, None, "event rejected: only CloudEvents 1.0 are accepted", PERMANENT, None
    try:
        validate_event(event)
    except Exception as exc:
        return 400, None, f"event rejected: {exc}", PERMANENT, None
    try:
        reply = step(event)
    except StepError as exc:
        kind = TRANSIENT if exc.retryable else PERMANENT
        try:
            carried = _checked_reply(exc.reply, event)
        except _BadReply as bad:
            return 500, None, f"{exc}; {bad}", ERROR, None
        return exc.status, carried, str(exc) or type(exc).__name__, kind, None
    except Exception as exc:
        return 500, None, _describe(exc), ERROR, exc
    try:
        checked = _checked_reply(reply, event)
    except _BadReply as bad:
        return 500, None, str(bad), ERROR, None
    if checked is None:
        return 202, None, None, NOOP, None
    return 200, checked, None, OK, None


def _checked_reply(reply: object, event: BaseCloudEvent) -> CloudEvent | None:
    if reply is None:
        return None
    if not isinstance(reply, CloudEvent):
        raise _BadReply(f"step returned {type(reply).__name__}, not a CloudEvent 1.0")
    if reply.get_type() == event.get_type():
        raise _BadReply(f"reply has the incoming event's type {reply.get_type()!r}")
    from chamberlain.model.events import validate_event

    try:
        validate_event(reply)
    except Exception as exc:
        raise _BadReply(f"invalid reply event: {exc}") from None
    if any(contains_secret(text) for text in _strings(reply)):
        raise _BadReply("reply carried a secret value")
    return reply


def _strings(event: BaseCloudEvent) -> Iterator[str]:
    """Every string an outgoing event would carry: attribute values, data keys and values."""
    stack: list[Any] = [event.get_attributes(), event.get_data()]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, bytes | bytearray):
            yield bytes(item).decode("utf-8", errors="replace")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool | int | float):
            yield str(item)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _record(
    outcome: Outcome, event: BaseCloudEvent, function: str, exc: BaseException | None
) -> None:
    type_ = _attr(event, "type")
    METRICS.record(
        function=function, type_=type_, outcome=outcome.kind, duration_s=outcome.duration_s
    )
    fields: dict[str, Any] = {
        "event_id": _attr(event, "id"),
        "event_type": type_,
        "event_source": _attr(event, "source"),
        "function": function,
        "outcome": outcome.kind,
        "status": outcome.status,
        "duration_ms": round(outcome.duration_s * 1000, 3),
        "reply_type": outcome.reply.get_type() if outcome.reply is not None else None,
    }
    if outcome.error is not None:
        fields["error"] = outcome.error
    message = "reply carried a secret value" if _leaked(outcome) else "event handled"
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    _log.log(_LEVELS[outcome.kind], message, extra={"fields": fields}, exc_info=exc_info)


def _leaked(outcome: Outcome) -> bool:
    return outcome.error is not None and "reply carried a secret value" in outcome.error


def _attr(event: BaseCloudEvent, name: str) -> str:
    value = event.get_attributes().get(name)
    return redact(str(value)) if value is not None else ""


def outcome_body(outcome: Outcome) -> bytes:
    """The small JSON body HTTP runtimes send with an error status (no secret in it)."""
    body: dict[str, Any] = {"error": outcome.error or "", "retryable": outcome.retryable}
    if outcome.reply is not None:
        from cloudevents.core.bindings.http import to_structured_event

        # Already checked by invoke: a valid catalog event carrying no registered secret.
        body["reply"] = json.loads(to_structured_event(outcome.reply).body)
    return json.dumps(body).encode("utf-8")
