"""The dead-letter function for ``func deploy``: func-python serves what ``new()`` returns.

The Broker's dead-letter sink: logs what failed and says so as step.failed.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "dead-letter"


def new() -> FunctionAdapter:
    """A func-python function instance serving the dead-letter step."""
    return new_for(FUNCTION)
