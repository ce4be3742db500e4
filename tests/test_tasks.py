"""Task generators against numpy transcriptions of the authors' code, and their criteria by hand.

Each layout test recovers the random draws of a batch (length, positions, symbols, values), checks that
they lie where the authors' ``randint`` calls put them, and rebuilds the batch with the authors' own
array operations (pascanur/trainingRNNs, amarshah/complex_RNN, Hochreiter & Schmidhuber 1997 section
5.4): the rebuilt arrays must equal the generated ones exactly.
"""

import functools
import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import tasks as tk

B = 48


@functools.cache
def _task(name, **kwargs):
    return tk.make_task(name, **kwargs)


@functools.cache
def _jitted(name, test=False, **kwargs):
    task = _task(name, **kwargs)
    return jax.jit(task.sample_test if test else task.sample, static_argnums=1)


@functools.cache
def _jit(fn):
    return jax.jit(fn)


def _loss(task, preds, batch):
    return float(_jit(task.loss)(preds, batch))


def _error(task, preds, batch):
    return float(_jit(task.error)(preds, batch))


def _batch(name, seed=0, batch_size=B, **kwargs):
    b = _jitted(name, **kwargs)(jax.random.PRNGKey(seed), batch_size)
    return tuple(np.asarray(a) for a in b)


def _assert_one_hot_then_zero(xs, lengths):
    t = np.arange(xs.shape[0])[:, None]
    valid = t < lengths[None, :]
    np.testing.assert_array_equal(xs.sum(-1), valid.astype(np.float32))
    assert set(np.unique(xs)) <= {0.0, 1.0}


PASCANU = {"min_length": 20, "max_length": 40}
SYNTHETIC = [
    ("temporal_order", PASCANU),
    ("temporal_order_3bit", PASCANU),
    ("addition", PASCANU),
    ("multiplication", PASCANU),
    ("random_permutation", PASCANU),
    ("memorization", {"min_length": 5, "max_length": 9, "n_values": 3, "n_pos": 4}),
    ("adding_hochreiter", {"length": 40}),
    ("adding_arjovsky", {"length": 21}),
    ("copying", {"length": 7}),
]


# --------------------------------------------------------------------------------------------------
# integer arithmetic and lengths


def test_tenths_equal_the_codes_float_truncation():
    ls = np.arange(0, 20001)
    for c, literal in [(1, 0.1), (3, 0.3), (4, 0.4), (5, 0.5), (6, 0.6)]:  # the literals in the code
        expected = np.array([int(l * literal) for l in ls])
        np.testing.assert_array_equal(np.asarray(tk._tenths(jnp.asarray(ls, jnp.int32), c)), expected)


def test_pascanu_length_is_uniform_on_min_to_max_exclusive():
    draw = jax.jit(jax.vmap(lambda k: tk._pascanu_length(k, 10, 14)))
    ls = np.asarray(draw(jax.random.split(jax.random.PRNGKey(1), 400)))
    assert set(ls.tolist()) == {10, 11, 12, 13}
    assert int(tk._pascanu_length(jax.random.PRNGKey(0), 12, 12)) == 12


@pytest.mark.parametrize("name, kwargs", SYNTHETIC)
def test_shapes_dtypes_and_determinism(name, kwargs):
    task = _task(name, **kwargs)
    xs, targets, lengths = _batch(name, seed=3, **kwargs)
    assert xs.shape == (task.max_steps, B, task.input_size) and xs.dtype == np.float32
    assert lengths.shape == (B,) and lengths.dtype == np.int32 and lengths.max() <= task.max_steps
    if task.output == "last_softmax":
        assert targets.shape == (B,) and targets.dtype == np.int32
        assert targets.min() >= 0 and targets.max() < task.output_size
    elif task.output == "last_linear":
        assert targets.shape == (B, task.output_size) and targets.dtype == np.float32
    else:
        assert targets.shape == (task.max_steps, B) and targets.dtype == np.int32
    again = _batch(name, seed=3, **kwargs)
    for a, b in zip((xs, targets, lengths), again):
        np.testing.assert_array_equal(a, b)
    other = _batch(name, seed=4, **kwargs)
    assert not np.array_equal(xs, other[0])


