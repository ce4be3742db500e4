"""Activation functions as values: ``f``, its derivative and ``sup |f'|`` in one typed object.

The cells, the fused kernels, Pascanu's regulariser and the gradient bound all need more than ``f``:
the kernels and Omega need ``f'`` (Omega, as its authors' code, writes it in terms of the output
``y = f(a)``), the bound of Pascanu, Mikolov & Bengio (2013, section 2.1) needs ``gamma_phi = sup |f'|``.
An :class:`Activation` carries all three, so every module reads them from one place::

    act = jr.activations.get("tanh")
    act(a)                  # tanh(a)
    act.grad(a)             # 1 - tanh(a)^2
    act.sup_grad            # 1.0

A user's own elementwise function works everywhere a name does: ``jr.elman(8, activation=jnp.sin)``.
Its derivative comes from ``jax.jvp``; its ``sup_grad`` is unknown (``None``) unless given, e.g.
``Activation("sin", jnp.sin, sup_grad=1.0)``.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["IDENTITY", "RELU", "SIGMOID", "TANH", "Activation", "get", "names"]


class Activation(NamedTuple):
    """An elementwise activation ``y = f(a)`` with what the theory needs of it: ``a`` and ``y`` of any
    shape, e.g. ``(*batch, H)``.

    Fields:

    * ``name``: for messages and reprs.
    * ``fn``: ``f``, elementwise, any shape.
    * ``derivative_of_output``: ``y -> f'(a)`` written in terms of ``y = f(a)`` (tanh: ``1 - y^2``), or
      ``None`` where ``f'`` is not a function of ``f`` alone (then :meth:`grad` differentiates ``fn``).
    * ``sup_grad``: ``sup_a |f'(a)|`` (``gamma_phi`` of the vanishing-gradient bound), or ``None`` if
      unknown.

    Two activations are equal when their fields are (a user's function by identity).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    derivative_of_output: Callable[[jax.Array], jax.Array] | None = None
    sup_grad: float | None = None

    def __call__(self, a):
        return self.fn(a)

    def grad(self, a, y=None):
        """``f'(a)`` elementwise, same shape as ``a``; ``y = f(a)`` may be given to save its evaluation.

        In plain Python: ``derivative_of_output(f(a))`` when there is one, else ``jax.jvp(f, (a,),
        (ones,))[1]``."""
        if self.derivative_of_output is not None:
            return self.derivative_of_output(self.fn(a) if y is None else y)
        return jax.jvp(self.fn, (a,), (jnp.ones_like(a),))[1]

    def __repr__(self):
        return repr(self.name) if BUILTIN.get(self.name) is self else f"Activation({self.name!r})"


def _relu_grad(y):
    return (y > 0).astype(y.dtype)


TANH = Activation("tanh", jnp.tanh, lambda y: 1 - y * y, 1.0)
SIGMOID = Activation("sigmoid", jax.nn.sigmoid, lambda y: y * (1 - y), 0.25)
RELU = Activation("relu", jax.nn.relu, _relu_grad, 1.0)
IDENTITY = Activation("identity", lambda a: a, jnp.ones_like, 1.0)

BUILTIN: dict[str, Activation] = {a.name: a for a in (TANH, SIGMOID, RELU, IDENTITY)}


def names() -> list[str]:
    """The names of the built-in activations, which :func:`get` and every cell factory accept."""
    return sorted(BUILTIN)


def get(spec, what: str = "activation") -> Activation:
    """An :class:`Activation` from a name (``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"identity"``), an
    :class:`Activation`, or an elementwise callable (named by its ``__name__``, derivative by
    ``jax.jvp``, ``sup_grad`` unknown).

    Raises:
      ValueError for an unknown name, TypeError for anything else; the message names ``what``.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        if spec in BUILTIN:
            return BUILTIN[spec]
        raise ValueError(f"{what} must be one of {names()}, an Activation or a callable; got {spec!r}")
    if callable(spec):
        return Activation(getattr(spec, "__name__", type(spec).__name__), spec)
    raise TypeError(f"{what} must be one of {names()}, an Activation or a callable; got {spec!r}")
