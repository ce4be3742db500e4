"""An LSTM encoder-decoder learns string transductions: reverse, sort, add; greedy vs beam search.

The encoder-decoder of Sutskever, Vinyals & Le ("Sequence to sequence learning with neural networks",
NeurIPS 2014): an LSTM reads the source string, its final state ``(h, c)`` is the initial state of a
second LSTM that writes the target one token at a time, each token fed back as its next input (the
encoder-decoder of the lectures: V. Kitov, "Recurrent neural nets"; B. Leibe, RWTH Aachen, Machine
Learning Lecture 17). The tasks are string transductions with an exact answer, so the model is scored
by held-out **exact match** -- the whole output string, up to its end token, equals the target --
against the input length, inside the training range and beyond it (extrapolation). The addition task
is the "program" of Zaremba & Sutskever ("Learning to execute", arXiv:1410.4615, 2014) reduced to its
core: read ``a+b``, write the decimal sum.

**Tasks** (``--tasks``, one model each): random digit strings (digits uniform, a length drawn per
string):

* ``reverse`` -- ``"2719"`` -> ``"9172"``, 1 .. ``--length`` digits;
* ``sort`` -- ``"2719"`` -> ``"1279"`` (ascending), 1 .. ``--length`` digits;
* ``add`` -- ``"123+45"`` -> ``"168"``, each operand 1 .. ``--digits`` digits (drawn independently; no
  leading zero), the sum without leading zeros.

Tokens (:data:`TOKENS`): the digits ``0``-``9``, ``+``, the start token ``^`` (the decoder's first input)
and the end token ``$`` (the target's last token, EOS; also the padding). ``encode`` / ``decode`` map
strings to token ids and back; :func:`reference` is the plain-Python transduction.

**Model and training.** Encoder and decoder: :func:`jaxrnn.lstm` with ``--hidden`` units (forget-gate
bias 1). The encoder reads the one-hot source, backwards by default (``--reverse-source``, Sutskever et
al., section 3.3); the decoder reads a learned embedding (``--embed``) of the previous token, a linear
readout gives the next token's logits. The loss is :func:`jaxrnn.losses.seq2seq`: teacher forcing
(decoder input ``^ y_1 .. y_n``, target ``y_1 .. y_n $``), cross-entropy per target token, source and
target lengths masked (a batch is padded to its longest possible string). One
:func:`experiments.runner.train` run per task: fresh random strings every update (batch ``64``, lengths
uniform over the training range), Adam, learning rate ``1e-2`` decayed to 0 by a cosine over ``--steps``,
gradient-norm clipping at 1. Logged every ``--log-every`` updates on a fixed batch of ``--n-eval``
strings of the training range: ``eval_loss`` (teacher-forced cross-entropy) and ``eval_error``, the
fraction of strings with a wrong argmax at some step under teacher forcing -- exactly the greedy
decoder's exact-match error (greedy decoding feeds back its argmax, so it reproduces the target iff
every teacher-forced argmax is right).

**Evaluation.** ``--n-test`` held-out strings per length (a fixed key; ``add``: both operands that
many digits), lengths 1 .. L of the training range and ``--extra`` lengths beyond it. The encoder's
final carries of the whole test set are computed by one :func:`jaxrnn.losses.encode`, and the decoding
is ``jax.vmap`` over them of :func:`jaxrnn.decoding.greedy` and of :func:`jaxrnn.decoding.beam_search`
(``--beam-size`` K = 4, its best hypothesis; the step = the decoder cell's step on the embedded previous
token + the readout), for at most the longest target + EOS + 1 tokens. Beam search keeps the K most
probable prefixes (finished ones frozen) and ranks the K survivors by ``log p(y | x) / lp(|y|)`` with
GNMT's length penalty ``lp = ((5 + |y|) / 6) ** alpha`` (Wu et al., "Google's neural machine
translation system", arXiv:1609.08144, 2016, section 7); ``--length-penalty`` alpha defaults to 0,
ranking by log-probability as Sutskever et al. did (here the target's length is fixed by the source,
so a length prior has nothing to correct). "Held-out" means drawn with a separate key: short strings
necessarily also occur in training (there are only ``10 ** n`` strings of ``n`` digits), long ones
mostly do not (quick ``reverse``: ``10 ** 8`` strings of 8 digits, ~40,000 trained on).

Measured with ``--preset quick`` (2-core CPU development machine shared with other jobs,
``JAX_PLATFORMS=cpu``; 3 min 45 s wall (``time``) for the three tasks, 65-83 s each including the
compilation and the evaluation), seed 0, the table as printed::

    task     length  seen  n    greedy  beam K=4
    -------  ------  ----  ---  ------  --------
    reverse  1       yes   200  1.000   1.000
    reverse  2       yes   200  1.000   1.000
    reverse  3       yes   200  1.000   1.000
    reverse  4       yes   200  1.000   1.000
    reverse  5       yes   200  1.000   1.000
    reverse  6       yes   200  1.000   1.000
    reverse  7       yes   200  1.000   1.000
    reverse  8       yes   200  1.000   1.000
    reverse  9       no    200  0.890   0.885
    reverse  10      no    200  0.480   0.475
    sort     1       yes   200  1.000   1.000
    sort     2       yes   200  1.000   1.000
    sort     3       yes   200  1.000   1.000
    sort     4       yes   200  1.000   1.000
    sort     5       yes   200  1.000   1.000
    sort     6       yes   200  1.000   1.000
    sort     7       yes   200  1.000   1.000
    sort     8       yes   200  1.000   1.000
    sort     9       no    200  1.000   1.000
    sort     10      no    200  1.000   1.000
    add      1       yes   200  1.000   1.000
    add      2       yes   200  0.995   0.995
    add      3       yes   200  0.935   0.945
    add      4       yes   200  0.580   0.615
    add      5       no    200  0.000   0.000
    add      6       no    200  0.000   0.000
    exact match: the whole output string (up to EOS) equals the target; beam: K = 4, length penalty 0; length:
    digits (add: digits per operand); 'no': longer than any training string (extrapolation)
    sample decodings (held-out):
      reverse          0 -> 0           greedy 0          ok     beam 0          ok
      reverse       7555 -> 5557        greedy 5557       ok     beam 5557       ok
      reverse    7330941 -> 1490337     greedy 1490337    ok     beam 1490337    ok
      reverse 6851146226 -> 6226411586  greedy 6226411586 ok     beam 6226411586 ok
      sort          5 -> 5           greedy 5          ok     beam 5          ok
      sort       8539 -> 3589        greedy 3589       ok     beam 3589       ok
      sort    8978437 -> 3477889     greedy 3477889    ok     beam 3477889    ok
      sort 9561031450 -> 0011345569  greedy 0011345569 ok     beam 0011345569 ok
      add           8+1 -> 9        greedy 9       ok     beam 9       ok
      add       784+466 -> 1250     greedy 1250    ok     beam 1250    ok
      add     6988+5084 -> 12072    greedy 12072   ok     beam 12072   ok
      add 652239+130150 -> 782389   greedy 6525663 WRONG  beam 6525663 WRONG

(the note under the table is one line when printed). Within the training range ``sort`` and ``reverse``
are solved and ``add`` falls off with the operands' length (both operands of the full length are the
hardest strings of the range: 4 + 4 digits are 1/16 of the training draws). Beyond it, ``sort`` still
extrapolates perfectly to 9 and 10 digits (it needs only the count of each digit), ``reverse`` degrades
(0.89 at 9 digits, 0.48 at 10) and ``add`` fails completely (5 and 6 digits: 0; the sample writes 7
digits for a 6-digit sum). Beam search (K = 4) equals greedy where greedy is (nearly) right and gains
1.0 and 3.5 points on ``add`` at 3 and 4 digits; at ``reverse`` 9 digits it is 0.5 points *worse*: it
finds outputs more probable under the model than greedy's, and when those are wrong the error is the
model's, not the search's (Sutskever et al., section 3.2, also report that a small beam gives most of
the gain [RECALL]; [RECALL]: recalled, not verified against the paper).

The reversed source, measured the same way (``--preset quick --tasks reverse add --no-reverse-source``,
2 min 57 s): ``add`` drops to 1.000 / 0.880 / 0.300 / 0.025 (greedy at 1-4 digits, against 1.000 / 0.995
/ 0.935 / 0.580 reversed), so reading ``a+b`` backwards, each operand least significant digit first,
helps the addition a lot; ``reverse`` stays at 1.000 on 1-8 digits and extrapolates
*better* without the reversal (0.990 / 0.865 at 9 / 10 digits against 0.890 / 0.480): for that task the
source in reading order already puts the first target token next to the decoder's start, and
reversing it turns the task into copying, where every token waits ``n + 1`` steps -- Sutskever et al.'s
argument (short dependencies between the first source and target words) run the other way.

Commands::

    python -m experiments.seq2seq --preset quick                  # 2-core CPU, ~4 min
    python -m experiments.seq2seq --preset paper                  # 30,000 updates, H = 256, longer strings
    python -m experiments.seq2seq --preset quick --tasks add --digits 3 --beam-size 8
    python -m experiments.seq2seq --preset quick --no-reverse-source --length-penalty 0.6
    python -m experiments.seq2seq --resume latest                 # continue a killed run

(the ``paper`` preset was not run here; its numbers are not known.)

Outputs in ``runs/seq2seq/<timestamp>/``: ``results.json`` (the config, per task its run directory,
steps, exact-match accuracies per length for greedy and beam, the sample decodings; the table),
``summary.png`` (one panel per task: held-out exact match against the input length, greedy solid, beam
dashed, the training lengths shaded; a copy is ``experiments/figures/seq2seq.png``), and per task
``<task>-seed<s>/<timestamp>/`` with ``metrics.jsonl``, ``losses.png`` and checkpoints (``params``:
``{"encoder", "decoder", "embed", "W", "b"}``, the layout of :func:`jaxrnn.losses.seq2seq`).

References: I. Sutskever, O. Vinyals, Q. V. Le, "Sequence to sequence learning with neural networks",
NeurIPS 2014; W. Zaremba, I. Sutskever, "Learning to execute", arXiv:1410.4615, 2014; V. Kitov,
"Recurrent neural nets" (lecture); B. Leibe, RWTH Aachen, Machine Learning Lecture 17 (encoder-decoder
RNNs); Y. Wu et al., "Google's neural machine translation system: bridging the gap between human and
machine translation", arXiv:1609.08144, 2016.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn as jr
from experiments import plots, runner, sweep

__all__ = [
    "BOS",
    "Batch",
    "Config",
    "EOS",
    "ERROR_LABEL",
    "Model",
    "PLUS",
    "PRESETS",
    "Seq2SeqResult",
    "TASKS",
    "TOKENS",
    "V",
    "decode",
    "decode_batch",
    "encode",
    "evaluate",
    "format_samples",
    "format_table",
    "main",
    "make_batch",
    "make_model",
    "plot_summary",
    "reference",
    "sample_batch",
    "source_size",
    "strings",
    "table_note",
    "table_rows",
    "target_size",
    "test_lengths",
    "test_set",
    "train_range",
]

NAME = "seq2seq"
TASKS = ("reverse", "sort", "add")
TOKENS = "0123456789+^$"
"""The vocabulary, one character per token id: the digits 0-9 (ids 0-9), ``+`` (10), the start token
``^`` (11, the decoder's first input) and the end token ``$`` (12, the last target; also the padding)."""
PLUS, BOS, EOS = 10, 11, 12
V = len(TOKENS)
TEST_KEY = 20_141_208  # the held-out test strings: the same for every run of a task
EVAL_KEY = 20_140_917  # the held-out batch scored at each logged step
_F32, _I32 = jnp.float32, jnp.int32
ERROR_LABEL = "fraction of held-out strings whose greedy decoding is not exactly the target"


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    steps: int = runner.arg(5000, "parameter updates per task", min=1)
    batch_size: int = runner.arg(64, "strings per update", min=1)
    log_every: int = runner.arg(100, "score the held-out batch and log every this many updates", min=1)
    checkpoint_every: int = runner.arg(1000, "write a checkpoint every this many updates", min=1)
    tasks: tuple[str, ...] = runner.arg(TASKS, "tasks to train, one model each", choices=TASKS)
    length: int = runner.arg(8, "reverse / sort: training strings have 1..LENGTH digits", min=1)
    digits: int = runner.arg(4, "add: training operands have 1..DIGITS digits each", min=1)
    extra: int = runner.arg(2, "also test this many lengths beyond the training range (extrapolation)", min=0)
    hidden: int = runner.arg(128, "LSTM units of the encoder and of the decoder", min=1)
    embed: int = runner.arg(32, "size of the decoder's token embedding", min=1)
    reverse_source: bool = runner.arg(
        True, "the encoder reads each source string backwards (Sutskever et al. 2014, section 3.3)"
    )
    lr: float = runner.arg(1e-2, "Adam learning rate (peak)", min=0.0)
    schedule: str = runner.arg(
        "cosine",
        "learning rate: 'cosine' decays it to 0 over --steps; 'constant'",
        choices=("cosine", "constant"),
    )
    clip: float = runner.arg(1.0, "gradient-norm clipping threshold (0: none)", min=0.0)
    beam_size: int = runner.arg(4, "beam width K of the beam search", min=1)
    length_penalty: float = runner.arg(
        0.0, "GNMT length penalty alpha of the beam's final ranking (0: by log-probability)", min=0.0
    )
    n_test: int = runner.arg(200, "held-out strings per (task, length)", min=1)
    n_eval: int = runner.arg(512, "held-out strings (training lengths) scored at each logged step", min=1)
    n_samples: int = runner.arg(4, "sample decodings printed per task", min=0)

    def __post_init__(self):
        super().__post_init__()
        sweep.distinct(self.tasks, "--tasks")


PRESETS = {
    "quick": dict(
        steps=5000, batch_size=64, hidden=128, embed=32, length=8, digits=4, extra=2, lr=1e-2,
        log_every=100, checkpoint_every=1000, n_test=200, n_eval=512,
    ),
    "paper": dict(
        steps=30_000, batch_size=128, hidden=256, embed=64, length=12, digits=6, extra=3, lr=5e-3,
        log_every=500, checkpoint_every=5000, n_test=1000, n_eval=2048,
    ),
    "smoke": dict(
        tasks=("reverse",), steps=60, batch_size=16, hidden=8, embed=4, length=2, extra=1, lr=0.05,
        log_every=20, checkpoint_every=30, n_test=4, n_eval=16, beam_size=2, n_samples=2,
    ),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# the tasks: strings, tokens, batches


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (characters of :data:`TOKENS`); a ``ValueError`` names a character that is
    not one."""
    bad = sorted({c for c in text if c not in TOKENS})
    if bad:
        raise ValueError(f"encode: characters {bad} are not in the vocabulary {TOKENS!r}")
    return [TOKENS.index(c) for c in text]


def decode(ids, *, stop_at_eos: bool = True) -> str:
    """The string of token ids ``ids``; with ``stop_at_eos`` the ids from the first EOS on are left out."""
    out = []
    for i in np.asarray(ids).tolist():
        if stop_at_eos and i == EOS:
            break
        out.append(TOKENS[i])
    return "".join(out)


def reference(task: str, source: str) -> str:
    """The target string of ``source`` in plain Python: ``"2719"`` -> ``"9172"`` (reverse), ``"1279"``
    (sort), ``"123+45"`` -> ``"168"`` (add: the decimal sum, no leading zeros)."""
    if task == "reverse":
        return source[::-1]
    if task == "sort":
        return "".join(sorted(source))
    if task == "add":
        a, b = source.split("+")
        return str(int(a) + int(b))
    raise ValueError(f"reference: unknown task {task!r}; choose one of {', '.join(TASKS)}")


def source_size(task: str, n: int) -> int:
    """The longest source string of ``task`` at length ``n`` (``n`` digits; for ``add`` ``n`` digits per
    operand: ``2 n + 1``)."""
    return 2 * n + 1 if task == "add" else n


def target_size(task: str, n: int) -> int:
    """The longest target string (without EOS) of ``task`` at length ``n`` (``add``: ``n + 1`` digits)."""
    return n + 1 if task == "add" else n


class Batch(NamedTuple):
    """Time-major token batches: ``src (S, B)``, ``src_len (B,)``, ``ys_in (U, B)`` = ``[BOS, y_1, ..,
    y_n]``, ``ys_out (U, B)`` = ``[y_1, .., y_n, EOS]``, ``tgt_len (B,)`` = ``n + 1``; int32, padded
    with EOS (the lengths mark the valid steps)."""

    src: jax.Array
    src_len: jax.Array
    ys_in: jax.Array
    ys_out: jax.Array
    tgt_len: jax.Array


def _big_endian(digits_le, n, size: int):
    """``(B, size)`` tokens: the ``n`` digits of little-endian ``digits_le (B, D)`` most significant
    first, EOS after them."""
    p = jnp.arange(size, dtype=_I32)
    idx = jnp.clip(n[:, None] - 1 - p, 0, digits_le.shape[1] - 1)
    return jnp.where(p < n[:, None], jnp.take_along_axis(digits_le, idx, axis=1), EOS)


def _number(key, n, D: int):
    """Little-endian digits ``(B, D)`` of uniform random ``n``-digit numbers (no leading zero unless
    ``n == 1``); zeros above ``n``."""
    k_d, k_lead = jax.random.split(key)
    B = n.shape[0]
    d = jax.random.randint(k_d, (B, D), 0, 10, dtype=_I32)
    lead = jax.random.randint(k_lead, (B, D), 1, 10, dtype=_I32)
    p = jnp.arange(D, dtype=_I32)
    d = jnp.where((p == n[:, None] - 1) & (n[:, None] > 1), lead, d)
    return jnp.where(p < n[:, None], d, 0)


def _strings(task: str, key, n_a, n_b, S: int, U: int):
    """``(src (B, S), src_len, tgt (B, U - 1), tgt_len)`` for lengths ``n_a (B,)`` (``add``: the digits
    of the first operand; ``n_b`` those of the second, unused by the other tasks)."""
    B = n_a.shape[0]
    k_a, k_b = jax.random.split(key)
    p = jnp.arange(S, dtype=_I32)
    if task in ("reverse", "sort"):
        valid = p < n_a[:, None]
        src = jnp.where(valid, jax.random.randint(k_a, (B, S), 0, 10, dtype=_I32), EOS)
        if task == "reverse":
            tgt = jnp.take_along_axis(src, jnp.clip(n_a[:, None] - 1 - p, 0, S - 1), axis=1)
            tgt = jnp.where(valid, tgt, EOS)
        else:
            tgt = jnp.sort(src, axis=1)  # EOS (12) sorts after every digit
        return src, n_a, tgt[:, : U - 1], n_a
    # add: "a+b" with a of n_a digits and b of n_b; the sum carried digit by digit (no overflow)
    D = (S - 1) // 2
    a, b = _number(k_a, n_a, D), _number(k_b, n_b, D)
    carry, digits = jnp.zeros((B,), _I32), []
    for i in range(D):
        t = a[:, i] + b[:, i] + carry
        digits.append(t % 10)
        carry = t // 10
    total = jnp.stack([*digits, carry], axis=1)  # (B, D + 1) little-endian
    nonzero = jnp.where(total > 0, jnp.arange(D + 1, dtype=_I32), -1)
    n_s = jnp.maximum(jnp.max(nonzero, axis=1) + 1, 1)
    a_be, b_be = _big_endian(a, n_a, S), _big_endian(b, n_b, S)
    b_at = jnp.take_along_axis(b_be, jnp.clip(p - n_a[:, None] - 1, 0, S - 1), axis=1)
    p = p[None, :]
    src = jnp.where(
        p < n_a[:, None],
        a_be,
        jnp.where(p == n_a[:, None], PLUS, jnp.where(p <= (n_a + n_b)[:, None], b_at, EOS)),
    )
    return src, n_a + n_b + 1, _big_endian(total, n_s, U - 1), n_s


def make_batch(task: str, key, n_a, n_b=None, *, S: int, U: int) -> Batch:
    """A :class:`Batch` of random strings of ``task`` with the given lengths ``n_a (B,)`` int32 (digits;
    for ``add`` those of the first operand, ``n_b`` those of the second, default ``n_a``), padded to
    ``S`` source and ``U`` target steps (``U`` counts the EOS; :func:`source_size`, :func:`target_size`
    of the longest). Digits uniform; an operand of ``n > 1`` digits has no leading zero. Only from
    ``key``; jittable (lengths may be traced, ``S`` and ``U`` static)."""
    n_a = jnp.asarray(n_a, _I32)
    n_b = n_a if n_b is None else jnp.asarray(n_b, _I32)
    src, src_len, tgt, tgt_len = _strings(task, key, n_a, n_b, S, U)
    B = n_a.shape[0]
    pos = jnp.arange(U, dtype=_I32)
    ys_out = jnp.where(pos < tgt_len[:, None], jnp.pad(tgt, ((0, 0), (0, 1)), constant_values=EOS), EOS)
    ys_in = jnp.concatenate([jnp.full((B, 1), BOS, _I32), ys_out[:, :-1]], axis=1)
    ys_in = jnp.where(pos <= tgt_len[:, None], ys_in, EOS)
    return Batch(src.T, src_len, ys_in.T, ys_out.T, tgt_len + 1)


def sample_batch(task: str, key, batch: int, lo: int, hi: int) -> Batch:
    """A :class:`Batch` of ``batch`` strings of ``task`` with lengths uniform in ``[lo, hi]`` (``add``:
    the digits of each operand, drawn independently), padded to the longest possible at ``hi``."""
    k_a, k_b, k_s = jax.random.split(key, 3)
    n_a = jax.random.randint(k_a, (batch,), lo, hi + 1, dtype=_I32)
    n_b = jax.random.randint(k_b, (batch,), lo, hi + 1, dtype=_I32)
    return make_batch(task, k_s, n_a, n_b, S=source_size(task, hi), U=target_size(task, hi) + 1)


_make_batch_jit = jax.jit(make_batch, static_argnames=("task", "S", "U"))


def train_range(config: Config, task: str) -> int:
    """The longest training length of ``task``: ``--digits`` for add, ``--length`` otherwise."""
    return config.digits if task == "add" else config.length


def test_lengths(config: Config, task: str) -> list[int]:
    """The tested lengths: ``1 .. L`` (seen in training) and ``L + 1 .. L + extra`` (extrapolation)."""
    return list(range(1, train_range(config, task) + config.extra + 1))


def test_set(config: Config, task: str) -> tuple[np.ndarray, Batch]:
    """The held-out strings, ``n_test`` per tested length (``add``: both operands that long), in order
    of length, padded to the longest (one compiled decoder for all): ``(lengths (N,), Batch)``. A fixed
    key per task: the same strings for every run."""
    lengths = np.repeat(np.asarray(test_lengths(config, task), np.int32), config.n_test)
    hi = int(lengths[-1])
    key = jax.random.fold_in(jax.random.PRNGKey(TEST_KEY), TASKS.index(task))
    batch = _make_batch_jit(task, key, lengths, S=source_size(task, hi), U=target_size(task, hi) + 1)
    return lengths, batch


def strings(batch: Batch, i: int) -> tuple[str, str]:
    """``(source, target)`` strings of row ``i`` of ``batch``."""
    src, n = np.asarray(batch.src)[:, i], int(np.asarray(batch.src_len)[i])
    return decode(src[:n], stop_at_eos=False), decode(np.asarray(batch.ys_out)[:, i])


# ----------------------------------------------------------------------------------------------
# the model


class Model(NamedTuple):
    """The encoder-decoder's pure functions; ``params = {"encoder", "decoder", "embed", "W", "b"}``
    (the layout of :func:`jaxrnn.losses.seq2seq`)."""

    encoder: jr.Cell
    decoder: jr.Cell
    init: Callable  # key -> params
    loss: Callable  # (params, Batch) -> mean cross-entropy per target token (teacher forcing)
    logits: Callable  # (params, Batch) -> (U, B, V) teacher-forced logits
    final_carry: Callable  # (params, src, src_len) -> the encoder's final carry (batched leaves)
    step: Callable  # params -> step(carry, token) -> (carry, logits (V,)) for jaxrnn.decoding


def make_model(config: Config) -> Model:
    """Two LSTMs (forget-gate bias 1) of ``--hidden`` units: the encoder reads the one-hot source
    (``V`` inputs; backwards with ``--reverse-source``), its final ``(h, c)`` is the decoder's initial
    state (Sutskever et al.: no bridge), the decoder reads ``embed[token]`` (``(V, --embed)``, ``N(0,
    1)``) and ``W (H, V) ~ N(0, 1/H)``, ``b = 0`` give the next token's logits."""
    H, E = config.hidden, config.embed
    enc, dec = jr.lstm(H, forget_bias=1.0), jr.lstm(H, forget_bias=1.0)

    def init(key):
        k_enc, k_dec, k_emb, k_w = jax.random.split(key, 4)
        return {
            "encoder": enc.init(k_enc, V),
            "decoder": dec.init(k_dec, E),
            "embed": jax.random.normal(k_emb, (V, E), _F32),
            "W": jax.random.normal(k_w, (H, V), _F32) / math.sqrt(H),
            "b": jnp.zeros((V,), _F32),
        }

    onehot = lambda src: jax.nn.one_hot(src, V, dtype=_F32)

    def loss(params, b: Batch):
        return jr.losses.seq2seq(
            enc, dec, params, onehot(b.src), b.ys_in, b.ys_out, x_lengths=b.src_len, y_lengths=b.tgt_len,
            reverse_source=config.reverse_source,
        )  # fmt: skip

    def final_carry(params, src, src_len):
        _, final = jr.losses.encode(
            enc, params["encoder"], onehot(src), lengths=src_len, reverse=config.reverse_source
        )
        return final

    def logits(params, b: Batch):
        d0 = final_carry(params, b.src, b.src_len)
        _, ys = jr.unroll(dec, params["decoder"], params["embed"][b.ys_in], carry=d0, lengths=b.tgt_len)
        return ys @ params["W"] + params["b"]

    def step(params):
        def f(carry, token):
            carry = dec.step(params["decoder"], carry, params["embed"][token])
            return carry, dec.output(carry) @ params["W"] + params["b"]

        return f

    return Model(enc, dec, jax.jit(init), loss, logits, final_carry, step)


def _teacher_forced(model: Model, params, b: Batch):
    """``(loss, error)`` on ``b`` under teacher forcing: the mean cross-entropy per target token (what
    :func:`jaxrnn.losses.seq2seq` returns) and the fraction of strings with a wrong argmax at some valid
    step. Greedy decoding feeds back its own argmax, so it reproduces the target exactly when every
    teacher-forced argmax is right: the error is the greedy exact-match error (up to float rounding on
    near-ties)."""
    logits = model.logits(params, b)
    valid = jnp.arange(b.ys_out.shape[0])[:, None] < b.tgt_len
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, b.ys_out)
    loss = jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.sum(valid)
    wrong = (jnp.argmax(logits, -1) != b.ys_out) & valid
    return loss, jnp.mean(jnp.any(wrong, axis=0).astype(_F32))


def decode_batch(model: Model, params, src, src_len, max_length: int, beam_size: int, length_penalty: float):
    """Greedy and beam-search outputs ``(greedy (B, L), beam (B, L))`` int32 for the sources ``src (S,
    B)``: the encoder's final carries, then :func:`jaxrnn.decoding.greedy` and
    :func:`jaxrnn.decoding.beam_search` (its best hypothesis) vmapped over them; EOS-padded after the
    first EOS. One jitted program."""

    @jax.jit
    def run(params, src, src_len):
        final = model.final_carry(params, src, src_len)
        step = model.step(params)
        greedy = jax.vmap(lambda c: jr.decoding.greedy(step, c, BOS, max_length, eos_token=EOS)[0])(final)
        beam = jax.vmap(
            lambda c: jr.decoding.beam_search(
                step, c, BOS, max_length, beam_size, eos_token=EOS, length_penalty=length_penalty
            )[0][0]
        )(final)
        return greedy, beam

    return run(params, src, src_len)


def _exact(pred, ys_out):
    """``(B,)`` bool: the output ``pred (B, L)`` equals the target ``ys_out (U, B)`` up to and including
    its EOS (``L >= U``; positions after the EOS are EOS in both)."""
    U = ys_out.shape[0]
    target = np.full(pred.shape, EOS, np.int32)
    target[:, :U] = np.asarray(ys_out).T
    return np.all(np.asarray(pred) == target, axis=1)


# ----------------------------------------------------------------------------------------------
# one task: train, test, sample


def _train_fns(config: Config, task: str, model: Model) -> dict:
    L = train_range(config, task)
    eval_key = jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), TASKS.index(task))

    def loss_fn(params, b):
        return model.loss(params, b), {}

    def eval_fn(params, key):  # the same held-out strings every time (drawn inside the jitted eval)
        loss, error = _teacher_forced(model, params, sample_batch(task, eval_key, config.n_eval, 1, L))
        return {"eval_loss": loss, "eval_error": error}

    def sample_fn(key):
        return sample_batch(task, key, config.batch_size, 1, L)

    return dict(init_fn=model.init, loss_fn=loss_fn, sample_fn=sample_fn, eval_fn=eval_fn)


