"""Build, parse and validate chamberlain's CloudEvents against the catalog in ``events/``.

Producers and consumers validate the same JSON Schemas, so an event that leaves one function
is known to be readable by the next, and a bad one is refused at the door with a 4xx instead of
failing halfway through a step. Error messages name JSON paths and schema rules, never the
offending values: event data travels into logs and ``step.failed`` events.

Pure apart from reading the packaged schema files once.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.exceptions import BaseCloudEventException, CloudEventValidationError
from cloudevents.core.v1.event import CloudEvent
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

__all__ = [
    "EventSchemaError",
    "MalformedEventError",
    "UnknownEventTypeError",
    "event_data",
    "event_from_json",
    "event_to_json",
    "example_event",
    "known_types",
    "make_event",
    "parse_http",
    "schema_dir",
    "schema_for",
    "validate_event",
]

JSON_CONTENT_TYPE: Final = "application/json"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
SCHEMA_SUFFIX: Final = ".schema.json"
MAX_REPORTED_ERRORS: Final = 20

_JSON_MEDIA = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json$")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "type", "specversion", "datacontenttype", "dataschema", "subject", "time"}
)
_RESERVED_NAMES: Final = _CONTEXT_ATTRIBUTES | {"data", "data_base64"}


class EventSchemaError(ValueError):
    """An event's data does not match its type's schema (HTTP 400/422: never retried)."""

    def __init__(self, event_type: str, problems: Iterable[str]) -> None:
        self.event_type = event_type
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(f"{_short(event_type)} data is invalid: {'; '.join(self.problems)}")


class UnknownEventTypeError(EventSchemaError):
    """No schema exists for this type: chamberlain neither produces nor accepts it."""

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        self.problems = ()
        ValueError.__init__(self, f"no schema for event type {_short(event_type)}")


class MalformedEventError(ValueError):
    """The request or document is not a CloudEvent 1.0 at all."""


# ---------------------------------------------------------------------------------- catalog


def schema_dir() -> Path:
    """Where the schemas live: packaged in a wheel, or ``<repo>/events`` in a checkout."""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "_data" / "events"
    if packaged.is_dir():
        return packaged
    return here.parents[3] / "events"


class _Catalog:
    """Every schema, keyed by event type, sharing one registry for cross-file ``$ref``s."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise RuntimeError(f"event schema directory not found: {directory}")
        self.directory = directory
        self.schemas: dict[str, dict[str, Any]] = {}
        resources: list[tuple[str, Resource[Any]]] = []
        for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            resources.append((schema["$id"], Resource.from_contents(schema)))
            name = path.name[: -len(SCHEMA_SUFFIX)]
            if not name.startswith("_"):  # _defs.schema.json holds shared definitions only
                self.schemas[name] = schema
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, event_type: str) -> Draft202012Validator:
        found = self._validators.get(event_type)
        if found is None:
            schema = self.schemas.get(event_type)
            if schema is None:
                raise UnknownEventTypeError(event_type)
            found = Draft202012Validator(schema, registry=self.registry)
            self._validators[event_type] = found
        return found


@functools.lru_cache(maxsize=1)
def _catalog() -> _Catalog:
    return _Catalog(schema_dir())


def known_types() -> frozenset[str]:
    """Every event type with a schema, i.e. every type chamberlain produces or accepts."""
    return frozenset(_catalog().schemas)


def schema_for(type_: str) -> dict[str, Any]:
    """The JSON Schema of ``type_``'s data (a copy: callers may not alter the catalog)."""
    schema = _catalog().schemas.get(type_)
    if schema is None:
        raise UnknownEventTypeError(type_)
    return copy.deepcopy(schema)


