"""Spectral, Jacobian and Lyapunov diagnostics: pure, jit-safe functions of arrays.

Every function here takes arrays (and a :class:`~jaxrnn.Cell` where it needs the dynamics) and
returns a JAX array -- a scalar or a curve for a metrics dict. None of them syncs with the host or
branches in Python on array values, so all of them work under :func:`jax.jit` (the ``cell``, ``method``,
``ord`` and integer arguments are static). Arguments are checked on their shapes and dtypes before
anything is traced.

* :func:`spectral_radius`, :func:`max_singular_value` -- ``rho(W)`` and ``sigma_max(W)`` of a
  recurrent matrix (Pascanu, Mikolov & Bengio 2013, section 2.1).
* :func:`gradient_bound` -- the bound ``||ds_t/ds_k|| <= (gamma_theta gamma_phi)^(t-k)``
  for Elman-type cells.
* :func:`step_jacobians`, :func:`jacobian_norms` -- the per-step Jacobians ``ds_t/ds_{t-1}`` of any
  cell along a trajectory and the norms of their products ``||ds_t/ds_k||`` (the quantity behind
  vanishing and exploding gradients), computed in log space so that they never overflow.
* :func:`lyapunov_spectrum`, :func:`kaplan_yorke_dimension` -- Lyapunov exponents by the QR
  (Benettin) method and the attractor dimension they imply (Engelken, Wolf & Abbott 2020).

Conventions. The state ``s`` is the cell's carry flattened to one vector of size ``n``
(:func:`jax.flatten_util.ravel_pytree`; for an LSTM ``n = 2H``: ``h`` then ``c``). Jacobians are in
the column convention of ``jax.jacobian``, ``J[i, j] = d s_new[i] / d s_old[j]`` (for an Elman cell
``diag(f'(a_t)) W_hh^T``, Pascanu et al. eq. 5, since jaxrnn writes ``h @ W_hh``).

The diagnostics describe a cell's *dynamics*: they step with ``cell.recur`` and the step index
``t = 0 .. T-1`` (so per-step dropout masks and a ``bn_lstm``'s per-step statistics are those of the
unroll), never with ``cell.cut``, which only changes gradients. So a :func:`~jaxrnn.truncate`-d cell has
exactly the wrapped cell's Jacobians and exponents, and any transform or :func:`~jaxrnn.deep_rnn` is
taken as it is.
Time is indexed as in :func:`jaxrnn.unroll`: ``s_t`` is the state *after* step ``t``, the step that
reads ``xs[t]``, ``t = 0 .. T-1``, and ``s_{-1}`` is the initial carry, so ``s_t`` is the state whose
output is ``ys[t]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxrnn import activations
from jaxrnn import validators as check
from jaxrnn.unroll import check_unroll_kwargs, state_gradients

__all__ = [
    "gradient_bound",
    "gradient_flow",
    "jacobian_norms",
    "kaplan_yorke_dimension",
    "lyapunov_spectrum",
    "max_singular_value",
    "spectral_radius",
    "step_jacobians",
]

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 / bf16 passes for float32 products on accelerators


# --------------------------------------------------------------------------------------------------
# argument checks (shapes and dtypes only: they run before tracing and never look at values)


def _int(value, what: str, *, minimum: int) -> int:
    return check.int_at_least(value, what, minimum=minimum)


def _real_array(x, what: str):
    return check.real_array(x, what)


def _matrix(W, fn: str, *, square: bool, name: str = "W"):
    W = _real_array(W, f"{fn}: {name}")
    want = "a square matrix (n, n)" if square else "a matrix (m, n)"
    if W.ndim != 2:
        raise ValueError(
            f"{fn}: {name} must be {want}; got shape {tuple(W.shape)} (rank {W.ndim}). "
            f"For a stack of matrices use jax.vmap({fn})."
        )
    if square and W.shape[0] != W.shape[1]:
        raise ValueError(
            f"{fn}: {name} must be {want}: the eigenvalues of a recurrent matrix need as many rows as "
            f"columns; got shape {tuple(W.shape)}"
        )
    if W.size == 0:
        raise ValueError(f"{fn}: {name} must be non-empty; got shape {tuple(W.shape)}")
    return W


def _trajectory(cell, params, xs, carry, fn: str):
    """Validate an unbatched trajectory and return ``(s0, f, px)``.

    ``s0 (n,)`` is the flattened initial carry, ``f(s, px_t, t) -> s_new`` the recurrence on flat states
    (the cell's dynamics: ``recur`` with the step index, never ``cut``, which only changes gradients) and
    ``px`` the projected inputs (leading axis ``T``), ready for one ``lax.scan`` over ``(px, arange(T))``.
    """
    cell = check.cell(cell, fn)
    check.params(cell, params, fn)
    xs, _ = check.xs(cell, params, xs, 0, fn)
    if xs.ndim != 2:
        raise ValueError(
            f"{fn}: xs must have shape (T, {xs.shape[-1]}), one unbatched sequence; got shape "
            f"{tuple(xs.shape)} (rank {xs.ndim}). For a batch of sequences use jax.vmap over "
            f"xs (and carry)."
        )

    expected = jax.eval_shape(lambda p: cell.initial_carry(p, ()), params)
    if carry is None:
        carry = cell.initial_carry(params, ())
    else:
        carry = check.carry(cell, params, carry, (), fn)
        carry = jax.tree.map(lambda c, e: jnp.asarray(c, e.dtype), carry, expected)
    s0, unravel = ravel_pytree(carry)
    if not jnp.issubdtype(s0.dtype, jnp.floating):
        raise TypeError(
            f"{fn}: the carry of {cell.name} must be floating to take its Jacobians; got {s0.dtype}"
        )

    def f(s, px_t, t):
        new = cell.recur(params, unravel(s), px_t, t)
        new = jax.tree.map(lambda a, e: a.astype(e.dtype), new, expected)  # keep the carry's dtype
        return ravel_pytree(new)[0].astype(s0.dtype)

    return s0, f, cell.project(params, xs)


def _step_jacobians(s0, f, px):
    def body(s, inp):
        px_t, t = inp
        J, s_new = jax.jacfwd(lambda s: (f(s, px_t, t), f(s, px_t, t)), has_aux=True)(s)
        return s_new, J

    T = jax.tree.leaves(px)[0].shape[0]
    return jax.lax.scan(body, s0, (px, jnp.arange(T, dtype=jnp.int32)))[1]


# --------------------------------------------------------------------------------------------------
# matrices


def spectral_radius(W, method: str = "eig", num_iters: int = 20) -> jax.Array:
    """The spectral radius ``rho(W) = max_i |lambda_i(W)|`` of a square matrix.

    Pascanu, Mikolov & Bengio (2013, section 2.1): for a linear recurrence ``rho(W_hh) < 1`` is
    sufficient for the long-term components of the gradient to vanish and ``rho > 1`` necessary for
    them to explode (``||W^k|| -> 0`` iff ``rho(W) < 1``).

    Two methods:

    * ``"eig"`` -- exact, and differentiable where the dominant eigenvalue is simple:
      ``max(abs(jnp.linalg.eigvals(W)))``, LAPACK's non-symmetric eigensolver. It runs on the CPU
      backend and, depending on the jax version, may be unavailable or run on the host on GPU/TPU:
      use ``"power"`` there.
    * ``"power"`` -- Gelfand's formula ``rho(W) = lim_K ||W^K||^(1/K)`` with ``K = 2^num_iters``,
      by repeated squaring with rescaling: matrix products only, so it runs anywhere. Every product
      ``W^(2^m)`` is kept as ``exp(2^m ell) D^-1 A D`` with ``||A||_F = 1`` and a diagonal ``D`` of
      powers of two (an Osborne balancing step, as LAPACK's ``gebal``, accepted only if it lowers
      ``||A||_F``; it keeps the entries of ``A`` in range, e.g. for Jordan blocks)::

          A, ell = W / ||W||_F, log ||W||_F
          A, ell = rescale(balance(A), ell, 1)            # a few sweeps on W itself
          for m in range(num_iters):
              A, ell = rescale(A @ A, ell, 2^-(m+1))      # A @ A in full float32 (Precision.HIGHEST)
              A, ell = rescale(balance(A), ell, 2^-(m+1))
          rho = exp(ell)

          def rescale(A, ell, w):  c = ||A||_F;  return A / c, ell + w log(c)

      ``exp(ell)`` is ``||D^-1 W^K D||_F^(1/K)``, in exact arithmetic an upper bound of ``rho`` that
      only decreases with ``m``. Unlike vector power iteration it needs no gap below the dominant
      eigenvalue and is not fooled by a complex-conjugate dominant pair (common for non-symmetric
      real ``W``), by many eigenvalues of equal modulus (orthogonal ``W``) or by a Jordan block.

      Accuracy: the truncation error of ``log rho`` is ``<= log(sqrt(n) cond(V)) / K`` for
      ``W = V diag V^-1`` (``~ (p - 1) log(K) / K`` for a dominant Jordan block of size ``p``),
      negligible at the default ``num_iters=20`` (``K ~ 1e6``); what remains is rounding in the first
      squarings, ``~ eps (||W||_F / rho)^2`` relative. Tested in float32 to a relative error of
      ``1e-3`` on random Gaussian, rotation-like (complex dominant pair, non-normal), badly scaled,
      symmetric, orthogonal and permutation matrices, Jordan blocks up to size 16 and nilpotent
      matrices (which give 0); typical errors are ``1e-6 .. 1e-5``. Strongly non-normal matrices
      (``||W||_F / rho`` in the hundreds) can be off by ``~1e-2`` in float32 (``~1e-7`` in float64);
      larger Jordan blocks (size ``>~ 30``) underflow to 0. Cost: ``num_iters`` dense products,
      ``O(num_iters n^3)``.

      Not differentiable: the value converges to ``rho`` but its derivative does not (for a complex
      dominant pair it oscillates with the phase of ``lambda^K``), so the result is wrapped in
      ``jax.lax.stop_gradient``; for a penalty on ``rho`` use ``"eig"`` (or :func:`max_singular_value`).

    Args:
      W: ``(n, n)`` real matrix (integers and half precision are promoted to float32).
      method: ``"eig"`` or ``"power"``.
      num_iters: number of squarings for ``"power"`` (``W^(2^num_iters)``); ignored by ``"eig"``.

    Returns:
      ``()`` scalar, ``rho(W) >= 0``, in the (promoted) dtype of ``W``. ``0`` for a nilpotent ``W``.

    Raises:
      ValueError / TypeError before tracing for a non-square or non-2-D ``W``, a complex or boolean
      dtype, an unknown ``method`` or a non-positive ``num_iters``.
    """
    fn = "spectral_radius"
    if method not in ("eig", "power"):
        raise ValueError(
            f"{fn}: method must be 'eig' (exact, CPU) or 'power' (Gelfand's formula by repeated "
            f"squaring, GPU-friendly); got {method!r}"
        )
    num_iters = _int(num_iters, f"{fn}: num_iters", minimum=1)
    W = _matrix(W, fn, square=True)
    if method == "eig":
        return jnp.max(jnp.abs(jnp.linalg.eigvals(W))).astype(W.dtype)

    return jax.lax.stop_gradient(_gelfand(W, num_iters))


def _positive(c):
    return jnp.where(c > 0, c, jnp.ones_like(c))


def _balance(A):
    """One simultaneous Osborne sweep ``A -> D^-1 A D`` (``D`` powers of two, so exact), kept only if
    it lowers ``||A||_F``. Row and column norms are regularised by ``eps`` so that triangular
    (reducible) matrices, whose off-diagonal part balancing drives to zero, are handled too."""
    n = A.shape[0]
    off = A * (1 - jnp.eye(n, dtype=A.dtype))
    tau = jnp.finfo(A.dtype).eps * jnp.linalg.norm(A)
    r, c = jnp.linalg.norm(off, axis=1), jnp.linalg.norm(off, axis=0)
    e = jnp.clip(jnp.round(0.5 * jnp.log2((r + tau) / (c + tau))), -30, 30)
    d = jnp.exp2(e)
    B = A * (d[None, :] / d[:, None])
    return jnp.where(jnp.linalg.norm(B) < jnp.linalg.norm(A), B, A)


def _gelfand(W, num_iters: int, sweeps: int = 8):
    def rescale(A, ell, w):
        c = jnp.linalg.norm(A)
        return A / _positive(c), ell + w * jnp.log(c)  # log 0 = -inf: a nilpotent W gives rho = 0

    A, ell = rescale(W, jnp.zeros((), W.dtype), 1.0)
    A = jax.lax.fori_loop(0, sweeps, lambda i, A: _balance(A), A)
    A, ell = rescale(A, ell, 1.0)

    def body(m, state):
        A, ell = state
        w = jnp.exp2(-(m + 1.0)).astype(W.dtype)
        A, ell = rescale(jnp.matmul(A, A, precision=_HIGHEST), ell, w)
        return rescale(_balance(A), ell, w)

    _, ell = jax.lax.fori_loop(0, num_iters, body, (A, ell))
    return jnp.exp(ell)


def max_singular_value(W) -> jax.Array:
    """The spectral norm ``sigma_max(W) = ||W||_2 = sqrt(lambda_max(W^T W))`` of a matrix.

    The ``gamma_theta`` of the Politecnico di Milano lecture:
    ``||dh_i/dh_{i-1}|| <= ||W^T|| ||diag(phi')|| = gamma_theta gamma_phi``;
    Pascanu et al. (2013, section 2.1): ``sigma_max(W_hh) < 1/gamma`` is sufficient for vanishing
    gradients and ``> 1/gamma`` necessary for exploding ones. Always ``>= spectral_radius(W)`` for a
    square ``W`` (equal for normal matrices). Computed as ``jnp.linalg.norm(W, 2)`` (an SVD).

    Args:
      W: ``(m, n)`` real matrix, not necessarily square (e.g. an LSTM's ``W_hh (H, 4H)``).

    Returns:
      ``()`` scalar in the (promoted) dtype of ``W``.

    Raises:
      ValueError / TypeError before tracing for a ``W`` that is not a 2-D real array.
    """
    W = _matrix(W, "max_singular_value", square=False)
    return jnp.linalg.norm(W, 2)


# --------------------------------------------------------------------------------------------------
# the vanishing-gradient bound


def gradient_bound(cell, params, max_lag: int, activation=None, *, log: bool = False) -> jax.Array:
    """The bound ``||ds_t/ds_k||_2 <= eta^(t-k)`` for Elman-type cells, ``t-k = 0..max_lag``.

    For ``h_t = f(h_{t-1} @ W_hh + x_t @ W_xh + b)`` (``elman``, ``irnn``, ``np_rnn``) the step
    Jacobian is ``diag(f'(a_t)) W_hh^T``, so with ``gamma_theta = sigma_max(W_hh)`` and
    ``gamma_phi = sup |f'|``::

        ||dh_t/dh_k|| <= prod_{i=k+1}^t ||W_hh^T|| ||diag f'(a_i)|| <= (gamma_theta gamma_phi)^(t-k)

    (the Politecnico di Milano lecture "Recurrent Neural Networks"; Pascanu et al. 2013, eq. 7 and section
    2.1: ``eta = gamma_theta gamma_phi < 1`` is sufficient for vanishing gradients). For the Euler-discretised
    continuous-time cell ``ctrnn``, ``s_t = (1-alpha) s_{t-1} + alpha (f(s_{t-1}) @ W_hh + ...)``, the
    Jacobian is ``(1-alpha) I + alpha W_hh^T diag(f'(s_{t-1}))`` and the triangle inequality (``0 <= 1 -
    alpha``) and submultiplicativity give ``eta = 1 - alpha + alpha gamma_theta gamma_phi``. ``alpha``, the
    activation and its ``sup |f'|`` are read from ``cell.form`` (a :class:`~jaxrnn.cells.RecurrentForm`).

    The bound is a worst case over all trajectories; compare it with :func:`jacobian_norms` along an
    actual one. It is not defined here for gated cells (LSTM, GRU, ...), whose Jacobians are not of
    this form: use :func:`jacobian_norms` or :func:`lyapunov_spectrum` for those. In plain Python::

        eta = alpha * sigma_max(params["W_hh"]) * gamma_phi + (1 - alpha)   # alpha = 1 but for ctrnn
        bounds = [eta ** j for j in range(max_lag + 1)]

    Args:
      cell: ``jr.elman``, ``jr.irnn``, ``jr.np_rnn`` or ``jr.ctrnn`` (also wrapped in
        :func:`~jaxrnn.learned_initial_state`).
      params: its parameters; ``params["W_hh"]`` is ``(H, H)``.
      max_lag: the largest ``t - k``; an int ``>= 0``.
      activation: ``None`` (default): the cell's own, ``cell.form.activation.sup_grad``; or a name,
        ``"tanh"``, ``"relu"``, ``"identity"`` (``gamma_phi = 1``), ``"sigmoid"`` (``1/4``); or a
        number, taken as ``gamma_phi = sup |f'|`` itself (needed for a custom activation callable).
      log: return ``(t-k) log eta`` instead (finite where ``eta^(t-k)`` overflows; ``-inf`` for
        ``eta = 0``).

    Returns:
      ``(max_lag + 1,)``: ``eta ** arange(max_lag + 1)`` (``1`` at lag 0), in the dtype of ``W_hh``.

    Raises:
      ValueError / TypeError before tracing for another kind of cell, ``params`` without a square
      ``W_hh``, a negative ``max_lag`` or an unknown ``activation``.
    """
    fn = "gradient_bound"
    cell = check.cell(cell, fn)
    form = cell.form
    if form is None:
        raise ValueError(
            f"{fn}: the bound (gamma_theta * gamma_phi)^(t-k) holds for Elman-type cells (elman, "
            f"irnn, np_rnn, ctrnn), whose step Jacobian is W_hh^T diag(f'); got a {cell.name!r} cell, "
            f"which has no "
            f"such RecurrentForm. For gated, dropped-out or stacked cells measure the Jacobian products "
            f"instead: jacobian_norms(cell, params, xs) or lyapunov_spectrum(cell, params, xs)."
        )
    max_lag = _int(max_lag, f"{fn}: max_lag", minimum=0)
    if not isinstance(params, dict) or form.weight not in params:
        raise TypeError(
            f"{fn}: params must be the {cell.name} cell's parameter dict with a recurrent matrix "
            f"{form.weight!r} (make them with cell.init(key, input_size)); got {type(params).__name__}"
            + (f" with keys {sorted(params)}" if isinstance(params, dict) else "")
        )
    W = _matrix(params[form.weight], fn, square=True, name=f"params[{form.weight!r}]")

    if activation is None:
        gamma_phi = form.activation.sup_grad
        if gamma_phi is None:
            raise ValueError(
                f"{fn}: this {cell.name} cell's custom activation {form.activation.name!r} has no known "
                f"sup|f'|; "
                f"pass activation=gamma_phi, a number bounding |f'| (or give the cell an Activation with "
                f"sup_grad)"
            )
    elif isinstance(activation, (str, activations.Activation)):
        act = activations.get(activation, f"{fn}: activation")
        if act.sup_grad is None:
            raise ValueError(f"{fn}: activation {act.name!r} has no known sup|f'|; pass a number instead")
        gamma_phi = act.sup_grad
    else:
        gamma_phi = check.real_number(activation, f"{fn}: activation (gamma_phi = sup|f'|)", low=0.0)

    leak = 1.0 - form.alpha  # (1 - alpha) I in the ctrnn's Jacobian; 0 for the Elman family
    eta = (1.0 - leak) * max_singular_value(W) * jnp.asarray(gamma_phi, W.dtype) + leak
    lags = jnp.arange(max_lag + 1, dtype=W.dtype)
    if log:
        return jnp.where(lags == 0, jnp.zeros_like(lags), lags * jnp.log(eta))
    return jnp.power(eta, lags)


# --------------------------------------------------------------------------------------------------
# Jacobians along a trajectory


def step_jacobians(cell, params, xs, carry=None) -> jax.Array:
    """The per-step Jacobians ``J_t = ds_t/ds_{t-1}`` of ``cell`` along the trajectory driven by ``xs``.

    ``s_t = cell.step(params, s_{t-1}, xs[t])`` for ``t = 0 .. T-1`` from ``s_{-1} = carry``, with
    the carry flattened to a vector ``s (n,)`` (:func:`jax.flatten_util.ravel_pytree`; an LSTM's
    ``(h, c)`` gives ``n = 2H``). ``J_t[i, j] = d s_t[i] / d s_{t-1}[j]`` -- for an Elman cell
    ``diag(f'(a_t)) W_hh^T`` (Pascanu et al. 2013, eq. 5). One ``lax.scan`` with
    ``jax.jacfwd`` of the step (``n`` forward-mode passes per step). In plain Python::

        def step_jacobians(cell, params, xs, carry=None):
            s = cell.initial_carry(params, ()) if carry is None else carry
            Js = []
            for t in range(len(xs)):
                Js.append(jax.jacobian(cell.step, argnums=1)(params, s, xs[t], t))   # flattened
                s = cell.step(params, s, xs[t], t)
            return stack(Js)

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: its parameters.
      xs: ``(T, I)``, one unbatched input sequence (``jax.vmap`` for a batch).
      carry: the initial state ``s_{-1}``, unbatched, like ``cell.initial_carry(params, ())``;
        default that.

    Returns:
      ``(T, n, n)`` in the carry's dtype; entry ``t`` is ``ds_t/ds_{t-1}``, the Jacobian of the step
      that reads ``xs[t]``, taken at the state before it.

    Raises:
      ValueError / TypeError before tracing for ``xs`` not ``(T, I)`` with ``T >= 1`` and the cell's
      input size, or a ``carry`` that is not one unbatched state of the cell.
    """
    s0, f, px = _trajectory(cell, params, xs, carry, "step_jacobians")
    return _step_jacobians(s0, f, px)


def jacobian_norms(cell, params, xs, carry=None, ord=2, *, log: bool = False) -> jax.Array:
    """The norms ``N[t, k] = ||ds_t/ds_k||`` of the Jacobian products along a trajectory, ``(T, T)``.

    With ``s_t`` the state after step ``t`` (the one that reads ``xs[t]``; :func:`step_jacobians`)::

        ds_t/ds_k = J_t J_{t-1} ... J_{k+1}      for 0 <= k <= t < T    (ds_t/ds_t = I)

    the "temporal contributions" of BPTT (Pascanu et al. 2013, eqs. 3-5; the Politecnico di Milano lecture,
    ``dh_t/dh_k = prod_{i=k+1}^t dh_i/dh_{i-1}``): row ``t`` against ``t - k`` is the usual
    vanishing/exploding-gradient plot. ``N[t, t] = ||I||`` (``1`` for ``ord=2``, ``sqrt(n)`` for
    ``"fro"``) and ``N[t, k] = 0`` above the diagonal (``k > t``), where ``s_t`` does not depend on
    ``s_k``.

    Computed stably: each product is kept as ``exp(l) Q`` with ``||Q||_F = 1`` and a running
    log-scale ``l``, so ``log N`` is exact where ``N`` itself would overflow or underflow (``log=True``
    returns it; ``log=False`` returns ``exp`` of it, ``inf``/``0`` where that is out of range of the
    dtype). In plain Python, without the rescaling::

        Js = step_jacobians(cell, params, xs, carry)
        N = zeros((T, T))
        for t in range(T):
            for k in range(t + 1):
                P = eye(n)
                for i in range(k + 1, t + 1):
                    P = Js[i] @ P
                N[t, k] = norm(P, ord)

    All ``T`` products are advanced together in one ``lax.scan``: ``O(T^2 n^3)`` time (plus ``T^2``
    SVDs of ``n x n`` for ``ord=2``) and ``O(T n^2)`` memory -- meant for small ``n`` and ``T`` (a few
    hundred); for long sequences use :func:`lyapunov_spectrum` or a window of ``xs``.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: its parameters.
      xs: ``(T, I)``, one unbatched input sequence.
      carry: the initial state ``s_{-1}``, unbatched; default ``cell.initial_carry(params, ())``.
      ord: ``2`` (spectral norm, the gain of the worst direction) or ``"fro"`` (Frobenius).
      log: return ``log N`` (``-inf`` above the diagonal) instead of ``N``.

    Returns:
      ``(T, T)`` in the carry's dtype: ``N[t, k]`` (or ``log N[t, k]``), lower triangular.

    Raises:
      ValueError / TypeError before tracing for an unknown ``ord`` and as :func:`step_jacobians`.
    """
    fn = "jacobian_norms"
    if isinstance(ord, bool) or ord not in (2, "fro"):
        raise ValueError(f"{fn}: ord must be 2 (spectral norm) or 'fro' (Frobenius); got {ord!r}")
    s0, f, px = _trajectory(cell, params, xs, carry, fn)
    Js = _step_jacobians(s0, f, px)
    T, n = Js.shape[0], Js.shape[1]
    dtype = Js.dtype
    eye = jnp.eye(n, dtype=dtype)
    rows = jnp.arange(T)

    def norm(Q):
        if ord == "fro":
            return jnp.linalg.norm(Q, axis=(-2, -1))
        return jnp.linalg.norm(Q, 2, axis=(-2, -1))

    def body(state, inp):
        Q, scale = state  # product k is exp(scale[k]) * Q[k]; rows k > t are not used yet
        J, t = inp
        P = jnp.einsum("ij,kjl->kil", J, Q, precision=_HIGHEST)
        c = jnp.linalg.norm(P, axis=(-2, -1))
        Q = P / jnp.where(c > 0, c, jnp.ones_like(c))[:, None, None]
        scale = scale + jnp.log(c)  # a product that is exactly zero stays at log 0 = -inf
        Q, scale = Q.at[t].set(eye), scale.at[t].set(0.0)  # ds_t/ds_t = I
        log_norms = scale + jnp.log(norm(Q))
        return (Q, scale), jnp.where(rows <= t, log_norms, -jnp.inf)

    init = (jnp.broadcast_to(eye, (T, n, n)), jnp.zeros((T,), dtype))
    log_n = jax.lax.scan(body, init, (Js, rows))[1]
    return log_n if log else jnp.exp(log_n)


# --------------------------------------------------------------------------------------------------
# Lyapunov exponents


def lyapunov_spectrum(
    cell,
    params,
    xs,
    carry=None,
    k: int | None = None,
    reorth_every: int = 1,
    burn_in: int = 0,
    *,
    key=None,
) -> jax.Array:
    """The ``k`` largest Lyapunov exponents of ``cell`` along the trajectory driven by ``xs``.

    ``lambda_i = lim (1/T) log sigma_i(J_T ... J_1)`` (per step, natural log), estimated by the QR
    (Benettin) method as in Engelken, Wolf & Abbott (2020, "Lyapunov spectra of chaotic recurrent
    neural networks", arXiv:2006.02427, and their demo code): an
    orthonormal frame ``Q (n, k)`` is carried through the step Jacobians ``J_t = ds_t/ds_{t-1}``
    (:func:`step_jacobians`, here as ``k`` Jacobian-vector products per step) and re-orthonormalised
    by a sign-fixed QR every ``reorth_every`` steps; the logs of ``|diag R|`` accumulated after the
    first ``burn_in`` steps, divided by ``T - burn_in``, are the exponents. In plain Python::

        s = cell.initial_carry(params, ()) if carry is None else carry      # flattened to (n,)
        Q = qr(normal(key, (n, k)))[0]
        total = zeros(k)
        for t in range(T):
            Q = J(s, xs[t], t) @ Q                    # J = ds_t/ds_{t-1} at s = s_{t-1}
            s = cell.step(params, s, xs[t], t)
            since = t + 1 if t < burn_in else t - burn_in + 1        # steps since the last forced QR
            if t == T - 1 or t == burn_in - 1 or since % reorth_every == 0:
                Q, R = qr(Q)                          # signs fixed so that diag(R) >= 0
                if t >= burn_in:
                    total += log(abs(diag(R)))
        return sort(total / (T - burn_in))[::-1]

    For a linear recurrence ``s_t = s_{t-1} @ W`` the exponents converge to ``log |lambda_i(W)|``
    (a complex pair gives its ``log |lambda|`` twice) with an error ``O(1/T)``; ``lambda_1 < 0``
    means nearby trajectories converge (and gradients vanish), ``lambda_1 > 0`` chaos (exploding
    gradients). Their sum is the average ``log |det J_t|``. Exponents of directions the frame
    collapses exactly (e.g. a zero Jacobian) come out ``-inf``.

    Cost: ``T`` steps of ``k`` JVPs plus a QR of ``(n, k)`` every ``reorth_every`` steps (skipped
    with ``lax.cond`` otherwise). Between QRs the frame grows like ``||J||^reorth_every``: keep that
    within the dtype's range (Engelken et al. re-orthonormalise at least every ``10 tau``). On a CPU
    the QR is a LAPACK call (``geqrf``/``orgqr``) whose OpenBLAS threads compete with XLA's: with
    ``OPENBLAS_NUM_THREADS=1`` set before JAX is imported, the full spectrum of a 128-unit tanh network
    over 1000 steps took 0.71 s instead of 1.28 s (``reorth_every=1``) on a 2-core machine.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: its parameters.
      xs: ``(T, I)``, one unbatched input sequence; for an autonomous network pass zeros.
      carry: the initial state ``s_{-1}``, unbatched; default ``cell.initial_carry(params, ())``
        (often a fixed point: start an autonomous network elsewhere).
      k: how many exponents, ``1 <= k <= n`` (the size of the flattened state); default ``n``.
      reorth_every: QR every this many steps (an int ``>= 1``).
      burn_in: steps run first, for the state to reach its attractor and the frame to align, whose
        growth is not counted; ``0 <= burn_in < T``.
      key: a ``jax.random`` key for the initial random frame (the exponents do not depend on it
        with probability one; a generic frame is needed when ``k < n``); default ``PRNGKey(0)``.

    Returns:
      ``(k,)`` in the carry's dtype, sorted in descending order.

    Raises:
      ValueError / TypeError before tracing for ``k`` outside ``1..n``, ``reorth_every <= 0``,
      ``burn_in`` outside ``[0, T)`` and as :func:`step_jacobians`.
    """
    fn = "lyapunov_spectrum"
    s0, f, px = _trajectory(cell, params, xs, carry, fn)
    T, n = xs.shape[0], s0.shape[0]
    if k is None:
        k = n
    k = _int(k, f"{fn}: k", minimum=1)
    if k > n:
        raise ValueError(
            f"{fn}: k must be at most n = {n}, the size of the flattened state of this {cell.name} "
            f"(there are only n exponents); got k={k}"
        )
    r = _int(reorth_every, f"{fn}: reorth_every", minimum=1)
    burn_in = _int(burn_in, f"{fn}: burn_in", minimum=0)
    if burn_in >= T:
        raise ValueError(
            f"{fn}: burn_in must be smaller than the number of steps T = {T} (the exponents are "
            f"averaged over the T - burn_in steps after it); got {burn_in}"
        )
    dtype = s0.dtype
    if key is None:
        key = jax.random.PRNGKey(0)
    Q0 = jnp.linalg.qr(jax.random.normal(key, (n, k), dtype))[0]

    def orthonormalise(M):
        Q, R = jnp.linalg.qr(M)
        d = jnp.diagonal(R)
        sign = jnp.where(d < 0, -jnp.ones_like(d), jnp.ones_like(d))
        return Q * sign, jnp.log(jnp.abs(d))

    def keep(M):
        return M, jnp.zeros((k,), dtype)

    def body(state, inp):
        s, Q, total = state
        px_t, t = inp
        s_new, jvp = jax.linearize(lambda s: f(s, px_t, t), s)
        M = jax.vmap(jvp, in_axes=1, out_axes=1)(Q)
        since = jnp.where(t < burn_in, t, t - burn_in) + 1
        do_qr = (t == T - 1) | (t == burn_in - 1) | (since % r == 0)
        Q, logs = jax.lax.cond(do_qr, orthonormalise, keep, M)
        total = total + jnp.where(t >= burn_in, logs, jnp.zeros_like(logs))
        return (s_new, Q, total), None

    init = (s0, Q0, jnp.zeros((k,), dtype))
    (_, _, total), _ = jax.lax.scan(body, init, (px, jnp.arange(T)))
    return -jnp.sort(-total / (T - burn_in))


def kaplan_yorke_dimension(exponents) -> jax.Array:
    """The Kaplan-Yorke (Lyapunov) dimension of an attractor from its Lyapunov exponents.

    With the exponents sorted ``lambda_1 >= ... >= lambda_n`` and ``S_j = sum_{i<=j} lambda_i``::

        D = j + S_j / |lambda_{j+1}|,    j = max {j : S_j >= 0}

    ``D = 0`` if ``lambda_1 < 0`` (a stable fixed point or orbit) and ``D = n`` if every ``S_j >= 0``
    (the estimate needs more exponents). As in Engelken, Wolf & Abbott (2020; ``getDim`` in their
    demo code, which counts ``S_j > 0``: the same ``D``, since ``D`` is continuous in the exponents).
    In plain Python::

        lam = sorted(exponents, reverse=True)
        S = cumsum(lam)
        j = sum(S >= 0)               # S is concave, so {j : S_j >= 0} is a prefix
        D = 0 if j == 0 else n if j == n else j + S[j - 1] / abs(lam[j])

    Jit-safe: no Python branching on values.

    Args:
      exponents: ``(n,)`` Lyapunov exponents in any order (e.g. from :func:`lyapunov_spectrum`).

    Returns:
      ``()`` scalar in ``[0, n]``, in the (promoted) floating dtype of ``exponents``.

    Raises:
      ValueError / TypeError before tracing for ``exponents`` that are not a non-empty 1-D real array.
    """
    fn = "kaplan_yorke_dimension"
    lam = _real_array(exponents, f"{fn}: exponents")
    if lam.ndim != 1 or lam.shape[0] == 0:
        raise ValueError(
            f"{fn}: exponents must be a non-empty 1-D array (n,); got shape {tuple(lam.shape)}. "
            f"For a batch use jax.vmap({fn})."
        )
    n = lam.shape[0]
    lam = -jnp.sort(-lam)
    S = jnp.cumsum(lam)
    j = jnp.sum(S >= 0)
    S_j = S[jnp.clip(j - 1, 0, n - 1)]
    next_ = jnp.abs(lam[jnp.clip(j, 0, n - 1)])  # > 0 whenever 0 < j < n
    D = j.astype(lam.dtype) + S_j / jnp.where(next_ > 0, next_, jnp.ones_like(next_))
    return jnp.where(j == 0, jnp.zeros_like(D), jnp.where(j == n, jnp.full_like(D, n), D))


# --------------------------------------------------------------------------------------------------
# gradient flow


def gradient_flow(cell, params, xs, loss_fn, carry=None, *, reduce: str = "mean", **unroll_kwargs):
    """The vanishing-gradient curve ``||dL/ds_k||`` against ``k`` (the Politecnico di Milano,
    RWTH Aachen and dynamical-systems lectures; Pascanu et al. 2013).

    ``dL/ds_k`` is the total derivative of the loss with respect to the state after step ``k`` (the
    error BPTT carries back), from :func:`~jaxrnn.unroll.state_gradients` (zero probes and the
    ordinary ``jax.grad``). The norm is the Euclidean norm over the whole carry (for an LSTM both
    ``h`` and ``c``). For a loss at the last step only, the curve decays like ``||ds_T/ds_k||``
    when gradients vanish and grows when they explode. In plain Python::

        g = state_gradients(cell, params, xs, loss_fn)[2]                  # leaves (T, *batch, ...)
        norms = [sqrt(sum(sum(leaf[k] ** 2 over features) for leaf in g)) for k in range(T)]
        curve = mean(norms, over batch) if reduce == "mean" else norms

    Args:
      cell, params, xs, carry: as for :func:`~jaxrnn.unroll` (``xs (T, *batch, I)``).
      loss_fn: ``ys (T, *batch, H) -> scalar``.
      reduce: ``"mean"`` over the batch dims, giving ``(T,)``, or ``"none"``, giving ``(T, *batch)``.
      **unroll_kwargs: ``lengths`` (padding steps give 0), ``resets``, ``reverse``, ``time_axis``, ...

    Returns:
      ``(T,)`` or ``(T, *batch)`` norms, in the carry's dtype; jit-safe. An empty batch gives zeros
      (``reduce="mean"``) or an empty array.

    Raises:
      ValueError for an unknown ``reduce``; what :func:`~jaxrnn.unroll.state_gradients` raises (a
      ``loss_fn`` that does not return a scalar, bad ``xs``, ``lengths``, ...).
    """
    fn = "gradient_flow"
    if reduce not in ("mean", "none"):
        raise ValueError(f"{fn}: reduce must be 'mean' or 'none'; got {reduce!r}")
    cell = check.cell(cell, fn)
    check_unroll_kwargs(unroll_kwargs, fn)
    check.params(cell, params, fn)
    xs_t, _ = check.xs(cell, params, xs, unroll_kwargs.get("time_axis", 0), fn)
    n_batch = xs_t.ndim - 2
    _, _, g = state_gradients(cell, params, xs, loss_fn, carry, **unroll_kwargs)
    sq = sum(
        jnp.sum(
            leaf.reshape(leaf.shape[: 1 + n_batch] + (math.prod(leaf.shape[1 + n_batch :]),)) ** 2, axis=-1
        )
        for leaf in jax.tree.leaves(g)
    )
    norms = jnp.sqrt(sq)
    if reduce == "none":
        return norms
    n = math.prod(norms.shape[1:])  # an empty batch gives zeros, not 0/0
    return jnp.sum(norms, axis=tuple(range(1, 1 + n_batch))) / max(n, 1)
