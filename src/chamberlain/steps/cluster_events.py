"""Cluster lifecycle events, normalised into one payload: which environment, where its API is.

A cluster (or environment) announces itself in one of three ways, and the steps that react
(initialize-authority today, revoke-environment later) must not care which:

* ``dev.chamberlain.cluster.created.v1``: chamberlain's own event (a provisioning pipeline or
  ``chamberlain up`` sends it); its data already has this shape.
* ``dev.knative.apiserver.resource.add`` for a **Namespace** labelled
  ``chamberlain.dev/environment=<name>``: a preview environment created inside an existing
  cluster. ``chamberlain.dev/ephemeral=true`` marks an instance of an ephemeral Environment;
  the annotations ``chamberlain.dev/kubernetes-host`` and ``chamberlain.dev/kubernetes-ca``
  (PEM, or base64 of the PEM) say where that cluster's API is, for the authority's Kubernetes
  auth method. Namespaces without the label are not environments and are ignored.
* ``dev.knative.apiserver.resource.add`` for a **Cluster API Cluster**
  (``cluster.x-k8s.io/*``, kind ``Cluster``): a whole new cluster. The environment is the
  ``chamberlain.dev/environment`` label, else the Cluster's name; the API address is
  ``spec.controlPlaneEndpoint`` (``https://host:port``); the CA, which Cluster API keeps in the
  ``<name>-ca`` Secret rather than on the object, comes from the same annotation when present.

Pure: no I/O. :func:`normalise` returns None for an event that does not describe a cluster.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chamberlain.model import event_types as T
from chamberlain.planner.authority_config import KubernetesApi

ENVIRONMENT_LABEL = "chamberlain.dev/environment"
EPHEMERAL_LABEL = "chamberlain.dev/ephemeral"
HOST_ANNOTATION = "chamberlain.dev/kubernetes-host"
CA_ANNOTATION = "chamberlain.dev/kubernetes-ca"
CLUSTER_API_GROUP = "cluster.x-k8s.io"
_ENVIRONMENT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PEM_BEGIN = "-----BEGIN "


class ClusterEventError(ValueError):
    """The event claims to describe a cluster but its data cannot be used (permanent)."""


@dataclass(frozen=True)
class ClusterEvent:
    """One cluster-created announcement, whatever its source."""

    environment: str
    ephemeral: bool
    kubernetes: KubernetesApi | None
    cluster: str | None
    origin: str  # "cluster.created", "namespace" or "cluster-api"

    def to_data(self) -> dict[str, Any]:
        """The ``dev.chamberlain.cluster.created.v1`` data for this announcement."""
        kubernetes = (
            None
            if self.kubernetes is None
            else {"host": self.kubernetes.host, "caCert": self.kubernetes.ca_pem}
        )
        return {
            "environment": self.environment,
            "ephemeral": self.ephemeral,
            "kubernetes": kubernetes,
            "cluster": self.cluster,
        }


def _environment(value: object, what: str) -> str:
    name = str(value or "").strip()
    if not _ENVIRONMENT.match(name):
        raise ClusterEventError(f"{what} {name!r} is not a valid environment name (a DNS label)")
    return name


def _truthy(value: object) -> bool:
    return str(value or "").strip().lower() in ("true", "yes", "1")


def _ca(value: object) -> str | None:
    """A PEM CA from an annotation holding either the PEM or its base64."""
    text = str(value or "").strip()
    if not text:
        return None
    if text.startswith(_PEM_BEGIN):
        return text + "\n"
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise ClusterEventError(f"annotation {CA_ANNOTATION} is neither PEM nor base64") from None
    if not decoded.startswith(_PEM_BEGIN):
        raise ClusterEventError(f"annotation {CA_ANNOTATION} does not hold a PEM certificate")
    return decoded + "\n"


def _api(host: object, ca: object) -> KubernetesApi | None:
    text = str(host or "").strip()
    if not text:
        return None
    if not text.startswith(("https://", "http://")):
        raise ClusterEventError(f"Kubernetes API address {text!r} is not an http(s) URL")
    return KubernetesApi(host=text.rstrip("/"), ca_pem=_ca(ca))


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def from_cluster_created(data: Mapping[str, Any]) -> ClusterEvent:
    """``dev.chamberlain.cluster.created.v1`` data (already schema-valid)."""
    kubernetes = data.get("kubernetes")
    api = None
    if isinstance(kubernetes, Mapping):
        api = KubernetesApi(
            host=str(kubernetes["host"]).rstrip("/"),
            ca_pem=_ca(kubernetes.get("caCert")),
        )
    return ClusterEvent(
        environment=_environment(data.get("environment"), "environment"),
        ephemeral=bool(data.get("ephemeral")),
        kubernetes=api,
        cluster=str(data["cluster"]) if data.get("cluster") else None,
        origin="cluster.created",
    )


def from_namespace(obj: Mapping[str, Any]) -> ClusterEvent | None:
    """A labelled Namespace; None for namespaces that are not environments."""
    meta = obj.get("metadata") or {}
    labels = _string_map(meta.get("labels"))
    if ENVIRONMENT_LABEL not in labels:
        return None
    annotations = _string_map(meta.get("annotations"))
    return ClusterEvent(
        environment=_environment(labels[ENVIRONMENT_LABEL], f"label {ENVIRONMENT_LABEL}"),
        ephemeral=_truthy(labels.get(EPHEMERAL_LABEL)),
        kubernetes=_api(annotations.get(HOST_ANNOTATION), annotations.get(CA_ANNOTATION)),
        cluster=None,
        origin="namespace",
    )


def from_cluster_api(obj: Mapping[str, Any]) -> ClusterEvent:
    """A Cluster API ``Cluster``: its control-plane endpoint is the Kubernetes API."""
    meta = obj.get("metadata") or {}
    labels = _string_map(meta.get("labels"))
    annotations = _string_map(meta.get("annotations"))
    name = str(meta.get("name") or "")
    endpoint = (obj.get("spec") or {}).get("controlPlaneEndpoint") or {}
    host = annotations.get(HOST_ANNOTATION)
    if not host and isinstance(endpoint, Mapping) and endpoint.get("host"):
        port = int(endpoint.get("port") or 6443)
        host = f"https://{endpoint['host']}:{port}"
    return ClusterEvent(
        environment=_environment(labels.get(ENVIRONMENT_LABEL) or name, "environment"),
        ephemeral=_truthy(labels.get(EPHEMERAL_LABEL)),
        kubernetes=_api(host, annotations.get(CA_ANNOTATION)),
        cluster=name or None,
        origin="cluster-api",
    )


def normalise(event_type: str, data: object) -> ClusterEvent | None:
    """The cluster an event announces; None when it announces none (ignore the event).

    Raises :class:`ClusterEventError` for an event that names a cluster but is unusable.
    """
    if not isinstance(data, Mapping):
        if event_type in (T.CLUSTER_CREATED, T.APISERVER_ADD):
            raise ClusterEventError(f"{event_type} event without a JSON object as data")
        return None
    if event_type == T.CLUSTER_CREATED:
        return from_cluster_created(data)
    if event_type != T.APISERVER_ADD:
        return None
    api_version = str(data.get("apiVersion") or "")
    kind = str(data.get("kind") or "")
    if kind == "Namespace" and api_version == "v1":
        return from_namespace(data)
    if kind == "Cluster" and api_version.partition("/")[0] == CLUSTER_API_GROUP:
        return from_cluster_api(data)
    return None
