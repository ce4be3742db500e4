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
# # 07 -- RNNs as belief states: delay taps, the Kalman filter, the HMM forward algorithm, and an RNN
#
# This notebook follows the opening argument of the "Recurrent Neural Networks" lecture of the Cognitive
# Robotics course, Politecnico di Milano (Ciccone). It builds up to RNNs in three steps:
#
# 1. **Memoryless models for sequences.** An *autoregressive model with delay taps* predicts the next
#    input from a fixed number of previous inputs; a *feed-forward net on delay taps* (NARX) makes that
#    prediction nonlinear. Their memory is the window, nothing more.
# 2. **Models with a hidden state.** A *linear dynamical system* (real-valued hidden state, linear
#    dynamics, Gaussian noise) and a *hidden Markov model* (a discrete hidden state). In both the
#    distribution over the hidden state given the data -- the *belief* -- can be computed exactly, and
#    is a **deterministic function of the data**: the Kalman filter for the LDS, the forward algorithm
#    for the HMM (and Viterbi for the single most probable path).
# 3. **RNNs.** A deterministic hidden state, updated from the last one and the input. The lecture's
#    point: the belief of steps 2 is such a state. So an RNN trained only to *predict* should learn
#    something equivalent to the belief -- and the exact filters tell us how close it gets.
#
# In jaxrnn each of these is a recurrence, so each is a `Cell` that `jr.unroll` runs: `jr.delay_taps`,
# `jr.narx`, `jr.lds.kalman_cell`, `jr.hmm.forward_cell`, and the RNNs `jr.gru`, `jr.lstm`.

# %%
import math
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxrnn as jr
from jaxrnn import hmm, lds

SMOKE = os.environ.get("JAXRNN_NOTEBOOK_SMOKE") == "1"

T = 40 if SMOKE else 100  # steps per sequence
H = 8 if SMOKE else 32  # GRU units
STEPS = 20 if SMOKE else 1500  # Adam updates per model
BATCH = 16 if SMOKE else 64
TEST = 64 if SMOKE else 512  # held-out sequences
print(f"SMOKE={SMOKE}: T={T}, GRU H={H}, {STEPS} Adam updates of batch {BATCH}, {TEST} test sequences")

# %% [markdown]
# ## 1. A linear dynamical system and its Kalman filter
#
# A damped 2-d rotation observed through one noisy coordinate:
#
# $$x_0 \sim \mathcal N(\mu_0, P_0), \qquad x_{t+1} = A x_t + w_t,\ w_t \sim \mathcal N(0, Q), \qquad
# y_t = C x_t + v_t,\ v_t \sim \mathcal N(0, R).$$
#
# `lds.sample` draws states and observations; `lds.kalman_filter` returns the filtered belief
# $p(x_t \mid y_{0..t}) = \mathcal N(m_t, P_t)$ and the log-likelihood $\log p(y_{0..T-1})$;
# `lds.rts_smoother` the smoothed belief $p(x_t \mid y_{0..T-1})$, which also uses the future.

# %%
theta = 2 * math.pi / 12  # a 12-step cycle
rot = jnp.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
model = {
    "A": 0.97 * rot,
    "C": jnp.array([[1.0, 0.0]]),
    "Q": 0.05 * jnp.eye(2),
    "R": jnp.array([[0.5]]),
    "mu0": jnp.zeros(2),
    "P0": jnp.eye(2),
}
xs_true, ys = lds.sample(model, jax.random.PRNGKey(0), T, (TEST,))  # (T, TEST, 2), (T, TEST, 1)
ll, m_filt, P_filt = lds.kalman_filter(model, ys)
_, m_smooth, P_smooth = lds.rts_smoother(model, ys)

fig, ax = plt.subplots(figsize=(9, 3.2))
t = np.arange(T)
ax.plot(t, xs_true[:, 0, 0], "k", lw=1.5, label="true state $x_t[0]$")
ax.plot(t, ys[:, 0, 0], ".", color="gray", ms=4, label="observation $y_t$")
for m, P, name, color in ((m_filt, P_filt, "filtered", "C0"), (m_smooth, P_smooth, "smoothed", "C1")):
    sd = np.sqrt(P[:, 0, 0, 0])
    ax.plot(t, m[:, 0, 0], color=color, label=f"{name} mean")
    ax.fill_between(t, m[:, 0, 0] - 2 * sd, m[:, 0, 0] + 2 * sd, color=color, alpha=0.2)
