"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011), functional and jit-compiled.

The "Recurrent neural networks" lecture notes (dynamical-systems view; "second order methods") and
Martens (2010) describe the truncated-Newton idea: at ``theta`` build the quadratic model
``q(d) = g^T d + 1/2 d^T B d`` of the objective, minimise it approximately with conjugate gradient
(CG), which only needs products ``B v``, and never form ``B``. Hessian-free (HF) optimisation takes for
``B`` the damped Gauss-Newton (GN) matrix

    B = G + lambda I + lambda mu G_h,    G = J_z^T H_L J_z,    G_h = J_h^T H_D J_h,

where the model is split as in the papers into a network ``z = forward(theta)`` and a loss
``L(z)`` convex in the outputs ``z`` (squared error, softmax cross-entropy, ...): ``J_z = dz/dtheta``,
``H_L = d^2 L/dz^2`` is positive semi-definite, so ``G`` is too, whatever the network. ``lambda`` is
the Levenberg-Marquardt (Tikhonov) damping, adapted from the reduction ratio ``rho``; ``lambda mu G_h``
is Martens & Sutskever's *structural damping*: the GN matrix of the penalty ``lambda mu D(h(theta + d),
h(theta))`` that keeps the hidden-state trajectory ``h`` of a recurrent network from moving far in one
update (their section 3.3), with ``J_h = dh/dtheta`` and ``H_D`` the Hessian of the distance ``D``.

* :func:`gauss_newton_vp` -- ``v -> B v`` by ``jax.linearize`` (``J v``), the Hessian-vector product
  of the loss with respect to the outputs, and the transposed linearisation (``J^T u``). The forward
  pass is linearised once; each product costs one forward-mode and one reverse-mode sweep.
* :func:`conjugate_gradient` -- (preconditioned) CG on pytrees in one ``lax.while_loop``, with Martens'
  stopping rule on the relative progress of the quadratic.
* :func:`hessian_free` -- the optimiser: ``init(params) -> state``,
  ``update(params, state, batch) -> (params, state, info)``, jit-able as a whole.

References:
  J. Martens, "Deep learning via Hessian-free optimization", ICML 2010 (sections 4.1-4.8: GN
  products, damping, CG initialisation, termination, preconditioning).
  J. Martens, I. Sutskever, "Learning recurrent neural networks with Hessian-free optimization",
  ICML 2011 (section 3: HF for RNNs, structural damping).
  J. Martens, I. Sutskever, "Training deep and recurrent networks with Hessian-free optimization",
  Neural Networks: Tricks of the Trade, 2nd ed., 2012 (sections 6-8).
  N. Schraudolph, "Fast curvature matrix-vector products for second-order gradient descent",
  Neural Computation 2002 (the GN product).
"""

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import validators as check

__all__ = [
    "CGInfo",
    "HessianFree",
    "HFInfo",
    "HFState",
    "conjugate_gradient",
    "gauss_newton_vp",
    "hessian_free",
]

Params = Any
Batch = Any

# --------------------------------------------------------------------------- pytree algebra


def _vdot(a, b) -> jax.Array:
    """``sum_leaves sum(a * b)`` (real pytrees), accumulated in the widest leaf dtype."""
    leaves = [jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    if not leaves:
        return jnp.zeros(())
    return sum(leaves[1:], leaves[0])


def _axpy(alpha, x, y):
    """``alpha * x + y`` leafwise, keeping ``y``'s dtypes."""
    return jax.tree.map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)


def _scale(alpha, x):
    return jax.tree.map(lambda a: (alpha * a).astype(a.dtype), x)


def _sub(x, y):
    return jax.tree.map(jnp.subtract, x, y)


# --------------------------------------------------------------------------- argument checks


def _check_callable(f, what: str, fn: str) -> None:
    if not callable(f):
        raise TypeError(f"{fn}: {what} must be callable; got {type(f).__name__} {f!r}")


def _real(value, what: str, fn: str, *, positive: bool = False, nonneg: bool = False, upper=None):
    """A real hyper-parameter checked by :func:`jaxrnn.validators.real_number` (skipped for traced
    values); returned unchanged."""
    if check.is_concrete(value):
        low = 0.0 if positive or nonneg else None
        check.real_number(value, f"{fn}: {what}", low=low, low_open=positive, high=upper)
    return value


