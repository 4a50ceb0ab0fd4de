"""Consumers read exactly their declared paths: a Kubernetes service-account token, reviewed by
the (fake) API server's TokenReview, logs in to OpenBao through the Kubernetes auth method on
the environment's namespace with the role issue-secrets wrote, and is refused everything else."""

from __future__ import annotations

import hvac
import pytest

from tests.harness.environments import ConfiguredEnv, secret_intent

BILLING = "platform-data/postgres/billing-api"
SHARED = "platform-data/identity/api-gateway"
OTHER = "platform-data/redis/checkout"
UNDECLARED = "platform-data/legacy/cron"


def _login(env: ConfiguredEnv, environment: str, namespace: str, sa: str) -> hvac.Client:
    jwt = env.kube.issue_token(namespace, sa)
    client = hvac.Client(url=env.bao.addr, namespace=f"{env.base}/{environment}")
    client.auth.kubernetes.login(f"chamberlain-{namespace}-{sa}", jwt)
    return client


def _read(client: hvac.Client, path: str) -> dict[str, str]:
    response = client.secrets.kv.v2.read_secret_version(
        path, mount_point="secret", raise_on_deleted_version=True
    )
    data: dict[str, str] = response["data"]["data"]
    return data


def test_a_consumer_reads_exactly_its_declared_paths(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    payload = env.repo.commit_and_push(
        {
            "secrets/billing.yaml": secret_intent("billing-db", BILLING),
            "secrets/shared.yaml": secret_intent(
                "jwt", SHARED, consumers=[("billing", "billing-api"), ("gateway", "api-gateway")]
            ),
            "secrets/other.yaml": secret_intent("redis", OTHER, consumers=[("checkout", "cart")]),
        },
        "three secrets, two consumers of one",
    )
    env.step()(env.push_event(payload))
    env.authority("prod").write_secret(UNDECLARED, {"token": "legacy-value-1"}, cas=0)

    billing = _login(env, "prod", "billing", "billing-api")
    assert set(_read(billing, BILLING)) == {"username", "password"}
    assert set(_read(billing, SHARED)) == {"username", "password"}
    for refused in (OTHER, UNDECLARED):  # declared for someone else / not declared at all
        with pytest.raises(hvac.exceptions.Forbidden):
            _read(billing, refused)
    gateway = _login(env, "prod", "gateway", "api-gateway")
    assert _read(gateway, SHARED) == _read(billing, SHARED)
    with pytest.raises(hvac.exceptions.Forbidden):
        _read(gateway, BILLING)

    # the role is bound to its namespace and service account: another identity cannot use it
    stranger = hvac.Client(url=env.bao.addr, namespace=f"{env.base}/prod")
    with pytest.raises(hvac.exceptions.Forbidden):
        stranger.auth.kubernetes.login(
            "chamberlain-billing-billing-api", env.kube.issue_token("billing", "intruder")
        )
    # environments are isolated: the prod token of a consumer reads nothing in staging
    staging = hvac.Client(url=env.bao.addr, namespace=f"{env.base}/staging", token=billing.token)
    with pytest.raises(hvac.exceptions.Forbidden):
        _read(staging, BILLING)


def test_removing_a_consumer_revokes_its_access(configured_env: ConfiguredEnv) -> None:
    env = configured_env
    shared = {
        "secrets/shared.yaml": secret_intent(
            "jwt", SHARED, consumers=[("billing", "billing-api"), ("gateway", "api-gateway")]
        )
    }
    step = env.step()
    step(env.push_event(env.repo.commit_and_push(shared, "shared")))
    _login(env, "prod", "gateway", "api-gateway")

    step(
        env.push_event(
            env.repo.commit_and_push(
                {"secrets/shared.yaml": secret_intent("jwt", SHARED)}, "gateway no longer consumes"
            )
        )
    )

    prod = env.authority("prod")
    assert prod.read_policy("chamberlain-consumer-gateway-api-gateway") is None
    assert prod.read_kubernetes_role("kubernetes", "chamberlain-gateway-api-gateway") is None
    with pytest.raises(hvac.exceptions.VaultError):
        _login(env, "prod", "gateway", "api-gateway")
    assert set(_read(_login(env, "prod", "billing", "billing-api"), SHARED)) == {
        "username",
        "password",
    }
