"""Tests for jaxrnn.losses (Kitov's acceptor, encoder and transducer; the seq2seq loss) against plain
Python loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.losses import acceptor, encode, last_valid, seq2seq, transducer, valid_mask

F32, F64 = jnp.float32, jnp.float64
T, F = 4, 3
H, I, B = 3, 2, 3  # hidden size, input size, batch of the RNN tests
BATCHES = {"nobatch": (), "batch": (3,), "batch2": (2, 3)}
LENGTHS = {
    (): np.array(2, np.int32),
    (3,): np.array([4, 0, 2], np.int32),
    (2, 3): np.array([[4, 0, 2], [1, 3, 4]], np.int32),
}


# --------------------------------------------------------------------------------------------------
# independent numpy references


def _np_ce(p, y):
    p = np.asarray(p, np.float64)
    m = p.max()
    return m + np.log(np.sum(np.exp(p - m))) - p[int(y)]


def _np_l2(p, y):
    return 0.5 * np.sum((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2)


LOSSES = {
    "ce": (optax.softmax_cross_entropy_with_integer_labels, _np_ce),
    "l2": (optax.l2_loss, _np_l2),
}


def _normal(seed, shape, dtype=F32):
    """Test data from numpy's generator (jax.random would compile a sampler for every shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _randint(seed, shape, lo, hi):
    return jnp.asarray(np.random.default_rng(seed).integers(lo, hi, shape), jnp.int32)


def _targets(name, shape, seed, dtype=F32):
    """Per-step (or per-sequence) targets for ``shape = (*lead,)``: labels or ``(*lead, F)`` floats."""
    if name == "ce":
        return _randint(seed, shape, 0, F)
    return _normal(seed, (*shape, F), dtype)


def _data(name, batch, seed=0, dtype=F32, per_step=True):
    preds = _normal(seed, (T, *batch, F), dtype)
    targets = _targets(name, (T, *batch) if per_step else batch, seed + 100, dtype)
    return preds, targets


def _lengths_or_T(lengths, batch):
    return np.full(batch, T, np.int64) if lengths is None else np.asarray(lengths)


def _ref_transducer(np_loss, preds, targets, lengths, reduction):
    preds, targets = np.asarray(preds), np.asarray(targets)
    batch = preds.shape[1:-1]
    n = _lengths_or_T(lengths, batch)
    l = np.zeros((T, *batch))
    for t in range(T):
        for b in np.ndindex(*batch):
            if t < n[b]:
                l[(t, *b)] = np_loss(preds[(t, *b)], targets[(t, *b)])
    if reduction == "none":
        return l
    if reduction == "sum":
        return l.sum()
    if reduction == "mean":
        return l.sum() / max(n.sum(), 1)
    per_seq = [l[(slice(None), *b)].sum() / n[b] for b in np.ndindex(*batch) if n[b] > 0]
    return np.mean(per_seq) if per_seq else 0.0


def _ref_acceptor(np_loss, preds, targets, lengths, reduction):
    preds, targets = np.asarray(preds), np.asarray(targets)
    batch = preds.shape[1:-1]
    n = _lengths_or_T(lengths, batch)
    l = np.zeros(batch)
    for b in np.ndindex(*batch):
        if n[b] > 0:
            l[b] = np_loss(preds[(n[b] - 1, *b)], targets[b])
    if reduction == "none":
        return l
    if reduction == "sum":
        return l.sum()
    kept = [l[b] for b in np.ndindex(*batch) if n[b] > 0]
    return np.mean(kept) if kept else 0.0


# --------------------------------------------------------------------------------------------------
# valid_mask and last_valid


@pytest.mark.parametrize("batch", list(BATCHES.values()), ids=list(BATCHES))
def test_valid_mask_matches_a_loop(batch):
    lengths = LENGTHS[batch]
    want = np.zeros((T, *batch), bool)
    for t in range(T):
        for b in np.ndindex(*batch):
            want[(t, *b)] = t < lengths[b]
    np.testing.assert_array_equal(valid_mask(lengths, T), want)
    np.testing.assert_array_equal(
        jax.jit(valid_mask, static_argnums=1)(jnp.asarray(lengths), T), want
    )  # traced lengths
    if batch:
        np.testing.assert_array_equal(valid_mask(lengths, T, time_axis=1), np.moveaxis(want, 0, 1))
        np.testing.assert_array_equal(valid_mask(lengths, T, time_axis=-1), np.moveaxis(want, 0, -1))


