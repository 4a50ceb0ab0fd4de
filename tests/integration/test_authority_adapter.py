"""The authority adapter against a real OpenBao (and a real PostgreSQL for dynamic credentials).

Each test works in its own OpenBao namespace (the ``bao`` fixture) and asserts what a step
relies on: return types, ``None``/``[]`` for missing things, the error class (retry or not), the
call counter, and that no value or token ever appears in an error message or a ``repr``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import pytest

from chamberlain.adapters import authority_base
from chamberlain.adapters.authority import (
    AlreadyExistsError,
    Authority,
    AuthorityUnavailableError,
    CasConflictError,
    ForbiddenError,
    InvalidRequestError,
    LeaseNotFoundError,
    NotFoundError,
    SealedError,
)
from chamberlain.adapters.bao_server import free_port, start_dev
from chamberlain.logs import REDACTED, redact
from chamberlain.steps.base import PermanentError, TransientError
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.openbao import BaoScope

pytestmark = pytest.mark.integration

PATH = "platform-data/orders-db/orders-api"
PG = {"host": "127.0.0.1", "port": "5432"}


@pytest.fixture
def authority(bao: BaoScope) -> Authority:
    """An adapter bound to the test's namespace, with KV v2 mounted at ``secret``."""
    adapter = Authority(bao.client())
    adapter.enable_secrets_engine("kv", "secret", {"version": "2"})
    return adapter


def value() -> str:
    return "v-" + secrets.token_urlsafe(18)


def assert_clean(error: BaseException, *values: str) -> None:
    """Neither the message nor the repr of ``error`` (or its cause) contains a value."""
    texts = [str(error), repr(error), *(str(a) for a in error.args)]
    if error.__cause__ is not None:
        texts.append(str(error.__cause__))
    for text in texts:
        for secret in values:
            assert secret not in text


# -- KV v2 ----------------------------------------------------------------------------------


def test_values_read_are_registered_for_redaction(authority: Authority, bao: BaoScope) -> None:
    """A value written by someone else is redacted from the moment the adapter reads it."""
    foreign = value()
    bao.client().secrets.kv.v2.create_or_update_secret(
        PATH, secret={"token": foreign, "port": 5432}, mount_point="secret"
    )
    assert redact(foreign) == foreign
    read = authority.read_secret(PATH)
    assert read is not None and read.data == {"token": foreign, "port": "5432"}
    assert redact(f"leaked {foreign}") == f"leaked {REDACTED}"


def test_secret_round_trip_with_check_and_set(authority: Authority) -> None:
    first, second = value(), value()
    assert authority.read_secret(PATH) is None
    assert authority.read_metadata(PATH) is None

    assert authority.write_secret(PATH, {"password": first}, cas=0) == 1
    read = authority.read_secret(PATH)
    assert read is not None
    assert read.data == {"password": first} and read.version == 1
    assert read.created_time is not None and read.created_time.tzinfo is not None
    assert first not in repr(read)  # a SecretVersion printed in a log line shows no value
    assert redact(f"leaked {first}") == f"leaked {REDACTED}"  # registered for redaction

    # cas=0 means "only if absent": a second creator loses, with a retryable 409.
    with pytest.raises(CasConflictError) as lost:
        authority.write_secret(PATH, {"password": second}, cas=0)
    assert lost.value.status == 409 and lost.value.retryable
    assert isinstance(lost.value, TransientError)
    assert "write_secret" in str(lost.value) and PATH in str(lost.value)
    assert_clean(lost.value, first, second)

    assert authority.write_secret(PATH, {"password": second}, cas=1) == 2
    with pytest.raises(CasConflictError):
        authority.write_secret(PATH, {"password": value()}, cas=1)  # stale version
    latest, old = authority.read_secret(PATH), authority.read_secret(PATH, version=1)
    assert latest is not None and latest.data["password"] == second and latest.version == 2
    assert old is not None and old.data["password"] == first
    assert authority.read_secret(PATH, version=7) is None


