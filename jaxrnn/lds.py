"""Linear dynamical systems: the Kalman filter, the Rauch-Tung-Striebel smoother and sampling.

The Politecnico di Milano lecture "Recurrent Neural Networks" (Ciccone) starts from the two hidden-state
models whose inference is tractable. For a linear-Gaussian state-space model the posterior over the
hidden state is a Gaussian whose mean and covariance are a deterministic function of the data, computed
by a recurrence -- the Kalman filter -- so the filter is also a :class:`~jaxrnn.Cell`
(:func:`kalman_cell`) that :func:`jaxrnn.unroll` runs, and an RNN trained on the same data can be
measured against it (``python -m experiments.filtering``).

The model, with ``n`` state, ``m`` observation and ``k`` control dimensions::

    x_0 ~ N(mu0, P0)
    y_t = C x_t + D u_t + v_t,        v_t ~ N(0, R)
    x_{t+1} = A x_t + B u_t + w_t,    w_t ~ N(0, Q)

``params`` is a dict ``{"A": (n, n), "C": (m, n), "Q": (n, n), "R": (m, m), "mu0": (n,), "P0": (n, n)}``,
plus ``"B": (n, k)`` and/or ``"D": (m, k)`` when controls ``us`` are given (a missing one is zero).
``x_0`` emits ``ys[0]``. Sequences are time-major: ``ys (T, *batch, m)``, ``us (T, *batch, k)``;
``lengths (*batch)`` marks each sequence's valid steps. The covariances ``Q``, ``R`` and ``P0`` must be
symmetric positive (semi-)definite (``R`` and the innovation covariances definite); to learn them, map
unconstrained parameters to them yourself (e.g. ``L @ L.T + eps * I``, or ``exp`` of a log-variance).

Numerics: the innovation covariance is factored by Cholesky (solves, never inverses; the
log-likelihood from its diagonal), the filtered covariance is updated in Joseph form
``(I - K C) P (I - K C)^T + K R K^T`` and the smoothed one in the analogous form
``(I - G A) P (I - G A)^T + G Q G^T + G P_s G^T``, each a sum of positive semi-definite terms, and
every covariance is symmetrised after each step: over ``T = 10,000`` steps a float32 filter, sequential
or parallel, agrees with a float64 run to ``2e-3`` in the means and ``1e-4`` (relative) in the
log-likelihood, its covariances exactly symmetric and positive definite (``tests/test_lds.py``).
Everything is differentiable, so the log-likelihood is a training loss for ``jax.grad`` + optax.

``parallel=True`` computes the same with ``jax.lax.associative_scan`` (``O(log T)`` depth) over the
filtering and smoothing elements of S. Saerkkae and A. F. Garcia-Fernandez, "Temporal parallelization
of Bayesian smoothers", IEEE Transactions on Automatic Control 66(1), 2021.

References: R. E. Kalman, "A new approach to linear filtering and prediction problems", 1960;
H. E. Rauch, F. Tung and C. T. Striebel, "Maximum likelihood estimates of linear dynamic systems",
AIAA Journal 3(8), 1965; S. Saerkkae, "Bayesian Filtering and Smoothing", Cambridge University Press,
2013 (chapters 4 and 8).
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns

__all__ = ["KalmanCarry", "kalman_cell", "kalman_filter", "rts_smoother", "sample"]

_REQUIRED = ("A", "C", "Q", "R", "mu0", "P0")
_OPTIONAL = ("B", "D")


# --------------------------------------------------------------------------------------------------
# argument checks


def _shape(x) -> tuple:
    return tuple(x.shape)


def _check_params(params, fn: str, controls: bool | None):
    """The params as arrays of one floating dtype, and ``(n, m, k)``; ``controls``: whether ``us`` was
    given (``None``: don't check B/D against it)."""
    if not isinstance(params, dict):
        raise TypeError(
            f"{fn}: params must be a dict with keys {list(_REQUIRED)} (and optionally 'B', 'D'); "
            f"got {type(params).__name__}"
        )
    missing = [name for name in _REQUIRED if name not in params]
    unknown = sorted(set(params) - set(_REQUIRED) - set(_OPTIONAL), key=str)
    if missing or unknown:
        raise ValueError(
            f"{fn}: params must have keys {list(_REQUIRED)} (and optionally 'B', 'D' with controls us); "
            f"got {sorted(params, key=str)}"
            + (f", missing {missing}" if missing else "")
            + (f", unknown {unknown}" if unknown else "")
        )
    p = {name: check.real_array(v, f"{fn}: params[{name!r}]") for name, v in params.items()}
    A, C = p["A"], p["C"]
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"{fn}: params['A'] must be a square (n, n) matrix with n >= 1; got {_shape(A)}")
    n = A.shape[0]
    if C.ndim != 2 or C.shape[1] != n or C.shape[0] == 0:
        raise ValueError(f"{fn}: params['C'] must have shape (m, n={n}) with m >= 1; got {_shape(C)}")
    m = C.shape[0]
    want = {"Q": (n, n), "R": (m, m), "mu0": (n,), "P0": (n, n)}
    for name, shape in want.items():
        if _shape(p[name]) != shape:
            raise ValueError(
                f"{fn}: params[{name!r}] must have shape {shape} for n={n} states and m={m} observations; "
                f"got {_shape(p[name])}"
            )
    k = 0
    for name, rows in (("B", n), ("D", m)):
        if name in p:
            v = p[name]
            if v.ndim != 2 or v.shape[0] != rows or (k and v.shape[1] != k):
                raise ValueError(
                    f"{fn}: params[{name!r}] must have shape ({rows}, k)"
                    + (f" with k={k} as params['B']" if k else "")
                    + f"; got {_shape(v)}"
                )
            k = v.shape[1]
    if controls is not None:
        has = [name for name in _OPTIONAL if name in p]
        if controls and not has:
            raise ValueError(f"{fn}: us was given but params has neither 'B' nor 'D' (the control matrices)")
        if not controls and has:
            raise ValueError(
                f"{fn}: params has {has} (control matrices) but us is None; pass the controls "
                "us (T, *batch, k)"
            )
    dtype = jnp.result_type(*p.values())
    return {name: v.astype(dtype) for name, v in p.items()}, n, m, k