@jax.jit
def _jit_last_valid(ys, lengths):  # with and without lengths; time on axis 0, and 1 for batch dims
    out = {"with": [last_valid(ys, lengths)], "without": [last_valid(ys)]}
    if ys.ndim > 2:
        for k, L in (("with", lengths), ("without", None)):
            out[k].append(last_valid(jnp.moveaxis(ys, 0, 1), L, time_axis=1))
    return out


@pytest.mark.parametrize("batch", list(BATCHES.values()), ids=list(BATCHES))
def test_last_valid_matches_a_loop(batch):
    ys = _normal(1, (T, *batch, F))
    for with_lengths in ("with", "without"):
        lengths = LENGTHS[batch] if with_lengths == "with" else None
        n = _lengths_or_T(lengths, batch)
        want = np.zeros((*batch, F), np.float32)
        for b in np.ndindex(*batch):
            if n[b] > 0:
                want[b] = np.asarray(ys)[(n[b] - 1, *b)]
        for got in _jit_last_valid(ys, jnp.asarray(LENGTHS[batch]))[with_lengths]:
            np.testing.assert_array_equal(got, want)
        if batch == (3,):  # eager
            np.testing.assert_array_equal(last_valid(ys, lengths), want)
            np.testing.assert_array_equal(last_valid(jnp.moveaxis(ys, 0, 1), lengths, time_axis=-2), want)


def test_last_valid_of_unroll_is_the_output_of_the_final_carry():
    cell = jr.lstm(H)
    params = cell.init(jax.random.PRNGKey(0), I, F32)
    xs = _normal(1, (T, 3, I))
    lengths = np.array([4, 1, 3], np.int32)
    final, ys = jr.unroll(cell, params, xs, lengths=lengths)
    np.testing.assert_allclose(last_valid(ys, lengths), cell.output(final), rtol=1e-6)


def test_last_valid_gradient_only_reaches_the_last_valid_step():
    lengths = LENGTHS[(3,)]
    ys = _normal(2, (T, 3, F))
    valid_last = np.zeros((T, 3), bool)
    for b, n in enumerate(lengths):
        if n > 0:
            valid_last[n - 1, b] = True
    ys = jnp.where(valid_last[..., None], ys, jnp.nan)  # NaN everywhere else
    g = jax.grad(lambda y: jnp.sum(last_valid(y, lengths) * 2.0))(ys)
    np.testing.assert_array_equal(g, np.broadcast_to(np.where(valid_last[..., None], 2.0, 0.0), g.shape))


# --------------------------------------------------------------------------------------------------
# transducer and acceptor against loops


T_REDUCTIONS = ("mean", "sequence_mean", "sum", "none")
A_REDUCTIONS = ("mean", "sum", "none")


@functools.cache
def _library(batch):
    """Data and every result of transducer and acceptor for one batch shape: both losses, every
    reduction, with and without lengths, time on axis 0 and (with batch dims) on axis 1 -- in one
    compiled function (XLA compile time dominates), and eagerly for batch (3,)."""
    data = {name: (_data(name, batch), _data(name, batch, seed=5, per_step=False)) for name in LOSSES}
    ta = -3 if len(batch) == 2 else 1  # -3 is axis 1 of preds (B1, T, B2, F), counted on preds for labels too

    def compute(data, lengths, eager=False):  # eagerly only for ce with lengths (eager ops are slow)
        out = {}
        for name, ((p, t), (p_a, t_a)) in data.items():
            loss = LOSSES[name][0]
            for w, L in (("with", lengths), ("without", None)):
                if eager and (name, w) != ("ce", "with"):
                    continue
                for r in T_REDUCTIONS:
                    out["transducer", name, w, r, 0] = transducer(loss, p, t, L, reduction=r)
                    if batch:
                        p1, t1 = jnp.moveaxis(p, 0, 1), jnp.moveaxis(t, 0, 1)
                        out["transducer", name, w, r, 1] = transducer(
                            loss, p1, t1, L, time_axis=ta, reduction=r
                        )
                for r in A_REDUCTIONS:
                    out["acceptor", name, w, r, 0] = acceptor(loss, p_a, t_a, L, reduction=r)
                    if batch:
                        p1 = jnp.moveaxis(p_a, 0, 1)
                        out["acceptor", name, w, r, 1] = acceptor(loss, p1, t_a, L, time_axis=ta, reduction=r)
        return out

    lengths = jnp.asarray(LENGTHS[batch])
    results = {"jit": jax.jit(compute)(data, lengths)}
    if batch == (3,):
        results["eager"] = compute(data, lengths, eager=True)
    return data, results


