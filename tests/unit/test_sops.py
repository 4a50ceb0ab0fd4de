"""SOPS-age files: decrypted as the real ``sops`` does, refused when anything was altered.

Reference vectors were written by the real ``sops`` (3.7.1 in ``../shared/reference/sops-age``,
3.11.0 in ``tests/data/sops``, see its README); ``*.expected.json`` is what ``sops decrypt``
printed for them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chamberlain.adapters import agecrypt
from chamberlain.adapters.sops import (
    SopsDecryptError,
    SopsError,
    SopsFormatError,
    SopsMacMismatchError,
    SopsNoMatchingKeyError,
    decrypt_sops_yaml,
    encrypt_sops_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "sops"
REFERENCE = ROOT.parent / "shared" / "reference" / "sops-age"
EXAMPLES = ROOT / "examples"


def identities(name: str) -> list[str]:
    return agecrypt.parse_identity_file((DATA / f"identity-{name}.txt").read_text())


def strictly_equal(left: Any, right: Any) -> bool:
    """Equality that also tells ``1`` from ``1.0`` and ``True`` from ``1``."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(strictly_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(strictly_equal, left, right))
    return bool(left == right)


# --- files written by the real sops --------------------------------------------------------


def test_reference_file_from_sops_3_7_1_decrypts_to_its_plaintext() -> None:
    keys = agecrypt.parse_identity_file((REFERENCE / "keys.txt").read_text())
    plaintext = decrypt_sops_yaml((REFERENCE / "file.enc.yaml").read_bytes(), keys)
    assert plaintext == yaml.safe_load((REFERENCE / "file.yaml").read_text())
    assert set(plaintext["secrets"]) == {"SOME SECRET"}


def test_example_bootstrap_secret_opens_with_the_example_identity() -> None:
    keys = agecrypt.parse_identity_file(
        (EXAMPLES / "keys" / "example-age-identity.txt").read_text()
    )
    content = (EXAMPLES / "intent" / "bootstrap" / "postgres-admin.enc.yaml").read_bytes()
    plaintext = decrypt_sops_yaml(content, keys)
    assert sorted(plaintext) == ["password", "username"]
    assert all(isinstance(value, str) and value for value in plaintext.values())
    assert all(value.encode() not in content for value in plaintext.values())


@pytest.mark.parametrize(
    ("name", "identity"),
    [
        ("nested", "a"),  # every value type, lists, comments, _unencrypted keys
        ("k8s-secret", "a"),  # encrypted_regex, two recipients: first one
        ("k8s-secret", "b"),  # ... second one
        ("suffix", "a"),  # encrypted_suffix; clear ints/floats/"yes" feed the MAC
        ("mac-only", "b"),  # mac_only_encrypted + unencrypted_regex
    ],
)
def test_files_from_sops_3_11_decrypt_as_sops_decrypts_them(name: str, identity: str) -> None:
    content = (DATA / f"{name}.enc.yaml").read_bytes()
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    assert decrypt_sops_yaml(content, identities(identity)) == expected


def test_decrypted_values_keep_their_types() -> None:
    plaintext = decrypt_sops_yaml((DATA / "nested.enc.yaml").read_bytes(), identities("a"))
    database = plaintext["database"]
    assert strictly_equal(
        {k: database[k] for k in ("port", "ratio", "big", "tls", "verify", "nothing", "empty")},
        {
            "port": 5432,
            "ratio": 0.25,
            "big": 1e20,
            "tls": True,
            "verify": False,
            "nothing": None,
            "empty": "",
        },
    )
    assert strictly_equal(plaintext["replicas"][1], 7)
    assert plaintext["certificate"].endswith("-----END EXAMPLE-----\n")
    assert strictly_equal(plaintext["limits_unencrypted"], {"max": 10, "enabled": True})


def test_yaml_scalars_resolve_as_sops_resolves_them() -> None:
    plaintext = decrypt_sops_yaml((DATA / "suffix.enc.yaml").read_bytes(), identities("a"))
    # YAML 1.1 would give True and a base-10 755; sops (yaml.v3) gives "yes" and octal 0755.
    assert strictly_equal(plaintext["enabled"], "yes")
    assert strictly_equal(plaintext["legacy_octal"], 0o755)
    assert strictly_equal(plaintext["ratio"], 1e20)


