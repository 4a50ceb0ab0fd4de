"""The HTTP ingress of `chamberlain up`: CloudEvents in, onto the embedded broker.

It plays the role of the Knative Broker's ingress: ``POST /`` takes a CloudEvent in binary or
structured mode (so ``curl`` and ``func invoke --target`` both work), validates it against the
event catalog, persists it through the broker and answers 202 with the event id. Delivery to the
steps happens afterwards, asynchronously, exactly as in a cluster. The standard library server
is enough here (one local user) and keeps `up` free of a web framework.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.base import BaseCloudEvent

from chamberlain.logs import get_logger, redact
from chamberlain.model.events import parse_http

MAX_BODY = 10 * 1024 * 1024  # same limit as the function runtimes

log = get_logger("chamberlain.up.ingress")

PublishFn = Callable[[BaseCloudEvent], Sequence[str]]
DeadLettersFn = Callable[[], list[dict[str, Any]]]
HealthFn = Callable[[], tuple[bool, dict[str, Any]]]


class Ingress:
    """A threaded HTTP server in the background; ``address`` is known once constructed."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        publish: PublishFn,
        dead_letters: DeadLettersFn,
        health: HealthFn,
    ) -> None:
        handler = _make_handler(publish, dead_letters, health, self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            message = f"ingress cannot listen on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, message) from None

        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.accepting = True

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        shown = host if isinstance(host, str) else host.decode()
        return f"http://{shown}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="ingress",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting connections; requests in flight finish on their own threads."""
        self.accepting = False
        if self._thread is not None:  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _make_handler(
    publish: PublishFn, dead_letters: DeadLettersFn, health: HealthFn, ingress: Ingress
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "chamberlain-ingress"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path in ("/health", "/healthz", "/health/readiness", "/health/liveness"):
                ok, body = health()
                self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
            elif path == "/dead-letters":
                self._json(HTTPStatus.OK, dead_letters())
            elif path == "/":
                self._json(HTTPStatus.OK, {"service": "chamberlain ingress", "post": "/"})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] not in ("/", ""):
                self._json(HTTPStatus.NOT_FOUND, {"error": "POST CloudEvents to /"})
                return
            if not ingress.accepting:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "shutting down"})
                return
            body = self._read_body()
            if body is None:
                return
            try:
                event = parse_http(headers_of(dict(self.headers.items())), body)
            except ValueError as exc:
                message = redact(str(exc))
                log.info("rejected event", extra={"fields": {"error": message}})
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"not a valid event: {message}"})
                return
            try:
                routed = publish(event)
            except Exception as exc:
                log.error("publish failed", extra={"fields": {"error": redact(str(exc))}})
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "could not persist"})
                return
            self._json(HTTPStatus.ACCEPTED, {"id": event.get_id(), "triggers": list(routed)})

        def _read_body(self) -> bytes | None:
            length_header = self.headers.get("content-length")
            if length_header is None:
                self.close_connection = True  # the unread body must not become a request
                self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
                return None
            try:
                length = int(length_header)
            except ValueError:
                self.close_connection = True
                self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
                return None
            if length > MAX_BODY:
                self.close_connection = True
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body over 10 MiB"})
                return None
            return self.rfile.read(length) if length else b""

        def _json(self, status: HTTPStatus, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http " + format % args, extra={"fields": {"client": self.client_address[0]}})

    return Handler


def headers_of(mapping: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased header names, as the CloudEvents HTTP binding compares them."""
    return {k.lower(): v for k, v in mapping.items()}
