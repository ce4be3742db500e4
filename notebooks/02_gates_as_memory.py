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
# # Gates as memory: the 1997 LSTM, the forget gate, GRU and MGU
#
# This notebook follows the gated-cell parts of three lectures:
#
# * the INT301 Bio-computation lecture (week 10), XJTLU -- the original LSTM (Hochreiter & Schmidhuber
#   1997, "Long short-term memory"): memory cells with a self-connection of weight one, the *constant
#   error carousel* (CEC) $c_t = c_{t-1} + i_t \odot z_t$, and its stated limitation: "the cell states
#   $c(t)$ often tend to grow linearly during the presentation of a time series ... the cell state may
#   grow in unbounded fashion causing saturation of the output squashing function $h(c(t))$".
# * the "Recurrent Neural Networks" lecture of the Cognitive Robotics course, Politecnico di Milano --
#   the modern LSTM with a forget gate,
#   $c_t = f_t \odot c_{t-1} + i_t \odot \tilde c_t$, $h_t = o_t \odot \tanh(c_t)$, and the GRU:
#   "gates are a way to optionally let information through ... the LSTM learns from data the behaviour
#   of the gates".
# * the "Recurrent neural networks" lecture notes (dynamical-systems view) -- the *gradient highway*:
#   through the cell state
#   $\partial \mathcal L / \partial c_{t-1} = \partial \mathcal L / \partial c_t \odot f_t$ (along the
#   direct path), so the error survives as long as $f \approx 1$; the GRU's update gate plays the same
#   role ($h_t = u_t h_{t-1} + (1-u_t) \tilde h_t$), and the minimal GRU (MGU) has a single gate.
#
# Three experiments:
#
# 1. **Unbounded growth** of the 1997 cell state under a continuous input stream (`jr.lstm1997`), and
#    the bound the forget gate gives: $|c_t| \le \max|i\,\tilde c| \sum_j f^j \le 1/(1 - f_{\max})$
#    (`jr.lstm`); GRU and MGU states are convex combinations and stay in $[-1, 1]$.
# 2. **Gates learn to be memory**: a small LSTM trained briefly to recall a value shown at a marked
#    step across distractors -- plots of $i_t, f_t, o_t, c_t$ over time -- and the same task for the
#    1997 LSTM, GRU, MGU and an Elman tanh RNN.
# 3. **The gradient highway**: $\|\partial \mathcal L/\partial c_k\|$ against $k$ for LSTMs with different
#    forget-gate biases, the 1997 CEC, GRU and an Elman tanh RNN
#    (`jr.state_gradients`), compared with the product of forget gates $\prod_{j>k} f_j$.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxrnn as jr

SMOKE = os.environ.get("JAXRNN_NOTEBOOK_SMOKE") == "1"  # notebooks/run.py --smoke sets it (and LLVM -O0)

# experiment 1: a continuous input stream
H_STREAM, I_STREAM = (8, 4) if SMOKE else (16, 4)  # smoke: one H for all parts (fewer compilations)
T_STREAM = 200 if SMOKE else 1000
# experiment 2: recall a value shown at a marked step, across distractors
H_MEM = 8
T_MEM = 20 if SMOKE else 50
BATCH = 32 if SMOKE else 64
STEPS = 250 if SMOKE else 2000
LR = 1e-2
# experiment 3: gradient flow
H_GRAD, T_GRAD, B_GRAD = (8, 40, 8) if SMOKE else (32, 150, 32)
print(f"SMOKE={SMOKE}: stream T={T_STREAM}, memory task T={T_MEM} x {STEPS} updates, gradient T={T_GRAD}")
T0 = time.perf_counter()

# %% [markdown]
# The library's LSTM step does not return its gates (the carry is only $(h, c)$), so we recompute
# them from the parameters and the carry with the documented equations of `jr.lstm`
# (`jaxrnn/cells/lstm.py`, gate order i, f, g, o; no peepholes):
#
# $$[a_i, a_f, a_g, a_o] = x_t W_{xh} + h_{t-1} W_{hh} + b,\quad
#   c_t = \sigma(a_f) c_{t-1} + \sigma(a_i) \tanh(a_g),\quad h_t = \sigma(a_o)\tanh(c_t)$$
#
# and check that this reproduces `jr.unroll` exactly before using it.


