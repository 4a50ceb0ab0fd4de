"""The issue-secrets planner: desired vs observed state -> the fewest actions that converge.

Pure and deterministic (sorted everywhere): replicas planning the same inputs produce the same
plan, and a plan printed by ``chamberlain plan`` is the plan ``apply`` executes.

Rules, per secret path in scope:

* not observed (or its metadata is gone): ``CreateSecret`` for runtime secrets, ``RegisterSecret``
  (metadata only) for the others. Drift ``secret-missing`` when the path is in
  ``previously_applied`` (chamberlain had applied it and someone destroyed it); then
  ``recreate=True``.
* runtime secret whose metadata exists but has no live version (current_version 0): a value is
  needed again, ``CreateSecret(recreate=True)``: the applier must write with check-and-set equal
  to the metadata's current version read at apply time (0 only when metadata is gone). Drift
  ``secret-missing`` when the metadata says chamberlain had made it a live runtime secret
  (managed-by chamberlain, kind runtime, state active) or the path is in ``previously_applied``.
  This relies on the applier writing the value before the metadata, so that managed metadata
  without a value can only mean "deleted".
* observed with a value (or non-runtime): ``UpdateMetadata`` when an owned key differs
  (``COMPARED_KEYS`` plus ``label.*``); a value is never regenerated. ``intent-commit`` moves to
  the planned commit only when the intent changed (``intent-hash`` differs or the secret was
  retired); otherwise the observed one is kept. ``drift=True`` (and Drift ``metadata-changed``)
  when the intent-hash is equal and the secret is not retired: the intent did not change, so
  the authority did.
* observed, managed by chamberlain, not retired, but no longer desired: ``RetireSecret`` with the
  observed ``deletion-policy`` (unknown -> ``retain``, the safe choice).
* unmanaged observed paths (no ``managed-by: chamberlain``) that are not desired: never touched.

Policies and roles, per name in scope: written when missing or different, deleted when owned
(see ``owns_policy``/``owns_role``) and no longer desired. A write is drift (``policy-missing``,
``policy-changed``, ``role-missing``, ``role-changed``) when no secret action driven by an intent
change in this plan concerns its consumer (none of that consumer's secrets, at the desired or
observed side, was created, registered, updated or retired because the intent changed): the
authority changed behind chamberlain's back, or a previous apply was interrupted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from chamberlain.planner.actions import (
    COMPARED_KEYS,
    MANAGED_BY,
    Action,
    CreateSecret,
    DeletePolicy,
    DeleteRole,
    DesiredRole,
    DesiredSecret,
    DesiredState,
    Drift,
    ObservedSecret,
    ObservedState,
    Plan,
    RegisterSecret,
    RetirePolicy,
    RetireSecret,
    Scope,
    UpdateMetadata,
    WritePolicy,
    WriteRole,
)
from chamberlain.planner.desired import (
    LABEL_PREFIX,
    is_owned_key,
    owns_policy,
    owns_role,
    parse_consumers,
    policy_name,
    role_name,
)

RETIRED = "retired"
_RETIRE_POLICIES: Mapping[str, RetirePolicy] = {
    "retain": "retain",
    "delete": "delete",
    "destroy": "destroy",
}


def _compared(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k in COMPARED_KEYS or k.startswith(LABEL_PREFIX)}


def changed_keys(desired: Mapping[str, str], observed: Mapping[str, str]) -> list[str]:
    """Owned metadata keys whose value differs (sorted); intent-commit is not compared."""
    want, have = _compared(desired), _compared(observed)
    return sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))


def _is_managed(metadata: Mapping[str, str]) -> bool:
    return metadata.get("managed-by") == MANAGED_BY


def _is_retired(metadata: Mapping[str, str]) -> bool:
    return metadata.get("state") == RETIRED


def _merged(observed: Mapping[str, str], desired: Mapping[str, str], commit: str) -> dict[str, str]:
    """Observed keys of other steps carried over, owned keys replaced by ``desired``."""
    merged = {k: v for k, v in observed.items() if not is_owned_key(k)}
    merged.update(desired)
    merged["intent-commit"] = commit
    return dict(sorted(merged.items()))


class _Planner:
    """Accumulates one plan; split out so each rule is a small method."""

    def __init__(
        self,
        desired: DesiredState,
        observed: ObservedState,
        scope: Scope,
        previously_applied: frozenset[str],
    ) -> None:
        self.desired = desired
        self.observed = observed
        self.scope = scope
        self.previously_applied = previously_applied
        self.upserts: list[Action] = []
        self.retirements: list[RetireSecret] = []
        self.drift: list[Drift] = []
        self.unchanged = 0
        # consumers ("ns", "sa") whose access an intent change in this plan concerns
        self.intent_touched: set[tuple[str, str]] = set()

    # ---- secrets ---------------------------------------------------------------------------

    def _touch(self, *metadata: Mapping[str, str]) -> None:
        for item in metadata:
            self.intent_touched |= parse_consumers(item.get("consumers", ""))

    def _missing(self, want: DesiredSecret) -> None:
        drift = want.path in self.previously_applied
        metadata = _merged({}, want.metadata, self.desired.commit)
        if drift:
            self.drift.append(Drift(want.path, "secret-missing"))
        else:
            self._touch(want.metadata)
        if want.kind == "runtime":
            self.upserts.append(CreateSecret(want.path, want.generators, metadata, recreate=drift))
        else:
            self.upserts.append(RegisterSecret(want.path, metadata))

    def _intent_changed(self, want: DesiredSecret, have: ObservedSecret) -> bool:
        return (
            have.metadata.get("intent-hash") != want.metadata.get("intent-hash")
            or _is_retired(have.metadata)
            or "intent-commit" not in have.metadata
        )

    def _without_value(self, want: DesiredSecret, have: ObservedSecret) -> None:
        meta = have.metadata
        was_live = _is_managed(meta) and meta.get("kind") == "runtime" and not _is_retired(meta)
        drift = was_live or want.path in self.previously_applied
        intent_changed = self._intent_changed(want, have)
        commit = self.desired.commit if intent_changed else meta["intent-commit"]
        metadata = _merged(meta, want.metadata, commit)
        if drift:
            self.drift.append(Drift(want.path, "secret-missing"))
        if intent_changed or not drift:
            self._touch(want.metadata, meta)
        self.upserts.append(CreateSecret(want.path, want.generators, metadata, recreate=True))

    def _existing(self, want: DesiredSecret, have: ObservedSecret) -> None:
        if not changed_keys(want.metadata, have.metadata):
            self.unchanged += 1
            return
        intent_changed = self._intent_changed(want, have)
        commit = self.desired.commit if intent_changed else have.metadata["intent-commit"]
        metadata = _merged(have.metadata, want.metadata, commit)
        drift = not intent_changed
        if drift:
            self.drift.append(Drift(want.path, "metadata-changed"))
        else:
            self._touch(want.metadata, have.metadata)
        self.upserts.append(UpdateMetadata(want.path, metadata, drift=drift))

    def _retire(self, have: ObservedSecret) -> None:
        meta = have.metadata
        if not have.exists or not _is_managed(meta) or _is_retired(meta):
            return
        policy = _RETIRE_POLICIES.get(meta.get("deletion-policy", ""), "retain")
        metadata = dict(sorted({**meta, "state": RETIRED}.items()))
        self._touch(meta)
        self.retirements.append(RetireSecret(have.path, policy, metadata))

    def secrets(self) -> None:
        desired, observed = self.desired.secrets, self.observed.secrets
        paths = set(desired) | set(observed)
        if not self.scope.full:
            paths &= self.scope.paths
        for path in sorted(paths):
            want, have = desired.get(path), observed.get(path)
            if want is None:
                if have is not None:
                    self._retire(have)
            elif have is None or not have.exists:
                self._missing(want)
            elif want.kind == "runtime" and have.current_version == 0:
                self._without_value(want, have)
            else:
                self._existing(want, have)

    # ---- policies and roles ----------------------------------------------------------------

    def _names(self, desired: Iterable[str], observed: Iterable[str]) -> list[str]:
        names = set(desired) | set(observed)
        if not self.scope.full:
            names &= self.scope.consumers
        return sorted(names)

    def _touched_names(self) -> tuple[set[str], set[str]]:
        policies = {policy_name(ns, sa) for ns, sa in self.intent_touched}
        roles = {role_name(ns, sa) for ns, sa in self.intent_touched}
        return policies, roles

    def policies(self) -> tuple[list[WritePolicy], list[DeletePolicy]]:
        touched, _ = self._touched_names()
        writes: list[WritePolicy] = []
        deletes: list[DeletePolicy] = []
        want_all, have_all = self.desired.policies, self.observed.policies
        for name in self._names(want_all, (n for n in have_all if owns_policy(n))):
            want, have = want_all.get(name), have_all.get(name)
            if want is None:
                deletes.append(DeletePolicy(name))
            elif have is None or have.strip() != want.strip():
                drift = name not in touched
                if drift:
                    self.drift.append(
                        Drift(name, "policy-missing" if have is None else "policy-changed")
                    )
                writes.append(WritePolicy(name, want, drift=drift))
        return writes, deletes

    def roles(self) -> tuple[list[WriteRole], list[DeleteRole]]:
        _, touched = self._touched_names()
        writes: list[WriteRole] = []
        deletes: list[DeleteRole] = []
        want_all, have_all = self.desired.roles, self.observed.roles
        for name in self._names(want_all, (n for n, r in have_all.items() if owns_role(r))):
            want, have = want_all.get(name), have_all.get(name)
            if want is None:
                deletes.append(DeleteRole(name))
            elif have is None or not _same_role(have, want):
                drift = name not in touched
                if drift:
                    self.drift.append(
                        Drift(name, "role-missing" if have is None else "role-changed")
                    )
                writes.append(WriteRole(want, drift=drift))
        return writes, deletes

    def build(self) -> Plan:
        self.secrets()
        policy_writes, policy_deletes = self.policies()
        role_writes, role_deletes = self.roles()
        actions: list[Action] = [
            *self.upserts,
            *policy_writes,
            *role_writes,
            *role_deletes,
            *policy_deletes,
            *self.retirements,
        ]
        return Plan(
            environment=self.desired.environment,
            commit=self.desired.commit,
            actions=tuple(actions),
            unchanged=self.unchanged,
            drift=tuple(sorted(self.drift, key=lambda d: (d.path, d.kind))),
        )


def _same_role(have: DesiredRole, want: DesiredRole) -> bool:
    return (
        have.name == want.name
        and have.namespace == want.namespace
        and have.service_account == want.service_account
        and sorted(have.policies) == sorted(want.policies)
    )


def plan(
    desired: DesiredState,
    observed: ObservedState,
    scope: Scope,
    previously_applied: frozenset[str] = frozenset(),
) -> Plan:
    """The ordered actions that make ``observed`` match ``desired`` within ``scope``.

    ``previously_applied``: the secret paths of the last applied commit (from chamberlain's
    state area); a desired one whose metadata is gone was destroyed behind our back.
    """
    return _Planner(desired, observed, scope, previously_applied).build()


__all__ = ["changed_keys", "plan"]
