"""A minimal kustomize renderer for the overlays in knative/, and tests that it means kustomize.

No kustomize or kubectl can be installed from the registries these machines reach, so the tests
render overlays with :func:`render`, which supports exactly what chamberlain's kustomizations
use, and refuses anything else (so an overlay cannot silently use a feature it ignores):

* ``resources``: files (multi-document YAML) and directories holding a kustomization;
* ``namespace``: set on every namespaced object, and on ServiceAccount subjects of
  (Cluster)RoleBindings that name none (or ``default``), as kustomize's namespace transformer;
* ``labels`` with ``pairs`` (metadata only: ``includeSelectors``/``includeTemplates`` false);
* ``images``: ``newName``/``newTag``/``digest`` for containers of Knative Services;
* ``patches``: a ``path`` or inline ``patch`` that is either a strategic-merge patch of plain
  maps (lists are replaced, ``null`` deletes a key; overlays patch list items with JSON6902) or a
  JSON6902 op list (add, replace, remove, test) applied to every object its ``target`` selects.

Cross-checked against ``kubectl kustomize`` (kustomize v5.5) when writing the overlays; see
docs/knative.md.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

Doc = dict[str, Any]

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class RenderError(ValueError):
    pass


def render(path: Path) -> list[Doc]:
    """The objects ``kubectl kustomize <path>`` would print (order aside)."""
    path = Path(path)
    kustomization = next((path / n for n in KUSTOMIZATION_NAMES if (path / n).is_file()), None)
    if kustomization is None:
        raise RenderError(f"{path}: no kustomization.yaml")
    config = yaml.safe_load(kustomization.read_text()) or {}
    unknown = set(config) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{kustomization}: unsupported fields {sorted(unknown)}")
    docs: list[Doc] = []
    for resource in config.get("resources") or []:
        target = path / resource
        docs += render(target) if target.is_dir() else _load(target)
    for patch in config.get("patches") or []:
        _apply_patch(path, patch, docs)
    for image in config.get("images") or []:
        _set_image(image, docs)
    labels = {}
    for entry in config.get("labels") or []:
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise RenderError(f"{kustomization}: labels only on metadata are supported")
        labels.update(entry["pairs"])
    for doc in docs:
        if labels:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        if config.get("namespace"):
            _set_namespace(doc, config["namespace"])
    _check_unique(docs, path)
    return docs


def _load(path: Path) -> list[Doc]:
    if not path.is_file():
        raise RenderError(f"{path}: no such resource")
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _check_unique(docs: list[Doc], where: Path) -> None:
    seen: set[tuple[str, str, str | None]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        if key in seen:
            raise RenderError(f"{where}: {key} is declared twice")
        seen.add(key)


def _set_namespace(doc: Doc, namespace: str) -> None:
    if doc["kind"] not in CLUSTER_SCOPED:
        doc["metadata"]["namespace"] = namespace
    if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject.get("namespace") in (
                None,
                "default",
            ):
                subject["namespace"] = namespace


def _set_image(image: Doc, docs: list[Doc]) -> None:
    for container in _containers(docs):
        name, _, _tag = container["image"].partition("@")[0].rpartition(":")
        if not name or "/" in _tag:  # no tag at all: the whole string is the name
            name = container["image"].partition("@")[0]
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new_name}@{image['digest']}"
        else:
            container["image"] = f"{new_name}:{image.get('newTag', _tag or 'latest')}"


def _containers(docs: list[Doc]) -> Iterator[Doc]:
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        yield from spec.get("containers") or []


def _apply_patch(base: Path, entry: Doc, docs: list[Doc]) -> None:
    text = (base / entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    target = entry.get("target")
    if isinstance(patch, list):
        if target is None:
            raise RenderError(f"{base}: a JSON6902 patch needs a target")
        matched = [d for d in docs if _selected(d, target)]
        if not matched:
            raise RenderError(f"{base}: patch target {target} selects nothing")
        for doc in matched:
            _json6902(doc, patch)
        return
    if not isinstance(patch, dict) or "kind" not in patch:
        raise RenderError(f"{base}: a strategic-merge patch must be one object with a kind")
    selector = target or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    matched = [d for d in docs if _selected(d, selector)]
    if len(matched) != 1:
        raise RenderError(f"{base}: strategic-merge patch matches {len(matched)} objects")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    merged = _merge(matched[0], body)
    matched[0].clear()
    matched[0].update(merged)


def _selected(doc: Doc, target: Doc) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    checks = {
        "group": group,
        "version": version,
        "kind": doc["kind"],
        "name": doc["metadata"]["name"],
        "namespace": doc["metadata"].get("namespace"),
    }
    for key, wanted in target.items():
        if key not in checks:
            raise RenderError(f"unsupported patch target field {key!r}")
        if not re.fullmatch(str(wanted), str(checks[key] or "")):
            return False
    return True


def _merge(into: Any, patch: Any) -> Any:
    if not isinstance(into, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(into)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(into.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _json6902(doc: Doc, ops: list[Doc]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[index]
            elif kind == "test":
                if node[index] != op["value"]:
                    raise RenderError(f"test failed at {op['path']}")
            else:
                raise RenderError(f"unsupported JSON6902 op {kind!r}")
            continue
        if kind in ("replace", "remove", "test") and last not in node:
            raise RenderError(f"{kind}: {op['path']} does not exist in {doc['metadata']['name']}")
        if kind in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[last]
        elif kind == "test":
            if node[last] != op["value"]:
                raise RenderError(f"test failed at {op['path']}")
        else:
            raise RenderError(f"unsupported JSON6902 op {kind!r}")


# ------------------------------------------------------------------- the renderer's own tests


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


BASE = {
    "base/kustomization.yaml": "resources: [objects.yaml]\n",
    "base/objects.yaml": """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: fn, labels: {a: "1"}}
