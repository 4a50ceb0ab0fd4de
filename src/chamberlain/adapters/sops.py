"""Read (and, for fixtures and tools, write) SOPS-encrypted YAML files keyed with age.

Bootstrap secrets live in Git only as SOPS files; the handover step opens them with an age
identity to copy the values into the authority once. This module implements the SOPS 3 file
format directly (no ``sops`` binary at run time) and is checked against files written by the
real ``sops`` (``tests/data/sops/``, ``../shared/reference/sops-age/``).

The format, as ``sops`` 3.x writes and checks it:

* A random 256-bit *data key* is encrypted once per recipient as an (armored) age message:
  ``sops.age[*].enc``. ``key_groups`` with a single group is the same thing; several groups
  mean Shamir secret sharing, which is refused.
* Every leaf value is ``ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]``: AES-256-GCM
  under the data key with a 32-byte IV and, as additional data, the path of map keys leading
  to the value, each followed by ``:`` (``secrets:SOME SECRET:``). List items add nothing to the
  path, so every item of a list shares its parent key's path. ``type`` is ``str``, ``int``,
  ``float``, ``bool`` or ``bytes``; empty strings and nulls are never encrypted.
* Which leaves are encrypted is chosen by ``unencrypted_suffix`` / ``encrypted_suffix`` /
  ``unencrypted_regex`` / ``encrypted_regex``, matched against *every* key on the path (regexes
  with search semantics). Comment-based selection (``*_comment_regex``) cannot be honoured by
  a YAML reader that drops comments, so such files are refused.
* The MAC is the upper-case hex SHA-512 over the plaintext of every non-null leaf in document
  order (with ``mac_only_encrypted``: a fixed 32-byte seed, then only the encrypted leaves),
  each serialised as Go's ``sops.ToBytes`` does: strings as UTF-8, ints in decimal, floats in
  shortest fixed notation (``strconv.FormatFloat(v, 'f', -1, 64)``), booleans as
  ``True``/``False``. It is stored as ``ENC[...]`` with the RFC 3339 form of ``lastmodified``
  as additional data. Comments are not part of it, which is why ignoring them is safe.
* Scalars are resolved as ``sops`` (Go ``yaml.v3``) resolves them, not as YAML 1.1 does:
  ``yes``/``on`` stay strings, ``1e5`` and ``0o17`` are numbers, timestamps stay strings. That
  only matters for values left unencrypted, whose bytes feed the MAC.

Every failure raises a :class:`SopsError` whose message names at most a path of keys, never a
value, a data key, an identity or a MAC.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chamberlain.adapters import agecrypt

__all__ = [
    "FORMAT_VERSION",
    "SopsDecryptError",
    "SopsError",
    "SopsFormatError",
    "SopsMacMismatchError",
    "SopsNoMatchingKeyError",
    "decrypt_sops_yaml",
    "encrypt_sops_yaml",
]

#: The ``sops.version`` written by :func:`encrypt_sops_yaml`: the format it follows, the same
#: layout as ``sops`` 3.7.1 writes (and every later 3.x release reads).
FORMAT_VERSION = "3.7.1"
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"

_DATA_KEY_SIZE = 32
_IV_SIZE = 32
_TAG_SIZE = 16
_ENC_RE = re.compile(
    r"ENC\[AES256_GCM,data:([A-Za-z0-9+/=]*),iv:([A-Za-z0-9+/=]+),"
    r"tag:([A-Za-z0-9+/=]+),type:([a-z]+)\]"
)
# sops seeds the MAC with these bytes when ``mac_only_encrypted`` is set, so that such a MAC
# can never equal the MAC of the same file computed over every value.
_MAC_ONLY_ENCRYPTED_SEED = bytes.fromhex(
    "8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69"
)
_LASTMODIFIED_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


class SopsError(ValueError):
    """A SOPS file could not be opened; the message is safe to log."""


class SopsFormatError(SopsError):
    """Not a SOPS file, or one using a feature this reader does not implement."""


class SopsDecryptError(SopsError):
    """A value (or the data key) does not authenticate: tampered with, moved or damaged."""


class SopsMacMismatchError(SopsError):
    """The file-wide MAC does not verify: values were added, removed, reordered or altered."""


class SopsNoMatchingKeyError(SopsError):
    """None of the given identities opens the file's data key."""


