"""Recurrent dropout (Semeniuta et al. 2016; Gal & Ghahramani 2016) against the papers' equations.

The references are plain numpy loops of the dropped-out cell equations, one sequence at a time, with
masks drawn by the documented rule: row ``b``, step ``t`` (steps since the start or the last reset, plus
``unroll``'s ``t0``) keeps unit ``j`` where ``bernoulli(fold_in(fold_in(key, b), t), float32(1 - rate),
(H,))`` (per step) or ``bernoulli(fold_in(key, b), ...)`` (per sequence), scaled by ``1 / (1 - rate)``.

The step index is per-step data that ``jr.unroll`` supplies (``cell.step(..., t)`` by hand), never
state: the carry of a dropped-out cell is exactly the wrapped cell's carry.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.cells.base import LSTMCarry, learned_initial_state
from jaxrnn.cells.dropout import recurrent_dropout
from jaxrnn.cells.gru import gru, mgu
from jaxrnn.cells.lstm import lstm, lstm1997
from jaxrnn.cells.mrnn import mrnn
from jaxrnn.cells.normalised import bn_lstm, ln_lstm
from jaxrnn.cells.simple import accumulator, ctrnn, elman, irnn
from jaxrnn.truncation import every, truncate

F32, F64 = jnp.float32, jnp.float64
T, B, I, H = 5, 3, 3, 4
RATE = 0.3

CELLS = {
    "lstm": lstm(H),
    "lstm_peepholes": lstm(H, peepholes=True),
    "gru": gru(H),
    "gru_reset_before": gru(H, reset_after=False),
    "mgu": mgu(H),
    "elman": elman(H),
    "irnn": irnn(H),
}


@functools.partial(jax.jit, static_argnames=("cell", "rate", "kind", "per", "deterministic", "reverse"))
def run(
    cell,
    params,
    xs,
    key,
    carry=None,
    lengths=None,
    resets=None,
    t0=0,
    *,
    rate=RATE,
    kind="semeniuta",
    per=None,
    deterministic=False,
    reverse=False,
):
    cell_d = recurrent_dropout(cell, rate, key, kind=kind, per=per, deterministic=deterministic)
    return jr.unroll(cell_d, params, xs, carry, lengths=lengths, resets=resets, reverse=reverse, t0=t0)


run_plain = jax.jit(jr.unroll, static_argnums=0)


def _setup(cell, seed=0, dtype=F32, batch=(B,), n_in=I):
    k_p, k_n, k_x = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = cell.init(k_p, n_in, dtype)
    leaves, treedef = jax.tree.flatten(params)
    noise = [
        0.3 * jax.random.normal(k, p.shape, dtype) for k, p in zip(jax.random.split(k_n, len(leaves)), leaves)
    ]
    params = jax.tree.unflatten(treedef, [p + n for p, n in zip(leaves, noise)])  # non-zero biases, peepholes
    xs = jax.random.normal(k_x, (T, *batch, n_in), dtype)
    return params, xs


# ---------------------------------------------------------------------------------------------------
# independent references


@functools.partial(jax.jit, static_argnames=("per", "hidden", "batched"))
def _keep(key, b, t, p_keep, per, hidden, batched):
    k = jax.random.fold_in(key, b) if batched else key
    if per == "step":
        k = jax.random.fold_in(k, t)
    return jax.random.bernoulli(k, p_keep, (hidden,))


def rule_mask(key, rate, b, t, per, hidden=H, batched=True):
    """The documented mask of row ``b`` at step ``t`` (numpy float64, values 0 or 1/(1 - rate))."""
    keep = np.asarray(_keep(key, b, t, np.float32(1.0 - rate), per=per, hidden=hidden, batched=batched))
    return keep / (1.0 - rate)


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def ref_step(name, P, s, x, m_cand, m_hid):
    """One step of the dropped-out cell for one sequence: the papers' equations in numpy.

    ``m_cand`` multiplies the candidate (Semeniuta), ``m_hid`` the recurrent input h_{t-1} (Gal)."""
    if name.startswith("lstm"):
        h, c = s
        a = x @ P["W_xh"] + P["b"] + (m_hid * h) @ P["W_hh"]
        a_i, a_f, a_g, a_o = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        if "p_i" in P:
            a_i, a_f = a_i + P["p_i"] * c, a_f + P["p_f"] * c
        c_new = _sig(a_f) * c + _sig(a_i) * (m_cand * np.tanh(a_g))  # c_t = f c_{t-1} + i d(g)
        if "p_o" in P:
            a_o = a_o + P["p_o"] * c_new
        return (_sig(a_o) * np.tanh(c_new), c_new)
    if name == "gru":  # PyTorch convention h = (1 - z) n + z h: Semeniuta's d() on n
        px, hh = x @ P["W_xh"] + P["b"], (m_hid * s) @ P["W_hh"]
        r = _sig(px[:H] + hh[:H])
        z = _sig(px[H : 2 * H] + hh[H : 2 * H])
        n = np.tanh(px[2 * H :] + r * (hh[2 * H :] + P["b_hn"]))
        return (1 - z) * (m_cand * n) + z * s
    if name == "gru_reset_before":
        px, W, hd = x @ P["W_xh"] + P["b"], P["W_hh"], m_hid * s
        r = _sig(px[:H] + hd @ W[:, :H])
        z = _sig(px[H : 2 * H] + hd @ W[:, H : 2 * H])
        n = np.tanh(px[2 * H :] + (r * hd) @ W[:, 2 * H :])
        return (1 - z) * (m_cand * n) + z * s
    if name == "mgu":
        px, W, hd = x @ P["W_xh"] + P["b"], P["W_hh"], m_hid * s
        f = _sig(px[:H] + hd @ W[:, :H])
        n = np.tanh(px[H:] + (f * hd) @ W[:, H:])
        return (1 - f) * s + f * (m_cand * n)
    act = {"elman": np.tanh, "irnn": lambda a: np.maximum(a, 0.0)}[name]
    # vanilla RNN, Semeniuta: h_t = f(W [x_t, d(h_{t-1})] + b); Gal: the same place
    return act(x @ P["W_xh"] + P["b"] + (m_cand * m_hid * s) @ P["W_hh"])


def _row(carry, b, name):
    """Row ``b`` of a batched carry, as the reference's float64 state."""
    if name.startswith("lstm"):
        return (np.asarray(carry[0][b], np.float64), np.asarray(carry[1][b], np.float64))
    return np.asarray(carry[b], np.float64)


