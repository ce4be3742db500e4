"""Parallel evaluation of a nonlinear recurrence by Newton's method: DEER and quasi-Newton (quasi-DEER).

Y. H. Lim, Q. Zhu, J. Selfridge and M. F. Kasim, "Parallelizing non-linear sequential models over the
sequence length" (ICLR 2024, DEER); X. Gonzalez, A. Warrington, J. T. H. Smith and S. W. Linderman,
"Towards scalable and stable parallelization of nonlinear RNNs" (NeurIPS 2024: quasi-DEER and ELK).

The states ``s_1 .. s_T`` of ``s_t = f(s_{t-1}, x_t)`` are the root of the residuals
``s_t - f(s_{t-1}, x_t)``, all ``T`` at once. Newton's method linearises ``f`` around the current guess
``S^(k)`` and solves the linearised system exactly::

    s_t^(k+1) = f(s_{t-1}^(k), x_t) + J_t (s_{t-1}^(k+1) - s_{t-1}^(k)),   J_t = df/ds (s_{t-1}^(k), x_t)

a *linear* recurrence ``s_t = J_t s_{t-1} + b_t``, which ``jax.lax.associative_scan`` solves over the
affine maps ``(J_t, b_t)`` in ``O(log T)`` depth (composition ``(J_2 J_1, J_2 b_1 + b_2)``). Every
evaluation of ``f`` and of ``J_t`` is independent across ``t`` (``vmap``), so an iteration is parallel in
time; the sequential scan's ``T`` dependent steps become a few iterations of ``O(log T)`` depth.

Convergence. Iteration ``k`` makes the first ``k`` states exact (``s_1 = f(s_0, x_1)`` whatever the
guess), so Newton converges in at most ``T`` iterations, with either Jacobian. On contracting dynamics
(the state forgets: the Jacobians' products shrink) the error falls quadratically once close and a
handful of iterations suffice. On chaotic or marginally stable dynamics (largest Lyapunov exponent
``>= 0``, see :func:`jaxrnn.lyapunov_spectrum`) the linearisation's errors grow along the sequence: Newton
needs up to ``T`` iterations, and in float32 it can overflow on the way. Hence ``max_iters`` and
``fallback``: a problem not converged to ``tol`` within ``max_iters`` iterations (or with a non-finite
iterate) is solved again by the sequential ``lax.scan``, so the result is always the recurrence's.

``jacobian="full"`` (DEER): the dense ``(n, n)`` ``J_t`` of the flattened carry (``n`` numbers per
sequence; an LSTM has ``n = 2H``): ``O(n^3 log T)`` composition work per sequence and ``T n^2`` memory.
``jacobian="diagonal"`` (quasi-DEER): only ``diag J_t``, an elementwise scan, ``O(n)`` per step; it
converges more slowly (linearly; still at most ``T`` iterations), each iteration far cheaper. On a
CPU a sequential scan does ``T`` cheap steps; Newton does ``iterations x`` (``vmap``-ed step + Jacobian
+ scan), so it pays off only where the parallel width is real (accelerators) -- ``python -m
experiments.bench --no-speed --newton`` measures it.

Derivatives (any mode, any order): a ``jax.custom_jvp``. The tangent of the converged trajectory is
the linear recurrence ``ds_t = df/ds ds_{t-1} + df/d(theta, x) (dtheta, dx_t)``, run as a sequential
``lax.scan`` of ``jax.jvp`` of the step at the stored states (the forward pass is not redone); reverse
mode (``jax.grad``, BPTT) is JAX's transpose of that scan. So on converged problems values and
derivatives equal the sequential scan's (tested).

Options as :func:`jaxrnn.unroll`: ``lengths`` (padding steps are the identity map ``(I, 0)``),
``resets`` (a reset step is ``(0, f(r_0, x_t))``: it does not depend on the state before it),
``reverse`` and ``time_axis``. Not supported (a clear error): cells that read the step index or cut
gradients (per-step dropout masks, truncation schedules), ``probes`` and ``remat``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.masking import reset_steps, valid_steps

__all__ = ["NewtonInfo", "parallel_newton"]

JACOBIANS = ("full", "diagonal")


class NewtonInfo(NamedTuple):
    """How a :func:`parallel_newton` solve went (arrays, so it works under ``jit``).

    * ``iterations``: Newton iterations run (int32 scalar);
    * ``error``: the last iteration's largest change of any state, ``max |S^(k) - S^(k-1)|`` (``inf``
      or ``nan`` when the iterate was not finite);
    * ``converged``: ``error <= tol``, or ``T`` iterations done (the ``T``-th iterate is exact up to
      rounding), with a finite iterate (bool scalar); when False the returned states are the fallback
      sequential scan's (or, with ``fallback=False``, the last iterate).
    """

    iterations: jax.Array
    error: jax.Array
    converged: jax.Array


# --------------------------------------------------------------------------------------------------
# flattening the carry: (*batch) pytrees of (*batch, ...) leaves <-> (*batch, n) vectors


class _Flat(NamedTuple):
    treedef: Any
    shapes: tuple  # per leaf, without the batch dims
    sizes: tuple
    dtype: Any

    def flat(self, carry, nb: int):
        leaves = jax.tree.leaves(carry)
        return jnp.concatenate([x.reshape(x.shape[:nb] + (-1,)) for x in leaves], axis=-1)

    def unflat(self, v):
        lead = v.shape[:-1]
        parts = jnp.split(v, np.cumsum(self.sizes)[:-1].tolist(), axis=-1)
        leaves = [p.reshape(lead + s) for p, s in zip(parts, self.shapes)]
        return jax.tree.unflatten(self.treedef, leaves)


def _flattener(carry, nb: int, fn: str) -> _Flat:
    leaves, treedef = jax.tree.flatten(carry)
    dtypes = {jnp.dtype(x.dtype) for x in leaves}
    if len(dtypes) != 1:
        raise TypeError(
            f"{fn}: the carry's leaves must share one dtype (they are flattened into one state vector); "
            f"got {sorted(str(d) for d in dtypes)}"
        )
    shapes = tuple(tuple(x.shape[nb:]) for x in leaves)
    sizes = tuple(int(np.prod(s)) for s in shapes)
    return _Flat(treedef, shapes, sizes, dtypes.pop())


# --------------------------------------------------------------------------------------------------
# the solve


def _compose_full(first, second):
    A1, b1 = first
    A2, b2 = second
    return A2 @ A1, jnp.einsum("...ij,...j->...i", A2, b1) + b2


def _compose_diag(first, second):
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, a2 * b1 + b2


def _where(mask, a, b):
    """``a`` where ``mask (T, *batch)``, else ``b``; ``a``, ``b`` of shape ``(T, *batch, ...)``."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)


