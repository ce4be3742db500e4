"""Recurrent cells as pure step functions: the :class:`Cell` type and one module per family.

* :mod:`~jaxrnn.cells.simple` -- Elman (S-RNN), IRNN, np-RNN, continuous-time RNN, accumulators.
* :mod:`~jaxrnn.cells.lstm` -- LSTM (with forget gate, optional peepholes) and the 1997 LSTM.
* :mod:`~jaxrnn.cells.gru` -- GRU (reset after or before the matmul) and the minimal gated unit.
* :mod:`~jaxrnn.cells.mrnn` -- the multiplicative RNN.
"""

from jaxrnn.cells.base import Cell, LSTMState, learned_initial_state
from jaxrnn.cells.gru import gru, mgu
from jaxrnn.cells.lstm import lstm, lstm1997
from jaxrnn.cells.mrnn import mrnn
from jaxrnn.cells.simple import accumulator, ctrnn, elman, irnn, np_rnn

__all__ = [
    "Cell",
    "LSTMState",
    "accumulator",
    "ctrnn",
    "elman",
    "gru",
    "irnn",
    "learned_initial_state",
    "lstm",
    "lstm1997",
    "mgu",
    "mrnn",
    "np_rnn",
]