def _check_data(params, ys, us, lengths, fn: str):
    p, n, m, k = _check_params(params, fn, us is not None)
    ys = check.real_array(ys, f"{fn}: ys")
    if ys.ndim < 2 or ys.shape[-1] != m or ys.shape[0] == 0:
        raise ValueError(
            f"{fn}: ys must have shape (T, *batch, m) with T >= 1 and m={m} (the rows of params['C']); "
            f"got {_shape(ys)}"
        )
    T, batch_shape = ys.shape[0], _shape(ys)[1:-1]
    if us is not None:
        us = check.real_array(us, f"{fn}: us")
        if _shape(us) != (T, *batch_shape, k):
            raise ValueError(
                f"{fn}: us must have shape (T, *batch, k) = {(T, *batch_shape, k)} (ys' time and batch "
                f"dims, k={k} columns of params['B'/'D']); got {_shape(us)}"
            )
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    dtype = jnp.result_type(ys, *p.values())
    p = {name: v.astype(dtype) for name, v in p.items()}
    us = None if us is None else us.astype(dtype)
    return p, ys.astype(dtype), us, lengths, T, batch_shape


# --------------------------------------------------------------------------------------------------
# the maths, for one sequence (vmapped over the batch)


def _sym(P):
    return 0.5 * (P + jnp.swapaxes(P, -1, -2))


def _controls(p, u):
    """``(B u, D u)`` (zeros without controls)."""
    n, m = p["A"].shape[0], p["C"].shape[0]
    if u is None:
        return jnp.zeros(n, p["A"].dtype), jnp.zeros(m, p["A"].dtype)
    bu = p["B"] @ u if "B" in p else jnp.zeros(n, u.dtype)
    du = p["D"] @ u if "D" in p else jnp.zeros(m, u.dtype)
    return bu, du


def _gauss_logpdf(e, S):
    """``log N(e; 0, S)`` by Cholesky, and the factor."""
    L = jnp.linalg.cholesky(S)
    z = jax.scipy.linalg.solve_triangular(L, e[..., None], lower=True)[..., 0]
    m = e.shape[-1]
    ll = -0.5 * (m * math.log(2 * math.pi) + jnp.sum(z * z, -1)) - jnp.sum(
        jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1
    )
    return ll, L


