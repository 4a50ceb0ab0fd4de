"""changed_scope: an incremental push looks only at what its changed files declared."""

from __future__ import annotations

from chamberlain.planner.actions import Scope
from chamberlain.planner.scope import changed_scope
from tests.unit.test_planner_support import (
    BASE,
    BILLING,
    BILLING_PATH,
    REDIS,
    REDIS_PATH,
    STRIPE,
    STRIPE_PATH,
    load,
    with_files,
)

AUTHORITY = """\
apiVersion: chamberlain.dev/v1alpha1
kind: AuthorityConfig
metadata: {name: authority}
spec:
  shares: 1
  threshold: 1
  recipients: [age127cw7ngvptd9auqjknq8h6vj6gaa6nk4emug7slcn8gnyar6ea3qvzd0v9]
  kvMount: %s
"""


def test_nothing_applied_yet_means_everything() -> None:
    assert changed_scope(None, load(BASE), ["secrets/billing.yaml"], "prod") == Scope.everything()


def test_edited_file_scopes_its_path_and_consumers_at_both_commits() -> None:
    old = load(BASE)
    edited = BILLING.replace(
        "    - {namespace: ops, serviceAccount: auditor}\n  generate",
        "    - {namespace: audit, serviceAccount: reader}\n  generate",
    )
    new = load(with_files({"secrets/billing.yaml": edited}))
    scope = changed_scope(old, new, ["secrets/billing.yaml"], "prod")
    assert not scope.full
    assert scope.paths == {BILLING_PATH}
    assert scope.consumers == {
        "chamberlain-consumer-billing-billing-api",
        "chamberlain-billing-billing-api",
        "chamberlain-consumer-ops-auditor",  # removed consumer: its policy must be rewritten
        "chamberlain-ops-auditor",
        "chamberlain-consumer-audit-reader",  # added consumer
        "chamberlain-audit-reader",
    }


def test_deleted_and_moved_files_scope_the_paths_they_declared() -> None:
    old = load(BASE)
    new = load(
        with_files(
            {
                "secrets/redis.yaml": None,
                "secrets/a/billing.yaml": BILLING,
                "secrets/billing.yaml": None,
            }
        )
    )
    files = ["secrets/redis.yaml", "secrets/billing.yaml", "secrets/a/billing.yaml"]
    scope = changed_scope(old, new, files, "prod")
    assert scope.paths == {REDIS_PATH, BILLING_PATH}
    assert "chamberlain-consumer-web-storefront" in scope.consumers


def test_scope_is_per_environment() -> None:
    old = load(BASE)
    new = load(with_files({"secrets/stripe.yaml": STRIPE.replace("Stripe keys", "Stripe API")}))
    assert changed_scope(old, new, ["secrets/stripe.yaml"], "prod").paths == {STRIPE_PATH}
    staging = changed_scope(old, new, ["secrets/stripe.yaml"], "staging")
    assert staging == Scope(full=False)


def test_unrelated_file_gives_an_empty_scope() -> None:
    old = load(BASE)
    new = load(with_files({"README.md": "hello"}))
    assert changed_scope(old, new, ["README.md"], "prod") == Scope(full=False)


def test_changed_kv_mount_or_namespace_means_everything() -> None:
    old = load(with_files({"authority.yaml": AUTHORITY % "secret"}))
    new = load(with_files({"authority.yaml": AUTHORITY % "kv"}))
    assert changed_scope(old, new, ["authority.yaml"], "prod").full
    same = load(with_files({"authority.yaml": AUTHORITY % "secret", "secrets/redis.yaml": REDIS}))
    assert not changed_scope(old, same, ["authority.yaml"], "prod").full
    moved_ns = load(
        with_files(
            {
                "environments.yaml": BASE["environments.yaml"].replace(
                    "metadata: {name: prod}\nspec: {branch: main}",
                    "metadata: {name: prod}\nspec: {branch: main, namespace: production-ns}",
                )
            }
        )
    )
    assert changed_scope(load(BASE), moved_ns, ["environments.yaml"], "prod").full
    assert not changed_scope(load(BASE), moved_ns, ["environments.yaml"], "staging").full
