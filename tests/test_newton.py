"""jaxrnn.newton: Newton's method parallel in time (DEER, quasi-DEER) against the sequential scan (values
and derivatives) and against the iteration written out in numpy; convergence, the fallback, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.newton import NewtonInfo, parallel_newton

F64 = jnp.float64
T, I, H = 7, 2, 3
LENGTHS = np.array([7, 4, 0])
RESETS = np.zeros((T, 3), bool)
RESETS[2, 0] = RESETS[5, 0] = RESETS[1, 1] = RESETS[3, 1] = RESETS[4, 2] = True

CELLS = {
    "lstm": jr.lstm(H),
    "gru": jr.gru(H),
    "lru": jr.lru(H),
    "learned_gru": jr.learned_initial_state(jr.gru(H)),
}
CASES = [  # (cell, jacobian, lengths and resets, reverse)
    ("lstm", "full", False, False),
    ("gru", "diagonal", True, True),
    ("lru", "full", True, False),
    ("learned_gru", "full", True, True),
]


def _setup(cell, seed=0):
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: a + jnp.asarray(0.2 * rng.normal(size=a.shape), F64), cell.init(
        jax.random.PRNGKey(seed), I, F64))  # fmt: skip
    xs = jnp.asarray(rng.normal(size=(T, 3, I)), F64)
    carry = jax.tree.map(lambda c: c + 0.3, cell.initial_carry(params, (3,)))
    return params, xs, carry


def _loss(final, ys):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(f**2) for f in jax.tree.leaves(final))


@functools.partial(jax.jit, static_argnames=("cell", "jacobian", "reverse"))
def _both(cell, params, xs, carry, lengths, resets, jacobian, reverse):
    """Values and gradients (params, xs, carry) of Newton's solve and of the sequential scan."""

    def newton(p, x, c):
        final, ys, info = parallel_newton(
            cell, p, x, c, lengths=lengths, resets=resets, reverse=reverse, jacobian=jacobian, max_iters=T
        )
        return _loss(final, ys), (final, ys, info)

    def sequential(p, x, c):
        final, ys = jr.unroll(cell, p, x, c, lengths=lengths, resets=resets, reverse=reverse, fused=False)
        return _loss(final, ys), (final, ys)

    return [
        jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)
        for f in (newton, sequential)
    ]


@pytest.mark.parametrize("name, jacobian, masked, reverse", CASES)
def test_equals_the_sequential_scan_in_values_and_gradients(name, jacobian, masked, reverse):
    cell = CELLS[name]
    params, xs, carry = _setup(cell)
    lengths, resets = (jnp.asarray(LENGTHS), jnp.asarray(RESETS)) if masked else (None, None)
    ((v, (final, ys, info)), g), ((v0, (final0, ys0)), g0) = _both(
        cell, params, xs, carry, lengths, resets, jacobian, reverse
    )
    assert bool(info.converged) and 1 <= int(info.iterations) <= T
    tol = dict(rtol=1e-9, atol=1e-10)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, **tol), (v, final, ys, g), (v0, final0, ys0, g0)
    )
    if masked:  # padding gives y = 0 as in unroll
        assert not np.any(np.asarray(ys)[4:, 1]) and not np.any(np.asarray(ys)[:, 2])


def test_forward_and_reverse_derivatives_against_finite_differences():
    cell = jr.elman(H)
    params, xs, carry = _setup(cell, seed=1)
    lengths, resets = jnp.asarray(LENGTHS), jnp.asarray(RESETS)

    @jax.jit
    def f(p, x, c):
        final, ys, _ = parallel_newton(cell, p, x, c, lengths=lengths, resets=resets, reverse=True)
        return _loss(final, ys)

    check_grads(f, (params, xs, carry), order=1, modes=("fwd", "rev"))


