"""The composition matrix: every cell x every transform x every consumer, against a plain-loop reference.

Each transform is re-implemented here from its documented definition on top of the *plain* cell's
public functions (no wrapper code of the package is used by the references):

* ``truncate(c, cuts)`` -- ``stop_gradient`` of the carry entering step ``t`` when ``cuts[t]``; values and
  dynamics unchanged;
* ``recurrent_dropout(c, rate, key)`` -- per-step masks ``bernoulli(fold_in(fold_in(key, b), t))`` handed
  to the plain cell's masked recurrence; ``key=None`` is ``c`` itself;
* ``learned_initial_state(c)`` -- ``s_0`` broadcast from ``params["initial_carry"]``.

Every consumer either equals its reference (values, and gradients where the consumer is
differentiated) or raises its documented error. Shapes are tiny and float64, so tolerances are tight.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxrnn as jr
from jaxrnn import truncation as tr
from jaxrnn.cells import RecurrentMasks

F64 = jnp.float64
T, B, I, H = 5, 2, 3, 3
RATE = 0.4
KEY = jax.random.key(7)
CUTS = np.asarray(tr.every(2, T))
TOL = dict(rtol=1e-9, atol=1e-10)

BASES = {
    "elman": lambda: jr.elman(H),
    "lstm": lambda: jr.lstm(H),
    "deep": lambda: jr.deep_rnn(jr.gru(H), jr.elman(H)),
}
TRANSFORMS = {
    "plain": dict(),
    "truncate": dict(cuts=True),
    "dropout": dict(dropout=True),
    "dropout_inference": dict(),  # recurrent_dropout(c, RATE, None) is c
    "learned_s0": dict(learned=True),
    "composed": dict(cuts=True, dropout=True, learned=True),
}


def make_cell(base: str, transform: str) -> jr.Cell:
    cell = BASES[base]()
    if transform == "truncate":
        return jr.truncate(cell, CUTS)
    if transform == "dropout":
        return jr.recurrent_dropout(cell, RATE, KEY)
    if transform == "dropout_inference":
        return jr.recurrent_dropout(cell, RATE, None)
    if transform == "learned_s0":
        return jr.learned_initial_state(cell)
    if transform == "composed":
        return jr.truncate(jr.recurrent_dropout(jr.learned_initial_state(cell), RATE, KEY), CUTS)
    return cell


def expected_error(base: str, transform: str):
    """The documented refusals: a deep_rnn has no masked recurrence (dropout wraps each cell instead)
    and its params are a tuple, not the dict learned_initial_state extends."""
    if base == "deep" and transform in ("dropout", "dropout_inference", "composed"):
        return ValueError, "does not support recurrent dropout"
    if base == "deep" and transform == "learned_s0":
        return TypeError, "params must be a dict"
    return None


# --------------------------------------------------------------------------------------------------
# the reference: plain loops over the plain cell


class Ref:
    def __init__(self, base: str, transform: str):
        self.cell = BASES[base]()
        spec = TRANSFORMS[transform]
        self.cuts = CUTS if spec.get("cuts") else None
        self.dropout = spec.get("dropout", False)
        self.learned = spec.get("learned", False)

    def s0(self, params, batch_shape):
        if self.learned:
            return jax.tree.map(
                lambda s: jnp.broadcast_to(s, (*batch_shape, *s.shape)), params["initial_carry"]
            )
        return self.cell.initial_carry(params, batch_shape)

    def masks(self, s, t):
        out = self.cell.output(s)
        batch_shape, width = out.shape[:-1], out.shape[-1]
        rows = []
        for b in range(math.prod(batch_shape)):
            k = jax.random.fold_in(KEY, b) if batch_shape else KEY
            keep = jax.random.bernoulli(jax.random.fold_in(k, t), jnp.float32(1 - RATE), (width,))
            rows.append(jnp.where(keep, 1 / (1 - RATE), 0.0).astype(out.dtype))
        return jnp.reshape(jnp.stack(rows), (*batch_shape, width))

    def dyn(self, params, s, x, t):
        """The dynamics of step t (never cut)."""
        if self.dropout:
            m = RecurrentMasks(candidate=self.masks(s, t))
            return self.cell.fns.masked_recur(params, s, self.cell.project(params, x), m)
        return self.cell.step(params, s, x)

    def cut(self, s, t):
        if self.cuts is not None and self.cuts[t]:
            return jax.tree.map(jax.lax.stop_gradient, s)
        return s

    def run(self, params, xs, carry=None, probes=None, reverse=False, t_start=0):
        """``(final, ys, states)`` of the plain loop (time first)."""
        s = self.s0(params, xs.shape[1:-1]) if carry is None else carry
        order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
        ys, states = [None] * len(xs), [None] * len(xs)
        for n, t in enumerate(order):
            s = self.dyn(params, self.cut(s, t_start + n), xs[t], t_start + n)
            if probes is not None:
                s = jax.tree.map(lambda a, p, t=t: a + p[t], s, probes)
            ys[t], states[t] = self.cell.output(s), s
        return s, jnp.stack(ys), jax.tree.map(lambda *a: jnp.stack(a), *states)

    def state_gradients(self, params, xs, loss):
        s0 = self.s0(params, xs.shape[1:-1])
        zeros = jax.tree.map(lambda c: jnp.zeros((len(xs), *c.shape), c.dtype), s0)
        return jax.grad(lambda e: loss(self.run(params, xs, probes=e)[1]))(zeros)


def loss(ys):
    return jnp.sum(jnp.sin(ys) ** 2)


def setup(cell):
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    params = jax.tree.map(lambda a: a.astype(F64) + 0.1, cell.init(k1, I))
    xs = jax.random.normal(k2, (T, B, I), F64)
    return params, xs


def close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL), a, b)


def flat_states(tree):
    """``(T, n)`` flattened carries of a single sequence (time first)."""
    return jax.vmap(lambda s: ravel_pytree(s)[0])(tree)


# --------------------------------------------------------------------------------------------------
# the consumers


def c_unroll(cell, ref, params, xs, fused):
    final, ys = jr.unroll(cell, params, xs, fused=fused)
    r_final, r_ys, _ = ref.run(params, xs)
    close((final, ys), (r_final, r_ys))
    g = jax.grad(lambda p: loss(jr.unroll(cell, p, xs, fused=fused)[1]))(params)
    close(g, jax.grad(lambda p: loss(ref.run(p, xs)[1]))(params))


def c_unroll_jit(cell, ref, params, xs):
    """The cell passes through jit as an ordinary argument (its data are leaves)."""
    f = jax.jit(lambda c, p: jax.grad(lambda p: loss(jr.unroll(c, p, xs)[1]))(p))
    close(f(cell, params), jax.grad(lambda p: loss(ref.run(p, xs)[1]))(params))


def c_chunks(cell, ref, params, xs):
    """A stream in two chunks, the carry and the step index passed on, equals one unroll."""
    f1, y1 = jr.unroll(cell, params, xs[:3])
    f2, y2 = jr.unroll(cell, params, xs[3:], f1, t0=3)
    r_final, r_ys, _ = ref.run(params, xs)
    close((f2, jnp.concatenate([y1, y2])), (r_final, r_ys))


def c_state_gradients(cell, ref, params, xs):
    l, ys, g, st = jr.state_gradients(cell, params, xs, loss, return_states=True)
    _, r_ys, r_st = ref.run(params, xs)
    close((l, ys, g, st), (loss(r_ys), r_ys, ref.state_gradients(params, xs, loss), r_st))


def c_gradient_flow(cell, ref, params, xs):
    g = ref.state_gradients(params, xs, loss)
    sq = sum(jnp.sum(leaf**2, axis=-1) for leaf in jax.tree.leaves(g))
    close(jr.gradient_flow(cell, params, xs, loss), jnp.mean(jnp.sqrt(sq), axis=1))


def c_pascanu(cell, ref, params, xs):
    d = ref.state_gradients(params, xs, loss)
    _, _, states = ref.run(params, xs)
    s0 = ref.s0(params, (B,))
    num = den = 0.0
    for k in range(T):
        prev = s0 if k == 0 else jax.tree.map(lambda s, k=k: s[k - 1], states)
        d_k = jax.tree.map(lambda e, k=k: e[k], d)
        _, pull = jax.vjp(lambda s, k=k: ref.dyn(params, s, xs[k], k), prev)
        (dj,) = pull(d_k)
        x = sum(jnp.sum(v.reshape(B, -1) ** 2, -1) for v in jax.tree.leaves(dj))
        y = sum(jnp.sum(v.reshape(B, -1) ** 2, -1) for v in jax.tree.leaves(d_k))
        valid = y >= 1e-20
        num = num + jnp.mean(jnp.where(valid, (x / jnp.where(valid, y, 1.0) - 1) ** 2, 0.0))
        den = den + jnp.mean(valid.astype(F64))
    close(jr.pascanu(cell, params, xs, loss), num / den)
    g = jax.grad(lambda p: jr.pascanu(cell, p, xs, loss))(params)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(g))


def c_tbptt(cell, ref, params, xs):
    k1, k2 = 2, 3
    sg = jax.lax.stop_gradient

    def ref_loss(p):
        _, ys_fwd, states = ref.run(sg(p), xs)
        ys = []
        for j in range(-(-T // k1)):
            e = min((j + 1) * k1, T)
            a = max(e - k2, 0)
            s = ref.s0(p, (B,)) if a == 0 else jax.tree.map(lambda v, a=a: sg(v[a - 1]), states)
            for t in range(a, e):
                s = ref.dyn(p, ref.cut(s, t), xs[t], t)
                if t >= j * k1:
                    ys.append(ref.cell.output(s))
        return loss(jnp.stack(ys)), ys_fwd

    _, ys = jr.tbptt(cell, params, xs, k1, k2)
    close(ys, ref.run(params, xs)[1])
    close(
        jax.grad(lambda p: loss(jr.tbptt(cell, p, xs, k1, k2)[1]))(params),
        jax.grad(lambda p: ref_loss(p)[0])(params),
    )


def ref_jacobians(ref, params, xs):
    s = ref.s0(params, ())
    flat, unravel = ravel_pytree(s)
    Js = []
    for t in range(len(xs)):
        Js.append(
            jax.jacobian(lambda v, t=t, s=s: ravel_pytree(ref.dyn(params, unravel(v), xs[t], t))[0])(flat)
        )
        s = ref.dyn(params, s, xs[t], t)
        flat = ravel_pytree(s)[0]
    return jnp.stack(Js)


def c_step_jacobians(cell, ref, params, xs):
    close(jr.step_jacobians(cell, params, xs[:, 0]), ref_jacobians(ref, params, xs[:, 0]))


def c_jacobian_norms(cell, ref, params, xs):
    Js = ref_jacobians(ref, params, xs[:, 0])
    n = Js.shape[1]
    N = np.zeros((T, T))
    for t in range(T):
        for k in range(t + 1):
            P = jnp.eye(n)
            for i in range(k + 1, t + 1):
                P = Js[i] @ P
            N[t, k] = np.linalg.norm(np.asarray(P), 2)
    np.testing.assert_allclose(jr.jacobian_norms(cell, params, xs[:, 0]), N, rtol=1e-8, atol=1e-12)


def c_lyapunov(cell, ref, params, xs):
    Js = ref_jacobians(ref, params, xs[:, 0])
    n = Js.shape[1]
    # dropout zeroes columns of J: the exponents past the rank of the product are rounding noise, so
    # only the largest is compared there
    k = 1 if ref.dropout else n
    Q = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(0), (n, k), F64))[0]
    total = jnp.zeros(k)
    for J in Js:
        Q, R = jnp.linalg.qr(J @ Q)
        sign = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0)
        Q, total = Q * sign, total + jnp.log(jnp.abs(jnp.diagonal(R)))
    close(jr.lyapunov_spectrum(cell, params, xs[:, 0], k=k), -jnp.sort(-total / T))


def c_layers(cell, ref, params, xs):
    r_final, r_ys, _ = ref.run(params, xs)
    close(jr.layer(cell).apply(params, xs), (r_final, r_ys))
    close(jr.stack(cell).apply((params,), xs), ((r_final,), r_ys))
    bi = jr.bidirectional(cell)
    b_final, b_ys, _ = ref.run(params, xs, reverse=True)
    close(
        bi.apply({"forward": params, "backward": params}, xs),
        ((r_final, b_final), jnp.concatenate([r_ys, b_ys], -1)),
    )


def _value_and_grad_close(run, ref, params, xs):
    """``run(params) -> (final, ys)`` equals the loop in values and in the gradient of ``loss(ys)``; one
    compiled program for both."""
    (_, out), g = jax.jit(jax.value_and_grad(lambda p: (loss(run(p)[1]), run(p)), has_aux=True))(params)
    close(out, ref.run(params, xs)[:2])
    close(g, jax.grad(lambda p: loss(ref.run(p, xs)[1]))(params))


def c_unroll_pallas(cell, ref, params, xs):
    """The persistent Pallas kernels (interpret mode here): the loop's values and gradients; a cell
    without a fused kernel, or one that reads the step index or cuts gradients, is refused."""
    if cell.kernel is None or "pallas" not in cell.kernel.backends:
        with pytest.raises(ValueError, match="has no kernel for"):
            jr.unroll(cell, params, xs, backend="pallas")
        return
    if cell.uses_step_index or cell.has_cut:
        with pytest.raises(ValueError, match="cannot take a cell that reads the step index or cuts"):
            jr.unroll(cell, params, xs, backend="pallas")
        return
    _value_and_grad_close(lambda p: jr.unroll(cell, p, xs, backend="pallas"), ref, params, xs)


def c_parallel_newton(cell, ref, params, xs):
    """Newton's method parallel in time (jaxrnn.newton): the sequential loop's values and gradients;
    cells whose step reads the step index or cuts gradients are refused."""
    if cell.uses_step_index or cell.has_cut:
        with pytest.raises(ValueError, match="reads the step index or cuts gradients"):
            jr.parallel_newton(cell, params, xs)
        return
    _value_and_grad_close(lambda p: jr.parallel_newton(cell, p, xs)[:2], ref, params, xs)


CONSUMERS = {
    "unroll": lambda *a: c_unroll(*a, fused=True),
    "unroll_reference_scan": lambda *a: c_unroll(*a, fused=False),
    "unroll_pallas": c_unroll_pallas,
    "unroll_jit": c_unroll_jit,
    "unroll_chunks_t0": c_chunks,
    "parallel_newton": c_parallel_newton,
    "state_gradients": c_state_gradients,
    "gradient_flow": c_gradient_flow,
    "pascanu": c_pascanu,
    "tbptt": c_tbptt,
    "step_jacobians": c_step_jacobians,
    "jacobian_norms": c_jacobian_norms,
    "lyapunov_spectrum": c_lyapunov,
    "layers": c_layers,
}


@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("base", list(BASES))
def test_matrix(base, transform, consumer):
    error = expected_error(base, transform)
    if error is not None:
        exc, match = error
        with pytest.raises(exc, match=match):
            cell = make_cell(base, transform)
            params, xs = setup(cell)
            CONSUMERS[consumer](cell, Ref(base, transform), params, xs)
        return
    cell = make_cell(base, transform)
    if transform == "dropout_inference":  # it *is* the plain cell, whose row the matrix already holds
        assert cell == make_cell(base, "plain")
        return
    params, xs = setup(cell)
    CONSUMERS[consumer](cell, Ref(base, transform), params, xs)


# --------------------------------------------------------------------------------------------------
# the properties the matrix rests on


@pytest.mark.parametrize("base", list(BASES))
def test_transforms_keep_the_carry(base):
    """No transform hides state in the carry: the structure and shapes are the plain cell's."""
    plain = BASES[base]()
    p = plain.init(jax.random.PRNGKey(0), I)
    want = jax.eval_shape(lambda: plain.initial_carry(p, (B,)))
    cells = [jr.truncate(plain, CUTS)]
    if base != "deep":
        cells += [jr.recurrent_dropout(plain, RATE, KEY), jr.learned_initial_state(plain)]
        cells += [make_cell(base, "composed"), jr.recurrent_dropout(jr.truncate(plain, CUTS), RATE, KEY)]
    for cell in cells:
        q = cell.init(jax.random.PRNGKey(0), I)
        assert jax.eval_shape(lambda c=cell, q=q: c.initial_carry(q, (B,))) == want, cell


