"""watch-leases and renew-lease on real OpenBao and real PostgreSQL.

Time is controlled by the steps' injectable clock (real time shifted forward), never by
waiting: a 1-minute lease with a 2-minute maximum is "due" at +40 s and "past its maximum"
at +70 s while its real lease is still live. Expiring events travel through a tiny HTTP sink
(the ``K_SINK`` path the functions use in production).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent

from chamberlain.ingress.webhook_app import http_emitter
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event, parse_http, validate_event
from chamberlain.planner.leases import parse_time
from chamberlain.runtime.outcome import invoke
from tests.harness.environments import ConfiguredEnv
from tests.integration.test_dynamic_credentials import (
    AUDIT,
    REPORTING,
    Lab,
    dynamic_credential,
    open_lab,
    role_exists,
)

pytestmark = pytest.mark.integration


class Sink:
    """A tiny CloudEvents receiver: every POST is parsed and kept."""

    def __init__(self) -> None:
        self.events: list[BaseCloudEvent] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                event = parse_http(dict(self.headers.items()), body)
                with sink._lock:
                    sink.events.append(event)
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> list[BaseCloudEvent]:
        with self._lock:
            taken, self.events = self.events, []
        return taken

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    receiver = Sink()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def lab(configured_env: ConfiguredEnv) -> Iterator[Lab]:
    with open_lab(configured_env) as opened:
        opened.hand_over()
        opened.seed_consumers()
        opened.issue_step()(opened.handover_event())
        yield opened


def _tick(lab: Lab, sink: Sink) -> list[BaseCloudEvent]:
    ping = make_event(
        T.PING, {"task": "watch-leases"}, source="/apis/v1/namespaces/chamberlain/pingsources/x"
    )
    assert lab.watch_step(http_emitter(sink.url))(ping) is None
    return sink.take()


def test_watch_emits_expiring_only_past_the_renewal_point(
    configured_env: ConfiguredEnv, sink: Sink
) -> None:
    with open_lab(configured_env) as lab:
        documents = {
            "dynamic/reporting.yaml": dynamic_credential("reporting", REPORTING, lab.database),
            "dynamic/audit.yaml": dynamic_credential(
                "audit", AUDIT, lab.database, ttl="10m", max_ttl="1h"
            ),
        }
        lab.commit = str(lab.env.repo.commit_and_push(documents, "two credentials")["after"])
        lab.hand_over()
        lab.issue_step()(lab.handover_event())
        reporting = lab.leases(REPORTING).records["reader"].lease_id

        assert _tick(lab, sink) == [], "fresh leases are not due"

        lab.clock.advance(45)  # past 0.66 of the 1-minute lease, far from 0.66 of 10 minutes
        emitted = _tick(lab, sink)

        assert [e.get_data()["leaseId"] for e in emitted] == [reporting]
        [event] = emitted
        validate_event(event)
        assert event.get_type() == T.LEASE_EXPIRING and event.get_subject() == REPORTING
        assert event.get_data()["environment"] == "prod" and event.get_data()["path"] == REPORTING
        assert [e.get_id() for e in _tick(lab, sink)] == [event.get_id()], (
            "a repeated tick sends the same event id"
        )

        lab.clock.advance(400)  # now the 10-minute lease is due as well
        assert {e.get_data()["path"] for e in _tick(lab, sink)} == {REPORTING, AUDIT}


def test_without_a_sink_the_most_urgent_lease_is_the_reply(lab: Lab) -> None:
    lab.clock.advance(45)
    ping = make_event(T.PING, {"task": "watch-leases"}, source="/pingsources/x")

    reply = lab.watch_step(emit=None)(ping)

    assert reply is not None and reply.get_type() == T.LEASE_EXPIRING
    assert reply.get_data()["leaseId"] == lab.leases(REPORTING).records["reader"].lease_id


def test_renewal_keeps_credentials_working_and_moves_the_expiry(lab: Lab, sink: Sink) -> None:
    login = lab.login(REPORTING)
    before = lab.leases(REPORTING).records["reader"]
    looked = lab.authority().lookup_lease(before.lease_id)
    assert looked is not None and looked.expire_time is not None
    lab.clock.advance(45)
    [expiring] = _tick(lab, sink)
    renew = lab.renew_step()

    reply = renew(expiring)

    assert reply is not None and reply.get_type() == T.LEASE_RENEWED
    validate_event(reply)
    after = lab.authority().lookup_lease(before.lease_id)
    assert after is not None and after.expire_time is not None
    assert after.expire_time > looked.expire_time, "renewal moves the lease's expiry"
    assert after.last_renewal is not None
    record = lab.leases(REPORTING).records["reader"]
    assert record.lease_id == before.lease_id and record.expires > before.expires
    assert parse_time(reply.get_data()["expiresAt"]) == record.expires
    assert lab.version(REPORTING) == 1, "renewal writes no new credential"
    assert lab.works(login), "renewed credentials still log in"

    assert renew(expiring) is None, "a duplicate lease.expiring is a no-op"
    assert lab.leases(REPORTING).records["reader"].expires == record.expires
    assert lab.propagated[1:] == [], "a renewal does not nudge consumers"
    assert len(lab.nudges()) == 2


def test_reissue_at_max_ttl_then_old_credentials_stop_after_the_overlap(
    lab: Lab, sink: Sink
) -> None:
    old_login = lab.login(REPORTING)
    old = lab.leases(REPORTING).records["reader"]
    lab.clock.advance(70)  # a full 1-minute increment would pass the 2-minute maximum
    [expiring] = _tick(lab, sink)
    renew = lab.renew_step(overlap_s=20)

    reply = renew(expiring)

    assert reply is not None and reply.get_type() == T.LEASE_REISSUED
    validate_event(reply)
    data = reply.get_data()
    assert data["leaseId"] == old.lease_id and data["newLeaseId"] != old.lease_id
    assert lab.version(REPORTING) == 2
    new_login = lab.login(REPORTING)
    assert new_login[0] != old_login[0]
    assert lab.works(new_login), "re-issued credentials log in"
    assert lab.works(old_login), "the old credentials keep working during the overlap"
    record = lab.leases(REPORTING).records["reader"]
    assert (record.lease_id, record.old_lease_id) == (data["newLeaseId"], old.lease_id)
    assert record.propagated == 2
    assert [(p.path, p.version, p.reason) for p in lab.propagated[1:]] == [
        (REPORTING, 2, "lease re-issued")
    ]
    rolled = [
        ("externalsecrets", "reporting-db"),
        ("deployments", "reporting-db-worker"),
    ]
    assert lab.nudges() == rolled * 2, "one force-sync and one rollout per new version"
    assert renew(expiring) is None, "a duplicate for the superseded lease is a no-op"
    assert lab.version(REPORTING) == 2 and len(lab.propagated) == 2
    assert lab.nudges() == rolled * 2

    lab.clock.advance(10)  # still inside the 20 s overlap
    _tick(lab, sink)
    assert lab.works(old_login) and role_exists(old_login[0])

    lab.clock.advance(15)  # the overlap has ended
    _tick(lab, sink)
    assert not role_exists(old_login[0]), "the superseded lease was revoked"
    assert not lab.works(old_login), "revoked credentials cannot log in"
    assert lab.authority().lookup_lease(old.lease_id) is None
    assert lab.works(new_login)
    assert lab.leases(REPORTING).records["reader"].old_lease_id is None


def test_concurrent_reissues_produce_one_new_version(lab: Lab, sink: Sink) -> None:
    lab.clock.advance(70)
    [expiring] = _tick(lab, sink)
    replicas = [lab.renew_step() for _ in range(3)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(
            pool.map(lambda step: invoke(step, expiring, function="renew-lease"), replicas)
        )

    statuses = sorted(o.status for o in outcomes)
    assert lab.version(REPORTING) == 2, "exactly one new version"
    assert len(lab.nudges()) == 4, "consumers nudged once for v1 and once for v2"
    reissued = [o for o in outcomes if o.reply is not None]
    assert len(reissued) == 1 and all(s in (200, 202, 409) for s in statuses)
    # redeliveries of the losers converge without another version
    for step in replicas:
        assert invoke(step, expiring, function="renew-lease").status in (200, 202)
    assert lab.version(REPORTING) == 2
    current = lab.leases(REPORTING).records["reader"]
    live = lab.authority().list_leases("database/creds")
    assert sorted(live) == sorted([current.lease_id, str(current.old_lease_id)]), (
        "leases issued by losing replicas were revoked"
    )
