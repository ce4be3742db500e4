"""Recurrent cells as pure step functions: the :class:`Cell` type and one module per family.

* :mod:`~jaxrnn.cells.base` -- the :class:`Cell` value type, :func:`learned_initial_state`, and
  :func:`custom` for a cell from your own functions.
* :mod:`~jaxrnn.cells.simple` -- Elman (S-RNN), IRNN, np-RNN, continuous-time RNN, accumulators.
* :mod:`~jaxrnn.cells.lstm` -- LSTM (with forget gate, optional peepholes) and the 1997 LSTM.
* :mod:`~jaxrnn.cells.gru` -- GRU (reset after or before the matmul) and the minimal gated unit.
* :mod:`~jaxrnn.cells.mrnn` -- the multiplicative RNN.
* :mod:`~jaxrnn.cells.delay` -- the memoryless baselines on delay taps: the autoregressive model AR(p)
  (:func:`delay_taps`, fitted in closed form by :func:`fit_delay_taps`) and NARX (:func:`narx`).
* :mod:`~jaxrnn.cells.normalised` -- the batch-normalised LSTM (Cooijmans et al.) and the
  layer-normalised LSTM (Ba et al.).
* :mod:`~jaxrnn.cells.parallel` -- linear-recurrence cells computed by a parallel scan: minGRU,
  minLSTM (Feng et al.) and the LRU (Orvieto et al.).
* :mod:`~jaxrnn.cells.dropout` -- recurrent dropout (Semeniuta et al.; Gal and Ghahramani) as a
  Cell -> Cell transform.
* :mod:`~jaxrnn.cells.deep` -- :func:`deep_rnn`, a stack of cells that is itself a Cell.
"""

from jaxrnn.cells.base import (
    Cell,
    CellFns,
    LSTMCarry,
    RecurrentForm,
    SequenceKernel,
    custom,
    learned_initial_state,
)
from jaxrnn.cells.deep import deep_rnn
from jaxrnn.cells.delay import DelayCarry, delay_taps, fit_delay_taps, narx
from jaxrnn.cells.dropout import RecurrentMasks, recurrent_dropout
from jaxrnn.cells.gru import gru, mgu
from jaxrnn.cells.lstm import lstm, lstm1997
from jaxrnn.cells.mrnn import mrnn
from jaxrnn.cells.normalised import BNStatistics, bn_lstm, bn_statistics, ln_lstm
from jaxrnn.cells.parallel import LRUCarry, lru, min_gru, min_lstm
from jaxrnn.cells.simple import accumulator, ctrnn, elman, irnn, np_rnn
from jaxrnn.deprecation import module_getattr

__all__ = [
    "BNStatistics",
    "Cell",
    "CellFns",
    "DelayCarry",
    "LRUCarry",
    "LSTMCarry",
    "RecurrentForm",
    "RecurrentMasks",
    "SequenceKernel",
    "accumulator",
    "bn_lstm",
    "bn_statistics",
    "ctrnn",
    "custom",
    "deep_rnn",
    "delay_taps",
    "elman",
    "fit_delay_taps",
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
    "narx",
    "np_rnn",
    "recurrent_dropout",
]

# deprecated names: the carry types are called carries
__getattr__ = module_getattr(
    "jaxrnn.cells",
    {"LSTMState": ("jaxrnn.cells", "LSTMCarry"), "LRUState": ("jaxrnn.cells", "LRUCarry")},
)
