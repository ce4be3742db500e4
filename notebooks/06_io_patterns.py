# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 -- Input/output patterns: one-to-many, many-to-one, many-to-many, synced, bidirectional, char-RNN
#
# This notebook follows the "Sequential data" slide of the "Recurrent Neural Networks" lecture of the
# Cognitive Robotics course, Politecnico di Milano (one to one, one to many, many to one, many to many,
# synced many to many; bidirectional RNNs) and the "Common use-cases of RNN" and "Bidirectional RNN"
# slides of Victor Kitov's "Recurrent neural nets" lecture (acceptor, encoder, transducer with loss
# $\mathcal L(\hat y_{1:n}, y_{1:n}) = \sum_{i=1}^n L(\hat y_i, y_i)$, and
# $\text{biRNN}(x_{1:n}, i) = [\text{RNN}^f(x_{1:i}); \text{RNN}^b(x_{n:i})]$). The character model and its
# temperature sampling are the RNN language model of Machine Learning Lecture 17 "Recurrent Neural
# Networks", RWTH Aachen.
#
# One recurrence $s_t = R(s_{t-1}, x_t)$, $\hat y_t = O(s_t)$ serves every pattern; what changes is
# where the inputs enter and which outputs the loss reads:
#
# | pattern (Kitov's name) | inputs | the loss reads | jaxrnn (`jr.`) |
# |---|---|---|---|
# | one to many | one vector, as $s_0$ | every $\hat y_t$ | `unroll(..., carry=s0)`, `losses.transducer` |
# | many to one (acceptor) | $x_{1:n}$ | $\hat y_n$ only | `losses.acceptor` |
# | many to many (encoder + decoder) | $x_{1:n}$, then $y_{<t}$ | decoder $\hat y_t$ | `losses.seq2seq` |
# | synced many to many (transducer) | $x_{1:n}$ | every $\hat y_t$ | `losses.transducer` |
# | synced, needing the future | $x_{1:n}$, read both ways | every $\hat y_t$ | `bidirectional`, `layer` |
# | language model | characters | the next character, every step | `lstm`, sampling |
#
# Each section trains a small model on a synthetic task made for its pattern (written here with
# `jax.random`), plots its loss curve and prints inputs and outputs of the trained model. Every model is
# trained by one jitted `lax.scan` over Adam updates that also returns the model's outputs on a fixed
# test batch, so each model costs one compilation.

# %%
import math
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxrnn as jr

SMOKE = os.environ.get("JAXRNN_NOTEBOOK_SMOKE") == "1"

H = 16 if SMOKE else 64  # hidden units of the small GRUs
BATCH = 16 if SMOKE else 64  # sequences per update
STEPS = 30 if SMOKE else 1500  # Adam updates per model (synthetic tasks)
SEQ2SEQ_STEPS = 30 if SMOKE else 3000  # the encoder-decoder needs more
CHAR_H = 32 if SMOKE else 128  # LSTM units of the character model
CHAR_STEPS = 30 if SMOKE else 1000  # its updates
CHAR_LEN = 16 if SMOKE else 48  # characters per training window
SAMPLE_LEN = 60 if SMOKE else 400  # characters sampled per temperature
TEST = 256  # test sequences per task
LR = 3e-3
print(
    f"SMOKE={SMOKE}: GRU H={H}, batch {BATCH}, {STEPS} updates ({SEQ2SEQ_STEPS} for seq2seq); "
    f"char LSTM H={CHAR_H}, {CHAR_STEPS} updates of {CHAR_LEN}-character windows"
)


def fit(init_fn, loss_fn, sample_fn, steps, show_fn, variants=None, lr=LR, seed=0):
    """Train a model with Adam (gradients clipped at norm 1), everything in one jitted call.

    init_fn(key) -> params; sample_fn(key, n) -> a batch of n sequences; loss_fn(params, batch) -> scalar;
    show_fn(params, test_batch) -> whatever we want to print or plot. Initialisation, a test batch of TEST
    sequences, `steps` updates (one lax.scan, a fresh batch each) and show_fn all run in one compiled
    program (one compilation per model). Returns (params, losses of every update, test batch, shown).

    With `variants` (an array), loss_fn and show_fn take a third argument, the variant, and one model per
    variant is trained side by side (jax.vmap), all from the same initial weights on the same batches;
    every output then has a leading axis over the variants (the test batch is shared).
    """
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))

    def run(key, *variant):
        k_init, k_test, k_train = jax.random.split(key, 3)
        params = init_fn(k_init)

        def update(carry, k):
            p, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, sample_fn(k, BATCH), *variant)
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), loss

        (params, _), losses = jax.lax.scan(
            update, (params, opt.init(params)), jax.random.split(k_train, steps)
        )
        test = sample_fn(k_test, TEST)
        return params, losses, test, show_fn(params, test, *variant)

    key = jax.random.PRNGKey(seed)
    if variants is None:
        out = jax.jit(run)(key)
    else:
        out = jax.jit(jax.vmap(run, in_axes=(None, 0), out_axes=(0, 0, None, 0)))(key, jnp.asarray(variants))
    params, losses, test, shown = jax.device_get(out)
    return params, np.asarray(losses), test, shown


