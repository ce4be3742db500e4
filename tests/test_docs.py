"""The API reference (``make docs``) builds from the docstrings with no warning, and has every module.

The build runs in a fresh interpreter (no x64 from conftest, every import-time warning seen) with pdoc's
Python API, as the Makefile's ``pdoc --docformat google`` does, and fails on *any* warning: every warning
is recorded and listed, rather than the build stopping at the first one as with ``-W error``.
"""

import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import jaxrnn

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip("pdoc", reason="the docs or test extra (make test installs it)")

# as DOCS_MODULES in the Makefile: jaxrnn's __all__ (which pdoc follows) leaves out the framework modules;
# the deprecated alias jaxrnn.initializers warns on import and has no page
SPECS = ["jaxrnn", "jaxrnn.nnx", "jaxrnn.linen", "jaxrnn.eqx", r"!jaxrnn\.initializers$"]

BUILD = """
import json, sys, warnings
from pathlib import Path

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google")
    pdoc.pdoc(*json.loads(sys.argv[2]), output_directory=Path(sys.argv[1]))
for w in caught:
    print("WARNING", f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})".replace("\\n", " "))
"""

# public submodules: those named in jaxrnn.__all__ (jaxrnn.unroll is also the function jr.unroll)
MODULES = sorted(m.name for m in pkgutil.iter_modules(jaxrnn.__path__) if m.name in jaxrnn.__all__)
FRAMEWORKS = ["nnx", "linen", "eqx"]
# key names: (module page that defines them, name); all but the framework RNNs also on jaxrnn's page
KEY_NAMES = [
    ("unroll", "unroll"),
    ("cells", "Cell"),
    ("truncation", "truncate"),
    ("regularisers", "pascanu"),
    ("diagnostics", "lyapunov_spectrum"),
]


def build(out):
    """Build the site into ``out``: the warnings it gave, each distinct one once, in order."""
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(out), json.dumps(SPECS)],
        cwd=ROOT,  # this checkout's jaxrnn
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"pdoc failed:\n{proc.stdout}\n{proc.stderr}"
    warned = [line[len("WARNING ") :] for line in proc.stdout.splitlines() if line.startswith("WARNING ")]
    return list(dict.fromkeys(warned))


def test_the_public_modules_are_known():
    assert {"unroll", "cells", "truncation", "regularisers", "diagnostics", "initialisers"} <= set(MODULES)


# one test, one build (a module fixture would be built again on each xdist worker)
def test_docs_build_with_every_module_and_no_warning(tmp_path):
    warned = build(tmp_path)
    site = tmp_path

    # every public module has a page; the deprecated alias has none
    assert (site / "index.html").is_file() and (site / "jaxrnn.html").is_file()
    assert (site / "search.js").is_file()
    missing = [m for m in MODULES + FRAMEWORKS if not (site / "jaxrnn" / f"{m}.html").is_file()]
    assert not missing, f"no page for {missing}"
    assert not (site / "jaxrnn" / "initializers.html").exists()

    # key names are documented, on jaxrnn's page and on their module's
    top = (site / "jaxrnn.html").read_text()
    for module, name in KEY_NAMES:
        assert f'id="{name}"' in top, f"jaxrnn.{name} not on jaxrnn's page"
        assert f'id="{name}"' in (site / "jaxrnn" / f"{module}.html").read_text(), f"jaxrnn.{module}.{name}"
    for module in FRAMEWORKS:
        assert 'id="RNN"' in (site / "jaxrnn" / f"{module}.html").read_text(), f"jaxrnn.{module}.RNN"

    # the Google sections and the reST roles render
    page = (site / "jaxrnn" / "unroll.html").read_text()
    assert '<h6 id="arguments">Arguments:</h6>' in page  # "Args:" read as a Google section
    assert '<h6 id="returns">Returns:</h6>' in page
    assert 'href="../jaxrnn.html#Cell"' in page  # :class:`~jaxrnn.Cell` is a link

    # the framework modules, outside __all__, are reached from jaxrnn's page (its docstring names them);
    # warnings are errors
    unlinked = [f"jaxrnn.{m}" for m in FRAMEWORKS if f'href="jaxrnn/{m}.html"' not in top]
    problems = []
    if unlinked:
        problems.append(f"jaxrnn's page links no page of {unlinked}: name them with :mod: in its docstring")
    if warned:
        problems += [f"{len(warned)} distinct warnings (warnings are errors):", *warned]
    assert not problems, "\n".join(problems)
