"""The embedded broker of ``chamberlain up``: Knative Broker semantics in one process.

It routes by the Triggers of the ``knative/`` manifests, delivers through the same
:func:`chamberlain.runtime.outcome.invoke` the Knative runtime uses, and honours the Triggers'
and Broker's retry, backoff and dead-letter settings. Every event and pending delivery lives in
a :class:`DeliveryStore` first, so a killed process resumes where it stopped.

Knative behaviours kept on purpose:

* a Trigger whose subscriber is not served here is "not ready": reported once, then skipped;
* 2xx is done, and a reply event re-enters the broker (its TTL, ``knativebrokerttl`` in
  Knative, is decremented on every hop; at 0 the reply is dropped, which stops reply loops);
* 404/408/409/429/5xx are retried per the delivery spec (``invoke`` reports them retryable),
  other statuses go straight to the dead-letter sink, as do exhausted retries;
* a dead letter carries ``knativeerrorcode``, ``knativeerrordest`` and ``knativeerrordata``
  (base64 of the redacted error, at most 1024 characters).

Locally, every dead letter is also kept in the store (``dead_letters()``), whether or not the
dead-letter sink is a function served here. A reply carried by a *permanent* failure (e.g. an
``intent.rejected`` event) is published as well, so the rejection is visible downstream.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from chamberlain.logs import get_logger, log, redact
from chamberlain.model.events import event_from_json, event_to_json
from chamberlain.runtime.local.delivery import DeliverySpec, backoff_delay, effective_delivery
from chamberlain.runtime.local.filters import event_attributes, matches
from chamberlain.runtime.local.manifests import Manifests, Trigger
from chamberlain.runtime.local.store import Delivery, DeliveryStore, NewEvent, Route
from chamberlain.steps.base import Step

_log = get_logger("chamberlain.broker")

DEFAULT_TTL = 255  # Knative's default knativebrokerttl
ERROR_DATA_MAX = 1024  # Knative's KnativeErrorDataExtensionMaxLength
IDLE_WAIT_S = 1.0

TimelineKind: TypeAlias = Literal[
    "received", "delivered", "retry", "dead-letter", "reply", "skipped"
]


class OutcomeLike(Protocol):
    """What the broker reads from :class:`chamberlain.runtime.outcome.Outcome`."""

    @property
    def status(self) -> int: ...
    @property
    def reply(self) -> BaseCloudEvent | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def retryable(self) -> bool: ...


InvokeFn: TypeAlias = Callable[..., OutcomeLike]


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to one event, for the human timeline of ``chamberlain up``.

    ``function`` is the subscriber for deliveries and the origin for ``received`` entries.
    ``detail`` never holds event data, only routing facts and redacted errors.
    """

    kind: TimelineKind
    event_type: str
    event_id: str
    function: str | None
    status: int | None = None
    attempt: int = 0
    detail: str = ""


@dataclass(frozen=True)
class DeadLetter:
    """An event that could not be delivered, as the dead-letter sink receives it."""

    event: CloudEvent  # the original event plus the knativeerror* extensions
    trigger: str
    function: str
    status: int | None
    error: str
    attempts: int
    sink: str | None
    created_at: float


