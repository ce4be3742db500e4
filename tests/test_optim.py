"""Tests for jaxrnn.optim: Pascanu et al.'s fallback and regulariser gradient as optax transforms.

The reference is a numpy re-implementation of the authors' ``RNN.py`` (l. 219-243): the norm of all
gradients (W_hh's already holding alpha * dOmega/dW_hh); NaN / Inf / < 0 / > 1e10 -> W_hh's gradient
becomes 0.02 * W_hh and every other gradient 0; elif norm > cutoff -> rescale; then an SGD step.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn as jr
from jaxrnn.optim import (
    AddRegulariserGradientState,
    PascanuFallbackState,
    add_regulariser_gradient,
    pascanu_fallback,
    pascanu_sgd,
)

F32 = jnp.float32
ALPHA, CUTOFF, LR = 0.5, 1.0, 0.1


# --------------------------------------------------------------------------------------------------
# parameter trees


def _layer(rng, h=3, i=2, w_scale=0.5):
    return {
        "W_xh": rng.normal(size=(i, h)).astype(np.float32),
        "W_hh": (w_scale * rng.normal(size=(h, h))).astype(np.float32),
        "b": rng.normal(size=(h,)).astype(np.float32),
    }


def _tree(kind, seed=0, w_scale=0.5):
    rng = np.random.default_rng(seed)
    if kind == "flat":
        return _layer(rng, w_scale=w_scale)
    if kind == "model":
        return {"cell": _layer(rng, w_scale=w_scale), "w": rng.normal(size=(3, 2)).astype(np.float32),
                "b": rng.normal(size=(2,)).astype(np.float32)}  # fmt: skip
    if kind == "stack":
        return [_layer(rng, w_scale=w_scale), _layer(rng, h=3, i=3, w_scale=w_scale)]
    raise AssertionError(kind)


TREES = ["flat", "model", "stack"]


def _is_rec(path) -> bool:
    """Independent check: the last key of the path is the dict key 'W_hh'."""
    last = path[-1]
    return isinstance(last, jax.tree_util.DictKey) and last.key == "W_hh"


def _flat(tree):
    """[(path, np.ndarray)] in a fixed order."""
    return [(p, np.asarray(x)) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _unflat(like, leaves):
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


# --------------------------------------------------------------------------------------------------
# the authors' code in numpy


def authors_step(grads, omega, params, alpha, cutoff, lr, max_norm=1e10, shrink=0.02):
    """RNN.py l. 219-243 on numpy leaves; returns (new params, final gradient, norm, fired)."""
    p = _flat(params)
    g = [x.astype(np.float64) for _, x in _flat(grads)]
    o = [x.astype(np.float64) for _, x in _flat(omega)]
    with np.errstate(all="ignore"):
        # only W_hh gets alpha * dOmega/dW_hh (the code: gW_hh = gW_hh + alpha * dOmega/dW_hh)
        g = [gi + alpha * oi if _is_rec(path) else gi for (path, _), gi, oi in zip(p, g, o)]
        norm = math.sqrt(sum(float(np.sum(gi**2)) for gi in g))
        fired = math.isnan(norm) or math.isinf(norm) or norm < 0 or norm > max_norm
        if fired:
            g = [
                shrink * x.astype(np.float64) if _is_rec(path) else np.zeros_like(x, np.float64)
                for path, x in p
            ]
        elif norm > cutoff:
            g = [gi * cutoff / norm for gi in g]
        new = [x.astype(np.float64) - lr * gi for (_, x), gi in zip(p, g)]
    return new, g, norm, fired


def _case(kind, case, seed=1, alpha=ALPHA, w_scale=0.5):
    """(params, grads, omega) with the total gradient's norm set by `case`."""
    params = _tree(kind, 0, w_scale)
    rng = np.random.default_rng(seed)
    flat = _flat(params)
    g = [rng.normal(size=x.shape) for _, x in flat]
    o = [rng.normal(size=x.shape) if _is_rec(path) else np.zeros(x.shape) for path, x in flat]
    total = math.sqrt(sum(np.sum((gi + alpha * oi) ** 2) for gi, oi in zip(g, o)))
    target = {"below": 0.5 * CUTOFF, "above": 3.0 * CUTOFF, "huge": 1e11}.get(case, 3.0 * CUTOFF)
    g = [gi * target / total for gi in g]
    o = [oi * target / total for oi in o]
    i_rec = next(i for i, (path, _) in enumerate(flat) if _is_rec(path))
    i_other = next(i for i, (path, _) in enumerate(flat) if not _is_rec(path))
    if case == "nan":
        g[i_other].flat[0] = np.nan
    elif case == "inf":
        g[i_rec].flat[-1] = np.inf
    elif case == "neg_inf":
        g[i_other].flat[-1] = -np.inf
    elif case == "omega_nan":
        o[i_rec].flat[0] = np.nan
    elif case == "overflow":  # finite in float32, but its square is not: the code's "can not trust"
        g[i_other].flat[0] = 3e19
    grads = _unflat(params, [x.astype(np.float32) for x in g])
    omega = _unflat(params, [x.astype(np.float32) for x in o])
    return params, grads, omega


