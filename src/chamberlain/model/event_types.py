"""Every CloudEvent type chamberlain produces or consumes, as constants.

Code names event types through these constants so that a typo is an ``AttributeError`` instead
of an event no Trigger ever matches. Each type has a JSON Schema for its ``data`` in ``events/``;
``tests/unit/test_event_catalog.py`` fails when a type is used without one.
"""

from __future__ import annotations

from typing import Final

# chamberlain's own types: dev.chamberlain.<noun>.<verb>.v<N>
GIT_PUSH: Final = "dev.chamberlain.git.push.v1"
INTENT_REJECTED: Final = "dev.chamberlain.intent.rejected.v1"
SECRETS_ISSUED: Final = "dev.chamberlain.secrets.issued.v1"
CREDENTIALS_ISSUED: Final = "dev.chamberlain.credentials.issued.v1"
DRIFT_DETECTED: Final = "dev.chamberlain.drift.detected.v1"
CLUSTER_CREATED: Final = "dev.chamberlain.cluster.created.v1"
CLUSTER_DELETED: Final = "dev.chamberlain.cluster.deleted.v1"
ENVIRONMENT_TEARDOWN: Final = "dev.chamberlain.environment.teardown.v1"
ENVIRONMENT_REVOKED: Final = "dev.chamberlain.environment.revoked.v1"
AUTHORITY_INITIALIZED: Final = "dev.chamberlain.authority.initialized.v1"
AUTHORITY_SEALED: Final = "dev.chamberlain.authority.sealed.v1"
HANDOVER_COMPLETED: Final = "dev.chamberlain.handover.completed.v1"
BOOTSTRAP_CHANGED: Final = "dev.chamberlain.bootstrap.changed.v1"
SECRET_ROTATED: Final = "dev.chamberlain.secret.rotated.v1"  # noqa: S105 (an event type, not a secret)
SECRET_ROTATE_REQUESTED: Final = "dev.chamberlain.secret.rotate.requested.v1"  # noqa: S105 (an event type, not a secret)
SECRET_COMPROMISED: Final = "dev.chamberlain.secret.compromised.v1"  # noqa: S105 (an event type, not a secret)
LEASE_EXPIRING: Final = "dev.chamberlain.lease.expiring.v1"
LEASE_RENEWED: Final = "dev.chamberlain.lease.renewed.v1"
LEASE_REISSUED: Final = "dev.chamberlain.lease.reissued.v1"
STEP_FAILED: Final = "dev.chamberlain.step.failed.v1"

# Inputs from standard event sources, accepted as those sources send them.
GITHUB_PUSH: Final = "com.github.push"
KNATIVE_GITHUB_PUSH: Final = "dev.knative.source.github.push"
KNATIVE_GITLAB_PUSH: Final = "dev.knative.sources.gitlab.push"
PING: Final = "dev.knative.sources.ping"
APISERVER_ADD: Final = "dev.knative.apiserver.resource.add"
APISERVER_DELETE: Final = "dev.knative.apiserver.resource.delete"

CHAMBERLAIN_TYPES: Final = frozenset(
    {
        GIT_PUSH,
        INTENT_REJECTED,
        SECRETS_ISSUED,
        CREDENTIALS_ISSUED,
        DRIFT_DETECTED,
        CLUSTER_CREATED,
        CLUSTER_DELETED,
        ENVIRONMENT_TEARDOWN,
        ENVIRONMENT_REVOKED,
        AUTHORITY_INITIALIZED,
        AUTHORITY_SEALED,
        HANDOVER_COMPLETED,
        BOOTSTRAP_CHANGED,
        SECRET_ROTATED,
        SECRET_ROTATE_REQUESTED,
        SECRET_COMPROMISED,
        LEASE_EXPIRING,
        LEASE_RENEWED,
        LEASE_REISSUED,
        STEP_FAILED,
    }
)
"""Types whose schemas are strict (``additionalProperties: false``): chamberlain produces them."""

EXTERNAL_TYPES: Final = frozenset(
    {GITHUB_PUSH, KNATIVE_GITHUB_PUSH, KNATIVE_GITLAB_PUSH, PING, APISERVER_ADD, APISERVER_DELETE}
)
"""Types sent by standard sources; their schemas check only what chamberlain reads."""

PUSH_TYPES: Final = frozenset({GIT_PUSH, GITHUB_PUSH, KNATIVE_GITHUB_PUSH, KNATIVE_GITLAB_PUSH})
"""Every type that announces a push to an intent repository."""

ALL_TYPES: Final = CHAMBERLAIN_TYPES | EXTERNAL_TYPES

# Tasks carried by chamberlain's own PingSources: {"task": ...}.
PING_TASK_ROTATE: Final = "rotate"
PING_TASK_WATCH_LEASES: Final = "watch-leases"
PING_TASK_RESYNC: Final = "resync"
PING_TASKS: Final = frozenset({PING_TASK_ROTATE, PING_TASK_WATCH_LEASES, PING_TASK_RESYNC})
