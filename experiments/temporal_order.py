"""Pascanu, Mikolov & Bengio 2013, Figure 7: temporal-order success rate against sequence length.

The temporal order problem (``experiments.tasks.temporal_order``, the authors' ``tempOrder.py``): a
sequence of ``L`` one-hot symbols, all distractors except an A or B at ``p0 in [0.1 L, 0.2 L)`` and
another at ``p1 in [0.5 L, 0.6 L)``; classify the pair (AA, BA, AB, BB) at the last step (chance:
75% wrong). A 50-unit Elman RNN reads its last state through a softmax layer. Three initialisations
(section 4.1.1; the second argument of ``N`` is the standard deviation, as in ``RNN.py``):

* ``sigmoid``: sigmoid units, ``W_in, W_hh, W_out ~ N(0, 0.01)``;
* ``basic_tanh``: tanh units, ``N(0, 0.1)`` everywhere;
* ``smart_tanh``: tanh units, ``W_in, W_out ~ N(0, 0.01)``, ``W_hh`` sparse with 15 non-zero
  connections per unit, rescaled to spectral radius 0.95 (``jr.initialisers.sparse(15, 0.95,
  per="outgoing")``: the authors' code zeroes per *row* of ``W_hh`` in the row convention
  ``h_t = f(h_{t-1} W_hh + ...)``, which is jaxrnn's, i.e. 15 outgoing connections per unit, while the
  paper's text says "incoming"; ``--sparse-per incoming`` gives the text's version);

all biases 0. Three training methods, plain SGD with learning rate 0.01, minibatches of 20, no
momentum (the paper's "MSGD" label notwithstanding, section 4.1.1 says no momentum):

* ``MSGD``: SGD (with only the code's NaN/Inf guard, ``jr.optim.pascanu_fallback()``, which fires
  when the gradient norm is non-finite or above 1e10 -- never in a healthy run);
* ``MSGD-C``: SGD with gradient-norm clipping at threshold 1 (``jr.optim.pascanu_sgd(0.01, 1)``);
* ``MSGD-CR``: as MSGD-C plus ``alpha * grad Omega`` added to the gradient before clipping
  (``jr.pascanu`` for Omega, ``jr.optim.add_regulariser_gradient``), alpha = 4 as in the paper's
  temporal-order runs (the code's default is 2).

A run succeeds when fewer than 1% of 10,000 fresh sequences are misclassified, within 5M updates
(the paper); 5 runs per point. The sweep trains every ``(init, method, length)`` point with all its
seeds at once and reports the fraction of seeds that succeeded.

Published values (Pascanu et al. 2013, Figure 7, digitised by reading off the plot; fraction of 5 runs):

==========  ========  ====  ====  ====  ====  ====
init        method     50   100   150   200   250
==========  ========  ====  ====  ====  ====  ====
sigmoid     MSGD       0.0   0.0   0.0   0.0   0.0
sigmoid     MSGD-C     0.0   0.0   0.0   0.0   0.0
sigmoid     MSGD-CR    1.0   1.0   1.0   1.0   0.8
basic tanh  MSGD       0.0   0.0    -     -     -
basic tanh  MSGD-C     1.0   0.0   0.0   0.0   0.0
basic tanh  MSGD-CR    1.0   1.0   1.0   1.0   1.0
smart tanh  MSGD       0.0   0.0   0.0   0.0   0.0
smart tanh  MSGD-C     1.0   1.0   0.4   0.0   0.0
smart tanh  MSGD-CR    1.0   1.0   1.0   1.0   1.0
==========  ========  ====  ====  ====  ====  ====

(at lengths ~15-20 every method succeeds, except sigmoid MSGD/MSGD-C: 0.2 at ~20; basic tanh MSGD is
1.0 at 35 and 0.4 at 45; basic tanh MSGD-C 0.8 / 0.6 / 0.4 at 55 / 65 / 75.)

Measured with ``--preset quick`` (3 seeds, at most 15,000 updates, error on 1,000 fresh sequences;
2-core CPU shared with other jobs, ``nice``; 14 min 21 s wall), success rate ours / paper::

    L = 20      MSGD        MSGD-C      MSGD-CR         L = 50      MSGD        MSGD-C      MSGD-CR
    sigmoid     0.00 / 0.2  0.00 / 0.2  0.33 / 1.0      sigmoid     0.00 / 0.0  0.00 / 0.0  0.00 / 1.0
    basic tanh  1.00 / 1.0  0.67 / 1.0  1.00 / 1.0      basic tanh  0.00 / 0.0  0.00 / 1.0  0.67 / 1.0
    smart tanh  0.67 / 1.0  0.67 / 1.0  1.00 / 1.0      smart tanh  0.00 / 0.0  0.67 / 1.0  0.67 / 1.0

Plain SGD never solves L = 50 (as in the paper); MSGD-CR solves every tanh seed at L = 20 in 1,000-2,000
updates (the others take up to 14,000 or fail) and is the best or equal best at L = 50. With 0.3% of the
paper's update budget the rates are lower bounds: the unsolved tanh runs at L = 50 are still moving
(best errors 0.1-0.6). Sigmoid units without Omega keep ``rho(W_hh)`` ~0.08 and Omega ~1 (the error
signal does not reach back at all) and stay at chance; with Omega ``rho`` grows to 4-11 (sigmoid's
slope is at most 1/4), which solves one seed at L = 20 but not L = 50 within 15,000 updates.

Command lines::

    python -m experiments.temporal_order --preset quick     # 2-core CPU, < 30 min, capped updates
    python -m experiments.temporal_order --preset paper     # the paper's protocol (accelerator, days)
    python -m experiments.temporal_order --preset quick --inits smart_tanh --lengths 50 --seeds 3

Why a loop of its own instead of ``experiments.runner.train``: a sweep point is ``seeds``
independent runs of up to 5M tiny updates (50 units, batch 20), and the grid has 45 points.
``runner.train`` does one run with one jitted call per update and compiles afresh for every run
(about 10 s each on the 2-core CPU, i.e. more than the quick preset's whole budget for short
lengths). Here the seeds of a point are trained together (``jax.vmap``: one compilation per point)
and ``eval_every`` updates are one jitted ``jax.lax.scan`` (no host round trip per update, which on
an accelerator costs more than the update itself); between chunks the host evaluates, logs one row
per seed to ``points/<init>_<method>_<length>.jsonl`` and freezes the seeds that succeeded. On the
CPU the per-update cost is about the same as ``runner.train``'s (measured ~1.4 vs ~1.6 ms per
seed-update at L = 50, MSGD-C); the gain there is the compilations saved. Each finished point is
appended to ``points.jsonl``, so ``--resume RUN_DIR`` skips the points already done (a point cut
short is redone; ``--log-every``, ``--checkpoint-every`` and ``--keep-checkpoints`` are not used by the
sweep). A last line of ``points.jsonl`` torn by a kill mid-write is cut off first
(:func:`experiments.runner.repair_jsonl`, one ``warning:`` line), so the redone point starts a line
of its own.

Divergence: a seed whose training loss (the mean over a chunk of ``eval_every`` updates) becomes NaN or
infinite is stopped there and recorded (``diverged_at`` per seed in the point; "diverged at" in the
table); it counts as not solved. After the sweep has written its results, the script exits with status
3 and one line naming the diverged seeds (:func:`experiments.runner.report_divergence`), unless
``--allow-divergence`` (then diverged seeds train on, as any other, and one warning line names them).

The building blocks (:func:`make_cell`, :func:`make_optimizer`, :func:`build`) are the ones
:mod:`experiments.demo` hands to ``runner.train``, and a test checks that this loop gives
``runner.train``'s parameters.

Outputs in ``runs/temporal_order/<timestamp>/``: ``results.json`` (config, one entry per point with
the per-seed outcome, the success rate and the paper's value), ``success_<init>.png``
(:func:`experiments.plots.plot_success`, ours solid, the paper's dashed) and the printed table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn as jr
from experiments import plots, runner, tasks

INITS = ("sigmoid", "basic_tanh", "smart_tanh")
METHODS = ("MSGD", "MSGD-C", "MSGD-CR")
N_IN, N_OUT = 6, 4  # temporal order: 6 one-hot symbols, 4 classes

# Pascanu et al. 2013, Figure 7, digitised off the plot: {init: {method: {length: success rate}}}.
# Lengths ~15 and ~20 are pixel estimates of the leftmost markers; sigmoid's "~22" may be 25.
PAPER = {
    "sigmoid": {
        "MSGD": {15: 1.0, 20: 0.2, 22: 0.0, 50: 0.0, 100: 0.0, 150: 0.0, 200: 0.0, 250: 0.0},
        "MSGD-C": {15: 1.0, 20: 0.2, 22: 0.0, 50: 0.0, 100: 0.0, 150: 0.0, 200: 0.0, 250: 0.0},
        "MSGD-CR": {15: 1.0, 20: 1.0, 22: 1.0, 50: 1.0, 100: 1.0, 150: 1.0, 200: 1.0, 250: 0.8},
    },
    "basic_tanh": {
        "MSGD": {15: 1.0, 20: 1.0, 35: 1.0, 45: 0.4, 50: 0.0, 55: 0.0, 65: 0.0, 75: 0.0, 100: 0.0},
        "MSGD-C": {
            **{15: 1.0, 20: 1.0, 35: 1.0, 45: 1.0, 50: 1.0, 55: 0.8, 65: 0.6, 75: 0.4},
            **{100: 0.0, 150: 0.0, 200: 0.0, 250: 0.0},
        },
        "MSGD-CR": {
            **{15: 1.0, 20: 1.0, 35: 1.0, 45: 1.0, 50: 1.0, 55: 1.0, 65: 1.0, 75: 1.0},
            **{100: 1.0, 150: 1.0, 200: 1.0, 250: 1.0},
        },
    },
    "smart_tanh": {
        "MSGD": {15: 1.0, 20: 1.0, 50: 0.0, 100: 0.0, 150: 0.0, 200: 0.0, 250: 0.0},
        "MSGD-C": {15: 1.0, 20: 1.0, 50: 1.0, 100: 1.0, 150: 0.4, 200: 0.0, 250: 0.0},
        "MSGD-CR": {15: 1.0, 20: 1.0, 50: 1.0, 100: 1.0, 150: 1.0, 200: 1.0, 250: 1.0},
    },
}


def paper_value(init: str, method: str, length: int) -> float | None:
    """The digitised Figure 7 success rate at ``length`` (``None`` where the figure has no marker)."""
    return PAPER.get(init, {}).get(method, {}).get(length)


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    batch_size: int = runner.arg(20, "minibatch size (the paper: 20)", min=1)
    inits: tuple[str, ...] = runner.arg(INITS, "initialisations to sweep", choices=INITS)
    methods: tuple[str, ...] = runner.arg(METHODS, "training methods to sweep", choices=METHODS)
    lengths: tuple[int, ...] = runner.arg((50, 100, 150, 200, 250), "sequence lengths L", min=10)
    seeds: int = runner.arg(5, "runs (seeds) per point; run i uses seed SEED + i", min=1)
    hidden: int = runner.arg(50, "hidden units", min=1)
    lr: float = runner.arg(0.01, "SGD learning rate", min=0.0)
    threshold: float = runner.arg(1.0, "gradient-norm clipping threshold (MSGD-C, MSGD-CR)", min=0.0)
    alpha: float = runner.arg(4.0, "weight of grad Omega in MSGD-CR (paper 4, code default 2)", min=0.0)
    sparse_per: str = runner.arg(
        "outgoing",
        "smart_tanh: 15 non-zeros per row (code) or per column (text)",
        choices=("outgoing", "incoming"),
    )
    eval_every: int = runner.arg(1000, "updates between success checks (one jitted chunk)", min=1)
    eval_size: int = runner.arg(10_000, "fresh sequences per success check", min=1)
    success: float = runner.arg(0.01, "a run succeeds when its error is below this fraction", min=0.0)
    time_limit: float = runner.arg(0.0, "stop the sweep after this many minutes (0: no limit)", min=0.0)


PRESETS = {
    # 2 CPU cores, < 30 minutes: capped updates, two lengths, three seeds, 1000 evaluation sequences.
    "quick": dict(steps=15_000, lengths=(20, 50), seeds=3, eval_every=1000, eval_size=1000, time_limit=27.0),
    # The paper: 5M updates at most, 5 seeds, 10,000 fresh sequences, lengths 50..250.
    "paper": dict(steps=5_000_000, lengths=(50, 100, 150, 200, 250), seeds=5, eval_every=2000),
    # For the tests: seconds.
    "smoke": dict(
        steps=4, lengths=(10,), seeds=2, hidden=4, eval_every=2, eval_size=16, batch_size=4, time_limit=0.0
    ),
}


# ----------------------------------------------------------------------------------------------
# building blocks (shared with experiments.demo)
# ----------------------------------------------------------------------------------------------


def make_cell(init: str, hidden: int, sparse_per: str = "outgoing") -> jr.Cell:
    """The Elman cell of the paper's initialisation ``init`` (see the module docstring)."""
    if init == "sigmoid":
        return jr.elman(hidden, "sigmoid", **_inits(0.01, jr.initialisers.normal(0.01)))
    if init == "basic_tanh":
        return jr.elman(hidden, "tanh", **_inits(0.1, jr.initialisers.normal(0.1)))
    if init == "smart_tanh":
        w_hh = jr.initialisers.sparse(15 if hidden >= 15 else hidden, 0.95, per=sparse_per)
        return jr.elman(hidden, "tanh", **_inits(0.01, w_hh))
    raise runner.UsageError(f"temporal_order: unknown init {init!r}; choose one of {', '.join(INITS)}")


