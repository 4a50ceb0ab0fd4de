"""render_table / render_json: what `chamberlain plan` prints; names and specs, never values."""

from __future__ import annotations

import dataclasses
import json

from chamberlain.planner.actions import Scope
from chamberlain.planner.desired import desired_state
from chamberlain.planner.issue import plan
from chamberlain.planner.render import render_json, render_table
from tests.unit.test_planner_support import (
    BASE,
    BILLING_PATH,
    C1,
    C2,
    EMPTY,
    REDIS_PATH,
    apply_plan,
    load,
    with_files,
)

ALL = Scope.everything()
# Words a value could be made of if one ever leaked into a plan view.
VALUE_WORDS = ("value", "values", "data", "stringData", "secret_value")


def _first_plan():
    return plan(desired_state(load(BASE), "prod", C1), EMPTY, ALL)


def _walk_keys(obj: object) -> set[str]:
    if isinstance(obj, dict):
        keys = set(obj)
        for value in obj.values():
            keys |= _walk_keys(value)
        return keys
    if isinstance(obj, list):
        return set().union(*(_walk_keys(v) for v in obj)) if obj else set()
    return set()


def test_table_lists_every_action_with_a_readable_detail() -> None:
    p = _first_plan()
    table = render_table(p)
    lines = table.splitlines()
    assert lines[0].split() == ["ACTION", "TARGET", "DETAIL"]
    assert len([line for line in lines[1:] if line.strip()]) == len(p.actions) + 1
    billing = next(line for line in lines if BILLING_PATH in line)
    assert billing.split()[0] == "create"
    assert "generate 2 keys: password,username" in billing
    assert any(line.startswith("write-role") and "bind ops/auditor" in line for line in lines)
    assert "read on 2 paths" in next(
        line for line in lines if "consumer-ops-auditor" in line and "write-policy" in line
    )
    assert lines[-1] == (
        f"prod at {C1[:12]}: 2 create, 2 register, 4 write-policy, 4 write-role, "
        "0 unchanged, 0 drift"
    )


def test_json_carries_the_same_information() -> None:
    p = _first_plan()
    data = render_json(p)
    json.dumps(data)  # JSON-safe
    assert data["environment"] == "prod"
    assert data["commit"] == C1
    assert data["empty"] is False
    assert [a["target"] for a in data["actions"]] == [
        line.split()[1] for line in render_table(p).splitlines()[1 : len(p.actions) + 1]
    ]
    create = data["actions"][0]
    assert create["action"] == "create"
    assert create["generators"] == {
        "password": {"type": "password", "length": 32},
        "username": {"type": "alphanumeric", "length": 16},
    }
    assert data["summary"] == {
        "create": 2,
        "register": 2,
        "update": 0,
        "retire": 0,
        "write-policy": 4,
        "delete-policy": 0,
        "write-role": 4,
        "delete-role": 0,
        "unchanged": 0,
        "drift": 0,
    }


def test_empty_plan_says_in_sync() -> None:
    observed = apply_plan(EMPTY, _first_plan())
    p = plan(desired_state(load(BASE), "prod", C2), observed, ALL)
    assert render_table(p) == f"prod at {C2[:12]}: no changes, 4 unchanged\n"
    assert render_json(p)["actions"] == []
    assert render_json(p)["empty"] is True


def test_drift_retire_and_changed_keys_are_shown() -> None:
    observed = apply_plan(EMPTY, _first_plan())
    meta = {**observed.secrets[BILLING_PATH].metadata, "owner": "tampered", "purpose": "x"}
    secrets = {
        **observed.secrets,
        BILLING_PATH: dataclasses.replace(observed.secrets[BILLING_PATH], metadata=meta),
    }
    observed = dataclasses.replace(observed, secrets=secrets)
    p = plan(
        desired_state(load(with_files({"secrets/redis.yaml": None})), "prod", C2), observed, ALL
    )
    table = render_table(p, observed)
    update = next(line for line in table.splitlines() if line.startswith("update"))
    assert "metadata: owner,purpose" in update
    assert "[drift: metadata-changed]" in update
    retire = next(line for line in table.splitlines() if line.startswith("retire"))
    assert REDIS_PATH in retire and "soft-delete" in retire
    assert table.rstrip().endswith("1 drift")
    data = render_json(p, observed)
    assert data["drift"] == [{"target": BILLING_PATH, "kind": "metadata-changed"}]
    assert next(a for a in data["actions"] if a["action"] == "update")["changed"] == [
        "owner",
        "purpose",
    ]


def test_views_hold_no_value() -> None:
    """A plan has no values to show; the views add none and name no value field."""
    observed = apply_plan(EMPTY, _first_plan())
    p = plan(
        desired_state(load(with_files({"secrets/redis.yaml": None})), "prod", C2), observed, ALL
    )
    for view in (_first_plan(), p):
        keys = _walk_keys(render_json(view, observed))
        assert not keys & set(VALUE_WORDS)
        text = render_table(view, observed) + json.dumps(render_json(view, observed))
        assert "capabilities" not in text  # policy text summarised, not dumped
