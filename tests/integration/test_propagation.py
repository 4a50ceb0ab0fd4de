"""Propagation after a rotation, counted in the fake Kubernetes API's journal: exactly one
force-sync per ExternalSecret and one rollout per declared workload per new version, and
nothing more on redelivery (no restart loop)."""

from __future__ import annotations

from datetime import timedelta

from chamberlain.model.intent import Consumer, Workload
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.propagate import path_key, propagate
from chamberlain.steps.rotate_secrets import FUNCTION
from tests.harness.fake_kube_api import FakeKubeApi
from tests.integration.test_rotate_fixtures import (
    BILLING,
    CHECKOUT,
    Rotation,
    request,
    rotation_fixture,  # noqa: F401 - the fixture named rotation
    tick,
)

WORKLOADS = {
    ("deployments", "billing", "billing-api"),
    ("statefulsets", "billing", "billing-worker"),
    ("deployments", "reports", "reporter"),
}
EXTERNAL_SECRETS = {("billing", "billing-db"), ("reports", "billing-db")}


def _patches(kube: FakeKubeApi) -> list[tuple[str, str, str]]:
    """Successful PATCHes as (plural, namespace, name)."""
    return sorted(
        (e.ref.plural, e.ref.namespace or "", e.ref.name or "")
        for e in kube.journal.filter("PATCH")
        if e.status == 200 and e.ref is not None
    )


def _expected_patches() -> list[tuple[str, str, str]]:
    return sorted(
        [("externalsecrets", ns, name) for ns, name in EXTERNAL_SECRETS]
        + [(plural, ns, name) for plural, ns, name in WORKLOADS]
    )


def test_each_rotation_nudges_each_consumer_object_exactly_once(rotation: Rotation) -> None:
    kube = rotation.env.kube
    kube.journal.clear()
    event = tick("tick-propagate")
    first = invoke(rotation.step(at=rotation.due_time()), event, function=FUNCTION)
    assert first.status == 200 and first.reply is not None
    by_path = {r["path"]: r for r in first.reply.get_data()["rotations"]}
    assert by_path[BILLING]["propagation"] == {"externalSecrets": 2, "workloads": 3}
    assert by_path[CHECKOUT]["propagation"] == {"externalSecrets": 0, "workloads": 0}
    assert _patches(kube) == _expected_patches()

    stamp = f"{BILLING}@2"
    for namespace, name in EXTERNAL_SECRETS:
        annotations = kube.get("externalsecrets", name, namespace, group="external-secrets.io")[
            "metadata"
        ]["annotations"]
        assert annotations["force-sync"] == stamp
    for plural, namespace, name in WORKLOADS:
        template = kube.get(plural, name, namespace, group="apps")["spec"]["template"]
        key = f"chamberlain.dev/secret-version-{path_key(BILLING)}"
        assert template["metadata"]["annotations"][key] == stamp

    # redeliveries of the tick: no new patch (no restart loop)
    for _ in range(2):
        invoke(rotation.step(at=rotation.due_time()), event, function=FUNCTION)
    assert _patches(kube) == _expected_patches()

    # the next version (a manual request) nudges each object once more
    later = rotation.due_time() + timedelta(hours=1)
    for _ in range(2):  # the request, delivered twice
        invoke(rotation.step(at=later), request(BILLING, id_="req-prop"), function=FUNCTION)
    assert _patches(kube) == sorted(_expected_patches() * 2)
    deployment = kube.get("deployments", "billing-api", "billing", group="apps")
    key = f"chamberlain.dev/secret-version-{path_key(BILLING)}"
    assert deployment["spec"]["template"]["metadata"]["annotations"][key] == f"{BILLING}@3"


def test_propagation_is_once_per_version_even_against_races(kube_api: FakeKubeApi) -> None:
    """Direct calls: stale versions never re-annotate, missing objects are reported."""
    kube_api.seed(
        {
            "apiVersion": "external-secrets.io/v1beta1",
            "kind": "ExternalSecret",
            "metadata": {"name": "app", "namespace": "team"},
            "spec": {},
        }
    )
    client = kube_api.api_client(kube_api.issue_token("chamberlain", "rotate"))
    consumers = [
        Consumer("team", "app", "app", (Workload("Deployment", "not-deployed-yet"),)),
    ]
    path = "platform-data/redis/app"
    first = propagate(
        client, environment="prod", path=path, version=5, consumers=consumers, reason="t"
    )
    assert first.external_secrets_synced == 1 and first.workloads_restarted == 0
    assert [(n.kind, n.name) for n in first.missing] == [("Deployment", "not-deployed-yet")]
    for version in (5, 4):  # a redelivery, then a late event for an older version
        again = propagate(
            client, environment="prod", path=path, version=version, consumers=consumers, reason="t"
        )
        assert again.external_secrets_synced == 0
    assert len([e for e in kube_api.journal.filter("PATCH") if e.status == 200]) == 1
    skipped = propagate(
        None, environment="prod", path=path, version=6, consumers=consumers, reason="t"
    )
    assert skipped.skipped and not skipped.nudges
