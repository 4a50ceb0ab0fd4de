"""Configuration of a chamberlain function, read once from its environment.

Functions are stateless containers configured by environment variables (Knative Service env,
or the local runtime exporting them before it builds a step). Reading them in one place keeps
every step honest about what it depends on, and keeps the authority token out of ``repr`` so a
settings object printed in a log line or a traceback cannot leak it.

* ``CHAMBERLAIN_AUTHORITY_ADDR``: the authority's address (default ``http://127.0.0.1:8200``).
* ``CHAMBERLAIN_AUTHORITY_TOKEN`` or ``CHAMBERLAIN_AUTHORITY_TOKEN_FILE``: its token. The local
  runtime's ``CHAMBERLAIN_AUTHORITY_STATE`` file (key ``root_token``) is accepted as a last
  resort; later issues replace both by a Kubernetes-auth login.
* ``CHAMBERLAIN_AUTHORITY_NAMESPACE``: a base namespace environments' namespaces live under
  (e.g. ``admin`` on a managed Vault); default: the root namespace.
* ``CHAMBERLAIN_INTENT_REPO``: URL of the intent repository, read on ``resync`` ticks, and
  ``CHAMBERLAIN_INTENT_BRANCH`` (default ``main``): the branch whose head says which
  environments exist.
* ``CHAMBERLAIN_CACHE_DIR``: where fetched commits are cached (default: a temporary directory).
* ``CHAMBERLAIN_CONCURRENCY``: parallel authority clients per step (default 8).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chamberlain.logs import register_secret
from chamberlain.model.intent import DEFAULT_BRANCH

DEFAULT_ADDR = "http://127.0.0.1:8200"
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64


class SettingsError(ValueError):
    """The function's environment is incomplete or malformed (a deployment problem)."""


@dataclass(frozen=True)
class Settings:
    authority_addr: str
    authority_token: str | None = field(default=None, repr=False)
    authority_namespace: str | None = None
    intent_repo: str | None = None
    intent_branch: str = DEFAULT_BRANCH
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        cache = env.get("CHAMBERLAIN_CACHE_DIR") or str(
            Path(tempfile.gettempdir()) / f"chamberlain-cache-{os.getuid()}"
        )
        return cls(
            authority_addr=(env.get("CHAMBERLAIN_AUTHORITY_ADDR") or DEFAULT_ADDR).rstrip("/"),
            authority_token=_token(env),
            authority_namespace=(env.get("CHAMBERLAIN_AUTHORITY_NAMESPACE") or "").strip("/")
            or None,
            intent_repo=env.get("CHAMBERLAIN_INTENT_REPO") or None,
            intent_branch=env.get("CHAMBERLAIN_INTENT_BRANCH") or DEFAULT_BRANCH,
            cache_dir=Path(cache),
            concurrency=_concurrency(env.get("CHAMBERLAIN_CONCURRENCY")),
        )

    def require_token(self) -> str:
        if not self.authority_token:
            raise SettingsError(
                "no authority token: set CHAMBERLAIN_AUTHORITY_TOKEN or "
                "CHAMBERLAIN_AUTHORITY_TOKEN_FILE"
            )
        return self.authority_token


def _token(env: Mapping[str, str]) -> str | None:
    token = env.get("CHAMBERLAIN_AUTHORITY_TOKEN") or None
    if token is None and env.get("CHAMBERLAIN_AUTHORITY_TOKEN_FILE"):
        path = Path(env["CHAMBERLAIN_AUTHORITY_TOKEN_FILE"])
        try:
            token = path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise SettingsError(
                f"CHAMBERLAIN_AUTHORITY_TOKEN_FILE {path} unreadable ({type(exc).__name__})"
            ) from None
    if token is None and env.get("CHAMBERLAIN_AUTHORITY_STATE"):
        token = _local_state_token(Path(env["CHAMBERLAIN_AUTHORITY_STATE"]))
    if token:
        register_secret(token)
    return token


def _local_state_token(path: Path) -> str | None:
    """The root token the local runtime keeps in its state file (local-only convenience)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("root_token")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _concurrency(raw: str | None) -> int:
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"CHAMBERLAIN_CONCURRENCY must be an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise SettingsError(f"CHAMBERLAIN_CONCURRENCY must be within 1..{MAX_CONCURRENCY}")
    return value
