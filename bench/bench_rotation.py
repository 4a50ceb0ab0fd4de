"""Benchmark: a rotation tick over 10,000 managed secrets of which 10 are due.

Setup (not timed): a dev OpenBao with one environment; 10 rotating secrets issued by the real
issue-secrets step (which indexes them), and 9,990 more managed secrets written directly with a
thread pool (custom_metadata with a rotation policy and last rotation, and a due-index entry)
whose due times are spread over the following 30 days. A warm-up tick an hour earlier finds
nothing due and sets the index cursor, as the every-5-minutes ticks of a running system would.

Timed: the rotate-secrets step handling one tick (reads the due index, rotates the 10 due
secrets: new versions, metadata records, re-indexing) against the baseline a step without an
index would need just to *find* them: walk the KV mount and read all 10,000 metadata entries
(same thread count as the step).

Figures: rotation_tick_ratio (tick time / baseline time), rotation_tick_calls (authority calls
the tick made; target: O(due) + a small constant), rotation_baseline_calls, and the timings.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chamberlain.adapters.authority import Authority  # noqa: E402
from chamberlain.adapters.bao_server import start_dev  # noqa: E402
from chamberlain.adapters.due_index import DueIndex, rotate_key  # noqa: E402
from chamberlain.adapters.gitrepo import git, normalized_push, push_payload  # noqa: E402
from chamberlain.adapters.intent_source import IntentSource  # noqa: E402
from chamberlain.model.event_types import GIT_PUSH, PING  # noqa: E402
from chamberlain.model.events import make_event  # noqa: E402
from chamberlain.planner.rotation import due_from_metadata  # noqa: E402
from chamberlain.steps.issue_secrets import IssueSecrets  # noqa: E402
from chamberlain.steps.reconcile import Reconciler  # noqa: E402
from chamberlain.steps.rotate_secrets import RotateSecrets  # noqa: E402

TOTAL = 10_000
DUE = 10
THREADS = 8
STEP_THREADS = 4
TTL = timedelta(hours=720)
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.test",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.test",
}
ENVIRONMENT = """\
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec: {branch: main, namespace: prod}
"""


def intent(index: int) -> str:
    return f"""\
apiVersion: chamberlain.dev/v1alpha1
kind: SecretIntent
metadata: {{name: due-{index:02d}}}
spec:
  path: platform-data/due/s{index:02d}
  class: runtime
  owner: team-bench
  purpose: Benchmark secret that comes due
  consumers:
    - {{namespace: app, serviceAccount: app}}
  generate:
    password: {{type: password, length: 32}}
  rotation: {{ttl: 720h}}
