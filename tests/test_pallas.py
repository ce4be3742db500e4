"""jaxrnn.kernels.pallas, in Pallas interpret mode on the CPU: the persistent kernels against the
reference scan (values and gradients, lengths, resets, reverse, batch tiles), selected by
``unroll(..., backend="pallas")``; what they refuse."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.kernels import fused
from jaxrnn.kernels.pallas import pallas_scan

F32, F64 = jnp.float32, jnp.float64
T, I, H = 6, 2, 3
LENGTHS = np.array([[6, 0], [3, 5]])
RESETS = np.zeros((T, 2, 2), bool)
RESETS[0, 0, 0] = RESETS[2, 0, 0] = RESETS[3, 0, 0] = RESETS[1, 1, 0] = RESETS[4, 1, 1] = RESETS[5, 1, 1] = (
    True
)

CELLS = {
    "lstm": jr.lstm(H),
    "lstm_peepholes": jr.lstm(H, peepholes=True),
    "gru": jr.gru(H),
    "gru_before": jr.gru(H, reset_after=False),
    "elman_relu": jr.elman(H, "relu"),
    "learned_lstm": jr.learned_initial_state(jr.lstm(H)),
}


def _setup(cell, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = cell.init(jax.random.PRNGKey(seed), I, dtype)
    params = jax.tree.map(lambda a: a + jnp.asarray(0.3 * rng.normal(size=a.shape), dtype), params)
    xs = jnp.asarray(rng.normal(size=(T, 2, 2, I)), dtype)
    carry = jax.tree.map(lambda c: c + 0.2, cell.initial_carry(params, (2, 2)))
    return params, xs, carry


@functools.partial(jax.jit, static_argnames=("cell", "backend", "reverse"))
def _value_and_grads(cell, params, xs, carry, lengths, resets, backend, reverse):
    def loss(p, x, c):
        kw = dict(lengths=lengths, resets=resets, reverse=reverse)
        final, ys = jr.unroll(
            cell, p, x, c, **kw, **({"fused": False} if backend == "reference" else {"backend": backend})
        )
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(f**2) for f in jax.tree.leaves(final))

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, xs, carry)


@pytest.mark.parametrize(
    "name, reverse", [(n, r) for n in CELLS for r in (False, True) if r or n in ("lstm", "gru")]
)
def test_equals_the_reference_scan_float64(name, reverse):
    cell = CELLS[name]
    params, xs, carry = _setup(cell, F64)
    args = (cell, params, xs, carry, jnp.asarray(LENGTHS), jnp.asarray(RESETS))
    got = _value_and_grads(*args, "pallas", reverse)
    want = _value_and_grads(*args, "reference", reverse)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), got, want)
    jaxpr = str(jax.make_jaxpr(lambda p: jr.unroll(cell, p, xs, backend="pallas"))(params))
    assert "pallas_call" in jaxpr


def test_float32_and_batch_tiles():
    cell = CELLS["lstm"]
    params, xs, carry = _setup(cell, F32, seed=1)
    w = {k: params[k] for k in ("W_xh", "b", "W_hh")}
    spec = fused._lstm_spec(jr.LSTMCarry)
    xs4 = xs.reshape(T, 4, I)
    c4 = jax.tree.map(lambda a: a.reshape(4, H), carry)
    valid = jnp.arange(T)[:, None] < jnp.asarray(LENGTHS).reshape(4)
    one = pallas_scan(spec, w, c4, xs4, valid)
    tiled = pallas_scan(spec, w, c4, xs4, valid, block_batch=2)  # a grid of two programs
    ref = fused.fused_scan(spec, w, c4, xs4, valid)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), (one, tiled), (ref, ref)
    )
    assert one.h.dtype == F32
    with pytest.raises(ValueError, match="block_batch must divide the batch size 4"):
        pallas_scan(spec, w, c4, xs4, valid, block_batch=3)
    # the argument checks are fused_scan's (one shared check), naming pallas_scan
    with pytest.raises(ValueError, match=r"pallas_scan: resets need reset_carry"):
        pallas_scan(spec, w, c4, xs4, resets=valid)
    with pytest.raises(ValueError, match=r"pallas_scan: xs must have shape \(T, \*batch, 2\)"):
        pallas_scan(spec, w, c4, xs4[..., :1])
    with pytest.raises(ValueError, match=r"pallas_scan: valid must have shape \(T, \*batch\)"):
        pallas_scan(spec, w, c4, xs4, valid[:, :2])
    with pytest.raises(TypeError, match="pallas_scan: spec must be a FusedSpec"):
        pallas_scan(None, w, c4, xs4)


def test_reverse_mode_only_and_refusals():
    cell = CELLS["gru"]
    params, xs, carry = _setup(cell, F64, seed=2)
    f = lambda p: jnp.sum(jr.unroll(cell, p, xs, backend="pallas")[1])  # noqa: E731
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(f, (params,), (params,))
    for kw, match in (
        (dict(backend="cuda"), "backend must be one of"),
        (dict(backend="pallas", remat=True), "cannot take remat"),
        (dict(backend="pallas", fused=False), "cannot take fused=False"),
        (dict(backend="pallas", method="parallel_newton"), "cannot take backend"),
    ):
        with pytest.raises(ValueError, match=match):
            jr.unroll(cell, params, xs, **kw)
    with pytest.raises(ValueError, match="backend='pallas' has no kernel for min_gru"):
        jr.unroll(jr.min_gru(H), jr.min_gru(H).init(jax.random.PRNGKey(0), I), xs, backend="pallas")
    with pytest.raises(ValueError, match="backend='pallas' cannot run this lstm: dtype bfloat16"):
        jr.unroll(jr.lstm(H), jr.lstm(H).init(jax.random.PRNGKey(0), I, jnp.bfloat16), xs, backend="pallas")
