"""Execute a plan against the authority: the only code that turns planned actions into writes.

Every action is idempotent, so a delivery that fails halfway is simply retried by the broker
(``TransientError``) and converges: a create writes with check-and-set 0, so a value that
already exists is never overwritten (a CAS conflict there means another replica created it
first, which is success); metadata updates are JSON merge patches of the keys this step owns,
so keys written by other steps (rotation, handover) survive a concurrent write.

Secret actions are independent of each other and run on a thread pool, one authority session
per thread (:meth:`Authority.clone`); then policies, then roles (a role references policies);
then removals in plan order (roles, policies, secrets), so access disappears before data does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chamberlain.adapters.authority_errors import CasConflictError
from chamberlain.adapters.due_index import index_planned
from chamberlain.logs import redact
from chamberlain.model.intent import DEFAULT_KUBERNETES_AUTH_MOUNT
from chamberlain.planner.actions import (
    Action,
    CreateSecret,
    DeletePolicy,
    DeleteRole,
    Drift,
    Plan,
    RegisterSecret,
    RetireSecret,
    UpdateMetadata,
    WritePolicy,
    WriteRole,
)
from chamberlain.planner.desired import is_owned_key
from chamberlain.steps.base import (
    TRANSIENT_STATUSES,
    PermanentError,
    StepError,
    TransientError,
)
from chamberlain.steps.values import generate_all

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority

ROLE_TOKEN_TTL = "1h"  # noqa: S105 - a duration, not a secret
MAX_REPORTED_FAILURES = 3


@dataclass(frozen=True)
class ApplyReport:
    """What one applied plan changed: paths and names, counts, drift. Never a value."""

    environment: str
    commit: str
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    unchanged: int = 0
    policies_written: tuple[str, ...] = ()
    policies_deleted: tuple[str, ...] = ()
    roles_written: tuple[str, ...] = ()
    roles_deleted: tuple[str, ...] = ()
    drift: tuple[Drift, ...] = ()
    writes: int = 0  # authority write + delete calls the apply made

    @property
    def changed(self) -> bool:
        return bool(
            self.created
            or self.updated
            or self.retired
            or self.policies_written
            or self.policies_deleted
            or self.roles_written
            or self.roles_deleted
        )


class _Failures:
    """Errors collected from worker threads (messages carry paths, never values)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors: list[tuple[str, Exception]] = []

    def add(self, target: str, error: Exception) -> None:
        with self._lock:
            self.errors.append((target, error))


class Applier:
    """Applies plans with ``authority`` (bound to the environment's namespace)."""

    def __init__(
        self,
        authority: Authority,
        *,
        kv_mount: str = "secret",
        auth_mount: str = DEFAULT_KUBERNETES_AUTH_MOUNT,
        concurrency: int = 8,
    ) -> None:
        self.authority = authority
        self.kv_mount = kv_mount
        self.auth_mount = auth_mount
        self.concurrency = max(1, concurrency)

    def apply(self, plan: Plan) -> ApplyReport:
        """Execute ``plan``; raise a StepError (transient unless all failures are permanent)
        if any action failed, after attempting every independent action."""
        before = self.authority.calls.snapshot()
        secret_actions = [a for a in plan.actions if _is_secret_upsert(a)]
        policies = [a for a in plan.actions if isinstance(a, WritePolicy)]
        roles = [a for a in plan.actions if isinstance(a, WriteRole)]
        removals = [
            a for a in plan.actions if isinstance(a, (DeleteRole, DeletePolicy, RetireSecret))
        ]
        failures = _Failures()
        # The rotation schedule first: a secret is never created without its due-index entry.
        index_planned(self.authority, _new_values(secret_actions))
        self._run_concurrently(secret_actions, failures)
        _raise_if_failed(failures, plan)
        for action in [*policies, *roles, *removals]:
            self._guarded(self.authority, action, failures)
        _raise_if_failed(failures, plan)
        after = self.authority.calls.snapshot()
        writes = (after["write"] - before["write"]) + (after["delete"] - before["delete"])
        return _report(plan, writes)

    # -- execution ----------------------------------------------------------------------------

    def _run_concurrently(self, actions: list[Action], failures: _Failures) -> None:
        if not actions:
            return
        workers = min(self.concurrency, len(actions))
        if workers == 1:
            for action in actions:
                self._guarded(self.authority, action, failures)
            return
        local = threading.local()

        def run(action: Action) -> None:
            authority: Authority | None = getattr(local, "authority", None)
            if authority is None:
                authority = self.authority.clone()
                local.authority = authority
            self._guarded(authority, action, failures)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply") as pool:
            list(pool.map(run, actions))

    def _guarded(self, authority: Authority, action: Action, failures: _Failures) -> None:
        try:
            self._execute(authority, action)
        except Exception as exc:  # collected, reported after every action had its chance
            failures.add(_target(action), exc)

    def _execute(self, authority: Authority, action: Action) -> None:
        kv = self.kv_mount
        if isinstance(action, CreateSecret):
            # Value first, then metadata: managed metadata without a live value can then only
            # mean "deleted behind our back" (the planner relies on it).
            cas = 0
            if action.recreate:
                found = authority.read_metadata(action.path, mount=kv)
                cas = found.current_version if found is not None else 0
            # A CAS conflict: created concurrently by another delivery. Its value stands.
            with contextlib.suppress(CasConflictError):
                authority.write_secret(
                    action.path, generate_all(action.generators), cas=cas, mount=kv
                )
            authority.write_metadata(action.path, custom_metadata=action.metadata, mount=kv)
        elif isinstance(action, RegisterSecret):
            authority.write_metadata(action.path, custom_metadata=action.metadata, mount=kv)
        elif isinstance(action, UpdateMetadata):
            self._merge_metadata(authority, action.path, action.metadata)
        elif isinstance(action, RetireSecret):
            if action.policy == "destroy":
                authority.delete_metadata(action.path, mount=kv)
            else:
                self._merge_metadata(authority, action.path, action.metadata)
                if action.policy == "delete":
                    authority.delete_latest(action.path, mount=kv)
        elif isinstance(action, WritePolicy):
            authority.write_policy(action.name, action.hcl)
        elif isinstance(action, DeletePolicy):
            authority.delete_policy(action.name)
        elif isinstance(action, WriteRole):
            role = action.role
            authority.write_kubernetes_role(
                self.auth_mount,
                role.name,
                service_account_names=[role.service_account],
                namespaces=[role.namespace],
                policies=list(role.policies),
                ttl=ROLE_TOKEN_TTL,
            )
        elif isinstance(action, DeleteRole):
            authority.delete_kubernetes_role(self.auth_mount, action.name)
        else:  # pragma: no cover - Action is a closed union
            raise TypeError(f"unknown action {type(action).__name__}")

    def _merge_metadata(self, authority: Authority, path: str, metadata: Mapping[str, str]) -> None:
        """Make the keys this step owns equal ``metadata``'s, in one merge PATCH.

        Keys of other steps (rotation, handover) are neither sent nor removed, so a concurrent
        write of theirs survives. Falls back to a full write if the metadata vanished.
        """
        current = authority.read_metadata(path, mount=self.kv_mount)
        if current is None:
            authority.write_metadata(path, custom_metadata=metadata, mount=self.kv_mount)
            return
        have = current.custom_metadata
        changes: dict[str, str | None] = {
            k: v for k, v in metadata.items() if is_owned_key(k) and have.get(k) != v
        }
        changes.update({k: None for k in have if is_owned_key(k) and k not in metadata})
        if any(k.startswith("rotation-") for k in changes) or have.get("rotation-held"):
            # A new rotation policy (or an intent change ending a hold) reschedules it.
            index_planned(authority, [(path, {**have, **metadata})])
        if changes and not authority.patch_custom_metadata(path, changes, mount=self.kv_mount):
            authority.write_metadata(path, custom_metadata=metadata, mount=self.kv_mount)