def _newton_states(f, s0, px, valid, resets, r0, *, tol, max_iters: int, jacobian: str, fallback: bool):
    """States ``(T, *batch, n)`` of ``s_t = f(s_{t-1}, px_t)`` (flat), and a :class:`NewtonInfo`.

    ``f(v (*lead, n), px_t (*lead, ...)) -> (*lead, n)`` is the step on flat states, for any leading
    dims (one sequence, a batch, or every step at once); ``valid``, ``resets``: ``(T, *batch)`` booleans;
    ``r0``: the reset state ``(*batch, n)``."""
    T = valid.shape[0]
    batch = valid.shape[1:]
    n = s0.shape[-1]
    jac1 = jax.jacfwd(f)  # of one sequence's step, vmapped below
    for _ in range(1 + len(batch)):  # per sequence and step: (T, *batch, n, n)
        jac1 = jax.vmap(jac1)

    def affine(S):
        prev = jnp.concatenate([s0[None], S[:-1]], axis=0)
        s_in = _where(resets, jnp.broadcast_to(r0, prev.shape), prev)
        F = f(s_in, px)
        J = jac1(s_in, px)
        if jacobian == "diagonal":
            J = jnp.diagonal(J, axis1=-2, axis2=-1)
            J = _where(resets, jnp.zeros_like(J), J)  # a reset step does not depend on the state before
            b = F - J * prev
            J = _where(valid, J, jnp.ones_like(J))  # padding: the identity map
        else:
            J = _where(resets, jnp.zeros_like(J), J)
            b = F - jnp.einsum("...ij,...j->...i", J, prev)
            J = _where(valid, J, jnp.broadcast_to(jnp.eye(n, dtype=J.dtype), J.shape))
        b = _where(valid, b, jnp.zeros_like(b))
        return J, b

    compose = _compose_diag if jacobian == "diagonal" else _compose_full

    def solve_linear(J, b):
        A, B = jax.lax.associative_scan(compose, (J, b), axis=0)
        if jacobian == "diagonal":
            return A * s0 + B
        return jnp.einsum("...ij,...j->...i", A, s0) + B

    def cond(state):
        k, _, err = state
        return (k < max_iters) & (err > tol)  # a NaN error stops the loop (and fails the convergence test)

    def body(state):
        k, S, _ = state
        S_new = solve_linear(*affine(S))
        err = jnp.max(jnp.abs(S_new - S)) if S.size else jnp.zeros((), S.dtype)
        return k + 1, S_new, jnp.where(jnp.isfinite(err), err, jnp.inf).astype(S.dtype)

    S0 = jnp.broadcast_to(s0, (T, *s0.shape))
    init = (jnp.zeros((), jnp.int32), S0, jnp.full((), jnp.inf, S0.dtype))
    k, S, err = jax.lax.while_loop(cond, body, init)
    # converged: the last change within tol, or T iterations done (iteration k makes the first k states
    # exact, so the T-th iterate is the recurrence's up to rounding); never with a non-finite iterate
    converged = jnp.isfinite(err) & ((err <= tol) | (k >= T))

    def sequential(_):
        def step(s, inp):
            px_t, v_t, r_t = inp
            s_in = jnp.where(r_t[..., None], r0, s)
            new = jnp.where(v_t[..., None], f(s_in, px_t), s)
            return new, new

        return jax.lax.scan(step, s0, (px, valid, resets))[1]

    if fallback:
        S = jax.lax.cond(converged, lambda _: S, sequential, None)
    return S, NewtonInfo(k, err, converged)


