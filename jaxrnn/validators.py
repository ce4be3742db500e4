"""One home for argument checks: every public function checks its arguments with these, before tracing.

Each check names the function and the argument, says what was expected and what came, and where it
helps, how to fix it. Checks run on shapes and dtypes; value checks (ranges, finiteness) run only on
concrete data, so everything here also works inside ``jax.jit``.
"""

from __future__ import annotations

import functools
import numbers
import operator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # the Cell type is imported where it is used: the cells themselves use these checks
    from jaxrnn.cells.base import Cell

__all__ = [
    "bool_arg",
    "cell",
    "carry",
    "float_dtype",
    "init_args",
    "int_at_least",
    "is_concrete",
    "lengths",
    "loss_fn",
    "params",
    "probes",
    "positive_int",
    "prng_key",
    "rate",
    "real_array",
    "real_number",
    "resets",
    "scan_unroll",
    "time_axis",
    "tokens",
    "xs",
]


def is_concrete(x) -> bool:
    """Whether ``x`` has values now (not a tracer inside ``jit``/``grad``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def positive_int(value, what: str) -> int:
    """``value`` as an int > 0 (bools and floats are not ints), or a clear error naming ``what``."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be a positive int; got {value!r}") from None
    if n <= 0:
        raise ValueError(f"{what} must be a positive int; got {n}")
    return n


def int_at_least(value, what: str, *, minimum: int | None) -> int:
    """``value`` as an int ``>= minimum`` (any int for ``None``; bools and floats are not ints), or an
    error naming ``what``."""
    word = "an int" if minimum is None else f"an int >= {minimum}"
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be {word}; got {value!r}") from None
    if minimum is not None and n < minimum:
        raise ValueError(f"{what} must be {word}; got {n}")
    return n


def bool_arg(value, what: str) -> bool:
    """``value`` if it is a bool, else a TypeError naming ``what``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool; got {value!r}")
    return bool(value)


def real_number(
    value, what: str, *, low=None, high=None, low_open=False, high_open=False, hint: str = ""
) -> float:
    """``value`` as a finite float, optionally in a range; strings, bools, arrays and tracers are refused.

    Every refusal reads ``"{what} must be a finite real number{range}{hint}; got {value}"`` (a TypeError
    for something that is not a real number, a ValueError for a non-finite or out-of-range one)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    array = (
        getattr(value, "shape", None) == ()
        and is_concrete(value)
        and jnp.issubdtype(getattr(value, "dtype", None) or np.bool_, jnp.floating)
    )
    lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
    hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
    if lo and hi:
        rng = f" in {lo}, {hi}"
    elif lo:
        rng = f" {'>' if low_open else '>='} {low:g}"
    elif hi:
        rng = f" {'<' if high_open else '<='} {high:g}"
    else:
        rng = ""
    wanted = f"{what} must be a finite real number{rng}{hint}"
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{wanted}, known at trace time (a concrete number, not a traced value); got {value!r}"
        )
    if not (number or array):
        raise TypeError(f"{wanted}; got {value!r}")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{wanted}; got {x}")
    if low is not None and (x <= low if low_open else x < low):
        raise ValueError(f"{wanted}; got {x}")
    if high is not None and (x >= high if high_open else x > high):
        raise ValueError(f"{wanted}; got {x}")
    return x


def rate(value, what: str) -> float:
    """A dropout rate: a concrete number in ``[0, 1)``."""
    return real_number(value, what, low=0.0, high=1.0, high_open=True)