def _update(p, mean, cov, y, du):
    """Condition the belief ``N(mean, cov)`` on ``y``: ``(mean, cov, log p(y | past))`` (Joseph form)."""
    C, R = p["C"], p["R"]
    e = y - C @ mean - du
    S = _sym(C @ cov @ C.T + R)
    ll, L = _gauss_logpdf(e, S)
    K = jax.scipy.linalg.cho_solve((L, True), C @ cov).T  # P C^T S^{-1}
    IKC = jnp.eye(cov.shape[-1], dtype=cov.dtype) - K @ C
    return mean + K @ e, _sym(IKC @ cov @ IKC.T + K @ R @ K.T), ll


def _predict(p, mean, cov, bu):
    A = p["A"]
    return A @ mean + bu, _sym(A @ cov @ A.T + p["Q"])


def _filter_one(p, ys, us, valid):
    """Sequential filter of one sequence: filtered ``(means (T, n), covs (T, n, n))``, predicted
    ``(means, covs)`` for each step, and the per-step log-likelihoods (0 on padding)."""

    def body(state, inp):
        mp, Pp, mf, Pf = state
        y, u, ok = inp
        bu, du = _controls(p, u)
        mf_new, Pf_new, ll = _update(p, mp, Pp, y, du)
        mp_new, Pp_new = _predict(p, mf_new, Pf_new, bu)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        new_state = (keep(mp_new, mp), keep(Pp_new, Pp), keep(mf_new, mf), keep(Pf_new, Pf))
        return new_state, (new_state[2], new_state[3], mp, Pp, jnp.where(ok, ll, 0.0))

    init = (p["mu0"], p["P0"], p["mu0"], p["P0"])
    _, (mf, Pf, mp, Pp, ll) = jax.lax.scan(body, init, (ys, us, valid))
    return mf, Pf, mp, Pp, ll


def _filter_elements(p, ys, us, valid):
    """Saerkkae & Garcia-Fernandez's filtering elements ``(A, b, C, eta, J)`` for each step (Lemma 7 of
    the paper, with the prior folded into the first); padding steps are the identity element."""
    A, Cm, Q, R = p["A"], p["C"], p["Q"], p["R"]
    n, T = A.shape[0], ys.shape[0]
    eye = jnp.eye(n, dtype=A.dtype)
    if us is None:
        bu = jnp.zeros((T, n), A.dtype)
        du = jnp.zeros((T, Cm.shape[0]), A.dtype)
    else:
        bu, du = jax.vmap(lambda u: _controls(p, u))(us)
    # step t >= 1: x_t = A x_{t-1} + B u_{t-1} + w, so the offset uses the previous control
    c = jnp.concatenate([jnp.zeros((1, n), A.dtype), bu[:-1]], axis=0)

    def element(t, y, c, d, ok):
        first = t == 0
        m_prior = jnp.where(first, p["mu0"], c)
        P_prior = jnp.where(first, p["P0"], Q)
        F = jnp.where(first, jnp.zeros_like(A), A)
        S = _sym(Cm @ P_prior @ Cm.T + R)
        L = jnp.linalg.cholesky(S)
        K = jax.scipy.linalg.cho_solve((L, True), Cm @ P_prior).T
        e = y - Cm @ m_prior - d
        IKC = eye - K @ Cm
        Ae = IKC @ F
        be = m_prior + K @ e
        Ce = _sym(IKC @ P_prior @ IKC.T + K @ R @ K.T)
        HF = Cm @ F
        eta = HF.T @ jax.scipy.linalg.cho_solve((L, True), e)
        J = _sym(HF.T @ jax.scipy.linalg.cho_solve((L, True), HF))
        # padding: the identity (belief unchanged); a padded first step: the prior, unconditioned
        Ae = jnp.where(ok, Ae, jnp.where(first, jnp.zeros_like(A), eye))
        be = jnp.where(ok, be, jnp.where(first, p["mu0"], 0.0))
        Ce = jnp.where(ok, Ce, jnp.where(first, p["P0"], 0.0))
        return Ae, be, Ce, jnp.where(ok, eta, 0.0), jnp.where(ok, J, 0.0)

    return jax.vmap(element)(jnp.arange(T), ys, c, du, valid)


