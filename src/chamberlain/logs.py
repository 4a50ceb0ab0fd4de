"""JSON-lines logging with secret redaction built in, for every logger in the process.

chamberlain's rule is that no secret value ever reaches a log line (DESIGN.md §Security rules).
Steps cannot be trusted to remember that on every code path, so redaction happens here, in
three layers that do not depend on each other:

1. **Registered values.** Steps call :func:`register_secret` on every value they read or
   generate, and the runtime registers the values of secret-looking keys of every incoming
   event. Any registered value is replaced by ``[REDACTED]`` wherever it appears: messages,
   structured fields, exception text, third-party log lines. Values shorter than
   :data:`MIN_SECRET_LENGTH` are ignored: redacting ``"yes"`` everywhere would only add noise.
2. **Secret-looking keys.** A structured field (or a key in :func:`redact_data`) whose name
   says it holds a secret is replaced whatever its value; see :func:`is_secret_key`.
3. **Secret-shaped text.** ``password=...``, ``Bearer ...`` and Vault/OpenBao token shapes in
   free text are masked, for values nobody registered.

Redaction is applied when a log record is *created* (a process-wide record factory), so every
handler (ours, pytest's, gunicorn's) sees the redacted record; a :class:`RedactionFilter` on our
handler and on chamberlain's loggers also covers structured fields.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import IO, Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 6

_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})

# --- layer 1: registered values -------------------------------------------------------------

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Remember ``value`` as secret for the life of the process (never un-registered)."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    global _pattern
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        _pattern = None
    install_record_factory()


# Keys that name an account rather than hold a secret. Their values are identifiers (the
# example's PostgreSQL admin is "postgres") that legitimately appear in paths and replies, so
# registering them would make every reply naming such a path look like a leak.
IDENTIFIER_KEYS = frozenset({"username", "user", "user_name", "user-name", "login", "account"})


def register_secret_data(data: Mapping[str, Any]) -> None:
    """Register every string value of a secret's key/value data, except account identifiers."""
    for key, value in data.items():
        if isinstance(value, str) and str(key).lower() not in IDENTIFIER_KEYS:
            register_secret(value)


def registered_count() -> int:
    """How many values are registered (for diagnostics; never the values)."""
    with _lock:
        return len(_secrets)


def contains_secret(text: str) -> bool:
    """True if ``text`` contains any registered secret value."""
    pattern = _registered_pattern()
    return pattern is not None and pattern.search(text) is not None


def _registered_pattern() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            # Longest first so that a secret containing another one is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return _pattern


# --- layer 2: secret-looking keys -----------------------------------------------------------

# Whole key (lowercase, separators removed) that always names a secret.
_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secretid",
        "token",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "setcookie",
        "privatekey",
        "value",
        "values",
        "data",
        "stringdata",
        "binarydata",
        "plaintext",
        "otp",
        "hmac",
        "signature",
        "keysb64",
        "unsealkeys",
        "unsealkeysb64",
        "recoverykeys",
        "recoverykeysb64",
    }
)
# Last word of a compound key that makes it secret: ``db_password``, ``github-token``.
_SECRET_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
    "apikey",
    "privatekey",
)
# First words that make a ``*_key``/``*_keys`` compound an identifier rather than key material.
_HARMLESS_KEY_PREFIXES = (
    "public",
    "idempotency",
    "sort",
    "partition",
    "cache",
    "dedup",
    "dedupe",
    "routing",
    "lookup",
    "object",
    "kv",
    "label",
    "annotation",
    "primary",
    "foreign",
)
# Last words that describe a secret without being one: ``token_ttl``, ``secret_name``.
_HARMLESS_SUFFIXES = (
    "name",
    "names",
    "path",
    "paths",
    "id",
    "ids",
    "ttl",
    "type",
    "class",
    "count",
    "version",
    "versions",
    "policy",
    "policies",
    "ref",
    "accessor",
    "length",
    "len",
    "url",
    "file",
    "kind",
    "at",
    "due",
    "engine",
    "mount",
    "role",
    "owner",
)
_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: str) -> bool:
    """Whether a mapping key, by its name alone, says its value is secret.

    Deliberately broad (``value``, ``data``, ``*_key``), since masking a harmless field only
    costs a little observability, with exceptions for names that describe a secret without
    holding one (``secret_name``, ``token_ttl``, ``public_key``). A bare ``key`` is a KV entry
    name in chamberlain, not key material; ``secret_id`` (AppRole) is secret.
    """
    words = [w for w in _SPLIT.split(_CAMEL.sub("_", key).lower()) if w]
    if not words:
        return False
    joined = "".join(words)
    if joined in _SECRET_KEYS:
        return True
    if len(words) == 1:
        return False
    last = words[-1]
    if last in _HARMLESS_SUFFIXES:
        return False
    if last in ("key", "keys"):
        return words[0] not in _HARMLESS_KEY_PREFIXES
    tail2 = "".join(words[-2:])
    return last in _SECRET_SUFFIXES or tail2 in _SECRET_SUFFIXES


