"""Generate secret values from a generator spec with the operating system's CSPRNG.

The only place chamberlain makes values. Each value is registered for log redaction the moment
it exists, before it can reach the authority, a log line or an exception.

* ``password``: ``length`` characters from lowercase, uppercase, digits and :data:`PUNCTUATION`,
  at least one of each class. The punctuation set avoids quotes, backslash, ``$``, ``` ` ```,
  ``@``, ``:``, ``/``, ``?``, ``&`` and whitespace, so a password survives connection URLs,
  shells and ``.env`` files unescaped.
* ``alphanumeric``: ``length`` characters from letters and digits.
* ``hex``: ``nbytes`` random bytes, lowercase hex (2 characters per byte).
* ``base64``: ``nbytes`` random bytes, STANDARD base64 with padding (RFC 4648 section 4, the
  alphabet most libraries decode by default; use hex where a URL-safe value is needed).
* ``uuid``: a random (version 4) UUID in its canonical 36-character form.
"""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from collections.abc import Mapping

from chamberlain.logs import register_secret
from chamberlain.model.intent import DEFAULT_BYTES, DEFAULT_LENGTH, Generator

PUNCTUATION = "!#%+-.=^_~"
PASSWORD_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, PUNCTUATION)
ALPHANUMERIC = string.ascii_letters + string.digits


def generate(generator: Generator) -> str:
    """A fresh value for ``generator`` (registered for redaction before it is returned)."""
    if generator.type == "password":
        value = _password(generator.length or DEFAULT_LENGTH)
    elif generator.type == "alphanumeric":
        value = _choose(ALPHANUMERIC, generator.length or DEFAULT_LENGTH)
    elif generator.type == "hex":
        value = secrets.token_hex(generator.nbytes or DEFAULT_BYTES)
    elif generator.type == "base64":
        raw = secrets.token_bytes(generator.nbytes or DEFAULT_BYTES)
        value = base64.b64encode(raw).decode("ascii")
    elif generator.type == "uuid":
        value = str(uuid.uuid4())
    else:  # pragma: no cover - the schema admits only the types above
        raise ValueError(f"unknown generator type {generator.type!r}")
    register_secret(value)
    return value


def generate_all(generators: Mapping[str, Generator]) -> dict[str, str]:
    """One value per key (a secret's whole data)."""
    return {key: generate(spec) for key, spec in generators.items()}


def _choose(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _password(length: int) -> str:
    """Uniform over all strings of ``length`` that contain every class (rejection sampling)."""
    if length < len(PASSWORD_CLASSES):
        raise ValueError(f"a password needs at least {len(PASSWORD_CLASSES)} characters")
    alphabet = "".join(PASSWORD_CLASSES)
    while True:
        candidate = _choose(alphabet, length)
        if all(any(c in group for c in candidate) for group in PASSWORD_CLASSES):
            return candidate
