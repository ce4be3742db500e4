"""Tests of :mod:`jaxrnn.unroll`: ``unroll`` against a plain-Python loop, gradients, properties,
the sequence layers (``layer``, ``bidirectional``, ``stack``) and the argument checks.

Every check compares against an independent computation: a Python loop over ``cell.step`` and
``cell.output`` with numpy masks (:func:`ref_unroll`), a per-sequence run over the reversed valid
prefix (:func:`ref_reverse_by_flipping`), layers chained by hand, or numerical derivatives.

Shapes are tiny and shared (``T, B, I, H = 6, 4, 3, 5``) so that the module-level jitted helpers
compile few times; hypothesis tests draw data only, never shapes.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxrnn as jr

T, B, I, H = 6, 4, 3, 5
F32 = jnp.float32
TOL = dict(rtol=1e-5, atol=1e-5)

ELMAN, LSTM, GRU = jr.elman(H), jr.lstm(H), jr.gru(H)
CELLS = {"elman": ELMAN, "lstm": LSTM, "gru": GRU}
# s_0 is a (non-zero) parameter: resets must go back to it, not to zeros nor to the carry passed in
LEARNED = jr.learned_initial_state(jr.gru(H), init=jr.initialisers.normal(0.5))

HYPOTHESIS = settings(max_examples=25, deadline=None, database=None)


# --------------------------------------------------------------------------------------------------
# helpers


@functools.cache
def _params(cell, n_in=I, dtype=F32, seed=0):
    return cell.init(jax.random.PRNGKey(seed), n_in, dtype=dtype)


def _normal(seed, shape, dtype=F32, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _random_carry(cell, params, batch_shape, seed=7, dtype=F32):
    """A finite carry far from ``s_0`` (so that resetting to it, or not, shows)."""
    template = cell.initial_carry(params, batch_shape)
    leaves, treedef = jax.tree.flatten(template)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [0.8 * jax.random.normal(k, l.shape, dtype) for k, l in zip(keys, leaves)]
    )


def _lengths(batch_shape, seed=1, n=T):
    """Lengths in [0, n] that include 0 and n whenever there are at least two sequences."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, n + 1, size=batch_shape)
    flat = lengths.reshape(-1)
    if flat.size >= 2:
        flat[0], flat[1] = 0, n
    return flat.reshape(batch_shape).astype(np.int32)


def _resets(shape, seed=2, p=0.3):
    return np.random.default_rng(seed).random(shape) < p


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _np_where(mask, a, b):
    """``where(mask, a, b)`` per sequence, over each leaf of a carry (numpy)."""
    mask = np.asarray(mask)

    def one(x, y):
        x, y = np.asarray(x), np.asarray(y)
        return np.where(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x, y)

    return jax.tree.map(one, a, b)


# one step and one readout of the cell, jitted only to save op-by-op dispatch in the reference loop
_step = jax.jit(lambda cell, params, carry, x: cell.step(params, carry, x), static_argnums=0)
_output = jax.jit(lambda cell, carry: cell.output(carry), static_argnums=0)


def ref_unroll(cell, params, xs, carry=None, *, lengths=None, resets=None, reverse=False):
    """The reference loop of ``unroll``'s docstring, time on axis 0, in plain Python + numpy.

    With ``reverse=True`` each segment (a run of steps between resets) is run backwards from its
    last valid step: the carry is reset before step ``t`` when ``resets[t + 1]`` and ``t + 1`` is
    not padding.
    """
    xs = np.asarray(xs)
    n, batch = xs.shape[0], xs.shape[1:-1]
    s0 = _np(cell.initial_carry(params, batch))
    s = s0 if carry is None else _np(carry)
    lengths = np.full(batch, n) if lengths is None else np.asarray(lengths)
    resets = np.zeros((n, *batch), bool) if resets is None else np.asarray(resets)
    ys = [None] * n
    for t in reversed(range(n)) if reverse else range(n):
        if not reverse:
            r = resets[t]
        elif t + 1 < n:
            r = resets[t + 1] & (t + 1 < lengths)
        else:
            r = np.zeros(batch, bool)
        s_in = _np_where(r, s0, s)
        s_new = _np(_step(cell, params, s_in, xs[t]))
        valid = np.asarray(t < lengths)
        s = _np_where(valid, s_new, s)
        y = np.asarray(_output(cell, s_new))
        ys[t] = np.where(valid[..., None], y, 0.0)
    return s, np.stack(ys)


def _tree_index(tree, b):
    return jax.tree.map(lambda x: np.asarray(x)[b], tree)


def _tree_stack(trees):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def ref_reverse_by_flipping(cell, params, xs, carry=None, *, lengths, resets=None):
    """``unroll(reverse=True)`` for ``xs (T, B, I)``, computed without any reverse loop: for each
    sequence, a forward run over its reversed valid prefix (with the segment starts mapped to the
    reversed time), reversed back and zero-padded."""
    xs = np.asarray(xs)
    n, nb = xs.shape[:2]
    lengths = np.asarray(lengths)
    resets = np.zeros((n, nb), bool) if resets is None else np.asarray(resets)
    if carry is None:
        carry = cell.initial_carry(params, (nb,))
    n_out = np.shape(cell.output(cell.initial_carry(params, ())))[-1]
    finals, ys = [], np.zeros((n, nb, n_out), xs.dtype)
    for b in range(nb):
        L = int(lengths[b])
        s = _tree_index(carry, b)
        if L == 0:
            finals.append(_np(s))
            continue
        # a segment starting at t (resets[t]) ends, in reversed time j = L - 1 - t, at j; so the next
        # reversed step j + 1 = L - t starts a new segment: r[L - t] = resets[t] for t in 1..L-1.
        r = np.zeros(L, bool)
        r[1:] = resets[1:L, b][::-1]
        f, y = ref_unroll(cell, params, xs[:L, b][::-1], s, resets=r)
        finals.append(f)
        ys[:L, b] = y[::-1]
    return _tree_stack(finals), ys


_unroll_jit = jax.jit(
    jr.unroll, static_argnums=(0,), static_argnames=("reverse", "time_axis", "unroll", "remat")
)


def _unroll_nojit(*args, **kwargs):
    """``unroll`` with no compilation at all: the scan runs as a Python loop of eager ops (cheaper
    here than plain eager calls, which compile each scan anew)."""
    with jax.disable_jit():
        return jr.unroll(*args, **kwargs)


RUNS = {"nojit": _unroll_nojit, "jit": _unroll_jit}


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("reverse", "remat"))
def _value_and_grad(cell, params, xs, carry, lengths, resets, reverse=False, remat=False):
    """``((final, ys), d loss / d (params, xs, carry))`` of a loss that uses every output."""

    def loss(params, xs, carry):
        final, ys = jr.unroll(
            cell, params, xs, carry, lengths=lengths, resets=resets, reverse=reverse, remat=remat
        )
        total = jnp.sum(jnp.sin(3.0 * ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final))
        return total, (final, ys)

    (_, aux), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)
    return aux, grads