def ref_unroll(name, params, xs, key, *, rate, kind, per, lengths=None, resets=None, carry=None, t0=0):
    """Sequence by sequence, step by step: resets restart t (and the state), padding stands still.

    The state starts at ``carry`` (default: the cell's ``s_0``, zeros or a learned ``initial_carry``,
    which is also what a reset returns to) and the step index at ``t0`` (an int or one per row).
    Returns each row's final ``(state, t)`` and the outputs."""
    P = {k: np.asarray(v, np.float64) for k, v in params.items() if k != "initial_carry"}
    xs = np.asarray(xs, np.float64)
    n_t, n_b = xs.shape[:2]
    if "initial_carry" in params:  # learned_initial_state
        s0 = params["initial_carry"]
        zero = _row(jax.tree.map(lambda a: a[None], s0), 0, name)
    else:
        zero = (np.zeros(H), np.zeros(H)) if name.startswith("lstm") else np.zeros(H)
    t0 = np.broadcast_to(np.asarray(t0), (n_b,))
    ys = np.zeros((n_t, n_b, H))
    finals = []
    for b in range(n_b):
        s, t = (zero if carry is None else _row(carry, b, name)), int(t0[b])
        for step in range(n_t):
            if lengths is not None and step >= lengths[b]:
                continue
            if resets is not None and resets[step, b]:
                s, t = zero, 0
            m = rule_mask(key, rate, b, t, per) if key is not None else np.ones(H)
            m_cand, m_hid = (m, np.ones(H)) if kind == "semeniuta" else (np.ones(H), m)
            s = ref_step(name, P, s, xs[step, b], m_cand, m_hid)
            t += 1
            ys[step, b] = s[0] if isinstance(s, tuple) else s
        finals.append((s, t))
    return finals, ys


