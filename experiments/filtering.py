"""RNNs measured against the optimal filters: a Kalman filter and an HMM's forward filter.

The claim (Politecnico di Milano lecture "Recurrent Neural Networks", Ciccone): for a linear dynamical
system or a hidden Markov model the posterior over the hidden state is a deterministic function of the
data, computed by a recurrence -- and an RNN's hidden state can play that role. Here the recurrence
is known exactly, so an RNN trained on the data can be scored against the best any causal predictor
can do on the same held-out sequences.

**Part ``lds``** -- a fixed random linear-Gaussian state-space model (:func:`lds_system`, seeded by
``--lds-seed``): ``n = 4`` states, ``m = 2`` observations, ``x_{t+1} = A x_t + w_t``,
``y_t = C x_t + v_t``, ``A = U blockdiag(r_k R(theta_k)) U^T`` (``U`` a random orthogonal matrix,
``R(theta)`` 2-D rotations by random angles in ``[0.1 pi, 0.4 pi]``, radii ``r_k`` evenly from
``rho = 0.95`` down to ``0.8 rho``: spectral radius 0.95, so there is memory to exploit), ``C`` with
``N(0, 1/n)`` entries, ``Q = 0.1 I``, ``R = 0.1 I``, ``x_0 ~ N(0, P_inf)`` (the stationary covariance,
so every step has the same statistics). An LSTM / GRU with a linear readout to ``m`` outputs reads
``y_0 .. y_t`` and predicts ``y_{t+1}`` (teacher forced; loss = squared error summed over the ``m``
coordinates, averaged over the ``T - 1`` predicted steps and the batch; fresh sequences from
:func:`jaxrnn.lds.sample` every update). The held-out metric is that one-step MSE on ``--n-test``
fixed sequences. Lines on the same sequences:

* **Kalman** (the optimum): ``y_hat_{t+1} = C A m_t`` with ``m_t = E[x_t | y_0..y_t]`` the filtered
  means of :func:`jaxrnn.lds.kalman_filter` -- the conditional mean, so no predictor of ``y_{t+1}``
  from ``y_0..y_t`` has a lower expected squared error. Its expected value, ``mean_t tr(C P_{t+1|t}
  C^T + R)`` with ``P_{t+1|t} = A P_t A^T + Q`` from the filtered covariances, is reported too
  (``kalman_expected``): the held-out value scatters around it;
* **memory 1**: ``E[y_{t+1} | y_t] = Sigma_1 Sigma_0^{-1} y_t`` (``Sigma_0 = C P_inf C^T + R``,
  ``Sigma_1 = C A P_inf C^T``), the best predictor that sees only the last observation;
* **zero**: predict 0, the stationary mean (no data at all; the naive baseline of the figure);
* **last value**: predict ``y_t`` (worse than zero here: ``A`` rotates the state).

**Part ``hmm``** -- the "occasionally dishonest casino" (Durbin, Eddy, Krogh & Mitchison, "Biological
Sequence Analysis", 1998, chapter 3): a fair die and a loaded one (``p(6) = 1/2``, ``p(1..5) =
1/10``), switching fair -> loaded with probability 0.05 and loaded -> fair with 0.1; the chain starts
from its stationary distribution (2/3 fair, 1/3 loaded; our choice). An LSTM / GRU tagger reads the
one-hot rolls and outputs, at every step, a softmax over {fair, loaded}, trained by cross-entropy with
the true hidden states (:func:`jaxrnn.hmm.sample`). Held-out metrics: the log-loss ``mean -ln q(z_t)``
(nats per step) and the argmax accuracy, against:

* **forward filter** (the optimum): ``p(z_t | y_0..y_t)`` of :func:`jaxrnn.hmm.forward` -- the
  causal posterior, the right comparison for a unidirectional RNN (its argmax also maximises the
  expected accuracy of a causal tagger);
* **smoother** ``p(z_t | y_0..y_{T-1})`` (:func:`jaxrnn.hmm.smoother`) and **Viterbi** (the most
  probable path, :func:`jaxrnn.hmm.viterbi`): they see the future, a bidirectional bound that no
  causal tagger reaches (their gap is negative);
* **prior**: the stationary distribution at every step (log-loss) / "always fair" (accuracy).

``gap`` = how much worse than the optimum (held-out metric - optimum for the MSE and log-loss,
optimum - accuracy for the accuracy); ``gap %`` = gap / optimum. The optimum is the exact posterior,
so the gap's expectation is >= 0 (for the log-loss it is the mean KL divergence from the posterior),
but on a finite held-out set it can come out slightly negative.

Training: :func:`experiments.runner.train` per (part, cell, seed): Adam, learning rate 3e-3 decayed to
0 over ``--steps`` by a cosine (``--schedule constant`` keeps it), gradient-norm clipping at 1, batch
32, ``T = 100``, ``H = 32``, forget-gate bias 1 for the LSTM.

Measured with ``--preset quick`` (2-core CPU development machine shared with other jobs,
``JAX_PLATFORMS=cpu``; 1 min 43 s - 1 min 46 s wall for the 4 runs, 21-29 s each; two runs gave the same
numbers), seed 0, held-out set of 1000 sequences of T = 100, the table as printed::

    part  method                             held-out metric  value   optimum  gap         gap %
    ----  ---------------------------------  ---------------  ------  -------  ----------  --------
    lds   lstm                               one-step MSE     0.4339  0.4331   +0.0007995  +0.18%
    lds   gru                                one-step MSE     0.4339  0.4331   +0.0007325  +0.17%
    lds   Kalman filter C A m_t (optimum)    one-step MSE     0.4331  0.4331   +0          +0.00%
    lds   Kalman expected tr(C P C'+R)       one-step MSE     0.4332  0.4331   +5.671e-05  +0.01%
    lds   memory 1: E[y_t+1 | y_t]           one-step MSE     0.5826  0.4331   +0.1494     +34.50%
    lds   zero (stationary mean)             one-step MSE     1.069   0.4331   +0.6355     +146.73%
    lds   last value y_t                     one-step MSE     1.412   0.4331   +0.9786     +225.94%
    hmm   lstm                               log-loss (nats)  0.4822  0.482    +0.0001769  +0.04%
    hmm   gru                                log-loss (nats)  0.482   0.482    +5.686e-05  +0.01%
    hmm   forward filter (optimum)           log-loss (nats)  0.482   0.482    +0          +0.00%
    hmm   smoother (sees the future)         log-loss (nats)  0.4081  0.482    -0.07385    -15.32%
    hmm   prior (stationary)                 log-loss (nats)  0.6345  0.482    +0.1525     +31.64%
    hmm   lstm                               accuracy         0.7736  0.7736   +4.998e-05  +0.01%
    hmm   gru                                accuracy         0.7739  0.7736   -0.0002     -0.03%
    hmm   filter argmax (optimum)            accuracy         0.7736  0.7736   +0          +0.00%
    hmm   smoother argmax (sees the future)  accuracy         0.8163  0.7736   -0.04262    -5.51%
    hmm   Viterbi path (sees the future)     accuracy         0.7912  0.7736   -0.01756    -2.27%
    hmm   always fair                        accuracy         0.6696  0.7736   +0.1041     +13.45%

Both cells beat the memory-1 predictor within 20-30 updates and end 0.17-0.18% above the Kalman
floor (their gap is still shrinking, roughly as 1 / updates); on the casino they reach the forward
filter's log-loss to 0.01-0.04% and its accuracy to 0.03 percentage points -- the hidden state of a
32-unit RNN, trained only on the data, carries what the optimal filter's belief carries. The smoother
and Viterbi stay out of reach, as they must for a causal tagger.

Commands::

    python -m experiments.filtering --preset quick                  # 2-core CPU, ~2 min
    python -m experiments.filtering --preset paper                  # 20,000 updates, 3 seeds, H = 64
    python -m experiments.filtering --preset quick --parts hmm --cells gru --hidden 8
    python -m experiments.filtering --preset quick --rho 0.99 --obs-noise 1.0   # another LDS
    python -m experiments.filtering --resume latest                 # continue a killed run

Outputs in ``runs/filtering/<timestamp>/``: ``results.json`` (the systems, the optimum and baseline
values, every run's held-out metrics and gaps, the table), ``summary.png`` (one column per part, LDS
one-step MSE and HMM log-loss: on top each RNN's held-out metric against updates with the optimum and
the baselines as horizontal lines, below the same as the gap to the optimum on a log scale; a copy is
``experiments/figures/filtering.png``), and per run ``<part>-<cell>-seed<s>/<timestamp>/`` with
``metrics.jsonl`` (``eval_loss`` = the held-out metric, ``eval_gap`` = its gap, ``eval_error`` = 1 -
the held-out accuracy for the HMM), ``losses.png`` and checkpoints.

References: R. E. Kalman, "A new approach to linear filtering and prediction problems", 1960; R. Durbin,
S. Eddy, A. Krogh and G. Mitchison, "Biological Sequence Analysis", Cambridge University Press, 1998;
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech recognition",
Proc. IEEE 77(2), 1989.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn as jr
from experiments import plots, runner, sweep
from jaxrnn import hmm, lds

__all__ = [
    "CASINO",
    "CELLS",
    "Config",
    "FilteringResult",
    "PARTS",
    "PRESETS",
    "TABLE_NOTE",
    "casino",
    "format_table",
    "hmm_baselines",
    "hmm_test_set",
    "lds_baselines",
    "lds_system",
    "lds_test_set",
    "main",
    "make_model",
    "plot_summary",
    "table_rows",
]

NAME = "filtering"
PARTS = ("lds", "hmm")
CELLS = {"lstm": lambda h: jr.lstm(h, forget_bias=1.0), "gru": lambda h: jr.gru(h)}
TEST_KEY = 19_600_301  # the held-out sequences: the same for every cell and seed
_F32 = jnp.float32

CASINO = {
    "states": ("fair", "loaded"),
    "transition": ((0.95, 0.05), (0.1, 0.9)),
    "emission": ((1 / 6,) * 6, (0.1,) * 5 + (0.5,)),
    "initial": (2 / 3, 1 / 3),
}
"""Durbin et al.'s occasionally dishonest casino: ``transition[i][j] = p(z_{t+1} = j | z_t = i)``,
``emission[k][r] = p(roll r + 1 | z = k)``, ``initial`` = the stationary distribution."""


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    steps: int = runner.arg(3000, "parameter updates per run", min=1)
    batch_size: int = runner.arg(32, "sequences per update", min=1)
    log_every: int = runner.arg(10, "evaluate on the held-out set and log every this many updates", min=1)
    checkpoint_every: int = runner.arg(1000, "write a checkpoint every this many updates", min=1)
    parts: tuple[str, ...] = runner.arg(
        PARTS, "lds: Kalman filter; hmm: the casino's forward filter", choices=PARTS
    )
    cells: tuple[str, ...] = runner.arg(tuple(CELLS), "cells to train", choices=tuple(CELLS))
    seeds: int = runner.arg(1, "runs per (part, cell): --seed, --seed + 1, ...", min=1)
    hidden: int = runner.arg(32, "hidden units", min=1)
    length: int = runner.arg(100, "sequence length T (observations per sequence)", min=2)
    lr: float = runner.arg(3e-3, "Adam learning rate", min=0.0)
    schedule: str = runner.arg(
        "cosine",
        "learning rate: 'cosine' decays it to 0 over --steps; 'constant'",
        choices=("cosine", "constant"),
    )
    clip: float = runner.arg(1.0, "gradient-norm clipping threshold (0: none)", min=0.0)
    n_test: int = runner.arg(1000, "held-out sequences (every logged step and the table)", min=1)
    lds_seed: int = runner.arg(0, "seed of the random LDS (A, C)", min=0)
    states: int = runner.arg(4, "LDS state dimension n", min=1)
    observations: int = runner.arg(2, "LDS observation dimension m", min=1)
    rho: float = runner.arg(0.95, "spectral radius of the LDS's A (< 1)", min=0.0)
    process_noise: float = runner.arg(0.1, "LDS Q = PROCESS_NOISE * I (> 0)", min=0.0)
    obs_noise: float = runner.arg(0.1, "LDS R = OBS_NOISE * I (> 0)", min=0.0)

    def __post_init__(self):
        super().__post_init__()
        for name in ("parts", "cells"):
            sweep.distinct(getattr(self, name), f"--{name}")
        if self.rho >= 1:
            raise ValueError(
                f"--rho must be < 1 (a stable A, with a stationary distribution); got {self.rho}"
            )
        for name in ("process_noise", "obs_noise"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0; got {getattr(self, name)}")


PRESETS = {
    "quick": dict(
        steps=3000, batch_size=32, hidden=32, length=100, lr=3e-3, log_every=10, checkpoint_every=1000,
        n_test=1000, seeds=1,
    ),
    "paper": dict(
        steps=20_000, batch_size=64, hidden=64, length=100, lr=3e-3, log_every=250, checkpoint_every=5000,
        n_test=5000, seeds=3,
    ),
    "smoke": dict(
        cells=("gru",), steps=3, batch_size=4, hidden=3, length=8, log_every=2, checkpoint_every=2, n_test=6,
    ),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# the two systems, their held-out sets and their optimal filters


def lds_system(config: Config) -> dict:
    """The fixed random LDS of ``config`` (``--lds-seed``, ``--states``, ``--observations``, ``--rho``,
    ``--process-noise``, ``--obs-noise``): :func:`jaxrnn.lds.kalman_filter`'s params dict (float32).

    ``A = U D U^T``: ``U`` orthogonal (QR of a Gaussian matrix, signs fixed), ``D`` block-diagonal with
    2-D rotations by angles uniform in ``[0.1 pi, 0.4 pi]`` scaled by radii evenly spaced from ``rho``
    to ``0.8 rho`` (a 1x1 block ``0.8 rho`` last when ``n`` is odd), so the spectral radius is ``rho``.
    ``C ~ N(0, 1/n)``, ``Q = q I``, ``R = r I``, ``mu0 = 0``, ``P0`` the stationary covariance
    (``P = A P A^T + Q``, solved exactly by vectorisation).
    """
    n, m, rho = config.states, config.observations, config.rho
    rng = np.random.default_rng(config.lds_seed)
    g = rng.standard_normal((n, n))
    U, upper = np.linalg.qr(g)
    U = U * np.sign(np.diag(upper))
    blocks = (n + 1) // 2
    radii = np.linspace(rho, 0.8 * rho, blocks) if blocks > 1 else np.array([rho])
    D = np.zeros((n, n))
    for i in range(n // 2):
        th = rng.uniform(0.1 * np.pi, 0.4 * np.pi)
        D[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = radii[i] * np.array(
            [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
        )
    if n % 2:
        D[-1, -1] = radii[-1]
    A = U @ D @ U.T
    C = rng.standard_normal((m, n)) / math.sqrt(n)
    Q = config.process_noise * np.eye(n)
    R = config.obs_noise * np.eye(m)
    P = np.linalg.solve(np.eye(n * n) - np.kron(A, A), Q.reshape(-1)).reshape(n, n)
    P = 0.5 * (P + P.T)
    params = {"A": A, "C": C, "Q": Q, "R": R, "mu0": np.zeros(n), "P0": P}
    return {k: jnp.asarray(v, _F32) for k, v in params.items()}


def lds_test_set(config: Config, params: Mapping | None = None) -> jax.Array:
    """The held-out observations ``ys (T, n_test, m)`` (float32; a fixed key, the same for every run)."""
    params = lds_system(config) if params is None else params
    key = jax.random.fold_in(jax.random.PRNGKey(TEST_KEY), 0)
    return _lds_sample(params, key, config.length, config.n_test)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _lds_sample(params, key, T: int, batch: int):
    """``ys (T, batch, m)`` of :func:`jaxrnn.lds.sample` (one compiled call, not op by op)."""
    return lds.sample(params, key, T, (batch,))[1]


def _sq_err(pred, target):
    """Mean over steps and sequences of the squared error summed over the observation coordinates."""
    return jnp.mean(jnp.sum((target - pred) ** 2, axis=-1))


def lds_baselines(params: Mapping, ys) -> dict:
    """One-step MSEs on ``ys (T, B, m)`` (predicting ``ys[1:]``): ``kalman`` (``C A m_t``, the optimum),
    ``kalman_expected`` (its expectation from the filter's covariances), ``memory1`` (``E[y_{t+1} |
    y_t]``), ``zero``, ``last_value``. Floats."""
    return {k: float(v) for k, v in _lds_baselines(params, ys).items()}


@jax.jit
def _lds_baselines(params, ys):
    A, C, Q, R, P = (params[k] for k in ("A", "C", "Q", "R", "P0"))
    _, means, covs = lds.kalman_filter(params, ys)
    pred = means[:-1] @ (C @ A).T
    P_pred = A @ covs[:-1] @ A.T + Q  # P_{t+1|t}
    expected = jnp.mean(jnp.trace(C @ P_pred @ C.T + R, axis1=-2, axis2=-1))
    sigma0, sigma1 = C @ P @ C.T + R, C @ A @ P @ C.T
    W = jnp.linalg.solve(sigma0, sigma1.T).T  # Sigma_1 Sigma_0^{-1} (Sigma_0 symmetric)
    return {
        "kalman": _sq_err(pred, ys[1:]),
        "kalman_expected": expected,
        "memory1": _sq_err(ys[:-1] @ W.T, ys[1:]),
        "zero": _sq_err(jnp.zeros_like(ys[1:]), ys[1:]),
        "last_value": _sq_err(ys[:-1], ys[1:]),
    }


def casino() -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log_pi (2,), log_A (2, 2), log_emit (2, 6))`` of :data:`CASINO` (float32)."""
    return tuple(jnp.log(jnp.asarray(CASINO[k], _F32)) for k in ("initial", "transition", "emission"))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _sample_casino(key, T: int, batch: int):
    """``(z (T, B) int32 hidden states, rolls (T, B) int32 in 0..5)``."""
    log_pi, log_A, log_emit = casino()
    kz, ky = jax.random.split(key)
    z = hmm.sample(log_pi, log_A, kz, T, (batch,))
    return z, jax.random.categorical(ky, log_emit[z]).astype(jnp.int32)