def _filter_combine(ei, ej):
    """The associative operator of the filtering elements (``ei`` earlier, ``ej`` later)."""
    Ai, bi, Ci, etai, Ji = ei
    Aj, bj, Cj, etaj, Jj = ej
    eye = jnp.eye(Ai.shape[-1], dtype=Ai.dtype)
    M = eye + Ci @ Jj  # (I + C_i J_j); its transpose is (I + J_j C_i)
    AjMinv = jnp.swapaxes(jnp.linalg.solve(jnp.swapaxes(M, -1, -2), jnp.swapaxes(Aj, -1, -2)), -1, -2)
    A = AjMinv @ Ai
    b = (AjMinv @ (bi + (Ci @ etaj[..., None])[..., 0])[..., None])[..., 0] + bj
    C = _sym(AjMinv @ Ci @ jnp.swapaxes(Aj, -1, -2) + Cj)
    AiT_Ninv = jnp.swapaxes(jnp.linalg.solve(M, Ai), -1, -2)  # A_i^T (I + J_j C_i)^{-1}
    eta = (AiT_Ninv @ (etaj - (Jj @ bi[..., None])[..., 0])[..., None])[..., 0] + etai
    J = _sym(AiT_Ninv @ Jj @ Ai + Ji)
    return A, b, C, eta, J


def _parallel_filter_one(p, ys, us, valid):
    elems = _filter_elements(p, ys, us, valid)
    _, mf, Pf, _, _ = jax.lax.associative_scan(_filter_combine, elems)
    # the predicted beliefs, and the log-likelihood from them (elementwise in t)
    T, n = ys.shape[0], p["A"].shape[0]
    bu, du = (
        (jnp.zeros((T, n), ys.dtype), jnp.zeros_like(ys))
        if us is None
        else jax.vmap(lambda u: _controls(p, u))(us)
    )
    mp_next, Pp_next = jax.vmap(lambda m, P, b: _predict(p, m, P, b))(mf, Pf, bu)
    mp = jnp.concatenate([p["mu0"][None], mp_next[:-1]], axis=0)
    Pp = jnp.concatenate([p["P0"][None], Pp_next[:-1]], axis=0)
    Cm = p["C"]
    e = ys - mp @ Cm.T - du
    S = _sym(Cm @ Pp @ Cm.T + p["R"])
    ll, _ = _gauss_logpdf(e, S)
    return mf, Pf, mp, Pp, jnp.where(valid, ll, 0.0)


def _smooth_one(p, mf, Pf, us, valid, parallel: bool):
    """RTS smoothing of one filtered sequence; zeros past its length."""
    A, Q = p["A"], p["Q"]
    n, T = A.shape[0], mf.shape[0]
    eye = jnp.eye(n, dtype=A.dtype)
    nxt_ok = jnp.concatenate([valid[1:], jnp.zeros((1,), bool)])
    bu = jnp.zeros((T, n), A.dtype) if us is None else jax.vmap(lambda u: _controls(p, u)[0])(us)

    def gain(m, P, b):
        """``G = P A^T (A P A^T + Q)^{-1}`` and the one-step prediction."""
        mp, Pp = _predict(p, m, P, b)
        G = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(Pp), True), A @ P).T
        return G, mp

    if parallel:

        def element(m, P, b, ok, nok):
            G, mp = gain(m, P, b)
            IGA = eye - G @ A
            E = jnp.where(nok, G, 0.0)
            g = jnp.where(nok, m - G @ mp, m)
            Lc = jnp.where(nok, _sym(IGA @ P @ IGA.T + G @ Q @ G.T), P)
            # padding: the identity element (E = I, g = 0, L = 0)
            return jnp.where(ok, E, eye), jnp.where(ok, g, 0.0), jnp.where(ok, Lc, 0.0)

        def combine(later, earlier):  # associative_scan(reverse=True) passes (later, earlier)
            Ej, gj, Lj = later
            Ei, gi, Li = earlier
            Ei_T = jnp.swapaxes(Ei, -1, -2)
            return Ei @ Ej, (Ei @ gj[..., None])[..., 0] + gi, _sym(Ei @ Lj @ Ei_T + Li)

        elems = jax.vmap(element)(mf, Pf, bu, valid, nxt_ok)
        _, ms, Ps = jax.lax.associative_scan(combine, elems, reverse=True)
    else:

        def body(nxt, inp):
            m_next, P_next = nxt
            m, P, b, nok = inp
            G, mp = gain(m, P, b)
            IGA = eye - G @ A
            ms = m + G @ (m_next - mp)
            Ps = _sym(IGA @ P @ IGA.T + G @ Q @ G.T + G @ P_next @ G.T)
            out = (jnp.where(nok, ms, m), jnp.where(nok, Ps, P))
            return out, out

        init = (jnp.zeros((n,), A.dtype), jnp.zeros((n, n), A.dtype))
        _, (ms, Ps) = jax.lax.scan(body, init, (mf, Pf, bu, nxt_ok), reverse=True)
    return jnp.where(valid[:, None], ms, 0.0), jnp.where(valid[:, None, None], Ps, 0.0)


