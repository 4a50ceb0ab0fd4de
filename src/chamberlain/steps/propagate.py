"""Nudge the materialization layer after a secret got a new version, exactly once per version.

After a rotation (or a lease re-issue) the authority holds a new value, but consumers only see
it when the External Secrets Operator re-reads it and, for software that reads secrets at start,
when their pods restart. For each declared consumer of the path:

* its ExternalSecret (``external-secrets.io/v1beta1``, in the consumer's namespace) gets the
  ``force-sync`` annotation ESO watches, plus a per-path record
  ``chamberlain.dev/version-<hash>`` of the version it was nudged for;
* each declared workload (Deployment, StatefulSet, DaemonSet) gets the pod-template annotation
  ``chamberlain.dev/secret-version-<hash>``; changing the pod template is what
  ``kubectl rollout restart`` does, so the controller rolls the pods out once.

Both are written only when the recorded version is older than the one being propagated, and the
merge patch carries the ``resourceVersion`` that was read: a redelivery, a concurrent replica or
a late event for an older version finds the annotation already there and changes nothing (no
restart loop). The ``kubernetes`` client is imported lazily (it costs ~0.45 s).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chamberlain.logs import get_logger, log, register_secret
from chamberlain.model.intent import Consumer, Workload
from chamberlain.steps.base import PermanentError, TransientError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

    from chamberlain.adapters.kube import Kube

ESO_GROUP = "external-secrets.io"
ESO_VERSION = "v1beta1"
ESO_PLURAL = "externalsecrets"
FORCE_SYNC = "force-sync"
MERGE_PATCH = "application/merge-patch+json"
VERSION_ANNOTATION_PREFIX = "chamberlain.dev/version-"
ROLLOUT_ANNOTATION_PREFIX = "chamberlain.dev/secret-version-"
KUBE_HOST_ENV = "CHAMBERLAIN_KUBE_HOST"
KUBE_TOKEN_ENV = "CHAMBERLAIN_KUBE_TOKEN"  # noqa: S105 - a variable name
KUBE_TOKEN_FILE_ENV = "CHAMBERLAIN_KUBE_TOKEN_FILE"  # noqa: S105 - a variable name
CONFLICT_RETRIES = 3
TIMEOUT_S = 10.0

_WORKLOAD_PLURALS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}
Action = Literal["patched", "current", "missing"]

_log = get_logger("chamberlain.propagate")


class PropagationError(TransientError):
    """The API server was unreachable or kept conflicting: propagate again later."""


class PropagationDeniedError(PermanentError):
    """The API server refused (RBAC, invalid object): retrying cannot help."""

    default_status = 403


@dataclass(frozen=True)
class Nudge:
    """What happened to one object: patched now, already current, or not found."""

    kind: str
    namespace: str
    name: str
    action: Action


@dataclass(frozen=True)
class PropagationReport:
    """Per object, what one propagation did. ``skipped`` says why nothing was attempted."""

    environment: str
    path: str
    version: int
    nudges: tuple[Nudge, ...] = ()
    skipped: str | None = None

    def count(self, kind: str, action: Action = "patched") -> int:
        return sum(1 for n in self.nudges if n.action == action and _family(n.kind) == kind)

    @property
    def external_secrets_synced(self) -> int:
        return self.count("ExternalSecret")

    @property
    def workloads_restarted(self) -> int:
        return self.count("Workload")

    @property
    def missing(self) -> tuple[Nudge, ...]:
        return tuple(n for n in self.nudges if n.action == "missing")


def _family(kind: str) -> str:
    return "ExternalSecret" if kind == "ExternalSecret" else "Workload"


def path_key(path: str) -> str:
    """A short, stable, annotation-safe stand-in for ``path`` (10 hex of its sha256)."""
    return hashlib.sha256(path.encode()).hexdigest()[:10]


def stamp(path: str, version: int) -> str:
    """The annotation value recording that ``path`` was propagated at ``version``."""
    return f"{path}@{version}"


def recorded_version(value: str | None, path: str) -> int:
    """The version a stamp records for ``path`` (0 when absent, foreign or malformed)."""
    if not value:
        return 0
    recorded_path, sep, number = value.rpartition("@")
    if not sep or recorded_path != path or not number.isdigit():
        return 0
    return int(number)


# ---- the kubernetes target -----------------------------------------------------------------


def api_client_of(kube: Kube | ApiClient) -> ApiClient:
    """Accept the :class:`~chamberlain.adapters.kube.Kube` adapter or a raw ``ApiClient``."""
    inner = getattr(kube, "api_client", None)
    return inner if inner is not None else kube  # type: ignore[return-value]


def kube_from_env(environ: Mapping[str, str] | None = None) -> ApiClient | None:
    """The API server propagation talks to, or None when none is configured (skip).

    ``CHAMBERLAIN_KUBE_HOST`` with ``CHAMBERLAIN_KUBE_TOKEN`` (or ``_TOKEN_FILE``) for tests
    and the local runtime; inside a pod (``KUBERNETES_SERVICE_HOST``) the in-cluster config.
    """
    env = os.environ if environ is None else environ
    host = env.get(KUBE_HOST_ENV)
    if host:
        from kubernetes import client

        token = env.get(KUBE_TOKEN_ENV) or ""
        token_file = env.get(KUBE_TOKEN_FILE_ENV)
        if not token and token_file:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PermanentError(
                    f"{KUBE_TOKEN_FILE_ENV} {token_file} unreadable ({type(exc).__name__})"
                ) from None
        configuration = client.Configuration(host=host.rstrip("/"))
        if token:
            register_secret(token)
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        ca_file = env.get("CHAMBERLAIN_KUBE_CA_FILE")
        if ca_file:
            configuration.ssl_ca_cert = ca_file
        return client.ApiClient(configuration)
    if env.get("KUBERNETES_SERVICE_HOST"):
        from kubernetes import client, config

        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    return None


# ---- propagation ---------------------------------------------------------------------------


class _Objects:
    """get/patch of the two object families, translating client failures."""

    def __init__(self, api_client: ApiClient) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=TIMEOUT_S, **kwargs)
        except ApiException as exc:
            status = int(exc.status or 500)
            if status == 404:
                return None
            if status == 409:
                raise _Conflict() from None
            if status in (401, 403, 400, 422):
                raise PropagationDeniedError(
                    f"kubernetes API answered HTTP {status} for {what}",
                    status=403 if status in (401, 403) else 422,
                ) from None
            raise PropagationError(f"kubernetes API answered HTTP {status} for {what}") from None
        except (HTTPError, OSError) as exc:
            raise PropagationError(
                f"kubernetes API unreachable for {what} ({type(exc).__name__})"
            ) from None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        what = f"{kind} {namespace}/{name}"
        if kind == "ExternalSecret":
            found = self._call(
                what,
                self.custom.get_namespaced_custom_object,
                ESO_GROUP,
                ESO_VERSION,
                namespace,
                ESO_PLURAL,
                name,
            )
            return dict(found) if found is not None else None
        reader = getattr(self.apps, f"read_namespaced_{kind.lower().replace('set', '_set')}")
        found = self._call(what, reader, name, namespace)
        if found is None:
            return None
        converted: dict[str, Any] = self.apps.api_client.sanitize_for_serialization(found)
        return converted

    def patch(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Merge-patch; False when the object vanished in between."""
        what = f"{kind} {namespace}/{name}"
        if kind == "ExternalSecret":
            done = self._call(
                what,
                self.custom.patch_namespaced_custom_object,
                ESO_GROUP,
                ESO_VERSION,
                namespace,
                ESO_PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,
            )
            return done is not None
        patcher = getattr(self.apps, f"patch_namespaced_{kind.lower().replace('set', '_set')}")
        done = self._call(what, patcher, name, namespace, body, _content_type=MERGE_PATCH)
        return done is not None