def hmm_test_set(config: Config) -> tuple[jax.Array, jax.Array]:
    """The held-out ``(z (T, n_test), rolls (T, n_test))`` (a fixed key, the same for every run)."""
    return _sample_casino(jax.random.fold_in(jax.random.PRNGKey(TEST_KEY), 1), config.length, config.n_test)


def _log_loss(probs, z):
    return -jnp.mean(jnp.log(jnp.take_along_axis(probs, z[..., None], axis=-1)))


def hmm_baselines(z, rolls) -> dict:
    """Held-out log-losses (nats per step) and accuracies of the exact inference of :data:`CASINO`:
    ``filter_*`` (:func:`jaxrnn.hmm.forward`, the causal optimum), ``smoother_*``, ``viterbi_accuracy``,
    ``prior_log_loss``, ``always_fair_accuracy``. Floats."""
    return {k: float(v) for k, v in _hmm_baselines(z, rolls).items()}


@jax.jit
def _hmm_baselines(z, rolls):
    log_pi, log_A, log_emit = casino()
    log_obs = log_emit.T[rolls]  # (T, B, K): log p(roll | z = k)
    _, filtered = hmm.forward(log_pi, log_A, log_obs)
    _, smoothed = hmm.smoother(log_pi, log_A, log_obs)
    path, _ = hmm.viterbi(log_pi, log_A, log_obs)
    prior = jnp.broadcast_to(jnp.exp(log_pi), filtered.shape)
    return {
        "filter_log_loss": _log_loss(filtered, z),
        "smoother_log_loss": _log_loss(smoothed, z),
        "prior_log_loss": _log_loss(prior, z),
        "filter_accuracy": jnp.mean(jnp.argmax(filtered, -1) == z),
        "smoother_accuracy": jnp.mean(jnp.argmax(smoothed, -1) == z),
        "viterbi_accuracy": jnp.mean(path == z),
        "always_fair_accuracy": jnp.mean(z == 0),
    }