def test_metadata_round_trip_patch_and_deletion(authority: Authority) -> None:
    authority.write_secret(PATH, {"password": value()}, cas=0)
    authority.write_secret(PATH, {"password": value()}, cas=1)
    authority.write_metadata(
        PATH,
        custom_metadata={"class": "runtime", "owner": "team-orders"},
        max_versions=5,
        delete_version_after="720h",
    )
    meta = authority.read_metadata(PATH)
    assert meta is not None
    assert meta.custom_metadata == {"class": "runtime", "owner": "team-orders"}
    assert (meta.current_version, meta.oldest_version, meta.max_versions) == (2, 0, 5)
    assert meta.delete_version_after == "720h0m0s"
    assert sorted(meta.versions) == [1, 2] and all(v.alive for v in meta.versions.values())

    # The API replaces custom_metadata whole; settings not given are kept.
    authority.write_metadata(PATH, custom_metadata={"class": "runtime"})
    meta = authority.read_metadata(PATH)
    assert meta is not None and meta.custom_metadata == {"class": "runtime"}
    assert meta.max_versions == 5

    # A merge patch adds and removes single keys.
    assert authority.patch_custom_metadata(PATH, {"last-rotation": "2024-01-01", "class": None})
    meta = authority.read_metadata(PATH)
    assert meta is not None and meta.custom_metadata == {"last-rotation": "2024-01-01"}
    assert authority.patch_custom_metadata("platform-data/none/here", {"k": "v"}) is False

    # Soft delete hides the latest version; destroy removes an old one's data for good.
    authority.delete_latest(PATH)
    assert authority.read_secret(PATH) is None
    assert authority.read_secret(PATH, version=1) is not None
    authority.destroy_versions(PATH, [1])
    assert authority.read_secret(PATH, version=1) is None
    meta = authority.read_metadata(PATH)
    assert meta is not None
    assert meta.versions[1].destroyed and meta.versions[2].deletion_time is not None
    assert not meta.versions[1].alive and not meta.versions[2].alive

    authority.delete_metadata(PATH)
    assert authority.read_metadata(PATH) is None
    authority.delete_metadata(PATH)  # idempotent


