"""The fused kernels (jaxrnn.kernels): equal to the reference scan and to a Python loop, in values and in
every kind of derivative; used where they serve and declined (to the reference scan) where they do not."""

from __future__ import annotations

import functools
import logging

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.kernels import fused_scan

F32, F64 = jnp.float32, jnp.float64
T, I, H = 6, 3, 4

CELLS = {
    "lstm": jr.lstm(H),
    "gru": jr.gru(H),
    "elman_tanh": jr.elman(H),
    "elman_relu": jr.elman(H, "relu"),
    "elman_sigmoid": jr.elman(H, "sigmoid"),
    "elman_identity": jr.elman(H, "identity"),
    "irnn": jr.irnn(H),
    "np_rnn": jr.np_rnn(H),
    "learned_lstm": jr.learned_initial_state(jr.lstm(H)),
    "lstm_peepholes": jr.lstm(H, peepholes=True),
    "gru_before": jr.gru(H, reset_after=False),
}
FUSED = (
    "lstm",
    "gru",
    "elman_tanh",
    "elman_relu",
    "elman_sigmoid",
    "elman_identity",
    "lstm_peepholes",
    "gru_before",
)


def _params(cell, dtype, seed=0):
    params = cell.init(jax.random.PRNGKey(seed), I, dtype)
    # move every parameter off its init (biases zero, identity W_hh, ...) so that each term counts
    noise = jax.tree.map(
        lambda p: 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 1), p.shape, p.dtype), params
    )
    return jax.tree.map(jnp.add, params, noise)


def _data(cell, params, batch, dtype, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 2))
    xs = jax.random.normal(k1, (T, *batch, I), dtype)
    carry = jax.tree.map(
        lambda c: c + 0.2 * jax.random.normal(k2, c.shape, c.dtype), cell.initial_carry(params, batch)
    )
    return xs, carry


def _loss(cell, params, xs, carry, lengths, *, reverse, fused, time_axis=0, unroll=1, resets=None):
    opts = dict(
        lengths=lengths, reverse=reverse, fused=fused, time_axis=time_axis, unroll=unroll, resets=resets
    )
    final, ys = jr.unroll(cell, params, xs, carry, **opts)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(f**2) for f in jax.tree.leaves(final))


@functools.partial(jax.jit, static_argnames=("cell", "reverse", "fused", "time_axis", "unroll"))
def _value_and_grads(cell, params, xs, carry, lengths, *, reverse, fused, time_axis=0, unroll=1, resets=None):
    opts = dict(reverse=reverse, fused=fused, time_axis=time_axis, unroll=unroll, resets=resets)
    f = functools.partial(_loss, cell, **opts)
    return jax.value_and_grad(f, argnums=(0, 1, 2))(params, xs, carry, lengths)


def _close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def _uses_kernel(cell, params, xs, **kw) -> bool:
    jaxpr = str(jax.make_jaxpr(lambda p, x: jr.unroll(cell, p, x, **kw))(params, xs))
    return "custom_jvp_call" in jaxpr


# --------------------------------------------------------------------------------------------------
# equality with the reference scan


# every option for the three kernels (and learned_initial_state); one for the other activations and the
# Elman-family cells, which share the Elman kernel's code
CASES = [
    (name, reverse, with_lengths)
    for name in ("lstm", "gru", "elman_tanh", "learned_lstm")
    for reverse in (False, True)
    for with_lengths in (False, True)
] + [(name, True, True) for name in ("elman_relu", "elman_sigmoid", "elman_identity", "irnn", "np_rnn")]
# the peephole LSTM and the reset-before GRU (its own tangent step): plain, and everything at once
CASES += [(name, opt, opt) for name in ("lstm_peepholes", "gru_before") for opt in (False, True)]


# resets (T, 2, 3): at the first step, mid-sequence, back to back, at a sequence's last valid step and on
# padding (sequence [0, 2] has length 3, [1, 0] length 1)
RESETS = np.zeros((T, 2, 3), bool)
RESETS[0, 0, 0] = RESETS[2, 0, 0] = RESETS[3, 0, 0] = RESETS[2, 0, 2] = RESETS[4, 0, 2] = True
RESETS[1, 1, 0] = RESETS[5, 1, 1] = RESETS[3, 1, 2] = RESETS[4, 1, 2] = True


