"""jaxrnn.lds against dense conditioning of the joint Gaussian of all states and observations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn import lds

n, m, k, T, B = 2, 2, 1, 5, 2
F64 = jnp.float64


def _model(seed=0, controls=False, dtype=F64):
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    q, _ = jnp.linalg.qr(jax.random.normal(ks[0], (n, n), dtype))
    spd = lambda key, d: (lambda a: a @ a.T / d + 0.2 * jnp.eye(d, dtype=dtype))(  # noqa: E731
        jax.random.normal(key, (d, d), dtype)
    )
    p = {
        "A": 0.9 * q,
        "C": jax.random.normal(ks[1], (m, n), dtype),
        "Q": spd(ks[2], n),
        "R": spd(ks[3], m),
        "mu0": jax.random.normal(ks[4], (n,), dtype),
        "P0": spd(ks[5], n),
    }
    if controls:
        p["B"] = jax.random.normal(ks[6], (n, k), dtype)
        p["D"] = jax.random.normal(ks[7], (m, k), dtype)
    return p


def _joint(p, us, L):
    """Means and covariance of (x_0..x_{L-1}, y_0..y_{L-1}) built from the model's definition."""
    A, C, Q, R = (np.asarray(p[x]) for x in "ACQR")
    Bm = np.asarray(p.get("B", np.zeros((n, 1))))
    Dm = np.asarray(p.get("D", np.zeros((m, 1))))
    u = np.zeros((L, Bm.shape[1])) if us is None else np.asarray(us)
    mx, Px = [np.asarray(p["mu0"])], [np.asarray(p["P0"])]
    for t in range(1, L):
        mx.append(A @ mx[-1] + Bm @ u[t - 1])
        Px.append(A @ Px[-1] @ A.T + Q)
    cxx = np.zeros((L * n, L * n))
    for s in range(L):
        for t in range(s, L):
            c = np.linalg.matrix_power(A, t - s) @ Px[s]  # Cov(x_t, x_s)
            cxx[t * n : (t + 1) * n, s * n : (s + 1) * n] = c
            cxx[s * n : (s + 1) * n, t * n : (t + 1) * n] = c.T
    Cbig = np.kron(np.eye(L), C)
    cyy = Cbig @ cxx @ Cbig.T + np.kron(np.eye(L), R)
    cxy = cxx @ Cbig.T
    my = np.concatenate([C @ mx[t] + Dm @ u[t] for t in range(L)])
    return np.concatenate(mx), my, cxx, cxy, cyy


def _condition(mx, my, cxx, cxy, cyy, y, upto):
    """x | y_0..y_{upto-1}: (means (L, n), covs (L, n, n)) and log N(y_<upto)."""
    sel = slice(0, upto * m)
    Syy = cyy[sel, sel]
    gain = cxy[:, sel] @ np.linalg.inv(Syy)
    mean = mx + gain @ (y[sel] - my[sel])
    cov = cxx - gain @ cxy[:, sel].T
    e = y[sel] - my[sel]
    ll = -0.5 * (e @ np.linalg.solve(Syy, e) + np.linalg.slogdet(2 * np.pi * Syy)[1])
    L = len(mx) // n
    return mean.reshape(L, n), np.stack([cov[t * n : (t + 1) * n, t * n : (t + 1) * n] for t in range(L)]), ll


def _reference(p, ys, us, L):
    """Filtered and smoothed beliefs of one sequence by dense conditioning."""
    joint = _joint(p, us, L)
    y = np.asarray(ys[:L]).reshape(-1)
    filt_m, filt_P = [], []
    for t in range(L):
        mean, cov, _ = _condition(*joint, y, t + 1)
        filt_m.append(mean[t])
        filt_P.append(cov[t])
    sm, sP, ll = _condition(*joint, y, L)
    return ll, np.stack(filt_m), np.stack(filt_P), sm, sP