def float_dtype(value, what: str):
    """``value`` as a floating ``numpy.dtype`` (``jnp.float32``, ``"float64"``, ...), or a TypeError."""
    try:
        dt = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{what} must be a floating dtype; got {value!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{what} must be a floating dtype; got {dt}")
    return dt


def init_args(name: str, input_size, dtype) -> tuple[int, object]:
    """Validate the ``input_size`` and ``dtype`` given to ``cell.init``."""
    return positive_int(input_size, f"{name}.init: input_size"), float_dtype(dtype, f"{name}.init: dtype")


def prng_key(key, fn: str, *, optional: bool = True):
    """A single ``jax.random`` key (typed, or raw ``uint32[2]`` data, wrapped), or ``None`` if allowed."""
    if key is None and optional:
        return None
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                f"{fn}: key must be a single jax.random key (shape ()); got a key array of shape {shape}"
            )
        return key
    if dtype is not None and dtype == jnp.uint32 and len(shape) == 1:
        try:
            return jax.random.wrap_key_data(key)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{fn}: key must be a jax.random key (jax.random.key(0) or PRNGKey(0)); got uint32 data "
                f"of shape {shape} that is not a key of the default PRNG ({e})"
            ) from None
    raise TypeError(
        f"{fn}: key must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed))"
        + (", or None" if optional else "")
        + f"; got {type(key).__name__}"
        + (f" of dtype {dtype} and shape {shape}" if dtype is not None else f" {key!r}")
    )


def real_array(x, what: str):
    """``x`` as a JAX array with a real floating dtype (integers promoted, at least float32)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        host = np.asarray(x)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be a real-valued (floating or integer) array; got {x!r}")
        x = jnp.asarray(host)
    dtype = jnp.dtype(x.dtype)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{what} must be a real-valued (floating or integer) array; got dtype {dtype}")
    return jnp.asarray(x, jnp.promote_types(dtype, jnp.float32))


# --------------------------------------------------------------------------------------------------
# the arguments of the unrolling consumers


def cell(value, fn: str) -> Cell:
    """``value`` if it is a :class:`~jaxrnn.Cell`; a clear TypeError otherwise (a Layer says how to
    make its Cell)."""
    from jaxrnn.cells.base import Cell

    if isinstance(value, Cell):
        return value
    if type(value).__name__ == "Layer":
        raise TypeError(
            f"{fn}: cell must be a jaxrnn Cell; got a Layer ({getattr(value, 'name', '?')}). A Layer runs "
            f"whole sequences and has no step; for a deep RNN as a Cell use jr.deep_rnn(*cells)"
        )
    raise TypeError(f"{fn}: cell must be a jaxrnn Cell (e.g. jr.lstm(128)); got {type(value).__name__}")


def _path(where: str, path) -> str:
    out = where
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            out += f"[{k.key!r}]"
        elif isinstance(k, jax.tree_util.SequenceKey):
            out += f"[{k.idx}]"
        elif isinstance(k, jax.tree_util.GetAttrKey):
            out += f".{k.name}"
        else:
            out += str(k)
    return out.replace("'", '"')


@functools.lru_cache(maxsize=256)
def _expected_cached(c: Cell, n_in: int, dtype):
    return jax.eval_shape(lambda k: c.init(k, n_in, dtype), jax.random.PRNGKey(0))


def _expected_params(c: Cell, n_in: int, dtype):
    """The params ``c.init`` makes for ``n_in`` inputs, as shapes; ``None`` if it cannot make any."""
    try:
        try:
            return _expected_cached(c, n_in, dtype)
        except TypeError as e:  # an unhashable cell (a custom one with list hyper-parameters, ...)
            if "unhashable" not in str(e):
                raise
            return jax.eval_shape(lambda k: c.init(k, n_in, dtype), jax.random.PRNGKey(0))
    except Exception:  # noqa: BLE001 - e.g. an accumulator that takes one input size only
        return None


def params(c: Cell, value, fn: str, where: str = "params"):
    """``value`` if it has the keys, shapes and a floating dtype of ``c.init(key, input_size, dtype)``
    for the input size and dtype it implies; otherwise a clear error naming the entry (``where`` is
    how the caller calls these params, e.g. ``params["backward"]`` for a bidirectional layer).

    The expectation is derived from the cell's own ``init`` (``jax.eval_shape``, nothing is computed),
    cached per cell, input size and dtype; so it holds for every cell and transform. A cell whose data
    are traced is checked for its input size only.
    """
    leaves = jax.tree_util.tree_flatten_with_path(value)[0]
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{fn}: {_path(where, path)} must be a floating array (make params with cell.init(key, "
                f"input_size)); got {type(leaf).__name__}"
                + (f" of dtype {dtype}" if dtype is not None else "")
            )
    dtype = jnp.dtype(leaves[0][1].dtype) if leaves else jnp.dtype(jnp.float32)
    try:
        n_in, failure = int(c.input_size(value)), None
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        n_in, failure = None, e
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(c))  # data traced: no cache
    expected = None if traced else _expected_params(c, 1 if n_in is None else n_in, dtype)
    if expected is not None:
        flat = jax.tree_util.tree_flatten_with_path(expected)[0]
        want = {_path(where, p) for p, _ in flat}
        got = {_path(where, p) for p, _ in leaves}
        if want != got or jax.tree.structure(expected) != jax.tree.structure(value):
            missing, extra = sorted(want - got), sorted(got - want)
            detail = "; ".join(
                x
                for x in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if x
            )
            raise ValueError(
                f"{fn}: {where} do not match this {c!r}: "
                + (detail or f"expected the structure {jax.tree.structure(expected)}")
                + " (make them with cell.init(key, input_size))"
            )
    if failure is not None:
        raise TypeError(
            f"{fn}: {where} do not look like the parameters of this {c!r} (make them with "
            f"cell.init(key, input_size)); reading the input size failed with {failure!r}"
        )
    if expected is not None and n_in is not None:
        for (path, leaf), (_, e) in zip(leaves, jax.tree_util.tree_flatten_with_path(expected)[0]):
            if tuple(leaf.shape) != tuple(e.shape):
                raise ValueError(
                    f"{fn}: {_path(where, path)} must have shape {tuple(e.shape)} for this {c!r} with "
                    f"input_size={n_in}; got {tuple(leaf.shape)}"
                )
    return value


def time_axis(value, ndim: int, fn: str) -> int:
    """``time_axis`` normalised to ``0 .. ndim-2`` (it must not be the feature axis)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: time_axis must be an int; got {value!r}")
    try:
        axis = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: time_axis must be an int; got {value!r}") from None
    if not -ndim <= axis < ndim or axis % ndim == ndim - 1:
        raise ValueError(
            f"{fn}: time_axis must index a non-feature axis of xs (rank {ndim}: one of "
            f"0..{ndim - 2}, or -{ndim}..-2); got {value}"
        )
    return axis % ndim