# --- YAML as sops reads it (Go yaml.v3 scalar resolution) ------------------------------------

_NUMBER_TAG = "tag:chamberlain.dev,2026:sops-number"
_GO_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _go_parse_int(text: str) -> int | None:
    """``strconv.ParseInt/ParseUint(text, 0, 64)``: 0x/0o/0b prefixes, leading-0 octal."""
    sign, body = (text[0], text[1:]) if text[:1] in "+-" else ("", text)
    prefixes = {"0x": 16, "0X": 16, "0o": 8, "0O": 8, "0b": 2, "0B": 2}
    if body[:2] in prefixes:
        base, digits = prefixes[body[:2]], body[2:]
    elif len(body) > 1 and body.startswith("0"):
        base, digits = 8, body[1:]
    else:
        base, digits = 10, body
    alphabet = "0123456789abcdefABCDEF"[: base if base <= 10 else 22]
    if not digits or any(char not in alphabet for char in digits):
        return None
    value = int(digits, base) * (-1 if sign == "-" else 1)
    return value if _INT64_MIN <= value <= _UINT64_MAX else None


def _construct_number(loader: yaml.SafeLoader, node: yaml.Node) -> int | float | str:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    plain = text.replace("_", "")
    as_int = _go_parse_int(plain)
    if as_int is not None:
        return as_int
    if _GO_FLOAT_RE.fullmatch(plain):
        return float(plain)
    return text


class _Loader(yaml.SafeLoader):
    """SafeLoader with yaml.v3's implicit types, and no duplicate or non-string keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise SopsFormatError(f"non-string mapping key at line {line}")
            if key in seen:
                raise SopsFormatError(f"duplicate mapping key at line {line}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_DROPPED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:value",
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+."),
)
_Loader.add_implicit_resolver(
    _NUMBER_TAG, re.compile(r"^[-+]?\.?[0-9][0-9a-zA-Z_.+-]*$"), list("-+.0123456789")
)
_Loader.add_constructor(_NUMBER_TAG, _construct_number)


def _load_document(content: bytes) -> dict[str, Any]:
    try:
        documents = list(yaml.load_all(content, Loader=_Loader))
    except yaml.MarkedYAMLError as error:
        # str(error) quotes the offending line, which may hold a plaintext value.
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise SopsFormatError(f"not valid YAML: {error.problem}{where}") from None
    except yaml.YAMLError as error:
        raise SopsFormatError(f"not valid YAML ({type(error).__name__})") from None
    if len(documents) != 1:
        raise SopsFormatError(f"expected one YAML document, found {len(documents)}")
    document = documents[0]
    if not isinstance(document, dict):
        raise SopsFormatError("the top level of a SOPS YAML file must be a mapping")
    return document


# --- value (de)serialisation, as sops' aes cipher and ToBytes do -----------------------------


def _go_float(value: float) -> str:
    """``strconv.FormatFloat(value, 'f', -1, 64)``: shortest round-trip digits, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")


def _mac_bytes(value: Any, path: str) -> bytes:
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return _go_float(value).encode()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise SopsFormatError(f"unsupported value type {type(value).__name__} at '{path}'")


def _plain_bytes(value: Any, path: str) -> tuple[bytes, str]:
    """The plaintext and ``type`` sops encrypts a value as."""
    if isinstance(value, bool):
        return (b"true" if value else b"false"), "bool"
    if isinstance(value, int):
        return str(value).encode(), "int"
    if isinstance(value, float):
        return _go_float(value).encode(), "float"
    if isinstance(value, str):
        return value.encode("utf-8"), "str"
    raise SopsFormatError(f"cannot encrypt a value of type {type(value).__name__} at '{path}'")


_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def _typed(plain: bytes, kind: str, path: str) -> Any:
    try:
        if kind == "str":
            return plain.decode("utf-8")
        if kind == "bytes":
            return plain
        text = plain.decode("ascii")
        if kind == "int" and re.fullmatch(r"[-+]?[0-9]+", text):
            return int(text)
        if kind == "float" and re.fullmatch(r"[-+0-9a-zA-Z.]+", text):
            return float(text)
        if kind == "bool" and text in _GO_BOOLS:
            return _GO_BOOLS[text]
    except ValueError:
        pass
    raise SopsFormatError(f"the value at '{path}' does not decode as type {kind!r}")


