"""The renew-lease function for ``func deploy``."""

from .func import new

__all__ = ["new"]