CASES = ["below", "above", "huge", "nan", "inf", "neg_inf", "omega_nan", "overflow"]

# the recipe as the brief writes it (optax's clip after the fallback), and the exact one-transform form
CHAIN_OPTAX = optax.chain(
    add_regulariser_gradient(ALPHA), pascanu_fallback(), optax.clip_by_global_norm(CUTOFF), optax.sgd(LR)
)
CHAIN_EXACT = pascanu_sgd(LR, CUTOFF, ALPHA)
CHAINS = {"optax_clip": CHAIN_OPTAX, "exact": CHAIN_EXACT}


def _train_step(tx):
    def step(params, state, grads, omega):
        updates, state = tx.update(grads, state, params, omega_grads=omega)
        return optax.apply_updates(params, updates), updates, state

    return step


STEPS = {name: (_train_step(tx), jax.jit(_train_step(tx))) for name, tx in CHAINS.items()}


def _fallback_state(state):
    (s,) = [x for x in state if isinstance(x, PascanuFallbackState)]
    return s


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("kind", TREES)
def test_chain_matches_authors_code(kind, chain, jit):
    tx = CHAINS[chain]
    step = STEPS[chain][int(jit)]
    for case in CASES:
        params, grads, omega = _case(kind, case)
        state = tx.init(params)
        new, updates, state = step(params, state, grads, omega)
        ref_new, ref_g, ref_norm, fired = authors_step(grads, omega, params, ALPHA, CUTOFF, LR)
        assert fired == (case not in ("below", "above")), case
        for (path, x), r, (_, p) in zip(_flat(new), ref_new, _flat(params)):
            assert np.all(np.isfinite(x)), (case, path)
            if fired and not _is_rec(path):
                np.testing.assert_array_equal(x, p, err_msg=f"{case} {path}")  # exactly unchanged
            else:
                np.testing.assert_allclose(x, r, rtol=1e-5, atol=1e-6, err_msg=f"{case} {path}")
        for (path, u), r in zip(_flat(updates), ref_g):
            np.testing.assert_allclose(u, -LR * r, rtol=1e-5, atol=1e-7, err_msg=f"{case} {path}")
        fs = _fallback_state(state)
        assert bool(fs.fired) == fired and int(fs.count) == int(fired)
        if case in ("below", "above", "huge"):
            np.testing.assert_allclose(float(fs.norm), ref_norm, rtol=1e-5)
        else:
            assert not np.isfinite(float(fs.norm)), case


def test_fallback_on_top_of_a_big_w_hh_differs_only_in_the_documented_corner():
    """shrink * ||W_hh|| > cutoff: the exact form keeps 0.02 W_hh; optax's clip after it rescales it."""
    params, grads, omega = _case("flat", "nan", w_scale=100.0)
    fallback_norm = 0.02 * np.linalg.norm(params["W_hh"])
    assert fallback_norm > CUTOFF
    ref_new, ref_g, _, fired = authors_step(grads, omega, params, ALPHA, CUTOFF, LR)
    assert fired
    new, _, _ = STEPS["exact"][1](params, CHAIN_EXACT.init(params), grads, omega)
    for (path, x), r in zip(_flat(new), ref_new):
        np.testing.assert_allclose(x, r, rtol=1e-5, atol=1e-6, err_msg=str(path))
    _, updates, _ = STEPS["optax_clip"][1](params, CHAIN_OPTAX.init(params), grads, omega)
    expect = -LR * 0.02 * params["W_hh"] * CUTOFF / fallback_norm  # the fallback step, rescaled to CUTOFF
    np.testing.assert_allclose(np.asarray(updates["W_hh"]), expect, rtol=1e-5)
    assert not np.allclose(expect, -LR * ref_g[0])  # ref_g[0] is W_hh's (sorted keys): really differs
    assert not np.any(np.asarray(updates["W_xh"])) and not np.any(np.asarray(updates["b"]))


