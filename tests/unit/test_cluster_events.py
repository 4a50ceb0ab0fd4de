"""Cluster lifecycle events of three shapes normalise into one payload (pure, no I/O)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from chamberlain.model import event_types as T
from chamberlain.model.events import example_event, validate_event
from chamberlain.planner.authority_config import KubernetesApi
from chamberlain.steps.cluster_events import ClusterEvent, ClusterEventError, normalise

CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"


def namespace(labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "preview-42", "labels": labels}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def test_chamberlain_cluster_created_passes_through() -> None:
    event = example_event(T.CLUSTER_CREATED)
    found = normalise(event.get_type(), event.get_data())
    assert found == ClusterEvent(
        environment="preview-123",
        ephemeral=True,
        kubernetes=KubernetesApi("https://preview-123.k8s.example.internal:6443", None),
        cluster="preview-123",
        origin="cluster.created",
    )


def test_a_labelled_namespace_is_an_ephemeral_environment_with_its_api() -> None:
    data = namespace(
        {"chamberlain.dev/environment": "preview-42", "chamberlain.dev/ephemeral": "true"},
        {
            "chamberlain.dev/kubernetes-host": "https://10.0.0.1:6443/",
            "chamberlain.dev/kubernetes-ca": base64.b64encode(CA.encode()).decode(),
        },
    )
    found = normalise(T.APISERVER_ADD, data)
    assert found is not None
    assert (found.environment, found.ephemeral, found.origin) == ("preview-42", True, "namespace")
    assert found.kubernetes == KubernetesApi("https://10.0.0.1:6443", CA + "\n")


def test_namespaces_without_the_label_and_other_kinds_are_not_clusters() -> None:
    assert normalise(T.APISERVER_ADD, namespace({"team": "payments"})) is None
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    assert normalise(T.APISERVER_ADD, deployment) is None
    assert normalise(T.PING, {"task": "resync"}) is None


def test_a_cluster_api_cluster_uses_its_control_plane_endpoint() -> None:
    data = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Cluster",
        "metadata": {
            "name": "preview-9",
            "labels": {"chamberlain.dev/ephemeral": "true"},
            "annotations": {"chamberlain.dev/kubernetes-ca": CA},
        },
        "spec": {"controlPlaneEndpoint": {"host": "preview-9.example", "port": 6443}},
    }
    found = normalise(T.APISERVER_ADD, data)
    assert found is not None
    assert found.environment == "preview-9" and found.cluster == "preview-9"
    assert found.kubernetes == KubernetesApi("https://preview-9.example:6443", CA + "\n")


def test_a_cluster_without_endpoint_has_no_api_yet() -> None:
    data = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": "prod-eu", "labels": {"chamberlain.dev/environment": "prod"}},
    }
    found = normalise(T.APISERVER_ADD, data)
    assert found is not None
    assert (found.environment, found.kubernetes, found.ephemeral) == ("prod", None, False)


@pytest.mark.parametrize(
    ("labels", "annotations", "message"),
    [
        ({"chamberlain.dev/environment": "Prod_1"}, {}, "not a valid environment name"),
        (
            {"chamberlain.dev/environment": "prod"},
            {"chamberlain.dev/kubernetes-host": "10.0.0.1:6443"},
            "not an http(s) URL",
        ),
        (
            {"chamberlain.dev/environment": "prod"},
            {
                "chamberlain.dev/kubernetes-host": "https://k",
                "chamberlain.dev/kubernetes-ca": "not pem!",
            },
            "neither PEM nor base64",
        ),
    ],
)
def test_unusable_cluster_objects_are_refused(
    labels: dict[str, str], annotations: dict[str, str], message: str
) -> None:
    with pytest.raises(ClusterEventError, match=message.replace("(", r"\(").replace(")", r"\)")):
        normalise(T.APISERVER_ADD, namespace(labels, annotations))


def test_to_data_round_trips_through_the_cluster_created_schema() -> None:
    found = normalise(
        T.APISERVER_ADD,
        namespace(
            {"chamberlain.dev/environment": "preview-42"},
            {
                "chamberlain.dev/kubernetes-host": "https://k:6443",
                "chamberlain.dev/kubernetes-ca": CA,
            },
        ),
    )
    assert found is not None
    from chamberlain.model.events import make_event

    event = make_event(T.CLUSTER_CREATED, found.to_data(), source="/test")
    validate_event(event)
    assert normalise(T.CLUSTER_CREATED, event.get_data()) == ClusterEvent(
        "preview-42", False, found.kubernetes, None, "cluster.created"
    )
