"""Ungated recurrences: Elman (S-RNN), IRNN, np-RNN, the continuous-time RNN and accumulators."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn import initializers as inits
from jaxrnn.cells.base import (
    Cell,
    affine_input,
    check_init_args,
    hidden_zeros,
    make_cell,
    positive_int,
    resolve_inits,
)
from jaxrnn.cells.base import (
    activation as get_activation,
)
from jaxrnn.cells.dropout import apply_mask, maskable
from jaxrnn.kernels import elman_kernel

__all__ = ["accumulator", "ctrnn", "elman", "irnn", "np_rnn"]


def _dense_params(name, kernel_init, recurrent_init, bias_init, hidden_size):
    """``init`` for the ``{W_xh (I, H), W_hh (H, H), b (H,)}`` parameter layout."""

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check_init_args(name, input_size, dtype)
        k_x, k_h, k_b = jax.random.split(key, 3)
        return {
            "W_xh": kernel_init(k_x, (n_in, hidden_size), dtype),
            "W_hh": recurrent_init(k_h, (hidden_size, hidden_size), dtype),
            "b": bias_init(k_b, (hidden_size,), dtype),
        }

    return init


def elman(
    hidden_size: int,
    activation="tanh",
    *,
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The Elman / simple RNN (S-RNN of seed 004): ``h_t = f(x_t @ W_xh + h_{t-1} @ W_hh + b)``.

    Shapes: ``x_t (*batch, I)``, ``h (*batch, H)``; params ``W_xh (I, H)``, ``W_hh (H, H)``,
    ``b (H,)``. The carry is ``h``; the output is ``h``. Jacobian
    ``dh_t/dh_{t-1} = W_hh^T diag(f'(a_t))`` in column form (seed 000, Pascanu et al. eq. 5).
    Matches ``torch.nn.RNN`` (``nonlinearity='tanh'|'relu'``, with ``b = b_ih + b_hh``) and Flax's
    ``SimpleCell``.

    Args:
      hidden_size: ``H``.
      activation: ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"identity"`` or a callable.
      kernel_init, recurrent_init, bias_init: initialisers (callables ``(key, shape, dtype)`` or
        names from :mod:`jaxrnn.initializers`). Defaults as Flax: LeCun-normal, orthogonal, zeros.
        Pascanu et al.'s inits: ``normal(0.01)`` everywhere with sigmoid, ``normal(0.1)`` with tanh
        ("basic tanh"), or ``recurrent_init=sparse()`` and ``kernel_init=normal(0.01)`` ("smart tanh").
    """
    hidden_size = positive_int(hidden_size, "elman: hidden_size")
    f = get_activation(activation, "elman: activation")
    k_init, r_init, b_init = resolve_inits("elman", kernel_init, recurrent_init, bias_init)

    def recur_masked(params, h, px, masks):
        # masks: an ungated cell's candidate *is* its recurrent input (Semeniuta et al.'s vanilla-RNN
        # form f(W [x_t, d(h_{t-1})] + b)), so both the candidate and the hidden mask multiply h_{t-1}.
        h_in = apply_mask(apply_mask(h, masks, "candidate"), masks, "hidden")
        return f(px + h_in @ params["W_hh"])

    recur, masked_hparams = maskable(recur_masked)
    return make_cell(
        "elman",
        _dense_params("elman", k_init, r_init, b_init, hidden_size),
        hidden_zeros(hidden_size),
        affine_input,
        recur,
        lambda h: h,
        kernel=elman_kernel(activation),
        activation=activation,
        **masked_hparams,
    )


def irnn(hidden_size: int, *, gain: float = 1.0, input_std: float = 0.001) -> Cell:
    """IRNN (Le, Jaitly, Hinton 2015): a ReLU Elman cell with ``W_hh = gain * I`` and ``b = 0``.

    ``h_t = relu(x_t @ W_xh + h_{t-1} @ W_hh + b)``; input weights ``N(0, input_std^2)`` (0.001 in the
    Keras reproduction of the paper's pixel-MNIST run). Seeds 001, 003 and 004 ("identity-ReLU init").
    Params ``W_xh (I, H)``, ``W_hh (H, H)``, ``b (H,)``; carry and output ``h (*batch, H)``.
    """
    return elman(
        hidden_size,
        "relu",
        kernel_init=inits.normal(input_std),
        recurrent_init=inits.identity(gain),
        bias_init="zeros",
    )._replace(name="irnn")


def np_rnn(hidden_size: int) -> Cell:
    """np-RNN (Talathi & Vartak 2016): ReLU Elman cell with ``W_hh = (B + I)/lambda_max(B + I)``.

    ``B = R^T R / N`` with ``R ~ N(0, 1)``, so ``W_hh`` is symmetric positive definite with largest
    eigenvalue 1 (:func:`jaxrnn.initializers.np_rnn`). Input weights ``N(0, 1/I)``, biases zero.
    """
    return elman(
        hidden_size,
        "relu",
        kernel_init=inits.lecun_normal(),
        recurrent_init=inits.np_rnn(),
        bias_init="zeros",
    )._replace(name="np_rnn")


