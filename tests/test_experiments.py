"""The flagship demo (``make demo``, experiments/demo.py) runs end to end in a tiny setting."""

import json
import math
import os

import pytest

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
