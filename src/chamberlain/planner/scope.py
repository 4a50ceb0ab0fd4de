"""Which part of an environment an incremental push may touch, from the diff alone.

A push that edits one file out of a thousand must observe and plan one secret, not a thousand:
the scope is every path declared by a changed file at either commit (so a removed or moved
document is retired) plus the policy and role names of those documents' consumers at either
commit (so a consumer losing a path gets its policy rewritten, or deleted with its role).
Anything that changes every path or grant at once (the KV mount, the Kubernetes auth mount,
the environment's authority namespace) widens the scope to everything.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from chamberlain.model.intent import Consumer, Intent, SecretDocument
from chamberlain.planner.actions import Scope
from chamberlain.planner.desired import consumer_names, kv_mount_of


def _changed_documents(
    intent: Intent, environment: str, changed_files: Collection[str]
) -> list[SecretDocument]:
    return [d for d in intent.for_environment(environment) if d.origin.file in changed_files]


def _consumers(documents: Iterable[SecretDocument]) -> Iterable[Consumer]:
    for document in documents:
        yield from document.consumers


def _mounts(intent: Intent) -> tuple[str, str | None]:
    auth = intent.authority
    return kv_mount_of(intent), auth.kubernetes_auth_mount if auth is not None else None


def _namespace(intent: Intent, environment: str) -> str | None:
    declared = intent.environment(environment)
    return declared.namespace if declared is not None else None


def changed_scope(
    old: Intent | None, new: Intent, changed_files: Collection[str], environment: str
) -> Scope:
    """The scope of a push from ``old`` (the applied intent) to ``new`` for ``environment``.

    ``old`` None (nothing applied yet) means everything. ``changed_files`` are repository paths
    added, modified or deleted between the two commits (both sides of a rename).
    """
    if old is None:
        return Scope.everything()
    if _mounts(old) != _mounts(new) or _namespace(old, environment) != _namespace(new, environment):
        return Scope.everything()
    files = frozenset(changed_files)
    documents = _changed_documents(old, environment, files) + _changed_documents(
        new, environment, files
    )
    return Scope(
        full=False,
        paths=frozenset(d.path for d in documents),
        consumers=consumer_names(_consumers(documents)),
    )


__all__ = ["changed_scope"]
