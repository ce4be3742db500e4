"""Speed benchmark (issue 5): jaxrnn's LSTM and GRU against Flax linen, PyTorch and cuDNN, in one process.

One command::

    python -m experiments.bench                      # the full table on this machine (S, M, L)
    python -m experiments.bench --quick              # fewer warm-up calls, shapes S and L (a 2-core CPU)
    python -m experiments.bench --memory --parallel --json runs/bench.json
    python -m experiments.bench --no-speed --resets 0.1     # episode boundaries on the fused path
    python -m experiments.bench --no-speed --newton         # Newton's method parallel in time
    python -m experiments.bench --no-speed --bf16           # is bfloat16 compute faster here?
    python -m experiments.bench --no-speed --breakdown      # where the fused LSTM's time goes
    python -m experiments.bench --sweep --json runs/bench_gpu.json   # on a GPU: B 1-256, T 100-10,000

The command line follows :mod:`experiments.runner`'s conventions: a bad option (``--repeats 0``,
``--shapes Q``, an unknown option) is one line ``error: argument --repeats: must be >= 1; got 0 (see
--help)`` on stderr and exit status 2; numbers must be finite; ``--help`` lists the options.

What is measured, for each cell (``lstm``, ``gru``), shape and mode (``fwd``: the whole-sequence forward
pass; ``fwdbwd``: forward plus the BPTT gradient with respect to the weights and the inputs of the loss
``sum(ys * ct)`` with a fixed random cotangent ``ct``):

* ``jaxrnn``: ``jr.unroll(jr.lstm(H) / jr.gru(H), params, xs)`` under ``jax.jit`` -- the fused kernel of
  :mod:`jaxrnn.kernels` (each step's input projected inside the loop, a lean linear tangent scan whose
  transpose is the BPTT chain, the weight gradients one matrix product each); ``--fused both`` adds a
  ``fused=False`` row, the reference ``lax.scan`` that JAX differentiates, and ``--unroll 1,8`` a row
  ``jaxrnn(unroll=8)`` (``lax.scan``'s unroll factor: fewer loop iterations, a larger loop body);
* ``flax``: ``flax.linen.RNN(OptimizedLSTMCell(H) / GRUCell(H), time_major=True)`` under ``jax.jit``;
* ``torch`` (only when ``import torch`` works; torch is never a dependency): ``torch.nn.LSTM / GRU``,
  ``torch.no_grad()`` for ``fwd``, ``.backward(ct)`` for ``fwdbwd``, ``torch.set_num_threads(cores)``;
* ``cudnn`` (only on a GPU, LSTM only): ``jax.experimental.rnn.lstm`` (cuDNN) under ``jax.jit``, on
  the weights packed by :func:`jaxrnn.kernels.cudnn.cudnn_weights` (what ``unroll(backend="cudnn")``
  runs);
* ``jaxrnn(pallas)`` (only on a GPU): ``jr.unroll(..., backend="pallas")``, the persistent Pallas kernel.

All implementations compute the SAME function from the same weights: the jaxrnn parameters (random, biases
included) are converted with ``jaxrnn.interop.to_flax`` / ``to_torch``, all read the same time-major
``xs (T, B, D)`` (cuDNN the same array batch-major), and before any timing the outputs ``ys``, the input
gradients ``dL/dxs`` and the recurrent-weight gradients ``dL/dW_hh`` are checked to agree (max abs
difference, reported; an ``AssertionError`` above ``--atol``).

Timing: ``--warmup`` calls after the first, then the median wall time of ``--repeats`` (>= 10 by default)
calls, each ending in ``block_until_ready`` (torch: synchronous on CPU, ``torch.cuda.synchronize`` on a
GPU). The implementations of one (cell, shape, mode) are timed interleaved, one call of each per round, so
that a change of the machine's load during the measurement affects them alike. The JAX functions are
compiled ahead of time, ``jax.jit(f).lower(*args).compile()``, on their first call (in the agreement
check); the seconds that took are the compile time of the first call, ``compile_ms`` (with a persistent
compilation cache, ``JAX_COMPILATION_CACHE_DIR``, reported in the header, it can be a cache hit). The
first timed call is kept as ``first_call_ms``.

FLOP count (the useful matrix-product work, elementwise gate maths not counted): one forward pass of a
cell with ``G`` gate blocks (LSTM 4, GRU 3) is ``2 * B * T * (D + H) * G * H`` FLOPs (the input product
``(T*B, D) @ (D, G*H)`` plus ``T`` recurrent products ``(B, H) @ (H, G*H)``); forward plus backward counts
``3x`` that (the backward pass does two products of the same size per forward product: w.r.t. the
weights and w.r.t. the inputs / the state). ``GFLOP/s = count / median``. The machine's matrix-product
peak is measured on the same machine, in the same process: a jitted ``(B*T, D+H) @ (D+H, G*H)`` product
(and, with torch, the same product in torch); ``% peak`` is relative to the jax figure.

``--memory``: peak memory of BPTT (``fwdbwd``) at ``T = 10_000`` and ``100_000`` with and without
``remat=True`` (checkpointing in ``sqrt(T)`` segments), read from XLA's compiled memory analysis
(``jax.jit(f).lower(...).compile().memory_analysis()``: argument, output and temp bytes), not process RSS.
Nothing is executed, so ``T = 100_000`` only costs a compilation.

``--parallel``: the parallel-scan cells of ``jaxrnn.cells.parallel`` (minGRU, minLSTM, LRU; imported
lazily, skipped with a "not available" line when the module is missing) through ``jr.unroll`` with
``fused=True`` (the associative scan) and ``fused=False`` (their sequential ``lax.scan``), against the
sequential ``jr.lstm`` of the same width (its fused kernel and its reference scan), at
``T = 256, 1024, 4096``.

``--resets RATE``: forward and forward+backward at ``--resets-shape`` (default L) with resets
(``jr.unroll(..., resets=...)``, episode boundaries drawn at ``RATE`` per step and sequence) on the fused
path, against the same call without resets and against the reference ``lax.scan`` with the same resets
(the fused path and the reference are checked to agree first). Target (issue 17): fused with resets
within 15% of no resets.

``--bf16``: the LSTM's two matrix products (recurrent and input) in float32 and in bfloat16 with float32
accumulation, ``T`` recurrent products in a scan with the float32 state cast to bfloat16 before each
(what a mixed-precision kernel would run), the whole LSTM forward+backward in float32 (fused) and with
bfloat16 weights (the reference scan: the fused kernels decline bfloat16), and a prototype fused LSTM
kernel whose recurrent products (forward and BPTT loops) take bfloat16 operands, at ``--shapes``: whether
bfloat16 compute would pay on this device.

``--breakdown``: at ``--shapes``, the fused LSTM's forward and forward+backward timed interleaved with
scans that each do one part of its work: the forward loop's two products per step; the same with the
input projection done for all steps before the loop; the gate maths alone on given pre-activations; BPTT's
chain products ``dA_t @ W_hh^T`` reading ``W_hh``, and reading a transposed copy.

``--newton``: :func:`jaxrnn.parallel_newton` (Newton's method parallel in time, full and diagonal
Jacobians) against the sequential fused scan, LSTM and GRU at B8 D32 H32 and T = 128, 1024 (median ms,
iterations, the largest difference of the outputs), and the iterations an Elman RNN (H16, T = 256)
needs to converge as its recurrent gain grows from contracting (0.5) to chaotic (4).

Targets (issue 5; ratios measured in one run): on CPU, LSTM and GRU ``fwdbwd`` at least 2x faster than
Flax at S, M and L (``jaxrnn / flax <= 0.5``) and no slower than torch's CPU ``nn.LSTM`` / ``nn.GRU``
(``jaxrnn / torch <= 1.0``); on a GPU, within 1.3x of cuDNN at M (``jaxrnn / cudnn <= 1.3``). The script
prints which are met and which are not yet, with the numbers; it does not tune anything to pass.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn as jr
from experiments import runner
from jaxrnn import interop
from jaxrnn.kernels.cudnn import cudnn_weights

__all__ = ["SHAPES", "SWEEP", "flops", "main", "run"]

#: name -> (B batch, T steps, D input, H hidden). "tiny" is for the smoke test.
SHAPES = {
    "tiny": (2, 5, 3, 4),
    "S": (32, 100, 128, 256),
    "M": (64, 200, 256, 512),
    "L": (8, 500, 32, 128),
}
#: the accelerator sweep (issue 17, ``--sweep``): B = 1, 16, 256 by T = 100, 1000, 10,000 at D = H = 256,
#: named ``B<b>T<t>``. Meant for a GPU: on a 2-core CPU its largest shapes take minutes per call.
SWEEP = {f"B{B}T{T}": (B, T, 256, 256) for B in (1, 16, 256) for T in (100, 1000, 10_000)}
SHAPES.update(SWEEP)
GATES = {"lstm": 4, "gru": 3}
CELLS = {"lstm": lambda H: jr.lstm(H), "gru": lambda H: jr.gru(H, reset_after=True)}
MODES = ("fwd", "fwdbwd")
MEMORY_T = (10_000, 100_000)
PARALLEL_T = (256, 1024, 4096)
PARALLEL_CELLS = ("min_gru", "min_lstm", "lru")
QUICK = dict(shapes="S,L", warmup=1, memory_shape="L", parallel_width=64, parallel_batch=4)

DTYPE = jnp.float32


def flops(cell: str, B: int, T: int, D: int, H: int, mode: str) -> int:
    """Useful matrix-product FLOPs of one call: ``2 * B * T * (D + H) * G * H`` forward, ``x3`` fwd+bwd.

    Args:
      cell: ``"lstm"`` (``G = 4``) or ``"gru"`` (``G = 3``).
      B, T, D, H: batch, steps, input and hidden sizes.
      mode: ``"fwd"`` or ``"fwdbwd"``.
    """
    f = 2 * B * T * (D + H) * GATES[cell] * H
    return 3 * f if mode == "fwdbwd" else f


# --------------------------------------------------------------------------------------------------
# timing


def _block(x):
    return jax.block_until_ready(x)


def _stats(first: float, times: list) -> dict:
    return {
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "first_call_ms": 1e3 * first,
        "repeats": len(times),
    }


def _time(fn: Callable[[], object], warmup: int, repeats: int, sync: Callable = _block) -> dict:
    """First-call time, then ``warmup`` untimed calls, then the median of ``repeats`` timed calls (ms)."""
    return _time_many({"f": (fn, sync)}, warmup, repeats)["f"]


def _time_many(fns: dict, warmup: int, repeats: int) -> dict:
    """:func:`_time` for several ``name: (fn, sync)`` at once, interleaved: each round calls every function
    once (in an order rotated from round to round), so that a change in the machine's load during the
    measurement hits all of them alike and their ratios stay fair."""
    names = list(fns)
    first, times = {}, {n: [] for n in names}
    for n in names:
        fn, sync = fns[n]
        t0 = time.perf_counter()
        sync(fn())
        first[n] = time.perf_counter() - t0
    for _ in range(warmup):
        for n in names:
            fn, sync = fns[n]
            sync(fn())
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn, sync = fns[n]
            t0 = time.perf_counter()
            sync(fn())
            times[n].append(time.perf_counter() - t0)
    return {n: _stats(first[n], times[n]) for n in names}


def _try_torch():
    try:
        import torch
    except Exception:  # noqa: BLE001 -- torch is optional; any import failure means "absent"
        return None
    return torch


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


# --------------------------------------------------------------------------------------------------
# the implementations: each gives fwd() -> (ys (T,B,H), h_T) and fwdbwd() -> (ys, dxs, dW_hh (H, G*H))


def _params(kind: str, key, D: int, H: int) -> dict:
    """jaxrnn params with random (not zero) biases, so that the agreement check covers every bias."""
    cell = CELLS[kind](H)
    params = cell.init(key, D, DTYPE)
    keys = jax.random.split(jax.random.fold_in(key, 1), 2)
    params["b"] = 0.1 * jax.random.normal(keys[0], params["b"].shape, DTYPE)
    if "b_hn" in params:
        params["b_hn"] = 0.1 * jax.random.normal(keys[1], params["b_hn"].shape, DTYPE)
    return params


def _jax_impl(apply: Callable, args: tuple, ct) -> dict:
    """``apply(weights, xs) -> (ys (T,B,H), final_h)``; ``args = (weights, xs)``; jitted fwd and fwdbwd."""

    def loss(w, xs):
        ys, _ = apply(w, xs)
        return jnp.sum(ys * ct)

    fns = {"fwd": apply, "fwdbwd": jax.value_and_grad(loss, argnums=(0, 1))}
    return _jitted(fns, args)


def _jitted(fns: dict, args: tuple) -> dict:
    """``fwd`` / ``fwdbwd`` callables on ``args``, each compiled ahead of time on first use by
    ``jax.jit(f).lower(*args).compile()``; the seconds that took are kept in ``compile_s[mode]`` (the
    compile time of the first call: tracing, lowering and XLA compilation)."""
    compiled, compile_s = {}, {}

    def call(m):
        if m not in compiled:
            t0 = time.perf_counter()
            compiled[m] = jax.jit(fns[m]).lower(*args).compile()
            compile_s[m] = time.perf_counter() - t0
        return compiled[m](*args)

    out = {m: (lambda m=m: call(m)) for m in fns}
    out["compile_s"] = compile_s
    out["sync"] = _block
    return out


def _jaxrnn(kind, params, xs, ct, fused=True, unroll=1, backend="auto"):
    cell = CELLS[kind](params["W_hh"].shape[0])
    impl = _unroll_impl(cell, params, xs, ct, fused=fused, unroll=unroll, backend=backend)
    impl["ys"] = lambda: impl["fwd"]()[0]
    impl["grads"] = lambda: _grads(impl["fwdbwd"](), lambda g: g["W_hh"])
    return impl


def _grads(out, get_whh):
    _, (gw, gx) = out
    return np.asarray(gx), np.asarray(get_whh(gw))


def _flax(kind, params, xs, ct):
    import flax.linen as nn

    H = params["W_hh"].shape[0]
    cell = nn.OptimizedLSTMCell(H, param_dtype=DTYPE) if kind == "lstm" else nn.GRUCell(H, param_dtype=DTYPE)
    rnn = nn.RNN(cell, time_major=True, return_carry=True)
    variables = {"params": {"cell": jax.tree.map(jnp.asarray, interop.to_flax(params, kind))}}

    def apply(v, xs):
        carry, ys = rnn.apply(v, xs)
        return ys, (carry[1] if kind == "lstm" else carry)

    impl = _jax_impl(apply, (variables, xs), ct)
    impl["ys"] = lambda: impl["fwd"]()[0]
    impl["grads"] = lambda: _grads(
        impl["fwdbwd"](), lambda g: interop.from_flax(jax.tree.map(np.asarray, g), kind)["W_hh"]
    )
    return impl


def _cudnn(kind, params, xs, ct):
    """jax.experimental.rnn.lstm (cuDNN on a GPU); batch-major input ``(B, T, D)``, LSTM only."""
    from jax.experimental import rnn as jrnn

    T, B, D = xs.shape
    H = params["W_hh"].shape[0]
    flat = cudnn_weights(params).astype(DTYPE)  # the packing unroll(backend="cudnn") uses
    xs_bt = jnp.swapaxes(xs, 0, 1)
    ct_bt = jnp.swapaxes(ct, 0, 1)
    zeros = jnp.zeros((1, B, H), DTYPE)
    lengths = jnp.full((B,), T, jnp.int32)

    def apply(w, x):
        y, h, _ = jrnn.lstm(x, zeros, zeros, w, lengths, D, H, 1, 0.0, False)
        return y, h[0]

    def loss(w, x):
        return jnp.sum(apply(w, x)[0] * ct_bt)

    impl = _jitted({"fwd": apply, "fwdbwd": jax.value_and_grad(loss, argnums=(0, 1))}, (flat, xs_bt))

    def grads():
        _, (gw, gx) = impl["fwdbwd"]()
        g_hh = np.asarray(gw[4 * H * D : 4 * H * (D + H)]).reshape(4 * H, H)
        return np.swapaxes(np.asarray(gx), 0, 1), g_hh.T

    impl["ys"] = lambda: jnp.swapaxes(impl["fwd"]()[0], 0, 1)
    impl["grads"] = grads
    return impl


def _torch(kind, params, xs, ct, torch):
    dev = "cuda" if (_on_gpu() and torch.cuda.is_available()) else "cpu"
    T, B, D = xs.shape
    H = params["W_hh"].shape[0]
    mod = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(D, H)
    sd = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in interop.to_torch(params, kind).items()}
    mod.load_state_dict(sd)
    mod = mod.to(dev)
    x = torch.from_numpy(np.array(xs, np.float32)).to(dev)
    x_g = x.clone().requires_grad_(True)
    c = torch.from_numpy(np.array(ct, np.float32)).to(dev)
    sync = (lambda _: torch.cuda.synchronize()) if dev == "cuda" else (lambda _: None)

    def fwd():
        with torch.no_grad():
            return mod(x)

    def fwdbwd():
        for p in mod.parameters():
            p.grad = None
        x_g.grad = None
        ys, _ = mod(x_g)
        ys.backward(c)
        return ys

    def grads():
        fwdbwd()
        g_sd = {"weight_ih_l0": mod.weight_ih_l0.grad, "weight_hh_l0": mod.weight_hh_l0.grad}
        g_sd = {k: v.detach().cpu().numpy() for k, v in g_sd.items()}
        g_sd.update(
            {k: np.zeros((GATES[kind] * H,), np.float32) for k in ("bias_ih_l0", "bias_hh_l0")}
        )  # only the weights' gradients are compared (the biases of torch are doubled)
        return x_g.grad.cpu().numpy(), interop.from_torch(g_sd, kind)["W_hh"]

    return {
        "fwd": fwd,
        "fwdbwd": fwdbwd,
        "sync": sync,
        "ys": lambda: fwd()[0].cpu().numpy(),
        "grads": grads,
        "device": dev,
    }


def _implementations(kind, params, xs, ct, fused: str, torch, unrolls: Sequence[int] = (1,)) -> dict:
    """The implementations of one (cell, shape): ``jaxrnn`` (the default path: ``unroll=1``, fused unless
    ``fused="off"``) first, then its variants (``fused=False``; ``unroll=u`` for each ``u > 1`` of
    ``unrolls``, on the default path), Flax, torch and cuDNN."""
    impls = {}
    if fused in ("on", "both"):
        impls["jaxrnn"] = _jaxrnn(kind, params, xs, ct, fused=True)
    if fused in ("off", "both"):
        impls["jaxrnn" if fused == "off" else "jaxrnn(fused=False)"] = _jaxrnn(kind, params, xs, ct, False)
    for u in unrolls:
        if u > 1:
            impls[f"jaxrnn(unroll={u})"] = _jaxrnn(kind, params, xs, ct, fused != "off", unroll=u)
    impls["flax"] = _flax(kind, params, xs, ct)
    if torch is not None:
        impls["torch"] = _torch(kind, params, xs, ct, torch)
    if _on_gpu():  # the persistent Pallas kernel (Triton); interpret mode on a CPU would time nothing useful
        impls["jaxrnn(pallas)"] = _jaxrnn(kind, params, xs, ct, backend="pallas")
    if _on_gpu() and kind == "lstm":
        impls["cudnn"] = _cudnn(kind, params, xs, ct)
    return impls


def _agreement(impls: dict, atol: float) -> dict:
    """Max abs differences of ys, dL/dxs and dL/dW_hh of every implementation against jaxrnn's."""
    names = list(impls)
    ref = names[0]
    ys0 = np.asarray(impls[ref]["ys"])
    gx0, gw0 = impls[ref]["grads"]()
    scale = max(1.0, float(np.max(np.abs(gw0))))
    out = {}
    for name in names[1:]:
        ys = np.asarray(impls[name]["ys"])
        gx, gw = impls[name]["grads"]()
        d = {
            "ys": float(np.max(np.abs(ys - ys0))),
            "dxs": float(np.max(np.abs(gx - gx0))),
            "dW_hh": float(np.max(np.abs(gw - gw0))) / scale,  # relative to the largest entry
        }
        out[name] = d
        bad = {k: v for k, v in d.items() if not v <= atol}
        if bad:
            raise AssertionError(
                f"bench: {name} does not compute the same function as {ref} (max abs differences "
                f"{bad} > atol={atol}); timing them against each other would be meaningless"
            )
    return out


