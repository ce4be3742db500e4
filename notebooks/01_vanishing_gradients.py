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
# # 01 -- Vanishing and exploding gradients: the bound against the measured Jacobians
#
# This notebook follows the vanishing/exploding-gradient slides of the "Recurrent Neural Networks"
# lecture of the Cognitive Robotics course, Politecnico di Milano (the bound and the spectral-radius
# theorem), the eigenvalue argument and the "ReLU to the rescue" slides of Machine Learning Lecture 17
# "Recurrent Neural Networks", RWTH Aachen, and the eigen-decomposition argument and the IRNN /
# np-RNN initialisations of the "Recurrent neural networks" lecture notes (dynamical-systems view).
#
# For an Elman RNN (jaxrnn writes row vectors, $h_t = \phi(h_{t-1} W + x_t U + b)$, so the lectures'
# $\theta$ is $W^\top$) the error that BPTT carries from step $t$ back to step $k$ passes through
#
# $$\frac{\partial h_t}{\partial h_k} = \prod_{i=k+1}^{t} \frac{\partial h_i}{\partial h_{i-1}}
#   = \prod_{i=k+1}^{t} \operatorname{diag}\big(\phi'(a_i)\big)\, W^\top ,
# \qquad
# \Big\| \frac{\partial h_t}{\partial h_k} \Big\| \le (\gamma_\theta \gamma_\phi)^{t-k},$$
#
# with $\gamma_\theta = \sigma_{\max}(W)$ (the largest singular value) and $\gamma_\phi = \sup|\phi'|$
# ($1$ for tanh, ReLU and the identity, $1/4$ for the sigmoid). Two consequences (Pascanu et al. 2013,
# section 2.1, as in the Politecnico di Milano and RWTH Aachen lectures):
#
# * **sufficient for vanishing**: $\sigma_{\max}(W) < 1/\gamma_\phi$ makes $\eta = \gamma_\theta\gamma_\phi
#   < 1$, so every product shrinks at least like $\eta^{t-k} \to 0$, whatever the inputs;
# * **necessary for exploding**: by the same bound, gradients can only grow if
#   $\sigma_{\max}(W) > 1/\gamma_\phi$. For a *linear* RNN the exact statement is the spectral-radius
#   theorem of the Politecnico di Milano lecture: $W^k \to 0$ iff $\rho(W) < 1$, and $\|W^k\|$ is
#   unbounded if $\rho(W) > 1$. The RWTH Aachen lecture: "largest eigenvalue $> 1$ $\Rightarrow$
#   gradients *may* explode; $< 1$ $\Rightarrow$ they *will* vanish" -- *may*, because the
#   nonlinearity can saturate.
#
# What we measure: `jr.jacobian_norms` gives $\|\partial h_t/\partial h_k\|_2$ for every $k \le t$ along
# a real trajectory, `jr.gradient_bound` gives $(\gamma_\theta\gamma_\phi)^{t-k}$, `jr.spectral_radius`
# and `jr.max_singular_value` give $\rho(W)$ and $\sigma_{\max}(W)$, and `jr.gradient_flow` gives the
# curve $\|\partial L/\partial h_k\|$ over $k$ that BPTT actually produces.

# %%
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxrnn as jr

sys.path.insert(0, str(pathlib.Path.cwd().parent))  # repo root, for experiments/
from experiments import tasks  # noqa: E402

SMOKE = os.environ.get("JAXRNN_NOTEBOOK_SMOKE") == "1"

H = 8 if SMOKE else 32  # hidden units of the tanh / linear RNN in sections 1-3
T = 20 if SMOKE else 60  # steps for the (T, T) Jacobian-norm matrices
B = 2 if SMOKE else 4  # input sequences per setting
T_SWEEP = 40 if SMOKE else 100  # steps for the growth-rate sweep
N_SWEEP = 7 if SMOKE else 19  # spectral radii in the sweep
H_FLOW, T_FLOW, B_FLOW = (16, 30, 8) if SMOKE else (64, 100, 32)  # gradient-flow experiment
I = 4  # input features
WEAK, STRONG = 0.1, 1.0  # standard deviations of the random inputs x_t
RHOS = (0.5, 1.0, 1.5)  # spectral radii below, at and above 1
print(
    f"SMOKE={SMOKE}: H={H}, T={T}, B={B}, T_SWEEP={T_SWEEP}, N_SWEEP={N_SWEEP}, "
    f"gradient flow H={H_FLOW}, T={T_FLOW}, batch={B_FLOW}"
)

