"""Tests for jaxrnn.decoding against brute-force enumeration of every sequence of a tiny vocabulary.

Two steps: a hand-made Markov chain whose logits depend on the last token and the position (its carry a
pytree with an integer counter), and a GRU with an embedding and a readout. With ``V = 3`` tokens and
``L <= 4`` steps every hypothesis is enumerated (depth first, one step call per prefix), so greedy,
beam search (with ``beam_size >= V ** L``: exhaustive) and sampling are checked against exact values.
The jitted decoders are module-level and reused across tests (tiny shapes, few compilations).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import decoding
from jaxrnn.decoding import beam_search, greedy, sample
from jaxrnn.losses import seq2seq

F64 = jnp.float64
V, L, EOS, BOS = 3, 4, 2, 0
H, E = 4, 2  # the GRU's hidden and embedding sizes


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), F64)


# --------------------------------------------------------------------------------------------------
# the two steps


def markov_step(c, tok):
    """logits = A[last token] + B[position]; the carry is a dict with an integer position counter."""
    return {**c, "t": c["t"] + 1}, c["A"][tok] + c["B"][c["t"]]


MARKOV_CARRY = {"A": _normal(0, (V, V), 1.5), "B": _normal(1, (L, V)), "t": jnp.asarray(0, jnp.int32)}

GRU = jr.gru(H)
GRU_PARAMS = {
    "cell": GRU.init(jax.random.PRNGKey(0), E, F64),
    "embed": _normal(2, (V, E)),
    "W": _normal(3, (H, V), 2.0),
    "b": _normal(4, (V,)),
}


def gru_step(c, tok):
    """A Cell with an embedding and a readout, as the module docstring builds it."""
    p = GRU_PARAMS
    return (lambda c2: (c2, GRU.output(c2) @ p["W"] + p["b"]))(GRU.step(p["cell"], c, p["embed"][tok]))


GRU_CARRY = _normal(5, (H,))
STEPS = {"markov": (markov_step, MARKOV_CARRY), "gru": (gru_step, GRU_CARRY)}
_np_steps = {}


def _np_step(name):
    """The step jitted once, returning numpy float64 logits (for the Python references)."""
    if name not in _np_steps:
        f = jax.jit(STEPS[name][0])

        def step(c, tok):
            c2, logits = f(c, jnp.asarray(tok, jnp.int32))
            return c2, np.asarray(logits, np.float64)

        _np_steps[name] = step
    return _np_steps[name]


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max()
    return z - m - np.log(np.sum(np.exp(z - m)))


# --------------------------------------------------------------------------------------------------
# references: enumeration, the greedy loop, the plain beam search of the docstring


@functools.cache
def hypotheses(name, n, eos=None, temperature=1.0):
    """Every complete hypothesis of ``n`` tokens (padded with eos after its first EOS) -> its exact
    log-probability (under ``softmax(logits / temperature)``), by depth-first enumeration."""
    step, carry = _np_step(name), STEPS[name][1]
    out = {}

    def go(c, tok, prefix, lp):
        if len(prefix) == n:
            out[tuple(prefix)] = lp
            return
        c2, logits = step(c, tok)
        logp = _log_softmax(logits / temperature)
        for v in range(V):
            if v == eos:
                out[tuple(prefix + [v] * (n - len(prefix)))] = lp + logp[v]
            else:
                go(c2, v, prefix + [v], lp + logp[v])

    go(carry, BOS, [], 0.0)
    return out


def _length(tokens, eos):
    tokens = list(tokens)
    return tokens.index(eos) + 1 if eos is not None and eos in tokens else len(tokens)


def _penalty(tokens, eos, alpha):
    return ((5.0 + _length(tokens, eos)) / 6.0) ** alpha


def greedy_loop(name, n, eos=None, carry=None):
    step, c = _np_step(name), STEPS[name][1] if carry is None else carry
    tok, done, total, tokens = BOS, False, 0.0, []
    for _ in range(n):
        c, logits = step(c, tok)
        logp = _log_softmax(logits)
        tok = eos if done else int(np.argmax(logp))
        total += 0.0 if done else logp[tok]
        done = done or tok == eos
        tokens.append(tok)
    return tokens, total


def beam_loop(name, n, K, eos=None, alpha=0.0, carry=None):
    """The plain-Python beam search of beam_search's docstring."""
    step = _np_step(name)
    beams = [(0.0, [], STEPS[name][1] if carry is None else carry, BOS, False)]
    for _ in range(n):
        cands = []
        for lp, toks, c, last, done in beams:
            if done:
                cands.append((lp, toks + [eos], c, eos, True))
                continue
            c2, logits = step(c, last)
            logp = _log_softmax(logits)
            cands += [(lp + logp[v], toks + [v], c2, v, v == eos) for v in range(V)]
        beams = sorted(cands, key=lambda b: -b[0])[:K]
    beams = sorted(beams, key=lambda b: -b[0] / _penalty(b[1], eos, alpha))
    return [b[1] for b in beams], [b[0] for b in beams]


