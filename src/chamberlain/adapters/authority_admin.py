"""Authority operations only the initializer needs: namespaces with metadata, audit devices,
token roles, the Kubernetes auth config, and root-token generation from unseal shares.

:class:`AdminAuthority` extends :class:`~chamberlain.adapters.authority.Authority` (same
client, same call counter, same error translation), so the initialize-authority step still
talks to OpenBao through one adapter; the other steps never import this module.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority import Authority
from chamberlain.adapters.authority_base import data_of
from chamberlain.adapters.authority_transport import CallCounter, counting_client, timeout_of
from chamberlain.adapters.authority_types import string_map
from chamberlain.lazy import lazy_module
from chamberlain.logs import register_secret

if TYPE_CHECKING:
    import hvac
else:
    hvac = lazy_module("hvac")

_MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


@dataclass(frozen=True)
class AuditDeviceInfo:
    path: str
    type: str
    options: dict[str, str]


@dataclass(frozen=True)
class KubernetesAuthConfig:
    host: str
    ca_pem: str
    disable_local_ca_jwt: bool


class AdminAuthority(Authority):
    """The authority adapter plus the configuration endpoints of the initializer."""

    @classmethod
    def of(cls, authority: Authority) -> AdminAuthority:
        """The same session and identity, with the admin operations."""
        return cls(authority.client, kv_mount=authority.kv_mount)

    def for_namespace(self, namespace: str | None) -> AdminAuthority:
        return AdminAuthority.of(super().for_namespace(namespace))

    def as_token(self, token: str) -> AdminAuthority:
        """Another identity on the same server, counted in this adapter's ``calls``."""
        register_secret(token)
        client = counting_client(
            addr=self.addr,
            token=token,
            namespace=None,
            calls=self.calls,
            timeout=timeout_of(self._client),
        )
        return AdminAuthority(client, kv_mount=self.kv_mount)

    # -- namespaces with custom metadata --------------------------------------------------
    def namespaces_with_metadata(self) -> dict[str, dict[str, str]]:
        """Child namespaces -> their ``custom_metadata`` ({} when they have none)."""
        with self._op("list_namespaces", "sys/namespaces"):
            try:
                response = self._request("list", "/v1/sys/namespaces")
            except hvac.exceptions.InvalidPath:
                return {}
        data = data_of(response)
        info = data.get("key_info") or {}
        found: dict[str, dict[str, str]] = {}
        for key in data.get("keys") or []:
            details = info.get(key) if isinstance(info, dict) else None
            meta = details.get("custom_metadata") if isinstance(details, dict) else None
            found[str(key).rstrip("/")] = string_map(meta)
        return found

    def create_namespace_with_metadata(self, name: str, metadata: Mapping[str, str]) -> None:
        name = self._checked("create_namespace", name)
        with self._op("create_namespace", name):
            self._request(
                "post",
                f"/v1/sys/namespaces/{quote(name)}",
                json={"custom_metadata": dict(metadata)},
            )

    def patch_namespace_metadata(self, name: str, metadata: Mapping[str, str | None]) -> None:
        """Merge ``metadata`` into the namespace's ``custom_metadata`` (None removes a key)."""
        import json

        name = self._checked("patch_namespace", name)
        with self._op("patch_namespace", name):
            self._request(
                "patch",
                f"/v1/sys/namespaces/{quote(name)}",
                data=json.dumps({"custom_metadata": dict(metadata)}),
                headers=dict(_MERGE_PATCH),
            )

    # -- audit ------------------------------------------------------------------------------
    def audit_devices(self) -> list[AuditDeviceInfo]:
        """Enabled audit devices (``sys/audit`` needs ``sudo``)."""
        with self._op("list_audit_devices", "sys/audit"):
            response = self._request("get", "/v1/sys/audit")
        table = data_of(response) or (response if isinstance(response, dict) else {})
        devices = []
        for path, info in sorted(table.items()):
            if isinstance(path, str) and path.endswith("/") and isinstance(info, dict):
                devices.append(
                    AuditDeviceInfo(
                        path=path.rstrip("/"),
                        type=str(info.get("type") or ""),
                        options=string_map(info.get("options")),
                    )
                )
        return devices

    # -- Kubernetes auth config -------------------------------------------------------------
    def read_kubernetes_config(self, mount: str) -> KubernetesAuthConfig | None:
        """The auth method's host/CA; None when it is not configured (or not mounted)."""
        mount = self._checked("read_kubernetes_config", mount)
        with self._op("read_kubernetes_config", f"auth/{mount}/config"):
            try:
                response = self._request("get", f"/v1/auth/{quote(mount)}/config")
            except hvac.exceptions.InvalidPath:
                return None
        data = data_of(response)
        if not data.get("kubernetes_host"):
            return None
        return KubernetesAuthConfig(
            host=str(data["kubernetes_host"]),
            ca_pem=str(data.get("kubernetes_ca_cert") or ""),
            disable_local_ca_jwt=bool(data.get("disable_local_ca_jwt")),
        )

    # -- token roles ----------------------------------------------------------------------
    def read_token_role(self, name: str) -> dict[str, Any] | None:
        with self._op("read_token_role", f"auth/token/roles/{name}"):
            try:
                response = self._request("get", f"/v1/auth/token/roles/{quote(name, safe='')}")
            except hvac.exceptions.InvalidPath:
                return None
        return dict(data_of(response))

    def write_token_role(
        self,
        name: str,
        *,
        allowed_policies_glob: Iterable[str],
        orphan: bool,
        renewable: bool,
        period_s: int,
    ) -> None:
        body = {
            "allowed_policies_glob": list(allowed_policies_glob),
            "orphan": orphan,
            "renewable": renewable,
            "token_period": f"{int(period_s)}s",
            "token_type": "service",
        }
        with self._op("write_token_role", f"auth/token/roles/{name}"):
            self._request("post", f"/v1/auth/token/roles/{quote(name, safe='')}", json=body)

    def create_role_token(
        self, role: str, policies: Iterable[str], *, display_name: str, meta: Mapping[str, str]
    ) -> str:
        """A token from a token role (registered for redaction before it is returned)."""
        body = {
            "policies": list(policies),
            "display_name": display_name,
            "meta": dict(meta),
        }
        with self._op("create_token", f"auth/token/create/{role}"):
            response = self._request(
                "post", f"/v1/auth/token/create/{quote(role, safe='')}", json=body
            )
            token = str(response["auth"]["client_token"])
        register_secret(token)
        return token

    def renew_self(self) -> int:
        """Renew this token; its new TTL in seconds."""
        with self._op("renew_self", "auth/token/renew-self"):
            response = self._request("post", "/v1/auth/token/renew-self", json={})
            return int(response["auth"]["lease_duration"])


