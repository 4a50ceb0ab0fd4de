"""SQLite persistence of the embedded broker: what was received and what is still owed.

This is what makes a restart of ``chamberlain up`` lose nothing. An event and its fan-out to
Triggers are written in one transaction before ``publish`` returns; a delivery is marked done
only after its outcome (and any reply event's own fan-out) is written. Rows a killed process
left ``inflight`` go back to ``pending`` when the store is opened again (at-least-once: the
interrupted attempt does not count towards the retry budget, since its outcome is unknown).

Deduplication is on (source, id, trigger): publishing an identical event twice does not
deliver it twice, while a Trigger added later still gets events re-published after it appears.
One connection guarded by a lock (WAL mode); calls are short, so contention is negligible.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DeliveryState = Literal["pending", "inflight", "done", "dead"]
DeliveryKind = Literal["subscriber", "dead-letter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    origin TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    json TEXT NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (source, id)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    key INTEGER PRIMARY KEY,
    event_key INTEGER NOT NULL REFERENCES events(key),
    trigger TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    status INTEGER,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    sink TEXT,
    json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    key INTEGER PRIMARY KEY,
    event_key INTEGER NOT NULL REFERENCES events(key),
    trigger TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'subscriber',
    dead_letter_key INTEGER REFERENCES dead_letters(key),
    attempt INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    state TEXT NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    updated_at REAL NOT NULL,
    UNIQUE (event_key, trigger, kind)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at);
CREATE TABLE IF NOT EXISTS pings (
    name TEXT PRIMARY KEY,
    last_fire REAL NOT NULL
);
"""


@dataclass(frozen=True)
class NewEvent:
    """An event to persist: its identity, serialized form and where it came from."""

    source: str
    id: str
    type: str
    json: str
    origin: str
    ttl: int


