"""An ephemeral environment's whole life through the local runtime's broker, on real components.

The broker is the real :class:`~chamberlain.runtime.local.broker.Broker` reading the real
``knative/base`` Triggers (plus one capture Trigger set), every step is built by its registry
factory from the environment ``chamberlain up`` exports, and the authority is the embedded
OpenBao (dev mode: the initializer gets its identity, the root token is revoked). Intent lives
in a real git repository, the bootstrap admin login in a SOPS file in it, and leases are real
PostgreSQL roles. Deliveries run in the test's thread (no workers), so the order is the
broker's and nothing races.

preview created -> namespace configured -> the same intent as prod issued with other values
-> database credentials leased and working -> teardown (interrupted once after the lease
phase, finished by the broker's retry, then delivered again as a duplicate) -> nothing of the
preview is left, its PostgreSQL roles are gone, prod is exactly as it was.

Assertions read the authority as the functions' own identities (the only tokens there are).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import hvac
import pytest
import yaml
from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.authority import Authority
from chamberlain.identity import read_token
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.planner.leases import decode
from chamberlain.runtime.local.app import load_all_manifests
from chamberlain.runtime.local.authority import IDENTITY_DIR, start_authority
from chamberlain.runtime.local.broker import Broker, TimelineEntry
from chamberlain.runtime.local.store import DeliveryStore
from chamberlain.steps.base import Step
from chamberlain.steps.registry import STEP_FACTORIES, load_step
from chamberlain.steps.revoke_environment import RevokeEnvironment
from tests.harness.gitrepo import IntentRepo

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AGE_IDENTITY = ROOT / "examples" / "keys" / "example-age-identity.txt"
AGE_RECIPIENT = "age127cw7ngvptd9auqjknq8h6vj6gaa6nk4emug7slcn8gnyar6ea3qvzd0v9"
SECRETS = ("platform-data/billing/api", "platform-data/session-store/web")
CREDENTIAL = "platform-data/warehouse/reporting"
ADMIN_PATH = "platform-data/warehouse/database-engine"
CREATE = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
DROP = 'DROP ROLE IF EXISTS "{{name}}";'
CAPTURED = (
    T.SECRETS_ISSUED,
    "dev.chamberlain.credentials.issued.v1",
    T.ENVIRONMENT_REVOKED,
    T.AUTHORITY_INITIALIZED,
    T.HANDOVER_COMPLETED,
    T.STEP_FAILED,
)


def psql(sql: str, **variables: str) -> str:
    """``sql`` as the postgres superuser; variables passed with -v, read as :'name'."""
    args = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAX"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, "psql as postgres failed"
    return done.stdout.strip()


def drop_role(name: str) -> None:
    psql("select format('drop role if exists %I', :'role') \\gexec", role=name)


def role_exists(name: str) -> bool:
    return psql("select count(*) from pg_roles where rolname = :'role';", role=name) == "1"


def can_log_in(username: str, password: str) -> bool:
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", username, "-d", "postgres", "-tAX", "-c", "select 1"],
        env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == "1"


# ---- intent -------------------------------------------------------------------------------------


def sops_file(values: dict[str, str]) -> str:
    """A SOPS-age file for the example recipient (the example encrypter, standard format)."""
    spec = importlib.util.spec_from_file_location(
        "sops_encrypt", ROOT / "examples" / "keys" / "sops_encrypt.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = module.encrypt(values, AGE_RECIPIENT)
    return cast(str, yaml.dump(document, Dumper=module._Dumper, sort_keys=False, indent=4))


def intent_files(admin_user: str) -> dict[str, str]:
    secret = textwrap.dedent(
        """\
        apiVersion: chamberlain.dev/v1alpha1
        kind: SecretIntent
        metadata: {{name: {name}}}
        spec:
          path: {path}
          class: runtime
          owner: team-web
          purpose: Login of the {name} service
          consumers:
            - {{namespace: {name}, serviceAccount: api}}
          generate:
            password: {{type: password}}
            token: {{type: hex}}
        """
    )
    return {
        "environments.yaml": textwrap.dedent(
            """\
            apiVersion: chamberlain.dev/v1alpha1
            kind: Environment
            metadata: {name: prod}
            spec: {branch: main}
            ---
            apiVersion: chamberlain.dev/v1alpha1
            kind: Environment
            metadata: {name: preview}
            spec: {branch: main, ephemeral: true}
            """
        ),
        "authority.yaml": textwrap.dedent(
            f"""\
            apiVersion: chamberlain.dev/v1alpha1
            kind: AuthorityConfig
            metadata: {{name: authority}}
            spec:
              shares: 1
              threshold: 1
              recipients: [{AGE_RECIPIENT}]
            """
        ),
        "secrets/billing.yaml": secret.format(name="billing", path=SECRETS[0]),
        "secrets/session.yaml": secret.format(name="session-store", path=SECRETS[1]),
        "bootstrap/warehouse-admin.yaml": textwrap.dedent(
            f"""\
            apiVersion: chamberlain.dev/v1alpha1
            kind: BootstrapSecret
            metadata: {{name: warehouse-admin}}
            spec:
              path: {ADMIN_PATH}
              owner: team-platform
              purpose: Admin login the database engine creates short-lived roles with
              source:
                sops: {{file: bootstrap/warehouse-admin.enc.yaml, keys: [username, password]}}
            """
        ),
        "bootstrap/warehouse-admin.enc.yaml": sops_file(
            {"username": admin_user, "password": secrets.token_urlsafe(24)}
        ),
        "dynamic/reporting.yaml": textwrap.dedent(
            f"""\
            apiVersion: chamberlain.dev/v1alpha1
            kind: DynamicCredential
            metadata: {{name: reporting}}
            spec:
              path: {CREDENTIAL}
              owner: team-analytics
              purpose: Database access for the reporting jobs
              engine: database
              database:
                plugin: postgresql-database-plugin
                connectionUrl: postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:5432/postgres?sslmode=disable
                adminSecret: warehouse-admin
              roles:
                - name: reader
                  ttl: 1h
                  maxTtl: 24h
                  creationStatements: [{json.dumps(CREATE)}]
                  revocationStatements: [{json.dumps(DROP)}]
              consumers:
                - {{namespace: analytics, serviceAccount: reporting}}
            """
        ),
    }


# ---- the runtime --------------------------------------------------------------------------------


class LazyStep:
    """A function built on its first delivery, as a Knative pod is: a factory that fails
    (e.g. its identity does not exist before the first converge) fails that delivery (500),
    which the broker retries. (`chamberlain up` builds every step at start instead.)"""

    def __init__(self, name: str) -> None:
        self.name = name
        self.step: Step | None = None

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        if self.step is None:
            self.step = load_step(self.name)
        return self.step(event)


CAPTURE_TRIGGERS = "\n---\n".join(
    textwrap.dedent(
        f"""\
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {{name: capture-{i}}}
        spec:
          broker: default
          filter: {{attributes: {{type: {type_}}}}}
          subscriber: {{ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: capture}}}}
        """
    )
    for i, type_ in enumerate(CAPTURED)
)


@dataclass
class Runtime:
    """What `chamberlain up` assembles, driven from the test's thread."""

    broker: Broker
    addr: str
    identities: Path
    captured: list[BaseCloudEvent] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    usernames: set[str] = field(default_factory=set, repr=False)  # dropped at the end

    def publish(self, type_: str, data: dict[str, Any], *, id_: str) -> None:
        event = make_event(
            type_, data, source="/test/platform", subject=data["environment"], id_=id_
        )
        self.broker.publish(event, origin="test")
        assert self.broker.run_until_idle(timeout=120), "deliveries still pending"

    def replies(self, type_: str, environment: str | None = None) -> list[dict[str, Any]]:
        found = []
        for event in self.captured:
            data = event.get_data()
            if event.get_type() != type_ or not isinstance(data, dict):
                continue
            if environment is None or data.get("environment") == environment:
                found.append(data)
        return found

    def story(self) -> str:
        """The broker's timeline (routing facts and redacted errors), for failure messages."""
        return "\n".join(
            f"{e.kind:11} {e.event_type:45} {e.function or '':22} {e.status or ''} {e.detail}"
            for e in self.timeline
        )

    def as_function(self, function: str, namespace: str | None = None) -> Authority:
        token = read_token(self.identities, function)
        assert token, f"no identity for {function}"
        return Authority.connect(self.addr, token, namespace=namespace)


