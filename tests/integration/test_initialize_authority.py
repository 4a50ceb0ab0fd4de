"""initialize-authority against a real raft OpenBao: from nothing to configured by one event.

One raft server serves the whole module (its ``sys/init`` costs ~10 s); the tests run in file
order and each leaves the server unsealed. The intent repository is real git, the "clusters"
are the fake Kubernetes API, the unseal shares are opened with the real ``age`` CLI, and the
``authority.sealed`` event is caught by a tiny real HTTP sink.
"""

from __future__ import annotations

import json
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters import agecrypt, bao_server
from chamberlain.adapters.authority_admin import generate_root
from chamberlain.adapters.bao_server import BaoServer
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event, parse_http
from chamberlain.planner.function_policies import FUNCTIONS, policy_name
from chamberlain.runtime.local.authority import start_raft_with_break_glass
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.initialize_authority import build
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.gitrepo import IntentRepo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FUNCTION = "initialize-authority"


def authority_yaml(recipients: list[str], audit: Path | None) -> str:
    audit_block = f"\n  audit:\n    path: {audit}" if audit else ""
    listed = "".join(f"\n    - {r}" for r in recipients)
    return (
        "apiVersion: chamberlain.dev/v1alpha1\nkind: AuthorityConfig\n"
        "metadata:\n  name: authority\nspec:\n  shares: 3\n  threshold: 2\n"
        f"  recipients:{listed}{audit_block}\n"
    )


ENVIRONMENTS = """\
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec: {namespace: prod}
---
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec: {}
---
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: preview}
spec: {ephemeral: true}
"""


class Sink:
    """A real HTTP endpoint standing in for K_SINK; keeps every CloudEvent posted to it."""

    def __init__(self) -> None:
        self.events: list[BaseCloudEvent] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.events.append(parse_http(dict(self.headers.items()), body))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    root: Path
    server: BaoServer
    kube: FakeKubeApi
    repo: IntentRepo
    env: dict[str, str]
    identity_file: Path
    sink: Sink
    root_tokens: list[str] = field(default_factory=list)

    @property
    def shares_dir(self) -> Path:
        return Path(self.env["CHAMBERLAIN_SHARE_DIR"])

    @property
    def identities(self) -> Path:
        return Path(self.env["CHAMBERLAIN_IDENTITY_DIR"])

    def step(self, *, unseal: bool = False) -> Any:
        env = dict(self.env)
        if unseal:
            env["CHAMBERLAIN_UNSEAL_IDENTITY_FILE"] = str(self.identity_file)
        return build(env)

    def created(self, environment: str = "prod", **extra: Any) -> BaseCloudEvent:
        data = {
            "environment": environment,
            "ephemeral": False,
            "kubernetes": {"host": self.kube.host, "caCert": self.kube.ca_pem},
            "cluster": environment,
            **extra,
        }
        return make_event(T.CLUSTER_CREATED, data, source="/test/clusters")

    def token_of(self, function: str) -> str:
        return (self.identities / f"{function}.token").read_text().strip()

    def as_function(self, function: str, namespace: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.server.addr, token=self.token_of(function), namespace=namespace)

    def seal_status(self) -> dict[str, Any]:
        status: dict[str, Any] = hvac.Client(url=self.server.addr).sys.read_seal_status()
        return status

    def age_open(self, index: int) -> str:
        """Open one stored share with the real age CLI and the test's identity."""
        result = subprocess.run(
            [
                "age",
                "-d",
                "-i",
                str(self.identity_file),
                str(self.shares_dir / f"share-{index}.age"),
            ],
            capture_output=True,
            check=True,
        )
        return result.stdout.decode().strip()

    def fresh_root(self) -> hvac.Client:
        """A root token made from the shares (as an operator would), revoked by the caller."""
        token = generate_root(self.server.addr, [self.age_open(0), self.age_open(2)])
        return hvac.Client(url=self.server.addr, token=token)

    def audit_offset(self) -> int:
        return len(self.server.audit_log.read_bytes()) if self.server.audit_log else 0

    def audited_operations(self, since: int) -> list[str]:
        assert self.server.audit_log is not None
        text = self.server.audit_log.read_bytes()[since:].decode()
        ops = []
        for line in text.splitlines():
            entry = json.loads(line)
            if entry.get("type") == "request":
                ops.append(f"{entry['request']['operation']} {entry['request']['path']}")
        return ops


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("initialize-authority")
    mine, my_recipient = agecrypt.generate_identity()
    _other, other_recipient = agecrypt.generate_identity()
    identity_file = root / "operator-identity.txt"
    identity_file.write_text(f"# test operator\n{mine}\n")
    repo = IntentRepo(root / "intent")
    workdir = root / "openbao"
    audit = workdir / "audit.log"
    repo.commit_and_push(
        {
            "authority.yaml": authority_yaml([my_recipient, other_recipient], audit),
            "environments.yaml": ENVIRONMENTS,
        },
        "intent",
    )
    kube = FakeKubeApi().start()
    ca_file = root / "system-ca.pem"
    ca_file.write_text(kube.ca_pem)
    # the break-glass listener option lets a quorum of shares mint a root token (recovery)
    server = start_raft_with_break_glass(workdir, audit_log=audit)
    sink = Sink()
    env = {
        "CHAMBERLAIN_AUTHORITY_ADDR": server.addr,
        "CHAMBERLAIN_INTENT_REPO": repo.url,
        "CHAMBERLAIN_CACHE_DIR": str(root / "cache"),
        "CHAMBERLAIN_SHARE_DIR": str(root / "state" / "unseal-shares"),
        "CHAMBERLAIN_IDENTITY_DIR": str(root / "state" / "identities"),
        "CHAMBERLAIN_SYSTEM_KUBERNETES_HOST": kube.host,
        "CHAMBERLAIN_SYSTEM_KUBERNETES_CA_FILE": str(ca_file),
        "K_SINK": sink.url,
    }
    world = World(root, server, kube, repo, env, identity_file, sink)
    real_initialize = bao_server.initialize

    def recording_initialize(target: Any, shares: int, threshold: int) -> tuple[list[str], str]:
        keys, token = real_initialize(target, shares, threshold)
        world.root_tokens.append(token)  # kept by the test only, to prove it was revoked
        return keys, token

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bao_server, "initialize", recording_initialize)
        try:
            yield world
        finally:
            server.stop()
            kube.stop()
            sink.stop()