def dense(key, n_in, n_out):
    """A linear readout {"W": (n_in, n_out), "b": (n_out,)}, LeCun-normal."""
    return {"W": jax.random.normal(key, (n_in, n_out)) / math.sqrt(n_in), "b": jnp.zeros((n_out,))}


def plot_loss(ax, losses, title, ylabel, baseline=None, baseline_label=None):
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1, label="training loss (one batch)")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls=":", label=baseline_label)
    ax.set_xlabel("Adam update")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


# %% [markdown]
# ## 1. One to many: a decoder that generates a sequence from one vector
#
# The vector $v = (a, \omega)$ (an amplitude and an angular frequency) is the only input. A bridge maps
# it to the initial state, $s_0 = \tanh(v W_s + b_s)$; the GRU then runs $T$ steps on zero inputs and a
# linear readout gives $\hat y_t$. Target: $y_t = a \sin(\omega t)$, $t = 1..T$. Loss: the transducer loss
# (squared error at every step), so the whole sequence is generated from $v$ alone -- like an image
# caption generated from one image vector.

# %%
T_GEN = 30
gen = jr.gru(H)


def wave_batch(key, n):
    k_a, k_w = jax.random.split(key)
    a = jax.random.uniform(k_a, (n,), minval=0.5, maxval=1.0)
    w = jax.random.uniform(k_w, (n,), minval=0.15, maxval=0.6)
    t = jnp.arange(1, T_GEN + 1)[:, None]
    return jnp.stack([a, w], axis=1), (a * jnp.sin(w * t))[..., None]  # v (n, 2), y (T, n, 1)


def generate(params, v):
    s0 = jnp.tanh(v @ params["bridge"]["W"] + params["bridge"]["b"])  # one vector -> initial state
    _, hs = jr.unroll(gen, params["gru"], jnp.zeros((T_GEN, v.shape[0], 1)), carry=s0)
    return hs @ params["out"]["W"] + params["out"]["b"]  # (T, n, 1)


def gen_loss(params, batch):
    v, y = batch
    return jr.losses.transducer(optax.squared_error, generate(params, v), y)


def gen_init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"bridge": dense(k1, 2, H), "gru": gen.init(k2, 1), "out": dense(k3, H, 1)}


gen_params, gen_losses, gen_test, gen_pred = fit(
    gen_init, gen_loss, wave_batch, STEPS, lambda p, b: generate(p, b[0])
)
gen_mse = float(np.mean((gen_pred - np.asarray(gen_test[1])) ** 2))
zero_mse = float(np.mean(np.asarray(gen_test[1]) ** 2))
print(f"test MSE {gen_mse:.4f} (predicting 0 everywhere: {zero_mse:.4f})")
v0 = np.asarray(gen_test[0][0])
print(f"input v = (a={v0[0]:.2f}, omega={v0[1]:.2f})")
print("target   :", np.round(np.asarray(gen_test[1])[:8, 0, 0], 2))
print("generated:", np.round(gen_pred[:8, 0, 0], 2))
assert np.all(np.isfinite(gen_losses)) and gen_losses[-1] < gen_losses[0]

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
plot_loss(
    axes[0], gen_losses, "One to many: loss", "mean squared error per step (log scale)", zero_mse, "predict 0"
)
axes[0].set_yscale("log")
t = np.arange(1, T_GEN + 1)
for i, c in zip(range(3), ("tab:blue", "tab:orange", "tab:green")):
    v = np.asarray(gen_test[0][i])
    axes[1].plot(t, np.asarray(gen_test[1])[:, i, 0], ":", color=c)
    axes[1].plot(t, gen_pred[:, i, 0], "-", color=c, label=f"a={v[0]:.2f}, omega={v[1]:.2f}")
