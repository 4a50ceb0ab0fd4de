"""Test-only steps for the `chamberlain up` end-to-end tests (loaded via CHAMBERLAIN_EXTRA_STEPS).

Each step appends one JSON line ``{"id", "type", "source", "data"}`` per event to
``$CHAMBERLAIN_TEST_RECORD_DIR/<name>.jsonl`` so the test can observe, from outside the process,
which step received which event (the test events carry no secret values).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from cloudevents.core.base import BaseCloudEvent

from chamberlain.steps.base import Step

RECORD_DIR_ENV = "CHAMBERLAIN_TEST_RECORD_DIR"
SLOW_ENV = "CHAMBERLAIN_TEST_SLOW_S"
_lock = threading.Lock()


def _recorder(name: str, delay_s: float = 0.0) -> Step:
    record = Path(os.environ[RECORD_DIR_ENV]) / f"{name}.jsonl"

    def step(event: BaseCloudEvent) -> None:
        if delay_s:
            time.sleep(delay_s)
        with _lock, record.open("a", encoding="utf-8") as fh:
            line = {
                "id": event.get_id(),
                "type": event.get_type(),
                "source": event.get_source(),
                "data": event.get_data(),
            }
            fh.write(json.dumps(line) + "\n")

    return step


def alpha() -> Step:
    return _recorder("alpha")


def beta() -> Step:
    return _recorder("beta")


def slow() -> Step:
    return _recorder("slow", float(os.environ.get(SLOW_ENV, "0.5")))