class _Conflict(Exception):
    """409: the object changed since it was read (resourceVersion)."""


def _annotations(obj: Mapping[str, Any], *where: str) -> dict[str, str]:
    node: Any = obj
    for key in where:
        node = node.get(key) if isinstance(node, Mapping) else None
    return dict(node) if isinstance(node, Mapping) else {}


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    value = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return str(value) if value else None


def _external_secret_patch(obj: Mapping[str, Any], path: str, version: int) -> dict[str, Any]:
    key = VERSION_ANNOTATION_PREFIX + path_key(path)
    if recorded_version(_annotations(obj, "metadata", "annotations").get(key), path) >= version:
        return {}
    value = stamp(path, version)
    metadata: dict[str, Any] = {"annotations": {FORCE_SYNC: value, key: value}}
    rv = _resource_version(obj)
    if rv:
        metadata["resourceVersion"] = rv
    return {"metadata": metadata}


def _workload_patch(obj: Mapping[str, Any], path: str, version: int) -> dict[str, Any]:
    key = ROLLOUT_ANNOTATION_PREFIX + path_key(path)
    current = _annotations(obj, "spec", "template", "metadata", "annotations").get(key)
    if recorded_version(current, path) >= version:
        return {}
    body: dict[str, Any] = {
        "spec": {"template": {"metadata": {"annotations": {key: stamp(path, version)}}}}
    }
    rv = _resource_version(obj)
    if rv:
        body["metadata"] = {"resourceVersion": rv}
    return body