def _positive_int(value, what: str, fn: str) -> int:
    return check.positive_int(value, f"{fn}: {what}")


def _is_zero(x) -> bool:
    """True when ``x`` is a concrete number equal to 0 (so a term can be left out statically)."""
    return isinstance(x, numbers.Number) and not isinstance(x, bool) and float(x) == 0.0


def _check_params(params, fn: str, what: str = "params") -> None:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(f"{fn}: {what} must be a pytree with at least one array leaf; got {params!r}")
    for leaf in leaves:
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"{fn}: every leaf of {what} must be a real floating array; got a leaf of dtype {dt} "
                f"(shape {jnp.shape(leaf)})"
            )


def _check_model(forward, loss, params, batch, fn: str, what: str = "batch"):
    """Shape-check ``forward``/``loss`` by abstract evaluation, before any tracing of the real thing."""
    out = jax.eval_shape(forward, params, batch)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            f"{fn}: forward(params, {what}) must return a pair (outputs, hiddens) -- the network outputs "
            f"before the loss and the hidden-state trajectory (any pytrees; hiddens may be () when "
            f"there is no structural damping); got {type(out).__name__}"
        )
    outputs, hiddens = out
    for name, tree in (("outputs", outputs), ("hiddens", hiddens)):
        for leaf in jax.tree.leaves(tree):
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(
                    f"{fn}: forward's {name} must have real floating leaves; got dtype {leaf.dtype}"
                )
    val = jax.eval_shape(loss, outputs, batch)
    if not (hasattr(val, "shape") and val.shape == () and jnp.issubdtype(val.dtype, jnp.floating)):
        shape = getattr(val, "shape", None)
        dtype = getattr(val, "dtype", type(val).__name__)
        raise TypeError(f"{fn}: loss(outputs, {what}) must return a real scalar; got shape {shape}, {dtype}")
    return outputs, hiddens


# --------------------------------------------------------------------------- Gauss-Newton products


def _squared_distance_hvp(u):
    """Hessian of the default distance ``D(h, h0) = 1/2 ||h - h0||^2`` applied to ``u``: ``u``."""
    return u


def _linearise(forward, loss, params, batch, hidden_distance, with_hiddens: bool):
    """Linearise the model once at ``params``: ``(jvp, vjp, H_L-product, H_D-product)``."""
    (outputs, hiddens), f_jvp = jax.linearize(lambda p: forward(p, batch), params)
    f_vjp = jax.linear_transpose(f_jvp, params)
    _, loss_hvp = jax.linearize(jax.grad(lambda z: loss(z, batch)), outputs)
    if not with_hiddens:
        dist_hvp = None
    elif hidden_distance is None:
        dist_hvp = _squared_distance_hvp
    else:
        h_ref = jax.lax.stop_gradient(hiddens)
        _, dist_hvp = jax.linearize(jax.grad(lambda h: hidden_distance(h, h_ref)), hiddens)
    return f_jvp, f_vjp, loss_hvp, dist_hvp, hiddens


