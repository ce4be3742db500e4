"""Parallel-scan (linear-recurrence) cells: minGRU, minLSTM (Feng et al. 2024) and the LRU (Orvieto et al.).

In these models no gate reads the state: every coefficient is a function of ``x_t`` alone, so the
recurrence is a diagonal *linear* one,

    h_t = a_t * h_{t-1} + b_t,

and ``h_1 .. h_T`` are an associative scan over the pairs ``(a_t, b_t)`` with the composition
("first ``(a_1, b_1)``, then ``(a_2, b_2)``")::

    (a_1, b_1) o (a_2, b_2) = (a_1 a_2,  a_2 b_1 + b_2)

(``jax.lax.associative_scan``: ``O(T log T)`` work, ``O(log T)`` depth instead of ``T`` sequential
steps). The scan gives ``(A_t, B_t)``, the composition of steps ``0 .. t``, and ``h_t = A_t h_{-1} + B_t``
for any initial state.

Each factory returns an ordinary :class:`~jaxrnn.Cell`: ``project`` is the input-only part
(``x @ W + b``), ``recur`` the *sequential* one-step recurrence -- the reference -- and the cell's
:class:`~jaxrnn.cells.base.SequenceKernel` is the parallel scan, which :func:`jaxrnn.unroll` uses by
default (``fused=True``) and which equals ``unroll(..., fused=False)`` in values and gradients. Padding
steps (``t >= lengths``) are made identities ``(a, b) = (1, 0)``, so the last state of the scan is the
state after each sequence's last valid step, forwards and in reverse. Because ``recur`` is the
sequential step, every transform (:func:`~jaxrnn.truncation.truncate`, which falls back to the
reference scan, :func:`~jaxrnn.learned_initial_state`, ...) and every Jacobian diagnostic works on
these cells unchanged.

References: L. Feng, F. Tung, M. O. Ahmed, Y. Bengio, H. Hajimirsadeghi, "Were RNNs all we needed?"
(2024), sections 3.1-3.2 and appendix A (log-space versions); A. Orvieto, S. L. Smith, A. Gu,
A. Fernando, C. Gulcehre, R. Pascanu, S. De, "Resurrecting recurrent neural networks for long
sequences" (ICML 2023), section 3 and appendix A; G. E. Blelloch, "Prefix sums and their
applications" (1990) for the scan.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import initialisers as inits
from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns, SequenceKernel, hidden_zeros
from jaxrnn.masking import valid_steps

__all__ = ["LRUCarry", "linear_scan", "lru", "min_gru", "min_lstm"]


# --------------------------------------------------------------------------------------------------
# the scans


def _compose(first, second):
    """``(a_1, b_1) o (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)``: apply ``first``, then ``second``."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def _compose_log(first, second):
    """:func:`_compose` on ``(log a, log b)`` (``a, b > 0``).

    ``(la_1, lb_1) o (la_2, lb_2) = (la_1 + la_2, logaddexp(la_2 + lb_1, lb_2))``."""
    la1, lb1 = first
    la2, lb2 = second
    return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)


def linear_scan(a, b, h0, *, reverse: bool = False, log_space: bool = False):
    """All states of the diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` by an associative scan.

    ``(A_t, B_t) = (a_0, b_0) o ... o (a_t, b_t)`` with ``(a_1, b_1) o (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)``
    (``jax.lax.associative_scan``), then ``h_t = A_t h0 + B_t``. In plain Python::

        def linear_scan(a, b, h0, reverse=False):
            h, hs = h0, [None] * len(a)
            for t in (reversed(range(len(a))) if reverse else range(len(a))):
                h = a[t] * h + b[t]
                hs[t] = h
            return stack(hs)

    With ``log_space=True`` the arguments are ``log a`` and ``log b`` (so ``a, b > 0``) and the pairs are
    composed in log space, ``(la_1 + la_2, logaddexp(la_2 + lb_1, lb_2))``, which neither underflows
    (``prod a`` over a long sequence) nor cancels; ``h_t = exp(LA_t) h0 + exp(LB_t)`` for any real
    ``h0``. This is the log-space scan of Feng et al. (2024, appendix A) written as a pair scan: Heinsen's
    ``exp(a*_t + logcumsumexp(log b - a*))`` with ``a* = cumsum(log a)`` computes the same but
    subtracts numbers of size ``|a*_T|``, losing ``~|a*_T| eps`` of relative precision on long sequences.
    A ``log b`` of ``-inf`` (``b = 0``) is allowed in values; use a large finite negative number where
    gradients are needed.

    Args:
      a, b: ``(T, ...)``, time first (complex allowed when ``log_space=False``).
      h0: the state before the first step, broadcastable to ``a.shape[1:]``.
      reverse: run from step ``T - 1`` down to ``0`` (``h_t = a_t h_{t+1} + b_t``).
      log_space: ``a`` and ``b`` are given as ``log a`` and ``log b``.

    Returns:
      ``(T, ...)``: ``h_t`` after every step (in processing order ``reverse``, stored at index ``t``).
    """
    op = _compose_log if log_space else _compose
    A, Bs = jax.lax.associative_scan(op, (a, b), axis=0, reverse=reverse)
    if log_space:
        return jnp.exp(A) * h0 + jnp.exp(Bs)
    return A * h0 + Bs


