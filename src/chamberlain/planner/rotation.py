"""Rotation decisions, pure: when a secret is due, what a rotation records, what to destroy.

The rotate-secrets step reads a secret's KV v2 metadata, asks :func:`decide` what to do, and
writes what :func:`begin_patch` / :func:`finish_patch` say. Nothing here performs I/O or holds a
value, so every rule (due times, idempotency windows, overlap and destruction, holds) is
unit-tested without an authority.

**Due time.** A value is due ``ttl - rotateBefore`` after the *current version was created*
(the KV version's own ``created_time``), so any new version (a rotation, a manual write, a
re-creation by issue-secrets) restarts the clock, and a rotation whose metadata update was lost
can never be repeated by mistake: the new version itself says it is fresh.

**Two-phase record.** A rotation first patches ``rotation-pending`` (the version it replaces)
with its window, trigger, event and reason, then writes the value with check-and-set on that
version, then (after destroying and propagating) finishes with :func:`finish_patch`. A crash
between the phases leaves ``rotation-pending``: the next delivery sees the version moved past it
and only finishes the record (:data:`Verdict` ``finish``) instead of rotating again.

**Windows.** Each rotation has a window id: ``schedule:<due time>`` for a tick, or
``request:<hash>`` / ``compromise:<hash>`` of the event's (source, id). The last few event
windows are kept in ``rotation-events``, so a redelivered request or compromise is recognised
even when other rotations happened in between.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeAlias

from chamberlain.model.intent import RotationPolicy

Trigger: TypeAlias = Literal["schedule", "request", "compromise"]
Verdict: TypeAlias = Literal[
    "rotate",  # write a new value now
    "finish",  # a previous attempt wrote the value: complete its record (and propagation)
    "recorded",  # that record is complete; only a stale rotation-pending marker remains
    "in-flight",  # another delivery wrote the value moments ago and is finishing: retry later
    "not-due",  # not due yet: keep (or move) the index entry at ``due``
    "done",  # this window already rotated: nothing to write
    "held",  # failureStrategy hold is in force for the current intent
    "owner",  # internal secret: the owner must write the new value (rotate.requested)
    "ignore",  # not chamberlain's to rotate (bootstrap, dynamic, retired, no policy, gone)
]

# custom_metadata keys owned by rotation (issue-secrets carries them over untouched).
LAST_ROTATED = "last-rotated"
NEXT_DUE = "next-due"
ROTATED_BY_EVENT = "rotated-by-event"
ROTATION_REASON = "rotation-reason"
ROTATION_TRIGGER = "rotation-trigger"
PREVIOUS_VERSION = "previous-version"
OVERLAP_UNTIL = "overlap-until"
DESTROY_PENDING = "destroy-pending"
ROTATION_PENDING = "rotation-pending"
ROTATION_WINDOW = "rotation-window"
ROTATION_EVENTS = "rotation-events"
ROTATION_HELD = "rotation-held"
ROTATION_HELD_REASON = "rotation-held-reason"
ROTATION_REQUESTED = "rotation-requested"
ROTATION_OWNED_KEYS = frozenset(
    {
        LAST_ROTATED,
        NEXT_DUE,
        ROTATED_BY_EVENT,
        ROTATION_REASON,
        ROTATION_TRIGGER,
        PREVIOUS_VERSION,
        OVERLAP_UNTIL,
        DESTROY_PENDING,
        ROTATION_PENDING,
        ROTATION_WINDOW,
        ROTATION_EVENTS,
        ROTATION_HELD,
        ROTATION_HELD_REASON,
        ROTATION_REQUESTED,
    }
)
MAX_EVENT_WINDOWS = 8
MAX_VALUE = 500  # KV v2 custom_metadata values are limited to 512 bytes
BUCKET_FORMAT = "%Y-%m-%dT%H"
BUCKET = timedelta(hours=1)
ROTATABLE_KINDS = frozenset({"runtime", "internal"})
# A rotation that wrote its value less than this long ago is being finished by its delivery.
PENDING_GRACE = timedelta(minutes=2)


# ---- time ----------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """UTC, second precision, ``Z`` suffix: how every rotation timestamp is written."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> datetime | None:
    """Inverse of :func:`iso` (also accepts offsets and fractions); junk -> None."""
    if not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def bucket_of(moment: datetime) -> str:
    """The due-index bucket (one per UTC hour) a moment falls in."""
    return moment.astimezone(timezone.utc).strftime(BUCKET_FORMAT)


