"""The OpenBao harness against the real server: namespaces isolate, raft survives restarts."""

from __future__ import annotations

import secrets

import hvac
import pytest

from chamberlain.adapters.bao_server import BaoServer, health, initialize, unseal
from tests.harness.openbao import BaoScope

pytestmark = pytest.mark.integration


def enable_kv(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})


def test_kv_v2_round_trip_in_an_isolated_namespace(bao: BaoScope) -> None:
    client = bao.client()
    assert client.is_authenticated()
    enable_kv(client)
    value = secrets.token_urlsafe(16)
    client.secrets.kv.v2.create_or_update_secret(
        path="platform-data/orders-db/orders-api", secret={"password": value}, mount_point="secret"
    )
    read = client.secrets.kv.v2.read_secret_version(
        path="platform-data/orders-db/orders-api",
        mount_point="secret",
        raise_on_deleted_version=True,
    )
    assert read["data"]["data"]["password"] == value
    assert read["data"]["metadata"]["version"] == 1

    # The dev server's root namespace has its own secret/ mount: the write did not land there.
    with pytest.raises(hvac.exceptions.InvalidPath):
        bao.root_client().secrets.kv.v2.read_secret_version(
            path="platform-data/orders-db/orders-api",
            mount_point="secret",
            raise_on_deleted_version=True,
        )


def test_two_namespaces_do_not_see_each_other(bao: BaoScope, bao_dev: BaoServer) -> None:
    other_name = f"t-other-{secrets.token_hex(4)}"
    root = bao.root_client()
    root.sys.create_namespace(other_name)
    try:
        other = hvac.Client(url=bao.addr, token=bao.token, namespace=other_name)
        mine = bao.client()
        enable_kv(mine)
        enable_kv(other)
        mine.secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"k": "mine"}, mount_point="secret"
        )
        with pytest.raises(hvac.exceptions.InvalidPath):
            other.secrets.kv.v2.read_secret_version(
                path="app/db", mount_point="secret", raise_on_deleted_version=True
            )
        assert bao.namespace != other_name
        assert bao.server is bao_dev
    finally:
        root.sys.delete_namespace(other_name)


def test_child_namespaces_do_not_block_teardown(bao: BaoScope) -> None:
    """Environments are namespaces: a test may nest them; teardown must still clean up."""
    bao.client().sys.create_namespace("prod")
    children = bao.client().sys.list_namespaces()["data"]["keys"]
    assert children == ["prod/"]


def test_raft_init_unseal_restart_and_audit(bao_raft: BaoServer) -> None:
    code, body = health(bao_raft.addr)
    assert code == 501 and body["initialized"] is False
    assert bao_raft.root_token is None and bao_raft.mode == "raft"

    keys, root_token = initialize(bao_raft, shares=3, threshold=2)
    assert len(keys) == 3
    assert health(bao_raft.addr)[0] == 503  # initialized but sealed
    unseal(bao_raft.addr, keys[:2])
    assert health(bao_raft.addr)[0] == 200

    client = hvac.Client(url=bao_raft.addr, token=root_token)
    enable_kv(client)
    value = secrets.token_urlsafe(24)
    client.secrets.kv.v2.create_or_update_secret(
        path="platform-data/x/y", secret={"token": value}, mount_point="secret"
    )

    old_pid = bao_raft.pid
    bao_raft.restart()
    assert bao_raft.pid != old_pid
    code, body = health(bao_raft.addr)
    assert code == 503 and body["sealed"] is True

    unseal(bao_raft.addr, [keys[2], keys[0]])
    read = client.secrets.kv.v2.read_secret_version(
        path="platform-data/x/y", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"]["token"] == value
    assert client.lookup_token()["data"]["policies"] == ["root"]

    assert bao_raft.audit_log is not None
    audit = bao_raft.audit_log.read_text(encoding="utf-8")
    assert "platform-data/x/y" in audit  # requests are recorded...
    assert value not in audit  # ...with values HMAC-hashed, never in clear
    assert "hmac-sha256:" in audit


def test_stop_is_idempotent_and_frees_the_port(bao_raft: BaoServer) -> None:
    bao_raft.stop()
    bao_raft.stop()
    assert bao_raft.pid is None and not bao_raft.running
    with pytest.raises(Exception):  # noqa: B017 - nothing listens any more
        health(bao_raft.addr)
