"""The initialize-authority step: a cluster exists -> its authority is initialized, unsealed and
configured from intent, with no human and no root token left behind.

Accepted events (normalised by :mod:`chamberlain.steps.cluster_events`):
``dev.chamberlain.cluster.created.v1`` and ``dev.knative.apiserver.resource.add`` for a
labelled Namespace or a Cluster API Cluster; anything else -> 202, ignored.

Intent: the AuthorityConfig and Environments at the head of the tracked branch
(``CHAMBERLAIN_INTENT_REPO``, ``CHAMBERLAIN_INTENT_BRANCH``); invalid -> 422 with
``dev.chamberlain.intent.rejected.v1``.

Flow, by the authority's seal status:

1. **uninitialized**: ``sys/init`` with the intent's shares/threshold; each share is encrypted
   to its age recipient and the whole set is stored (share store) before anything else can
   fail; unseal with the in-memory shares; with the root token, *bootstrap* the initializer's
   own identity (its policy, the token role, the function login method) and prove it works;
   revoke the root token; then configure as in 3, as the initializer. Configuring after the
   revocation is deliberate: a failure midway is healed by the next delivery, which runs the
   very same converge with the very same identity, and the root token lives for seconds.
2. **sealed**: with ``CHAMBERLAIN_UNSEAL_IDENTITY_FILE``, decrypt ``threshold`` stored shares
   and unseal; without it, emit ``dev.chamberlain.authority.sealed.v1`` to ``K_SINK`` and
   answer 503 (the broker retries; an operator unseals with ``age -d`` + ``bao operator
   unseal``).
3. **initialized and unsealed**: converge as the initializer's own identity
   (:mod:`chamberlain.identity`): observe, plan (:mod:`chamberlain.planner.authority_config`),
   apply the differences, keep local function identities valid.

If the initializer's identity is lost (a crash between ``sys/init`` and its creation, a
deleted identity file) and the unseal identity is available, a root token is generated from
the shares (``sys/generate-root``), used only to bootstrap the identity again, and revoked.

Reply: ``dev.chamberlain.authority.initialized.v1`` with what changed (counts and one line
per change, never a value).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.agecrypt import (
    AgeDecryptError,
    AgeError,
    check_recipients,
    decrypt_with_identities,
    encrypt_to_recipients,
    parse_identity_file,
)
from chamberlain.adapters.authority import (
    AuthorityError,
    CallCounter,
    ForbiddenError,
    InvalidRequestError,
    SealStatus,
)
from chamberlain.adapters.authority_admin import AdminAuthority, generate_root
from chamberlain.adapters.authority_transport import counting_client, derive_client
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.adapters.share_store import (
    DEFAULT_SYSTEM_NAMESPACE,
    KubernetesShareStore,
    LocalShareStore,
    ShareStore,
    ShareStoreError,
)
from chamberlain.identity import (
    DEFAULT_FUNCTION_AUTH_MOUNT,
    FUNCTION_AUTH_MOUNT_ENV,
    IdentityUnavailableError,
    authority_for,
    identity_dir,
)
from chamberlain.lazy import lazy_module
from chamberlain.logs import get_logger, log, redact, register_secret
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import DEFAULT_BRANCH, Intent
from chamberlain.planner.authority_config import (
    Action,
    ConfigureKubernetesAuth,
    DesiredConfiguration,
    EnableAuthMethod,
    KubernetesApi,
    SystemCluster,
    WriteFunctionRole,
    WritePolicy,
    WriteTokenRole,
    counts,
    desired_configuration,
    plan,
)
from chamberlain.planner.function_policies import INITIALIZE_AUTHORITY, policy_name
from chamberlain.settings import Settings
from chamberlain.steps.authority_converge import (
    apply,
    apply_action,
    ensure_local_identities,
    issue_local_identity,
    observe,
)
from chamberlain.steps.base import PermanentError, Step, TransientError
from chamberlain.steps.cluster_events import ClusterEvent, ClusterEventError, normalise

if TYPE_CHECKING:
    import hvac
    import requests
else:
    hvac = lazy_module("hvac")
    requests = lazy_module("requests")

FUNCTION = INITIALIZE_AUTHORITY
SOURCE = f"/chamberlain/{FUNCTION}"
HEADS = "refs/heads/"
SHARE_DIR_ENV = "CHAMBERLAIN_SHARE_DIR"
UNSEAL_IDENTITY_ENV = "CHAMBERLAIN_UNSEAL_IDENTITY_FILE"
SYSTEM_NAMESPACE_ENV = "CHAMBERLAIN_SYSTEM_NAMESPACE"
SYSTEM_HOST_ENV = "CHAMBERLAIN_SYSTEM_KUBERNETES_HOST"
SYSTEM_CA_FILE_ENV = "CHAMBERLAIN_SYSTEM_KUBERNETES_CA_FILE"
IN_CLUSTER_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
MAX_LISTED = 200
SAVE_ATTEMPTS = 3

Emit = Callable[[BaseCloudEvent], None]
_log = get_logger("chamberlain.initialize-authority")


# ---- intent --------------------------------------------------------------------------------


class IntentReader:
    """The intent at the head of the tracked branch (an empty intent when none is configured)."""

    def __init__(self, url: str | None, branch: str, source: IntentSource | None) -> None:
        self.url = url
        self.branch = branch
        self.source = source
        self._loader: Any = None

    def read(self) -> tuple[Intent, str | None, list[str]]:
        """(intent, commit, notes). Invalid intent -> PermanentError 422 + intent.rejected."""
        from chamberlain.steps.intent_loading import IntentLoader

        if self.url is None or self.source is None:
            return Intent(), None, ["no intent repository configured (CHAMBERLAIN_INTENT_REPO)"]
        try:
            head = self.source.head_of(self.url, HEADS + self.branch)
            if head is None:
                return Intent(), None, [f"branch {self.branch} does not exist in the intent repo"]
            if self._loader is None:
                self._loader = IntentLoader(self.source)
            loaded = self._loader.load(self.url, head)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None
        if loaded.problems:
            from chamberlain.steps.issue_secrets import rejected_event
            from chamberlain.steps.reconcile import IntentRejectedError

            rejected = IntentRejectedError(head, tuple(loaded.problems))
            raise PermanentError(str(rejected), status=422, reply=rejected_event(rejected))
        return loaded.intent, head, []


# ---- configuration -------------------------------------------------------------------------


def system_cluster_from_env(env: Mapping[str, str]) -> SystemCluster | None:
    """chamberlain's own cluster, where functions log in from (None: the local runtime)."""
    host = env.get(SYSTEM_HOST_ENV)
    ca_file = env.get(SYSTEM_CA_FILE_ENV)
    if not host and env.get("KUBERNETES_SERVICE_HOST"):
        host = (
            f"https://{env['KUBERNETES_SERVICE_HOST']}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
        )
        ca_file = ca_file or str(IN_CLUSTER_CA)
    if not host:
        return None
    ca = None
    if ca_file:
        try:
            ca = Path(ca_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise TransientError(
                f"{SYSTEM_CA_FILE_ENV} {ca_file} unreadable ({type(exc).__name__})"
            ) from None
    return SystemCluster(
        api=KubernetesApi(host=host.rstrip("/"), ca_pem=ca),
        namespace=env.get(SYSTEM_NAMESPACE_ENV) or DEFAULT_SYSTEM_NAMESPACE,
        auth_mount=env.get(FUNCTION_AUTH_MOUNT_ENV) or DEFAULT_FUNCTION_AUTH_MOUNT,
    )


@dataclass(frozen=True)
class Outcome:
    """What one delivery did (the reply is built from it)."""

    initialized: bool
    unsealed: bool
    root_revoked: bool
    namespaces: tuple[str, ...]
    changes: tuple[str, ...]
    warnings: tuple[str, ...]
    configured: dict[str, int]


def bootstrap_actions(desired: DesiredConfiguration) -> list[Action]:
    """What root must do so that the initializer can carry on alone."""
    own = policy_name(FUNCTION)
    actions: list[Action] = [
        WritePolicy(own, desired.policies[own]),
        WriteTokenRole(desired.token_role),
    ]
    system = desired.system
    if system is not None:
        actions.append(EnableAuthMethod(None, system.auth_mount, "kubernetes"))
        actions.append(ConfigureKubernetesAuth(None, system.auth_mount, system.api))
        actions.append(WriteFunctionRole(system.auth_mount, desired.function_roles[own]))
    return actions


def bootstrap_with_root(
    root: AdminAuthority,
    intent: Intent,
    *,
    system: SystemCluster | None,
    identities: Path | None,
) -> None:
    """Give the initializer its identity using a root token (the caller revokes it)."""
    desired = desired_configuration(intent, None, system=system)
    for action in bootstrap_actions(desired):
        apply_action(root, action)
    if identities is not None:
        issue_local_identity(root, identities, FUNCTION)
    log(_log, "INFO", "initializer identity bootstrapped", local=identities is not None)


def _translate_init_error(exc: Exception) -> TransientError:
    detail = redact(str(exc))[:300]
    if "already initialized" in detail.lower():
        return TransientError(f"authority initialized concurrently: {detail}", status=409)
    return TransientError(f"authority initialization failed ({type(exc).__name__}): {detail}")


class InitializeAuthority:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        *,
        settings: Settings,
        shares: ShareStore,
        intent: IntentReader,
        identities: Path | None,
        unseal_identity_file: Path | None,
        system: SystemCluster | None,
        emit: Emit | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.addr = settings.authority_addr
        self.shares = shares
        self.intent = intent
        self.identities = identities
        self.unseal_identity_file = unseal_identity_file
        self.system = system
        self.emit = emit
        self.environ = environ
        self.last_calls: Counter[str] = Counter()
        self.last_outcome: Outcome | None = None

    # -- entry -------------------------------------------------------------------------------
    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        calls = CallCounter()
        try:
            return self._handle(event, calls)
        finally:
            self.last_calls = calls.snapshot()

    def _handle(self, event: BaseCloudEvent, calls: CallCounter) -> BaseCloudEvent | None:
        try:
            cluster = normalise(event.get_type(), event.get_data())
        except ClusterEventError as exc:
            raise PermanentError(str(exc), status=422) from None
        if cluster is None:
            log(_log, "INFO", f"ignored: {event.get_type()} announces no cluster")
            return None
        intent, commit, notes = self.intent.read()
        status = self._anonymous(calls).seal_status()
        initialized = unsealed = revoked = False
        if not status.initialized:
            admin = self._initialize(intent, calls)
            initialized = unsealed = revoked = True
        else:
            if status.sealed:
                self._unseal(status, cluster)
                unsealed = True
            admin, revoked = self._own_identity(intent, calls)
        outcome = self._converge(admin, intent, cluster, notes)
        outcome = Outcome(
            initialized=initialized,
            unsealed=unsealed,
            root_revoked=revoked,
            namespaces=outcome.namespaces,
            changes=outcome.changes,
            warnings=outcome.warnings,
            configured=outcome.configured,
        )
        self.last_outcome = outcome
        log(
            _log,
            "INFO",
            f"authority converged: {len(outcome.changes)} change(s)",
            environment=cluster.environment,
            initialized=initialized,
            unsealed=unsealed,
            commit=commit,
            changes=list(outcome.changes[:MAX_LISTED]),
            warnings=list(outcome.warnings[:MAX_LISTED]),
        )
        return self._reply(cluster, outcome, commit)

    # -- sessions ----------------------------------------------------------------------------
    def _anonymous(self, calls: CallCounter) -> AdminAuthority:
        client = counting_client(
            addr=self.addr, token=None, namespace=None, calls=calls, timeout=30
        )
        return AdminAuthority(client)

    def _session(self, token: str, calls: CallCounter) -> AdminAuthority:
        register_secret(token)
        client = counting_client(
            addr=self.addr, token=token, namespace=None, calls=calls, timeout=30
        )
        return AdminAuthority(client)

    def _identity(self, calls: CallCounter) -> AdminAuthority:
        """The initializer's own identity, proven to work (lookup-self)."""
        base = authority_for(FUNCTION, self.settings, self.environ)
        admin = AdminAuthority(
            derive_client(base.client, namespace=None, new_session=False, calls=calls)
        )
        admin.lookup_self()
        return admin

    def _own_identity(self, intent: Intent, calls: CallCounter) -> tuple[AdminAuthority, bool]:
        """(identity, root token used and revoked to recover it)."""
        try:
            return self._identity(calls), False
        except (IdentityUnavailableError, ForbiddenError, InvalidRequestError) as exc:
            reason = redact(str(exc))[:300]
        if self.unseal_identity_file is None:
            raise TransientError(
                f"the initializer has no working identity ({reason}) and no unseal identity "
                "to recover one: generate a root token with the unseal shares "
                "(bao operator generate-root), bootstrap, and revoke it"
            )
        log(_log, "WARNING", "initializer identity lost: recovering with the unseal shares")
        keys = self._open_shares(self._anonymous(calls).seal_status().t)
        try:
            token = generate_root(self.addr, keys)
        except AuthorityError as exc:
            raise TransientError(
                f"the initializer has no working identity ({reason}) and root generation from "
                f"the unseal shares failed ({redact(str(exc))[:200]}): enable "
                "disable_unauthed_generate_root_endpoints = false on a listener, or generate a "
                "root token by hand, bootstrap, and revoke it"
            ) from None
        root = self._session(token, calls)
        try:
            bootstrap_with_root(root, intent, system=self.system, identities=self.identities)
        finally:
            root.revoke_self()
        return self._identity(calls), True

    # -- 1. initialize -----------------------------------------------------------------------
    def _initialize(self, intent: Intent, calls: CallCounter) -> AdminAuthority:
        config = intent.authority
        if config is None:
            raise PermanentError(
                "the authority is uninitialized and intent declares no AuthorityConfig "
                "(shares, threshold, age recipients): nothing to initialize it with",
                status=422,
            )
        try:
            for index in range(config.shares):
                check_recipients([config.recipient_for_share(index)])
        except AgeError as exc:
            raise PermanentError(f"AuthorityConfig {config.name}: {exc}", status=422) from None
        if self.identities is None and self.system is None:
            raise TransientError(
                "cannot give the initializer an identity: set CHAMBERLAIN_IDENTITY_DIR "
                f"(local runtime) or {SYSTEM_HOST_ENV} (the cluster functions log in from)"
            )
        try:
            self.shares.check()
        except ShareStoreError as exc:
            raise TransientError(f"unseal share store unusable: {exc}") from None
        from chamberlain.adapters import bao_server  # the server's own init API, used once

        try:
            keys, root_token = bao_server.initialize(self.addr, config.shares, config.threshold)
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _translate_init_error(exc) from None
        for value in (*keys, root_token):
            register_secret(value)
        calls.record("put")
        ciphertexts = {
            index: encrypt_to_recipients(key.encode(), [config.recipient_for_share(index)])
            for index, key in enumerate(keys)
        }
        self._save_shares(ciphertexts)
        log(
            _log,
            "INFO",
            "authority initialized; encrypted unseal shares stored",
            shares=config.shares,
            threshold=config.threshold,
            store=self.shares.describe(),
        )
        self._submit(keys[: config.threshold])
        root = self._session(root_token, calls)
        try:
            bootstrap_with_root(root, intent, system=self.system, identities=self.identities)
            own = self._identity(calls)
        finally:
            root.revoke_self()
            log(_log, "INFO", "initial root token revoked")
        return own

    def _save_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                self.shares.save(ciphertexts)
                return
            except Exception as exc:
                if attempt == SAVE_ATTEMPTS:
                    raise TransientError(
                        "the authority was initialized but its encrypted unseal shares could "
                        f"not be stored in {self.shares.describe()} ({type(exc).__name__}): "
                        "it cannot be unsealed after a restart; wipe its storage and retry"
                    ) from None
                time.sleep(0.2 * attempt)

    def _submit(self, keys: list[str]) -> None:
        from chamberlain.adapters import bao_server

        try:
            bao_server.unseal(self.addr, keys)
        except (hvac.exceptions.VaultError, requests.RequestException, RuntimeError) as exc:
            raise TransientError(
                f"unsealing failed ({type(exc).__name__}): {redact(str(exc))[:200]}"
            ) from None

    # -- 2. unseal ---------------------------------------------------------------------------
    def _open_shares(self, threshold: int) -> list[str]:
        """``threshold`` plaintext shares opened with the unseal identity (kept in memory)."""
        assert self.unseal_identity_file is not None
        try:
            identities = parse_identity_file(self.unseal_identity_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TransientError(
                f"unseal identity file unreadable ({type(exc).__name__})"
            ) from None
        except AgeError as exc:
            raise TransientError(f"unseal identity file: {exc}") from None
        stored = self.shares.load()
        keys: list[str] = []
        for _index, ciphertext in sorted(stored.items()):
            try:
                key = decrypt_with_identities(ciphertext, identities).decode("utf-8").strip()
            except AgeDecryptError:
                continue
            register_secret(key)
            keys.append(key)
            if len(keys) >= threshold:
                return keys
        raise TransientError(
            f"only {len(keys)} of the {threshold} unseal shares needed open with the unseal "
            f"identity ({len(stored)} stored in {self.shares.describe()})"
        )

    def _unseal(self, status: SealStatus, cluster: ClusterEvent) -> None:
        if self.unseal_identity_file is None:
            reason = "the authority is sealed and no unseal identity is available to the step"
            self._announce_sealed(cluster, reason)
            raise TransientError(reason, status=503)
        try:
            keys = self._open_shares(status.t)
        except TransientError as exc:
            self._announce_sealed(cluster, str(exc))
            raise
        self._submit(keys)
        log(_log, "INFO", "authority unsealed with the stored shares", threshold=status.t)

    def _announce_sealed(self, cluster: ClusterEvent, reason: str) -> None:
        event = make_event(
            T.AUTHORITY_SEALED,
            {"addr": self.addr, "environment": cluster.environment, "reason": reason[:2000]},
            source=SOURCE,
            subject=cluster.environment,
        )
        log(_log, "WARNING", f"authority sealed: {reason}", addr=self.addr)
        if self.emit is None:
            return
        try:
            self.emit(event)
        except Exception as exc:
            log(_log, "ERROR", "could not emit authority.sealed", error=redact(str(exc))[:300])

    # -- 3. converge -------------------------------------------------------------------------
    def _converge(
        self, admin: AdminAuthority, intent: Intent, cluster: ClusterEvent, notes: list[str]
    ) -> Outcome:
        listed = admin.namespaces_with_metadata()
        managed = {n: m for n, m in listed.items() if m.get("managed-by") == "chamberlain"}
        desired = desired_configuration(
            intent,
            cluster,
            live_instances=[n for n, m in managed.items() if m.get("ephemeral") == "true"],
            extra_policy_namespaces=list(managed),
            system=self.system,
        )
        observed = observe(admin, desired)
        config_plan = plan(desired, observed)
        changes = apply(admin, config_plan.actions)
        configured = counts(config_plan.actions)
        if self.identities is not None:
            report = ensure_local_identities(
                admin, self.identities, period_s=desired.token_role.period_s
            )
            changes += [f"issue identity for {f}" for f in report.issued]
            configured["identitiesIssued"] = len(report.issued)
            configured["identitiesRenewed"] = len(report.renewed)
        return Outcome(
            initialized=False,
            unsealed=False,
            root_revoked=False,
            namespaces=config_plan.namespaces,
            changes=tuple(changes),
            warnings=(*notes, *config_plan.warnings),
            configured=configured,
        )

    def _reply(self, cluster: ClusterEvent, outcome: Outcome, commit: str | None) -> BaseCloudEvent:
        data: dict[str, Any] = {
            "environment": cluster.environment,
            "initialized": outcome.initialized,
            "unsealed": outcome.unsealed,
            "addr": self.addr,
            "namespaces": list(outcome.namespaces),
            "configured": {**outcome.configured, "changes": len(outcome.changes)},
            "rootTokenRevoked": outcome.root_revoked,
            "changes": [c[:2000] for c in outcome.changes[:MAX_LISTED]],
            "warnings": [w[:2000] for w in outcome.warnings[:MAX_LISTED]],
        }
        if commit is not None:
            data["commit"] = commit
        return make_event(T.AUTHORITY_INITIALIZED, data, source=SOURCE, subject=cluster.environment)


def _emitter(env: Mapping[str, str]) -> Emit | None:
    sink = env.get("K_SINK")
    if not sink:
        return None
    from chamberlain.runtime.emit import http_emitter

    return http_emitter(sink)


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    share_dir = env.get(SHARE_DIR_ENV)
    shares: ShareStore
    if share_dir:
        shares = LocalShareStore(Path(share_dir))
    else:
        from chamberlain.adapters.kube import Kube, api_client_from_env

        namespace = env.get(SYSTEM_NAMESPACE_ENV) or DEFAULT_SYSTEM_NAMESPACE
        shares = KubernetesShareStore(Kube(api_client_from_env(env)), namespace)
    url = settings.intent_repo
    source = IntentSource(settings.cache_dir, environ=env) if url else None
    unseal = env.get(UNSEAL_IDENTITY_ENV)
    return InitializeAuthority(
        settings=settings,
        shares=shares,
        intent=IntentReader(url, env.get("CHAMBERLAIN_INTENT_BRANCH") or DEFAULT_BRANCH, source),
        identities=identity_dir(env),
        unseal_identity_file=Path(unseal) if unseal else None,
        system=system_cluster_from_env(env),
        emit=_emitter(env),
        environ=env,
    )


__all__ = [
    "FUNCTION",
    "InitializeAuthority",
    "IntentReader",
    "Outcome",
    "bootstrap_with_root",
    "build",
    "system_cluster_from_env",
]
