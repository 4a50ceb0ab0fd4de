"""The embedded broker against a real SQLite file: routing, retries, dead letters, restarts.

Steps are plain functions defined here and run through the real ``outcome.invoke`` (catalog
validation included); manifests are real Knative YAML written to ``tmp_path`` with tiny
backoff delays. Nothing asserts wall-clock durations: retry waits are read from what the
broker scheduled.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from chamberlain.logs import register_secret
from chamberlain.model.events import event_from_json, event_to_json, example_event
from chamberlain.runtime.local.broker import DEFAULT_TTL, Broker, TimelineEntry
from chamberlain.runtime.local.manifests import Manifests, load_manifests
from chamberlain.runtime.local.pings import PingScheduler
from chamberlain.runtime.local.store import DeliveryStore
from chamberlain.steps.base import PermanentError, Step, TransientError

pytestmark = pytest.mark.integration

CREATED = "dev.chamberlain.cluster.created.v1"
INITIALIZED = "dev.chamberlain.authority.initialized.v1"
ROTATE = "dev.chamberlain.secret.rotate.requested.v1"
EXPIRING = "dev.chamberlain.lease.expiring.v1"
TEARDOWN = "dev.chamberlain.environment.teardown.v1"
REJECTED = "dev.chamberlain.intent.rejected.v1"
DRIFT = "dev.chamberlain.drift.detected.v1"

BROKER = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
spec:
  delivery:
    retry: 3
    backoffPolicy: exponential
    backoffDelay: PT0.01S
    deadLetterSink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: dead-letter}}
"""
TRIGGER = """\
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
  filter: {{attributes: {attributes}}}
  subscriber: {{ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: {fn}}}}}
"""
PING = """\
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: rotate}
spec:
  schedule: "*/5 * * * *"
  contentType: application/json
  data: '{"task": "rotate"}'
  ceOverrides: {extensions: {task: rotate}}
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
"""
LINEAR = "  delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.01S}\n"
ROUTES = [
    ("initialize-authority-created", f"{{type: {CREATED}}}", "initialize-authority", ""),
    ("hand-over-bootstrap-initialized", f"{{type: {INITIALIZED}}}", "hand-over-bootstrap", ""),
    ("rotate-secrets-requested", f"{{type: {ROTATE}}}", "rotate-secrets", LINEAR),
    ("rotate-secrets-tick", "{type: dev.knative.sources.ping, task: rotate}", "rotate-secrets", ""),
    ("renew-lease-expiring", f"{{type: {EXPIRING}}}", "renew-lease", ""),
    ("revoke-environment-teardown", f"{{type: {TEARDOWN}}}", "revoke-environment", ""),
    ("notify-rejected", f"{{type: {REJECTED}}}", "notify", ""),
]
MANIFESTS = (
    BROKER
    + "".join(
        TRIGGER.format(name=name, attributes=attributes, fn=fn) + extra
        for name, attributes, fn, extra in ROUTES
    )
    + PING
)


def event(type_: str, id_: str | None = None) -> CloudEvent:
    """The catalog's example of ``type_`` under a fresh (or given) id."""
    document = event_to_json(example_event(type_))
    document["id"] = id_ or str(uuid.uuid4())
    return event_from_json(document)


