"""Rules that span documents: names, paths, references, policies and encrypted bootstrap files.

``loader`` checks each document on its own (YAML, schema); this module checks the repository
as a whole, on the typed model, and points every problem at the line that must change. It is
what ``chamberlain validate`` runs and what the steps run before acting on a commit: an intent
that fails here is rejected as a whole, so nothing is ever half-applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chamberlain.model.intent import (
    BootstrapSecret,
    Consumer,
    DynamicCredential,
    Environment,
    Intent,
    KeyPath,
    Origin,
    SecretDocument,
    SecretIntent,
)
from chamberlain.model.loader import LoadResult, Problem, YamlDocument, load_dir, load_files
from chamberlain.model.paths import secret_path_problems

__all__ = ["Problem", "check", "validate_dir", "validate_files"]

SOPS_VALUE = re.compile(
    r"^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,"
    r"type:(str|int|float|bool|bytes|comment)\]$"
)
ADMIN_KEYS = ("username", "password")


def _at(origin: Origin, path: KeyPath, code: str, message: str) -> Problem:
    line, column = origin.at(*path)
    return Problem(origin.file, line, column, code, message)


def _first_seen(origin: Origin) -> str:
    return f"{origin.file}:{origin.line}"


# ---- per-rule checks ----------------------------------------------------------------------


def _check_names(result: LoadResult) -> Iterator[Problem]:
    seen: dict[tuple[str, str], Origin] = {}
    for document in result.documents:
        key = (document.kind, document.name)
        if key in seen:
            yield _at(
                document.origin,
                ("metadata", "name"),
                "duplicate-name",
                f"{document.kind} {document.name!r} is already defined at {_first_seen(seen[key])}",
            )
        else:
            seen[key] = document.origin


def _check_authority(result: LoadResult) -> Iterator[Problem]:
    authorities = [d for d in result.documents if d.kind == "AuthorityConfig"]
    first = authorities[0] if authorities else None
    for extra in authorities[1:]:
        yield _at(
            extra.origin,
            ("kind",),
            "multiple-authority",
            "at most one AuthorityConfig per repository; the first is at "
            + (_first_seen(first.origin) if first else "?"),
        )
    authority = result.intent.authority
    if authority is not None and authority.threshold > authority.shares:
        yield _at(
            authority.origin,
            ("spec", "threshold"),
            "authority-threshold",
            f"threshold {authority.threshold} is greater than shares {authority.shares}: "
            "the authority could never be unsealed",
        )


def _check_environments(intent: Intent) -> Iterator[Problem]:
    namespaces: dict[str, Environment] = {}
    for environment in intent.environments:
        other = namespaces.get(environment.namespace)
        if other is not None and other.name != environment.name:
            yield _at(
                environment.origin,
                (
                    ("spec", "namespace")
                    if "namespace" in _spec_keys(environment.origin)
                    else ("metadata", "name")
                ),
                "duplicate-namespace",
                f"authority namespace {environment.namespace!r} is already used by environment "
                f"{other.name!r}: environments must be isolated",
            )
        namespaces.setdefault(environment.namespace, environment)


def _spec_keys(origin: Origin) -> set[str]:
    return {str(p[1]) for p in origin.positions if len(p) == 2 and p[0] == "spec"}


def _check_paths(intent: Intent) -> Iterator[Problem]:
    declared = [e.name for e in intent.environments]
    claimed: dict[str, list[SecretDocument]] = {}  # by path: linear in the number of documents
    for document in intent.secret_documents():
        for message in secret_path_problems(document.path, declared):
            yield _at(document.origin, ("spec", "path"), "path-rule", message)
        for other in claimed.get(document.path, ()):
            if _overlap(other, document, declared):
                yield _at(
                    document.origin,
                    ("spec", "path"),
                    "duplicate-path",
                    f"path {document.path!r} is already declared by {other.kind} "
                    f"{other.name!r} ({_first_seen(other.origin)}): one authority per secret",
                )
                break
        claimed.setdefault(document.path, []).append(document)


def _overlap(a: SecretDocument, b: SecretDocument, declared: list[str]) -> bool:
    scope_a = set(a.environments if a.environments is not None else declared)
    scope_b = set(b.environments if b.environments is not None else declared)
    both_all = a.environments is None and b.environments is None
    return both_all or bool(scope_a & scope_b)


def _check_environment_refs(
    intent: Intent, rejected: frozenset[tuple[str, str]]
) -> Iterator[Problem]:
    declared = {e.name for e in intent.environments}
    declared |= {name for kind, name in rejected if kind == "Environment"}
    for document in intent.secret_documents():
        for index, name in enumerate(document.environments or ()):
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none declared"
                yield _at(
                    document.origin,
                    ("spec", "environments", index),
                    "unknown-environment",
                    f"environment {name!r} is not declared by any Environment (known: {known})",
                )


def _check_consumers(document: SecretDocument) -> Iterator[Problem]:
    seen: set[tuple[str, str]] = set()
    consumers: tuple[Consumer, ...] = document.consumers
    for index, consumer in enumerate(consumers):
        identity = (consumer.namespace, consumer.service_account)
        if identity in seen:
            yield _at(
                document.origin,
                ("spec", "consumers", index),
                "duplicate-consumer",
                f"consumer {consumer.namespace}/{consumer.service_account} is listed twice",
            )
        seen.add(identity)


def _check_secret_class(secret: SecretIntent) -> Iterator[Problem]:
    has_keys = "keys" in _spec_keys(secret.origin)
    if secret.secret_class == "runtime":  # noqa: S105 (a class name, not a password)
        if not secret.generate:
            yield _at(
                secret.origin,
                ("spec", "class"),
                "secret-class",
                "a runtime secret is generated by the authority: declare spec.generate",
            )
        elif has_keys:
            yield _at(
                secret.origin,
                ("spec", "keys"),
                "secret-class",
                "a runtime secret takes its keys from spec.generate; remove spec.keys",
            )
    else:
        if secret.generate:
            yield _at(
                secret.origin,
                ("spec", "generate"),
                "secret-class",
                "an internal secret is written by its operator, not generated: "
                "use spec.keys or class runtime",
            )
        elif not has_keys:
            yield _at(
                secret.origin,
                ("spec", "class"),
                "secret-class",
                "an internal secret must list the key names its operator writes (spec.keys)",
            )


def _check_rotation(secret: SecretIntent) -> Iterator[Problem]:
    policy = secret.rotation
    if policy is None:
        return
    base = ("spec", "rotation")
    if policy.ttl.total_seconds() <= 0:
        yield _at(secret.origin, (*base, "ttl"), "rotation-policy", "ttl must be positive")
        return
    if policy.rotate_before.total_seconds() <= 0:
        yield _at(
            secret.origin,
            (*base, "rotateBefore"),
            "rotation-policy",
            "rotateBefore must be positive",
        )
    if policy.rotate_before >= policy.ttl:
        yield _at(
            secret.origin,
            (*base, "rotateBefore"),
            "rotation-policy",
            "rotateBefore must be shorter than ttl, or every value is already due on creation",
        )
    if policy.max_overlap > policy.ttl:
        yield _at(
            secret.origin,
            (*base, "maxOverlap"),
            "rotation-policy",
            "maxOverlap must not exceed ttl: an old version would outlive its own lifetime",
        )


def _check_dynamic(
    credential: DynamicCredential, intent: Intent, rejected: frozenset[tuple[str, str]]
) -> Iterator[Problem]:
    origin = credential.origin
    database = ("spec", "database")
    yield from _check_connection_url(credential)
    admin = intent.bootstrap_secret(credential.database.admin_secret)
    if admin is None and ("BootstrapSecret", credential.database.admin_secret) in rejected:
        pass
    elif admin is None:
        names = ", ".join(sorted(b.name for b in intent.bootstrap_secrets)) or "none declared"
        yield _at(
            origin,
            (*database, "adminSecret"),
            "unknown-admin-secret",
            f"adminSecret {credential.database.admin_secret!r} names no BootstrapSecret "
            f"(known: {names})",
        )
    else:
        missing_keys = [k for k in ADMIN_KEYS if admin.keys is not None and k not in admin.keys]
        if missing_keys:
            yield _at(
                origin,
                (*database, "adminSecret"),
                "admin-secret-keys",
                f"BootstrapSecret {admin.name!r} does not provide {', '.join(missing_keys)}",
            )
        declared = [e.name for e in intent.environments]
        needed = set(credential.environments or declared)
        covered = set(admin.environments or declared)
        if admin.environments is not None and not needed <= covered:
            yield _at(
                origin,
                (*database, "adminSecret"),
                "admin-secret-scope",
                f"BootstrapSecret {admin.name!r} is not declared for environment(s) "
                f"{', '.join(sorted(needed - covered))}",
            )
    role_names: dict[str, int] = {}
    for index, role in enumerate(credential.roles):
        where = ("spec", "roles", index)
        if role.name in role_names:
            yield _at(
                origin,
                (*where, "name"),
                "duplicate-name",
                f"role {role.name!r} is declared twice in this DynamicCredential",
            )
        role_names.setdefault(role.name, index)
        if role.ttl.total_seconds() <= 0 or role.ttl > role.max_ttl:
            yield _at(
                origin,
                (*where, "ttl"),
                "lease-policy",
                "ttl must be positive and not exceed maxTtl",
            )
        if not any("{{name}}" in s for s in role.creation_statements):
            yield _at(
                origin,
                (*where, "creationStatements"),
                "lease-policy",
                "creationStatements must create the role named {{name}} (the engine's username)",
            )
    for index, allowed in enumerate(credential.database.allowed_roles):
        if allowed not in role_names and allowed != "*":
            yield _at(
                origin,
                (*database, "allowedRoles", index),
                "unknown-role",
                f"allowedRoles names {allowed!r}, which is not among spec.roles",
            )


def _check_connection_url(credential: DynamicCredential) -> Iterator[Problem]:
    url = credential.database.connection_url
    where = ("spec", "database", "connectionUrl")
    parts = urlsplit(url)
    netloc_auth = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    literal_password = False
    if ":" in netloc_auth and netloc_auth.partition(":")[2] != "{{password}}":
        literal_password = True
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() == "password" and value != "{{password}}":
            literal_password = True
    if literal_password:
        yield _at(
            credential.origin,
            where,
            "plaintext-value",
            "connectionUrl holds a literal password; write {{password}} and declare the "
            "admin credentials as a BootstrapSecret (adminSecret)",
        )
    elif "{{username}}" not in url or "{{password}}" not in url:
        yield _at(
            credential.origin,
            where,
            "connection-url",
            "connectionUrl must contain the {{username}} and {{password}} templates",
        )


def _leaves(data: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _leaves(item, (*path, index))
    else:
        yield path, data


def _sops_problems(doc: YamlDocument) -> Iterator[Problem]:
    """A SOPS file must be fully encrypted and carry the metadata needed to decrypt it."""
    data: dict[str, Any] = doc.data
    metadata = data["sops"]
    age = metadata.get("age")
    mac = metadata.get("mac")
    missing = [
        name
        for name, ok in (
            ("age", isinstance(age, list) and bool(age)),
            ("mac", isinstance(mac, str) and bool(SOPS_VALUE.match(mac))),
            ("lastmodified", bool(metadata.get("lastmodified"))),
        )
        if not ok
    ]
    if missing:
        yield _at(
            doc.origin,
            ("sops",),
            "plaintext-bootstrap",
            f"incomplete sops metadata ({', '.join(missing)}): the file cannot be decrypted "
            "or verified with age",
        )
    for path, value in _leaves({k: v for k, v in data.items() if k != "sops"}):
        if not (isinstance(value, str) and SOPS_VALUE.match(value)):
            shown = ":".join(str(p) for p in path)
            yield _at(
                doc.origin,
                path,
                "plaintext-bootstrap",
                f"value at {shown!r} is not encrypted (expected ENC[AES256_GCM,...]); "
                "re-encrypt the file with sops",
            )


def _check_bootstrap_files(result: LoadResult) -> Iterator[Problem]:
    referenced: dict[str, BootstrapSecret] = {}
    for bootstrap in result.intent.bootstrap_secrets:
        if bootstrap.sops is None:
            continue
        file = bootstrap.sops.file
        referenced.setdefault(file, bootstrap)
        where = ("spec", "source", "sops", "file")
        if file not in result.files:
            yield _at(
                bootstrap.origin,
                where,
                "plaintext-bootstrap",
                f"SOPS file {file!r} does not exist in the repository",
            )
            continue
        sops_doc = result.sops_files.get(file)
        if sops_doc is None or bootstrap.sops.keys is None:
            continue
        present = {str(k) for k in sops_doc.data if k != "sops"}
        for index, key in enumerate(bootstrap.sops.keys):
            if key not in present:
                yield _at(
                    bootstrap.origin,
                    ("spec", "source", "sops", "keys", index),
                    "bootstrap-keys",
                    f"key {key!r} is not in {file}",
                )
    for file in sorted(result.plain_bootstrap_files):
        user = referenced.get(file)
        by = f"; referenced by BootstrapSecret {user.name!r}" if user else ""
        yield Problem(
            file,
            1,
            1,
            "plaintext-bootstrap",
            f"not SOPS-encrypted (no sops metadata){by}: bootstrap values are committed "
            "only encrypted",
        )
    for file in sorted(result.sops_files):
        yield from _sops_problems(result.sops_files[file])


# ---- entry points -------------------------------------------------------------------------


def check(result: LoadResult) -> list[Problem]:
    """Every problem of a loaded repository: the loader's and the cross-document ones."""
    intent = result.intent
    found: list[Problem] = list(result.problems)
    found.extend(_check_names(result))
    found.extend(_check_authority(result))
    found.extend(_check_environments(intent))
    found.extend(_check_paths(intent))
    found.extend(_check_environment_refs(intent, result.rejected))
    for document in intent.secret_documents():
        found.extend(_check_consumers(document))
    for secret in intent.secrets:
        found.extend(_check_secret_class(secret))
        found.extend(_check_rotation(secret))
    for credential in intent.dynamic_credentials:
        found.extend(_check_dynamic(credential, intent, result.rejected))
    found.extend(_check_bootstrap_files(result))
    return sorted(set(found))


def validate_files(files: Mapping[str, bytes]) -> list[Problem]:
    """Problems of the repository given as {relative posix path: content}; [] when valid."""
    return check(load_files(files))


def validate_dir(root: Path) -> list[Problem]:
    """Problems of the repository checked out at ``root``; [] when valid."""
    return check(load_dir(root))


def summarize(result: LoadResult) -> dict[str, int]:
    """Counts for the ``validate`` summary line."""
    intent = result.intent
    secrets: Iterable[object] = list(intent.secret_documents())
    return {
        "documents": result.document_count,
        "environments": len(intent.environments),
        "secrets": len(list(secrets)),
        "secretIntents": len(intent.secrets),
        "bootstrapSecrets": len(intent.bootstrap_secrets),
        "dynamicCredentials": len(intent.dynamic_credentials),
        "authority": 1 if intent.authority is not None else 0,
    }
