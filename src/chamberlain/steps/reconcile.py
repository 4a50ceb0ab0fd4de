"""Make one environment's authority namespace match the intent at one commit.

Shared by the issue-secrets step (push, resync) and ``chamberlain plan``/``apply``, so the
command line runs exactly the code the function runs. Per environment:

1. read the applied record (chamberlain's state area); the same commit -> nothing to do; the
   event's commit is an ancestor of the applied one -> superseded, nothing to do (an older
   push delivered late must not roll the environment back);
2. take the environment's lock, re-read the applied record (it may have moved while waiting)
   and decide again;
3. applied commit is an ancestor -> incremental: only what the diff touched is observed and
   planned; otherwise (nothing applied, force-push, resync, CLI) -> full;
4. observe, plan, apply, record the commit as applied.

The pre-check outside the lock means an identical redelivery costs two reads and no write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.adapters.state import AppliedRecord, EnvironmentState
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.logs import get_logger, log
from chamberlain.model.intent import (
    DEFAULT_KUBERNETES_AUTH_MOUNT,
    Environment,
    Intent,
    SecretDocument,
    authority_namespace,
)
from chamberlain.planner.actions import DesiredState, ObservedState, Plan, Scope
from chamberlain.planner.desired import (
    ConsumerNameCollisionError,
    desired_state,
    kv_mount_of,
    policy_name,
    role_name,
)
from chamberlain.planner.issue import plan as make_plan
from chamberlain.planner.scope import changed_scope
from chamberlain.steps.apply_plan import Applier, ApplyReport
from chamberlain.steps.base import PermanentError, TransientError
from chamberlain.steps.intent_loading import IntentLoader, LoadedIntent, LruCache
from chamberlain.steps.observe import Observer

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority
    from chamberlain.model.loader import Problem

Status = Literal["applied", "already-applied", "superseded"]
Mode = Literal["full", "incremental"]
LOCK_TTL_S = 120.0
LOCK_WAIT_S = 20.0
DESIRED_CACHE_SIZE = 8

_log = get_logger("chamberlain.issue-secrets")


class IntentRejectedError(Exception):
    """The intent at a commit is invalid; nothing may be applied. Carries the problems."""

    def __init__(self, commit: str, problems: tuple[Problem, ...]) -> None:
        self.commit = commit
        self.problems = problems
        super().__init__(f"intent at {commit} is invalid ({len(problems)} problem(s))")


@dataclass(frozen=True)
class EnvironmentResult:
    """What reconciling one environment did (``report`` None when nothing was attempted)."""

    environment: str
    commit: str
    status: Status
    mode: Mode | None = None
    report: ApplyReport | None = None
    unchanged: int = 0


@dataclass(frozen=True)
class PlannedEnvironment:
    """A plan computed without taking the lock (``chamberlain plan``)."""

    environment: str
    commit: str
    mode: Mode
    plan: Plan
    observed: ObservedState
    applied: AppliedRecord | None


@dataclass(frozen=True)
class _Decision:
    status: Status | None  # None: work to do
    mode: Mode = "full"


def auth_mount_of(intent: Intent) -> str:
    auth = intent.authority
    return auth.kubernetes_auth_mount if auth is not None else DEFAULT_KUBERNETES_AUTH_MOUNT


class Reconciler:
    """Reconciles environments of one intent repository against one authority.

    ``authority`` may be a :class:`FunctionIdentity`: a step is built before the authority is
    initialized (its token does not exist yet), so the identity is resolved on first use.
    """

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        source: IntentSource,
        *,
        loader: IntentLoader | None = None,
        base_namespace: str | None = None,
        concurrency: int = 8,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self._identity = authority
        self.source = source
        self.loader = loader or IntentLoader(source)
        self.base_namespace = base_namespace
        self.concurrency = concurrency
        self.lock_wait_s = lock_wait_s
        self._desired_cache: LruCache[tuple[str, str, int], tuple[Intent, DesiredState]] = LruCache(
            DESIRED_CACHE_SIZE
        )

    # -- reading intent ---------------------------------------------------------------------

    @property
    def authority(self) -> Authority:
        return resolve(self._identity)

    def load_valid(self, url: str, commit: str, environments: list[Environment]) -> LoadedIntent:
        """The intent at ``commit``; :class:`IntentRejectedError` if anything is invalid,
        including consumers whose policy/role names would collide in any target environment."""
        loaded = self.loader.load(url, commit)
        if not loaded.valid:
            raise IntentRejectedError(commit, loaded.problems)
        for environment in environments:
            collision = consumer_name_collision(loaded.intent, environment.name)
            if collision is not None:
                from chamberlain.model.loader import Problem

                problem = Problem("", 1, 1, "consumer-name-collision", collision)
                raise IntentRejectedError(commit, (problem,))
        return loaded

    # -- one environment --------------------------------------------------------------------

    def state_of(self, environment: Environment) -> EnvironmentState:
        namespace = authority_namespace(self.base_namespace, environment)
        return EnvironmentState(
            self.authority.for_namespace(namespace), environment=environment.name
        )

    def plan_environment(
        self, url: str, loaded: LoadedIntent, environment: Environment
    ) -> PlannedEnvironment:
        """The full plan for ``environment`` at ``loaded.commit``, changing nothing."""
        state = self.state_of(environment)
        intent = loaded.intent
        state.check_configured(kv_mount_of(intent), auth_mount_of(intent))
        applied = state.applied()
        plan, observed = self._plan(
            state, intent, environment, loaded.commit, Scope.everything(), applied
        )
        return PlannedEnvironment(environment.name, loaded.commit, "full", plan, observed, applied)

    def reconcile_environment(
        self,
        url: str,
        loaded: LoadedIntent,
        environment: Environment,
        *,
        event_id: str,
        full: bool = False,
    ) -> EnvironmentResult:
        """Converge ``environment`` to ``loaded``'s commit (``full``: compare everything even
        when the commit is already applied, which repairs drift)."""
        commit = loaded.commit
        intent = loaded.intent
        state = self.state_of(environment)
        state.check_configured(kv_mount_of(intent), auth_mount_of(intent))
        decision = self._decide(url, state.applied(), commit, full)
        if decision.status is not None:
            return self._skipped(environment, commit, decision.status, state)
        owner = f"{event_id[:80]}/{uuid.uuid4().hex[:12]}"
        with state.lock(owner, ttl_s=LOCK_TTL_S, wait_s=self.lock_wait_s):
            applied = state.applied()
            decision = self._decide(url, applied, commit, full)
            if decision.status is not None:
                return self._skipped(environment, commit, decision.status, state)
            scope = Scope.everything()
            if decision.mode == "incremental" and applied is not None:
                scope = self._incremental_scope(url, applied.commit, loaded, environment)
            plan, _ = self._plan(state, intent, environment, commit, scope, applied)
            applier = Applier(
                state.authority,
                kv_mount=kv_mount_of(intent),
                auth_mount=auth_mount_of(intent),
                concurrency=self.concurrency,
            )
            report = applier.apply(plan)
            desired_paths = frozenset(p.path for p in intent.for_environment(environment.name))
            state.record_applied(commit, event_id, desired_paths)
        result = EnvironmentResult(
            environment=environment.name,
            commit=commit,
            status="applied",
            mode=decision.mode,
            report=report,
            unchanged=report.unchanged,
        )
        _log_result(result)
        return result

    # -- internals --------------------------------------------------------------------------

    def _plan(
        self,
        state: EnvironmentState,
        intent: Intent,
        environment: Environment,
        commit: str,
        scope: Scope,
        applied: AppliedRecord | None,
    ) -> tuple[Plan, ObservedState]:
        desired = self._desired_of(_within(intent, environment.name, scope), environment, commit)
        observer = Observer(
            state.authority,
            kv_mount=desired.kv_mount,
            auth_mount=auth_mount_of(intent),
            concurrency=self.concurrency,
        )
        observed = observer.observe(scope)
        previously = applied.paths if applied is not None else frozenset()
        return make_plan(desired, observed, scope, previously_applied=previously), observed

    def _desired_of(self, intent: Intent, environment: Environment, commit: str) -> DesiredState:
        """desired_state, computed once per (commit, environment): hashing 1,000 documents is
        the largest CPU cost of an incremental push after parsing."""
        key = (commit, environment.name, id(intent))
        found = self._desired_cache.get(key)
        if found is None or found[0] is not intent:
            try:
                found = (intent, desired_state(intent, environment.name, commit))
            except ConsumerNameCollisionError as exc:  # load_valid refuses these first
                raise PermanentError(str(exc), status=422) from None
            self._desired_cache.put(key, found)
        return found[1]

    def _incremental_scope(
        self, url: str, applied_commit: str, loaded: LoadedIntent, environment: Environment
    ) -> Scope:
        old = self.loader.load(url, applied_commit)
        changed = self.source.changed_paths(url, applied_commit, loaded.commit)
        return changed_scope(old.intent, loaded.intent, changed, environment.name)

    def _decide(
        self, url: str, applied: AppliedRecord | None, commit: str, full: bool
    ) -> _Decision:
        if applied is None:
            return _Decision(None, "full")
        if applied.commit == commit:
            return _Decision(None, "full") if full else _Decision("already-applied")
        if self._is_ancestor(url, applied.commit, commit):  # the usual case: a newer push
            return _Decision(None, "full" if full else "incremental")
        if self._is_ancestor(url, commit, applied.commit):
            return _Decision("superseded")
        return _Decision(None, "full")  # unrelated histories: a force-push

    def _is_ancestor(self, url: str, ancestor: str, descendant: str) -> bool:
        """False also when a commit is gone from the remote (history rewritten)."""
        try:
            return self.source.is_ancestor(url, ancestor, descendant)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            return False

    def _skipped(
        self, environment: Environment, commit: str, status: Status, state: EnvironmentState
    ) -> EnvironmentResult:
        """Nothing to do: report the commit the environment matches and its path count."""
        applied = state.last_applied
        result = EnvironmentResult(
            environment=environment.name,
            commit=applied.commit if applied is not None else commit,
            status=status,
            unchanged=len(applied.paths) if applied is not None else 0,
        )
        log(
            _log,
            "INFO",
            f"environment {environment.name}: {status}, nothing to do",
            environment=environment.name,
            commit=commit,
            status=status,
        )
        return result


def consumer_name_collision(intent: Intent, environment: str) -> str | None:
    """Why two distinct consumers would share a policy or role name, or None.

    Checked on names alone (cheap) before anything is applied; merging two identities into
    one policy would grant one the other's secrets.
    """
    seen: dict[str, tuple[str, str]] = {}
    for document in intent.for_environment(environment):
        for consumer in document.consumers:
            identity = (consumer.namespace, consumer.service_account)
            for name in (policy_name(*identity), role_name(*identity)):
                other = seen.setdefault(name, identity)
                if other != identity:
                    return (
                        f"consumers {'/'.join(other)} and {'/'.join(identity)} both map to "
                        f"{name!r}; rename a namespace or service account"
                    )
    return None


def _within(intent: Intent, environment: str, scope: Scope) -> Intent:
    """The documents a plan in ``scope`` needs: those declaring a path in scope, and every
    document of a consumer in scope (its policy lists all its paths). The whole intent for a
    full scope. Hashing only these keeps a one-file push from hashing 1,000 documents."""
    if scope.full:
        return intent

    def needed(document: SecretDocument) -> bool:
        if not document.applies_to(environment):
            return False
        if document.path in scope.paths:
            return True
        return any(
            name in scope.consumers
            for c in document.consumers
            for name in (
                policy_name(c.namespace, c.service_account),
                role_name(c.namespace, c.service_account),
            )
        )

    return Intent(
        environments=intent.environments,
        authority=intent.authority,
        secrets=tuple(d for d in intent.secrets if needed(d)),
        bootstrap_secrets=tuple(d for d in intent.bootstrap_secrets if needed(d)),
        dynamic_credentials=tuple(d for d in intent.dynamic_credentials if needed(d)),
    )


def _log_result(result: EnvironmentResult) -> None:
    report = result.report
    if report is None:
        return
    log(
        _log,
        "INFO",
        f"environment {result.environment} reconciled to {result.commit[:12]}",
        environment=result.environment,
        commit=result.commit,
        status=result.status,
        mode=result.mode,
        created=len(report.created),
        updated=len(report.updated),
        retired=len(report.retired),
        unchanged=report.unchanged,
        drifted=len(report.drift),
        policies_written=len(report.policies_written),
        policies_deleted=len(report.policies_deleted),
        roles_written=len(report.roles_written),
        roles_deleted=len(report.roles_deleted),
        writes=report.writes,
    )
