"""The initialize-authority function for ``func deploy``."""

from .func import new

__all__ = ["new"]
