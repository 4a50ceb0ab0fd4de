"""revoke-environment on a real OpenBao, real PostgreSQL and a real intent repository.

Each test builds environment namespaces under its own OpenBao namespace (the ``bao`` fixture)
the way initialize-authority, issue-secrets and issue-credentials leave them: KV secrets,
consumer policies and roles, a database engine whose leases are real PostgreSQL roles. The
step runs as a token holding only the rendered ``chamberlain-fn-revoke-environment`` policy,
never as root. PostgreSQL roles are checked in ``pg_roles``; no value is ever printed.
"""

from __future__ import annotations

import contextlib
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.authority_admin import AdminAuthority
from chamberlain.adapters.intent_source import IntentSource
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event, validate_event
from chamberlain.planner.function_policies import (
    NamespaceMounts,
    function_rules,
    policy_name,
    render,
)
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.revoke_environment import FUNCTION, HeadIntent, RevokeEnvironment
from tests.harness.gitrepo import IntentRepo
from tests.harness.openbao import BaoScope

pytestmark = pytest.mark.integration

PG = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
CREATE = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
DROP = 'DROP ROLE IF EXISTS "{{name}}";'


def environments_yaml(*, force: bool = False, with_staging: bool = True) -> str:
    labels = '\n  labels: {"chamberlain.dev/force-revoke": "true"}' if force else ""
    staging = (
        "---\napiVersion: chamberlain.dev/v1alpha1\nkind: Environment\n"
        "metadata: {name: staging}\nspec: {branch: main}\n"
        if with_staging
        else ""
    )
    text = textwrap.dedent(
        """\
        apiVersion: chamberlain.dev/v1alpha1
        kind: Environment
        metadata: {name: prod}
        spec: {branch: main, namespace: prod}
        ---
        apiVersion: chamberlain.dev/v1alpha1
        kind: Environment
        metadata:
          name: preview
        spec: {branch: main, ephemeral: true}
        """
    )
    return text.replace("name: preview\n", f"name: preview{labels}\n") + staging


def psql(sql: str, **variables: str) -> str:
    """``sql`` as the postgres superuser; variables passed with -v, read as :'name'."""
    args = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAX"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, "psql failed"
    return done.stdout.strip()


def roles_existing(names: list[str]) -> set[str]:
    if not names:
        return set()
    found = psql(
        "select rolname from pg_roles where rolname = any(string_to_array(:'names', ','));",
        names=",".join(names),
    )
    return set(found.split()) if found else set()


@dataclass
class Env:
    name: str
    inside: Authority
    usernames: list[str] = field(default_factory=list)
    lease_ids: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


