"""The pure rules of a teardown: which events end which environment, what may be torn down,
and the report's shape. No authority needed; the step's I/O is covered next door."""

from __future__ import annotations

import pytest

from chamberlain.model import event_types as T
from chamberlain.model.events import make_event, validate_event
from chamberlain.model.intent import Environment, Intent
from chamberlain.planner.teardown import (
    FORCE_REVOKE_LABEL,
    MAX_FAILURES,
    Failure,
    NamespaceFacts,
    TeardownReport,
    decide,
    lease_prefixes,
    owned_identities,
    target_for,
)
from chamberlain.steps.base import PermanentError
from chamberlain.steps.revoke_environment import teardown_environment

INTENT = Intent(
    environments=(
        Environment("prod", "prod-ns"),
        Environment("preview", "preview", ephemeral=True),
        Environment(
            "preview-eu", "preview-eu", ephemeral=True, labels={FORCE_REVOKE_LABEL: "true"}
        ),
    )
)
MANAGED = {"managed-by": "chamberlain"}


def facts(environment: str, *, ephemeral: bool) -> NamespaceFacts:
    flag = "true" if ephemeral else "false"
    return NamespaceFacts(True, {**MANAGED, "environment": environment, "ephemeral": flag})


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        (T.ENVIRONMENT_TEARDOWN, {"environment": "preview-1"}, "preview-1"),
        (T.CLUSTER_DELETED, {"environment": "preview-2", "cluster": "c"}, "preview-2"),
        (
            T.APISERVER_DELETE,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "ns", "labels": {"chamberlain.dev/environment": "preview-3"}},
            },
            "preview-3",
        ),
        (T.APISERVER_DELETE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {}}, None),
        (
            T.APISERVER_DELETE,
            {
                "apiVersion": "cluster.x-k8s.io/v1beta1",
                "kind": "Cluster",
                "metadata": {"name": "c4"},
            },
            "c4",
        ),
        (T.APISERVER_DELETE, {"apiVersion": "apps/v1", "kind": "Deployment"}, None),
        (T.GIT_PUSH, {}, None),
    ],
)
def test_events_name_the_environment_they_end(type_: str, data: object, expected: str) -> None:
    assert teardown_environment(type_, data) == expected


def test_a_teardown_event_without_environment_is_a_bad_event() -> None:
    with pytest.raises(PermanentError) as raised:
        teardown_environment(T.ENVIRONMENT_TEARDOWN, {})
    assert raised.value.status == 400


def test_targets_follow_intent() -> None:
    prod = target_for(INTENT, "prod")
    assert (prod.namespace, prod.declared, prod.force) == ("prod-ns", True, False)
    instance = target_for(INTENT, "preview-eu-7")  # the longest template wins
    assert (instance.namespace, instance.declared, instance.force) == ("preview-eu-7", False, True)
    assert not target_for(INTENT, "preview-8").force
    assert not target_for(None, "anything").intent_known


def test_only_owned_namespaces_of_ended_environments_are_torn_down() -> None:
    preview = target_for(INTENT, "preview-8")
    assert decide(preview, facts("preview-8", ephemeral=True)).verdict == "teardown"
    assert decide(preview, NamespaceFacts(False)).verdict == "absent"
    assert decide(preview, NamespaceFacts(True, MANAGED, deleting=True)).verdict == "absent"
    assert decide(preview, NamespaceFacts(True, {})).verdict == "refuse"
    assert decide(preview, facts("preview-9", ephemeral=True)).verdict == "refuse"
    prod = target_for(INTENT, "prod")
    refused = decide(prod, facts("prod", ephemeral=False))
    assert refused.verdict == "refuse" and "still declared" in refused.reason
    removed = target_for(INTENT, "staging")
    assert decide(removed, facts("staging", ephemeral=False)).verdict == "teardown"
    unknown = target_for(None, "staging")
    assert decide(unknown, facts("staging", ephemeral=False)).verdict == "refuse"
    assert decide(unknown, facts("staging", ephemeral=True)).verdict == "teardown"


def test_identities_and_lease_prefixes() -> None:
    policies, roles = owned_identities(
        ["default", "chamberlain-consumer-a-b", "hand-made"], ["chamberlain-a-b", "ops"]
    )
    assert (policies, roles) == (["chamberlain-consumer-a-b"], ["chamberlain-a-b"])
    assert lease_prefixes(["database/creds/r/x", "database/creds/s/y", "aws/creds/z"]) == [
        "aws",
        "database",
    ]


def test_the_report_is_a_valid_environment_revoked_event_even_with_many_failures() -> None:
    failures = tuple(Failure(f"database/creds/r/{i}", "backend down") for i in range(250))
    report = TeardownReport("preview-1", 3, 14, 6, False, failures)
    data = report.to_data()
    assert len(data["failures"]) == MAX_FAILURES
    assert "51 more" in data["failures"][-1]["reason"]
    validate_event(make_event(T.ENVIRONMENT_REVOKED, data, source="/t"))
    assert not report.complete
    assert TeardownReport("preview-1", 0, 0, 0, True).complete