def ctrnn(
    hidden_size: int,
    alpha: float | None = None,
    *,
    dt: float | None = None,
    tau: float | None = None,
    activation="tanh",
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """Continuous-time RNN, Euler-discretised (seed 003).

    ``tau ds/dt = -s + W_rec f(s) + b + W_in x`` with one Euler step of ``dt`` gives::

        s_t = (1 - alpha) s_{t-1} + alpha (f(s_{t-1}) @ W_hh + b + x_t @ W_xh),   alpha = dt / tau
        y_t = f(s_t)

    The carry is the (pre-activation) state ``s (*batch, H)``; the output is the rate ``f(s)``.
    ``alpha = 1`` is the vanilla RNN in its ``s_t = W f(s_{t-1}) + ...`` form (Pascanu et al. eq. 2);
    small ``alpha`` (large ``tau``) means slow, leaky dynamics.

    Args:
      hidden_size: ``H``.
      alpha: ``dt / tau`` in ``(0, 1]``. Give either ``alpha`` or both ``dt`` and ``tau``.
      dt, tau: step size and time constant (``dt <= tau``).
      activation: the rate function ``f``.
    """
    hidden_size = positive_int(hidden_size, "ctrnn: hidden_size")
    if alpha is None:
        if dt is None or tau is None:
            raise ValueError("ctrnn: give alpha, or both dt and tau (alpha = dt / tau)")
        alpha = float(dt) / float(tau)
    elif dt is not None or tau is not None:
        raise ValueError("ctrnn: give either alpha or (dt, tau), not both")
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"ctrnn: alpha = dt/tau must be in (0, 1]; got {alpha}")
    f = get_activation(activation, "ctrnn: activation")
    k_init, r_init, b_init = resolve_inits("ctrnn", kernel_init, recurrent_init, bias_init)

    def recur(params, s, px):
        return (1.0 - alpha) * s + alpha * (f(s) @ params["W_hh"] + px)

    return make_cell(
        "ctrnn",
        _dense_params("ctrnn", k_init, r_init, b_init, hidden_size),
        hidden_zeros(hidden_size),
        affine_input,
        recur,
        f,
        activation=activation,
        alpha=alpha,
    )


def accumulator(
    hidden_size: int,
    kind: str = "sum",
    *,
    dtype=jnp.float32,
    kernel_init="lecun_normal",
    recurrent_init="identity",
) -> Cell:
    """Accumulators: memories without gates, the foil for the LSTM.

    ``kind="sum"`` -- the bag-of-words RNN of seed 004: ``s_t = s_{t-1} + x_t``, ``y_t = s_t``. No
    parameters (``params == {}``); the input size must equal ``hidden_size``: ``x_t (*batch, H)``,
    carry and output ``s (*batch, H)`` in ``dtype``. Order of the inputs does not matter.

    ``kind="naive"`` -- the "naive (not working) solution" of seed 000: a linear memory
    ``c_t = theta c_{t-1} + theta_g g_t``, read out as ``h_t = tanh(c_t)``. In jaxrnn's row convention
    ``c_t = c_{t-1} @ W_hh + x_t @ W_xh`` (``W_hh = theta^T``, ``W_xh = theta_g^T``); ``W_hh`` starts
    as the identity, so the cell "just accumulates the input". Params ``W_xh (I, H)``, ``W_hh (H, H)``;
    the carry is ``c (*batch, H)``, the output ``tanh(c) (*batch, H)``.
    """
    hidden_size = positive_int(hidden_size, "accumulator: hidden_size")
    if kind == "sum":
        carry_dtype = jnp.dtype(dtype)

        def init(key, input_size, dtype=carry_dtype):
            del key
            n_in, dtype = check_init_args("accumulator", input_size, dtype)
            if dtype != carry_dtype:
                raise TypeError(
                    f"accumulator(kind='sum').init: this cell has no parameters, so its carry dtype is "
                    f"the factory's dtype={carry_dtype}; got init dtype={dtype}. Make the cell with "
                    f"jr.accumulator({hidden_size}, dtype=...) instead"
                )
            if n_in != hidden_size:
                raise ValueError(
                    f"accumulator(kind='sum').init: input_size must equal hidden_size="
                    f"{hidden_size} (s_t = s_(t-1) + x_t); got {n_in}"
                )
            return {}

        return make_cell(
            "accumulator",
            init,
            lambda params, batch_shape=(): jnp.zeros((*tuple(batch_shape), hidden_size), carry_dtype),
            lambda params, x: x,
            lambda params, s, px: s + px,
            lambda s: s,
            input_size=lambda params: hidden_size,
            kind="sum",
        )
    if kind == "naive":
        k_init, r_init, b_init = resolve_inits("accumulator", kernel_init, recurrent_init, "zeros")

        def init_naive(key, input_size, dtype=jnp.float32):
            params = _dense_params("accumulator", k_init, r_init, b_init, hidden_size)(key, input_size, dtype)
            del params["b"]
            return params

        return make_cell(
            "accumulator",
            init_naive,
            hidden_zeros(hidden_size),
            lambda params, x: x @ params["W_xh"],
            lambda params, c, px: c @ params["W_hh"] + px,
            jnp.tanh,
            kind="naive",
        )
    raise ValueError(f"accumulator: kind must be 'sum' or 'naive'; got {kind!r}")
