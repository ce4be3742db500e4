"""Truncated backpropagation through time as data plus a Cell -> Cell transform.

A *schedule* is a boolean array ``cuts (T,)``: ``cuts[t]`` says that the gradient through the carry
entering step ``t`` is cut (``s_{t-1}`` is treated as a constant, ``jax.lax.stop_gradient``). Full BPTT
is the schedule with no cuts; :func:`every` cuts every ``k`` steps; :func:`random_lengths` cuts after
segments of random length. :func:`truncate` turns any cell into one that applies a schedule, so the
truncation composes with :func:`~jaxrnn.unroll` (lengths, resets, reverse, remat), layers, and
``jax.grad``: it is still one ``lax.scan``.

This is truncated BPTT "II" of the Politecnico di Milano lecture "Recurrent Neural Networks" and the
dynamical-systems lecture notes -- the state is carried forward for ever, the
gradient flows back only to the last cut -- in its windowed form: with cuts every ``k`` steps a loss at
step ``t`` is back-propagated ``t mod k + 1`` steps (between 1 and ``k``), not exactly ``k``.

Two more truncated gradients live here:

* :func:`tbptt` -- Williams and Peng's TBPTT(k1, k2): every ``k1`` steps back-propagate ``k2 >= k1``
  steps, by recomputing overlapping windows (cost ``O(T k2 / k1)``); a drop-in for
  :func:`~jaxrnn.unroll` whose values are the same and whose gradients are truncated.
* :func:`chunked` -- truncated BPTT "I" (the Politecnico di Milano lecture's "chunks", the pseudocode of
  Kitov's "Recurrent neural nets" lecture): one optimizer
  update per chunk of ``k`` steps, the final state of a chunk passed on (``stop_gradient``) to the
  next, the whole loop one ``lax.scan``.

Cutting the gradient does not by itself save memory: the scan still stores every step's residuals
for the backward pass. To bound memory use ``remat=True`` in :func:`~jaxrnn.unroll`, or
:func:`chunked` (memory of one chunk).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns, recur_with_step_index
from jaxrnn.masking import expand
from jaxrnn.unroll import trajectory
from jaxrnn.unroll import unroll as unroll_cell

__all__ = ["chunked", "every", "no_cuts", "random_lengths", "tbptt", "truncate"]

positive_int = check.positive_int


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
    offset = check.int_at_least(offset, "every: offset", minimum=None)
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


def truncate(cell: Cell, cuts) -> Cell:
    """Cell -> Cell: cut the gradient through the carry before the steps a schedule marks.

    The new cell is the wrapped cell -- same ``init``, carry, ``recur``, ``output``, dynamics -- with a
    gradient-only ``cut``: every consumer that unrolls it (:func:`~jaxrnn.unroll`, :func:`tbptt`,
    :func:`~jaxrnn.state_gradients`, :func:`~jaxrnn.pascanu`, layers) applies, to the carry entering
    step ``t``::

        cut(carry, t) = stop_gradient(carry) if cuts[t] else carry

    where ``t`` is the step index :func:`~jaxrnn.unroll` supplies (steps since the start or the last
    reset, plus ``t0``; with ``reverse=True`` in processing order). Values are unchanged
    (``stop_gradient`` is the identity); only gradients see the cuts, so the diagnostics
    (:func:`~jaxrnn.step_jacobians`, :func:`~jaxrnn.jacobian_norms`, :func:`~jaxrnn.lyapunov_spectrum`),
    which describe the dynamics, give the wrapped cell's results. The carry holds nothing new. In plain
    Python, for a loss ``L`` of the outputs::

        s = s0
        for t in range(T):
            if cuts[t]:
                s = stop_gradient(s)      # dL/ds_(t-1) through this path is 0
            s = cell.step(params, s, xs[t])

    :func:`~jaxrnn.unroll` refuses a sequence whose step indices run past the schedule (``step_limit``
    is ``len(cuts)``) when it can see them (no resets; concrete ``lengths`` and ``t0``); elsewhere steps
    beyond the schedule reuse its last entry (``jnp`` indexing clamps). Build the schedule for the
    sequence at hand. Cutting does not by itself save memory; ``remat=True`` in :func:`~jaxrnn.unroll`
    does. Schedules compose: ``truncate(truncate(c, a), b)`` cuts where either does.

    Args:
      cell: any :class:`~jaxrnn.Cell` (transformed, or a :func:`~jaxrnn.deep_rnn`, too).
      cuts: ``(T,)`` booleans, e.g. :func:`every`, :func:`random_lengths`, :func:`no_cuts`; data (a
        pytree leaf of the cell), so it may be traced: one compiled function serves every schedule of
        that length.

    Returns:
      A :class:`~jaxrnn.Cell` ``truncate(cell=..., cuts=bool[T])``, with ``uses_step_index`` and no
      fused kernel (its unrolls run the reference scan).
    """
    cell = check.cell(cell, "truncate")
    cuts = jnp.asarray(cuts)
    if cuts.dtype != jnp.bool_ or cuts.ndim != 1 or cuts.shape[0] == 0:
        raise ValueError(
            f"truncate: cuts must be a non-empty boolean schedule of shape (T,); got shape "
            f"{tuple(cuts.shape)} and dtype {cuts.dtype}"
        )
    return Cell(truncate, _build_truncate, {}, {"cell": cell, "cuts": cuts})


def _build_truncate(cell: Cell, cuts) -> CellFns:
    inner = cell.fns
    n = int(cuts.shape[0])

    def cut(carry, t):
        carry = cell.cut(carry, t)
        c = jnp.asarray(cuts)[jnp.asarray(t)]  # (*batch) or ()
        return jax.tree.map(lambda s: jnp.where(expand(c, s), jax.lax.stop_gradient(s), s), carry)

    limit = n if inner.step_limit is None else min(n, inner.step_limit)
    return inner._replace(
        recur=recur_with_step_index(inner), cut=cut, uses_step_index=True, kernel=None, step_limit=limit
    )


# --------------------------------------------------------------------------------------------------
# TBPTT(k1, k2) of Williams and Peng: overlapping windows, recomputed


def tbptt(cell: Cell, params, xs, k1: int, k2: int, carry=None, *, lengths=None, time_axis=0, unroll=1):
    """:func:`~jaxrnn.unroll` whose gradient is TBPTT(k1, k2): every ``k1`` steps, back-propagate ``k2``.

    Williams and Peng's truncated BPTT(h; h') with ``h' = k1`` (steps between two gradient
    computations) and ``h = k2 >= k1`` (how far back each one goes). The steps are split into blocks
    ``[j k1, e_j)``, ``e_j = min((j+1) k1, T)``; the outputs of block ``j`` are recomputed in a window
    that starts at ``a_j = max(e_j - k2, 0)`` from the forward state ``s_{a_j - 1}`` held constant
    (``stop_gradient``; the ``carry`` argument itself when ``a_j = 0``) and runs to the end of the
    block. So the error of a loss at step ``t`` of block ``j`` flows back to ``a_j``: between
    ``k2 - k1 + 1`` and ``k2`` steps (all the way to the start when ``e_j <= k2``). In plain
    Python, for a loss ``L`` of the outputs::

        _, ys_fwd, states = unroll_with_states(cell, params, xs, carry)       # values only
        ys = []
        for j in range(ceil(T / k1)):
            e = min((j + 1) * k1, T)
            a = max(e - k2, 0)
            s = carry if a == 0 else stop_gradient(states[a - 1])
            for t in range(a, e):
                s = cell.step(params, cell.cut(s, t), xs[t], t)   # the step index t as in unroll
                if t >= j * k1:
                    ys.append(cell.output(s))      # block j's outputs, back-propagated to step a
        return final, stack(ys)                   # ys == ys_fwd; only the gradients differ

    The values are those of :func:`~jaxrnn.unroll` (the same steps from the same states); the
    gradient of any loss of ``ys`` is the TBPTT(k1, k2) gradient. ``k1 = k2 = k`` (``T`` a multiple of
    ``k``) gives the gradient of ``truncate(cell, every(k, T))`` (independent blocks); ``k2 >= T``
    gives full BPTT for every ``k1``. The final carry is that of the window holding each sequence's
    last valid step (differentiable through that window only).

    **Cost**: one forward pass of ``T`` steps (no residuals kept) plus ``ceil(T / k1)`` windows of
    ``k2`` steps, i.e. ``O(T k2 / k1)`` step evaluations and, for the backward pass, ``O(T k2 / k1)``
    stored step residuals -- ``k2 / k1`` times full BPTT. The windows are independent and run side by
    side (``jax.vmap``), so on an accelerator the wall time is about two scans of length ``T`` and
    ``k2``. ``k1 = 1`` is Williams and Peng's most accurate and most expensive setting (``O(T k2)``).

    Args:
      cell, params, carry: as for :func:`~jaxrnn.unroll`.
      xs: ``(T, *batch, input_size)`` (time on ``time_axis``).
      k1: steps per block (between gradient computations), ``>= 1``.
      k2: steps back-propagated from each block's end, ``>= k1``.
      lengths: ``(*batch)`` valid steps per sequence, as in :func:`~jaxrnn.unroll`.
      time_axis: where time is in ``xs`` and the returned ``ys``.
      unroll: ``lax.scan``'s ``unroll`` for the windows.

    Returns:
      ``(final_carry, ys)`` as :func:`~jaxrnn.unroll` returns them.

    Raises:
      TypeError / ValueError before tracing: ``k1`` or ``k2`` not a positive int, ``k2 < k1``, and
      everything :func:`~jaxrnn.unroll` checks.

    References:
      R. J. Williams and J. Peng, "An efficient gradient-based algorithm for on-line training of
      recurrent network trajectories", Neural Computation 2(4), 1990 (BPTT(h; h')).
    """
    fn = "tbptt"
    cell = check.cell(cell, fn)
    k1 = positive_int(k1, f"{fn}: k1")
    k2 = positive_int(k2, f"{fn}: k2")
    if k2 < k1:
        raise ValueError(
            f"{fn}: k2 must be >= k1={k1} (each gradient computation must reach back over the k1 steps "
            f"since the last one); got k2={k2}"
        )
    check.params(cell, params, fn)
    xs, axis = check.xs(cell, params, xs, time_axis, fn)  # time first from here on
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    s0 = cell.initial_carry(params, batch_shape)
    carry = s0 if carry is None else check.carry(cell, params, carry, batch_shape, fn)
    full = jnp.full(batch_shape, T, jnp.int32)
    lengths = full if lengths is None else check.lengths(lengths, T, batch_shape, fn).astype(jnp.int32)

    sg = jax.lax.stop_gradient
    _, _, states = trajectory(cell, sg(params), sg(xs), sg(carry), lengths=lengths)

    n = -(-T // k1)  # blocks [j k1, min((j+1) k1, T))
    ends = np.minimum((np.arange(n) + 1) * k1, T)
    starts = np.maximum(ends - k2, 0)  # the first step of each block's window
    offsets = np.arange(n) * k1 - starts  # block j sits at [offset, offset + k1) of its window
    W = int(np.max(offsets)) + k1  # static window length (the last block may run into padding)
    xs_p = jnp.pad(xs, [(0, int(np.max(starts)) + W - T)] + [(0, 0)] * (xs.ndim - 1))
    starts, offsets = jnp.asarray(starts), jnp.asarray(offsets)
    xs_w = jax.vmap(lambda a: jax.lax.dynamic_slice_in_dim(xs_p, a, W, axis=0))(starts)  # (n, W, ...)

    def start_state(a):
        prev = jax.tree.map(lambda s: s[jnp.maximum(a - 1, 0)], states)
        return jax.tree.map(lambda c, p: jnp.where(a == 0, c, sg(p)), carry, prev)

    def window(a, x_w):
        len_w = jnp.clip(lengths - a, 0, W)
        return unroll_cell(cell, params, x_w, start_state(a), lengths=len_w, unroll=unroll, t0=a)

    finals, ys_w = jax.vmap(window)(starts, xs_w)  # ys_w (n, W, *batch, F)
    blocks = jax.vmap(lambda y, o: jax.lax.dynamic_slice_in_dim(y, o, k1, axis=0))(ys_w, offsets)
    ys = blocks.reshape((n * k1,) + blocks.shape[2:])[:T]

    last_block = jnp.maximum(lengths - 1, 0) // k1  # (*batch): the window holding the last valid step
    final = jax.tree.map(
        lambda f: jnp.take_along_axis(
            f, jnp.reshape(last_block, (1, *batch_shape) + (1,) * (f.ndim - 1 - len(batch_shape))), axis=0
        )[0],
        finals,
    )
    return final, (jnp.moveaxis(ys, 0, axis) if axis else ys)


# --------------------------------------------------------------------------------------------------
# truncated BPTT "I": one optimizer update per chunk, the carry passed on


def chunked(loss_fn, optimizer, chunk_size: int):
    """Chunked truncated BPTT: split a long sequence into chunks, one optimizer update per chunk.

    Truncated BPTT "I" (the Politecnico di Milano lecture's "chunks", the pseudocode of Kitov's
    "Recurrent neural nets" lecture): the sequence is cut into
    ``T / chunk_size`` consecutive chunks; each chunk is run from the final state of the previous one
    (passed on with ``stop_gradient``: the gradient of a chunk's loss never reaches earlier chunks),
    its gradient is computed and the parameters are updated before the next chunk is run. The whole
    loop is one ``lax.scan`` over chunks around the optax update, so ``jax.jit`` compiles it once.
    Memory is that of BPTT over one chunk. In plain Python::

        def train(params, opt_state, carry, data):
            losses = []
            for i in range(T // chunk_size):
                chunk = tree_map(lambda d: d[i * chunk_size:(i + 1) * chunk_size], data)
                (loss, new_carry), grads = value_and_grad(loss_fn, has_aux=True)(params, carry, chunk)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                carry = stop_gradient(new_carry)
                losses.append(loss)
            return params, opt_state, carry, stack(losses)

    Args:
      loss_fn: ``(params, carry, chunk) -> (loss, new_carry)``: the loss of one chunk (a scalar) and
        the carry at its end, e.g. with :func:`~jaxrnn.unroll`::

            def loss_fn(params, carry, chunk):
                xs, targets = chunk                      # (chunk_size, B, I), (chunk_size, B)
                final, ys = jr.unroll(cell, params["cell"], xs, carry)
                return jnp.mean((ys @ params["w"] - targets) ** 2), final
      optimizer: an ``optax.GradientTransformation`` (e.g. ``optax.chain(optax.clip_by_global_norm(1.0),
        optax.sgd(0.1))``).
      chunk_size: ``k``, steps per chunk (per update), ``>= 1``.

    Returns:
      ``train(params, opt_state, carry, data) -> (params, opt_state, carry, losses)``: ``data`` is a
      pytree whose leaves all have the same leading time axis ``T``, a multiple of ``chunk_size``
      (``(xs, targets)`` above); ``losses`` is ``(T // chunk_size,)``, each chunk's loss before its
      update; the returned carry is the state after the last chunk, to continue with the next part of
      a stream. Pure and jit-safe: ``jax.jit(train)``.

    A cell that reads the step index (per-step :func:`~jaxrnn.recurrent_dropout` masks, a
    :func:`truncate` schedule) gets it as data, not from the carry: put the steps in ``data`` and pass
    the chunk's first one on, ``data = (xs, targets, jnp.arange(T))`` and
    ``jr.unroll(cell, params["cell"], xs, carry, t0=steps[0])`` in ``loss_fn``.

    Raises:
      TypeError / ValueError: ``loss_fn`` not callable, an optimizer without ``init``/``update``,
      ``chunk_size`` not a positive int; when ``train`` is called, leaves of ``data`` with different
      leading sizes or a ``T`` that is not a multiple of ``chunk_size``.
    """
    fn = "chunked"
    if not callable(loss_fn):
        raise TypeError(
            f"{fn}: loss_fn must be a callable (params, carry, chunk) -> (loss, carry); got {loss_fn!r}"
        )
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            f"{fn}: optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}"
        )
    k = positive_int(chunk_size, f"{fn}: chunk_size")

    def train(params, opt_state, carry, data):
        sizes = {jnp.shape(d)[0] if jnp.ndim(d) else None for d in jax.tree.leaves(data)}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(
                f"{fn}: data must be a pytree of arrays with one common leading time axis; got leading "
                f"sizes {sorted(sizes, key=str)}"
            )
        (T,) = sizes
        if T % k:
            raise ValueError(
                f"{fn}: the time axis of data (T={T}) must be a multiple of chunk_size={k}; trim or pad the "
                f"sequence (e.g. to {T - T % k} or {T + k - T % k} steps)"
            )
        chunks = jax.tree.map(lambda d: d.reshape((T // k, k) + d.shape[1:]), data)

        def one(state, chunk):
            params, opt_state, carry = state
            (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, carry, chunk)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, jax.lax.stop_gradient(new_carry)), loss

        (params, opt_state, carry), losses = jax.lax.scan(one, (params, opt_state, carry), chunks)
        return params, opt_state, carry, losses

    return train
