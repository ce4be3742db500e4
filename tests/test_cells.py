"""Tests for jaxrnn/cells: every cell factory against an independent plain-numpy reference.

The references below are written from the papers' equations (seeds 000, 002, 003, 004; PyTorch's
GRU for ``reset_after=True``; Sutskever et al. 2011 in its column notation for the mRNN) and never
call ``cell.step`` / ``cell.recur``. Every parameter leaf is replaced by random values so that every
term (biases, peepholes, learned initial states) is exercised.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn import initialisers as inits

H, I, T = 4, 3, 3
F32, F64, BF16 = jnp.float32, jnp.float64, jnp.bfloat16
TOL = {F32: dict(atol=1e-5, rtol=1e-5), F64: dict(atol=1e-12, rtol=1e-12)}


# --------------------------------------------------------------------------------------------------
# plain-numpy references (row convention: x (..., I) @ W (I, out))


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


NP_ACT = {
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "relu": lambda a: np.maximum(a, 0.0),
    "identity": lambda a: a,
}


def ref_elman(act):
    """S-RNN (seed 004): h_t = f(x_t W_xh + h_{t-1} W_hh + b)."""
    f = NP_ACT[act]

    def step(p, h, x):
        return f(x @ p["W_xh"] + h @ p["W_hh"] + p["b"])

    return step, lambda h: h


def ref_ctrnn(alpha):
    """Seed 003: s_t = (1 - a) s_{t-1} + a (W_rec f(s_{t-1}) + b + W_in x_t); y = f(s)."""

    def step(p, s, x):
        return (1.0 - alpha) * s + alpha * (np.tanh(s) @ p["W_hh"] + p["b"] + x @ p["W_xh"])

    return step, np.tanh


def ref_sum_step(p, s, x):
    """Bag-of-words RNN (seed 004): s_i = s_{i-1} + x_i, y_i = s_i."""
    return s + x


def ref_naive_step(p, c, x):
    """Seed 000: c_t = theta c_{t-1} + theta_g g_t (row form), h_t = tanh(c_t)."""
    return c @ p["W_hh"] + x @ p["W_xh"]


def ref_lstm(peepholes):
    """Gers et al. 2000 (+ Gers & Schmidhuber peepholes), gates i, f, g, o."""

    def step(p, carry, x):
        h, c = carry
        n = h.shape[-1]
        a = x @ p["W_xh"] + h @ p["W_hh"] + p["b"]
        a_i, a_f, a_g, a_o = (a[..., k * n : (k + 1) * n] for k in range(4))
        if peepholes:
            a_i = a_i + p["p_i"] * c
            a_f = a_f + p["p_f"] * c
        c_new = sigmoid(a_f) * c + sigmoid(a_i) * np.tanh(a_g)
        if peepholes:
            a_o = a_o + p["p_o"] * c_new
        return (sigmoid(a_o) * np.tanh(c_new), c_new)

    return step, lambda s: s[0]


def ref_lstm1997(block_size):
    """Seed 002: net = W [y; x] + b; c_t = c_{t-1} + g(net_c) * i[block]; y_t = h(c_t) * o[block]."""

    def step(p, carry, x):
        y, c = carry
        n_cells = c.shape[-1]
        n_blocks = n_cells // block_size
        w = np.concatenate([p["W_hh"], p["W_xh"]], axis=0)
        net = np.concatenate([y, x], axis=-1) @ w + p["b"]
        y_new, c_new = np.empty_like(y), np.empty_like(c)
        for j in range(n_blocks):  # explicit per-block loop: one input and one output gate each
            i_j = sigmoid(net[..., j])
            o_j = sigmoid(net[..., n_blocks + n_cells + j])
            for u in range(j * block_size, (j + 1) * block_size):
                c_new[..., u] = c[..., u] + np.tanh(net[..., n_blocks + u]) * i_j
                y_new[..., u] = np.tanh(c_new[..., u]) * o_j
        return (y_new, c_new)

    return step, lambda s: s[0]


def ref_gru_after(p, h, x):
    """PyTorch GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h."""
    n = h.shape[-1]
    wx = [p["W_xh"][:, k * n : (k + 1) * n] for k in range(3)]
    wh = [p["W_hh"][:, k * n : (k + 1) * n] for k in range(3)]
    b = [p["b"][k * n : (k + 1) * n] for k in range(3)]
    r = sigmoid(x @ wx[0] + b[0] + h @ wh[0])
    z = sigmoid(x @ wx[1] + b[1] + h @ wh[1])
    cand = np.tanh(x @ wx[2] + b[2] + r * (h @ wh[2] + p["b_hn"]))
    return (1.0 - z) * cand + z * h


def ref_gru_seed003(p, h, x):
    """Seed 003 verbatim: r = s(W_r [h; x] + b_r), u = s(W_u [h; x] + b_u),
    h~ = tanh(W_h [r*h; x] + b_h), h_t = u h_{t-1} + (1 - u) h~."""
    n = h.shape[-1]
    w = [
        np.concatenate([p["W_hh"][:, k * n : (k + 1) * n], p["W_xh"][:, k * n : (k + 1) * n]])
        for k in range(3)
    ]
    b = [p["b"][k * n : (k + 1) * n] for k in range(3)]
    hx = np.concatenate([h, x], axis=-1)
    r = sigmoid(hx @ w[0] + b[0])
    u = sigmoid(hx @ w[1] + b[1])
    h_tilde = np.tanh(np.concatenate([r * h, x], axis=-1) @ w[2] + b[2])
    return u * h + (1.0 - u) * h_tilde


def ref_mgu(p, h, x):
    """Zhou et al. 2016: f = s(W_f [h; x] + b_f), h~ = tanh(W_h [f*h; x] + b_h), h' = (1-f) h + f h~."""
    n = h.shape[-1]
    wf = np.concatenate([p["W_hh"][:, :n], p["W_xh"][:, :n]])
    wh = np.concatenate([p["W_hh"][:, n:], p["W_xh"][:, n:]])
    f = sigmoid(np.concatenate([h, x], axis=-1) @ wf + p["b"][:n])
    h_tilde = np.tanh(np.concatenate([f * h, x], axis=-1) @ wh + p["b"][n:])
    return (1.0 - f) * h + f * h_tilde