spec:
  template:
    metadata: {annotations: {autoscaling.knative.dev/max-scale: "3"}}
    spec:
      containers: [{name: function, image: "example.org/app:1.0", env: [{name: X, value: "1"}]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: crb}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cr}
subjects: [{kind: ServiceAccount, name: sa}, {kind: ServiceAccount, name: other, namespace: x}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {A: "1", B: "2"}
""",
}


def test_overlay_sets_namespace_labels_images_and_patches(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            **BASE,
            "over/kustomization.yaml": """\
namespace: team
resources: [../base]
labels: [{pairs: {stage: dev}}]
images: [{name: example.org/app, newTag: "2.0"}]
patches:
  - path: cfg.yaml
  - target: {kind: Service, name: fn}
    patch: |-
      - op: replace
        path: /spec/template/metadata/annotations/autoscaling.knative.dev~1max-scale
        value: "1"
      - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: Y, value: "2"}}
""",
            "over/cfg.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
            "data: {B: '3', A: null}\n",
        },
    )
    docs = {d["kind"]: d for d in render(root / "over")}
    service, crb, cfg = docs["Service"], docs["ClusterRoleBinding"], docs["ConfigMap"]
    assert service["metadata"] == {
        "name": "fn",
        "labels": {"a": "1", "stage": "dev"},
        "namespace": "team",
    }
    template = service["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "1"
    container = template["spec"]["containers"][0]
    assert container["image"] == "example.org/app:2.0"
    assert container["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert "namespace" not in crb["metadata"]
    assert [s.get("namespace") for s in crb["subjects"]] == ["team", "x"]
    assert cfg["data"] == {"B": "3"}


def test_unsupported_fields_and_dangling_patches_are_refused(tmp_path: Path) -> None:
    root = _write(
        tmp_path, {**BASE, "a/kustomization.yaml": "resources: [../base]\nnamePrefix: x-\n"}
    )
    with pytest.raises(RenderError, match="unsupported fields"):
        render(root / "a")
    _write(
        tmp_path,
        {
            "b/kustomization.yaml": "resources: [../base]\npatches:\n"
            "  - target: {kind: Broker}\n    patch: '[{op: remove, path: /spec}]'\n"
        },
    )
    with pytest.raises(RenderError, match="selects nothing"):
        render(root / "b")
    _write(
        tmp_path,
        {
            "c/kustomization.yaml": "resources: [../base]\npatches:\n"
            "  - target: {kind: ConfigMap}\n    patch: '[{op: replace, path: /data/Z, value: q}]'\n"
        },
    )
    with pytest.raises(RenderError, match="does not exist"):
        render(root / "c")
