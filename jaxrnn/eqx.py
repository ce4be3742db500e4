"""A jaxrnn cell as an Equinox module: :class:`RNN`.

Needs ``equinox`` (``pip install 'jaxrnn[equinox]'``). As Equinox's own layers, the module maps one
unbatched sequence ``(T, F)``; ``jax.vmap`` it for a batch. ``eqx.filter_jit``, ``eqx.filter_grad`` and
``eqx.tree_serialise_leaves`` work; ``module.params`` is the dict :func:`jaxrnn.unroll` takes::

    import equinox as eqx
    import jaxrnn as jr

    rnn = jr.eqx.RNN(jr.gru(64), in_features=8, key=key)
    ys = jax.vmap(rnn)(xs)                          # xs (B, T, 8) -> ys (B, T, 64)
"""

from __future__ import annotations

import jax

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.cells.dropout import recurrent_dropout as dropout_transform
from jaxrnn.frameworks import missing
from jaxrnn.unroll import unroll

try:
    import equinox
except ImportError as e:  # pragma: no cover - exercised only without equinox
    raise missing("jaxrnn.eqx", "equinox", e) from None

__all__ = ["RNN"]


class RNN(equinox.Module):
    """A recurrent layer over a :class:`~jaxrnn.Cell` for one sequence: ``xs (T, F) -> ys (T, H)``.

    ``RNN(cell, in_features, *, key, params=None, recurrent_dropout=0.0, dropout_kind="semeniuta")``:
    ``params`` is ``cell.init(key, in_features)`` unless given. ``__call__(xs, *, length=None,
    carry=None, return_carry=False, key=None)``, in plain Python::

        cell = recurrent_dropout(self.cell, rate, key) if key is not None else self.cell
        final, ys = jr.unroll(cell, self.params, xs, carry, lengths=length)   # length: a scalar
        return (final, ys) if return_carry else ys

    The cell and the options are static fields (a cell is hashable and equal by value, so a rebuilt
    module does not recompile under ``eqx.filter_jit``); ``params`` are the array leaves.
    """

    params: dict
    cell: Cell = equinox.field(static=True)
    recurrent_dropout: float = equinox.field(static=True, default=0.0)
    dropout_kind: str = equinox.field(static=True, default="semeniuta")

    def __init__(
        self,
        cell: Cell,
        in_features: int,
        *,
        key,
        params=None,
        recurrent_dropout: float = 0.0,
        dropout_kind: str = "semeniuta",
    ):
        fn = "jaxrnn.eqx.RNN"
        self.cell = check.cell(cell, fn)
        n_in = check.positive_int(in_features, f"{fn}: in_features")
        if params is None:
            params = cell.init(key, n_in)
        else:
            check.params(cell, params, fn, "params")
        self.params = params
        self.recurrent_dropout = check.rate(recurrent_dropout, f"{fn}: recurrent_dropout")
        self.dropout_kind = dropout_kind

    def __call__(self, xs, *, length=None, carry=None, return_carry: bool = False, key=None):
        if getattr(xs, "ndim", 2) != 2:
            raise ValueError(
                f"jaxrnn.eqx.RNN: xs must be one sequence (T, F), as Equinox layers take; got shape "
                f"{getattr(xs, 'shape', None)}. For a batch use jax.vmap(rnn)(xs)"
            )
        cell = self.cell
        if key is not None and self.recurrent_dropout > 0.0:
            cell = dropout_transform(cell, self.recurrent_dropout, key, kind=self.dropout_kind)
        xs = xs[:, None]  # unroll's (T, batch, F) with a batch of one
        carry = None if carry is None else jax.tree.map(lambda c: c[None], carry)
        lengths = None if length is None else jax.numpy.reshape(length, (1,))
        final, ys = unroll(cell, self.params, xs, carry, lengths=lengths)
        final = jax.tree.map(lambda c: c[0], final)
        return (final, ys[:, 0]) if return_carry else ys[:, 0]