# --------------------------------------------------------------------------------------------------
# 1. unroll against the reference loop

OPTIONS = ["plain", "lengths", "resets", "lengths+resets+carry"]


@pytest.mark.parametrize("reverse", [False, True], ids=["fw", "rev"])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_matches_reference_loop(name, options, reverse):
    cell = CELLS[name]
    params = _params(cell)
    xs = _normal(0, (T, B, I))
    kw = {}
    if "lengths" in options:
        kw["lengths"] = _lengths((B,))
    if "resets" in options:
        kw["resets"] = _resets((T, B))
    carry = _random_carry(cell, params, (B,)) if "carry" in options else None
    want = ref_unroll(cell, params, xs, carry, reverse=reverse, **kw)
    for run in RUNS.values():
        got = run(cell, params, xs, carry, reverse=reverse, **kw)
        chex.assert_trees_all_close(got, want, **TOL)
        assert jax.tree.structure(got[0]) == jax.tree.structure(cell.initial_carry(params, (B,)))


def test_lengths_zero_and_full():
    """Length 0: the carry passed in comes back and ys = 0; length T: the last state."""
    params = _params(LSTM)
    xs, carry = _normal(0, (T, B, I)), _random_carry(LSTM, params, (B,))
    lengths = np.array([0, T, 0, T], np.int32)
    for run in (jr.unroll, _unroll_jit, _unroll_nojit):
        for reverse in (False, True):
            final, ys = run(LSTM, params, xs, carry, lengths=lengths, reverse=reverse)
            full_final, full_ys = run(LSTM, params, xs, carry, reverse=reverse)
            for b in (0, 2):
                chex.assert_trees_all_equal(_tree_index(final, b), _tree_index(carry, b))
                np.testing.assert_array_equal(ys[:, b], 0.0)
            for b in (1, 3):
                chex.assert_trees_all_close(_tree_index(final, b), _tree_index(full_final, b), **TOL)
                np.testing.assert_allclose(ys[:, b], full_ys[:, b], **TOL)


@pytest.mark.parametrize("reverse", [False, True], ids=["fw", "rev"])
def test_resets_go_to_the_cells_initial_carry(reverse):
    """With a learned (non-zero) s_0 and a carry passed in, a reset restores s_0, not the carry."""
    params = _params(LEARNED)
    xs, carry = _normal(0, (T, B, I)), _random_carry(LEARNED, params, (B,))
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B), p=0.4))
    want = ref_unroll(LEARNED, params, xs, carry, reverse=reverse, **kw)
    # the learned s_0 is not the carry and not zero, so this checks which state a reset goes to
    assert np.abs(np.asarray(params["initial_carry"])).min() > 0
    for run in RUNS.values():
        chex.assert_trees_all_close(run(LEARNED, params, xs, carry, reverse=reverse, **kw), want, **TOL)


@pytest.mark.parametrize("with_resets", [False, True], ids=["lengths", "lengths+resets"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_reverse_with_lengths_is_a_forward_run_over_the_reversed_valid_prefix(name, with_resets):
    cell = CELLS[name]
    params = _params(cell)
    xs, carry = _normal(3, (T, B, I)), _random_carry(cell, params, (B,))
    lengths = np.array([T, 0, 4, 1], np.int32)
    # resets also in the padding (e.g. at t = lengths[b]): they must not touch the valid part
    resets = _resets((T, B), seed=5, p=0.4) if with_resets else None
    want = ref_reverse_by_flipping(cell, params, xs, carry, lengths=lengths, resets=resets)
    for run in RUNS.values():
        got = run(cell, params, xs, carry, lengths=lengths, resets=resets, reverse=True)
        chex.assert_trees_all_close(got, want, **TOL)


@pytest.mark.parametrize(
    "batch_shape,reverse", [((), False), ((3,), True), ((2, 3), False), ((2, 3), True)], ids=str
)
def test_batch_shapes(batch_shape, reverse):
    params = _params(LSTM)
    xs = _normal(4, (T, *batch_shape, I))
    carry = _random_carry(LSTM, params, batch_shape)
    kw = dict(lengths=_lengths(batch_shape, seed=3), resets=_resets((T, *batch_shape), seed=4))
    want = ref_unroll(LSTM, params, xs, carry, reverse=reverse, **kw)
    for run in (jr.unroll, _unroll_jit):  # (the no-jit path would compile every op for each shape)
        final, ys = run(LSTM, params, xs, carry, reverse=reverse, **kw)
        assert ys.shape == (T, *batch_shape, H)
        chex.assert_trees_all_close((final, ys), want, **TOL)


@pytest.mark.parametrize("time_axis,reverse", [(1, False), (1, True), (-2, True)])
def test_time_axis_batch_first_equals_transposing(time_axis, reverse):
    params = _params(GRU)
    xs, carry = _normal(5, (T, B, I)), _random_carry(GRU, params, (B,))
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B)))
    want = ref_unroll(GRU, params, xs, carry, reverse=reverse, **kw)
    for run in RUNS.values():
        final, ys = run(
            GRU,
            params,
            jnp.swapaxes(xs, 0, 1),
            carry,
            lengths=kw["lengths"],
            resets=kw["resets"].T,
            reverse=reverse,
            time_axis=time_axis,
        )
        assert ys.shape == (B, T, H)
        chex.assert_trees_all_close((final, jnp.swapaxes(ys, 0, 1)), want, **TOL)


def test_time_axis_with_two_batch_dims():
    """``xs (2, T, 3, I)`` with ``time_axis=1`` is ``moveaxis`` of the time-major run."""
    params = _params(ELMAN)
    xs = _normal(6, (T, 2, 3, I))
    resets, lengths = _resets((T, 2, 3), seed=8), _lengths((2, 3), seed=9)
    want = ref_unroll(ELMAN, params, xs, lengths=lengths, resets=resets)
    final, ys = _unroll_jit(
        ELMAN, params, jnp.moveaxis(xs, 0, 1), lengths=lengths, resets=np.moveaxis(resets, 0, 1), time_axis=1
    )
    chex.assert_trees_all_close((final, jnp.moveaxis(ys, 1, 0)), want, **TOL)


@pytest.mark.parametrize("n_unroll,reverse", [(2, False), (3, True), (4, False)])
def test_scan_unroll_gives_the_same_result(n_unroll, reverse):
    params = _params(LSTM)
    xs, carry = _normal(0, (T, B, I)), _random_carry(LSTM, params, (B,))
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B)))
    want = ref_unroll(LSTM, params, xs, carry, reverse=reverse, **kw)
    # (jit only: without jit the scan is a Python loop and `unroll` has nothing to do)
    got = _unroll_jit(LSTM, params, xs, carry, reverse=reverse, unroll=n_unroll, **kw)
    chex.assert_trees_all_close(got, want, **TOL)


REMAT_CASES = [  # (T, reverse, with lengths and resets): T prime, so the sqrt(T) segments pad
    (7, False, False),
    (13, True, True),
]