@pytest.mark.parametrize("name, reverse, with_lengths", CASES)
def test_fused_equals_reference_float64(name, reverse, with_lengths):
    # with lengths also with resets (episode boundaries), which the kernels take on the fused path
    cell = CELLS[name]
    params = _params(cell, F64)
    xs, carry = _data(cell, params, (2, 3), F64)
    lengths = jnp.array([[6, 0, 3], [1, 5, 6]]) if with_lengths else None
    resets = jnp.asarray(RESETS) if with_lengths else None
    got = _value_and_grads(cell, params, xs, carry, lengths, reverse=reverse, fused=True, resets=resets)
    want = _value_and_grads(cell, params, xs, carry, lengths, reverse=reverse, fused=False, resets=resets)
    _close(got, want, 1e-10)
    assert _uses_kernel(cell, params, xs, lengths=lengths, reverse=reverse, resets=resets)


@pytest.mark.parametrize("name", FUSED)
def test_fused_equals_reference_float32(name):
    cell = CELLS[name]
    params = _params(cell, F32)
    xs, carry = _data(cell, params, (5,), F32)
    lengths = jnp.array([6, 2, 0, 5, 6])
    for reverse in (False, True):
        got = _value_and_grads(cell, params, xs, carry, lengths, reverse=reverse, fused=True)
        want = _value_and_grads(cell, params, xs, carry, lengths, reverse=reverse, fused=False)
        _close(got, want, 1e-5)
        assert all(g.dtype == F32 for g in jax.tree.leaves(got))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_fused_options_time_axis_unroll_no_batch(name):
    cell = CELLS[name]
    params = _params(cell, F64)
    xs, carry = _data(cell, params, (3,), F64)
    want = _value_and_grads(cell, params, xs, carry, None, reverse=False, fused=False)
    # time on axis 1 and an unrolled loop: the same numbers
    xs_b = jnp.moveaxis(xs, 0, 1)
    got = _value_and_grads(cell, params, xs_b, carry, None, reverse=False, fused=True, time_axis=1, unroll=4)
    _close(got[0], want[0], 1e-10)
    _close((got[1][0], jnp.moveaxis(got[1][1], 1, 0), got[1][2]), want[1], 1e-10)
    # no batch dims at all
    one = jax.tree.map(lambda c: c[0], carry)
    got = _value_and_grads(cell, params, xs[:, 0], one, None, reverse=True, fused=True)
    want = _value_and_grads(cell, params, xs[:, 0], one, None, reverse=True, fused=False)
    _close(got, want, 1e-10)


def _python_loop_lstm(params, xs, carry):
    """The LSTM equations written out (not the cell's functions), one step at a time."""
    sig = lambda a: 1 / (1 + jnp.exp(-a))
    h, c = carry
    ys = []
    for x in xs:
        a = x @ params["W_xh"] + h @ params["W_hh"] + params["b"]
        i, f, o = sig(a[..., :H]), sig(a[..., H : 2 * H]), sig(a[..., 3 * H :])
        g = jnp.tanh(a[..., 2 * H : 3 * H])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        ys.append(h)
    return (h, c), jnp.stack(ys)


def test_fused_lstm_equals_the_equations_in_a_python_loop():
    cell = CELLS["lstm"]
    params = _params(cell, F64)
    xs, carry = _data(cell, params, (2,), F64)

    def loss(run, p, xs, carry):
        final, ys = run(p, xs, carry)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final[1] ** 2)

    fused = lambda p, x, c: jr.unroll(cell, p, x, c)
    loop = lambda p, x, c: _python_loop_lstm(p, x, tuple(c))
    _close(fused(params, xs, carry), loop(params, xs, carry), 1e-12)
    _close(
        jax.jit(jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2)))(params, xs, carry),
        jax.jit(jax.grad(functools.partial(loss, loop), argnums=(0, 1, 2)))(params, xs, carry),
        1e-12,
    )


# --------------------------------------------------------------------------------------------------
# forward mode, second order, vmap


