"""Authority path rules (RFC-SECOPS-0001 rule 8).

A path names a secret in every environment at once: the environment is the authority
namespace, never a path segment, so the same intent serves prod, staging and a preview without
edits. Checking paths here, before anything reaches the authority, also closes path traversal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SECRET_ROOT = "platform-data"  # noqa: S105 (a path prefix, not a password)
CONFIG_ROOT = "platform-config"
SEGMENT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

# Words that name an environment even when the repository does not declare one by that name.
WELL_KNOWN_ENVIRONMENTS = frozenset(
    {"prod", "production", "staging", "dev", "development", "qa", "uat"}
)


def secret_path_problems(path: str, environments: Iterable[str] = ()) -> list[str]:
    """Every rule ``path`` breaks as a secret path; an empty list means it is valid.

    ``environments`` are the declared environment names, which may not appear as a segment
    or as a hyphen-separated word of one (``billing-prod`` names an environment too).
    """
    if path.startswith("/"):
        return ["absolute paths are not allowed: write platform-data/<datasource>/<consumer>"]
    segments = path.split("/")
    problems: list[str] = []
    if any(segment == ".." for segment in segments):
        problems.append("'..' is not allowed in a path")
    if any(segment == "" for segment in segments):
        problems.append("empty path segment (double or trailing '/')")
    bad = [s for s in segments if s not in ("", "..") and not SEGMENT.match(s)]
    if bad:
        problems.append(
            f"segment {bad[0][:40]!r} is not lowercase letters, digits and inner hyphens"
        )
    if problems:
        return problems
    if segments[0] == CONFIG_ROOT:
        return [
            f"{CONFIG_ROOT}/ is for non-secret configuration; "
            f"secrets live under {SECRET_ROOT}/<datasource>/<consumer>"
        ]
    if segments[0] != SECRET_ROOT or len(segments) != 3:
        return [f"a secret path is exactly {SECRET_ROOT}/<datasource>/<consumer> (three segments)"]
    forbidden = set(environments) | WELL_KNOWN_ENVIRONMENTS
    for segment in segments[1:]:
        named = [word for word in (segment, *segment.split("-")) if word in forbidden]
        if named:
            return [
                f"segment {segment!r} names the environment {named[0]!r}: environments are "
                "authority namespaces, not path segments"
            ]
    return []


def is_secret_path(path: str, environments: Iterable[str] = ()) -> bool:
    """True when ``path`` may be written to the authority as a secret path."""
    return not secret_path_problems(path, environments)
