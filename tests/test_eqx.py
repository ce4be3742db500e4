"""jaxrnn.eqx.RNN over one sequence (T, F), vmapped for a batch; values and gradients equal unroll's."""

import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.eqx import RNN

B, T, F, H = 2, 5, 3, 4
XS = jax.random.normal(jax.random.PRNGKey(1), (B, T, F), jnp.float32)
LENGTHS = jnp.array([5, 2])


def test_values_gradients_serialisation_and_no_recompile():
    rnn = RNN(jr.gru(H), F, key=jax.random.PRNGKey(0))
    ys = jax.vmap(lambda x, n: rnn(x, length=n))(XS, LENGTHS)
    want = jr.unroll(jr.gru(H), rnn.params, XS, lengths=LENGTHS, time_axis=1)[1]
    np.testing.assert_allclose(ys, want, rtol=1e-6)

    @eqx.filter_jit
    def loss_grad(m):
        return eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(XS) ** 2))(m)

    g = loss_grad(rnn).params
    g_ref = jax.grad(lambda p: jnp.sum(jr.unroll(jr.gru(H), p, XS, time_axis=1)[1] ** 2))(rnn.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, g_ref)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, rnn)
    buf.seek(0)
    like = RNN(jr.gru(H), F, key=jax.random.PRNGKey(5))
    restored = eqx.tree_deserialise_leaves(buf, like)
    np.testing.assert_array_equal(restored(XS[0]), rnn(XS[0]))
    n = loss_grad._cached._cache_size() if hasattr(loss_grad, "_cached") else None
    loss_grad(restored)  # an equal cell and same shapes: the compiled function is reused
    if n is not None:
        assert loss_grad._cached._cache_size() == n


def test_carry_dropout_and_bad_input():
    rnn = RNN(jr.lstm(H), F, key=jax.random.PRNGKey(0), recurrent_dropout=0.3)
    final, ys = rnn(XS[0], return_carry=True)
    want = jr.unroll(jr.lstm(H), rnn.params, XS[0][:, None])
    np.testing.assert_allclose(ys, want[1][:, 0], rtol=1e-6)
    np.testing.assert_allclose(final.h, want[0].h[0], rtol=1e-6)
    assert not np.allclose(rnn(XS[0], key=jax.random.key(1)), ys)
    with pytest.raises(ValueError, match="jaxrnn.eqx.RNN: xs must be one sequence"):
        rnn(XS)
    with pytest.raises(TypeError, match="jaxrnn.eqx.RNN: cell must be a jaxrnn Cell"):
        RNN("lstm", F, key=jax.random.PRNGKey(0))


def test_the_fused_kernel_runs_underneath():
    rnn = RNN(jr.lstm(H), F, key=jax.random.PRNGKey(0))
    assert "custom_jvp_call" in str(jax.make_jaxpr(jax.vmap(rnn))(XS))
