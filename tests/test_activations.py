"""Activations as values: f, f' and sup|f'| against jax.grad brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import activations

A = jnp.linspace(-6.0, 6.0, 241, dtype=jnp.float64)


@pytest.mark.parametrize("name", activations.names())
def test_builtin_derivative_and_bound_against_jax_grad(name):
    act = activations.get(name)
    assert act is activations.BUILTIN[name] and act.name == name
    brute = jax.vmap(jax.grad(act.fn))(A)
    np.testing.assert_allclose(act.grad(A), brute, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(act.grad(A, act(A)), brute, rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(brute))) <= act.sup_grad + 1e-12
    assert (
        float(jnp.max(jnp.abs(brute))) >= 0.99 * act.sup_grad
    )  # the bound is attained (sup, not a loose bound)


def test_a_users_function_is_an_activation():
    act = activations.get(jnp.sin)
    assert act == activations.get(jnp.sin) and act.name == "sin" and act.sup_grad is None
    assert act.derivative_of_output is None
    np.testing.assert_allclose(act.grad(A), jnp.cos(A), rtol=1e-12)
    own = jr.Activation("softsign", jax.nn.soft_sign, sup_grad=1.0)
    assert (
        activations.get(own) is own
        and repr(own) == "Activation('softsign')"
        and repr(activations.TANH) == "'tanh'"
    )
    cell = jr.elman(3, activation=own)
    params = cell.init(jax.random.PRNGKey(0), 2)
    assert cell.form.activation is own
    np.testing.assert_allclose(
        jr.gradient_bound(cell, params, 2), jr.gradient_bound(cell, params, 2, activation=1.0)
    )


@pytest.mark.parametrize(("spec", "exc"), [("softsign", ValueError), (3, TypeError), (None, TypeError)])
def test_bad_activation(spec, exc):
    with pytest.raises(exc, match="elman: activation must be one of"):
        activations.get(spec, "elman: activation")
