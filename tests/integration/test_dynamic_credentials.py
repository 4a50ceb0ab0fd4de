"""issue-credentials on real OpenBao and real PostgreSQL: DynamicCredentials become a configured
database engine and leased logins in KV that really log in.

Login is proven with the psql CLI (password in ``PGPASSWORD``, never in argv) and by the role's
presence in ``pg_roles``: the test PostgreSQL trusts 127.0.0.1, so "can log in" means the role
the engine created exists with LOGIN. No value is ever printed or asserted on in a message.

:class:`Lab` (one database per test, the intent committed and pushed, a controllable clock) is
shared with ``test_leases.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import hvac
import pytest
from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.intent_source import IntentSource
from chamberlain.logs import contains_secret
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event, validate_event
from chamberlain.planner.leases import decode
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.base import TransientError
from chamberlain.steps.intent_loading import IntentLoader
from chamberlain.steps.issue_credentials import (
    CREDENTIALS_ISSUED,
    IssueCredentials,
    Propagate,
    PropagationRequest,
    kube_propagator,
)
from chamberlain.steps.renew_lease import RenewLease
from chamberlain.steps.watch_leases import Emit, EnvironmentDirectory, WatchLeases
from tests.harness.environments import ConfiguredEnv

pytestmark = pytest.mark.integration

ADMIN_PATH = "platform-data/warehouse/database-engine"
REPORTING = "platform-data/warehouse/reporting"
AUDIT = "platform-data/warehouse/audit"
PG_HOST = "127.0.0.1"


# ---- PostgreSQL -----------------------------------------------------------------------------


def psql_admin(sql: str, *, database: str = "postgres", **variables: str) -> str:
    """Run ``sql`` as the postgres superuser (variables passed with -v, read as :'name')."""
    args = [
        "psql",
        "-h",
        PG_HOST,
        "-U",
        "postgres",
        "-d",
        database,
        "-tAX",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"psql as postgres failed (exit {done.returncode})"
    return done.stdout.strip()


def can_log_in(username: str, password: str, database: str) -> bool:
    """Whether ``username`` can open a session and run SELECT 1."""
    done = subprocess.run(
        ["psql", "-h", PG_HOST, "-U", username, "-d", database, "-tAX", "-c", "select 1"],
        env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == "1"


def role_exists(username: str) -> bool:
    found = psql_admin("select count(*) from pg_roles where rolname = :'role';", role=username)
    return found == "1"


# ---- intent ---------------------------------------------------------------------------------

BOOTSTRAP_YAML = f"""\
apiVersion: chamberlain.dev/v1alpha1
kind: BootstrapSecret
metadata: {{name: postgres-admin}}
spec:
  path: {ADMIN_PATH}
  owner: team-platform
  purpose: Admin login the database engine uses to create short-lived roles
  source:
    kubernetesSecret: {{namespace: chamberlain, name: postgres-admin, keys: [username, password]}}
"""


DYNAMIC_YAML = """\
apiVersion: chamberlain.dev/v1alpha1
kind: DynamicCredential
metadata: {name: NAME}
spec:
  path: PATH
  owner: team-analytics
  purpose: Database access for the reporting jobs
  engine: database
  environments: [prod]
  database:
    plugin: postgresql-database-plugin
    connectionUrl: postgresql://{{username}}:{{password}}@HOST:5432/DATABASE?sslmode=disable
    adminSecret: postgres-admin
  roles:
    - name: reader
      ttl: TTL
      maxTtl: MAXTTL
      creationStatements:
        - CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
      revocationStatements:
        - DROP ROLE IF EXISTS "{{name}}";
  consumers:
    - namespace: analytics
      serviceAccount: reporting
      externalSecret: NAME
      workloads: [{kind: Deployment, name: NAME-worker}]
