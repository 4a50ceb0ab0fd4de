"""The rotate-secrets step: new values for secrets that are due, requested or compromised.

Accepted events, all handled by the same per-secret code path (:meth:`RotateSecrets.handle`):

* ``dev.knative.sources.ping`` with ``{"task": "rotate"}``: every environment's due index
  (:mod:`chamberlain.adapters.due_index`) is read from its cursor to now, and exactly the
  entries that are due are handled: O(due) authority calls, not O(secrets);
* ``dev.chamberlain.secret.rotate.requested.v1``: rotate one secret now;
* ``dev.chamberlain.secret.compromised.v1``: rotate one secret now and destroy the old
  versions at once (no overlap).

A rotation writes the new value as a new KV v2 version with check-and-set on the current one,
records who/when/why/which in the secret's custom metadata (two phases, see
:mod:`chamberlain.planner.rotation`), nudges the consumers (:mod:`.propagate`), and re-indexes
the secret at its next due time (and its previous version at the end of the overlap, when
``revokeOld``). Redeliveries, duplicate ticks and concurrent replicas converge on one new version
per due window: the loser of the check-and-set re-reads and skips.

Runtime secrets only: bootstrap and dynamic secrets are never rotated here (events naming one
are refused with 422); for ``internal`` secrets the owner writes the value, so a due tick emits
``dev.chamberlain.secret.rotate.requested.v1`` (to ``K_SINK``) and lists them in the reply.

Failures: the authority unreachable, sealed or not configured ends the delivery with 503 at
once (the broker retries; every handled secret is skipped on redelivery). Other failures are per
secret and follow its ``failureStrategy``: ``retry`` (the delivery answers 503 after handling
the other secrets), ``alert`` (listed under ``failed`` in the reply, which carries the extension
attribute ``alert=true``; the entry stays, so each tick tries and alerts again) or ``hold``
(``rotation-held`` is recorded and the secret is not rotated again until its intent changes or a
rotation is requested).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from chamberlain.adapters.authority_errors import (
    AuthorityUnavailableError,
    CasConflictError,
    ForbiddenError,
)
from chamberlain.adapters.due_index import DueIndex, Entry, destroy_key, rotate_key
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.adapters.state import EnvironmentState, NotConfiguredError
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.logs import get_logger, log, redact
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import (
    DEFAULT_BRANCH,
    Consumer,
    Environment,
    Intent,
    RotationPolicy,
    SecretDocument,
    SecretIntent,
    authority_namespace,
    kv_mount_of,
)
from chamberlain.planner.rotation import (
    DESTROY_PENDING,
    PREVIOUS_VERSION,
    ROTATION_PENDING,
    ROTATION_TRIGGER,
    Decision,
    Observed,
    Trigger,
    begin_patch,
    decide,
    describe_reason,
    destroy_due,
    finish_patch,
    hold_patch,
    iso,
    next_destroy,
    owner_patch,
    parse_destroy_pending,
    policy_of,
    window_for_event,
)
from chamberlain.steps.base import PermanentError, Step, StepError, TransientError
from chamberlain.steps.intent_loading import IntentLoader
from chamberlain.steps.propagate import PropagationReport, kube_from_env, propagate
from chamberlain.steps.values import generate_all

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority, SecretMetadata

FUNCTION = "rotate-secrets"
SOURCE = f"/chamberlain/{FUNCTION}"
HEADS = "refs/heads/"
MAX_LISTED = 1000
DEFAULT_CONCURRENCY = 4

Clock = Callable[[], datetime]
Emit = Callable[[BaseCloudEvent], None]
Checkpoint = Callable[[str, str], None]
"""Called with (stage, path) at ``written`` (value written, record not finished) and
``rotated`` (all done): a seam for fault-injection tests and metrics."""

_TRIGGER_OF: Mapping[str, Trigger] = {
    T.SECRET_ROTATE_REQUESTED: "request",
    T.SECRET_COMPROMISED: "compromise",
}

_log = get_logger("chamberlain.rotate-secrets")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ---- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotated:
    """One completed rotation (what the reply lists). Never a value."""

    environment: str
    path: str
    version: int
    previous_version: int | None
    reason: str
    rotated_at: datetime
    next_due: datetime | None = None
    overlap_until: datetime | None = None
    destroyed: tuple[int, ...] = ()
    propagation: PropagationReport | None = None

    def data(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "environment": self.environment,
            "path": self.path,
            "version": self.version,
            "previousVersion": self.previous_version or None,
            "reason": self.reason,
            "rotatedAt": iso(self.rotated_at),
        }
        if self.next_due is not None:
            item["nextDue"] = iso(self.next_due)
        if self.overlap_until is not None:
            item["overlapUntil"] = iso(self.overlap_until)
        if self.destroyed:
            item["destroyedVersions"] = list(self.destroyed)
        if self.propagation is not None:
            item["propagation"] = {
                "externalSecrets": self.propagation.external_secrets_synced,
                "workloads": self.propagation.workloads_restarted,
            }
            if self.propagation.skipped:
                item["propagation"]["skipped"] = True
        return item


@dataclass(frozen=True)
class Problem:
    environment: str
    path: str
    strategy: Literal["retry", "alert", "hold"]
    reason: str


@dataclass
class Outcome:
    """What handling one index entry or event did, and what the index must do about it."""

    handled: bool = True  # remove the entry from its bucket
    reindex: dict[str, datetime] = field(default_factory=dict)
    rotated: Rotated | None = None
    destroyed: tuple[int, ...] = ()
    owner: str | None = None
    held: Problem | None = None
    failed: Problem | None = None
    contended: bool = False  # another delivery is finishing this secret: retry the event


@dataclass
class RunReport:
    """Everything one delivery did, across environments."""

    trigger: Trigger
    rotated: list[Rotated] = field(default_factory=list)
    destroyed: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    owner_requested: list[tuple[str, str, str]] = field(default_factory=list)
    held: list[Problem] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)
    contended: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.rotated or self.destroyed or self.owner_requested or self.held or self.failed
        )

    def add(self, environment: str, path: str, outcome: Outcome) -> None:
        if outcome.rotated is not None:
            self.rotated.append(outcome.rotated)
        if outcome.destroyed:
            self.destroyed.append((environment, path, outcome.destroyed))
        if outcome.owner is not None:
            self.owner_requested.append((environment, path, outcome.owner))
        if outcome.held is not None:
            self.held.append(outcome.held)
        if outcome.failed is not None:
            self.failed.append(outcome.failed)
        if outcome.contended:
            self.contended.append(f"{environment}/{path}")


def reply_for(report: RunReport, *, subject: str | None = None) -> CloudEvent:
    """``dev.chamberlain.secret.rotated.v1`` for a delivery (lists cut at 1000)."""
    truncated = False

    def cut(items: list[Any]) -> list[Any]:
        nonlocal truncated
        truncated = truncated or len(items) > MAX_LISTED
        return items[:MAX_LISTED]

    data: dict[str, Any] = {
        "trigger": report.trigger,
        "rotations": cut([r.data() for r in report.rotated]),
        "destroyed": cut(
            [{"environment": e, "path": p, "versions": list(v)} for e, p, v in report.destroyed]
        ),
        "ownerRequested": cut(
            [{"environment": e, "path": p, "owner": o} for e, p, o in report.owner_requested]
        ),
        "held": cut([_problem(p) for p in report.held]),
        "failed": cut([_problem(p) for p in report.failed]),
    }
    if truncated:
        data["truncated"] = True
    alert = any(p.strategy == "alert" for p in report.failed)
    return make_event(
        T.SECRET_ROTATED,
        data,
        source=SOURCE,
        subject=subject or report.trigger,
        extensions={"alert": "true"} if alert else None,
    )


def _problem(problem: Problem) -> dict[str, str]:
    return {
        "environment": problem.environment,
        "path": problem.path,
        "strategy": problem.strategy,
        "reason": problem.reason[:2000] or "rotation failed",
    }


# ---- one environment ------------------------------------------------------------------------


@dataclass
class EnvironmentContext:
    """An environment's authority session and the intent applied to it (loaded lazily)."""

    environment: Environment
    authority: Authority
    intent: Intent | None = None
    commit: str | None = None

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def kv_mount(self) -> str:
        return kv_mount_of(self.intent) if self.intent is not None else "secret"

    def document(self, path: str) -> SecretDocument | None:
        if self.intent is None:
            return None
        return next((d for d in self.intent.for_environment(self.name) if d.path == path), None)

    def consumers(self, path: str) -> Sequence[Consumer]:
        document = self.document(path)
        return document.consumers if document is not None else ()


