"""The hand-over-bootstrap function for ``func deploy``: func-python serves what ``new()`` returns.

Copies bootstrap secrets into the authority once, then retires them.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "hand-over-bootstrap"


def new() -> FunctionAdapter:
    """A func-python function instance serving the hand-over-bootstrap step."""
    return new_for(FUNCTION)
