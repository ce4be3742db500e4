"""Word-level RNN language model: the full softmax against the hierarchical softmax (Huffman tree).

T. Mikolov, M. Karafiat, L. Burget, J. Cernocky and S. Khudanpur, "Recurrent neural network based
language model" (Interspeech 2010) predict the next word from a recurrent state; the output layer, a
softmax over the whole vocabulary, costs ``O(V)`` per word and dominates the training time once ``V``
is in the tens of thousands. The hierarchical softmax (F. Morin and Y. Bengio, "Hierarchical
probabilistic neural network language model", AISTATS 2005; B. Leibe, RWTH Aachen "Machine Learning"
lecture 17, "Recurrent Neural Networks") puts the words at the leaves of a binary tree and scores a
word as the product of the ``sigma(+-v_n . h)`` decisions on its path, ``O(depth)`` per word; with the
Huffman tree of the word counts, as word2vec builds it (T. Mikolov, I. Sutskever, K. Chen, G. Corrado
and J. Dean, "Distributed representations of words and phrases and their compositionality", NIPS
2013), frequent words get short paths. This script trains the same LSTM language model with each output
layer (:mod:`jaxrnn.softmax`) and compares held-out perplexity, training speed and the memory of the
output layer.

Corpus: by default (``--corpus stdlib``) the Python source of every top-level standard-library module
(:func:`experiments.tasks.stdlib_corpus`: 4.7 MB, about 1.1 million tokens on CPython 3.11, enough
for a 10k-word vocabulary), or the character LM's ten modules (``--corpus modules``,
:func:`experiments.tasks.default_corpus`, V about 3.7k), or ``--text FILE``
(:func:`experiments.tasks.read_text`, any UTF-8 file). Tokeniser (:func:`tokenize`): line by line, the
regular expression ``\\w+|[^\\w\\s]`` (runs of letters, digits and underscores; every other non-space
character alone), case kept (``--lowercase`` folds it: Python is case-sensitive), and with ``--eos``
(the default) a token ``<eos>`` closes every line that has a token, as in Mikolov's Penn Treebank files
(one sentence per line, ``<eos>`` appended). The token stream is split chronologically: the first
``1 - valid - test`` fraction trains, then come ``--valid-fraction`` (validation) and
``--test-fraction`` (test). Vocabulary (:func:`build_vocab`): the ``--vocab`` most frequent
training tokens seen at least ``--min-count`` times, plus ``<unk>`` (id 0) for every other token of
any split; ``<unk>`` is an ordinary word of the model (its training count is that of the rare words),
so held-out unknown words cost what the model gives ``<unk>`` -- the Penn Treebank convention. With
``--min-count 1`` and a vocabulary holding every training type, ``<unk>`` never occurs in training and
held-out unknown words cost a fortune.

Model (:func:`build_model`): embedding ``E (V, D)`` -> ``jr.lstm(H)`` -> output layer, one of
``--softmax``:

* ``full`` -- ``p(w | h) = softmax(h W + b)_w``, ``W (H, V)``;
* ``huffman`` -- ``jr.softmax.hierarchical(jr.softmax.huffman_tree(counts))`` over the training
  counts (``<unk>`` included), ``W (V-1, H)``;
* ``balanced`` -- the same over ``jr.softmax.balanced_tree(V)`` (every code ``ceil(log2 V)`` bits).

Training: windows of ``--seq-length`` tokens at random offsets of the training split, each from the
zero state (no state carried between windows, as in :mod:`experiments.char_lm`: a pure function of
the step's key, which is what lets :func:`experiments.runner.train` resume a run exactly), the loss the
mean negative log-likelihood ``-ln p(w_{t+1} | w_<=t)``; Adam, the global gradient norm clipped to
``--clip``; ``--dropout`` on the non-recurrent connections (the embeddings into the LSTM, its outputs
into the output layer), as W. Zaremba, I. Sutskever and O. Vinyals regularise word-level LSTMs
("Recurrent neural network regularization", 2014). The hierarchical models train on ``log_prob``,
whose cost is ``O(D H)`` per word for the tree's depth ``D`` and whose memory is ``O(H + D)`` per word
(it scans the ``D`` levels and rematerialises each in the backward pass): :mod:`jaxrnn.softmax` pads
every path to ``D``, so a Huffman tree's short codes for frequent words save no time here, and its
depth (its longest code) exceeds the balanced tree's ``ceil(log2 V)``.

Evaluation, at every logged step: perplexity ``exp(-(1/N) sum ln p(w_t | context))`` over EVERY token
of the validation and the test split (:func:`stream_nll`: each split read as ``--eval-streams``
contiguous streams, the state carried along each; ``valid_ppl``, ``test_ppl`` in ``metrics.jsonl``);
the reported scores are the last step's (nothing is selected on either split). For the hierarchical
models ``log_prob`` is the log of a true distribution over the ``V`` words (the two branches of every
node sum to one), so their perplexities are exact and comparable with the full softmax's. Reference
rows: the add-one unigram model of the training counts and the uniform ``V``. Then per model:

* ``tokens/s`` -- training throughput (:func:`time_updates`): the jitted update (batch, gradient, Adam)
  run ``--bench-steps`` times after a warm-up call (compile excluded), in ``--bench-rounds`` rounds that
  alternate the models (the machine's load hits all alike); the fastest round counts (as ``timeit``
  advises: the round least disturbed by other processes). ``results.json`` also has every round and
  the training loop's own rate (``tokens_per_s_in_loop``: first to last logged step, evaluations
  included);
* output-layer memory (:func:`output_memory`) of one update's loss and gradient on the ``N = B T``
  predictions: analytically, float32 bytes of the buffers that grow with ``N`` -- full: the logits and
  their gradient, ``2 * 4 N V``; hierarchical: the path scores and their gradient, ``2 * 4 N D`` (``D``
  the tree's depth, every path padded to it), PLUS the rows of ``W`` gathered along the paths and
  their gradient, ``2 * 4 N D H`` -- and measured: the temporary buffers XLA allocates for that
  computation, ``jax.jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``;
* parameter counts (all, and the output layer);
* ``--sample-length`` words sampled at temperature 1 after ``--prime`` (the hierarchical models walk
  the tree: ``sample``), printed and written to ``samples.txt``.

Measured on the 2-core CPU development machine (jax 0.10.2, CPython 3.11 standard library,
``JAX_PLATFORMS=cpu``): ``time python -m experiments.word_lm --preset quick`` took 2 min 56 s wall
(4 min 33 s CPU user). Corpus (``--corpus stdlib``): 1063237 / 22150 / 22150 train / valid / test tokens
(the quick preset holds out 2% each, so that the full softmax's evaluation of every held-out token stays
cheap) with 26861 distinct training tokens, V = 10001 (the 10000 most frequent, plus ``<unk>``);
``<unk>`` is 2.75% of the training tokens, 7.26% of the validation and 8.89% of the test tokens.
Embedding 128 -> LSTM 256, 400 updates of 32 x 35 tokens (0.4 epochs), dropout 0.3, Adam 3e-3::

    model                           test ppl  valid ppl  tokens/s  out-layer mem (calc / XLA)  params (out)
    ------------------------------  --------  ---------  --------  --------------------------  -------------
    full softmax                    29.6      28.4       5,537     85.5 / 85.5 MiB             4.24M (2.57M)
    huffman (depth 18, mean 7.8)    28.1      27.3       28,462    2.4 / 2.4 MiB               4.24M (2.57M)
    balanced (depth 14, mean 14.0)  32.0      30.9       29,545    2.3 / 2.3 MiB               4.24M (2.57M)
    unigram (add-one)               139.6     145.0
    uniform (V)                     10001.0   10001.0

Reading. Perplexity: at equal updates the Huffman-tree model beats the full softmax (test 28.1 against
29.6) and leads it all along (validation 60 against 75 after 50 updates); the balanced tree, which splits
the frequency-sorted vocabulary into halves, trails (32.0). All are far below the unigram model (140).
Speed: the tree layers train 5.1-5.3x as many tokens per second (the output layer costs ``D H`` instead
of ``V H`` per token; the LSTM is the same). Memory: the loss and gradient of the hierarchical layer
need 2.4 MiB per update against 85.5 MiB for the full softmax's ``N x V`` logits and their gradient (36x
less): ``log_prob`` scans the ``D`` levels and rematerialises each in the backward pass, holding one
level's gathered rows (``N x H``); XLA's temporaries agree with the calculation within 1%. Every word
costs the tree's depth, not its code length (the paths are padded), so the Huffman tree's mean code of
7.8 decisions per training token (14.0 on the balanced tree) saves no time, and its depth 18 makes it no
faster than the balanced tree. Samples (``def`` ...) are Python-shaped: ``def _days_in_month (
Iterable , errwrite ) :``, ``def <unk> ( self , event )``; the models mix code and docstring text freely.
An earlier run on the ten-module corpus (``--corpus modules``, V = 3738) gave test perplexities 31.5 /
31.2 / 33.8 with the whole paths gathered at once, which at that ``V`` needed more memory than the full
softmax (``D H = 4096 > V``).

Commands::

    python -m experiments.word_lm --preset quick                        # 2-core CPU, about 3 minutes
    python -m experiments.word_lm --preset quick --corpus modules       # ten modules, V = 3738
    python -m experiments.word_lm --preset paper                        # bigger, an accelerator
    python -m experiments.word_lm --preset quick --text corpus.txt --lowercase --vocab 20000
    python -m experiments.word_lm --softmax huffman balanced            # only the trees
    python -m experiments.word_lm --resume latest                       # continue a killed run

Outputs in ``runs/word_lm/<timestamp>/``: ``results.json`` (corpus, vocabulary, every model's scores,
the table), ``samples.txt``, ``word_lm.png`` (validation perplexity against updates, tokens/s and
output-layer memory per softmax; the quick run's is ``experiments/figures/word_lm.png``) and one
:func:`experiments.runner.train` directory per softmax (``<softmax>/<timestamp>/``: ``metrics.jsonl``
with the held-out perplexities, checkpoints). A training loss that becomes NaN or infinite is recorded
(its scores NaN), the other models train, and the script exits with status 3 (``--allow-divergence``:
0); a bad option is one line and exit status 2.

Published reference points (other corpora, for scale) [RECALL]: W. Zaremba, I. Sutskever and O.
Vinyals, "Recurrent neural network regularization" (2014): Penn Treebank (10k words) test perplexity
114.5 for a 2x200 LSTM without dropout, 78.4 for a regularised 2x1500 LSTM; Mikolov et al. (2010)
report perplexity reductions of about 50% over a backoff n-gram model by mixing several RNN LMs.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import functools
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn as jr
from experiments import plots, runner, sweep, tasks

__all__ = [
    "Config",
    "EOS",
    "PRESETS",
    "SOFTMAXES",
    "TOKEN_PATTERN",
    "UNK",
    "WordCorpus",
    "WordModel",
    "build_model",
    "build_vocab",
    "detokenize",
    "encode",
    "generate",
    "main",
    "make_corpus",
    "output_memory",
    "stream_layout",
    "stream_nll",
    "Streams",
    "time_updates",
    "tokenize",
    "unigram_nll",
]

NAME = "word_lm"
TOKEN_PATTERN = r"\w+|[^\w\s]"
UNK = "<unk>"
EOS = "<eos>"
SOFTMAXES = ("full", "huffman", "balanced")
CORPORA = ("stdlib", "modules")
_F32, _I32 = jnp.float32, jnp.int32


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    """Defaults: a one-layer LSTM LM with Zaremba et al.'s window 35 and clip 5, trained by Adam."""

    batch_size: int = runner.arg(32, "windows per update", min=1)
    text: str = runner.arg("", "training text (a UTF-8 file); empty: the standard-library corpus --corpus")
    corpus: str = runner.arg(
        "stdlib",
        "without --text: 'stdlib' (every top-level stdlib module) or 'modules' (char_lm's ten)",
        choices=CORPORA,
    )
    lowercase: bool = runner.arg(False, "fold the text to lower case before tokenising")
    eos: bool = runner.arg(True, "close every line with an <eos> token (Mikolov's Penn Treebank files)")
    vocab: int = runner.arg(10000, "keep the VOCAB most frequent training words (plus <unk>)", min=1)
    min_count: int = runner.arg(2, "keep only words seen at least this often in training", min=1)
    valid_fraction: float = runner.arg(0.1, "the fraction of the tokens after training: validation")
    test_fraction: float = runner.arg(0.1, "the last fraction of the tokens: the test split")
    softmax: tuple[str, ...] = runner.arg(("full", "huffman"), "output layers to train", choices=SOFTMAXES)
    embed: int = runner.arg(128, "word embedding width D", min=1)
    hidden: int = runner.arg(256, "LSTM units H", min=1)
    seq_length: int = runner.arg(35, "tokens per training window (BPTT length)", min=1)
    dropout: float = runner.arg(
        0.0, "dropout rate on the embeddings and the LSTM outputs (training)", min=0.0
    )
    lr: float = runner.arg(2e-3, "Adam learning rate", min=0.0)
    clip: float | None = runner.arg(
        5.0, "clip the global gradient norm to this ('none': no clipping)", min=0.0
    )
    eval_streams: int = runner.arg(
        64, "contiguous streams per held-out split in each evaluation (every token)", min=1
    )
    bench_steps: int = runner.arg(
        20, "timed updates per round of the throughput measurement (0: the training loop's throughput)", min=0
    )
    bench_rounds: int = runner.arg(3, "rounds of the throughput measurement (alternating the models)", min=1)
    sample_length: int = runner.arg(60, "words to sample from each model at the end", min=1)
    prime: str = runner.arg("def", "text that primes the sampler (after an <eos>)")

    def __post_init__(self):
        super().__post_init__()
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise runner.UsageError(
                    f"--{name.replace('_', '-')} must be in (0, 1); got {getattr(self, name)}"
                )
        if not self.valid_fraction + self.test_fraction < 1.0:
            raise runner.UsageError(
                f"--valid-fraction + --test-fraction must be < 1 (the rest trains); got "
                f"{self.valid_fraction} + {self.test_fraction}"
            )
        if not self.dropout < 1.0:
            raise runner.UsageError(f"--dropout must be < 1; got {self.dropout}")
        if not self.softmax:
            raise runner.UsageError("--softmax: give at least one of " + ", ".join(SOFTMAXES))
        if len(set(self.softmax)) != len(self.softmax):
            raise runner.UsageError(
                f"--softmax: each output layer at most once; got {' '.join(self.softmax)}"
            )