"""


def dynamic_credential(
    name: str, path: str, database: str, *, ttl: str = "1m", max_ttl: str = "2m"
) -> str:
    """A one-role DynamicCredential for prod (YAML text)."""
    replacements = {
        "NAME": name,
        "PATH": path,
        "HOST": PG_HOST,
        "DATABASE": database,
        "MAXTTL": max_ttl,
        "TTL": ttl,
    }
    text = DYNAMIC_YAML
    for token, value in replacements.items():
        text = text.replace(token, value)
    return text


# ---- the lab --------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """Real time shifted by ``offset``: tests move forward without waiting."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Lab:
    env: ConfiguredEnv
    database: str
    admin_role: str = ""
    admin_password: str = field(default="", repr=False)
    commit: str = ""
    clock: FakeClock = field(default_factory=FakeClock)
    propagated: list[PropagationRequest] = field(default_factory=list)
    _kube: Propagate | None = field(default=None, repr=False)

    def authority(self, environment: str = "prod") -> Authority:
        return self.env.authority(environment)

    def _root(self) -> Authority:
        return Authority.connect(self.env.bao.addr, self.env.bao.token, namespace=self.env.base)

    def _loader(self) -> IntentLoader:
        return IntentLoader(IntentSource(self.env.cache_dir))

    def directory(self) -> EnvironmentDirectory:
        return EnvironmentDirectory(
            self._loader(), intent_repo=self.env.repo.url, base_namespace=self.env.base
        )

    def nudge(self, request: PropagationRequest) -> object:
        """The real propagation, against the fake API server; every request is recorded."""
        self.propagated.append(request)
        if self._kube is None:
            token = self.env.kube.issue_token("chamberlain", "renew-lease")
            self._kube = kube_propagator(self.env.kube.api_client(token))
        return self._kube(request)

    def seed_consumers(self, name: str = "reporting-db") -> None:
        """The ExternalSecret and Deployment the credential's consumer declares."""
        self.env.kube.seed(
            {
                "apiVersion": "external-secrets.io/v1beta1",
                "kind": "ExternalSecret",
                "metadata": {"name": name, "namespace": "analytics"},
                "spec": {"refreshInterval": "1h", "target": {"name": name}},
            }
        )
        self.env.kube.seed(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"{name}-worker", "namespace": "analytics"},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
                    },
                },
            }
        )

    def nudges(self) -> list[tuple[str, str]]:
        """(plural, name) of every successful PATCH the fake API server received."""
        return [
            (e.ref.plural, e.ref.name or "")
            for e in self.env.kube.journal.entries()
            if e.method == "PATCH" and e.ref is not None and 200 <= e.status < 300
        ]

    def issue_step(self) -> IssueCredentials:
        return IssueCredentials(
            self._root(),
            self._loader(),
            intent_repo=self.env.repo.url,
            base_namespace=self.env.base,
            propagate=self.nudge,
            clock=self.clock,
        )

    def watch_step(self, emit: Emit | None = None) -> WatchLeases:
        return WatchLeases(self._root(), self.directory(), emit=emit, clock=self.clock)

    def renew_step(self, overlap_s: float = 20) -> RenewLease:
        return RenewLease(
            self._root(),
            self.directory(),
            propagate=self.nudge,
            clock=self.clock,
            overlap=timedelta(seconds=overlap_s),
        )

    def hand_over(self, environment: str = "prod") -> None:
        """What hand-over-bootstrap leaves behind: the admin login at its path."""
        admin = {"username": self.admin_role, "password": self.admin_password}
        # raw hvac, so that the test itself registers nothing for redaction
        namespace = f"{self.env.base}/{environment}"
        client = hvac.Client(url=self.env.bao.addr, token=self.env.bao.token, namespace=namespace)
        client.secrets.kv.v2.create_or_update_secret(
            ADMIN_PATH, secret=admin, cas=0, mount_point="secret"
        )

    def handover_event(self, environment: str = "prod") -> BaseCloudEvent:
        data = {
            "environment": environment,
            "path": ADMIN_PATH,
            "source": "kubernetes:chamberlain/postgres-admin",
            "version": 1,
            "commit": self.commit,
        }
        return make_event(T.HANDOVER_COMPLETED, data, source="/chamberlain/hand-over-bootstrap")

    def secrets_issued_event(self, environment: str = "prod") -> BaseCloudEvent:
        item = {
            "environment": environment,
            "commit": self.commit,
            "status": "applied",
            "created": 0,
            "updated": 0,
            "retired": 0,
            "unchanged": 0,
            "drifted": [],
            "paths": {"created": [], "updated": [], "retired": []},
        }
        data = {"trigger": "push", "commit": self.commit, "environments": [item]}
        return make_event(T.SECRETS_ISSUED, data, source="/chamberlain/issue-secrets")

    def login(self, path: str, version: int | None = None) -> tuple[str, str]:
        found = self.authority().read_secret(path, version=version)
        assert found is not None, f"no readable credential at {path} (version {version})"
        return found.data["username"], found.data["password"]

    def works(self, login: tuple[str, str]) -> bool:
        return can_log_in(login[0], login[1], self.database)

    def leases(self, path: str) -> Any:
        metadata = self.authority().read_metadata(path)
        assert metadata is not None
        return decode(metadata.custom_metadata)

    def version(self, path: str) -> int:
        metadata = self.authority().read_metadata(path)
        return metadata.current_version if metadata is not None else 0


