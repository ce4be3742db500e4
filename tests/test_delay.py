"""jaxrnn.cells.delay: delay taps (AR(p)) and NARX under jr.unroll against plain numpy loops written from
the definitions, and fit_delay_taps against numpy's least squares on an independently built design."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.cells import DelayCarry, fit_delay_taps

F64 = jnp.float64
T, BATCH, I = 6, (2, 2), 2
KEY = jax.random.PRNGKey(0)

CELLS = {
    "delay_taps": jr.delay_taps(3),  # O = I
    "narx": jr.narx(2, 4, "tanh", output_size=1),
}


def _params(name):
    cell = CELLS[name]
    params = cell.init(KEY, I, F64)
    # delay_taps initialises to zeros: random values make the comparison mean something
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, F64) for k, x in zip(keys, leaves)])


def _readout(name, params, window):
    """The definitions, in numpy: ``window (order, I)``, newest first."""
    p = {k: np.asarray(v) for k, v in params.items()}
    if name == "delay_taps":
        return p["b"] + sum(window[i] @ p["W"][i] for i in range(len(window)))
    return np.tanh(window.reshape(-1) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def _reference(name, params, xs, lengths, resets):
    """A plain loop over every sequence of the batch: ``(final window, final out, ys)``."""
    order = CELLS[name].hparams["order"]
    n_out = _readout(name, params, np.zeros((order, I))).shape[-1]
    xs = np.asarray(xs)
    ys = np.zeros((T, *BATCH, n_out))
    windows, outs = np.zeros((*BATCH, order, I)), np.zeros((*BATCH, n_out))
    for b in np.ndindex(*BATCH):
        window, out = np.zeros((order, I)), np.zeros(n_out)
        for t in range(int(lengths[b])):  # padding: the carry stands still, y = 0
            if resets[(t, *b)]:
                window, out = np.zeros((order, I)), np.zeros(n_out)
            window = np.concatenate([xs[(t, *b)][None], window[:-1]])
            out = _readout(name, params, window)
            ys[(t, *b)] = out
        windows[b], outs[b] = window, out
    return windows, outs, ys


@functools.cache
def _unroll(name, jit):
    cell = CELLS[name]

    def run(params, xs, lengths, resets):
        return jr.unroll(cell, params, xs, lengths=lengths, resets=resets)

    return jax.jit(run) if jit else run


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("name", list(CELLS))
def test_unroll_matches_the_plain_loop_with_lengths_and_resets(name, jit):
    params = _params(name)
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, *BATCH, I), F64)
    lengths = np.array([[T, 4], [0, 2]])
    resets = np.zeros((T, *BATCH), bool)
    resets[3, 0, 0] = resets[1, 0, 1] = resets[4, 0, 1] = True  # the last one is on padding: no effect
    resets[1, 1, 1] = True
    final, ys = _unroll(name, jit)(params, xs, jnp.asarray(lengths), jnp.asarray(resets))
    windows, outs, want = _reference(name, params, xs, lengths, resets)
    assert isinstance(final, DelayCarry)
    np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.window, windows, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.out, outs, rtol=1e-12, atol=1e-12)


def test_cells_shapes_init_and_values():
    taps = jr.delay_taps(3)
    assert taps == jr.delay_taps(3) and hash(taps) == hash(jr.delay_taps(3, None))
    assert repr(taps) == "delay_taps(order=3)" and repr(jr.narx(2, 4)) == "narx(order=2, hidden_size=4)"
    p = taps.init(KEY, 2)
    assert {k: v.shape for k, v in p.items()} == {"W": (3, 2, 2), "b": (2,)}
    assert all(v.dtype == jnp.float32 and not np.any(np.asarray(v)) for v in p.values())  # zeros
    assert taps.input_size(p) == 2
    assert jax.tree.map(jnp.shape, taps.initial_carry(p, (5,))) == DelayCarry((5, 3, 2), (5, 2))
    n = jr.narx(2, 4, "relu", output_size=3)
    q = n.init(KEY, 5)
    assert {k: v.shape for k, v in q.items()} == {"W1": (10, 4), "b1": (4,), "W2": (4, 3), "b2": (3,)}
    assert n.input_size(q) == 5 and float(jnp.std(q["W1"])) > 0.1
    assert jax.tree.map(jnp.shape, n.initial_carry(q, ())) == DelayCarry((2, 5), (3,))
    # no batch dims, and more taps than steps: the window never fills
    xs = jnp.arange(4.0, dtype=F64).reshape(2, 2)
    p = {"W": jnp.ones((3, 2, 2), F64), "b": jnp.zeros(2, F64)}
    final, ys = jr.unroll(taps, p, xs)
    np.testing.assert_allclose(ys, [[1.0, 1.0], [6.0, 6.0]])
    np.testing.assert_allclose(final.window, [[2.0, 3.0], [0.0, 1.0], [0.0, 0.0]])


def _design(xs, targets, order, lengths, start=0):
    """The rows of the fit, built one valid step at a time: ``(Phi (N, order * I + 1), Y (N, O))``."""
    xs, targets = np.asarray(xs), np.asarray(targets)
    n_in = xs.shape[-1]
    rows, ys = [], []
    for b in np.ndindex(*xs.shape[1:-1]):
        for t in range(start, int(lengths[b])):
            window = [xs[(t - i, *b)] if t >= i else np.zeros(n_in) for i in range(order)]
            rows.append(np.concatenate([*window, [1.0]]))
            ys.append(targets[(t, *b)])
    return np.array(rows), np.array(ys)


FIT = jax.jit(fit_delay_taps, static_argnames=("order", "start", "ridge"))


@pytest.mark.parametrize("ridge", [0.0, 0.7])
def test_fit_matches_numpy_least_squares_and_unroll_gives_its_predictions(ridge):
    order, n_out = 2, 2
    xs = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (8, 3, I), F64))
    targets = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (8, 3, n_out), F64)) + xs @ np.ones((I, 2))
    lengths = np.array([8, 5, 1])
    phi, y = _design(xs, targets, order, lengths)
    if ridge == 0.0:
        theta = np.linalg.lstsq(phi, y, rcond=None)[0]
    else:
        penalty = np.diag([1.0] * (order * I) + [0.0])
        theta = np.linalg.solve(phi.T @ phi + ridge * penalty, phi.T @ y)
    for fit in (fit_delay_taps, FIT):
        params = fit(xs, targets, order=order, lengths=jnp.asarray(lengths), ridge=ridge)
        np.testing.assert_allclose(params["W"], theta[:-1].reshape(order, I, n_out), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(params["b"], theta[-1], rtol=1e-9, atol=1e-10)
    _, ys = jr.unroll(jr.delay_taps(order, n_out), params, xs, lengths=jnp.asarray(lengths))
    fitted = np.concatenate([np.asarray(ys[:L, b]) for b, L in enumerate(lengths)])  # _design's row order
    np.testing.assert_allclose(fitted, phi @ theta, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(ys[np.arange(8)[:, None] >= lengths], 0.0)
    # start = order - 1: conditional least squares, only the windows that lie inside the sequence
    phi, y = _design(xs, targets, order, lengths, start=order - 1)
    theta = np.linalg.lstsq(phi, y, rcond=None)[0]
    params = FIT(xs, targets, order=order, lengths=jnp.asarray(lengths), start=order - 1)
    np.testing.assert_allclose(params["W"], theta[:-1].reshape(order, I, n_out), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(params["b"], theta[-1], rtol=1e-9, atol=1e-10)


def test_fit_recovers_an_ar2_process():
    """``x_t = 0.6 x_{t-1} - 0.3 x_{t-2} + 0.5 + e_t``: two series, one cut short by ``lengths``."""
    rng = np.random.default_rng(0)
    n = 3000
    x = np.zeros((n, 2, 1))
    for t in range(2, n):
        x[t] = 0.6 * x[t - 1] - 0.3 * x[t - 2] + 0.5 + 0.3 * rng.standard_normal((2, 1))
    x[2000:, 1] = np.nan  # past its length: must never reach the fit
    params = fit_delay_taps(x[:-1], x[1:], 2, lengths=jnp.array([n - 1, 1999]))
    np.testing.assert_allclose(params["W"][:, 0, 0], [0.6, -0.3], atol=0.04)
    np.testing.assert_allclose(params["b"], [0.5], atol=0.05)


def test_fit_with_no_valid_step_is_zeros_and_float32_stays_float32():
    ones = jnp.ones((4, 2, 1), jnp.float32)
    params = fit_delay_taps(ones, ones, 2, lengths=jnp.array([0, 0]))
    assert params["W"].dtype == jnp.float32 and params["W"].shape == (2, 1, 1)
    np.testing.assert_array_equal(params["W"], 0.0)
    np.testing.assert_array_equal(params["b"], 0.0)


def test_narx_gradients():
    cell = jr.narx(2, 3, "tanh", output_size=1)
    params = cell.init(KEY, I, F64)
    params = {**params, "b1": 0.1 * jnp.ones(3, F64), "b2": -0.2 * jnp.ones(1, F64)}
    xs = jax.random.normal(jax.random.PRNGKey(5), (4, 2, I), F64)
    lengths = jnp.array([4, 2])

    @jax.jit
    def loss(p):
        return jnp.sum(jr.unroll(cell, p, xs, lengths=lengths)[1] ** 2)

    check_grads(loss, (params,), order=1, modes=["rev"])
