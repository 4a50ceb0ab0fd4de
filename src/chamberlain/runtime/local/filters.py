"""Trigger filters, evaluated exactly as Knative's broker evaluates them.

Two dialects exist on a Trigger:

* ``spec.filter.attributes``: every key must be present on the event (an unset optional
  attribute counts as absent) and equal to the value; the value ``""`` matches any value of a
  present attribute (``TriggerAnyFilter``).
* ``spec.filters`` (the Subscriptions API): a list of expressions that must all be true; each
  expression has exactly one dialect: ``exact``/``prefix``/``suffix`` (one attribute each),
  ``all``/``any`` (nested lists), ``not`` (one nested expression). When ``filters`` is
  non-empty it overrides ``filter.attributes``.

CESQL is not implemented by the local runtime; manifests using it are rejected when loaded.
Pure functions: attributes in, bool out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudevents.core.base import BaseCloudEvent

if TYPE_CHECKING:
    from chamberlain.runtime.local.manifests import Trigger

DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")
_SINGLE = ("exact", "prefix", "suffix")


def event_attributes(event: BaseCloudEvent) -> dict[str, str]:
    """The event's context attributes (extensions included) as the strings filters compare."""
    out: dict[str, str] = {}
    for name, value in event.get_attributes().items():
        text = _as_text(value)
        if text:
            out[name] = text
    return out


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)


def matches(trigger: Trigger, attributes: Mapping[str, str]) -> bool:
    """Whether an event with these attributes is delivered to ``trigger``'s subscriber."""
    if trigger.filters:
        return matches_filters(trigger.filters, attributes)
    return matches_attributes(trigger.filter_attributes, attributes)


def matches_attributes(expected: Mapping[str, str], attributes: Mapping[str, str]) -> bool:
    """``spec.filter.attributes``: exact match per key, ``""`` meaning "any, but present"."""
    for name, want in expected.items():
        have = attributes.get(name, "")
        if not have:
            return False
        if want != "" and want != have:
            return False
    return True


def matches_filters(filters: Sequence[Mapping[str, Any]], attributes: Mapping[str, str]) -> bool:
    """``spec.filters``: all expressions must hold; an empty list lets everything through."""
    return all(_evaluate(expr, attributes) for expr in filters)


def _evaluate(expr: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    dialect = next((d for d in DIALECTS if expr.get(d)), None)
    if dialect is None:  # an empty expression is true, as in Knative
        return True
    operand = expr[dialect]
    if dialect in _SINGLE:
        return all(
            _compare(dialect, attributes.get(name, ""), str(want)) for name, want in operand.items()
        )
    if dialect == "all":
        return all(_evaluate(sub, attributes) for sub in operand)
    if dialect == "any":
        return any(_evaluate(sub, attributes) for sub in operand)
    if dialect == "not":
        return not _evaluate(operand, attributes)
    raise ValueError("CESQL filters are not supported by the local runtime")


def _compare(dialect: str, have: str, want: str) -> bool:
    if not have:
        return False
    if dialect == "exact":
        return have == want
    if dialect == "prefix":
        return have.startswith(want)
    return have.endswith(want)


def filter_errors(filters: Any, where: str = "spec.filters") -> list[str]:
    """Problems with a ``spec.filters`` list, phrased like Knative's admission webhook."""
    if filters is None:
        return []
    if not isinstance(filters, list):
        return [f"{where}: must be a list of filter expressions"]
    errors: list[str] = []
    for index, expr in enumerate(filters):
        errors.extend(_expression_errors(expr, f"{where}[{index}]"))
    return errors


def _expression_errors(expr: Any, where: str) -> list[str]:
    if not isinstance(expr, dict):
        return [f"{where}: must be a mapping with one of {', '.join(DIALECTS)}"]
    unknown = sorted(set(expr) - set(DIALECTS))
    if unknown:
        return [f"{where}: unknown filter dialect(s) {', '.join(unknown)}"]
    present = [d for d in DIALECTS if expr.get(d)]
    if len(present) > 1:
        return [f"{where}: multiple dialects found ({', '.join(present)}), only one is allowed"]
    if not present:
        return []
    dialect = present[0]
    operand = expr[dialect]
    here = f"{where}.{dialect}"
    if dialect == "cesql":
        return [f"{here}: CESQL filters are not supported by the local runtime"]
    if dialect in _SINGLE:
        return _single_attribute_errors(operand, here)
    if dialect in ("all", "any"):
        if not isinstance(operand, list) or not operand:
            return [f"{here}: must be a non-empty list of filter expressions"]
        return filter_errors(operand, here)
    return _expression_errors(operand, here)


def _single_attribute_errors(operand: Any, where: str) -> list[str]:
    if not isinstance(operand, dict) or len(operand) != 1:
        return [f"{where}: must hold exactly one attribute: value pair"]
    ((name, value),) = operand.items()
    errors = attribute_name_errors([name], where)
    if not isinstance(value, str) or not value:
        errors.append(f"{where}.{name}: value must be a non-empty string")
    return errors


def attribute_name_errors(names: Sequence[Any], where: str) -> list[str]:
    """CloudEvents attribute names: lowercase alphanumeric, starting with a letter."""
    return [
        f"{where}: invalid attribute name {name!r} (lowercase letters and digits, letter first)"
        for name in names
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.match(name)
    ]
