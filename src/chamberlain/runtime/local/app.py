"""Assemble the local runtime: authority, broker, steps, ingress, repo watcher, pings.

:class:`LocalRuntime` owns the start order (authority first, since steps are configured with its
address; ingress before any event is published; pending deliveries resume as soon as the
broker's workers start) and the reverse stop order. Everything it starts is stopped by
:meth:`LocalRuntime.stop`, which is safe to call after a partial start.

Environment given to steps (set in this process before each step factory runs):

* ``CHAMBERLAIN_RUNTIME=local``
* ``CHAMBERLAIN_AUTHORITY_ADDR`` the embedded OpenBao's address
* ``CHAMBERLAIN_IDENTITY_DIR`` ``<state>/identities``: each function's own token, written by
  the initialize-authority step (no step ever gets a root token)
* ``CHAMBERLAIN_SHARE_DIR`` ``<state>/unseal-shares``: the age-encrypted unseal shares
* ``CHAMBERLAIN_UNSEAL_IDENTITY_FILE`` the ``--unseal-identity`` age identity, when given
* ``K_SINK`` this process's own ingress (events a step emits besides its reply)
* ``CHAMBERLAIN_KV_MOUNT=secret``
* ``CHAMBERLAIN_ENVIRONMENT`` the ``--environment`` name
* ``CHAMBERLAIN_STATE_DIR`` the state dir
* ``CHAMBERLAIN_INTENT_REPO`` / ``CHAMBERLAIN_INTENT_BRANCH`` the watched repo, when given

Every start publishes ``dev.chamberlain.cluster.created.v1`` for the environment (the local
"cluster" exists again): the initialize-authority step initializes OpenBao on the first start,
unseals it after a restart (with ``--unseal-identity``), and otherwise converges, changing
nothing when nothing drifted.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from cloudevents.core.base import BaseCloudEvent

import chamberlain
from chamberlain.adapters.bao_server import health as bao_health
from chamberlain.adapters.bao_server import started_servers
from chamberlain.logs import get_logger, redact
from chamberlain.model.event_types import CLUSTER_CREATED
from chamberlain.model.events import make_event
from chamberlain.runtime.local.authority import (
    IDENTITY_DIR,
    KV_MOUNT,
    SHARE_DIR,
    Authority,
    start_authority,
)
from chamberlain.runtime.local.broker import Broker, DeadLetter
from chamberlain.runtime.local.ingress import Ingress
from chamberlain.runtime.local.manifests import Manifests, Trigger, load_manifests
from chamberlain.runtime.local.pings import PingScheduler
from chamberlain.runtime.local.store import DeliveryStore
from chamberlain.runtime.local.timeline import (
    Banner,
    TimelinePrinter,
    TriggerStatus,
    format_banner,
)
from chamberlain.runtime.local.watcher import RepoWatcher
from chamberlain.steps.base import Step
from chamberlain.steps.registry import STEP_FACTORIES, load_step

STARTUP_SOURCE = "/chamberlain/local/up"
STARTED_FILE = "started.json"
LOCK_FILE = "up.lock"

log = get_logger("chamberlain.up")


@dataclass(frozen=True)
class UpConfig:
    """Everything `chamberlain up` was asked to do (CLI flags and extension hooks)."""

    state_dir: Path
    log_file: Path
    repo: Path | None = None
    branch: str = "main"
    manifests: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8700
    dev: bool = False
    environment: str = "local"
    extra_steps: Mapping[str, str] = field(default_factory=dict)
    extra_manifests: Sequence[Path] = ()
    unseal_identity: Path | None = None


def default_manifests_dir() -> Path:
    """knative/base from the wheel (chamberlain/_data) or from the source checkout."""
    package = Path(chamberlain.__file__).resolve().parent
    packaged = package / "_data" / "knative" / "base"
    if packaged.is_dir():
        return packaged
    return package.parents[1] / "knative" / "base"


def load_all_manifests(base: Path, extra: Sequence[Path]) -> Manifests:
    """Load ``base`` plus extra manifest dirs as one kustomization (validated together)."""
    if not extra:
        return load_manifests(base)
    with tempfile.TemporaryDirectory(prefix="chamberlain-manifests-") as tmp:
        resources = "\n".join(f"  - {json.dumps(str(p.resolve()))}" for p in (base, *extra))
        (Path(tmp) / "kustomization.yaml").write_text(f"resources:\n{resources}\n")
        return load_manifests(Path(tmp))


def load_steps(table: Mapping[str, str]) -> tuple[dict[str, Step], dict[str, str]]:
    """Build every step once; a factory that fails leaves its Triggers not ready."""
    steps: dict[str, Step] = {}
    failures: dict[str, str] = {}
    for name in sorted(table):
        try:
            steps[name] = load_step(name, dict(table))
        except Exception as exc:
            failures[name] = redact(f"{type(exc).__name__}: {exc}")[:200]
            log.error(
                "step failed to load", extra={"fields": {"function": name, "error": failures[name]}}
            )
    return steps, failures


def trigger_statuses(
    triggers: Sequence[Trigger], steps: Mapping[str, Step], failures: Mapping[str, str]
) -> list[TriggerStatus]:
    """Like Knative's Ready condition: a Trigger whose subscriber does not exist is not ready."""
    out = []
    for t in triggers:
        types = describe_filter(t)
        reason = "" if t.subscriber in steps else failures.get(t.subscriber, "no step")
        out.append(TriggerStatus(t.name, t.subscriber, types, t.subscriber in steps, reason))
    return out


