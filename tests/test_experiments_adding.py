"""experiments/adding.py end to end (smoke preset), and the shared sweep helpers of experiments/sweep.py."""

import contextlib
import io
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import is_png

from experiments import adding, plots, runner, sweep
from experiments.tasks import Batch, adding_arjovsky


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    argv = ["--preset", "smoke", "--cells", "irnn", "np_rnn", "--lengths", "4", "--run-root", root, "--quiet"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = adding.main(argv)
    return result, root, out.getvalue()


def test_smoke_writes_results_plots_and_table(smoke):
    result, root, out = smoke
    assert os.path.dirname(result.sweep_dir) == os.path.join(root, "adding")
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    assert [(r["cell"], r["variant"], r["seed"]) for r in saved["runs"]] == [("irnn", 4, 0), ("np_rnn", 4, 0)]
    for r in saved["runs"]:
        assert r["steps"] == 3 and r["n_test"] == 7 and math.isfinite(r["test_loss"])
        assert r["baseline"] == pytest.approx(1 / 6)
        assert os.path.basename(os.path.dirname(r["run_dir"])) == f"{r['cell']}-T4-seed0"
        for png in ("losses.png", "dynamics.png", "gradient_flow.png"):
            assert is_png(os.path.join(r["run_dir"], png)), png
    assert saved["table"] == sweep.aggregate(saved["runs"], "test_loss")
    assert is_png(os.path.join(result.sweep_dir, "summary.png"))
    assert json.load(open(os.path.join(result.sweep_dir, "config.json")))["config"]["lengths"] == [4]
    table = out.splitlines()
    assert table[0].split()[:3] == ["cell", "T", "test"] and "published" in table[0]
    for r, line in zip(saved["runs"], table[2:4]):
        assert line.split()[:3] == [r["cell"], "4", f"{r['test_loss']:.4g}"]
        assert line.endswith(adding.PUBLISHED[r["cell"]])
        assert f"{r['test_loss'] / (1 / 6):.4g}" in line
    assert table[-1] == f"results: {result.sweep_dir}/results.json"
    # under the table: what the source tags mean, and what the (non-MSE) error is
    assert table[4].startswith("source tags: [SRC] read in the paper") and "[RECALL] recalled" in table[4]
    assert table[5] == f"error (per-step log, losses.png, results.json's test_error): {adding.ERROR_LABEL}"
    assert adding.ERROR_LABEL.startswith("fraction of sequences whose squared error is above 0.04")
    assert saved["error"] == adding.ERROR_LABEL and saved["source_tags"]["[2ND]"] == sweep.SOURCE_TAGS["2ND"]


def test_test_loss_is_the_mse_of_the_final_params(smoke):
    """Reference: the checkpointed params, a plain numpy ReLU recurrence and readout, numpy MSE."""
    result = smoke[0]
    run = result.runs[0]
    _, state, _ = runner.latest_checkpoint(os.path.join(run["run_dir"], "checkpoints"), None)
    p = jax.tree.map(np.asarray, state["params"])
    task = adding_arjovsky(4)
    losses = []
    for b in sweep.sampled_test_set(task, 7, 5):
        xs, y = np.asarray(b.xs, np.float64), np.asarray(b.targets, np.float64)
        h = np.zeros((xs.shape[1], p["cell"]["W_hh"].shape[0]))
        for x in xs:
            h = np.maximum(x @ p["cell"]["W_xh"] + h @ p["cell"]["W_hh"] + p["cell"]["b"], 0.0)
        losses.append(((h @ p["W_out"] + p["b_out"] - y) ** 2).sum(-1))
    assert run["test_loss"] == pytest.approx(np.concatenate(losses).mean(), rel=1e-5)


def test_resume_of_a_finished_sweep_trains_nothing_and_gives_the_same_results(smoke, capsys):
    result = smoke[0]
    again = adding.main(["--resume", result.sweep_dir, "--no-quiet"])
    assert again.sweep_dir == result.sweep_dir
    assert [r["run_dir"] for r in again.runs] == [r["run_dir"] for r in result.runs]
    assert [r["test_loss"] for r in again.runs] == [r["test_loss"] for r in result.runs]
    # not quiet: first what the per-step log's columns and its error are
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("per-step log: loss = ") and "rho = spectral radius of W_hh" in out[0]
    assert out[1] == f"error (per-step log, losses.png, results.json's test_error): {adding.ERROR_LABEL}"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--lengths", "1"], ["--lengths", ">= 2"]),
        (["--cells", "gru"], ["--cells", "gru"]),
        (["--preset", "bogus"], ["--preset", "bogus"]),
        (["--hidden", "3", "4"], ["--hidden", "one value or one per cell", "got 2"]),
        (["--cells", "lstm", "--lr", "0.1", "0.2"], ["--lr", "got 2"]),
        (["--optimizer", "lbfgs"], ["--optimizer", "lbfgs"]),
        (["--cells", "lstm", "lstm"], ["--cells", "at most once", "lstm lstm"]),
        (["--lengths"], ["--lengths", "at least one"]),
        (["--lr", "1e-3", "nan"], ["--lr", "finite number", "'nan'"]),
        (["--momentum", "inf"], ["--momentum", "finite number", "'inf'"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: adding.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)


def test_a_diverged_run_is_recorded_and_the_sweep_exits_3_unless_allowed(tmp_path, capsys):
    """RMSprop with learning rate 1e30: after one update the IRNN's state overflows, the loss is NaN."""
    argv = ["--preset", "smoke", "--cells", "irnn", "--lengths", "4", "--lr", "1e30", "--quiet"]
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: adding.main(argv + ["--run-root", str(tmp_path)]))
    assert e.value.code == 3
    captured = capsys.readouterr()
    (sweep_dir,) = (tmp_path / "adding").iterdir()
    (run,) = json.load(open(sweep_dir / "results.json"))["runs"]  # written before the exit
    assert (run["diverged_at"], run["steps"]) == (2, 2) and math.isnan(run["test_loss"])
    assert "nan (1 diverged)" in captured.out
    last = captured.err.strip().splitlines()[-1]  # (--quiet sends the per-run lines to stderr too)
    assert last.startswith("error: training diverged in 1 of 1 runs: irnn-T4-seed0 at step 2")
    assert str(sweep_dir) in last and "--allow-divergence" in last
    # resumed with --allow-divergence: the run trains on to --steps; a warning, no error
    argv = ["--resume", str(sweep_dir), "--allow-divergence", "--quiet"]
    result = runner.run_cli(lambda: adding.main(argv))
    assert [(r["diverged_at"], r["steps"]) for r in result.runs] == [(2, 3)]
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("warning: training diverged in 1 of 1")


# ------------------------------------------------------------------------------------------------
# sweep helpers


def test_per_cell_values():
    c = adding.Config(cells=("tanh", "lstm"), hidden=(3, 5), lr=(0.1,))
    assert [sweep.per_cell(c, "hidden", x) for x in c.cells] == [3, 5]
    assert [sweep.per_cell(c, "lr", x) for x in c.cells] == [0.1, 0.1]


@pytest.mark.parametrize("mode", ["norm", "value", "off"])
def test_make_optimizer_clipping(mode):
    g = {"a": jnp.array([3.0, -0.5]), "b": jnp.array([4.0])}
    clip = 0.0 if mode == "off" else 1.0
    tx = sweep.make_optimizer("sgd", 0.1, clip, "value" if mode == "value" else "norm")
    updates, _ = tx.update(g, tx.init(g), g)
    flat = np.array([3.0, -0.5, 4.0])
    if mode == "norm":
        expected = -0.1 * flat / np.linalg.norm(flat)
    elif mode == "value":
        expected = -0.1 * np.clip(flat, -1, 1)
    else:
        expected = -0.1 * flat
    np.testing.assert_allclose(np.concatenate([updates["a"], updates["b"]]), expected, rtol=1e-6)


def test_make_optimizer_rmsprop_is_arjovskys():
    g = {"w": jnp.array([0.5, -2.0])}
    tx = sweep.make_optimizer("rmsprop", 1e-3, 0.0)
    updates, _ = tx.update(g, tx.init(g), g)
    r = 0.9 * 1e-3 + 0.1 * np.array([0.5, -2.0]) ** 2
    np.testing.assert_allclose(updates["w"], -1e-3 * np.array([0.5, -2.0]) / np.sqrt(r + 1e-8), rtol=1e-5)


def test_aggregate_and_format_table():
    runs = [
        {"cell": "lstm", "variant": 50, "m": 0.1, "baseline": 0.5},
        {"cell": "lstm", "variant": 50, "m": 0.3, "baseline": 0.5},
        {"cell": "irnn", "variant": 50, "m": math.nan, "baseline": 0.5},
        {"cell": "irnn", "variant": 50, "m": 0.2, "baseline": 0.5},
    ]
    rows = sweep.aggregate(runs, "m")
    assert [(r["cell"], r["n"], r["diverged"]) for r in rows] == [("lstm", 2, 0), ("irnn", 2, 1)]
    assert (rows[0]["mean"], rows[0]["min"], rows[0]["max"]) == pytest.approx((0.2, 0.1, 0.3))
    assert math.isnan(rows[1]["mean"])
    lines = sweep.format_table(rows, "MSE", "T", {"lstm": "solved [RECALL]"}).splitlines()
    assert lines[0].split() == ["cell", "T", "MSE", "seeds", "baseline", "/", "baseline", "published"]
    assert lines[2].split() == ["lstm", "50", "0.2", "[0.1,", "0.3]", "2", "0.5", "0.4", "solved", "[RECALL]"]
    assert "nan" in lines[3] and "(1 diverged)" in lines[3] and lines[3].rstrip().endswith("-")
    assert lines[4:] == ["source tags: [RECALL] recalled, not verified against the paper (not a hard target)"]
    assert len(sweep.format_table(rows, "MSE", "T", {"lstm": "solved"}).splitlines()) == 4  # no tag: no line


def test_source_tag_legend_explains_the_tags_that_occur():
    legend = sweep.source_tag_legend(["97% Le [2ND]", "x [RECALL]; y [SRC]", "-", "[SRC, Arjovsky 2016]"])
    assert legend == "source tags: " + "; ".join(f"[{k}] {v}" for k, v in sweep.SOURCE_TAGS.items())
    assert sweep.source_tag_legend(["Le [2ND]"]) == f"source tags: [2ND] {sweep.SOURCE_TAGS['2ND']}"
    assert sweep.source_tag_legend(["no tag", "[SOURCE]"]) == ""


def _captured_figure(monkeypatch, draw):
    """The matplotlib figure ``draw()`` saves (through ``plots.save_figure``), still open."""
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figs.append(fig) or path)
    draw()
    (fig,) = figs
    return fig