@functools.partial(jax.jit, static_argnames=("T", "batch_shape", "parallel", "smooth"))
def _run(p, ys, us, lengths, T, batch_shape, parallel: bool, smooth: bool):
    """Flatten the batch dims, vmap one-sequence inference, restore the dims (compiled once per shape, so
    an eager call does not dispatch the associative scan op by op)."""
    N = math.prod(batch_shape)
    m, n = ys.shape[-1], p["A"].shape[0]
    ys_f = ys.reshape(T, N, m)
    us_f = None if us is None else us.reshape(T, N, us.shape[-1])
    lens = jnp.full((N,), T) if lengths is None else lengths.reshape(N)
    valid = jnp.arange(T)[:, None] < lens[None, :]  # (T, N)

    def one(y, u, ok):
        mf, Pf, _, _, ll = (_parallel_filter_one if parallel else _filter_one)(p, y, u, ok)
        if smooth:
            mf, Pf = _smooth_one(p, mf, Pf, u, ok, parallel)
        return jnp.sum(ll), mf, Pf

    in_axes = (1, None if us is None else 1, 1)
    ll, means, covs = jax.vmap(one, in_axes=in_axes, out_axes=(0, 1, 1))(ys_f, us_f, valid)
    return (
        ll.reshape(batch_shape),
        means.reshape((T, *batch_shape, n)),
        covs.reshape((T, *batch_shape, n, n)),
    )


# --------------------------------------------------------------------------------------------------
# public inference


def kalman_filter(params, ys, us=None, *, lengths=None, parallel: bool = False):
    """The Kalman filter: ``(log_likelihood, means, covs)`` of ``p(x_t | y_0..y_t) = N(means[t], covs[t])``.

    In plain Python (one sequence of length ``L``; ``u`` terms only with controls)::

        mean, cov, log_likelihood = mu0, P0, 0.0
        for t in range(L):
            if t > 0:                                       # predict
                mean = A @ mean + B @ us[t - 1]
                cov = A @ cov @ A.T + Q
            S = C @ cov @ C.T + R                           # update
            e = ys[t] - C @ mean - D @ us[t]
            log_likelihood += log N(e; 0, S)
            K = cov @ C.T @ inv(S)
            mean, cov = mean + K @ e, (I - K @ C) @ cov @ (I - K @ C).T + K @ R @ K.T
            means[t], covs[t] = mean, cov

    Args:
      params: the model (see the module docstring).
      ys: observations ``(T, *batch, m)``.
      us: controls ``(T, *batch, k)`` or ``None``.
      lengths: ``(*batch)`` ints in ``[0, T]``; past a sequence's length its filtered belief repeats the
        last valid one (the prior ``(mu0, P0)`` for length 0) and adds nothing to the log-likelihood.
      parallel: the associative-scan form (Saerkkae & Garcia-Fernandez 2021); equal values and gradients.

    Returns:
      ``log_likelihood (*batch)`` (``log p(y_0..y_{L-1})``, summed over valid steps), ``means (T, *batch,
      n)`` and ``covs (T, *batch, n, n)``.
    """
    fn = "lds.kalman_filter"
    parallel = check.bool_arg(parallel, f"{fn}: parallel")
    p, ys, us, lengths, T, batch_shape = _check_data(params, ys, us, lengths, fn)
    return _run(p, ys, us, lengths, T, batch_shape, parallel, smooth=False)