# %%
@jax.jit
def lstm_gates(params, xs, carry):
    """Run the LSTM equations over xs (T, *batch, I) and return (i, f, g, o, c), each (T, *batch, H)."""

    def step(state, x):
        h, c = state
        a = x @ params["W_xh"] + h @ params["W_hh"] + params["b"]
        a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g), jax.nn.sigmoid(a_o)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return jr.LSTMCarry(h, c), (i, f, g, o, c, h)

    _, out = jax.lax.scan(step, carry, xs)
    return out


def states(cell, params, xs):
    """Every carry s_t of cell along xs (T, *batch, I): a pytree with a leading time axis."""
    carry0 = cell.initial_carry(params, xs.shape[1:-1])
    return jax.lax.scan(lambda s, x: (cell.step(params, s, x),) * 2, carry0, xs)[1]


# %% [markdown]
# ## 1. A continuous input stream: the CEC grows linearly, the forget gate bounds it
#
# Untrained cells (their default initialisation) read a stream $x_t = 1 + 0.5\,\epsilon_t$,
# $\epsilon_t \sim \mathcal N(0, 1)$ -- inputs with a non-zero mean, "a continuous input stream". The 1997
# cell adds $i_t z_t$ to its state at every step and never subtracts anything systematic, so if
# $i_t z_t$ has a steady sign, $c_t \approx c_0 + t\,\overline{i z}$. With a forget gate the state is a
# leaky sum, bounded by $\max_t|i_t \tilde c_t| / (1 - \max_t f_t)$ unit by unit. We also run a GRU
# and an MGU, whose state is a convex combination of $h_{t-1}$ and a tanh and so stays in $[-1, 1]$.

# %%
key = jax.random.PRNGKey(0)
k_x, k_1997, k_lstm, k_gru, k_mgu = jax.random.split(key, 5)
xs_stream = 1.0 + 0.5 * jax.random.normal(k_x, (T_STREAM, I_STREAM))

stream_cells = {
    "lstm1997 (no forget gate)": (jr.lstm1997(H_STREAM), k_1997),
    "lstm, forget_bias=1": (jr.lstm(H_STREAM), k_lstm),
    "lstm, forget_bias=3": (jr.lstm(H_STREAM, forget_bias=3.0), k_lstm),
    "gru": (jr.gru(H_STREAM), k_gru),
    "mgu": (jr.mgu(H_STREAM), k_mgu),
}
memory = {}  # name -> (T, H) the memory of the cell: c for the LSTMs, h for GRU/MGU
stream_params = {}
gates_stream = {}
for name, (cell, k) in stream_cells.items():
    p = stream_params[name] = cell.init(k, I_STREAM)
    if cell.name == "lstm":  # c_t from the recomputed gates (one compilation for both LSTMs)
        gates_stream[name] = lstm_gates(p, xs_stream, cell.initial_carry(p, ()))
        memory[name] = np.asarray(gates_stream[name][4])
    elif cell.name == "lstm1997":  # every carry (h_t, c_t) of the scan
        memory[name] = np.asarray(states(cell, p, xs_stream).c)
    else:  # GRU, MGU: the carry is the output h_t
        memory[name] = np.asarray(jr.unroll(cell, p, xs_stream)[1])

# our gate recomputation must reproduce the library's LSTM exactly
p = stream_params["lstm, forget_bias=1"]
_, ys_lib = jr.unroll(jr.lstm(H_STREAM), p, xs_stream)
assert np.allclose(gates_stream["lstm, forget_bias=1"][5], ys_lib, atol=1e-5)

t = np.arange(1, T_STREAM + 1)
mean_abs = {n: np.abs(m).mean(-1) for n, m in memory.items()}
half = T_STREAM // 2
c97 = mean_abs["lstm1997 (no forget gate)"]
slope, intercept = np.polyfit(t[half:], c97[half:], 1)
fit = slope * t[half:] + intercept
r2 = 1 - np.sum((c97[half:] - fit) ** 2) / np.sum((c97[half:] - c97[half:].mean()) ** 2)
print(
    f"lstm1997: mean |c_t| = {c97[half - 1]:.1f} at t={half}, {c97[-1]:.1f} at t={T_STREAM}; "
    f"linear fit over the second half: slope {slope:.3f} per step, R^2 = {r2:.4f}"
)