@pytest.mark.parametrize("n,reverse,masked", REMAT_CASES)
def test_remat_same_values_and_gradients(n, reverse, masked):
    cell = LSTM
    params = _params(cell)
    xs = _normal(11, (n, B, I))
    # a non-zero carry: steps run on padding would move it (zero is a fixed point at zero input)
    carry = _random_carry(cell, params, (B,))
    lengths = _lengths((B,), seed=12, n=n) if masked else None
    resets = _resets((n, B), seed=13) if masked else None
    args = (cell, params, xs, carry, lengths, resets)
    want_aux, want_grads = _value_and_grad(*args, reverse=reverse, remat=False)
    chex.assert_trees_all_close(
        want_aux, ref_unroll(cell, params, xs, carry, lengths=lengths, resets=resets, reverse=reverse), **TOL
    )
    for remat in (True, jax.checkpoint_policies.nothing_saveable):
        aux, grads = _value_and_grad(*args, reverse=reverse, remat=remat)
        chex.assert_trees_all_close(aux, want_aux, **TOL)
        chex.assert_trees_all_close(grads, want_grads, **TOL)
    if not masked:  # and the eager, non-differentiated remat=True path
        got = jr.unroll(cell, params, xs, carry, reverse=reverse, remat=True)
        chex.assert_trees_all_close(got, want_aux, **TOL)


def test_project_once_equals_stepping():
    """A cell whose ``project`` is the identity (so ``unroll`` cannot rely on it) gives the same."""
    params = _params(GRU)
    step_only = jr.cells.custom(
        "step_only", init=GRU.init, initial_carry=GRU.initial_carry, recur=GRU.step, output=GRU.output
    )
    xs = _normal(0, (T, B, I))
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B)))
    chex.assert_trees_all_close(
        _unroll_jit(step_only, params, xs, **kw), _unroll_jit(GRU, params, xs, **kw), **TOL
    )


# --------------------------------------------------------------------------------------------------
# 2. gradients


# each compiles ~13 times; with lengths and resets on the fused kernels (test_kernels checks the Elman one)
@pytest.mark.parametrize("name,reverse", [("lstm", False), ("gru", True)])
def test_check_grads_float64(name, reverse):
    cell = CELLS[name]
    n, nb = 4, 3
    params = _params(cell, n_in=2, dtype=jnp.float64)
    xs = _normal(20, (n, nb, 2), jnp.float64)
    carry = _random_carry(cell, params, (nb,), dtype=jnp.float64)
    lengths = np.array([n, 0, 2], np.int32)
    resets = np.array([[False] * nb, [True, False, True], [False, True, False], [True, True, False]])

    @jax.jit
    def f(params, xs, carry):
        return jr.unroll(cell, params, xs, carry, lengths=lengths, resets=resets, reverse=reverse)

    assert "custom_jvp_call" in str(jax.make_jaxpr(f)(params, xs, carry))  # the fused kernel
    check_grads(f, (params, xs, carry), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("reverse", [False, True], ids=["fw", "rev"])
def test_grads_with_lengths_are_zero_on_the_padding(reverse):
    params = _params(GRU)
    xs, carry = _normal(0, (T, B, I)), _random_carry(GRU, params, (B,))
    lengths = _lengths((B,))
    resets = _resets((T, B))
    _, (_, d_xs, _) = _value_and_grad(GRU, params, xs, carry, lengths, resets, reverse=reverse)
    d_xs = np.asarray(d_xs)
    pad = np.arange(T)[:, None] >= lengths[None, :]
    assert pad.any() and (~pad).any()
    np.testing.assert_array_equal(d_xs[pad], 0.0)
    assert np.all(np.abs(d_xs[~pad]).sum(-1) > 0)  # every valid step matters


# --------------------------------------------------------------------------------------------------
# 3. properties (fixed shapes T, B, I, H; drawn data)


def _draw_case(data, p_reset=0.3):
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths"))
    resets = np.array(
        data.draw(st.lists(st.booleans(), min_size=T * B, max_size=T * B), label="resets")
    ).reshape(T, B)
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(T, B, I)), F32)
    carry = jr.LSTMCarry(*(jnp.asarray(rng.normal(size=(B, H)), F32) for _ in range(2)))
    return rng, xs, carry, lengths.astype(np.int32), resets


@HYPOTHESIS
@given(data=st.data(), reverse=st.booleans())
def test_property_padding_never_changes_the_valid_part(data, reverse):
    rng, xs, carry, lengths, resets = _draw_case(data)
    params = _params(LSTM)
    pad = np.arange(T)[:, None] >= lengths[None, :]
    xs2 = jnp.where(pad[..., None], jnp.asarray(rng.normal(size=(T, B, I)) * 10, F32), xs)
    resets2 = np.where(pad, rng.random((T, B)) < 0.5, resets)
    want = _unroll_jit(LSTM, params, xs, carry, lengths=lengths, resets=resets, reverse=reverse)
    got = _unroll_jit(LSTM, params, xs2, carry, lengths=lengths, resets=resets2, reverse=reverse)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got[1])[pad], 0.0)


@HYPOTHESIS
@given(data=st.data())
def test_property_reverse_is_flip_run_forward_flip_back(data):
    """``unroll(reverse=True)`` = flip each valid prefix (and map the segment starts), run forward,
    flip the valid prefix of ``ys`` back."""
    _, xs, carry, lengths, resets = _draw_case(data)
    params = _params(LSTM)
    xs_np = np.asarray(xs)
    xs_f, resets_f = xs_np.copy(), np.zeros_like(resets)
    for b, L in enumerate(lengths):
        xs_f[:L, b] = xs_np[:L, b][::-1]
        resets_f[1:L, b] = resets[1:L, b][::-1]
    final_f, ys_f = _unroll_jit(LSTM, params, xs_f, carry, lengths=lengths, resets=resets_f)
    ys_f = np.asarray(ys_f)
    ys_want = np.zeros_like(ys_f)
    for b, L in enumerate(lengths):
        ys_want[:L, b] = ys_f[:L, b][::-1]
    got = _unroll_jit(LSTM, params, xs, carry, lengths=lengths, resets=resets, reverse=True)
    chex.assert_trees_all_close(got, (final_f, ys_want), **TOL)


@HYPOTHESIS
@given(data=st.data(), reverse=st.booleans())
def test_property_full_lengths_equal_no_lengths(data, reverse):
    _, xs, carry, _, resets = _draw_case(data)
    params = _params(LSTM)
    full = np.full((B,), T, np.int32)
    chex.assert_trees_all_close(
        _unroll_jit(LSTM, params, xs, carry, lengths=full, resets=resets, reverse=reverse),
        _unroll_jit(LSTM, params, xs, carry, resets=resets, reverse=reverse),
        rtol=1e-6,
        atol=1e-6,
    )