def test_inference_dropout_is_the_cell():
    for c in (jr.lstm(4), jr.gru(4), jr.elman(4)):
        assert jr.recurrent_dropout(c, 0.3, None) is c
        assert jr.recurrent_dropout(c, 0.3, KEY, deterministic=True) is c
        assert jr.recurrent_dropout(c, 0.0, KEY) is c


def test_truncation_changes_gradients_not_dynamics():
    cell = jr.lstm(H)
    cut = jr.truncate(cell, CUTS)
    params, xs = setup(cell)
    close(jr.step_jacobians(cut, params, xs[:, 0]), jr.step_jacobians(cell, params, xs[:, 0]))
    close(jr.lyapunov_spectrum(cut, params, xs[:, 0]), jr.lyapunov_spectrum(cell, params, xs[:, 0]))
    close(jr.unroll(cut, params, xs), jr.unroll(cell, params, xs))
    g_cut = jax.grad(lambda p: loss(jr.unroll(cut, p, xs)[1]))(params)
    g_full = jax.grad(lambda p: loss(jr.unroll(cell, p, xs)[1]))(params)
    assert not np.allclose(g_cut["W_hh"], g_full["W_hh"])


def test_deep_rnn_equals_stack_and_draws_the_same_params():
    a, b = jr.lstm(4), jr.gru(4)
    xs = jax.random.normal(jax.random.PRNGKey(2), (6, 3, 4), jnp.float32)
    lengths = jnp.array([6, 2, 0])
    for skip in (False, True):
        deep, st = jr.deep_rnn(a, b, skip=skip), jr.stack(a, b, skip=skip)
        params = deep.init(jax.random.PRNGKey(1), 4)
        jax.tree.map(np.testing.assert_array_equal, params, st.init(jax.random.PRNGKey(1), 4))
        run_d = lambda p, c=deep: jr.unroll(c, p, xs, lengths=lengths)  # noqa: E731
        run_s = lambda p, s=st: s.apply(p, xs, lengths=lengths)  # noqa: E731

        @jax.jit  # compiled once, not dispatched op by op
        def both(p, run_d=run_d, run_s=run_s):
            grads = [jax.grad(lambda q, r=r: jnp.sum(r(q)[1] ** 2))(p) for r in (run_d, run_s)]
            return run_d(p), run_s(p), grads

        out_d, out_s, (g_d, g_s) = both(params)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), out_d, out_s)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), g_d, g_s)


