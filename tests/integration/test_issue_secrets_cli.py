"""`chamberlain plan` and `chamberlain apply` against a live OpenBao: exit codes, both formats,
and never a value in the output."""

from __future__ import annotations

import json

import pytest

from chamberlain.cli import main
from tests.harness.environments import ConfiguredEnv, secret_intent

BILLING = "platform-data/postgres/billing-api"
CHECKOUT = "platform-data/redis/checkout"


@pytest.fixture
def cli_env(configured_env: ConfiguredEnv, monkeypatch: pytest.MonkeyPatch) -> ConfiguredEnv:
    for name, value in configured_env.environ().items():
        if name != "CHAMBERLAIN_AUTHORITY_TOKEN":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("CHAMBERLAIN_AUTHORITY_TOKEN", raising=False)
    monkeypatch.setenv("OPS_BAO_TOKEN", configured_env.bao.token)
    return configured_env


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_shows_pending_changes_without_values_and_apply_converges(
    cli_env: ConfiguredEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli_env
    env.repo.commit(
        {
            "secrets/billing.yaml": secret_intent("billing-db", BILLING),
            "secrets/checkout.yaml": secret_intent("redis", CHECKOUT),
        },
        "two secrets",
    )
    repo = str(env.repo.work)
    common = ["--repo", repo, "--env", "prod", "--token-env", "OPS_BAO_TOKEN"]

    code, out, _ = _run(capsys, "plan", *common)
    assert code == 2  # changes pending
    assert "create" in out and BILLING in out and CHECKOUT in out
    assert "2 create" in out.splitlines()[-1]

    code, out, _ = _run(capsys, "apply", *common)
    assert code == 0
    assert "2 created" in out and BILLING in out
    prod = env.authority("prod")
    values = [v for p in (BILLING, CHECKOUT) for v in prod.read_secret(p).data.values()]  # type: ignore[union-attr]

    code, out, _ = _run(capsys, "plan", *common)
    assert code == 0 and "no changes" in out

    # drift behind chamberlain's back shows up in both formats, values never do
    meta = prod.read_metadata(CHECKOUT)
    assert meta is not None
    prod.write_metadata(CHECKOUT, custom_metadata={**meta.custom_metadata, "owner": "x-team"})
    code, table, _ = _run(capsys, "plan", *common)
    assert code == 2 and CHECKOUT in table and "drift" in table
    code, text, _ = _run(capsys, "plan", *common, "--format", "json")
    assert code == 2
    document = json.loads(text)
    assert document["environment"] == "prod" and document["summary"]["drift"] == 1
    assert [a["target"] for a in document["actions"]] == [CHECKOUT]
    for output in (table, text):
        assert all(value not in output for value in values)

    code, out, _ = _run(capsys, "apply", *common, "--format", "json")
    assert code == 0
    item = json.loads(out)["environments"][0]
    assert item["drifted"] == [{"path": CHECKOUT, "kind": "metadata-changed"}]
    assert json.loads(out)["trigger"] == "cli"
    assert all(value not in out for value in values)


def test_plan_reports_errors_with_exit_code_1(
    cli_env: ConfiguredEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli_env
    env.repo.commit(
        {"secrets/bad.yaml": "apiVersion: chamberlain.dev/v1alpha1\nkind: Nope\n"}, "bad"
    )
    repo = str(env.repo.work)
    code, _, err = _run(
        capsys, "plan", "--repo", repo, "--env", "prod", "--token-env", "OPS_BAO_TOKEN"
    )
    assert code == 1 and "secrets/bad.yaml" in err
    env.repo.commit({"secrets/bad.yaml": None}, "fixed")
    code, _, err = _run(
        capsys, "plan", "--repo", repo, "--env", "nope", "--token-env", "OPS_BAO_TOKEN"
    )
    assert code == 1 and "not declared" in err
    code, _, err = _run(capsys, "plan", "--repo", repo, "--env", "prod", "--token-env", "UNSET_VAR")
    assert code == 1 and "no authority token" in err