def evaluate(config: Config, task: str, model: Model, params) -> tuple[list[dict], list[dict]]:
    """Exact-match accuracy per tested length, greedy and beam: ``(rows, samples)``; each row ``{"length",
    "seen", "n", "greedy", "beam"}``, each sample ``{"length", "source", "target", "greedy", "beam"}``
    (the first string of a few lengths)."""
    lengths, b = test_set(config, task)
    L = b.ys_out.shape[0] + 1  # one step of slack: an output that does not stop is seen to go on
    greedy, beam = decode_batch(model, params, b.src, b.src_len, L, config.beam_size, config.length_penalty)
    greedy, beam = np.asarray(greedy), np.asarray(beam)
    ok_g, ok_b = _exact(greedy, b.ys_out), _exact(beam, b.ys_out)
    lengths = np.asarray(lengths)
    rows = []
    for k in test_lengths(config, task):
        m = lengths == k
        rows.append(
            {
                "length": k,
                "seen": k <= train_range(config, task),
                "n": int(m.sum()),
                "greedy": float(ok_g[m].mean()),
                "beam": float(ok_b[m].mean()),
            }
        )
    samples = []
    ks = test_lengths(config, task)
    picks = sorted(
        {ks[round(i * (len(ks) - 1) / max(config.n_samples - 1, 1))] for i in range(config.n_samples)}
    )
    for k in picks:
        i = int(np.argmax(lengths == k))
        source, target = strings(b, i)
        samples.append(
            {
                "length": k,
                "source": source,
                "target": target,
                "greedy": decode(greedy[i]),
                "beam": decode(beam[i]),
            }
        )
    return rows, samples