def ref_mrnn(p, h, x):
    """Sutskever et al. 2011, column form: f_t = diag(W_fx x_t) W_fh h_{t-1},
    h_t = tanh(W_hf f_t + W_hx x_t + b), with paper W_fx, W_fh, W_hf, W_hx = jaxrnn's transposes."""
    W_fx, W_fh, W_hf, W_hx = p["W_xf"].T, p["W_hf"].T, p["W_fh"].T, p["W_xh"].T
    f = np.einsum("fi,...i->...f", W_fx, x) * np.einsum("fh,...h->...f", W_fh, h)
    return np.tanh(np.einsum("hf,...f->...h", W_hf, f) + np.einsum("hi,...i->...h", W_hx, x) + p["b"])


def identity_out(s):
    return s


# --------------------------------------------------------------------------------------------------
# the cases


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable  # dtype -> Cell
    ref_step: Callable
    ref_output: Callable
    input_size: int = I
    lstm_like: bool = False


def _simple(name, make, ref, **kw):
    return Case(name, lambda dtype: make(), ref, identity_out, **kw)


CASE_LIST = [
    _simple("elman_tanh", lambda: jr.elman(H, "tanh"), ref_elman("tanh")[0]),
    _simple("elman_sigmoid", lambda: jr.elman(H, "sigmoid"), ref_elman("sigmoid")[0]),
    _simple("elman_relu", lambda: jr.elman(H, "relu"), ref_elman("relu")[0]),
    _simple("elman_identity", lambda: jr.elman(H, "identity"), ref_elman("identity")[0]),
    _simple("irnn", lambda: jr.irnn(H), ref_elman("relu")[0]),
    _simple("np_rnn", lambda: jr.np_rnn(H), ref_elman("relu")[0]),
    Case("ctrnn_alpha", lambda dtype: jr.ctrnn(H, 0.3), *ref_ctrnn(0.3)),
    Case("ctrnn_dt_tau", lambda dtype: jr.ctrnn(H, dt=0.1, tau=0.4), *ref_ctrnn(0.1 / 0.4)),
    Case(
        "accumulator_sum", lambda dtype: jr.accumulator(H, "sum", dtype=dtype), ref_sum_step, identity_out, H
    ),
    Case("accumulator_naive", lambda dtype: jr.accumulator(H, "naive"), ref_naive_step, np.tanh),
    Case("lstm", lambda dtype: jr.lstm(H), *ref_lstm(False), lstm_like=True),
    Case("lstm_peepholes", lambda dtype: jr.lstm(H, peepholes=True), *ref_lstm(True), lstm_like=True),
    Case("lstm_forget_bias", lambda dtype: jr.lstm(H, forget_bias=2.5), *ref_lstm(False), lstm_like=True),
    Case("lstm1997_block1", lambda dtype: jr.lstm1997(H), *ref_lstm1997(1), lstm_like=True),
    Case(
        "lstm1997_block2",
        lambda dtype: jr.lstm1997(H, 2, input_gate_bias=(-1.0, -2.0)),
        *ref_lstm1997(2),
        lstm_like=True,
    ),
    _simple("gru_reset_after", lambda: jr.gru(H), ref_gru_after),
    _simple("gru_reset_before", lambda: jr.gru(H, reset_after=False), ref_gru_seed003),
    _simple("mgu", lambda: jr.mgu(H), ref_mgu),
    _simple("mrnn", lambda: jr.mrnn(H, factor_size=5), ref_mrnn),
    Case(
        "learned_lstm",
        lambda dtype: jr.learned_initial_state(jr.lstm(H)),
        *ref_lstm(False),
        lstm_like=True,
    ),
    _simple("learned_elman", lambda: jr.learned_initial_state(jr.elman(H)), ref_elman("tanh")[0]),
]
CASES = {c.name: c for c in CASE_LIST}
NAMES = list(CASES)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


@functools.cache
def get_cell(name: str, dtype=F32) -> jr.Cell:
    """One Cell object per case (and dtype for the sum accumulator), so jit caches are shared."""
    if name != "accumulator_sum":
        dtype = F32
    return CASES[name].make(jnp.dtype(dtype))


def randn(seed: int, shape, dtype, scale=1.0):
    """``scale * N(0, 1)`` from numpy (no XLA compile per shape, unlike ``jax.random``)."""
    values = scale * np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray(values.astype(np.float64), dtype)


def randomise(tree, seed: int, scale=0.5):
    """Every leaf (an array or a ShapeDtypeStruct) replaced by ``scale * N(0, 1)`` in its dtype."""
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(
        treedef, [randn(seed * 1000 + i, leaf.shape, leaf.dtype, scale) for i, leaf in enumerate(leaves)]
    )


def abstract_init(cell, input_size, dtype):
    """The shapes and dtypes ``cell.init`` gives, traced but never compiled or run."""
    return jax.eval_shape(lambda k: cell.init(k, input_size, dtype=dtype), jax.random.PRNGKey(0))


