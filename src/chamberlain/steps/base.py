"""The contract between a lifecycle step and the runtimes that serve it.

A step is a plain callable: one CloudEvent in, at most one reply CloudEvent out. It signals
failure by raising a :class:`StepError` whose class says how the broker must treat it; the
runtimes map that onto the Knative data-plane status codes (DESIGN.md §Events):

* return a CloudEvent     -> 200 with the reply event (it re-enters the broker)
* return None             -> 202, done, nothing to say
* raise PermanentError    -> 400/401/403/413/422, never retried, nothing partially applied
* raise TransientError    -> 409/429/5xx, retried by the broker
* any other exception     -> 500 (transient: a bug or an outage must not lose the event)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from cloudevents.core.base import BaseCloudEvent

PERMANENT_STATUSES = frozenset({400, 401, 403, 413, 422})
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class StepError(Exception):
    """A failure that carries the HTTP status the runtime must answer with.

    ``message`` must never contain a secret value: it reaches logs and error events (the
    runtime redacts it once more, as a second line of defence). ``reply`` is an optional
    event (e.g. ``dev.chamberlain.intent.rejected.v1``) that the runtime emits alongside.
    """

    default_status = 500
    allowed: frozenset[int] = frozenset()

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reply: BaseCloudEvent | None = None,
    ) -> None:
        super().__init__(message)
        chosen = self.default_status if status is None else status
        if self.allowed and chosen not in self.allowed:
            raise ValueError(f"{type(self).__name__} cannot carry HTTP status {chosen}")
        self.status = chosen
        self.reply = reply

    @property
    def retryable(self) -> bool:
        return self.status not in PERMANENT_STATUSES


class PermanentError(StepError):
    """Bad event, bad signature, invalid intent: retrying cannot help."""

    default_status = 422
    allowed = PERMANENT_STATUSES


class TransientError(StepError):
    """Authority sealed or down, CAS conflict, rate limit: the broker should retry."""

    default_status = 503
    allowed = TRANSIENT_STATUSES


Step: TypeAlias = Callable[[BaseCloudEvent], BaseCloudEvent | None]
"""A lifecycle step: handles one event, returns the reply event or None."""
