"""Where initialize-authority keeps things: share stores (dir, Kubernetes Secret) and identities."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from chamberlain.adapters import agecrypt
from chamberlain.adapters.kube import Kube
from chamberlain.adapters.share_store import (
    KubernetesShareStore,
    LocalShareStore,
    ShareStoreError,
)
from chamberlain.identity import (
    FunctionIdentity,
    IdentityUnavailableError,
    authority_for,
    write_token,
)
from chamberlain.settings import Settings
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.openbao import BaoScope

pytestmark = pytest.mark.integration


def _shares(count: int) -> dict[int, bytes]:
    _identity, recipient = agecrypt.generate_identity()
    return {
        i: agecrypt.encrypt_to_recipients(f"share-{i}".encode(), [recipient]) for i in range(count)
    }


def test_local_store_keeps_only_ciphertext_owner_readable_and_replaces_whole_sets(
    tmp_path: Path,
) -> None:
    store = LocalShareStore(tmp_path / "unseal-shares")
    store.check()
    first = _shares(3)
    store.save(first)
    assert store.load() == first
    assert stat.S_IMODE((tmp_path / "unseal-shares").stat().st_mode) == 0o700
    for path in (tmp_path / "unseal-shares").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    second = _shares(2)  # a re-initialization with fewer shares: stale ones must go
    store.save(second)
    assert store.load() == second
    with pytest.raises(ShareStoreError, match="not an age message"):
        store.save({0: b"plaintext share"})
    assert store.load() == second


def test_local_store_check_fails_where_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ShareStoreError, match="cannot write"):
        LocalShareStore(blocker / "shares").check()


def test_kubernetes_store_is_one_labelled_secret(kube_api: FakeKubeApi) -> None:
    token = kube_api.issue_token("chamberlain-system", "chamberlain-initialize-authority")
    store = KubernetesShareStore(Kube(kube_api.api_client(token)), "chamberlain-system")
    store.check()
    assert store.load() == {}
    first = _shares(3)
    store.save(first)
    assert store.load() == first
    secret = kube_api.get("secrets", "chamberlain-unseal-shares", "chamberlain-system")
    assert sorted(secret["data"]) == ["share-0.age", "share-1.age", "share-2.age"]
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "chamberlain"
    second = _shares(1)
    store.save(second)
    assert store.load() == second


def test_identity_precedence_explicit_token_then_identity_file(
    bao: BaoScope, tmp_path: Path
) -> None:
    settings = Settings(authority_addr=bao.addr)
    env = {"CHAMBERLAIN_IDENTITY_DIR": str(tmp_path / "ids")}
    with pytest.raises(IdentityUnavailableError) as missing:
        authority_for("issue-secrets", settings, env)
    assert missing.value.status == 503

    lazy = FunctionIdentity("issue-secrets", settings, env)
    with pytest.raises(IdentityUnavailableError):
        lazy.authority()
    path = write_token(tmp_path / "ids", "issue-secrets", bao.token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert lazy.authority().lookup_self()["policies"] == ["root"]

    explicit = Settings(authority_addr=bao.addr, authority_token="s.not-a-real-token-000")
    chosen = authority_for("issue-secrets", explicit, env)
    assert chosen.client.adapter.token == "s.not-a-real-token-000"
