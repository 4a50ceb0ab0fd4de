"""A small fake of the Kubernetes API server, speaking the real REST protocol over HTTP.

No API server can run on the test machines (DESIGN.md, "Real components in tests"), so this is
the one test double allowed: the real ``kubernetes`` client and OpenBao's Kubernetes auth method
(TokenReview) talk to it over HTTP exactly as they would to a cluster. It keeps only what
chamberlain relies on, but keeps it faithful: resourceVersion conflicts, 404/409 Status objects,
label and field selectors, merge and JSON patches, ``stringData`` folding, bearer-token auth.

Known simplifications: strategic-merge patches are applied as JSON merge patches (RFC 7386, lists
replaced, not merged by key); no watch, no pagination, no RBAC (every issued token may do
anything); deleting a namespace removes its objects at once; namespaces need not exist unless
``strict_namespaces`` is set.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import json
import re
import secrets
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

JSON = dict[str, Any]
CA_PEM_PATH = Path(__file__).parent / "data" / "fake-kube-ca.pem"
KINDS = {
    "namespaces": "Namespace",
    "secrets": "Secret",
    "serviceaccounts": "ServiceAccount",
    "configmaps": "ConfigMap",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "externalsecrets": "ExternalSecret",
    "secretstores": "SecretStore",
    "clustersecretstores": "ClusterSecretStore",
    "tokenreviews": "TokenReview",
}
PLURALS = {kind: plural for plural, kind in KINDS.items()}
BUILTIN_GROUPS = frozenset({"", "apps", "batch", "authentication.k8s.io"})
DEFAULT_AUDIENCES = ("https://kubernetes.default.svc.cluster.local",)
PATCH_MERGE = frozenset({"application/merge-patch+json", "application/strategic-merge-patch+json"})
PATCH_JSON = "application/json-patch+json"


class ApiError(Exception):
    """An API failure, rendered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.details = code, reason, details

    def status(self) -> JSON:
        body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        body.update(message=str(self), reason=self.reason, code=self.code)
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class Ref:
    """Where a request points: a collection (``name`` None) or one object."""

    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None = None
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def not_found(self, name: str | None = None) -> ApiError:
        name = name or self.name
        details = {"name": name, "group": self.group, "kind": self.plural}
        return ApiError(404, "NotFound", f'{self.qualified} "{name}" not found', details)


@dataclass(frozen=True)
class JournalEntry:
    """One request as the fake saw it, so tests can assert effects rather than return values."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    status: int
    ref: Ref | None


class Journal:
    """A thread-safe, append-only record of every request, with a filter for assertions."""

    def __init__(self) -> None:
        self._entries: list[JournalEntry] = []
        self._lock = threading.Lock()

    def append(self, entry: JournalEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[JournalEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def filter(
        self,
        method: str | None = None,
        *,
        plural: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        path: str | None = None,
    ) -> list[JournalEntry]:
        """Entries matching every given criterion (``method`` is case-insensitive)."""

        def keep(e: JournalEntry) -> bool:
            ref = e.ref
            return (
                (method is None or e.method == method.upper())
                and (path is None or e.path == path)
                and (plural is None or (ref is not None and ref.plural == plural))
                and (name is None or (ref is not None and ref.name == name))
                and (namespace is None or (ref is not None and ref.namespace == namespace))
            )

        return [e for e in self.entries() if keep(e)]


@dataclass(frozen=True)
class _Token:
    namespace: str
    service_account: str
    uid: str
    audiences: tuple[str, ...]


def parse_path(path: str) -> Ref:
    """Map ``/api/v1/...`` and ``/apis/<group>/<version>/...`` onto a :class:`Ref`."""
    seg = [s for s in path.split("/") if s]
    if len(seg) >= 3 and seg[0] == "api":
        group, version, rest = "", seg[1], seg[2:]
    elif len(seg) >= 4 and seg[0] == "apis":
        group, version, rest = seg[1], seg[2], seg[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces":
        ns, rest = None, rest
    else:
        ns = None
    if len(rest) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else None
    return Ref(group, version, rest[0], ns, name, rest[2] if len(rest) > 2 else None)


def _selector_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (set-based values contain commas)."""
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return [t.strip() for t in [*terms, cur] if t.strip()]


_SET_TERM = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_TERM = re.compile(r"^([\w./-]+)\s*(==|!=|=)\s*([\w./-]*)$")
_KEY_TERM = re.compile(r"^(!?)\s*([\w./-]+)$")