# %% [markdown]
# ## 1. One recurrent matrix, three spectral radii
#
# We draw one Gaussian matrix $W_0 \sim \mathcal N(0, 1/H)$, rescale it to $\rho(W_0) = 1$, and use
# $W = \rho\, W_0$ for $\rho \in \{0.5, 1, 1.5\}$. `jr.spectral_radius` confirms the scaling. A
# Gaussian matrix is *not normal*, so its largest singular value is well above its spectral radius:
# the bound $\eta = \sigma_{\max}\gamma_\phi$ is looser than the eigenvalue picture.

# %%
key = jax.random.PRNGKey(0)
k_w, k_p, k_x, k_flow = jax.random.split(key, 4)
W0 = jax.random.normal(k_w, (H, H)) / jnp.sqrt(H)
W0 = W0 / jr.spectral_radius(W0)
SIGMA_OVER_RHO = float(jr.max_singular_value(W0))  # sigma_max / rho of every W = rho * W0

tanh_cell = jr.elman(H, "tanh")
linear_cell = jr.elman(H, "identity")  # the linear RNN of the spectral-radius theorem
base = tanh_cell.init(k_p, I)  # W_xh LeCun-normal (std 1/sqrt(I)), b = 0; W_hh replaced below
params = {r: dict(base, W_hh=r * W0) for r in RHOS}


@jax.jit
def matrix_numbers(W):
    """rho(W), sigma_max(W) and the bound's eta = sigma_max * gamma_phi (the bound at lag 1)."""
    p = dict(base, W_hh=W)
    return jr.spectral_radius(W), jr.max_singular_value(W), jr.gradient_bound(tanh_cell, p, 1)[1]


print(" target rho | rho(W) (jr.spectral_radius) | sigma_max(W) | eta = sigma_max * gamma_phi (tanh)")
for r, p in params.items():
    rho, smax, eta = (float(v) for v in matrix_numbers(p["W_hh"]))
    print(f"   {r:8.2f} | {rho:26.4f} | {smax:12.4f} | {eta:.4f}")
    assert abs(rho - r) < 1e-3 * r and abs(eta - smax) < 1e-5 * smax

# %% [markdown]
# ## 2. The bound against the measured Jacobian products
#
# For each $\rho$ we run the tanh RNN and the linear RNN (identity activation, same $W$) on $B$ random
# input sequences with weak inputs ($x_t \sim \mathcal N(0, 0.1^2)$), and compute the whole matrix
# $N[t, k] = \|\partial h_t/\partial h_k\|_2$ with `jr.jacobian_norms` (kept in log scale, so nothing
# overflows). One jitted function, `vmap`ped over the three matrices and the sequences, does all of it.
#
# The plot shows the last row, $\|\partial h_{T-1}/\partial h_k\|$ against the lag $T-1-k$: the bound
# $(\sigma_{\max}\gamma_\phi)^{\text{lag}}$ (dashed), the eigenvalue rate $\rho^{\text{lag}}$ (dotted),
# and the measured products (thin lines, one per sequence). The cell after it asserts
# $N[t, k] \le (\sigma_{\max}\gamma_\phi)^{t-k}$ for **every** $k \le t$, sequence and matrix.

# %%
xs = jax.random.normal(k_x, (B, T, I))  # one set of sequences for every setting
W_stack = jnp.stack([params[r]["W_hh"] for r in RHOS])


@jax.jit
def log_jacobian_norms(W_stack, xs):
    """log ||dh_t/dh_k||, shape (len(RHOS), B, T, T), for the tanh and the linear cell."""

    def one(W, x):
        p = dict(base, W_hh=W)
        return (
            jr.jacobian_norms(tanh_cell, p, x, log=True),
            jr.jacobian_norms(linear_cell, p, x, log=True),
        )

    return jax.vmap(lambda W: jax.vmap(lambda x: one(W, x))(xs))(W_stack)


