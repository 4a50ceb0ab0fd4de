"""The due index: which secrets must be rotated (or have old versions destroyed) by when.

Kept in the authority, in the environment namespace's ``chamberlain`` KV v2 mount, so that a
rotation tick costs O(due) authority calls instead of a walk over every secret's metadata:

* ``rotate-secrets/due/<YYYY-MM-DDTHH>``: one document per UTC hour mapping key -> due-at. A key
  is the secret path (rotate it) or ``destroy:<path>`` (destroy the versions whose overlap
  ended). Paths cannot contain ``:``, so the two never collide. The map is stored as ONE
  string field (``key<TAB>due`` lines): OpenBao refuses a JSON body with too many strings
  ("high complexity"), which a bucket receiving 1,000 new secrets in one hour would exceed.
* ``rotate-secrets/due/cursor``: ``{"processed-through": <bucket>}``, the last bucket whose
  entries were all handled and that can no longer receive entries. A tick reads the buckets
  after it, up to the current hour: usually one or two reads.

Every write is a KV v2 check-and-set, retried on conflict after re-reading, so concurrent
replicas (and issue-secrets adding entries while a tick removes others) never lose an entry.
Entries are added no earlier than the current hour's bucket, and a bucket is closed (deleted
when empty, passed by the cursor) only :data:`CLOSE_MARGIN` after its hour ended, which absorbs
clock skew between replicas. Documents are bookkeeping, not secrets: they go through the raw
counting client, not :meth:`Authority.read_secret` (which would register them for redaction).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority_errors import CasConflictError
from chamberlain.adapters.state import STATE_MOUNT, NotConfiguredError
from chamberlain.lazy import lazy_module
from chamberlain.planner.rotation import (
    BUCKET,
    LAST_ROTATED,
    ROTATABLE_KINDS,
    ROTATION_HELD,
    bucket_of,
    bucket_start,
    buckets_between,
    due_at,
    is_bucket,
    iso,
    parse_iso,
    policy_of,
)

if TYPE_CHECKING:
    import requests

    from chamberlain.adapters.authority import Authority
else:
    requests = lazy_module("requests")

PREFIX = "rotate-secrets/due"  # inside the state area rotate-secrets owns
CURSOR = "cursor"
DESTROY_PREFIX = "destroy:"
CLOSE_MARGIN = timedelta(minutes=10)
MAX_SPAN = 48  # beyond this many hours since the cursor, list the folder instead of probing
CAS_ATTEMPTS = 8
EntryKind = Literal["rotate", "destroy"]


BUCKET_FIELD = "entries"


def encode_bucket(items: Mapping[str, str]) -> dict[str, str]:
    """A bucket's key -> due-at map as one string field, sorted (deterministic documents)."""
    return {BUCKET_FIELD: "\n".join(f"{k}\t{v}" for k, v in sorted(items.items()))}


def decode_bucket(data: Mapping[str, Any] | None) -> dict[str, str]:
    text = str((data or {}).get(BUCKET_FIELD) or "")
    pairs = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    return {key: due for key, due in pairs}


@dataclass(frozen=True)
class Entry:
    """One index entry: ``key`` in ``bucket``, due at ``due``."""

    bucket: str
    key: str
    value: str  # as stored (the due time, ISO); removal only removes an unchanged value
    due: datetime

    @property
    def kind(self) -> EntryKind:
        return "destroy" if self.key.startswith(DESTROY_PREFIX) else "rotate"

    @property
    def path(self) -> str:
        return self.key[len(DESTROY_PREFIX) :] if self.kind == "destroy" else self.key


def rotate_key(path: str) -> str:
    return path


def destroy_key(path: str) -> str:
    return DESTROY_PREFIX + path


@dataclass
class Scan:
    """The buckets a tick read: from after the cursor to the current hour."""

    now: datetime
    cursor: str | None
    cursor_version: int
    buckets: dict[str, dict[str, str]] = field(default_factory=dict)

    def entries(self) -> list[Entry]:
        """Every entry read, oldest due first (deterministic order)."""
        found: list[Entry] = []
        for bucket, items in sorted(self.buckets.items()):
            for key, value in items.items():
                due = parse_iso(value) or bucket_start(bucket)
                found.append(Entry(bucket, key, value, due))
        return sorted(found, key=lambda e: (e.due, e.key))

    def due(self) -> list[Entry]:
        return [e for e in self.entries() if e.due <= self.now]


