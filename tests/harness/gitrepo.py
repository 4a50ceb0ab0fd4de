"""Pytest fixture for a real intent repository: a bare "remote", a working clone, real pushes.

Every push returns the GitHub webhook payload for the update the bare repository actually saw
(before/after read from the bare repo), so tests drive the ingress with what a forge would send.
Git runs with the user's global/system configuration switched off so a developer's settings
(signing, hooks, default branch) cannot change the results.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from chamberlain.adapters.gitrepo import ZERO_SHA, git, push_payload

GIT_ENV: dict[str, str] = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Intent Author",
    "GIT_AUTHOR_EMAIL": "author@example.test",
    "GIT_COMMITTER_NAME": "Intent Author",
    "GIT_COMMITTER_EMAIL": "author@example.test",
}


class IntentRepo:
    """A bare repository (the forge) plus a clone to commit and push from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "intent.git"
        self.work = root / "work"
        self.url = self.bare.resolve().as_uri()
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), env=GIT_ENV)
        git(root, "clone", "--quiet", self.url, str(self.work), env=GIT_ENV)
        self.git("checkout", "--quiet", "-B", "main")
        self.git("config", "user.name", "Intent Author")
        self.git("config", "user.email", "author@example.test")
        self.git("config", "commit.gpgsign", "false")
        self.git("config", "tag.gpgsign", "false")
        git(self.bare, "config", "user.name", "Intent Pusher", env=GIT_ENV)
        git(self.bare, "config", "user.email", "pusher@example.test", env=GIT_ENV)

    def git(self, *args: str) -> str:
        """Run git in the working clone."""
        return git(self.work, *args, env=GIT_ENV)

    def bare_ref(self, ref: str) -> str:
        """The sha ``ref`` points at in the bare repository, or ZERO_SHA if it does not exist."""
        out = git(self.bare, "for-each-ref", "--format=%(objectname)", ref, env=GIT_ENV).split()
        return out[0] if out else ZERO_SHA

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Write (str) or delete (None) files relative to the work tree, commit, return the sha."""
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                self.git("rm", "--quiet", "-r", "--", rel)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
                self.git("add", "--", rel)
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def _payload(self, ref: str, before: str) -> dict[str, Any]:
        after = self.bare_ref(ref)
        return push_payload(self.bare, ref=ref, before=before, after=after, repository_url=self.url)

    def push(self, branch: str = "main", force: bool = False) -> dict[str, Any]:
        """Push ``branch`` to the bare repo; the payload describes the bare ref's update."""
        ref = f"refs/heads/{branch}"
        before = self.bare_ref(ref)
        args = ["push", "--quiet", "origin", f"{branch}:{ref}"]
        if force:
            args.insert(1, "--force")
        self.git(*args)
        return self._payload(ref, before)

    def commit_and_push(
        self, files: Mapping[str, str | None], message: str, branch: str = "main"
    ) -> dict[str, Any]:
        current = self.git("symbolic-ref", "--short", "HEAD").strip()
        if current != branch:
            self.git("checkout", "--quiet", branch)
        self.commit(files, message)
        return self.push(branch)

    def push_tag(self, name: str) -> dict[str, Any]:
        """Tag HEAD (lightweight) and push the tag."""
        ref = f"refs/tags/{name}"
        before = self.bare_ref(ref)
        self.git("tag", name)
        self.git("push", "--quiet", "origin", f"{ref}:{ref}")
        return self._payload(ref, before)

    def create_branch(self, name: str, from_: str = "main") -> dict[str, Any]:
        """Create ``name`` at ``from_`` (and check it out), push it: before is ZERO_SHA."""
        self.git("checkout", "--quiet", "-b", name, from_)
        return self.push(name)

    def delete_branch(self, name: str) -> dict[str, Any]:
        """Delete ``name`` on the bare repo: after is ZERO_SHA."""
        ref = f"refs/heads/{name}"
        before = self.bare_ref(ref)
        self.git("push", "--quiet", "origin", "--delete", name)
        return push_payload(
            self.bare, ref=ref, before=before, after=ZERO_SHA, repository_url=self.url
        )

    def reset_hard(self, sha: str) -> None:
        """Move the checked-out branch to ``sha`` (then ``push(force=True)`` rewrites history)."""
        self.git("reset", "--quiet", "--hard", sha)


@pytest.fixture
def intent_repo(tmp_path: Path) -> Iterator[IntentRepo]:
    """A fresh, empty intent repository (branch main) with a working clone."""
    yield IntentRepo(tmp_path / "intent-repo")