def _check_finals(final, finals, name):
    """The final carry is the wrapped cell's carry (no step counter in it) with the reference's values."""
    if name.startswith("lstm"):
        assert isinstance(final, LSTMCarry)
        np.testing.assert_allclose(final.h, np.stack([s[0] for s, _ in finals]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(final.c, np.stack([s[1] for s, _ in finals]), rtol=1e-5, atol=1e-5)
    else:
        assert isinstance(final, jax.Array)
        np.testing.assert_allclose(final, np.stack([s for s, _ in finals]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# values


KIND_PER = [("semeniuta", "step"), ("semeniuta", "sequence"), ("gal", "sequence"), ("gal", "step")]
MATRIX = [(n, k, p) for n in ("lstm", "gru", "gru_reset_before", "mgu", "elman") for k, p in KIND_PER] + [
    (n, k, p) for n in ("lstm_peepholes", "irnn") for k, p in KIND_PER[1:3]
]


@pytest.mark.parametrize("name,kind,per", MATRIX)
def test_unroll_equals_the_papers_equations(name, kind, per):
    cell = CELLS[name]
    params, xs = _setup(cell, seed=len(name))
    key = jax.random.key(7)
    final, ys = run(cell, params, xs, key, kind=kind, per=per)
    finals, ys_ref = ref_unroll(name, params, xs, key, rate=RATE, kind=kind, per=per)
    assert ys.dtype == F32
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
    _check_finals(final, finals, name)
    plain_final, ys_plain = run_plain(cell, params, xs)
    assert np.abs(np.asarray(ys) - np.asarray(ys_plain)).max() > 1e-3  # the masks do something
    # the carry is exactly the wrapped cell's: same structure, shapes and dtypes
    assert jax.tree.structure(final) == jax.tree.structure(plain_final)
    chex.assert_trees_all_equal_shapes_and_dtypes(final, plain_final)


def test_default_per_is_step_for_semeniuta_and_sequence_for_gal():
    cell = CELLS["gru"]
    params, xs = _setup(cell)
    key = jax.random.key(1)
    for kind, per in (("semeniuta", "step"), ("gal", "sequence")):
        cell_d = recurrent_dropout(cell, RATE, key, kind=kind)
        assert cell_d.hparams["per"] == per
        assert cell_d.uses_step_index == (per == "step")  # only per-step masks read the step index
        np.testing.assert_array_equal(
            run(cell, params, xs, key, kind=kind)[1], run(cell, params, xs, key, kind=kind, per=per)[1]
        )


def test_lengths_resets_jit_and_eager_against_the_reference():
    lengths = np.array([5, 3, 0], np.int32)
    resets = np.zeros((T, B), bool)
    resets[2, 0] = resets[1, 1] = resets[4, 1] = resets[3, 2] = True  # (4, 1) and (3, 2) are padding
    for name, kind, per in (
        ("lstm", "semeniuta", "step"),
        ("gru", "gal", "sequence"),
        ("mgu", "gal", "step"),
    ):
        cell = CELLS[name]
        params, xs = _setup(cell, seed=3)
        key = jax.random.key(11)
        final, ys = run(cell, params, xs, key, None, lengths, resets, kind=kind, per=per)
        finals, ys_ref = ref_unroll(
            name, params, xs, key, rate=RATE, kind=kind, per=per, lengths=lengths, resets=resets
        )
        np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
        _check_finals(final, finals, name)
        cell_d = recurrent_dropout(cell, RATE, key, kind=kind, per=per)  # eager, built outside jit
        e_final, e_ys = jr.unroll(cell_d, params, xs, lengths=lengths, resets=resets)
        np.testing.assert_allclose(e_ys, ys, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(e_final, final, rtol=1e-6, atol=1e-6)
        # The step index is data, not state: to continue after 3 steps, pass each row's index so far
        # (steps since its last reset, padding not counted: the reference's t) as t0; the two chunks
        # then reproduce the one long run, masks included.
        n = 3
        part, _ = ref_unroll(
            name,
            params,
            xs[:n],
            key,
            rate=RATE,
            kind=kind,
            per=per,
            lengths=np.minimum(lengths, n),
            resets=resets[:n],
        )
        t_so_far = np.array([t for _, t in part], np.int32)
        np.testing.assert_array_equal(t_so_far, [1, 2, 0])  # row 0 reset at 2, row 1 at 1, row 2 empty
        f1, y1 = run(cell, params, xs[:n], key, None, np.minimum(lengths, n), resets[:n], kind=kind, per=per)
        f2, y2 = run(
            cell,
            params,
            xs[n:],
            key,
            f1,
            np.clip(lengths - n, 0, T),
            resets[n:],
            t_so_far,
            kind=kind,
            per=per,
        )
        np.testing.assert_allclose(np.concatenate([y1, y2]), ys, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(f2, final, rtol=1e-6, atol=1e-6)


def test_chunked_run_with_t0_equals_one_long_run_per_step():
    """The documented chunked-TBPTT recipe: the next chunk gets ``t0 = steps so far`` (an int or one per
    row) and continues the per-step masks; without it the masks of steps 0, 1, ... are drawn again."""
    for name, kind in (("lstm", "semeniuta"), ("gru", "gal")):
        cell = CELLS[name]
        params, xs = _setup(cell, seed=9)
        key = jax.random.key(16)
        final, ys = run(cell, params, xs, key, kind=kind, per="step")
        f1, y1 = run(cell, params, xs[:2], key, kind=kind, per="step")
        for t0 in (2, np.full((B,), 2, np.int32)):
            f2, y2 = run(cell, params, xs[2:], key, f1, None, None, t0, kind=kind, per="step")
            np.testing.assert_allclose(np.concatenate([y1, y2]), ys, rtol=1e-6, atol=1e-6)
            chex.assert_trees_all_close(f2, final, rtol=1e-6, atol=1e-6)
        _, y_again = run(cell, params, xs[2:], key, f1, kind=kind, per="step")  # t0 forgotten
        assert np.abs(np.asarray(y_again) - np.asarray(ys[2:])).max() > 1e-3
        # a different t0 per row: each row continues from its own index (the reference's rule)
        t0 = np.array([0, 7, 3], np.int32)
        f3, y3 = run(cell, params, xs[2:], key, f1, None, None, t0, kind=kind, per="step")
        finals, ys_ref = ref_unroll(
            name, params, xs[2:], key, rate=RATE, kind=kind, per="step", carry=f1, t0=t0
        )
        np.testing.assert_allclose(y3, ys_ref, rtol=1e-5, atol=1e-5)
        _check_finals(f3, finals, name)


def test_reverse_counts_the_step_index_in_processing_order():
    cell = CELLS["lstm"]
    params, xs = _setup(cell, seed=4)
    key = jax.random.key(17)
    final, ys = run(cell, params, xs, key, per="step", reverse=True)
    finals, ys_ref = ref_unroll("lstm", params, xs[::-1], key, rate=RATE, kind="semeniuta", per="step")
    np.testing.assert_allclose(ys, ys_ref[::-1], rtol=1e-5, atol=1e-5)
    _check_finals(final, finals, "lstm")


def test_step_equals_recur_of_project_and_a_python_loop_of_steps():
    cell = CELLS["mgu"]
    params, xs = _setup(cell)
    cell_d = recurrent_dropout(cell, RATE, jax.random.key(2))  # per="step": reads t
    assert cell_d.uses_step_index
    s = cell_d.initial_carry(params, (B,))
    chex.assert_trees_all_equal(s, cell.initial_carry(params, (B,)))
    ys = []
    for t in range(T):
        s2 = cell_d.recur(params, s, cell.project(params, xs[t]), t)
        s3 = cell_d.step(params, s, xs[t], jnp.full((B,), t, jnp.int32))  # one index per row: the same
        s = cell_d.step(params, s, xs[t], t)
        chex.assert_trees_all_close(s, s2)
        chex.assert_trees_all_close(s, s3)
        ys.append(cell_d.output(s))
    np.testing.assert_allclose(
        np.stack(ys), run(cell, params, xs, jax.random.key(2))[1], rtol=1e-6, atol=1e-6
    )


def test_step_without_the_step_index_is_a_clear_error():
    params, xs = _setup(CELLS["lstm"])
    key = jax.random.key(2)
    s = CELLS["lstm"].initial_carry(params, (B,))
    needs_t = [
        recurrent_dropout(CELLS["lstm"], RATE, key, per="step"),
        recurrent_dropout(CELLS["lstm"], RATE, key, kind="gal", per="step"),
        recurrent_dropout(
            truncate(CELLS["lstm"], every(2, T)), RATE, key, kind="gal"
        ),  # the schedule reads t
    ]
    for cell_d in needs_t:
        assert cell_d.uses_step_index
        with pytest.raises(ValueError, match=r"recurrent_dropout\(.*pass t\b"):
            cell_d.step(params, s, xs[0])
        with pytest.raises(ValueError, match=r"pass t\b"):
            cell_d.recur(params, s, CELLS["lstm"].project(params, xs[0]))
    # per-sequence masks do not depend on t: no index needed, and any index gives the same step
    cell_d = recurrent_dropout(CELLS["lstm"], RATE, key, kind="gal")
    assert not cell_d.uses_step_index
    chex.assert_trees_all_equal(cell_d.step(params, s, xs[0]), cell_d.step(params, s, xs[0], 3))


# ---------------------------------------------------------------------------------------------------
# the masks, observed through an identity Elman cell: h_t = m_t * h_{t-1} + 1 with h_{-1} = 1

HM = 64
ELMAN_ID = elman(HM, "identity")
P_ID = {"W_xh": jnp.eye(HM, dtype=F32), "W_hh": jnp.eye(HM, dtype=F32), "b": jnp.zeros((HM,), F32)}


def observed_masks(key, batch_shape, *, kind="gal", per="sequence", rate=0.5, n_t=4, t0=0):
    xs = jnp.ones((n_t, *batch_shape, HM), F32)
    carry = jnp.ones((*batch_shape, HM), F32)  # the Elman cell's own carry: no step counter in it
    _, ys = run(ELMAN_ID, P_ID, xs, key, carry, None, None, t0, rate=rate, kind=kind, per=per)
    ys = np.asarray(ys, np.float64)
    prev = np.concatenate([np.ones((1, *ys.shape[1:])), ys[:-1]])
    return (ys - 1.0) / prev  # (n_t, *batch, HM)


@pytest.mark.parametrize("kind", ["semeniuta", "gal"])
def test_per_sequence_masks_are_constant_and_per_step_masks_change(kind):
    key = jax.random.key(3)
    seq = observed_masks(key, (3,), kind=kind, per="sequence")
    stp = observed_masks(key, (3,), kind=kind, per="step")
    for m in (seq, stp):
        np.testing.assert_allclose(np.minimum(np.abs(m), np.abs(m - 2.0)), 0.0, atol=1e-4)  # 0 or 1/(1-0.5)
    np.testing.assert_allclose(seq, np.broadcast_to(seq[:1], seq.shape), atol=1e-4)
    for t in range(1, 4):
        assert np.abs(stp[t] - stp[t - 1]).max() > 1.0, t  # fresh mask each step
    assert np.abs(seq[0, 0] - seq[0, 1]).max() > 1.0  # rows differ
    # the documented rule, row by row
    for b in range(3):
        np.testing.assert_allclose(seq[0, b], rule_mask(key, 0.5, b, 0, "sequence", HM), atol=1e-4)
        for t in range(4):
            np.testing.assert_allclose(stp[t, b], rule_mask(key, 0.5, b, t, "step", HM), atol=1e-4)


def test_t0_continues_the_per_step_masks_of_one_long_run():
    """A carry passed between chunks does not count steps: the second chunk of 2 steps draws the masks of
    steps 2, 3 of the long run only with ``t0=2``; without it, those of steps 0, 1 again."""
    key = jax.random.key(18)
    long = observed_masks(key, (3,), per="step")
    np.testing.assert_array_equal(observed_masks(key, (3,), per="step", n_t=2, t0=2), long[2:])
    np.testing.assert_array_equal(
        observed_masks(key, (3,), per="step", n_t=2, t0=np.array([2, 2, 2], np.int32)), long[2:]
    )
    again = observed_masks(key, (3,), per="step", n_t=2)
    np.testing.assert_array_equal(again, long[:2])
    assert np.abs(again - long[2:]).max() > 1.0
    # rows may be at different indices: row b's masks are those of steps t0[b], t0[b] + 1
    t0 = np.array([1, 0, 2], np.int32)
    got = observed_masks(key, (3,), per="step", n_t=2, t0=t0)
    for b in range(3):
        np.testing.assert_array_equal(got[:, b], long[t0[b] : t0[b] + 2, b])
    # per-sequence masks ignore t0
    seq = observed_masks(key, (3,), per="sequence", n_t=2)
    np.testing.assert_array_equal(observed_masks(key, (3,), per="sequence", n_t=2, t0=5), seq)


def test_masks_do_not_depend_on_batch_composition():
    key = jax.random.key(4)
    m5, m3 = observed_masks(key, (5,), per="step"), observed_masks(key, (3,), per="step")
    np.testing.assert_array_equal(m5[:, :3], m3)  # more rows do not change the first ones
    m23 = observed_masks(key, (2, 3), per="step")
    np.testing.assert_array_equal(m23.reshape(4, 6, HM)[:, :5], m5)  # row-major flattened index
    for b in (0, 2):  # row b of a batch = the unbatched sequence with key fold_in(key, b)
        np.testing.assert_array_equal(observed_masks(jax.random.fold_in(key, b), (), per="step"), m5[:, b])
    # and through a whole LSTM: row b alone with fold_in(key, b) gives row b's outputs
    cell = CELLS["lstm"]
    params, xs = _setup(cell)
    _, ys = run(cell, params, xs, key)
    _, y1 = run(cell, params, xs[:, 1], jax.random.fold_in(key, 1))
    np.testing.assert_allclose(y1, ys[:, 1], rtol=1e-6, atol=1e-6)


def test_raw_prng_keys_and_typed_keys_give_the_same_masks():
    np.testing.assert_array_equal(
        observed_masks(jax.random.PRNGKey(5), (2,), per="step"),
        observed_masks(jax.random.key(5), (2,), per="step"),
    )


def test_resets_keep_the_sequence_mask_and_restart_the_step_masks():
    """Documented: masks depend on (key, b, t) with t = steps since the last reset."""
    cell = learned_initial_state(ELMAN_ID)
    params = {**P_ID, "initial_carry": jnp.ones((HM,), F32)}  # s_0 = 1 so resets stay observable
    xs = jnp.ones((6, 1, HM), F32)
    resets = np.zeros((6, 1), bool)
    resets[3, 0] = True
    key = jax.random.key(6)
    for per in ("step", "sequence"):
        # t0 is where the index of the first segment starts; a reset restarts it at 0 regardless
        _, ys = run(cell, params, xs, key, None, None, resets, 0, rate=0.5, kind="gal", per=per)
        ys = np.asarray(ys, np.float64)[:, 0]
        prev = np.concatenate([np.ones((1, HM)), ys[:-1]])
        prev[3] = 1.0  # the carry entering step 3 is the initial carry again
        m = (ys - 1.0) / prev
        np.testing.assert_allclose(m[3:], m[:3], atol=1e-4)  # the segment replays the first masks
        if per == "step":
            assert np.abs(m[1] - m[0]).max() > 1.0
            _, ys5 = run(cell, params, xs, key, None, None, resets, 5, rate=0.5, kind="gal", per=per)
            np.testing.assert_array_equal(np.asarray(ys5)[3:], np.asarray(ys)[3:, None])  # after the reset
            assert np.abs(np.asarray(ys5)[:3, 0] - ys[:3]).max() > 1e-3  # before it: steps 5, 6, 7


def test_dropped_candidate_is_unbiased():
    """E[d(g)] = g: LSTM with i = 1, f = 0, W_hh = 0, so c_t = d(g_t); averaged over 4000 rows."""
    n_b, n_in = 4000, 2
    cell = CELLS["lstm"]
    k_w, k_x = jax.random.split(jax.random.PRNGKey(8))
    b = jnp.concatenate([jnp.full((H,), 30.0), jnp.full((H,), -30.0), jnp.zeros((H,)), jnp.zeros((H,))])
    params = {
        "W_xh": jax.random.normal(k_w, (n_in, 4 * H), F32),
        "W_hh": jnp.zeros((H, 4 * H), F32),
        "b": b.astype(F32),
    }
    x = jax.random.normal(k_x, (2, 1, n_in), F32)
    xs = jnp.broadcast_to(x, (2, n_b, n_in))  # the same input in every row
    rate = 0.25
    final, _ = run(cell, params, xs, jax.random.key(9), rate=rate, per="step")
    plain, _ = run_plain(cell, params, xs)
    g = np.asarray(plain.c[0])  # undropped candidate tanh(a_g) (i = 1, f = 0)
    c = np.asarray(final.c)  # (n_b, H), each row g * m_row
    np.testing.assert_allclose(c.mean(0), g, atol=0.06 * np.abs(g).max() + 1e-6)
    m = c / g  # the masks: 0 or 1/(1 - rate)
    dropped = np.abs(m) < 1e-5
    np.testing.assert_allclose(m[~dropped], 1.0 / (1.0 - rate), rtol=1e-4)
    assert abs(dropped.mean() - rate) < 0.03, dropped.mean()


def test_lstm_memory_is_never_dropped():
    """dc_t/dc_{t-1} = diag(f_t) under both kinds, and a unit whose candidate mask is 0 keeps f * c."""
    cell = CELLS["lstm"]
    params, xs = _setup(cell, seed=5)
    rng = np.random.default_rng(0)
    h0, c0 = (jnp.asarray(rng.normal(size=(H,)), F32) for _ in range(2))
    key, rate = jax.random.key(12), 0.5
    P = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for kind in ("semeniuta", "gal"):
        cell_d = recurrent_dropout(cell, rate, key, kind=kind, per="step")
        m = rule_mask(key, rate, 0, 2, "step", batched=False)  # the masks of step t = 2
        m_hid = m if kind == "gal" else np.ones(H)
        a_f = (np.asarray(xs[0, 0]) @ P["W_xh"] + P["b"] + (m_hid * np.asarray(h0)) @ P["W_hh"])[H : 2 * H]

        def c_new(c, cell_d=cell_d):
            return cell_d.step(params, LSTMCarry(h0, c), xs[0, 0], 2).c

        np.testing.assert_allclose(jax.jacobian(c_new)(c0), np.diag(_sig(a_f)), rtol=1e-5, atol=1e-6)
        if kind == "semeniuta":
            assert (m == 0).any()
            c1 = np.asarray(cell_d.step(params, LSTMCarry(h0, c0), xs[0, 0], 2).c)
            np.testing.assert_allclose(c1[m == 0], (_sig(a_f) * np.asarray(c0))[m == 0], rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# inference, rate 0, carry structure


def test_inference_returns_the_cell_itself():
    key = jax.random.key(13)
    for cell in (*CELLS.values(), learned_initial_state(CELLS["gru"]), truncate(CELLS["lstm"], every(2, T))):
        assert recurrent_dropout(cell, RATE, None) is cell
        assert recurrent_dropout(cell, RATE, key, deterministic=True) is cell
        assert recurrent_dropout(cell, 0.0, key) is cell
        assert recurrent_dropout(cell, 0, key, kind="gal", per="step") is cell


@pytest.mark.parametrize("kind", ["semeniuta", "gal"])
@pytest.mark.parametrize("per", ["step", "sequence"])
def test_the_carry_is_the_wrapped_cells_carry(kind, per):
    key = jax.random.key(13)
    for name, cell in CELLS.items():
        for base in (cell, learned_initial_state(cell), truncate(cell, every(2, T))):
            params, _ = _setup(base)
            cell_d = recurrent_dropout(base, RATE, key, kind=kind, per=per)
            for batch in ((), (B,), (2, 3)):
                want = base.initial_carry(params, batch)
                got = cell_d.initial_carry(params, batch)
                assert jax.tree.structure(got) == jax.tree.structure(want), (name, batch)
                chex.assert_trees_all_equal(got, want)
                assert cell_d.output(got).shape == (*batch, H)
            assert jax.tree.structure(cell.initial_carry(params, ())) == jax.tree.structure(
                cell_d.initial_carry(params, ())
            )
            if name.startswith("lstm"):
                assert isinstance(cell_d.initial_carry(params, (B,)), LSTMCarry)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_inference_and_rate_zero_are_the_wrapped_cell(name):
    cell = CELLS[name]
    params, xs = _setup(cell)
    key = jax.random.key(13)
    plain_final, plain_ys = run_plain(cell, params, xs)
    outs = {
        "key=None": run(cell, params, xs, None),
        "deterministic": run(cell, params, xs, key, deterministic=True),
        "rate=0": run(cell, params, xs, key, rate=0.0),
        "rate=0 gal": run(cell, params, xs, key, rate=0.0, kind="gal"),
    }
    train = run(cell, params, xs, key)
    for what, (final, ys) in outs.items():
        np.testing.assert_array_equal(ys, plain_ys, err_msg=what)
        chex.assert_trees_all_equal(final, plain_final)
        chex.assert_trees_all_equal_shapes_and_dtypes(final, train[0])  # the same carry as in training
        assert jax.tree.structure(final) == jax.tree.structure(train[0])
    # a carry moves from the training cell to the inference cell and back
    f_inf, ys_inf = run(cell, params, xs, None, train[0])
    f_ref, ys_ref = run_plain(cell, params, xs, train[0])
    np.testing.assert_array_equal(ys_inf, ys_ref)
    chex.assert_trees_all_equal(f_inf, f_ref)
    # back in training after 2T steps: with t0 = 2T the masks are those of steps 2T, 2T + 1, ...
    f_tr, ys_tr = run(cell, params, xs, key, f_inf, None, None, 2 * T)
    finals, ys_tr_ref = ref_unroll(
        name, params, xs, key, rate=RATE, kind="semeniuta", per="step", carry=f_inf, t0=2 * T
    )
    np.testing.assert_allclose(ys_tr, ys_tr_ref, rtol=1e-5, atol=1e-5)
    _check_finals(f_tr, finals, name)
    assert [t for _, t in finals] == [3 * T] * B


# ---------------------------------------------------------------------------------------------------
# a cell is a value: hparams, data, name, repr, equality, pytree


def test_hparams_data_name_repr_and_equality():
    key = jax.random.key(0)
    base = CELLS["lstm"]
    cell = recurrent_dropout(base, 0.2, key, kind="gal")
    assert cell.kind == "recurrent_dropout"
    assert cell.name == "recurrent_dropout(lstm)"
    assert dict(cell.hparams) == {"rate": 0.2, "kind": "gal", "per": "sequence"}  # the factory's arguments
    assert recurrent_dropout(lstm(4), 0.5, key, kind="gal").hparams == {
        "rate": 0.5,
        "kind": "gal",
        "per": "sequence",
    }
    assert recurrent_dropout(base, 0.2, key).hparams["per"] == "step"
    assert set(cell.data) == {"cell", "key"}
    assert cell.data["cell"] == base and cell.data["cell"].kind == "lstm"
    np.testing.assert_array_equal(jax.random.key_data(cell.data["key"]), jax.random.key_data(key))
    r = repr(cell)
    assert r.startswith("recurrent_dropout(") and r.endswith(")"), r
    for part in ("cell=lstm(hidden_size=4)", "rate=0.2", "kind='gal'", "per='sequence'"):
        assert part in r, r
    # equal by factory, hparams and data (the key by value; a raw PRNGKey is the same key)
    same = recurrent_dropout(lstm(H), 0.2, jax.random.key(0), kind="gal")
    assert same == cell and hash(same) == hash(cell)
    assert recurrent_dropout(lstm(H), 0.2, jax.random.PRNGKey(0), kind="gal") == cell
    for other in (
        recurrent_dropout(base, 0.2, jax.random.key(1), kind="gal"),
        recurrent_dropout(base, 0.3, key, kind="gal"),
        recurrent_dropout(base, 0.2, key, kind="semeniuta", per="sequence"),
        recurrent_dropout(base, 0.2, key, kind="gal", per="step"),
        recurrent_dropout(CELLS["gru"], 0.2, key, kind="gal"),
        base,
    ):
        assert other != cell, other
    # a pytree whose only leaf is the key (hparams are static)
    leaves = jax.tree.leaves(cell)
    assert len(leaves) == 1 and jax.dtypes.issubdtype(leaves[0].dtype, jax.dtypes.prng_key)
    assert jax.tree.map(lambda x: x, cell) == cell
    cuts = every(2, T)
    t_cell = truncate(cell, cuts)
    assert len(jax.tree.leaves(t_cell)) == 2  # the key and the truncation cuts
    np.testing.assert_array_equal(jax.tree.leaves(t_cell)[1], cuts)


def test_a_dropped_out_cell_is_a_jit_argument_and_different_keys_share_one_compilation():
    base = CELLS["lstm"]
    params, xs = _setup(base, seed=6)
    traces = []

    @jax.jit
    def f(cell, params, xs):
        traces.append(None)
        return jr.unroll(cell, params, xs)

    for k in (1, 2):
        key = jax.random.key(k)
        _, ys = f(recurrent_dropout(base, RATE, key), params, xs)
        np.testing.assert_allclose(ys, run(base, params, xs, key)[1], rtol=1e-6, atol=1e-6)
    assert len(traces) == 1  # the key is data: one program for every key


def test_composes_with_truncate_in_either_order_and_with_learned_initial_state():
    base = learned_initial_state(CELLS["gru"])
    params, xs = _setup(base)  # a non-zero learned s_0
    key = jax.random.key(14)
    cuts = every(2, T)
    cuts_np = np.asarray(cuts)
    np.testing.assert_array_equal(cuts_np, [False, False, True, False, True])
    top = truncate(recurrent_dropout(base, RATE, key), cuts)
    below = recurrent_dropout(truncate(base, cuts), RATE, key)
    assert top.name == "truncate(recurrent_dropout(learned_initial_state(gru)))"
    assert below.name == "recurrent_dropout(truncate(learned_initial_state(gru)))"
    for c in (top, below):
        assert c.uses_step_index and c.has_cut and c.step_limit == T
        chex.assert_trees_all_equal(c.initial_carry(params, (B,)), base.initial_carry(params, (B,)))
    # values: the papers' equations from the learned s_0 (cuts change only gradients)
    finals, ys_ref = ref_unroll("gru", params, xs, key, rate=RATE, kind="semeniuta", per="step")
    _, ys = run(base, params, xs, key)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
    for c in (top, below):
        final, ys_c = jr.unroll(c, params, xs)
        np.testing.assert_allclose(ys_c, ys, rtol=1e-6, atol=1e-6)
        _check_finals(final, finals, "gru")

    # gradients: both orders give the truncated gradient of a plain loop with stop_gradient at the cuts
    def loss_unroll(cell):
        return jax.jit(jax.grad(lambda p: jnp.sum(jr.unroll(cell, p, xs)[1] ** 2)))

    @jax.jit
    @jax.grad
    def loss_loop(p):
        cell_d = recurrent_dropout(base, RATE, key)
        s, out = cell_d.initial_carry(p, (B,)), 0.0
        for t in range(T):
            s = jax.lax.stop_gradient(s) if cuts_np[t] else s
            s = cell_d.step(p, s, xs[t], t)
            out = out + jnp.sum(cell_d.output(s) ** 2)
        return out

    g_loop = loss_loop(params)
    g_full = loss_unroll(recurrent_dropout(base, RATE, key))(params)
    assert np.abs(np.asarray(g_full["W_hh"]) - np.asarray(g_loop["W_hh"])).max() > 1e-4  # cuts matter
    for c in (top, below):
        chex.assert_trees_all_close(loss_unroll(c)(params), g_loop, rtol=1e-5, atol=1e-6)
    # inference of the learned-s_0 cell is the plain cell
    _, ys_inf = run(base, params, xs, None)
    np.testing.assert_array_equal(ys_inf, run_plain(base, params, xs)[1])


# ---------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize(
    "name,kind,per,modes",
    [("lstm_peepholes", "semeniuta", "step", ["rev"]), ("gru", "gal", "sequence", ["fwd", "rev"])],
)
def test_check_grads_float64_with_a_fixed_key(name, kind, per, modes):
    cell = CELLS[name]
    params, xs = _setup(cell, dtype=F64, batch=(2,))
    key = jax.random.key(15)
    lengths = jnp.array([T, 3])

    @jax.jit
    def loss(p, x):
        _, ys = jr.unroll(recurrent_dropout(cell, RATE, key, kind=kind, per=per), p, x, lengths=lengths)
        return jnp.sum(jnp.sin(ys) ** 2)

    assert run(cell, params, xs, key, kind=kind, per=per)[1].dtype == F64
    check_grads(loss, (params, xs), order=1, modes=modes, atol=1e-5, rtol=1e-5)


def test_gradients_finite_under_jit_with_a_traced_key():
    cell = CELLS["lstm"]
    params, xs = _setup(cell)

    @jax.jit
    def grad(p, key):
        return jax.grad(lambda q: jnp.sum(run(cell, q, xs, key)[1] ** 2))(p)

    g1, g2 = grad(params, jax.random.key(1)), grad(params, jax.random.key(2))
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(g1))
    assert np.abs(np.asarray(g1["W_hh"]) - np.asarray(g2["W_hh"])).max() > 0  # the key is data


# ---------------------------------------------------------------------------------------------------
# errors


def test_errors():
    key = jax.random.key(0)
    unsupported = "does not support recurrent dropout; supported: lstm, gru, mgu"
    dropped = recurrent_dropout(lstm(H), 0.1, key)
    for bad, pattern in (
        (ctrnn(H, 0.5), f"recurrent_dropout: cell 'ctrnn' {unsupported}"),
        (accumulator(H), f"cell 'accumulator' {unsupported}"),
        (mrnn(H), f"cell 'mrnn' {unsupported}"),
        (lstm1997(H), f"cell 'lstm1997' {unsupported}"),
        (jr.deep_rnn(lstm(H), gru(H)), rf"cell 'deep_rnn\(lstm, gru\)' {unsupported}"),
        (ln_lstm(H), f"cell 'ln_lstm' {unsupported}"),
        (bn_lstm(H, T), f"cell 'bn_lstm' {unsupported}"),
        (dropped, r"'recurrent_dropout\(lstm\)' already has recurrent dropout"),
        # an already dropped-out cell under another transform is refused too
        (truncate(dropped, every(2, T)), r"cell 'truncate\(recurrent_dropout\(lstm\)\)'"),
        (learned_initial_state(dropped), r"cell 'learned_initial_state\(recurrent_dropout\(lstm\)\)'"),
    ):
        with pytest.raises(ValueError, match=pattern):
            recurrent_dropout(bad, 0.1, key)
    with pytest.raises(ValueError, match=f"cell 'ctrnn' {unsupported}"):  # also at inference
        recurrent_dropout(ctrnn(H, 0.5), 0.1, None)
    with pytest.raises(TypeError, match="recurrent_dropout: cell must be a jaxrnn Cell"):
        recurrent_dropout(jr.layer(lstm(H)), 0.1, key)
    for rate in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"recurrent_dropout: rate must be .*in \[0(\.0)?, 1(\.0)?\)"):
            recurrent_dropout(lstm(H), rate, key)
    r = recurrent_dropout(lstm(H), np.float32(0.5), key).hparams["rate"]  # numpy/jax scalars are fine
    assert r == 0.5 and type(r) is float
    for rate in ("0.1", True, jnp.asarray(True), None, jnp.ones((2,))):
        with pytest.raises(
            TypeError, match=r"recurrent_dropout: rate must be a finite real number in \[0, 1\)"
        ):
            recurrent_dropout(lstm(H), rate, key)
    with pytest.raises(TypeError, match=r"recurrent_dropout: rate must be .* known at trace time"):
        jax.jit(lambda r: recurrent_dropout(lstm(H), r, key))(0.1)
    for bad_key in (3, jnp.zeros((2,), F32), np.zeros((2,), np.int32), "key"):
        with pytest.raises(TypeError, match="recurrent_dropout: key must be a jax.random key"):
            recurrent_dropout(lstm(H), 0.1, bad_key)
    with pytest.raises(ValueError, match=r"recurrent_dropout: key must be a single jax.random key .*\(3,\)"):
        recurrent_dropout(lstm(H), 0.1, jax.random.split(key, 3))
    with pytest.raises(ValueError, match="recurrent_dropout: key must be a jax.random key .*uint32"):
        recurrent_dropout(lstm(H), 0.1, jnp.zeros((3,), jnp.uint32))
    with pytest.raises(ValueError, match="recurrent_dropout: kind must be one of .*'moon'"):
        recurrent_dropout(lstm(H), 0.1, key, kind="moon")
    with pytest.raises(ValueError, match="recurrent_dropout: per must be one of .*'batch'"):
        recurrent_dropout(lstm(H), 0.1, key, per="batch")
    with pytest.raises(TypeError, match="recurrent_dropout: deterministic must be a bool"):
        recurrent_dropout(lstm(H), 0.1, key, deterministic="yes")
