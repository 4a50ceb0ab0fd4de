"""`chamberlain validate`: the example passes; each single defect is reported at its line.

Every broken repository is the example with exactly one mutation, and must produce exactly one
problem: the right code, in the right file, on the right line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from chamberlain.cli import main
from chamberlain.model.loader import read_dir
from chamberlain.model.validate import Problem, validate_dir, validate_files

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "intent"
BILLING = "secrets/billing-api-database.yaml"
REDIS = "secrets/session-store-redis.yaml"
STRIPE = "secrets/checkout-stripe.yaml"
ENVS = "environments.yaml"
AUTHORITY = "authority.yaml"
ADMIN = "bootstrap/postgres-admin.yaml"
ADMIN_SOPS = "bootstrap/postgres-admin.enc.yaml"
REPORTING = "dynamic/reporting-postgres.yaml"
# A value no problem message may ever repeat.
CANARY = "hunter2-canary-value"


@pytest.fixture(scope="module")
def example_files() -> dict[str, bytes]:
    return read_dir(EXAMPLE)


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (must occur exactly once) by ``new`` in ``file``; ``None`` deletes it."""

    file: str
    old: str | None = None
    new: str | None = None
    add: str | None = None  # content of a new file at ``file``

    def apply(self, files: dict[str, bytes]) -> dict[str, bytes]:
        mutated = dict(files)
        if self.add is not None:
            mutated[self.file] = self.add.encode()
            return mutated
        if self.new is None and self.old is None:
            del mutated[self.file]
            return mutated
        text = mutated[self.file].decode()
        assert self.old is not None and text.count(self.old) == 1, (self.file, self.old)
        mutated[self.file] = text.replace(self.old, self.new or "").encode()
        return mutated


@dataclass(frozen=True)
class Case:
    id: str
    mutation: Mutation
    code: str
    file: str
    # the reported line is the first line of ``file`` (after the mutation) containing this
    at: str | None
    nth: int = 1  # ... or its nth occurrence


def _line(text: str, needle: str | None, nth: int = 1) -> int:
    if needle is None:
        return 1
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, needle
    return hits[nth - 1]


SECOND_AUTHORITY = """---
apiVersion: chamberlain.dev/v1alpha1
kind: AuthorityConfig
metadata:
  name: authority-two
spec:
  shares: 1
  threshold: 1
  recipients:
    - age127cw7ngvptd9auqjknq8h6vj6gaa6nk4emug7slcn8gnyar6ea3qvzd0v9
"""

