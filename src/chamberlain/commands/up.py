"""``chamberlain up``: every step in one process, an embedded OpenBao, a local broker.

The embedded default runtime: it reads the same Knative Trigger and PingSource manifests a
cluster uses, accepts CloudEvents on an HTTP ingress, optionally turns commits of a local
repository into push events, and prints a one-line-per-event timeline on stdout (JSON logs go
to the log file). Ctrl-C stops it cleanly; pending deliveries stay in the state dir and are
delivered on the next start. A second Ctrl-C forces an immediate exit.

Extension/testing hooks (environment variables, read at start):

* ``CHAMBERLAIN_EXTRA_STEPS="name=module:factory,..."`` adds step factories to the registry's
  table (same ``module:factory`` form as :data:`chamberlain.steps.registry.STEP_FACTORIES`);
  an entry with a registered name replaces it.
* ``CHAMBERLAIN_EXTRA_MANIFESTS=DIR[:DIR...]`` loads more Trigger/PingSource manifests on top of
  ``--manifests`` (a kustomize directory or a single YAML file each).

OpenBao (raft) is initialized by the initialize-authority step on the first start, from the
AuthorityConfig of the watched repository; after a restart it comes back sealed and the same
step unseals it with ``--unseal-identity`` (or ``CHAMBERLAIN_UNSEAL_IDENTITY_FILE``), the age
identity that opens the stored shares. Without it, unseal by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

EXTRA_STEPS_ENV = "CHAMBERLAIN_EXTRA_STEPS"
EXTRA_MANIFESTS_ENV = "CHAMBERLAIN_EXTRA_MANIFESTS"
UNSEAL_IDENTITY_ENV = "CHAMBERLAIN_UNSEAL_IDENTITY_FILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".chamberlain"),
        help="where OpenBao data, pending deliveries and logs live",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="a local git repository whose commits become push events",
    )
    parser.add_argument("--branch", default="main", help="branch of --repo to watch")
    parser.add_argument(
        "--manifests",
        type=Path,
        default=None,
        help="Knative manifests (kustomize dir or YAML); default knative/base",
    )
    parser.add_argument("--host", default="127.0.0.1", help="ingress listen address")
    parser.add_argument("--port", type=int, default=8700, help="ingress port (0: any free port)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="OpenBao in dev mode (in memory, nothing survives a restart)",
    )
    parser.add_argument(
        "--environment",
        default="local",
        help="environment announced by cluster.created on the first start",
    )
    parser.add_argument(
        "--unseal-identity",
        type=Path,
        default=None,
        help="age identity file that opens the unseal shares: initialize-authority unseals "
        f"OpenBao with it after a restart (default ${UNSEAL_IDENTITY_ENV})",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="JSON log file (default <state-dir>/chamberlain.log)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


class ConfigError(ValueError):
    """A malformed extension hook value."""


def parse_extra_steps(text: str) -> dict[str, str]:
    """``"a=pkg.mod:make_a, b=pkg.mod:make_b"`` -> ``{"a": "pkg.mod:make_a", ...}``."""
    table: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, target = item.partition("=")
        module, colon, attribute = target.strip().partition(":")
        if not sep or not name.strip() or not colon or not module or not attribute:
            raise ConfigError(f"{EXTRA_STEPS_ENV}: {item!r} is not name=module:factory")
        table[name.strip()] = target.strip()
    return table


def parse_extra_manifests(text: str) -> list[Path]:
    return [Path(part) for part in text.split(os.pathsep) if part.strip()]


def run(args: argparse.Namespace) -> int:
    # Imported here so that `chamberlain --help` stays fast.
    from chamberlain import logs
    from chamberlain.runtime.local.app import LocalRuntime, UpConfig
    from chamberlain.runtime.local.timeline import TimelinePrinter

    _readable_stdout()
    state_dir: Path = args.state_dir.resolve()
    try:
        extra_steps = parse_extra_steps(os.environ.get(EXTRA_STEPS_ENV, ""))
    except ConfigError as exc:
        print(f"chamberlain up: {exc}", file=sys.stderr)
        return 2
    unseal_identity = args.unseal_identity or (
        Path(os.environ[UNSEAL_IDENTITY_ENV]) if os.environ.get(UNSEAL_IDENTITY_ENV) else None
    )
    if unseal_identity is not None and not unseal_identity.is_file():
        print(f"chamberlain up: --unseal-identity {unseal_identity}: no such file", file=sys.stderr)
        return 2
    config = UpConfig(
        state_dir=state_dir,
        repo=args.repo.resolve() if args.repo else None,
        branch=args.branch,
        manifests=args.manifests.resolve() if args.manifests else None,
        host=args.host,
        port=args.port,
        dev=args.dev,
        environment=args.environment,
        log_file=(args.log_file or state_dir / "chamberlain.log").resolve(),
        extra_steps=extra_steps,
        extra_manifests=parse_extra_manifests(os.environ.get(EXTRA_MANIFESTS_ENV, "")),
        unseal_identity=unseal_identity.resolve() if unseal_identity else None,
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    config.log_file.parent.mkdir(parents=True, exist_ok=True)
    log_stream = config.log_file.open("a", encoding="utf-8", buffering=1)
    logs.configure(args.log_level.upper(), stream=log_stream)

    runtime = LocalRuntime(config, TimelinePrinter(sys.stdout))
    stop = threading.Event()
    _install_signal_handlers(stop, runtime.force_stop)
    try:
        runtime.start()
    except Exception as exc:
        runtime.stop()
        print(f"chamberlain up: could not start: {logs.redact(str(exc))}", file=sys.stderr)
        logs.get_logger("chamberlain.up").exception("start failed")
        return 1
    while not stop.wait(0.5):
        pass
    runtime.printer.line("stopping: ingress closed, pending deliveries stay in the state dir")
    runtime.stop()
    runtime.printer.line("stopped")
    log_stream.close()
    return 0


def _install_signal_handlers(stop: threading.Event, force: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM: graceful stop. Second: kill OpenBao and exit at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            with contextlib.suppress(Exception):
                force()
            os._exit(130 if signum == signal.SIGINT else 143)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _readable_stdout() -> None:
    """Line-buffered stdout that cannot crash on the timeline's arrows in a C locale."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(Exception):
            reconfigure(errors="backslashreplace", line_buffering=True)
