"""The HTTP face of one function: a Flask app that serves one step (run by gunicorn).

``POST /`` takes a CloudEvent in binary or structured mode and answers with the Knative
data-plane status of :func:`chamberlain.runtime.outcome.invoke`:

* 200 and the reply event in binary mode (``ce-`` headers, data as body);
* 202 with an empty body;
* 4xx/5xx with ``{"error": <redacted>, "retryable": bool}`` (plus ``"reply"``, the structured
  form of an event the step raised its error with, e.g. ``intent.rejected``; Knative discards
  bodies of failed deliveries except in the dead-letter ``knativeerrordata``, the local broker
  re-emits it).

A request that is not a CloudEvent gets 400, a body over :data:`MAX_BODY_BYTES` 413. Health
probes live under ``/health/`` like func-python's, and ``/metrics`` serves Prometheus text.
"""

from __future__ import annotations

import json

from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from chamberlain.logs import configure, get_logger, is_configured, redact
from chamberlain.runtime import metrics
from chamberlain.runtime.outcome import MAX_BODY_BYTES, invoke, outcome_body
from chamberlain.steps.base import Step

_log = get_logger("chamberlain.runtime.http")


def _json_error(status: int, message: str, *, retryable: bool) -> Response:
    body = json.dumps({"error": redact(message), "retryable": retryable})
    return Response(body, status=status, content_type="application/json")


def create_app(step: Step, *, function: str) -> Flask:
    """A Flask app serving ``step`` as the function called ``function``."""
    if not is_configured():
        configure()
    app = Flask(f"chamberlain.function.{function}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post("/")
    def receive() -> Response:
        body = request.get_data(cache=False)
        try:
            event = from_http_event(HTTPMessage(headers=dict(request.headers), body=body))
        except Exception as exc:
            _log.warning(
                "request is not a CloudEvent",
                extra={"fields": {"function": function, "error": redact(str(exc))}},
            )
            return _json_error(400, f"not a CloudEvent: {exc}", retryable=False)
        outcome = invoke(step, event, function=function)
        if outcome.status == 200 and outcome.reply is not None:
            message = to_binary_event(outcome.reply)
            return Response(message.body, status=200, headers=message.headers)
        if outcome.status < 300:
            return Response(b"", status=outcome.status)
        return Response(
            outcome_body(outcome), status=outcome.status, content_type="application/json"
        )

    @app.get("/health/liveness")
    @app.get("/health/readiness")
    def health() -> Response:
        return Response("OK", status=200, content_type="text/plain")

    @app.get("/metrics")
    def serve_metrics() -> Response:
        return Response(metrics.render(), status=200, content_type=metrics.CONTENT_TYPE)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _json_error(
            status, exc.description or exc.name, retryable=status >= 500 or status in (409, 429)
        )

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> Response:
        _log.error("request failed", exc_info=exc, extra={"fields": {"function": function}})
        return _json_error(500, f"internal error: {type(exc).__name__}", retryable=True)

    return app