# ----------------------------------------------------------------------------------------------
# the model and the training functions


class Model(NamedTuple):
    """A cell with a linear readout of every step's state."""

    init: Callable[[jax.Array], dict]  # key -> params {"cell", "W_out", "b_out"}
    apply: Callable[[dict, jax.Array], jax.Array]  # (params, xs (T, B, I)) -> outputs (T, B, O)


def make_model(cell_name: str, hidden: int, input_size: int, output_size: int) -> Model:
    """``CELLS[cell_name](hidden)`` and a linear readout of every step's output, ``W_out ~ N(0, 1/H)``."""
    cell = CELLS[cell_name](hidden)

    def init(key):
        k_cell, k_out = jax.random.split(key)
        return {
            "cell": cell.init(k_cell, input_size),
            "W_out": jax.random.normal(k_out, (hidden, output_size), _F32) / math.sqrt(hidden),
            "b_out": jnp.zeros((output_size,), _F32),
        }

    def apply(params, xs):
        _, hs = jr.unroll(cell, params["cell"], xs)
        return hs @ params["W_out"] + params["b_out"]

    return Model(jax.jit(init), apply)


def _lds_fns(config: Config, model: Model, params_lds, test_ys, optimum: float) -> dict:
    def predict_mse(p, ys):
        return _sq_err(model.apply(p, ys[:-1]), ys[1:])

    def loss_fn(p, ys):
        return predict_mse(p, ys), {}

    def eval_fn(p, key):
        mse = predict_mse(p, test_ys)
        return {"eval_loss": mse, "eval_gap": mse - optimum}

    def sample_fn(key):
        return lds.sample(params_lds, key, config.length, (config.batch_size,))[1]

    return dict(init_fn=model.init, loss_fn=loss_fn, sample_fn=sample_fn, eval_fn=eval_fn)