# --------------------------------------------------------------------------------------------------
# a real training step: non-finite gradients never reach the parameters

H, I, T, B = 4, 2, 6, 3


def _model(seed=0, dtype=F32):
    k_c, k_w, k_x, k_y = jax.random.split(jax.random.PRNGKey(seed), 4)
    cell = jr.elman(H)
    params = {
        "cell": cell.init(k_c, I, dtype),
        "w": jax.random.normal(k_w, (H, 1), dtype),
        "b": jnp.zeros((1,), dtype),
    }
    xs = jax.random.normal(k_x, (T, B, I), dtype)
    tgt = jax.random.normal(k_y, (B, 1), dtype)
    return cell, params, xs, tgt


def _loss(cell, params, xs, tgt):
    _, ys = jr.unroll(cell, params["cell"], xs)
    pred = ys[-1] @ params["w"] + params["b"]
    return jnp.mean((pred - tgt) ** 2)


def test_nonfinite_gradients_never_reach_params_in_a_jitted_sgd_step():
    cell, params, xs, tgt = _model()
    lr = 0.5
    tx = optax.chain(pascanu_fallback(), optax.clip_by_global_norm(1.0), optax.sgd(lr))

    @jax.jit
    def train_step(params, state, xs, tgt):
        grads = jax.grad(lambda p: _loss(cell, p, xs, tgt))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, grads

    state = tx.init(params)
    bad_inputs = [
        xs.at[2, 1, 0].set(jnp.nan),  # NaN gradients
        xs.at[0, 0, 1].set(jnp.inf),  # Inf / NaN gradients
        xs,  # a finite but huge gradient (> 1e10), below
    ]
    bad_targets = [tgt, tgt, tgt + 1e12]
    for n, (x_bad, t_bad) in enumerate(zip(bad_inputs, bad_targets), start=1):
        new, state, grads = train_step(params, state, x_bad, t_bad)
        norm = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(grads)))
        assert not norm <= 1e10  # the step really was bad
        for leaf in jax.tree.leaves(new):
            assert np.all(np.isfinite(np.asarray(leaf)))
        w_old = np.asarray(params["cell"]["W_hh"])
        np.testing.assert_allclose(np.asarray(new["cell"]["W_hh"]), (1 - 0.02 * lr) * w_old, rtol=1e-6)
        for key in ("W_xh", "b"):
            np.testing.assert_array_equal(np.asarray(new["cell"][key]), np.asarray(params["cell"][key]))
        for key in ("w", "b"):
            np.testing.assert_array_equal(np.asarray(new[key]), np.asarray(params[key]))
        fs = state[0]
        assert bool(fs.fired) and int(fs.count) == n
        params = new
    # a normal step afterwards: the fallback does not fire, the count stays, params move
    new, state, grads = train_step(params, state, xs, tgt)
    fs = state[0]
    assert not bool(fs.fired) and int(fs.count) == 3
    assert not np.allclose(np.asarray(new["cell"]["W_xh"]), np.asarray(params["cell"]["W_xh"]))
    norm = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(float(fs.norm), norm, rtol=1e-5)


def test_fallback_alone_returns_shrink_times_every_recurrent_leaf():
    """Direct transform output, no chain: every W_hh (two layers) -> shrink * W_hh, the rest 0."""
    params, grads, _ = _case("stack", "nan")
    tx = pascanu_fallback(max_norm=1e6, shrink=0.25)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    for layer_u, layer_p in zip(updates, params):
        np.testing.assert_allclose(np.asarray(layer_u["W_hh"]), 0.25 * layer_p["W_hh"], rtol=1e-7)
        assert not np.any(np.asarray(layer_u["W_xh"])) and not np.any(np.asarray(layer_u["b"]))
    # below max_norm: unchanged, bit for bit
    params, grads, _ = _case("stack", "above")
    updates, state = jax.jit(tx.update)(grads, state, params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(g))
    assert int(state.count) == 1 and not bool(state.fired)


