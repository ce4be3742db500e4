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
# # 05 -- Dynamics: the continuous-time RNN, and order to chaos in a random tanh network
#
# This notebook follows the dynamical-systems part of the "Recurrent neural networks" lecture notes
# (dynamical-systems view): an RNN is a discretised dynamical system, and whether its gradients vanish
# or explode is a question about its dynamics.
#
# **1. The continuous-time RNN.** A network of rate units obeys
# $\tau\, \dot s = -s + f(s) W + b + x U$; one Euler step of size $dt$ gives the update that
# `jr.ctrnn(H, alpha)` computes,
#
# $$s_t = (1 - \alpha)\, s_{t-1} + \alpha\,\big(f(s_{t-1}) W + b + x_t U\big), \qquad \alpha = dt/\tau .$$
#
# $\alpha = 1$ is the ordinary (Elman-type) RNN $s_t = f(s_{t-1}) W + b + x_t U$; a small $\alpha$ is a
# leaky, slow unit that follows the ODE closely. We drive one random network with the same input and
# watch $\alpha$ trade smoothness for speed.
#
# **2. Order to chaos.** For the autonomous network $h_t = \tanh(h_{t-1} W)$ with
# $W_{ij} \sim \mathcal N(0, g^2/N)$, the Lyapunov exponents $\lambda_i = \lim_T \frac1T \log
# \sigma_i(J_T \cdots J_1)$ (`jr.lyapunov_spectrum`, Benettin's QR method) measure how nearby
# trajectories -- and therefore back-propagated errors -- grow or shrink per step. For $g < 1$ the
# origin is a stable fixed point and $\lambda_1 = \log \rho(W) \approx \log g < 0$ (gradients vanish);
# past $g \approx 1$ the network becomes chaotic, $\lambda_1 > 0$ (gradients explode)
# (Sompolinsky, Crisanti & Sommers 1988 for the continuous-time network; Engelken, Wolf & Abbott 2020
# for the full spectra); the number of positive exponents counts the directions in which the chaotic
# attractor spreads perturbations.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxrnn as jr

SMOKE = os.environ.get("JAXRNN_NOTEBOOK_SMOKE") == "1"

H_CT = 16 if SMOKE else 64  # units of the continuous-time network
G_CT = 1.5  # its recurrent gain
TAU_SPAN = 20.0  # simulated time, in units of tau
ALPHAS = (1.0, 0.5, 0.2, 0.05)  # dt / tau

N = 128 if SMOKE else 256  # units of the autonomous tanh network (small N: finite-size cycles)
K = 16 if SMOKE else 64  # Lyapunov exponents computed (the largest K of N)
GAINS = np.linspace(0.5, 3.0, 11 if SMOKE else 26)  # recurrent gains g
T_LYAP = 600 if SMOKE else 3000  # steps for the Lyapunov spectrum
BURN_IN = 200 if SMOKE else 1000  # steps before the exponents are counted
print(
    f"SMOKE={SMOKE}: ctRNN H={H_CT}; tanh network N={N}, top {K} exponents, {len(GAINS)} gains, "
    f"{T_LYAP} steps ({BURN_IN} burn-in)"
)

# %% [markdown]
# ## 1. The continuous-time RNN for several $\alpha = dt/\tau$
#
# One random network (orthogonal $W$ times a gain of 1.5, so that it has some internal dynamics of
# its own), eight input channels, and an input pulse that is on from $t = 2\tau$ to $t = 8\tau$. Each
# $\alpha$ runs $T = 20\tau / dt = 20/\alpha$ steps of the same ODE. We plot the rates $f(s_t)$ of three
# units against the step index (left) and against time in units of $\tau$ (right).

# %%
key_w, key_u = jax.random.split(jax.random.PRNGKey(0))
base = jr.ctrnn(H_CT, 1.0)
params_ct = base.init(key_w, 8)
params_ct = {**params_ct, "W_hh": G_CT * params_ct["W_hh"], "W_xh": 2.0 * params_ct["W_xh"]}
pattern = jax.random.normal(key_u, (8,))


def drive(alpha):
    """The input sequence for step size alpha: the pulse is on from 2 tau to 8 tau."""
    T = int(round(TAU_SPAN / alpha))
    t = (np.arange(T) + 1) * alpha  # time of each step, in units of tau
    on = ((t > 2.0) & (t <= 8.0)).astype(np.float32)
    return t, jnp.asarray(on[:, None] * np.asarray(pattern)[None, :])


