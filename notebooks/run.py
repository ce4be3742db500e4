"""Execute the notebooks top to bottom, headless: what the test suite does, and what you run by hand.

The notebooks are jupytext percent-format ``.py`` files paired with ``.ipynb`` files (outputs stripped
in git); the ``.py`` is the source of truth. Each reads ``JAXRNN_NOTEBOOK_SMOKE``: ``1`` selects a
small setting that runs in seconds (the test suite), anything else the full setting (a person).

    python notebooks/run.py                       # every notebook, full setting
    python notebooks/run.py --smoke 01 04         # the ones whose names start with 01 or 04
    JAXRNN_NOTEBOOK_SMOKE=1 python notebooks/run.py 01 04   # the same
    python notebooks/run.py --out runs/notebooks  # keep the executed notebooks and their figures

The setting: ``--smoke`` / ``--no-smoke`` when given, else ``JAXRNN_NOTEBOOK_SMOKE`` as the notebooks
read it (``1``: smoke; unset or anything else: full) -- :func:`smoke_setting`.

``--out`` writes ``<name>.ipynb`` (executed, with outputs) and ``<name>_<cell>_<k>.png`` for every
figure, so the plots can be looked at without Jupyter. ``python notebooks/run.py --sync`` rewrites
each ``.ipynb`` from its ``.py`` with outputs stripped (``jupytext --sync`` does the same).
"""

from __future__ import annotations

import argparse
import base64
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SMOKE_ENV = "JAXRNN_NOTEBOOK_SMOKE"


def notebooks(prefixes=()) -> list[pathlib.Path]:
    """The notebook sources (``NN_*.py``) in order, optionally those whose names start with a prefix."""
    paths = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    return paths


def read(py_path):
    """The notebook of a percent-format source, as an ``nbformat`` NotebookNode (no outputs)."""
    import jupytext

    return jupytext.read(py_path)


def stripped(nb):
    """``nb`` with every output, execution count and volatile metadata removed (what git holds).

    Cell ids are made deterministic (``cell-<index>``) so that re-syncing an unchanged source
    rewrites the same file.
    """
    import copy

    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
        cell.metadata = {k: v for k, v in cell.metadata.items() if k not in ("execution", "ExecuteTime")}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def sync(py_path) -> pathlib.Path:
    """Write the paired ``.ipynb`` of ``py_path`` from the ``.py``, outputs stripped; returns its path."""
    import jupytext

    out = pathlib.Path(py_path).with_suffix(".ipynb")
    jupytext.write(stripped(read(py_path)), out, fmt="ipynb")
    return out


def smoke_setting(smoke: bool | None = None) -> bool:
    """Whether to run the smoke setting: ``smoke`` when it is a bool (``--smoke`` / ``--no-smoke``), else
    what ``JAXRNN_NOTEBOOK_SMOKE`` says (``"1"``: smoke, as the notebooks themselves read it)."""
    return bool(smoke) if smoke is not None else os.environ.get(SMOKE_ENV) == "1"


def execute(py_path, *, smoke: bool | None = None, timeout: int = 600):
    """Run the notebook of ``py_path`` in a fresh kernel, headless; returns the executed notebook.

    ``smoke``: the small setting (True), the full one (False), or ``None``: whatever
    ``JAXRNN_NOTEBOOK_SMOKE`` says (:func:`smoke_setting`), so that the documented variable is honoured.
    The kernel is the running interpreter's (``python3`` kernelspec of this environment) and inherits
    the environment, with ``JAXRNN_NOTEBOOK_SMOKE`` set (and for the smoke setting, unless ``XLA_FLAGS``
    is set, LLVM's -O0 backend, as ``make test`` uses: the programs are tiny and compiling them
    dominates); figures go through the kernel's inline
    backend (no display needed) and come back as PNG outputs. A failing cell raises
    ``nbclient.exceptions.CellExecutionError`` with the cell's traceback.
    """
    import nbclient

    nb = read(py_path)
    smoke = smoke_setting(smoke)
    env = {SMOKE_ENV: "1" if smoke else "0"}
    if smoke and "XLA_FLAGS" not in os.environ:  # tiny programs: compiling dominates, use LLVM -O0
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    if os.environ.get("MPLBACKEND", "").lower() == "agg":  # would swallow the inline figures
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        )
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def figures(nb):
    """``(cell_index, k, png_bytes)`` for every PNG output of an executed notebook."""
    out = []
    for i, cell in enumerate(nb.cells):
        k = 0
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                out.append((i, k, base64.b64decode(data["image/png"])))
                k += 1
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python notebooks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="name prefixes (e.g. 01 03); default: all")
    p.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"the small setting the test suite runs (--no-smoke: the full one; default: {SMOKE_ENV}=1 "
        "selects the small one, else the full one)",
    )
    p.add_argument("--out", type=pathlib.Path, help="write executed notebooks and PNG figures here")
    p.add_argument("--sync", action="store_true", help="rewrite each .ipynb from its .py and exit")
    args = p.parse_args(argv)
    paths = notebooks(args.names)
    if not paths:
        print(f"no notebook matches {args.names}", file=sys.stderr)
        return 2
    smoke = smoke_setting(args.smoke)
    for path in paths:
        if args.sync:
            print("wrote", sync(path))
            continue
        t0 = time.perf_counter()
        nb = execute(path, smoke=smoke)
        setting = "smoke" if smoke else "full"
        print(f"{path.name}: ran in {time.perf_counter() - t0:.1f} s ({setting} setting)", flush=True)
        if args.out:
            import nbformat

            args.out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.out / f"{path.stem}.ipynb")
            for i, k, png in figures(nb):
                (args.out / f"{path.stem}_{i:02d}_{k}.png").write_bytes(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
