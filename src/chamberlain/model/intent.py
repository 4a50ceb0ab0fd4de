"""The typed intent model: what an intent repository declares, with every default resolved.

Frozen dataclasses so that the planner can treat a loaded repository as a value: compare two
commits' intent, hash documents, and never see a half-built object. Builders here assume a
document that already passed the JSON Schema (``loader`` guarantees it), so they only resolve
defaults and convert types. Every document carries an :class:`Origin` (file, line, column of
each key) so that later checks can point at the offending line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeAlias, cast

from chamberlain.model.durations import parse_duration

API_VERSION = "chamberlain.dev/v1alpha1"

SecretClass: TypeAlias = Literal["runtime", "internal"]
GeneratorType: TypeAlias = Literal["password", "hex", "base64", "uuid", "alphanumeric"]
WorkloadKind: TypeAlias = Literal["Deployment", "StatefulSet", "DaemonSet"]
FailureStrategy: TypeAlias = Literal["retry", "alert", "hold"]
DeletionPolicy: TypeAlias = Literal["retain", "delete", "destroy"]
RetireMode: TypeAlias = Literal["delete", "inert"]
KeyPath: TypeAlias = tuple[str | int, ...]

DEFAULT_BRANCH = "main"
# The intent repository's folder of SOPS-encrypted bootstrap files.
BOOTSTRAP_DIR = "bootstrap"
DEFAULT_KV_MOUNT = "secret"
DEFAULT_KUBERNETES_AUTH_MOUNT = "kubernetes"
DEFAULT_RENEWAL_AT = 0.66
DEFAULT_LENGTH = 32
DEFAULT_BYTES = 32


@dataclass(frozen=True)
class Origin:
    """Where a document came from; ``positions`` maps a key path to its (line, column)."""

    file: str
    line: int
    column: int
    document: int = 0
    positions: Mapping[KeyPath, tuple[int, int]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def at(self, *path: str | int) -> tuple[int, int]:
        """(line, column) of ``path`` or of its nearest ancestor that has a position."""
        key: KeyPath = tuple(path)
        while key:
            found = self.positions.get(key)
            if found is not None:
                return found
            key = key[:-1]
        return self.line, self.column


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Workload:
    kind: WorkloadKind
    name: str


@dataclass(frozen=True)
class Consumer:
    """A workload identity (namespace + service account) allowed to read the secret."""

    namespace: str
    service_account: str
    external_secret: str | None = None
    workloads: tuple[Workload, ...] = ()


@dataclass(frozen=True)
class Generator:
    """How one key's value is generated. ``length`` counts characters, ``nbytes`` bytes."""

    type: GeneratorType
    length: int | None = None
    nbytes: int | None = None


@dataclass(frozen=True)
class RotationPolicy:
    ttl: timedelta
    rotate_before: timedelta
    max_overlap: timedelta
    revoke_old: bool = True
    failure_strategy: FailureStrategy = "retry"


@dataclass(frozen=True)
class Environment:
    """An isolated scope: one authority namespace. Ephemeral ones are per-cluster templates."""

    name: str
    namespace: str
    branch: str = DEFAULT_BRANCH
    ephemeral: bool = False
    cluster_host: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    origin: Origin = field(default=Origin("", 1, 1), compare=False, repr=False)

    kind: ClassVar[str] = "Environment"


@dataclass(frozen=True)
class AuthorityConfig:
    """How the authority is initialized: unseal shares, their age recipients, mounts, audit."""

    name: str
    shares: int
    threshold: int
    recipients: tuple[str, ...]
    kv_mount: str = DEFAULT_KV_MOUNT
    audit_path: str | None = None
    kubernetes_auth_mount: str = DEFAULT_KUBERNETES_AUTH_MOUNT
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    origin: Origin = field(default=Origin("", 1, 1), compare=False, repr=False)

    kind: ClassVar[str] = "AuthorityConfig"

    def recipient_for_share(self, index: int) -> str:
        """The age recipient that unseal share ``index`` is encrypted to."""
        return self.recipients[index % len(self.recipients)]