logN_tanh, logN_lin = (np.asarray(a) for a in log_jacobian_norms(W_stack, WEAK * xs))
bound_fn = jax.jit(jax.vmap(lambda W: jr.gradient_bound(tanh_cell, dict(base, W_hh=W), T - 1, log=True)))
log_bound = dict(zip(RHOS, np.asarray(bound_fn(W_stack))))  # (t-k) log(sigma_max gamma_phi)

lags = np.arange(T)
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
for ax, (i, r) in zip(axes, enumerate(RHOS)):
    for b in range(B):
        last_tanh = logN_tanh[i, b, -1, ::-1]  # lag = T-1-k
        last_lin = logN_lin[i, b, -1, ::-1]
        ax.plot(
            lags, last_lin / np.log(10), color="C1", lw=1, label="linear RNN (measured)" if b == 0 else None
        )
        ax.plot(
            lags, last_tanh / np.log(10), color="C0", lw=1, label="tanh RNN (measured)" if b == 0 else None
        )
    ax.plot(lags, log_bound[r] / np.log(10), "k--", lw=2, label=r"bound $(\sigma_{\max}\gamma_\phi)^{lag}$")
    ax.plot(lags, lags * np.log10(r), ":", color="gray", lw=2, label=r"$\rho^{lag}$")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(rf"$\rho(W)={r}$, $\sigma_{{\max}}(W)={r * SIGMA_OVER_RHO:.2f}$")
    ax.set_xlabel("lag t - k (time steps), t = T-1")
    ax.grid(alpha=0.3)
axes[0].set_ylabel(r"$\log_{10} \|\partial h_{T-1}/\partial h_k\|_2$")
axes[0].legend(fontsize=8, loc="lower left")
fig.suptitle(f"Jacobian products of an Elman RNN against the bound (H={H}, weak input std {WEAK})")
fig.tight_layout()
plt.show()

# %%
tk = np.subtract.outer(np.arange(T), np.arange(T))  # t - k
lower = tk >= 0
for i, r in enumerate(RHOS):
    bound = tk * np.log(r * SIGMA_OVER_RHO)
    for logN in (logN_tanh[i], logN_lin[i]):
        excess = (logN - bound)[:, lower]
        assert np.all(excess <= 1e-3), (r, excess.max())  # ||dh_t/dh_k|| <= (gamma_theta gamma_phi)^(t-k)
    print(
        f"rho={r}: log10 ||dh_(T-1)/dh_0||: tanh {logN_tanh[i, :, -1, 0].mean() / np.log(10):+.2f}, "
        f"linear {logN_lin[i, :, -1, 0].mean() / np.log(10):+.2f}, "
        f"bound {log_bound[r][-1] / np.log(10):+.2f}, "
        f"rho^(T-1) {(T - 1) * np.log10(r):+.2f}   (mean over {B} sequences)"
    )
# below 1 the products vanish; the linear RNN at rho = 1.5 explodes
assert logN_tanh[0, :, -1, 0].max() < -1 and logN_lin[0, :, -1, 0].max() < -1
assert logN_lin[2, :, -1, 0].min() > 1

# %% [markdown]
# What to look for: the measured curves never cross the dashed bound. For $\rho = 0.5$ the bound is
# already below 1 ($\sigma_{\max} < 1$), so vanishing is *guaranteed*, and the products fall roughly
# like $\rho^{\text{lag}}$. For $\rho = 1$ and $1.5$ the bound grows, so it says nothing -- the
# linear RNN follows $\rho^{\text{lag}}$ (flat or exploding, the eigenvalue theorem), while the tanh
# RNN, once its units leave the linear part of tanh, has $\phi' < 1$ and grows much more slowly
# than $\rho^{\text{lag}}$ or not at all.
#
# ## 3. The whole matrix: heatmaps of $\|\partial h_t/\partial h_k\|$
#
# Every entry of the matrix, not just its last row, on the first input sequence: the linear RNN (top)
# and the tanh RNN (bottom) with the same $W$. Colour is $\log_{10}$ of the norm, blue below 1
# (vanishing) and red above (exploding), with one colour scale per column (per $\rho$) so that the two
# cells can be compared; white above the diagonal, where $h_t$ does not depend on $h_k$ ($k > t$).