def rts_smoother(params, ys, us=None, *, lengths=None, parallel: bool = False):
    """The Rauch-Tung-Striebel smoother: ``(log_likelihood, means, covs)`` of ``p(x_t | y_0..y_{L-1})``.

    In plain Python, after :func:`kalman_filter`'s ``(mf, Pf)`` of one sequence of length ``L``::

        ms[L-1], Ps[L-1] = mf[L-1], Pf[L-1]
        for t in range(L - 2, -1, -1):
            mp, Pp = A @ mf[t] + B @ us[t], A @ Pf[t] @ A.T + Q      # predicted x_{t+1}
            G = Pf[t] @ A.T @ inv(Pp)
            ms[t] = mf[t] + G @ (ms[t + 1] - mp)
            Ps[t] = Pf[t] + G @ (Ps[t + 1] - Pp) @ G.T              # computed in Joseph-like form

    Args and log-likelihood as :func:`kalman_filter`; the means and covariances are zero past each
    sequence's length.
    """
    fn = "lds.rts_smoother"
    parallel = check.bool_arg(parallel, f"{fn}: parallel")
    p, ys, us, lengths, T, batch_shape = _check_data(params, ys, us, lengths, fn)
    return _run(p, ys, us, lengths, T, batch_shape, parallel, smooth=True)


def sample(params, key, T: int, batch_shape=(), us=None):
    """Draw states and observations from the model: ``(xs (T, *batch, n), ys (T, *batch, m))``.

    In plain Python::

        x = mu0 + chol(P0) @ normal(n)
        for t in range(T):
            xs[t], ys[t] = x, C @ x + D @ us[t] + chol(R) @ normal(m)
            x = A @ x + B @ us[t] + chol(Q) @ normal(n)

    ``Q``, ``R``, ``P0`` are factored by Cholesky, so they must be positive definite here (add a tiny
    jitter to a singular one). ``us``: controls ``(T, *batch, k)`` when ``params`` has ``B``/``D``.
    """
    fn = "lds.sample"
    T = check.positive_int(T, f"{fn}: T")
    key = check.prng_key(key, fn, optional=False)
    if isinstance(batch_shape, int | np.integer) or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 0 for d in tuple(batch_shape)
    ):
        raise TypeError(f"{fn}: batch_shape must be a tuple of non-negative ints; got {batch_shape!r}")
    batch_shape = tuple(int(d) for d in batch_shape)
    p, n, m, k = _check_params(params, fn, us is not None)
    if us is not None:
        us = check.real_array(us, f"{fn}: us")
        if _shape(us) != (T, *batch_shape, k):
            raise ValueError(
                f"{fn}: us must have shape (T, *batch_shape, k) = {(T, *batch_shape, k)}; got {_shape(us)}"
            )
        us = us.astype(p["A"].dtype)
    dtype = p["A"].dtype
    chol = {name: jnp.linalg.cholesky(p[name]) for name in ("P0", "Q", "R")}
    k0, kw, kv = jax.random.split(key, 3)
    x0 = p["mu0"] + jax.random.normal(k0, (*batch_shape, n), dtype) @ chol["P0"].T
    ws = jax.random.normal(kw, (T, *batch_shape, n), dtype) @ chol["Q"].T
    vs = jax.random.normal(kv, (T, *batch_shape, m), dtype) @ chol["R"].T
    zeros_u = jnp.zeros((T, *batch_shape, 0), dtype)
    B = p.get("B", jnp.zeros((n, k), dtype))
    D = p.get("D", jnp.zeros((m, k), dtype))

    def body(x, inp):
        w, v, u = inp
        y = x @ p["C"].T + u @ D.T + v
        return x @ p["A"].T + u @ B.T + w, (x, y)

    _, (xs, ys) = jax.lax.scan(body, x0, (ws, vs, zeros_u if us is None else us))
    return xs, ys


# --------------------------------------------------------------------------------------------------
# the filter as a Cell


class KalmanCarry(NamedTuple):
    """The carry of :func:`kalman_cell`, the belief after step ``t``: ``prior_mean (*batch, n)`` and
    ``prior_cov (*batch, n, n)``, the predictive belief ``p(x_{t+1} | y_<=t)`` the next step starts
    from; ``mean``, ``cov``, the filtered belief ``p(x_t | y_<=t)``; ``log_likelihood (*batch)``,
    ``log p(y_<=t)`` so far."""

    prior_mean: jax.Array
    prior_cov: jax.Array
    mean: jax.Array
    cov: jax.Array
    log_likelihood: jax.Array


