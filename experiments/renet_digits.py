"""ReNet on the 8x8 digits: four RNNs sweeping the image, against a row-by-row RNN and a same-size MLP.

ReNet (Visin, Kastner, Cho, Matteucci, Courville & Bengio 2015, "ReNet: A Recurrent Neural Network Based
Alternative to Convolutional Networks"; the Politecnico di Milano lecture "Recurrent Neural Networks"
(Ciccone): "4 RNNs that scan the pixels of the image in different directions") replaces a convolution +
pooling layer by :func:`jaxrnn.renet`: the image is cut into non-overlapping patches, two RNNs sweep every
column of patches (down and up), two more sweep every row of their output (left and right), so every
feature of the output map depends on the whole image. The only image set that ships offline is
scikit-learn's 1797 8x8 digits, with the fixed split of :mod:`experiments.digits`
(:func:`experiments.tasks.load_digits_split`: 1438 training / 359 test images, pixels / 16).

Models (the same budget for each: ``--steps`` Adam updates on batches of ``--batch-size`` training images
drawn uniformly with replacement, softmax cross-entropy, learning rate ``--lr`` decayed to 0 by a cosine,
gradient-norm clipping at ``--clip``):

* **renet**: ``--layers`` ReNet layers of ``--cell`` (GRU or LSTM, forget-gate bias 1) with ``--hidden``
  units in each of the four RNNs, ``--patch`` x ``--patch`` patches (8x8x1 -> 4x4 x 2H with 2x2 patches;
  a second layer has 1x1 patches: 4x4 -> 4x4), then ``--readout flatten`` (the map as one vector, as the
  paper's fully connected layers read it) or ``mean`` (averaged over positions) and a linear layer to
  the 10 classes;
* **row_rnn**: the same cell reading the image row by row, 8 steps of 8 pixels (sequential MNIST by rows
  rather than Le, Jaitly & Hinton 2015's pixel by pixel; :mod:`experiments.digits` is the pixel version),
  a linear readout of the last output. ``--row-hidden 0`` (the default) picks the hidden size whose
  parameter count is nearest the ReNet model's;
* **mlp**: 64 pixels -> ``--mlp-hidden`` ReLU units -> 10; ``0`` (the default) picks the width whose
  parameter count is nearest the ReNet model's.

Parameter counts are every trained number (weights and biases of every RNN and readout); the table shows
them. The held-out set is the whole test split, scored at every logged step (for the curves) and after
the last update (the table); no model or step is selected on it. Each (model, seed) is one
:func:`experiments.runner.train` run, so runs have progress, ``metrics.jsonl``, checkpoints and
``--resume``.

Published (MNIST 28x28, 60k training images -- NOT these 8x8 digits; percent test error): ReNet 0.45,
with 2 ReNet layers of 2x2 patches, 256 GRU units each, a fully connected layer of 4096 units, dropout
and flipped / shifted training images [RECALL]; Papers with Code lists it as 0.5 [2ND] (and CIFAR-10 87.7%
correct, SVHN 2.4% error). The 8x8 digits are a much smaller problem (64 pixels, 1438 training images,
no augmentation here): what carries over is the comparison between models of the same size, not the
numbers. Source tags: [2ND] from a secondary source; [RECALL] recalled, not verified against the paper.

Measured with ``--preset quick`` (2-core CPU development machine shared with other jobs,
``JAX_PLATFORMS=cpu``; 1 min 36 s and 2 min 8 s wall in two runs for the 15 runs -- 5 seeds x 3 models,
ReNet 7-20 s, row RNN 3-13 s, MLP 1.4-6 s each -- with the same numbers), test accuracy on the 359 test
images after 3000 updates, seeds 0-4, the table as printed::

    model                                          params  test accuracy  min     max     seeds
    ---------------------------------------------  ------  -------------  ------  ------  -----
    ReNet gru H=16, 1 layer, 2x2 patches, flatten  11,914  0.9883         0.9805  0.9944  5
    row-by-row gru H=57, 8 steps of 8 pixels       11,923  0.9811         0.9777  0.9833  5
    MLP 64-159-10 (ReLU)                           11,935  0.9850         0.9833  0.9861  5

One test image is 0.28 points. At the same size and budget the three models are within one point of each
other: the ReNet has the best mean (4.2 errors of 359 against 5.4 for the MLP and 6.8 for the row RNN) and
is at least as good as the row RNN at every seed, but its seed-to-seed spread (2 to 7 errors) covers both
other means: on 64-pixel digits a same-size MLP is a strong baseline. Every run is at 97-99% after 500
updates (one row-RNN seed at 96.9%) and within 2 test images of its final accuracy after 1000 (the right
panel of the figure). In ``features.png`` each position of the 4x4 map summarises the whole image (a
right-to-left channel at column j has read columns j..3 of the vertical sweep's output, itself a summary
of whole columns); the six channels with the largest variance over the test split are shown.

Variants of the ReNet alone, the same settings, seeds 0-4, measured once (mean [min, max]):
``--readout mean`` 0.9593 [0.9387, 0.9694] with 7,114 params (the readout sees the 32 channels averaged
over the 16 positions instead of all 512 numbers); ``--cell lstm`` 0.9799 [0.9749, 0.9861] with 14,090;
``--layers 2`` 0.9822 [0.9721, 0.9889] with 21,386: neither the LSTM nor a second layer improves on the
one-layer GRU here.

Commands::

    python -m experiments.renet_digits --preset quick                # 2-core CPU, about 2 min
    python -m experiments.renet_digits --preset paper                # 2 layers of 64 GRU units, 5 seeds:
                                                                     # ~3 h on the CPU (from 300 updates)
    python -m experiments.renet_digits --preset quick --cell lstm --readout mean
    python -m experiments.renet_digits --preset quick --models renet mlp --hidden 32
    python -m experiments.renet_digits --resume latest               # continue a killed run

Outputs in ``runs/renet_digits/<timestamp>/``: ``results.json`` (every run's parameter count and test
accuracy, the table, the matched sizes), ``summary.png`` (test accuracy per model, mean and min-max over
seeds with each seed an x, and test accuracy against updates; a copy is
``experiments/figures/renet_digits.png``), ``features.png`` (a few test digits and some channels of the
trained ReNet's last feature map, seed ``--seed``; a copy is ``experiments/figures/renet_features.png``),
and per run ``<model>-seed<s>/<timestamp>/`` with ``metrics.jsonl`` (``eval_correct`` = test images
classified correctly, ``eval_error`` = the test error), ``losses.png`` (not in the ``smoke`` preset:
``--no-run-plots``) and checkpoints (``params``:
``{"layer1", ["layer2",] "W_out", "b_out"}`` for the ReNet, ``{"cell", "W_out", "b_out"}`` for the row
RNN, ``{"W1", "b1", "W2", "b2"}`` for the MLP).
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
from experiments.tasks import load_digits_split

__all__ = [
    "CELLS",
    "Config",
    "MODELS",
    "Model",
    "PRESETS",
    "RenetDigitsResult",
    "TABLE_NOTE",
    "aggregate",
    "feature_digits",
    "format_table",
    "image_split",
    "main",
    "make_models",
    "matched_width",
    "mlp_model",
    "param_count",
    "plot_features",
    "plot_summary",
    "renet_model",
    "row_rnn_model",
]

NAME = "renet_digits"
MODELS = ("renet", "row_rnn", "mlp")
CELLS: dict[str, Callable[[int], jr.Cell]] = {
    "gru": lambda h: jr.gru(h),
    "lstm": lambda h: jr.lstm(h, forget_bias=1.0),
}
SIDE, CLASSES = 8, 10  # 8x8 images, 10 digits
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    steps: int = runner.arg(3000, "Adam updates per run (the same for every model)", min=1)
    batch_size: int = runner.arg(32, "training images per update", min=1)
    log_every: int = runner.arg(100, "score the test split and log every this many updates", min=1)
    checkpoint_every: int = runner.arg(1000, "write a checkpoint every this many updates", min=1)
    models: tuple[str, ...] = runner.arg(MODELS, "models to train", choices=MODELS)
    seeds: int = runner.arg(3, "runs per model: --seed, --seed + 1, ...", min=1)
    cell: str = runner.arg("gru", "the cell of the ReNet and of the row-by-row RNN", choices=tuple(CELLS))
    hidden: int = runner.arg(16, "hidden units of each of the ReNet's four RNNs (per layer)", min=1)
    layers: int = runner.arg(1, "stacked ReNet layers (a second one has 1x1 patches)", choices=(1, 2))
    patch: int = runner.arg(2, "ReNet patch size (square; it must divide 8)", choices=(1, 2, 4, 8))
    readout: str = runner.arg(
        "flatten", "what the ReNet's linear readout reads: the whole map, or its mean over positions",
        choices=("flatten", "mean"),
    )  # fmt: skip
    row_hidden: int = runner.arg(
        0, "hidden units of the row-by-row RNN (0: its parameter count nearest the ReNet's)", min=0
    )
    mlp_hidden: int = runner.arg(
        0, "hidden units of the MLP (0: its parameter count nearest the ReNet's)", min=0
    )
    lr: float = runner.arg(3e-3, "Adam learning rate", min=0.0)
    schedule: str = runner.arg(
        "cosine",
        "learning rate: 'cosine' decays it to 0 over --steps; 'constant'",
        choices=("cosine", "constant"),
    )
    clip: float = runner.arg(1.0, "gradient-norm clipping threshold (0: none)", min=0.0)
    feature_digits: int = runner.arg(4, "test digits in features.png", min=1)
    feature_channels: int = runner.arg(6, "ReNet output channels in features.png", min=1)
    run_plots: bool = runner.arg(
        True, "write each run's losses.png (training loss and error against updates)"
    )

    def __post_init__(self):
        super().__post_init__()
        sweep.distinct(self.models, "--models")


PRESETS = {
    "quick": dict(
        steps=3000, batch_size=32, seeds=5, cell="gru", hidden=16, layers=1, lr=3e-3, log_every=100,
        checkpoint_every=1000,
    ),
    "paper": dict(
        steps=20_000, batch_size=64, seeds=5, cell="gru", hidden=64, layers=2, lr=1e-3, log_every=500,
        checkpoint_every=5000,
    ),
    "smoke": dict(
        models=("renet", "mlp"), steps=3, batch_size=4, seeds=1, hidden=3, log_every=3, checkpoint_every=3,
        feature_digits=2, feature_channels=2, run_plots=False,
    ),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# data and models


def image_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train (1438, 8, 8, 1), y_train, x_test (359, 8, 8, 1), y_test)``: the fixed split of
    :func:`experiments.tasks.load_digits_split` (the one :mod:`experiments.digits` uses), as images."""
    d = load_digits_split()
    shape = (-1, SIDE, SIDE, 1)
    return d.x_train.reshape(shape), d.y_train, d.x_test.reshape(shape), d.y_test


