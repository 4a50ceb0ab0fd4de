"""Turn commits on a local branch into the push events a forge webhook would deliver.

Locally there is no forge to send webhooks, so `up --repo PATH` polls the tracked branch and
publishes a ``dev.chamberlain.git.push.v1`` for every move of its head, built from the real
repository with the same payload code the webhook ingress uses (so steps cannot tell the
difference). The last published head is persisted in the state dir: a restart publishes only
what it missed, and a crash between publishing and persisting re-publishes the *same* event id,
which the broker deduplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from chamberlain.adapters import gitrepo
from chamberlain.logs import get_logger
from chamberlain.model.event_types import GIT_PUSH
from chamberlain.model.events import make_event

STATE_FILE = "watcher.json"

log = get_logger("chamberlain.up.watcher")


@dataclass(frozen=True)
class HeadMove:
    """A change of the branch head the watcher must report (pure decision, see :func:`diff`)."""

    before: str
    after: str

    @property
    def created(self) -> bool:
        return self.before == gitrepo.ZERO_SHA


def diff(last_seen: str | None, head: str | None) -> HeadMove | None:
    """What to publish given the last published head and the current one.

    First sight of a branch is a creation (before = zeros); a vanished branch is ignored (the
    local repo is the developer's working copy, not a remote whose deletion means teardown).
    """
    if head is None or head == last_seen:
        return None
    return HeadMove(before=last_seen or gitrepo.ZERO_SHA, after=head)


def push_event_id(ref: str, move: HeadMove) -> str:
    """Deterministic, so a re-published move is deduplicated by the broker on (source, id)."""
    digest = hashlib.sha256(f"{ref}\0{move.before}\0{move.after}".encode()).hexdigest()
    return digest[:32]


class RepoWatcher:
    """Polls ``refs/heads/<branch>`` of ``repo`` and publishes push events for new commits."""

    def __init__(
        self,
        repo: Path,
        branch: str,
        state_dir: Path,
        publish: Callable[[CloudEvent], object],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self.repo = repo.resolve()
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        self.url = self.repo.as_uri()
        self._state_path = state_dir / STATE_FILE
        self._publish = publish
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_missing = False

    def check(self) -> None:
        """Fail fast at start when ``repo`` is not a git repository at all."""
        try:
            gitrepo.git(self.repo, "rev-parse", "--git-dir")
        except (gitrepo.GitError, OSError):
            raise ValueError(f"--repo {self.repo} is not a git repository") from None

    # -- state ---------------------------------------------------------------------------------
    def _key(self) -> str:
        return f"{self.url}#{self.ref}"

    def last_seen(self) -> str | None:
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        value = state.get(self._key()) if isinstance(state, dict) else None
        return value if isinstance(value, str) else None

    def _remember(self, sha: str) -> None:
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                state = {}
        except (FileNotFoundError, ValueError):
            state = {}
        state[self._key()] = sha
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self._state_path)

    # -- one poll ------------------------------------------------------------------------------
    def head(self) -> str | None:
        """The branch head, or None while the branch does not exist (e.g. an empty repo)."""
        try:
            out = gitrepo.git(self.repo, "rev-parse", "--verify", "--quiet", self.ref + "^{commit}")
        except (gitrepo.GitError, OSError):
            if not self._warned_missing:
                log.warning(
                    "watched branch not found yet",
                    extra={"fields": {"repo": str(self.repo), "ref": self.ref}},
                )
                self._warned_missing = True
            return None
        self._warned_missing = False
        return out.strip() or None

    def build_event(self, move: HeadMove) -> CloudEvent:
        """The git.push.v1 event a webhook for this move would produce."""
        try:
            payload = gitrepo.push_payload(
                self.repo,
                ref=self.ref,
                before=move.before,
                after=move.after,
                repository_url=self.url,
            )
        except (gitrepo.GitError, ValueError) as exc:  # before gone (history rewritten, pruned)
            log.warning(
                "previous head unknown to the repository; reporting as a new branch",
                extra={"fields": {"error": str(exc)[:200], "ref": self.ref}},
            )
            move = HeadMove(before=gitrepo.ZERO_SHA, after=move.after)
            payload = gitrepo.push_payload(
                self.repo,
                ref=self.ref,
                before=move.before,
                after=move.after,
                repository_url=self.url,
            )
        event_id = push_event_id(self.ref, move)
        data: dict[str, Any] = gitrepo.normalized_push(payload, "local", delivery=event_id)
        return make_event(GIT_PUSH, data, source=self.url, subject=self.ref, id_=event_id)

    def poll_once(self) -> CloudEvent | None:
        """Publish the head move since the last poll, if any; return the event published."""
        move = diff(self.last_seen(), self.head())
        if move is None:
            return None
        event = self.build_event(move)
        self._publish(event)
        self._remember(move.after)
        return event

    # -- thread --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="repo-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self._poll_logged()
            self._stop.wait(self._interval)

    def _poll_logged(self) -> None:
        try:
            self.poll_once()
        except Exception as exc:
            log.error(
                "repo watcher poll failed",
                extra={"fields": {"repo": str(self.repo), "error": str(exc)[:300]}},
            )
            raise
