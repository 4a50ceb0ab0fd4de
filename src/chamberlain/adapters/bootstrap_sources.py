"""Where a bootstrap value lives before the authority: read it once, retire it afterwards.

Two sources (intent ``spec.source``):

* ``kubernetesSecret``: the Secret the GitOps layer decrypted. chamberlain only reads a Secret
  labelled ``chamberlain.dev/bootstrap=true`` (a Secret without the label is someone else's and
  is refused); retiring deletes it (with ``uid``/``resourceVersion`` preconditions, so a Secret
  changed or re-created since it was read is never deleted blindly) or marks it inert: label
  ``chamberlain.dev/bootstrap=retired``, annotation ``chamberlain.dev/retired-at``, ``data``
  removed. A Secret already deleted or already inert counts as retired.
* ``sops``: the SOPS file in the intent repository at the event's commit, decrypted with the
  age identities of ``CHAMBERLAIN_SOPS_IDENTITY_FILE``. Files in Git cannot be retired by
  chamberlain: a person removes them.

Values are flat ``str -> str`` maps (what KV v2 stores for chamberlain). Every value is
registered for log redaction the moment it is read; errors name a source and a key, never a
value. :func:`same_value` compares in constant time; :func:`salted_digest` is what the
handover records in metadata instead of the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from chamberlain.adapters import agecrypt
from chamberlain.adapters.kube import (
    KUBE_HOST_ENV,
    Kube,
    KubeInvalidError,
    KubeSecret,
    api_client_from_env,
)
from chamberlain.logs import register_secret, register_secret_data
from chamberlain.model.intent import BootstrapSecret, KubernetesSecretSource, RetireMode
from chamberlain.steps.base import PermanentError

LABEL = "chamberlain.dev/bootstrap"
LABEL_ACTIVE = "true"
LABEL_RETIRED = "retired"
RETIRED_AT_ANNOTATION = "chamberlain.dev/retired-at"
SOPS_IDENTITY_ENV = "CHAMBERLAIN_SOPS_IDENTITY_FILE"
SOURCE_ENV = "CHAMBERLAIN_BOOTSTRAP_SOURCE"

SourceKind = Literal["kubernetes", "sops"]
Retirement = Literal["deleted", "already-gone", "marked-inert", "not-applicable"]


class BootstrapSourceError(PermanentError):
    """The source cannot be used as it is (tampered, unlabelled, not text): not retried."""


@dataclass(frozen=True)
class SourceValue:
    """A bootstrap value as read from its source. ``data`` holds values: never log it."""

    source: str  # "kubernetes:<namespace>/<name>" or "sops:<file>"
    kind: SourceKind
    data: dict[str, str] = field(repr=False)
    secret: KubeSecret | None = field(default=None, repr=False, compare=False)

    @property
    def retirable(self) -> bool:
        return self.kind == "kubernetes"


# ---- values ---------------------------------------------------------------------------------


def canonical(data: Mapping[str, str]) -> bytes:
    """One byte string per value map: sorted keys, compact, UTF-8."""
    return json.dumps(dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def same_value(left: Mapping[str, str], right: Mapping[str, str]) -> bool:
    """Whether two value maps are equal, compared in constant time (no timing oracle)."""
    return hmac.compare_digest(canonical(left), canonical(right))


def new_salt() -> str:
    return os.urandom(16).hex()


def salted_digest(data: Mapping[str, str], salt: str) -> str:
    """First 16 hex of SHA-256(salt || canonical value): identifies a value, cannot be looked
    up in precomputed tables, and is useless for correlating secrets across paths."""
    return hashlib.sha256(bytes.fromhex(salt) + canonical(data)).hexdigest()[:16]


def select_keys(data: Mapping[str, str], keys: Sequence[str] | None, where: str) -> dict[str, str]:
    """``data`` restricted to the declared ``keys`` (all when None); a missing key is an error."""
    if keys is None:
        return dict(data)
    missing = [key for key in keys if key not in data]
    if missing:
        raise BootstrapSourceError(f"{where} has no key(s) {', '.join(sorted(missing))}")
    return {key: data[key] for key in keys}


def _registered(data: dict[str, str]) -> dict[str, str]:
    register_secret_data(data)
    return data


# ---- SOPS -----------------------------------------------------------------------------------


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _kubernetes_secret_values(tree: Mapping[str, Any], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in (tree.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(raw), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BootstrapSourceError(f"{where}: data key {key!r} is not base64 text") from None
    for key, raw in (tree.get("stringData") or {}).items():
        out[str(key)] = _scalar_text(raw)
    return out


def sops_values(tree: Mapping[str, Any], where: str) -> dict[str, str]:
    """The value map of a decrypted SOPS tree.

    A SOPS-encrypted Kubernetes Secret manifest (what GitOps tools decrypt) yields its
    ``stringData`` and base64-decoded ``data``; any other file yields its top-level keys,
    scalars as text and nested mappings or lists as compact JSON text. Nulls are skipped.
    """
    try:
        if tree.get("kind") == "Secret" and str(tree.get("apiVersion")) == "v1":
            return _kubernetes_secret_values(tree, where)
        return {str(k): _scalar_text(v) for k, v in tree.items() if v is not None}
    except UnicodeDecodeError:
        raise BootstrapSourceError(f"{where}: a value is not UTF-8 text") from None


def read_sops(
    content: bytes, file: str, identities: Sequence[str], keys: Sequence[str] | None
) -> SourceValue:
    """Decrypt and verify one SOPS file; tampering or a missing key is permanent."""
    # imported here: SOPS pulls in ``cryptography``, which most deliveries never need
    from chamberlain.adapters.sops import SopsError, decrypt_sops_yaml

    where = f"SOPS file {file}"
    try:
        tree = decrypt_sops_yaml(content, identities)
    except SopsError as exc:
        raise BootstrapSourceError(f"{where}: {exc}") from None
    data = select_keys(sops_values(tree, where), keys, where)
    return SourceValue(source=f"sops:{file}", kind="sops", data=_registered(data))


def load_identities(path: Path) -> list[str]:
    """The age identities of an identity file (registered as secrets: never logged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BootstrapSourceError(
            f"{SOPS_IDENTITY_ENV} {path} unreadable ({type(exc).__name__})"
        ) from None
    try:
        identities = agecrypt.parse_identity_file(text)
    except agecrypt.AgeKeyError as exc:
        raise BootstrapSourceError(f"{SOPS_IDENTITY_ENV} {path}: {exc}") from None
    for identity in identities:
        register_secret(identity)
    return identities


# ---- Kubernetes -----------------------------------------------------------------------------


class KubernetesSecrets:
    """Bootstrap Secrets through :class:`chamberlain.adapters.kube.Kube`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def read(self, source: KubernetesSecretSource) -> SourceValue | None:
        """The active bootstrap Secret's values, or None when it is gone or already inert."""
        where = f"Secret {source.namespace}/{source.name}"
        secret = self.kube.read_secret(source.namespace, source.name)
        if secret is None:
            return None
        label = secret.labels.get(LABEL)
        if label == LABEL_RETIRED:
            return None
        if label != LABEL_ACTIVE:
            raise BootstrapSourceError(
                f"{where} is not labelled {LABEL}={LABEL_ACTIVE}: chamberlain does not read it"
            )
        values: dict[str, str] = {}
        for key, raw in secret.data.items():
            try:
                values[key] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BootstrapSourceError(f"{where}: key {key!r} is not UTF-8 text") from None
        data = select_keys(_registered(values), source.keys, where)
        return SourceValue(
            source=f"kubernetes:{source.namespace}/{source.name}",
            kind="kubernetes",
            data=data,
            secret=secret,
        )

    def delete(self, value: SourceValue) -> Retirement:
        """Delete the Secret that was read (preconditions: same uid and resourceVersion)."""
        secret = value.secret
        assert secret is not None
        deleted = self.kube.delete_secret(
            secret.namespace, secret.name, uid=secret.uid, resource_version=secret.resource_version
        )
        return "deleted" if deleted else "already-gone"

    def mark_inert(self, value: SourceValue, retired_at: str) -> Retirement:
        """Label the Secret retired, annotate when, and strip its data, in one replace that
        only succeeds if the Secret is still the one that was read (resourceVersion)."""
        secret = value.secret
        assert secret is not None
        try:
            self.kube.replace_secret(
                secret,
                {},
                labels={**secret.labels, LABEL: LABEL_RETIRED},
                annotations={**secret.annotations, RETIRED_AT_ANNOTATION: retired_at},
            )
        except KubeInvalidError as exc:
            if exc.kube_status == 404:
                return "already-gone"
            raise
        return "marked-inert"


def kube_from_env(environ: Mapping[str, str]) -> Kube | None:
    """The Kubernetes API of this function, or None when none is configured (local runtime)."""
    keys = (KUBE_HOST_ENV, "KUBERNETES_SERVICE_HOST", "KUBECONFIG")
    if not any(environ.get(key) for key in keys):
        return None
    return Kube(api_client_from_env(environ))


# ---- the two sources behind one interface ---------------------------------------------------

BlobReader = Callable[[str], bytes]
"""Reads one file of the intent repository at the commit being handled."""


class BootstrapSources:
    """Chooses the source of a BootstrapSecret and reads or retires it.

    ``prefer``: ``kubernetes`` when a Kubernetes API is configured, else ``sops`` (what the
    local runtime has); a BootstrapSecret declaring only the other source uses that one.
    """

    def __init__(
        self,
        *,
        kube: KubernetesSecrets | None = None,
        identities: Sequence[str] | None = None,
        prefer: SourceKind | None = None,
    ) -> None:
        self.kube = kube
        self.identities = list(identities or [])
        self.prefer: SourceKind = prefer or ("kubernetes" if kube is not None else "sops")

    def kind_for(self, bootstrap: BootstrapSecret) -> SourceKind:
        declared: list[SourceKind] = []
        if bootstrap.kubernetes_secret is not None:
            declared.append("kubernetes")
        if bootstrap.sops is not None:
            declared.append("sops")
        usable = [k for k in declared if self._available(k)]
        if not usable:
            wanted = " or ".join(declared)
            raise BootstrapSourceError(
                f"BootstrapSecret {bootstrap.name!r}: no {wanted} source is available to this "
                f"function (Kubernetes API: {'yes' if self.kube else 'no'}; "
                f"{SOPS_IDENTITY_ENV}: {'set' if self.identities else 'unset'})"
            )
        return self.prefer if self.prefer in usable else usable[0]

    def _available(self, kind: SourceKind) -> bool:
        return self.kube is not None if kind == "kubernetes" else bool(self.identities)

    def describe(self, bootstrap: BootstrapSecret) -> str:
        """The source label recorded in metadata, without reading anything."""
        if self.kind_for(bootstrap) == "kubernetes":
            ref = bootstrap.kubernetes_secret
            assert ref is not None
            return f"kubernetes:{ref.namespace}/{ref.name}"
        assert bootstrap.sops is not None
        return f"sops:{bootstrap.sops.file}"

    def read(self, bootstrap: BootstrapSecret, read_file: BlobReader) -> SourceValue | None:
        """The value at its source; None when a Kubernetes Secret is gone or already inert."""
        if self.kind_for(bootstrap) == "kubernetes":
            assert self.kube is not None and bootstrap.kubernetes_secret is not None
            return self.kube.read(bootstrap.kubernetes_secret)
        sops = bootstrap.sops
        assert sops is not None
        return read_sops(read_file(sops.file), sops.file, self.identities, sops.keys)

    def retire(self, value: SourceValue, mode: RetireMode, retired_at: str) -> Retirement:
        if value.kind != "kubernetes" or self.kube is None:
            return "not-applicable"
        if mode == "inert":
            return self.kube.mark_inert(value, retired_at)
        return self.kube.delete(value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BootstrapSources:
        kube = kube_from_env(environ)
        identity_file = environ.get(SOPS_IDENTITY_ENV)
        identities = load_identities(Path(identity_file)) if identity_file else None
        prefer = environ.get(SOURCE_ENV) or None
        if prefer not in (None, "kubernetes", "sops"):
            raise ValueError(f"{SOURCE_ENV} must be 'kubernetes' or 'sops', got {prefer!r}")
        return cls(
            kube=KubernetesSecrets(kube) if kube is not None else None,
            identities=identities,
            prefer=cast("SourceKind | None", prefer),
        )