ax.set_xlabel("t")
ax.set_title("The belief about the hidden state: mean +- 2 sd")
ax.legend(fontsize=8, ncol=4)
plt.show()
print(f"log p(y) of the first sequence: {float(ll[0]):.2f}")

# %% [markdown]
# The filter is a recurrence on the belief $(m_t, P_t)$, so it is a Cell: `jr.unroll` runs it with
# `lengths` and `resets` like any RNN. The associative-scan form (Saerkkae and Garcia-Fernandez,
# "Temporal parallelization of Bayesian smoothers", 2021) computes the same in $O(\log T)$ depth.

# %%
final, means = jr.unroll(lds.kalman_cell(2), model, ys)
_, m_par, _ = lds.kalman_filter(model, ys, parallel=True)
print("unroll(kalman_cell) == kalman_filter:", bool(jnp.allclose(means, m_filt, atol=1e-5)))
print("parallel == sequential:             ", bool(jnp.allclose(m_par, m_filt, atol=1e-4)))
print("final carry's log-likelihood == ll: ", bool(jnp.allclose(final.log_likelihood, ll, rtol=1e-5)))

# %% [markdown]
# The log-likelihood is differentiable, so the noise levels can be *learned* by maximum likelihood:
# Adam on $-\log p(y)$, with the variances parametrised by their logarithms so they stay positive.

# %%


def with_noise(log_q, log_r):
    return model | {"Q": jnp.exp(log_q) * jnp.eye(2), "R": jnp.exp(log_r) * jnp.eye(1)}


@jax.jit
def fit_noise(ys):
    opt = optax.adam(0.05)
    theta0 = jnp.zeros(2)

    def step(carry, _):
        th, state = carry
        loss, g = jax.value_and_grad(lambda th: -jnp.mean(lds.kalman_filter(with_noise(*th), ys)[0]))(th)
        updates, state = opt.update(g, state)
        return (optax.apply_updates(th, updates), state), loss

    (th, _), losses = jax.lax.scan(step, (theta0, opt.init(theta0)), None, length=40 if SMOKE else 300)
    return jnp.exp(th), losses


(q_hat, r_hat), nll = fit_noise(ys)
print(f"learned Q = {float(q_hat):.3f} I (true 0.05), R = {float(r_hat):.3f} (true 0.5)")
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(nll)
ax.set_xlabel("Adam update")
ax.set_ylabel("-log p(y) per sequence")
ax.set_title("Maximum likelihood by jax.grad")
plt.show()

# %% [markdown]
# ## 2. Predicting the next observation: delay taps, an RNN, and the optimum
#
# The task of every model below: predict $y_{t+1}$ from $y_{0..t}$. The Kalman filter gives the
# optimal prediction, $\hat y_{t+1} = C A m_t$ (the data were made by this very model), so its mean
# squared error is the floor no model can beat on average.
#
# * **AR(p)** with delay taps, `jr.delay_taps(p)`, fitted in closed form by least squares
#   (`jr.cells.fit_delay_taps`): its memory is the last $p$ observations.
# * **A GRU** trained by Adam with a linear readout: its memory is whatever its hidden state learns to
#   keep.


# %%
def next_step_mse(pred, ys):
    """Mean squared error of predictions pred[t] of ys[t + 1]."""
    return float(jnp.mean((pred[:-1] - ys[1:]) ** 2))


kalman_pred = m_filt @ (model["C"] @ model["A"]).T  # C A m_t
mse_kalman = next_step_mse(kalman_pred, ys)
mse_naive = next_step_mse(ys, ys)  # y_{t+1} = y_t

_, ys_train = lds.sample(model, jax.random.PRNGKey(1), T, (BATCH * 8,))
ar = {}
for p in (2, 8) if SMOKE else (1, 2, 4, 8):
    params = jr.cells.fit_delay_taps(ys_train[:-1], ys_train[1:], p)
    _, pred = jr.unroll(jr.delay_taps(p), params, ys)
    ar[p] = next_step_mse(pred, ys)
print(f"naive y_(t+1) = y_t: {mse_naive:.4f}")
for p, v in ar.items():
    print(f"AR({p}) delay taps:  {v:.4f}")
print(f"Kalman (optimal):    {mse_kalman:.4f}")

# %%
gru = jr.gru(H)


