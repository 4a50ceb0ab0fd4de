"""knative/ means what the packaging table and the code say: routing, producers, RBAC, sizing.

The table (``chamberlain.packaging.FUNCTIONS``) is checked three ways: the files rendered from
it are current; the hand-written Triggers route exactly the types it lists; and it is checked
against the code: the event types each step module makes, and the Kubernetes API calls each
step can reach (static import closure of its factory module). Steps are taken from
``chamberlain.steps.registry.STEP_FACTORIES``, so the checks cover exactly the steps that exist.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from chamberlain import packaging
from chamberlain.model import event_types as T
from chamberlain.model.events import known_types
from chamberlain.packaging import FUNCTIONS, FunctionSpec
from chamberlain.runtime.local.manifests import load_manifests
from chamberlain.steps.registry import STEP_FACTORIES
from tests.unit.test_knative_render import render

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
KNATIVE = ROOT / "knative"
BASE = KNATIVE / "base"
INGRESS_MODULE = "chamberlain.ingress.webhook_app"
KUBE_MODULE = "chamberlain.adapters.kube"

Doc = dict[str, Any]


@functools.cache
def base_docs() -> tuple[Doc, ...]:
    return tuple(render(BASE))


def of_kind(kind: str, docs: Iterable[Doc] | None = None) -> list[Doc]:
    return [d for d in (base_docs() if docs is None else docs) if d["kind"] == kind]


def services() -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in of_kind("Service")}


def triggers() -> list[Doc]:
    return of_kind("Trigger")


def code_module(spec: FunctionSpec) -> str | None:
    """The module that holds a function's code, if it exists yet."""
    if spec.role == "ingress":
        return INGRESS_MODULE
    target = STEP_FACTORIES.get(spec.name)
    return None if target is None else target.partition(":")[0]


def landed() -> list[FunctionSpec]:
    return [spec for spec in FUNCTIONS.values() if code_module(spec) is not None]


# ------------------------------------------------------------------------- table <-> files


def test_rendered_files_are_current() -> None:
    stale = packaging.stale_files(ROOT)
    assert stale == [], f"run `python -m chamberlain.packaging` (stale: {stale})"


def test_every_registered_step_has_a_table_entry_a_service_and_a_function_dir() -> None:
    for name in STEP_FACTORIES:
        spec = packaging.function(name)
        assert spec.role in ("step", "dead-letter")
        assert name in services()
        assert (ROOT / "functions" / name / "func.yaml").is_file()
        assert (ROOT / "functions" / name / "function" / "func.py").is_file()
    assert {s.name for s in FUNCTIONS.values() if s.role == "ingress"} == {"git-ingress"}
    assert packaging.dead_letter_sink().name in STEP_FACTORIES


def test_one_knative_service_per_function_sized_from_the_table() -> None:
    assert set(services()) == set(FUNCTIONS)
    images = set()
    for name, service in services().items():
        spec, sizing = FUNCTIONS[name], FUNCTIONS[name].sizing
        template = service["spec"]["template"]
        pod = template["spec"]
        (container,) = pod["containers"]
        images.add(container["image"])
        annotations = template["metadata"]["annotations"]
        assert annotations["autoscaling.knative.dev/min-scale"] == str(sizing.min_scale)
        assert annotations["autoscaling.knative.dev/max-scale"] == str(sizing.max_scale)
        assert 0 <= sizing.min_scale <= sizing.max_scale
        assert pod["containerConcurrency"] == sizing.container_concurrency
        assert pod["timeoutSeconds"] == sizing.timeout_s
        assert pod["serviceAccountName"] == spec.service_account == f"chamberlain-{name}"
        env = {e["name"]: e for e in container["env"]}
        assert env["CHAMBERLAIN_FUNCTION"]["value"] == name
        assert env["GUNICORN_THREADS"]["value"] == str(sizing.container_concurrency)
        assert container["resources"]["limits"]["memory"] == sizing.memory_limit
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        visibility = service["metadata"]["labels"].get("networking.knative.dev/visibility")
        assert (visibility is None) == spec.public
    assert len(images) == 1  # one image runs every function
    assert [n for n, s in FUNCTIONS.items() if s.public] == ["git-ingress"]


# ---------------------------------------------------------------------------------- routing


def test_triggers_route_exactly_what_the_table_says_each_function_consumes() -> None:
    routed = {
        (
            t["spec"]["subscriber"]["ref"]["name"],
            tuple(sorted(t["spec"]["filter"]["attributes"].items())),
        )
        for t in triggers()
    }
    declared = {
        (spec.name, tuple(sorted(c.attributes.items())))
        for spec in FUNCTIONS.values()
        for c in spec.consumes
    }
    assert routed == declared
    assert len(routed) == len(triggers())  # no two Triggers for the same route
    for trigger in triggers():
        assert trigger["metadata"]["name"].startswith(trigger["spec"]["subscriber"]["ref"]["name"])