@functools.cache
def get_params(name: str, dtype=F32):
    """Random parameters (every leaf), cached per case and dtype."""
    return randomise(abstract_init(get_cell(name, dtype), CASES[name].input_size, dtype), _seed(name) % 10**6)


def make_xs(name: str, shape, dtype, seed=1):
    return randn(_seed(name) % 10**6 + seed, (*shape, CASES[name].input_size), dtype)


def to_np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def ref_initial(case: Case, p, batch_shape):
    if "initial_carry" in p:
        return tuple(
            np.broadcast_to(s, (*batch_shape, *s.shape)) for s in jax.tree.leaves(p["initial_carry"])
        )
    z = np.zeros((*batch_shape, H))
    return (z, z) if case.lstm_like else z


def ref_unroll(case: Case, p, xs, carry=None):
    """The reference recurrence over time: numpy loop, float64."""
    s = ref_initial(case, p, xs.shape[1:-1]) if carry is None else carry
    if case.lstm_like:
        s = tuple(s)
    elif isinstance(s, tuple):
        (s,) = s
    ys = []
    for x in xs:
        s = case.ref_step(p, s, x)
        ys.append(case.ref_output(s))
    return s, np.stack(ys)


def assert_close(actual, expected, **tol):
    a_leaves, e_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(a_leaves) == len(e_leaves), (len(a_leaves), len(e_leaves))
    for a, e in zip(a_leaves, e_leaves):
        assert np.shape(a) == np.shape(e)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), **tol)


def leaf_dtypes(tree):
    return {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(tree)}


def eager():
    """The un-jitted path: every primitive dispatched on its own, ``lax.scan`` run as a Python loop.

    (A plain call of ``jr.unroll`` outside ``jax.jit`` still compiles its ``lax.scan``; the compiled
    scan is what the ``jit`` cases test.) Also much cheaper than compiling a program per cell.
    """
    return jax.disable_jit()


def _loss(cell, params, xs):
    final, ys = jr.unroll(cell, params, xs)
    return jnp.sum(ys**2) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))


BATCHES = {"unbatched": (), "B3": (3,), "B2x3": (2, 3)}
JIT_BATCH = BATCHES["B2x3"]


def _step_loop(cell, params, carry, xs):
    """A Python loop of ``cell.step``: the plain per-step path that ``unroll`` must reproduce."""
    s, outs = carry, []
    for t in range(xs.shape[0]):
        s = cell.step(params, s, xs[t])
        outs.append(cell.output(s))
    return s, jnp.stack(outs)


def _jit_run(dtype, all_params, all_xs, all_carry):
    out = {}
    for name in NAMES:
        cell, p, xs_by_batch, c = get_cell(name, dtype), all_params[name], all_xs[name], all_carry[name]
        r = out[name] = {}
        for bid, xs in xs_by_batch.items():  # float64: only B2x3
            s0 = cell.initial_carry(p, BATCHES[bid])
            s1 = cell.step(p, s0, xs[0])
            r[bid] = {"unroll": jr.unroll(cell, p, xs), "s0": s0, "s1": s1, "y1": cell.output(s1)}
        xs = xs_by_batch["B2x3"]
        if dtype == F32:
            r["steps"] = _step_loop(cell, p, cell.initial_carry(p, JIT_BATCH), xs)
            r["bf16"] = jr.unroll(cell, p, xs.astype(BF16))
        else:
            # vmap over axis 1 of (T, 2, 3, I): each inner call has batch (3,)
            r["vmap"] = jax.vmap(lambda x, cell=cell, p=p: jr.unroll(cell, p, x), in_axes=1, out_axes=(0, 1))(
                xs
            )
            r["vmap_step"] = jax.vmap(cell.step, in_axes=(None, 0, 0))(p, c, xs[0])
            # the project/recur split, from a random (non-zero) carry so every recurrent term is live
            r["step_1"] = cell.step(p, c, xs[0])
            r["split_1"] = cell.recur(p, c, cell.project(p, xs[0]))
            r["px_all"] = cell.project(p, xs)  # what unroll does: all T steps in one product
            r["px_each"] = [cell.project(p, xs[t]) for t in range(T)]
            r["unroll_from_c"] = jr.unroll(cell, p, xs, c)
            r["steps_from_c"] = _step_loop(cell, p, c, xs)
    return out


@functools.cache
def jit_results(dtype):
    """Every case under ONE ``jax.jit`` per dtype (compiling a program per cell and test would cost
    minutes): unroll for each batch shape, a Python loop of ``cell.step``, bf16 inputs (float32),
    vmap and the project/recur split (float64). Returns ``(inputs, carries, results)``."""
    all_params = {n: get_params(n, dtype) for n in NAMES}
    batches = BATCHES if dtype == F32 else {"B2x3": JIT_BATCH}
    all_xs = {n: {b: make_xs(n, (T, *shape), dtype) for b, shape in batches.items()} for n in NAMES}
    all_carry = {
        n: randomise(
            jax.eval_shape(lambda p, n=n: get_cell(n, dtype).initial_carry(p, JIT_BATCH), all_params[n]), 3
        )
        for n in NAMES
    }
    return all_xs, all_carry, jax.jit(functools.partial(_jit_run, dtype))(all_params, all_xs, all_carry)


def reference(name, dtype, xs, carry=None):
    if carry is not None:
        carry = to_np(tuple(jax.tree.leaves(carry)))
    return ref_unroll(CASES[name], to_np(get_params(name, dtype)), np.asarray(xs, np.float64), carry)


# --------------------------------------------------------------------------------------------------
# 1. the step and the unroll against the numpy reference, f32 and f64, jit and eager