def describe_filter(trigger: Trigger) -> str:
    """``type=... task=rotate`` for attribute filters, a hint for the filters dialect."""
    if trigger.filters:
        return "spec.filters (" + ", ".join(sorted({k for f in trigger.filters for k in f})) + ")"
    attrs = trigger.filter_attributes
    if not attrs:
        return "all events"
    ordered = sorted(attrs, key=lambda k: (k != "type", k))
    return " ".join(attrs[k] if k == "type" else f"{k}={attrs[k] or '*'}" for k in ordered)


class StateDirBusyError(RuntimeError):
    """Another `chamberlain up` holds the state dir."""


class LocalRuntime:
    """The running `chamberlain up`."""

    def __init__(self, config: UpConfig, printer: TimelinePrinter) -> None:
        self.config = config
        self.printer = printer
        self.authority: Authority | None = None
        self.broker: Broker | None = None
        self.store: DeliveryStore | None = None
        self.ingress: Ingress | None = None
        self.watcher: RepoWatcher | None = None
        self.pings: PingScheduler | None = None
        self._lock_handle: IO[str] | None = None

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        manifests = load_all_manifests(
            cfg.manifests or default_manifests_dir(), cfg.extra_manifests
        )
        if cfg.repo is not None:
            self.watcher = RepoWatcher(
                cfg.repo,
                cfg.branch,
                cfg.state_dir,
                lambda event: self._publish(event, "watcher"),
            )
            self.watcher.check()
        # bind the port before the (slow) authority start: a busy port fails fast
        self.ingress = Ingress(
            cfg.host,
            cfg.port,
            publish=lambda event: self._publish(event, "ingress"),
            dead_letters=self.dead_letters,
            health=self.health,
        )
        self.printer.line("starting OpenBao" + (" (dev mode)" if cfg.dev else " (raft)") + "...")
        self.authority = start_authority(
            cfg.state_dir, dev=cfg.dev, identities=cfg.state_dir / IDENTITY_DIR
        )
        self._export_step_environment(self.authority)
        steps, failures = load_steps({**STEP_FACTORIES, **cfg.extra_steps})
        self.store = DeliveryStore(cfg.state_dir / "broker.sqlite")
        self.broker = Broker(manifests, self.store, steps, on_timeline=self.printer.entry)
        self.ingress.start()
        self.printer.lines(self._banner(manifests, steps, failures))
        self.broker.start()
        self._announce_cluster()
        if self.watcher is not None:
            self.watcher.start()
        self.pings = PingScheduler(manifests.pingsources, self.broker.publish, self.store)
        self.pings.start()
        log.info(
            "chamberlain up started",
            extra={
                "fields": {
                    "ingress": self.ingress.address,
                    "authority": self.authority.addr,
                    "state_dir": str(cfg.state_dir),
                    "steps": sorted(steps),
                }
            },
        )

    def _lock_state_dir(self) -> None:
        """One `up` per state dir: a second one would fight over OpenBao and the store.

        An advisory lock on ``<state>/up.lock``, released by the kernel even on SIGKILL.
        """
        handle = (self.config.state_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StateDirBusyError(
                f"another `chamberlain up` is running on {self.config.state_dir}"
            ) from None
        self._lock_handle = handle

    def _publish(self, event: BaseCloudEvent, origin: str) -> list[str]:
        assert self.broker is not None
        return list(self.broker.publish(event, origin=origin))

    def _export_step_environment(self, authority: Authority) -> None:
        cfg = self.config
        assert self.ingress is not None
        env = {
            "CHAMBERLAIN_RUNTIME": "local",
            "CHAMBERLAIN_AUTHORITY_ADDR": authority.addr,
            "CHAMBERLAIN_IDENTITY_DIR": str(cfg.state_dir / IDENTITY_DIR),
            "CHAMBERLAIN_SHARE_DIR": str(cfg.state_dir / SHARE_DIR),
            "K_SINK": self.ingress.address.rstrip("/") + "/",
            "CHAMBERLAIN_KV_MOUNT": KV_MOUNT,
            "CHAMBERLAIN_ENVIRONMENT": cfg.environment,
            "CHAMBERLAIN_STATE_DIR": str(cfg.state_dir),
        }
        if cfg.unseal_identity is not None:
            env["CHAMBERLAIN_UNSEAL_IDENTITY_FILE"] = str(cfg.unseal_identity)
            # Locally the operator's age identity also opens the intent repo's SOPS files
            # (in a cluster the GitOps layer decrypts them into labelled Secrets instead).
            env.setdefault("CHAMBERLAIN_SOPS_IDENTITY_FILE", str(cfg.unseal_identity))
        if cfg.repo is not None:
            env["CHAMBERLAIN_INTENT_REPO"] = str(cfg.repo)
            env["CHAMBERLAIN_INTENT_BRANCH"] = cfg.branch
        os.environ.update(env)
        for stale in ("CHAMBERLAIN_AUTHORITY_STATE", "CHAMBERLAIN_AUTHORITY_TOKEN"):
            os.environ.pop(stale, None)

    def _announce_cluster(self) -> None:
        """Every start: the cluster.created event a real cluster would send when it appears.

        Idempotent for the step (a converge that finds nothing to change writes nothing), and
        it is what initializes OpenBao on the first start and unseals it after a restart.
        """
        marker = self.config.state_dir / STARTED_FILE
        try:
            started = json.loads(marker.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            started = {}
        if not isinstance(started, dict):
            started = {}
        starts = int(started.get("starts") or 0) + 1
        env = self.config.environment
        event = make_event(
            CLUSTER_CREATED,
            {"environment": env, "ephemeral": False, "kubernetes": None, "cluster": None},
            source=STARTUP_SOURCE,
            subject=env,
            id_=f"cluster-created-{env}-{starts}",
        )
        self._publish(event, "startup")
        started = {"first_start": started.get("first_start") or time.time(), "starts": starts}
        marker.write_text(json.dumps(started, indent=2) + "\n", encoding="utf-8")

    def _banner(
        self, manifests: Manifests, steps: Mapping[str, Step], failures: Mapping[str, str]
    ) -> list[str]:
        assert self.authority is not None and self.ingress is not None
        cfg = self.config
        auth = self.authority
        notes = []
        if auth.mode == "dev":
            mode = "dev mode, in memory"
        elif not auth.initialized:
            mode = "raft, uninitialized"
            notes.append("the cluster.created event makes initialize-authority initialize it")
        elif auth.sealed:
            mode = "raft, sealed"
            notes.append(
                "initialize-authority unseals it with " + str(cfg.unseal_identity)
                if cfg.unseal_identity
                else "no --unseal-identity: unseal it by hand (age -d the shares in "
                f"{cfg.state_dir / SHARE_DIR}, then bao operator unseal)"
            )
        else:
            mode = "raft, unsealed"
        banner = Banner(
            state_dir=str(cfg.state_dir),
            authority=auth.addr,
            authority_mode=mode,
            ingress=self.ingress.address,
            log_file=str(cfg.log_file),
            environment=cfg.environment,
            repo=str(cfg.repo) if cfg.repo else None,
            branch=cfg.branch,
            notes=notes,
        )
        return format_banner(banner, trigger_statuses(manifests.triggers, steps, failures))

    # -- ingress callbacks -----------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {"status": "ok"}
        if self.authority is not None:
            try:
                code, status = bao_health(self.authority.addr)
                body["authority"] = {
                    "addr": self.authority.addr,
                    "mode": self.authority.mode,
                    "sealed": bool(status.get("sealed")),
                    "status": code,
                }
            except OSError as exc:
                body["authority"] = {"addr": self.authority.addr, "error": str(exc)[:200]}
        if self.broker is not None:
            body["pending"] = self.broker.pending()
        ok = self.ingress is not None and self.ingress.accepting
        body["status"] = "ok" if ok else "stopping"
        return ok, body

    def dead_letters(self) -> list[dict[str, Any]]:
        if self.broker is None:
            return []
        return [dead_letter_view(d) for d in self.broker.dead_letters()]

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Reverse order; pending deliveries stay in SQLite for the next start."""
        actions: list[tuple[str, Callable[[], None] | None]] = [
            ("ingress", self.ingress.stop if self.ingress else None),
            ("watcher", self.watcher.stop if self.watcher else None),
            ("pings", self.pings.stop if self.pings else None),
            ("broker", partial(self.broker.stop, timeout=10) if self.broker else None),
            ("store", self.store.close if self.store else None),
            ("authority", self.authority.stop if self.authority else None),
        ]
        for name, action in actions:
            if action is None:
                continue
            try:
                action()
            except Exception as exc:
                log.error(
                    "stop failed",
                    extra={"fields": {"component": name, "error": redact(str(exc))[:300]}},
                )
        self.ingress = self.watcher = self.pings = self.broker = self.store = None
        self.authority = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def force_stop(self) -> None:
        """Second Ctrl-C: do not wait for anyone, but never leave OpenBao running
        (even one still starting, not yet handed to :attr:`authority`)."""
        for server in started_servers():
            server.stop(timeout=1)


def dead_letter_view(dead: DeadLetter) -> dict[str, Any]:
    """A dead letter for GET /dead-letters: attributes and failure, never the event data."""
    attributes = {
        k: (v.isoformat() if hasattr(v, "isoformat") else v)
        for k, v in dead.event.get_attributes().items()
    }
    return {
        "id": dead.event.get_id(),
        "type": dead.event.get_type(),
        "source": dead.event.get_source(),
        "attributes": attributes,
        "trigger": dead.trigger,
        "function": dead.function,
        "status": dead.status,
        "error": redact(dead.error),
        "attempts": dead.attempts,
        "sink": dead.sink,
        "created_at": dead.created_at,
    }
