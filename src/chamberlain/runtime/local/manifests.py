"""Read the Knative Broker, Trigger and PingSource manifests the local runtime honours.

The local runtime is driven by the *same* ``knative/`` kustomization that is applied to a
cluster, so routing, retries and schedules cannot drift between the two. Only the base is read:
``resources:`` are followed recursively (files and directories), patches and overlays are
ignored, and other kinds (Services, ApiServerSources, RBAC) are skipped. Everything the local
runtime relies on is validated up front with an error naming the file and the object.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from chamberlain.runtime.local.cron import CronError, CronSchedule, parse_cron
from chamberlain.runtime.local.delivery import (
    BACKOFF_POLICIES,
    BackoffPolicy,
    DeliverySpec,
    DurationError,
    parse_duration,
)
from chamberlain.runtime.local.filters import attribute_name_errors, filter_errors

EVENTING_V1 = "eventing.knative.dev/v1"
SOURCES_V1 = "sources.knative.dev/v1"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
DEFAULT_NAMESPACE = "default"


class ManifestError(ValueError):
    """A manifest the local runtime cannot honour; the message starts with the file path."""


@dataclass(frozen=True)
class Broker:
    name: str
    delivery: DeliverySpec | None
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True)
class Trigger:
    """One subscription: events of ``broker`` passing the filter go to ``subscriber``.

    ``subscriber`` is the ``ref.name`` of the subscribed Service (the function name) or its
    ``uri``. ``filters`` is the ``spec.filters`` list (it overrides ``filter_attributes``).
    """

    name: str
    broker: str
    filter_attributes: Mapping[str, str]
    filters: tuple[Mapping[str, Any], ...]
    subscriber: str
    delivery: DeliverySpec | None
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True)
class PingSource:
    """A cron schedule that sends a fixed event to ``sink`` (a broker name or a URI)."""

    name: str
    schedule: str
    timezone: str | None
    data: Any  # parsed JSON when contentType is JSON, else the string (or bytes for base64)
    content_type: str | None
    sink: str
    extensions: Mapping[str, str]
    cron: CronSchedule
    namespace: str = DEFAULT_NAMESPACE

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` a real PingSource adapter stamps on its events."""
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"


@dataclass(frozen=True)
class Manifests:
    brokers: Mapping[str, Broker]
    triggers: tuple[Trigger, ...]
    pingsources: tuple[PingSource, ...]
    files: tuple[Path, ...] = field(default=())

    def broker(self, name: str | None = None) -> Broker:
        """The named broker, or the only/"default" one when no name is given."""
        if name is None:
            if len(self.brokers) == 1:
                return next(iter(self.brokers.values()))
            name = "default"
        try:
            return self.brokers[name]
        except KeyError:
            raise LookupError(f"no Broker named {name!r} in the manifests") from None

    def triggers_of(self, broker: str) -> tuple[Trigger, ...]:
        return tuple(t for t in self.triggers if t.broker == broker)


def load_manifests(path: Path) -> Manifests:
    """Load a kustomize directory (or one YAML file) into validated, typed objects."""
    path = Path(path)
    brokers: dict[str, Broker] = {}
    triggers: list[Trigger] = []
    pings: list[PingSource] = []
    files: list[Path] = []
    for file, namespace, doc in _documents(path, set(), None):
        if file not in files:
            files.append(file)
        api, kind = doc.get("apiVersion"), doc.get("kind")
        if (api, kind) == (EVENTING_V1, "Broker"):
            broker = _broker(file, doc, namespace)
            if broker.name in brokers:
                raise ManifestError(f"{file}: Broker {broker.name!r} is declared twice")
            brokers[broker.name] = broker
        elif (api, kind) == (EVENTING_V1, "Trigger"):
            triggers.append(_trigger(file, doc, namespace))
        elif (api, kind) == (SOURCES_V1, "PingSource"):
            pings.append(_pingsource(file, doc, namespace))
        elif kind in ("Broker", "Trigger", "PingSource"):
            raise ManifestError(f"{file}: {kind} must use apiVersion {_api_for(kind)}, not {api}")
    _check_unique(triggers, "Trigger")
    _check_unique(pings, "PingSource")
    for trigger in triggers:
        if trigger.broker not in brokers:
            raise ManifestError(
                f"{path}: Trigger {trigger.name!r} subscribes to Broker {trigger.broker!r}, "
                "which is not declared"
            )
    return Manifests(brokers, tuple(triggers), tuple(pings), tuple(files))


