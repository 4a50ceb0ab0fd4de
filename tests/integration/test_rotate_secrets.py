"""rotate-secrets on a real OpenBao: due secrets get exactly one new version, whatever the
delivery pattern; requests and compromises rotate at once; metadata says who, when, why, which.

Time is controlled through the step's clock (set past the due time), never by sleeping.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.due_index import DueIndex, destroy_key, rotate_key
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.planner.actions import ISSUE_OWNED_KEYS
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.rotate_secrets import FUNCTION
from tests.integration.test_rotate_fixtures import (
    BILLING,
    CHECKOUT,
    DUE_AFTER,
    PLAIN,
    Rotation,
    compromised,
    issue,
    request,
    rotation_fixture,  # noqa: F401 - the fixture named rotation
    runtime_secret,
    tick,
    versions,
)

ALL = (BILLING, CHECKOUT, PLAIN)


def _rotated_paths(reply: BaseCloudEvent | None) -> list[str]:
    if reply is None:
        return []
    return sorted(item["path"] for item in reply.get_data()["rotations"])


def test_due_secrets_rotate_once_however_often_the_tick_is_delivered(rotation: Rotation) -> None:
    prod = rotation.prod()
    old_values = {p: prod.read_secret(p) for p in (BILLING, CHECKOUT)}
    old_meta = {p: prod.read_metadata(p) for p in (BILLING, CHECKOUT)}
    step = rotation.step(at=rotation.due_time())
    event = tick("tick-dup")

    first = invoke(step, event, function=FUNCTION)
    assert first.status == 200 and first.reply is not None
    assert first.reply.get_type() == T.SECRET_ROTATED
    assert _rotated_paths(first.reply) == sorted([BILLING, CHECKOUT])
    for _ in range(2):  # the same tick, redelivered
        again = invoke(rotation.step(at=rotation.due_time()), event, function=FUNCTION)
        assert again.status == 202 and again.reply is None
    assert versions(prod, *ALL) == {BILLING: 2, CHECKOUT: 2, PLAIN: 1}

    for path in (BILLING, CHECKOUT):
        new = prod.read_secret(path)
        old = old_values[path]
        assert new is not None and old is not None
        assert set(new.data) == {"password", "username"}
        assert all(new.data[k] != old.data[k] for k in new.data)  # every key has a new value
        # the previous version stays readable during the overlap
        assert prod.read_secret(path, version=1) is not None
        meta = prod.read_metadata(path)
        assert meta is not None
        custom = meta.custom_metadata
        assert custom["previous-version"] == "1"
        assert custom["rotated-by-event"] == "tick-dup"
        assert custom["rotation-trigger"] == "schedule"
        assert custom["last-rotated"].startswith(rotation.due_time().strftime("%Y-%m-%dT%H"))
        assert custom["destroy-pending"].startswith("1@")
        assert "rotation-pending" not in custom
        assert custom["rotation-reason"]
        # what issue-secrets owns is untouched
        before = old_meta[path]
        assert before is not None
        owned = {k: v for k, v in before.custom_metadata.items() if k in ISSUE_OWNED_KEYS}
        assert {k: custom.get(k) for k in owned} == owned

    # re-indexed at the next due time; a later tick before it changes nothing
    next_due = rotation.due_time() + DUE_AFTER
    index = DueIndex(prod)
    assert index.entry_of(rotate_key(BILLING), next_due)
    later = rotation.step(at=rotation.due_time() + timedelta(hours=24))
    assert invoke(later, tick("tick-2"), function=FUNCTION).status == 202
    assert versions(prod, BILLING, CHECKOUT) == {BILLING: 2, CHECKOUT: 2}


def test_three_replicas_on_one_tick_make_one_version_each(rotation: Rotation) -> None:
    steps = [rotation.step(at=rotation.due_time()) for _ in range(3)]
    event = tick("tick-concurrent")
    barrier = threading.Barrier(3)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def replica(index: int) -> None:
        barrier.wait()
        outcome = invoke(steps[index], event, function=FUNCTION)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # a replica that finds another one finishing a secret answers 409: the broker retries it
    assert all(o.status in (200, 202, 409) for o in outcomes), [o.error for o in outcomes]
    assert versions(rotation.prod(), *ALL) == {BILLING: 2, CHECKOUT: 2, PLAIN: 1}
    reported = sorted(p for o in outcomes for p in _rotated_paths(o.reply))
    assert reported == sorted([BILLING, CHECKOUT])  # each rotation reported by one replica
    # the retried delivery finds nothing left to do
    settle = invoke(rotation.step(at=rotation.due_time()), event, function=FUNCTION)
    assert settle.status == 202
    assert versions(rotation.prod(), *ALL) == {BILLING: 2, CHECKOUT: 2, PLAIN: 1}
    for path in (BILLING, CHECKOUT):
        meta = rotation.prod().read_metadata(path)
        assert meta is not None and "rotation-pending" not in meta.custom_metadata


def test_compromise_revokes_the_old_value_at_once(rotation: Rotation) -> None:
    prod = rotation.prod()
    step = rotation.step(at=rotation.issued_at + timedelta(hours=2))
    event = compromised(CHECKOUT)

    outcome = invoke(step, event, function=FUNCTION)
    assert outcome.status == 200 and outcome.reply is not None
    data = outcome.reply.get_data()
    assert data["trigger"] == "compromise"
    [item] = data["rotations"]
    assert (item["path"], item["version"], item["previousVersion"]) == (CHECKOUT, 2, 1)
    assert item["destroyedVersions"] == [1]
    assert "overlapUntil" not in item
    assert prod.read_secret(CHECKOUT, version=1) is None  # destroyed, not just superseded
    meta = prod.read_metadata(CHECKOUT)
    assert meta is not None and meta.versions[1].destroyed
    assert meta.custom_metadata["rotation-trigger"] == "compromise"
    assert "destroy-pending" not in meta.custom_metadata

    again = invoke(
        rotation.step(at=rotation.issued_at + timedelta(hours=3)), event, function=FUNCTION
    )
    assert again.status == 200 and again.reply is not None  # same answer, nothing new
    assert again.reply.get_data()["rotations"][0]["version"] == 2
    assert versions(prod, CHECKOUT) == {CHECKOUT: 2}


def test_requests_rotate_out_of_schedule_once_per_event(rotation: Rotation) -> None:
    prod = rotation.prod()
    at = rotation.issued_at + timedelta(hours=5)
    first = invoke(rotation.step(at=at), request(PLAIN, id_="req-a"), function=FUNCTION)
    assert first.status == 200 and _rotated_paths(first.reply) == [PLAIN]
    assert (
        invoke(rotation.step(at=at), request(PLAIN, id_="req-a"), function=FUNCTION).status == 200
    )
    assert versions(prod, PLAIN) == {PLAIN: 2}
    second = invoke(rotation.step(at=at), request(PLAIN, id_="req-b"), function=FUNCTION)
    assert second.status == 200
    assert versions(prod, PLAIN) == {PLAIN: 3}
    meta = prod.read_metadata(PLAIN)
    assert meta is not None
    assert meta.custom_metadata["rotation-reason"] == "consumer migrated"
    assert meta.custom_metadata["rotation-trigger"] == "request"

    # bootstrap secrets, unknown paths and unknown environments are refused (422)
    prod.write_secret("platform-data/postgres/admin", {"password": "bootstrap-value-1"}, cas=0)
    prod.write_metadata(
        "platform-data/postgres/admin",
        custom_metadata={"managed-by": "chamberlain", "kind": "bootstrap", "class": "bootstrap"},
    )
    step = rotation.step()
    for path in ("platform-data/postgres/admin", "platform-data/redis/nothing-here"):
        outcome = invoke(step, request(path, id_=f"req-{path}"), function=FUNCTION)
        assert outcome.status == 422, outcome.error
    assert versions(prod, "platform-data/postgres/admin") == {"platform-data/postgres/admin": 1}
    unknown_env = invoke(step, request(BILLING, environment="qa-9"), function=FUNCTION)
    assert unknown_env.status == 422


def test_previous_version_is_destroyed_after_the_overlap(rotation: Rotation) -> None:
    prod = rotation.prod()
    rotated_at = rotation.due_time()
    assert invoke(rotation.step(at=rotated_at), tick("t1"), function=FUNCTION).status == 200
    # overlap (maxOverlap = rotateBefore = 72h) not over yet: version 1 still readable
    during = rotated_at + timedelta(hours=24)
    assert invoke(rotation.step(at=during), tick("t2"), function=FUNCTION).status == 202
    assert prod.read_secret(BILLING, version=1) is not None
    after = rotated_at + timedelta(hours=74)
    outcome = invoke(rotation.step(at=after), tick("t3"), function=FUNCTION)
    assert outcome.status == 200 and outcome.reply is not None
    destroyed = {d["path"]: d["versions"] for d in outcome.reply.get_data()["destroyed"]}
    assert destroyed == {BILLING: [1], CHECKOUT: [1]}
    assert prod.read_secret(BILLING, version=1) is None
    assert prod.read_secret(BILLING, version=2) is not None
    meta = prod.read_metadata(BILLING)
    assert meta is not None and "destroy-pending" not in meta.custom_metadata
    assert not DueIndex(prod).entry_of(destroy_key(BILLING), after)


def _orphan(rotation: Rotation, path: str, strategy: str) -> None:
    """A managed, rotating secret whose generator the applied intent does not declare."""
    prod = rotation.prod()
    prod.write_secret(path, {"token": "orphan-value-123"}, cas=0)
    metadata = {
        "managed-by": "chamberlain",
        "kind": "runtime",
        "class": "runtime",
        "state": "active",
        "intent-hash": "0123456789abcdef",
        "rotation-ttl": str(int(timedelta(hours=720).total_seconds())),
        "rotation-before": str(int(timedelta(hours=72).total_seconds())),
        "rotation-failure-strategy": strategy,
    }
    prod.write_metadata(path, custom_metadata=metadata)
    found = prod.read_metadata(path)
    assert found is not None
    DueIndex(prod).add(
        {rotate_key(path): rotation.due_time() - timedelta(minutes=5)}, now=rotation.issued_at
    )


def test_failure_strategies_retry_alert_hold(rotation: Rotation) -> None:
    orphans = {s: f"platform-data/vendor/orphan-{s}" for s in ("retry", "alert", "hold")}
    for strategy, path in orphans.items():
        _orphan(rotation, path, strategy)
    prod = rotation.prod()
    outcome = invoke(rotation.step(at=rotation.due_time()), tick("t-fail"), function=FUNCTION)
    # the other due secrets are rotated whatever happens to the orphans
    assert versions(prod, BILLING, CHECKOUT) == {BILLING: 2, CHECKOUT: 2}
    assert versions(prod, *orphans.values()) == {p: 1 for p in orphans.values()}
    # one retry-strategy failure: 503 (the broker retries), the reply still says what was done
    assert outcome.status == 503 and outcome.retryable and outcome.reply is not None
    data = outcome.reply.get_data()
    assert _rotated_paths(outcome.reply) == sorted([BILLING, CHECKOUT])
    assert outcome.reply.get_extension("alert") == "true"
    failed = sorted((f["path"], f["strategy"]) for f in data["failed"])
    assert failed == sorted([(orphans["retry"], "retry"), (orphans["alert"], "alert")])
    assert [h["path"] for h in data["held"]] == [orphans["hold"]]
    held = prod.read_metadata(orphans["hold"])
    assert held is not None and held.custom_metadata["rotation-held"] == "0123456789abcdef"

    later = invoke(
        rotation.step(at=rotation.due_time() + timedelta(hours=2)),
        tick("t-later"),
        function=FUNCTION,
    )
    assert later.reply is not None
    again = sorted(f["path"] for f in later.reply.get_data()["failed"])
    assert again == sorted([orphans["retry"], orphans["alert"]])  # hold: not tried again
    assert later.reply.get_data()["held"] == []
    assert versions(prod, *orphans.values()) == {p: 1 for p in orphans.values()}


def test_internal_secret_due_asks_its_owner(configured_env: Any) -> None:
    from tests.integration.test_rotate_fixtures import Rotation as R

    env = configured_env
    internal = "platform-data/stripe/checkout"
    document = "\n".join(
        [
            "apiVersion: chamberlain.dev/v1alpha1",
            "kind: SecretIntent",
            "metadata: {name: stripe-key}",
            "spec:",
            f"  path: {internal}",
            "  class: internal",
            "  owner: team-payments",
            "  purpose: Vendor API key",
            "  environments: [prod]",
            "  consumers: [{namespace: checkout, serviceAccount: checkout}]",
            "  keys: [api-key]",
            "  rotation: {ttl: 720h}",
        ]
    )
    issued_at = issue(env, {"secrets/stripe.yaml": document + "\n"})
    rot = R(env=env, issued_at=issued_at)
    prod = rot.prod()
    prod.write_secret(internal, {"api-key": "vendor-key-value-1"}, cas=0)  # the operator writes it
    outcome = invoke(rot.step(at=rot.due_time()), tick("t-owner"), function=FUNCTION)
    assert outcome.status == 200 and outcome.reply is not None
    data = outcome.reply.get_data()
    assert data["ownerRequested"] == [
        {"environment": "prod", "path": internal, "owner": "team-payments"}
    ]
    assert data["rotations"] == []
    assert [e.get_type() for e in rot.emitted] == [T.SECRET_ROTATE_REQUESTED]
    assert rot.emitted[0].get_data()["path"] == internal
    assert versions(prod, internal) == {internal: 1}  # chamberlain never invents its value
    again = invoke(rot.step(at=rot.due_time()), tick("t-owner"), function=FUNCTION)
    assert again.status == 202 and len(rot.emitted) == 1


def test_ticks_cost_authority_calls_in_proportion_to_what_is_due(rotation: Rotation) -> None:
    """Twenty more rotating secrets that are not due: no tick pays for them."""
    env = rotation.env
    extra = [f"platform-data/extra/svc-{i}" for i in range(20)]
    issue(
        env,
        {
            f"secrets/extra-{i}.yaml": runtime_secret(f"extra-{i}", path, rotation="{ttl: 2000h}")
            for i, path in enumerate(extra)
        },
    )
    prod = rotation.prod()
    before = versions(prod, *ALL, *extra)

    quiet = rotation.step(at=rotation.issued_at + timedelta(hours=1), concurrency=1)
    start = quiet.authority.calls.snapshot()
    assert invoke(quiet, tick("t-quiet"), function=FUNCTION).status == 202
    assert sum((quiet.authority.calls.snapshot() - start).values()) <= 4
    other = make_event(T.PING, {"task": "watch-leases"}, source="/tests/ping")
    assert invoke(rotation.step(at=rotation.due_time()), other, function=FUNCTION).status == 202
    assert versions(prod, *ALL, *extra) == before

    due = rotation.step(at=rotation.due_time(), concurrency=1)
    start = due.authority.calls.snapshot()
    outcome = invoke(due, tick("t-cost"), function=FUNCTION)
    assert outcome.status == 200 and _rotated_paths(outcome.reply) == sorted([BILLING, CHECKOUT])
    calls = due.authority.calls.snapshot() - start
    # per due secret: read metadata, announce, write, record (4); plus a constant for the
    # cursor, buckets, applied record and re-indexing that does not grow with the secrets
    assert sum(calls.values()) <= 2 * 4 + 16, calls
    assert versions(prod, *extra) == {p: 1 for p in extra}
