"""Unrolling a :class:`~jaxrnn.Cell` over time with one ``jax.lax.scan``, and sequence layers.

* :func:`unroll` -- the one scan: variable lengths, resets, reverse, remat, any batch dims.
* :class:`Layer` -- a whole-sequence map ``(params, xs) -> (final_carry, ys)``; :func:`layer` wraps a
  cell, :func:`bidirectional` runs a forward and a backward cell, :func:`stack` composes layers into
  a deep RNN (Kitov's "Recurrent neural nets" lecture), with skip connections and dropout between layers.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.cells.deep import init_in_sequence
from jaxrnn.kernels.cudnn import cudnn_lstm
from jaxrnn.masking import expand, reset_steps, select, valid_steps
from jaxrnn.newton import parallel_newton

__all__ = ["Layer", "bidirectional", "layer", "stack", "state_gradients", "trajectory", "unroll"]


# --------------------------------------------------------------------------------------------------
# the scan


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
    unroll: int | bool = 1,
    remat: bool | Callable = False,
    probes=None,
    fused: bool = True,
    t0=0,
    method: str = "sequential",
    backend: str = "auto",
):
    """Run ``cell`` over a sequence with one ``jax.lax.scan``: ``(final_carry, ys)``.

    The recurrence ``s_t = cell.step(params, s_{t-1}, x_t)``, ``y_t = cell.output(s_t)`` for
    ``t = 0 .. T-1``. In plain Python, for ``reverse=False`` and time on axis 0::

        def unroll(cell, params, xs, carry=None, lengths=None, resets=None, t0=0):
            s0 = cell.initial_carry(params, xs.shape[1:-1])
            s = s0 if carry is None else carry
            i = t0                                        # the step index, per sequence: data, not state
            ys = []
            for t in range(len(xs)):
                if resets is not None:
                    s, i = where(resets[t], s0, s), where(resets[t], 0, i)
                s_new = cell.recur(params, cell.cut(s, i), cell.project(params, xs[t]), i)
                s_new = s_new + probes[t] if probes is not None else s_new
                valid = t < lengths if lengths is not None else True
                s, i = where(valid, s_new, s), where(valid, i + 1, i)   # past its length: stand still
                ys.append(where(valid, cell.output(s_new), 0))
            return s, stack(ys)

    (``where`` broadcast over each sequence of the batch and each leaf of the carry.) ``cell.cut`` is
    the identity but for truncated cells (:func:`jaxrnn.truncate`), where it cuts the gradient; ``i`` is
    read only by cells with ``uses_step_index`` (a truncation schedule, per-step dropout masks, the
    per-step statistics of an inference ``bn_lstm``), and is computed only for them.

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
      unroll: steps per iteration of the compiled loop: ``lax.scan``'s ``unroll``, a positive int or a
        bool (``True`` unrolls the whole loop).
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
        of ``min_gru``/``min_lstm``/``lru``) when it has one and it serves the call (no ``probes`` or
        ``remat``, no truncation cuts or step index, ``resets`` only where the kernel takes them -- all
        built-in kernels do; the kernel may decline other options, e.g. dtypes); ``False`` forces the
        reference ``lax.scan``. Both give the same values and derivatives (forward and reverse mode, any
        order).

      t0: the step index of the first step of ``xs`` (in processing order), an int or ``(*batch)``
        ints, default 0: for continuing a sequence chunk by chunk with a cell that reads the step index
        (``t0 = steps so far``), so that its truncation schedule and per-step dropout masks continue.

      backend: which implementation runs the sequential method: ``"auto"`` (default) and ``"xla"``, the
        fused kernel where it serves the call, else the reference scan; ``"pallas"``, the persistent
        Pallas kernels of :mod:`jaxrnn.kernels.pallas` (the LSTM, both GRUs and the Elman family; the
        time loop inside one kernel launch; reverse mode only; interpret mode on a CPU); ``"cudnn"``,
        ``jr.lstm`` through cuDNN on an NVIDIA GPU (:mod:`jaxrnn.kernels.cudnn`: float32, ``lengths``,
        no ``resets`` or ``reverse``). ``"auto"`` never picks Pallas or cuDNN: neither has been
        measured on an accelerator. A backend asked for by name that
        cannot serve the call (another cell, ``probes``, ``remat``, a truncation, a dtype) is an error.
      method: ``"sequential"`` (default: the scan, or the cell's fused kernel) or ``"parallel_newton"``:
        the same result computed by Newton's method parallel in time (DEER; :func:`jaxrnn.parallel_newton`
        with its defaults: full Jacobians, tolerance 1e-5 in float32 / 1e-10 in float64, at most
        ``min(T, 64)`` iterations, then the sequential scan as a fallback). It takes ``lengths``,
        ``resets``, ``reverse`` and ``time_axis``; ``probes``, ``remat``, ``t0``, ``backend`` and cells
        that read the step index or cut gradients are refused.

    Returns:
      ``(final_carry, ys)``: the carry after each sequence's last (valid) step, with the structure of
      ``cell.initial_carry``; and ``ys (T, *batch, hidden)`` (time on ``time_axis``), the outputs
      ``cell.output(s_t)``, zero past each sequence's length.

    Raises:
      TypeError / ValueError before tracing, for a wrong rank or feature size, batch dims of
      ``carry``, ``lengths`` or ``resets`` that do not match ``xs``, non-integer, negative or too large
      ``lengths``, ``T = 0``, a non-finite concrete ``carry``, a truncation schedule shorter than the
      steps it would index.
    """
    if method == "parallel_newton":
        _refuse(
            "unroll", "method='parallel_newton'", "use method='sequential'",
            probes=probes is not None, remat=not (remat is False or remat is None),
            t0=not (isinstance(t0, int) and t0 == 0), backend=backend != "auto",
        )  # fmt: skip
        final, ys, _ = parallel_newton(
            cell, params, xs, carry, lengths=lengths, resets=resets, reverse=reverse, time_axis=time_axis
        )
        return final, ys
    if method != "sequential":
        raise ValueError(f"unroll: method must be 'sequential' or 'parallel_newton'; got {method!r}")
    final, ys, _ = _run(
        "unroll",
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
        probes=probes,
        fused=fused,
        t0=t0,
        backend=backend,
    )
    return final, ys


_unroll = unroll  # for functions below whose `unroll` argument shadows the name

UNROLL_OPTIONS = ("lengths", "resets", "reverse", "time_axis", "unroll", "remat", "fused", "t0", "backend")


def check_unroll_kwargs(kwargs: dict, fn: str, allowed=UNROLL_OPTIONS) -> dict:
    """The keyword arguments a consumer forwards to :func:`unroll`, checked by that consumer: an
    unknown one is a TypeError naming ``fn`` and listing what it accepts."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"{fn}: unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; "
            f"the unroll options it accepts are {', '.join(allowed)}"
        )
    return kwargs


