"""The issue-credentials function for ``func deploy``."""

from .func import new

__all__ = ["new"]
