"""Prometheus metrics for a function, in the text exposition format 0.0.4.

Three series are enough to see a function's health from the outside: how many events it
handled and how (``chamberlain_events_total{function,type,outcome}``), how long its step took
(``chamberlain_step_duration_seconds{function}``) and that it is up (``chamberlain_up``). The
exposition is written by hand: a client library would be a dependency (and import time) for
three series. Labels never carry event data, so no secret can reach ``/metrics``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# Event types come from the network: beyond this many label sets per function, new types are
# counted under type="other" so that a flood of made-up types cannot exhaust memory.
MAX_TYPES_PER_FUNCTION = 64
OVERFLOW_TYPE = "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + body + "}" if body else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Metrics:
    """The process's counters; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str, str], int] = {}
        self._types: dict[str, set[str]] = {}
        # function -> (bucket counts (non-cumulative, +Inf last), sum, count)
        self._durations: dict[str, tuple[list[int], float, int]] = {}
        self._up = 1

    def record(self, *, function: str, type_: str, outcome: str, duration_s: float) -> None:
        """Count one handled event and observe the step's duration."""
        with self._lock:
            seen = self._types.setdefault(function, set())
            if type_ not in seen:
                if len(seen) >= MAX_TYPES_PER_FUNCTION:
                    type_ = OVERFLOW_TYPE
                seen.add(type_)
            key = (function, type_, outcome)
            self._events[key] = self._events.get(key, 0) + 1
            buckets, total, count = self._durations.get(
                function, ([0] * (len(DURATION_BUCKETS) + 1), 0.0, 0)
            )
            index = next(
                (i for i, bound in enumerate(DURATION_BUCKETS) if duration_s <= bound),
                len(DURATION_BUCKETS),
            )
            buckets[index] += 1
            self._durations[function] = (buckets, total + duration_s, count + 1)

    def set_up(self, up: bool) -> None:
        with self._lock:
            self._up = 1 if up else 0

    def events_total(self, *, function: str, type_: str, outcome: str) -> int:
        """The current value of one events counter (0 when never incremented)."""
        with self._lock:
            return self._events.get((function, type_, outcome), 0)

    def reset(self) -> None:
        """Forget every sample (tests only)."""
        with self._lock:
            self._events.clear()
            self._types.clear()
            self._durations.clear()
            self._up = 1

    def render(self) -> str:
        """The exposition text, ending with a newline."""
        with self._lock:
            events = sorted(self._events.items())
            durations = sorted((fn, (list(b), s, c)) for fn, (b, s, c) in self._durations.items())
            up = self._up
        lines = [
            "# HELP chamberlain_events_total Events handled, by function, event type and outcome.",
            "# TYPE chamberlain_events_total counter",
        ]
        for (function, type_, outcome), value in events:
            labels = _labels((("function", function), ("type", type_), ("outcome", outcome)))
            lines.append(f"chamberlain_events_total{labels} {value}")
        lines += [
            "# HELP chamberlain_step_duration_seconds Time spent handling one event.",
            "# TYPE chamberlain_step_duration_seconds histogram",
        ]
        for function, (buckets, total, count) in durations:
            cumulative = 0
            bounds = [*DURATION_BUCKETS, math.inf]
            for bound, hits in zip(bounds, buckets, strict=True):
                cumulative += hits
                labels = _labels((("function", function), ("le", _number(bound))))
                lines.append(f"chamberlain_step_duration_seconds_bucket{labels} {cumulative}")
            fn_label = _labels((("function", function),))
            lines.append(f"chamberlain_step_duration_seconds_sum{fn_label} {_number(total)}")
            lines.append(f"chamberlain_step_duration_seconds_count{fn_label} {count}")
        lines += [
            "# HELP chamberlain_up Whether this function process is serving.",
            "# TYPE chamberlain_up gauge",
            f"chamberlain_up {up}",
        ]
        return "\n".join(lines) + "\n"


METRICS = Metrics()
"""The process-wide registry the runtimes update and ``/metrics`` renders."""


def render() -> str:
    """The process-wide metrics in Prometheus text format 0.0.4."""
    return METRICS.render()
