"""Recurrent dropout as a Cell -> Cell transform: Semeniuta et al.'s and Gal & Ghahramani's.

Dropout inside the recurrence must not erase the memory. Two placements that respect this:

* **Semeniuta** (Semeniuta, Severyn, Barth 2016, "Recurrent Dropout without Memory Loss", seed 003):
  drop only the *candidate* that is written into the memory, never the memory itself::

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

Where a mask goes is the cell's business: each supporting factory builds its ``recur`` from one
private ``recur_masked(params, carry, px, masks)`` (``masks`` a :class:`RecurrentMasks` or ``None``)
via :func:`maskable`, which records it in the cell's ``hparams``; :func:`recurrent_dropout` only draws
the masks. So the cell equations are written once.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Cell, HParams

__all__ = ["DropoutState", "RecurrentMasks", "apply_mask", "maskable", "recurrent_dropout"]

_MASKED_RECUR = "_masked_recur"  # hparams key: (recur, recur_masked) of a cell that supports masks
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


class DropoutState(NamedTuple):
    """The carry of a :func:`recurrent_dropout` cell: the step counter ``t (*batch)`` (int32, steps
    since the start or the last reset) and the wrapped cell's carry ``inner``. Training and inference
    cells (with and without a key) have the same carry, so a carry can move between them."""

    t: jax.Array
    inner: Any


def apply_mask(x, masks: RecurrentMasks | None, field: str):
    """``x * getattr(masks, field)``, or ``x`` itself when there is no such mask (for cell authors)."""
    mask = None if masks is None else getattr(masks, field)
    return x if mask is None else x * mask


def maskable(recur_masked):
    """For cell factories: ``(recur, hparams)`` from a masked recurrence.

    ``recur(params, carry, px) = recur_masked(params, carry, px, None)``, and ``hparams`` (to pass to
    ``make_cell(..., **hparams)``) records both functions so that :func:`recurrent_dropout` can find
    ``recur_masked`` and check that a cell's ``recur`` is still the one it generalises.
    """

    def recur(params, carry, px):
        return recur_masked(params, carry, px, None)

    return recur, {_MASKED_RECUR: (recur, recur_masked)}


def _check_rate(rate, fn: str) -> float:
    number = isinstance(rate, numbers.Real) and not isinstance(rate, (bool, np.bool_))
    array = (  # a concrete 0-d float array (numpy or jax), not a tracer
        getattr(rate, "shape", None) == ()
        and not isinstance(rate, jax.core.Tracer)
        and jnp.issubdtype(getattr(rate, "dtype", None) or np.bool_, jnp.floating)
    )
    if not (number or array):
        raise TypeError(
            f"{fn}: rate must be a concrete number in [0, 1) (it sets the mask scale 1/(1 - rate) "
            f"at trace time); got {rate!r}"
        )
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{fn}: rate must be in [0, 1) (the probability of dropping a unit); got {rate}")
    return rate


def _check_key(key, fn: str):
    if key is None:
        return None
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                f"{fn}: key must be a single jax.random key (shape ()); got a key array of shape {shape}"
            )
        return key
    if dtype is not None and dtype == jnp.uint32 and len(shape) == 1:
        try:
            return jax.random.wrap_key_data(key)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{fn}: key must be a jax.random key (jax.random.key(0) or PRNGKey(0)); got uint32 data "
                f"of shape {shape} that is not a key of the default PRNG ({e})"
            ) from None
    raise TypeError(
        f"{fn}: key must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)), or None "
        f"for inference; got {type(key).__name__}"
        + (f" of dtype {dtype} and shape {shape}" if dtype is not None else f" {key!r}")
    )


def _masked_recur_of(cell: Cell, fn: str):
    hp = cell.hparams
    entry = hp.get(_MASKED_RECUR) if hasattr(hp, "get") else None
    family = hp.get("family") if hasattr(hp, "get") else None
    if entry is None:
        if family == "recurrent_dropout":
            raise ValueError(
                f"{fn}: cell {cell.name!r} already has recurrent dropout; wrap the plain cell once "
                f"(recurrent_dropout(cell, rate, key, kind=..., per=...))"
            )
        raise ValueError(
            f"{fn}: cell {cell.name!r} (family {family!r}) does not support recurrent dropout; "
            f"supported: {_SUPPORTED}. Use dropout between layers (jaxrnn.stack(..., dropout=rate)) instead"
        )
    recur, recur_masked = entry
    if cell.recur is not recur:
        raise ValueError(
            f"{fn}: cell {cell.name!r} is a transformed {family} cell (its recur is not the {family} "
            f"recurrence any more); apply recurrent_dropout to the plain cell first and transform the "
            f"result, e.g. truncate(recurrent_dropout(cell, rate, key), cuts)"
        )
    return recur_masked


def _draw_masks(key, rate: float, per: str, t, hidden_size: int, dtype):
    """The ``(*batch, H)`` masks of one step; ``batch_shape = t.shape``. See :func:`recurrent_dropout`."""
    batch_shape = tuple(t.shape)
    n = math.prod(batch_shape)
    if batch_shape:
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(n, dtype=jnp.uint32))
    else:
        keys = key[None]
    if per == "step":
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

    The key is data closed over by the new cell (like :func:`jaxrnn.truncation.truncate`'s schedule):
    build the dropped-out cell inside the jitted loss, ``recurrent_dropout(cell, 0.25, key)``, with a
    fresh key per update. ``key=None`` or ``deterministic=True`` is inference: the same values as
    ``cell`` with the same carry structure (a carry moves freely between the training and the inference
    cell). ``rate=0`` gives exactly ``cell``'s values too.

    **The masks.** Row ``b`` of the batch is its flattened (row-major) index in ``batch_shape``;
    ``t`` is the carry's step counter. With ``k_b = fold_in(key, b)`` (``k_b = key`` when there is no
    batch dim)::

        per="sequence":  keep = bernoulli(k_b,               p=float32(1 - rate), shape=(H,))
        per="step":      keep = bernoulli(fold_in(k_b, t_b), p=float32(1 - rate), shape=(H,))
        m_b = where(keep, 1 / (1 - rate), 0)                  # in the carry's dtype

    So each row's masks depend only on ``(key, b, t)``: not on the batch size or the other rows, and
    row ``b`` gives what the unbatched sequence gives with ``key = fold_in(key, b)``. Per-sequence masks
    are the same at every step (Gal's variational dropout; Semeniuta et al. try both); per-step masks
    are fresh each step (the default for ``"semeniuta"``, as TensorFlow's ``LayerNormBasicLSTMCell``).
    ``per=None`` picks ``"step"`` for ``"semeniuta"`` and ``"sequence"`` for ``"gal"``.

    **Resets and lengths** (:func:`~jaxrnn.unroll`). The carry is :class:`DropoutState` ``(t, inner)``;
    a reset restores the cell's initial carry, ``t = 0``: a row keeps its per-sequence mask across
    resets and its per-step masks start again from those of ``t = 0`` (masks depend on
    ``(key, b, t)`` only; use another key for fresh masks). Past its length a sequence stands still,
    ``t`` included. With ``reverse=True`` ``t`` counts in processing order. A carry passed on between
    calls (chunked TBPTT) keeps counting, so with one key the next chunk draws new per-step masks.

    In plain Python, for a single sequence of the LSTM with ``kind="semeniuta"``::

        s = DropoutState(0, cell.initial_carry(params))
        for x in xs:
            m = mask(key, s.t)                                   # the rule above; ones at inference
            a_i, a_f, a_g, a_o = split(x @ W_xh + s.inner.h @ W_hh + b)      # (kind="gal": (m * h))
            c = sigmoid(a_f) * s.inner.c + sigmoid(a_i) * (m * tanh(a_g))    # (kind="gal": no m here)
            h = sigmoid(a_o) * tanh(c)
            s = DropoutState(s.t + 1, LSTMState(h, c))

    Args:
      cell: a plain :func:`~jaxrnn.lstm`, :func:`~jaxrnn.gru` (both reset placements),
        :func:`~jaxrnn.mgu`, :func:`~jaxrnn.elman`, :func:`~jaxrnn.irnn` or :func:`~jaxrnn.np_rnn` cell,
        also under :func:`~jaxrnn.learned_initial_state`. Apply other transforms (``truncate``) to the
        result, not before.
      rate: probability of dropping a unit, a concrete number in ``[0, 1)``.
      key: a ``jax.random`` key (typed ``jax.random.key`` or raw ``PRNGKey``), may be traced; ``None``
        for inference.
      kind: ``"semeniuta"`` (candidate) or ``"gal"`` (recurrent input).
      per: ``"step"``, ``"sequence"`` or ``None`` (the kind's own, see above).
      deterministic: ``True`` forces inference whatever ``key`` is (Flax's convention).

    Returns:
      A :class:`~jaxrnn.Cell` named ``recurrent_dropout(<name>)`` with the wrapped cell's ``init``,
      ``project``, ``input_size`` and params; carry :class:`DropoutState` ``(t (*batch) int32, inner)``;
      ``output(state) = cell.output(state.inner)``. Its ``hparams`` are ``{"family":
      "recurrent_dropout", "cell": <the wrapped cell's hparams>, "rate", "kind", "per"}``. Its carry has
      an integer leaf, so apply the Jacobian diagnostics to the wrapped cell.

    Raises:
      TypeError / ValueError before tracing: not a Cell, a cell without a masked recurrence (ctrnn,
      accumulator, mrnn, lstm1997), an already wrapped or transformed cell, ``rate`` outside ``[0, 1)``
      or not a number, a ``key`` that is not a key, an unknown ``kind`` or ``per``.

    References:
      Semeniuta, Severyn, Barth (2016), "Recurrent Dropout without Memory Loss", COLING, section 3
      (arXiv:1603.05118). Gal & Ghahramani (2016), "A Theoretically Grounded Application of Dropout in
      Recurrent Neural Networks", NeurIPS, section 4 (arXiv:1512.05287).
    """
    fn = "recurrent_dropout"
    if not isinstance(cell, Cell):
        raise TypeError(f"{fn}: cell must be a jaxrnn Cell (e.g. jr.lstm(128)); got {type(cell).__name__}")
    recur_masked = _masked_recur_of(cell, fn)
    rate = _check_rate(rate, fn)
    key = _check_key(key, fn)
    if kind not in _KINDS:
        raise ValueError(f"{fn}: kind must be one of {_KINDS}; got {kind!r}")
    if per is None:
        per = "step" if kind == "semeniuta" else "sequence"
    if per not in _PERS:
        raise ValueError(f"{fn}: per must be one of {_PERS} or None (the kind's default); got {per!r}")
    if not isinstance(deterministic, bool):
        raise TypeError(f"{fn}: deterministic must be a bool; got {deterministic!r}")
    active = key is not None and not deterministic and rate > 0.0

    def initial_carry(params, batch_shape=()):
        batch_shape = tuple(batch_shape)
        return DropoutState(jnp.zeros(batch_shape, jnp.int32), cell.initial_carry(params, batch_shape))

    def recur(params, state, px):
        masks = None
        if active:
            out = jax.eval_shape(cell.output, state.inner)
            m = _draw_masks(key, rate, per, state.t, out.shape[-1], out.dtype)
            masks = RecurrentMasks(candidate=m) if kind == "semeniuta" else RecurrentMasks(hidden=m)
        return DropoutState(state.t + 1, recur_masked(params, state.inner, px, masks))

    def step(params, state, x):
        return recur(params, state, cell.project(params, x))

    inner_hparams = HParams({k: v for k, v in cell.hparams.items() if k != _MASKED_RECUR})
    return cell._replace(
        initial_carry=initial_carry,
        step=step,
        recur=recur,
        output=lambda state: cell.output(state.inner),
        name=f"{fn}({cell.name})",
        hparams=HParams({"family": fn, "cell": inner_hparams, "rate": rate, "kind": kind, "per": per}),
    )
