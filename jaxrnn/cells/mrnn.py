"""The multiplicative RNN of Sutskever, Martens and Hinton (2011)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn import activations
from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns, hidden_zeros, resolve_inits

__all__ = ["mrnn"]


def mrnn(
    hidden_size: int,
    factor_size: int | None = None,
    *,
    activation="tanh",
    kernel_init="lecun_normal",
    recurrent_init="lecun_normal",
    bias_init="zeros",
) -> Cell:
    """Multiplicative RNN: an input-dependent recurrent matrix, factored (Sutskever et al. 2011).

    The recurrent matrix is ``W_hh(x_t) = W_hf diag(x_t @ W_xf) W_fh`` (rank ``F``)::

        m_t = (x_t @ W_xf) * (h_{t-1} @ W_hf)          (*batch, F)  the factors
        h_t = tanh(m_t @ W_fh + x_t @ W_xh + b)        (*batch, H)

    Params: ``W_xf (I, F)``, ``W_hf (H, F)``, ``W_fh (F, H)``, ``W_xh (I, H)``, ``b (H,)``. In the
    paper's column notation ``f_t = diag(W_fx x_t) W_fh h_{t-1}``, ``h_t = tanh(W_hf f_t + W_hx x_t + b)``:
    paper ``W_fx, W_fh, W_hf, W_hx`` are jaxrnn ``W_xf^T, W_hf^T, W_fh^T, W_xh^T``. Used with
    Hessian-free training (Martens & Sutskever 2011). Carry and output ``h (*batch, H)``.

    Args:
      hidden_size: ``H``.
      factor_size: ``F`` (default ``H``).
    """
    H = check.positive_int(hidden_size, "mrnn: hidden_size")
    F = H if factor_size is None else check.positive_int(factor_size, "mrnn: factor_size")
    activations.get(activation, "mrnn: activation")
    resolve_inits("mrnn", kernel_init, recurrent_init, bias_init)
    hp = dict(
        hidden_size=H,
        factor_size=F,
        activation=activation,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    return Cell(mrnn, _build_mrnn, hp)


def _build_mrnn(hidden_size, factor_size, activation, kernel_init, recurrent_init, bias_init) -> CellFns:
    H, F = hidden_size, factor_size
    f = activations.get(activation)
    k_init, r_init, b_init = resolve_inits("mrnn", kernel_init, recurrent_init, bias_init)

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args("mrnn", input_size, dtype)
        k = jax.random.split(key, 5)
        return {
            "W_xf": k_init(k[0], (n_in, F), dtype),
            "W_hf": r_init(k[1], (H, F), dtype),
            "W_fh": r_init(k[2], (F, H), dtype),
            "W_xh": k_init(k[3], (n_in, H), dtype),
            "b": b_init(k[4], (H,), dtype),
        }

    def project(params, x):
        return x @ params["W_xf"], x @ params["W_xh"] + params["b"]

    def recur(params, h, px):
        x_f, x_h = px
        return f((x_f * (h @ params["W_hf"])) @ params["W_fh"] + x_h)

    return CellFns(init, hidden_zeros(H, key="W_fh"), project, recur, lambda h: h)