class DueIndex:
    """The due index of one environment; ``authority`` must be bound to its namespace."""

    def __init__(
        self, authority: Authority, *, mount: str = STATE_MOUNT, environment: str = ""
    ) -> None:
        self.authority = authority
        self.mount = mount
        self.environment = environment or (authority.namespace or "(root)")

    # -- adding ------------------------------------------------------------------------------

    def add(self, entries: Mapping[str, datetime], *, now: datetime) -> int:
        """Index ``key -> due`` (keys from :func:`rotate_key`/:func:`destroy_key`).

        One read and at most one write per bucket touched; returns the writes made.
        """
        floor = bucket_of(now)
        grouped: dict[str, dict[str, str]] = {}
        for key, due in entries.items():
            bucket = max(bucket_of(due), floor)
            grouped.setdefault(bucket, {})[key] = iso(due)
        writes = 0
        for bucket, items in sorted(grouped.items()):
            writes += self._update(bucket, lambda current, items=items: {**current, **items})
        return writes

    def remove(self, bucket: str, handled: Mapping[str, str]) -> int:
        """Remove handled entries from ``bucket`` (only those still holding the same value)."""

        def without(current: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in current.items() if handled.get(k) != v}

        return self._update(bucket, without)

    def _update(self, bucket: str, change: Any) -> int:
        path = f"{PREFIX}/{bucket}"
        for _ in range(CAS_ATTEMPTS):
            version, data = self._read(path)
            current = decode_bucket(data)
            wanted: dict[str, str] = change(current)
            if wanted == current:
                return 0
            try:
                self._write(path, encode_bucket(wanted), cas=version)
            except CasConflictError:
                continue
            return 1
        raise CasConflictError(
            f"due index bucket {bucket} in {self.environment} kept changing; retry later"
        )

    # -- reading -----------------------------------------------------------------------------

    def scan(self, now: datetime) -> Scan:
        """Read the cursor and every bucket after it up to the current hour."""
        version, data = self._read(f"{PREFIX}/{CURSOR}")
        cursor = str((data or {}).get("processed-through") or "") or None
        if cursor is not None and not is_bucket(cursor):
            cursor = None
        scan = Scan(now=now, cursor=cursor, cursor_version=version)
        last = bucket_of(now)
        if cursor is None:
            listed = self.buckets()
            candidates = [b for b in listed if b <= last]
        else:
            first = bucket_of(bucket_start(cursor) + BUCKET)
            span = buckets_between(first, last)
            if len(span) > MAX_SPAN:
                candidates = [b for b in self.buckets() if first <= b <= last]
            else:
                candidates = span
        for bucket in candidates:
            _, data = self._read(f"{PREFIX}/{bucket}")
            items = decode_bucket(data)
            if items:
                scan.buckets[bucket] = items
            else:
                scan.buckets.setdefault(bucket, {})
        return scan

    def buckets(self) -> list[str]:
        """Every bucket document that exists, sorted."""
        return sorted(k for k in self._list(PREFIX) if is_bucket(k))

    def entry_of(self, key: str, due: datetime) -> bool:
        """Whether ``key`` is indexed in ``due``'s bucket (for tests and status)."""
        _, data = self._read(f"{PREFIX}/{bucket_of(due)}")
        return key in decode_bucket(data)

    # -- finishing a tick --------------------------------------------------------------------

    def finish(self, scan: Scan, handled: Iterable[Entry], *, now: datetime) -> int:
        """Remove handled entries, delete closed empty buckets, advance the cursor.

        Returns the authority writes made.
        """
        by_bucket: dict[str, dict[str, str]] = {}
        for entry in handled:
            by_bucket.setdefault(entry.bucket, {})[entry.key] = entry.value
        writes = 0
        remaining: dict[str, int] = {}
        for bucket, items in sorted(scan.buckets.items()):
            done = by_bucket.get(bucket, {})
            left = {k: v for k, v in items.items() if done.get(k) != v}
            if done and left != items:
                writes += self.remove(bucket, done)
            remaining[bucket] = len(left)
            if not left and self.closed(bucket, now) and items:
                self._delete(f"{PREFIX}/{bucket}")
                writes += 1
        target = self._processed_through(scan, remaining, now)
        if target is not None and (scan.cursor is None or target > scan.cursor):
            writes += self._advance(scan, target)
        return writes

    @staticmethod
    def closed(bucket: str, now: datetime) -> bool:
        """No entry can be added to ``bucket`` any more (its hour ended, plus a margin)."""
        return bucket_start(bucket) + BUCKET + CLOSE_MARGIN <= now

    def _processed_through(
        self, scan: Scan, remaining: Mapping[str, int], now: datetime
    ) -> str | None:
        """The last bucket before which everything the scan covered is handled and closed."""
        latest: str | None = None
        for bucket in sorted(scan.buckets):
            if remaining.get(bucket, 0) or not self.closed(bucket, now):
                return latest
            latest = bucket
        if scan.cursor is None and latest is None:
            return None  # nothing was listed: no cursor yet, keep listing cheaply
        # Every hour up to now was covered (probed or listed): the last closed one is done.
        last_closed = bucket_of(now - BUCKET - CLOSE_MARGIN)
        return max(latest or last_closed, last_closed)

    def _advance(self, scan: Scan, target: str) -> int:
        version = scan.cursor_version
        for _ in range(CAS_ATTEMPTS):
            try:
                self._write(f"{PREFIX}/{CURSOR}", {"processed-through": target}, cas=version)
            except CasConflictError:
                version, data = self._read(f"{PREFIX}/{CURSOR}")
                theirs = str((data or {}).get("processed-through") or "")
                if theirs and theirs >= target:
                    return 0  # another replica advanced at least as far
                continue
            return 1
        return 0  # contended: the next tick advances it

    # -- raw KV access -----------------------------------------------------------------------

    def _read(self, path: str) -> tuple[int, dict[str, Any] | None]:
        status, body = self._call("get", f"/v1/{quote(self.mount)}/data/{quote(path)}", path)
        data = body.get("data") or {}
        meta = data.get("metadata") or {}
        version = int(meta.get("version") or 0)
        if status == 404 or meta.get("deletion_time") or meta.get("destroyed"):
            return version, None
        content = data.get("data")
        return version, dict(content) if isinstance(content, dict) else None

    def _write(self, path: str, data: Mapping[str, Any], *, cas: int) -> int:
        body = {"data": dict(data), "options": {"cas": cas}}
        url = f"/v1/{quote(self.mount)}/data/{quote(path)}"
        _, answer = self._call("post", url, path, body=body)
        return int((answer.get("data") or {}).get("version") or 0)

    def _list(self, prefix: str) -> list[str]:
        status, body = self._call(
            "list", f"/v1/{quote(self.mount)}/metadata/{quote(prefix)}/", prefix
        )
        if status == 404:
            return []
        return [str(k) for k in ((body.get("data") or {}).get("keys") or [])]

    def _delete(self, path: str) -> None:
        self._call("delete", f"/v1/{quote(self.mount)}/metadata/{quote(path)}", path)

    def _call(
        self, method: str, url: str, target: str, *, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Mapping[str, Any]]:
        where = f"{self.mount}/{target}"
        namespace = self.authority.namespace
        try:
            response = self.authority.client.adapter.request(
                method, url, json=body, raise_exception=False
            )
        except requests.RequestException as exc:
            raise errors.unreachable(
                self.authority.addr, exc, operation="due_index", target=where, namespace=namespace
            ) from None
        if isinstance(response, dict):
            return 200, response
        status = int(response.status_code)
        try:
            parsed = response.json()
        except ValueError:
            parsed = {}
        answer: Mapping[str, Any] = parsed if isinstance(parsed, dict) else {}
        if status in (200, 204):
            return status, answer
        problems = [str(e) for e in (answer.get("errors") or [])]
        if status == 404:
            if any("namespace not found" in p or "no handler for route" in p for p in problems):
                raise NotConfiguredError(
                    f"environment {self.environment} not configured "
                    f"(namespace {namespace or '(root)'}: {where} unavailable)"
                )
            return 404, answer
        raise errors.from_status(
            status, problems, operation="due_index", target=where, namespace=namespace
        )