def _check_run(dtype, ref, unrolled, stepped):
    assert leaf_dtypes((unrolled, stepped)) == {jnp.dtype(dtype)}
    ref_final, ref_ys = ref
    for final, ys in (unrolled, stepped):
        assert_close(ys, ref_ys, **TOL[dtype])
        assert_close(final, ref_final, **TOL[dtype])


@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference_jit_f32(name):
    xs, _, res = jit_results(F32)
    r = res[name]
    _check_run(F32, reference(name, F32, xs[name]["B2x3"]), r["B2x3"]["unroll"], r["steps"])


@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference_jit_f64(name):
    # from the zero carry (unroll only) and from a random carry (unroll and the loop of cell.step)
    xs, carry, res = jit_results(F64)
    r, x = res[name], xs[name]["B2x3"]
    ref_final, ref_ys = reference(name, F64, x)
    final, ys = r["B2x3"]["unroll"]
    assert leaf_dtypes((final, ys)) == {jnp.dtype(F64)}
    assert_close(ys, ref_ys, **TOL[F64])
    assert_close(final, ref_final, **TOL[F64])
    _check_run(F64, reference(name, F64, x, carry[name]), r["unroll_from_c"], r["steps_from_c"])


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference_eager(name, dtype):
    cell, params = get_cell(name, dtype), get_params(name, dtype)
    xs = make_xs(name, (T, 2), dtype)
    with eager():
        unrolled = jr.unroll(cell, params, xs)
        s0 = cell.initial_carry(params, (2,))
        stepped = _step_loop(cell, params, s0, xs)
    assert leaf_dtypes(s0) == {jnp.dtype(dtype)}
    _check_run(dtype, reference(name, dtype, xs), unrolled, stepped)


# --------------------------------------------------------------------------------------------------
# 2. any number of leading batch dims


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("name", NAMES)
def test_batch_shapes(name, batch):
    case, shape = CASES[name], BATCHES[batch]
    xs, _, res = jit_results(F32)
    r, xs = res[name][batch], xs[name][batch]
    leaf_shapes = [(*shape, H)] * (2 if case.lstm_like else 1)

    assert [leaf.shape for leaf in jax.tree.leaves(r["s0"])] == leaf_shapes
    assert_close(r["s0"], ref_initial(case, to_np(get_params(name)), shape), atol=0, rtol=0)
    assert [leaf.shape for leaf in jax.tree.leaves(r["s1"])] == leaf_shapes
    assert r["y1"].shape == (*shape, H)
    ref_s1, ref_y1 = reference(name, F32, xs[:1])
    assert_close(r["s1"], ref_s1, **TOL[F32])
    assert_close(r["y1"], ref_y1[0], **TOL[F32])

    final, ys = r["unroll"]
    assert ys.shape == (T, *shape, H)
    assert [leaf.shape for leaf in jax.tree.leaves(final)] == leaf_shapes
    ref_final, ref_ys = reference(name, F32, xs)
    assert_close(ys, ref_ys, **TOL[F32])
    assert_close(final, ref_final, **TOL[F32])


# --------------------------------------------------------------------------------------------------
# 3. dtypes (f32 -> f32 and f64 -> f64 are asserted above): bf16 inputs with f32 params give f32


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_f32_params(name):
    cell, params = get_cell(name), get_params(name)
    xs, _, res = jit_results(F32)
    xs16 = xs[name]["B2x3"].astype(BF16)
    # the reference sees the bf16-rounded inputs exactly (bf16 -> f64 is exact)
    ref_final, ref_ys = reference(name, F32, xs16.astype(F32))
    final, ys = res[name]["bf16"]  # under jit
    assert leaf_dtypes((final, ys)) == {jnp.dtype(F32)}
    assert_close(ys, ref_ys, **TOL[F32])
    assert_close(final, ref_final, **TOL[F32])
    with eager():
        s1 = cell.step(params, cell.initial_carry(params, JIT_BATCH), xs16[0])
        y1 = cell.output(s1)
    assert leaf_dtypes((s1, y1)) == {jnp.dtype(F32)}
    assert_close(y1, ref_ys[0], **TOL[F32])


# --------------------------------------------------------------------------------------------------
# 4. autodiff: finite-difference-checked gradients, vmap, jvp


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_batched_call(name):
    xs, carry, res = jit_results(F64)
    r, x = res[name], xs[name]["B2x3"]
    batched = r["B2x3"]["unroll"]
    assert_close(r["vmap"], batched, **TOL[F64])
    assert_close(r["vmap"], reference(name, F64, x), **TOL[F64])
    ref_s1, _ = reference(name, F64, x[:1], carry[name])
    assert_close(r["vmap_step"], ref_s1, **TOL[F64])


@pytest.mark.parametrize("name", NAMES)
def test_check_grads(name):
    """``check_grads(order=2, modes=("fwd", "rev"))`` in float64 on ``sum(ys**2) + sum(final**2)`` of
    ``jr.unroll`` (T=3, B=2, I=3, H=4), w.r.t. params and xs."""
    cell, params = get_cell(name, F64), get_params(name, F64)
    xs = make_xs(name, (T, 2), F64)
    # eager: compiling the ~14 derivative programs check_grads builds, per cell, would take minutes
    with eager():
        check_grads(functools.partial(_loss, cell), (params, xs), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", NAMES)
def test_jvp_matches_finite_differences(name):
    cell, params = get_cell(name, F64), get_params(name, F64)
    xs = make_xs(name, (3, 2), F64)
    t_params, t_xs = randomise(params, 7, 1.0), randn(8, xs.shape, F64)

    def f(p, x):
        return jr.unroll(cell, p, x)

    eps = 1e-6

    def shifted(sign):
        return f(jax.tree.map(lambda a, t: a + sign * eps * t, params, t_params), xs + sign * eps * t_xs)

    with eager():
        primal, tangent = jax.jvp(f, (params, xs), (t_params, t_xs))
        fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), shifted(1.0), shifted(-1.0))
    assert_close(primal, ref_unroll(CASES[name], to_np(params), np.asarray(xs)), **TOL[F64])
    assert_close(tangent, fd, rtol=1e-6, atol=1e-8)
    assert max(np.max(np.abs(leaf)) for leaf in jax.tree.leaves(tangent)) > 1e-3


