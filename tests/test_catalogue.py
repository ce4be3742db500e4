"""The bad-input catalogue: every public function and factory, each documented argument given a wrong
type, a wrong shape, an out-of-range or a non-finite value. Each case asserts the exception type and
that the message names the function and the argument. The checks run before tracing, so almost
nothing here compiles."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxrnn as jr
from jaxrnn import decoding, losses
from jaxrnn import diagnostics as dg
from jaxrnn import initialisers as inits
from jaxrnn import truncation as tr

KEY = jax.random.PRNGKey(0)
F32 = jnp.float32
NAN, INF = float("nan"), float("inf")

FACTORIES = {
    "elman": jr.elman,
    "irnn": jr.irnn,
    "np_rnn": jr.np_rnn,
    "ctrnn": lambda h, **kw: jr.ctrnn(h, **({"alpha": 0.5} | kw)),
    "accumulator": jr.accumulator,
    "lstm": jr.lstm,
    "lstm1997": jr.lstm1997,
    "gru": jr.gru,
    "mgu": jr.mgu,
    "mrnn": jr.mrnn,
    "min_gru": jr.min_gru,
    "min_lstm": jr.min_lstm,
    "lru": jr.lru,
    "bn_lstm": lambda h, **kw: jr.bn_lstm(h, **({"max_steps": 4} | kw)),
    "ln_lstm": jr.ln_lstm,
    "narx": lambda h, **kw: jr.narx(2, h, **kw),
}

CASES: list = []


def case(name, call, exc, *match):
    CASES.append(pytest.param(call, exc, match, id=name))


# ---- factories: hidden_size, and every hyper-parameter -------------------------------------------

for fname, make in FACTORIES.items():
    for bad, exc in (
        ("8", TypeError),
        (2.5, TypeError),
        (True, TypeError),
        (None, TypeError),
        (0, ValueError),
    ):
        case(f"{fname}-hidden_size-{bad!r}", lambda m=make, b=bad: m(b), exc, f"{fname}: hidden_size")
    case(f"{fname}-hidden_size--3", lambda m=make: m(-3), ValueError, "hidden_size", "positive int")

for fname in ("lstm", "ln_lstm", "bn_lstm"):
    make = FACTORIES[fname]
    for bad, exc in (
        ("one", TypeError),
        (NAN, ValueError),
        (INF, ValueError),
        (np.array([1.0, 2.0]), TypeError),
    ):
        case(f"{fname}-forget_bias-{bad!r}", lambda m=make, b=bad: m(4, forget_bias=b), exc, "forget_bias")
for fname in ("ln_lstm", "bn_lstm"):
    make = FACTORIES[fname]
    for bad, exc in (("small", TypeError), (0.0, ValueError), (-1e-5, ValueError), (NAN, ValueError)):
        case(f"{fname}-eps-{bad!r}", lambda m=make, b=bad: m(4, eps=b), exc, "eps")
for fname in ("elman", "ctrnn", "mrnn"):
    make = FACTORIES[fname]
    case(f"{fname}-activation-name", lambda m=make: m(4, activation="softsign"), ValueError, "activation")
    case(f"{fname}-activation-type", lambda m=make: m(4, activation=3), TypeError, "activation")
for fname in ("elman", "ctrnn", "lstm", "gru", "mgu", "mrnn", "lstm1997", "ln_lstm", "bn_lstm"):
    make = FACTORIES[fname]
    for arg in ("kernel_init", "recurrent_init", "bias_init"):
        case(f"{fname}-{arg}", lambda m=make, a=arg: m(4, **{a: "nope"}), ValueError, arg)
for fname in ("min_gru", "min_lstm"):
    make = FACTORIES[fname]
    case(f"{fname}-log_space", lambda m=make: m(4, log_space="yes"), TypeError, "log_space")
    case(f"{fname}-kernel_init", lambda m=make: m(4, kernel_init="nope"), ValueError, "kernel_init")
case("lstm-peepholes", lambda: jr.lstm(4, peepholes=1), TypeError, "lstm: peepholes")
case("gru-reset_after", lambda: jr.gru(4, reset_after="yes"), TypeError, "gru: reset_after")
for bad, exc in (
    ("fast", TypeError),
    (0.0, ValueError),
    (1.5, ValueError),
    (NAN, ValueError),
    (-0.1, ValueError),
):
    case(f"ctrnn-alpha-{bad!r}", lambda b=bad: jr.ctrnn(4, b), exc, "ctrnn: alpha")
case("ctrnn-dt-tau-missing", lambda: jr.ctrnn(4, dt=0.1), ValueError, "ctrnn", "tau")
case("ctrnn-dt-str", lambda: jr.ctrnn(4, dt="a", tau=1.0), TypeError, "ctrnn: dt")
case("ctrnn-tau-zero", lambda: jr.ctrnn(4, dt=0.1, tau=0.0), ValueError, "ctrnn: tau")
case("ctrnn-both", lambda: jr.ctrnn(4, 0.5, dt=0.1, tau=1.0), ValueError, "ctrnn", "alpha")
for arg, bad, exc in (("gain", "one", TypeError), ("gain", NAN, ValueError), ("input_std", -1.0, ValueError)):
    case(f"irnn-{arg}-{bad!r}", lambda a=arg, b=bad: jr.irnn(4, **{a: b}), exc, f"irnn: {arg}")
case("accumulator-kind", lambda: jr.accumulator(4, "max"), ValueError, "accumulator: kind")
case("accumulator-dtype", lambda: jr.accumulator(4, dtype=jnp.int32), TypeError, "accumulator: dtype")
case("lstm1997-block_size", lambda: jr.lstm1997(4, 3), ValueError, "block_size")
case("lstm1997-block_size-type", lambda: jr.lstm1997(4, 1.5), TypeError, "lstm1997: block_size")
case(
    "lstm1997-input_gate_bias",
    lambda: jr.lstm1997(4, 2, input_gate_bias=[1.0, 2.0, 3.0]),
    ValueError,
    "input_gate_bias",
)
case(
    "lstm1997-input_gate_bias-str", lambda: jr.lstm1997(4, input_gate_bias="a"), TypeError, "input_gate_bias"
)
case("mrnn-factor_size", lambda: jr.mrnn(4, 0), ValueError, "mrnn: factor_size")
for arg, bad, exc in (
    ("r_min", "a", TypeError),
    ("r_min", 1.0, ValueError),
    ("r_max", NAN, ValueError),
    ("r_max", 1.5, ValueError),
    ("max_phase", 0.0, ValueError),
    ("max_phase", INF, ValueError),
):
    case(f"lru-{arg}-{bad!r}", lambda a=arg, b=bad: jr.lru(4, **{"r_min": 0.5, a: b}), exc, "lru", arg)
case("bn_lstm-max_steps", lambda: jr.bn_lstm(4, 0), ValueError, "bn_lstm: max_steps")
case("bn_lstm-gamma_init", lambda: jr.bn_lstm(4, 3, gamma_init="a"), TypeError, "bn_lstm: gamma_init")
case(
    "bn_lstm-statistics", lambda: jr.bn_lstm(4, 3, statistics={"mean_x": 0}), TypeError, "bn_lstm: statistics"
)

# ---- a cell's init and initial_carry -------------------------------------------------------------

CELL = jr.lstm(4)
PARAMS = CELL.init(KEY, 3)
XS = jnp.ones((5, 2, 3), F32)
for bad, exc, arg in (
    (0, TypeError, "key"),
    ("key", TypeError, "key"),
    (jnp.zeros(3), TypeError, "key"),
):
    case(f"init-key-{type(bad).__name__}", lambda b=bad: CELL.init(b, 3), exc, "lstm.init", arg)
for bad, exc in (("3", TypeError), (0, ValueError), (2.5, TypeError), (True, TypeError)):
    case(f"init-input_size-{bad!r}", lambda b=bad: CELL.init(KEY, b), exc, "lstm.init: input_size")
for bad in ("floatish", jnp.int32, bool):
    case(f"init-dtype-{bad!r}", lambda b=bad: CELL.init(KEY, 3, b), TypeError, "lstm.init: dtype")
for bad in (3, (-1,), ("a",), (2.0,), None):
    case(
        f"initial_carry-batch_shape-{bad!r}",
        lambda b=bad: CELL.initial_carry(PARAMS, b),
        TypeError,
        "batch_shape",
    )

# ---- unroll (and what it shares with every consumer) ---------------------------------------------


def unroll(**kw):
    args = {"cell": CELL, "params": PARAMS, "xs": XS} | kw
    return jr.unroll(args.pop("cell"), args.pop("params"), args.pop("xs"), **args)


for name, kw, exc, arg in (
    ("cell-fn", dict(cell=jr.lstm), TypeError, "cell"),
    ("cell-layer", dict(cell=jr.stack(jr.lstm(4))), TypeError, "deep_rnn"),
    (
        "params-missing",
        dict(params={k: v for k, v in PARAMS.items() if k != "W_hh"}),
        ValueError,
        'params["W_hh"]',
    ),
    (
        "params-shape",
        dict(params={**PARAMS, "W_hh": jnp.zeros((4, 8))}),
        ValueError,
        'params["W_hh"] must have shape (4, 16)',
    ),
    ("params-dtype", dict(params={**PARAMS, "b": jnp.zeros(16, jnp.int32)}), TypeError, 'params["b"]'),
    ("params-extra", dict(params={**PARAMS, "W": jnp.zeros(3)}), ValueError, 'params["W"]'),
    ("params-none", dict(params=None), ValueError, "params"),
    ("xs-rank", dict(xs=jnp.ones((5,))), ValueError, "xs"),
    ("xs-features", dict(xs=jnp.ones((5, 2, 4))), ValueError, "xs must have shape (T, *batch, 3)"),
    ("xs-complex", dict(xs=jnp.ones((5, 2, 3), jnp.complex64)), TypeError, "xs"),
    ("xs-empty", dict(xs=jnp.ones((0, 2, 3))), ValueError, "xs"),
    ("xs-bool", dict(xs=jnp.ones((5, 2, 3), bool)), TypeError, "xs"),
    ("carry-shape", dict(carry=jr.LSTMCarry(jnp.zeros((3, 4)), jnp.zeros((3, 4)))), ValueError, "carry"),
    ("carry-structure", dict(carry=jnp.zeros((2, 4))), ValueError, "carry"),
    (
        "carry-int",
        dict(carry=jr.LSTMCarry(jnp.zeros((2, 4), int), jnp.zeros((2, 4), int))),
        TypeError,
        "carry",
    ),
    ("carry-nan", dict(carry=jr.LSTMCarry(jnp.full((2, 4), NAN), jnp.zeros((2, 4)))), ValueError, "carry"),
    ("lengths-float", dict(lengths=jnp.array([5.0, 3.0])), TypeError, "lengths"),
    ("lengths-shape", dict(lengths=jnp.array([5, 3, 1])), ValueError, "lengths"),
    ("lengths-range", dict(lengths=jnp.array([6, 3])), ValueError, "lengths"),
    ("lengths-negative", dict(lengths=jnp.array([-1, 3])), ValueError, "lengths"),
    ("resets-int", dict(resets=jnp.zeros((5, 2), int)), TypeError, "resets"),
    ("resets-shape", dict(resets=jnp.zeros((5, 3), bool)), ValueError, "resets"),
    ("reverse-str", dict(reverse="yes"), TypeError, "reverse"),
    ("reverse-int", dict(reverse=1), TypeError, "reverse"),
    ("time_axis-str", dict(time_axis="0"), TypeError, "time_axis"),
    ("time_axis-range", dict(time_axis=5), ValueError, "time_axis"),
    ("time_axis-features", dict(time_axis=-1), ValueError, "time_axis"),
    ("time_axis-float", dict(time_axis=0.0), TypeError, "time_axis"),
    ("unroll-str", dict(unroll="2"), TypeError, "unroll"),
    ("unroll-zero", dict(unroll=0), ValueError, "unroll"),
    ("unroll-float", dict(unroll=1.5), TypeError, "unroll"),
    ("remat-str", dict(remat="yes"), TypeError, "remat"),
    ("fused-str", dict(fused="yes"), TypeError, "fused"),
    ("fused-int", dict(fused=1), TypeError, "fused"),
    ("t0-float", dict(t0=1.5), TypeError, "t0"),
    ("t0-negative", dict(t0=-1), ValueError, "t0"),
    ("t0-shape", dict(t0=jnp.zeros(3, int)), TypeError, "t0"),
    (
        "probes-shape",
        dict(probes=jr.LSTMCarry(jnp.zeros((4, 2, 4)), jnp.zeros((5, 2, 4)))),
        ValueError,
        "probes",
    ),
    ("schedule-short", dict(cell=jr.truncate(CELL, tr.every(2, 3))), ValueError, "truncation schedule"),
    ("backend-name", dict(backend="cuda"), ValueError, "backend must be one of"),
    ("backend-pallas-remat", dict(backend="pallas", remat=True), ValueError, "backend='pallas' cannot take"),
    (
        "backend-pallas-probes",
        dict(backend="pallas", probes=jr.LSTMCarry(*[jnp.zeros((5, 2, 4))] * 2)),
        ValueError,
        "probes",
    ),
    (
        "backend-pallas-cell",
        dict(cell=jr.mgu(4), params=jr.mgu(4).init(KEY, 3)),
        ValueError,
        "has no kernel for mgu",
    ),
    (
        "backend-pallas-dtype",
        dict(params=jr.lstm(4).init(KEY, 3, jnp.bfloat16)),
        ValueError,
        "dtype bfloat16",
    ),
    ("backend-cudnn-reverse", dict(backend="cudnn", reverse=True), ValueError, "backend='cudnn' cannot take"),
    (
        "backend-cudnn-cell",
        dict(backend="cudnn", cell=jr.gru(4), params=jr.gru(4).init(KEY, 3)),
        ValueError,
        "got gru",
    ),
):
    if name.startswith("backend-pallas-") and "backend" not in kw:
        kw = {**kw, "backend": "pallas"}
    case(f"unroll-{name}", lambda kw=kw: unroll(**kw), exc, "unroll", arg)

# ---- parallel_newton (jaxrnn.newton): unroll's checks, and its own options ------------------------


def newton(**kw):
    args = {"cell": CELL, "params": PARAMS, "xs": XS} | kw
    return jr.parallel_newton(args.pop("cell"), args.pop("params"), args.pop("xs"), **args)


for name, kw, exc, arg in (
    ("cell-fn", dict(cell=jr.lstm), TypeError, "cell"),
    ("params-shape", dict(params={**PARAMS, "W_hh": jnp.zeros((4, 8))}), ValueError, 'params["W_hh"]'),
    ("xs-rank", dict(xs=jnp.ones((5,))), ValueError, "xs"),
    ("xs-features", dict(xs=jnp.ones((5, 2, 4))), ValueError, "xs must have shape (T, *batch, 3)"),
    ("carry-structure", dict(carry=jnp.zeros((2, 4))), ValueError, "carry"),
    ("carry-nan", dict(carry=jr.LSTMCarry(jnp.full((2, 4), NAN), jnp.zeros((2, 4)))), ValueError, "carry"),
    ("lengths-range", dict(lengths=jnp.array([6, 3])), ValueError, "lengths"),
    ("resets-shape", dict(resets=jnp.zeros((5, 3), bool)), ValueError, "resets"),
    ("reverse-str", dict(reverse="yes"), TypeError, "reverse"),
    ("time_axis-range", dict(time_axis=5), ValueError, "time_axis"),
    ("tol-zero", dict(tol=0.0), ValueError, "tol must be a finite real number > 0"),
    ("tol-nan", dict(tol=NAN), ValueError, "tol"),
    ("tol-str", dict(tol="1e-5"), TypeError, "tol"),
    ("max_iters-zero", dict(max_iters=0), ValueError, "max_iters must be a positive int"),
    ("max_iters-float", dict(max_iters=2.5), TypeError, "max_iters"),
    ("jacobian-name", dict(jacobian="dense"), ValueError, "jacobian must be one of ['full', 'diagonal']"),
    ("fallback-str", dict(fallback="yes"), TypeError, "fallback"),
    ("cell-truncated", dict(cell=jr.truncate(CELL, tr.every(2, 5))), ValueError, "reads the step index"),
    ("cell-dropout", dict(cell=jr.recurrent_dropout(CELL, 0.2, KEY)), ValueError, "cuts gradients"),
):
    case(f"parallel_newton-{name}", lambda kw=kw: newton(**kw), exc, "parallel_newton", arg)
case("unroll-method-name", lambda: unroll(method="newton"), ValueError, "unroll", "method must be")
case(
    "unroll-method-probes",
    lambda: unroll(method="parallel_newton", probes=jr.LSTMCarry(jnp.zeros((5, 2, 4)), jnp.zeros((5, 2, 4)))),
    ValueError,
    "unroll",
    "cannot take probes",
)
case("unroll-method-t0", lambda: unroll(method="parallel_newton", t0=2), ValueError, "unroll", "t0")

# trajectory and state_gradients check the same things and name themselves
case(
    "trajectory-xs",
    lambda: (
        jr.unroll.__module__
        and __import__("jaxrnn.unroll", fromlist=["_"]).trajectory(CELL, PARAMS, jnp.ones((5, 2, 4)))
    ),
    ValueError,
    "trajectory: xs",
)
case(
    "trajectory-kwarg",
    lambda: __import__("jaxrnn.unroll", fromlist=["_"]).trajectory(CELL, PARAMS, XS, lenghts=None),
    TypeError,
    "trajectory",
    "lenghts",
)

# ---- transforms ----------------------------------------------------------------------------------

case("truncate-cell", lambda: jr.truncate(jr.lstm, tr.every(2, 5)), TypeError, "truncate: cell")
case("truncate-cuts-int", lambda: jr.truncate(CELL, jnp.zeros(5, int)), ValueError, "truncate: cuts")
case("truncate-cuts-2d", lambda: jr.truncate(CELL, jnp.zeros((5, 2), bool)), ValueError, "truncate: cuts")
case("truncate-cuts-empty", lambda: jr.truncate(CELL, jnp.zeros(0, bool)), ValueError, "truncate: cuts")
for name, kw, exc, arg in (
    ("rate-str", dict(rate="half"), TypeError, "rate"),
    ("rate-one", dict(rate=1.0), ValueError, "rate"),
    ("rate-nan", dict(rate=NAN), ValueError, "rate"),
    ("rate-negative", dict(rate=-0.1), ValueError, "rate"),
    ("rate-bool", dict(rate=True), TypeError, "rate"),
    ("key-int", dict(key=0), TypeError, "key"),
    ("key-shape", dict(key=jax.random.split(KEY, 2)), TypeError, "key"),
    ("key-typed-shape", dict(key=jax.random.split(jax.random.key(0), 2)), ValueError, "key"),
    ("kind", dict(kind="zoneout"), ValueError, "kind"),
    ("per", dict(per="batch"), ValueError, "per"),
    ("deterministic", dict(deterministic="no"), TypeError, "deterministic"),
    ("cell-ctrnn", dict(cell=jr.ctrnn(4, 0.5)), ValueError, "does not support"),
    (
        "cell-twice",
        dict(cell=jr.recurrent_dropout(CELL, 0.1, KEY)),
        ValueError,
        "already has recurrent dropout",
    ),
    ("cell-type", dict(cell=3), TypeError, "cell"),
):

    def dropout(kw=kw):
        args = {"cell": CELL, "rate": 0.25, "key": KEY} | kw
        return jr.recurrent_dropout(args.pop("cell"), args.pop("rate"), args.pop("key"), **args)

    case(f"recurrent_dropout-{name}", dropout, exc, "recurrent_dropout", arg)
case(
    "learned_initial_state-cell",
    lambda: jr.learned_initial_state("lstm"),
    TypeError,
    "learned_initial_state: cell",
)
case(
    "learned_initial_state-init",
    lambda: jr.learned_initial_state(CELL, "nope"),
    ValueError,
    "learned_initial_state: init",
)
case("deep_rnn-empty", lambda: jr.deep_rnn(), ValueError, "deep_rnn")
case("deep_rnn-cell", lambda: jr.deep_rnn(CELL, "gru"), TypeError, "deep_rnn: cell")
case("deep_rnn-skip", lambda: jr.deep_rnn(CELL, skip="yes"), TypeError, "deep_rnn: skip")
case(
    "deep_rnn-skip-width",
    lambda: jr.deep_rnn(jr.lstm(4), jr.lstm(5), skip=True).init(KEY, 3),
    ValueError,
    "deep_rnn",
    "skip",
)
case("deep_rnn-params", lambda: jr.unroll(jr.deep_rnn(CELL, CELL), (PARAMS,), XS), ValueError, "params")
case(
    "custom-name",
    lambda: jr.cells.custom(3, init=len, initial_carry=len, recur=len, output=len),
    TypeError,
    "custom: name",
)
case(
    "custom-recur",
    lambda: jr.cells.custom("c", init=len, initial_carry=len, recur=1, output=len),
    TypeError,
    "custom: recur",
)

# ---- consumers -----------------------------------------------------------------------------------


def mse(ys):
    return jnp.mean(ys**2)


for name, call, exc, arg in (
    ("loss_fn-type", lambda: jr.state_gradients(CELL, PARAMS, XS, "mse"), TypeError, "loss_fn"),
    (
        "loss_fn-vector",
        lambda: jr.state_gradients(CELL, PARAMS, XS, lambda ys: ys[0, 0]),
        ValueError,
        "loss_fn",
    ),
    (
        "loss_fn-int",
        lambda: jr.state_gradients(CELL, PARAMS, XS, lambda ys: jnp.sum(ys > 0)),
        TypeError,
        "loss_fn",
    ),
    (
        "kwarg",
        lambda: jr.state_gradients(CELL, PARAMS, XS, mse, lenghts=jnp.array([5, 2])),
        TypeError,
        "lenghts",
    ),
    (
        "return_states",
        lambda: jr.state_gradients(CELL, PARAMS, XS, mse, return_states=1),
        TypeError,
        "return_states",
    ),
    ("params", lambda: jr.state_gradients(CELL, {}, XS, mse), ValueError, "params"),
):
    case(f"state_gradients-{name}", call, exc, "state_gradients", arg)
for name, call, exc, arg in (
    ("reduce", lambda: jr.gradient_flow(CELL, PARAMS, XS, mse, reduce="max"), ValueError, "reduce"),
    ("kwarg", lambda: jr.gradient_flow(CELL, PARAMS, XS, mse, revers=True), TypeError, "revers"),
    ("params", lambda: jr.gradient_flow(CELL, {**PARAMS, "b": jnp.zeros(3)}, XS, mse), ValueError, "params"),
    ("xs", lambda: jr.gradient_flow(CELL, PARAMS, jnp.ones((5, 2, 2)), mse), ValueError, "xs"),
):
    case(f"gradient_flow-{name}", call, exc, "gradient_flow", arg)
for name, kw, exc, arg in (
    ("bound-str", dict(bound="small"), TypeError, "bound"),
    ("bound-negative", dict(bound=-1.0), ValueError, "bound"),
    ("bound-nan", dict(bound=NAN), ValueError, "bound"),
    ("squared", dict(squared="yes"), TypeError, "squared"),
    ("lengths", dict(lengths=jnp.array([1.0, 2.0])), TypeError, "lengths"),
    ("resets", dict(resets=jnp.zeros((5, 2), int)), TypeError, "resets"),
    ("time_axis", dict(time_axis=2), ValueError, "time_axis"),
):
    case(f"pascanu-{name}", lambda kw=kw: jr.pascanu(CELL, PARAMS, XS, mse, **kw), exc, "pascanu", arg)
case("pascanu-loss_fn", lambda: jr.pascanu(CELL, PARAMS, XS, None), TypeError, "pascanu: loss_fn")
case("pascanu-params", lambda: jr.pascanu(CELL, {}, XS, mse), ValueError, "pascanu: params")
for name, args, exc, arg in (
    ("k1-zero", (0, 2), ValueError, "k1"),
    ("k1-str", ("2", 2), TypeError, "k1"),
    ("k2-float", (2, 2.5), TypeError, "k2"),
    ("k2-less", (3, 2), ValueError, "k2"),
):
    case(f"tbptt-{name}", lambda a=args: jr.tbptt(CELL, PARAMS, XS, *a), exc, "tbptt", arg)
case("tbptt-params", lambda: jr.tbptt(CELL, {}, XS, 2, 2), ValueError, "tbptt: params")
case(
    "tbptt-lengths",
    lambda: jr.tbptt(CELL, PARAMS, XS, 2, 2, lengths=jnp.array([9, 1])),
    ValueError,
    "tbptt: lengths",
)
case("tbptt-unroll", lambda: jr.tbptt(CELL, PARAMS, XS, 2, 2, unroll="a"), TypeError, "unroll")

X1 = jnp.ones((6, 3), F32)
for fn in (dg.step_jacobians, dg.jacobian_norms, dg.lyapunov_spectrum):
    name = fn.__name__
    case(f"{name}-batched", lambda f=fn: f(CELL, PARAMS, XS), ValueError, name, "xs")
    case(f"{name}-features", lambda f=fn: f(CELL, PARAMS, jnp.ones((6, 2))), ValueError, name, "xs")
    case(f"{name}-params", lambda f=fn: f(CELL, {}, X1), ValueError, name, "params")
    case(f"{name}-carry", lambda f=fn: f(CELL, PARAMS, X1, jnp.zeros(4)), ValueError, name, "carry")
    case(f"{name}-layer", lambda f=fn: f(jr.stack(CELL), (PARAMS,), X1), TypeError, name, "deep_rnn")
case(
    "jacobian_norms-ord",
    lambda: dg.jacobian_norms(CELL, PARAMS, X1, ord=3),
    ValueError,
    "jacobian_norms: ord",
)
case("jacobian_norms-ord-bool", lambda: dg.jacobian_norms(CELL, PARAMS, X1, ord=True), ValueError, "ord")
for name, kw, exc, arg in (
    ("k-zero", dict(k=0), ValueError, "k"),
    ("k-large", dict(k=9), ValueError, "k"),
    ("k-str", dict(k="2"), TypeError, "k"),
    ("reorth_every", dict(reorth_every=0), ValueError, "reorth_every"),
    ("burn_in-negative", dict(burn_in=-1), ValueError, "burn_in"),
    ("burn_in-large", dict(burn_in=6), ValueError, "burn_in"),
    ("burn_in-float", dict(burn_in=1.0), TypeError, "burn_in"),
):
    case(
        f"lyapunov_spectrum-{name}",
        lambda kw=kw: dg.lyapunov_spectrum(CELL, PARAMS, X1, **kw),
        exc,
        "lyapunov_spectrum",
        arg,
    )
W = jnp.ones((3, 3), F32)
for name, call, exc, arg in (
    ("spectral_radius-shape", lambda: dg.spectral_radius(jnp.ones((3, 4))), ValueError, "W"),
    ("spectral_radius-rank", lambda: dg.spectral_radius(jnp.ones(3)), ValueError, "W"),
    ("spectral_radius-complex", lambda: dg.spectral_radius(W.astype(jnp.complex64)), TypeError, "W"),
    ("spectral_radius-method", lambda: dg.spectral_radius(W, method="qr"), ValueError, "method"),
    ("spectral_radius-num_iters", lambda: dg.spectral_radius(W, "power", 0), ValueError, "num_iters"),
    ("spectral_radius-num_iters-float", lambda: dg.spectral_radius(W, "power", 2.5), TypeError, "num_iters"),
    ("spectral_radius-empty", lambda: dg.spectral_radius(jnp.ones((0, 0))), ValueError, "W"),
    ("max_singular_value-rank", lambda: dg.max_singular_value(jnp.ones(3)), ValueError, "W"),
    ("max_singular_value-str", lambda: dg.max_singular_value("W"), TypeError, "W"),
    (
        "kaplan_yorke_dimension-rank",
        lambda: dg.kaplan_yorke_dimension(jnp.ones((2, 2))),
        ValueError,
        "exponents",
    ),
    ("kaplan_yorke_dimension-empty", lambda: dg.kaplan_yorke_dimension(jnp.ones(0)), ValueError, "exponents"),
    ("gradient_bound-cell", lambda: dg.gradient_bound(CELL, PARAMS, 3), ValueError, "Elman-type"),
    (
        "gradient_bound-max_lag",
        lambda: dg.gradient_bound(jr.elman(3), jr.elman(3).init(KEY, 2), -1),
        ValueError,
        "max_lag",
    ),
    (
        "gradient_bound-activation",
        lambda: dg.gradient_bound(jr.elman(3), jr.elman(3).init(KEY, 2), 3, "nope"),
        ValueError,
        "activation",
    ),
    (
        "gradient_bound-gamma",
        lambda: dg.gradient_bound(jr.elman(3), jr.elman(3).init(KEY, 2), 3, -1.0),
        ValueError,
        "activation",
    ),
    ("gradient_bound-params", lambda: dg.gradient_bound(jr.elman(3), {}, 3), TypeError, "params"),
):
    case(name, call, exc, name.split("-")[0], arg)

# ---- layers --------------------------------------------------------------------------------------

BI = jr.bidirectional(jr.lstm(4), jr.gru(4))
BI_P = BI.init(KEY, 3)
case("layer-cell", lambda: jr.layer("lstm"), TypeError, "layer: cell")
case("bidirectional-forward", lambda: jr.bidirectional("lstm"), TypeError, "bidirectional")
case(
    "bidirectional-params-keys",
    lambda: BI.apply({"forward": BI_P["forward"]}, XS),
    ValueError,
    "bidirectional.apply: params",
)
case(
    "bidirectional-params-swapped",
    lambda: BI.apply({"forward": BI_P["backward"], "backward": BI_P["forward"]}, XS),
    ValueError,
    'params["forward"]',
)
case(
    "bidirectional-params-shape",
    lambda: BI.apply({**BI_P, "backward": {**BI_P["backward"], "b_hn": jnp.zeros(5)}}, XS),
    ValueError,
    'params["backward"]["b_hn"]',
)
STACK = jr.stack(jr.lstm(4), jr.gru(4))
ST_P = STACK.init(KEY, 3)
case("stack-empty", lambda: jr.stack(), ValueError, "stack")
case("stack-layer-type", lambda: jr.stack("lstm"), TypeError, "stack")
case("stack-dropout-str", lambda: jr.stack(CELL, dropout="half"), TypeError, "stack: dropout")
case("stack-dropout-one", lambda: jr.stack(CELL, dropout=1.0), ValueError, "stack: dropout")
case("stack-dropout-nan", lambda: jr.stack(CELL, dropout=NAN), ValueError, "stack: dropout")
case("stack-skip", lambda: jr.stack(CELL, skip="yes"), TypeError, "stack: skip")
case("stack-params-count", lambda: STACK.apply((ST_P[0],), XS), ValueError, "stack: params")
case(
    "stack-params-shape",
    lambda: STACK.apply((ST_P[0], {**ST_P[1], "W_hh": jnp.zeros((4, 4))}), XS),
    ValueError,
    'params[1]["W_hh"]',
)

# ---- schedules, chunked TBPTT --------------------------------------------------------------------

for name, call, exc, arg in (
    ("every-k", lambda: tr.every(0, 5), ValueError, "k"),
    ("every-k-float", lambda: tr.every(2.5, 5), TypeError, "k"),
    ("every-length", lambda: tr.every(2, 0), ValueError, "length"),
    ("every-offset", lambda: tr.every(2, 5, offset=1.5), TypeError, "offset"),
    ("every-offset-str", lambda: tr.every(2, 5, offset="1"), TypeError, "offset"),
    ("no_cuts-length", lambda: tr.no_cuts(0), ValueError, "length"),
    ("random_lengths-order", lambda: tr.random_lengths(KEY, 5, 3, 2), ValueError, "k_max"),
    ("random_lengths-k_min", lambda: tr.random_lengths(KEY, 5, 0, 2), ValueError, "k_min"),
    ("random_lengths-length", lambda: tr.random_lengths(KEY, "5", 1, 2), TypeError, "length"),
    ("chunked-loss_fn", lambda: tr.chunked(None, optax.sgd(0.1), 2), TypeError, "loss_fn"),
    ("chunked-optimizer", lambda: tr.chunked(mse, "sgd", 2), TypeError, "optimizer"),
    ("chunked-chunk_size", lambda: tr.chunked(mse, optax.sgd(0.1), 0), ValueError, "chunk_size"),
):
    case(name, call, exc, name.split("-")[0], arg)

# ---- initialisers and activations ----------------------------------------------------------------

for name, call, exc, arg in (
    ("normal-str", lambda: inits.normal("a"), TypeError, "std"),
    ("normal-negative", lambda: inits.normal(-1.0), ValueError, "std"),
    ("normal-nan", lambda: inits.normal(NAN), ValueError, "std"),
    ("uniform-str", lambda: inits.uniform("a"), TypeError, "scale"),
    ("uniform-inf", lambda: inits.uniform(INF), ValueError, "scale"),
    ("torch_uniform-zero", lambda: inits.torch_uniform(0), ValueError, "hidden_size"),
    ("torch_uniform-float", lambda: inits.torch_uniform(2.0), TypeError, "hidden_size"),
    ("identity-str", lambda: inits.identity("one"), TypeError, "gain"),
    ("identity-shape", lambda: inits.identity()(KEY, (3, 4)), ValueError, "square"),
    ("orthogonal-scale", lambda: inits.orthogonal("x"), TypeError, "scale"),
    ("sparse-n_nonzero", lambda: inits.sparse(0), ValueError, "n_nonzero"),
    ("sparse-spectral_radius", lambda: inits.sparse(spectral_radius=-1), ValueError, "spectral_radius"),
    ("sparse-spectral_radius-nan", lambda: inits.sparse(spectral_radius=NAN), ValueError, "spectral_radius"),
    ("sparse-per", lambda: inits.sparse(per="both"), ValueError, "per"),
    ("sparse-std", lambda: inits.sparse(std="a"), TypeError, "std"),
):
    case(name, call, exc, name.split("-")[0], arg)
case("initialisers-get", lambda: inits.get("nope", "lstm: kernel_init"), ValueError, "lstm: kernel_init")
case(
    "activations-name",
    lambda: jr.activations.get("swish", "elman: activation"),
    ValueError,
    "elman: activation",
)
case("activations-type", lambda: jr.activations.get(3.0, "elman: activation"), TypeError, "elman: activation")

# ---- hidden Markov models ----------------------------------------------------------------------

LP, LA, LO = jnp.zeros(3), jnp.zeros((3, 3)), jnp.zeros((4, 2, 3))
for fname in ("forward", "smoother", "viterbi"):
    f = getattr(jr.hmm, fname)
    for name, args, kw, exc, arg in (
        ("log_pi-shape", (jnp.zeros((3, 1)), LA, LO), {}, ValueError, "log_pi"),
        ("log_pi-str", ("a", LA, LO), {}, TypeError, "log_pi"),
        ("log_A-shape", (LP, jnp.zeros((3, 2)), LO), {}, ValueError, "log_A"),
        ("log_obs-K", (LP, LA, jnp.zeros((4, 2, 2))), {}, ValueError, "log_obs"),
        ("log_obs-empty", (LP, LA, jnp.zeros((0, 2, 3))), {}, ValueError, "log_obs"),
        ("lengths", (LP, LA, LO), {"lengths": jnp.array([5, 1])}, ValueError, "lengths"),
        ("lengths-float", (LP, LA, LO), {"lengths": jnp.array([1.0, 1.0])}, TypeError, "lengths"),
    ):
        case(f"hmm.{fname}-{name}", lambda f=f, a=args, k=kw: f(*a, **k), exc, f"hmm.{fname}", arg)
case(
    "hmm.forward-parallel", lambda: jr.hmm.forward(LP, LA, LO, parallel=1), TypeError, "hmm.forward: parallel"
)
case("hmm.sample-T", lambda: jr.hmm.sample(LP, LA, KEY, 2.5), TypeError, "hmm.sample: T")
case("hmm.sample-key", lambda: jr.hmm.sample(LP, LA, "key", 3), TypeError, "hmm.sample: key")
case("hmm.forward_cell-num_states", lambda: jr.hmm.forward_cell("3"), TypeError, "forward_cell: num_states")

# ---- linear dynamical systems ------------------------------------------------------------------

LDS = {"A": jnp.eye(2), "C": jnp.ones((1, 2)), "Q": jnp.eye(2), "R": jnp.eye(1), "mu0": jnp.zeros(2)}
LDS |= {"P0": jnp.eye(2)}
YS = jnp.zeros((4, 2, 1))
for fname in ("kalman_filter", "rts_smoother"):
    f = getattr(jr.lds, fname)
    for name, args, kw, exc, arg in (
        ("params-list", ([], YS), {}, TypeError, "params"),
        ("params-missing", ({k: v for k, v in LDS.items() if k != "Q"}, YS), {}, ValueError, "missing ['Q']"),
        ("params-unknown", (LDS | {"mu_0": jnp.zeros(2)}, YS), {}, ValueError, "unknown ['mu_0']"),
        ("params-A", (LDS | {"A": jnp.zeros((2, 3))}, YS), {}, ValueError, "params['A']"),
        ("params-C", (LDS | {"C": jnp.zeros((1, 3))}, YS), {}, ValueError, "params['C']"),
        ("params-R", (LDS | {"R": jnp.eye(2)}, YS), {}, ValueError, "params['R']"),
        ("params-P0-str", (LDS | {"P0": "I"}, YS), {}, TypeError, "params['P0']"),
        (
            "params-B",
            (LDS | {"B": jnp.zeros((3, 1))}, YS, jnp.zeros((4, 2, 1))),
            {},
            ValueError,
            "params['B']",
        ),
        ("ys-m", (LDS, jnp.zeros((4, 2, 3))), {}, ValueError, "ys"),
        ("ys-empty", (LDS, jnp.zeros((0, 1))), {}, ValueError, "ys"),
        ("ys-str", (LDS, "y"), {}, TypeError, "ys"),
        ("us-without-B", (LDS, YS, jnp.zeros((4, 2, 1))), {}, ValueError, "us"),
        ("B-without-us", (LDS | {"B": jnp.zeros((2, 1))}, YS), {}, ValueError, "us is None"),
        ("us-shape", (LDS | {"B": jnp.zeros((2, 1))}, YS, jnp.zeros((4, 1))), {}, ValueError, "us"),
        ("lengths", (LDS, YS), {"lengths": jnp.array([5, 1])}, ValueError, "lengths"),
        ("lengths-float", (LDS, YS), {"lengths": jnp.array([1.0, 1.0])}, TypeError, "lengths"),
        ("parallel", (LDS, YS), {"parallel": "yes"}, TypeError, "parallel"),
    ):
        case(f"lds.{fname}-{name}", lambda f=f, a=args, k=kw: f(*a, **k), exc, f"lds.{fname}", arg)
case("lds.sample-T", lambda: jr.lds.sample(LDS, KEY, 0), ValueError, "lds.sample: T")
case("lds.sample-key", lambda: jr.lds.sample(LDS, 0, 3), TypeError, "lds.sample: key")
case("lds.sample-batch_shape", lambda: jr.lds.sample(LDS, KEY, 3, 2), TypeError, "lds.sample: batch_shape")
case("lds.sample-params", lambda: jr.lds.sample({}, KEY, 3), ValueError, "lds.sample: params")
case(
    "lds.sample-us",
    lambda: jr.lds.sample(LDS | {"D": jnp.ones((1, 1))}, KEY, 3),
    ValueError,
    "lds.sample",
    "us",
)
case("lds.kalman_cell-state_size", lambda: jr.lds.kalman_cell(0), ValueError, "kalman_cell: state_size")
case(
    "lds.kalman_cell-control_size",
    lambda: jr.lds.kalman_cell(2, control_size=-1),
    ValueError,
    "kalman_cell: control_size",
)
case(
    "lds.kalman_cell-init",
    lambda: jr.lds.kalman_cell(2, control_size=2).init(KEY, 2),
    ValueError,
    "kalman_cell.init: input_size",
)
case(
    "lds.kalman_cell-unroll-params",
    lambda: jr.unroll(jr.lds.kalman_cell(2), LDS | {"A": jnp.eye(3)}, YS),
    ValueError,
    "unroll",
    "params",
)

# ---- hierarchical softmax ----------------------------------------------------------------------

SM = jr.softmax.hierarchical(jr.softmax.balanced_tree(5))
SM_P, SM_H, SM_T = {"W": jnp.zeros((4, 3)), "b": jnp.zeros(4)}, jnp.zeros((2, 3)), jnp.array([0, 4])
for name, call, exc, arg in (
    ("huffman_tree-counts-2d", lambda: jr.softmax.huffman_tree(np.ones((2, 3))), ValueError, "counts"),
    ("huffman_tree-counts-negative", lambda: jr.softmax.huffman_tree([3, -1, 2]), ValueError, "non-negative"),
    ("huffman_tree-counts-nan", lambda: jr.softmax.huffman_tree([3.0, NAN]), ValueError, "finite"),
    ("huffman_tree-counts-inf", lambda: jr.softmax.huffman_tree([3.0, INF]), ValueError, "finite"),
    ("huffman_tree-counts-one-word", lambda: jr.softmax.huffman_tree([7]), ValueError, "at least 2 words"),
    ("huffman_tree-counts-empty", lambda: jr.softmax.huffman_tree([]), ValueError, "at least 2 words"),
    ("huffman_tree-counts-str", lambda: jr.softmax.huffman_tree(["a", "b"]), TypeError, "counts"),
    ("huffman_tree-counts-bool", lambda: jr.softmax.huffman_tree([True, False]), TypeError, "counts"),
    (
        "huffman_tree-counts-traced",
        lambda: jax.jit(jr.softmax.huffman_tree)(jnp.ones(3)),
        TypeError,
        "concrete",
    ),
    ("balanced_tree-num_words-1", lambda: jr.softmax.balanced_tree(1), ValueError, "num_words"),
    ("balanced_tree-num_words-float", lambda: jr.softmax.balanced_tree(4.0), TypeError, "num_words"),
    ("hierarchical-tree", lambda: jr.softmax.hierarchical(5), TypeError, "tree"),
    ("hierarchical.init-key", lambda: SM.init(None, 3), TypeError, "key"),
    ("hierarchical.init-hidden_size", lambda: SM.init(KEY, 0), ValueError, "hidden_size"),
    ("hierarchical.init-dtype", lambda: SM.init(KEY, 3, jnp.int32), TypeError, "dtype"),
    (
        "hierarchical.log_prob-targets-range",
        lambda: SM.log_prob(SM_P, SM_H, jnp.array([0, 5])),
        ValueError,
        "[0, V=5)",
    ),
    (
        "hierarchical.log_prob-targets-negative",
        lambda: SM.log_prob(SM_P, SM_H, [-1, 0]),
        ValueError,
        "targets",
    ),
    (
        "hierarchical.log_prob-targets-float",
        lambda: SM.log_prob(SM_P, SM_H, jnp.array([0.0, 1.0])),
        TypeError,
        "targets",
    ),
    (
        "hierarchical.log_prob-targets-shape",
        lambda: SM.log_prob(SM_P, SM_H, jnp.array([0, 1, 2])),
        ValueError,
        "targets",
    ),
    (
        "hierarchical.log_prob-h",
        lambda: SM.log_prob(SM_P, jnp.zeros((2, 4)), SM_T),
        ValueError,
        "h must have shape",
    ),
    (
        "hierarchical.log_prob-params-int",
        lambda: SM.log_prob({"W": jnp.zeros((4, 3), int), "b": SM_P["b"]}, SM_H, SM_T),
        TypeError,
        "params['W']",
    ),
    (
        "hierarchical.log_probs-h",
        lambda: SM.log_probs(SM_P, jnp.zeros((2, 4))),
        ValueError,
        "h must have shape",
    ),
    ("hierarchical.log_probs-h-str", lambda: SM.log_probs(SM_P, "h"), TypeError, "h"),
    ("hierarchical.log_probs-params-list", lambda: SM.log_probs([], SM_H), TypeError, "params"),
    (
        "hierarchical.log_probs-params-keys",
        lambda: SM.log_probs({"W": SM_P["W"]}, SM_H),
        ValueError,
        "params",
    ),
    (
        "hierarchical.log_probs-params-V",
        lambda: SM.log_probs({"W": jnp.zeros((5, 3)), "b": jnp.zeros(5)}, SM_H),
        ValueError,
        "params['W']",
    ),
    (
        "hierarchical.log_probs-params-b",
        lambda: SM.log_probs({"W": SM_P["W"], "b": jnp.zeros(3)}, SM_H),
        ValueError,
        "params['b']",
    ),
    ("hierarchical.sample-key", lambda: SM.sample(SM_P, SM_H, None), TypeError, "key"),
    ("hierarchical.sample-key-int", lambda: SM.sample(SM_P, SM_H, 0), TypeError, "key"),
    (
        "hierarchical.sample-h",
        lambda: SM.sample(SM_P, jnp.zeros((2, 4)), KEY),
        ValueError,
        "h must have shape",
    ),
):
    case(f"softmax.{name}", call, exc, name.split("-")[0], arg)

# ---- decoding (greedy, beam search, sampling) and the seq2seq loss --------------------------------

DEC = {
    "step": lambda c, tok: (c, c + jnp.eye(3)[tok]),
    "carry": jnp.zeros(3),
    "start_token": 0,
    "max_length": 3,
}
for fname, extra in (("greedy", {}), ("beam_search", {"beam_size": 2}), ("sample", {"key": KEY})):
    f = getattr(decoding, fname)
    for name, kw, exc, arg in (
        ("step-str", {"step": "f"}, TypeError, "step must be a callable"),
        (
            "step-fails",
            {"step": lambda c, tok: (c, c @ jnp.ones((2, 2)))},
            TypeError,
            "step(carry, token) failed",
        ),
        ("step-no-pair", {"step": lambda c, tok: c}, TypeError, "step must return a pair"),
        ("step-carry", {"step": lambda c, tok: (c[:2], c)}, ValueError, "step must return a carry"),
        (
            "step-logits-rank",
            {"step": lambda c, tok: (c, jnp.outer(c, c))},
            ValueError,
            "logits of shape (V,)",
        ),
        ("step-logits-int", {"step": lambda c, tok: (c, jnp.arange(3))}, TypeError, "floating logits"),
        ("carry-str", {"carry": "c"}, TypeError, "carry"),
        ("max_length-0", {"max_length": 0}, ValueError, "max_length"),
        ("max_length-float", {"max_length": 2.0}, TypeError, "max_length"),
        ("max_length-None", {"max_length": None}, TypeError, "max_length"),
        ("start_token-float", {"start_token": 1.0}, TypeError, "start_token"),
        ("start_token-bool", {"start_token": True}, TypeError, "start_token"),
        (
            "start_token-vector",
            {"start_token": jnp.zeros(2, jnp.int32)},
            ValueError,
            "start_token must have shape ()",
        ),
        ("start_token-range", {"start_token": 3}, ValueError, "start_token must be in [0, V=3)"),
        ("start_token-negative", {"start_token": -1}, ValueError, "start_token"),
        ("eos_token-range", {"eos_token": 3}, ValueError, "eos_token must be in [0, V=3)"),
        ("eos_token-str", {"eos_token": "eos"}, TypeError, "eos_token"),
        ("eos_token-float", {"eos_token": jnp.asarray(2.0)}, TypeError, "eos_token"),
    ):
        kw = {**DEC, **extra, **kw}
        case(f"decoding.{fname}-{name}", lambda f=f, k=kw: f(**k), exc, f"decoding.{fname}", arg)
for bad, exc in ((0, ValueError), (-1, ValueError), ("2", TypeError), (2.0, TypeError), (True, TypeError)):
    call = lambda b=bad: decoding.beam_search(**DEC, beam_size=b)  # noqa: E731
    case(f"decoding.beam_search-beam_size-{bad!r}", call, exc, "decoding.beam_search: beam_size")
for bad, exc in ((-0.5, ValueError), (NAN, ValueError), (INF, ValueError), ("0.6", TypeError)):
    call = lambda b=bad: decoding.beam_search(**DEC, beam_size=2, length_penalty=b)  # noqa: E731
    case(f"decoding.beam_search-length_penalty-{bad!r}", call, exc, "decoding.beam_search: length_penalty")
for bad, exc in (
    (0.0, ValueError),
    (-1.0, ValueError),
    (INF, ValueError),
    (NAN, ValueError),
    ("hot", TypeError),
):
    call = lambda b=bad: decoding.sample(**DEC, key=KEY, temperature=b)  # noqa: E731
    case(f"decoding.sample-temperature-{bad!r}", call, exc, "decoding.sample: temperature")
for name, bad, exc, arg in (
    ("None", None, TypeError, "key must be a jax.random key"),
    ("int", 0, TypeError, "key must be a jax.random key"),
    ("batch", jax.random.split(jax.random.key(0), 2), ValueError, "a single jax.random key"),
):
    case(
        f"decoding.sample-key-{name}",
        lambda b=bad: decoding.sample(**DEC, key=b),
        exc,
        "decoding.sample",
        arg,
    )
case("decoding.sample-key-missing", lambda: decoding.sample(**DEC), TypeError, "sample()", "key")

S2S = {
    "encoder": PARAMS,
    "decoder": PARAMS,
    "embed": jnp.ones((5, 3)),
    "W": jnp.ones((4, 5)),
    "b": jnp.ones(5),
}
TOK = jnp.zeros((2, 2), jnp.int32)
for name, kw, exc, arg in (
    ("encoder", {"encoder": "lstm"}, TypeError, "encoder must be a jaxrnn Cell"),
    ("decoder", {"decoder": jr.layer(CELL)}, TypeError, "decoder must be a jaxrnn Cell"),
    ("params-list", {"params": [S2S]}, TypeError, "params must be a dict"),
    ("params-missing", {"params": {k: v for k, v in S2S.items() if k != "W"}}, ValueError, "missing ['W']"),
    ("params-encoder", {"params": S2S | {"encoder": {}}}, ValueError, 'params["encoder"]'),
    (
        "params-embed",
        {"params": S2S | {"embed": jnp.ones((5, 2))}},
        ValueError,
        'params["embed"] must have shape',
    ),
    ("params-W", {"params": S2S | {"W": jnp.ones((3, 5))}}, ValueError, 'params["W"] must have shape'),
    ("params-b", {"params": S2S | {"b": jnp.ones(4)}}, ValueError, 'params["b"] must have shape'),
    (
        "params-W-int",
        {"params": S2S | {"W": np.ones((4, 5), int)}},
        TypeError,
        'params["W"] must be a floating',
    ),
    ("xs", {"xs": jnp.ones((5, 2, 4))}, ValueError, "xs must have shape"),
    ("ys_in-float", {"ys_in": TOK.astype(F32)}, TypeError, "ys_in must be an integer array"),
    ("ys_in-batch", {"ys_in": jnp.zeros((2, 3), jnp.int32)}, ValueError, "ys_in must have shape (U, *batch)"),
    ("ys_out-U", {"ys_out": jnp.zeros((3, 2), jnp.int32)}, ValueError, "ys_out must have the shape of ys_in"),
    (
        "ys_in-range",
        {"ys_in": TOK.at[0, 0].set(5)},
        ValueError,
        "ys_in must be in [0, V_in=5)",
    ),
    (
        "ys_out-range",
        {"ys_out": TOK.at[1, 1].set(-1)},
        ValueError,
        "ys_out must be in [0, V=5)",
    ),
    ("x_lengths", {"x_lengths": jnp.array([6, 1])}, ValueError, "x_lengths must be in [0, S=5]"),
    (
        "y_lengths-float",
        {"y_lengths": jnp.array([1.0, 2.0])},
        TypeError,
        "y_lengths must be an integer array",
    ),
    ("y_lengths-shape", {"y_lengths": jnp.array([1])}, ValueError, "y_lengths must have shape (2,)"),
    ("bridge-str", {"bridge": "tanh"}, TypeError, "bridge must be None or a callable"),
    ("bridge-carry", {"bridge": lambda p, s: s.h}, ValueError, "bridge(params, carry)"),
    (
        "carry",
        {"decoder": jr.gru(4), "params": S2S | {"decoder": jr.gru(4).init(KEY, 3)}},
        ValueError,
        "bridge=",
    ),
    ("reverse_source", {"reverse_source": "yes"}, TypeError, "reverse_source must be a bool"),
    ("reduction", {"reduction": "avg"}, ValueError, "reduction must be one of"),
):
    kw = {"encoder": CELL, "decoder": CELL, "params": S2S, "xs": XS, "ys_in": TOK, "ys_out": TOK} | kw
    case(f"seq2seq-{name}", lambda k=kw: losses.seq2seq(**k), exc, "seq2seq: ", arg)

# ---- renet ----------------------------------------------------------------------------------------

RENET = jr.renet(jr.elman(3))
RN_P = RENET.init(KEY, 2)
RN_X = jnp.ones((4, 6, 2), F32)
case("renet-cell", lambda: jr.renet("elman"), TypeError, "renet: cell")
case("renet-cell-layer", lambda: jr.renet(jr.layer(jr.elman(3))), TypeError, "renet: cell", "Layer")
case("renet-cell2", lambda: jr.renet(jr.elman(3), cell2="gru"), TypeError, "renet: cell2")
case("renet-patch_size-zero", lambda: jr.renet(jr.elman(3), (0, 2)), ValueError, "renet: patch_size[0]")
case("renet-patch_size-negative", lambda: jr.renet(jr.elman(3), -2), ValueError, "renet: patch_size")
case("renet-patch_size-float", lambda: jr.renet(jr.elman(3), (2, 1.5)), TypeError, "renet: patch_size[1]")
case("renet-patch_size-triple", lambda: jr.renet(jr.elman(3), (2, 2, 2)), ValueError, "renet: patch_size")
case("renet-patch_size-str", lambda: jr.renet(jr.elman(3), "2x2"), TypeError, "renet: patch_size")
case("renet-patch_size-bool", lambda: jr.renet(jr.elman(3), True), TypeError, "renet: patch_size")
case("renet-patch_size-none", lambda: jr.renet(jr.elman(3), None), TypeError, "renet: patch_size")
case(
    "renet-order",
    lambda: jr.renet(jr.elman(3), order="diagonal"),
    ValueError,
    "renet: order",
    "vertical_first",
)
case("renet-order-type", lambda: jr.renet(jr.elman(3), order=None), TypeError, "renet: order")
case("renet-init-in_channels-zero", lambda: RENET.init(KEY, 0), ValueError, "renet.init: in_channels")
case("renet-init-in_channels-float", lambda: RENET.init(KEY, 2.0), TypeError, "renet.init: in_channels")
case("renet-init-dtype", lambda: RENET.init(KEY, 2, jnp.int32), TypeError, "renet.init: dtype")
case("renet-init-key", lambda: RENET.init(0, 2), TypeError, "renet.init: key")
case(
    "renet-images-rank",
    lambda: RENET.apply(RN_P, jnp.ones((4, 6))),
    ValueError,
    "renet.apply: images",
    "[..., None]",
)
case(
    "renet-images-complex",
    lambda: RENET.apply(RN_P, RN_X.astype(jnp.complex64)),
    TypeError,
    "renet.apply: images",
)
case(
    "renet-images-height",
    lambda: RENET.apply(RN_P, jnp.ones((5, 6, 2))),
    ValueError,
    "renet.apply",
    "patch_size (2, 2)",
    "height 5",
)
case(
    "renet-images-width",
    lambda: RENET.apply(RN_P, jnp.ones((2, 4, 7, 2))),
    ValueError,
    "renet.apply",
    "width 7",
)
case(
    "renet-images-channels",
    lambda: RENET.apply(RN_P, jnp.ones((4, 6, 3))),
    ValueError,
    "renet.apply",
    "3 channels",
    "in_channels=2",
)
case("renet-params-type", lambda: RENET.apply([RN_P], RN_X), ValueError, "renet.apply: params")
case(
    "renet-params-keys",
    lambda: RENET.apply({"vertical": RN_P["vertical"]}, RN_X),
    ValueError,
    "renet.apply: params",
)
case(
    "renet-params-direction",
    lambda: RENET.apply({**RN_P, "horizontal": {"forward": RN_P["horizontal"]["forward"]}}, RN_X),
    ValueError,
    'params["horizontal"]',
    "'backward'",
)
case(
    "renet-params-swapped",
    lambda: RENET.apply({"vertical": RN_P["horizontal"], "horizontal": RN_P["vertical"]}, RN_X),
    ValueError,
    "renet.apply",
    "second sweep",
)
RN_VB = RN_P["vertical"]["backward"]
case(
    "renet-params-shape",
    lambda: RENET.apply(
        {**RN_P, "vertical": {**RN_P["vertical"], "backward": {**RN_VB, "b": jnp.zeros(4)}}}, RN_X
    ),
    ValueError,
    'params["vertical"]["backward"]["b"]',
)
RN_HF = RN_P["horizontal"]["forward"]
case(
    "renet-params-dtype",
    lambda: RENET.apply(
        {**RN_P, "horizontal": {**RN_P["horizontal"], "forward": {**RN_HF, "b": jnp.zeros(3, jnp.int32)}}},
        RN_X,
    ),
    TypeError,
    'params["horizontal"]["forward"]["b"]',
)
case(
    "renet-params-other-cell",
    lambda: jr.renet(jr.gru(3)).apply(RN_P, RN_X),
    ValueError,
    "renet.apply",
    'params["vertical"]["forward"]',
)
case(
    "renet-params-other-patch_size",
    lambda: jr.renet(jr.elman(3), (3, 3)).apply(RN_P, jnp.ones((6, 6, 2))),
    ValueError,
    "renet.apply",
    "patch_size",
)

# ---- losses --------------------------------------------------------------------------------------

P3 = jnp.ones((5, 2, 1))
for name, call, exc, arg in (
    (
        "transducer-reduction",
        lambda: losses.transducer(optax.l2_loss, P3, P3, reduction="max"),
        ValueError,
        "reduction",
    ),
    (
        "transducer-targets",
        lambda: losses.transducer(optax.l2_loss, P3, jnp.ones((4, 2, 1))),
        ValueError,
        "targets",
    ),
    (
        "transducer-lengths",
        lambda: losses.transducer(optax.l2_loss, P3, P3, jnp.array([6, 1])),
        ValueError,
        "lengths",
    ),
    ("transducer-loss", lambda: losses.transducer("l2", P3, P3), TypeError, "loss"),
    (
        "acceptor-reduction",
        lambda: losses.acceptor(optax.l2_loss, P3, jnp.ones((2, 1)), reduction="x"),
        ValueError,
        "reduction",
    ),
    ("acceptor-targets", lambda: losses.acceptor(optax.l2_loss, P3, jnp.ones((3, 1))), ValueError, "targets"),
    ("encode-kwarg", lambda: losses.encode(CELL, PARAMS, XS, length=3), TypeError, "length"),
    ("encode-params", lambda: losses.encode(CELL, {}, XS), ValueError, "params"),
    ("last_valid-lengths", lambda: losses.last_valid(P3, jnp.array([1.5, 2.0])), TypeError, "lengths"),
    ("valid_mask-T", lambda: losses.valid_mask(jnp.array([1, 2]), 0), ValueError, "T"),
):
    case(name, call, exc, name.split("-")[0], arg)


# ---- memoryless baselines: delay taps (AR(p)), NARX and the least-squares fit --------------------

for bad, exc in (("3", TypeError), (0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
    case(f"delay_taps-order-{bad!r}", lambda b=bad: jr.delay_taps(b), exc, "delay_taps: order")
    case(f"narx-order-{bad!r}", lambda b=bad: jr.narx(b, 4), exc, "narx: order")
    fit_order = lambda b=bad: jr.cells.fit_delay_taps(XS, XS, b)  # noqa: E731
    case(f"fit_delay_taps-order-{bad!r}", fit_order, exc, "fit_delay_taps: order")
for bad, exc in (("2", TypeError), (0, ValueError), (1.0, TypeError)):
    case(f"delay_taps-output_size-{bad!r}", lambda b=bad: jr.delay_taps(2, b), exc, "delay_taps: output_size")
    case(f"narx-output_size-{bad!r}", lambda b=bad: jr.narx(2, 4, output_size=b), exc, "narx: output_size")
case("narx-activation-name", lambda: jr.narx(2, 4, "softsign"), ValueError, "narx: activation")
case("narx-activation-type", lambda: jr.narx(2, 4, 3), TypeError, "narx: activation")
case("delay_taps-init-input_size", lambda: jr.delay_taps(2).init(KEY, 0), ValueError, "delay_taps.init")
case("narx-init-dtype", lambda: jr.narx(2, 4).init(KEY, 3, jnp.int32), TypeError, "narx.init: dtype")
case(
    "delay_taps-unroll-params",
    lambda: jr.unroll(jr.delay_taps(2), jr.delay_taps(3).init(KEY, 3), XS),
    ValueError,
    "unroll",
    'params["W"] must have shape (2, 3, 3)',
)
TG = jnp.ones((5, 2, 1), F32)
for name, kw, exc, arg in (
    ("xs-str", dict(xs="abc"), TypeError, "xs"),
    ("xs-rank", dict(xs=jnp.ones(5)), ValueError, "xs must have shape (T, *batch, I)"),
    ("xs-empty", dict(xs=jnp.ones((0, 2, 3)), targets=jnp.ones((0, 2, 1))), ValueError, "xs"),
    ("xs-complex", dict(xs=jnp.ones((5, 2, 3), jnp.complex64)), TypeError, "xs"),
    ("targets-batch", dict(targets=jnp.ones((5, 3, 1))), ValueError, "targets must have shape"),
    ("targets-time", dict(targets=jnp.ones((4, 2, 1))), ValueError, "targets"),
    ("targets-rank", dict(targets=jnp.ones((5, 2))), ValueError, "targets"),
    ("lengths-float", dict(lengths=jnp.array([5.0, 3.0])), TypeError, "lengths"),
    ("lengths-shape", dict(lengths=jnp.array([5, 3, 1])), ValueError, "lengths"),
    ("lengths-range", dict(lengths=jnp.array([6, 3])), ValueError, "lengths"),
    ("ridge-negative", dict(ridge=-1.0), ValueError, "ridge"),
    ("ridge-nan", dict(ridge=NAN), ValueError, "ridge"),
    ("ridge-str", dict(ridge="a"), TypeError, "ridge"),
    ("start-negative", dict(start=-1), ValueError, "start"),
    ("start-float", dict(start=1.5), TypeError, "start"),
):

    def fit(kw=kw):
        args = {"xs": XS, "targets": TG, "order": 2} | kw
        return jr.cells.fit_delay_taps(args.pop("xs"), args.pop("targets"), args.pop("order"), **args)

    case(f"fit_delay_taps-{name}", fit, exc, "fit_delay_taps", arg)
case(
    "fit_delay_taps-ridge-traced",
    lambda: jax.jit(lambda r: jr.cells.fit_delay_taps(XS, TG, 2, ridge=r))(0.1),
    TypeError,
    "fit_delay_taps: ridge",
    "known at trace time",
)


# ---- the fused kernels' argument checks (fused_scan, pallas_scan share check_scan_args) -----------

_SPEC = jr.kernels.FusedSpec(*([None] * 5))
_W = {"W_xh": jnp.ones((3, 8)), "b": jnp.zeros(8), "W_hh": jnp.ones((2, 8))}
_XS = jnp.ones((4, 2, 3))
for name, kw, exc, arg in (
    ("spec", dict(spec=None), TypeError, "spec"),
    ("w-missing", dict(w={"W_xh": _W["W_xh"]}), ValueError, "w must hold"),
    ("xs-features", dict(xs=jnp.ones((4, 2, 5))), ValueError, "xs"),
    ("xs-rank", dict(xs=jnp.ones((3,))), ValueError, "xs"),
    ("valid-shape", dict(valid=jnp.ones((4, 3), bool)), ValueError, "valid"),
    ("resets-shape", dict(resets=jnp.ones((2,), bool), reset_carry=0), ValueError, "resets"),
    ("resets-without-carry", dict(resets=jnp.ones((4, 2), bool)), ValueError, "reset_carry"),
):

    def check(kw=kw):
        args = {"spec": _SPEC, "w": _W, "xs": _XS} | kw
        jr.kernels.check_scan_args("fused_scan", args.pop("spec"), args.pop("w"), args.pop("xs"), **args)

    case(f"check_scan_args-{name}", check, exc, "fused_scan", arg)
case(
    "fused_scan-resets-without-carry",
    lambda: jr.kernels.fused_scan(_SPEC, _W, None, _XS, resets=jnp.ones((4, 2), bool)),
    ValueError,
    "fused_scan",
    "reset_carry",
)


@pytest.mark.parametrize(("call", "exc", "match"), CASES)
def test_bad_input(call, exc, match):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for m in match:
        assert m in message, f"{m!r} not in {message!r}"


def test_the_catalogue_is_large():
    assert len(CASES) >= 200, len(CASES)


# ---- property tests: what is not a positive int, a rate or a finite number is refused -------------

not_positive_int = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(value=not_positive_int, factory=st.sampled_from(sorted(FACTORIES)))
def test_hidden_size_that_is_not_a_positive_int_is_refused(value, factory):
    with pytest.raises((TypeError, ValueError), match=f"{factory}: hidden_size"):
        FACTORIES[factory](value)


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.floats().filter(lambda r: not 0 <= r < 1), st.text(max_size=3), st.booleans()))
def test_rate_outside_zero_one_is_refused(value):
    with pytest.raises((TypeError, ValueError), match="recurrent_dropout: rate"):
        jr.recurrent_dropout(CELL, value, KEY)


@settings(max_examples=10, deadline=None)
@given(value=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_hyper_parameters_are_refused(value):
    for call in (
        lambda: jr.lstm(4, forget_bias=value),
        lambda: jr.irnn(4, gain=value),
        lambda: jr.pascanu(CELL, PARAMS, XS, mse, bound=value),
        lambda: inits.normal(value),
    ):
        with pytest.raises(ValueError, match="finite|>= 0"):
            call()
