"""Fused whole-sequence kernels for the LSTM (with or without peepholes), the GRU (both forms) and the
Elman family.

The reference :func:`jaxrnn.unroll` scans ``cell.recur`` and lets JAX differentiate the scan. That
works for every cell and every transform, but its backward pass accumulates the recurrent weight
gradient inside the loop, ``dW += h_{t-1}^T @ dA_t`` -- ``T`` small ``(H, B) @ (B, G*H)`` products --
and partial evaluation keeps more per-step residuals than the chain needs.

A fused kernel computes the same function with the work moved out of the loop. For a cell whose
recurrence is ``s_t = F(s_{t-1}, a_t)`` with ``a_t = x_t @ W_xh + b + h_{t-1} @ W_hh``:

* **forward** -- one ``lax.scan`` of the step (the input product ``x_t @ W_xh`` inside the loop: on a
  CPU that beats one big product before it, whose ``(T, B, G*H)`` result goes through memory); when
  differentiated it also stores, per step, the *coefficients* of the step's linearisation (e.g.
  ``sigma'(a)`` of each gate times what it multiplies), nothing else;
* **tangent** -- the step's derivative is linear::

      ds_t = C_t(dA_t, ds_{t-1})
      dA_t = dx_t @ W_xh + x_t @ dW_xh + db + h_{t-1} @ dW_hh + dh_{t-1} @ W_hh

  and the only term that needs the *previous tangent* is ``dh_{t-1} @ W_hh``. The rest,
  ``E_t = K_t * (dx_t @ W_xh + x_t @ dW_xh + db + h_{t-1} @ dW_hh)``, is computed for all ``t`` at once
  before the loop (three ``(T*B, .) @ (., G*H)`` products), and the loop is
  ``m_t = E_t + K_t * (dh_{t-1} @ W_hh)``, ``ds_t = combine(ds_{t-1}, m_t)``: one small product and a
  few multiply-adds per step.

The kernel is a ``jax.custom_jvp`` whose JVP rule is that forward scan plus that linear tangent scan.
Reverse mode (``jax.grad``, BPTT) is JAX's *transpose* of the tangent scan: a reverse scan whose body
is ``dA_t = K_t * (...)``, ``dh_{t-1} = dA_t @ W_hh^T`` -- the BPTT chain and nothing more, its product
reading a transposed copy of ``W_hh`` made once before the loop (the tangent multiplies by that copy
transposed; on a CPU this made BPTT 5-12% faster, forward mode no slower) -- and the
transposes of the hoisted products are ONE matrix product each for ``dW_hh = h^T @ dA``,
``dW_xh = xs^T @ dA`` and ``dxs = dA @ W_xh^T``. Unlike a ``custom_vjp``, this also serves forward
mode: ``jax.jvp``, ``jax.linearize``, ``jax.jacfwd``, Hessian-vector products and
:func:`jaxrnn.hessian_free` (which linearises the user's forward pass) work on the fused path.

Masking (``lengths``), ``resets`` and ``reverse`` are the reference scan's: a padding step leaves the
state (and its tangent) unchanged, so a reversed scan starts each sequence at its own last valid step;
a reset replaces the state (and its tangent) by the reset state's before the step, a select per step
in both scans, so resets cost the fused path almost nothing.

What a kernel declines (``None``: :func:`jaxrnn.unroll` runs the reference scan, and a debug message
is logged once per reason on the ``"jaxrnn.kernels"`` logger): weights and carry of a dtype other than
float32 / float64 or of mixed dtypes, inputs of any other dtype than the weights' or a narrower float
(inputs in ``bfloat16`` or ``float16`` are cast up first, as the reference's ``x @ W_xh`` promotes
them).
Everything accepted equals the reference path (tests: values and gradients, float32 to
1e-5, float64 to 1e-10).

This module imports only JAX and :mod:`jaxrnn.masking`: the cell factories (``jaxrnn.cells``) attach
these kernels to the cells they build (``make_cell(..., kernel=...)``).
"""

import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxrnn.masking import valid_steps

