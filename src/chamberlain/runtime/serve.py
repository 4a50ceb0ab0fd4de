"""Container entrypoint: ``gunicorn chamberlain.runtime.serve:app``.

The function to serve is named by ``CHAMBERLAIN_FUNCTION`` (a name from
:data:`chamberlain.steps.registry.STEP_FACTORIES`); ``CHAMBERLAIN_STEP_FACTORY=module:factory``
overrides where its step comes from (tests, custom builds). ``CHAMBERLAIN_LOG_LEVEL`` sets the
log level. ``app`` is built on first access (PEP 562), so importing this module costs nothing
and only the served step's own dependencies are imported.

Gunicorn's own loggers do not propagate to the root logger; run it with
``--logger-class chamberlain.runtime.serve.GunicornLogger`` so that its lines are JSON and
redacted too::

    gunicorn --logger-class chamberlain.runtime.serve.GunicornLogger \\
        --no-control-socket --bind 0.0.0.0:8080 chamberlain.runtime.serve:app
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

FUNCTION_ENV = "CHAMBERLAIN_FUNCTION"
FACTORY_ENV = "CHAMBERLAIN_STEP_FACTORY"
LOG_LEVEL_ENV = "CHAMBERLAIN_LOG_LEVEL"


def make_app_for(name: str) -> Flask:
    """The Flask app serving the function ``name`` (honours ``CHAMBERLAIN_STEP_FACTORY``)."""
    from chamberlain.logs import configure
    from chamberlain.runtime.flask_app import create_app
    from chamberlain.steps.registry import load_step

    configure(os.environ.get(LOG_LEVEL_ENV, "INFO"))
    override = os.environ.get(FACTORY_ENV)
    step = load_step(name, {name: override} if override else None)
    return create_app(step, function=name)


def _app_from_env() -> Flask:
    name = os.environ.get(FUNCTION_ENV)
    if not name:
        raise RuntimeError(f"{FUNCTION_ENV} is not set: which function should this serve?")
    return make_app_for(name)


def _gunicorn_logger_class() -> type:
    from gunicorn.glogging import Logger

    from chamberlain.logs import JsonFormatter, RedactionFilter, install_record_factory

    class GunicornLogger(Logger):  # type: ignore[misc]
        """Gunicorn's error and access logs as redacted JSON lines."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            install_record_factory()
            for logger in (self.error_log, self.access_log):
                for handler in logger.handlers:
                    handler.setFormatter(JsonFormatter())
                    handler.addFilter(RedactionFilter())

    return GunicornLogger


_cache: dict[str, Any] = {}
_LAZY = {"app": _app_from_env, "GunicornLogger": _gunicorn_logger_class}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _cache:
        _cache[name] = _LAZY[name]()
    return _cache[name]
