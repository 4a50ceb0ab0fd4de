"""``chamberlain status``: versions, rotation times and consumers of an environment's secrets,
as a table or JSON, and never a value."""

from __future__ import annotations

import json

import pytest

from chamberlain.cli import main
from chamberlain.runtime.outcome import invoke
from chamberlain.steps.rotate_secrets import FUNCTION
from tests.integration.test_rotate_fixtures import (
    BILLING,
    CHECKOUT,
    PLAIN,
    Rotation,
    rotation_fixture,  # noqa: F401 - the fixture named rotation
    tick,
)


def test_status_shows_rotation_state_without_values(
    rotation: Rotation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = rotation.env
    assert invoke(rotation.step(at=rotation.due_time()), tick(), function=FUNCTION).status == 200
    prod = rotation.prod()
    values = [v for p in (BILLING, CHECKOUT, PLAIN) for v in prod.read_secret(p).data.values()]  # type: ignore[union-attr]
    monkeypatch.setenv("CHAMBERLAIN_AUTHORITY_ADDR", env.bao.addr)
    monkeypatch.setenv("CHAMBERLAIN_AUTHORITY_TOKEN", env.bao.token)
    monkeypatch.setenv("CHAMBERLAIN_AUTHORITY_NAMESPACE", env.base)

    assert main(["status", "--env", "prod", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {row["path"]: row for row in document["secrets"]}
    assert set(rows) == {BILLING, CHECKOUT, PLAIN}
    billing = rows[BILLING]
    assert billing["class"] == "runtime" and billing["version"] == 2
    assert billing["last_rotated"].startswith(rotation.due_time().strftime("%Y-%m-%dT%H"))
    assert billing["next_due"] > billing["last_rotated"]
    assert billing["consumers"] == ["billing/billing-api", "reports/reporter"]
    assert rows[PLAIN]["version"] == 1 and rows[PLAIN]["next_due"] is None
    assert rows[PLAIN]["rotation"] == "none"

    assert main(["status", "--env", "prod"]) == 0
    table = capsys.readouterr().out
    assert "environment prod: 3 managed secret(s)" in table
    assert BILLING in table and "NEXT DUE" in table and "billing/billing-api" in table
    for value in values:
        assert value not in table and value not in json.dumps(document)

    assert main(["status", "--env", "nowhere"]) == 1
    assert "error" in capsys.readouterr().err
