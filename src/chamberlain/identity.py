"""Each function's own authority identity: where its token comes from.

No function holds a root token (RFC-SECOPS-0001). The initialize-authority step creates one
identity per function, bound to the policy ``chamberlain-fn-<function>``; a function finds it,
in this order:

1. an explicit token: ``CHAMBERLAIN_AUTHORITY_TOKEN`` / ``CHAMBERLAIN_AUTHORITY_TOKEN_FILE``
   (read by :class:`chamberlain.settings.Settings`), for operators and tests;
2. the identity directory ``CHAMBERLAIN_IDENTITY_DIR/<function>.token`` (mode 0600): the local
   runtime's periodic tokens, written by the initializer and renewed by each converge;
3. a Kubernetes login: the pod's service-account JWT
   (``CHAMBERLAIN_SERVICE_ACCOUNT_TOKEN_FILE``, default the mounted token) exchanged at the
   root-namespace auth method ``CHAMBERLAIN_FUNCTION_AUTH_MOUNT`` (default ``kubernetes``) for
   the role ``chamberlain-fn-<function>``.

Nothing found -> :class:`IdentityUnavailableError` (503): before the first initialization no
identity exists yet, and the broker retries the event until one does.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from chamberlain.logs import register_secret
from chamberlain.settings import Settings
from chamberlain.steps.base import TransientError

if TYPE_CHECKING:
    # imported where a session is made: a step is built long before its first authority call
    from chamberlain.adapters.authority import Authority

IDENTITY_DIR_ENV = "CHAMBERLAIN_IDENTITY_DIR"
FUNCTION_AUTH_MOUNT_ENV = "CHAMBERLAIN_FUNCTION_AUTH_MOUNT"
SERVICE_ACCOUNT_TOKEN_FILE_ENV = "CHAMBERLAIN_SERVICE_ACCOUNT_TOKEN_FILE"  # noqa: S105
DEFAULT_SERVICE_ACCOUNT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
DEFAULT_FUNCTION_AUTH_MOUNT = "kubernetes"
ROLE_PREFIX = "chamberlain-fn-"
TOKEN_SUFFIX = ".token"  # noqa: S105 - a file suffix


class IdentityUnavailableError(TransientError):
    """No identity for this function yet (not initialized, or not provisioned): retry later."""

    default_status = 503


def token_path(directory: Path, function: str) -> Path:
    return directory / f"{function}{TOKEN_SUFFIX}"


def read_token(directory: Path, function: str) -> str | None:
    """The function's token from the identity directory; None when there is none."""
    try:
        token = token_path(directory, function).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityUnavailableError(
            f"identity file of {function} unreadable ({type(exc).__name__})"
        ) from None
    if token:
        register_secret(token)
    return token or None


def write_token(directory: Path, function: str, token: str) -> Path:
    """Store a function's token: directory 0700, file 0600, replaced atomically."""
    register_secret(token)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    final = token_path(directory, function)
    tmp = final.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def identity_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    value = env.get(IDENTITY_DIR_ENV)
    return Path(value) if value else None


def _kubernetes_login(
    function: str, settings: Settings, env: Mapping[str, str], namespace: str | None
) -> Authority | None:
    jwt_file = Path(env.get(SERVICE_ACCOUNT_TOKEN_FILE_ENV) or DEFAULT_SERVICE_ACCOUNT_TOKEN_FILE)
    try:
        jwt = jwt_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not jwt:
        return None
    register_secret(jwt)
    from chamberlain.adapters.authority import Authority

    mount = env.get(FUNCTION_AUTH_MOUNT_ENV) or DEFAULT_FUNCTION_AUTH_MOUNT
    anonymous = Authority.connect(settings.authority_addr, "")
    token = anonymous.login_kubernetes(mount, f"{ROLE_PREFIX}{function}", jwt)
    return Authority.connect(settings.authority_addr, token, namespace=namespace)


def authority_for(
    function: str, settings: Settings, environ: Mapping[str, str] | None = None
) -> Authority:
    """An authority session acting as ``function``'s own identity (see module docstring)."""
    from chamberlain.adapters.authority import Authority

    env = os.environ if environ is None else environ
    namespace: str | None = getattr(settings, "authority_namespace", None)
    if settings.authority_token:
        return Authority.connect(
            settings.authority_addr, settings.authority_token, namespace=namespace
        )
    directory = identity_dir(env)
    if directory is not None:
        token = read_token(directory, function)
        if token:
            return Authority.connect(settings.authority_addr, token, namespace=namespace)
    found = _kubernetes_login(function, settings, env, namespace)
    if found is not None:
        return found
    where = f"{directory}/{function}{TOKEN_SUFFIX}" if directory else "no identity directory"
    raise IdentityUnavailableError(
        f"no authority identity for {function} yet ({where}; no service-account token): "
        "the initialize-authority step creates it"
    )


class FunctionIdentity:
    """A lazily resolved identity: resolved on first use, re-resolved after :meth:`reset`.

    A step builds one at start (when the authority may not be initialized yet) and asks it for
    an :class:`Authority` per delivery; after a 401/403 it calls :meth:`reset` so that a token
    the initializer replaced is picked up.
    """

    def __init__(
        self, function: str, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> None:
        self.function = function
        self.settings = settings
        self.environ = environ
        self._authority: Authority | None = None
        self._lock = threading.Lock()

    def authority(self) -> Authority:
        with self._lock:
            if self._authority is None:
                self._authority = authority_for(self.function, self.settings, self.environ)
            return self._authority

    def reset(self) -> None:
        with self._lock:
            self._authority = None


def resolve(authority: Authority | FunctionIdentity) -> Authority:
    """The :class:`Authority` behind a step's identity, resolved now if it is lazy."""
    return authority.authority() if isinstance(authority, FunctionIdentity) else authority