def init_rnn(key):
    k1, k2 = jax.random.split(key)
    return {"rnn": gru.init(k1, 1), "W": jax.random.normal(k2, (H, 1)) / math.sqrt(H), "b": jnp.zeros(1)}


def predict(params, ys):
    _, hs = jr.unroll(gru, params["rnn"], ys)
    return hs @ params["W"] + params["b"], hs


def loss_fn(params, ys):
    pred, _ = predict(params, ys)
    return jnp.mean((pred[:-1] - ys[1:]) ** 2)


@jax.jit
def train_gru(key):
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    k_init, k_data = jax.random.split(key)
    params = init_rnn(k_init)

    def step(carry, k):
        p, state = carry
        _, batch = lds.sample(model, k, T, (BATCH,))
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        updates, state = opt.update(g, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_data, STEPS))
    return params, losses


gru_params, gru_losses = train_gru(jax.random.PRNGKey(2))
gru_pred, hs = predict(gru_params, ys)
mse_gru = next_step_mse(gru_pred, ys)
print(f"GRU (H={H}, {STEPS} updates): {mse_gru:.4f}   Kalman optimum: {mse_kalman:.4f}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(np.arange(1, STEPS + 1), gru_losses, lw=1, label="GRU training MSE (one batch)")
ax.axhline(mse_kalman, color="k", ls="--", label=f"Kalman optimum {mse_kalman:.3f}")
ax.axhline(ar[2], color="C2", ls=":", label=f"AR(2) {ar[2]:.3f}")
ax.axhline(mse_naive, color="gray", ls=":", label=f"naive {mse_naive:.3f}")
ax.set_xlabel("Adam update")
ax.set_ylabel("one-step MSE")
ax.set_ylim(0, 1.2 * mse_naive)
ax.legend(fontsize=8)
ax.set_title("An RNN trained to predict closes in on the optimal filter")
plt.show()

# %% [markdown]
# **Is the GRU's hidden state a belief?** If it is, the Kalman filter's mean $m_t$ -- which the GRU
# never saw -- should be readable from $h_t$ by a *linear* map. Fit that map by least squares on half
# of the held-out sequences and measure $R^2$ on the other half.

# %%
half = TEST // 2
feats = np.concatenate([np.asarray(hs), np.ones((*hs.shape[:2], 1))], axis=-1)[5:]  # drop the start-up
target = np.asarray(m_filt)[5:]
w, *_ = np.linalg.lstsq(feats[:, :half].reshape(-1, H + 1), target[:, :half].reshape(-1, 2), rcond=None)
resid = target[:, half:] - feats[:, half:] @ w
r2 = 1 - resid.var(axis=(0, 1)) / target[:, half:].var(axis=(0, 1))
print(f"R^2 of the Kalman mean from the GRU state (held out): {np.round(r2, 3)}")

fig, ax = plt.subplots(figsize=(9, 3))
decoded = feats[:, half] @ w
ax.plot(np.arange(5, T), target[:, half, 0], "k", label="Kalman filtered mean $m_t[0]$")
ax.plot(np.arange(5, T), decoded[:, 0], "C3--", label="linear read-out of the GRU state $h_t$")
ax.set_xlabel("t")
ax.legend(fontsize=8)
ax.set_title("The GRU's hidden state carries the belief")
plt.show()

# %% [markdown]
# ## 3. A hidden Markov model: the occasionally dishonest casino
#
# The example of Durbin, Eddy, Krogh and Mitchison, "Biological Sequence Analysis" (1998): a casino
# mostly rolls a fair die, but sometimes switches to a loaded one that shows a six half of the time
# (fair -> loaded with probability 0.05, loaded -> fair 0.1). The hidden state is which die is in use.
# `hmm.forward` gives the filtered posterior $p(z_t \mid y_{0..t})$, `hmm.smoother` the smoothed one,
# `hmm.viterbi` the most probable path -- all in log space.

# %%
log_pi = jnp.log(jnp.array([2 / 3, 1 / 3]))
log_A = jnp.log(jnp.array([[0.95, 0.05], [0.10, 0.90]]))
emission = jnp.array([[1 / 6] * 6, [0.1] * 5 + [0.5]])  # fair, loaded
T_HMM = 60 if SMOKE else 300


def sample_casino(key, n):
    kz, ky = jax.random.split(key)
    z = hmm.sample(log_pi, log_A, kz, T_HMM, (n,))  # (T, n)
    rolls = jax.random.categorical(ky, jnp.log(emission)[z])  # (T, n), values 0..5
    return z, rolls


z, rolls = sample_casino(jax.random.PRNGKey(3), TEST)
log_obs = jnp.log(emission).T[rolls]  # (T, n, 2): log p(y_t | z_t = k)
_, filtered = hmm.forward(log_pi, log_A, log_obs)
_, smoothed = hmm.smoother(log_pi, log_A, log_obs)
path, _ = hmm.viterbi(log_pi, log_A, log_obs)

# %% [markdown]
# An RNN tagger: a GRU reads the one-hot rolls and a softmax read-out predicts the die, trained with
# the true die as the label. A unidirectional RNN sees only $y_{0..t}$, so its best possible posterior
# is the *filtered* one, and the forward algorithm's log-loss is its floor.

# %%
tagger = jr.gru(H)


def init_tagger(key):
    k1, k2 = jax.random.split(key)
    return {"rnn": tagger.init(k1, 6), "W": jax.random.normal(k2, (H, 2)) / math.sqrt(H), "b": jnp.zeros(2)}


def tag_logits(params, rolls):
    _, hs = jr.unroll(tagger, params["rnn"], jax.nn.one_hot(rolls, 6))
    return hs @ params["W"] + params["b"]


def tag_loss(params, z, rolls):
    logp = jax.nn.log_softmax(tag_logits(params, rolls))
    return -jnp.mean(jnp.take_along_axis(logp, z[..., None], axis=-1))


@jax.jit
def train_tagger(key):
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    k_init, k_data = jax.random.split(key)
    params = init_tagger(k_init)

    def step(carry, k):
        p, state = carry
        loss, g = jax.value_and_grad(tag_loss)(p, *sample_casino(k, BATCH))
        updates, state = opt.update(g, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_data, STEPS))
    return params, losses


