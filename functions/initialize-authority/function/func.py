"""The initialize-authority function for ``func deploy``: func-python serves what ``new()`` returns.

Initializes, unseals and configures the authority for a new cluster.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "initialize-authority"


def new() -> FunctionAdapter:
    """A func-python function instance serving the initialize-authority step."""
    return new_for(FUNCTION)