def _api_for(kind: str) -> str:
    return SOURCES_V1 if kind == "PingSource" else EVENTING_V1


def _check_unique(items: list[Trigger] | list[PingSource], kind: str) -> None:
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.namespace, item.name)
        if key in seen:
            raise ManifestError(f"{kind} {item.name!r} is declared twice")
        seen.add(key)


def _documents(
    path: Path, visiting: set[Path], namespace: str | None
) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """Every YAML document reachable from ``path`` with the namespace it lands in."""
    resolved = path.resolve()
    if resolved in visiting:
        raise ManifestError(f"{path}: kustomization resources form a cycle")
    if path.is_dir():
        kustomization = next((path / n for n in KUSTOMIZATION_NAMES if (path / n).is_file()), None)
        if kustomization is None:
            raise ManifestError(f"{path}: directory has no kustomization.yaml")
        config = _load_yaml(kustomization)
        if len(config) != 1 or not isinstance(config[0], dict):
            raise ManifestError(f"{kustomization}: must hold one mapping")
        resources = config[0].get("resources") or []
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise ManifestError(f"{kustomization}: resources must be a list of paths")
        inner_ns = namespace or config[0].get("namespace")
        for resource in resources:
            if "://" in resource:
                raise ManifestError(f"{kustomization}: remote resource {resource!r} unsupported")
            target = path / resource
            if not target.exists():
                raise ManifestError(f"{kustomization}: resource {resource!r} does not exist")
            yield from _documents(target, visiting | {resolved}, inner_ns)
        return
    if not path.is_file():
        raise ManifestError(f"{path}: no such file or directory")
    for doc in _load_yaml(path):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: every YAML document must be a mapping")
        meta = doc.get("metadata") or {}
        ns = namespace or (meta.get("namespace") if isinstance(meta, dict) else None)
        yield path, str(ns or DEFAULT_NAMESPACE), doc


def _load_yaml(path: Path) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc


def _name(file: Path, doc: dict[str, Any], kind: str) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{file}: a {kind} has no metadata.name")
    return name


def _spec(file: Path, doc: dict[str, Any], where: str) -> dict[str, Any]:
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError(f"{file}: {where}: spec must be a mapping")
    return spec


def _broker(file: Path, doc: dict[str, Any], namespace: str) -> Broker:
    name = _name(file, doc, "Broker")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ManifestError(f"{file}: Broker {name}: spec must be a mapping")
    delivery = _delivery(file, spec.get("delivery"), f"Broker {name}")
    return Broker(name=name, delivery=delivery, namespace=namespace)


def _trigger(file: Path, doc: dict[str, Any], namespace: str) -> Trigger:
    name = _name(file, doc, "Trigger")
    where = f"Trigger {name}"
    spec = _spec(file, doc, where)
    broker = spec.get("broker")
    if not isinstance(broker, str) or not broker:
        raise ManifestError(f"{file}: {where}: spec.broker is required")
    subscriber = _destination(file, spec.get("subscriber"), f"{where}: spec.subscriber")
    if subscriber is None:
        raise ManifestError(f"{file}: {where}: spec.subscriber (ref.name or uri) is required")
    filter_block = spec.get("filter") or {}
    attributes = filter_block.get("attributes") if isinstance(filter_block, dict) else None
    attributes = attributes or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise ManifestError(f"{file}: {where}: spec.filter.attributes must map names to strings")
    errors = attribute_name_errors(list(attributes), f"{where}: spec.filter.attributes")
    filters = spec.get("filters")
    errors += filter_errors(filters, f"{where}: spec.filters")
    if errors:
        raise ManifestError(f"{file}: " + "; ".join(errors))
    return Trigger(
        name=name,
        broker=broker,
        filter_attributes=dict(attributes),
        filters=tuple(cast(list[dict[str, Any]], filters or [])),
        subscriber=subscriber,
        delivery=_delivery(file, spec.get("delivery"), where),
        namespace=namespace,
    )