def _solver(f, *, tol, max_iters, jacobian, fallback):
    """The states as a function of ``(params, s0, px, r0, valid, resets)``, with the custom JVP that
    makes its derivatives the sequential recurrence's at the solution."""

    @jax.custom_jvp
    def solve(params, s0, px, r0, valid, resets):
        return _newton_states(
            lambda v, p: f(params, v, p),
            s0, px, valid, resets, r0, tol=tol, max_iters=max_iters, jacobian=jacobian, fallback=fallback,
        )  # fmt: skip

    def solve_jvp(primals, tangents):
        params, s0, px, r0, valid, resets = primals
        dparams, ds0, dpx, dr0, _, _ = tangents
        S, info = solve(*primals)
        prev = jnp.concatenate([s0[None], S[:-1]], axis=0)

        def step(ds, inp):
            s_prev, px_t, dpx_t, v_t, r_t = inp
            s_in = jnp.where(r_t[..., None], r0, s_prev)
            ds_in = jnp.where(r_t[..., None], dr0, ds)
            _, dnew = jax.jvp(f, (params, s_in, px_t), (dparams, ds_in, dpx_t))
            dnew = jnp.where(v_t[..., None], dnew, ds)
            return dnew, dnew

        _, dS = jax.lax.scan(step, ds0, (prev, px, dpx, valid, resets))
        # info is not differentiable: zero tangents (float0 for the int and bool fields)
        d_info = NewtonInfo(
            np.zeros((), jax.dtypes.float0), jnp.zeros_like(info.error), np.zeros((), jax.dtypes.float0)
        )
        return (S, info), (dS, d_info)

    solve.defjvp(solve_jvp)
    return solve


