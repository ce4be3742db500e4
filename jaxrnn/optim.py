"""Optax gradient transformations for Pascanu, Mikolov and Bengio's training recipe (what optax lacks).

* :func:`add_regulariser_gradient` -- add ``alpha_t * dOmega/dtheta`` (passed as an extra argument of
  ``update``) to the gradient, before clipping, as the authors' code does.
* :func:`pascanu_fallback` -- the code's safety net: when the gradient norm is NaN, Inf or
  ``> 1e10``, replace the step by ``0.02 * W_hh`` on ``W_hh`` and zero elsewhere (optionally also the
  rescaling of Algorithm 1, exactly as the code's ``if / elif``).
* :func:`pascanu_sgd` -- the whole recipe as one optimizer.

Plain norm clipping (Pascanu et al.'s Algorithm 1) is ``optax.clip_by_global_norm``; Mikolov's element-wise
clipping is ``optax.clip``. Everything here is an ``optax.GradientTransformation`` (NamedTuple of pure
``init`` / ``update``), works inside ``optax.chain`` and under ``jax.jit``, and never syncs with the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrnn import validators as check

__all__ = [
    "AddRegulariserGradientState",
    "PascanuFallbackState",
    "add_regulariser_gradient",
    "pascanu_fallback",
    "pascanu_sgd",
]

_INT_MAX = jnp.iinfo(jnp.int32).max


def _safe_increment(count: jax.Array, by=1) -> jax.Array:
    """``count + by`` in int32, saturating at the int32 maximum instead of wrapping around."""
    by = jnp.asarray(by, jnp.int32)
    return jnp.where(count < _INT_MAX - by, count + by, jnp.asarray(_INT_MAX, jnp.int32))


def _check_positive_real(value, what: str, *, allow_zero: bool = False, hint: str = "") -> None:
    """:func:`jaxrnn.validators.real_number` for a finite real > 0 (>= 0 with ``allow_zero``); tracers
    pass. ``hint`` (e.g. the authors' value) is added to the message."""
    if check.is_concrete(value):
        check.real_number(value, what, low=0.0, low_open=not allow_zero, hint=hint)


def _key_names(entry) -> tuple[Any, ...]:
    """The names a key-path entry answers to: a dict key, an attribute name or a sequence index."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return (getattr(entry, attr),)
    return ()


def _recurrent_mask(tree, keys: tuple[str, ...]) -> list[bool]:
    """For each leaf of ``tree`` (in ``jax.tree.leaves`` order): does its key path contain one of ``keys``?"""
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [any(n in keys for e in path for n in _key_names(e)) for path, _ in with_path]


def _tree_summary(tree, limit: int = 300) -> str:
    s = str(jax.tree.structure(tree))
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ==================================================================================================
# Pascanu's fallback for non-finite or huge gradients


class PascanuFallbackState(NamedTuple):
    """State of :func:`pascanu_fallback`: metrics for a training log.

    Attributes:
      count: ``int32 ()``, how many updates so far hit the fallback (norm NaN, Inf or ``> max_norm``).
      fired: ``bool ()``, whether the last update hit it.
      norm: ``()``, the global norm of the last incoming updates (before any rescaling; the authors'
        logged "gradient norm"), in the floating dtype of the params.
    """

    count: jax.Array
    fired: jax.Array
    norm: jax.Array


def pascanu_fallback(
    max_norm: float = 1e10,
    shrink: float = 0.02,
    recurrent_key: str | Sequence[str] = "W_hh",
    *,
    threshold: float | None = None,
) -> optax.GradientTransformation:
    r"""Pascanu et al.'s fallback step for NaN, Inf or huge gradients: shrink ``W_hh``, zero the rest.

    With ``g`` the incoming updates (a gradient pytree) and ``||g|| = sqrt(sum_leaves sum g^2)`` their
    global norm::

        if ||g|| is NaN or Inf or ||g|| > max_norm:          # "we can not even trust the numbers"
            g[W] <- shrink * theta[W]   for every leaf W whose key path holds recurrent_key
            g[v] <- 0                   for every other leaf v
        elif threshold is not None and ||g|| > threshold:  # Algorithm 1 (strict >, as in the code)
            g <- (threshold / ||g||) g
        else:
            g unchanged

    so that the next SGD step ``theta <- theta - lr g`` multiplies ``W_hh`` by ``(1 - shrink * lr)``
    and leaves every other parameter where it was. The selection is a ``jnp.where`` on each leaf (no
    ``0 * NaN``, no ``lax.cond``, no host sync): with the fallback in the chain, a NaN or Inf gradient
    never reaches the parameters (unless the parameters themselves are already non-finite).

    The recipe (the authors' ``RNN.py``: the regulariser's gradient is added before the norm is taken,
    and both the fallback and the rescaling look at the norm of ``grad E + alpha grad Omega``)::

        tx = optax.chain(
            add_regulariser_gradient(alpha),       # g <- grad E + alpha_t grad Omega
            pascanu_fallback(threshold=1.0),       # the code's if / elif, in one transform
            optax.sgd(learning_rate),
        )

    With ``threshold=None`` the transform only does the fallback, and ``optax.clip_by_global_norm``
    follows it in the chain (it must come *after*, since the fallback has to see the unclipped norm).
    That differs from the code in one corner only: when the fallback fires and ``shrink * ||W_hh||``
    is itself above the clipping threshold, ``clip_by_global_norm`` rescales the fallback step too.

    In plain Python (``params`` is required: the fallback step is built from the parameters)::

        def update(updates, state, params):
            norm = sqrt(sum(sum(u**2) for u in leaves(updates)))
            fired = not (norm <= max_norm)                     # NaN, Inf or too big
            if fired:
                updates = {path: shrink * params[path] if recurrent_key in path else 0 * u
                           for path, u in updates.items()}
            elif threshold is not None and norm > threshold:
                updates = {path: u * threshold / norm for path, u in updates.items()}
            return updates, PascanuFallbackState(state.count + fired, fired, norm)

    Args:
      max_norm: finite ``> 0``; norms above it (and NaN / Inf) trigger the fallback. Code: ``1e10``.
      shrink: finite ``> 0``; the fallback step is ``shrink * W_hh``. Code: ``0.02``.
      recurrent_key: the dict key (or attribute name) of the recurrent weight, or a sequence of them;
        every leaf with one of them anywhere on its key path (``jax.tree_util`` paths) is shrunk, so
        nested models (``{"cell": {"W_hh": ...}, "w": ...}``) and stacks of layers
        (``[{"W_hh": ...}, {"W_hh": ...}]``) get every recurrent matrix shrunk.
      threshold: ``None`` (only the fallback) or finite ``> 0``: also rescale to this norm when the
        norm is above it and the fallback did not fire (the code's ``cutoff``, default 1).

    Returns:
      An ``optax.GradientTransformation``: ``init(params) -> PascanuFallbackState`` (``count = 0``,
      ``fired = False``, ``norm = 0``) and ``update(updates, state, params) -> (updates, state)``,
      the updates with the structure, shapes and dtypes they came with.

    Raises:
      TypeError / ValueError at construction: a non-finite or non-positive ``max_norm``, ``shrink`` or
      ``threshold``, an empty or non-string ``recurrent_key``. ValueError from ``init`` / ``update``: no
      leaf of the params has ``recurrent_key`` on its path (a cell with no recurrent weight, e.g.
      ``jr.accumulator(4)``, or a misspelt key), ``params=None`` in ``update``, updates whose tree
      structure or shapes differ from the params.

    References:
      R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural networks",
      ICML 2013, section 3.2 and Algorithm 1; the authors' ``RNN.py`` (l. 219-243: ``norm_theta``,
      ``not_finite``, ``0.02 * W_hh``, ``cutoff``).
    """
    fn = "pascanu_fallback"
    _check_positive_real(max_norm, f"{fn}: max_norm", hint=" (code: 1e10)")
    _check_positive_real(shrink, f"{fn}: shrink", hint=" (code: 0.02)")
    if threshold is not None:
        _check_positive_real(threshold, f"{fn}: threshold", hint=" or None (code: cutoff=1)")
    keys = (recurrent_key,) if isinstance(recurrent_key, str) else recurrent_key
    try:
        keys = tuple(keys)
    except TypeError:
        keys = None
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise TypeError(
            f"{fn}: recurrent_key must be a non-empty str (the params key of the recurrent weight, "
            f"e.g. 'W_hh') or a non-empty sequence of them; got {recurrent_key!r}"
        )
    shown = repr(recurrent_key)

    def _mask(params, where: str) -> list[bool]:
        mask = _recurrent_mask(params, keys)
        if not any(mask):
            paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
            leaves = ", ".join(paths) or "none"
            raise ValueError(
                f"{fn}.{where}: recurrent_key={shown} names no leaf of the params, so there is no "
                f"recurrent weight to shrink (a cell with no recurrent weight, e.g. "
                f"jr.accumulator(..., kind='sum'), or a misspelt key). Param leaves: {leaves}"
            )
        return mask

    def init_fn(params):
        _mask(params, "init")
        leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
        dtype = jnp.result_type(*leaves) if leaves else jnp.float32
        return PascanuFallbackState(
            count=jnp.zeros((), jnp.int32), fired=jnp.zeros((), jnp.bool_), norm=jnp.zeros((), dtype)
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                f"{fn}.update: params is required (the fallback step is {shrink} * params[{shown}]); "
                f"call update(updates, state, params)"
            )
        if jax.tree.structure(updates) != jax.tree.structure(params):
            raise ValueError(
                f"{fn}.update: updates and params must have the same tree structure; got updates "
                f"{_tree_summary(updates)} and params {_tree_summary(params)}"
            )
        u_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = jax.tree.leaves(params)
        for i, (u, p) in enumerate(zip(u_leaves, p_leaves)):
            if jnp.shape(u) != jnp.shape(p):
                raise ValueError(
                    f"{fn}.update: update leaf {i} has shape {jnp.shape(u)} but the matching param has "
                    f"shape {jnp.shape(p)}"
                )
        mask = _mask(params, "update")

        norm = optax.tree.norm(updates)
        fired = jnp.logical_not(norm <= max_norm)  # NaN / Inf / too big; norm >= 0 always
        if threshold is not None:
            clip = jnp.logical_and(jnp.logical_not(fired), norm > threshold)
            scale = threshold / jnp.where(clip, norm, jnp.ones_like(norm))
        out = []
        for u, p, rec in zip(u_leaves, p_leaves, mask):
            u = jnp.asarray(u)
            if threshold is not None:
                u = jnp.where(clip, u * scale.astype(u.dtype), u)
            fallback = (shrink * jnp.asarray(p)).astype(u.dtype) if rec else jnp.zeros_like(u)
            out.append(jnp.where(fired, fallback, u))
        new_state = PascanuFallbackState(
            count=_safe_increment(state.count, fired.astype(jnp.int32)),
            fired=fired,
            norm=norm.astype(state.norm.dtype),
        )
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


# ==================================================================================================
# adding alpha * grad(Omega) to the gradient


class AddRegulariserGradientState(NamedTuple):
    """State of :func:`add_regulariser_gradient`.

    Attributes:
      count: ``int32 ()``, number of updates so far (the argument of the ``alpha`` schedule).
    """

    count: jax.Array


def add_regulariser_gradient(
    alpha: float | Callable[[jax.Array], jax.Array], name: str = "omega_grads"
) -> optax.GradientTransformationExtraArgs:
    r"""Add ``alpha_t`` times a regulariser's gradient, given as an extra argument, to the updates.

    ``update(updates, state, params, **{name: omega_grads})`` returns::

        updates + alpha_t * omega_grads,    alpha_t = alpha(t) for a schedule, else alpha,

    with ``t = state.count`` the number of earlier updates (0 at the first). ``omega_grads`` is the
    gradient of Pascanu's ``Omega`` (:func:`jaxrnn.pascanu`) with respect to *all* params, zeros where
    Omega does not depend on them, e.g. for a model ``{"cell": ..., "w": ..., "b": ...}``::

        omega_grads = jax.grad(lambda p: jr.pascanu(cell, p["cell"], xs, loss_fn))(params)
        updates, opt_state = tx.update(grads, opt_state, params, omega_grads=omega_grads)

    Put it first in the chain, before :func:`pascanu_fallback` and ``optax.clip_by_global_norm``: the
    authors' code adds ``alpha * dOmega/dW_hh`` to ``dE/dW_hh`` and then takes the norm that decides
    both the fallback and the rescaling (see :func:`pascanu_sgd`). ``optax.chain`` passes extra
    arguments on to every transform that takes them (``GradientTransformationExtraArgs``) and drops
    them for plain ones, so the other transforms of the chain are unaffected.

    With a constant ``alpha`` the result equals differentiating ``E + alpha * Omega`` (Omega's
    constants are already ``stop_gradient``-ed); this transform is for a schedule -- the music
    experiments' ``alpha_t = 1 / (2t)`` is ``lambda count: 0.5 / (count + 1)`` -- and for keeping
    ``E``'s gradient apart (e.g. to log both norms).

    In plain Python::

        def update(updates, state, params=None, **extra):
            a = alpha(state.count) if callable(alpha) else alpha
            updates = {k: u + a * extra[name][k] for k, u in updates.items()}
            return updates, AddRegulariserGradientState(state.count + 1)

    Args:
      alpha: a finite real ``>= 0`` (0 turns the term off: the paper's SGD-C baseline next to SGD-CR),
        or an ``optax.Schedule`` ``count -> alpha_t`` (not checked). Code default 2; the paper uses 4
        on temporal order.
      name: the keyword under which ``update`` receives the regulariser's gradient (a valid Python
        identifier).

    Returns:
      An ``optax.GradientTransformationExtraArgs``: ``init(params) -> AddRegulariserGradientState``
      (``count = 0``) and ``update(updates, state, params=None, **extra) -> (updates, state)``; the
      updates keep their dtypes (``alpha_t * omega_grads`` is cast to each update's dtype).

    Raises:
      TypeError / ValueError at construction: ``alpha`` negative, non-finite or not a number or
      callable; ``name`` not an identifier. ValueError from ``update``: the extra argument ``name`` is
      missing, or its tree structure or leaf shapes differ from the updates.

    References:
      R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural networks",
      ICML 2013, section 3.3 (eq. 10; alpha = 4 on temporal order, alpha_t ~ 1/t on natural tasks,
      section 4.2); the authors' ``RNN.py`` (``gW_hh + alpha * dOmega/dW_hh`` before clipping).
    """
    fn = "add_regulariser_gradient"
    if not callable(alpha):
        _check_positive_real(alpha, f"{fn}: alpha", allow_zero=True, hint=" or a schedule count -> alpha_t")
    if not (isinstance(name, str) and name.isidentifier()):
        raise TypeError(f"{fn}: name must be a str that is a Python identifier; got {name!r}")

    def init_fn(params):
        del params
        return AddRegulariserGradientState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        if name not in extra_args:
            got = sorted(extra_args) or "none"
            raise ValueError(
                f"{fn}.update: the regulariser's gradient is missing; pass it as the extra keyword "
                f"argument {name}=..., e.g. tx.update(grads, state, params, {name}=jax.grad(omega_fn)"
                f"(params)); extra arguments received: {got}"
            )
        extra = extra_args[name]
        if jax.tree.structure(extra) != jax.tree.structure(updates):
            raise ValueError(
                f"{fn}.update: {name} must have the tree structure of the updates (the gradient of "
                f"Omega w.r.t. all params, zeros where it does not depend on them); got {name} "
                f"{_tree_summary(extra)} and updates {_tree_summary(updates)}"
            )
        u_leaves, treedef = jax.tree.flatten(updates)
        e_leaves = jax.tree.leaves(extra)
        for i, (u, e) in enumerate(zip(u_leaves, e_leaves)):
            if jnp.shape(u) != jnp.shape(e):
                raise ValueError(
                    f"{fn}.update: {name} leaf {i} has shape {jnp.shape(e)} but the matching update has "
                    f"shape {jnp.shape(u)}"
                )
        a = alpha(state.count) if callable(alpha) else alpha
        out = []
        for u, e in zip(u_leaves, e_leaves):
            u = jnp.asarray(u)
            out.append(u + (jnp.asarray(a) * jnp.asarray(e)).astype(u.dtype))
        return jax.tree.unflatten(treedef, out), AddRegulariserGradientState(_safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ==================================================================================================
# the whole recipe


def pascanu_sgd(
    learning_rate: float | Callable[[jax.Array], jax.Array],
    threshold: float | None = 1.0,
    alpha: float | Callable[[jax.Array], jax.Array] | None = None,
    *,
    max_norm: float = 1e10,
    shrink: float = 0.02,
    recurrent_key: str | Sequence[str] = "W_hh",
    name: str = "omega_grads",
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with Pascanu et al.'s clipping, fallback and (optionally) regulariser, as their code trains.

    Exactly::

        optax.chain(
            add_regulariser_gradient(alpha, name),     # only if alpha is not None
            pascanu_fallback(max_norm, shrink, recurrent_key, threshold=threshold),
            optax.sgd(learning_rate),
        )

    i.e. per step, with ``g = grad E + alpha_t grad Omega`` and ``n = ||g||`` (global norm)::

        if n is NaN / Inf or n > max_norm:   g <- shrink * W_hh on W_hh, 0 elsewhere
        elif n > threshold:                  g <- threshold * g / n
        theta <- theta - learning_rate * g

    The same with ``optax.clip_by_global_norm(threshold)`` after ``pascanu_fallback()`` agrees except
    when the fallback step ``shrink * ||W_hh||`` is itself above ``threshold`` (see
    :func:`pascanu_fallback`). Swap ``optax.sgd`` for another optimizer by writing the chain out.

    Args:
      learning_rate: a float or an ``optax.Schedule``.
      threshold: the clipping threshold (the code's ``cutoff``, default 1; the paper: half to ten
        times the average gradient norm), or ``None`` for no clipping (fallback only).
      alpha: ``None`` (no regulariser; no extra argument needed) or the weight of Omega's gradient, a
        float ``>= 0`` or a schedule; then ``update`` needs ``**{name: omega_grads}``.
      max_norm, shrink, recurrent_key: as in :func:`pascanu_fallback`.
      name: as in :func:`add_regulariser_gradient`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (an ``optax.chain``); its state is the tuple of the
      states of the chained transforms (``state[-2]`` is the :class:`PascanuFallbackState`).

    References:
      R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural networks",
      ICML 2013, Algorithm 1 and section 3.3; the authors' ``RNN.py`` l. 166-243.
    """
    txs = []
    if alpha is not None:
        txs.append(add_regulariser_gradient(alpha, name))
    txs.append(pascanu_fallback(max_norm, shrink, recurrent_key, threshold=threshold))
    txs.append(optax.sgd(learning_rate))
    return optax.chain(*txs)
