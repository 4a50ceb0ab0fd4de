"""A thin, typed layer over the ``kubernetes`` client for the few objects chamberlain touches.

Steps read and write Kubernetes Secrets (encrypted unseal shares, bootstrap values to hand
over and retire); they should not care about the client's generated models, its exception
class or its transport errors. :class:`Kube` answers plain dataclasses, ``None`` for a missing
object, and raises errors that already say whether the broker should retry (they are
:class:`~chamberlain.steps.base.StepError` subclasses, like the authority adapter's).

The ``kubernetes`` package is imported lazily, inside functions: it costs ~0.45 s to import,
and most functions never talk to Kubernetes. Secret values are registered for log redaction
as soon as they are read or written, and are excluded from ``repr``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chamberlain.logs import register_secret
from chamberlain.steps.base import PermanentError, TransientError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBE_HOST_ENV = "CHAMBERLAIN_KUBE_HOST"
KUBE_TOKEN_FILE_ENV = "CHAMBERLAIN_KUBE_TOKEN_FILE"  # noqa: S105 - a variable name
KUBE_CA_FILE_ENV = "CHAMBERLAIN_KUBE_CA_FILE"
DEFAULT_TIMEOUT_S = 10.0


class KubeError(Exception):
    """Base of every failure raised by this module (messages never hold Secret data)."""

    kube_status: int | None = None


class KubeUnavailableError(KubeError, TransientError):
    """The API server is unreachable or answered 5xx/429: retry later."""

    default_status = 503


class KubeConflictError(KubeError, TransientError):
    """409: the object changed (resourceVersion) or already exists; re-read and retry."""

    default_status = 409


class KubeForbiddenError(KubeError, PermanentError):
    """401/403: the service account lacks an RBAC permission (a deployment problem)."""

    default_status = 403


class KubeInvalidError(KubeError, PermanentError):
    """400/404/422: the request cannot succeed as sent."""

    default_status = 422


@dataclass(frozen=True)
class KubeSecret:
    """A Kubernetes Secret. ``data`` holds decoded values: never log it."""

    namespace: str
    name: str
    data: dict[str, bytes] = field(repr=False)
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str
    uid: str
    type: str = "Opaque"


def _from_status(status: int, what: str) -> KubeError:
    message = f"kubernetes API answered HTTP {status} for {what}"
    error: KubeError
    if status == 409:
        error = KubeConflictError(message)
    elif status in (401, 403):
        error = KubeForbiddenError(message, status=status)
    elif status == 429 or status >= 500:
        error = KubeUnavailableError(message, status=503 if status >= 500 else 429)
    elif status in (400, 404, 422):
        error = KubeInvalidError(message, status=422 if status == 404 else status)
    else:
        error = KubeInvalidError(message)
    error.kube_status = status
    return error


def _decode(data: Mapping[str, Any] | None) -> dict[str, bytes]:
    decoded = {str(k): base64.b64decode(v) for k, v in (data or {}).items() if v is not None}
    for value in decoded.values():
        text = value.decode("utf-8", errors="ignore")
        if text:
            register_secret(text)
    return decoded


def _encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(bytes(v)).decode("ascii") for k, v in data.items()}


def _secret(obj: Any) -> KubeSecret:
    meta = obj.metadata
    return KubeSecret(
        namespace=str(meta.namespace or ""),
        name=str(meta.name),
        data=_decode(obj.data),
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        resource_version=str(meta.resource_version or ""),
        uid=str(meta.uid or ""),
        type=str(obj.type or "Opaque"),
    )


class Kube:
    """Typed access to one cluster through a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: ApiClient, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.timeout = timeout

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call, translating its failures; 404 answers ``None``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _from_status(int(exc.status or 500), what) from None
        except (HTTPError, OSError) as exc:
            raise KubeUnavailableError(
                f"kubernetes API unreachable for {what} ({type(exc).__name__})"
            ) from None

    # -- Secrets ---------------------------------------------------------------------------
    def read_secret(self, namespace: str, name: str) -> KubeSecret | None:
        found = self._call(
            f"secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace
        )
        return None if found is None else _secret(found)

    def list_secrets(self, namespace: str, *, label_selector: str = "") -> list[KubeSecret]:
        found = self._call(
            f"secrets in {namespace}",
            self.core.list_namespaced_secret,
            namespace,
            label_selector=label_selector,
        )
        return [] if found is None else [_secret(item) for item in found.items or []]

    def create_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> KubeSecret:
        """Create; an existing Secret of that name raises :class:`KubeConflictError`."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
            "data": _encode(data),
        }
        created = self._call(
            f"create secret {namespace}/{name}", self.core.create_namespaced_secret, namespace, body
        )
        if created is None:
            raise _from_status(404, f"create secret {namespace}/{name} (namespace missing?)")
        return _secret(created)

    def replace_secret(
        self,
        current: KubeSecret,
        data: Mapping[str, bytes],
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> KubeSecret:
        """Replace data (and labels/annotations if given) iff ``current`` is still current."""
        what = f"replace secret {current.namespace}/{current.name}"
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": current.type,
            "metadata": {
                "name": current.name,
                "namespace": current.namespace,
                "resourceVersion": current.resource_version,
                "labels": dict(current.labels if labels is None else labels),
                "annotations": dict(current.annotations if annotations is None else annotations),
            },
            "data": _encode(data),
        }
        replaced = self._call(
            what, self.core.replace_namespaced_secret, current.name, current.namespace, body
        )
        if replaced is None:
            raise _from_status(404, what)
        return _secret(replaced)

    def patch_secret_metadata(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
        resource_version: str | None = None,
    ) -> KubeSecret | None:
        """Merge-patch labels/annotations (None removes a key); None if the Secret is gone."""
        metadata: dict[str, Any] = {}
        if labels is not None:
            metadata["labels"] = dict(labels)
        if annotations is not None:
            metadata["annotations"] = dict(annotations)
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        patched = self._call(
            f"patch secret {namespace}/{name}",
            self.core.patch_namespaced_secret,
            name,
            namespace,
            {"metadata": metadata},
        )
        return None if patched is None else _secret(patched)

    def delete_secret(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """Delete (with optional preconditions); False if it was already gone."""
        from kubernetes import client

        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version)
            if uid or resource_version
            else None
        )
        deleted = self._call(
            f"delete secret {namespace}/{name}",
            self.core.delete_namespaced_secret,
            name,
            namespace,
            body=options,
        )
        return deleted is not None


def api_client_from_env(environ: Mapping[str, str] | None = None) -> ApiClient:
    """The cluster this function runs in (or the one the environment names).

    ``CHAMBERLAIN_KUBE_HOST`` (+ ``CHAMBERLAIN_KUBE_TOKEN_FILE``, ``CHAMBERLAIN_KUBE_CA_FILE``)
    wins; inside a pod, the mounted service account; otherwise the user's kubeconfig.
    """
    from kubernetes import client, config

    env = os.environ if environ is None else environ
    host = env.get(KUBE_HOST_ENV)
    if host:
        configuration = client.Configuration(host=host.rstrip("/"))
        token_file = env.get(KUBE_TOKEN_FILE_ENV) or str(SERVICE_ACCOUNT_DIR / "token")
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KubeInvalidError(
                f"{KUBE_TOKEN_FILE_ENV} {token_file} unreadable ({type(exc).__name__})"
            ) from None
        register_secret(token)
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        ca_file = env.get(KUBE_CA_FILE_ENV)
        if ca_file:
            configuration.ssl_ca_cert = ca_file
        return client.ApiClient(configuration)
    if env.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()