def _numpy_newton(W_xh, W_hh, b, xs, s0, iterations):
    """The iteration of the module docstring for an Elman cell (tanh) on one sequence, in numpy."""
    S = np.repeat(s0[None], len(xs), axis=0)
    for _ in range(iterations):
        prev = np.concatenate([s0[None], S[:-1]])
        new, s = [], s0
        for t in range(len(xs)):
            a = xs[t] @ W_xh + b + prev[t] @ W_hh
            f = np.tanh(a)
            J = (1 - f**2)[:, None] * W_hh.T  # df/ds: J[i, j] = (1 - f_i^2) W_hh[j, i]
            s = J @ s + (f - J @ prev[t])
            new.append(s)
        new = np.stack(new)
        err, S = np.max(np.abs(new - S)), new
    return S, err


def test_iterates_equal_the_newton_iteration_written_out():
    cell = jr.elman(H)
    params, xs, carry = _setup(cell, seed=2)
    p = {k: np.asarray(v) for k, v in params.items()}
    for k in (1, 2, 3):
        _, ys, info = parallel_newton(
            cell, params, xs[:, 0], carry[0], max_iters=k, fallback=False, tol=1e-300
        )
        S, err = _numpy_newton(p["W_xh"], p["W_hh"], p["b"], np.asarray(xs[:, 0]), np.asarray(carry[0]), k)
        np.testing.assert_allclose(ys, S, rtol=1e-12, atol=1e-13)
        assert int(info.iterations) == k
        np.testing.assert_allclose(float(info.error), err, rtol=1e-9)
        assert bool(info.converged) == (k >= T)  # iteration k makes the first k states exact


def test_convergence_fallback_and_chaos():
    """A contracting Elman RNN converges in a few iterations; a chaotic one (recurrent gain 4) does not
    within 3, and the fallback returns the sequential scan's states all the same."""
    cell = jr.elman(8)
    params = cell.init(jax.random.PRNGKey(0), I, F64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (40, I), F64)
    sequential = jr.unroll(cell, params, xs, fused=False)[1]
    run = jax.jit(parallel_newton, static_argnums=0, static_argnames=("max_iters", "fallback"))
    calm = {**params, "W_hh": 0.3 * params["W_hh"]}
    _, ys, info = run(cell, calm, xs)
    assert bool(info.converged) and int(info.iterations) <= 8
    np.testing.assert_allclose(ys, jr.unroll(cell, calm, xs, fused=False)[1], rtol=1e-10, atol=1e-12)
    wild = {**params, "W_hh": 4.0 * params["W_hh"]}
    assert float(jr.lyapunov_spectrum(cell, wild, xs, k=1)[0]) > 0  # chaotic
    _, ys_fb, info = run(cell, wild, xs, max_iters=3)
    _, ys_raw, info_raw = run(cell, wild, xs, max_iters=3, fallback=False)
    assert not bool(info.converged) and int(info.iterations) == 3
    np.testing.assert_allclose(ys_fb, jr.unroll(cell, wild, xs, fused=False)[1], rtol=1e-10, atol=1e-12)
    assert float(jnp.max(jnp.abs(ys_raw - ys_fb))) > 1e-3  # the third iterate is far from the solution
    np.testing.assert_allclose(ys_raw[:3], ys_fb[:3], rtol=1e-10, atol=1e-12)  # but its first 3 are exact
    assert isinstance(info, NewtonInfo) and sequential.shape == ys.shape


def test_unroll_method_and_refusals():
    cell = jr.gru(H)
    params, xs, carry = _setup(cell, seed=3)
    got = jr.unroll(cell, params, xs, carry, method="parallel_newton", time_axis=0)
    want = jr.unroll(cell, params, xs, carry)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10), got, want)
    with pytest.raises(ValueError, match="unroll: method must be 'sequential' or 'parallel_newton'"):
        jr.unroll(cell, params, xs, method="newton")
    with pytest.raises(ValueError, match="method='parallel_newton' cannot take probes, remat"):
        jr.unroll(cell, params, xs, method="parallel_newton", remat=True, probes=jnp.zeros((T, 3, H), F64))
    with pytest.raises(ValueError, match="parallel_newton: cell truncate.* reads the step index or cuts"):
        jr.parallel_newton(jr.truncate(cell, jr.truncation.every(2, T)), params, xs)
