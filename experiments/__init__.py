"""The experiment scripts (``python -m experiments.<script>``) and the library modules they share.

Scripts: :data:`SCRIPTS`. Library modules (``runner``, ``sweep``, ``tasks``, ``plots``) are imported by
the scripts; run as ``python -m experiments.<module>`` they say so and exit 2 (:func:`not_a_script`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

#: The runnable scripts, each ``python -m experiments.<name> [--help]``.
SCRIPTS = (
    "demo",
    "temporal_order",
    "adding",
    "copying",
    "digits",
    "char_lm",
    "filtering",
    "forecast",
    "renet_digits",
    "seq2seq",
    "word_lm",
    "bench",
)


def not_a_script(module: str, scripts: Sequence[str] = SCRIPTS) -> NoReturn:
    """What ``python -m experiments.<module>`` does for a library module: one line on stderr naming the
    scripts to run instead, and exit status 2 (the scripts' status for bad command-line input)."""
    run = ", ".join(f"python -m experiments.{s}" for s in scripts)
    print(
        f"error: experiments.{module} is a library module, not a script; run {run} (each takes --help)",
        file=sys.stderr,
    )
    raise SystemExit(2)
