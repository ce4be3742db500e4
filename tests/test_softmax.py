"""jaxrnn.softmax: the trees' structure, the distribution's normalisation, log_prob against a plain-Python
product over the path, Huffman optimality against exhaustive search, and sampling frequencies."""

import functools
import itertools
import math

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads

from jaxrnn import softmax as sm

F32, F64 = jnp.float32, jnp.float64
SIZES = (2, 3, 5, 8, 11)
H = 3

# the layer is a pytree (the tree's arrays are leaves, its sizes static), so these compile once per tree
# shape and dtype, shared by the tests: h is (2, V, H) and w (2, V) throughout
_evaluate = jax.jit(lambda out, p, h, w: (out.log_probs(p, h), out.log_prob(p, h, w)))
_sample = jax.jit(lambda out, p, h, k: out.sample(p, h, k))


def _counts(V, seed=0):
    return np.random.default_rng(seed).integers(1, 50, V)


def _trees(V):
    return (sm.huffman_tree(_counts(V)), sm.balanced_tree(V))


def _params(out, dtype, seed=0, scale=2.0, H=H):
    """Params drawn on the host (no compilation), a nonzero bias."""
    rng = np.random.default_rng(seed)
    n = out.tree.num_inner
    return {
        "W": jnp.asarray(scale * rng.normal(size=(n, H)) / np.sqrt(H), dtype),
        "b": jnp.asarray(rng.normal(size=n), dtype),
    }


def _inputs(V, dtype, seed=0):
    h = np.random.default_rng(seed).normal(size=(2, V, H))
    return jnp.asarray(h, dtype), jnp.asarray(np.broadcast_to(np.arange(V), (2, V)), jnp.int32)


@functools.cache
def _host(tree):
    return tuple(np.asarray(a) for a in (tree.children, tree.paths, tree.codes, tree.code_lengths))


def _walk(tree, w):
    """Word ``w``'s (nodes, bits, stored path) found by walking ``children`` from the root."""
    children, paths, codes, lengths = _host(tree)
    L = int(lengths[w])
    node, nodes, bits = tree.root, [], []
    for d in range(L):
        nodes.append(node)
        bits.append(int(codes[w, d]))
        node = int(children[node, codes[w, d]])
    assert node == ~w, (w, node)
    return nodes, bits, paths[w, :L].tolist()


@pytest.mark.parametrize("V", [*SIZES, 4, 16, 17])
def test_tree_structure(V):
    for tree in _trees(V):
        lengths = np.asarray(tree.code_lengths)
        mask, codes, signs = (np.asarray(a) for a in (tree.mask, tree.codes, tree.signs))
        assert tree.num_words == V and tree.num_inner == V - 1 and tree.depth == lengths.max()
        assert tree.paths.shape == tree.codes.shape == tree.mask.shape == (V, tree.depth)
        assert tree.children.shape == (V - 1, 2) and tree.paths.dtype == jnp.int32
        np.testing.assert_array_equal(mask, np.arange(tree.depth) < lengths[:, None])
        np.testing.assert_array_equal(signs, np.where(mask, 1 - 2 * codes, 0))
        assert math.isclose(sum(2.0**-lengths), 1.0)  # a full binary tree: Kraft's equality
        children = np.asarray(tree.children)
        assert sorted((~children[children < 0]).tolist()) == list(range(V))  # every word at one leaf
        assert sorted(children[children >= 0].tolist() + [tree.root]) == list(range(V - 1))
        codes_seen = set()
        for w in range(V):
            nodes, bits, path = _walk(tree, w)
            assert nodes == path
            codes_seen.add(tuple(bits))
        assert len(codes_seen) == V
    balanced = _trees(V)[1]
    k = math.ceil(math.log2(V))
    assert balanced.depth == k and set(np.asarray(balanced.code_lengths).tolist()) <= {k - 1, k}
    if V == 2**k:  # word w's code is w in binary
        bits = [int(c) for c in np.asarray(balanced.codes).reshape(-1)]
        assert bits == [int(c) for w in range(V) for c in format(w, f"0{k}b")]