# --------------------------------------------------------------------------------------------------
# the jitted decoders (static: the step, the lengths and the options)

_greedy = jax.jit(greedy, static_argnums=(0, 3), static_argnames=("eos_token",))
_beam = jax.jit(beam_search, static_argnums=(0, 3, 4), static_argnames=("eos_token", "length_penalty"))


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _samples(step, carry, n, eos, temperature, keys):
    """One sample per key."""
    one = lambda k: sample(step, carry, BOS, n, key=k, eos_token=eos, temperature=temperature)
    return jax.vmap(one)(keys)


def _close(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# greedy


@pytest.mark.parametrize(("name", "eos"), [("markov", None), ("markov", EOS), ("gru", EOS)])
def test_greedy_equals_the_argmax_loop(name, eos):
    step, carry = STEPS[name]
    tokens, log_prob = _greedy(step, carry, BOS, L, eos_token=eos)
    want_tokens, want_lp = greedy_loop(name, L, eos)
    assert tokens.dtype == jnp.int32 and tokens.shape == (L,)
    np.testing.assert_array_equal(tokens, want_tokens)
    _close(log_prob, want_lp)
    # the greedy hypothesis's log-probability is its exact one
    _close(log_prob, hypotheses(name, L, eos)[tuple(want_tokens)])


def test_greedy_stops_at_eos_and_pads_with_it():
    # a chain that emits 1, then EOS (then 1, 2, ... without EOS): after EOS the padding is eos, at 0 cost
    A = jnp.asarray([[0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [0.0, 5.0, 0.0]], F64)
    carry = {"A": A, "B": jnp.zeros((L, V), F64), "t": jnp.asarray(0, jnp.int32)}
    tokens, log_prob = _greedy(markov_step, carry, BOS, L, eos_token=EOS)
    np.testing.assert_array_equal(tokens, [1, EOS, EOS, EOS])
    _close(log_prob, 2 * _log_softmax(np.array([0.0, 5.0, 0.0]))[1])
    tokens, _ = _greedy(markov_step, carry, BOS, L, eos_token=None)
    np.testing.assert_array_equal(tokens, [1, 2, 1, 2])


# --------------------------------------------------------------------------------------------------
# beam search


def _assert_exhaustive(tokens, log_probs, hyps, eos, alpha):
    """The K >= #hypotheses result is every hypothesis once, with its exact log-probability, ranked by
    log_prob / lp (ties in any order), and -inf beyond."""
    tokens, log_probs, n = np.asarray(tokens), np.asarray(log_probs), len(hyps)
    assert np.all(np.isneginf(log_probs[n:]))
    got = [tuple(r) for r in tokens[:n].tolist()]
    assert sorted(got) == sorted(hyps)  # each hypothesis exactly once
    _close(log_probs[:n], [hyps[g] for g in got])
    rank = np.array([hyps[g] / _penalty(g, eos, alpha) for g in got])
    assert np.all(np.diff(rank) <= 1e-12)
    want = sorted((lp / _penalty(h, eos, alpha) for h, lp in hyps.items()), reverse=True)
    _close(rank, want)


@pytest.mark.parametrize(
    ("name", "eos", "alpha"),
    [("markov", None, 0.0), ("markov", EOS, 0.0), ("gru", EOS, 0.7)],
)
def test_beam_search_with_v_to_the_l_beams_is_exhaustive_search(name, eos, alpha):
    step, carry = STEPS[name]
    hyps = hypotheses(name, L, eos)
    assert len(hyps) == (V**L if eos is None else sum((V - 1) ** t for t in range(L)) + (V - 1) ** L)
    tokens, log_probs = _beam(step, carry, BOS, L, V**L, eos_token=eos, length_penalty=alpha)
    assert tokens.shape == (V**L, L) and log_probs.shape == (V**L,) and tokens.dtype == jnp.int32
    _assert_exhaustive(tokens, log_probs, hyps, eos, alpha)
    if alpha:  # the penalty changes the exhaustive ranking of these hypotheses (so the test tells)
        by_lp = sorted(hyps, key=lambda h: -hyps[h])
        assert by_lp != sorted(hyps, key=lambda h: -hyps[h] / _penalty(h, eos, alpha))


def test_beam_search_with_one_beam_is_greedy():
    tokens, log_probs = _beam(gru_step, GRU_CARRY, BOS, L, 1, eos_token=EOS, length_penalty=0.0)
    g_tokens, g_lp = _greedy(gru_step, GRU_CARRY, BOS, L, eos_token=EOS)
    assert tokens.shape == (1, L)
    np.testing.assert_array_equal(tokens[0], g_tokens)
    _close(log_probs[0], g_lp)


def test_beam_search_prunes_as_the_plain_loop():
    # three beams of the GRU step, EOS and a length penalty: the pruned search of the docstring's loop
    for carry in (GRU_CARRY, 2 * GRU_CARRY):
        tokens, log_probs = _beam(gru_step, carry, BOS, L, 3, eos_token=EOS, length_penalty=0.7)
        want_tokens, want_lps = beam_loop("gru", L, 3, EOS, 0.7, carry)
        np.testing.assert_array_equal(tokens, want_tokens)
        _close(log_probs, want_lps)


# --------------------------------------------------------------------------------------------------
# sampling


def _chi2_bound(df, z=3.72):
    """Wilson-Hilferty: the chi-square quantile at the normal z (3.72: one in 10,000)."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def _chi2(counts, probs, N):
    """Pearson's statistic over the hypotheses, those expected fewer than 5 times pooled into one bin;
    and its degrees of freedom."""
    big = [h for h in probs if N * probs[h] >= 5]
    small = [h for h in probs if N * probs[h] < 5]
    bins = [(counts[h], N * probs[h]) for h in big]
    if small:
        bins.append((sum(counts[h] for h in small), N * sum(probs[h] for h in small)))
    return sum((o - e) ** 2 / e for o, e in bins), len(bins) - 1


def test_sample_frequencies_match_the_exact_probabilities():
    # temperature 0.7 and EOS: the 15 hypotheses of 3 tokens, 4000 samples
    n, N, tau = 3, 4000, 0.7
    hyps = hypotheses("markov", n, EOS, tau)
    keys = jax.random.split(jax.random.key(7), N)
    tokens, log_probs = _samples(markov_step, MARKOV_CARRY, n, EOS, tau, keys)
    tokens = [tuple(r) for r in np.asarray(tokens).tolist()]
    # every sample is a complete hypothesis, with its exact (temperature-scaled) log-probability
    _close(log_probs, [hyps[t] for t in tokens], rtol=1e-9)
    counts = {h: 0 for h in hyps}
    for t in tokens:
        counts[t] += 1
    probs = {h: np.exp(lp) for h, lp in hyps.items()}
    assert abs(sum(probs.values()) - 1) < 1e-12
    chi2, df = _chi2(counts, probs, N)
    assert df >= 8 and chi2 < _chi2_bound(df), (chi2, df)
    # and the temperature matters: against the tau = 1 probabilities the same counts are far off
    at_one = {h: np.exp(lp) for h, lp in hypotheses("markov", n, EOS, 1.0).items()}
    chi2, df = _chi2(counts, at_one, N)
    assert chi2 > 3 * _chi2_bound(df), (chi2, df)


# --------------------------------------------------------------------------------------------------
# batches (vmap), jit and no jit


@jax.jit
def _batched(carries, keys):
    return (
        jax.vmap(lambda c: greedy(gru_step, c, BOS, L, eos_token=EOS))(carries),
        jax.vmap(lambda c: beam_search(gru_step, c, BOS, L, 3, eos_token=EOS, length_penalty=0.7))(carries),
        jax.vmap(lambda c, k: sample(gru_step, c, BOS, L, key=k, eos_token=EOS, temperature=0.7))(
            carries, keys
        ),
    )


def test_vmap_over_carries_equals_per_example_calls():
    carries = _normal(20, (3, H), 2.0)
    keys = jax.random.split(jax.random.key(3), 3)
    (g_tok, g_lp), (b_tok, b_lp), (s_tok, s_lp) = _batched(carries, keys)
    for b in range(3):
        tokens, lp = greedy_loop("gru", L, EOS, carries[b])
        np.testing.assert_array_equal(g_tok[b], tokens)
        _close(g_lp[b], lp)
        tokens, lps = beam_loop("gru", L, 3, EOS, 0.7, carries[b])
        np.testing.assert_array_equal(b_tok[b], tokens)
        _close(b_lp[b], lps)
        one = _samples(gru_step, carries[b], L, EOS, 0.7, keys[b : b + 1])
        jax.tree.map(lambda got, want, b=b: _close(got[b], want[0]), (s_tok, s_lp), one)
    assert len({tuple(r) for r in np.asarray(b_tok[:, 0]).tolist()}) > 1  # the carries matter


def test_eager_equals_jit():
    # tokens as integer arrays (start_token int64 from numpy, eos_token a jax scalar), a raw uint32 key
    start, eos, raw = np.int64(BOS), jnp.asarray(EOS), jax.random.PRNGKey(5)
    jax.tree.map(
        _close,
        greedy(gru_step, GRU_CARRY, start, L, eos_token=eos),
        _greedy(gru_step, GRU_CARRY, BOS, L, eos_token=EOS),
    )
    jax.tree.map(
        _close,
        beam_search(gru_step, GRU_CARRY, start, L, 3, eos_token=eos, length_penalty=0.7),
        _beam(gru_step, GRU_CARRY, BOS, L, 3, eos_token=EOS, length_penalty=0.7),
    )
    jax.tree.map(
        lambda eager, jitted: _close(eager, jitted[0]),
        sample(gru_step, GRU_CARRY, start, L, key=raw, eos_token=eos, temperature=0.7),
        _samples(gru_step, GRU_CARRY, L, EOS, 0.7, jax.random.wrap_key_data(raw)[None]),
    )


# --------------------------------------------------------------------------------------------------
# with the teacher-forced loss: the same parameters score and decode


def test_greedy_log_prob_is_minus_the_teacher_forced_loss():
    enc, dec = jr.gru(H), GRU
    params = {
        "encoder": enc.init(jax.random.PRNGKey(1), 2, F64),
        "decoder": GRU_PARAMS["cell"],
        "embed": GRU_PARAMS["embed"],
        "W": GRU_PARAMS["W"],
        "b": GRU_PARAMS["b"],
    }
    src = _normal(30, (5, 2))

    @jax.jit
    def run(params, src):
        _, s_n = jr.losses.encode(enc, params["encoder"], src)
        tokens, log_prob = greedy(gru_step, s_n, BOS, L, eos_token=EOS)
        n = jnp.argmax(tokens == EOS) + 1  # the hypothesis's length, up to and including EOS
        n = jnp.where(jnp.any(tokens == EOS), n, L)
        ys_in = jnp.concatenate([jnp.array([BOS]), tokens[:-1]])
        loss = seq2seq(
            enc,
            dec,
            params,
            src[:, None],
            ys_in[:, None],
            tokens[:, None],
            y_lengths=n[None],
            reduction="sum",
        )
        return log_prob, loss

    log_prob, loss = run(params, src)
    _close(log_prob, -loss, rtol=1e-10)


# --------------------------------------------------------------------------------------------------
# bad input


def test_errors():
    key = jax.random.key(0)
    c, s = MARKOV_CARRY, markov_step
    cases = [
        (lambda: greedy("step", c, 0, 3), TypeError, "decoding.greedy: step must be a callable"),
        (lambda: greedy(s, c, 0, 0), ValueError, "decoding.greedy: max_length must be a positive int"),
        (lambda: greedy(s, c, 0, 2.0), TypeError, "decoding.greedy: max_length must be a positive int"),
        (lambda: greedy(s, c, 1.0, 3), TypeError, "decoding.greedy: start_token must be an integer array"),
        (lambda: greedy(s, c, True, 3), TypeError, "decoding.greedy: start_token must be an integer array"),
        (
            lambda: greedy(s, c, jnp.zeros(2, int), 3),
            ValueError,
            "decoding.greedy: start_token must have shape ()",
        ),
        (lambda: greedy(s, c, 3, 3), ValueError, r"decoding.greedy: start_token must be in \[0, V=3\)"),
        (lambda: greedy(s, c, -1, 3), ValueError, r"decoding.greedy: start_token must be in \[0, V=3\)"),
        (
            lambda: greedy(s, c, 0, 3, eos_token=5),
            ValueError,
            r"decoding.greedy: eos_token must be in \[0, V=3\)",
        ),
        (
            lambda: greedy(s, c, 0, 3, eos_token="2"),
            TypeError,
            "decoding.greedy: eos_token must be an integer array",
        ),
        (lambda: greedy(s, c, 0, 3, eos_token=jnp.asarray(2.0)), TypeError, "decoding.greedy: eos_token"),
        (lambda: greedy(s, "c", 0, 3), TypeError, "decoding.greedy: carry must be a pytree of arrays"),
        (lambda: greedy(s, c["A"], 0, 3), TypeError, r"decoding.greedy: step\(carry, token\) failed"),
        (lambda: greedy(lambda c, t: c, c, 0, 3), TypeError, "decoding.greedy: step must return a pair"),
        (
            lambda: greedy(lambda c, t: ({**c, "t": c["t"] + 0.5}, c["A"][t]), c, 0, 3),
            ValueError,
            "decoding.greedy: step must return a carry with the structure, shapes and dtypes",
        ),
        (
            lambda: greedy(lambda c, t: (c, c["A"]), c, 0, 3),
            ValueError,
            r"decoding.greedy: step must return logits of shape \(V,\)",
        ),
        (
            lambda: greedy(lambda c, t: (c, c["t"][None]), c, 0, 3),
            TypeError,
            "decoding.greedy: step must return floating logits",
        ),
        (
            lambda: beam_search(s, c, 0, 3, 0),
            ValueError,
            "decoding.beam_search: beam_size must be a positive",
        ),
        (
            lambda: beam_search(s, c, 0, 3, 2.0),
            TypeError,
            "decoding.beam_search: beam_size must be a positive",
        ),
        (lambda: beam_search(s, c, 0, 0, 2), ValueError, "decoding.beam_search: max_length"),
        (lambda: beam_search(s, c, 0, 3, 2, length_penalty=-0.5), ValueError, "beam_search: length_penalty"),
        (lambda: beam_search(s, c, 0, 3, 2, length_penalty="0.6"), TypeError, "beam_search: length_penalty"),
        (lambda: beam_search(s, c, 0, 3, 2, eos_token=3), ValueError, "decoding.beam_search: eos_token"),
        (lambda: sample(s, c, 0, 3, key=None), TypeError, "decoding.sample: key must be a jax.random key"),
        (lambda: sample(s, c, 0, 3, key=0), TypeError, "decoding.sample: key must be a jax.random key"),
        (lambda: sample(s, c, 0, 3), TypeError, "key"),  # missing
        (lambda: sample(s, c, 0, 3, key=key, temperature=0.0), ValueError, "decoding.sample: temperature"),
        (lambda: sample(s, c, 0, 3, key=key, temperature=-1), ValueError, "decoding.sample: temperature"),
        (lambda: sample(s, c, 0, 3, key=key, temperature=float("nan")), ValueError, "sample: temperature"),
        (lambda: sample(s, c, 0, 3, key=key, temperature="hot"), TypeError, "decoding.sample: temperature"),
        (lambda: sample(s, c, 0.0, 3, key=key), TypeError, "decoding.sample: start_token"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    # the checks also run on traced carries (inside jit and vmap)
    with pytest.raises(ValueError, match="decoding.beam_search: eos_token must be in"):
        jax.vmap(lambda A: beam_search(s, {**c, "A": A}, 0, 3, 2, eos_token=7))(jnp.stack([c["A"]] * 2))


def test_public_names():
    assert decoding.__all__ == ["beam_search", "greedy", "sample"]
    assert all(callable(getattr(decoding, n)) for n in decoding.__all__)
