"""Losses for the three ways an RNN is used (Kitov, "Common use-cases of RNN"), built on optax.

Training is BPTT: ``jax.grad`` through :func:`~jaxrnn.unroll` and one of these losses. A readout of the
user's (``preds = ys @ W + b``) turns the outputs ``ys (T, *batch, H)`` into predictions
``preds (T, *batch, F)``; the losses compare them with targets through any optax-style per-element loss
``loss(preds, targets)`` (``optax.softmax_cross_entropy_with_integer_labels``, ``optax.l2_loss``, ...).

* **Acceptor** -- one prediction per sequence, read at its last step ``y_n`` (e.g. the polarity of a
  sentence): :func:`acceptor`, with :func:`last_valid` to pick ``preds[lengths[b] - 1, b]``.
* **Transducer** -- a prediction at every step (tagging, language modelling), the loss
  ``L(y_hat_{1:n}, y_{1:n}) = sum_i L(y_hat_i, y_i)`` over each sequence's valid steps:
  :func:`transducer`, with :func:`valid_mask` for the ``t < lengths`` mask.
* **Encoder** -- the sequence's representation ``y_n`` (and the state it came from) feeds another
  model, e.g. a decoder RNN started from it (machine translation) or a classifier: :func:`encode`.
* **Encoder-decoder** -- an encoder's final state starts a decoder RNN that generates the target
  sequence (Sutskever et al. 2014): :func:`seq2seq`, its teacher-forced training loss; generation is in
  :mod:`jaxrnn.decoding`.

**The per-step rule.** ``loss(p, y)`` is applied with broadcasting to all steps at once. It must return
either ``p.shape[:-1]`` (one value per step, like the cross-entropies) or ``p.shape`` (one per feature,
like ``optax.l2_loss``); in the second case the per-step loss is the **sum over the feature axis**.

**Padding.** Steps ``t >= lengths[b]`` contribute exactly zero and receive an exactly-zero gradient, even
when the predictions or targets there are NaN or garbage (e.g. an ignore label ``-100``): predictions and
targets on padding are replaced by zeros before ``loss`` is called and the result is masked again (the
"double where" that keeps gradients finite).

References: V. Kitov, "Recurrent neural nets" (lecture), section "Common use-cases of RNN";
Y. Goldberg, "A Primer on Neural Network Models for Natural Language Processing" (JAIR 2016),
"Common RNN usage-patterns" (acceptor, encoder, transducer); I. Sutskever, O. Vinyals, Q. V. Le,
"Sequence to Sequence Learning with Neural Networks" (NeurIPS 2014), section 2 (encoder-decoder).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.masking import valid_steps
from jaxrnn.unroll import check_unroll_kwargs
from jaxrnn.unroll import unroll as unroll_cell

__all__ = ["acceptor", "encode", "last_valid", "seq2seq", "transducer", "valid_mask"]

_TRANSDUCER_REDUCTIONS = ("mean", "sequence_mean", "sum", "none")
_ACCEPTOR_REDUCTIONS = ("mean", "sum", "none")
_UNROLL_KWARGS = ("resets", "reverse", "time_axis", "unroll", "remat", "probes", "fused", "t0")


# --------------------------------------------------------------------------------------------------
# argument checks (shapes and dtypes only, before tracing)


def _as_array(x, what: str, fn: str):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: {what} must be an array; got {type(x).__name__}") from None
    return x


def _time_axis(time_axis, ndim: int, what: str, fn: str, features: bool = True) -> int:
    """``time_axis`` normalised to ``0 .. ndim - 1``; with ``features`` not the last axis of ``what``."""
    try:
        if isinstance(time_axis, bool):
            raise TypeError
        axis = operator.index(time_axis)
    except TypeError:
        raise TypeError(f"{fn}: time_axis must be an int; got {time_axis!r}") from None
    if features and (not -ndim <= axis < ndim or axis % ndim == ndim - 1):
        raise ValueError(
            f"{fn}: time_axis must index a non-feature axis of {what} (rank {ndim}: one of "
            f"0..{ndim - 2}, or -{ndim}..-2); got {time_axis}"
        )
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{fn}: time_axis must index an axis of {what} (rank {ndim}: one of 0..{ndim - 1}, or "
            f"-{ndim}..-1); got {time_axis}"
        )
    return axis % ndim


def _check_seq(x, time_axis, what: str, fn: str):
    """``x (T, *batch, F)`` (time on ``time_axis``) as a real array moved to time-major."""
    x = _as_array(x, what, fn)
    if x.ndim < 2:
        raise ValueError(
            f"{fn}: {what} must have shape (T, *batch, features) with time on axis time_axis; got shape "
            f"{tuple(x.shape)}. A scalar prediction per step needs a feature axis of size 1."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {what} must be a real floating array; got dtype {x.dtype}")
    axis = _time_axis(time_axis, x.ndim, what, fn)
    x = jnp.moveaxis(x, axis, 0) if axis else x
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: {what} has an empty time axis (T = 0); give at least one step")
    return x, axis


def _check_targets(targets, lead: tuple, axis: int, fn: str, per_step: bool):
    """``targets`` whose leading dims are ``lead`` (``(T, *batch)`` with time on ``axis``, or ``batch``)."""
    targets = _as_array(targets, "targets", fn)
    n = len(lead)
    if targets.ndim < n:
        got_lead = None
    else:
        moved = jnp.moveaxis(targets, axis, 0) if (per_step and axis) else targets
        got_lead = tuple(moved.shape[:n])
    if got_lead != lead:
        if per_step:
            user = lead[1 : axis + 1] + lead[:1] + lead[axis + 1 :]  # time back on its axis
            want = "(" + "".join(f"{d}, " for d in user) + f"...) with time on axis {axis}"
            ref = "the time and batch dims of preds"
        else:
            want = "(*batch, ...) = (" + "".join(f"{d}, " for d in lead) + "...)"
            ref = "the batch dims of preds: one target per sequence"
        raise ValueError(f"{fn}: targets must have shape {want} ({ref}); got {tuple(targets.shape)}")
    return moved


def _check_reduction(reduction, allowed, fn: str) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(f"{fn}: reduction must be one of {list(allowed)}; got {reduction!r}")
    return reduction


def _check_loss(loss, preds, targets, fn: str, note: str = "") -> bool:
    """``loss(preds, targets)`` must give ``preds.shape[:-1]`` or ``preds.shape``; True for the latter
    (sum over features). Checked on shapes only (``jax.eval_shape``)."""
    if not callable(loss):
        raise TypeError(
            f"{fn}: loss must be a callable (preds, targets) -> per-element loss, e.g. "
            f"optax.softmax_cross_entropy_with_integer_labels; got {type(loss).__name__}"
        )
    p = jax.ShapeDtypeStruct(preds.shape, preds.dtype)
    t = jax.ShapeDtypeStruct(targets.shape, targets.dtype)
    try:
        out = jax.eval_shape(loss, p, t)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{fn}: loss failed on preds {tuple(preds.shape)} and targets {tuple(targets.shape)} "
            f"(dtype {targets.dtype}): {e}"
        ) from e
    shape = tuple(out.shape) if isinstance(out, jax.ShapeDtypeStruct) else None
    if shape not in (tuple(preds.shape[:-1]), tuple(preds.shape)):
        got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
        raise ValueError(
            f"{fn}: loss(preds, targets) must return preds.shape[:-1] = {tuple(preds.shape[:-1])} (one "
            f"value per prediction) or preds.shape = {tuple(preds.shape)} (per feature, summed over "
            f"features){note}; got {got}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{fn}: loss must return a real floating array; got dtype {out.dtype}")
    return shape == tuple(preds.shape)


def _bcast(mask, x):
    """``mask (*m)`` reshaped to broadcast against ``x (*m, ...)``."""
    return jnp.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim))


def _masked_loss(loss, preds, targets, valid, per_feature: bool):
    """``loss`` with the double-where: zero on ``~valid`` with a zero (never NaN) gradient there.

    ``preds (*m, F)``, ``targets (*m, ...)``, ``valid (*m)`` or None; returns ``(*m)``."""
    if valid is not None:
        preds = jnp.where(_bcast(valid, preds), preds, jnp.zeros_like(preds))
        targets = jnp.where(_bcast(valid, targets), targets, jnp.zeros_like(targets))
    out = loss(preds, targets)
    if per_feature:
        out = jnp.sum(out, axis=-1)
    if valid is not None:
        out = jnp.where(valid, out, jnp.zeros_like(out))
    return out


# --------------------------------------------------------------------------------------------------
# masks and gathers


def valid_mask(lengths, T: int, *, time_axis: int = 0) -> jax.Array:
    """The valid steps of a padded batch: ``mask[t, b] = t < lengths[b]``, booleans ``(T, *batch)``.

    In plain Python::

        mask = [[t < lengths[b] for b in batch] for t in range(T)]

    Args:
      lengths: ``(*batch)`` integers in ``[0, T]`` (any number of batch dims, also none).
      T: the number of steps, a positive int (static).
      time_axis: where time goes in the result, an axis of ``(T, *batch)`` (``-1`` puts it last).

    Returns:
      ``(T, *batch)`` booleans (time on ``time_axis``), True on the steps :func:`~jaxrnn.unroll` runs.

    Raises:
      TypeError / ValueError for a non-positive ``T``, non-integer ``lengths`` or values outside
      ``[0, T]`` (checked when ``lengths`` is concrete), a bad ``time_axis``.
    """
    fn = "valid_mask"
    T = check.positive_int(T, f"{fn}: T")
    lengths = _as_array(lengths, "lengths", fn)
    lengths = check.lengths(lengths, T, tuple(lengths.shape), fn)
    axis = _time_axis(time_axis, lengths.ndim + 1, "the mask (T, *batch)", fn, features=False)
    mask = valid_steps(lengths, T)
    return jnp.moveaxis(mask, 0, axis) if axis else mask


def last_valid(ys, lengths=None, *, time_axis: int = 0) -> jax.Array:
    """Each sequence's output at its last valid step: ``ys[lengths[b] - 1, b]``, ``(*batch, F)``.

    The acceptor's ``y_n`` (Kitov). A gather (``take_along_axis``), so it is jit-safe with traced
    ``lengths``, and its gradient is the output's cotangent at step ``lengths[b] - 1`` and exactly zero
    at every other step. In plain Python::

        out = zeros(batch + (F,))
        for b in batch:
            if lengths is None:
                out[b] = ys[T - 1, b]
            elif lengths[b] > 0:
                out[b] = ys[lengths[b] - 1, b]      # a length-0 sequence gives zeros (as unroll's ys)

    Note that for ``ys`` from :func:`~jaxrnn.unroll` (``reverse=False``) this equals
    ``cell.output(final_carry)`` except for length-0 sequences (zeros here, the output of the initial
    carry there; :func:`encode` gives that).

    Args:
      ys: ``(T, *batch, F)`` (time on ``time_axis``), e.g. ``unroll``'s ``ys`` or predictions.
      lengths: ``(*batch)`` integers in ``[0, T]``; None means every sequence has ``T`` steps.
      time_axis: where time is in ``ys``.

    Returns:
      ``(*batch, F)``.

    Raises:
      TypeError / ValueError for ``ys`` of rank < 2 or not floating, ``lengths`` of the wrong shape,
      dtype or range, a bad ``time_axis``.
    """
    fn = "last_valid"
    ys, _ = _check_seq(ys, time_axis, "ys", fn)
    return _last_valid(
        ys, None if lengths is None else check.lengths(lengths, ys.shape[0], ys.shape[1:-1], fn)
    )


def _last_valid(ys, lengths):
    """``last_valid`` on time-major, checked arguments."""
    if lengths is None:
        return ys[-1]
    idx = jnp.clip(lengths - 1, 0, ys.shape[0] - 1)
    out = jnp.take_along_axis(ys, idx[None, ..., None], axis=0, mode="clip")[0]
    return jnp.where(_bcast(lengths > 0, out), out, jnp.zeros_like(out))


# --------------------------------------------------------------------------------------------------
# the losses


def transducer(
    loss: Callable,
    preds,
    targets,
    lengths=None,
    *,
    time_axis: int = 0,
    reduction: str = "mean",
) -> jax.Array:
    """The transducer loss (Kitov): a loss at every valid step, ``sum_i L(y_hat_i, y_i)``, reduced.

    With ``l[t, b] = L(preds[t, b], targets[t, b])`` (summed over features when ``loss`` is
    elementwise, see the module docstring), ``n_b = lengths[b]`` and ``valid[t, b] = t < n_b``::

        l = [[loss(preds[t, b], targets[t, b]) if t < n[b] else 0 for b in batch] for t in range(T)]
        "sum":           sum_{t, b} l[t, b]                                # Kitov's L, over the batch
        "mean":          sum_{t, b} l[t, b] / sum_b n_b                    # per valid token
        "sequence_mean": mean_{b: n_b > 0} (sum_t l[t, b] / n_b)           # per sequence, then batch
        "none":          l, (T, *batch) with time on time_axis, zero on padding

    ``"mean"`` weights every token equally (long sequences count more), ``"sequence_mean"`` every
    non-empty sequence equally. Length-0 sequences contribute 0 to every reduction and are left out of
    both denominators; when no step is valid at all the mean is 0 (not NaN).

    Padding steps contribute exactly 0 and get an exactly-zero gradient, even where ``preds`` or
    ``targets`` hold NaN or out-of-range labels there (double where: ``loss`` sees zeros on padding).

    Example, a tagger trained by BPTT (``jax.grad`` through the unroll)::

        def objective(params, xs, tags, lengths):
            _, ys = jr.unroll(cell, params["rnn"], xs, lengths=lengths)          # (T, B, H)
            logits = ys @ params["W"] + params["b"]                                # (T, B, C)
            return transducer(optax.softmax_cross_entropy_with_integer_labels, logits, tags, lengths)

        grads = jax.grad(objective)(params, xs, tags, lengths)

    Args:
      loss: optax-style ``loss(preds, targets)``, applied with broadcasting to all steps at once;
        returns ``preds.shape[:-1]`` or ``preds.shape`` (then summed over the feature axis).
      preds: ``(T, *batch, F)`` floating predictions (time on ``time_axis``); any number of batch dims.
      targets: ``(T, *batch, ...)``, time on the same axis: ``(T, *batch)`` integer labels,
        ``(T, *batch, F)`` one-hot or regression targets -- whatever ``loss`` takes.
      lengths: ``(*batch)`` integers in ``[0, T]``; None means all ``T`` steps are valid.
      time_axis: the time axis of ``preds`` and ``targets`` (normalised against ``preds``'s rank).
      reduction: ``"mean"`` (default), ``"sequence_mean"``, ``"sum"`` or ``"none"``.

    Returns:
      A scalar in ``loss``'s dtype, or for ``"none"`` the per-step losses ``(T, *batch)``.

    Raises:
      TypeError / ValueError before tracing for a non-callable ``loss``, one that returns neither
      ``preds.shape[:-1]`` nor ``preds.shape``, ``targets`` whose time or batch dims differ from
      ``preds``'s, ``lengths`` of the wrong shape, dtype or range, an unknown ``reduction``.

    References: V. Kitov, "Recurrent neural nets" (lecture), "Common use-cases of RNN: Transducer".
    """
    fn = "transducer"
    reduction = _check_reduction(reduction, _TRANSDUCER_REDUCTIONS, fn)
    preds, axis = _check_seq(preds, time_axis, "preds", fn)
    T, batch_shape = preds.shape[0], tuple(preds.shape[1:-1])
    targets = _check_targets(targets, (T, *batch_shape), axis, fn, per_step=True)
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    per_feature = _check_loss(loss, preds, targets, fn, " (shapes with time moved first)" if axis else "")

    valid = None
    if lengths is not None:
        valid = valid_steps(lengths, T)
    l = _masked_loss(loss, preds, targets, valid, per_feature)  # (T, *batch)
    if reduction == "none":
        return jnp.moveaxis(l, 0, axis) if axis else l
    if reduction == "sum":
        return jnp.sum(l)
    if lengths is None:  # every sequence has T steps: token mean == sequence mean (0 for an empty batch)
        return jnp.sum(l) / max(l.size, 1)
    n = lengths.astype(l.dtype)
    if reduction == "mean":
        return jnp.sum(l) / jnp.maximum(jnp.sum(n), 1)
    per_seq = jnp.sum(l, axis=0) / jnp.maximum(n, 1)  # zero for length-0 sequences
    return jnp.sum(per_seq) / jnp.maximum(jnp.sum(lengths > 0).astype(l.dtype), 1)


def acceptor(
    loss: Callable,
    preds,
    targets,
    lengths=None,
    *,
    time_axis: int = 0,
    reduction: str = "mean",
) -> jax.Array:
    """The acceptor loss (Kitov): one loss per sequence, at its last valid step ``y_hat_n``.

    With ``n_b = lengths[b]`` (``T`` when ``lengths`` is None) and ``l_b = L(preds[n_b - 1, b],
    targets[b])`` (summed over features when ``loss`` is elementwise)::

        l = [loss(preds[n[b] - 1, b], targets[b]) if n[b] > 0 else 0 for b in batch]
        "mean": mean_{b: n_b > 0} l_b          "sum": sum_b l_b          "none": l, (*batch)

    A length-0 sequence has no last step: it contributes 0 and is left out of the mean (0, not NaN,
    when all are empty); its prediction and target are never read, and get a zero gradient. To classify
    the initial state of an empty sequence, read it out of :func:`encode`'s ``y_n`` instead.

    Example, sentence polarity::

        _, ys = jr.unroll(cell, params["rnn"], xs, lengths=lengths)     # (T, B, H)
        logits = ys @ params["W"] + params["b"]                           # (T, B, 2)
        acceptor(optax.softmax_cross_entropy_with_integer_labels, logits, labels, lengths)  # labels (B,)

    (Equivalently ``loss(last_valid(logits, lengths), labels)``; reading out only
    ``last_valid(ys, lengths) @ W + b`` saves the readout of the other steps.)

    Args:
      loss: optax-style ``loss(preds, targets)``; returns ``preds.shape[:-1]`` or ``preds.shape``
        (then summed over the feature axis) for the ``(*batch, F)`` predictions at the last steps.
      preds: ``(T, *batch, F)`` floating predictions (time on ``time_axis``); any number of batch dims.
      targets: ``(*batch, ...)``, one per sequence: ``(*batch)`` labels, ``(*batch, F)`` one-hot, ...
      lengths: ``(*batch)`` integers in ``[0, T]``; None means every sequence has ``T`` steps.
      time_axis: the time axis of ``preds``.
      reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
      A scalar in ``loss``'s dtype, or for ``"none"`` the per-sequence losses ``(*batch)``.

    Raises:
      TypeError / ValueError before tracing for a non-callable ``loss``, one that returns a wrong
      shape, ``targets`` whose batch dims differ from ``preds``'s, ``lengths`` of the wrong shape,
      dtype or range, an unknown ``reduction``.

    References: V. Kitov, "Recurrent neural nets" (lecture), "Common use-cases of RNN: Acceptor".
    """
    fn = "acceptor"
    reduction = _check_reduction(reduction, _ACCEPTOR_REDUCTIONS, fn)
    preds, _ = _check_seq(preds, time_axis, "preds", fn)
    T, batch_shape = preds.shape[0], tuple(preds.shape[1:-1])
    targets = _check_targets(targets, batch_shape, 0, fn, per_step=False)
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    last = _last_valid(preds, lengths)  # (*batch, F), zeros for empty sequences
    per_feature = _check_loss(loss, last, targets, fn, " (preds at the last steps)")

    valid = None if lengths is None else lengths > 0
    l = _masked_loss(loss, last, targets, valid, per_feature)  # (*batch)
    if reduction == "none":
        return l
    if reduction == "sum":
        return jnp.sum(l)
    if lengths is None:
        return jnp.sum(l) / max(l.size, 1)  # 0 for an empty batch
    return jnp.sum(l) / jnp.maximum(jnp.sum(valid).astype(l.dtype), 1)


# --------------------------------------------------------------------------------------------------
# the encoder


def encode(cell: Cell, params, xs, carry=None, *, lengths=None, **unroll_kwargs):
    """The encoder (Kitov): each sequence's representation ``y_n = O(s_n)`` and its final state ``s_n``.

    Runs :func:`~jaxrnn.unroll` and reads the output of the final carry, the state after each
    sequence's own last valid step (the initial carry for a length-0 sequence). In plain Python::

        s = cell.initial_carry(params, batch) if carry is None else carry
        for t in range(T):
            s = where(t < lengths, cell.step(params, s, xs[t]), s)
        return cell.output(s), s

    ``y_n`` feeds a classifier or a document feature; ``s_n`` seeds a decoder RNN ("decode starting
    from s_0 = y_n", Kitov), directly when the two cells' carries match or through a bridge (e.g.
    ``jnp.tanh(y_n @ W_bridge)``) when they do not. With ``reverse=True`` the "last" step is step 0.

    Example, seq2seq (Sutskever et al. 2014) with teacher forcing: source ``src (S, B, I)`` with
    ``src_len (B,)``, target tokens ``tgt (U, B)`` with ``tgt_len (B,)``, ``bos`` a start token::

        enc, dec = jr.lstm(H), jr.lstm(H)           # same carry structure: pass s_n on as it is

        def seq2seq_loss(params, src, src_len, tgt, tgt_len):
            _, s_n = encode(enc, params["enc"], src, lengths=src_len)
            # the decoder reads the previous target token (teacher forcing): bos, y_1, ..., y_{U-1}
            prev = jnp.concatenate([jnp.full((1, B), bos), tgt[:-1]], axis=0)        # (U, B)
            _, ys = jr.unroll(dec, params["dec"], params["emb"][prev], carry=s_n, lengths=tgt_len)
            logits = ys @ params["W"] + params["b"]                                  # (U, B, V)
            return transducer(optax.softmax_cross_entropy_with_integer_labels, logits, tgt, tgt_len)

        grads = jax.grad(seq2seq_loss)(params, src, src_len, tgt, tgt_len)   # BPTT through both RNNs

    (:func:`seq2seq` is this loss, with a bridge between unlike carries and a reversed source.)

    Args:
      cell, params, xs, carry, lengths: as for :func:`~jaxrnn.unroll`; ``xs (T, *batch, I)``.
      **unroll_kwargs: ``resets``, ``reverse``, ``time_axis``, ``unroll``, ``remat``, ``probes``,
        passed to :func:`~jaxrnn.unroll`.

    Returns:
      ``(y_n, final)``: ``cell.output(final)`` ``(*batch, H)``, and the final carry (a pytree like
      ``cell.initial_carry(params, batch_shape)``).

    Raises:
      TypeError for an unknown keyword; everything :func:`~jaxrnn.unroll` raises (errors in ``cell``,
      ``xs``, ``carry`` and ``lengths`` named ``encode``, the other keywords' named ``unroll``).

    References: V. Kitov, "Recurrent neural nets" (lecture), "Common use-cases of RNN: Encoder";
    Sutskever, Vinyals and Le (2014), section 2.
    """
    fn = "encode"
    check_unroll_kwargs(unroll_kwargs, fn, _UNROLL_KWARGS)
    cell = check.cell(cell, fn)
    check.params(cell, params, fn)
    xs_t, _ = check.xs(cell, params, xs, unroll_kwargs.get("time_axis", 0), fn)
    T, batch_shape = xs_t.shape[0], tuple(xs_t.shape[1:-1])
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    if carry is not None:
        carry = check.carry(cell, params, carry, batch_shape, fn)
    final, _ = unroll_cell(cell, params, xs, carry, lengths=lengths, **unroll_kwargs)
    return cell.output(final), final


# --------------------------------------------------------------------------------------------------
# the encoder-decoder

_SEQ2SEQ_KEYS = ("encoder", "decoder", "embed", "W", "b")


def _struct(tree):
    return [(tuple(x.shape), jnp.dtype(x.dtype)) for x in jax.tree.leaves(tree)]


def _describe_carry(tree) -> str:
    return f"{jax.tree.structure(tree)} with leaf shapes {[s for s, _ in _struct(tree)]}"


def _check_matrix(value, shape: tuple, what: str, fn: str, want: str):
    """A floating array of ``shape`` (``None`` entries free); ``want`` describes it."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn}: {what} must be a floating array of shape {want}; got {type(value).__name__}"
            + (f" of dtype {dtype}" if dtype is not None else "")
        )
    got = tuple(value.shape)
    if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
        raise ValueError(f"{fn}: {what} must have shape {want}; got {got}")
    return value


def seq2seq(
    encoder: Cell,
    decoder: Cell,
    params,
    xs,
    ys_in,
    ys_out,
    *,
    x_lengths=None,
    y_lengths=None,
    bridge: Callable | None = None,
    reverse_source: bool = False,
    reduction: str = "mean",
) -> jax.Array:
    """The teacher-forced loss of an encoder-decoder (Sutskever et al. 2014): the cross-entropy of the
    target tokens ``ys_out`` given the source ``xs`` and the previous target tokens ``ys_in``.

    The encoder reads the source; its final state (:func:`encode`), as it is or mapped by ``bridge``,
    is the decoder's initial state; the decoder reads the embedded previous tokens and a linear readout
    gives the logits of the next one. With ``E = params["embed"]``, ``W = params["W"]``,
    ``b = params["b"]``::

        s_n  = encoder state after x_1 .. x_n                      (x_n .. x_1 with reverse_source)
        d_0  = s_n  or  bridge(params, s_n)
        d_u  = decoder.step(params["decoder"], d_{u-1}, E[ys_in[u]])
        log p(ys_out[u] | ys_in[<=u], x) = log_softmax(decoder.output(d_u) @ W + b)[ys_out[u]]

    Teacher forcing: ``ys_in`` is the target shifted right, a start token first
    (``ys_in = [bos, y_1, ..., y_{U-1}]``, ``ys_out = [y_1, ..., y_U]``, e.g. ``y_U = eos``); the
    decoder is fed the true previous token, never its own prediction. The per-step losses
    ``l[u, b] = -log p(ys_out[u, b] | ...)`` on the valid steps ``u < y_lengths[b]`` are reduced as
    :func:`transducer` does (``"mean"`` per valid token, ``"sequence_mean"``, ``"sum"``, ``"none"``);
    per sequence, ``reduction="none"`` summed over ``u`` is ``-log p(y | x)``, whose minimum
    :func:`jaxrnn.decoding.beam_search` searches for. In plain Python, one sequence ``b``::

        s = encoder.initial_carry(params["encoder"], ())
        for t in (reversed if reverse_source else iter)(range(x_lengths[b])):
            s = encoder.step(params["encoder"], s, xs[t, b])
        d = s if bridge is None else bridge(params, s)
        l = []
        for u in range(y_lengths[b]):
            d = decoder.step(params["decoder"], d, E[ys_in[u, b]])
            logits = decoder.output(d) @ W + b
            l.append(logsumexp(logits) - logits[ys_out[u, b]])

    The same parameters decode (:mod:`jaxrnn.decoding`) with the step::

        step = lambda d, tok: (lambda d2: (d2, decoder.output(d2) @ W + b))(
            decoder.step(params["decoder"], d, E[tok]))
        tokens, log_prob = jr.decoding.beam_search(step, d_0, bos, max_length, beam_size, eos_token=eos)

    Args:
      encoder, decoder: the two cells (:class:`~jaxrnn.Cell`). Without a ``bridge`` their carries must
        have the same structure and shapes (e.g. two ``jr.lstm(H)``); dtypes follow the decoder's.
      params: a dict with ``"encoder"`` and ``"decoder"`` (the cells' params), ``"embed"``
        ``(V_in, I_dec)`` (the decoder's input embedding), ``"W"`` ``(H_dec, V)`` and ``"b"`` ``(V,)``
        (the readout; ``H_dec`` the decoder's output size), and whatever ``bridge`` reads.
      xs: the source, ``(S, *batch, I_enc)``, time first; any number of batch dims.
      ys_in: the decoder's input tokens ``(U, *batch)``, integers in ``[0, V_in)`` on the valid steps.
      ys_out: the target tokens ``(U, *batch)``, integers in ``[0, V)`` on the valid steps.
      x_lengths: ``(*batch)`` integers in ``[0, S]``; None means all ``S`` source steps are valid.
      y_lengths: ``(*batch)`` integers in ``[0, U]``; None means all ``U`` target steps are valid.
        Padding (either side) contributes exactly 0 and gets a zero gradient, whatever tokens it holds.
      bridge: None, or ``bridge(params, s_n) -> d_0`` mapping the encoder's final carry (batched,
        ``(*batch, ...)`` leaves) to a decoder carry (e.g. ``LSTMCarry(jnp.tanh(s_n @ params["bridge"]),
        zeros)`` from a GRU encoder to an LSTM decoder).
      reverse_source: read each source sequence backwards (its valid steps, last first), Sutskever et
        al.'s reversal of the source sentence.
      reduction: ``"mean"`` (default), ``"sequence_mean"``, ``"sum"`` or ``"none"``, as for
        :func:`transducer`.

    Returns:
      A scalar, or for ``"none"`` the per-step losses ``(U, *batch)`` (zero on padding).

    Raises:
      TypeError / ValueError before tracing for cells that are not Cells, ``params`` without the keys
      above or with entries of the wrong shape or dtype, ``xs`` that does not fit the encoder, tokens
      that are not integer ``(U, *batch)`` arrays or (when concrete) out of their vocabulary on valid
      steps, lengths of the wrong shape, dtype or range, an encoder carry that does not fit the decoder
      (without a bridge) or a bridge whose output does not, a non-bool ``reverse_source``, an unknown
      ``reduction``.

    References: I. Sutskever, O. Vinyals, Q. V. Le, "Sequence to Sequence Learning with Neural
    Networks" (NeurIPS 2014), sections 2 and 3.3 (the reversed source); V. Kitov, "Recurrent neural
    nets" (lecture), "Common use-cases of RNN: Encoder"; B. Leibe, RWTH Aachen, Machine Learning
    Lecture 17 (encoder-decoder RNNs).
    """
    fn = "seq2seq"
    reduction = _check_reduction(reduction, _TRANSDUCER_REDUCTIONS, fn)
    reverse_source = check.bool_arg(reverse_source, f"{fn}: reverse_source")
    for what, c in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(c, Cell):
            raise TypeError(f"{fn}: {what} must be a jaxrnn Cell (e.g. jr.lstm(128)); got {type(c).__name__}")
    if not hasattr(params, "keys") or not hasattr(params, "__getitem__"):
        raise TypeError(
            f"{fn}: params must be a dict with keys {list(_SEQ2SEQ_KEYS)}; got {type(params).__name__}"
        )
    missing = [k for k in _SEQ2SEQ_KEYS if k not in params]
    if missing:
        raise ValueError(
            f"{fn}: params must be a dict with keys {list(_SEQ2SEQ_KEYS)} (and any the bridge reads); "
            f"missing {missing}"
        )
    check.params(encoder, params["encoder"], fn, 'params["encoder"]')
    check.params(decoder, params["decoder"], fn, 'params["decoder"]')
    xs_t, _ = check.xs(encoder, params["encoder"], xs, 0, fn)
    S, batch = xs_t.shape[0], tuple(xs_t.shape[1:-1])
    shape_text = f"(U, *batch) with U >= 1 and batch {batch} (the batch dims of xs), time first"
    ys_in = check.tokens(ys_in, (None, *batch), fn, name="ys_in", shape_text=shape_text)
    ys_out = check.tokens(ys_out, (None, *batch), fn, name="ys_out", shape_text=shape_text)
    U = ys_in.shape[0]
    if ys_out.shape[0] != U:
        raise ValueError(
            f"{fn}: ys_out must have the shape of ys_in, {tuple(ys_in.shape)} (one target per decoder "
            f"step); got {tuple(ys_out.shape)}"
        )
    if x_lengths is not None:
        x_lengths = check.lengths(x_lengths, S, batch, fn, name="x_lengths", steps="S")
    if y_lengths is not None:
        y_lengths = check.lengths(y_lengths, U, batch, fn, name="y_lengths", steps="U")

    dec_carry = jax.eval_shape(lambda p: decoder.initial_carry(p, batch), params["decoder"])
    H_dec = jax.eval_shape(decoder.output, dec_carry).shape[-1]
    I_dec = decoder.input_size(params["decoder"])
    embed = _check_matrix(
        params["embed"], (None, I_dec), 'params["embed"]', fn, f"(V_in, {I_dec}) (the decoder's input size)"
    )
    W = _check_matrix(
        params["W"], (H_dec, None), 'params["W"]', fn, f"({H_dec}, V) (the decoder's output size)"
    )
    V = W.shape[1]
    b = _check_matrix(params["b"], (V,), 'params["b"]', fn, f'({V},) (V from params["W"])')
    valid = None  # the valid steps, where the tokens must be in range (a traced y_lengths: not checked)
    if y_lengths is not None:
        steps = np.arange(U).reshape((U,) + (1,) * len(batch))
        valid = steps < np.asarray(y_lengths) if check.is_concrete(y_lengths) else y_lengths
    check.token_range(ys_in, embed.shape[0], fn, name="ys_in", vocab_text="V_in", valid=valid)
    check.token_range(ys_out, V, fn, name="ys_out", vocab_text="V", valid=valid)

    enc_carry = jax.eval_shape(lambda p: encoder.initial_carry(p, batch), params["encoder"])
    if bridge is None:
        bridged = enc_carry
        what = "the encoder's final carry"
        hint = "; pass bridge=lambda params, carry: ... to map one to the other"
    else:
        if not callable(bridge):
            raise TypeError(
                f"{fn}: bridge must be None or a callable (params, encoder carry) -> decoder carry; "
                f"got {type(bridge).__name__}"
            )
        try:
            bridged = jax.eval_shape(bridge, params, enc_carry)
        except Exception as e:  # noqa: BLE001 - the user's function: say where it failed, keep the cause
            raise TypeError(
                f"{fn}: bridge(params, carry) failed on the encoder's final carry "
                f"({_describe_carry(enc_carry)}): {type(e).__name__}: {e}"
            ) from e
        what, hint = "bridge(params, carry)", ""
    fits = jax.tree.structure(bridged) == jax.tree.structure(dec_carry) and [
        s for s, _ in _struct(bridged)
    ] == [s for s, _ in _struct(dec_carry)]
    if not fits:
        raise ValueError(
            f"{fn}: {what} ({_describe_carry(bridged)}) does not fit the decoder, whose carry is "
            f"{_describe_carry(dec_carry)}{hint}"
        )
    if not all(jnp.issubdtype(d, jnp.floating) for _, d in _struct(bridged)):
        raise TypeError(f"{fn}: {what} must be floating; got dtypes {[str(d) for _, d in _struct(bridged)]}")

    _, final = encode(encoder, params["encoder"], xs_t, lengths=x_lengths, reverse=reverse_source)
    d0 = final if bridge is None else bridge(params, final)
    d0 = jax.tree.map(lambda x, e: x.astype(e.dtype), d0, dec_carry)
    if y_lengths is not None:  # padding may hold any token (e.g. -1): read a valid row of E there
        ys_in = jnp.where(jnp.arange(U).reshape((U,) + (1,) * len(batch)) < y_lengths, ys_in, 0)
    _, ys = unroll_cell(decoder, params["decoder"], embed[ys_in], d0, lengths=y_lengths)
    logits = ys @ W + b
    ce = optax.softmax_cross_entropy_with_integer_labels
    return transducer(ce, logits, ys_out, y_lengths, reduction=reduction)
