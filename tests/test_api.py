"""The public surface: ``__all__`` is what the docs say, and every public name is documented."""

import importlib
import inspect
import re

import jaxrnn as jr

CONTRACT = {  # the founding design and the core and composition issues
    "Activation",
    "Cell",
    "LSTMCarry",
    "Layer",
    "ReNet",
    "accumulator",
    "activations",
    "bidirectional",
    "bn_lstm",
    "cells",
    "ctrnn",
    "decoding",
    "deep_rnn",
    "delay_taps",
    "diagnostics",
    "elman",
    "gradient_bound",
    "gradient_flow",
    "gru",
    "hessian_free",
    "hmm",
    "initialisers",
    "interop",
    "irnn",
    "jacobian_norms",
    "kaplan_yorke_dimension",
    "kernels",
    "layer",
    "lds",
    "learned_initial_state",
    "ln_lstm",
    "lstm",
    "losses",
    "lru",
    "lstm1997",
    "lyapunov_spectrum",
    "max_singular_value",
    "mgu",
    "min_gru",
    "min_lstm",
    "mrnn",
    "narx",
    "newton",
    "np_rnn",
    "optim",
    "parallel_newton",
    "pascanu",
    "recurrent_dropout",
    "regularisers",
    "renet",
    "second_order",
    "softmax",
    "spectral_radius",
    "stack",
    "state_gradients",
    "step_jacobians",
    "tbptt",
    "truncate",
    "truncation",
    "unroll",
    "validators",
}

# a shape in a docstring: "(T, *batch, I)", "(*batch, H)", "(H,)", "(I, 4H)", "(N, N)", ...
SHAPE = re.compile(r"\((\*batch|T|B|I|H|N|F|n|in|max_steps|\d*H)\b[^)]*\)")


# the public modules (their __all__ is checked for docstrings)
MODULES = (
    jr,
    jr.activations,
    jr.validators,
    jr.hmm,
    jr.lds,
    jr.softmax,
    jr.decoding,
    jr.newton,
    jr.initialisers,
    jr.interop,
    jr.kernels,
    importlib.import_module("jaxrnn.kernels.pallas"),
    importlib.import_module("jaxrnn.kernels.cudnn"),
    jr.cells,
    jr.diagnostics,
    jr.truncation,
    jr.regularisers,
    jr.optim,
    jr.losses,
    jr.second_order,
)


def test_all_is_the_contract():
    assert set(jr.__all__) == CONTRACT
    for name in jr.__all__:
        assert hasattr(jr, name), name


def _public_functions():
    for mod in MODULES:
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not inspect.ismodule(obj):
                yield f"{mod.__name__}.{name}", obj


def test_every_public_name_has_a_docstring_with_shapes():
    missing, no_shapes = [], []
    for qualname, obj in _public_functions():
        doc = inspect.getdoc(obj)
        if not doc or len(doc) < 40:
            missing.append(qualname)
        elif qualname.startswith(("jaxrnn.initialisers.", "jaxrnn.cells.")) and not SHAPE.search(doc):
            # initialisers re-exported from jax.nn document shapes in their own (jax) docs
            if getattr(obj, "__module__", "").startswith("jaxrnn"):
                no_shapes.append(qualname)
        elif qualname.count(".") == 1 and not SHAPE.search(doc):
            no_shapes.append(qualname)
    assert not missing, f"public names without a docstring: {missing}"
    assert not no_shapes, f"public docstrings without shapes: {no_shapes}"


def test_modules_have_docstrings():
    for mod in (*MODULES, jr.unroll.__module__):
        mod = mod if inspect.ismodule(mod) else __import__(mod, fromlist=["_"])
        assert inspect.getdoc(mod), mod.__name__


def test_old_names_are_deprecated_aliases():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert jr.LSTMState is jr.LSTMCarry
        assert jr.cells.LRUState is jr.cells.LRUCarry
        assert jr.initializers is jr.initialisers
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(messages) == 3 and "use jaxrnn.cells.LSTMCarry" in messages[0]
    try:
        jr.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_core_import_needs_neither_flax_nor_equinox():
    """``import jaxrnn`` imports only the core (jax, numpy, optax); the framework modules load on use."""
    import subprocess
    import sys

    code = (
        "import sys, jaxrnn as jr; bad = [m for m in ('flax', 'equinox', 'chex') if m in sys.modules]; "
        "assert not bad, bad; jr.nnx.RNN; assert 'flax' in sys.modules; jr.eqx.RNN; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_framework_modules_have_docstrings():
    for mod in (jr.nnx, jr.linen, jr.eqx):
        assert inspect.getdoc(mod) and SHAPE.search(inspect.getdoc(mod.RNN)), mod.__name__
