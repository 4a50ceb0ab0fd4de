"""Function settings from the environment: defaults, token sources, and no token in repr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chamberlain.settings import DEFAULT_CONCURRENCY, Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.authority_addr == "http://127.0.0.1:8200"
    assert settings.authority_token is None and settings.authority_namespace is None
    assert settings.concurrency == DEFAULT_CONCURRENCY and settings.intent_branch == "main"
    with pytest.raises(SettingsError):
        settings.require_token()


def test_token_sources_and_repr(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s.file-token-123\n")
    state = tmp_path / "authority.json"
    state.write_text(json.dumps({"root_token": "s.state-token-456"}))
    direct = Settings.from_env(
        {
            "CHAMBERLAIN_AUTHORITY_TOKEN": "s.env-token-789",
            "CHAMBERLAIN_AUTHORITY_ADDR": "http://x:1/",
        }
    )
    assert direct.authority_token == "s.env-token-789" and direct.authority_addr == "http://x:1"
    assert "s.env-token-789" not in repr(direct)
    from_file = Settings.from_env({"CHAMBERLAIN_AUTHORITY_TOKEN_FILE": str(token_file)})
    assert from_file.require_token() == "s.file-token-123"
    local = Settings.from_env({"CHAMBERLAIN_AUTHORITY_STATE": str(state)})
    assert local.authority_token == "s.state-token-456"


@pytest.mark.parametrize("raw", ["zero", "0", "1000"])
def test_invalid_concurrency_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"CHAMBERLAIN_CONCURRENCY": raw})


def test_namespace_and_repo() -> None:
    settings = Settings.from_env(
        {
            "CHAMBERLAIN_AUTHORITY_NAMESPACE": "/admin/",
            "CHAMBERLAIN_INTENT_REPO": "https://git.example/intent.git",
            "CHAMBERLAIN_INTENT_BRANCH": "live",
            "CHAMBERLAIN_CACHE_DIR": "/var/cache/chamberlain",
        }
    )
    assert settings.authority_namespace == "admin"
    assert settings.intent_repo == "https://git.example/intent.git"
    assert settings.intent_branch == "live" and settings.cache_dir == Path("/var/cache/chamberlain")
