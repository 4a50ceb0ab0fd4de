"""issue-secrets on real OpenBao and real git: pushes make the authority hold exactly the intent.

Every assertion reads the authority back (versions and custom_metadata through
``read_metadata``), so a test fails when a user would notice: a value regenerated, a secret
touched that should not be, an older push rolling an environment back.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.state import EnvironmentState
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.base import TransientError
from chamberlain.steps.issue_secrets import IssueSecrets, build
from tests.harness.environments import ConfiguredEnv, secret_intent

BILLING = "platform-data/postgres/billing-api"
CHECKOUT = "platform-data/redis/checkout"
REPORTING = "platform-data/postgres/reporting"


def _snapshot(authority: Authority, paths: list[str]) -> dict[str, Any]:
    """path -> (current version, metadata updated_time, custom_metadata), None if absent."""
    out: dict[str, Any] = {}
    for path in paths:
        found = authority.read_metadata(path)
        out[path] = (
            None
            if found is None
            else (found.current_version, found.updated_time, found.custom_metadata)
        )
    return out


def _writes(authority: Authority) -> int:
    calls = authority.calls.snapshot()
    return calls["write"] + calls["delete"]


def _three_secrets(env: ConfiguredEnv) -> dict[str, Any]:
    return env.repo.commit_and_push(
        {
            "secrets/billing.yaml": secret_intent("billing-db", BILLING),
            "secrets/checkout.yaml": secret_intent(
                "checkout-redis", CHECKOUT, consumers=[("checkout", "checkout")]
            ),
            "secrets/reporting.yaml": secret_intent(
                "reporting-db", REPORTING, consumers=[("reporting", "etl")], environments=["prod"]
            ),
        },
        "three secrets",
    )


def _applied_commit(env: ConfiguredEnv, environment: str) -> str | None:
    record = EnvironmentState(env.authority(environment), environment=environment).applied()
    return record.commit if record else None


def test_first_push_creates_everything_declared(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    payload = _three_secrets(env)
    reply = env.step()(env.push_event(payload))

    assert reply is not None and reply.get_type() == T.SECRETS_ISSUED
    data = reply.get_data()
    assert data["commit"] == payload["after"] and data["trigger"] == "push"
    by_env = {item["environment"]: item for item in data["environments"]}
    assert set(by_env) == {"prod", "staging"}  # the ephemeral "preview" template is not issued
    assert by_env["prod"]["paths"]["created"] == sorted([BILLING, CHECKOUT, REPORTING])
    assert by_env["staging"]["paths"]["created"] == sorted([BILLING, CHECKOUT])
    assert by_env["prod"]["mode"] == "full" and by_env["prod"]["status"] == "applied"

    prod, staging = env.authority("prod"), env.authority("staging")
    for path in (BILLING, CHECKOUT, REPORTING):
        meta = prod.read_metadata(path)
        assert meta is not None and meta.current_version == 1
        custom = meta.custom_metadata
        assert custom["managed-by"] == "chamberlain" and custom["state"] == "active"
        assert custom["intent-commit"] == payload["after"]
        assert custom["class"] == "runtime" and custom["owner"] == "team-payments"
        assert custom["rotation-ttl"] == str(720 * 3600)
    assert staging.read_metadata(REPORTING) is None
    billing = prod.read_secret(BILLING)
    assert billing is not None and set(billing.data) == {"username", "password"}
    assert len(billing.data["username"]) == 16 and len(billing.data["password"]) == 32
    # fresh values per environment, and no value in the reply
    staging_billing = staging.read_secret(BILLING)
    assert staging_billing is not None and staging_billing.data != billing.data
    text = json.dumps(data)
    assert all(value not in text for value in billing.data.values())

    assert "chamberlain-consumer-billing-billing-api" in prod.list_policies()
    hcl = prod.read_policy("chamberlain-consumer-billing-billing-api")
    assert hcl is not None and f"secret/data/{BILLING}" in hcl and CHECKOUT not in hcl
    role = prod.read_kubernetes_role("kubernetes", "chamberlain-billing-billing-api")
    assert role is not None and role["bound_service_account_namespaces"] == ["billing"]
    assert _applied_commit(env, "prod") == payload["after"]


def test_identical_redelivery_changes_nothing(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    payload = _three_secrets(env)
    event = env.push_event(payload)
    step = env.step()
    step(event)
    prod = env.authority("prod")
    before = _snapshot(prod, [BILLING, CHECKOUT, REPORTING])
    values = prod.read_secret(BILLING)
    writes_before = _writes(step.reconciler.authority)

    outcome = invoke(step, event, function="issue-secrets")  # the very same delivery again

    assert outcome.status == 200 and outcome.reply is not None
    items = outcome.reply.get_data()["environments"]
    assert {i["status"] for i in items} == {"already-applied"}
    assert _writes(step.reconciler.authority) == writes_before  # not a single write
    assert _snapshot(prod, [BILLING, CHECKOUT, REPORTING]) == before
    assert prod.read_secret(BILLING) == values


def test_editing_one_file_touches_only_that_secret(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    first = _three_secrets(env)
    step = env.step()
    step(env.push_event(first))
    prod = env.authority("prod")
    before = _snapshot(prod, [BILLING, CHECKOUT, REPORTING])

    edited = secret_intent("checkout-redis", CHECKOUT, consumers=[("checkout", "checkout")])
    second = env.repo.commit_and_push(
        {"secrets/checkout.yaml": edited.replace("team-payments", "team-checkout")},
        "checkout is owned by its team",
    )
    writes_before = _writes(step.reconciler.authority)
    reply = step(env.push_event(second))

    assert reply is not None
    item = {i["environment"]: i for i in reply.get_data()["environments"]}["prod"]
    assert item["mode"] == "incremental"
    assert item["paths"] == {"created": [], "updated": [CHECKOUT], "retired": []}
    after = _snapshot(prod, [BILLING, CHECKOUT, REPORTING])
    assert after[BILLING] == before[BILLING] and after[REPORTING] == before[REPORTING]
    version, updated_time, custom = after[CHECKOUT]
    assert version == 1  # metadata only: the value is never regenerated
    assert updated_time != before[CHECKOUT][1]
    assert custom["owner"] == "team-checkout" and custom["intent-commit"] == second["after"]
    # two environments x (one metadata patch + the applied record), lock taken and released
    assert _writes(step.reconciler.authority) - writes_before <= 2 * 4


def test_removing_secrets_retires_them_per_deletion_policy(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    files = {
        "secrets/billing.yaml": secret_intent("billing-db", BILLING),
        "secrets/kept.yaml": secret_intent(
            "kept", "platform-data/a/kept", deletion_policy="retain"
        ),
        "secrets/deleted.yaml": secret_intent(
            "deleted", "platform-data/a/deleted", deletion_policy="delete"
        ),
        "secrets/destroyed.yaml": secret_intent(
            "destroyed", "platform-data/a/destroyed", deletion_policy="destroy"
        ),
    }
    step = env.step()
    step(env.push_event(env.repo.commit_and_push(files, "four secrets")))
    removal = env.repo.commit_and_push(
        {name: None for name in files if name != "secrets/billing.yaml"}, "remove three"
    )
    reply = step(env.push_event(removal))

    assert reply is not None
    item = {i["environment"]: i for i in reply.get_data()["environments"]}["prod"]
    assert item["paths"]["retired"] == [
        "platform-data/a/deleted",
        "platform-data/a/destroyed",
        "platform-data/a/kept",
    ]
    prod = env.authority("prod")
    kept = prod.read_metadata("platform-data/a/kept")
    assert kept is not None and kept.custom_metadata["state"] == "retired"
    assert prod.read_secret("platform-data/a/kept") is not None  # retain: value kept
    deleted = prod.read_metadata("platform-data/a/deleted")
    assert deleted is not None and deleted.custom_metadata["state"] == "retired"
    assert prod.read_secret("platform-data/a/deleted") is None  # soft-deleted
    assert prod.read_metadata("platform-data/a/destroyed") is None  # gone entirely
    # the consumer keeps access to what is still declared, and only to that
    hcl = prod.read_policy("chamberlain-consumer-billing-billing-api")
    assert hcl is not None and BILLING in hcl and "platform-data/a/" not in hcl
    billing = prod.read_metadata(BILLING)
    assert billing is not None and billing.custom_metadata["state"] == "active"


def test_pushes_delivered_out_of_order_end_in_the_newest_state(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    older = env.repo.commit_and_push(
        {"secrets/billing.yaml": secret_intent("billing-db", BILLING)}, "billing"
    )
    newer = env.repo.commit_and_push(
        {
            "secrets/billing.yaml": secret_intent("billing-db", BILLING, owner="team-billing"),
            "secrets/checkout.yaml": secret_intent("checkout", CHECKOUT),
        },
        "checkout, billing owner",
    )
    step = env.step()
    step(env.push_event(newer))
    prod = env.authority("prod")
    state = _snapshot(prod, [BILLING, CHECKOUT])

    reply = step(env.push_event(older))  # the older push arrives late

    assert reply is not None
    statuses = {i["environment"]: i["status"] for i in reply.get_data()["environments"]}
    assert statuses == {"prod": "superseded", "staging": "superseded"}
    assert _snapshot(prod, [BILLING, CHECKOUT]) == state
    assert state[BILLING][2]["owner"] == "team-billing" and state[CHECKOUT][0] == 1
    assert _applied_commit(env, "prod") == newer["after"]


def _deliver_until_done(step: IssueSecrets, event: CloudEvent, errors: list[str]) -> None:
    """What the broker does: retry transient failures (409 lock contention, CAS conflicts)."""
    for _ in range(20):
        try:
            step(event)
            return
        except TransientError as exc:
            errors.append(str(exc))
    raise AssertionError("never delivered")


def test_concurrent_deliveries_of_different_commits_end_in_the_newest_state(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    first = env.repo.commit_and_push(
        {
            "secrets/billing.yaml": secret_intent("billing-db", BILLING),
            "secrets/checkout.yaml": secret_intent("checkout", CHECKOUT),
        },
        "two",
    )
    second = env.repo.commit_and_push(
        {"secrets/reporting.yaml": secret_intent("reporting", REPORTING)}, "three"
    )
    # two replicas, each with its own step (own sessions), started together
    replicas = [env.step(lock_wait_s=0.2), env.step(lock_wait_s=0.2)]
    events = [env.push_event(second), env.push_event(first)]
    retried: list[str] = []
    delivered: list[int] = []
    start = threading.Barrier(2)

    def run(index: int) -> None:
        start.wait()
        _deliver_until_done(replicas[index], events[index], retried)
        delivered.append(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(delivered) == [0, 1]
    for environment in ("prod", "staging"):
        authority = env.authority(environment)
        snapshot = _snapshot(authority, [BILLING, CHECKOUT, REPORTING])
        # every secret exists with exactly one value version: no duplicate generation
        assert {path: s[0] for path, s in snapshot.items()} == {
            BILLING: 1,
            CHECKOUT: 1,
            REPORTING: 1,
        }
        assert _applied_commit(env, environment) == second["after"]


def test_invalid_commit_is_rejected_and_changes_nothing(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    step = env.step()
    step(env.push_event(_three_secrets(env)))
    prod = env.authority("prod")
    before = _snapshot(prod, [BILLING, CHECKOUT, REPORTING])
    broken = secret_intent("billing-db", BILLING).replace("class: runtime", "class: runtim")
    bad = env.repo.commit_and_push(
        {
            "secrets/billing.yaml": broken,
            "secrets/new.yaml": secret_intent("new", "platform-data/new/one"),
        },
        "typo",
    )
    writes_before = _writes(step.reconciler.authority)

    outcome = invoke(step, env.push_event(bad), function="issue-secrets")

    assert outcome.status == 422 and not outcome.retryable
    assert outcome.reply is not None and outcome.reply.get_type() == T.INTENT_REJECTED
    rejected = outcome.reply.get_data()
    assert rejected["commit"] == bad["after"]
    assert any(e["file"] == "secrets/billing.yaml" for e in rejected["errors"])
    assert _writes(step.reconciler.authority) == writes_before
    assert _snapshot(prod, [BILLING, CHECKOUT, REPORTING]) == before
    assert prod.read_metadata("platform-data/new/one") is None
    assert _applied_commit(env, "prod") != bad["after"]


def test_tags_untracked_branches_and_deletions_are_acknowledged_and_ignored(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    step = env.step()
    env.repo.commit({"secrets/billing.yaml": secret_intent("billing-db", BILLING)}, "billing")
    tag = env.repo.push_tag("v1")
    feature = env.repo.create_branch("feature")
    deletion = env.repo.delete_branch("feature")
    writes_before = _writes(step.reconciler.authority)

    for payload in (tag, feature, deletion):
        outcome = invoke(step, env.push_event(payload), function="issue-secrets")
        assert (outcome.status, outcome.reply) == (202, None)

    assert _writes(step.reconciler.authority) == writes_before
    for environment in ("prod", "staging"):
        assert env.authority(environment).walk("") == []
        assert _applied_commit(env, environment) is None


def test_standard_source_push_events_are_accepted(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    payload = env.repo.commit_and_push(
        {"secrets/billing.yaml": secret_intent("billing-db", BILLING)}, "billing"
    )
    step = build(env.environ())  # configured from the function's environment variables
    github = make_event(T.GITHUB_PUSH, payload, source="https://github.com/org/intent")

    outcome = invoke(step, github, function="issue-secrets")

    assert outcome.status == 200 and outcome.reply is not None
    assert outcome.reply.get_type() == T.SECRETS_ISSUED
    knative = make_event(T.KNATIVE_GITHUB_PUSH, payload, source="/apis/v1/namespaces/x/github")
    again = invoke(step, knative, function="issue-secrets")
    assert again.status == 200 and again.reply is not None
    assert {i["status"] for i in again.reply.get_data()["environments"]} == {"already-applied"}
    meta = env.authority("staging").read_metadata(BILLING)
    assert meta is not None and meta.current_version == 1


def test_an_environment_not_configured_yet_is_retried_later(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    qa = (
        "apiVersion: chamberlain.dev/v1alpha1\nkind: Environment\n"
        "metadata: {name: qa}\nspec: {branch: main}\n"
    )
    payload = env.repo.commit_and_push(
        {"qa.yaml": qa, "secrets/billing.yaml": secret_intent("billing-db", BILLING)}, "qa"
    )

    outcome = invoke(env.step(), env.push_event(payload), function="issue-secrets")

    assert outcome.status == 503 and outcome.retryable
    assert outcome.error is not None and "environment qa not configured" in outcome.error


@pytest.mark.parametrize("task", ["rotate", "watch-leases"])
def test_other_ping_tasks_are_ignored(configured_env: ConfiguredEnv, task: str) -> None:
    ping = make_event(T.PING, {"task": task}, source="/apis/v1/namespaces/x/pingsources/p")
    assert configured_env.step()(ping) is None
