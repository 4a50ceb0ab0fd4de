"""`chamberlain up` end to end: a real subprocess, a real OpenBao, real git, real HTTP.

Test steps (tests/e2e/steps.py) are plugged in with the CHAMBERLAIN_EXTRA_STEPS hook and record
what they receive, so routing, redelivery after a crash and push events are observed from
outside the process, as a user would observe them.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chamberlain.adapters import agecrypt
from chamberlain.adapters.gitrepo import ZERO_SHA, git
from chamberlain.commands.up import ConfigError, parse_extra_steps
from tests.e2e.conftest import UpFactory
from tests.e2e.upprocess import E2E_DIR, UpProcess, pid_alive, port_is_closed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROTATE = "dev.chamberlain.secret.rotate.requested.v1"
COMPROMISED = "dev.chamberlain.secret.compromised.v1"
TEARDOWN = "dev.chamberlain.environment.teardown.v1"
PUSH = "dev.chamberlain.git.push.v1"


def _commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", name)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def watched_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("intent-repo")
    git(repo, "init", "-q", "-b", "main")
    return repo, _commit(repo, "README.md", "first\n")


@pytest.fixture(scope="module")
def dev_up(
    tmp_path_factory: pytest.TempPathFactory, watched_repo: tuple[Path, str]
) -> Iterator[UpProcess]:
    """One `up --dev` for the module: knative/base + extra test Triggers, watching a repo."""
    root = tmp_path_factory.mktemp("up-dev")
    repo, _ = watched_repo
    process = UpProcess(
        root / "state",
        root / "records",
        "--dev",
        "--repo",
        str(repo),
        env={"CHAMBERLAIN_EXTRA_MANIFESTS": str(E2E_DIR / "extra-triggers")},
    )
    try:
        yield process.ready()
    finally:
        process.kill()


def test_up_prints_where_it_listens_and_is_healthy(dev_up: UpProcess) -> None:
    out = dev_up.output()
    assert re.search(r"openbao\s+http://127\.0\.0\.1:\d+\s+\(dev mode", out)
    assert re.search(r"ingress\s+http://127\.0\.0\.1:\d+", out)
    assert str(dev_up.state_dir) in out
    # the test Triggers can deliver; Triggers of knative/base without a step are listed too
    assert re.search(r"test-alpha-rotate\s+→ alpha\s+ready\s+" + re.escape(ROTATE), out)
    assert "issue-secrets-git-push" in out

    status, body = dev_up.get("/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["authority"]["sealed"] is False

    status, body = dev_up.get("/dead-letters")
    assert (status, body) == (200, [])


def test_first_start_announces_the_cluster(dev_up: UpProcess) -> None:
    line = dev_up.wait_for_line(r"← startup\s+dev\.chamberlain\.cluster\.created\.v1")
    assert "cluster-created-local" in line


def test_posted_event_reaches_only_the_matching_step(dev_up: UpProcess) -> None:
    rotate = {"environment": "local", "path": "platform-data/pg/app", "reason": "e2e"}
    status, body = dev_up.post_binary(ROTATE, "rotate-1", rotate)
    assert status == 202, body
    # fanned out to every Trigger whose filter matches: knative/base's and the test's own,
    # never to beta, whose Triggers filter on other types
    assert body == {"id": "rotate-1", "triggers": ["rotate-secrets-requested", "test-alpha-rotate"]}

    compromised = {"environment": "local", "path": "platform-data/pg/app", "reason": "e2e"}
    status, body = dev_up.post_structured(COMPROMISED, "compromised-1", compromised)
    assert status == 202, body

    alpha = dev_up.wait_received("alpha", {"rotate-1"})
    beta = dev_up.wait_received("beta", {"compromised-1"})
    assert "compromised-1" not in {r["id"] for r in alpha}
    assert "rotate-1" not in {r["id"] for r in beta}
    assert next(r for r in alpha if r["id"] == "rotate-1")["data"] == rotate
    dev_up.wait_for_line(r"→ alpha\s+" + re.escape(ROTATE) + r"\s+rotate-1\s+202")


def test_bad_event_is_refused_with_a_reason(dev_up: UpProcess) -> None:
    status, body = dev_up.post_binary(ROTATE, "bad-1", {"environment": "local"})
    assert status == 400
    assert "$.path" in body["error"]
    status, body = dev_up.post(b"hello", {"content-type": "text/plain"})
    assert status == 400
    assert "CloudEvent" in body["error"]
    assert "bad-1" not in {r["id"] for r in dev_up.received("alpha")}


def test_commits_in_the_watched_repo_become_push_events(
    dev_up: UpProcess, watched_repo: tuple[Path, str]
) -> None:
    repo, first = watched_repo
    created = dev_up.wait_received_where("beta", lambda r: r["type"] == PUSH)[0]
    assert created["data"]["before"] == ZERO_SHA
    assert created["data"]["after"] == first
    assert created["data"]["created"] is True
    assert created["data"]["repository"]["url"] == repo.resolve().as_uri()

    second = _commit(repo, "intent.yaml", "kind: Nothing\n")
    pushes = dev_up.wait_received_where(
        "beta", lambda r: r["type"] == PUSH and r["data"]["after"] == second
    )
    push = pushes[-1]["data"]
    assert (push["before"], push["after"], push["created"]) == (first, second, False)
    assert push["ref"] == "refs/heads/main"
    assert push["commits"][-1]["added"] == ["intent.yaml"]


def test_a_second_up_on_the_same_state_dir_is_refused(dev_up: UpProcess, tmp_path: Path) -> None:
    intruder = UpProcess(dev_up.state_dir, tmp_path / "records", "--dev")
    try:
        assert intruder.wait(30) == 1
    finally:
        intruder.kill_process_only()
    assert "another `chamberlain up` is running" in intruder.stderr()
    assert dev_up.get("/health")[0] == 200, "the running up must be left alone"


def test_extra_steps_hook_is_parsed_strictly() -> None:
    assert parse_extra_steps(" a=pkg.mod:make_a , b=pkg:b ") == {
        "a": "pkg.mod:make_a",
        "b": "pkg:b",
    }
    assert parse_extra_steps("") == {}
    for bad in ("a", "a=pkg.mod", "=pkg:f", "a=:f", "a=pkg:"):
        with pytest.raises(ConfigError, match="name=module:factory"):
            parse_extra_steps(bad)


def test_killed_up_redelivers_pending_events(tmp_path: Path, up_factory: UpFactory) -> None:
    state, records = tmp_path / "state", tmp_path / "records"
    args = ("--manifests", str(E2E_DIR / "manifests"))
    env = {"CHAMBERLAIN_TEST_SLOW_S": "0.4"}
    first = up_factory(state, records, *args, env=env)
    # these manifests route nothing to initialize-authority: OpenBao stays uninitialized
    assert "raft, uninitialized" in first.output()
    assert not (state / "authority.json").exists()

    ids = {f"teardown-{n}" for n in range(6)}
    for event_id in sorted(ids):
        status, _ = first.post_binary(TEARDOWN, event_id, {"environment": "preview-1"})
        assert status == 202
    first.wait_received_where("slow", lambda r: r["id"] in ids, timeout=30)
    orphan = json.loads((state / "openbao.pid").read_text())["pid"]
    first.signal(signal.SIGKILL)
    first.wait()
    delivered_before_kill = {r["id"] for r in first.received("slow")}
    assert delivered_before_kill < ids, "nothing was pending at the kill: test proves nothing"

    second = up_factory(state, records, *args, env=env)
    out = second.output()
    assert not pid_alive(orphan), "the OpenBao orphaned by the kill is still running"
    second.wait_received("slow", ids, timeout=30)
    # every start announces the cluster again (the step converges idempotently)
    second.wait_for_line(
        r"← startup\s+dev\.chamberlain\.cluster\.created\.v1\s+cluster-created-local-2"
    )
    assert "raft, uninitialized" in out

    second.signal(signal.SIGINT)
    assert second.wait(30) == 0
    assert "stopped" in second.output()
    assert port_is_closed(second.openbao)
    assert not (state / "openbao.pid").exists()


AUTHORITY_INTENT = """\
apiVersion: chamberlain.dev/v1alpha1
kind: AuthorityConfig
metadata: {{name: authority}}
spec:
  shares: 3
  threshold: 2
  recipients: [{recipient}]