# --------------------------------------------------------------------------------------------------
# Pascanu et al. 2013, rebuilt with the authors' code


def _ref_temporal_order(l, positions, values, distractors, n_classes):
    """tempOrder.py / tempOrder3bit.py ``generate`` with the draws given."""
    batchsize = len(values[0])
    vals = distractors.copy()
    for p, v in zip(positions, values):
        vals[p, np.arange(batchsize)] = v
    data = np.zeros((l, batchsize, 6), dtype="float32")
    targ = np.zeros((batchsize, n_classes), dtype="float32")
    data.reshape((l * batchsize, 6))[np.arange(l * batchsize), vals.flatten()] = 1.0
    targ_vals = sum(v * 2**i for i, v in enumerate(values))
    targ[np.arange(batchsize), targ_vals] = 1.0
    return data, targ


@pytest.mark.parametrize(
    "name, offsets", [("temporal_order", (0.1, 0.5)), ("temporal_order_3bit", (0.1, 0.3, 0.6))]
)
def test_temporal_order_layout(name, offsets):
    seen_lengths = set()
    for seed in range(3):
        xs, targets, lengths = _batch(name, seed=seed, **PASCANU)
        l = int(lengths[0])
        seen_lengths.add(l)
        assert np.all(lengths == l) and 20 <= l < 40
        _assert_one_hot_then_zero(xs, lengths)
        sym = xs[:l].argmax(-1)
        positions, values = [], []
        for off in offsets:  # p = randint(int(.1 l)) + int(off l): exactly one A/B symbol in each window
            lo, hi = int(l * off), int(l * off) + int(l * 0.1)
            window = sym[lo:hi] < 2
            np.testing.assert_array_equal(window.sum(0), 1)
            p = lo + window.argmax(0)
            positions.append(p)
            values.append(sym[p, np.arange(B)])
        assert (sym < 2).sum() == len(offsets) * B  # nowhere else
        distractors = np.where(sym < 2, 2, sym)
        assert distractors.min() >= 2 and distractors.max() <= 5
        data, targ = _ref_temporal_order(l, positions, values, distractors, 2 ** len(offsets))
        np.testing.assert_array_equal(xs[:l], data)
        np.testing.assert_array_equal(targets, targ.argmax(1))
    assert len(seen_lengths) > 1


def _ref_arithmetic(l, p0, p1, values, op):
    """addition.py / multiplication.py ``generate`` after the draws (values as rng.uniform gave them)."""
    batchsize = len(p0)
    data = np.stack([np.zeros_like(values), values], axis=-1).astype("float32")
    data[:, :, 0] = 0.0
    data[p0, np.arange(batchsize), np.zeros((batchsize,), dtype="int32")] = 1.0
    data[p1, np.arange(batchsize), np.zeros((batchsize,), dtype="int32")] = 1.0
    a = data[p0, np.arange(batchsize), np.ones((batchsize,), dtype="int32")]
    b = data[p1, np.arange(batchsize), np.ones((batchsize,), dtype="int32")]
    targs = (a + b) / 2.0 if op == "add" else a * b
    return data, targs.reshape((-1, 1)).astype("float32")


@pytest.mark.parametrize("name, op", [("addition", "add"), ("multiplication", "mul")])
def test_addition_and_multiplication_layout(name, op):
    task = _task(name, **PASCANU)
    assert task.max_steps == 39 + int(39 * 0.1) - 1
    for seed in range(3):
        xs, targets, lengths = _batch(name, seed=seed, **PASCANU)
        l = int(lengths[0])
        assert np.all(lengths == l)
        assert any(length <= l < length + int(length * 0.1) for length in range(20, 40))
        assert np.all(xs[l:] == 0)
        markers, values = xs[:l, :, 0], xs[:l, :, 1]
        np.testing.assert_array_equal(markers.sum(0), 2.0)
        p0 = markers[: int(l * 0.1)].argmax(0)
        assert np.all(markers[p0, np.arange(B)] == 1)
        lo, hi = int(l * 0.1), int(l * 0.1) + int(l * 0.4)
        p1 = lo + markers[lo:hi].argmax(0)
        assert np.all(markers[p1, np.arange(B)] == 1)
        assert values.min() >= 0.0 and values.max() < 1.0
        data, targ = _ref_arithmetic(l, p0, p1, values, op)
        np.testing.assert_array_equal(xs[:l], data)
        np.testing.assert_array_equal(targets, targ)


