"""Benchmark: revoke-environment tearing down an environment of 1,000 secrets and 100 leases.

Two identical ephemeral environment namespaces are filled on one dev OpenBao: 1,000 KV v2
secrets, 10 consumer policies and roles, and a database engine on the local PostgreSQL with
100 live leases (100 real roles).

Baseline: the minimal direct calls that reach the same end state, in this script with the root
token: one synchronous ``revoke-prefix`` of the database mount (the engine drops the 100
roles), one namespace delete (everything else), polled until the namespace is gone.
chamberlain: the revoke-environment step on an ``environment.teardown`` event, as its own
least-privilege identity: namespace check, lease listing, revoke-prefix, the counts of its
report (secrets, identities), namespace delete and wait, the reply event.

Figures: teardown_ratio (chamberlain / baseline), teardown_s, teardown_baseline_s,
teardown_leases_revoked, teardown_secrets_destroyed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chamberlain.adapters.authority import Authority  # noqa: E402
from chamberlain.adapters.authority_admin import AdminAuthority  # noqa: E402
from chamberlain.adapters.bao_server import start_dev  # noqa: E402
from chamberlain.model import event_types as T  # noqa: E402
from chamberlain.model.events import make_event  # noqa: E402
from chamberlain.planner.function_policies import (  # noqa: E402
    NamespaceMounts,
    function_rules,
    policy_name,
    render,
)
from chamberlain.steps.revoke_environment import (  # noqa: E402
    FUNCTION,
    HeadIntent,
    RevokeEnvironment,
)

SECRETS = 1000
LEASES = 100
CONSUMERS = 10
PG = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
CREATE = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
DROP = 'DROP ROLE IF EXISTS "{{name}}";'


def fill(root: AdminAuthority, name: str) -> list[str]:
    """An ephemeral environment namespace as chamberlain's steps leave it; its PG roles."""
    root.create_namespace_with_metadata(
        name, {"managed-by": "chamberlain", "environment": name, "ephemeral": "true"}
    )
    inside = root.for_namespace(name)
    inside.enable_secrets_engine("kv", "secret", {"version": "2"})
    inside.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
    inside.enable_auth("kubernetes", "kubernetes")
    for i in range(SECRETS):
        inside.write_secret(
            f"platform-data/ds-{i % 20}/svc-{i:04d}", {"password": f"bench-{i:04d}-value"}, cas=0
        )
    for i in range(CONSUMERS):
        inside.write_policy(
            f"chamberlain-consumer-team-{i}-api",
            f'path "secret/data/platform-data/ds-{i}/*" {{ capabilities = ["read"] }}',
        )
        inside.client.auth.kubernetes.create_role(
            f"chamberlain-team-{i}-api",
            bound_service_account_names=["api"],
            bound_service_account_namespaces=[f"team-{i}"],
            policies=[f"chamberlain-consumer-team-{i}-api"],
            mount_point="kubernetes",
        )
    inside.enable_secrets_engine("database", "database")
    inside.write_database_config(
        "database",
        "pg",
        plugin_name="postgresql-database-plugin",
        connection_url=PG,
        username="postgres",
        password="trust-auth-unused",
        allowed_roles=["bench"],
    )
    inside.write_database_role(
        "database",
        "bench",
        db_name="pg",
        creation_statements=[CREATE],
        revocation_statements=[DROP],
        default_ttl=3600,
        max_ttl=7200,
    )
    return [
        inside.generate_credentials("database", "bench").data["username"] for _ in range(LEASES)
    ]


def roles_left(names: list[str]) -> int:
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAX", "-v", f"names={','.join(names)}"],
        input="select count(*) from pg_roles where rolname = any(string_to_array(:'names', ','));",
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def baseline(root: AdminAuthority, name: str) -> float:
    started = time.perf_counter()
    root.for_namespace(name).revoke_prefix("database", sync=True)
    root.delete_namespace(name)
    while root.namespace_exists(name):
        time.sleep(0.01)
    return time.perf_counter() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-teardown-") as tmp:
        server = start_dev(Path(tmp))
        try:
            assert server.root_token is not None
            root = AdminAuthority.of(Authority.connect(server.addr, server.root_token))
            users_a = fill(root, "preview-a")
            users_b = fill(root, "preview-b")
            mounts = [NamespaceMounts("preview-a", "secret", "kubernetes")]
            root.write_policy(
                policy_name(FUNCTION), render(FUNCTION, function_rules(FUNCTION, mounts))
            )
            token = root.create_token([policy_name(FUNCTION)], ttl="1h", display_name=FUNCTION)
            step = RevokeEnvironment(
                Authority.connect(server.addr, token), HeadIntent(None, "main", None), poll_s=0.01
            )
            event = make_event(
                T.ENVIRONMENT_TEARDOWN, {"environment": "preview-a"}, source="/bench"
            )
            started = time.perf_counter()
            reply = step(event)
            chamberlain_s = time.perf_counter() - started
            base_s = baseline(root, "preview-b")
            assert reply is not None
            data = reply.get_data()
            assert isinstance(data, dict) and data["namespaceDeleted"] is True, data
            assert roles_left(users_a) == 0 and roles_left(users_b) == 0
        finally:
            server.stop()
    print(f"teardown_s: {chamberlain_s:.3f}")
    print(f"teardown_baseline_s: {base_s:.3f}")
    print(f"teardown_leases_revoked: {data['leasesRevoked']}")
    print(f"teardown_secrets_destroyed: {data['secretsDestroyed']}")
    print(f"teardown_ratio: {chamberlain_s / base_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
