"""``chamberlain status --env ENV``: what the authority holds for an environment, at a glance.

One row per secret chamberlain manages in the environment's namespace: class, current version,
last rotation, next due time (or the held/pending state of its rotation), lease expiry for
dynamic credentials, and consumers. Read-only, from KV metadata only: values are never read,
so they can never be shown. ``--format json`` prints the same rows as a JSON document.

The authority comes from the variables the functions read (``CHAMBERLAIN_AUTHORITY_ADDR``,
``CHAMBERLAIN_AUTHORITY_TOKEN`` / ``_TOKEN_FILE``, ``CHAMBERLAIN_AUTHORITY_NAMESPACE``).
The environment's namespace is its name unless ``--env-namespace`` says otherwise (an
Environment's ``spec.namespace``). Exit codes: 0 shown, 1 error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from chamberlain.adapters.authority import Authority, AuthorityError, SecretMetadata
from chamberlain.logs import redact
from chamberlain.planner import rotation as r
from chamberlain.settings import Settings, SettingsError
from chamberlain.steps.base import StepError

EXIT_OK = 0
EXIT_ERROR = 1
COLUMNS = (
    ("path", "PATH"),
    ("class_", "CLASS"),
    ("version", "VERSION"),
    ("last_rotated", "LAST ROTATED"),
    ("next_due", "NEXT DUE"),
    ("lease_expires", "LEASE EXPIRES"),
    ("consumers", "CONSUMERS"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, dest="environment", help="environment name")
    parser.add_argument(
        "--env-namespace", help="the environment's authority namespace (default: its name)"
    )
    parser.add_argument("--kv-mount", default="secret", help="KV v2 mount (default: secret)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--addr", help="authority address (default: $CHAMBERLAIN_AUTHORITY_ADDR)")
    parser.add_argument(
        "--namespace",
        help="base namespace of the environments (default: $CHAMBERLAIN_AUTHORITY_NAMESPACE)",
    )


class StatusError(Exception):
    """The environment cannot be shown (message names what is missing, never a value)."""


@dataclass(frozen=True)
class Row:
    """One managed secret as ``status`` shows it (no value, ever)."""

    path: str
    class_: str
    version: int
    last_rotated: str | None
    next_due: str | None
    lease_expires: str | None
    consumers: list[str]
    state: str
    rotation: str  # ok, due, held, pending, none

    def json(self) -> dict[str, Any]:
        data = asdict(self)
        data["class"] = data.pop("class_")
        return data


def row_of(path: str, found: SecretMetadata, now: datetime) -> Row:
    """The status row of one secret's metadata (pure)."""
    meta = found.custom_metadata
    info = found.versions.get(found.current_version)
    created = info.created_time if info is not None else None
    due = r.due_from_metadata(meta, created, now)
    state = "none"
    if r.pending_version(meta):
        state = "pending"
    elif r.is_held(meta):
        state = "held"
    elif due is not None:
        state = "due" if due <= now else "ok"
    consumers = [c for c in meta.get("consumers", "").split(",") if c]
    return Row(
        path=path,
        class_=meta.get("class") or meta.get("kind") or "unknown",
        version=found.current_version,
        last_rotated=meta.get(r.LAST_ROTATED) or (r.iso(created) if created else None),
        next_due=r.iso(due) if due is not None else None,
        lease_expires=meta.get("lease-expires") or None,
        consumers=consumers,
        state=meta.get("state", "active"),
        rotation=state,
    )


def collect(authority: Authority, kv_mount: str, now: datetime) -> list[Row]:
    """Rows for every path chamberlain manages under ``kv_mount`` (metadata reads only)."""
    try:
        mounts = authority.list_secret_mounts()
    except AuthorityError as exc:
        raise StatusError(f"namespace {authority.namespace} unavailable: {exc}") from None
    if kv_mount not in mounts:
        raise StatusError(f"no KV mount {kv_mount!r} in namespace {authority.namespace}")
    paths = authority.walk("", mount=kv_mount)

    def read(batch: list[str]) -> list[tuple[str, SecretMetadata | None]]:
        session = authority.clone()
        return [(p, session.read_metadata(p, mount=kv_mount)) for p in batch]

    batches = [paths[i::4] for i in range(4)]
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="status") as pool:
        found = [item for part in pool.map(read, batches) for item in part]
    rows = [
        row_of(path, meta, now)
        for path, meta in found
        if meta is not None and meta.custom_metadata.get("managed-by") == "chamberlain"
    ]
    return sorted(rows, key=lambda row: row.path)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "-"
    return str(value)


def render_table(environment: str, rows: list[Row]) -> str:
    header = [title for _, title in COLUMNS]
    body = []
    for row in rows:
        cells = [_cell(getattr(row, name)) for name, _ in COLUMNS]
        if row.rotation in ("held", "pending", "due"):
            cells[4] = f"{cells[4]} ({row.rotation})"
        if row.state != "active":
            cells[1] = f"{cells[1]} ({row.state})"
        body.append(cells)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [f"environment {environment}: {len(rows)} managed secret(s)"]
    for line in [header, *body]:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return "\n".join(lines)


def render_json(environment: str, rows: list[Row], now: datetime) -> str:
    document: Mapping[str, Any] = {
        "environment": environment,
        "generatedAt": r.iso(now),
        "secrets": [row.json() for row in rows],
    }
    return json.dumps(document, indent=2, sort_keys=True)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        addr = (args.addr or settings.authority_addr).rstrip("/")
        base = (args.namespace or settings.authority_namespace or "").strip("/")
        own = (args.env_namespace or args.environment).strip("/")
        namespace = f"{base}/{own}" if base else own
        authority = Authority.connect(addr, settings.require_token(), namespace=namespace)
        now = datetime.now(timezone.utc)
        rows = collect(authority, args.kv_mount, now)
    except (SettingsError, StepError, AuthorityError, StatusError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    if args.format == "json":
        print(render_json(args.environment, rows, now))
    else:
        print(render_table(args.environment, rows))
    return EXIT_OK