def bucket_start(name: str) -> datetime:
    return datetime.strptime(name, BUCKET_FORMAT).replace(tzinfo=timezone.utc)


def is_bucket(name: str) -> bool:
    try:
        bucket_start(name)
    except ValueError:
        return False
    return True


def buckets_between(first: str, last: str) -> list[str]:
    """Every bucket from ``first`` to ``last`` inclusive (empty when first > last)."""
    start, end = bucket_start(first), bucket_start(last)
    out: list[str] = []
    while start <= end:
        out.append(bucket_of(start))
        start += BUCKET
    return out


# ---- policy and due ------------------------------------------------------------------------


def _seconds(metadata: Mapping[str, str], key: str) -> timedelta | None:
    raw = metadata.get(key, "")
    return timedelta(seconds=int(raw)) if raw.isdigit() and int(raw) > 0 else None


def policy_of(metadata: Mapping[str, str]) -> RotationPolicy | None:
    """The rotation policy issue-secrets recorded (``rotation-*`` keys), or None."""
    ttl = _seconds(metadata, "rotation-ttl")
    if ttl is None:
        return None
    before = _seconds(metadata, "rotation-before") or ttl / 10
    overlap = _seconds(metadata, "rotation-max-overlap") or before
    strategy = metadata.get("rotation-failure-strategy", "retry")
    if strategy not in ("retry", "alert", "hold"):
        strategy = "retry"
    return RotationPolicy(
        ttl=ttl,
        rotate_before=before,
        max_overlap=overlap,
        revoke_old=metadata.get("rotation-revoke-old", "true") != "false",
        failure_strategy=strategy,  # type: ignore[arg-type]
    )


def due_at(policy: RotationPolicy, created: datetime) -> datetime:
    """When a value created at ``created`` must be replaced."""
    return created + policy.ttl - policy.rotate_before


def due_from_metadata(
    metadata: Mapping[str, str], created: datetime | None, now: datetime
) -> datetime | None:
    """Due time of the current value, from the later of its creation and ``last-rotated``.

    The version's own creation time makes a rotation whose record was lost count anyway;
    ``last-rotated`` (the rotating step's clock) covers a clock ahead of the authority's.
    Neither known (metadata without a version date): ``next-due`` if recorded, else ``now``.
    None when the metadata declares no rotation policy.
    """
    policy = policy_of(metadata)
    if policy is None:
        return None
    known = [t for t in (created, parse_iso(metadata.get(LAST_ROTATED))) if t is not None]
    if known:
        return due_at(policy, max(known))
    recorded = parse_iso(metadata.get(NEXT_DUE))
    return recorded if recorded is not None else now


def window_for_schedule(due: datetime) -> str:
    return f"schedule:{iso(due)}"


def window_for_event(trigger: Trigger, source: str, event_id: str) -> str:
    """A short, stable id of one request/compromise event (source and id identify it)."""
    digest = hashlib.sha256(f"{source}\n{event_id}".encode()).hexdigest()[:16]
    return f"{trigger}:{digest}"


def event_windows(metadata: Mapping[str, str]) -> list[str]:
    return [w for w in metadata.get(ROTATION_EVENTS, "").split(",") if w]


def with_event_window(metadata: Mapping[str, str], window: str) -> str:
    """``rotation-events`` with ``window`` appended (last :data:`MAX_EVENT_WINDOWS` kept)."""
    windows = [w for w in event_windows(metadata) if w != window] + [window]
    return ",".join(windows[-MAX_EVENT_WINDOWS:])


def is_held(metadata: Mapping[str, str]) -> bool:
    """A hold applies while the intent is the one it was placed under (intent-hash)."""
    held = metadata.get(ROTATION_HELD)
    return bool(held) and held == metadata.get("intent-hash", "")