def _hmm_fns(config: Config, model: Model, test_z, test_rolls, optimum: float) -> dict:
    def scores(p, z, rolls):
        logits = model.apply(p, jax.nn.one_hot(rolls, 6, dtype=_F32))
        log_q = jax.nn.log_softmax(logits)
        ce = -jnp.mean(jnp.take_along_axis(log_q, z[..., None], axis=-1))
        return ce, jnp.mean(jnp.argmax(logits, -1) != z)

    def loss_fn(p, batch):
        ce, err = scores(p, *batch)
        return ce, {"error": err}

    def eval_fn(p, key):
        ce, err = scores(p, test_z, test_rolls)
        return {"eval_loss": ce, "eval_error": err, "eval_gap": ce - optimum}

    def sample_fn(key):
        return _sample_casino(key, config.length, config.batch_size)

    return dict(init_fn=model.init, loss_fn=loss_fn, sample_fn=sample_fn, eval_fn=eval_fn)


HMM_ERROR = "fraction of held-out steps whose die (fair / loaded) the argmax gets wrong"
METRIC = {"lds": "one-step MSE", "hmm": "log-loss (nats)"}


# ----------------------------------------------------------------------------------------------
# table and figure


def _fmt(v, signed: bool = False) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "nan"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _pct(v) -> str:
    if not math.isfinite(v):
        return "nan"
    return f"{v:+.2f}%" if abs(v) < 1e4 else f"{v:+.3g}%"