def _inits(std_in: float, recurrent) -> dict:
    return dict(kernel_init=jr.initialisers.normal(std_in), recurrent_init=recurrent, bias_init="zeros")


def out_std(init: str) -> float:
    """``W_out``'s standard deviation: 0.1 for ``basic_tanh``, else 0.01 (0.1 for non-paper cells)."""
    return 0.01 if init in ("sigmoid", "smart_tanh") else 0.1


def make_optimizer(method: str, lr: float, threshold: float, alpha: float) -> optax.GradientTransformation:
    """SGD as in ``RNN.py``: ``MSGD`` (NaN/Inf guard only), ``MSGD-C`` (clip), ``MSGD-CR`` (+ alpha Omega).

    ``MSGD-CR`` is an ``optax.GradientTransformationExtraArgs`` that needs ``omega_grads=``.
    """
    if method == "MSGD":
        return jr.optim.pascanu_sgd(lr, threshold=None)
    if method == "MSGD-C":
        return jr.optim.pascanu_sgd(lr, threshold=threshold)
    if method == "MSGD-CR":
        return jr.optim.pascanu_sgd(lr, threshold=threshold, alpha=alpha)
    raise runner.UsageError(f"temporal_order: unknown method {method!r}; choose one of {', '.join(METHODS)}")