axes[1].set_xlabel("time step t")
axes[1].set_ylabel("output y_t (dotted: target)")
axes[1].set_title("Sequences generated from one vector (test)")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Many to one (acceptor) and synced many to many (transducer) on the same data
#
# Bit strings of random length $n \in [1, T]$, padded to $T$; `lengths` tells the unroll where each
# ends. The **acceptor** reads the whole string and answers once, at its last valid step: is the number
# of ones odd? (`jr.losses.acceptor` picks $\hat y_n$ per sequence.) The **transducer** answers at every
# step: the running parity $y_t = x_1 \oplus \dots \oplus x_t$ (`jr.losses.transducer`, masked by
# `lengths`). Its last tag is the acceptor's answer, so we can score both models on the same question.
# Same GRU, same initial weights, same batches, same number of updates; only the loss differs -- Kitov's
# acceptor and transducer, trained side by side in one compiled program (`vmap` over the
# pattern). A tag at every step gives the transducer an error signal at every step, about a one-step
# rule ($y_t = y_{t-1} \oplus x_t$); the acceptor has to find out from one bit per string that the answer
# depends on *every* input. Look for how long each loss stays at chance level ($\ln 2$) before it drops
# (the printout gives the first update below $\frac12 \ln 2$).

# %%
T_PAR = 10 if SMOKE else 30
tagger = jr.gru(H)


def parity_batch(key, n):
    k_b, k_l = jax.random.split(key)
    bits = jax.random.bernoulli(k_b, 0.5, (T_PAR, n)).astype(jnp.int32)
    lengths = jax.random.randint(k_l, (n,), 1, T_PAR + 1)
    bits = jnp.where(jnp.arange(T_PAR)[:, None] < lengths, bits, 0)  # zero padding
    running = jnp.cumsum(bits, axis=0) % 2  # (T, n) running parity
    return jax.nn.one_hot(bits, 2), running, lengths


def whole_parity(running, lengths):
    """The parity of each whole string: the running parity at its last valid step."""
    return jnp.take_along_axis(running, (lengths - 1)[None], axis=0)[0]


def parity_logits(params, xs, lengths):
    _, ys = jr.layer(tagger).apply(params["gru"], xs, lengths=lengths)  # = jr.unroll(tagger, ...)
    return ys @ params["out"]["W"] + params["out"]["b"]  # (T, n, 2)


PATTERNS = ("acceptor", "transducer")


def parity_loss(params, batch, pattern):
    """pattern 0: acceptor (one loss per string, at its last valid step); 1: transducer (every step)."""
    xs, running, lengths = batch
    logits = parity_logits(params, xs, lengths)  # (T, n, 2)
    ce = optax.softmax_cross_entropy_with_integer_labels
    acceptor = jr.losses.acceptor(ce, logits, whole_parity(running, lengths), lengths)
    transducer = jr.losses.transducer(ce, logits, running, lengths)
    return jnp.where(pattern == 0, acceptor, transducer)


def final_answer(params, batch, pattern):
    """Both models are asked the acceptor's question: the prediction at each string's last step."""
    xs, running, lengths = batch
    logits_n = jr.losses.last_valid(parity_logits(params, xs, lengths), lengths)
    return jnp.argmax(logits_n, axis=-1), whole_parity(running, lengths)


def parity_init(key):
    k1, k2 = jax.random.split(key)
    return {"gru": tagger.init(k1, 2), "out": dense(k2, H, 2)}


# Both models in one compiled program (vmap over the pattern): same initial weights, same batches
_, par_losses, par_test, (par_answer, par_truth) = fit(
    parity_init, parity_loss, parity_batch, STEPS, final_answer, variants=[0, 1]
)
par_truth = par_truth[0]
results = {}
for m, name in enumerate(PATTERNS):
    accuracy = float(np.mean(par_answer[m] == par_truth))
    below = np.flatnonzero(par_losses[m] < 0.5 * math.log(2))  # updates where the loss is under half of ln 2
    first = int(below[0]) + 1 if len(below) else None
    results[name] = (par_losses[m], par_answer[m], accuracy, first)
    print(
        f"{name:10s}: loss first below (ln 2)/2 after {first} updates; accuracy on the parity of whole "
        f"test strings {accuracy:.3f} (chance 0.5)"
    )
