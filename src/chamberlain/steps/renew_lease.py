"""The renew-lease step: a lease past its renewal point is renewed in place or replaced.

Accepted event: ``dev.chamberlain.lease.expiring.v1`` (from watch-leases). The KV metadata of
the event's path (docs/leases.md) decides, the clock passed in:

* the lease is not the path's current lease: already re-issued (the event names the superseded
  one) or never chamberlain's -> 202, nothing changes; a re-issue whose consumers were not
  nudged yet (a crash after the KV write) is nudged now;
* the recorded ``lease-renewed-for`` equals the event's ``expiresAt``: a duplicate -> 202;
* renewable, and now + ttl still within ``lease-max-expires`` -> renew by ttl, record the new
  expiry, reply ``dev.chamberlain.lease.renewed.v1``;
* otherwise (or the lease is already gone) re-issue: new credentials -> new KV version with
  check-and-set -> lease record (the old lease retiring until now + overlap, revoked by
  watch-leases) -> consumers nudged once for the new version -> reply
  ``dev.chamberlain.lease.reissued.v1``.

Two replicas re-issuing at once: one wins the CAS; the other revokes what it issued and answers
409, and its redelivery is a no-op. The overlap defaults to the part of a period left at the
renewal point, ``ttl * (1 - renewal_at)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.authority_errors import LeaseNotFoundError
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.logs import get_logger, log
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import Consumer, DynamicCredential, Intent
from chamberlain.planner.leases import (
    DATABASE_MOUNT,
    K_EXPIRES,
    K_PROPAGATED,
    K_RENEWED_FOR,
    CredentialLeases,
    LeaseRecord,
    decide,
    default_overlap,
    format_time,
    parse_time,
    role_key,
)
from chamberlain.steps.base import PermanentError, Step
from chamberlain.steps.intent_loading import IntentLoader
from chamberlain.steps.issue_credentials import (
    Clock,
    Propagate,
    PropagationRequest,
    RoleTerms,
    issue_roles,
    propagator_from_env,
    read_leases,
    role_terms,
    utc_now,
)
from chamberlain.steps.watch_leases import EnvironmentDirectory

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority, SecretMetadata

FUNCTION = "renew-lease"
SOURCE = f"/chamberlain/{FUNCTION}"

_log = get_logger("chamberlain.renew-lease")


class RenewLease:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        directory: EnvironmentDirectory,
        *,
        propagate: Propagate | None = None,
        clock: Clock = utc_now,
        overlap: timedelta | None = None,
        mount: str = DATABASE_MOUNT,
    ) -> None:
        self._identity = authority
        self.directory = directory
        self.propagate = propagate
        self.clock = clock
        self.overlap = overlap
        self.mount = mount

    @property
    def authority(self) -> Authority:
        """Resolved per delivery: the step is built before its identity exists."""
        return resolve(self._identity)

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        if event.get_type() != T.LEASE_EXPIRING:
            raise PermanentError(f"{FUNCTION} does not handle {event.get_type()}", status=400)
        data = event.get_data()
        if not isinstance(data, Mapping):
            raise PermanentError("lease.expiring without data", status=400)
        environment = str(data["environment"])
        path = str(data["path"])
        lease_id = str(data["leaseId"])
        expires_at = _normalized(str(data["expiresAt"]))
        intent = self.directory.intent()
        authority = self.authority.for_namespace(self.directory.namespace_of(environment, intent))
        kv_mount = self.directory.kv_mount(intent)
        metadata, leases = read_leases(authority, path, kv_mount)
        record = leases.current(lease_id)
        if metadata is None or record is None:
            self._catch_up(
                authority, environment, path, lease_id, metadata, leases, kv_mount, intent
            )
            return _ignored(f"{lease_id} is not the current lease of {path}", path=path)
        if record.renewed_for == expires_at:
            return _ignored(f"{lease_id} was already renewed for this expiry", path=path)
        now = self.clock()
        info = authority.lookup_lease(lease_id)
        choice = (
            "reissue"
            if info is None
            else decide(
                renewable=info.renewable, now=now, ttl=record.ttl, max_expires=record.max_expires
            )
        )
        if choice == "renew":
            try:
                renewed = authority.renew_lease(lease_id, increment=record.ttl)
            except LeaseNotFoundError:
                choice = "reissue"
            else:
                expires = renewed.expire_time or now + timedelta(seconds=renewed.ttl)
                patch: dict[str, str | None] = {
                    role_key(K_EXPIRES, record.role, leases.roles): format_time(expires),
                    role_key(K_RENEWED_FOR, record.role, leases.roles): expires_at,
                }
                authority.patch_custom_metadata(path, patch, mount=kv_mount)
                log(
                    _log,
                    "INFO",
                    f"lease renewed at {path}",
                    environment=environment,
                    path=path,
                    lease_id=lease_id,
                    expires_at=format_time(expires),
                    ttl=renewed.ttl,
                )
                return make_event(
                    T.LEASE_RENEWED,
                    {
                        "environment": environment,
                        "path": path,
                        "leaseId": lease_id,
                        "expiresAt": format_time(expires),
                        "ttl": max(0, renewed.ttl),
                    },
                    source=SOURCE,
                    subject=path,
                )
        return self._reissue(
            authority, environment, path, record, metadata, leases, kv_mount, intent
        )

    # -- re-issue -------------------------------------------------------------------------------

    def _reissue(
        self,
        authority: Authority,
        environment: str,
        path: str,
        record: LeaseRecord,
        metadata: SecretMetadata,
        leases: CredentialLeases,
        kv_mount: str,
        intent: Intent | None,
    ) -> BaseCloudEvent:
        now = self.clock()
        terms = self._terms(record, environment, path, intent)
        overlap = self.overlap or default_overlap(record.ttl, leases.renewal_at)
        done = issue_roles(
            authority,
            path=path,
            kv_mount=kv_mount,
            terms=[terms],
            roles=leases.roles,
            renewal_at=leases.renewal_at,
            now=now,
            metadata=metadata,
            previous=leases.records,
            overlap=overlap,
            mount=self.mount,
        )
        fresh = done.records[record.role]
        log(
            _log,
            "INFO",
            f"lease re-issued at {path}",
            environment=environment,
            path=path,
            lease_id=record.lease_id,
            new_lease_id=fresh.lease_id,
            version=done.version,
            revoke_old_after=format_time(fresh.revoke_after) if fresh.revoke_after else None,
        )
        self._nudge(authority, environment, path, fresh, done.version, leases, kv_mount, intent)
        return make_event(
            T.LEASE_REISSUED,
            {
                "environment": environment,
                "path": path,
                "leaseId": record.lease_id,
                "newLeaseId": fresh.lease_id,
                "expiresAt": format_time(fresh.expires),
                "ttl": max(0, int((fresh.expires - now).total_seconds())),
            },
            source=SOURCE,
            subject=path,
        )

    def _terms(
        self, record: LeaseRecord, environment: str, path: str, intent: Intent | None
    ) -> RoleTerms:
        """The role's current ttl/maxTtl from intent (changes apply at re-issue), else as
        recorded."""
        credential = _credential(intent, environment, path)
        if credential is not None:
            for terms in role_terms(credential):
                if terms.name == record.role:
                    return terms
        return RoleTerms(record.role, record.ttl, record.max_ttl)

    def _nudge(
        self,
        authority: Authority,
        environment: str,
        path: str,
        record: LeaseRecord,
        version: int,
        leases: CredentialLeases,
        kv_mount: str,
        intent: Intent | None,
    ) -> None:
        """Nudge consumers once for ``version``, then record that it was done."""
        if self.propagate is None:
            return
        credential = _credential(intent, environment, path)
        consumers: tuple[Consumer, ...] = credential.consumers if credential else ()
        self.propagate(
            PropagationRequest(
                environment=environment,
                path=path,
                version=version,
                consumers=consumers,
                reason="lease re-issued",
            )
        )
        patch: dict[str, str | None] = {
            role_key(K_PROPAGATED, record.role, leases.roles): str(version)
        }
        authority.patch_custom_metadata(path, patch, mount=kv_mount)

    def _catch_up(
        self,
        authority: Authority,
        environment: str,
        path: str,
        lease_id: str,
        metadata: SecretMetadata | None,
        leases: CredentialLeases,
        kv_mount: str,
        intent: Intent | None,
    ) -> None:
        """A redelivery after a re-issue that crashed before nudging: nudge now."""
        if metadata is None or self.propagate is None:
            return
        for record in leases.records.values():
            if record.old_lease_id == lease_id and record.propagated < metadata.current_version:
                self._nudge(
                    authority,
                    environment,
                    path,
                    record,
                    metadata.current_version,
                    leases,
                    kv_mount,
                    intent,
                )


def _credential(intent: Intent | None, environment: str, path: str) -> DynamicCredential | None:
    if intent is None:
        return None

    resolved = intent.resolve_environment(environment)
    template = resolved[1] if resolved is not None else environment
    return next(
        (d for d in intent.dynamic_credentials if d.path == path and d.applies_to(template)),
        None,
    )


def _normalized(value: str) -> str:
    parsed = parse_time(value)
    return format_time(parsed) if parsed is not None else value


def _ignored(why: str, **fields: str) -> BaseCloudEvent | None:
    log(_log, "INFO", f"ignored: {why}", reason=why, **fields)
    return None


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see :mod:`chamberlain.settings`)."""
    from chamberlain.adapters.intent_source import IntentSource
    from chamberlain.settings import Settings

    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    directory = EnvironmentDirectory(
        IntentLoader(IntentSource(settings.cache_dir, environ=env)),
        intent_repo=settings.intent_repo,
        branch=settings.intent_branch,
        base_namespace=settings.authority_namespace,
        default_kv_mount=env.get("CHAMBERLAIN_KV_MOUNT") or "secret",
    )
    return RenewLease(
        FunctionIdentity(FUNCTION, settings, environ), directory, propagate=propagator_from_env(env)
    )