def _pingsource(file: Path, doc: dict[str, Any], namespace: str) -> PingSource:
    name = _name(file, doc, "PingSource")
    where = f"PingSource {name}"
    spec = _spec(file, doc, where)
    schedule = spec.get("schedule", "* * * * *")
    zone = spec.get("timezone")
    if not isinstance(schedule, str) or (zone is not None and not isinstance(zone, str)):
        raise ManifestError(f"{file}: {where}: schedule and timezone must be strings")
    try:
        cron = parse_cron(schedule, zone)
    except CronError as exc:
        raise ManifestError(f"{file}: {where}: bad schedule: {exc}") from exc
    sink = _destination(file, spec.get("sink"), f"{where}: spec.sink")
    if sink is None:
        raise ManifestError(f"{file}: {where}: spec.sink (ref.name or uri) is required")
    overrides = spec.get("ceOverrides") or {}
    extensions = overrides.get("extensions") if isinstance(overrides, dict) else None
    extensions = extensions or {}
    if not isinstance(extensions, dict) or not all(isinstance(v, str) for v in extensions.values()):
        raise ManifestError(f"{file}: {where}: ceOverrides.extensions must map names to strings")
    errors = attribute_name_errors(list(extensions), f"{where}: ceOverrides.extensions")
    if errors:
        raise ManifestError(f"{file}: " + "; ".join(errors))
    content_type = spec.get("contentType") or None
    return PingSource(
        name=name,
        schedule=schedule,
        timezone=zone,
        data=_ping_data(file, spec, where, content_type),
        content_type=content_type,
        sink=sink,
        extensions=dict(extensions),
        cron=cron,
        namespace=namespace,
    )


def _ping_data(file: Path, spec: dict[str, Any], where: str, content_type: str | None) -> Any:
    data, data_b64 = spec.get("data"), spec.get("dataBase64")
    if data is not None and data_b64 is not None:
        raise ManifestError(f"{file}: {where}: data and dataBase64 are mutually exclusive")
    if data_b64 is not None:
        try:
            return base64.b64decode(str(data_b64), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ManifestError(f"{file}: {where}: dataBase64 is not base64") from exc
    if data is None:
        return None
    if not isinstance(data, str):
        raise ManifestError(f"{file}: {where}: data must be a string (JSON text for JSON)")
    if content_type and "json" in content_type.split(";")[0]:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"{file}: {where}: data is not valid JSON: {exc}") from exc
    return data


def _destination(file: Path, block: Any, where: str) -> str | None:
    """``ref.name`` (the Addressable's name) or ``uri``; None when the block is absent."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ManifestError(f"{file}: {where} must be a mapping with ref or uri")
    ref = block.get("ref")
    if ref is not None:
        name = ref.get("name") if isinstance(ref, dict) else None
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{file}: {where}.ref.name is required")
        return name
    uri = block.get("uri")
    if isinstance(uri, str) and uri:
        return uri
    return None


def _delivery(file: Path, block: Any, where: str) -> DeliverySpec | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ManifestError(f"{file}: {where}: delivery must be a mapping")
    retry = block.get("retry", 0)
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise ManifestError(f"{file}: {where}: delivery.retry must be a non-negative integer")
    policy = block.get("backoffPolicy", "exponential")
    if policy not in BACKOFF_POLICIES:
        raise ManifestError(
            f"{file}: {where}: delivery.backoffPolicy must be linear or exponential, not {policy!r}"
        )
    delay = 0.0
    if block.get("backoffDelay") is not None:
        try:
            delay = parse_duration(block["backoffDelay"])
        except DurationError as exc:
            raise ManifestError(f"{file}: {where}: bad delivery.backoffDelay: {exc}") from exc
    sink = _destination(file, block.get("deadLetterSink"), f"{where}: delivery.deadLetterSink")
    if block.get("deadLetterSink") is not None and sink is None:
        raise ManifestError(f"{file}: {where}: delivery.deadLetterSink needs ref.name or uri")
    return DeliverySpec(
        retry=retry,
        backoff_policy=cast(BackoffPolicy, policy),
        backoff_delay_s=delay,
        dead_letter_sink=sink,
    )
