"""jaxrnn: JAX functional RNN kernels.

Every recurrent cell of the classic RNN literature as a pure step function, unrolled by one
``jax.lax.scan`` (:func:`unroll`), with layers, losses, initialisers, weight interop, truncated BPTT,
Pascanu's regulariser, Hessian-free optimisation and spectral, Jacobian and Lyapunov diagnostics::

    import jaxrnn as jr
    cell = jr.lstm(128)
    params = cell.init(key, input_size=32)
    final, ys = jr.unroll(cell, params, xs)     # xs (T, B, 32) -> ys (T, B, 128)

**The Cell contract** (:class:`Cell`). A cell is a value: made by a factory (``jr.lstm(128)``) or a
transform, equal and hashed by factory, hyper-parameters (``cell.hparams``, static) and data
(``cell.data``: arrays and wrapped cells, the pytree leaves); its repr is the factory call. Fields:

* ``init(key, input_size, dtype) -> params``; ``initial_carry(params, batch_shape) -> carry``;
* ``project(params, x) -> px`` (the input-only part) and ``recur(params, carry, px, t=None) -> carry``;
  ``step(params, carry, x, t=None) = recur(params, carry, project(params, x), t)``;
* ``output(carry) -> y``; ``input_size(params)``;
* capabilities: ``cut(carry, t)`` (a gradient-only map, identity unless truncated), ``uses_step_index``,
  ``step_limit``, ``kernel`` (a whole-sequence fast path), ``form`` (an Elman-type recurrence with its
  :class:`Activation`, for the bound and Omega), ``fns.masked_recur`` (for recurrent dropout).

``t`` is per-step data, the index of the step in its sequence (since the start or the last reset, plus
``t0``), supplied by :func:`unroll` and every consumer; only cells with ``uses_step_index`` read it.

**What a transform may do** (Cell -> Cell: :func:`truncate`, :func:`recurrent_dropout`,
:func:`learned_initial_state`, :func:`deep_rnn`): change ``init``/``initial_carry`` (a learned ``s_0``),
the dynamics through per-step data (dropout masks drawn from the key, the batch row and ``t``), the
gradients through ``cut``, or combine cells (a deep RNN's carry is the tuple of its cells' carries).
**What it may not do**: put anything in the carry that the wrapped cell does not have (no counters, no
keys, no masks), change values through ``cut``, or hide its data in closures (data are leaves).
``recurrent_dropout(c, rate, None)`` returns ``c`` itself.

**What a consumer does** (:func:`unroll`, :func:`parallel_newton`, :func:`tbptt`,
:func:`state_gradients`, :func:`gradient_flow`, :func:`pascanu`, the layers, the diagnostics): it
supplies ``t``; the unrolling consumers apply ``cut`` to the carry entering each step (so truncation
changes gradients); the diagnostics step with ``recur`` only (they describe the dynamics, so a truncated
cell has its wrapped cell's Jacobians and exponents). Each takes every transform and composition, or
raises an error naming what it cannot serve and why (``tests/test_composition.py`` holds the whole
matrix to plain-loop references).

Modules: :mod:`jaxrnn.cells`, :mod:`jaxrnn.lds`, :mod:`jaxrnn.hmm`, :mod:`jaxrnn.softmax`,
:mod:`jaxrnn.decoding`, :mod:`jaxrnn.renet`, :mod:`jaxrnn.activations`, :mod:`jaxrnn.initialisers`,
:mod:`jaxrnn.unroll`, :mod:`jaxrnn.newton`, :mod:`jaxrnn.truncation`, :mod:`jaxrnn.regularisers`,
:mod:`jaxrnn.optim`, :mod:`jaxrnn.losses`, :mod:`jaxrnn.second_order`, :mod:`jaxrnn.diagnostics`,
:mod:`jaxrnn.interop`, :mod:`jaxrnn.kernels`, and :mod:`jaxrnn.validators` (the argument checks every
module shares). The framework modules :mod:`jaxrnn.nnx`, :mod:`jaxrnn.linen` (extra ``flax``) and
:mod:`jaxrnn.eqx` (extra ``equinox``) are imported on first use.
"""

from jaxrnn import (
    activations,
    cells,
    decoding,
    diagnostics,
    hmm,
    initialisers,
    interop,
    kernels,
    lds,
    losses,
    newton,
    optim,
    regularisers,
    second_order,
    softmax,
    truncation,
    validators,
)
from jaxrnn.activations import Activation
from jaxrnn.cells import (
    Cell,
    LSTMCarry,
    accumulator,
    bn_lstm,
    ctrnn,
    deep_rnn,
    delay_taps,
    elman,
    gru,
    irnn,
    learned_initial_state,
    ln_lstm,
    lru,
    lstm,
    lstm1997,
    mgu,
    min_gru,
    min_lstm,
    mrnn,
    narx,
    np_rnn,
    recurrent_dropout,
)
from jaxrnn.deprecation import module_getattr
from jaxrnn.diagnostics import (
    gradient_bound,
    gradient_flow,
    jacobian_norms,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    max_singular_value,
    spectral_radius,
    step_jacobians,
)
from jaxrnn.newton import parallel_newton
from jaxrnn.regularisers import pascanu
from jaxrnn.renet import ReNet, renet
from jaxrnn.second_order import hessian_free
from jaxrnn.truncation import tbptt, truncate
from jaxrnn.unroll import Layer, bidirectional, layer, stack, state_gradients, unroll

__version__ = "0.1.0"

# deprecated names (the vocabulary is "carry"; module names are spelt one way)
_deprecated = module_getattr(
    "jaxrnn",
    {
        "LSTMState": ("jaxrnn.cells", "LSTMCarry"),
        "initializers": ("jaxrnn.initialisers", ""),
    },
)
_FRAMEWORKS = ("nnx", "linen", "eqx")  # imported on first use: they need flax / equinox (extras)


def __getattr__(name):
    if name in _FRAMEWORKS:
        import importlib

        return importlib.import_module(f"jaxrnn.{name}")
    return _deprecated(name)


__all__ = [
    "Activation",
    "Cell",
    "LSTMCarry",
    "Layer",
    "ReNet",
    "accumulator",
    "activations",
    "bidirectional",
    "bn_lstm",
    "cells",
    "ctrnn",
    "decoding",
    "deep_rnn",
    "delay_taps",
    "diagnostics",
    "elman",
    "gradient_bound",
    "gradient_flow",
    "gru",
    "hessian_free",
    "hmm",
    "initialisers",
    "interop",
    "irnn",
    "jacobian_norms",
    "kaplan_yorke_dimension",
    "kernels",
    "layer",
    "lds",
    "learned_initial_state",
    "ln_lstm",
    "lstm",
    "losses",
    "lru",
    "lstm1997",
    "lyapunov_spectrum",
    "max_singular_value",
    "mgu",
    "min_gru",
    "min_lstm",
    "mrnn",
    "narx",
    "newton",
    "np_rnn",
    "optim",
    "parallel_newton",
    "pascanu",
    "recurrent_dropout",
    "regularisers",
    "renet",
    "second_order",
    "softmax",
    "spectral_radius",
    "stack",
    "state_gradients",
    "step_jacobians",
    "tbptt",
    "truncate",
    "truncation",
    "unroll",
    "validators",
]
