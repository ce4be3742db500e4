"""jaxrnn.linen.RNN: its "params" collection is the cell's dict; values and gradients equal unroll's."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn as jr
from jaxrnn.linen import RNN

B, T, F, H = 2, 5, 3, 4
XS = jax.random.normal(jax.random.PRNGKey(1), (B, T, F), jnp.float32)
LENGTHS = jnp.array([5, 2])


def test_params_are_the_cells_dict_and_values_equal_unroll():
    rnn = RNN(jr.lstm(H))
    variables = rnn.init(jax.random.PRNGKey(0), XS)
    p = variables["params"]
    assert set(p) == {"W_xh", "W_hh", "b"} and p["W_hh"].shape == (H, 4 * H)
    assert jax.eval_shape(lambda: p) == jax.eval_shape(lambda: jr.lstm(H).init(jax.random.PRNGKey(0), F))
    final, ys = rnn.apply(variables, XS, lengths=LENGTHS, return_carry=True)
    want = jr.unroll(jr.lstm(H), p, XS, lengths=LENGTHS, time_axis=1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), (final, ys), want)
    g = jax.grad(lambda v: jnp.sum(rnn.apply(v, XS) ** 2))(variables)["params"]
    g_ref = jax.grad(lambda p: jnp.sum(jr.unroll(jr.lstm(H), p, XS, time_axis=1)[1] ** 2))(p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, g_ref)
    # checkpoint round trip, and the module is rebuilt equal (no recompile)
    restored = flax.serialization.from_bytes(variables, flax.serialization.to_bytes(variables))
    np.testing.assert_array_equal(rnn.apply(restored, XS), rnn.apply(variables, XS))
    assert RNN(jr.lstm(H)) == rnn and hash(RNN(jr.lstm(H))) == hash(rnn)
    traces = []
    f = jax.jit(lambda m, v: (traces.append(1), m.apply(v, XS))[1], static_argnums=0)
    f(rnn, variables)
    f(RNN(jr.lstm(H)), restored)
    assert len(traces) == 1


def test_learned_initial_state_and_time_major():
    cell = jr.learned_initial_state(jr.gru(H))
    rnn = RNN(cell, time_major=True)
    xs = jnp.swapaxes(XS, 0, 1)
    variables = rnn.init(jax.random.PRNGKey(0), xs)
    assert "initial_carry" in variables["params"]
    np.testing.assert_allclose(
        rnn.apply(variables, xs), jr.unroll(cell, variables["params"], xs)[1], rtol=1e-6
    )


def test_the_fused_kernel_runs_underneath():
    rnn = RNN(jr.gru(H))
    variables = rnn.init(jax.random.PRNGKey(0), XS)
    assert "custom_jvp_call" in str(jax.make_jaxpr(lambda v: rnn.apply(v, XS, lengths=LENGTHS))(variables))
