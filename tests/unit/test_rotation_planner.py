"""The pure rotation rules: due times, verdicts, what a rotation records and destroys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chamberlain.planner import rotation as r

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def meta(**extra: str) -> dict[str, str]:
    base = {
        "managed-by": "chamberlain",
        "kind": "runtime",
        "class": "runtime",
        "state": "active",
        "intent-hash": "abcdef0123456789",
        "rotation-ttl": str(int((30 * DAY).total_seconds())),
        "rotation-before": str(int((3 * DAY).total_seconds())),
        "rotation-max-overlap": str(int((1 * DAY).total_seconds())),
        "rotation-revoke-old": "true",
        "rotation-failure-strategy": "retry",
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return base


def observed(metadata: dict[str, str], version: int = 1, created: datetime = T0) -> r.Observed:
    return r.Observed(metadata=metadata, current_version=version, alive=True, created=created)


def test_buckets_are_utc_hours() -> None:
    moment = datetime(2026, 1, 1, 23, 59, tzinfo=timezone(timedelta(hours=-2)))
    assert r.bucket_of(moment) == "2026-01-02T01"
    assert r.buckets_between("2026-01-01T23", "2026-01-02T01") == [
        "2026-01-01T23",
        "2026-01-02T00",
        "2026-01-02T01",
    ]
    assert r.buckets_between("2026-01-02T01", "2026-01-01T23") == []
    assert r.is_bucket("2026-01-02T01") and not r.is_bucket("cursor")


def test_policy_defaults_follow_the_intent_rules() -> None:
    policy = r.policy_of({"rotation-ttl": "1000"})
    assert policy is not None
    assert policy.rotate_before == timedelta(seconds=100)
    assert policy.max_overlap == timedelta(seconds=100)
    assert policy.revoke_old and policy.failure_strategy == "retry"
    assert r.policy_of({}) is None and r.policy_of({"rotation-ttl": "soon"}) is None


def test_due_counts_from_the_later_of_creation_and_last_rotation() -> None:
    m = meta()
    assert r.due_from_metadata(m, T0, T0) == T0 + 27 * DAY
    later = meta(last_rotated=r.iso(T0 + 5 * DAY))
    assert r.due_from_metadata(later, T0, T0) == T0 + 32 * DAY
    assert r.due_from_metadata({"managed-by": "chamberlain"}, T0, T0) is None


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ({"kind": "runtime"}, "not managed"),
        (meta(kind="bootstrap"), "never rotated"),
        (meta(kind="dynamic"), "never rotated"),
        (meta(state="retired"), "retired"),
    ],
)
def test_what_is_never_rotated(metadata: dict[str, str], why: str) -> None:
    for trigger in ("schedule", "request", "compromise"):
        decision = r.decide(observed(metadata), now=T0 + 60 * DAY, trigger=trigger)  # type: ignore[arg-type]
        assert decision.verdict == "ignore" and why in decision.why
    assert r.decide(None, now=T0, trigger="schedule").verdict == "ignore"


def test_schedule_verdicts() -> None:
    m = meta()
    early = r.decide(observed(m), now=T0 + DAY, trigger="schedule")
    assert early.verdict == "not-due" and early.due == T0 + 27 * DAY
    due = r.decide(observed(m), now=T0 + 28 * DAY, trigger="schedule")
    assert due.verdict == "rotate" and due.window == f"schedule:{r.iso(T0 + 27 * DAY)}"
    held = meta(rotation_held="abcdef0123456789")
    assert r.decide(observed(held), now=T0 + 28 * DAY, trigger="schedule").verdict == "held"
    # the hold ends when the intent changes (another intent-hash)
    moved = meta(rotation_held="0000000000000000")
    assert r.decide(observed(moved), now=T0 + 28 * DAY, trigger="schedule").verdict == "rotate"
    internal = meta(kind="internal")
    ask = r.decide(observed(internal), now=T0 + 28 * DAY, trigger="schedule")
    assert ask.verdict == "owner"
    asked = meta(kind="internal", rotation_requested=ask.window)
    assert r.decide(observed(asked), now=T0 + 28 * DAY, trigger="schedule").verdict == "done"


def test_events_rotate_at_once_and_only_once() -> None:
    window = r.window_for_event("request", "/ops", "evt-1")
    assert window == r.window_for_event("request", "/ops", "evt-1")
    assert window != r.window_for_event("request", "/ops", "evt-2")
    first = r.decide(observed(meta()), now=T0, trigger="request", window=window)
    assert first.verdict == "rotate"  # not due, rotated anyway
    done = meta(rotation_events=r.with_event_window(meta(), window))
    assert r.decide(observed(done, 2), now=T0, trigger="request", window=window).verdict == "done"
    held = meta(rotation_held="abcdef0123456789")
    assert r.decide(observed(held), now=T0, trigger="compromise", window="c:1").verdict == "rotate"


def test_interrupted_rotations_are_finished_not_repeated() -> None:
    started = T0 + 28 * DAY
    pending = meta(rotation_pending=f"1@{r.iso(started)}", rotation_window="schedule:x")
    # value 2 written moments ago by another delivery: leave it to finish
    busy = r.decide(observed(pending, 2), now=started + timedelta(seconds=5), trigger="schedule")
    assert busy.verdict == "in-flight"
    crashed = r.decide(observed(pending, 2), now=started + 10 * r.PENDING_GRACE, trigger="schedule")
    assert crashed.verdict == "finish" and crashed.from_version == 1
    assert crashed.window == "schedule:x"
    complete = {**pending, "previous-version": "1", "last-rotated": r.iso(started)}
    late = r.decide(observed(complete, 2), now=started + DAY, trigger="schedule")
    assert late.verdict == "recorded"
    not_written = r.decide(observed(pending, 1), now=started + DAY, trigger="schedule")
    assert not_written.verdict == "rotate"


def test_finish_records_who_when_why_which_and_schedules_destruction() -> None:
    policy = r.policy_of(meta())
    patch = r.finish_patch(
        meta(),
        policy=policy,
        from_version=3,
        new_version=4,
        rotated_at=T0,
        trigger="schedule",
        window="schedule:w",
        destroyed_now=False,
    )
    assert patch["rotation-pending"] is None
    assert patch["last-rotated"] == r.iso(T0)
    assert patch["previous-version"] == "3"
    assert patch["next-due"] == r.iso(T0 + 27 * DAY)
    assert patch["overlap-until"] == r.iso(T0 + DAY)
    assert patch["destroy-pending"] == f"3@{r.iso(T0 + DAY)}"
    keep = r.finish_patch(
        meta(rotation_revoke_old="false"),
        policy=r.policy_of(meta(rotation_revoke_old="false")),
        from_version=3,
        new_version=4,
        rotated_at=T0,
        trigger="schedule",
        window="w",
        destroyed_now=False,
    )
    assert keep["destroy-pending"] is None
    compromised = r.finish_patch(
        meta(destroy_pending=f"2@{r.iso(T0)}"),
        policy=policy,
        from_version=3,
        new_version=4,
        rotated_at=T0,
        trigger="compromise",
        window="compromise:abc",
        destroyed_now=True,
    )
    assert compromised["destroy-pending"] is None and compromised["overlap-until"] is None
    assert compromised["rotation-events"] == "compromise:abc"
    assert set(patch) <= r.ROTATION_OWNED_KEYS


def test_destruction_waits_for_the_overlap() -> None:
    value = f"2@{r.iso(T0)},3@{r.iso(T0 + DAY)}"
    assert r.destroy_due({"destroy-pending": value}, T0 - DAY) == ([], value)
    assert r.destroy_due({"destroy-pending": value}, T0) == ([2], f"3@{r.iso(T0 + DAY)}")
    assert r.destroy_due({"destroy-pending": value}, T0 + DAY) == ([2, 3], None)
    assert r.next_destroy({"destroy-pending": value}) == T0
    assert r.parse_destroy_pending("junk,4@never,5@" + r.iso(T0)) == [(5, T0)]


def test_metadata_values_stay_within_kv_limits() -> None:
    many = [(v, T0) for v in range(1, 200)]
    text = r.format_destroy_pending(many)
    assert text is not None and len(text) <= r.MAX_VALUE and text.endswith(f"199@{r.iso(T0)}")
    windows = meta()
    for i in range(20):
        windows["rotation-events"] = r.with_event_window(windows, f"request:{i:016x}")
    assert len(r.event_windows(windows)) == r.MAX_EVENT_WINDOWS
    assert r.hold_patch(meta(), "x" * 2000)["rotation-held-reason"] == "x" * r.MAX_VALUE
