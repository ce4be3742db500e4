"""Normalised LSTMs: the batch-normalised LSTM of Cooijmans et al. and the layer-normalised LSTM.

* :func:`bn_lstm` -- recurrent batch normalisation (Cooijmans, Ballas, Laurent, Gulcehre, Courville,
  "Recurrent Batch Normalization", ICLR 2017): separate statistics per time step, ``gamma``
  initialised to 0.1, batch statistics in training mode, population statistics (data) for inference.
* :func:`bn_statistics` -- the per-step batch statistics a training-mode :func:`bn_lstm` uses on one
  batch; averaged over training batches they are the population statistics for inference.
* :func:`ln_lstm` -- the layer-normalised LSTM (Ba, Kiros, Hinton, "Layer Normalization", 2016,
  eqs. 20-22): per-example statistics, the same in training and inference.

Both keep jaxrnn's LSTM gate order ``i, f, g, o`` and add ``forget_bias`` to the ``f`` slice of ``b``
at init (see :func:`jaxrnn.cells.lstm.lstm`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns, LSTMCarry, resolve_inits, zeros_state
from jaxrnn.cells.lstm import lstm_weights

__all__ = ["BNStatistics", "bn_lstm", "bn_statistics", "ln_lstm"]


class BNStatistics(NamedTuple):
    """Per-time-step statistics of a :func:`bn_lstm`, one row per step ``0 .. max_steps - 1``.

    ``mean_x, var_x (max_steps, 4H)``: of ``x_t @ W_xh``; ``mean_h, var_h (max_steps, 4H)``: of
    ``h_{t-1} @ W_hh``; ``mean_c, var_c (max_steps, H)``: of ``c_t``. Variances are the biased
    (``1/N``) batch variances, as used in the training-mode normalisation.
    """

    mean_x: jax.Array
    var_x: jax.Array
    mean_h: jax.Array
    var_h: jax.Array
    mean_c: jax.Array
    var_c: jax.Array


# --------------------------------------------------------------------------------------------------
# private helpers shared by the cells and bn_statistics


def _moments(a, axes):
    """Mean and biased variance of ``a`` over ``axes``, kept as size-1 axes (they broadcast back)."""
    mean = jnp.mean(a, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(a - mean), axis=axes, keepdims=True)
    return mean, var


def _normalise(a, mean, var, gamma, beta, eps):
    """``beta + gamma * (a - mean) / sqrt(var + eps)`` (``beta=None``: no shift)."""
    out = gamma * (a - mean) / jnp.sqrt(var + eps)
    return out if beta is None else out + beta


def _check_eps(eps, fn: str) -> float:
    return check.real_number(eps, f"{fn}: eps", low=0.0, low_open=True)


def _lstm_update(a, c):
    """The LSTM's gating, gate order i, f, g, o: ``(o-preactivation, c_t)``."""
    a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
    return a_o, jax.nn.sigmoid(a_f) * c + jax.nn.sigmoid(a_i) * jnp.tanh(a_g)


_STAT_FIELDS = ("x", "h", "c")


def _check_statistics(statistics, max_steps: int, H: int, fn: str) -> BNStatistics:
    if not isinstance(statistics, BNStatistics):
        raise TypeError(
            f"{fn}: statistics must be a BNStatistics (e.g. from bn_statistics, averaged over training "
            f"batches) or None for training mode; got {type(statistics).__name__}"
        )
    for name, value in zip(BNStatistics._fields, statistics):
        width, what = (H, "hidden_size") if name.endswith("_c") else (4 * H, "4*hidden_size")
        want = (max_steps, width)
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            value = np.asarray(value)
        if tuple(value.shape) != want:
            raise ValueError(
                f"{fn}: statistics.{name} must have shape (max_steps, {what}) = {want}; "
                f"got {tuple(value.shape)}"
            )
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(f"{fn}: statistics.{name} must be a floating array; got dtype {value.dtype}")
        if not isinstance(value, jax.core.Tracer):
            v = np.asarray(value)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{fn}: statistics.{name} contains NaN or Inf")
            if name.startswith("var") and np.any(v < 0):
                raise ValueError(f"{fn}: statistics.{name} must be >= 0 (variances); got min {v.min()}")
    return BNStatistics(*(jnp.asarray(v) for v in statistics))


