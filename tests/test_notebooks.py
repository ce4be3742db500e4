"""Every notebook runs top to bottom (smoke setting, headless) and its paired .ipynb is in sync;
notebooks/run.py chooses the setting from --smoke / --no-smoke, else JAXRNN_NOTEBOOK_SMOKE."""

import importlib.util
import os
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


# ------------------------------------------------------------------------------------------------
# the smoke setting: --smoke / --no-smoke when given, else JAXRNN_NOTEBOOK_SMOKE (no kernel started)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, env, expected",
    [
        (None, "1", True),
        (None, "0", False),
        (None, None, False),
        (True, None, True),
        (True, "0", True),
        (False, "1", False),
    ],
)
def test_smoke_setting_is_the_flag_else_the_environment(monkeypatch, flag, env, expected):
    if env is None:
        monkeypatch.delenv(run.SMOKE_ENV, raising=False)
    else:
        monkeypatch.setenv(run.SMOKE_ENV, env)
    assert run.smoke_setting(flag) is expected


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["01"], "1", True),  # the documented variable alone selects the small setting
        (["01"], None, False),
        (["--smoke", "01"], None, True),
        (["--no-smoke", "01"], "1", False),
    ],
)
def test_main_honours_the_environment_variable(monkeypatch, capsys, argv, env, expected):
    if env is None:
        monkeypatch.delenv(run.SMOKE_ENV, raising=False)
    else:
        monkeypatch.setenv(run.SMOKE_ENV, env)
    seen = []
    monkeypatch.setattr(run, "execute", lambda path, *, smoke: seen.append((path.name[:2], smoke)))
    assert run.main(argv) == 0
    assert seen == [("01", expected)]
    assert f"({'smoke' if expected else 'full'} setting)" in capsys.readouterr().out


def test_execute_passes_the_environment_setting_to_the_kernel(monkeypatch):
    """``execute`` without ``smoke=``: the kernel sees the caller's ``JAXRNN_NOTEBOOK_SMOKE=1`` (and
    the -O0 flags of the smoke setting), not a ``0`` written over it; the environment is restored."""
    nbclient = pytest.importorskip("nbclient")
    seen = {}

    class Client:
        def __init__(self, nb, **kw):
            pass

        def execute(self):
            seen.update({k: os.environ.get(k) for k in (run.SMOKE_ENV, "XLA_FLAGS")})

    monkeypatch.setattr(nbclient, "NotebookClient", Client)
    monkeypatch.setenv(run.SMOKE_ENV, "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    run.execute(PATHS[0])
    assert seen == {run.SMOKE_ENV: "1", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert os.environ[run.SMOKE_ENV] == "1" and "XLA_FLAGS" not in os.environ
    monkeypatch.delenv(run.SMOKE_ENV)
    run.execute(PATHS[0])
    assert seen[run.SMOKE_ENV] == "0" and seen["XLA_FLAGS"] is None
    assert run.SMOKE_ENV not in os.environ
