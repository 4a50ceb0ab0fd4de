"""The git-ingress Flask app: real HTTP requests in, validated git.push.v1 CloudEvents out."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent
from flask.testing import FlaskClient

from chamberlain.ingress.webhook_app import create_webhook_app, from_env, http_emitter
from chamberlain.ingress.webhooks import MAX_BODY
from chamberlain.model.events import parse_http, validate_event
from tests.harness.gitrepo import IntentRepo

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
SECRETS = {"github": "gh-secret-for-app-0a1b", "gitlab": "gitlab-token-for-app-9f8e"}


def signed(body: bytes, *, delivery: str = "d-0001", event: str = "push") -> dict[str, str]:
    digest = hmac.new(SECRETS["github"].encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


@pytest.fixture
def emitted() -> list[BaseCloudEvent]:
    return []


@pytest.fixture
def client(emitted: list[BaseCloudEvent]) -> FlaskClient:
    return create_webhook_app(SECRETS, emitted.append).test_client()


def test_real_push_becomes_a_valid_git_push_event(
    client: FlaskClient, emitted: list[BaseCloudEvent], intent_repo: IntentRepo
) -> None:
    intent_repo.commit_and_push({"intent/a.yaml": "a: 1\n"}, "first")
    payload = intent_repo.commit_and_push(
        {"intent/b.yaml": "b: 2\n", "intent/a.yaml": None}, "second"
    )
    body = json.dumps(payload).encode()

    response = client.post("/webhooks/github", data=body, headers=signed(body))

    assert response.status_code == 202
    assert response.get_json()["id"] == "github:d-0001"
    assert len(emitted) == 1
    event = emitted[0]
    validate_event(event)
    assert event.get_type() == "dev.chamberlain.git.push.v1"
    assert event.get_id() == "github:d-0001"
    assert event.get_source() == intent_repo.url
    assert event.get_subject() == "refs/heads/main"
    data = event.get_data()
    assert isinstance(data, dict)
    assert data["after"] == intent_repo.head()
    assert data["commits"][-1]["added"] == ["intent/b.yaml"]
    assert data["commits"][-1]["removed"] == ["intent/a.yaml"]


def test_replayed_delivery_carries_the_same_event_id(
    client: FlaskClient, emitted: list[BaseCloudEvent]
) -> None:
    body = (FIXTURES / "github-push.json").read_bytes()
    for _ in range(2):
        assert (
            client.post("/", data=body, headers=signed(body, delivery="abc-123")).status_code == 202
        )
    assert [e.get_id() for e in emitted] == ["github:abc-123", "github:abc-123"]


def test_gitlab_tag_push_and_branch_deletion_are_forwarded(
    client: FlaskClient, emitted: list[BaseCloudEvent]
) -> None:
    for name, event in (
        ("gitlab-tag-push.json", "Tag Push Hook"),
        ("gitlab-branch-delete.json", "Push Hook"),
    ):
        body = (FIXTURES / name).read_bytes()
        headers = {"X-Gitlab-Event": event, "X-Gitlab-Token": SECRETS["gitlab"]}
        assert client.post("/webhooks/gitlab", data=body, headers=headers).status_code == 202
    for event in emitted:
        validate_event(event)
    assert [e.get_subject() for e in emitted] == ["refs/tags/v1.2.0", "refs/heads/feature-x"]
    last = emitted[1].get_data()
    assert isinstance(last, dict) and last["deleted"] is True


def test_refusals_emit_nothing_and_never_echo_secrets(
    client: FlaskClient, emitted: list[BaseCloudEvent], caplog: pytest.LogCaptureFixture
) -> None:
    body = (FIXTURES / "github-push.json").read_bytes()
    good = signed(body)
    forged = dict(good, **{"X-Hub-Signature-256": "sha256=" + "ab" * 32})
    unsigned = {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}
    gitea = {"X-Gitea-Event": "push", "X-Gitea-Signature": "cd" * 32}  # no gitea secret here
    cases = [
        (forged, body, 401),
        (unsigned, body, 401),
        (gitea, body, 401),
        ({"X-GitLab-Event": "Push Hook", "X-Gitlab-Token": "wrong-token"}, body, 401),
        ({"Content-Type": "application/json"}, body, 400),
        (signed(b"not json"), b"not json", 400),
        (signed(b'{"ref": "refs/heads/main"}'), b'{"ref": "refs/heads/main"}', 422),
    ]
    for headers, payload, status in cases:
        response = client.post("/", data=payload, headers=headers)
        assert response.status_code == status, response.get_data(as_text=True)
        text = response.get_data(as_text=True)
        assert all(secret not in text for secret in SECRETS.values())
        assert good["X-Hub-Signature-256"][7:] not in text
    assert emitted == []
    assert "webhook refused" in caplog.text
    assert all(secret not in caplog.text for secret in SECRETS.values())
    assert good["X-Hub-Signature-256"][7:] not in caplog.text


def test_ping_is_answered_200_without_an_event(
    client: FlaskClient, emitted: list[BaseCloudEvent]
) -> None:
    body = (FIXTURES / "github-ping.json").read_bytes()
    response = client.post("/webhooks/github", data=body, headers=signed(body, event="ping"))
    assert response.status_code == 200
    assert emitted == []


def test_unknown_provider_path_is_404(client: FlaskClient) -> None:
    body = (FIXTURES / "github-push.json").read_bytes()
    assert client.post("/webhooks/bitbucket", data=body, headers=signed(body)).status_code == 404


class CountingStream:
    """A request body that says how much of it was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        n = (
            self.size - self.read_bytes
            if n is None or n < 0
            else min(n, self.size - self.read_bytes)
        )
        self.read_bytes += n
        return b"x" * n

    def readline(self, limit: int = -1) -> bytes:
        return self.read(limit)