# --------------------------------------------------------------------------------------------------
# batch-normalised LSTM


def bn_lstm(
    hidden_size: int,
    max_steps: int,
    *,
    statistics: BNStatistics | None = None,
    gamma_init: float = 0.1,
    eps: float = 1e-5,
    forget_bias: float = 1.0,
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The batch-normalised LSTM of Cooijmans et al. (2017), gate order i, f, g, o::

        BN(a; gamma, beta) = beta + gamma * (a - E[a]) / sqrt(Var[a] + eps)     (per feature)
        [a_i, a_f, a_g, a_o] = BN(h_{t-1} @ W_hh; gamma_h, 0) + BN(x_t @ W_xh; gamma_x, 0) + b
        c_t = sigma(a_f) * c_{t-1} + sigma(a_i) * tanh(a_g)
        h_t = sigma(a_o) * tanh(BN(c_t; gamma_c, beta_c))

    (paper section 3, with its ``beta_h = beta_x = 0``: ``b`` carries the bias; no normalisation of the
    cell update itself). ``E`` and ``Var`` are *separate for every time step* ``t``, ``gamma`` and
    ``beta`` are shared over time.

    * **Training mode** (``statistics=None``): ``E`` and ``Var`` are the mean and biased variance over
      the batch -- every leading axis of ``x_t`` except the feature axis -- at the current step, as in
      ordinary batch normalisation; gradients flow through them. Needs at least one batch axis
      (``cell.step`` on an unbatched ``x`` raises). Every sequence of the batch enters the statistics,
      also those past their ``lengths`` in :func:`~jaxrnn.unroll` (their carry is held, but their
      values at the current step still count) and those just reset; so do not mix padding, ``lengths``
      or ``resets`` with training-mode BN unless that is what you want (bucket sequences by length).
    * **Inference mode** (``statistics`` given, e.g. :func:`bn_statistics` averaged over the training
      set): step ``t`` (the step index :func:`~jaxrnn.unroll` supplies) uses row ``min(t, max_steps - 1)`` of
      the population statistics, so steps past ``T_max = max_steps`` reuse ``T_max``'s statistics. Each
      sequence is then independent of the others, and ``lengths`` and ``resets`` work as for any cell (a reset
      starts the index again at 0). ``statistics`` is data (a pytree leaf of the cell): it may be traced.

    Params: ``W_xh (I, 4H)``, ``W_hh (H, 4H)``, ``b (4H,)`` (``forget_bias`` added to the f-slice at
    init), ``gamma_x, gamma_h (4H,)`` and ``gamma_c (H,)`` (all ``gamma_init``), ``beta_c (H,)`` (zeros).
    Carry :class:`~jaxrnn.LSTMCarry` ``(h, c)``, output ``h (*batch, H)``. ``cell.project`` is only
    ``x @ W_xh`` (per step independent); the normalisations are in ``cell.recur``, which in inference
    mode reads the step index ``t`` (``uses_step_index``).

    Cooijmans et al. add Gaussian noise to the initial hidden state when early inputs have zero
    variance across the batch (e.g. the first pixels of MNIST): ``Var = 0`` gives a finite output
    (``eps > 0``) but large gradients. Pass such a noisy carry to :func:`~jaxrnn.unroll` yourself.

    Args:
      hidden_size: ``H``.
      max_steps: ``T_max``, the number of steps with their own population statistics.
      statistics: ``None`` (training mode) or :class:`BNStatistics` with fields of shapes
        ``(max_steps, 4H)`` (``*_x``, ``*_h``) and ``(max_steps, H)`` (``*_c``).
      gamma_init: initial value of every ``gamma`` (0.1 in the paper: 1.0 makes gradients vanish,
        <= 0.01 was unstable).
      eps: the variance offset, ``> 0``.
      forget_bias: added to ``b``'s f-slice at init.
      kernel_init, recurrent_init, bias_init: initialisers of ``W_xh``, ``W_hh`` (per gate block)
        and ``b``.

    Returns:
      A :class:`~jaxrnn.Cell` (kind ``"bn_lstm"``; the statistics are its data, ``cell.data["statistics"]``).

    References:
      Cooijmans et al., "Recurrent Batch Normalization", ICLR 2017 (arXiv:1603.09025), sections 3-4.
    """
    fn = "bn_lstm"
    H = check.positive_int(hidden_size, f"{fn}: hidden_size")
    max_steps = check.positive_int(max_steps, f"{fn}: max_steps")
    hp = dict(
        hidden_size=H,
        max_steps=max_steps,
        gamma_init=check.real_number(gamma_init, f"{fn}: gamma_init"),
        eps=_check_eps(eps, fn),
        forget_bias=check.real_number(forget_bias, f"{fn}: forget_bias"),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    if statistics is not None:
        statistics = _check_statistics(statistics, max_steps, H, fn)
    resolve_inits(fn, kernel_init, recurrent_init, bias_init)
    return Cell(bn_lstm, _build_bn_lstm, hp, {"statistics": statistics})


def _output_h(s):
    return s.h


def _build_bn_lstm(
    hidden_size, max_steps, gamma_init, eps, forget_bias, kernel_init, recurrent_init, bias_init, statistics
) -> CellFns:
    fn, H = "bn_lstm", hidden_size
    k_init, r_init, b_init = resolve_inits(fn, kernel_init, recurrent_init, bias_init)

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args(fn, input_size, dtype)
        return {
            **lstm_weights((k_init, r_init, b_init), key, n_in, H, forget_bias, dtype),
            "gamma_x": jnp.full((4 * H,), gamma_init, dtype),
            "gamma_h": jnp.full((4 * H,), gamma_init, dtype),
            "gamma_c": jnp.full((H,), gamma_init, dtype),
            "beta_c": jnp.zeros((H,), dtype),
        }

    def initial_carry(params, batch_shape=()):
        z = zeros_state(params["W_hh"], batch_shape, H)
        return LSTMCarry(h=z, c=z)

    def moments_for(px, t):
        if statistics is None:
            if px.ndim < 2:
                raise ValueError(
                    f"{fn}: training mode (statistics=None) normalises over the batch, so x must have "
                    f"shape (*batch, input_size) with at least one batch axis; got an unbatched step "
                    f"(x of rank 1). Add a batch axis, or give population statistics for inference."
                )
            axes = tuple(range(px.ndim - 1))
            return lambda name, a: _moments(a, axes)
        idx = jnp.minimum(jnp.asarray(t), max_steps - 1)  # past T_max, reuse T_max's statistics

        def moments(name, a):
            mean, var = getattr(statistics, f"mean_{name}"), getattr(statistics, f"var_{name}")
            return mean[idx].astype(a.dtype), var[idx].astype(a.dtype)

        return moments

    def recur(params, state, px, t=None):
        moments = moments_for(px, t)
        h, c = state
        wh = h @ params["W_hh"]
        a = (
            _normalise(wh, *moments("h", wh), params["gamma_h"], None, eps)
            + _normalise(px, *moments("x", px), params["gamma_x"], None, eps)
            + params["b"]
        )
        a_o, c = _lstm_update(a, c)
        c_hat = _normalise(c, *moments("c", c), params["gamma_c"], params["beta_c"], eps)
        return LSTMCarry(h=jax.nn.sigmoid(a_o) * jnp.tanh(c_hat), c=c)

    def project(params, x):
        return x @ params["W_xh"]

    return CellFns(init, initial_carry, project, recur, _output_h, uses_step_index=statistics is not None)


def bn_statistics(cell: Cell, params, xs, carry=None) -> BNStatistics:
    """The per-step batch statistics a training-mode :func:`bn_lstm` uses on the batch ``xs``.

    Runs the training-mode cell (batch statistics, whatever the mode of ``cell``) over ``xs`` and
    returns, for every step ``t``, the mean and biased variance over the batch of ``x_t @ W_xh``,
    ``h_{t-1} @ W_hh`` and ``c_t`` -- exactly the statistics of that unroll. Rows ``T .. max_steps-1``
    (when ``T < max_steps``) copy row ``T - 1``; steps past ``max_steps`` are dropped (an inference
    cell reuses row ``max_steps - 1`` for them). In plain Python::

        s, rows = carry, []
        for t in range(T):
            wx, wh = xs[t] @ W_xh, s.h @ W_hh
            s = training_cell.step(params, s, xs[t])
            rows.append((mean(wx), var(wx), mean(wh), var(wh), mean(s.c), var(s.c)))  # over the batch
        rows = (rows + [rows[-1]] * max_steps)[:max_steps]

    Cooijmans et al. estimate the population statistics as "minibatch estimates averaged over the
    training set": average this function's result over training batches, e.g. a running mean::

        pop = None
        for n, xs in enumerate(batches, start=1):
            s = bn_statistics(cell, params, xs)
            pop = s if pop is None else jax.tree.map(lambda p, b: p + (b - p) / n, pop, s)
        infer = bn_lstm(H, max_steps, statistics=pop)      # same params

    (or an exponential moving average during training). The averaged variance is the mean of the
    per-batch (biased) variances, as in the paper, not the variance of the pooled data. Given the
    statistics of a single batch, the inference cell reproduces the training-mode unroll of that batch.

    Args:
      cell: a :func:`bn_lstm` cell (training or inference mode; its ``eps`` and ``max_steps`` are used).
      params: its parameters.
      xs: ``(T, *batch, I)`` with at least one batch axis; all sequences of full length ``T`` (no
        padding: padded steps would enter the statistics).
      carry: the initial :class:`~jaxrnn.LSTMCarry` (default ``cell.initial_carry``), e.g. with a
        noisy ``h``; the statistics are indexed from the start of the sequence.

    Returns:
      :class:`BNStatistics` with fields ``(max_steps, 4H)`` and ``(max_steps, H)``.
    """
    fn = "bn_statistics"
    cell = check.cell(cell, fn)
    base = cell
    while base.kind == "learned_initial_state":  # its s_0 is the wrapped cell's carry, learned
        base = base.data["cell"]
    if base.kind != "bn_lstm":
        raise TypeError(
            f"{fn}: cell must be a bn_lstm cell (or a learned_initial_state of one); got {cell!r}"
        )
    check.params(cell, params, fn)
    xs, _ = check.xs(cell, params, xs, 0, fn)
    if xs.ndim < 3:
        raise ValueError(
            f"{fn}: xs must have shape (T, *batch, I) with at least one batch axis (statistics are "
            f"taken over the batch); got {tuple(xs.shape)}"
        )
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    if math.prod(batch_shape) == 0:
        raise ValueError(
            f"{fn}: xs has an empty batch {batch_shape}; batch statistics need at least one sequence"
        )
    H = params["W_hh"].shape[0]
    max_steps, eps = base.hparams["max_steps"], base.hparams["eps"]
    train = bn_lstm(H, max_steps, eps=eps)
    if carry is None:
        carry = cell.initial_carry(params, batch_shape)
    carry = LSTMCarry(*check.carry(train, params, carry, batch_shape, fn))

    def body(s, x):  # the training-mode recurrence over full-length sequences: a plain scan
        new = train.step(params, s, x)
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, s)
        return new, (new.h, new.c)

    _, (hs, cs) = jax.lax.scan(body, carry, xs)
    h_prev = jnp.concatenate([carry.h[None].astype(hs.dtype), hs[:-1]], axis=0)
    axes = tuple(range(1, xs.ndim - 1))  # the batch axes of (T, *batch, F)

    def per_step(a):
        mean, var = _moments(a, axes)
        mean, var = jnp.squeeze(mean, axes), jnp.squeeze(var, axes)
        if T >= max_steps:
            return mean[:max_steps], var[:max_steps]
        pad = lambda m: jnp.concatenate([m, jnp.repeat(m[-1:], max_steps - T, axis=0)], axis=0)
        return pad(mean), pad(var)

    m_x, v_x = per_step(train.project(params, xs))
    m_h, v_h = per_step(h_prev @ params["W_hh"])
    m_c, v_c = per_step(cs)
    return BNStatistics(m_x, v_x, m_h, v_h, m_c, v_c)


# --------------------------------------------------------------------------------------------------
# layer-normalised LSTM


def ln_lstm(
    hidden_size: int,
    *,
    eps: float = 1e-5,
    forget_bias: float = 1.0,
    kernel_init="lecun_normal",
    recurrent_init="orthogonal",
    bias_init="zeros",
) -> Cell:
    """The layer-normalised LSTM of Ba, Kiros and Hinton (2016, eqs. 20-22), gate order i, f, g, o::

        LN(a; gamma, beta) = beta + gamma * (a - mean(a)) / sqrt(var(a) + eps)   (over a's features)
        [a_i, a_f, a_g, a_o] = LN(h_{t-1} @ W_hh; gamma_h, beta_h) + LN(x_t @ W_xh; gamma_x, beta_x) + b
        c_t = sigma(a_f) * c_{t-1} + sigma(a_i) * tanh(a_g)
        h_t = sigma(a_o) * tanh(LN(c_t; gamma_c, beta_c))

    The statistics are per example and per step, over all ``4H`` pre-activations at once (as in the
    paper), and over the ``H`` cells for ``c_t``; so every sequence is independent of the others,
    training and inference are the same, and ``lengths``, ``resets`` and unbatched inputs work as for
    any cell. (TensorFlow's ``LayerNormBasicLSTMCell`` instead normalises each gate's ``H`` values
    separately.) ``LN(x_t @ W_xh) + b`` depends on the input only, so it is ``cell.project``.

    Params: ``W_xh (I, 4H)``, ``W_hh (H, 4H)``, ``b (4H,)`` (``forget_bias`` added to the f-slice at
    init), gains ``gamma_x, gamma_h (4H,)``, ``gamma_c (H,)`` (ones) and biases ``beta_x, beta_h (4H,)``,
    ``beta_c (H,)`` (zeros); ``beta_x + beta_h + b`` act as one bias (the paper keeps all three).
    Carry :class:`~jaxrnn.LSTMCarry` ``(h, c)``, output ``h (*batch, H)``.

    Args:
      hidden_size: ``H``.
      eps: the variance offset, ``> 0``.
      forget_bias: added to ``b``'s f-slice at init.
      kernel_init, recurrent_init, bias_init: initialisers of ``W_xh``, ``W_hh`` (per gate block)
        and ``b``.

    Returns:
      A :class:`~jaxrnn.Cell` (kind ``"ln_lstm"``).

    References:
      Ba, Kiros, Hinton, "Layer Normalization", arXiv:1607.06450 (2016), section 3.1 and
      supplementary eqs. 20-22.
    """
    fn = "ln_lstm"
    hp = dict(
        hidden_size=check.positive_int(hidden_size, f"{fn}: hidden_size"),
        eps=_check_eps(eps, fn),
        forget_bias=check.real_number(forget_bias, f"{fn}: forget_bias"),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    resolve_inits(fn, kernel_init, recurrent_init, bias_init)
    return Cell(ln_lstm, _build_ln_lstm, hp)


def _build_ln_lstm(hidden_size, eps, forget_bias, kernel_init, recurrent_init, bias_init) -> CellFns:
    fn, H = "ln_lstm", hidden_size
    k_init, r_init, b_init = resolve_inits(fn, kernel_init, recurrent_init, bias_init)

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args(fn, input_size, dtype)
        return {
            **lstm_weights((k_init, r_init, b_init), key, n_in, H, forget_bias, dtype),
            "gamma_x": jnp.ones((4 * H,), dtype),
            "beta_x": jnp.zeros((4 * H,), dtype),
            "gamma_h": jnp.ones((4 * H,), dtype),
            "beta_h": jnp.zeros((4 * H,), dtype),
            "gamma_c": jnp.ones((H,), dtype),
            "beta_c": jnp.zeros((H,), dtype),
        }

    def initial_carry(params, batch_shape=()):
        z = zeros_state(params["W_hh"], batch_shape, H)
        return LSTMCarry(h=z, c=z)

    def layer_norm(a, gamma, beta):
        return _normalise(a, *_moments(a, (-1,)), gamma, beta, eps)

    def project(params, x):
        return layer_norm(x @ params["W_xh"], params["gamma_x"], params["beta_x"]) + params["b"]

    def recur(params, state, px):
        h, c = state
        a = layer_norm(h @ params["W_hh"], params["gamma_h"], params["beta_h"]) + px
        a_o, c = _lstm_update(a, c)
        h = jax.nn.sigmoid(a_o) * jnp.tanh(layer_norm(c, params["gamma_c"], params["beta_c"]))
        return LSTMCarry(h=h, c=c)

    return CellFns(init, initial_carry, project, recur, _output_h)