def gauss_newton_vp(
    forward: Callable,
    loss: Callable,
    params: Params,
    batch: Batch,
    *,
    damping=0.0,
    structural_damping=0.0,
    hidden_distance: Callable | None = None,
) -> Callable[[Params], Params]:
    r"""The damped Gauss-Newton matrix-vector product ``v -> (G + lambda I + lambda mu G_h) v``.

    The model is split as in Martens (2010) section 4.2 and Martens & Sutskever (2011) section 3::

        outputs, hiddens = forward(params, batch)        # z(theta) and the hidden trajectory h(theta)
        objective        = loss(outputs, batch)          # L(z), convex in z

    and, with ``J_z = dz/dtheta``, ``J_h = dh/dtheta``, ``H_L = d^2 L / dz^2`` and ``H_D`` the Hessian of
    the hidden-state distance ``D(h, h(theta))`` at ``h = h(theta)``::

        G v   = J_z^T (H_L (J_z v))          (Gauss-Newton: positive semi-definite when L is convex)
        G_h v = J_h^T (H_D (J_h v))          (structural damping, Martens & Sutskever 2011 eq. 3.3)
        B v   = G v + damping * v + damping * structural_damping * G_h v

    ``J v`` comes from ``jax.linearize`` of ``forward`` (done once, when this function is called: the
    returned closure re-uses the stored linearisation, so products do not redo the forward pass),
    ``H u`` from ``jax.linearize`` of ``jax.grad(loss)`` with respect to the outputs, and ``J^T u``
    from ``jax.linear_transpose`` of the same linearisation (one reverse sweep).

    The default distance is ``D(h, h0) = 1/2 ||h - h0||^2`` summed over every element of every leaf of
    ``hiddens`` (so ``H_D = I`` and ``G_h = J_h^T J_h``). It is *summed*: if ``loss`` is a mean over
    ``B`` examples, either divide ``mu`` by ``B`` (times the number of steps, if the loss is also a
    mean over time) or pass a ``hidden_distance`` that averages the same way. Martens & Sutskever use
    the *matching loss* of the hidden nonlinearity instead, whose Hessian with respect to the
    pre-activations ``a`` is ``diag(f'(a))``: return the pre-activations as ``hiddens`` and pass e.g.
    for logistic units ``hidden_distance=lambda a, a0: jnp.sum(optax.sigmoid_binary_cross_entropy(a,
    jax.nn.sigmoid(a0)))`` (Hessian ``h (1 - h)``); for tanh units a distance with Hessian ``1 - h^2``.

    In plain Python, with explicit Jacobians::

        def gauss_newton_vp(forward, loss, params, batch, damping=0, structural_damping=0):
            J_z = jacobian(lambda p: forward(p, batch)[0])(params)          # (dim z, dim theta)
            J_h = jacobian(lambda p: forward(p, batch)[1])(params)          # (dim h, dim theta)
            H_L = hessian(lambda z: loss(z, batch))(forward(params, batch)[0])
            B = J_z.T @ H_L @ J_z + damping * (I + structural_damping * J_h.T @ J_h)
            return lambda v: B @ v

    Args:
      forward: ``(params, batch) -> (outputs, hiddens)``, both pytrees of real arrays (``hiddens`` may
        be ``()`` when ``structural_damping`` is 0). Differentiable in ``params``.
      loss: ``(outputs, batch) -> scalar``, convex in ``outputs`` (else ``G`` may be indefinite).
      params: the point of linearisation, a pytree of real floating arrays.
      batch: any pytree, passed through to ``forward`` and ``loss`` (e.g. ``(xs, targets)``).
      damping: ``lambda >= 0`` (Tikhonov / Levenberg-Marquardt); may be a traced scalar.
      structural_damping: ``mu >= 0``; the ``G_h`` term is left out when it is the number 0.
      hidden_distance: ``(h, h_ref) -> scalar``, convex in ``h`` with its minimum at ``h = h_ref``, or
        ``None`` for ``1/2 ||h - h_ref||^2``.

    Returns:
      ``matvec(v) -> B v``: a linear function of a pytree ``v`` shaped like ``params`` that returns
      the same structure and dtypes. Works eagerly and under ``jax.jit`` (call this function inside
      the jitted function, as :func:`hessian_free` does).

    Raises:
      TypeError / ValueError before tracing: ``forward`` or ``loss`` not callable, ``forward`` not
      returning a pair of floating pytrees, ``loss`` not returning a real scalar, ``damping < 0``,
      ``structural_damping < 0``, a non-callable ``hidden_distance``.

    References:
      Martens (2010), section 4.2; Martens & Sutskever (2011), sections 3.1-3.3; Schraudolph (2002).
    """
    fn = "gauss_newton_vp"
    _check_callable(forward, "forward", fn)
    _check_callable(loss, "loss", fn)
    if hidden_distance is not None:
        _check_callable(hidden_distance, "hidden_distance", fn)
    _real(damping, "damping", fn, nonneg=True)
    _real(structural_damping, "structural_damping", fn, nonneg=True)
    _check_params(params, fn)
    _check_model(forward, loss, params, batch, fn)
    with_h = not _is_zero(structural_damping) and not _is_zero(damping)
    f_jvp, f_vjp, loss_hvp, dist_hvp, hiddens = _linearise(
        forward, loss, params, batch, hidden_distance, with_h
    )
    return _matvec(f_jvp, f_vjp, loss_hvp, dist_hvp, hiddens, damping, structural_damping)


