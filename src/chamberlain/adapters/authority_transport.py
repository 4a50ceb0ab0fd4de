"""The hvac transport under :class:`~chamberlain.adapters.authority.Authority`.

One hvac adapter subclass does two jobs hvac leaves out: it counts every HTTP call by kind (a
benchmark can then say how many authority round trips a whole step cost, across threads and
namespaces), and it records the HTTP status on the exception hvac raises (hvac folds 409, 412
and 415 into one ``UnexpectedError`` class, which is not enough to decide on a retry).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from chamberlain.lazy import lazy_module

if TYPE_CHECKING:
    import hvac
    import requests
    from hvac.adapters import JSONAdapter
else:
    hvac = lazy_module("hvac")

CALL_KINDS = ("read", "write", "list", "delete")
_KIND_OF_METHOD = {"get": "read", "head": "read", "list": "list", "delete": "delete"}


class CallCounter(Counter[str]):
    """A thread-safe ``Counter`` of HTTP calls by kind: read, write, list, delete.

    The kind is the HTTP verb's: GET is a read, LIST a list, DELETE a delete, anything else
    (POST, PUT, PATCH) a write, so ``sys/leases/lookup`` (a PUT) counts as a write.
    """

    def __init__(self, iterable: Iterable[str] | None = None) -> None:
        super().__init__(iterable or ())
        self._lock = threading.Lock()

    def record(self, method: str) -> None:
        kind = _KIND_OF_METHOD.get(method.lower(), "write")
        with self._lock:
            self[kind] += 1

    def snapshot(self) -> Counter[str]:
        """A consistent copy (plain ``Counter``) to diff against a later snapshot."""
        with self._lock:
            return Counter(dict(self))

    def reset(self) -> None:
        with self._lock:
            self.clear()


def counting_adapter_class() -> type[JSONAdapter]:
    """:class:`CountingAdapter`, defined on first use so that importing this module leaves
    hvac (and requests) unimported until a client is built."""
    return _counting_adapter_class()


@cache
def _counting_adapter_class() -> type[JSONAdapter]:
    from hvac.adapters import JSONAdapter

    class CountingAdapter(JSONAdapter):  # type: ignore[misc]  # hvac is untyped
        """hvac's JSON adapter, counting calls and keeping the HTTP status on errors."""

        calls: CallCounter

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.record(method)
            return super().request(method, url, *args, **kwargs)

        def _raise_for_error(self, method: str, url: str, response: requests.Response) -> None:
            try:
                super()._raise_for_error(method, url, response)
            except hvac.exceptions.VaultError as exc:
                exc.status_code = response.status_code
                raise

    return CountingAdapter


def __getattr__(name: str) -> Any:
    if name == "CountingAdapter":
        return _counting_adapter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def counting_client(
    *,
    addr: str,
    token: str | None,
    namespace: str | None,
    calls: CallCounter,
    timeout: float,
    session: requests.Session | None = None,
    verify: bool | str = True,
    cert: Any = None,
    proxies: Any = None,
) -> hvac.Client:
    """An hvac client whose adapter counts into ``calls`` (a new session unless one is given)."""
    client = hvac.Client(
        url=addr,
        token=token,
        namespace=namespace or None,
        timeout=timeout,
        session=session,
        verify=verify,
        cert=cert,
        proxies=proxies,
        adapter=counting_adapter_class(),
    )
    client.adapter.calls = calls
    return client


def timeout_of(client: hvac.Client) -> float:
    """The per-request timeout the client was built with (hvac keeps it in ``_kwargs``)."""
    return float(client.adapter._kwargs.get("timeout") or 30)


def calls_of(client: hvac.Client) -> CallCounter:
    """The counter of a client made by this module."""
    counter: CallCounter = client.adapter.calls
    return counter


def adopt(client: hvac.Client) -> hvac.Client:
    """A counting client with ``client``'s address, token, namespace and session.

    A new client rather than a swapped adapter: hvac's nested API objects (``secrets.kv.v2``)
    keep the adapter they were built with. A client that already counts is returned as is.
    """
    if isinstance(client.adapter, counting_adapter_class()):
        return client
    return derive_client(
        client, namespace=client.adapter.namespace, new_session=False, calls=CallCounter()
    )


def derive_client(
    client: hvac.Client,
    *,
    namespace: str | None,
    new_session: bool,
    calls: CallCounter | None = None,
) -> hvac.Client:
    """Same address, token and TLS settings; another namespace, maybe a new session.

    The call counter is ``client``'s unless ``calls`` is given.
    """
    adapter = client.adapter
    settings = adapter._kwargs  # hvac keeps verify/cert/timeout/proxies here
    return counting_client(
        addr=adapter.base_uri,
        token=adapter.token,
        namespace=namespace,
        calls=calls if calls is not None else calls_of(client),
        timeout=timeout_of(client),
        session=None if new_session else adapter.session,
        verify=settings.get("verify", True),
        cert=settings.get("cert"),
        proxies=settings.get("proxies"),
    )
