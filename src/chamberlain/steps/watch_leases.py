"""The watch-leases step: on a ``watch-leases`` tick, find the leases about to expire.

Accepted event: ``dev.knative.sources.ping`` with ``{"task": "watch-leases"}`` (other tasks and
other PingSources -> 202). For every environment namespace (the children of the base
namespace, plus those the intent at the head of ``CHAMBERLAIN_INTENT_BRANCH`` declares), the
leases under ``database/creds/`` are listed page by page (``limit``/``after``; OpenBao 2.7
answers this endpoint whole, which the pager detects), grouped by credential path (the path is
encoded in the engine role name, see :mod:`chamberlain.planner.leases`), and each is compared
with the path's KV metadata record:

* the current lease of a role, past its renewal point (``renewal_at`` of its current period,
  from the lease lookup) -> ``dev.chamberlain.lease.expiring.v1``;
* a superseded lease whose overlap ended (``old-lease-revoke-after``) -> revoked here, and its
  record cleared;
* anything else (not chamberlain's, or issued by an attempt that lost a race) is left to expire
  at its TTL.

How N events leave one delivery: a step answers with at most one reply, so each
``lease.expiring`` is POSTed to ``K_SINK`` (the broker in Knative, through a SinkBinding; the
local runtime's ingress), with an id derived from (namespace, lease, expiry) so a repeated tick
sends the same ids; the reply is 202. Without a sink, the most urgent event is the reply and
the others wait for the next ticks (a renewed lease stops being due, so this converges). A sink
that fails -> 503 after the whole scan (the tick is redelivered; renew-lease is idempotent).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority_base import data_of
from chamberlain.adapters.intent_source import IntentSourceError
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.logs import get_logger, log
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import DEFAULT_BRANCH, Intent, kv_mount_of
from chamberlain.planner.leases import (
    DATABASE_MOUNT,
    K_OLD_LEASE,
    K_REVOKE_AFTER,
    LeaseNameError,
    credential_of_lease,
    creds_prefix,
    format_time,
    is_due,
    retiring_due,
    role_key,
)
from chamberlain.steps.base import PermanentError, Step, TransientError
from chamberlain.steps.intent_loading import IntentLoader
from chamberlain.steps.issue_credentials import (
    Clock,
    raw_request,
    read_leases,
    revoke_quietly,
    utc_now,
)

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority, LeaseInfo

FUNCTION = "watch-leases"
SOURCE = f"/chamberlain/{FUNCTION}"
PAGE_SIZE = 500
_EVENT_IDS = uuid.UUID("6f1c1f0e-3b7e-4e43-9a55-2f1d8c0b7a11")

Emit = Callable[[BaseCloudEvent], None]

_log = get_logger("chamberlain.watch-leases")


# ---- environments ----------------------------------------------------------------------------


class EnvironmentDirectory:
    """Which authority namespace an environment lives in, and back; the KV mount.

    Read from the intent at the head of the intent branch when a repository is configured
    (declared namespaces may differ from names); otherwise an environment's name is its
    namespace, below ``base_namespace``.
    """

    def __init__(
        self,
        loader: IntentLoader | None,
        *,
        intent_repo: str | None,
        branch: str = DEFAULT_BRANCH,
        base_namespace: str | None = None,
        default_kv_mount: str = "secret",
    ) -> None:
        self.loader = loader
        self.intent_repo = intent_repo
        self.branch = branch
        self.base = (base_namespace or "").strip("/") or None
        self.default_kv_mount = default_kv_mount

    def intent(self) -> Intent | None:
        """The intent at the branch head, or None without a repository (or an invalid one)."""
        if self.loader is None or not self.intent_repo:
            return None
        try:
            head = self.loader.source.head_of(self.intent_repo, f"refs/heads/{self.branch}")
            if head is None:
                return None
            loaded = self.loader.load(self.intent_repo, head)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None
        return loaded.intent if loaded.valid else None

    def absolute(self, relative: str) -> str:
        return f"{self.base}/{relative}" if self.base else relative

    def namespace_of(self, environment: str, intent: Intent | None) -> str:
        """The absolute namespace of ``environment``."""
        if intent is not None:
            resolved = intent.resolve_environment(environment)
            if resolved is not None:
                return self.absolute(resolved[0].namespace.strip("/"))
        return self.absolute(environment)

    def environments(self, root: Authority, intent: Intent | None) -> dict[str, str]:
        """environment name -> absolute namespace, for every namespace worth scanning."""
        by_namespace = (
            {e.namespace.strip("/"): e.name for e in intent.environments} if intent else {}
        )
        found = {by_namespace.get(n, n): self.absolute(n) for n in root.list_namespaces()}
        if intent is not None:
            for env in intent.environments:
                if not env.ephemeral:
                    found.setdefault(env.name, self.absolute(env.namespace.strip("/")))
        return dict(sorted(found.items()))

    def kv_mount(self, intent: Intent | None) -> str:
        return kv_mount_of(intent) if intent is not None else self.default_kv_mount


# ---- listing ---------------------------------------------------------------------------------


def list_paged(authority: Authority, folder: str, page_size: int = PAGE_SIZE) -> list[str]:
    """Keys of the ``sys/leases/lookup/<folder>/`` LIST, page by page; [] when empty.

    Asks for ``limit``/``after`` pages; a server that ignores them answers everything at once,
    which ends the loop too (a page shorter than asked, or nothing after the last key).
    """
    url = f"/v1/sys/leases/lookup/{folder.strip('/')}/"
    keys: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page_size}
        if after is not None:
            params["after"] = after
        response = raw_request(
            authority, "list", url, operation="list_leases", target=folder, params=params
        )
        if response is None:
            return keys
        page = [str(k) for k in (data_of(response).get("keys") or [])]
        if after is not None:
            page = [k for k in page if k > after]
        keys.extend(page)
        if len(page) < page_size:
            return keys
        after = page[-1]


def list_leases(authority: Authority, mount: str = DATABASE_MOUNT) -> list[str]:
    """Every lease id under ``<mount>/creds/`` (two levels: engine role, then lease)."""
    prefix = creds_prefix(mount)
    found: list[str] = []
    for role in list_paged(authority, prefix):
        if not role.endswith("/"):
            continue
        folder = f"{prefix}/{role.rstrip('/')}"
        found.extend(f"{folder}/{key}" for key in list_paged(authority, folder) if key[-1] != "/")
    return found


# ---- the step --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiring:
    """A lease past its renewal point and the event that says so."""

    expires_at: str
    lease_id: str
    event: BaseCloudEvent


@dataclass
class ScanReport:
    """What one tick found (counts and lease ids only)."""

    leases: int = 0
    expiring: list[Expiring] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    unknown: int = 0


class WatchLeases:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        directory: EnvironmentDirectory,
        *,
        emit: Emit | None = None,
        clock: Clock = utc_now,
        mount: str = DATABASE_MOUNT,
    ) -> None:
        self._identity = authority
        self.directory = directory
        self.emit = emit
        self.clock = clock
        self.mount = mount

    @property
    def authority(self) -> Authority:
        """Resolved per delivery: the step is built before its identity exists."""
        return resolve(self._identity)

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        if event.get_type() != T.PING:
            raise PermanentError(f"{FUNCTION} does not handle {event.get_type()}", status=400)
        data = event.get_data()
        task = data.get("task") if isinstance(data, Mapping) else None
        if task != T.PING_TASK_WATCH_LEASES:
            log(_log, "INFO", f"ignored: ping task {task!r} is not for {FUNCTION}")
            return None
        report = self.scan()
        return self._deliver(report)

    def scan(self) -> ScanReport:
        """Look at every lease once: emit-worthy events collected, retiring leases revoked."""
        now = self.clock()
        intent = self.directory.intent()
        kv_mount = self.directory.kv_mount(intent)
        root = self.authority.for_namespace(self.directory.base)
        report = ScanReport()
        for environment, namespace in self.directory.environments(root, intent).items():
            authority = self.authority.for_namespace(namespace)
            self._namespace(authority, environment, kv_mount, now, report)
        report.expiring.sort(key=lambda e: (e.expires_at, e.lease_id))
        return report

    def _namespace(
        self,
        authority: Authority,
        environment: str,
        kv_mount: str,
        now: datetime,
        report: ScanReport,
    ) -> None:
        by_path: dict[str, list[str]] = {}
        for lease_id in list_leases(authority, self.mount):
            report.leases += 1
            try:
                path, _ = credential_of_lease(lease_id, self.mount)
            except LeaseNameError:
                report.unknown += 1
                continue
            by_path.setdefault(path, []).append(lease_id)
        for path, lease_ids in sorted(by_path.items()):
            _, leases = read_leases(authority, path, kv_mount)
            for record in leases.records.values():
                if retiring_due(record, now) and record.old_lease_id:
                    report.revoked.extend(revoke_quietly(authority, [record.old_lease_id]))
                    clear = {
                        role_key(K_OLD_LEASE, record.role, leases.roles): None,
                        role_key(K_REVOKE_AFTER, record.role, leases.roles): None,
                    }
                    with contextlib.suppress(errors.AuthorityError, TransientError):
                        authority.patch_custom_metadata(path, clear, mount=kv_mount)
            for lease_id in lease_ids:
                if leases.current(lease_id) is None:
                    if leases.retiring(lease_id) is None:
                        report.unknown += 1
                    continue
                info = authority.lookup_lease(lease_id)
                if info is None or info.expire_time is None:
                    continue
                start = info.last_renewal or info.issue_time or now
                if is_due(start, info.expire_time, leases.renewal_at, now):
                    event = _expiring(environment, authority.namespace or "", path, lease_id, info)
                    report.expiring.append(Expiring(format_time(info.expire_time), lease_id, event))

    def _deliver(self, report: ScanReport) -> BaseCloudEvent | None:
        failed = 0
        reply: BaseCloudEvent | None = None
        if self.emit is None:
            reply = report.expiring[0].event if report.expiring else None
        else:
            for item in report.expiring:
                try:
                    self.emit(item.event)
                except Exception as exc:  # the sink: its errors say nothing secret
                    failed += 1
                    log(_log, "WARNING", "lease.expiring not delivered", error=str(exc))
        log(
            _log,
            "INFO",
            f"watched {report.leases} lease(s): {len(report.expiring)} expiring, "
            f"{len(report.revoked)} superseded revoked",
            leases=report.leases,
            expiring=[e.lease_id for e in report.expiring],
            revoked=report.revoked,
            unknown=report.unknown,
            emitted=len(report.expiring) - failed if self.emit is not None else int(bool(reply)),
        )
        if failed:
            raise TransientError(f"{failed} lease.expiring event(s) could not be delivered")
        return reply


def _expiring(
    environment: str, namespace: str, path: str, lease_id: str, info: LeaseInfo
) -> BaseCloudEvent:
    expires = format_time(info.expire_time or datetime.now(timezone.utc))
    key = f"{namespace}|{lease_id}|{expires}"
    return make_event(
        T.LEASE_EXPIRING,
        {
            "environment": environment,
            "path": path,
            "leaseId": lease_id,
            "expiresAt": expires,
            "ttl": max(0, int(info.ttl)),
        },
        source=SOURCE,
        subject=path,
        id_=str(uuid.uuid5(_EVENT_IDS, key)),
    )


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment; ``K_SINK`` receives the expiring events."""
    from chamberlain.adapters.intent_source import IntentSource
    from chamberlain.runtime.emit import http_emitter
    from chamberlain.settings import Settings

    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    sink = env.get("K_SINK")
    directory = EnvironmentDirectory(
        IntentLoader(IntentSource(settings.cache_dir, environ=env)),
        intent_repo=settings.intent_repo,
        branch=settings.intent_branch,
        base_namespace=settings.authority_namespace,
        default_kv_mount=env.get("CHAMBERLAIN_KV_MOUNT") or "secret",
    )
    return WatchLeases(
        FunctionIdentity(FUNCTION, settings, environ),
        directory,
        emit=http_emitter(sink) if sink else None,
    )
