"""The LSTM through cuDNN (``jax.experimental.rnn``), on an NVIDIA GPU: ``unroll(..., backend="cudnn")``.

``jax.experimental.rnn.lstm`` calls cuDNN's RNN (forward and backward as one library call each) with the
weights of one layer packed into a flat vector in PyTorch's layout::

    [ W_ih (4H, I) | W_hh (4H, H) | b_ih (4H,) | b_hh (4H,) ]     gates i, f, g, o (row blocks)

:func:`cudnn_weights` packs ``jr.lstm(H)``'s parameters that way (``W_ih = W_xh^T``, ``W_hh = W_hh^T``,
``b_ih = b``, ``b_hh = 0``), differentiably, so ``jax.grad`` reaches ``params`` through the packing.
:func:`cudnn_lstm` runs it on a batch: inputs batch-first for cuDNN, ``lengths`` as its sequence
lengths (outputs zero past them, the final state at each sequence's last valid step, as
:func:`jaxrnn.unroll`).

What it takes: float32, one LSTM layer without peepholes, ``lengths``; not ``resets``, ``reverse``
(a backward layer of cuDNN's runs each *padded* sequence from its last slot, not from its own last
valid step), forward-mode derivatives (cuDNN's backward is a ``custom_vjp``) or a CPU. It has not run
here: no GPU was available to this project's sessions. The suite checks the packing on the CPU against
JAX's own reference of cuDNN's semantics (``jax.experimental.rnn.lstm_ref`` on the unpacked weights);
the cuDNN call itself is **not measured** (``python -m experiments.bench`` on a GPU is the check).
"""

import jax
import jax.numpy as jnp

__all__ = ["cudnn_lstm", "cudnn_weights"]


def cudnn_weights(params) -> jax.Array:
    """``jr.lstm(H)`` params ``{"W_xh": (I, 4H), "W_hh": (H, 4H), "b": (4H,)}`` as cuDNN's flat weight
    vector, ``(4H (I + H) + 8H,)``: ``W_xh^T``, ``W_hh^T``, ``b`` and a zero ``b_hh``, each flattened
    row-major (``jax.experimental.rnn.unpack_lstm_weights`` inverts it)."""
    W_xh, W_hh, b = params["W_xh"], params["W_hh"], params["b"]
    return jnp.concatenate([W_xh.T.reshape(-1), W_hh.T.reshape(-1), b, jnp.zeros_like(b)])


def cudnn_lstm(params, carry, xs, lengths=None):
    """All outputs and the final carry of ``jr.lstm(H)`` over ``xs (T, *batch, I)`` by cuDNN:
    ``(final, ys (T, *batch, H))``, ``final`` the type of ``carry`` (``h``, ``c`` each ``(*batch, H)``),
    ``ys`` zero past ``lengths``. In plain Python, as
    :func:`jaxrnn.unroll` without resets or reverse::

        for t in range(T):
            new = lstm.step(params, (h, c), xs[t])
            (h, c) = where(t < lengths, new, (h, c)); ys[t] = where(t < lengths, new.h, 0)
    """
    from jax.experimental import rnn  # only on the path that uses it

    T, batch, I = xs.shape[0], xs.shape[1:-1], xs.shape[-1]
    H = params["W_hh"].shape[0]
    B = 1
    for d in batch:
        B *= d
    x = jnp.swapaxes(xs.reshape(T, B, I), 0, 1)  # cuDNN is batch-first
    h0, c0 = (a.reshape(1, B, H) for a in (carry.h, carry.c))
    seq = jnp.full((B,), T, jnp.int32) if lengths is None else lengths.reshape(B).astype(jnp.int32)
    y, h_n, c_n = rnn.lstm(x, h0, c0, cudnn_weights(params), seq, I, H, 1, 0.0, False)
    ys = jnp.swapaxes(y, 0, 1).reshape(T, *batch, H)
    return carry._replace(h=h_n[0].reshape(*batch, H), c=c_n[0].reshape(*batch, H)), ys