def parallel_newton(
    cell: Cell,
    params,
    xs,
    carry=None,
    *,
    lengths=None,
    resets=None,
    reverse: bool = False,
    time_axis: int = 0,
    tol: float | None = None,
    max_iters: int | None = None,
    jacobian: str = "full",
    fallback: bool = True,
):
    """Run ``cell`` over a sequence by Newton's method, parallel in time: ``(final, ys, info)``.

    The same ``(final, ys)`` as :func:`jaxrnn.unroll` (to ``tol``; see the module docstring for the
    method, its convergence and its cost), and a :class:`NewtonInfo`. In plain Python (``T`` steps, no
    ``lengths``/``resets``; ``f(s, x)`` is ``cell.step`` on the carry flattened to a vector)::

        S = [s0] * T                                        # the initial guess
        for k in range(max_iters):
            prev = [s0] + S[:-1]
            J = [jacobian(f, prev[t], xs[t]) for t in range(T)]                 # parallel in t
            b = [f(prev[t], xs[t]) - J[t] @ prev[t] for t in range(T)]          # parallel in t
            new, s = [], s0
            for t in range(T):                              # an associative scan: O(log T) depth
                s = J[t] @ s + b[t]
                new.append(s)
            err, S = max(abs(new - S)), new
            if err <= tol:
                break
        else:
            S = sequential_scan(f, s0, xs)                  # the fallback
        return S[-1], [cell.output(s) for s in S], info

    Args:
      cell, params, carry, lengths, resets, reverse, time_axis: as for :func:`jaxrnn.unroll`. The carry's
        leaves must share one dtype; it is flattened to ``n`` numbers per sequence.
      xs: ``(T, *batch, I)`` (time on ``time_axis``).
      tol: convergence threshold on ``max |S^(k) - S^(k-1)|``; default ``1e-5`` for float32 states,
        ``1e-10`` for float64.
      max_iters: iteration cap, a positive int; default ``min(T, 64)`` (Newton is exact after ``T``).
      jacobian: ``"full"`` (DEER: dense ``J_t``) or ``"diagonal"`` (quasi-DEER: ``diag J_t``).
      fallback: when not converged, run the sequential scan (default); ``False`` returns the last
        iterate (for studying convergence).

    Returns:
      ``(final, ys, info)``: ``final`` and ``ys`` as :func:`jaxrnn.unroll` returns them; ``info`` a
      :class:`NewtonInfo`.

    Raises:
      TypeError / ValueError before tracing: everything :func:`jaxrnn.unroll` checks; a cell that reads
      the step index or cuts gradients; ``tol`` not a positive finite number; ``max_iters`` not a
      positive int; ``jacobian`` not one of ``"full"``, ``"diagonal"``; a carry of mixed dtypes.
    """
    fn = "parallel_newton"
    cell = check.cell(cell, fn)
    if cell.uses_step_index or cell.has_cut:
        raise ValueError(
            f"{fn}: cell {cell.name} reads the step index or cuts gradients (per-step dropout masks, a "
            f"truncation schedule); Newton's method needs a step that is the same function at every t: "
            f"use jr.unroll"
        )
    check.params(cell, params, fn)
    xs, axis = check.xs(cell, params, xs, time_axis, fn)
    T, batch = xs.shape[0], tuple(xs.shape[1:-1])
    reverse = check.bool_arg(reverse, f"{fn}: reverse")
    fallback = check.bool_arg(fallback, f"{fn}: fallback")
    if jacobian not in JACOBIANS:
        raise ValueError(f"{fn}: jacobian must be one of {list(JACOBIANS)}; got {jacobian!r}")
    max_iters = min(T, 64) if max_iters is None else check.positive_int(max_iters, f"{fn}: max_iters")
    s0 = cell.initial_carry(params, batch)
    carry = s0 if carry is None else check.carry(cell, params, carry, batch, fn)
    flat = _flattener(carry, len(batch), fn)
    if tol is None:
        tol = 1e-10 if flat.dtype == jnp.float64 else 1e-5
    tol = check.real_number(tol, f"{fn}: tol", low=0.0, low_open=True)
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch, fn)
    valid = jnp.ones((T, *batch), bool)
    if lengths is not None:
        valid = valid_steps(lengths, T)
        xs = jnp.where(valid[..., None], xs, jnp.zeros((), xs.dtype))  # padding is inert
    reset = jnp.zeros((T, *batch), bool)
    if resets is not None:
        # as unroll's: in processing order (a reset on a padding step has no effect: padding is (I, 0))
        reset = reset_steps(check.resets(resets, xs.shape, axis, fn), reverse, lengths)

    px = cell.project(params, xs)
    flip = (lambda a: jnp.flip(a, axis=0)) if reverse else (lambda a: a)
    px_p, valid_p, reset_p = jax.tree.map(flip, px), flip(valid), flip(reset)

    def step(p, v, px_t):  # the step on flat states v (*lead, n), any leading dims
        new = cell.recur(p, flat.unflat(v), px_t)
        return flat.flat(jax.tree.map(lambda a: a.astype(flat.dtype), new), v.ndim - 1)

    solve = _solver(step, tol=tol, max_iters=max_iters, jacobian=jacobian, fallback=fallback)
    S, info = solve(params, flat.flat(carry, len(batch)), px_p, flat.flat(s0, len(batch)), valid_p, reset_p)
    final = flat.unflat(S[-1])  # padding stands still, so the last processed state is the final one
    states = flat.unflat(flip(S))
    ys = cell.output(states)
    ys = jax.tree.map(lambda y: _where(valid, y, jnp.zeros_like(y)), ys)
    if axis:
        ys = jax.tree.map(lambda y: jnp.moveaxis(y, 0, axis), ys)
    return final, ys, info
