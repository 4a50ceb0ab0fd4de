"""Intent -> the authority's desired configuration, and the actions that converge it.

Pure: the initialize-authority step observes the authority (:class:`ObservedAuthority`), calls
:func:`desired_configuration` and :func:`plan`, and applies the returned actions in order.

What chamberlain configures and how it recognises what it owns:

* one namespace per non-ephemeral Environment, plus each ephemeral instance announced by a
  cluster event (``preview-42`` instantiates the ephemeral Environment ``preview``). Owned
  namespaces carry ``custom_metadata`` ``managed-by=chamberlain`` (+ ``environment``,
  ``ephemeral``). A namespace of the same name made by someone else is reported, never used;
* in each: KV v2 at ``AuthorityConfig.kv_mount``, KV v2 ``chamberlain`` (chamberlain's state
  area), the Kubernetes auth method at ``AuthorityConfig.kubernetes_auth_mount``, all with the
  description ``managed by chamberlain``; the auth method's config (API host + CA) comes from
  the cluster event of that environment, and is left as it is by events of other environments;
* in the root namespace: a policy ``chamberlain-fn-<function>`` per function (see
  :mod:`chamberlain.planner.function_policies`), the token role ``chamberlain-fn`` that mints
  local function identities, and (when chamberlain's own cluster is known) the Kubernetes auth
  method the functions log in with, and a role ``chamberlain-fn-<function>`` per function bound
  to the service account ``chamberlain-<function>`` of the system namespace.

Converging removes only what chamberlain owns and intent no longer declares: function policies
and function roles. Namespaces of removed environments stay (deleting them is teardown's job);
owned mounts that are no longer declared are reported, not removed (a KV mount holds values).
Consumer policies and roles inside environment namespaces belong to issue-secrets: untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from chamberlain.model.intent import (
    DEFAULT_KUBERNETES_AUTH_MOUNT,
    DEFAULT_KV_MOUNT,
    DynamicCredential,
    Environment,
    Intent,
)
from chamberlain.planner.function_policies import (
    FUNCTIONS,
    POLICY_PREFIX,
    STATE_MOUNT,
    TOKEN_ROLE,
    NamespaceMounts,
    function_policies,
    is_function_policy,
    policy_name,
)

MANAGED_BY_KEY = "managed-by"
MANAGED_BY = "chamberlain"
OWNED_DESCRIPTION = "managed by chamberlain"
DEFAULT_SYSTEM_NAMESPACE = "chamberlain-system"
DEFAULT_FUNCTION_AUTH_MOUNT = "kubernetes"
TOKEN_PERIOD_S = 768 * 3600  # a local identity lives while it is renewed within 32 days
FUNCTION_TOKEN_TTL_S = 3600  # a Kubernetes login of a function lasts an hour


@dataclass(frozen=True)
class KubernetesApi:
    """Where a cluster's Kubernetes API is (the CA is public material)."""

    host: str
    ca_pem: str | None = None


class Announcement(Protocol):
    """A cluster event as the planner needs it (see :mod:`chamberlain.steps.cluster_events`)."""

    @property
    def environment(self) -> str: ...

    @property
    def kubernetes(self) -> KubernetesApi | None: ...


def service_account_of(function: str) -> str:
    return f"chamberlain-{function}"


# ---- desired ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespacePlan:
    """One environment namespace and what must be in it."""

    name: str
    environment: str
    ephemeral: bool
    kv_mount: str
    auth_mount: str
    kubernetes: KubernetesApi | None  # None: leave the auth method's config as it is
    state_mount: str = STATE_MOUNT
    dynamic_paths: tuple[str, ...] = ()

    @property
    def metadata(self) -> dict[str, str]:
        return {
            MANAGED_BY_KEY: MANAGED_BY,
            "environment": self.environment,
            "ephemeral": "true" if self.ephemeral else "false",
        }

    def mounts(self) -> NamespaceMounts:
        return NamespaceMounts(
            self.name, self.kv_mount, self.auth_mount, self.state_mount, self.dynamic_paths
        )


@dataclass(frozen=True)
class TokenRole:
    """The token role that mints periodic, orphan function tokens (local identities)."""

    name: str = TOKEN_ROLE
    allowed_policies_glob: tuple[str, ...] = (f"{POLICY_PREFIX}*",)
    orphan: bool = True
    renewable: bool = True
    period_s: int = TOKEN_PERIOD_S


@dataclass(frozen=True)
class FunctionRole:
    """A root-namespace Kubernetes auth role through which one function logs in."""

    name: str
    service_account: str
    namespace: str
    policies: tuple[str, ...]
    ttl_s: int = FUNCTION_TOKEN_TTL_S


