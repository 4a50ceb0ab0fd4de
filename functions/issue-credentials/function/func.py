"""The issue-credentials function for ``func deploy``: func-python serves what ``new()`` returns.

Configures the database engine and keeps a live leased credential per role.
The step itself is chamberlain's (``chamberlain.steps.registry``); this module only hands it to
func-python, through the adapter the tests drive. Rendered by ``chamberlain.packaging``.
"""

from __future__ import annotations

from chamberlain.runtime.funcpy import FunctionAdapter, new_for

FUNCTION = "issue-credentials"


def new() -> FunctionAdapter:
    """A func-python function instance serving the issue-credentials step."""
    return new_for(FUNCTION)