def _ref_permutation(randvals, length):
    """permutation.py ``generate`` with ``randvals`` (already holding ``val`` at 0 and ``length``)."""
    batchsize = randvals.shape[1]
    _inp = randvals[:-1]
    inp = np.zeros((length, batchsize, 100), dtype="float32")
    targ = np.zeros((1, batchsize, 100), dtype="float32")
    inp.reshape((length * batchsize, 100))[np.arange(length * batchsize), _inp.flatten()] = 1.0
    targ.reshape((batchsize, 100))[np.arange(batchsize), randvals[1:][-1].flatten()] = 1.0
    return inp, targ.reshape((batchsize, 100))


def test_random_permutation_layout():
    xs, targets, lengths = _batch("random_permutation", seed=5, **PASCANU)
    l = int(lengths[0])
    _assert_one_hot_then_zero(xs, lengths)
    sym = xs[:l].argmax(-1)
    assert set(np.unique(sym[0])) <= {0, 1} and sym[1:].min() >= 2 and sym[1:].max() <= 99
    randvals = np.concatenate([sym, sym[:1]], axis=0)  # randvals[length] = val
    inp, targ = _ref_permutation(randvals, l)
    np.testing.assert_array_equal(xs[:l], inp)
    np.testing.assert_array_equal(targets, targ.argmax(1))
    np.testing.assert_array_equal(targets, sym[0])


def _ref_memorization(pattern_digits, length, n_values, n_pos):
    """memorization.py ``generate`` (generate_all=False) with the pattern digits given."""
    batchsize = pattern_digits.shape[1]
    input_data = np.zeros((length + 2 * n_pos, batchsize, n_values + 2), dtype="float32")
    targ_data = np.zeros((length + 2 * n_pos, batchsize, n_values + 1), dtype="float32")
    targ_data[:-n_pos, :, -1] = 1
    input_data[n_pos:, :, -2] = 1
    input_data[length + n_pos, :, -2] = 0
    input_data[length + n_pos, :, -1] = 1
    data = np.zeros((n_pos, batchsize, n_values + 2))
    for val in range(batchsize):
        for k in range(n_pos):
            data[k, val, pattern_digits[k, val]] = 1.0
    input_data[:n_pos, :, :] = data
    targ_data[-n_pos:, :, :] = data[:, :, :-1]
    return input_data, targ_data


def test_memorization_layout_and_padding():
    kw = dict(SYNTHETIC)["memorization"]
    for seed in range(3):
        xs, targets, lengths = _batch("memorization", seed=seed, **kw)
        total = int(lengths[0])
        length = total - 2 * 4
        assert np.all(lengths == total) and 5 <= length < 9 and xs.shape[0] == 8 + 8
        _assert_one_hot_then_zero(xs, lengths)
        pattern = xs[:4].argmax(-1)
        assert pattern.max() < 3
        inp, targ = _ref_memorization(pattern, length, 3, 4)
        np.testing.assert_array_equal(xs[:total], inp)
        np.testing.assert_array_equal(targets[:total], targ.argmax(-1))
        assert np.all(targets[total:] == 0)


def test_memorization_pattern_symbols_are_uniform():
    xs, _, _ = _batch(
        "memorization", seed=0, batch_size=2000, n_values=5, n_pos=10, min_length=5, max_length=5
    )
    counts = np.bincount(xs[:10].argmax(-1).ravel(), minlength=5) / 20000
    np.testing.assert_allclose(counts, 0.2, atol=0.02)


# --------------------------------------------------------------------------------------------------
# the other adding problems and copying