def _encrypt_value(value: Any, key: bytes, path: str) -> str:
    plain, kind = _plain_bytes(value, path)
    iv = os.urandom(_IV_SIZE)
    sealed = AESGCM(key).encrypt(iv, plain, path.encode("utf-8"))
    data, tag = sealed[:-_TAG_SIZE], sealed[-_TAG_SIZE:]
    b64 = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b64(data).decode()},iv:{b64(iv).decode()},"
        f"tag:{b64(tag).decode()},type:{kind}]"
    )


def _decrypt_value(text: str, key: bytes, path: str) -> Any:
    match = _ENC_RE.fullmatch(text.strip())
    if match is None:
        raise SopsDecryptError(f"the value at '{path}' should be encrypted but is not")
    try:
        data, iv, tag = (base64.b64decode(part, validate=True) for part in match.group(1, 2, 3))
    except binascii.Error:
        raise SopsFormatError(f"the value at '{path}' has malformed base64") from None
    if not iv or len(tag) != _TAG_SIZE:
        raise SopsFormatError(f"the value at '{path}' has a malformed IV or tag")
    try:
        plain = AESGCM(key).decrypt(iv, data + tag, path.encode("utf-8"))
    except InvalidTag:
        raise SopsDecryptError(
            f"the value at '{path}' does not authenticate "
            "(tampered with, moved, or encrypted under another data key)"
        ) from None
    return _typed(plain, match.group(4), path)


# --- which leaves are encrypted --------------------------------------------------------------


@dataclass(frozen=True)
class _Selection:
    """sops' rules for which leaves are encrypted, applied in sops' order."""

    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: re.Pattern[str] | None = None
    encrypted_regex: re.Pattern[str] | None = None

    def encrypts(self, keys: Sequence[str]) -> bool:
        encrypted = True
        if self.unencrypted_suffix and any(k.endswith(self.unencrypted_suffix) for k in keys):
            encrypted = False
        if self.encrypted_suffix:
            encrypted = any(k.endswith(self.encrypted_suffix) for k in keys)
        if self.unencrypted_regex and any(self.unencrypted_regex.search(k) for k in keys):
            encrypted = False
        if self.encrypted_regex:
            encrypted = any(self.encrypted_regex.search(k) for k in keys)
        return encrypted


def _regex(metadata: Mapping[str, Any], name: str) -> re.Pattern[str] | None:
    pattern = metadata.get(name)
    if not pattern:
        return None
    try:
        return re.compile(str(pattern))
    except re.error:
        raise SopsFormatError(f"sops.{name} is not a valid regular expression") from None


def _selection(metadata: Mapping[str, Any]) -> _Selection:
    for name in ("unencrypted_comment_regex", "encrypted_comment_regex"):
        if metadata.get(name):
            raise SopsFormatError(f"sops.{name} (comment-based selection) is not supported")
    return _Selection(
        unencrypted_suffix=str(metadata.get("unencrypted_suffix") or ""),
        encrypted_suffix=str(metadata.get("encrypted_suffix") or ""),
        unencrypted_regex=_regex(metadata, "unencrypted_regex"),
        encrypted_regex=_regex(metadata, "encrypted_regex"),
    )


# --- tree walking ----------------------------------------------------------------------------

_Leaf = Callable[[Any, tuple[str, ...]], Any]


