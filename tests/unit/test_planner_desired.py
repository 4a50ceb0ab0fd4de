"""desired_state: what each environment's authority must hold, derived from intent alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from chamberlain.model.loader import load_dir
from chamberlain.planner.actions import ISSUE_OWNED_KEYS, DesiredRole
from chamberlain.planner.desired import (
    ConsumerNameCollisionError,
    desired_state,
    intent_hash,
    owns_policy,
    owns_role,
    policy_hcl,
)
from tests.unit.test_planner_support import (
    BASE,
    BILLING,
    BILLING_PATH,
    BOOTSTRAP_PATH,
    C1,
    REDIS_PATH,
    STRIPE_PATH,
    load,
    with_files,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "intent"


def _billing(files: dict[str, str]) -> str:
    intent = load(files)
    return intent_hash(next(s for s in intent.secrets if s.name == "billing-db"))


def test_environment_filter_keeps_prod_only_secret_out_of_staging() -> None:
    intent = load(BASE)
    prod = desired_state(intent, "prod", C1)
    staging = desired_state(intent, "staging", C1)
    assert STRIPE_PATH in prod.secrets
    assert STRIPE_PATH not in staging.secrets
    assert "chamberlain-consumer-checkout-checkout" in prod.policies
    assert "chamberlain-consumer-checkout-checkout" not in staging.policies
    assert "chamberlain-checkout-checkout" not in staging.roles
    assert set(staging.secrets) == {BILLING_PATH, REDIS_PATH, BOOTSTRAP_PATH}


def test_secret_metadata_records_the_declared_facts_without_intent_commit() -> None:
    state = desired_state(load(BASE), "prod", C1)
    billing = state.secrets[BILLING_PATH]
    meta = billing.metadata
    assert meta["managed-by"] == "chamberlain"
    assert (meta["kind"], meta["class"]) == ("runtime", "runtime")
    assert meta["owner"] == "team-payments"
    assert meta["purpose"] == "Login of the billing API"
    assert meta["consumers"] == "billing/billing-api,ops/auditor"
    assert meta["deletion-policy"] == "retain"
    assert meta["state"] == "active"
    assert meta["rotation-ttl"] == str(720 * 3600)
    assert meta["rotation-before"] == str(72 * 3600)
    assert meta["rotation-max-overlap"] == str(24 * 3600)
    assert meta["rotation-revoke-old"] == "true"
    assert meta["rotation-failure-strategy"] == "retry"
    assert meta["label.team"] == "payments"
    assert len(meta["intent-hash"]) == 16
    assert "intent-commit" not in meta
    assert all(k in ISSUE_OWNED_KEYS or k.startswith("label.") for k in meta)
    assert all(isinstance(v, str) for v in meta.values())
    # no rotation declared -> no rotation keys
    assert not any(k.startswith("rotation-") for k in state.secrets[REDIS_PATH].metadata)
    assert state.secrets[REDIS_PATH].deletion_policy == "delete"


def test_only_runtime_secrets_carry_generators() -> None:
    state = desired_state(load(BASE), "prod", C1)
    billing = state.secrets[BILLING_PATH]
    assert billing.kind == "runtime"
    assert list(billing.generators) == ["password", "username"]
    assert billing.generators["password"].length == 32
    assert state.secrets[STRIPE_PATH].kind == "internal"
    assert state.secrets[STRIPE_PATH].generators == {}
    bootstrap = state.secrets[BOOTSTRAP_PATH]
    assert (bootstrap.kind, bootstrap.metadata["class"]) == ("bootstrap", "bootstrap")
    assert bootstrap.generators == {}
    assert bootstrap.deletion_policy == "retain"


def test_one_policy_and_role_per_consumer_granting_every_declared_path() -> None:
    state = desired_state(load(BASE), "prod", C1)
    assert sorted(state.policies) == [
        "chamberlain-consumer-billing-billing-api",
        "chamberlain-consumer-checkout-checkout",
        "chamberlain-consumer-ops-auditor",
        "chamberlain-consumer-web-storefront",
    ]
    assert state.policies["chamberlain-consumer-ops-auditor"] == (
        'path "secret/data/platform-data/postgres/billing-api" {\n'
        '  capabilities = ["read"]\n'
        "}\n"
        "\n"
        'path "secret/data/platform-data/redis/session-store" {\n'
        '  capabilities = ["read"]\n'
        "}\n"
    )
    assert state.roles["chamberlain-ops-auditor"] == DesiredRole(
        name="chamberlain-ops-auditor",
        service_account="auditor",
        namespace="ops",
        policies=("chamberlain-consumer-ops-auditor",),
    )
    assert len(state.roles) == len(state.policies)


def test_kv_mount_comes_from_the_authority_config() -> None:
    result = load_dir(EXAMPLE)
    state = desired_state(result.intent, "prod", C1)
    assert state.kv_mount == "secret"
    assert policy_hcl("kv", ["b/c/d", "a/b/c", "a/b/c"]).count("path ") == 2
    assert policy_hcl("kv", ["b/c/d", "a/b/c"]).index("kv/data/a/b/c") == 6


def test_intent_hash_ignores_layout_and_sees_content() -> None:
    base = _billing(BASE)
    username = "    username: {type: alphanumeric, length: 16}\n"
    password = "    password: {type: password, length: 32}\n"
    reordered = BILLING.replace(username + password, password + username).replace(
        "    - {namespace: billing, serviceAccount: billing-api}\n"
        "    - {namespace: ops, serviceAccount: auditor}",
        "    - {namespace: ops, serviceAccount: auditor}\n"
        "    - {namespace: billing, serviceAccount: billing-api}",
    )
    assert reordered != BILLING
    assert _billing(with_files({"secrets/billing.yaml": "# moved down\n\n" + reordered})) == base
    moved = with_files({"secrets/billing.yaml": None, "secrets/db/billing.yaml": BILLING})
    assert _billing(moved) == base
    narrowed = BILLING.replace("  class: runtime", "  class: runtime\n  environments: [prod]")
    assert _billing(with_files({"secrets/billing.yaml": narrowed})) == base
    for edit in (
        ("owner: team-payments", "owner: team-billing"),
        ("length: 32", "length: 48"),
        ("ttl: 720h", "ttl: 360h"),
        ("team: payments", "team: billing"),
        ("serviceAccount: auditor", "serviceAccount: auditor2"),
    ):
        changed = BILLING.replace(*edit)
        assert changed != BILLING
        assert _billing(with_files({"secrets/billing.yaml": changed})) != base, edit


def test_desired_state_is_deterministic() -> None:
    intent = load(BASE)
    first = desired_state(intent, "prod", C1)
    again = desired_state(load(dict(reversed(list(BASE.items())))), "prod", C1)
    assert first == again
    assert list(first.secrets) == sorted(first.secrets)
    assert list(first.policies) == sorted(first.policies)
    assert list(first.roles) == sorted(first.roles)


def test_consumers_that_would_share_a_name_are_refused() -> None:
    clash = BILLING.replace(
        "{namespace: ops, serviceAccount: auditor}",
        "{namespace: billing-billing, serviceAccount: api}",
    )
    intent = load(with_files({"secrets/billing.yaml": clash}))
    with pytest.raises(ConsumerNameCollisionError, match="billing-billing/api"):
        desired_state(intent, "prod", C1)


def test_ownership_of_policies_and_roles() -> None:
    assert owns_policy("chamberlain-consumer-web-storefront")
    assert not owns_policy("ops-admin")
    consumer_role = DesiredRole(
        "chamberlain-web-storefront", "storefront", "web", ("chamberlain-consumer-web-storefront",)
    )
    function_role = DesiredRole(
        "chamberlain-issue-secrets", "issue-secrets", "chamberlain", ("chamberlain-issue-secrets",)
    )
    assert owns_role(consumer_role)
    assert not owns_role(function_role)
    assert not owns_role(
        DesiredRole("web-storefront", "storefront", "web", ("chamberlain-consumer-web-storefront",))
    )


def test_metadata_fits_kv_v2_limits() -> None:
    """KV v2 rejects empty values, values over 512 bytes and keys over 128 bytes."""
    long_purpose = BILLING.replace("Login of the billing API", "é" * 400)
    labels = BILLING.replace("labels: {team: payments}", "labels: {team: '', %s: x}" % ("k" * 130))
    state = desired_state(load(with_files({"secrets/billing.yaml": long_purpose})), "prod", C1)
    assert len(state.secrets[BILLING_PATH].metadata["purpose"].encode()) == 512
    assert "consumers" not in state.secrets[BOOTSTRAP_PATH].metadata  # no consumer declared
    state = desired_state(load(with_files({"secrets/billing.yaml": labels})), "prod", C1)
    meta = state.secrets[BILLING_PATH].metadata
    assert not [k for k in meta if k.startswith("label.")]
    for metadata in (s.metadata for s in state.secrets.values()):
        assert all(
            0 < len(v.encode()) <= 512 and len(k.encode()) <= 128 for k, v in metadata.items()
        )
