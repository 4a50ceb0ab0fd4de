"""The revoke-environment function for ``func deploy``: func-python serves what ``new()`` returns.

Revokes leases and destroys values of an environment that is torn down.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "revoke-environment"


def new() -> FunctionAdapter:
    """A func-python function instance serving the revoke-environment step."""
    return new_for(FUNCTION)
