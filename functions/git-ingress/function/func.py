"""func-python entry of the git-ingress function: ``func deploy`` serves what ``new()`` returns.

git-ingress is not a CloudEvent function: Git providers POST their webhooks to it (func.yaml
``invoke: http``). ``new()`` serves the very Flask app the container image runs
(:func:`chamberlain.ingress.webhook_app.from_env`: secrets from
``CHAMBERLAIN_WEBHOOK_SECRET_<PROVIDER>``, the Broker from ``K_SINK``) through hypercorn's
WSGI middleware, so both ways of deploying answer every request the same way. Written by hand;
the other functions' packages are rendered from ``chamberlain.packaging``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hypercorn.middleware import AsyncioWSGIMiddleware

from chamberlain.ingress.webhook_app import from_env
from chamberlain.ingress.webhooks import MAX_BODY
from chamberlain.logs import configure, is_configured

FUNCTION = "git-ingress"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class WebhookFunction:
    """A func-python (http middleware) instance around the git-ingress Flask app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # The middleware buffers the body and answers 400 past its limit; bodies over the
        # app's own limit are refused below with the app's 413, like under gunicorn.
        self._asgi: Any = AsyncioWSGIMiddleware(app, max_body_size=MAX_BODY)

    def start(self, cfg: Mapping[str, str]) -> None:
        if not is_configured():
            configure(cfg.get("CHAMBERLAIN_LOG_LEVEL", "INFO"))

    def alive(self) -> tuple[bool, str]:
        return True, "OK"

    def ready(self) -> tuple[bool, str]:
        return True, "OK"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _declared_length(scope) > MAX_BODY:
            message = {"status": 413, "message": f"body exceeds the {MAX_BODY} byte limit"}
            body = json.dumps(message).encode("utf-8")
            headers = [[b"content-type", b"application/json"]]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self._asgi(scope, receive, send)


def new() -> WebhookFunction:
    """The git-ingress function configured from the environment."""
    return WebhookFunction(from_env())
