"""Character-level language model (Karpathy's char-rnn): held-out bits/char and samples.

A stacked LSTM predicts every next character of a text; it is scored in bits per character on a
held-out split and samples text at a temperature.

Model: one-hot characters (or a learned embedding, ``--embed D``) -> ``--layers`` LSTMs of ``--hidden``
units (:func:`jaxrnn.stack` of :func:`jaxrnn.lstm`, forget-gate bias 1 as in char-rnn, inverted dropout
``--dropout`` between layers) -> a linear readout to the vocabulary; softmax cross-entropy at every
step. Training windows of ``--seq-length`` characters start at random offsets of the training split
(no state carried between windows); Adam with the global gradient norm clipped to ``--clip``.

Evaluation:

* while training: bits/char (and the fraction of wrong argmax predictions) on a FIXED set of
  ``--eval-windows`` held-out windows, each from a zero state, and the spectral radius of each gate's
  block of the first layer's ``W_hh`` (``rho`` = the candidate block ``g``, the tanh recurrence);
* at the end: bits/char over EVERY character of each split, read as ``--eval-streams`` contiguous
  streams with the state carried along each (:func:`streamed_bpc`), next to the unigram reference
  (the frequency model of the training split: its entropy and its held-out cross-entropy) and the
  uniform ``log2 V``; then ``--sample-length`` characters sampled after ``--prime`` at each
  ``--temperatures`` (0: greedy), printed and written to ``samples.txt``.

The default corpus is real text present on every machine: the Python source of a fixed list of
standard-library modules (:data:`experiments.tasks.DEFAULT_CORPUS_MODULES`, ~0.74 MB on CPython 3.11,
97 distinct characters), split 90/10. ``--text FILE`` trains on any UTF-8 file instead (e.g. Karpathy's
tiny-shakespeare ``input.txt``).

Published reference points (char-rnn's ``train.lua`` and README; nanoGPT's README): char-rnn's defaults
are a 2-layer LSTM of 128 units, seq_length 50, batch 50, RMSprop lr 2e-3 (decay 0.97 per epoch after
epoch 10), gradients clamped element-wise to 5, 95/5 split; its README's example checkpoints reach
validation losses of 2.07 nats/char (0.95 epochs) and 1.40 nats/char = 2.01 bits/char (30 epochs) on
tiny-shakespeare -- illustrative, not a benchmark. nanoGPT's 10.7M-parameter transformer reaches 1.47
nats/char = 2.12 bits/char there; Pascanu et al. 2013 report 1.41-1.42 bits/char on character-level Penn
Treebank. Differences here: Adam instead of RMSprop, global-norm clipping instead of element-wise
clamping, random windows instead of truncated BPTT over the contiguous text.

Measured (2-core shared CPU dev machine, load ~4-5, ``nice -n 10``; jax 0.10.2, CPython 3.11 corpus):
``--preset quick`` (1x256 LSTM, 387k parameters, 2000 updates of 64x50 characters, 7.6 min wall in
all, 437 s of training) reaches **2.04 bits/char on every held-out character** (2.02 on the fixed
windows; 1.67 on the training split) against 4.33 for the unigram model held out (entropy 4.47 on
the training split) and 6.60 for uniform guessing. Its samples at temperature 0.5 are
Python-shaped (indented ``if isinstance(obj, ...):`` blocks, ``self.write(", ")``).

    python -m experiments.char_lm --preset quick                 # 2-core CPU, minutes
    python -m experiments.char_lm --preset paper                 # 3x512 LSTM, accelerator
    python -m experiments.char_lm --preset quick --text input.txt --prime "ROMEO:"

Training is :func:`experiments.runner.train`'s (checkpoints, ``--resume``); a training loss that becomes
NaN or infinite stops the run with one line and exit status 3 (no final evaluation, no samples),
unless ``--allow-divergence``; a bad option is one line and exit status 2.

References: A. Karpathy, char-rnn (github.com/karpathy/char-rnn, ``train.lua``, ``sample.lua``) and "The
Unreasonable Effectiveness of Recurrent Neural Networks" (2015); the RNN language model of Machine
Learning Lecture 17 "Recurrent Neural Networks", RWTH Aachen; A. Karpathy, nanoGPT (README,
``shakespeare_char``); R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent
neural networks" (ICML 2013); S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory" (1997); F. Gers et
al., "Learning to Forget" (2000).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn as jr
from experiments import plots, runner, tasks

__all__ = [
    "CharModel",
    "Config",
    "PRESETS",
    "build_model",
    "generate",
    "main",
    "streamed_bpc",
    "unigram_reference",
]

NAME = "char_lm"
_LN2 = math.log(2.0)
GATES = ("i", "f", "g", "o")  # jr.lstm's gate order in W_hh's columns


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    """Defaults are char-rnn's (``train.lua``): 2x128 LSTM, seq 50, batch 50, lr 2e-3, clip 5."""

    batch_size: int = runner.arg(50, "global batch size: windows per update (char-rnn: 50)", min=1)
    text: str = runner.arg("", "training text (a UTF-8 file); empty: the default standard-library corpus")
    valid_fraction: float = runner.arg(0.1, "the last fraction of the text held out for evaluation")
    hidden: int = runner.arg(128, "LSTM units per layer (char-rnn: 128)", min=1)
    layers: int = runner.arg(2, "stacked LSTM layers (char-rnn: 2)", min=1)
    embed: int = runner.arg(0, "learned character embedding width; 0: one-hot inputs (char-rnn)", min=0)
    dropout: float = runner.arg(0.0, "dropout rate between LSTM layers (char-rnn: 0)", min=0.0)
    seq_length: int = runner.arg(50, "characters per training window (BPTT length)", min=1)
    lr: float = runner.arg(2e-3, "Adam learning rate", min=0.0)
    lr_decay: float = runner.arg(
        1.0, "multiply the learning rate by this every --lr-decay-every updates", min=0.0
    )
    lr_decay_every: int = runner.arg(1000, "updates between learning-rate decays", min=1)
    lr_decay_start: int = runner.arg(
        0, "updates before the decay schedule starts (first decay at START + EVERY)", min=0
    )
    clip: float | None = runner.arg(
        5.0, "clip the global gradient norm to this ('none': no clipping)", min=0.0
    )
    eval_windows: int = runner.arg(128, "fixed held-out windows scored at each logged step", min=1)
    eval_streams: int = runner.arg(128, "contiguous streams for the final pass over every character", min=1)
    full_eval: bool = runner.arg(True, "score every character of both splits at the end")
    sample_length: int = runner.arg(400, "characters to sample at the end", min=1)
    prime: str = runner.arg("def ", "text that primes the sampler (at least one character)")
    temperatures: tuple[float, ...] = runner.arg((0.5, 1.0), "sampling temperatures (0: greedy)", min=0.0)

    def __post_init__(self):
        super().__post_init__()
        if not self.dropout < 1.0:
            raise runner.UsageError(f"--dropout must be < 1; got {self.dropout}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise runner.UsageError(f"--valid-fraction must be in (0, 1); got {self.valid_fraction}")
        if not self.prime:
            raise runner.UsageError("--prime must hold at least one character")


PRESETS = {
    # 2-core CPU, ~5-10 minutes: one wide layer learns fastest per second of CPU.
    "quick": dict(
        hidden=256, layers=1, seq_length=50, batch_size=64, steps=2000, lr=3e-3, lr_decay=0.5,
        lr_decay_every=500, lr_decay_start=500, log_every=100, checkpoint_every=500,
    ),
    # Karpathy's large char-rnn models (README / blog post): 3x512 LSTM, seq 100, batch 100, dropout
    # 0.5, lr 2e-3 decayed by 0.97 per "epoch" (here every 1000 updates from update 11000 on).
    "paper": dict(
        hidden=512, layers=3, dropout=0.5, seq_length=100, batch_size=100, steps=30000, lr=2e-3,
        lr_decay=0.97, lr_decay_every=1000, lr_decay_start=10000, log_every=500, checkpoint_every=2000,
        eval_windows=512,
    ),
    # tests: a few updates of a tiny model (give --text a small file).
    "smoke": dict(
        hidden=8, layers=2, seq_length=8, batch_size=4, steps=4, log_every=2, checkpoint_every=4,
        eval_windows=4, eval_streams=3, sample_length=12,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# model


class CharModel(NamedTuple):
    """A character model: embedding -> stacked LSTM -> linear readout (pure functions).

    * ``init(key) -> params``: ``{"rnn": (layer params, ...), "W_out": (H, V), "b_out": (V,)}`` and, with
      an embedding, ``"embed": (V, D)``.
    * ``apply(params, xs, carry=None, key=None) -> (carry, logits)``: ``xs (T, *batch, V)`` one-hot,
      ``logits (T, *batch, V)``; ``key`` turns on dropout between layers (training).
    * ``step(params, carry, token) -> (carry, logits)``: one character, ``token (*batch,)`` int ids.
    * ``initial_carry(params, batch_shape) -> carry``: zeros, one ``LSTMCarry`` per layer.
    * ``vocab_size``.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., tuple[Any, jax.Array]]
    step: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
    initial_carry: Callable[[Any, tuple], Any]
    vocab_size: int


def build_model(vocab_size: int, hidden: int, layers: int, embed: int = 0, dropout: float = 0.0) -> CharModel:
    """The char-rnn model as a :class:`CharModel`.

    Maths, for one-hot inputs ``x_t`` (``E = I`` without an embedding)::

        h^0_t = x_t E;   h^l_t = LSTM_l(h^l_{t-1}, drop(h^{l-1}_t)), l = 1..L;   logits_t = h^L_t W + b

    ``apply`` runs :func:`jaxrnn.stack` over the whole sequence (one ``lax.scan`` per layer); ``step``
    is the same maps for one character with each cell's ``step`` (no dropout), used for priming and
    sampling. Readout ``W ~ N(0, 1/H)``, ``b = 0``; embedding ``E ~ N(0, 1)``.

    Args:
      vocab_size: ``V``.
      hidden: ``H``, units per layer.
      layers: ``L``.
      embed: ``D``, a learned embedding width; 0 feeds the one-hot vectors to the first LSTM.
      dropout: inverted-dropout rate between layers (only when ``apply`` gets a ``key``).

    Returns:
      A :class:`CharModel`.
    """
    v = tasks._int("build_model", "vocab_size", vocab_size)
    h = tasks._int("build_model", "hidden", hidden)
    n_layers = tasks._int("build_model", "layers", layers)
    d = tasks._int("build_model", "embed", embed, minimum=0)
    cell = jr.lstm(h)
    rnn = jr.stack(*([cell] * n_layers), dropout=dropout)

    def init(key):
        k_e, k_rnn, k_out = jax.random.split(key, 3)
        params = {
            "rnn": rnn.init(k_rnn, d or v),
            "W_out": jax.random.normal(k_out, (h, v), jnp.float32) / math.sqrt(h),
            "b_out": jnp.zeros((v,), jnp.float32),
        }
        if d:
            params["embed"] = jax.random.normal(k_e, (v, d), jnp.float32)
        return params

    def inputs(params, xs):
        return xs @ params["embed"] if "embed" in params else xs

    def apply(params, xs, carry=None, key=None):
        carry, ys = rnn.apply(params["rnn"], inputs(params, xs), carry, key=key)
        return carry, ys @ params["W_out"] + params["b_out"]

    def step(params, carry, token):
        x = inputs(params, jax.nn.one_hot(token, v, dtype=params["W_out"].dtype))
        new = []
        for p, c in zip(params["rnn"], carry):
            c = cell.step(p, c, x)
            x = cell.output(c)
            new.append(c)
        return tuple(new), x @ params["W_out"] + params["b_out"]

    def initial_carry(params, batch_shape=()):
        return rnn.initial_carry(params["rnn"], batch_shape)

    return CharModel(init, apply, step, initial_carry, v)


# --------------------------------------------------------------------------------------------------
# evaluation


def _stream_layout(n_chars: int, streams: int, chunk: int):
    """``(S, L, n_chunks)``: ``S`` streams of ``L`` predictions (a multiple of ``chunk``) cover ``n``."""
    s = max(1, min(streams, n_chars))
    length = -(-n_chars // s)
    c = max(1, min(chunk, length))
    n_chunks = -(-length // c)
    return s, c, n_chunks


def streamed_bpc(model: CharModel, params, ids, streams: int = 128, chunk: int = 256) -> jax.Array:
    """Bits per character over EVERY character of ``ids`` (all ``N - 1`` predictions), state carried.

    The ``N - 1`` (input, target) pairs ``(ids[p], ids[p + 1])`` are cut into ``S = min(streams, N - 1)``
    contiguous streams of ``L = ceil((N - 1) / S)`` pairs (the last one shorter); each stream starts
    from the zero state and carries it through all its characters, so only the first characters of
    each stream lack context (char-rnn's evaluation carries the state the same way). The streams run
    side by side, ``chunk`` steps per ``model.apply`` inside one ``lax.scan``, so memory is
    ``O(S * chunk * V)`` whatever ``N``. In plain Python::

        total = 0.0
        for s in range(S):
            carry = model.initial_carry(params, ())
            for p in range(s * L, min((s + 1) * L, N - 1)):
                carry, logits = model.step(params, carry, ids[p])
                total -= log2(softmax(logits)[ids[p + 1]])
        return total / (N - 1)

    Args:
      model: a :class:`CharModel`.
      params: its parameters.
      ids: ``(N,)`` int character ids, ``N >= 2`` (a NumPy array: the layout is static).
      streams: ``S``, parallel streams (the batch of the pass).
      chunk: steps per ``apply`` call.

    Returns:
      A float32 scalar, mean ``-log2 p`` per predicted character.
    """
    ids = np.asarray(ids, np.int32).reshape(-1)
    n = ids.shape[0] - 1
    if n < 1:
        raise ValueError(f"streamed_bpc: ids must hold at least 2 characters; got {ids.shape[0]}")
    s, c, n_chunks = _stream_layout(n, tasks._int("streamed_bpc", "streams", streams), chunk)
    length = c * n_chunks
    pos = np.arange(s)[None, :] * (-(-n // s)) + np.arange(length)[:, None]  # (L_pad, S)
    valid = (pos < n) & (np.arange(length)[:, None] < -(-n // s))
    pos = np.where(valid, pos, 0)
    inp = ids[pos].reshape(n_chunks, c, s)
    tgt = ids[pos + 1].reshape(n_chunks, c, s)
    mask = valid.reshape(n_chunks, c, s)

    def body(carry, xs):
        x, y, m = xs
        carry, logits = model.apply(params, jax.nn.one_hot(x, model.vocab_size, dtype=jnp.float32), carry)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
        return carry, jnp.sum(jnp.where(m, ce, 0.0))

    carry0 = model.initial_carry(params, (s,))
    _, sums = jax.lax.scan(body, carry0, (jnp.asarray(inp), jnp.asarray(tgt), jnp.asarray(mask)))
    return jnp.sum(sums) / n / _LN2


def unigram_reference(corpus: tasks.CharCorpus) -> dict[str, float]:
    """The memoryless baselines of a corpus, in bits per character.

    * ``unigram_entropy_train``: ``H(p) = -sum_c p_c log2 p_c`` with ``p`` the character frequencies
      of the training split (what a frequency model scores on its own training text);
    * ``unigram_bpc_valid``: the held-out cross-entropy ``-(1/N) sum_t log2 q(x_t)`` of that model with
      add-one (Laplace) smoothing ``q_c = (n_c + 1) / (N_train + V)``;
    * ``uniform_bpc``: ``log2 V``.

    An LSTM that scores below ``unigram_bpc_valid`` has learned something from the context.
    """
    v = len(corpus.vocab)
    counts = np.bincount(corpus.train, minlength=v).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    q = (counts + 1.0) / (counts.sum() + v)
    return {
        "unigram_entropy_train": float(-(p * np.log2(p)).sum()),
        "unigram_bpc_valid": float(-np.log2(q[corpus.valid]).mean()),
        "uniform_bpc": float(np.log2(v)),
    }


def generate(model: CharModel, params, vocab: str, prime: str, key, n: int, temperature: float) -> str:
    """``n`` characters sampled after ``prime`` at ``temperature`` (0: greedy), as text.

    The model reads ``prime[:-1]`` from the zero state (:meth:`CharModel.apply`), then
    :func:`experiments.tasks.sample` feeds ``prime[-1]`` and each sampled character back in. Characters
    of ``prime`` absent from the training text are read as the UNKNOWN id 0.
    """
    if not prime:
        raise ValueError("generate: prime must hold at least one character")
    ids = tasks.encode(prime, vocab)
    carry = model.initial_carry(params, (1,))
    if len(ids) > 1:
        xs = jax.nn.one_hot(jnp.asarray(ids[:-1])[:, None], model.vocab_size, dtype=jnp.float32)
        carry, _ = model.apply(params, xs, carry)
    out, _ = tasks.sample(model.step, params, carry, jnp.asarray(ids[-1:]), key, n, temperature)
    return tasks.decode(out[:, 0], vocab)


def _rho_method() -> str:
    return "eig" if jax.default_backend() == "cpu" else "power"


def _gate_radii(W_hh, hidden: int) -> dict[str, jax.Array]:
    """Spectral radius of each gate's ``(H, H)`` block of an LSTM's ``W_hh (H, 4H)``."""
    method = _rho_method()
    return {
        f"rho_{g}": jr.spectral_radius(W_hh[:, k * hidden : (k + 1) * hidden], method=method)
        for k, g in enumerate(GATES)
    }


def _fixed_windows(ids: np.ndarray, seq_length: int, n_windows: int):
    """``(inputs, targets)`` ``(T, n)`` int32: ``n`` evenly spaced windows of the held-out ids."""
    last = len(ids) - seq_length - 1
    starts = np.unique(np.linspace(0, last, n_windows).round().astype(np.int64))
    idx = starts[None, :] + np.arange(seq_length)[:, None]
    return ids[idx].astype(np.int32), ids[idx + 1].astype(np.int32)


# --------------------------------------------------------------------------------------------------
# main


def _load_task(config: Config) -> tasks.Task:
    try:
        text = tasks.read_text(config.text) if config.text else None
        return tasks.char_lm(None, config.seq_length, config.valid_fraction, text=text)
    except ValueError as e:
        what = f"--text {config.text}" if config.text else "the default corpus"
        raise runner.UsageError(f"{what}: {e}") from None


def _optimizer(config: Config):
    lr = config.lr
    if config.lr_decay != 1.0:
        lr = optax.exponential_decay(
            config.lr, config.lr_decay_every, config.lr_decay, transition_begin=config.lr_decay_start,
            staircase=True,
        )  # fmt: skip
    opt = optax.adam(lr)
    return opt if config.clip is None else optax.chain(optax.clip_by_global_norm(config.clip), opt)


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None):
    """Train the char-LM, score it, sample from it; returns the results dict (also ``results.json``)."""
    config = runner.config_cli(Config, PRESETS, argv, name=NAME, description=__doc__)
    task = _load_task(config)
    corpus = task.data
    v = len(corpus.vocab)
    model = build_model(v, config.hidden, config.layers, config.embed, config.dropout)
    hidden = config.hidden
    reference = unigram_reference(corpus)
    source = config.text or "stdlib: " + ",".join(tasks.DEFAULT_CORPUS_MODULES)
    if not config.quiet:
        print(
            f"corpus {source}: {len(corpus.train)} train / {len(corpus.valid)} held-out characters, "
            f"vocabulary {v}; unigram {reference['unigram_bpc_valid']:.3f} bits/char held out "
            f"(entropy {reference['unigram_entropy_train']:.3f}), uniform {reference['uniform_bpc']:.3f}",
            flush=True,
        )

    def sample_fn(key):
        k_data, k_drop = jax.random.split(key)
        return {"batch": task.sample(k_data, config.batch_size), "key": k_drop}

    def loss_fn(params, data):
        batch = data["batch"]
        key = data["key"] if config.dropout > 0 else None
        _, logits = model.apply(params, batch.xs, key=key)
        loss = task.loss(logits, batch)
        return loss, {"bpc": loss / _LN2, "error": task.error(logits, batch)}

    win_in, win_tgt = _fixed_windows(corpus.valid, config.seq_length, config.eval_windows)

    def eval_fn(params, key):
        del key  # the held-out windows are fixed
        xs = jax.nn.one_hot(jnp.asarray(win_in), v, dtype=jnp.float32)
        _, logits = model.apply(params, xs)
        tgt = jnp.asarray(win_tgt)
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tgt))
        radii = _gate_radii(params["rnn"][0]["W_hh"], hidden)
        return {
            "eval_loss": ce,
            "eval_bpc": ce / _LN2,
            "eval_error": jnp.mean(jnp.argmax(logits, -1) != tgt),
            "rho": radii["rho_g"],
            **radii,
        }

    batch_axes = {"batch": tasks.Batch(1, 1, 0), "key": None}
    t0 = time.perf_counter()
    result = runner.train(
        config, name=NAME, init_fn=model.init, loss_fn=loss_fn, sample_fn=sample_fn,
        optimizer=_optimizer(config), eval_fn=eval_fn, batch_axes=batch_axes,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    params = result.params
    final = result.rows[-1] if result.rows else {}

    results: dict[str, Any] = {
        "corpus": {"source": source, "train_chars": len(corpus.train), "valid_chars": len(corpus.valid)},
        "vocab_size": v,
        "model": f"{config.layers}x{hidden} LSTM" + (f", embedding {config.embed}" if config.embed else ""),
        "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "steps": result.step,
        "train_wall_s": round(train_s, 1),
        "eval_bpc_windows": final.get("eval_bpc"),
        "train_loss_last_batch_bpc": final.get("bpc"),
        **reference,
    }
    if config.full_eval:
        t1 = time.perf_counter()
        for split in ("train", "valid"):
            results[f"{split}_bpc"] = float(
                streamed_bpc(model, params, getattr(corpus, split), config.eval_streams)
            )
        results["full_eval_s"] = round(time.perf_counter() - t1, 1)

    samples = {}
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1_000_003)
    for i, temp in enumerate(config.temperatures):
        samples[str(temp)] = generate(
            model, params, corpus.vocab, config.prime, jax.random.fold_in(key, i), config.sample_length, temp
        )
    results["prime"] = config.prime
    results["samples"] = samples

    rows = [
        ("corpus", f"{source} ({len(corpus.train)} train / {len(corpus.valid)} held-out chars, V={v})"),
        ("model", f"{results['model']} ({results['params']} parameters), {result.step} updates"),
        ("uniform (log2 V)", f"{reference['uniform_bpc']:.3f} bits/char"),
        ("unigram entropy (train)", f"{reference['unigram_entropy_train']:.3f} bits/char"),
        ("unigram, held out", f"{reference['unigram_bpc_valid']:.3f} bits/char"),
        ("LSTM, fixed held-out windows", f"{results['eval_bpc_windows']:.3f} bits/char"),
    ]
    if config.full_eval:
        rows += [
            ("LSTM, train (every char)", f"{results['train_bpc']:.3f} bits/char"),
            ("LSTM, held out (every char)", f"{results['valid_bpc']:.3f} bits/char"),
        ]
    rows.append(("training time", f"{train_s:.1f} s"))
    print(_table(rows))
    for temp, text in samples.items():
        print(f"\n--- sample, temperature {temp}, primed with {config.prime!r} ---\n{config.prime}{text}")

    if result.run_dir is not None:
        with open(os.path.join(result.run_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        with open(os.path.join(result.run_dir, "samples.txt"), "w", encoding="utf-8") as f:
            for temp, text in samples.items():
                f.write(f"--- temperature {temp}, primed with {config.prime!r} ---\n{config.prime}{text}\n\n")
        plots.plot_run(result.run_dir, error_label=tasks.describe_error(task))
        print(f"\nrun directory: {result.run_dir}")
    return results


if __name__ == "__main__":
    runner.run_cli(main)