def build(
    cell: jr.Cell,
    task: tasks.Task,
    *,
    batch_size: int,
    w_out_std: float,
    omega: bool,
    eval_size: int,
    flow_size: int = 100,
):
    """The pure functions of one run: ``init_fn``, ``loss_fn``, ``sample_fn``, ``eval_fn``, ``flow_fn``.

    Params ``{"cell": cell params, "W_out": (H, 4), "b_out": (4,)}``; logits
    ``W_out^T h_L + b_out`` from the last valid state ``h_L`` (``jr.losses.last_valid``); loss: the
    task's mean cross-entropy. With ``omega=True`` the loss's aux carries
    ``update_args = {"omega_grads": grad_params Omega}`` (``jr.pascanu`` of the same loss on the same
    batch; only ``W_hh`` gets a non-zero gradient), which ``runner.train`` forwards to
    ``jr.optim.add_regulariser_gradient``; ``omega`` is logged too. ``eval_fn(params, key)`` gives
    ``eval_error`` on ``eval_size`` fresh sequences, ``rho`` = ``max|eig W_hh|`` (only for a square
    ``W_hh``) and ``omega``. These functions are what ``runner.train`` takes (``experiments.demo``)
    and what :func:`train_point` vmaps over seeds.
    """

    def sample_fn(key, batch=batch_size):
        return task.sample(key, batch)

    def init_fn(key):
        k_cell, k_out = jax.random.split(key)
        p = cell.init(k_cell, task.input_size)
        hidden = cell.output(cell.initial_carry(p, ())).shape[-1]
        w_out = w_out_std * jax.random.normal(k_out, (hidden, task.output_size), jnp.float32)
        return {"cell": p, "W_out": w_out, "b_out": jnp.zeros((task.output_size,), jnp.float32)}

    def readout(params, ys, batch):
        return jr.losses.last_valid(ys, batch.lengths) @ params["W_out"] + params["b_out"]

    def forward(params, batch):
        _, ys = jr.unroll(cell, params["cell"], batch.xs, lengths=batch.lengths)
        return readout(params, ys, batch)

    def omega_fn(params, batch):
        ys_loss = lambda ys: task.loss(readout(jax.lax.stop_gradient(params), ys, batch), batch)
        return jr.pascanu(cell, params["cell"], batch.xs, ys_loss, lengths=batch.lengths)

    def loss_fn(params, batch):
        logits = forward(params, batch)
        aux = {"error": task.error(logits, batch)}
        if omega:
            om, og = jax.value_and_grad(omega_fn)(jax.lax.stop_gradient(params), batch)
            aux["omega"] = om
            aux["update_args"] = {"omega_grads": og}
        return task.loss(logits, batch), aux

    def eval_fn(params, key):
        batch = task.sample_test(key, eval_size)
        out = {"eval_error": task.error(forward(params, batch), batch)}
        w = params["cell"].get("W_hh")
        if w is not None and w.shape[0] == w.shape[1]:
            out["rho"] = jr.spectral_radius(w, method="power")
        small = jax.tree.map(lambda a: a[:, :flow_size] if a.ndim > 1 else a[:flow_size], batch)
        out["omega"] = omega_fn(params, small)
        return out

    def flow_fn(params, key):
        batch = task.sample_test(key, flow_size)
        loss = lambda ys: task.loss(readout(params, ys, batch), batch)
        return jr.gradient_flow(cell, params["cell"], batch.xs, loss, lengths=batch.lengths)

    return dict(init_fn=init_fn, loss_fn=loss_fn, sample_fn=sample_fn, eval_fn=eval_fn, flow_fn=flow_fn)