@pytest.mark.parametrize("parallel", [False, True])
def test_filter_and_smoother_against_dense_conditioning(parallel):
    """With controls and lengths (tests below hold the no-control path to this one)."""
    p = _model(0, controls=True)
    us = jax.random.normal(jax.random.PRNGKey(2), (T, B, k), F64)
    _, ys = lds.sample(p, jax.random.PRNGKey(1), T, (B,), us=us)
    lengths = jnp.array([T, 3])
    ll_f, mf, Pf = lds.kalman_filter(p, ys, us, lengths=lengths, parallel=parallel)
    ll_s, ms, Ps = lds.rts_smoother(p, ys, us, lengths=lengths, parallel=parallel)
    assert mf.shape == (T, B, n) and Pf.shape == (T, B, n, n) and ll_f.shape == (B,)
    for b, L in enumerate(np.asarray(lengths)):
        want = _reference(p, ys[:, b], None if us is None else us[:, b], int(L))
        np.testing.assert_allclose(ll_f[b], want[0], rtol=1e-9)
        np.testing.assert_allclose(ll_s[b], want[0], rtol=1e-9)
        np.testing.assert_allclose(mf[:L, b], want[1], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(Pf[:L, b], want[2], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ms[:L, b], want[3], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(Ps[:L, b], want[4], rtol=1e-8, atol=1e-10)
        # past the length: the filter holds its last belief, the smoother gives zeros
        np.testing.assert_allclose(mf[L:, b], jnp.broadcast_to(mf[L - 1, b], (T - L, n)))
        np.testing.assert_array_equal(ms[L:, b], 0.0)


def test_parallel_equals_sequential_with_length_zero_and_batch_dims():
    p = _model(3)
    _, ys = lds.sample(p, jax.random.PRNGKey(4), T, (2, 2))
    lengths = jnp.array([[T, 0], [1, 4]])
    for f in (lds.kalman_filter, lds.rts_smoother):
        seq = f(p, ys, lengths=lengths)
        par = f(p, ys, lengths=lengths, parallel=True)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10), seq, par)
    g = [
        jax.jit(  # compiled: not dispatched op by op
            jax.grad(
                lambda A, pl=pl: jnp.sum(lds.kalman_filter(p | {"A": A}, ys, lengths=lengths, parallel=pl)[0])
            )
        )(p["A"])
        for pl in (False, True)
    ]
    np.testing.assert_allclose(g[0], g[1], rtol=1e-8, atol=1e-10)
    ll, mf, Pf = lds.kalman_filter(p, ys, lengths=lengths)
    assert float(ll[0, 1]) == 0.0  # length 0: no evidence, the prior as the belief
    np.testing.assert_allclose(mf[:, 0, 1], jnp.broadcast_to(p["mu0"], (T, n)))
    np.testing.assert_allclose(Pf[:, 0, 1], jnp.broadcast_to(p["P0"], (T, n, n)))


@pytest.mark.parametrize("parallel", [False, True])
def test_log_likelihood_gradients_against_finite_differences(parallel):
    p = _model(5, controls=True)
    _, ys = lds.sample(p, jax.random.PRNGKey(6), 4, (), us=jnp.ones((4, k), F64))
    us = jnp.ones((4, k), F64)

    def f(A, C, Q, B):  # the log-likelihood and the smoothed moments, through one compiled program
        ll, ms, Ps = lds.rts_smoother(p | {"A": A, "C": C, "Q": Q, "B": B}, ys, us, parallel=parallel)
        return ll + jnp.sum(ms) + jnp.sum(Ps)

    check_grads(jax.jit(f), (p["A"], p["C"], p["Q"], p["B"]), order=1, modes=["rev"])


