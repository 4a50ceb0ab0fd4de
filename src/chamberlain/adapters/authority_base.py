"""What every part of the authority adapter shares: the client, error translation, paths."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from chamberlain.adapters import authority_errors as errors
from chamberlain.adapters.authority_transport import CallCounter, adopt, calls_of
from chamberlain.lazy import lazy_module

if TYPE_CHECKING:
    import hvac
    import requests
else:
    hvac = lazy_module("hvac")
    requests = lazy_module("requests")

# Lists are fetched in pages of this many keys (OpenBao's ``after``/``limit``) where supported,
# so a huge folder never arrives as one response.
PAGE_SIZE = 1000


class AuthorityBase:
    """The hvac client plus the helpers the operation mixins build on."""

    def __init__(self, client: hvac.Client, *, kv_mount: str = "secret") -> None:
        self._client = adopt(client)
        self.kv_mount = kv_mount.strip("/")
        self.calls: CallCounter = calls_of(self._client)

    @property
    def namespace(self) -> str | None:
        """The namespace every call is relative to (None: the root namespace)."""
        value = self._client.adapter.namespace
        return (str(value).strip("/") or None) if value else None

    @property
    def addr(self) -> str:
        return str(self._client.adapter.base_uri)

    @property
    def client(self) -> hvac.Client:
        """The underlying hvac client, for calls this adapter does not cover yet."""
        return self._client

    @contextlib.contextmanager
    def _op(self, operation: str, target: str = "") -> Iterator[None]:
        """Translate hvac and transport failures inside the block into authority errors."""
        try:
            yield
        except hvac.exceptions.VaultError as exc:
            status = getattr(exc, "status_code", None) or _status_of().get(type(exc), 500)
            raise errors.from_status(
                int(status),
                _error_strings(exc),
                operation=operation,
                target=target,
                namespace=self.namespace,
            ) from None
        except requests.RequestException as exc:
            raise errors.unreachable(
                self.addr, exc, operation=operation, target=target, namespace=self.namespace
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.unexpected(
                type(exc).__name__, operation=operation, target=target, namespace=self.namespace
            ) from None

    def _checked(self, operation: str, path: str) -> str:
        """``path`` without surrounding slashes; refuses ``.``/``..`` segments."""
        clean = path.strip("/")
        if any(segment in (".", "..") for segment in clean.split("/")):
            raise errors.invalid_argument(
                "'.' and '..' segments are not allowed",
                operation=operation,
                target=path,
                namespace=self.namespace,
            )
        return clean

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        """A raw call through the counting adapter (for endpoints hvac does not wrap)."""
        return self._client.adapter.request(method, url, **kwargs)

    def _list(self, url: str, *, paginate: bool) -> list[str]:
        """The keys of a LIST endpoint; a 404 (nothing there) is an empty list."""
        keys: list[str] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {}
            if paginate:
                params["limit"] = PAGE_SIZE
                if after is not None:
                    params["after"] = after
            try:
                response = self._request("list", url, params=params)
            except hvac.exceptions.InvalidPath:
                return keys
            page = [str(k) for k in (data_of(response).get("keys") or [])]
            keys.extend(page)
            if not paginate or len(page) < PAGE_SIZE:
                return keys
            after = page[-1]


def data_of(response: Any) -> dict[str, Any]:
    """The ``data`` object of a JSON answer ({} for 204 No Content)."""
    if isinstance(response, dict):
        data = response.get("data")
        return data if isinstance(data, dict) else {}
    return {}


def _error_strings(exc: hvac.exceptions.VaultError) -> list[str]:
    found = getattr(exc, "errors", None)
    if isinstance(found, list):
        return [str(e) for e in found]
    if isinstance(found, str):
        return [found]
    return []


@cache
def _status_of() -> dict[type[Any], int]:
    """hvac's exception classes -> HTTP status (built on first use: hvac is imported lazily)."""
    return {
        hvac.exceptions.InvalidRequest: 400,
        hvac.exceptions.Unauthorized: 401,
        hvac.exceptions.Forbidden: 403,
        hvac.exceptions.InvalidPath: 404,
        hvac.exceptions.PreconditionFailed: 412,
        hvac.exceptions.RateLimitExceeded: 429,
        hvac.exceptions.InternalServerError: 500,
        hvac.exceptions.VaultNotInitialized: 501,
        hvac.exceptions.BadGateway: 502,
        hvac.exceptions.VaultDown: 503,
    }
