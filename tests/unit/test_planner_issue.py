"""plan(): desired vs observed -> the fewest ordered actions, drift reported, values never
regenerated."""

from __future__ import annotations

import dataclasses
import random

from chamberlain.planner.actions import (
    CreateSecret,
    DeletePolicy,
    DeleteRole,
    DesiredRole,
    Drift,
    ObservedSecret,
    ObservedState,
    Plan,
    RegisterSecret,
    RetireSecret,
    Scope,
    UpdateMetadata,
    WritePolicy,
    WriteRole,
)
from chamberlain.planner.desired import desired_state
from chamberlain.planner.issue import plan
from chamberlain.planner.scope import changed_scope
from tests.unit.test_planner_support import (
    BASE,
    BILLING,
    BILLING_PATH,
    BOOTSTRAP_PATH,
    C1,
    C2,
    C3,
    EMPTY,
    REDIS,
    REDIS_PATH,
    STRIPE_PATH,
    apply_plan,
    load,
    with_files,
)

ALL = Scope.everything()
# keys written by other steps (rotation): must survive every metadata update
ROTATION_KEYS = {"last-rotated": "2024-01-01T00:00:00Z", "next-due": "2024-01-31T00:00:00Z"}


def _applied(files: dict[str, str], commit: str = C1, env: str = "prod") -> ObservedState:
    """The authority after a first push of ``files`` (plus rotation's own keys)."""
    first = plan(desired_state(load(files), env, commit), EMPTY, ALL)
    observed = apply_plan(EMPTY, first)
    secrets = {
        path: dataclasses.replace(s, metadata={**s.metadata, **ROTATION_KEYS})
        for path, s in observed.secrets.items()
    }
    return dataclasses.replace(observed, secrets=secrets)


def _push(
    old_files: dict[str, str],
    new_files: dict[str, str],
    observed: ObservedState,
    changed: list[str],
    env: str = "prod",
) -> Plan:
    new = load(new_files)
    scope = changed_scope(load(old_files), new, changed, env)
    return plan(desired_state(new, env, C2), observed, scope)


def _types(p: Plan) -> list[str]:
    return [type(a).__name__ for a in p.actions]


def _with_secret(observed: ObservedState, path: str, **changes: object) -> ObservedState:
    secrets = dict(observed.secrets)
    secrets[path] = dataclasses.replace(secrets[path], **changes)
    return dataclasses.replace(observed, secrets=secrets)


def test_first_apply_creates_registers_and_grants_in_order() -> None:
    p = plan(desired_state(load(BASE), "prod", C1), EMPTY, ALL)
    assert _types(p) == (
        ["CreateSecret", "RegisterSecret", "CreateSecret", "RegisterSecret"]
        + ["WritePolicy"] * 4
        + ["WriteRole"] * 4
    )
    targets = [getattr(a, "path", None) for a in p.actions[:4]]
    assert targets == [BILLING_PATH, BOOTSTRAP_PATH, REDIS_PATH, STRIPE_PATH]
    create = p.actions[0]
    assert isinstance(create, CreateSecret)
    assert not create.recreate
    assert set(create.generators) == {"password", "username"}
    assert create.metadata["intent-commit"] == C1
    assert create.metadata["state"] == "active"
    roles = [a for a in p.actions if isinstance(a, WriteRole)]
    assert [r.role.name for r in roles] == sorted(r.role.name for r in roles)
    assert p.drift == ()
    assert p.unchanged == 0
    assert (p.environment, p.commit) == ("prod", C1)


def test_identical_observed_state_gives_an_empty_plan() -> None:
    observed = _applied(BASE)
    p = plan(desired_state(load(BASE), "prod", C2), observed, ALL)
    assert p.empty
    assert p.unchanged == 4
    assert p.drift == ()