__all__ = [
    "FUSED_BACKENDS",
    "FusedSpec",
    "check_scan_args",
    "elman_kernel",
    "fused_scan",
    "gru_kernel",
    "lstm_kernel",
    "start_states",
    "tangent_step",
]

log = logging.getLogger("jaxrnn.kernels")
#: the implementations the fused kernels' ``apply`` takes as ``backend=``
FUSED_BACKENDS = ("xla", "pallas")
DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


class FusedSpec(NamedTuple):
    """A cell's recurrence split for :func:`fused_scan`.

    ``w`` is a dict of the parameters (``W_xh (I, G*H)``, ``b (G*H,)``, ``W_hh (H, G*H)`` plus small
    extras such as the GRU's ``b_hn``); ``s`` the carry; ``px_t = x_t @ W_xh + b (*batch, G*H)``.

    * ``forward(w, s, px_t) -> s_t``: the step (the reference ``cell.recur``).
    * ``linearise(w, s, px_t) -> (s_t, coef)``: the step and the coefficients of its derivative, a dict
      of ``(*batch, k)`` arrays with ``coef["rec"] (*batch, G*H)``, what multiplies ``dA_t``.
    * ``drive(coef, dpx, drec, dw) -> E | None``: the tangent terms that do not depend on the previous
      tangent, for all steps at once (``coef`` leaves ``(T, *batch, k)``; ``dpx`` and
      ``drec = h_{t-1} @ dW_hh``, ``(T, *batch, G*H)``, and ``dw`` the extras' tangents may be ``None``
      for zero; ``dpx = dxs @ W_xh + xs @ dW_xh + db``).
    * ``combine(coef_t, ds, m_t) -> ds_t`` with ``m_t = E_t + coef_t["rec"] * (lhs(ds) @ W_hh)``:
      linear in ``(ds, m_t)``, using only products with stored coefficients.
    * ``lhs(s) -> h``: the left operand of the recurrent product.

    Two optional overrides, for recurrences whose recurrent product is not one ``lhs(s) @ W_hh`` (the
    reset-before GRU multiplies ``(r * h) @ W_hn``, after a first product gives ``r``):

    * ``drec(coef, prev, dW_hh) -> (T, *batch, G*H)``: the ``dW_hh`` tangent terms of every step at
      once (default ``lhs(prev) @ dW_hh``; ``prev`` the states each step starts from);
    * ``tangent(w, coef_t, ds, E_t) -> ds_t``: the whole tangent step, linear in ``(ds, E_t)``
      (``E_t`` may be ``None`` for zero); default the ``combine`` form above.
    """

    forward: Callable
    linearise: Callable
    drive: Callable
    combine: Callable | None
    lhs: Callable
    drec: Callable | None = None
    tangent: Callable | None = None


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def _where(valid, new, old):
    """Per sequence: ``new`` where ``valid (*batch)``, else ``old``; on every leaf of a pytree."""
    return jax.tree.map(lambda n, o: jnp.where(valid[..., None], n, o), new, old)


def start_states(s0, states, reverse: bool, resets=None, reset_carry=None):
    """The state each step started from, in processing order, for every ``t``: the states shifted by
    one step (``s0`` first), and ``reset_carry`` where ``resets (T, *batch)`` is True. Leaves
    ``(T, *batch, k)``; ``states`` as :func:`fused_scan` returns them. The left operand of the ``dW_hh``
    product of BPTT (this module's tangent, the Pallas kernel's backward pass)."""

    def shift(a0, a):
        if reverse:
            return jnp.concatenate([a[1:], a0[None]], axis=0)
        return jnp.concatenate([a0[None], a[:-1]], axis=0)

    prev = jax.tree.map(shift, s0, states)
    if resets is None:
        return prev
    return _where(resets, jax.tree.map(lambda r, p: jnp.broadcast_to(r, p.shape), reset_carry, prev), prev)


def _project(w, x):
    """The input half of the pre-activations, ``x @ W_xh + b``."""
    return x @ w["W_xh"] + w["b"]


