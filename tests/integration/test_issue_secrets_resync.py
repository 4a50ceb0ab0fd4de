"""A resync tick repairs drift made behind chamberlain's back and reports it."""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.runtime.outcome import invoke
from tests.harness.environments import ConfiguredEnv, secret_intent

BILLING = "platform-data/postgres/billing-api"
CHECKOUT = "platform-data/redis/checkout"
POLICY = "chamberlain-consumer-checkout-checkout"


def _resync() -> CloudEvent:
    return make_event(T.PING, {"task": "resync"}, source="/apis/v1/namespaces/x/pingsources/r")


def test_resync_repairs_deleted_secrets_and_edited_metadata(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    payload = env.repo.commit_and_push(
        {
            "secrets/billing.yaml": secret_intent("billing-db", BILLING),
            "secrets/checkout.yaml": secret_intent(
                "redis", CHECKOUT, consumers=[("checkout", "checkout")]
            ),
        },
        "two secrets",
    )
    step = env.step()
    step(env.push_event(payload))
    prod = env.authority("prod")
    old_billing = prod.read_secret(BILLING)
    # behind chamberlain's back: a secret destroyed, metadata edited, a policy widened
    prod.delete_metadata(BILLING)
    meta = prod.read_metadata(CHECKOUT)
    assert meta is not None
    prod.write_metadata(
        CHECKOUT, custom_metadata={**meta.custom_metadata, "owner": "someone-else", "note": "x"}
    )
    prod.write_policy(POLICY, 'path "secret/data/*" { capabilities = ["read"] }')

    outcome = invoke(step, _resync(), function="issue-secrets")

    assert outcome.status == 200 and outcome.reply is not None
    assert outcome.reply.get_type() == T.DRIFT_DETECTED
    data = outcome.reply.get_data()
    assert data["repaired"] is True and data["trigger"] == "resync"
    prod_item = {i["environment"]: i for i in data["environments"]}["prod"]
    assert {(d["path"], d["kind"]) for d in prod_item["drifted"]} == {
        (BILLING, "secret-missing"),
        (CHECKOUT, "metadata-changed"),
        (POLICY, "policy-changed"),
    }
    staging_item = {i["environment"]: i for i in data["environments"]}["staging"]
    assert staging_item["drifted"] == [] and staging_item["created"] == 0

    billing = prod.read_metadata(BILLING)
    assert billing is not None and billing.current_version == 1
    assert billing.custom_metadata["managed-by"] == "chamberlain"
    new_billing = prod.read_secret(BILLING)
    assert new_billing is not None and new_billing.data != old_billing.data  # fresh value
    checkout = prod.read_metadata(CHECKOUT)
    assert checkout is not None and checkout.current_version == 1
    assert checkout.custom_metadata["owner"] == "team-payments"
    assert checkout.custom_metadata["note"] == "x"  # keys chamberlain does not own are kept
    assert checkout.custom_metadata["intent-commit"] == payload["after"]
    hcl = prod.read_policy(POLICY)
    assert hcl is not None and "secret/data/*" not in hcl and CHECKOUT in hcl

    # converged: the next tick finds nothing and says so with a plain secrets.issued
    again = step(_resync())
    assert again is not None and again.get_type() == T.SECRETS_ISSUED
    assert all(i["drifted"] == [] for i in again.get_data()["environments"])
    assert all(i["created"] == i["updated"] == 0 for i in again.get_data()["environments"])


def test_resync_soft_deleted_value_is_recreated_as_a_new_version(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    env.step()(
        env.push_event(
            env.repo.commit_and_push(
                {"secrets/billing.yaml": secret_intent("billing-db", BILLING)}, "billing"
            )
        )
    )
    staging = env.authority("staging")
    staging.delete_latest(BILLING)

    reply = env.step()(_resync())

    assert reply is not None and reply.get_type() == T.DRIFT_DETECTED
    meta = staging.read_metadata(BILLING)
    assert meta is not None and meta.current_version == 2
    assert staging.read_secret(BILLING) is not None