@HYPOTHESIS
@given(data=st.data())
def test_property_reset_at_step_0_ignores_the_carry(data):
    _, xs, carry, lengths, resets = _draw_case(data)
    params = _params(LSTM)
    resets[0] = True
    garbage = jax.tree.map(lambda c: 100.0 * c, carry)
    final, ys = _unroll_jit(LSTM, params, xs, garbage, lengths=lengths, resets=resets)
    fresh_final, fresh_ys = _unroll_jit(LSTM, params, xs, None, lengths=lengths, resets=resets)
    np.testing.assert_allclose(ys, fresh_ys, rtol=1e-6, atol=1e-6)
    # a sequence of length 0 has no step 0 to reset before: it keeps the carry passed in
    want_final = _np_where(lengths > 0, fresh_final, garbage)
    chex.assert_trees_all_close(final, want_final, rtol=1e-6, atol=1e-6)


@HYPOTHESIS
@given(data=st.data())
def test_property_reset_at_step_k_equals_running_the_suffix_from_scratch(data):
    """For each sequence b with a reset at step k_b: ys[k_b:, b] and the final carry are those of a
    fresh run (no carry) over xs[k_b:, b] with the later resets -- done at the same shapes by
    rolling each sequence left by k_b and giving it length T - k_b."""
    rng, xs, carry, _, resets = _draw_case(data)
    params = _params(LSTM)
    ks = np.array(data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B), label="k"))
    resets[ks, np.arange(B)] = True
    xs_np = np.asarray(xs)
    xs_s = np.stack([np.roll(xs_np[:, b], -k, axis=0) for b, k in enumerate(ks)], axis=1)
    resets_s = np.stack([np.roll(resets[:, b], -k) for b, k in enumerate(ks)], axis=1)
    resets_s[0] = False  # the suffix run starts fresh anyway (carry None)
    final, ys = _unroll_jit(LSTM, params, xs, carry, resets=resets)
    final_s, ys_s = _unroll_jit(LSTM, params, xs_s, None, lengths=(T - ks).astype(np.int32), resets=resets_s)
    chex.assert_trees_all_close(final, final_s, **TOL)
    for b, k in enumerate(ks):
        np.testing.assert_allclose(np.asarray(ys)[k:, b], np.asarray(ys_s)[: T - k, b], **TOL)


# --------------------------------------------------------------------------------------------------
# 4. layers


@pytest.mark.parametrize("reverse", [False, True], ids=["fw", "rev"])
def test_layer_apply_is_unroll(reverse):
    lay = jr.layer(GRU, reverse=reverse)
    params = lay.init(jax.random.PRNGKey(3), I, dtype=F32)
    chex.assert_trees_all_equal(params, GRU.init(jax.random.PRNGKey(3), I, dtype=F32))
    xs, carry = _normal(0, (T, B, I)), _random_carry(GRU, params, (B,))
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B)))
    want = ref_unroll(GRU, params, xs, carry, reverse=reverse, **kw)
    chex.assert_trees_all_close(lay.apply(params, xs, carry, key=jax.random.PRNGKey(0), **kw), want, **TOL)
    chex.assert_trees_all_close(lay.initial_carry(params, (B,)), GRU.initial_carry(params, (B,)))
    assert lay.output_size(params) == H


def _no_jit(fn):
    def run(*args, **kwargs):
        with jax.disable_jit():
            return fn(*args, **kwargs)

    return run


def test_layer_apply_time_axis():
    lay = jr.layer(ELMAN)
    params = _params(ELMAN)
    xs = _normal(0, (T, B, I))
    final, ys = lay.apply(params, jnp.swapaxes(xs, 0, 1), time_axis=1)
    chex.assert_trees_all_close((final, jnp.swapaxes(ys, 0, 1)), ref_unroll(ELMAN, params, xs), **TOL)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "lengths+resets"])
def test_bidirectional(masked):
    bi = jr.bidirectional(LSTM)
    params = bi.init(jax.random.PRNGKey(4), I, dtype=F32)
    assert not np.allclose(params["forward"]["W_xh"], params["backward"]["W_xh"])  # separate params
    xs = _normal(0, (T, B, I))
    carry = (
        _random_carry(LSTM, params["forward"], (B,), 1),
        _random_carry(LSTM, params["backward"], (B,), 2),
    )
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B))) if masked else {}
    fw = ref_unroll(LSTM, params["forward"], xs, carry[0], **kw)
    if masked:  # padding-aware: each sequence's backward pass covers its valid prefix only
        bw = ref_reverse_by_flipping(LSTM, params["backward"], xs, carry[1], **kw)
    else:
        bw = ref_unroll(LSTM, params["backward"], xs, carry[1], reverse=True)
    for apply in (_no_jit(bi.apply), jax.jit(bi.apply)):
        (f_final, b_final), ys = apply(params, xs, carry, **kw)
        assert ys.shape == (T, B, 2 * H)
        chex.assert_trees_all_close(f_final, fw[0], **TOL)
        chex.assert_trees_all_close(b_final, bw[0], **TOL)
        chex.assert_trees_all_close(ys, np.concatenate([fw[1], bw[1]], axis=-1), **TOL)
    assert bi.output_size(params) == 2 * H
    init = bi.initial_carry(params, (B,))
    chex.assert_trees_all_equal(
        init, (LSTM.initial_carry(params["forward"], (B,)), LSTM.initial_carry(params["backward"], (B,)))
    )


def test_bidirectional_with_different_cells():
    bi = jr.bidirectional(GRU, jr.elman(2))
    params = bi.init(jax.random.PRNGKey(5), I, dtype=F32)
    assert bi.output_size(params) == H + 2
    xs = _normal(0, (T, B, I))
    (f_final, b_final), ys = bi.apply(params, xs)
    f_want = ref_unroll(GRU, params["forward"], xs)
    b_want = ref_unroll(jr.elman(2), params["backward"], xs, reverse=True)
    chex.assert_trees_all_close((f_final, b_final), (f_want[0], b_want[0]), **TOL)
    chex.assert_trees_all_close(ys, np.concatenate([f_want[1], b_want[1]], -1), **TOL)


def test_stack_equals_chaining_unrolls():
    cells = (LSTM, GRU, jr.elman(4))
    deep = jr.stack(*cells)
    params = deep.init(jax.random.PRNGKey(6), I, dtype=F32)
    assert isinstance(params, tuple) and len(params) == 3
    assert [cells[l].input_size(params[l]) for l in range(3)] == [I, H, H]
    assert deep.output_size(params) == 4
    xs = _normal(0, (T, B, I))
    carry = tuple(_random_carry(c, p, (B,), seed=l) for l, (c, p) in enumerate(zip(cells, params)))
    kw = dict(lengths=_lengths((B,)), resets=_resets((T, B)))
    h, finals = xs, []
    for c, p, s in zip(cells, params, carry):
        f, h = ref_unroll(c, p, h, s, **kw)
        finals.append(f)
    finals, ys = tuple(finals), h
    apply = jax.jit(deep.apply)
    chex.assert_trees_all_close(apply(params, xs, carry, **kw), (finals, ys), **TOL)
    # default carry: each layer's initial carry; a tuple, one entry per layer
    init = deep.initial_carry(params, (B,))
    assert isinstance(init, tuple) and len(init) == 3
    chex.assert_trees_all_close(init, tuple(c.initial_carry(p, (B,)) for c, p in zip(cells, params)))
    chex.assert_trees_all_close(
        apply(params, xs, init, **kw), apply(params, xs, None, **kw), rtol=1e-6, atol=1e-6
    )