def test_editing_one_document_updates_only_that_path() -> None:
    observed = _applied(BASE)
    edited = with_files({"secrets/billing.yaml": BILLING.replace("team-payments", "team-billing")})
    for scope_mode in ("incremental", "full"):
        if scope_mode == "incremental":
            p = _push(BASE, edited, observed, ["secrets/billing.yaml"])
        else:
            p = plan(desired_state(load(edited), "prod", C2), observed, ALL)
        assert _types(p) == ["UpdateMetadata"], scope_mode
        update = p.actions[0]
        assert isinstance(update, UpdateMetadata)
        assert update.path == BILLING_PATH
        assert not update.drift
        assert update.metadata["owner"] == "team-billing"
        assert update.metadata["intent-commit"] == C2
        assert (
            update.metadata["intent-hash"] != observed.secrets[BILLING_PATH].metadata["intent-hash"]
        )
        for key, value in ROTATION_KEYS.items():
            assert update.metadata[key] == value
        assert p.drift == ()
    after = apply_plan(observed, p)
    assert after.secrets[REDIS_PATH].metadata["intent-commit"] == C1


def test_changing_a_generator_never_regenerates_the_value() -> None:
    observed = _applied(BASE)
    edited = with_files({"secrets/billing.yaml": BILLING.replace("length: 32", "length: 64")})
    p = _push(BASE, edited, observed, ["secrets/billing.yaml"])
    assert _types(p) == ["UpdateMetadata"]


def test_removed_secret_is_retired_per_policy_with_its_consumer_access() -> None:
    observed = _applied(BASE)
    new_files = with_files({"secrets/redis.yaml": None})
    p = _push(BASE, new_files, observed, ["secrets/redis.yaml"])
    # web/storefront read only redis: role then policy deleted; ops/auditor keeps billing
    assert _types(p) == ["WritePolicy", "DeleteRole", "DeletePolicy", "RetireSecret"]
    rewrite, role, policy, retire = p.actions
    assert isinstance(rewrite, WritePolicy)
    assert rewrite.name == "chamberlain-consumer-ops-auditor"
    assert REDIS_PATH not in rewrite.hcl
    assert BILLING_PATH in rewrite.hcl
    assert not rewrite.drift
    assert role == DeleteRole("chamberlain-web-storefront")
    assert policy == DeletePolicy("chamberlain-consumer-web-storefront")
    assert isinstance(retire, RetireSecret)
    assert (retire.path, retire.policy) == (REDIS_PATH, "delete")
    assert retire.metadata["state"] == "retired"
    assert retire.metadata["last-rotated"] == ROTATION_KEYS["last-rotated"]
    assert p.drift == ()
    # retired stays retired: nothing more to do, and unmanaged paths are never retired
    after = apply_plan(observed, p)
    again = plan(desired_state(load(new_files), "prod", C3), after, ALL)
    assert again.empty


def test_removed_consumer_loses_its_policy_and_role() -> None:
    observed = _applied(BASE)
    no_auditor_billing = BILLING.replace("    - {namespace: ops, serviceAccount: auditor}\n", "")
    step1 = with_files({"secrets/billing.yaml": no_auditor_billing})
    p = _push(BASE, step1, observed, ["secrets/billing.yaml"])
    assert _types(p) == ["UpdateMetadata", "WritePolicy"]
    update, rewrite = p.actions
    assert isinstance(update, UpdateMetadata)
    assert update.metadata["consumers"] == "billing/billing-api"
    assert isinstance(rewrite, WritePolicy)
    assert rewrite.name == "chamberlain-consumer-ops-auditor"
    assert BILLING_PATH not in rewrite.hcl
    observed = apply_plan(observed, p)
    no_auditor_redis = REDIS.replace("    - {namespace: ops, serviceAccount: auditor}\n", "")
    step2 = with_files(
        {"secrets/billing.yaml": no_auditor_billing, "secrets/redis.yaml": no_auditor_redis}
    )
    p = _push(step1, step2, observed, ["secrets/redis.yaml"])
    assert _types(p) == ["UpdateMetadata", "DeleteRole", "DeletePolicy"]
    assert p.actions[1] == DeleteRole("chamberlain-ops-auditor")
    assert p.actions[2] == DeletePolicy("chamberlain-consumer-ops-auditor")