def test_fallback_max_norm_is_a_strict_bound_and_dtypes_are_kept():
    params = {"W_hh": np.ones((2, 2)), "v": np.zeros((3,))}  # float64
    grads = {"W_hh": np.full((2, 2), 1.5), "v": np.zeros((3,))}  # norm exactly 3
    for max_norm, fires in [(3.0, False), (2.999, True)]:
        tx = pascanu_fallback(max_norm=max_norm)
        state = tx.init(params)
        assert state.norm.dtype == jnp.float64
        updates, state = tx.update(grads, state, params)
        assert bool(state.fired) == fires
        assert all(u.dtype == jnp.float64 for u in jax.tree.leaves(updates))
        expect = 0.02 * params["W_hh"] if fires else grads["W_hh"]
        np.testing.assert_allclose(np.asarray(updates["W_hh"]), expect, rtol=1e-12)


class _Params(NamedTuple):
    U: np.ndarray
    W: np.ndarray
    v: np.ndarray


@pytest.mark.parametrize(
    "recurrent_key, shrunk",
    [("U", {"U"}), (("U", "W"), {"U", "W"}), ("W", {"W"})],
)
def test_fallback_custom_recurrent_keys_and_attribute_paths(recurrent_key, shrunk):
    params = _Params(
        U=np.ones((2, 2), np.float32), W=2 * np.ones((2, 3), np.float32), v=np.ones(2, np.float32)
    )
    grads = jax.tree.map(lambda x: np.full_like(x, np.nan), params)
    tx = pascanu_fallback(recurrent_key=recurrent_key)
    updates, _ = tx.update(grads, tx.init(params), params)
    for name in _Params._fields:
        expect = 0.02 * getattr(params, name) if name in shrunk else np.zeros_like(getattr(params, name))
        np.testing.assert_allclose(np.asarray(getattr(updates, name)), expect, rtol=1e-7)


def test_fallback_works_with_injected_hyperparams():
    """max_norm / shrink may be traced (optax.inject_hyperparams): the same result."""
    params, grads, _ = _case("model", "huge")
    plain = pascanu_fallback(max_norm=1e10, shrink=0.05)
    injected = optax.inject_hyperparams(pascanu_fallback)(max_norm=1e10, shrink=0.05)
    u1, _ = plain.update(grads, plain.init(params), params)
    u2, s2 = jax.jit(injected.update)(grads, injected.init(params), params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert int(s2.inner_state.count) == 1


# --------------------------------------------------------------------------------------------------
# add_regulariser_gradient


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_add_regulariser_gradient_constant_and_schedule(jit):
    params, grads, omega = _case("model", "above")
    schedule = lambda count: 0.5 / (count + 1)  # alpha_t = 1 / (2t), t = 1, 2, ...  # noqa: E731
    for alpha, alphas in [(0.75, [0.75] * 3), (0.0, [0.0] * 3), (schedule, [1 / (2 * t) for t in (1, 2, 3)])]:
        tx = add_regulariser_gradient(alpha)
        update = jax.jit(tx.update) if jit else tx.update
        state = tx.init(params)
        assert isinstance(state, AddRegulariserGradientState) and int(state.count) == 0
        for t, a in enumerate(alphas, start=1):
            out, state = update(grads, state, params, omega_grads=omega)
            assert int(state.count) == t
            for u, g, o in zip(jax.tree.leaves(out), jax.tree.leaves(grads), jax.tree.leaves(omega)):
                assert u.dtype == jnp.float32
                np.testing.assert_allclose(np.asarray(u), g + a * o, rtol=1e-6, atol=1e-7)


def test_add_regulariser_gradient_in_a_chain_with_plain_transforms():
    """optax.chain forwards omega_grads to it and drops it for the plain transforms around it."""
    params, grads, omega = _case("stack", "above")
    tx = optax.chain(optax.scale(2.0), add_regulariser_gradient(0.5, name="reg"), optax.scale(-3.0))
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    out, _ = jax.jit(lambda g, s, p, o: tx.update(g, s, p, reg=o))(grads, tx.init(params), params, omega)
    for u, g, o in zip(jax.tree.leaves(out), jax.tree.leaves(grads), jax.tree.leaves(omega)):
        np.testing.assert_allclose(np.asarray(u), -3.0 * (2.0 * g + 0.5 * o), rtol=1e-6, atol=1e-7)
    # float64 regulariser gradients do not change the updates' dtype
    out, _ = add_regulariser_gradient(1.0).update(
        grads,
        AddRegulariserGradientState(jnp.zeros((), jnp.int32)),
        omega_grads=jax.tree.map(np.float64, omega),
    )
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(out))