def _nudge(
    objects: _Objects, kind: str, namespace: str, name: str, path: str, version: int
) -> Nudge:
    """Read, decide, patch with the read resourceVersion; on 409 read again and decide again."""
    make = _external_secret_patch if kind == "ExternalSecret" else _workload_patch
    for _ in range(CONFLICT_RETRIES):
        obj = objects.get(kind, namespace, name)
        if obj is None:
            return Nudge(kind, namespace, name, "missing")
        body = make(obj, path, version)
        if not body:
            return Nudge(kind, namespace, name, "current")
        try:
            if not objects.patch(kind, namespace, name, body):
                return Nudge(kind, namespace, name, "missing")
        except _Conflict:
            continue
        return Nudge(kind, namespace, name, "patched")
    raise PropagationError(f"{kind} {namespace}/{name} kept changing while being annotated")


def targets(consumers: Sequence[Consumer]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object to nudge, deduplicated, in a stable order."""
    seen: dict[tuple[str, str, str], None] = {}
    for consumer in consumers:
        if consumer.external_secret:
            seen[("ExternalSecret", consumer.namespace, consumer.external_secret)] = None
    for consumer in consumers:
        for workload in consumer.workloads:
            seen[(_kind_of(workload), consumer.namespace, workload.name)] = None
    return list(seen)


def _kind_of(workload: Workload) -> str:
    if workload.kind not in _WORKLOAD_PLURALS:
        raise PermanentError(f"unsupported workload kind {workload.kind!r}")
    return str(workload.kind)


def propagate(
    kube: Kube | ApiClient | None,
    *,
    environment: str,
    path: str,
    version: int,
    consumers: Sequence[Consumer],
    reason: str,
) -> PropagationReport:
    """Nudge every ExternalSecret and declared workload of ``consumers`` for ``version``.

    ``kube`` None (no API server configured) skips with a log line. Raises
    :class:`PropagationError` (transient) when the API server is unreachable, and
    :class:`PropagationDeniedError` (permanent) when it refuses; objects that do not exist are
    reported as ``missing``, not errors (the consumer may not be deployed yet).
    """
    if kube is None:
        log(
            _log,
            "INFO",
            "propagation skipped: no Kubernetes API configured",
            environment=environment,
            path=path,
            version=version,
        )
        return PropagationReport(environment, path, version, skipped="no kubernetes api")
    objects = _Objects(api_client_of(kube))
    nudges = tuple(
        _nudge(objects, kind, namespace, name, path, version)
        for kind, namespace, name in targets(consumers)
    )
    report = PropagationReport(environment, path, version, nudges=nudges)
    log(
        _log,
        "INFO",
        f"propagated {path} v{version} in {environment}",
        environment=environment,
        path=path,
        version=version,
        reason=reason,
        external_secrets_synced=report.external_secrets_synced,
        workloads_restarted=report.workloads_restarted,
        already_current=sum(1 for n in nudges if n.action == "current"),
        missing=[f"{n.kind} {n.namespace}/{n.name}" for n in report.missing],
    )
    return report


@dataclass
class PropagationTotals:
    """Counts summed over several reports (for a reply event)."""

    external_secrets: int = 0
    workloads: int = 0
    missing: list[str] = field(default_factory=list)

    def add(self, report: PropagationReport) -> None:
        self.external_secrets += report.external_secrets_synced
        self.workloads += report.workloads_restarted
        self.missing.extend(f"{n.kind} {n.namespace}/{n.name}" for n in report.missing)