def test_one_cluster_created_initializes_unseals_and_configures(world: World) -> None:
    assert world.seal_status()["initialized"] is False
    step = world.step()

    reply = step(world.created("prod"))

    assert reply is not None and reply.get_type() == T.AUTHORITY_INITIALIZED
    data = reply.get_data()
    assert data["initialized"] is True and data["rootTokenRevoked"] is True
    assert sorted(data["namespaces"]) == ["prod", "staging"]
    status = world.seal_status()
    assert status["initialized"] is True and status["sealed"] is False
    assert (status["t"], status["n"]) == (2, 3)

    # the root token of sys/init no longer works
    [root_token] = world.root_tokens
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=world.server.addr, token=root_token).sys.list_mounted_secrets_engines()

    # namespaces, owned and configured; the event's cluster is prod's auth backend
    initializer = world.as_function(FUNCTION)
    listed = initializer.sys.list_namespaces()["data"]["key_info"]
    for name in ("prod", "staging"):
        assert listed[f"{name}/"]["custom_metadata"]["managed-by"] == "chamberlain"
        inside = world.as_function(FUNCTION, namespace=name)
        mounts = inside.sys.list_mounted_secrets_engines()["data"]
        for mount in ("secret/", "chamberlain/"):
            assert mounts[mount]["type"] == "kv" and mounts[mount]["options"]["version"] == "2"
            assert mounts[mount]["description"] == "managed by chamberlain"
        assert inside.sys.list_auth_methods()["data"]["kubernetes/"]["type"] == "kubernetes"
    prod = world.as_function(FUNCTION, namespace="prod")
    config = prod.read("auth/kubernetes/config")["data"]
    assert config["kubernetes_host"] == world.kube.host
    assert "preview" not in {k.rstrip("/") for k in listed}, "a template is not a namespace"

    # one policy and one identity per function, in the root namespace
    policies = set(initializer.sys.list_acl_policies()["data"]["keys"])
    assert {policy_name(f) for f in FUNCTIONS} <= policies
    roles = set(initializer.list("auth/kubernetes/role")["data"]["keys"])
    assert roles == {policy_name(f) for f in FUNCTIONS}
    for function in FUNCTIONS:
        token_file = world.identities / f"{function}.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        me = world.as_function(function).auth.token.lookup_self()["data"]
        assert policy_name(function) in me["policies"] and "root" not in me["policies"]

    # shares: only ciphertext, one file per share, each to its recipient
    files = sorted(p.name for p in world.shares_dir.iterdir())
    assert files == ["share-0.age", "share-1.age", "share-2.age"]
    for path in world.shares_dir.iterdir():
        assert path.read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_second_delivery_changes_nothing(world: World) -> None:
    step = world.step()
    before = world.audit_offset()

    reply = step(world.created("prod"))

    assert reply is not None
    data = reply.get_data()
    assert data["initialized"] is False and data["changes"] == []
    assert data["configured"]["changes"] == 0
    assert step.last_calls["write"] == 0 and step.last_calls["delete"] == 0
    assert step.last_calls["read"] > 0, "a converge must look before deciding nothing changed"
    writes = [op for op in world.audited_operations(before) if not op.startswith(("read", "list"))]
    assert writes == [], writes