# --------------------------------------------------------------------------------------------------
# end to end with a real Elman cell and jr.pascanu


def test_end_to_end_elman_pascanu_step_matches_hand_computation():
    cell, params, xs, tgt = _model(seed=3)
    alpha, lr = 2.0, 0.1

    def omega_fn(p):
        return jr.pascanu(cell, p["cell"], xs, lambda ys: jnp.mean((ys[-1] @ p["w"] + p["b"] - tgt) ** 2))

    g_e = jax.jit(jax.grad(lambda p: _loss(cell, p, xs, tgt)))(params)  # compiled: not op by op
    g_o = jax.jit(jax.grad(omega_fn))(params)
    assert np.any(np.asarray(g_o["cell"]["W_hh"]))  # the regulariser really contributes
    total = [np.asarray(a, np.float64) + alpha * np.asarray(b, np.float64) for a, b in
             zip(jax.tree.leaves(g_e), jax.tree.leaves(g_o))]  # fmt: skip
    norm = math.sqrt(sum(np.sum(x**2) for x in total))

    makers = (  # the threshold is traced here: one compilation per chain for both thresholds
        lambda thr: optax.chain(
            add_regulariser_gradient(alpha), pascanu_fallback(), optax.clip_by_global_norm(thr)
        ),
        lambda thr: optax.chain(add_regulariser_gradient(alpha), pascanu_fallback(threshold=thr)),
    )

    def make_step(make_tx):
        @jax.jit
        def step(params, thr):
            tx = make_tx(thr)
            grads = jax.grad(lambda p: _loss(cell, p, xs, tgt))(params)
            omega_grads = jax.grad(omega_fn)(params)
            return tx.update(grads, tx.init(params), params, omega_grads=omega_grads)

        return step

    steps = [make_step(m) for m in makers]
    for thr in (0.5 * norm, 2.0 * norm):  # clipped, and not
        expect = [x * (thr / norm if norm > thr else 1.0) for x in total]
        for step in steps:
            updates, state = step(params, jnp.asarray(thr, F32))
            for u, e in zip(jax.tree.leaves(updates), expect):
                np.testing.assert_allclose(np.asarray(u), e, rtol=1e-4, atol=1e-6)
            assert not bool(state[1].fired)
            np.testing.assert_allclose(float(state[1].norm), norm, rtol=1e-5)

        # the one-call optimizer: theta - lr * clip(grad E + alpha grad Omega)
        tx = pascanu_sgd(lr, thr, alpha)
        updates, _ = tx.update(g_e, tx.init(params), params, omega_grads=g_o)
        new = optax.apply_updates(params, updates)
        for n, old, e in zip(jax.tree.leaves(new), jax.tree.leaves(params), expect):
            np.testing.assert_allclose(np.asarray(n), np.asarray(old) - lr * e, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# errors


def test_fallback_errors():
    params = _tree("model")
    tx = pascanu_fallback()
    with pytest.raises(ValueError, match=r"pascanu_fallback\.update: params is required"):
        tx.update(params, tx.init(params))
    empty = jr.accumulator(3).init(jax.random.PRNGKey(0), 3)  # kind='sum': no parameters at all
    for bad in (empty, {"w": np.ones(2)}, {"cell": {"W_xh": np.ones(2)}}):
        with pytest.raises(ValueError, match=r"pascanu_fallback\.init: recurrent_key='W_hh' names no leaf"):
            tx.init(bad)
    typo = pascanu_fallback(recurrent_key="W_hhh")
    with pytest.raises(ValueError, match=r"recurrent_key='W_hhh' names no leaf.*\['cell'\]\['W_hh'\]"):
        typo.init(params)
    with pytest.raises(ValueError, match=r"pascanu_fallback\.update: recurrent_key='W_hhh'"):
        typo.update(params, PascanuFallbackState(0, False, 0.0), params)
    state = tx.init(params)
    with pytest.raises(ValueError, match="updates and params must have the same tree structure"):
        tx.update(params["cell"], state, params)
    wrong_shape = jax.tree.map(lambda x: x, params)
    wrong_shape["w"] = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"update leaf \d+ has shape \(2, 3\) but the matching param"):
        tx.update(wrong_shape, state, params)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"max_norm": 0.0}, ValueError, "max_norm must be a finite real number > 0"),
        ({"max_norm": -1.0}, ValueError, "max_norm must be"),
        ({"max_norm": float("inf")}, ValueError, "max_norm must be"),
        ({"max_norm": float("nan")}, ValueError, "max_norm must be"),
        ({"max_norm": "big"}, TypeError, "max_norm must be"),
        ({"max_norm": np.ones(2)}, TypeError, "max_norm must be"),
        ({"shrink": 0.0}, ValueError, "shrink must be a finite real number > 0"),
        ({"shrink": -0.02}, ValueError, "shrink must be"),
        ({"shrink": float("nan")}, ValueError, "shrink must be"),
        ({"shrink": float("inf")}, ValueError, "shrink must be"),
        ({"shrink": True}, TypeError, "shrink must be"),
        ({"threshold": 0.0}, ValueError, "threshold must be a finite real number > 0 or None"),
        ({"threshold": float("inf")}, ValueError, "threshold must be"),
        ({"recurrent_key": ""}, TypeError, "recurrent_key must be a non-empty str"),
        ({"recurrent_key": 3}, TypeError, "recurrent_key must be"),
        ({"recurrent_key": []}, TypeError, "recurrent_key must be"),
        ({"recurrent_key": ("W_hh", None)}, TypeError, "recurrent_key must be"),
    ],
)
def test_fallback_bad_hyperparameters(kwargs, err, match):
    with pytest.raises(err, match="pascanu_fallback: " + match):
        pascanu_fallback(**kwargs)


