"""The demo script runs end to end (tiny setting) and its task generator is what it says."""

import jax
import numpy as np

from experiments import demo


def test_adding_batch_targets_are_the_sum_of_the_two_marked_values():
    xs, y = demo.adding_batch(jax.random.PRNGKey(3), batch=16, length=10)
    xs, y = np.asarray(xs), np.asarray(y)
    assert xs.shape == (10, 16, 2) and y.shape == (16,)
    markers = xs[..., 1]
    np.testing.assert_array_equal(markers.sum(0), 2.0)
    np.testing.assert_array_equal(markers[:5].sum(0), 1.0)  # one marker in each half
    np.testing.assert_allclose(y, (xs[..., 0] * markers).sum(0), rtol=1e-6)


def test_demo_runs(capsys):
    demo.main(["--steps", "4", "--length", "6", "--batch", "4", "--hidden", "4"])
    out = capsys.readouterr().out
    assert "lstm" in out and "tanh rnn" in out and "held-out MSE" in out
