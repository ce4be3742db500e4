"""Truncation schedules and the truncate transform, against hand-built truncated graphs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import truncation as tr

F64 = jnp.float64
T, B, I, H = 7, 2, 3, 4


def _setup(cell):
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    params = jax.tree.map(lambda a: a.astype(F64), cell.init(k1, I))
    params = jax.tree.map(lambda a: a + 0.3, params)  # non-zero biases
    xs = jax.random.normal(k2, (T, B, I), F64)
    return params, xs


def _loss(ys):
    return jnp.sum(jnp.sin(ys) ** 2)


def _hand_truncated_loss(cell, params, xs, cuts, lengths=None):
    """A plain Python loop with stop_gradient at the cuts: the graph TBPTT back-propagates through."""
    s = cell.initial_carry(params, (B,))
    total = 0.0
    for t in range(T):
        if cuts[t]:
            s = jax.tree.map(jax.lax.stop_gradient, s)
        new = cell.step(params, s, xs[t])
        valid = jnp.ones((B,), bool) if lengths is None else t < lengths
        s = jax.tree.map(lambda n, o, v=valid: jnp.where(v[:, None], n, o), new, s)
        total = total + _loss(jnp.where(valid[:, None], cell.output(new), 0.0))
    return total


def _truncated_loss(cell, params, xs, cuts, lengths=None):
    return _loss(jr.unroll(tr.truncate(cell, cuts), params, xs, lengths=lengths)[1])


CELLS = {"elman": jr.elman(H), "lstm": jr.lstm(H), "gru": jr.gru(H)}
SCHEDULES = {
    "none": np.zeros(T, bool),
    "every2": np.asarray(tr.every(2, T)),
    "every3_offset1": np.asarray(tr.every(3, T, offset=1)),
    "random": np.asarray(tr.random_lengths(jax.random.PRNGKey(1), T, 1, 3)),
}
grad_truncated = jax.jit(jax.grad(_truncated_loss, argnums=(1, 2)), static_argnums=0)


@pytest.mark.parametrize("cell_name", list(CELLS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_gradients_equal_a_hand_built_truncated_graph(cell_name, schedule):
    cell, cuts = CELLS[cell_name], SCHEDULES[schedule]
    params, xs = _setup(cell)
    lengths = jnp.array([T, 4])
    want = jax.grad(_hand_truncated_loss, argnums=(1, 2))(cell, params, xs, cuts, lengths)
    got = grad_truncated(cell, params, xs, jnp.asarray(cuts), lengths)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), got, want)
    # values are untouched by the cuts
    np.testing.assert_allclose(
        _truncated_loss(cell, params, xs, jnp.asarray(cuts), lengths),
        _loss(jr.unroll(cell, params, xs, lengths=lengths)[1]),
        rtol=1e-12,
    )


def test_no_cuts_is_full_bptt():
    cell = CELLS["lstm"]
    params, xs = _setup(cell)
    full = jax.grad(lambda p: _loss(jr.unroll(cell, p, xs)[1]))(params)
    got = jax.grad(lambda p: _truncated_loss(cell, p, xs, tr.no_cuts(T)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), got, full)


def test_a_final_loss_sees_only_the_last_window():
    cell = CELLS["elman"]
    params, xs = _setup(cell)

    def final_loss(xs):
        final, _ = jr.unroll(tr.truncate(cell, tr.every(3, T)), params, xs)
        return jnp.sum(cell.output(final))  # the carry is the wrapped cell's

    g = jax.grad(final_loss)(xs)
    assert np.all(g[:6] == 0.0)  # cuts at 3 and 6: only step 6 reaches the loss
    assert np.all(np.abs(g[6]) > 0)


def test_resets_restart_the_schedule():
    """After a reset at step 3 of sequence 1, its schedule starts again: every(2) cuts at its steps
    3 + 2 and 3 + 4 (local indices 2 and 4), not at the global 4 and 6."""
    cell = CELLS["elman"]
    params, xs = _setup(cell)
    resets = jnp.zeros((T, B), bool).at[3, 1].set(True)
    cuts = tr.every(2, T)
    got = jax.grad(lambda p: _loss(jr.unroll(tr.truncate(cell, cuts), p, xs, resets=resets)[1]))(params)

    def hand(p):
        total = 0.0
        for b in range(B):
            s = cell.initial_carry(p, ())
            local = 0
            for t in range(T):
                if resets[t, b]:
                    s, local = cell.initial_carry(p, ()), 0
                if cuts[local]:
                    s = jax.lax.stop_gradient(s)
                s = cell.step(p, s, xs[t, b])
                total = total + _loss(cell.output(s))
                local += 1
        return total

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), got, jax.grad(hand)(params)
    )
    final, _ = jr.unroll(tr.truncate(cell, cuts), params, xs, resets=resets)
    assert jax.tree.structure(final) == jax.tree.structure(cell.initial_carry(params, (B,)))


def test_schedules():
    np.testing.assert_array_equal(tr.every(3, 8), [0, 0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(tr.every(3, 8, offset=1), [0, 1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(tr.every(10, 4), [0, 0, 0, 0])
    np.testing.assert_array_equal(tr.no_cuts(3), [0, 0, 0])
    for seed in range(5):
        cuts = np.asarray(
            jax.jit(tr.random_lengths, static_argnums=(1, 2, 3))(jax.random.PRNGKey(seed), 50, 3, 6)
        )
        starts = np.concatenate([[0], np.flatnonzero(cuts)])
        gaps = np.diff(starts)
        assert not cuts[0] and np.all((gaps >= 3) & (gaps <= 6)), gaps


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: tr.every(0, 5), ValueError, "k"),
        (lambda: tr.every(2.5, 5), TypeError, "k"),
        (lambda: tr.every(2, 0), ValueError, "length"),
        (lambda: tr.random_lengths(jax.random.PRNGKey(0), 5, 3, 2), ValueError, "k_max"),
        (lambda: tr.random_lengths(jax.random.PRNGKey(0), 5, 0, 2), ValueError, "k_min"),
        (lambda: tr.truncate(jr.elman(2), jnp.zeros((4,), jnp.int32)), ValueError, "cuts"),
        (lambda: tr.truncate(jr.elman(2), jnp.zeros((4, 2), bool)), ValueError, "cuts"),
        (lambda: tr.truncate(jr.elman, tr.every(2, 4)), TypeError, "cell"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_unroll_refuses_a_sequence_longer_than_the_schedule():
    cell = jr.elman(H)
    params, xs = _setup(cell)
    short = tr.truncate(cell, tr.every(2, T - 2))
    assert short.step_limit == T - 2 and short.data["cell"] == cell and short.kind == "truncate"
    with pytest.raises(ValueError, match="unroll: the truncation schedule of truncate.elman. covers 5 steps"):
        jr.unroll(short, params, xs)
    resets = np.zeros((T, B), bool)
    resets[4] = True  # episodes of at most 4 steps: the schedule is long enough for each
    jr.unroll(short, params, xs, resets=resets)
    jr.unroll(tr.truncate(cell, tr.every(2, T)), params, xs)


# --------------------------------------------------------------------------------------------------
# TBPTT(k1, k2)


def _reference_tbptt_loss(cell, params, xs, carry, k1, k2, lengths):
    """Williams & Peng's TBPTT(k2; k1) graph built by hand: per block, a window from a constant state."""
    valid = [t < lengths for t in range(T)]

    def step(s, t):
        new = cell.step(params, s, xs[t])
        return jax.tree.map(lambda n, o: jnp.where(valid[t][:, None], n, o), new, s), jnp.where(
            valid[t][:, None], cell.output(new), 0.0
        )

    states, s = [], carry
    for t in range(T):
        s, _ = step(s, t)
        states.append(s)
    total = 0.0
    for j in range(-(-T // k1)):
        e = min((j + 1) * k1, T)
        a = max(e - k2, 0)
        s = carry if a == 0 else jax.tree.map(jax.lax.stop_gradient, states[a - 1])
        for t in range(a, e):
            s, y = step(s, t)
            if t >= j * k1:
                total = total + _loss(y)
    return total


def _tbptt_loss(cell, params, xs, carry, k1, k2, lengths):
    return _loss(tr.tbptt(cell, params, xs, k1, k2, carry, lengths=lengths)[1])


grad_tbptt = jax.jit(jax.grad(_tbptt_loss, argnums=(1, 3)), static_argnums=(0, 4, 5))


@pytest.mark.parametrize("cell_name", ["elman", "lstm"])
@pytest.mark.parametrize("k1, k2", [(1, 3), (2, 3), (2, 5), (3, 3), (3, 4), (4, 6)])
def test_tbptt_gradients_equal_the_williams_peng_graph(cell_name, k1, k2):
    cell = CELLS[cell_name]
    params, xs = _setup(cell)
    carry = jax.tree.map(lambda c: c + 0.1, cell.initial_carry(params, (B,)))
    lengths = jnp.array([T, 5])
    got = grad_tbptt(cell, params, xs, carry, k1, k2, lengths)
    want = jax.grad(_reference_tbptt_loss, argnums=(1, 3))(cell, params, xs, carry, k1, k2, lengths)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), got, want)
    full = jax.grad(lambda p: _loss(jr.unroll(cell, p, xs, carry, lengths=lengths)[1]))(params)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(full)))
    assert diff > 1e-6  # truncation changes the gradient here


