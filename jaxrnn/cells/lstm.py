"""Long short-term memory: the modern LSTM (with forget gate) and the original 1997 LSTM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import activations
from jaxrnn import validators as check
from jaxrnn.cells.base import (
    Cell,
    CellFns,
    LSTMCarry,
    SequenceKernel,
    affine_input,
    gate_blocks,
    resolve_inits,
    zeros_state,
)
from jaxrnn.cells.dropout import apply_mask
from jaxrnn.kernels import FUSED_BACKENDS, lstm_kernel

__all__ = ["lstm", "lstm1997"]


def _lstm_state(hidden_size):
    def initial_carry(params, batch_shape=()):
        z = zeros_state(params["W_hh"], batch_shape, hidden_size)
        return LSTMCarry(h=z, c=z)

    return initial_carry


def lstm_weights(inits, key, n_in: int, H: int, forget_bias, dtype) -> dict:
    """``W_xh (I, 4H)``, ``W_hh (H, 4H)``, ``b (4H,)`` of an i, f, g, o LSTM, initialised per gate block
    by ``inits = (kernel_init, recurrent_init, bias_init)``, with ``forget_bias`` added to the f slice of
    ``b`` (shared by :func:`lstm` and the normalised LSTMs)."""
    k_init, r_init, b_init = inits
    k_x, k_h, k_b = jax.random.split(key, 3)
    b = b_init(k_b, (4 * H,), dtype)
    return {
        "W_xh": gate_blocks(k_init, k_x, n_in, H, 4, dtype),
        "W_hh": gate_blocks(r_init, k_h, H, H, 4, dtype),
        "b": b.at[H : 2 * H].add(jnp.asarray(forget_bias, dtype)),
    }


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    peepholes: bool = False,
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The LSTM with forget gate (Gers et al. 2000), gate order i, f, g, o as PyTorch and cuDNN::

        [a_i, a_f, a_g, a_o] = x_t @ W_xh + h_{t-1} @ W_hh + b
        i = sigma(a_i + p_i * c_{t-1})     f = sigma(a_f + p_f * c_{t-1})     g = tanh(a_g)
        c_t = f * c_{t-1} + i * g
        o = sigma(a_o + p_o * c_t)
        h_t = o * tanh(c_t)

    (the ``p_*`` peephole terms only with ``peepholes=True``). Params: ``W_xh (I, 4H)``,
    ``W_hh (H, 4H)``, ``b (4H,)`` (one bias: PyTorch's ``b_ih + b_hh``), and with peepholes
    ``p_i, p_f, p_o (H,)`` (zeros at init). The carry is :class:`LSTMCarry` ``(h, c)``, the output
    ``h (*batch, H)``.

    :func:`jaxrnn.unroll` runs it with the fused kernel of :mod:`jaxrnn.kernels` (with or without
    peepholes).

    ``forget_bias`` (default 1.0, Kitov's lecture; Gers et al. 2000, Jozefowicz et al. 2015) is *added to the
    f-slice of b at init*; the forward pass has no hidden constant, so parameters converted from
    PyTorch or Flax behave exactly as there.
    """
    hp = dict(
        hidden_size=check.positive_int(hidden_size, "lstm: hidden_size"),
        forget_bias=check.real_number(forget_bias, "lstm: forget_bias"),
        peepholes=check.bool_arg(peepholes, "lstm: peepholes"),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    resolve_inits("lstm", kernel_init, recurrent_init, bias_init)
    return Cell(lstm, _build_lstm, hp)


def _output_h(s):
    return s.h


def _build_lstm(hidden_size, forget_bias, peepholes, kernel_init, recurrent_init, bias_init) -> CellFns:
    k_init, r_init, b_init = resolve_inits("lstm", kernel_init, recurrent_init, bias_init)
    H = hidden_size

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args("lstm", input_size, dtype)
        params = lstm_weights((k_init, r_init, b_init), key, n_in, H, forget_bias, dtype)
        if peepholes:
            params.update({k: jnp.zeros((H,), dtype) for k in ("p_i", "p_f", "p_o")})
        return params

    def masked_recur(params, state, px, masks):
        # masks (jaxrnn.cells.dropout.RecurrentMasks or None): hidden multiplies h_{t-1} before the
        # recurrent matmul (all four gates), candidate multiplies g; c is never masked.
        h, c = state
        a = px + apply_mask(h, masks, "hidden") @ params["W_hh"]
        a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
        if peepholes:
            a_i = a_i + params["p_i"] * c
            a_f = a_f + params["p_f"] * c
        c = jax.nn.sigmoid(a_f) * c + jax.nn.sigmoid(a_i) * apply_mask(jnp.tanh(a_g), masks, "candidate")
        if peepholes:
            a_o = a_o + params["p_o"] * c
        h = jax.nn.sigmoid(a_o) * jnp.tanh(c)
        return LSTMCarry(h=h, c=c)

    return CellFns(
        init,
        _lstm_state(H),
        affine_input,
        lambda params, state, px: masked_recur(params, state, px, None),
        _output_h,
        kernel=SequenceKernel(
            lstm_kernel(LSTMCarry, peepholes=peepholes), resets=True, backends=FUSED_BACKENDS
        ),
        masked_recur=masked_recur,
    )


def lstm1997(
    hidden_size: int,
    block_size: int = 1,
    *,
    input_gate_bias=0.0,
    cell_input_activation="tanh",
    cell_output_activation="tanh",
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The original LSTM (Hochreiter & Schmidhuber 1997, "Long short-term memory"; the XJTLU INT301
    Bio-computation lecture): no forget gate, memory blocks.

    The ``H`` memory cells are grouped in ``n = H / block_size`` blocks; the cells of a block share
    one input gate and one output gate. With ``y = h`` the cell outputs::

        a_z = x_t @ W_z + y_{t-1} @ R_z + b_z          z = g(a_z)            (H,)
        a_in = x_t @ W_in + y_{t-1} @ R_in + b_in      i = sigma(a_in)       (n,) one per block
        a_out = x_t @ W_out + y_{t-1} @ R_out + b_out  o = sigma(a_out)      (n,)
        c_t = c_{t-1} + z * i[block]                   (the constant error carousel: weight one)
        h_t = h(c_t) * o[block]

    Without a forget gate ``c_t`` can only accumulate: under a constant input stream it grows
    linearly in ``t`` (the limitation the XJTLU lecture names, fixed by Gers et al.'s forget gate).

    Params: ``W_xh (I, n + H + n)``, ``W_hh (H, n + H + n)``, ``b (n + H + n,)``, columns laid out
    ``[input gates (n) | cell inputs z (H) | output gates (n)]``. The carry is
    :class:`LSTMCarry` ``(h, c)``, the output ``h``.

    Args:
      hidden_size: number of memory cells ``H``; a multiple of ``block_size``.
      block_size: cells per memory block (1: one gate pair per cell).
      input_gate_bias: added to the input-gate biases at init, a scalar or one value per block
        (Hochreiter & Schmidhuber use negative values such as -3, -6 so that blocks switch on in turn).
      cell_input_activation, cell_output_activation: ``g`` and ``h`` (the paper's are sigmoids scaled
        to [-2, 2] and [-1, 1]; tanh by default here).
    """
    hidden_size = check.positive_int(hidden_size, "lstm1997: hidden_size")
    block_size = check.positive_int(block_size, "lstm1997: block_size")
    if hidden_size % block_size:
        raise ValueError(
            f"lstm1997: hidden_size must be a multiple of block_size; got hidden_size="
            f"{hidden_size}, block_size={block_size}"
        )
    n = hidden_size // block_size
    if np.ndim(input_gate_bias) > 1 or (np.ndim(input_gate_bias) == 1 and len(input_gate_bias) != n):
        raise ValueError(
            f"lstm1997: input_gate_bias must be a scalar or have one value per block ({n}); "
            f"got shape {np.shape(input_gate_bias)}"
        )
    try:
        bias = np.asarray(input_gate_bias, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"lstm1997: input_gate_bias must be a number or numbers; got {input_gate_bias!r}"
        ) from None
    activations.get(cell_input_activation, "lstm1997: cell_input_activation")
    activations.get(cell_output_activation, "lstm1997: cell_output_activation")
    resolve_inits("lstm1997", kernel_init, recurrent_init, bias_init)
    hp = dict(
        hidden_size=hidden_size,
        block_size=block_size,
        input_gate_bias=float(bias) if bias.ndim == 0 else tuple(float(v) for v in bias),
        cell_input_activation=cell_input_activation,
        cell_output_activation=cell_output_activation,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    return Cell(lstm1997, _build_lstm1997, hp)


def _build_lstm1997(
    hidden_size,
    block_size,
    input_gate_bias,
    cell_input_activation,
    cell_output_activation,
    kernel_init,
    recurrent_init,
    bias_init,
) -> CellFns:
    H, n = hidden_size, hidden_size // block_size
    gate_bias = np.broadcast_to(np.asarray(input_gate_bias, dtype=np.float64), (n,))
    g = activations.get(cell_input_activation)
    h_act = activations.get(cell_output_activation)
    k_init, r_init, b_init = resolve_inits("lstm1997", kernel_init, recurrent_init, bias_init)
    width = 2 * n + H

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args("lstm1997", input_size, dtype)
        k_x, k_h, k_b = jax.random.split(key, 3)
        b = b_init(k_b, (width,), dtype)
        return {
            "W_xh": k_init(k_x, (n_in, width), dtype),
            "W_hh": r_init(k_h, (H, width), dtype),
            "b": b.at[:n].add(jnp.asarray(gate_bias, dtype)),
        }

    def recur(params, state, px):
        h, c = state
        a = px + h @ params["W_hh"]
        i = jnp.repeat(jax.nn.sigmoid(a[..., :n]), block_size, axis=-1)
        z = g(a[..., n : n + H])
        o = jnp.repeat(jax.nn.sigmoid(a[..., n + H :]), block_size, axis=-1)
        c = c + i * z
        return LSTMCarry(h=h_act(c) * o, c=c)

    return CellFns(init, _lstm_state(H), affine_input, recur, _output_h)