def test_stack_of_bidirectional_layers():
    deep = jr.stack(jr.bidirectional(LSTM), jr.bidirectional(GRU))
    params = deep.init(jax.random.PRNGKey(7), I, dtype=F32)
    assert params[1]["forward"]["W_xh"].shape[0] == 2 * H  # layer 2 reads both directions
    assert deep.output_size(params) == 2 * H
    xs = _normal(0, (T, B, I))
    lengths = _lengths((B,))
    h, finals = xs, []
    for cell, p in zip((LSTM, GRU), params):
        f_fw, y_fw = ref_unroll(cell, p["forward"], h, lengths=lengths)
        f_bw, y_bw = ref_reverse_by_flipping(cell, p["backward"], h, lengths=lengths)
        finals.append((f_fw, f_bw))
        h = np.concatenate([y_fw, y_bw], axis=-1)
    got = jax.jit(deep.apply)(params, xs, lengths=lengths)
    chex.assert_trees_all_close(got, (tuple(finals), h), **TOL)


def test_stack_skip_connections():
    cells = (LSTM, GRU, ELMAN)
    deep = jr.stack(*cells, skip=True)
    params = deep.init(jax.random.PRNGKey(8), I, dtype=F32)
    xs = _normal(0, (T, B, I))
    kw = dict(lengths=_lengths((B,)))
    h, finals = xs, []
    for l, (c, p) in enumerate(zip(cells, params)):
        f, y = ref_unroll(c, p, h, **kw)
        h = y + h if l > 0 else y
        finals.append(f)
    chex.assert_trees_all_close(jax.jit(deep.apply)(params, xs, **kw), (tuple(finals), h), **TOL)
    with pytest.raises(ValueError, match=r"skip=True needs equal widths.*layer 1"):
        jr.stack(LSTM, jr.gru(H + 1), skip=True).init(jax.random.PRNGKey(0), I, dtype=F32)


def _probe(width):
    """An identity Layer: lets a test see exactly what a stack feeds into a layer."""
    return jr.Layer(
        init=lambda key, n, dtype=F32: {},
        initial_carry=lambda params, batch_shape=(): (),
        apply=lambda params, xs, carry=None, *, lengths=None, resets=None, key=None, time_axis=0: ((), xs),
        output_size=lambda params: width,
        name="probe",
    )


def test_stack_dropout_statistics():
    """Inverted dropout applied once, between the two layers (not on the stack's input or output):
    each entry is either 0 or x / (1 - rate), a fraction ~rate of them 0."""
    rate, n_feat = 0.3, 8
    deep = jr.stack(_probe(n_feat), _probe(n_feat), dropout=rate)
    params = deep.init(jax.random.PRNGKey(0), n_feat, dtype=F32)
    xs = _normal(0, (40, 16, n_feat)) + 3.0  # no exact zeros
    assert np.all(np.asarray(xs) != 0)
    _, ys = jax.jit(deep.apply)(params, xs, key=jax.random.PRNGKey(1))
    ys, xs = np.asarray(ys), np.asarray(xs)
    dropped = ys == 0
    np.testing.assert_allclose(ys[~dropped], xs[~dropped] / (1 - rate), rtol=1e-6)
    # 5120 i.i.d. Bernoulli(0.3): std of the fraction ~0.0064; dropping twice would give 0.51
    assert abs(dropped.mean() - rate) < 0.04
    # i.i.d. over steps, sequences and features: no whole step / feature is dropped together
    assert 0 < dropped.mean(axis=(1, 2)).min() and dropped.mean(axis=(1, 2)).max() < 1
    assert abs(dropped.mean(axis=(0, 1)) - rate).max() < 0.1
    # no key: no dropout at all
    chex.assert_trees_all_equal(deep.apply(params, xs)[1], xs)