# --------------------------------------------------------------------------------------------------
# 5. project/recur split; the pre-projected unroll equals the per-step path


@pytest.mark.parametrize("name", NAMES)
def test_project_recur_split(name):
    xs, carry, res = jit_results(F64)
    r, x = res[name], xs[name]["B2x3"]
    assert_close(r["step_1"], r["split_1"], atol=0, rtol=0)
    ref_s1, _ = reference(name, F64, x[:1], carry[name])
    assert_close(r["step_1"], ref_s1, **TOL[F64])
    for t in range(T):
        assert_close(jax.tree.map(lambda a, t=t: a[t], r["px_all"]), r["px_each"][t], **TOL[F64])
    # unroll (projects all T steps before the scan) == Python loop of cell.step, from the same carry
    (final_u, ys_u), (final_s, ys_s) = r["unroll_from_c"], r["steps_from_c"]
    assert_close(ys_u, ys_s, **TOL[F64])
    assert_close(final_u, final_s, **TOL[F64])


# --------------------------------------------------------------------------------------------------
# 6. cell-specific facts


def test_lstm_forget_bias_only_at_init(key):
    w_init = dict(kernel_init=inits.normal(1.0), recurrent_init=inits.normal(1.0))
    p0 = jr.lstm(H, forget_bias=0.0, **w_init).init(key, I, dtype=F64)
    p1 = jr.lstm(H, forget_bias=2.5, **w_init).init(key, I, dtype=F64)
    expected_b = np.zeros(4 * H)
    expected_b[H : 2 * H] = 2.5
    np.testing.assert_array_equal(p1["b"] - p0["b"], expected_b)
    np.testing.assert_array_equal(p1["W_xh"], p0["W_xh"])
    np.testing.assert_array_equal(p1["W_hh"], p0["W_hh"])
    np.testing.assert_array_equal(p0["b"], np.zeros(4 * H))
    # forward pass: no hidden constant. With b = 0 the step equals the reference without any bias.
    p = randomise(p1, 5)
    p["b"] = jnp.zeros_like(p["b"])
    carry = jr.LSTMCarry(*randomise(tuple(jr.lstm(H).initial_carry(p, (2,))), 6))
    x = randn(8, (2, I), F64)
    ref = ref_lstm(False)[0](to_np(p), to_np(tuple(carry)), np.asarray(x))
    for fb in (0.0, 2.5, -7.0):
        assert_close(jr.lstm(H, forget_bias=fb).step(p, carry, x), ref, **TOL[F64])


def _lstm1997_open_gates(block_size):
    n_blocks = H // block_size
    cell = jr.lstm1997(H, block_size)
    p = {k: np.array(v) for k, v in randomise(abstract_init(cell, I, F64), 11).items()}
    p["W_hh"][:] = 0.0  # no h feedback: the gates see the input only
    p["W_xh"][:, :n_blocks] = 0.0
    p["b"][:n_blocks] = 4.0  # input gates open: sigma(4) = 0.98
    return cell, jax.tree.map(jnp.asarray, p), n_blocks