CASES = [
    Case(
        "yaml-syntax",
        Mutation(BILLING, "purpose: Login of", "purpose: Login: of"),
        "yaml-syntax",
        BILLING,
        "purpose: Login: of",
    ),
    Case(
        "yaml-duplicate-key",
        Mutation(REDIS, "  owner: team-web\n", "  owner: team-web\n  owner: team-ops\n"),
        "yaml-syntax",
        REDIS,
        "owner: team-ops",
    ),
    Case(
        "schema-enum",
        Mutation(BILLING, "deletionPolicy: retain", "deletionPolicy: keep"),
        "schema",
        BILLING,
        "deletionPolicy: keep",
    ),
    Case(
        "schema-unknown-key",
        Mutation(BILLING, "maxOverlap: 24h", "maxOverlapp: 24h"),
        "schema",
        BILLING,
        "maxOverlapp",
    ),
    Case(
        "schema-type",
        Mutation(BILLING, "revokeOld: true", "revokeOld: sometimes"),
        "schema",
        BILLING,
        "revokeOld",
    ),
    Case(
        "schema-name-pattern",
        Mutation(STRIPE, "name: checkout-stripe", "name: Checkout_Stripe"),
        "schema",
        STRIPE,
        "name: Checkout_Stripe",
    ),
    Case(
        "unknown-kind",
        Mutation(STRIPE, "kind: SecretIntent", "kind: SecretIntents"),
        "unknown-kind",
        STRIPE,
        "kind: SecretIntents",
    ),
    Case(
        "unknown-api-version",
        Mutation(
            AUTHORITY, "apiVersion: chamberlain.dev/v1alpha1", "apiVersion: chamberlain.dev/v2"
        ),
        "unknown-api-version",
        AUTHORITY,
        "apiVersion:",
    ),
    Case(
        "duplicate-name",
        Mutation(
            "secrets/billing-copy.yaml",
            add=(EXAMPLE / BILLING)
            .read_text()
            .replace("platform-data/postgres/billing-api", "platform-data/postgres/billing-worker"),
        ),
        "duplicate-name",
        "secrets/billing-copy.yaml",
        "name: billing-api-database",
    ),
    Case(
        "duplicate-path",
        Mutation(REDIS, "platform-data/redis/session-store", "platform-data/postgres/billing-api"),
        "duplicate-path",
        REDIS,
        "path: platform-data/postgres/billing-api",
    ),
    Case(
        "path-environment-name",
        Mutation(BILLING, "postgres/billing-api\n", "postgres/billing-api-prod\n"),
        "path-rule",
        BILLING,
        "path: platform-data",
    ),
    Case(
        "path-dotdot",
        Mutation(REDIS, "platform-data/redis/session-store", "platform-data/../session-store"),
        "path-rule",
        REDIS,
        "path: platform-data",
    ),
    Case(
        "path-config-root",
        Mutation(STRIPE, "platform-data/stripe/checkout", "platform-config/stripe/checkout"),
        "path-rule",
        STRIPE,
        "path: platform-config",
    ),
    Case(
        "path-two-segments",
        Mutation(REDIS, "platform-data/redis/session-store", "platform-data/session-store"),
        "path-rule",
        REDIS,
        "path: platform-data",
    ),
    Case(
        "path-absolute",
        Mutation(REDIS, "path: platform-data/redis", "path: /platform-data/redis"),
        "path-rule",
        REDIS,
        "path: /platform-data",
    ),
    Case(
        "unknown-environment",
        Mutation(STRIPE, "    - staging\n", "    - stagin\n"),
        "unknown-environment",
        STRIPE,
        "- stagin",
    ),
    Case(
        "consumer-without-service-account",
        Mutation(BILLING, "      serviceAccount: billing-api\n", ""),
        "consumer-incomplete",
        BILLING,
        "- namespace: billing",
    ),
    Case(
        "consumer-list-empty",
        Mutation(
            REPORTING,
            "  consumers:\n    - namespace: analytics\n      serviceAccount: reporting\n"
            "      workloads:\n        - kind: Deployment\n          name: reporting-worker\n",
            "  consumers: []\n",
        ),
        "consumer-incomplete",
        REPORTING,
        "consumers: []",
    ),
    Case(
        "sops-value-in-plaintext",
        Mutation(ADMIN_SOPS, "password: ENC[", f"password: {CANARY}\nx: ENC["),
        "plaintext-bootstrap",
        ADMIN_SOPS,
        "password:",
    ),
    Case(
        "sops-metadata-stripped",
        Mutation(
            ADMIN_SOPS,
            (EXAMPLE / ADMIN_SOPS).read_text().partition("sops:")[1]
            + (EXAMPLE / ADMIN_SOPS).read_text().partition("sops:")[2],
            "",
        ),
        "plaintext-bootstrap",
        ADMIN_SOPS,
        None,
    ),
    Case(
        "sops-mac-missing",
        Mutation(ADMIN_SOPS, "    mac: ENC[", "    mac_removed: ENC["),
        "plaintext-bootstrap",
        ADMIN_SOPS,
        "sops:",
    ),
    Case(
        "sops-file-missing",
        Mutation(ADMIN_SOPS),
        "plaintext-bootstrap",
        ADMIN,
        "file: bootstrap/postgres-admin.enc.yaml",
    ),
    Case(
        "plain-file-in-bootstrap",
        Mutation("bootstrap/forgotten.yaml", add=f"token: {CANARY}\n"),
        "plaintext-bootstrap",
        "bootstrap/forgotten.yaml",
        None,
    ),
    Case(
        "sops-keys-mismatch",
        Mutation(
            ADMIN,
            "postgres-admin.enc.yaml\n      keys:\n        - username",
            "postgres-admin.enc.yaml\n      keys:\n        - login",
        ),
        "bootstrap-keys",
        ADMIN,
        "- login",
    ),
    Case(
        "literal-value-key",
        Mutation(BILLING, "      length: 32\n", f"      length: 32\n      value: {CANARY}\n"),
        "plaintext-value",
        BILLING,
        "value:",
    ),
    Case(
        "literal-generated-value",
        Mutation(
            REDIS,
            "    password:\n      type: hex\n      bytes: 32\n",
            f"    password: {CANARY}\n",
        ),
        "plaintext-value",
        REDIS,
        "password:",
    ),
    Case(
        "stringdata-in-consumer",
        Mutation(
            STRIPE,
            "      externalSecret: checkout-stripe\n",
            "      externalSecret: checkout-stripe\n"
            f"      stringData:\n        api-key: {CANARY}\n",
        ),
        "plaintext-value",
        STRIPE,
        "stringData:",
    ),
    Case(
        "connection-url-literal-password",
        Mutation(REPORTING, "{{username}}:{{password}}@", f"postgres:{CANARY}@"),
        "plaintext-value",
        REPORTING,
        "connectionUrl:",
    ),
    Case(
        "connection-url-without-templates",
        Mutation(REPORTING, "{{username}}:{{password}}@", ""),
        "connection-url",
        REPORTING,
        "connectionUrl:",
    ),
    Case(
        "rotate-before-exceeds-ttl",
        Mutation(BILLING, "rotateBefore: 72h", "rotateBefore: 800h"),
        "rotation-policy",
        BILLING,
        "rotateBefore:",
    ),
    Case(
        "max-overlap-exceeds-ttl",
        Mutation(REDIS, "maxOverlap: 1d", "maxOverlap: 31d"),
        "rotation-policy",
        REDIS,
        "maxOverlap:",
    ),
    Case(
        "duration-unparseable",
        Mutation(BILLING, "ttl: 720h", "ttl: 30 days"),
        "duration",
        BILLING,
        "ttl: 30 days",
    ),
    Case(
        "bootstrap-rotation",
        Mutation(ADMIN, "  retire: delete\n", "  retire: delete\n  rotation:\n    ttl: 30d\n"),
        "bootstrap-rotation",
        ADMIN,
        "rotation:",
    ),
    Case(
        "threshold-above-shares",
        Mutation(AUTHORITY, "threshold: 2", "threshold: 5"),
        "authority-threshold",
        AUTHORITY,
        "threshold: 5",
    ),
    Case(
        "second-authority",
        Mutation(
            AUTHORITY, "    mount: kubernetes\n", "    mount: kubernetes\n" + SECOND_AUTHORITY
        ),
        "multiple-authority",
        AUTHORITY,
        "kind: AuthorityConfig",
        nth=2,
    ),
    Case(
        "admin-secret-unknown",
        Mutation(REPORTING, "adminSecret: postgres-admin", "adminSecret: postgres-root"),
        "unknown-admin-secret",
        REPORTING,
        "adminSecret:",
    ),
    Case(
        "admin-secret-scope",
        Mutation(ADMIN, "  retire: delete\n", "  retire: delete\n  environments: [prod]\n"),
        "admin-secret-scope",
        REPORTING,
        "adminSecret:",
    ),
    Case(
        "runtime-without-generate",
        Mutation(STRIPE, "class: internal", "class: runtime"),
        "secret-class",
        STRIPE,
        "class: runtime",
    ),
    Case(
        "generator-parameter",
        Mutation(REDIS, "      bytes: 32\n", "      length: 32\n"),
        "generator",
        REDIS,
        "length: 32",
    ),
    Case(
        "allowed-role-unknown",
        Mutation(REPORTING, "      - reporting-readonly\n", "      - reporting-admin\n"),
        "unknown-role",
        REPORTING,
        "- reporting-admin",
    ),
    Case(
        "lease-ttl-above-max",
        Mutation(REPORTING, "ttl: 1h", "ttl: 48h"),
        "lease-policy",
        REPORTING,
        "ttl: 48h",
    ),
    Case(
        "duplicate-namespace",
        Mutation(ENVS, "name: staging\nspec:\n", "name: staging\nspec:\n  namespace: prod\n"),
        "duplicate-namespace",
        ENVS,
        "namespace: prod",
        nth=2,
    ),
]


