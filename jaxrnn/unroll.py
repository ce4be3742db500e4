"""Unrolling a :class:`~jaxrnn.Cell` over time with one ``jax.lax.scan``, and sequence layers.

* :func:`unroll` -- the one scan: variable lengths, resets, reverse, remat, any batch dims.
* :class:`Layer` -- a whole-sequence map ``(params, xs) -> (final_carry, ys)``; :func:`layer` wraps a
  cell, :func:`bidirectional` runs a forward and a backward cell, :func:`stack` composes layers into
  a deep RNN (seed 004), with skip connections and dropout between layers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Cell

__all__ = ["Layer", "bidirectional", "layer", "stack", "state_gradients", "unroll"]


# --------------------------------------------------------------------------------------------------
# argument checks (all run on shapes and dtypes, before tracing; value checks only on concrete data)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_cell(cell, fn: str) -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(f"{fn}: cell must be a jaxrnn Cell (e.g. jr.lstm(128)); got {type(cell).__name__}")
    return cell


def _normalise_axis(time_axis, ndim: int, fn: str) -> int:
    try:
        axis = operator.index(time_axis)
    except TypeError:
        raise TypeError(f"{fn}: time_axis must be an int; got {time_axis!r}") from None
    if not -ndim <= axis < ndim or axis % ndim == ndim - 1:
        raise ValueError(
            f"{fn}: time_axis must index a non-feature axis of xs (rank {ndim}: one of "
            f"0..{ndim - 2}, or -{ndim}..-2); got {time_axis}"
        )
    return axis % ndim


def _check_xs(cell: Cell, params, xs, time_axis, fn: str):
    """Validate ``xs`` and move its time axis to the front: ``(T, *batch, I)``."""
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        xs = jnp.asarray(xs)
    if xs.ndim < 2:
        raise ValueError(
            f"{fn}: xs must have shape (T, *batch, features) with time on axis time_axis; "
            f"got shape {tuple(xs.shape)} (rank {xs.ndim}). Add a time axis for a single step, "
            f"or use cell.step."
        )
    if not (jnp.issubdtype(xs.dtype, jnp.floating) or jnp.issubdtype(xs.dtype, jnp.integer)):
        raise TypeError(f"{fn}: xs must be a real-valued array; got dtype {xs.dtype}")
    axis = _normalise_axis(time_axis, xs.ndim, fn)
    xs = jnp.moveaxis(xs, axis, 0) if axis else xs
    try:
        n_in = cell.input_size(params)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise TypeError(
            f"{fn}: params do not look like {cell.name}'s parameters (make them with "
            f"cell.init(key, input_size)); reading the input size failed with {e!r}"
        ) from None
    if xs.shape[-1] != n_in:
        want = f"(T, *batch, {n_in})" if axis == 0 else f"time on axis {axis}, features {n_in}"
        raise ValueError(
            f"{fn}: xs must have shape {want} for this {cell.name}'s params (input_size={n_in}); "
            f"got {tuple(jnp.moveaxis(xs, 0, axis).shape)}"
        )
    if xs.shape[0] == 0:
        raise ValueError(
            f"{fn}: xs has an empty time axis (T = 0); an unroll needs at least one step "
            f"(use cell.initial_carry(params, batch_shape) for the state before any input)"
        )
    return xs, axis


def _check_carry(cell: Cell, params, carry, batch_shape, fn: str):
    expected = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
    e_leaves, e_tree = jax.tree.flatten(expected)
    try:
        c_leaves, c_tree = jax.tree.flatten(carry)
    except Exception:  # pragma: no cover - flatten of arbitrary objects
        c_leaves, c_tree = None, None
    if c_tree != e_tree:
        raise ValueError(
            f"{fn}: carry must have the structure of cell.initial_carry(params, batch_shape) "
            f"({e_tree}); got {c_tree}"
        )
    for c, e in zip(c_leaves, e_leaves):
        if tuple(jnp.shape(c)) != tuple(e.shape):
            raise ValueError(
                f"{fn}: carry leaves must have shapes "
                f"{[tuple(x.shape) for x in e_leaves]} for batch shape {batch_shape} "
                f"(the batch dims of xs); got {[tuple(jnp.shape(x)) for x in c_leaves]}"
            )
        if _is_concrete(c) and jnp.issubdtype(jnp.result_type(c), jnp.inexact):
            if not np.all(np.isfinite(np.asarray(c))):
                raise ValueError(
                    f"{fn}: carry contains NaN or Inf; the initial state must be finite "
                    f"(check the carry passed in, e.g. the final state of a diverged chunk)"
                )
    return carry


def _check_lengths(lengths, T: int, batch_shape, fn: str):
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: lengths must be an integer array of shape {batch_shape} (valid steps per "
            f"sequence); got dtype {lengths.dtype}"
        )
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"{fn}: lengths must have shape {tuple(batch_shape)} (the batch dims of xs); "
            f"got {tuple(lengths.shape)}"
        )
    if _is_concrete(lengths):
        values = np.asarray(lengths)  # host values: no jax ops, so it also works inside a trace
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > T:
            raise ValueError(f"{fn}: lengths must be in [0, T={T}]; got values in [{lo}, {hi}]")
    return jnp.asarray(lengths)


def _check_resets(resets, xs_shape, axis: int, fn: str):
    if not hasattr(resets, "dtype"):
        resets = np.asarray(resets)
    want = tuple(xs_shape[:-1])
    want_user = tuple(np.moveaxis(np.empty(want, dtype=bool), 0, axis).shape) if axis else want
    if resets.dtype != jnp.bool_:
        raise TypeError(
            f"{fn}: resets must be a boolean array of shape {want_user} (True resets the carry "
            f"before that step); got dtype {resets.dtype}"
        )
    if tuple(resets.shape) != want_user:
        raise ValueError(
            f"{fn}: resets must have the shape of xs without its feature axis, {want_user}; "
            f"got {tuple(resets.shape)}"
        )
    resets = jnp.asarray(resets)
    return jnp.moveaxis(resets, axis, 0) if axis else resets


def _check_probes(probes, carry, T: int, fn: str):
    c_leaves, c_tree = jax.tree.flatten(carry)
    p_leaves, p_tree = jax.tree.flatten(probes)
    want = [(T, *jnp.shape(c)) for c in c_leaves]
    got = [tuple(jnp.shape(p)) for p in p_leaves]
    if p_tree != c_tree or want != got:
        raise ValueError(
            f"{fn}: probes must be a pytree like the carry with a leading time axis, leaf shapes "
            f"{want} ({c_tree}); got {got} ({p_tree})"
        )
    return probes


def _check_loss_fn(loss_fn, ys_struct, fn: str) -> None:
    """``loss_fn(ys)`` must be a real floating scalar; checked on shapes only (``jax.eval_shape``)."""
    if not callable(loss_fn):
        raise TypeError(f"{fn}: loss_fn must be a callable ys -> scalar loss; got {type(loss_fn).__name__}")
    out = jax.eval_shape(loss_fn, ys_struct)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        got = f"shape {tuple(out.shape)}" if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"{fn}: loss_fn must return a scalar (e.g. a mean over time and batch) for ys of shape "
            f"{tuple(ys_struct.shape)}; got {got}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{fn}: loss_fn must return a real floating scalar; got dtype {out.dtype}")


# --------------------------------------------------------------------------------------------------
# the scan


def _bcast(mask, leaf):
    """``mask (*batch)`` reshaped to broadcast against ``leaf (*batch, ...)``."""
    return jnp.reshape(mask, mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _where(mask, a, b):
    return jax.tree.map(lambda x, y: jnp.where(_bcast(mask, x), x, y), a, b)


def _scan(body, carry, seq, T: int, *, reverse: bool, unroll: int, remat, prepare=lambda seq: seq):
    """``lax.scan(body, carry, prepare(seq))``, or the same in sqrt(T) checkpointed segments for remat.

    ``prepare`` maps the scanned inputs to what ``body`` reads (the input projection): with
    ``remat=True`` it runs inside each checkpointed segment, so that its ``(T, ...)`` result is never
    stored whole, only recomputed a segment at a time in the backward pass."""
    if remat is False or remat is None:
        return jax.lax.scan(body, carry, prepare(seq), length=T, reverse=reverse, unroll=unroll)
    if callable(remat):  # a checkpoint policy: recompute each step, saving what the policy allows
        step = jax.checkpoint(body, policy=remat, prevent_cse=False)
        return jax.lax.scan(step, carry, prepare(seq), length=T, reverse=reverse, unroll=unroll)
    # remat=True: K segments of S ~ sqrt(T) steps. Only the K segment-boundary carries are stored
    # in the forward pass; each segment is recomputed (and its S steps' residuals stored) in the
    # backward pass. Memory O(sqrt(T)) instead of O(T), for one extra forward pass.
    S = math.isqrt(T - 1) + 1 if T > 1 else 1
    K = -(-T // S)
    pad = K * S - T

    def segment(c, seg):
        return jax.lax.scan(body, c, prepare(seg), length=S, reverse=reverse, unroll=unroll)

    def fold(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) if pad else x
        return x.reshape((K, S) + x.shape[1:])

    segs = jax.tree.map(fold, seq)
    carry, ys = jax.lax.scan(
        jax.checkpoint(segment, prevent_cse=False), carry, segs, length=K, reverse=reverse
    )
    return carry, jax.tree.map(lambda y: y.reshape((K * S,) + y.shape[2:])[:T], ys)


def unroll(
    cell: Cell,
    params,
    xs,
    carry=None,
    *,
    lengths=None,
    resets=None,
    reverse: bool = False,
    time_axis: int = 0,
    unroll: int = 1,
    remat: bool | Callable = False,
    probes=None,
    fused: bool = True,
):
    """Run ``cell`` over a sequence with one ``jax.lax.scan``: ``(final_carry, ys)``.

    The recurrence ``s_t = cell.step(params, s_{t-1}, x_t)``, ``y_t = cell.output(s_t)`` for
    ``t = 0 .. T-1``. In plain Python, for ``reverse=False`` and time on axis 0::

        def unroll(cell, params, xs, carry=None, lengths=None, resets=None):
            s0 = cell.initial_carry(params, xs.shape[1:-1])
            s = s0 if carry is None else carry
            ys = []
            for t in range(len(xs)):
                s_in = where(resets[t], s0, s) if resets is not None else s
                s_new = cell.step(params, s_in, xs[t])   # (+ probes[t] if given)
                valid = t < lengths if lengths is not None else True
                s = where(valid, s_new, s)                # past its length, a sequence stands still
                ys.append(where(valid, cell.output(s_new), 0))
            return s, stack(ys)

    (``where`` broadcast over each sequence of the batch and each leaf of the carry.)

    For cells with an input projection (every built-in cell) ``cell.project(params, xs)`` is
    applied to all ``T`` steps at once -- one ``(T * B, I) @ (I, G * H)`` matrix product -- before
    the scan (with ``remat=True``, inside each checkpointed segment, so that the ``(T, B, G * H)``
    projection is never stored whole); the scanned body only does the recurrent part ``cell.recur``.
    The result is the same as stepping with ``cell.step``.

    Args:
      cell: a :class:`~jaxrnn.Cell`.
      params: the cell's parameters (``cell.init(key, input_size)``).
      xs: ``(T, *batch, input_size)`` (time on ``time_axis``); any number of batch dims, also none.
      carry: the initial state, a pytree like ``cell.initial_carry(params, batch_shape)``;
        default that. Must be finite.
      lengths: ``(*batch)`` integers in ``[0, T]``. Steps ``t >= lengths[b]`` leave sequence ``b``'s
        carry unchanged and give ``y = 0``; so the final carry is each sequence's state after its own
        last valid step, and a length 0 returns the initial carry. Done with a masked update inside the
        step (no stored history is gathered).
      resets: booleans shaped like ``xs`` without the feature axis. ``resets[t, b]`` marks step ``t``
        as the first step of a new segment of sequence ``b`` (packed sequences, episode boundaries):
        the carry is reset to ``cell.initial_carry(params, batch_shape)`` -- the cell's ``s_0``, not the
        ``carry`` argument -- before that step. With ``reverse=True`` the segments are the same and
        each is run backwards from its last step: the carry is reset before step ``t - 1`` whenever
        ``resets[t]``. Resets on padding steps (``t >= lengths[b]``) have no effect.
      reverse: run from the last step to the first (``ys`` stay aligned with ``xs``). With ``lengths``
        only each sequence's valid prefix is reversed: the backward pass starts at step
        ``lengths[b] - 1`` and the padding stays at the end, zero in ``ys``.
      time_axis: where time is in ``xs`` (and ``resets``, and the returned ``ys``); features are last.
      unroll: steps per iteration of the compiled loop (``lax.scan``'s ``unroll``).
      remat: ``False``; ``True`` to checkpoint in ``sqrt(T)`` segments (BPTT memory ``O(sqrt(T))``
        carries instead of ``O(T)`` step residuals, for one extra forward pass); or a
        ``jax.checkpoint_policies`` policy to recompute each step saving only what the policy allows.
      probes: ``None``, or a pytree like the carry with a leading time axis, leaves
        ``(T, *batch, ...)`` (time first whatever ``time_axis`` is), added to the state after each
        step: ``s_t = cell.step(params, s_{t-1}, x_t) + e_t``. With zeros nothing changes, and
        ``jax.grad`` with respect to the probes returns ``dL/ds_t`` for every ``t`` -- the errors that
        BPTT propagates back in time (zero on padding steps).
      fused: use the cell's whole-sequence fast path (``cell.kernel``: the fused kernels of
        :mod:`jaxrnn.kernels` for ``lstm``, ``gru``, ``elman``/``irnn``/``np_rnn``, the parallel scan
        of ``min_gru``/``min_lstm``/``lru``) when it has one and it serves the call (no ``resets``,
        ``probes`` or ``remat``; the kernel may decline other options, e.g. dtypes); ``False`` forces
        the reference ``lax.scan``. Both give the same values and derivatives (forward and reverse
        mode, any order).

    Returns:
      ``(final_carry, ys)``: the carry after each sequence's last (valid) step, with the structure of
      ``cell.initial_carry``; and ``ys (T, *batch, hidden)`` (time on ``time_axis``), the outputs
      ``cell.output(s_t)``, zero past each sequence's length.

    Raises:
      TypeError / ValueError before tracing, for a wrong rank or feature size, batch dims of
      ``carry``, ``lengths`` or ``resets`` that do not match ``xs``, non-integer, negative or too large
      ``lengths``, ``T = 0``, or a non-finite concrete ``carry``.
    """
    fn = "unroll"
    cell = _check_cell(cell, fn)
    xs, axis = _check_xs(cell, params, xs, time_axis, fn)
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    try:
        unroll = operator.index(unroll)
    except TypeError:
        raise TypeError(f"{fn}: unroll must be a positive int; got {unroll!r}") from None
    if unroll < 1:
        raise ValueError(f"{fn}: unroll must be a positive int; got {unroll}")
    if not (isinstance(remat, bool) or remat is None or callable(remat)):
        raise TypeError(f"{fn}: remat must be a bool or a jax.checkpoint policy; got {remat!r}")
    schedule = cell.hparams.get("schedule_length")
    if schedule is not None and T > schedule and carry is None and resets is None:
        raise ValueError(
            f"{fn}: xs has T={T} steps but the truncation schedule of {cell.name} has {schedule}; build "
            f"the schedule for the sequence (e.g. jr.truncation.every(k, {T}))"
        )
    s0 = cell.initial_carry(params, batch_shape)
    carry = s0 if carry is None else _check_carry(cell, params, carry, batch_shape, fn)
    if lengths is not None:
        lengths = _check_lengths(lengths, T, batch_shape, fn)
    if resets is not None:
        resets = _check_resets(resets, xs.shape, axis, fn)
        if reverse:  # segment starts at t mean a reset after step t in backward time
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
            if lengths is not None:  # a reset at t = lengths[b] is padding: it must not drop the carry
                t_next = jnp.arange(1, T + 1).reshape((T,) + (1,) * len(batch_shape))
                resets = resets & (t_next < lengths)

    if not isinstance(fused, bool):
        raise TypeError(f"{fn}: fused must be a bool; got {fused!r}")
    kernel = cell.kernel
    if (
        fused
        and kernel is not None
        and kernel.recur is cell.recur
        and resets is None
        and probes is None
        and (remat is False or remat is None)
    ):
        out = kernel.apply(params, carry, xs, lengths=lengths, reverse=reverse, unroll=unroll)
        if out is not None:
            final, states = out
            ys = cell.output(states)
            if lengths is not None:
                valid = jnp.arange(T).reshape((T,) + (1,) * len(batch_shape)) < lengths
                ys = jax.tree.map(lambda v: jnp.where(_bcast(valid, v), v, jnp.zeros_like(v)), ys)
            return final, (jax.tree.map(lambda y: jnp.moveaxis(y, 0, axis), ys) if axis else ys)

    seq = {"x": xs}  # projected by _scan: all at once, or segment by segment inside remat=True
    if lengths is not None:
        seq["t"] = jnp.arange(T)
    if probes is not None:
        seq["probe"] = _check_probes(probes, carry, T, fn)
    if resets is not None:
        seq["reset"] = resets
    padded = remat is True and T > 1  # remat segments may pad the time axis with no-op steps
    if padded:  # zero-padded to False on those steps (a zero-padded "t" would read as a valid step 0)
        seq["live"] = jnp.ones((T,), jnp.bool_)

    def body(s, inp):
        s_in = _where(inp["reset"], s0, s) if "reset" in inp else s
        new = cell.recur(params, s_in, inp["x"])
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, s)  # keep the carry's dtype
        if "probe" in inp:
            new = jax.tree.map(jnp.add, new, inp["probe"])
        valid = None
        if lengths is not None:
            valid = inp["t"] < lengths
        if padded:
            valid = inp["live"] if valid is None else valid & inp["live"]
        y = cell.output(new)
        if valid is None:
            return new, y
        valid = jnp.broadcast_to(valid, batch_shape)
        return _where(valid, new, s), jax.tree.map(
            lambda v: jnp.where(_bcast(valid, v), v, jnp.zeros_like(v)), y
        )

    def project(seq):
        return {**seq, "x": cell.project(params, seq["x"])}

    final, ys = _scan(body, carry, seq, T, reverse=reverse, unroll=unroll, remat=remat, prepare=project)
    return final, (jax.tree.map(lambda y: jnp.moveaxis(y, 0, axis), ys) if axis else ys)


_unroll = unroll  # for functions below whose `unroll` argument shadows the name


def _trajectory(cell: Cell, params, xs, carry=None, **unroll_kwargs):
    """:func:`unroll` that also returns the state after every step: ``(final, ys, states)``.

    ``states`` is a pytree like the carry with leaves ``(T, *batch, ...)``, time first whatever
    ``time_axis`` is; like ``ys`` it is zero on padding steps (``t >= lengths``). One scan: the cell's
    output is widened to ``(y, s)``.
    """
    both = cell._replace(output=lambda s: (cell.output(s), s))
    final, (ys, states) = _unroll(both, params, xs, carry, **unroll_kwargs)
    axis = _normalise_axis(unroll_kwargs.get("time_axis", 0), jnp.ndim(xs), "unroll")
    if axis:
        states = jax.tree.map(lambda s: jnp.moveaxis(s, axis, 0), states)
    return final, ys, states


def state_gradients(
    cell: Cell, params, xs, loss_fn, carry=None, *, return_states: bool = False, **unroll_kwargs
):
    """``dL/ds_t`` for every step from the ordinary ``jax.grad``: ``(loss, ys, dL_ds)``.

    Zero probes ``e_t`` are added to the state after each step (``probes=`` of :func:`unroll`), so
    ``dL/de_t = dL/ds_t``: the total derivative of the loss with respect to the state at step ``t``,
    through the output at ``t`` and every later step -- the error that BPTT propagates back in time
    (DESIGN section 4). No custom differentiation rules. In plain Python::

        s, ys = carry, []
        for t in range(T):
            s = cell.step(params, s, xs[t]) + e[t]          # e = 0
            ys.append(cell.output(s))
        loss = loss_fn(stack(ys))
        dL_ds = jax.grad(lambda e: loss_fn(...))(zeros)   # dL_ds[t] = dL/ds_t

    Args:
      cell, params, xs, carry: as for :func:`unroll`.
      loss_fn: ``ys (T, *batch, H) -> scalar`` (e.g. a mean squared error of a readout).
      return_states: also return the states ``s_t`` (from the same scan).
      **unroll_kwargs: ``lengths``, ``resets``, ``reverse``, ``time_axis``, ``unroll``, ``remat``.
        On padding steps (``t >= lengths``) the error is exactly zero.

    Returns:
      ``(loss, ys, dL_ds)``: the scalar loss, the outputs ``ys`` of :func:`unroll`, and a pytree like
      the carry with a leading time axis, leaves ``(T, *batch, ...)`` (time first whatever
      ``time_axis`` is). With ``return_states=True``, ``(loss, ys, dL_ds, states)``: ``states`` like
      ``dL_ds``, the state after each step (zero on padding steps).

    Raises:
      TypeError if ``loss_fn`` is not callable or returns a non-floating value, ValueError if it
      does not return a scalar; everything :func:`unroll` raises.
    """
    fn = "state_gradients"
    cell = _check_cell(cell, fn)
    xs_t, _ = _check_xs(cell, params, xs, unroll_kwargs.get("time_axis", 0), fn)
    T, batch_shape = xs_t.shape[0], tuple(xs_t.shape[1:-1])
    start = cell.initial_carry(params, batch_shape) if carry is None else carry
    zeros = jax.tree.map(lambda c: jnp.zeros((T, *jnp.shape(c)), jnp.result_type(c)), start)

    if not isinstance(return_states, bool):
        raise TypeError(f"{fn}: return_states must be a bool; got {return_states!r}")

    def loss_of_probes(probes):
        if return_states:
            _, ys, states = _trajectory(cell, params, xs, carry, probes=probes, **unroll_kwargs)
        else:
            (_, ys), states = _unroll(cell, params, xs, carry, probes=probes, **unroll_kwargs), None
        return loss_fn(ys), (ys, states)

    _check_loss_fn(
        loss_fn,
        jax.eval_shape(lambda e: _unroll(cell, params, xs, carry, probes=e, **unroll_kwargs)[1], zeros),
        fn,
    )
    (loss, (ys, states)), dL_ds = jax.value_and_grad(loss_of_probes, has_aux=True)(zeros)
    return (loss, ys, dL_ds, states) if return_states else (loss, ys, dL_ds)


# --------------------------------------------------------------------------------------------------
# sequence layers


class Layer(NamedTuple):
    """A whole-sequence recurrent layer: ``apply(params, xs) -> (final_carry, ys)``.

    Fields:

    * ``init(key, input_size, dtype=jnp.float32) -> params``
    * ``initial_carry(params, batch_shape=()) -> carry``
    * ``apply(params, xs, carry=None, *, lengths=None, resets=None, key=None, time_axis=0)
      -> (final_carry, ys)``: ``xs (T, *batch, input_size)``, ``ys (T, *batch, output_size)``.
      ``key`` is a ``jax.random`` key for dropout between layers (:func:`stack`); ``None`` means
      inference (no dropout).
    * ``output_size(params) -> int``
    * ``name``
    """

    init: Callable[..., Any]
    initial_carry: Callable[..., Any]
    apply: Callable[..., Any]
    output_size: Callable[[Any], int]
    name: str = "layer"


def _cell_output_size(cell: Cell, params) -> int:
    return jax.eval_shape(lambda p: cell.output(cell.initial_carry(p, ())), params).shape[-1]


def layer(cell: Cell, *, reverse: bool = False, unroll: int = 1, remat=False) -> Layer:
    """A :class:`Layer` that runs ``cell`` over the sequence with :func:`unroll`.

    ``layer(cell).apply(params, xs, carry, lengths=..., resets=...)`` is
    ``unroll(cell, params, xs, carry, lengths=..., resets=..., reverse=reverse, unroll=unroll,
    remat=remat)``: ``xs (T, *batch, I) -> ys (T, *batch, H)``; params and carry are the cell's.
    ``key`` is accepted and unused.
    """
    cell = _check_cell(cell, "layer")

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None, time_axis=0):
        del key
        return _unroll(
            cell,
            params,
            xs,
            carry,
            lengths=lengths,
            resets=resets,
            reverse=reverse,
            time_axis=time_axis,
            unroll=unroll,
            remat=remat,
        )

    return Layer(
        cell.init,
        cell.initial_carry,
        apply,
        lambda params: _cell_output_size(cell, params),
        f"layer({cell.name})",
    )


def bidirectional(forward: Cell, backward: Cell | None = None, *, unroll: int = 1, remat=False) -> Layer:
    """A bidirectional layer (seeds 000 and 004): a forward and a backward pass, outputs concatenated.

    ``ys[t] = concat(y_fw[t], y_bw[t])`` where ``y_fw`` comes from ``unroll(forward, ..., xs)`` and
    ``y_bw`` from ``unroll(backward, ..., xs, reverse=True)``; both see the same ``lengths`` and
    ``resets``, so the backward pass starts at each sequence's own last valid step (padding-aware)
    and ``ys`` is zero on the padding. In plain Python::

        fw_final, y_fw = unroll(forward, params["forward"], xs, carry[0], lengths=lengths)
        bw_final, y_bw = unroll(backward, params["backward"], xs, carry[1], lengths=lengths,
                                reverse=True)
        return (fw_final, bw_final), concatenate([y_fw, y_bw], axis=-1)

    The backward carry after the run is the state at step 0 (PyTorch's ``h_n`` for the reverse
    direction). Like ``torch.nn.LSTM(bidirectional=True)``.

    Args:
      forward: the forward cell.
      backward: the backward cell; default a cell of the same kind (separate parameters).
      unroll, remat: as for :func:`unroll`.

    Returns:
      A :class:`Layer` mapping ``xs (T, *batch, I)`` to ``ys (T, *batch, H_fw + H_bw)``; params
      ``{"forward": ..., "backward": ...}``, carry ``(fw, bw)``.
    """
    forward = _check_cell(forward, "bidirectional")
    backward = forward if backward is None else _check_cell(backward, "bidirectional")

    def init(key, input_size, dtype=jnp.float32):
        k_f, k_b = jax.random.split(key)
        return {
            "forward": forward.init(k_f, input_size, dtype),
            "backward": backward.init(k_b, input_size, dtype),
        }

    def initial_carry(params, batch_shape=()):
        return (
            forward.initial_carry(params["forward"], batch_shape),
            backward.initial_carry(params["backward"], batch_shape),
        )

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None, time_axis=0):
        del key
        c_f, c_b = (None, None) if carry is None else carry
        kw = dict(lengths=lengths, resets=resets, time_axis=time_axis, unroll=unroll, remat=remat)
        f_final, y_f = _unroll(forward, params["forward"], xs, c_f, **kw)
        b_final, y_b = _unroll(backward, params["backward"], xs, c_b, reverse=True, **kw)
        return (f_final, b_final), jnp.concatenate([y_f, y_b], axis=-1)

    def output_size(params):
        return _cell_output_size(forward, params["forward"]) + _cell_output_size(backward, params["backward"])

    return Layer(init, initial_carry, apply, output_size, f"bidirectional({forward.name}, {backward.name})")


def _as_layer(x, fn: str) -> Layer:
    if isinstance(x, Layer):
        return x
    if isinstance(x, Cell):
        return layer(x)
    raise TypeError(f"{fn}: expected Cells or Layers; got {type(x).__name__}")


def stack(*layers, skip: bool = False, dropout: float = 0.0) -> Layer:
    """A deep RNN (seed 004): layers applied one after the other over the whole sequence.

    Layer ``l`` reads the output sequence of layer ``l - 1`` (like ``torch.nn.LSTM(num_layers=L)``);
    every layer gets the same ``lengths`` and ``resets``. In plain Python::

        h = xs
        for l, (lay, p) in enumerate(zip(layers, params)):
            if l > 0 and key is not None:
                h = dropout(h, rate, key_l)      # between layers, never on the input or output
            final_l, y = lay.apply(p, h, carry[l], lengths=lengths, resets=resets)
            h = y + h if (skip and l > 0) else y  # residual skip connection
        return tuple(finals), h

    Args:
      *layers: :class:`Cell`s (each run forward with :func:`layer`) or :class:`Layer`s, e.g.
        :func:`bidirectional` ones; at least one.
      skip: add each layer's input to its output (residual connections, layers 1..L-1); needs equal
        widths, checked at ``init``.
      dropout: rate of inverted dropout on the inputs of layers 1..L-1 (i.i.d. per step, sequence and
        feature, scaled by ``1/(1 - rate)``), applied only when ``apply`` gets a ``key``.

    Returns:
      A :class:`Layer` mapping ``xs (T, *batch, I)`` to the last layer's ``ys (T, *batch, H_L)``;
      params and carry are tuples with one entry per layer; the final carry is the tuple of the
      layers' final carries.
    """
    if not layers:
        raise ValueError("stack: give at least one Cell or Layer")
    layers = tuple(_as_layer(x, "stack") for x in layers)
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"stack: dropout must be in [0, 1); got {dropout}")

    def init(key, input_size, dtype=jnp.float32):
        params, n_in = [], input_size
        for l, (lay, k) in enumerate(zip(layers, jax.random.split(key, len(layers)))):
            p = lay.init(k, n_in, dtype)
            n_out = lay.output_size(p)
            if skip and l > 0 and n_out != n_in:
                raise ValueError(
                    f"stack: skip=True needs equal widths, but layer {l} ({lay.name}) maps "
                    f"{n_in} features to {n_out}"
                )
            params.append(p)
            n_in = n_out
        return tuple(params)

    def _check_params(params):
        if not isinstance(params, (tuple, list)) or len(params) != len(layers):
            raise ValueError(
                f"stack: params must be a tuple with one entry per layer ({len(layers)}); "
                f"got {type(params).__name__} of length {len(params) if hasattr(params, '__len__') else '?'}"
            )

    def initial_carry(params, batch_shape=()):
        _check_params(params)
        return tuple(lay.initial_carry(p, batch_shape) for lay, p in zip(layers, params))

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None, time_axis=0):
        _check_params(params)
        if carry is None:
            carry = (None,) * len(layers)
        elif not isinstance(carry, (tuple, list)) or len(carry) != len(layers):
            raise ValueError(f"stack: carry must be a tuple with one entry per layer ({len(layers)})")
        keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
        h, finals = xs, []
        for l, (lay, p, c, k) in enumerate(zip(layers, params, carry, keys)):
            if l > 0 and k is not None and dropout > 0.0:
                k, k_drop = jax.random.split(k)
                keep = jax.random.bernoulli(k_drop, 1.0 - dropout, h.shape)
                h = jnp.where(keep, h / (1.0 - dropout), jnp.zeros_like(h))
            final, y = lay.apply(p, h, c, lengths=lengths, resets=resets, key=k, time_axis=time_axis)
            h = y + h if (skip and l > 0) else y
            finals.append(final)
        return tuple(finals), h

    def output_size(params):
        return layers[-1].output_size(params[-1])

    return Layer(init, initial_carry, apply, output_size, "stack(" + ", ".join(x.name for x in layers) + ")")
