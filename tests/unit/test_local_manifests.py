"""The knative/ manifests the local runtime reads: they load, validate, and mean what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chamberlain.runtime.local.delivery import (
    DeliverySpec,
    DurationError,
    backoff_delay,
    effective_delivery,
    parse_duration,
)
from chamberlain.runtime.local.manifests import ManifestError, load_manifests

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "knative" / "base"
CRDS = ROOT.parent / "shared" / "reference" / "knative-crds"

FUNCTIONS = {
    "issue-secrets",
    "initialize-authority",
    "hand-over-bootstrap",
    "rotate-secrets",
    "watch-leases",
    "renew-lease",
    "revoke-environment",
}
CONSUMES = {
    "issue-secrets": {
        "dev.chamberlain.git.push.v1",
        "com.github.push",
        "dev.knative.source.github.push",
        "dev.knative.sources.gitlab.push",
        "dev.knative.sources.ping/resync",
        "dev.chamberlain.authority.initialized.v1",
    },
    "initialize-authority": {
        "dev.chamberlain.cluster.created.v1",
        "dev.knative.apiserver.resource.add",
    },
    "hand-over-bootstrap": {
        "dev.chamberlain.authority.initialized.v1",
        "dev.chamberlain.git.push.v1",
    },
    "rotate-secrets": {
        "dev.knative.sources.ping/rotate",
        "dev.chamberlain.secret.rotate.requested.v1",
        "dev.chamberlain.secret.compromised.v1",
    },
    "issue-credentials": {
        "dev.chamberlain.secrets.issued.v1",
        "dev.chamberlain.handover.completed.v1",
    },
    "watch-leases": {"dev.knative.sources.ping/watch-leases"},
    "renew-lease": {"dev.chamberlain.lease.expiring.v1"},
    "revoke-environment": {
        "dev.chamberlain.cluster.deleted.v1",
        "dev.chamberlain.environment.teardown.v1",
        "dev.knative.apiserver.resource.delete",
    },
}


# ------------------------------------------------------------------------------ knative/base


def test_base_routes_every_consumed_type_to_its_function() -> None:
    manifests = load_manifests(BASE)
    routed: dict[str, set[str]] = {}
    for trigger in manifests.triggers:
        attrs = trigger.filter_attributes
        key = attrs["type"] + (f"/{attrs['task']}" if "task" in attrs else "")
        routed.setdefault(trigger.subscriber, set()).add(key)
        assert trigger.name.startswith(trigger.subscriber + "-")
        assert trigger.broker == "default"
    assert routed == CONSUMES


def test_base_broker_retries_with_backoff_and_dead_letters() -> None:
    broker = load_manifests(BASE).broker()
    assert broker.name == "default"
    assert broker.delivery == DeliverySpec(
        retry=5, backoff_policy="exponential", backoff_delay_s=0.5, dead_letter_sink="dead-letter"
    )


def test_base_pingsources_tick_with_a_task_the_triggers_can_filter_on() -> None:
    pings = {p.name: p for p in load_manifests(BASE).pingsources}
    assert {name: p.schedule for name, p in pings.items()} == {
        "rotate": "*/5 * * * *",
        "watch-leases": "* * * * *",
        "resync": "0 * * * *",
    }
    for name, ping in pings.items():
        assert ping.data == {"task": name}
        assert ping.extensions == {"task": name}
        assert ping.sink == "default"
        assert ping.source == f"/apis/v1/namespaces/default/pingsources/{name}"


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_every_base_manifest_validates_against_the_knative_crd_schema() -> None:
    schemas = _crd_schemas()
    checked = 0
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            schema = schemas[(doc["apiVersion"], doc["kind"])]
            jsonschema.Draft7Validator(schema).validate(doc)
            assert doc["metadata"]["name"]
            checked += 1
    assert checked == 1 + sum(len(types) for types in CONSUMES.values()) + 3


# ------------------------------------------------------------------------- loading rules


TRIGGER = """\
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t1}}
spec:
  broker: default
{body}
"""
BROKER = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n---\n"
SUBSCRIBER = "  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: fn}}"


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_kustomization_resources_are_followed_recursively_and_other_kinds_ignored(
    tmp_path: Path,
) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "resources: [broker.yaml, sub]\npatches: [{path: nope.yaml}]\n",
           "kustomization.yaml")  # fmt: skip
    _write(tmp_path, BROKER + "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
           "broker.yaml")  # fmt: skip
    _write(tmp_path / "sub", "resources: [t.yaml]\n", "kustomization.yaml")
    _write(tmp_path / "sub", TRIGGER.format(body=SUBSCRIBER), "t.yaml")
    manifests = load_manifests(tmp_path)
    assert [t.name for t in manifests.triggers] == ["t1"]
    assert manifests.triggers[0].subscriber == "fn"
    assert manifests.triggers[0].filter_attributes == {}
    assert set(manifests.brokers) == {"default"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  filter: {attributes: {type: x}}", "spec.subscriber (ref.name or uri) is required"),
        (SUBSCRIBER + "\n  delivery: {retry: 2, backoffDelay: 2 seconds}", "backoffDelay"),
        (SUBSCRIBER + "\n  delivery: {retry: -1}", "delivery.retry"),
        (SUBSCRIBER + "\n  delivery: {backoffPolicy: random}", "linear or exponential"),
        (SUBSCRIBER + "\n  filters: [{exact: {type: a}, prefix: {type: b}}]", "multiple dialects"),
        (SUBSCRIBER + "\n  filters: [{exact: {type: a, source: b}}]", "exactly one attribute"),
        (SUBSCRIBER + "\n  filters: [{cesql: \"type = 'a'\"}]", "CESQL"),
        (SUBSCRIBER + "\n  filter: {attributes: {Type: a}}", "invalid attribute name 'Type'"),
    ],
)
def test_malformed_triggers_are_rejected_naming_the_file_and_object(
    tmp_path: Path, body: str, message: str
) -> None:
    path = _write(tmp_path, BROKER + TRIGGER.format(body=body))
    with pytest.raises(ManifestError) as caught:
        load_manifests(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "t1" in str(caught.value)


def test_a_trigger_on_an_undeclared_broker_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, TRIGGER.format(body=SUBSCRIBER).replace("default", "other"))
    with pytest.raises(ManifestError, match="Broker 'other', which is not declared"):
        load_manifests(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("schedule: '61 * * * *'", "bad schedule"),
        ("schedule: '* * *'", "5 fields"),
        ("schedule: '* * * * *'\n  timezone: Mars/Olympus", "unknown time zone"),
        (
            "schedule: '* * * * *'\n  contentType: application/json\n  data: '{nope'",
            "not valid JSON",
        ),
        ("schedule: '* * * * *'\n  data: a\n  dataBase64: YQ==", "mutually exclusive"),
    ],
)
def test_malformed_pingsources_are_rejected(tmp_path: Path, spec: str, message: str) -> None:
    text = (
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: p1}\nspec:\n"
        f"  {spec}\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    )
    path = _write(tmp_path, BROKER + text)
    with pytest.raises(ManifestError, match=message) as caught:
        load_manifests(path)
    assert str(path) in str(caught.value) and "p1" in str(caught.value)


def test_a_missing_resource_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "resources: [gone.yaml]\n", "kustomization.yaml")
    with pytest.raises(ManifestError, match=r"'gone\.yaml' does not exist"):
        load_manifests(tmp_path)


# ---------------------------------------------------------------------- delivery semantics


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT0.5S", 0.5), ("PT2S", 2.0), ("PT1M", 60.0), ("PT1M30S", 90.0), ("P1D", 86400.0),
     ("PT0.01S", 0.01), ("P1W", 604800.0), ("PT1H", 3600.0)],
)  # fmt: skip
def test_iso8601_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "2s", "P1M", "P1Y", "PT-1S", "1.5"])
def test_unsupported_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_backoff_follows_knative_retry_arithmetic() -> None:
    exponential = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay_s=0.5)
    linear = DeliverySpec(retry=5, backoff_policy="linear", backoff_delay_s=0.5)
    assert [backoff_delay(exponential, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert [backoff_delay(linear, n) for n in range(1, 6)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ValueError):
        backoff_delay(linear, 0)


def test_trigger_delivery_overrides_the_broker_but_inherits_its_dead_letter_sink() -> None:
    broker = DeliverySpec(retry=5, backoff_delay_s=0.5, dead_letter_sink="dead-letter")
    trigger = DeliverySpec(retry=1, backoff_policy="linear", backoff_delay_s=2.0)
    assert effective_delivery(None, broker) == broker
    assert effective_delivery(trigger, broker) == DeliverySpec(1, "linear", 2.0, "dead-letter")
    own = DeliverySpec(retry=0, dead_letter_sink="mine")
    assert effective_delivery(own, broker) == own
    assert effective_delivery(None, None) == DeliverySpec()