# the forget-gate bound, unit by unit, from the recomputed gates
for name in ["lstm, forget_bias=1", "lstm, forget_bias=3"]:
    i_s, f_s, g_s, o_s, c_s, h_s = gates_stream[name]
    bound = np.max(np.abs(i_s * g_s), 0) / (1 - np.max(f_s, 0))  # (H,)
    print(
        f"{name}: max_t |c_t| = {np.abs(c_s).max():.2f}, forget-gate bound max|i g|/(1 - max f) "
        f"= {bound.max():.2f} (max f = {float(f_s.max()):.3f})"
    )
    assert np.all(np.abs(c_s).max(0) <= bound + 1e-4)

assert r2 > 0.99 and c97[-1] > 1.8 * c97[half - 1]  # linear growth: doubling the time doubles |c|
assert np.abs(memory["gru"]).max() <= 1 and np.abs(memory["mgu"]).max() <= 1

# %% [markdown]
# Left: the mean $|c_t|$ (the cell state for the LSTMs, the state $h_t$ for GRU/MGU) against time.
# Right: what the growth does to the output squashing $h(c) = \tanh(c)$ of the 1997 LSTM: the fraction of
# cells whose $|c_t| > 3$, i.e. $\tanh'(c_t) < 0.01$ -- saturated cells, whose output no longer
# changes with their content and pass back less than 1% of the error through $h$.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for name, m in memory.items():
    axes[0].plot(t, mean_abs[name], label=name)
    axes[1].plot(t, (np.abs(m) > 3).mean(-1), label=name)
axes[0].plot(t[half:], fit, "k:", label=f"linear fit, slope {slope:.2f}/step")
axes[0].set(
    title="State under a continuous input stream (untrained cells)",
    xlabel="time step t",
    ylabel="mean |c_t| over cells (GRU/MGU: |h_t|)",
)
axes[0].set_yscale("symlog", linthresh=1)
axes[1].set(
    title="Saturated cells: tanh'(c_t) < 0.01",
    xlabel="time step t",
    ylabel="fraction of cells with |c_t| > 3",
)
axes[0].legend(fontsize=8)
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The 1997 cell state grows in a straight line (the dotted fit; symlog axis, linear below 1) and after
# a short while most of its cells are saturated: exactly the limitation the XJTLU lecture states. With a
# forget gate the state settles at a level set by $1/(1-f)$: a larger forget bias (the gate nearer 1)
# means a longer memory and a higher plateau (with forget bias 3 many cells sit in saturation as well), but a
# bounded one. GRU and MGU states never leave $[-1, 1]$.
#
# ## 2. Gates learn to be memory
#
# The task (in the spirit of Hochreiter & Schmidhuber's experiments): three input channels --
# a value $v_t \sim U(-1, 1)$ at *every* step (the distractors), a marker that is 1 at one random step
# $t^* < T/2$, and a query flag at the last step. Target at the last step: the value shown at the
# marker, $v_{t^*}$ (squared error; predicting 0 gives the baseline $\mathrm{Var}(v) = 1/3$). To solve
# it a cell must *write* at $t^*$ only, *keep* across up to $T$ distractor steps, and *read* at the end.
#
# We train (Adam, one jitted `lax.scan` over updates per cell) an LSTM with the default
# `forget_bias=1` and with 3, the 1997 LSTM, a GRU and an MGU (default initialisation, and with their
# keep gate biased towards "keep": $b_z \mathrel{+}= 3$ for the GRU, whose $h_t = z h_{t-1} + (1-z) n$;
# $b_f \mathrel{-}= 3$ for the MGU, whose $h_t = (1-f) h_{t-1} + f n$), and an Elman tanh RNN, all with
# $H = 8$ units (`H_MEM`). Variants of one cell type differ only in a bias, so they are trained side by side
# under one `jax.vmap` (one compilation per cell type).