def trajectory(cell: Cell, params, xs, carry=None, **unroll_kwargs):
    """:func:`unroll` that also returns the state after every step: ``(final, ys, states)``.

    ``states`` is a pytree like the carry with leaves ``(T, *batch, ...)``, time first whatever
    ``time_axis`` is; like ``ys`` it is zero on padding steps (``t >= lengths``). One scan (or the fused
    kernel): the scan emits ``(y_t, s_t)``. In plain Python::

        states = []
        for t in range(T):
            s = cell.step(params, s, xs[t], t)          # as in unroll
            states.append(where(t < lengths, s, 0))
        return final, ys, stack(states)

    Args:
      cell, params, xs, carry, **unroll_kwargs: as for :func:`unroll` (``probes`` included).
    """
    check_unroll_kwargs(unroll_kwargs, "trajectory", UNROLL_OPTIONS + ("probes",))
    return _run("trajectory", cell, params, xs, carry, states=True, **unroll_kwargs)


def _run(
    fn,
    cell,
    params,
    xs,
    carry,
    *,
    lengths=None,
    resets=None,
    reverse=False,
    time_axis=0,
    unroll=1,
    remat=False,
    probes=None,
    fused=True,
    t0=0,
    states=False,
    backend="auto",
):
    """The one scan behind :func:`unroll` and :func:`trajectory`: ``(final, ys, states | None)``."""
    cell = check.cell(cell, fn)
    check.params(cell, params, fn)
    xs, axis = check.xs(cell, params, xs, time_axis, fn)
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    unroll = check.scan_unroll(unroll, fn)
    reverse = check.bool_arg(reverse, f"{fn}: reverse")
    fused = check.bool_arg(fused, f"{fn}: fused")
    if not (isinstance(remat, bool) or remat is None or callable(remat)):
        raise TypeError(f"{fn}: remat must be a bool or a jax.checkpoint policy; got {remat!r}")
    s0 = cell.initial_carry(params, batch_shape)
    carry = s0 if carry is None else check.carry(cell, params, carry, batch_shape, fn)
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
        # padding is inert: inputs past a sequence's length never reach the arithmetic (a NaN there
        # would otherwise turn every gradient into NaN through the masked-out step's derivative)
        valid_in = valid_steps(lengths, T)
        xs = jnp.where(valid_in[..., None], xs, jnp.zeros((), xs.dtype))
    t0 = _check_t0(t0, batch_shape, fn)
    _check_step_limit(cell, T, lengths, t0, resets, fn)
    if resets is not None:
        resets = reset_steps(check.resets(resets, xs.shape, axis, fn), reverse, lengths)
    if probes is not None:
        probes = check.probes(probes, carry, T, fn)

    def outputs(ys, st):
        ys = jax.tree.map(lambda y: jnp.moveaxis(y, 0, axis), ys) if axis else ys
        return ys, st

    kernel = cell.kernel
    _check_backend(backend, cell, fused, probes, remat, fn)
    if backend == "cudnn":
        _check_cudnn(cell, params, xs, resets, reverse, states, fn)
        final, ys = cudnn_lstm(params, carry, xs, lengths)
        return (final, *outputs(ys, None))
    if (
        fused
        and kernel is not None
        and (resets is None or kernel.resets)
        and probes is None
        and (remat is False or remat is None)
        and not cell.uses_step_index
        and not cell.has_cut
    ):
        extra = {} if resets is None else {"resets": resets, "reset_carry": s0}
        if backend not in ("auto", "xla"):
            extra["backend"] = backend
        out = kernel.apply(params, carry, xs, lengths=lengths, reverse=reverse, unroll=unroll, **extra)
        if out is not None:
            final, st = out
            ys = cell.output(st)
            if lengths is not None:
                valid = valid_steps(lengths, T)
                zero = lambda v: jnp.where(expand(valid, v), v, jnp.zeros_like(v))  # noqa: E731
                ys = jax.tree.map(zero, ys)
                st = jax.tree.map(zero, st) if states else None
            return (final, *outputs(ys, st if states else None))

    needs_t = cell.uses_step_index
    seq = {"x": xs}  # projected by _scan: all at once, or segment by segment inside remat=True
    if lengths is not None:
        seq["t"] = jnp.arange(T)
    if probes is not None:
        seq["probe"] = probes
    if resets is not None:
        seq["reset"] = resets
    padded = remat is True and T > 1  # remat segments may pad the time axis with no-op steps
    if padded:  # zero-padded to False on those steps (a zero-padded "t" would read as a valid step 0)
        seq["live"] = jnp.ones((T,), jnp.bool_)

    def body(state, inp):
        s, i = state if needs_t else (state, None)
        if "reset" in inp:
            s_in = select(inp["reset"], s0, s)
            i_in = jnp.where(inp["reset"], 0, i) if needs_t else None
        else:
            s_in, i_in = s, i
        new = cell.recur(params, cell.cut(s_in, i_in), inp["x"], i_in)
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, s)  # keep the carry's dtype
        if "probe" in inp:
            new = jax.tree.map(jnp.add, new, inp["probe"])
        valid = None
        if lengths is not None:
            valid = inp["t"] < lengths
        if padded:
            valid = inp["live"] if valid is None else valid & inp["live"]
        y = cell.output(new)
        emit = (y, new) if states else y
        if valid is None:
            return ((new, i_in + 1) if needs_t else new), emit
        valid = jnp.broadcast_to(valid, batch_shape)
        kept = select(valid, new, s)
        emit = jax.tree.map(lambda v: jnp.where(expand(valid, v), v, jnp.zeros_like(v)), emit)
        return ((kept, jnp.where(valid, i_in + 1, i)) if needs_t else kept), emit

    def project(seq):
        return {**seq, "x": cell.project(params, seq["x"])}

    init = (carry, t0) if needs_t else carry
    final, emitted = _scan(body, init, seq, T, reverse=reverse, unroll=unroll, remat=remat, prepare=project)
    final = final[0] if needs_t else final
    ys, st = emitted if states else (emitted, None)
    return (final, *outputs(ys, st))