def matches_labels(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: ``=``/``==``/``!=``, ``in``/``notin``, ``k``, ``!k``."""
    for term in _selector_terms(selector):
        if m := _SET_TERM.match(term):
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            present = m.group(1) in labels and labels[m.group(1)] in values
            if present != (m.group(2) == "in"):
                return False
        elif m := _EQ_TERM.match(term):
            equal = labels.get(m.group(1)) == m.group(3)
            if equal != (m.group(2) != "!="):
                return False
        elif m := _KEY_TERM.match(term):
            if (m.group(2) in labels) == (m.group(1) == "!"):
                return False
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return True


def matches_fields(selector: str, obj: JSON) -> bool:
    """Field selectors on dotted paths (``metadata.name=x``, ``metadata.namespace!=y``)."""
    for term in _selector_terms(selector):
        m = _EQ_TERM.match(term)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        value: Any = obj
        for part in m.group(1).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if (str(value if value is not None else "") == m.group(3)) != (m.group(2) != "!="):
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, all else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: JSON, ops: list[Any]) -> JSON:
    """RFC 6902 JSON patch with ``add``, ``replace``, ``remove`` and ``test``."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise ApiError(422, "Invalid", f"invalid JSON patch operation: {op!r}")
        kind = op.get("op")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        parent: Any = doc
        try:
            for token in tokens[:-1]:
                parent = parent[int(token)] if isinstance(parent, list) else parent[token]
            last = tokens[-1] if tokens else ""
            key: Any = last
            if isinstance(parent, list):
                key = len(parent) if last == "-" and kind == "add" else int(last)
            if kind == "add" and isinstance(parent, list):
                parent.insert(key, copy.deepcopy(op["value"]))
            elif kind == "add":
                parent[key] = copy.deepcopy(op["value"])
            elif kind == "replace":
                _ = parent[key]  # replace needs an existing member
                parent[key] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[key]
            elif kind == "test":
                if parent[key] != op["value"]:
                    raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
            else:
                raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"JSON patch cannot apply at {op['path']}") from exc
    return doc


def _der_integers(der: bytes) -> list[int]:
    """The INTEGERs of a flat DER SEQUENCE (a PKCS#1 RSAPrivateKey is exactly that)."""

    def length(i: int) -> tuple[int, int]:
        first = der[i]
        if first < 0x80:
            return first, i + 1
        size = first & 0x7F
        return int.from_bytes(der[i + 1 : i + 1 + size], "big"), i + 1 + size

    _, i = length(1)
    values = []
    while i < len(der):
        size, i = length(i + 1)
        values.append(int.from_bytes(der[i : i + size], "big"))
        i += size
    return values


@functools.lru_cache(maxsize=1)
def signing_key() -> tuple[int, int, str]:
    """(modulus, private exponent, public PEM) of a per-process RSA key.

    OpenBao only parses asymmetrically signed service-account JWTs (as real clusters issue), so
    tokens are RS256; the ``openssl`` CLI makes the key because ``cryptography`` is not a dep.
    """

    def run(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            ["openssl", *args], input=stdin, capture_output=True, check=True, text=True
        ).stdout

    private_pem = run("genrsa", "-traditional", "2048")
    der = base64.b64decode("".join(private_pem.strip().splitlines()[1:-1]))
    _version, modulus, _e, exponent = _der_integers(der)[:4]
    return modulus, exponent, run("rsa", "-pubout", stdin=private_pem)