# ----------------------------------------------------------------------------------------------
# the sweep: all seeds of a point at once, eval_every updates per jitted call
# ----------------------------------------------------------------------------------------------


def first_success(errors: Sequence[float], steps: Sequence[int], success: float) -> int | None:
    """The first step whose error is strictly below ``success`` (the paper: under 1%), else ``None``."""
    for e, s in zip(errors, steps):
        if e < success:
            return int(s)
    return None


def success_rate(outcomes: Sequence[int | None]) -> float:
    """The fraction of runs that succeeded (``outcomes``: success step or ``None`` per run)."""
    if not outcomes:
        raise ValueError("success_rate: no runs")
    return sum(o is not None for o in outcomes) / len(outcomes)


def _point_functions(config: Config, init: str, method: str, length: int):
    cell = make_cell(init, config.hidden, config.sparse_per)
    task = tasks.temporal_order(min_length=length, max_length=length)
    fns = build(
        cell,
        task,
        batch_size=config.batch_size,
        w_out_std=out_std(init),
        omega=method == "MSGD-CR",
        eval_size=config.eval_size,
    )
    return fns, make_optimizer(method, config.lr, config.threshold, config.alpha)


def train_point(
    config: Config, init: str, method: str, length: int, log=None, deadline=None, *, keep_params: bool = False
):
    """Train the ``config.seeds`` runs of one sweep point together; stop each at success.

    In plain Python, per seed ``s`` (key ``PRNGKey(config.seed + s)``, split as ``runner.train``)::

        params = init_fn(init_key); state = opt.init(params)
        for step in range(1, config.steps + 1):
            batch = sample_fn(fold_in(data_key, step))
            grads, aux = grad(loss_fn, has_aux=True)(params, batch)
            params, state = sgd_update(params, state, grads, **aux["update_args"])
            if step % config.eval_every == 0 or step == config.steps:
                err = eval_fn(params, fold_in(eval_key, step))["eval_error"]
                if not isfinite(mean loss of the chunk) and not config.allow_divergence:
                    diverged_at = step; break
                if err < config.success: success_step = step; break

    Returns ``{"init", "method", "length", "steps_done", "success_steps" (per seed, None when not
    solved), "diverged_at" (per seed: the first check at which the chunk's mean training loss was NaN
    or infinite, else None), "final_error", "best_error", "rho", "rate", "paper", "wall_s",
    "complete"}``; ``complete`` is False when ``deadline`` (a ``time.monotonic()`` value) cut it
    short. A diverged seed is frozen there (as a solved one is), unless ``config.allow_divergence``.
    ``log(row)`` gets one row per seed per check (``"diverged": true`` on the check that found it).
    With ``keep_params=True`` returns ``(point, params)``, the final parameters stacked over seeds
    (leading axis ``config.seeds``).
    """
    fns, opt = _point_functions(config, init, method, length)
    extra = isinstance(opt, optax.GradientTransformationExtraArgs)
    keys = jnp.stack([jax.random.split(jax.random.PRNGKey(config.seed + s), 3) for s in range(config.seeds)])
    init_keys, data_keys, eval_keys = keys[:, 0], keys[:, 1], keys[:, 2]

    def one_update(params, state, data_key, step):
        batch = fns["sample_fn"](jax.random.fold_in(data_key, step))
        (loss, aux), grads = jax.value_and_grad(fns["loss_fn"], has_aux=True)(params, batch)
        update_args = aux.pop("update_args", {})
        if extra:
            updates, state = opt.update(grads, state, params, **update_args)
        else:
            updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    def chunk(params, state, data_key, active, first, n):
        """``n`` updates from step ``first + 1``; frozen where not ``active`` (a finished seed)."""

        def body(carry, step):
            p, s = carry
            p2, s2, loss = one_update(p, s, data_key, step)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
            return (keep(p2, p), keep(s2, s)), loss

        (params, state), losses = jax.lax.scan(body, (params, state), first + 1 + jnp.arange(n))
        return params, state, jnp.mean(losses)

    chunk_v = jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, 0, None, None)), static_argnums=5)
    evaluate_v = jax.jit(jax.vmap(lambda p, k, s: fns["eval_fn"](p, jax.random.fold_in(k, s)), (0, 0, None)))

    t0 = time.monotonic()
    params = jax.vmap(fns["init_fn"])(init_keys)
    state = jax.vmap(opt.init)(params)
    n = config.seeds
    active = np.ones(n, bool)
    success_steps: list[int | None] = [None] * n
    diverged_at: list[int | None] = [None] * n
    best = [math.inf] * n
    last_error, rho = [math.nan] * n, [math.nan] * n
    step, complete = 0, True
    while step < config.steps and active.any():
        if deadline is not None and time.monotonic() > deadline:
            complete = False
            break
        k = min(config.eval_every, config.steps - step)
        params, state, losses = chunk_v(params, state, data_keys, jnp.asarray(active), step, k)
        step += k
        ev = jax.device_get(evaluate_v(params, eval_keys, step))
        losses = np.asarray(losses)
        for i in range(n):
            if not active[i]:
                continue
            err = float(ev["eval_error"][i])
            last_error[i], rho[i] = err, float(ev.get("rho", [math.nan] * n)[i])
            best[i] = min(best[i], err)
            diverged_now = diverged_at[i] is None and not math.isfinite(float(losses[i]))
            if diverged_now:
                diverged_at[i] = step
            if diverged_now and not config.allow_divergence:
                active[i] = False
            elif err < config.success:
                success_steps[i], active[i] = step, False
            if log is not None:
                row = {"step": step, "seed": config.seed + i, "loss": float(losses[i]), "eval_error": err}
                row.update({"rho": rho[i], "omega": float(ev["omega"][i]), "wall_s": time.monotonic() - t0})
                log(row | ({"diverged": True} if diverged_now else {}))
    point = {
        "init": init,
        "method": method,
        "length": length,
        "steps_done": step,
        "success_steps": success_steps,
        "diverged_at": diverged_at,
        "final_error": last_error,
        "best_error": best,
        "rho": rho,
        "rate": success_rate(success_steps),
        "paper": paper_value(init, method, length),
        "wall_s": round(time.monotonic() - t0, 2),
        "complete": complete,
    }
    return (point, params) if keep_params else point


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------


