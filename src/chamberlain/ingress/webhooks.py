"""Verify and normalise Git provider webhooks (GitHub, Gitea/Forgejo, GitLab). Pure: no I/O.

An unverified delivery must change nothing (DESIGN.md §Security), so every check happens before
the body is even parsed: size, provider, configured secret, signature. Signatures and tokens are
compared with :func:`hmac.compare_digest`; neither they nor the secrets ever appear in a reason.

Every verified push is normalised, including tag pushes (``refs/tags/...``) and branch
deletions (``deleted: true``, ``after`` all zeros): the ingress forwards them as they are and the
step that consumes ``dev.chamberlain.git.push.v1`` decides to ignore them. Non-push events
(GitHub's ``ping`` hook test, issues, ...) are answered 200 and produce no event.

Event ids are ``<provider>:<delivery id>`` so a redelivered webhook carries the same id and the
broker and the steps dedupe it. A delivery without an id header gets a content-derived id
(``<provider>:sha256-<digest of the body>``), stable across replays too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from chamberlain.adapters.gitrepo import normalized_push
from chamberlain.runtime.emit import strip_credentials

MAX_BODY = 10 * 1024 * 1024
"""Largest body accepted (10 MiB, GitHub's own cap on webhook payloads is 25 MB)."""

PROVIDERS: tuple[str, ...] = ("github", "gitea", "gitlab")

_DELIVERY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class WebhookError(ValueError):
    """A refused delivery; ``status`` is the HTTP answer (permanent: the provider stops)."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PayloadTooLargeError(WebhookError):
    status = 413


class UnauthorizedError(WebhookError):
    """Missing, malformed or wrong signature/token, or no secret configured for the provider."""

    status = 401


class UnknownProviderError(WebhookError):
    status = 400


class BadPayloadError(WebhookError):
    """The body is not JSON (or not a form carrying a JSON ``payload``)."""

    status = 400


class MalformedPushError(WebhookError):
    """Verified JSON that is not a push event the normaliser understands."""

    status = 422


@dataclass(frozen=True)
class WebhookResult:
    """Outcome of a verified delivery: a push to forward, or an event to acknowledge and drop."""

    kind: Literal["push", "ignored"]
    status: int
    data: dict[str, Any] | None
    delivery: str | None
    reason: str
    provider: str
    event_id: str


@dataclass(frozen=True)
class _Provider:
    name: str
    event_header: str
    delivery_headers: tuple[str, ...]
    push_events: frozenset[str]
    verify: Callable[[Mapping[str, str], bytes, str], None]


def _hmac_hex(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest().encode("ascii")


def _check_hex_signature(given: str, secret: str, body: bytes, header: str) -> None:
    if not _HEX_RE.match(given):
        raise UnauthorizedError(f"malformed {header} header")
    if not hmac.compare_digest(given.lower().encode("ascii"), _hmac_hex(secret, body)):
        raise UnauthorizedError(f"{header} does not match the body")


def _verify_github(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    value = headers.get("x-hub-signature-256")
    if not value:
        raise UnauthorizedError("missing X-Hub-Signature-256 header")
    algorithm, _, digest = value.strip().partition("=")
    if algorithm != "sha256":
        raise UnauthorizedError("malformed X-Hub-Signature-256 header")
    _check_hex_signature(digest, secret, body, "X-Hub-Signature-256")


def _verify_gitea(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    # Forgejo sends X-Forgejo-Signature next to X-Gitea-Signature; both are bare hex.
    for name, label in (
        ("x-gitea-signature", "X-Gitea-Signature"),
        ("x-forgejo-signature", "X-Forgejo-Signature"),
    ):
        value = headers.get(name)
        if value:
            _check_hex_signature(value.strip(), secret, body, label)
            return
    raise UnauthorizedError("missing X-Gitea-Signature header")


def _verify_gitlab(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    token = headers.get("x-gitlab-token")
    if not token:
        raise UnauthorizedError("missing X-Gitlab-Token header")
    given = token.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, secret.encode("utf-8")):
        raise UnauthorizedError("X-Gitlab-Token does not match")


_PROVIDERS: dict[str, _Provider] = {
    "github": _Provider(
        "github", "x-github-event", ("x-github-delivery",), frozenset({"push"}), _verify_github
    ),
    "gitea": _Provider(
        "gitea",
        "x-gitea-event",
        ("x-gitea-delivery", "x-forgejo-delivery"),
        frozenset({"push"}),
        _verify_gitea,
    ),
    "gitlab": _Provider(
        "gitlab",
        "x-gitlab-event",
        # Idempotency-Key is kept across GitLab's retries; the event UUID is per event.
        ("idempotency-key", "x-gitlab-event-uuid", "x-gitlab-webhook-uuid"),
        frozenset({"Push Hook", "Tag Push Hook"}),
        _verify_gitlab,
    ),
}


def detect_provider(headers: Mapping[str, str]) -> str:
    """Name the provider from its event header. Gitea also sends GitHub's, so it goes first."""
    lower = _lower(headers)
    if "x-gitea-event" in lower or "x-forgejo-event" in lower:
        return "gitea"
    if "x-gitlab-event" in lower:
        return "gitlab"
    if "x-github-event" in lower:
        return "github"
    raise UnknownProviderError(
        "unknown webhook provider: expected an X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event "
        "header"
    )


def verify_and_normalize(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    *,
    provider: str | None = None,
    max_body: int = MAX_BODY,
) -> WebhookResult:
    """Check one delivery and return the ``dev.chamberlain.git.push.v1`` data it carries.

    ``secrets`` maps provider name to its shared secret; a provider without one is refused.
    ``provider`` (from the URL path ``/webhooks/<provider>``) must agree with the headers.
    Raises a :class:`WebhookError` subclass whose ``status`` is the HTTP answer.
    """
    if len(body) > max_body:
        raise PayloadTooLargeError(f"body of {len(body)} bytes exceeds the {max_body} byte limit")
    lower = _lower(headers)
    detected = detect_provider(lower)
    if provider is not None and provider != detected:
        raise UnknownProviderError(f"headers are from {detected}, not {provider}")
    spec = _PROVIDERS[detected]
    secret = secrets.get(detected)
    if not secret:
        raise UnauthorizedError(f"no webhook secret configured for {detected}")
    spec.verify(lower, body, secret)

    delivery = _delivery(lower, spec)
    event_id = f"{detected}:{delivery}" if delivery else _content_id(detected, body)
    event_name = lower.get(spec.event_header) or lower.get("x-forgejo-event", "")
    if event_name not in spec.push_events:
        return WebhookResult(
            kind="ignored",
            status=200,
            data=None,
            delivery=delivery,
            reason=f"{detected} event {event_name[:64]!r} is not a push",
            provider=detected,
            event_id=event_id,
        )
    payload = _parse_payload(lower, body)
    try:
        data = normalized_push(payload, detected, delivery=delivery)
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedPushError(f"malformed {detected} push: {str(exc)[:300]}") from None
    data["repository"]["url"] = strip_credentials(data["repository"]["url"])
    return WebhookResult(
        kind="push",
        status=202,
        data=data,
        delivery=delivery,
        reason=f"{detected} push to {data.get('ref')}",
        provider=detected,
        event_id=event_id,
    )


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _delivery(headers: Mapping[str, str], spec: _Provider) -> str | None:
    for name in spec.delivery_headers:
        value = headers.get(name, "").strip()
        if value and _DELIVERY_RE.match(value):
            return value
    return None


def _content_id(provider: str, body: bytes) -> str:
    return f"{provider}:sha256-{hashlib.sha256(body).hexdigest()[:40]}"


def _parse_payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Decode the JSON body; GitHub/Gitea may also post a form with a ``payload`` field."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    raw: bytes | str = body
    if content_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise BadPayloadError("body is not a valid form") from None
        values = form.get("payload")
        if not values:
            raise BadPayloadError("form body has no payload field")
        raw = values[0]
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadPayloadError("body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedPushError("push payload is not a JSON object")
    return payload