runs = {}
for alpha in ALPHAS:
    cell = jr.ctrnn(H_CT, alpha)
    t, xs = drive(alpha)
    _, rates = jr.unroll(cell, params_ct, xs)  # y_t = f(s_t), (T, H)
    runs[alpha] = (t, np.asarray(rates))

# alpha = 1 is the ordinary RNN s_t = f(s_{t-1}) W + b + x_t U, step by step
t1, xs1 = drive(1.0)
s = jnp.zeros(H_CT)
for x in xs1[:5]:
    s = jnp.tanh(s) @ params_ct["W_hh"] + params_ct["b"] + x @ params_ct["W_xh"]
np.testing.assert_allclose(np.tanh(np.asarray(s)), runs[1.0][1][4], rtol=1e-5, atol=1e-5)

fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
colours = plt.cm.viridis(np.linspace(0, 0.85, len(ALPHAS)))
for alpha, colour in zip(ALPHAS, colours):
    t, rates = runs[alpha]
    for j, style in zip(range(3), ("-", "--", ":")):
        label = f"alpha = {alpha}" if j == 0 else None
        axes[0].plot(np.arange(len(t))[:80], rates[:80, j], style, color=colour, label=label)
        axes[1].plot(t, rates[:, j], style, color=colour, label=label)
for ax in axes:
    ax.set_ylabel("rate f(s_t) of units 0, 1, 2 (solid, dashed, dotted)")
    ax.legend(fontsize=8, loc="lower right")
axes[0].set_xlabel("step t (first 80 steps; the pulse starts at step 2 / alpha)")
axes[0].set_title("Against steps: small alpha responds slowly and smoothly")
axes[1].axvspan(2.0, 8.0, color="0.9", zorder=0)
axes[1].set_xlabel("time t * dt (units of tau)")
axes[1].set_title("Against time: small alpha converges to the ODE (pulse shaded)")
plt.tight_layout()
plt.show()

# %% [markdown]
# On the step axis (left) the $\alpha = 1$ network jumps to a new state every step, while $\alpha = 0.05$
# needs about $1/\alpha = 20$ steps to respond at all: a small $\alpha$ is a *memory* -- the state
# leaks away only at rate $\alpha$ per step, so the Jacobian $\partial s_t/\partial s_{t-1} =
# (1-\alpha) I + \alpha\, \mathrm{diag}(f'(s_{t-1})) W$ stays close to the identity and errors survive many
# steps. On the time axis (right) the small-$\alpha$ trajectories lie on top of each other: they are
# Euler approximations of the same ODE, and the discrepancy shrinks with $\alpha$:


# %%
def on_grid(alpha, grid):
    t, rates = runs[alpha]
    return np.stack([np.interp(grid, t, rates[:, j]) for j in range(rates.shape[1])], axis=-1)


grid = np.linspace(1.0, TAU_SPAN, 200)
finest = on_grid(ALPHAS[-1], grid)
gaps = {a: float(np.max(np.abs(on_grid(a, grid) - finest))) for a in ALPHAS[:-1]}
for a, gap in gaps.items():
    print(f"alpha = {a:4}: max |rate - rate(alpha=0.05)| over t in [1, 20] tau = {gap:.3f}")
assert gaps[0.2] < gaps[1.0]  # the Euler scheme converges as alpha shrinks

# %% [markdown]
# ## 2. Lyapunov spectrum of a random tanh network against the gain $g$
#
# $h_t = \tanh(h_{t-1} W)$, $W = g\, Z/\sqrt N$ with $Z_{ij} \sim \mathcal N(0, 1)$ (one $Z$ for every
# $g$), no input and no bias, started from a random state. `jr.lyapunov_spectrum` computes the $K$
# largest exponents and is vmapped over the gains, so the whole sweep is one compiled program. The
# transition is sharp only for large $N$: with a few dozen units the network often settles on a cycle
# ($\lambda_1 \approx 0$) even at $g > 1$, so $N$ is 128 even in the quick setting.

# %%
cell = jr.elman(N, "tanh")
z = jax.random.normal(jax.random.PRNGKey(1), (N, N)) / np.sqrt(N)
params0 = cell.init(jax.random.PRNGKey(2), 1)
xs_zero = jnp.zeros((T_LYAP, 1))
h0 = jax.random.normal(jax.random.PRNGKey(3), (N,))


def spectrum(g):
    params = {**params0, "W_xh": jnp.zeros_like(params0["W_xh"]), "b": jnp.zeros(N), "W_hh": g * z}
    return jr.lyapunov_spectrum(cell, params, xs_zero, h0, k=K, burn_in=BURN_IN)