def test_cells_are_values():
    assert jr.gru(16) == jr.gru(16) and hash(jr.gru(16)) == hash(jr.gru(16))
    assert jr.gru(16) != jr.gru(17) and jr.gru(16) != jr.lstm(16)
    assert jr.truncate(jr.elman(3), CUTS) == jr.truncate(jr.elman(3), np.array(CUTS))
    assert jr.truncate(jr.elman(3), CUTS) != jr.truncate(jr.elman(3), ~CUTS)
    assert repr(jr.lstm(128)) == "lstm(hidden_size=128)"
    assert repr(jr.lstm(8, forget_bias=2.0)) == "lstm(hidden_size=8, forget_bias=2.0)"
    assert repr(jr.elman(4, "relu")) == "elman(hidden_size=4, activation='relu')"
    assert repr(jr.truncate(jr.gru(2), CUTS)) == "truncate(cell=gru(hidden_size=2), cuts=bool[5])"
    traces = []

    @jax.jit
    def f(cell, params, xs):
        traces.append(cell)
        return jr.unroll(cell, params, xs)[1]

    cell = jr.gru(4)
    params = cell.init(jax.random.PRNGKey(0), 3)
    xs = jnp.ones((2, 1, 3), jnp.float32)
    f(cell, params, xs)
    f(jr.gru(4), params, xs)  # an equal cell rebuilt (e.g. from a checkpoint): no new trace
    assert len(traces) == 1
    g = jax.jit(lambda c, p: jr.unroll(c, p, xs)[1], static_argnums=0)
    np.testing.assert_array_equal(g(cell, params), g(jr.gru(4), params))
    # data leaves are traced, so one compiled function serves every schedule of a length
    h = jax.jit(lambda c, p: jax.grad(lambda p: jnp.sum(jr.unroll(c, p, xs)[1]))(p))
    h(jr.truncate(cell, jnp.array([False, True])), params)
    h(jr.truncate(cell, jnp.array([False, False])), params)
    assert jax.tree.structure(jr.truncate(cell, jnp.array([False, True]))).num_leaves == 1
    # vmap and grad take a cell as an ordinary argument (a cell with data: in_axes=None for it)
    batch = jnp.ones((4, 2, 1, 3), jnp.float32)
    ys = jax.vmap(lambda c, x: jr.unroll(c, params, x)[1], in_axes=(None, 0))(cell, batch)
    np.testing.assert_allclose(ys[0], jr.unroll(cell, params, batch[0])[1], rtol=1e-6)
    cut = jr.truncate(cell, jnp.array([False, True]))
    ys = jax.vmap(lambda c, x: jr.unroll(c, params, x)[1], in_axes=(None, 0))(cut, batch)
    np.testing.assert_allclose(ys[1], jr.unroll(cell, params, batch[1])[1], rtol=1e-6)
    g = jax.grad(lambda p, c: jnp.sum(jr.unroll(c, p, xs)[1]))(params, cut)
    assert jax.tree.structure(g) == jax.tree.structure(params)


