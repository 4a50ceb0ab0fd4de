"""Names of the functions chamberlain deploys and where their step factories live.

Factories are imported lazily (``module:attribute``) so that a function's process imports only
what its own step needs: cold start matters for scale-to-zero (the kubernetes client alone costs
~0.45 s). A factory takes no arguments, reads its configuration from the environment, and
returns a :data:`chamberlain.steps.base.Step`.
"""

from __future__ import annotations

import importlib

from chamberlain.steps.base import Step

# function name -> "module:factory". Filled in as each lifecycle step lands.
STEP_FACTORIES: dict[str, str] = {
    "issue-secrets": "chamberlain.steps.issue_secrets:build",
    "initialize-authority": "chamberlain.steps.initialize_authority:build",
    "hand-over-bootstrap": "chamberlain.steps.hand_over_bootstrap:build",
    "dead-letter": "chamberlain.steps.dead_letter:build",
    "issue-credentials": "chamberlain.steps.issue_credentials:build",
    "watch-leases": "chamberlain.steps.watch_leases:build",
    "renew-lease": "chamberlain.steps.renew_lease:build",
    "rotate-secrets": "chamberlain.steps.rotate_secrets:build",
    "revoke-environment": "chamberlain.steps.revoke_environment:build",
}


class UnknownStepError(LookupError):
    pass


def load_step(name: str, factories: dict[str, str] | None = None) -> Step:
    """Import and build the step served by the function called ``name``."""
    table = STEP_FACTORIES if factories is None else factories
    try:
        target = table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise UnknownStepError(f"unknown function {name!r} (known: {known})") from None
    module_name, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    step: Step = factory()
    return step
