"""The :class:`Cell` type: a recurrence as a small bundle of pure functions.

Seeds 003 and 004 write an RNN as a dynamical system ``s_t = R(s_{t-1}, x_t)``, ``y_t = O(s_t)``.
A :class:`Cell` is that pair plus how to make parameters and the initial state, in the spirit of
optax's ``GradientTransformation(init, update)``. Because ``step`` returns only the new state, the
Jacobian ``ds_t/ds_{t-1}`` is simply ``jax.jacobian(cell.step, argnums=1)``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import initializers as inits

__all__ = ["Cell", "LSTMState", "SequenceKernel", "learned_initial_state"]

Params = Any
Carry = Any


class HParams(Mapping):
    """A read-only, hashable mapping of a cell's hyper-parameters (so a Cell can be a static
    argument of ``jax.jit``)."""

    __slots__ = ("_items",)

    def __init__(self, items=()):
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __hash__(self):
        return hash(tuple(sorted(self._items.items(), key=lambda kv: kv[0])))

    def __repr__(self):
        return f"HParams({self._items!r})"


class Cell(NamedTuple):
    """A recurrent cell: ``s_t = step(params, s_{t-1}, x_t)``, ``y_t = output(s_t)``.

    Fields (all pure functions; nothing is hidden in closures but hyper-parameters):

    * ``init(key, input_size, dtype=jnp.float32) -> params``: a dict of arrays, shapes
      ``(in, out)`` so that ``x @ W`` works with any leading batch dims.
    * ``initial_carry(params, batch_shape=()) -> carry``: ``s_0``, leaves of shape
      ``(*batch_shape, ...)`` in the parameters' dtype (zeros, or a learned state).
    * ``step(params, carry, x) -> carry``: one time step; ``x`` has shape ``(*batch, input_size)``.
    * ``output(carry) -> y``: the readout ``(*batch, hidden)`` (``h`` for an LSTM).
    * ``project(params, xs) -> px`` and ``recur(params, carry, px) -> carry``: the same step split
      in two, ``step(p, c, x) == recur(p, c, project(p, x))``. ``project`` holds everything that
      depends on the input only (``x @ W_xh + b``), so :func:`jaxrnn.unroll` applies it to all ``T``
      steps as one matrix product before the scan and the hot loop only does ``h @ W_hh``.
    * ``input_size(params) -> int``: the input feature size the parameters expect.
    * ``name``: for error messages.
    * ``hparams``: the hyper-parameters the factory closed over that transforms and diagnostics
      need to know, read-only (e.g. ``{"family": "ctrnn", "activation": "tanh", "alpha": 0.1}``);
      ``family`` names the equations (``irnn`` and ``np_rnn`` are of family ``elman``).
    * ``kernel``: ``None``, or a :class:`SequenceKernel`: a whole-sequence fast path that
      :func:`jaxrnn.unroll` uses instead of its ``lax.scan`` (``fused=True``) while ``cell.recur`` is
      still the recurrence the kernel computes -- so a transform that replaces ``recur`` (truncation,
      dropout) silently goes back to the reference scan.
    """

    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    step: Callable[[Params, Carry, jax.Array], Carry]
    output: Callable[[Carry], jax.Array]
    project: Callable[[Params, jax.Array], Any]
    recur: Callable[[Params, Carry, Any], Carry]
    input_size: Callable[[Params], int]
    name: str = "cell"
    hparams: HParams = HParams()
    kernel: Any = None


class SequenceKernel(NamedTuple):
    """A whole-sequence fast path of a cell, for :func:`jaxrnn.unroll`.

    * ``recur``: the ``cell.recur`` it computes; ``unroll`` uses the kernel only while
      ``cell.recur is kernel.recur``.
    * ``apply(params, carry, xs, *, lengths, reverse, unroll) -> (final, states) | None``: ``xs`` is the
      input with time first, ``(T, *batch, I)`` (the kernel does its own input projection, where it
      suits it; ``unroll`` is ``lax.scan``'s, for kernels with a loop); ``states`` the carry after every
      step, leaves ``(T, *batch, ...)`` (any value on padding steps ``t >= lengths``, which ``unroll``
      masks); ``final`` the carry after each sequence's last valid step (the initial carry for length 0),
      in the carry's dtype. Returning ``None`` declines (an option it does not support): ``unroll`` then
      runs its reference scan. It must equal that scan in values and gradients.
    """

    recur: Callable
    apply: Callable


class LSTMState(NamedTuple):
    """The carry of LSTM-type cells: hidden state ``h`` and cell (memory) state ``c``, both
    ``(*batch, H)``. ``h`` comes first, as in PyTorch's ``(h_n, c_n)``; Flax's ``LSTMCell`` carry is
    ``(c, h)``."""

    h: jax.Array
    c: jax.Array


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
}


def activation(fn, what: str) -> Callable[[jax.Array], jax.Array]:
    """Resolve an activation given by name (tanh, sigmoid, relu, identity) or as a callable."""
    if callable(fn):
        return fn
    if isinstance(fn, str) and fn in ACTIVATIONS:
        return ACTIVATIONS[fn]
    raise ValueError(f"{what}: expected one of {sorted(ACTIVATIONS)} or a callable; got {fn!r}")


def positive_int(value, what: str) -> int:
    """``value`` as an int > 0, or a clear error naming ``what``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be a positive int; got {value!r}") from None
    if n <= 0:
        raise ValueError(f"{what} must be a positive int; got {n}")
    return n


def check_init_args(name: str, input_size, dtype) -> tuple[int, Any]:
    """Validate the ``input_size`` and ``dtype`` given to ``cell.init``."""
    n = positive_int(input_size, f"{name}.init: input_size")
    dt = jnp.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name}.init: dtype must be a floating dtype; got {dt}")
    return n, dt