def test_body_over_10_mib_is_refused_without_reading_it(
    client: FlaskClient, emitted: list[BaseCloudEvent]
) -> None:
    size = MAX_BODY + 1
    stream = CountingStream(size)
    response = client.post(
        "/",
        headers=signed(b"irrelevant"),
        environ_overrides={"wsgi.input": stream, "CONTENT_LENGTH": str(size)},
    )
    assert response.status_code == 413
    assert stream.read_bytes < 1024 * 1024
    assert emitted == []


def test_body_at_the_limit_is_read(client: FlaskClient) -> None:
    body = b" " * MAX_BODY
    # Exactly 10 MiB is accepted for verification (then refused: it is not JSON).
    assert client.post("/", data=body, headers=signed(body)).status_code == 400


# -- the HTTP emitter and the production factory ------------------------------------------------


class Sink(ThreadingHTTPServer):
    """A tiny broker stand-in that records the CloudEvents POSTed to it."""

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.received: list[BaseCloudEvent] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                sink.received.append(parse_http(dict(self.headers.items()), body))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_from_env_posts_binary_events_to_k_sink(sink: Sink) -> None:
    env = {
        "K_SINK": sink.url,
        "K_CE_OVERRIDES": json.dumps({"extensions": {"cluster": "prod-eu"}}),
        "CHAMBERLAIN_WEBHOOK_SECRET_GITHUB": SECRETS["github"],
    }
    client = from_env(environ=env).test_client()
    body = (FIXTURES / "github-push.json").read_bytes()
    assert client.post("/", data=body, headers=signed(body)).status_code == 202
    assert len(sink.received) == 1
    event = sink.received[0]
    assert event.get_id() == "github:d-0001"
    assert event.get_extension("cluster") == "prod-eu"
    data = event.get_data()
    assert isinstance(data, dict) and data["ref"] == "refs/heads/main"


def test_failed_emit_answers_503_so_the_provider_retries(sink: Sink) -> None:
    body = (FIXTURES / "github-push.json").read_bytes()
    sink.status = 500
    refusing = create_webhook_app(SECRETS, http_emitter(sink.url)).test_client()
    assert refusing.post("/", data=body, headers=signed(body)).status_code == 503

    sink.server_close()  # nothing listens any more
    unreachable = create_webhook_app(SECRETS, http_emitter(sink.url, timeout=2)).test_client()
    assert unreachable.post("/", data=body, headers=signed(body)).status_code == 503


def test_from_env_requires_a_secret_and_a_sink() -> None:
    with pytest.raises(RuntimeError, match="CHAMBERLAIN_WEBHOOK_SECRET_GITHUB"):
        from_env(environ={"K_SINK": "http://127.0.0.1:9/"})
    with pytest.raises(RuntimeError, match="K_SINK"):
        from_env(environ={"CHAMBERLAIN_WEBHOOK_SECRET_GITLAB": "x" * 20})
