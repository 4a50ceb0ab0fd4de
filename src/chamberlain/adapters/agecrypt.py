"""age encryption for material that must leave a function only as ciphertext.

OpenBao unseal shares are encrypted to the age recipients declared in intent before they are
written anywhere, and SOPS files carry their data key as an age message. This module is the
one place that talks to ``pyrage``; it produces standard age files (ASCII-armored by default)
that the ``age`` CLI opens with ``age -d -i <identity file>``, and opens what ``age -r ... -a``
produced.

Only native X25519 keys are handled (``age1...`` recipients, ``AGE-SECRET-KEY-1...``
identities): they are what ``age-keygen`` makes and what SOPS stores. Error messages never
contain an identity, a recipient string given by the caller, or any plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyrage

IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
RECIPIENT_PREFIX = "age1"


class AgeError(ValueError):
    """Something about an age operation failed; the message is safe to log."""


class AgeKeyError(AgeError):
    """A recipient or identity is missing or malformed."""


class AgeDecryptError(AgeError):
    """The ciphertext is malformed, was tampered with, or no identity opens it."""


def _identity(text: str, index: int) -> pyrage.x25519.Identity:
    candidate = text.strip()
    if not candidate.upper().startswith(IDENTITY_PREFIX):
        raise AgeKeyError(f"identity #{index + 1} is not an age X25519 identity")
    try:
        return pyrage.x25519.Identity.from_str(candidate.upper())
    except pyrage.IdentityError:
        raise AgeKeyError(f"identity #{index + 1} is not a valid age identity") from None


def _identities(identities: Sequence[str]) -> list[pyrage.x25519.Identity]:
    if isinstance(identities, str):
        raise TypeError("identities must be a sequence of strings, not a single string")
    if not identities:
        raise AgeKeyError("no age identity given")
    return [_identity(text, index) for index, text in enumerate(identities)]


def _recipient(text: str, index: int) -> pyrage.x25519.Recipient:
    candidate = text.strip()
    if not candidate.startswith(RECIPIENT_PREFIX):
        raise AgeKeyError(f"recipient #{index + 1} is not an age X25519 recipient (age1...)")
    try:
        return pyrage.x25519.Recipient.from_str(candidate)
    except pyrage.RecipientError:
        raise AgeKeyError(f"recipient #{index + 1} is not a valid age recipient") from None


def _recipients(recipients: Sequence[str]) -> list[pyrage.x25519.Recipient]:
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of strings, not a single string")
    if not recipients:
        raise AgeKeyError("no age recipient given")
    return [_recipient(text, index) for index, text in enumerate(recipients)]


def check_recipients(recipients: Sequence[str]) -> list[str]:
    """``recipients`` stripped of surrounding blanks, after checking each is a valid key."""
    return [str(recipient) for recipient in _recipients(recipients)]


def encrypt_to_recipients(
    plaintext: bytes, recipients: Sequence[str], *, armor: bool = True
) -> bytes:
    """Encrypt ``plaintext`` so that any one of ``recipients`` can open it."""
    parsed = _recipients(recipients)
    try:
        return bytes(pyrage.encrypt(bytes(plaintext), parsed, armored=armor))
    except pyrage.EncryptError as error:
        raise AgeError(f"age encryption failed: {error}") from None


def decrypt_with_identities(ciphertext: bytes, identities: Sequence[str]) -> bytes:
    """Open an age message (binary or armored) with the first identity that fits."""
    parsed = _identities(identities)
    try:
        return bytes(pyrage.decrypt(bytes(ciphertext), parsed))
    except pyrage.DecryptError as error:
        # pyrage's reasons ("No matching keys found", "invalid header") carry no key material.
        raise AgeDecryptError(f"age decryption failed: {error}") from None


def parse_identity_file(text: str) -> list[str]:
    """The identities of an ``age-keygen`` style file: one per line, ``#`` comments skipped.

    Every identity is validated, so a damaged file fails here with its line number rather
    than later as "no matching key".
    """
    identities: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(IDENTITY_PREFIX):
            raise AgeKeyError(f"line {number} of the identity file is not an age identity")
        try:
            pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError:
            raise AgeKeyError(f"line {number} of the identity file is malformed") from None
        identities.append(line)
    if not identities:
        raise AgeKeyError("the identity file holds no age identity")
    return identities


def recipient_of(identity: str) -> str:
    """The public ``age1...`` recipient matching a secret identity."""
    return str(_identity(identity, 0).to_public())


def generate_identity() -> tuple[str, str]:
    """A fresh X25519 key pair as ``(identity, recipient)``."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())
