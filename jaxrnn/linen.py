"""A jaxrnn cell as a Flax linen module: :class:`RNN`.

Needs ``flax`` (``pip install 'jaxrnn[flax]'``). The module's ``"params"`` collection *is* the cell's
parameter dict, so :mod:`jaxrnn.interop`, :func:`jaxrnn.pascanu`, the diagnostics and
``jr.unroll`` take ``variables["params"]`` unchanged::

    import jaxrnn as jr

    rnn = jr.linen.RNN(jr.lstm(64))
    variables = rnn.init(key, xs)                  # xs (B, T, F)
    ys = rnn.apply(variables, xs)                  # (B, T, 64), as nn.RNN
    jr.unroll(rnn.cell, variables["params"], xs, time_axis=1)   # the same ys
"""

from __future__ import annotations

import jax

from jaxrnn.cells.base import Cell
from jaxrnn.cells.dropout import recurrent_dropout as dropout_transform
from jaxrnn.frameworks import missing
from jaxrnn.unroll import unroll

try:
    import flax.linen as nn
except ImportError as e:  # pragma: no cover - exercised only without flax
    raise missing("jaxrnn.linen", "flax", e) from None

__all__ = ["RNN"]


class RNN(nn.Module):
    """A recurrent layer over a :class:`~jaxrnn.Cell`: ``xs (B, T, F) -> ys (B, T, H)`` (``time_major``:
    ``(T, B, F)``), any number of batch dims.

    Fields: ``cell`` (a :class:`~jaxrnn.Cell`, hashable, so it is a module attribute like any
    hyper-parameter), ``time_major=False``, ``recurrent_dropout=0.0`` and ``dropout_kind``. The
    ``"params"`` collection holds ``cell.init(rng, F)``, one linen param per top-level key of that dict.
    ``__call__(xs, *, lengths=None, carry=None, return_carry=False, key=None)`` is, in plain Python::

        params = variables["params"]                      # the cell's dict, as cell.init makes it
        cell = recurrent_dropout(self.cell, rate, key) if key is not None else self.cell
        final, ys = jr.unroll(cell, params, xs, carry, lengths=lengths, time_axis=0 or 1)
        return (final, ys) if return_carry else ys
    """

    cell: Cell
    time_major: bool = False
    recurrent_dropout: float = 0.0
    dropout_kind: str = "semeniuta"

    @nn.compact
    def __call__(self, xs, *, lengths=None, carry=None, return_carry: bool = False, key=None):
        axis = 0 if self.time_major else 1
        n_in = xs.shape[-1]
        names = jax.eval_shape(lambda k: self.cell.init(k, n_in), jax.random.PRNGKey(0))
        made = {}

        def init_entry(rng, name):
            if "all" not in made:  # one cell.init for all entries, from the first entry's rng
                made["all"] = self.cell.init(rng, n_in)
            return made["all"][name]

        params = {name: self.param(name, init_entry, name) for name in names}
        cell = self.cell
        if key is not None and self.recurrent_dropout > 0.0:
            cell = dropout_transform(cell, self.recurrent_dropout, key, kind=self.dropout_kind)
        final, ys = unroll(cell, params, xs, carry, lengths=lengths, time_axis=axis)
        return (final, ys) if return_carry else ys