# %%
fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
for i, r in enumerate(RHOS):
    imgs = [np.where(lower, logN[i, 0] / np.log(10), np.nan) for logN in (logN_lin, logN_tanh)]
    lim = max(1.0, max(np.nanmax(np.abs(img)) for img in imgs))
    for ax, img, name in zip(axes[:, i], imgs, ["linear RNN", "tanh RNN"]):
        im = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_title(rf"{name}, $\rho(W)={r}$")
        ax.set_xlabel("k, step of the earlier state (time steps)")
        ax.set_ylabel("t, step of the later state (time steps)")
    fig.colorbar(
        im,
        ax=axes[:, i],
        location="bottom",
        shrink=0.8,
        label=r"$\log_{10}\|\partial h_t/\partial h_k\|_2$ (blue: vanishing, red: exploding)",
    )
fig.suptitle(f"Jacobian-product norms for every pair k <= t (jr.jacobian_norms, H={H}, input std {WEAK})")
plt.show()

# %% [markdown]
# What to look for: for $\rho = 0.5$ both cells turn deep blue as soon as you move away from the
# diagonal ($t = k$, norm 1), at the same speed. For $\rho = 1$ the linear RNN is pale red: a
# non-normal $W$ amplifies over short lags (the darker band along the diagonal; one step can gain up
# to $\sigma_{\max}$) without growing further. The tanh RNN at $\rho = 1$ looks the same in its first
# rows, while its state is small and tanh is almost linear, and turns blue in later rows, once the
# state has grown into the saturating range of tanh. For $\rho = 1.5$ the linear RNN turns dark red
# with the distance $t - k$; the tanh RNN stays pale: saturation holds the products near 1.
#
# ## 4. Sweep: growth rate per step against $\rho(W)$, and what the two conditions say
#
# Now $\rho$ goes from 0.2 to 2 in small steps. For each $W = \rho W_0$ we measure the average growth
# rate per step of the Jacobian product over the whole sequence,
# $r = \frac{1}{T-1}\log\|\partial h_{T-1}/\partial h_0\|_2$ ($r<0$: vanishing, $r>0$: exploding), from
# `jr.step_jacobians` multiplied with rescaling (one jit, `vmap`ped over $\rho$ and the sequences).
# We compare the linear RNN, the tanh RNN with weak inputs (std 0.1) and with strong inputs (std 1),
# and two lines: $\log\rho$ (the eigenvalue rate) and $\log(\sigma_{\max}\gamma_\phi)$ (the bound).

# %%
rho_grid = np.linspace(0.2, 2.0, N_SWEEP)
xs_sweep = jax.random.normal(jax.random.fold_in(k_x, 1), (B, T_SWEEP, I))


def growth_rate(cell, p, x):
    """(1 / (T-1)) log ||dh_(T-1)/dh_0||_2 from the step Jacobians, rescaled at every step."""
    Js = jr.step_jacobians(cell, p, x)[1:]  # dh_t/dh_(t-1) for t = 1 .. T-1

    def body(carry, J):
        P, log_scale = carry
        P = J @ P
        c = jnp.linalg.norm(P)
        return (P / c, log_scale + jnp.log(c)), None

    (P, log_scale), _ = jax.lax.scan(body, (jnp.eye(H), jnp.zeros(())), Js)
    return (log_scale + jnp.log(jnp.linalg.norm(P, 2))) / Js.shape[0]


@jax.jit
def sweep(rhos, xs):
    def one(r, x):
        p = dict(base, W_hh=r * W0)
        return jnp.stack(
            [
                growth_rate(linear_cell, p, WEAK * x),
                growth_rate(tanh_cell, p, WEAK * x),
                growth_rate(tanh_cell, p, STRONG * x),
            ]
        )

    return jax.vmap(lambda r: jax.vmap(lambda x: one(r, x))(xs))(rhos)  # (N_SWEEP, B, 3)


rates = np.asarray(sweep(jnp.asarray(rho_grid), xs_sweep))
log_eta = np.log(rho_grid * SIGMA_OVER_RHO)  # gamma_phi = 1 for tanh and identity