@dataclass
class Lab:
    bao: BaoScope
    repo: IntentRepo
    cache: Path
    envs: dict[str, Env] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    @property
    def root(self) -> AdminAuthority:
        return AdminAuthority.of(
            Authority.connect(self.bao.addr, self.bao.token, namespace=self.bao.namespace)
        )

    def path(self, name: str) -> str:
        return f"{self.bao.namespace}/{name}"

    def environment(
        self,
        name: str,
        *,
        ephemeral: bool,
        managed: bool = True,
        secrets: int = 3,
        leases: int = 2,
    ) -> Env:
        """A namespace filled the way chamberlain's steps fill one."""
        metadata = (
            {
                "managed-by": "chamberlain",
                "environment": name,
                "ephemeral": "true" if ephemeral else "false",
            }
            if managed
            else {}
        )
        self.root.create_namespace_with_metadata(name, metadata)
        inside = Authority.connect(self.bao.addr, self.bao.token, namespace=self.path(name))
        inside.enable_secrets_engine("kv", "secret", {"version": "2"})
        inside.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
        inside.enable_auth("kubernetes", "kubernetes")
        env = Env(name, inside)
        for i in range(secrets):
            path = f"platform-data/app-{i}/api"
            inside.write_secret(path, {"password": f"value-{name}-{i}-x" * 2}, cas=0)
            env.secrets.append(path)
        policy = 'path "secret/data/platform-data/*" { capabilities = ["read"] }'
        inside.write_policy("chamberlain-consumer-billing-api", policy)
        inside.client.auth.kubernetes.create_role(
            "chamberlain-billing-api",
            bound_service_account_names=["api"],
            bound_service_account_namespaces=["billing"],
            policies=["chamberlain-consumer-billing-api"],
            mount_point="kubernetes",
        )
        inside.write_policy("hand-made", policy)  # not chamberlain's: not counted
        if leases:
            inside.enable_secrets_engine("database", "database")
            inside.write_database_config(
                "database",
                "pg",
                plugin_name="postgresql-database-plugin",
                connection_url=PG,
                username="postgres",
                password="trust-auth-unused",
                allowed_roles=["r"],
            )
            inside.write_database_role(
                "database",
                "r",
                db_name="pg",
                creation_statements=[CREATE],
                revocation_statements=[DROP],
                default_ttl=3600,
                max_ttl=7200,
            )
            for _ in range(leases):
                secret = inside.generate_credentials("database", "r")
                env.usernames.append(secret.data["username"])
                env.lease_ids.append(secret.lease_id)
        self.envs[name] = env
        self.namespaces.append(name)
        return env

    def break_database(self, name: str) -> None:
        """Point the environment's connection at a closed port: revocations fail for real."""
        self.envs[name].inside.write_database_config(
            "database",
            "pg",
            plugin_name="postgresql-database-plugin",
            connection_url=PG.replace(":5432", ":1"),
            username="postgres",
            password="trust-auth-unused",
            allowed_roles=["r"],
            verify_connection=False,
        )

    def token(self) -> str:
        """A token holding only revoke-environment's rendered policy (no root, no other)."""
        mounts = [NamespaceMounts(n, "secret", "kubernetes") for n in self.namespaces]
        hcl = render(FUNCTION, function_rules(FUNCTION, mounts))
        self.root.write_policy(policy_name(FUNCTION), hcl)
        return self.root.create_token(
            [policy_name(FUNCTION)], ttl="1h", display_name="revoke-environment-test"
        )

    def step(self, **kwargs: Any) -> RevokeEnvironment:
        authority = Authority.connect(self.bao.addr, self.token(), namespace=self.bao.namespace)
        intent = HeadIntent(self.repo.url, "main", IntentSource(self.cache))
        return RevokeEnvironment(
            authority, intent, base_namespace=self.bao.namespace, poll_s=0.02, **kwargs
        )

    def exists(self, name: str) -> bool:
        return self.root.namespace_exists(name)

    def leases(self, name: str) -> list[str]:
        return self.envs[name].inside.list_leases("")

    def versions(self, name: str) -> dict[str, int]:
        env = self.envs[name]
        found = {}
        for path in env.secrets:
            meta = env.inside.read_metadata(path)
            assert meta is not None
            found[path] = meta.current_version
        return found


@pytest.fixture
def lab(bao: BaoScope, intent_repo: IntentRepo, tmp_path: Path) -> Iterator[Lab]:
    intent_repo.commit_and_push({"environments.yaml": environments_yaml()}, "environments")
    made = Lab(bao, intent_repo, tmp_path / "cache")
    yield made
    leftovers = roles_existing([u for e in made.envs.values() for u in e.usernames])
    for role in leftovers:  # leases forced away leave their roles: the test's to clean
        psql("select format('drop role if exists %I', :'role') \\gexec", role=role)
    for env in made.envs.values():  # prod's leases are revoked by the test, not the step
        with contextlib.suppress(Exception):
            if made.exists(env.name):
                env.inside.revoke_prefix("database", force=False)


def teardown_event(environment: str, id_: str = "teardown-1") -> BaseCloudEvent:
    return make_event(
        T.ENVIRONMENT_TEARDOWN,
        {"environment": environment, "reason": "pull request closed"},
        source="/platform/preview-controller",
        subject=environment,
        id_=id_,
    )