def _check_library(fn, loss_name, batch, with_lengths, ref, reductions):
    data, results = _library(batch)
    (preds, targets), (preds_a, targets_a) = data[loss_name]
    if fn == "acceptor":
        preds, targets = preds_a, targets_a
    lengths = LENGTHS[batch] if with_lengths else None
    w = "with" if with_lengths else "without"
    checked = 0
    for r in reductions:
        want = ref(LOSSES[loss_name][1], preds, targets, lengths, r)
        for mode, got in results.items():
            for axis in (0, 1) if batch else (0,):
                if (fn, loss_name, w, r, axis) not in got:
                    continue
                g = got[fn, loss_name, w, r, axis]
                assert g.dtype == F32
                wa = np.moveaxis(want, 0, 1) if (r == "none" and axis and fn == "transducer") else want
                np.testing.assert_allclose(g, wa, rtol=2e-6, atol=1e-6, err_msg=f"{mode} {r} axis {axis}")
                checked += 1
    assert checked >= len(reductions) * (2 if batch else 1)


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("batch", list(BATCHES.values()), ids=list(BATCHES))
@pytest.mark.parametrize("with_lengths", [True, False])
def test_transducer_matches_a_loop(loss_name, batch, with_lengths):
    _check_library("transducer", loss_name, batch, with_lengths, _ref_transducer, T_REDUCTIONS)


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("batch", list(BATCHES.values()), ids=list(BATCHES))
@pytest.mark.parametrize("with_lengths", [True, False])
def test_acceptor_matches_a_loop(loss_name, batch, with_lengths):
    _check_library("acceptor", loss_name, batch, with_lengths, _ref_acceptor, A_REDUCTIONS)


def test_transducer_with_other_optax_losses():
    preds, y = _data("l2", (3,), seed=4)
    lengths = LENGTHS[(3,)]
    probs = jax.nn.softmax(y)
    bits = (y > 0).astype(F32)
    cases = [
        (optax.softmax_cross_entropy, probs, lambda p, q: -np.sum(q * (p - np.log(np.sum(np.exp(p)))))),
        (optax.squared_error, y, lambda p, q: np.sum((p - q) ** 2)),
        (
            optax.sigmoid_binary_cross_entropy,
            bits,
            lambda p, q: np.sum(np.logaddexp(0, p) - q * p),
        ),
    ]
    for loss, targets, np_loss in cases:
        want = _ref_transducer(
            lambda p, q, f=np_loss: f(np.float64(p), np.float64(q)), preds, targets, lengths, "sum"
        )
        np.testing.assert_allclose(
            transducer(loss, preds, targets, lengths, reduction="sum"), want, rtol=1e-5
        )


def test_transducer_all_empty_is_zero_not_nan():
    preds, targets = _data("ce", (3,))
    zero = np.zeros(3, np.int32)
    loss = LOSSES["ce"][0]
    for reduction in ("mean", "sequence_mean", "sum"):
        assert float(transducer(loss, preds, targets, zero, reduction=reduction)) == 0.0
    assert float(acceptor(loss, preds, targets[0], zero)) == 0.0


# --------------------------------------------------------------------------------------------------
# gradients


def _poison(loss_name, preds, targets, valid):
    """NaN predictions and garbage targets (-100 labels / NaN) wherever ``valid`` is False."""
    preds = jnp.where(valid[..., None], preds, jnp.nan)
    if loss_name == "ce":
        targets = jnp.where(valid, targets, -100)
    else:
        targets = jnp.where(valid[..., None], targets, jnp.nan)
    return preds, targets