def _matvec(f_jvp, f_vjp, loss_hvp, dist_hvp, hiddens, damping, mu):
    def matvec(v):
        jz, jh = f_jvp(v)
        hz = loss_hvp(jz)
        if dist_hvp is None:
            hh = jax.tree.map(jnp.zeros_like, hiddens)
        else:
            c = damping * mu
            hh = jax.tree.map(lambda a, r: (c * a).astype(r.dtype), dist_hvp(jh), hiddens)
        hz = jax.tree.map(lambda a, r: a.astype(r.dtype), hz, jz)
        (gv,) = f_vjp((hz, hh))
        if _is_zero(damping):
            return gv
        return _axpy(damping, v, gv)

    return matvec


# --------------------------------------------------------------------------- conjugate gradient


class CGInfo(NamedTuple):
    """What :func:`conjugate_gradient` did, all arrays (no host synchronisation).

    * ``iterations``: int32 scalar, the number of CG steps taken (matrix-vector products after the
      initial residual).
    * ``value``: the quadratic ``phi(x) = 1/2 x^T A x - b^T x`` at the returned ``x``.
    * ``residual_norm``: ``||b - A x||`` (the recursively updated residual).
    """

    iterations: jax.Array
    value: jax.Array
    residual_norm: jax.Array


def conjugate_gradient(
    matvec: Callable[[Any], Any],
    b,
    x0=None,
    *,
    max_iters: int,
    tol: float = 0.0,
    eps: float = 5e-4,
    min_window: int = 10,
    preconditioner=None,
):
    r"""Preconditioned conjugate gradient for ``A x = b`` on pytrees, with Martens' stopping rule.

    Minimises ``phi(x) = 1/2 x^T A x - b^T x`` for a symmetric positive (semi-)definite ``A`` given
    only by ``matvec(v) = A v``, starting from ``x0`` (Hestenes & Stiefel; with the diagonal
    preconditioner ``M``: ``z = M^{-1} r``). ``phi`` is tracked for free as ``phi(x) = -1/2 x^T (b +
    r)`` with ``r = b - A x``. Stops after ``max_iters`` steps, or at the first step ``i`` with

    * ``||r_i|| <= tol ||b||`` (a residual test; off with ``tol = 0``), or
    * Martens (2010) section 4.4: ``i > k``, ``phi_i < 0`` and ``(phi_i - phi_{i-k}) / phi_i < k eps``
      with ``k = max(min_window, ceil(0.1 i))`` -- the relative progress over the last ``k`` steps is
      too small (off with ``eps = 0``), or
    * a direction of non-positive curvature ``p^T A p <= 0`` (``x`` is left as it was).

    In plain Python::

        def conjugate_gradient(A, b, x, max_iters, tol, eps, min_window=10, M=1):
            r = b - A @ x; z = r / M; p = z; phis = [-0.5 * x @ (b + r)]
            for i in range(1, max_iters + 1):
                Ap = A @ p; pAp = p @ Ap
                if pAp <= 0: break
                alpha = (r @ z) / pAp
                x = x + alpha * p; r_new = r - alpha * Ap; z_new = r_new / M
                p = z_new + (r_new @ z_new) / (r @ z) * p; r, z = r_new, z_new
                phis.append(-0.5 * x @ (b + r))
                k = max(min_window, ceil(0.1 * i))
                if norm(r) <= tol * norm(b): break
                if i > k and phis[i] < 0 and (phis[i] - phis[i - k]) / phis[i] < k * eps: break
            return x

    Args:
      matvec: ``v -> A v``, linear, returning the structure and dtypes of ``b``.
      b: the right-hand side, a pytree of real arrays.
      x0: the start (same structure as ``b``); default zeros. HF starts from the previous solution
        times a decay (Martens 2010 section 4.5).
      max_iters: ``>= 1``, the most CG steps (static: it sizes the history of ``phi``).
      tol: ``>= 0``, relative residual tolerance.
      eps: ``>= 0``, Martens' relative-progress tolerance (his default ``5e-4``).
      min_window: ``>= 1``, the smallest ``k`` of the progress test (Martens: 10).
      preconditioner: ``None`` or the diagonal ``M`` as a pytree like ``b`` with positive entries
        (Martens 2010 section 4.7 uses ``(diag(sum_i g_i g_i^T) + lambda)^0.75``).

    Returns:
      ``(x, info)``: the approximate solution (structure and dtypes of ``b``) and a :class:`CGInfo`.
      One ``lax.while_loop``: jit-safe, ``max_iters`` static; the other arguments may be traced.

    Raises:
      TypeError / ValueError before tracing: ``matvec`` not callable, ``max_iters < 1``, ``tol < 0``,
      ``eps < 0``, ``min_window < 1``, ``b`` with non-floating leaves, ``x0`` or ``preconditioner``
      whose structure or shapes differ from ``b``'s, ``matvec`` returning another structure.

    References:
      M. Hestenes, E. Stiefel (1952); J. Martens (2010), sections 4.4 (termination), 4.5 (initialisation),
      4.7 (preconditioning); J. Nocedal, S. Wright, *Numerical Optimization*, algorithm 5.3.
    """
    fn = "conjugate_gradient"
    _check_callable(matvec, "matvec", fn)
    max_iters = _positive_int(max_iters, "max_iters", fn)
    min_window = _positive_int(min_window, "min_window", fn)
    _real(tol, "tol", fn, nonneg=True)
    _real(eps, "eps", fn, nonneg=True)
    _check_params(b, fn, "b")
    struct = jax.tree.structure(b)
    shapes = [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(b)]

    def same_as_b(tree, what):
        b_shapes = [s for s, _ in shapes]
        if jax.tree.structure(tree) != struct or [jnp.shape(x) for x in jax.tree.leaves(tree)] != b_shapes:
            want, got = jax.tree.map(jnp.shape, b), jax.tree.map(jnp.shape, tree)
            raise ValueError(f"{fn}: {what} must have the structure and shapes of b {want}; got {got}")

    if x0 is None:
        x0 = jax.tree.map(jnp.zeros_like, b)
    else:
        same_as_b(x0, "x0")
        x0 = jax.tree.map(lambda x, r: jnp.asarray(x, jnp.result_type(r)), x0, b)
    if preconditioner is not None:
        same_as_b(preconditioner, "preconditioner")
    av = jax.eval_shape(matvec, x0)
    if jax.tree.structure(av) != struct or [(a.shape, a.dtype) for a in jax.tree.leaves(av)] != shapes:
        raise ValueError(
            f"{fn}: matvec(x) must return the structure, shapes and dtypes of b "
            f"{jax.tree.map(lambda x: (jnp.shape(x), str(jnp.result_type(x))), b)}; "
            f"got {jax.tree.map(lambda x: (x.shape, str(x.dtype)), av)}"
        )
    return _cg(matvec, b, x0, max_iters, tol, eps, min_window, preconditioner)


