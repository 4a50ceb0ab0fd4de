"""Every function identity does its own step's work and nothing else (403 everywhere else).

A private dev-mode OpenBao (no raft: nothing here is about sealing) is configured exactly as a
cluster would be: the initializer's identity is bootstrapped with the dev root token, then the
real initialize-authority step converges from a real intent repository, issuing one identity per
function into the identity directory and a Kubernetes login role per function in the root
namespace (the fake Kubernetes API answers OpenBao's TokenReview). Each identity is then probed
with raw HTTP calls, as an attacker holding that token would make them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from chamberlain.adapters import agecrypt, bao_server
from chamberlain.adapters.authority import Authority
from chamberlain.adapters.authority_admin import AdminAuthority
from chamberlain.adapters.bao_server import BaoServer
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import Intent
from chamberlain.planner.authority_config import KubernetesApi, SystemCluster
from chamberlain.planner.function_policies import FUNCTIONS, policy_name
from chamberlain.steps.initialize_authority import bootstrap_with_root, build
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.gitrepo import IntentRepo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = "platform-data/app/db"


@dataclass
class Lab:
    server: BaoServer
    kube: FakeKubeApi
    identities: Path
    root: hvac.Client

    def token(self, function: str) -> str:
        return (self.identities / f"{function}.token").read_text().strip()

    def call(
        self,
        token: str,
        method: str,
        path: str,
        *,
        namespace: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> int:
        headers = {"X-Vault-Token": token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        response = requests.request(
            method, f"{self.server.addr}/v1/{path}", headers=headers, json=body, timeout=10
        )
        return response.status_code


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root_dir = tmp_path_factory.mktemp("least-privilege")
    _identity, recipient = agecrypt.generate_identity()
    repo = IntentRepo(root_dir / "intent")
    repo.commit_and_push(
        {
            "authority.yaml": "apiVersion: chamberlain.dev/v1alpha1\nkind: AuthorityConfig\n"
            "metadata: {name: authority}\n"
            f"spec: {{shares: 1, threshold: 1, recipients: [{recipient}]}}\n",
            "environments.yaml": "apiVersion: chamberlain.dev/v1alpha1\nkind: Environment\n"
            "metadata: {name: prod}\nspec: {}\n---\napiVersion: chamberlain.dev/v1alpha1\n"
            "kind: Environment\nmetadata: {name: staging}\nspec: {}\n",
        },
        "intent",
    )
    kube = FakeKubeApi().start()
    ca_file = root_dir / "ca.pem"
    ca_file.write_text(kube.ca_pem)
    server = bao_server.start_dev(root_dir / "openbao")
    assert server.root_token is not None
    identities = root_dir / "identities"
    system = SystemCluster(api=KubernetesApi(kube.host, kube.ca_pem))
    root_admin = AdminAuthority.of(Authority.connect(server.addr, server.root_token))
    bootstrap_with_root(root_admin, Intent(), system=system, identities=identities)
    step = build(
        {
            "CHAMBERLAIN_AUTHORITY_ADDR": server.addr,
            "CHAMBERLAIN_INTENT_REPO": repo.url,
            "CHAMBERLAIN_CACHE_DIR": str(root_dir / "cache"),
            "CHAMBERLAIN_SHARE_DIR": str(root_dir / "shares"),
            "CHAMBERLAIN_IDENTITY_DIR": str(identities),
            "CHAMBERLAIN_SYSTEM_KUBERNETES_HOST": kube.host,
            "CHAMBERLAIN_SYSTEM_KUBERNETES_CA_FILE": str(ca_file),
        }
    )
    created = {
        "environment": "prod",
        "ephemeral": False,
        "kubernetes": {"host": kube.host, "caCert": kube.ca_pem},
        "cluster": "prod",
    }
    reply = step(make_event(T.CLUSTER_CREATED, created, source="/test"))
    assert reply is not None and reply.get_data()["namespaces"] == ["prod", "staging"]
    root = hvac.Client(url=server.addr, token=server.root_token)
    # a namespace chamberlain does not manage, holding a secret
    root.sys.create_namespace("other")
    other = hvac.Client(url=server.addr, token=server.root_token, namespace="other")
    other.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    other.secrets.kv.v2.create_or_update_secret(SECRET, secret={"password": "x" * 24})
    prod = hvac.Client(url=server.addr, token=server.root_token, namespace="prod")
    prod.secrets.kv.v2.create_or_update_secret(SECRET, secret={"password": "y" * 24})
    try:
        yield Lab(server, kube, identities, root)
    finally:
        server.stop()
        kube.stop()


# ---- operations outside a step: (name, method, path, namespace, body) -----------------------

Probe = tuple[str, str, str, str | None, dict[str, Any] | None]
PROBES: list[Probe] = [
    ("read another namespace's secret", "GET", f"secret/data/{SECRET}", "other", None),
    ("read a prod secret value", "GET", f"secret/data/{SECRET}", "prod", None),
    ("write a root policy", "PUT", "sys/policies/acl/admin", None, {"policy": 'path "*" {}'}),
    (
        "write a function policy",
        "PUT",
        f"sys/policies/acl/{policy_name('issue-secrets')}",
        None,
        {"policy": 'path "*" { capabilities = ["sudo"] }'},
    ),
    ("list root policies", "LIST", "sys/policies/acl", None, None),
    ("enable a root secrets engine", "POST", "sys/mounts/evil", None, {"type": "kv"}),
    ("enable an engine in prod", "POST", "sys/mounts/evil", "prod", {"type": "kv"}),
    ("create a namespace", "POST", "sys/namespaces/evil", None, {}),
    ("delete an environment namespace", "DELETE", "sys/namespaces/staging", None, None),
    ("seal the authority", "PUT", "sys/seal", None, None),
    ("rotate the keyring", "POST", "sys/rotate", None, None),
    ("read raw storage", "GET", "sys/raw/core/keyring", None, None),
    ("list audit devices", "GET", "sys/audit", None, None),
    ("create a root token", "POST", "auth/token/create", None, {"policies": ["root"]}),
    (
        "mint a function token",
        "POST",
        "auth/token/create/chamberlain-fn",
        None,
        {"policies": [policy_name("initialize-authority")]},
    ),
    (
        "bind another service account",
        "POST",
        "auth/kubernetes/role/chamberlain-evil",
        None,
        {"bound_service_account_names": ["x"], "bound_service_account_namespaces": ["x"]},
    ),
    (
        "reconfigure prod's Kubernetes auth",
        "POST",
        "auth/kubernetes/config",
        "prod",
        {"kubernetes_host": "http://evil.example"},
    ),
    ("disable prod's Kubernetes auth", "DELETE", "sys/auth/kubernetes", "prod", None),
    ("overwrite prod's default policy", "PUT", "sys/policies/acl/default", "prod", {"policy": ""}),
    ("read another function's state", "GET", "chamberlain/data/rotate-secrets/x", "prod", None),
    ("revoke prod's leases", "PUT", "sys/leases/revoke-prefix/database", "prod", None),
]

# which probes a function's own step legitimately needs (everything else must be 403)
ALLOWED: dict[str, set[str]] = {
    "issue-secrets": {"read a prod secret value"},
    "issue-credentials": {"read a prod secret value"},
    "hand-over-bootstrap": {"read a prod secret value"},
    "rotate-secrets": {"read a prod secret value", "read another function's state"},
    "watch-leases": set(),
    "renew-lease": set(),
    "revoke-environment": {"delete an environment namespace", "revoke prod's leases"},
    "initialize-authority": {
        "write a function policy",
        "list root policies",
        "create a namespace",
        "list audit devices",
        "mint a function token",
        "reconfigure prod's Kubernetes auth",
    },
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_identity_is_refused_at_least_ten_operations_outside_its_step(
    lab: Lab, function: str
) -> None:
    token = lab.token(function)
    denied = [p for p in PROBES if p[0] not in ALLOWED[function]]
    assert len(denied) >= 10
    answers = {
        name: lab.call(token, method, path, namespace=ns, body=body)
        for name, method, path, ns, body in denied
    }
    wrong = {name: status for name, status in answers.items() if status != 403}
    assert wrong == {}, f"{function} was not refused: {wrong}"


def _ok(status: int) -> bool:
    return 200 <= status < 300


OwnCheck = Callable[[Lab, str], None]


def _issue_secrets(lab: Lab, token: str) -> None:
    kv = {"data": {"password": "z" * 24}}
    assert _ok(
        lab.call(token, "POST", "secret/data/platform-data/new/one", namespace="prod", body=kv)
    )
    policy = {"policy": 'path "secret/data/platform-data/new/one" { capabilities = ["read"] }'}
    path = "sys/policies/acl/chamberlain-consumer-payments-api"
    assert _ok(lab.call(token, "PUT", path, namespace="staging", body=policy))
    role = {
        "bound_service_account_names": ["api"],
        "bound_service_account_namespaces": ["payments"],
        "policies": ["chamberlain-consumer-payments-api"],
    }
    path = "auth/kubernetes/role/chamberlain-payments-api"
    assert _ok(lab.call(token, "POST", path, namespace="staging", body=role))
    assert _ok(lab.call(token, "GET", "sys/mounts", namespace="prod"))
    state = {"data": {"commit": "0" * 40}}
    path = "chamberlain/data/issue-secrets/applied"
    assert _ok(lab.call(token, "POST", path, namespace="prod", body=state))


def _initialize_authority(lab: Lab, token: str) -> None:
    assert lab.call(token, "GET", "sys/seal-status") == 200
    body = {"policy": 'path "prod/secret/metadata/*" { capabilities = ["list"] }'}
    assert _ok(lab.call(token, "PUT", f"sys/policies/acl/{policy_name('probe')}", body=body))
    assert _ok(lab.call(token, "DELETE", f"sys/policies/acl/{policy_name('probe')}"))
    assert lab.call(token, "LIST", "sys/namespaces") == 200
    assert lab.call(token, "GET", "sys/mounts", namespace="staging") == 200


def _hand_over_bootstrap(lab: Lab, token: str) -> None:
    body = {"options": {"cas": 0}, "data": {"password": "b" * 24}}
    path = "secret/data/platform-data/bootstrap/admin"
    assert _ok(lab.call(token, "POST", path, namespace="prod", body=body))
    assert lab.call(token, "GET", path, namespace="prod") == 200
    again = lab.call(token, "POST", path, namespace="prod", body=body)
    assert again == 400, "check-and-set 0 must refuse to overwrite"


def _rotate_secrets(lab: Lab, token: str) -> None:
    kv = {"data": {"password": "r" * 24}}
    assert _ok(lab.call(token, "POST", f"secret/data/{SECRET}", namespace="prod", body=kv))
    destroy = {"versions": [1]}
    assert _ok(lab.call(token, "PUT", f"secret/destroy/{SECRET}", namespace="prod", body=destroy))
    due = {"data": {"entries": {}}}
    assert _ok(
        lab.call(token, "POST", "chamberlain/data/rotate-secrets/due/0", namespace="prod", body=due)
    )


def _issue_credentials(lab: Lab, token: str) -> None:
    assert _ok(
        lab.call(
            token, "POST", "sys/mounts/database", namespace="staging", body={"type": "database"}
        )
    )
    assert lab.call(token, "GET", "sys/mounts", namespace="staging") == 200
    assert lab.call(token, "LIST", "database/roles", namespace="staging") in (200, 404)


def _watch_leases(lab: Lab, token: str) -> None:
    assert lab.call(token, "LIST", "sys/namespaces") == 200
    lookup = lab.call(token, "LIST", "sys/leases/lookup/database/creds/", namespace="prod")
    assert lookup in (200, 404)


def _renew_lease(lab: Lab, token: str) -> None:
    body = {"lease_id": "database/creds/app/unknown"}
    assert lab.call(token, "PUT", "sys/leases/renew", namespace="prod", body=body) == 400


def _revoke_environment(lab: Lab, token: str) -> None:
    assert _ok(lab.call(token, "PUT", "sys/leases/revoke-prefix/database", namespace="prod"))
    assert lab.call(token, "GET", "sys/namespaces/staging") == 200


OWN: dict[str, OwnCheck] = {
    "issue-secrets": _issue_secrets,
    "initialize-authority": _initialize_authority,
    "hand-over-bootstrap": _hand_over_bootstrap,
    "rotate-secrets": _rotate_secrets,
    "issue-credentials": _issue_credentials,
    "watch-leases": _watch_leases,
    "renew-lease": _renew_lease,
    "revoke-environment": _revoke_environment,
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_identity_can_do_its_own_step(lab: Lab, function: str) -> None:
    OWN[function](lab, lab.token(function))


def test_a_function_logs_in_with_its_service_account_and_only_that_one(lab: Lab) -> None:
    jwt = lab.kube.issue_token("chamberlain-system", "chamberlain-issue-secrets")
    anonymous = hvac.Client(url=lab.server.addr)
    login = anonymous.auth.kubernetes.login(policy_name("issue-secrets"), jwt, use_token=False)
    token = login["auth"]["client_token"]
    assert policy_name("issue-secrets") in login["auth"]["policies"]
    body = {"data": {"password": "k" * 24}}
    assert _ok(
        lab.call(token, "POST", "secret/data/platform-data/k8s/login", namespace="prod", body=body)
    )
    assert lab.call(token, "PUT", "sys/policies/acl/admin", body={"policy": ""}) == 403

    intruder = lab.kube.issue_token("chamberlain-system", "chamberlain-rotate-secrets")
    with pytest.raises(hvac.exceptions.Forbidden):
        anonymous.auth.kubernetes.login(policy_name("issue-secrets"), intruder, use_token=False)
