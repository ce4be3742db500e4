"""jaxrnn.kernels.cudnn: the packing of jr.lstm's params into cuDNN's flat weights, checked on the CPU
against jax.experimental.rnn's own reference of cuDNN's LSTM; the wrapper's layout (batch-first, batch
dims, the final carry) with that reference standing in for cuDNN; what unroll(backend="cudnn") refuses.
On a GPU the last test runs cuDNN itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import jaxrnn as jr
from jaxrnn.kernels.cudnn import cudnn_lstm, cudnn_weights

F32 = jnp.float32
T, I, H = 5, 3, 4
CELL = jr.lstm(H)


def _setup(batch=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    params = CELL.init(jax.random.PRNGKey(seed), I, F32)
    params = jax.tree.map(lambda a: a + jnp.asarray(0.3 * rng.normal(size=a.shape), F32), params)
    xs = jnp.asarray(rng.normal(size=(T, *batch, I)), F32)
    carry = jax.tree.map(
        lambda c: c + jnp.asarray(0.2 * rng.normal(size=c.shape), F32), CELL.initial_carry(params, batch)
    )
    return params, xs, carry


def _reference_lstm(
    x, h0, c0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional
):
    """jax.experimental.rnn.lstm's signature, computed by its reference on the unpacked weights."""
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    args = (x, h0, c0, W_ih, W_hh, b_ih, b_hh, seq_lengths)
    return rnn.lstm_ref(*args, input_size, hidden_size, num_layers, dropout, bidirectional)


def test_the_packed_weights_are_cudnns_layout(monkeypatch):
    params, xs, carry = _setup()
    assert cudnn_weights(params).shape == (rnn.get_num_params_in_lstm(I, H, 1, False),)
    monkeypatch.setattr(rnn, "lstm", _reference_lstm)  # cuDNN's semantics, on the CPU
    (h, c), ys = jax.jit(cudnn_lstm)(params, carry, xs)
    final, want = jr.unroll(CELL, params, xs, carry)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, final.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, final.c, rtol=1e-5, atol=1e-6)
    # gradients reach the params through the packing
    g = jax.grad(lambda p: jnp.sum(cudnn_lstm(p, carry, xs)[1] ** 2))(params)
    g0 = jax.grad(lambda p: jnp.sum(jr.unroll(CELL, p, xs, carry)[1] ** 2))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g0)


def test_unroll_refuses_what_cudnn_cannot_serve():
    params, xs, carry = _setup(batch=(2,))
    on_gpu = jax.default_backend() == "gpu"
    cases = [
        (dict(), "needs an NVIDIA GPU"),
        (dict(reverse=True), "cannot take reverse=True"),
        (dict(resets=jnp.zeros((T, 2), bool)), "cannot take resets"),
        (dict(remat=True), "cannot take remat"),
    ]
    for kw, match in cases[int(on_gpu) :]:
        with pytest.raises(ValueError, match=match):
            jr.unroll(CELL, params, xs, backend="cudnn", **kw)
    with pytest.raises(ValueError, match="runs jr.lstm without peepholes; got gru"):
        jr.unroll(jr.gru(H), jr.gru(H).init(jax.random.PRNGKey(0), I), xs, backend="cudnn")
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    with pytest.raises(ValueError, match="takes float32 params and inputs"):
        jr.unroll(CELL, p64, xs.astype(jnp.float64), backend="cudnn")
    with pytest.raises(ValueError, match="trajectory: backend='cudnn' cannot take states"):
        jr.unroll.__globals__["trajectory"](CELL, params, xs, backend="cudnn")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs an NVIDIA GPU")
def test_cudnn_equals_unroll_on_a_gpu():
    params, xs, carry = _setup()
    lengths = jnp.array([[5, 1, 3], [0, 4, 5]])
    got = jr.unroll(CELL, params, xs, carry, lengths=lengths, backend="cudnn")
    want = jr.unroll(CELL, params, xs, carry, lengths=lengths)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3), got, want)