def test_list_keys_and_walk_nested_paths(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaves = [
        "platform-data/billing-db/invoices",
        "platform-data/orders-db/orders-api",
        "platform-data/orders-db/reports",
        "platform-data/search/es/indexer",
        "chamberlain/state/applied",
    ]
    for leaf in leaves:
        authority.write_secret(leaf, {"k": value()}, cas=0)

    assert authority.list_keys("platform-data") == ["billing-db/", "orders-db/", "search/"]
    assert authority.list_keys("platform-data/orders-db/") == ["orders-api", "reports"]
    assert authority.list_keys("platform-data/nothing") == []
    assert authority.walk("platform-data") == sorted(leaves[:4])
    assert authority.walk("") == sorted(leaves)
    assert authority.walk("nothing/here") == []

    # Pages of two keys: five entries need three LIST calls, and none is lost.
    monkeypatch.setattr(authority_base, "PAGE_SIZE", 2)
    for name in ("c1", "c2", "c3"):
        authority.write_secret(f"platform-data/orders-db/{name}", {"k": value()}, cas=0)
    before = authority.calls["list"]
    keys = authority.list_keys("platform-data/orders-db")
    assert keys == ["c1", "c2", "c3", "orders-api", "reports"]
    assert authority.calls["list"] - before == 3


def test_paths_with_dot_segments_never_reach_the_authority(authority: Authority) -> None:
    before = authority.calls.total()
    for bad in ("platform-data/../sys/x", "./platform-data/a/b"):
        with pytest.raises(InvalidRequestError) as refused:
            authority.read_secret(bad)
        assert refused.value.status == 422 and not refused.value.retryable
    assert authority.calls.total() == before


# -- policies, mounts, namespaces -----------------------------------------------------------


def test_policy_crud(authority: Authority) -> None:
    hcl = 'path "secret/data/platform-data/orders-db/*" {\n  capabilities = ["read"]\n}\n'
    assert authority.read_policy("orders-read") is None
    authority.write_policy("orders-read", hcl)
    assert authority.read_policy("orders-read") == hcl
    assert "orders-read" in authority.list_policies()
    authority.write_policy("orders-read", hcl.replace('"read"', '"read", "list"'))
    assert '"list"' in (authority.read_policy("orders-read") or "")
    authority.delete_policy("orders-read")
    authority.delete_policy("orders-read")  # idempotent
    assert authority.read_policy("orders-read") is None
    assert "orders-read" not in authority.list_policies()


def test_secret_engines_and_auth_methods(authority: Authority) -> None:
    mounts = authority.list_secret_mounts()
    assert mounts["secret"].type == "kv" and mounts["secret"].options == {"version": "2"}

    authority.enable_secrets_engine("database", "db-preview", description="preview databases")
    with pytest.raises(AlreadyExistsError) as taken:
        authority.enable_secrets_engine("database", "db-preview")
    assert not taken.value.retryable and taken.value.authority_status == 400
    assert authority.list_secret_mounts()["db-preview"].description == "preview databases"
    authority.disable_secrets_engine("db-preview")
    authority.disable_secrets_engine("db-preview")  # idempotent
    assert "db-preview" not in authority.list_secret_mounts()

    authority.enable_auth("kubernetes", "k8s-preview")
    assert authority.list_auth_mounts()["k8s-preview"].type == "kubernetes"
    authority.disable_auth("k8s-preview")
    assert "k8s-preview" not in authority.list_auth_mounts()


def test_namespaces_create_exist_and_delete(authority: Authority, bao: BaoScope) -> None:
    assert authority.list_namespaces() == []
    assert not authority.namespace_exists("preview-7")
    authority.create_namespace("preview-7")
    authority.create_namespace("preview-7")  # idempotent
    assert authority.namespace_exists("preview-7")
    assert authority.list_namespaces() == ["preview-7"]

    # for_namespace is absolute and isolates: a secret written inside is not seen outside.
    inner = authority.for_namespace(f"{bao.namespace}/preview-7")
    assert inner.namespace == f"{bao.namespace}/preview-7"
    inner.enable_secrets_engine("kv", "secret", {"version": "2"})
    inner.write_secret(PATH, {"password": value()}, cas=0)
    assert authority.read_secret(PATH) is None
    assert inner.read_secret(PATH) is not None
    assert authority.for_namespace("").namespace is None

    assert authority.delete_namespace("preview-7") == "in-progress"
    deadline = time.monotonic() + 20
    while authority.namespace_exists("preview-7") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not authority.namespace_exists("preview-7")
    assert authority.delete_namespace("preview-7") == "absent"


# -- Kubernetes auth (OpenBao calls the fake API server's TokenReview) ----------------------


def test_kubernetes_roles_and_login(
    authority: Authority, bao: BaoScope, kube_api: FakeKubeApi
) -> None:
    authority.enable_auth("kubernetes", "kubernetes")
    reviewer = kube_api.issue_token("kube-system", "token-reviewer")
    authority.write_kubernetes_config(
        "kubernetes", host=kube_api.host, ca_pem=kube_api.ca_pem, token_reviewer_jwt=reviewer
    )
    authority.write_policy("orders-read", 'path "secret/data/*" { capabilities = ["read"] }')

    assert authority.read_kubernetes_role("kubernetes", "orders") is None
    assert authority.list_kubernetes_roles("kubernetes") == []
    authority.write_kubernetes_role(
        "kubernetes",
        "orders",
        service_account_names=["orders-api"],
        namespaces=["shop"],
        policies=["orders-read"],
        ttl=300,
        audience="https://kubernetes.default.svc.cluster.local",
    )
    role = authority.read_kubernetes_role("kubernetes", "orders")
    assert role is not None
    assert role["bound_service_account_names"] == ["orders-api"]
    assert role["token_policies"] == ["orders-read"] and role["token_ttl"] == 300
    assert authority.list_kubernetes_roles("kubernetes") == ["orders"]

    token = authority.login_kubernetes(
        "kubernetes", "orders", kube_api.issue_token("shop", "orders-api")
    )
    app = Authority.connect(bao.addr, token, namespace=bao.namespace)
    assert "orders-read" in app.lookup_self()["policies"]
    assert authority.lookup_self()["policies"] == ["root"]  # the adapter kept its token

    stranger = kube_api.issue_token("shop", "other")
    with pytest.raises(ForbiddenError) as refused:
        authority.login_kubernetes("kubernetes", "orders", stranger)
    assert not refused.value.retryable
    assert_clean(refused.value, stranger, reviewer)

    authority.delete_kubernetes_role("kubernetes", "orders")
    authority.delete_kubernetes_role("kubernetes", "orders")  # idempotent
    assert authority.read_kubernetes_role("kubernetes", "orders") is None


# -- tokens ---------------------------------------------------------------------------------


def test_tokens_create_lookup_and_revoke(authority: Authority, bao: BaoScope) -> None:
    authority.write_policy("reader", 'path "secret/data/*" { capabilities = ["read"] }')
    authority.write_secret(PATH, {"password": value()}, cas=0)
    token = authority.create_token(["reader"], ttl=600, display_name="rotate-secrets")
    assert redact(token) == REDACTED

    reader = Authority.connect(bao.addr, token, namespace=bao.namespace)
    me = reader.lookup_self()
    assert "reader" in me["policies"] and me["display_name"] == "token-rotate-secrets"
    assert "id" not in me and token not in repr(me)
    assert reader.read_secret(PATH) is not None
    with pytest.raises(ForbiddenError) as denied:
        reader.write_secret(PATH, {"password": value()}, cas=1)
    assert denied.value.status == 403 and isinstance(denied.value, PermanentError)
    assert_clean(denied.value, token)

    authority.revoke_token(token)
    with pytest.raises(ForbiddenError):
        reader.lookup_self()

    other = authority.create_token(["reader"], ttl="10m", display_name="short")
    short = Authority.connect(bao.addr, other, namespace=bao.namespace)
    short.revoke_self()
    with pytest.raises(ForbiddenError):
        short.read_secret(PATH)


# -- database engine, dynamic credentials and leases ----------------------------------------


def psql(database: str, sql: str, *, user: str = "postgres", password: str | None = None) -> str:
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if password is not None:
        env["PGPASSWORD"] = password
    done = subprocess.run(
        ["psql", "-h", PG["host"], "-p", PG["port"], "-U", user, "-d", database, "-Atc", sql],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql as {user} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class PgDatabase:
    """A throwaway database, and the leased roles to drop if a test leaves them behind."""

    name: str
    roles: list[str] = field(default_factory=list)


@pytest.fixture
def pg_database() -> Iterator[PgDatabase]:
    db = PgDatabase(f"chamberlain_t_{secrets.token_hex(4)}")
    psql("postgres", f"CREATE DATABASE {db.name}")
    try:
        yield db
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
        for role in db.roles:
            psql("postgres", f'DROP ROLE IF EXISTS "{role}"')


def test_dynamic_database_credentials_and_leases(
    authority: Authority, pg_database: PgDatabase
) -> None:
    admin_password = value()
    authority.enable_secrets_engine("database", "database")
    authority.write_database_config(
        "database",
        "orders",
        plugin_name="postgresql-database-plugin",
        connection_url=(
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/"
            + pg_database.name
            + "?sslmode=disable"
        ),
        username="postgres",
        password=admin_password,
        allowed_roles=["app"],
    )
    authority.write_database_role(
        "database",
        "app",
        db_name="orders",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            "VALID UNTIL '{{expiration}}';"
        ],
        revocation_statements=['DROP ROLE IF EXISTS "{{name}}";'],
        default_ttl=3600,
        max_ttl="2h",
    )

    first = authority.generate_credentials("database", "app")
    second = authority.generate_credentials("database", "app")
    pg_database.roles += [first.data["username"], second.data["username"]]
    user, password = first.data["username"], first.data["password"]
    assert first.lease_id.startswith("database/creds/app/") and first.renewable
    assert first.lease_duration == 3600
    assert password not in repr(first) and redact(password) == REDACTED
    assert psql(pg_database.name, "SELECT current_user", user=user, password=password) == user

    assert sorted(authority.list_leases("database/creds/app")) == sorted(
        [first.lease_id, second.lease_id]
    )
    assert authority.list_leases("database") == authority.list_leases("database/creds/app")
    assert authority.list_leases("nothing/here") == []

    lease = authority.lookup_lease(first.lease_id)
    assert lease is not None and lease.id == first.lease_id and lease.renewable
    assert 3500 < lease.ttl <= 3600 and lease.issue_time is not None
    assert lease.expire_time is not None and lease.expire_time > lease.issue_time

    assert authority.renew_lease(second.lease_id).ttl > 600  # no increment: the default TTL
    renewed = authority.renew_lease(first.lease_id, 600)
    assert renewed.id == first.lease_id and 0 < renewed.ttl <= 600
    looked_up = authority.lookup_lease(first.lease_id)
    assert looked_up is not None and looked_up.ttl <= 600 and looked_up.last_renewal is not None

    authority.revoke_lease(second.lease_id)
    assert authority.list_leases("database/creds/app") == [first.lease_id]
    authority.revoke_prefix("database/creds/app")
    assert authority.list_leases("database/creds/app") == []
    assert authority.lookup_lease(first.lease_id) is None
    with pytest.raises(LeaseNotFoundError) as gone:
        authority.renew_lease(first.lease_id, 600)
    assert not gone.value.retryable
    with pytest.raises(RuntimeError, match="does not exist"):
        psql(pg_database.name, "SELECT 1", user=user, password=password)

    third = authority.generate_credentials("database", "app")
    pg_database.roles.append(third.data["username"])
    authority.revoke_prefix("database/creds", force=True)
    assert authority.lookup_lease(third.lease_id) is None
    authority.delete_database_role("database", "app")
    authority.delete_database_config("database", "orders")
    authority.delete_database_config("database", "orders")  # idempotent
    with pytest.raises(InvalidRequestError) as unknown_role:
        authority.generate_credentials("database", "app")
    assert_clean(unknown_role.value, admin_password, password)


# -- availability: unreachable and sealed ---------------------------------------------------


def test_unreachable_authority_is_transient_and_names_no_token() -> None:
    token = "s." + secrets.token_urlsafe(24)
    down = Authority.connect(f"http://127.0.0.1:{free_port()}", token, timeout=2)
    with pytest.raises(AuthorityUnavailableError) as failed:
        down.read_secret(PATH)
    assert failed.value.status == 503 and failed.value.retryable
    assert "read_secret" in str(failed.value) and PATH in str(failed.value)
    assert_clean(failed.value, token)
    with pytest.raises(AuthorityUnavailableError):
        down.health()
    assert down.calls["read"] == 2  # both attempts counted


def test_sealed_authority_is_transient(tmp_path: Path) -> None:
    server = start_dev(tmp_path / "sealed")
    try:
        assert server.root_token is not None
        adapter = Authority.connect(server.addr, server.root_token)
        assert adapter.health() == 200
        status = adapter.seal_status()
        assert status.initialized and not status.sealed and (status.t, status.n) == (1, 1)
        adapter.write_secret(PATH, {"password": value()}, cas=0)

        hvac.Client(url=server.addr, token=server.root_token).sys.seal()
        with pytest.raises(SealedError) as sealed:
            adapter.read_secret(PATH)
        assert isinstance(sealed.value, AuthorityUnavailableError)
        assert sealed.value.status == 503 and sealed.value.retryable
        assert adapter.seal_status().sealed
        assert adapter.health() == 503
        server.stop()
        with pytest.raises(AuthorityUnavailableError):
            adapter.list_keys("platform-data")
    finally:
        server.stop()


# -- the call counter -----------------------------------------------------------------------


def test_calls_are_counted_by_kind_across_clones_and_namespaces(
    authority: Authority, bao: BaoScope
) -> None:
    authority.calls.reset()
    authority.write_secret(PATH, {"password": value()}, cas=0)
    authority.read_secret(PATH)
    authority.read_metadata(PATH)
    authority.list_keys("platform-data")
    authority.delete_metadata(PATH)
    assert authority.calls == {"write": 1, "read": 2, "list": 1, "delete": 1}

    before = authority.calls.snapshot()
    worker = authority.clone()
    assert worker.calls is authority.calls and worker.namespace == authority.namespace
    errors: list[BaseException] = []

    def write_many(adapter: Authority, start: int) -> None:
        try:
            for i in range(start, start + 10):
                adapter.write_secret(f"platform-data/bulk/s{i}", {"k": value()}, cas=0)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=write_many, args=(authority.clone(), n * 10)) for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert authority.calls["write"] - before["write"] == 30
    assert len(authority.walk("platform-data/bulk")) == 30

    root_view = authority.for_namespace(None)
    root_view.list_namespaces()
    assert authority.calls["list"] - before["list"] == 2  # the walk, then the root list


def test_missing_mount_and_unknown_lease_are_permanent(authority: Authority) -> None:
    with pytest.raises(NotFoundError) as no_mount:
        authority.write_secret("platform-data/a/b", {"k": value()}, cas=0, mount="no-such")
    assert no_mount.value.authority_status == 404 and not no_mount.value.retryable
    assert "no-such/platform-data/a/b" in str(no_mount.value)
    with pytest.raises(LeaseNotFoundError):
        authority.renew_lease("database/creds/none/xyz")
