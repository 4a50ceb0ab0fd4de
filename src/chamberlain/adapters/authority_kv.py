"""KV v2 operations: secrets, their versions and chamberlain's ``custom_metadata``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chamberlain.adapters.authority_base import AuthorityBase, data_of
from chamberlain.adapters.authority_types import (
    SecretMetadata,
    SecretVersion,
    parse_time,
    string_map,
)
from chamberlain.lazy import lazy_module
from chamberlain.logs import register_secret_data

if TYPE_CHECKING:
    import hvac
else:
    hvac = lazy_module("hvac")

_MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class KvOperations(AuthorityBase):
    """KV v2 on ``kv_mount`` (or ``mount=``); paths are relative to the mount."""

    def _kv(self, operation: str, path: str, mount: str | None) -> tuple[str, str, str]:
        """(mount, clean path, "mount/path" for messages)."""
        chosen = (mount or self.kv_mount).strip("/")
        clean = self._checked(operation, path)
        return chosen, clean, f"{chosen}/{clean}"

    def read_metadata(self, path: str, *, mount: str | None = None) -> SecretMetadata | None:
        """Versions and custom metadata of ``path``; None if nothing was ever written there."""
        mount, path, target = self._kv("read_metadata", path, mount)
        with self._op("read_metadata", target):
            try:
                response = self._client.secrets.kv.v2.read_secret_metadata(path, mount_point=mount)
            except hvac.exceptions.InvalidPath:
                return None
            return SecretMetadata.from_api(data_of(response))

    def read_secret(
        self, path: str, *, version: int | None = None, mount: str | None = None
    ) -> SecretVersion | None:
        """The latest (or given) version; None if missing, soft-deleted or destroyed.

        Every value is registered for log redaction before it is returned.
        """
        mount, path, target = self._kv("read_secret", path, mount)
        with self._op("read_secret", target):
            try:
                response = self._client.secrets.kv.v2.read_secret_version(
                    path, version=version, mount_point=mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            body = data_of(response)
            if body.get("data") is None:
                return None
            values = string_map(body["data"])
            register_secret_data(values)
            meta = body.get("metadata") or {}
            return SecretVersion(
                data=values,
                version=int(meta["version"]),
                created_time=parse_time(meta.get("created_time")),
                custom_metadata=string_map(meta.get("custom_metadata")),
            )

    def write_secret(
        self, path: str, data: Mapping[str, str], *, cas: int, mount: str | None = None
    ) -> int:
        """Write a new version if the current one is ``cas`` (0: only if absent); its number.

        A mismatch raises :class:`CasConflictError` (transient: re-read and retry).
        """
        mount, path, target = self._kv("write_secret", path, mount)
        register_secret_data(data)
        with self._op("write_secret", target):
            response = self._client.secrets.kv.v2.create_or_update_secret(
                path, secret=dict(data), cas=cas, mount_point=mount
            )
            return int(data_of(response)["version"])

    def write_metadata(
        self,
        path: str,
        *,
        custom_metadata: Mapping[str, str],
        max_versions: int | None = None,
        delete_version_after: str | None = None,
        cas_required: bool | None = None,
        mount: str | None = None,
    ) -> None:
        """Replace ``custom_metadata`` whole (as the API does); other settings only if given."""
        mount, path, target = self._kv("write_metadata", path, mount)
        body: dict[str, Any] = {"custom_metadata": dict(custom_metadata)}
        optional = {
            "max_versions": max_versions,
            "delete_version_after": delete_version_after,
            "cas_required": cas_required,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        with self._op("write_metadata", target):
            self._request("post", f"/v1/{quote(mount)}/metadata/{quote(path)}", json=body)

    def patch_custom_metadata(
        self, path: str, changes: Mapping[str, str | None], *, mount: str | None = None
    ) -> bool:
        """Merge ``changes`` into ``custom_metadata`` (None removes a key) in one call.

        OpenBao applies a JSON merge patch to the metadata (``PATCH``), so concurrent writers of
        different keys do not overwrite each other. False if the path has no metadata.
        """
        mount, path, target = self._kv("patch_custom_metadata", path, mount)
        body = json.dumps({"custom_metadata": dict(changes)})
        with self._op("patch_custom_metadata", target):
            try:
                self._request(
                    "patch",
                    f"/v1/{quote(mount)}/metadata/{quote(path)}",
                    data=body,
                    headers=dict(_MERGE_PATCH),
                )
            except hvac.exceptions.InvalidPath:
                return False
            return True

    def list_keys(self, prefix: str, *, mount: str | None = None) -> list[str]:
        """One level below ``prefix`` (folders end in "/"); [] when there is nothing."""
        mount, prefix, target = self._kv("list_keys", prefix, mount)
        folder = f"{quote(prefix)}/" if prefix else ""
        with self._op("list_keys", target):
            return self._list(f"/v1/{quote(mount)}/metadata/{folder}", paginate=True)

    def walk(self, prefix: str, *, mount: str | None = None) -> list[str]:
        """Every leaf path below ``prefix``, recursively, depth first in key order."""
        clean = self._checked("walk", prefix)
        leaves: list[str] = []
        for key in self.list_keys(clean, mount=mount):
            child = f"{clean}/{key}" if clean else key
            if key.endswith("/"):
                leaves.extend(self.walk(child.rstrip("/"), mount=mount))
            else:
                leaves.append(child)
        return leaves

    def delete_latest(self, path: str, *, mount: str | None = None) -> None:
        """Soft-delete the latest version (undeletable; metadata and history stay)."""
        mount, path, target = self._kv("delete_latest", path, mount)
        with self._op("delete_latest", target):
            self._client.secrets.kv.v2.delete_latest_version_of_secret(path, mount_point=mount)

    def destroy_versions(
        self, path: str, versions: Iterable[int], *, mount: str | None = None
    ) -> None:
        """Permanently remove the data of ``versions`` (their metadata stays, ``destroyed``)."""
        mount, path, target = self._kv("destroy_versions", path, mount)
        with self._op("destroy_versions", target):
            self._client.secrets.kv.v2.destroy_secret_versions(
                path, versions=[int(v) for v in versions], mount_point=mount
            )

    def delete_metadata(self, path: str, *, mount: str | None = None) -> None:
        """Remove every version and the metadata; a missing path is not an error."""
        mount, path, target = self._kv("delete_metadata", path, mount)
        with self._op("delete_metadata", target):
            self._client.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point=mount)
