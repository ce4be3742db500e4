"""The :class:`Cell` type: a recurrence as a value -- pure functions fixed by hyper-parameters.

Two of the lectures jaxrnn follows (Kitov's "Recurrent neural nets" and the dynamical-systems notes)
write an RNN as a dynamical system ``s_t = R(s_{t-1}, x_t)``, ``y_t = O(s_t)``. A :class:`Cell` is that
pair plus how to make parameters and the initial state. Because ``step`` returns only the new state,
the Jacobian ``ds_t/ds_{t-1}`` is ``jax.jacobian(cell.step, argnums=1)``.

A Cell is a *value*: two cells made by the same factory with the same hyper-parameters are equal and
hash alike, its repr reads like the factory call (``lstm(hidden_size=128)``), and it is a pytree whose
hyper-parameters are static and whose data (a truncation schedule, a dropout key, the cells it wraps)
are leaves -- so it passes through ``jax.jit``, ``vmap`` and ``grad`` as an ordinary or a static
argument, and equal cells never compile twice.
"""

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import initialisers as inits
from jaxrnn.activations import Activation

__all__ = [
    "Cell",
    "CellFns",
    "LSTMCarry",
    "RecurrentForm",
    "SequenceKernel",
    "custom",
    "learned_initial_state",
    "recur_with_step_index",
]

Params = Any
Carry = Any


class HParams(Mapping):
    """A read-only, hashable mapping: the arguments a cell's factory was called with."""

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
        return hash(tuple(self._items.items()))

    def __repr__(self):
        return f"HParams({self._items!r})"


class SequenceKernel(NamedTuple):
    """A whole-sequence fast path of a cell, for :func:`jaxrnn.unroll`.

    ``apply(params, carry, xs, *, lengths, reverse, unroll) -> (final, states) | None``: ``xs`` is the
    input with time first, ``(T, *batch, I)`` (the kernel projects the inputs itself; ``unroll`` is
    ``lax.scan``'s, for kernels with a loop); ``states`` the carry after every step, leaves
    ``(T, *batch, ...)`` (any value on padding steps ``t >= lengths``, which ``unroll`` masks); ``final``
    the carry after each sequence's last valid step (the initial carry for length 0), in the carry's
    dtype. Returning ``None`` declines (an option it does not support): ``unroll`` then runs its
    reference scan. It must equal that scan in values and derivatives.

    ``resets=True`` says that ``apply`` also takes ``resets`` and ``reset_carry`` keywords, which
    ``unroll`` passes when the call has resets: ``resets (T, *batch)`` booleans in processing order
    (already shifted for ``reverse`` and cleared on padding), ``True`` where the state is replaced by
    ``reset_carry`` (``cell.initial_carry(params, batch_shape)``) before the step. A kernel without it
    is not used for calls with resets.

    ``backends`` names the implementations ``apply`` takes as ``backend=`` (``unroll(..., backend=...)``):
    ``"xla"`` (the default) and, for the fused kernels, ``"pallas"`` (:mod:`jaxrnn.kernels.pallas`).
    """

    apply: Callable
    resets: bool = False
    backends: tuple = ("xla",)


class RecurrentForm(NamedTuple):
    """A typed capability: the cell's recurrence on ``s (*batch, H)`` is of Elman type, which the
    vanishing-gradient bound (:func:`jaxrnn.gradient_bound`) and the exact form of Pascanu's Omega
    (:func:`jaxrnn.pascanu`) use.

    * ``kind="elman"``: ``s_t = f(s_{t-1} @ W + px_t)`` (``elman``, ``irnn``, ``np_rnn``);
    * ``kind="ctrnn"``: ``s_t = (1 - alpha) s_{t-1} + alpha (f(s_{t-1}) @ W + px_t)``;

    with ``f = activation`` (an :class:`~jaxrnn.activations.Activation`) and ``W = params[weight]``,
    ``(H, H)``.
    """

    kind: str
    activation: Activation
    alpha: float = 1.0
    weight: str = "W_hh"


