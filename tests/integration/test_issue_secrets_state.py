"""chamberlain's state area in an environment namespace: applied record, lock, configuration."""

from __future__ import annotations

import threading
import time

import pytest

from chamberlain.adapters.authority import Authority, CasConflictError
from chamberlain.adapters.state import LOCK_PATH, EnvironmentState, NotConfiguredError
from chamberlain.logs import contains_secret
from tests.harness.environments import configure_environment
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.openbao import BaoScope

SHA_A = "a" * 40
SHA_B = "b" * 40


@pytest.fixture
def prod(bao: BaoScope, kube_api: FakeKubeApi) -> Authority:
    return configure_environment(bao, kube_api, "prod")


def test_applied_record_round_trip_with_check_and_set(prod: Authority) -> None:
    state = EnvironmentState(prod, environment="prod")
    assert state.applied() is None
    state.record_applied(SHA_A, "event-1", {"platform-data/a/b", "platform-data/c/d"})

    other = EnvironmentState(prod, environment="prod")  # another replica
    record = other.applied()
    assert record is not None and record.commit == SHA_A and record.event_id == "event-1"
    assert record.paths == {"platform-data/a/b", "platform-data/c/d"}
    other.record_applied(SHA_B, "event-2", set())
    # the first replica's view is stale: its write must not overwrite the newer record
    with pytest.raises(CasConflictError):
        state.record_applied(SHA_A, "event-1", set())
    latest = EnvironmentState(prod, environment="prod").applied()
    assert latest is not None and latest.commit == SHA_B
    assert not contains_secret(SHA_B)  # bookkeeping is not registered as a secret


def test_the_lock_excludes_a_second_holder_until_released(prod: Authority) -> None:
    one = EnvironmentState(prod, environment="prod")
    two = EnvironmentState(prod.clone(), environment="prod")
    with one.lock("replica-1"), pytest.raises(CasConflictError), two.lock("replica-2"):
        pass
    with two.lock("replica-2"):  # released: free again
        pass


def test_a_waiting_holder_gets_the_lock_when_the_first_finishes(prod: Authority) -> None:
    one = EnvironmentState(prod, environment="prod")
    two = EnvironmentState(prod.clone(), environment="prod")
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with one.lock("replica-1"):
            inside.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    with two.lock("replica-2", wait_s=10):
        order.append("second inside")
    thread.join()
    assert order == ["first done", "second inside"]


def test_an_expired_lock_is_taken_over(prod: Authority) -> None:
    crashed = EnvironmentState(prod, environment="prod")
    crashed._write(LOCK_PATH, {"owner": "crashed", "expires_at": time.time() - 1}, cas=0)
    with EnvironmentState(prod, environment="prod").lock("replica-2"):
        pass


def test_a_missing_namespace_or_mount_is_not_configured(bao: BaoScope, prod: Authority) -> None:
    base = Authority.connect(bao.addr, bao.token, namespace=bao.namespace)
    missing_ns = EnvironmentState(base.for_namespace(f"{bao.namespace}/qa"), environment="qa")
    with pytest.raises(NotConfiguredError) as raised:
        missing_ns.applied()
    assert raised.value.status == 503 and "environment qa not configured" in str(raised.value)
    with pytest.raises(NotConfiguredError):
        missing_ns.check_configured("secret", "kubernetes")

    state = EnvironmentState(prod, environment="prod")
    state.check_configured("secret", "kubernetes")
    with pytest.raises(NotConfiguredError, match="kv-other"):
        state.check_configured("kv-other", "kubernetes")
    prod.disable_secrets_engine("chamberlain")
    with pytest.raises(NotConfiguredError):
        state.applied()