def test_stack_dropout_key_none_is_deterministic_and_equals_no_dropout():
    cells = (LSTM, GRU)
    with_drop, no_drop = jr.stack(*cells, dropout=0.5), jr.stack(*cells)
    params = with_drop.init(jax.random.PRNGKey(9), I, dtype=F32)
    xs = _normal(0, (T, B, I))
    apply_drop = jax.jit(lambda p, xs, key: with_drop.apply(p, xs, key=key))
    apply_none = jax.jit(lambda p, xs, key: no_drop.apply(p, xs, key=key))
    a = apply_drop(params, xs, None)
    chex.assert_trees_all_equal(a, apply_drop(params, xs, None))
    chex.assert_trees_all_equal(a, apply_none(params, xs, None))
    # layer 1 of the stack, run by hand on the layer-0 outputs, without dropout
    _, h0 = ref_unroll(LSTM, params[0], xs)
    chex.assert_trees_all_close(a[1], ref_unroll(GRU, params[1], h0)[1], **TOL)
    # a key: dropout acts, differently for different keys, the same for the same key
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    d1 = apply_drop(params, xs, k1)[1]
    assert not np.allclose(d1, a[1])
    assert not np.allclose(d1, apply_drop(params, xs, k2)[1])
    chex.assert_trees_all_equal(d1, apply_drop(params, xs, k1)[1])
    # the first layer's input is never dropped: layer-0 finals are the same with and without a key
    chex.assert_trees_all_close(apply_drop(params, xs, k1)[0][0], a[0][0], rtol=1e-6, atol=1e-6)
    # and a key without a dropout rate changes nothing
    chex.assert_trees_all_close(apply_none(params, xs, k1), a, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# 5. bad input: clear errors, before tracing


def _setup():
    params = _params(LSTM)
    return params, _normal(0, (T, B, I))


BAD_UNROLL = {  # name: (kwargs overriding a valid call, error type, regex the message must match)
    "xs rank 1": (dict(xs=np.zeros((I,), np.float32)), ValueError, r"unroll: xs must have shape.*rank 1"),
    "feature size": (
        dict(xs=np.zeros((T, B, I + 1), np.float32)),
        ValueError,
        rf"input_size={I}\).*got \({T}, {B}, {I + 1}\)",
    ),
    "T = 0": (dict(xs=np.zeros((0, B, I), np.float32)), ValueError, r"empty time axis \(T = 0\)"),
    "xs complex": (dict(xs=np.zeros((T, B, I), np.complex64)), TypeError, r"xs must be a real-valued"),
    "lengths float": (dict(lengths=np.full((B,), 2.0)), TypeError, r"lengths must be an integer array"),
    "lengths negative": (dict(lengths=np.array([1, -1, 2, 3])), ValueError, r"lengths must be in \[0, T=6\]"),
    "lengths > T": (dict(lengths=np.array([1, T + 1, 2, 3])), ValueError, r"lengths must be in \[0, T=6\]"),
    "lengths shape": (
        dict(lengths=np.array([1, 2, 3])),
        ValueError,
        r"lengths must have shape \(4,\).*\(3,\)",
    ),
    "lengths with time": (dict(lengths=np.ones((T, B), int)), ValueError, r"lengths must have shape"),
    "resets non-bool": (dict(resets=np.zeros((T, B), np.int32)), TypeError, r"resets must be a boolean"),
    "resets shape": (dict(resets=np.zeros((T, B + 1), bool)), ValueError, r"resets must have the shape"),
    "resets with features": (dict(resets=np.zeros((T, B, I), bool)), ValueError, r"resets must have the"),
    "carry shape": (
        dict(carry=jr.LSTMCarry(np.zeros((B + 1, H), np.float32), np.zeros((B + 1, H), np.float32))),
        ValueError,
        r"carry leaves must have shapes",
    ),
    "carry unbatched": (
        dict(carry=jr.LSTMCarry(np.zeros((H,), np.float32), np.zeros((H,), np.float32))),
        ValueError,
        r"carry leaves must have shapes",
    ),
    "carry structure": (
        dict(carry=np.zeros((B, H), np.float32)),
        ValueError,
        r"carry must have the structure",
    ),
    "carry tuple not LSTMCarry": (
        dict(carry=(np.zeros((B, H), np.float32), np.zeros((B, H), np.float32))),
        ValueError,
        r"carry must have the structure",
    ),
    "carry NaN": (
        dict(carry=jr.LSTMCarry(np.full((B, H), np.nan, np.float32), np.zeros((B, H), np.float32))),
        ValueError,
        r"carry contains NaN or Inf",
    ),
    "carry Inf": (
        dict(carry=jr.LSTMCarry(np.zeros((B, H), np.float32), np.full((B, H), np.inf, np.float32))),
        ValueError,
        r"carry contains NaN or Inf",
    ),
    "time_axis = features": (dict(time_axis=2), ValueError, r"time_axis must index a non-feature axis"),
    "time_axis = -1": (dict(time_axis=-1), ValueError, r"time_axis must index a non-feature axis"),
    "time_axis too large": (dict(time_axis=3), ValueError, r"time_axis must index a non-feature axis"),
    "time_axis too small": (dict(time_axis=-4), ValueError, r"time_axis must index a non-feature axis"),
    "time_axis float": (dict(time_axis=1.0), TypeError, r"time_axis must be an int"),
    "unroll 0": (dict(unroll=0), ValueError, r"unroll must be a positive int"),
    "unroll float": (dict(unroll=1.5), TypeError, r"unroll must be a positive int"),
    "remat string": (dict(remat="yes"), TypeError, r"remat must be a bool or a jax.checkpoint policy"),
    "cell not a Cell": (dict(cell=lambda p, c, x: c), TypeError, r"unroll: cell must be a jaxrnn Cell"),
    "params of no cell": (
        dict(params={}),
        ValueError,
        r'unroll: params do not match this lstm\(hidden_size=5\): missing params\["W_hh"\]',
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_UNROLL))
def test_unroll_bad_input(case):
    params, xs = _setup()
    overrides, error, pattern = BAD_UNROLL[case]
    kw = {"cell": LSTM, "params": params, "xs": xs, **overrides}
    with pytest.raises(error, match=pattern):
        jr.unroll(**kw)


SHAPE_ONLY = [  # errors that depend only on shapes and dtypes: the same under jit
    "xs rank 1",
    "feature size",
    "T = 0",
    "lengths float",
    "lengths shape",
    "resets non-bool",
    "resets shape",
    "carry shape",
    "carry structure",
    "time_axis = features",
]


@pytest.mark.parametrize("case", SHAPE_ONLY)
def test_unroll_bad_input_under_jit(case):
    params, xs = _setup()
    overrides, error, pattern = BAD_UNROLL[case]
    static = {k: v for k, v in overrides.items() if k == "time_axis"}
    arrays = {k: v for k, v in overrides.items() if k != "time_axis"}

    @jax.jit
    def f(arrays):
        kw = {"params": params, "xs": xs, **arrays}
        return jr.unroll(LSTM, **kw, **static)

    with pytest.raises(error, match=pattern):
        f(arrays)


def test_bad_lengths_values_are_checked_only_when_concrete():
    """Under jit the lengths are traced: values cannot be checked, shapes still are."""
    params, xs = _setup()
    lengths = np.array([0, T, 2, 3], np.int32)
    got = jax.jit(lambda ls: jr.unroll(LSTM, params, xs, lengths=ls))(lengths)
    chex.assert_trees_all_close(got, ref_unroll(LSTM, params, xs, lengths=lengths), **TOL)


def test_layer_constructors_bad_input():
    with pytest.raises(TypeError, match=r"layer: cell must be a jaxrnn Cell"):
        jr.layer("lstm")
    with pytest.raises(TypeError, match=r"bidirectional: cell must be a jaxrnn Cell"):
        jr.bidirectional(LSTM, backward=object())
    with pytest.raises(TypeError, match=r"bidirectional: cell must be a jaxrnn Cell"):
        jr.bidirectional(None)
    with pytest.raises(ValueError, match=r"stack: give at least one"):
        jr.stack()
    with pytest.raises(TypeError, match=r"stack: expected Cells or Layers; got str"):
        jr.stack(LSTM, "gru")
    for rate in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"stack: dropout must be a finite real number in \[0, 1\)"):
            jr.stack(LSTM, GRU, dropout=rate)
    deep = jr.stack(LSTM, GRU)
    params = deep.init(jax.random.PRNGKey(0), I, dtype=F32)
    xs = _normal(0, (T, B, I))
    with pytest.raises(ValueError, match=r"stack: params must be a tuple with one entry per layer \(2\)"):
        deep.apply(params[:1], xs)
    with pytest.raises(ValueError, match=r"stack: carry must be a tuple with one entry per layer \(2\)"):
        deep.apply(params, xs, deep.initial_carry(params, (B,))[:1])
    # a bad input reaches the layer's unroll, which names it
    with pytest.raises(ValueError, match=rf"input_size={I}\)"):
        deep.apply(params, _normal(0, (T, B, I + 2)))


# --------------------------------------------------------------------------------------------------
# 6. remat on a longer sequence


def test_remat_long_sequence_gradients():
    n = 256
    params = _params(ELMAN)
    xs = _normal(30, (n, 2, I), scale=0.5)
    carry = _random_carry(ELMAN, params, (2,))
    lengths = np.array([n, 200], np.int32)
    want_aux, want_grads = _value_and_grad(ELMAN, params, xs, carry, lengths, None)
    aux, grads = _value_and_grad(ELMAN, params, xs, carry, lengths, None, remat=True)
    chex.assert_trees_all_close(aux, want_aux, **TOL)
    chex.assert_trees_all_close(grads, want_grads, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(grads[1])[200:, 1], 0.0)