# ----------------------------------------------------------------------------------------------
# table and figure


def _acc(v) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3f}"


def table_rows(results: Sequence[Mapping]) -> list[dict]:
    """One row per (task, tested length): ``task``, ``length``, ``seen`` (a training length), ``n``,
    ``greedy``, ``beam`` (exact-match accuracies)."""
    return [{"task": r["task"], **row} for r in results for row in r["lengths"]]


def table_note(config: Config) -> str:
    """The line under the table: what exact match, the beam, the length and ``seen`` mean."""
    return (
        f"exact match: the whole output string (up to EOS) equals the target; beam: K = {config.beam_size}, "
        f"length penalty {config.length_penalty:g}; length: digits (add: digits per operand); "
        "'no': longer than any training string (extrapolation)"
    )


def format_table(rows: Sequence[Mapping], config: Config) -> str:
    """``task  length  seen  n  greedy  beam``, then :func:`table_note`."""
    header = ["task", "length", "seen", "n", "greedy", f"beam K={config.beam_size}"]
    lines = [
        [
            r["task"],
            str(r["length"]),
            "yes" if r["seen"] else "no",
            str(r["n"]),
            _acc(r["greedy"]),
            _acc(r["beam"]),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), table_note(config)])


def format_samples(task: str, samples: Sequence[Mapping]) -> str:
    """One line per sample: ``source -> target | greedy ... ok/WRONG | beam ... ok/WRONG``."""
    mark = lambda out, target: "ok" if out == target else "WRONG"
    w_src = max((len(s["source"]) for s in samples), default=0)
    w_tgt = max((len(s[k]) for s in samples for k in ("target", "greedy", "beam")), default=0)
    lines = []
    for s in samples:
        g, b = s["greedy"] or "(empty)", s["beam"] or "(empty)"
        lines.append(
            f"  {task} {s['source']:>{w_src}} -> {s['target']:<{w_tgt}}  greedy {g:<{w_tgt}} "
            f"{mark(s['greedy'], s['target']):<5}  beam {b:<{w_tgt}} {mark(s['beam'], s['target'])}"
        )
    return "\n".join(lines)