def _valid_mask(lengths, T: int, ndim: int):
    """``(T, *batch, 1...)`` booleans ``t < lengths`` broadcasting against ``(T, *batch, H)``, or None."""
    if lengths is None:
        return None
    valid = valid_steps(lengths, T)
    return valid.reshape(valid.shape + (1,) * (ndim - valid.ndim))


def _compute_dtype(*dtypes):
    """Accumulate in at least float32 (bf16 / f16 parameters or carries)."""
    return jnp.result_type(jnp.float32, *dtypes)


def _reset_mask(resets, ndim: int):
    """``(T, *batch, 1...)`` booleans broadcasting against ``(T, *batch, H)``, or None."""
    return None if resets is None else resets.reshape(resets.shape + (1,) * (ndim - resets.ndim))


# a log-coefficient whose exp is exactly 0 in float32 and float64 and whose sums over any length stay
# finite (a reset's log a: the carry before it is forgotten)
_LOG_ZERO = -1e4


def _gated_kernel(coefficients, log_coefficients):
    """The parallel scan of a gated cell whose ``px = _project(params, x)`` gives ``(a, b)`` (or their
    logs) elementwise.

    ``coefficients(px) -> (a, b)`` in linear space; ``log_coefficients(px) -> (log a, log b)`` or None.

    Resets are folded into the coefficients, so the scan stays associative: a step ``t`` that starts
    from the reset state ``r0`` is ``h_t = a_t r0 + b_t``, i.e. the pair ``(0, a_t r0 + b_t)``. In log
    space (where ``b > 0`` but ``r0`` has any sign) the pair is ``(log 0, log b_t)`` and the ``r0`` term
    is added afterwards: ``r0 P_t``, with ``P_t = prod a_s`` over the steps since the last reset (0
    before the first), a second log-space scan of the pairs ``(log 0, log a_t)`` at resets and
    ``(log a_t, log 0)`` elsewhere.
    """

    def apply(params, carry, xs, *, lengths, reverse, unroll=1, resets=None, reset_carry=None):  # no loop
        px = _project(params, xs)
        dt = _compute_dtype(px.dtype, carry.dtype)
        px = px.astype(dt)
        h0 = carry.astype(dt)
        T = px.shape[0]
        valid = _valid_mask(lengths, T, px.ndim)
        reset = _reset_mask(resets, px.ndim)
        if log_coefficients is not None:
            la, lb = log_coefficients(px)
            tiny = jnp.full_like(lb, jnp.finfo(dt).min / 4)  # log b = "-inf" (b = 0)
            since = None
            if reset is not None:  # P_t: log a since the last reset, from a scan with b = a at resets
                la_p = jnp.where(reset, _LOG_ZERO, la)
                lb_p = jnp.where(reset, la, tiny)
                la = la_p
            if valid is not None:  # padding is the identity (a, b) = (1, 0): log a = 0, log b = "-inf"
                la = jnp.where(valid, la, jnp.zeros_like(la))
                lb = jnp.where(valid, lb, tiny)
            states = linear_scan(la, lb, h0, reverse=reverse, log_space=True)
            if reset is not None:
                if valid is not None:
                    lb_p = jnp.where(valid, lb_p, tiny)
                since = linear_scan(la, lb_p, jnp.zeros_like(h0), reverse=reverse, log_space=True)
                states = states + since * reset_carry.astype(dt)
        else:
            a, b = coefficients(px)
            if reset is not None:
                b = jnp.where(reset, a * reset_carry.astype(dt) + b, b)
                a = jnp.where(reset, jnp.zeros_like(a), a)
            if valid is not None:
                a = jnp.where(valid, a, jnp.ones_like(a))
                b = jnp.where(valid, b, jnp.zeros_like(b))
            states = linear_scan(a, b, h0, reverse=reverse)
        states = states.astype(carry.dtype)
        return (states[0] if reverse else states[-1]), states

    return apply


