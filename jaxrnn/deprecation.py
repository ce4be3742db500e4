"""Old names kept as deprecated aliases: a module-level ``__getattr__`` that warns once per use.

jaxrnn speaks of the *carry* everywhere and spells its module names one way (British: ``initialisers``,
``regularisers``, ``normalised``). The names it used before still work and say what to use instead.
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["module_getattr"]


def module_getattr(module_name: str, aliases: dict[str, tuple[str, str]]):
    """A module ``__getattr__`` resolving ``aliases[name] = (module, new_name)`` with a
    ``DeprecationWarning``; any other name raises ``AttributeError`` as usual."""

    def __getattr__(name):
        if name not in aliases:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        where, new = aliases[name]
        warnings.warn(
            f"{module_name}.{name} is deprecated; use {where}.{new}"
            if new
            else f"{name} is deprecated; use {where}",
            DeprecationWarning,
            stacklevel=2,
        )
        mod = importlib.import_module(where)
        return getattr(mod, new) if new else mod

    return __getattr__