def _cg(matvec, b, x0, max_iters, tol, eps, min_window, preconditioner):
    dtype = jnp.result_type(*jax.tree.leaves(b))

    def apply_m(r):
        if preconditioner is None:
            return r
        return jax.tree.map(lambda a, m: (a / m).astype(a.dtype), r, preconditioner)

    r0 = _sub(b, matvec(x0))
    z0 = apply_m(r0)
    rz0 = _vdot(r0, z0).astype(dtype)
    phi0 = (-0.5 * _vdot(x0, jax.tree.map(jnp.add, b, r0))).astype(dtype)
    bb = _vdot(b, b).astype(dtype)
    thresh = (jnp.asarray(tol, dtype) ** 2) * bb
    hist = jnp.zeros((max_iters + 1,), dtype).at[0].set(phi0)
    eps = jnp.asarray(eps, dtype)

    # state: (i, x, r, z, p, rz, phi history, done)
    init = (jnp.int32(0), x0, r0, z0, z0, rz0, hist, _vdot(r0, r0) <= thresh)

    def cond(s):
        i, *_, done = s
        return (i < max_iters) & ~done

    def body(s):
        i, x, r, z, p, rz, hist, _ = s
        ap = matvec(p)
        pap = _vdot(p, ap).astype(dtype)
        ok = pap > 0
        alpha = jnp.where(ok, rz / jnp.where(ok, pap, 1), 0).astype(dtype)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        z = apply_m(r)
        rz_new = _vdot(r, z).astype(dtype)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1), 0).astype(dtype)
        p = _axpy(beta, p, z)
        i = i + 1
        phi = (-0.5 * _vdot(x, jax.tree.map(jnp.add, b, r))).astype(dtype)
        hist = hist.at[i].set(phi)
        k = jnp.maximum(min_window, (i + 9) // 10)
        past = hist[jnp.maximum(i - k, 0)]
        slow = (i > k) & (phi < 0) & ((phi - past) / jnp.where(phi < 0, phi, -1) < k * eps)
        done = ~ok | slow | (_vdot(r, r) <= thresh)
        return i, x, r, z, p, rz_new, hist, done

    i, x, r, _, _, _, hist, _ = jax.lax.while_loop(cond, body, init)
    info = CGInfo(iterations=i, value=hist[i], residual_norm=jnp.sqrt(_vdot(r, r)).astype(dtype))
    return x, info


# --------------------------------------------------------------------------- the optimiser


class HFState(NamedTuple):
    """The state of :func:`hessian_free`.

    * ``damping``: the Levenberg-Marquardt ``lambda`` (scalar, dtype of the params).
    * ``direction``: the last CG solution ``d`` (a pytree like the params); the next CG run starts
      from ``cg_decay * direction`` (Martens 2010 section 4.5).
    * ``count``: int32, the number of updates done.
    """

    damping: jax.Array
    direction: Params
    count: jax.Array


class HFInfo(NamedTuple):
    """Per-update diagnostics of :func:`hessian_free`, all scalar arrays (no host synchronisation).

    * ``loss``: ``L(theta)`` on the batch; ``new_loss``: ``L(theta + d)``.
    * ``model_reduction``: ``q(d) = g^T d + 1/2 d^T G d`` (undamped GN model; < 0 for a descent step).
    * ``rho``: the reduction ratio ``(new_loss - loss) / q(d)`` (``-inf`` when ``q(d) >= 0`` or the
      new loss is not finite).
    * ``damping``: ``lambda`` after the Levenberg-Marquardt adjustment.
    * ``cg_iterations``: the CG steps taken; ``step_norm``: ``||d||``.
    * ``accepted``: bool, whether ``theta + d`` was kept (``new_loss <= loss`` and finite).
    """

    loss: jax.Array
    new_loss: jax.Array
    model_reduction: jax.Array
    rho: jax.Array
    damping: jax.Array
    cg_iterations: jax.Array
    step_norm: jax.Array
    accepted: jax.Array


class HessianFree(NamedTuple):
    """An optimiser as a pair of pure functions (the feel of ``optax.GradientTransformation``, but
    ``update`` needs the model and the batch, so it returns the new parameters itself).

    * ``init(params) -> HFState``
    * ``update(params, state, batch, curvature_batch=None) -> (params, state, HFInfo)``
    """

    init: Callable[[Params], HFState]
    update: Callable[..., tuple[Params, HFState, HFInfo]]


def hessian_free(
    forward: Callable,
    loss: Callable,
    *,
    damping: float = 1.0,
    structural_damping: float = 0.0,
    hidden_distance: Callable | None = None,
    max_cg_iters: int = 250,
    cg_decay: float = 0.95,
    cg_eps: float = 5e-4,
    cg_tol: float = 0.0,
    preconditioner: Callable | None = None,
    reject_uphill: bool = True,
) -> HessianFree:
    r"""Hessian-free optimisation with Levenberg-Marquardt and structural damping.

    One update at ``theta`` (Martens 2010 algorithm 1; Martens & Sutskever 2011 section 3)::

        L0, g = value_and_grad(L(forward(theta, batch)))
        B     = G + lambda I + lambda mu G_h                  # gauss_newton_vp on curvature_batch
        d     = CG(B, -g, start = cg_decay * d_prev)          # conjugate_gradient, Martens' stopping
        q     = g^T d + 1/2 d^T G d                           # the undamped GN model's prediction
        L1    = L(forward(theta + d, batch))
        rho   = (L1 - L0) / q                                  # reduction ratio
        lambda *= 3/2 if rho < 1/4;  lambda *= 2/3 if rho > 3/4   (the papers' Levenberg-Marquardt rule)
        theta = theta + d   unless L1 > L0 (or not finite), then theta stays (reject_uphill=True)

    The model is split as for :func:`gauss_newton_vp`: ``forward(params, batch) -> (outputs,
    hiddens)``, ``loss(outputs, batch) -> scalar`` convex in ``outputs``. For a jaxrnn cell::

        import jaxrnn as jr
        from jaxrnn.second_order import hessian_free

        cell = jr.elman(16)

        def forward(p, batch):
            xs, targets = batch
            final, ys = jr.unroll(cell, p["cell"], xs)             # ys: (T, B, H), the hiddens
            outputs = cell.output(final) @ p["w"] + p["b"]          # (B, 1), linear readout
            return outputs, ys

        def loss(outputs, batch):
            return 0.5 * jnp.mean((outputs[:, 0] - batch[1]) ** 2)

        B = 256
        opt = hessian_free(forward, loss, damping=1.0, structural_damping=0.3 / B)
        state = opt.init(params)
        update = jax.jit(opt.update)
        for batch in batches:
            params, state, info = update(params, state, batch)

    (``structural_damping`` is divided by ``B`` because the default hidden distance is a sum over the
    batch while the loss is a mean; see :func:`gauss_newton_vp`.) Any cell works: ``hiddens`` may be
    any pytree (an LSTM's ``ys`` or the whole carry trajectory).

    In plain Python (what ``update`` computes, without the jit)::

        def update(params, state, batch, curvature_batch=None):
            L0, g = value_and_grad(lambda p: loss(forward(p, batch)[0], batch))(params)
            A = gauss_newton_vp(forward, loss, params, curvature_batch or batch,
                                damping=state.damping, structural_damping=mu)
            d, cg = conjugate_gradient(A, -g, cg_decay * state.direction, max_iters=max_cg_iters)
            q = g @ d + 0.5 * d @ G(d)
            L1 = loss(forward(params + d, batch)[0], batch)
            rho = (L1 - L0) / q if q < 0 and isfinite(L1) else -inf
            lam = state.damping * (1.5 if rho < 0.25 else 2 / 3 if rho > 0.75 else 1)
            accepted = isfinite(L1) and L1 <= L0
            return (params + d if accepted else params), HFState(lam, d, state.count + 1), info

    Not implemented from Martens (2010): CG backtracking over stored iterates (section 4.6) and the
    growing CG budget; a rejected step is simply not taken (and ``lambda`` grows, since ``rho < 0``).

    Args:
      forward: ``(params, batch) -> (outputs, hiddens)``.
      loss: ``(outputs, batch) -> scalar``, convex in ``outputs``.
      damping: the initial ``lambda > 0`` (Martens & Sutskever start RNNs at ``lambda = 1`` or so).
      structural_damping: ``mu >= 0`` (Martens & Sutskever: ``mu = 1/30`` of their per-case distance).
      hidden_distance: the structural-damping distance ``(h, h_ref) -> scalar`` or ``None`` for
        ``1/2 ||h - h_ref||^2`` (see :func:`gauss_newton_vp`).
      max_cg_iters: ``>= 1``, CG steps per update (Martens: up to 250).
      cg_decay: in ``[0, 1]``, the fraction of the previous solution CG starts from (0.95 in the papers).
      cg_eps: ``>= 0``, Martens' relative-progress tolerance (5e-4; 0 runs ``max_cg_iters`` steps
        unless ``cg_tol`` stops it).
      cg_tol: ``>= 0``, relative residual tolerance of CG.
      preconditioner: ``None`` or ``(params, batch, grad, damping) -> diag`` (a pytree like ``params``
        with positive entries) for CG.
      reject_uphill: keep ``params`` when the step increases the loss (or makes it non-finite).

    Returns:
      A :class:`HessianFree` ``(init, update)``: ``init(params) -> HFState``; ``update(params, state,
      batch, curvature_batch=None) -> (params, state, HFInfo)``. ``curvature_batch`` (same
      structure as ``batch``, usually a subset of its examples, as Martens does) is used for the GN
      products only; the gradient, the losses and ``rho`` use ``batch``. Both are pure and jit-able
      (``jax.jit(opt.update)``); parameter dtypes are kept.

    Raises:
      TypeError / ValueError when building: ``forward``/``loss``/``hidden_distance``/``preconditioner``
      not callable, ``damping <= 0``, ``structural_damping < 0``, ``max_cg_iters < 1``, ``cg_decay``
      outside ``[0, 1]``, ``cg_eps < 0``, ``cg_tol < 0``. In ``update``, before tracing: a ``forward``
      or ``loss`` that does not return the right things for ``params`` and ``batch``.

    References:
      Martens (2010), algorithm 1 and section 4; Martens & Sutskever (2011), section 3 (structural
      damping, the Levenberg-Marquardt constants 1/4, 3/4, 3/2, 2/3).
    """
    fn = "hessian_free"
    _check_callable(forward, "forward", fn)
    _check_callable(loss, "loss", fn)
    if hidden_distance is not None:
        _check_callable(hidden_distance, "hidden_distance", fn)
    if preconditioner is not None:
        _check_callable(preconditioner, "preconditioner", fn)
    _real(damping, "damping", fn, positive=True)
    _real(structural_damping, "structural_damping", fn, nonneg=True)
    max_cg_iters = _positive_int(max_cg_iters, "max_cg_iters", fn)
    _real(cg_decay, "cg_decay", fn, nonneg=True, upper=1.0)
    _real(cg_eps, "cg_eps", fn, nonneg=True)
    _real(cg_tol, "cg_tol", fn, nonneg=True)
    if not isinstance(reject_uphill, bool):
        raise TypeError(f"{fn}: reject_uphill must be a bool; got {reject_uphill!r}")
    with_h = not _is_zero(structural_damping)

    def init(params) -> HFState:
        _check_params(params, f"{fn}.init")
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return HFState(
            damping=jnp.asarray(damping, dtype),
            direction=jax.tree.map(jnp.zeros_like, params),
            count=jnp.zeros((), jnp.int32),
        )

    def objective(p, batch):
        return loss(forward(p, batch)[0], batch)

    def update(params, state: HFState, batch, curvature_batch=None):
        f = f"{fn}.update"
        _check_params(params, f)
        if not isinstance(state, HFState):
            raise TypeError(f"{f}: state must be an HFState from init(params); got {type(state).__name__}")
        if jax.tree.structure(state.direction) != jax.tree.structure(params):
            raise ValueError(f"{f}: state does not match params (re-run init(params))")
        _check_model(forward, loss, params, batch, f)
        cbatch = batch if curvature_batch is None else curvature_batch
        if curvature_batch is not None:
            _check_model(forward, loss, params, curvature_batch, f, "curvature_batch")

        lam = state.damping
        loss0, g = jax.value_and_grad(objective)(params, batch)
        f_jvp, f_vjp, loss_hvp, dist_hvp, hiddens = _linearise(
            forward, loss, params, cbatch, hidden_distance, with_h
        )
        matvec = _matvec(f_jvp, f_vjp, loss_hvp, dist_hvp, hiddens, lam, structural_damping)
        m = None if preconditioner is None else preconditioner(params, batch, g, lam)
        x0 = _scale(cg_decay, state.direction)
        neg_g = _scale(-1.0, g)
        d, cg = _cg(matvec, neg_g, x0, max_cg_iters, cg_tol, cg_eps, 10, m)

        jd, _ = f_jvp(d)
        q = (_vdot(g, d) + 0.5 * _vdot(jd, loss_hvp(jd))).astype(loss0.dtype)
        new_params = jax.tree.map(lambda a, b: (a + b).astype(a.dtype), params, d)
        loss1 = objective(new_params, batch)
        finite = jnp.isfinite(loss1)
        ok = (q < 0) & finite
        rho = jnp.where(ok, (loss1 - loss0) / jnp.where(ok, q, -1), -jnp.inf).astype(loss0.dtype)
        new_lam = jnp.where(rho < 0.25, lam * 1.5, jnp.where(rho > 0.75, lam * (2.0 / 3.0), lam))
        new_lam = new_lam.astype(lam.dtype)
        accepted = finite & (loss1 <= loss0) if reject_uphill else finite
        out = jax.tree.map(lambda n, o: jnp.where(accepted, n, o), new_params, params)
        new_state = HFState(damping=new_lam, direction=d, count=state.count + 1)
        info = HFInfo(
            loss=loss0,
            new_loss=loss1,
            model_reduction=q,
            rho=rho,
            damping=new_lam,
            cg_iterations=cg.iterations,
            step_norm=jnp.sqrt(_vdot(d, d)),
            accepted=accepted,
        )
        return out, new_state, info

    return HessianFree(init=init, update=update)