def _matmul_peak(B, T, D, H, G, warmup, repeats, torch) -> dict:
    """GFLOP/s of a jitted ``(B*T, D+H) @ (D+H, G*H)`` float32 product (and of the same in torch)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    a = jax.random.normal(k1, (B * T, D + H), DTYPE)
    b = jax.random.normal(k2, (D + H, G * H), DTYPE)
    mm = jax.jit(jnp.matmul)
    n = 2 * B * T * (D + H) * G * H
    out = {"jax_gflops": n / _time(lambda: mm(a, b), warmup, repeats)["median_ms"] / 1e6}
    if torch is not None:
        dev = "cuda" if (_on_gpu() and torch.cuda.is_available()) else "cpu"
        ta, tb = torch.from_numpy(np.array(a)).to(dev), torch.from_numpy(np.array(b)).to(dev)
        sync = (lambda _: torch.cuda.synchronize()) if dev == "cuda" else (lambda _: None)
        with torch.no_grad():
            out["torch_gflops"] = n / _time(lambda: ta @ tb, warmup, repeats, sync)["median_ms"] / 1e6
    return out


# --------------------------------------------------------------------------------------------------
# sections


def speed_section(cfg, torch, log) -> tuple[list, list, dict]:
    rows, agreements, peaks = [], [], {}
    for shape in cfg.shapes:
        B, T, D, H = SHAPES[shape]
        for kind in cfg.cells:
            key = jax.random.PRNGKey(0)
            k_p, k_x, k_c = jax.random.split(key, 3)
            params = _params(kind, k_p, D, H)
            xs = jax.random.normal(k_x, (T, B, D), DTYPE)
            ct = jax.random.normal(k_c, (T, B, H), DTYPE)
            impls = _implementations(kind, params, xs, ct, cfg.fused, torch, cfg.unroll)
            for impl in impls.values():  # evaluate the lazy outputs once
                impl["ys"] = impl["ys"]()
            agree = _agreement(impls, cfg.atol)
            agreements.append({"shape": shape, "cell": kind, "against": "jaxrnn", "max_abs_diff": agree})
            log(f"  {shape} {kind}: outputs agree ({_fmt_agree(agree)})")
            G = GATES[kind]
            pk = (shape, G)
            if pk not in peaks:
                peaks[pk] = _matmul_peak(B, T, D, H, G, cfg.warmup, cfg.repeats, torch)
            for mode in cfg.modes:
                timed = _time_many(
                    {n: (i[mode], i["sync"]) for n, i in impls.items()}, cfg.warmup, cfg.repeats
                )
                for name, impl in impls.items():
                    r = timed[name]
                    compile_s = impl.get("compile_s", {}).get(mode)
                    r["compile_ms"] = None if compile_s is None else 1e3 * compile_s
                    n = flops(kind, B, T, D, H, mode)
                    r.update(
                        shape=shape, B=B, T=T, D=D, H=H, cell=kind, mode=mode, impl=name,
                        flops=n, gflops=n / r["median_ms"] / 1e6, peak_gflops=peaks[pk]["jax_gflops"],
                    )  # fmt: skip
                    r["pct_peak"] = 100 * r["gflops"] / r["peak_gflops"]
                    rows.append(r)
                    log(f"    {mode:6s} {name:20s} {r['median_ms']:9.2f} ms")
    peaks_json = [
        {"shape": s, "gates": g, **v} for (s, g), v in sorted(peaks.items(), key=lambda kv: str(kv[0]))
    ]
    return rows, agreements, peaks_json


def memory_section(cfg, log) -> list:
    """Compiled memory analysis of BPTT at long T, with and without remat (nothing is executed)."""
    B, _, D, H = SHAPES[cfg.memory_shape]
    out = []
    for kind in cfg.cells:
        params = _params(kind, jax.random.PRNGKey(0), D, H)
        cell = CELLS[kind](H)
        for T in cfg.memory_T:
            xs = jax.ShapeDtypeStruct((T, B, D), DTYPE)
            for remat in (False, True):

                def loss(p, xs, remat=remat, cell=cell):
                    return jnp.sum(jr.unroll(cell, p, xs, remat=remat)[1])

                t0 = time.perf_counter()
                row = {"cell": kind, "T": T, "B": B, "D": D, "H": H, "remat": remat}
                try:
                    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
                    ma = compiled.memory_analysis()
                    row["compile_s"] = time.perf_counter() - t0
                    if ma is None:
                        row["skipped"] = "memory_analysis() returned None on this backend"
                    else:
                        for f in ("temp", "argument", "output", "alias"):
                            row[f"{f}_bytes"] = int(getattr(ma, f"{f}_size_in_bytes", 0) or 0)
                        row["peak_bytes"] = (
                            row["temp_bytes"]
                            + row["argument_bytes"]
                            + row["output_bytes"]
                            - row["alias_bytes"]
                        )
                except Exception as e:  # noqa: BLE001 -- report, do not crash the whole benchmark
                    row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                # the residuals BPTT must keep without remat: per step the state and the gate activations
                row["estimate_no_remat_bytes"] = T * B * (GATES[kind] + 2) * H * 4
                out.append(row)
                log(f"  memory {kind} T={T} remat={remat}: {_mb(row.get('peak_bytes'))}")
    return out


def parallel_section(cfg, log) -> tuple[list, str | None]:
    """Parallel-scan cells (fused associative scan and their sequential scan) against a sequential LSTM."""
    try:
        par = importlib.import_module("jaxrnn.cells.parallel")
    except Exception as e:  # noqa: BLE001 -- the module may not exist yet
        return [], f"jaxrnn.cells.parallel not available ({type(e).__name__}: {e})"
    B, H = cfg.parallel_batch, cfg.parallel_width
    D = H
    rows = []
    candidates = [("lstm", jr.lstm, (True, False))] + [
        (n, getattr(par, n, None), (True, False)) for n in PARALLEL_CELLS
    ]
    for T in cfg.parallel_T:
        k_x, k_c = jax.random.split(jax.random.PRNGKey(T))
        xs = jax.random.normal(k_x, (T, B, D), DTYPE)
        for name, factory, fused_opts in candidates:
            if factory is None:
                rows.append({"cell": name, "T": T, "skipped": "not available in jaxrnn.cells.parallel"})
                continue
            try:
                cell = factory(H)
                params = cell.init(jax.random.PRNGKey(0), D, DTYPE)
            except Exception as e:  # noqa: BLE001
                rows.append({"cell": name, "T": T, "skipped": f"{type(e).__name__}: {e}"})
                continue
            ys0 = jax.eval_shape(lambda p, x, c=cell: jr.unroll(c, p, x)[1], params, xs)
            ct = jax.random.normal(k_c, ys0.shape, jnp.float32).astype(ys0.dtype)
            for fused in fused_opts:

                def apply(p, x, c=cell, f=fused):
                    final, ys = jr.unroll(c, p, x, fused=f)
                    return ys, final

                impl = _jax_impl(apply, (params, xs), ct)
                for mode in cfg.modes:
                    r = _time(impl[mode], cfg.warmup, cfg.repeats)
                    r["compile_ms"] = 1e3 * impl["compile_s"][mode]
                    if not fused or cell.kernel is None:
                        scan = "sequential"
                    else:
                        scan = "associative" if name in PARALLEL_CELLS else "fused sequential"
                    r.update(cell=name, T=T, B=B, D=D, H=H, mode=mode, fused=fused, scan=scan)
                    rows.append(r)
                    log(f"  parallel T={T} {name} fused={fused} {mode}: {r['median_ms']:.2f} ms")
    return rows, None


def _unroll_impl(cell, params, xs, ct, **unroll_kwargs) -> dict:
    """Jitted ``fwd`` / ``fwdbwd`` of ``jr.unroll(cell, params, xs, **unroll_kwargs)``."""

    def apply(p, xs):
        final, ys = jr.unroll(cell, p, xs, **unroll_kwargs)
        return ys, cell.output(final)

    return _jax_impl(apply, (params, xs), ct)


def resets_section(cfg, log) -> list:
    """Forward and forward+backward with ``resets`` (episode boundaries at rate ``cfg.resets``, drawn
    per step and sequence) against the same call without resets, on the fused path; and the reference
    ``lax.scan`` with the same resets (what ``unroll`` ran before the kernels took resets). The two
    paths with resets are checked to agree before timing."""
    B, T, D, H = SHAPES[cfg.resets_shape]
    out = []
    for kind in cfg.cells:
        k_p, k_x, k_c, k_r = jax.random.split(jax.random.PRNGKey(0), 4)
        params = _params(kind, k_p, D, H)
        xs = jax.random.normal(k_x, (T, B, D), DTYPE)
        ct = jax.random.normal(k_c, (T, B, H), DTYPE)
        resets = jax.random.bernoulli(k_r, cfg.resets, (T, B))
        cell = CELLS[kind](H)
        impls = {
            name: _unroll_impl(cell, params, xs, ct, resets=r, fused=fused)
            for name, r, fused in (
                ("none", None, True),
                ("fused", resets, True),
                ("reference", resets, False),
            )
        }
        (y_f, _), (y_r, _) = impls["fused"]["fwd"](), impls["reference"]["fwd"]()
        (_, (g_f, x_f)), (_, (g_r, x_r)) = impls["fused"]["fwdbwd"](), impls["reference"]["fwdbwd"]()
        diff = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in ((y_f, y_r), (x_f, x_r), (g_f["W_hh"], g_r["W_hh"]))
        )
        if not diff <= cfg.atol:
            raise AssertionError(
                f"bench: {kind} with resets: the fused path and the reference scan differ by {diff} > "
                f"atol={cfg.atol}"
            )
        for mode in cfg.modes:
            timed = _time_many({n: (i[mode], i["sync"]) for n, i in impls.items()}, cfg.warmup, cfg.repeats)
            row = {"cell": kind, "mode": mode, "B": B, "T": T, "D": D, "H": H, "rate": cfg.resets,
                   "resets_drawn": int(resets.sum()), "max_abs_diff": diff}  # fmt: skip
            row.update({f"{n}_ms": timed[n]["median_ms"] for n in impls})
            row["fused_over_none"] = row["fused_ms"] / row["none_ms"]
            row["reference_over_none"] = row["reference_ms"] / row["none_ms"]
            out.append(row)
            log(
                f"  resets {kind} {mode}: none {row['none_ms']:.2f} ms, fused {row['fused_ms']:.2f} ms "
                f"({row['fused_over_none']:.2f}x), reference scan {row['reference_ms']:.2f} ms"
            )
    return out


def newton_section(cfg, log) -> tuple[list, list]:
    """Newton's method parallel in time (:func:`jaxrnn.parallel_newton`, DEER full Jacobians and
    quasi-DEER diagonal ones) against the sequential fused scan, and its iterations to converge on an
    Elman RNN as the recurrent gain grows from contracting to chaotic."""
    B, D, H = cfg.newton_batch, 32, cfg.newton_width
    rows, convergence = [], []
    for T in cfg.newton_T:
        k_p, k_x, k_c = jax.random.split(jax.random.PRNGKey(T), 3)
        xs = jax.random.normal(k_x, (T, B, D), DTYPE)
        ct = jax.random.normal(k_c, (T, B, H), DTYPE)
        for kind in cfg.cells:
            cell = CELLS[kind](H)
            params = _params(kind, k_p, D, H)
            impls = {"sequential": _unroll_impl(cell, params, xs, ct)}
            info = {}
            for jac in ("full", "diagonal"):
                kw = dict(jacobian=jac)
                impls[f"newton_{jac}"] = _jax_impl(
                    lambda p, x, c=cell, kw=kw: _newton_apply(c, p, x, **kw), (params, xs), ct
                )
                info[jac] = jax.jit(lambda p, x, c=cell, kw=kw: jr.parallel_newton(c, p, x, **kw)[2])(
                    params, xs
                )
            ys0 = impls["sequential"]["fwd"]()[0]
            for mode in cfg.modes:
                timed = _time_many(
                    {n: (i[mode], i["sync"]) for n, i in impls.items()}, cfg.warmup, cfg.repeats
                )
                for name, r in timed.items():
                    jac = name.removeprefix("newton_") if name != "sequential" else None
                    r.update(cell=kind, T=T, B=B, D=D, H=H, mode=mode, impl=name)
                    if jac:
                        r["iterations"] = int(info[jac].iterations)
                        r["converged"] = bool(info[jac].converged)
                        r["max_abs_diff"] = float(jnp.max(jnp.abs(impls[name]["fwd"]()[0] - ys0)))
                    rows.append(r)
                    log(f"  newton T={T} {kind} {mode} {name}: {r['median_ms']:.2f} ms")
    # convergence against the recurrent gain: orthogonal W_hh times g (spectral radius g)
    cell = jr.elman(16)
    T = cfg.newton_convergence_T
    params = cell.init(jax.random.PRNGKey(0), 4, DTYPE)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, 4), DTYPE)
    for gain in cfg.newton_gains:
        p = {**params, "W_hh": gain * params["W_hh"]}
        lyap = float(jr.lyapunov_spectrum(cell, p, xs, k=1)[0])
        row = {"cell": "elman", "H": 16, "T": T, "gain": gain, "lyapunov_max": lyap}
        for jac in ("full", "diagonal"):
            info = jax.jit(
                lambda p, j=jac: jr.parallel_newton(cell, p, xs, jacobian=j, max_iters=T, fallback=False)[2]
            )(p)
            row[f"iterations_{jac}"] = int(info.iterations)
            row[f"converged_{jac}"] = bool(info.converged)
        convergence.append(row)
        log(f"  newton convergence gain {gain}: {row}")
    return rows, convergence


def _newton_apply(cell, params, xs, **kw):
    final, ys, _ = jr.parallel_newton(cell, params, xs, **kw)
    return ys, cell.output(final)


def bf16_section(cfg, log) -> list:
    """Whether bfloat16 compute (float32 accumulation) would be faster on this device: the two matrix
    products of an LSTM step -- the recurrent ``(B, H) @ (H, 4H)`` and the input projection
    ``(T B, D) @ (D, 4H)`` -- in float32 and in bfloat16 with ``preferred_element_type=float32``; and the
    whole LSTM forward+backward, float32 on the fused kernel against bfloat16 weights (which the fused
    kernels decline, so the reference scan)."""
    rows = []
    f32 = jax.jit(jnp.matmul)
    bf = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    for shape in cfg.shapes:
        B, T, D, H = SHAPES[shape]
        k = jax.random.split(jax.random.PRNGKey(0), 4)
        products = {
            "recurrent (B,H)@(H,4H)": (jax.random.normal(k[0], (B, H)), jax.random.normal(k[1], (H, 4 * H))),
            "input (TB,D)@(D,4H)": (jax.random.normal(k[2], (T * B, D)), jax.random.normal(k[3], (D, 4 * H))),
        }
        for what, (a, b) in products.items():
            a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
            fns = {
                "float32": (lambda a=a, b=b: f32(a, b), _block),
                "bfloat16": (lambda a=a16, b=b16: bf(a, b), _block),
            }
            timed = _time_many(fns, cfg.warmup, cfg.repeats)
            rows.append(
                {"shape": shape, "what": what, **{f"{n}_ms": r["median_ms"] for n, r in timed.items()}}
            )
        # what a mixed kernel would run: T recurrent products in a scan, the float32 state cast to the
        # operand dtype each step (bf16 operands, f32 accumulation and state)
        W = products["recurrent (B,H)@(H,4H)"][1] / H**0.5
        W16, h0 = W.astype(jnp.bfloat16), jnp.zeros((B, H), DTYPE)
        fns = {
            "float32": (lambda W=W, h0=h0, T=T: _recurrent_loop(W, h0, T), _block),
            "bfloat16": (lambda W=W16, h0=h0, T=T: _recurrent_loop(W, h0, T), _block),
        }
        timed = _time_many(fns, cfg.warmup, cfg.repeats)
        rows.append({"shape": shape, "what": f"recurrent loop, {T} steps in a scan",
                     **{f"{n}_ms": r["median_ms"] for n, r in timed.items()}})  # fmt: skip
        params = _params("lstm", jax.random.PRNGKey(1), D, H)
        xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, D), DTYPE)
        ct = jax.random.normal(jax.random.PRNGKey(3), (T, B, H), DTYPE)
        cell = CELLS["lstm"](H)
        p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        impls = {
            "float32": _unroll_impl(cell, params, xs, ct),
            "bfloat16": _unroll_impl(cell, p16, xs.astype(jnp.bfloat16), ct.astype(jnp.bfloat16)),
        }
        timed = _time_many({n: (i["fwdbwd"], i["sync"]) for n, i in impls.items()}, cfg.warmup, cfg.repeats)
        rows.append({"shape": shape, "what": "LSTM fwd+bwd (bf16: reference scan)",
                     **{f"{n}_ms": r["median_ms"] for n, r in timed.items()}})  # fmt: skip
        # a mixed-precision fused kernel (a prototype, not in jaxrnn): bf16 recurrent products in the
        # forward and BPTT loops, float32 state, gates and weights
        w = {k: params[k] for k in ("W_xh", "b", "W_hh")}
        s0 = jr.LSTMCarry(h=jnp.zeros((B, H), DTYPE), c=jnp.zeros((B, H), DTYPE))
        for mode in MODES:
            fns = {
                n: (functools.partial(_mixed_lstm, w, s0, xs, ct, mode == "fwdbwd", n == "bfloat16"), _block)
                for n in ("float32", "bfloat16")
            }
            # outputs, and with fwdbwd the gradients too: the largest difference relative to each array's
            # largest float32 entry, over all of them
            rel = lambda u, v: jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(u))  # noqa: E731
            diff = float(max(jax.tree.leaves(jax.tree.map(rel, fns["float32"][0](), fns["bfloat16"][0]()))))
            timed = _time_many(fns, cfg.warmup, cfg.repeats)
            what = f"LSTM {'fwd' if mode == 'fwd' else 'fwd+bwd'}, fused, bf16 recurrent products (prototype)"
            rows.append({"shape": shape, "what": what, "max_rel_diff": diff,
                         **{f"{n}_ms": r["median_ms"] for n, r in timed.items()}})  # fmt: skip
        for r in rows[-6:]:
            r["bf16_over_f32"] = r["bfloat16_ms"] / r["float32_ms"]
            log(f"  bf16 {shape} {r['what']}: f32 {r['float32_ms']:.3f} ms, bf16 {r['bfloat16_ms']:.3f} ms")
    return rows


def breakdown_section(cfg, log) -> list:
    """Where the fused LSTM's time goes on this device, at ``--shapes``: scans that do one part of the
    work each, timed interleaved with the whole kernel (forward, and forward+backward)."""
    rows = []
    for shape in cfg.shapes:
        B, T, D, H = SHAPES[shape]
        params = _params("lstm", jax.random.PRNGKey(1), D, H)
        W_xh, W_hh, b = params["W_xh"], params["W_hh"], params["b"]
        k = jax.random.split(jax.random.PRNGKey(2), 3)
        xs = jax.random.normal(k[0], (T, B, D), DTYPE)
        ct = jax.random.normal(k[1], (T, B, H), DTYPE)
        a = jax.random.normal(k[2], (T, B, 4 * H), DTYPE)
        impl = _unroll_impl(CELLS["lstm"](H), params, xs, ct)
        h0 = jnp.zeros((B, H), DTYPE)
        P = functools.partial
        parts = {
            "fused LSTM, forward": impl["fwd"],
            "products of the forward loop: x_t @ W_xh + h @ W_hh": P(_loop_products, W_xh, W_hh, b, xs, h0),
            "input projection before the loop, then h @ W_hh": P(_loop_hoisted, W_xh, W_hh, b, xs, h0),
            "gate maths of the forward loop (pre-activations given)": P(_loop_gates, a, h0),
            "fused LSTM, forward+backward": impl["fwdbwd"],
            "products of the BPTT loop: dA_t @ W_hh^T": P(_loop_bptt, W_hh, a, h0),
            "the same with W_hh^T stored transposed": P(_loop_bptt_t, W_hh.T.copy(), a, h0),
        }
        timed = _time_many({n: (f, _block) for n, f in parts.items()}, cfg.warmup, cfg.repeats)
        for n, r in timed.items():
            rows.append(
                {"shape": shape, "B": B, "T": T, "D": D, "H": H, "what": n, "median_ms": r["median_ms"]}
            )
            log(f"  breakdown {shape} {n}: {r['median_ms']:.2f} ms")
    return rows


@jax.jit
def _loop_products(W_xh, W_hh, b, xs, h0):
    """The forward loop's two products per step, and a ``tanh`` to feed the state back."""
    H = h0.shape[-1]
    return jax.lax.scan(lambda h, x: (jnp.tanh((x @ W_xh + b + h @ W_hh)[:, :H]), None), h0, xs)[0]


