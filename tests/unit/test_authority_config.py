"""Intent -> desired authority configuration -> converge actions (pure planner)."""

from __future__ import annotations

from dataclasses import replace

from chamberlain.model.intent import AuthorityConfig, Environment, Intent
from chamberlain.planner.authority_config import (
    OWNED_DESCRIPTION,
    AuditDevice,
    ConfigureKubernetesAuth,
    CreateNamespace,
    DeleteFunctionRole,
    DeletePolicy,
    EnableAuthMethod,
    EnableSecretsEngine,
    KubernetesApi,
    Mount,
    ObservedAuthority,
    ObservedNamespace,
    SystemCluster,
    WriteFunctionRole,
    WritePolicy,
    WriteTokenRole,
    counts,
    desired_configuration,
    plan,
)
from chamberlain.planner.function_policies import FUNCTIONS, policy_name
from chamberlain.steps.cluster_events import ClusterEvent

API = KubernetesApi("https://prod.example:6443", "-----BEGIN CERTIFICATE-----\nx\n")
SYSTEM = SystemCluster(KubernetesApi("https://mgmt.example:6443", "CA"))
INTENT = Intent(
    environments=(
        Environment("prod", "prod"),
        Environment("staging", "stg"),
        Environment("preview", "preview", ephemeral=True),
    ),
    authority=AuthorityConfig(
        "authority", 3, 2, ("age1x",), kv_mount="kv", audit_path="/var/log/bao/audit.log"
    ),
)
AUDIT = (AuditDevice("file", "file", "/var/log/bao/audit.log"),)


def event(
    environment: str, api: KubernetesApi | None = API, ephemeral: bool = False
) -> ClusterEvent:
    return ClusterEvent(environment, ephemeral, api, None, "cluster.created")


def converged(desired_event: ClusterEvent | None = None) -> ObservedAuthority:
    """What the authority looks like right after applying the plan for ``desired_event``."""
    desired = desired_configuration(INTENT, desired_event, system=SYSTEM)
    kv2 = Mount("kv", "2", OWNED_DESCRIPTION)
    namespaces = {
        p.name: ObservedNamespace(
            p.name,
            p.metadata,
            secret_mounts={p.kv_mount: kv2, p.state_mount: kv2},
            auth_mounts={p.auth_mount: Mount("kubernetes", "", OWNED_DESCRIPTION)},
            kubernetes=p.kubernetes,
        )
        for p in desired.namespaces
    }
    return ObservedAuthority(
        namespaces=namespaces,
        policies=dict(desired.policies),
        token_role=desired.token_role,
        root_auth_mounts={"kubernetes": Mount("kubernetes", "", OWNED_DESCRIPTION)},
        function_auth=SYSTEM.api,
        function_roles=dict(desired.function_roles),
        audit_devices=AUDIT,
    )


EMPTY = ObservedAuthority({}, {}, None, {}, None, {}, AUDIT)


def test_from_nothing_everything_is_created_policies_first() -> None:
    desired = desired_configuration(INTENT, event("prod"), system=SYSTEM)
    result = plan(desired, EMPTY)

    assert [n.name for n in desired.namespaces] == ["prod", "stg"]  # a template is not one
    kinds = [type(a) for a in result.actions]
    first_namespace = kinds.index(CreateNamespace)
    assert set(kinds[:first_namespace]) == {
        WritePolicy,
        WriteTokenRole,
        EnableAuthMethod,
        ConfigureKubernetesAuth,
        WriteFunctionRole,
    }
    assert counts(result.actions)["policiesWritten"] == len(FUNCTIONS)
    assert counts(result.actions)["rolesWritten"] == len(FUNCTIONS)
    engines = {(a.namespace, a.path) for a in result.actions if isinstance(a, EnableSecretsEngine)}
    assert engines == {
        ("prod", "kv"),
        ("prod", "chamberlain"),
        ("stg", "kv"),
        ("stg", "chamberlain"),
    }
    configured = [a for a in result.actions if isinstance(a, ConfigureKubernetesAuth)]
    assert {(a.namespace, a.api.host) for a in configured} == {
        (None, SYSTEM.api.host),
        ("prod", API.host),  # only the event's environment gets its cluster's API
    }
    assert result.warnings == ()


def test_a_converged_authority_needs_nothing() -> None:
    desired = desired_configuration(INTENT, event("prod"), system=SYSTEM)
    result = plan(desired, converged(event("prod")))
    assert result.actions == ()
    assert result.namespaces == ("prod", "stg")


