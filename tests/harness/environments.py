"""Pytest fixture: configured environments in a real OpenBao, plus an intent repo that names them.

``configured_env`` gives each test, inside its own OpenBao namespace (``bao`` fixture), one child
namespace per environment (``prod``, ``staging``) set up the way initialize-authority will: the
``secret`` and ``chamberlain`` KV v2 mounts and a Kubernetes auth mount configured against the
fake Kubernetes API (``kube_api``), so consumers can log in with service-account tokens. The
intent repository (``intent_repo``) starts with the Environment documents only; tests commit
SecretIntents and push.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.gitrepo import normalized_push
from chamberlain.adapters.intent_source import IntentSource
from chamberlain.model.event_types import GIT_PUSH
from chamberlain.model.events import make_event
from chamberlain.steps.issue_secrets import IssueSecrets
from chamberlain.steps.reconcile import Reconciler
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.gitrepo import IntentRepo
from tests.harness.openbao import BaoScope

ENVIRONMENTS = ("prod", "staging")
ENVIRONMENTS_YAML = """\
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec: {branch: main, namespace: prod}
---
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec: {branch: main}
---
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: preview}
spec: {branch: main, ephemeral: true}
"""


def secret_intent(
    name: str,
    path: str,
    *,
    consumers: Iterable[tuple[str, str]] = (("billing", "billing-api"),),
    owner: str = "team-payments",
    purpose: str = "Login of the billing API to its database",
    keys: Mapping[str, str] | None = None,
    environments: Iterable[str] | None = None,
    deletion_policy: str | None = None,
    rotation_ttl: str | None = "720h",
) -> str:
    """A runtime SecretIntent document (YAML text)."""
    generate = keys or {
        "username": "{type: alphanumeric, length: 16}",
        "password": "{type: password}",
    }
    lines = [
        "apiVersion: chamberlain.dev/v1alpha1",
        "kind: SecretIntent",
        f"metadata: {{name: {name}}}",
        "spec:",
        f"  path: {path}",
        "  class: runtime",
        f"  owner: {owner}",
        f"  purpose: {purpose}",
        "  consumers:",
        *(f"    - {{namespace: {ns}, serviceAccount: {sa}}}" for ns, sa in consumers),
        "  generate:",
        *(f"    {key}: {spec}" for key, spec in generate.items()),
    ]
    if environments is not None:
        lines.append(f"  environments: [{', '.join(environments)}]")
    if deletion_policy is not None:
        lines.append(f"  deletionPolicy: {deletion_policy}")
    if rotation_ttl is not None:
        lines.append(f"  rotation: {{ttl: {rotation_ttl}}}")
    return "\n".join(lines) + "\n"


@dataclass
class ConfiguredEnv:
    """Environments ``prod`` and ``staging`` configured under ``bao.namespace``."""

    bao: BaoScope
    kube: FakeKubeApi
    repo: IntentRepo
    cache_dir: Path
    environments: tuple[str, ...] = ENVIRONMENTS
    _admin: Authority | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return self.bao.namespace

    def admin(self) -> Authority:
        """A root-token authority in this test's namespace."""
        if self._admin is None:
            self._admin = Authority.connect(self.bao.addr, self.bao.token, namespace=self.base)
        return self._admin

    def authority(self, environment: str) -> Authority:
        """A fresh root-token authority bound to ``environment``'s namespace (own counter)."""
        return Authority.connect(
            self.bao.addr, self.bao.token, namespace=f"{self.base}/{environment}"
        )

    def reconciler(self, *, concurrency: int = 4, lock_wait_s: float = 20.0) -> Reconciler:
        authority = Authority.connect(self.bao.addr, self.bao.token, namespace=self.base)
        return Reconciler(
            authority,
            IntentSource(self.cache_dir),
            base_namespace=self.base,
            concurrency=concurrency,
            lock_wait_s=lock_wait_s,
        )

    def step(self, **kwargs: Any) -> IssueSecrets:
        """The issue-secrets step against this authority and repo (resync reads ``repo``)."""
        return IssueSecrets(self.reconciler(**kwargs), intent_repo=self.repo.url)

    def environ(self) -> dict[str, str]:
        """The function environment ``issue_secrets.build`` reads for this setup."""
        return {
            "CHAMBERLAIN_AUTHORITY_ADDR": self.bao.addr,
            "CHAMBERLAIN_AUTHORITY_TOKEN": self.bao.token,
            "CHAMBERLAIN_AUTHORITY_NAMESPACE": self.base,
            "CHAMBERLAIN_INTENT_REPO": self.repo.url,
            "CHAMBERLAIN_CACHE_DIR": str(self.cache_dir),
            "CHAMBERLAIN_CONCURRENCY": "4",
        }

    def push_event(self, payload: Mapping[str, Any], *, id_: str | None = None) -> CloudEvent:
        """The git-ingress event for a GitHub-shaped push payload."""
        data = normalized_push(payload, "github", delivery=id_)
        return make_event(GIT_PUSH, data, source="/chamberlain/git-ingress", id_=id_)


def configure_environment(
    bao: BaoScope, kube_api: FakeKubeApi, environment: str, *, base: str | None = None
) -> Authority:
    """Create ``environment``'s namespace and mounts the way initialize-authority will."""
    root = Authority.connect(bao.addr, bao.token, namespace=base or bao.namespace)
    root.create_namespace(environment)
    env = root.for_namespace(f"{base or bao.namespace}/{environment}")
    env.enable_secrets_engine("kv", "secret", {"version": "2"})
    env.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
    env.enable_auth("kubernetes", "kubernetes")
    env.write_kubernetes_config(
        "kubernetes",
        host=kube_api.host,
        ca_pem=kube_api.ca_pem,
        token_reviewer_jwt=kube_api.issue_token("kube-system", "token-reviewer"),
        disable_local_ca_jwt=True,
    )
    return env


@pytest.fixture
def configured_env(
    bao: BaoScope, kube_api: FakeKubeApi, intent_repo: IntentRepo, tmp_path: Path
) -> Iterator[ConfiguredEnv]:
    """prod + staging configured in OpenBao; the repo's first commit declares them (not pushed)."""
    for environment in ENVIRONMENTS:
        configure_environment(bao, kube_api, environment)
    intent_repo.commit({"environments.yaml": textwrap.dedent(ENVIRONMENTS_YAML)}, "environments")
    yield ConfiguredEnv(bao=bao, kube=kube_api, repo=intent_repo, cache_dir=tmp_path / "cache")