@jax.jit
def _loop_hoisted(W_xh, W_hh, b, xs, h0):
    """:func:`_loop_products` with the input projection done for all steps before the loop."""
    H = h0.shape[-1]
    return jax.lax.scan(lambda h, px: (jnp.tanh((px + h @ W_hh)[:, :H]), None), h0, xs @ W_xh + b)[0]


@jax.jit
def _loop_gates(a, c0):
    """The LSTM's gate maths per step on given pre-activations ``a (T, B, 4H)``: no product."""

    def body(c, a_t):
        i, f, g, o = jnp.split(a_t, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return c, jax.nn.sigmoid(o) * jnp.tanh(c)

    return jax.lax.scan(body, c0, a)[1]


@jax.jit
def _loop_bptt(W_hh, dA, dh0):
    """BPTT's chain products, ``dh_{t-1} = (dA_t + dh_t) @ W_hh^T``, reading ``W_hh (H, 4H)``."""
    H = dh0.shape[-1]
    return jax.lax.scan(lambda d, a: ((a.at[:, :H].add(d)) @ W_hh.T, None), dh0, dA, reverse=True)[0]


@jax.jit
def _loop_bptt_t(W_t, dA, dh0):
    """:func:`_loop_bptt` reading a transposed copy ``W_hh^T (4H, H)`` made before the loop."""
    H = dh0.shape[-1]
    return jax.lax.scan(lambda d, a: ((a.at[:, :H].add(d)) @ W_t, None), dh0, dA, reverse=True)[0]


def _mixed_spec() -> jr.kernels.FusedSpec:
    """The LSTM's :class:`jaxrnn.kernels.FusedSpec` (no peepholes) with its recurrent products -- forward
    and in the tangent, so in BPTT too -- done with bfloat16 operands and float32 accumulation."""

    def rec(h, W):
        return jnp.matmul(h.astype(jnp.bfloat16), W.astype(jnp.bfloat16), preferred_element_type=jnp.float32)

    def step(w, s, px):
        i, f, g, o = jnp.split(px + rec(s.h, w["W_hh"]), 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c = f * s.c + i * g
        return i, f, g, o, c, jnp.tanh(c)

    def forward(w, s, px):
        *_, o, c, tc = step(w, s, px)
        return jr.LSTMCarry(h=o * tc, c=c)

    def linearise(w, s, px):
        i, f, g, o, c, tc = step(w, s, px)
        k = [g * i * (1 - i), s.c * f * (1 - f), i * (1 - g * g), tc * o * (1 - o)]
        return jr.LSTMCarry(h=o * tc, c=c), {"rec": jnp.concatenate(k, -1), "f": f, "kc": o * (1 - tc * tc)}

    def drive(coef, dpx, drec, dw):
        da = [t for t in (dpx, drec) if t is not None]
        return coef["rec"] * sum(da[1:], da[0]) if da else None

    def combine(coef, ds, m):
        m_i, m_f, m_g, m_o = jnp.split(m, 4, axis=-1)
        dc = coef["f"] * ds.c + m_i + m_f + m_g
        return jr.LSTMCarry(h=m_o + coef["kc"] * dc, c=dc)

    def tangent(w, coef, ds, e):
        m = coef["rec"] * rec(ds.h, w["W_hh"])
        return combine(coef, ds, m if e is None else m + e)

    return jr.kernels.FusedSpec(forward, linearise, drive, combine, lambda s: s.h, tangent=tangent)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _mixed_lstm(w, s0, xs, ct, grad: bool, mixed: bool):
    """The fused LSTM (``jaxrnn.kernels.fused_scan``) with float32 or bf16 recurrent products: outputs
    ``hs``, and with ``grad`` the gradient of ``sum(hs * ct)`` w.r.t. ``w`` and ``xs``."""
    spec = _mixed_spec() if mixed else None

    def run(w, xs):
        if spec is None:
            return jr.unroll(jr.lstm(w["W_hh"].shape[0]), w, xs, carry=s0)[1]  # the fused kernel
        return jr.kernels.fused_scan(spec, w, s0, xs).h

    if not grad:
        return (run(w, xs),)
    hs, pull = jax.vjp(run, w, xs)
    return hs, pull(ct)


@functools.partial(jax.jit, static_argnums=2)
def _recurrent_loop(W, h0, T: int):
    """``T`` steps of ``h = tanh((h @ W)[:, :H])`` with the state cast to ``W``'s dtype before each
    product and the product accumulated in float32."""
    H = h0.shape[-1]

    def body(h, _):
        a = jnp.matmul(h.astype(W.dtype), W, preferred_element_type=jnp.float32)
        return jnp.tanh(a[:, :H]), None

    return jax.lax.scan(body, h0, None, length=T)[0]


# --------------------------------------------------------------------------------------------------
# targets and tables


def targets(rows: list, on_gpu: bool) -> list:
    """Each issue-5 target with its measured ratio and ``met`` / ``not yet`` / ``not measured``."""
    t = {(r["shape"], r["cell"], r["mode"], r["impl"]): r["median_ms"] for r in rows}
    out = []

    def add(what, shape, kind, other, limit):
        a, b = t.get((shape, kind, "fwdbwd", "jaxrnn")), t.get((shape, kind, "fwdbwd", other))
        ratio = None if a is None or b is None else a / b
        status = "not measured" if ratio is None else ("met" if ratio <= limit else "not yet")
        out.append({"target": what, "shape": shape, "cell": kind, "against": other, "limit": limit,
                    "ratio": ratio, "status": status})  # fmt: skip

    for kind in ("lstm", "gru"):
        if on_gpu:
            add(
                "GPU fwd+bwd within 1.3x of cuDNN at M",
                "M",
                kind,
                "cudnn" if kind == "lstm" else "torch",
                1.3,
            )
        else:
            for shape in ("S", "M", "L"):
                add("CPU fwd+bwd >= 2x faster than Flax", shape, kind, "flax", 0.5)
            for shape in ("S", "M", "L"):
                add("CPU fwd+bwd no slower than torch", shape, kind, "torch", 1.0)
    return out


def _mb(b):
    return "-" if b is None else f"{b / 2**20:,.1f} MiB"


def _fmt_agree(a: dict) -> str:
    return "; ".join(f"{k}: " + ", ".join(f"{m} {v:.1e}" for m, v in d.items()) for k, d in a.items())


def _table(head: Sequence[str], body: list) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def report(result: dict) -> str:
    m = result["meta"]
    parts = [
        "# jaxrnn benchmark",
        "",
        f"device: **{m['device_kind']}** ({m['backend']}, {m['cpu_count']} CPU cores, {m['platform']}); "
        f"jax {m['jax']}, flax {m['flax']}, torch {m['torch'] or 'absent'}"
        + (f" ({m['torch_threads']} threads)" if m["torch"] else "")
        + f"; load average before {m['loadavg_before']}, after {m.get('loadavg_after')}",
        f"median of {m['repeats']} calls after 1 + {m['warmup']} warm-up calls; float32; "
        f"jaxrnn path: {m['jaxrnn_path']}",
        f"command: `{m['command']}`"
        + (
            f"; JAX_COMPILATION_CACHE_DIR={m['jax_compilation_cache_dir']}"
            if m["jax_compilation_cache_dir"]
            else ""
        ),
        "",
    ]
    rows = result["speed"]
    if rows:
        peaks = {(p["shape"], p["gates"]): p for p in result["matmul_peak"]}
        parts += ["## Speed (median ms; ratio < 1 means jaxrnn is faster)", ""]
        t = {(r["shape"], r["cell"], r["mode"], r["impl"]): r for r in rows}
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        others = [i for i in impls if i != "jaxrnn"]
        head = ["shape", "cell", "mode"] + [f"{i} ms" for i in impls] + [f"jaxrnn/{o}" for o in others]
        head += [f"{i} GFLOP/s" for i in impls] + ["matmul peak GFLOP/s (jax/torch)"]
        body = []
        for shape, kind, mode in dict.fromkeys((r["shape"], r["cell"], r["mode"]) for r in rows):
            get = lambda i, f: t.get((shape, kind, mode, i), {}).get(f)  # noqa: B023
            j = get("jaxrnn", "median_ms")
            row = [shape, kind, mode] + [_f(get(i, "median_ms")) for i in impls]
            row += [_f(j / get(o, "median_ms"), 2) if j and get(o, "median_ms") else "-" for o in others]
            row += [f"{get(i, 'gflops'):.3g} ({get(i, 'pct_peak'):.0f}%)" if get(i, "gflops") else "-"
                    for i in impls]  # fmt: skip
            p = peaks.get((shape, GATES[kind]), {})
            row.append(
                f"{p.get('jax_gflops', 0):.3g} / "
                + (f"{p['torch_gflops']:.3g}" if "torch_gflops" in p else "-")
            )
            body.append(row)
        parts += [_table(head, body), ""]
        parts += ["## Compile time of the first call (jit + lower + compile, ms; torch: none)", ""]
        head = ["shape", "cell", "mode"] + [f"{i} compile ms" for i in impls]
        body = []
        for shape, kind, mode in dict.fromkeys((r["shape"], r["cell"], r["mode"]) for r in rows):
            row = [shape, kind, mode]
            for i in impls:
                r = t.get((shape, kind, mode, i))
                row.append("-" if r is None or r["compile_ms"] is None else f"{r['compile_ms']:.0f}")
            body.append(row)
        parts += [_table(head, body), ""]
        parts += [
            "## Agreement before timing (max abs diff vs jaxrnn; dW_hh relative to its largest entry)",
            "",
        ]
        body = [[a["shape"], a["cell"], _fmt_agree(a["max_abs_diff"])] for a in result["agreement"]]
        parts += [_table(["shape", "cell", "ys / dxs / dW_hh"], body), ""]
        parts += ["## Targets (issue 5)", ""]
        body = [
            [g["target"], g["shape"], g["cell"], f"jaxrnn/{g['against']} <= {g['limit']}",
             _f(g["ratio"], 2), g["status"]]
            for g in result["targets"]
        ]  # fmt: skip
        parts += [_table(["target", "shape", "cell", "criterion", "measured ratio", "status"], body), ""]
    if result.get("memory") is not None:
        parts += ["## BPTT peak memory (XLA compiled memory analysis of jax.grad; not executed)", ""]
        body = []
        for r in result["memory"]:
            sizes = [_mb(r.get(f"{f}_bytes")) for f in ("argument", "output", "temp", "peak")]
            comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
            widths = f"B{r['B']} D{r['D']} H{r['H']}"
            est = _mb(r["estimate_no_remat_bytes"])
            body.append([r["cell"], widths, r["T"], r["remat"], *sizes, est, comp, r.get("skipped", "")])
        head = ["cell", "widths", "T", "remat", "argument", "output", "temp", "arg+out+temp-alias"]
        head += ["no-remat residuals >= T*B*(G+2)*H*4", "compile s", "note"]
        parts += [_table(head, body), ""]
    if result.get("resets") is not None:
        r0 = result["resets"][0] if result["resets"] else None
        what = "" if r0 is None else f" at B{r0['B']} T{r0['T']} D{r0['D']} H{r0['H']}, rate {r0['rate']}"
        parts += [f"## Resets (episode boundaries){what}: median ms; target fused/none <= 1.15", ""]
        body = [
            [r["cell"], r["mode"], r["resets_drawn"], _f(r["none_ms"], 2), _f(r["fused_ms"], 2),
             _f(r["reference_ms"], 2), _f(r["fused_over_none"], 2), _f(r["reference_over_none"], 2),
             f"{r['max_abs_diff']:.1e}"]
            for r in result["resets"]
        ]  # fmt: skip
        head = ["cell", "mode", "resets", "no resets", "resets, fused", "resets, reference scan"]
        head += ["fused / none", "reference / none", "fused vs reference max diff"]
        parts += [_table(head, body), ""]
    if result.get("bf16") is not None:
        parts += ["## bfloat16 compute (float32 accumulation) against float32 (median ms)", ""]
        body = [
            [
                r["shape"],
                r["what"],
                _f(r["float32_ms"], 3),
                _f(r["bfloat16_ms"], 3),
                _f(r["bf16_over_f32"], 2),
                f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "-",
            ]
            for r in result["bf16"]
        ]
        head = ["shape", "computation", "float32", "bfloat16", "bf16 / f32"]
        head += ["max relative diff (outputs, gradients)"]
        parts += [_table(head, body), ""]
    if result.get("breakdown") is not None:
        parts += [
            "## Where the fused LSTM's time goes (median ms; each part is a scan doing one part of the work)",
            "",
        ]
        body = [[r["shape"], r["what"], _f(r["median_ms"], 2)] for r in result["breakdown"]]
        parts += [_table(["shape", "computation", "ms"], body), ""]
    if result.get("newton") is not None:
        rows, conv = result["newton"], result["newton_convergence"]
        parts += ["## Newton's method parallel in time (DEER: full Jacobians; quasi-DEER: diagonal)", ""]
        body = [
            [r["T"], r["cell"], r["mode"], r["impl"], _f(r["median_ms"], 2), r.get("iterations", "-"),
             r.get("converged", "-"), f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-",
             f"B{r['B']} D{r['D']} H{r['H']}"]
            for r in rows
        ]  # fmt: skip
        head = [
            "T",
            "cell",
            "mode",
            "method",
            "median ms",
            "iterations",
            "converged",
            "max |ys - sequential|",
        ]
        parts += [_table([*head, "widths"], body), ""]
        body = [
            [r["gain"], f"{r['lyapunov_max']:.3f}", f"{r['iterations_full']} ({r['converged_full']})",
             f"{r['iterations_diagonal']} ({r['converged_diagonal']})"]
            for r in conv
        ]  # fmt: skip
        t_conv = conv[0]["T"] if conv else "-"
        parts += [f"Iterations to converge (max T = {t_conv}), Elman H16, recurrent gain g x orthogonal:", ""]
        parts += [
            _table(["gain", "largest Lyapunov exponent", "full (converged)", "diagonal (converged)"], body)
        ]
        parts += [""]
    if result.get("parallel") is not None:
        parts += ["## Parallel-scan cells vs a sequential LSTM of the same width", ""]
        if result.get("parallel_note"):
            parts += [f"skipped: {result['parallel_note']}", ""]
        else:
            body = []
            for r in result["parallel"]:
                if "skipped" in r:
                    body.append([r["T"], r["cell"], "-", "-", "-", f"skipped: {r['skipped']}"])
                else:
                    body.append([r["T"], r["cell"], r["scan"], r["mode"], _f(r["median_ms"]),
                                 f"B{r['B']} D{r['D']} H{r['H']}"])  # fmt: skip
            parts += [_table(["T", "cell", "scan", "mode", "median ms", "widths"], body), ""]
    return "\n".join(parts)


def _f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


# --------------------------------------------------------------------------------------------------
# CLI


def _csv(allowed: Sequence[str]):
    def parse(s: str) -> list[str]:
        items = [i.strip() for i in s.split(",") if i.strip()]
        bad = [i for i in items if i not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(allowed)}; got {s!r}")
        return items

    return parse


def _ints(s: str) -> list[int]:
    try:
        out = [int(i) for i in s.split(",") if i.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive ints; got {s!r}")
    return out


def _positive_floats(s: str) -> list[float]:
    try:
        out = [float(i) for i in s.split(",") if i.strip()]
    except ValueError:
        out = []
    if not out or not all(0 < x < float("inf") for x in out):
        raise argparse.ArgumentTypeError(f"expected a comma list of positive finite numbers; got {s!r}")
    return out


def parser() -> runner.ArgumentParser:
    """The command line: :class:`experiments.runner.ArgumentParser`, so a bad option raises
    :class:`~experiments.runner.UsageError` (one line; exit status 2 through ``runner.run_cli``)
    instead of printing the usage block; numbers are read by :func:`experiments.runner.number`
    (``--repeats`` >= 1, ``--atol`` finite, ...)."""
    p = runner.ArgumentParser(
        prog="python -m experiments.bench",
        description="jaxrnn LSTM/GRU speed against Flax linen, torch (if importable) and cuDNN (on a GPU); "
        "see the module docstring for the FLOP count and the targets.",
    )
    p.add_argument("--shapes", type=_csv(list(SHAPES)), default=None,
                   help="comma list of S (B32 T100 D128 H256), M (B64 T200 D256 H512), L (B8 T500 D32 H128); "
                   "or the sweep's B<b>T<t> (b in 1, 16, 256; t in 100, 1000, 10000; D = H = 256); "
                   "default S,M,L (--quick: S,L)")  # fmt: skip
    p.add_argument(
        "--sweep",
        action="store_true",
        help="the accelerator sweep instead of --shapes: B 1, 16, 256 by T 100, 1000, 10000",
    )
    p.add_argument("--cells", type=_csv(list(CELLS)), default=["lstm", "gru"])
    p.add_argument("--modes", type=_csv(MODES), default=list(MODES))
    p.add_argument(
        "--repeats", type=runner.number(int, min=1), default=10, help="timed calls per median (default 10)"
    )
    p.add_argument(
        "--warmup",
        type=runner.number(int, min=0),
        default=None,
        help="untimed calls after the first (default 3; --quick 1)",
    )
    p.add_argument("--quick", action="store_true", help="a 2-core CPU preset: shapes S,L, 1 warm-up call, "
                   "smaller --memory / --parallel widths")  # fmt: skip
    p.add_argument(
        "--fused",
        choices=("on", "off", "both"),
        default="on",
        help="jaxrnn's unroll(fused=...): on (default path), off (reference scan), both (two rows)",
    )
    p.add_argument(
        "--unroll",
        type=_ints,
        default=[1],
        help="comma list of lax.scan unroll factors for jaxrnn; each factor > 1 adds a row "
        "'jaxrnn(unroll=u)' (the targets are judged on the default unroll=1)",
    )
    p.add_argument("--memory", action="store_true", help="the BPTT peak-memory section (T=10k, 100k)")
    p.add_argument("--memory-T", type=_ints, default=list(MEMORY_T), help=argparse.SUPPRESS)
    p.add_argument(
        "--memory-shape",
        choices=list(SHAPES),
        default=None,
        help="widths B, D, H of the memory section (default L; --quick L)",
    )
    p.add_argument("--parallel", action="store_true", help="the parallel-scan section (T=256, 1024, 4096)")
    p.add_argument("--parallel-T", type=_ints, default=list(PARALLEL_T), help=argparse.SUPPRESS)
    p.add_argument(
        "--parallel-width",
        type=runner.number(int, min=1),
        default=None,
        help="H = D of the parallel section (default 128)",
    )
    p.add_argument(
        "--parallel-batch",
        type=runner.number(int, min=1),
        default=None,
        help="B of the parallel section (default 8)",
    )
    p.add_argument(
        "--resets",
        type=runner.number(float, min=0.0),
        default=None,
        help="the resets section: episode boundaries drawn at this rate per step (e.g. 0.1)",
    )
    p.add_argument(
        "--resets-shape",
        choices=list(SHAPES),
        default="L",
        help="B, T, D, H of the resets section (default L)",
    )
    p.add_argument("--breakdown", action="store_true", help="where the fused LSTM's time goes (at --shapes)")
    p.add_argument("--newton", action="store_true", help="the parallel-Newton section (DEER, quasi-DEER)")
    p.add_argument("--newton-T", type=_ints, default=[128, 1024], help=argparse.SUPPRESS)
    p.add_argument(
        "--newton-convergence-T", type=runner.number(int, min=1), default=256, help=argparse.SUPPRESS
    )
    p.add_argument(
        "--newton-gains", type=_positive_floats, default=[0.5, 1.0, 2.0, 4.0], help=argparse.SUPPRESS
    )
    p.add_argument("--newton-width", type=runner.number(int, min=1), default=32, help=argparse.SUPPRESS)
    p.add_argument("--newton-batch", type=runner.number(int, min=1), default=8, help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help="the bfloat16-compute section (at --shapes)")
    p.add_argument("--no-speed", action="store_true", help="skip the main speed table")
    p.add_argument("--no-torch", action="store_true", help="do not import torch even if it is installed")
    p.add_argument(
        "--torch-threads",
        type=runner.number(int, min=1),
        default=None,
        help="torch.set_num_threads (default: all cores)",
    )
    p.add_argument(
        "--atol",
        type=runner.number(float, min=0.0),
        default=None,
        help="agreement tolerance (default 1e-4 CPU, 2e-2 GPU)",
    )
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress lines (the tables are still printed)")
    return p


def run(argv=None) -> dict:
    """Parse ``argv``, run the requested sections and return the result dict (also written to ``--json``).

    Raises:
      experiments.runner.UsageError: a bad option (one line naming it); ``--help`` exits 0.
    """
    cfg = parser().parse_args(argv)
    if cfg.resets is not None and not cfg.resets <= 1.0:
        raise runner.UsageError(f"argument --resets: must be a rate in [0, 1]; got {cfg.resets}")
    if cfg.sweep and cfg.shapes:
        raise runner.UsageError("argument --sweep: chooses the shapes itself; drop --shapes")
    if cfg.sweep:
        cfg.shapes = list(SWEEP)
    q = QUICK if cfg.quick else {}
    cfg.shapes = cfg.shapes or q.get("shapes", "S,M,L").split(",")
    cfg.warmup = cfg.warmup if cfg.warmup is not None else q.get("warmup", 3)
    cfg.memory_shape = cfg.memory_shape or q.get("memory_shape", "L")
    cfg.memory_T = cfg.memory_T
    cfg.parallel_width = cfg.parallel_width or q.get("parallel_width", 128)
    cfg.parallel_batch = cfg.parallel_batch or q.get("parallel_batch", 8)
    cfg.atol = cfg.atol if cfg.atol is not None else (2e-2 if _on_gpu() else 1e-4)
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    import flax

    torch = None if cfg.no_torch else _try_torch()
    if torch is not None:
        torch.set_num_threads(cfg.torch_threads or os.cpu_count() or 1)
    cell0 = CELLS[cfg.cells[0]](4)
    meta = {
        "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "jaxrnn_path": (
            f"fused={cfg.fused}; cells have a fused kernel: {cell0.kernel is not None} "
            "(without one, or with fused=off, unroll runs the reference lax.scan)"
        ),
        "jax_compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
        "loadavg_before": _loadavg(),
        "command": "python -m experiments.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "flop_count": "fwd: 2*B*T*(D+H)*G*H (G=4 LSTM, 3 GRU); fwdbwd: 3x fwd",
    }
    log(f"bench: {meta['device_kind']} ({meta['backend']}), torch {meta['torch']}")
    result = {"meta": meta, "speed": [], "agreement": [], "matmul_peak": [], "targets": []}
    if not cfg.no_speed:
        rows, agree, peaks = speed_section(cfg, torch, log)
        result.update(speed=rows, agreement=agree, matmul_peak=peaks, targets=targets(rows, _on_gpu()))
    if cfg.memory:
        result["memory"] = memory_section(cfg, log)
    if cfg.parallel:
        result["parallel"], result["parallel_note"] = parallel_section(cfg, log)
    if cfg.resets is not None:
        result["resets"] = resets_section(cfg, log)
    if cfg.bf16:
        result["bf16"] = bf16_section(cfg, log)
    if cfg.breakdown:
        result["breakdown"] = breakdown_section(cfg, log)
    if cfg.newton:
        result["newton"], result["newton_convergence"] = newton_section(cfg, log)
    meta["loadavg_after"] = _loadavg()
    result["markdown"] = report(result)
    if cfg.json:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.json)), exist_ok=True)
        with open(cfg.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv=None) -> dict:
    """:func:`run`, then print the markdown report. As a script (``python -m experiments.bench``) it runs
    through :func:`experiments.runner.run_cli`: a bad option is ``error: ...`` on one line, exit 2."""
    result = run(argv)
    print(result["markdown"])
    return result


if __name__ == "__main__":
    runner.run_cli(main)