def tangent_step(spec: FusedSpec, w: dict, coef_t, ds, e_t):
    """One step of the linear tangent recurrence: ``ds_t`` from the tangent ``ds`` of the state the
    step starts from and the step's drive ``E_t`` (``None`` for zero). ``spec.tangent`` where the spec
    has one, else ``combine(coef_t, ds, E_t + coef_t["rec"] * (lhs(ds) @ W_hh))``. Linear in
    ``(ds, E_t)``: BPTT is its transpose (``jax.vjp``), which the Pallas backward kernel runs per step.
    Where ``w`` also holds ``W_hh_T`` (``W_hh`` transposed, ``(G*H, H)``, as :func:`fused_scan`'s tangent
    passes it), the product reads that copy, so that its transpose reads a row-major matrix."""
    if spec.tangent is not None:
        return spec.tangent(w, coef_t, ds, e_t)
    h = spec.lhs(ds)
    if "W_hh_T" in w:  # the transposed copy: BPTT's transpose of this product reads it row-major
        rec = jax.lax.dot_general(h, w["W_hh_T"], (((h.ndim - 1,), (1,)), ((), ())))
    else:
        rec = h @ w["W_hh"]
    m = coef_t["rec"] * rec
    return spec.combine(coef_t, ds, m if e_t is None else m + e_t)


def check_scan_args(fn: str, spec, w, xs, valid=None, resets=None, reset_carry=None) -> None:
    """The argument checks of :func:`fused_scan` (and :func:`jaxrnn.kernels.pallas.pallas_scan`), before
    tracing: ``spec`` a :class:`FusedSpec`; ``w`` holding ``W_xh``, ``b``, ``W_hh``; ``xs`` of shape
    ``(T, *batch, I)`` with ``I`` the rows of ``W_xh``; ``valid`` and ``resets`` ``None`` or of shape
    ``(T, *batch)``; ``reset_carry`` given with ``resets``. Errors name ``fn`` and the argument.

    Raises:
      TypeError: ``spec`` is not a :class:`FusedSpec`.
      ValueError: any of the others.
    """
    if not isinstance(spec, FusedSpec):
        raise TypeError(f"{fn}: spec must be a FusedSpec; got {type(spec).__name__}")
    missing = [k for k in ("W_xh", "b", "W_hh") if k not in w]
    if missing:
        raise ValueError(f"{fn}: w must hold W_xh, b and W_hh (and the cell's extras); missing {missing}")
    if jnp.ndim(xs) < 2 or jnp.shape(xs)[-1] != jnp.shape(w["W_xh"])[0]:
        raise ValueError(
            f"{fn}: xs must have shape (T, *batch, {jnp.shape(w['W_xh'])[0]}) for W_xh of shape "
            f"{tuple(jnp.shape(w['W_xh']))}; got {tuple(jnp.shape(xs))}"
        )
    for name, mask in (("valid", valid), ("resets", resets)):
        if mask is not None and tuple(jnp.shape(mask)) != tuple(jnp.shape(xs)[:-1]):
            raise ValueError(
                f"{fn}: {name} must have shape (T, *batch) = {tuple(jnp.shape(xs)[:-1])}; "
                f"got {tuple(jnp.shape(mask))}"
            )
    if resets is not None and reset_carry is None:
        raise ValueError(f"{fn}: resets need reset_carry, the state a reset starts from (like s0)")


