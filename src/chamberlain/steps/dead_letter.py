"""The dead-letter step: the Broker's sink for events a function gave up on.

Knative sends the original event here with ``knativeerrorcode`` (the subscriber's HTTP status),
``knativeerrordest`` (its URL) and ``knativeerrordata`` (base64 of its answer, possibly cut),
both when retries are exhausted and when the answer was permanent (4xx). The step writes one
warning line naming the event (type, id, source) and those extensions, never the event's data,
and replies ``dev.chamberlain.step.failed.v1`` for alerting. The reply carries only identifiers
and the function's own (already redacted) error message, redacted once more.

A ``step.failed`` event that itself ends here is only logged: replying with the same type would
be a loop.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cloudevents.core.base import BaseCloudEvent

from chamberlain.logs import get_logger, log, redact
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.steps.base import PERMANENT_STATUSES, Step

FUNCTION = "dead-letter"
SOURCE = f"/chamberlain/{FUNCTION}"
UNKNOWN_FUNCTION = "unknown"
NO_ANSWER_STATUS = 503  # no HTTP status: timeout or connection failure, a transient failure
MAX_REASON = 2000
MAX_LOGGED_ERROR = 500

_log = get_logger("chamberlain.dead-letter")


def _extension(event: BaseCloudEvent, name: str) -> str | None:
    value = event.get_extension(name)
    return None if value is None else str(value)


def failed_status(code: str | None) -> int:
    """The subscriber's HTTP status, or 503 when it gave none a step.failed event can carry."""
    try:
        status = int(code or "")
    except ValueError:
        return NO_ANSWER_STATUS
    return status if 400 <= status <= 599 else NO_ANSWER_STATUS


def failed_function(dest: str | None) -> str:
    """The function a dead letter was meant for: the Service name in ``knativeerrordest``.

    A Knative Service's address is ``http://<name>.<namespace>.svc...``; the local runtime
    names the function itself.
    """
    if not dest:
        return UNKNOWN_FUNCTION
    host = urlsplit(dest).hostname if "://" in dest else dest
    label = (host or "").split(".")[0].lower()
    valid = label[:1].isalpha() and all(c.isalnum() or c == "-" for c in label)
    return label if valid and len(label) <= 63 and not label.endswith("-") else UNKNOWN_FUNCTION


def error_text(data: str | None) -> str | None:
    """The failed function's error message from ``knativeerrordata`` (redacted)."""
    if not data:
        return None
    try:
        raw = base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        text = body["error"]
    text = " ".join(redact(text).split())
    return text or None


class DeadLetter:
    """Turns a dead letter into a log line and a ``step.failed`` event."""

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        code = _extension(event, "knativeerrorcode")
        dest = _extension(event, "knativeerrordest")
        error = error_text(_extension(event, "knativeerrordata"))
        status = failed_status(code)
        target = failed_function(dest)
        fields: dict[str, Any] = {
            "event_type": event.get_type(),
            "event_id": event.get_id(),
            "event_source": event.get_source(),
            "knativeerrorcode": code,
            "knativeerrordest": dest,
            "knativeerrordata": error[:MAX_LOGGED_ERROR] if error else None,
            "failed_function": target,
        }
        log(_log, "WARNING", "event dead-lettered", **fields)
        if event.get_type() == T.STEP_FAILED:
            return None
        reason = f"{target} answered {code}" if code else f"{target} gave no HTTP answer"
        if error:
            reason = f"{reason}: {error}"
        data = {
            "function": target,
            "eventType": event.get_type(),
            "eventId": event.get_id()[:1024],
            "eventSource": event.get_source()[:2048],
            "status": status,
            "retryable": status not in PERMANENT_STATUSES,
            "reason": reason[:MAX_REASON],
        }
        return make_event(T.STEP_FAILED, data, source=SOURCE, subject=target)


def build() -> Step:
    """The step; it needs no configuration."""
    return DeadLetter()
