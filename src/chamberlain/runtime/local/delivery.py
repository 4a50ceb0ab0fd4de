"""Knative delivery semantics: the ``spec.delivery`` block, ISO 8601 durations and backoff.

Kept pure so the broker's retry schedule can be unit-tested against Knative's own arithmetic
(``knative.dev/eventing/pkg/kncloudevents/retries.go`` driven by ``go-retryablehttp``): the
n-th retry (1-based) waits ``backoffDelay * 2^(n-1)`` (exponential) or ``backoffDelay * (n-1)``
(linear), because retryablehttp hands the backoff function the 0-based index of the attempt
that just failed. So ``retry: 3, exponential, PT0.5S`` waits 0.5 s, 1 s, 2 s; linear PT0.5S
waits 0 s, 0.5 s, 1 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

BackoffPolicy: TypeAlias = Literal["linear", "exponential"]
BACKOFF_POLICIES: tuple[BackoffPolicy, ...] = ("linear", "exponential")

# PnW, or PnDTnHnMnS with fractional seconds; years and months are rejected (no fixed length).
_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_UNIT_SECONDS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0}


class DurationError(ValueError):
    """An ISO 8601 duration the local runtime cannot interpret."""


def parse_duration(text: str) -> float:
    """``PT0.5S`` -> 0.5, ``PT1M`` -> 60.0, ``P1D`` -> 86400.0 (seconds)."""
    match = _DURATION.match(text.strip().upper()) if isinstance(text, str) else None
    if match is None:
        raise DurationError(
            f"{text!r} is not an ISO 8601 duration like PT0.5S, PT2S, PT1M or P1D "
            "(years and months are not supported)"
        )
    total = 0.0
    for unit, value in match.groupdict().items():
        if value is not None:
            total += float(value) * _UNIT_SECONDS.get(unit, 1.0)
    return total


@dataclass(frozen=True)
class DeliverySpec:
    """What a Broker or Trigger says about retries and dead letters.

    ``retry`` counts retries after the first attempt (Knative's "minimum number of retries").
    ``dead_letter_sink`` is the ``ref.name`` of an Addressable or a ``uri``.
    """

    retry: int = 0
    backoff_policy: BackoffPolicy = "exponential"
    backoff_delay_s: float = 0.0
    dead_letter_sink: str | None = None


NO_DELIVERY = DeliverySpec()


def backoff_delay(spec: DeliverySpec, retry_number: int) -> float:
    """Seconds to wait before the ``retry_number``-th retry (1-based), as Knative does."""
    if retry_number < 1:
        raise ValueError("retry_number is 1-based")
    failed_index = retry_number - 1
    if spec.backoff_policy == "linear":
        return spec.backoff_delay_s * failed_index
    return spec.backoff_delay_s * float(2**failed_index)


def effective_delivery(trigger: DeliverySpec | None, broker: DeliverySpec | None) -> DeliverySpec:
    """The spec a Trigger's deliveries use.

    As in Knative's MT broker, a Trigger's ``delivery`` replaces the Broker's as a whole for
    retry and backoff, while the dead-letter sink falls back to the Broker's when the Trigger
    names none (Trigger ``status.deadLetterSinkUri`` "will fallback to its Broker").
    """
    if trigger is None:
        return broker or NO_DELIVERY
    if trigger.dead_letter_sink is None and broker is not None and broker.dead_letter_sink:
        return DeliverySpec(
            retry=trigger.retry,
            backoff_policy=trigger.backoff_policy,
            backoff_delay_s=trigger.backoff_delay_s,
            dead_letter_sink=broker.dead_letter_sink,
        )
    return trigger
