"""jaxrnn: JAX functional RNN kernels.

Every recurrent cell of the classic RNN literature as a pure step function
(:class:`~jaxrnn.Cell`), unrolled by one ``jax.lax.scan`` (:func:`~jaxrnn.unroll`), with sequence
layers (:func:`~jaxrnn.bidirectional`, :func:`~jaxrnn.stack`), initialisers
(:mod:`jaxrnn.initializers`) and weight interop with PyTorch and Flax (:mod:`jaxrnn.interop`).

    import jaxrnn as jr
    cell = jr.lstm(128)
    params = cell.init(key, input_size=32)
    final, ys = jr.unroll(cell, params, xs)     # xs (T, B, 32) -> ys (T, B, 128)
"""

from jaxrnn import cells, initializers, interop
from jaxrnn.cells import (
    Cell,
    LSTMState,
    accumulator,
    ctrnn,
    elman,
    gru,
    irnn,
    learned_initial_state,
    lstm,
    lstm1997,
    mgu,
    mrnn,
    np_rnn,
)
from jaxrnn.unroll import Layer, bidirectional, layer, stack, unroll

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "LSTMState",
    "Layer",
    "accumulator",
    "bidirectional",
    "cells",
    "ctrnn",
    "elman",
    "gru",
    "initializers",
    "interop",
    "irnn",
    "layer",
    "learned_initial_state",
    "lstm",
    "lstm1997",
    "mgu",
    "mrnn",
    "np_rnn",
    "stack",
    "unroll",
]