# %%
def sample_memory_task(key, batch):
    k_v, k_p = jax.random.split(key)
    values = jax.random.uniform(k_v, (T_MEM, batch), minval=-1.0, maxval=1.0)
    pos = jax.random.randint(k_p, (batch,), 0, T_MEM // 2)
    marker = (jnp.arange(T_MEM)[:, None] == pos[None]).astype(jnp.float32)
    query = jnp.zeros((T_MEM, batch)).at[-1].set(1.0)
    xs = jnp.stack([values, marker, query], axis=-1)  # (T, B, 3)
    return xs, jnp.sum(values * marker, axis=0), pos


def memory_loss(cell, p, xs, target):
    _, ys = jr.unroll(cell, p["cell"], xs)
    pred = ys[-1] @ p["w"] + p["b"]
    return jnp.mean((pred - target) ** 2)


def shift_bias(cell_params, sl, delta):
    return {**cell_params, "b": cell_params["b"].at[sl].add(delta)}


def train_variants(cell, keep_shifts, key):
    """Train one model per entry of keep_shifts (a bias slice and shift), vmapped; same data for all."""
    k_init, k_w, k_data = jax.random.split(key, 3)
    base = cell.init(k_init, 3)
    models = [
        {"cell": shift_bias(base, sl, d), "w": 0.1 * jax.random.normal(k_w, (H_MEM,)), "b": jnp.zeros(())}
        for sl, d in keep_shifts
    ]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *models)
    opt = optax.adam(LR)

    def run(p):
        def update(carry, k):
            p, s = carry
            xs, target, _ = sample_memory_task(k, BATCH)
            loss, g = jax.value_and_grad(lambda p: memory_loss(cell, p, xs, target))(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(update, (p, opt.init(p)), jax.random.split(k_data, STEPS))
        return p, losses

    trained, losses = jax.jit(jax.vmap(run))(stacked)
    return [jax.tree.map(lambda a, j=j: a[j], trained) for j in range(len(keep_shifts))], np.asarray(losses)


H = H_MEM
experiments = {  # cell type -> (cell, [(label, bias slice, shift)])
    "lstm": (
        jr.lstm(H),
        [("lstm, forget_bias=1", slice(0), 0.0), ("lstm, forget_bias=3", slice(H, 2 * H), 2.0)],
    ),
    "lstm1997": (jr.lstm1997(H), [("lstm1997 (CEC, no forget gate)", slice(0), 0.0)]),
    "gru": (jr.gru(H), [("gru (default)", slice(0), 0.0), ("gru, b_z += 3", slice(H, 2 * H), 3.0)]),
    "mgu": (jr.mgu(H), [("mgu (default)", slice(0), 0.0), ("mgu, b_f -= 3", slice(0, H), -3.0)]),
    "elman": (jr.elman(H), [("elman tanh", slice(0), 0.0)]),
}
if SMOKE:  # each cell type is one more compilation; the smoke run keeps the one the asserts use
    experiments = {"lstm": experiments["lstm"]}
trained, curves = {}, {}
for j, (cell, variants) in enumerate(experiments.values()):
    models, losses = train_variants(cell, [(sl, d) for _, sl, d in variants], jax.random.PRNGKey(10 + j))
    for (label, _, _), m, l in zip(variants, models, losses):
        trained[label], curves[label] = (cell, m), l

# held-out loss on fresh sequences
xs_test, target_test, pos_test = sample_memory_task(jax.random.PRNGKey(123), 512)
test_loss = {label: float(memory_loss(c, m, xs_test, target_test)) for label, (c, m) in trained.items()}
for label, v in test_loss.items():
    print(f"{label:32s} first-50-update loss {curves[label][:50].mean():.3f}   test MSE {v:.4f}")
print("baseline (predict 0):", f"{float(jnp.mean(target_test**2)):.4f}")
# the LSTM variant that learned best (Adam at this learning rate can also lose a solution again)
best_lstm = min((label for label in curves if label.startswith("lstm,")), key=test_loss.get)
print("best LSTM:", best_lstm)
assert curves[best_lstm][-20:].mean() < 0.5 * curves[best_lstm][:20].mean()

# %%
fig, ax = plt.subplots(figsize=(9, 4.5))
w = max(1, STEPS // 40)
for label, l in curves.items():
    smooth = np.convolve(l, np.ones(w) / w, mode="valid")
    ax.plot(np.arange(len(smooth)) + w, smooth, label=f"{label} (test {test_loss[label]:.3f})")
ax.axhline(1 / 3, color="k", ls=":", label="baseline Var(v) = 1/3")
ax.set_yscale("log")
ax.set(
    title=f"Recall a marked value across up to {T_MEM} distractor steps (H = {H_MEM})",
    xlabel=f"update (Adam, batch of {BATCH} sequences)",
    ylabel="training MSE (log scale, running mean)",
)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for: the curves that leave the $1/3$ baseline early are cells whose keep gate is near 1
# at the start -- the 1997 CEC (keep gate exactly 1), the LSTMs with a forget bias, the GRU and MGU
# with their update gate biased to keep. Not every such run succeeds: which of the two LSTM forget
# biases (1: $f \approx 0.73$; 3: $f \approx 0.95$ at the start) gets off the baseline within this
# budget changes with the seed and the setting -- one run is an anecdote, not a rate; compare the printed
# test losses. A gated cell initialised with its keep gate near $1/2$ forgets a factor of about 2 per
# step, and the error from the query reaches the marker only through $\approx 2^{-(T - t^*)}$; the
# Elman RNN has no gate at all. (Within the budget of this notebook a cell that stays on the baseline
# may still learn later.)
#
# Now the gates of the trained LSTM (of the two forget biases, the one with the lower test loss) on
# one test sequence, recomputed from its
# parameters. Thick lines: the two cells whose final $c_T$ is most correlated with the target (the
# "memory cells"); thin grey: the others. Dashed: the marker step $t^*$ and the query step.

# %%
cell, model = trained[best_lstm]
p = model["cell"]
i_m, f_m, g_m, o_m, c_m, h_m = lstm_gates(p, xs_test, cell.initial_carry(p, (512,)))
corr = np.array([abs(np.corrcoef(c_m[-1, :, u], target_test)[0, 1]) for u in range(H_MEM)])
mem_units = np.argsort(-corr)[:2]
print("|corr(c_T, target)| per cell:", np.round(corr, 3), "-> memory cells", mem_units)

steps = np.arange(T_MEM)[:, None]
at_marker = steps == np.asarray(pos_test)[None]
distract = (~at_marker) & (steps < T_MEM - 1)
at_query = np.broadcast_to(steps == T_MEM - 1, at_marker.shape)
phase = {"marker t*": at_marker, "distractor": distract, "query": at_query}
table = {}
for gname, gate in [("i", i_m), ("f", f_m), ("o", o_m)]:
    gm = np.asarray(gate)[..., mem_units].mean(-1)  # (T, B), mean over the memory cells
    table[gname] = {ph: float(gm[mask].mean()) for ph, mask in phase.items()}
    print(f"memory cells, mean {gname}: " + ", ".join(f"{ph} {v:.2f}" for ph, v in table[gname].items()))
assert table["i"]["marker t*"] > table["i"]["distractor"]  # the input gate opens to write at the marker

b = int(np.argmax(np.asarray(pos_test) > 3))  # an example whose marker is not at the very start
fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
for ax, (gname, gate) in zip(
    axes,
    [("input gate i_t", i_m), ("forget gate f_t", f_m), ("output gate o_t", o_m), ("cell state c_t", c_m)],
):
    for u in range(H_MEM):
        mem = u in mem_units
        ax.plot(
            np.asarray(gate[:, b, u]),
            lw=2.2 if mem else 0.8,
            color=None if mem else "0.6",
            label=f"memory cell {u}" if mem else None,
        )
    for tt in (int(pos_test[b]), T_MEM - 1):
        ax.axvline(tt, color="k", ls="--", lw=0.8)
    ax.set_ylabel(gname)
axes[-1].axhline(float(target_test[b]), color="r", ls=":", label=f"target v_t* = {float(target_test[b]):.2f}")
axes[0].set_title(f"Trained LSTM ({best_lstm}): gates on one test sequence (marker at t*={int(pos_test[b])})")
axes[0].set_ylim(0, 1), axes[1].set_ylim(0, 1.02), axes[2].set_ylim(0, 1)
axes[-1].set_xlabel("time step t")
axes[0].legend(fontsize=8)
axes[-1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Read it from the top: the input gate of the memory cells opens at the marker (write) and is
# mostly lower on the distractor steps (the printed phase means above are the numbers, averaged over 512
# test sequences); the forget gate stays near 1 while the value is held -- it may dip at the marker,
# erasing what was there before the new value is written; the output gate is the read access; and
# the cell state steps to a new level at $t^*$ and then stays roughly flat until the query.
#
# ## 3. The gradient highway
#
# The dynamical-systems lecture notes: along the cell state
# $\partial\mathcal L/\partial c_{t-1} = \partial\mathcal L/\partial c_t \odot f_t$ (plus the paths
# through $h$ and the gates). For a loss at the last step only,
# $\|\partial\mathcal L/\partial c_k\|$ against $T-k$ is the vanishing-gradient curve. We compute it
# with `jr.state_gradients` (zero probes added to the carry, ordinary `jax.grad`) for untrained cells
# reading zero-mean noise $x_t \sim \mathcal N(0, 1)$, loss $\mathcal L = \sum_b w^\top h_T$. For the
# LSTMs we look at the $c$ part of $\partial\mathcal L/\partial s_k$, for the others at $h$. Dashed:
# the direct-path prediction $\|\partial\mathcal L/\partial c_T \odot \prod_{j=k+1}^{T} f_j\|$ from the
# recomputed forget gates.

# %%
k_in, k_w, *k_cells = jax.random.split(jax.random.PRNGKey(7), 8)
xs_g = jax.random.normal(k_in, (T_GRAD, B_GRAD, 4))
w_read = jax.random.normal(k_w, (H_GRAD,)) / np.sqrt(H_GRAD)
loss_last = lambda ys: jnp.sum(ys[-1] @ w_read)
grad_cells = {
    "elman tanh": jr.elman(H_GRAD),
    "gru": jr.gru(H_GRAD),
    "lstm, forget_bias=0": jr.lstm(H_GRAD, forget_bias=0.0),
    "lstm, forget_bias=1": jr.lstm(H_GRAD, forget_bias=1.0),
    "lstm, forget_bias=3": jr.lstm(H_GRAD, forget_bias=3.0),
    "lstm1997 (CEC)": jr.lstm1997(H_GRAD),
}
flow, predicted = {}, {}
lstm_biases = {"lstm, forget_bias=0": 0.0, "lstm, forget_bias=1": 1.0, "lstm, forget_bias=3": 3.0}
for (name, cell), k in zip(grad_cells.items(), k_cells):
    if name in lstm_biases:  # the three LSTMs differ only in b_f: one vmapped call for all three
        if name != "lstm, forget_bias=0":
            continue
        base = cell.init(k, 4)
        ps = [shift_bias(base, slice(H_GRAD, 2 * H_GRAD), fb) for fb in lstm_biases.values()]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *ps)
        _, _, dL = jax.vmap(lambda p, cell=cell: jr.state_gradients(cell, p, xs_g, loss_last))(stacked)
        for j, n in enumerate(lstm_biases):
            g = dL.c[j]  # (T, B, H): the cell-state part of dL/ds_k
            flow[n] = np.asarray(jnp.linalg.norm(g, axis=-1).mean(-1))  # mean over the batch
            _, f_g, *_ = lstm_gates(ps[j], xs_g, cell.initial_carry(ps[j], (B_GRAD,)))
            # direct path from lag 1: dL/dc_k ~ dL/dc_{T-2} * prod_{j=k+1}^{T-2} f_j (reverse cumprod)
            f_g = f_g[:-1]
            tail = jnp.concatenate([jnp.cumprod(f_g[::-1], axis=0)[::-1][1:], jnp.ones_like(f_g[:1])])
            predicted[n] = np.asarray(jnp.linalg.norm(g[-2][None] * tail, axis=-1).mean(-1))  # k = 0..T-2
        continue
    p = cell.init(k, 4)
    _, _, dL_ds = jr.state_gradients(cell, p, xs_g, loss_last)
    g = dL_ds.c if isinstance(dL_ds, jr.LSTMCarry) else dL_ds  # (T, B, H)
    flow[name] = np.asarray(jnp.linalg.norm(g, axis=-1).mean(-1))

# lag 0 is left out: in the carry (h_T, c_T) the loss reads h_T, so dL/dc_T = 0 (c_T only feeds later steps)
lag = T_GRAD - 1 - np.arange(T_GRAD - 1)  # lags T-1 .. 1, k = 0 .. T-2
flow = {n: fl[:-1] for n, fl in flow.items()}
for name, fl in flow.items():
    print(f"{name:22s} ||dL/ds_k||: lag 1 {fl[-1]:.3g}, lag {lag[0]} {fl[0]:.3g}, ratio {fl[0] / fl[-1]:.3g}")
ratio = {n: fl[0] / fl[-1] for n, fl in flow.items()}
assert ratio["lstm, forget_bias=3"] > ratio["lstm, forget_bias=1"] > ratio["lstm, forget_bias=0"]
assert ratio["lstm1997 (CEC)"] > ratio["elman tanh"]

fig, ax = plt.subplots(figsize=(9, 4.8))
for name, fl in flow.items():
    (line,) = ax.plot(lag, fl, label=name)
    if name in predicted:
        ax.plot(lag, predicted[name], ls="--", color=line.get_color(), lw=1)
ax.plot([], [], "k--", lw=1, label="direct path from lag 1: ||dL/dc_(T-1) * prod f_j||")
ax.set_yscale("log")
ax.set(
    title=f"Gradient highway: error reaching back from a loss at step T={T_GRAD} "
    f"(untrained cells, H={H_GRAD})",
    xlabel="lag T - k (time steps back from the loss)",
    ylabel="||dL/dc_k|| (LSTMs) or ||dL/dh_k|| (log scale)",
)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
print(f"notebook body ran in {time.perf_counter() - T0:.1f} s")

# %% [markdown]
# The Elman tanh RNN and the gated cells with their keep gate near $1/2$ (GRU, LSTM with forget bias
# 0) lose the error geometrically: each step back multiplies it by roughly $\bar f$ (or, for the Elman
# RNN, by $\|W_{hh}^\top \mathrm{diag}(\tanh')\|$). Raising the forget bias moves $f$ towards 1 and
# flattens the curve. The dashed direct-path products $\prod f_j$ show the same ordering, but the
# measured error decays more slowly than $\prod f_j$ alone: part of it leaves the cell state through
# $h$, the gates and $W_{hh}$ and re-enters it later, so the direct path is the skeleton of the highway,
# not all of it. The 1997 CEC, whose self-connection is exactly 1, does not decay along $c$ at all (here
# it may even grow a little going back) -- at the price of experiment 1. Curves that end at the bottom
# of the plot have underflowed to exactly 0 in float32.
#
# ## What to take away
#
# * The 1997 LSTM's constant error carousel $c_t = c_{t-1} + i_t z_t$ carries error without decay, but
#   under a continuous input stream its state grows linearly and saturates $h(c)$ (Hochreiter &
#   Schmidhuber 1997).
# * The forget gate makes the memory a leaky sum, bounded by $\max|i\tilde c|/(1 - f_{\max})$; its bias
#   sets the memory time scale $\approx 1/(1 - f)$ -- a trade-off between remembering and staying bounded.
# * Trained, the gates behave as the Politecnico di Milano lecture describes them: the input gate opens
#   to write, the forget gate holds (and can erase), the output gate reads. GRU and MGU do the same
#   with fewer gates once their update gate starts near "keep".
# * The gradient highway of the dynamical-systems lecture notes is $\prod f_j$: with $f$ near 1 the
#   error from a late loss reaches early steps; an Elman tanh RNN or a gate near $1/2$ loses it geometrically.