@dataclass(frozen=True)
class SystemCluster:
    """chamberlain's own cluster (where the functions run), for their Kubernetes logins."""

    api: KubernetesApi
    namespace: str = DEFAULT_SYSTEM_NAMESPACE
    auth_mount: str = DEFAULT_FUNCTION_AUTH_MOUNT


@dataclass(frozen=True)
class DesiredConfiguration:
    namespaces: tuple[NamespacePlan, ...]
    policies: Mapping[str, str]
    token_role: TokenRole
    system: SystemCluster | None
    function_roles: Mapping[str, FunctionRole]
    audit_path: str | None
    notes: tuple[str, ...] = ()


def _instance(intent: Intent, name: str) -> Environment | None:
    if intent.environment(name) is not None:
        return None
    resolved = intent.resolve_environment(name)
    return None if resolved is None else resolved[0]


def desired_configuration(
    intent: Intent,
    event: Announcement | None,
    *,
    live_instances: Iterable[str] = (),
    extra_policy_namespaces: Iterable[str] = (),
    system: SystemCluster | None = None,
) -> DesiredConfiguration:
    """What the authority must hold for ``intent`` after ``event``.

    ``live_instances``: ephemeral instances chamberlain already created (observed), which stay
    configured until teardown. ``extra_policy_namespaces``: other owned namespaces (removed
    environments not torn down yet) that functions keep reaching, e.g. to revoke them.
    """
    authority = intent.authority
    kv_mount = authority.kv_mount if authority else DEFAULT_KV_MOUNT
    auth_mount = authority.kubernetes_auth_mount if authority else DEFAULT_KUBERNETES_AUTH_MOUNT
    notes: list[str] = []
    environments = {e.name: e for e in intent.environments if not e.ephemeral}
    for name in sorted(set(live_instances)):
        instance = _instance(intent, name)
        if instance is not None and name not in environments:
            environments[name] = instance
    if event is not None and event.environment not in environments:
        instance = _instance(intent, event.environment)
        if instance is not None:
            environments[event.environment] = instance
        else:
            notes.append(
                f"environment {event.environment!r} of the cluster event is not declared in "
                "intent (and matches no ephemeral Environment): nothing configured for it"
            )
    plans = []
    for env in sorted(environments.values(), key=lambda e: e.namespace):
        kubernetes = None
        if event is not None and event.environment == env.name:
            kubernetes = event.kubernetes
            if kubernetes is None:
                notes.append(
                    f"no Kubernetes API given for environment {env.name!r}: the auth method "
                    f"{auth_mount!r} is mounted but not configured"
                )
        plans.append(
            NamespacePlan(
                name=env.namespace,
                environment=env.name,
                ephemeral=env.ephemeral,
                kv_mount=kv_mount,
                auth_mount=auth_mount,
                kubernetes=kubernetes,
                dynamic_paths=tuple(
                    sorted(
                        d.path
                        for d in intent.for_environment(env.name)
                        if isinstance(d, DynamicCredential)
                    )
                ),
            )
        )
    policy_namespaces = {p.name: p.mounts() for p in plans}
    for name in sorted(set(extra_policy_namespaces) - set(policy_namespaces)):
        policy_namespaces[name] = NamespaceMounts(name, kv_mount, auth_mount)
    function_auth = system.auth_mount if system else DEFAULT_FUNCTION_AUTH_MOUNT
    policies = function_policies(
        list(policy_namespaces.values()),
        kv_mounts=[kv_mount],
        auth_mounts=[auth_mount],
        function_auth_mount=function_auth,
    )
    roles: dict[str, FunctionRole] = {}
    if system is not None:
        for function in FUNCTIONS:
            name = policy_name(function)
            roles[name] = FunctionRole(
                name=name,
                service_account=service_account_of(function),
                namespace=system.namespace,
                policies=(name,),
            )
    return DesiredConfiguration(
        namespaces=tuple(plans),
        policies=policies,
        token_role=TokenRole(),
        system=system,
        function_roles=roles,
        audit_path=authority.audit_path if authority else None,
        notes=tuple(notes),
    )


# ---- observed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    type: str
    version: str
    description: str


@dataclass(frozen=True)
class ObservedNamespace:
    name: str
    custom_metadata: Mapping[str, str]
    secret_mounts: Mapping[str, Mount] = field(default_factory=dict)
    auth_mounts: Mapping[str, Mount] = field(default_factory=dict)
    kubernetes: KubernetesApi | None = None  # config of the declared auth mount

    @property
    def managed(self) -> bool:
        return self.custom_metadata.get(MANAGED_BY_KEY) == MANAGED_BY


@dataclass(frozen=True)
class AuditDevice:
    path: str
    type: str
    file_path: str | None