def test_remat_memory_grows_like_sqrt_T():
    """XLA's memory analysis of BPTT through an LSTM (nothing is run): with remat=True the temporary
    memory is a small fraction of the stored-residual version and grows ~sqrt(T), because neither the
    step residuals nor the (T, B, 4H) input projection are stored whole."""
    cell = jr.lstm(16)
    params = cell.init(jax.random.PRNGKey(0), 4)

    def temp_bytes(T, remat):
        xs = jax.ShapeDtypeStruct((T, 2, 4), jnp.float32)
        loss = lambda p, x: jnp.sum(jr.unroll(cell, p, x, remat=remat, fused=False)[0].h)
        compiled = jax.jit(jax.grad(loss)).lower(params, xs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    full, remat = temp_bytes(4096, False), temp_bytes(4096, True)
    assert remat < full / 8, (remat, full)
    assert temp_bytes(16384, True) < 3 * remat  # 4x the steps, ~2x the memory


# --------------------------------------------------------------------------------------------------
# probes: dL/ds_t from the ordinary jax.grad


def test_probes_give_the_backpropagated_errors_of_bptt():
    """grad w.r.t. zero probes == dL/ds_t computed by brute force: perturb s_t, rerun the tail."""
    cell = jr.elman(3)
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), cell.init(k1, 2))
    xs = jax.random.normal(k2, (5, 2, 2), jnp.float64)
    lengths = jnp.array([5, 3])

    def loss(probes):
        _, ys = jr.unroll(cell, params, xs, lengths=lengths, probes=probes)
        return jnp.sum(jnp.sin(ys))

    zeros = jnp.zeros((5, 2, 3), jnp.float64)
    g = jax.grad(loss)(zeros)
    no_probes = jnp.sum(jnp.sin(jr.unroll(cell, params, xs, lengths=lengths)[1]))
    np.testing.assert_allclose(loss(zeros), no_probes)  # zero probes change nothing

    def brute(t):  # loss as a function of s_t alone (python loop from step t+1 on)
        def f(s_t):
            total = 0.0
            h = jnp.zeros((2, 3), jnp.float64)
            for u in range(5):
                valid = (u < lengths)[:, None]
                new = cell.step(params, h, xs[u]) if u != t else s_t
                h = jnp.where(valid, new, h)
                total = total + jnp.sum(jnp.where(valid, jnp.sin(new), 0.0))
            return total

        h = jnp.zeros((2, 3), jnp.float64)
        for u in range(t + 1):
            h = cell.step(params, h, xs[u])
        return jax.grad(f)(h)

    for t in range(5):
        want = np.array(brute(t))
        want[np.asarray(t >= lengths)] = 0.0  # padding steps receive no error
        np.testing.assert_allclose(g[t], want, atol=1e-12)


def test_probes_bad_shape():
    cell = jr.elman(3)
    params = cell.init(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="probes"):
        jr.unroll(cell, params, jnp.zeros((5, 2, 2), jnp.float32), probes=jnp.zeros((5, 3)))


# --------------------------------------------------------------------------------------------------
# whole-sequence kernels (cell.kernel) and fused=


def _kernel_cell(calls, decline=False):
    """An Elman cell whose kernel runs the recurrence in a Python loop and records that it ran."""
    from jaxrnn.cells.base import SequenceKernel

    base = jr.elman(3)

    def apply(params, carry, xs, *, lengths, reverse, unroll):
        calls.append((lengths is not None, reverse))
        if decline or reverse:
            return None
        s, states = carry, []
        for t in range(xs.shape[0]):
            new = base.step(params, s, xs[t])
            s = new if lengths is None else jnp.where((t < lengths)[..., None], new, s)
            states.append(new)
        return s, jnp.stack(states)

    return jr.cells.custom(
        "elman_kernel",
        init=base.init,
        initial_carry=base.initial_carry,
        project=base.project,
        recur=base.recur,
        output=base.output,
        kernel=SequenceKernel(apply),
    )


def test_unroll_uses_a_cells_kernel_only_where_it_serves():
    calls = []
    cell = _kernel_cell(calls)
    params = cell.init(jax.random.PRNGKey(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (5, 4, 2), jnp.float64)
    lengths = jnp.array([5, 3, 0, 1])
    ref = jr.unroll(cell, params, xs, lengths=lengths, fused=False)
    assert calls == []
    got = jr.unroll(cell, params, xs, lengths=lengths)
    assert calls == [(True, False)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, ref)
    grad = jax.jit(  # compiled, not dispatched op by op
        jax.grad(lambda p, fused: jnp.sum(jr.unroll(cell, p, xs, lengths=lengths, fused=fused)[1] ** 2)),
        static_argnums=1,
    )
    g_ref, g_got = grad(params, False), grad(params, True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), g_got, g_ref)
    # time_axis: the kernel sees time first, ys come back on axis 1
    got_b = jr.unroll(cell, params, jnp.moveaxis(xs, 0, 1), lengths=lengths, time_axis=1)
    np.testing.assert_allclose(got_b[1], jnp.moveaxis(ref[1], 0, 1), rtol=1e-12)
    # not used: resets, probes, remat, a truncation (cuts), declined options
    n = len(calls)
    jr.unroll(cell, params, xs, resets=jnp.zeros((5, 4), bool))
    jr.unroll(cell, params, xs, remat=True)
    jr.unroll(jr.truncate(cell, jr.truncation.every(2, 5)), params, xs)
    assert len(calls) == n
    rev = jr.unroll(cell, params, xs, lengths=lengths, reverse=True)  # declined: reference scan
    assert calls[-1] == (True, True)
    np.testing.assert_allclose(
        rev[1], jr.unroll(cell, params, xs, lengths=lengths, reverse=True, fused=False)[1]
    )
    with pytest.raises(TypeError, match="fused must be a bool"):
        jr.unroll(cell, params, xs, fused="yes")


def test_unroll_factor_is_what_lax_scan_accepts():
    cell = jr.gru(3)
    params = cell.init(jax.random.PRNGKey(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 2), jnp.float64)
    want = jr.unroll(cell, params, xs, fused=False)
    for u in (True, False, 2, 5):
        for fused in (True, False):
            got = jr.unroll(cell, params, xs, unroll=u, fused=fused)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, want)
    for bad, exc in (("2", TypeError), (0, ValueError), (1.5, TypeError)):
        with pytest.raises(exc, match="unroll: unroll must be a positive int"):
            jr.unroll(cell, params, xs, unroll=bad)