def test_metadata_changed_behind_our_back_is_drift_and_repaired() -> None:
    observed = _applied(BASE)
    meta = dict(observed.secrets[BILLING_PATH].metadata)
    meta["owner"] = "someone-else"
    del meta["rotation-ttl"]
    observed = _with_secret(observed, BILLING_PATH, metadata=meta)
    p = plan(desired_state(load(BASE), "prod", C2), observed, ALL)
    assert _types(p) == ["UpdateMetadata"]
    update = p.actions[0]
    assert isinstance(update, UpdateMetadata)
    assert update.drift
    assert update.metadata["owner"] == "team-payments"
    assert update.metadata["rotation-ttl"] == str(720 * 3600)
    assert update.metadata["intent-commit"] == C1  # the intent did not change
    assert update.metadata["next-due"] == ROTATION_KEYS["next-due"]
    assert p.drift == (Drift(BILLING_PATH, "metadata-changed"),)


def test_secret_deleted_behind_our_back_is_recreated_as_drift() -> None:
    observed = _applied(BASE)
    soft_deleted = _with_secret(observed, BILLING_PATH, current_version=0)
    p = plan(desired_state(load(BASE), "prod", C2), soft_deleted, ALL)
    assert _types(p) == ["CreateSecret"]
    create = p.actions[0]
    assert isinstance(create, CreateSecret)
    assert create.recreate
    assert create.metadata["intent-commit"] == C1
    assert create.metadata["last-rotated"] == ROTATION_KEYS["last-rotated"]
    assert p.drift == (Drift(BILLING_PATH, "secret-missing"),)

    destroyed = dataclasses.replace(
        observed, secrets={k: v for k, v in observed.secrets.items() if k != BILLING_PATH}
    )
    applied_paths = frozenset(observed.secrets)
    p = plan(desired_state(load(BASE), "prod", C2), destroyed, ALL, applied_paths)
    assert [(type(a).__name__, getattr(a, "recreate", None)) for a in p.actions] == [
        ("CreateSecret", True)
    ]
    assert p.drift == (Drift(BILLING_PATH, "secret-missing"),)
    # without a record of having applied it, a missing path is simply new
    p = plan(desired_state(load(BASE), "prod", C2), destroyed, ALL)
    create = p.actions[0]
    assert isinstance(create, CreateSecret)
    assert not create.recreate
    assert p.drift == ()


def test_internal_secret_without_a_value_is_normal() -> None:
    observed = _applied(BASE)
    assert observed.secrets[STRIPE_PATH].current_version == 0
    assert plan(desired_state(load(BASE), "prod", C2), observed, ALL).empty


def test_policy_and_role_edited_behind_our_back_are_drift() -> None:
    observed = _applied(BASE)
    policies = dict(observed.policies)
    policies["chamberlain-consumer-web-storefront"] += (
        'path "secret/data/*" {\n  capabilities = ["read"]\n}\n'
    )
    roles = dict(observed.roles)
    del roles["chamberlain-billing-billing-api"]
    roles["chamberlain-ops-auditor"] = dataclasses.replace(
        roles["chamberlain-ops-auditor"], namespace="default"
    )
    observed = dataclasses.replace(observed, policies=policies, roles=roles)
    p = plan(desired_state(load(BASE), "prod", C2), observed, ALL)
    assert _types(p) == ["WritePolicy", "WriteRole", "WriteRole"]
    assert all(getattr(a, "drift", False) for a in p.actions)
    assert p.drift == (
        Drift("chamberlain-billing-billing-api", "role-missing"),
        Drift("chamberlain-consumer-web-storefront", "policy-changed"),
        Drift("chamberlain-ops-auditor", "role-changed"),
    )
    assert apply_plan(observed, p) == _applied(BASE)


def test_unowned_policies_roles_and_secrets_are_never_touched() -> None:
    observed = _applied(BASE)
    foreign = ObservedSecret("platform-data/vendor/legacy", 3, {"owner": "someone"})
    observed = ObservedState(
        secrets={**observed.secrets, foreign.path: foreign},
        policies={**observed.policies, "ops-admin": 'path "*" {}', "default": ""},
        roles={
            **observed.roles,
            "chamberlain-issue-secrets": DesiredRole(
                "chamberlain-issue-secrets", "issue-secrets", "chamberlain", ("issue-secrets",)
            ),
        },
    )
    assert plan(desired_state(load(BASE), "prod", C2), observed, ALL).empty


