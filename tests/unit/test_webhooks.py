"""Webhook verification and normalisation, with payloads shaped like the providers send them."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from chamberlain.ingress.webhooks import (
    MAX_BODY,
    BadPayloadError,
    MalformedPushError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnknownProviderError,
    WebhookError,
    verify_and_normalize,
)

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
ZERO = "0" * 40
SECRETS = {
    "github": "gh-webhook-secret-3f9a",
    "gitea": "gitea-webhook-secret-77c1",
    "gitlab": "gitlab-webhook-token-b20e",
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def github_headers(
    body: bytes,
    *,
    secret: str = SECRETS["github"],
    event: str = "push",
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": f"sha256={digest}",
        "User-Agent": "GitHub-Hookshot/044aadd",
    }


def gitea_headers(body: bytes, *, secret: str = SECRETS["gitea"]) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # Gitea also sends GitHub's and Gogs' headers for compatibility.
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Event-Type": "push",
        "X-Gitea-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
        "X-Gitea-Signature": digest,
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
        "X-Gogs-Event": "push",
    }


def gitlab_headers(*, token: str = SECRETS["gitlab"], event: str = "Push Hook") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Webhook-UUID": "16c8c8b2-8e5e-4b9b-a3a4-6f1f0cfb3c16",
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "Idempotency-Key": "908a6d9e-45fd-46c8-97e6-c4f350f219dd",
    }


def refused(headers: dict[str, str], body: bytes, **kwargs: Any) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        verify_and_normalize(headers, body, SECRETS, **kwargs)
    error = info.value
    for secret in SECRETS.values():
        assert secret not in str(error)
    for value in headers.values():
        if len(value) == 64 or value.startswith("sha256="):
            assert value.removeprefix("sha256=") not in str(error)
    return error


# -- valid pushes ------------------------------------------------------------------------------


def test_github_push_is_normalized() -> None:
    body = fixture("github-push.json")
    result = verify_and_normalize(github_headers(body), body, SECRETS)
    assert result.kind == "push" and result.status == 202
    data = result.data
    assert data is not None
    assert data["provider"] == "github"
    assert data["repository"] == {
        "url": "https://github.com/acme/platform-intent.git",
        "name": "acme/platform-intent",
    }
    assert data["ref"] == "refs/heads/main"
    assert data["before"] == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert data["after"] == "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327"
    assert (data["created"], data["deleted"], data["forced"]) == (False, False, False)
    assert [c["id"] for c in data["commits"]] == [
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
    ]
    assert data["commits"][0]["added"] == ["platform-data/orders-db/orders-api.yaml"]
    assert data["commits"][1]["removed"] == ["platform-data/legacy/old.yaml"]
    assert data["delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert result.event_id == "github:72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_gitea_push_is_verified_with_the_gitea_secret() -> None:
    body = fixture("gitea-push.json")
    result = verify_and_normalize(gitea_headers(body), body, SECRETS)
    assert result.provider == "gitea" and result.kind == "push"
    assert result.data is not None
    assert result.data["provider"] == "gitea"
    assert result.data["repository"]["name"] == "acme/platform-intent"
    # Gitea sends no created/deleted/forced fields: derived from the shas.
    assert (result.data["created"], result.data["deleted"]) == (False, False)
    assert result.event_id == "gitea:f6266f16-1bf3-46a5-9ea4-602e06ead473"
    # Signed with GitHub's secret instead: refused although an X-GitHub-Event header is present.
    assert refused(gitea_headers(body, secret=SECRETS["github"]), body).status == 401


def test_gitlab_push_with_the_right_token() -> None:
    body = fixture("gitlab-push.json")
    result = verify_and_normalize(gitlab_headers(), body, SECRETS)
    assert result.kind == "push" and result.data is not None
    assert result.data["provider"] == "gitlab"
    assert result.data["repository"] == {
        "url": "https://gitlab.example.com/acme/platform-intent.git",
        "name": "acme/platform-intent",
    }
    assert len(result.data["commits"]) == 2
    # Idempotency-Key is the id GitLab keeps across its retries.
    assert result.event_id == "gitlab:908a6d9e-45fd-46c8-97e6-c4f350f219dd"


@pytest.mark.parametrize(
    ("name", "headers_for"),
    [
        ("github-tag-push.json", lambda b: github_headers(b)),
        ("gitlab-tag-push.json", lambda b: gitlab_headers(event="Tag Push Hook")),
    ],
)
def test_tag_pushes_are_forwarded_with_their_ref(name: str, headers_for: Any) -> None:
    body = fixture(name)
    result = verify_and_normalize(headers_for(body), body, SECRETS)
    assert result.kind == "push" and result.data is not None
    assert result.data["ref"] == "refs/tags/v1.2.0"
    assert result.data["created"] is True and result.data["before"] == ZERO


@pytest.mark.parametrize(
    ("name", "headers_for"),
    [
        ("github-branch-create.json", lambda b: github_headers(b)),
        ("gitlab-branch-create.json", lambda b: gitlab_headers()),
    ],
)
def test_branch_creation(name: str, headers_for: Any) -> None:
    body = fixture(name)
    data = verify_and_normalize(headers_for(body), body, SECRETS).data
    assert data is not None
    assert data["ref"] == "refs/heads/feature-x"
    assert data["created"] is True and data["deleted"] is False and data["before"] == ZERO


@pytest.mark.parametrize(
    ("name", "headers_for"),
    [
        ("github-branch-delete.json", lambda b: github_headers(b)),
        ("gitlab-branch-delete.json", lambda b: gitlab_headers()),
    ],
)
def test_branch_deletion_is_forwarded_as_deleted(name: str, headers_for: Any) -> None:
    body = fixture(name)
    result = verify_and_normalize(headers_for(body), body, SECRETS)
    assert result.kind == "push" and result.data is not None
    assert result.data["deleted"] is True and result.data["after"] == ZERO
    assert result.data["ref"] == "refs/heads/feature-x"
    assert result.data["commits"] == []


def test_headers_are_case_insensitive() -> None:
    body = fixture("github-push.json")
    lower = {k.lower(): v for k, v in github_headers(body).items()}
    upper = {k.upper(): v for k, v in github_headers(body).items()}
    assert verify_and_normalize(lower, body, SECRETS).kind == "push"
    assert verify_and_normalize(upper, body, SECRETS).kind == "push"


def test_form_encoded_github_delivery_is_verified_over_the_raw_body() -> None:
    payload = fixture("github-push.json").decode()
    body = urlencode({"payload": payload}).encode()
    headers = github_headers(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    result = verify_and_normalize(headers, body, SECRETS)
    assert result.data is not None and result.data["ref"] == "refs/heads/main"


# -- events that are not pushes ------------------------------------------------------------------


def test_github_ping_is_acknowledged_and_ignored() -> None:
    body = fixture("github-ping.json")
    result = verify_and_normalize(github_headers(body, event="ping"), body, SECRETS)
    assert (result.kind, result.status, result.data) == ("ignored", 200, None)


def test_unsigned_ping_is_still_refused() -> None:
    body = fixture("github-ping.json")
    headers = github_headers(body, event="ping")
    del headers["X-Hub-Signature-256"]
    assert refused(headers, body).status == 401


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers_for", "signature_header", "fixture_name"),
    [
        (github_headers, "X-Hub-Signature-256", "github-push.json"),
        (gitea_headers, "X-Gitea-Signature", "gitea-push.json"),
        (lambda b: gitlab_headers(), "X-Gitlab-Token", "gitlab-push.json"),
    ],
)
def test_missing_signature_is_401(
    headers_for: Any, signature_header: str, fixture_name: str
) -> None:
    body = fixture(fixture_name)
    headers = headers_for(body)
    del headers[signature_header]
    error = refused(headers, body)
    assert isinstance(error, UnauthorizedError) and error.status == 401
    assert signature_header in error.reason


def test_wrong_github_signature_is_401() -> None:
    body = fixture("github-push.json")
    assert refused(github_headers(body, secret="not-the-secret"), body).status == 401


def test_tampered_body_is_401() -> None:
    body = fixture("github-push.json")
    headers = github_headers(body)
    tampered = body.replace(b"refs/heads/main", b"refs/heads/evil")
    assert refused(headers, tampered).status == 401
    gitea_body = fixture("gitea-push.json")
    gitea = gitea_headers(gitea_body)
    assert refused(gitea, gitea_body + b" ").status == 401


def test_malformed_signature_header_is_401() -> None:
    body = fixture("github-push.json")
    headers = github_headers(body)
    headers["X-Hub-Signature-256"] = "sha1=" + headers["X-Hub-Signature-256"][7:47]
    assert refused(headers, body).status == 401
    headers["X-Hub-Signature-256"] = "sha256=zz" + "0" * 62
    assert refused(headers, body).status == 401


def test_gitlab_token_must_match_exactly() -> None:
    body = fixture("gitlab-push.json")
    right = SECRETS["gitlab"]
    for wrong in (right[:-1], right + "x", right[:-1] + "f", right.upper(), "tökén-ünïcode"):
        error = refused(gitlab_headers(token=wrong), body)
        assert error.status == 401


def test_provider_without_secret_is_401() -> None:
    body = fixture("gitlab-push.json")
    with pytest.raises(UnauthorizedError) as info:
        verify_and_normalize(gitlab_headers(), body, {"github": SECRETS["github"]})
    assert "gitlab" in info.value.reason
    # An empty secret counts as not configured (an empty HMAC key would accept forgeries).
    with pytest.raises(UnauthorizedError):
        verify_and_normalize(gitlab_headers(token=""), body, {"gitlab": ""})


def test_unknown_provider_is_400() -> None:
    error = refused({"Content-Type": "application/json", "X-Event-Key": "repo:push"}, b"{}")
    assert isinstance(error, UnknownProviderError) and error.status == 400


def test_path_provider_must_match_headers() -> None:
    body = fixture("github-push.json")
    error = refused(github_headers(body), body, provider="gitlab")
    assert error.status == 400


def test_signed_non_json_is_400() -> None:
    body = b"this is not json"
    error = refused(github_headers(body), body)
    assert isinstance(error, BadPayloadError) and error.status == 400


def test_signed_malformed_push_is_422() -> None:
    payload = json.loads(fixture("github-push.json"))
    del payload["after"]
    body = json.dumps(payload).encode()
    error = refused(github_headers(body), body)
    assert isinstance(error, MalformedPushError) and error.status == 422
    body = b"[1, 2, 3]"
    assert refused(github_headers(body), body).status == 422


def test_body_over_10_mib_is_413_before_anything_else() -> None:
    body = b"x" * (MAX_BODY + 1)
    # Even a correctly signed body is refused, and no headers are needed to refuse it.
    assert isinstance(refused(github_headers(body), body), PayloadTooLargeError)
    assert refused({}, body).status == 413
    assert MAX_BODY == 10 * 1024 * 1024


# -- replays -----------------------------------------------------------------------------------


def test_replayed_delivery_gets_the_same_event_id() -> None:
    body = fixture("github-push.json")
    first = verify_and_normalize(github_headers(body), body, SECRETS)
    again = verify_and_normalize(github_headers(body), body, SECRETS)
    other = verify_and_normalize(github_headers(body, delivery="another-delivery"), body, SECRETS)
    assert first.event_id == again.event_id
    assert first.data == again.data
    assert other.event_id != first.event_id


def test_delivery_without_id_gets_a_stable_content_id() -> None:
    body = fixture("gitlab-push.json")
    headers = gitlab_headers()
    for name in ("Idempotency-Key", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID"):
        del headers[name]
    first = verify_and_normalize(headers, body, SECRETS)
    again = verify_and_normalize(headers, body, SECRETS)
    assert first.delivery is None and first.data is not None and first.data["delivery"] is None
    assert first.event_id == again.event_id and first.event_id.startswith("gitlab:sha256-")
