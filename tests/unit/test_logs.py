"""JSON log lines and the redaction layer: what an operator reads must never hold a secret."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator

import pytest

from chamberlain import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Route chamberlain's JSON handler into a buffer for one test, then back to stderr."""
    buffer = io.StringIO()
    logs.configure("DEBUG", stream=buffer)
    yield buffer
    logs.configure("INFO", stream=None)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def fresh_secret() -> str:
    return f"s3cr3t-{secrets.token_hex(8)}"


def test_a_log_line_is_one_json_object_with_fields(stream: io.StringIO) -> None:
    logger = logs.get_logger("chamberlain.test.shape")
    logs.log(logger, "info", "rotated", path="platform-data/db/app", version=3)

    [line] = lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "chamberlain.test.shape"
    assert line["msg"] == "rotated"
    assert line["path"] == "platform-data/db/app"
    assert line["version"] == 3
    assert str(line["ts"]).endswith("Z")


def test_fields_cannot_overwrite_the_line_envelope(stream: io.StringIO) -> None:
    logs.log(logs.get_logger("chamberlain.test.envelope"), "warning", "real", ts="fake")

    [line] = lines(stream)
    assert line["ts"] != "fake"
    assert line["field_ts"] == "fake"


def test_configure_is_idempotent_and_moves_the_stream(stream: io.StringIO) -> None:
    second = io.StringIO()
    logs.configure("INFO", stream=second)
    logs.configure("INFO", stream=second)
    logs.get_logger("chamberlain.test.idem").info("once")

    ours = [h for h in logging.getLogger().handlers if getattr(h, "_chamberlain_handler", False)]
    assert len(ours) == 1
    assert [line["msg"] for line in lines(second)] == ["once"]
    assert stream.getvalue() == ""


def test_configure_drops_basic_config_handlers(stream: io.StringIO) -> None:
    plain = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(plain)
    logs.configure("DEBUG", stream=stream)
    assert plain not in logging.getLogger().handlers


def test_registered_value_is_redacted_in_message_args_fields_and_exceptions(
    stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    value = fresh_secret()
    logs.register_secret(value)
    logger = logs.get_logger("chamberlain.test.registered")
    caplog.set_level(logging.DEBUG)

    logger.info(f"inline {value}")
    logger.info("as arg %s", value)
    logs.log(logger, "info", "as field", note=f"prefix-{value}-suffix", items=[value])
    try:
        raise RuntimeError(f"connection refused for {value}")
    except RuntimeError:
        logger.exception("step crashed")

    output = stream.getvalue()
    assert value not in output
    assert output.count(logs.REDACTED) >= 5
    assert "connection refused for [REDACTED]" in output
    for record in caplog.records:
        assert value not in record.getMessage()
        assert value not in repr(record.__dict__)
        assert value not in (record.exc_text or "")
    assert value not in caplog.text


def test_short_values_are_not_registered(stream: io.StringIO) -> None:
    logs.register_secret("yes")
    logs.get_logger("chamberlain.test.short").info("yes, done")
    assert lines(stream)[0]["msg"] == "yes, done"


def test_third_party_loggers_are_redacted(stream: io.StringIO) -> None:
    value = fresh_secret()
    logs.register_secret(value)
    for name in ("urllib3", "urllib3.connectionpool", "werkzeug", "hvac.adapters", "gunicorn"):
        logging.getLogger(name).warning("%s said %s", name, value)

    output = stream.getvalue()
    assert value not in output
    assert len(lines(stream)) == 5


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("adminPassword", True),
        ("token", True),
        ("github-token", True),
        ("client_secret", True),
        ("secret_id", True),
        ("private_key", True),
        ("apiKey", True),
        ("unseal_keys_b64", True),
        ("value", True),
        ("data", True),
        ("stringData", True),
        ("credentials", True),
        ("secret_name", False),
        ("token_ttl", False),
        ("public_key", False),
        ("key", False),
        ("lease_id", False),
        ("leaseId", False),
        ("rootTokenRevoked", False),
        ("path", False),
        ("environment", False),
        ("idempotency_key", False),
    ],
)
def test_secret_looking_keys(key: str, secret: bool) -> None:
    assert logs.is_secret_key(key) is secret


