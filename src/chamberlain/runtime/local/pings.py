"""PingSource ticks for the local runtime, from the same PingSource manifests as the cluster.

Each tick is the event a real PingSource adapter sends (type ``dev.knative.sources.ping``,
source ``/apis/v1/namespaces/<ns>/pingsources/<name>``, ``time`` the scheduled time, data from
``spec.data``, extensions from ``ceOverrides``), except that its id is derived from the name
and the scheduled time: a restart that re-fires a tick produces the same (source, id), which
the broker deduplicates. The last fired time is kept in the store, so ticks missed while the
process was down are caught up with one event (the latest missed one), not a burst.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from cloudevents.core.v1.event import CloudEvent

from chamberlain.logs import get_logger, log
from chamberlain.runtime.local.manifests import PingSource
from chamberlain.runtime.local.store import DeliveryStore

PING_TYPE = "dev.knative.sources.ping"
_log = get_logger("chamberlain.pings")


class Publisher(Protocol):
    def __call__(self, event: CloudEvent, *, origin: str) -> object: ...


def ping_event(ping: PingSource, scheduled: datetime) -> CloudEvent:
    """The CloudEvent ``ping`` sends for its tick at ``scheduled``."""
    at = scheduled.astimezone(timezone.utc).replace(microsecond=0)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ping.source}@{at.isoformat()}")),
        "source": ping.source,
        "type": PING_TYPE,
        "time": at,
    }
    if ping.content_type:
        attributes["datacontenttype"] = ping.content_type
    attributes.update(ping.extensions)
    return CloudEvent(attributes=attributes, data=ping.data)


class PingScheduler:
    """Fires every PingSource on its schedule into ``publish`` (normally ``Broker.publish``)."""

    def __init__(
        self,
        pingsources: Sequence[PingSource],
        publish: Publisher,
        store: DeliveryStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pings = {p.name: p for p in pingsources}
        self._publish = publish
        self._store = store
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def fire_now(self, name: str) -> CloudEvent:
        """Send ``name``'s event immediately (scheduled time = now), e.g. ``chamberlain ping``."""
        ping = self._pings.get(name)
        if ping is None:
            known = ", ".join(sorted(self._pings)) or "none"
            raise LookupError(f"no PingSource named {name!r} (known: {known})")
        return self._fire(ping, datetime.fromtimestamp(self._clock(), timezone.utc))

    def tick(self, now: float | None = None) -> list[CloudEvent]:
        """Fire every schedule that came due since its last fire; return the events sent.

        A PingSource seen for the first time starts counting from ``now`` (nothing fires).
        """
        moment = self._clock() if now is None else now
        fired: list[CloudEvent] = []
        with self._lock:
            for ping in self._pings.values():
                last = self._store.last_ping(ping.name)
                if last is None:
                    self._store.set_last_ping(ping.name, moment)
                    continue
                due = self._latest_due(ping, last, moment)
                if due is not None:
                    fired.append(self._fire(ping, due))
        return fired

    def next_fire_at(self, now: float | None = None) -> float | None:
        """Epoch seconds of the next scheduled tick of any PingSource."""
        moment = datetime.fromtimestamp(self._clock() if now is None else now, timezone.utc)
        times = [p.cron.next_after(moment).timestamp() for p in self._pings.values()]
        return min(times) if times else None

    def _latest_due(self, ping: PingSource, last: float, now: float) -> datetime | None:
        """The latest scheduled time in (last, now], or None."""
        upper = datetime.fromtimestamp(now, timezone.utc)
        candidate = ping.cron.next_after(datetime.fromtimestamp(last, timezone.utc))
        if candidate > upper:
            return None
        while True:
            following = ping.cron.next_after(candidate)
            if following > upper:
                return candidate
            candidate = following

    def _fire(self, ping: PingSource, scheduled: datetime) -> CloudEvent:
        event = ping_event(ping, scheduled)
        self._publish(event, origin=f"pingsource:{ping.name}")
        self._store.set_last_ping(ping.name, scheduled.timestamp())
        log(
            _log,
            "INFO",
            "ping fired",
            pingsource=ping.name,
            event_id=event.get_id(),
            scheduled=scheduled.isoformat(),
        )
        return event

    # -- background thread ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or not self._pings:
            return
        self._stopping.clear()
        self.tick()
        self._thread = threading.Thread(target=self._run, name="pingsources", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            upcoming = self.next_fire_at()
            wait = 60.0 if upcoming is None else max(0.0, upcoming - self._clock())
            if self._stopping.wait(min(wait, 60.0)):
                return
            try:
                self.tick()
            except Exception as exc:  # keep ticking; the next schedule may work
                log(_log, "ERROR", "ping failed", error=str(exc))