"""


def other_path(index: int) -> str:
    return f"platform-data/bench-{index % 50}/s{index:05d}"


def other_metadata(index: int, now: datetime) -> dict[str, str]:
    """A managed runtime secret whose ttl puts its due time 2h to 30 days after the tick."""
    ttl = TTL + timedelta(hours=2 + index % 720)
    return {
        "managed-by": "chamberlain",
        "kind": "runtime",
        "class": "runtime",
        "owner": "team-bench",
        "purpose": "Benchmark secret",
        "state": "active",
        "intent-hash": "0000000000000000",
        "consumers": "app/app",
        "rotation-ttl": str(int(ttl.total_seconds())),
        "rotation-before": str(int((TTL / 10).total_seconds())),
        "rotation-max-overlap": str(int((TTL / 10).total_seconds())),
        "rotation-revoke-old": "true",
        "rotation-failure-strategy": "retry",
        "last-rotated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def issue_due_secrets(addr: str, token: str, workdir: Path) -> None:
    bare, work = workdir / "intent.git", workdir / "work"
    git(workdir, "init", "--quiet", "--bare", "--initial-branch=main", str(bare), env=GIT_ENV)
    git(workdir, "clone", "--quiet", bare.as_uri(), str(work), env=GIT_ENV)
    git(work, "checkout", "--quiet", "-B", "main", env=GIT_ENV)
    (work / "environments.yaml").write_text(ENVIRONMENT)
    (work / "secrets").mkdir()
    for i in range(DUE):
        (work / "secrets" / f"due-{i:02d}.yaml").write_text(intent(i))
    git(work, "add", "-A", env=GIT_ENV)
    git(work, "commit", "--quiet", "-m", "due secrets", env=GIT_ENV)
    git(work, "push", "--quiet", "origin", "main", env=GIT_ENV)
    after = git(work, "rev-parse", "HEAD", env=GIT_ENV).strip()
    payload = push_payload(
        bare, ref="refs/heads/main", before="0" * 40, after=after, repository_url=bare.as_uri()
    )
    event = make_event(GIT_PUSH, normalized_push(payload, "github"), source="/bench")
    source = IntentSource(workdir / "cache")
    IssueSecrets(Reconciler(Authority.connect(addr, token), source), intent_repo=bare.as_uri())(
        event
    )
    return None


def write_others(prod: Authority, now: datetime) -> None:
    def write(batch: range) -> None:
        session = prod.clone()
        for i in batch:
            # Metadata only: what a scan reads (last-rotated dates it), at half the setup cost.
            session.write_metadata(other_path(i), custom_metadata=other_metadata(i, now))

    others = TOTAL - DUE
    step = others // THREADS + 1
    batches = [range(start, min(start + step, others)) for start in range(0, others, step)]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(write, batches))
    entries = {}
    for i in range(others):
        due = due_from_metadata(other_metadata(i, now), now, now)
        assert due is not None
        entries[rotate_key(other_path(i))] = due
    DueIndex(prod).add(entries, now=now)


def baseline_scan(prod: Authority, at: datetime) -> tuple[float, int, int]:
    """Find what is due the way a step without an index must: every metadata entry."""
    before = prod.calls.snapshot()
    started = time.perf_counter()
    paths = prod.walk("")

    def read(batch: list[str]) -> int:
        session = prod.clone()
        found = 0
        for path in batch:
            meta = session.read_metadata(path)
            if meta is None:
                continue
            info = meta.versions.get(meta.current_version)
            created = info.created_time if info is not None else None
            due = due_from_metadata(meta.custom_metadata, created, at)
            found += due is not None and due <= at
        return found

    with ThreadPoolExecutor(max_workers=STEP_THREADS) as pool:
        due = sum(pool.map(read, [paths[i::STEP_THREADS] for i in range(STEP_THREADS)]))
    elapsed = time.perf_counter() - started
    calls = sum((prod.calls.snapshot() - before).values())
    return elapsed, calls, due


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        workdir = Path(tmp)
        server = start_dev(workdir / "openbao")
        try:
            assert server.root_token is not None
            addr, token = server.addr, server.root_token
            root = Authority.connect(addr, token)
            root.create_namespace("prod")
            prod = root.for_namespace("prod")
            prod.enable_secrets_engine("kv", "secret", {"version": "2"})
            prod.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
            prod.enable_auth("kubernetes", "kubernetes")
            now = datetime.now(timezone.utc)
            issue_due_secrets(addr, token, workdir)
            prod = Authority.connect(addr, token, namespace="prod")
            write_others(prod, now)
            tick_at = now + TTL - TTL / 10 + timedelta(minutes=30)

            def step(at: datetime) -> RotateSecrets:
                return RotateSecrets(
                    Authority.connect(addr, token),
                    IntentSource(workdir / "cache"),
                    intent_repo=(workdir / "intent.git").as_uri(),
                    clock=lambda: at,
                    concurrency=STEP_THREADS,
                )

            warm = step(tick_at - timedelta(hours=1))
            assert warm(make_event(PING, {"task": "rotate"}, source="/bench")) is None

            baseline_s, baseline_calls, found = baseline_scan(prod, tick_at)
            assert found == DUE, f"baseline found {found} due secrets, expected {DUE}"

            ticker = step(tick_at)
            before = ticker.authority.calls.snapshot()
            started = time.perf_counter()
            reply = ticker(make_event(PING, {"task": "rotate"}, source="/bench"))
            tick_s = time.perf_counter() - started
            tick_calls = sum((ticker.authority.calls.snapshot() - before).values())
            assert reply is not None
            rotated = len(reply.get_data()["rotations"])
            assert rotated == DUE, f"tick rotated {rotated}, expected {DUE}"
        finally:
            server.stop()
    print(f"rotation_tick_ratio: {tick_s / baseline_s:.4f}")
    print(f"rotation_tick_calls: {tick_calls}")
    print(f"rotation_baseline_calls: {baseline_calls}")
    print(f"rotation_tick_ms: {tick_s * 1000:.1f}")
    print(f"rotation_baseline_ms: {baseline_s * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
