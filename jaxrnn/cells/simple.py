"""Ungated recurrences: Elman (S-RNN), IRNN, np-RNN, the continuous-time RNN and accumulators."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn import activations
from jaxrnn import initialisers as inits
from jaxrnn import validators as check
from jaxrnn.cells.base import (
    Cell,
    CellFns,
    RecurrentForm,
    SequenceKernel,
    affine_input,
    hidden_zeros,
    resolve_inits,
)
from jaxrnn.cells.dropout import apply_mask
from jaxrnn.kernels import FUSED_BACKENDS, elman_kernel

__all__ = ["accumulator", "ctrnn", "elman", "irnn", "np_rnn"]


def _dense_params(name, kernel_init, recurrent_init, bias_init, hidden_size):
    """``init`` for the ``{W_xh (I, H), W_hh (H, H), b (H,)}`` parameter layout."""

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args(name, input_size, dtype)
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
    """The Elman / simple RNN: ``h_t = f(x_t @ W_xh + h_{t-1} @ W_hh + b)``.

    The S-RNN of Kitov's lecture "Recurrent neural nets" (Elman 1990, "Finding structure in time").

    Shapes: ``x_t (*batch, I)``, ``h (*batch, H)``; params ``W_xh (I, H)``, ``W_hh (H, H)``,
    ``b (H,)``. The carry is ``h``; the output is ``h``. Jacobian
    ``dh_t/dh_{t-1} = W_hh^T diag(f'(a_t))`` in column form (Pascanu, Mikolov & Bengio 2013, eq. 5).
    Matches ``torch.nn.RNN`` (``nonlinearity='tanh'|'relu'``, with ``b = b_ih + b_hh``) and Flax's
    ``SimpleCell``.

    Args:
      hidden_size: ``H``.
      activation: ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"identity"``, an
        :class:`~jaxrnn.activations.Activation` or an elementwise callable.
      kernel_init, recurrent_init, bias_init: initialisers (callables ``(key, shape, dtype)`` or
        names from :mod:`jaxrnn.initialisers`). Defaults as Flax: LeCun-normal, orthogonal, zeros.
        Pascanu et al.'s inits: ``normal(0.01)`` everywhere with sigmoid, ``normal(0.1)`` with tanh
        ("basic tanh"), or ``recurrent_init=sparse()`` and ``kernel_init=normal(0.01)`` ("smart tanh").
    """
    hidden_size = check.positive_int(hidden_size, "elman: hidden_size")
    activations.get(activation, "elman: activation")
    resolve_inits("elman", kernel_init, recurrent_init, bias_init)
    hp = dict(
        hidden_size=hidden_size,
        activation=activation,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    return Cell(elman, _build_elman, hp)


def _build_elman(hidden_size, activation, kernel_init, recurrent_init, bias_init, name="elman") -> CellFns:
    f = activations.get(activation)
    k_init, r_init, b_init = resolve_inits(name, kernel_init, recurrent_init, bias_init)

    def masked_recur(params, h, px, masks):
        # masks: an ungated cell's candidate *is* its recurrent input (Semeniuta et al.'s vanilla-RNN
        # form f(W [x_t, d(h_{t-1})] + b)), so both the candidate and the hidden mask multiply h_{t-1}.
        h_in = apply_mask(apply_mask(h, masks, "candidate"), masks, "hidden")
        return f(px + h_in @ params["W_hh"])

    def recur(params, h, px):
        return f(px + h @ params["W_hh"])

    return CellFns(
        _dense_params(name, k_init, r_init, b_init, hidden_size),
        hidden_zeros(hidden_size),
        affine_input,
        recur,
        _identity,
        kernel=SequenceKernel(elman_kernel(f), resets=True, backends=FUSED_BACKENDS),
        form=RecurrentForm("elman", f),
        masked_recur=masked_recur,
    )


def _identity(h):
    return h


def irnn(hidden_size: int, *, gain: float = 1.0, input_std: float = 0.001) -> Cell:
    """IRNN (Le, Jaitly, Hinton 2015): a ReLU Elman cell with ``W_hh = gain * I`` and ``b = 0``.

    ``h_t = relu(x_t @ W_xh + h_{t-1} @ W_hh + b)``; input weights ``N(0, input_std^2)`` (0.001 in the
    Keras reproduction of the paper's pixel-MNIST run); the "identity-ReLU init" of the RWTH Aachen
    and Kitov lectures.
    Params ``W_xh (I, H)``, ``W_hh (H, H)``, ``b (H,)``; carry and output ``h (*batch, H)``.
    """
    hp = dict(
        hidden_size=check.positive_int(hidden_size, "irnn: hidden_size"),
        gain=check.real_number(gain, "irnn: gain"),
        input_std=check.real_number(input_std, "irnn: input_std", low=0.0),
    )
    return Cell(irnn, _build_irnn, hp)


def _build_irnn(hidden_size, gain, input_std) -> CellFns:
    return _build_elman(
        hidden_size, "relu", inits.normal(input_std), inits.identity(gain), "zeros", name="irnn"
    )


def np_rnn(hidden_size: int) -> Cell:
    """np-RNN (Talathi & Vartak 2016): ReLU Elman cell with ``W_hh = (B + I)/lambda_max(B + I)``.

    ``B = R^T R / N`` with ``R ~ N(0, 1)``, so ``W_hh`` is symmetric positive definite with largest
    eigenvalue 1 (:func:`jaxrnn.initialisers.np_rnn`). Input weights ``N(0, 1/I)``, biases zero.
    """
    return Cell(
        np_rnn, _build_np_rnn, {"hidden_size": check.positive_int(hidden_size, "np_rnn: hidden_size")}
    )


def _build_np_rnn(hidden_size) -> CellFns:
    return _build_elman(hidden_size, "relu", inits.lecun_normal(), inits.np_rnn(), "zeros", name="np_rnn")


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
    """Continuous-time RNN, Euler-discretised (the dynamical-systems lecture notes "Recurrent neural
    networks").

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
    hidden_size = check.positive_int(hidden_size, "ctrnn: hidden_size")
    if alpha is None:
        if dt is None or tau is None:
            raise ValueError("ctrnn: give alpha, or both dt and tau (alpha = dt / tau)")
        dt = check.real_number(dt, "ctrnn: dt", low=0.0, low_open=True)
        tau = check.real_number(tau, "ctrnn: tau", low=0.0, low_open=True)
        alpha = dt / tau
    elif dt is not None or tau is not None:
        raise ValueError("ctrnn: give either alpha or (dt, tau), not both")
    alpha = check.real_number(alpha, "ctrnn: alpha (= dt/tau)", low=0.0, high=1.0, low_open=True)
    activations.get(activation, "ctrnn: activation")
    resolve_inits("ctrnn", kernel_init, recurrent_init, bias_init)
    hp = dict(
        hidden_size=hidden_size,
        alpha=alpha,
        activation=activation,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    return Cell(ctrnn, _build_ctrnn, hp)


def _build_ctrnn(hidden_size, alpha, activation, kernel_init, recurrent_init, bias_init) -> CellFns:
    f = activations.get(activation)
    k_init, r_init, b_init = resolve_inits("ctrnn", kernel_init, recurrent_init, bias_init)

    def recur(params, s, px):
        return (1.0 - alpha) * s + alpha * (f(s) @ params["W_hh"] + px)

    return CellFns(
        _dense_params("ctrnn", k_init, r_init, b_init, hidden_size),
        hidden_zeros(hidden_size),
        affine_input,
        recur,
        f,
        form=RecurrentForm("ctrnn", f, alpha),
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

    ``kind="sum"`` -- the bag-of-words RNN of Kitov's lecture: ``s_t = s_{t-1} + x_t``, ``y_t = s_t``. No
    parameters (``params == {}``); the input size must equal ``hidden_size``: ``x_t (*batch, H)``,
    carry and output ``s (*batch, H)`` in ``dtype``. Order of the inputs does not matter.

    ``kind="naive"`` -- the "naive (not working) solution" of the Politecnico di Milano lecture "Recurrent
    Neural Networks": a linear memory ``c_t = theta c_{t-1} + theta_g g_t``, read out as ``h_t = tanh(c_t)``.
    In jaxrnn's row convention ``c_t = c_{t-1} @ W_hh + x_t @ W_xh`` (``W_hh = theta^T``, ``W_xh =
    theta_g^T``); ``W_hh`` starts as the identity, so the cell "just accumulates the input". Params ``W_xh (I,
    H)``, ``W_hh (H, H)``; the carry is ``c (*batch, H)``, the output ``tanh(c) (*batch, H)``.
    """
    hidden_size = check.positive_int(hidden_size, "accumulator: hidden_size")
    if kind not in ("sum", "naive"):
        raise ValueError(f"accumulator: kind must be 'sum' or 'naive'; got {kind!r}")
    dtype = check.float_dtype(dtype, "accumulator: dtype")
    resolve_inits("accumulator", kernel_init, recurrent_init, "zeros")
    hp = dict(
        hidden_size=hidden_size,
        kind=kind,
        dtype=dtype,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
    )
    return Cell(accumulator, _build_accumulator, hp)


def _build_accumulator(hidden_size, kind, dtype, kernel_init, recurrent_init) -> CellFns:
    if kind == "sum":
        carry_dtype = dtype

        def init(key, input_size, dtype=carry_dtype):
            del key
            n_in, dtype = check.init_args("accumulator", input_size, dtype)
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

        return CellFns(
            init,
            lambda params, batch_shape=(): jnp.zeros((*tuple(batch_shape), hidden_size), carry_dtype),
            lambda params, x: x,
            lambda params, s, px: s + px,
            _identity,
            input_size=lambda params: hidden_size,
        )
    k_init, r_init, b_init = resolve_inits("accumulator", kernel_init, recurrent_init, "zeros")

    def init_naive(key, input_size, dtype=jnp.float32):
        params = _dense_params("accumulator", k_init, r_init, b_init, hidden_size)(key, input_size, dtype)
        del params["b"]
        return params

    return CellFns(
        init_naive,
        hidden_zeros(hidden_size),
        lambda params, x: x @ params["W_xh"],
        lambda params, c, px: c @ params["W_hh"] + px,
        jnp.tanh,
    )
