"""Recurrent cells as pure step functions: the :class:`Cell` type and one module per family.

* :mod:`~jaxrnn.cells.simple` -- Elman (S-RNN), IRNN, np-RNN, continuous-time RNN, accumulators.
* :mod:`~jaxrnn.cells.lstm` -- LSTM (with forget gate, optional peepholes) and the 1997 LSTM.
* :mod:`~jaxrnn.cells.gru` -- GRU (reset after or before the matmul) and the minimal gated unit.
* :mod:`~jaxrnn.cells.mrnn` -- the multiplicative RNN.
* :mod:`~jaxrnn.cells.normalised` -- the batch-normalised LSTM (Cooijmans et al.) and the
  layer-normalised LSTM (Ba et al.).
* :mod:`~jaxrnn.cells.parallel` -- linear-recurrence cells computed by a parallel scan: minGRU,
  minLSTM (Feng et al.) and the LRU (Orvieto et al.).
* :mod:`~jaxrnn.cells.dropout` -- recurrent dropout (Semeniuta et al.; Gal and Ghahramani) as a
  Cell -> Cell transform.
"""

from jaxrnn.cells.base import Cell, LSTMState, SequenceKernel, learned_initial_state
from jaxrnn.cells.dropout import DropoutState, RecurrentMasks, recurrent_dropout
from jaxrnn.cells.gru import gru, mgu
from jaxrnn.cells.lstm import lstm, lstm1997
from jaxrnn.cells.mrnn import mrnn
from jaxrnn.cells.normalised import BNLSTMState, BNStatistics, bn_lstm, bn_statistics, ln_lstm
from jaxrnn.cells.parallel import LRUState, lru, min_gru, min_lstm
from jaxrnn.cells.simple import accumulator, ctrnn, elman, irnn, np_rnn

__all__ = [
    "BNLSTMState",
    "BNStatistics",
    "Cell",
    "DropoutState",
    "LRUState",
    "LSTMState",
    "RecurrentMasks",
    "SequenceKernel",
    "accumulator",
    "bn_lstm",
    "bn_statistics",
    "ctrnn",
    "elman",
    "gru",
    "irnn",
    "learned_initial_state",
    "ln_lstm",
    "lstm",
    "lru",
    "lstm1997",
    "mgu",
    "min_gru",
    "min_lstm",
    "mrnn",
    "np_rnn",
    "recurrent_dropout",
]