@pytest.mark.parametrize("name", ["lstm", "gru", "elman_tanh", "gru_before"])
def test_forward_mode_and_second_order(name):
    cell = CELLS[name]
    params = _params(cell, F64)
    xs, carry = _data(cell, params, (2,), F64)
    lengths = jnp.array([6, 4])
    resets = jnp.zeros((T, 2), bool).at[2, 0].set(True).at[3, 1].set(True)
    tangent = jax.tree.map(jnp.ones_like, params)

    def f(fused, p):
        return _loss(cell, p, xs, carry, lengths, reverse=False, fused=fused, resets=resets)

    @functools.partial(jax.jit, static_argnums=0)  # one compiled program per path, not op by op
    def derivatives(fused):
        # jvp and linearize (which HF and jacfwd use) w.r.t. the params; a Hessian-vector product
        # (forward over reverse); tangents on the inputs only (the weight tangents are symbolic zeros)
        jvp = jax.jvp(functools.partial(f, fused), (params,), (tangent,))
        y, lin = jax.linearize(functools.partial(f, fused), params)
        hvp = jax.jvp(jax.grad(functools.partial(f, fused)), (params,), (tangent,))[1]
        g = lambda x: jr.unroll(cell, params, x, carry, fused=fused)[1]  # noqa: E731
        return jvp, (y, lin(tangent)), hvp, jax.jvp(g, (xs,), (jnp.cos(xs),))

    (jvp, lin, hvp, jvp_x), (want, _, hvp0, want_x) = derivatives(True), derivatives(False)
    _close((jvp, lin, jvp_x), (want, want, want_x), 1e-10)
    _close(hvp, hvp0, 1e-9)


def test_check_grads_through_the_fused_path():
    # the Elman kernel, reversed with lengths; the LSTM (forward) and GRU (reversed) kernels with lengths
    # and resets are checked by tests/test_unroll.py::test_check_grads_float64, on the fused path too
    lengths = jnp.array([6, 3])
    for name in ("elman_tanh",):
        cell = CELLS[name]
        params = _params(cell, F64)
        xs, carry = _data(cell, params, (2,), F64)
        check_grads(  # jitted: each derivative is compiled once, not dispatched op by op per probe
            jax.jit(lambda p, x, c, cell=cell: _loss(cell, p, x, c, lengths, reverse=True, fused=True)),
            (params, xs, carry),
            order=2,
            modes=("fwd", "rev"),
        )


def test_vmap_over_params():
    cell = CELLS["lstm"]
    params = jax.vmap(lambda k: cell.init(k, I, F64))(jax.random.split(jax.random.PRNGKey(0), 3))
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, 2, I), F64)

    def f(fused, p):
        return _loss(cell, p, xs, None, None, reverse=False, fused=fused)

    got = jax.jit(jax.vmap(jax.value_and_grad(functools.partial(f, True))))(params)
    want = jax.jit(jax.vmap(jax.value_and_grad(functools.partial(f, False))))(params)
    _close(got, want, 1e-10)


def test_hessian_free_runs_on_the_fused_lstm():
    cell = CELLS["lstm"]
    params = {"cell": _params(cell, F64), "w": jnp.ones((H, 1), F64) * 0.1}
    xs = jax.random.normal(jax.random.PRNGKey(3), (T, 8, I), F64)
    targets = jnp.sum(xs[:2, :, 0], axis=0)

    def forward(fused):
        def f(p, batch):
            final, ys = jr.unroll(cell, p["cell"], batch[0], fused=fused)
            return final.h @ p["w"], ys

        return f

    loss = lambda out, batch: 0.5 * jnp.mean((out[:, 0] - batch[1]) ** 2)
    results = []
    for fused in (True, False):
        opt = jr.hessian_free(forward(fused), loss, damping=1.0, max_cg_iters=5)
        p, state = params, opt.init(params)
        for _ in range(2):
            p, state, info = jax.jit(opt.update)(p, state, (xs, targets))
        results.append((p, info.loss))
    _close(results[0], results[1], 1e-8)
    assert results[0][1] < loss(forward(True)(params, (xs, targets))[0], (xs, targets))


# --------------------------------------------------------------------------------------------------
# what the kernel does and does not take