def scan_unroll(value, fn: str):
    """``lax.scan``'s ``unroll``: a positive int, or a bool (``True``: fully unrolled)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return positive_int(value, f"{fn}: unroll")


def xs(c: Cell, params, value, axis, fn: str):
    """Validate ``xs`` for ``c`` and move its time axis to the front: ``((T, *batch, I), axis)``."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        value = jnp.asarray(value)
    if value.ndim < 2:
        raise ValueError(
            f"{fn}: xs must have shape (T, *batch, features) with time on axis time_axis; "
            f"got shape {tuple(value.shape)} (rank {value.ndim}). Add a time axis for a single step, "
            f"or use cell.step."
        )
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"{fn}: xs must be a real-valued array; got dtype {value.dtype}")
    axis = time_axis(axis, value.ndim, fn)
    moved = jnp.moveaxis(value, axis, 0) if axis else value
    try:
        n_in = c.input_size(params)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise TypeError(
            f"{fn}: params do not look like {c.name}'s parameters (make them with "
            f"cell.init(key, input_size)); reading the input size failed with {e!r}"
        ) from None
    if moved.shape[-1] != n_in:
        want = f"(T, *batch, {n_in})" if axis == 0 else f"time on axis {axis}, features {n_in}"
        raise ValueError(
            f"{fn}: xs must have shape {want} for this {c.name}'s params (input_size={n_in}); "
            f"got {tuple(value.shape)}"
        )
    if moved.shape[0] == 0:
        raise ValueError(
            f"{fn}: xs has an empty time axis (T = 0); an unroll needs at least one step "
            f"(use cell.initial_carry(params, batch_shape) for the state before any input)"
        )
    return moved, axis