def test_example_repository_is_valid() -> None:
    assert validate_dir(EXAMPLE) == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_single_defect_is_reported_at_its_line(case: Case, example_files) -> None:
    files = case.mutation.apply(example_files)
    problems = validate_files(files)
    text = files[case.file].decode() if case.file in files else ""
    expected_line = _line(text, case.at, case.nth)
    summary = [p.format() for p in problems]
    assert [(p.code, p.file, p.line) for p in problems] == [
        (case.code, case.file, expected_line)
    ], summary
    assert all(CANARY not in p.message for p in problems)


def test_at_least_twenty_broken_repositories() -> None:
    assert len(CASES) >= 20
    assert len({c.code for c in CASES}) >= 20


def test_problems_are_sorted_by_file_then_line(example_files) -> None:
    files = CASES[2].mutation.apply(example_files)  # deletionPolicy in billing
    files = Mutation(STRIPE, "    - staging\n", "    - stagin\n").apply(files)
    files = Mutation(AUTHORITY, "threshold: 2", "threshold: 9").apply(files)
    files = Mutation(BILLING, "ttl: 720h", "ttl: 30 days").apply(files)
    problems = validate_files(files)
    assert [p.file for p in problems] == [AUTHORITY, BILLING, BILLING, STRIPE]
    assert problems == sorted(problems, key=lambda p: (p.file, p.line))
    assert problems[1].line < problems[2].line