@functools.partial(jax.jit, static_argnums=0)
def _transducer_values_and_grads(loss, preds, targets, lengths):
    vg = jax.value_and_grad(transducer, argnums=1)
    return {r: vg(loss, preds, targets, lengths, reduction=r) for r in ("mean", "sequence_mean", "sum")}


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_transducer_gradient_is_zero_on_padding_even_with_nan(loss_name):
    loss = LOSSES[loss_name][0]
    batch = (2, 3)
    preds, targets = _data(loss_name, batch, seed=6)
    lengths = LENGTHS[batch]
    valid = np.asarray(valid_mask(lengths, T))
    bad_p, bad_t = _poison(loss_name, preds, targets, valid)
    clean = _transducer_values_and_grads(loss, preds, targets, lengths)
    dirty = _transducer_values_and_grads(loss, bad_p, bad_t, lengths)
    for r, (value, grad) in clean.items():
        np.testing.assert_array_equal(np.asarray(grad)[~valid], 0.0)
        assert np.all(np.abs(np.asarray(grad)[valid]) > 0)
        np.testing.assert_allclose(dirty[r][0], value, rtol=1e-6)
        assert np.all(np.isfinite(dirty[r][1]))
        np.testing.assert_array_equal(dirty[r][1], grad)


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_acceptor_gradient_is_zero_off_the_last_step_even_with_nan(loss_name):
    loss = LOSSES[loss_name][0]
    preds, targets = _data(loss_name, (3,), seed=7, per_step=False)
    lengths = LENGTHS[(3,)]  # [4, 0, 2]: sequence 1 is empty, its target is garbage
    last = np.zeros((T, 3), bool)
    last[3, 0] = last[1, 2] = True
    grad = jax.jit(jax.grad(acceptor, argnums=1), static_argnums=0)
    clean = grad(loss, preds, targets, lengths)
    bad_p = jnp.where(last[..., None], preds, jnp.nan)
    bad_t = targets.at[1].set(-100 if loss_name == "ce" else jnp.nan)
    dirty = grad(loss, bad_p, bad_t, lengths)
    assert np.all(np.isfinite(dirty))
    np.testing.assert_array_equal(dirty, clean)
    np.testing.assert_array_equal(np.asarray(clean)[~last], 0.0)
    assert np.all(np.abs(np.asarray(clean)[last]) > 0)


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_check_grads_float64(loss_name):
    loss = LOSSES[loss_name][0]
    lengths = LENGTHS[(3,)]
    preds, targets = _data(loss_name, (3,), seed=8, dtype=F64)
    _, seq_targets = _data(loss_name, (3,), seed=8, dtype=F64, per_step=False)

    @jax.jit
    def f(preds):  # the three transducer reductions and the acceptor, weighted to tell them apart
        out = [
            transducer(loss, preds, targets, lengths, reduction=r) for r in ("mean", "sequence_mean", "sum")
        ]
        return jnp.stack(out + [acceptor(loss, preds, seq_targets, lengths)]) * jnp.array(
            [1.0, 2.0, 3.0, 4.0]
        )

    check_grads(f, (preds,), order=1, modes=("fwd", "rev"))


# --------------------------------------------------------------------------------------------------
# BPTT, encoder, seq2seq against hand-written loops

BPTT_LENGTHS = np.array([5, 2, 0], np.int32)


def _readout_params(seed, dtype=F64):
    return {"W": _normal(seed, (H, F), dtype), "b": _normal(seed + 1, (F,), dtype)}


def test_bptt_through_unroll_and_transducer_equals_a_python_loop():
    cell, T5 = jr.lstm(H), 5

    params = {"rnn": cell.init(jax.random.PRNGKey(0), I, F64), **_readout_params(9)}
    xs = _normal(11, (T5, B, I), F64)
    ys_true = _normal(12, (T5, B, F), F64)

    def library(params):
        _, ys = jr.unroll(cell, params["rnn"], xs, lengths=BPTT_LENGTHS)
        return transducer(optax.l2_loss, ys @ params["W"] + params["b"], ys_true, BPTT_LENGTHS)

    def loop(params):  # one sequence at a time, only its valid steps; mean over valid tokens
        total = 0.0
        for b in range(B):
            s = cell.initial_carry(params["rnn"], ())
            for t in range(int(BPTT_LENGTHS[b])):
                s = cell.step(params["rnn"], s, xs[t, b])
                pred = cell.output(s) @ params["W"] + params["b"]
                total = total + 0.5 * jnp.sum((pred - ys_true[t, b]) ** 2)
        return total / BPTT_LENGTHS.sum()

    v, g = jax.jit(jax.value_and_grad(library))(params)
    v_ref, g_ref = jax.value_and_grad(loop)(params)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), g, g_ref)


def _encode_loop(cell, params, xs, lengths, carry=None, reverse=False):
    """Per-sequence Python loop over the valid steps: (y_n, final) stacked over the batch."""
    batch = xs.shape[1:-1]
    s0 = cell.initial_carry(params, batch) if carry is None else carry
    outs, finals = [], []
    for b in np.ndindex(*batch):
        s = jax.tree.map(lambda c, b=b: c[b], s0)
        steps = range(int(lengths[b]))
        for t in reversed(steps) if reverse else steps:
            s = cell.step(params, s, xs[(t, *b)])
        outs.append(cell.output(s))
        finals.append(s)
    stack = lambda *xs: jnp.stack(xs).reshape(batch + xs[0].shape)
    return stack(*outs), jax.tree.map(stack, *finals)


