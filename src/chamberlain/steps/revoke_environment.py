"""The revoke-environment step: when an environment goes, every credential it held dies with it,
and nothing of another environment is touched.

Accepted events (one environment each):

* ``dev.chamberlain.cluster.deleted.v1`` and ``dev.chamberlain.environment.teardown.v1``
  (``data.environment``);
* ``dev.knative.apiserver.resource.delete`` of a Namespace labelled
  ``chamberlain.dev/environment=<name>`` or of a Cluster API ``Cluster`` (the label, else its
  name), the ApiServerSource counterparts of what initialize-authority accepts on ``add``.
  Other deleted objects are ignored (202).

Phases, in the environment's authority namespace, as this function's own identity (never a
credential that lives in the environment, which may be gone with its cluster; nothing here
talks to that cluster):

1. **leases**: ``revoke-prefix`` (synchronous) per mount holding leases, so the engine drops
   the PostgreSQL roles; leases whose backend revocation fails are listed in ``failures`` and
   forced away only when intent labels the Environment ``chamberlain.dev/force-revoke``.
   Deleting a namespace does *not* revoke its leases' backend credentials (checked on OpenBao
   2.7: the PostgreSQL roles survive), hence this explicit phase. The running count is kept in
   the namespace's state area so a resumed teardown reports the leases of the first attempt;
2. **everything else**: the namespace is deleted (secrets, consumer policies and roles, auth
   mount, engines, state) and the step waits for the asynchronous deletion, bounded. When
   leases are left (not forced), the namespace is kept for them, and the secrets and
   consumer identities in it are removed one by one instead.

Reply: ``dev.chamberlain.environment.revoked.v1`` with counts and failures (never a value).
An environment whose namespace does not exist (already torn down, never created) is
acknowledged with 202. Refusals (a namespace chamberlain does not own, a long-lived
environment still declared in intent) answer 422 and change nothing. Every phase is
idempotent, so a teardown interrupted anywhere finishes on redelivery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.authority_base import data_of
from chamberlain.adapters.authority_errors import (
    AuthorityError,
    AuthorityUnavailableError,
    ForbiddenError,
    InvalidRequestError,
)
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.lazy import lazy_module
from chamberlain.logs import get_logger, log
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import Intent
from chamberlain.planner.function_policies import STATE_MOUNT
from chamberlain.planner.teardown import (
    Failure,
    NamespaceFacts,
    Target,
    TeardownReport,
    decide,
    lease_failures,
    lease_prefixes,
    owned_identities,
    target_for,
)
from chamberlain.steps.base import PermanentError, Step, TransientError
from chamberlain.steps.cluster_events import CLUSTER_API_GROUP, ENVIRONMENT_LABEL

if TYPE_CHECKING:
    import hvac

    from chamberlain.adapters.authority import Authority
else:
    hvac = lazy_module("hvac")

FUNCTION = "revoke-environment"
SOURCE = f"/chamberlain/{FUNCTION}"
PROGRESS_PATH = f"{FUNCTION}/progress"
NAMESPACE_WAIT_S = 60.0
POLL_S = 0.1
HEADS = "refs/heads/"

Hook = Callable[[str], None]

_log = get_logger("chamberlain.revoke-environment")


# ---- the event ---------------------------------------------------------------------------------


def teardown_environment(event_type: str, data: object) -> str | None:
    """The environment an event ends; None when it ends none (ignore the event).

    Raises :class:`PermanentError` for an event of a teardown type without an environment.
    """
    if event_type in (T.CLUSTER_DELETED, T.ENVIRONMENT_TEARDOWN):
        name = data.get("environment") if isinstance(data, Mapping) else None
        if not isinstance(name, str) or not name:
            raise PermanentError(f"{event_type} without data.environment", status=400)
        return name
    if event_type != T.APISERVER_DELETE or not isinstance(data, Mapping):
        return None
    meta = data.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    labels = meta.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    kind = str(data.get("kind") or "")
    api_version = str(data.get("apiVersion") or "")
    label = labels.get(ENVIRONMENT_LABEL)
    if kind == "Namespace" and api_version == "v1":
        return str(label) if label else None
    if kind == "Cluster" and api_version.partition("/")[0] == CLUSTER_API_GROUP:
        name = label or meta.get("name")
        return str(name) if name else None
    return None


# ---- intent ------------------------------------------------------------------------------------


class HeadIntent:
    """The intent at the head of the tracked branch; None when there is no repository.

    A head with problems still yields its valid documents: a broken commit elsewhere in the
    repository must not keep a preview environment's credentials alive.
    """

    def __init__(self, url: str | None, branch: str, source: IntentSource | None) -> None:
        self.url = url
        self.branch = branch
        self.source = source

    def read(self) -> Intent | None:
        if not self.url or self.source is None:
            return None
        from chamberlain.steps.intent_loading import IntentLoader

        try:
            head = self.source.head_of(self.url, HEADS + self.branch)
            if head is None:
                return None
            return IntentLoader(self.source).load(self.url, head).intent
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            log(_log, "WARNING", f"intent unreadable: {exc}")
            return None


# ---- authority I/O -----------------------------------------------------------------------------


def namespace_path(base: str | None, namespace: str) -> str:
    prefix = (base or "").strip("/")
    return f"{prefix}/{namespace}" if prefix else namespace


def _split(path: str) -> tuple[str | None, str]:
    parent, _, leaf = path.rpartition("/")
    return (parent or None), leaf


def observe_namespace(authority: Authority, path: str) -> NamespaceFacts:
    """Whether the namespace exists, its ``custom_metadata``, whether it is being deleted."""
    parent, leaf = _split(path)
    session = authority.for_namespace(parent)
    try:
        with session._op("read_namespace", path):
            try:
                response = session._request("get", f"/v1/sys/namespaces/{quote(leaf)}")
            except hvac.exceptions.InvalidPath:
                return NamespaceFacts(exists=False)
    except ForbiddenError:
        # not a namespace this function serves: function policies name every managed
        # namespace, and drop one once it is gone, so a late duplicate lands here
        log(_log, "WARNING", f"namespace {path} is not reachable by {FUNCTION}: taken as absent")
        return NamespaceFacts(exists=False)
    from chamberlain.adapters.authority_types import string_map

    data = data_of(response)
    return NamespaceFacts(
        exists=True,
        metadata=string_map(data.get("custom_metadata")),
        deleting=bool(data.get("tainted")),
    )


def read_progress(inside: Authority) -> int:
    """Leases an earlier, interrupted attempt of this teardown revoked."""
    try:
        meta = inside.read_metadata(PROGRESS_PATH, mount=STATE_MOUNT)
    except AuthorityUnavailableError:
        raise
    except AuthorityError:
        return 0
    if meta is None:
        return 0
    try:
        return max(0, int(meta.custom_metadata.get("leasesRevoked", "0")))
    except ValueError:
        return 0


def write_progress(inside: Authority, leases_revoked: int, event_id: str) -> None:
    """Best effort: the count only makes a resumed report exact."""
    try:
        inside.write_metadata(
            PROGRESS_PATH,
            custom_metadata={"leasesRevoked": str(leases_revoked), "event": event_id[:200]},
            mount=STATE_MOUNT,
        )
    except AuthorityUnavailableError:
        raise
    except AuthorityError as exc:
        log(_log, "WARNING", "teardown progress not recorded", error=str(exc)[:300])


def list_secrets(inside: Authority, mount: str, concurrency: int) -> list[str]:
    """Every secret path in ``mount``, listed level by level with parallel sessions (a
    1,000-secret environment spreads over dozens of folders; one LIST costs ~10 ms)."""
    local = threading.local()

    def keys(folder: str) -> tuple[str, list[str]]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = inside.clone()
        return folder, session.list_keys(folder, mount=mount)

    found: list[str] = []
    frontier = [""]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        while frontier:
            deeper: list[str] = []
            for folder, listed in pool.map(keys, frontier):
                for key in listed:
                    child = f"{folder}/{key}" if folder else key
                    (deeper if key.endswith("/") else found).append(child.rstrip("/"))
            frontier = deeper
    return sorted(found)


# ---- the step ----------------------------------------------------------------------------------


class RevokeEnvironment:
    """The step callable; one instance serves every delivery of a function process.

    ``after_lease_revocation`` is a test seam (the factory never sets it): called with the
    environment's name between the lease phase and the removal phase.
    """

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        intent: HeadIntent,
        *,
        base_namespace: str | None = None,
        namespace_wait_s: float = NAMESPACE_WAIT_S,
        poll_s: float = POLL_S,
        after_lease_revocation: Hook | None = None,
        concurrency: int = 8,
    ) -> None:
        self._identity = authority
        self.intent = intent
        self.base_namespace = (base_namespace or "").strip("/") or None
        self.namespace_wait_s = namespace_wait_s
        self.poll_s = poll_s
        self.after_lease_revocation = after_lease_revocation
        self.concurrency = max(1, concurrency)

    @property
    def authority(self) -> Authority:
        return resolve(self._identity)

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        environment = teardown_environment(event.get_type(), event.get_data())
        if environment is None:
            log(_log, "INFO", f"ignored: {event.get_type()} names no environment")
            return None
        target = target_for(self.intent.read(), environment)
        authority = self.authority
        path = namespace_path(self.base_namespace, target.namespace)
        facts = observe_namespace(authority, path)
        decision = decide(target, facts)
        if decision.verdict == "refuse":
            log(_log, "WARNING", f"teardown refused: {decision.reason}", environment=environment)
            raise PermanentError(decision.reason, status=422)
        if decision.verdict == "absent":
            if facts.deleting:
                self._wait_gone(authority, path)
            log(_log, "INFO", f"teardown acknowledged: {decision.reason}", environment=environment)
            return None
        report = self._teardown(authority, target, path, event.get_id())
        log(
            _log,
            "INFO" if report.complete else "WARNING",
            f"environment {environment} torn down"
            + ("" if report.complete else f" with {len(report.failures)} failure(s)"),
            namespace=path,
            reason=decision.reason,
            **report.to_data(),
        )
        return make_event(
            T.ENVIRONMENT_REVOKED, report.to_data(), source=SOURCE, subject=environment
        )

    # -- phases -------------------------------------------------------------------------------

    def _teardown(
        self, authority: Authority, target: Target, path: str, event_id: str
    ) -> TeardownReport:
        inside = authority.for_namespace(path)
        earlier = read_progress(inside)
        with ThreadPoolExecutor(max_workers=1) as background:
            # the inventory (read-only) overlaps the lease phase, which waits on the backend
            inventory = background.submit(self._inventory, inside.clone(), target)
            revoked, remaining, forced = self._revoke_leases(inside, force=target.force)
            if revoked:
                write_progress(inside, earlier + revoked, event_id)
            if self.after_lease_revocation is not None:
                self.after_lease_revocation(target.environment)
            secrets, policies, roles = inventory.result()
        failures = lease_failures(remaining, forced=forced)
        if remaining:
            # the leases keep the namespace (and its engine) alive; everything else goes now
            secrets_gone, identities_gone, more = self._remove_piecewise(
                inside, target, secrets, policies, roles
            )
            return TeardownReport(
                target.environment,
                leases_revoked=earlier + revoked,
                secrets_destroyed=secrets_gone,
                identities_removed=identities_gone,
                namespace_deleted=False,
                failures=(*failures, *more),
            )
        deleted = self._delete_namespace(authority, path)
        if not deleted:
            failures.append(
                Failure(
                    f"sys/namespaces/{path}",
                    f"deletion still in progress after {self.namespace_wait_s:g}s; "
                    "a redelivered teardown waits for it",
                )
            )
        return TeardownReport(
            target.environment,
            leases_revoked=earlier + revoked,
            secrets_destroyed=len(secrets),
            identities_removed=len(policies) + len(roles),
            namespace_deleted=deleted,
            failures=tuple(failures),
        )

    def _revoke_leases(self, inside: Authority, *, force: bool) -> tuple[int, list[str], list[str]]:
        """(leases revoked, leases left, leases forced away)."""
        before = inside.list_leases("")
        if not before:
            return 0, [], []
        for prefix in lease_prefixes(before):
            try:
                inside.revoke_prefix(prefix, sync=True)
            except InvalidRequestError as exc:  # the backend refused: see what is left
                log(_log, "WARNING", "revocation failed for some leases", error=str(exc)[:500])
        left = inside.list_leases("")
        forced: list[str] = []
        if left and force:
            for prefix in lease_prefixes(left):
                inside.revoke_prefix(prefix, force=True)
            still = set(inside.list_leases(""))
            forced = [lease for lease in left if lease not in still]
            left = sorted(still)
        revoked = len(set(before) - set(left) - set(forced))
        return revoked, left, forced

    def _inventory(
        self, inside: Authority, target: Target
    ) -> tuple[list[str], list[str], list[str]]:
        """(secrets, consumer policies, consumer roles): what the teardown removes."""
        policies, roles = self._identities(inside, target.auth_mount)
        return list_secrets(inside, target.kv_mount, self.concurrency), policies, roles

    def _identities(self, inside: Authority, auth_mount: str) -> tuple[list[str], list[str]]:
        policies = inside.list_policies()
        roles = (
            inside.list_kubernetes_roles(auth_mount)
            if auth_mount in inside.list_auth_mounts()
            else []
        )
        return owned_identities(policies, roles)

    def _remove_piecewise(
        self,
        inside: Authority,
        target: Target,
        secrets: list[str],
        policies: list[str],
        roles: list[str],
    ) -> tuple[int, int, list[Failure]]:
        """(secrets destroyed, identities removed, failures) without deleting the namespace."""
        failures: list[Failure] = []
        kv, auth = target.kv_mount, target.auth_mount
        destroyed = sum(
            _attempt(failures, f"{kv}/{s}", partial(inside.delete_metadata, s, mount=kv))
            for s in secrets
        )
        removed = sum(
            _attempt(failures, f"sys/policies/acl/{p}", partial(inside.delete_policy, p))
            for p in policies
        )
        removed += sum(
            _attempt(
                failures, f"auth/{auth}/role/{r}", partial(inside.delete_kubernetes_role, auth, r)
            )
            for r in roles
        )
        failures.append(
            Failure(
                f"sys/namespaces/{inside.namespace}",
                "kept: it still holds leases that could not be revoked",
            )
        )
        return destroyed, removed, failures

    def _delete_namespace(self, authority: Authority, path: str) -> bool:
        parent, leaf = _split(path)
        authority.for_namespace(parent).delete_namespace(leaf)
        return self._wait_gone(authority, path)

    def _wait_gone(self, authority: Authority, path: str) -> bool:
        """Poll (bounded) until the asynchronous deletion finished."""
        deadline = time.monotonic() + self.namespace_wait_s
        while True:
            if not observe_namespace(authority, path).exists:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_s)


def _attempt(failures: list[Failure], target: str, action: Callable[[], None]) -> bool:
    """Run one removal; a refusal becomes a failure entry, an outage propagates (retry)."""
    try:
        action()
    except AuthorityUnavailableError:
        raise
    except AuthorityError as exc:
        failures.append(Failure(target, str(exc)[:500]))
        return False
    return True


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see :mod:`chamberlain.settings`)."""
    import os

    from chamberlain.settings import Settings

    env: Mapping[str, Any] = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    source = IntentSource(settings.cache_dir, environ=env) if settings.intent_repo else None
    return RevokeEnvironment(
        FunctionIdentity(FUNCTION, settings, env),
        HeadIntent(settings.intent_repo, settings.intent_branch, source),
        base_namespace=settings.authority_namespace,
        concurrency=settings.concurrency,
    )