tag_params, tag_losses = train_tagger(jax.random.PRNGKey(4))
rnn_post = jax.nn.softmax(tag_logits(tag_params, rolls))


def log_loss(post):
    return float(-jnp.mean(jnp.log(jnp.take_along_axis(post, z[..., None], axis=-1) + 1e-12)))


def accuracy(pred):
    return float(jnp.mean(pred == z))


rows = [
    ("GRU tagger", log_loss(rnn_post), accuracy(jnp.argmax(rnn_post, -1))),
    ("forward (filtered, optimal causal)", log_loss(filtered), accuracy(jnp.argmax(filtered, -1))),
    ("forward-backward (smoothed)", log_loss(smoothed), accuracy(jnp.argmax(smoothed, -1))),
    ("Viterbi path", float("nan"), accuracy(path)),
]
print(f"{'method':36s} {'log-loss':>9s} {'accuracy':>9s}")
for name, loss, acc in rows:
    print(f"{name:36s} {loss:9.4f} {acc:9.3f}")

fig, ax = plt.subplots(figsize=(9, 3))
t = np.arange(T_HMM)
ax.fill_between(t, 0, z[:, 0], step="mid", color="gray", alpha=0.3, label="loaded die in use")
ax.plot(t, filtered[:, 0, 1], "C0", label="forward: p(loaded | rolls so far)")
ax.plot(t, rnn_post[:, 0, 1], "C3--", label="GRU tagger")
ax.plot(t, smoothed[:, 0, 1], "C1", lw=0.8, label="smoother (uses the future)")
ax.set_xlabel("roll")
ax.set_ylim(-0.05, 1.05)
ax.legend(fontsize=8, ncol=2)
ax.set_title("The GRU's posterior follows the forward algorithm's")
plt.show()

# %% [markdown]
# ## What to take away
#
# * A filter is a recurrence on a belief; written as a Cell, the Kalman filter and the HMM forward
#   algorithm run through the same `jr.unroll` as any RNN.
# * Delay taps remember a fixed window. On data made by a hidden-state model their error stays above
#   the optimum however many taps they get, since the belief summarises the *whole* past.
# * A GRU trained only to predict (or to tag) approaches the optimal filter's error, and the belief can
#   be read linearly from its hidden state: the RNN's deterministic state is doing the work of the
#   belief, as the lecture says.
# * `python -m experiments.filtering` runs the same comparison at scale (LSTM and GRU, learning curves
#   against the optimum), and `python -m experiments.forecast` compares AR, NARX, an LSTM and a Kalman
#   model on real series.
