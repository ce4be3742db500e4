"""Recurrent dropout as a Cell -> Cell transform: Semeniuta et al.'s and Gal & Ghahramani's.

Dropout inside the recurrence must not erase the memory. Two placements that respect this:

* **Semeniuta** (Semeniuta, Severyn, Barth 2016, "Recurrent Dropout without Memory Loss"):
  drop only the *candidate* that is written into the memory, never the memory itself (also in the
  dynamical-systems lecture notes "Recurrent neural networks")::

      LSTM   c_t = f_t * c_{t-1} + i_t * d(g_t)
      GRU    h_t = (1 - z_t) * d(n_t) + z_t * h_{t-1}      (jaxrnn/PyTorch's z; the paper's
                                                           h_t = (1 - z) h_{t-1} + z d(g) with z <-> 1 - z)
      MGU    h_t = (1 - f_t) * h_{t-1} + f_t * d(n_t)
      Elman  h_t = f(x_t @ W_xh + d(h_{t-1}) @ W_hh + b)  (the paper's vanilla-RNN form: in an ungated
                                                           cell the recurrent input is the candidate)

* **Gal** (Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent
  Neural Networks", NeurIPS, section 4): drop the recurrent input ``h_{t-1}`` where it enters the
  recurrent matrix product, ``d(h_{t-1}) @ W_hh``, one mask shared by all gates (as PyTorch-style
  fused gates suggest and as the paper's "tied weights" variant does; Keras' ``implementation=1``
  LSTM draws one mask per gate instead). The LSTM's ``c`` and the GRU/MGU's interpolation
  ``z * h_{t-1}`` use the undropped state, so the memory itself is never dropped either.

``d(v) = m * v`` is inverted dropout: ``m = keep / (1 - rate)``, ``keep ~ Bernoulli(1 - rate)`` per
unit, so ``E[d(v)] = v`` and inference (no key) is the identity -- no test-time rescaling.

Where a mask goes is the cell's business: each supporting cell offers ``masked_recur(params, carry, px,
masks)`` (``masks`` a :class:`RecurrentMasks` or ``None``; its ``recur`` is that with ``None``) as a
typed capability of its :class:`~jaxrnn.cells.base.CellFns`; :func:`recurrent_dropout` only draws the
masks, from per-step data (the key, the batch row and the step index that :func:`jaxrnn.unroll`
supplies), never from state in the carry. So the cell equations are written once.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns

__all__ = ["RecurrentMasks", "apply_mask", "recurrent_dropout"]

_KINDS = ("semeniuta", "gal")
_PERS = ("step", "sequence")
_SUPPORTED = "lstm, gru, mgu and the elman family (elman, irnn, np_rnn)"


class RecurrentMasks(NamedTuple):
    """Multiplicative masks handed to a cell's masked recurrence, each ``(*batch, H)`` or ``None``.

    * ``candidate``: multiplies the vector written into the memory (the LSTM's ``g``, the GRU/MGU's
      ``n``; for an Elman cell its recurrent input ``h_{t-1}``) -- Semeniuta et al.
    * ``hidden``: multiplies ``h_{t-1}`` where it enters the recurrent matrix product (every gate) --
      Gal & Ghahramani.

    ``None`` (either field, or ``masks=None``) means no mask, at no cost.
    """

    candidate: Any = None
    hidden: Any = None


def apply_mask(x, masks: RecurrentMasks | None, field: str):
    """``x * getattr(masks, field)``, or ``x`` itself when there is no such mask (for cell authors)."""
    mask = None if masks is None else getattr(masks, field)
    return x if mask is None else x * mask


def _has_dropout(cell: Cell) -> bool:
    """Whether ``cell`` or a cell it wraps is a recurrent_dropout cell."""
    return cell.kind == "recurrent_dropout" or any(_has_dropout(c) for c in cell.wrapped)


def _draw_masks(key, rate: float, per: str, t, batch_shape, hidden_size: int, dtype):
    """The ``(*batch, H)`` masks of one step. See :func:`recurrent_dropout`."""
    n = math.prod(batch_shape)
    if batch_shape:
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(n, dtype=jnp.uint32))
    else:
        keys = key[None]
    if per == "step":
        t = jnp.broadcast_to(jnp.asarray(t), batch_shape)
        keys = jax.vmap(jax.random.fold_in)(keys, jnp.reshape(t, (n,)).astype(jnp.uint32))
    p_keep = jnp.asarray(1.0 - rate, jnp.float32)
    keep = jax.vmap(lambda k: jax.random.bernoulli(k, p_keep, (hidden_size,)))(keys)
    mask = jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))
    return jnp.reshape(mask, (*batch_shape, hidden_size))


def recurrent_dropout(
    cell: Cell,
    rate: float,
    key=None,
    *,
    kind: str = "semeniuta",
    per: str | None = None,
    deterministic: bool = False,
) -> Cell:
    """Cell -> Cell: recurrent dropout (Semeniuta et al. 2016, or Gal & Ghahramani 2016).

    ``kind="semeniuta"`` drops the candidate written into the memory (``c_t = f * c_{t-1} + i * d(g)``
    for the LSTM, ``h_t = (1 - z) * d(n) + z * h_{t-1}`` for the GRU, ``h_t = (1 - f) h_{t-1} + f d(n)``
    for the MGU, ``h_t = f(x_t W_xh + d(h_{t-1}) W_hh + b)`` for the Elman family); ``kind="gal"`` drops
    ``h_{t-1}`` where it enters the recurrent matrix product, ``d(h_{t-1}) @ W_hh``, one mask shared by
    all gates (Keras' per-gate masks are not offered); neither ever touches the LSTM's ``c`` or the
    ``z * h_{t-1}`` path of a GRU/MGU. ``d(v) = m * v``, inverted dropout: each unit is kept with
    probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, so ``E[d(v)] = v``.

    The key is data of the new cell (a pytree leaf, like :func:`jaxrnn.truncate`'s schedule): build the
    dropped-out cell inside the jitted loss, ``recurrent_dropout(cell, 0.25, key)``, with a fresh key per
    update, or pass it into ``jax.jit`` as an argument. The carry is the wrapped cell's, unchanged.
    ``key=None``, ``deterministic=True`` or ``rate=0`` is inference: the result *is* ``cell``.

    **The masks.** Row ``b`` of the batch is its flattened (row-major) index in ``batch_shape``;
    ``t`` is the step index that :func:`~jaxrnn.unroll` supplies (``cell.step(..., t=t)`` by hand).
    With ``k_b = fold_in(key, b)`` (``k_b = key`` when there is no batch dim)::

        per="sequence":  keep = bernoulli(k_b,               p=float32(1 - rate), shape=(H,))
        per="step":      keep = bernoulli(fold_in(k_b, t_b), p=float32(1 - rate), shape=(H,))
        m_b = where(keep, 1 / (1 - rate), 0)                  # in the carry's dtype

    So each row's masks depend only on ``(key, b, t)``: not on the batch size or the other rows, and
    row ``b`` gives what the unbatched sequence gives with ``key = fold_in(key, b)``. Per-sequence masks
    are the same at every step (Gal's variational dropout; Semeniuta et al. try both); per-step masks
    are fresh each step (the default for ``"semeniuta"``, as TensorFlow's ``LayerNormBasicLSTMCell``).
    ``per=None`` picks ``"step"`` for ``"semeniuta"`` and ``"sequence"`` for ``"gal"``.

    **Resets and lengths** (:func:`~jaxrnn.unroll`). ``t`` counts the steps of each sequence since its
    start or its last reset (plus ``unroll``'s ``t0``): a row keeps its per-sequence mask across resets
    and its per-step masks start again from those of ``t = 0`` (masks depend on ``(key, b, t)`` only;
    use another key for fresh masks). Past its length a sequence stands still. With ``reverse=True``
    ``t`` counts in processing order. For the next chunk of a stream (chunked TBPTT) pass
    ``t0 = steps so far`` to :func:`~jaxrnn.unroll`, so that it draws new per-step masks.

    In plain Python, for a single sequence of the LSTM with ``kind="semeniuta"``::

        s = cell.initial_carry(params)
        for t, x in enumerate(xs):
            m = mask(key, t)                                     # the rule above
            a_i, a_f, a_g, a_o = split(x @ W_xh + s.h @ W_hh + b)           # (kind="gal": (m * h))
            c = sigmoid(a_f) * s.c + sigmoid(a_i) * (m * tanh(a_g))          # (kind="gal": no m here)
            h = sigmoid(a_o) * tanh(c)
            s = LSTMCarry(h, c)

    Args:
      cell: a plain :func:`~jaxrnn.lstm`, :func:`~jaxrnn.gru` (both reset placements),
        :func:`~jaxrnn.mgu`, :func:`~jaxrnn.elman`, :func:`~jaxrnn.irnn` or :func:`~jaxrnn.np_rnn` cell,
        also under :func:`~jaxrnn.learned_initial_state` and :func:`~jaxrnn.truncate` (in either order).
      rate: probability of dropping a unit, a concrete number in ``[0, 1)``.
      key: a ``jax.random`` key (typed ``jax.random.key`` or raw ``PRNGKey``), may be traced; ``None``
        for inference.
      kind: ``"semeniuta"`` (candidate) or ``"gal"`` (recurrent input).
      per: ``"step"``, ``"sequence"`` or ``None`` (the kind's own, see above).
      deterministic: ``True`` forces inference whatever ``key`` is (Flax's convention).

    Returns:
      ``cell`` itself at inference; else a :class:`~jaxrnn.Cell` ``recurrent_dropout(cell=..., key=...,
      rate=...)`` with the wrapped cell's ``init``, ``initial_carry``, ``project``, ``output`` and
      carry, whose ``recur`` reads the step index (``uses_step_index`` for ``per="step"``). The
      diagnostics describe the masked dynamics it runs (one draw of the masks per ``(key, b, t)``).

    Raises:
      TypeError / ValueError before tracing: not a Cell, a cell without a masked recurrence (ctrnn,
      accumulator, mrnn, lstm1997, a deep_rnn), an already dropped-out cell, ``rate`` outside ``[0, 1)``
      or not a number, a ``key`` that is not a key, an unknown ``kind`` or ``per``.

    References:
      Semeniuta, Severyn, Barth (2016), "Recurrent Dropout without Memory Loss", COLING, section 3
      (arXiv:1603.05118). Gal & Ghahramani (2016), "A Theoretically Grounded Application of Dropout in
      Recurrent Neural Networks", NeurIPS, section 4 (arXiv:1512.05287).
    """
    fn = "recurrent_dropout"
    cell = check.cell(cell, fn)
    rate = check.rate(rate, f"{fn}: rate")
    key = check.prng_key(key, fn)
    if kind not in _KINDS:
        raise ValueError(f"{fn}: kind must be one of {_KINDS}; got {kind!r}")
    if per is None:
        per = "step" if kind == "semeniuta" else "sequence"
    if per not in _PERS:
        raise ValueError(f"{fn}: per must be one of {_PERS} or None (the kind's default); got {per!r}")
    deterministic = check.bool_arg(deterministic, f"{fn}: deterministic")
    if _has_dropout(cell):
        raise ValueError(
            f"{fn}: cell {cell.name!r} already has recurrent dropout; wrap the plain cell once "
            f"(recurrent_dropout(cell, rate, key, kind=..., per=...))"
        )
    if cell.fns.masked_recur is None:
        raise ValueError(
            f"{fn}: cell {cell.name!r} does not support recurrent dropout; supported: {_SUPPORTED} (also "
            f"under learned_initial_state and truncate; for a deep_rnn, wrap each cell). Use dropout between "
            f"layers (jaxrnn.stack(..., dropout=rate)) instead"
        )
    if key is None or deterministic or rate == 0.0:
        return cell  # inference: the cell itself, for every consumer
    return Cell(
        recurrent_dropout,
        _build_recurrent_dropout,
        dict(rate=rate, kind=kind, per=per),
        dict(cell=cell, key=key),
    )


def _build_recurrent_dropout(rate, kind, per, cell: Cell, key) -> CellFns:
    inner = cell.fns
    masked_recur = inner.masked_recur
    uses_t = per == "step" or inner.uses_step_index

    def recur(params, carry, px, t=None):
        out = jax.eval_shape(cell.output, carry)
        m = _draw_masks(key, rate, per, t, tuple(out.shape[:-1]), out.shape[-1], out.dtype)
        masks = RecurrentMasks(candidate=m) if kind == "semeniuta" else RecurrentMasks(hidden=m)
        return masked_recur(params, carry, px, masks)

    return inner._replace(recur=recur, uses_step_index=uses_t, kernel=None, form=None, masked_recur=None)
