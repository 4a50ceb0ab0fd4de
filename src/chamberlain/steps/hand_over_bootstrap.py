"""The hand-over-bootstrap step: bootstrap values move into the authority exactly once.

RFC-SECOPS-0001 rule 2: copy, acknowledge, then retire. Accepted events:

* ``dev.chamberlain.authority.initialized.v1``: the environment in its data (an ephemeral
  instance such as ``preview-42`` included), or every non-ephemeral environment, at the head
  of its branch of ``CHAMBERLAIN_INTENT_REPO``;
* ``dev.chamberlain.git.push.v1`` whose commits touch bootstrap intent (a file under
  ``bootstrap/`` or a file holding a BootstrapSecret): the non-ephemeral environments that
  track the pushed branch. Other pushes -> 202.

Per BootstrapSecret and environment, the KV v2 metadata of its path decides (the record is a
set of ``handover-*`` keys in ``custom_metadata``, see docs/handover.md):

* no value: record an intent (salt + salted digest of the source value), write with
  check-and-set 0, read back and compare in constant time, record the handover (source, time,
  commit, event), retire the source, record the retirement. Reply ``handover.completed``.
* value with an unfinished record whose digest matches (a crash after the write): finish it.
* value handed over, source still present: equal -> retire it now (a Secret already gone is
  retired); different -> the authority keeps its value and ``bootstrap.changed`` says so.
* value without a handover record: somebody else wrote it; never overwritten, never retired.

Nothing is rotated here. Every source is read before anything is written, so a tampered SOPS
file or a foreign Secret (422) leaves the authority untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from cloudevents.core.base import BaseCloudEvent

from chamberlain.adapters.authority_errors import CasConflictError, ForbiddenError
from chamberlain.adapters.bootstrap_sources import (
    BootstrapSources,
    SourceValue,
    new_salt,
    salted_digest,
    same_value,
)
from chamberlain.adapters.gitrepo import ZERO_SHA
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.identity import FunctionIdentity, resolve
from chamberlain.logs import get_logger, log
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.model.intent import (
    BOOTSTRAP_DIR,
    DEFAULT_BRANCH,
    DEFAULT_KV_MOUNT,
    BootstrapSecret,
    Environment,
    Intent,
)
from chamberlain.steps.base import PermanentError, Step, TransientError
from chamberlain.steps.intent_loading import IntentLoader, LoadedIntent

if TYPE_CHECKING:
    from chamberlain.adapters.authority import Authority, SecretMetadata

FUNCTION = "hand-over-bootstrap"
SOURCE = f"/chamberlain/{FUNCTION}"
HEADS = "refs/heads/"
# GitHub lists at most 20 commits per push: beyond that, ask git what changed.
MAX_LISTED_COMMITS = 20

# custom_metadata keys owned by this step (the issue-secrets step carries them over).
K_SALT = "handover-salt"
K_DIGEST = "handover-digest"
K_SOURCE = "handover-source"
K_AT = "handover-at"
K_COMMIT = "handover-commit"
K_EVENT = "handover-event"
K_VERSION = "handover-version"
K_STATE = "handover-state"
K_RETIRE = "handover-retire"
K_RETIRED_AT = "handover-retired-at"
STATE_PENDING = "pending"
STATE_HANDED_OVER = "handed-over"
STATE_RETIRED = "retired"
NOT_RETIRABLE = "not-applicable: remove the file from Git"

Emit = Callable[[BaseCloudEvent], None]
Outcome = Literal["completed", "changed", "foreign", "lost", "waiting", "unchanged"]

_log = get_logger("chamberlain.hand-over-bootstrap")


@dataclass(frozen=True)
class Target:
    """One BootstrapSecret in one environment, at one commit of the intent repository."""

    bootstrap: BootstrapSecret
    environment: str  # the instance name (e.g. preview-42)
    namespace: str  # absolute authority namespace
    kv_mount: str
    commit: str
    url: str
    files: Mapping[str, str] = field(repr=False)  # path -> blob id at ``commit``


@dataclass
class Observed:
    """What the authority and the source say about a target before anything is written."""

    target: Target
    authority: Authority
    metadata: SecretMetadata | None
    value: dict[str, str] | None = field(repr=False)  # the authority's current value
    source: SourceValue | None

    @property
    def record(self) -> Mapping[str, str]:
        return self.metadata.custom_metadata if self.metadata else {}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def touches_bootstrap(intent: Intent, paths: set[str]) -> bool:
    """Whether a change to ``paths`` concerns bootstrap intent or bootstrap files."""
    files = {b.origin.file for b in intent.bootstrap_secrets}
    files |= {b.sops.file for b in intent.bootstrap_secrets if b.sops is not None}
    return any(p.startswith(f"{BOOTSTRAP_DIR}/") or p in files for p in paths)


def _ignored(why: str, **fields: Any) -> None:
    log(_log, "INFO", f"ignored: {why}", reason=why, **fields)


class HandOverBootstrap:
    """The step callable; one instance serves every delivery of a function process."""

    def __init__(
        self,
        authority: Authority | FunctionIdentity,
        loader: IntentLoader,
        sources: BootstrapSources,
        *,
        base_namespace: str | None = None,
        intent_repo: str | None = None,
        default_branch: str = DEFAULT_BRANCH,
        emit: Emit | None = None,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        self.authority = authority
        self.loader = loader
        self.sources = sources
        self.base_namespace = (base_namespace or "").strip("/") or None
        self.intent_repo = intent_repo
        self.default_branch = default_branch
        self.emit = emit
        self.clock = clock

    @property
    def git(self) -> IntentSource:
        return self.loader.source

    # -- entry ------------------------------------------------------------------------------

    def __call__(self, event: BaseCloudEvent) -> BaseCloudEvent | None:
        type_ = event.get_type()
        if type_ == T.AUTHORITY_INITIALIZED:
            targets = self._initialized_targets(event)
        elif type_ == T.GIT_PUSH:
            targets = self._push_targets(event)
        else:
            raise PermanentError(f"{FUNCTION} does not handle {type_}", status=400)
        if not targets:
            return None
        identity = self.authority
        authority = resolve(identity)
        try:
            return self._hand_over_all(authority, targets, event.get_id())
        except ForbiddenError:
            if isinstance(identity, FunctionIdentity):
                identity.reset()  # the initializer may have replaced the token
            raise

    def _hand_over_all(
        self, authority: Authority, targets: list[Target], event_id: str
    ) -> BaseCloudEvent | None:
        observed = [self._observe(authority, target) for target in targets]  # reads only
        replies: list[BaseCloudEvent] = []
        waiting: list[str] = []
        for item in observed:
            outcome, reply = self._act(item, event_id)
            if outcome == "waiting":
                waiting.append(f"{item.target.environment}:{item.target.bootstrap.path}")
            if reply is not None:
                replies.append(reply)
        return self._deliver(replies, waiting)

    # -- which targets ----------------------------------------------------------------------

    def _initialized_targets(self, event: BaseCloudEvent) -> list[Target]:
        data = event.get_data()
        data = data if isinstance(data, Mapping) else {}
        url = self.intent_repo
        if not url:
            _ignored("no intent repository configured (CHAMBERLAIN_INTENT_REPO)")
            return []
        head = self._head(url, self.default_branch)
        if head is None:
            _ignored(f"branch {self.default_branch} does not exist in the intent repository")
            return []
        loaded = self._load(url, head)
        wanted = data.get("environment")
        if isinstance(wanted, str) and wanted:
            resolved = loaded.intent.resolve_environment(wanted)
            if resolved is None:
                _ignored(f"environment {wanted!r} is not declared in intent", environment=wanted)
                return []
            chosen = [resolved]
        else:
            chosen = [(e, e.name) for e in loaded.intent.environments if not e.ephemeral]
        targets: list[Target] = []
        for environment, declared_as in sorted(chosen, key=lambda pair: pair[0].name):
            at_branch = loaded
            if environment.branch != self.default_branch:
                branch_head = self._head(url, environment.branch)
                if branch_head is None:
                    continue
                at_branch = self._load(url, branch_head)
            targets.extend(self._targets(url, self._valid(at_branch), environment, declared_as))
        return targets

    def _push_targets(self, event: BaseCloudEvent) -> list[Target]:
        push = event.get_data()
        if not isinstance(push, Mapping):
            raise PermanentError("push event without data", status=400)
        ref, url = str(push.get("ref", "")), str((push.get("repository") or {}).get("url", ""))
        if not ref.startswith(HEADS) or push.get("deleted"):
            _ignored(f"{ref} is not an updated branch", ref=ref)
            return []
        branch, after = ref[len(HEADS) :], str(push["after"])
        loaded = self._load(url, after)
        environments = sorted(
            (e for e in loaded.intent.environments if e.branch == branch and not e.ephemeral),
            key=lambda e: e.name,
        )
        if not environments:
            _ignored(f"no environment tracks branch {branch}", ref=ref)
            return []
        if not touches_bootstrap(loaded.intent, self._changed_paths(url, push)):
            _ignored("the push does not touch bootstrap intent", ref=ref, commit=after)
            return []
        valid = self._valid(loaded)
        return [t for e in environments for t in self._targets(url, valid, e, e.name)]

    def _changed_paths(self, url: str, push: Mapping[str, Any]) -> set[str]:
        commits = push.get("commits") or []
        paths = {
            str(p)
            for c in commits
            for kind in ("added", "modified", "removed")
            for p in c.get(kind) or ()
        }
        before, after = str(push.get("before", ZERO_SHA)), str(push["after"])
        if commits and len(commits) < MAX_LISTED_COMMITS and before != ZERO_SHA:
            return paths
        try:
            return paths | self.git.changed_paths(url, before, after)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            return paths | set(self.git.tree_at(url, after))  # before is gone (force push)

    def _targets(
        self, url: str, loaded: LoadedIntent, environment: Environment, declared_as: str
    ) -> list[Target]:
        intent = loaded.intent
        kv_mount = intent.authority.kv_mount if intent.authority else DEFAULT_KV_MOUNT
        own = environment.namespace.strip("/")
        namespace = f"{self.base_namespace}/{own}" if self.base_namespace else own
        return [
            Target(b, environment.name, namespace, kv_mount, loaded.commit, url, loaded.files)
            for b in intent.bootstrap_secrets
            if b.applies_to(declared_as)
        ]

    # -- intent -----------------------------------------------------------------------------

    def _head(self, url: str, branch: str) -> str | None:
        try:
            return self.git.head_of(url, HEADS + branch)
        except IntentSourceError as exc:
            raise TransientError(str(exc)) from None

    def _load(self, url: str, commit: str) -> LoadedIntent:
        try:
            return self.loader.load(url, commit)
        except IntentSourceError as exc:
            if exc.transient:
                raise TransientError(str(exc)) from None
            raise PermanentError(str(exc), status=422) from None

    def _valid(self, loaded: LoadedIntent) -> LoadedIntent:
        if not loaded.valid:
            problems = [p.format() for p in loaded.problems[:20]]
            log(_log, "WARNING", "intent invalid: nothing handed over", problems=problems)
            raise PermanentError(
                f"intent at {loaded.commit} is invalid ({len(loaded.problems)} problem(s)): "
                "nothing handed over",
                status=422,
            )
        return loaded

    def _read_file(self, target: Target) -> Callable[[str], bytes]:
        def read(path: str) -> bytes:
            blob = target.files.get(path)
            if blob is None:
                raise PermanentError(f"{path} does not exist at {target.commit}", status=422)
            try:
                return self.git.blobs(target.url, [blob])[blob]
            except IntentSourceError as exc:
                raise TransientError(str(exc)) from None

        return read

    # -- observe (no writes) ----------------------------------------------------------------

    def _observe(self, root: Authority, target: Target) -> Observed:
        authority = root.for_namespace(target.namespace)
        path, mount = target.bootstrap.path, target.kv_mount
        metadata = authority.read_metadata(path, mount=mount)
        value: dict[str, str] | None = None
        if metadata is not None and metadata.current_version > 0:
            current = authority.read_secret(path, mount=mount)
            value = dict(current.data) if current is not None else None
        source = self.sources.read(target.bootstrap, self._read_file(target))
        return Observed(target, authority, metadata, value, source)

    # -- act --------------------------------------------------------------------------------

    def _act(self, item: Observed, event_id: str) -> tuple[Outcome, BaseCloudEvent | None]:
        record, target = item.record, item.target
        has_value = item.metadata is not None and item.metadata.current_version > 0
        if not has_value:
            if K_AT in record:
                self._note("WARNING", "handed over before, but the value is gone: not again", item)
                return "lost", None
            if item.source is None:
                self._note("WARNING", "bootstrap source not present yet: retry later", item)
                return "waiting", None
            return self._hand_over(item, event_id)
        if item.value is None:
            self._note("WARNING", "the authority's current version is deleted: left alone", item)
            return "lost", None
        if K_AT not in record:
            if not self._ours(item):
                self._note(
                    "WARNING",
                    "a value not handed over by chamberlain is in the authority: kept, "
                    "source not retired",
                    item,
                )
                return "foreign", None
            version = item.metadata.current_version if item.metadata else 1
            self._record_handover(item, item.source, version, event_id)
            record = item.record
        if item.source is not None and item.value is not None:
            if not same_value(item.source.data, item.value):
                self._note("WARNING", "bootstrap source differs from the authority: kept", item)
                return "changed", self._changed_event(target, item.source.source)
            if item.source.retirable:
                self._retire(item, item.source)
                return "completed", self._completed_event(item, record)
        if K_RETIRED_AT not in record and record.get(K_RETIRE) != NOT_RETIRABLE:
            self._mark_retired(item, "already-gone")  # the Secret is gone or already inert
            return "completed", self._completed_event(item, item.record)
        if record.get(K_EVENT) == event_id:  # a redelivery of the event that did it
            return "completed", self._completed_event(item, record)
        return "unchanged", None

    def _ours(self, item: Observed) -> bool:
        """Whether the value in the authority is the one an unfinished handover wrote."""
        salt, digest = item.record.get(K_SALT), item.record.get(K_DIGEST)
        if not salt or not digest or item.value is None:
            return False
        return same_value({"d": salted_digest(item.value, salt)}, {"d": digest})

    def _hand_over(self, item: Observed, event_id: str) -> tuple[Outcome, BaseCloudEvent | None]:
        source = item.source
        assert source is not None
        target, authority = item.target, item.authority
        path, mount = target.bootstrap.path, target.kv_mount
        salt = new_salt()
        intent_record = {
            K_SALT: salt,
            K_DIGEST: salted_digest(source.data, salt),
            K_STATE: STATE_PENDING,
            K_EVENT: event_id,
        }
        if item.metadata is None:
            authority.write_metadata(path, custom_metadata=intent_record, mount=mount)
        else:
            authority.patch_custom_metadata(path, intent_record, mount=mount)
        try:
            version = authority.write_secret(path, source.data, cas=0, mount=mount)
        except CasConflictError:
            # Someone else wrote first: decide again from what is there now (a value exists,
            # so this cannot come back here).
            self._note("INFO", "check-and-set lost to a concurrent writer: re-reading", item)
            return self._act(self._observe(authority, target), event_id)
        written = authority.read_secret(path, version=version, mount=mount)
        if written is None or not same_value(written.data, source.data):
            raise TransientError(f"{target.environment}:{path}: read-back differs from source")
        item.metadata = authority.read_metadata(path, mount=mount)
        item.value = dict(written.data)
        self._record_handover(item, source, version, event_id)
        log(
            _log,
            "INFO",
            "bootstrap value copied into the authority",
            environment=target.environment,
            path=path,
            source=source.source,
            version=version,
        )
        if source.retirable:
            self._retire(item, source)
        else:
            self._note("INFO", f"retire: {NOT_RETIRABLE}", item)
        return "completed", self._completed_event(item, item.record)

    def _record_handover(
        self, item: Observed, source: SourceValue | None, version: int, event_id: str
    ) -> None:
        target = item.target
        label = source.source if source else self.sources.describe(target.bootstrap)
        retirable = source.retirable if source else label.startswith("kubernetes:")
        changes: dict[str, str | None] = {
            K_SOURCE: label,
            K_AT: self.clock(),
            K_COMMIT: target.commit,
            K_EVENT: event_id,
            K_VERSION: str(version),
            K_STATE: STATE_HANDED_OVER,
            K_RETIRE: target.bootstrap.retire if retirable else NOT_RETIRABLE,
        }
        self._patch(item, changes)

    def _retire(self, item: Observed, source: SourceValue) -> None:
        done = self.sources.retire(source, item.target.bootstrap.retire, self.clock())
        self._mark_retired(item, done)

    def _mark_retired(self, item: Observed, how: str) -> None:
        self._patch(item, {K_RETIRED_AT: self.clock(), K_STATE: STATE_RETIRED})
        self._note("INFO", f"bootstrap source retired ({how})", item)

    def _patch(self, item: Observed, changes: Mapping[str, str | None]) -> None:
        target = item.target
        item.authority.patch_custom_metadata(target.bootstrap.path, changes, mount=target.kv_mount)
        merged = {**item.record, **{k: v for k, v in changes.items() if v is not None}}
        if item.metadata is not None:
            item.metadata = replace(item.metadata, custom_metadata=merged)

    # -- events -----------------------------------------------------------------------------

    def _completed_event(self, item: Observed, record: Mapping[str, str]) -> BaseCloudEvent:
        target = item.target
        data = {
            "environment": target.environment,
            "path": target.bootstrap.path,
            "source": record.get(K_SOURCE) or self.sources.describe(target.bootstrap),
            "version": int(record.get(K_VERSION) or 1),
            "commit": record.get(K_COMMIT) or target.commit,
        }
        return make_event(
            T.HANDOVER_COMPLETED,
            data,
            source=SOURCE,
            subject=f"{target.environment}/{target.bootstrap.path}",
        )

    def _changed_event(self, target: Target, source: str) -> BaseCloudEvent:
        data = {
            "environment": target.environment,
            "path": target.bootstrap.path,
            "source": source,
            "commit": target.commit,
        }
        return make_event(
            T.BOOTSTRAP_CHANGED,
            data,
            source=SOURCE,
            subject=f"{target.environment}/{target.bootstrap.path}",
        )

    def _deliver(self, replies: list[BaseCloudEvent], waiting: list[str]) -> BaseCloudEvent | None:
        """The first event is the reply; the others go to K_SINK (or the log, without one)."""
        reply, extra = (replies[0], replies[1:]) if replies and not waiting else (None, replies)
        for event in extra:
            self._send(event)
        if waiting:
            raise TransientError(
                f"bootstrap source(s) not present yet: {', '.join(waiting[:20])}", status=503
            )
        return reply

    def _send(self, event: BaseCloudEvent) -> None:
        if self.emit is None:
            log(
                _log,
                "WARNING",
                "no K_SINK: event logged, not sent",
                event=event.get_type(),
                data=event.get_data(),
            )
            return
        try:
            self.emit(event)
        except Exception as exc:
            raise TransientError(f"cannot emit {event.get_type()}: {exc}") from None

    def _note(self, level: str, message: str, item: Observed) -> None:
        target = item.target
        log(
            _log,
            level,
            message,
            environment=target.environment,
            path=target.bootstrap.path,
            source=item.source.source if item.source else self.sources.describe(target.bootstrap),
            commit=target.commit,
        )


def build(environ: Mapping[str, str] | None = None) -> Step:
    """The step configured from the environment (see :mod:`chamberlain.settings` and
    :mod:`chamberlain.adapters.bootstrap_sources`); ``K_SINK`` receives extra events."""
    from chamberlain.runtime.emit import http_emitter
    from chamberlain.settings import Settings

    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    sink = env.get("K_SINK")
    return HandOverBootstrap(
        FunctionIdentity(FUNCTION, settings, env),
        IntentLoader(IntentSource(settings.cache_dir, environ=env)),
        BootstrapSources.from_env(env),
        base_namespace=settings.authority_namespace,
        intent_repo=settings.intent_repo,
        default_branch=settings.intent_branch,
        emit=http_emitter(sink) if sink else None,
    )
