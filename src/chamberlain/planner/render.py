"""Human (table) and machine (JSON) views of a plan, as printed by ``chamberlain plan``.

A plan holds no value by construction (generator specs and metadata only), and these views show
even less: key names, generator types, metadata key names. Both views carry the same
information so a script reading ``--format json`` sees what a person reads in the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chamberlain.model.intent import Generator
from chamberlain.planner.actions import (
    Action,
    CreateSecret,
    DeletePolicy,
    DeleteRole,
    ObservedState,
    Plan,
    RegisterSecret,
    RetireSecret,
    UpdateMetadata,
    WritePolicy,
    WriteRole,
)
from chamberlain.planner.issue import changed_keys

# Summary order: what a reader scans for first.
ACTION_NAMES = (
    "create",
    "register",
    "update",
    "retire",
    "write-policy",
    "delete-policy",
    "write-role",
    "delete-role",
)
SHORT_COMMIT = 12
_REGISTER_NOTE = {
    "internal": "value written by its operator",
    "bootstrap": "value copied in at handover",
    "dynamic": "credentials issued by the lease steps",
}
_RETIRE_NOTE = {
    "retain": "mark retired, keep the value",
    "delete": "soft-delete the current version, mark retired",
    "destroy": "destroy every version and the metadata",
}


def action_name(action: Action) -> str:
    if isinstance(action, CreateSecret):
        return "create"
    if isinstance(action, RegisterSecret):
        return "register"
    if isinstance(action, UpdateMetadata):
        return "update"
    if isinstance(action, RetireSecret):
        return "retire"
    if isinstance(action, WritePolicy):
        return "write-policy"
    if isinstance(action, DeletePolicy):
        return "delete-policy"
    if isinstance(action, WriteRole):
        return "write-role"
    return "delete-role"


def action_target(action: Action) -> str:
    if isinstance(action, WriteRole):
        return action.role.name
    if isinstance(action, (WritePolicy, DeletePolicy, DeleteRole)):
        return action.name
    return action.path


def policy_paths(hcl: str) -> list[str]:
    """The paths a consumer policy written by chamberlain grants (its ``path "..."`` lines)."""
    paths = []
    for line in hcl.splitlines():
        text = line.strip()
        if text.startswith('path "'):
            paths.append(text.split('"')[1])
    return sorted(paths)


def _generator_json(generator: Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"type": generator.type}
    if generator.length is not None:
        out["length"] = generator.length
    if generator.nbytes is not None:
        out["bytes"] = generator.nbytes
    return out


def _short(commit: str | None) -> str:
    return (commit or "")[:SHORT_COMMIT]


def _update_changes(action: UpdateMetadata, observed: ObservedState | None) -> list[str] | None:
    if observed is None or action.path not in observed.secrets:
        return None
    return changed_keys(action.metadata, observed.secrets[action.path].metadata)


def describe(action: Action, observed: ObservedState | None = None) -> dict[str, Any]:
    """JSON-safe facts about one action (no values: there are none to show)."""
    out: dict[str, Any] = {"action": action_name(action), "target": action_target(action)}
    if isinstance(action, CreateSecret):
        keys = sorted(action.generators)
        out["keys"] = keys
        out["generators"] = {k: _generator_json(action.generators[k]) for k in keys}
        out["recreate"] = action.recreate
        out["detail"] = f"generate {len(keys)} key{'s' if len(keys) != 1 else ''}: " + ",".join(
            keys
        )
        if action.recreate:
            out["detail"] = "re-" + out["detail"]
        out["metadata"] = dict(action.metadata)
    elif isinstance(action, RegisterSecret):
        kind = action.metadata.get("kind", "")
        out["kind"] = kind
        out["detail"] = f"metadata only ({kind}: {_REGISTER_NOTE.get(kind, 'value not generated')})"
        out["metadata"] = dict(action.metadata)
    elif isinstance(action, UpdateMetadata):
        changes = _update_changes(action, observed)
        out["changed"] = changes
        what = ",".join(changes) if changes else "owned keys"
        out["detail"] = (
            f"metadata: {what}; intent-commit {_short(action.metadata.get('intent-commit'))}"
        )
        out["metadata"] = dict(action.metadata)
    elif isinstance(action, RetireSecret):
        out["policy"] = action.policy
        out["detail"] = f"{action.policy}: {_RETIRE_NOTE[action.policy]}"
    elif isinstance(action, WritePolicy):
        paths = policy_paths(action.hcl)
        out["paths"] = paths
        out["detail"] = f"read on {len(paths)} path{'s' if len(paths) != 1 else ''}"
    elif isinstance(action, WriteRole):
        role = action.role
        out["namespace"] = role.namespace
        out["serviceAccount"] = role.service_account
        out["policies"] = list(role.policies)
        out["detail"] = f"bind {role.namespace}/{role.service_account} -> {','.join(role.policies)}"
    elif isinstance(action, DeletePolicy):
        out["detail"] = "no declared path left for this consumer"
    else:
        out["detail"] = "consumer no longer declared"
    out["drift"] = bool(getattr(action, "drift", False))
    return out


def summary_counts(plan: Plan) -> dict[str, int]:
    counts = dict.fromkeys(ACTION_NAMES, 0)
    for action in plan.actions:
        counts[action_name(action)] += 1
    counts["unchanged"] = plan.unchanged
    counts["drift"] = len(plan.drift)
    return counts


def summary_line(plan: Plan) -> str:
    head = f"{plan.environment} at {_short(plan.commit)}"
    counts = summary_counts(plan)
    if plan.empty:
        return f"{head}: no changes, {counts['unchanged']} unchanged"
    parts = [f"{counts[name]} {name}" for name in ACTION_NAMES if counts[name]]
    parts.append(f"{counts['unchanged']} unchanged")
    parts.append(f"{counts['drift']} drift")
    return f"{head}: " + ", ".join(parts)


def _drift_by_target(plan: Plan) -> Mapping[str, list[str]]:
    found: dict[str, list[str]] = {}
    for drift in plan.drift:
        found.setdefault(drift.path, []).append(drift.kind)
    return found


def render_json(plan: Plan, observed: ObservedState | None = None) -> dict[str, Any]:
    """The plan as JSON-safe data; ``observed`` (optional) names the metadata keys an update
    changes."""
    drift = _drift_by_target(plan)
    actions = []
    for action in plan.actions:
        item = describe(action, observed)
        item["driftKinds"] = drift.get(item["target"], [])
        item["drift"] = item["drift"] or bool(item["driftKinds"])
        actions.append(item)
    return {
        "environment": plan.environment,
        "commit": plan.commit,
        "empty": plan.empty,
        "actions": actions,
        "drift": [{"target": d.path, "kind": d.kind} for d in plan.drift],
        "summary": summary_counts(plan),
        "summaryLine": summary_line(plan),
    }


def render_table(plan: Plan, observed: ObservedState | None = None) -> str:
    """Aligned columns ACTION / TARGET / DETAIL, then the summary line."""
    rows = [("ACTION", "TARGET", "DETAIL")]
    for item in render_json(plan, observed)["actions"]:
        detail = item["detail"]
        if item["driftKinds"]:
            detail += f" [drift: {','.join(item['driftKinds'])}]"
        rows.append((item["action"], item["target"], detail))
    lines = []
    if len(rows) > 1:
        width_action = max(len(r[0]) for r in rows)
        width_target = max(len(r[1]) for r in rows)
        lines = [f"{a:<{width_action}}  {t:<{width_target}}  {d}".rstrip() for a, t, d in rows]
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


__all__ = [
    "describe",
    "policy_paths",
    "render_json",
    "render_table",
    "summary_counts",
    "summary_line",
]
