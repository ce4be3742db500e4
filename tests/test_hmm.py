"""jaxrnn.hmm against brute-force enumeration of every hidden path (T <= 5, K = 3)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn import hmm

K, T, B = 3, 5, 2
F64 = jnp.float64


def _model(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    log_pi = jax.nn.log_softmax(jax.random.normal(k1, (K,), F64))
    log_A = jax.nn.log_softmax(jax.random.normal(k2, (K, K), F64), axis=-1)
    log_obs = jax.random.normal(k3, (T, B, K), F64)
    return log_pi, log_A, log_obs


def _brute(log_pi, log_A, obs, L):
    """All K^L paths of one sequence: (log p(y), filtered (L, K), smoothed (L, K), best path, best log p)."""
    paths = list(itertools.product(range(K), repeat=L))
    joint = np.array(
        [
            log_pi[z[0]] + obs[0, z[0]] + sum(log_A[z[t - 1], z[t]] + obs[t, z[t]] for t in range(1, L))
            for z in paths
        ]
    )
    log_py = np.logaddexp.reduce(joint)
    smoothed = np.zeros((L, K))
    for z, j in zip(paths, joint):
        for t in range(L):
            smoothed[t, z[t]] += np.exp(j - log_py)
    filtered = np.zeros((L, K))
    for t in range(L):  # p(z_t | y_0..y_t): enumerate the prefix
        pref = list(itertools.product(range(K), repeat=t + 1))
        jp = np.array(
            [
                log_pi[z[0]]
                + obs[0, z[0]]
                + sum(log_A[z[s - 1], z[s]] + obs[s, z[s]] for s in range(1, t + 1))
                for z in pref
            ]
        )
        for z, j in zip(pref, jp):
            filtered[t, z[t]] += np.exp(j - np.logaddexp.reduce(jp))
    best = int(np.argmax(joint))
    return log_py, filtered, smoothed, np.array(paths[best]), joint[best]


@pytest.mark.parametrize("parallel", [False, True])
def test_forward_smoother_viterbi_against_enumeration(parallel):
    log_pi, log_A, log_obs = _model()
    lengths = jnp.array([T, 3])
    ll, filt = hmm.forward(log_pi, log_A, log_obs, lengths=lengths, parallel=parallel)
    ll_s, smooth = hmm.smoother(log_pi, log_A, log_obs, lengths=lengths, parallel=parallel)
    path, log_p = hmm.viterbi(log_pi, log_A, log_obs, lengths=lengths)
    for b, L in enumerate(np.asarray(lengths)):
        want = _brute(np.asarray(log_pi), np.asarray(log_A), np.asarray(log_obs[:, b]), int(L))
        np.testing.assert_allclose(ll[b], want[0], rtol=1e-10)
        np.testing.assert_allclose(ll_s[b], want[0], rtol=1e-10)
        np.testing.assert_allclose(filt[:L, b], want[1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(smooth[:L, b], want[2], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(path[:L, b], want[3])
        np.testing.assert_allclose(log_p[b], want[4], rtol=1e-10)
        np.testing.assert_array_equal(path[L:, b], -1)
        np.testing.assert_array_equal(smooth[L:, b], 0.0)


def test_parallel_equals_sequential_values_and_gradients_and_length_zero():
    log_pi, log_A, log_obs = _model(1)
    lengths = jnp.array([4, 0])
    for f in (hmm.forward, hmm.smoother):
        seq = f(log_pi, log_A, log_obs, lengths=lengths)
        par = f(log_pi, log_A, log_obs, lengths=lengths, parallel=True)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), seq, par)
    # gradients of the log-likelihood and the smoothed probabilities, through one program per form
    g = [
        jax.jit(
            jax.grad(
                lambda a, p=p: (
                    jnp.sum(hmm.smoother(log_pi, a, log_obs, lengths=lengths, parallel=p)[1][..., 0])
                    + jnp.sum(hmm.forward(log_pi, a, log_obs, lengths=lengths, parallel=p)[0])
                )
            )
        )(log_A)
        for p in (False, True)
    ]
    np.testing.assert_allclose(g[0], g[1], rtol=1e-9, atol=1e-12)
    ll, filt = hmm.forward(log_pi, log_A, log_obs, lengths=lengths)
    assert float(ll[1]) == 0.0
    np.testing.assert_allclose(filt[:, 1], jnp.broadcast_to(jnp.exp(log_pi), (T, K)), rtol=1e-12)


def test_log_likelihood_gradients_against_finite_differences():
    log_pi, log_A, log_obs = _model(2)

    def ll(log_pi, log_A, log_obs):
        return jnp.sum(hmm.forward(log_pi, log_A, log_obs)[0])

    check_grads(ll, (log_pi, log_A, log_obs), order=1, modes=["rev", "fwd"])


def test_the_forward_cell_under_unroll_equals_forward():
    log_pi, log_A, log_obs = _model(3)
    cell = jr.hmm.forward_cell(K)
    params = {"log_pi": log_pi, "log_A": log_A}
    lengths = jnp.array([T, 2])
    final, ys = jr.unroll(cell, params, log_obs, lengths=lengths)
    ll, filt = hmm.forward(log_pi, log_A, log_obs, lengths=lengths)
    np.testing.assert_allclose(final.log_likelihood, ll, rtol=1e-10)
    valid = (jnp.arange(T)[:, None] < lengths)[..., None]
    np.testing.assert_allclose(ys, jnp.where(valid, filt, 0.0), rtol=1e-10, atol=1e-12)
    assert cell == jr.hmm.forward_cell(K) and cell.init(jax.random.PRNGKey(0), K)["log_A"].shape == (K, K)
    # a reset at step 2 of sequence 0 restarts the filter from the prior on the rest of that sequence
    resets = jnp.zeros((T, B), bool).at[2, 0].set(True)
    _, ys_r = jr.unroll(cell, params, log_obs, resets=resets)
    _, filt_rest = hmm.forward(log_pi, log_A, log_obs[2:, :1])
    np.testing.assert_allclose(ys_r[2:, 0], filt_rest[:, 0], rtol=1e-10, atol=1e-12)
    # learning the chain by gradient ascent on the log-likelihood raises it
    g = jax.grad(lambda p: jnp.sum(jr.unroll(cell, p, log_obs)[0].log_likelihood))(params)
    better = jax.tree.map(lambda p, d: p + 0.1 * d, params, g)
    assert float(jnp.sum(jr.unroll(cell, better, log_obs)[0].log_likelihood)) > float(jnp.sum(ll))


def test_sample_follows_the_chain():
    log_pi = jnp.log(jnp.array([1.0, 0.0, 0.0]) + 1e-30)
    log_A = jnp.log(jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]) + 1e-30)
    z = hmm.sample(log_pi, log_A, jax.random.PRNGKey(0), 6, (2,))
    np.testing.assert_array_equal(z[:, 0], [0, 1, 2, 0, 1, 2])
    assert z.shape == (6, 2) and z.dtype == jnp.int32


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: hmm.forward(jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros((3, 2))), ValueError, "log_pi"),
        (lambda: hmm.forward(jnp.zeros(2), jnp.zeros((2, 3)), jnp.zeros((3, 2))), ValueError, "log_A"),
        (lambda: hmm.forward(jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros((3, 3))), ValueError, "log_obs"),
        (
            lambda: hmm.forward(
                jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros((3, 1, 2)), lengths=jnp.array([4])
            ),
            ValueError,
            "lengths",
        ),
        (
            lambda: hmm.forward(jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros((3, 2)), parallel="yes"),
            TypeError,
            "parallel",
        ),
        (lambda: hmm.viterbi("a", jnp.zeros((2, 2)), jnp.zeros((3, 2))), TypeError, "log_pi"),
        (lambda: hmm.sample(jnp.zeros(2), jnp.zeros((2, 2)), 0, 3), TypeError, "key"),
        (lambda: hmm.sample(jnp.zeros(2), jnp.zeros((2, 2)), jax.random.PRNGKey(0), 0), ValueError, "T"),
        (lambda: hmm.forward_cell(0), ValueError, "num_states"),
        (lambda: hmm.forward_cell(3).init(jax.random.PRNGKey(0), 2), ValueError, "num_states"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