def data_of(reply: BaseCloudEvent | None) -> dict[str, Any]:
    assert reply is not None
    validate_event(reply)
    assert reply.get_type() == T.ENVIRONMENT_REVOKED
    data = reply.get_data()
    assert isinstance(data, dict)
    return data


# ---- the whole teardown ----------------------------------------------------------------------


def test_teardown_revokes_leases_drops_database_roles_and_leaves_prod_alone(lab: Lab) -> None:
    prod = lab.environment("prod", ephemeral=False)
    preview = lab.environment("preview-7", ephemeral=True)
    prod_versions = lab.versions("prod")
    assert roles_existing(preview.usernames) == set(preview.usernames)

    data = data_of(lab.step()(teardown_event("preview-7")))

    assert data == {
        "environment": "preview-7",
        "leasesRevoked": 2,
        "secretsDestroyed": 3,
        "identitiesRemoved": 2,
        "namespaceDeleted": True,
        "failures": [],
    }
    assert not lab.exists("preview-7")
    assert roles_existing(preview.usernames) == set(), "PostgreSQL roles of the leases survive"
    # prod: same versions, same leases, alive, their roles still there
    assert lab.versions("prod") == prod_versions
    assert sorted(lab.leases("prod")) == sorted(prod.lease_ids)
    assert all(prod.inside.lookup_lease(lease) is not None for lease in prod.lease_ids)
    assert roles_existing(prod.usernames) == set(prod.usernames)
    assert prod.inside.read_policy("chamberlain-consumer-billing-api") is not None


def test_apiserver_namespace_delete_and_cluster_deleted_tear_down_too(lab: Lab) -> None:
    lab.environment("preview-8", ephemeral=True, leases=0)
    lab.environment("preview-9", ephemeral=True, leases=1)
    step = lab.step()
    namespace_deleted = make_event(
        T.APISERVER_DELETE,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "pr-8",
                "labels": {
                    "chamberlain.dev/environment": "preview-8",
                    "chamberlain.dev/ephemeral": "true",
                },
            },
        },
        source="https://10.96.0.1:443",
    )
    assert data_of(step(namespace_deleted))["namespaceDeleted"] is True
    cluster_deleted = make_event(
        T.CLUSTER_DELETED, {"environment": "preview-9", "cluster": "c9"}, source="/capi"
    )
    assert data_of(step(cluster_deleted))["leasesRevoked"] == 1
    assert not lab.exists("preview-8") and not lab.exists("preview-9")


def test_unrelated_deleted_objects_and_unknown_environments_are_acknowledged(lab: Lab) -> None:
    lab.environment("prod", ephemeral=False, leases=0)
    before = lab.versions("prod")
    step = lab.step()
    plain = make_event(
        T.APISERVER_DELETE,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-public"}},
        source="https://10.96.0.1:443",
    )
    assert invoke(step, plain, function=FUNCTION).status == 202
    never = invoke(step, teardown_event("preview-404"), function=FUNCTION)
    assert never.status == 202 and never.reply is None
    assert lab.versions("prod") == before


# ---- resumable, idempotent ---------------------------------------------------------------------


class Interrupted(RuntimeError):
    pass