class CellFns(NamedTuple):
    """What a cell's builder returns: the functions behind a :class:`Cell` (see its docstring), on
    inputs ``x (*batch, I)`` and carries with leaves ``(*batch, ...)``.

    ``recur`` takes ``(params, carry, px)``, or ``(params, carry, px, t)`` when ``uses_step_index``;
    ``cut(carry, t) -> carry`` is a gradient-only map applied by the unrolling consumers to the carry
    entering each step (``None``: none); ``input_size`` defaults to ``params["W_xh"].shape[0]``;
    ``masked_recur(params, carry, px, masks)`` is ``recur`` with recurrent-dropout masks (a
    :class:`~jaxrnn.cells.dropout.RecurrentMasks`) where the cell supports them, else ``None``;
    ``step_limit`` is the number of steps the cell's per-step data covers (a truncation schedule's
    length; :func:`jaxrnn.unroll` refuses longer sequences), ``None`` for no limit.
    """

    init: Callable
    initial_carry: Callable
    project: Callable
    recur: Callable
    output: Callable
    input_size: Callable | None = None
    kernel: SequenceKernel | None = None
    cut: Callable | None = None
    uses_step_index: bool = False
    form: RecurrentForm | None = None
    masked_recur: Callable | None = None
    step_limit: int | None = None


def recur_with_step_index(fns: CellFns) -> Callable:
    """``fns.recur`` as a function of ``(params, carry, px, t)`` whether or not it reads ``t``."""
    if fns.uses_step_index:
        return fns.recur
    recur = fns.recur

    def recur_t(params, carry, px, t=None):
        return recur(params, carry, px)

    return recur_t


@functools.cache
def _defaults(factory) -> dict:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _host(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _leaf_equal(a, b) -> bool:
    if a is b:
        return True
    if _is_array(a) and _is_array(b):
        if isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.array_equal(_host(a), _host(b)))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - anything that cannot say it is equal is not
        return False


def _leaf_key(x):
    return (tuple(x.shape), str(x.dtype)) if _is_array(x) else x


def _show(v) -> str:
    if isinstance(v, Cell):
        return repr(v)
    if _is_array(v):
        dtype = "key" if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else str(v.dtype)
        return f"{dtype}{list(v.shape)}"
    if callable(v) and not isinstance(v, Activation):
        return getattr(v, "__name__", type(v).__name__)
    return repr(v)


