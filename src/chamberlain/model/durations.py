"""Durations as intent writes them: ``"720h"``, ``"30d"``, ``"1h30m"``.

Go-style units (``s``, ``m``, ``h``) because operators know them from Vault TTLs, plus ``d`` and
``w`` because rotation periods are counted in days. No fractions and no ``ms``: a secret's
lifecycle is never that precise, and a rejected typo beats a surprising TTL.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Units in decreasing order, each at most once; the same pattern is in intent.schema.json.
DURATION_PATTERN = r"^(?=[0-9])([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_PART = re.compile(r"([0-9]+)([smhdw])")
_WHOLE = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """A duration string that does not parse (the message never repeats long input)."""


def parse_duration(text: str) -> timedelta:
    """Parse ``"720h"``/``"30d"``/``"1h30m"`` into a timedelta."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise DurationError(
            "a duration is numbers with units w, d, h, m, s in that order, each at most once "
            "(e.g. 720h, 30d, 1h30m)"
        )
    total = sum(int(amount) * UNIT_SECONDS[unit] for amount, unit in _PART.findall(text))
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The shortest canonical spelling, the inverse of :func:`parse_duration`."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        amount, seconds = divmod(seconds, UNIT_SECONDS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
