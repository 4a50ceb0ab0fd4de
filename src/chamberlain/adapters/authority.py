"""The authority adapter: every lifecycle step talks to OpenBao/Vault through this, only.

A thin, typed translation of hvac: plain return types instead of response dicts, ``None``/``[]``
where the API says "missing", and one error hierarchy (:mod:`.authority_errors`) whose classes
say whether the broker should retry. No business logic lives here.

The operations are grouped by area in :mod:`.authority_kv`, :mod:`.authority_sys` and
:mod:`.authority_engines`; :class:`Authority` combines them and adds the ways to obtain one.
Every value read or generated is registered with :func:`chamberlain.logs.register_secret`
before it is returned, so it is redacted wherever it might later be logged.

An instance is not thread-safe (it holds a ``requests`` session): give each thread its own
:meth:`Authority.clone`. Clones and :meth:`Authority.for_namespace` views share one
:class:`CallCounter`, so ``calls`` counts the HTTP calls of a whole step.
"""

from __future__ import annotations

from chamberlain.adapters.authority_engines import EngineOperations
from chamberlain.adapters.authority_errors import (
    AlreadyExistsError,
    AuthorityError,
    AuthorityUnavailableError,
    CasConflictError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    LeaseNotFoundError,
    NotFoundError,
    RateLimitedError,
    SealedError,
)
from chamberlain.adapters.authority_kv import KvOperations
from chamberlain.adapters.authority_sys import SysOperations
from chamberlain.adapters.authority_transport import CALL_KINDS, CallCounter, counting_client
from chamberlain.adapters.authority_transport import derive_client as _derive_client
from chamberlain.adapters.authority_types import (
    DynamicSecret,
    LeaseInfo,
    MountInfo,
    SealStatus,
    SecretMetadata,
    SecretVersion,
    VersionInfo,
)
from chamberlain.logs import register_secret

__all__ = [
    "CALL_KINDS",
    "AlreadyExistsError",
    "Authority",
    "AuthorityError",
    "AuthorityUnavailableError",
    "CallCounter",
    "CasConflictError",
    "ConflictError",
    "DynamicSecret",
    "ForbiddenError",
    "InvalidRequestError",
    "LeaseInfo",
    "LeaseNotFoundError",
    "MountInfo",
    "NotFoundError",
    "RateLimitedError",
    "SealStatus",
    "SealedError",
    "SecretMetadata",
    "SecretVersion",
    "VersionInfo",
]


class Authority(KvOperations, SysOperations, EngineOperations):
    """One authority identity (address, token, namespace) and every operation steps need.

    ``Authority(client)`` wraps an existing hvac client: it builds a counting client with the
    same address, token, namespace and ``requests`` session, and leaves ``client`` untouched.
    """

    @classmethod
    def connect(
        cls,
        addr: str,
        token: str,
        *,
        namespace: str | None = None,
        kv_mount: str = "secret",
        timeout: float = 10,
    ) -> Authority:
        """A new session to ``addr`` acting as ``token`` in ``namespace`` (None: root)."""
        register_secret(token)
        client = counting_client(
            addr=addr, token=token, namespace=namespace, calls=CallCounter(), timeout=timeout
        )
        return cls(client, kv_mount=kv_mount)

    def for_namespace(self, namespace: str | None) -> Authority:
        """The same identity in another namespace ("" or None: root), sharing the session.

        The namespace is absolute, not relative to this one. Use it from this thread only.
        """
        client = _derive_client(self._client, namespace=namespace or None, new_session=False)
        return Authority(client, kv_mount=self.kv_mount)

    def clone(self) -> Authority:
        """An independent session (for another thread), same identity and call counter."""
        client = _derive_client(self._client, namespace=self.namespace, new_session=True)
        return Authority(client, kv_mount=self.kv_mount)

    def __repr__(self) -> str:
        scope = self.namespace or "(root)"
        return f"Authority(addr={self.addr!r}, namespace={scope!r}, kv_mount={self.kv_mount!r})"