spectra = np.asarray(jax.jit(jax.vmap(spectrum))(jnp.asarray(GAINS, jnp.float32)))  # (len(GAINS), K)
lam1 = spectra[:, 0]
positive = (spectra > 0.005).sum(axis=1)  # unstable directions among the K largest
rho = np.asarray(jax.vmap(lambda g: jr.spectral_radius(g * z))(jnp.asarray(GAINS)))
# where lambda_1 leaves the ordered side (< -0.02) for the chaotic side (> +0.02)
last_ordered = GAINS[np.flatnonzero(lam1 < -0.02)].max()
first_chaotic = GAINS[(GAINS > last_ordered) & (lam1 > 0.02)].min()
for g, l1, npos in zip(GAINS, lam1, positive):
    print(f"g = {g:4.2f}: lambda_1 = {l1:+.3f} per step, positive exponents among the top {K}: {npos}")
print(f"lambda_1 crosses zero between g = {last_ordered:.2f} and g = {first_chaotic:.2f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
axes[0].plot(GAINS, lam1, "o-", label="measured lambda_1")
axes[0].plot(GAINS, np.log(rho), "--", color="0.4", label="log rho(W) (stable fixed point at 0)")
axes[0].axhline(0.0, color="k", lw=0.8)
axes[0].axvline(1.0, color="r", lw=0.8, ls=":", label="g = 1")
axes[0].set_xlabel("gain g")
axes[0].set_ylabel("largest Lyapunov exponent (1 / step)")
axes[0].set_title("Order to chaos: lambda_1 reaches zero near g = 1")
axes[0].legend(fontsize=8)
show = np.linspace(0, len(GAINS) - 1, 4).round().astype(int)
for i in show:
    axes[1].plot(np.arange(1, K + 1), spectra[i], ".-", label=f"g = {GAINS[i]:.1f}")
axes[1].axhline(0.0, color="k", lw=0.8)
axes[1].set_xlabel("index i")
axes[1].set_ylabel("Lyapunov exponent lambda_i (1 / step)")
axes[1].set_title(f"The {K} largest exponents (N = {N})")
axes[1].legend(fontsize=8)
axes[2].plot(GAINS, positive, "o-")
axes[2].axvline(1.0, color="r", lw=0.8, ls=":")
axes[2].set_xlabel("gain g")
axes[2].set_ylabel(f"number of exponents > 0 (of the top {K})")
axes[2].set_title("Unstable directions grow with g")
plt.tight_layout()
plt.show()

assert lam1[0] < 0 < lam1[-1]  # g = 0.5 is ordered, g = 3 chaotic
assert 0.7 <= last_ordered and first_chaotic <= 1.8, (last_ordered, first_chaotic)
assert positive[0] == 0 and positive[-1] > 1

# %% [markdown]
# Below $g \approx 1$ the measured $\lambda_1$ lies on $\log \rho(W)$: every trajectory falls into the
# fixed point $h = 0$, whose Jacobian is $W^\top$. It reaches zero near $g = 1$; with a finite $N$ it
# then stays close to zero for a while (the network settles on slow limit cycles, $\lambda_1 \approx 0$)
# and turns clearly positive a little further on -- a band that narrows as $N$ grows (mean-field theory
# puts the transition at exactly $g = 1$ for $N \to \infty$). Past it, more and more directions are
# unstable (right).

# %% [markdown]
# ## What to take away
#
# * A continuous-time RNN is an Euler step of an ODE; $\alpha = dt/\tau$ sets how much of the state is
#   kept each step. $\alpha = 1$ is the ordinary RNN; small $\alpha$ makes slow, smooth units whose
#   step Jacobian stays near the identity -- a simple way to carry information (and gradients) over
#   many steps, at the price of reacting slowly.
# * The largest Lyapunov exponent is the per-step growth rate of perturbations, i.e. of the errors
#   that BPTT propagates. Below $g \approx 1$ it is negative (for the autonomous network it follows
#   $\log \rho(W)$): gradients vanish exponentially. Above it is positive: the network is chaotic and
#   gradients explode. Trainable RNNs live near the edge, $\lambda_1 \approx 0$, which is why
#   initialisations with spectral radius close to one (orthogonal, IRNN, np-RNN; notebook 01) matter.
# * The spectrum tells more than $\lambda_1$: the number of positive exponents grows with $g$, so
#   strongly chaotic networks spread perturbations over many directions (for the whole spectrum,
#   `jr.kaplan_yorke_dimension` turns it into the dimension of the attractor).