def fused_scan(
    spec: FusedSpec,
    w: dict,
    s0,
    xs,
    valid=None,
    *,
    resets=None,
    reset_carry=None,
    reverse: bool = False,
    unroll: int = 1,
):
    """All states of ``s_t = spec.forward(w, s_{t-1}, x_t @ W_xh + b)``, with a fused derivative.

    In plain Python (``reverse=False``)::

        def fused_scan(spec, w, s0, xs, valid=None, resets=None, reset_carry=None):
            s, states = s0, []
            for t in range(len(xs)):
                s_in = s if resets is None else where(resets[t], reset_carry, s)   # per sequence
                new = spec.forward(w, s_in, xs[t] @ w["W_xh"] + w["b"])
                s = new if valid is None else where(valid[t], new, s)
                states.append(s)
            return stack(states)

    with ``reverse=True`` the loop runs ``t = T-1 .. 0`` (``states[t]`` is still step ``t``'s). The
    values are the loop's; derivatives (any mode, any order) come from the custom JVP rule described in
    the module docstring, which equals the loop's derivative.

    The input projection is done inside the loop, one ``(B, I) @ (I, G*H)`` product per step: on a CPU
    that is faster than one ``(T*B, I) @ (I, G*H)`` product before the loop whose ``(T, B, G*H)`` result
    is written to memory and read back. The tangent's input terms ``xs @ dW_xh + db`` are one product
    for all steps (its transpose is the one ``xs^T @ dA`` product of ``dW_xh``).

    Args:
      spec: the cell's :class:`FusedSpec`.
      w: the parameters, ``{"W_xh": (I, G*H), "b": (G*H,), "W_hh": (H, G*H), ...}``.
      s0: the initial carry, leaves ``(*batch, k)``.
      xs: ``(T, *batch, I)``.
      valid: ``None`` or booleans ``(T, *batch)``; ``False`` leaves the state unchanged at that step.
      resets: ``None`` or booleans ``(T, *batch)``; ``True`` replaces the state by ``reset_carry``
        before that step (in processing order: with ``reverse=True``, before step ``t`` of the
        backward pass). The tangent is reset to ``reset_carry``'s tangent there, so a learned reset
        state gets its gradient.
      reset_carry: the state a reset starts from, a pytree like ``s0`` (required with ``resets``).
      reverse, unroll: as in ``jax.lax.scan``.

    Returns:
      ``states``: a pytree like ``s0`` with leaves ``(T, *batch, k)``.

    Raises:
      TypeError / ValueError before tracing: ``spec`` not a :class:`FusedSpec`, ``w`` without
      ``W_xh``/``b``/``W_hh``, ``xs`` of rank < 2 or with the wrong feature size, ``valid`` or
      ``resets`` not shaped ``(T, *batch)``, ``resets`` without ``reset_carry``.
    """
    check_scan_args("fused_scan", spec, w, xs, valid, resets, reset_carry)
    if resets is None:
        reset_carry = None

    def scan(body, init, seq):
        return jax.lax.scan(body, init, seq, reverse=reverse, unroll=unroll)[1]

    def start(s, r0, reset_t):
        """The state a step starts from: ``r0`` where the sequence resets, else ``s``."""
        return s if reset_t is None else _where(reset_t, r0, s)

    @jax.custom_jvp
    def run(w, s0, xs, valid, resets, r0):
        def body(s, inp):
            x_t, v_t, reset_t = inp
            new = spec.forward(w, start(s, r0, reset_t), _project(w, x_t))
            new = new if v_t is None else _where(v_t, new, s)
            return new, new

        return scan(body, s0, (xs, valid, resets))

    def run_jvp(primals, tangents):
        w, s0, xs, valid, resets, r0 = primals
        dw, ds0, dxs, _, _, dr0 = tangents
        dw = {k: (None if _is_zero(v) else v) for k, v in dw.items()}

        def body(s, inp):
            x_t, v_t, reset_t = inp
            new, coef = spec.linearise(w, start(s, r0, reset_t), _project(w, x_t))
            new = new if v_t is None else _where(v_t, new, s)
            return new, (new, coef)

        states, coefs = scan(body, s0, (xs, valid, resets))
        # the tangent terms that do not depend on the previous tangent, for all steps at once (the
        # transposes of these products are the xs^T @ dA, dA @ W_xh^T and h^T @ dA products of BPTT)
        dpx = _sum(
            None if dw["W_xh"] is None else xs @ dw["W_xh"],
            dw["b"],
            None if _is_zero(dxs) else dxs @ w["W_xh"],
        )
        if dpx is not None and dpx.ndim < xs.ndim:  # db alone
            dpx = jnp.broadcast_to(dpx, xs.shape[:-1] + dpx.shape[-1:])
        drec = None
        if dw["W_hh"] is not None:  # one (T * B, H) @ (H, G*H) product for every step's h_{t-1} @ dW
            prev = start_states(s0, states, reverse, resets, r0)
            drec = spec.lhs(prev) @ dw["W_hh"] if spec.drec is None else spec.drec(coefs, prev, dw["W_hh"])
        extras = {k: v for k, v in dw.items() if k not in ("W_xh", "b", "W_hh")}
        e = spec.drive(coefs, dpx, drec, extras)
        zeros_if_none = lambda t, s: jnp.zeros_like(s) if _is_zero(t) else t  # noqa: E731
        ds0 = jax.tree.map(zeros_if_none, ds0, s0)
        dr0 = None if r0 is None else jax.tree.map(zeros_if_none, dr0, r0)

        # The tangent's product dh @ W_hh reads a transposed copy W_hh^T made once here, so that its
        # transpose -- BPTT's dA_t @ W_hh^T, the backward loop's one product -- reads a (G*H, H) matrix
        # row-major instead of transposing W_hh on every step (measured: `bench --breakdown`); forward
        # mode pays the transposed read instead. The barrier keeps XLA from folding the copy away.
        wt = w if spec.tangent is not None else {**w, "W_hh_T": jax.lax.optimization_barrier(w["W_hh"].T)}

        def tangent(ds, inp):
            e_t, coef_t, v_t, reset_t = inp
            new = tangent_step(spec, wt, coef_t, start(ds, dr0, reset_t), e_t)
            new = new if v_t is None else _where(v_t, new, ds)
            return new, new

        return states, scan(tangent, ds0, (e, coefs, valid, resets))

    run.defjvp(run_jvp, symbolic_zeros=True)
    return run(w, s0, xs, valid, resets, reset_carry)


