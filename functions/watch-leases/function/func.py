"""The watch-leases function for ``func deploy``: func-python serves what ``new()`` returns.

Finds dynamic-credential leases about to expire.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "watch-leases"


def new() -> FunctionAdapter:
    """A func-python function instance serving the watch-leases step."""
    return new_for(FUNCTION)
