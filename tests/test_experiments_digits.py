"""experiments/digits.py end to end (smoke preset): the full test split, files, table, bad input."""

import json
import os

import numpy as np
import pytest
from helpers import is_png

from experiments import digits, runner
from experiments.tasks import permuted_digits


def test_full_test_split_has_every_test_image_once():
    task = permuted_digits(permute_seed=3)
    batches = digits.full_test_split(task, 100)
    assert [b.xs.shape for b in batches] == [(64, 100, 1)] * 3 + [(64, 59, 1)]
    xs = np.concatenate([np.asarray(b.xs)[..., 0].T for b in batches])
    np.testing.assert_array_equal(xs, task.data.x_test)
    np.testing.assert_array_equal(np.concatenate([b.targets for b in batches]), task.data.y_test)
    assert all((np.asarray(b.lengths) == 64).all() for b in batches)


def test_make_tasks_uses_the_permute_seed():
    c = digits.Config(tasks=("permuted", "sequential"), permute_seed=5)
    (n1, t1), (n2, t2) = digits.make_tasks(c)
    assert (n1, n2) == ("permuted", "sequential")
    np.testing.assert_array_equal(t1.data.permutation, np.random.RandomState(5).permutation(64))
    np.testing.assert_array_equal(t2.data.permutation, np.arange(64))


def test_smoke_run(tmp_path, capsys):
    result = digits.main(["--preset", "smoke", "--run-root", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    for text in ("test accuracy", "irnn", "permuted", "82.0% Le [2ND] (pixel MNIST", "results.json"):
        assert text in out, text
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    (run,) = saved["runs"]
    assert (run["cell"], run["variant"], run["steps"], run["n_test"]) == ("irnn", "permuted", 3, 359)
    assert run["test_accuracy"] == pytest.approx(1 - run["test_error"])
    # accuracy is a fraction of the 359 test images
    assert abs(run["test_accuracy"] * 359 - round(run["test_accuracy"] * 359)) < 1e-6
    assert saved["table"][0]["mean"] == pytest.approx(run["test_accuracy"])
    assert is_png(os.path.join(result.sweep_dir, "summary.png"))
    assert is_png(os.path.join(run["run_dir"], "losses.png"))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--tasks", "mnist"], ["--tasks", "mnist", "sequential, permuted"]),
        (["--permute-seed", "-1"], ["--permute-seed", ">= 0"]),
        (["--cells", "irnn", "--lr", "1", "2"], ["--lr", "got 2"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: digits.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)
