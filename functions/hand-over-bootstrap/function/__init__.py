"""The hand-over-bootstrap function for ``func deploy``."""

from .func import new

__all__ = ["new"]