def test_the_backward_loop_holds_only_the_recurrent_chain():
    """BPTT through the fused LSTM: no loop of the gradient computes a weight-shaped product (the
    reference's backward loop accumulates dW_hh and dW_xh step by step), and the backward loop does
    one product per step, dA_t @ W_hh^T."""
    cell = CELLS["lstm"]
    params = _params(cell, F32)
    xs, _ = _data(cell, params, (2,), F32)
    weight_shapes = {tuple(params["W_hh"].shape), tuple(params["W_xh"].shape)}
    weight_shapes |= {s[::-1] for s in weight_shapes}

    def loops(fused):
        g = jax.grad(lambda p: jnp.sum(jr.unroll(cell, p, xs, fused=fused)[1]))
        found = []

        def visit(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "scan":
                    body = eqn.params["jaxpr"].jaxpr
                    dots = [e for e in body.eqns if e.primitive.name == "dot_general"]
                    found.append((eqn.params["reverse"], [tuple(e.outvars[0].aval.shape) for e in dots]))
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    visit(sub)

        visit(jax.make_jaxpr(g)(params).jaxpr)
        return found

    fused = loops(True)
    assert len(fused) == 2  # the forward scan and the transposed tangent scan
    backward = [shapes for reverse, shapes in fused if reverse]
    assert backward == [[(2, H)]]  # dh_{t-1} = dA_t @ W_hh^T, nothing else
    assert not any(s in weight_shapes for _, shapes in fused for s in shapes)
    assert any(s in weight_shapes for _, shapes in loops(False) for s in shapes)


@pytest.mark.parametrize(
    "cell, dtype, reason",
    [
        (jr.lstm(H), jnp.bfloat16, "dtype bfloat16"),
        (jr.gru(H, reset_after=False), jnp.float16, "dtype float16"),
    ],
    ids=["bfloat16", "float16"],
)
def test_declined_options_run_the_reference_scan_and_log_once(cell, dtype, reason, caplog):
    params = cell.init(jax.random.PRNGKey(0), I, dtype)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, 2, I), dtype)
    with caplog.at_level(logging.DEBUG, logger="jaxrnn.kernels"):
        assert not _uses_kernel(cell, params, xs)
        assert not _uses_kernel(cell, params, xs)
    messages = [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    assert len(messages) <= 1  # once per cell and reason in the process (another test may have logged it)
    _close(jr.unroll(cell, params, xs), jr.unroll(cell, params, xs, fused=False), 0)


def test_mixed_dtypes_decline():
    cell = CELLS["lstm"]
    params = cell.init(jax.random.PRNGKey(0), I, F32)
    carry = jax.tree.map(lambda c: c.astype(F64), cell.initial_carry(params, (2,)))
    xs = jnp.ones((T, 2, I), F32)
    assert not _uses_kernel(cell, params, xs, carry=carry)
    assert not _uses_kernel(cell, params, xs.astype(F64))  # inputs wider than the weights
    assert not _uses_kernel(cell, params, xs.astype(jnp.int32))


@pytest.mark.parametrize("name", ["lstm", "gru", "elman_tanh"])
@pytest.mark.parametrize("x_dtype", [jnp.bfloat16, jnp.float16])
def test_narrow_float_inputs_are_cast_up_like_the_reference(name, x_dtype):
    """bfloat16 / float16 inputs with float32 weights: the kernel serves them, as the promotion of
    ``x @ W_xh`` on the reference path would, with the same values and gradients (dL/dxs in x's dtype)."""
    cell = CELLS[name]
    params = _params(cell, F32)
    xs, carry = _data(cell, params, (2,), F32)
    xs = xs.astype(x_dtype)
    lengths = jnp.array([T, 3])
    assert _uses_kernel(cell, params, xs, lengths=lengths)
    got = _value_and_grads(cell, params, xs, carry, lengths, reverse=False, fused=True)
    want = _value_and_grads(cell, params, xs, carry, lengths, reverse=False, fused=False)
    (v, (gp, gx, gc)), (v0, (gp0, gx0, gc0)) = got, want
    assert gx.dtype == gx0.dtype == x_dtype
    _close((v, gp, gc), (v0, gp0, gc0), 1e-5)
    # dL/dxs is computed in float32 and rounded to x's dtype on both paths: equal to one rounding step
    eps = float(jnp.finfo(x_dtype).eps)
    np.testing.assert_allclose(np.asarray(gx, np.float32), np.asarray(gx0, np.float32), rtol=eps, atol=1e-5)


def test_transforms_and_reference_options_fall_back():
    cell = CELLS["lstm"]
    params = _params(cell, F32)
    xs, _ = _data(cell, params, (2,), F32)
    resets = jnp.zeros((T, 2), bool).at[3, 0].set(True)
    assert _uses_kernel(cell, params, xs)
    assert _uses_kernel(cell, params, xs, resets=resets)
    assert not _uses_kernel(cell, params, xs, fused=False)
    assert not _uses_kernel(cell, params, xs, remat=True)
    assert not _uses_kernel(jr.recurrent_dropout(cell, 0.1, jax.random.PRNGKey(0)), params, xs)
    assert not _uses_kernel(jr.truncate(cell, jr.truncation.every(2, T)), params, xs)


@pytest.mark.parametrize("act", [jnp.sin, jr.activations.Activation("softsign", jax.nn.soft_sign)])
def test_a_users_activation_takes_the_kernel(act):
    """Any elementwise activation (its derivative by jax.jvp) runs fused and equals the reference."""
    cell = jr.elman(H, act)
    params = jax.tree.map(lambda a: a.astype(F64), cell.init(jax.random.PRNGKey(0), I))
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, 2, I), F64)
    lengths = jnp.array([T, 3])
    assert _uses_kernel(cell, params, xs)

    def loss(p, fused):
        return jnp.sum(jnp.sin(jr.unroll(cell, p, xs, lengths=lengths, fused=fused)[1]) ** 2)

    both = jax.jit(jax.value_and_grad(loss), static_argnums=1)  # compiled, not op by op
    (v1, g1), (v0, g0) = both(params, True), both(params, False)
    _close(v1, v0, 1e-12)
    _close(g1, g0, 1e-10)