BACKENDS = ("auto", "xla", "pallas", "cudnn")


def _refuse(fn: str, what: str, hint: str, **given) -> None:
    """A ValueError naming every option in ``given`` that is set (True) and ``what`` cannot take."""
    refused = [name for name, on in given.items() if on]
    if refused:
        raise ValueError(f"{fn}: {what} cannot take {', '.join(refused)}; {hint}")


def _check_cudnn(cell, params, xs, resets, reverse, states, fn):
    """The LSTM through cuDNN: one plain float32 LSTM on a GPU, forwards, without resets."""
    if cell.kind != "lstm" or cell.hparams["peepholes"]:
        raise ValueError(f"{fn}: backend='cudnn' runs jr.lstm without peepholes; got {cell.name}")
    _refuse(fn, "backend='cudnn'", "use backend='auto'", **{
        "resets": resets is not None, "reverse=True": reverse, "states": states,
    })  # fmt: skip
    dtypes = {str(jnp.result_type(a)) for a in (*jax.tree.leaves(params), xs)}
    if dtypes != {"float32"}:
        raise ValueError(f"{fn}: backend='cudnn' takes float32 params and inputs; got {sorted(dtypes)}")
    if jax.default_backend() != "gpu":
        raise ValueError(
            f"{fn}: backend='cudnn' needs an NVIDIA GPU (cuDNN); jax's default backend is "
            f"{jax.default_backend()!r}"
        )


