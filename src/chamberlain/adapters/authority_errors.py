"""One error hierarchy for everything the authority adapter raises.

Steps must not care whether a failure came from hvac, from ``requests`` or from OpenBao's JSON:
they need to know whether the broker should retry (DESIGN.md §Events). Every error is therefore
also a :class:`~chamberlain.steps.base.TransientError` or
:class:`~chamberlain.steps.base.PermanentError` carrying the HTTP status the runtime answers
with, while ``authority_status`` keeps the status OpenBao actually returned.

Messages name the operation, the path and the namespace, never a value, a token or a request
body; OpenBao's own error strings are passed through :func:`chamberlain.logs.redact` too.
"""

from __future__ import annotations

from chamberlain.logs import redact
from chamberlain.steps.base import PermanentError, TransientError

_MAX_DETAIL = 300


class AuthorityError(Exception):
    """Base of every authority failure (used alone for an unexpected response shape)."""

    operation: str = ""
    target: str = ""
    namespace: str | None = None
    authority_status: int | None = None


class AuthorityUnavailableError(AuthorityError, TransientError):
    """Unreachable, timing out, answering 5xx or not initialized: retry later."""

    default_status = 503


class SealedError(AuthorityUnavailableError):
    """The authority is sealed; it needs its unseal shares before anything works."""


class RateLimitedError(AuthorityError, TransientError):
    """OpenBao answered 429 (rate-limit quota)."""

    default_status = 429


class ConflictError(AuthorityError, TransientError):
    """A concurrent change won; re-read and try again."""

    default_status = 409


class CasConflictError(ConflictError):
    """A KV v2 check-and-set did not match the current version."""


class ForbiddenError(AuthorityError, PermanentError):
    """401/403: the identity lacks a capability. A configuration problem, not retried."""

    default_status = 403


class InvalidRequestError(AuthorityError, PermanentError):
    """OpenBao refused the request as malformed or impossible."""

    default_status = 422


class AlreadyExistsError(InvalidRequestError):
    """Enabling a mount or auth method on a path that is already in use."""


class NotFoundError(InvalidRequestError):
    """A 404 where the operation needs the object (reads of missing things return None)."""


class LeaseNotFoundError(NotFoundError):
    """Renewing a lease that expired or was revoked: issue a new credential instead."""


def _where(operation: str, target: str, namespace: str | None) -> str:
    scope = f" in namespace {namespace!r}" if namespace else ""
    return f"{operation} {target!r}{scope}" if target else f"{operation}{scope}"


def _tag(
    error: AuthorityError,
    operation: str,
    target: str,
    namespace: str | None,
    authority_status: int | None,
) -> AuthorityError:
    error.operation, error.target = operation, target
    error.namespace, error.authority_status = namespace, authority_status
    return error


def from_status(
    status: int,
    errors: list[str],
    *,
    operation: str,
    target: str,
    namespace: str | None,
) -> AuthorityError:
    """The error for an OpenBao answer with HTTP ``status`` and its ``errors`` strings."""
    detail = redact("; ".join(str(e) for e in errors))[:_MAX_DETAIL]
    lowered = detail.lower()
    message = f"{_where(operation, target, namespace)}: authority answered HTTP {status}"
    if detail:
        message += f": {detail}"
    error: AuthorityError
    if status == 400 and "check-and-set" in lowered:
        error = CasConflictError(message)
    elif status == 400 and "lease not found" in lowered:
        error = LeaseNotFoundError(message)
    elif status == 400 and "already in use" in lowered:
        error = AlreadyExistsError(message)
    elif status == 503 and "sealed" in lowered:
        error = SealedError(message)
    elif status in (500, 502, 503, 504):
        error = AuthorityUnavailableError(message, status=status)
    elif status in (412, 501) or status >= 500:
        # 412: a standby has not caught up yet; 501: not initialized yet. Both pass.
        error = AuthorityUnavailableError(message)
    elif status == 429:
        error = RateLimitedError(message)
    elif status == 409:
        error = ConflictError(message)
    elif status in (401, 403):
        error = ForbiddenError(message, status=status)
    elif status == 404:
        error = NotFoundError(message)
    elif status == 400:
        error = InvalidRequestError(message, status=400)
    else:
        error = InvalidRequestError(message)
    return _tag(error, operation, target, namespace, status)


def unreachable(
    addr: str,
    cause: BaseException,
    *,
    operation: str,
    target: str,
    namespace: str | None,
) -> AuthorityUnavailableError:
    """A transport failure (refused, reset, timeout); names the exception class, not its text."""
    message = (
        f"{_where(operation, target, namespace)}: authority at {addr} unreachable "
        f"({type(cause).__name__})"
    )
    error = AuthorityUnavailableError(message)
    _tag(error, operation, target, namespace, None)
    return error


def unexpected(what: str, *, operation: str, target: str, namespace: str | None) -> AuthorityError:
    """The authority answered 2xx with a body this adapter does not understand."""
    message = f"{_where(operation, target, namespace)}: unexpected response ({what})"
    return _tag(AuthorityError(message), operation, target, namespace, None)


def invalid_argument(
    why: str, *, operation: str, target: str, namespace: str | None
) -> InvalidRequestError:
    """A request refused before it reaches the authority (e.g. ``..`` in a path)."""
    error = InvalidRequestError(f"{_where(operation, target, namespace)}: {why}")
    _tag(error, operation, target, namespace, None)
    return error