def test_every_subscriber_and_the_dead_letter_sink_exist() -> None:
    (broker,) = of_kind("Broker")
    refs = [t["spec"]["subscriber"]["ref"] for t in triggers()]
    refs.append(broker["spec"]["delivery"]["deadLetterSink"]["ref"])
    for ref in refs:
        assert (ref["apiVersion"], ref["kind"]) == ("serving.knative.dev/v1", "Service")
        assert ref["name"] in services(), f"no Service {ref['name']!r}"
    assert refs[-1]["name"] == packaging.dead_letter_sink().name
    for trigger in triggers():
        assert trigger["spec"]["broker"] == broker["metadata"]["name"] == packaging.BROKER


def test_the_local_runtime_reads_the_same_routes() -> None:
    local = load_manifests(BASE)
    assert {(t.name, t.subscriber) for t in local.triggers} == {
        (t["metadata"]["name"], t["spec"]["subscriber"]["ref"]["name"]) for t in triggers()
    }
    assert local.broker().delivery is not None
    assert local.broker().delivery.dead_letter_sink == packaging.dead_letter_sink().name


def _readme_producers() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "events" / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([^`]+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def _source_sends(doc: Doc, type_: str, task: str | None) -> bool:
    """Whether a source object in knative/ sends ``type_`` (with ``task``) to the Broker."""
    kind = doc["kind"]
    sink = doc["spec"]["sink"]["ref"]
    if (sink["kind"], sink["name"]) != ("Broker", packaging.BROKER):
        return False
    if kind == "PingSource":
        extensions = doc["spec"].get("ceOverrides", {}).get("extensions", {})
        return type_ == T.PING and extensions.get("task") == task
    if kind == "ApiServerSource":
        return type_ in (T.APISERVER_ADD, T.APISERVER_DELETE) and doc["spec"]["mode"] == "Resource"
    if kind == "GitHubSource":
        return type_ == T.KNATIVE_GITHUB_PUSH and "push" in doc["spec"]["eventTypes"]
    return False


def test_every_consumed_type_has_a_producer_or_a_documented_external_source() -> None:
    produced = {t for spec in FUNCTIONS.values() for t in spec.produces}
    readme = _readme_producers()
    sources = [
        d
        for path in [BASE, KNATIVE / "examples" / "github-source"]
        for d in render(path)
        if d["kind"] in ("PingSource", "ApiServerSource", "GitHubSource")
    ]
    for spec in FUNCTIONS.values():
        for consumed in spec.consumes:
            if consumed.type in produced:
                continue
            external = packaging.EXTERNAL_SOURCES.get(consumed.type)
            assert external is not None, f"nothing produces {consumed.type} for {spec.name}"
            assert external.producer.lower() in readme[consumed.type].lower()
            if external.manifest_kind is not None:
                assert any(
                    d["kind"] == external.manifest_kind
                    and _source_sends(d, consumed.type, consumed.task)
                    for d in sources
                ), f"no {external.manifest_kind} in knative/ sends {consumed.attributes}"


def test_tables_name_only_catalogued_event_types() -> None:
    catalog = set(known_types())
    for spec in FUNCTIONS.values():
        assert {c.type for c in spec.consumes} <= catalog
        assert set(spec.produces) <= catalog
    assert set(packaging.EXTERNAL_SOURCES) <= catalog


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "literal"`` / ``NAME = getattr(T, "X", "literal")`` strings."""
    found = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if not isinstance(target, ast.Name) or value is None:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = value.value
        elif (
            isinstance(value, ast.Call)
            and getattr(value.func, "id", "") == "getattr"
            and len(value.args) == 3
            and all(isinstance(a, ast.Constant) for a in value.args[1:])
        ):
            name, default = (a.value for a in value.args[1:])  # type: ignore[attr-defined]
            found[target.id] = getattr(T, name, default)
    return found


def _made_types(module: str) -> set[str]:
    """Event types a module passes to make_event (``T.<NAME>``, module constants, literals)."""
    tree = ast.parse(_module_file(module).read_text())
    constants = _module_constants(tree)
    made = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        callee = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if callee != "make_event":
            continue
        first = node.args[0]
        if isinstance(first, ast.Attribute) and hasattr(T, first.attr):
            made.add(getattr(T, first.attr))
        elif isinstance(first, ast.Name) and first.id in constants:
            made.add(constants[first.id])
        elif isinstance(first, ast.Name) and hasattr(T, first.id):
            made.add(getattr(T, first.id))
        elif isinstance(first, ast.Constant):
            made.add(str(first.value))
        else:
            raise AssertionError(f"{module}: make_event with a computed type; declare it plainly")
    return made


@pytest.mark.parametrize("spec", landed(), ids=lambda s: s.name)
def test_the_table_declares_exactly_the_types_a_function_makes(spec: FunctionSpec) -> None:
    module = code_module(spec)
    assert module is not None
    assert _made_types(module) == set(spec.produces)


def test_no_reply_re_enters_its_own_trigger_and_no_chain_of_replies_loops() -> None:
    consumers: dict[str, set[str]] = {}
    for trigger in triggers():
        attributes = trigger["spec"]["filter"]["attributes"]
        if set(attributes) == {"type"}:  # replies carry no `task`: only type-only filters match
            consumers.setdefault(attributes["type"], set()).add(
                trigger["spec"]["subscriber"]["ref"]["name"]
            )
    edges = {
        name: {
            c
            for t in spec.produces
            for c in consumers.get(t, set())
            if not (c == name and t in spec.feeds_itself)  # stated, one-hop exceptions
        }
        for name, spec in FUNCTIONS.items()
    }
    for spec in FUNCTIONS.values():
        assert set(spec.feeds_itself) <= set(spec.produces)
        assert not spec.feeds_itself or spec.needs_sink  # posted to K_SINK, never a reply
        for type_ in spec.feeds_itself:
            assert spec.name in consumers.get(type_, set()), f"{spec.name}: stale exception"
    for name in FUNCTIONS:
        assert name not in edges[name], f"{name} consumes a type it produces"
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"reply loop: {' -> '.join((*path, node))}"
        if node in done:
            return
        for nxt in edges[node]:
            visit(nxt, (*path, node))
        done.add(node)

    for name in FUNCTIONS:
        visit(name, ())


# -------------------------------------------------------------------------------------- RBAC


def _grants(rules: Iterable[Doc]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _granted_to(account: str, docs: Iterable[Doc]) -> dict[str, list[Doc]]:
    """Rules bound to a ServiceAccount, by role kind."""
    docs = list(docs)
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    bound: dict[str, list[Doc]] = {"Role": [], "ClusterRole": []}
    for binding in docs:
        if not binding["kind"].endswith("RoleBinding"):
            continue
        if any(s["name"] == account for s in binding["subjects"]):
            assert len(binding["subjects"]) == 1, "a binding shared between identities"
            role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
            assert (binding["kind"] == "RoleBinding") == (role["kind"] == "Role")
            bound[role["kind"]] += role["rules"]
    return bound


@pytest.mark.parametrize("spec", list(FUNCTIONS.values()), ids=lambda s: s.name)
def test_rbac_grants_a_function_exactly_its_table_rules(spec: FunctionSpec) -> None:
    docs = base_docs()
    accounts = {d["metadata"]["name"] for d in of_kind("ServiceAccount", docs)}
    assert spec.service_account in accounts
    bound = _granted_to(spec.service_account, docs)
    namespaced = [r for r in spec.kubernetes if not r.cluster_wide]
    cluster = [r for r in spec.kubernetes if r.cluster_wide]
    assert _grants(bound["Role"]) == {g for r in namespaced for g in r.grants()}
    assert _grants(bound["ClusterRole"]) == {g for r in cluster for g in r.grants()}
    for rule in bound["Role"] + bound["ClusterRole"]:
        assert "*" not in str(rule), "wildcards grant what no step uses"
    names = [tuple(r.get("resourceNames", ())) for r in bound["Role"] + bound["ClusterRole"]]
    assert sorted(names) == sorted(r.resource_names for r in spec.kubernetes)
    if not spec.talks_to_kubernetes:
        assert bound == {"Role": [], "ClusterRole": []}


def test_event_sources_get_only_what_they_watch() -> None:
    (source,) = of_kind("ApiServerSource")
    account = source["spec"]["serviceAccountName"]
    assert account == packaging.APISERVER_SOURCE_ACCOUNT
    bound = _granted_to(account, base_docs())
    expected = {g for r in packaging.SOURCE_ACCOUNTS[account] for g in r.grants()}
    assert _grants(bound["ClusterRole"]) == expected
    kinds = {r["kind"].lower() + "s" for r in source["spec"]["resources"]}
    assert {resource for _, resource, _ in expected} == kinds
    assert {verb for *_, verb in expected} == {"get", "list", "watch"}


def _module_file(name: str) -> Path:
    path = SRC / Path(*name.split("."))
    return path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py")


def _imports(name: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(_module_file(name).read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("chamberlain") and _module_file(m).is_file()}


def import_closure(module: str) -> set[str]:
    """chamberlain modules a module can import, lazily or not (static: every import)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += _imports(current)
    return seen


_VERBS = {
    "read": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
    "delete_collection": "deletecollection",
}
_CLIENT_CALL = re.compile(
    r"^(read|list|create|replace|patch|delete_collection|delete)_(namespaced_)?([a-z_]+?)"
    r"(_for_all_namespaces)?$"
)


@functools.cache
def kube_methods() -> dict[str, set[tuple[str, str, str]]]:
    """Each public method of the Kube adapter -> the RBAC grants its client calls need."""
    tree = ast.parse(_module_file(KUBE_MODULE).read_text())
    (kube,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Kube"]
    methods = {}
    for item in kube.body:
        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
            grants = set()
            for node in ast.walk(item):
                match = isinstance(node, ast.Attribute) and _CLIENT_CALL.match(node.attr)
                if match:
                    grants.add(("", match.group(3) + "s", _VERBS[match.group(1)]))
            methods[item.name] = grants
    assert methods["read_secret"] == {("", "secrets", "get")}  # the analysis itself works
    return methods


PROPAGATE_MODULE = "chamberlain.steps.propagate"
PROPAGATE_CLIENT_CALLS = {
    "get_namespaced_custom_object",
    "patch_namespaced_custom_object",
    "read_namespaced_",  # + the workload kind, e.g. read_namespaced_deployment
    "patch_namespaced_",
}
"""The client calls propagate.py makes; its grants are PROPAGATION_RULES (checked below)."""


def _client_calls(module: str) -> set[str]:
    """``*_namespaced_*`` client method names (or f-string prefixes) a module references."""
    found = set()
    for node in ast.walk(ast.parse(_module_file(module).read_text())):
        if isinstance(node, ast.Attribute) and "_namespaced_" in node.attr:
            found.add(node.attr)
        elif isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and "_namespaced_" in str(head.value):
                found.add(str(head.value))
    return found


def test_the_kubernetes_client_is_used_only_where_the_rbac_analysis_looks() -> None:
    importers = {
        str(path.relative_to(SRC).with_suffix("")).replace("/", ".")
        for path in SRC.rglob("*.py")
        if re.search(r"^\s*(from kubernetes\b|import kubernetes\b)", path.read_text(), re.M)
    }
    assert importers <= {KUBE_MODULE, PROPAGATE_MODULE}, "teach reachable_grants the new caller"
    assert _client_calls(PROPAGATE_MODULE) == PROPAGATE_CLIENT_CALLS
    source = _module_file(PROPAGATE_MODULE).read_text()
    for rule in packaging.PROPAGATION_RULES:
        for resource in rule.resources:
            assert f'"{resource}"' in source
        assert rule.api_group == "apps" or f'"{rule.api_group}"' in source


def reachable_grants(module: str) -> set[tuple[str, str, str]]:
    """RBAC grants for every Kubernetes call a module's import closure can make.

    An over-approximation (every import counts, lazy or not, used or not): the test asks that
    the table grants nothing outside it, i.e. no verb the step's code cannot make.
    """
    closure = import_closure(module)
    used: set[tuple[str, str, str]] = set()
    if PROPAGATE_MODULE in closure:
        used |= {g for rule in packaging.PROPAGATION_RULES for g in rule.grants()}
    if KUBE_MODULE in closure:
        for name in closure - {KUBE_MODULE}:
            for node in ast.walk(ast.parse(_module_file(name).read_text())):
                if isinstance(node, ast.Attribute) and node.attr in kube_methods():
                    used |= kube_methods()[node.attr]
    return used


@pytest.mark.parametrize("spec", landed(), ids=lambda s: s.name)
def test_rbac_grants_no_call_the_step_cannot_make(spec: FunctionSpec) -> None:
    module = code_module(spec)
    assert module is not None
    assert spec.grants() <= reachable_grants(module)


def test_k_sink_is_bound_to_exactly_the_functions_that_post_events() -> None:
    (binding,) = of_kind("SinkBinding")
    subject = binding["spec"]["subject"]
    assert (subject["apiVersion"], subject["kind"]) == ("serving.knative.dev/v1", "Service")
    selected = {
        name
        for name, service in services().items()
        if subject["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    }
    assert selected == {n for n, s in FUNCTIONS.items() if s.needs_sink}
    assert binding["spec"]["sink"]["ref"]["kind"] == "Broker"
    for spec in landed():
        source = _module_file(code_module(spec) or "").read_text()
        assert ("K_SINK" in source or "SINK_ENV" in source) == spec.needs_sink, spec.name
