"""Benchmark: issue-secrets on a push declaring 1,000 secrets, and on a push changing one.

Baseline: plain hvac in this script writing the same 1,000 secrets (a data write with
check-and-set 0 and a custom_metadata write each, sequentially) into a fresh namespace.
chamberlain: the issue-secrets step handling the first push (fetch the commit, parse and
validate 1,000 files, observe, plan, apply on a thread pool, record) into another fresh
namespace; then a commit changing 1 intent and its push (incremental).

Figures: issue_full_ratio (chamberlain / baseline, target < 1.5), issue_incremental_ratio
(incremental / full, target <= 0.05), issue_incremental_writes (authority write calls of the
incremental push), plus the raw timings.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import hvac

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chamberlain.adapters.authority import Authority  # noqa: E402
from chamberlain.adapters.bao_server import start_dev  # noqa: E402
from chamberlain.adapters.gitrepo import git, normalized_push, push_payload  # noqa: E402
from chamberlain.adapters.intent_source import IntentSource  # noqa: E402
from chamberlain.model.event_types import GIT_PUSH  # noqa: E402
from chamberlain.model.events import make_event  # noqa: E402
from chamberlain.model.intent import Generator  # noqa: E402
from chamberlain.steps.issue_secrets import IssueSecrets  # noqa: E402
from chamberlain.steps.reconcile import Reconciler  # noqa: E402
from chamberlain.steps.values import generate_all  # noqa: E402

SECRETS = 1000
CONSUMERS = 10
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


def intent(index: int, owner: str = "team-bench") -> str:
    consumer = index % CONSUMERS
    return f"""\
apiVersion: chamberlain.dev/v1alpha1
kind: SecretIntent
metadata: {{name: s{index:04d}}}
spec:
  path: platform-data/bench-{index % 20}/s{index:04d}
  class: runtime
  owner: {owner}
  purpose: Benchmark secret number {index}
  consumers:
    - {{namespace: app-{consumer}, serviceAccount: app-{consumer}}}
  generate:
    username: {{type: alphanumeric, length: 16}}
    password: {{type: password, length: 32}}
  rotation: {{ttl: 720h}}
"""


def commit_all(work: Path, message: str) -> str:
    git(work, "add", "-A", env=GIT_ENV)
    git(work, "commit", "--quiet", "-m", message, env=GIT_ENV)
    git(work, "push", "--quiet", "origin", "main", env=GIT_ENV)
    return git(work, "rev-parse", "HEAD", env=GIT_ENV).strip()


def baseline(addr: str, token: str, namespace: str) -> float:
    """The same 1,000 secrets written with plain hvac, sequentially."""
    client = hvac.Client(url=addr, token=token, namespace=namespace)
    generators = {
        "username": Generator("alphanumeric", length=16),
        "password": Generator("password", length=32),
    }
    started = time.perf_counter()
    for index in range(SECRETS):
        path = f"platform-data/bench-{index % 20}/s{index:04d}"
        client.secrets.kv.v2.create_or_update_secret(
            path, secret=generate_all(generators), cas=0, mount_point="secret"
        )
        client.secrets.kv.v2.update_metadata(
            path,
            custom_metadata={
                "managed-by": "chamberlain",
                "owner": "team-bench",
                "purpose": f"Benchmark secret number {index}",
                "class": "runtime",
                "rotation-ttl": "2592000",
            },
            mount_point="secret",
        )
    return time.perf_counter() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-issue-") as tmp:
        workdir = Path(tmp)
        server = start_dev(workdir / "openbao")
        try:
            token = server.root_token
            assert token is not None
            root = Authority.connect(server.addr, token)
            root.create_namespace("baseline")
            root.for_namespace("baseline").enable_secrets_engine("kv", "secret", {"version": "2"})
            root.create_namespace("bench")
            bench = root.for_namespace("bench")
            bench.create_namespace("prod")
            prod = root.for_namespace("bench/prod")
            prod.enable_secrets_engine("kv", "secret", {"version": "2"})
            prod.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
            prod.enable_auth("kubernetes", "kubernetes")

            bare, work = workdir / "intent.git", workdir / "work"
            git(
                workdir,
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                str(bare),
                env=GIT_ENV,
            )
            git(workdir, "clone", "--quiet", bare.as_uri(), str(work), env=GIT_ENV)
            git(work, "checkout", "--quiet", "-B", "main", env=GIT_ENV)
            (work / "environments.yaml").write_text(ENVIRONMENT)
            (work / "secrets").mkdir()
            for index in range(SECRETS):
                (work / "secrets" / f"s{index:04d}.yaml").write_text(intent(index))
            first = commit_all(work, "1,000 secrets")

            baseline_s = baseline(server.addr, token, "baseline")

            authority = Authority.connect(server.addr, token, namespace="bench")
            reconciler = Reconciler(
                authority, IntentSource(workdir / "cache"), base_namespace="bench", concurrency=8
            )
            step = IssueSecrets(reconciler)

            def push_event(before: str, after: str) -> object:
                payload = push_payload(bare, ref="refs/heads/main", before=before, after=after)
                data = normalized_push(payload, "local")
                return make_event(GIT_PUSH, data, source="/bench")

            event = push_event("0" * 40, first)
            started = time.perf_counter()
            reply = step(event)  # type: ignore[arg-type]
            full_s = time.perf_counter() - started
            assert reply is not None
            created = reply.get_data()["environments"][0]["created"]  # type: ignore[index]
            assert created == SECRETS, created
            full_writes = authority.calls.snapshot()["write"]

            (work / "secrets" / "s0500.yaml").write_text(intent(500, owner="team-other"))
            second = commit_all(work, "one intent changed")
            event = push_event(first, second)
            before = authority.calls.snapshot()
            started = time.perf_counter()
            reply = step(event)  # type: ignore[arg-type]
            incremental_s = time.perf_counter() - started
            after = authority.calls.snapshot()
            item = reply.get_data()["environments"][0]  # type: ignore[union-attr,index]
            assert item["mode"] == "incremental" and item["updated"] == 1, item
            incremental_writes = (
                after["write"] - before["write"] + after["delete"] - before["delete"]
            )
        finally:
            server.stop()

    print(f"issue_full_ratio: {full_s / baseline_s:.3f}")
    print(f"issue_incremental_ratio: {incremental_s / full_s:.4f}")
    print(f"issue_incremental_writes: {incremental_writes}")
    print(f"issue_baseline_s: {baseline_s:.3f}")
    print(f"issue_full_s: {full_s:.3f}")
    print(f"issue_incremental_s: {incremental_s:.4f}")
    print(f"issue_full_writes: {full_writes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
