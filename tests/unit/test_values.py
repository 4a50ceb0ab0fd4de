"""Generated values: the right shape per generator type, from a CSPRNG, registered for redaction."""

from __future__ import annotations

import base64
import string
import uuid

import pytest

from chamberlain.logs import contains_secret, redact
from chamberlain.model.intent import Generator
from chamberlain.steps.values import PUNCTUATION, generate, generate_all


@pytest.mark.parametrize("length", [16, 32, 100])
def test_passwords_have_every_character_class(length: int) -> None:
    for _ in range(50):
        value = generate(Generator("password", length=length))
        assert len(value) == length
        assert set(value) <= set(string.ascii_letters + string.digits + PUNCTUATION)
        for group in (string.ascii_lowercase, string.ascii_uppercase, string.digits, PUNCTUATION):
            assert any(c in group for c in value)


def test_password_punctuation_is_safe_in_urls_shells_and_env_files() -> None:
    assert not set(PUNCTUATION) & set("\"'`\\$@:/?& \t\n")


def test_each_generator_type_has_its_shape() -> None:
    alnum = generate(Generator("alphanumeric", length=24))
    assert len(alnum) == 24 and alnum.isalnum() and alnum.isascii()
    hexa = generate(Generator("hex", nbytes=20))
    assert len(hexa) == 40 and int(hexa, 16) >= 0
    b64 = generate(Generator("base64", nbytes=64))
    assert len(base64.b64decode(b64, validate=True)) == 64  # standard alphabet, padded
    ident = generate(Generator("uuid"))
    assert uuid.UUID(ident).version == 4


def test_values_are_unique_and_registered_for_redaction() -> None:
    values = generate_all({"a": Generator("password", length=32), "b": Generator("hex", nbytes=32)})
    assert set(values) == {"a", "b"}
    many = {generate(Generator("alphanumeric", length=16)) for _ in range(200)}
    assert len(many) == 200
    for value in values.values():
        assert contains_secret(f"oops {value} leaked")
        assert value not in redact(f"log line with {value}")


def test_defaults_apply_when_the_spec_omits_sizes() -> None:
    assert len(generate(Generator("password"))) == 32
    assert len(generate(Generator("hex"))) == 64
