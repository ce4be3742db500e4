"""A small demo: an LSTM and a tanh RNN on the adding problem (Le et al. / Arjovsky et al. variant).

Each input step is a pair (value ~ U[0, 1], marker); exactly two markers are 1, one in each half of
the sequence, and the target is the sum of the two marked values. Predicting the constant 1 gives the
baseline mean squared error ``Var(U1 + U2) = 1/6 ~ 0.167``. The LSTM learns to carry the marked
values across the sequence; the tanh RNN, with the same budget, tends to stay near the baseline.

    python -m experiments.demo --steps 600 --length 50

(The full experiment suite with CLI, checkpoints and plots lives in ``experiments/``.)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import jaxrnn as jr


def adding_batch(key, batch: int, length: int):
    """``xs (T, B, 2)``, ``targets (B,)``: values U[0,1]; one marker in each half of the sequence."""
    k_v, k_1, k_2 = jax.random.split(key, 3)
    values = jax.random.uniform(k_v, (length, batch))
    half = length // 2
    first = jax.random.randint(k_1, (batch,), 0, half)
    second = jax.random.randint(k_2, (batch,), half, length)
    t = jnp.arange(length)[:, None]
    markers = ((t == first) | (t == second)).astype(jnp.float32)
    targets = jnp.sum(values * markers, axis=0)
    return jnp.stack([values, markers], axis=-1), targets


def train(cell, *, steps: int, length: int, batch: int, lr: float, seed: int, log_every: int):
    key = jax.random.PRNGKey(seed)
    k_cell, k_out, key = jax.random.split(key, 3)
    params = {"cell": cell.init(k_cell, 2), "w": 0.1 * jax.random.normal(k_out, (cell_width(cell), 1))}
    params["b"] = jnp.ones((1,))  # start at the baseline prediction
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    state = opt.init(params)

    def loss_fn(p, xs, y):
        final, _ = jr.unroll(cell, p["cell"], xs)
        pred = (cell.output(final) @ p["w"] + p["b"])[:, 0]
        return jnp.mean((pred - y) ** 2)

    @jax.jit
    def update(p, s, k):
        xs, y = adding_batch(k, batch, length)
        loss, g = jax.value_and_grad(loss_fn)(p, xs, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    history = []
    for i in range(1, steps + 1):
        key, k = jax.random.split(key)
        params, state, loss = update(params, state, k)
        if i % log_every == 0 or i == steps:
            history.append((i, float(loss)))
    xs, y = adding_batch(jax.random.PRNGKey(seed + 1000), 1000, length)
    return history, float(loss_fn(params, xs, y))


def cell_width(cell) -> int:
    params = cell.init(jax.random.PRNGKey(0), 2)
    return cell.output(cell.initial_carry(params, ())).shape[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--length", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"adding problem, T={args.length}: baseline MSE (predict 1) = {1 / 6:.3f}")
    for name, cell in [("lstm", jr.lstm(args.hidden)), ("tanh rnn", jr.elman(args.hidden, "tanh"))]:
        t0 = time.perf_counter()
        history, test_mse = train(
            cell,
            steps=args.steps,
            length=args.length,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
            log_every=max(args.steps // 6, 1),
        )
        curve = "  ".join(f"{i}:{loss:.3f}" for i, loss in history)
        print(f"{name:9s} train MSE by update  {curve}")
        print(f"{name:9s} held-out MSE {test_mse:.4f}   ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
