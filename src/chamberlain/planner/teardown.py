"""What tearing an environment down removes, whether it may, and the report it ends with.

Pure: the revoke-environment step observes the authority and the intent, and asks this module
which namespace belongs to the environment (:func:`target_for`), whether chamberlain may tear
it down (:func:`decide`), which identities in it are chamberlain's (:func:`owned_identities`),
which leases failed (:func:`lease_failures`), and how to say what happened
(:class:`TeardownReport`, the ``dev.chamberlain.environment.revoked.v1`` data).

Safety rules, because a teardown destroys values:

* only a namespace carrying ``managed-by=chamberlain`` and recorded as this environment's is
  ever touched; anything else is refused (never touch what chamberlain does not own);
* an ephemeral instance (namespace metadata ``ephemeral=true``) is always torn down;
* a long-lived environment is torn down only once it is gone from intent: a
  ``cluster.deleted`` for ``prod`` (a cluster being replaced) must not destroy prod's values.
  Without readable intent it is refused, since removal cannot be confirmed;
* leases whose backend revocation fails are reported and forced away only when the
  Environment (or, for an instance, its ephemeral template) carries the label
  ``chamberlain.dev/force-revoke: "true"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chamberlain.model.intent import (
    DEFAULT_KUBERNETES_AUTH_MOUNT,
    DEFAULT_KV_MOUNT,
    Intent,
)

FORCE_REVOKE_LABEL = "chamberlain.dev/force-revoke"
MANAGED_BY_KEY = "managed-by"
MANAGED_BY = "chamberlain"
CONSUMER_POLICY_PREFIX = "chamberlain-consumer-"
CONSUMER_ROLE_PREFIX = "chamberlain-"
MAX_FAILURES = 200  # the event schema's limit
MAX_REASON = 2000

Verdict = Literal["absent", "refuse", "teardown"]


@dataclass(frozen=True)
class Target:
    """The environment to tear down, as intent describes it (or would, were it declared)."""

    environment: str
    namespace: str  # the environment's namespace, relative to the base namespace
    kv_mount: str = DEFAULT_KV_MOUNT
    auth_mount: str = DEFAULT_KUBERNETES_AUTH_MOUNT
    force: bool = False  # force away leases whose backend revocation fails
    declared: bool = False  # a long-lived Environment of that name is declared in intent
    intent_known: bool = False  # the intent could be read


@dataclass(frozen=True)
class NamespaceFacts:
    """What the authority says about the target namespace."""

    exists: bool
    metadata: Mapping[str, str] = field(default_factory=dict)
    deleting: bool = False  # a deletion is already in progress (OpenBao "tainted")

    @property
    def managed(self) -> bool:
        return self.metadata.get(MANAGED_BY_KEY) == MANAGED_BY

    @property
    def ephemeral(self) -> bool:
        return self.metadata.get("ephemeral") == "true"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class Failure:
    """Something that could not be removed (never a value: ids and paths only)."""

    target: str
    reason: str


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "yes", "1")


def target_for(intent: Intent | None, environment: str) -> Target:
    """Where ``environment`` lives and how to tear it down, per intent (None: unreadable)."""
    if intent is None:
        return Target(environment, environment)
    authority = intent.authority
    kv_mount = authority.kv_mount if authority else DEFAULT_KV_MOUNT
    auth_mount = authority.kubernetes_auth_mount if authority else DEFAULT_KUBERNETES_AUTH_MOUNT
    declared = intent.environment(environment)
    if declared is not None and not declared.ephemeral:
        return Target(
            environment,
            declared.namespace,
            kv_mount,
            auth_mount,
            force=_truthy(declared.labels.get(FORCE_REVOKE_LABEL)),
            declared=True,
            intent_known=True,
        )
    template = intent.ephemeral_template(environment)
    force = template is not None and _truthy(template.labels.get(FORCE_REVOKE_LABEL))
    return Target(environment, environment, kv_mount, auth_mount, force=force, intent_known=True)


def decide(target: Target, facts: NamespaceFacts) -> Decision:
    """Tear down, acknowledge (nothing there) or refuse; the reason is for logs and errors."""
    name = target.namespace
    if not facts.exists:
        return Decision("absent", f"namespace {name!r} does not exist: nothing left to remove")
    if facts.deleting:
        return Decision("absent", f"namespace {name!r} is already being deleted")
    if not facts.managed:
        return Decision(
            "refuse",
            f"namespace {name!r} is not managed by chamberlain "
            f"({MANAGED_BY_KEY}={MANAGED_BY} missing): left untouched",
        )
    owner = facts.metadata.get("environment")
    if owner and owner != target.environment:
        return Decision(
            "refuse",
            f"namespace {name!r} belongs to environment {owner!r}, not "
            f"{target.environment!r}: left untouched",
        )
    if facts.ephemeral:
        return Decision("teardown", f"ephemeral environment {target.environment!r}")
    if not target.intent_known:
        return Decision(
            "refuse",
            f"{target.environment!r} is a long-lived environment and the intent cannot be read "
            "to confirm it was removed: left untouched",
        )
    if target.declared:
        return Decision(
            "refuse",
            f"{target.environment!r} is a long-lived environment still declared in intent: "
            "remove its Environment document first (a deleted cluster does not end it)",
        )
    return Decision("teardown", f"environment {target.environment!r} was removed from intent")


def lease_prefixes(lease_ids: Iterable[str]) -> list[str]:
    """The mounts that hold the leases (revoke-prefix is issued once per mount)."""
    return sorted({lease_id.split("/", 1)[0] for lease_id in lease_ids if lease_id})


def lease_failures(remaining: Sequence[str], *, forced: Sequence[str]) -> list[Failure]:
    """Failures for leases still there (not forced) and leases forced away."""
    failures = [
        Failure(
            lease_id,
            "backend revocation failed; lease kept (label the Environment "
            f'{FORCE_REVOKE_LABEL}: "true" to force it)',
        )
        for lease_id in remaining
    ]
    failures += [
        Failure(
            lease_id,
            "backend revocation failed; lease forced away as intent allows: the credential "
            "may still exist in the backend",
        )
        for lease_id in forced
    ]
    return failures


def owned_identities(policies: Iterable[str], roles: Iterable[str]) -> tuple[list[str], list[str]]:
    """The consumer policies and roles issue-secrets made (the only ones counted/removed)."""
    return (
        sorted(p for p in policies if p.startswith(CONSUMER_POLICY_PREFIX)),
        sorted(r for r in roles if r.startswith(CONSUMER_ROLE_PREFIX)),
    )


@dataclass(frozen=True)
class TeardownReport:
    """The ``dev.chamberlain.environment.revoked.v1`` data: counts, never values."""

    environment: str
    leases_revoked: int
    secrets_destroyed: int
    identities_removed: int
    namespace_deleted: bool
    failures: tuple[Failure, ...] = ()

    @property
    def complete(self) -> bool:
        return self.namespace_deleted and not self.failures

    def to_data(self) -> dict[str, Any]:
        failures = list(self.failures)
        if len(failures) > MAX_FAILURES:
            extra = len(failures) - (MAX_FAILURES - 1)
            failures = [
                *failures[: MAX_FAILURES - 1],
                Failure("(more)", f"{extra} more failure(s) not listed; see the step's log"),
            ]
        return {
            "environment": self.environment,
            "leasesRevoked": self.leases_revoked,
            "secretsDestroyed": self.secrets_destroyed,
            "identitiesRemoved": self.identities_removed,
            "namespaceDeleted": self.namespace_deleted,
            "failures": [
                {"target": f.target[:1024], "reason": f.reason[:MAX_REASON]} for f in failures
            ],
        }