def aggregate(points: Sequence[dict]) -> dict:
    """``{init: {method: {length: rate}}}`` from the points (the last entry wins for a repeated point)."""
    out: dict = {}
    for p in points:
        out.setdefault(p["init"], {}).setdefault(p["method"], {})[int(p["length"])] = p["rate"]
    return out


def _fmt_rate(v) -> str:
    return "  -" if v is None else f"{v:.1f}"


def format_table(
    points: Sequence[dict], steps_cap: int, eval_size: int = 10_000, success: float = 0.01
) -> str:
    """The results table: per point our success rate, the paper's, updates, best error per seed."""
    head = (
        f"{'init':<11} {'method':<8} {'L':>4}  {'ours':>5} {'paper':>5}  {'updates':>9}  best error per seed"
    )
    lines = [head, "-" * len(head)]
    for p in points:
        errs = " ".join(f"{e:.3f}" for e in p["best_error"])
        solved = [s for s in p["success_steps"] if s is not None]
        note = f"  solved at {solved}" if solved else ""
        diverged = [s for s in p.get("diverged_at") or [] if s is not None]
        note += f"  diverged at {diverged}" if diverged else ""
        if not p["complete"]:
            note += "  (cut short by --time-limit)"
        lines.append(
            f"{p['init']:<11} {p['method']:<8} {p['length']:>4}  {p['rate']:>5.2f} {_fmt_rate(p['paper']):>5}"
            f"  {p['steps_done']:>9}  {errs}{note}"
        )
    lines.append(
        f"(ours: fraction of seeds with error < {success:g} on {eval_size} fresh sequences within "
        f"{steps_cap} updates; paper: 5 seeds, error < 0.01 on 10000 sequences within 5M updates)"
    )
    return "\n".join(lines)


