"""The renew-lease function for ``func deploy``: func-python serves what ``new()`` returns.

Renews a lease in place, or re-issues the credential at its max TTL.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "renew-lease"


def new() -> FunctionAdapter:
    """A func-python function instance serving the renew-lease step."""
    return new_for(FUNCTION)