# --- our encryptor ---------------------------------------------------------------------------

PLAIN: dict[str, Any] = {
    "database": {
        "host": "db.internal",
        "port": 5432,
        "ratio": 0.1,
        "huge": 1e300,
        "negative": -7,
        "tls": True,
        "verify": False,
        "nothing": None,
        "empty": "",
        "credentials": {"username": "svc-app", "password": "pässwörd with: colon # and hash"},
    },
    "replicas": ["alpha", 2, {"name": "gamma", "weight": 2.5}, ["deep", False]],
    "pem": "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n",
    "looks_like_other_types": ["yes", "no", "on", "1e5", "0o17", "0x1F", "null", "~", "2024-01-01"],
    "note_unencrypted": "kept in clear",
    "limits_unencrypted": {"max": 10, "ratio": 3.0, "strict": True, "flag": "yes"},
}
SECRET_STRINGS = ["db.internal", "svc-app", "pässwörd with: colon # and hash", "alpha", "gamma"]


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return agecrypt.generate_identity()


@pytest.fixture(scope="module")
def encrypted(keypair: tuple[str, str]) -> bytes:
    return encrypt_sops_yaml(PLAIN, [keypair[1]], now=dt.datetime(2026, 3, 4, 5, 6, 7))


def test_round_trip_keeps_structure_order_and_types(
    encrypted: bytes, keypair: tuple[str, str]
) -> None:
    assert strictly_equal(decrypt_sops_yaml(encrypted, [keypair[0]]), PLAIN)


def test_clear_values_feed_the_mac_exactly_as_read_back(keypair: tuple[str, str]) -> None:
    """Left in clear, these would change type (and MAC bytes) if written without care."""
    plain = {
        "strings_unencrypted": ["1e5", "0o17", "0x1F", "yes", "Off", "2024-01-01", "~", "", "<<"],
        "numbers_unencrypted": [1e20, 0.1, -0.0, 3.0, 7, -12, True, False, None],
    }
    content = encrypt_sops_yaml(plain, [keypair[1]])
    assert strictly_equal(decrypt_sops_yaml(content, [keypair[0]]), plain)


def test_encrypted_file_shows_no_secret_value_but_keeps_clear_ones(encrypted: bytes) -> None:
    text = encrypted.decode()
    for value in SECRET_STRINGS:
        assert value not in text
    assert "note_unencrypted: kept in clear" in text
    assert "lastmodified: '2026-03-04T05:06:07Z'" in text
    document = yaml.safe_load(text)
    assert document["database"]["nothing"] is None
    assert document["database"]["empty"] == ""
    assert re.fullmatch(r"ENC\[AES256_GCM,data:.+,type:int\]", document["database"]["port"])


def test_every_recipient_can_open_the_file_alone() -> None:
    first, second = agecrypt.generate_identity(), agecrypt.generate_identity()
    content = encrypt_sops_yaml({"token": "t0ken-value"}, [first[1], second[1]])
    assert yaml.safe_load(content)["sops"]["age"][1]["recipient"] == second[1]
    for identity, _ in (first, second):
        assert decrypt_sops_yaml(content, [identity]) == {"token": "t0ken-value"}


def test_encrypted_regex_encrypts_only_the_secret_part_of_a_manifest(
    keypair: tuple[str, str],
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "postgres-admin"},
        "stringData": {"password": "letmein-please"},
    }
    content = encrypt_sops_yaml(manifest, [keypair[1]], encrypted_regex="^(data|stringData)$")
    document = yaml.safe_load(content)
    assert document["metadata"] == {"name": "postgres-admin"}
    assert document["stringData"]["password"].startswith("ENC[AES256_GCM,")
    assert document["sops"]["encrypted_regex"] == "^(data|stringData)$"
    assert decrypt_sops_yaml(content, [keypair[0]]) == manifest