# ---- the decision --------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the step read about one secret (never its value)."""

    metadata: Mapping[str, str]
    current_version: int
    alive: bool  # the current version is readable (not deleted or destroyed)
    created: datetime | None  # created_time of the current version


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str
    window: str = ""
    due: datetime | None = None
    from_version: int = 0  # "finish": the version the interrupted rotation replaced


def pending_version(metadata: Mapping[str, str]) -> int:
    """The version an announced rotation replaces (``rotation-pending`` is ``<v>@<since>``)."""
    raw = metadata.get(ROTATION_PENDING, "").partition("@")[0]
    return int(raw) if raw.isdigit() else 0


def pending_since(metadata: Mapping[str, str]) -> datetime | None:
    return parse_iso(metadata.get(ROTATION_PENDING, "").partition("@")[2])


def decide(
    observed: Observed | None,
    *,
    now: datetime,
    trigger: Trigger,
    window: str | None = None,
    grace: timedelta = PENDING_GRACE,
) -> Decision:
    """What to do with one secret for one trigger.

    ``window`` is the event window for request/compromise (see :func:`window_for_event`);
    for a schedule tick it is derived from the due time. A value written by a rotation that
    began less than ``grace`` ago is left to that delivery to finish (``in-flight``).
    """
    if observed is None:
        return Decision("ignore", "no metadata at this path")
    meta = observed.metadata
    kind = meta.get("kind", "")
    if meta.get("managed-by") != "chamberlain":
        return Decision("ignore", "not managed by chamberlain")
    if kind not in ROTATABLE_KINDS:
        return Decision("ignore", f"{kind or 'unknown'} secrets are never rotated here")
    if meta.get("state") == "retired":
        return Decision("ignore", "retired")
    pending = pending_version(meta)
    if pending and observed.current_version > pending:
        if meta.get(PREVIOUS_VERSION) == str(pending) and meta.get(LAST_ROTATED):
            return Decision("recorded", "rotation record already complete", from_version=pending)
        since = pending_since(meta)
        if since is not None and now - since < grace:
            return Decision("in-flight", "another delivery is finishing this rotation")
        return Decision(
            "finish",
            f"version {observed.current_version} was written by an interrupted rotation",
            window=meta.get(ROTATION_WINDOW, ""),
            from_version=pending,
        )
    if trigger != "schedule":
        if window and window in event_windows(meta) and not pending:
            return Decision("done", "this event was already handled", window=window)
        if kind == "internal":
            return Decision(
                "owner", "internal secret: its owner writes the new value", window or ""
            )
        return Decision("rotate", f"{trigger} event", window=window or "")
    due = due_from_metadata(meta, observed.created, now)
    if due is None:
        return Decision("ignore", "no rotation policy")
    if not observed.alive or observed.current_version == 0:
        return Decision("ignore", "no live version (issue-secrets recreates it)")
    schedule_window = window_for_schedule(due)
    if due > now:
        return Decision("not-due", f"due at {iso(due)}", window=schedule_window, due=due)
    if is_held(meta):
        return Decision("held", "rotation held after a failure; waiting for an intent change")
    if kind == "internal":
        if meta.get(ROTATION_REQUESTED) == schedule_window:
            return Decision("done", "owner already asked for this window", window=schedule_window)
        return Decision("owner", "internal secret: its owner writes the new value", schedule_window)
    return Decision("rotate", f"due at {iso(due)}", window=schedule_window, due=due)


# ---- what a rotation writes ----------------------------------------------------------------


def begin_patch(
    *,
    from_version: int,
    started_at: datetime,
    window: str,
    trigger: Trigger,
    event_id: str,
    reason: str,
) -> dict[str, str | None]:
    """Phase one: announce the rotation before writing the value."""
    return {
        ROTATION_PENDING: f"{from_version}@{iso(started_at)}",
        ROTATION_WINDOW: window[:MAX_VALUE],
        ROTATION_TRIGGER: trigger,
        ROTATED_BY_EVENT: event_id[:MAX_VALUE] or None,
        ROTATION_REASON: reason[:MAX_VALUE] or None,
    }


