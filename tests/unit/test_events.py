"""Building, parsing and validating events: what producers and consumers rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from chamberlain.model import event_types as T
from chamberlain.model.events import (
    EventSchemaError,
    MalformedEventError,
    UnknownEventTypeError,
    event_data,
    event_from_json,
    event_to_json,
    example_event,
    known_types,
    make_event,
    parse_http,
    schema_for,
    validate_event,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "events" / "examples"
ALL = sorted(known_types())
OWN = sorted(T.CHAMBERLAIN_TYPES)
SHA_A = "a" * 40
SHA_B = "b" * 40
# Looks like a credential; must never be echoed back in an error message.
LEAKY = "s3cr3t-Hunter2-AKIAIOSFODNN7EXAMPLE"


def _example_data(type_: str) -> dict[str, Any]:
    data = json.loads((EXAMPLES / f"{type_}.json").read_text())["data"]
    assert isinstance(data, dict)
    return data


def _rejection(type_: str, data: Any) -> EventSchemaError:
    with pytest.raises(EventSchemaError) as caught:
        make_event(type_, data, source="/test")
    return caught.value


def _push_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": "gitea",
        "repository": {"url": "https://git.example.com/org/intent.git", "name": "org/intent"},
        "ref": "refs/heads/main",
        "before": SHA_A,
        "after": SHA_B,
        "created": False,
        "deleted": False,
        "forced": False,
        "commits": [{"id": SHA_B, "added": ["a.yaml"], "modified": [], "removed": []}],
        "delivery": None,
    }
    data.update(overrides)
    return data


def _http_headers(message: HTTPMessage) -> dict[str, str]:
    # Flask/werkzeug hand headers over title-cased; parsing must not depend on case.
    return {name.title(): value for name, value in message.headers.items()}


# ------------------------------------------------------------------- examples and transport


@pytest.mark.parametrize("type_", ALL)
def test_example_validates_against_its_schema(type_: str) -> None:
    event = example_event(type_)
    assert event.get_type() == type_
    validate_event(event)


@pytest.mark.parametrize("type_", ALL)
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_example_round_trips_over_http(type_: str, mode: str) -> None:
    event = example_event(type_)
    message = to_binary_event(event) if mode == "binary" else to_structured_event(event)
    received = parse_http(_http_headers(message), message.body)
    assert event_to_json(received) == event_to_json(event)
    assert received.get_data() == event.get_data()


@pytest.mark.parametrize("type_", ALL)
def test_example_json_round_trip_is_exact(type_: str) -> None:
    document = json.loads((EXAMPLES / f"{type_}.json").read_text())
    assert event_to_json(event_from_json(document)) == document


def test_made_event_round_trips_through_json_and_http() -> None:
    event = make_event(
        T.LEASE_RENEWED,
        {
            "environment": "prod",
            "path": "platform-data/postgres/reporting",
            "leaseId": "database/creds/reporting/abc",
            "expiresAt": "2026-11-28T17:10:00Z",
        },
        source="/chamberlain/renew-lease",
        subject="platform-data/postgres/reporting",
        extensions={"attempt": 2, "replayed": False},
    )
    stored = json.loads(json.dumps(event_to_json(event)))  # as persisted in SQLite
    reloaded = event_from_json(stored)
    assert event_to_json(reloaded) == event_to_json(event)
    assert reloaded.get_time() == event.get_time()
    for message in (to_binary_event(reloaded), to_structured_event(reloaded)):
        received = parse_http(message.headers, message.body)
        assert event_to_json(received) == event_to_json(event)


def test_binary_data_round_trips_as_data_base64() -> None:
    event = CloudEvent(
        attributes={"type": T.PING, "source": "/ping", "datacontenttype": "text/plain"},
        data=b"tick",
    )
    document = event_to_json(event)
    assert document["data_base64"] == "dGljaw=="
    assert "data" not in document
    reloaded = event_from_json(document)
    assert reloaded.get_data() == b"tick"
    assert event_to_json(reloaded) == document
    validate_event(reloaded)


# ------------------------------------------------------------------------------ make_event


def test_make_event_fills_the_attributes_consumers_rely_on() -> None:
    event = make_event(
        T.ENVIRONMENT_TEARDOWN,
        {"environment": "preview-7"},
        source="/platform/preview",
        subject="preview-7",
        id_="fixed-id",
        extensions={"traceparent0": "x", "retried": True},
    )
    assert event.get_id() == "fixed-id"
    assert event.get_specversion() == "1.0"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_subject() == "preview-7"
    time = event.get_time()
    assert time is not None and time.utcoffset() is not None
    assert event.get_extension("retried") == "true"
    assert event_data(event) == {"environment": "preview-7"}


def test_make_event_ids_are_unique_by_default() -> None:
    data = {"environment": "prod"}
    ids = {make_event(T.CLUSTER_DELETED, data, source="/t").get_id() for _ in range(50)}
    assert len(ids) == 50


def test_make_event_does_not_alias_the_callers_data() -> None:
    data = {"environment": "prod", "cluster": "prod-eu1"}
    event = make_event(T.CLUSTER_DELETED, data, source="/t")
    data["cluster"] = "changed"
    data["injected"] = LEAKY
    assert event.get_data() == {"environment": "prod", "cluster": "prod-eu1"}


def test_make_event_refuses_a_type_without_schema() -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        make_event("dev.chamberlain.secret.vanished.v1", {}, source="/t")
    assert isinstance(caught.value, EventSchemaError)
    assert isinstance(caught.value, ValueError)
    assert "dev.chamberlain.secret.vanished.v1" in str(caught.value)


def test_make_event_refuses_non_json_data() -> None:
    error = _rejection(T.CLUSTER_DELETED, {"environment": "prod", "cluster": {1, 2}})
    assert "JSON" in str(error)


@pytest.mark.parametrize("name", ["Trace", "trace-id", "data", "time", "a" * 21, ""])
def test_make_event_refuses_bad_extension_names(name: str) -> None:
    with pytest.raises(MalformedEventError):
        make_event(T.CLUSTER_DELETED, {"environment": "p"}, source="/t", extensions={name: "x"})


def test_make_event_refuses_an_empty_source() -> None:
    with pytest.raises(MalformedEventError, match="source"):
        make_event(T.CLUSTER_DELETED, {"environment": "p"}, source="")


# -------------------------------------------------------------------------- invalid data


def test_errors_name_the_json_path_of_each_problem() -> None:
    data = _push_data(commits=[{"id": "not-a-sha", "added": [], "modified": [], "removed": []}])
    del data["after"]
    message = str(_rejection(T.GIT_PUSH, data))
    assert "$.commits[0].id: does not match pattern" in message
    assert "$.after: required property missing" in message
    assert message.startswith("'dev.chamberlain.git.push.v1' data is invalid")


def test_nested_paths_in_lists_are_reported() -> None:
    data = _example_data(T.SECRETS_ISSUED)
    data["environments"][0]["paths"]["created"] = ["platform-data/ok", "../../etc/passwd"]
    data["environments"][0]["unchanged"] = -1
    error = _rejection(T.SECRETS_ISSUED, data)
    assert error.problems[0].startswith(
        "$.environments[0].paths.created[1]: does not match pattern"
    )
    assert error.problems[1:] == ("$.environments[0].unchanged: violates minimum 0",)


def test_nullable_fields_explain_the_allowed_types() -> None:
    data = _example_data(T.SECRET_ROTATED)
    data["rotations"][0]["previousVersion"] = "three"
    assert _rejection(T.SECRET_ROTATED, data).problems == (
        "$.rotations[0].previousVersion: expected integer or null, got string",
    )


def test_errors_never_echo_the_offending_value() -> None:
    data = _example_data(T.SECRET_ROTATED)
    item = data["rotations"][0]
    item["environment"] = LEAKY
    item["reason"] = LEAKY * 100  # too long
    item["path"] = LEAKY
    message = str(_rejection(T.SECRET_ROTATED, data))
    assert "$.rotations[0].environment" in message and "$.rotations[0].path" in message
    assert "$.rotations[0].reason" in message
    assert LEAKY not in message
    assert "Hunter2" not in message


@pytest.mark.parametrize("type_", OWN)
@pytest.mark.parametrize("field", ["value", "password", "token", "data"])
def test_a_value_field_is_rejected_in_every_chamberlain_type(type_: str, field: str) -> None:
    data = _example_data(type_)
    data[field] = LEAKY
    error = _rejection(type_, data)
    assert error.problems == (f"$.{field}: property not allowed",)
    assert LEAKY not in str(error)


@pytest.mark.parametrize(
    ("type_", "mutate", "path"),
    [
        (T.GIT_PUSH, lambda d: d["repository"].update(token=LEAKY), "$.repository.token"),
        (T.GIT_PUSH, lambda d: d["commits"][0].update(diff=LEAKY), "$.commits[0].diff"),
        (T.CLUSTER_CREATED, lambda d: d["kubernetes"].update(token=LEAKY), "$.kubernetes.token"),
        (T.INTENT_REJECTED, lambda d: d["errors"][0].update(value=LEAKY), "$.errors[0].value"),
        (
            T.DRIFT_DETECTED,
            lambda d: d["environments"][0]["drifted"][0].update(actual=LEAKY),
            "$.environments[0].drifted[0].actual",
        ),
        (
            T.SECRETS_ISSUED,
            lambda d: d["environments"][0]["paths"].update(values=[LEAKY]),
            "$.environments[0].paths.values",
        ),
    ],
)
def test_value_fields_are_rejected_in_nested_objects(type_: str, mutate: Any, path: str) -> None:
    data = _example_data(type_)
    mutate(data)
    error = _rejection(type_, data)
    assert error.problems == (f"{path}: property not allowed",)


def test_configured_counts_cannot_smuggle_strings() -> None:
    data = _example_data(T.AUTHORITY_INITIALIZED)
    data["configured"]["rootToken"] = LEAKY
    error = _rejection(T.AUTHORITY_INITIALIZED, data)
    assert "$.configured.rootToken: expected integer, got string" in error.problems
    assert LEAKY not in str(error)


@pytest.mark.parametrize(
    "url",
    ["https://bot:ghp_abcdef123456@github.com/org/intent.git", "http://user:pw@gitea.local/o/r"],
)
def test_repository_urls_with_credentials_are_refused(url: str) -> None:
    data = _push_data(repository={"url": url, "name": "org/intent"})
    error = _rejection(T.GIT_PUSH, data)
    assert error.problems[0].startswith("$.repository.url: has a forbidden form")
    assert "ghp_abcdef123456" not in str(error)


def test_scp_style_and_port_urls_are_fine() -> None:
    for url in ["git@github.com:org/intent.git", "https://git.example.com:8443/org/intent"]:
        make_event(T.GIT_PUSH, _push_data(repository={"url": url, "name": "n"}), source="/t")


def test_paths_that_escape_or_are_absolute_are_refused() -> None:
    for path in ["/platform-data/a", "platform-data/../x", "Platform-Data/a", "a//b", "a/b/"]:
        data = _example_data(T.SECRET_COMPROMISED)
        data["path"] = path
        assert _rejection(T.SECRET_COMPROMISED, data).problems == (
            "$.path: does not match pattern ^[a-z0-9]+(-[a-z0-9]+)*(/[a-z0-9]+(-[a-z0-9]+)*)*$",
        )


# ------------------------------------------------------------------------ external inputs


def test_github_push_accepts_extra_fields_but_checks_what_chamberlain_reads() -> None:
    data = _example_data(T.GITHUB_PUSH)
    data["installation"] = {"id": 1}
    make_event(T.GITHUB_PUSH, data, source="https://github.com/o/r")
    del data["after"]
    data["before"] = "HEAD"
    error = _rejection(T.KNATIVE_GITHUB_PUSH, data)
    assert "$.after: required property missing" in error.problems
    assert any(p.startswith("$.before: does not match pattern") for p in error.problems)


def test_gitlab_tag_push_is_not_a_push() -> None:
    data = _example_data(T.KNATIVE_GITLAB_PUSH)
    data["object_kind"] = "tag_push"
    assert _rejection(T.KNATIVE_GITLAB_PUSH, data).problems == ('$.object_kind: must be "push"',)


def test_ping_accepts_any_object_or_text() -> None:
    for data in ({"task": "rotate"}, {"task": "someone-elses"}, {}, {"anything": [1]}):
        make_event(T.PING, data, source="/ping")
    text = HTTPMessage(
        headers={
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "/apis/v1/namespaces/x/pingsources/y",
            "ce-type": T.PING,
            "content-type": "text/plain",
        },
        body=b"hello from cron",
    )
    assert parse_http(text.headers, text.body).get_data() == "hello from cron"
    assert "$: expected object or string, got integer" in _rejection(T.PING, 5).problems
    assert "$.task: expected string, got integer" in _rejection(T.PING, {"task": 1}).problems


def test_apiserver_events_require_an_object_reference() -> None:
    data = _example_data(T.APISERVER_ADD)
    del data["metadata"]["name"]
    assert _rejection(T.APISERVER_ADD, data).problems == (
        "$.metadata.name: required property missing",
    )


def test_apiserver_secrets_with_values_are_refused() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "prod"},
        "data": {"password": "czNjcjN0"},
    }
    error = _rejection(T.APISERVER_DELETE, secret)
    assert error.problems[0].startswith("$: has a forbidden form")
    assert "czNjcjN0" not in str(error)
    del secret["data"]
    make_event(T.APISERVER_DELETE, secret, source="https://10.96.0.1:443")


# ------------------------------------------------------------------------------ parse_http


def _binary(type_: str, body: bytes, content_type: str = "application/json") -> HTTPMessage:
    return HTTPMessage(
        headers={
            "ce-specversion": "1.0",
            "ce-id": "42",
            "ce-source": "/test",
            "ce-type": type_,
            "content-type": content_type,
        },
        body=body,
    )


def test_parse_http_rejects_a_plain_webhook() -> None:
    body = json.dumps(_example_data(T.GITHUB_PUSH)).encode()
    with pytest.raises(MalformedEventError, match="not a CloudEvent"):
        parse_http({"Content-Type": "application/json", "X-GitHub-Event": "push"}, body)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/cloudevents+json", b"{not json"),
        ("application/cloudevents+json", b"[1, 2]"),
        ("application/cloudevents+json", b'{"specversion": "1.0", "id": "1", "source": "/s"}'),
        ("application/cloudevents+json; charset=utf-8", b"\xff\xfe"),
        ("application/cloudevents-batch+json", b"[]"),
        ("", b""),
    ],
)
def test_parse_http_rejects_requests_that_are_not_cloudevents(
    content_type: str, body: bytes
) -> None:
    with pytest.raises(MalformedEventError):
        parse_http({"content-type": content_type}, body)


def test_parse_http_rejects_binary_mode_without_required_attributes() -> None:
    with pytest.raises(MalformedEventError, match="source, type"):
        parse_http({"ce-id": "1", "ce-specversion": "1.0"}, b"{}")


def test_parse_http_rejects_other_spec_versions() -> None:
    body = json.dumps(
        {"specversion": "0.3", "id": "1", "source": "/s", "type": T.PING, "data": {}}
    ).encode()
    with pytest.raises(MalformedEventError, match=r"specversion 1\.0"):
        parse_http({"content-type": "application/cloudevents+json"}, body)


def test_parse_http_rejects_unknown_types() -> None:
    message = _binary("com.example.unknown", b"{}")
    with pytest.raises(UnknownEventTypeError):
        parse_http(message.headers, message.body)


def test_parse_http_validates_data_in_both_modes() -> None:
    bad = {"environment": "Not A DNS Label"}
    binary = _binary(T.CLUSTER_DELETED, json.dumps(bad).encode())
    structured = HTTPMessage(
        headers={"content-type": "application/cloudevents+json"},
        body=json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "/s",
                "type": T.CLUSTER_DELETED,
                "data": bad,
            }
        ).encode(),
    )
    for message in (binary, structured):
        with pytest.raises(EventSchemaError, match=r"\$\.environment: does not match pattern"):
            parse_http(message.headers, message.body)


def test_parse_http_rejects_json_that_is_not_json() -> None:
    message = _binary(T.CLUSTER_DELETED, b'{"environment": ')
    with pytest.raises(EventSchemaError, match="expected object, got string"):
        parse_http(message.headers, message.body)


# --------------------------------------------------------------------- catalog accessors


def test_event_data_requires_an_object() -> None:
    text = _binary(T.PING, b"tick", "text/plain")
    event = parse_http(text.headers, text.body)
    with pytest.raises(EventSchemaError, match="expected object"):
        event_data(event)


def test_schema_for_returns_a_copy() -> None:
    schema = schema_for(T.CLUSTER_DELETED)
    schema["additionalProperties"] = True
    assert schema_for(T.CLUSTER_DELETED)["additionalProperties"] is False
    data = {"environment": "prod", "extra": 1}
    assert _rejection(T.CLUSTER_DELETED, data).problems == ("$.extra: property not allowed",)


def test_schema_for_unknown_type() -> None:
    with pytest.raises(UnknownEventTypeError):
        schema_for("dev.chamberlain.nothing.v1")


def test_event_from_json_refuses_broken_documents() -> None:
    good = json.loads((EXAMPLES / f"{T.CLUSTER_DELETED}.json").read_text())
    for broken in (
        {**good, "time": "yesterday"},
        {**good, "time": "2026-11-28T18:00:00"},
        {**good, "data_base64": "dGljaw=="},
        {k: v for k, v in good.items() if k != "source"},
    ):
        with pytest.raises(MalformedEventError):
            event_from_json(broken)