def rs256(message: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017), the JWS ``RS256`` algorithm."""
    modulus, exponent, _ = signing_key()
    size = (modulus.bit_length() + 7) // 8
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest_info += hashlib.sha256(message).digest()
    encoded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
    return pow(int.from_bytes(encoded, "big"), exponent, modulus).to_bytes(size, "big")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_of(obj: JSON) -> JSON:
    """Everything that bumps ``metadata.generation`` when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class FakeKubeApi:
    """In-memory Kubernetes API on ``127.0.0.1:<free port>``; thread-safe; start()/stop()."""

    def __init__(self, *, ca_pem: str | None = None, strict_namespaces: bool = False) -> None:
        self.ca_pem = ca_pem if ca_pem is not None else CA_PEM_PATH.read_text()
        self.strict_namespaces = strict_namespaces
        self.journal = Journal()
        self._store: dict[tuple[str, str, str, str], JSON] = {}
        self._tokens: dict[str, _Token] = {}
        self._revoked: set[str] = set()
        self._rv = 0
        self._faults: list[tuple[str, str, int]] = []
        self._lock = threading.RLock()
        self.public_key_pem = signing_key()[2]
        self._kid = hashlib.sha256(self.public_key_pem.encode()).hexdigest()[:16]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeKubeApi:
        handler = type("_BoundHandler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("fake Kubernetes API is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- identities ------------------------------------------------------------------------
    def issue_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: list[str] | None = None,
        ttl_s: int = 86400,
    ) -> str:
        """A service-account JWT (RS256) as a cluster would mount it; creates the SA if missing."""
        with self._lock:
            ref = Ref("", "v1", "serviceaccounts", namespace, service_account)
            sa = self._store.get(self._key_of(ref, service_account))
            if sa is None:
                body = {"metadata": {"name": service_account}}
                sa = self._write(ref, body, None)
            uid = sa["metadata"]["uid"]
            aud = tuple(audiences) if audiences is not None else DEFAULT_AUDIENCES
            now = int(time.time())
            claims = {
                "iss": "kubernetes/serviceaccount",
                "sub": f"system:serviceaccount:{namespace}:{service_account}",
                "aud": list(aud),
                "iat": now,
                "nbf": now,
                "exp": now + ttl_s,
                "jti": str(uuid.uuid4()),
                "kubernetes.io/serviceaccount/namespace": namespace,
                "kubernetes.io/serviceaccount/service-account.name": service_account,
                "kubernetes.io/serviceaccount/service-account.uid": uid,
                "kubernetes.io": {
                    "namespace": namespace,
                    "serviceaccount": {"name": service_account, "uid": uid},
                },
            }
            header = {"alg": "RS256", "typ": "JWT", "kid": self._kid}
            signing_input = ".".join(
                _b64url(json.dumps(part, separators=(",", ":")).encode())
                for part in (header, claims)
            )
            token = f"{signing_input}.{_b64url(rs256(signing_input.encode()))}"
            self._tokens[token] = _Token(namespace, service_account, uid, aud)
            return token

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._revoked.add(token)

    def _authenticate(self, token: str) -> _Token | None:
        """Issued, not revoked, and its ServiceAccount still exists with the same uid."""
        info = self._tokens.get(token)
        if info is None or token in self._revoked:
            return None
        ref = Ref("", "v1", "serviceaccounts", info.namespace, info.service_account)
        sa = self._store.get(self._key_of(ref, info.service_account))
        return info if sa is not None and sa["metadata"]["uid"] == info.uid else None

    # -- direct access for tests -----------------------------------------------------------
    def fail_next(self, method: str, plural: str, status: int = 500) -> None:
        """Fault injection: the next ``method`` request on ``plural`` answers ``status`` and
        changes nothing (it is journaled with that status)."""
        with self._lock:
            self._faults.append((method.upper(), plural, status))

    def _injected_fault(self, method: str, ref: Ref | None) -> ApiError | None:
        for fault in self._faults:
            if ref is not None and fault[:2] == (method, ref.plural):
                self._faults.remove(fault)
                return ApiError(fault[2], "InternalError", "injected fault (test)")
        return None

    def api_client(self, token: str) -> ApiClient:
        """A real ``kubernetes.client.ApiClient`` pointed at this server with a bearer token."""
        from kubernetes import client

        config = client.Configuration(host=self.host)
        config.api_key = {"BearerToken": token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(config)

    def objects(self, plural: str, namespace: str | None = None, *, group: str = "") -> list[JSON]:
        """Copies of stored objects of one resource, optionally in one namespace."""
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (g, p, ns, _n), obj in sorted(self._store.items())
                if g == group and p == plural and (namespace is None or ns == namespace)
            ]

    def get(self, plural: str, name: str, namespace: str | None = None, *, group: str = "") -> JSON:
        """A copy of one stored object (raises :class:`ApiError` 404 when absent)."""
        ref = Ref(group, "v1", plural, namespace, name)
        with self._lock:
            obj = self._store.get(self._key_of(ref, name))
            if obj is None:
                raise ref.not_found()
            return copy.deepcopy(obj)

    def seed(self, obj: JSON) -> JSON:
        """Create an object directly (no HTTP, no journal); returns it with server metadata."""
        group, _, version = str(obj["apiVersion"]).rpartition("/")
        plural = PLURALS.get(obj["kind"], obj["kind"].lower() + "s")
        ref = Ref(group, version, plural, obj.get("metadata", {}).get("namespace"))
        with self._lock:
            return copy.deepcopy(self._create(ref, copy.deepcopy(obj)))

    # -- request handling ------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], ctype: str, body: Any, auth: str
    ) -> tuple[int, JSON]:
        """Serve one request; always returns (status code, JSON body) and journals it."""
        ref: Ref | None = None
        try:
            with self._lock:
                scheme, _, token = auth.partition(" ")
                if scheme.lower() != "bearer" or self._authenticate(token.strip()) is None:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                ref = parse_path(path) if path != "/version" else None
                fault = self._injected_fault(method, ref)
                if fault is not None:
                    raise fault
                code, payload = self._dispatch(method, ref, query, ctype, body)
        except ApiError as err:
            code, payload = err.code, err.status()
        self.journal.append(JournalEntry(method, path, query, ctype, body, code, ref))
        return code, payload

    def _dispatch(
        self, method: str, ref: Ref | None, query: dict[str, str], ctype: str, body: Any
    ) -> tuple[int, JSON]:
        if ref is None:
            return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-chamberlain-fake"}
        if (ref.group, ref.plural, method) == ("authentication.k8s.io", "tokenreviews", "POST"):
            return 201, self._token_review(body)
        if query.get("watch") in ("true", "1"):
            raise ApiError(400, "BadRequest", "watch is not supported by the fake API server")
        if ref.name is None:
            if method == "GET":
                return 200, self._list(ref, query)
            if method == "POST":
                return 201, self._create(ref, self._object_body(body))
            if method == "DELETE":
                listed = self._list(ref, query)
                for item in listed["items"]:
                    self._delete(replace_name(ref, item["metadata"]["name"], item))
                return 200, listed
        else:
            key = self._key_of(ref, ref.name)
            current = self._store.get(key)
            if current is None:
                raise ref.not_found()
            if method == "GET":
                return 200, copy.deepcopy(current)
            if method == "PUT":
                return 200, self._replace(ref, current, self._object_body(body))
            if method == "PATCH":
                return 200, self._replace(ref, current, self._patched(current, ctype, body))
            if method == "DELETE":
                return 200, self._delete(ref)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {ref.qualified}")

    @staticmethod
    def _object_body(body: Any) -> JSON:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        return copy.deepcopy(body)

    @staticmethod
    def _patched(current: JSON, ctype: str, body: Any) -> JSON:
        if ctype in PATCH_MERGE and isinstance(body, dict):
            patched: JSON = merge_patch(copy.deepcopy(current), body)
        elif ctype == PATCH_JSON and isinstance(body, list):
            patched = json_patch(current, body)
        elif ctype in PATCH_MERGE or ctype == PATCH_JSON:
            raise ApiError(400, "BadRequest", f"the body does not fit content type {ctype}")
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the media type {ctype!r} is unsupported")
        return patched  # a resourceVersion the patch sets is checked by _replace, as upstream

    def _key_of(self, ref: Ref, name: str) -> tuple[str, str, str, str]:
        return (ref.group, ref.plural, ref.namespace or "", name)

    def _list(self, ref: Ref, query: dict[str, str]) -> JSON:
        items = self.objects(ref.plural, ref.namespace, group=ref.group)
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        items = [
            item
            for item in items
            if matches_labels(labels, item["metadata"].get("labels") or {})
            and matches_fields(fields, item)
        ]
        if ref.group in BUILTIN_GROUPS:  # typed lists do not repeat kind/apiVersion per item
            items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
        kind = KINDS.get(ref.plural) or ref.plural.rstrip("s").capitalize()
        return {
            "kind": f"{kind}List",
            "apiVersion": ref.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _create(self, ref: Ref, body: JSON) -> JSON:
        meta = body.setdefault("metadata", {})
        if meta.get("namespace") and ref.namespace and meta["namespace"] != ref.namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value: name is required")
        if self._key_of(ref, meta["name"]) in self._store:
            details = {"name": meta["name"], "group": ref.group, "kind": ref.plural}
            msg = f'{ref.qualified} "{meta["name"]}" already exists'
            raise ApiError(409, "AlreadyExists", msg, details)
        if ref.namespace and self.strict_namespaces:
            ns_ref = Ref("", "v1", "namespaces", None, ref.namespace)
            if self._key_of(ns_ref, ref.namespace) not in self._store:
                raise ns_ref.not_found()
        return copy.deepcopy(self._write(ref, body, None))

    def _replace(self, ref: Ref, current: JSON, body: JSON) -> JSON:
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        if meta.get("name", ref.name) != ref.name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {ref.qualified} "{ref.name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": ref.name, "group": ref.group, "kind": ref.plural},
            )
        if ref.subresource == "status":
            body = {**copy.deepcopy(current), "status": body.get("status")}
        elif "status" in current:
            body["status"] = current["status"]
        return copy.deepcopy(self._write(ref, body, current))

    def _write(self, ref: Ref, body: JSON, current: JSON | None) -> JSON:
        """Fill server-owned fields, fold ``stringData`` into ``data``, bump resourceVersion."""
        meta = body.setdefault("metadata", {})
        name = str(meta.get("name") or ref.name)
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is not None and not (
                isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            ):
                raise ApiError(422, "Invalid", f"metadata.{field}: values must be strings")
        if ref.plural == "secrets" and ref.group == "":
            data = body.get("data") or {}
            for key, value in (body.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            for key, value in data.items():
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, TypeError) as exc:
                    raise ApiError(422, "Invalid", f"data[{key}]: illegal base64 data") from exc
            if data:
                body["data"] = data
            body.setdefault("type", "Opaque")
        if ref.plural == "namespaces" and ref.group == "":
            body.setdefault("status", {"phase": "Active"})
        self._rv += 1
        old_meta = current["metadata"] if current else {}
        generation = old_meta.get("generation", 0)
        if current is None or _spec_of(current) != _spec_of(body):
            generation += 1
        body["apiVersion"] = ref.api_version
        body["kind"] = KINDS.get(ref.plural) or body.get("kind") or ref.plural.capitalize()
        meta.update(
            name=name,
            uid=old_meta.get("uid") or str(uuid.uuid4()),
            resourceVersion=str(self._rv),
            generation=generation,
            creationTimestamp=old_meta.get("creationTimestamp") or _now(),
        )
        if ref.namespace:
            meta["namespace"] = ref.namespace
        else:
            meta.pop("namespace", None)
        self._store[self._key_of(ref, name)] = body
        return body

    def _delete(self, ref: Ref) -> JSON:
        assert ref.name is not None
        removed = self._store.pop(self._key_of(ref, ref.name))
        if ref.plural == "namespaces" and ref.group == "":
            for key in [k for k in self._store if k[2] == ref.name]:
                del self._store[key]
        self._rv += 1
        return copy.deepcopy(removed)

    def _token_review(self, body: Any) -> JSON:
        spec = body.get("spec", {}) if isinstance(body, dict) else {}
        info = self._authenticate(str(spec.get("token", "")))
        wanted = list(spec.get("audiences") or [])
        status: JSON = {"user": {}}
        if info is None:
            status["error"] = "[invalid bearer token, token lookup failed]"
        elif wanted and not set(wanted) & set(info.audiences):
            status["error"] = "[invalid bearer token, token audiences is invalid]"
        else:
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{info.namespace}:{info.service_account}",
                    "uid": info.uid,
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{info.namespace}",
                        "system:authenticated",
                    ],
                },
                "audiences": [a for a in wanted if a in info.audiences] or list(info.audiences),
            }
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }


def replace_name(ref: Ref, name: str, item: JSON) -> Ref:
    """The object ref of one list item (items listed across namespaces keep their own)."""
    namespace = item.get("metadata", {}).get("namespace", ref.namespace)
    return Ref(ref.group, ref.version, ref.plural, namespace, name)


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 shell around :meth:`FakeKubeApi.handle` (keep-alive, JSON in and out)."""

    protocol_version = "HTTP/1.1"
    api: FakeKubeApi

    def _serve(self) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            code, payload = 400, ApiError(400, "BadRequest", "invalid JSON body").status()
        else:
            query = dict(parse_qsl(url.query))
            auth = self.headers.get("Authorization") or ""
            code, payload = self.api.handle(self.command, url.path, query, ctype, body, auth)
        out = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request bodies may hold secret material and tests must not print it."""