def test_adding_hochreiter_layout():
    T = 40
    xs, targets, lengths = _batch("adding_hochreiter", seed=2, batch_size=400, length=T)
    assert lengths.min() >= T and lengths.max() <= T + T // 10 and len(set(lengths.tolist())) > 1
    for b in range(400):
        l = lengths[b]
        values, markers = xs[:l, b, 0], xs[:l, b, 1]
        assert np.all(xs[l:, b] == 0)
        ones = np.flatnonzero(markers == 1.0)
        assert len(ones) == 2
        assert ones[0] < 10 and ones[1] < T // 2  # first among the first ten, second in the first half
        minus = np.flatnonzero(markers == -1.0)
        expected_minus = [p for p in (0, l - 1) if p not in ones]
        np.testing.assert_array_equal(minus, expected_minus)
        assert np.all((markers == 0) | (markers == 1) | (markers == -1))
        assert values.min() >= -1 and values.max() <= 1
        if 0 in ones:
            assert values[0] == 0.0
        x1, x2 = values[ones]
        np.testing.assert_allclose(targets[b, 0], 0.5 + (x1 + x2) / 4.0, rtol=1e-6)
    # the first marker covers all of [0, 10), the second more than the first ten
    firsts = [np.flatnonzero(xs[: lengths[b], b, 1] == 1)[0] for b in range(400)]
    assert min(firsts) == 0
    assert xs[10 : T // 2, :, 1].max() == 1.0 and xs[T // 2 :, :, 1].max() < 1.0


def test_adding_arjovsky_layout():
    T = 21
    xs, targets, lengths = _batch("adding_arjovsky", seed=1, length=T)
    assert np.all(lengths == T)
    values, markers = xs[..., 0], xs[..., 1]
    inds = np.stack([markers[: T // 2].argmax(0), T // 2 + markers[T // 2 :].argmax(0)], axis=1)
    assert inds[:, 1].max() < 2 * (T // 2)  # randint(T/2) + T/2 with Python 2 integer division
    # adding_problem.py generate_data with the draws given
    x = np.zeros((T, B, 2), dtype="float32")
    x[:, :, 0] = values
    for i in range(B):
        x[inds[i, 0], i, 1] = 1.0
        x[inds[i, 1], i, 1] = 1.0
    y = (x[:, :, 0] * x[:, :, 1]).sum(axis=0).reshape((B, 1))
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_allclose(targets, y, rtol=1e-6)


def test_adding_arjovsky_baseline_is_the_variance_of_the_sum():
    task = _task("adding_arjovsky", length=4)
    batch = _jitted("adding_arjovsky", length=4)(jax.random.PRNGKey(0), 40000)
    mse = _loss(task, jnp.ones((40000, 1), jnp.float32), batch)
    assert task.baseline == pytest.approx(1 / 6)
    assert mse == pytest.approx(1 / 6, abs=0.005)


def test_copying_layout():
    T = 7
    xs, targets, lengths = _batch("copying", seed=0, length=T)
    assert np.all(lengths == T + 20)
    _assert_one_hot_then_zero(xs, lengths)
    seq = xs[:10].argmax(-1).T  # (B, 10)
    assert seq.min() >= 1 and seq.max() <= 8
    # memory_problem.py generate_data with the draws given
    x = np.concatenate((seq, np.zeros((B, T - 1)), 9 * np.ones((B, 1)), np.zeros((B, 10))), axis=1).astype(
        "int32"
    )
    y = np.concatenate((np.zeros((B, 10)), np.zeros((B, T)), seq), axis=1).astype("int32")
    np.testing.assert_array_equal(xs.argmax(-1), x.T)
    np.testing.assert_array_equal(targets, y.T)


@pytest.mark.parametrize("T", [7, 100])
def test_copying_baseline_is_the_memoryless_cross_entropy(T):
    task = _task("copying", length=T)
    assert task.baseline == pytest.approx(10 * math.log(8) / (T + 20))
    assert tk.copying_baseline(T) == task.baseline
    batch = _jitted("copying", length=T)(jax.random.PRNGKey(1), 8)
    blank = jnp.zeros((T + 10, 8, 9), jnp.float32).at[..., 0].set(1e4)
    guess = jnp.zeros((10, 8, 9), jnp.float32).at[..., 0].set(-1e4)
    preds = jnp.concatenate([blank, guess])
    np.testing.assert_allclose(_loss(task, preds, batch), task.baseline, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# losses and error criteria on hand-made predictions


def test_last_softmax_loss_and_error():
    task = _task("temporal_order", **PASCANU)
    batch = _jitted("temporal_order", **PASCANU)(jax.random.PRNGKey(0), B)
    y = np.asarray(batch.targets)
    perfect = jax.nn.one_hot(batch.targets, 4, dtype=jnp.float32) * 5.0
    assert _error(task, perfect, batch) == 0.0
    wrong = perfect.at[:7].set(jax.nn.one_hot((y[:7] + 1) % 4, 4, dtype=jnp.float32) * 5.0)
    assert _error(task, wrong, batch) == pytest.approx(7 / B)
    logits = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (B, 4), jnp.float32))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(
        _loss(task, jnp.asarray(logits), batch), -logp[np.arange(B), y].mean(), rtol=1e-5
    )


def test_squared_error_criteria_pascanu_and_hochreiter():
    add = _task("addition", **PASCANU)
    batch = _jitted("addition", **PASCANU)(jax.random.PRNGKey(0), B)
    assert _error(add, batch.targets, batch) == 0.0
    delta = np.where(np.arange(B) < 5, 0.21, 0.19).astype(np.float32)[:, None]  # 0.0441 > .04 > 0.0361
    preds = batch.targets + delta
    assert _error(add, preds, batch) == pytest.approx(5 / B)
    np.testing.assert_allclose(_loss(add, preds, batch), np.mean(delta[:, 0] ** 2), rtol=1e-5)

    hoch = _task("adding_hochreiter", length=40)
    batch = _jitted("adding_hochreiter", length=40)(jax.random.PRNGKey(0), B)
    delta = np.where(np.arange(B) < 9, -0.05, 0.03).astype(np.float32)[:, None]
    assert _error(hoch, batch.targets + delta, batch) == pytest.approx(9 / B)


def test_any_wrong_step_criterion_ignores_padding():
    kw = {"min_length": 5, "max_length": 9, "n_values": 3, "n_pos": 4}
    task = _task("memorization", **kw)
    sample = _jitted("memorization", **kw)
    batch = next(
        b for b in (sample(jax.random.PRNGKey(s), B) for s in range(20)) if b.lengths[0] < task.max_steps
    )
    total = int(batch.lengths[0])
    perfect = jax.nn.one_hot(batch.targets, 4, dtype=jnp.float32) * 20.0
    assert _error(task, perfect, batch) == 0.0
    # garbage past the length never counts, in the error or in the loss
    garbage = perfect.at[total:].set(jnp.asarray([9.0, -3.0, 2.0, 0.0], jnp.float32))
    assert _error(task, garbage, batch) == 0.0
    assert _loss(task, garbage, batch) == pytest.approx(_loss(task, perfect, batch))
    # one wrong valid step in 3 sequences (two in one of them)
    wrong = perfect.at[total - 1, :3].set(-perfect[total - 1, :3]).at[0, 0].set(-perfect[0, 0])
    assert _error(task, wrong, batch) == pytest.approx(3 / B)
    # loss: mean cross-entropy over the valid (t, b) steps, against numpy
    logits = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (task.max_steps, B, 4), jnp.float32))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    y = np.asarray(batch.targets)
    ce = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(_loss(task, jnp.asarray(logits), batch), ce[:total].mean(), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# sequential digits


def test_digits_split_and_sampling():
    task = _task("digits")
    d = task.data
    assert len(d.y_train) + len(d.y_test) == 1797 and len(d.y_test) == int(1797 * 0.2)
    assert d.x_train.dtype == np.float32 and d.x_train.min() >= 0 and d.x_train.max() <= 1
    from sklearn.datasets import load_digits

    raw = load_digits()
    order = np.random.RandomState(0).permutation(1797)
    np.testing.assert_array_equal(d.x_test, raw.data[order[-len(d.y_test) :]] / 16.0)
    np.testing.assert_array_equal(d.y_train, raw.target[order[: len(d.y_train)]])
    again = tk.load_digits_split()
    np.testing.assert_array_equal(again.x_train, d.x_train)
    xs, y, lengths = (np.asarray(a) for a in _jitted("digits")(jax.random.PRNGKey(0), 16))
    assert xs.shape == (64, 16, 1) and np.all(lengths == 64)
    for b in range(16):  # each sequence is a training image read row by row, with its label
        rows = np.flatnonzero((d.x_train == xs[:, b, 0]).all(1))
        assert len(rows) >= 1 and y[b] in d.y_train[rows]
    xs_test, y_test, _ = (np.asarray(a) for a in _jitted("digits", test=True)(jax.random.PRNGKey(0), 16))
    for b in range(16):
        rows = np.flatnonzero((d.x_test == xs_test[:, b, 0]).all(1))
        assert len(rows) >= 1 and y_test[b] in d.y_test[rows]


def test_permuted_digits_is_a_fixed_permutation():
    plain, perm = _task("digits").data, _task("permuted_digits").data
    p = perm.permutation
    assert sorted(p.tolist()) == list(range(64)) and not np.array_equal(p, np.arange(64))
    np.testing.assert_array_equal(p, np.random.RandomState(0).permutation(64))
    np.testing.assert_array_equal(perm.x_train, plain.x_train[:, p])
    np.testing.assert_array_equal(perm.y_test, plain.y_test)
    other = tk.load_digits_split(permute_seed=1).permutation
    assert not np.array_equal(other, p)


# --------------------------------------------------------------------------------------------------
# character language model


def test_corpus_vocab_split_and_round_trip():
    text = "hello world, this is a held-out test: ZQ!"
    c = tk.make_corpus(text, valid_fraction=0.25)
    n_valid = int(len(text) * 0.25)
    train_text = text[: len(text) - n_valid]
    assert len(c.train) == len(text) - n_valid and len(c.valid) == n_valid
    assert c.vocab[0] == tk.UNKNOWN and list(c.vocab[1:]) == sorted(set(train_text))
    assert tk.decode(c.train, c.vocab) == train_text
    valid = tk.decode(c.valid, c.vocab)
    assert valid == "".join(ch if ch in train_text else tk.UNKNOWN for ch in text[-n_valid:])
    assert "Z" not in c.vocab and tk.encode("Z", c.vocab)[0] == 0


def test_default_corpus_is_real_text():
    text = tk.default_corpus()
    assert len(text) > 300_000 and "def " in text and "the " in text
    assert text == tk.default_corpus()


def test_stdlib_corpus_is_every_top_level_stdlib_module():
    text = tk.stdlib_corpus()
    for name in tk.DEFAULT_CORPUS_MODULES:  # the small corpus is part of the big one
        assert importlib.util.find_spec(name).loader.get_source(name) in text
    assert len(text) > 5 * len(tk.default_corpus())


def test_char_lm_windows_are_consecutive_text():
    text = "".join(chr(0x100 + i) for i in range(400))  # every character distinct: ids 1..360 in order
    task = tk.char_lm(text=text, seq_length=12)
    assert task.input_size == task.output_size == 361 and task.max_steps == 12
    xs, targets, lengths = (
        np.asarray(a) for a in jax.jit(task.sample, static_argnums=1)(jax.random.PRNGKey(0), 64)
    )
    assert xs.shape == (12, 64, 361) and np.all(lengths == 12)
    _assert_one_hot_then_zero(xs, lengths)
    ids = xs.argmax(-1)
    np.testing.assert_array_equal(targets, ids + 1)  # the next character
    np.testing.assert_array_equal(np.diff(ids, axis=0), 1)  # a contiguous window
    assert ids.min() >= 1 and targets.max() <= 360
    _, test_targets, _ = task.sample_test(jax.random.PRNGKey(0), 4)
    assert np.all(np.asarray(test_targets) == 0)  # held-out characters never seen in training
    w = tk.char_windows(task.data.train, 12, 361)
    assert w.xs.shape == (12, (360 - 1) // 12, 361)
    np.testing.assert_array_equal(np.asarray(w.targets)[:, 0], np.arange(2, 14))


def test_bits_per_char_and_step_error():
    V = 13
    targets = jax.random.randint(jax.random.PRNGKey(0), (5, 3), 0, V, dtype=jnp.int32)
    uniform = jnp.zeros((5, 3, V), jnp.float32)
    assert float(tk.bits_per_char(uniform, targets)) == pytest.approx(math.log2(V), rel=1e-6)
    sharp = jax.nn.one_hot(targets, V, dtype=jnp.float32) * 50.0
    assert float(tk.bits_per_char(sharp, targets)) == pytest.approx(0.0, abs=1e-6)
    mixed = sharp.at[3:].set(0.0)  # steps 3, 4 uniform; lengths 3 keep only the sharp ones
    assert float(tk.bits_per_char(mixed, targets, lengths=jnp.array([3, 3, 3]))) == pytest.approx(
        0.0, abs=1e-6
    )
    batch = tk.Batch(jnp.zeros((5, 3, V), jnp.float32), targets, jnp.full((3,), 5, jnp.int32))
    wrong = sharp.at[0, 0].set(-sharp[0, 0]).at[4, 2].set(-sharp[4, 2])
    assert float(tk._all_softmax_step_error(wrong, batch)) == pytest.approx(2 / 15)


def test_temperature_sampler():
    logits = jnp.asarray([[0.3, 2.0, -1.0, 1.0]], jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draw = jax.jit(jax.vmap(lambda k, t: tk.sample_logits(k, logits, t)[0], (0, None)), static_argnums=1)
    assert int(tk.sample_logits(keys[0], logits, 0.0)[0]) == 1
    assert set(np.asarray(draw(keys[:200], 1e-3)).tolist()) == {1}
    freq = np.bincount(np.asarray(draw(keys, 1.0)), minlength=4) / 20000
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(logits[0])), atol=0.015)
    freq_hot = np.bincount(np.asarray(draw(keys, 100.0)), minlength=4) / 20000
    np.testing.assert_allclose(freq_hot, 0.25, atol=0.02)


def test_sample_feeds_back_its_own_tokens():
    V = 7
    W = jax.random.normal(jax.random.PRNGKey(3), (V, V), jnp.float32)

    def step_fn(params, carry, token):  # a toy model: logits from the token and a counter
        carry = carry + 1
        return carry, params[token] + 0.1 * carry[..., None]

    carry0 = jnp.zeros((2,), jnp.float32)
    token0 = jnp.array([1, 4], jnp.int32)
    key = jax.random.PRNGKey(9)
    for temp in (0.0, 0.8):
        ids, carry = jax.jit(tk.sample, static_argnums=(0, 5, 6))(step_fn, W, carry0, token0, key, 6, temp)
        # the reference loop of the docstring
        c, tok, ref = carry0, token0, []
        for k in jax.random.split(key, 6):
            c, logits = step_fn(W, c, tok)
            tok = tk.sample_logits(k, logits, temp)
            ref.append(tok)
        np.testing.assert_array_equal(np.asarray(ids), np.stack(ref))
        np.testing.assert_array_equal(np.asarray(carry), 6.0)
    greedy, _ = tk.sample(step_fn, W, carry0, token0, key, 3, 0.0)
    assert int(greedy[0, 0]) == int(jnp.argmax(W[1] + 0.1))


# --------------------------------------------------------------------------------------------------
# bad input


def test_read_text_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    nul = tmp_path / "nul.bin"
    nul.write_bytes(b"abc\x00def")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    good = tmp_path / "good.txt"
    good.write_text("ab" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        tk.read_text(empty)
    with pytest.raises(ValueError, match="binary"):
        tk.read_text(nul)
    with pytest.raises(ValueError, match="not UTF-8"):
        tk.read_text(latin)
    with pytest.raises(ValueError, match="not a readable file"):
        tk.read_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="is empty"):
        tk.make_task("char_lm", path=str(empty))
    assert tk.read_text(good) == "ab" * 100
    with pytest.raises(ValueError, match="valid split has 2 characters"):
        tk.char_lm(path=good, seq_length=10, valid_fraction=0.01)
    with pytest.raises(ValueError, match="path or text"):
        tk.char_lm(path=good, text="abc")


@pytest.mark.parametrize(
    "name, kwargs, exc, match",
    [
        ("nope", {}, ValueError, "unknown task 'nope'; known tasks: adding_arjovsky, adding_hochreiter"),
        ("addition", {"length": 5}, ValueError, "takes no argument 'length'"),
        (
            "temporal_order",
            {"min_length": 60, "max_length": 50},
            ValueError,
            "min_length must be <= max_length",
        ),
        (
            "temporal_order",
            {"min_length": 9, "max_length": 50},
            ValueError,
            "min_length must be an int >= 10",
        ),
        ("addition", {"min_length": 0}, ValueError, "addition: min_length"),
        ("random_permutation", {"max_length": -3}, ValueError, "max_length must be an int >= 1"),
        ("memorization", {"n_values": 1}, ValueError, "n_values must be an int >= 2"),
        ("memorization", {"n_pos": 0}, ValueError, "n_pos"),
        ("adding_hochreiter", {"length": 19}, ValueError, "length must be an int >= 20"),
        ("adding_arjovsky", {"length": 0}, ValueError, "adding_arjovsky: length"),
        ("copying", {"length": 2.5}, TypeError, "copying: length must be an int"),
        ("copying", {"length": True}, TypeError, "length must be an int"),
        ("digits", {"test_fraction": 1.0}, ValueError, "test_fraction must be in"),
        ("char_lm", {"text": "abcdef", "seq_length": 0}, ValueError, "seq_length"),
        ("char_lm", {"text": "abcdefghij", "valid_fraction": 0.0}, ValueError, "valid_fraction"),
    ],
)
def test_bad_arguments(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tk.make_task(name, **kwargs)


def test_bad_batch_size_and_temperature():
    task = _task("copying", length=7)
    eager = task.sample(jax.random.PRNGKey(3), 5)  # eager equals jitted
    np.testing.assert_array_equal(
        np.asarray(eager.xs), np.asarray(_jitted("copying", length=7)(jax.random.PRNGKey(3), 5).xs)
    )
    with pytest.raises(ValueError, match="copying.sample: batch_size must be an int >= 1; got 0"):
        task.sample(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        tk.sample_logits(jax.random.PRNGKey(0), jnp.zeros((3,)), -1.0)
    with pytest.raises(ValueError, match="sample: n must be"):
        tk.sample(lambda p, c, t: (c, jnp.zeros((3,))), None, 0, 0, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="targets must have shape"):
        tk.bits_per_char(jnp.zeros((4, 2, 3)), jnp.zeros((4, 3), jnp.int32))


@pytest.mark.parametrize(
    "task, text",
    [
        (tk.adding_arjovsky(4), "fraction of sequences whose squared error is above 0.04"),
        (
            tk.addition(min_length=10, max_length=12),
            "fraction of sequences whose squared error is above 0.04",
        ),
        (tk.adding_hochreiter(20), "fraction of sequences with an output off by 0.04 or more"),
        (tk.temporal_order(min_length=10, max_length=12), "fraction of sequences whose predicted class"),
        (tk.copying(3), "fraction of sequences with at least one wrongly predicted step"),
    ],
    ids=lambda x: getattr(x, "name", "text"),
)
def test_describe_error_says_what_the_error_measures(task, text):
    assert tk.describe_error(task).startswith(text)


def test_describe_error_matches_the_adding_criterion():
    task = tk.adding_arjovsky(4)
    batch = task.sample(jax.random.PRNGKey(0), 4)
    preds = batch.targets + jnp.array([[0.1], [-0.19], [0.21], [0.0]])  # squared errors .01 .036 .044 0
    assert float(task.error(preds, batch)) == pytest.approx(0.25)  # one of four above 0.04
    plain = task._replace(error=lambda preds, batch: 0.0)  # an error function without a description
    assert tk.describe_error(plain) == "fraction of wrong sequences (the task's own criterion)"