fig, ax = plt.subplots(figsize=(8, 5))
ax.axvspan(
    rho_grid[0],
    1 / SIGMA_OVER_RHO,
    color="C2",
    alpha=0.12,
    label=r"$\sigma_{\max}\gamma_\phi < 1$: vanishing guaranteed",
)
ax.plot(rho_grid, log_eta, "k--", lw=2, label=r"bound $\log(\sigma_{\max}\gamma_\phi)$")
ax.plot(rho_grid, np.log(rho_grid), ":", color="gray", lw=2, label=r"$\log\rho(W)$")
labels = ["linear RNN", f"tanh RNN, input std {WEAK}", f"tanh RNN, input std {STRONG}"]
for j, (lab, m) in enumerate(zip(labels, ["s", "o", "^"])):
    mean, lo, hi = rates[:, :, j].mean(1), rates[:, :, j].min(1), rates[:, :, j].max(1)
    ax.errorbar(
        rho_grid,
        mean,
        yerr=[mean - lo, hi - mean],
        marker=m,
        ms=4,
        lw=1,
        capsize=2,
        color=f"C{[1, 0, 3][j]}",
        label=lab + f" (min/mean/max of {B})",
    )
ax.axhline(0, color="k", lw=0.8)
ax.axvline(1, color="k", lw=0.5, ls="-.")
ax.set_xlabel(r"spectral radius $\rho(W)$ (dimensionless)")
ax.set_ylabel(r"growth rate $\frac{1}{T-1}\log\|\partial h_{T-1}/\partial h_0\|_2$ (nats per step)")
ax.set_title(
    f"Vanishing (< 0) or exploding (> 0)? H={H}, T={T_SWEEP}, "
    rf"$\sigma_{{\max}}/\rho = {SIGMA_OVER_RHO:.2f}$"
)
ax.legend(fontsize=8, loc="upper left")
ax.grid(alpha=0.3)
plt.show()

# %%
assert np.all(rates <= log_eta[:, None, None] + 1e-3)  # the bound holds at every rho
guaranteed = rho_grid * SIGMA_OVER_RHO < 1
assert np.all(rates[guaranteed] < 0)  # sufficient condition: sigma_max gamma_phi < 1 => vanishing
exploding = rates > 0
assert np.all((rho_grid * SIGMA_OVER_RHO)[np.nonzero(exploding)[0]] > 1)  # necessary condition
# the linear RNN follows the eigenvalue theorem: it vanishes below rho = 1 and explodes above
assert np.all(rates[rho_grid < 0.9, :, 0] < 0) and np.all(rates[rho_grid > 1.1, :, 0] > 0)
# strong inputs saturate tanh: slower growth than the linear RNN at every rho > 1
assert np.all(rates[rho_grid > 1.1, :, 2] < rates[rho_grid > 1.1, :, 0])
print(f"sigma_max/rho of W0 = {SIGMA_OVER_RHO:.3f}: vanishing guaranteed for rho < {1 / SIGMA_OVER_RHO:.3f}")
for name, j in zip(labels, range(3)):
    pos = rho_grid[(rates[:, :, j] > 0).all(1)]
    print(
        f"{name:26s}: rate at rho=2.0 {rates[-1, :, j].mean():+.3f}/step; "
        f"exploding on every sequence for rho >= {pos.min() if pos.size else float('nan'):.2f}"
    )

# %% [markdown]
# What to look for: every marker lies under the dashed bound, and in the green band (where
# $\sigma_{\max}\gamma_\phi < 1$) every rate is negative -- the sufficient condition for vanishing.
# Positive rates (exploding) appear only to the right of the band -- the necessary condition. The
# linear RNN sits on the $\log\rho$ line and crosses zero at $\rho = 1$ (the spectral-radius
# theorem). The tanh RNN with strong inputs stays well below: its units saturate, $\phi'$ is small, and
# it can keep $r \le 0$ far beyond $\rho = 1$ -- "largest eigenvalue $> 1$: gradients *may* explode".
# With weak inputs the state settles on a chaotic attractor for $\rho > 1$ and the rate is small but
# positive (notebook 05 measures this with Lyapunov exponents).
#
# ## 5. Gradient flow in BPTT: tanh, ReLU, identity init (IRNN) and np-RNN
#
# Finally the quantity that training sees: $\|\partial L/\partial h_k\|$ for every $k$, with the loss
# on the last step only, from `jr.state_gradients` (BPTT through `jr.unroll`, the error at each step
# read off through zero probes; `jr.gradient_flow` is the same curve in one call). The inputs are
# Arjovsky's adding problem (`experiments/tasks.py`; values in $[0, 1)$ and two markers), the loss the
# squared error of a fixed random linear readout of $h_{T-1}$. Four cells at initialisation, all with
# $\rho(W)$ close to 1:
#
# * tanh and ReLU Elman cells with $W \sim \mathcal N(0, 1/H)$ (the same draw for both);
# * IRNN (`jr.irnn`, Le, Jaitly & Hinton 2015): ReLU with $W = I$, so on every unit that stays
#   active the error is copied back with factor exactly 1;
# * np-RNN (`jr.np_rnn`, Talathi & Vartak 2016): ReLU with $W = (B + I)/\lambda_{\max}(B+I)$,
#   $B = R^\top R / H$ (jaxrnn's reading of the paper, see `jr.initialisers.np_rnn`), symmetric with
#   eigenvalues in $(0, 1]$ and the largest exactly 1.
#
# For comparison, the thin dashed line is np-RNN's $W$ *without* the ReLU: the norm of
# $v\,(W^\top)^{T-1-k}$ for a random $v$ (numpy), the linear picture of the eigen-decomposition argument.
# The curves are divided by their value at $k = T-1$, so they all start at 1 on the right.