@pytest.mark.parametrize("lengths", [(50,), (50, 100)])
def test_summary_draws_the_baseline_also_for_one_length(monkeypatch, tmp_path, lengths):
    rows = [
        {"cell": c, "variant": t, "mean": m, "min": m, "max": m, "baseline": 1 / 6}
        for t in lengths
        for c, m in (("lstm", 0.01), ("irnn", 0.1))
    ]
    fig = _captured_figure(
        monkeypatch, lambda: sweep.plot_summary(rows, str(tmp_path / "s.png"), "test MSE", "T", log_y=True)
    )
    ax = fig.axes[0]
    (base,) = [line for line in ax.get_lines() if line.get_label() == "baseline"]
    x, y = base.get_xdata(), base.get_ydata()
    assert len(set(x)) == 2 and set(y) == {1 / 6}  # a line (not a single point) at the baseline
    assert "baseline" in [t.get_text() for t in ax.get_legend().get_texts()]
    plots.pyplot().close(fig)


def test_losses_plot_says_what_the_error_is(monkeypatch, tmp_path):
    rows = [{"step": s, "loss": 1.0 / s, "error": 0.5, "eval_error": 0.4} for s in (1, 2)]
    fig = _captured_figure(
        monkeypatch, lambda: plots.plot_losses(rows, str(tmp_path / "l.png"), error_label=adding.ERROR_LABEL)
    )
    label = fig.axes[1].get_ylabel()
    assert label == "error: fraction of sequences whose\nsquared error is above 0.04"  # the note: in the log
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [
        "error (training batch)",
        "eval_error (held-out batch)",
    ]
    plots.pyplot().close(fig)
    assert plots.error_axis_label(None) == "error: fraction of wrong sequences"


def test_test_metrics_weights_chunks_by_size():
    task = adding_arjovsky(4)
    model = sweep.make_model(sweep.CELLS["irnn"](3), task)
    params = model.init(jax.random.PRNGKey(1))
    whole = task.sample_test(jax.random.PRNGKey(2), 7)
    parts = [Batch(whole.xs[:, s], whole.targets[s], whole.lengths[s]) for s in (slice(0, 5), slice(5, 7))]
    a = sweep.test_metrics(model, task, params, [whole])
    b = sweep.test_metrics(model, task, params, parts)
    assert a["n_test"] == b["n_test"] == 7
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-5)
    assert b["test_error"] == pytest.approx(a["test_error"])
    assert b["test_accuracy"] == pytest.approx(1 - b["test_error"])
    sizes = [t.xs.shape[1] for t in sweep.sampled_test_set(task, 12, 5)]
    assert sizes == [5, 5, 2]