class Model(NamedTuple):
    """A classifier of ``(B, 8, 8, 1)`` images."""

    name: str  # "renet", "row_rnn", "mlp"
    label: str  # what it is, for the table
    init: Callable[[jax.Array], dict]  # key -> params
    logits: Callable[[dict, jax.Array], jax.Array]  # (params, images (B, 8, 8, 1)) -> (B, 10)
    features: Callable[[dict, jax.Array], jax.Array] | None = None  # the ReNet's last map (B, h, w, 2H)


def _linear(key, n_in: int, n_out: int, scale: float = 1.0):
    return jax.random.normal(key, (n_in, n_out), _F32) * (scale / math.sqrt(n_in))


def renet_model(cell: str, hidden: int, patch: int = 2, layers: int = 1, readout: str = "flatten") -> Model:
    """``layers`` ReNet layers (the first with ``patch x patch`` patches, a second with 1x1), then a linear
    readout of the flattened (``"flatten"``) or position-averaged (``"mean"``) map. ``W_out ~ N(0, 1/n)``."""
    make = CELLS[cell]
    layer1 = jr.renet(make(hidden), patch)
    layer2 = jr.renet(make(hidden), 1) if layers == 2 else None
    side, width = SIDE // patch, 2 * hidden
    n_read = side * side * width if readout == "flatten" else width

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        params = {"layer1": layer1.init(k1, 1)}
        if layer2 is not None:
            params["layer2"] = layer2.init(k2, width)
        params["W_out"] = _linear(k3, n_read, CLASSES)
        params["b_out"] = jnp.zeros((CLASSES,), _F32)
        return params

    def features(params, images):
        x = layer1.apply(params["layer1"], images)
        return x if layer2 is None else layer2.apply(params["layer2"], x)

    def logits(params, images):
        x = features(params, images)
        x = x.reshape((x.shape[0], -1)) if readout == "flatten" else jnp.mean(x, axis=(-3, -2))
        return x @ params["W_out"] + params["b_out"]

    label = f"ReNet {cell} H={hidden}, {layers} layer{'s' * (layers > 1)}, {patch}x{patch} patches, {readout}"
    return Model("renet", label, init, logits, features)