class Cell:
    """A recurrent cell: ``s_t = step(params, s_{t-1}, x_t)``, ``y_t = output(s_t)``.

    Made by a factory (``jr.lstm(128)``, ``jr.elman(64, "relu")``, ...) or a transform
    (``jr.truncate(cell, cuts)``, ``jr.recurrent_dropout(cell, rate, key)``, ``jr.deep_rnn(a, b)``,
    ``jr.learned_initial_state(cell)``). Fields, all pure functions of their arguments:

    * ``init(key, input_size, dtype=jnp.float32) -> params``: a pytree of arrays (a dict for the
      built-in cells, shapes ``(in, out)`` so that ``x @ W`` works with any leading batch dims).
    * ``initial_carry(params, batch_shape=()) -> carry``: ``s_0``, leaves ``(*batch_shape, ...)`` in the
      parameters' dtype (zeros, or a learned state).
    * ``step(params, carry, x, t=None) -> carry``: one time step, ``x (*batch, input_size)``; equal to
      ``recur(params, carry, project(params, x), t)``.
    * ``project(params, x) -> px``: everything that depends on the input only (``x @ W_xh + b``), so
      :func:`jaxrnn.unroll` applies it to all steps as one product before its scan.
    * ``recur(params, carry, px, t=None) -> carry``: the recurrent part of the step.
    * ``output(carry) -> y``: the readout ``(*batch, hidden)`` (``h`` for an LSTM).
    * ``input_size(params) -> int``.

    ``t`` is **per-step data**, never state: the index of the step in its sequence, ``(*batch)`` int32
    or a scalar -- steps since the start (or the last reset) -- supplied by :func:`jaxrnn.unroll` and
    every consumer. Only cells with ``uses_step_index`` read it (per-step dropout masks, truncation
    schedules); for the others it may be omitted.

    Typed capabilities, read by the consumers instead of string keys:

    * ``cut(carry, t) -> carry``: the gradient-only map a transform applies to the carry entering each
      step (``stop_gradient`` before the steps a truncation schedule marks); the identity for cells
      without one. It never changes values, so the dynamics (``recur``) are the wrapped cell's.
    * ``uses_step_index``: whether ``recur`` or ``cut`` read ``t``; ``step_limit``: how many steps its
      per-step data covers (a truncation schedule's length), ``None`` for no limit.
    * ``kernel``: ``None`` or a :class:`SequenceKernel`, a whole-sequence fast path equal to the
      reference scan of ``recur``.
    * ``form``: ``None`` or a :class:`RecurrentForm` (Elman-type recurrences: their activation with
      its derivative and ``sup |f'|``, ``alpha``, the recurrent weight's key).
    * ``hparams``: the factory's arguments (read-only); ``data``: the arrays and cells it wraps (the
      pytree leaves); ``name``: short, for messages.

    Equality and hashing are by factory, hyper-parameters and data (arrays compared by value). Under
    ``jax.vmap`` a cell with data is given ``in_axes=None`` (its schedule or key is not batched).
    """

    __slots__ = ("_factory", "_build", "hparams", "data", "_fns")

    def __init__(self, factory: Callable, build: Callable, hparams: Mapping = (), data: Mapping = ()):
        object.__setattr__(self, "_factory", factory)
        object.__setattr__(self, "_build", build)
        object.__setattr__(self, "hparams", hparams if isinstance(hparams, HParams) else HParams(hparams))
        object.__setattr__(self, "data", dict(data))
        object.__setattr__(self, "_fns", None)

    def __setattr__(self, name, value):
        raise AttributeError(f"Cell is immutable: cannot set {name!r} (make a new cell with its factory)")

    # ---- the functions, built on first use from the hyper-parameters and the data ----

    @property
    def fns(self) -> CellFns:
        """The :class:`CellFns` behind this cell (built once per instance)."""
        fns = self._fns
        if fns is None:
            fns = self._build(**self.hparams, **self.data)
            object.__setattr__(self, "_fns", fns)
        return fns

    @property
    def kind(self) -> str:
        """The factory's name, e.g. ``"lstm"``, ``"truncate"``."""
        return self._factory.__name__

    @property
    def wrapped(self) -> tuple:
        """The cells this one wraps (a transform's ``cell``, a deep RNN's ``cells``), in order."""
        inner = []
        for v in self.data.values():
            inner += [c for c in (v if isinstance(v, tuple) else (v,)) if isinstance(c, Cell)]
        return tuple(inner)

    @property
    def name(self) -> str:
        """A short name for messages: the factory, with the wrapped cells' names for transforms."""
        inner = self.wrapped
        if self.kind == "custom":
            return str(self.hparams["name"])
        return f"{self.kind}({', '.join(c.name for c in inner)})" if inner else self.kind

    @property
    def init(self):
        """``init(key, input_size, dtype=jnp.float32) -> params``; ``key`` is checked to be a key."""
        fn, name = self.fns.init, self.name

        def init(key, input_size, dtype=jnp.float32):
            _check_key(key, f"{name}.init")
            return fn(key, input_size, dtype)

        return init

    @property
    def initial_carry(self):
        """``initial_carry(params, batch_shape=()) -> carry``; ``batch_shape`` is checked to be a tuple
        of non-negative ints."""
        fn, name = self.fns.initial_carry, self.name

        def initial_carry(params, batch_shape=()):
            return fn(params, _batch_shape(batch_shape, f"{name}.initial_carry"))

        return initial_carry

    @property
    def project(self):
        return self.fns.project

    @property
    def output(self):
        return self.fns.output

    @property
    def kernel(self) -> SequenceKernel | None:
        return self.fns.kernel

    @property
    def uses_step_index(self) -> bool:
        return self.fns.uses_step_index

    @property
    def form(self) -> RecurrentForm | None:
        return self.fns.form

    @property
    def step_limit(self) -> int | None:
        return self.fns.step_limit

    @property
    def has_cut(self) -> bool:
        """Whether :meth:`cut` does anything (a truncated cell, or one that wraps one)."""
        return self.fns.cut is not None

    def input_size(self, params) -> int:
        fn = self.fns.input_size
        return params["W_xh"].shape[0] if fn is None else fn(params)

    def output_size(self, params) -> int:
        """The size of the last axis of ``output(carry)`` for these params (by ``jax.eval_shape``: no
        computation)."""
        return jax.eval_shape(lambda p: self.output(self.initial_carry(p, ())), params).shape[-1]

    def recur(self, params, carry, px, t=None):
        if not self.fns.uses_step_index:
            return self.fns.recur(params, carry, px)
        if t is None:
            raise ValueError(
                f"{self.name}: this cell reads the step index (per-step dropout masks or a truncation "
                f"schedule): pass t, the index of the step in its sequence, e.g. cell.step(params, carry, "
                f"x, t=t); jaxrnn.unroll and every consumer supply it"
            )
        return self.fns.recur(params, carry, px, t)

    def step(self, params, carry, x, t=None):
        return self.recur(params, carry, self.project(params, x), t)

    def cut(self, carry, t):
        """The carry entering step ``t`` with the gradient-only map applied (identity if none)."""
        fn = self.fns.cut
        return carry if fn is None else fn(carry, t)

    # ---- value semantics ----

    def _key(self):
        return (self._factory, self._build, self.hparams)

    def __eq__(self, other):
        if not isinstance(other, Cell) or self._key() != other._key():
            return False
        a_leaves, a_tree = jax.tree.flatten(self.data)
        b_leaves, b_tree = jax.tree.flatten(other.data)
        return a_tree == b_tree and all(_leaf_equal(a, b) for a, b in zip(a_leaves, b_leaves))

    def __hash__(self):
        leaves, tree = jax.tree.flatten(self.data)
        return hash((self._key(), tree, tuple(_leaf_key(x) for x in leaves)))

    def __repr__(self):
        defaults = _defaults(self._factory)
        shown = [(k, v) for k, v in self.data.items() if k not in defaults or v is not defaults[k]]
        for k, v in self.hparams.items():
            d = defaults.get(k, inspect.Parameter.empty)
            if d is inspect.Parameter.empty or not _leaf_equal(v, d):
                shown.append((k, v))
        if self.kind == "custom":
            shown = [("name", self.hparams["name"])]
        return f"{self.kind}({', '.join(f'{k}={_show(v)}' for k, v in shown)})"

    def __reduce__(self):
        return (_rebuild, (self._factory, self._build, self.hparams, self.data))