def carry(c: Cell, params, value, batch_shape, fn: str):
    """``value`` if it has the structure and shapes of ``c.initial_carry(params, batch_shape)``, a
    floating dtype (an integer carry is an error, never silently rounded) and (when concrete) finite
    values."""
    expected = jax.eval_shape(lambda p: c.initial_carry(p, batch_shape), params)
    e_leaves, e_tree = jax.tree.flatten(expected)
    c_leaves, c_tree = jax.tree.flatten(value)
    if c_tree != e_tree:
        raise ValueError(
            f"{fn}: carry must have the structure of cell.initial_carry(params, batch_shape) "
            f"({e_tree}); got {c_tree}"
        )
    for x, e in zip(c_leaves, e_leaves):
        dtype = jnp.result_type(x)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{fn}: carry must be floating like cell.initial_carry(params, batch_shape) ({e.dtype}); "
                f"got a leaf of dtype {dtype}. An integer carry would run the whole recurrence in integers: "
                f"make it with cell.initial_carry or cast it, e.g. carry.astype({e.dtype})"
            )
        if tuple(jnp.shape(x)) != tuple(e.shape):
            raise ValueError(
                f"{fn}: carry leaves must have shapes "
                f"{[tuple(x.shape) for x in e_leaves]} for batch shape {batch_shape} "
                f"(the batch dims of xs); got {[tuple(jnp.shape(x)) for x in c_leaves]}"
            )
        if is_concrete(x) and jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            if not np.all(np.isfinite(np.asarray(x))):
                raise ValueError(
                    f"{fn}: carry contains NaN or Inf; the initial state must be finite "
                    f"(check the carry passed in, e.g. the final state of a diverged chunk)"
                )
    return value


def lengths(value, T: int, batch_shape, fn: str, *, name: str = "lengths", steps: str = "T"):
    """``(*batch)`` integers in ``[0, T]`` (the range checked on concrete values). ``name`` is the
    argument's name and ``steps`` the name of its bound in messages (``seq2seq``: ``x_lengths``, ``S``)."""
    if not hasattr(value, "dtype"):
        value = np.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: {name} must be an integer array of shape {batch_shape} (valid steps per "
            f"sequence); got dtype {value.dtype}"
        )
    if tuple(value.shape) != tuple(batch_shape):
        raise ValueError(
            f"{fn}: {name} must have shape {tuple(batch_shape)} (the batch dims of xs); "
            f"got {tuple(value.shape)}"
        )
    if is_concrete(value):
        host = np.asarray(value)  # host values: no jax ops, so it also works inside a trace
        lo, hi = (int(host.min()), int(host.max())) if host.size else (0, 0)
        if lo < 0 or hi > T:
            raise ValueError(f"{fn}: {name} must be in [0, {steps}={T}]; got values in [{lo}, {hi}]")
    return jnp.asarray(value)