def example_event(type_: str) -> CloudEvent:
    """The catalog's example event of ``type_`` (``events/examples/<type>.json``)."""
    if type_ not in known_types():
        raise UnknownEventTypeError(type_)
    path = _catalog().directory / "examples" / f"{type_}.json"
    return event_from_json(json.loads(path.read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------ validation


def validate_event(event: BaseCloudEvent) -> None:
    """Raise :class:`EventSchemaError` unless ``event``'s data matches its type's schema."""
    if event.get_specversion() != "1.0":
        raise MalformedEventError("only CloudEvents specversion 1.0 is accepted")
    event_type = event.get_type()
    validator = _catalog().validator(event_type)
    instance = _data_instance(event_type, event.get_data(), event.get_datacontenttype())
    _check(event_type, validator, instance)


def event_data(event: BaseCloudEvent) -> dict[str, Any]:
    """The validated data of ``event`` as a JSON object, for steps that read fields."""
    validate_event(event)
    event_type = event.get_type()
    instance = _data_instance(event_type, event.get_data(), event.get_datacontenttype())
    if not isinstance(instance, dict):
        raise EventSchemaError(event_type, [f"$: expected object, got {_json_type(instance)}"])
    return instance


def _check(event_type: str, validator: Draft202012Validator, instance: object) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    if not errors:
        return
    problems: list[str] = []
    for error in errors:
        for line in _describe(error):
            if line not in problems:
                problems.append(line)
    if len(problems) > MAX_REPORTED_ERRORS:
        hidden = len(problems) - MAX_REPORTED_ERRORS
        problems = [*problems[:MAX_REPORTED_ERRORS], f"(+{hidden} more)"]
    raise EventSchemaError(event_type, problems)


def _data_instance(event_type: str, data: object, content_type: str | None) -> object:
    """The JSON value schemas see: bytes are decoded (JSON when the content type says so)."""
    if not isinstance(data, (bytes, bytearray)):
        return data
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise EventSchemaError(event_type, ["$: data is neither JSON nor UTF-8 text"]) from None
    if content_type is None or _is_json(content_type):
        try:
            return json.loads(text)
        except ValueError:
            if content_type is not None:
                raise EventSchemaError(event_type, ["$: data is not valid JSON"]) from None
    return text


def _describe(error: ValidationError) -> list[str]:
    """Readable problems for one schema error: a JSON path and the rule, never the value."""
    path = _json_path(error.absolute_path)
    rule = error.validator
    expected: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    instance = error.instance
    if rule == "required" and isinstance(instance, Mapping):
        return [
            f"{_child(path, name)}: required property missing"
            for name in expected
            if name not in instance
        ]
    if rule == "additionalProperties" and isinstance(instance, Mapping):
        allowed = set(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        extra = [
            key
            for key in instance
            if key not in allowed and not any(p.search(str(key)) for p in patterns)
        ]
        return [f"{_child(path, str(key))}: property not allowed" for key in extra]
    if rule in ("anyOf", "oneOf") and error.context:
        return _describe_alternatives(path, instance, error.context)
    if "propertyNames" in error.relative_schema_path and isinstance(instance, str):
        return [f"{_child(path, instance)}: property name does not match {expected}"]
    if rule == "type":
        return [f"{path}: expected {_expected_types(expected)}, got {_json_type(instance)}"]
    if rule == "enum":
        return [f"{path}: must be one of {', '.join(json.dumps(v) for v in expected)}"]
    if rule == "const":
        return [f"{path}: must be {json.dumps(expected)}"]
    if rule == "pattern":
        return [f"{path}: does not match pattern {expected}"]
    if rule == "not":
        why = schema.get("description")
        return [f"{path}: has a forbidden form" + (f" ({why})" if why else "")]
    if rule == "format":
        return [f"{path}: is not a valid {expected}"]
    if rule in ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum"):
        return [f"{path}: violates {rule} {expected}"]
    return [f"{path}: fails {rule}"]


def _describe_alternatives(
    path: str, instance: object, context: Iterable[ValidationError]
) -> list[str]:
    """Explain an anyOf: the problems of the alternative whose type fits, else the types."""
    branches: dict[object, list[ValidationError]] = {}
    for sub in context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    wrong_type = {
        key
        for key, subs in branches.items()
        if any(s.validator == "type" and not s.relative_path for s in subs)
    }
    fitting = [subs for key, subs in branches.items() if key not in wrong_type]
    if fitting:
        return [line for sub in min(fitting, key=len) for line in _describe(sub)]
    wanted: list[str] = []
    for key in sorted(wrong_type, key=str):
        for sub in branches[key]:
            if sub.validator == "type" and not sub.relative_path:
                wanted.append(_expected_types(sub.validator_value))
    return [f"{path}: expected {' or '.join(wanted)}, got {_json_type(instance)}"]


def _json_path(parts: Iterable[str | int]) -> str:
    path = "$"
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _child(path, part)
    return path


def _child(path: str, key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key[:64])}]"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _expected_types(expected: object) -> str:
    if isinstance(expected, list):
        return " or ".join(str(t) for t in expected)
    return str(expected)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return bool(_JSON_MEDIA.match(media))


def _short(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -------------------------------------------------------------------------------- building


def make_event(
    type_: str,
    data: Mapping[str, Any] | str | None,
    *,
    source: str,
    subject: str | None = None,
    id_: str | None = None,
    extensions: Mapping[str, str | int | bool] | None = None,
) -> CloudEvent:
    """A validated CloudEvent 1.0 with JSON data, or :class:`EventSchemaError`.

    ``data`` is copied through JSON so the event cannot alias the caller's objects and always
    survives a structured- or binary-mode round trip unchanged. Extension values are sent as
    strings, the only form HTTP binary mode preserves.
    """
    validator = _catalog().validator(type_)
    try:
        payload = None if data is None else json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError):
        raise EventSchemaError(type_, ["$: data is not JSON-serializable"]) from None
    _check(type_, validator, payload)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": id_ if id_ is not None else str(uuid.uuid4()),
        "source": source,
        "type": type_,
        "time": datetime.now(timezone.utc),
        "datacontenttype": JSON_CONTENT_TYPE,
    }
    if subject is not None:
        attributes["subject"] = subject
    for name, value in (extensions or {}).items():
        if not _EXTENSION_NAME.match(name) or name in _RESERVED_NAMES:
            raise MalformedEventError(
                f"invalid extension name {_short(name)}: 1-20 lowercase letters or digits, "
                "not a context attribute"
            )
        attributes[name] = _extension_text(value)
    return _new_event(attributes, payload)