def row_rnn_model(cell: str, hidden: int) -> Model:
    """``cell`` reads the 8 rows of the image as 8 steps of 8 pixels; a linear readout of its last output."""
    rnn = CELLS[cell](hidden)

    def init(key):
        k1, k2 = jax.random.split(key)
        p = rnn.init(k1, SIDE)
        return {"cell": p, "W_out": _linear(k2, hidden, CLASSES), "b_out": jnp.zeros((CLASSES,), _F32)}

    def logits(params, images):
        xs = jnp.moveaxis(images[..., 0], -2, 0)  # (8 rows, B, 8 pixels)
        final, _ = jr.unroll(rnn, params["cell"], xs)
        return rnn.output(final) @ params["W_out"] + params["b_out"]

    return Model("row_rnn", f"row-by-row {cell} H={hidden}, 8 steps of 8 pixels", init, logits)


def mlp_model(hidden: int) -> Model:
    """64 pixels -> ``hidden`` ReLU units -> 10 (He-normal ``W1``, ``W2 ~ N(0, 1/hidden)``, zero biases)."""
    n_in = SIDE * SIDE

    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "W1": _linear(k1, n_in, hidden, math.sqrt(2.0)),
            "b1": jnp.zeros((hidden,), _F32),
            "W2": _linear(k2, hidden, CLASSES),
            "b2": jnp.zeros((CLASSES,), _F32),
        }

    def logits(params, images):
        x = images.reshape((images.shape[0], -1))
        return jax.nn.relu(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]

    return Model("mlp", f"MLP {n_in}-{hidden}-{CLASSES} (ReLU)", init, logits)


