"""The issue-credentials step: DynamicCredentials become a configured database engine and live,
leased credentials in KV, where the materialization layer picks them up.

Accepted events:

* ``dev.chamberlain.secrets.issued.v1``: issue-secrets applied a commit; every environment it
  lists is configured from the intent at that environment's commit (``CHAMBERLAIN_INTENT_REPO``);
* ``dev.chamberlain.handover.completed.v1``: a bootstrap secret reached the authority; the
  DynamicCredentials whose ``adminSecret`` it is are configured now.

Per environment namespace, mount ``database`` (a ``database`` secrets engine, enabled when
missing) gets one connection per DynamicCredential (the ``connectionUrl`` template with the
admin ``username``/``password`` read from the handed-over BootstrapSecret) and one engine role
per declared role (names: :mod:`chamberlain.planner.leases`). Each allowed role whose lease is
missing, dead, or from another role layout gets a fresh credential: written as a new KV version
(check-and-set) at the credential's path, its lease recorded in ``custom_metadata``
(docs/leases.md), consumers nudged. A live lease is left alone, so redelivery changes nothing.

Answers: ``dev.chamberlain.credentials.issued.v1`` (paths, roles, lease ids, expiry, versions;
never a value); 202 when no DynamicCredential concerns the event; 503 while an admin secret
has not been handed over yet (``waiting for bootstrap handover``), after everything else was done.

The I/O helpers here (:func:`read_leases`, :func:`issue_roles`) are shared with renew-lease,
whose re-issue is the same operation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority_base import data_of
from chamberlain.adapters.authority_errors import AlreadyExistsError, AuthorityError
from chamberlain.adapters.intent_source import IntentSourceError
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.lazy import lazy_module
from chamberlain.logs import get_logger, log, register_secret
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import (
    Consumer,
    DynamicCredential,
    Intent,
    authority_namespace,
    kv_mount_of,
)
from chamberlain.planner.leases import (
    DATABASE_MOUNT,
    LEASE_KEYS,
    CredentialLeases,
    LeaseRecord,
    connection_name,
    data_keys,
    decode,
    encode_record,
    engine_role,
    format_time,
    new_record,
)
from chamberlain.steps.base import PermanentError, Step, TransientError
from chamberlain.steps.intent_loading import IntentLoader

if TYPE_CHECKING:
    import hvac
    import requests

    from chamberlain.adapters.authority import Authority, SecretMetadata
else:
    hvac = lazy_module("hvac")
    requests = lazy_module("requests")

FUNCTION = "issue-credentials"
SOURCE = f"/chamberlain/{FUNCTION}"
CREDENTIALS_ISSUED = T.CREDENTIALS_ISSUED
MAX_LISTED = 1000

Clock = Callable[[], datetime]

_log = get_logger("chamberlain.issue-credentials")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# ---- propagation hook ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PropagationRequest:
    """Nudge the consumers of ``path`` once for KV ``version`` (R1's propagate does it)."""

    environment: str
    path: str
    version: int
    consumers: tuple[Consumer, ...]
    reason: str


Propagate = Callable[[PropagationRequest], object]


def kube_propagator(api: Any) -> Propagate:
    """The production hook: ExternalSecret force-sync + rollouts (:mod:`.propagate`) through
    ``api`` (a kubernetes ``ApiClient``/``Kube``; None skips with a log line)."""
    from chamberlain.steps.propagate import propagate

    def run(request: PropagationRequest) -> object:
        return propagate(
            api,
            environment=request.environment,
            path=request.path,
            version=request.version,
            consumers=request.consumers,
            reason=request.reason,
        )

    return run


def propagator_from_env(environ: Mapping[str, str] | None = None) -> Propagate:
    """:func:`kube_propagator` for the API server the environment names (if any)."""
    from chamberlain.steps.propagate import kube_from_env

    return kube_propagator(kube_from_env(environ))


# ---- shared lease I/O ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleTerms:
    """How long a role's leases live (seconds): ``ttl`` per period, ``max_ttl`` in total."""

    name: str
    ttl: int
    max_ttl: int


@dataclass(frozen=True)
class Issued:
    """What :func:`issue_roles` wrote: the KV version and the new lease records."""

    version: int
    records: Mapping[str, LeaseRecord]
    revoked: tuple[str, ...] = ()


def role_terms(credential: DynamicCredential) -> list[RoleTerms]:
    """The allowed roles of ``credential`` (the ones that get a credential), in order."""
    by_name = {r.name: r for r in credential.roles}
    return [
        RoleTerms(
            name=name,
            ttl=int(by_name[name].ttl.total_seconds()),
            max_ttl=int(by_name[name].max_ttl.total_seconds()),
        )
        for name in credential.database.allowed_roles
        if name in by_name
    ]


def read_leases(
    authority: Authority, path: str, kv_mount: str
) -> tuple[SecretMetadata | None, CredentialLeases]:
    """The KV metadata of ``path`` and the lease records in it."""
    metadata = authority.read_metadata(path, mount=kv_mount)
    return metadata, decode(metadata.custom_metadata if metadata else {})


def revoke_quietly(authority: Authority, lease_ids: Sequence[str]) -> list[str]:
    """Revoke each lease, best effort (an expired one is already gone); the ids revoked."""
    done: list[str] = []
    for lease_id in lease_ids:
        with contextlib.suppress(AuthorityError, TransientError):
            authority.revoke_lease(lease_id)
            done.append(lease_id)
    return done


def issue_roles(
    authority: Authority,
    *,
    path: str,
    kv_mount: str,
    terms: Sequence[RoleTerms],
    roles: Sequence[str],
    renewal_at: float,
    now: datetime,
    metadata: SecretMetadata | None,
    previous: Mapping[str, LeaseRecord],
    overlap: timedelta | None,
    mount: str = DATABASE_MOUNT,
) -> Issued:
    """New credentials for ``terms`` -> one new KV version (CAS) -> their lease records.

    ``roles`` is the credential's whole role list (it decides the key layout); roles not in
    ``terms`` keep their value. A superseded lease in ``previous`` becomes the retiring one,
    revoked by watch-leases after ``overlap``; one still retiring from an earlier re-issue is
    revoked now. If the KV write fails (a concurrent writer won the CAS), the new leases are
    revoked before the error propagates, so nothing is left behind.
    """
    fresh = {
        t.name: authority.generate_credentials(mount, engine_role(path, t.name)) for t in terms
    }
    try:
        data: dict[str, str] = {}
        if len(roles) > 1 and metadata is not None and metadata.current_version:
            current = authority.read_secret(path, mount=kv_mount)
            if current is not None:
                data.update(current.data)
        for name, secret in fresh.items():
            user_key, password_key = data_keys(name, roles)
            data[user_key] = secret.data.get("username", "")
            data[password_key] = secret.data.get("password", "")
        cas = metadata.current_version if metadata is not None else 0
        version = authority.write_secret(path, data, cas=cas, mount=kv_mount)
    except BaseException:
        revoke_quietly(authority, [s.lease_id for s in fresh.values()])
        raise
    records: dict[str, LeaseRecord] = {}
    patch: dict[str, str | None] = {}
    if metadata is not None:  # a changed role layout leaves stale keys: drop them
        patch.update({k: None for k in metadata.custom_metadata if _is_lease_key(k)})
    # leases of roles no longer declared go now; so do those still retiring from before
    stale = [r.lease_id for r in previous.values() if r.role not in roles]
    for t in terms:
        secret = fresh[t.name]
        before = previous.get(t.name)
        if before is not None and before.old_lease_id:
            stale.append(before.old_lease_id)
        records[t.name] = new_record(
            role=t.name,
            lease_id=secret.lease_id,
            lease_duration=secret.lease_duration,
            renewable=secret.renewable,
            ttl=t.ttl,
            max_ttl=t.max_ttl,
            now=now,
            previous=before,
            overlap=overlap,
        )
    kept = {r.role: r for r in previous.values() if r.role in roles and r.role not in records}
    for record in [*kept.values(), *records.values()]:
        patch.update(encode_record(record, roles, renewal_at=renewal_at))
    authority.patch_custom_metadata(path, patch, mount=kv_mount)
    revoked = revoke_quietly(authority, stale)
    return Issued(version=version, records=records, revoked=tuple(revoked))


def _is_lease_key(key: str) -> bool:
    return key in LEASE_KEYS or key.split(".", 1)[0] in LEASE_KEYS


def raw_request(
    authority: Authority, method: str, url: str, *, operation: str, target: str, **kwargs: Any
) -> Any:
    """A call the adapter does not wrap, errors translated like the adapter's; None on 404."""
    try:
        return authority.client.adapter.request(method, url, **kwargs)
    except hvac.exceptions.InvalidPath:
        return None
    except hvac.exceptions.VaultError as exc:
        raise errors.from_status(
            int(getattr(exc, "status_code", None) or 500),
            [str(e) for e in (getattr(exc, "errors", None) or [])],
            operation=operation,
            target=target,
            namespace=authority.namespace,
        ) from None
    except requests.RequestException as exc:
        raise errors.unreachable(
            authority.addr, exc, operation=operation, target=target, namespace=authority.namespace
        ) from None


def read_admin_login(authority: Authority, path: str, kv_mount: str) -> dict[str, str] | None:
    """The admin login at ``path`` (None when not handed over yet).

    Read raw rather than with :meth:`Authority.read_secret`, which registers every field for
    redaction: an admin *username* such as ``postgres`` would then mask every path and event
    naming the datasource (``platform-data/postgres/...``), and the runtime would refuse this
    step's replies as leaking a secret. Only the password is registered.
    """
    from chamberlain.adapters.authority_types import string_map  # with the first authority call

    url = f"/v1/{quote(kv_mount)}/data/{quote(path)}"
    target = f"{kv_mount}/{path}"
    response = raw_request(authority, "get", url, operation="read_admin_login", target=target)
    body = data_of(response)
    values = string_map(body.get("data")) if isinstance(body.get("data"), dict) else {}
    for key, value in values.items():
        if key != "username":
            register_secret(value)
    return values or None


def lease_alive(authority: Authority, record: LeaseRecord) -> bool:
    return authority.lookup_lease(record.lease_id) is not None


# ---- the engine ----------------------------------------------------------------------------------


def ensure_engine(authority: Authority, mount: str = DATABASE_MOUNT) -> None:
    """Enable the database secrets engine at ``mount`` unless it is there (races are fine)."""
    if mount in authority.list_secret_mounts():
        return
    with contextlib.suppress(AlreadyExistsError):
        authority.enable_secrets_engine(
            "database", mount, description="chamberlain: DynamicCredential leases"
        )


def configure_credential(
    authority: Authority,
    credential: DynamicCredential,
    admin: Mapping[str, str],
    *,
    mount: str = DATABASE_MOUNT,
    verify_connection: bool = True,
) -> None:
    """The connection and engine roles of one DynamicCredential (create or replace)."""
    connection = connection_name(credential.path)
    authority.write_database_config(
        mount,
        connection,
        plugin_name=credential.database.plugin,
        connection_url=credential.database.connection_url,
        username=admin["username"],
        password=admin["password"],
        allowed_roles=[engine_role(credential.path, r) for r in credential.database.allowed_roles],
        verify_connection=verify_connection,
    )
    for role in credential.roles:
        authority.write_database_role(
            mount,
            engine_role(credential.path, role.name),
            db_name=connection,
            creation_statements=role.creation_statements,
            revocation_statements=role.revocation_statements or None,
            default_ttl=int(role.ttl.total_seconds()),
            max_ttl=int(role.max_ttl.total_seconds()),
        )


class WaitingForHandoverError(TransientError):
    """A DynamicCredential's admin secret is not in the authority yet."""

    default_status = 503


# ---- the step ------------------------------------------------------------------------------------


@dataclass
class _EnvironmentResult:
    environment: str
    commit: str
    credentials: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


class IssueCredentials:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        loader: IntentLoader,
        *,
        intent_repo: str | None,
        base_namespace: str | None = None,
        propagate: Propagate | None = None,
        clock: Clock = utc_now,
        overlap: timedelta | None = None,
        mount: str = DATABASE_MOUNT,
        verify_connection: bool = True,
    ) -> None:
        self._identity = authority
        self.loader = loader
        self.intent_repo = intent_repo
        self.base_namespace = (base_namespace or "").strip("/") or None
        self.propagate = propagate
        self.clock = clock
        self.overlap = overlap
        self.mount = mount
        self.verify_connection = verify_connection

    @property
    def authority(self) -> Authority:
        """Resolved per delivery: the step is built before its identity exists."""
        return resolve(self._identity)

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        type_ = event.get_type()
        data = event.get_data()
        if not isinstance(data, Mapping):
            raise PermanentError(f"{type_} without data", status=400)
        targets: list[tuple[str, str, str | None]]
        if type_ == T.SECRETS_ISSUED:
            trigger = "secrets-issued"
            targets = [
                (str(item["environment"]), str(item["commit"]), None)
                for item in data.get("environments") or []
            ]
        elif type_ == T.HANDOVER_COMPLETED:
            trigger = "handover"
            targets = [(str(data["environment"]), str(data["commit"]), str(data["path"]))]
        else:
            raise PermanentError(f"{FUNCTION} does not handle {type_}", status=400)
        if not self.intent_repo:
            return _ignored("no intent repository configured (CHAMBERLAIN_INTENT_REPO)")
        results = [self._environment(self.intent_repo, *target) for target in targets]
        concerned = [r for r in results if r.credentials or r.waiting]
        waiting = [w for r in results for w in r.waiting]
        if waiting:
            raise WaitingForHandoverError(
                "waiting for bootstrap handover: " + ", ".join(sorted(set(waiting)))
            )
        if not concerned:
            return _ignored(f"no DynamicCredential concerns this {trigger} event")
        return self._reply(trigger, concerned, subject=event.get_subject())

    # -- one environment ------------------------------------------------------------------------

    def _environment(
        self, url: str, environment: str, commit: str, admin_path: str | None
    ) -> _EnvironmentResult:
        result = _EnvironmentResult(environment, commit)
        intent = self._intent(url, commit)
        # imported once there is an intent to act on (they cost ~0.1 s to import)

        resolved = intent.resolve_environment(environment)
        if resolved is None:
            log(_log, "INFO", f"environment {environment} not in the intent at {commit[:12]}")
            return result
        declared, template = resolved
        credentials = [d for d in intent.dynamic_credentials if d.applies_to(template)]
        if admin_path is not None:
            credentials = [d for d in credentials if _admin_path(intent, d) == admin_path]
        if not credentials:
            return result
        authority = self.authority.for_namespace(authority_namespace(self.base_namespace, declared))
        kv_mount = kv_mount_of(intent)
        ensure_engine(authority, self.mount)
        for credential in credentials:
            admin = self._admin(authority, intent, credential, kv_mount)
            if admin is None:
                result.waiting.append(f"{environment}/{credential.database.admin_secret}")
                continue
            configure_credential(
                authority,
                credential,
                admin,
                mount=self.mount,
                verify_connection=self.verify_connection,
            )
            result.credentials.extend(self._issue(authority, environment, credential, kv_mount))
        return result

    def _intent(self, url: str, commit: str) -> Intent:
        try:
            loaded = self.loader.load(url, commit)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None
        if not loaded.valid:
            raise PermanentError(f"intent at {commit} is invalid", status=422)
        return loaded.intent

    def _admin(
        self, authority: Authority, intent: Intent, credential: DynamicCredential, kv_mount: str
    ) -> dict[str, str] | None:
        path = _admin_path(intent, credential)
        if path is None:  # validate() refuses this; be explicit anyway
            raise PermanentError(
                f"{credential.name}: adminSecret {credential.database.admin_secret!r} "
                "names no BootstrapSecret"
            )
        found = read_admin_login(authority, path, kv_mount)
        if found is None:
            return None
        missing = [k for k in ("username", "password") if not found.get(k)]
        if missing:
            raise PermanentError(
                f"{credential.name}: admin secret at {path} lacks {', '.join(missing)}"
            )
        return found

    def _issue(
        self,
        authority: Authority,
        environment: str,
        credential: DynamicCredential,
        kv_mount: str,
    ) -> list[dict[str, Any]]:
        terms = role_terms(credential)
        roles = tuple(t.name for t in terms)
        metadata, leases = read_leases(authority, credential.path, kv_mount)
        relayout = leases.roles != roles
        needed = [
            t
            for t in terms
            if relayout
            or t.name not in leases.records
            or not lease_alive(authority, leases.records[t.name])
        ]
        version = metadata.current_version if metadata is not None else 0
        records = dict(leases.records)
        issued: set[str] = set()
        if needed:
            now = self.clock()
            done = issue_roles(
                authority,
                path=credential.path,
                kv_mount=kv_mount,
                terms=needed,
                roles=roles,
                renewal_at=credential.renewal_at,
                now=now,
                metadata=metadata,
                previous=leases.records,
                overlap=self.overlap,
                mount=self.mount,
            )
            version = done.version
            records.update(done.records)
            issued = set(done.records)
            log(
                _log,
                "INFO",
                f"credentials issued at {credential.path}",
                environment=environment,
                path=credential.path,
                roles=sorted(issued),
                version=version,
                lease_ids=[done.records[r].lease_id for r in sorted(issued)],
            )
            self._propagate(authority, environment, credential, version, kv_mount)
        return [
            {
                "path": credential.path,
                "role": t.name,
                "status": "issued" if t.name in issued else "unchanged",
                "leaseId": records[t.name].lease_id,
                "expiresAt": format_time(records[t.name].expires),
                "version": max(1, version),
            }
            for t in terms
            if t.name in records
        ]

    def _propagate(
        self,
        authority: Authority,
        environment: str,
        credential: DynamicCredential,
        version: int,
        kv_mount: str,
    ) -> None:
        if self.propagate is None:
            return
        self.propagate(
            PropagationRequest(
                environment=environment,
                path=credential.path,
                version=version,
                consumers=credential.consumers,
                reason="credentials issued",
            )
        )

    def _reply(
        self, trigger: str, results: list[_EnvironmentResult], *, subject: str | None
    ) -> BaseCloudEvent:
        environments = [
            {
                "environment": r.environment,
                "commit": r.commit,
                "leases": r.credentials[:MAX_LISTED],
            }
            for r in results
        ]
        data = {"trigger": trigger, "environments": environments}
        return make_event(CREDENTIALS_ISSUED, data, source=SOURCE, subject=subject or trigger)


def _admin_path(intent: Intent, credential: DynamicCredential) -> str | None:
    bootstrap = intent.bootstrap_secret(credential.database.admin_secret)
    return bootstrap.path if bootstrap is not None else None


def _ignored(why: str) -> BaseCloudEvent | None:
    log(_log, "INFO", f"ignored: {why}", reason=why)
    return None


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see :mod:`chamberlain.settings`)."""
    from chamberlain.adapters.intent_source import IntentSource
    from chamberlain.settings import Settings

    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    return IssueCredentials(
        FunctionIdentity(FUNCTION, settings, environ),
        IntentLoader(IntentSource(settings.cache_dir, environ=env)),
        intent_repo=settings.intent_repo,
        base_namespace=settings.authority_namespace,
        propagate=propagator_from_env(env),
    )