def test_step_needs_the_step_index_only_where_it_is_read():
    cell = jr.recurrent_dropout(jr.lstm(3), RATE, KEY)
    params = cell.init(jax.random.PRNGKey(0), 2)
    carry = cell.initial_carry(params, (2,))
    with pytest.raises(ValueError, match="step index"):
        cell.step(params, carry, jnp.ones((2, 2), jnp.float32))
    cell.step(params, carry, jnp.ones((2, 2), jnp.float32), t=0)
    jr.lstm(3).step(params, carry, jnp.ones((2, 2), jnp.float32))  # a plain cell ignores t


def test_consumers_name_a_layer_and_unknown_keywords():
    st = jr.stack(jr.lstm(3), jr.lstm(3))
    for fn in (
        lambda: jr.tbptt(st, (), jnp.ones((4, 2)), 2, 2),
        lambda: jr.pascanu(st, (), jnp.ones((4, 2)), loss),
        lambda: jr.step_jacobians(st, (), jnp.ones((4, 2))),
    ):
        with pytest.raises(TypeError, match="deep_rnn"):
            fn()
    cell = jr.elman(3)
    params = cell.init(jax.random.PRNGKey(0), 2)
    with pytest.raises(TypeError, match="state_gradients: unexpected keyword argument 'lenghts'"):
        jr.state_gradients(cell, params, jnp.ones((4, 1, 2)), loss, lenghts=jnp.array([2]))
    with pytest.raises(TypeError, match="gradient_flow: unexpected keyword"):
        jr.gradient_flow(cell, params, jnp.ones((4, 1, 2)), loss, revers=True)


def test_schedule_shorter_than_the_unroll_is_refused():
    cell = jr.truncate(jr.elman(3), tr.every(2, 4))
    params = cell.init(jax.random.PRNGKey(0), 2)
    jr.unroll(cell, params, jnp.ones((4, 1, 2)))
    with pytest.raises(ValueError, match="truncation schedule"):
        jr.unroll(cell, params, jnp.ones((5, 1, 2)))
    with pytest.raises(ValueError, match="truncation schedule"):
        jr.unroll(cell, params, jnp.ones((2, 1, 2)), t0=3)
    jr.unroll(cell, params, jnp.ones((5, 1, 2)), lengths=jnp.array([4]))