def test_shares_open_with_the_age_cli_and_unseal_after_a_restart(world: World) -> None:
    world.server.restart()
    assert world.seal_status()["sealed"] is True

    # shares 0 and 2 are encrypted to the test's recipient, share 1 to the other one
    keys = [world.age_open(0), world.age_open(2)]
    refused = subprocess.run(
        ["age", "-d", "-i", str(world.identity_file), str(world.shares_dir / "share-1.age")],
        capture_output=True,
    )
    assert refused.returncode != 0
    bao_server.unseal(world.server.addr, keys)

    assert world.seal_status()["sealed"] is False
    me = world.as_function("issue-secrets").auth.token.lookup_self()["data"]
    assert policy_name("issue-secrets") in me["policies"]


def test_sealed_without_unseal_identity_answers_503_and_emits_sealed(world: World) -> None:
    world.server.restart()
    world.sink.events.clear()

    outcome = invoke(world.step(), world.created("prod"), function=FUNCTION)

    assert outcome.status == 503 and outcome.retryable
    assert world.seal_status()["sealed"] is True
    [sealed] = world.sink.events
    assert sealed.get_type() == T.AUTHORITY_SEALED
    assert sealed.get_data()["addr"] == world.server.addr
    assert "no unseal identity" in sealed.get_data()["reason"]


def test_with_the_unseal_identity_a_delivery_unseals_by_itself(world: World) -> None:
    assert world.seal_status()["sealed"] is True  # left sealed by the previous test
    world.sink.events.clear()

    reply = world.step(unseal=True)(world.created("prod"))

    assert reply is not None
    assert reply.get_data()["unsealed"] is True
    assert reply.get_data()["changes"] == []
    assert world.seal_status()["sealed"] is False
    assert world.sink.events == []


def test_drift_is_restored_and_what_chamberlain_does_not_own_survives(world: World) -> None:
    root = world.fresh_root()
    # behind chamberlain's back: a function policy edited, a function role deleted, plus
    # things chamberlain does not own (a hand-made policy, a consumer policy, a namespace)
    tampered = policy_name("issue-secrets")
    root.sys.create_or_update_acl_policy(tampered, 'path "*" { capabilities = ["sudo"] }')
    root.delete("auth/kubernetes/role/" + policy_name("rotate-secrets"))
    root.sys.create_or_update_acl_policy("team-hand-made", 'path "x/*" { capabilities = ["read"] }')
    inside = hvac.Client(url=world.server.addr, token=root.token, namespace="prod")
    inside.sys.create_or_update_acl_policy(
        "chamberlain-consumer-payments-api", 'path "secret/data/x" { capabilities = ["read"] }'
    )
    root.sys.create_namespace("qa")  # made by hand, before intent declares it
    world.repo.commit_and_push(
        {
            "qa.yaml": "apiVersion: chamberlain.dev/v1alpha1\nkind: Environment\n"
            "metadata: {name: qa}\nspec: {}\n"
        },
        "declare qa",
    )
    try:
        reply = world.step()(world.created("staging", kubernetes=None))

        assert reply is not None
        changes = reply.get_data()["changes"]
        assert f"write policy {tampered}" in changes
        assert f"write role auth/kubernetes/role/{policy_name('rotate-secrets')}" in changes
        restored = root.sys.read_acl_policy(tampered)["data"]["policy"]
        assert 'path "*"' not in restored and 'path "prod/secret/data/*"' in restored
        role = root.read("auth/kubernetes/role/" + policy_name("rotate-secrets"))["data"]
        assert role["bound_service_account_names"] == ["chamberlain-rotate-secrets"]
        assert root.sys.read_acl_policy("team-hand-made")["data"]["policy"].startswith('path "x/*"')
        assert inside.sys.read_acl_policy("chamberlain-consumer-payments-api")
        # qa exists but is not chamberlain's: reported, nothing mounted in it
        assert any("'qa'" in w and "not managed" in w for w in reply.get_data()["warnings"])
        qa = hvac.Client(url=world.server.addr, token=root.token, namespace="qa")
        assert "secret/" not in qa.sys.list_mounted_secrets_engines()["data"]
        # prod's auth config was left as the prod event set it (this event was for staging)
        prod = hvac.Client(url=world.server.addr, token=root.token, namespace="prod")
        assert prod.read("auth/kubernetes/config")["data"]["kubernetes_host"] == world.kube.host
    finally:
        root.auth.token.revoke_self()
        world.repo.commit_and_push({"qa.yaml": None}, "drop qa")


