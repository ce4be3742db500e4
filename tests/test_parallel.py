"""Parallel-scan cells (minGRU, minLSTM, LRU): the scan kernel against the sequential step and numpy.

The numpy references are written from the papers' equations (Feng et al. 2024, sections 3.1-3.2;
Orvieto et al. 2023, section 3) as plain loops and never call the cells' functions.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.cells.parallel import LRUCarry, linear_scan, lru, min_gru, min_lstm

F32, F64 = jnp.float32, jnp.float64
I, H = 3, 4


# --------------------------------------------------------------------------------------------------
# numpy references


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _g(a):
    return np.where(a >= 0, a + 0.5, _sig(a))


def _np_min_gru(log_space):
    def step(p, s, x):
        k = x @ p["W_xh"] + p["b"]
        z, kh = _sig(k[..., :H]), k[..., H:]
        ht = _g(kh) if log_space else kh
        h = (1 - z) * s[0] + z * ht
        return (h,), h

    return step


def _np_min_lstm(log_space):
    def step(p, s, x):
        k = x @ p["W_xh"] + p["b"]
        f, i, kh = _sig(k[..., :H]), _sig(k[..., H : 2 * H]), k[..., 2 * H :]
        ht = _g(kh) if log_space else kh
        h = f / (f + i) * s[0] + i / (f + i) * ht
        return (h,), h

    return step


def _np_lru(p, s, x):
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    Bc, Cc = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]  # (I, N), (N, I): B x = x @ Bc
    h = lam * (s[0] + 1j * s[1]) + np.exp(p["gamma_log"]) * (x @ Bc)
    y = (h @ Cc).real + p["D"] * x
    return (h.real, h.imag, y), y


def _np_unroll(step, params, xs, s0, lengths=None, reverse=False, resets=None):
    """The loop; ``resets[t]`` on a valid step starts a segment at step ``t`` from zeros (the cells'
    initial carry), so in reverse the carry is zeroed before step ``t`` when ``resets[t + 1]``."""
    p = {k: np.asarray(v) for k, v in params.items()}
    xs = np.asarray(xs)
    T = xs.shape[0]
    L = np.full(xs.shape[1:-1], T) if lengths is None else np.asarray(lengths)
    s, ys = tuple(np.asarray(c) for c in s0), [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        if resets is not None:
            r = np.asarray(resets)
            cut = (
                (r[t + 1] & (t + 1 < L) if t + 1 < T else np.zeros_like(r[0])) if reverse else r[t] & (t < L)
            )
            s = tuple(np.where(cut[..., None], 0.0, c) for c in s)
        new, y = step(p, s, xs[t])
        v = (t < L)[..., None]
        s = tuple(np.where(v, n, o) for n, o in zip(new, s))
        ys[t] = np.where(v, y, 0.0)
    return s, np.stack(ys)


CELLS = {
    "min_gru": (min_gru(H), _np_min_gru(True)),
    "min_gru_plain": (min_gru(H, log_space=False), _np_min_gru(False)),
    "min_lstm": (min_lstm(H), _np_min_lstm(True)),
    "min_lstm_plain": (min_lstm(H, log_space=False), _np_min_lstm(False)),
    "lru": (lru(H, r_min=0.4, r_max=0.99), _np_lru),
}


def _setup(cell, T, batch, dtype, seed=0):
    """Parameters (every leaf perturbed, so biases are non-zero), inputs and a random initial carry
    with both signs (the log-space scans must take any real h0). numpy randomness: no eager compiles."""
    rng = np.random.default_rng(seed)
    params = jax.jit(cell.init, static_argnums=(1, 2))(jax.random.PRNGKey(seed), I, dtype)
    params = jax.tree.map(lambda a: a + jnp.asarray(0.3 * rng.normal(size=a.shape), dtype), params)
    xs = jnp.asarray(rng.normal(size=(T, *batch, I)), dtype)
    c0 = jax.eval_shape(lambda p: cell.initial_carry(p, batch), params)
    carry = jax.tree.map(lambda c: jnp.asarray(rng.normal(size=c.shape), dtype), c0)
    return params, xs, carry


def _carry_tuple(carry):
    return tuple(carry) if isinstance(carry, LRUCarry) else (carry,)


def _run_eager(cell, params, xs, carry, lengths, *, reverse, fused, resets=None):
    return jr.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse, fused=fused, resets=resets)


_run = jax.jit(_run_eager, static_argnames=("cell", "reverse", "fused"))


def _loss(cell, params, xs, carry, lengths, reverse, fused, run=_run, resets=None):
    """A scalar of all outputs and the final carry, and ``(final, ys)`` as aux."""
    final, ys = run(cell, params, xs, carry, lengths, reverse=reverse, fused=fused, resets=resets)
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    loss = jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))
    return loss, (final, ys)


def _close(a, b, **tol):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tol), a, b)


# (batch shape, lengths, reverse, resets): 0/1/2 batch dims, lengths including 0 and T, both
# directions, resets (episode starts) at the first step, mid-sequence, on padding and back to back
T_SMALL = 9
RESETS_1 = [[True, False, False], [False, False, True], [False, True, False], [False, True, True]]
RESETS_2 = [[[False, True], [False, False]], [[True, False], [False, True]], [[False, True], [True, True]]]
CASES = {
    "batch_lengths": ((3,), [0, T_SMALL, 4], False, None),
    "batch2_lengths_rev": ((2, 2), [[1, T_SMALL], [0, 6]], True, None),
    "batch_resets": ((3,), [0, T_SMALL, 4], False, RESETS_1 + [[False] * 3] * (T_SMALL - 4)),
    "batch2_resets_rev": ((2, 2), [[1, T_SMALL], [0, 6]], True, RESETS_2 * 3),
}


@functools.partial(jax.jit, static_argnames=("cell", "reverse"))
def _fused_and_reference(cell, params, xs, carry, lengths, reverse, resets=None):
    """Outputs and gradients (w.r.t. params, xs, carry) of the kernel path and the reference scan."""
    both = [
        jax.grad(_loss, argnums=(1, 2, 3), has_aux=True)(
            cell, params, xs, carry, lengths, reverse, fused, run=_run_eager, resets=resets
        )
        for fused in (True, False)
    ]
    return [out for _, out in both], [g for g, _ in both]


KERNEL_CASES = [
    ("min_gru", "batch2_lengths_rev"),
    ("min_gru_plain", "batch_lengths"),
    ("min_lstm", "batch_lengths"),
    ("min_lstm_plain", "batch2_lengths_rev"),
    ("lru", "batch_lengths"),
    ("lru", "batch2_lengths_rev"),
    # resets: folded into the scan's coefficients (a second log-space scan for a nonzero reset state)
    ("min_gru", "batch_resets"),
    ("min_gru_plain", "batch2_resets_rev"),
    ("min_lstm", "batch2_resets_rev"),
    ("lru", "batch_resets"),
]


@pytest.mark.parametrize(("name", "case"), KERNEL_CASES)
def test_kernel_equals_sequential_and_numpy_float64(name, case):
    cell, np_step = CELLS[name]
    batch, lengths, reverse, resets = CASES[case]
    params, xs, carry = _setup(cell, T_SMALL, batch, F64)
    lengths = None if lengths is None else jnp.asarray(lengths)
    resets = None if resets is None else jnp.asarray(resets)
    (fused, ref), (g_fused, g_ref) = _fused_and_reference(cell, params, xs, carry, lengths, reverse, resets)
    np_final, np_ys = _np_unroll(np_step, params, xs, _carry_tuple(carry), lengths, reverse, resets)
    tol = dict(rtol=1e-10, atol=1e-10)
    _close(fused, ref, **tol)
    _close(_carry_tuple(fused[0]), np_final, **tol)
    _close(fused[1], np_ys, **tol)
    assert fused[1].dtype == F64 and all(c.dtype == F64 for c in jax.tree.leaves(fused[0]))
    _close(g_fused, g_ref, **tol)


@pytest.mark.parametrize("name", list(CELLS))
def test_eager(name):
    """Without jit and without batch dims, the kernel path runs op by op and equals the numpy loop."""
    cell, np_step = CELLS[name]
    params, xs, carry = _setup(cell, 5, (), F64)
    final, ys = jr.unroll(cell, params, xs, carry, reverse=True)
    np_final, np_ys = _np_unroll(np_step, params, xs, _carry_tuple(carry), reverse=True)
    _close((_carry_tuple(final), ys), (np_final, np_ys), rtol=1e-10, atol=1e-10)


def test_the_kernel_is_a_parallel_scan_and_the_reference_a_sequential_one():
    for cell, _ in CELLS.values():
        params = jax.eval_shape(lambda k, c=cell: c.init(k, I), jax.random.PRNGKey(0))
        xs = jax.ShapeDtypeStruct((4, 2, I), F32)
        resets = jax.ShapeDtypeStruct((4, 2), jnp.bool_)
        fused = str(jax.make_jaxpr(functools.partial(jr.unroll, cell))(params, xs))
        with_resets = str(
            jax.make_jaxpr(lambda p, x, r, c=cell: jr.unroll(c, p, x, resets=r))(params, xs, resets)
        )
        assert " scan[" not in with_resets and "while[" not in with_resets, cell.name
        ref = str(jax.make_jaxpr(functools.partial(jr.unroll, cell, fused=False))(params, xs))
        assert " scan[" not in fused and "while[" not in fused, cell.name
        assert " scan[" in ref, cell.name


@pytest.mark.parametrize("name", ["min_gru", "min_lstm", "lru"])
def test_float32_long_sequence(name):
    """T = 48 in float32: kernel = sequential = numpy (a float64 loop) to 1e-5; gradients for minGRU
    (the log-space scan is where float32 could lose precision; float64 gradients are checked above)."""
    cell, np_step = CELLS[name]
    T = 48
    params, xs, carry = _setup(cell, T, (2,), F32, seed=1)
    lengths = jnp.array([T, 20])
    final, ys = _run(cell, params, xs, carry, lengths, reverse=False, fused=True)
    assert ys.dtype == F32 and all(c.dtype == F32 for c in jax.tree.leaves(final))
    to64 = functools.partial(jax.tree.map, lambda a: np.asarray(a, np.float64))
    np_final, np_ys = _np_unroll(np_step, to64(params), to64(xs), to64(_carry_tuple(carry)), lengths)
    tol = dict(rtol=1e-5, atol=1e-5)
    _close(ys, np_ys, **tol)
    _close(_carry_tuple(final), np_final, **tol)
    if name == "min_gru":
        _, (g_fused, g_ref) = _fused_and_reference(cell, params, xs, carry, lengths, False)
        assert all(g.dtype == F32 for g in jax.tree.leaves(g_fused))
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_ref))
        _close(g_fused, g_ref, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", ["min_gru", "lru"])
def test_check_grads_float64(name):
    cell, _ = CELLS[name]
    params, xs, carry = _setup(cell, 5, (2,), F64)
    lengths = jnp.array([5, 3])

    def f(p, x, c):
        final, ys = jr.unroll(cell, p, x, c, lengths=lengths)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(v)) for v in jax.tree.leaves(final))

    check_grads(jax.jit(f), (params, xs, carry), order=1, modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["linear", "log", "complex"])
def test_linear_scan_equals_a_loop(kind, reverse):
    rng = np.random.default_rng(0)
    T, n = 13, 3
    a, b, h0 = rng.uniform(0.1, 1.0, (T, n)), rng.normal(size=(T, n)), rng.normal(size=(n,))
    if kind == "log":
        b = np.abs(b) + 0.1
    if kind == "complex":
        a = a * np.exp(1j * rng.uniform(0, 2 * np.pi, (T, n)))
        b = b + 1j * rng.normal(size=(T, n))
    h, want = h0, np.zeros_like(b)
    for t in reversed(range(T)) if reverse else range(T):
        h = a[t] * h + b[t]
        want[t] = h
    if kind == "log":
        got = linear_scan(jnp.log(a), jnp.log(b), h0, reverse=reverse, log_space=True)
    else:
        got = linear_scan(jnp.asarray(a), jnp.asarray(b), h0, reverse=reverse)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# transforms and diagnostics


@pytest.mark.parametrize("name", ["lru", "min_gru"])
def test_learned_initial_state_uses_the_kernel_and_equals_the_reference(name):
    # resets go back to the learned state: min_gru's log-space scan adds r0 * prod(a since the reset)
    cell = jr.learned_initial_state(CELLS[name][0], init=jr.initialisers.normal(0.5))
    params, xs, _ = _setup(cell, 6, (2,), F64)
    lengths = jnp.array([6, 2])
    resets = jnp.array(
        [[False, False], [True, False], [False, True], [True, False], [True, True], [False, True]]
    )
    assert cell.kernel is not None and cell.kernel == CELLS[name][0].kernel
    outs, (g_fused, g_ref) = _fused_and_reference(cell, params, xs, None, lengths, False, resets)
    _close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    _close(g_fused, g_ref, rtol=1e-10, atol=1e-12)
    s0 = jax.tree.leaves(g_fused[0]["initial_carry"])
    assert any(float(jnp.max(jnp.abs(s))) > 0 for s in s0)  # dL/ds_0 reaches the learned state


@pytest.mark.parametrize("name", ["min_lstm"])
def test_truncate_composes(name):
    cell = CELLS[name][0]
    T = 6
    params, xs, carry = _setup(cell, T, (2,), F64)

    @jax.jit
    @jax.grad
    def grad_truncated(p, cuts):
        return jnp.sum(jnp.sin(jr.unroll(jr.truncate(cell, cuts), p, xs)[1]))

    # no cuts: the full-BPTT gradient of the parallel kernel
    full = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(jr.unroll(cell, p, xs)[1]))))(params)
    _close(grad_truncated(params, jr.truncation.no_cuts(T)), full, rtol=1e-10, atol=1e-12)
    # cut before every step: only the one-step gradients, the state read as a constant
    one_step = grad_truncated(params, jnp.ones((T,), bool))

    def hand(p):
        s, total = cell.initial_carry(p, (2,)), 0.0
        for t in range(T):
            s = cell.step(p, jax.tree.map(jax.lax.stop_gradient, s), xs[t])
            total = total + jnp.sum(jnp.sin(cell.output(s)))
        return total

    _close(one_step, jax.jit(jax.grad(hand))(params), rtol=1e-10, atol=1e-12)


def test_step_jacobians_are_the_papers_diagonals():
    T = 5
    cell, _ = CELLS["min_gru"]
    params, xs, carry = _setup(cell, T, (), F64)
    J = jr.step_jacobians(cell, params, xs, carry)
    k = np.asarray(xs @ params["W_xh"] + params["b"])
    np.testing.assert_allclose(J, np.stack([np.diag(1 - _sig(k[t, :H])) for t in range(T)]), atol=1e-12)

    cell, _ = CELLS["min_lstm"]
    params, xs, carry = _setup(cell, T, (), F64)
    J = jr.step_jacobians(cell, params, xs, carry)
    k = np.asarray(xs @ params["W_xh"] + params["b"])
    f, i = _sig(k[:, :H]), _sig(k[:, H : 2 * H])
    np.testing.assert_allclose(J, np.stack([np.diag(f[t] / (f[t] + i[t])) for t in range(T)]), atol=1e-12)

    cell, _ = CELLS["lru"]
    params, xs, carry = _setup(cell, T, (), F64)
    J = jr.step_jacobians(cell, params, xs, carry)  # carry flattened as (re, im, y)
    lam = np.exp(-np.exp(np.asarray(params["nu_log"])) + 1j * np.exp(np.asarray(params["theta_log"])))
    Lr, Li = np.diag(lam.real), np.diag(lam.imag)
    Cr, Ci = np.asarray(params["C_re"]), np.asarray(params["C_im"])
    top = np.block([[Lr, -Li], [Li, Lr]])  # d(re, im)_t / d(re, im)_{t-1}
    dy = np.concatenate([Cr.T, -Ci.T], axis=1) @ top  # y_t = C_re^T re_t - C_im^T im_t
    want = np.block([[top, np.zeros((2 * H, I))], [dy, np.zeros((I, I))]])
    np.testing.assert_allclose(J, np.broadcast_to(want, (T, *want.shape)), atol=1e-12)
    # so the Jacobian-product norms of the (re, im) block decay like max |lambda|^(t-k)
    norms = jr.jacobian_norms(cell, params, xs, carry)
    assert norms.shape == (T, T) and np.all(np.isfinite(norms))


def test_gradient_flow_is_the_product_of_forget_coefficients():
    """minGRU: for L = sum(h_{T-1}), dL/dh_k = prod_{j>k} (1 - z_j) elementwise."""
    T = 7
    cell, _ = CELLS["min_gru"]
    params, xs, carry = _setup(cell, T, (2,), F64)
    curve = jr.gradient_flow(cell, params, xs, lambda ys: jnp.sum(ys[-1]), carry, reduce="none")
    k = np.asarray(xs @ params["W_xh"] + params["b"])
    a = 1 - _sig(k[..., :H])  # (T, 2, H)
    want = np.stack([np.linalg.norm(np.prod(a[t + 1 :], axis=0), axis=-1) for t in range(T)])
    np.testing.assert_allclose(curve, want, rtol=1e-10)


# --------------------------------------------------------------------------------------------------
# initialisation and errors


def test_lru_init_follows_the_paper():
    r_min, r_max, max_phase, N = 0.5, 0.9, math.pi / 10, 256
    cell = lru(N, r_min=r_min, r_max=r_max, max_phase=max_phase)
    p = jax.jit(cell.init, static_argnums=1)(jax.random.PRNGKey(0), 8)
    assert {k: v.shape for k, v in p.items()} == {
        "nu_log": (N,), "theta_log": (N,), "gamma_log": (N,), "B_re": (8, N), "B_im": (8, N),
        "C_re": (N, 8), "C_im": (N, 8), "D": (8,),
    }  # fmt: skip
    assert all(v.dtype == F32 for v in p.values())
    mod = np.exp(-np.exp(np.asarray(p["nu_log"], np.float64)))
    phase = np.exp(np.asarray(p["theta_log"], np.float64))
    assert mod.min() >= r_min - 1e-6 and mod.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # |lambda|^2 uniform on [r_min^2, r_max^2] (uniform on the ring): its mean is the midpoint
    assert abs(np.mean(mod**2) - (r_min**2 + r_max**2) / 2) < 0.03
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - mod**2), rtol=1e-5)
    assert abs(np.std(p["B_re"]) - 1 / 4) < 0.03 and abs(np.std(p["C_im"]) - 1 / 16) < 0.01
    c = cell.initial_carry(p, (2, 3))
    assert isinstance(c, LRUCarry) and c.re.shape == (2, 3, N) and c.y.shape == (2, 3, 8)
    assert lru(3).init(jax.random.PRNGKey(0), 2, F64)["B_re"].dtype == F64


def test_min_cells_shapes_and_hparams():
    for cell, n in ((min_gru(H), 2), (min_lstm(H), 3)):
        p = cell.init(jax.random.PRNGKey(0), I)
        assert p["W_xh"].shape == (I, n * H) and p["b"].shape == (n * H,) and p["W_xh"].dtype == F32
        assert cell.initial_carry(p, (5,)).shape == (5, H)
        assert cell.hparams["log_space"] is True
    assert (
        min_gru(H, log_space=False).kind == "min_gru" and not min_gru(H, log_space=False).hparams["log_space"]
    )
    assert lru(H, r_min=0.1).hparams["r_min"] == 0.1


@pytest.mark.parametrize("factory", [min_gru, min_lstm, lru])
def test_bad_hidden_size(factory):
    name = factory.__name__
    with pytest.raises(ValueError, match=f"{name}: hidden_size must be a positive int; got 0"):
        factory(0)
    with pytest.raises(TypeError, match=f"{name}: hidden_size must be a positive int; got 2.5"):
        factory(2.5)
    with pytest.raises(TypeError, match=f"{name}: hidden_size"):
        factory(True)
    with pytest.raises(ValueError, match=f"{name}.init: input_size must be a positive int; got -1"):
        factory(2).init(jax.random.PRNGKey(0), -1)
    with pytest.raises(TypeError, match=f"{name}.init: dtype must be a floating dtype"):
        factory(2).init(jax.random.PRNGKey(0), 2, jnp.int32)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"lru: need 0 <= r_min < r_max <= 1 .*got r_min=0.9, r_max=0.5"):
        lru(4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="r_min=0.5, r_max=0.5"):
        lru(4, r_min=0.5, r_max=0.5)
    with pytest.raises(ValueError, match="r_max=1.5"):
        lru(4, r_max=1.5)
    with pytest.raises(ValueError, match="r_min=-0.1"):
        lru(4, r_min=-0.1)
    with pytest.raises(ValueError, match="lru: max_phase must be > 0; got 0.0"):
        lru(4, max_phase=0)
    with pytest.raises(ValueError, match="lru: r_max must be a finite real number; got nan"):
        lru(4, r_max=float("nan"))
    with pytest.raises(TypeError, match="lru: max_phase must be a finite real number; got 'pi'"):
        lru(4, max_phase="pi")
    for factory in (min_gru, min_lstm):
        with pytest.raises(TypeError, match=f"{factory.__name__}: log_space must be a bool; got 1"):
            factory(4, log_space=1)
    with pytest.raises(ValueError, match=r"unroll: xs must have shape \(T, \*batch, 3\)"):
        cell = lru(4)
        jr.unroll(cell, cell.init(jax.random.PRNGKey(0), 3), jnp.zeros((5, 2, 4)))