def tokens(
    value,
    shape,
    fn: str,
    *,
    name: str,
    shape_text: str,
    vocab: int | None = None,
    vocab_text: str = "V",
    valid=None,
):
    """An integer array of token ids (word indices, labels) of ``shape``, a tuple whose ``None`` entries
    take any size ``>= 1``; ``shape_text`` describes the shape in messages (``"(U, *batch) with ..."``).
    With ``vocab = V`` the values must lie in ``[0, V)`` (named ``vocab_text`` in messages), checked on
    concrete values only, and only where the boolean mask ``valid`` (broadcastable to ``shape``; e.g. the
    steps before each sequence's length) is True. Use :func:`token_range` to check the range later, once
    ``V`` is known. A Python int or an integer scalar array passes for ``shape == ()``."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "dtype"):
        value = np.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: {name} must be an integer array of token ids, shape {shape_text}; got dtype {value.dtype}"
        )
    got = tuple(value.shape)
    if len(got) != len(shape) or any(
        w is not None and g != w or w is None and g < 1 for g, w in zip(got, shape)
    ):
        raise ValueError(f"{fn}: {name} must have shape {shape_text}; got {got}")
    if vocab is not None:
        token_range(value, vocab, fn, name=name, vocab_text=vocab_text, valid=valid)
    return jnp.asarray(value)


def token_range(value, vocab: int, fn: str, *, name: str, vocab_text: str = "V", valid=None) -> None:
    """Token ids in ``[0, vocab)`` where the mask ``valid`` (None: everywhere) is True; checked on
    concrete values only (under ``jit`` an out-of-range id is clamped by the gather that uses it)."""
    if not is_concrete(value) or (valid is not None and not is_concrete(valid)):
        return
    host = np.asarray(value)  # host values: no jax ops, so it also works inside a trace
    if valid is not None:
        host = host[np.broadcast_to(np.asarray(valid, bool), host.shape)]
    if host.size and (host.min() < 0 or host.max() >= vocab):
        where = " on the valid steps" if valid is not None else ""
        raise ValueError(
            f"{fn}: {name} must be in [0, {vocab_text}={vocab}){where}; got values in "
            f"[{int(host.min())}, {int(host.max())}]"
        )


def resets(value, xs_shape, axis: int, fn: str):
    """Booleans shaped like ``xs`` without its feature axis (time on ``axis``), returned time first."""
    if not hasattr(value, "dtype"):
        value = np.asarray(value)
    want = tuple(xs_shape[:-1])
    want_user = tuple(np.moveaxis(np.empty(want, dtype=bool), 0, axis).shape) if axis else want
    if value.dtype != jnp.bool_:
        raise TypeError(
            f"{fn}: resets must be a boolean array of shape {want_user} (True resets the carry "
            f"before that step); got dtype {value.dtype}"
        )
    if tuple(value.shape) != want_user:
        raise ValueError(
            f"{fn}: resets must have the shape of xs without its feature axis, {want_user}; "
            f"got {tuple(value.shape)}"
        )
    value = jnp.asarray(value)
    return jnp.moveaxis(value, axis, 0) if axis else value


def probes(value, carry_value, T: int, fn: str):
    """A pytree like the carry with a leading time axis ``T``."""
    c_leaves, c_tree = jax.tree.flatten(carry_value)
    p_leaves, p_tree = jax.tree.flatten(value)
    want = [(T, *jnp.shape(c)) for c in c_leaves]
    got = [tuple(jnp.shape(p)) for p in p_leaves]
    if p_tree != c_tree or want != got:
        raise ValueError(
            f"{fn}: probes must be a pytree like the carry with a leading time axis, leaf shapes "
            f"{want} ({c_tree}); got {got} ({p_tree})"
        )
    return value


def loss_fn(value, ys_struct, fn: str) -> None:
    """``value(ys)`` must be a real floating scalar; checked on shapes only (``jax.eval_shape``)."""
    if not callable(value):
        raise TypeError(f"{fn}: loss_fn must be a callable ys -> scalar loss; got {type(value).__name__}")
    out = jax.eval_shape(value, ys_struct)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        got = f"shape {tuple(out.shape)}" if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"{fn}: loss_fn must return a scalar (e.g. a mean over time and batch) for ys of shape "
            f"{tuple(ys_struct.shape)}; got {got}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{fn}: loss_fn must return a real floating scalar; got dtype {out.dtype}")
