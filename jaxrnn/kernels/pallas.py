"""Persistent RNN kernels in Pallas: the whole time loop inside one kernel launch.

A ``lax.scan`` RNN on a GPU launches kernels every step (jax issue 2491). A *persistent* RNN (G. Diamos
et al., "Persistent RNNs: stashing recurrent weights on-chip", ICML 2016) keeps the recurrent weight
on chip and runs all ``T`` steps in one launch. :func:`pallas_scan` does that for any
:class:`~jaxrnn.kernels.FusedSpec` (the LSTM with or without peepholes, both GRUs, the Elman family):

* **forward** -- one ``pallas_call`` whose grid runs over batch tiles of ``block_batch`` sequences;
  each program loads ``W_hh`` (and the cell's small extras) once, then loops over ``t`` inside the
  kernel: ``s_t = spec.forward(w, s_{t-1}, px_t)`` with the inputs projected before it
  (``px = xs @ W_xh + b``, one matrix product), resets and padding as in :func:`jaxrnn.unroll`. When
  differentiated it also writes each step's coefficients (``spec.linearise``);
* **backward** -- a second ``pallas_call``, the same grid, looping from the last step to the first:
  the adjoint ``lambda`` of the state, per step ``jax.vjp`` of
  :func:`~jaxrnn.kernels.fused.tangent_step` (the BPTT chain ``dA_t``, ``dh_{t-1} = dA_t @ W_hh^T``),
  writing the cotangent of each step's drive; after it, as in the fused kernel, one matrix product
  each for ``dW_hh = h^T @ dA``, ``dW_xh = xs^T @ dA`` and ``dxs = dA @ W_xh^T`` (outside the kernel).

A ``jax.custom_vjp``: reverse mode only (``jax.grad``; ``jax.jvp`` raises JAX's custom_vjp error); use
the default backend for forward mode.

Limits. The recurrent matrix ``(H, G*H)`` and one tile's state must fit in on-chip memory: on a GPU
(Triton) ``G H^2`` floats per program in shared memory -- a float32 LSTM needs 256 KiB at ``H = 128``,
more than an H100's 228 KiB per SM, so about ``H <= 112`` (GRU ``H <= 128``, Elman ``H <= 224``); on a TPU
(Mosaic) VMEM (16-32 MiB, so ``H`` up to about 1024). Where that does not hold, use the default (XLA)
backend. On a CPU Pallas runs in *interpret mode* (``interpret=True``: the kernel body executed by XLA),
which is how the suite verifies these kernels (values and gradients against the reference scan, with
lengths, reverse and resets); it is slow and only for testing. The kernels have not run on a GPU or TPU
yet: no accelerator was available to this project's sessions, so whether they lower there, and how fast
they are, is **not measured** (``python -m experiments.bench`` on a GPU is the check).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from jaxrnn.kernels.fused import FusedSpec, check_scan_args, start_states, tangent_step

__all__ = ["pallas_scan"]


def _tile(T: int, B: int, block_batch: int):
    """The BlockSpecs of a ``(T, B, k)`` array, a ``(B, k)`` array, a ``(T, B)`` mask and a whole
    (replicated) array, for a grid over batch tiles of ``block_batch``."""

    def seq(k):
        return pl.BlockSpec((T, block_batch, k), lambda i: (0, i, 0))

    def row(k):
        return pl.BlockSpec((block_batch, k), lambda i: (i, 0))

    mask = pl.BlockSpec((T, block_batch), lambda i: (0, i))

    def whole(a):
        return pl.BlockSpec(a.shape, lambda i, n=a.ndim: (0,) * n)

    return seq, row, mask, whole


def _leaves_as(treedef, refs, index=None):
    return jax.tree.unflatten(treedef, [r[...] if index is None else r[index] for r in refs])


def pallas_scan(
    spec: FusedSpec,
    w: dict,
    s0,
    xs,
    valid=None,
    *,
    resets=None,
    reset_carry=None,
    reverse: bool = False,
    block_batch: int | None = None,
    interpret: bool | None = None,
):
    """:func:`~jaxrnn.kernels.fused_scan` with the time loop inside a Pallas kernel (see the module
    docstring): all states ``(T, *batch, k)`` of ``s_t = spec.forward(w, s_{t-1}, x_t @ W_xh + b)``.

    In plain Python, as :func:`~jaxrnn.kernels.fused_scan`::

        s, states = s0, []
        for t in (reversed(range(T)) if reverse else range(T)):
            s_in = s if resets is None else where(resets[t], reset_carry, s)
            new = spec.forward(w, s_in, xs[t] @ w["W_xh"] + w["b"])
            s = new if valid is None else where(valid[t], new, s)
            states.append(s)                                 # at index t

    Args:
      spec, w, s0, valid, resets, reset_carry, reverse: as for :func:`~jaxrnn.kernels.fused_scan`.
      xs: ``(T, *batch, I)``.
      block_batch: sequences per program (a divisor of the batch size); default the whole batch.
      interpret: run the kernels in Pallas interpret mode; default on a CPU, where nothing else runs.

    Returns:
      ``states``: a pytree like ``s0`` with leaves ``(T, *batch, k)``.

    Raises:
      TypeError / ValueError before tracing: the checks of :func:`~jaxrnn.kernels.fused.check_scan_args`,
      and ``block_batch`` that does not divide the batch size.
    """
    fn = "pallas_scan"
    check_scan_args(fn, spec, w, xs, valid, resets, reset_carry)
    T, batch = xs.shape[0], tuple(xs.shape[1:-1])
    B = int(np.prod(batch)) if batch else 1
    bb = B if block_batch is None else int(block_batch)
    if bb < 1 or B % bb:
        raise ValueError(f"{fn}: block_batch must divide the batch size {B}; got {block_batch}")
    if interpret is None:
        interpret = jax.default_backend() == "cpu"

    def to_rows(a, lead):  # (*lead, *batch, k) -> (*lead, B, k)
        return a.reshape(a.shape[: len(lead)] + (B,) + a.shape[len(lead) + len(batch) :])

    px = to_rows(xs @ w["W_xh"] + w["b"], (T,))
    flat0, treedef = jax.tree.flatten(jax.tree.map(lambda a: to_rows(a, ()), s0))
    r0 = reset_carry if resets is not None else s0
    flat_r0 = jax.tree.leaves(jax.tree.map(lambda a, b: to_rows(jnp.broadcast_to(a, b.shape), ()), r0, s0))
    v = jnp.ones((T, B), jnp.int32) if valid is None else valid.reshape(T, B).astype(jnp.int32)
    r = jnp.zeros((T, B), jnp.int32) if resets is None else resets.reshape(T, B).astype(jnp.int32)
    wr = {k: a for k, a in w.items() if k not in ("W_xh", "b")}
    states = _run(spec, treedef, bb, bool(reverse), bool(interpret))(wr, flat0, px, v, r, flat_r0)
    return jax.tree.unflatten(treedef, [a.reshape((T, *batch) + a.shape[2:]) for a in states])


def _run(spec: FusedSpec, treedef, bb: int, reverse: bool, interpret: bool):
    """The custom-VJP function ``(wr, s0 leaves, px, valid, resets, r0 leaves) -> state leaves``."""

    def forward_kernel(wr, s0, px, valid, resets, r0, with_coefs: bool):
        T, B = valid.shape
        seq, row, mask, whole = _tile(T, B, bb)
        wkeys = sorted(wr)
        coef_shapes = None
        if with_coefs:  # the coefficients' shapes, from one abstract step
            one = jax.eval_shape(
                lambda: spec.linearise(wr, jax.tree.unflatten(treedef, [a[:1] for a in s0]), px[0, :1])[1]
            )
            coef_leaves, coef_def = jax.tree.flatten(one)
            coef_shapes = [c.shape[1:] for c in coef_leaves]

        n_s, n_w = len(s0), len(wkeys)

        def kernel(*refs):
            w_refs, refs = refs[:n_w], refs[n_w:]
            s0_refs, refs = refs[:n_s], refs[n_s:]
            px_ref, v_ref, r_ref, refs = refs[0], refs[1], refs[2], refs[3:]
            r0_refs, refs = refs[:n_s], refs[n_s:]
            out_refs, coef_refs = refs[:n_s], refs[n_s:]
            wt = {k: ref[...] for k, ref in zip(wkeys, w_refs)}  # loaded once: on chip for the loop
            start_r0 = _leaves_as(treedef, r0_refs)

            def body(i, s):
                t = T - 1 - i if reverse else i
                keep, restart = v_ref[t] > 0, r_ref[t] > 0
                s_in = jax.tree.map(lambda a, b: jnp.where(restart[:, None], a, b), start_r0, s)
                if with_coefs:
                    new, coef = spec.linearise(wt, s_in, px_ref[t])
                    for ref, c in zip(coef_refs, jax.tree.leaves(coef)):
                        ref[t] = c
                else:
                    new = spec.forward(wt, s_in, px_ref[t])
                new = jax.tree.map(lambda a, b: jnp.where(keep[:, None], a, b), new, s)
                for ref, a in zip(out_refs, jax.tree.leaves(new)):
                    ref[t] = a
                return new

            jax.lax.fori_loop(0, T, body, _leaves_as(treedef, s0_refs))

        in_specs = [whole(wr[k]) for k in wkeys] + [row(a.shape[-1]) for a in s0]
        in_specs += [seq(px.shape[-1]), mask, mask] + [row(a.shape[-1]) for a in r0]
        out_shape = [jax.ShapeDtypeStruct((T, B, a.shape[-1]), a.dtype) for a in s0]
        out_specs = [seq(a.shape[-1]) for a in s0]
        if with_coefs:
            out_shape += [
                jax.ShapeDtypeStruct((T, B, *sh), c.dtype) for sh, c in zip(coef_shapes, coef_leaves)
            ]
            out_specs += [seq(sh[-1]) for sh in coef_shapes]
        outs = pl.pallas_call(
            kernel, out_shape=out_shape, grid=(B // bb,), in_specs=in_specs, out_specs=out_specs,
            interpret=interpret,
        )(*[wr[k] for k in wkeys], *s0, px, valid, resets, *r0)  # fmt: skip
        states = outs[:n_s]
        coefs = jax.tree.unflatten(coef_def, outs[n_s:]) if with_coefs else None
        return states, coefs

    def backward_kernel(wr, coefs, g, valid, resets, e_width, dtype):
        """Per step, backwards: the adjoint of the state and the cotangent of the step's drive."""
        T, B = valid.shape
        seq, row, mask, whole = _tile(T, B, bb)
        wkeys = sorted(wr)
        coef_leaves, coef_def = jax.tree.flatten(coefs)
        n_w, n_c, n_s = len(wkeys), len(coef_leaves), len(g)

        def kernel(*refs):
            w_refs, refs = refs[:n_w], refs[n_w:]
            c_refs, refs = refs[:n_c], refs[n_c:]
            g_refs, refs = refs[:n_s], refs[n_s:]
            v_ref, r_ref, refs = refs[0], refs[1], refs[2:]
            e_ref, s0_refs, r0_refs = refs[0], refs[1 : 1 + n_s], refs[1 + n_s :]
            wt = {k: ref[...] for k, ref in zip(wkeys, w_refs)}

            def body(i, carry):
                lam, lam_r0 = carry
                t = i if reverse else T - 1 - i
                keep, restart = v_ref[t] > 0, r_ref[t] > 0
                coef_t = _leaves_as(coef_def, c_refs, t)
                total = jax.tree.map(jnp.add, lam, _leaves_as(treedef, g_refs, t))
                zeros_e = jnp.zeros(keep.shape + (e_width,), dtype)
                _, pull = jax.vjp(lambda ds, e: tangent_step(spec, wt, coef_t, ds, e), lam, zeros_e)
                new = jax.tree.map(lambda a: jnp.where(keep[:, None], a, 0.0), total)
                lam_in, lam_e = pull(new)
                e_ref[t] = lam_e
                lam_r0 = jax.tree.map(
                    lambda acc, a: acc + jnp.where(restart[:, None], a, 0.0), lam_r0, lam_in
                )
                lam = jax.tree.map(
                    lambda a, tot: jnp.where(restart[:, None], 0.0, a) + jnp.where(keep[:, None], 0.0, tot),
                    lam_in,
                    total,
                )
                return lam, lam_r0

            zeros = jax.tree.unflatten(treedef, [jnp.zeros(ref.shape[1:], ref.dtype) for ref in g_refs])
            lam, lam_r0 = jax.lax.fori_loop(0, T, body, (zeros, zeros))
            for ref, a in zip(s0_refs, jax.tree.leaves(lam)):
                ref[...] = a
            for ref, a in zip(r0_refs, jax.tree.leaves(lam_r0)):
                ref[...] = a

        in_specs = [whole(wr[k]) for k in wkeys] + [seq(c.shape[-1]) for c in coef_leaves]
        in_specs += [seq(a.shape[-1]) for a in g] + [mask, mask]
        out_shape = [jax.ShapeDtypeStruct((T, B, e_width), dtype)]
        out_shape += [jax.ShapeDtypeStruct((B, a.shape[-1]), a.dtype) for a in g] * 2
        out_specs = [seq(e_width)] + [row(a.shape[-1]) for a in g] * 2
        outs = pl.pallas_call(
            kernel, out_shape=out_shape, grid=(B // bb,), in_specs=in_specs, out_specs=out_specs,
            interpret=interpret,
        )(*[wr[k] for k in wkeys], *coef_leaves, *g, valid, resets)  # fmt: skip
        return outs[0], outs[1 : 1 + n_s], outs[1 + n_s :]

    @jax.custom_vjp
    def run(wr, s0, px, valid, resets, r0):
        return forward_kernel(wr, s0, px, valid, resets, r0, False)[0]

    def run_fwd(wr, s0, px, valid, resets, r0):
        states, coefs = forward_kernel(wr, s0, px, valid, resets, r0, True)
        return states, (wr, s0, px, valid, resets, r0, states, coefs)

    def run_bwd(res, g):
        wr, s0, px, valid, resets, r0, states, coefs = res
        lam_e, lam_s0, lam_r0 = backward_kernel(wr, coefs, list(g), valid, resets, px.shape[-1], px.dtype)

        # the states each step started from (for the dW_hh product), in processing order
        unflat = lambda leaves: jax.tree.unflatten(treedef, list(leaves))  # noqa: E731
        prev = start_states(unflat(s0), unflat(states), reverse, resets > 0, unflat(r0))
        extras = {k: jnp.zeros_like(a) for k, a in wr.items() if k != "W_hh"}
        zeros_rec = jnp.zeros_like(px)

        def drive(dpx, drec, dw):  # linear: its transpose takes the drive's cotangent apart
            return spec.drive(coefs, dpx, drec, dw)

        _, pull = jax.vjp(drive, jnp.zeros_like(px), zeros_rec, extras)
        lam_px, lam_rec, lam_extras = pull(lam_e)

        def rec(dW):
            return spec.lhs(prev) @ dW if spec.drec is None else spec.drec(coefs, prev, dW)

        (lam_W,) = jax.vjp(rec, wr["W_hh"])[1](lam_rec)
        d_wr = {"W_hh": lam_W, **lam_extras}
        return d_wr, list(lam_s0), lam_px, None, None, list(lam_r0)

    run.defvjp(run_fwd, run_bwd)
    return run