# --------------------------------------------------------------------------------------------------
# minGRU and minLSTM


def _g(x):
    """Feng et al.'s positive activation ``g(x) = x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return jnp.where(x >= 0, jnp.maximum(x, 0) + 0.5, jax.nn.sigmoid(x))


def _log_g(x):
    """``log g(x)``, finite and with finite gradients on both branches."""
    return jnp.where(x >= 0, jnp.log(jnp.maximum(x, 0) + 0.5), -jax.nn.softplus(-x))


def _affine_params(name, kernel_init, bias_init, hidden_size, n_gates):
    k_init = inits.get(kernel_init, f"{name}: kernel_init")
    b_init = inits.get(bias_init, f"{name}: bias_init")

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args(name, input_size, dtype)
        keys = jax.random.split(key, n_gates + 1)
        W = jnp.concatenate([k_init(k, (n_in, hidden_size), dtype) for k in keys[:-1]], axis=-1)
        return {"W_xh": W, "b": b_init(keys[-1], (n_gates * hidden_size,), dtype)}

    return init


def _project(params, x):
    return x @ params["W_xh"] + params["b"]


def min_gru(
    hidden_size: int, *, log_space: bool = True, kernel_init="lecun_normal", bias_init="zeros"
) -> Cell:
    """minGRU (Feng et al. 2024, section 3.1): a GRU whose gates read only the input, by a parallel scan.

    ::

        [k_z, k_h] = x_t @ W_xh + b
        z_t = sigmoid(k_z)        h~_t = g(k_h)   (log_space=True)   or   k_h   (log_space=False)
        h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    ``g(x) = x + 1/2`` for ``x >= 0`` and ``sigmoid(x)`` below (positive, so that ``log h~`` exists):
    the paper's log-space minGRU (appendix A, ``parallel_scan_log``). With ``log_space=True`` the kernel
    scans ``(log(1 - z), log z + log g(k_h)) = (-softplus(k_z), -softplus(-k_z) + log g(k_h))`` in log
    space (see :func:`linear_scan`; any real initial state is allowed); with ``log_space=False`` the
    plain minGRU (the paper's ``parallel_scan``, ``h~ = k_h`` unbounded) scans ``(1 - z, z h~)``.
    ``recur`` is the sequential equation above (with ``1 - z_t`` computed as ``sigmoid(-k_z)``, which
    does not cancel when ``z_t`` is close to 1) and is the reference the kernel equals.

    Params: ``W_xh (I, 2H)``, ``b (2H,)``, columns ``[z | h~]``. Carry and output: ``h (*batch, H)``.

    Args:
      hidden_size: ``H >= 1``.
      log_space: the log-space variant (``h~ = g(.)``, log-space scan) or the plain one.
      kernel_init, bias_init: initialisers (names from :mod:`jaxrnn.initialisers` or callables).

    Returns:
      A :class:`~jaxrnn.Cell` (kind ``min_gru``) with a parallel-scan kernel (``reverse`` and
      ``lengths`` supported).
    """
    hp = dict(
        hidden_size=check.positive_int(hidden_size, "min_gru: hidden_size"),
        log_space=check.bool_arg(log_space, "min_gru: log_space"),
        kernel_init=kernel_init,
        bias_init=bias_init,
    )
    _affine_params("min_gru", kernel_init, bias_init, 1, 1)
    return Cell(min_gru, _build_min_gru, hp)


def _identity(h):
    return h


def _build_min_gru(hidden_size, log_space, kernel_init, bias_init) -> CellFns:
    H = hidden_size
    cand = _g if log_space else (lambda k: k)

    def recur(params, h, px):
        k = px[..., :H]  # 1 - z = sigmoid(-k): no cancellation when z is close to 1
        return jax.nn.sigmoid(-k) * h + jax.nn.sigmoid(k) * cand(px[..., H:])

    def coefficients(px):
        k = px[..., :H]
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * cand(px[..., H:])

    def log_coefficients(px):
        k = px[..., :H]
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + _log_g(px[..., H:])

    return CellFns(
        _affine_params("min_gru", kernel_init, bias_init, H, 2),
        hidden_zeros(H, "W_xh"),
        _project,
        recur,
        _identity,
        kernel=SequenceKernel(
            _gated_kernel(coefficients, log_coefficients if log_space else None), resets=True
        ),
    )


def min_lstm(
    hidden_size: int, *, log_space: bool = True, kernel_init="lecun_normal", bias_init="zeros"
) -> Cell:
    """minLSTM (Feng et al. 2024, section 3.2): an LSTM with input-only, normalised gates, by a parallel scan.

    ::

        [k_f, k_i, k_h] = x_t @ W_xh + b
        f_t = sigmoid(k_f)      i_t = sigmoid(k_i)      h~_t = g(k_h)  (log_space)  or  k_h
        f'_t = f_t / (f_t + i_t)        i'_t = i_t / (f_t + i_t)
        h_t = f'_t * h_{t-1} + i'_t * h~_t

    The normalisation makes the state time-independent in scale (``f' + i' = 1``). In log space
    (appendix A): ``d = softplus(-k_f) - softplus(-k_i)``, ``log f' = -softplus(d)``,
    ``log i' = -softplus(-d)``, and the pairs ``(log f', log i' + log g(k_h))`` are scanned in log space
    (:func:`linear_scan`). ``g`` is minGRU's (:func:`min_gru`); ``log_space=False`` is the plain version
    with ``h~ = k_h``, scanned linearly. ``recur`` is the sequential equation above (the reference).

    Params: ``W_xh (I, 3H)``, ``b (3H,)``, columns ``[f | i | h~]``. Carry and output: ``h (*batch, H)``.

    Args:
      hidden_size: ``H >= 1``.
      log_space: the log-space variant or the plain one.
      kernel_init, bias_init: initialisers (names from :mod:`jaxrnn.initialisers` or callables).

    Returns:
      A :class:`~jaxrnn.Cell` (kind ``min_lstm``) with a parallel-scan kernel.
    """
    hp = dict(
        hidden_size=check.positive_int(hidden_size, "min_lstm: hidden_size"),
        log_space=check.bool_arg(log_space, "min_lstm: log_space"),
        kernel_init=kernel_init,
        bias_init=bias_init,
    )
    _affine_params("min_lstm", kernel_init, bias_init, 1, 1)
    return Cell(min_lstm, _build_min_lstm, hp)


def _build_min_lstm(hidden_size, log_space, kernel_init, bias_init) -> CellFns:
    H = hidden_size
    cand = _g if log_space else (lambda k: k)

    def coefficients(px):
        f = jax.nn.sigmoid(px[..., :H])
        i = jax.nn.sigmoid(px[..., H : 2 * H])
        return f / (f + i), i / (f + i) * cand(px[..., 2 * H :])

    def recur(params, h, px):
        a, b = coefficients(px)
        return a * h + b

    def log_coefficients(px):
        d = jax.nn.softplus(-px[..., :H]) - jax.nn.softplus(-px[..., H : 2 * H])
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _log_g(px[..., 2 * H :])

    return CellFns(
        _affine_params("min_lstm", kernel_init, bias_init, H, 3),
        hidden_zeros(H, "W_xh"),
        _project,
        recur,
        _identity,
        kernel=SequenceKernel(
            _gated_kernel(coefficients, log_coefficients if log_space else None), resets=True
        ),
    )


# --------------------------------------------------------------------------------------------------
# LRU


class LRUCarry(NamedTuple):
    """The carry of :func:`lru`: the complex state ``h = re + i im`` (both ``(*batch, N)``) and the output
    ``y = Re(C h) + D * x`` of the step that made it (``(*batch, I)``; zeros in the initial carry).

    ``y`` is kept in the carry because a cell's ``output(carry)`` sees no parameters and no input; it
    never feeds the next step (``ds_t/dy_{t-1} = 0``)."""

    re: jax.Array
    im: jax.Array
    y: jax.Array


def _lambda(params):
    """``lambda = exp(-exp(nu_log) + i exp(theta_log))`` as ``(re, im)``, ``|lambda| < 1``."""
    mod = jnp.exp(-jnp.exp(params["nu_log"]))
    phase = jnp.exp(params["theta_log"])
    return mod * jnp.cos(phase), mod * jnp.sin(phase)


def lru(hidden_size: int, r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * math.pi) -> Cell:
    """The Linear Recurrent Unit (Orvieto et al. 2023, section 3): a complex diagonal linear RNN.

    ::

        lambda = exp(-exp(nu_log) + i exp(theta_log))          (N,) complex, |lambda| < 1
        gamma  = exp(gamma_log)                                 (N,) normalisation
        h_t = lambda * h_{t-1} + gamma * (B x_t)                (N,) complex state
        y_t = Re(C h_t) + D * x_t                               (I,) output, the size of the input

    with ``B = B_re + i B_im`` and ``C = C_re + i C_im``, stored for the row convention:
    ``B x_t = x_t @ B_re + i x_t @ B_im`` and ``Re(C h) = re @ C_re - im @ C_im``.

    The state is carried as two real arrays, :class:`LRUCarry` ``(re, im, y)``, so that
    :func:`jaxrnn.unroll`'s dtype handling and the Jacobian diagnostics (``jax.jacobian`` of the step
    on a real vector of ``2N + I`` entries) see only real numbers. Because ``output`` has no access to
    the parameters or the input, the step also computes the paper's output ``y_t`` (including the skip
    term ``D * x_t``) and stores it in the carry; ``output(carry) = carry.y``. ``y`` does not feed the
    next step, so in :func:`~jaxrnn.step_jacobians` its columns are zero and the spectrum of the
    ``(re, im)`` block is ``{lambda_j, conj(lambda_j)}`` written as 2x2 rotations-with-decay.
    The parallel kernel scans ``(lambda, gamma * B x_t)`` in complex arithmetic (:func:`linear_scan`).

    Initialisation (appendix A; ``NicolasZucchet/minimal-LRU``): ``|lambda|`` uniform on the ring
    ``[r_min, r_max]`` (``nu_log = log(-log(u (r_max^2 - r_min^2) + r_min^2) / 2)``), phase uniform in
    ``[0, max_phase]`` (``theta_log = log(max_phase u)``), ``gamma_log = log sqrt(1 - |lambda|^2)``,
    ``B_re, B_im ~ N(0, 1 / (2 I))``, ``C_re, C_im ~ N(0, 1 / N)``, ``D ~ N(0, 1)``.

    Params: ``nu_log, theta_log, gamma_log (N,)``, ``B_re, B_im (I, N)``, ``C_re, C_im (N, I)``,
    ``D (I,)``. Carry: :class:`LRUCarry`. Output: ``y (*batch, I)``.

    Args:
      hidden_size: the state size ``N >= 1``.
      r_min, r_max: the ring of initial eigenvalue moduli, ``0 <= r_min < r_max <= 1``.
      max_phase: the largest initial eigenvalue phase, ``> 0`` (``2 pi`` covers the circle; the paper
        uses ``pi / 10`` on long-range tasks).

    Returns:
      A :class:`~jaxrnn.Cell` (kind ``lru``) with a parallel-scan kernel.
    """
    N = check.positive_int(hidden_size, "lru: hidden_size")
    r_min = check.real_number(r_min, "lru: r_min")
    r_max = check.real_number(r_max, "lru: r_max")
    max_phase = check.real_number(max_phase, "lru: max_phase")
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(
            f"lru: need 0 <= r_min < r_max <= 1 (the ring of |lambda|); got r_min={r_min}, r_max={r_max}"
        )
    if max_phase <= 0.0:
        raise ValueError(f"lru: max_phase must be > 0; got {max_phase}")
    return Cell(lru, _build_lru, dict(hidden_size=N, r_min=r_min, r_max=r_max, max_phase=max_phase))


def _output_y(s):
    return s.y


def _build_lru(hidden_size, r_min, r_max, max_phase) -> CellFns:
    N = hidden_size

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args("lru", input_size, dtype)
        k = jax.random.split(key, 7)
        tiny = float(jnp.finfo(dtype).tiny)
        u1 = jax.random.uniform(k[0], (N,), dtype, minval=tiny)
        u2 = jax.random.uniform(k[1], (N,), dtype, minval=tiny)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        mod = jnp.exp(-jnp.exp(nu_log))
        gamma_log = jnp.log(jnp.sqrt(jnp.maximum(1.0 - mod**2, tiny)))
        b_std, c_std = 1.0 / math.sqrt(2 * n_in), 1.0 / math.sqrt(N)
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": gamma_log,
            "B_re": b_std * jax.random.normal(k[2], (n_in, N), dtype),
            "B_im": b_std * jax.random.normal(k[3], (n_in, N), dtype),
            "C_re": c_std * jax.random.normal(k[4], (N, n_in), dtype),
            "C_im": c_std * jax.random.normal(k[5], (N, n_in), dtype),
            "D": jax.random.normal(k[6], (n_in,), dtype),
        }

    def initial_carry(params, batch_shape=()):
        batch_shape = tuple(batch_shape)
        dt = params["B_re"].dtype
        z = jnp.zeros((*batch_shape, N), dt)
        return LRUCarry(z, z, jnp.zeros((*batch_shape, params["B_re"].shape[0]), dt))

    def project(params, x):
        gamma = jnp.exp(params["gamma_log"])
        return (gamma * (x @ params["B_re"]), gamma * (x @ params["B_im"]), params["D"] * x)

    def readout(params, re, im, dx):
        return re @ params["C_re"] - im @ params["C_im"] + dx

    def recur(params, s, px):
        u_re, u_im, dx = px
        l_re, l_im = _lambda(params)
        re = l_re * s.re - l_im * s.im + u_re
        im = l_re * s.im + l_im * s.re + u_im
        return LRUCarry(re, im, readout(params, re, im, dx))

    def apply(params, carry, xs, *, lengths, reverse, unroll=1, resets=None, reset_carry=None):  # no loop
        u_re, u_im, dx = project(params, xs)
        dt = _compute_dtype(u_re.dtype, carry.re.dtype)
        cdt = jnp.result_type(dt, jnp.complex64)
        l_re, l_im = _lambda(params)
        lam = jax.lax.complex(l_re.astype(dt), l_im.astype(dt)).astype(cdt)
        u = jax.lax.complex(u_re.astype(dt), u_im.astype(dt)).astype(cdt)
        a = jnp.broadcast_to(lam, u.shape)
        reset = _reset_mask(resets, u.ndim)
        if reset is not None:  # a step from the reset state r0: the pair (0, lambda r0 + u_t)
            r0 = jax.lax.complex(reset_carry.re.astype(dt), reset_carry.im.astype(dt)).astype(cdt)
            u = jnp.where(reset, a * r0 + u, u)
            a = jnp.where(reset, jnp.zeros_like(a), a)
        valid = _valid_mask(lengths, u.shape[0], u.ndim)
        if valid is not None:
            a = jnp.where(valid, a, jnp.ones_like(a))
            u = jnp.where(valid, u, jnp.zeros_like(u))
        h0 = jax.lax.complex(carry.re.astype(dt), carry.im.astype(dt)).astype(cdt)
        h = linear_scan(a, u, h0, reverse=reverse)
        re, im = jnp.real(h), jnp.imag(h)
        y = readout(params, re, im, dx.astype(dt))
        states = LRUCarry(re.astype(carry.re.dtype), im.astype(carry.im.dtype), y.astype(carry.y.dtype))
        final = jax.tree.map(lambda s: s[0 if reverse else -1], states)
        if lengths is not None:
            # (re, im) stood still on the padding (identity steps); y is that of the last valid step:
            # step lengths - 1 forwards, step 0 in reverse, and the carry's own y for length 0.
            last = jnp.zeros_like(lengths) if reverse else jnp.maximum(lengths - 1, 0)
            idx = jnp.broadcast_to(last[None, ..., None], (1, *states.y.shape[1:]))
            y_last = jnp.take_along_axis(states.y, idx.astype(jnp.int32), axis=0)[0]
            final = final._replace(y=jnp.where((lengths > 0)[..., None], y_last, carry.y))
        return final, states

    return CellFns(
        init,
        initial_carry,
        project,
        recur,
        _output_y,
        input_size=lambda params: params["B_re"].shape[0],
        kernel=SequenceKernel(apply, resets=True),
    )
