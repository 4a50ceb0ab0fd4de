"""The Knative Functions (``func deploy``) face of one function: a func-python 0.8 instance.

func-python's cloudevent middleware decodes the request into ``scope["event"]`` (answering
400 itself when it is not a CloudEvent) and hands :meth:`FunctionAdapter.handle` a
``CloudEventSender``. The adapter answers exactly like the Flask app
(:mod:`chamberlain.runtime.flask_app`), since both go through
:func:`chamberlain.runtime.outcome.invoke`: 200 + binary reply, 202 empty, errors as a small
JSON body. The step runs in a worker thread: steps block on hvac and git, the event loop must
keep answering probes meanwhile.

Differences that come from the middleware, not from chamberlain: the body is read whole before
the adapter sees it, so the size limit can only be enforced on the declared Content-Length;
``/metrics`` is not reachable (every non-probe path must be a CloudEvent).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cloudevents.core.base import BaseCloudEvent

from chamberlain.logs import configure, get_logger, is_configured
from chamberlain.runtime.metrics import METRICS
from chamberlain.runtime.outcome import MAX_BODY_BYTES, invoke, outcome_body
from chamberlain.steps.base import Step
from chamberlain.steps.registry import load_step

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_log = get_logger("chamberlain.runtime.funcpy")


class FunctionAdapter:
    """A func-python function instance serving one chamberlain step."""

    def __init__(self, step: Step, function: str) -> None:
        self.step = step
        self.function = function
        self._ready = True

    def start(self, cfg: Mapping[str, str]) -> None:
        """Lifespan start: func-python passes a copy of the environment."""
        level = cfg.get("CHAMBERLAIN_LOG_LEVEL", "INFO")
        if not is_configured():
            configure(level)
        self._ready = True
        METRICS.set_up(True)
        _log.info("function started", extra={"fields": {"function": self.function}})

    def stop(self) -> None:
        self._ready = False
        METRICS.set_up(False)
        _log.info("function stopping", extra={"fields": {"function": self.function}})

    def alive(self) -> tuple[bool, str]:
        return True, "OK"

    def ready(self) -> tuple[bool, str]:
        return (True, "OK") if self._ready else (False, "stopping")

    async def handle(self, scope: Scope, receive: Receive, send: Any) -> None:
        """Answer one CloudEvent (``send`` is func-python's CloudEventSender)."""
        if _declared_length(scope) > MAX_BODY_BYTES:
            await _respond(send, 413, _error_body("request body too large", retryable=False))
            return
        event: BaseCloudEvent = scope["event"]
        outcome = await asyncio.to_thread(invoke, self.step, event, function=self.function)
        if outcome.status == 200 and outcome.reply is not None:
            await send.binary(outcome.reply, 200)
        elif outcome.status < 300:
            await _respond(send, outcome.status, b"", content_type=None)
        else:
            await _respond(send, outcome.status, outcome_body(outcome))


def new_for(function: str) -> FunctionAdapter:
    """The ``new()`` of ``functions/<function>/function/func.py``."""
    return FunctionAdapter(load_step(function), function)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _error_body(message: str, *, retryable: bool) -> bytes:
    return json.dumps({"error": message, "retryable": retryable}).encode("utf-8")


async def _respond(
    send: Any, status: int, body: bytes, *, content_type: bytes | None = b"application/json"
) -> None:
    headers = [[b"content-length", str(len(body)).encode()]]
    if content_type is not None:
        headers.append([b"content-type", content_type])
    await send.http({"type": "http.response.start", "status": status, "headers": headers})
    await send.http({"type": "http.response.body", "body": body})
