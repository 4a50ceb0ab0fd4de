"""functions/<name>/ is what `func deploy` needs, and its new() serves the chamberlain step.

Every func.yaml validates against the real func.yaml schema; every function package's ``new()``
is loaded the way func-python loads it and answers a CloudEvent through func-python's ASGI
middleware exactly like the Flask app gunicorn serves. Functions are taken from the packaging
table and ``STEP_FACTORIES``: the runtime checks cover every step registered at the time.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.v1.event import CloudEvent
from func_python.cloudevent import ASGIApplication
from func_python.http import ASGIApplication as HttpASGIApplication

from chamberlain import packaging
from chamberlain.model import event_types as T
from chamberlain.model.events import example_event
from chamberlain.packaging import FUNCTIONS, FunctionSpec
from chamberlain.runtime.funcpy import FunctionAdapter
from chamberlain.runtime.serve import make_app_for
from chamberlain.steps.registry import STEP_FACTORIES
from tests.unit.test_runtime_funcpy import Response, call_asgi

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
FUNC_SCHEMA = ROOT.parent / "shared" / "reference" / "schemas" / "func_yaml-schema.json"
_loaded = itertools.count()


def registered() -> list[FunctionSpec]:
    """CloudEvent functions whose step is registered now."""
    return [s for s in FUNCTIONS.values() if s.invoke == "cloudevent" and s.name in STEP_FACTORIES]


def offline_env(tmp: Path) -> dict[str, str]:
    """Enough configuration for every step to build, with no authority or cluster reachable."""
    return {
        "CHAMBERLAIN_AUTHORITY_ADDR": "http://127.0.0.1:9",
        "CHAMBERLAIN_AUTHORITY_TOKEN": "offline-test-token",
        "CHAMBERLAIN_CACHE_DIR": str(tmp / "cache"),
        "CHAMBERLAIN_IDENTITY_DIR": str(tmp / "identities"),
        "CHAMBERLAIN_SHARE_DIR": str(tmp / "shares"),
        "CHAMBERLAIN_INTENT_REPO": str(tmp / "no-such-repo.git"),
        "CHAMBERLAIN_WEBHOOK_SECRET_GITHUB": "offline-webhook-secret",
        "K_SINK": "http://127.0.0.1:9/",
    }


def load_function_package(name: str) -> types.ModuleType:
    """``functions/<name>/function`` imported as func-python does (a package with ``new``)."""
    directory = FUNCTIONS_DIR / name / "function"
    module_name = f"chamberlain_function_{name.replace('-', '_')}_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(
        module_name, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def sample_event(spec: FunctionSpec) -> BaseCloudEvent:
    """The catalog example of the first type a function consumes (a dead letter for the sink)."""
    if spec.consumes:
        consumed = spec.consumes[0]
        event = example_event(consumed.type)
        if consumed.task is None:
            return event
        attributes = {**event.get_attributes(), "task": consumed.task}
        return CloudEvent(attributes=attributes, data={"task": consumed.task})
    failed = example_event(T.GIT_PUSH)
    attributes = {
        **failed.get_attributes(),
        "knativeerrorcode": "422",
        "knativeerrordest": "http://issue-secrets.chamberlain-system.svc.cluster.local",
        "knativeerrordata": "eyJlcnJvciI6ICJpbnZhbGlkIGludGVudCJ9",
    }
    return CloudEvent(attributes=attributes, data=failed.get_data())


def post_flask(app: Any, event: BaseCloudEvent) -> Response:
    message = to_binary_event(event)
    got = app.test_client().post("/", headers=message.headers, data=message.body)
    headers = {k.lower(): v for k, v in got.headers.items()}
    return Response(got.status_code, headers, got.data)


def post_asgi(app: Any, event: BaseCloudEvent) -> Response:
    message = to_binary_event(event)
    return call_asgi(app, "POST", "/", message.headers, message.body)


def comparable(response: Response) -> tuple[int, Any]:
    """Status and what a consumer reads: the reply's type/source/subject/data, or the error."""
    if response.status == 200:
        reply = from_http_event(HTTPMessage(headers=response.headers, body=response.body))
        return 200, (reply.get_type(), reply.get_source(), reply.get_subject(), reply.get_data())
    if response.body:
        return response.status, json.loads(response.body)
    return response.status, None


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = offline_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


# ------------------------------------------------------------------------------------ tests


def _func_yamls() -> list[Path]:
    return sorted(FUNCTIONS_DIR.glob("*/func.yaml"))


