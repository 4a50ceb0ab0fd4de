"""The `chamberlain up` timeline: one readable line per broker happening, never event data."""

from __future__ import annotations

import io
from datetime import datetime

from chamberlain.runtime.local.broker import TimelineEntry
from chamberlain.runtime.local.timeline import (
    Banner,
    TimelinePrinter,
    TriggerStatus,
    format_banner,
    format_entry,
    short_id,
)

AT = datetime(2026, 11, 28, 21, 58, 3)
PUSH = "dev.chamberlain.git.push.v1"


def test_received_line_shows_origin_type_id_and_targets() -> None:
    entry = TimelineEntry(
        "received", PUSH, "a1b2c3d4e5f60718293a4b5c", "ingress", None, 0, "→ issue-secrets"
    )
    line = format_entry(entry, AT)
    assert line.startswith("21:58:03  ← ingress ")
    assert PUSH in line
    assert "a1b2c3d4 " in line and "a1b2c3d4e" not in line
    assert line.endswith("→ issue-secrets")


def test_delivery_line_shows_function_and_status() -> None:
    entry = TimelineEntry("delivered", PUSH, "push-1", "issue-secrets", 202, 1, "")
    line = format_entry(entry, AT)
    assert line.split() == ["21:58:03", "→", "issue-secrets", PUSH, "push-1", "202"]


def test_each_kind_has_its_own_arrow() -> None:
    arrows = set()
    for kind in ("received", "delivered", "retry", "dead-letter", "reply", "skipped"):
        entry = TimelineEntry(kind, PUSH, "x", "f", 503, 2, "d")  # type: ignore[arg-type]
        arrows.add(format_entry(entry, AT).split()[1])
    assert len(arrows) == 6


def test_retry_and_dead_letter_lines_carry_the_detail() -> None:
    retry = TimelineEntry(
        "retry", PUSH, "x", "issue-secrets", 503, 1, "retry 1/5 in 0.5s: authority sealed"
    )
    dead = TimelineEntry(
        "dead-letter",
        PUSH,
        "x",
        "issue-secrets",
        422,
        1,
        "not retryable after 1 attempt(s), kept locally: bad intent",
    )
    assert format_entry(retry, AT).endswith("503  retry 1/5 in 0.5s: authority sealed")
    assert "422  not retryable" in format_entry(dead, AT)


def test_short_id_keeps_readable_ids_and_cuts_hashes() -> None:
    assert short_id("rotate-1") == "rotate-1"
    assert short_id("3f2c9a1e-0b7d-4c55-9e1a-2b3c4d5e6f70") == "3f2c9a1e"
    assert short_id("cluster-created-local") == "cluster-created-local"
    long = "a-very-long-human-readable-event-identifier"
    assert short_id(long).endswith("…") and len(short_id(long)) == 24


def test_banner_lists_addresses_and_trigger_readiness() -> None:
    banner = Banner(
        state_dir="/s",
        authority="http://127.0.0.1:8200",
        authority_mode="raft, unsealed from state",
        ingress="http://127.0.0.1:8700",
        log_file="/s/chamberlain.log",
        environment="local",
        repo="/r",
        branch="main",
    )
    lines = format_banner(
        banner,
        [
            TriggerStatus("rotate-secrets-tick", "rotate-secrets", "ping task=rotate", False),
            TriggerStatus("issue-secrets-git-push", "issue-secrets", PUSH, True),
        ],
    )
    text = "\n".join(lines)
    assert "openbao     http://127.0.0.1:8200  (raft, unsealed from state)" in text
    assert "ingress     http://127.0.0.1:8700" in text
    assert "repo        /r  (branch main)" in text
    assert "1 ready, 1 not ready" in text
    ready_at = text.index("issue-secrets-git-push")
    assert ready_at < text.index("rotate-secrets-tick"), "ready Triggers come first"
    assert lines[-1].split()[2:] == [
        "rotate-secrets",
        "not",
        "ready",
        "(no",
        "step)",
        "ping",
        "task=rotate",
    ]


def test_printer_writes_whole_lines() -> None:
    stream = io.StringIO()
    printer = TimelinePrinter(stream)
    printer.entry(TimelineEntry("delivered", PUSH, "e1", "f", 202, 1, ""))
    printer.lines(["a", "b"])
    assert stream.getvalue().count("\n") == 3
    assert stream.getvalue().endswith("a\nb\n")
