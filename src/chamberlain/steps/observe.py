"""Read what the authority holds for the part of an environment a plan may touch.

The planner is pure, so everything it compares against is read here first, and only within
the plan's scope: a full scope (first push, force-push, resync) walks the KV mount and lists
chamberlain's policies and roles; an incremental scope reads the metadata of a handful of
paths and the policies/roles of their consumers, so a one-file push costs a few reads.
Metadata reads of a full walk run on a thread pool (one authority session per thread).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from chamberlain.planner.actions import DesiredRole, ObservedSecret, ObservedState, Scope
from chamberlain.planner.desired import ROLE_PREFIX, owns_policy, owns_role

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority, SecretMetadata


def observed_secret(path: str, found: SecretMetadata | None) -> ObservedSecret | None:
    """The planner's view of one path; ``current_version`` 0 when no version is readable."""
    if found is None:
        return None
    info = found.versions.get(found.current_version)
    live = info is not None and info.alive
    return ObservedSecret(
        path=path,
        current_version=found.current_version if live else 0,
        metadata=dict(found.custom_metadata),
        exists=True,
    )


def observed_role(name: str, data: Mapping[str, Any]) -> DesiredRole:
    """A Kubernetes auth role as the planner compares it."""
    policies = data.get("token_policies") or data.get("policies") or []
    return DesiredRole(
        name=name,
        service_account=",".join(str(s) for s in data.get("bound_service_account_names") or []),
        namespace=",".join(str(n) for n in data.get("bound_service_account_namespaces") or []),
        policies=tuple(sorted(str(p) for p in policies)),
    )


class Observer:
    """Reads the observed state of one environment (``authority`` bound to its namespace)."""

    def __init__(
        self,
        authority: Authority,
        *,
        kv_mount: str,
        auth_mount: str,
        concurrency: int = 8,
    ) -> None:
        self.authority = authority
        self.kv_mount = kv_mount
        self.auth_mount = auth_mount
        self.concurrency = max(1, concurrency)

    def observe(self, scope: Scope) -> ObservedState:
        if scope.full:
            paths = self.authority.walk("", mount=self.kv_mount)
            policy_names = [n for n in self.authority.list_policies() if owns_policy(n)]
            role_names = [
                n.rstrip("/")
                for n in self.authority.list_kubernetes_roles(self.auth_mount)
                if n.startswith(ROLE_PREFIX)
            ]
        else:
            paths = sorted(scope.paths)
            policy_names = sorted(n for n in scope.consumers if owns_policy(n))
            role_names = sorted(n for n in scope.consumers if n.startswith(ROLE_PREFIX))
        secrets = self._secrets(paths)
        policies: dict[str, str] = {}
        for name in policy_names:
            hcl = self.authority.read_policy(name)
            if hcl is not None:
                policies[name] = hcl
        roles: dict[str, DesiredRole] = {}
        for name in role_names:
            data = self.authority.read_kubernetes_role(self.auth_mount, name)
            if data is not None:
                role = observed_role(name, data)
                if owns_role(role):
                    roles[name] = role
        return ObservedState(secrets=secrets, policies=policies, roles=roles)

    def _secrets(self, paths: Iterable[str]) -> dict[str, ObservedSecret]:
        wanted = list(paths)
        found: dict[str, ObservedSecret] = {}
        lock = threading.Lock()
        local = threading.local()

        def read(path: str, authority: Authority) -> None:
            observed = observed_secret(path, authority.read_metadata(path, mount=self.kv_mount))
            if observed is not None:
                with lock:
                    found[path] = observed

        def pooled(path: str) -> None:
            authority: Authority | None = getattr(local, "authority", None)
            if authority is None:
                authority = self.authority.clone()
                local.authority = authority
            read(path, authority)

        if len(wanted) <= 4 or self.concurrency == 1:
            for path in wanted:
                read(path, self.authority)
        else:
            workers = min(self.concurrency, len(wanted))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="observe") as pool:
                list(pool.map(pooled, wanted))
        return dict(sorted(found.items()))
