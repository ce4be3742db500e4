"""experiments/copying.py end to end (smoke preset): files, table, baseline, bad input."""

import json
import math
import os

import pytest
from helpers import is_png

from experiments import copying, runner, sweep


def test_smoke_run(tmp_path, capsys):
    result = copying.main(["--preset", "smoke", "--run-root", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    for text in ("test CE (nats)", "lstm", "Arjovsky [SRC]", "results.json"):
        assert text in out, text
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    (run,) = saved["runs"]
    assert (run["cell"], run["variant"], run["hidden"], run["steps"], run["n_test"]) == ("lstm", 2, 3, 3, 7)
    # the memoryless cost for T = 2: 10 ln 8 over T + 20 = 22 steps
    assert run["baseline"] == pytest.approx(10 * math.log(8) / 22)
    # 9 output classes, near-uniform readout at start: the cross-entropy is near ln 9, far above 0
    assert 0.5 < run["test_loss"] < 4.0 and 0.0 <= run["test_error"] <= 1.0
    assert f"{run['baseline']:.4g}" in out and f"{run['test_loss'] / run['baseline']:.4g}" in out
    assert is_png(os.path.join(result.sweep_dir, "summary.png"))
    assert is_png(os.path.join(run["run_dir"], "losses.png"))
    assert is_png(os.path.join(run["run_dir"], "gradient_flow.png"))
    assert saved["table"][0]["mean"] == pytest.approx(run["test_loss"])


def test_defaults_are_the_papers_models():
    c = copying.Config()
    assert c.cells == ("lstm", "tanh") and c.hidden == (40, 80) and c.lengths == (100, 200)
    p = runner.config_cli(copying.Config, copying.PRESETS, ["--preset", "paper"])
    assert (p.optimizer, p.lr, p.clip, p.clip_mode) == ("rmsprop", (1e-3,), (1.0,), "value")
    assert [sweep.per_cell(p, "hidden", x) for x in p.cells] == [40, 80]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--lengths", "0"], ["--lengths", ">= 1", "0"]),
        (["--cells", "lstm", "tanh", "irnn"], ["--hidden", "one per cell", "got 2"]),
        (["--clip-mode", "both"], ["--clip-mode", "both"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: copying.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)