@functools.partial(jax.jit, static_argnums=0)
def _jit_encodes(cell, params, xs, lengths, carry):
    """encode forward and reversed with lengths, and from a given carry with time on axis 1."""
    xs1, axis = (jnp.moveaxis(xs, 0, 1), 1) if xs.ndim > 2 else (xs, 0)
    return (
        encode(cell, params, xs, lengths=lengths),
        encode(cell, params, xs, lengths=lengths, reverse=True),
        encode(cell, params, xs1, carry, time_axis=axis),
    )


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=["nobatch", "batch", "batch2"])
def test_encode_matches_a_loop(batch):
    cell = jr.lstm(H)
    params = cell.init(jax.random.PRNGKey(0), I, F32)
    xs = _normal(10, (T, *batch, I))
    lengths = LENGTHS[batch]
    carry = jax.tree.map(lambda c: _normal(13, c.shape), cell.initial_carry(params, batch))
    want = (
        _encode_loop(cell, params, xs, lengths),
        _encode_loop(cell, params, xs, lengths, reverse=True),
        _encode_loop(cell, params, xs, _lengths_or_T(None, batch), carry=carry),
    )
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, _jit_encodes(cell, params, xs, lengths, carry), want)
    if batch == (3,):  # eager
        jax.tree.map(close, encode(cell, params, xs, lengths=lengths), want[0])


def test_encode_of_an_empty_sequence_is_the_initial_state():
    cell = jr.elman(H)
    params = jax.tree.map(lambda p: p + 0.5, cell.init(jax.random.PRNGKey(0), I, F32))
    xs = jnp.ones((T, 2, I), F32)
    carry = jnp.full((2, H), 0.25, F32)
    y_n, final = encode(cell, params, xs, carry, lengths=np.array([0, T], np.int32))
    np.testing.assert_array_equal(final[0], carry[0])
    np.testing.assert_array_equal(y_n[0], cell.output(carry)[0])
    assert not np.allclose(final[1], carry[1])


