"""Shared intent fixtures for the planner tests, and a model of what applying a plan leaves.

``apply_plan`` follows KV v2 semantics closely enough to check convergence (plan, apply,
re-plan -> empty) without an authority; the real applier is tested against OpenBao elsewhere.
"""

from __future__ import annotations

import dataclasses

from chamberlain.model.intent import Intent
from chamberlain.model.loader import load_files
from chamberlain.model.validate import check
from chamberlain.planner.actions import (
    CreateSecret,
    DeletePolicy,
    DeleteRole,
    ObservedSecret,
    ObservedState,
    Plan,
    RegisterSecret,
    RetireSecret,
    UpdateMetadata,
    WritePolicy,
    WriteRole,
)

C1 = "1" * 40
C2 = "2" * 40
C3 = "3" * 40

ENVIRONMENTS = """\
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec: {branch: main}
---
apiVersion: chamberlain.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec: {branch: main}
"""

BILLING = """\
apiVersion: chamberlain.dev/v1alpha1
kind: SecretIntent
metadata:
  name: billing-db
  labels: {team: payments}
spec:
  path: platform-data/postgres/billing-api
  class: runtime
  owner: team-payments
  purpose: Login of the billing API
  consumers:
    - {namespace: billing, serviceAccount: billing-api}
    - {namespace: ops, serviceAccount: auditor}
  generate:
    username: {type: alphanumeric, length: 16}
    password: {type: password, length: 32}
  rotation: {ttl: 720h, rotateBefore: 72h, maxOverlap: 24h}
"""

REDIS = """\
apiVersion: chamberlain.dev/v1alpha1
kind: SecretIntent
metadata: {name: session-redis}
spec:
  path: platform-data/redis/session-store
  class: runtime
  owner: team-web
  purpose: Redis password
  consumers:
    - {namespace: web, serviceAccount: storefront}
    - {namespace: ops, serviceAccount: auditor}
  generate:
    password: {type: hex, bytes: 32}
  deletionPolicy: delete
"""

STRIPE = """\
apiVersion: chamberlain.dev/v1alpha1
kind: SecretIntent
metadata: {name: checkout-stripe}
spec:
  path: platform-data/stripe/checkout
  class: internal
  owner: team-payments
  purpose: Stripe keys
  environments: [prod]
  keys: [api-key]
  consumers:
    - {namespace: checkout, serviceAccount: checkout}
"""

BOOTSTRAP = """\
apiVersion: chamberlain.dev/v1alpha1
kind: BootstrapSecret
metadata: {name: postgres-admin}
spec:
  path: platform-data/postgres/database-engine
  owner: team-platform
  purpose: Admin login of the database engine
  source:
    kubernetesSecret: {namespace: chamberlain, name: postgres-admin}
"""

BASE = {
    "environments.yaml": ENVIRONMENTS,
    "secrets/billing.yaml": BILLING,
    "secrets/redis.yaml": REDIS,
    "secrets/stripe.yaml": STRIPE,
    "bootstrap/postgres-admin.yaml": BOOTSTRAP,
}

BILLING_PATH = "platform-data/postgres/billing-api"
REDIS_PATH = "platform-data/redis/session-store"
STRIPE_PATH = "platform-data/stripe/checkout"
BOOTSTRAP_PATH = "platform-data/postgres/database-engine"


def load(files: dict[str, str]) -> Intent:
    """A valid intent from {path: YAML text}; fails the test on any validation problem."""
    result = load_files({path: text.encode() for path, text in files.items()})
    problems = check(result)
    assert problems == [], [p.format() for p in problems]
    return result.intent


def with_files(changes: dict[str, str | None]) -> dict[str, str]:
    """BASE with files replaced, added, or removed (None)."""
    files = dict(BASE)
    for path, text in changes.items():
        if text is None:
            files.pop(path, None)
        else:
            files[path] = text
    return files


EMPTY = ObservedState(secrets={}, policies={}, roles={})


def apply_plan(observed: ObservedState, plan: Plan) -> ObservedState:
    """What the authority holds after ``plan`` runs (KV v2 semantics, values not modelled)."""
    secrets = dict(observed.secrets)
    policies = dict(observed.policies)
    roles = dict(observed.roles)
    for action in plan.actions:
        if isinstance(action, CreateSecret):
            secrets[action.path] = ObservedSecret(action.path, 1, dict(action.metadata))
        elif isinstance(action, RegisterSecret):
            old = secrets.get(action.path)
            version = old.current_version if old is not None and old.exists else 0
            secrets[action.path] = ObservedSecret(action.path, version, dict(action.metadata))
        elif isinstance(action, UpdateMetadata):
            old = secrets[action.path]
            secrets[action.path] = dataclasses.replace(old, metadata=dict(action.metadata))
        elif isinstance(action, RetireSecret):
            old = secrets[action.path]
            if action.policy == "destroy":
                del secrets[action.path]
            else:
                version = 0 if action.policy == "delete" else old.current_version
                secrets[action.path] = ObservedSecret(action.path, version, dict(action.metadata))
        elif isinstance(action, WritePolicy):
            policies[action.name] = action.hcl
        elif isinstance(action, DeletePolicy):
            del policies[action.name]
        elif isinstance(action, WriteRole):
            roles[action.role.name] = action.role
        elif isinstance(action, DeleteRole):
            del roles[action.name]
    return ObservedState(secrets=secrets, policies=policies, roles=roles)