@dataclass(frozen=True)
class SecretIntent:
    """A runtime (authority-generated) or internal (operator-written) secret."""

    name: str
    path: str
    secret_class: SecretClass
    owner: str
    purpose: str
    consumers: tuple[Consumer, ...]
    environments: tuple[str, ...] | None = None
    generate: Mapping[str, Generator] = field(default_factory=dict, hash=False)
    keys: tuple[str, ...] = ()
    rotation: RotationPolicy | None = None
    deletion_policy: DeletionPolicy = "retain"
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    origin: Origin = field(default=Origin("", 1, 1), compare=False, repr=False)

    kind: ClassVar[str] = "SecretIntent"

    def applies_to(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments


@dataclass(frozen=True)
class KubernetesSecretSource:
    namespace: str
    name: str
    keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SopsSource:
    file: str
    keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BootstrapSecret:
    """A value that exists before the authority; copied in once, then retired. Never rotated."""

    name: str
    path: str
    owner: str
    purpose: str
    kubernetes_secret: KubernetesSecretSource | None = None
    sops: SopsSource | None = None
    environments: tuple[str, ...] | None = None
    retire: RetireMode = "delete"
    consumers: tuple[Consumer, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    origin: Origin = field(default=Origin("", 1, 1), compare=False, repr=False)

    kind: ClassVar[str] = "BootstrapSecret"

    def applies_to(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments

    @property
    def keys(self) -> tuple[str, ...] | None:
        """Declared key names (from either source), or None when every key is copied."""
        for source in (self.kubernetes_secret, self.sops):
            if source is not None and source.keys is not None:
                return source.keys
        return None


@dataclass(frozen=True)
class DatabaseRole:
    name: str
    ttl: timedelta
    max_ttl: timedelta
    creation_statements: tuple[str, ...]
    revocation_statements: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseConnection:
    plugin: str
    connection_url: str
    admin_secret: str
    allowed_roles: tuple[str, ...]


@dataclass(frozen=True)
class DynamicCredential:
    """Leased credentials from the database engine, renewed before expiry, revoked on teardown."""

    name: str
    path: str
    owner: str
    purpose: str
    database: DatabaseConnection
    roles: tuple[DatabaseRole, ...]
    consumers: tuple[Consumer, ...]
    engine: Literal["database"] = "database"
    environments: tuple[str, ...] | None = None
    renewal_at: float = DEFAULT_RENEWAL_AT
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    origin: Origin = field(default=Origin("", 1, 1), compare=False, repr=False)

    kind: ClassVar[str] = "DynamicCredential"

    def applies_to(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments


Document: TypeAlias = (
    Environment | AuthorityConfig | SecretIntent | BootstrapSecret | DynamicCredential
)
SecretDocument: TypeAlias = SecretIntent | BootstrapSecret | DynamicCredential


@dataclass(frozen=True)
class Intent:
    """A whole intent repository (at one commit), documents in file order."""

    environments: tuple[Environment, ...] = ()
    authority: AuthorityConfig | None = None
    secrets: tuple[SecretIntent, ...] = ()
    bootstrap_secrets: tuple[BootstrapSecret, ...] = ()
    dynamic_credentials: tuple[DynamicCredential, ...] = ()

    @classmethod
    def from_documents(cls, documents: list[Document] | tuple[Document, ...]) -> Intent:
        """Group documents by kind; the first AuthorityConfig wins (validate flags others)."""
        authorities = [d for d in documents if isinstance(d, AuthorityConfig)]
        return cls(
            environments=tuple(d for d in documents if isinstance(d, Environment)),
            authority=authorities[0] if authorities else None,
            secrets=tuple(d for d in documents if isinstance(d, SecretIntent)),
            bootstrap_secrets=tuple(d for d in documents if isinstance(d, BootstrapSecret)),
            dynamic_credentials=tuple(d for d in documents if isinstance(d, DynamicCredential)),
        )

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)

    def bootstrap_secret(self, name: str) -> BootstrapSecret | None:
        return next((b for b in self.bootstrap_secrets if b.name == name), None)

    def secret_documents(self) -> Iterator[SecretDocument]:
        """Every document that puts a value at an authority path."""
        yield from self.secrets
        yield from self.bootstrap_secrets
        yield from self.dynamic_credentials

    def ephemeral_template(self, instance: str) -> Environment | None:
        """The ephemeral Environment that ``instance`` (``<template>-<id>``) instantiates; the
        longest matching template name wins."""
        matches = [
            e
            for e in self.environments
            if e.ephemeral and instance.startswith(f"{e.name}-") and len(instance) > len(e.name) + 1
        ]
        return max(matches, key=lambda e: len(e.name), default=None)

    def resolve_environment(self, name: str) -> tuple[Environment, str] | None:
        """(environment, the name intent documents use for it): a declared environment, or an
        instance of an ephemeral template, whose own name is its authority namespace."""
        declared = self.environment(name)
        if declared is not None:
            return declared, declared.name
        template = self.ephemeral_template(name)
        if template is None:
            return None
        instance = Environment(name=name, namespace=name, branch=template.branch, ephemeral=True)
        return instance, template.name

    def for_environment(self, name: str) -> list[SecretDocument]:
        """The secret documents that apply to environment ``name``: a declared name, or an
        ephemeral instance (documents name its template in ``environments``)."""
        resolved = self.resolve_environment(name)
        key = resolved[1] if resolved is not None else name
        return [d for d in self.secret_documents() if d.applies_to(key)]


# ---- builders: schema-valid plain data -> typed documents -------------------------------


def _names(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _labels(data: Mapping[str, Any]) -> Mapping[str, str]:
    return _frozen_map(data.get("metadata", {}).get("labels"))


def _consumers(items: Any) -> tuple[Consumer, ...]:
    return tuple(
        Consumer(
            namespace=c["namespace"],
            service_account=c["serviceAccount"],
            external_secret=c.get("externalSecret"),
            workloads=tuple(Workload(w["kind"], w["name"]) for w in c.get("workloads", ())),
        )
        for c in items or ()
    )


def _generator(spec: Mapping[str, Any]) -> Generator:
    kind = cast(GeneratorType, spec["type"])
    if kind in ("password", "alphanumeric"):
        return Generator(kind, length=spec.get("length", DEFAULT_LENGTH))
    if kind in ("hex", "base64"):
        return Generator(kind, nbytes=spec.get("bytes", DEFAULT_BYTES))
    return Generator(kind)


def build_rotation(spec: Mapping[str, Any]) -> RotationPolicy:
    """Resolve defaults: rotateBefore = ttl/10, maxOverlap = rotateBefore."""
    ttl = parse_duration(spec["ttl"])
    before = parse_duration(spec["rotateBefore"]) if "rotateBefore" in spec else ttl / 10
    overlap = parse_duration(spec["maxOverlap"]) if "maxOverlap" in spec else before
    return RotationPolicy(
        ttl=ttl,
        rotate_before=before,
        max_overlap=overlap,
        revoke_old=spec.get("revokeOld", True),
        failure_strategy=spec.get("failureStrategy", "retry"),
    )


def build_document(data: Mapping[str, Any], origin: Origin) -> Document:
    """Build the typed document for schema-valid ``data``."""
    kind = data["kind"]
    name: str = data["metadata"]["name"]
    spec: Mapping[str, Any] = data.get("spec") or {}
    labels = _labels(data)
    if kind == "Environment":
        return Environment(
            name=name,
            namespace=spec.get("namespace", name),
            branch=spec.get("branch", DEFAULT_BRANCH),
            ephemeral=spec.get("ephemeral", False),
            cluster_host=(spec.get("cluster") or {}).get("host"),
            labels=labels,
            origin=origin,
        )
    if kind == "AuthorityConfig":
        return AuthorityConfig(
            name=name,
            shares=spec["shares"],
            threshold=spec["threshold"],
            recipients=tuple(spec["recipients"]),
            kv_mount=spec.get("kvMount", DEFAULT_KV_MOUNT),
            audit_path=(spec.get("audit") or {}).get("path"),
            kubernetes_auth_mount=(spec.get("kubernetesAuth") or {}).get(
                "mount", DEFAULT_KUBERNETES_AUTH_MOUNT
            ),
            labels=labels,
            origin=origin,
        )
    if kind == "SecretIntent":
        generate = {k: _generator(v) for k, v in (spec.get("generate") or {}).items()}
        return SecretIntent(
            name=name,
            path=spec["path"],
            secret_class=spec["class"],
            owner=spec["owner"],
            purpose=spec["purpose"],
            consumers=_consumers(spec["consumers"]),
            environments=_names(spec.get("environments")),
            generate=_frozen_map(generate),
            keys=tuple(generate) if generate else tuple(spec.get("keys", ())),
            rotation=build_rotation(spec["rotation"]) if "rotation" in spec else None,
            deletion_policy=spec.get("deletionPolicy", "retain"),
            labels=labels,
            origin=origin,
        )
    if kind == "BootstrapSecret":
        source = spec["source"]
        kube = source.get("kubernetesSecret")
        sops = source.get("sops")
        return BootstrapSecret(
            name=name,
            path=spec["path"],
            owner=spec["owner"],
            purpose=spec["purpose"],
            kubernetes_secret=(
                KubernetesSecretSource(kube["namespace"], kube["name"], _names(kube.get("keys")))
                if kube
                else None
            ),
            sops=SopsSource(sops["file"], _names(sops.get("keys"))) if sops else None,
            environments=_names(spec.get("environments")),
            retire=spec.get("retire", "delete"),
            consumers=_consumers(spec.get("consumers")),
            labels=labels,
            origin=origin,
        )
    if kind == "DynamicCredential":
        database = spec["database"]
        roles = tuple(
            DatabaseRole(
                name=r["name"],
                ttl=parse_duration(r["ttl"]),
                max_ttl=parse_duration(r["maxTtl"]),
                creation_statements=tuple(r["creationStatements"]),
                revocation_statements=tuple(r.get("revocationStatements", ())),
            )
            for r in spec["roles"]
        )
        return DynamicCredential(
            name=name,
            path=spec["path"],
            owner=spec["owner"],
            purpose=spec["purpose"],
            database=DatabaseConnection(
                plugin=database["plugin"],
                connection_url=database["connectionUrl"],
                admin_secret=database["adminSecret"],
                allowed_roles=tuple(database.get("allowedRoles") or (r.name for r in roles)),
            ),
            roles=roles,
            consumers=_consumers(spec["consumers"]),
            environments=_names(spec.get("environments")),
            renewal_at=float((spec.get("renewal") or {}).get("at", DEFAULT_RENEWAL_AT)),
            labels=labels,
            origin=origin,
        )
    raise ValueError(f"unknown kind {kind!r}")


def kv_mount_of(intent: Intent) -> str:
    """The KV v2 mount the intent's secrets live in (its AuthorityConfig's, else the default)."""
    return intent.authority.kv_mount if intent.authority is not None else DEFAULT_KV_MOUNT


def authority_namespace(base: str | None, environment: Environment) -> str:
    """The absolute namespace of an environment: below ``base`` when one is configured."""
    own = environment.namespace.strip("/")
    prefix = (base or "").strip("/")
    return f"{prefix}/{own}" if prefix else own