def test_a_custom_cell_is_a_cell_for_every_consumer():
    def init(key, input_size, dtype=jnp.float32):
        return {"W": jax.random.normal(key, (input_size, 3), dtype)}

    def initial_carry(params, batch_shape=()):
        return jnp.zeros((*batch_shape, 3), params["W"].dtype)

    def recur(params, s, x):
        return 0.9 * s + jnp.tanh(x @ params["W"])

    def output(s):
        return s

    cell = jr.cells.custom(
        "leaky",
        init=init,
        initial_carry=initial_carry,
        recur=recur,
        output=output,
        input_size=lambda p: p["W"].shape[0],
    )
    again = jr.cells.custom(
        "leaky",
        init=init,
        initial_carry=initial_carry,
        recur=recur,
        output=output,
        input_size=cell.hparams["input_size"],
    )
    assert cell == again and hash(cell) == hash(again) and repr(cell) == "custom(name='leaky')"
    params = cell.init(jax.random.PRNGKey(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 2), jnp.float64)
    s, ys = jnp.zeros((2, 3)), []
    for t in range(4):
        s = 0.9 * s + jnp.tanh(xs[t] @ params["W"])
        ys.append(s)
    final, got = jr.unroll(cell, params, xs)
    np.testing.assert_allclose(got, jnp.stack(ys), rtol=1e-12)
    np.testing.assert_allclose(final, s, rtol=1e-12)
    J = jr.step_jacobians(cell, params, xs[:, 0])
    np.testing.assert_allclose(
        J[0], jax.jacobian(recur, argnums=1)(params, jnp.zeros(3), xs[0, 0]), rtol=1e-12
    )
    jr.truncate(cell, jr.truncation.every(2, 4))
    with pytest.raises(TypeError, match="custom: recur must be a callable"):
        jr.cells.custom("x", init=init, initial_carry=initial_carry, recur=None, output=output)
    with pytest.raises(TypeError, match="custom: name must be a str"):
        jr.cells.custom(3, init=init, initial_carry=initial_carry, recur=recur, output=output)


# --------------------------------------------------------------------------------------------------
# padding is inert; degenerate sizes

PAD_CELLS = {
    "elman": jr.elman(3),
    "lstm": jr.lstm(3),
    "gru": jr.gru(3),
    "min_gru": jr.min_gru(3),
    "lru": jr.lru(3),
    "bn_lstm_inference": jr.bn_lstm(
        3, 4, statistics=jr.cells.BNStatistics(*(jnp.ones((4, w)) for w in (12,) * 4 + (3,) * 2))
    ),
}


def _padded(bad):
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 2), jnp.float32)
    lengths = jnp.array([4, 2])
    return xs.at[2:, 1].set(bad), lengths


@pytest.mark.parametrize(
    ("name", "kw"),
    [(n, {}) for n in PAD_CELLS]
    + [("lstm", dict(fused=False)), ("gru", dict(reverse=True)), ("elman", dict(remat=True))],
)
def test_nan_and_inf_padding_never_reach_values_or_gradients(name, kw):
    cell = PAD_CELLS[name]
    params = cell.init(jax.random.PRNGKey(0), 2)

    def loss(p, xs, lengths):
        final, ys = jr.unroll(cell, p, xs, lengths=lengths, **kw)
        return jnp.sum(ys**2) + sum(jnp.sum(f**2) for f in jax.tree.leaves(final))

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    want = f(params, *_padded(0.0))
    for bad in (jnp.nan, jnp.inf):
        got = f(params, *_padded(bad))
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_padding_is_inert_in_layers_tbptt_and_pascanu():
    cell = jr.elman(3)
    params = cell.init(jax.random.PRNGKey(0), 2)
    bi = jr.bidirectional(cell)
    p_bi = bi.init(jax.random.PRNGKey(0), 2)

    def losses(p, p_bi, xs, lengths):
        return (
            jnp.sum(bi.apply(p_bi, xs, lengths=lengths)[1] ** 2),
            jnp.sum(jr.tbptt(cell, p, xs, 2, 3, lengths=lengths)[1] ** 2),
            jr.pascanu(cell, p, xs, lambda ys: jnp.sum(ys**2), lengths=lengths),
            jr.losses.transducer(
                lambda a, b: (a - b) ** 2,
                jr.unroll(cell, p, xs, lengths=lengths)[1],
                0 * xs[..., :1] + 1,
                lengths,
            ),
        )

    f = jax.jit(
        lambda *a: (losses(*a), jax.jacrev(lambda p, q: losses(p, q, *a[2:]), argnums=(0, 1))(*a[:2]))
    )
    want = f(params, p_bi, *_padded(0.0))
    got = f(params, p_bi, *_padded(jnp.nan))
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_empty_batches_and_zero_lengths_give_finite_results():
    cell = jr.lstm(3)
    params = cell.init(jax.random.PRNGKey(0), 2)
    empty = jnp.ones((4, 0, 2), jnp.float32)
    zero = (jnp.ones((4, 2, 2), jnp.float32), jnp.zeros((2,), jnp.int32))

    def loss(ys):
        return jnp.sum(ys**2)

    @jax.jit  # one compiled program, not each consumer dispatched op by op
    def all_results(params):
        return {
            "unroll": jr.unroll(cell, params, empty),
            "grad": jax.grad(lambda p: jnp.sum(jr.unroll(cell, p, empty)[1]))(params),
            "pascanu": jr.pascanu(cell, params, empty, loss),
            "pascanu_grad": jax.grad(lambda p: jr.pascanu(cell, p, empty, loss))(params),
            "gradient_flow": jr.gradient_flow(cell, params, empty, loss),
            "state_gradients": jr.state_gradients(cell, params, empty, loss),
            "tbptt": jr.tbptt(cell, params, empty, 2, 2),
            "transducer": jr.losses.transducer(
                lambda a, b: (a - b) ** 2, jnp.ones((4, 0, 1)), jnp.ones((4, 0, 1))
            ),
            "acceptor": jr.losses.acceptor(lambda a, b: (a - b) ** 2, jnp.ones((4, 0, 1)), jnp.ones((0, 1))),
            "pascanu_zero": jr.pascanu(cell, params, zero[0], loss, lengths=zero[1]),
            "gradient_flow_zero": jr.gradient_flow(cell, params, zero[0], loss, lengths=zero[1]),
            "unroll_zero": jr.unroll(cell, params, zero[0], lengths=zero[1]),
            "transducer_zero": jr.losses.transducer(
                lambda a, b: (a - b) ** 2, jnp.ones((4, 2, 1)), jnp.ones((4, 2, 1)), zero[1]
            ),
        }

    results = all_results(params)
    for name, r in results.items():
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(r)), name
    assert float(results["pascanu"]) == 0.0 and float(results["transducer"]) == 0.0
    np.testing.assert_array_equal(results["gradient_flow"], jnp.zeros(4))
    np.testing.assert_array_equal(results["unroll_zero"][1], 0.0)
    with pytest.raises(ValueError, match="bn_statistics: xs has an empty batch"):
        bn = jr.bn_lstm(3, 4)
        jr.cells.bn_statistics(bn, bn.init(jax.random.PRNGKey(0), 2), empty)
