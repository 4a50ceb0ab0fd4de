"""Observe the authority's configuration, apply the planner's actions, keep identities alive.

The I/O half of :mod:`chamberlain.planner.authority_config`: :func:`observe` reads exactly what
the plan compares (function policies, token role, function roles, the namespaces chamberlain
configures and their mounts), :func:`apply` executes actions in order, and
:func:`ensure_local_identities` keeps one valid token file per function in the identity
directory (created through the token role, renewed when half its period has passed).
Everything runs as the initializer's own identity, never as root (except the bootstrap in
:mod:`chamberlain.steps.initialize_authority`, which reuses :func:`apply`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chamberlain.adapters.authority_admin import AdminAuthority
from chamberlain.adapters.authority_errors import (
    AlreadyExistsError,
    ForbiddenError,
    InvalidRequestError,
)
from chamberlain.identity import read_token, write_token
from chamberlain.logs import get_logger, log
from chamberlain.planner.authority_config import (
    OWNED_DESCRIPTION,
    Action,
    AuditDevice,
    ConfigureKubernetesAuth,
    CreateNamespace,
    DeleteFunctionRole,
    DeletePolicy,
    DesiredConfiguration,
    EnableAuthMethod,
    EnableSecretsEngine,
    FunctionRole,
    KubernetesApi,
    Mount,
    ObservedAuthority,
    ObservedNamespace,
    PatchNamespaceMetadata,
    TokenRole,
    WriteFunctionRole,
    WritePolicy,
    WriteTokenRole,
    describe,
)
from chamberlain.planner.function_policies import (
    FUNCTIONS,
    POLICY_PREFIX,
    TOKEN_ROLE,
    is_function_policy,
    policy_name,
)

_log = get_logger("chamberlain.initialize-authority")


def _mounts(table: dict[str, Any]) -> dict[str, Mount]:
    return {
        path: Mount(
            type=info.type, version=info.options.get("version", ""), description=info.description
        )
        for path, info in table.items()
    }


def _token_role(data: dict[str, Any] | None) -> TokenRole | None:
    if data is None:
        return None
    return TokenRole(
        name=TOKEN_ROLE,
        allowed_policies_glob=tuple(data.get("allowed_policies_glob") or ()),
        orphan=bool(data.get("orphan")),
        renewable=bool(data.get("renewable")),
        period_s=int(data.get("token_period") or data.get("period") or 0),
    )


def _function_role(name: str, data: dict[str, Any]) -> FunctionRole:
    accounts = data.get("bound_service_account_names") or []
    namespaces = data.get("bound_service_account_namespaces") or []
    policies = data.get("token_policies") or data.get("policies") or []
    return FunctionRole(
        name=name,
        service_account=",".join(str(a) for a in accounts),
        namespace=",".join(str(n) for n in namespaces),
        policies=tuple(str(p) for p in policies),
        ttl_s=int(data.get("token_ttl") or data.get("ttl") or 0),
    )


def _api(admin: AdminAuthority, mount: str) -> KubernetesApi | None:
    config = admin.read_kubernetes_config(mount)
    if config is None:
        return None
    return KubernetesApi(host=config.host, ca_pem=config.ca_pem or None)


def observe(admin: AdminAuthority, desired: DesiredConfiguration) -> ObservedAuthority:
    """Read what the plan compares; namespaces not managed by chamberlain are not entered."""
    namespaces: dict[str, ObservedNamespace] = {}
    wanted = {plan.name: plan for plan in desired.namespaces}
    for name, metadata in admin.namespaces_with_metadata().items():
        seen = ObservedNamespace(name, metadata)
        plan = wanted.get(name)
        if plan is not None and seen.managed:
            inside = admin.for_namespace(name)
            auths = _mounts(inside.list_auth_mounts())
            kubernetes = None
            if plan.kubernetes is not None and plan.auth_mount in auths:
                kubernetes = _api(inside, plan.auth_mount)
            seen = ObservedNamespace(
                name,
                metadata,
                secret_mounts=_mounts(inside.list_secret_mounts()),
                auth_mounts=auths,
                kubernetes=kubernetes,
            )
        namespaces[name] = seen
    policies = {
        name: admin.read_policy(name) or ""
        for name in admin.list_policies()
        if is_function_policy(name)
    }
    root_auth: dict[str, Mount] = {}
    function_auth = None
    roles: dict[str, FunctionRole] = {}
    system = desired.system
    if system is not None:
        root_auth = _mounts(admin.list_auth_mounts())
        if system.auth_mount in root_auth:
            function_auth = _api(admin, system.auth_mount)
            for name in admin.list_kubernetes_roles(system.auth_mount):
                if name.startswith(POLICY_PREFIX):
                    data = admin.read_kubernetes_role(system.auth_mount, name)
                    if data is not None:
                        roles[name] = _function_role(name, data)
    devices = tuple(
        AuditDevice(path=d.path, type=d.type, file_path=d.options.get("file_path"))
        for d in admin.audit_devices()
    )
    return ObservedAuthority(
        namespaces=namespaces,
        policies=policies,
        token_role=_token_role(admin.read_token_role(TOKEN_ROLE)),
        root_auth_mounts=root_auth,
        function_auth=function_auth,
        function_roles=roles,
        audit_devices=devices,
    )


def apply_action(admin: AdminAuthority, action: Action) -> None:
    """Execute one action; an object that appeared meanwhile (a concurrent run) is fine."""
    if isinstance(action, CreateNamespace):
        try:
            admin.create_namespace_with_metadata(action.name, action.metadata)
        except InvalidRequestError as exc:
            if "already exists" not in str(exc):
                raise
            admin.patch_namespace_metadata(action.name, dict(action.metadata))
    elif isinstance(action, PatchNamespaceMetadata):
        admin.patch_namespace_metadata(action.name, dict(action.metadata))
    elif isinstance(action, EnableSecretsEngine):
        with contextlib.suppress(AlreadyExistsError):
            admin.for_namespace(action.namespace).enable_secrets_engine(
                action.type, action.path, action.options, description=OWNED_DESCRIPTION
            )
    elif isinstance(action, EnableAuthMethod):
        with contextlib.suppress(AlreadyExistsError):
            admin.for_namespace(action.namespace).enable_auth(
                action.type, action.path, description=OWNED_DESCRIPTION
            )
    elif isinstance(action, ConfigureKubernetesAuth):
        admin.for_namespace(action.namespace).write_kubernetes_config(
            action.mount, host=action.api.host, ca_pem=action.api.ca_pem or ""
        )
    elif isinstance(action, WritePolicy):
        admin.write_policy(action.name, action.hcl)
    elif isinstance(action, DeletePolicy):
        admin.delete_policy(action.name)
    elif isinstance(action, WriteTokenRole):
        role = action.role
        admin.write_token_role(
            role.name,
            allowed_policies_glob=role.allowed_policies_glob,
            orphan=role.orphan,
            renewable=role.renewable,
            period_s=role.period_s,
        )
    elif isinstance(action, WriteFunctionRole):
        admin.write_kubernetes_role(
            action.mount,
            action.role.name,
            service_account_names=[action.role.service_account],
            namespaces=[action.role.namespace],
            policies=action.role.policies,
            ttl=action.role.ttl_s,
        )
    elif isinstance(action, DeleteFunctionRole):
        admin.delete_kubernetes_role(action.mount, action.name)


def apply(admin: AdminAuthority, actions: Iterable[Action]) -> list[str]:
    """Apply in order; the descriptions of what was done (for the reply and the log)."""
    done = []
    for action in actions:
        apply_action(admin, action)
        text = describe(action)
        log(_log, "INFO", text, action=type(action).__name__)
        done.append(text)
    return done


@dataclass
class IdentityReport:
    issued: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)


def issue_local_identity(admin: AdminAuthority, directory: Path, function: str) -> str:
    """A new periodic, orphan token for ``function``, written to its identity file."""
    token = admin.create_role_token(
        TOKEN_ROLE,
        [policy_name(function)],
        display_name=policy_name(function),
        meta={"function": function, "managed-by": "chamberlain"},
    )
    write_token(directory, function, token)
    return token


def _valid(session: AdminAuthority, function: str) -> dict[str, Any] | None:
    try:
        info = session.lookup_self()
    except ForbiddenError:
        return None
    if policy_name(function) not in (info.get("policies") or []):
        return None
    return info


def ensure_local_identities(
    admin: AdminAuthority,
    directory: Path,
    *,
    period_s: int,
    functions: Iterable[str] = FUNCTIONS,
) -> IdentityReport:
    """One valid token file per function: issue missing/invalid ones, renew ageing ones."""
    report = IdentityReport()
    for function in functions:
        token = read_token(directory, function)
        info = None
        if token:
            session = admin.as_token(token)
            info = _valid(session, function)
        if info is None:
            issue_local_identity(admin, directory, function)
            report.issued.append(function)
            log(_log, "INFO", f"identity issued for {function}", function=function)
            continue
        if int(info.get("ttl") or 0) < period_s // 2:
            session.renew_self()
            report.renewed.append(function)
    return report
