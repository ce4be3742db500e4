"""The flagship demo (``make demo``, experiments/demo.py) in a tiny setting; every script's usage line and the
library modules' ``python -m`` answer."""

import json
import math
import os
import subprocess
import sys
from subprocess import PIPE

import pytest

import experiments
from experiments import demo, runner

SMOKE = ["--preset", "smoke", "--quiet"]


def test_demo_runs_and_writes_table_plots_and_results(tmp_path, capsys):
    out = demo.main(SMOKE + ["--methods", "SGD+clip+Omega", "LSTM", "--run-root", str(tmp_path)])
    printed = capsys.readouterr().out
    run_dir = out["run_dir"]
    assert os.path.dirname(run_dir) == os.path.join(str(tmp_path), "demo")
    assert {"error.png", "dynamics.png", "gradient_flow.png", "results.json"} <= set(os.listdir(run_dir))
    assert [os.path.basename(p) for p in out["plots"]] == ["error.png", "dynamics.png", "gradient_flow.png"]
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert lines[header].split() == ["method", "updates", "error", "rho(W_hh)", "Omega", "seconds"]
    rnn, lstm = lines[header + 2].split(), lines[header + 3].split()
    assert rnn[0] == "SGD+clip+Omega" and lstm[0] == "LSTM"
    res = json.load(open(os.path.join(run_dir, "results.json")))["results"]
    for row, r in zip((rnn, lstm), res):
        assert int(row[1]) == r["updates"] and r["updates"] <= 4  # the smoke preset's budget
        assert float(row[2]) == pytest.approx(r["error"], abs=5e-4) and 0.0 <= r["error"] <= 1.0
        # each method's own runner.train run: metrics, gradient flow at the start and the end
        flows = runner.read_jsonl(os.path.join(r["run_dir"], "gradient_flow.jsonl"))
        assert [f["step"] for f in flows] == [0, r["updates"]] and len(flows[0]["norms"]) == 10
    assert res[0]["rho"] > 0 and math.isnan(res[1]["rho"]) and lstm[3] == "-"  # LSTM's W_hh is (H, 4H)
    assert f"everything is in {run_dir}/" in printed


def test_a_diverged_method_is_tabled_and_the_demo_exits_3(tmp_path, capsys):
    argv = SMOKE + ["--methods", "SGD", "--lr", "1e38", "--run-root", str(tmp_path)]  # SGD overflows
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: demo.main(argv))
    assert e.value.code == 3
    captured = capsys.readouterr()
    (run_dir,) = (tmp_path / "demo").iterdir()
    (res,) = json.load(open(run_dir / "results.json"))["results"]  # written before the exit
    assert res["diverged_at"] == 4 and not res["solved"]
    assert "diverged at 4" in captured.out and "everything is in" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged in 1 of 1 runs: SGD at step 4")


def test_format_table():
    rows = [
        dict(method="SGD", updates=100, error=0.75, rho=0.951, omega=0.04, wall_s=3.2, solved=False),
        dict(method="LSTM", updates=50, error=0.0, rho=math.nan, omega=0.1, wall_s=1.0, solved=True),
    ]
    lines = demo.format_table(rows).splitlines()
    assert lines[2].split() == ["SGD", "100", "0.750", "0.95", "0.040", "3"]
    assert lines[3].split() == ["LSTM", "50", "0.000", "-", "0.100", "1", "solved"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--length", "5"], "--length must be >= 10"),
        (["--methods", "GRU"], "--methods: unknown value 'GRU'"),
        (["--init", "relu"], "--init: unknown value 'relu'"),
        (["--resume", "latest"], "--resume"),
        (["--lstm-optimizer", "rmsprop"], "--lstm-optimizer: unknown value"),
    ],
)
def test_bad_input(tmp_path, argv, match):
    with pytest.raises(runner.UsageError, match=match):
        demo.main(argv + ["--run-root", str(tmp_path), "--quiet"])


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--help"])
    assert e.value.code == 0
    assert "temporal order" in capsys.readouterr().out


def test_format_table_says_what_error_and_rho_are():
    lstm = dict(method="LSTM", updates=50, error=0.0, rho=math.nan, omega=0.1, wall_s=1.0, solved=True)
    sgd = dict(method="SGD", updates=100, error=0.75, rho=0.951, omega=0.04, wall_s=3.2, solved=False)
    lines = demo.format_table([sgd, lstm]).splitlines()
    assert lines[3].split()[3] == "-"  # the LSTM's rho ...
    assert lines[4:] == [demo.ERROR_NOTE, demo.RHO_NOTE]  # ... and why, under the table
    assert "Elman-type" in demo.RHO_NOTE and "not square" in demo.RHO_NOTE
    assert demo.format_table([sgd]).splitlines()[3:] == [demo.ERROR_NOTE]  # no '-', no note


# ------------------------------------------------------------------------------------------------
# python -m experiments.<module>: scripts and library modules
# ------------------------------------------------------------------------------------------------

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
LIBRARY = ("runner", "sweep", "tasks", "plots")


def test_every_module_is_a_script_or_a_library_module():
    modules = sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py") and f != "__init__.py")
    assert sorted(experiments.SCRIPTS + LIBRARY) == modules
    for name in modules:
        with open(os.path.join(EXPERIMENTS, f"{name}.py")) as f:
            main_block = f.read().split('if __name__ == "__main__":')[-1]
        assert ("runner.run_cli(main)" in main_block) == (name in experiments.SCRIPTS), name
        assert (f'not_a_script("{name}"' in main_block) == (name in LIBRARY), name


@pytest.mark.parametrize("name", [s for s in experiments.SCRIPTS if s != "bench"])
def test_usage_line_is_python_m(name, capsys):
    module = __import__(f"experiments.{name}", fromlist=["main"])
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m experiments.{name} ")


def test_python_m_of_a_library_module_says_so_and_exits_2():
    """Real processes: each library module (with --help or nothing) prints one line naming the scripts
    and exits 2; importing them prints nothing; a script run as ``__main__`` says ``python -m`` too."""
    root = os.path.dirname(EXPERIMENTS)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmds = {m: ["-m", f"experiments.{m}", "--help"] for m in LIBRARY}
    cmds["plots (no argument)"] = ["-m", "experiments.plots"]
    cmds["import"] = ["-c", "import " + ", ".join(f"experiments.{m}" for m in LIBRARY)]
    cmds["adding --help"] = ["-m", "experiments.adding", "--help"]
    procs = {
        k: subprocess.Popen([sys.executable, *a], cwd=root, env=env, stdout=PIPE, stderr=PIPE, text=True)
        for k, a in cmds.items()
    }
    done = {k: (*p.communicate(timeout=180), p.returncode) for k, p in procs.items()}
    for m in (*LIBRARY, "plots (no argument)"):
        out, err, code = done[m]
        name = m.split()[0]
        assert code == 2 and out == "", (m, out, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(f"error: experiments.{name} is a library module, not a script; run "), line
        scripts = ("adding", "copying", "digits") if name == "sweep" else experiments.SCRIPTS
        assert all(f"python -m experiments.{s}" in line for s in scripts), line
    assert done["import"] == ("", "", 0)  # importing them has no side effect
    out, err, code = done["adding --help"]
    assert code == 0 and out.startswith("usage: python -m experiments.adding "), (out, err)
