"""Shared test configuration.

float64 is enabled for the whole suite so that gradients can be checked with
``jax.test_util.check_grads`` in double precision. Every test therefore states its dtypes
explicitly (``dtype=jnp.float32`` for the default-precision checks); jaxrnn itself never relies on
the global default (parameters are float32 unless ``init`` is given another dtype).
"""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
