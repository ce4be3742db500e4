"""A deep (stacked) RNN that is itself a :class:`~jaxrnn.Cell`, as dm-haiku's ``DeepRNN`` is a core.

Stacked RNNs (Kitov's "Recurrent neural nets" lecture; Graves, Mohamed & Hinton 2013) feed the output
of layer ``l - 1`` at step ``t`` into layer ``l`` at the same step. Written as one step function over the
tuple of the layers' carries, a stack is a Cell: everything that takes a Cell -- :func:`jaxrnn.unroll`,
:func:`jaxrnn.tbptt`, :func:`jaxrnn.pascanu`, the diagnostics, :func:`jaxrnn.truncate` -- takes a stack.
:func:`jaxrnn.stack` computes the same thing layer by layer (each layer one scan, the fused kernels
where they apply): use it for speed, ``deep_rnn`` for the per-step view.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns, recur_with_step_index

__all__ = ["deep_rnn", "init_in_sequence"]


def deep_rnn(*cells: Cell, skip: bool = False) -> Cell:
    """A stack of cells run one after the other within each step: itself a :class:`~jaxrnn.Cell`.

    Params are the tuple of the cells' params in order, the carry the tuple of their carries; the input
    of cell ``l`` is the output of cell ``l - 1`` at the same step (the first reads ``x_t (*batch, I)``), and
    with ``skip=True`` each cell after the first adds its input to its output (residual connections, as
    :func:`jaxrnn.stack` with ``skip=True``). The output is the last cell's, ``(*batch, H_L)``. In plain
    Python::

        def step(params, carry, x, t=None):
            h, new = x, []
            for l, (cell, p, c) in enumerate(zip(cells, params, carry)):
                c = cell.step(p, c, h, t)
                y = cell.output(c)
                h = y + h if (skip and l > 0) else y
                new.append(c)
            return tuple(new)                       # output(carry) recomputes h from the carries

    ``unroll(deep_rnn(a, b), (pa, pb), xs)`` equals ``stack(a, b).apply((pa, pb), xs)`` (values and
    gradients) and ``init`` draws the same parameters from the same key. A truncated or dropped-out cell
    inside keeps its behaviour (``cut`` and the step index reach every cell); the diagnostics see the
    whole stack's state, all carries flattened in order.

    Args:
      *cells: at least one :class:`~jaxrnn.Cell`.
      skip: residual connections between consecutive cells (equal widths, checked at ``init``).

    Returns:
      A :class:`~jaxrnn.Cell` ``deep_rnn(cells=(...), skip=...)``; ``input_size`` is the first cell's.
    """
    fn = "deep_rnn"
    if not cells:
        raise ValueError(f"{fn}: give at least one Cell")
    cells = tuple(check.cell(c, fn) for c in cells)
    return Cell(deep_rnn, _build_deep_rnn, {"skip": check.bool_arg(skip, f"{fn}: skip")}, {"cells": cells})


def init_in_sequence(units, key, input_size, dtype, output_size, *, skip: bool, fn: str, unit: str) -> tuple:
    """The params of units applied one after the other: unit ``l`` is initialised with ``split(key,
    L)[l]`` for the width unit ``l - 1`` puts out (``output_size(unit, params)``); with ``skip``, every
    unit after the first must keep the width. Shared by :func:`deep_rnn` and :func:`jaxrnn.stack`, so
    that both draw the same parameters from the same key. In plain Python::

        params, n_in = [], input_size
        for unit, k in zip(units, split(key, len(units))):
            params.append(unit.init(k, n_in, dtype))
            n_in = output_size(unit, params[-1])
        return tuple(params)
    """
    params, n_in = [], input_size
    for l, (u, k) in enumerate(zip(units, jax.random.split(key, len(units)))):
        p = u.init(k, n_in, dtype)
        n_out = output_size(u, p)
        if skip and l > 0 and n_out != n_in:
            raise ValueError(
                f"{fn}: skip=True needs equal widths, but {unit} {l} ({u.name}) maps {n_in} features "
                f"to {n_out}"
            )
        params.append(p)
        n_in = n_out
    return tuple(params)


def _output_size(cell: Cell, params) -> int:
    return jax.eval_shape(lambda p: cell.output(cell.initial_carry(p, ())), params).shape[-1]


def _build_deep_rnn(skip: bool, cells: tuple) -> CellFns:
    L = len(cells)
    recurs = [recur_with_step_index(c.fns) for c in cells]

    def check_params(params, what="params"):
        if not isinstance(params, (tuple, list)) or len(params) != L:
            got = f"{type(params).__name__} of length {len(params)}" if hasattr(params, "__len__") else params
            raise ValueError(f"deep_rnn: {what} must be a tuple with one entry per cell ({L}); got {got}")

    def init(key, input_size, dtype=jnp.float32):
        return init_in_sequence(
            cells, key, input_size, dtype, _output_size, skip=skip, fn="deep_rnn", unit="cell"
        )

    def initial_carry(params, batch_shape=()):
        check_params(params)
        return tuple(c.initial_carry(p, batch_shape) for c, p in zip(cells, params))

    def project(params, x):
        check_params(params)
        return cells[0].project(params[0], x)

    def recur(params, carry, px, t=None):
        new = [recurs[0](params[0], carry[0], px, t)]
        h = cells[0].output(new[0])
        for l in range(1, L):
            c = recurs[l](params[l], carry[l], cells[l].project(params[l], h), t)
            y = cells[l].output(c)
            h = y + h if skip else y
            new.append(c)
        return tuple(new)

    def output(carry):
        h = cells[0].output(carry[0])
        for l in range(1, L):
            y = cells[l].output(carry[l])
            h = y + h if skip else y
        return h

    def cut(carry, t):
        return tuple(c.cut(s, t) for c, s in zip(cells, carry))

    limits = [c.step_limit for c in cells if c.step_limit is not None]
    return CellFns(
        init,
        initial_carry,
        project,
        recur,
        output,
        input_size=lambda params: cells[0].input_size(params[0]),
        cut=cut if any(c.has_cut for c in cells) else None,
        uses_step_index=any(c.uses_step_index for c in cells),
        step_limit=min(limits) if limits else None,
    )