def test_fused_scan_is_the_python_loop():
    """fused_scan directly, with a spec from a cell: the documented loop, values and derivatives."""
    from jaxrnn.kernels.fused import _elman_spec

    spec = _elman_spec(jr.activations.TANH)
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    w = {
        "W_xh": jax.random.normal(k[0], (I, H), F64),
        "b": jnp.linspace(-1, 1, H, dtype=F64),
        "W_hh": jax.random.normal(k[0], (H, H), F64) * 0.5,
    }
    xs = jax.random.normal(k[1], (T, 2, I), F64)
    s0 = jax.random.normal(k[2], (2, H), F64)
    valid = jnp.arange(T)[:, None] < jnp.array([6, 3])

    def loop(w, s0, xs):
        s, out = s0, []
        for t in range(T):
            s = jnp.where(valid[t][:, None], jnp.tanh(xs[t] @ w["W_xh"] + w["b"] + s @ w["W_hh"]), s)
            out.append(s)
        return jnp.stack(out)

    fused = lambda w, s0, xs: fused_scan(spec, w, s0, xs, valid)
    _close(fused(w, s0, xs), loop(w, s0, xs), 1e-12)
    ct = jnp.cos(jnp.arange(T * 2 * H, dtype=F64)).reshape(T, 2, H)
    _close(jax.vjp(fused, w, s0, xs)[1](ct), jax.vjp(loop, w, s0, xs)[1](ct), 1e-12)
    tangents = jax.tree.map(jnp.ones_like, (w, s0, xs))
    _close(jax.jvp(fused, (w, s0, xs), tangents), jax.jvp(loop, (w, s0, xs), tangents), 1e-12)


def test_fused_scan_bad_input():
    from jaxrnn.kernels.fused import _elman_spec

    spec = _elman_spec(jr.activations.TANH)
    w = {"W_xh": jnp.ones((I, H)), "b": jnp.zeros(H), "W_hh": jnp.eye(H)}
    s0, xs = jnp.zeros((2, H)), jnp.ones((T, 2, I))
    with pytest.raises(TypeError, match="fused_scan: spec must be a FusedSpec"):
        fused_scan(None, w, s0, xs)
    with pytest.raises(ValueError, match="fused_scan: w must hold .* missing \\['b'\\]"):
        fused_scan(spec, {"W_xh": w["W_xh"], "W_hh": w["W_hh"]}, s0, xs)
    with pytest.raises(ValueError, match=r"fused_scan: xs must have shape \(T, \*batch, 3\)"):
        fused_scan(spec, w, s0, jnp.ones((T, 2, I + 1)))
    with pytest.raises(ValueError, match="fused_scan: valid must have shape"):
        fused_scan(spec, w, s0, xs, jnp.ones((T, 3), bool))