def test_secret_keys_are_masked_whatever_their_value(stream: io.StringIO) -> None:
    logs.log(
        logs.get_logger("chamberlain.test.keys"),
        "info",
        "login",
        password="short",
        user="alice",
        nested={"api_key": 12345, "name": "n"},
    )
    [line] = lines(stream)
    assert line["password"] == logs.REDACTED
    assert line["user"] == "alice"
    assert line["nested"] == {"api_key": logs.REDACTED, "name": "n"}


def test_redact_data_walks_structures() -> None:
    value = fresh_secret()
    logs.register_secret(value)
    data = {"items": [{"token": "abcdefgh"}, f"x{value}x"], "count": 2, "raw": b"\x00\x01"}
    clean = logs.redact_data(data)
    assert clean == {
        "items": [{"token": logs.REDACTED}, f"x{logs.REDACTED}x"],
        "count": 2,
        "raw": "<2 bytes>",
    }
    assert data["count"] == 2  # input untouched


@pytest.mark.parametrize(
    "text",
    [
        "connect with password=hunter2hunter2 failed",
        'config {"db_password": "correct-horse"}',
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc",
        "token hvs.CAESIJ3k9b1e2f3a4b5c6d7e8f9a0b1c2d3e4f",
    ],
)
def test_secret_shaped_text_is_masked(text: str) -> None:
    redacted = logs.redact(text)
    assert logs.REDACTED in redacted
    for leaked in ("hunter2hunter2", "correct-horse", "eyJhbGciOiJIUzI1NiJ9", "CAESIJ3k9b1e"):
        assert leaked not in redacted


def test_secret_values_finds_nested_and_base64_values() -> None:
    plain = fresh_secret()
    import base64

    encoded = base64.b64encode(plain.encode()).decode()
    data = {
        "task": "rotate-everything",
        "password": "pw-123456",
        "nested": [{"client_secret": {"a": "deep-value-1"}}],
        "object": {"kind": "Secret", "data": {"password": encoded}},
    }
    found = logs.secret_values(data)
    assert {"pw-123456", "deep-value-1", encoded, plain} <= set(found)
    assert "rotate-everything" not in found


def test_contains_secret() -> None:
    value = fresh_secret()
    assert not logs.contains_secret(f"before {value}")
    logs.register_secret(value)
    assert logs.contains_secret(f"before {value}")


def test_handlers_that_run_before_ours_see_redacted_records(stream: io.StringIO) -> None:
    value = fresh_secret()
    logs.register_secret(value)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Snapshot now: our own handler runs later and would mutate the same record.
            seen.append(logging.Formatter().format(record) + repr(record.__dict__))

    first = Collect()
    root = logging.getLogger()
    root.handlers.insert(0, first)  # e.g. a handler some library installed before configure()
    try:
        logging.getLogger("urllib3.connectionpool").warning("pool said %s", value)
        try:
            raise ConnectionError(value)
        except ConnectionError:
            logging.getLogger("hvac.adapters").exception("request failed")
    finally:
        root.removeHandler(first)

    assert len(seen) == 2
    for text in seen:
        assert value not in text
    assert "pool said [REDACTED]" in seen[0]


def test_secret_data_registration_skips_account_identifiers() -> None:
    from chamberlain.logs import contains_secret, register_secret_data

    register_secret_data({"username": "pg-admin-identifier", "password": "pw-canary-4f1e9a2c"})
    assert contains_secret("password pw-canary-4f1e9a2c")
    # an account name appears in paths and replies legitimately; it is not a secret value
    assert not contains_secret("platform-data/pg-admin-identifier/x")
