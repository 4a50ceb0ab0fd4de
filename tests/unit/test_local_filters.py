"""Trigger filters behave as in Knative: which events reach which function."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from chamberlain.runtime.local.filters import event_attributes, filter_errors, matches
from chamberlain.runtime.local.manifests import Trigger

PING = {
    "specversion": "1.0",
    "id": "1",
    "source": "/apis/v1/namespaces/default/pingsources/rotate",
    "type": "dev.knative.sources.ping",
    "task": "rotate",
}


def _trigger(attributes: dict[str, str] | None = None, filters: Any = ()) -> Trigger:
    return Trigger(
        name="t",
        broker="default",
        filter_attributes=attributes or {},
        filters=tuple(filters),
        subscriber="fn",
        delivery=None,
    )


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, True),
        ({"type": "dev.knative.sources.ping"}, True),
        ({"type": "dev.knative.sources.ping", "task": "rotate"}, True),
        ({"type": "dev.knative.sources.ping", "task": "resync"}, False),
        ({"type": "dev.knative.sources"}, False),
        ({"task": ""}, True),  # "" is Knative's "any value", but the attribute must exist
        ({"subject": ""}, False),
        ({"missing": "x"}, False),
    ],
)
def test_attribute_filter(attributes: dict[str, str], expected: bool) -> None:
    assert matches(_trigger(attributes), PING) is expected


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], True),
        ([{"exact": {"type": "dev.knative.sources.ping"}}], True),
        ([{"exact": {"type": "dev.knative.sources"}}], False),
        ([{"prefix": {"type": "dev.knative."}}], True),
        ([{"prefix": {"type": "dev.chamberlain."}}], False),
        ([{"suffix": {"source": "/rotate"}}], True),
        ([{"suffix": {"source": "/resync"}}], False),
        ([{"prefix": {"missing": "a"}}], False),
        ([{"exact": {"task": "rotate"}}, {"prefix": {"type": "dev.knative."}}], True),
        ([{"exact": {"task": "rotate"}}, {"prefix": {"type": "com."}}], False),
        ([{"all": [{"exact": {"task": "rotate"}}, {"suffix": {"type": ".ping"}}]}], True),
        ([{"all": [{"exact": {"task": "rotate"}}, {"suffix": {"type": ".pong"}}]}], False),
        ([{"any": [{"exact": {"task": "resync"}}, {"exact": {"task": "rotate"}}]}], True),
        ([{"any": [{"exact": {"task": "resync"}}, {"exact": {"task": "watch"}}]}], False),
        ([{"not": {"exact": {"task": "rotate"}}}], False),
        ([{"not": {"exact": {"task": "resync"}}}], True),
        ([{"not": {"any": [{"prefix": {"type": "com."}}, {"exact": {"id": "2"}}]}}], True),
    ],
)
def test_subscriptions_api_filters(filters: list[dict[str, Any]], expected: bool) -> None:
    assert matches(_trigger(filters=filters), PING) is expected


def test_filters_override_filter_attributes() -> None:
    trigger = _trigger({"type": "something.else"}, [{"prefix": {"type": "dev.knative."}}])
    assert matches(trigger, PING)


def test_event_attributes_include_extensions_and_render_time() -> None:
    event = CloudEvent(
        attributes={
            **PING,
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            "retries": 3,
            "urgent": True,
        },
        data={"task": "rotate"},
    )
    attributes = event_attributes(event)
    assert attributes["task"] == "rotate"
    assert attributes["time"] == "2026-01-02T03:04:05Z"
    assert attributes["retries"] == "3"
    assert attributes["urgent"] == "true"
    assert "data" not in attributes and "subject" not in attributes


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"exact": {"type": "a"}}, "must be a list"),
        ([{"exact": {"type": "a"}, "not": {"exact": {"type": "b"}}}], "multiple dialects"),
        ([{"regex": {"type": "a"}}], "unknown filter dialect"),
        ([{"all": "everything"}], "non-empty list"),
        ([{"any": [{"exact": {"type": ""}}]}], "non-empty string"),
        ([{"not": {"prefix": {"Bad-Name": "x"}}}], "invalid attribute name"),
    ],
)
def test_filter_errors_are_reported_with_their_location(filters: Any, message: str) -> None:
    errors = filter_errors(filters)
    assert errors and message in " ".join(errors)
    assert all(e.startswith("spec.filters") for e in errors)


def test_valid_filters_have_no_errors() -> None:
    assert (
        filter_errors([{"any": [{"exact": {"type": "a"}}, {"not": {"suffix": {"id": "x"}}}]}]) == []
    )
