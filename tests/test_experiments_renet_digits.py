"""experiments/renet_digits.py end to end (smoke preset): files and table; every parameter count recounted
and every test accuracy recomputed from the saved checkpoint by a plain forward pass on the test split;
bad input."""

import contextlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import is_png

import jaxrnn as jr
from experiments import renet_digits, runner
from experiments.tasks import load_digits_split


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = renet_digits.main(["--preset", "smoke", "--run-root", root, "--quiet"])
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    return result, saved, out.getvalue()


def test_smoke_writes_results_runs_figures_and_table(smoke):
    result, saved, out = smoke
    assert [(r["model"], r["seed"], r["steps"], r["n_test"]) for r in saved["runs"]] == [
        ("renet", 0, 3, 359),
        ("mlp", 0, 3, 359),
    ]
    for name in ("summary.png", "features.png"):
        assert is_png(os.path.join(result.sweep_dir, name)), name
    features = saved["features"]
    assert len(features["channels"]) == 2 and features["map_shape"] == [4, 4, 6]  # 4x4 x 2H, H = 3
    assert len(set(features["labels"])) == 2  # two different digits
    for r in saved["runs"]:
        assert os.path.basename(os.path.dirname(r["run_dir"])) == f"{r['model']}-seed0"
        rows = runner.read_jsonl(os.path.join(r["run_dir"], "metrics.jsonl"))
        assert [row["step"] for row in rows] == [3]
        assert r["test_correct"] == rows[-1]["eval_correct"] and r["test_accuracy"] == r["test_correct"] / 359
        assert os.listdir(os.path.join(r["run_dir"], "checkpoints")) == ["step_00000003.ckpt"]
    assert saved["table"] == json.loads(json.dumps(result.table))
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[header].split("  ")[0] == "model" and "test accuracy" in lines[header]
    body = lines[header + 2 : header + 4]
    for row, run, line in zip(result.table, saved["runs"], body):
        cols = [c for c in line.split("  ") if c]
        assert cols[0].strip() == run["label"] and row["model"] == run["model"]
        assert [c.strip() for c in cols[1:]] == [
            f"{run['params']:,}",
            f"{run['test_accuracy']:.4f}",
            f"{run['test_accuracy']:.4f}",
            f"{run['test_accuracy']:.4f}",
            "1",
        ]
    assert lines[header + 4] == renet_digits.TABLE_NOTE
    assert lines[-1] == f"results: {result.sweep_dir}/results.json"


def _saved_params(run_dir):
    ckpt = os.path.join(run_dir, "checkpoints")
    (name,) = os.listdir(ckpt)
    step, state, _ = runner.load_checkpoint(os.path.join(ckpt, name))
    assert step == 3
    return state["params"]


def _count(tree):
    """Every number in the nested dicts of numpy arrays a checkpoint holds."""
    return sum(v.size for v in jax.tree.leaves(tree))


def test_param_counts_and_test_accuracy_recomputed_from_the_saved_params(smoke):
    result, saved, _ = smoke
    config = saved["config"]
    d = load_digits_split()  # the fixed split of experiments.digits
    x = jnp.asarray(d.x_test.reshape(-1, 8, 8, 1), jnp.float32)
    y = d.y_test
    assert len(y) == 359
    counts = {}
    for r in saved["runs"]:
        p = _saved_params(r["run_dir"])
        counts[r["model"]] = _count(p)
        assert counts[r["model"]] == r["params"] == saved["params"][r["model"]], r["model"]
        H = r["hidden"]
        if r["model"] == "renet":
            layer = jr.renet(jr.gru(H), (2, 2))
            feats = np.asarray(jax.jit(layer.apply)(p["layer1"], x))  # (359, 4, 4, 2H); one compile
            assert feats.shape == (359, 4, 4, 2 * H) and set(p) == {"layer1", "W_out", "b_out"}
            logits = feats.reshape(359, -1) @ p["W_out"] + p["b_out"]
        else:
            pixels = d.x_test  # (359, 64), row-major
            logits = np.maximum(pixels @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
            assert r["params"] == 64 * H + H + H * 10 + 10
        correct = int((np.argmax(logits, -1) == y).sum())
        assert correct == r["test_correct"] and r["test_accuracy"] == correct / 359, r["model"]
    # the MLP is matched to the ReNet's size (within 10%)
    assert config["mlp_hidden"] == 0 and abs(counts["mlp"] / counts["renet"] - 1) < 0.1, counts
    for row in saved["table"]:
        assert row["params"] == counts[row["model"]] and row["n"] == 1


def test_row_rnn_reads_8_rows_and_is_matched_in_size():
    """Shapes only (no compile): the row-by-row GRU's parameter count, its match to the ReNet's, its
    logits' shape; the smoke run above trains the ReNet and the MLP (the row RNN is in the quick preset)."""
    config = renet_digits.Config(hidden=3)
    models, sizes, counts = renet_digits.make_models(config)
    H = sizes["row_rnn"]
    p = jax.eval_shape(models["row_rnn"].init, jax.random.PRNGKey(0))
    assert p["cell"]["W_xh"].shape == (8, 3 * H)  # one step = one row of 8 pixels
    assert (
        counts["row_rnn"] == sum(v.size for v in jax.tree.leaves(p)) == 3 * H * (8 + H + 1) + H + 10 * H + 10
    )
    assert abs(counts["row_rnn"] / counts["renet"] - 1) < 0.1
    for h in (H - 1, H + 1):  # the nearest count of any width
        other = renet_digits._count(renet_digits.row_rnn_model("gru", h))
        assert abs(other - counts["renet"]) >= abs(counts["row_rnn"] - counts["renet"])
    logits = jax.eval_shape(models["row_rnn"].logits, p, jax.ShapeDtypeStruct((5, 8, 8, 1), jnp.float32))
    assert logits.shape == (5, 10)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--models", "cnn"], ["--models", "cnn", "renet, row_rnn, mlp"]),
        (["--models", "mlp", "mlp"], ["--models", "at most once"]),
        (["--patch", "3"], ["--patch", "1, 2, 4, 8"]),
        (["--lr", "nan"], ["--lr", "finite number"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: renet_digits.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)