def table_rows(runs: Sequence[Mapping], optima: Mapping[str, Mapping]) -> list[dict]:
    """The table: per part, each run's held-out metric, then the optimum and the reference lines.

    Each row: ``part``, ``method``, ``metric``, ``value``, ``optimum``, ``gap`` (how much worse than
    the optimum: value - optimum for a loss, optimum - value for an accuracy), ``gap_pct``.
    """
    rows = []

    def add(part, method, metric, value, optimum, higher_is_better=False):
        gap = (optimum - value) if higher_is_better else (value - optimum)
        pct = 100 * gap / optimum if optimum else math.nan
        rows.append(
            {"part": part, "method": method, "metric": metric, "value": value, "optimum": optimum}
            | {"gap": gap, "gap_pct": pct}
        )

    seeds = len({r["seed"] for r in runs}) > 1
    label = lambda r: (
        r["cell"]
        + (f" seed {r['seed']}" if seeds else "")
        + (f" (diverged at {r['diverged_at']})" if r.get("diverged_at") is not None else "")
    )
    if "lds" in optima:
        b, opt = optima["lds"], optima["lds"]["kalman"]
        for r in runs:
            if r["part"] == "lds":
                add("lds", label(r), METRIC["lds"], r["test_mse"], opt)
        add("lds", "Kalman filter C A m_t (optimum)", METRIC["lds"], opt, opt)
        add("lds", "Kalman expected tr(C P C'+R)", METRIC["lds"], b["kalman_expected"], opt)
        add("lds", "memory 1: E[y_t+1 | y_t]", METRIC["lds"], b["memory1"], opt)
        add("lds", "zero (stationary mean)", METRIC["lds"], b["zero"], opt)
        add("lds", "last value y_t", METRIC["lds"], b["last_value"], opt)
    if "hmm" in optima:
        b = optima["hmm"]
        opt = b["filter_log_loss"]
        for r in runs:
            if r["part"] == "hmm":
                add("hmm", label(r), METRIC["hmm"], r["test_log_loss"], opt)
        add("hmm", "forward filter (optimum)", METRIC["hmm"], opt, opt)
        add("hmm", "smoother (sees the future)", METRIC["hmm"], b["smoother_log_loss"], opt)
        add("hmm", "prior (stationary)", METRIC["hmm"], b["prior_log_loss"], opt)
        opt = b["filter_accuracy"]
        for r in runs:
            if r["part"] == "hmm":
                add("hmm", label(r), "accuracy", r["test_accuracy"], opt, True)
        add("hmm", "filter argmax (optimum)", "accuracy", opt, opt, True)
        add("hmm", "smoother argmax (sees the future)", "accuracy", b["smoother_accuracy"], opt, True)
        add("hmm", "Viterbi path (sees the future)", "accuracy", b["viterbi_accuracy"], opt, True)
        add("hmm", "always fair", "accuracy", b["always_fair_accuracy"], opt, True)
    return rows


