"""The fake Kubernetes API, driven by the real ``kubernetes`` client and by real OpenBao.

If these pass, code written against the fake behaves as it would against a cluster for the
parts chamberlain uses: CRUD, selectors, optimistic concurrency, patches, auth, TokenReview.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.openbao import BaoScope

pytestmark = pytest.mark.integration

NS = "team-a"
ESO = ("external-secrets.io", "v1beta1", "externalsecrets")


@pytest.fixture
def api(kube_api: FakeKubeApi) -> Iterator[client.ApiClient]:
    with kube_api.api_client(kube_api.issue_token("chamberlain", "operator")) as api_client:
        yield api_client


def _status(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def _secret(name: str, labels: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, **fields}


def _names(items: list[Any]) -> list[str]:
    return sorted(item.metadata.name for item in items)


def test_secret_crud_with_equality_and_set_based_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(
        NS,
        _secret(
            "db",
            {"app": "db", "tier": "a", "managed-by": "chamberlain"},
            stringData={"password": "s3"},
        ),
    )
    core.create_namespaced_secret(NS, _secret("cache", {"app": "cache", "tier": "b"}))
    core.create_namespaced_secret(NS, _secret("web", {"app": "web", "tier": "c"}))
    core.create_namespaced_secret("team-b", _secret("db", {"app": "db"}))

    def names(selector: str) -> list[str]:
        return _names(core.list_namespaced_secret(NS, label_selector=selector).items)

    assert names("app=db") == ["db"]
    assert names("app==db") == ["db"]
    assert names("app!=db") == ["cache", "web"]
    assert names("tier in (a, b)") == ["cache", "db"]
    assert names("tier notin (a,b)") == ["web"]
    assert names("managed-by") == ["db"]
    assert names("!managed-by") == ["cache", "web"]
    assert names("tier in (a,b),app!=cache") == ["db"]
    assert _names(core.list_namespaced_secret(NS, field_selector="metadata.name=web").items) == [
        "web"
    ]
    everywhere = core.list_secret_for_all_namespaces(label_selector="app=db")
    assert sorted((s.metadata.namespace, s.metadata.name) for s in everywhere.items) == [
        ("team-a", "db"),
        ("team-b", "db"),
    ]

    db = core.read_namespaced_secret("db", NS)
    assert db.string_data is None  # folded into data, base64, as the API server does
    assert base64.b64decode(db.data["password"]) == b"s3"
    assert db.metadata.uid and db.metadata.creation_timestamp is not None
    assert db.metadata.namespace == NS and db.type == "Opaque"
    listed = core.list_namespaced_secret(NS)
    assert int(listed.metadata.resource_version) >= int(db.metadata.resource_version)

    core.delete_namespaced_secret("db", NS)
    assert names("app=db") == []


def test_duplicate_create_is_409_already_exists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(NS, _secret("db", {}))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_secret(NS, _secret("db", {}))
    assert caught.value.status == 409
    status = _status(caught.value)
    assert (status["kind"], status["reason"]) == ("Status", "AlreadyExists")


def test_stale_resource_version_is_a_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_secret(NS, _secret("db", {}, stringData={"v": "1"}))
    first = core.read_namespaced_secret("db", NS)
    first.data = {"v": base64.b64encode(b"2").decode()}
    updated = core.replace_namespaced_secret("db", NS, first)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    assert updated.metadata.uid == created.metadata.uid

    first.data = {"v": base64.b64encode(b"3").decode()}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_secret("db", NS, first)
    assert caught.value.status == 409
    assert _status(caught.value)["reason"] == "Conflict"
    assert base64.b64decode(core.read_namespaced_secret("db", NS).data["v"]) == b"2"


def test_missing_objects_are_404_not_found(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for call in (
        lambda: core.read_namespaced_secret("nope", NS),
        lambda: core.delete_namespaced_secret("nope", NS),
        lambda: client.AppsV1Api(api).read_namespaced_deployment("nope", NS),
    ):
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 404
        assert _status(caught.value)["reason"] == "NotFound"


def test_deployment_template_annotation_merge_patch(
    kube_api: FakeKubeApi, api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    container = {"name": "app", "image": "example/app:1"}
    apps.create_namespaced_deployment(
        NS,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [container]},
                },
            },
        },
    )
    restarted = {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}
    apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"metadata": {"annotations": restarted}}}}
    )

    stored = kube_api.get("deployments", "web", NS, group="apps")
    template = stored["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "web"}, "annotations": restarted}
    assert template["spec"]["containers"] == [container]
    assert stored["metadata"]["generation"] == 2
    (patch,) = kube_api.journal.filter("PATCH", plural="deployments", name="web")
    assert patch.content_type == "application/strategic-merge-patch+json"


def test_external_secret_annotation_merge_patch(
    kube_api: FakeKubeApi, api: client.ApiClient
) -> None:
    spec = {"refreshInterval": "1h", "secretStoreRef": {"name": "bao", "kind": "SecretStore"}}
    kube_api.seed(
        {
            "apiVersion": "external-secrets.io/v1beta1",
            "kind": "ExternalSecret",
            "metadata": {"name": "db", "namespace": NS, "annotations": {"old": "x"}},
            "spec": spec,
        }
    )
    custom = client.CustomObjectsApi(api)
    body = {"metadata": {"annotations": {"force-sync": "1700000000", "old": None}}}
    patched = custom.patch_namespaced_custom_object(*ESO[:2], NS, ESO[2], "db", body)

    assert patched["metadata"]["annotations"] == {"force-sync": "1700000000"}
    assert patched["spec"] == spec
    assert kube_api.objects("externalsecrets", NS, group=ESO[0])[0] == patched
    (patch,) = kube_api.journal.filter("PATCH", plural="externalsecrets")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == body
    listed = custom.list_namespaced_custom_object(*ESO[:2], NS, ESO[2])
    assert listed["kind"] == "ExternalSecretList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["db"]


def test_json_patch_add_replace_remove(kube_api: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(NS, _secret("db", {"a": "1", "b": "2"}))
    ops = [
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
        {"op": "remove", "path": "/metadata/labels/b"},
    ]
    core.patch_namespaced_secret("db", NS, ops)
    assert kube_api.get("secrets", "db", NS)["metadata"]["labels"] == {"a": "9", "c": "3"}
    assert kube_api.journal.filter("PATCH")[0].content_type == "application/json-patch+json"
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_secret("db", NS, [{"op": "remove", "path": "/metadata/labels/b"}])
    assert caught.value.status == 422


def test_requests_without_a_valid_token_are_401(kube_api: FakeKubeApi) -> None:
    token = kube_api.issue_token(NS, "app")
    with kube_api.api_client(token) as ok:
        client.CoreV1Api(ok).list_namespaced_secret(NS)

    anonymous = client.ApiClient(client.Configuration(host=kube_api.host))
    forged = kube_api.api_client(token[:-4] + "AAAA")
    kube_api.revoke_token(token)
    revoked = kube_api.api_client(token)
    for api_client in (anonymous, forged, revoked):
        with api_client, pytest.raises(ApiException) as caught:
            client.CoreV1Api(api_client).list_namespaced_secret(NS)
        assert caught.value.status == 401
        assert _status(caught.value)["reason"] == "Unauthorized"


def test_token_review(kube_api: FakeKubeApi, api: client.ApiClient) -> None:
    auth = client.AuthenticationV1Api(api)

    def review(token: str, audiences: list[str] | None = None) -> Any:
        spec = client.V1TokenReviewSpec(token=token, audiences=audiences)
        return auth.create_token_review(client.V1TokenReview(spec=spec)).status

    token = kube_api.issue_token(NS, "app")
    uid = kube_api.get("serviceaccounts", "app", NS)["metadata"]["uid"]
    status = review(token)
    assert status.authenticated is True
    assert status.user.username == "system:serviceaccount:team-a:app"
    assert status.user.uid == uid
    assert status.user.groups == [
        "system:serviceaccounts",
        "system:serviceaccounts:team-a",
        "system:authenticated",
    ]
    assert not review(token, ["https://other.example"]).authenticated
    assert not review("not-a-token").authenticated
    kube_api.revoke_token(token)
    assert not review(token).authenticated


def test_deleting_a_service_account_invalidates_its_tokens(
    kube_api: FakeKubeApi, api: client.ApiClient
) -> None:
    token = kube_api.issue_token(NS, "app")
    client.CoreV1Api(api).delete_namespaced_service_account("app", NS)
    with kube_api.api_client(token) as gone, pytest.raises(ApiException) as caught:
        client.CoreV1Api(gone).list_namespaced_secret(NS)
    assert caught.value.status == 401


def test_deleting_a_namespace_removes_its_objects(
    kube_api: FakeKubeApi, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "preview-1"}})
    core.create_namespaced_secret("preview-1", _secret("db", {}))
    core.create_namespaced_secret(NS, _secret("db", {}))
    core.delete_namespace("preview-1")
    assert kube_api.objects("secrets", "preview-1") == []
    assert [s["metadata"]["name"] for s in kube_api.objects("secrets", NS)] == ["db"]


# -- OpenBao's Kubernetes auth method against the fake --------------------------------------


def _configure_kubernetes_auth(bao: BaoScope, kube_api: FakeKubeApi, **extra: Any) -> hvac.Client:
    admin = bao.client()
    admin.sys.enable_auth_method("kubernetes")
    admin.auth.kubernetes.configure(
        kubernetes_host=kube_api.host,
        kubernetes_ca_cert=kube_api.ca_pem,
        token_reviewer_jwt=kube_api.issue_token("kube-system", "token-reviewer"),
        disable_local_ca_jwt=True,
        **extra,
    )
    admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    admin.secrets.kv.v2.create_or_update_secret(
        "platform-data/db/app", secret={"password": "p"}, mount_point="secret"
    )
    admin.sys.create_or_update_policy(
        "app-read", 'path "secret/data/platform-data/db/app" { capabilities = ["read"] }'
    )
    admin.auth.kubernetes.create_role("app", ["app"], [NS], policies=["app-read"], ttl="5m")
    return admin


def _login(bao: BaoScope, jwt: str) -> hvac.Client:
    app = hvac.Client(url=bao.addr, namespace=bao.namespace)
    app.auth.kubernetes.login("app", jwt)
    return app


def test_openbao_kubernetes_auth_logs_in_through_token_review(
    bao: BaoScope, kube_api: FakeKubeApi
) -> None:
    _configure_kubernetes_auth(bao, kube_api)
    token = kube_api.issue_token(NS, "app")

    app = _login(bao, token)
    assert "app-read" in app.auth.token.lookup_self()["data"]["policies"]
    read = app.secrets.kv.v2.read_secret_version(
        "platform-data/db/app", mount_point="secret", raise_on_deleted_version=True
    )
    assert set(read["data"]["data"]) == {"password"}
    (review,) = kube_api.journal.filter("POST", plural="tokenreviews")
    assert review.status == 201 and review.body["spec"]["token"] == token

    for refused in (kube_api.issue_token(NS, "other"), kube_api.issue_token("team-b", "app")):
        with pytest.raises(hvac.exceptions.Forbidden):
            _login(bao, refused)
    kube_api.revoke_token(token)
    with pytest.raises(hvac.exceptions.Forbidden):
        _login(bao, token)


def test_openbao_verifies_the_token_signature_with_pem_keys(
    bao: BaoScope, kube_api: FakeKubeApi
) -> None:
    """Login succeeding with pem_keys proves the tokens are genuinely RS256-signed."""
    admin = _configure_kubernetes_auth(bao, kube_api)
    config = {
        "kubernetes_host": kube_api.host,
        "kubernetes_ca_cert": kube_api.ca_pem,
        "token_reviewer_jwt": kube_api.issue_token("kube-system", "token-reviewer"),
        "disable_local_ca_jwt": True,
    }
    # hvac's configure() only lets certificates through pem_keys; OpenBao takes public keys too.
    admin.write_data(
        "auth/kubernetes/config", data={**config, "pem_keys": [kube_api.public_key_pem]}
    )
    token = kube_api.issue_token(NS, "app")
    _login(bao, token)

    # A key that did not sign the token (the CA certificate's EC key): refused.
    admin.write_data("auth/kubernetes/config", data={**config, "pem_keys": [kube_api.ca_pem]})
    reviews = len(kube_api.journal.filter("POST", plural="tokenreviews"))
    with pytest.raises(hvac.exceptions.Forbidden):
        _login(bao, token)
    assert len(kube_api.journal.filter("POST", plural="tokenreviews")) == reviews  # never asked
