"""The container entrypoint: which step gunicorn's ``serve:app`` serves, chosen by env."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cloudevents.core.bindings.http import to_binary_event

from chamberlain.runtime import serve
from chamberlain.steps import registry
from tests.unit.test_runtime_outcome import ROTATED, ping


@pytest.fixture(autouse=True)
def fresh_module_cache() -> Iterator[None]:
    serve._cache.clear()
    yield
    serve._cache.clear()


def test_make_app_for_honours_the_factory_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(serve.FACTORY_ENV, "tests.unit.test_runtime_outcome:reply_factory")
    client = serve.make_app_for("any-name").test_client()
    message = to_binary_event(ping())
    response = client.post("/", headers=message.headers, data=message.body)
    assert (response.status_code, response.headers["ce-type"]) == (200, ROTATED)


def test_app_is_built_from_the_registry_on_first_access(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(serve.FACTORY_ENV, raising=False)
    monkeypatch.setitem(
        registry.STEP_FACTORIES, "test-noop", "tests.unit.test_runtime_outcome:noop_factory"
    )
    monkeypatch.setenv(serve.FUNCTION_ENV, "test-noop")
    app = serve.app
    assert serve.app is app
    message = to_binary_event(ping())
    assert (
        app.test_client().post("/", headers=message.headers, data=message.body).status_code == 202
    )


def test_app_without_a_function_name_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(serve.FUNCTION_ENV, raising=False)
    with pytest.raises(RuntimeError, match=serve.FUNCTION_ENV):
        _ = serve.app


def test_unknown_attributes_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = serve.no_such_thing


def test_gunicorn_logger_class_is_importable_by_dotted_path() -> None:
    from gunicorn.glogging import Logger
    from gunicorn.util import load_class

    cls = load_class("chamberlain.runtime.serve.GunicornLogger", section="gunicorn.loggers")
    assert issubclass(cls, Logger)