# ---- the step -------------------------------------------------------------------------------


class RotateSecrets:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        source: IntentSource,
        *,
        intent_repo: str | None,
        default_branch: str = DEFAULT_BRANCH,
        base_namespace: str | None = None,
        loader: IntentLoader | None = None,
        kube: Any = None,
        clock: Clock = utcnow,
        emit: Emit | None = None,
        checkpoint: Checkpoint | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._identity = authority
        self.source = source
        self.loader = loader or IntentLoader(source)
        self.intent_repo = intent_repo
        self.default_branch = default_branch
        self.base_namespace = base_namespace
        self.kube = kube
        self.clock = clock
        self.emit = emit
        self.checkpoint = checkpoint
        self.concurrency = max(1, concurrency)

    @property
    def authority(self) -> Authority:
        """The function's own identity, resolved on first use (the step may be built before
        the authority is initialized and its token exists)."""
        return resolve(self._identity)

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        try:
            return self._dispatch(event)
        except ForbiddenError:
            if isinstance(self._identity, FunctionIdentity):
                self._identity.reset()  # the initializer may have replaced the token
            raise

    def _dispatch(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        type_ = event.get_type()
        if type_ == T.PING:
            data = event.get_data()
            task = data.get("task") if isinstance(data, Mapping) else None
            if task != T.PING_TASK_ROTATE:
                return _ignored(f"ping task {task!r} is not for {FUNCTION}")
            return self.tick(event)
        trigger = _TRIGGER_OF.get(type_)
        if trigger is None:
            raise PermanentError(f"{FUNCTION} does not handle {type_}", status=400)
        return self.on_event(event, trigger)

    # -- a tick -----------------------------------------------------------------------------

    def tick(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        now = self.clock()
        report = RunReport(trigger="schedule")
        for environment in self._environments():
            self._tick_environment(environment, event, now, report)
        return self._finish(report, subject="schedule")

    def _tick_environment(
        self, environment: Environment, event: BaseCloudEvent, now: datetime, report: RunReport
    ) -> None:
        ctx = self._context(environment)
        index = DueIndex(ctx.authority, environment=environment.name)
        try:
            scan = index.scan(now)
        except NotConfiguredError as exc:
            log(_log, "WARNING", f"environment {environment.name} skipped: {exc}")
            return
        due = scan.due()
        if due:
            self._load_intent(ctx)
        outcomes = self._handle_all(ctx, due, event, now)
        reindex: dict[str, datetime] = {}
        handled: list[Entry] = []
        for entry, outcome in outcomes:
            report.add(environment.name, entry.path, outcome)
            reindex.update(outcome.reindex)
            if outcome.handled:
                handled.append(entry)
        if reindex:
            index.add(reindex, now=now)
        index.finish(scan, handled, now=now)
        if due:
            log(
                _log,
                "INFO",
                f"environment {environment.name}: {len(due)} due entr(ies) handled",
                environment=environment.name,
                due=len(due),
                rotated=sum(1 for _, o in outcomes if o.rotated is not None),
                kept=sum(1 for _, o in outcomes if not o.handled),
            )

    def _handle_all(
        self, ctx: EnvironmentContext, due: list[Entry], event: BaseCloudEvent, now: datetime
    ) -> list[tuple[Entry, Outcome]]:
        """Handle due entries, concurrently with one authority session per thread.

        The authority becoming unavailable stops the run: that error is re-raised once every
        started entry finished, so nothing is left half-counted.
        """
        if not due:
            return []
        local = threading.local()
        stop = threading.Event()
        fatal: list[StepError] = []

        def run(entry: Entry) -> tuple[Entry, Outcome] | None:
            if stop.is_set():
                return None
            authority: Authority | None = getattr(local, "authority", None)
            if authority is None:
                authority = ctx.authority.clone() if self.concurrency > 1 else ctx.authority
                local.authority = authority
            try:
                return entry, self._entry(ctx, authority, entry, event, now)
            except (AuthorityUnavailableError, NotConfiguredError) as exc:
                stop.set()
                fatal.append(exc)
                return None

        workers = min(self.concurrency, len(due))
        if workers == 1:
            results = [run(entry) for entry in due]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotate") as pool:
                results = list(pool.map(run, due))
        if fatal:
            raise TransientError(
                f"environment {ctx.name}: authority unavailable during rotation: {fatal[0]}",
                status=503,
            )
        return [r for r in results if r is not None]

    def _entry(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        entry: Entry,
        event: BaseCloudEvent,
        now: datetime,
    ) -> Outcome:
        if entry.kind == "destroy":
            return self._guarded(
                ctx, entry.path, None, lambda: self._destroy(ctx, authority, entry.path, now)
            )
        return self.handle(
            ctx, authority, entry.path, trigger="schedule", event=event, now=now, given_reason=None
        )

    # -- request / compromise ----------------------------------------------------------------

    def on_event(self, event: BaseCloudEvent, trigger: Trigger) -> BaseCloudEvent | None:
        data = event.get_data()
        if not isinstance(data, Mapping):
            raise PermanentError(f"{event.get_type()} without data", status=400)
        name = str(data.get("environment") or "")
        path = str(data.get("path") or "")
        environment = self._environment(name)
        ctx = self._context(environment)
        self._load_intent(ctx)
        now = self.clock()
        window = window_for_event(trigger, str(event.get_source()), str(event.get_id()))
        outcome = self.handle(
            ctx,
            ctx.authority,
            path,
            trigger=trigger,
            event=event,
            now=now,
            given_reason=str(data.get("reason") or "") or None,
            window=window,
        )
        if outcome.reindex:
            DueIndex(ctx.authority, environment=name).add(outcome.reindex, now=now)
        report = RunReport(trigger=trigger)
        report.add(name, path, outcome)
        return self._finish(report, subject=path)

    def _environment(self, name: str) -> Environment:
        for environment in self._environments():
            if environment.name == name:
                return environment
        raise PermanentError(f"environment {name!r} is not declared in the intent", status=422)

    # -- one secret: the code path every trigger shares ---------------------------------------

    def handle(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        path: str,
        *,
        trigger: Trigger,
        event: BaseCloudEvent,
        now: datetime,
        given_reason: str | None,
        window: str | None = None,
    ) -> Outcome:
        """Decide and act for ``path``; per-secret failures follow its failureStrategy."""
        found = authority.read_metadata(path, mount=ctx.kv_mount)
        observed = _observed(found)
        decision = decide(observed, now=now, trigger=trigger, window=window)
        if trigger != "schedule" and decision.verdict == "ignore":
            raise PermanentError(f"{path} in {ctx.name}: cannot rotate: {decision.why}")
        assert observed is not None or decision.verdict == "ignore"
        policy = policy_of(observed.metadata) if observed is not None else None
        return self._guarded(
            ctx,
            path,
            policy,
            lambda: self._act(
                ctx, authority, path, observed, decision, trigger, event, now, given_reason
            ),
            metadata=observed.metadata if observed is not None else None,
            authority=authority,
        )

    def _guarded(
        self,
        ctx: EnvironmentContext,
        path: str,
        policy: RotationPolicy | None,
        action: Callable[[], Outcome],
        *,
        metadata: Mapping[str, str] | None = None,
        authority: Authority | None = None,
    ) -> Outcome:
        try:
            return action()
        except (AuthorityUnavailableError, NotConfiguredError):
            raise
        except Exception as exc:
            reason = redact(str(exc)) or type(exc).__name__
            transient = not isinstance(exc, PermanentError) and isinstance(exc, StepError)
            strategy = policy.failure_strategy if policy is not None else "retry"
            if transient:
                strategy = "retry"  # an outage of a peer is retried whatever the policy says
            log(
                _log,
                "WARNING",
                f"rotation of {path} in {ctx.name} failed ({strategy}): {reason}",
                environment=ctx.name,
                path=path,
                strategy=strategy,
                error=reason,
            )
            problem = Problem(ctx.name, path, strategy, reason)
            if strategy == "hold" and authority is not None and metadata is not None:
                authority.patch_custom_metadata(
                    path, hold_patch(metadata, reason), mount=ctx.kv_mount
                )
                return Outcome(handled=True, held=problem)
            return Outcome(handled=False, failed=problem)

    def _act(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        path: str,
        observed: Observed | None,
        decision: Decision,
        trigger: Trigger,
        event: BaseCloudEvent,
        now: datetime,
        given_reason: str | None,
    ) -> Outcome:
        verdict = decision.verdict
        if verdict == "ignore" or observed is None:
            return Outcome()
        meta = observed.metadata
        policy = policy_of(meta)
        if verdict == "not-due":
            assert decision.due is not None
            return Outcome(reindex={rotate_key(path): decision.due})
        if verdict == "held":
            return Outcome()
        if verdict == "owner":
            return self._ask_owner(ctx, authority, path, meta, decision, trigger, now, policy)
        if verdict == "done":
            if meta.get("kind") == "internal" and policy is not None:
                return Outcome(reindex={rotate_key(path): now + policy.rotate_before})
            return Outcome(rotated=self._already(ctx, path, observed, now))
        if verdict == "in-flight":
            return Outcome(handled=False, contended=True)
        if verdict == "recorded":
            # A late phase-one patch of a concurrent loser re-set the marker: clear it.
            authority.patch_custom_metadata(path, {ROTATION_PENDING: None}, mount=ctx.kv_mount)
            return Outcome()
        if verdict == "finish":
            previous = _trigger(meta.get(ROTATION_TRIGGER), trigger)
            return self._complete(
                ctx,
                authority,
                path,
                meta,
                policy,
                from_version=decision.from_version,
                new_version=observed.current_version,
                trigger=previous,
                window=decision.window,
                reason=meta.get("rotation-reason") or describe_reason(previous, policy, None),
                now=now,
            )
        return self._rotate(
            ctx, authority, path, observed, decision, trigger, event, now, given_reason, policy
        )

    def _rotate(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        path: str,
        observed: Observed,
        decision: Decision,
        trigger: Trigger,
        event: BaseCloudEvent,
        now: datetime,
        given_reason: str | None,
        policy: RotationPolicy | None,
    ) -> Outcome:
        document = ctx.document(path)
        if not isinstance(document, SecretIntent) or not document.generate:
            raise PermanentError(
                f"{path} is not a runtime secret of the intent applied to {ctx.name} "
                f"(commit {ctx.commit or 'none'}): no generator to make a new value"
            )
        reason = describe_reason(trigger, policy, given_reason)
        from_version = observed.current_version
        kv = ctx.kv_mount
        authority.patch_custom_metadata(
            path,
            begin_patch(
                from_version=from_version,
                started_at=now,
                window=decision.window,
                trigger=trigger,
                event_id=str(event.get_id()),
                reason=reason,
            ),
            mount=kv,
        )
        try:
            new_version = authority.write_secret(
                path, generate_all(document.generate), cas=from_version, mount=kv
            )
        except CasConflictError:
            return self._lost_race(ctx, authority, path, from_version, decision, trigger)
        self._checkpoint("written", path)
        return self._complete(
            ctx,
            authority,
            path,
            observed.metadata,
            policy,
            from_version=from_version,
            new_version=new_version,
            trigger=trigger,
            window=decision.window,
            reason=reason,
            now=now,
        )

    def _complete(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        path: str,
        metadata: Mapping[str, str],
        policy: RotationPolicy | None,
        *,
        from_version: int,
        new_version: int,
        trigger: Trigger,
        window: str,
        reason: str,
        now: datetime,
    ) -> Outcome:
        """After the value is written: destroy (compromise), propagate, finish the record."""
        kv = ctx.kv_mount
        destroyed: tuple[int, ...] = ()
        if trigger == "compromise":
            older = {v for v, _ in parse_destroy_pending(metadata.get(DESTROY_PENDING))}
            older.add(from_version)
            destroyed = tuple(sorted(v for v in older if 0 < v < new_version))
            if destroyed:
                authority.destroy_versions(path, destroyed, mount=kv)
        propagation = self._propagate(ctx, path, new_version, reason)
        patch = finish_patch(
            metadata,
            policy=policy,
            from_version=from_version,
            new_version=new_version,
            rotated_at=now,
            trigger=trigger,
            window=window,
            destroyed_now=bool(destroyed),
        )
        authority.patch_custom_metadata(path, patch, mount=kv)
        self._checkpoint("rotated", path)
        reindex: dict[str, datetime] = {}
        next_due = overlap_until = None
        if policy is not None:
            next_due = now + policy.ttl - policy.rotate_before
            reindex[rotate_key(path)] = next_due
            if not destroyed:
                overlap_until = now + policy.max_overlap
                if policy.revoke_old and from_version:
                    reindex[destroy_key(path)] = overlap_until
        rotated = Rotated(
            environment=ctx.name,
            path=path,
            version=new_version,
            previous_version=from_version or None,
            reason=reason,
            rotated_at=now,
            next_due=next_due,
            overlap_until=overlap_until,
            destroyed=destroyed,
            propagation=propagation,
        )
        log(
            _log,
            "INFO",
            f"rotated {path} in {ctx.name}: v{from_version} -> v{new_version} ({trigger})",
            environment=ctx.name,
            path=path,
            version=new_version,
            previous_version=from_version,
            trigger=trigger,
            reason=reason,
            destroyed=list(destroyed),
        )
        return Outcome(reindex=reindex, rotated=rotated)

    def _lost_race(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        path: str,
        from_version: int,
        decision: Decision,
        trigger: Trigger,
    ) -> Outcome:
        """Another writer moved the version first: its value stands; never write a second.

        A compromise still destroys the versions it was about (at or below ``from_version``).
        The entry stays in the index for the winner (or a later tick) to finish.
        """
        log(
            _log,
            "INFO",
            f"{path} in {ctx.name}: version moved past {from_version} concurrently; skipped",
            environment=ctx.name,
            path=path,
        )
        if trigger == "compromise":
            current = authority.read_metadata(path, mount=ctx.kv_mount)
            if current is not None:
                old = [
                    v for v, info in current.versions.items() if v <= from_version and info.alive
                ]
                if old:
                    authority.destroy_versions(path, old, mount=ctx.kv_mount)
        return Outcome(handled=False)

    def _already(
        self, ctx: EnvironmentContext, path: str, observed: Observed, now: datetime
    ) -> Rotated:
        """The reply for a redelivered request/compromise: the rotation it caused."""
        meta = observed.metadata
        previous = meta.get(PREVIOUS_VERSION, "")
        propagation = self._propagate(
            ctx, path, observed.current_version, meta.get("rotation-reason") or "redelivery"
        )
        return Rotated(
            environment=ctx.name,
            path=path,
            version=observed.current_version,
            previous_version=int(previous) if previous.isdigit() else None,
            reason=meta.get("rotation-reason") or "already rotated",
            rotated_at=observed.created or now,
            propagation=propagation,
        )

    def _ask_owner(
        self,
        ctx: EnvironmentContext,
        authority: Authority,
        path: str,
        metadata: Mapping[str, str],
        decision: Decision,
        trigger: Trigger,
        now: datetime,
        policy: RotationPolicy | None,
    ) -> Outcome:
        owner = metadata.get("owner") or "unknown"
        reason = f"internal secret due ({decision.why}): the owner must write a new value"
        if trigger == "schedule" and self.emit is not None:
            request = make_event(
                T.SECRET_ROTATE_REQUESTED,
                {
                    "environment": ctx.name,
                    "path": path,
                    "reason": reason,
                    "requestedBy": FUNCTION,
                },
                source=SOURCE,
                subject=path,
            )
            self.emit(request)
        authority.patch_custom_metadata(
            path, owner_patch(decision.window, metadata, trigger), mount=ctx.kv_mount
        )
        log(
            _log,
            "INFO",
            f"{path} in {ctx.name}: owner {owner} asked for a new value",
            environment=ctx.name,
            path=path,
            owner=owner,
        )
        reindex = {}
        if trigger == "schedule" and policy is not None:
            reindex[rotate_key(path)] = now + policy.rotate_before
        return Outcome(reindex=reindex, owner=owner)

    def _destroy(
        self, ctx: EnvironmentContext, authority: Authority, path: str, now: datetime
    ) -> Outcome:
        """Destroy previous versions whose overlap ended (revokeOld)."""
        found = authority.read_metadata(path, mount=ctx.kv_mount)
        if found is None:
            return Outcome()
        meta = found.custom_metadata
        versions, remaining = destroy_due(meta, now)
        alive = tuple(v for v in versions if v in found.versions and found.versions[v].alive)
        if alive:
            authority.destroy_versions(path, alive, mount=ctx.kv_mount)
        if versions:
            authority.patch_custom_metadata(path, {DESTROY_PENDING: remaining}, mount=ctx.kv_mount)
            log(
                _log,
                "INFO",
                f"destroyed {path} versions {list(alive)} in {ctx.name} (overlap ended)",
                environment=ctx.name,
                path=path,
                versions=list(alive),
            )
        reindex: dict[str, datetime] = {}
        following = next_destroy({DESTROY_PENDING: remaining or ""})
        if following is not None:
            reindex[destroy_key(path)] = following
        return Outcome(reindex=reindex, destroyed=alive)

    # -- helpers ----------------------------------------------------------------------------

    def _propagate(
        self, ctx: EnvironmentContext, path: str, version: int, reason: str
    ) -> PropagationReport:
        return propagate(
            self.kube,
            environment=ctx.name,
            path=path,
            version=version,
            consumers=ctx.consumers(path),
            reason=reason,
        )

    def _checkpoint(self, stage: str, path: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(stage, path)

    def _finish(self, report: RunReport, *, subject: str) -> BaseCloudEvent | None:
        retry = [p for p in report.failed if p.strategy == "retry"]
        reply = None if report.empty else reply_for(report, subject=subject)
        if report.contended:
            raise TransientError(
                f"{len(report.contended)} secret(s) are being rotated by another delivery "
                f"({', '.join(report.contended[:3])}); retry later",
                status=409,
                reply=reply,
            )
        if reply is None:
            return _ignored("nothing due")
        if retry:
            raise TransientError(
                f"{len(retry)} rotation(s) failed and will be retried: "
                + "; ".join(f"{p.environment}/{p.path}: {p.reason}" for p in retry[:3]),
                status=503,
                reply=reply,
            )
        return reply

    def _environments(self) -> list[Environment]:
        """Long-lived environments declared at the head of the intent's default branch."""
        url = self.intent_repo
        if not url:
            raise PermanentError(
                "no intent repository configured (CHAMBERLAIN_INTENT_REPO)", status=422
            )
        try:
            head = self.source.head_of(url, HEADS + self.default_branch)
            if head is None:
                return []
            intent = self.loader.load(url, head).intent
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None
        return sorted((e for e in intent.environments if not e.ephemeral), key=lambda e: e.name)

    def _context(self, environment: Environment) -> EnvironmentContext:
        namespace = authority_namespace(self.base_namespace, environment)
        return EnvironmentContext(environment, self.authority.for_namespace(namespace))

    def _load_intent(self, ctx: EnvironmentContext) -> None:
        """The intent at the commit applied to the environment (generators, consumers)."""
        if ctx.intent is not None or not self.intent_repo:
            return
        applied = EnvironmentState(ctx.authority, environment=ctx.name).applied()
        if applied is None:
            return
        try:
            ctx.intent = self.loader.load(self.intent_repo, applied.commit).intent
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None
        ctx.commit = applied.commit


def _trigger(value: str | None, default: Trigger) -> Trigger:
    if value == "schedule":
        return "schedule"
    if value == "request":
        return "request"
    if value == "compromise":
        return "compromise"
    return default


def _observed(found: SecretMetadata | None) -> Observed | None:
    if found is None:
        return None
    info = found.versions.get(found.current_version)
    return Observed(
        metadata=found.custom_metadata,
        current_version=found.current_version,
        alive=info is not None and info.alive,
        created=info.created_time if info is not None else None,
    )


def _ignored(why: str) -> BaseCloudEvent | None:
    log(_log, "INFO", f"ignored: {why}", reason=why)
    return None


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see :mod:`chamberlain.settings`).

    Propagation talks to ``CHAMBERLAIN_KUBE_HOST`` (+ ``CHAMBERLAIN_KUBE_TOKEN[_FILE]``) or the
    in-cluster API; without either it is skipped. ``K_SINK`` receives the
    ``secret.rotate.requested`` events for due internal secrets.
    """
    import os

    from chamberlain.settings import Settings

    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    identity = FunctionIdentity(FUNCTION, settings, env)
    emit: Emit | None = None
    if env.get("K_SINK"):
        from chamberlain.runtime.emit import http_emitter

        emit = http_emitter(env["K_SINK"])
    kube: Any = None
    try:
        kube = kube_from_env(env)
    except Exception as exc:  # a broken kube config must not stop rotation itself
        log(_log, "WARNING", f"propagation disabled: {redact(str(exc)) or type(exc).__name__}")
    return RotateSecrets(
        identity,
        IntentSource(settings.cache_dir, environ=environ),
        intent_repo=settings.intent_repo,
        default_branch=settings.intent_branch,
        base_namespace=settings.authority_namespace,
        kube=kube,
        emit=emit,
        concurrency=min(settings.concurrency, DEFAULT_CONCURRENCY),
    )