def _check_backend(backend, cell, fused, probes, remat, fn):
    """An explicit backend other than XLA must serve the whole call, or it is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"{fn}: backend must be one of {list(BACKENDS)}; got {backend!r}")
    if backend in ("auto", "xla"):
        return
    kernel = cell.kernel
    if backend == "pallas" and (kernel is None or backend not in kernel.backends):
        raise ValueError(
            f"{fn}: backend={backend!r} has no kernel for {cell.name} (it runs lstm, gru, elman, irnn and "
            f"np_rnn); use backend='auto'"
        )
    _refuse(fn, f"backend={backend!r}", "use backend='auto'", **{
        "fused=False": not fused,
        "probes": probes is not None,
        "remat": not (remat is False or remat is None),
        "a cell that reads the step index or cuts gradients": cell.uses_step_index or cell.has_cut,
    })  # fmt: skip


def _check_t0(t0, batch_shape, fn):
    if not hasattr(t0, "dtype"):
        if isinstance(t0, (bool, np.bool_)) or not isinstance(t0, (int, np.integer)):
            raise TypeError(f"{fn}: t0 must be an int or an integer array of shape {batch_shape}; got {t0!r}")
        t0 = np.asarray(t0)
    if not jnp.issubdtype(t0.dtype, jnp.integer) or t0.ndim and tuple(t0.shape) != batch_shape:
        raise TypeError(
            f"{fn}: t0 must be an int or an integer array of shape {batch_shape} (the batch dims of xs); "
            f"got dtype {t0.dtype}, shape {tuple(t0.shape)}"
        )
    if check.is_concrete(t0) and np.size(t0) and int(np.min(np.asarray(t0))) < 0:
        raise ValueError(f"{fn}: t0 must be >= 0 (the index of the first step); got {np.asarray(t0)}")
    return jnp.broadcast_to(jnp.asarray(t0, jnp.int32), batch_shape)


def _check_step_limit(cell, T, lengths, t0, resets, fn):
    """A truncation schedule (``cell.step_limit``) must cover every step index the unroll reads."""
    limit = cell.step_limit
    if limit is None or resets is not None:
        return
    if lengths is not None and not check.is_concrete(lengths):
        return
    if not check.is_concrete(t0):
        return
    steps = T if lengths is None else int(np.max(np.asarray(lengths), initial=0))
    last = int(np.max(np.asarray(t0), initial=0)) + steps
    if last > limit:
        raise ValueError(
            f"{fn}: the truncation schedule of {cell.name} covers {limit} steps, but this unroll reads "
            f"step indices up to {last - 1} (T={T}, t0 up to {last - steps}); build the schedule for the "
            f"sequence (e.g. jr.truncation.every(k, {last}))"
        )


def state_gradients(
    cell: Cell, params, xs, loss_fn, carry=None, *, return_states: bool = False, **unroll_kwargs
):
    """``dL/ds_t`` for every step from the ordinary ``jax.grad``: ``(loss, ys, dL_ds)``.

    Zero probes ``e_t`` are added to the state after each step (``probes=`` of :func:`unroll`), so
    ``dL/de_t = dL/ds_t``: the total derivative of the loss with respect to the state at step ``t``,
    through the output at ``t`` and every later step -- the error that BPTT propagates back in time.
    No custom differentiation rules. For a truncated cell these are the truncated errors, which stop at
    the cuts -- the gradients that training sees. In plain Python::

        s, ys = carry, []
        for t in range(T):
            s = cell.step(params, cell.cut(s, t), xs[t], t) + e[t]          # e = 0
            ys.append(cell.output(s))
        loss = loss_fn(stack(ys))
        dL_ds = jax.grad(lambda e: loss_fn(...))(zeros)   # dL_ds[t] = dL/ds_t

    Args:
      cell, params, xs, carry: as for :func:`unroll`.
      loss_fn: ``ys (T, *batch, H) -> scalar`` (e.g. a mean squared error of a readout).
      return_states: also return the states ``s_t`` (from the same scan).
      **unroll_kwargs: ``lengths``, ``resets``, ``reverse``, ``time_axis``, ``unroll``, ``remat``,
        ``fused``, ``t0``. On padding steps (``t >= lengths``) the error is exactly zero.

    Returns:
      ``(loss, ys, dL_ds)``: the scalar loss, the outputs ``ys`` of :func:`unroll`, and a pytree like
      the carry with a leading time axis, leaves ``(T, *batch, ...)`` (time first whatever
      ``time_axis`` is). With ``return_states=True``, ``(loss, ys, dL_ds, states)``: ``states`` like
      ``dL_ds``, the state after each step (zero on padding steps).

    Raises:
      TypeError if ``loss_fn`` is not callable or returns a non-floating value, ValueError if it
      does not return a scalar; TypeError for an unknown keyword; everything :func:`unroll` raises.
    """
    fn = "state_gradients"
    cell = check.cell(cell, fn)
    check_unroll_kwargs(unroll_kwargs, fn)
    return_states = check.bool_arg(return_states, f"{fn}: return_states")
    check.params(cell, params, fn)
    xs_t, _ = check.xs(cell, params, xs, unroll_kwargs.get("time_axis", 0), fn)
    T, batch_shape = xs_t.shape[0], tuple(xs_t.shape[1:-1])
    start = cell.initial_carry(params, batch_shape) if carry is None else carry
    zeros = jax.tree.map(lambda c: jnp.zeros((T, *jnp.shape(c)), jnp.result_type(c)), start)

    def loss_of_probes(probes):
        _, ys, states = _run(
            fn, cell, params, xs, carry, probes=probes, states=return_states, **unroll_kwargs
        )
        return loss_fn(ys), (ys, states)

    check.loss_fn(
        loss_fn,
        jax.eval_shape(lambda e: _run(fn, cell, params, xs, carry, probes=e, **unroll_kwargs)[1], zeros),
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


def layer(cell: Cell, *, reverse: bool = False, unroll: int = 1, remat=False) -> Layer:
    """A :class:`Layer` that runs ``cell`` over the sequence with :func:`unroll`.

    ``layer(cell).apply(params, xs, carry, lengths=..., resets=...)`` is
    ``unroll(cell, params, xs, carry, lengths=..., resets=..., reverse=reverse, unroll=unroll,
    remat=remat)``: ``xs (T, *batch, I) -> ys (T, *batch, H)``; params and carry are the cell's.
    ``key`` is accepted and unused.
    """
    cell = check.cell(cell, "layer")

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
        cell.output_size,
        f"layer({cell.name})",
    )


def bidirectional(forward: Cell, backward: Cell | None = None, *, unroll: int = 1, remat=False) -> Layer:
    """A bidirectional layer: a forward and a backward pass, outputs concatenated.

    Schuster & Paliwal 1997; the Politecnico di Milano and Kitov lectures.

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
    forward = check.cell(forward, "bidirectional")
    backward = forward if backward is None else check.cell(backward, "bidirectional")

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
        if not isinstance(params, dict) or set(params) != {"forward", "backward"}:
            raise ValueError(
                f"bidirectional.apply: params must be a dict with keys 'forward' and 'backward' (make them "
                f"with layer.init(key, input_size)); got {type(params).__name__}"
                + (f" with keys {sorted(params)}" if isinstance(params, dict) else "")
            )
        check.params(forward, params["forward"], "bidirectional.apply", 'params["forward"]')
        check.params(backward, params["backward"], "bidirectional.apply", 'params["backward"]')
        c_f, c_b = (None, None) if carry is None else carry
        kw = dict(lengths=lengths, resets=resets, time_axis=time_axis, unroll=unroll, remat=remat)
        f_final, y_f = _unroll(forward, params["forward"], xs, c_f, **kw)
        b_final, y_b = _unroll(backward, params["backward"], xs, c_b, reverse=True, **kw)
        return (f_final, b_final), jnp.concatenate([y_f, y_b], axis=-1)

    def output_size(params):
        return forward.output_size(params["forward"]) + backward.output_size(params["backward"])

    return Layer(init, initial_carry, apply, output_size, f"bidirectional({forward.name}, {backward.name})")


def _as_layer(x, fn: str) -> Layer:
    if isinstance(x, Layer):
        return x
    if isinstance(x, Cell):
        return layer(x)
    raise TypeError(f"{fn}: expected Cells or Layers; got {type(x).__name__}")


def stack(*layers, skip: bool = False, dropout: float = 0.0) -> Layer:
    """A deep RNN: layers applied one after the other over the whole sequence (Kitov's lecture).

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
    cells = tuple(x if isinstance(x, Cell) else None for x in layers)  # params checked per cell layer
    layers = tuple(_as_layer(x, "stack") for x in layers)
    dropout = check.rate(dropout, "stack: dropout")
    skip = check.bool_arg(skip, "stack: skip")

    def init(key, input_size, dtype=jnp.float32):
        return init_in_sequence(
            layers,
            key,
            input_size,
            dtype,
            lambda lay, p: lay.output_size(p),
            skip=skip,
            fn="stack",
            unit="layer",
        )

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
        for l, (cell, p) in enumerate(zip(cells, params)):
            if cell is not None:
                check.params(cell, p, "stack.apply", f"params[{l}]")
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
