"""The issue-secrets step: a push to the intent repository makes the authority hold exactly the
secrets the pushed commit declares (values generated here, never written to Git).

Accepted events: ``dev.chamberlain.git.push.v1`` (from git-ingress), the standard-source
pushes ``com.github.push``, ``dev.knative.source.github.push``,
``dev.knative.sources.gitlab.push`` (normalized like the ingress does), and the
``dev.knative.sources.ping`` tick with ``{"task": "resync"}`` (full reconcile of every
environment at its branch's head, reporting and repairing drift).

Answers: tag pushes, branch deletions (which remove nothing) and branches no environment tracks
-> 202, nothing written. An invalid commit -> 422 with ``dev.chamberlain.intent.rejected.v1``,
nothing written. Otherwise ``dev.chamberlain.secrets.issued.v1`` (or, on a resync that found
drift, ``dev.chamberlain.drift.detected.v1``) listing per environment what changed: paths and
counts, never values. Authority unavailable, lock contention -> 409/503 (the broker retries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from chamberlain.adapters.gitrepo import normalized_push
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.identity import FunctionIdentity
from chamberlain.logs import get_logger, log
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import DEFAULT_BRANCH, Environment, Intent
from chamberlain.settings import Settings
from chamberlain.steps.base import PermanentError, Step, TransientError
from chamberlain.steps.intent_loading import LoadedIntent
from chamberlain.steps.reconcile import EnvironmentResult, IntentRejectedError, Reconciler

FUNCTION = "issue-secrets"
SOURCE = f"/chamberlain/{FUNCTION}"
HEADS = "refs/heads/"
MAX_LISTED = 1000
MAX_REJECTED_ERRORS = 200
MAX_MESSAGE = 2000
Trigger = Literal["push", "resync", "cli", "authority-initialized"]

_PROVIDER_OF = {
    T.GITHUB_PUSH: "github",
    T.KNATIVE_GITHUB_PUSH: "github",
    T.KNATIVE_GITLAB_PUSH: "gitlab",
}

_log = get_logger("chamberlain.issue-secrets")


# ---- event data -----------------------------------------------------------------------------


def environment_data(result: EnvironmentResult) -> dict[str, Any]:
    """One item of the reply's ``environments`` list: names and counts, never values."""
    report = result.report
    truncated = False

    def listed(items: tuple[str, ...]) -> list[str]:
        nonlocal truncated
        truncated = truncated or len(items) > MAX_LISTED
        return list(items[:MAX_LISTED])

    item: dict[str, Any] = {
        "environment": result.environment,
        "commit": result.commit,
        "status": result.status,
        "created": len(report.created) if report else 0,
        "updated": len(report.updated) if report else 0,
        "retired": len(report.retired) if report else 0,
        "unchanged": result.unchanged,
        "drifted": [],
        "paths": {"created": [], "updated": [], "retired": []},
    }
    if result.mode is not None:
        item["mode"] = result.mode
    if report is not None:
        item["writes"] = report.writes
        drift = report.drift[:MAX_LISTED]
        truncated = truncated or len(report.drift) > MAX_LISTED
        item["drifted"] = [{"path": d.path, "kind": d.kind} for d in drift]
        item["paths"] = {
            "created": listed(report.created),
            "updated": listed(report.updated),
            "retired": listed(report.retired),
        }
        item["access"] = {
            "policiesWritten": listed(report.policies_written),
            "policiesDeleted": listed(report.policies_deleted),
            "rolesWritten": listed(report.roles_written),
            "rolesDeleted": listed(report.roles_deleted),
        }
    if truncated:
        item["truncated"] = True
    return item


def reply_for(
    results: list[EnvironmentResult],
    *,
    trigger: Trigger,
    commit: str | None = None,
    ref: str | None = None,
    subject: str | None = None,
) -> CloudEvent:
    """``secrets.issued``, or ``drift.detected`` when a resync repaired drift."""
    environments = [environment_data(r) for r in results]
    drifted = any(r.report is not None and r.report.drift for r in results)
    if trigger == "resync" and drifted:
        data: dict[str, Any] = {"trigger": trigger, "repaired": True, "environments": environments}
        return make_event(T.DRIFT_DETECTED, data, source=SOURCE, subject=subject or "resync")
    data = {"trigger": trigger, "environments": environments}
    if commit is not None:
        data["commit"] = commit
    if ref is not None:
        data["ref"] = ref
    return make_event(T.SECRETS_ISSUED, data, source=SOURCE, subject=subject or ref or trigger)


def rejected_event(error: IntentRejectedError) -> CloudEvent:
    problems = error.problems[:MAX_REJECTED_ERRORS]
    errors = [
        {
            "file": p.file or None,
            "line": p.line if p.file else None,
            "code": p.code,
            "message": (p.message or p.code)[:MAX_MESSAGE],
        }
        for p in problems
    ]
    data: dict[str, Any] = {"commit": error.commit, "errors": errors}
    if len(error.problems) > MAX_REJECTED_ERRORS:
        data["truncated"] = True
    return make_event(T.INTENT_REJECTED, data, source=SOURCE, subject=error.commit)


def tracked_environments(intent: Intent, branch: str) -> list[Environment]:
    """Non-ephemeral environments whose branch is ``branch`` (ephemeral ones are per cluster)."""
    return sorted(
        (e for e in intent.environments if e.branch == branch and not e.ephemeral),
        key=lambda e: e.name,
    )


# ---- the step -------------------------------------------------------------------------------


