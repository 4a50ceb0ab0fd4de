"""Sending the events a step produces on its own (outside a reply) to the broker's sink.

Its own small module so that a step that emits (``K_SINK``) does not import the webhook
ingress app (and its provider parsers) at cold start just to POST an event.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import to_binary_event

Emit = Callable[[BaseCloudEvent], None]


class EmitError(RuntimeError):
    """The sink did not accept the event; the provider should redeliver."""


def strip_credentials(url: str) -> str:
    """Drop any ``user:password@`` from a URL before it becomes event data or an event source."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def http_emitter(url: str, *, timeout: float = 10.0) -> Emit:
    """An ``emit`` that POSTs each event to ``url`` in binary content mode."""

    def emit(event: BaseCloudEvent) -> None:
        message = to_binary_event(event)
        request = urllib.request.Request(  # noqa: S310 - the sink URL comes from K_SINK
            url, data=message.body, headers=message.headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as exc:
            raise EmitError(f"sink {strip_credentials(url)} answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EmitError(f"sink {strip_credentials(url)} unreachable: {reason}") from None
        if not 200 <= status < 300:
            raise EmitError(f"sink {strip_credentials(url)} answered {status}")

    return emit