@pytest.mark.parametrize("path", _func_yamls(), ids=lambda p: p.parent.name)
def test_func_yaml_validates_against_the_func_schema(path: Path) -> None:
    schema = json.loads(FUNC_SCHEMA.read_text())
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    doc = yaml.safe_load(path.read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    spec = packaging.function(path.parent.name)
    assert doc["name"] == spec.name
    assert doc["invoke"] == spec.invoke == ("http" if spec.role == "ingress" else "cloudevent")
    assert doc["deploy"]["serviceAccountName"] == spec.service_account
    subscriptions = doc["deploy"].get("subscriptions", [])
    assert [s["filters"] for s in subscriptions] == [c.attributes for c in spec.consumes]
    assert {s["source"] for s in subscriptions} <= {packaging.BROKER}


def test_the_func_schema_check_can_fail() -> None:
    schema = json.loads(FUNC_SCHEMA.read_text())
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    doc = yaml.safe_load((FUNCTIONS_DIR / "dead-letter" / "func.yaml").read_text())
    assert validator.is_valid(doc)
    assert not validator.is_valid({**doc, "invoke": "grpc"})
    assert not validator.is_valid({**doc, "deploy": {**doc["deploy"], "scale": {"min": 1}}})


def test_one_function_directory_per_table_entry() -> None:
    assert {p.name for p in FUNCTIONS_DIR.iterdir() if p.is_dir()} == set(FUNCTIONS)
    for name in FUNCTIONS:
        assert (FUNCTIONS_DIR / name / "function" / "__init__.py").is_file()
        assert (FUNCTIONS_DIR / name / "pyproject.toml").is_file()


@pytest.mark.parametrize("spec", registered(), ids=lambda s: s.name)
def test_new_answers_a_cloudevent_like_the_flask_app(
    spec: FunctionSpec, offline: Mapping[str, str]
) -> None:
    instance = load_function_package(spec.name).new()
    assert isinstance(instance, FunctionAdapter)
    assert instance.function == spec.name
    event = sample_event(spec)
    via_func = post_asgi(ASGIApplication(instance), event)
    via_flask = post_flask(make_app_for(spec.name), event)
    assert comparable(via_func) == comparable(via_flask)
    assert via_func.status != 400  # the sample is a valid event for this function


def test_the_dead_letter_function_reports_the_failure_without_the_data(
    offline: Mapping[str, str],
) -> None:
    spec = packaging.dead_letter_sink()
    event = sample_event(spec)
    got = post_asgi(ASGIApplication(load_function_package(spec.name).new()), event)
    status, (type_, source, subject, data) = comparable(got)
    assert (status, type_, source, subject) == (
        200,
        T.STEP_FAILED,
        "/chamberlain/dead-letter",
        "issue-secrets",
    )
    assert data["eventId"] == event.get_id() and data["status"] == 422
    assert data["retryable"] is False
    assert data["reason"] == "issue-secrets answered 422: invalid intent"


def test_git_ingress_new_answers_webhooks_like_the_flask_app(offline: Mapping[str, str]) -> None:
    from chamberlain.ingress.webhook_app import from_env
    from chamberlain.ingress.webhooks import MAX_BODY

    instance = load_function_package("git-ingress").new()
    app = HttpASGIApplication(instance)
    flask = from_env().test_client()
    body = json.dumps({"zen": "hello"}).encode()
    requests = {
        "unsigned": {"content-type": "application/json", "x-github-event": "push"},
        "bad signature": {
            "content-type": "application/json",
            "x-github-event": "push",
            "x-hub-signature-256": "sha256=" + "0" * 64,
        },
        "no provider": {"content-type": "application/json"},
    }
    statuses = {}
    for name, headers in requests.items():
        got = call_asgi(app, "POST", "/webhooks/github", headers, body)
        expected = flask.post("/webhooks/github", headers=headers, data=body)
        assert (got.status, json.loads(got.body)) == (expected.status_code, expected.json), name
        statuses[name] = got.status
    assert statuses == {"unsigned": 401, "bad signature": 401, "no provider": 400}
    oversized = b"a" * (MAX_BODY + 1)
    too_big = call_asgi(app, "POST", "/", requests["unsigned"], oversized)
    expected = flask.post("/", headers=requests["unsigned"], data=oversized)
    assert (too_big.status, json.loads(too_big.body)) == (413, expected.json)
    assert call_asgi(app, "GET", "/health/readiness", {}).status == 200
