"""jaxrnn: JAX functional RNN kernels.

Every recurrent cell of the classic RNN literature as a pure step function
(:class:`~jaxrnn.Cell`), unrolled by one ``jax.lax.scan`` (:func:`~jaxrnn.unroll`), with sequence
layers (:func:`~jaxrnn.bidirectional`, :func:`~jaxrnn.stack`), the losses of the acceptor, transducer and
encoder patterns (:mod:`jaxrnn.losses`), initialisers
(:mod:`jaxrnn.initializers`), weight interop with PyTorch and Flax (:mod:`jaxrnn.interop`),
truncated BPTT of every kind (:mod:`jaxrnn.truncation`), Pascanu's regulariser
(:mod:`jaxrnn.regularisers`) and the optax transforms of his recipe (:mod:`jaxrnn.optim`),
Hessian-free optimisation (:mod:`jaxrnn.second_order`), recurrent dropout and normalised LSTMs, and
spectral, Jacobian and Lyapunov diagnostics (:mod:`jaxrnn.diagnostics`).

    import jaxrnn as jr
    cell = jr.lstm(128)
    params = cell.init(key, input_size=32)
    final, ys = jr.unroll(cell, params, xs)     # xs (T, B, 32) -> ys (T, B, 128)
"""

from jaxrnn import (
    cells,
    diagnostics,
    initializers,
    interop,
    kernels,
    losses,
    optim,
    regularisers,
    second_order,
    truncation,
)
from jaxrnn.cells import (
    Cell,
    LSTMState,
    accumulator,
    bn_lstm,
    ctrnn,
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
    np_rnn,
    recurrent_dropout,
)
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
from jaxrnn.regularisers import pascanu
from jaxrnn.second_order import hessian_free
from jaxrnn.truncation import tbptt, truncate
from jaxrnn.unroll import Layer, bidirectional, layer, stack, state_gradients, unroll

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "LSTMState",
    "Layer",
    "accumulator",
    "bidirectional",
    "bn_lstm",
    "cells",
    "ctrnn",
    "diagnostics",
    "elman",
    "gradient_bound",
    "gradient_flow",
    "gru",
    "hessian_free",
    "initializers",
    "interop",
    "irnn",
    "jacobian_norms",
    "kaplan_yorke_dimension",
    "kernels",
    "layer",
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
    "np_rnn",
    "optim",
    "pascanu",
    "recurrent_dropout",
    "regularisers",
    "second_order",
    "spectral_radius",
    "stack",
    "state_gradients",
    "step_jacobians",
    "tbptt",
    "truncate",
    "truncation",
    "unroll",
]