def test_existing_unmanaged_value_is_adopted_not_overwritten() -> None:
    adopted = ObservedSecret(BILLING_PATH, 4, {"note": "made by hand"})
    applied = _applied(BASE)
    observed = dataclasses.replace(applied, secrets={**applied.secrets, BILLING_PATH: adopted})
    p = plan(desired_state(load(BASE), "prod", C2), observed, ALL)
    assert _types(p) == ["UpdateMetadata"]
    update = p.actions[0]
    assert isinstance(update, UpdateMetadata)
    assert not update.drift
    assert update.metadata["note"] == "made by hand"
    assert update.metadata["intent-commit"] == C2
    assert p.drift == ()


def test_readding_a_retired_secret_reactivates_it() -> None:
    observed = _applied(BASE)
    without = with_files({"secrets/redis.yaml": None, "secrets/billing.yaml": None})
    retired = apply_plan(observed, plan(desired_state(load(without), "prod", C2), observed, ALL))
    assert retired.secrets[REDIS_PATH].current_version == 0  # deletionPolicy delete
    assert retired.secrets[BILLING_PATH].current_version == 1  # retain
    p = plan(desired_state(load(BASE), "prod", C3), retired, ALL)
    secret_actions = {getattr(a, "path", ""): a for a in p.actions}
    billing, redis = secret_actions[BILLING_PATH], secret_actions[REDIS_PATH]
    assert isinstance(billing, UpdateMetadata)  # retained value is reused
    assert not billing.drift
    assert isinstance(redis, CreateSecret)
    assert redis.recreate  # metadata exists: check-and-set on its current version
    assert redis.metadata["state"] == billing.metadata["state"] == "active"
    assert redis.metadata["intent-commit"] == C3
    assert p.drift == ()
    assert not any(getattr(a, "drift", False) for a in p.actions)


def test_scope_limits_what_is_considered() -> None:
    observed = _applied(BASE)
    meta = {**observed.secrets[REDIS_PATH].metadata, "owner": "tampered"}
    observed = _with_secret(observed, REDIS_PATH, metadata=meta)
    policies = {**observed.policies, "chamberlain-consumer-web-storefront": "tampered"}
    observed = dataclasses.replace(observed, policies=policies)
    scope = Scope(full=False, paths=frozenset({BILLING_PATH}))
    assert plan(desired_state(load(BASE), "prod", C2), observed, scope).empty
    full = plan(desired_state(load(BASE), "prod", C2), observed, ALL)
    assert _types(full) == ["UpdateMetadata", "WritePolicy"]


def test_plans_are_deterministic_whatever_the_input_order() -> None:
    observed = _applied(BASE)
    stale = with_files({"secrets/redis.yaml": None})

    def shuffled(state: ObservedState, seed: int) -> ObservedState:
        rng = random.Random(seed)
        items = [
            list(state.secrets.items()),
            list(state.policies.items()),
            list(state.roles.items()),
        ]
        for item in items:
            rng.shuffle(item)
        return ObservedState(dict(items[0]), dict(items[1]), dict(items[2]))

    plans = [
        plan(desired_state(load(stale), "prod", C2), shuffled(observed, s), ALL) for s in range(5)
    ]
    assert not plans[0].empty
    assert all(repr(p) == repr(plans[0]) for p in plans)


def test_environments_get_their_own_plan() -> None:
    p = plan(desired_state(load(BASE), "staging", C1), EMPTY, ALL)
    paths = [
        getattr(a, "path", None) for a in p.actions if isinstance(a, (CreateSecret, RegisterSecret))
    ]
    assert STRIPE_PATH not in paths
    assert p.environment == "staging"


def test_plan_apply_replan_converges_over_a_history_of_pushes() -> None:
    history = [
        BASE,
        with_files({"secrets/billing.yaml": BILLING.replace("team-payments", "team-billing")}),
        with_files({"secrets/redis.yaml": None}),
        with_files(
            {
                "secrets/more.yaml": REDIS.replace("session-store", "cache").replace(
                    "session-redis", "cache"
                )
            }
        ),
        BASE,
    ]
    observed = EMPTY
    for index, files in enumerate(history):
        desired = desired_state(load(files), "prod", f"{index:040d}")
        observed = apply_plan(observed, plan(desired, observed, ALL))
        assert plan(desired, observed, ALL).empty, index
