"""Where the encrypted unseal shares live: a directory locally, a Kubernetes Secret in a cluster.

Only ciphertext ever reaches a store: each share is an age message (ASCII armor) encrypted to
the recipient that intent assigns to it, so it opens with ``age -d -i <identity>``. Share ``i``
is stored as ``share-<i>.age`` (file name or Secret key). Saving replaces the whole set at once
(a new initialization makes the old shares useless); loading answers ``{index: ciphertext}``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from chamberlain.adapters.kube import Kube

SECRET_NAME = "chamberlain-unseal-shares"  # noqa: S105 - a Secret name
DEFAULT_SYSTEM_NAMESPACE = "chamberlain-system"
_SHARE_NAME = re.compile(r"^share-(\d{1,3})\.age$")
LABELS = {
    "app.kubernetes.io/managed-by": "chamberlain",
    "chamberlain.dev/unseal-shares": "true",
}


def share_name(index: int) -> str:
    return f"share-{index}.age"


class ShareStoreError(RuntimeError):
    """The store cannot be read or written (permissions, missing directory, API failure)."""


class ShareStore(Protocol):
    def check(self) -> None:
        """Raise :class:`ShareStoreError` unless shares can be stored (asked before init)."""

    def save(self, shares: Mapping[int, bytes]) -> None:
        """Replace every stored share by ``shares`` (index -> age ciphertext)."""

    def load(self) -> dict[int, bytes]:
        """Every stored share ({} when none)."""

    def describe(self) -> str:
        """Where the shares are, for logs and reply events (no content)."""


def _check(shares: Mapping[int, bytes]) -> None:
    for index, ciphertext in shares.items():
        if not bytes(ciphertext).startswith((b"age-encryption.org/", b"-----BEGIN AGE")):
            raise ShareStoreError(f"share {index} is not an age message: refusing to store it")


class LocalShareStore:
    """``<dir>/share-<i>.age``, mode 0600, in a 0700 directory (the local runtime)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def describe(self) -> str:
        return str(self.directory)

    def check(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.directory / ".write-check"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ShareStoreError(
                f"cannot write unseal shares to {self.directory} ({type(exc).__name__})"
            ) from None

    def save(self, shares: Mapping[int, bytes]) -> None:
        _check(shares)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        for index, ciphertext in sorted(shares.items()):
            final = self.directory / share_name(index)
            tmp = final.with_suffix(".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(ciphertext))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        for stale in self.directory.glob("share-*.age"):
            match = _SHARE_NAME.match(stale.name)
            if match and int(match.group(1)) not in shares:
                stale.unlink()

    def load(self) -> dict[int, bytes]:
        if not self.directory.is_dir():
            return {}
        found: dict[int, bytes] = {}
        for path in sorted(self.directory.iterdir()):
            match = _SHARE_NAME.match(path.name)
            if match:
                try:
                    found[int(match.group(1))] = path.read_bytes()
                except OSError as exc:
                    raise ShareStoreError(f"cannot read {path} ({type(exc).__name__})") from None
        return found


class KubernetesShareStore:
    """Secret ``chamberlain-unseal-shares`` in the system namespace, one key per share."""

    def __init__(
        self, kube: Kube, namespace: str = DEFAULT_SYSTEM_NAMESPACE, name: str = SECRET_NAME
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name

    def describe(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def check(self) -> None:
        """Reading the Secret proves the API is reachable and RBAC lets this function in."""
        self.kube.read_secret(self.namespace, self.name)

    def save(self, shares: Mapping[int, bytes]) -> None:
        _check(shares)
        data = {share_name(i): bytes(c) for i, c in sorted(shares.items())}
        current = self.kube.read_secret(self.namespace, self.name)
        if current is None:
            self.kube.create_secret(self.namespace, self.name, data, labels=LABELS)
        else:
            self.kube.replace_secret(current, data, labels={**current.labels, **LABELS})

    def load(self) -> dict[int, bytes]:
        secret = self.kube.read_secret(self.namespace, self.name)
        if secret is None:
            return {}
        found: dict[int, bytes] = {}
        for key, value in secret.data.items():
            match = _SHARE_NAME.match(key)
            if match:
                found[int(match.group(1))] = value
        return found