@dataclass(frozen=True)
class Route:
    """One Trigger an event fans out to."""

    trigger: str
    subscriber: str


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: which event goes to which subscriber, and how often it was tried.

    ``attempt`` counts attempts whose outcome is recorded; the one being made is
    ``attempt + 1``. For ``kind == "dead-letter"`` the event is the dead-letter copy.
    """

    key: int
    event_key: int
    trigger: str
    subscriber: str
    kind: DeliveryKind
    attempt: int
    event_json: str
    event_ttl: int
    dead_letter_key: int | None


@dataclass(frozen=True)
class StoredDeadLetter:
    key: int
    trigger: str
    subscriber: str
    status: int | None
    error: str
    attempts: int
    sink: str | None
    json: str
    created_at: float


class DeliveryStore:
    """The broker's durable queue in one SQLite file (``:memory:`` works for unit tests)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._db.executescript(_SCHEMA)
        self.recovered = self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _recover(self) -> int:
        """Put deliveries a killed process left in flight back in the queue."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE deliveries SET state = 'pending', updated_at = ? WHERE state = 'inflight'",
                (time.time(),),
            )
            return cursor.rowcount

    # -- writing -----------------------------------------------------------------------------

    def add_event(
        self, event: NewEvent, routes: Sequence[Route], *, now: float | None = None
    ) -> list[str]:
        """Persist ``event`` and one pending delivery per route; return the triggers added.

        Routes already recorded for the same (source, id) are skipped: a re-published event is
        delivered once per Trigger.
        """
        with self._tx() as db:
            return self._add_event(db, event, routes, time.time() if now is None else now)

    def _add_event(
        self, db: sqlite3.Connection, event: NewEvent, routes: Sequence[Route], now: float
    ) -> list[str]:
        db.execute(
            "INSERT OR IGNORE INTO events (source, id, type, origin, ttl, json, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.source, event.id, event.type, event.origin, event.ttl, event.json, now),
        )
        (event_key,) = db.execute(
            "SELECT key FROM events WHERE source = ? AND id = ?", (event.source, event.id)
        ).fetchone()
        added: list[str] = []
        for route in routes:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (event_key, trigger, subscriber, kind, "
                "next_at, state, updated_at) VALUES (?, ?, ?, 'subscriber', ?, 'pending', ?)",
                (event_key, route.trigger, route.subscriber, now, now),
            )
            if cursor.rowcount:
                added.append(route.trigger)
        return added

    def claim_due(self, subscribers: Sequence[str], *, now: float | None = None) -> Delivery | None:
        """Take the oldest due pending delivery to one of ``subscribers`` and mark it inflight."""
        if not subscribers:
            return None
        moment = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT d.key, d.event_key, d.trigger, d.subscriber, d.kind, d.attempt, "
                "COALESCE(l.json, e.json), e.ttl, d.dead_letter_key "
                "FROM deliveries d JOIN events e ON e.key = d.event_key "
                "LEFT JOIN dead_letters l ON l.key = d.dead_letter_key "
                "WHERE d.state = 'pending' AND d.next_at <= ? "
                "AND d.subscriber IN (SELECT value FROM json_each(?)) "
                "ORDER BY d.next_at, d.key LIMIT 1",
                (moment, _names(subscribers)),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE deliveries SET state = 'inflight', updated_at = ? WHERE key = ?",
                (moment, row[0]),
            )
        return Delivery(*row)

    def complete(
        self,
        delivery: Delivery,
        status: int,
        *,
        reply: NewEvent | None = None,
        reply_routes: Sequence[Route] = (),
    ) -> list[str]:
        """Mark ``delivery`` done and, atomically, persist the reply event's fan-out."""
        now = time.time()
        with self._tx() as db:
            added = self._add_event(db, reply, reply_routes, now) if reply is not None else []
            db.execute(
                "UPDATE deliveries SET state = 'done', attempt = attempt + 1, last_status = ?, "
                "last_error = NULL, updated_at = ? WHERE key = ?",
                (status, now, delivery.key),
            )
        return added

    def reschedule(self, delivery: Delivery, status: int, error: str, next_at: float) -> None:
        """Record a failed attempt and queue the next one at ``next_at``."""
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state = 'pending', attempt = attempt + 1, next_at = ?, "
                "last_status = ?, last_error = ?, updated_at = ? WHERE key = ?",
                (next_at, status, error, time.time(), delivery.key),
            )

    def give_up(
        self,
        delivery: Delivery,
        status: int,
        error: str,
        *,
        dead_letter_json: str | None = None,
        sink: str | None = None,
        deliver_to_sink: bool = False,
        reply: NewEvent | None = None,
        reply_routes: Sequence[Route] = (),
    ) -> int | None:
        """Mark ``delivery`` dead; store its dead letter and maybe queue it for the sink.

        Returns the dead letter's key (None when no dead letter is stored, as for a failed
        delivery to a dead-letter sink itself).
        """
        now = time.time()
        with self._tx() as db:
            if reply is not None:
                self._add_event(db, reply, reply_routes, now)
            db.execute(
                "UPDATE deliveries SET state = 'dead', attempt = attempt + 1, last_status = ?, "
                "last_error = ?, updated_at = ? WHERE key = ?",
                (status, error, now, delivery.key),
            )
            if dead_letter_json is None:
                return None
            cursor = db.execute(
                "INSERT INTO dead_letters (event_key, trigger, subscriber, status, error, "
                "attempts, sink, json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.event_key,
                    delivery.trigger,
                    delivery.subscriber,
                    status,
                    error,
                    delivery.attempt + 1,
                    sink,
                    dead_letter_json,
                    now,
                ),
            )
            letter_key = cursor.lastrowid
            if deliver_to_sink and sink is not None:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries (event_key, trigger, subscriber, kind, "
                    "dead_letter_key, next_at, state, updated_at) "
                    "VALUES (?, ?, ?, 'dead-letter', ?, ?, 'pending', ?)",
                    (delivery.event_key, delivery.trigger, sink, letter_key, now, now),
                )
            return letter_key

    # -- reading -----------------------------------------------------------------------------

    def pending_count(self, subscribers: Sequence[str] | None = None) -> int:
        """Deliveries not finished yet (pending or inflight), optionally to ``subscribers``."""
        query = "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'inflight')"
        params: tuple[str, ...] = ()
        if subscribers is not None:
            query += " AND subscriber IN (SELECT value FROM json_each(?))"
            params = (_names(subscribers),)
        with self._lock:
            (count,) = self._db.execute(query, params).fetchone()
        return int(count)

    def inflight_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'inflight'"
            ).fetchone()
        return int(count)

    def next_due_at(self, subscribers: Sequence[str]) -> float | None:
        """When the earliest pending delivery to ``subscribers`` becomes due."""
        if not subscribers:
            return None
        with self._lock:
            (when,) = self._db.execute(
                "SELECT MIN(next_at) FROM deliveries WHERE state = 'pending' "
                "AND subscriber IN (SELECT value FROM json_each(?))",
                (_names(subscribers),),
            ).fetchone()
        return None if when is None else float(when)

    def deliveries_of(self, source: str, event_id: str) -> list[tuple[str, str, str, int]]:
        """(trigger, subscriber, state, attempts) of one event's subscriber deliveries."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.trigger, d.subscriber, d.state, d.attempt FROM deliveries d "
                "JOIN events e ON e.key = d.event_key WHERE e.source = ? AND e.id = ? "
                "AND d.kind = 'subscriber' ORDER BY d.key",
                (source, event_id),
            ).fetchall()
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]

    def dead_letters(self) -> list[StoredDeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, trigger, subscriber, status, error, attempts, sink, json, "
                "created_at FROM dead_letters ORDER BY key"
            ).fetchall()
        return [StoredDeadLetter(*row) for row in rows]

    def event_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(count)

    # -- PingSource bookkeeping --------------------------------------------------------------

    def last_ping(self, name: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT last_fire FROM pings WHERE name = ?", (name,)).fetchone()
        return None if row is None else float(row[0])

    def set_last_ping(self, name: str, fired_at: float) -> None:
        """Remember the latest scheduled time fired for ``name`` (never moves backwards)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO pings (name, last_fire) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                "SET last_fire = MAX(last_fire, excluded.last_fire)",
                (name, fired_at),
            )


def _names(subscribers: Sequence[str]) -> str:
    """A list parameter for ``IN (SELECT value FROM json_each(?))``."""
    return json.dumps(list(subscribers))
