"""Pure lease logic for dynamic credentials: names, the KV metadata record, and decisions.

Leases live in the authority; what chamberlain must remember about them (which lease backs the
value at a path, when it may no longer be renewed, which superseded lease to revoke and when)
is kept in the KV v2 ``custom_metadata`` of the credential's path, so the watch and renew
steps stay stateless. This module turns that record into typed values and back, and makes the
three decisions the steps need, with the clock passed in (tests control time):

* when a lease reaches its renewal point (``renewal_at`` of its current period, default 0.66);
* renew in place, or re-issue (not renewable, or a full increment would pass ``maxTtl``);
* when a superseded lease is revoked (``revoke-after``: re-issue time + overlap).

Engine names derive from the credential's path, reversibly, because a lease id names only its
engine role: ``platform-data/postgres/reporting`` + role ``ro`` ->
connection ``platform-data.postgres.reporting``, role ``platform-data.postgres.reporting.ro``,
leases ``database/creds/platform-data.postgres.reporting.ro/<id>``. Path segments and role
names never contain dots (path rules, name rules), so the split is unambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeAlias

DATABASE_MOUNT = "database"
DEFAULT_RENEWAL_AT = 0.66

# custom_metadata keys (per role; suffixed ".<role>" when a credential has several roles)
K_ROLE = "role"  # path-level: the role name, or the comma-separated role names
K_RENEWAL_AT = "lease-renewal-at"  # path-level: fraction of a lease period before renewing
K_LEASE_ID = "lease-id"
K_EXPIRES = "lease-expires"
K_TTL = "lease-ttl"  # seconds: the role's ttl, also the renewal increment
K_MAX_TTL = "lease-max-ttl"
K_MAX_EXPIRES = "lease-max-expires"
K_RENEWABLE = "lease-renewable"
K_ISSUED = "lease-issued"
K_OLD_LEASE = "old-lease-id"
K_REVOKE_AFTER = "old-lease-revoke-after"
K_PROPAGATED = "lease-propagated"  # the KV version consumers were last nudged for
K_RENEWED_FOR = "lease-renewed-for"  # expiry named by the last lease.expiring acted on
ROLE_FIELDS = (
    K_LEASE_ID,
    K_EXPIRES,
    K_TTL,
    K_MAX_TTL,
    K_MAX_EXPIRES,
    K_RENEWABLE,
    K_ISSUED,
    K_OLD_LEASE,
    K_REVOKE_AFTER,
    K_PROPAGATED,
    K_RENEWED_FOR,
)
LEASE_KEYS = frozenset({K_ROLE, K_RENEWAL_AT, *ROLE_FIELDS})

Decision: TypeAlias = Literal["renew", "reissue"]


class LeaseNameError(ValueError):
    """A lease id or engine role name that chamberlain did not make."""


# ---- names ------------------------------------------------------------------------------------


def connection_name(path: str) -> str:
    """The database engine connection of the credential at ``path``."""
    return ".".join(path.strip("/").split("/"))


def engine_role(path: str, role: str) -> str:
    """The engine role that issues ``role``'s leases for the credential at ``path``."""
    return f"{connection_name(path)}.{role}"


def parse_engine_role(name: str) -> tuple[str, str]:
    """Inverse of :func:`engine_role`: (credential path, role)."""
    parts = name.split(".")
    if len(parts) < 2 or not all(parts):
        raise LeaseNameError(f"{name!r} is not an engine role chamberlain made")
    return "/".join(parts[:-1]), parts[-1]


def creds_prefix(mount: str = DATABASE_MOUNT) -> str:
    """Where the engine's leases live (what watch-leases lists)."""
    return f"{mount}/creds"


def lease_engine_role(lease_id: str, mount: str = DATABASE_MOUNT) -> str:
    """The engine role of ``mount/creds/<role>/<id>``."""
    prefix = creds_prefix(mount) + "/"
    rest = lease_id[len(prefix) :] if lease_id.startswith(prefix) else ""
    role, sep, lease = rest.partition("/")
    if not (role and sep and lease):
        raise LeaseNameError(f"lease {lease_id!r} is not under {prefix}")
    return role


def credential_of_lease(lease_id: str, mount: str = DATABASE_MOUNT) -> tuple[str, str]:
    """(credential path, role) a lease id belongs to."""
    return parse_engine_role(lease_engine_role(lease_id, mount))


# ---- times ------------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds (what the metadata and events carry)."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# ---- the record -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """The lease behind one role's credential at a path, as the KV metadata records it."""

    role: str
    lease_id: str
    expires: datetime
    ttl: int
    max_ttl: int
    max_expires: datetime
    renewable: bool
    issued: datetime
    old_lease_id: str | None = None
    revoke_after: datetime | None = None
    propagated: int = 0
    renewed_for: str | None = None


@dataclass(frozen=True)
class CredentialLeases:
    """Every role's lease at one path (``records`` lacks roles never issued)."""

    roles: tuple[str, ...]
    renewal_at: float
    records: Mapping[str, LeaseRecord]

    def current(self, lease_id: str) -> LeaseRecord | None:
        return next((r for r in self.records.values() if r.lease_id == lease_id), None)

    def retiring(self, lease_id: str) -> LeaseRecord | None:
        return next((r for r in self.records.values() if r.old_lease_id == lease_id), None)


def role_key(name: str, role: str, roles: Sequence[str]) -> str:
    """The metadata key of field ``name`` for ``role`` (plain when there is one role)."""
    return name if len(roles) <= 1 else f"{name}.{role}"


def data_keys(role: str, roles: Sequence[str]) -> tuple[str, str]:
    """KV data keys of a role's username and password (plain when there is one role)."""
    if len(roles) <= 1:
        return "username", "password"
    return f"{role}.username", f"{role}.password"