# %%
task = tasks.adding_arjovsky(T_FLOW)
batch = task.sample(jax.random.PRNGKey(1), B_FLOW)
w_out = jax.random.normal(jax.random.PRNGKey(2), (H_FLOW, 1)) / jnp.sqrt(H_FLOW)


def loss_fn(ys):  # ys (T, B, H): squared error of a linear readout of the last state
    return jnp.mean((ys[-1] @ w_out - batch.targets) ** 2)


gauss = jr.initialisers.normal(1 / np.sqrt(H_FLOW))
flow_cells = {
    "tanh, W ~ N(0, 1/H)": jr.elman(H_FLOW, "tanh", recurrent_init=gauss),
    "ReLU, W ~ N(0, 1/H)": jr.elman(H_FLOW, "relu", recurrent_init=gauss),
    "IRNN (ReLU, W = I)": jr.irnn(H_FLOW),
    "np-RNN (ReLU, W = (B+I)/lmax)": jr.np_rnn(H_FLOW),
}
flow_params = {name: cell.init(k_flow, task.input_size) for name, cell in flow_cells.items()}
relu_names = list(flow_cells)[1:]
# IRNN and np-RNN *are* ReLU Elman cells that differ only in how W is initialised (jr.irnn and
# jr.np_rnn build the parameters): one ReLU cell, vmapped over the three parameter sets, runs all
# three in one compiled program.
relu_cell = flow_cells["ReLU, W ~ N(0, 1/H)"]
relu_stack = jax.tree.map(lambda *a: jnp.stack(a), *[flow_params[n] for n in relu_names])


@jax.jit
def gradient_flows(tanh_params, relu_stack, xs):
    """||dL/dh_k|| for every k and the fraction of active units: (T,) curves and scalars.

    jr.state_gradients gives dL/dh_k (T, B, H) and the states; the curve is what jr.gradient_flow
    returns (the norm over units, averaged over the batch), here from the same call as the states.
    """

    def one(cell, p):
        _, _, dL_dh, states = jr.state_gradients(cell, p, xs, loss_fn, return_states=True)
        return jnp.linalg.norm(dL_dh, axis=-1).mean(axis=1), jnp.mean(states > 0)

    return one(flow_cells["tanh, W ~ N(0, 1/H)"], tanh_params), jax.vmap(lambda p: one(relu_cell, p))(
        relu_stack
    )


(tanh_flow, _), (relu_flows, relu_active) = gradient_flows(
    flow_params["tanh, W ~ N(0, 1/H)"], relu_stack, batch.xs
)
curves = [np.asarray(tanh_flow)] + list(np.asarray(relu_flows))
flows = {name: c / c[-1] for name, c in zip(flow_cells, curves)}
active = dict(zip(relu_names, np.asarray(relu_active)))
rho_flow = {name: float(jr.spectral_radius(p["W_hh"])) for name, p in flow_params.items()}
W_np = np.asarray(flow_params["np-RNN (ReLU, W = (B+I)/lmax)"]["W_hh"], np.float64)
v = np.random.default_rng(0).standard_normal(H_FLOW)
np_linear = [np.linalg.norm(v)]
for _ in range(T_FLOW - 1):  # g_(k-1) = g_k W^T without the ReLU masks
    v = v @ W_np.T
    np_linear.append(np.linalg.norm(v))