@pytest.mark.parametrize("dtype", [F32, F64])
def test_distribution_sums_to_one_and_log_prob_is_its_entry(dtype):
    tol = 2e-6 if dtype == F32 else 1e-13
    for V in SIZES if dtype == F64 else SIZES[-1:]:  # float32: one size (a compilation per tree)
        for tree in _trees(V) if dtype == F64 else _trees(V)[:1]:
            out = sm.hierarchical(tree)
            h, w = _inputs(V, dtype)  # every word a target, batch rank 2
            lp, one = _evaluate(out, _params(out, dtype), h, w)
            assert lp.shape == (2, V, V) and lp.dtype == dtype and one.shape == (2, V) and one.dtype == dtype
            lp, one = np.asarray(lp, np.float64), np.asarray(one, np.float64)
            np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, atol=tol, err_msg=repr(tree))
            np.testing.assert_allclose(
                one, np.take_along_axis(lp, np.asarray(w)[..., None], -1)[..., 0], atol=tol
            )


def test_zero_params_give_two_to_the_minus_code_length():
    tree = _trees(8)[0]  # the distribution test's tree and shapes: no new compilation
    out = sm.hierarchical(tree)
    p = jax.tree.map(jnp.zeros_like, _params(out, F64))
    lp, _ = _evaluate(out, p, *_inputs(8, F64))
    np.testing.assert_allclose(lp[0, 0], -np.log(2.0) * np.asarray(tree.code_lengths), atol=1e-12)


def test_eager_equals_jit_and_single_example():
    out = sm.hierarchical(sm.huffman_tree(_counts(5)))
    p = _params(out, F64)
    h, w = _inputs(5, F64)
    lp, one = _evaluate(out, p, h, w)  # compiled by the distribution test
    np.testing.assert_allclose(out.log_probs(p, h), lp, atol=1e-13)  # eager
    np.testing.assert_allclose(out.log_prob(p, h[0, 1], 1), lp[0, 1, 1], atol=1e-13)  # eager, no batch dims


def _reference_log_prob(tree, p, h, w):
    """The plain-Python product over word ``w``'s path (a dense reference, differentiable)."""
    paths, codes, lengths = (np.asarray(a) for a in (tree.paths, tree.codes, tree.code_lengths))
    prob = 1.0
    for d in range(lengths[w]):
        n, s = paths[w, d], 1.0 if codes[w, d] == 0 else -1.0
        prob = prob * jax.nn.sigmoid(s * (p["W"][n] @ h + p["b"][n]))
    return jnp.log(prob)