def secret_values(data: Any) -> list[str]:
    """Every string under a secret-looking key of ``data`` (recursively), to register.

    Base64 strings under ``data``-like keys (Kubernetes Secret objects) are also decoded, so
    the plaintext a step derives from them is known too.
    """
    found: list[str] = []

    def leaves(obj: Any, decode: bool) -> None:
        if isinstance(obj, str):
            found.append(obj)
            if decode:
                decoded = _b64_text(obj)
                if decoded is not None:
                    found.append(decoded)
        elif isinstance(obj, Mapping):
            for item in obj.values():
                leaves(item, decode)
        elif isinstance(obj, list | tuple):
            for item in obj:
                leaves(item, decode)

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            for key, item in obj.items():
                if isinstance(key, str) and is_secret_key(key):
                    leaves(item, decode=key.lower() in ("data", "binarydata"))
                else:
                    walk(item)
        elif isinstance(obj, list | tuple):
            for item in obj:
                walk(item)

    walk(data)
    return [v for v in found if len(v) >= MIN_SECRET_LENGTH]


def _b64_text(text: str) -> str | None:
    if len(text) < 8 or len(text) % 4:
        return None
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


# --- layer 3: secret-shaped text ------------------------------------------------------------

_ASSIGNMENT = re.compile(
    r"(?i)(\b(?:[a-z0-9]+[_-])*(?:password|passwd|passphrase|secret|token|api[_-]?key|"
    r"private[_-]?key|credentials?)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_VAULT_TOKEN = re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{20,}")


def redact(text: str) -> str:
    """``text`` with registered values and secret-shaped substrings replaced by [REDACTED]."""
    pattern = _registered_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _VAULT_TOKEN.sub(REDACTED, text)


def redact_data(obj: Any) -> Any:
    """A copy of a JSON-like structure safe to log: secret keys masked, strings redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {
            key: (REDACTED if isinstance(key, str) and is_secret_key(key) else redact_data(item))
            for key, item in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact_data(item) for item in obj]
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    return redact(str(obj))


# --- wiring into logging ---------------------------------------------------------------------


def _redact_record(record: logging.LogRecord) -> None:
    """Mutate ``record`` in place so that no handler can see a secret in it."""
    if getattr(record, "_chamberlain_redacted", False):
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping) and not getattr(record, "_chamberlain_fields", False):
            record.fields = redact_data(fields)
            record._chamberlain_fields = True
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not hide the message
        message = f"{record.msg!s} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        if not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # The exception object itself still holds the raw text: drop it once rendered.
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    fields = getattr(record, "fields", None)
    if isinstance(fields, Mapping):
        record.fields = redact_data(fields)
        record._chamberlain_fields = True
    record._chamberlain_redacted = True


class RedactionFilter(logging.Filter):
    """Redacts every record it sees (never drops one); attach it to handlers and loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_factory_lock = threading.Lock()


def install_record_factory() -> None:
    """Make every LogRecord created in this process redact itself (idempotent)."""
    with _factory_lock:
        previous = logging.getLogRecordFactory()
        if getattr(previous, "_chamberlain", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        factory._chamberlain = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        _redact_record(record)
        ts = _dt.datetime.fromtimestamp(record.created, tz=_dt.timezone.utc)
        line: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(str(record.msg)),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, item in redact_data(fields).items():
                line[f"field_{key}" if key in _RESERVED else str(key)] = item
        if record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(record.stack_info)
        return json.dumps(line, default=lambda o: redact(str(o)), ensure_ascii=False)


_HANDLER_MARK = "_chamberlain_handler"


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to a fixed stream, or to whatever ``sys.stderr`` is at emit time.

    Looking stderr up late keeps logs flowing when something (pytest's capture, a daemon)
    swaps ``sys.stderr`` after :func:`configure` ran.
    """

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self.fixed: IO[str] | None = stream
        setattr(self, _HANDLER_MARK, True)
        self.setFormatter(JsonFormatter())
        self.addFilter(RedactionFilter())

    @property
    def stream(self) -> IO[str]:
        return self.fixed if self.fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str] | None) -> None:
        self.fixed = value if value is not None and value is not sys.stderr else None


def is_configured() -> bool:
    """Whether :func:`configure` has installed its handler on the root logger."""
    return any(getattr(h, _HANDLER_MARK, False) for h in logging.getLogger().handlers)


def configure(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every logger's records, as redacted JSON lines, to ``stream`` (stderr by default).

    Idempotent: calling it again updates the level and stream of the one handler it owns.
    Plain ``StreamHandler`` objects left on the root logger by ``logging.basicConfig`` (the
    func-python middleware calls it at import) are removed, as they would print unformatted
    duplicates; subclasses (pytest's capture handlers, file handlers) are left alone.
    """
    install_record_factory()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _JsonHandler)), None)
    if handler is None:
        handler = _JsonHandler(stream)
        root.addHandler(handler)
    else:
        handler.fixed = stream
    for other in list(root.handlers):
        if type(other) is logging.StreamHandler and other is not handler:
            root.removeHandler(other)
    root.setLevel(level.upper())
    for name in ("werkzeug", "hvac", "urllib3", "gunicorn", "flask", "hypercorn"):
        _attach_filter(logging.getLogger(name))


def _attach_filter(logger: logging.Logger) -> None:
    if not any(isinstance(f, RedactionFilter) for f in logger.filters):
        logger.addFilter(RedactionFilter())


def get_logger(name: str) -> logging.Logger:
    """A logger whose records (fields included) are redacted before any handler sees them."""
    install_record_factory()
    logger = logging.getLogger(name)
    _attach_filter(logger)
    return logger


def log(logger: logging.Logger, level: int | str, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (redacted like everything else)."""
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    if logger.isEnabledFor(numeric):
        logger.log(numeric, msg, extra={"fields": redact_data(fields)})