def _extension_text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _new_event(attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None) -> CloudEvent:
    try:
        return CloudEvent(attributes=attributes, data=data)
    except CloudEventValidationError as exc:
        names = ", ".join(sorted(exc.errors))
        raise MalformedEventError(f"invalid CloudEvent attributes: {names}") from None


# ---------------------------------------------------------------------------------- HTTP


def parse_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Decode a binary- or structured-mode HTTP request into a validated CloudEvent.

    Raises :class:`MalformedEventError` for requests that are not CloudEvents (e.g. a raw
    webhook posted to the wrong URL) and :class:`EventSchemaError` for CloudEvents whose data
    does not match their type's schema.
    """
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    binary = any(name.startswith("ce-") for name in lowered)
    if not binary:
        media = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
        if media == BATCH_CONTENT_TYPE:
            raise MalformedEventError("batched CloudEvents are not supported")
        if media != STRUCTURED_CONTENT_TYPE:
            shown = _short(media, 100) if media else "none"
            raise MalformedEventError(f"not a CloudEvent: no ce-* headers and content type {shown}")
    try:
        event = from_http_event(HTTPMessage(headers=lowered, body=body))
    except CloudEventValidationError as exc:
        names = ", ".join(sorted(exc.errors))
        raise MalformedEventError(f"invalid CloudEvent attributes: {names}") from None
    except (BaseCloudEventException, ValueError, TypeError, AttributeError, KeyError):
        mode = "binary" if binary else "structured"
        raise MalformedEventError(f"unreadable {mode}-mode CloudEvent") from None
    if not isinstance(event, CloudEvent):
        raise MalformedEventError("only CloudEvents specversion 1.0 is accepted")
    validate_event(event)
    return event


# ------------------------------------------------------------------------- JSON persistence


def event_to_json(event: BaseCloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object of ``event`` (time as RFC 3339, bytes as data_base64)."""
    document: dict[str, Any] = {}
    for name, value in event.get_attributes().items():
        if value is None:
            continue
        document[name] = _format_time(value) if isinstance(value, datetime) else value
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        document["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        document["data"] = data
    copied: dict[str, Any] = json.loads(json.dumps(document))
    return copied


def event_from_json(obj: Mapping[str, Any]) -> CloudEvent:
    """Rebuild the CloudEvent that :func:`event_to_json` produced, exactly.

    No schema validation: this reloads events that were validated when first received.
    """
    if not isinstance(obj, Mapping):
        raise MalformedEventError("a structured CloudEvent must be a JSON object")
    attributes = copy.deepcopy(dict(obj))
    data: Any = attributes.pop("data", None)
    encoded = attributes.pop("data_base64", None)
    if encoded is not None:
        if data is not None:
            raise MalformedEventError("a CloudEvent cannot carry both data and data_base64")
        try:
            data = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEventError("data_base64 is not valid base64") from None
    if "time" in attributes:
        attributes["time"] = _parse_time(attributes["time"])
    return _new_event(attributes, data)


def _format_time(value: datetime) -> str:
    text = value.isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise MalformedEventError("time must be an RFC 3339 string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEventError("time is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise MalformedEventError("time must carry a UTC offset")
    return parsed