# --------------------------------------------------------------------------------------------------
# the cells


def _sigmoid(x):
    return jax.nn.sigmoid(x)


def _sum(*terms):
    """The sum of the terms that are not ``None`` (``None`` if all are)."""
    terms = [t for t in terms if t is not None]
    return functools.reduce(jnp.add, terms) if terms else None


def _lstm_spec(state_type, peepholes: bool = False) -> FusedSpec:
    """i, f, g, o LSTM: ``c_t = f c + i g``, ``h_t = o tanh(c_t)`` (``jaxrnn.lstm``), with peepholes
    ``a_i += p_i c``, ``a_f += p_f c``, ``a_o += p_o c_t`` when ``peepholes``.

    Linearisation, with ``k_i = g i(1-i)``, ``k_f = c f(1-f)``, ``k_g = i (1-g^2)``,
    ``k_o = tanh(c_t) o(1-o)``::

        dc_t = [f + k_i p_i + k_f p_f] dc + k_i dA_i + k_f dA_f + k_g dA_g + k_i c dp_i + k_f c dp_f
        dh_t = k_o dA_o + [o (1 - tanh^2 c_t) + k_o p_o] dc_t + k_o c_t dp_o

    (without peepholes the ``p`` terms vanish); ``coef["rec"]`` holds ``k_i, k_f, k_g, k_o`` side by side,
    ``f`` and ``kc`` the bracketed factors; the ``dp`` terms do not depend on the previous tangent and
    join ``E`` (from the stored ``c`` and ``c_t``).
    """

    def gates(w, s, px_t):
        a = px_t + s.h @ w["W_hh"]
        a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
        if peepholes:
            a_i, a_f = a_i + w["p_i"] * s.c, a_f + w["p_f"] * s.c
        return _sigmoid(a_i), _sigmoid(a_f), jnp.tanh(a_g), a_o

    def cell_and_output_gate(w, s, px_t):
        i, f, g, a_o = gates(w, s, px_t)
        c = f * s.c + i * g
        return i, f, g, c, _sigmoid(a_o + w["p_o"] * c if peepholes else a_o)

    def forward(w, s, px_t):
        _, _, _, c, o = cell_and_output_gate(w, s, px_t)
        return state_type(h=o * jnp.tanh(c), c=c)

    def linearise(w, s, px_t):
        i, f, g, c, o = cell_and_output_gate(w, s, px_t)
        tc = jnp.tanh(c)
        k_i, k_f, k_g, k_o = g * i * (1 - i), s.c * f * (1 - f), i * (1 - g * g), tc * o * (1 - o)
        coef = {"rec": jnp.concatenate([k_i, k_f, k_g, k_o], -1), "f": f, "kc": o * (1 - tc * tc)}
        if peepholes:
            coef["f"] = f + k_i * w["p_i"] + k_f * w["p_f"]
            coef["kc"] = coef["kc"] + k_o * w["p_o"]
            coef["c_prev"], coef["c"] = s.c, c
        return state_type(h=o * tc, c=c), coef

    def drive(coef, dpx, drec, dw):
        da = _sum(dpx, drec)
        e = None if da is None else coef["rec"] * da
        if peepholes and any(dw[k] is not None for k in ("p_i", "p_f", "p_o")):
            k_i, k_f, _, k_o = jnp.split(coef["rec"], 4, axis=-1)
            zero = jnp.zeros_like(k_i)
            peep = [
                zero if dw["p_i"] is None else k_i * coef["c_prev"] * dw["p_i"],
                zero if dw["p_f"] is None else k_f * coef["c_prev"] * dw["p_f"],
                zero,
                zero if dw["p_o"] is None else k_o * coef["c"] * dw["p_o"],
            ]
            e = _sum(e, jnp.concatenate(peep, -1))
        return e

    def combine(coef, ds, m):
        m_i, m_f, m_g, m_o = jnp.split(m, 4, axis=-1)
        dc = coef["f"] * ds.c + m_i + m_f + m_g
        return state_type(h=m_o + coef["kc"] * dc, c=dc)

    return FusedSpec(forward, linearise, drive, combine, lambda s: s.h)