assert np.all(np.isfinite(par_losses))
if not SMOKE:  # what the text says about the full run
    assert results["transducer"][3] is not None and results["acceptor"][3] is not None
    assert results["transducer"][3] < results["acceptor"][3]

xs_np, len_np = np.asarray(par_test[0]).argmax(-1), np.asarray(par_test[2])
for i in range(3):
    bits = "".join(map(str, xs_np[: len_np[i], i]))
    print(
        f"input {bits:>{T_PAR}s}  parity {par_truth[i]}  acceptor says {results['acceptor'][1][i]}  "
        f"transducer's last tag {results['transducer'][1][i]}"
    )

fig, ax = plt.subplots(figsize=(7, 3.8))
for name, (losses, _, accuracy, _) in results.items():
    ax.semilogy(
        np.arange(1, len(losses) + 1), losses, lw=1, label=f"{name} (final test accuracy {accuracy:.2f})"
    )
ax.axhline(math.log(2), color="gray", ls=":", label="chance, ln 2")
ax.set_xlabel("Adam update")
ax.set_ylabel("cross-entropy (nats, log scale)")
ax.set_title(f"Parity of bit strings of length 1..{T_PAR}: acceptor vs transducer")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Many to many: encoder-decoder (reverse a sequence), greedy and beam-search decoding
#
# Input and output are both sequences, of (here) the same length but not aligned step by step: the
# first output is the last input. The **encoder** GRU reads the source and hands its final state $s_n$
# to the **decoder** GRU as $s_0$ ("decode starting from $s_0 = \hat y_n$", Kitov). In training the
# decoder reads the previous *target* token (teacher forcing: `BOS`, $y_1, \dots, y_{n-1}$) and is trained
# with the cross-entropy of every next token: `jr.losses.seq2seq` (Sutskever, Vinyals & Le, "Sequence
# to sequence learning with neural networks", 2014). At test time the decoder must feed back its *own*
# choices, and there are two ways to choose (`jaxrnn.decoding`, each one compiled `lax.scan`, `vmap`-ed
# over the test batch):
#
# * **greedy**: the most probable token at each step;
# * **beam search**: keep the `BEAM` most probable prefixes at each step and return the most probable
#   whole sequence found, $\arg\max_y \sum_t \log p(y_t \mid y_{<t}, x)$ over the beam -- it can undo
#   an early choice that greedy is stuck with.
#
# With sequences of 12 digits the GRU does not quite solve the task in 3000 updates, which is where the
# two differ: in the full setting (2-core CPU development machine) greedy decoding got 77.3% of the 256
# test sequences entirely right and beam search 82.8% (93.9% and 96.0% of the tokens).

# %%
V_SRC, T_SRC, BEAM = 8, 12, 4  # digits 0..7, length 12, beam width
BOS = V_SRC  # the start token: the decoder's vocabulary is the 8 digits and BOS (never a target)
EMBED = 8  # size of the decoder's token embedding
enc, dec = jr.gru(H), jr.gru(H)


def reverse_batch(key, n):
    src = jax.random.randint(key, (T_SRC, n), 0, V_SRC)
    return src, src[::-1]


def seq2seq_loss(params, batch):
    src, tgt = batch
    ys_in = jnp.concatenate([jnp.full((1, src.shape[1]), BOS), tgt[:-1]], axis=0)  # teacher forcing
    return jr.losses.seq2seq(enc, dec, params, jax.nn.one_hot(src, V_SRC), ys_in, tgt)


def decode(params, batch):
    """Greedy and beam-search outputs, each (T, n), and the beams of the first example."""
    src, _ = batch
    _, s_n = jr.losses.encode(enc, params["encoder"], jax.nn.one_hot(src, V_SRC))

    def step(s, token):  # the decoder as decoding wants it: (carry, token) -> (carry, logits)
        s = dec.step(params["decoder"], s, params["embed"][token])
        return s, dec.output(s) @ params["W"] + params["b"]

    greedy = jax.vmap(lambda s: jr.decoding.greedy(step, s, BOS, T_SRC)[0])(s_n)
    beams, beam_logp = jax.vmap(lambda s: jr.decoding.beam_search(step, s, BOS, T_SRC, BEAM))(s_n)
    return greedy.T, beams[:, 0].T, (beams[0], beam_logp[0])