def plot_summary(results: Sequence[Mapping], config: Config, path: str) -> str:
    """One panel per task: exact-match accuracy against length, greedy solid, beam dashed; the
    training range shaded."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        ks = [row["length"] for row in r["lengths"]]
        (line,) = ax.plot(ks, [row["greedy"] for row in r["lengths"]], "o-", label="greedy")
        ax.plot(
            ks, [row["beam"] for row in r["lengths"]], "s--", color=line.get_color(), mfc="none",
            label=f"beam K={config.beam_size}",
        )  # fmt: skip
        ax.axvspan(0.5, train_range(config, r["task"]) + 0.5, color="0.9", zorder=0, label="training lengths")
        ax.set_xlim(0.5, ks[-1] + 0.5)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(ks)
        ax.set_xlabel("digits per operand" if r["task"] == "add" else "input length (digits)")
        ax.set_ylabel("held-out exact-match accuracy")
        ax.set_title(f"{r['task']}  ({r['steps']} updates)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# the script


class Seq2SeqResult(NamedTuple):
    """What :func:`main` returns: one dict per task (run, accuracies per length, samples), the table."""

    results: list[dict]
    table: list[dict]
    sweep_dir: str


def main(argv=None):
    config = runner.config_cli(Config, PRESETS, argv, name=NAME, description=__doc__)
    sweep_dir = sweep.start(config, NAME)
    log = sys.stderr if config.quiet else sys.stdout
    model = make_model(config)
    results, diverged = [], []
    for task in (t for t in TASKS if t in config.tasks):
        name = f"{task}-seed{config.seed}"
        run_config = dataclasses.replace(
            config,
            tasks=(task,),
            run_root=sweep_dir,
            resume=sweep.resumable(sweep_dir, name) if config.resume else "",
        )
        t0 = time.perf_counter()
        try:
            result = runner.train(
                run_config,
                name=name,
                optimizer=sweep.adam(config.lr, config.steps, config.schedule, config.clip),
                **_train_fns(config, task, model),
            )
        except runner.Diverged as e:  # recorded (accuracies of its last parameters); reported at the end
            result = e.result
        if result.diverged_at is not None:
            diverged.append(f"{name} at step {result.diverged_at}")
        t_train = time.perf_counter() - t0
        rows, samples = evaluate(config, task, model, result.params)
        last = result.rows[-1] if result.rows else {}
        results.append(
            {
                "task": task,
                "seed": config.seed,
                "run_dir": result.run_dir,
                "steps": result.step,
                "diverged_at": result.diverged_at,
                "train_lengths": [1, train_range(config, task)],
                "eval_loss": last.get("eval_loss", math.nan),
                "eval_error": last.get("eval_error", math.nan),
                "lengths": rows,
                "samples": samples,
                "train_s": round(t_train, 2),
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        )
        plots.plot_run(result.run_dir, error_label=ERROR_LABEL)
        seen = [r for r in rows if r["seen"]]
        print(
            f"[{len(results)}/{len(config.tasks)}] {task}: training lengths greedy "
            f"{np.mean([r['greedy'] for r in seen]):.3f}, beam {np.mean([r['beam'] for r in seen]):.3f} "
            f"(mean over lengths 1..{train_range(config, task)}), {results[-1]['wall_s']:.1f} s",
            file=log,
            flush=True,
        )
        sweep.write_json(
            os.path.join(sweep_dir, "results.json"),
            {
                "experiment": NAME,
                "finished": _dt.datetime.now().isoformat(timespec="seconds"),
                "config": dataclasses.asdict(config),
                "tokens": TOKENS,
                "metric": table_note(config),
                "results": results,
                "table": table_rows(results),
            },
        )
    table = table_rows(results)
    print(format_table(table, config))
    if config.n_samples:
        print("sample decodings (held-out):")
        for r in results:
            print(format_samples(r["task"], r["samples"]))
    figure = plot_summary(results, config, os.path.join(sweep_dir, "summary.png"))
    print(f"figure: {figure}")
    print(f"results: {sweep_dir}/results.json")
    runner.report_divergence(diverged, len(config.tasks), config, os.path.join(sweep_dir, "results.json"))
    return Seq2SeqResult(results, table, sweep_dir)


if __name__ == "__main__":
    runner.run_cli(main)
