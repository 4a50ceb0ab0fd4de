"""chamberlain's own state area in an environment's namespace: applied commit and a lock.

Functions are stateless, so what the issue-secrets step must remember between deliveries lives
in the authority itself, in the KV v2 mount ``chamberlain`` of each environment namespace:

* ``issue-secrets/applied``: the commit last applied, when, by which event, and every secret
  path it declared (a path that was applied but has vanished is drift: ``secret-missing``);
* ``locks/issue-secrets``: who holds the environment's lock, until when.

Both are written with KV v2 check-and-set, so concurrent replicas never overwrite each other:
the loser gets :class:`CasConflictError` (409, transient) and the broker retries.

These documents are chamberlain's bookkeeping, not secrets. They are read and written through
the raw (counting) HTTP client instead of :meth:`Authority.read_secret`, which would register
every field, commit shas included, as a secret value and have them redacted everywhere.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority_errors import CasConflictError
from chamberlain.lazy import lazy_module
from chamberlain.steps.base import TransientError

if TYPE_CHECKING:
    import requests

    from chamberlain.adapters.authority import Authority
else:
    requests = lazy_module("requests")

STATE_MOUNT = "chamberlain"
APPLIED_PATH = "issue-secrets/applied"
LOCK_PATH = "locks/issue-secrets"
LOCK_POLL_S = 0.05


class NotConfiguredError(TransientError):
    """The environment's namespace or mounts do not exist yet (initialize-authority's job)."""

    default_status = 503


@dataclass(frozen=True)
class AppliedRecord:
    """The last commit applied to an environment, and every secret path it declared."""

    commit: str
    applied_at: str
    event_id: str
    paths: frozenset[str]
    version: int = 0  # KV version of the record (the CAS value for the next write)


@dataclass(frozen=True)
class _Doc:
    version: int  # current KV version, 0 when the document never existed
    data: Mapping[str, Any] | None  # None when missing or soft-deleted


class EnvironmentState:
    """The state area of one environment; ``authority`` must be bound to its namespace."""

    def __init__(self, authority: Authority, *, environment: str, mount: str = STATE_MOUNT):
        self.authority = authority
        self.environment = environment
        self.mount = mount
        self._applied_version: int | None = None
        self.last_applied: AppliedRecord | None = None  # what :meth:`applied` last returned

    # -- configuration ----------------------------------------------------------------------

    def check_configured(self, kv_mount: str, auth_mount: str | None = None) -> None:
        """Raise :class:`NotConfiguredError` unless the namespace and the mounts exist."""
        mounts = self._get("/v1/sys/mounts", "check_configured", "sys/mounts")
        missing = [m for m in (self.mount, kv_mount) if f"{m}/" not in _table(mounts)]
        if auth_mount is not None:
            auths = self._get("/v1/sys/auth", "check_configured", "sys/auth")
            if f"{auth_mount}/" not in _table(auths):
                missing.append(f"auth/{auth_mount}")
        if missing:
            raise self._not_configured(f"missing mounts: {', '.join(missing)}")

    # -- applied commit ---------------------------------------------------------------------

    def applied(self) -> AppliedRecord | None:
        """The applied record, or None when nothing was ever applied to this environment."""
        doc = self._read(APPLIED_PATH)
        self._applied_version = doc.version
        self.last_applied = None
        if doc.data is None or not isinstance(doc.data.get("commit"), str):
            return None
        raw = doc.data.get("paths") or ""
        paths = raw.split("\n") if isinstance(raw, str) else list(raw)
        self.last_applied = AppliedRecord(
            commit=str(doc.data["commit"]),
            applied_at=str(doc.data.get("applied_at") or ""),
            event_id=str(doc.data.get("event_id") or ""),
            paths=frozenset(str(p) for p in paths if p),
            version=doc.version,
        )
        return self.last_applied

    def record_applied(
        self, commit: str, event_id: str, paths: frozenset[str] | set[str]
    ) -> AppliedRecord:
        """Record ``commit`` as applied, with CAS on the version :meth:`applied` last saw."""
        cas = self._applied_version
        if cas is None:
            cas = self._read(APPLIED_PATH).version
        applied_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {
            "commit": commit,
            "applied_at": applied_at,
            "event_id": event_id,
            # One string: OpenBao refuses JSON bodies with too many strings (1,000 paths).
            "paths": "\n".join(sorted(paths)),
        }
        version = self._write(APPLIED_PATH, record, cas=cas)
        self._applied_version = version
        self.last_applied = AppliedRecord(
            commit=commit,
            applied_at=applied_at,
            event_id=event_id,
            paths=frozenset(paths),
            version=version,
        )
        return self.last_applied

    # -- lock -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, owner: str, ttl_s: float = 60.0, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the environment's issue-secrets lock for the block.

        Taken when free, released or expired (a crashed holder blocks for ``ttl_s`` at most).
        Waits up to ``wait_s`` for a holder to finish, then raises :class:`CasConflictError`.
        """
        deadline = time.monotonic() + wait_s
        while True:
            version = self._try_lock(owner, ttl_s)
            if version is not None:
                break
            if time.monotonic() >= deadline:
                raise CasConflictError(
                    f"environment {self.environment!r} is being reconciled by another "
                    "delivery (lock held); retry later"
                )
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            # Releasing is best effort: an expired lock is taken over anyway.
            with contextlib.suppress(errors.AuthorityError, TransientError):
                self._write(LOCK_PATH, {"owner": "", "expires_at": 0}, cas=version)

    def _try_lock(self, owner: str, ttl_s: float) -> int | None:
        """The lock document's new version if taken, None if someone else holds it."""
        doc = self._read(LOCK_PATH)
        if doc.data is not None:
            holder = str(doc.data.get("owner") or "")
            expires = float(doc.data.get("expires_at") or 0)
            if holder and holder != owner and expires > time.time():
                return None
        body = {"owner": owner, "expires_at": time.time() + ttl_s}
        try:
            return self._write(LOCK_PATH, body, cas=doc.version)
        except CasConflictError:
            return None

    # -- raw KV access ----------------------------------------------------------------------

    def _read(self, path: str) -> _Doc:
        url = f"/v1/{quote(self.mount)}/data/{quote(path)}"
        status, body = self._call("get", url, "read_state", path)
        if status == 404:
            meta = ((body.get("data") or {}).get("metadata") or {}) if body else {}
            return _Doc(version=int(meta.get("version") or 0), data=None)
        data = body.get("data") or {}
        meta = data.get("metadata") or {}
        version = int(meta.get("version") or 0)
        if meta.get("deletion_time") or meta.get("destroyed") or data.get("data") is None:
            return _Doc(version=version, data=None)
        return _Doc(version=version, data=dict(data["data"]))

    def _write(self, path: str, data: Mapping[str, Any], *, cas: int) -> int:
        url = f"/v1/{quote(self.mount)}/data/{quote(path)}"
        body = {"data": dict(data), "options": {"cas": cas}}
        _, answer = self._call("post", url, "write_state", path, body=body)
        return int((answer.get("data") or {}).get("version") or 0)

    def _get(self, url: str, operation: str, target: str) -> Mapping[str, Any]:
        status, body = self._call("get", url, operation, target)
        if status == 404:
            raise self._not_configured(target)
        return body

    def _call(
        self,
        method: str,
        url: str,
        operation: str,
        target: str,
        *,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, Mapping[str, Any]]:
        """(status, JSON body); 404 for a missing document; errors translated otherwise."""
        adapter = self.authority.client.adapter
        where = f"{self.mount}/{target}" if not target.startswith("sys/") else target
        try:
            response = adapter.request(method, url, json=body, raise_exception=False)
        except requests.RequestException as exc:
            raise errors.unreachable(
                self.authority.addr,
                exc,
                operation=operation,
                target=where,
                namespace=self.authority.namespace,
            ) from None
        if isinstance(response, dict):
            return 200, response
        status = int(response.status_code)
        answer = _json(response)
        if status in (200, 204):
            return status, answer
        problems = [str(e) for e in (answer.get("errors") or [])]
        if status == 404:
            if any("namespace not found" in p or "no handler for route" in p for p in problems):
                raise self._not_configured(f"{where} unavailable")
            return 404, answer
        raise errors.from_status(
            status, problems, operation=operation, target=where, namespace=self.authority.namespace
        )

    def _not_configured(self, detail: str) -> NotConfiguredError:
        return NotConfiguredError(
            f"environment {self.environment} not configured "
            f"(namespace {self.authority.namespace or '(root)'}: {detail})"
        )


def _json(response: requests.Response) -> Mapping[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _table(response: Mapping[str, Any]) -> Mapping[str, Any]:
    data = response.get("data")
    return data if isinstance(data, dict) and data else response