def test_errors():
    ce, l2 = optax.softmax_cross_entropy_with_integer_labels, optax.l2_loss
    preds, labels = _data("ce", (3,))
    lengths = LENGTHS[(3,)]
    for fn, tgt in ((transducer, labels), (acceptor, labels[0])):
        name = fn.__name__
        with pytest.raises(TypeError, match=f"{name}: loss must be a callable"):
            fn("ce", preds, tgt, lengths)
        with pytest.raises(ValueError, match=rf"{name}: loss\(preds, targets\) must return"):
            fn(lambda p, t: jnp.sum(p), preds, tgt, lengths)
        with pytest.raises(TypeError, match=f"{name}: loss must return a real floating"):
            fn(lambda p, t: jnp.argmax(p, -1), preds, tgt, lengths)
        with pytest.raises(ValueError, match=f"{name}: loss failed"):
            fn(l2, preds, jnp.zeros((*tgt.shape, 2), F32), lengths)  # 2 features against 3
        with pytest.raises(ValueError, match=f"{name}: reduction must be one of"):
            fn(ce, preds, tgt, lengths, reduction="avg")
        with pytest.raises(ValueError, match=rf"{name}: preds must have shape \(T, \*batch, features\)"):
            fn(ce, preds[:, 0, 0], tgt, None)
        with pytest.raises(TypeError, match=f"{name}: preds must be a real floating"):
            fn(ce, labels[..., None], tgt, lengths)
        with pytest.raises(ValueError, match=f"{name}: time_axis must index a non-feature axis of preds"):
            fn(ce, preds, tgt, lengths, time_axis=2)
        with pytest.raises(TypeError, match=f"{name}: time_axis must be an int"):
            fn(ce, preds, tgt, lengths, time_axis=0.0)
        with pytest.raises(ValueError, match=f"{name}: targets must have shape"):
            fn(ce, preds, tgt[..., :2], lengths)  # batch dim 2 != 3
        with pytest.raises(ValueError, match=rf"{name}: lengths must have shape \(3,\)"):
            fn(ce, preds, tgt, lengths[:2])
        with pytest.raises(TypeError, match=f"{name}: lengths must be an integer array"):
            fn(ce, preds, tgt, lengths.astype(np.float32))
        with pytest.raises(ValueError, match=rf"{name}: lengths must be in \[0, T=4\]"):
            fn(ce, preds, tgt, np.array([5, 0, 1], np.int32))
        with pytest.raises(ValueError, match=rf"{name}: lengths must be in \[0, T=4\]"):
            fn(ce, preds, tgt, np.array([-1, 0, 1], np.int32))
    with pytest.raises(ValueError, match="transducer: targets must have shape"):
        transducer(ce, preds, labels[:3], lengths)  # T = 3 != 4
    with pytest.raises(ValueError, match="transducer: targets must have shape"):
        transducer(ce, preds, labels.T, lengths)  # labels (B, T) where (T, B) is expected
    with pytest.raises(ValueError, match="transducer: targets must have shape"):
        transducer(ce, preds, labels[0], lengths)  # per-sequence targets for a per-step loss
    with pytest.raises(ValueError, match="acceptor: reduction must be one of"):
        acceptor(ce, preds, labels[0], lengths, reduction="sequence_mean")
    with pytest.raises(ValueError, match="transducer: preds has an empty time axis"):
        transducer(ce, preds[:0], labels[:0], None)

    with pytest.raises(ValueError, match=r"last_valid: ys must have shape"):
        last_valid(jnp.zeros((T,), F32))
    with pytest.raises(ValueError, match=r"last_valid: lengths must have shape \(3,\)"):
        last_valid(preds, lengths[None])
    with pytest.raises(ValueError, match=r"last_valid: lengths must be in \[0, T=4\]"):
        last_valid(preds, lengths + 1)
    with pytest.raises(ValueError, match="last_valid: time_axis must index a non-feature axis of ys"):
        last_valid(preds, time_axis=-1)

    with pytest.raises(TypeError, match="valid_mask: T must be a positive int"):
        valid_mask(lengths, 4.0)
    with pytest.raises(ValueError, match="valid_mask: T must be a positive int"):
        valid_mask(lengths, 0)
    with pytest.raises(TypeError, match="valid_mask: lengths must be an integer array"):
        valid_mask(np.array([1.0, 2.0]), 4)
    with pytest.raises(ValueError, match=r"valid_mask: lengths must be in \[0, T=3\]"):
        valid_mask(lengths, 3)
    with pytest.raises(ValueError, match="valid_mask: time_axis must index"):
        valid_mask(lengths, 4, time_axis=2)

    cell = jr.lstm(H)
    params = cell.init(jax.random.PRNGKey(0), I, F32)
    xs = jnp.zeros((T, 3, I), F32)
    with pytest.raises(TypeError, match="encode: cell must be a jaxrnn Cell"):
        encode(lambda x: x, params, xs)
    with pytest.raises(ValueError, match="encode: xs must have shape"):
        encode(cell, params, jnp.zeros((T, 3, I + 1), F32))
    with pytest.raises(ValueError, match=r"encode: lengths must have shape \(3,\)"):
        encode(cell, params, xs, lengths=np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match=r"encode: lengths must be in \[0, T=4\]"):
        encode(cell, params, xs, lengths=np.array([1, 2, 9], np.int32))
    with pytest.raises(ValueError, match="encode: carry leaves must have shapes"):
        encode(cell, params, xs, cell.initial_carry(params, (2,)))
    with pytest.raises(TypeError, match="encode: unexpected keyword argument"):
        encode(cell, params, xs, length=np.array([1, 2, 3], np.int32))


# --------------------------------------------------------------------------------------------------
# seq2seq: the teacher-forced encoder-decoder loss against a plain loop

S2S_V = 5  # vocabulary


def _s2s_params(enc, dec, I_enc, I_dec, H_dec, seed=20, **extra):
    return {
        "encoder": enc.init(jax.random.PRNGKey(seed), I_enc, F64),
        "decoder": dec.init(jax.random.PRNGKey(seed + 1), I_dec, F64),
        "embed": _normal(seed + 2, (S2S_V, I_dec), F64),
        "W": _normal(seed + 3, (H_dec, S2S_V), F64),
        "b": _normal(seed + 4, (S2S_V,), F64),
        **extra,
    }


def _s2s_loop(enc, dec, params, xs, ys_in, ys_out, x_len, y_len, bridge=None, reverse=False):
    """Per-step losses ``{(u, *b): -log p}``, one sequence at a time over its valid steps (jnp scalars)."""
    batch = xs.shape[1:-1]
    out = {}
    for b in np.ndindex(*batch):
        s = enc.initial_carry(params["encoder"], ())
        steps = range(int(x_len[b]))
        for t in reversed(steps) if reverse else steps:
            s = enc.step(params["encoder"], s, xs[(t, *b)])
        d = s if bridge is None else bridge(params, s)
        for u in range(int(y_len[b])):
            d = dec.step(params["decoder"], d, params["embed"][ys_in[(u, *b)]])
            logits = dec.output(d) @ params["W"] + params["b"]
            out[(u, *b)] = jax.nn.logsumexp(logits) - logits[ys_out[(u, *b)]]
    return out


