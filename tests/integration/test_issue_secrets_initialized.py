"""authority.initialized: namespaces that just became ready get what the branch head declares.

This is what makes a first start independent of event order (a push that arrived before the
namespaces existed may have been dead-lettered) and what issues fresh values for a new
ephemeral instance, which has no push of its own.
"""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.runtime.outcome import invoke
from tests.harness.environments import ConfiguredEnv, configure_environment, secret_intent

BILLING = "platform-data/postgres/billing-api"
REPORTS = "platform-data/postgres/reports"


def _initialized(environment: str | None) -> CloudEvent:
    data: dict[str, object] = {"initialized": False, "namespaces": [], "configured": {}}
    if environment is not None:
        data["environment"] = environment
    return make_event(T.AUTHORITY_INITIALIZED, data, source="/chamberlain/initialize-authority")


def test_initialized_issues_the_head_without_any_push(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    env.repo.commit_and_push({"secrets/billing.yaml": secret_intent("billing", BILLING)}, "one")
    step = env.step()

    outcome = invoke(step, _initialized(None), function="issue-secrets")

    assert outcome.status == 200 and outcome.reply is not None
    data = outcome.reply.get_data()
    assert outcome.reply.get_type() == T.SECRETS_ISSUED
    assert data["trigger"] == "authority-initialized"
    assert {i["environment"]: i["created"] for i in data["environments"]} == {
        "prod": 1,
        "staging": 1,
    }
    meta = env.authority("prod").read_metadata(BILLING)
    assert meta is not None and meta.current_version == 1

    # a second one finds every environment at the head: nothing written
    again = step(_initialized(None))
    assert again is not None
    assert all(i["status"] == "already-applied" for i in again.get_data()["environments"])
    assert env.authority("prod").read_metadata(BILLING).current_version == 1  # type: ignore[union-attr]


def test_ephemeral_instance_gets_fresh_values_and_only_its_documents(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    env.repo.commit_and_push(
        {
            "secrets/billing.yaml": secret_intent("billing", BILLING),
            "secrets/reports.yaml": secret_intent(
                "reports", REPORTS, environments=["prod", "staging"]
            ),
        },
        "two",
    )
    step = env.step()
    step(_initialized(None))
    configure_environment(env.bao, env.kube, "preview-42")

    outcome = invoke(step, _initialized("preview-42"), function="issue-secrets")

    assert outcome.status == 200 and outcome.reply is not None
    items = {i["environment"]: i for i in outcome.reply.get_data()["environments"]}
    assert items["preview-42"]["created"] == 1
    preview = env.authority("preview-42")
    prod = env.authority("prod")
    assert preview.read_metadata(REPORTS) is None  # restricted to prod and staging
    fresh = preview.read_secret(BILLING)
    long_lived = prod.read_secret(BILLING)
    assert fresh is not None and long_lived is not None
    assert set(fresh.data) == set(long_lived.data)
    assert all(fresh.data[k] != long_lived.data[k] for k in fresh.data)  # never shared


def test_unknown_environment_name_reconciles_only_the_declared_ones(
    configured_env: ConfiguredEnv,
) -> None:
    env = configured_env
    env.repo.commit_and_push({"secrets/billing.yaml": secret_intent("billing", BILLING)}, "one")
    reply = env.step()(_initialized("local"))
    assert reply is not None
    assert sorted(i["environment"] for i in reply.get_data()["environments"]) == [
        "prod",
        "staging",
    ]