TABLE_NOTE = (
    "gap: how much worse than the optimum (metric - optimum; optimum - accuracy); gap %: gap / optimum. "
    "held-out metrics on the same fixed sequences for every row"
)


def format_table(rows: Sequence[Mapping]) -> str:
    """``part  method  held-out metric  value  optimum  gap  gap %``, then :data:`TABLE_NOTE`."""
    header = ["part", "method", "held-out metric", "value", "optimum", "gap", "gap %"]
    lines = [
        [
            r["part"],
            r["method"],
            r["metric"],
            _fmt(r["value"]),
            _fmt(r["optimum"]),
            _fmt(r["gap"], signed=True),
            _pct(r["gap_pct"]),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), TABLE_NOTE])


def plot_summary(runs: Sequence[Mapping], curves: Sequence, optima: Mapping[str, Mapping], path: str) -> str:
    """One column per part. Top: each run's held-out metric against updates (``curves[i]``: run ``i``'s
    logged rows), the optimum (solid black) and the reference lines (dotted / dashed). Bottom: the same
    as the gap to the optimum, log scale (non-positive values, possible on a finite held-out set, are
    not drawn). Log x when there are at least 5 logged steps."""
    plt = plots.pyplot()
    parts = [p for p in PARTS if p in optima]
    fig, axes = plt.subplots(2, len(parts), figsize=(5.6 * len(parts), 6.4), squeeze=False)
    lines = {
        "lds": [
            ("kalman", "Kalman filter (optimum)", "k", "-"),
            ("memory1", "E[y_t+1 | y_t] (memory 1)", "0.45", "-."),
            ("zero", "zero (stationary mean)", "0.45", "--"),
        ],
        "hmm": [
            ("filter_log_loss", "forward filter (optimum)", "k", "-"),
            ("smoother_log_loss", "smoother (sees the future)", "k", ":"),
            ("prior_log_loss", "prior (stationary)", "0.45", "--"),
        ],
    }
    titles = {"lds": "LDS: predict y_t+1 from y_0..y_t", "hmm": "casino HMM: p(fair/loaded | rolls so far)"}
    seeds = len({r["seed"] for r in runs}) > 1
    for col, part in enumerate(parts):
        top, bottom = axes[0][col], axes[1][col]
        b = optima[part]
        opt = b[lines[part][0][0]]
        n_logged = 0
        for r, rows in zip(runs, curves):
            pts = [(row["step"], row["eval_loss"]) for row in rows if "eval_loss" in row]
            if r["part"] != part or not pts:
                continue
            n_logged = max(n_logged, len(pts))
            label = r["cell"] + (f" seed {r['seed']}" if seeds else "")
            style = ".-" if len(pts) <= 50 else "-"  # markers only where they can be told apart
            (line,) = top.plot(*zip(*pts), style, ms=3, lw=1, label=f"{label} (gap {r['gap_pct']:+.2g}%)")
            gaps = [(s, v - opt) for s, v in pts if v - opt > 0]
            if gaps:
                bottom.plot(*zip(*gaps), style, ms=3, lw=1, color=line.get_color(), label=label)
        for key, label, color, style in lines[part]:
            top.axhline(b[key], color=color, linestyle=style, lw=1.2, label=f"{label} {b[key]:.4g}")
            if b[key] - opt > 0:
                bottom.axhline(b[key] - opt, color=color, linestyle=style, lw=1.2, label=label)
        hi = max(b[key] for key, *_ in lines[part])
        lo = min(b[key] for key, *_ in lines[part])
        top.set_ylim(lo - 0.05 * (hi - lo), hi + 0.15 * (hi - lo))
        top.set_title(titles[part], fontsize=10)
        top.set_ylabel(f"held-out {METRIC[part]}")
        bottom.set_ylabel("gap to the optimum")
        if bottom.get_lines():
            bottom.set_yscale("log")
        for ax in (top, bottom):
            if n_logged >= 5:
                ax.set_xscale("log")
            ax.set_xlabel("updates")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# the script


