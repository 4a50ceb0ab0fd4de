"""System operations: policies, mounts, namespaces, tokens, seal status and health."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority_base import AuthorityBase, data_of
from chamberlain.adapters.authority_transport import timeout_of
from chamberlain.adapters.authority_types import MountInfo, SealStatus, string_map
from chamberlain.lazy import lazy_module
from chamberlain.logs import register_secret

if TYPE_CHECKING:
    import hvac
    import requests
else:
    hvac = lazy_module("hvac")
    requests = lazy_module("requests")


def _mounts(response: Any) -> dict[str, MountInfo]:
    """``sys/mounts`` and ``sys/auth`` answer {path/: {...}} (under ``data`` too)."""
    table = data_of(response) or (response if isinstance(response, dict) else {})
    found: dict[str, MountInfo] = {}
    for path, info in table.items():
        if not (isinstance(path, str) and path.endswith("/") and isinstance(info, dict)):
            continue
        found[path.rstrip("/")] = MountInfo(
            path=path.rstrip("/"),
            type=str(info.get("type") or ""),
            options=string_map(info.get("options")),
            description=str(info.get("description") or ""),
            accessor=str(info.get("accessor") or ""),
        )
    return found


class SysOperations(AuthorityBase):
    """``sys/*`` and the token store, relative to this namespace."""

    # -- ACL policies ---------------------------------------------------------------------
    def read_policy(self, name: str) -> str | None:
        """The policy's HCL; None if there is no such policy."""
        with self._op("read_policy", name):
            try:
                response = self._client.sys.read_acl_policy(name)
            except hvac.exceptions.InvalidPath:
                return None
            return str(data_of(response)["policy"])

    def write_policy(self, name: str, hcl: str) -> None:
        with self._op("write_policy", name):
            self._client.sys.create_or_update_acl_policy(name, hcl, pretty_print=False)

    def delete_policy(self, name: str) -> None:
        """Remove the policy; a missing one is not an error."""
        with self._op("delete_policy", name):
            self._client.sys.delete_acl_policy(name)

    def list_policies(self) -> list[str]:
        with self._op("list_policies", "sys/policies/acl"):
            return self._list("/v1/sys/policies/acl", paginate=False)

    # -- secrets engines and auth methods -------------------------------------------------
    def list_secret_mounts(self) -> dict[str, MountInfo]:
        """Secrets engines by mount path (no trailing slash), e.g. ``"secret"``."""
        with self._op("list_secret_mounts", "sys/mounts"):
            return _mounts(self._client.sys.list_mounted_secrets_engines())

    def enable_secrets_engine(
        self,
        type_: str,
        path: str,
        options: Mapping[str, str] | None = None,
        *,
        description: str | None = None,
    ) -> None:
        """Mount an engine; a path already in use raises :class:`AlreadyExistsError`."""
        path = self._checked("enable_secrets_engine", path)
        body: dict[str, Any] = {"type": type_}
        if options:
            body["options"] = dict(options)
        if description is not None:
            body["description"] = description
        with self._op("enable_secrets_engine", path):
            self._request("post", f"/v1/sys/mounts/{quote(path)}", json=body)

    def disable_secrets_engine(self, path: str) -> None:
        """Unmount (revoking its leases, deleting its data); a missing mount is not an error."""
        path = self._checked("disable_secrets_engine", path)
        with self._op("disable_secrets_engine", path):
            self._client.sys.disable_secrets_engine(path)

    def list_auth_mounts(self) -> dict[str, MountInfo]:
        """Auth methods by mount path (no trailing slash), e.g. ``"kubernetes"``."""
        with self._op("list_auth_mounts", "sys/auth"):
            return _mounts(self._client.sys.list_auth_methods())

    def enable_auth(self, type_: str, path: str, *, description: str | None = None) -> None:
        """Enable an auth method; a path already in use raises :class:`AlreadyExistsError`."""
        path = self._checked("enable_auth", path)
        with self._op("enable_auth", path):
            self._client.sys.enable_auth_method(type_, path=path, description=description)

    def disable_auth(self, path: str) -> None:
        """Disable an auth method (revoking its tokens); a missing one is not an error."""
        path = self._checked("disable_auth", path)
        with self._op("disable_auth", path):
            self._client.sys.disable_auth_method(path)

    # -- namespaces (children of this namespace) ------------------------------------------
    def list_namespaces(self) -> list[str]:
        """Names of the child namespaces (without the trailing slash)."""
        with self._op("list_namespaces", "sys/namespaces"):
            keys = self._list("/v1/sys/namespaces", paginate=False)
        return [key.rstrip("/") for key in keys]

    def namespace_exists(self, name: str) -> bool:
        name = self._checked("namespace_exists", name)
        with self._op("namespace_exists", name):
            try:
                self._request("get", f"/v1/sys/namespaces/{quote(name)}")
            except hvac.exceptions.InvalidPath:
                return False
            return True

    def create_namespace(self, name: str) -> None:
        """Create a child namespace; an existing one is left as it is."""
        name = self._checked("create_namespace", name)
        with self._op("create_namespace", name):
            self._client.sys.create_namespace(name)

    def delete_namespace(self, name: str) -> str:
        """Start deleting a child namespace and all it holds.

        Deletion is asynchronous: the answer is ``"in-progress"``, or ``"absent"`` when there
        was nothing to delete. A namespace that still has children is refused (422).
        """
        name = self._checked("delete_namespace", name)
        with self._op("delete_namespace", name):
            response = self._client.sys.delete_namespace(name)
        status = data_of(response).get("status")
        return str(status) if status else "absent"

    # -- tokens ---------------------------------------------------------------------------
    def create_token(
        self,
        policies: Iterable[str],
        *,
        ttl: str | int,
        renewable: bool = True,
        no_parent: bool = False,
        display_name: str,
    ) -> str:
        """A new service token (registered for redaction); ``no_parent`` needs sudo/root."""
        with self._op("create_token", display_name):
            response = self._client.auth.token.create(
                policies=list(policies),
                ttl=str(ttl) if isinstance(ttl, str) else f"{int(ttl)}s",
                renewable=renewable,
                no_parent=no_parent,
                display_name=display_name,
            )
            token = str(response["auth"]["client_token"])
        register_secret(token)
        return token

    def lookup_self(self) -> dict[str, Any]:
        """This token's properties (policies, ttl, accessor...) without the token itself."""
        with self._op("lookup_self", "auth/token/lookup-self"):
            data = dict(data_of(self._client.auth.token.lookup_self()))
        token_id = data.pop("id", None)
        if isinstance(token_id, str):
            register_secret(token_id)
        return data

    def revoke_self(self) -> None:
        """Revoke the token this adapter uses (and its children); it is unusable afterwards."""
        with self._op("revoke_self", "auth/token/revoke-self"):
            self._client.auth.token.revoke_self()

    def revoke_token(self, token: str) -> None:
        """Revoke another token and its children (the message never names the token)."""
        register_secret(token)
        with self._op("revoke_token", "auth/token/revoke"):
            self._client.auth.token.revoke(token)

    # -- seal and health ------------------------------------------------------------------
    def seal_status(self) -> SealStatus:
        with self._op("seal_status", "sys/seal-status"):
            body = self._client.sys.read_seal_status()
            return SealStatus(
                initialized=bool(body["initialized"]),
                sealed=bool(body["sealed"]),
                t=int(body.get("t") or 0),
                n=int(body.get("n") or 0),
                progress=int(body.get("progress") or 0),
            )

    def health(self) -> int:
        """``sys/health`` status code: 200 active, 429 standby, 501 uninitialized, 503 sealed.

        Asked of the root namespace (OpenBao refuses it inside one). Only an unreachable
        authority raises (:class:`AuthorityUnavailableError`).
        """
        url = f"{self.addr.rstrip('/')}/v1/sys/health"
        try:
            self.calls.record("get")
            response = self._client.adapter.session.get(url, timeout=timeout_of(self._client))
        except requests.RequestException as exc:
            raise errors.unreachable(
                self.addr, exc, operation="health", target="sys/health", namespace=None
            ) from None
        return int(response.status_code)