def test_drift_is_repaired_and_only_owned_leftovers_are_removed() -> None:
    observed = converged(event("prod"))
    tampered = policy_name("issue-secrets")
    gone = policy_name("rotate-secrets")
    roles = dict(observed.function_roles)
    del roles[gone]
    roles[policy_name("retired-function")] = replace(roles[tampered], name="x")
    observed = replace(
        observed,
        policies={
            **observed.policies,
            tampered: 'path "*" { capabilities = ["sudo"] }',
            policy_name("retired-function"): "",
        },
        function_roles=roles,
    )
    result = plan(desired_configuration(INTENT, event("prod"), system=SYSTEM), observed)
    assert set(result.actions) == {
        WritePolicy(
            tampered, desired_configuration(INTENT, None, system=SYSTEM).policies[tampered]
        ),
        DeletePolicy(policy_name("retired-function")),
        WriteFunctionRole(
            "kubernetes", desired_configuration(INTENT, None, system=SYSTEM).function_roles[gone]
        ),
        DeleteFunctionRole("kubernetes", policy_name("retired-function")),
    }


def test_an_ephemeral_instance_lives_until_teardown_and_is_in_function_policies() -> None:
    desired = desired_configuration(INTENT, event("preview-42", ephemeral=True), system=SYSTEM)
    names = [(n.name, n.ephemeral) for n in desired.namespaces]
    assert ("preview-42", True) in names
    assert 'path "preview-42/kv/data/*"' in desired.policies[policy_name("issue-secrets")]

    later = desired_configuration(
        INTENT, event("prod"), live_instances=["preview-42"], system=SYSTEM
    )
    assert "preview-42" in [n.name for n in later.namespaces]
    instance = next(n for n in later.namespaces if n.name == "preview-42")
    assert instance.kubernetes is None, "another environment's event leaves its auth config alone"


def test_an_undeclared_environment_is_reported_not_configured() -> None:
    desired = desired_configuration(INTENT, event("local", api=None), system=None)
    assert [n.name for n in desired.namespaces] == ["prod", "stg"]
    assert any("'local'" in note for note in desired.notes)
    assert desired.function_roles == {}


def test_an_unmanaged_namespace_in_the_way_is_left_untouched() -> None:
    observed = replace(
        converged(event("prod")),
        namespaces={
            **converged(event("prod")).namespaces,
            "stg": ObservedNamespace("stg", {"owner": "someone-else"}),
        },
    )
    result = plan(desired_configuration(INTENT, event("prod"), system=SYSTEM), observed)
    assert result.actions == ()
    assert any("'stg'" in w and "not managed" in w for w in result.warnings)
    assert result.namespaces == ("prod",)


def test_wrong_mount_types_and_missing_audit_are_reported() -> None:
    base = converged(event("prod"))
    prod = base.namespaces["prod"]
    observed = replace(
        base,
        namespaces={
            **base.namespaces,
            "prod": replace(
                prod,
                secret_mounts={
                    "kv": Mount("kv", "1", ""),
                    "chamberlain": Mount("kv", "2", OWNED_DESCRIPTION),
                    "old": Mount("kv", "2", OWNED_DESCRIPTION),
                },
            ),
        },
        audit_devices=(AuditDevice("file", "file", "/tmp/elsewhere.log"),),
    )
    result = plan(desired_configuration(INTENT, event("prod"), system=SYSTEM), observed)
    assert result.actions == ()
    text = "\n".join(result.warnings)
    assert "'kv' in namespace 'prod' is kv v1, not kv v2" in text
    assert "'old'" in text and "no longer declared" in text
    assert "/var/log/bao/audit.log" in text
    none = replace(base, audit_devices=())
    assert any(
        "no audit device" in w for w in plan(desired_configuration(INTENT, None), none).warnings
    )


def test_a_cluster_without_ca_is_not_configured_and_says_so() -> None:
    desired = desired_configuration(
        INTENT, event("prod", api=KubernetesApi("https://prod:6443", None)), system=SYSTEM
    )
    result = plan(desired, converged(None))
    assert not [a for a in result.actions if isinstance(a, ConfigureKubernetesAuth)]
    assert any("no CA certificate" in w for w in result.warnings)


def test_policies_grant_data_paths_only_in_managed_namespaces_and_none_to_the_initializer() -> None:
    desired = desired_configuration(INTENT, event("prod"), extra_policy_namespaces=["old-env"])
    issue = desired.policies[policy_name("issue-secrets")]
    assert 'path "prod/kv/data/*"' in issue and 'path "stg/kv/data/*"' in issue
    assert 'path "old-env/kv/data/*"' in issue  # removed env, not torn down yet
    assert 'path "+/' not in issue and 'path "*"' not in issue
    initializer = desired.policies[policy_name("initialize-authority")]
    assert "/data/" not in initializer and "sys/namespaces/+" in initializer
    assert 'path "+/sys/mounts/kv"' in initializer
    again = desired_configuration(INTENT, event("prod"), extra_policy_namespaces=["old-env"])
    assert again.policies == desired.policies, "rendering must be deterministic (no drift)"


def test_function_policies_name_the_due_index_where_it_lives() -> None:
    from chamberlain.adapters import due_index
    from chamberlain.planner import function_policies

    assert function_policies.DUE_PREFIX == due_index.PREFIX