def encode_record(
    record: LeaseRecord, roles: Sequence[str], *, renewal_at: float
) -> dict[str, str | None]:
    """The metadata patch that stores ``record`` (None removes an emptied key)."""
    values: dict[str, str | None] = {
        K_LEASE_ID: record.lease_id,
        K_EXPIRES: format_time(record.expires),
        K_TTL: str(record.ttl),
        K_MAX_TTL: str(record.max_ttl),
        K_MAX_EXPIRES: format_time(record.max_expires),
        K_RENEWABLE: "true" if record.renewable else "false",
        K_ISSUED: format_time(record.issued),
        K_OLD_LEASE: record.old_lease_id,
        K_REVOKE_AFTER: format_time(record.revoke_after) if record.revoke_after else None,
        K_PROPAGATED: str(record.propagated) if record.propagated else None,
        K_RENEWED_FOR: record.renewed_for,
    }
    patch = {role_key(k, record.role, roles): v for k, v in values.items()}
    patch[K_ROLE] = ",".join(roles)
    patch[K_RENEWAL_AT] = f"{renewal_at:g}"
    return patch


def decode(metadata: Mapping[str, str]) -> CredentialLeases:
    """The lease records in a path's ``custom_metadata`` (incomplete records are skipped)."""
    roles = tuple(r for r in (metadata.get(K_ROLE) or "").split(",") if r)
    try:
        renewal_at = float(metadata.get(K_RENEWAL_AT) or DEFAULT_RENEWAL_AT)
    except ValueError:
        renewal_at = DEFAULT_RENEWAL_AT
    if not 0 < renewal_at < 1:
        renewal_at = DEFAULT_RENEWAL_AT
    records: dict[str, LeaseRecord] = {}
    for role in roles:
        record = _decode_role(metadata, role, roles)
        if record is not None:
            records[role] = record
    return CredentialLeases(roles=roles, renewal_at=renewal_at, records=records)


def _decode_role(
    metadata: Mapping[str, str], role: str, roles: Sequence[str]
) -> LeaseRecord | None:
    def get(name: str) -> str | None:
        return metadata.get(role_key(name, role, roles)) or None

    lease_id = get(K_LEASE_ID)
    expires = parse_time(get(K_EXPIRES))
    max_expires = parse_time(get(K_MAX_EXPIRES))
    issued = parse_time(get(K_ISSUED))
    if lease_id is None or expires is None or max_expires is None or issued is None:
        return None
    try:
        ttl = int(get(K_TTL) or 0)
        max_ttl = int(get(K_MAX_TTL) or 0)
        propagated = int(get(K_PROPAGATED) or 0)
    except ValueError:
        return None
    return LeaseRecord(
        role=role,
        lease_id=lease_id,
        expires=expires,
        ttl=ttl,
        max_ttl=max_ttl,
        max_expires=max_expires,
        renewable=get(K_RENEWABLE) == "true",
        issued=issued,
        old_lease_id=get(K_OLD_LEASE),
        revoke_after=parse_time(get(K_REVOKE_AFTER)),
        propagated=propagated,
        renewed_for=get(K_RENEWED_FOR),
    )


# ---- decisions --------------------------------------------------------------------------------


def renewal_point(start: datetime, expires: datetime, renewal_at: float) -> datetime:
    """When a lease whose current period runs ``start`` -> ``expires`` should be renewed."""
    return start + (expires - start) * renewal_at


def is_due(start: datetime, expires: datetime, renewal_at: float, now: datetime) -> bool:
    """Whether the lease is past its renewal point at ``now``."""
    return now >= renewal_point(start, expires, renewal_at)


def decide(*, renewable: bool, now: datetime, ttl: int, max_expires: datetime) -> Decision:
    """Renew while a full increment still fits under the maximum lifetime; else re-issue.

    A renewal capped by ``maxTtl`` would only buy a shorter and shorter lease, so the
    credential is replaced instead, while the old one still has time left (the overlap).
    """
    if renewable and ttl > 0 and now + timedelta(seconds=ttl) <= max_expires:
        return "renew"
    return "reissue"


def default_overlap(ttl: int, renewal_at: float) -> timedelta:
    """How long a superseded lease stays valid: the part of a period left at renewal time."""
    return timedelta(seconds=max(1, round(ttl * (1 - renewal_at))))


def revoke_after(now: datetime, overlap: timedelta) -> datetime:
    return now + overlap


def retiring_due(record: LeaseRecord, now: datetime) -> bool:
    """Whether the superseded lease of ``record`` may be revoked now."""
    return (
        record.old_lease_id is not None
        and record.revoke_after is not None
        and now >= record.revoke_after
    )


def new_record(
    *,
    role: str,
    lease_id: str,
    lease_duration: int,
    renewable: bool,
    ttl: int,
    max_ttl: int,
    now: datetime,
    previous: LeaseRecord | None = None,
    overlap: timedelta | None = None,
) -> LeaseRecord:
    """The record of a freshly issued lease; ``previous`` (re-issue) becomes the retiring one."""
    old_id = previous.lease_id if previous is not None else None
    after = None
    if previous is not None:
        window = (
            overlap if overlap is not None else default_overlap(previous.ttl, DEFAULT_RENEWAL_AT)
        )
        after = revoke_after(now, window)
    return LeaseRecord(
        role=role,
        lease_id=lease_id,
        expires=now + timedelta(seconds=lease_duration),
        ttl=ttl,
        max_ttl=max_ttl,
        max_expires=now + timedelta(seconds=max_ttl),
        renewable=renewable,
        issued=now,
        old_lease_id=old_id,
        revoke_after=after,
    )