def kalman_cell(state_size: int, control_size: int = 0) -> Cell:
    """The Kalman filter as a :class:`~jaxrnn.Cell`: input ``x_t = y_t (*batch, m)`` (or
    ``concat([y_t, u_t])``, ``(*batch, m + k)``, with ``control_size = k > 0``), output the filtered mean
    ``E[x_t | y_0..y_t] (*batch, n)``; the carry (:class:`KalmanCarry`) is the belief.

    Params are :func:`kalman_filter`'s dict (with ``"B"`` and ``"D"`` when ``control_size > 0``); they
    are used as given, so keep ``Q``, ``R``, ``P0`` positive definite when learning them. The step, in
    plain Python::

        mean, cov, ll = update(carry.prior_mean, carry.prior_cov, y, D @ u)    # Joseph form
        prior_mean, prior_cov = A @ mean + B @ u, A @ cov @ A.T + Q
        return KalmanCarry(prior_mean, prior_cov, mean, cov, carry.log_likelihood + ll)

    ``jr.unroll(kalman_cell(n), params, ys, lengths=..., resets=...)`` equals :func:`kalman_filter` (the
    final carry's ``log_likelihood``, the outputs its filtered means; zero on padding); a reset starts
    from the prior ``(mu0, P0)`` again. ``init`` draws a stable random model: ``A`` = 0.9 x a random
    orthogonal matrix, ``C`` Gaussian with variance ``1/n``, ``Q = 0.1 I``, ``R = 0.1 I``, ``mu0 = 0``,
    ``P0 = I`` (``B``, ``D`` Gaussian with variance ``1/k``).
    """
    n = check.positive_int(state_size, "kalman_cell: state_size")
    k = check.int_at_least(control_size, "kalman_cell: control_size", minimum=0)
    return Cell(kalman_cell, _build_kalman_cell, {"state_size": n, "control_size": k})


def _build_kalman_cell(state_size: int, control_size: int) -> CellFns:
    n, k = state_size, control_size

    def init(key, input_size, dtype=jnp.float32):
        size, dtype = check.init_args("kalman_cell", input_size, dtype)
        m = size - k
        if m < 1:
            raise ValueError(
                f"kalman_cell.init: input_size must be m + control_size with m >= 1 observations "
                f"(control_size={k}); got {size}"
            )
        kA, kC, kB, kD = jax.random.split(key, 4)
        q, _ = jnp.linalg.qr(jax.random.normal(kA, (n, n), dtype))
        params = {
            "A": 0.9 * q,
            "C": jax.random.normal(kC, (m, n), dtype) / math.sqrt(n),
            "Q": 0.1 * jnp.eye(n, dtype=dtype),
            "R": 0.1 * jnp.eye(m, dtype=dtype),
            "mu0": jnp.zeros((n,), dtype),
            "P0": jnp.eye(n, dtype=dtype),
        }
        if k:
            params["B"] = jax.random.normal(kB, (n, k), dtype) / math.sqrt(k)
            params["D"] = jax.random.normal(kD, (m, k), dtype) / math.sqrt(k)
        return params

    def initial_carry(params, batch_shape=()):
        batch_shape = tuple(batch_shape)
        mean = jnp.broadcast_to(params["mu0"], (*batch_shape, n))
        cov = jnp.broadcast_to(params["P0"], (*batch_shape, n, n))
        return KalmanCarry(mean, cov, mean, cov, jnp.zeros(batch_shape, params["mu0"].dtype))

    def recur(params, carry, x):
        m = x.shape[-1] - k
        y, u = x[..., :m], (x[..., m:] if k else None)

        def one(prior_mean, prior_cov, y, u):
            bu, du = _controls(params, u)
            mean, cov, ll = _update(params, prior_mean, prior_cov, y, du)
            return (*_predict(params, mean, cov, bu), mean, cov, ll)

        batch = x.shape[:-1]
        N = math.prod(batch)
        flat = lambda a, tail: a.reshape((N, *tail))  # noqa: E731
        out = jax.vmap(one, in_axes=(0, 0, 0, None if u is None else 0))(
            flat(carry.prior_mean, (n,)),
            flat(carry.prior_cov, (n, n)),
            flat(y, (m,)),
            None if u is None else flat(u, (k,)),
        )
        pm, pc, mean, cov, ll = (a.reshape((*batch, *a.shape[1:])) for a in out)
        return KalmanCarry(pm, pc, mean, cov, carry.log_likelihood + ll)

    return CellFns(
        init,
        initial_carry,
        lambda params, x: x,
        recur,
        lambda carry: carry.mean,
        input_size=lambda params: params["C"].shape[0] + k,
    )