@dataclass(frozen=True)
class ObservedAuthority:
    namespaces: Mapping[str, ObservedNamespace]
    policies: Mapping[str, str]  # chamberlain-fn-* only
    token_role: TokenRole | None
    root_auth_mounts: Mapping[str, Mount]
    function_auth: KubernetesApi | None
    function_roles: Mapping[str, FunctionRole]
    audit_devices: tuple[AuditDevice, ...]

    def managed_instances(self) -> list[str]:
        """Ephemeral instances chamberlain created and nobody tore down yet."""
        return sorted(
            n.name
            for n in self.namespaces.values()
            if n.managed and n.custom_metadata.get("ephemeral") == "true"
        )

    def managed_names(self) -> list[str]:
        return sorted(n.name for n in self.namespaces.values() if n.managed)


# ---- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateNamespace:
    name: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class PatchNamespaceMetadata:
    name: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class EnableSecretsEngine:
    namespace: str
    path: str
    type: str
    options: Mapping[str, str]


@dataclass(frozen=True)
class EnableAuthMethod:
    namespace: str | None
    path: str
    type: str


@dataclass(frozen=True)
class ConfigureKubernetesAuth:
    namespace: str | None
    mount: str
    api: KubernetesApi


@dataclass(frozen=True)
class WritePolicy:
    name: str
    hcl: str


@dataclass(frozen=True)
class DeletePolicy:
    name: str


@dataclass(frozen=True)
class WriteTokenRole:
    role: TokenRole


@dataclass(frozen=True)
class WriteFunctionRole:
    mount: str
    role: FunctionRole


@dataclass(frozen=True)
class DeleteFunctionRole:
    mount: str
    name: str


Action: TypeAlias = (
    CreateNamespace
    | PatchNamespaceMetadata
    | EnableSecretsEngine
    | EnableAuthMethod
    | ConfigureKubernetesAuth
    | WritePolicy
    | DeletePolicy
    | WriteTokenRole
    | WriteFunctionRole
    | DeleteFunctionRole
)


@dataclass(frozen=True)
class ConfigPlan:
    actions: tuple[Action, ...]
    warnings: tuple[str, ...]
    namespaces: tuple[str, ...]  # the environment namespaces configured by this plan


def describe(action: Action) -> str:
    """One line naming what an action changes (never a value: there are none here)."""
    where = ""
    namespace = getattr(action, "namespace", None)
    if namespace:
        where = f" in namespace {namespace}"
    if isinstance(action, CreateNamespace):
        return f"create namespace {action.name}"
    if isinstance(action, PatchNamespaceMetadata):
        return f"mark namespace {action.name} as managed by chamberlain"
    if isinstance(action, EnableSecretsEngine):
        return f"enable {action.type} v{action.options.get('version', '1')} at {action.path}{where}"
    if isinstance(action, EnableAuthMethod):
        return f"enable auth method {action.type} at {action.path}{where}"
    if isinstance(action, ConfigureKubernetesAuth):
        return f"configure auth/{action.mount} for {action.api.host}{where}"
    if isinstance(action, WritePolicy):
        return f"write policy {action.name}"
    if isinstance(action, DeletePolicy):
        return f"delete policy {action.name}"
    if isinstance(action, WriteTokenRole):
        return f"write token role {action.role.name}"
    if isinstance(action, WriteFunctionRole):
        return f"write role auth/{action.mount}/role/{action.role.name}"
    return f"delete role auth/{action.mount}/role/{action.name}"


def _same_api(observed: KubernetesApi | None, desired: KubernetesApi) -> bool:
    if observed is None:
        return False
    return observed.host.rstrip("/") == desired.host.rstrip("/") and (
        (observed.ca_pem or "").strip() == (desired.ca_pem or "").strip()
    )


