"""Fixtures for the `chamberlain up` end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.upprocess import UpProcess

UpFactory = Callable[..., UpProcess]


@pytest.fixture
def up_factory() -> Iterator[UpFactory]:
    """Start `chamberlain up` processes; all are killed (with their OpenBao) at teardown."""
    started: list[UpProcess] = []

    def start(state_dir: Path, record_dir: Path, *args: str, **kw: Any) -> UpProcess:
        process = UpProcess(state_dir, record_dir, *args, **kw)
        started.append(process)
        return process.ready()

    yield start
    for process in started:
        with contextlib.suppress(Exception):
            process.kill()
