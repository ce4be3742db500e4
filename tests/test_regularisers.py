"""Tests for jaxrnn.regularisers: Pascanu et al.'s Omega against a brute-force reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.regularisers import pascanu

T, B, H, I = 5, 3, 4, 2
F64 = jnp.float64
LENGTHS = np.array([5, 2, 0], np.int32)


def _setup(cell, seed=0, dtype=F64):
    k_p, k_x, k_w = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = cell.init(k_p, I, dtype)
    xs = jax.random.normal(k_x, (T, B, I), dtype)
    ws = jax.random.normal(k_w, (T, B, H), dtype)
    return params, xs, lambda ys: jnp.sum(jnp.tanh(ys) * ws)


def _flat(c):
    return np.concatenate([np.asarray(x).reshape(B, -1) for x in jax.tree.leaves(c)], axis=-1)


def _reference(cell, params, xs, loss_fn, lengths=None):
    """States s_{-1}..s_{T-1} and errors dE/ds_k from a plain Python loop (no lax.scan)."""
    s0 = cell.initial_carry(params, (B,))
    valid = np.ones((T, B), bool) if lengths is None else np.arange(T)[:, None] < lengths

    def run(probes):
        s, states, ys = s0, [s0], []
        for t in range(T):
            new = jax.tree.map(
                jnp.add, cell.step(params, s, xs[t]), jax.tree.map(lambda p, t=t: p[t], probes)
            )
            v = jnp.asarray(valid[t])
            s = jax.tree.map(lambda n, o, v=v: jnp.where(v.reshape((B,) + (1,) * (n.ndim - 1)), n, o), new, s)
            ys.append(jnp.where(v[:, None], cell.output(new), 0.0))
            states.append(s)
        return loss_fn(jnp.stack(ys)), states

    zeros = jax.tree.map(lambda c: jnp.zeros((T, *c.shape), c.dtype), s0)
    errs, states = jax.jit(jax.grad(run, has_aux=True))(zeros)
    d = np.stack([_flat(jax.tree.map(lambda e, t=t: e[t], errs)) for t in range(T)])  # (T, B, D)
    return states, d, valid


def _brute_force_omega(cell, params, xs, loss_fn, lengths=None, bound=1e-20, squared=True):
    states, d, valid = _reference(cell, params, xs, loss_fn, lengths)
    template = jax.tree.map(lambda c: c[0], states[0])
    leaves, treedef = jax.tree.flatten(template)
    sizes = [int(np.prod(x.shape)) for x in leaves]

    def unflat(v):
        parts = jnp.split(v, np.cumsum(sizes)[:-1])
        return jax.tree.unflatten(treedef, [p.reshape(x.shape) for p, x in zip(parts, leaves)])

    def flat_step(v, x):
        new = cell.step(params, unflat(v), x)
        return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(new)])

    s_prev = np.stack([_flat(s) for s in states[:-1]])  # (T, B, D)
    D = s_prev.shape[-1]
    jac = jax.jit(jax.vmap(jax.jacobian(flat_step)))(
        jnp.asarray(s_prev.reshape(T * B, D)), jnp.asarray(xs).reshape(T * B, I)
    )
    jac = np.asarray(jac).reshape(T, B, D, D)  # ds_k/ds_{k-1}: [out, in]
    num = den = 0.0
    for k in range(T):
        for b in range(B):
            dk = d[k, b]
            y = float(dk @ dk)
            if not (valid[k, b] and y >= bound and y > 0):
                continue
            dj = dk @ jac[k, b]
            x = float(dj @ dj)
            r = x / y if squared else np.sqrt(x) / np.sqrt(y)
            num += (r - 1.0) ** 2
            den += 1
    return num / den if den else 0.0


CELLS = {"elman": lambda: jr.elman(H), "lstm": lambda: jr.lstm(H), "gru": lambda: jr.gru(H)}


@pytest.mark.parametrize(
    "name, lengths, squared",
    [("elman", None, True), ("elman", LENGTHS, False), ("lstm", LENGTHS, True), ("gru", None, False)],
)
def test_value_matches_brute_force(name, lengths, squared):
    cell = CELLS[name]()
    params, xs, loss_fn = _setup(cell)
    got = jax.jit(lambda p, x: pascanu(cell, p, x, loss_fn, lengths=lengths, squared=squared))(params, xs)
    want = _brute_force_omega(cell, params, xs, loss_fn, lengths=lengths, squared=squared)
    assert got.dtype == F64
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert want > 1e-3  # a non-trivial check


def test_orthogonal_linear_recurrence_is_zero():
    cell = jr.elman(H, "identity", recurrent_init="orthogonal")
    params, xs, loss_fn = _setup(cell)
    np.testing.assert_allclose(params["W_hh"] @ params["W_hh"].T, np.eye(H), atol=1e-12)
    f = jax.jit(lambda p: (pascanu(cell, p, xs, loss_fn), pascanu(cell, p, xs, loss_fn, squared=False)))
    np.testing.assert_allclose(f(params), 0.0, atol=1e-20)


def test_elman_gradient_is_the_authors_code():
    cell = jr.elman(H, "tanh")
    params, xs, loss_fn = _setup(cell)
    states, d, _ = _reference(cell, params, xs, loss_fn)
    h = np.stack([np.asarray(s) for s in states[1:]])  # h_1..h_T (post-activation), constants
    fp = 1.0 - h**2
    y = np.sum(d**2, -1)

    def omega_code(W):  # RNN.py: tmp_x = ||(d_ht[1:] * (1 - h^2)) W_hh^T||^2, tmp_y = ||d_ht[1:]||^2
        tmp_x = jnp.sum(((d * fp) @ W.T) ** 2, -1)
        term = (tmp_x / y - 1.0) ** 2
        return jnp.sum(jnp.mean(term, 1)) / jnp.sum(jnp.mean(jnp.ones_like(term), 1))

    grads = jax.jit(jax.grad(lambda p: pascanu(cell, p, xs, loss_fn)))(params)
    np.testing.assert_allclose(grads["W_hh"], jax.grad(omega_code)(params["W_hh"]), rtol=1e-10, atol=1e-14)
    assert np.all(np.asarray(grads["W_xh"]) == 0.0) and np.all(np.asarray(grads["b"]) == 0.0)
    assert np.abs(np.asarray(grads["W_hh"])).max() > 1e-6


def test_lstm_gradient_holds_errors_and_states_constant():
    cell = jr.lstm(H)
    params, xs, loss_fn = _setup(cell)
    lengths = LENGTHS
    states, d, valid = _reference(cell, params, xs, loss_fn, lengths)
    d_tree = [
        jr.LSTMCarry(jnp.asarray(d[k, :, :H]), jnp.asarray(d[k, :, H:])) for k in range(T)
    ]  # flattened as (h, c)

    def omega_ref(p):
        num = den = 0.0
        for k in range(T):
            _, pull = jax.vjp(lambda s, k=k: cell.step(p, s, xs[k]), jax.lax.stop_gradient(states[k]))
            (dj,) = pull(d_tree[k])
            x = jnp.sum(dj.h**2, -1) + jnp.sum(dj.c**2, -1)
            y = np.sum(d[k] ** 2, -1)
            ok = valid[k] & (y > 1e-20)
            num = num + jnp.sum(jnp.where(ok, (x / np.where(ok, y, 1.0) - 1.0) ** 2, 0.0))
            den = den + ok.sum()
        return num / den

    got = jax.jit(jax.grad(lambda p: pascanu(cell, p, xs, loss_fn, lengths=lengths)))(params)
    want = jax.jit(jax.grad(omega_ref))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13), got, want)
    assert all(np.abs(np.asarray(g)).max() > 1e-8 for g in jax.tree.leaves(got))


@pytest.mark.parametrize(
    "name, loss_fn, squared",
    [("elman", lambda ys: 0.0 * ys.sum(), False), ("lstm", lambda ys: jnp.asarray(1.0, F64), True)],
)
def test_zero_error_gives_zero_and_finite_gradients(name, loss_fn, squared):
    cell = CELLS[name]()
    params, xs, _ = _setup(cell)
    f = lambda p: pascanu(cell, p, xs, loss_fn, bound=0.0, squared=squared)  # noqa: E731
    val, grads = jax.jit(jax.value_and_grad(f))(params)
    assert val == 0.0
    for g in jax.tree.leaves(grads):
        assert np.all(np.asarray(g) == 0.0)


def test_lengths_exclude_padding():
    cell = jr.lstm(H)
    params, xs, loss_fn = _setup(cell)
    pad = np.arange(T)[:, None, None] >= LENGTHS[None, :, None]
    f = jax.jit(jax.value_and_grad(lambda p, x, n: pascanu(cell, p, x, loss_fn, lengths=n)))
    base, _ = f(params, xs, LENGTHS)
    for junk in (1e3, np.nan):
        val, g = f(params, jnp.where(pad, junk, xs), LENGTHS)
        np.testing.assert_allclose(val, base, rtol=1e-12)
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))
    # all sequences empty: nothing valid -> 0, zero gradient
    val, g = f(params, xs, np.zeros(B, np.int32))
    assert val == 0.0 and all(np.all(np.asarray(x) == 0.0) for x in jax.tree.leaves(g))


def test_jit_matches_eager_and_batch_dims():
    cell = jr.elman(H)
    params, xs, loss_fn = _setup(cell)
    eager = pascanu(cell, params, xs, loss_fn, lengths=LENGTHS)
    jitted = jax.jit(lambda p, x, n: pascanu(cell, p, x, loss_fn, lengths=n))(params, xs, LENGTHS)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12)
    # two batch dims give the same as one (the loss sums over the batch)
    xs2 = xs.reshape(T, 1, B, I)
    loss2 = lambda ys: loss_fn(ys.reshape(T, B, H))  # noqa: E731
    two = jax.jit(lambda p: pascanu(cell, p, xs2, loss2, lengths=LENGTHS.reshape(1, B)))(params)
    np.testing.assert_allclose(two, eager, rtol=1e-12)


@pytest.mark.parametrize(
    "cell", [jr.mgu(H), jr.ctrnn(H, 0.5), jr.mrnn(H), jr.lstm1997(H)], ids=lambda c: c.name
)
def test_other_cells_no_batch_dims(cell):
    params, xs, _ = _setup(cell)
    x1 = xs[:, 0]  # (T, I): no batch dims
    f = jax.jit(jax.value_and_grad(lambda p: pascanu(cell, p, x1, lambda ys: jnp.sum(jnp.sin(ys)))))
    val, grads = f(params)
    assert np.isfinite(val) and val > 0
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", ["elman", "lstm"])
def test_resets_make_each_segment_a_sequence_of_its_own(name):
    """A packed sequence with a reset gives the Omega of its segments run as separate sequences."""
    cell = CELLS[name]()
    params = cell.init(jax.random.PRNGKey(1), I, F64)
    xs = jax.random.normal(jax.random.PRNGKey(2), (7, 1, I), F64)
    w = jax.random.normal(jax.random.PRNGKey(3), (7, 1, H), F64)
    resets = np.zeros((7, 1), bool)
    resets[3] = True
    # compiled (not dispatched op by op): the packed sequence, its segments side by side ([0, 3) and
    # [3, 7), the first padded to 4 steps), and no reset; values and gradients
    split_x = jnp.concatenate([jnp.pad(xs[:3], ((0, 1), (0, 0), (0, 0))), xs[3:]], axis=1)
    split_w = jnp.concatenate([jnp.pad(w[:3], ((0, 1), (0, 0), (0, 0))), w[3:]], axis=1)
    lengths = np.array([3, 4], np.int32)

    @jax.jit
    def omegas(p):
        packed = pascanu(cell, p, xs, lambda ys: jnp.sum(jnp.tanh(ys) * w), resets=resets)
        split = pascanu(cell, p, split_x, lambda ys: jnp.sum(jnp.tanh(ys) * split_w), lengths=lengths)
        return packed, split, pascanu(cell, p, xs, lambda ys: jnp.sum(jnp.tanh(ys) * w))

    packed, split, nothing = omegas(params)
    np.testing.assert_allclose(packed, split, rtol=1e-10)
    assert abs(float(nothing) - float(packed)) > 1e-6  # the reset matters
    g_packed, g_split = jax.jit(jax.jacrev(lambda p: omegas(p)[:2]))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), g_packed, g_split)


def test_time_axis_gives_the_loss_ys_in_the_callers_layout():
    cell = jr.gru(H)
    params, xs, loss_fn = _setup(cell)
    want = pascanu(cell, params, xs, loss_fn, lengths=LENGTHS)
    got = pascanu(
        cell,
        params,
        jnp.moveaxis(xs, 0, 1),
        lambda ys: loss_fn(jnp.moveaxis(ys, 1, 0)),
        lengths=LENGTHS,
        time_axis=1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="pascanu: resets must have the shape"):
        pascanu(cell, params, xs, loss_fn, resets=np.zeros((T, B + 1), bool))


def test_bad_inputs_name_the_argument():
    cell = jr.elman(H)
    params, xs, loss_fn = _setup(cell)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        pascanu(cell, params, xs, lambda ys: ys.sum(0))
    with pytest.raises(TypeError, match="loss_fn must return a real floating"):
        pascanu(cell, params, xs, lambda ys: jnp.sum(ys > 0))
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        pascanu(cell, params, xs, 3.0)
    with pytest.raises(ValueError, match="pascanu: bound must be a finite real number >= 0"):
        pascanu(cell, params, xs, loss_fn, bound=-1.0)
    with pytest.raises(ValueError, match="pascanu: xs must have shape"):
        pascanu(cell, params, xs[..., :1], loss_fn)
    with pytest.raises(ValueError, match="pascanu: lengths must have shape"):
        pascanu(cell, params, xs, loss_fn, lengths=np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match="pascanu: carry"):
        pascanu(cell, params, xs, loss_fn, carry=jnp.zeros((B, H + 1), F64))
    with pytest.raises(TypeError, match="pascanu: cell must be a jaxrnn Cell"):
        pascanu("elman", params, xs, loss_fn)
    with pytest.raises(TypeError, match="squared must be a bool"):
        pascanu(cell, params, xs, loss_fn, squared=1)
