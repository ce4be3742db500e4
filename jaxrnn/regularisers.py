"""Regularisers of the recurrent dynamics: Pascanu, Mikolov and Bengio's vanishing-gradient term Omega.

* :func:`pascanu` -- ``Omega``, the penalty that asks each step to preserve the norm of the
  back-propagated error (Pascanu et al. 2013, eq. 9 and 10), as their code computes it.

The back-propagated errors ``dE/ds_k`` come from the ordinary ``jax.grad``, taken with respect to zero
probes added to the state after each step (:func:`jaxrnn.unroll`'s ``probes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.masking import expand
from jaxrnn.unroll import state_gradients

__all__ = ["pascanu"]


def _flat(tree, lead: tuple[int, ...], n_dims: int) -> jax.Array:
    """Leaves ``(*dims, *rest)`` (``n_dims`` leading dims) -> one array ``(*lead, D)`` (per-example
    concatenation); sizes are explicit, so an empty batch works."""
    leaves = jax.tree.leaves(tree)
    dtype = jnp.result_type(*leaves)
    return jnp.concatenate(
        [jnp.reshape(x, (*lead, math.prod(x.shape[n_dims:]))).astype(dtype) for x in leaves], axis=-1
    )


def _unflat(vec: jax.Array, template, lead: tuple[int, ...]):
    """Inverse of :func:`_flat` for a carry ``template`` with leaves ``(*batch, *rest)``."""
    leaves, treedef = jax.tree.flatten(template)
    n_batch = len(lead) - 1  # lead = (T, *batch)
    out, i = [], 0
    for leaf in leaves:
        rest = tuple(leaf.shape[n_batch:])
        n = math.prod(rest)
        out.append(vec[..., i : i + n].reshape((*lead, *rest)).astype(leaf.dtype))
        i += n
    return jax.tree.unflatten(treedef, out)


def pascanu(
    cell: Cell,
    params,
    xs,
    loss_fn: Callable[[jax.Array], jax.Array],
    carry=None,
    *,
    lengths=None,
    resets=None,
    time_axis: int = 0,
    bound: float = 1e-20,
    squared: bool = True,
) -> jax.Array:
    r"""Pascanu et al.'s vanishing-gradient regulariser ``Omega`` (eq. 9 and 10), as their code computes it.

    Run the cell over ``xs`` (:func:`jaxrnn.unroll`), with states ``s_k`` after step ``k = 0 .. T-1``
    and ``s_{-1}`` the initial ``carry``; let ``E = loss_fn(ys)`` and ``d_k = dE/ds_k`` the total
    (back-propagated) error at step ``k``, flattened per example (for an LSTM ``s = (h, c)``, the
    whole carry vector). With ``J_k = ds_k/ds_{k-1}`` (row-vector convention, so ``d_k J_k`` is the
    error that step ``k`` passes back to ``s_{k-1}``)::

        x_k = ||d_k J_k||^2          y_k = ||d_k||^2           (per example b)
        r_k = x_k / y_k                                          (squared=True: the code, eq. 10)
        r_k = sqrt(x_k) / sqrt(y_k)                              (squared=False: the paper's eq. 9)
        valid_k = (k < lengths[b]) & (y_k >= bound) & (y_k > 0)
        Omega = sum_{k, b} valid_k (r_k - 1)^2 / sum_{k, b} valid_k   (0 when nothing is valid)

    i.e. ``sum_k mean_b(term_k) / sum_k mean_b(valid_k)``, the mean over the valid
    ``(step, example)`` pairs. **Indexing**: every step ``k = 0 .. T-1`` gives one term, pairing
    ``dE/ds_k`` with the Jacobian of the same step ``k`` with respect to the state before it (for
    ``k = 0``, the initial carry). This is the code's ``d_ht[1:]`` (``dC/dh_1 .. dC/dh_T``, with ``h_0``
    the initial state) together with ``f'(a_k)`` taken from the post-activation ``h_k`` of the same
    step; the paper's ``dE/dx_{k+1} . dx_{k+1}/dx_k`` is the same sum shifted by one. Steps with a
    tiny error (``||d_k||^2 < bound``, code default ``1e-20``) are skipped (their ``r`` is 1) and not
    counted; so are padding steps (``k >= lengths[b]``, where ``d_k`` is exactly 0) and steps with
    ``d_k = 0``, whatever ``bound`` is.

    **Gradient** (paper eq. 10, "we consider that x_k and dE/dx_{k+1} [are] constant"): the errors
    ``d_k``, the states and the inputs are held constant (``jax.lax.stop_gradient``), and only the
    explicit dependence of ``d_k J_k`` on ``params`` is differentiated:

    * Elman family (``elman``, ``irnn``, ``np_rnn`` and transforms that keep their dynamics:
      ``cell.form`` is a :class:`~jaxrnn.cells.RecurrentForm` of kind ``"elman"`` whose activation
      gives ``f'`` from its output, as tanh / sigmoid / relu / identity do) -- exactly the authors'
      code::

          x_k = ||(d_k * f'(a_k)) @ W_hh^T||^2,   f'(a_k) from h_k = s_k, held constant:
          tanh 1 - h^2, sigmoid h (1 - h), relu [h > 0], identity 1

      so only ``W_hh`` receives a gradient; every other parameter gets exactly zero.
    * Every other cell (LSTM, GRU, MGU, ctRNN, mRNN, a dropped-out or stacked cell, an Elman cell with
      a callable activation, ...): ``d_k J_k`` is the vector-Jacobian product of ``s -> cell.recur(params,
      s, cell.project(params, x_k), k)`` at ``s_{k-1}`` with cotangent ``d_k`` (``jax.vjp``); with
      ``s_{k-1}``, ``x_k`` and ``d_k`` constant it is differentiated with respect to all of ``params``
      (through the gates and activations of step ``k`` too -- the natural generalisation of the "immediate
      derivative").

    The value is the same on both paths (for the Elman family ``d_k J_k = (d_k * f'(a_k)) W_hh^T``).
    Transforms: the errors ``d_k`` are those training sees (for a :func:`~jaxrnn.truncate`-d cell the
    truncated errors, which stop at the cuts); ``J_k`` is the cell's dynamics (``recur`` with the step
    index, never the gradient-only ``cut``). ``Omega`` is returned as a value; add ``alpha * Omega`` to the
    loss (``alpha`` = 2 in the code, 4 in the paper's temporal-order runs) and clip the total gradient (the
    paper's footnote 4).

    In plain Python (errors from BPTT, states from the unroll)::

        def pascanu(cell, params, xs, loss_fn, carry=None, lengths=None, resets=None, bound=1e-20,
                    squared=True):
            s0 = cell.initial_carry(params, batch_shape)
            s = carry if carry is not None else s0
            num = den = 0.0
            for k in range(T):
                s_prev = s0 if resets is not None and resets[k] else s
                s = cell.step(params, s_prev, xs[k])                # (held after a sequence's length)
                d = stop_gradient(dE_ds[k])                         # (*batch, D), 0 on padding
                dJ = vjp(lambda u: cell.step(params, u, xs[k]), stop_gradient(s_prev))(d)
                x, y = sum(dJ**2, -1), sum(d**2, -1)
                valid = (k < lengths) & (y >= bound) & (y > 0)
                r = x / y if squared else sqrt(x) / sqrt(y)
                num += sum(where(valid, (r - 1)**2, 0.0))
                den += sum(valid)
            return num / den if den > 0 else 0.0

    Args:
      cell: a :class:`~jaxrnn.Cell`.
      params: its parameters (``cell.init(key, input_size)``).
      xs: ``(T, *batch, input_size)`` (time on ``time_axis``); any number of batch dims (also none).
      loss_fn: ``ys (T, *batch, hidden) -> scalar``, the loss ``E`` whose errors Omega looks at (it sees
        :func:`jaxrnn.unroll`'s ``ys``, zero on padding). Must return a real scalar.
      carry: the initial state (default ``cell.initial_carry(params, batch_shape)``); held constant.
      lengths: ``(*batch)`` integers in ``[0, T]``; steps past a sequence's length are excluded.
      resets: booleans shaped like ``xs`` without the feature axis, as in :func:`jaxrnn.unroll`: the
        carry goes back to ``cell.initial_carry`` before the marked steps, so each segment is a sequence
        of its own (the errors do not cross a reset, and the Jacobian of a segment's first step is
        taken at ``s_0``, as for ``k = 0``).
      time_axis: where time is in ``xs`` (and ``resets``); features are last.
      bound: ``>= 0``; steps with ``||dE/ds_k||^2 < bound`` are skipped (code default ``1e-20``).
      squared: ``True`` for the ratio of squared norms (the authors' code, eq. 10); ``False`` for the
        ratio of norms of eq. 9.

    Returns:
      ``Omega``, a scalar in the dtype of the errors; finite, with finite gradients, also when the
      loss does not depend on the states at all (then ``Omega = 0``). Works under ``jax.jit`` and
      ``jax.grad``.

    Raises:
      TypeError / ValueError before tracing: not a Cell, a wrong ``xs``, ``carry`` or ``lengths`` (as
      :func:`jaxrnn.unroll`), a ``loss_fn`` that does not return a real scalar, ``bound < 0``.

    References:
      R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural networks",
      ICML 2013, section 3.3, eq. (9) and (10); the authors' ``RNN.py`` (``tmp_x``, ``tmp_y``, ``bound``,
      ``n_elems``).
    """
    fn = "pascanu"
    cell = check.cell(cell, fn)
    if check.is_concrete(bound):
        check.real_number(bound, f"{fn}: bound", low=0.0)
    squared = check.bool_arg(squared, f"{fn}: squared")
    check.params(cell, params, fn)
    xs, axis = check.xs(cell, params, xs, time_axis, fn)  # time first from here on
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    B = math.prod(batch_shape)
    s0 = cell.initial_carry(params, batch_shape)
    carry = s0 if carry is None else check.carry(cell, params, carry, batch_shape, fn)
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    if resets is not None:
        resets = check.resets(resets, jnp.moveaxis(xs, 0, axis).shape, axis, fn)

    y_struct = jax.eval_shape(lambda p, c: cell.output(c), params, carry)
    if axis:  # loss_fn sees ys in the caller's layout, time on time_axis
        user_loss = loss_fn
        loss_fn = lambda ys: user_loss(jnp.moveaxis(ys, 0, axis))  # noqa: E731
    check.loss_fn(loss_fn, jax.ShapeDtypeStruct((T, *y_struct.shape), y_struct.dtype), fn)

    # valid steps (T, B); padding inputs are zeroed so that whatever is there cannot leak in.
    t_idx = jnp.arange(T).reshape((T,) + (1,) * len(batch_shape))
    if lengths is not None:
        step_valid = jnp.broadcast_to(t_idx < lengths, (T, *batch_shape))
        xs = jnp.where(step_valid[..., None], xs, jnp.zeros_like(xs))
    else:
        step_valid = jnp.ones((T, *batch_shape), jnp.bool_)
    step_valid = step_valid.reshape(T, B)

    # ---- errors d_k = dE/ds_k and states s_k: constants (one forward + one backward pass) ----
    sg = jax.lax.stop_gradient
    p_c, xs_c, carry_c, s0_c = sg(params), sg(xs), sg(carry), sg(s0)
    _, _, errs, states = state_gradients(
        cell, p_c, xs_c, loss_fn, carry_c, return_states=True, lengths=lengths, resets=resets
    )
    lead = (T, *batch_shape)
    d = sg(_flat(errs, (T, B), 1 + len(batch_shape)))  # (T, B, D)
    states = sg(states)  # s_0 .. s_{T-1}, pytree (T, *batch, ...)
    y_k = jnp.sum(d * d, axis=-1)  # (T, B)

    # ---- x_k = ||d_k J_k||^2, differentiable w.r.t. params only ----
    form = cell.form
    exact = (
        form is not None
        and form.kind == "elman"
        and form.activation.derivative_of_output is not None
        and isinstance(params, dict)
        and form.weight in params
    )
    if exact:
        h = _flat(states, (T, B), 1 + len(batch_shape))
        fprime = sg(form.activation.derivative_of_output(h))
        W = params[form.weight]
        dj = (d * fprime).astype(W.dtype) @ W.T
    else:
        s_prev = jax.tree.map(lambda c, s: jnp.concatenate([c[None], s[:-1]], axis=0), carry_c, states)
        if resets is not None:  # a segment's first step starts from the cell's s_0
            s_prev = jax.tree.map(lambda a, b: jnp.where(expand(resets, b), a[None], b), s0_c, s_prev)
        px = cell.project(params, xs_c)
        steps = _step_index(T, batch_shape, resets)

        def step_all(s):
            def one(s1, p1, t1):
                new = cell.recur(params, s1, p1, t1)
                return jax.tree.map(lambda n, o: n.astype(o.dtype), new, s1)

            return jax.vmap(one)(s, px, steps)

        _, pullback = jax.vjp(step_all, s_prev)
        (dj_tree,) = pullback(_unflat(d.reshape(*lead, d.shape[-1]), carry_c, lead))
        dj = _flat(dj_tree, (T, B), 1 + len(batch_shape))
    x_k = jnp.sum(dj * dj, axis=-1).astype(y_k.dtype)

    # ---- ratio, masks, normalisation (double-where: no 0/0 anywhere, even in the gradient) ----
    valid = step_valid & (y_k >= bound) & (y_k > 0)
    y_safe = jnp.where(valid, y_k, jnp.ones_like(y_k))
    if squared:
        r = x_k / y_safe
    else:
        pos = x_k > 0
        nx = jnp.where(pos, jnp.sqrt(jnp.where(pos, x_k, jnp.ones_like(x_k))), jnp.zeros_like(x_k))
        r = nx / jnp.sqrt(y_safe)
    r = jnp.where(valid, r, jnp.ones_like(r))
    term = jnp.where(valid, (r - 1) ** 2, jnp.zeros_like(r))
    num = jnp.sum(jnp.mean(term, axis=1))
    den = jnp.sum(jnp.mean(valid.astype(term.dtype), axis=1))
    has = den > 0
    return jnp.where(has, num / jnp.where(has, den, jnp.ones_like(den)), jnp.zeros_like(num))


def _step_index(T: int, batch_shape, resets):
    """``(T, *batch)`` int32: the step index :func:`jaxrnn.unroll` gives step ``k`` of each sequence
    (steps since the start or the last reset)."""
    k = jnp.broadcast_to(
        jnp.arange(T, dtype=jnp.int32).reshape((T,) + (1,) * len(batch_shape)), (T, *batch_shape)
    )
    if resets is None:
        return k
    last_reset = jax.lax.cummax(jnp.where(resets, k, jnp.zeros_like(k)), axis=0)
    return k - last_reset
