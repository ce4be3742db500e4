"""Hierarchical softmax: a word's probability as a product of binary decisions down a tree, ``O(log V)``.

B. Leibe's RWTH Aachen "Machine Learning" lecture 17, "Recurrent Neural Networks", puts the ``V`` words
of a vocabulary at the leaves of a binary tree with ``V - 1`` inner nodes ``n``, each with a vector
``v_n`` (and a bias ``b_n``). From the root, the branch with code bit 0 is taken with probability
``sigma(v_n . h + b_n)`` and the branch with code bit 1 with ``sigma(-(v_n . h + b_n))``, so::

    p(w | h) = prod_{d < len_w} sigma(s_{w,d} (v_{n_{w,d}} . h + b_{n_{w,d}})),    s_{w,d} = 1 - 2 code_{w,d}

over the inner nodes ``n_{w,0} (the root), ..., n_{w,len_w - 1}`` on the path to ``w``. The two
branches' probabilities sum to one at every node, so ``sum_w p(w | h) = 1`` for any parameters, and
the log-likelihood of one word costs ``len_w`` dot products instead of the ``V`` of a flat softmax
(F. Morin and Y. Bengio, "Hierarchical probabilistic neural network language model", AISTATS 2005;
A. Mnih and G. E. Hinton, "A scalable hierarchical distributed language model", NIPS 2008).

Two trees: :func:`balanced_tree`, a complete binary tree (every code ``ceil(log2 V)`` or one bit
shorter), and :func:`huffman_tree`, the Huffman code of the word counts as word2vec builds it (T.
Mikolov, I. Sutskever, K. Chen, G. Corrado and J. Dean, "Distributed representations of words and
phrases and their compositionality", NIPS 2013; D. A. Huffman, "A method for the construction of
minimum-redundancy codes", Proc. IRE 40(9), 1952): frequent words get short codes, so the expected
cost ``sum_w p_w len_w`` of an example is the smallest any binary tree achieves. :func:`hierarchical`
makes the output layer over a tree: ``init``, ``log_prob`` (the training loss, ``O(depth)`` per
example), ``log_probs`` (the whole distribution, for evaluation) and ``sample`` (a walk from the root).

Conventions: ``V`` words ``0 .. V-1``; inner nodes ``0 .. V-2`` (the rows of ``params["W"] (V-1, H)``
and ``params["b"] (V-1,)``); a :class:`Tree` lists each word's path padded to the tree's ``depth``
(``paths``, ``codes``, ``signs`` and ``mask``, all ``(V, depth)``). Everything is differentiable in the
parameters and in ``h``, in float32 and float64, with ``jax.nn.log_sigmoid`` (no ``log`` of a
probability that underflows).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validators as check

__all__ = ["HierarchicalSoftmax", "Tree", "balanced_tree", "hierarchical", "huffman_tree"]


# --------------------------------------------------------------------------------------------------
# the trees


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Tree:
    """A binary tree over ``V`` words (leaves) with ``V - 1`` inner nodes; make it with
    :func:`huffman_tree` or :func:`balanced_tree`. A pytree (its arrays are the leaves, ``num_words``,
    ``depth``, ``root`` and ``kind`` static), so it can be closed over or passed into ``jax.jit``.

    Fields (``D = depth``, the longest code):

    * ``paths (V, D)`` int32: ``paths[w, d]`` is the inner node at depth ``d`` on the path to ``w``
      (``paths[w, 0] = root``); 0 past the word's code length.
    * ``codes (V, D)`` int32: the branch taken there, 0 or 1 (0 past the code length).
    * ``signs (V, D)`` int32: ``1 - 2 codes`` (+1 for bit 0, -1 for bit 1), 0 past the code length.
    * ``mask (V, D)`` bool: ``d < code_lengths[w]``.
    * ``code_lengths (V,)`` int32: the number of decisions (inner nodes) on each word's path.
    * ``children (V-1, 2)`` int32: ``children[n, bit]``, an inner node (``>= 0``) or a word ``w``
      stored as ``~w = -w - 1`` (``< 0``).
    * ``num_words`` (``V``), ``depth`` (``D``), ``root`` (an inner node) and ``kind`` (``"huffman"`` or
      ``"balanced"``); ``num_inner = V - 1``.
    """

    paths: jax.Array
    codes: jax.Array
    signs: jax.Array
    mask: jax.Array
    code_lengths: jax.Array
    children: jax.Array
    num_words: int
    depth: int
    root: int
    kind: str

    @property
    def num_inner(self) -> int:
        """``V - 1``, the rows of ``params["W"] (V-1, H)``."""
        return self.num_words - 1

    def __repr__(self):
        return f"Tree(kind={self.kind!r}, num_words={self.num_words}, depth={self.depth})"


jax.tree_util.register_dataclass(
    Tree,
    data_fields=["paths", "codes", "signs", "mask", "code_lengths", "children"],
    meta_fields=["num_words", "depth", "root", "kind"],
)


def _from_children(children: np.ndarray, root: int, V: int, kind: str) -> Tree:
    """The per-word paths of the tree ``children`` (``(V-1, 2)``, words as ``~w``), level by level."""
    out_paths, out_codes = [None] * V, [None] * V
    frontier = np.array([root], np.int64)
    prefix_nodes = np.zeros((1, 0), np.int64)
    prefix_codes = np.zeros((1, 0), np.int64)
    while frontier.size:
        kids = children[frontier].reshape(-1)  # (2F,): node 0's bit 0 and bit 1, node 1's, ...
        nodes = np.repeat(np.concatenate([prefix_nodes, frontier[:, None]], axis=1), 2, axis=0)
        bits = np.concatenate(
            [np.repeat(prefix_codes, 2, axis=0), np.tile([0, 1], frontier.size)[:, None]], 1
        )
        leaf = kids < 0
        for w, p, c in zip(~kids[leaf], nodes[leaf], bits[leaf]):
            if out_paths[w] is not None:
                raise AssertionError(f"softmax: word {w} is at two leaves")  # a construction bug
            out_paths[w], out_codes[w] = p, c
        frontier, prefix_nodes, prefix_codes = kids[~leaf], nodes[~leaf], bits[~leaf]
    if any(p is None for p in out_paths):
        raise AssertionError("softmax: a word is at no leaf")  # a construction bug
    lengths = np.array([len(p) for p in out_paths], np.int32)
    D = int(lengths.max())
    paths = np.zeros((V, D), np.int32)
    codes = np.zeros((V, D), np.int32)
    for w in range(V):
        paths[w, : lengths[w]] = out_paths[w]
        codes[w, : lengths[w]] = out_codes[w]
    mask = np.arange(D)[None, :] < lengths[:, None]
    signs = np.where(mask, 1 - 2 * codes, 0).astype(np.int32)
    return Tree(
        paths=jnp.asarray(paths),
        codes=jnp.asarray(codes),
        signs=jnp.asarray(signs),
        mask=jnp.asarray(mask),
        code_lengths=jnp.asarray(lengths),
        children=jnp.asarray(children.astype(np.int32)),
        num_words=V,
        depth=D,
        root=int(root),
        kind=kind,
    )


def huffman_tree(counts) -> Tree:
    """The Huffman tree of the word counts, built as word2vec's ``CreateBinaryTree`` builds it.

    ``counts (V,)``: non-negative finite numbers (ints or floats, e.g. frequencies), ``V >= 2``, on the
    host (not traced). The returned :class:`Tree` minimises the expected code length
    ``sum_w counts[w] len_w / sum(counts)`` over all binary trees with the words at the leaves.

    The construction (word2vec's two-queue merge, linear time after the sort): the words sorted by
    count, descending, ties by word index (a stable sort), form the leaf queue, read from its end (the
    smallest count first); merged nodes form a second queue, in the order they are made, whose counts
    never decrease. Each of the ``V - 1`` merges takes the smaller of the two queues' heads, twice,
    preferring the merged node on a tie (word2vec's strict ``<``), and makes inner node ``a`` (the
    ``a``-th merge) whose bit-0 child is the first node taken and bit-1 child the second; the root is
    inner node ``V - 2``. In plain Python::

        leaves = sorted(range(V), key=lambda w: -counts[w])        # stable: ties by index
        merged = []                                               # (count, node), counts nondecreasing
        for a in range(V - 1):
            taken = []
            for _ in range(2):
                if leaves and (not merged or counts[leaves[-1]] < merged[0][0]):
                    w = leaves.pop(); taken.append((counts[w], ~w))
                else:
                    taken.append(merged.pop(0))
            children[a] = (taken[0][1], taken[1][1])               # bit 0, bit 1
            merged.append((taken[0][0] + taken[1][0], a))

    Tie-breaking matters only among equal costs (every choice is optimal) but makes the tree a function
    of ``counts``: e.g. ``counts = [1, 1, 1]`` gives word 0 the code ``0``, word 1 ``11`` and word 2 ``10``.
    """
    fn = "huffman_tree"
    if isinstance(counts, jax.core.Tracer):
        raise TypeError(f"{fn}: counts must be concrete (host) numbers, not a traced value; got {counts!r}")
    host = np.asarray(counts)
    if host.dtype.kind not in "iuf":
        raise TypeError(f"{fn}: counts must be a 1-D array of real numbers (V,); got dtype {host.dtype}")
    if host.ndim != 1:
        raise ValueError(f"{fn}: counts must be a 1-D array (V,) of word counts; got shape {host.shape}")
    V = host.shape[0]
    if V < 2:
        raise ValueError(
            f"{fn}: counts must have at least 2 words (a tree over one word has no inner node); got V={V}"
        )
    host = host.astype(np.float64)
    if not np.all(np.isfinite(host)):
        raise ValueError(f"{fn}: counts must be finite; got {host[~np.isfinite(host)][:3].tolist()}")
    if np.any(host < 0):
        raise ValueError(f"{fn}: counts must be non-negative; got {host[host < 0][:3].tolist()}")
    order = np.argsort(-host, kind="stable")  # leaf queue: largest count first
    count = np.concatenate([host[order], np.full(V - 1, np.inf)])  # merged nodes at V .. 2V-2
    node = np.empty(2 * V - 1, np.int64)  # the tree's encoding of each queue entry
    node[:V] = ~order
    node[V:] = np.arange(V - 1)
    children = np.empty((V - 1, 2), np.int64)
    pos1, pos2 = V - 1, V
    for a in range(V - 1):
        taken = []
        for _ in range(2):
            if pos1 >= 0 and count[pos1] < count[pos2]:
                taken.append(pos1)
                pos1 -= 1
            else:
                taken.append(pos2)
                pos2 += 1
        count[V + a] = count[taken[0]] + count[taken[1]]
        children[a] = node[taken[0]], node[taken[1]]
    return _from_children(children, V - 2, V, "huffman")


def balanced_tree(num_words: int) -> Tree:
    """A complete binary tree over ``num_words = V >= 2`` words: depth ``ceil(log2 V)``, every code of
    that length or one bit shorter, the words in order from left (bit 0) to right (bit 1).

    The inner nodes are numbered as a binary heap (root 0; node ``n``'s children are ``2n + 1`` and
    ``2n + 2``, inner while ``< V - 1``), whose ``2V - 1`` nodes fill every level but the last from the
    left. For ``V = 2^k`` word ``w``'s code is ``w`` in binary, ``k`` bits, most significant first. In
    plain Python::

        k = ceil(log2(V)); deep = 2 * V - 2**k                  # the words on the last level
        def word(j):                                            # heap leaf j -> its word
            return j - (2**k - 1) if j >= 2**k - 1 else deep + j - (V - 1)
        for n in range(V - 1):
            children[n] = [c if c < V - 1 else ~word(c) for c in (2 * n + 1, 2 * n + 2)]
    """
    V = check.int_at_least(num_words, "balanced_tree: num_words", minimum=2)
    k = math.ceil(math.log2(V))
    deep = 2 * V - 2**k
    heap = np.arange(1, 2 * V - 1).reshape(V - 1, 2)  # children of inner nodes 0 .. V-2
    word = np.where(heap >= 2**k - 1, heap - (2**k - 1), deep + heap - (V - 1))
    children = np.where(heap < V - 1, heap, ~word)
    return _from_children(children, 0, V, "balanced")


# --------------------------------------------------------------------------------------------------
# the output layer


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class HierarchicalSoftmax:
    """The hierarchical softmax output layer over a :class:`Tree` (made by :func:`hierarchical`): the
    pure functions ``init``, ``log_prob``, ``log_probs`` and ``sample`` of params
    ``{"W": (V-1, H), "b": (V-1,)}`` and hidden states ``h (*batch, H)``. A pytree (the tree's arrays
    are its leaves), so it can be closed over or passed into ``jax.jit``."""

    tree: Tree

    @property
    def num_words(self) -> int:
        """``V``, the size of the distribution ``log_probs`` returns, ``(*batch, V)``."""
        return self.tree.num_words

    def __repr__(self):
        return f"hierarchical({self.tree!r})"

    # ---- argument checks

    def _params(self, params, fn: str):
        V = self.tree.num_words
        if not isinstance(params, dict):
            raise TypeError(
                f"{fn}: params must be a dict {{'W': (V-1, H), 'b': (V-1,)}} (make them with "
                f"init(key, hidden_size)); got {type(params).__name__}"
            )
        if set(params) != {"W", "b"}:
            raise ValueError(
                f"{fn}: params must have the keys ['W', 'b'] (make them with init(key, hidden_size)); "
                f"got {sorted(params, key=str)}"
            )
        W, b = params["W"], params["b"]
        for name, x in (("W", W), ("b", b)):
            dtype = getattr(x, "dtype", None)
            if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(
                    f"{fn}: params[{name!r}] must be a floating array; got {type(x).__name__}"
                    + (f" of dtype {dtype}" if dtype is not None else "")
                )
        if W.ndim != 2 or W.shape[0] != V - 1 or W.shape[1] == 0:
            raise ValueError(
                f"{fn}: params['W'] must have shape (V-1, H) = ({V - 1}, H) for this tree's V={V} words; "
                f"got {tuple(W.shape)}"
            )
        if tuple(b.shape) != (V - 1,):
            raise ValueError(
                f"{fn}: params['b'] must have shape (V-1,) = ({V - 1},) for this tree's V={V} words; "
                f"got {tuple(b.shape)}"
            )
        return W, b

    def _hidden(self, W, b, h, fn: str):
        h = check.real_array(h, f"{fn}: h")
        H = W.shape[1]
        if h.ndim < 1 or h.shape[-1] != H:
            raise ValueError(
                f"{fn}: h must have shape (*batch, H) with H={H} (the columns of params['W']); "
                f"got {tuple(h.shape)}"
            )
        return h.astype(jnp.result_type(W, b, h))

    def _targets(self, targets, batch_shape, fn: str):
        V = self.tree.num_words
        return check.tokens(
            targets, tuple(batch_shape), fn, name="targets", vocab=V, vocab_text="V",
            shape_text=f"{tuple(batch_shape)} (h's batch dims, h being (*batch, H))",
        )  # fmt: skip

    # ---- the functions

    def init(self, key, hidden_size: int, dtype=jnp.float32):
        """Params ``{"W": (V-1, H), "b": (V-1,)}`` for hidden states of size ``hidden_size = H``: one
        row of ``W`` per inner node, Gaussian with variance ``1/H`` (as a dense output layer; word2vec
        starts from zeros, every word then at probability ``2^-len_w``), ``b = 0``."""
        fn = "hierarchical.init"
        key = check.prng_key(key, fn, optional=False)
        H = check.positive_int(hidden_size, f"{fn}: hidden_size")
        dtype = check.float_dtype(dtype, f"{fn}: dtype")
        n = self.tree.num_inner
        return {
            "W": jax.random.normal(key, (n, H), dtype) / math.sqrt(H),
            "b": jnp.zeros((n,), dtype),
        }

    def log_prob(self, params, h, targets):
        """``log p(targets | h)``, ``(*batch)``, for ``h (*batch, H)`` and integer ``targets (*batch)``
        in ``[0, V)`` (checked when concrete; under ``jit`` an index out of range is clamped by the
        gather). ``O(depth H)`` work per example and nothing ``V``-sized formed: a ``lax.scan`` over the
        tree's ``depth`` levels gathers, at level ``d``, one row ``W[paths[w, d]]`` per example and takes
        its dot product with ``h``; the level is rematerialised (``jax.checkpoint``) in the backward
        pass, so loss and gradient need ``O(batch (H + depth))`` memory besides the parameters, not the
        ``batch x depth x H`` of gathering whole paths at once. Every example runs ``depth`` levels
        (padding past its code length is masked), so a Huffman tree's short codes save work only in
        :meth:`sample`. The negative mean is the training loss. In plain Python::

            out = 0
            for d in range(tree.code_lengths[w]):                 # w = targets[i], h = h[i]
                n, s = tree.paths[w, d], tree.signs[w, d]
                out += log_sigmoid(s * (W[n] @ h + b[n]))
        """
        fn = "hierarchical.log_prob"
        W, b = self._params(params, fn)
        h = self._hidden(W, b, h, fn)
        targets = self._targets(targets, h.shape[:-1], fn)
        t = self.tree

        @jax.checkpoint
        def level(acc, col):
            node, sign, mask = col  # (*batch,) each: the examples' node, branch sign and validity at depth d
            z = jnp.sum(W[node].astype(h.dtype) * h, axis=-1) + b[node].astype(h.dtype)
            return acc + jnp.where(mask, jax.nn.log_sigmoid(sign.astype(z.dtype) * z), 0.0), None

        cols = (jnp.moveaxis(a[targets], -1, 0) for a in (t.paths, t.signs, t.mask))  # (D, *batch) each
        acc, _ = jax.lax.scan(level, jnp.zeros(targets.shape, h.dtype), tuple(cols))
        return acc

    def log_probs(self, params, h):
        """The whole distribution ``log p(w | h)`` for every word, ``(*batch, V)``; ``exp`` of it sums to
        one. Every inner node is evaluated once (``h @ W.T + b``, ``(*batch, V-1)``, and both branches'
        ``log_sigmoid``), then each word sums its path's terms, one depth level at a time (a
        ``lax.scan`` over ``depth``, ``O(batch V)`` memory). In plain Python::

            z = W @ h + b                                         # (V-1,)
            for w in range(V):
                out[w] = sum(log_sigmoid(tree.signs[w, d] * z[tree.paths[w, d]])
                             for d in range(tree.code_lengths[w]))
        """
        fn = "hierarchical.log_probs"
        W, b = self._params(params, fn)
        h = self._hidden(W, b, h, fn)
        t = self.tree
        z = jnp.einsum("...h,nh->...n", h, W.astype(h.dtype)) + b.astype(h.dtype)  # (*batch, V-1)
        # both branches of every node, side by side: bit c of node n at c (V-1) + n
        branch = jnp.concatenate([jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)], axis=-1)
        entry = t.paths + t.codes * t.num_inner  # (V, D)

        def level(acc, col):
            index, mask = col  # (V,) each: the words' entries and validity at this depth
            return acc + jnp.where(mask, jnp.take(branch, index, axis=-1, mode="clip"), 0.0), None

        acc = jnp.zeros((*z.shape[:-1], t.num_words), z.dtype)
        acc, _ = jax.lax.scan(level, acc, (entry.T, t.mask.T))
        return acc

    def sample(self, params, h, key):
        """Words drawn from ``p(w | h)``, ``(*batch)`` int32, one per row of ``h (*batch, H)``: a walk
        from the root taking bit 1 with probability ``sigma(-(W[n] @ h + b[n]))``, ``depth`` steps of a
        ``lax.scan`` (``O(depth H)`` work per example; a row that reached its word stands still). In
        plain Python::

            n = tree.root
            while True:
                bit = int(uniform() < sigmoid(-(W[n] @ h + b[n])))
                c = tree.children[n, bit]
                if c < 0:
                    return ~c                                     # the word
                n = c
        """
        fn = "hierarchical.sample"
        W, b = self._params(params, fn)
        h = self._hidden(W, b, h, fn)
        key = check.prng_key(key, fn, optional=False)
        t = self.tree
        batch = h.shape[:-1]
        udtype = jnp.promote_types(h.dtype, jnp.float32)  # uniforms finer than float16's

        def step(carry, k):
            node, word, done = carry
            z = jnp.einsum("...h,...h->...", W[node].astype(h.dtype), h) + b[node].astype(h.dtype)
            bit = (jax.random.uniform(k, batch, udtype) < jax.nn.sigmoid(-z.astype(udtype))).astype(jnp.int32)
            child = t.children[node, bit]
            leaf = child < 0
            word = jnp.where(~done & leaf, ~child, word)
            node = jnp.where(~done & ~leaf, child, node)
            return (node, word, done | leaf), None

        init = (
            jnp.full(batch, t.root, jnp.int32),
            jnp.zeros(batch, jnp.int32),
            jnp.zeros(batch, bool),
        )
        (_, word, _), _ = jax.lax.scan(step, init, jax.random.split(key, t.depth))
        return word


jax.tree_util.register_dataclass(HierarchicalSoftmax, data_fields=["tree"], meta_fields=[])


def hierarchical(tree: Tree) -> HierarchicalSoftmax:
    """The hierarchical softmax output layer over ``tree`` (from :func:`huffman_tree` or
    :func:`balanced_tree`): a :class:`HierarchicalSoftmax` with

    * ``init(key, hidden_size, dtype=float32) -> {"W": (V-1, H), "b": (V-1,)}``;
    * ``log_prob(params, h, targets) -> (*batch)`` for ``h (*batch, H)``, ``targets (*batch)`` int,
      ``O(depth)`` per example (the training loss is its negative mean);
    * ``log_probs(params, h) -> (*batch, V)``, the whole distribution;
    * ``sample(params, h, key) -> (*batch)`` int32.

    For instance, with an RNN's outputs ``ys (T, B, H)`` and next words ``ws (T, B)``::

        out = jr.softmax.hierarchical(jr.softmax.huffman_tree(counts))
        params = out.init(key, H)
        loss = -out.log_prob(params, ys, ws).mean()
    """
    if not isinstance(tree, Tree):
        raise TypeError(
            f"hierarchical: tree must be a jaxrnn.softmax.Tree (from huffman_tree(counts) or "
            f"balanced_tree(V)); got {type(tree).__name__}"
        )
    return HierarchicalSoftmax(tree)