# ---- root token generation from unseal shares (unauthenticated endpoints) ---------------------


def _anonymous(addr: str, timeout: float) -> AdminAuthority:
    client = counting_client(
        addr=addr, token=None, namespace=None, calls=CallCounter(), timeout=timeout
    )
    return AdminAuthority(client)


def generate_root(addr: str, keys: list[str], *, timeout: float = 30.0) -> str:
    """A new root token from ``threshold`` unseal keys (OpenBao's generate-root, OTP flow).

    Used only to recover when the initializer's own identity is lost (e.g. a crash between
    ``sys/init`` and the creation of that identity); the caller revokes the token at once.
    """
    admin = _anonymous(addr, timeout)
    with admin._op("generate_root", "sys/generate-root"):
        admin._request("delete", "/v1/sys/generate-root/attempt")
        started = admin._request("put", "/v1/sys/generate-root/attempt", json={})
        otp = str(started["otp"])
        nonce = str(started["nonce"])
        register_secret(otp)
        encoded = ""
        for key in keys:
            register_secret(key)
            answer = admin._request(
                "put", "/v1/sys/generate-root/update", json={"key": key, "nonce": nonce}
            )
            if answer.get("complete"):
                encoded = str(answer["encoded_token"])
                break
    if not encoded:
        with admin._op("generate_root", "sys/generate-root"):
            admin._request("delete", "/v1/sys/generate-root/attempt")
        raise errors.invalid_argument(
            f"{len(keys)} unseal key(s) did not complete root generation",
            operation="generate_root",
            target="sys/generate-root",
            namespace=None,
        )
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    token = bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=False)).decode()
    register_secret(token)
    return token