def write_plots(points: Sequence[dict], run_dir: str) -> list[str]:
    """``success_<init>.png`` per init: ours (solid) and the paper's digitised values (dashed)."""
    ours = aggregate(points)
    written = []
    for init, by_method in ours.items():
        curves = {f"{m} (ours)": r for m, r in by_method.items()}
        for m in by_method:
            paper = {t: v for t, v in PAPER.get(init, {}).get(m, {}).items() if t >= 10}
            if paper:
                curves[f"{m} (paper)"] = paper
        path = os.path.join(run_dir, f"success_{init}.png")
        written.append(plots.plot_success(curves, path, f"temporal order, {init}"))
        _dash_paper_lines(path, curves)
    return written


def _dash_paper_lines(path: str, curves: dict) -> None:
    """Redraw with the paper's curves dashed (plot_success draws every curve solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colours = {}
    for name, by_length in curves.items():
        method = name.split(" ")[0]
        colour = colours.setdefault(method, f"C{len(colours)}")
        lengths = sorted(by_length)
        style = "--" if name.endswith("(paper)") else "-"
        marker = "x" if name.endswith("(paper)") else "o"
        ax.plot(lengths, [by_length[t] for t in lengths], style, marker=marker, color=colour, label=name)
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(os.path.basename(path)[:-4].replace("success_", "temporal order, "))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def _load_points(path: str) -> list[dict]:
    return runner.read_jsonl(path) if os.path.exists(path) else []


def main(argv=None):
    config = runner.config_cli(Config, PRESETS, argv, name="temporal_order", description=__doc__)
    if config.resume:
        run_dir = runner.resolve_run_dir(config.resume, config.run_root, "temporal_order")
    else:
        run_dir = runner.new_run_dir(config.run_root, "temporal_order")
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"name": "temporal_order", "config": dataclasses.asdict(config)}, f, indent=2)
    points_path = os.path.join(run_dir, "points.jsonl")
    if config.resume:
        runner.repair_jsonl(points_path)  # a kill mid-write: the redone point must start a line of its own
    done = {(p["init"], p["method"], p["length"]): p for p in _load_points(points_path) if p["complete"]}
    os.makedirs(os.path.join(run_dir, "points"), exist_ok=True)
    deadline = time.monotonic() + 60 * config.time_limit if config.time_limit else None
    say = (lambda *a: None) if config.quiet else (lambda *a: print(*a, flush=True))
    grid = [(i, m, t) for i in config.inits for m in config.methods for t in config.lengths]
    say(f"temporal order sweep: {len(grid)} points x {config.seeds} seeds, <= {config.steps} updates each")
    points, t_start = [], time.monotonic()
    for n, (init, method, length) in enumerate(grid, 1):
        if (init, method, length) in done:
            points.append(done[(init, method, length)])
            continue
        if deadline is not None and time.monotonic() > deadline:
            say(f"--time-limit {config.time_limit} min reached: {len(grid) - n + 1} points not run")
            break
        log_path = os.path.join(run_dir, "points", f"{init}_{method}_{length}.jsonl")
        with open(log_path, "w") as logf:
            log = lambda row: logf.write(json.dumps(row) + "\n")
            point = train_point(config, init, method, length, log=log, deadline=deadline)
        points.append(point)
        runner.append_jsonl(points_path, point)
        say(
            f"[{n}/{len(grid)}] {init:<10} {method:<7} L={length:<4} success {point['rate']:.2f} "
            f"(paper {_fmt_rate(point['paper']).strip()})  updates {point['steps_done']}  "
            f"best error {min(point['best_error']):.3f}  {point['wall_s']:.0f} s"
            + ("" if point["complete"] else "  [cut short]")
        )
    table = format_table(points, config.steps, config.eval_size, config.success)
    n_done = sum(p["complete"] for p in points)
    status = f"{n_done} of {len(grid)} points complete in {time.monotonic() - t_start:.0f} s"
    ran = {(p["init"], p["method"], p["length"]) for p in points if p["complete"]}
    missing = [f"{i}/{m}/{t}" for i, m, t in grid if (i, m, t) not in ran]
    if missing:
        status += f"; not complete (--time-limit {config.time_limit} min): {', '.join(missing)}"
    results = {
        "experiment": "Pascanu et al. 2013 Figure 7 (temporal order)",
        "config": dataclasses.asdict(config),
        "status": status,
        "points": points,
        "success": {
            i: {m: {str(t): r for t, r in by.items()} for m, by in v.items()}
            for i, v in aggregate(points).items()
        },
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    written = write_plots(points, run_dir) if points else []
    print(table)
    print(status)
    print(f"results: {os.path.join(run_dir, 'results.json')}; plots: {', '.join(written) or 'none'}")
    diverged = [
        f"{p['init']}/{p['method']}/{p['length']} seed {config.seed + i} at step {s}"
        for p in points
        for i, s in enumerate(p.get("diverged_at") or [])
        if s is not None
    ]
    n_runs = sum(len(p["success_steps"]) for p in points)
    runner.report_divergence(diverged, n_runs, config, os.path.join(run_dir, "results.json"))
    return results | {"run_dir": run_dir}


if __name__ == "__main__":
    runner.run_cli(main)