@pytest.fixture
def admin_role() -> Iterator[str]:
    """A database admin for the engine (not `postgres`: an admin name must not be a word of
    any path, since every bootstrap value is redacted wherever it appears)."""
    name = f"cbl_admin_{secrets.token_hex(4)}"
    psql("select format('create role %I with login superuser', :'role') \\gexec", role=name)
    yield name
    drop_role(name)


@pytest.fixture
def runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, intent_repo: IntentRepo, admin_role: str
) -> Iterator[Runtime]:
    intent_repo.commit_and_push(intent_files(admin_role), "intent")
    state = tmp_path / "state"
    identities = state / IDENTITY_DIR
    authority = start_authority(state, dev=True, identities=identities)
    env = {
        "CHAMBERLAIN_RUNTIME": "local",
        "CHAMBERLAIN_AUTHORITY_ADDR": authority.addr,
        "CHAMBERLAIN_IDENTITY_DIR": str(identities),
        "CHAMBERLAIN_SHARE_DIR": str(state / "unseal-shares"),
        "CHAMBERLAIN_KV_MOUNT": "secret",
        "CHAMBERLAIN_STATE_DIR": str(state),
        "CHAMBERLAIN_INTENT_REPO": intent_repo.url,
        "CHAMBERLAIN_INTENT_BRANCH": "main",
        "CHAMBERLAIN_CACHE_DIR": str(tmp_path / "cache"),
        "CHAMBERLAIN_SOPS_IDENTITY_FILE": str(AGE_IDENTITY),
    }
    for name in (
        "CHAMBERLAIN_AUTHORITY_TOKEN",
        "CHAMBERLAIN_AUTHORITY_STATE",
        "K_SINK",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = tmp_path / "capture"
    extra.mkdir()
    (extra / "triggers.yaml").write_text(CAPTURE_TRIGGERS, encoding="utf-8")
    (extra / "kustomization.yaml").write_text("resources:\n  - triggers.yaml\n", encoding="utf-8")
    manifests = load_all_manifests(ROOT / "knative" / "base", [extra])
    steps: dict[str, Step] = {name: LazyStep(name) for name in STEP_FACTORIES}
    steps["revoke-environment"] = load_step("revoke-environment")
    captured: list[BaseCloudEvent] = []

    def capture(event: BaseCloudEvent) -> None:
        captured.append(event)

    timeline: list[TimelineEntry] = []
    store = DeliveryStore(tmp_path / "broker.sqlite")
    broker = Broker(manifests, store, {**steps, "capture": capture}, on_timeline=timeline.append)
    made = Runtime(broker, authority.addr, identities, captured, timeline)
    try:
        yield made
    finally:
        store.close()
        authority.stop()  # prod's lease dies with the in-memory server: drop its role too
        for name in made.usernames:
            drop_role(name)


# ---- observations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """One environment as a consumer would notice it (values compared, never printed)."""

    versions: dict[str, int]
    values: dict[str, dict[str, str]] = field(repr=False)
    leases: list[str]
    username: str = field(repr=False)
    password: str = field(repr=False)


def snapshot(rt: Runtime, namespace: str) -> Snapshot:
    reader = rt.as_function("issue-secrets", namespace)
    versions: dict[str, int] = {}
    values: dict[str, dict[str, str]] = {}
    for path in (*SECRETS, CREDENTIAL):
        current = reader.read_secret(path)
        assert current is not None, f"{path} missing in {namespace}\n{rt.story()}"
        versions[path] = current.version
        values[path] = current.data
    meta = reader.read_metadata(CREDENTIAL)
    assert meta is not None
    leases = sorted(r.lease_id for r in decode(meta.custom_metadata).records.values())
    credential = values[CREDENTIAL]
    rt.usernames.add(credential["username"])
    return Snapshot(versions, values, leases, credential["username"], credential["password"])


def live_leases(rt: Runtime, namespace: str) -> list[str]:
    return sorted(rt.as_function("watch-leases", namespace).list_leases("database"))


def namespaces(rt: Runtime) -> list[str]:
    return rt.as_function("watch-leases").list_namespaces()


def root_policies_mentioning(rt: Runtime, name: str) -> list[str]:
    """Function policies (the root namespace's, read as the initializer) that still grant
    paths in namespace ``name``."""
    reader = hvac.Client(url=rt.addr, token=read_token(rt.identities, "initialize-authority"))
    names = reader.sys.list_acl_policies()["data"]["keys"]
    found = []
    for policy in (n for n in names if n.startswith("chamberlain-fn-")):
        text = reader.sys.read_acl_policy(policy)["data"]["policy"]
        if f'"{name}/' in text or f'/{name}"' in text:
            found.append(policy)
    return found


# ---- the test -----------------------------------------------------------------------------------


def test_preview_environment_lives_and_dies_without_touching_prod(runtime: Runtime) -> None:
    rt = runtime
    cluster = {"kubernetes": None, "cluster": None}
    rt.publish(
        T.CLUSTER_CREATED, {"environment": "prod", "ephemeral": False, **cluster}, id_="prod-1"
    )
    prod = snapshot(rt, "prod")
    assert can_log_in(prod.username, prod.password)

    # 1. a preview cluster appears: its namespace is configured, the same intent is issued
    rt.publish(
        T.CLUSTER_CREATED,
        {"environment": "preview-42", "ephemeral": True, **cluster, "cluster": "pr-42"},
        id_="preview-42-created",
    )
    assert "preview-42" in namespaces(rt)
    assert rt.replies(T.SECRETS_ISSUED), "issue-secrets never issued anything"
    preview = snapshot(rt, "preview-42")
    assert set(preview.versions) == set(prod.versions)
    for path in (*SECRETS, CREDENTIAL):
        shared = {k for k, v in preview.values[path].items() if prod.values[path].get(k) == v}
        assert not shared, f"{path}: preview shares values of keys {sorted(shared)} with prod"
    assert can_log_in(preview.username, preview.password), "preview credential does not work"
    assert live_leases(rt, "preview-42") == preview.leases and preview.leases

    # 2. teardown; the first attempt dies after the lease phase, the broker redelivers
    step = rt.broker._steps["revoke-environment"]  # the registry-built step
    assert isinstance(step, RevokeEnvironment)
    crashes: list[str] = []

    def crash_once(environment: str) -> None:
        crashes.append(environment)
        if len(crashes) == 1:
            raise RuntimeError("killed between lease revocation and secret removal")

    step.after_lease_revocation = crash_once
    teardown = {"environment": "preview-42", "reason": "pull request 42 closed"}
    rt.publish(T.ENVIRONMENT_TEARDOWN, teardown, id_="teardown-42")
    assert crashes == ["preview-42", "preview-42"]
    assert any(e.kind == "retry" and e.function == "revoke-environment" for e in rt.timeline), (
        "the interrupted attempt was not retried by the broker"
    )
    [report] = rt.replies(T.ENVIRONMENT_REVOKED, "preview-42")
    assert report == {
        "environment": "preview-42",
        "leasesRevoked": len(preview.leases),
        "secretsDestroyed": len(SECRETS) + 2,  # + the credential and the handed-over admin
        "identitiesRemoved": 2 * 3,  # a policy and a role per consumer
        "namespaceDeleted": True,
        "failures": [],
    }

    # 3. nothing of the preview is left; its database roles are gone
    assert "preview-42" not in namespaces(rt)
    assert not role_exists(preview.username)
    assert not can_log_in(preview.username, preview.password)

    # 4. a duplicate teardown is acknowledged and changes nothing
    rt.publish(T.ENVIRONMENT_TEARDOWN, teardown, id_="teardown-42-again")
    assert len(rt.replies(T.ENVIRONMENT_REVOKED)) == 1
    assert not rt.broker.dead_letters()

    # 5. prod is exactly as it was: same versions, same live leases, working credential
    after = snapshot(rt, "prod")
    assert after.versions == prod.versions
    assert after.values == prod.values
    assert after.leases == prod.leases == live_leases(rt, "prod")
    assert role_exists(prod.username) and can_log_in(prod.username, prod.password)

    # 6. the next converge (every `up` start announces its cluster) drops the preview from
    # the function policies: no identity can reach a namespace of that name any more
    assert root_policies_mentioning(rt, "preview-42")
    rt.publish(
        T.CLUSTER_CREATED, {"environment": "prod", "ephemeral": False, **cluster}, id_="prod-2"
    )
    assert root_policies_mentioning(rt, "preview-42") == []
    assert snapshot(rt, "prod").versions == prod.versions
