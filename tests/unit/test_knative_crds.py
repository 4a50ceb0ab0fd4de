"""Every object in knative/ and in each rendered overlay validates against the real CRD schemas.

The CRDs in ``shared/reference/knative-crds/`` carry OpenAPI v3 structural schemas; the API
server (with kubectl's default strict field validation) rejects unknown fields where a schema
does not preserve them. :func:`json_schema` converts such a schema into JSON Schema for
``jsonschema``: ``nullable`` -> a ``null`` type, ``x-kubernetes-int-or-string`` -> integer or
string, ``x-kubernetes-embedded-resource`` -> apiVersion/kind/metadata allowed, and every object
with declared properties and no ``x-kubernetes-preserve-unknown-fields`` closed
(``additionalProperties: false``). Top-level ``metadata`` is checked as ObjectMeta.

Kinds with no CRD in the reference set are checked for their shape only (apiVersion, kind,
DNS-1123 name, string labels, and for RBAC the rule/binding structure): they are listed in
:data:`SHAPE_ONLY_KINDS`, and any other kind fails the test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_knative_render import render

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"
CRDS = ROOT.parent / "shared" / "reference" / "knative-crds"

DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": DNS1123, "maxLength": 253},
        "namespace": {"type": "string", "pattern": DNS1123, "maxLength": 63},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}
KUBERNETES_VERBS = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
]
_RULE = {
    "type": "object",
    "required": ["apiGroups", "resources", "verbs"],
    "properties": {
        "apiGroups": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "resources": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "resourceNames": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "verbs": {
            "type": "array",
            "items": {"enum": KUBERNETES_VERBS},
            "minItems": 1,
            "uniqueItems": True,
        },
    },
    "additionalProperties": False,
}
_BINDING = {
    "required": ["roleRef", "subjects"],
    "properties": {
        "roleRef": {
            "type": "object",
            "required": ["apiGroup", "kind", "name"],
            "properties": {
                "apiGroup": {"const": "rbac.authorization.k8s.io"},
                "kind": {"enum": ["Role", "ClusterRole"]},
                "name": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "subjects": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["kind", "name"],
                "properties": {
                    "kind": {"const": "ServiceAccount"},
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
    },
}
_ROLE = {"required": ["rules"], "properties": {"rules": {"type": "array", "items": _RULE}}}
_DATA = {"properties": {"data": STRING_MAP}}
SHAPE_ONLY_KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "ServiceAccount"): {},
    ("v1", "ConfigMap"): _DATA,
    ("v1", "Namespace"): {},
    ("rbac.authorization.k8s.io/v1", "Role"): _ROLE,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): _ROLE,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _BINDING,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _BINDING,
    # Knative eventing-github's CRD is not in the reference set: the example's shape only.
    ("sources.knative.dev/v1alpha1", "GitHubSource"): {
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["eventTypes", "ownerAndRepository", "sink"],
            }
        },
    },
}
"""Kinds without a CRD in shared/reference: checked for shape, as the issue allows."""


def json_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema (draft 7) with Kubernetes' semantics."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = json_schema(value) if isinstance(value, dict) else value
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = json_schema(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "description", "format"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    closed = "properties" in out and "additionalProperties" not in out
    if closed and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema, for every served version of every reference CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = json_schema(version["schema"]["openAPIV3Schema"])
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["properties"]["metadata"] = OBJECT_META
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validator_for(doc: dict[str, Any]) -> jsonschema.Draft7Validator:
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    schema = crd_schemas().get(key)
    if schema is None:
        shape = SHAPE_ONLY_KINDS.get(key)
        if shape is None:
            raise AssertionError(f"{key} has no CRD in the reference set and no shape check")
        schema = {
            **shape,
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", *shape.get("required", [])],
            "properties": {**shape.get("properties", {}), "metadata": OBJECT_META},
        }
    return jsonschema.Draft7Validator(schema)


def problems(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator_for(doc).iter_errors(doc)
    ]


def kustomizations() -> Iterator[Path]:
    """knative/ itself and every directory under it that holds a kustomization."""
    for path in sorted(KNATIVE.rglob("kustomization.yaml")):
        yield path.parent


def manifest_files() -> Iterator[Path]:
    for path in sorted(KNATIVE.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield path


# ------------------------------------------------------------------------------------ tests


def test_the_converter_closes_objects_and_honours_kubernetes_extensions() -> None:
    schema = json_schema(
        {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "maybe": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "inner": {"type": "object", "properties": {"a": {"type": "integer"}}},
            },
        }
    )
    check = jsonschema.Draft7Validator(schema)
    assert check.is_valid({"port": 80, "maybe": None, "free": {"x": 1}, "inner": {"a": 1}})
    assert check.is_valid({"port": "http"})
    assert not check.is_valid({"port": 1.5})
    assert not check.is_valid({"typo": 1})
    assert not check.is_valid({"inner": {"b": 1}})


def test_the_crd_schemas_reject_what_the_api_server_would() -> None:
    trigger = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t"},
        "spec": {"broker": "default", "subscriber": {"ref": {"kind": "Service", "name": "x"}}},
    }
    assert problems(trigger) == []
    assert problems({**trigger, "spec": {**trigger["spec"], "delivery": {"retry": "five"}}})
    assert problems({**trigger, "metadata": {"name": "Not_DNS"}})
    services = (KNATIVE / "base" / "functions" / "services.yaml").read_text()
    service = next(yaml.safe_load_all(services))
    container = service["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["memroy"] = "1Gi"
    assert problems(service) == []  # resources limits are a free map in the CRD...
    container["imagePullPolicy"] = 3
    container["readinessProbe"]["httpGet"]["pth"] = "/x"
    assert len(problems(service)) == 2  # ...but typos and wrong types elsewhere are caught


@pytest.mark.parametrize("path", list(manifest_files()), ids=lambda p: str(p.relative_to(KNATIVE)))
def test_every_manifest_file_validates(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no object"
    for doc in docs:
        name = doc.get("metadata", {}).get("name")
        assert problems(doc) == [], f"{doc.get('kind')} {name} in {path}"


@pytest.mark.parametrize(
    "directory", list(kustomizations()), ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_rendered_kustomization_validates(directory: Path) -> None:
    docs = render(directory)
    assert docs
    for doc in docs:
        assert problems(doc) == [], f"{doc['kind']} {doc['metadata']['name']} from {directory}"


def test_overlays_exist_for_dev_prod_and_a_kafka_broker() -> None:
    rendered = {p.name: render(p) for p in (KNATIVE / "overlays").iterdir() if p.is_dir()}
    assert set(rendered) >= {"dev", "prod", "kafka"}

    def broker(name: str) -> dict[str, Any]:
        return next(d for d in rendered[name] if d["kind"] == "Broker")

    kafka = broker("kafka")
    assert kafka["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    assert kafka["spec"]["config"]["name"] == "kafka-broker-config"
    assert kafka["spec"]["delivery"] == broker("prod")["spec"]["delivery"]
    assert "annotations" not in broker("prod")["metadata"]  # the cluster's default class
    assert broker("dev")["spec"]["delivery"]["retry"] < broker("prod")["spec"]["delivery"]["retry"]
    for name in ("dev", "prod", "kafka"):
        namespaces = {d["metadata"].get("namespace") for d in rendered[name]}
        namespaces.discard(None)  # cluster-scoped objects
        assert len(namespaces) == 1, name
        declared = [d["metadata"]["name"] for d in rendered[name] if d["kind"] == "Namespace"]
        assert declared == sorted(namespaces), name
    assert render(KNATIVE) == rendered["prod"]  # `kubectl apply -k knative/` is production