@pytest.mark.parametrize("block_size", [1, 2])
def test_lstm1997_cell_state_grows_linearly(block_size):
    cell, p, n = _lstm1997_open_gates(block_size)
    x = jnp.abs(randn(12, (I,), F64))  # constant positive stream
    xs = jnp.broadcast_to(x, (8, 2, I))
    with eager():
        final, _ = jr.unroll(cell, p, xs)
        s = cell.initial_carry(p, (2,))
        cs = [s.c]
        for t in range(8):
            s = cell.step(p, s, xs[t])
            cs.append(s.c)
    dc = np.diff(np.stack(cs), axis=0)
    # the increment is the same at every step and equals i * g(net_c) computed by hand
    a = np.asarray(x) @ np.asarray(p["W_xh"]) + np.asarray(p["b"])
    i = np.repeat(sigmoid(a[:n]), block_size)
    expected = i * np.tanh(a[n : n + H])
    np.testing.assert_allclose(dc, np.broadcast_to(expected, dc.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.c, np.broadcast_to(8 * expected, (2, H)), rtol=1e-12)
    assert np.all(i > 0.95)


def test_lstm1997_block_cells_share_gates():
    block_size, n = 2, H // 2
    cell = jr.lstm1997(H, block_size)
    p = randomise(abstract_init(cell, I, F64), 13)
    x = randn(14, (I,), F64)
    s1 = cell.step(p, cell.initial_carry(p), x)  # from c = h = 0: c = i * g, h = o * tanh(c)
    a = np.asarray(x) @ np.asarray(p["W_xh"]) + np.asarray(p["b"])
    i_eff = np.asarray(s1.c) / np.tanh(a[n : n + H])
    o_eff = np.asarray(s1.h) / np.tanh(np.asarray(s1.c))
    np.testing.assert_allclose(i_eff, np.repeat(sigmoid(a[:n]), block_size), rtol=1e-12)
    np.testing.assert_allclose(o_eff, np.repeat(sigmoid(a[n + H :]), block_size), rtol=1e-12)
    assert abs(i_eff[0] - i_eff[2]) > 1e-6  # different blocks, different gates


def test_lstm1997_init_layout_and_input_gate_bias(key):
    cell = jr.lstm1997(6, 2, input_gate_bias=(-1.0, -3.0, -6.0))
    p = cell.init(key, I, dtype=F32)
    assert p["W_xh"].shape == (I, 3 + 6 + 3)
    assert p["W_hh"].shape == (6, 3 + 6 + 3)
    np.testing.assert_array_equal(p["b"], np.array([-1.0, -3.0, -6.0] + [0.0] * 9, np.float32))
    cell_scalar = jr.lstm1997(6, 3, input_gate_bias=-2.0, kernel_init="zeros", recurrent_init="zeros")
    p_scalar = cell_scalar.init(key, I, dtype=F32)
    np.testing.assert_array_equal(p_scalar["b"], np.array([-2.0, -2.0] + [0.0] * 8, np.float32))


def test_gru_reset_placement():
    p = randomise(abstract_init(jr.gru(H), I, F64), 15)
    p["b_hn"] = jnp.zeros_like(p["b_hn"])  # with b_hn = 0 the two forms differ only in where r acts
    p_before = {k: v for k, v in p.items() if k != "b_hn"}
    h = randn(16, (2, H), F64)
    x = randn(17, (2, I), F64)
    after = jr.gru(H).step(p, h, x)
    before = jr.gru(H, reset_after=False).step(p_before, h, x)
    assert np.max(np.abs(np.asarray(after) - np.asarray(before))) > 1e-3
    assert_close(before, ref_gru_seed003(to_np(p_before), np.asarray(h), np.asarray(x)), **TOL[F64])
    assert_close(after, ref_gru_after(to_np(p), np.asarray(h), np.asarray(x)), **TOL[F64])
    assert "b_hn" not in abstract_init(jr.gru(H, reset_after=False), I, F32)


def test_accumulator_sum_is_cumsum_and_order_invariant():
    cell = jr.accumulator(H, "sum", dtype=F64)
    params = cell.init(jax.random.PRNGKey(0), H, dtype=F64)
    assert params == {}
    xs = randn(18, (7, 2, H), F64)
    perm = np.random.default_rng(0).permutation(7)
    with eager():
        final, ys = jr.unroll(cell, params, xs)
        final_perm, _ = jr.unroll(cell, params, xs[perm])
    np.testing.assert_allclose(ys, np.cumsum(np.asarray(xs), axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final_perm, final, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final, np.asarray(xs).sum(axis=0), rtol=1e-12, atol=1e-12)


def test_naive_accumulator_with_identity_just_sums(key):
    cell = jr.accumulator(H, "naive")
    params = cell.init(key, I, dtype=F64)
    np.testing.assert_array_equal(params["W_hh"], np.eye(H))  # identity at init: theta = I
    assert set(params) == {"W_xh", "W_hh"}
    params["W_xh"] = randn(19, (I, H), F64)
    xs = randn(20, (6, 2, I), F64)
    with eager():
        final, ys = jr.unroll(cell, params, xs)
    c_T = np.einsum("tbi,ih->bh", np.asarray(xs), np.asarray(params["W_xh"]))
    np.testing.assert_allclose(final, c_T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ys[-1], np.tanh(c_T), rtol=1e-12, atol=1e-12)


def test_ctrnn_alpha_one_is_vanilla_rnn():
    cell = jr.ctrnn(H, 1.0)
    p = randomise(abstract_init(cell, I, F64), 21)
    s = randn(22, (2, H), F64)
    x = randn(23, (2, I), F64)
    pn = to_np(p)
    expected = np.tanh(np.asarray(s)) @ pn["W_hh"] + pn["b"] + np.asarray(x) @ pn["W_xh"]
    assert_close(cell.step(p, s, x), expected, **TOL[F64])
    assert_close(cell.output(s), np.tanh(np.asarray(s)), **TOL[F64])
    # dt/tau and alpha = dt/tau give the same cell
    assert_close(jr.ctrnn(H, dt=0.2, tau=0.8).step(p, s, x), jr.ctrnn(H, 0.25).step(p, s, x), **TOL[F64])


def test_irnn_and_np_rnn_init(key):
    p = jr.irnn(50).init(key, 200, dtype=F64)
    np.testing.assert_array_equal(p["W_hh"], np.eye(50))
    np.testing.assert_array_equal(p["b"], np.zeros(50))
    np.testing.assert_allclose(np.std(np.asarray(p["W_xh"])), 0.001, rtol=0.05)
    p_gain = jr.irnn(5, gain=0.5).init(key, 3, dtype=F32)
    np.testing.assert_array_equal(p_gain["W_hh"], 0.5 * np.eye(5, dtype=np.float32))

    q = jr.np_rnn(6).init(key, 3, dtype=F64)
    w = np.asarray(q["W_hh"])
    np.testing.assert_allclose(w, w.T, atol=1e-15)
    ev = np.linalg.eigvalsh(w)
    assert ev.min() > 0
    np.testing.assert_allclose(ev.max(), 1.0, atol=1e-12)
    np.testing.assert_array_equal(q["b"], np.zeros(6))


def test_learned_initial_state_params_and_broadcast(key):
    for inner in (jr.lstm(H), jr.elman(H)):
        cell = jr.learned_initial_state(inner, init=inits.normal(1.0))
        p = cell.init(key, I, dtype=F32)
        assert "initial_carry" in p
        template = inner.initial_carry(p, ())
        assert jax.tree.structure(p["initial_carry"]) == jax.tree.structure(template)
        assert all(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(p["initial_carry"]))
        s0 = cell.initial_carry(p, (2, 3))
        for leaf, learned in zip(jax.tree.leaves(s0), jax.tree.leaves(p["initial_carry"])):
            assert leaf.shape == (2, 3, H)
            assert leaf.dtype == jnp.float32
            np.testing.assert_array_equal(leaf, np.broadcast_to(learned, (2, 3, H)))
        assert cell.name == f"learned_initial_state({inner.name})"
    # default init: zeros, so the wrapped cell starts where the plain one does
    p0 = jr.learned_initial_state(jr.elman(H)).init(key, I, dtype=F32)
    np.testing.assert_array_equal(p0["initial_carry"], np.zeros(H, np.float32))


LEARNED = ["learned_lstm", "learned_elman"]


def _learned_loss(cell, p, x):
    final, ys = jr.unroll(cell, p, x)
    return jnp.sum(ys**2) + jnp.sum(jax.tree.leaves(final)[0] ** 2)


@functools.cache
def learned_grads():
    """For both learned-state cells in one jit: dL/ds0 of the batched loss, the same per example
    (unbatched calls, a Python loop over the batch) and the loss at s0 +- eps * direction."""
    eps = 1e-6

    def run(all_params, all_xs, all_dirs):
        out = {}
        for name in LEARNED:
            cell, p, xs, d = get_cell(name), all_params[name], all_xs[name], all_dirs[name]
            grad = jax.grad(functools.partial(_learned_loss, cell))
            shifted = [
                _learned_loss(
                    cell,
                    {
                        **p,
                        "initial_carry": jax.tree.map(
                            lambda a, b, sign=sign: a + sign * eps * b, p["initial_carry"], d
                        ),
                    },
                    xs,
                )
                for sign in (1.0, -1.0)
            ]
            out[name] = {
                "g": grad(p, xs)["initial_carry"],
                "per_example": [grad(p, xs[:, b])["initial_carry"] for b in range(xs.shape[1])],
                "fd": (shifted[0] - shifted[1]) / (2 * eps),
            }
        return out

    all_params = {n: get_params(n, F64) for n in LEARNED}
    all_dirs = {n: randomise(all_params[n]["initial_carry"], 24, 1.0) for n in LEARNED}
    all_xs = {n: make_xs(n, (T, 3), F64) for n in LEARNED}
    return all_dirs, jax.jit(run)(all_params, all_xs, all_dirs)


@pytest.mark.parametrize("name", LEARNED)
def test_learned_initial_state_gradient_sums_over_batch(name):
    dirs, res = learned_grads()
    g, direction = res[name]["g"], dirs[name]
    brute = jax.tree.map(lambda *gs: sum(np.asarray(x) for x in gs), *res[name]["per_example"])
    assert_close(g, brute, **TOL[F64])
    assert all(np.max(np.abs(np.asarray(leaf))) > 1e-3 for leaf in jax.tree.leaves(g))
    # and it is the true derivative: a central difference along a random direction
    dot = sum(np.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
    np.testing.assert_allclose(dot, res[name]["fd"], rtol=1e-6)


def test_param_shapes(key):
    expected = {
        "elman_tanh": {"W_xh": (I, H), "W_hh": (H, H), "b": (H,)},
        "accumulator_naive": {"W_xh": (I, H), "W_hh": (H, H)},
        "lstm": {"W_xh": (I, 4 * H), "W_hh": (H, 4 * H), "b": (4 * H,)},
        "lstm_peepholes": {
            "W_xh": (I, 4 * H),
            "W_hh": (H, 4 * H),
            "b": (4 * H,),
            "p_i": (H,),
            "p_f": (H,),
            "p_o": (H,),
        },
        "gru_reset_after": {"W_xh": (I, 3 * H), "W_hh": (H, 3 * H), "b": (3 * H,), "b_hn": (H,)},
        "gru_reset_before": {"W_xh": (I, 3 * H), "W_hh": (H, 3 * H), "b": (3 * H,)},
        "mgu": {"W_xh": (I, 2 * H), "W_hh": (H, 2 * H), "b": (2 * H,)},
        "mrnn": {"W_xf": (I, 5), "W_hf": (H, 5), "W_fh": (5, H), "W_xh": (I, H), "b": (H,)},
    }
    for name, shapes in expected.items():
        p = jax.eval_shape(lambda k, name=name: get_cell(name).init(k, I), key)
        assert {k: v.shape for k, v in p.items()} == shapes, name
        assert leaf_dtypes(p) == {jnp.dtype(F32)}  # default dtype is float32 even with x64 on
        assert get_cell(name).input_size(p) == I
    np.testing.assert_array_equal(jr.lstm(H, peepholes=True).init(key, I)["p_f"], np.zeros(H))


# --------------------------------------------------------------------------------------------------
# 7. bad input


FACTORIES = {
    "elman": jr.elman,
    "irnn": jr.irnn,
    "np_rnn": jr.np_rnn,
    "ctrnn": lambda h: jr.ctrnn(h, 0.5),
    "accumulator": jr.accumulator,
    "accumulator_naive": lambda h: jr.accumulator(h, "naive"),
    "lstm": jr.lstm,
    "lstm1997": jr.lstm1997,
    "gru": jr.gru,
    "mgu": jr.mgu,
    "mrnn": jr.mrnn,
}


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (0, ValueError),
        (-1, ValueError),
        (2.5, TypeError),
        ("a", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
@pytest.mark.parametrize("factory", list(FACTORIES))
def test_bad_hidden_size(factory, bad, exc):
    with pytest.raises(exc, match="hidden_size"):
        FACTORIES[factory](bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: jr.elman(H, "softsign"),
        lambda: jr.ctrnn(H, 0.5, activation="swish"),
        lambda: jr.mrnn(H, activation="gelu"),
        lambda: jr.lstm1997(H, cell_input_activation="nope"),
        lambda: jr.lstm1997(H, cell_output_activation="nope"),
    ],
)
def test_unknown_activation(make):
    with pytest.raises(ValueError, match="activation"):
        make()


def test_activation_of_the_wrong_type():
    with pytest.raises(TypeError, match="elman: activation must be one of"):
        jr.elman(H, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-0.5), "alpha"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(dt=2.0, tau=1.0), "alpha"),
        (dict(alpha=0.5, dt=0.1, tau=0.2), "alpha"),
        (dict(alpha=0.5, dt=0.1), "alpha"),
        (dict(dt=0.1), "tau"),
        (dict(tau=0.1), "dt"),
        (dict(), "alpha"),
    ],
)
def test_ctrnn_bad_alpha(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jr.ctrnn(H, **kwargs)


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: jr.lstm1997(5, 2), ValueError, "block_size"),
        (lambda: jr.lstm1997(4, 0), ValueError, "block_size"),
        (lambda: jr.lstm1997(4, 1.5), TypeError, "block_size"),
        pytest.param(
            lambda: jr.lstm1997(4, 2, input_gate_bias=(1.0, 2.0, 3.0)),
            ValueError,
            "input_gate_bias",
        ),
        pytest.param(
            lambda: jr.lstm1997(4, 2, input_gate_bias=[[1.0, 2.0]]),
            ValueError,
            "input_gate_bias",
        ),
        (lambda: jr.accumulator(H, "max"), ValueError, "kind"),
        (lambda: jr.mrnn(H, 0), ValueError, "factor_size"),
        (lambda: jr.mrnn(H, 2.5), TypeError, "factor_size"),
        (lambda: jr.elman(H, kernel_init="nope"), ValueError, "kernel_init"),
        (lambda: jr.gru(H, recurrent_init="nope"), ValueError, "recurrent_init"),
        (lambda: jr.lstm(H, bias_init=3), ValueError, "bias_init"),
        (lambda: jr.learned_initial_state(jr.elman), TypeError, "cell"),
        (lambda: jr.learned_initial_state(jr.elman(H), init="nope"), ValueError, "init"),
    ],
    ids=[
        "lstm1997_not_multiple",
        "lstm1997_block0",
        "lstm1997_block_float",
        "lstm1997_bias_len",
        "lstm1997_bias_rank",
        "accumulator_kind",
        "mrnn_factor0",
        "mrnn_factor_float",
        "kernel_init",
        "recurrent_init",
        "bias_init",
        "learned_not_cell",
        "learned_bad_init",
    ],
)
def test_bad_factory_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_accumulator_sum_input_size_must_equal_hidden(key):
    with pytest.raises(ValueError, match="input_size"):
        jr.accumulator(H, "sum").init(key, H + 1)