def test_a_labelled_namespace_event_creates_an_ephemeral_instance(world: World) -> None:
    step = world.step()
    unlabelled = make_event(
        T.APISERVER_ADD,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-public"}},
        source="https://10.96.0.1:443",
    )
    assert step(unlabelled) is None

    labelled = make_event(
        T.APISERVER_ADD,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "preview-7",
                "labels": {
                    "chamberlain.dev/environment": "preview-7",
                    "chamberlain.dev/ephemeral": "true",
                },
                "annotations": {
                    "chamberlain.dev/kubernetes-host": world.kube.host,
                    "chamberlain.dev/kubernetes-ca": world.kube.ca_pem,
                },
            },
        },
        source="https://10.96.0.1:443",
    )
    reply = step(labelled)

    assert reply is not None
    assert "preview-7" in reply.get_data()["namespaces"]
    meta = world.as_function(FUNCTION).sys.list_namespaces()["data"]["key_info"]["preview-7/"]
    assert meta["custom_metadata"] == {
        "managed-by": "chamberlain",
        "environment": "preview-7",
        "ephemeral": "true",
    }
    issuer = world.as_function("issue-secrets", namespace="preview-7")
    issuer.secrets.kv.v2.create_or_update_secret("platform-data/x/y", secret={"k": "v" * 20})
    # a later event for another environment keeps the live instance configured
    again = step(world.created("prod"))
    assert again is not None and "preview-7" in again.get_data()["namespaces"]
    assert again.get_data()["changes"] == []


def test_a_lost_initializer_identity_is_recovered_from_the_shares(world: World) -> None:
    own = world.identities / f"{FUNCTION}.token"
    old = own.read_text().strip()
    own.unlink()

    without = invoke(world.step(), world.created("prod"), function=FUNCTION)
    assert without.status == 503 and "generate-root" in (without.error or "")

    reply = world.step(unseal=True)(world.created("prod"))

    assert reply is not None and reply.get_data()["rootTokenRevoked"] is True
    new = own.read_text().strip()
    assert new and new != old
    assert (
        policy_name(FUNCTION)
        in world.as_function(FUNCTION).auth.token.lookup_self()["data"]["policies"]
    )


def test_invalid_intent_is_refused_with_422_and_an_intent_rejected_reply(
    world: World, tmp_path: Path
) -> None:
    bad = IntentRepo(tmp_path / "bad")
    bad.commit_and_push(
        {
            "authority.yaml": "apiVersion: chamberlain.dev/v1alpha1\nkind: AuthorityConfig\n"
            "metadata: {name: a}\nspec: {shares: 1}\n"
        },
        "bad",
    )
    step = build({**world.env, "CHAMBERLAIN_INTENT_REPO": bad.url})
    before = world.audit_offset()

    outcome = invoke(step, world.created("prod"), function=FUNCTION)

    assert outcome.status == 422 and not outcome.retryable
    assert outcome.reply is not None and outcome.reply.get_type() == T.INTENT_REJECTED
    assert world.audited_operations(before) == []