@pytest.mark.parametrize("lengths", [None, np.array([T, 3], np.int32), np.array([0, 6], np.int32)])
def test_tbptt_values_are_the_unroll(lengths):
    cell = CELLS["gru"]
    params, xs = _setup(cell)
    final, ys = tr.tbptt(cell, params, xs, 2, 3, lengths=lengths)
    want_final, want_ys = jr.unroll(cell, params, xs, lengths=lengths)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(final, want_final, rtol=1e-12, atol=1e-14)
    # time_axis=1 and jit
    f = jax.jit(lambda p, x: tr.tbptt(cell, p, x, 2, 3, lengths=lengths, time_axis=1))
    final1, ys1 = f(params, jnp.moveaxis(xs, 0, 1))
    np.testing.assert_allclose(ys1, jnp.moveaxis(want_ys, 0, 1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(final1, want_final, rtol=1e-12, atol=1e-14)


def test_tbptt_special_cases_equal_every_k_and_full_bptt():
    cell = CELLS["lstm"]
    params, xs = _setup(cell)
    carry = cell.initial_carry(params, (B,))
    lengths = jnp.array([T, T])
    for k in (2, 3):  # TBPTT(k, k) with T a multiple of k: independent blocks = truncate(every(k))
        got = grad_tbptt(cell, params, xs[:6], carry, k, k, lengths - 1)[0]
        want = grad_truncated(cell, params, xs[:6], tr.every(k, 6))[0]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), got, want)
    full = jax.grad(lambda p: _loss(jr.unroll(cell, p, xs)[1]))(params)
    for k1 in (1, 3):  # k2 >= T: every window reaches the start
        got = grad_tbptt(cell, params, xs, carry, k1, T + 1, lengths)[0]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), got, full)


