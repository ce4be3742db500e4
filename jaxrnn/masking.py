"""Per-sequence masks on pytrees: the two helpers every unrolling module uses.

A mask ``(*batch)`` (one boolean per sequence) selects between two carries whose leaves are
``(*batch, ...)``; :func:`expand` gives it the trailing axes of a leaf, :func:`select` applies it to
every leaf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["expand", "select"]


def expand(mask, leaf):
    """``mask (*batch)`` reshaped to broadcast against ``leaf (*batch, ...)``."""
    mask = jnp.asarray(mask)
    return jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(leaf) - mask.ndim))


def select(mask, a, b):
    """Per sequence and on every leaf: ``a`` where ``mask``, else ``b`` (``jnp.where`` broadcast)."""
    return jax.tree.map(lambda x, y: jnp.where(expand(mask, x), x, y), a, b)
