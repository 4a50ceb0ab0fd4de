"""A module imported on first attribute access, for heavy dependencies used only on some paths.

Cold start matters under scale-to-zero: ``hvac`` (with ``requests`` and ``urllib3``) costs
~0.15 s to import, yet many first deliveries fail or finish before any authority call. A
module-level ``hvac = lazy_module("hvac")`` keeps ``except hvac.exceptions.InvalidPath:`` and
``hvac.Client(...)`` as written while deferring the import to the first use. Modules declare
the real import under ``TYPE_CHECKING`` so that type checkers see the real module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name``; each attribute is read from the imported module."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def module(self) -> ModuleType:
        """The real module, imported now if it is not yet (the import lock makes it safe)."""
        return importlib.import_module(self._name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.module(), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first attribute access."""
    return LazyModule(name)