def zeros_state(params_leaf: jax.Array, batch_shape, hidden_size: int) -> jax.Array:
    """Zeros of shape ``(*batch_shape, hidden_size)`` in the dtype of a parameter array."""
    return jnp.zeros((*tuple(batch_shape), hidden_size), params_leaf.dtype)


def hidden_zeros(hidden_size: int, key: str = "W_hh") -> Callable:
    """``initial_carry`` for cells whose carry is one ``(*batch, H)`` array of zeros."""

    def initial_carry(params, batch_shape=()):
        return zeros_state(params[key], batch_shape, hidden_size)

    return initial_carry


def affine_input(params, x):
    """The input half of most cells: ``x @ W_xh + b``, ``(*batch, I) -> (*batch, G*H)``."""
    return x @ params["W_xh"] + params["b"]


def gate_blocks(init, key, rows: int, hidden_size: int, n_gates: int, dtype) -> jax.Array:
    """``(rows, n_gates * H)``: ``init`` applied to each ``(rows, H)`` gate block, concatenated.

    Initialising per gate keeps e.g. an orthogonal recurrent init orthogonal for every gate, as Flax
    and Keras do.
    """
    keys = jax.random.split(key, n_gates)
    return jnp.concatenate([init(k, (rows, hidden_size), dtype) for k in keys], axis=-1)


def make_cell(
    name: str,
    init: Callable,
    initial_carry: Callable,
    project: Callable,
    recur: Callable,
    output: Callable,
    input_size: Callable | None = None,
    kernel: Callable | None = None,
    **hparams,
) -> Cell:
    """Build a :class:`Cell` whose ``step`` is ``recur(project(x))`` (so the two never disagree).

    ``hparams`` become the cell's read-only ``hparams``, with ``family=name``; ``kernel`` (the
    ``apply`` of a :class:`SequenceKernel`) is the cell's whole-sequence fast path for ``recur``."""

    def step(params, carry, x):
        return recur(params, carry, project(params, x))

    if input_size is None:

        def input_size(params):
            return params["W_xh"].shape[0]

    hparams = HParams({"family": name, **hparams})
    seq = None if kernel is None else SequenceKernel(recur, kernel)
    return Cell(init, initial_carry, step, output, project, recur, input_size, name, hparams, seq)


def resolve_inits(name: str, kernel_init, recurrent_init, bias_init):
    """The three initialisers of a cell, resolved from names or callables."""
    return (
        inits.get(kernel_init, f"{name}: kernel_init"),
        inits.get(recurrent_init, f"{name}: recurrent_init"),
        inits.get(bias_init, f"{name}: bias_init"),
    )


def learned_initial_state(cell: Cell, init=inits.zeros) -> Cell:
    """Make ``s_0`` a parameter: a Cell -> Cell transform (seeds 000 and 001, "learned initial state").

    The returned cell's ``init`` adds ``params["initial_carry"]``, one unbatched copy of the carry
    (e.g. ``(H,)`` for an Elman cell, ``LSTMState((H,), (H,))`` for an LSTM)
    -- a pytree shaped like ``cell.initial_carry(params, ())``, initialised by ``init``, zeros by
    default). Its ``initial_carry(params, batch_shape)`` broadcasts that state to ``batch_shape``,
    so ``jax.grad`` of any loss w.r.t. ``params`` gives ``dL/ds_0`` summed over the batch. Everything
    else (``step``, ``output``, ...) is the wrapped cell's; resets in :func:`jaxrnn.unroll` go back to
    the learned state.

    Args:
      cell: any :class:`Cell` whose params are a dict.
      init: initialiser ``(key, shape, dtype) -> array`` for each leaf of ``s_0``.

    Returns:
      A :class:`Cell` named ``learned_initial_state(<name>)``.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"learned_initial_state: cell must be a jaxrnn Cell; got {type(cell)}")
    init = inits.get(init, "learned_initial_state: init")

    def init_params(key, input_size, dtype=jnp.float32):
        k_cell, k_s0 = jax.random.split(key)
        params = cell.init(k_cell, input_size, dtype)
        if not isinstance(params, dict):
            raise TypeError(f"learned_initial_state: {cell.name}'s params must be a dict; got {type(params)}")
        template = cell.initial_carry(params, ())
        leaves, treedef = jax.tree.flatten(template)
        keys = jax.random.split(k_s0, len(leaves))
        s0 = [init(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
        return {**params, "initial_carry": jax.tree.unflatten(treedef, s0)}

    def initial_carry(params, batch_shape=()):
        batch_shape = tuple(batch_shape)
        return jax.tree.map(
            lambda s: jnp.broadcast_to(s, (*batch_shape, *s.shape)),
            params["initial_carry"],
        )

    return cell._replace(
        init=init_params,
        initial_carry=initial_carry,
        name=f"learned_initial_state({cell.name})",
    )