PRESETS = {
    # 2-core CPU, about 3 minutes for the three models at V = 10001 (depending on the machine's load).
    "quick": dict(
        softmax=("full", "huffman", "balanced"), vocab=10000, embed=128, hidden=256, seq_length=35,
        batch_size=32, steps=400, lr=3e-3, dropout=0.3, log_every=50, checkpoint_every=200, bench_steps=10,
        bench_rounds=5, valid_fraction=0.02, test_fraction=0.02,
    ),
    # bigger: Zaremba et al.'s medium model (650 units, window 35, batch 20, dropout 0.5), one layer
    # and Adam instead of two layers and SGD; an accelerator.
    "paper": dict(
        softmax=("full", "huffman", "balanced"), vocab=10000, embed=650, hidden=650, seq_length=35,
        batch_size=20, steps=30000, lr=1e-3, dropout=0.5, log_every=500, checkpoint_every=2000,
        eval_streams=128, bench_steps=50,
    ),
    # tests: a few updates of a tiny model (give --text a small file).
    "smoke": dict(
        vocab=40, min_count=1, embed=8, hidden=8, seq_length=6, batch_size=4, steps=4, log_every=2,
        checkpoint_every=4, eval_streams=3, bench_steps=0, bench_rounds=1, sample_length=8,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# corpus


def tokenize(text: str, lowercase: bool = False, eos: bool = True) -> list[str]:
    """The word tokens of ``text``: per line, the matches of :data:`TOKEN_PATTERN` ``\\w+|[^\\w\\s]``.

    A token is a run of word characters (letters, digits, ``_``; Unicode-aware) or one other non-space
    character; whitespace only separates. ``lowercase`` folds the text first. With ``eos`` a token
    :data:`EOS` follows the tokens of every line that has any (blank lines add nothing). In plain
    Python::

        out = []
        for line in (text.lower() if lowercase else text).splitlines():
            words = re.findall(r"\\w+|[^\\w\\s]", line)
            out += words + ([EOS] if eos and words else [])

    E.g. ``tokenize("x = f(a_1)\\n\\nreturn x")`` is
    ``["x", "=", "f", "(", "a_1", ")", "<eos>", "return", "x", "<eos>"]``.
    """
    if lowercase:
        text = text.lower()
    pattern = re.compile(TOKEN_PATTERN)
    out: list[str] = []
    for line in text.splitlines():
        words = pattern.findall(line)
        if words:
            out.extend(words)
            if eos:
                out.append(EOS)
    return out


def build_vocab(tokens: Sequence[str], size: int, min_count: int = 1) -> tuple[list[str], np.ndarray]:
    """``(words, counts)``: :data:`UNK` then the ``size`` most frequent ``tokens`` seen at least
    ``min_count`` times, by count (descending), ties in alphabetical order; ``counts (V,)`` int64 their
    numbers of occurrences in ``tokens``, ``counts[0]`` that of every token left out (the ``<unk>``
    count the Huffman tree sees). ``V = len(words) <= size + 1``."""
    n = tasks._int("build_vocab", "size", size)
    m = tasks._int("build_vocab", "min_count", min_count)
    freq = collections.Counter(tokens)
    kept = sorted((w for w, c in freq.items() if c >= m and w != UNK), key=lambda w: (-freq[w], w))[:n]
    counts = np.array([0] + [freq[w] for w in kept], np.int64)
    counts[0] = len(tokens) - counts[1:].sum()
    return [UNK, *kept], counts


def encode(tokens: Sequence[str], words: Sequence[str]) -> np.ndarray:
    """``(len(tokens),)`` int32 ids in ``words``; a token not in ``words`` is 0 (:data:`UNK`)."""
    index = {w: i for i, w in enumerate(words)}
    return np.fromiter((index.get(t, 0) for t in tokens), np.int32, len(tokens))


def detokenize(ids, words: Sequence[str]) -> str:
    """Text of word ids: the words of a line joined by single spaces, :data:`EOS` a line break."""
    lines, line = [], []
    for i in np.asarray(ids).reshape(-1):
        w = words[int(i)]
        if w == EOS:
            lines.append(" ".join(line))
            line = []
        else:
            line.append(w)
    return "\n".join([*lines, " ".join(line)])


class WordCorpus(NamedTuple):
    """A tokenised text, split chronologically.

    Attributes:
      words: the vocabulary, ``words[0] == UNK``.
      counts: ``(V,)`` int64 training counts of each word (``counts[0]``: the training tokens that are
        ``<unk>``).
      train, valid, test: int32 ids of the three consecutive parts of the token stream.
      train_types: distinct tokens in the training part (before the vocabulary cut).
    """

    words: list[str]
    counts: np.ndarray
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_types: int

    def oov_rate(self, split: str) -> float:
        """The fraction of ``split``'s tokens that are ``<unk>``."""
        return float(np.mean(getattr(self, split) == 0))


def make_corpus(
    text: str,
    vocab: int = 10000,
    min_count: int = 1,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    lowercase: bool = False,
    eos: bool = True,
) -> WordCorpus:
    """Tokenise ``text`` (:func:`tokenize`), split the ``N`` tokens into the first
    ``N - n_valid - n_test`` (training), the next ``n_valid = int(N * valid_fraction)`` and the last
    ``n_test = int(N * test_fraction)``, and encode all three with the training part's vocabulary
    (:func:`build_vocab`)."""
    tokens = tokenize(text, lowercase, eos)
    n = len(tokens)
    n_valid, n_test = int(n * valid_fraction), int(n * test_fraction)
    n_train = n - n_valid - n_test
    train = tokens[:n_train]
    words, counts = build_vocab(train, vocab, min_count)
    parts = [
        encode(p, words) for p in (train, tokens[n_train : n_train + n_valid], tokens[n_train + n_valid :])
    ]
    return WordCorpus(words, counts, *parts, len(set(train)))


def unigram_nll(corpus: WordCorpus, split: str = "test") -> float:
    """Mean ``-ln q(w)`` over ``split`` of the add-one unigram model ``q_w = (n_w + 1) / (N + V)`` of the
    training counts (``<unk>`` a word like the others)."""
    counts = corpus.counts.astype(np.float64)
    q = (counts + 1.0) / (counts.sum() + len(counts))
    return float(-np.log(q[getattr(corpus, split)]).mean())


# --------------------------------------------------------------------------------------------------
# model


class _Full(NamedTuple):
    """The full softmax with the interface of :class:`jaxrnn.softmax.HierarchicalSoftmax`."""

    num_words: int

    def init(self, key, hidden_size: int):
        return {
            "W": jax.random.normal(key, (hidden_size, self.num_words), _F32) / math.sqrt(hidden_size),
            "b": jnp.zeros((self.num_words,), _F32),
        }

    def log_probs(self, params, h):
        return jax.nn.log_softmax(h @ params["W"] + params["b"], axis=-1)

    def log_prob(self, params, h, targets):
        logits = h @ params["W"] + params["b"]
        picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    def sample(self, params, h, key):
        return jax.random.categorical(key, h @ params["W"] + params["b"], axis=-1).astype(_I32)


class WordModel(NamedTuple):
    """Embedding -> LSTM -> output layer, as pure functions of ``params = {"embed", "rnn", "out"}``.

    * ``init(key) -> params``: ``embed (V, D)``, ``rnn`` the ``jr.lstm(H)`` params, ``out`` the output
      layer's (full: ``{"W": (H, V), "b": (V,)}``; hierarchical: ``{"W": (V-1, H), "b": (V-1,)}``).
    * ``hidden(params, ids, carry=None, key=None) -> (carry, hs)``: ``ids (T, *batch)`` int,
      ``hs (T, *batch, H)``; ``key`` turns on the dropout (training).
    * ``step(params, carry, token) -> (carry, h)``: one token ``(*batch,)``.
    * ``initial_carry(params, batch_shape)``.
    * ``out``: the output layer, with ``log_prob(out_params, h, targets)``, ``log_probs``, ``sample``.
    * ``softmax`` (``"full"``, ``"huffman"``, ``"balanced"``), ``vocab_size``, ``tree`` (``None`` for
      the full softmax).
    """

    init: Callable[[jax.Array], Any]
    hidden: Callable[..., tuple[Any, jax.Array]]
    step: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
    initial_carry: Callable[[Any, tuple], Any]
    out: Any
    softmax: str
    vocab_size: int
    tree: Any

    def log_prob(self, params, h, targets):
        """``log p(targets | h)``, ``(*batch)``."""
        return self.out.log_prob(params["out"], h, targets)


@functools.cache
def _lstm(hidden: int) -> jr.Cell:
    return jr.lstm(hidden)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_trunk(key, v: int, d: int, h: int):
    """The embedding and the LSTM's parameters: one compiled program shared by every output layer."""
    k_e, k_rnn = jax.random.split(key)
    return {"embed": jax.random.normal(k_e, (v, d), _F32), "rnn": _lstm(h).init(k_rnn, d)}


def build_model(softmax: str, counts, embed: int, hidden: int, dropout: float = 0.0) -> WordModel:
    """The word LM over ``V = len(counts)`` words with the output layer ``softmax``.

    Maths: ``x_t = E[w_t]``; ``(h_t, c_t) = LSTM(h_{t-1}, c_{t-1}, x_t)`` (forget-gate bias 1);
    ``p(w_{t+1} | w_<=t) = softmax(h_t W + b)`` (full) or the product of the decisions on
    ``w_{t+1}``'s path (hierarchical, the tree built from ``counts`` for ``"huffman"``). ``E ~ N(0, 1)``;
    the LSTM with jaxrnn's defaults (LeCun-normal inputs, orthogonal ``W_hh``); output rows
    ``N(0, 1/H)``, biases 0. ``dropout``: inverted dropout of the rate on the non-recurrent connections
    (``x_t`` into the LSTM and ``h_t`` into the output layer, Zaremba et al.'s recipe), only when
    ``hidden`` is given a ``key`` (training).
    """
    if softmax not in SOFTMAXES:
        raise ValueError(f"build_model: softmax must be one of {', '.join(SOFTMAXES)}; got {softmax!r}")
    counts = np.asarray(counts)
    v = counts.shape[0]
    d = tasks._int("build_model", "embed", embed)
    h = tasks._int("build_model", "hidden", hidden)
    if softmax == "full":
        tree, out = None, _Full(v)
    else:
        tree = jr.softmax.huffman_tree(counts) if softmax == "huffman" else jr.softmax.balanced_tree(v)
        out = jr.softmax.hierarchical(tree)
    cell = _lstm(h)
    init_out = jax.jit(out.init, static_argnums=1)

    def init(key):
        k_trunk, k_out = jax.random.split(key)
        return {**_init_trunk(k_trunk, v, d, h), "out": init_out(k_out, h)}

    def drop(x, key):
        if key is None or not dropout:
            return x
        keep = jax.random.bernoulli(key, 1.0 - dropout, x.shape)
        return jnp.where(keep, x / (1.0 - dropout), 0.0).astype(x.dtype)

    def hidden_fn(params, ids, carry=None, key=None):
        k_in, k_out = jax.random.split(key) if key is not None else (None, None)
        carry, hs = jr.unroll(cell, params["rnn"], drop(params["embed"][ids], k_in), carry)
        return carry, drop(hs, k_out)

    def step(params, carry, token):
        carry = cell.step(params["rnn"], carry, params["embed"][token])
        return carry, cell.output(carry)

    def initial_carry(params, batch_shape=()):
        return cell.initial_carry(params["rnn"], batch_shape)

    return WordModel(init, hidden_fn, step, initial_carry, out, softmax, v, tree)


def param_count(tree) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------------
# evaluation


class Streams(NamedTuple):
    """The held-out sequences laid out for :func:`stream_nll` (made by :func:`stream_layout`).

    ``inp``, ``tgt`` and ``mask`` are ``(n_chunks, chunk, W)``: the ``W`` streams of all sequences side
    by side, time-major, cut into chunks; ``owner (W,)`` says which sequence each stream belongs to and
    ``counts`` how many predictions each sequence has (``N - 1``)."""

    inp: np.ndarray
    tgt: np.ndarray
    mask: np.ndarray
    owner: np.ndarray
    counts: np.ndarray


def stream_layout(splits: Sequence, streams: int = 64, chunk: int = 64) -> Streams:
    """Lay out the id sequences ``splits`` as contiguous streams for :func:`stream_nll`.

    Each sequence's ``N - 1`` (input, target) pairs ``ids[p] -> ids[p + 1]`` are cut into
    ``S = min(streams, N - 1)`` contiguous streams of ``L = ceil((N - 1) / S)`` pairs (the last one
    shorter); all streams of all sequences run side by side, ``chunk`` steps at a time.
    """
    s_max = tasks._int("stream_layout", "streams", streams)
    seqs = [np.asarray(ids, np.int32).reshape(-1) for ids in splits]
    if not seqs or any(len(ids) < 2 for ids in seqs):
        raise ValueError(
            f"stream_layout: give sequences of at least 2 tokens; got lengths {[len(i) for i in seqs]}"
        )
    layouts = [(len(ids) - 1, min(s_max, len(ids) - 1)) for ids in seqs]
    longest = max(-(-n // s) for n, s in layouts)
    c = max(1, min(chunk, longest))
    padded = c * -(-longest // c)
    t = np.arange(padded)[:, None]
    inp, tgt, mask, owner = [], [], [], []
    for k, (ids, (n, s)) in enumerate(zip(seqs, layouts)):
        pos = np.arange(s)[None, :] * -(-n // s) + t  # (padded, S)
        valid = (pos < n) & (t < -(-n // s))
        pos = np.where(valid, pos, 0)
        inp.append(ids[pos])
        tgt.append(ids[pos + 1])
        mask.append(valid)
        owner += [k] * s
    shape = (padded // c, c, len(owner))
    inp, tgt, mask = (np.concatenate(a, axis=1).reshape(shape) for a in (inp, tgt, mask))
    return Streams(inp, tgt, mask, np.asarray(owner, np.int32), np.array([n for n, _ in layouts]))


def stream_nll(model: WordModel, params, streams: Streams) -> jax.Array:
    """The mean ``-ln p`` over EVERY prediction of each sequence of ``streams`` (:func:`stream_layout`),
    ``(len(splits),)``, each stream from the zero state with the state carried along it; ``exp`` of it is
    the perplexity. Traceable (``jax.jit`` it, or call it inside a jitted function). In plain Python, per
    sequence::

        total = 0.0
        for s in range(S):
            carry = model.initial_carry(params, ())
            for p in range(s * L, min((s + 1) * L, N - 1)):
                carry, h = model.step(params, carry, ids[p])
                total -= model.log_prob(params, h, ids[p + 1])
        return total / (N - 1)
    """

    def body(carry, xs):
        x, y, m = xs
        carry, hs = model.hidden(params, x, carry)
        return carry, jnp.sum(jnp.where(m, -model.log_prob(params, hs, y), 0.0), axis=0)

    width = streams.owner.shape[0]
    xs = (jnp.asarray(streams.inp), jnp.asarray(streams.tgt), jnp.asarray(streams.mask))
    _, sums = jax.lax.scan(body, model.initial_carry(params, (width,)), xs)
    per_stream = jnp.sum(sums, axis=0)  # (W,)
    per_split = jax.ops.segment_sum(per_stream, jnp.asarray(streams.owner), len(streams.counts))
    return per_split / jnp.asarray(streams.counts, per_split.dtype)


def generate(model: WordModel, params, prime_ids, key, n: int) -> np.ndarray:
    """``n`` word ids sampled after ``prime_ids`` (at least one), each from ``p(. | h)`` at temperature
    1 by ``model.out.sample`` (the hierarchical models walk their tree) and fed back in."""
    prime = jnp.asarray(np.asarray(prime_ids, np.int32).reshape(-1))
    if prime.shape[0] < 1:
        raise ValueError("generate: prime_ids must hold at least one token")

    @jax.jit
    def run(params, prime, key):
        carry, hs = model.hidden(params, prime[:, None])
        h = hs[-1]

        def body(state, k):
            carry, h = state
            tok = model.out.sample(params["out"], h, k)
            carry, h = model.step(params, carry, tok)
            return (carry, h), tok[0]

        _, toks = jax.lax.scan(body, (carry, h), jax.random.split(key, n))
        return toks

    return np.asarray(run(params, prime, key))


def output_memory(model: WordModel, params, n: int) -> dict[str, int | None]:
    """Bytes of the output layer's loss-and-gradient on ``n`` predictions (one update's ``B T``).

    * ``analytic_bytes``: the buffers that grow with ``n`` -- full: float32 logits and their gradient,
      ``2 * 4 n V``; hierarchical (``log_prob`` scans the tree's ``D`` levels, rematerialising each in
      the backward pass): one level's gathered rows ``W[node]`` and their gradient, ``2 * 4 n H``, plus
      the path columns (node and sign int32, mask bool), ``9 n D``;
    * ``xla_temp_bytes``: XLA's temporary buffers for ``jax.value_and_grad`` of the mean NLL in the
      output parameters and ``h (n, H)``, from ``compile().memory_analysis()`` (``None`` where the
      backend does not report it).
    """
    out_params = params["out"]
    hidden = params["rnn"]["W_hh"].shape[0]
    v = model.vocab_size
    if model.tree is None:
        analytic = 2 * 4 * n * v
    else:
        analytic = 2 * 4 * n * hidden + 9 * n * model.tree.depth
    h = jax.ShapeDtypeStruct((n, hidden), _F32)
    y = jax.ShapeDtypeStruct((n,), _I32)
    loss = lambda p, h, y: -jnp.mean(model.out.log_prob(p, h, y))
    try:
        stats = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(out_params, h, y).compile()
        temp = stats.memory_analysis()
        temp = None if temp is None else int(temp.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 -- a backend without memory statistics
        temp = None
    return {"analytic_bytes": int(analytic), "xla_temp_bytes": temp}


def time_updates(updates: dict[str, Callable], states: dict[str, Any], steps: int, rounds: int):
    """Seconds per update of each jitted ``update(state, step) -> state``: one warm-up call each (the
    compile), then ``rounds`` rounds that time ``steps`` calls of every update in turn; returns
    ``{name: [seconds per update of each round]}``."""
    times: dict[str, list[float]] = {k: [] for k in updates}
    for name, update in updates.items():
        jax.block_until_ready(update(states[name], np.int32(0)))
    for _ in range(rounds):
        for name, update in updates.items():
            state = states[name]
            t0 = time.perf_counter()
            for i in range(steps):
                state = update(state, np.int32(i + 1))
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - t0) / steps)
    return times


# --------------------------------------------------------------------------------------------------
# main


def _load_corpus(config: Config) -> WordCorpus:
    what = f"--text {config.text}" if config.text else f"--corpus {config.corpus}"
    read = {"stdlib": tasks.stdlib_corpus, "modules": tasks.default_corpus}[config.corpus]
    try:
        text = tasks.read_text(config.text) if config.text else read()
    except ValueError as e:
        raise runner.UsageError(f"{what}: {e}") from None
    corpus = make_corpus(
        text, config.vocab, config.min_count, config.valid_fraction, config.test_fraction,
        config.lowercase, config.eos,
    )  # fmt: skip
    for split in ("train", "valid", "test"):
        k = len(getattr(corpus, split))
        if k < config.seq_length + 1:
            raise runner.UsageError(
                f"{what}: the {split} split has {k} tokens, fewer than --seq-length + 1 = "
                f"{config.seq_length + 1}; use a longer text or a shorter --seq-length"
            )
    if len(corpus.words) < 2:
        raise runner.UsageError(f"{what}: the vocabulary has a single word; use a longer text")
    return corpus


def _optimizer(config: Config):
    opt = optax.adam(config.lr)
    return opt if config.clip is None else optax.chain(optax.clip_by_global_norm(config.clip), opt)


def _fmt_memory(analytic: int, xla: int | None) -> str:
    """``"31.9 / 31.9 MiB"``: both in the unit (KiB or MiB) of the larger."""
    scale, unit = (2**20, "MiB") if max(analytic, xla or 0) >= 2**20 else (2**10, "KiB")
    return f"{analytic / scale:.1f} / " + ("n/a" if xla is None else f"{xla / scale:.1f}") + f" {unit}"


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def _fmt(v, digits: int = 1) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """The comparison: one line per model (and the unigram / uniform references). A tree's label gives
    its depth ``D`` and its mean code length over the training tokens; "out-layer mem" is the output
    layer's loss-and-gradient buffers per update (:func:`output_memory`: calculated / XLA's)."""
    header = ["model", "test ppl", "valid ppl", "tokens/s", "out-layer mem (calc / XLA)", "params (out)"]
    lines = []
    for r in rows:
        if r.get("reference"):
            lines.append([r["label"], _fmt(r["test_ppl"]), _fmt(r["valid_ppl"]), "", "", ""])
            continue
        mem = _fmt_memory(r["memory"]["analytic_bytes"], r["memory"]["xla_temp_bytes"])
        params = f"{_fmt_count(r['params'])} ({_fmt_count(r['out_params'])})"
        lines.append(
            [r["label"], _fmt(r["test_ppl"]), _fmt(r["valid_ppl"]), f"{r['tokens_per_s']:,.0f}", mem, params]
        )
    widths = [max(len(c) for c in col) for col in zip(header, *lines)]
    fmt = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def mean_code_length(tree, counts) -> float:
    """``sum_w counts_w len_w / sum_w counts_w``: the decisions per training token on ``tree``."""
    counts = np.asarray(counts, np.float64)
    return float((counts * np.asarray(tree.code_lengths)).sum() / counts.sum())


def _label(model: WordModel, counts) -> str:
    if model.tree is None:
        return "full softmax"
    return f"{model.softmax} (depth {model.tree.depth}, mean {mean_code_length(model.tree, counts):.1f})"


def plot_summary(runs: list[dict], path: str, title: str = "", throughput: str = "") -> str:
    """Held-out perplexity against updates, training tokens/s and output-layer memory, per softmax."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import ScalarFormatter

    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    names = [r["softmax"] for r in runs]
    colors = [f"C{i}" for i in range(len(runs))]
    ax = axes[0]
    for r, col in zip(runs, colors):
        steps = [row["step"] for row in r["curve"]]
        ax.plot(steps, [row["valid_ppl"] for row in r["curve"]], color=col, label=r["label"])
        ax.plot(steps, [row["ppl"] for row in r["curve"]], color=col, ls=":", alpha=0.6)
    ax.set_xlabel("updates")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title("validation split, every token (solid); training batch (dotted)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    ax.bar(names, [r["tokens_per_s"] for r in runs], color=colors)
    ax.set_ylabel("training tokens / s")
    ax.set_title(f"throughput ({throughput or 'compile excluded'})", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax = axes[2]
    x = np.arange(len(runs))
    ax.bar(x - 0.2, [r["memory"]["analytic_bytes"] / 2**20 for r in runs], 0.4, color=colors)
    handles = [Patch(facecolor="0.6", label="analytic")]
    xla = [r["memory"]["xla_temp_bytes"] for r in runs]
    if all(b is not None for b in xla):
        ax.bar(x + 0.2, [b / 2**20 for b in xla], 0.4, color=colors, alpha=0.45, hatch="//")
        handles.append(Patch(facecolor="0.6", alpha=0.45, hatch="//", label="XLA temporaries"))
    ax.set_xticks(x, names)
    ax.set_ylabel("MiB per update")
    ax.set_title("output layer: loss + gradient buffers", fontsize=9)
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.055, right=0.99, bottom=0.13, top=0.85, wspace=0.28)  # (tight_layout: slow)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


class WordLMResult(NamedTuple):
    """What :func:`main` returns: ``results`` (as in ``results.json``) and the run directory."""

    results: dict
    run_dir: str


def _loss(model: WordModel, params, inp, tgt, key=None):
    """Mean ``-ln p(tgt | inp)`` of windows ``inp, tgt (T, B)``, each from the zero state; ``key``:
    with dropout (training)."""
    _, hs = model.hidden(params, inp, key=key)
    return -jnp.mean(model.log_prob(params, hs, tgt))


def _train_one(config: Config, root: str, model: WordModel, corpus: WordCorpus, sample_fn, optimizer, log):
    """One :func:`experiments.runner.train` run of ``model``, scored on every held-out token: its entry
    of ``results["runs"]`` and its parameters."""
    b, t_len = config.batch_size, config.seq_length
    held_out = stream_layout([corpus.valid, corpus.test], config.eval_streams)

    def loss_fn(params, batch):
        loss = _loss(model, params, batch["inp"], batch["tgt"], batch["key"] if config.dropout else None)
        return loss, {"ppl": jnp.exp(loss)}

    def eval_fn(params, key):
        del key  # every held-out token, no randomness
        valid, test = stream_nll(model, params, held_out)
        return {"valid_nll": valid, "test_nll": test, "valid_ppl": jnp.exp(valid), "test_ppl": jnp.exp(test)}

    name = model.softmax
    label = _label(model, corpus.counts)
    run_config = dataclasses.replace(
        config, run_root=root, resume=sweep.resumable(root, name) if config.resume else ""
    )
    log(f"\n== {label}, V = {model.vocab_size}")
    t0 = time.perf_counter()
    try:
        result = runner.train(
            run_config, name=name, init_fn=model.init, loss_fn=loss_fn, sample_fn=sample_fn,
            optimizer=optimizer, eval_fn=eval_fn, batch_axes={"inp": 1, "tgt": 1, "key": None},
        )  # fmt: skip
    except runner.Diverged as e:  # recorded (scores NaN); reported at the end
        result = e.result
    train_s = time.perf_counter() - t0
    params = result.params
    usable = result.diverged_at is None or config.allow_divergence
    rows = result.rows
    final = rows[-1] if rows and usable else {}
    nll = {s: final.get(f"{s}_nll", math.nan) for s in ("valid", "test")}
    later = [r for r in rows[1:] if r["wall_s"] > rows[0]["wall_s"]]
    in_loop = (  # from the first logged step (compiles done) to the last: updates and logged evaluations
        (later[-1]["step"] - rows[0]["step"]) * b * t_len / (later[-1]["wall_s"] - rows[0]["wall_s"])
        if later
        else math.nan
    )
    run = {
        "softmax": name,
        "label": label,
        "run_dir": result.run_dir,
        "steps": result.step,
        "diverged_at": result.diverged_at,
        "train_wall_s": round(train_s, 1),
        "params": param_count(params),
        "out_params": param_count(params["out"]),
        "valid_nll": nll["valid"],
        "test_nll": nll["test"],
        "valid_ppl": math.exp(nll["valid"]),
        "test_ppl": math.exp(nll["test"]),
        "tokens_per_s_in_loop": in_loop,
        "memory": output_memory(model, params, b * t_len),
        "curve": [
            {
                k: r.get(k)
                for k in ("step", "loss", "ppl", "valid_nll", "test_nll", "valid_ppl", "test_ppl", "wall_s")
            }
            for r in rows
        ],
    }
    if model.tree is not None:
        run["tree"] = {
            "kind": model.tree.kind,
            "depth": model.tree.depth,
            "mean_code_length_train": mean_code_length(model.tree, corpus.counts),
            "mean_code_length_uniform": float(np.mean(np.asarray(model.tree.code_lengths))),
        }
    log(f"{name}: valid perplexity {_fmt(run['valid_ppl'])}, test perplexity {_fmt(run['test_ppl'])}")
    return run, params, usable


def _throughput(config: Config, models: dict, runs: list[dict], sample_fn, optimizer, log) -> None:
    """Fill in each run's ``tokens_per_s``: :func:`time_updates` of the same update the training loop
    jits (batch, gradient, optimiser), from fresh parameters; with ``--bench-steps 0`` the training
    loop's own rate."""
    tokens = config.batch_size * config.seq_length
    if not config.bench_steps:
        for run in runs:
            run["tokens_per_s"] = run["tokens_per_s_in_loop"]
            run["tokens_per_s_source"] = "training loop, first to last logged step"
        return
    data_key = jax.random.PRNGKey(config.seed + 1)
    updates, states = {}, {}
    for run in runs:
        model = models[run["softmax"]]

        def update(state, step, model=model):
            params, opt_state = state
            batch = sample_fn(jax.random.fold_in(data_key, step))
            key = batch["key"] if config.dropout else None
            grads = jax.grad(lambda p: _loss(model, p, batch["inp"], batch["tgt"], key))(params)
            upd, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, upd), opt_state

        params = model.init(jax.random.PRNGKey(config.seed))
        updates[run["softmax"]] = jax.jit(update)
        states[run["softmax"]] = (params, optimizer.init(params))
    log(f"\ntiming {config.bench_rounds} x {config.bench_steps} updates per model ...")
    times = time_updates(updates, states, config.bench_steps, config.bench_rounds)
    for run in runs:
        run["seconds_per_update"] = [round(t, 5) for t in times[run["softmax"]]]
        run["tokens_per_s"] = tokens / float(np.min(times[run["softmax"]]))
        run["tokens_per_s_source"] = (
            f"fastest of {config.bench_rounds} rounds of {config.bench_steps} updates, compile excluded"
        )


def main(argv=None):
    """Train one word LM per ``--softmax``; score, time and sample them; print the table and write
    ``results.json``, ``samples.txt`` and ``word_lm.png``. Returns a :class:`WordLMResult`."""
    config = runner.config_cli(Config, PRESETS, argv, name=NAME, description=__doc__)
    corpus = _load_corpus(config)
    v = len(corpus.words)
    source = (
        config.text
        or {
            "stdlib": "stdlib: every top-level module (tasks.stdlib_corpus)",
            "modules": "stdlib: " + ",".join(tasks.DEFAULT_CORPUS_MODULES),
        }[config.corpus]
    )
    log = lambda msg: print(msg, file=sys.stderr if config.quiet else sys.stdout, flush=True)
    b, t_len = config.batch_size, config.seq_length
    splits = f"{len(corpus.train)} / {len(corpus.valid)} / {len(corpus.test)} train / valid / test tokens"
    vocab_text = (
        f"V = {v} ({corpus.train_types} training types, --vocab {config.vocab}, "
        f"--min-count {config.min_count}); "
        f"<unk> rate: train {corpus.oov_rate('train'):.2%}, valid {corpus.oov_rate('valid'):.2%}, "
        f"test {corpus.oov_rate('test'):.2%}"
    )
    log(f"corpus {source}: {splits}; {vocab_text}")
    root = sweep.start(config, NAME)
    train_ids = jnp.asarray(corpus.train)

    def sample_fn(key):  # B random windows of the training split, time-major (T, B)
        starts = jax.random.randint(key, (b,), 0, train_ids.shape[0] - t_len, dtype=_I32)
        idx = starts[None, :] + jnp.arange(t_len, dtype=_I32)[:, None]
        return {"inp": train_ids[idx], "tgt": train_ids[idx + 1], "key": jax.random.fold_in(key, 1)}

    optimizer = _optimizer(config)
    models, trained, runs = {}, {}, []
    for softmax in config.softmax:
        model = build_model(softmax, corpus.counts, config.embed, config.hidden, config.dropout)
        models[softmax] = model
        run, params, usable = _train_one(config, root, model, corpus, sample_fn, optimizer, log)
        runs.append(run)
        if usable:
            trained[softmax] = params
    _throughput(config, models, runs, sample_fn, optimizer, log)

    prime_ids = encode([EOS, *tokenize(config.prime, config.lowercase, eos=False)], corpus.words)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1_000_003)
    samples = {
        name: detokenize(generate(models[name], params, prime_ids, key, config.sample_length), corpus.words)
        for name, params in trained.items()
    }
    references = []
    for label, nll in (
        ("unigram (add-one)", {s: unigram_nll(corpus, s) for s in ("valid", "test")}),
        ("uniform (V)", {s: math.log(v) for s in ("valid", "test")}),
    ):
        references.append(
            {"label": label, "reference": True, **{f"{s}_ppl": math.exp(x) for s, x in nll.items()}}
        )
    table = format_table(runs + references)
    model_text = f"embedding {config.embed} -> LSTM {config.hidden} -> output layer"
    out = {
        "experiment": NAME,
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "corpus": {
            "source": source,
            "tokenizer": f"re.findall({TOKEN_PATTERN!r}) per line"
            + (", lowercased" if config.lowercase else ", case kept")
            + (f", {EOS} after every line with a token" if config.eos else ""),
            "train_tokens": len(corpus.train),
            "valid_tokens": len(corpus.valid),
            "test_tokens": len(corpus.test),
            "train_types": corpus.train_types,
            "vocab_size": v,
            "oov_rate": {s: corpus.oov_rate(s) for s in ("train", "valid", "test")},
        },
        "model": model_text,
        "batch_tokens": b * t_len,
        "runs": runs,
        "references": references,
        "prime": config.prime,
        "samples": samples,
        "table": table,
    }
    results_path = os.path.join(root, "results.json")
    sweep.write_json(results_path, out)
    with open(os.path.join(root, "samples.txt"), "w", encoding="utf-8") as f:
        for name, text in samples.items():
            f.write(f"--- {name}, temperature 1, primed with {config.prime!r} ---\n{config.prime} {text}\n\n")
    corpus_name = os.path.basename(config.text) if config.text else f"stdlib sources ({config.corpus})"
    title = f"word LM on {corpus_name}: V = {v}, LSTM {config.hidden}, {config.steps} updates of {b}x{t_len}"
    figure = plot_summary(runs, os.path.join(root, "word_lm.png"), title, runs[0]["tokens_per_s_source"])
    print(f"\ncorpus: {source}\n  {splits}\n  {vocab_text}")
    print(f"model: {model_text}; {config.steps} updates of {b}x{t_len} tokens")
    print(
        f"output-layer memory: the loss-and-gradient buffers of the {b * t_len} predictions of one update\n"
    )
    print(table)
    for name, text in samples.items():
        print(f"\n--- sample, {name}, temperature 1, primed with {config.prime!r} ---\n{config.prime} {text}")
    print(f"\nplot: {figure}\nresults: {results_path}")
    diverged = [f"{r['softmax']} at step {r['diverged_at']}" for r in runs if r["diverged_at"] is not None]
    runner.report_divergence(diverged, len(runs), config, results_path)
    return WordLMResult(out, root)


if __name__ == "__main__":
    runner.run_cli(main)
