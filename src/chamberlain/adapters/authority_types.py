"""Typed views of OpenBao responses, parsed once at the adapter boundary.

Fields holding secret values are excluded from ``repr`` so that a dataclass printed in a log
line, an assertion message or a traceback cannot leak them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: object) -> datetime | None:
    """RFC 3339 with up to nanoseconds (as OpenBao writes it) -> aware datetime; "" -> None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # datetime handles microseconds only; Go writes up to nanoseconds.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def string_map(value: object) -> dict[str, str]:
    """A JSON object as ``dict[str, str]``; non-string values become their JSON text."""
    if not isinstance(value, dict):
        return {}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in value.items()
    }


@dataclass(frozen=True)
class VersionInfo:
    """One version of a KV v2 secret, as the metadata lists it."""

    created_time: datetime | None
    deletion_time: datetime | None
    destroyed: bool

    @property
    def alive(self) -> bool:
        """Readable: neither soft-deleted nor destroyed."""
        return self.deletion_time is None and not self.destroyed


@dataclass(frozen=True)
class SecretMetadata:
    """KV v2 metadata of one path: versions and chamberlain's ``custom_metadata``."""

    current_version: int
    oldest_version: int
    versions: dict[int, VersionInfo]
    custom_metadata: dict[str, str]
    cas_required: bool
    max_versions: int
    delete_version_after: str
    created_time: datetime | None = None
    updated_time: datetime | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SecretMetadata:
        versions = {
            int(number): VersionInfo(
                created_time=parse_time(info.get("created_time")),
                deletion_time=parse_time(info.get("deletion_time")),
                destroyed=bool(info.get("destroyed")),
            )
            for number, info in (data.get("versions") or {}).items()
        }
        return cls(
            current_version=int(data.get("current_version") or 0),
            oldest_version=int(data.get("oldest_version") or 0),
            versions=versions,
            custom_metadata=string_map(data.get("custom_metadata")),
            cas_required=bool(data.get("cas_required")),
            max_versions=int(data.get("max_versions") or 0),
            delete_version_after=str(data.get("delete_version_after") or "0s"),
            created_time=parse_time(data.get("created_time")),
            updated_time=parse_time(data.get("updated_time")),
        )


@dataclass(frozen=True)
class SecretVersion:
    """One readable version of a KV v2 secret. ``data`` holds values: never log it."""

    data: dict[str, str] = field(repr=False)
    version: int
    created_time: datetime | None
    custom_metadata: dict[str, str]


@dataclass(frozen=True)
class MountInfo:
    """A secrets engine or auth method mount (path without the trailing slash)."""

    path: str
    type: str
    options: dict[str, str]
    description: str
    accessor: str


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as OpenBao reports it. ``issue_time`` is unknown (None) right after a renew."""

    id: str
    issue_time: datetime | None
    expire_time: datetime | None
    ttl: int
    renewable: bool
    last_renewal: datetime | None = None


@dataclass(frozen=True)
class DynamicSecret:
    """A leased credential from a secrets engine. ``data`` holds values: never log it."""

    lease_id: str
    lease_duration: int
    renewable: bool
    data: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class SealStatus:
    """``sys/seal-status``: ``t`` shares of ``n`` unseal; ``progress`` submitted so far."""

    initialized: bool
    sealed: bool
    t: int
    n: int
    progress: int
