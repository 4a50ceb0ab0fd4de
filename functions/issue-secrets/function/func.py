"""The issue-secrets function for ``func deploy``: func-python serves what ``new()`` returns.

Makes the authority hold exactly the secrets the pushed intent declares.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "issue-secrets"


def new() -> FunctionAdapter:
    """A func-python function instance serving the issue-secrets step."""
    return new_for(FUNCTION)