class Broker:
    """Routes published events to steps, durably, with Knative's delivery semantics."""

    def __init__(
        self,
        manifests: Manifests,
        store: DeliveryStore,
        steps: Mapping[str, Step],
        *,
        invoke: InvokeFn | None = None,
        on_timeline: Callable[[TimelineEntry], None] | None = None,
        workers: int = 2,
        broker_name: str | None = None,
    ) -> None:
        if invoke is None:
            from chamberlain.runtime.outcome import invoke as default_invoke

            invoke = default_invoke
        self._invoke = invoke
        self._store = store
        self._steps = dict(steps)
        self._subscribers = sorted(self._steps)
        self._on_timeline = on_timeline
        self._workers = max(1, workers)
        spec = manifests.broker(broker_name)
        self.name = spec.name
        self._broker_delivery = spec.delivery
        triggers = manifests.triggers_of(spec.name)
        self.triggers: tuple[Trigger, ...] = tuple(
            t for t in triggers if t.subscriber in self._steps
        )
        self.not_ready: tuple[Trigger, ...] = tuple(
            t for t in triggers if t.subscriber not in self._steps
        )
        self._delivery = {
            t.name: effective_delivery(t.delivery, self._broker_delivery) for t in triggers
        }
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        for trigger in self.not_ready:
            log(
                _log,
                "WARNING",
                "trigger not ready: subscriber is not served by this process",
                trigger=trigger.name,
                subscriber=trigger.subscriber,
            )
        if store.recovered:
            log(_log, "INFO", "resuming interrupted deliveries", count=store.recovered)

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, event: BaseCloudEvent, *, origin: str) -> list[str]:
        """Persist ``event`` and fan it out; return the Triggers that will receive it.

        An event already published with the same (source, id) is not delivered again to a
        Trigger that already has it (the returned list is then empty).
        """
        return self._publish(event, origin=origin, ttl=DEFAULT_TTL)

    def _routes(self, event: BaseCloudEvent) -> list[Route]:
        attributes = event_attributes(event)
        return [Route(t.name, t.subscriber) for t in self.triggers if matches(t, attributes)]

    def _new_event(self, event: BaseCloudEvent, origin: str, ttl: int) -> NewEvent:
        return NewEvent(
            source=event.get_source(),
            id=event.get_id(),
            type=event.get_type(),
            json=json.dumps(event_to_json(_as_v1(event))),
            origin=origin,
            ttl=ttl,
        )

    def _publish(self, event: BaseCloudEvent, *, origin: str, ttl: int) -> list[str]:
        routes = self._routes(event)
        added = self._store.add_event(self._new_event(event, origin, ttl), routes)
        self._received(event, origin, routes, added)
        self._notify()
        return added

    def _received(
        self, event: BaseCloudEvent, origin: str, routes: Sequence[Route], added: Sequence[str]
    ) -> None:
        if not routes:
            detail = "no trigger matched"
        elif not added:
            detail = "duplicate (source, id): already delivered"
        else:
            detail = "→ " + ", ".join(r.subscriber for r in routes if r.trigger in added)
        self._emit(
            TimelineEntry("received", event.get_type(), event.get_id(), origin, None, 0, detail)
        )
        log(
            _log,
            "INFO",
            "event received",
            event_type=event.get_type(),
            event_id=event.get_id(),
            origin=origin,
            triggers=list(added),
        )

    # -- workers ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads that deliver due events."""
        if self._threads:
            return
        self._stopping.clear()
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"broker-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers after their current delivery (unfinished ones stay queued)."""
        self._stopping.set()
        self._notify()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def _work(self) -> None:
        while not self._stopping.is_set():
            if not self.deliver_one():
                self._sleep_until_due()

    def _sleep_until_due(self) -> None:
        due = self._store.next_due_at(self._subscribers)
        wait = IDLE_WAIT_S if due is None else min(IDLE_WAIT_S, max(0.0, due - time.time()))
        with self._wake:
            if not self._stopping.is_set():
                self._wake.wait(wait)

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def pending(self) -> int:
        """Deliveries to functions served here that are not finished yet."""
        return self._store.pending_count(self._subscribers)

    def run_until_idle(self, timeout: float = 30.0) -> bool:
        """Deliver until nothing is pending (True) or ``timeout`` passes (False).

        Without started workers the deliveries run in the calling thread, which keeps tests
        deterministic; with workers it waits for them.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._threads:
                if self.pending() == 0:
                    return True
                with self._wake:
                    self._wake.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            if self.deliver_one():
                continue
            due = self._store.next_due_at(self._subscribers)
            if due is None and self.pending() == 0:
                return True
            wait = 0.05 if due is None else max(0.0, due - time.time())
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
        return self.pending() == 0

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter recorded, oldest first."""
        return [
            DeadLetter(
                event=event_from_json(json.loads(row.json)),
                trigger=row.trigger,
                function=row.subscriber,
                status=row.status,
                error=row.error,
                attempts=row.attempts,
                sink=row.sink,
                created_at=row.created_at,
            )
            for row in self._store.dead_letters()
        ]

    # -- delivering ---------------------------------------------------------------------------

    def deliver_one(self) -> bool:
        """Claim and deliver one due delivery; False when none is due."""
        delivery = self._store.claim_due(self._subscribers)
        if delivery is None:
            return False
        try:
            self._deliver(delivery)
        finally:
            self._notify()
        return True

    def _deliver(self, delivery: Delivery) -> None:
        event = event_from_json(json.loads(delivery.event_json))
        attempt = delivery.attempt + 1
        try:
            outcome = self._invoke(
                self._steps[delivery.subscriber], event, function=delivery.subscriber
            )
            status, error = outcome.status, outcome.error
            reply, retryable = outcome.reply, outcome.retryable
        except Exception as exc:  # invoke never raises; a broker must survive if it does
            status, reply, retryable = 500, None, True
            error = redact(f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            self._succeeded(delivery, event, status, reply, attempt)
            return
        spec = self._spec_for(delivery)
        reason = error or f"HTTP {status}"
        if retryable and attempt <= spec.retry:
            self._retry(delivery, event, status, reason, attempt, spec)
            return
        carried = None if retryable else reply
        self._dead(delivery, event, status, reason, attempt, spec, carried, retryable=retryable)

    def _spec_for(self, delivery: Delivery) -> DeliverySpec:
        spec = self._delivery.get(delivery.trigger) or self._broker_delivery or DeliverySpec()
        if delivery.kind == "dead-letter":
            # delivering to the sink retries like the original, but has no sink of its own
            return DeliverySpec(spec.retry, spec.backoff_policy, spec.backoff_delay_s, None)
        return spec

    def _succeeded(
        self,
        delivery: Delivery,
        event: CloudEvent,
        status: int,
        reply: BaseCloudEvent | None,
        attempt: int,
    ) -> None:
        fn = delivery.subscriber
        detail = "dead letter accepted" if delivery.kind == "dead-letter" else ""
        if reply is not None and delivery.event_ttl <= 1:
            self._emit(
                TimelineEntry(
                    "skipped",
                    reply.get_type(),
                    reply.get_id(),
                    fn,
                    None,
                    0,
                    "reply dropped: broker TTL exhausted (reply loop?)",
                )
            )
            reply = None
        origin = f"reply:{fn}"
        routes = self._routes(reply) if reply is not None else []
        added = self._store.complete(
            delivery,
            status,
            reply=None if reply is None else self._new_event(reply, origin, delivery.event_ttl - 1),
            reply_routes=routes,
        )
        self._emit(
            TimelineEntry(
                "delivered", event.get_type(), event.get_id(), fn, status, attempt, detail
            )
        )
        self._log_delivery("delivered", delivery, event, status, attempt)
        if reply is None:
            return
        self._emit(
            TimelineEntry(
                "reply",
                reply.get_type(),
                reply.get_id(),
                fn,
                status,
                attempt,
                f"in reply to {event.get_type()}",
            )
        )
        self._received(reply, origin, routes, added)
        self._notify()

    def _retry(
        self,
        delivery: Delivery,
        event: CloudEvent,
        status: int,
        error: str,
        attempt: int,
        spec: DeliverySpec,
    ) -> None:
        wait = backoff_delay(spec, attempt)
        self._store.reschedule(delivery, status, error, time.time() + wait)
        detail = f"retry {attempt}/{spec.retry} in {wait:g}s: {_short(error)}"
        self._emit(
            TimelineEntry(
                "retry",
                event.get_type(),
                event.get_id(),
                delivery.subscriber,
                status,
                attempt,
                detail,
            )
        )
        self._log_delivery(
            "retry scheduled", delivery, event, status, attempt, error=error, wait_s=wait
        )

    def _dead(
        self,
        delivery: Delivery,
        event: CloudEvent,
        status: int,
        error: str,
        attempt: int,
        spec: DeliverySpec,
        reply: BaseCloudEvent | None,
        *,
        retryable: bool,
    ) -> None:
        fn = delivery.subscriber
        if delivery.kind == "dead-letter":
            self._store.give_up(delivery, status, error)
            detail = f"dead-letter sink failed: {_short(error)}"
            self._emit(
                TimelineEntry(
                    "dead-letter", event.get_type(), event.get_id(), fn, status, attempt, detail
                )
            )
            self._log_delivery(
                "dead-letter sink failed", delivery, event, status, attempt, error=error
            )
            return
        letter = _dead_letter_event(event, fn, status, error)
        sink = spec.dead_letter_sink
        to_sink = sink is not None and sink in self._steps and sink != fn
        routes = self._routes(reply) if reply is not None and delivery.event_ttl > 1 else []
        self._store.give_up(
            delivery,
            status,
            error,
            dead_letter_json=json.dumps(event_to_json(letter)),
            sink=sink,
            deliver_to_sink=to_sink,
            reply=(
                self._new_event(reply, f"reply:{fn}", delivery.event_ttl - 1)
                if reply is not None and delivery.event_ttl > 1
                else None
            ),
            reply_routes=routes,
        )
        why = "retries exhausted" if retryable else "not retryable"
        where = (
            f"→ {sink}"
            if to_sink
            else ("kept locally" if sink is None else f"kept locally ({sink} not served here)")
        )
        detail = f"{why} after {attempt} attempt(s), {where}: {_short(error)}"
        self._emit(
            TimelineEntry(
                "dead-letter", event.get_type(), event.get_id(), fn, status, attempt, detail
            )
        )
        self._log_delivery(
            "dead-lettered", delivery, event, status, attempt, error=error, sink=sink
        )
        if reply is not None:
            self._emit(
                TimelineEntry(
                    "reply",
                    reply.get_type(),
                    reply.get_id(),
                    fn,
                    status,
                    attempt,
                    f"with the failure of {event.get_type()}",
                )
            )
            self._received(reply, f"reply:{fn}", routes, [r.trigger for r in routes])
        self._notify()

    # -- reporting ----------------------------------------------------------------------------

    def _emit(self, entry: TimelineEntry) -> None:
        if self._on_timeline is None:
            return
        try:
            self._on_timeline(entry)
        except Exception as exc:  # a broken printer must not break delivery
            log(_log, "WARNING", "timeline callback failed", error=redact(str(exc)))

    def _log_delivery(
        self,
        message: str,
        delivery: Delivery,
        event: CloudEvent,
        status: int,
        attempt: int,
        **extra: Any,
    ) -> None:
        level = "INFO" if 200 <= status < 300 else "WARNING"
        log(
            _log,
            level,
            message,
            event_type=event.get_type(),
            event_id=event.get_id(),
            trigger=delivery.trigger,
            function=delivery.subscriber,
            status=status,
            attempt=attempt,
            **extra,
        )


def _as_v1(event: BaseCloudEvent) -> CloudEvent:
    if isinstance(event, CloudEvent):
        return event
    return CloudEvent(attributes=dict(event.get_attributes()), data=event.get_data())


def _short(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _dead_letter_event(event: CloudEvent, destination: str, status: int, error: str) -> CloudEvent:
    """The original event plus Knative's error extensions (strings, as HTTP carries them)."""
    attributes = dict(event.get_attributes())
    encoded = base64.b64encode(redact(error).encode("utf-8")).decode("ascii")
    attributes["knativeerrorcode"] = str(status)
    attributes["knativeerrordest"] = destination
    attributes["knativeerrordata"] = encoded[:ERROR_DATA_MAX]
    return CloudEvent(attributes=attributes, data=event.get_data())
