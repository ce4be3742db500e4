"""Deprecated alias of :mod:`jaxrnn.initialisers` (jaxrnn spells its module names one way).

``import jaxrnn.initializers`` still works and warns; use ``jaxrnn.initialisers`` (``jr.initialisers``).
"""

import warnings

from jaxrnn.initialisers import *  # noqa: F403
from jaxrnn.initialisers import __all__, get  # noqa: F401

warnings.warn("jaxrnn.initializers is deprecated; use jaxrnn.initialisers", DeprecationWarning, stacklevel=2)