@contextlib.contextmanager
def open_lab(env: ConfiguredEnv, documents: dict[str, str] | None = None) -> Iterator[Lab]:
    """A fresh database and an intent declaring credentials on it, pushed; cleaned up after."""
    database = f"chamberlain_{secrets.token_hex(6)}"
    # the engine's own admin login (not the superuser): CREATEROLE is all it needs
    admin_role, admin_password = f"{database}_admin", secrets.token_hex(16)
    psql_admin(f'create database "{database}";')
    # the password travels on stdin, never in argv
    psql_admin(f"create role \"{admin_role}\" with login createrole password '{admin_password}';")
    lab = Lab(env=env, database=database, admin_role=admin_role, admin_password=admin_password)
    try:
        files = documents or {
            "dynamic/reporting.yaml": dynamic_credential("reporting-db", REPORTING, database)
        }
        payload = env.repo.commit_and_push(
            {"bootstrap/postgres-admin.yaml": BOOTSTRAP_YAML, **files}, "credentials"
        )
        lab.commit = str(payload["after"])
        yield lab
    finally:
        for environment in env.environments:
            with contextlib.suppress(Exception):
                lab.authority(environment).revoke_prefix("database/creds")
        psql_admin(f'drop database if exists "{database}" with (force);')
        psql_admin(f'drop role if exists "{admin_role}";')


@pytest.fixture
def lab(configured_env: ConfiguredEnv) -> Iterator[Lab]:
    with open_lab(configured_env) as opened:
        yield opened


# ---- tests ----------------------------------------------------------------------------------


def test_issued_credentials_log_in_and_redelivery_changes_nothing(lab: Lab) -> None:
    lab.hand_over()
    lab.seed_consumers()
    step = lab.issue_step()

    reply = step(lab.handover_event())

    assert reply is not None and reply.get_type() == CREDENTIALS_ISSUED
    validate_event(reply)
    [item] = reply.get_data()["environments"]
    [credential] = item["leases"]
    assert (item["environment"], credential["path"], credential["status"]) == (
        "prod",
        REPORTING,
        "issued",
    )
    login = lab.login(REPORTING)
    assert lab.works(login), "issued credentials must log in to PostgreSQL"
    assert role_exists(login[0])
    leases = lab.leases(REPORTING)
    record = leases.records["reader"]
    assert record.lease_id == credential["leaseId"]
    assert record.lease_id.startswith("database/creds/platform-data.warehouse.reporting.reader/")
    assert (record.ttl, record.max_ttl, leases.renewal_at) == (60, 120, 0.66)
    assert lab.authority().lookup_lease(record.lease_id) is not None
    assert [(p.path, p.version) for p in lab.propagated] == [(REPORTING, 1)]
    assert lab.nudges() == [
        ("externalsecrets", "reporting-db"),
        ("deployments", "reporting-db-worker"),
    ], "one force-sync and one rollout for the new credential"
    # the reply and the metadata carry ids and times, never the credential
    assert login[1] not in str(reply.get_data()) and login[0] not in str(reply.get_data())

    again = step(lab.handover_event())

    assert again is not None
    assert again.get_data()["environments"][0]["leases"][0]["status"] == "unchanged"
    assert lab.version(REPORTING) == 1
    assert lab.leases(REPORTING).records["reader"].lease_id == record.lease_id
    assert len(lab.propagated) == 1 and len(lab.nudges()) == 2


def test_waits_for_the_admin_secret_then_issues_on_secrets_issued(lab: Lab) -> None:
    step = lab.issue_step()

    outcome = invoke(step, lab.secrets_issued_event(), function="issue-credentials")

    assert outcome.status == 503 and outcome.retryable
    assert outcome.error is not None and "waiting for bootstrap handover" in outcome.error
    assert lab.authority().read_metadata(REPORTING) is None
    with pytest.raises(TransientError):
        step(lab.handover_event())

    lab.hand_over()
    reply = step(lab.secrets_issued_event())

    assert reply is not None
    assert reply.get_data()["trigger"] == "secrets-issued"
    assert lab.works(lab.login(REPORTING))


def test_environments_without_the_credential_are_left_alone(lab: Lab) -> None:
    lab.hand_over("staging")

    reply = lab.issue_step()(lab.secrets_issued_event("staging"))

    assert reply is None
    assert "database" not in lab.authority("staging").list_secret_mounts()


def test_a_dead_lease_is_replaced(lab: Lab) -> None:
    lab.hand_over()
    step = lab.issue_step()
    step(lab.handover_event())
    first = lab.login(REPORTING)
    old = lab.leases(REPORTING).records["reader"].lease_id
    lab.authority().revoke_lease(old)
    assert not role_exists(first[0]), "a revoked lease drops its role"
    assert not lab.works(first), "revoked credentials cannot log in"

    reply = step(lab.handover_event())

    assert reply is not None
    assert reply.get_data()["environments"][0]["leases"][0]["status"] == "issued"
    assert lab.version(REPORTING) == 2
    assert lab.works(lab.login(REPORTING))


def test_the_admin_password_is_redacted_but_not_its_username(lab: Lab) -> None:
    """A username like ``postgres`` is also a path segment: registering it as a secret would
    make the runtime refuse every reply that names the datasource."""
    lab.hand_over()

    outcome = invoke(lab.issue_step(), lab.handover_event(), function="issue-credentials")

    assert outcome.status == 200, outcome.error
    assert contains_secret(lab.admin_password)
    assert not contains_secret(lab.admin_role)
