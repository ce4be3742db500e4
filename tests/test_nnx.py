"""jaxrnn.nnx.RNN against jr.unroll on the same params: values, gradients, lengths, split/merge, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn as jr
from jaxrnn.nnx import RNN

B, T, F, H = 2, 5, 3, 4
XS = jax.random.normal(jax.random.PRNGKey(1), (B, T, F), jnp.float32)
LENGTHS = jnp.array([5, 2])


def test_values_gradients_and_lengths_equal_unroll():
    rnn = RNN(jr.gru(H), F, rngs=nnx.Rngs(0))
    p = rnn.cell_params
    assert set(p) == {"W_xh", "W_hh", "b", "b_hn"}
    want = jr.unroll(jr.gru(H), p, XS, lengths=LENGTHS, time_axis=1)
    final, ys = rnn(XS, lengths=LENGTHS, return_carry=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), (final, ys), want)
    g = nnx.grad(lambda m: jnp.sum(m(XS, lengths=LENGTHS) ** 2))(rnn)
    g_ref = jax.grad(lambda p: jnp.sum(jr.unroll(jr.gru(H), p, XS, lengths=LENGTHS, time_axis=1)[1] ** 2))(p)
    got = nnx.to_pure_dict(g.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, g_ref)
    tm = RNN(jr.gru(H), F, rngs=nnx.Rngs(0), time_major=True, params=p)
    np.testing.assert_allclose(tm(jnp.swapaxes(XS, 0, 1), lengths=LENGTHS), jnp.swapaxes(ys, 0, 1), rtol=1e-6)


def test_training_split_merge_and_no_recompile():
    rnn = RNN(jr.lstm(H), F, rngs=nnx.Rngs(0), recurrent_dropout=0.25)
    tx = optax.adam(1e-2)  # one transformation: optax's closures are equal only to themselves
    opt = nnx.Optimizer(rnn, tx, wrt=nnx.Param)
    traces = []

    @nnx.jit
    def step(m, opt, key):
        traces.append(1)
        loss, g = nnx.value_and_grad(lambda m: jnp.mean((m(XS, key=key) - 0.5) ** 2))(m)
        opt.update(m, g)
        return loss

    before = float(jnp.mean((rnn(XS) - 0.5) ** 2))
    for i in range(5):
        step(rnn, opt, jax.random.key(i))
    assert float(jnp.mean((rnn(XS) - 0.5) ** 2)) < before
    graph, state = nnx.split(rnn)
    again = nnx.merge(graph, state)
    np.testing.assert_array_equal(again(XS), rnn(XS))
    # a model rebuilt from the same pieces (e.g. restored from a checkpoint) reuses the compiled step
    rebuilt = RNN(jr.lstm(H), F, rngs=nnx.Rngs(1), params=rnn.cell_params, recurrent_dropout=0.25)
    step(rebuilt, nnx.Optimizer(rebuilt, tx, wrt=nnx.Param), jax.random.key(9))
    assert len(traces) == 1
    # dropout only with a key; without one the layer is the plain LSTM
    np.testing.assert_allclose(rnn(XS), jr.unroll(jr.lstm(H), rnn.cell_params, XS, time_axis=1)[1], rtol=1e-6)
    assert not np.allclose(rnn(XS, key=jax.random.key(0)), rnn(XS))


def test_the_trained_layer_takes_every_jaxrnn_function():
    rnn = RNN(jr.elman(H), F, rngs=nnx.Rngs(0))
    readout = jnp.ones((H, 1))

    def loss(ys):
        return jnp.mean((ys @ readout) ** 2)

    omega = jr.pascanu(rnn.cell, rnn.cell_params, XS, loss, time_axis=1)
    flow = jr.gradient_flow(rnn.cell, rnn.cell_params, XS, loss, time_axis=1)
    assert np.isfinite(float(omega)) and flow.shape == (T,)
    assert jr.lyapunov_spectrum(rnn.cell, rnn.cell_params, XS[0]).shape == (H,)


def test_bad_input():
    with pytest.raises(TypeError, match="jaxrnn.nnx.RNN: cell must be a jaxrnn Cell"):
        RNN("gru", F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="jaxrnn.nnx.RNN: in_features must be a positive int"):
        RNN(jr.gru(H), 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r'jaxrnn.nnx.RNN: params\["W_hh"\] must have shape'):
        p = jr.gru(H).init(jax.random.PRNGKey(0), F)
        RNN(jr.gru(H), F, rngs=nnx.Rngs(0), params={**p, "W_hh": jnp.zeros((H, H))})
    with pytest.raises(ValueError, match="in_features"):
        RNN(jr.gru(H), F + 1, rngs=nnx.Rngs(0), params=jr.gru(H).init(jax.random.PRNGKey(0), F))


def test_orbax_checkpoint_round_trip(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    rnn = RNN(jr.gru(H), F, rngs=nnx.Rngs(0))
    _, state = nnx.split(rnn)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", state)
    checkpointer.wait_until_finished()
    graph, abstract = nnx.split(nnx.eval_shape(lambda: RNN(jr.gru(H), F, rngs=nnx.Rngs(1))))
    restored = nnx.merge(graph, checkpointer.restore(tmp_path / "ckpt", abstract))
    np.testing.assert_array_equal(restored(XS, lengths=LENGTHS), rnn(XS, lengths=LENGTHS))


def test_the_fused_kernel_runs_underneath():
    rnn = RNN(jr.lstm(H), F, rngs=nnx.Rngs(0))
    assert "custom_jvp_call" in str(jax.make_jaxpr(lambda xs: rnn(xs, lengths=LENGTHS))(XS))