def s2s_init(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    out = dense(k4, H, V_SRC + 1)
    return {
        "encoder": enc.init(k1, V_SRC),
        "decoder": dec.init(k2, EMBED),
        "embed": jax.random.normal(k3, (V_SRC + 1, EMBED)) / math.sqrt(EMBED),
        "W": out["W"],
        "b": out["b"],
    }


s2s_params, s2s_losses, s2s_test, (greedy_out, beam_out, first_beams) = fit(
    s2s_init, seq2seq_loss, reverse_batch, SEQ2SEQ_STEPS, decode
)
tgt_np = np.asarray(s2s_test[1])
for name, out in (("greedy", greedy_out), (f"beam search (width {BEAM})", beam_out)):
    print(
        f"{name:26s} on {TEST} test sequences: {np.mean(out == tgt_np):.3f} of the tokens and "
        f"{np.mean(np.all(out == tgt_np, axis=0)):.3f} of the whole sequences right (chance per token "
        f"{1 / V_SRC:.3f})"
    )
for i in range(3):
    print(
        f"source {np.asarray(s2s_test[0])[:, i]}  target {tgt_np[:, i]}  "
        f"greedy {greedy_out[:, i]}  beam {beam_out[:, i]}"
    )
print("the beams of the first test sequence, best first (total log-probability):")
for tokens, logp in zip(*first_beams):
    print(f"  {np.asarray(tokens)}  {float(logp):8.3f}")
assert np.all(np.isfinite(s2s_losses)) and s2s_losses[-5:].mean() < s2s_losses[:5].mean()

fig, ax = plt.subplots(figsize=(6.5, 3.6))
plot_loss(
    ax,
    s2s_losses,
    f"Encoder-decoder, reverse {T_SRC} digits: loss",
    "cross-entropy per token (nats)",
    math.log(V_SRC),
    f"chance, ln {V_SRC}",
)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Synced many to many that needs the future: a bidirectional tagger
#
# Tag every token with 1 if **the same token appears again later** in the sequence, else 0. At step $t$ a
# left-to-right RNN has seen $x_{1:t}$ only, and the future tokens are independent of the past, so the
# best it can do is guess from the position: with $V$ symbols and $T$ steps, token $t$ reappears with
# probability $p_t = 1 - (1 - 1/V)^{T - t}$, and no causal tagger can beat an accuracy of
# $\frac1T \sum_t \max(p_t, 1 - p_t)$ on average. A bidirectional RNN (Kitov:
# $\hat y_i = [\text{RNN}^f(x_{1:i}); \text{RNN}^b(x_{n:i})]$, `jr.bidirectional`) also has a backward
# state that has read $x_{t:n}$ and can answer exactly. `jr.bidirectional(fw, bw)` runs `fw` left to
# right and `bw` right to left (the
# latter is `jr.layer(bw, reverse=True)`) and concatenates their outputs. We train it next to a
# left-to-right tagger made from the same layer by multiplying the backward half of its output by 0
# (so only the forward GRU reaches the readout): one compiled program `vmap`-ed over that switch, same
# initial weights, same batches, same transducer loss.

# %%
V_TAG, T_TAG = 6, 12


def later_batch(key, n):
    tokens = jax.random.randint(key, (T_TAG, n), 0, V_TAG)
    same = tokens[:, None, :] == tokens[None, :, :]  # (t, s, n): token t equals token s
    later = jnp.arange(T_TAG)[None, :] > jnp.arange(T_TAG)[:, None]  # s > t
    return jax.nn.one_hot(tokens, V_TAG), jnp.any(same & later[..., None], axis=1).astype(jnp.int32)


bi = jr.bidirectional(jr.gru(H), jr.gru(H))  # ys[t] = [forward output at t; backward output at t]
TAGGERS = ("left to right", "bidirectional")


def tag_logits(params, xs, use_backward):
    """use_backward 0: the backward half of ys is multiplied by 0, leaving a left-to-right tagger."""
    _, ys = bi.apply(params["rnn"], xs)  # (T, n, 2H)
    mask = jnp.concatenate([jnp.ones((H,)), jnp.full((H,), use_backward, jnp.float32)])
    return (ys * mask) @ params["out"]["W"] + params["out"]["b"]


def tag_loss(params, batch, use_backward):
    xs, tags = batch
    logits = tag_logits(params, xs, use_backward)
    return jr.losses.transducer(optax.softmax_cross_entropy_with_integer_labels, logits, tags)


def tag_init(key):
    k1, k2 = jax.random.split(key)
    return {"rnn": bi.init(k1, V_TAG), "out": dense(k2, 2 * H, 2)}


p_t = 1 - (1 - 1 / V_TAG) ** (T_TAG - 1 - np.arange(T_TAG))  # P(token t appears later), t = 0..T-1
causal_bound = np.maximum(p_t, 1 - p_t)
causal_ce = -np.mean(p_t * np.log(np.maximum(p_t, 1e-12)) + (1 - p_t) * np.log(np.maximum(1 - p_t, 1e-12)))
print(f"best causal tagger: accuracy {causal_bound.mean():.3f}, cross-entropy {causal_ce:.3f} nats per tag")
tag_losses, tag_test, tag_pred = fit(
    tag_init,
    tag_loss,
    later_batch,
    STEPS,
    lambda p, b, u: jnp.argmax(tag_logits(p, b[0], u), -1),
    variants=[0, 1],
)[1:]
tags_np = np.asarray(tag_test[1])
tag_results = {}
for m, name in enumerate(TAGGERS):
    acc_t = np.mean(tag_pred[m] == tags_np, axis=1)  # accuracy per position
    tag_results[name] = (tag_losses[m], tag_pred[m], acc_t)
    print(
        f"{name:14s}: test accuracy {acc_t.mean():.3f} (best causal tagger {causal_bound.mean():.3f}); "
        f"training loss over the last 50 updates {tag_losses[m][-50:].mean():.3f} nats"
    )
assert np.all(np.isfinite(tag_losses))
if not SMOKE:
    assert tag_results["bidirectional"][2].mean() > causal_bound.mean() + 0.05
    assert tag_results["left to right"][2].mean() < causal_bound.mean() + 0.02

letters = "ABCDEF"
toks = np.asarray(tag_test[0]).argmax(-1)
for i in range(2):
    print("tokens        ", " ".join(letters[x] for x in toks[:, i]))
    print("true tags     ", " ".join(map(str, tags_np[:, i])))
    for name, (_, pred, _) in tag_results.items():
        print(f"{name:14s}", " ".join(map(str, pred[:, i])))

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for name, (losses, _, acc_t) in tag_results.items():
    axes[0].plot(np.arange(1, len(losses) + 1), losses, lw=1, label=name)
    axes[1].plot(np.arange(1, T_TAG + 1), acc_t, "o-", label=name)
axes[1].plot(np.arange(1, T_TAG + 1), causal_bound, "k:", label=r"best causal tagger, $\max(p_t, 1-p_t)$")
axes[0].axhline(causal_ce, color="k", ls=":", label="best causal tagger (mean entropy of $p_t$)")
axes[0].set_xlabel("Adam update")
axes[0].set_ylabel("cross-entropy per tag (nats)")
axes[0].set_title("'Appears again later?' tagger: loss")
axes[1].set_xlabel("position t in the sequence")
axes[1].set_ylabel("test accuracy at position t")
axes[1].set_title("Accuracy per position")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. A character model and sampling with temperature
#
# The transducer whose target is the next input: an LSTM reads a text one character at a time and
# predicts the next character at every step (the RWTH Aachen lecture's RNN language model). The text
# is the few paragraphs below; the last paragraph is held out to measure how well the model predicts
# text it has not seen (a corpus this small mostly teaches spelling and frequent words, and invites
# memorising). After every update we also measure the held-out loss and keep the weights where it was
# lowest (early stopping): on so little text the training loss keeps falling long after the model has
# started to memorise, and the held-out loss turns up again. From the kept weights we generate by
# feeding the model its own samples, drawn from $\operatorname{softmax}(z / \tau)$: a temperature
# $\tau < 1$ sharpens the distribution (safe, repetitive text), $\tau > 1$ flattens it (more
# surprising, more mistakes). For contrast we also sample once, at $\tau = 1$, from the last,
# over-fitted weights. All samples are one `jax.vmap` of the sampling scan, in the same compiled
# program as the training.
#
# What to look for in the full setting: the held-out curve turns up long before the training curve
# flattens; the share of real (training-text) words in the samples falls as $\tau$ rises; and the
# over-fitted weights recite whole stretches of the training text.

# %%
TEXT = """\
A recurrent network reads a sequence one element at a time and keeps a state. The state is all it
remembers of the past: at every step the new state is computed from the old state and the new input,
by the same function with the same weights. Because the weights are shared over time, the network can
read a sequence of any length, and what it learns at one position it can use at every other position.

To train the network we unroll it over the sequence and treat the unrolled graph as a very deep
feedforward network with tied weights. The error at the end is sent back through every step. On its
way back it is multiplied by one Jacobian per step, and a long product of Jacobians tends either to
shrink towards zero or to grow without bound. When it shrinks the network cannot learn that an early
input matters for a late output; when it grows a single update can throw the weights far away.

Gated cells were invented for the first problem. The long short-term memory keeps a cell state that is
changed only by addition, with gates that decide what to write, what to keep and what to show. The
gated recurrent unit does the same with one state and two gates. For the second problem there is a
simple cure: when the gradient is too long, make it shorter before taking the step.

The same network can be used in many ways. It can read a whole sentence and give one answer at the end,
or give an answer at every step, or read one sequence and then write another one. When the answer at a
step depends on what comes later, a second network can read the sequence from the end, and the two
states are put side by side.

A language model is the simplest use of all this. It reads a text character by character and at every
step predicts the next character. Trained on enough text it learns spelling, then words, then a little
grammar, and when it is asked to write it produces text that looks like the text it has read.
"""
vocab = sorted(set(TEXT))
V_CHAR = len(vocab)
split = TEXT.rindex("\n\n") + 2  # the last paragraph is held out
ids = jnp.asarray([vocab.index(c) for c in TEXT[:split]], jnp.int32)
held_out = jnp.asarray([vocab.index(c) for c in TEXT[split:]], jnp.int32)
counts = np.bincount(np.asarray(ids), minlength=V_CHAR) + 1e-9
freq = counts / counts.sum()
unigram_bits = float(
    -(np.bincount(np.asarray(held_out), minlength=V_CHAR) * np.log2(freq)).sum() / len(held_out)
)
print(
    f"{len(TEXT)} characters ({len(TEXT) - split} held out), {V_CHAR} distinct; uniform model "
    f"{math.log2(V_CHAR):.2f} bits/char, unigram model of the training part {unigram_bits:.2f} bits/char "
    f"on the held-out part"
)
char_cell = jr.lstm(CHAR_H)
TEMPERATURES = (0.5, 1.0, 1.5)
PRIME = "The "


def char_batch(key, n):
    starts = jax.random.randint(key, (n,), 0, len(ids) - CHAR_LEN - 1)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(ids, (s,), (CHAR_LEN + 1,)))(starts).T  # (L+1, n)
    return windows[:-1], windows[1:]


