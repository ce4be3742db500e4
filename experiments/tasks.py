"""Deterministic task generators for the experiment scripts: data and success criteria, no model.

Every task is a :class:`Task`: ``task.sample(key, batch_size)`` returns a time-major :class:`Batch`
``(xs (T, B, I) float32, targets, lengths (B,) int32)`` drawn only from the ``jax.random`` key (same
key, same batch; static shapes, so ``jax.jit(task.sample, static_argnums=1)`` works), ``task.loss``
is the training loss (on optax) and ``task.error`` the fraction of wrong sequences by the paper's own
criterion. The model's readout stays in the script; ``task.output`` says what the predictions are:

* ``"last_softmax"`` -- ``preds (B, O)`` logits read from the state at each sequence's **last valid
  step** (``jr.unroll(..., lengths=batch.lengths)`` returns that state as ``final``); ``targets (B,)``
  int32 class labels; loss = batch-mean softmax cross-entropy; error = argmax wrong.
* ``"last_linear"`` -- ``preds (B, O)`` linear outputs of the last valid step; ``targets (B, O)``
  float32; loss = batch mean of the squared error summed over outputs; error = the task's threshold.
* ``"all_softmax"`` -- ``preds (T, B, O)`` logits at every step; ``targets (T, B)`` int32; loss = mean
  cross-entropy over the valid ``(t, b)`` steps (``t < lengths[b]``); steps past a length are padding
  (zero inputs, target 0) and never count.

**Lengths and padding (Pascanu et al. 2013).** The authors' ``RNN.py`` draws ONE length per minibatch,
``length = min_length + randint(max_length - min_length)`` (so in ``[min_length, max_length)``; fixed
when ``min_length == max_length``), and the add/mul generators jitter it again inside the batch. To keep
one compiled shape under ``jax.jit`` every batch is padded to ``task.max_steps``, the largest length the
generator can draw, with zero input rows, and ``lengths`` (all equal to the drawn length ``l``) marks
the valid steps: feed ``lengths=batch.lengths`` to ``jr.unroll`` so the final carry is the state at step
``l - 1`` exactly as in the unpadded sequence. Positions defined relative to ``l`` use the sampled ``l``
and the code's integer arithmetic ``int(0.1 * l)`` (computed here as ``l // 10``, ``(4 * l) // 10``,
..., which equal ``int(c * l)`` for every ``l`` in range; the tests check this).

Tasks (``TASKS``, ``make_task(name, **kwargs)``):

===========================  ==============================================================  =========
name                         source                                                          output
===========================  ==============================================================  =========
``temporal_order``           Pascanu 2013 ``tempOrder.py``                                   last_softmax
``temporal_order_3bit``      Pascanu 2013 ``tempOrder3bit.py``                               last_softmax
``addition``                 Pascanu 2013 ``addition.py`` (target = mean of the two values)  last_linear
``multiplication``           Pascanu 2013 ``multiplication.py``                              last_linear
``random_permutation``       Pascanu 2013 ``permutation.py``                                 last_softmax
``memorization``             Pascanu 2013 ``memorization.py`` (noiseless memorisation)       all_softmax
``adding_hochreiter``        Hochreiter & Schmidhuber 1997, Exp. 4                           last_linear
``adding_arjovsky``          Arjovsky, Shah & Bengio 2016, ``adding_problem.py``             last_linear
``copying``                  Arjovsky, Shah & Bengio 2016, ``memory_problem.py``             all_softmax
``digits``                   sequential 8x8 digits (scikit-learn), pixel by pixel            last_softmax
``permuted_digits``          the same with a fixed pixel permutation (Le et al. 2015 style)  last_softmax
``char_lm``                  character language model (Karpathy's char-rnn)                  all_softmax
===========================  ==============================================================  =========

The three adding problems are NOT interchangeable (compare the three sources below): values in
U[0, 1) vs U[-1, 1], the marker channel first or second, marker positions, the target (mean, sum, or
``0.5 + sum / 4``), and the error criterion all differ. Each keeps its source's layout.

References: R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural
networks", ICML 2013, section 4.1, and code github.com/pascanur/trainingRNNs (``RNN.py`` and one file
per task); S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8), 1997,
section 5.4; M. Arjovsky, A. Shah, Y. Bengio, "Unitary Evolution Recurrent Neural Networks", ICML 2016,
section 4, and code github.com/amarshah/complex_RNN; Q. Le, N. Jaitly, G. Hinton, "A Simple Way to
Initialize Recurrent Networks of Rectified Linear Units", arXiv:1504.00941, section 4.2; A. Karpathy,
char-rnn (github.com/karpathy/char-rnn).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import operator
import pathlib
import sysconfig
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "Batch",
    "CharCorpus",
    "DEFAULT_CORPUS_MODULES",
    "DigitsData",
    "TASKS",
    "UNKNOWN",
    "Task",
    "adding_arjovsky",
    "adding_hochreiter",
    "addition",
    "bits_per_char",
    "char_lm",
    "char_windows",
    "copying",
    "copying_baseline",
    "decode",
    "default_corpus",
    "stdlib_corpus",
    "describe_error",
    "digits",
    "encode",
    "load_digits_split",
    "make_corpus",
    "make_task",
    "memorization",
    "multiplication",
    "permuted_digits",
    "random_permutation",
    "read_text",
    "sample",
    "sample_logits",
    "temporal_order",
    "temporal_order_3bit",
]

_F32 = jnp.float32
_I32 = jnp.int32
OUTPUTS = ("last_softmax", "last_linear", "all_softmax")


class Batch(NamedTuple):
    """One time-major minibatch.

    Attributes:
      xs: ``(T, B, input_size)`` float32 inputs; rows past ``lengths[b]`` are zero.
      targets: ``(B,)`` int32 labels (``last_softmax``), ``(B, output_size)`` float32 (``last_linear``)
        or ``(T, B)`` int32 labels (``all_softmax``; 0 on padding).
      lengths: ``(B,)`` int32 number of valid steps of each sequence (``T`` when nothing is padded).
    """

    xs: jax.Array
    targets: jax.Array
    lengths: jax.Array


class Task(NamedTuple):
    """A task: how to draw batches and how to score predictions (no model inside).

    Attributes:
      name: registry name.
      input_size: ``I``, the last axis of ``xs``.
      output_size: ``O``, the number of classes or linear outputs the readout must produce.
      output: ``"last_softmax"``, ``"last_linear"`` or ``"all_softmax"`` (see the module docstring for
        the shape of ``preds`` each implies).
      max_steps: ``T``, the static time dimension of every batch.
      sample: ``(key, batch_size) -> Batch``, training data; deterministic in ``key``.
      sample_test: ``(key, batch_size) -> Batch``, held-out data (the test split of a data set; for the
        synthetic tasks the same generator as ``sample`` -- draw it with keys not used for training).
      loss: ``(preds, batch) -> scalar`` training loss.
      error: ``(preds, batch) -> scalar`` fraction of wrong sequences by the source's criterion (for
        ``char_lm`` the fraction of wrongly predicted characters); :func:`describe_error` says it in
        words.
      baseline: the loss of the memoryless strategy where the literature states one, else ``None``.
      data: the underlying data set (:class:`DigitsData`, :class:`CharCorpus`) or ``None``.
    """

    name: str
    input_size: int
    output_size: int
    output: str
    max_steps: int
    sample: Callable[[jax.Array, int], Batch]
    sample_test: Callable[[jax.Array, int], Batch]
    loss: Callable[[jax.Array, Batch], jax.Array]
    error: Callable[[jax.Array, Batch], jax.Array]
    baseline: float | None = None
    data: Any = None


# --------------------------------------------------------------------------------------------------
# argument checks


def _int(fn: str, name: str, value, minimum: int = 1) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int; got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}; got {n}")
    return n


def _lengths(fn: str, min_length, max_length, minimum: int) -> tuple[int, int]:
    lo = _int(fn, "min_length", min_length, minimum)
    hi = _int(fn, "max_length", max_length, minimum)
    if lo > hi:
        raise ValueError(f"{fn}: min_length must be <= max_length; got min_length={lo}, max_length={hi}")
    return lo, hi


def _batch_size(fn: str, batch_size) -> int:
    return _int(f"{fn}.sample", "batch_size", batch_size)


def _fraction(fn: str, name: str, value) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{fn}: {name} must be in (0, 1); got {value!r}")
    return v


# --------------------------------------------------------------------------------------------------
# losses and error criteria


def _valid(batch: Batch) -> jax.Array:
    """``(T, B)`` bool, True on the valid steps ``t < lengths[b]``."""
    return jnp.arange(batch.xs.shape[0])[:, None] < batch.lengths[None, :]


def _last_softmax_loss(preds, batch):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(preds, batch.targets))


def _described(text: str):
    """Attach ``text`` to an error function as its ``description`` (:func:`describe_error` reads it)."""

    def attach(fn):
        fn.description = text
        return fn

    return attach


def describe_error(task: Task) -> str:
    """What ``task.error`` measures, in words (e.g. ``"fraction of sequences whose squared error is
    above 0.04"``): the definition of the ``error`` / ``test_error`` the scripts log, table and plot."""
    return getattr(task.error, "description", "fraction of wrong sequences (the task's own criterion)")


@_described("fraction of sequences whose predicted class (argmax) is wrong")
def _last_softmax_error(preds, batch):
    return jnp.mean(jnp.argmax(preds, axis=-1) != batch.targets)


def _last_linear_loss(preds, batch):
    # Pascanu's ``((t - y)**2).mean(axis=0).sum()``: batch mean of the squared error summed over outputs.
    return jnp.mean(jnp.sum(optax.squared_error(preds, batch.targets), axis=-1))


def _squared_error_above(threshold: float):
    @_described(f"fraction of sequences whose squared error is above {threshold:g}")
    def error(preds, batch):
        return jnp.mean(jnp.sum((preds - batch.targets) ** 2, axis=-1) > threshold)

    return error


def _abs_error_not_below(threshold: float):
    @_described(f"fraction of sequences with an output off by {threshold:g} or more")
    def error(preds, batch):
        return jnp.mean(jnp.any(jnp.abs(preds - batch.targets) >= threshold, axis=-1))

    return error


def _all_softmax_loss(preds, batch):
    valid = _valid(batch)
    targets = jnp.where(valid, batch.targets, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(preds, targets)
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


@_described("fraction of sequences with at least one wrongly predicted step (argmax)")
def _all_softmax_any_wrong(preds, batch):
    wrong = (jnp.argmax(preds, axis=-1) != batch.targets) & _valid(batch)
    return jnp.mean(jnp.any(wrong, axis=0))


@_described("fraction of wrongly predicted steps (argmax)")
def _all_softmax_step_error(preds, batch):
    valid = _valid(batch)
    wrong = (jnp.argmax(preds, axis=-1) != batch.targets) & valid
    return jnp.sum(wrong) / jnp.maximum(jnp.sum(valid), 1)


_CLASSIFY = {"loss": _last_softmax_loss, "error": _last_softmax_error}


# --------------------------------------------------------------------------------------------------
# Pascanu et al. 2013


def _pascanu_length(key, min_length: int, max_length: int):
    """``RNN.py``: ``min_length + randint(max_length - min_length)`` if ``max_length > min_length``."""
    if max_length > min_length:
        return jax.random.randint(key, (), min_length, max_length, dtype=_I32)
    return jnp.asarray(min_length, _I32)


def _longest(min_length: int, max_length: int) -> int:
    return max_length - 1 if max_length > min_length else min_length


def _tenths(l, c: int):
    """``int(l * c / 10)`` exactly as ``int(l * .1)``, ``int(l * .4)``, ... in the authors' code."""
    return (c * l) // 10


def _temporal_order_task(name: str, offsets: tuple[int, ...], min_length, max_length) -> Task:
    lo, hi = _lengths(name, min_length, max_length, 10)  # randint(int(0.1 l)) needs l >= 10
    steps = _longest(lo, hi)
    n_bits = len(offsets)

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        k_len, k_pos, k_val, k_sym = jax.random.split(key, 4)
        l = _pascanu_length(k_len, lo, hi)
        offs = jnp.asarray(offsets, _I32)[:, None]
        pos = jax.random.randint(k_pos, (n_bits, b), 0, _tenths(l, 1), dtype=_I32) + _tenths(l, offs)
        vals = jax.random.randint(k_val, (n_bits, b), 0, 2, dtype=_I32)
        sym = jax.random.randint(k_sym, (steps, b), 2, 6, dtype=_I32)  # distractors c, d, e, f
        t = jnp.arange(steps, dtype=_I32)[:, None]
        for i in range(n_bits):
            sym = jnp.where(t == pos[i], vals[i], sym)
        xs = jax.nn.one_hot(sym, 6, dtype=_F32) * (t < l)[..., None]
        targets = sum(vals[i] * 2**i for i in range(n_bits)).astype(_I32)
        return Batch(xs, targets, jnp.full((b,), l, _I32))

    return Task(name, 6, 2**n_bits, "last_softmax", steps, sample, sample, **_CLASSIFY)


def temporal_order(min_length: int = 50, max_length: int = 200) -> Task:
    """Pascanu et al. 2013's temporal order problem (``tempOrder.py``), 6 inputs, 4 classes.

    One length ``l`` per batch (``[min_length, max_length)``, see the module docstring). Each step is a
    one-hot symbol: A (channel 0) or B (channel 1) at ``p0 = randint(int(0.1 l)) + int(0.1 l)`` and at
    ``p1 = randint(int(0.1 l)) + int(0.5 l)``, i.e. ``p0 in [0.1 l, 0.2 l)``, ``p1 in [0.5 l, 0.6 l)``;
    every other step a uniform distractor from channels 2..5. The class is ``v0 + 2 v1`` (AA, BA, AB,
    BB), read at the last valid step. No start or trigger symbols (unlike Hochreiter 1997, Exp. 6).

    Args:
      min_length, max_length: the length range; ``min_length >= 10``.

    Returns:
      A ``last_softmax`` :class:`Task`; the error is the fraction of wrong argmax classes (the paper
      counts a run solved below 1% of 10,000 fresh sequences; the code stops at 0 wrong).
    """
    return _temporal_order_task("temporal_order", (1, 5), min_length, max_length)


def temporal_order_3bit(min_length: int = 50, max_length: int = 200) -> Task:
    """Pascanu et al. 2013's 3-bit temporal order problem (``tempOrder3bit.py``), 6 inputs, 8 classes.

    As :func:`temporal_order` with three relevant symbols at ``p0 in [0.1 l, 0.2 l)``,
    ``p1 in [0.3 l, 0.4 l)``, ``p2 in [0.6 l, 0.7 l)`` (each ``randint(int(0.1 l)) + int(c l)``); the
    class is ``v0 + 2 v1 + 4 v2``.
    """
    return _temporal_order_task("temporal_order_3bit", (1, 3, 6), min_length, max_length)


def _arithmetic_task(name: str, combine, min_length, max_length) -> Task:
    lo, hi = _lengths(name, min_length, max_length, 10)
    top = _longest(lo, hi)
    steps = top + _tenths(top, 1) - 1  # l = length + randint(int(0.1 length))

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        k_len, k_jit, k0, k1, k_val = jax.random.split(key, 5)
        length = _pascanu_length(k_len, lo, hi)
        l = length + jax.random.randint(k_jit, (), 0, _tenths(length, 1), dtype=_I32)
        p0 = jax.random.randint(k0, (b,), 0, _tenths(l, 1), dtype=_I32)
        p1 = jax.random.randint(k1, (b,), 0, _tenths(l, 4), dtype=_I32) + _tenths(l, 1)
        values = jax.random.uniform(k_val, (steps, b), _F32)
        t = jnp.arange(steps, dtype=_I32)[:, None]
        markers = ((t == p0) | (t == p1)).astype(_F32)
        xs = jnp.stack([markers, values], axis=-1) * (t < l)[..., None]  # channel 0 marker, 1 value
        cols = jnp.arange(b)
        targets = combine(values[p0, cols], values[p1, cols])[:, None].astype(_F32)
        return Batch(xs, targets, jnp.full((b,), l, _I32))

    return Task(
        name, 2, 1, "last_linear", steps, sample, sample, _last_linear_loss, _squared_error_above(0.04)
    )


def addition(min_length: int = 50, max_length: int = 200) -> Task:
    """Pascanu et al. 2013's addition problem (``addition.py``), 2 inputs, 1 linear output.

    Per batch: ``length`` as in ``RNN.py``, then ``l = length + randint(int(0.1 length))``
    (``l in [length, 1.1 length)``). Channel 1 holds ``U[0, 1)`` values at every step, channel 0 the
    markers: 1 at ``p0 = randint(int(0.1 l))`` (``[0, 0.1 l)``) and at
    ``p1 = randint(int(0.4 l)) + int(0.1 l)`` (``[0.1 l, 0.5 l)``), else 0. The target is the **mean**
    ``(x[p0] + x[p1]) / 2``. Loss: batch-mean squared error; a sequence is wrong when its squared error
    is larger than 0.04 (paper section 4.1.2). ``max_steps = m + int(0.1 m) - 1`` with ``m`` the longest
    ``length``.
    """
    return _arithmetic_task("addition", lambda a, b: (a + b) / 2, min_length, max_length)


def multiplication(min_length: int = 50, max_length: int = 200) -> Task:
    """Pascanu et al. 2013's multiplication problem (``multiplication.py``): as :func:`addition` with
    the target ``x[p0] * x[p1]``."""
    return _arithmetic_task("multiplication", lambda a, b: a * b, min_length, max_length)


def random_permutation(min_length: int = 50, max_length: int = 200) -> Task:
    """Pascanu et al. 2013's random permutation problem (``permutation.py``), 100 inputs, 100 classes.

    ``randvals = randint(98, size=(l + 1, B)) + 2`` (symbols 2..99), ``randvals[0] = randvals[l] = v``
    with ``v in {0, 1}``; the input is one-hot ``randvals[:-1]`` (``l`` steps, the first shows ``v``),
    the target the class ``v``, predicted at the last valid step only.
    """
    name = "random_permutation"
    lo, hi = _lengths(name, min_length, max_length, 1)
    steps = _longest(lo, hi)

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        k_len, k_sym, k_val = jax.random.split(key, 3)
        l = _pascanu_length(k_len, lo, hi)
        sym = jax.random.randint(k_sym, (steps, b), 2, 100, dtype=_I32)
        val = jax.random.randint(k_val, (b,), 0, 2, dtype=_I32)
        sym = sym.at[0].set(val)
        t = jnp.arange(steps, dtype=_I32)[:, None]
        xs = jax.nn.one_hot(sym, 100, dtype=_F32) * (t < l)[..., None]
        return Batch(xs, val, jnp.full((b,), l, _I32))

    return Task(name, 100, 100, "last_softmax", steps, sample, sample, **_CLASSIFY)


def memorization(min_length: int = 50, max_length: int = 200, n_values: int = 5, n_pos: int = 10) -> Task:
    """Pascanu et al. 2013's noiseless memorisation problem (``memorization.py``).

    A sequence has ``l + 2 n_pos`` steps, ``n_values + 2`` input channels, ``n_values + 1`` classes:

    * steps ``0 .. n_pos - 1``: the pattern, one-hot symbols in ``0 .. n_values - 1``;
    * steps ``>= n_pos``: the blank channel ``n_values`` is on, except step ``l + n_pos`` where the
      trigger channel ``n_values + 1`` is on;
    * targets: the blank class ``n_values`` for steps ``< l + n_pos``, then the ``n_pos`` pattern symbols.

    The code draws a pattern index uniformly in ``[0, n_values ** n_pos)`` and writes its base-``n_values``
    digits; that is the same distribution as ``n_pos`` i.i.d. uniform symbols, which is what is drawn
    here. Loss: cross-entropy averaged over the valid (time, batch) steps; a sequence is wrong if **any**
    step is (``report='all'``). Defaults ``n_values=5, n_pos=10`` (the ">20 bits" variant, 10 log2 5 bits);
    ``n_values=2, n_pos=5`` is the 5-bit one. The paper trains one model per fixed length: pass
    ``min_length == max_length``.
    """
    name = "memorization"
    lo, hi = _lengths(name, min_length, max_length, 1)
    nv = _int(name, "n_values", n_values, 2)
    npos = _int(name, "n_pos", n_pos)
    steps = _longest(lo, hi) + 2 * npos

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        k_len, k_sym = jax.random.split(key)
        l = _pascanu_length(k_len, lo, hi)
        pattern = jax.random.randint(k_sym, (npos, b), 0, nv, dtype=_I32)
        t = jnp.arange(steps, dtype=_I32)[:, None]
        trigger = l + npos
        shown = jnp.take_along_axis(pattern, jnp.broadcast_to(jnp.clip(t, 0, npos - 1), (steps, b)), 0)
        recall = jnp.take_along_axis(
            pattern, jnp.broadcast_to(jnp.clip(t - trigger, 0, npos - 1), (steps, b)), 0
        )
        valid = t < l + 2 * npos
        inp = jnp.where(t < npos, shown, jnp.where(t == trigger, nv + 1, nv))
        xs = jax.nn.one_hot(inp, nv + 2, dtype=_F32) * valid[..., None]
        targets = jnp.where(valid, jnp.where(t < trigger, nv, recall), 0).astype(_I32)
        return Batch(xs, targets, jnp.full((b,), l + 2 * npos, _I32))

    return Task(
        name, nv + 2, nv + 1, "all_softmax", steps, sample, sample, _all_softmax_loss, _all_softmax_any_wrong
    )


# --------------------------------------------------------------------------------------------------
# the other adding problems and the copying memory problem


def adding_hochreiter(length: int = 100) -> Task:
    """Hochreiter & Schmidhuber 1997's adding problem (Exp. 4), 2 inputs, 1 linear output.

    Each sequence (its own length, uniform in ``[T, T + T // 10]``, ``T = length``) is a list of pairs
    (channel 0: value ``U[-1, 1]``; channel 1: marker). One pair among the first ten is marked 1.0
    (``X1``), a second one among the first ``T // 2 - 1`` still unmarked pairs (``X2``); the markers of
    the first and the final pair are -1 (unless marked), all others 0. If the first pair is marked its
    value is set to 0 (the paper: "we set X1 to zero"). Target ``0.5 + (X1 + X2) / 4``; a sequence is
    correct iff the absolute error is below 0.04.

    Args:
      length: ``T``, the minimal length; ``>= 20`` so that the first ten pairs lie in the first half.

    Returns:
      A ``last_linear`` :class:`Task` with per-sequence ``lengths``; ``max_steps = T + T // 10``.
    """
    name = "adding_hochreiter"
    n = _int(name, "length", length, 20)
    half = n // 2
    steps = n + n // 10

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        k_len, k_val, k1, k2 = jax.random.split(key, 4)
        lengths = n + jax.random.randint(k_len, (b,), 0, n // 10 + 1, dtype=_I32)
        values = jax.random.uniform(k_val, (steps, b), _F32, minval=-1.0, maxval=1.0)
        p1 = jax.random.randint(k1, (b,), 0, 10, dtype=_I32)
        j = jax.random.randint(k2, (b,), 0, half - 1, dtype=_I32)
        p2 = j + (j >= p1)  # the j-th pair of [0, T // 2) other than p1
        t = jnp.arange(steps, dtype=_I32)[:, None]
        marked = (t == p1) | (t == p2)
        ends = (t == 0) | (t == lengths - 1)
        markers = jnp.where(marked, 1.0, jnp.where(ends, -1.0, 0.0)).astype(_F32)
        values = jnp.where(marked & (t == 0), 0.0, values)
        valid = t < lengths
        xs = jnp.stack([values, markers], axis=-1) * valid[..., None]
        cols = jnp.arange(b)
        targets = (0.5 + (values[p1, cols] + values[p2, cols]) / 4.0)[:, None].astype(_F32)
        return Batch(xs, targets, lengths)

    return Task(
        name, 2, 1, "last_linear", steps, sample, sample, _last_linear_loss, _abs_error_not_below(0.04)
    )


def adding_arjovsky(length: int = 100) -> Task:
    """Arjovsky, Shah & Bengio 2016's adding problem (``adding_problem.py``), 2 inputs, 1 output.

    Fixed length ``T``; channel 0: values ``U[0, 1)``; channel 1: markers, exactly two ones, the first
    at ``randint(T // 2)``, the second at ``randint(T // 2) + T // 2``. Target: the **sum** of the two
    marked values. Baseline: predicting 1 gives the MSE ``Var(U1 + U2) = 1/6`` (the paper's 0.167).
    The source reports only the MSE; ``error`` here uses Pascanu's criterion (squared error > 0.04).
    """
    name = "adding_arjovsky"
    n = _int(name, "length", length, 2)
    half = n // 2

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        k_val, k_ind = jax.random.split(key)
        values = jax.random.uniform(k_val, (n, b), _F32)
        inds = jax.random.randint(k_ind, (2, b), 0, half, dtype=_I32) + jnp.array([[0], [half]], _I32)
        t = jnp.arange(n, dtype=_I32)[:, None]
        markers = ((t == inds[0]) | (t == inds[1])).astype(_F32)
        xs = jnp.stack([values, markers], axis=-1)
        targets = jnp.sum(values * markers, axis=0)[:, None]
        return Batch(xs, targets, jnp.full((b,), n, _I32))

    return Task(
        name, 2, 1, "last_linear", n, sample, sample, _last_linear_loss, _squared_error_above(0.04), 1.0 / 6.0
    )


def copying_baseline(length: int) -> float:
    """The memoryless cross-entropy of the copying problem, ``10 ln 8 / (T + 20)`` (Arjovsky et al. 2016).

    Predicting the blank for the first ``T + 10`` steps and a uniform guess over the 8 data symbols for
    the last 10 costs ``10 ln 8`` nats over ``T + 20`` steps.
    """
    n = _int("copying_baseline", "length", length)
    return 10.0 * math.log(8.0) / (n + 20)


def copying(length: int = 100) -> Task:
    """Arjovsky, Shah & Bengio 2016's copying memory problem (``memory_problem.py``).

    ``T + 20`` steps, one-hot over 10 input symbols, 9 output classes. Input: 10 data symbols uniform in
    ``1..8``, then ``T - 1`` blanks (0), the delimiter 9, and 10 blanks. Target: ``T + 10`` blanks,
    then the 10 data symbols in order. Loss: cross-entropy averaged over all steps; baseline
    :func:`copying_baseline`; a sequence is wrong if any step's argmax is.
    """
    name = "copying"
    n = _int(name, "length", length)
    steps = n + 20

    def sample(key, batch_size):
        b = _batch_size(name, batch_size)
        seq = jax.random.randint(key, (10, b), 1, 9, dtype=_I32)
        t = jnp.arange(steps, dtype=_I32)[:, None]
        shown = jnp.take_along_axis(seq, jnp.broadcast_to(jnp.clip(t, 0, 9), (steps, b)), 0)
        recall = jnp.take_along_axis(seq, jnp.broadcast_to(jnp.clip(t - n - 10, 0, 9), (steps, b)), 0)
        inp = jnp.where(t < 10, shown, jnp.where(t == n + 9, 9, 0))
        targets = jnp.where(t >= n + 10, recall, 0).astype(_I32)
        xs = jax.nn.one_hot(inp, 10, dtype=_F32)
        return Batch(xs, targets, jnp.full((b,), steps, _I32))

    return Task(
        name, 10, 9, "all_softmax", steps, sample, sample, _all_softmax_loss, _all_softmax_any_wrong,
        copying_baseline(n),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# sequential digits


class DigitsData(NamedTuple):
    """scikit-learn's 8x8 digits, split and scaled; pixels in the order they are fed.

    Attributes:
      x_train, x_test: ``(N, 64)`` float32 in ``[0, 1]`` (pixel / 16), columns in reading order.
      y_train, y_test: ``(N,)`` int32 labels 0..9.
      permutation: ``(64,)`` int pixel order applied to the columns (the identity when not permuted).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    permutation: np.ndarray


def load_digits_split(
    test_fraction: float = 0.2, split_seed: int = 0, permute_seed: int | None = None
) -> DigitsData:
    """The 1797 digits of ``sklearn.datasets.load_digits`` (no download), split and scaled.

    The split: ``numpy.random.RandomState(split_seed).permutation(1797)``, the last
    ``int(1797 * test_fraction)`` indices are the test set (359 by default). Pixels are divided by 16.
    With ``permute_seed`` the 64 pixel columns are reordered by
    ``RandomState(permute_seed).permutation(64)`` (the same order for every image, train and test).
    ``RandomState`` streams are frozen by NumPy, so the split and the order never change.
    """
    from sklearn.datasets import load_digits

    fn = "load_digits_split"
    frac = _fraction(fn, "test_fraction", test_fraction)
    seed = _int(fn, "split_seed", split_seed, 0)
    d = load_digits()
    x = (np.asarray(d.data, np.float64) / 16.0).astype(np.float32)
    y = np.asarray(d.target, np.int32)
    order = np.random.RandomState(seed).permutation(len(y))
    n_test = int(len(y) * frac)
    if permute_seed is None:
        perm = np.arange(64)
    else:
        perm = np.random.RandomState(_int(fn, "permute_seed", permute_seed, 0)).permutation(64)
    x = x[:, perm]
    tr, te = order[: len(y) - n_test], order[len(y) - n_test :]
    return DigitsData(x[tr], y[tr], x[te], y[te], perm)


def _digits_task(name: str, data: DigitsData) -> Task:
    def sampler(images, labels):
        images, labels = jnp.asarray(images), jnp.asarray(labels)

        def sample(key, batch_size):
            b = _batch_size(name, batch_size)
            idx = jax.random.randint(key, (b,), 0, labels.shape[0], dtype=_I32)
            return Batch(images[idx].T[..., None], labels[idx], jnp.full((b,), 64, _I32))

        return sample

    train, test = sampler(data.x_train, data.y_train), sampler(data.x_test, data.y_test)
    return Task(name, 1, 10, "last_softmax", 64, train, test, **_CLASSIFY, data=data)


def digits(test_fraction: float = 0.2, split_seed: int = 0) -> Task:
    """Sequential digits: each 8x8 scikit-learn digit read pixel by pixel (row-major) as 64 steps of 1
    input, classified (10 classes) at the last step -- the small offline analogue of pixel MNIST (Le et
    al. 2015, section 4.2). ``sample`` draws training images uniformly with replacement, ``sample_test``
    test images; the full split is ``task.data`` (:class:`DigitsData`, see :func:`load_digits_split`)."""
    return _digits_task("digits", load_digits_split(test_fraction, split_seed))


def permuted_digits(test_fraction: float = 0.2, split_seed: int = 0, permute_seed: int = 0) -> Task:
    """:func:`digits` with the pixels read in one fixed random order (``permute_seed``), as in permuted
    pixel MNIST (Le et al. 2015, section 4.2): the long-range dependencies are no longer local."""
    return _digits_task("permuted_digits", load_digits_split(test_fraction, split_seed, permute_seed))


# --------------------------------------------------------------------------------------------------
# character language model

DEFAULT_CORPUS_MODULES = (
    "argparse",
    "ast",
    "calendar",
    "configparser",
    "dataclasses",
    "difflib",
    "inspect",
    "pydoc",
    "tarfile",
    "textwrap",
)
UNKNOWN = "\ufffd"  # vocabulary entry 0: every character not seen in the training text


def default_corpus() -> str:
    """The default char-LM text: the source of :data:`DEFAULT_CORPUS_MODULES`, joined by newlines.

    Pure-Python standard-library modules present in every CPython 3.10+, read from the files
    ``importlib.util.find_spec(name).origin`` points at (no import, no download). Real English prose
    (docstrings) and code, about 0.7 MB; the exact text depends on the Python version.
    """
    parts = []
    for name in DEFAULT_CORPUS_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ValueError(
                f"default_corpus: the standard-library module {name!r} has no Python source here"
            )
        parts.append(pathlib.Path(spec.origin).read_text(encoding="utf-8"))
    return "\n".join(parts)


def stdlib_corpus() -> str:
    """A bigger default text (the word LM's): every top-level pure-Python module of the standard library,
    ``sysconfig.get_paths()["stdlib"]/*.py`` sorted by file name, joined by newlines.

    No import, no download; the exact text depends on the Python version: on CPython 3.11, 168 files,
    4.7 MB, about 1.1 million word tokens of which 18.7k distinct ones occur at least twice (enough
    for a 10k-word vocabulary). Sorted by name, so a chronological split holds out the last modules
    (``uuid`` ... ``zipimport`` on 3.11).
    """
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise ValueError(f"stdlib_corpus: no Python sources in the standard library directory {str(root)!r}")
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def read_text(path) -> str:
    """The UTF-8 text of the file at ``path``; a ``ValueError`` with a clear message when the file is
    missing, empty, or binary (contains NUL bytes or is not valid UTF-8)."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"read_text: {str(p)!r} is not a readable file")
    raw = p.read_bytes()
    if not raw:
        raise ValueError(f"read_text: {str(p)!r} is empty; a character language model needs some text")
    if b"\x00" in raw:
        raise ValueError(f"read_text: {str(p)!r} looks binary (it contains NUL bytes); give a text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"read_text: {str(p)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None


class CharCorpus(NamedTuple):
    """A text as character ids.

    Attributes:
      vocab: the characters; ``vocab[0]`` is :data:`UNKNOWN`, the id of every character absent from the
        training text, then the training text's characters in sorted order.
      train: ``(N_train,)`` int32 ids of the first ``1 - valid_fraction`` of the text.
      valid: ``(N_valid,)`` int32 ids of the held-out rest.
    """

    vocab: str
    train: np.ndarray
    valid: np.ndarray


def encode(text: str, vocab: str) -> np.ndarray:
    """``(len(text),)`` int32 ids of ``text`` in ``vocab``; unseen characters map to 0 (UNKNOWN)."""
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index.get(c, 0) for c in text), np.int32, len(text))


def decode(ids, vocab: str) -> str:
    """The text of an id sequence (id 0 decodes to :data:`UNKNOWN`)."""
    return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def make_corpus(text: str, valid_fraction: float = 0.1) -> CharCorpus:
    """Split ``text`` into the first ``1 - valid_fraction`` (training) and the last ``valid_fraction``
    (held out, ``int(len(text) * valid_fraction)`` characters); the vocabulary comes from the training
    part only."""
    frac = _fraction("make_corpus", "valid_fraction", valid_fraction)
    if not text:
        raise ValueError("make_corpus: text is empty")
    n_valid = int(len(text) * frac)
    train_text, valid_text = text[: len(text) - n_valid], text[len(text) - n_valid :]
    vocab = UNKNOWN + "".join(sorted(set(train_text) - {UNKNOWN}))
    return CharCorpus(vocab, encode(train_text, vocab), encode(valid_text, vocab))


def char_windows(ids, seq_length: int, vocab_size: int) -> Batch:
    """All non-overlapping windows of ``ids`` as one batch (for a full held-out evaluation).

    Window ``b`` covers ``ids[b * T : (b + 1) * T + 1]``: inputs ``one_hot(ids[bT + t])``, targets
    ``ids[bT + t + 1]``; ``B = (len(ids) - 1) // T`` (the tail that does not fill a window is dropped).
    """
    fn = "char_windows"
    t = _int(fn, "seq_length", seq_length)
    v = _int(fn, "vocab_size", vocab_size)
    ids = np.asarray(ids, np.int32)
    b = (len(ids) - 1) // t
    if b < 1:
        raise ValueError(f"{fn}: ids must hold at least seq_length + 1 = {t + 1} characters; got {len(ids)}")
    inp = ids[: b * t].reshape(b, t).T
    tgt = ids[1 : b * t + 1].reshape(b, t).T
    return Batch(jax.nn.one_hot(jnp.asarray(inp), v, dtype=_F32), jnp.asarray(tgt), jnp.full((b,), t, _I32))


def char_lm(path=None, seq_length: int = 50, valid_fraction: float = 0.1, text: str | None = None) -> Task:
    """Character-level language modelling (Karpathy's char-rnn): predict every next character.

    The text is the file at ``path`` (:func:`read_text`), or ``text`` itself, or by default
    :func:`default_corpus`. ``sample(key, B)`` draws ``B`` random windows of the training ids:
    ``xs[t, b] = one_hot(ids[s_b + t])``, ``targets[t, b] = ids[s_b + t + 1]`` with
    ``s_b ~ U{0 .. N - T - 1}``; ``sample_test`` the same from the held-out ids. Loss: mean
    cross-entropy in nats per character (:func:`bits_per_char` converts); error: fraction of wrongly
    predicted characters. ``task.data`` is the :class:`CharCorpus` (vocabulary, ids).

    Raises:
      ValueError: a missing, empty or binary file, or a text too short for one window in either split.
    """
    fn = "char_lm"
    t = _int(fn, "seq_length", seq_length)
    if path is not None and text is not None:
        raise ValueError(f"{fn}: give path or text, not both")
    if text is None:
        text = default_corpus() if path is None else read_text(path)
    corpus = make_corpus(text, valid_fraction)
    v = len(corpus.vocab)
    for split in ("train", "valid"):
        n = len(getattr(corpus, split))
        if n < t + 1:
            raise ValueError(
                f"{fn}: the {split} split has {n} characters, fewer than seq_length + 1 = {t + 1}; "
                "use a longer text, a shorter seq_length or another valid_fraction"
            )

    def sampler(ids):
        ids = jnp.asarray(ids)

        def sample(key, batch_size):
            b = _batch_size(fn, batch_size)
            starts = jax.random.randint(key, (b,), 0, ids.shape[0] - t, dtype=_I32)
            idx = starts[None, :] + jnp.arange(t, dtype=_I32)[:, None]
            return Batch(jax.nn.one_hot(ids[idx], v, dtype=_F32), ids[idx + 1], jnp.full((b,), t, _I32))

        return sample

    return Task(
        fn, v, v, "all_softmax", t, sampler(corpus.train), sampler(corpus.valid), _all_softmax_loss,
        _all_softmax_step_error, data=corpus,
    )  # fmt: skip


def bits_per_char(logits, targets, lengths=None) -> jax.Array:
    """Mean negative log2-likelihood per character, ``-(1/N) sum_t log2 softmax(logits_t)[y_t]``.

    Args:
      logits: ``(T, B, V)`` (or any ``(..., V)``) unnormalised log-probabilities.
      targets: ``(T, B)`` (``logits.shape[:-1]``) int ids.
      lengths: optional ``(B,)``; only steps ``t < lengths[b]`` count.

    Returns:
      A scalar: cross-entropy in nats divided by ``ln 2``. A uniform predictor scores ``log2 V``.
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"bits_per_char: targets must have shape {logits.shape[:-1]}; got {targets.shape}")
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if lengths is None:
        return jnp.mean(ce) / math.log(2.0)
    valid = jnp.arange(ce.shape[0])[:, None] < jnp.asarray(lengths)[None, :]
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(jnp.sum(valid), 1) / math.log(2.0)


def sample_logits(key, logits, temperature: float = 1.0) -> jax.Array:
    """Draw ids from ``softmax(logits / temperature)`` along the last axis.

    ``temperature < 1`` sharpens, ``> 1`` flattens; ``temperature == 0`` gives the argmax (greedy).

    Args:
      key: a ``jax.random`` key.
      logits: ``(..., V)``.
      temperature: a Python float ``>= 0`` (static).

    Returns:
      ``logits.shape[:-1]`` int32 ids.
    """
    temp = float(temperature)
    if not temp >= 0.0:
        raise ValueError(f"sample_logits: temperature must be >= 0; got {temperature!r}")
    logits = jnp.asarray(logits)
    if temp == 0.0:
        return jnp.argmax(logits, axis=-1).astype(_I32)
    return jax.random.categorical(key, logits.astype(jnp.float32) / temp, axis=-1).astype(_I32)


def sample(step_fn, params, carry, token, key, n: int, temperature: float = 1.0):
    """Generate ``n`` characters from a model by feeding back its own samples (one ``lax.scan``).

    ``step_fn(params, carry, token) -> (carry, logits)`` advances the model one character: ``token``
    ``(*batch,)`` int ids, ``logits (*batch, V)``. ``carry`` is the state after the prime text
    except its last character, ``token`` that last character. Reference loop::

        ids = []
        for k in jax.random.split(key, n):
            carry, logits = step_fn(params, carry, token)
            token = sample_logits(k, logits, temperature)
            ids.append(token)
        return jnp.stack(ids), carry

    Returns:
      ``(ids (n, *batch) int32, carry)``; decode with :func:`decode`.
    """
    steps = _int("sample", "n", n)

    def body(state, k):
        c, tok = state
        c, logits = step_fn(params, c, tok)
        tok = sample_logits(k, logits, temperature)
        return (c, tok), tok

    (carry, _), ids = jax.lax.scan(body, (carry, jnp.asarray(token, _I32)), jax.random.split(key, steps))
    return ids, carry


# --------------------------------------------------------------------------------------------------
# registry

TASKS: dict[str, Callable[..., Task]] = {
    "temporal_order": temporal_order,
    "temporal_order_3bit": temporal_order_3bit,
    "addition": addition,
    "multiplication": multiplication,
    "random_permutation": random_permutation,
    "memorization": memorization,
    "adding_hochreiter": adding_hochreiter,
    "adding_arjovsky": adding_arjovsky,
    "copying": copying,
    "digits": digits,
    "permuted_digits": permuted_digits,
    "char_lm": char_lm,
}


def make_task(name: str, **kwargs) -> Task:
    """The task ``name`` of :data:`TASKS`, built with ``kwargs`` (e.g. ``make_task("addition",
    min_length=50, max_length=200)``); a ``ValueError`` for an unknown name or argument."""
    if name not in TASKS:
        raise ValueError(f"make_task: unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    factory = TASKS[name]
    accepted = tuple(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"make_task: task {name!r} takes no argument {unknown[0]!r}; it takes {', '.join(accepted)}"
        )
    return factory(**kwargs)


if __name__ == "__main__":  # a library module: say so and name the scripts (exit 2)
    from experiments import not_a_script

    not_a_script("tasks")
