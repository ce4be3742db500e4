"""Truncated backpropagation through time as data plus a Cell -> Cell transform.

A *schedule* is a boolean array ``cuts (T,)``: ``cuts[t]`` says that the gradient through the carry
entering step ``t`` is cut (``s_{t-1}`` is treated as a constant, ``jax.lax.stop_gradient``). Full BPTT
is the schedule with no cuts; :func:`every` cuts every ``k`` steps; :func:`random_lengths` cuts after
segments of random length. :func:`truncate` turns any cell into one that applies a schedule, so the
truncation composes with :func:`~jaxrnn.unroll` (lengths, resets, reverse, remat), layers, and
``jax.grad``: it is still one ``lax.scan``.

This is truncated BPTT "II" of seeds 000 and 003 -- the state is carried forward for ever, the
gradient flows back only to the last cut -- in its windowed form: with cuts every ``k`` steps a loss at
step ``t`` is back-propagated ``t mod k + 1`` steps (between 1 and ``k``), not exactly ``k``.

Cutting the gradient does not by itself save memory: the scan still stores every step's residuals
for the backward pass. To bound memory use ``remat=True`` in :func:`~jaxrnn.unroll`, or chunked
truncated BPTT (one update per chunk of ``k`` steps, seed 004's pseudocode).
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Cell, positive_int

__all__ = ["TruncatedState", "every", "no_cuts", "random_lengths", "truncate"]


def no_cuts(length: int) -> jax.Array:
    """The schedule of full BPTT: ``(length,)`` all False."""
    return jnp.zeros((positive_int(length, "no_cuts: length"),), jnp.bool_)


def every(k: int, length: int, offset: int = 0) -> jax.Array:
    """Cut every ``k`` steps: ``cuts[t] = (t >= 1) and ((t - offset) % k == 0)``, shape ``(length,)``.

    The gradient of a loss at step ``t`` then reaches back to the last cut, at most ``k`` steps
    (windows ``[offset + j k, offset + (j+1) k)``). ``k >= length`` means no cut. In plain Python::

        cuts = [t >= 1 and (t - offset) % k == 0 for t in range(length)]
    """
    k = positive_int(k, "every: k")
    length = positive_int(length, "every: length")
    offset = operator.index(offset)
    t = jnp.arange(length)
    return (t >= 1) & ((t - offset) % k == 0)


def random_lengths(key, length: int, k_min: int, k_max: int) -> jax.Array:
    """Cuts after segments of random length, each uniform in ``[k_min, k_max]``: ``(length,)`` bools.

    The first segment starts at step 0; a cut at the start of every later one. jit-safe (``length``,
    ``k_min`` and ``k_max`` are static). In plain Python::

        cuts, t = [False] * length, 0
        while True:
            t += random.randint(k_min, k_max)
            if t >= length: break
            cuts[t] = True
    """
    length = positive_int(length, "random_lengths: length")
    k_min = positive_int(k_min, "random_lengths: k_min")
    k_max = positive_int(k_max, "random_lengths: k_max")
    if k_max < k_min:
        raise ValueError(f"random_lengths: k_max must be >= k_min={k_min}; got k_max={k_max}")
    n = -(-length // k_min)  # enough segments to cover the sequence
    starts = jnp.cumsum(jax.random.randint(key, (n,), k_min, k_max + 1))
    return jnp.zeros((length,), jnp.bool_).at[starts].set(True, mode="drop")


class TruncatedState(NamedTuple):
    """The carry of a :func:`truncate`-d cell: the step counter ``t (*batch)`` (int32, steps since the
    start or the last reset) and the wrapped cell's carry ``inner``."""

    t: jax.Array
    inner: Any


def truncate(cell: Cell, cuts) -> Cell:
    """Cell -> Cell: cut the gradient through the carry before the steps a schedule marks.

    The new cell's carry is :class:`TruncatedState` ``(t, inner)``; its step is::

        s_in = stop_gradient(inner) if cuts[t] else inner
        return TruncatedState(t + 1, cell.step(params, s_in, x))

    Values are unchanged (``stop_gradient`` is the identity); only gradients see the cuts. ``t`` counts
    the steps taken since the start (or the last reset in :func:`~jaxrnn.unroll`, which restores
    ``t = 0``, so a schedule applies per episode; with ``reverse=True`` ``t`` counts in processing
    order). ``output``, ``input_size``, ``hparams`` are the wrapped cell's. Steps beyond the schedule
    reuse its last entry (``jnp`` indexing clamps): check lengths with ``len(cuts) == T`` yourself, or
    build the schedule for the sequence at hand. In plain Python, for a loss ``L`` of the outputs::

        s = s0
        for t in range(T):
            if cuts[t]:
                s = stop_gradient(s)      # dL/ds_(t-1) through this path is 0
            s = cell.step(params, s, xs[t])

    Cutting does not by itself save memory; ``remat=True`` in :func:`~jaxrnn.unroll` does.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      cuts: ``(T,)`` booleans, e.g. :func:`every`, :func:`random_lengths`, :func:`no_cuts`; data, so
        it may be a traced array (one compiled function serves every schedule of that length).

    Returns:
      A :class:`~jaxrnn.Cell` named ``truncate(<name>)``. Its carry has an integer leaf, so apply
      the Jacobian diagnostics to the wrapped cell.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"truncate: cell must be a jaxrnn Cell; got {type(cell).__name__}")
    if not hasattr(cuts, "dtype"):
        cuts = jnp.asarray(cuts)
    if cuts.dtype != jnp.bool_ or cuts.ndim != 1 or cuts.shape[0] == 0:
        raise ValueError(
            f"truncate: cuts must be a non-empty boolean schedule of shape (T,); got shape "
            f"{tuple(cuts.shape)} and dtype {cuts.dtype}"
        )

    def initial_carry(params, batch_shape=()):
        return TruncatedState(
            jnp.zeros(tuple(batch_shape), jnp.int32), cell.initial_carry(params, batch_shape)
        )

    def recur(params, state, px):
        cut = cuts[state.t]  # (*batch)
        inner = jax.tree.map(
            lambda s: jnp.where(_bcast_cut(cut, s), jax.lax.stop_gradient(s), s), state.inner
        )
        return TruncatedState(state.t + 1, cell.recur(params, inner, px))

    def step(params, state, x):
        return recur(params, state, cell.project(params, x))

    return cell._replace(
        initial_carry=initial_carry,
        step=step,
        recur=recur,
        output=lambda state: cell.output(state.inner),
        name=f"truncate({cell.name})",
    )


def _bcast_cut(cut, leaf):
    return jnp.reshape(cut, cut.shape + (1,) * (jnp.ndim(leaf) - cut.ndim))
