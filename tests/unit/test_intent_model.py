"""The typed intent model: loading, defaults, positions, durations, paths and the schema file."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from chamberlain.model.durations import DurationError, format_duration, parse_duration
from chamberlain.model.intent import (
    AuthorityConfig,
    BootstrapSecret,
    DynamicCredential,
    Environment,
    Generator,
    SecretIntent,
)
from chamberlain.model.loader import intent_schema, load_dir, load_files, parse_yaml, read_dir
from chamberlain.model.paths import is_secret_path, secret_path_problems

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "intent"


@pytest.fixture(scope="module")
def example():
    result = load_dir(EXAMPLE)
    assert result.problems == ()
    return result


def _secret(result, name: str) -> SecretIntent:
    return next(s for s in result.intent.secrets if s.name == name)


def test_example_loads_every_kind(example) -> None:
    intent = example.intent
    assert example.document_count == 10
    assert [e.name for e in intent.environments] == ["prod", "staging", "preview"]
    assert {s.name for s in intent.secrets} == {
        "billing-api-database",
        "session-store-redis",
        "checkout-stripe",
        "identity-jwt-signing",
    }
    assert [b.name for b in intent.bootstrap_secrets] == ["postgres-admin"]
    assert [d.name for d in intent.dynamic_credentials] == ["reporting-postgres"]
    assert isinstance(intent.authority, AuthorityConfig)
    kinds = (Environment, AuthorityConfig, SecretIntent, BootstrapSecret, DynamicCredential)
    assert all(isinstance(d, kinds) for d in example.documents)


def test_sops_files_and_sops_config_are_not_intent_documents(example) -> None:
    assert "bootstrap/postgres-admin.enc.yaml" in example.sops_files
    assert ".sops.yaml" not in example.files
    assert all(d.origin.file != "bootstrap/postgres-admin.enc.yaml" for d in example.documents)


def test_environment_defaults() -> None:
    files = {
        "env.yaml": (
            b"apiVersion: chamberlain.dev/v1alpha1\nkind: Environment\n"
            b"metadata: {name: qa-eu}\nspec: {}\n"
        )
    }
    result = load_files(files)
    assert result.problems == ()
    (environment,) = result.intent.environments
    assert environment == Environment(name="qa-eu", namespace="qa-eu")
    assert environment.branch == "main"
    assert environment.ephemeral is False
    assert environment.cluster_host is None


def test_example_environments(example) -> None:
    intent = example.intent
    preview = intent.environment("preview")
    assert preview is not None and preview.ephemeral and preview.namespace == "preview"
    staging = intent.environment("staging")
    assert staging is not None and staging.namespace == "staging" and not staging.ephemeral
    prod = intent.environment("prod")
    assert prod is not None and prod.labels == {"tier": "production"}
    assert intent.environment("nope") is None


def test_authority_config(example) -> None:
    authority = example.intent.authority
    assert authority.shares == 3 and authority.threshold == 2
    assert authority.kv_mount == "secret"
    assert authority.kubernetes_auth_mount == "kubernetes"
    assert authority.audit_path == "/var/log/openbao/audit.log"
    assert authority.recipients[0].startswith("age1")
    assert authority.recipient_for_share(2) == authority.recipients[0]
    identity = (EXAMPLE.parent / "keys" / "example-age-identity.txt").read_text()
    assert f"# public key: {authority.recipients[0]}" in identity


def test_generators_resolve_defaults(example) -> None:
    billing = _secret(example, "billing-api-database")
    assert billing.secret_class == "runtime"
    assert billing.keys == ("username", "password")
    assert billing.generate["username"] == Generator("alphanumeric", length=16)
    assert billing.generate["password"] == Generator("password", length=32)
    jwt = _secret(example, "identity-jwt-signing")
    assert jwt.generate["signing-key"] == Generator("base64", nbytes=64)
    assert jwt.generate["key-id"] == Generator("uuid")
    files = {
        "s.yaml": b"""apiVersion: chamberlain.dev/v1alpha1