np_linear = np.array(np_linear[::-1]) / np_linear[0]  # index k: lag T-1-k

fig, ax = plt.subplots(figsize=(8, 5))
for j, (name, flow) in enumerate(flows.items()):
    ax.semilogy(
        np.arange(T_FLOW),
        np.maximum(flow, 1e-30),
        lw=2,
        color=f"C{j}",
        label=rf"{name}, $\rho(W)={rho_flow[name]:.2f}$",
    )
ax.semilogy(np.arange(T_FLOW), np_linear, "--", color="C3", lw=1, label="np-RNN's W without ReLU (linear)")
ax.set_xlabel("k, step of the hidden state (time steps); the loss is at k = T-1")
ax.set_ylabel(r"$\|\partial L/\partial h_k\| \,/\, \|\partial L/\partial h_{T-1}\|$ (log scale)")
ax.set_title(f"Gradient flow at initialisation, adding problem (T={T_FLOW}, H={H_FLOW}, batch {B_FLOW})")
ax.legend(fontsize=8)
ax.grid(alpha=0.3, which="both")
plt.show()

for name, flow in flows.items():
    print(
        f"{name:31s}: ||dL/dh_0|| / ||dL/dh_(T-1)|| = {flow[0]:.3g}; fraction of active units "
        f"{active[name]:.2f}"
        if name in active
        else f"{name:31s}: ||dL/dh_0|| / ||dL/dh_(T-1)|| = {flow[0]:.3g}"
    )
irnn = flows["IRNN (ReLU, W = I)"][0]
assert irnn > 0.1  # identity init: the error reaches the first step undiminished on the active units
assert all(flow[0] < irnn / 10 for name, flow in flows.items() if not name.startswith("IRNN"))

# %% [markdown]
# What to look for: the tanh and ReLU cells with Gaussian $W$ lose many orders of magnitude of error
# signal over the sequence, even though $\rho(W) \approx 1$: every step multiplies by
# $\operatorname{diag}(\phi')W^\top$, and $\phi' < 1$ (tanh) or $\phi' = 0$ on the inactive units
# (ReLU) pulls the product below the eigenvalue rate. The IRNN curve is flat: with $W = I$ the
# Jacobian is $\operatorname{diag}(\mathbb 1[a > 0])$, so the units that stay active pass the error
# back with factor exactly 1, and the error on the others is cut, almost all of it in the first step
# back (the flat level is the share of the error on the units that stay active). np-RNN's $W$ alone
# (dashed) keeps the error's component along its eigenvalue-1 direction and levels off, as the
# eigen-decomposition argument of the lecture notes says; but the cell's Jacobian is
# $\operatorname{diag}(\mathbb 1[a > 0])\,W^\top$, with a good part of the units off at every step
# (printed), and the masked product vanishes like the Gaussian ones -- at initialisation, on this input.
#
# ## What to take away
#
# * $\partial h_t/\partial h_k$ is a product of $t-k$ step Jacobians $\operatorname{diag}(\phi')W^\top$;
#   its norm is bounded by $(\sigma_{\max}(W)\gamma_\phi)^{t-k}$, and the measured norms always sat
#   under that bound here.
# * $\sigma_{\max}(W) < 1/\gamma_\phi$ is **sufficient** for vanishing gradients (every rate in the
#   green band was negative), so $\sigma_{\max}(W) > 1/\gamma_\phi$ is **necessary** for exploding
#   ones. For a non-normal $W$, $\sigma_{\max}$ can be well above $\rho$, so the bound is loose.
# * For a linear RNN the spectral radius decides: the growth rate is $\log\rho(W)$, vanishing below 1
#   and exploding above. With tanh, $\rho > 1$ only makes exploding *possible*: saturation can keep
#   the products bounded or shrinking.
# * What reaches early steps in BPTT is $\|\partial L/\partial h_k\|$; at initialisation, the identity
#   recurrence of the IRNN keeps it flat, while Gaussian tanh/ReLU cells (and np-RNN here) lose it
#   exponentially in the distance to the loss.