def _reduce(per_step, y_len, reduction, U):
    batch = y_len.shape
    if reduction == "none":
        full = np.zeros((U, *batch))
        for k, v in per_step.items():
            full[k] = v
        return full
    if reduction == "sum":
        return sum(per_step.values())
    if reduction == "mean":
        return sum(per_step.values()) / max(int(y_len.sum()), 1)
    kept = [b for b in np.ndindex(*batch) if y_len[b] > 0]
    seqs = [sum(per_step[(u, *b)] for u in range(int(y_len[b]))) / y_len[b] for b in kept]
    return sum(seqs) / max(len(kept), 1)


def test_seq2seq_matches_a_loop_values_and_gradients():
    # two LSTMs (the encoder's final carry starts the decoder), a reversed source, padding on both sides
    # with garbage tokens there, a length-0 source and a length-0 target
    enc, dec = jr.lstm(H), jr.lstm(H)
    S, U = 4, 3
    params = _s2s_params(enc, dec, I, 2, H)
    xs = _normal(30, (S, B, I), F64)
    x_len, y_len = np.array([4, 0, 2], np.int32), np.array([3, 2, 0], np.int32)
    ys_in = np.array(_randint(31, (U, B), 0, S2S_V))
    ys_out = np.array(_randint(32, (U, B), 0, S2S_V))
    ys_in[2, 1], ys_out[2, 1], ys_in[:, 2], ys_out[:, 2] = -1, 99, 77, -5  # padding
    reductions = ("none", "sequence_mean")  # the others are transducer's, tested above

    def library(params):
        kw = dict(x_lengths=x_len, y_lengths=y_len, reverse_source=True)
        return [seq2seq(enc, dec, params, xs, ys_in, ys_out, reduction=r, **kw) for r in reductions]

    per_step = _s2s_loop(enc, dec, params, xs, ys_in, ys_out, x_len, y_len, reverse=True)
    run = jax.jit(library)
    for got, r in zip(run(params), reductions):
        np.testing.assert_allclose(got, _reduce(per_step, y_len, r, U), rtol=1e-12, atol=1e-14)
    # gradients: finite, reaching the encoder, and the directional derivative a central difference
    g = jax.jit(jax.grad(lambda p: library(p)[1]))(params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
    assert np.any(np.asarray(g["encoder"]["W_hh"]) != 0)
    used = {int(ys_in[u, b]) for b in range(B) for u in range(int(y_len[b]))}
    unused = [r for r in range(S2S_V) if r not in used]  # padding reads none of these rows' gradients
    assert unused and np.all(np.asarray(g["embed"])[unused] == 0) and np.any(np.asarray(g["embed"]) != 0)
    direction = jax.tree.map(lambda x: _normal(33, x.shape, F64), params)
    eps = 1e-6
    shifted = lambda sign: run(jax.tree.map(lambda p, d: p + sign * eps * d, params, direction))[1]
    fd = (shifted(1) - shifted(-1)) / (2 * eps)
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
    np.testing.assert_allclose(dot, fd, rtol=1e-6)


def test_seq2seq_with_a_bridge_and_two_batch_dims():
    # a GRU encoder (H=3) bridged to an LSTM decoder (H=2): d_0 = (tanh(s_n @ W_bridge), 0)
    enc, dec = jr.gru(H), jr.lstm(2)
    S, U, batch = 3, 2, (2, 2)
    params = _s2s_params(enc, dec, I, 3, 2, seed=40, bridge=_normal(45, (H, 2), F64))

    def bridge(params, s):
        h = jnp.tanh(s @ params["bridge"])
        return jr.LSTMCarry(h, jnp.zeros_like(h))

    xs = _normal(46, (S, *batch, I), F64)
    ys_in, ys_out = _randint(47, (U, *batch), 0, S2S_V), _randint(48, (U, *batch), 0, S2S_V)
    full = np.full(batch, S, np.int32), np.full(batch, U, np.int32)
    per_step = _s2s_loop(enc, dec, params, xs, ys_in, ys_out, *full, bridge=bridge)
    run = jax.jit(
        lambda p: [
            seq2seq(enc, dec, p, xs, ys_in, ys_out, bridge=bridge, reduction=r) for r in ("none", "mean")
        ]
    )
    none, mean = run(params)
    np.testing.assert_allclose(none, _reduce(per_step, full[1], "none", U), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mean, _reduce(per_step, full[1], "mean", U), rtol=1e-12)


def test_seq2seq_errors():
    enc, dec = jr.lstm(H), jr.lstm(H)
    params = _s2s_params(enc, dec, I, 2, H)
    xs = jnp.zeros((4, 3, I), F64)
    ys = jnp.zeros((2, 3), jnp.int32)
    lens = np.array([1, 2, 2], np.int32)
    call = lambda **kw: seq2seq(  # noqa: E731
        kw.pop("enc", enc),
        kw.pop("dec", dec),
        kw.pop("params", params),
        kw.pop("xs", xs),
        kw.pop("ys_in", ys),
        kw.pop("ys_out", ys),
        **kw,
    )
    for kw, exc, match in (
        (dict(enc="lstm"), TypeError, "seq2seq: encoder must be a jaxrnn Cell"),
        (dict(dec=jr.layer(dec)), TypeError, "seq2seq: decoder must be a jaxrnn Cell"),
        (dict(params=[1]), TypeError, "seq2seq: params must be a dict"),
        (dict(params={k: v for k, v in params.items() if k != "embed"}), ValueError, r"missing \['embed'\]"),
        (
            dict(params={**params, "encoder": {"W": params["encoder"]["W_xh"]}}),
            ValueError,
            'seq2seq: params\\["encoder"\\]',
        ),
        (
            dict(params={**params, "embed": params["embed"][:, :1]}),
            ValueError,
            r'seq2seq: params\["embed"\] must',
        ),
        (
            dict(params={**params, "W": params["W"][:2]}),
            ValueError,
            r'seq2seq: params\["W"\] must have shape',
        ),
        (
            dict(params={**params, "b": params["b"][:2]}),
            ValueError,
            r'seq2seq: params\["b"\] must have shape',
        ),
        (
            dict(params={**params, "W": np.ones((H, 5), int)}),
            TypeError,
            r'seq2seq: params\["W"\] must be a float',
        ),
        (dict(xs=jnp.zeros((4, 3, I + 1))), ValueError, "seq2seq: xs must have shape"),
        (dict(ys_in=ys.astype(F64)), TypeError, "seq2seq: ys_in must be an integer array"),
        (dict(ys_out=ys[:, :2]), ValueError, r"seq2seq: ys_out must have shape \(U, \*batch\)"),
        (
            dict(ys_out=jnp.zeros((3, 3), jnp.int32)),
            ValueError,
            "seq2seq: ys_out must have the shape of ys_in",
        ),
        (dict(ys_in=ys.at[0, 0].set(S2S_V)), ValueError, r"seq2seq: ys_in must be in \[0, V_in=5\)"),
        (dict(ys_out=ys.at[1, 0].set(-1)), ValueError, r"seq2seq: ys_out must be in \[0, V=5\)"),
        (dict(x_lengths=np.array([5, 1, 1])), ValueError, r"seq2seq: x_lengths must be in \[0, S=4\]"),
        (dict(x_lengths=lens.astype(float)), TypeError, "seq2seq: x_lengths must be an integer array"),
        (dict(y_lengths=np.array([3, 1, 1])), ValueError, r"seq2seq: y_lengths must be in \[0, U=2\]"),
        (dict(y_lengths=lens[:2]), ValueError, r"seq2seq: y_lengths must have shape \(3,\)"),
        (
            dict(dec=jr.gru(H), params={**params, "decoder": jr.gru(H).init(jax.random.PRNGKey(0), 2, F64)}),
            ValueError,
            "seq2seq: the encoder's final carry .* does not fit the decoder",
        ),
        (dict(bridge="tanh"), TypeError, "seq2seq: bridge must be None or a callable"),
        (dict(bridge=lambda p, s: s.h), ValueError, r"seq2seq: bridge\(params, carry\) .* does not fit"),
        (dict(bridge=lambda p, s: s @ p), TypeError, r"seq2seq: bridge\(params, carry\) failed"),
        (dict(reverse_source=1), TypeError, "seq2seq: reverse_source must be a bool"),
        (dict(reduction="avg"), ValueError, "seq2seq: reduction must be one of"),
    ):
        with pytest.raises(exc, match=match):
            call(**kw)
    # out-of-vocabulary tokens on padding steps are fine (checked and traced, not compiled)
    jax.eval_shape(lambda: call(ys_in=ys.at[1, 0].set(-1), ys_out=ys.at[1, 0].set(99), y_lengths=lens))