class FilteringResult(NamedTuple):
    """What :func:`main` returns: every run, the optimum / baseline values per part, the table rows."""

    runs: list[dict]
    optima: dict
    table: list[dict]
    sweep_dir: str


def main(argv=None):
    config = runner.config_cli(Config, PRESETS, argv, name=NAME, description=__doc__)
    sweep_dir = sweep.start(config, NAME)
    say = (lambda *a: None) if config.quiet else (lambda *a: print(*a, flush=True))
    log = sys.stderr if config.quiet else sys.stdout

    # the held-out sets and the optimal filters on them
    optima, systems, fns_for = {}, {}, {}
    if "lds" in config.parts:
        params_lds = lds_system(config)
        test_ys = lds_test_set(config, params_lds)
        optima["lds"] = b = lds_baselines(params_lds, test_ys)
        systems["lds"] = {k: np.asarray(v).tolist() for k, v in params_lds.items()}
        say(
            f"lds: n={config.states}, m={config.observations}, rho(A)={config.rho}, "
            f"Q={config.process_noise} I, R={config.obs_noise} I; held-out one-step MSE on "
            f"{config.n_test} sequences of T={config.length}: Kalman {b['kalman']:.4g} (expected "
            f"{b['kalman_expected']:.4g}), memory-1 {b['memory1']:.4g}, zero {b['zero']:.4g}, last value "
            f"{b['last_value']:.4g}"
        )
        fns_for["lds"] = lambda model: _lds_fns(config, model, params_lds, test_ys, b["kalman"])
    if "hmm" in config.parts:
        test_z, test_rolls = hmm_test_set(config)
        optima["hmm"] = h = hmm_baselines(test_z, test_rolls)
        systems["hmm"] = CASINO
        say(
            f"hmm: Durbin et al.'s casino; held-out {config.n_test} sequences of T={config.length}: log-loss "
            f"filter {h['filter_log_loss']:.4g}, smoother {h['smoother_log_loss']:.4g}, prior "
            f"{h['prior_log_loss']:.4g}; accuracy filter {h['filter_accuracy']:.4g}, Viterbi "
            f"{h['viterbi_accuracy']:.4g}, smoother {h['smoother_accuracy']:.4g}"
        )
        fns_for["hmm"] = lambda model: _hmm_fns(config, model, test_z, test_rolls, h["filter_log_loss"])
    sizes = {"lds": (config.observations, config.observations), "hmm": (6, 2)}

    runs, curves, diverged = [], [], []
    total = len(config.parts) * len(config.cells) * config.seeds
    for part in (p for p in PARTS if p in config.parts):
        for cell_name in config.cells:
            model = make_model(cell_name, config.hidden, *sizes[part])
            for seed in range(config.seed, config.seed + config.seeds):
                name = f"{part}-{cell_name}-seed{seed}"
                run_config = dataclasses.replace(
                    config,
                    parts=(part,),
                    cells=(cell_name,),
                    seeds=1,
                    seed=seed,
                    run_root=sweep_dir,
                    resume=sweep.resumable(sweep_dir, name) if config.resume else "",
                )
                t0 = time.perf_counter()
                try:
                    result = runner.train(
                        run_config,
                        name=name,
                        optimizer=sweep.adam(config.lr, config.steps, config.schedule, config.clip),
                        **fns_for[part](model),
                    )
                except runner.Diverged as e:  # recorded (metrics NaN); reported after every run
                    result = e.result
                if result.diverged_at is not None:
                    diverged.append(f"{name} at step {result.diverged_at}")
                last = result.rows[-1] if result.rows else {}
                value = last.get("eval_loss", math.nan)
                opt = optima[part]["kalman" if part == "lds" else "filter_log_loss"]
                row = {"part": part, "cell": cell_name, "seed": seed, "hidden": config.hidden}
                row.update(run_dir=result.run_dir, steps=result.step, diverged_at=result.diverged_at)
                if part == "lds":
                    row["test_mse"] = value
                else:
                    row["test_log_loss"] = value
                    row["test_accuracy"] = 1.0 - last.get("eval_error", math.nan)
                row.update(
                    gap=value - opt,
                    gap_pct=100 * (value - opt) / opt,
                    wall_s=round(time.perf_counter() - t0, 2),
                )
                runs.append(row)
                plots.plot_run(result.run_dir, error_label=HMM_ERROR if part == "hmm" else None)
                print(
                    f"[{len(runs)}/{total}] {part} {cell_name} seed {seed}: held-out {METRIC[part]} "
                    f"{_fmt(value)} (optimum {opt:.4g}, gap {row['gap_pct']:+.2g}%)"
                    + (f", diverged at step {result.diverged_at}" if result.diverged_at is not None else "")
                    + f", {row['wall_s']:.1f} s",
                    file=log,
                    flush=True,
                )
                curves.append(result.rows)
                table = table_rows(runs, optima)
                sweep.write_json(
                    os.path.join(sweep_dir, "results.json"),
                    {
                        "experiment": NAME,
                        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
                        "config": dataclasses.asdict(config),
                        "systems": systems,
                        "optima": optima,
                        "metrics": {
                            "lds": "one-step MSE: squared error summed over the m coordinates, mean over the "
                            "T-1 predicted steps and the held-out sequences",
                            "hmm": "log-loss: -ln q(z_t) in nats, mean over steps and held-out sequences; "
                            "accuracy: fraction of steps whose argmax is z_t",
                        },
                        "runs": runs,
                        "table": table,
                    },
                )
    table = table_rows(runs, optima)
    print(format_table(table))
    figure = plot_summary(runs, curves, optima, os.path.join(sweep_dir, "summary.png"))
    print(f"figure: {figure}")
    print(f"results: {sweep_dir}/results.json")
    runner.report_divergence(diverged, total, config, os.path.join(sweep_dir, "results.json"))
    return FilteringResult(runs, optima, table, sweep_dir)


if __name__ == "__main__":
    runner.run_cli(main)
