"""The desired authority state of one environment at one commit, derived from intent alone.

Pure and deterministic: the same intent, environment and commit always give the same
:class:`~chamberlain.planner.actions.DesiredState`, so two replicas planning the same push agree
on every byte they would write. Nothing here can hold a secret value; runtime secrets carry
only their generator specs.

Names chamberlain owns (and the only ones it ever deletes): consumer policies
``chamberlain-consumer-<namespace>-<serviceAccount>`` and Kubernetes auth roles
``chamberlain-<namespace>-<serviceAccount>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import timedelta
from typing import Any

from chamberlain.model.intent import (
    BootstrapSecret,
    Consumer,
    Generator,
    Intent,
    RotationPolicy,
    SecretDocument,
    SecretIntent,
    kv_mount_of,
)
from chamberlain.planner.actions import (
    ISSUE_OWNED_KEYS,
    MANAGED_BY,
    DesiredRole,
    DesiredSecret,
    DesiredState,
    RetirePolicy,
    SecretKind,
)

POLICY_PREFIX = "chamberlain-consumer-"
ROLE_PREFIX = "chamberlain-"
# Intent labels are copied into custom_metadata under this prefix; such keys are owned (and
# compared) by the issue-secrets step like ISSUE_OWNED_KEYS.
LABEL_PREFIX = "label."
# KV v2 custom_metadata limits (Vault/OpenBao): 64 keys, keys <= 128 bytes, values <= 512 bytes.
MAX_LABELS = 32
MAX_KEY_BYTES = 128
MAX_VALUE_BYTES = 512
INTENT_HASH_CHARS = 16
# Fields that say where a document applies, not what it declares: a document narrowed to fewer
# environments is unchanged in the ones it still applies to.
_HASH_EXCLUDED = frozenset({"origin", "environments"})


class ConsumerNameCollisionError(ValueError):
    """Two distinct consumers map to one policy/role name (``a-b``/``c`` vs ``a``/``b-c``).

    Merging them would grant one identity the other's secrets, so the intent cannot be
    planned; the message names both consumers (no values involved).
    """


def policy_name(namespace: str, service_account: str) -> str:
    return f"{POLICY_PREFIX}{namespace}-{service_account}"


def role_name(namespace: str, service_account: str) -> str:
    return f"{ROLE_PREFIX}{namespace}-{service_account}"


def owns_policy(name: str) -> bool:
    """Whether a policy name is one chamberlain created (and may therefore rewrite/delete)."""
    return name.startswith(POLICY_PREFIX)


def owns_role(role: DesiredRole) -> bool:
    """Whether an observed role is a consumer role chamberlain created.

    The name prefix alone is not enough (an operator may name chamberlain's own function
    identities ``chamberlain-...``): the role must also carry a consumer policy.
    """
    return role.name.startswith(ROLE_PREFIX) and any(owns_policy(p) for p in role.policies)


def consumer_label(namespace: str, service_account: str) -> str:
    """``ns/sa``: how a consumer is written in the ``consumers`` metadata value."""
    return f"{namespace}/{service_account}"


def parse_consumers(value: str) -> frozenset[tuple[str, str]]:
    """Inverse of the ``consumers`` metadata value (tolerates junk: it may be edited by hand)."""
    result: set[tuple[str, str]] = set()
    for item in value.split(","):
        namespace, sep, service_account = item.strip().partition("/")
        if sep and namespace and service_account:
            result.add((namespace, service_account))
    return frozenset(result)


# ---- intent hash ---------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A JSON-safe, order-independent form of a model value."""
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if is_dataclass(value) and not isinstance(value, type):
        out = {
            f.name: _canonical(getattr(value, f.name))
            for f in fields(value)
            if f.name not in _HASH_EXCLUDED
        }
        kind = getattr(type(value), "kind", None)
        if isinstance(kind, str):
            out["kind"] = kind
        return out
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    return value


def canonical_document(document: SecretDocument) -> dict[str, Any]:
    """The document's declared content, minus its origin and environment list.

    Key names and consumers are sets (their order in the YAML means nothing); SQL statements
    and roles keep their order.
    """
    data: dict[str, Any] = _canonical(document)
    if isinstance(document, SecretIntent):
        data["keys"] = sorted(document.keys)
    data["consumers"] = sorted(
        data["consumers"], key=lambda c: (c["namespace"], c["service_account"])
    )
    return data


def intent_hash(document: SecretDocument) -> str:
    """sha256 (first 16 hex) of the canonical JSON of what the document declares."""
    text = json.dumps(canonical_document(document), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:INTENT_HASH_CHARS]


# ---- metadata ------------------------------------------------------------------------------


def _fit(value: str, limit: int = MAX_VALUE_BYTES) -> str:
    """Cut ``value`` to ``limit`` UTF-8 bytes without splitting a character."""
    raw = value.encode()
    if len(raw) <= limit:
        return value
    return raw[:limit].decode(errors="ignore")


def _seconds(value: timedelta) -> str:
    return str(int(value.total_seconds()))


def document_kind(document: SecretDocument) -> SecretKind:
    if isinstance(document, SecretIntent):
        return document.secret_class
    if isinstance(document, BootstrapSecret):
        return "bootstrap"
    return "dynamic"


def deletion_policy(document: SecretDocument) -> RetirePolicy:
    """Only SecretIntents declare one; handed-over and dynamic paths are kept (retain)."""
    return document.deletion_policy if isinstance(document, SecretIntent) else "retain"


