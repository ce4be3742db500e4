"""Tests for jaxrnn/initialisers.py: every initialiser against a property computed in numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import initialisers as inits

F32, F64 = jnp.float32, jnp.float64
N = 16


def test_identity_gain_and_dtype(key):
    for gain, dtype in [(1.0, F32), (0.01, F64), (-2.5, F32)]:
        w = inits.identity(gain)(key, (5, 5), dtype)
        assert w.dtype == dtype
        np.testing.assert_array_equal(w, gain * np.eye(5, dtype=dtype))
    assert inits.identity()(key, (3, 3)).dtype == jnp.float32  # default dtype even with x64 on


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_np_rnn_matches_numpy_recomputation(key, dtype):
    w = inits.np_rnn()(key, (N, N), dtype)
    assert w.dtype == dtype and w.shape == (N, N)
    wn = np.asarray(w, np.float64)
    np.testing.assert_array_equal(wn, wn.T)  # exactly symmetric
    ev = np.linalg.eigvals(wn)
    np.testing.assert_allclose(ev.imag, 0.0, atol=1e-12)
    ev = np.sort(ev.real)
    assert ev[0] > 0.0 and ev[-1] <= 1.0 + 1e-5
    np.testing.assert_allclose(ev[-1], 1.0, atol=1e-5)
    # (B + I) / lambda_max(B + I) with B = R^T R / N, R the same standard normal draw
    r = np.asarray(jax.random.normal(key, (N, N), dtype), np.float64)
    a = r.T @ r / N + np.eye(N)
    expected = a / np.linalg.eigvalsh(a)[-1]
    tol = 1e-5 if dtype == F32 else 1e-12
    np.testing.assert_allclose(wn, expected, atol=tol, rtol=tol)
    # it is not B / lambda_max(B) + I (whose largest eigenvalue is 2)
    assert np.max(np.abs(wn - (a - np.eye(N)) / np.linalg.eigvalsh(a - np.eye(N))[-1] - np.eye(N))) > 0.1


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_sparse_nonzeros_per_unit_and_spectral_radius(key, dtype):
    n_nonzero, rho = 5, 0.95
    w_in = np.asarray(inits.sparse(n_nonzero, rho, per="incoming")(key, (N, N), dtype))
    w_out = np.asarray(inits.sparse(n_nonzero, rho, per="outgoing")(key, (N, N), dtype))
    assert w_in.dtype == w_out.dtype == dtype
    # incoming: each unit j (a column of W_hh in h @ W_hh) has exactly n_nonzero inputs
    np.testing.assert_array_equal(np.count_nonzero(w_in, axis=0), np.full(N, n_nonzero))
    np.testing.assert_array_equal(np.count_nonzero(w_out, axis=1), np.full(N, n_nonzero))
    # the two draws keep the same connections, transposed
    np.testing.assert_array_equal(w_in != 0, (w_out != 0).T)
    for w in (w_in, w_out):
        radius = np.max(np.abs(np.linalg.eigvals(w.astype(np.float64))))
        np.testing.assert_allclose(radius, rho, atol=1e-4)
    # the kept weights are the normal draw, rescaled by one common factor
    k_w, _ = jax.random.split(key)
    raw = np.asarray(jax.random.normal(k_w, (N, N), dtype), np.float64)
    for w in (w_in, w_out):
        ratio = w[w != 0] / raw[w != 0]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5 if dtype == F32 else 1e-12)
        assert ratio[0] > 0


def test_sparse_defaults_are_pascanu(key):
    w = np.asarray(inits.sparse()(key, (20, 20), F64))
    np.testing.assert_array_equal(np.count_nonzero(w, axis=0), np.full(20, 15))
    np.testing.assert_allclose(np.max(np.abs(np.linalg.eigvals(w))), 0.95, atol=1e-10)
    w2 = np.asarray(inits.sparse(3, 1.3, std=7.0)(key, (20, 20), F64))
    np.testing.assert_allclose(np.max(np.abs(np.linalg.eigvals(w2))), 1.3, atol=1e-10)


@pytest.mark.parametrize("std", [0.01, 0.1, 1.0])
def test_normal_std(key, std):
    w = inits.normal(std)(key, (200, 200), F64)
    assert w.dtype == jnp.float64
    assert abs(float(np.std(w)) / std - 1.0) < 0.02
    assert abs(float(np.mean(w))) < 3 * std / 200  # 3 sigma of the mean of 40000 draws
    assert inits.normal()(key, (2, 2)).dtype == jnp.float32
    np.testing.assert_allclose(np.std(inits.normal()(key, (200, 200), F64)), 0.01, rtol=0.02)


def test_uniform_is_symmetric(key):
    w = np.asarray(inits.uniform(0.3)(key, (20000,), F64))
    assert w.min() >= -0.3 and w.max() <= 0.3
    assert w.min() < -0.29 and w.max() > 0.29  # U(-s, s), not jax.nn's U(0, s)
    np.testing.assert_allclose(np.std(w), 0.3 / np.sqrt(3), rtol=0.02)


@pytest.mark.parametrize("hidden", [1, 4, 100])
def test_torch_uniform_bounds(key, hidden):
    bound = 1.0 / np.sqrt(hidden)
    w = np.asarray(inits.torch_uniform(hidden)(key, (20000,), F64))
    assert np.all(np.abs(w) <= bound)
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound
    np.testing.assert_allclose(np.std(w), bound / np.sqrt(3), rtol=0.02)
    assert abs(np.mean(w)) < 4 * bound / np.sqrt(3) / np.sqrt(20000)


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (0, ValueError),
        (-3, ValueError),
        (2.5, TypeError),
        (True, TypeError),
    ],
)
def test_torch_uniform_bad_hidden_size(bad, exc):
    with pytest.raises(exc, match="hidden_size"):
        inits.torch_uniform(bad)


def test_torch_uniform_non_integer_is_rejected():
    with pytest.raises(TypeError):
        inits.torch_uniform(2.5)


@pytest.mark.parametrize("name", ["identity", "np_rnn", "sparse"])
@pytest.mark.parametrize("shape", [(4, 5), (4,), (4, 4, 4)], ids=["4x5", "4", "4x4x4"])
def test_square_initialisers_reject_other_shapes(key, name, shape):
    init = {"identity": inits.identity(), "np_rnn": inits.np_rnn(), "sparse": inits.sparse(2)}[name]
    with pytest.raises(ValueError, match="square"):
        init(key, shape, F32)


def test_sparse_bad_arguments(key):
    with pytest.raises(ValueError, match="per"):
        inits.sparse(per="both")
    with pytest.raises(ValueError, match="n_nonzero"):
        inits.sparse(15)(key, (8, 8), F32)
    with pytest.raises(ValueError, match="n_nonzero"):
        inits.sparse(0)(key, (8, 8), F32)


def test_get_by_name_gives_the_default_initialiser(key):
    shape = (N, N)
    same_as = {
        "glorot_normal": inits.glorot_normal(),
        "glorot_uniform": inits.glorot_uniform(),
        "he_normal": inits.he_normal(),
        "he_uniform": inits.he_uniform(),
        "lecun_normal": inits.lecun_normal(),
        "lecun_uniform": inits.lecun_uniform(),
        "orthogonal": inits.orthogonal(),
        "np_rnn": inits.np_rnn(),
        "sparse": inits.sparse(),
        "smart_tanh": inits.sparse(15, 0.95),
    }
    for name, init in same_as.items():
        np.testing.assert_array_equal(inits.get(name)(key, shape, F32), init(key, shape, F32), err_msg=name)
    np.testing.assert_array_equal(inits.get("identity")(key, shape, F32), np.eye(N, dtype=np.float32))
    np.testing.assert_array_equal(inits.get("zeros")(key, shape, F32), np.zeros(shape, np.float32))
    q = np.asarray(inits.get("orthogonal")(key, shape, F64))
    np.testing.assert_allclose(q.T @ q, np.eye(N), atol=1e-12)
    # half precision: drawn in float32 (no LAPACK QR in bfloat16) and rounded
    half = inits.orthogonal(2.0)(key, shape, jnp.bfloat16)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_array_equal(half, inits.orthogonal(2.0)(key, shape, F32).astype(jnp.bfloat16))


def test_get_callable_and_bad_names():
    def mine(key, shape, dtype=jnp.float32):
        return jnp.ones(shape, dtype)

    assert inits.get(mine) is mine
    with pytest.raises(ValueError, match="init"):
        inits.get("nope")
    with pytest.raises(ValueError, match="elman: kernel_init"):
        inits.get("Orthogonal", "elman: kernel_init")  # names are case-sensitive
    for bad in (3, None, ("orthogonal",)):
        with pytest.raises(ValueError, match="recurrent_init"):
            inits.get(bad, "recurrent_init")
