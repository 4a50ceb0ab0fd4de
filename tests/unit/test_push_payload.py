"""normalized_push: every forge's push webhook becomes the same dev.chamberlain.git.push.v1 data."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from chamberlain.adapters.gitrepo import ZERO_SHA, normalized_push
from chamberlain.model.events import make_event

WEBHOOKS = Path(__file__).resolve().parents[1] / "data" / "webhooks"
PUSH_TYPE = "dev.chamberlain.git.push.v1"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def assert_valid_event_data(data: dict[str, Any]) -> None:
    """The normalized data must be accepted by the git.push.v1 schema consumers validate with."""
    make_event(PUSH_TYPE, data, source="test/push-payload")


def test_github_push_keeps_refs_and_file_changes() -> None:
    payload = load("github-push")
    data = normalized_push(payload, "github", delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")

    assert data["provider"] == "github"
    assert data["ref"] == payload["ref"]
    assert (data["before"], data["after"]) == (payload["before"], payload["after"])
    assert data["repository"]["url"] == payload["repository"]["clone_url"]
    assert data["repository"]["name"] == payload["repository"]["full_name"]
    assert data["delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert [c["id"] for c in data["commits"]] == [c["id"] for c in payload["commits"]]
    for ours, theirs in zip(data["commits"], payload["commits"], strict=True):
        assert set(ours) == {"id", "added", "modified", "removed"}
        for key in ("added", "modified", "removed"):
            assert ours[key] == theirs[key]
    assert_valid_event_data(data)


@pytest.mark.parametrize(
    ("name", "created", "deleted"),
    [
        ("github-branch-create", True, False),
        ("github-branch-delete", False, True),
        ("github-tag-push", True, False),
    ],
)
def test_github_lifecycle_flags(name: str, created: bool, deleted: bool) -> None:
    data = normalized_push(load(name), "github")
    assert (data["created"], data["deleted"], data["forced"]) == (created, deleted, False)
    assert data["delivery"] is None
    assert_valid_event_data(data)


def test_github_forced_flag_is_carried() -> None:
    payload = load("github-push")
    payload["forced"] = True
    assert normalized_push(payload, "github")["forced"] is True


def test_gitea_push_without_created_deleted_flags_derives_them() -> None:
    payload = load("gitea-push")
    assert "created" not in payload
    data = normalized_push(payload, "gitea")
    assert data["provider"] == "gitea"
    assert (data["created"], data["deleted"], data["forced"]) == (False, False, False)
    assert len(data["commits"]) == len(payload["commits"])
    assert_valid_event_data(data)


def test_gitlab_push_uses_project_fields() -> None:
    payload = load("gitlab-push")
    data = normalized_push(payload, "gitlab")

    assert data["repository"] == {
        "url": payload["project"]["git_http_url"],
        "name": payload["project"]["path_with_namespace"],
    }
    assert data["commits"][1] == {
        "id": payload["commits"][1]["id"],
        "added": [],
        "modified": ["platform-data/orders-db/orders-api.yaml"],
        "removed": ["platform-data/legacy/old.yaml"],
    }
    assert (data["created"], data["deleted"], data["forced"]) == (False, False, False)
    assert_valid_event_data(data)


@pytest.mark.parametrize(
    ("name", "created", "deleted"),
    [
        ("gitlab-branch-create", True, False),
        ("gitlab-branch-delete", False, True),
        ("gitlab-tag-push", True, False),
    ],
)
def test_gitlab_lifecycle_flags_come_from_zero_shas(
    name: str, created: bool, deleted: bool
) -> None:
    data = normalized_push(load(name), "gitlab")
    assert (data["created"], data["deleted"]) == (created, deleted)
    assert data["after"] == ZERO_SHA if deleted else data["after"] != ZERO_SHA
    assert_valid_event_data(data)


def test_gitlab_non_push_hook_is_refused() -> None:
    payload = load("gitlab-push")
    payload["object_kind"] = "merge_request"
    with pytest.raises(ValueError, match="object_kind"):
        normalized_push(payload, "gitlab")


def _without(payload: dict[str, Any], *path: str | int) -> dict[str, Any]:
    broken = copy.deepcopy(payload)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return broken


def _with(payload: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    broken = copy.deepcopy(payload)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return broken


GITHUB = load("github-push")


@pytest.mark.parametrize(
    ("payload", "provider", "message"),
    [
        (_without(GITHUB, "ref"), "github", r"payload\.ref is missing"),
        (_with(GITHUB, "main", "ref"), "github", "full ref name"),
        (_with(GITHUB, "abc123", "after"), "github", r"payload\.after"),
        (_with(GITHUB, GITHUB["before"].upper(), "before"), "github", r"payload\.before"),
        (_without(GITHUB, "repository"), "github", r"payload\.repository is missing"),
        (_with(GITHUB, {"id": 1}, "repository"), "github", "clone_url"),
        (_with(GITHUB, "yes", "forced"), "github", "boolean"),
        (_with(GITHUB, {}, "commits"), "github", "must be a list"),
        (_with(GITHUB, "nope", "commits", 0, "id"), "github", r"commits\[0\]\.id"),
        (_without(GITHUB, "commits", 0, "added"), "github", r"commits\[0\]\.added is missing"),
        (_with(GITHUB, [1], "commits", 0, "removed"), "github", "list of strings"),
        (_without(load("gitlab-push"), "project"), "gitlab", r"payload\.project is missing"),
        (GITHUB, "bitbucket", "unknown git provider"),
        (["not", "an", "object"], "github", "JSON object"),
    ],
)
def test_malformed_payload_is_a_value_error(payload: Any, provider: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalized_push(payload, provider)