def _rotation_metadata(rotation: RotationPolicy | None) -> dict[str, str]:
    if rotation is None:
        return {}
    return {
        "rotation-ttl": _seconds(rotation.ttl),
        "rotation-before": _seconds(rotation.rotate_before),
        "rotation-max-overlap": _seconds(rotation.max_overlap),
        "rotation-revoke-old": "true" if rotation.revoke_old else "false",
        "rotation-failure-strategy": rotation.failure_strategy,
    }


def _label_metadata(labels: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(labels):
        name = LABEL_PREFIX + key
        if len(name.encode()) <= MAX_KEY_BYTES and len(out) < MAX_LABELS:
            out[name] = _fit(str(labels[key]))
    return out


def secret_metadata(document: SecretDocument) -> dict[str, str]:
    """Every custom_metadata key the issue-secrets step owns, except ``intent-commit``.

    Values are cut to the KV v2 limit of 512 bytes; labels beyond 32, or whose key would exceed
    128 bytes, are not copied.
    """
    kind = document_kind(document)
    consumers = sorted({consumer_label(c.namespace, c.service_account) for c in document.consumers})
    metadata = {
        "managed-by": MANAGED_BY,
        "kind": kind,
        "class": kind,
        "owner": _fit(document.owner),
        "purpose": _fit(document.purpose),
        "intent-hash": intent_hash(document),
        "deletion-policy": deletion_policy(document),
        "consumers": _fit(",".join(consumers)),
        "state": "active",
    }
    if isinstance(document, SecretIntent):
        metadata.update(_rotation_metadata(document.rotation))
    metadata.update(_label_metadata(document.labels))
    # KV v2 rejects empty values (0 < len <= 512): an empty field is left out instead.
    return {k: v for k, v in sorted(metadata.items()) if v}


def is_owned_key(key: str) -> bool:
    """custom_metadata keys the issue-secrets step writes (others are carried over untouched)."""
    return key in ISSUE_OWNED_KEYS or key.startswith(LABEL_PREFIX)


# ---- desired state -------------------------------------------------------------------------


def desired_secret(document: SecretDocument) -> DesiredSecret:
    generators: Mapping[str, Generator] = {}
    if isinstance(document, SecretIntent) and document_kind(document) == "runtime":
        generators = dict(sorted(document.generate.items()))
    return DesiredSecret(
        path=document.path,
        kind=document_kind(document),
        generators=generators,
        metadata=secret_metadata(document),
        deletion_policy=deletion_policy(document),
    )


def policy_hcl(kv_mount: str, paths: Iterable[str]) -> str:
    """Read access to exactly ``paths`` (deterministic text: sorted, one block per path)."""
    blocks = [
        f'path "{kv_mount}/data/{path}" {{\n  capabilities = ["read"]\n}}\n'
        for path in sorted(set(paths))
    ]
    return "\n".join(blocks)


def _consumer_paths(
    documents: Iterable[SecretDocument],
) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for document in documents:
        for consumer in document.consumers:
            key = (consumer.namespace, consumer.service_account)
            granted.setdefault(key, set()).add(document.path)
    return granted


def _check_names(consumers: Iterable[tuple[str, str]]) -> None:
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for consumer in sorted(consumers):
        for name in (("policy", policy_name(*consumer)), ("role", role_name(*consumer))):
            other = seen.setdefault(name, consumer)
            if other != consumer:
                raise ConsumerNameCollisionError(
                    f"consumers {consumer_label(*other)} and {consumer_label(*consumer)} "
                    f"both map to the {name[0]} name {name[1]!r}; "
                    "rename a namespace or service account"
                )


def consumer_names(consumers: Iterable[Consumer]) -> frozenset[str]:
    """Policy and role names of ``consumers`` (what a Scope lists)."""
    names: set[str] = set()
    for consumer in consumers:
        names.add(policy_name(consumer.namespace, consumer.service_account))
        names.add(role_name(consumer.namespace, consumer.service_account))
    return frozenset(names)


def desired_state(intent: Intent, environment: str, commit: str) -> DesiredState:
    """What the authority namespace of ``environment`` must hold at ``commit``.

    Raises :class:`ConsumerNameCollisionError` when two consumers would share a name.
    """
    documents = sorted(intent.for_environment(environment), key=lambda d: d.path)
    kv_mount = kv_mount_of(intent)
    secrets = {d.path: desired_secret(d) for d in documents}
    granted = _consumer_paths(documents)
    _check_names(granted)
    policies: dict[str, str] = {}
    roles: dict[str, DesiredRole] = {}
    for namespace, service_account in sorted(granted):
        policy = policy_name(namespace, service_account)
        policies[policy] = policy_hcl(kv_mount, granted[(namespace, service_account)])
        role = role_name(namespace, service_account)
        roles[role] = DesiredRole(
            name=role,
            service_account=service_account,
            namespace=namespace,
            policies=(policy,),
        )
    return DesiredState(
        environment=environment,
        commit=commit,
        kv_mount=kv_mount,
        secrets=secrets,
        policies=dict(sorted(policies.items())),
        roles=dict(sorted(roles.items())),
    )


__all__ = [
    "LABEL_PREFIX",
    "POLICY_PREFIX",
    "ROLE_PREFIX",
    "ConsumerNameCollisionError",
    "canonical_document",
    "consumer_label",
    "consumer_names",
    "desired_secret",
    "desired_state",
    "intent_hash",
    "is_owned_key",
    "kv_mount_of",
    "owns_policy",
    "owns_role",
    "parse_consumers",
    "policy_hcl",
    "policy_name",
    "role_name",
    "secret_metadata",
]