class IssueSecrets:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        intent_repo: str | None = None,
        default_branch: str = DEFAULT_BRANCH,
    ) -> None:
        self.reconciler = reconciler
        self.intent_repo = intent_repo
        self.default_branch = default_branch

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        type_ = event.get_type()
        if type_ == T.PING:
            return self._ping(event)
        if type_ == T.AUTHORITY_INITIALIZED:
            return self._initialized(event)
        push = self._push_data(event)
        return self._push(event, push)

    # -- pushes -----------------------------------------------------------------------------

    def _push_data(self, event: BaseCloudEvent) -> Mapping[str, Any]:
        type_ = event.get_type()
        data = event.get_data()
        if type_ == T.GIT_PUSH:
            if not isinstance(data, Mapping):
                raise PermanentError("push event without data", status=400)
            return data
        provider = _PROVIDER_OF.get(type_)
        if provider is None:
            raise PermanentError(f"{FUNCTION} does not handle {type_}", status=400)
        try:
            return normalized_push(data if isinstance(data, Mapping) else {}, provider)
        except ValueError as exc:
            raise PermanentError(f"malformed {type_} payload: {exc}", status=400) from None

    def _push(self, event: BaseCloudEvent, push: Mapping[str, Any]) -> BaseCloudEvent | None:
        ref = str(push["ref"])
        commit = str(push["after"])
        url = str(push["repository"]["url"])
        if not ref.startswith(HEADS):
            return _ignored(f"{ref} is not a branch", ref=ref)
        if push.get("deleted"):
            return _ignored(f"branch {ref} deleted: nothing is removed", ref=ref)
        branch = ref[len(HEADS) :]
        loaded = self._load(url, commit)
        environments = tracked_environments(loaded.intent, branch)
        if not environments and (loaded.valid or loaded.intent.environments):
            return _ignored(f"no environment tracks branch {branch}", ref=ref)
        valid = self._validated(url, commit, environments)
        results = [
            self.reconciler.reconcile_environment(url, valid, env, event_id=event.get_id())
            for env in environments
        ]
        return reply_for(results, trigger="push", commit=commit, ref=ref)

    def _load(self, url: str, commit: str) -> LoadedIntent:
        try:
            return self.reconciler.loader.load(url, commit)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None

    def _validated(self, url: str, commit: str, environments: list[Environment]) -> LoadedIntent:
        try:
            return self.reconciler.load_valid(url, commit, environments)
        except IntentRejectedError as exc:
            log(
                _log,
                "WARNING",
                f"intent at {commit[:12]} rejected: {len(exc.problems)} problem(s)",
                commit=commit,
                problems=[p.format() for p in exc.problems[:20]],
            )
            raise PermanentError(str(exc), status=422, reply=rejected_event(exc)) from None

    # -- resync -----------------------------------------------------------------------------

    def _ping(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        data = event.get_data()
        task = data.get("task") if isinstance(data, Mapping) else None
        if task != "resync":
            return _ignored(f"ping task {task!r} is not for {FUNCTION}")
        return self._reconcile_heads(event, trigger="resync")

    def _initialized(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        """An authority namespace became ready: issue what the branch heads declare there.

        Pushes that arrived before the namespace existed may have been dead-lettered, and a
        new ephemeral instance has no push of its own, so this is where both get their
        secrets. Environments already at the head commit cost one state read each.
        """
        data = event.get_data()
        named = data.get("environment") if isinstance(data, Mapping) else None
        return self._reconcile_heads(
            event, trigger="authority-initialized", instance=named if named else None
        )

    def _reconcile_heads(
        self, event: BaseCloudEvent, *, trigger: Trigger, instance: str | None = None
    ) -> BaseCloudEvent | None:
        """Full reconcile of every tracked environment (and ``instance``, an ephemeral
        instance) at the head of its branch."""
        url = self.intent_repo
        if not url:
            return _ignored("no intent repository configured (CHAMBERLAIN_INTENT_REPO)")
        head = self._head(url, self.default_branch)
        if head is None:
            return _ignored(f"branch {self.default_branch} does not exist in the intent repo")
        intent = self._load(url, head).intent
        branches = {e.branch for e in intent.environments}
        resolved = intent.resolve_environment(instance) if instance else None
        extra = resolved[0] if resolved is not None and resolved[0].ephemeral else None
        results: list[EnvironmentResult] = []
        commits: set[str] = set()
        for branch in sorted(branches):
            commit = head if branch == self.default_branch else self._head(url, branch)
            if commit is None:
                continue
            loaded = self._load(url, commit)
            environments = tracked_environments(loaded.intent, branch)
            if extra is not None and extra.branch == branch:
                environments.append(extra)
            if not environments:
                continue
            valid = self._validated(url, commit, environments)
            commits.add(commit)
            for env in environments:
                results.append(
                    self.reconciler.reconcile_environment(
                        url, valid, env, event_id=event.get_id(), full=trigger == "resync"
                    )
                )
        if not results:
            return _ignored(f"no environment to reconcile ({trigger})")
        only = next(iter(commits)) if len(commits) == 1 else None
        return reply_for(results, trigger=trigger, commit=only)

    def _head(self, url: str, branch: str) -> str | None:
        try:
            return self.reconciler.source.head_of(url, HEADS + branch)
        except IntentSourceError as exc:
            raise TransientError(str(exc)) from None


def _ignored(why: str, **fields: Any) -> BaseCloudEvent | None:
    log(_log, "INFO", f"ignored: {why}", reason=why, **fields)
    return None


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see :mod:`chamberlain.settings`)."""
    settings = Settings.from_env(environ)
    identity = FunctionIdentity(FUNCTION, settings, environ)
    source = IntentSource(settings.cache_dir, environ=environ)
    reconciler = Reconciler(
        identity,
        source,
        base_namespace=settings.authority_namespace,
        concurrency=settings.concurrency,
    )
    return IssueSecrets(
        reconciler, intent_repo=settings.intent_repo, default_branch=settings.intent_branch
    )
