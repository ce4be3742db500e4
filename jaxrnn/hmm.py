"""Hidden Markov models in log space: the forward filter, the forward-backward smoother and Viterbi.

The Politecnico di Milano lecture "Recurrent Neural Networks" starts from the two hidden-state models
whose inference is tractable; for an HMM the posterior over the hidden state is a deterministic
function of the data, computed by a recurrence -- so the forward filter is also a
:class:`~jaxrnn.Cell` (:func:`forward_cell`) that :func:`jaxrnn.unroll` runs.

Conventions: ``K`` hidden states; ``log_pi (K,)`` with ``log_pi[k] = log p(z_0 = k)``;
``log_A (K, K)`` with ``log_A[i, j] = log p(z_t = j | z_{t-1} = i)``; ``log_obs (T, *batch, K)`` with
``log_obs[t, ..., k] = log p(y_t | z_t = k)``, time first. ``lengths (*batch)`` marks the valid steps of
each sequence. Everything is in log space (``logsumexp``), so long sequences never underflow, and
differentiable. ``parallel=True`` computes the same with ``jax.lax.associative_scan`` over the
log-semiring matrix products (``O(log T)`` depth, ``O(T K^3)`` work).

References: L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proc. IEEE 77(2), 1989; A. J. Viterbi, "Error bounds for convolutional codes ...", 1967.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns
from jaxrnn.masking import valid_steps

__all__ = ["HMMCarry", "forward", "forward_cell", "sample", "smoother", "viterbi"]

_NEG = -1e30  # "log 0" that keeps gradients finite (exp underflows to exactly 0)


def _check(log_pi, log_A, log_obs, lengths, fn: str):
    log_pi = check.real_array(log_pi, f"{fn}: log_pi")
    log_A = check.real_array(log_A, f"{fn}: log_A")
    log_obs = check.real_array(log_obs, f"{fn}: log_obs")
    if log_pi.ndim != 1:
        raise ValueError(f"{fn}: log_pi must have shape (K,); got {tuple(log_pi.shape)}")
    K = log_pi.shape[0]
    if K == 0:
        raise ValueError(f"{fn}: log_pi must have at least one state; got shape (0,)")
    if tuple(log_A.shape) != (K, K):
        raise ValueError(
            f"{fn}: log_A must have shape (K, K) = ({K}, {K}) for K={K} states; got {tuple(log_A.shape)}"
        )
    if log_obs.ndim < 2 or log_obs.shape[-1] != K or log_obs.shape[0] == 0:
        raise ValueError(
            f"{fn}: log_obs must have shape (T, *batch, K) with T >= 1 and K={K}; got {tuple(log_obs.shape)}"
        )
    dtype = jnp.result_type(log_pi, log_A, log_obs)
    T, batch_shape = log_obs.shape[0], tuple(log_obs.shape[1:-1])
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    return log_pi.astype(dtype), log_A.astype(dtype), log_obs.astype(dtype), lengths, T, batch_shape


def _valid(T: int, batch_shape, lengths):
    """``(T, *batch)`` booleans ``t < lengths`` (all True without lengths)."""
    if lengths is None:
        return jnp.ones((T, *batch_shape), bool)
    return jnp.broadcast_to(valid_steps(lengths, T), (T, *batch_shape))


def _logmatmul(a, b):
    """``log(exp(a) @ exp(b))`` over the last two axes."""
    return jax.nn.logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)


def _log_normalise(v):
    c = jax.nn.logsumexp(v, axis=-1, keepdims=True)
    return v - c, c[..., 0]


@functools.partial(jax.jit, static_argnames=("parallel",))  # eager calls: one program, not op by op
def _forward_messages(log_pi, log_A, log_obs, valid, parallel: bool):
    """``(log_alpha, log_c)``: normalised filtered log beliefs ``(T, *batch, K)`` and the log normalisers
    ``(T, *batch)`` (0 on padding steps, where the belief stands still)."""
    if parallel:
        K = log_pi.shape[0]
        eye = jnp.where(jnp.eye(K, dtype=bool), 0.0, _NEG).astype(log_A.dtype)
        first = jnp.broadcast_to(log_pi + log_obs[0][..., None, :], log_obs.shape[1:-1] + (K, K))
        rest = log_A + log_obs[1:][..., None, :]  # (T-1, *batch, K, K)
        mats = jnp.concatenate([first[None], rest], axis=0)
        mats = jnp.where(valid[..., None, None], mats, eye)
        prefix = jax.lax.associative_scan(_logmatmul, mats, axis=0)
        log_alpha_unnorm = prefix[..., 0, :]  # the rows of the first factor are equal
        total = jax.nn.logsumexp(log_alpha_unnorm, axis=-1)  # log p(y_0..y_t) (stands still on padding)
        log_c = total - jnp.concatenate([jnp.zeros_like(total[:1]), total[:-1]], axis=0)
        return log_alpha_unnorm - total[..., None], jnp.where(valid, log_c, 0.0)

    def body(prev, inp):
        obs, ok, t = inp
        pred = jnp.where(t == 0, log_pi, jax.nn.logsumexp(prev[..., :, None] + log_A, axis=-2))
        alpha, c = _log_normalise(pred + obs)
        alpha = jnp.where(ok[..., None], alpha, prev)
        return alpha, (alpha, jnp.where(ok, c, 0.0))

    init = jnp.broadcast_to(log_pi, log_obs.shape[1:])
    _, (log_alpha, log_c) = jax.lax.scan(body, init, (log_obs, valid, jnp.arange(log_obs.shape[0])))
    return log_alpha, log_c


def forward(log_pi, log_A, log_obs, *, lengths=None, parallel: bool = False):
    """The forward algorithm: ``(log_likelihood, filtered_probs)``.

    ``filtered_probs[t] = p(z_t | y_0..y_t)`` and ``log_likelihood = log p(y_0..y_{L-1})`` for each
    sequence (summed over its valid steps; 0 for length 0). In plain Python::

        alpha = log_pi + log_obs[0]
        for t in range(1, L):
            alpha = logsumexp(alpha[:, None] + log_A, axis=0) + log_obs[t]
        log_likelihood = logsumexp(alpha)            # filtered_probs[t] = softmax(alpha at step t)

    Args:
      log_pi: ``(K,)``; log_A: ``(K, K)``; log_obs: ``(T, *batch, K)`` (see the module docstring).
      lengths: ``(*batch)`` ints in ``[0, T]``; past a sequence's length its filtered probabilities
        repeat the last valid ones (the prior for length 0) and add nothing to the likelihood.
      parallel: the associative-scan form (equal values and gradients).

    Returns:
      ``log_likelihood (*batch)`` and ``filtered_probs (T, *batch, K)``.
    """
    fn = "hmm.forward"
    parallel = check.bool_arg(parallel, f"{fn}: parallel")
    log_pi, log_A, log_obs, lengths, T, batch_shape = _check(log_pi, log_A, log_obs, lengths, fn)
    valid = _valid(T, batch_shape, lengths)
    log_alpha, log_c = _forward_messages(log_pi, log_A, log_obs, valid, parallel)
    if lengths is not None:  # length 0: the prior, as the docstring says
        empty = (lengths == 0)[None, ..., None]
        log_alpha = jnp.where(empty, jnp.broadcast_to(log_pi, log_alpha.shape), log_alpha)
    return jnp.sum(log_c, axis=0), jnp.exp(log_alpha)


@functools.partial(jax.jit, static_argnames=("parallel",))
def _backward_messages(log_A, log_obs, valid, parallel: bool):
    """``log_beta (T, *batch, K)``: ``log p(y_{t+1}..y_{L-1} | z_t)`` (0 at and past the last valid step)."""
    # backward messages: step t combines step t+1's evidence, where t+1 is valid
    nxt = jnp.concatenate([log_obs[1:], jnp.zeros_like(log_obs[:1])], axis=0)
    nxt_ok = jnp.concatenate([valid[1:], jnp.zeros_like(valid[:1])], axis=0)
    K = log_A.shape[0]
    if parallel:
        eye = jnp.where(jnp.eye(K, dtype=bool), 0.0, _NEG).astype(log_A.dtype)
        mats = jnp.where(nxt_ok[..., None, None], log_A + nxt[..., None, :], eye)  # N_t
        suffix = jax.lax.associative_scan(lambda a, b: _logmatmul(b, a), mats, axis=0, reverse=True)
        log_beta = jax.nn.logsumexp(suffix, axis=-1)  # (N_t ... N_{T-1}) applied to log 1 = 0
    else:

        def body(beta, inp):
            obs, ok = inp
            new = jax.nn.logsumexp(log_A + (obs + beta)[..., None, :], axis=-1)
            new = jnp.where(ok[..., None], new, beta)
            return new, new

        init = jnp.zeros(log_obs.shape[1:], log_obs.dtype)
        _, log_beta = jax.lax.scan(body, init, (nxt, nxt_ok), reverse=True)
    return log_beta


def smoother(log_pi, log_A, log_obs, *, lengths=None, parallel: bool = False):
    """The forward-backward smoother: ``(log_likelihood, smoothed_probs)``, ``smoothed_probs[t] =
    p(z_t | y_0..y_{L-1})``, ``(T, *batch, K)`` (zeros past a sequence's length).

    In plain Python, with ``alpha`` of :func:`forward`::

        beta[L-1] = 0
        for t in range(L - 2, -1, -1):
            beta[t] = logsumexp(log_A + log_obs[t + 1] + beta[t + 1], axis=1)
        smoothed[t] = softmax(alpha[t] + beta[t])
    """
    fn = "hmm.smoother"
    parallel = check.bool_arg(parallel, f"{fn}: parallel")
    log_pi, log_A, log_obs, lengths, T, batch_shape = _check(log_pi, log_A, log_obs, lengths, fn)
    valid = _valid(T, batch_shape, lengths)
    log_alpha, log_c = _forward_messages(log_pi, log_A, log_obs, valid, parallel)
    log_beta = _backward_messages(log_A, log_obs, valid, parallel)
    post, _ = _log_normalise(log_alpha + log_beta)
    return jnp.sum(log_c, axis=0), jnp.where(valid[..., None], jnp.exp(post), 0.0)


def viterbi(log_pi, log_A, log_obs, *, lengths=None):
    """The most probable path: ``(path, log_prob)``; ``path (T, *batch)`` int32 (``-1`` past a sequence's
    length), ``log_prob (*batch)`` = ``max_z log p(z, y_0..y_{L-1})``. In plain Python::

        delta = log_pi + log_obs[0]
        for t in range(1, L):
            back[t] = argmax(delta[:, None] + log_A, axis=0)
            delta = max(delta[:, None] + log_A, axis=0) + log_obs[t]
        path[L-1] = argmax(delta)
        for t in range(L - 1, 0, -1):
            path[t - 1] = back[t][path[t]]
    """
    fn = "hmm.viterbi"
    log_pi, log_A, log_obs, lengths, T, batch_shape = _check(log_pi, log_A, log_obs, lengths, fn)
    valid = _valid(T, batch_shape, lengths)
    K = log_pi.shape[0]

    def body(delta, inp):
        obs, ok, t = inp
        scores = delta[..., :, None] + log_A  # (*batch, K, K)
        back = jnp.argmax(scores, axis=-2).astype(jnp.int32)
        new = jnp.where(t == 0, log_pi + obs, jnp.max(scores, axis=-2) + obs)
        identity = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32), back.shape)
        back = jnp.where((ok & (t > 0))[..., None], back, identity)  # padding: keep the state
        return jnp.where(ok[..., None], new, delta), back

    init = jnp.broadcast_to(log_pi, log_obs.shape[1:])
    delta, backs = jax.lax.scan(body, init, (log_obs, valid, jnp.arange(T)))
    last = jnp.argmax(delta, axis=-1).astype(jnp.int32)

    def track(state, back):
        prev = jnp.take_along_axis(back, state[..., None], axis=-1)[..., 0]
        return prev, state

    _, path = jax.lax.scan(track, last, backs, reverse=True)
    log_prob = jnp.max(delta, axis=-1)
    if lengths is not None:
        log_prob = jnp.where(lengths == 0, 0.0, log_prob)
    return jnp.where(valid, path, -1), log_prob


def sample(log_pi, log_A, key, T: int, batch_shape=()):
    """Hidden states ``z (T, *batch)`` int32 drawn from the chain (``z_0 ~ pi``, ``z_t ~ A[z_{t-1}]``);
    draw the observations from them with your emission model. In plain Python::

        z[0] = categorical(log_pi)
        for t in range(1, T): z[t] = categorical(log_A[z[t - 1]])
    """
    fn = "hmm.sample"
    T = check.positive_int(T, f"{fn}: T")
    log_pi = check.real_array(log_pi, f"{fn}: log_pi")
    log_A = check.real_array(log_A, f"{fn}: log_A")
    K = log_pi.shape[0] if log_pi.ndim == 1 else 0
    if K == 0 or tuple(log_A.shape) != (K, K):
        raise ValueError(
            f"{fn}: log_pi must be (K,) and log_A (K, K); got {tuple(log_pi.shape)}, {tuple(log_A.shape)}"
        )
    batch_shape = tuple(batch_shape)
    keys = jax.random.split(check.prng_key(key, fn, optional=False), T)
    z0 = jax.random.categorical(keys[0], log_pi, shape=batch_shape).astype(jnp.int32)

    def body(z, k):
        new = jax.random.categorical(k, log_A[z]).astype(jnp.int32)
        return new, new

    _, rest = jax.lax.scan(body, z0, keys[1:])
    return jnp.concatenate([z0[None], rest], axis=0)


# --------------------------------------------------------------------------------------------------
# the forward filter as a Cell


class HMMCarry(NamedTuple):
    """The carry of :func:`forward_cell`: ``log_prior (*batch, K)``, the predictive log belief
    ``log p(z_t | y_<t)`` of the next step; ``log_filtered (*batch, K)``, ``log p(z_t | y_<=t)`` of the
    last step; ``log_likelihood (*batch)``, ``log p(y_<=t)`` so far."""

    log_prior: jax.Array
    log_filtered: jax.Array
    log_likelihood: jax.Array


def forward_cell(num_states: int) -> Cell:
    """The forward filter as a :class:`~jaxrnn.Cell`: input ``x_t = log_obs[t] (*batch, K)``, output the
    filtered probabilities ``p(z_t | y_0..y_t) (*batch, K)``.

    Params ``{"log_pi": (K,), "log_A": (K, K)}``, normalised inside the step (``log_softmax`` of the
    prior and of each row), so any real values are a valid model and ``jax.grad`` can learn them. The
    step, in plain Python::

        alpha = carry.log_prior + x                          # x = log p(y_t | z_t)
        log_filtered, log_c = alpha - logsumexp(alpha), logsumexp(alpha)
        prior = logsumexp(log_filtered[:, None] + log_A, axis=0)
        return HMMCarry(prior, log_filtered, carry.log_likelihood + log_c)

    ``jr.unroll(forward_cell(K), params, log_obs, lengths=...)`` equals :func:`forward` (the final
    carry's ``log_likelihood``, the outputs its filtered probabilities; zero on padding).
    """
    K = check.positive_int(num_states, "forward_cell: num_states")
    return Cell(forward_cell, _build_forward_cell, {"num_states": K})


def _build_forward_cell(num_states: int) -> CellFns:
    K = num_states

    def init(key, input_size, dtype=jnp.float32):
        n, dtype = check.init_args("forward_cell", input_size, dtype)
        if n != K:
            raise ValueError(
                f"forward_cell.init: input_size must equal num_states={K} (the inputs are "
                f"log p(y_t | z_t = k)); got {n}"
            )
        k1, k2 = jax.random.split(key)
        return {
            "log_pi": 0.01 * jax.random.normal(k1, (K,), dtype),
            "log_A": 0.01 * jax.random.normal(k2, (K, K), dtype),
        }

    def initial_carry(params, batch_shape=()):
        log_pi = jax.nn.log_softmax(params["log_pi"])
        shape = (*tuple(batch_shape), K)
        return HMMCarry(
            jnp.broadcast_to(log_pi, shape),
            jnp.broadcast_to(log_pi, shape),
            jnp.zeros(tuple(batch_shape), log_pi.dtype),
        )

    def recur(params, carry, x):
        log_A = jax.nn.log_softmax(params["log_A"], axis=-1)
        log_filtered, log_c = _log_normalise(carry.log_prior + x)
        prior = jax.nn.logsumexp(log_filtered[..., :, None] + log_A, axis=-2)
        return HMMCarry(prior, log_filtered, carry.log_likelihood + log_c)

    return CellFns(
        init,
        initial_carry,
        lambda params, x: x,
        recur,
        lambda carry: jnp.exp(carry.log_filtered),
        input_size=lambda params: params["log_pi"].shape[0],
    )