def parse_destroy_pending(value: str | None) -> list[tuple[int, datetime]]:
    """``"3@2026-01-01T00:00:00Z,4@..."`` -> [(3, datetime), ...] (junk skipped)."""
    items: list[tuple[int, datetime]] = []
    for part in (value or "").split(","):
        number, sep, when = part.strip().partition("@")
        moment = parse_iso(when) if sep else None
        if number.isdigit() and moment is not None:
            items.append((int(number), moment))
    return items


def format_destroy_pending(items: list[tuple[int, datetime]]) -> str | None:
    unique = sorted(dict(items).items())
    text = ",".join(f"{v}@{iso(t)}" for v, t in unique)
    while len(text) > MAX_VALUE and "," in text:  # keep the newest; the oldest go first
        text = text.split(",", 1)[1]
    return text or None


def finish_patch(
    metadata: Mapping[str, str],
    *,
    policy: RotationPolicy | None,
    from_version: int,
    new_version: int,
    rotated_at: datetime,
    trigger: Trigger,
    window: str,
    destroyed_now: bool,
) -> dict[str, str | None]:
    """Phase two: the record of a completed rotation (rule 3: who, when, why, which).

    The replaced version is scheduled for destruction at ``overlap-until`` when the policy
    says ``revokeOld`` (and was not destroyed at once, as on a compromise).
    """
    patch: dict[str, str | None] = {
        ROTATION_PENDING: None,
        ROTATION_WINDOW: window[:MAX_VALUE] or None,
        ROTATION_TRIGGER: trigger,
        LAST_ROTATED: iso(rotated_at),
        PREVIOUS_VERSION: str(from_version) if from_version else None,
        ROTATION_HELD: None,
        ROTATION_HELD_REASON: None,
        ROTATION_REQUESTED: None,
    }
    if trigger != "schedule":
        patch[ROTATION_EVENTS] = with_event_window(metadata, window)
    pending = parse_destroy_pending(metadata.get(DESTROY_PENDING))
    if destroyed_now:
        pending = []
    if policy is not None:
        overlap_until = rotated_at + policy.max_overlap
        patch[NEXT_DUE] = iso(due_at(policy, rotated_at))
        patch[OVERLAP_UNTIL] = None if destroyed_now else iso(overlap_until)
        if policy.revoke_old and from_version and not destroyed_now:
            pending.append((from_version, overlap_until))
    patch[DESTROY_PENDING] = format_destroy_pending(pending)
    return patch


def destroy_due(metadata: Mapping[str, str], now: datetime) -> tuple[list[int], str | None]:
    """(versions whose overlap ended, the ``destroy-pending`` value that remains)."""
    items = parse_destroy_pending(metadata.get(DESTROY_PENDING))
    due = sorted({v for v, t in items if t <= now})
    remaining = [(v, t) for v, t in items if t > now]
    return due, format_destroy_pending(remaining)


def next_destroy(metadata: Mapping[str, str]) -> datetime | None:
    items = parse_destroy_pending(metadata.get(DESTROY_PENDING))
    return min((t for _, t in items), default=None)


def hold_patch(metadata: Mapping[str, str], reason: str) -> dict[str, str | None]:
    """failureStrategy hold: stop rotating until the intent (its hash) changes."""
    return {
        ROTATION_HELD: metadata.get("intent-hash") or "held",
        ROTATION_HELD_REASON: reason[:MAX_VALUE] or "rotation failed",
        ROTATION_PENDING: None,
    }


def owner_patch(
    window: str, metadata: Mapping[str, str], trigger: Trigger
) -> dict[str, str | None]:
    """Internal secrets: remember that the owner was asked for this window."""
    patch: dict[str, str | None] = {ROTATION_REQUESTED: window[:MAX_VALUE]}
    if trigger != "schedule":
        patch[ROTATION_EVENTS] = with_event_window(metadata, window)
    return patch


def describe_reason(trigger: Trigger, policy: RotationPolicy | None, given: str | None) -> str:
    """The human reason recorded in metadata and the reply."""
    if given:
        return given[:MAX_VALUE]
    if trigger == "schedule" and policy is not None:
        return f"rotation period elapsed (ttl {int(policy.ttl.total_seconds())}s)"
    return f"{trigger} rotation"