kind: SecretIntent
metadata: {name: s}
spec:
  path: platform-data/mq/worker
  class: runtime
  owner: me
  purpose: test
  consumers: [{namespace: a, serviceAccount: b}]
  generate:
    a: {type: password}
    b: {type: hex}
"""
    }
    (secret,) = load_files(files).intent.secrets
    assert secret.generate["a"] == Generator("password", length=32)
    assert secret.generate["b"] == Generator("hex", nbytes=32)
    assert secret.rotation is None
    assert secret.deletion_policy == "retain"
    assert secret.environments is None and secret.applies_to("anything")


def test_rotation_policy_defaults(example) -> None:
    billing = _secret(example, "billing-api-database").rotation
    assert billing is not None
    assert billing.ttl == timedelta(hours=720)
    assert billing.rotate_before == timedelta(hours=72)
    assert billing.max_overlap == timedelta(hours=24)
    stripe = _secret(example, "checkout-stripe")
    assert stripe.secret_class == "internal"
    assert stripe.keys == ("api-key", "webhook-signing-secret")
    assert stripe.rotation.max_overlap == stripe.rotation.rotate_before == timedelta(days=14)
    assert stripe.rotation.revoke_old is True
    assert stripe.rotation.failure_strategy == "alert"
    jwt = _secret(example, "identity-jwt-signing").rotation
    assert jwt.failure_strategy == "retry"


def test_environment_scoping(example) -> None:
    intent = example.intent
    stripe = _secret(example, "checkout-stripe")
    assert stripe.environments == ("prod", "staging")
    assert not stripe.applies_to("preview")
    preview_paths = {d.path for d in intent.for_environment("preview")}
    assert "platform-data/stripe/checkout" not in preview_paths
    assert "platform-data/postgres/billing-api" in preview_paths
    assert len(intent.for_environment("prod")) == 6


def test_bootstrap_and_dynamic_credential(example) -> None:
    admin = example.intent.bootstrap_secret("postgres-admin")
    assert admin is not None
    assert admin.kubernetes_secret.namespace == "chamberlain"
    assert admin.sops.file == "bootstrap/postgres-admin.enc.yaml"
    assert admin.keys == ("username", "password")
    assert admin.retire == "delete"
    (reporting,) = example.intent.dynamic_credentials
    assert reporting.database.admin_secret == "postgres-admin"
    assert reporting.database.allowed_roles == ("reporting-readonly",)
    (role,) = reporting.roles
    assert role.ttl == timedelta(hours=1) and role.max_ttl == timedelta(hours=24)
    assert any("{{name}}" in s for s in role.creation_statements)
    assert reporting.renewal_at == pytest.approx(0.66)
    assert reporting.consumers[0].workloads[0].kind == "Deployment"


def test_documents_are_frozen_hashable_values(example) -> None:
    billing = _secret(example, "billing-api-database")
    with pytest.raises(dataclasses.FrozenInstanceError):
        billing.path = "platform-data/x/y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        billing.generate["password"] = Generator("uuid")  # type: ignore[index]
    again = _secret(load_dir(EXAMPLE), "billing-api-database")
    assert again == billing and hash(again) == hash(billing)
    assert len(set(example.intent.secret_documents())) == 6


def test_in_memory_files_load_like_a_checkout(example) -> None:
    from_memory = load_files(read_dir(EXAMPLE))
    assert from_memory.intent == example.intent
    assert from_memory.files == example.files


def test_origin_points_at_each_key(example) -> None:
    billing = _secret(example, "billing-api-database")
    text = (EXAMPLE / billing.origin.file).read_text().splitlines()
    line, column = billing.origin.at("spec", "rotation", "ttl")
    assert text[line - 1].strip() == "ttl: 720h"
    assert column == text[line - 1].index("ttl") + 1
    line, _ = billing.origin.at("spec", "consumers", 0, "workloads", 0)
    assert text[line - 1].strip() == "- kind: Deployment"
    # a missing key falls back to its nearest ancestor
    assert billing.origin.at("spec", "rotation", "absent") == billing.origin.at("spec", "rotation")


def test_hidden_directories_non_yaml_and_empty_documents_are_ignored() -> None:
    env = (
        b"apiVersion: chamberlain.dev/v1alpha1\nkind: Environment\n"
        b"metadata: {name: dev1}\nspec: {}\n"
    )
    files = {
        ".github/workflows/ci.yaml": b"on: push\n",
        "README.md": b"# not yaml\n",
        "envs.yml": b"---\n---\n" + env + b"---\n# only a comment\n",
    }
    result = load_files(files)
    assert result.problems == ()
    assert result.document_count == 1
    assert result.files == frozenset({"envs.yml"})


def test_parse_yaml_records_positions_of_sequence_items() -> None:
    (doc,) = parse_yaml("a:\n  - x\n  - y: 1\n", "f.yaml")
    assert doc.origin.at("a", 1, "y") == (3, 5)
    assert doc.origin.at("a", 0) == (2, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", timedelta(hours=720)),
        ("30d", timedelta(days=30)),
        ("1h30m", timedelta(minutes=90)),
        ("2w1d", timedelta(days=15)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "h", "1.5h", "30 days", "1m1h", "1h1h", "-1h", "10ms"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/platform-data/a/b", "absolute"),
        ("platform-data/../b", "'..'"),
        ("platform-data//b", "empty"),
        ("platform-data/a/b/", "empty"),
        ("platform-data/Postgres/b", "lowercase"),
        ("platform-data/post_gres/b", "lowercase"),
        ("platform-data/a", "three segments"),
        ("platform-data/a/b/c", "three segments"),
        ("secrets/a/b", "three segments"),
        ("platform-config/a/b", "non-secret"),
        ("platform-data/postgres/billing-prod", "environment 'prod'"),
        ("platform-data/staging/billing", "environment 'staging'"),
        ("platform-data/postgres/eu-preview", "environment 'preview'"),
    ],
)
def test_secret_path_rules(path: str, fragment: str) -> None:
    problems = secret_path_problems(path, ["preview"])
    assert problems and fragment in problems[0]
    assert not is_secret_path(path, ["preview"])


def test_valid_secret_paths() -> None:
    assert secret_path_problems("platform-data/postgres/billing-api", ["prod"]) == []
    assert is_secret_path("platform-data/redis2/session-store")


def test_schema_file_is_valid_and_accepts_every_example_document(example) -> None:
    schema = intent_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    docs = [
        doc
        for path, content in read_dir(EXAMPLE).items()
        if path not in example.sops_files
        for doc in parse_yaml(content.decode(), path)
    ]
    assert len(docs) == 10
    for doc in docs:
        assert list(validator.iter_errors(doc.data)) == [], doc.file
    broken = dict(docs[0].data, kind="Nope")
    assert list(validator.iter_errors(broken))


def test_alias_bombs_are_rejected_not_expanded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    result = load_files({"bomb.yaml": "\n".join(lines).encode()})
    (problem,) = result.problems
    assert problem.code == "yaml-syntax" and "keys and items" in problem.message


def test_schema_also_works_for_draft_07_editors(example) -> None:
    """Many YAML language servers implement draft-07 only; the schema must still validate."""
    from jsonschema import Draft7Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT7

    schema = {k: v for k, v in intent_schema().items() if k != "$schema"}
    registry = Registry().with_resource(schema["$id"], DRAFT7.create_resource(schema))
    validator = Draft7Validator(schema, registry=registry)
    checked = 0
    for path, content in read_dir(EXAMPLE).items():
        if path in example.sops_files:
            continue
        for doc in parse_yaml(content.decode(), path):
            assert list(validator.iter_errors(doc.data)) == [], path
            typo = dict(doc.data, spec=dict(doc.data["spec"], unknownKey=1))
            assert list(validator.iter_errors(typo)), path
            checked += 1
    assert checked == 10
