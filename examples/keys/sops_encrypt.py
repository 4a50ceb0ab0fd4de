"""Encrypt a flat YAML mapping into a standard SOPS file for one age recipient.

Only for regenerating the example bootstrap file when the real ``sops`` CLI is not at hand
(``sops --encrypt --age <recipient> plain.yaml`` produces an equivalent file). It follows the
SOPS 3 format: a random 256-bit data key encrypted with age (armored); every value encrypted
with AES-256-GCM under that key, a 32-byte IV and the value's path (``key:``) as additional
data; the MAC is the upper-case hex SHA-512 of the plaintext values in document order,
encrypted with ``lastmodified`` as additional data.

Needs ``pyrage`` and ``cryptography`` (the latter is not a chamberlain dependency):

    python examples/keys/sops_encrypt.py --recipient age1... plain.yaml > bootstrap/x.enc.yaml

Never commit the plaintext input.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import os
import sys
from typing import Any

import pyrage
import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _enc(key: bytes, plaintext: bytes, additional_data: str, kind: str = "str") -> str:
    iv = os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, plaintext, additional_data.encode())
    data, tag = sealed[:-16], sealed[-16:]
    b64 = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b64(data).decode()},iv:{b64(iv).decode()},"
        f"tag:{b64(tag).decode()},type:{kind}]"
    )


def encrypt(plain: dict[str, str], recipient: str) -> dict[str, Any]:
    """A SOPS document for the flat string mapping ``plain``."""
    data_key = os.urandom(32)
    mac = hashlib.sha512()
    tree: dict[str, Any] = {}
    for key, value in plain.items():
        if not isinstance(value, str):
            raise SystemExit(f"{key}: only string values are supported")
        mac.update(value.encode())
        tree[key] = _enc(data_key, value.encode(), f"{key}:")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    armored = pyrage.encrypt(data_key, [pyrage.x25519.Recipient.from_str(recipient)], True)
    tree["sops"] = {
        "kms": [],
        "gcp_kms": [],
        "azure_kv": [],
        "hc_vault": [],
        "age": [{"recipient": recipient, "enc": armored.decode()}],
        "lastmodified": now,
        "mac": _enc(data_key, mac.hexdigest().upper().encode(), now),
        "pgp": [],
        "unencrypted_suffix": "_unencrypted",
        "version": "3.7.1",
    }
    return tree


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipient", required=True, help="age public key (age1...)")
    parser.add_argument("plaintext", help="flat YAML mapping of string values")
    args = parser.parse_args()
    with open(args.plaintext, encoding="utf-8") as handle:
        plain = yaml.safe_load(handle)
    document = encrypt(plain, args.recipient)
    sys.stdout.write(yaml.dump(document, Dumper=_Dumper, sort_keys=False, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