def test_tbptt_check_grads_and_bad_input():
    from jax.test_util import check_grads

    cell = jr.elman(2)
    params = cell.init(jax.random.PRNGKey(0), 2, F64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (5, 2), F64)
    # a truncated gradient is not the derivative of the values; with k2 >= T it is (full BPTT)
    check_grads(lambda p: _loss(tr.tbptt(cell, p, xs, 2, 5)[1]), (params,), order=1, modes=["rev"])
    with pytest.raises(ValueError, match=r"tbptt: k2 must be >= k1=3 \(.*\); got k2=2"):
        tr.tbptt(cell, params, xs, 3, 2)
    with pytest.raises(ValueError, match="tbptt: k1 must be a positive int"):
        tr.tbptt(cell, params, xs, 0, 2)
    with pytest.raises(TypeError, match="tbptt: k2 must be a positive int"):
        tr.tbptt(cell, params, xs, 1, 2.0)
    with pytest.raises(ValueError, match="tbptt: xs must have shape"):
        tr.tbptt(cell, params, xs[:, :1], 1, 2)
    with pytest.raises(ValueError, match="tbptt: lengths must be in"):
        tr.tbptt(cell, params, xs[:, None], 1, 2, lengths=np.array([9], np.int32))


# --------------------------------------------------------------------------------------------------
# chunked truncated BPTT (one update per chunk)


