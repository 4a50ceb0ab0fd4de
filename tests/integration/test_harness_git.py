"""push_payload against real repositories: what a forge would send for each kind of push."""

from __future__ import annotations

from typing import Any

import pytest

from chamberlain.adapters.gitrepo import ZERO_SHA, GitError, git, normalized_push, push_payload
from chamberlain.model.events import make_event
from tests.harness.gitrepo import IntentRepo

pytestmark = pytest.mark.integration


def changes(payload: dict[str, Any]) -> list[tuple[list[str], list[str], list[str]]]:
    return [(c["added"], c["modified"], c["removed"]) for c in payload["commits"]]


@pytest.fixture
def seeded(intent_repo: IntentRepo) -> IntentRepo:
    intent_repo.commit_and_push(
        {"secrets/a.yaml": "name: a\n", "secrets/b.yaml": "name: b\n", "README.md": "intent\n"},
        "seed",
    )
    return intent_repo


def test_first_push_creates_the_branch(intent_repo: IntentRepo) -> None:
    payload = intent_repo.commit_and_push({"secrets/a.yaml": "name: a\n"}, "first")

    assert payload["ref"] == "refs/heads/main"
    assert payload["before"] == ZERO_SHA
    assert (payload["created"], payload["deleted"], payload["forced"]) == (True, False, False)
    assert changes(payload) == [(["secrets/a.yaml"], [], [])]
    assert payload["head_commit"]["id"] == payload["after"] == intent_repo.head()
    assert payload["repository"]["clone_url"] == intent_repo.url


def test_normal_push_lists_added_modified_removed(seeded: IntentRepo) -> None:
    before = seeded.bare_ref("refs/heads/main")
    first = seeded.commit({"secrets/a.yaml": "name: a\nclass: runtime\n"}, "modify a")
    second = seeded.commit({"secrets/b.yaml": None, "secrets/c.yaml": "name: c\n"}, "b -> c")
    payload = seeded.push()

    assert (payload["before"], payload["after"]) == (before, second)
    assert (payload["created"], payload["deleted"], payload["forced"]) == (False, False, False)
    assert [c["id"] for c in payload["commits"]] == [first, second]  # oldest first
    assert changes(payload) == [
        ([], ["secrets/a.yaml"], []),
        (["secrets/c.yaml"], [], ["secrets/b.yaml"]),
    ]
    assert payload["commits"][1]["message"] == "b -> c"
    assert payload["commits"][0]["author"]["email"] == "author@example.test"
    assert payload["head_commit"]["id"] == second
    assert payload["pusher"]["name"] and payload["sender"]["login"]


def test_branch_creation_lists_only_commits_new_to_the_repository(seeded: IntentRepo) -> None:
    main_head = seeded.bare_ref("refs/heads/main")
    seeded.git("checkout", "--quiet", "-b", "preview-1")
    new = seeded.commit({"environments/preview-1.yaml": "ephemeral: true\n"}, "preview env")
    payload = seeded.push("preview-1")

    assert payload["ref"] == "refs/heads/preview-1"
    assert payload["created"] is True and payload["before"] == ZERO_SHA
    assert [c["id"] for c in payload["commits"]] == [new]
    assert main_head not in [c["id"] for c in payload["commits"]]


def test_branch_created_at_an_existing_commit_has_no_commits(seeded: IntentRepo) -> None:
    payload = seeded.create_branch("staging")

    assert payload["created"] is True
    assert payload["commits"] == []
    assert payload["head_commit"]["id"] == payload["after"] == seeded.bare_ref("refs/heads/main")


def test_branch_deletion(seeded: IntentRepo) -> None:
    seeded.create_branch("doomed")
    sha = seeded.bare_ref("refs/heads/doomed")
    seeded.git("checkout", "--quiet", "main")
    payload = seeded.delete_branch("doomed")

    assert (payload["before"], payload["after"]) == (sha, ZERO_SHA)
    assert (payload["created"], payload["deleted"]) == (False, True)
    assert payload["commits"] == [] and payload["head_commit"] is None
    assert seeded.bare_ref("refs/heads/doomed") == ZERO_SHA


def test_tag_push(seeded: IntentRepo) -> None:
    payload = seeded.push_tag("v1.0.0")

    assert payload["ref"] == "refs/tags/v1.0.0"
    assert payload["created"] is True
    assert payload["commits"] == []
    assert payload["after"] == seeded.head()
    assert payload["head_commit"]["id"] == seeded.head()


def test_force_push_is_flagged(seeded: IntentRepo) -> None:
    base = seeded.head()
    seeded.commit_and_push({"secrets/a.yaml": "name: a\nowner: x\n"}, "to be rewritten")
    rewritten_from = seeded.head()
    seeded.reset_hard(base)
    replacement = seeded.commit({"secrets/d.yaml": "name: d\n"}, "replacement")
    payload = seeded.push(force=True)

    assert payload["before"] == rewritten_from and payload["after"] == replacement
    assert payload["forced"] is True
    assert [c["id"] for c in payload["commits"]] == [replacement]
    assert changes(payload) == [(["secrets/d.yaml"], [], [])]


def test_fast_forward_is_not_forced(seeded: IntentRepo) -> None:
    payload = seeded.commit_and_push({"README.md": "intent v2\n"}, "docs")
    assert payload["forced"] is False


def test_payload_from_working_clone_matches_bare(seeded: IntentRepo) -> None:
    before = seeded.bare_ref("refs/heads/main")
    after = seeded.commit({"secrets/e.yaml": "name: e\n"}, "e")
    seeded.push()
    from_bare = push_payload(seeded.bare, ref="refs/heads/main", before=before, after=after)
    from_work = push_payload(seeded.work, ref="refs/heads/main", before=before, after=after)
    assert changes(from_bare) == changes(from_work) == [(["secrets/e.yaml"], [], [])]


def test_commit_list_is_capped_like_github(seeded: IntentRepo) -> None:
    for index in range(23):
        seeded.commit({f"notes/{index}.txt": str(index)}, f"note {index}")
    payload = seeded.push()
    assert len(payload["commits"]) == 20
    assert payload["commits"][-1]["id"] == payload["after"]


def test_local_payload_normalizes_to_a_valid_push_event(seeded: IntentRepo) -> None:
    payload = seeded.commit_and_push({"secrets/a.yaml": None}, "drop a")
    data = normalized_push(payload, "local")

    assert data["repository"] == {"url": seeded.url, "name": payload["repository"]["full_name"]}
    assert data["commits"] == [
        {"id": payload["after"], "added": [], "modified": [], "removed": ["secrets/a.yaml"]}
    ]
    make_event("dev.chamberlain.git.push.v1", data, source="test/git")


def test_git_failure_names_the_command_and_stderr(intent_repo: IntentRepo) -> None:
    with pytest.raises(GitError, match=r"git rev-parse --verify no-such-ref failed.*"):
        git(intent_repo.work, "rev-parse", "--verify", "no-such-ref")


def test_bad_shas_are_refused(seeded: IntentRepo) -> None:
    with pytest.raises(ValueError, match="before"):
        push_payload(seeded.bare, ref="refs/heads/main", before="HEAD", after=seeded.head())
