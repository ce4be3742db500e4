"""Every notebook runs top to bottom (smoke setting, headless) and its paired .ipynb is in sync."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

pytest.importorskip("jupytext", reason="the notebooks extra (make test installs it)")
PATHS = run.notebooks()


def test_there_are_notebooks():
    assert len(PATHS) >= 1


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_paired_ipynb_is_the_py_without_outputs(path):
    import jupytext

    ipynb = path.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `python notebooks/run.py --sync`"
    paired = jupytext.read(ipynb)
    source = run.read(path)
    assert [(c.cell_type, c.source) for c in paired.cells] == [
        (c.cell_type, c.source) for c in source.cells
    ], f"{ipynb.name} is out of date with {path.name}: run `python notebooks/run.py --sync`"
    for cell in paired.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{ipynb.name} has outputs in git"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_setting(path):
    nb = run.execute(path, smoke=True, timeout=300)
    assert run.figures(nb), f"{path.name} drew no figure"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