def _batch_shape(value, what: str) -> tuple:
    if isinstance(value, (tuple, list)) and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n >= 0 for n in value
    ):
        return tuple(int(n) for n in value)
    raise TypeError(
        f"{what}: batch_shape must be a tuple of non-negative ints, e.g. (16,) or (); got {value!r}"
    )


def _check_key(key, what: str) -> None:
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", (None,)))
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype is not None and dtype == jnp.uint32 and len(shape) == 1
    if not (typed or raw):
        raise TypeError(
            f"{what}: key must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got "
            f"{type(key).__name__}"
            + (f" of dtype {dtype} and shape {shape}" if dtype is not None else f" {key!r}")
        )


def _rebuild(factory, build, hparams, data):
    return Cell(factory, build, hparams, data)


def _flatten(cell: Cell):
    keys = tuple(cell.data)
    return tuple(cell.data[k] for k in keys), (cell._factory, cell._build, cell.hparams, keys)


def _unflatten(aux, children):
    factory, build, hparams, keys = aux
    return Cell(factory, build, hparams, dict(zip(keys, children)))


jax.tree_util.register_pytree_node(Cell, _flatten, _unflatten)


class LSTMCarry(NamedTuple):
    """The carry of LSTM-type cells: hidden state ``h`` and cell (memory) state ``c``, both
    ``(*batch, H)``. ``h`` comes first, as in PyTorch's ``(h_n, c_n)``; Flax's ``LSTMCell`` carry is
    ``(c, h)``."""

    h: jax.Array
    c: jax.Array


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


def resolve_inits(name: str, kernel_init, recurrent_init, bias_init):
    """The three initialisers of a cell, resolved from names or callables."""
    return (
        inits.get(kernel_init, f"{name}: kernel_init"),
        inits.get(recurrent_init, f"{name}: recurrent_init"),
        inits.get(bias_init, f"{name}: bias_init"),
    )


# --------------------------------------------------------------------------------------------------
# a user's own cell