def _walk(value: Any, keys: tuple[str, ...], on_leaf: _Leaf) -> Any:
    """Rebuild ``value`` with ``on_leaf`` applied to every non-null leaf, in document order."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SopsFormatError(f"non-string mapping key under '{_ad(keys)}'")
            out[key] = _walk(item, (*keys, key), on_leaf)
        return out
    if isinstance(value, (list, tuple)):
        return [_walk(item, keys, on_leaf) for item in value]
    if value is None:
        return None
    return on_leaf(value, keys)


def _ad(keys: Sequence[str]) -> str:
    """The additional data sops binds a value to: each key of its path followed by ``:``."""
    return "".join(f"{key}:" for key in keys)


def _lastmodified_ad(value: Any) -> str:
    """``lastmodified`` re-formatted as Go's ``time.Format(time.RFC3339)`` (sops' MAC AD)."""
    if isinstance(value, _dt.datetime):
        value = value.isoformat()
    match = _LASTMODIFIED_RE.fullmatch(str(value).strip())
    if match is None:
        raise SopsFormatError("sops.lastmodified is not an RFC 3339 timestamp")
    date, time, zone = match.groups()
    if zone.upper() == "Z" or zone in {"+00:00", "-00:00"}:
        zone = "Z"
    return f"{date}T{time}{zone}"


# --- decrypt ---------------------------------------------------------------------------------


def _age_stanzas(metadata: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    groups = metadata.get("key_groups")
    if groups:
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise SopsFormatError("several key groups (Shamir secret sharing) are not supported")
        source: Mapping[str, Any] = groups[0]
    else:
        source = metadata
    stanzas = source.get("age") or []
    if not isinstance(stanzas, list) or not all(isinstance(s, dict) for s in stanzas):
        raise SopsFormatError("sops.age must be a list of {recipient, enc} entries")
    if not stanzas:
        others = sorted(
            name
            for name in ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")
            if source.get(name)
        )
        held = ", ".join(others) if others else "no key at all"
        raise SopsNoMatchingKeyError(f"the file has no age recipient (it holds {held})")
    return stanzas


def _data_key(metadata: Mapping[str, Any], identities: Sequence[str]) -> bytes:
    stanzas = _age_stanzas(metadata)
    if isinstance(identities, str):
        raise TypeError("identities must be a sequence of strings, not a single string")
    try:
        ours = {agecrypt.recipient_of(identity) for identity in identities}
    except agecrypt.AgeKeyError as error:
        raise SopsNoMatchingKeyError(str(error)) from None
    if not ours:
        raise SopsNoMatchingKeyError("no age identity given")
    damaged: list[str] = []
    for stanza in stanzas:
        recipient = str(stanza.get("recipient", "")).strip()
        try:
            key = agecrypt.decrypt_with_identities(str(stanza.get("enc", "")).encode(), identities)
        except agecrypt.AgeDecryptError:
            if recipient in ours:
                damaged.append(recipient)
            continue
        if len(key) != _DATA_KEY_SIZE:
            raise SopsDecryptError("the age stanza does not hold a 256-bit data key")
        return key
    if damaged:
        raise SopsDecryptError(
            f"the age stanza for {', '.join(damaged)} matches an identity but does not decrypt"
        )
    listed = ", ".join(str(stanza.get("recipient", "?")) for stanza in stanzas)
    raise SopsNoMatchingKeyError(
        f"none of the {len(ours)} identities opens the file (its age recipients: {listed})"
    )


def decrypt_sops_yaml(content: bytes, identities: Sequence[str]) -> dict[str, Any]:
    """The plaintext tree of a SOPS YAML file, after verifying every value and the MAC.

    ``identities`` are age secret keys (``AGE-SECRET-KEY-1...``); any one that opens an age
    stanza will do. The ``sops`` metadata key is not part of the result.
    """
    document = _load_document(content)
    metadata = document.pop("sops", None)
    if not isinstance(metadata, dict):
        raise SopsFormatError("no sops metadata: the file is not SOPS-encrypted")
    mac_text = metadata.get("mac")
    if not isinstance(mac_text, str) or not mac_text:
        raise SopsFormatError("sops.mac is missing")
    lastmodified = _lastmodified_ad(metadata.get("lastmodified"))
    selection = _selection(metadata)
    mac_only_encrypted = metadata.get("mac_only_encrypted") is True
    key = _data_key(metadata, identities)

    digest = hashlib.sha512()
    if mac_only_encrypted:
        digest.update(_MAC_ONLY_ENCRYPTED_SEED)

    def open_leaf(value: Any, keys: tuple[str, ...]) -> Any:
        path = _ad(keys)
        encrypted = selection.encrypts(keys)
        if encrypted:
            if not isinstance(value, str):
                raise SopsDecryptError(f"the value at '{path}' should be encrypted but is not")
            if value != "":  # sops never encrypts empty strings
                value = _decrypt_value(value, key, path)
        if encrypted or not mac_only_encrypted:
            digest.update(_mac_bytes(value, path))
        return value

    plaintext: dict[str, Any] = _walk(document, (), open_leaf)

    match = _ENC_RE.fullmatch(mac_text.strip())
    if match is None:
        raise SopsFormatError("sops.mac is not an encrypted value")
    try:
        stored = _decrypt_value(mac_text, key, lastmodified)
    except SopsDecryptError:
        raise SopsMacMismatchError(
            "the MAC does not authenticate (sops.mac or sops.lastmodified was altered)"
        ) from None
    computed = digest.hexdigest().upper()
    if not isinstance(stored, str) or not hmac.compare_digest(stored, computed):
        raise SopsMacMismatchError(
            "the MAC does not match the values: the file was altered after encryption"
        )
    return plaintext


# --- encrypt ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, literal blocks for multi-line text, and quotes wherever sops' YAML reader
    would otherwise see a number, boolean or null in a string."""


