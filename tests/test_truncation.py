"""Truncation schedules and the truncate transform, against hand-built truncated graphs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import truncation as tr

F64 = jnp.float64
T, B, I, H = 7, 2, 3, 4


def _setup(cell):
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    params = jax.tree.map(lambda a: a.astype(F64), cell.init(k1, I))
    params = jax.tree.map(lambda a: a + 0.3, params)  # non-zero biases
    xs = jax.random.normal(k2, (T, B, I), F64)
    return params, xs


def _loss(ys):
    return jnp.sum(jnp.sin(ys) ** 2)


def _hand_truncated_loss(cell, params, xs, cuts, lengths=None):
    """A plain Python loop with stop_gradient at the cuts: the graph TBPTT back-propagates through."""
    s = cell.initial_carry(params, (B,))
    total = 0.0
    for t in range(T):
        if cuts[t]:
            s = jax.tree.map(jax.lax.stop_gradient, s)
        new = cell.step(params, s, xs[t])
        valid = jnp.ones((B,), bool) if lengths is None else t < lengths
        s = jax.tree.map(lambda n, o, v=valid: jnp.where(v[:, None], n, o), new, s)
        total = total + _loss(jnp.where(valid[:, None], cell.output(new), 0.0))
    return total


def _truncated_loss(cell, params, xs, cuts, lengths=None):
    return _loss(jr.unroll(tr.truncate(cell, cuts), params, xs, lengths=lengths)[1])


CELLS = {"elman": jr.elman(H), "lstm": jr.lstm(H), "gru": jr.gru(H)}
SCHEDULES = {
    "none": np.zeros(T, bool),
    "every2": np.asarray(tr.every(2, T)),
    "every3_offset1": np.asarray(tr.every(3, T, offset=1)),
    "random": np.asarray(tr.random_lengths(jax.random.PRNGKey(1), T, 1, 3)),
}
grad_truncated = jax.jit(jax.grad(_truncated_loss, argnums=(1, 2)), static_argnums=0)


@pytest.mark.parametrize("cell_name", list(CELLS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_gradients_equal_a_hand_built_truncated_graph(cell_name, schedule):
    cell, cuts = CELLS[cell_name], SCHEDULES[schedule]
    params, xs = _setup(cell)
    lengths = jnp.array([T, 4])
    want = jax.grad(_hand_truncated_loss, argnums=(1, 2))(cell, params, xs, cuts, lengths)
    got = grad_truncated(cell, params, xs, jnp.asarray(cuts), lengths)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), got, want)
    # values are untouched by the cuts
    np.testing.assert_allclose(
        _truncated_loss(cell, params, xs, jnp.asarray(cuts), lengths),
        _loss(jr.unroll(cell, params, xs, lengths=lengths)[1]),
        rtol=1e-12,
    )


def test_no_cuts_is_full_bptt():
    cell = CELLS["lstm"]
    params, xs = _setup(cell)
    full = jax.grad(lambda p: _loss(jr.unroll(cell, p, xs)[1]))(params)
    got = jax.grad(lambda p: _truncated_loss(cell, p, xs, tr.no_cuts(T)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), got, full)


def test_a_final_loss_sees_only_the_last_window():
    cell = CELLS["elman"]
    params, xs = _setup(cell)

    def final_loss(xs):
        final, _ = jr.unroll(tr.truncate(cell, tr.every(3, T)), params, xs)
        return jnp.sum(cell.output(final.inner))

    g = jax.grad(final_loss)(xs)
    assert np.all(g[:6] == 0.0)  # cuts at 3 and 6: only step 6 reaches the loss
    assert np.all(np.abs(g[6]) > 0)


def test_resets_restart_the_schedule():
    cell = CELLS["elman"]
    params, xs = _setup(cell)
    resets = jnp.zeros((T, B), bool).at[3, 1].set(True)
    final, _ = jr.unroll(tr.truncate(cell, tr.every(2, T)), params, xs, resets=resets)
    np.testing.assert_array_equal(final.t, [T, T - 3])


def test_schedules():
    np.testing.assert_array_equal(tr.every(3, 8), [0, 0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(tr.every(3, 8, offset=1), [0, 1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(tr.every(10, 4), [0, 0, 0, 0])
    np.testing.assert_array_equal(tr.no_cuts(3), [0, 0, 0])
    for seed in range(5):
        cuts = np.asarray(
            jax.jit(tr.random_lengths, static_argnums=(1, 2, 3))(jax.random.PRNGKey(seed), 50, 3, 6)
        )
        starts = np.concatenate([[0], np.flatnonzero(cuts)])
        gaps = np.diff(starts)
        assert not cuts[0] and np.all((gaps >= 3) & (gaps <= 6)), gaps


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: tr.every(0, 5), ValueError, "k"),
        (lambda: tr.every(2.5, 5), TypeError, "k"),
        (lambda: tr.every(2, 0), ValueError, "length"),
        (lambda: tr.random_lengths(jax.random.PRNGKey(0), 5, 3, 2), ValueError, "k_max"),
        (lambda: tr.random_lengths(jax.random.PRNGKey(0), 5, 0, 2), ValueError, "k_min"),
        (lambda: tr.truncate(jr.elman(2), jnp.zeros((4,), jnp.int32)), ValueError, "cuts"),
        (lambda: tr.truncate(jr.elman(2), jnp.zeros((4, 2), bool)), ValueError, "cuts"),
        (lambda: tr.truncate(jr.elman, tr.every(2, 4)), TypeError, "cell"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