def char_logits(params, tokens, carry=None):
    final, hs = jr.unroll(char_cell, params["lstm"], jax.nn.one_hot(tokens, V_CHAR), carry)
    return final, hs @ params["out"]["W"] + params["out"]["b"]


def char_loss(params, batch):
    x, y = batch
    return jr.losses.transducer(optax.softmax_cross_entropy_with_integer_labels, char_logits(params, x)[1], y)


def char_init(key):
    k1, k2 = jax.random.split(key)
    return {"lstm": char_cell.init(k1, V_CHAR), "out": dense(k2, CHAR_H, V_CHAR)}


def sample_text(params, key, temperature):
    """SAMPLE_LEN characters after PRIME, each drawn from softmax(logits / temperature) and fed back."""
    carry, logits = char_logits(params, jnp.asarray([vocab.index(c) for c in PRIME]))  # read the prime
    logits = logits[-1]  # the prediction after its last character

    def step(state, k):
        carry, logits = state
        token = jax.random.categorical(k, logits / temperature)
        carry = char_cell.step(params["lstm"], carry, jax.nn.one_hot(token, V_CHAR))
        return (carry, char_cell.output(carry) @ params["out"]["W"] + params["out"]["b"]), token

    _, tokens = jax.lax.scan(step, (carry, logits), jax.random.split(key, SAMPLE_LEN))
    return tokens