class Recorder:
    """Steps that record what they received and answer as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, BaseCloudEvent]] = []

    def step(
        self, name: str, answer: type[Exception] | str | None = None, message: str = "boom"
    ) -> Step:
        def run(incoming: BaseCloudEvent) -> BaseCloudEvent | None:
            self.calls.append((name, incoming))
            if isinstance(answer, type):
                raise answer(message)
            return event(answer) if isinstance(answer, str) else None

        return run

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def manifests(tmp_path: Path) -> Manifests:
    path = tmp_path / "knative.yaml"
    path.write_text(MANIFESTS)
    return load_manifests(path)


@pytest.fixture
def store(tmp_path: Path) -> DeliveryStore:
    return DeliveryStore(tmp_path / "broker.sqlite")


def make_broker(
    manifests: Manifests, store: DeliveryStore, steps: dict[str, Step]
) -> tuple[Broker, list[TimelineEntry]]:
    timeline: list[TimelineEntry] = []
    return Broker(manifests, store, steps, on_timeline=timeline.append), timeline


def test_events_reach_only_the_functions_whose_trigger_matches(
    manifests: Manifests, store: DeliveryStore
) -> None:
    rec = Recorder()
    steps = {n: rec.step(n) for n in ("initialize-authority", "hand-over-bootstrap", "renew-lease")}
    broker, timeline = make_broker(manifests, store, steps)
    created, expiring = event(CREATED), event(EXPIRING)

    assert broker.publish(created, origin="test") == ["initialize-authority-created"]
    assert broker.publish(expiring, origin="test") == ["renew-lease-expiring"]
    assert broker.publish(event(DRIFT), origin="test") == []  # no trigger for it
    assert broker.publish(event(TEARDOWN), origin="test") == []  # subscriber not served here
    assert broker.run_until_idle(10)

    assert sorted((n, e.get_id()) for n, e in rec.calls) == sorted(
        [("initialize-authority", created.get_id()), ("renew-lease", expiring.get_id())]
    )
    assert {t.name for t in broker.not_ready} >= {"revoke-environment-teardown"}
    delivered = [e for e in timeline if e.kind == "delivered"]
    assert {(e.function, e.status, e.attempt) for e in delivered} == {
        ("initialize-authority", 202, 1),
        ("renew-lease", 202, 1),
    }
    assert broker.pending() == 0 and broker.dead_letters() == []


def _waits(timeline: list[TimelineEntry]) -> list[float]:
    found = [re.search(r" in ([0-9.]+)s", e.detail) for e in timeline if e.kind == "retry"]
    return [float(m.group(1)) for m in found if m]


def test_a_transient_failure_is_retried_per_the_trigger_delivery_then_dead_lettered(
    manifests: Manifests, store: DeliveryStore
) -> None:
    rec = Recorder()
    steps = {
        "rotate-secrets": rec.step("rotate-secrets", TransientError, "authority sealed"),
        "dead-letter": rec.step("dead-letter"),
    }
    broker, timeline = make_broker(manifests, store, steps)
    original = event(ROTATE)
    broker.publish(original, origin="test")
    assert broker.run_until_idle(10)

    # trigger delivery: retry 2, linear PT0.01S -> 3 attempts, waits 0 and 0.01 s (Knative)
    assert rec.names().count("rotate-secrets") == 3
    assert [e.attempt for e in timeline if e.kind == "retry"] == [1, 2]
    assert _waits(timeline) == [0.0, 0.01]
    [letter] = broker.dead_letters()
    assert (letter.function, letter.status, letter.attempts) == ("rotate-secrets", 503, 3)
    assert letter.sink == "dead-letter"  # inherited from the Broker
    ext = letter.event.get_attributes()
    assert ext["knativeerrorcode"] == "503"
    assert ext["knativeerrordest"] == "rotate-secrets"
    assert "authority sealed" in base64.b64decode(ext["knativeerrordata"]).decode()
    assert letter.event.get_id() == original.get_id()
    assert letter.event.get_data() == original.get_data()

    # the dead-letter sink is served here, so it received that very event
    [(_, sunk)] = [c for c in rec.calls if c[0] == "dead-letter"]
    assert sunk.get_id() == original.get_id()
    assert sunk.get_extension("knativeerrorcode") == "503"
    dead = [e for e in timeline if e.kind == "dead-letter"]
    assert len(dead) == 1 and "retries exhausted" in dead[0].detail


def test_the_broker_delivery_applies_when_the_trigger_has_none(
    manifests: Manifests, store: DeliveryStore
) -> None:
    rec = Recorder()
    broker, timeline = make_broker(
        manifests, store, {"renew-lease": rec.step("renew-lease", TransientError)}
    )
    broker.publish(event(EXPIRING), origin="test")
    assert broker.run_until_idle(10)
    # broker delivery: retry 3, exponential PT0.01S -> waits 0.01, 0.02, 0.04 s
    assert rec.names() == ["renew-lease"] * 4
    assert _waits(timeline) == [0.01, 0.02, 0.04]
    [letter] = broker.dead_letters()
    assert letter.attempts == 4 and letter.sink == "dead-letter"
    assert "not served here" in next(e for e in timeline if e.kind == "dead-letter").detail


def test_a_permanent_failure_is_not_retried_and_is_dead_lettered_without_secrets(
    manifests: Manifests, store: DeliveryStore, tmp_path: Path
) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    register_secret(secret)
    rec = Recorder()
    steps = {
        "renew-lease": rec.step("renew-lease", PermanentError, f"lease unknown, token {secret}"),
        "dead-letter": rec.step("dead-letter"),
    }
    broker, timeline = make_broker(manifests, store, steps)
    broker.publish(event(EXPIRING), origin="test")
    assert broker.run_until_idle(10)

    assert rec.names() == ["renew-lease", "dead-letter"]
    assert not [e for e in timeline if e.kind == "retry"]
    [letter] = broker.dead_letters()
    assert (letter.status, letter.attempts) == (422, 1)
    data = base64.b64decode(letter.event.get_attributes()["knativeerrordata"]).decode()
    assert "lease unknown" in data and secret not in data
    assert "not retryable" in next(e for e in timeline if e.kind == "dead-letter").detail
    for file in tmp_path.glob("broker.sqlite*"):
        assert secret.encode() not in file.read_bytes()


def test_an_event_rejected_by_its_schema_goes_to_the_dead_letters(
    manifests: Manifests, store: DeliveryStore
) -> None:
    rec = Recorder()
    broker, _ = make_broker(manifests, store, {"renew-lease": rec.step("renew-lease")})
    bad = CloudEvent(attributes={"type": EXPIRING, "source": "/test"}, data={"nope": 1})
    broker.publish(bad, origin="test")
    assert broker.run_until_idle(10)
    assert rec.calls == []  # invoke refused it before the step ran
    assert [d.status for d in broker.dead_letters()] == [400]


def test_a_reply_event_is_routed_onward(manifests: Manifests, store: DeliveryStore) -> None:
    rec = Recorder()
    steps = {
        "initialize-authority": rec.step("initialize-authority", INITIALIZED),
        "hand-over-bootstrap": rec.step("hand-over-bootstrap"),
    }
    broker, timeline = make_broker(manifests, store, steps)
    broker.publish(event(CREATED), origin="test")
    assert broker.run_until_idle(10)

    assert rec.names() == ["initialize-authority", "hand-over-bootstrap"]
    assert rec.calls[1][1].get_type() == INITIALIZED
    kinds = [(e.kind, e.event_type, e.function) for e in timeline]
    assert ("reply", INITIALIZED, "initialize-authority") in kinds
    assert ("received", INITIALIZED, "reply:initialize-authority") in kinds
    assert ("delivered", INITIALIZED, "hand-over-bootstrap") in kinds


def test_a_reply_carried_by_a_permanent_failure_is_published(
    manifests: Manifests, store: DeliveryStore
) -> None:
    rec = Recorder()

    def rejecting(incoming: BaseCloudEvent) -> BaseCloudEvent | None:
        rec.calls.append(("rotate-secrets", incoming))
        raise PermanentError("invalid intent", reply=event(REJECTED))

    steps = {"rotate-secrets": rejecting, "notify": rec.step("notify")}
    broker, _ = make_broker(manifests, store, steps)
    broker.publish(event(ROTATE), origin="test")
    assert broker.run_until_idle(10)
    assert rec.names() == ["rotate-secrets", "notify"]
    assert rec.calls[1][1].get_type() == REJECTED
    assert [d.status for d in broker.dead_letters()] == [422]


def test_reply_loops_stop_when_the_broker_ttl_runs_out(
    manifests: Manifests, store: DeliveryStore
) -> None:
    rec = Recorder()
    steps = {
        "initialize-authority": rec.step("initialize-authority", INITIALIZED),
        "hand-over-bootstrap": rec.step("hand-over-bootstrap", CREATED),
    }
    broker, timeline = make_broker(manifests, store, steps)
    broker.publish(event(CREATED), origin="test")
    assert broker.run_until_idle(60)
    assert len(rec.calls) == DEFAULT_TTL
    assert [e.kind for e in timeline].count("skipped") == 1


def test_a_republished_event_is_delivered_once(manifests: Manifests, store: DeliveryStore) -> None:
    rec = Recorder()
    broker, timeline = make_broker(manifests, store, {"renew-lease": rec.step("renew-lease")})
    first = event(EXPIRING, "lease-1")
    assert broker.publish(first, origin="watcher") == ["renew-lease-expiring"]
    assert broker.publish(event(EXPIRING, "lease-1"), origin="watcher") == []
    assert broker.run_until_idle(10)
    assert broker.publish(event(EXPIRING, "lease-1"), origin="watcher") == []
    assert broker.run_until_idle(10)
    assert rec.names() == ["renew-lease"]
    received = [e.detail for e in timeline if e.kind == "received"]
    assert sum("duplicate" in d for d in received) == 2


def test_a_new_broker_on_the_same_file_delivers_what_a_killed_one_left(
    manifests: Manifests, tmp_path: Path
) -> None:
    path = tmp_path / "broker.sqlite"
    first_store = DeliveryStore(path)
    rec_before = Recorder()
    killed, _ = make_broker(manifests, first_store, {"renew-lease": rec_before.step("renew-lease")})
    ids = [f"lease-{n}" for n in range(3)]
    for id_ in ids:
        killed.publish(event(EXPIRING, id_), origin="watcher")
    # the process dies in the middle of a delivery: claimed (inflight), outcome never recorded
    assert first_store.claim_due(["renew-lease"]) is not None
    assert first_store.inflight_count() == 1
    del killed  # no stop(): nothing is flushed or cleaned up

    reopened = DeliveryStore(path)
    assert reopened.recovered == 1
    rec = Recorder()
    broker, _ = make_broker(manifests, reopened, {"renew-lease": rec.step("renew-lease")})
    assert broker.pending() == 3
    broker.start()
    try:
        assert broker.run_until_idle(10)
    finally:
        broker.stop(5)
    assert rec_before.calls == []
    assert Counter(e.get_id() for _, e in rec.calls) == Counter(ids)
    assert reopened.deliveries_of(event(EXPIRING).get_source(), "lease-0") == [
        ("renew-lease-expiring", "renew-lease", "done", 1)
    ]


def test_pings_reach_their_trigger_once_per_scheduled_time_across_restarts(
    manifests: Manifests, tmp_path: Path
) -> None:
    rec = Recorder()
    store = DeliveryStore(tmp_path / "broker.sqlite")
    broker, _ = make_broker(manifests, store, {"rotate-secrets": rec.step("rotate-secrets")})
    start = 1_800_000_000.0  # a multiple of 300 s: a "*/5" tick
    pings = PingScheduler(manifests.pingsources, broker.publish, store, clock=lambda: start)
    assert pings.tick(start) == []  # first sight: starts counting, fires nothing
    assert pings.tick(start + 299) == []
    [tick] = pings.tick(start + 301)
    assert pings.tick(start + 302) == []
    assert tick.get_source() == "/apis/v1/namespaces/default/pingsources/rotate"
    assert tick.get_extension("task") == "rotate"
    assert tick.get_data() == {"task": "rotate"}
    assert tick.get_time() is not None and tick.get_time().timestamp() == start + 300

    # a restart (new scheduler, same store) neither re-fires nor bursts the missed ticks
    later = PingScheduler(manifests.pingsources, broker.publish, DeliveryStore(store.path))
    assert later.tick(start + 301) == []
    [caught_up] = later.tick(start + 3000)  # nine ticks missed: one event, the latest
    assert caught_up.get_time() is not None
    assert caught_up.get_time().timestamp() == start + 3000
    manual = later.fire_now("rotate")
    assert broker.run_until_idle(10)
    assert [e.get_id() for _, e in rec.calls] == [
        tick.get_id(),
        caught_up.get_id(),
        manual.get_id(),
    ]
    assert json.loads(json.dumps(rec.calls[0][1].get_data())) == {"task": "rotate"}
    with pytest.raises(LookupError, match="rotate"):
        later.fire_now("nope")
