"""The authority stops in the middle of a rotation run (a value written, its record not yet):
the step answers 5xx; once the authority is back (restarted, unsealed: raft storage keeps
everything), redelivery converges with no secret lost, skipped or rotated twice."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.bao_server import BaoServer, initialize, unseal
from chamberlain.adapters.due_index import DueIndex, rotate_key
from chamberlain.adapters.gitrepo import normalized_push
from chamberlain.adapters.intent_source import IntentSource
from chamberlain.model import event_types as T
from chamberlain.model.events import make_event
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.issue_secrets import IssueSecrets
from chamberlain.steps.reconcile import Reconciler
from chamberlain.steps.rotate_secrets import FUNCTION, RotateSecrets
from tests.harness.gitrepo import IntentRepo
from tests.integration.test_rotate_fixtures import DUE_AFTER, runtime_secret, tick

PATHS = [f"platform-data/cache/svc-{i}" for i in range(5)]
ENVIRONMENT = """\
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec: {branch: main}
"""


def _configure(addr: str, token: str) -> None:
    root = Authority.connect(addr, token)
    root.create_namespace("prod")
    prod = root.for_namespace("prod")
    prod.enable_secrets_engine("kv", "secret", {"version": "2"})
    prod.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
    prod.enable_auth("kubernetes", "kubernetes")


def _versions(prod: Authority) -> dict[str, int]:
    out = {}
    for path in PATHS:
        found = prod.read_metadata(path)
        out[path] = found.current_version if found is not None else 0
    return out


def test_authority_stopped_mid_rotation_then_redelivery_converges(
    bao_raft: BaoServer, intent_repo: IntentRepo, tmp_path: Path
) -> None:
    keys, root_token = initialize(bao_raft, 1, 1)
    unseal(bao_raft.addr, keys)
    _configure(bao_raft.addr, root_token)
    files = {"environments.yaml": textwrap.dedent(ENVIRONMENT)}
    for i, path in enumerate(PATHS):
        files[f"secrets/svc-{i}.yaml"] = runtime_secret(f"svc-{i}", path)
    payload = intent_repo.commit_and_push(files, "five rotating secrets")
    issued_at = datetime.now(timezone.utc)
    source = IntentSource(tmp_path / "cache")
    issuer = IssueSecrets(
        Reconciler(Authority.connect(bao_raft.addr, root_token), source),
        intent_repo=intent_repo.url,
    )
    push = make_event(
        T.GIT_PUSH, normalized_push(payload, "github"), source="/chamberlain/git-ingress"
    )
    assert invoke(issuer, push, function="issue-secrets").status == 200
    prod = Authority.connect(bao_raft.addr, root_token, namespace="prod")
    assert _versions(prod) == {p: 1 for p in PATHS}

    written: list[str] = []

    def stop_after_third_write(stage: str, path: str) -> None:
        if stage == "written":
            written.append(path)
            if len(written) == 3:
                bao_raft.stop()  # the value is in, its record and re-indexing are not

    due = issued_at + DUE_AFTER + timedelta(hours=1)

    def step(at: datetime, checkpoint: object = None) -> RotateSecrets:
        return RotateSecrets(
            Authority.connect(bao_raft.addr, root_token),
            source,
            intent_repo=intent_repo.url,
            clock=lambda: at,
            checkpoint=checkpoint,  # type: ignore[arg-type]
            concurrency=1,
        )

    event = tick("tick-outage")
    outcome = invoke(step(due, stop_after_third_write), event, function=FUNCTION)
    assert outcome.status == 503 and outcome.retryable, outcome.error
    assert len(written) == 3

    bao_raft.restart()
    unseal(bao_raft.addr, keys)
    prod = Authority.connect(bao_raft.addr, root_token, namespace="prod")
    # nothing lost: every secret still has a readable value
    assert all(prod.read_secret(p) is not None for p in PATHS)
    assert _versions(prod) == {p: (2 if p in written else 1) for p in PATHS}

    # the broker redelivers the same tick a little later
    retried = invoke(step(due + timedelta(minutes=5)), event, function=FUNCTION)
    assert retried.status == 200, retried.error
    assert retried.reply is not None
    reported = sorted(r["path"] for r in retried.reply.get_data()["rotations"])
    # the interrupted one is finished (not rewritten); the two never reached are rotated
    assert reported == sorted([written[2], *[p for p in PATHS if p not in written]])
    assert _versions(prod) == {p: 2 for p in PATHS}  # none skipped, none rotated twice
    index = DueIndex(prod)
    for path in PATHS:
        meta = prod.read_metadata(path)
        assert meta is not None
        custom = meta.custom_metadata
        assert "rotation-pending" not in custom and custom["previous-version"] == "1"
        assert prod.read_secret(path, version=1) is not None  # still in its overlap
        next_due = datetime.fromisoformat(custom["next-due"].replace("Z", "+00:00"))
        assert index.entry_of(rotate_key(path), next_due)

    again = invoke(step(due + timedelta(minutes=10)), event, function=FUNCTION)
    assert again.status == 202
    assert _versions(prod) == {p: 2 for p in PATHS}