def _namespace_actions(
    plan: NamespacePlan, seen: ObservedNamespace | None
) -> tuple[list[Action], list[str]]:
    actions: list[Action] = []
    warnings: list[str] = []
    if seen is None:
        actions.append(CreateNamespace(plan.name, plan.metadata))
        seen = ObservedNamespace(plan.name, plan.metadata)
    elif not seen.managed:
        warnings.append(
            f"namespace {plan.name!r} exists but is not managed by chamberlain "
            f"(custom_metadata {MANAGED_BY_KEY}={MANAGED_BY} missing): left untouched"
        )
        return actions, warnings
    elif any(seen.custom_metadata.get(k) != v for k, v in plan.metadata.items()):
        actions.append(PatchNamespaceMetadata(plan.name, plan.metadata))
    for path in (plan.kv_mount, plan.state_mount):
        mount = seen.secret_mounts.get(path)
        if mount is None:
            actions.append(EnableSecretsEngine(plan.name, path, "kv", {"version": "2"}))
        elif mount.type != "kv" or mount.version != "2":
            warnings.append(
                f"mount {path!r} in namespace {plan.name!r} is {mount.type} "
                f"v{mount.version or '1'}, not kv v2: left untouched (fix it by hand)"
            )
    auth = seen.auth_mounts.get(plan.auth_mount)
    if auth is None:
        actions.append(EnableAuthMethod(plan.name, plan.auth_mount, "kubernetes"))
    elif auth.type != "kubernetes":
        warnings.append(
            f"auth mount {plan.auth_mount!r} in namespace {plan.name!r} is {auth.type}, "
            "not kubernetes: left untouched"
        )
        return actions, warnings
    if plan.kubernetes is not None and not _same_api(seen.kubernetes, plan.kubernetes):
        if plan.kubernetes.ca_pem:
            actions.append(ConfigureKubernetesAuth(plan.name, plan.auth_mount, plan.kubernetes))
        else:
            warnings.append(
                f"no CA certificate for the Kubernetes API of namespace {plan.name!r}: "
                f"auth/{plan.auth_mount} not configured (the authority requires one)"
            )
    owned = {plan.kv_mount, plan.state_mount}
    for path, mount in sorted(seen.secret_mounts.items()):
        if mount.description == OWNED_DESCRIPTION and path not in owned:
            warnings.append(
                f"mount {path!r} in namespace {plan.name!r} is managed by chamberlain but no "
                "longer declared: kept (it may hold values); disable it by hand if unused"
            )
    return actions, warnings


def _root_actions(desired: DesiredConfiguration, observed: ObservedAuthority) -> list[Action]:
    actions: list[Action] = []
    for name, hcl in sorted(desired.policies.items()):
        if observed.policies.get(name) != hcl:
            actions.append(WritePolicy(name, hcl))
    for name in sorted(observed.policies):
        if is_function_policy(name) and name not in desired.policies:
            actions.append(DeletePolicy(name))
    if observed.token_role != desired.token_role:
        actions.append(WriteTokenRole(desired.token_role))
    system = desired.system
    if system is not None:
        mount = observed.root_auth_mounts.get(system.auth_mount)
        if mount is None:
            actions.append(EnableAuthMethod(None, system.auth_mount, "kubernetes"))
        if not _same_api(observed.function_auth, system.api):
            actions.append(ConfigureKubernetesAuth(None, system.auth_mount, system.api))
        for name, role in sorted(desired.function_roles.items()):
            if observed.function_roles.get(name) != role:
                actions.append(WriteFunctionRole(system.auth_mount, role))
        for name in sorted(observed.function_roles):
            if name not in desired.function_roles:
                actions.append(DeleteFunctionRole(system.auth_mount, name))
    return actions


def audit_warnings(expected: str | None, devices: Sequence[AuditDevice]) -> list[str]:
    """Audit devices live in the server configuration (the API cannot enable them)."""
    if not devices:
        return [
            "no audit device is enabled: declare one in the authority's server configuration "
            '(audit "file" {...}); it cannot be enabled through the API'
        ]
    if expected and not any(d.file_path == expected for d in devices):
        found = ", ".join(sorted(d.file_path or d.path for d in devices))
        return [
            f"AuthorityConfig declares the audit log {expected!r} but the authority writes to "
            f"{found}: fix the server configuration or the intent"
        ]
    return []


def plan(desired: DesiredConfiguration, observed: ObservedAuthority) -> ConfigPlan:
    """The ordered actions that make ``observed`` match ``desired``.

    Root policies come first: the initializer's own policy may need to grow (a new mount name)
    before it can configure namespaces with it.
    """
    actions = _root_actions(desired, observed)
    warnings = list(desired.notes)
    configured: list[str] = []
    for namespace in desired.namespaces:
        found, problems = _namespace_actions(namespace, observed.namespaces.get(namespace.name))
        actions.extend(found)
        warnings.extend(problems)
        if not problems or found:
            configured.append(namespace.name)
    warnings.extend(audit_warnings(desired.audit_path, observed.audit_devices))
    return ConfigPlan(tuple(actions), tuple(warnings), tuple(configured))


def counts(actions: Iterable[Action]) -> dict[str, int]:
    """How many actions of each kind, for the reply event's ``configured`` object."""
    keys = {
        CreateNamespace: "namespacesCreated",
        PatchNamespaceMetadata: "namespacesMarked",
        EnableSecretsEngine: "enginesEnabled",
        EnableAuthMethod: "authMethodsEnabled",
        ConfigureKubernetesAuth: "authConfigured",
        WritePolicy: "policiesWritten",
        DeletePolicy: "policiesDeleted",
        WriteTokenRole: "tokenRolesWritten",
        WriteFunctionRole: "rolesWritten",
        DeleteFunctionRole: "rolesDeleted",
    }
    result = dict.fromkeys(keys.values(), 0)
    for action in actions:
        result[keys[type(action)]] += 1
    return result