def _needs_quotes(text: str) -> bool:
    for tag, regexp in _Loader.yaml_implicit_resolvers.get(text[:1], []):
        if regexp.match(text):
            return bool(tag != "tag:yaml.org,2002:str")
    return text == ""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    style = '"' if _needs_quotes(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _timestamp(now: _dt.datetime | None) -> str:
    moment = now or _dt.datetime.now(_dt.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encrypt_sops_yaml(
    plain: Mapping[str, Any],
    recipients: Sequence[str],
    *,
    now: _dt.datetime | None = None,
    unencrypted_suffix: str = DEFAULT_UNENCRYPTED_SUFFIX,
    encrypted_regex: str | None = None,
) -> bytes:
    """A SOPS YAML file holding ``plain``, openable by any one of the age ``recipients``.

    The output has the layout ``sops`` 3.7.1 writes (``version: 3.7.1``, empty lists for the
    other key services, one age stanza per recipient, 4-space indentation) and is accepted
    by ``sops`` 3.7 and later. Keys ending in ``unencrypted_suffix`` stay in clear, as with
    ``sops`` by default; with ``encrypted_regex`` only matching keys are encrypted instead
    (``'^(data|stringData)$'`` for Kubernetes Secrets). Values may be nested mappings, lists,
    strings, ints, floats, booleans and nulls; nulls and empty strings are left as they are.
    ``now`` sets ``lastmodified`` (reproducible fixtures); the IVs and data key are random.
    """
    if not isinstance(plain, Mapping):
        raise SopsFormatError("the plaintext must be a mapping")
    if "sops" in plain:
        raise SopsFormatError("the top-level key 'sops' is reserved for SOPS metadata")
    recipients = agecrypt.check_recipients(recipients)
    if encrypted_regex is not None:
        selection = _Selection(encrypted_regex=re.compile(encrypted_regex))
        selector: dict[str, str] = {"encrypted_regex": encrypted_regex}
    else:
        selection = _Selection(unencrypted_suffix=unencrypted_suffix)
        selector = {"unencrypted_suffix": unencrypted_suffix} if unencrypted_suffix else {}

    data_key = os.urandom(_DATA_KEY_SIZE)
    digest = hashlib.sha512()

    def seal_leaf(value: Any, keys: tuple[str, ...]) -> Any:
        path = _ad(keys)
        digest.update(_mac_bytes(value, path))
        if not selection.encrypts(keys) or value == "":
            _plain_bytes(value, path)  # same type check as for encrypted values
            return value
        return _encrypt_value(value, data_key, path)

    tree: dict[str, Any] = _walk(plain, (), seal_leaf)
    lastmodified = _timestamp(now)
    stanzas = [
        {
            "recipient": recipient,
            "enc": agecrypt.encrypt_to_recipients(data_key, [recipient]).decode("ascii"),
        }
        for recipient in recipients
    ]
    tree["sops"] = {
        "kms": [],
        "gcp_kms": [],
        "azure_kv": [],
        "hc_vault": [],
        "age": stanzas,
        "lastmodified": lastmodified,
        "mac": _encrypt_value(digest.hexdigest().upper(), data_key, lastmodified),
        "pgp": [],
        **selector,
        "version": FORMAT_VERSION,
    }
    text = yaml.dump(
        tree,
        Dumper=_Dumper,
        sort_keys=False,
        indent=4,
        width=1 << 16,
        allow_unicode=True,
        default_flow_style=False,
    )
    return text.encode("utf-8")
