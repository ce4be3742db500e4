"""A jaxrnn cell as a Flax NNX module: :class:`RNN`.

Needs ``flax`` (``pip install 'jaxrnn[flax]'``). The module holds the cell's parameters as
``nnx.Param`` leaves of the same dict that :func:`jaxrnn.unroll` takes (``module.cell_params``), so
``nnx.jit``, ``nnx.grad``/``nnx.value_and_grad``, ``nnx.Optimizer``, ``nnx.split``/``nnx.merge`` and
orbax checkpoints work as for any NNX module, and the fused kernels run underneath::

    from flax import nnx
    import jaxrnn as jr

    rnn = jr.nnx.RNN(jr.gru(64), in_features=8, rngs=nnx.Rngs(0))
    ys = rnn(xs)                                   # xs (B, T, 8) -> ys (B, T, 64), as nnx.RNN
    omega = jr.pascanu(rnn.cell, rnn.cell_params, xs, loss_of_ys, time_axis=1)
"""

from __future__ import annotations

import jax

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.cells.dropout import recurrent_dropout
from jaxrnn.frameworks import missing
from jaxrnn.unroll import unroll

try:
    from flax import nnx
except ImportError as e:  # pragma: no cover - exercised only without flax
    raise missing("jaxrnn.nnx", "flax", e) from None

__all__ = ["RNN"]


def _is_param(x) -> bool:
    return isinstance(x, nnx.Variable)


class RNN(nnx.Module):
    """A recurrent layer over a :class:`~jaxrnn.Cell`: ``xs (B, T, F) -> ys (B, T, H)`` (``time_major``:
    ``(T, B, F)``), any number of batch dims.

    ``RNN(cell, in_features, *, rngs, time_major=False, params=None, recurrent_dropout=0.0,
    dropout_kind="semeniuta")``: the parameters are ``cell.init(rngs.params(), in_features)``, or
    ``params`` (e.g. converted from PyTorch with :mod:`jaxrnn.interop`), each leaf an ``nnx.Param``.
    ``__call__(xs, *, lengths=None, carry=None, return_carry=False, key=None)`` is, in plain Python::

        cell = recurrent_dropout(self.cell, rate, key) if key is not None else self.cell
        final, ys = jr.unroll(cell, self.cell_params, xs, carry, lengths=lengths, time_axis=0 or 1)
        return (final, ys) if return_carry else ys

    ``lengths (B,)`` masks padding (``ys`` is zero there, ``final`` is each sequence's last valid
    carry); ``key`` switches on the recurrent dropout given at construction (no key: inference).
    ``cell_params`` is the plain dict of arrays that every jaxrnn function takes, so Omega, the
    diagnostics and ``state_gradients`` of the trained layer are one call away; ``cell`` is a
    :class:`~jaxrnn.Cell` (static: equal cells give equal graph definitions, so a rebuilt model does
    not recompile).
    """

    def __init__(
        self,
        cell: Cell,
        in_features: int,
        *,
        rngs: nnx.Rngs,
        time_major: bool = False,
        params=None,
        recurrent_dropout: float = 0.0,
        dropout_kind: str = "semeniuta",
    ):
        fn = "jaxrnn.nnx.RNN"
        self.cell = check.cell(cell, fn)
        self.in_features = check.positive_int(in_features, f"{fn}: in_features")
        self.time_major = check.bool_arg(time_major, f"{fn}: time_major")
        self.recurrent_dropout = check.rate(recurrent_dropout, f"{fn}: recurrent_dropout")
        self.dropout_kind = dropout_kind
        if params is None:
            params = cell.init(rngs.params(), self.in_features)
        else:
            params = jax.tree.map(lambda v: v[...] if _is_param(v) else v, params, is_leaf=_is_param)
            check.params(cell, params, fn, "params")
            if cell.input_size(params) != self.in_features:
                raise ValueError(
                    f"{fn}: params are for input_size={cell.input_size(params)}; "
                    f"got in_features={in_features}"
                )
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    @property
    def cell_params(self):
        """The cell's parameters as the plain pytree of arrays :func:`jaxrnn.unroll` takes."""
        return jax.tree.map(lambda v: v[...], self.params, is_leaf=_is_param)

    def __call__(self, xs, *, lengths=None, carry=None, return_carry: bool = False, key=None):
        cell = self.cell
        if key is not None and self.recurrent_dropout > 0.0:
            cell = recurrent_dropout(cell, self.recurrent_dropout, key, kind=self.dropout_kind)
        final, ys = unroll(
            cell, self.cell_params, xs, carry, lengths=lengths, time_axis=0 if self.time_major else 1
        )
        return (final, ys) if return_carry else ys