def custom(
    name: str,
    *,
    init: Callable,
    initial_carry: Callable,
    recur: Callable,
    output: Callable,
    project: Callable | None = None,
    input_size: Callable | None = None,
    kernel: SequenceKernel | None = None,
    uses_step_index: bool = False,
) -> Cell:
    """A :class:`Cell` from your own functions (equal to another only if made from the same functions).

    ``recur(params, carry, px)`` (or ``(params, carry, px, t)`` with ``uses_step_index=True``) is the
    step on projected inputs ``px = project(params, x)`` (``x (*batch, I)``, carry leaves ``(*batch, ...)``,
    ``output(carry) (*batch, H)``); ``project`` defaults to the identity, so a
    plain ``step(params, carry, x)`` can be given as ``recur``. ``input_size(params)`` defaults to
    ``params["W_xh"].shape[0]``. Every consumer of jaxrnn takes the result like a built-in cell::

        cell = jr.cells.custom("leaky", init=..., initial_carry=..., output=lambda s: s,
                               recur=lambda p, s, x: 0.9 * s + jnp.tanh(x @ p["W"]))
    """
    if not isinstance(name, str):
        raise TypeError(f"custom: name must be a str; got {name!r}")
    for what, fn in (("init", init), ("initial_carry", initial_carry), ("recur", recur), ("output", output)):
        if not callable(fn):
            raise TypeError(f"custom: {what} must be a callable; got {fn!r}")
    for what, fn in (("project", project), ("input_size", input_size)):
        if fn is not None and not callable(fn):
            raise TypeError(f"custom: {what} must be a callable or None; got {fn!r}")
    if kernel is not None and not isinstance(kernel, SequenceKernel):
        raise TypeError(f"custom: kernel must be a SequenceKernel or None; got {type(kernel).__name__}")
    if not isinstance(uses_step_index, bool):
        raise TypeError(f"custom: uses_step_index must be a bool; got {uses_step_index!r}")
    hp = dict(
        name=name,
        init=init,
        initial_carry=initial_carry,
        recur=recur,
        output=output,
        project=project,
        input_size=input_size,
        kernel=kernel,
        uses_step_index=uses_step_index,
    )
    return Cell(custom, _build_custom, hp)


def _identity_projection(params, x):
    return x


def _build_custom(name, init, initial_carry, recur, output, project, input_size, kernel, uses_step_index):
    del name
    return CellFns(
        init,
        initial_carry,
        _identity_projection if project is None else project,
        recur,
        output,
        input_size=input_size,
        kernel=kernel,
        uses_step_index=uses_step_index,
    )


# --------------------------------------------------------------------------------------------------
# learned initial state


def learned_initial_state(cell: Cell, init=inits.zeros) -> Cell:
    """Make ``s_0`` a parameter: a Cell -> Cell transform (the learned initial state of the Politecnico
    di Milano lecture "Recurrent Neural Networks" and of RWTH Aachen's Lecture 17).

    The returned cell's ``init`` adds ``params["initial_carry"]``, one unbatched copy of the carry
    (e.g. ``(H,)`` for an Elman cell, ``LSTMCarry((H,), (H,))`` for an LSTM) -- a pytree shaped like
    ``cell.initial_carry(params, ())``, initialised by ``init``, zeros by default. Its
    ``initial_carry(params, batch_shape)`` broadcasts that state to ``batch_shape``, so ``jax.grad`` of
    any loss w.r.t. ``params`` gives ``dL/ds_0`` summed over the batch. Everything else (``recur``,
    ``output``, the fused kernel, ...) is the wrapped cell's; resets in :func:`jaxrnn.unroll` go back to
    the learned state. In plain Python::

        params = {**cell.init(k1, input_size), "initial_carry": init(k2, shape of s_0)}
        initial_carry(params, batch_shape) = broadcast_to(params["initial_carry"], batch_shape + ...)

    Args:
      cell: any :class:`Cell` whose params are a dict.
      init: initialiser ``(key, shape, dtype) -> array`` (or a name) for each leaf of ``s_0``.

    Returns:
      A :class:`Cell` named ``learned_initial_state(<name>)``.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"learned_initial_state: cell must be a jaxrnn Cell; got {type(cell).__name__}")
    inits.get(init, "learned_initial_state: init")
    return Cell(learned_initial_state, _build_learned_initial_state, {"init": init}, {"cell": cell})


def _build_learned_initial_state(init, cell: Cell) -> CellFns:
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
        return jax.tree.map(lambda s: jnp.broadcast_to(s, (*batch_shape, *s.shape)), params["initial_carry"])

    inner = cell.fns
    return inner._replace(init=init_params, initial_carry=initial_carry, input_size=cell.input_size)