@pytest.mark.parametrize("kind", ["huffman", "balanced"])
def test_gradients_against_dense_reference(kind):
    V = 5
    tree = sm.huffman_tree(_counts(V, 1)) if kind == "huffman" else sm.balanced_tree(V)
    out = sm.hierarchical(tree)
    p = _params(out, F64, seed=5, scale=1.0)
    h, w = _inputs(V, F64, seed=6)
    h, w = h[0], w[0]  # (V, H), (V,): every word once
    weights = jnp.arange(1.0, V + 1, dtype=F64)

    def ours(p, h):
        return jnp.sum(out.log_prob(p, h, w) * weights)

    def reference(p, h):
        return sum(weights[j] * _reference_log_prob(tree, p, h[j], j) for j in range(V))

    (v, g), (rv, rg) = (jax.jit(jax.value_and_grad(f, (0, 1)))(p, h) for f in (ours, reference))
    np.testing.assert_allclose(v, rv, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(rg)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if kind == "huffman":  # one jitted function of one flat vector: few eager ops in check_grads
        x, unravel = ravel_pytree((p, h))

        def both(x):
            p, h = unravel(x)
            return jnp.concatenate([out.log_prob(p, h, w), out.log_probs(p, h).reshape(-1)])

        check_grads(jax.jit(both), (x,), order=1, modes=("fwd", "rev"))


@functools.cache
def _optimal_cost(weights: tuple) -> float:
    """The least ``sum_w weight_w len_w`` over all binary trees: the cheapest order of merges (a tree's
    cost is the sum of its merged nodes' weights), by exhaustive search."""
    if len(weights) == 1:
        return 0.0
    best = math.inf
    for i, j in itertools.combinations(range(len(weights)), 2):
        merged = weights[i] + weights[j]
        rest = tuple(sorted([x for k, x in enumerate(weights) if k not in (i, j)] + [merged]))
        best = min(best, merged + _optimal_cost(rest))
    return best


def test_huffman_is_optimal_against_exhaustive_search():
    rng = np.random.default_rng(0)
    for V in range(2, 7):
        for trial in range(6):
            counts = rng.integers(0, 6, V) if trial % 2 else rng.exponential(size=V)  # ties and zeros too
            lengths = np.asarray(sm.huffman_tree(counts).code_lengths)
            cost = float(np.dot(counts, lengths))
            assert math.isclose(cost, _optimal_cost(tuple(sorted(counts.tolist()))), abs_tol=1e-9), counts


def test_huffman_textbook_examples():
    # Cormen, Leiserson, Rivest and Stein, "Introduction to Algorithms", section 16.3 (Huffman codes):
    # a:45 b:13 c:12 d:16 e:9 f:5 (thousands) -> lengths 1, 3, 3, 3, 4, 4; 224,000 bits
    tree = sm.huffman_tree([45, 13, 12, 16, 9, 5])
    assert np.asarray(tree.code_lengths).tolist() == [1, 3, 3, 3, 4, 4]
    assert int(np.dot([45, 13, 12, 16, 9, 5], np.asarray(tree.code_lengths))) == 224
    # the documented tie-breaking: word2vec's merge of the words sorted by count (ties by index)
    ties = sm.huffman_tree([1, 1, 1])
    assert [_walk(ties, w)[1] for w in range(3)] == [[0], [1, 1], [1, 0]]
    assert sm.huffman_tree(np.ones(4)).code_lengths.tolist() == [2, 2, 2, 2]
    assert sm.huffman_tree([0.0, 0.0]).code_lengths.tolist() == [1, 1]
    assert sm.huffman_tree([1, 2, 4, 8, 16]).code_lengths.tolist() == [4, 4, 3, 2, 1]  # the deepest tree


def test_sample_frequencies_match_the_distribution():
    V, N = 11, 4000
    tree = _trees(V)[0]  # Huffman: paths of many lengths; the tree and shapes of the distribution test
    out = sm.hierarchical(tree)
    p = _params(out, F32, scale=0.5)
    h, w = _inputs(V, F32)
    h = jnp.broadcast_to(h[0, 0], (2, V, H))
    probs = np.exp(np.asarray(_evaluate(out, p, h, w)[0][0, 0], np.float64))
    assert probs.min() > 1e-3
    hs = jnp.broadcast_to(h[0, 0], (2, N // 2, H))
    key = jax.random.PRNGKey(9)
    words = _sample(out, p, hs, key)
    assert words.shape == (2, N // 2) and words.dtype == jnp.int32
    np.testing.assert_array_equal(words, out.sample(p, hs, key))  # eager == jit
    freq = np.bincount(np.asarray(words).reshape(-1), minlength=V) / N
    assert freq.shape == (V,)
    np.testing.assert_array_less(np.abs(freq - probs), 4.5 * np.sqrt(probs * (1 - probs) / N) + 1e-3)


def _largest_value(jaxpr) -> int:
    """The size of the largest value a jaxpr computes, inside loop bodies too."""
    eqns = list(jaxpr.eqns)
    for e in eqns:
        eqns += [x for sub in jex.core.jaxprs_in_params(e.params) for x in sub.eqns]
    return max(math.prod(v.aval.shape) for e in eqns for v in e.outvars if hasattr(v.aval, "shape"))


def test_log_prob_and_sample_do_no_vocabulary_sized_work():
    V = 300
    out = sm.hierarchical(sm.balanced_tree(V))  # depth 9
    p = _params(out, F32)
    h, w = jnp.ones((2, H)), jnp.array([0, V - 1])
    key = jax.random.PRNGKey(0)
    assert _largest_value(jax.make_jaxpr(out.log_prob)(p, h, w)) <= 2 * 9 * H
    assert _largest_value(jax.make_jaxpr(out.sample)(p, h, key)) <= 2 * 9 * H
    assert _largest_value(jax.make_jaxpr(out.log_probs)(p, h)) >= 2 * V  # the whole distribution is


def test_log_prob_gradient_memory_does_not_hold_whole_paths():
    # Gathering every example's whole path at once holds batch x depth x H floats (and as much again
    # for their gradient); the level-by-level scan with rematerialisation holds O(batch H).
    V, N, Hs = 1024, 256, 64
    out = sm.hierarchical(sm.balanced_tree(V))  # depth 10
    p = _params(out, F32, H=Hs)
    h, w = jnp.ones((N, Hs), F32), jnp.arange(N) % V  # w an argument: data, as in training
    grad = jax.jit(jax.grad(lambda p, h, w: out.log_prob(p, h, w).sum(), (0, 1)))
    stats = grad.lower(p, h, w).compile().memory_analysis()
    if stats is None:  # a backend without memory statistics
        pytest.skip("no compiled memory statistics on this backend")
    whole_paths = N * out.tree.depth * Hs * 4  # 640 KiB; the scan needs about 150 KiB
    assert stats.temp_size_in_bytes < whole_paths / 3, (stats.temp_size_in_bytes, whole_paths)
