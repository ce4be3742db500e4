"""A sweep over cells x task variants x seeds, shared by ``adding.py``, ``copying.py`` and ``digits.py``.

Each experiment script is a :class:`SweepConfig` subclass, a list of task variants (one
:class:`~experiments.tasks.Task` per sequence length, or per data set), and the published numbers;
:func:`run_sweep` trains one model per ``(cell, variant, seed)`` with :func:`experiments.runner.train`
and writes::

    RUN_ROOT/<experiment>/<timestamp>/          the sweep directory
        config.json                             the sweep's config (``--resume`` reads it)
        <cell>-<variant>-seed<s>/<timestamp>/   one runner.train run each (e.g. lstm-T100-seed0):
                                                metrics.jsonl, checkpoints, losses.png, ...
        results.json                            every run and the table (rewritten after each run)
        summary.png                             the final metric per cell against the variant

The model is the cell followed by a linear readout ``y = h @ W_out + b_out`` of the last state
(``task.output`` ``"last_linear"`` / ``"last_softmax"``) or of every state (``"all_softmax"``), trained
on ``task.loss`` by an optax optimiser with clipping (:func:`make_optimizer`). After training, the
model is scored on a held-out test set that is the same for every cell and seed (:func:`test_metrics`).

In plain Python::

    for variant, task in variants:
        for cell in config.cells:
            for seed in config.seed, ..., config.seed + config.seeds - 1:
                result = runner.train(run_config, init_fn=..., loss_fn=task.loss(readout(unroll(...))),
                                      sample_fn=task.sample, optimizer=make_optimizer(...))
                runs.append(test_metrics(result.params, test set))
    table = aggregate(runs)      # mean, min, max over seeds per (cell, variant)

``--resume latest`` (or a sweep directory) continues a killed sweep: finished runs are read back
(their checkpoints end at ``--steps``), the interrupted one continues from its newest checkpoint, the
others start.

A run that diverges (training loss NaN or infinite) stops early and is recorded; the sweep trains the
others, writes everything, and then exits with status 3 naming the diverged runs, unless
``--allow-divergence`` (see :func:`run_sweep`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn as jr
from experiments import plots, runner
from experiments.tasks import Batch, Task, describe_error

__all__ = [
    "CELLS",
    "Model",
    "OPTIMIZERS",
    "SOURCE_TAGS",
    "SweepConfig",
    "SweepResult",
    "aggregate",
    "format_table",
    "make_model",
    "make_optimizer",
    "per_cell",
    "plot_summary",
    "run_sweep",
    "sampled_test_set",
    "source_tag_legend",
    "test_metrics",
]

CELLS: dict[str, Callable[[int], jr.Cell]] = {
    "tanh": lambda h: jr.elman(h, "tanh"),
    "irnn": lambda h: jr.irnn(h),
    "np_rnn": lambda h: jr.np_rnn(h),
    "lstm": lambda h: jr.lstm(h, forget_bias=1.0),
}
"""Cell name -> factory ``hidden_size -> Cell``: tanh RNN (Flax-style init: LeCun-normal inputs,
orthogonal ``W_hh``), IRNN (Le et al. 2015: ``W_hh = I``, ReLU), np-RNN (Talathi & Vartak 2016),
LSTM with forget-gate bias 1."""

OPTIMIZERS = ("sgd", "rmsprop", "adam")
TEST_KEY = 20_150_401  # the held-out test set: the same sequences for every cell, variant and seed


@dataclasses.dataclass(frozen=True)
class SweepConfig(runner.TrainConfig):
    """Settings every sweep shares (the scripts add their variants: lengths, data sets).

    A subclass names its tuple field of variants in ``variants_field`` (e.g. ``"lengths"``); it must
    not be empty.
    """

    variants_field: ClassVar[str] = ""

    cells: tuple[str, ...] = runner.arg(tuple(CELLS), "cells to train", choices=tuple(CELLS))
    seeds: int = runner.arg(1, "seeds per (cell, variant): --seed, --seed + 1, ...", min=1)
    hidden: tuple[int, ...] = runner.arg((100,), "hidden units: one value, or one per cell of --cells", min=1)
    optimizer: str = runner.arg("sgd", "optimiser", choices=OPTIMIZERS)
    lr: tuple[float, ...] = runner.arg((1e-3,), "learning rate: one value, or one per cell of --cells", min=0)
    momentum: float = runner.arg(0.0, "SGD momentum (0: plain SGD)", min=0)
    clip: tuple[float, ...] = runner.arg(
        (1.0,), "gradient clipping threshold (0: none): one value, or one per cell of --cells", min=0
    )
    clip_mode: str = runner.arg(
        "norm", "'norm': rescale the global norm (Pascanu); 'value': clip elementwise (Arjovsky)",
        choices=("norm", "value"),
    )  # fmt: skip
    eval_batch: int = runner.arg(256, "held-out sequences scored at each logged step", min=1)
    n_test: int = runner.arg(1000, "held-out sequences in the final test", min=1)

    def __post_init__(self):
        super().__post_init__()
        for name in ("cells", self.variants_field):
            if name and not getattr(self, name):
                raise ValueError(f"--{name.replace('_', '-')}: give at least one value")
        if len(set(self.cells)) != len(self.cells):
            raise ValueError(f"--cells: each cell at most once; got {' '.join(self.cells)}")
        for name in ("hidden", "lr", "clip"):
            n = len(getattr(self, name))
            if n not in (1, len(self.cells)):
                raise ValueError(
                    f"--{name}: give one value or one per cell ({len(self.cells)} for --cells "
                    f"{' '.join(self.cells)}); got {n}"
                )


def per_cell(config: SweepConfig, name: str, cell: str):
    """The value of the per-cell option ``name`` (``hidden``, ``lr``, ``clip``) for ``cell``."""
    values = getattr(config, name)
    return values[0] if len(values) == 1 else values[config.cells.index(cell)]


def make_optimizer(name: str, lr: float, clip: float, clip_mode: str = "norm", momentum: float = 0.0):
    """``optax.chain(clipping, optimiser)``.

    * ``clip_mode="norm"``: ``g <- g * min(1, clip / ||g||)`` (Pascanu et al. 2013, Algorithm 1; Le et
      al. 2015); ``"value"``: ``g <- clip(g, -clip, clip)`` elementwise (Arjovsky et al.'s code).
      ``clip = 0``: no clipping.
    * ``"sgd"``: ``theta <- theta - lr g`` (with ``momentum``: heavy ball); ``"rmsprop"``: Arjovsky et
      al.'s ``r <- 0.9 r + 0.1 g^2``, ``theta <- theta - lr g / sqrt(r + 1e-8)``, ``r_0 = 1e-3``;
      ``"adam"``: optax defaults.
    """
    if name == "sgd":
        opt = optax.sgd(lr, momentum=momentum or None)
    elif name == "rmsprop":
        opt = optax.rmsprop(lr, decay=0.9, eps=1e-8, initial_scale=1e-3)
    elif name == "adam":
        opt = optax.adam(lr)
    else:
        raise runner.UsageError(f"--optimizer: unknown value {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not clip:
        return opt
    clipper = optax.clip_by_global_norm(clip) if clip_mode == "norm" else optax.clip(clip)
    return optax.chain(clipper, opt)


# ----------------------------------------------------------------------------------------------
# the model: a cell and a linear readout


class Model(NamedTuple):
    """The pure functions of one ``(cell, task)`` model; ``params = {"cell", "W_out", "b_out"}``."""

    cell: jr.Cell
    init: Callable[[jax.Array], dict]  # key -> params
    predict: Callable[[dict, Batch], jax.Array]  # the task's preds: (B, O) or (T, B, O)
    readout: Callable[[dict, jax.Array, Batch], jax.Array]  # (params, ys (T, B, H), batch) -> preds


def make_model(cell: jr.Cell, task: Task) -> Model:
    """The cell with a linear readout of its state, shaped for ``task.output``.

    ``W_out ~ N(0, 1/H)``, ``b_out = 0``. ``"last_*"`` tasks read ``cell.output`` of the final carry
    (the state at each sequence's last valid step); ``"all_softmax"`` reads every step's output.
    """

    def init(key):
        k_cell, k_out = jax.random.split(key)
        p = cell.init(k_cell, task.input_size)
        width = jax.eval_shape(lambda: cell.output(cell.initial_carry(p, (1,)))).shape[-1]
        w = jax.random.normal(k_out, (width, task.output_size), jnp.float32) / math.sqrt(width)
        return {"cell": p, "W_out": w, "b_out": jnp.zeros((task.output_size,), jnp.float32)}

    def readout(params, ys, batch):
        if task.output == "all_softmax":
            return ys @ params["W_out"] + params["b_out"]
        return jr.losses.last_valid(ys, batch.lengths) @ params["W_out"] + params["b_out"]

    def predict(params, batch):
        final, ys = jr.unroll(cell, params["cell"], batch.xs, lengths=batch.lengths)
        if task.output == "all_softmax":
            return readout(params, ys, batch)
        return cell.output(final) @ params["W_out"] + params["b_out"]

    return Model(cell, init, predict, readout)


def _square_recurrence(params) -> bool:
    w = params["cell"].get("W_hh")
    return w is not None and w.ndim == 2 and w.shape[0] == w.shape[1]


def test_metrics(model: Model, task: Task, params, batches: Sequence[Batch]) -> dict:
    """Mean ``task.loss`` and ``task.error`` over the held-out ``batches`` (weighted by their size).

    Returns ``{"test_loss", "test_error", "test_accuracy", "n_test"}`` (floats; accuracy = 1 - error).
    """
    score = jax.jit(lambda p, b: (task.loss(model.predict(p, b), b), task.error(model.predict(p, b), b)))
    n = loss = err = 0.0
    for b in batches:
        size = b.xs.shape[1]
        l, e = score(params, b)
        n, loss, err = n + size, loss + size * float(l), err + size * float(e)
    return {"test_loss": loss / n, "test_error": err / n, "test_accuracy": 1.0 - err / n, "n_test": int(n)}


def sampled_test_set(task: Task, n: int, chunk: int) -> list[Batch]:
    """``n`` held-out sequences from ``task.sample_test`` in chunks of at most ``chunk`` (fixed key)."""
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    key = jax.random.PRNGKey(TEST_KEY)
    return [task.sample_test(jax.random.fold_in(key, i), s) for i, s in enumerate(sizes)]


# ----------------------------------------------------------------------------------------------
# aggregation, table, plot


def aggregate(runs: Sequence[Mapping], metric: str) -> list[dict]:
    """One row per ``(cell, variant)`` in order of appearance: ``mean``, ``min``, ``max`` of ``metric``
    over the seeds (NaN if any seed diverged to a non-finite value), ``n`` seeds, ``baseline``."""
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["cell"], r["variant"]), []).append(r)
    rows = []
    for (cell, variant), rs in groups.items():
        values = [float(r[metric]) for r in rs]
        finite = all(math.isfinite(v) for v in values)
        rows.append(
            {
                "cell": cell,
                "variant": variant,
                "n": len(values),
                "mean": float(np.mean(values)) if finite else math.nan,
                "min": float(np.min(values)) if finite else math.nan,
                "max": float(np.max(values)) if finite else math.nan,
                "diverged": sum(not math.isfinite(v) for v in values),
                "baseline": rs[0].get("baseline"),
            }
        )
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


SOURCE_TAGS = {
    "SRC": "read in the paper or the authors' code",
    "2ND": "from a secondary source (a citing paper or a reproduction)",
    "RECALL": "recalled, not verified against the paper (not a hard target)",
}
"""The source tags of the published results (``[SRC]``, ``[2ND]``, ``[RECALL]``) and what they mean."""


def source_tag_legend(texts: Sequence[str]) -> str:
    """One line explaining the source tags that occur in ``texts`` (``""`` if none does), e.g.
    ``"source tags: [SRC] read in the paper or the authors' code; [RECALL] recalled, ..."``."""
    found = {m for t in texts for m in re.findall(r"\[(SRC|2ND|RECALL)\b", str(t))}
    parts = [f"[{tag}] {meaning}" for tag, meaning in SOURCE_TAGS.items() if tag in found]
    return "source tags: " + "; ".join(parts) if parts else ""


def format_table(rows: Sequence[Mapping], metric_label: str, variant_label: str, published=None) -> str:
    """A plain-text table: cell, variant, the metric (mean [min, max] over seeds), the baseline, the
    ratio to it, and the published result for ``(cell, variant)`` (``published[(cell, variant)]``,
    falling back to ``published[cell]``); under it, when the published column has source tags, a line
    saying what they mean (:func:`source_tag_legend`)."""
    published = published or {}
    header = ["cell", variant_label, metric_label, "seeds", "baseline", "/ baseline", "published"]
    lines = []
    for r in rows:
        spread = f" [{_fmt(r['min'])}, {_fmt(r['max'])}]" if r["n"] > 1 else ""
        value = _fmt(r["mean"]) + spread + (f" ({r['diverged']} diverged)" if r["diverged"] else "")
        base = r.get("baseline")
        ratio = _fmt(r["mean"] / base) if base and math.isfinite(r["mean"]) else "-"
        pub = published.get((r["cell"], r["variant"]), published.get(r["cell"], "-"))
        lines.append([r["cell"], _fmt(r["variant"]), value, str(r["n"]), _fmt(base), ratio, pub])
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    legend = source_tag_legend([line[-1] for line in lines])
    return "\n".join(
        [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), *([legend] if legend else [])]
    )


def plot_summary(rows: Sequence[Mapping], path: str, ylabel: str, xlabel: str, title: str = "", log_y=False):
    """The aggregated metric per cell against the variant (min-max bars over seeds), baseline dashed
    (a horizontal line across the plot when there is one variant)."""
    from experiments.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    numeric = all(isinstance(v, (int, float)) for v in variants)
    xpos = {v: (v if numeric else i) for i, v in enumerate(variants)}
    for cell in dict.fromkeys(r["cell"] for r in rows):
        rs = [r for r in rows if r["cell"] == cell]
        x = [xpos[r["variant"]] for r in rs]
        y = np.array([r["mean"] for r in rs])
        err = np.array([[r["mean"] - r["min"] for r in rs], [r["max"] - r["mean"] for r in rs]])
        ax.errorbar(x, y, yerr=np.nan_to_num(err), marker="o", capsize=3, label=cell)
    base = {r["variant"]: r["baseline"] for r in rows if r.get("baseline") is not None}
    if len(base) == 1:  # one variant: a line through one point would draw nothing
        ax.axhline(next(iter(base.values())), color="k", linestyle="--", label="baseline")
    elif base:
        ax.plot([xpos[v] for v in base], list(base.values()), "k--", label="baseline")
    if not numeric:
        ax.set_xticks(range(len(variants)), [str(v) for v in variants])
    if log_y and all(r["mean"] > 0 for r in rows if math.isfinite(r["mean"])):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# the sweep


class SweepResult(NamedTuple):
    """What :func:`run_sweep` returns: every run's metrics, the aggregated table, where they are."""

    runs: list[dict]
    table: list[dict]
    sweep_dir: str


def sweep_dir(config: runner.TrainConfig, experiment: str) -> str:
    """The directory of a script that trains several runs: ``config.resume``'s (resolved), else a new
    ``runs/<experiment>/<timestamp>/`` without a checkpoint folder (each run keeps its own)."""
    if config.resume:
        return runner.resolve_run_dir(config.resume, config.run_root, experiment)
    path = runner.new_run_dir(config.run_root, experiment)
    os.rmdir(os.path.join(path, "checkpoints"))  # a sweep keeps its checkpoints in its runs
    return path


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON, written atomically (numpy and jax values converted)."""
    runner.write_atomic(path, json.dumps(obj, indent=2, default=runner.json_default).encode())


def resumable(root: str, name: str) -> str:
    """The newest run directory of ``root/name`` that has a config.json, else ``""`` (start afresh)."""
    base = os.path.join(root, name)
    if not os.path.isdir(base):
        return ""
    runs = sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d, "config.json")))
    return os.path.join(base, runs[-1]) if runs else ""


def start(config: runner.TrainConfig, experiment: str) -> str:
    """:func:`sweep_dir` with the resolved config, the experiment's name and the jax version written to
    its ``config.json``: the first thing every multi-run script does."""
    out = sweep_dir(config, experiment)
    write_json(
        os.path.join(out, "config.json"),
        {"name": experiment, "config": dataclasses.asdict(config), "jax_version": jax.__version__},
    )
    return out


def distinct(values: Sequence, option: str) -> None:
    """A list option's check: at least one value, each at most once (``ValueError`` naming ``--option``,
    which the CLI turns into exit status 2)."""
    if not values:
        raise ValueError(f"{option}: give at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"{option}: each value at most once; got {' '.join(map(str, values))}")


def adam(lr: float, steps: int, schedule: str, clip: float):
    """Adam with global-norm clipping at ``clip``; ``schedule="cosine"`` decays the learning rate to 0
    over ``steps`` (``"constant"`` keeps it)."""
    rate = optax.cosine_decay_schedule(lr, steps) if schedule == "cosine" else lr
    return make_optimizer("adam", rate, clip)


def run_sweep(
    config: SweepConfig,
    *,
    experiment: str,
    variants: Sequence[tuple[Any, Task]],
    metric: str,
    metric_label: str,
    variant_label: str,
    published: Mapping | None = None,
    test_set: Callable[[Task], Sequence[Batch]] | None = None,
    extra: Mapping | None = None,
    error_label: str | None = None,
) -> SweepResult:
    """Train every ``(cell, variant, seed)``, score it on the test set, write results.json and plots,
    print the table (:func:`format_table`) and where the results are.

    Args:
      config: a :class:`SweepConfig` (the script's subclass; saved to the sweep's config.json).
      experiment: the name: the sweep goes to ``config.run_root/experiment/<timestamp>/``.
      variants: ``[(label, task), ...]``, e.g. ``[(50, adding_arjovsky(50)), ...]``; the label is the
        x value of the summary plot (ints: a numeric axis) and part of each run's name.
      metric: the key of :func:`test_metrics` tabled and plotted (``"test_loss"``, ``"test_accuracy"``).
      metric_label, variant_label: column / axis names (e.g. ``"test MSE"``, ``"T"``).
      published: ``{(cell, variant) or cell: text}`` for the table's "published" column.
      test_set: ``task -> [Batch, ...]``, the held-out data (default: ``config.n_test`` sequences from
        ``task.sample_test`` with a fixed key, in chunks of ``config.eval_batch``).
      extra: more entries for results.json (e.g. notes on the protocol).
      error_label: what ``task.error`` is, in words (default :func:`experiments.tasks.describe_error`
        of the first variant's task): the definition of the ``error`` of the per-step log, of each
        run's ``losses.png`` (its axis label) and of ``test_error`` in results.json (its ``"error"``
        entry); printed under the table.

    A run whose training loss becomes NaN or infinite stops there (:func:`experiments.runner.train`)
    and is recorded like any other (its test metrics NaN: the table says "diverged"); the sweep goes on.
    At the end, after writing everything, :func:`experiments.runner.report_divergence` raises
    :class:`~experiments.runner.Diverged` naming the diverged runs (exit status 3), unless
    ``config.allow_divergence`` (then they train on to ``--steps``, and one warning line names them).

    Returns:
      :class:`SweepResult` ``(runs, table, sweep_dir)``; ``runs`` rows hold ``cell``, ``variant``,
      ``seed``, ``run_dir``, ``steps``, ``wall_s``, ``baseline``, ``diverged_at`` (the logged step at
      which the training loss was first NaN or infinite, else None) and :func:`test_metrics`' keys.

    Raises:
      experiments.runner.Diverged: some run diverged, without ``config.allow_divergence``.
    """
    out_dir = start(config, experiment)
    published = published or {}
    test_set = test_set or (lambda task: sampled_test_set(task, config.n_test, config.eval_batch))
    on_accel = jax.default_backend() != "cpu"
    error_label = error_label or (describe_error(variants[0][1]) if variants else None)
    error_line = f"error (per-step log, losses.png, results.json's test_error): {error_label}"
    if not config.quiet:
        print(
            "per-step log: loss = the training loss on the batch; error = the same batch's error; rho = "
            "spectral radius of W_hh (Elman-type cells only); |g| = gradient norm before clipping",
            flush=True,
        )
        print(error_line, flush=True)
    runs: list[dict] = []
    diverged: list[str] = []
    total = len(variants) * len(config.cells) * config.seeds
    for variant, task in variants:
        tests = test_set(task)
        for cell_name in config.cells:
            hidden, lr, clip = (per_cell(config, k, cell_name) for k in ("hidden", "lr", "clip"))
            model = make_model(CELLS[cell_name](hidden), task)
            for seed in range(config.seed, config.seed + config.seeds):
                tag = f"{variant_label}{variant}" if isinstance(variant, int) else str(variant)
                name = f"{cell_name}-{tag}-seed{seed}"
                run_config = dataclasses.replace(
                    config,
                    cells=(cell_name,),
                    hidden=(hidden,),
                    lr=(lr,),
                    clip=(clip,),
                    seeds=1,
                    seed=seed,
                    run_root=out_dir,
                    resume=resumable(out_dir, name) if config.resume else "",
                )
                t0 = time.perf_counter()
                opt = make_optimizer(config.optimizer, lr, clip, config.clip_mode, config.momentum)
                try:
                    result = runner.train(
                        run_config, name=name, **_train_fns(model, task, config, on_accel), optimizer=opt
                    )
                except runner.Diverged as e:  # recorded (metrics NaN); reported after the sweep
                    result = e.result
                if result.diverged_at is not None:
                    diverged.append(f"{name} at step {result.diverged_at}")
                row = {"cell": cell_name, "variant": variant, "seed": seed, "hidden": hidden, "lr": lr}
                row.update(clip=clip, run_dir=result.run_dir, steps=result.step, baseline=task.baseline)
                row["diverged_at"] = result.diverged_at
                row.update(test_metrics(model, task, result.params, tests))
                row["wall_s"] = round(time.perf_counter() - t0, 2)
                runs.append(row)
                plots.plot_run(result.run_dir, error_label=error_label)
                print(
                    f"[{len(runs)}/{total}] {cell_name} {variant_label}={variant} seed {seed}: "
                    f"{metric_label} {_fmt(row[metric])}"
                    + (f" (baseline {_fmt(task.baseline)})" if task.baseline is not None else "")
                    + (f", diverged at step {result.diverged_at}" if result.diverged_at is not None else "")
                    + f", {row['wall_s']:.1f} s",
                    file=sys.stderr if config.quiet else sys.stdout,
                    flush=True,
                )
                table = aggregate(runs, metric)
                write_json(
                    os.path.join(out_dir, "results.json"),
                    {
                        "experiment": experiment,
                        "metric": metric,
                        "error": error_label,
                        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
                        "runs": runs,
                        "table": table,
                        "published": {
                            (k if isinstance(k, str) else f"{k[0]}-{k[1]}"): v for k, v in published.items()
                        },
                        "source_tags": {f"[{k}]": v for k, v in SOURCE_TAGS.items()},
                        **(extra or {}),
                    },
                )
    table = aggregate(runs, metric)
    print(format_table(table, metric_label, variant_label, published))
    print(error_line)
    print(f"results: {out_dir}/results.json")
    plot_summary(
        table,
        os.path.join(out_dir, "summary.png"),
        metric_label,
        variant_label,
        title=experiment,
        log_y=metric == "test_loss",
    )
    runner.report_divergence(diverged, total, config, os.path.join(out_dir, "results.json"))
    return SweepResult(runs, table, out_dir)


def _train_fns(model: Model, task: Task, config: SweepConfig, on_accel: bool) -> dict:
    """``init_fn, loss_fn, sample_fn, eval_fn, flow_fn`` for :func:`experiments.runner.train`."""

    def loss_fn(params, batch):
        preds = model.predict(params, batch)
        return task.loss(preds, batch), {"error": task.error(preds, batch)}

    def eval_fn(params, key):
        batch = task.sample_test(key, config.eval_batch)
        preds = model.predict(params, batch)
        out = {"eval_loss": task.loss(preds, batch), "eval_error": task.error(preds, batch)}
        if _square_recurrence(params):
            out["rho"] = jr.spectral_radius(params["cell"]["W_hh"], method="power" if on_accel else "eig")
        return out

    def flow_fn(params, key):
        batch = task.sample_test(key, min(config.eval_batch, 64))
        loss = lambda ys: task.loss(model.readout(params, ys, batch), batch)
        return jr.gradient_flow(model.cell, params["cell"], batch.xs, loss, lengths=batch.lengths)

    return dict(
        init_fn=model.init,
        loss_fn=loss_fn,
        sample_fn=lambda key: task.sample(key, config.batch_size),
        eval_fn=eval_fn,
        flow_fn=flow_fn,
    )


if __name__ == "__main__":  # a library module: say so and name the scripts (exit 2)
    from experiments import not_a_script

    not_a_script("sweep", ("adding", "copying", "digits"))