@pytest.mark.parametrize(
    "plain",
    [{"sops": {"x": "y"}}, {"blob": b"raw bytes"}, {"when": dt.date(2024, 1, 1)}],
    ids=["reserved-key", "bytes", "date"],
)
def test_encryptor_refuses_what_sops_could_not_store(
    plain: dict[str, Any], keypair: tuple[str, str]
) -> None:
    with pytest.raises(SopsFormatError):
        encrypt_sops_yaml(plain, [keypair[1]])


def test_encryptor_refuses_bad_recipients() -> None:
    with pytest.raises(agecrypt.AgeKeyError, match="no age recipient"):
        encrypt_sops_yaml({"a": "b"}, [])
    with pytest.raises(agecrypt.AgeKeyError, match="recipient #2"):
        encrypt_sops_yaml({"a": "b"}, [agecrypt.generate_identity()[1], "age1notakey"])


# --- refusals --------------------------------------------------------------------------------


def _enc_parts(value: str) -> dict[str, str]:
    match = re.fullmatch(r"ENC\[AES256_GCM,data:(.*),iv:(.*),tag:(.*),type:(.*)\]", value)
    assert match
    return dict(zip(("data", "iv", "tag", "type"), match.groups(), strict=True))


def _flip_first_byte(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _dump(document: dict[str, Any]) -> bytes:
    return yaml.safe_dump(document, sort_keys=False).encode()


def _edit(content: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    document = yaml.safe_load(content)
    change(document)
    return _dump(document)


def _tamper_value(document: dict[str, Any]) -> None:
    credentials = document["database"]["credentials"]
    parts = _enc_parts(credentials["password"])
    credentials["password"] = credentials["password"].replace(
        parts["data"], _flip_first_byte(parts["data"])
    )


def _swap_values(document: dict[str, Any]) -> None:
    credentials = document["database"]["credentials"]
    credentials["username"], credentials["password"] = (
        credentials["password"],
        credentials["username"],
    )


def _tamper_mac(document: dict[str, Any]) -> None:
    mac = document["sops"]["mac"]
    document["sops"]["mac"] = mac.replace(
        _enc_parts(mac)["data"], _flip_first_byte(_enc_parts(mac)["data"])
    )


def _reorder(document: dict[str, Any]) -> None:
    credentials = document["database"]["credentials"]
    document["database"]["credentials"] = dict(reversed(list(credentials.items())))


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


TAMPERINGS: dict[str, tuple[Callable[[dict[str, Any]], None], type[SopsError]]] = {
    "value-ciphertext-flipped": (_tamper_value, SopsDecryptError),
    "values-swapped-between-keys": (_swap_values, SopsDecryptError),
    "value-replaced-by-plaintext": (
        _set(("database", "credentials", "password"), "attacker-chosen"),
        SopsDecryptError,
    ),
    "mac-flipped": (_tamper_mac, SopsMacMismatchError),
    "lastmodified-changed": (
        _set(("sops", "lastmodified"), "2030-01-01T00:00:00Z"),
        SopsMacMismatchError,
    ),
    "value-removed": (_delete(("database", "credentials", "username")), SopsMacMismatchError),
    "keys-reordered": (_reorder, SopsMacMismatchError),
    "clear-value-changed": (_set(("note_unencrypted",), "changed in clear"), SopsMacMismatchError),
    "clear-value-added": (_set(("extra_unencrypted",), "smuggled"), SopsMacMismatchError),
    # "password" now ends with the suffix: its ciphertext would be taken as a clear value.
    "suffix-changed": (_set(("sops", "unencrypted_suffix"), "d"), SopsMacMismatchError),
    "mac-removed": (_delete(("sops", "mac")), SopsFormatError),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_altered_files_are_refused(name: str, encrypted: bytes, keypair: tuple[str, str]) -> None:
    change, error = TAMPERINGS[name]
    altered = _edit(encrypted, change)
    assert altered != encrypted
    with pytest.raises(error):
        decrypt_sops_yaml(altered, [keypair[0]])


def test_unaltered_file_through_the_same_yaml_rewrite_still_opens(
    encrypted: bytes, keypair: tuple[str, str]
) -> None:
    """Guards the tampering tests: the rewrite itself must not be what breaks the file."""
    assert strictly_equal(decrypt_sops_yaml(_edit(encrypted, lambda d: None), [keypair[0]]), PLAIN)


def test_wrong_identity_is_refused_naming_the_recipients(encrypted: bytes) -> None:
    stranger = agecrypt.generate_identity()[0]
    recipient = yaml.safe_load(encrypted)["sops"]["age"][0]["recipient"]
    with pytest.raises(SopsNoMatchingKeyError, match=recipient):
        decrypt_sops_yaml(encrypted, [stranger])


def test_second_identity_is_tried(encrypted: bytes, keypair: tuple[str, str]) -> None:
    stranger = agecrypt.generate_identity()[0]
    assert decrypt_sops_yaml(encrypted, [stranger, keypair[0]])["pem"] == PLAIN["pem"]


@pytest.mark.parametrize("given", [[], ["AGE-SECRET-KEY-1NOTAKEY"], ["not an identity"]])
def test_missing_or_malformed_identities_are_refused(given: list[str], encrypted: bytes) -> None:
    with pytest.raises(SopsNoMatchingKeyError):
        decrypt_sops_yaml(encrypted, given)


def test_damaged_stanza_for_our_identity_is_a_decrypt_error(
    encrypted: bytes, keypair: tuple[str, str]
) -> None:
    def damage(document: dict[str, Any]) -> None:
        document["sops"]["age"][0]["enc"] = agecrypt.encrypt_to_recipients(
            b"short", [keypair[1]]
        ).decode()

    with pytest.raises(SopsDecryptError, match="256-bit"):
        decrypt_sops_yaml(_edit(encrypted, damage), [keypair[0]])

    def corrupt(document: dict[str, Any]) -> None:
        enc = document["sops"]["age"][0]["enc"].splitlines()
        enc[2] = enc[2][::-1]
        document["sops"]["age"][0]["enc"] = "\n".join(enc) + "\n"

    with pytest.raises(SopsDecryptError, match="matches an identity"):
        decrypt_sops_yaml(_edit(encrypted, corrupt), [keypair[0]])


NOT_SOPS: dict[str, bytes] = {
    "plain-yaml": b"username: admin\npassword: hunter2-plain\n",
    "not-yaml": b"password: [hunter2-plain\n",
    "tab-indented": b"a:\n\tpassword: hunter2-plain\n",
    "top-level-list": b"- hunter2-plain\n",
    "empty": b"",
    "two-documents": b"a: hunter2-plain\n---\nsops: {}\n",
    "duplicate-key": b"password: hunter2-plain\npassword: other\nsops: {mac: x}\n",
    "non-string-key": b"1: hunter2-plain\nsops: {mac: x}\n",
}


@pytest.mark.parametrize("name", sorted(NOT_SOPS))
def test_files_that_are_not_sops_files_are_refused(name: str) -> None:
    with pytest.raises(SopsFormatError) as caught:
        decrypt_sops_yaml(NOT_SOPS[name], identities("a"))
    assert "hunter2-plain" not in str(caught.value)


def _with_metadata(change: Callable[[dict[str, Any]], None]) -> bytes:
    return _edit((DATA / "k8s-secret.enc.yaml").read_bytes(), change)


def test_unsupported_sops_features_are_refused_clearly() -> None:
    def shamir(document: dict[str, Any]) -> None:
        age = document["sops"].pop("age")
        document["sops"]["key_groups"] = [{"age": age[:1]}, {"age": age[1:]}]
        document["sops"]["shamir_threshold"] = 2

    with pytest.raises(SopsFormatError, match="Shamir"):
        decrypt_sops_yaml(_with_metadata(shamir), identities("a"))
    with pytest.raises(SopsFormatError, match="comment"):
        decrypt_sops_yaml(
            _with_metadata(_set(("sops", "encrypted_comment_regex"), "sops:enc")), identities("a")
        )


def test_single_key_group_is_the_same_as_flat_keys() -> None:
    def one_group(document: dict[str, Any]) -> None:
        document["sops"]["key_groups"] = [{"age": document["sops"].pop("age")}]

    expected = json.loads((DATA / "k8s-secret.expected.json").read_text())
    assert decrypt_sops_yaml(_with_metadata(one_group), identities("b")) == expected


def test_file_for_other_key_services_only_says_so() -> None:
    def pgp_only(document: dict[str, Any]) -> None:
        del document["sops"]["age"]
        document["sops"]["pgp"] = [{"fp": "0123456789ABCDEF", "enc": "..."}]

    with pytest.raises(SopsNoMatchingKeyError, match="pgp"):
        decrypt_sops_yaml(_with_metadata(pgp_only), identities("a"))


# --- no secret in any error ------------------------------------------------------------------


def test_no_error_message_reveals_a_value_key_identity_or_mac(
    encrypted: bytes, keypair: tuple[str, str]
) -> None:
    identity = keypair[0]
    stanza = yaml.safe_load(encrypted)["sops"]["age"][0]["enc"]
    data_key = agecrypt.decrypt_with_identities(stanza.encode(), [identity])
    forbidden = [
        *SECRET_STRINGS,
        "kept in clear",
        identity,
        identity.lower(),
        data_key.hex(),
        data_key.hex().upper(),
        base64.b64encode(data_key).decode(),
    ]
    messages: list[str] = []
    for change, error in TAMPERINGS.values():
        with pytest.raises(error) as caught:
            decrypt_sops_yaml(_edit(encrypted, change), [identity])
        assert caught.value.__cause__ is None
        messages.append(f"{caught.value} {caught.value!r}")
    for given in ([agecrypt.generate_identity()[0]], [identity[:-3] + "QQQ"]):
        with pytest.raises(SopsError) as caught:
            decrypt_sops_yaml(encrypted, given)
        messages.append(f"{caught.value} {caught.value!r}")
    joined = "\n".join(messages)
    for secret in forbidden:
        assert secret not in joined
    # A SHA-512 in hex (the MAC) is 128 hex digits; none may leak either.
    assert not re.search(r"[0-9A-Fa-f]{64}", joined)


# --- the age layer underneath ----------------------------------------------------------------


def test_identity_file_parsing_skips_comments_and_names_bad_lines() -> None:
    identity, recipient = agecrypt.generate_identity()
    text = f"# created: today\n# public key: {recipient}\n\n  {identity}  \n"
    assert agecrypt.parse_identity_file(text) == [identity]
    assert agecrypt.recipient_of(identity) == recipient
    broken = identity[:-4] + "QQQQ"
    with pytest.raises(agecrypt.AgeKeyError, match="line 2") as caught:
        agecrypt.parse_identity_file(f"# ok\n{broken}\n")
    assert broken not in str(caught.value)
    with pytest.raises(agecrypt.AgeKeyError, match="line 1"):
        agecrypt.parse_identity_file("password=hunter2\n")
    with pytest.raises(agecrypt.AgeKeyError, match="no age identity"):
        agecrypt.parse_identity_file("# only comments\n")


def test_age_round_trip_and_refusals() -> None:
    identity, recipient = agecrypt.generate_identity()
    sealed = agecrypt.encrypt_to_recipients(b"share", [recipient])
    assert agecrypt.decrypt_with_identities(sealed, [identity]) == b"share"
    with pytest.raises(agecrypt.AgeDecryptError):
        agecrypt.decrypt_with_identities(sealed[:-40] + b"\n", [identity])
    with pytest.raises(agecrypt.AgeDecryptError):
        agecrypt.decrypt_with_identities(sealed, [agecrypt.generate_identity()[0]])
    with pytest.raises(TypeError):
        agecrypt.encrypt_to_recipients(b"share", recipient)
    with pytest.raises(agecrypt.AgeKeyError, match="recipient #1"):
        agecrypt.encrypt_to_recipients(b"share", [identity])
