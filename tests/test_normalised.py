"""Batch- and layer-normalised LSTMs against numpy references of Cooijmans et al. and Ba et al.

The carry of both is :class:`~jaxrnn.LSTMCarry` ``(h, c)``; an inference-mode ``bn_lstm`` reads the step
index ``t`` that ``jr.unroll`` supplies (``cell.step(..., t)`` by hand) to pick its statistics row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.cells.base import LSTMCarry
from jaxrnn.cells.normalised import BNStatistics, bn_lstm, bn_statistics, ln_lstm

F32, F64 = jnp.float32, jnp.float64
I, H, MAX = 3, 4, 5
EPS = 1e-5
TOL = {F32: dict(rtol=2e-4, atol=2e-5), F64: dict(rtol=1e-10, atol=1e-12)}
BATCHES = [(4,), (2, 3)]


# --------------------------------------------------------------------------------------------------
# numpy references (float64, one step at a time, statistics by hand)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np(params):
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def _batch_moments(a):
    flat = a.reshape(-1, a.shape[-1])
    n = flat.shape[0]
    mean = flat.sum(0) / n
    return mean, ((flat - mean) ** 2).sum(0) / n


def np_bn_lstm(params, xs, stats=None, max_steps=MAX, eps=EPS, h0=None, c0=None, t0=0):
    """Cooijmans et al. eqs., gate order i, f, g, o. Returns ys, final (h, c) and the batch statistics
    used at each step (training mode) as a list of (mx, vx, mh, vh, mc, vc). Inference mode (``stats``)
    uses row ``min(t0 + t, max_steps - 1)`` at step ``t``."""
    p, xs = _np(params), np.asarray(xs, np.float64)
    batch = xs.shape[1:-1]
    h = np.zeros((*batch, H)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((*batch, H)) if c0 is None else np.asarray(c0, np.float64)
    ys, used = [], []

    def bn(a, m, v, g, b=0.0):
        return b + g * (a - m) / np.sqrt(v + eps)

    for t in range(len(xs)):
        wx, wh = xs[t] @ p["W_xh"], h @ p["W_hh"]
        if stats is None:
            (mx, vx), (mh, vh) = _batch_moments(wx), _batch_moments(wh)
        else:
            k = min(t0 + t, max_steps - 1)
            mx, vx, mh, vh = (np.asarray(s[k], np.float64) for s in stats[:4])
        a = bn(wh, mh, vh, p["gamma_h"]) + bn(wx, mx, vx, p["gamma_x"]) + p["b"]
        a_i, a_f, a_g, a_o = np.split(a, 4, axis=-1)
        c = _sig(a_f) * c + _sig(a_i) * np.tanh(a_g)
        if stats is None:
            mc, vc = _batch_moments(c)
        else:
            mc, vc = (np.asarray(s[k], np.float64) for s in stats[4:])
        h = _sig(a_o) * np.tanh(bn(c, mc, vc, p["gamma_c"], p["beta_c"]))
        ys.append(h)
        used.append((mx, vx, mh, vh, mc, vc))
    return np.stack(ys), (h, c), used


def np_ln_lstm(params, xs, eps=EPS):
    """Ba et al. eqs. 20-22: layer norm over all 4H pre-activations and over the H cells."""
    p, xs = _np(params), np.asarray(xs, np.float64)
    batch = xs.shape[1:-1]
    h, c = np.zeros((*batch, H)), np.zeros((*batch, H))

    def ln(a, g, b):
        m = a.mean(-1, keepdims=True)
        v = ((a - m) ** 2).mean(-1, keepdims=True)
        return b + g * (a - m) / np.sqrt(v + eps)

    ys = []
    for t in range(len(xs)):
        a = (
            ln(h @ p["W_hh"], p["gamma_h"], p["beta_h"])
            + ln(xs[t] @ p["W_xh"], p["gamma_x"], p["beta_x"])
            + p["b"]
        )
        a_i, a_f, a_g, a_o = np.split(a, 4, axis=-1)
        c = _sig(a_f) * c + _sig(a_i) * np.tanh(a_g)
        h = _sig(a_o) * np.tanh(ln(c, p["gamma_c"], p["beta_c"]))
        ys.append(h)
    return np.stack(ys), (h, c)


# --------------------------------------------------------------------------------------------------
# setup


def _params(cell, dtype, seed=0):
    """Initial params with every gain and bias perturbed (so a wrong one shows)."""
    params = cell.init(jax.random.PRNGKey(seed), I, dtype)
    keys = jax.random.split(jax.random.PRNGKey(seed + 100), len(params))
    return {
        k: v + (0.3 * jax.random.normal(kk, v.shape, dtype) if not k.startswith("W") else 0)
        for (k, v), kk in zip(sorted(params.items()), keys)
    }


def _xs(T, batch, dtype, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (T, *batch, I), dtype)


def _random_stats(max_steps, dtype, seed=2):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    shapes = [(max_steps, 4 * H)] * 4 + [(max_steps, H)] * 2
    return BNStatistics(
        *(
            jax.random.normal(kk, s, dtype) if i % 2 == 0 else jax.random.uniform(kk, s, dtype, 0.2, 2.0)
            for i, (kk, s) in enumerate(zip(k, shapes))
        )
    )


BN = bn_lstm(H, MAX)
LN = ln_lstm(H)
unroll_jit = jax.jit(jr.unroll, static_argnums=0)


@jax.jit
def _infer_unroll(params, stats, xs, carry=None):
    return jr.unroll(bn_lstm(H, stats.mean_x.shape[0], statistics=stats), params, xs, carry)


def _run(cell, params, xs, jit):
    """jr.unroll compiled, or eager (every primitive on its own, the scan as a Python loop)."""
    if jit:
        return unroll_jit(cell, params, xs)
    with jax.disable_jit():  # slow per step: a short prefix is enough
        return jr.unroll(cell, params, xs[:3])


def _close(a, b, dtype):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **TOL[dtype])


# --------------------------------------------------------------------------------------------------
# init


def test_init_shapes_gammas_and_forget_bias():
    p = BN.init(jax.random.PRNGKey(0), I)
    assert {k: v.shape for k, v in p.items()} == {
        "W_xh": (I, 4 * H),
        "W_hh": (H, 4 * H),
        "b": (4 * H,),
        "gamma_x": (4 * H,),
        "gamma_h": (4 * H,),
        "gamma_c": (H,),
        "beta_c": (H,),
    }
    assert all(v.dtype == F32 for v in p.values())
    for k in ("gamma_x", "gamma_h", "gamma_c"):
        np.testing.assert_array_equal(p[k], np.full(p[k].shape, 0.1, np.float32))
    np.testing.assert_array_equal(p["beta_c"], 0.0)
    np.testing.assert_array_equal(p["b"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    p64 = bn_lstm(H, MAX, gamma_init=0.5, forget_bias=2.0).init(jax.random.PRNGKey(0), I, F64)
    assert all(v.dtype == F64 for v in p64.values())
    np.testing.assert_array_equal(p64["gamma_c"], 0.5)
    np.testing.assert_array_equal(p64["b"][H : 2 * H], 2.0)

    q = LN.init(jax.random.PRNGKey(0), I, F64)
    for k in ("gamma_x", "gamma_h", "gamma_c"):
        np.testing.assert_array_equal(q[k], 1.0)
    for k in ("beta_x", "beta_h", "beta_c"):
        np.testing.assert_array_equal(q[k], 0.0)
    assert q["gamma_c"].shape == q["beta_c"].shape == (H,) and q["beta_x"].shape == (4 * H,)
    np.testing.assert_array_equal(q["b"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    carry = BN.initial_carry(p, (2, 3))
    assert type(carry) is LSTMCarry and carry.h.shape == carry.c.shape == (2, 3, H)  # no step counter
    np.testing.assert_array_equal(carry.h, 0.0)
    np.testing.assert_array_equal(carry.c, 0.0)
    # inference mode has the same carry: the step index is data that unroll supplies
    infer = bn_lstm(H, 2, statistics=_random_stats(2, F32))
    assert jax.tree.structure(infer.initial_carry(p, (2, 3))) == jax.tree.structure(carry)
    assert jax.tree.structure(LN.initial_carry(q, (2, 3))) == jax.tree.structure(carry)
    assert type(LN.initial_carry(q, ())) is LSTMCarry


def test_hparams_data_kind_and_value_semantics():
    assert BN.kind == "bn_lstm" and BN.name == "bn_lstm" and LN.kind == "ln_lstm"
    assert dict(BN.hparams) == {  # the factory's arguments, nothing else
        "hidden_size": H,
        "max_steps": MAX,
        "gamma_init": 0.1,
        "eps": EPS,
        "forget_bias": 1.0,
        "kernel_init": "lecun_normal",
        "recurrent_init": "orthogonal",
        "bias_init": "zeros",
    }
    assert "family" not in BN.hparams and "inference" not in BN.hparams
    assert dict(LN.hparams) == {
        "hidden_size": H,
        "eps": EPS,
        "forget_bias": 1.0,
        "kernel_init": "lecun_normal",
        "recurrent_init": "orthogonal",
        "bias_init": "zeros",
    }
    stats = _random_stats(2, F32)
    infer = bn_lstm(H, 2, statistics=stats)
    # training mode: no statistics, no step index; inference: the statistics are data
    assert BN.data["statistics"] is None and not BN.uses_step_index
    assert infer.data["statistics"] is not None and infer.uses_step_index
    jax.tree.map(np.testing.assert_array_equal, infer.data["statistics"], stats)
    assert not LN.uses_step_index
    assert repr(BN).startswith("bn_lstm(") and "hidden_size=4" in repr(BN) and "max_steps=5" in repr(BN)
    assert repr(infer).startswith("bn_lstm(") and "statistics=" in repr(infer)
    # equal by hparams and data (statistics by value); a pytree whose leaves are the statistics
    assert BN == bn_lstm(H, MAX) and hash(BN) == hash(bn_lstm(H, MAX)) and BN != bn_lstm(H, MAX + 1)
    assert infer == bn_lstm(H, 2, statistics=jax.tree.map(jnp.array, stats))
    assert infer != bn_lstm(H, 2, statistics=stats._replace(mean_c=stats.mean_c + 1.0))
    assert infer != bn_lstm(H, 2) and LN == ln_lstm(H) and LN != ln_lstm(H, eps=1e-3)
    assert jax.tree.leaves(BN) == []
    assert len(jax.tree.leaves(infer)) == len(BNStatistics._fields)
    assert jax.tree.map(lambda x: x, infer) == infer


# --------------------------------------------------------------------------------------------------
# against the numpy references


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("jit", [True, False])
def test_bn_lstm_training_matches_numpy(dtype, batch, jit):
    params, xs = _params(BN, dtype), _xs(7, batch, dtype)  # 7 > MAX: training mode ignores max_steps
    want, (h, c), _ = np_bn_lstm(params, xs)
    final, ys = _run(BN, params, xs, jit)
    T = len(ys)
    assert ys.dtype == dtype and ys.shape == (T, *batch, H)
    _close(ys, want[:T], dtype)
    if jit:
        _close(final.h, h, dtype)
        _close(final.c, c, dtype)
        assert type(final) is LSTMCarry  # the carry holds no step counter
        assert final.h.dtype == final.c.dtype == dtype
    else:  # cell.step, one step at a time, agrees too; training mode needs no step index
        s = BN.initial_carry(params, batch)
        for t in range(2):
            s = BN.step(params, s, xs[t])
            _close(s.h, want[t], dtype)
            assert type(s) is LSTMCarry


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("batch", BATCHES)
def test_bn_lstm_inference_matches_numpy(dtype, batch):
    params, xs = _params(BN, dtype), _xs(8, batch, dtype)
    stats = _random_stats(3, dtype)  # 8 steps > max_steps = 3: steps 3.. use row 2
    want, (h, c), _ = np_bn_lstm(params, xs, stats=stats, max_steps=3)
    final, ys = _infer_unroll(params, stats, xs)
    _close(ys, want, dtype)
    _close(final.h, h, dtype)
    _close(final.c, c, dtype)
    assert type(final) is LSTMCarry
    # eager, step by step: the step index is given to step (a scalar, or one per sequence)
    cell = bn_lstm(H, 3, statistics=stats)
    s = cell.initial_carry(params, batch)
    for t in range(4):
        s_rows = cell.step(params, s, xs[t], jnp.full(batch, t, jnp.int32))
        s = cell.step(params, s, xs[t], t)
        _close(s.h, want[t], dtype)
        _close(s_rows.h, s.h, dtype)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("batch", [(), *BATCHES])
@pytest.mark.parametrize("jit", [True, False])
def test_ln_lstm_matches_numpy(dtype, batch, jit):
    params, xs = _params(LN, dtype), _xs(6, batch, dtype)
    want, (h, c) = np_ln_lstm(params, xs)
    final, ys = _run(LN, params, xs, jit)
    assert ys.dtype == dtype
    _close(ys, want[: len(ys)], dtype)
    if jit:
        _close(final.h, h, dtype)
        _close(final.c, c, dtype)
    else:
        s = LN.initial_carry(params, batch)
        for t in range(2):
            s = LN.step(params, s, xs[t])
            _close(s.h, want[t], dtype)


# --------------------------------------------------------------------------------------------------
# population statistics


@pytest.mark.parametrize("T", [3, MAX, 7])
def test_bn_statistics_matches_numpy(T):
    params, xs = _params(BN, F64), _xs(T, (2, 3), F64)
    h0 = 0.1 * jax.random.normal(jax.random.PRNGKey(5), (2, 3, H), F64)  # a noisy initial state
    carry = LSTMCarry(h0, jnp.zeros_like(h0))
    _, _, used = np_bn_lstm(params, xs, h0=h0)
    rows = (used + [used[-1]] * MAX)[:MAX]  # steps past T copy step T - 1; past MAX dropped
    got = jax.jit(bn_statistics, static_argnums=0)(BN, params, xs, carry)
    for j, name in enumerate(BNStatistics._fields):
        np.testing.assert_allclose(
            getattr(got, name), np.stack([r[j] for r in rows]), rtol=1e-10, atol=1e-12, err_msg=name
        )


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("T", [3, MAX])
def test_inference_with_the_batch_statistics_reproduces_training(dtype, batch, T):
    params, xs = _params(BN, dtype), _xs(T, batch, dtype)
    train_final, train_ys = unroll_jit(BN, params, xs)
    stats = bn_statistics(BN, params, xs)
    assert stats.mean_x.shape == (MAX, 4 * H) and stats.var_c.shape == (MAX, H)
    assert stats.mean_x.dtype == dtype
    final, ys = _infer_unroll(params, stats, xs)  # statistics traced inside jit
    _close(ys, train_ys, dtype)
    _close(final.c, train_final.c, dtype)
    # and the statistics of an inference cell are the same (bn_statistics always uses training mode)
    stats2 = bn_statistics(bn_lstm(H, MAX, statistics=stats), params, xs)
    jax.tree.map(lambda a, b: _close(a, b, dtype), stats2, stats)


def test_population_statistics_differ_from_batch_statistics():
    """The inference cell is per-example: one row run alone gives the same output as in the batch,
    unlike the training cell."""
    params, xs = _params(BN, F64), _xs(4, (4,), F64)
    stats = bn_statistics(BN, params, xs)
    _, ys = _infer_unroll(params, stats, xs)
    _, ys_alone = _infer_unroll(params, stats, xs[:, :2])
    _close(ys[:, :2], ys_alone, F64)
    _, train_alone = unroll_jit(BN, params, xs[:, :2])
    assert np.max(np.abs(np.asarray(train_alone - ys[:, :2]))) > 1e-3


def test_steps_past_max_steps_reuse_the_last_statistics():
    params, xs = _params(BN, F64), _xs(6, (3,), F64)
    short = _random_stats(2, F64)
    long = jax.tree.map(lambda a: a[jnp.array([0, 1, 1, 1, 1, 1])], short)  # rows 2.. = row 1
    _, ys_short = _infer_unroll(params, short, xs)
    _, ys_long = _infer_unroll(params, long, xs)
    _close(ys_short, ys_long, F64)
    other = long._replace(mean_c=long.mean_c.at[3].add(1.0))  # a different row 3 does matter
    _, ys_other = _infer_unroll(params, other, xs)
    _close(ys_other[:3], ys_short[:3], F64)
    assert np.max(np.abs(np.asarray(ys_other[3] - ys_short[3]))) > 1e-3


def test_inference_cell_is_unbatched_friendly_and_counts_steps():
    params, xs = _params(BN, F32), _xs(4, (), F32)
    stats = _random_stats(MAX, F32)
    cell = bn_lstm(H, MAX, statistics=stats)
    final, ys = jr.unroll(cell, params, xs)
    want, (h, c), _ = np_bn_lstm(params, xs, stats=stats)
    _close(ys, want, F32)
    assert type(final) is LSTMCarry and final.h.shape == (H,)
    _close(final.c, c, F32)
    # The step index is counted by unroll, not kept in the carry: a second chunk continues the
    # statistics rows (2, 3) only with t0 = steps so far; without it, it starts again at row 0.
    f1, y1 = jr.unroll(cell, params, xs[:2])
    f2, y2 = jr.unroll(cell, params, xs[2:], f1, t0=2)
    _close(jnp.concatenate([y1, y2]), ys, F32)
    _close(f2.h, final.h, F32)
    _close(f2.c, final.c, F32)
    _, y_again = jr.unroll(cell, params, xs[2:], f1)
    _close(y_again, np_bn_lstm(params, xs[2:], stats=stats, h0=f1.h, c0=f1.c)[0], F32)
    assert np.max(np.abs(np.asarray(y_again - ys[2:]))) > 1e-3
    # a cell passed to jit as an ordinary argument: its statistics are pytree leaves
    _, ys_jit = jax.jit(lambda cell, p, x: jr.unroll(cell, p, x))(cell, params, xs)
    _close(ys_jit, ys, F32)


def test_inference_step_needs_the_step_index():
    params = _params(BN, F32)
    cell = bn_lstm(H, MAX, statistics=_random_stats(MAX, F32))
    s = cell.initial_carry(params, (2,))
    with pytest.raises(ValueError, match=r"bn_lstm: .*pass t\b"):
        cell.step(params, s, jnp.zeros((2, I), F32))
    with pytest.raises(ValueError, match=r"pass t\b"):
        cell.recur(params, s, jnp.zeros((2, 4 * H), F32))
    # steps past max_steps clamp to the last row: t = MAX - 1 and t = 100 give the same step
    x = _xs(1, (2,), F32)[0]
    _close(cell.step(params, s, x, 100).h, cell.step(params, s, x, MAX - 1).h, F32)
    assert np.max(np.abs(np.asarray(cell.step(params, s, x, 0).h - cell.step(params, s, x, 1).h))) > 1e-4


# --------------------------------------------------------------------------------------------------
# batch (in)dependence, lengths and resets


def test_ln_rows_are_independent_bn_training_rows_are_not():
    xs = _xs(4, (3,), F64)
    xs2 = xs.at[:, 2].add(1.0)  # change only sequence 2
    for cell, depends in [(LN, False), (BN, True)]:
        params = _params(cell, F64)
        ys, ys2 = unroll_jit(cell, params, xs)[1], unroll_jit(cell, params, xs2)[1]
        diff = np.max(np.abs(np.asarray(ys[:, :2] - ys2[:, :2])))
        assert (diff > 1e-4) if depends else (diff == 0.0), (cell.name, diff)


def test_ln_lstm_with_lengths_and_resets():
    params, xs = _params(LN, F64), _xs(6, (3,), F64)
    lengths = jnp.array([6, 2, 0])
    final, ys = unroll_jit(LN, params, xs, lengths=lengths)
    for b, n in enumerate([6, 2, 0]):
        if n:
            want, (h, _) = np_ln_lstm(params, xs[:n, b])
            _close(ys[:n, b], want, F64)
            _close(final.h[b], h, F64)
        else:
            np.testing.assert_array_equal(final.h[b], 0.0)
        np.testing.assert_array_equal(ys[n:, b], 0.0)
    resets = jnp.zeros((6, 3), bool).at[3, 1].set(True)
    _, ys = jr.unroll(LN, params, xs, resets=resets)
    _close(ys[3:, 1], np_ln_lstm(params, xs[3:, 1])[0], F64)
    _close(ys[:, 0], np_ln_lstm(params, xs[:, 0])[0], F64)


def test_bn_lstm_with_lengths_and_resets():
    params, xs = _params(BN, F64), _xs(7, (3,), F64)
    stats = _random_stats(3, F64)
    cell = bn_lstm(H, 3, statistics=stats)
    resets = jnp.zeros((7, 3), bool).at[4, 1].set(True)
    final, ys = jr.unroll(cell, params, xs, resets=resets, lengths=jnp.array([7, 7, 2]))
    assert type(final) is LSTMCarry  # the carry is the LSTM's: no counter in it
    # a reset restarts the statistics index at 0: the segment runs as a fresh sequence, rows 0, 1, 2, 2
    seg_ys, (seg_h, seg_c), _ = np_bn_lstm(params, xs[4:, 1:2], stats=stats, max_steps=3)
    _close(ys[4:, 1], seg_ys[:, 0], F64)
    _close(final.h[1], seg_h[0], F64)
    _close(final.c[1], seg_c[0], F64)
    short_ys, (short_h, _), _ = np_bn_lstm(params, xs[:2, 2:3], stats=stats, max_steps=3)
    _close(ys[:2, 2], short_ys[:, 0], F64)
    _close(final.h[2], short_h[0], F64)
    np.testing.assert_array_equal(ys[2:, 2], 0.0)
    full_ys, (full_h, _), _ = np_bn_lstm(params, xs[:, 0:1], stats=stats, max_steps=3)
    _close(ys[:, 0], full_ys[:, 0], F64)
    _close(final.h[0], full_h[0], F64)
    # ... and not a continuation of the index: with rows 4, 5, 6 of the index (row 2 of the statistics)
    # instead of 0, 1, 2 the segment would differ
    cont_ys, _, _ = np_bn_lstm(params, xs[4:, 1:2], stats=stats, max_steps=3, t0=4)
    assert np.max(np.abs(cont_ys[:2, 0] - np.asarray(ys[4:6, 1]))) > 1e-3
    # The index each row reached (7, 3 since the reset, 2 at its length) is what a next chunk passes as
    # t0: with MAX = 5 rows of statistics row r continues with rows min(t0_r + t, 4).
    stats5 = _random_stats(MAX, F64, seed=3)
    cell5 = bn_lstm(H, MAX, statistics=stats5)
    f1, _ = jr.unroll(cell5, params, xs, resets=resets, lengths=jnp.array([7, 7, 2]))
    more = _xs(3, (3,), F64, seed=4)
    t0 = jnp.array([7, 3, 2], jnp.int32)
    _, ys2 = jr.unroll(cell5, params, more, f1, t0=t0)
    for r, t in enumerate([7, 3, 2]):
        want = np_bn_lstm(
            params, more[:, r : r + 1], stats=stats5, h0=f1.h[r : r + 1], c0=f1.c[r : r + 1], t0=t
        )
        _close(ys2[:, r], want[0][:, 0], F64)
    # training mode reads no step index: t0 changes nothing, resets only bring back the zero carry
    assert not BN.uses_step_index
    f_a, ys_a = jr.unroll(BN, params, xs, resets=resets)
    f_b, ys_b = jr.unroll(BN, params, xs, resets=resets, t0=jnp.array([3, 0, 9], jnp.int32))
    np.testing.assert_array_equal(ys_a, ys_b)
    jax.tree.map(np.testing.assert_array_equal, f_a, f_b)
    assert type(f_a) is LSTMCarry


# --------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("kind, order", [("bn_train", 2), ("bn_infer", 1), ("ln", 1)])
def test_check_grads(kind, order):
    """Forward and reverse mode in float64 through a short unroll, w.r.t. params and xs (and the
    population statistics in inference mode). Training-mode BN differentiates through the batch
    statistics. The loss is jitted: each derivative program check_grads builds is compiled once."""
    base = LN if kind == "ln" else BN
    T = 2 if order == 2 else 3
    params, xs = _params(base, F64), _xs(T, (3,), F64)
    w = jax.random.normal(jax.random.PRNGKey(9), (T, 3, H), F64)

    def loss(params, xs, *stats):
        cell = bn_lstm(H, 2, statistics=stats[0]) if stats else base
        final, ys = jr.unroll(cell, params, xs)
        return jnp.sum(jnp.tanh(ys) * w) + jnp.sum(final.c**2)

    args = (params, xs, _random_stats(2, F64)) if kind == "bn_infer" else (params, xs)
    check_grads(jax.jit(loss), args, order=order, modes=["fwd", "rev"], eps=1e-6)


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(max_steps=0), ValueError, "bn_lstm: max_steps"),
        (dict(max_steps=-2), ValueError, "bn_lstm: max_steps"),
        (dict(max_steps=2.5), TypeError, "bn_lstm: max_steps"),
        (dict(eps=0.0), ValueError, "bn_lstm: eps"),
        (dict(eps=-1e-3), ValueError, "bn_lstm: eps"),
        (dict(eps=float("nan")), ValueError, "bn_lstm: eps"),
        (dict(eps="small"), TypeError, "bn_lstm: eps"),
        (dict(gamma_init=float("inf")), ValueError, "bn_lstm: gamma_init"),
        (dict(hidden_size=0), ValueError, "bn_lstm: hidden_size"),
        (dict(statistics=(1, 2)), TypeError, "BNStatistics"),
    ],
)
def test_bn_lstm_argument_errors(kwargs, exc, match):
    args = {"hidden_size": H, "max_steps": MAX, **kwargs}
    with pytest.raises(exc, match=match):
        bn_lstm(args.pop("hidden_size"), args.pop("max_steps"), **args)


def test_ln_lstm_argument_errors():
    for eps, exc in [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (None, TypeError)]:
        with pytest.raises(exc, match="ln_lstm: eps"):
            ln_lstm(H, eps=eps)
    with pytest.raises(ValueError, match="ln_lstm: hidden_size"):
        ln_lstm(0)


@pytest.mark.parametrize("field", BNStatistics._fields)
def test_statistics_with_a_wrong_shape_name_the_field(field):
    stats = _random_stats(MAX, F32)
    bad = stats._replace(**{field: getattr(stats, field)[:, :-1]})
    with pytest.raises(ValueError, match=rf"statistics\.{field} must have shape \(max_steps, "):
        bn_lstm(H, MAX, statistics=bad)
    bad = stats._replace(**{field: getattr(stats, field)[:-1]})  # too few steps
    with pytest.raises(ValueError, match=rf"statistics\.{field} must have shape .* = \({MAX}, "):
        bn_lstm(H, MAX, statistics=bad)


def test_statistics_value_errors():
    stats = _random_stats(MAX, F32)
    with pytest.raises(ValueError, match=r"statistics\.var_h must be >= 0"):
        bn_lstm(H, MAX, statistics=stats._replace(var_h=-stats.var_h))
    with pytest.raises(ValueError, match=r"statistics\.mean_c contains NaN"):
        bn_lstm(H, MAX, statistics=stats._replace(mean_c=stats.mean_c.at[0, 0].set(jnp.nan)))
    with pytest.raises(TypeError, match=r"statistics\.mean_x must be a floating"):
        bn_lstm(H, MAX, statistics=stats._replace(mean_x=jnp.zeros((MAX, 4 * H), jnp.int32)))


def test_training_mode_needs_a_batch():
    params = BN.init(jax.random.PRNGKey(0), I)
    with pytest.raises(ValueError, match="bn_lstm: training mode .* at least one batch axis"):
        BN.step(params, BN.initial_carry(params, ()), jnp.zeros((I,), F32))
    with pytest.raises(ValueError, match="bn_lstm: training mode"):
        jr.unroll(BN, params, jnp.zeros((3, I), F32))


def test_bn_statistics_errors():
    params, xs = _params(BN, F32), _xs(3, (2,), F32)
    with pytest.raises(TypeError, match="bn_statistics: cell must be a bn_lstm"):
        bn_statistics(LN, params, xs)
    with pytest.raises(TypeError, match="bn_statistics: cell must be a jaxrnn Cell"):
        bn_statistics("bn_lstm", params, xs)
    with pytest.raises(ValueError, match="bn_statistics: xs must have shape .* at least one batch axis"):
        bn_statistics(BN, params, xs[:, 0])
    with pytest.raises(ValueError, match=r"bn_statistics: xs must have shape \(T, \*batch, 3\)"):
        bn_statistics(BN, params, xs[..., :2])
    carry = BN.initial_carry(params, (2,))
    # the carry is an LSTMCarry (h, c): a carry with a step counter (the old BNLSTMState) is refused
    with pytest.raises(ValueError, match="bn_statistics: carry must have the structure"):
        bn_statistics(BN, params, xs, (carry.h, carry.c, jnp.zeros((2,), jnp.int32)))
    with pytest.raises(ValueError, match="bn_statistics: carry leaves must have shapes"):
        bn_statistics(BN, params, xs, BN.initial_carry(params, (3,)))
    with pytest.raises(ValueError, match="bn_statistics: carry contains NaN"):
        bn_statistics(BN, params, xs, carry._replace(h=carry.h.at[0, 0].set(jnp.nan)))
