"""The human-readable timeline `chamberlain up` prints on stdout.

One line per broker happening (an event received, a delivery answered, a retry, a dead letter),
so a developer can watch an event travel from its source to the step that handled it without
reading JSON logs. Formatting is pure; :class:`TimelinePrinter` only adds a lock and a stream.
Nothing here ever prints event *data*: only types, ids, function names, statuses and the
(already redacted) detail the broker gives.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TextIO

# kind -> arrow shown between the time and the actor column
ARROWS: dict[str, str] = {
    "received": "←",
    "delivered": "→",
    "retry": "↻",
    "dead-letter": "✗",
    "reply": "↩",
    "skipped": "·",
}
ACTOR_WIDTH = 24
TYPE_WIDTH = 44
SHORT_ID = 8
ID_WIDTH = 24
_HEXISH = re.compile(r"[0-9a-fA-F-]{16,}")


class EntryLike(Protocol):
    """What the timeline needs from the broker's ``TimelineEntry``."""

    @property
    def kind(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def function(self) -> str | None: ...
    @property
    def status(self) -> int | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def detail(self) -> str: ...


def short_id(event_id: str) -> str:
    """Enough of an id to correlate lines: 8 chars of a hex/uuid id, readable ids kept whole."""
    if _HEXISH.fullmatch(event_id):
        return event_id[:SHORT_ID]
    return event_id if len(event_id) <= ID_WIDTH else event_id[: ID_WIDTH - 1] + "…"


def format_entry(entry: EntryLike, when: datetime | None = None) -> str:
    """One timeline line, e.g. ``21:58:03  → issue-secrets  dev...push.v1  a1b2c3d4  202``."""
    stamp = (when or datetime.now()).strftime("%H:%M:%S")
    arrow = ARROWS.get(entry.kind, "?")
    actor = _actor(entry)
    parts = [f"{stamp}  {arrow} {actor:<{ACTOR_WIDTH}} {entry.event_type:<{TYPE_WIDTH}}"]
    parts.append(f"{short_id(entry.event_id):<{SHORT_ID + 2}}")
    if entry.status is not None:
        parts.append(str(entry.status))
    if entry.detail:
        parts.append(entry.detail)
    return "  ".join(parts).rstrip()


def _actor(entry: EntryLike) -> str:
    """Who the line is about: the origin for receipts (ingress, watcher, startup,
    pingsource:<name>, reply:<function>), the function for everything else."""
    return entry.function or ("broker" if entry.kind == "received" else "-")


@dataclass(frozen=True)
class TriggerStatus:
    """One Trigger as shown in the start banner."""

    name: str
    subscriber: str
    types: str
    ready: bool
    reason: str = ""


@dataclass(frozen=True)
class Banner:
    """Where things listen, shown once at start."""

    state_dir: str
    authority: str
    authority_mode: str
    ingress: str
    log_file: str
    environment: str
    repo: str | None = None
    branch: str | None = None
    notes: Sequence[str] = ()


def format_banner(banner: Banner, triggers: Iterable[TriggerStatus]) -> list[str]:
    """The start-up block: addresses, state dir, and which Triggers can deliver."""
    lines = [
        "chamberlain up",
        f"  state dir   {banner.state_dir}",
        f"  openbao     {banner.authority}  ({banner.authority_mode})",
        f"  ingress     {banner.ingress}  (POST / CloudEvents; GET /health, /dead-letters)",
        f"  environment {banner.environment}",
        f"  logs        {banner.log_file}",
    ]
    if banner.repo:
        lines.append(f"  repo        {banner.repo}  (branch {banner.branch or 'main'})")
    lines.extend(f"  note        {note}" for note in banner.notes)
    rows = sorted(triggers, key=lambda t: (not t.ready, t.name))
    ready = sum(t.ready for t in rows)
    lines.append(f"  triggers    {ready} ready, {len(rows) - ready} not ready")
    name_w = max((len(t.name) for t in rows), default=0)
    sub_w = max((len(t.subscriber) for t in rows), default=0)
    states = ["ready" if t.ready else f"not ready ({t.reason or 'no step'})" for t in rows]
    state_w = max((len(s) for s in states), default=0)
    for t, state in zip(rows, states, strict=True):
        lines.append(
            f"    {t.name:<{name_w}}  → {t.subscriber:<{sub_w}}  {state:<{state_w}}  {t.types}"
        )
    return lines


class TimelinePrinter:
    """Writes timeline lines to a stream (stdout), one whole line at a time."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def lines(self, texts: Iterable[str]) -> None:
        with self._lock:
            for text in texts:
                self._stream.write(text + "\n")
            self._stream.flush()

    def entry(self, entry: EntryLike) -> None:
        self.line(format_entry(entry))