def test_accumulator_sum_init_dtype_must_match_the_factory(key):
    # no parameters to carry a dtype: a float64 init of a float32 cell would silently stay float32
    with pytest.raises(TypeError, match="dtype"):
        jr.accumulator(H, "sum").init(key, H, dtype=jnp.float64)
    assert jr.accumulator(H, "sum", dtype=jnp.float64).init(key, H, dtype=jnp.float64) == {}


@pytest.mark.parametrize("name", NAMES)
def test_init_rejects_bad_dtype_and_input_size(name, key):
    cell = get_cell(name)
    with pytest.raises(TypeError, match="dtype"):
        cell.init(key, CASES[name].input_size, dtype=jnp.int32)
    with pytest.raises(ValueError, match="input_size"):
        cell.init(key, 0)
    with pytest.raises(TypeError, match="input_size"):
        cell.init(key, 2.5)


def test_hparams_record_the_factory_arguments_and_cells_are_static_jit_arguments(key):
    assert dict(jr.ctrnn(4, 0.25, activation="relu").hparams) == {
        "hidden_size": 4,
        "alpha": 0.25,
        "activation": "relu",
        "kernel_init": "lecun_normal",
        "recurrent_init": "orthogonal",
        "bias_init": "zeros",
    }
    assert jr.irnn(4).kind == "irnn" and dict(jr.irnn(4).hparams) == {
        "hidden_size": 4,
        "gain": 1.0,
        "input_std": 0.001,
    }
    assert jr.irnn(4).form.kind == "elman" and jr.irnn(4).form.activation is jr.activations.RELU
    assert jr.ctrnn(4, 0.25).form.alpha == 0.25 and jr.lstm(4).form is None
    assert jr.gru(4, reset_after=False).hparams["reset_after"] is False
    lis = jr.learned_initial_state(jr.lstm(4, forget_bias=2.0))
    assert lis.data["cell"].hparams["forget_bias"] == 2.0 and lis.kernel is lis.data["cell"].kernel
    with pytest.raises(TypeError):
        jr.lstm(4).hparams["peepholes"] = True  # read-only
    cell = jr.lstm(4)
    params = cell.init(key, 3, dtype=jnp.float32)
    xs = jnp.ones((2, 3), jnp.float32)
    run = jax.jit(lambda c, p, x: jr.unroll(c, p, x)[1], static_argnums=0)
    np.testing.assert_allclose(run(cell, params, xs), jr.unroll(cell, params, xs)[1], rtol=1e-6)
    assert hash(cell) == hash(cell)