def _gru_spec() -> FusedSpec:
    """The reset-after GRU (``jaxrnn.gru(reset_after=True)``), r, z, n::

        hh = h @ W_hh    r = sigma(px_r + hh_r)    z = sigma(px_z + hh_z)
        q = hh_n + b_hn  n = tanh(px_n + r q)      h_t = (1 - z) n + z h

    Linearisation, with ``u = (1 - z)(1 - n^2)``: ``dh_t = z dh + [u q r(1-r)] (dpx_r + dhh_r)
    + [(h - n) z(1-z)] (dpx_z + dhh_z) + u dpx_n + [u r] (dhh_n + db_hn)``; ``coef["rec"]`` holds the
    three bracketed coefficients, ``u`` and ``z`` the others.
    """

    def parts(w, h, px_t):
        hh = h @ w["W_hh"]
        x_r, x_z, x_n = jnp.split(px_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(hh, 3, axis=-1)
        r = _sigmoid(x_r + h_r)
        z = _sigmoid(x_z + h_z)
        q = h_n + w["b_hn"]
        n = jnp.tanh(x_n + r * q)
        return r, z, q, n

    def forward(w, h, px_t):
        r, z, q, n = parts(w, h, px_t)
        return (1.0 - z) * n + z * h

    def linearise(w, h, px_t):
        r, z, q, n = parts(w, h, px_t)
        u = (1.0 - z) * (1.0 - n * n)
        rec = jnp.concatenate([u * q * r * (1 - r), (h - n) * z * (1 - z), u * r], -1)
        return (1.0 - z) * n + z * h, {"rec": rec, "u": u, "z": z}

    def drive(coef, dpx, drec, dw):
        terms = []
        if drec is not None or dw["b_hn"] is not None:
            rec = drec if drec is not None else jnp.zeros_like(coef["rec"])
            if dw["b_hn"] is not None:  # b_hn sits next to the n slice of h @ W_hh
                zeros = jnp.zeros_like(dw["b_hn"])
                rec = rec + jnp.concatenate([zeros, zeros, dw["b_hn"]], -1)
            terms.append(coef["rec"] * rec)
        if dpx is not None:
            k_r, k_z, _ = jnp.split(coef["rec"], 3, axis=-1)
            terms.append(jnp.concatenate([k_r, k_z, coef["u"]], -1) * dpx)
        return _sum(*terms)

    def combine(coef, dh, m):
        m_r, m_z, m_n = jnp.split(m, 3, axis=-1)
        return coef["z"] * dh + m_r + m_z + m_n

    return FusedSpec(forward, linearise, drive, combine, lambda h: h)


def _gru_before_spec() -> FusedSpec:
    """The reset-before GRU (``jaxrnn.gru(reset_after=False)``), r, z, n, ``W_hh = [W_r|W_z|W_n]``::

        [a_r, a_z] = px_rz + h @ [W_r|W_z]    r = sigma(a_r)    z = sigma(a_z)
        n = tanh(px_n + (r * h) @ W_n)        h_t = (1 - z) n + z h

    Two recurrent products per step, the second fed by the first (``r``), so the tangent step is its
    own (``FusedSpec.tangent``)::

        dr = r(1-r) (E_r + dh @ W_r)         dz = z(1-z) (E_z + dh @ W_z)
        dh_t = (h - n) dz + [(1-z)(1-n^2)] (E_n + (dr * h + r * dh) @ W_n) + z dh

    with ``E = dpx + [h @ dW_r, h @ dW_z, (r * h) @ dW_n]`` for all steps at once (``FusedSpec.drec``).
    """

    def parts(w, h, px_t):
        W = w["W_hh"]
        H = h.shape[-1]
        a = px_t[..., : 2 * H] + h @ W[:, : 2 * H]
        r, z = _sigmoid(a[..., :H]), _sigmoid(a[..., H:])
        n = jnp.tanh(px_t[..., 2 * H :] + (r * h) @ W[:, 2 * H :])
        return r, z, n

    def forward(w, h, px_t):
        r, z, n = parts(w, h, px_t)
        return (1.0 - z) * n + z * h

    def linearise(w, h, px_t):
        r, z, n = parts(w, h, px_t)
        coef = {"kr": r * (1 - r), "kz": z * (1 - z), "r": r, "h": h, "u": (1 - z) * (1 - n * n), "z": z}
        coef["hn"] = h - n
        return (1.0 - z) * n + z * h, coef

    def drec(coef, prev, dW):
        H = prev.shape[-1]
        return jnp.concatenate([prev @ dW[:, : 2 * H], (coef["r"] * prev) @ dW[:, 2 * H :]], -1)

    def drive(coef, dpx, drec, dw):
        return _sum(dpx, drec)

    def tangent(w, coef, dh, e):
        W = w["W_hh"]
        H = dh.shape[-1]
        a = dh @ W[:, : 2 * H]
        if e is not None:
            a = a + e[..., : 2 * H]
        dr, dz = coef["kr"] * a[..., :H], coef["kz"] * a[..., H:]
        q = (dr * coef["h"] + coef["r"] * dh) @ W[:, 2 * H :]
        if e is not None:
            q = q + e[..., 2 * H :]
        return coef["hn"] * dz + coef["u"] * q + coef["z"] * dh

    return FusedSpec(forward, linearise, drive, None, lambda h: h, drec=drec, tangent=tangent)


def _elman_spec(activation) -> FusedSpec:
    """``h_t = f(px_t + h @ W_hh)``; ``dh_t = [f'(a_t)] (dpx_t + dh @ W_hh + h @ dW_hh)``.

    ``activation`` is a :class:`jaxrnn.activations.Activation`: ``f`` and ``f'`` (from the output
    ``y = f(a)`` where it can be, so only ``f'`` is stored)."""
    f = activation.fn

    def forward(w, h, px_t):
        return f(px_t + h @ w["W_hh"])

    def linearise(w, h, px_t):
        a = px_t + h @ w["W_hh"]
        y = f(a)
        return y, {"rec": activation.grad(a, y)}

    def drive(coef, dpx, drec, dw):
        da = _sum(dpx, drec)
        return None if da is None else coef["rec"] * da

    return FusedSpec(forward, linearise, drive, lambda coef, dh, m: m, lambda h: h)


# --------------------------------------------------------------------------------------------------
# SequenceKernel.apply functions for the cell factories


@functools.cache
def _decline(cell: str, reason: str) -> None:
    """Log (once per cell and reason) why the fused kernel left a call to the reference scan."""
    log.debug("%s: fused kernel not used (%s); unroll runs the reference lax.scan", cell, reason)


def _dtype_reason(w: dict, carry, xs) -> str | None:
    """Why the kernel cannot take these dtypes (``None``: it can). The weights and the carry must share
    float32 or float64; ``xs`` may be that dtype or a narrower float (``bfloat16``, ``float16``), which
    :func:`_kernel` casts up, as the reference's ``x @ W_xh`` promotes it."""
    dtypes = {jnp.dtype(x.dtype) for x in (*jax.tree.leaves(w), *jax.tree.leaves(carry))}
    if len(dtypes) > 1:
        return f"mixed dtypes {sorted(str(d) for d in dtypes)} in the weights and the carry"
    (dtype,) = dtypes
    if dtype not in DTYPES:
        return f"dtype {dtype} (the fused kernels take float32 or float64)"
    x = jnp.dtype(xs.dtype)
    if x != dtype and not (jnp.issubdtype(x, jnp.floating) and jnp.promote_types(x, dtype) == dtype):
        return f"inputs of dtype {x} with weights of dtype {dtype}"
    return None


def _kernel(name: str, spec: FusedSpec, weight_keys: tuple[str, ...]) -> Callable:
    def apply(
        params, carry, xs, *, lengths, reverse, unroll=1, resets=None, reset_carry=None, backend="xla"
    ) -> Any:
        w = {k: params[k] for k in ("W_xh", "b", *weight_keys)}
        reason = _dtype_reason(w, carry, xs)
        if reason is None and resets is not None:
            reason = _dtype_reason(w, reset_carry, xs)
        if reason is not None:
            if backend != "xla":  # asked for by name: say why it cannot serve
                raise ValueError(f"unroll: backend={backend!r} cannot run this {name}: {reason}")
            _decline(name, reason)
            return None
        xs = xs.astype(w["W_xh"].dtype)  # a narrower float: the promotion x @ W_xh would do
        valid = None
        if lengths is not None:
            valid = valid_steps(lengths, xs.shape[0])
        if backend == "pallas":
            from jaxrnn.kernels.pallas import pallas_scan  # Pallas is imported only when asked for

            states = pallas_scan(
                spec, w, carry, xs, valid, resets=resets, reset_carry=reset_carry, reverse=reverse
            )
        else:
            states = fused_scan(
                spec,
                w,
                carry,
                xs,
                valid,
                resets=resets,
                reset_carry=reset_carry,
                reverse=reverse,
                unroll=unroll,
            )
        return jax.tree.map(lambda s: s[0] if reverse else s[-1], states), states

    return apply


def lstm_kernel(state_type, *, peepholes: bool = False) -> Callable:
    """The ``SequenceKernel.apply`` of :func:`jaxrnn.lstm`, with or without peepholes.

    ``state_type`` is the carry's NamedTuple (``jaxrnn.LSTMCarry``), passed in so that this module
    needs nothing but JAX."""
    if peepholes:
        return _kernel("lstm", _lstm_spec(state_type, peepholes=True), ("W_hh", "p_i", "p_f", "p_o"))
    return _kernel("lstm", _lstm_spec(state_type), ("W_hh",))


def gru_kernel(*, reset_after: bool = True) -> Callable:
    """The ``SequenceKernel.apply`` of :func:`jaxrnn.gru`, both forms (``reset_after``)."""
    if not reset_after:
        return _kernel("gru", _gru_before_spec(), ("W_hh",))
    return _kernel("gru", _gru_spec(), ("W_hh", "b_hn"))


def elman_kernel(activation) -> Callable:
    """The ``SequenceKernel.apply`` of :func:`jaxrnn.elman` (and ``irnn``, ``np_rnn``) for any elementwise
    :class:`jaxrnn.activations.Activation` (its derivative from ``derivative_of_output`` or ``jax.jvp``)."""
    return _kernel("elman", _elman_spec(activation), ("W_hh",))