@pytest.mark.parametrize(
    "alpha, err",
    [
        (-1.0, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("2", TypeError),
        (None, TypeError),
        (1j, TypeError),
    ],  # fmt: skip
)
def test_add_regulariser_gradient_bad_alpha(alpha, err):
    with pytest.raises(err, match=r"add_regulariser_gradient: alpha must be a finite real number >= 0"):
        add_regulariser_gradient(alpha)


def test_add_regulariser_gradient_errors():
    with pytest.raises(TypeError, match="add_regulariser_gradient: name must be a str"):
        add_regulariser_gradient(1.0, name="1x")
    params, grads, omega = _case("model", "above")
    tx = add_regulariser_gradient(1.0)
    state = tx.init(params)
    with pytest.raises(
        ValueError, match=r"regulariser's gradient is missing; pass it as .*omega_grads=.*none"
    ):
        tx.update(grads, state, params)
    chain = optax.chain(tx, optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"omega_grads=.*received: \['omega'\]"):
        chain.update(grads, chain.init(params), params, omega=omega)  # a misspelt keyword
    with pytest.raises(ValueError, match="omega_grads must have the tree structure of the updates"):
        tx.update(grads, state, params, omega_grads=omega["cell"])
    bad = jax.tree.map(lambda x: x, omega)
    bad["w"] = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"omega_grads leaf \d+ has shape \(3, 3\) but the matching update"):
        tx.update(grads, state, params, omega_grads=bad)
    # pascanu_sgd with a regulariser needs the extra argument; without one it does not
    with pytest.raises(ValueError, match="regulariser's gradient is missing"):
        CHAIN_EXACT.update(grads, CHAIN_EXACT.init(params), params)
    plain = pascanu_sgd(0.1)
    plain.update(grads, plain.init(params), params)
