"""Per-sequence masks on pytrees: the two helpers every unrolling module uses.

A mask ``(*batch)`` (one boolean per sequence) selects between two carries whose leaves are
``(*batch, ...)``; :func:`expand` gives it the trailing axes of a leaf, :func:`select` applies it to
every leaf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["expand", "reset_steps", "select", "valid_steps"]


def expand(mask, leaf):
    """``mask (*batch)`` reshaped to broadcast against ``leaf (*batch, ...)``."""
    mask = jnp.asarray(mask)
    return jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(leaf) - mask.ndim))


def select(mask, a, b):
    """Per sequence and on every leaf: ``a`` where ``mask``, else ``b`` (``jnp.where`` broadcast)."""
    return jax.tree.map(lambda x, y: jnp.where(expand(mask, x), x, y), a, b)


def valid_steps(lengths, T: int):
    """``(T, *batch)`` booleans, ``out[t, b] = t < lengths[b]``: which steps of each sequence are real
    (not padding), for ``lengths (*batch)`` integers."""
    lengths = jnp.asarray(lengths)
    return jnp.arange(T).reshape((T,) + (1,) * lengths.ndim) < lengths


def reset_steps(resets, reverse: bool, lengths=None):
    """``resets (T, *batch)`` (True: step ``t`` starts a new segment) as the steps before which the
    carry is reset, in the order a scan with ``reverse`` processes them. Forwards they are ``resets``;
    backwards a segment starting at ``t`` means a reset after step ``t``, i.e. before step ``t - 1``,
    and a reset at ``t = lengths[b]`` is padding, so it is dropped. In plain Python::

        out[t] = resets[t]                                             # reverse=False
        out[t] = resets[t + 1] and t + 1 < lengths[b]  (False at T-1)  # reverse=True
    """
    if not reverse:
        return resets
    shifted = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
    if lengths is None:
        return shifted
    T = resets.shape[0]
    t_next = jnp.arange(1, T + 1).reshape((T,) + (1,) * jnp.ndim(lengths))
    return shifted & (t_next < lengths)