---
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {{name: local}}
spec: {{}}
"""


def test_up_initializes_openbao_through_the_step_and_unseals_it_after_a_restart(
    tmp_path: Path, up_factory: UpFactory
) -> None:
    identity, recipient = agecrypt.generate_identity()
    identity_file = tmp_path / "operator.txt"
    identity_file.write_text(identity + "\n")
    repo = tmp_path / "intent"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    _commit(repo, "authority.yaml", AUTHORITY_INTENT.format(recipient=recipient))
    state, records = tmp_path / "state", tmp_path / "records"
    args = ("--repo", str(repo), "--unseal-identity", str(identity_file))

    first = up_factory(state, records, *args)
    assert "raft, uninitialized" in first.output()
    first.wait_for_line(
        r"→ initialize-authority\s+dev\.chamberlain\.cluster\.created\.v1.*\s200", 90
    )
    status, body = first.get("/health")
    assert status == 200 and body["authority"]["sealed"] is False
    shares = sorted((state / "unseal-shares").iterdir())
    assert [p.name for p in shares] == ["share-0.age", "share-1.age", "share-2.age"]
    opened = [agecrypt.decrypt_with_identities(p.read_bytes(), [identity]).decode() for p in shares]
    tokens = sorted(p.name for p in (state / "identities").iterdir())
    assert "initialize-authority.token" in tokens and "issue-secrets.token" in tokens
    assert not (state / "authority.json").exists(), "no plaintext share or root token on disk"
    first.signal(signal.SIGINT)
    assert first.wait(30) == 0

    second = up_factory(state, records, *args)
    assert "raft, sealed" in second.output()
    second.wait_for_line(
        r"→ initialize-authority\s+dev\.chamberlain\.cluster\.created\.v1.*\s200", 60
    )
    status, body = second.get("/health")
    assert status == 200 and body["authority"]["sealed"] is False

    seen = first.output() + second.output() + first.stderr() + second.stderr()
    seen += (state / "chamberlain.log").read_text()
    for share in opened:
        assert share not in seen
    second.signal(signal.SIGINT)
    assert second.wait(30) == 0


def test_ctrl_c_in_dev_mode_exits_zero_and_stops_openbao(
    tmp_path: Path, up_factory: UpFactory
) -> None:
    up = up_factory(tmp_path / "state", tmp_path / "records", "--dev")
    deadline = time.monotonic() + 10
    while up.get("/health")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    up.signal(signal.SIGINT)
    assert up.wait(30) == 0
    assert port_is_closed(up.openbao)
    assert port_is_closed(up.ingress)
