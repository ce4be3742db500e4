"""Decoding: greedy search, beam search and ancestral sampling from a step function.

The decoder of the encoder-decoder (Kitov, "Recurrent neural nets"; Leibe, RWTH Aachen Machine Learning
Lecture 17; Sutskever, Vinyals and Le 2014): started from the encoder's representation, an RNN generates
a sequence one token at a time, each token fed back as the next input. Everything here works from one
function, ``step(carry, token) -> (carry, logits)``, so any :class:`~jaxrnn.Cell` with an embedding and
a readout fits::

    def step(c, tok):
        c2 = cell.step(params, c, embed[tok])          # feed the previous token
        return c2, readout(cell.output(c2))             # logits (V,) of the next one

    # or in one line:
    step = lambda c, tok: (lambda c2: (c2, readout(cell.output(c2))))(cell.step(params, c, embed[tok]))

    _, s_n = jr.losses.encode(enc, params["encoder"], src)           # one source sequence (S, I)
    tokens, log_prob = jr.decoding.greedy(step, s_n, bos, 20, eos_token=eos)

(a cell with ``uses_step_index`` also needs ``t``: keep a counter in the carry and pass it on.)

**The model.** With ``s_0 = carry`` and ``y_0 = start_token``, for ``t = 1 .. L``::

    s_t, z_t = step(s_{t-1}, y_{t-1})          p(y_t | y_<t) = softmax(z_t)[y_t]
    log p(y_1 .. y_L) = sum_t log_softmax(z_t)[y_t]

The step is unbatched (``logits`` of shape ``(V,)``); decode a batch with ``jax.vmap`` over the
carries (and keys). Each function is one ``jax.lax.scan`` of ``max_length`` (static) steps, jit- and
vmap-safe; the carry is any pytree whose structure, shapes and dtypes ``step`` keeps.

**End of sequence.** With ``eos_token`` a hypothesis ends at its first EOS: its log-probability is the
sum up to and including the EOS, and every later position holds ``eos_token`` (the padding) with
log-probability 0. The complete hypotheses are then the ``L``-token sequences without an EOS and the
prefixes ending at their first EOS. Without ``eos_token`` every hypothesis has ``L`` tokens.

* :func:`greedy` -- ``y_t = argmax_v z_t[v]`` (the first maximum on ties).
* :func:`beam_search` -- the ``K`` best prefixes kept at each step (Sutskever et al. 2014, section 3.2;
  exact, i.e. exhaustive search, when ``K`` is at least the number of complete hypotheses, e.g.
  ``K >= V ** L``); GNMT's length penalty (Wu et al. 2016) for the final ranking.
* :func:`sample` -- ancestral sampling ``y_t ~ softmax(z_t / temperature)`` (Graves 2013).

References: V. Kitov, "Recurrent neural nets" (lecture); B. Leibe, RWTH Aachen, Machine Learning
Lecture 17 (encoder-decoder RNNs); I. Sutskever, O. Vinyals, Q. V. Le, "Sequence to Sequence Learning
with Neural Networks" (NeurIPS 2014); Y. Wu et al., "Google's Neural Machine Translation System:
Bridging the Gap between Human and Machine Translation" (arXiv:1609.08144, 2016), section 7;
A. Graves, "Generating Sequences With Recurrent Neural Networks" (arXiv:1308.0850, 2013).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validators as check

__all__ = ["beam_search", "greedy", "sample"]


# --------------------------------------------------------------------------------------------------
# argument checks (before tracing; they also work on traced carries inside jit and vmap)


def _token(value, what: str, fn: str, *, optional: bool = False):
    """A token: a Python int or an integer scalar array (traced allowed); returns ``(token, concrete int
    or None)``, converted to int32 by the caller once its range is checked against ``V``."""
    if value is None and optional:
        return None, None
    token = check.tokens(value, (), fn, name=what, shape_text="() (a Python int or an integer scalar array)")
    return token, (int(np.asarray(token)) if check.is_concrete(token) else None)


def _describe(tree) -> str:
    leaves, treedef = jax.tree.flatten(tree)
    return f"{treedef} with leaves {[f'{jnp.result_type(x)}{list(jnp.shape(x))}' for x in leaves]}"


def _check(fn: str, step, carry, start_token, max_length, eos_token):
    """The checked ``(carry, start, eos, L, V, dtype)`` (``dtype``: the logits' promoted to at least
    float32); ``step`` is traced once abstractly (``jax.eval_shape``) to read ``V`` and check that it
    keeps its carry."""
    if not callable(step):
        raise TypeError(
            f"{fn}: step must be a callable (carry, token) -> (carry, logits (V,)); got {type(step).__name__}"
        )
    L = check.positive_int(max_length, f"{fn}: max_length")
    start, start_int = _token(start_token, "start_token", fn)
    eos, eos_int = _token(eos_token, "eos_token", fn, optional=True)
    try:
        carry = jax.tree.map(jnp.asarray, carry)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: carry must be a pytree of arrays; got {carry!r}") from None
    try:
        out = jax.eval_shape(step, carry, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as e:  # noqa: BLE001 - the user's function: say where it failed, keep the cause
        raise TypeError(
            f"{fn}: step(carry, token) failed on the given carry and an int32 scalar token "
            f"({type(e).__name__}: {e})"
        ) from e
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = (
            f"a {type(out).__name__} of length {len(out)}"
            if isinstance(out, (tuple, list))
            else ("one array" if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__)
        )
        raise TypeError(f"{fn}: step must return a pair (carry, logits); got {got}")
    new_carry, logits = out
    same = jax.tree.structure(new_carry) == jax.tree.structure(carry) and all(
        tuple(a.shape) == tuple(jnp.shape(b)) and a.dtype == jnp.result_type(b)
        for a, b in zip(jax.tree.leaves(new_carry), jax.tree.leaves(carry))
    )
    if not same:
        raise ValueError(
            f"{fn}: step must return a carry with the structure, shapes and dtypes of the carry it takes "
            f"({_describe(carry)}); got {_describe(new_carry)}"
        )
    if not isinstance(logits, jax.ShapeDtypeStruct) or len(logits.shape) != 1 or logits.shape[0] == 0:
        got = f"shape {tuple(logits.shape)}" if hasattr(logits, "shape") else type(logits).__name__
        raise ValueError(
            f"{fn}: step must return logits of shape (V,) with V >= 1 (one unnormalised log-probability "
            f"per token; decode a batch with jax.vmap); got {got}"
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{fn}: step must return floating logits; got dtype {logits.dtype}")
    V = int(logits.shape[0])
    for name, n in (("start_token", start_int), ("eos_token", eos_int)):
        if n is not None:
            check.token_range(n, V, fn, name=name, vocab_text="V")
    start = jnp.asarray(start, jnp.int32)
    eos = None if eos is None else jnp.asarray(eos, jnp.int32)
    return carry, start, eos, L, V, jnp.promote_types(logits.dtype, jnp.float32)


# --------------------------------------------------------------------------------------------------
# greedy search and sampling: one hypothesis, one scan


def _one(step, carry, start, eos, L: int, dtype, choose, keys):
    """Decode one hypothesis; ``choose(logits, key) -> (token, log-probability of it)``."""

    def body(state, key):
        c, tok, done, total = state
        c, logits = step(c, tok)
        nxt, lp = choose(logits.astype(dtype), key)
        if eos is None:
            return (c, nxt, done, total + lp), nxt
        nxt = jnp.where(done, eos, nxt)
        total = total + jnp.where(done, jnp.zeros_like(lp), lp)
        return (c, nxt, done | (nxt == eos), total), nxt

    init = (carry, start, jnp.asarray(False), jnp.zeros((), dtype))
    (_, _, _, total), tokens = jax.lax.scan(body, init, keys, length=L)
    return tokens, total


def greedy(step: Callable, carry, start_token, max_length: int, *, eos_token=None):
    """Greedy decoding: at each step the most probable next token, ``(tokens (L,), log_prob)``.

    In plain Python (``L = max_length``)::

        tok, done, log_prob, tokens = start_token, False, 0.0, []
        for t in range(L):
            carry, logits = step(carry, tok)
            tok = eos_token if done else argmax(logits)          # the first maximum on ties
            if not done:
                log_prob += log_softmax(logits)[tok]
            done = done or tok == eos_token
            tokens.append(tok)

    The step is still run after EOS (a scan has a fixed length), on the padding token; its output is
    discarded. A Cell with an embedding ``embed (V, I)`` and a readout makes the step::

        step = lambda c, tok: (lambda c2: (c2, readout(cell.output(c2))))(cell.step(params, c, embed[tok]))
        tokens, log_prob = greedy(step, cell.initial_carry(params), bos, 20, eos_token=eos)

    Args:
      step: ``step(carry, token) -> (carry, logits)``, ``token`` an int32 scalar, ``logits (V,)``
        floating; it must return a carry of the same structure, shapes and dtypes (see the module
        docstring for a Cell with an embedding and a readout).
      carry: the decoder's initial state, any pytree of arrays (e.g. the encoder's final carry).
      start_token: the first input token (begin-of-sequence), an int or an integer scalar array in
        ``[0, V)``; it is not part of the output.
      max_length: ``L``, the number of tokens generated, a positive int (static).
      eos_token: ``None``, or the end-of-sequence token in ``[0, V)``: decoding of a hypothesis stops at
        its first EOS (included); the later positions hold ``eos_token``.

    Returns:
      ``tokens (L,)`` int32 and ``log_prob`` (a scalar, at least float32): the sum of the log-softmax
      of the chosen tokens up to and including the first EOS.

    Raises:
      TypeError / ValueError before tracing for a non-callable ``step``, one that fails on ``carry``,
      returns no pair, changes its carry's structure, shapes or dtypes, or gives logits that are not
      ``(V,)`` floats; ``max_length`` that is not a positive int; tokens that are not ints (or integer
      scalar arrays) or (when concrete) outside ``[0, V)``.

    References: Sutskever, Vinyals and Le (2014), section 3.2; Kitov, "Recurrent neural nets".
    """
    fn = "decoding.greedy"
    carry, start, eos, L, _, dtype = _check(fn, step, carry, start_token, max_length, eos_token)

    def choose(logits, _):
        logp = jax.nn.log_softmax(logits)
        tok = jnp.argmax(logp).astype(jnp.int32)
        return tok, logp[tok]

    # one jitted program (also when called eagerly: the scan and the ops around it compile together)
    run = lambda c, s, e: _one(step, c, s, e, L, dtype, choose, None)
    return jax.jit(run)(carry, start, eos)


def sample(step: Callable, carry, start_token, max_length: int, *, key, temperature=1.0, eos_token=None):
    """Ancestral sampling: ``y_t ~ softmax(z_t / temperature)``, ``(tokens (L,), log_prob)``.

    In plain Python (``tau = temperature``)::

        tok, done, log_prob, tokens = start_token, False, 0.0, []
        for t, k in enumerate(jax.random.split(key, L)):
            carry, logits = step(carry, tok)
            logp = log_softmax(logits / tau)
            tok = eos_token if done else jax.random.categorical(k, logp)
            if not done:
                log_prob += logp[tok]
            done = done or tok == eos_token
            tokens.append(tok)

    ``log_prob`` is the log-probability of the sample under the distribution it was drawn from, the
    temperature-scaled one (for ``temperature = 1`` the model's); the model's own log-probability of the
    tokens is one teacher-forced pass away (:func:`jaxrnn.losses.seq2seq` with ``reduction="none"``).
    ``temperature < 1`` sharpens the distribution (towards :func:`greedy`), ``> 1`` flattens it.

    To draw a batch, ``jax.vmap`` over the keys (and the carries): one key gives one sequence, so
    vmapping over carries alone draws with the same random numbers for every row.

    Args:
      step, carry, start_token, max_length, eos_token: as for :func:`greedy`.
      key: a ``jax.random`` key (required; typed, or raw ``uint32[2]``), split into one key per step.
      temperature: a finite number ``> 0`` (concrete, not traced).

    Returns:
      ``tokens (L,)`` int32 and ``log_prob``, the sum of ``log_softmax(z_t / temperature)`` of the
      drawn tokens up to and including the first EOS.

    Raises:
      Everything :func:`greedy` raises; TypeError for a ``key`` that is not a key (or ``None``), a
      ``temperature`` that is not a real number; ValueError for ``temperature <= 0`` or non-finite.

    References: A. Graves, "Generating Sequences With Recurrent Neural Networks" (2013);
    Kitov, "Recurrent neural nets".
    """
    fn = "decoding.sample"
    key = check.prng_key(key, fn, optional=False)
    tau = check.real_number(temperature, f"{fn}: temperature", low=0.0, low_open=True)
    carry, start, eos, L, _, dtype = _check(fn, step, carry, start_token, max_length, eos_token)

    def choose(logits, k):
        logp = jax.nn.log_softmax(logits / jnp.asarray(tau, dtype))
        tok = jax.random.categorical(k, logp).astype(jnp.int32)
        return tok, logp[tok]

    run = lambda c, s, e, k: _one(step, c, s, e, L, dtype, choose, jax.random.split(k, L))
    return jax.jit(run)(carry, start, eos, key)


# --------------------------------------------------------------------------------------------------
# beam search


def _length_penalty(lengths, alpha: float, dtype):
    """GNMT's ``lp(Y) = ((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, section 7)."""
    return ((5.0 + lengths.astype(dtype)) / 6.0) ** alpha


def beam_search(
    step: Callable,
    carry,
    start_token,
    max_length: int,
    beam_size: int,
    *,
    eos_token=None,
    length_penalty=0.0,
):
    """Beam search: the ``K = beam_size`` best hypotheses, ``(tokens (K, L), log_probs (K,))``, best first.

    At each step every live hypothesis is extended by every token, and the ``K`` best of the ``K * V``
    candidates by total log-probability survive. A finished hypothesis (one that has emitted EOS) is
    kept as it is -- one candidate, padded with ``eos_token``, its score frozen (no further
    log-probability cost) -- and competes with the live ones for the ``K`` places. At the end the
    ``K`` survivors are ranked by ``log_prob / lp(|Y|)`` with GNMT's length penalty
    ``lp(|Y|) = ((5 + |Y|) / 6) ** length_penalty`` (Wu et al. 2016), ``|Y|`` the number of tokens up
    to and including the first EOS (``L`` without one); the penalty is applied to this final ranking
    only, the pruning at each step uses the total log-probability. ``length_penalty = 0`` ranks by
    log-probability. In plain Python::

        beams = [(0.0, [], carry, start_token, False)]      # (log_prob, tokens, carry, last, done)
        for t in range(L):
            cands = []
            for lp, toks, c, last, done in beams:
                if done:
                    cands.append((lp, toks + [eos_token], c, eos_token, True))
                    continue
                c2, logits = step(c, last)
                for v in range(V):
                    cands.append((lp + log_softmax(logits)[v], toks + [v], c2, v, v == eos_token))
            beams = sorted(cands, key=lambda b: -b[0])[:K]               # stable: ties keep their order
        beams = sorted(beams, key=lambda b: -b[0] / ((5 + length(b[1])) / 6) ** length_penalty)

    Exact search: when ``K`` is at least the number of complete hypotheses (e.g. ``K >= V ** L``)
    nothing is pruned and the result is the exhaustive top-``K``. Rows beyond the number of hypotheses
    that exist (``K > V`` at ``L = 1``, say) have ``log_probs = -inf`` and arbitrary tokens.
    ``beam_size = 1`` is :func:`greedy`.

    Args:
      step, carry, start_token, max_length, eos_token: as for :func:`greedy` (``step`` is run on the
        ``K`` beams with ``jax.vmap``).
      beam_size: ``K``, a positive int (static).
      length_penalty: GNMT's ``alpha``, a finite number ``>= 0`` (Wu et al. use 0.6 to 0.7).

    Returns:
      ``tokens (K, L)`` int32 and ``log_probs (K,)`` (the total log-probabilities up to and including
      the first EOS, not divided by the penalty), best first.

    Raises:
      Everything :func:`greedy` raises; TypeError / ValueError for a ``beam_size`` that is not a
      positive int, a ``length_penalty`` that is not a finite number ``>= 0``.

    References: Sutskever, Vinyals and Le (2014), section 3.2 (a left-to-right beam search decoder);
    Wu et al. (2016), section 7 (the length penalty).
    """
    fn = "decoding.beam_search"
    K = check.positive_int(beam_size, f"{fn}: beam_size")
    alpha = check.real_number(length_penalty, f"{fn}: length_penalty", low=0.0)
    carry, start, eos, L, V, dtype = _check(fn, step, carry, start_token, max_length, eos_token)
    return jax.jit(lambda c, s, e: _beams(step, c, s, e, L, K, V, alpha, dtype))(carry, start, eos)


def _beams(step, carry, start, eos, L: int, K: int, V: int, alpha: float, dtype):
    """The beam search on checked arguments: one scan, then the final ranking."""
    neg_inf = jnp.asarray(-jnp.inf, dtype)
    vstep = jax.vmap(step)

    def body(state, t):
        carries, last, scores, done, length, tokens = state
        carries, logits = vstep(carries, last)
        cand = scores[:, None] + jax.nn.log_softmax(logits.astype(dtype), axis=-1)  # (K, V)
        if eos is not None:  # a finished beam is one candidate: itself, padded with eos, score frozen
            frozen = jnp.where(jnp.arange(V) == eos, scores[:, None], neg_inf)
            cand = jnp.where(done[:, None], frozen, cand)
        scores, idx = jax.lax.top_k(cand.reshape(-1), K)
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        carries = jax.tree.map(lambda x: x[parent], carries)
        was_done = done[parent]
        length = length[parent] + (~was_done).astype(jnp.int32)
        tokens = tokens[parent].at[:, t].set(tok)
        done = was_done if eos is None else was_done | (tok == eos)
        return (carries, tok, scores, done, length, tokens), None

    init = (
        jax.tree.map(lambda x: jnp.broadcast_to(x, (K, *jnp.shape(x))), carry),
        jnp.broadcast_to(start, (K,)),
        jnp.full((K,), -jnp.inf, dtype).at[0].set(0.0),  # one live beam: the others are copies
        jnp.zeros((K,), bool),
        jnp.zeros((K,), jnp.int32),
        jnp.full((K, L), 0, jnp.int32) if eos is None else jnp.broadcast_to(eos, (K, L)),
    )
    (_, _, scores, _, length, tokens), _ = jax.lax.scan(body, init, jnp.arange(L))
    rank = scores if alpha == 0.0 else scores / _length_penalty(length, alpha, dtype)
    order = jnp.argsort(-rank, stable=True)
    return tokens[order], scores[order]
