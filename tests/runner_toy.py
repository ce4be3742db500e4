"""A tiny experiment script for tests/test_runner.py: an Elman RNN regressing a sum of its inputs.

    python tests/runner_toy.py --preset quick --run-root /tmp/runs

Inputs ``x_t ~ N(0, 1)`` in 2 features, ``T = --length``; target ``0.5 * sum_t x_t[0]`` (task "sum")
or ``x_T[0]`` (task "last"), read out linearly from the final state. The environment variable
``RUNNER_TOY_DELAY`` (seconds) slows down each logged step, so that a test can kill the run midway.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxrnn as jr  # noqa: E402
from experiments import runner  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainConfig):
    hidden: int = runner.arg(4, "hidden units", min=1)
    length: int = runner.arg(5, "sequence length T", min=1)
    lr: float = runner.arg(0.05, "Adam learning rate")
    task: str = runner.arg("sum", "what to regress", choices=("sum", "last"))
    widths: tuple[int, ...] = runner.arg((), "unused; exercises tuple options")
    clip: float | None = runner.arg(None, "clip the global gradient norm to this ('none': no clipping)")
    evaluate: bool = runner.arg(True, "log held-out error, rho(W_hh) and Omega")
    devices: int = runner.arg(0, "use only the first N devices (0: all)", min=0)


PRESETS = {"quick": dict(steps=12, batch_size=8, log_every=2), "paper": dict(steps=10_000, batch_size=128)}

CELL_SIZE = 2


def build(config: Config):
    """The pure functions :func:`experiments.runner.train` needs."""
    cell = jr.elman(config.hidden)

    def sample_fn(key, batch=config.batch_size):
        xs = jax.random.normal(key, (config.length, batch, CELL_SIZE), jnp.float32)
        y = 0.5 * xs[..., 0].sum(0) if config.task == "sum" else xs[-1, :, 0]
        return {"xs": xs, "y": y}

    def init_fn(key):
        k_cell, k_out = jax.random.split(key)
        w = 0.1 * jax.random.normal(k_out, (config.hidden,), jnp.float32)
        return {"cell": cell.init(k_cell, CELL_SIZE), "w": w}

    def predict(params, xs):
        final, _ = jr.unroll(cell, params["cell"], xs)
        return cell.output(final) @ params["w"]

    def loss_fn(params, batch):
        err = predict(params, batch["xs"]) - batch["y"]
        return jnp.mean(err**2), {"error": jnp.mean(jnp.abs(err))}

    def eval_fn(params, key):
        batch = sample_fn(key, 16)
        last = lambda ys: jnp.mean((ys[-1] @ params["w"] - batch["y"]) ** 2)
        return {
            "eval_error": jnp.mean(jnp.abs(predict(params, batch["xs"]) - batch["y"])),
            "rho": jr.spectral_radius(params["cell"]["W_hh"]),
            "omega": jr.pascanu(cell, params["cell"], batch["xs"], last),
        }

    def flow_fn(params, key):
        batch = sample_fn(key, 16)
        last = lambda ys: jnp.mean((ys[-1] @ params["w"] - batch["y"]) ** 2)
        return jr.gradient_flow(cell, params["cell"], batch["xs"], last)

    opt = optax.adam(config.lr)
    if config.clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(config.clip), opt)
    return dict(
        init_fn=init_fn,
        loss_fn=loss_fn,
        sample_fn=sample_fn,
        optimizer=opt,
        eval_fn=eval_fn if config.evaluate else None,
        flow_fn=flow_fn if config.evaluate else None,
    )


def main(argv=None):
    config = runner.config_cli(Config, PRESETS, argv, name="toy", description=__doc__)
    delay = float(os.environ.get("RUNNER_TOY_DELAY", "0"))
    mesh = runner.make_mesh(jax.devices()[: config.devices] if config.devices else None)
    result = runner.train(
        config, name="toy", mesh=mesh, stop_fn=lambda row: bool(time.sleep(delay)), **build(config)
    )
    print(f"run_dir {result.run_dir} step {result.step}")
    return result


if __name__ == "__main__":
    runner.run_cli(main)
