"""Gated recurrent units: the GRU (both reset placements) and the minimal gated unit (MGU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn import validators as check
from jaxrnn.cells.base import (
    Cell,
    CellFns,
    SequenceKernel,
    affine_input,
    gate_blocks,
    hidden_zeros,
    resolve_inits,
)
from jaxrnn.cells.dropout import apply_mask
from jaxrnn.kernels import FUSED_BACKENDS, gru_kernel

__all__ = ["gru", "mgu"]


def _gated_params(name, k_init, r_init, b_init, hidden_size, n_gates, extra_bias=()):
    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args(name, input_size, dtype)
        k_x, k_h, k_b, k_e = jax.random.split(key, 4)
        params = {
            "W_xh": gate_blocks(k_init, k_x, n_in, hidden_size, n_gates, dtype),
            "W_hh": gate_blocks(r_init, k_h, hidden_size, hidden_size, n_gates, dtype),
            "b": b_init(k_b, (n_gates * hidden_size,), dtype),
        }
        for k, name_ in zip(jax.random.split(k_e, max(len(extra_bias), 1)), extra_bias):
            params[name_] = b_init(k, (hidden_size,), dtype)
        return params

    return init


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The GRU (Cho et al. 2014), gate order r, z, n as PyTorch and cuDNN.

    ``reset_after=True`` (default) -- the cuDNN / PyTorch / Flax ``GRUCell`` form, reset applied
    *after* the recurrent matmul::

        [x_r, x_z, x_n] = x_t @ W_xh + b          [h_r, h_z, h_n] = h_{t-1} @ W_hh
        r = sigma(x_r + h_r)     z = sigma(x_z + h_z)     n = tanh(x_n + r * (h_n + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    ``reset_after=False`` -- the form of the Politecnico di Milano lecture and the dynamical-systems
    lecture notes (and of Cho et al.), reset applied to the
    state *before* the matmul, ``n = tanh(x_n + (r * h_{t-1}) @ W_hn)``; no ``b_hn``.

    Params: ``W_xh (I, 3H)``, ``W_hh (H, 3H)``, ``b (3H,)`` (PyTorch's ``b_ih + b_hh`` on the r and z
    slices, ``b_in`` on the n slice) and, with ``reset_after``, ``b_hn (H,)``, which cannot be merged
    into ``b`` because it sits inside ``r * (...)``. Carry and output: ``h (*batch, H)``. The
    dynamical-systems lecture notes name the update gate ``u`` and writes ``h_t = u h_{t-1} + (1 - u) h~_t``:
    the same cell with ``u = z``. :func:`jaxrnn.unroll` runs both forms with the fused kernels of
    :mod:`jaxrnn.kernels`.
    """
    hp = dict(
        hidden_size=check.positive_int(hidden_size, "gru: hidden_size"),
        reset_after=check.bool_arg(reset_after, "gru: reset_after"),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    resolve_inits("gru", kernel_init, recurrent_init, bias_init)
    return Cell(gru, _build_gru, hp)


def _identity(h):
    return h


def _build_gru(hidden_size, reset_after, kernel_init, recurrent_init, bias_init) -> CellFns:
    k_init, r_init, b_init = resolve_inits("gru", kernel_init, recurrent_init, bias_init)
    H = hidden_size
    # masks (jaxrnn.cells.dropout.RecurrentMasks or None): hidden multiplies h_{t-1} where it enters
    # the recurrent matmuls (not in the z-blend), candidate multiplies n.
    if reset_after:

        def recur_masked(params, h, px, masks):
            hh = apply_mask(h, masks, "hidden") @ params["W_hh"]
            r = jax.nn.sigmoid(px[..., :H] + hh[..., :H])
            z = jax.nn.sigmoid(px[..., H : 2 * H] + hh[..., H : 2 * H])
            n = jnp.tanh(px[..., 2 * H :] + r * (hh[..., 2 * H :] + params["b_hn"]))
            return (1.0 - z) * apply_mask(n, masks, "candidate") + z * h

        extra = ("b_hn",)
    else:

        def recur_masked(params, h, px, masks):
            W = params["W_hh"]
            h_in = apply_mask(h, masks, "hidden")
            hh = h_in @ W[:, : 2 * H]
            r = jax.nn.sigmoid(px[..., :H] + hh[..., :H])
            z = jax.nn.sigmoid(px[..., H : 2 * H] + hh[..., H:])
            n = jnp.tanh(px[..., 2 * H :] + (r * h_in) @ W[:, 2 * H :])
            return (1.0 - z) * apply_mask(n, masks, "candidate") + z * h

        extra = ()

    return CellFns(
        _gated_params("gru", k_init, r_init, b_init, H, 3, extra),
        hidden_zeros(H),
        affine_input,
        lambda params, h, px: recur_masked(params, h, px, None),
        _identity,
        kernel=SequenceKernel(gru_kernel(reset_after=reset_after), resets=True, backends=FUSED_BACKENDS),
        masked_recur=recur_masked,
    )


def mgu(
    hidden_size: int,
    *,
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The minimal gated unit (Zhou, Wu, Zhang, Zhou 2016), the "minimal GRU" of the dynamical-systems
    lecture notes "Recurrent neural networks".

    One gate ``f`` plays both the reset and the update role::

        f = sigma(x_t @ W_xf + h_{t-1} @ W_hf + b_f)
        n = tanh(x_t @ W_xn + (f * h_{t-1}) @ W_hn + b_n)
        h_t = (1 - f) * h_{t-1} + f * n

    Params: ``W_xh (I, 2H)``, ``W_hh (H, 2H)``, ``b (2H,)``, columns ``[f | n]`` -- two thirds of a
    GRU's parameters. Carry and output: ``h (*batch, H)``.
    """
    hp = dict(
        hidden_size=check.positive_int(hidden_size, "mgu: hidden_size"),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    resolve_inits("mgu", kernel_init, recurrent_init, bias_init)
    return Cell(mgu, _build_mgu, hp)


def _build_mgu(hidden_size, kernel_init, recurrent_init, bias_init) -> CellFns:
    k_init, r_init, b_init = resolve_inits("mgu", kernel_init, recurrent_init, bias_init)
    H = hidden_size

    def recur_masked(params, h, px, masks):
        # masks: as in gru -- hidden on h_{t-1} inside the matmuls, candidate on n.
        W = params["W_hh"]
        h_in = apply_mask(h, masks, "hidden")
        f = jax.nn.sigmoid(px[..., :H] + h_in @ W[:, :H])
        n = jnp.tanh(px[..., H:] + (f * h_in) @ W[:, H:])
        return (1.0 - f) * h + f * apply_mask(n, masks, "candidate")

    return CellFns(
        _gated_params("mgu", k_init, r_init, b_init, H, 2),
        hidden_zeros(H),
        affine_input,
        lambda params, h, px: recur_masked(params, h, px, None),
        _identity,
        masked_recur=recur_masked,
    )
