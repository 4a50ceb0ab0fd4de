"""``chamberlain plan --repo PATH|URL --env ENV``: what issue-secrets would change, read-only.

Reads the intent at a commit (default: HEAD of the repository's current branch), observes the
environment's namespace in the live authority and prints the full plan (every path compared,
so drift shows too) as a table or as JSON. Values are never shown: a plan cannot hold one.

Exit codes, like ``terraform plan -detailed-exitcode``: 0 in sync, 2 changes pending, 1 error
(invalid intent, unknown environment, authority unreachable or not configured).

The authority address and token come from the same variables the function reads
(``CHAMBERLAIN_AUTHORITY_ADDR``, ``CHAMBERLAIN_AUTHORITY_TOKEN`` / ``_TOKEN_FILE``,
``CHAMBERLAIN_AUTHORITY_NAMESPACE``); ``--addr`` overrides the address and ``--token-env`` names
another variable holding the token, so a token never appears on a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chamberlain.adapters.authority import Authority, AuthorityError
from chamberlain.adapters.gitrepo import GitError, git
from chamberlain.adapters.intent_source import IntentSource, IntentSourceError
from chamberlain.logs import redact, register_secret
from chamberlain.model.intent import Environment
from chamberlain.planner.render import render_json, render_table
from chamberlain.settings import Settings, SettingsError
from chamberlain.steps.base import StepError
from chamberlain.steps.intent_loading import LoadedIntent
from chamberlain.steps.reconcile import IntentRejectedError, Reconciler

EXIT_IN_SYNC = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2


class CommandError(Exception):
    """A failure to report on stderr with exit code 1 (message never holds a value)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", required=True, help="intent repository: a local path or a Git URL"
    )
    parser.add_argument("--env", required=True, dest="environment", help="environment name")
    parser.add_argument(
        "--commit", help="commit to read (default: HEAD of the repository's current branch)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--addr", help="authority address (default: $CHAMBERLAIN_AUTHORITY_ADDR)")
    parser.add_argument(
        "--token-env",
        default="CHAMBERLAIN_AUTHORITY_TOKEN",
        metavar="VAR",
        help="environment variable holding the authority token "
        "(default: CHAMBERLAIN_AUTHORITY_TOKEN, or CHAMBERLAIN_AUTHORITY_TOKEN_FILE)",
    )
    parser.add_argument(
        "--namespace",
        help="base namespace of the environments (default: $CHAMBERLAIN_AUTHORITY_NAMESPACE)",
    )


@dataclass(frozen=True)
class Target:
    """What a plan/apply invocation works on, resolved from the arguments."""

    reconciler: Reconciler
    url: str
    loaded: LoadedIntent
    environment: Environment


def resolve(args: argparse.Namespace) -> Target:
    """Connect, read the intent at the commit and find the environment (or CommandError)."""
    env = dict(os.environ)
    if args.addr:
        env["CHAMBERLAIN_AUTHORITY_ADDR"] = args.addr
    if args.namespace is not None:
        env["CHAMBERLAIN_AUTHORITY_NAMESPACE"] = args.namespace
    token = env.get(args.token_env)
    if token:
        register_secret(token)
        env["CHAMBERLAIN_AUTHORITY_TOKEN"] = token
    try:
        settings = Settings.from_env(env)
        token = settings.require_token()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    cache = Path(env.get("CHAMBERLAIN_CACHE_DIR") or tempfile.mkdtemp(prefix="chamberlain-"))
    source = IntentSource(cache)
    url, commit = _repository(args.repo, args.commit, source)
    authority = Authority.connect(
        settings.authority_addr, token, namespace=settings.authority_namespace
    )
    reconciler = Reconciler(
        authority,
        source,
        base_namespace=settings.authority_namespace,
        concurrency=settings.concurrency,
    )
    loaded = reconciler.loader.load(url, commit)
    environment = loaded.intent.environment(args.environment)
    if environment is None:
        known = ", ".join(sorted(e.name for e in loaded.intent.environments)) or "none"
        raise CommandError(
            f"environment {args.environment!r} is not declared at {commit[:12]} (known: {known})"
        )
    if environment.ephemeral:
        raise CommandError(
            f"environment {environment.name!r} is an ephemeral template: its instances are "
            "issued when a cluster is created"
        )
    loaded = reconciler.load_valid(url, commit, [environment])
    return Target(reconciler, url, loaded, environment)


def _repository(repo: str, commit: str | None, source: IntentSource) -> tuple[str, str]:
    """(URL to fetch from, full commit sha)."""
    path = Path(repo)
    if path.exists():
        try:
            sha = git(path, "rev-parse", "--verify", f"{commit or 'HEAD'}^{{commit}}").strip()
        except GitError:
            raise CommandError(f"{commit or 'HEAD'} is not a commit in {repo}") from None
        return path.resolve().as_uri(), sha
    if commit is not None and len(commit) in (40, 64):
        return repo, commit
    if commit is not None:
        raise CommandError("--commit must be a full sha when --repo is a URL")
    head = source.head_of(repo, "HEAD")
    if head is None:
        raise CommandError(f"{repo} has no HEAD")
    return repo, head


def report_error(command: str, exc: BaseException) -> int:
    """Print a failure (redacted) and return the error exit code."""
    if isinstance(exc, IntentRejectedError):
        print(f"chamberlain {command}: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.format()}", file=sys.stderr)
    else:
        print(f"chamberlain {command}: error: {redact(str(exc))}", file=sys.stderr)
    return EXIT_ERROR


HANDLED = (
    CommandError,
    IntentRejectedError,
    IntentSourceError,
    AuthorityError,
    StepError,
)


def run(args: argparse.Namespace) -> int:
    try:
        target = resolve(args)
        planned = target.reconciler.plan_environment(target.url, target.loaded, target.environment)
    except HANDLED as exc:
        return report_error("plan", exc)
    if args.format == "json":
        print(json.dumps(render_json(planned.plan, planned.observed), indent=2))
    else:
        sys.stdout.write(render_table(planned.plan, planned.observed))
    return EXIT_IN_SYNC if planned.plan.empty else EXIT_CHANGES