def test_interrupted_teardown_finishes_on_redelivery_and_duplicates_are_harmless(
    lab: Lab,
) -> None:
    prod = lab.environment("prod", ephemeral=False, leases=1)
    preview = lab.environment("preview-11", ephemeral=True)
    prod_versions = lab.versions("prod")
    calls: list[str] = []

    def crash_once(environment: str) -> None:
        calls.append(environment)
        if len(calls) == 1:
            raise Interrupted("process killed between lease revocation and secret removal")

    step = lab.step(after_lease_revocation=crash_once)
    event = teardown_event("preview-11", id_="teardown-11")
    first = invoke(step, event, function=FUNCTION)
    assert first.status == 500 and first.retryable
    # half-way: leases (and their roles) gone, secrets and namespace still there
    assert lab.exists("preview-11")
    assert lab.leases("preview-11") == []
    assert roles_existing(preview.usernames) == set()
    assert preview.inside.read_metadata(preview.secrets[0]) is not None

    again = invoke(step, event, function=FUNCTION)
    assert again.status == 200
    data = data_of(again.reply)
    assert data["leasesRevoked"] == 2, "the resumed report must count the first attempt's leases"
    assert data["secretsDestroyed"] == 3 and data["namespaceDeleted"] is True
    assert not lab.exists("preview-11")

    duplicate = invoke(step, event, function=FUNCTION)
    assert duplicate.status == 202 and duplicate.reply is None
    assert lab.versions("prod") == prod_versions
    assert lab.leases("prod") == prod.lease_ids


# ---- backend failures, force only when intent says so ----------------------------------------


def test_failed_revocations_are_reported_and_forced_only_when_intent_says_so(lab: Lab) -> None:
    preview = lab.environment("preview-12", ephemeral=True)
    lab.break_database("preview-12")
    step = lab.step()

    data = data_of(step(teardown_event("preview-12")))
    assert data["namespaceDeleted"] is False
    assert data["leasesRevoked"] == 0
    failed = {f["target"] for f in data["failures"]}
    assert set(preview.lease_ids) <= failed
    assert any("force-revoke" in f["reason"] for f in data["failures"])
    # the leases are kept (and so their namespace), but no value and no identity survives
    assert sorted(lab.leases("preview-12")) == sorted(preview.lease_ids)
    assert data["secretsDestroyed"] == 3 and data["identitiesRemoved"] == 2
    assert all(preview.inside.read_metadata(p) is None for p in preview.secrets)
    assert preview.inside.read_policy("chamberlain-consumer-billing-api") is None
    assert preview.inside.read_policy("hand-made") is not None

    lab.repo.commit_and_push({"environments.yaml": environments_yaml(force=True)}, "force")
    forced = data_of(step(teardown_event("preview-12", id_="teardown-12b")))
    assert forced["namespaceDeleted"] is True, forced
    assert {f["target"] for f in forced["failures"]} == set(preview.lease_ids)
    assert all("forced" in f["reason"] for f in forced["failures"])
    assert not lab.exists("preview-12")


# ---- refusals ----------------------------------------------------------------------------------


def test_a_long_lived_environment_still_in_intent_is_never_torn_down(lab: Lab) -> None:
    prod = lab.environment("prod", ephemeral=False)
    before = lab.versions("prod")
    event = make_event(T.CLUSTER_DELETED, {"environment": "prod"}, source="/capi")
    outcome = invoke(lab.step(), event, function=FUNCTION)
    assert outcome.status == 422 and not outcome.retryable
    assert "still declared in intent" in (outcome.error or "")
    assert lab.versions("prod") == before
    assert sorted(lab.leases("prod")) == sorted(prod.lease_ids)


def test_a_removed_long_lived_environment_is_torn_down(lab: Lab) -> None:
    lab.environment("staging", ephemeral=False, leases=1)
    lab.repo.commit_and_push(
        {"environments.yaml": environments_yaml(with_staging=False)}, "retire staging"
    )
    data = data_of(lab.step()(teardown_event("staging")))
    assert data["namespaceDeleted"] is True and data["leasesRevoked"] == 1
    assert not lab.exists("staging")


def test_a_namespace_chamberlain_does_not_own_is_left_alone(lab: Lab) -> None:
    lab.environment("preview-13", ephemeral=True, managed=False, leases=0)
    outcome = invoke(lab.step(), teardown_event("preview-13"), function=FUNCTION)
    assert outcome.status == 422
    assert "not managed by chamberlain" in (outcome.error or "")
    assert lab.exists("preview-13")
