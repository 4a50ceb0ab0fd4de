"""The git-ingress function: a Flask app that turns verified webhooks into git.push.v1 events.

It is not a Trigger subscriber: Git providers call it directly, and it hands each push to
``emit``. In Knative a SinkBinding injects ``K_SINK`` (the broker) and ``emit`` POSTs the event
there in binary mode; a failed emit answers 503 so the provider redelivers. The event id is
``<provider>:<delivery id>``, so a redelivery is deduplicated downstream.

Bodies over 10 MiB are refused with 413 from the ``Content-Length`` header alone (Werkzeug's
``MAX_CONTENT_LENGTH``), before any of the body is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import flask
from cloudevents.core.base import BaseCloudEvent
from werkzeug.exceptions import RequestEntityTooLarge

from chamberlain.ingress.webhooks import (
    MAX_BODY,
    PROVIDERS,
    WebhookError,
    WebhookResult,
    verify_and_normalize,
)
from chamberlain.logs import get_logger, register_secret
from chamberlain.model.event_types import GIT_PUSH
from chamberlain.model.events import EventSchemaError, MalformedEventError, make_event
from chamberlain.runtime.emit import Emit, http_emitter, strip_credentials

SECRET_ENV_PREFIX = "CHAMBERLAIN_WEBHOOK_SECRET_"  # noqa: S105 - a variable name prefix
SINK_ENV = "K_SINK"
CE_OVERRIDES_ENV = "K_CE_OVERRIDES"

log = get_logger("chamberlain.ingress")


def create_webhook_app(
    secrets: Mapping[str, str],
    emit: Emit,
    *,
    extensions: Mapping[str, Any] | None = None,
    max_body: int = MAX_BODY,
) -> flask.Flask:
    """Build the ingress app. ``secrets`` maps provider name to its webhook secret."""
    app = flask.Flask("chamberlain.ingress")
    app.config["MAX_CONTENT_LENGTH"] = max_body
    configured = {name: value for name, value in secrets.items() if value}
    for value in configured.values():
        register_secret(value)  # a second line of defence: never in any log line
    ce_extensions = dict(extensions or {})

    def handle(provider: str | None) -> flask.Response:
        try:
            body = flask.request.get_data(cache=False)
        except RequestEntityTooLarge:
            return _answer(413, f"body exceeds the {max_body} byte limit")
        try:
            result = verify_and_normalize(
                dict(flask.request.headers), body, configured, provider=provider, max_body=max_body
            )
        except WebhookError as exc:
            log.warning(
                "webhook refused",
                extra={"status": exc.status, "reason": exc.reason, "provider": provider},
            )
            return _answer(exc.status, exc.reason)
        if result.kind == "ignored":
            log.info("webhook ignored", extra=_fields(result))
            return _answer(200, result.reason, id_=result.event_id)
        try:
            event = _push_event(result, ce_extensions)
        except (EventSchemaError, MalformedEventError) as exc:
            log.warning("webhook push refused", extra={**_fields(result), "error": str(exc)})
            return _answer(422, f"push does not fit {GIT_PUSH}: {exc}", id_=result.event_id)
        try:
            emit(event)
        except Exception as exc:
            log.error(
                "webhook push not forwarded", extra={**_fields(result), "error": str(exc)[:300]}
            )
            return _answer(503, "could not forward the push; retry later", id_=result.event_id)
        log.info("webhook push forwarded", extra=_fields(result))
        return _answer(202, result.reason, id_=result.event_id)

    @app.post("/")
    def root() -> flask.Response:
        return handle(None)

    @app.post("/webhooks/<provider>")
    def by_provider(provider: str) -> flask.Response:
        if provider not in PROVIDERS:
            return _answer(404, f"unknown provider (known: {', '.join(PROVIDERS)})")
        return handle(provider)

    @app.get("/healthz")
    def healthz() -> flask.Response:
        return _answer(200, "ok")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> flask.Response:
        return _answer(413, f"body exceeds the {max_body} byte limit")

    return app


def from_env(emit: Emit | None = None, environ: Mapping[str, str] | None = None) -> flask.Flask:
    """Production factory: secrets from ``CHAMBERLAIN_WEBHOOK_SECRET_<PROVIDER>``, sink from
    ``K_SINK`` (and CloudEvent extensions from ``K_CE_OVERRIDES``, as SinkBinding sets them)."""
    env = os.environ if environ is None else environ
    secrets = {name: env.get(SECRET_ENV_PREFIX + name.upper(), "") for name in PROVIDERS}
    if not any(secrets.values()):
        raise RuntimeError(
            "no webhook secret configured: set at least one of "
            + ", ".join(SECRET_ENV_PREFIX + name.upper() for name in PROVIDERS)
        )
    if emit is None:
        sink = env.get(SINK_ENV)
        if not sink:
            raise RuntimeError(f"{SINK_ENV} is not set: bind git-ingress to the broker")
        emit = http_emitter(sink)
    return create_webhook_app(secrets, emit, extensions=_ce_overrides(env.get(CE_OVERRIDES_ENV)))


def _push_event(result: WebhookResult, extensions: Mapping[str, Any]) -> BaseCloudEvent:
    data = result.data or {}
    repository = data.get("repository") or {}
    source = strip_credentials(str(repository.get("url") or f"/webhooks/{result.provider}"))
    return make_event(
        GIT_PUSH,
        data,
        source=source,
        subject=data.get("ref"),
        id_=result.event_id,
        extensions=dict(extensions) or None,
    )


def _answer(status: int, message: str, *, id_: str | None = None) -> flask.Response:
    body: dict[str, Any] = {"status": status, "message": message}
    if id_ is not None:
        body["id"] = id_
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def _fields(result: WebhookResult) -> dict[str, Any]:
    return {
        "provider": result.provider,
        "delivery": result.delivery,
        "event_id": result.event_id,
        "reason": result.reason,
    }


def _ce_overrides(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        overrides = json.loads(raw)
    except ValueError:
        raise RuntimeError(f"{CE_OVERRIDES_ENV} is not JSON") from None
    extensions = overrides.get("extensions") if isinstance(overrides, dict) else None
    return dict(extensions) if isinstance(extensions, dict) else {}