def test_float32_is_stable_over_ten_thousand_steps():
    p64 = _model(7)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p64)
    _, ys = lds.sample(p64, jax.random.PRNGKey(8), 10_000)
    ll64, m64, P64 = lds.kalman_filter(p64, ys)
    for parallel in (False, True):
        ll32, m32, P32 = lds.kalman_filter(p32, ys.astype(jnp.float32), parallel=parallel)
        assert m32.dtype == jnp.float32
        np.testing.assert_allclose(m32, m64, atol=2e-3)
        np.testing.assert_allclose(P32, P64, atol=2e-4)
        np.testing.assert_allclose(ll32, ll64, rtol=1e-4)
        assert np.all(np.linalg.eigvalsh(np.asarray(P32, np.float64)) > 0)
        np.testing.assert_array_equal(P32, np.swapaxes(P32, -1, -2))


def test_the_kalman_cell_under_unroll_equals_the_filter_with_lengths_and_resets():
    p = _model(9, controls=True)
    us = jax.random.normal(jax.random.PRNGKey(10), (T, B, k), F64)
    _, ys = lds.sample(p, jax.random.PRNGKey(11), T, (B,), us=us)
    cell = lds.kalman_cell(n, control_size=k)
    lengths = jnp.array([T, 3])
    xs = jnp.concatenate([ys, us], axis=-1)
    final, out = jax.jit(lambda p, xs, L: jr.unroll(cell, p, xs, lengths=L))(p, xs, lengths)
    ll, mf, Pf = lds.kalman_filter(p, ys, us, lengths=lengths)
    np.testing.assert_allclose(final.log_likelihood, ll, rtol=1e-10)
    valid = (jnp.arange(T)[:, None] < lengths)[..., None]
    np.testing.assert_allclose(out, jnp.where(valid, mf, 0.0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final.cov, Pf[-1], rtol=1e-10)
    # a reset at step 2 of sequence 0 restarts the filter from the prior on the rest of the sequence
    resets = jnp.zeros((T, B), bool).at[2, 0].set(True)
    _, out_r = jr.unroll(cell, p, xs, resets=resets)
    _, mf_rest, _ = lds.kalman_filter(p, ys[2:, :1], us[2:, :1])
    np.testing.assert_allclose(out_r[2:, 0], mf_rest[:, 0], rtol=1e-10, atol=1e-12)
    assert cell == lds.kalman_cell(n, 1) and set(cell.init(jax.random.PRNGKey(0), m + k)) == set(p)


def test_maximum_likelihood_learning_with_optax_recovers_the_noise_levels():
    """A local-level model (random walk + noise): fit log-variances by Adam on -log-likelihood."""
    truth = {"A": jnp.eye(1), "C": jnp.eye(1), "Q": 0.5 * jnp.eye(1), "R": 2.0 * jnp.eye(1)}
    truth |= {"mu0": jnp.zeros(1), "P0": jnp.eye(1)}
    _, ys = lds.sample(truth, jax.random.PRNGKey(12), 200, (8,))

    def model(theta):
        return truth | {"Q": jnp.exp(theta[0]) * jnp.eye(1), "R": jnp.exp(theta[1]) * jnp.eye(1)}

    loss = jax.jit(jax.value_and_grad(lambda th: -jnp.mean(lds.kalman_filter(model(th), ys)[0])))
    theta, opt = jnp.zeros(2), optax.adam(0.1)
    state = opt.init(theta)
    for _ in range(150):
        _, g = loss(theta)
        updates, state = opt.update(g, state)
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_allclose(jnp.exp(theta), [0.5, 2.0], rtol=0.3)
    assert float(loss(theta)[0]) < float(loss(jnp.zeros(2))[0])


def test_sample_matches_the_model_moments():
    p = _model(13)
    xs, ys = lds.sample(p, jax.random.PRNGKey(14), 3, (20_000,))
    assert xs.shape == (3, 20_000, n) and ys.shape == (3, 20_000, m)
    mx, _, cxx, _, _ = _joint(p, None, 3)
    np.testing.assert_allclose(jnp.mean(xs[1], 0), mx[n : 2 * n], atol=0.05)
    np.testing.assert_allclose(np.cov(np.asarray(xs[1]).T), cxx[n : 2 * n, n : 2 * n], rtol=0.06, atol=0.03)