def param_count(tree) -> int:
    """The number of numbers in a pytree of arrays (or of shapes: ``jax.eval_shape``'s output)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _count(model: Model) -> int:
    return param_count(jax.eval_shape(model.init, jax.random.PRNGKey(0)))


def matched_width(make: Callable[[int], Model], target: int) -> int:
    """The width ``w >= 1`` whose ``make(w)``'s parameter count is nearest ``target`` (shapes only).

    The counts of the MLP (linear in ``w``) and of the GRU / LSTM row RNN (quadratic) are fitted exactly
    from ``w = 1, 2, 3`` and the fit solved for ``target``; the pick is checked against ``make(w)``'s real
    count, and a model whose count is not such a polynomial falls back to a binary search."""
    c1, c2, c3 = (_count(make(w)) for w in (1, 2, 3))
    a = (c3 - 2 * c2 + c1) / 2
    b = c2 - c1 - 3 * a
    c = c1 - a - b
    poly = lambda w: a * w * w + b * w + c
    if a > 0:
        root = (-b + math.sqrt(max(b * b - 4 * a * (c - target), 0.0))) / (2 * a)
    else:
        root = (target - c) / b if b > 0 else 1.0
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    best = min(sorted(candidates), key=lambda w: abs(poly(w) - target))
    if _count(make(best)) == poly(best) and a >= 0 and b + a > 0:
        return best
    lo, hi = 1, 1 << 16  # the smallest w with count >= target, or the one before it
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _count(make(mid)) >= target else (mid + 1, hi)
    if lo > 1 and target - _count(make(lo - 1)) <= _count(make(lo)) - target:
        return lo - 1
    return lo


def make_models(config: Config) -> tuple[dict[str, Model], dict[str, int], dict[str, int]]:
    """``({name: model}, {name: hidden size}, {name: parameter count})`` for ``config.models``; the row
    RNN's and the MLP's sizes matched to the ReNet model's parameter count where ``config`` gives 0."""
    renet = renet_model(config.cell, config.hidden, config.patch, config.layers, config.readout)
    target = _count(renet)
    row = config.row_hidden or matched_width(lambda h: row_rnn_model(config.cell, h), target)
    mlp = config.mlp_hidden or matched_width(mlp_model, target)
    every = {"renet": renet, "row_rnn": row_rnn_model(config.cell, row), "mlp": mlp_model(mlp)}
    sizes = {"renet": config.hidden, "row_rnn": row, "mlp": mlp}
    models = {m: every[m] for m in config.models}
    counts = {m: target if m == "renet" else _count(every[m]) for m in config.models}
    return models, {m: sizes[m] for m in config.models}, counts


