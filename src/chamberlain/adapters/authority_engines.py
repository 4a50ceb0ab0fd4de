"""Kubernetes auth, the database secrets engine and leases."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chamberlain.adapters.authority_base import AuthorityBase, data_of
from chamberlain.adapters.authority_types import DynamicSecret, LeaseInfo, parse_time, string_map
from chamberlain.lazy import lazy_module
from chamberlain.logs import register_secret, register_secret_data

if TYPE_CHECKING:
    import hvac
else:
    hvac = lazy_module("hvac")


def _duration(value: str | int | None) -> str | None:
    """Seconds (int) or a duration string ("1h") as OpenBao accepts it."""
    if value is None:
        return None
    return value if isinstance(value, str) else f"{int(value)}s"


class EngineOperations(AuthorityBase):
    """Auth and secrets engines beyond KV, and the leases they hand out."""

    # -- Kubernetes auth ------------------------------------------------------------------
    def write_kubernetes_config(
        self,
        mount: str,
        *,
        host: str,
        ca_pem: str,
        token_reviewer_jwt: str | None = None,
        disable_local_ca_jwt: bool = True,
    ) -> None:
        """Where the cluster's API is and how to call its TokenReview.

        ``ca_pem`` is required even for an http host when ``disable_local_ca_jwt`` is set.
        """
        mount = self._checked("write_kubernetes_config", mount)
        if token_reviewer_jwt:
            register_secret(token_reviewer_jwt)
        with self._op("write_kubernetes_config", f"auth/{mount}/config"):
            self._client.auth.kubernetes.configure(
                kubernetes_host=host,
                kubernetes_ca_cert=ca_pem,
                token_reviewer_jwt=token_reviewer_jwt,
                disable_local_ca_jwt=disable_local_ca_jwt,
                mount_point=mount,
            )

    def read_kubernetes_role(self, mount: str, name: str) -> dict[str, Any] | None:
        mount = self._checked("read_kubernetes_role", mount)
        with self._op("read_kubernetes_role", f"auth/{mount}/role/{name}"):
            try:
                response = self._request(
                    "get", f"/v1/auth/{quote(mount)}/role/{quote(name, safe='')}"
                )
            except hvac.exceptions.InvalidPath:
                return None
            return dict(data_of(response))

    def write_kubernetes_role(
        self,
        mount: str,
        name: str,
        *,
        service_account_names: Iterable[str],
        namespaces: Iterable[str],
        policies: Iterable[str],
        ttl: str | int | None = None,
        audience: str | None = None,
    ) -> None:
        """Bind service accounts in ``namespaces`` to ``policies`` (create or replace)."""
        mount = self._checked("write_kubernetes_role", mount)
        with self._op("write_kubernetes_role", f"auth/{mount}/role/{name}"):
            self._client.auth.kubernetes.create_role(
                name,
                bound_service_account_names=list(service_account_names),
                bound_service_account_namespaces=list(namespaces),
                policies=list(policies),
                ttl=_duration(ttl),
                audience=audience,
                mount_point=mount,
            )

    def delete_kubernetes_role(self, mount: str, name: str) -> None:
        """Remove the role; a missing one is not an error."""
        mount = self._checked("delete_kubernetes_role", mount)
        with self._op("delete_kubernetes_role", f"auth/{mount}/role/{name}"):
            self._client.auth.kubernetes.delete_role(name, mount_point=mount)

    def list_kubernetes_roles(self, mount: str) -> list[str]:
        mount = self._checked("list_kubernetes_roles", mount)
        with self._op("list_kubernetes_roles", f"auth/{mount}/role"):
            return self._list(f"/v1/auth/{quote(mount)}/role", paginate=False)

    def login_kubernetes(self, mount: str, role: str, jwt: str) -> str:
        """Exchange a service-account JWT for a client token (registered for redaction).

        This adapter keeps its own token; connect a new one with the returned token.
        """
        mount = self._checked("login_kubernetes", mount)
        register_secret(jwt)
        with self._op("login_kubernetes", f"auth/{mount}/login as {role}"):
            response = self._client.auth.kubernetes.login(
                role, jwt, use_token=False, mount_point=mount
            )
            token = str(response["auth"]["client_token"])
        register_secret(token)
        return token

    # -- database secrets engine ----------------------------------------------------------
    def write_database_config(
        self,
        mount: str,
        name: str,
        *,
        plugin_name: str,
        connection_url: str,
        username: str,
        password: str,
        allowed_roles: Iterable[str],
        verify_connection: bool = True,
    ) -> None:
        """A connection (``connection_url`` uses ``{{username}}``/``{{password}}`` templates)."""
        mount = self._checked("write_database_config", mount)
        register_secret(password)
        with self._op("write_database_config", f"{mount}/config/{name}"):
            self._client.secrets.database.configure(
                name,
                plugin_name,
                verify_connection=verify_connection,
                allowed_roles=list(allowed_roles),
                mount_point=mount,
                connection_url=connection_url,
                username=username,
                password=password,
            )

    def write_database_role(
        self,
        mount: str,
        name: str,
        *,
        db_name: str,
        creation_statements: Iterable[str],
        revocation_statements: Iterable[str] | None = None,
        default_ttl: str | int,
        max_ttl: str | int,
    ) -> None:
        """A dynamic role: how each leased user is created and dropped, and for how long."""
        mount = self._checked("write_database_role", mount)
        with self._op("write_database_role", f"{mount}/roles/{name}"):
            self._client.secrets.database.create_role(
                name,
                db_name,
                list(creation_statements),
                default_ttl=_duration(default_ttl),
                max_ttl=_duration(max_ttl),
                revocation_statements=(
                    None if revocation_statements is None else list(revocation_statements)
                ),
                mount_point=mount,
            )

    def generate_credentials(self, mount: str, role: str) -> DynamicSecret:
        """A fresh leased credential; its values are registered for redaction."""
        mount = self._checked("generate_credentials", mount)
        with self._op("generate_credentials", f"{mount}/creds/{role}"):
            response = self._client.secrets.database.generate_credentials(role, mount_point=mount)
            values = string_map(response["data"])
            register_secret_data(values)
            return DynamicSecret(
                lease_id=str(response["lease_id"]),
                lease_duration=int(response["lease_duration"]),
                renewable=bool(response["renewable"]),
                data=values,
            )

    def delete_database_role(self, mount: str, name: str) -> None:
        """Remove the role (existing leases stay valid); a missing one is not an error."""
        mount = self._checked("delete_database_role", mount)
        with self._op("delete_database_role", f"{mount}/roles/{name}"):
            self._client.secrets.database.delete_role(name, mount_point=mount)

    def delete_database_config(self, mount: str, name: str) -> None:
        """Remove the connection; a missing one is not an error."""
        mount = self._checked("delete_database_config", mount)
        with self._op("delete_database_config", f"{mount}/config/{name}"):
            self._client.secrets.database.delete_connection(name, mount_point=mount)

    # -- leases ---------------------------------------------------------------------------
    def list_leases(self, prefix: str) -> list[str]:
        """Every lease id below ``prefix`` (e.g. ``database/creds/app``), recursively."""
        prefix = self._checked("list_leases", prefix)
        with self._op("list_leases", prefix):
            keys = self._list(f"/v1/sys/leases/lookup/{quote(prefix)}/", paginate=False)
        found: list[str] = []
        for key in keys:
            child = f"{prefix}/{key}" if prefix else key
            if key.endswith("/"):
                found.extend(self.list_leases(child.rstrip("/")))
            else:
                found.append(child)
        return found

    def lookup_lease(self, lease_id: str) -> LeaseInfo | None:
        """The lease's times and TTL; None if it expired or was revoked."""
        with self._op("lookup_lease", lease_id):
            try:
                response = self._client.sys.read_lease(lease_id)
            except hvac.exceptions.InvalidRequest as exc:
                if "invalid lease" in " ".join(exc.errors or []):
                    return None
                raise
            data = data_of(response)
            return LeaseInfo(
                id=str(data["id"]),
                issue_time=parse_time(data.get("issue_time")),
                expire_time=parse_time(data.get("expire_time")),
                ttl=int(data.get("ttl") or 0),
                renewable=bool(data.get("renewable")),
                last_renewal=parse_time(data.get("last_renewal")),
            )

    def renew_lease(self, lease_id: str, increment: int | None = None) -> LeaseInfo:
        """Extend the lease by ``increment`` seconds (capped by max TTL); one call.

        A lease that no longer exists raises :class:`LeaseNotFoundError` (issue a new one).
        ``expire_time`` is computed from the answer's TTL; ``issue_time`` is not known here.
        """
        with self._op("renew_lease", lease_id):
            response = self._client.sys.renew_lease(lease_id, increment=increment)
            ttl = int(response["lease_duration"])
            return LeaseInfo(
                id=str(response.get("lease_id") or lease_id),
                issue_time=None,
                expire_time=datetime.now(timezone.utc) + timedelta(seconds=ttl),
                ttl=ttl,
                renewable=bool(response.get("renewable")),
            )

    def revoke_lease(self, lease_id: str) -> None:
        """Revoke one lease (and the credential behind it); an unknown lease is not an error."""
        with self._op("revoke_lease", lease_id):
            self._client.sys.revoke_lease(lease_id)

    def revoke_prefix(self, prefix: str, *, force: bool = False, sync: bool = True) -> None:
        """Revoke every lease below ``prefix``.

        ``force`` (sudo) drops the leases even when the backend fails to revoke the credential;
        ``sync=False`` returns before the revocations are done.
        """
        prefix = self._checked("revoke_prefix", prefix)
        kind = "revoke-force" if force else "revoke-prefix"
        with self._op(kind.replace("-", "_"), prefix):
            body = None if force else {"sync": sync}
            self._request("put", f"/v1/sys/leases/{kind}/{quote(prefix)}", json=body)