def test_schema_message_names_the_key_and_suggests(example_files) -> None:
    files = Mutation(BILLING, "serviceAccount: billing-api", "serviceAcount: billing-api").apply(
        example_files
    )
    problems = validate_files(files)
    codes = {p.code for p in problems}
    assert codes == {"schema", "consumer-incomplete"}
    unknown = next(p for p in problems if p.code == "schema")
    assert "serviceAcount" in unknown.message and "did you mean 'serviceAccount'" in unknown.message
    assert unknown.column == 7


# ---- the command line ---------------------------------------------------------------------


def _copy_example(tmp_path: Path) -> Path:
    root = tmp_path / "intent"
    shutil.copytree(EXAMPLE, root)
    return root


def test_cli_valid_repository(capsys) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "ok: 10 documents, 6 secrets, 3 environments"


def test_cli_reports_problems_and_exits_1(tmp_path: Path, capsys) -> None:
    root = _copy_example(tmp_path)
    billing = root / BILLING
    billing.write_text(billing.read_text().replace("rotateBefore: 72h", "rotateBefore: 900h"))
    sops = root / ADMIN_SOPS
    sops.write_text(sops.read_text().replace("password: ENC[", f"password: {CANARY}\nx: ENC["))
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    line = _line(billing.read_text(), "rotateBefore:")
    assert lines[0].startswith(f"{ADMIN_SOPS}:2:1: plaintext-bootstrap: value at 'password' ")
    assert lines[1].startswith(f"{BILLING}:{line}:5: rotation-policy: ")
    assert lines[-1] == "invalid: 2 problem(s) in 2 file(s)"
    assert CANARY not in out


def test_cli_json_format(tmp_path: Path, capsys) -> None:
    root = _copy_example(tmp_path)
    environments = root / "environments.yaml"
    preview = "kind: Environment\nmetadata:\n  name: preview"
    environments.write_text(
        environments.read_text().replace(preview, preview.replace("Environment", "Enviroment"))
    )
    line = _line(environments.read_text(), "kind: Enviroment")
    assert main(["validate", str(root), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert problem["code"] == "unknown-kind" and problem["file"] == "environments.yaml"
    assert problem["line"] == line and problem["column"] == 1
    assert "did you mean 'Environment'" in problem["message"]
    assert report["summary"]["environments"] == 2
    assert main(["validate", str(EXAMPLE), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "valid": True,
        "problems": [],
        "summary": {
            "documents": 10,
            "environments": 3,
            "secrets": 6,
            "secretIntents": 4,
            "bootstrapSecrets": 1,
            "dynamicCredentials": 1,
            "authority": 1,
            "problems": 0,
        },
    }


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["validate", str(EXAMPLE), "--format", "xml"])
    assert exited.value.code == 2


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "chamberlain"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    root = _copy_example(tmp_path)
    ok = subprocess.run([str(script), "validate", str(root)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 10 documents")
    (root / "secrets" / "extra.yaml").write_text("kind: [unclosed\n")
    broken = subprocess.run([str(script), "validate", str(root)], capture_output=True, text=True)
    assert broken.returncode == 1
    assert broken.stdout.startswith("secrets/extra.yaml:2:1: yaml-syntax: ")


def test_problem_is_a_frozen_value() -> None:
    problem = Problem("a.yaml", 3, 5, "schema", "x")
    assert problem.format() == "a.yaml:3:5: schema: x"
    with pytest.raises(AttributeError):
        problem.line = 4  # type: ignore[misc]