def planned_due(metadata: Mapping[str, str], now: datetime) -> datetime | None:
    """When a secret issue-secrets is about to create or update becomes due (None: never).

    From its last rotation when one is recorded, else from now (a value written now); a held
    secret whose intent changes is due at once (its hold ends with the intent).
    """
    policy = policy_of(metadata)
    if policy is None or metadata.get("kind") not in ROTATABLE_KINDS:
        return None
    if metadata.get(ROTATION_HELD):
        return now
    return due_at(policy, parse_iso(metadata.get(LAST_ROTATED)) or now)


def index_planned(
    authority: Authority,
    secrets: Iterable[tuple[str, Mapping[str, str]]],
    *,
    now: datetime | None = None,
) -> int:
    """Index secrets (path, the metadata being written) that declare a rotation policy.

    issue-secrets calls this *before* writing them: a secret is then never created without its
    entry, and a failed apply that is retried indexes again (adding is idempotent; an entry for
    a secret that never came to be is dropped when it comes due). Returns the writes made.
    """
    moment = now or datetime.now(timezone.utc)
    entries: dict[str, datetime] = {}
    for path, metadata in secrets:
        due = planned_due(metadata, moment)
        if due is not None:
            entries[rotate_key(path)] = due
    if not entries:
        return 0
    return DueIndex(authority).add(entries, now=moment)
