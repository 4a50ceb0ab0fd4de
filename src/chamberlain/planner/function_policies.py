"""The least-privilege ACL policy of every chamberlain function, rendered as HCL.

Each function gets one policy, ``chamberlain-fn-<function>``, in the ROOT namespace. OpenBao
evaluates a root-namespace policy on child-namespace requests with the namespace as a path
prefix: ``path "prod/secret/data/*"`` grants a root-namespace token access to ``secret/data/*``
inside namespace ``prod`` (checked against OpenBao 2.7; ``+`` matches any one namespace).

Data paths name every environment namespace explicitly, so a function can never reach a
namespace chamberlain does not manage (another team's, or one made by hand). Only the
initializer's configuration paths use ``+`` (it creates namespaces, so it cannot list them in
advance), and the initializer is never granted a data path: it configures, it does not read.

chamberlain's own state area (KV v2 mount ``chamberlain`` of each namespace) is split per
function: ``<function>/...`` and the lock ``locks/<function>``; a function cannot alter another
function's bookkeeping. Pure: text in, text out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

POLICY_PREFIX = "chamberlain-fn-"
TOKEN_ROLE = "chamberlain-fn"  # noqa: S105 - a token role name, not a token
STATE_MOUNT = "chamberlain"
DATABASE_MOUNT = "database"
DUE_PREFIX = "rotate-secrets/due"  # chamberlain.adapters.due_index.PREFIX
CONSUMER_POLICY_GLOB = "chamberlain-consumer-*"
CONSUMER_ROLE_GLOB = "chamberlain-*"

ISSUE_SECRETS = "issue-secrets"
ISSUE_CREDENTIALS = "issue-credentials"
INITIALIZE_AUTHORITY = "initialize-authority"
HAND_OVER_BOOTSTRAP = "hand-over-bootstrap"
ROTATE_SECRETS = "rotate-secrets"
WATCH_LEASES = "watch-leases"
RENEW_LEASE = "renew-lease"
REVOKE_ENVIRONMENT = "revoke-environment"
FUNCTIONS: tuple[str, ...] = (
    ISSUE_SECRETS,
    ISSUE_CREDENTIALS,
    INITIALIZE_AUTHORITY,
    HAND_OVER_BOOTSTRAP,
    ROTATE_SECRETS,
    WATCH_LEASES,
    RENEW_LEASE,
    REVOKE_ENVIRONMENT,
)

CRUD = ("create", "read", "update", "delete")
CRUDL = (*CRUD, "list")
WRITE_READ = ("create", "read", "update")


@dataclass(frozen=True)
class NamespaceMounts:
    """The mounts of one environment namespace that function policies refer to."""

    namespace: str
    kv_mount: str
    auth_mount: str
    state_mount: str = STATE_MOUNT
    # KV paths of the DynamicCredentials served here: the only values renew-lease may touch
    dynamic_paths: tuple[str, ...] = ()


def policy_name(function: str) -> str:
    return f"{POLICY_PREFIX}{function}"


def is_function_policy(name: str) -> bool:
    return name.startswith(POLICY_PREFIX)


Rule = tuple[str, tuple[str, ...]]


def _state(ns: NamespaceMounts, function: str) -> list[Rule]:
    st = f"{ns.namespace}/{ns.state_mount}"
    return [
        (f"{st}/data/{function}/*", CRUD),
        (f"{st}/metadata/{function}/*", (*CRUD, "list")),
        (f"{st}/data/locks/{function}", CRUD),
        (f"{st}/metadata/locks/{function}", ("read", "delete")),
    ]


def _kv(ns: NamespaceMounts) -> str:
    return f"{ns.namespace}/{ns.kv_mount}"


def _issue_secrets(ns: NamespaceMounts) -> list[Rule]:
    kv, n = _kv(ns), ns.namespace
    return [
        (f"{kv}/data/*", CRUD),
        (f"{kv}/metadata/*", (*CRUDL, "patch")),
        (f"{kv}/delete/*", ("update",)),
        (f"{kv}/undelete/*", ("update",)),
        (f"{kv}/destroy/*", ("update",)),
        *_state(ns, ISSUE_SECRETS),
        # a created secret with a rotation policy is entered in rotate-secrets' due-index
        (f"{ns.namespace}/{ns.state_mount}/data/{DUE_PREFIX}/*", WRITE_READ),
        (f"{n}/sys/mounts", ("read",)),
        (f"{n}/sys/auth", ("read",)),
        (f"{n}/sys/policies/acl", ("list",)),
        (f"{n}/sys/policies/acl/{CONSUMER_POLICY_GLOB}", CRUD),
        (f"{n}/auth/{ns.auth_mount}/role", ("list",)),
        (f"{n}/auth/{ns.auth_mount}/role/{CONSUMER_ROLE_GLOB}", CRUD),
    ]


def _issue_credentials(ns: NamespaceMounts) -> list[Rule]:
    kv, n, db = _kv(ns), ns.namespace, f"{ns.namespace}/{DATABASE_MOUNT}"
    return [
        (f"{kv}/data/*", WRITE_READ),
        (f"{kv}/metadata/*", (*WRITE_READ, "patch")),
        (f"{n}/sys/mounts", ("read",)),
        (f"{n}/sys/mounts/{DATABASE_MOUNT}", WRITE_READ),
        (f"{db}/config/*", CRUDL),
        (f"{db}/roles/*", CRUDL),
        (f"{db}/creds/*", ("read",)),
        (f"{n}/sys/leases/lookup", ("update",)),
        (f"{n}/sys/leases/revoke", ("update",)),
        *_state(ns, ISSUE_CREDENTIALS),
    ]


def _hand_over_bootstrap(ns: NamespaceMounts) -> list[Rule]:
    kv = _kv(ns)
    return [
        (f"{kv}/data/*", WRITE_READ),
        (f"{kv}/metadata/*", (*WRITE_READ, "patch")),
        *_state(ns, HAND_OVER_BOOTSTRAP),
        (f"{ns.namespace}/sys/mounts", ("read",)),
    ]


def _rotate_secrets(ns: NamespaceMounts) -> list[Rule]:
    kv, st = _kv(ns), f"{ns.namespace}/{ns.state_mount}"
    return [
        (f"{kv}/data/*", WRITE_READ),
        (f"{kv}/metadata/*", (*WRITE_READ, "list", "patch")),
        (f"{kv}/destroy/*", ("update",)),
        (f"{kv}/delete/*", ("update",)),
        *_state(ns, ROTATE_SECRETS),
        # the due-index lives in rotate-secrets' own state area (_state above); it also reads
        # the applied commit of issue-secrets
        (f"{st}/data/{ISSUE_SECRETS}/applied", ("read",)),
        (f"{ns.namespace}/sys/mounts", ("read",)),
    ]


def _watch_leases(ns: NamespaceMounts) -> list[Rule]:
    n = ns.namespace
    return [
        (f"{n}/sys/leases/lookup", ("update",)),
        # listing leases needs sudo (OpenBao treats lease enumeration as privileged)
        (f"{n}/sys/leases/lookup/*", ("list", "update", "sudo")),
        (f"{_kv(ns)}/metadata/*", ("read", "list", "patch")),
        # revoke an old credential's lease once its overlap after a re-issue has ended
        (f"{n}/sys/leases/revoke", ("update",)),
        *_state(ns, WATCH_LEASES),
    ]


def _renew_lease(ns: NamespaceMounts) -> list[Rule]:
    n = ns.namespace
    return [
        (f"{n}/sys/leases/renew", ("update",)),
        (f"{n}/sys/leases/lookup", ("update",)),
        (f"{n}/{DATABASE_MOUNT}/creds/*", ("read",)),
        # a re-issued credential is a new KV version (read: other roles' keys are kept); a
        # lease lost in a race is revoked
        *((f"{_kv(ns)}/data/{path}", WRITE_READ) for path in sorted(ns.dynamic_paths)),
        (f"{_kv(ns)}/metadata/*", ("read", "patch")),
        (f"{n}/sys/leases/revoke", ("update",)),
        *_state(ns, RENEW_LEASE),
    ]


def _revoke_environment(ns: NamespaceMounts) -> list[Rule]:
    n = ns.namespace
    parent, _, leaf = n.rpartition("/")  # a namespace is deleted from its parent
    namespaces = f"{parent}/sys/namespaces/{leaf}" if parent else f"sys/namespaces/{leaf}"
    return [
        (namespaces, ("read", "delete")),
        (f"{n}/sys/leases/revoke-prefix/*", ("update", "sudo")),
        (f"{n}/sys/leases/revoke-force/*", ("update", "sudo")),
        (f"{n}/sys/leases/lookup/*", ("list", "update", "sudo")),
        # count what the namespace deletion removes; remove it piecewise when leases that
        # could not be revoked keep the namespace alive (consumer identities only)
        (f"{_kv(ns)}/metadata/*", ("read", "list", "delete")),
        (f"{n}/sys/auth", ("read",)),
        (f"{n}/sys/policies/acl", ("list",)),
        (f"{n}/sys/policies/acl/{CONSUMER_POLICY_GLOB}", ("delete",)),
        (f"{n}/auth/{ns.auth_mount}/role", ("list",)),
        (f"{n}/auth/{ns.auth_mount}/role/{CONSUMER_ROLE_GLOB}", ("delete",)),
        *_state(ns, REVOKE_ENVIRONMENT),
    ]


_PER_NAMESPACE = {
    ISSUE_SECRETS: _issue_secrets,
    ISSUE_CREDENTIALS: _issue_credentials,
    HAND_OVER_BOOTSTRAP: _hand_over_bootstrap,
    ROTATE_SECRETS: _rotate_secrets,
    WATCH_LEASES: _watch_leases,
    RENEW_LEASE: _renew_lease,
    REVOKE_ENVIRONMENT: _revoke_environment,
}


def initializer_rules(
    *,
    kv_mounts: Iterable[str],
    auth_mounts: Iterable[str],
    function_auth_mount: str,
) -> list[Rule]:
    """Configure, never read: namespaces, the declared mounts, auth, function identities."""
    rules: list[Rule] = [
        ("sys/namespaces", ("list",)),
        ("sys/namespaces/+", ("create", "read", "update", "patch")),
        ("sys/policies/acl", ("list",)),
        (f"sys/policies/acl/{POLICY_PREFIX}*", CRUD),
        (f"auth/token/roles/{TOKEN_ROLE}", WRITE_READ),
        (f"auth/token/create/{TOKEN_ROLE}", ("update",)),
        ("sys/audit", ("read", "sudo")),
        ("sys/auth", ("read",)),
        (f"sys/auth/{function_auth_mount}", (*WRITE_READ, "sudo")),
        (f"auth/{function_auth_mount}/config", WRITE_READ),
        (f"auth/{function_auth_mount}/role", ("list",)),
        (f"auth/{function_auth_mount}/role/{POLICY_PREFIX}*", CRUD),
        ("+/sys/mounts", ("read",)),
        ("+/sys/auth", ("read",)),
    ]
    for mount in sorted({*kv_mounts, STATE_MOUNT}):
        rules.append((f"+/sys/mounts/{mount}", WRITE_READ))
    for mount in sorted(set(auth_mounts)):
        rules.append((f"+/sys/auth/{mount}", (*WRITE_READ, "sudo")))
        rules.append((f"+/auth/{mount}/config", WRITE_READ))
    return rules


_ROOT_RULES: dict[str, list[Rule]] = {
    # watch-leases scans every environment namespace for leases
    WATCH_LEASES: [("sys/namespaces", ("list",))],
}


def function_rules(function: str, namespaces: Sequence[NamespaceMounts]) -> list[Rule]:
    """Rules of a non-initializer function over the environment namespaces it serves."""
    per_namespace = _PER_NAMESPACE[function]
    rules: list[Rule] = list(_ROOT_RULES.get(function, []))
    for ns in sorted(namespaces, key=lambda n: n.namespace):
        rules.extend(per_namespace(ns))
    return rules


def render(function: str, rules: Iterable[Rule]) -> str:
    """Deterministic HCL (the authority stores it verbatim, so equal text = no drift)."""
    lines = [f"# {policy_name(function)}: managed by chamberlain; edits are reverted"]
    merged: dict[str, list[str]] = {}
    for path, capabilities in rules:
        known = merged.setdefault(path, [])
        known.extend(c for c in capabilities if c not in known)
    for path, wanted in merged.items():
        quoted = ", ".join(f'"{c}"' for c in wanted)
        lines.append(f'path "{path}" {{\n  capabilities = [{quoted}]\n}}')
    return "\n".join(lines) + "\n"


def function_policies(
    namespaces: Sequence[NamespaceMounts],
    *,
    kv_mounts: Iterable[str],
    auth_mounts: Iterable[str],
    function_auth_mount: str,
) -> dict[str, str]:
    """``chamberlain-fn-<function>`` -> HCL for every function."""
    policies: dict[str, str] = {}
    for function in FUNCTIONS:
        if function == INITIALIZE_AUTHORITY:
            rules = initializer_rules(
                kv_mounts=kv_mounts,
                auth_mounts=auth_mounts,
                function_auth_mount=function_auth_mount,
            )
        else:
            rules = function_rules(function, namespaces)
        policies[policy_name(function)] = render(function, rules)
    return policies