def held_out_bits(params):
    """Cross-entropy in bits/char on the held-out paragraph, read as one sequence."""
    logits = char_logits(params, held_out[:-1])[1]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, held_out[1:])) / math.log(2)


def train_char(key):
    """Adam on char_loss; after every update the held-out loss, and the weights where it was lowest."""
    k_init, k_train, k_sample = jax.random.split(key, 3)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(LR))
    params = char_init(k_init)

    def update(carry, k):
        p, state, best, best_bits = carry
        loss, grads = jax.value_and_grad(char_loss)(p, char_batch(k, BATCH))
        updates, state = opt.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        bits = held_out_bits(p)
        best = jax.tree.map(lambda new, old: jnp.where(bits < best_bits, new, old), p, best)
        return (p, state, best, jnp.minimum(bits, best_bits)), (loss, bits)

    carry = (params, opt.init(params), params, held_out_bits(params))
    (last, _, best, _), (losses, held) = jax.lax.scan(update, carry, jax.random.split(k_train, CHAR_STEPS))
    # the best weights at every temperature, and the last (over-fitted) weights at temperature 1: one vmap
    n = len(TEMPERATURES)
    weights = jax.tree.map(lambda b, l: jnp.stack([b] * n + [l]), best, last)
    temps = jnp.asarray(TEMPERATURES + (1.0,))
    samples = jax.vmap(sample_text)(weights, jax.random.split(k_sample, n + 1), temps)
    return losses, held, samples