def _new_values(actions: Iterable[Action]) -> list[tuple[str, Mapping[str, str]]]:
    """(path, metadata) of secrets about to get a first value or registration."""
    return [(a.path, a.metadata) for a in actions if isinstance(a, (CreateSecret, RegisterSecret))]


def _is_secret_upsert(action: Action) -> bool:
    return isinstance(action, (CreateSecret, RegisterSecret, UpdateMetadata))


def _target(action: Action) -> str:
    if isinstance(action, (WritePolicy, DeletePolicy, DeleteRole)):
        return action.name
    if isinstance(action, WriteRole):
        return action.role.name
    return action.path


def _raise_if_failed(failures: _Failures, plan: Plan) -> None:
    if not failures.errors:
        return
    errors = failures.errors
    shown = "; ".join(
        f"{target}: {redact(str(error)) or type(error).__name__}"
        for target, error in errors[:MAX_REPORTED_FAILURES]
    )
    extra = len(errors) - MAX_REPORTED_FAILURES
    more = f" (+{extra} more)" if extra > 0 else ""
    message = (
        f"applying commit {plan.commit} to environment {plan.environment}: "
        f"{len(errors)} action(s) failed: {shown}{more}"
    )
    statuses = [e.status for _, e in errors if isinstance(e, StepError)]
    if len(statuses) == len(errors) and all(isinstance(e, PermanentError) for _, e in errors):
        raise PermanentError(message, status=statuses[0])
    transient = [s for s in statuses if s in TRANSIENT_STATUSES]
    raise TransientError(message, status=transient[0] if transient else 503)


def _paths(actions: Iterable[Action], kinds: tuple[type, ...]) -> tuple[str, ...]:
    return tuple(sorted(_target(a) for a in actions if isinstance(a, kinds)))


def _report(plan: Plan, writes: int) -> ApplyReport:
    actions = plan.actions
    return ApplyReport(
        environment=plan.environment,
        commit=plan.commit,
        created=_paths(actions, (CreateSecret, RegisterSecret)),
        updated=_paths(actions, (UpdateMetadata,)),
        retired=_paths(actions, (RetireSecret,)),
        unchanged=plan.unchanged,
        policies_written=_paths(actions, (WritePolicy,)),
        policies_deleted=_paths(actions, (DeletePolicy,)),
        roles_written=_paths(actions, (WriteRole,)),
        roles_deleted=_paths(actions, (DeleteRole,)),
        drift=plan.drift,
        writes=writes,
    )