def _train_fns(config: Config, model: Model, split) -> dict:
    x_train, y_train, x_test, y_test = (jnp.asarray(a) for a in split)
    n_train, n_test, batch = y_train.shape[0], y_test.shape[0], config.batch_size

    def scores(params, x, y):
        logits = model.logits(params, x)
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        return ce, jnp.sum(jnp.argmax(logits, -1) == y).astype(_F32)

    def loss_fn(params, b):
        ce, correct = scores(params, *b)
        return ce, {"error": 1.0 - correct / batch}

    def eval_fn(params, key):
        ce, correct = scores(params, x_test, y_test)
        return {"eval_loss": ce, "eval_error": 1.0 - correct / n_test, "eval_correct": correct}

    def sample_fn(key):
        idx = jax.random.randint(key, (batch,), 0, n_train, dtype=jnp.int32)
        return x_train[idx], y_train[idx]

    return dict(
        init_fn=jax.jit(model.init), loss_fn=loss_fn, sample_fn=sample_fn, eval_fn=eval_fn, batch_axes=0
    )


# ----------------------------------------------------------------------------------------------
# table and figures


def aggregate(runs: Sequence[Mapping]) -> list[dict]:
    """One row per model, in order: ``model``, ``label``, ``params``, ``n`` seeds, ``mean``, ``min``,
    ``max`` of the test accuracy (NaN if a seed diverged), ``diverged`` (how many)."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name]
        acc = np.array([float(r["test_accuracy"]) for r in rs])
        finite = bool(np.isfinite(acc).all())
        rows.append(
            {"model": name, "label": rs[0]["label"], "params": rs[0]["params"], "n": len(rs)}
            | {f: float(getattr(np, f)(acc)) if finite else math.nan for f in ("mean", "min", "max")}
            | {"diverged": int((~np.isfinite(acc)).sum())}
        )
    return rows


TABLE_NOTE = (
    "test accuracy: fraction of the 359 test images classified correctly after the last update, over the "
    "seeds; params: every trained number"
)


def _acc(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "nan"


def format_table(rows: Sequence[Mapping]) -> str:
    """``model  params  test accuracy  min  max  seeds``, then :data:`TABLE_NOTE`."""
    header = ["model", "params", "test accuracy", "min", "max", "seeds"]
    lines = [
        [
            r["label"],
            f"{r['params']:,}",
            _acc(r["mean"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            _acc(r["min"]),
            _acc(r["max"]),
            str(r["n"]),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), TABLE_NOTE])


_COLORS = {"renet": "C0", "row_rnn": "C1", "mlp": "C2"}


def plot_summary(table: Sequence[Mapping], runs: Sequence[Mapping], curves: Sequence, path: str) -> str:
    """Left: test accuracy per model (mean, min-max bar over seeds, each seed a dot; the parameter count
    under the name). Right: test accuracy against updates, one line per run."""
    plt = plots.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.5]})
    for i, row in enumerate(table):
        color = _COLORS.get(row["model"], "k")
        accs = [r["test_accuracy"] for r in runs if r["model"] == row["model"]]
        if math.isfinite(row["mean"]):
            err = [[row["mean"] - row["min"]], [row["max"] - row["mean"]]]
            left.errorbar([i], [row["mean"]], yerr=err, fmt="o", ms=9, capsize=6, color=color, lw=2)
            left.annotate(
                f"{row['mean']:.3f}",
                (i, row["mean"]),
                xytext=(-12, -4),
                textcoords="offset points",
                ha="right",
            )
        left.plot(i + 0.1 + 0.04 * np.arange(len(accs)), accs, "x", color=color, ms=6, alpha=0.8)
    left.set_xticks(range(len(table)), [f"{r['model']}\n{r['params']:,} params" for r in table], fontsize=8)
    left.set_xlim(-0.5, len(table) - 0.3)
    left.set_ylabel(f"test accuracy ({runs[0]['n_test'] if runs else 359} images)")
    left.set_title("after the last update: mean, min-max (x: seeds)", fontsize=10)
    left.grid(alpha=0.3, axis="y")
    seen = set()
    for r, rows in zip(runs, curves):
        pts = [(row["step"], row["eval_correct"] / r["n_test"]) for row in rows if "eval_correct" in row]
        if not pts:
            continue
        label = None if r["model"] in seen else r["label"]
        seen.add(r["model"])
        right.plot(*zip(*pts), "-", lw=1, color=_COLORS.get(r["model"], "k"), alpha=0.8, label=label)
    right.set_xlabel("updates")
    right.set_ylabel("test accuracy")
    right.set_title("test accuracy against updates (one line per seed)", fontsize=10)
    finite = [v for r in runs for v in [r["test_accuracy"]] if math.isfinite(v)]
    if finite:
        lo = max(0.0, min(finite) - 0.08)
        right.set_ylim(lo, 1.0)
        left.set_ylim(max(0.0, min(finite) - 0.02), min(1.0, max(finite) + 0.01))
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle("8x8 digits: ReNet vs row-by-row RNN vs MLP of the same size", fontsize=11)
    return plots.save_figure(fig, path)


def feature_digits(y_test: np.ndarray, k: int) -> list[int]:
    """The test indices of the first image of each of ``k`` different digits (in order of appearance)."""
    picked, labels = [], set()
    for i, y in enumerate(np.asarray(y_test)):
        if int(y) not in labels:
            picked.append(i)
            labels.add(int(y))
        if len(picked) == k:
            break
    return picked


def plot_features(model: Model, params, split, config: Config, path: str) -> tuple[str, dict]:
    """The ReNet's last feature map for ``config.feature_digits`` test digits (one per row): the input,
    then the ``config.feature_channels`` channels with the largest variance over the test split (``L->R``:
    the left-to-right RNN of the second sweep, ``R->L``: right-to-left; fixed colour scale -1..1).
    Returns the path and what it shows (indices, channels, predictions)."""
    _, _, x_test, y_test = split
    both = jax.jit(lambda p, x: (model.features(p, x), jnp.argmax(model.logits(p, x), -1)))
    feats, preds = (np.asarray(a) for a in both(params, jnp.asarray(x_test)))  # (N, h, w, 2H), (N,)
    width = feats.shape[-1]
    var = feats.reshape(-1, width).var(axis=0)
    channels = [int(c) for c in np.argsort(-var, kind="stable")[: min(config.feature_channels, width)]]
    idx = feature_digits(y_test, config.feature_digits)
    plt = plots.pyplot()
    n_col = 1 + len(channels)
    fig, axes = plt.subplots(
        len(idx), n_col, figsize=(1.45 * n_col + 0.6, 1.55 * len(idx) + 0.5), squeeze=False
    )
    half = width // 2
    for row, i in enumerate(idx):
        ax = axes[row][0]
        ax.imshow(x_test[i, ..., 0], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"digit {int(y_test[i])} (pred {int(preds[i])})", fontsize=8)
        for col, c in enumerate(channels, start=1):
            ax = axes[row][col]
            ax.imshow(feats[i, ..., c], cmap="RdBu_r", vmin=-1, vmax=1)
            if row == 0:
                ax.set_title(f"ch {c} ({'L->R' if c < half else 'R->L'})", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    side = feats.shape[1]
    fig.suptitle(
        f"input (8x8) and {len(channels)} channels of the trained ReNet's {side}x{side}x{width} output "
        "(blue -1, white 0, red +1)",
        fontsize=9,
    )
    plots.save_figure(fig, path)
    info = {
        "test_indices": idx,
        "labels": [int(y_test[i]) for i in idx],
        "predictions": [int(preds[i]) for i in idx],
        "channels": channels,
        "map_shape": list(feats.shape[1:]),
    }
    return path, info


# ----------------------------------------------------------------------------------------------
# the script


class RenetDigitsResult(NamedTuple):
    """What :func:`main` returns."""

    runs: list[dict]
    table: list[dict]
    sizes: dict
    sweep_dir: str


def main(argv=None):
    config = runner.config_cli(Config, PRESETS, argv, name=NAME, description=__doc__)
    sweep_dir = sweep.start(config, NAME)
    log = sys.stderr if config.quiet else sys.stdout
    split = image_split()
    n_test = int(split[3].shape[0])
    models, sizes, counts = make_models(config)
    if not config.quiet:
        print(
            "models: " + "; ".join(f"{m.label}: {counts[n]:,} params" for n, m in models.items()),
            flush=True,
        )

    runs, curves, diverged, feature_info = [], [], [], None
    total = len(models) * config.seeds
    figures = {}
    for name, model in models.items():
        fns = _train_fns(config, model, split)
        for seed in range(config.seed, config.seed + config.seeds):
            run_name = f"{name}-seed{seed}"
            run_config = dataclasses.replace(
                config,
                models=(name,),
                seeds=1,
                seed=seed,
                run_root=sweep_dir,
                resume=sweep.resumable(sweep_dir, run_name) if config.resume else "",
            )
            t0 = time.perf_counter()
            try:
                result = runner.train(
                    run_config,
                    name=run_name,
                    optimizer=sweep.adam(config.lr, config.steps, config.schedule, config.clip),
                    **fns,
                )
            except runner.Diverged as e:  # recorded (accuracy NaN); reported after every run
                result = e.result
            last = result.rows[-1] if result.rows else {}
            if result.diverged_at is not None:
                diverged.append(f"{run_name} at step {result.diverged_at}")
                correct, accuracy = None, math.nan
            else:
                correct = int(round(last["eval_correct"]))
                accuracy = correct / n_test
            run = {"model": name, "label": model.label, "seed": seed, "params": counts[name]}
            run.update(hidden=sizes[name], test_accuracy=accuracy, test_correct=correct, n_test=n_test)
            run.update(run_dir=result.run_dir, steps=result.step, diverged_at=result.diverged_at)
            run["wall_s"] = round(time.perf_counter() - t0, 2)
            runs.append(run)
            curves.append(result.rows)
            if config.run_plots:
                plots.plot_run(result.run_dir, error_label="fraction of images classified wrongly")
            print(
                f"[{len(runs)}/{total}] {model.label} seed {seed}: test accuracy {_acc(accuracy)}"
                + (f" ({correct}/{n_test})" if correct is not None else f", diverged at {result.diverged_at}")
                + f", {counts[name]:,} params, {run['wall_s']:.1f} s",
                file=log,
                flush=True,
            )
            if name == "renet" and seed == config.seed and result.diverged_at is None:
                path, feature_info = plot_features(
                    model, result.params, split, config, os.path.join(sweep_dir, "features.png")
                )
                feature_info["run_dir"] = result.run_dir
                figures["features"] = path
            table = aggregate(runs)
            sweep.write_json(
                os.path.join(sweep_dir, "results.json"),
                {
                    "experiment": NAME,
                    "finished": _dt.datetime.now().isoformat(timespec="seconds"),
                    "config": dataclasses.asdict(config),
                    "data": f"scikit-learn 8x8 digits, {split[1].shape[0]} train / {n_test} test "
                    "(experiments.tasks.load_digits_split), pixels / 16",
                    "sizes": sizes,
                    "params": counts,
                    "runs": runs,
                    "table": table,
                    "features": feature_info,
                },
            )
    table = aggregate(runs)
    print(format_table(table))
    figures["summary"] = plot_summary(table, runs, curves, os.path.join(sweep_dir, "summary.png"))
    print("figures: " + ", ".join(figures[k] for k in ("summary", "features") if k in figures))
    print(f"results: {sweep_dir}/results.json")
    runner.report_divergence(diverged, total, config, os.path.join(sweep_dir, "results.json"))
    return RenetDigitsResult(runs, table, sizes, sweep_dir)


if __name__ == "__main__":
    runner.run_cli(main)