char_losses, held_bits, samples = map(np.asarray, jax.jit(train_char)(jax.random.PRNGKey(0)))
bits = char_losses / math.log(2)
i_best = int(np.argmin(held_bits))
print(
    f"training loss: {bits[:5].mean():.2f} bits/char over the first 5 updates, {bits[-5:].mean():.2f} over "
    f"the last 5"
)
print(
    f"held-out paragraph: {held_bits[0]:.2f} bits/char after the first update, best {held_bits[i_best]:.2f} "
    f"after update {i_best + 1}, {held_bits[-1]:.2f} after the last; we sample from the best weights\n"
)
assert np.all(np.isfinite(bits)) and bits[-5:].mean() < bits[:5].mean()
assert held_bits.min() < held_bits[0]

train_words = {w.strip(".,:;") for w in TEXT[:split].split()}
known = []
for k, s in enumerate(samples):
    text = PRIME + "".join(vocab[i] for i in s)
    known.append(np.mean([w.strip(".,:;") in train_words for w in text.split()]))
    which = (
        f"best weights, temperature {TEMPERATURES[k]}"
        if k < len(TEMPERATURES)
        else "LAST weights, temperature 1.0"
    )
    print(f"--- {which} ({known[-1]:.2f} of the generated words occur in the training text):\n{text}\n")
assert samples.shape == (len(TEMPERATURES) + 1, SAMPLE_LEN) and samples.min() >= 0 and samples.max() < V_CHAR

fig, ax = plt.subplots(figsize=(7, 3.8))
steps_axis = np.arange(1, len(bits) + 1)
ax.plot(steps_axis, bits, lw=1, label="training loss (one batch)")
ax.plot(steps_axis, held_bits, lw=1.5, label="held-out paragraph")
ax.plot([i_best + 1], [held_bits[i_best]], "rs", label="best held-out (the weights we sample from)")
ax.axhline(unigram_bits, color="gray", ls=":", label="unigram model, held-out paragraph")
ax.set_xlabel("Adam update")
ax.set_ylabel("cross-entropy (bits/char)")
ax.set_title(f"Character LSTM ({CHAR_H} units) trained on {split} characters")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What to take away
#
# * The recurrent cell is the same in every pattern; the **pattern** is where the inputs go in (one
#   vector as $s_0$, or one input per step) and which outputs the loss reads (the last one:
#   `jr.losses.acceptor`; every one: `jr.losses.transducer`, masked by `lengths`).
# * **One to many**: a vector can enter through the initial state alone and the recurrence unfolds it
#   into a whole sequence.
# * **Acceptor vs transducer** on the same data: supervising every step gives the network an error
#   signal at every step; on parity the transducer's loss leaves chance level after fewer updates than the
#   acceptor's, which has only one bit per string to learn from (in the full setting both get there).
# * **Encoder-decoder**: `jr.losses.encode` compresses a sequence into a state that a second RNN unrolls
#   into an output sequence of its own timing; teacher forcing in training (`jr.losses.seq2seq`), its own
#   outputs at test time, chosen greedily or by beam search (`jr.decoding`), which keeps several
#   prefixes alive and can recover from an early mistake that greedy decoding is stuck with.
# * **Bidirectional**: when a tag depends on the future, a left-to-right tagger is stuck at the accuracy of
#   a guess from the position; `jr.bidirectional` adds a right-to-left pass and can tag exactly.
# * **Character model**: a transducer on the next character; the temperature trades safe, repetitive
#   text (low $\tau$) for varied but error-prone text (high $\tau$). On a tiny corpus the training loss
#   says little: watch a held-out loss, keep the weights where it is lowest, and expect an over-trained
#   model to recite its training text.
