"""The event catalog is complete: nothing is produced or consumed without a schema and example.

Scans the code (``src/``, ``functions/``) and the Knative manifests (``knative/``) for every
string that names an event type, so a new type, or a typo in a Trigger filter, fails here
instead of producing events that no consumer can validate.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from chamberlain.model import event_types
from chamberlain.model.events import known_types, schema_dir, schema_for

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
EXAMPLES = EVENTS / "examples"

TYPE_PATTERNS = (
    re.compile(r"dev\.chamberlain\.[a-z0-9.-]+\.v[0-9]+"),
    re.compile(r"dev\.knative\.[a-z0-9-]+(?:\.[a-z0-9-]+)+"),
    re.compile(r"com\.github\.[a-z_]+"),
)
# Property names that could only exist to carry a secret value.
VALUE_NAMES = {
    "value",
    "values",
    "secret",
    "password",
    "passphrase",
    "token",
    "plaintext",
    "privatekey",
    "clientsecret",
    "credential",
    "credentials",
    "key",
    "unsealkey",
    "unsealkeys",
    "roottoken",
}


def _types_in(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in TYPE_PATTERNS:
        found.update(m.group(0).rstrip(".") for m in pattern.finditer(text))
    return found


def _python_strings(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _yaml_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _yaml_strings(key)
            yield from _yaml_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_strings(item)


def _yaml_documents(root: Path) -> Iterator[tuple[Path, Any]]:
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                yield path, doc


def scan_types(root: Path) -> dict[str, set[str]]:
    """Every event type named under ``root``: type -> files naming it."""
    found: dict[str, set[str]] = {}

    def note(types: set[str], where: Path) -> None:
        for type_ in types:
            found.setdefault(type_, set()).add(str(where.relative_to(root)))

    for sub in ("src", "functions"):
        for path in sorted((root / sub).rglob("*.py")) if (root / sub).is_dir() else []:
            for text in _python_strings(path):
                note(_types_in(text), path)
    if (root / "knative").is_dir():
        for path, doc in _yaml_documents(root / "knative"):
            for text in _yaml_strings(doc):
                note(_types_in(text), path)
    return found


def _trigger_filters(doc: Any) -> Iterator[tuple[str, str]]:
    """(dialect, value) for each type filter of a Trigger: attributes, exact, prefix, suffix."""
    if not isinstance(doc, dict) or doc.get("kind") != "Trigger":
        return
    spec = doc.get("spec") or {}
    attributes = (spec.get("filter") or {}).get("attributes") or {}
    if "type" in attributes:
        yield "exact", str(attributes["type"])

    def walk(node: Any) -> Iterator[tuple[str, str]]:
        if isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for dialect, body in node.items():
                if dialect in ("exact", "prefix", "suffix") and isinstance(body, dict):
                    if "type" in body:
                        yield dialect, str(body["type"])
                else:
                    yield from walk(body)

    yield from walk(spec.get("filters") or [])


def test_every_type_named_in_code_or_manifests_has_a_schema_and_an_example() -> None:
    found = scan_types(REPO)
    known = known_types()
    missing_schema = {t: sorted(w) for t, w in found.items() if t not in known}
    missing_example = sorted(t for t in found if not (EXAMPLES / f"{t}.json").is_file())
    assert missing_schema == {}, f"types used without a schema in events/: {missing_schema}"
    assert missing_example == [], f"types without events/examples/<type>.json: {missing_example}"


def test_the_scanner_sees_every_declared_constant() -> None:
    # event_types.py lives under src/, so a scanner that misses it is broken.
    assert set(scan_types(REPO)) >= event_types.ALL_TYPES


def test_the_scanner_catches_an_undeclared_type(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "step.py").write_text(
        'REPLY = "dev.chamberlain.secret.vanished.v1"\nOTHER = "dev.knative.sources.pingg"\n'
    )
    (tmp_path / "knative").mkdir()
    (tmp_path / "knative" / "trigger.yaml").write_text(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n"
        "spec:\n  broker: default\n  filters:\n"
        "    - exact: {type: dev.chamberlain.lease.expired.v1}\n"
        "  subscriber: {uri: http://x}\n"
    )
    found = scan_types(tmp_path)
    assert set(found) == {
        "dev.chamberlain.secret.vanished.v1",
        "dev.knative.sources.pingg",
        "dev.chamberlain.lease.expired.v1",
    }
    assert not set(found) & known_types()


def test_trigger_filters_select_known_types() -> None:
    if not (REPO / "knative").is_dir():
        pytest.skip("no knative/ manifests yet")
    known = known_types()
    problems: list[str] = []
    for path, doc in _yaml_documents(REPO / "knative"):
        for dialect, value in _trigger_filters(doc):
            if dialect == "exact":
                ok = value in known
            elif dialect == "prefix":
                ok = any(t.startswith(value) for t in known)
            else:
                ok = any(t.endswith(value) for t in known)
            if not ok:
                problems.append(f"{path.relative_to(REPO)}: {dialect} type {value!r}")
    assert problems == []


def test_constants_and_schemas_agree() -> None:
    assert known_types() == event_types.ALL_TYPES
    assert not event_types.CHAMBERLAIN_TYPES & event_types.EXTERNAL_TYPES
    assert event_types.PUSH_TYPES <= event_types.ALL_TYPES


def test_schemas_load_from_the_checkout() -> None:
    assert schema_dir() == EVENTS


def test_every_schema_has_an_example_and_every_example_a_schema() -> None:
    schemas = {p.name.removesuffix(".schema.json") for p in EVENTS.glob("*.schema.json")}
    schemas.discard("_defs")
    examples = {p.stem for p in EXAMPLES.glob("*.json")}
    assert schemas == examples
    for name in examples:
        document = json.loads((EXAMPLES / f"{name}.json").read_text())
        assert document["type"] == name
        assert document["specversion"] == "1.0"


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.schema.json")), ids=lambda p: p.name)
def test_every_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://chamberlain.dev/events/{path.name}"


def _object_schemas(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _object_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _object_schemas(value, f"{where}/{index}")


@pytest.mark.parametrize("type_", sorted(event_types.CHAMBERLAIN_TYPES))
def test_chamberlain_schemas_are_closed_and_have_no_value_fields(type_: str) -> None:
    defs = json.loads((EVENTS / "_defs.schema.json").read_text())
    for where, obj in [*_object_schemas(schema_for(type_)), *_object_schemas(defs)]:
        closed = obj.get("additionalProperties")
        assert closed is False or isinstance(closed, dict), f"{type_} {where} is open"
        names = {
            name.lower().replace("_", "").replace("-", "") for name in obj.get("properties", {})
        }
        assert not names & VALUE_NAMES, f"{type_} {where} has a value-like field"


def test_readme_lists_every_type() -> None:
    readme = (EVENTS / "README.md").read_text()
    missing = sorted(t for t in known_types() if f"`{t}`" not in readme)
    assert missing == []