def _chunk_loss(cell):
    def loss_fn(params, carry, chunk):
        xs, targets = chunk
        final, ys = jr.unroll(cell, params["cell"], xs, carry)
        return jnp.mean((ys @ params["w"] - targets) ** 2), final

    return loss_fn


def _chunk_setup(T_long=12):
    import optax

    cell = jr.elman(3)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
    params = {"cell": cell.init(k1, 1, F64), "w": 0.5 * jax.random.normal(k2, (3, 1), F64)}
    xs = jax.random.normal(k3, (T_long, 2, 1), F64)
    targets = jnp.roll(xs, 1, axis=0)  # remember the previous input
    return cell, params, xs, targets, optax.sgd(0.1)


def test_chunked_equals_a_python_loop_of_updates_and_passes_the_carry_on():
    import optax

    cell, params, xs, targets, opt = _chunk_setup()
    loss_fn = _chunk_loss(cell)
    train = jax.jit(tr.chunked(loss_fn, opt, 4))
    carry = cell.initial_carry(params["cell"], (2,))
    p, s, c, losses = train(params, opt.init(params), carry, (xs, targets))

    p_ref, s_ref, c_ref, ref = params, opt.init(params), carry, []
    for i in range(3):
        chunk = (xs[4 * i : 4 * i + 4], targets[4 * i : 4 * i + 4])
        (loss, c_new), g = jax.value_and_grad(loss_fn, has_aux=True)(p_ref, c_ref, chunk)
        u, s_ref = opt.update(g, s_ref, p_ref)
        p_ref, c_ref = optax.apply_updates(p_ref, u), c_new
        ref.append(loss)
    np.testing.assert_allclose(losses, np.array(ref), rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), (p, c), (p_ref, c_ref))
    assert losses.shape == (3,)

    # with a zero learning rate the carry after the chunks is the state after the whole sequence
    frozen = tr.chunked(loss_fn, optax.sgd(0.0), 4)
    _, _, c0, _ = frozen(params, optax.sgd(0.0).init(params), carry, (xs, targets))
    np.testing.assert_allclose(c0, jr.unroll(cell, params["cell"], xs)[0], rtol=1e-12)
    # and resetting the carry at every chunk would give something else
    np.testing.assert_raises(
        AssertionError, np.testing.assert_allclose, c0, jr.unroll(cell, params["cell"], xs[8:])[0]
    )


def test_chunked_trains_on_a_sequence_longer_than_a_chunk():
    import optax

    cell, params, xs, targets, _ = _chunk_setup(T_long=64)
    opt = optax.adam(0.05)
    train = jax.jit(tr.chunked(_chunk_loss(cell), opt, 8))
    state, carry = opt.init(params), cell.initial_carry(params["cell"], (2,))
    first = None
    for _ in range(15):  # epochs over the stream, the carry passed on across chunks and epochs
        params, state, carry, losses = train(params, state, carry, (xs, targets))
        first = losses if first is None else first
    assert float(jnp.mean(losses)) < 0.5 * float(jnp.mean(first))


def test_chunked_bad_input():
    import optax

    cell, params, xs, targets, opt = _chunk_setup()
    carry = cell.initial_carry(params["cell"], (2,))
    train = tr.chunked(_chunk_loss(cell), opt, 5)
    with pytest.raises(
        ValueError, match=r"chunked: the time axis of data \(T=12\) must be a multiple of chunk_size=5"
    ):
        train(params, opt.init(params), carry, (xs, targets))
    with pytest.raises(ValueError, match="one common leading time axis"):
        tr.chunked(_chunk_loss(cell), opt, 4)(params, opt.init(params), carry, (xs, targets[:8]))
    with pytest.raises(ValueError, match="chunked: chunk_size must be a positive int"):
        tr.chunked(_chunk_loss(cell), opt, 0)
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        tr.chunked(_chunk_loss(cell), optax.sgd, 4)
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        tr.chunked("loss", opt, 4)
