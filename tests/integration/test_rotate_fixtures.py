"""Shared setup for the rotation tests (no tests here): secrets issued by the real
issue-secrets step into a real OpenBao, consumers' objects in the fake Kubernetes API, and the
rotate-secrets step with a controllable clock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.intent_source import IntentSource
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.steps.rotate_secrets import Checkpoint, Emit, RotateSecrets
from tests.harness.environments import ConfiguredEnv

BILLING = "platform-data/postgres/billing-api"
CHECKOUT = "platform-data/redis/checkout"
PLAIN = "platform-data/redis/sessions"  # no rotation policy
TTL = timedelta(hours=720)
BEFORE = TTL / 10  # rotateBefore default
DUE_AFTER = TTL - BEFORE


def runtime_secret(
    name: str,
    path: str,
    *,
    rotation: str | None = "{ttl: 720h}",
    consumers: Iterable[dict[str, Any]] = (),
    environments: Iterable[str] = ("prod",),
) -> str:
    """A runtime SecretIntent (YAML) whose consumers may name an ExternalSecret and workloads."""
    listed = list(consumers) or [{"namespace": "billing", "serviceAccount": "billing-api"}]
    lines = [
        "apiVersion: chamberlain.dev/v1alpha1",
        "kind: SecretIntent",
        f"metadata: {{name: {name}}}",
        "spec:",
        f"  path: {path}",
        "  class: runtime",
        "  owner: team-payments",
        "  purpose: Login of a service to its datastore",
        f"  environments: [{', '.join(environments)}]",
        "  consumers:",
    ]
    for consumer in listed:
        lines.append(f"    - namespace: {consumer['namespace']}")
        lines.append(f"      serviceAccount: {consumer['serviceAccount']}")
        if consumer.get("externalSecret"):
            lines.append(f"      externalSecret: {consumer['externalSecret']}")
        if consumer.get("workloads"):
            lines.append("      workloads:")
            for kind, workload in consumer["workloads"]:
                lines.append(f"        - {{kind: {kind}, name: {workload}}}")
    lines += ["  generate:", "    password: {type: password}", "    username: {type: uuid}"]
    if rotation is not None:
        lines.append(f"  rotation: {rotation}")
    return "\n".join(lines) + "\n"


BILLING_CONSUMERS = [
    {
        "namespace": "billing",
        "serviceAccount": "billing-api",
        "externalSecret": "billing-db",
        "workloads": [("Deployment", "billing-api"), ("StatefulSet", "billing-worker")],
    },
    {
        "namespace": "reports",
        "serviceAccount": "reporter",
        "externalSecret": "billing-db",
        "workloads": [("Deployment", "reporter")],
    },
]


def seed_consumer_objects(env: ConfiguredEnv) -> None:
    """The ExternalSecrets and workloads BILLING_CONSUMERS name, as a cluster would hold."""
    kube = env.kube
    for namespace, name in (("billing", "billing-db"), ("reports", "billing-db")):
        kube.seed(
            {
                "apiVersion": "external-secrets.io/v1beta1",
                "kind": "ExternalSecret",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"refreshInterval": "1h", "target": {"name": name}},
            }
        )
    for kind, namespace, name in (
        ("Deployment", "billing", "billing-api"),
        ("StatefulSet", "billing", "billing-worker"),
        ("Deployment", "reports", "reporter"),
    ):
        kube.seed(
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
                    },
                },
            }
        )


@dataclass
class Rotation:
    """The configured environment, what was issued, and a factory of rotate-secrets steps."""

    env: ConfiguredEnv
    issued_at: datetime
    emitted: list[CloudEvent] = field(default_factory=list)

    def prod(self) -> Authority:
        return self.env.authority("prod")

    def step(
        self,
        *,
        at: datetime | None = None,
        kube: bool = True,
        checkpoint: Checkpoint | None = None,
        concurrency: int = 2,
        addr: str | None = None,
        token: str | None = None,
    ) -> RotateSecrets:
        """A step with its own authority session whose clock says ``at``."""
        moment = at or self.issued_at
        authority = Authority.connect(
            addr or self.env.bao.addr, token or self.env.bao.token, namespace=self.env.base
        )
        emit: Emit = self.emitted.append  # type: ignore[assignment]
        return RotateSecrets(
            authority,
            IntentSource(self.env.cache_dir),
            intent_repo=self.env.repo.url,
            base_namespace=self.env.base,
            kube=self.env.kube.api_client(self.env.kube.issue_token("chamberlain", "rotate"))
            if kube
            else None,
            clock=lambda: moment,
            emit=emit,
            checkpoint=checkpoint,
            concurrency=concurrency,
        )

    def due_time(self) -> datetime:
        """A moment when everything issued with the 720h policy is due."""
        return self.issued_at + DUE_AFTER + timedelta(hours=1)


def tick(id_: str = "tick-1") -> CloudEvent:
    return make_event(
        T.PING,
        {"task": "rotate"},
        source="/apis/v1/namespaces/chamberlain/pingsources/rotate",
        id_=id_,
    )


def request(path: str, *, id_: str = "req-1", environment: str = "prod") -> CloudEvent:
    return make_event(
        T.SECRET_ROTATE_REQUESTED,
        {"environment": environment, "path": path, "reason": "consumer migrated"},
        source="/platform/ops-console",
        subject=path,
        id_=id_,
    )


def compromised(path: str, *, id_: str = "leak-1", environment: str = "prod") -> CloudEvent:
    return make_event(
        T.SECRET_COMPROMISED,
        {"environment": environment, "path": path, "reason": "found in a public gist"},
        source="/platform/secret-scanner",
        subject=path,
        id_=id_,
    )


def versions(authority: Authority, *paths: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in paths:
        found = authority.read_metadata(path)
        out[path] = found.current_version if found is not None else 0
    return out


def issue(env: ConfiguredEnv, files: dict[str, str]) -> datetime:
    """Commit, push and run issue-secrets on the push; returns when it ran."""
    payload = env.repo.commit_and_push(files, "secrets")
    started = datetime.now(timezone.utc)
    reply = env.step()(env.push_event(payload))
    assert reply is not None and reply.get_type() == T.SECRETS_ISSUED
    return started


@pytest.fixture(name="rotation")
def rotation_fixture(configured_env: ConfiguredEnv) -> Iterator[Rotation]:
    """BILLING (rotating, with consumers), CHECKOUT (rotating), PLAIN (no policy) in prod."""
    env = configured_env
    seed_consumer_objects(env)
    issued_at = issue(
        env,
        {
            "secrets/billing.yaml": runtime_secret(
                "billing-db", BILLING, consumers=BILLING_CONSUMERS
            ),
            "secrets/checkout.yaml": runtime_secret("checkout-redis", CHECKOUT),
            "secrets/sessions.yaml": runtime_secret("sessions", PLAIN, rotation=None),
        },
    )
    yield Rotation(env=env, issued_at=issued_at)
