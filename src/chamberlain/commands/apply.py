"""``chamberlain apply --repo PATH|URL --env ENV``: run issue-secrets from the command line.

For recovery (the broker is down, a delivery went to the dead-letter sink): the same code path
as the function (:class:`chamberlain.steps.reconcile.Reconciler`), always a full reconcile so
drift is repaired too, under the environment's lock. A commit older than the one applied is
refused (exit 1): rolling an environment back is a Git revert, pushed.

Prints what changed (paths and counts, never values): one summary line, or with
``--format json`` the ``dev.chamberlain.secrets.issued.v1`` data the function would reply.
Exit codes: 0 applied (or already in sync), 1 error. Same arguments as ``chamberlain plan``.
"""

from __future__ import annotations

import argparse
import json
import uuid

from chamberlain.commands import plan as plan_command
from chamberlain.commands.plan import HANDLED, report_error, resolve
from chamberlain.steps.issue_secrets import environment_data, reply_for

EXIT_OK = 0
EXIT_ERROR = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    plan_command.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        target = resolve(args)
        result = target.reconciler.reconcile_environment(
            target.url,
            target.loaded,
            target.environment,
            event_id=f"cli-{uuid.uuid4()}",
            full=True,
        )
    except HANDLED as exc:
        return report_error("apply", exc)
    if result.status == "superseded":
        print(
            f"chamberlain apply: {target.loaded.commit[:12]} is older than the applied commit "
            f"{result.commit[:12]} of {result.environment}; nothing done (revert in Git instead)"
        )
        return EXIT_ERROR
    if args.format == "json":
        event = reply_for([result], trigger="cli", commit=target.loaded.commit)
        print(json.dumps(event.get_data(), indent=2))
        return EXIT_OK
    item = environment_data(result)
    print(
        f"{item['environment']} at {item['commit'][:12]}: {item['status']} "
        f"({item.get('mode', '-')}): {item['created']} created, {item['updated']} updated, "
        f"{item['retired']} retired, {item['unchanged']} unchanged, "
        f"{len(item['drifted'])} drift repaired, {item.get('writes', 0)} writes"
    )
    for kind in ("created", "updated", "retired"):
        for path in item["paths"][kind]:
            print(f"  {kind:<8} {path}")
    return EXIT_OK
