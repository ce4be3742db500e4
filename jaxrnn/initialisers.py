"""Weight initialisers for recurrent networks.

Every initialiser here has the signature of ``jax.nn.initializers``:
``init(key, shape, dtype=jnp.float32) -> array``, so they can be passed to any cell factory
(``jr.elman(64, recurrent_init=jr.initialisers.identity())``) or used on their own.

Recurrent matrices follow jaxrnn's row convention ``h_t = f(h_{t-1} @ W_hh + ...)``: ``W_hh`` has
shape ``(H, H)``, column ``j`` holds the weights *into* unit ``j``. The transpose does not change the
spectrum, so spectral radii and singular values are the same in either convention.

Besides the standard Glorot/He/LeCun/orthogonal initialisers (re-exported from
``jax.nn.initializers``) this module provides the ones the RNN lectures and papers use:

* :func:`identity` -- IRNN (Le, Jaitly, Hinton 2015): ``W_hh = gain * I``.
* :func:`np_rnn` -- Talathi & Vartak 2016: ``W = (B + I) / lambda_max(B + I)``, ``B = R^T R / N``.
* :func:`sparse` -- Pascanu et al. 2013 "smart tanh": 15 non-zeros per unit, spectral radius 0.95.
* :func:`normal` -- ``N(0, std^2)`` with the *standard deviation* as argument (Pascanu's code).
* :func:`torch_uniform` -- PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))`` for every RNN weight and bias.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers as _jinit

from jaxrnn import validators as check

__all__ = [
    "constant",
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "identity",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "np_rnn",
    "orthogonal",
    "sparse",
    "torch_uniform",
    "uniform",
    "zeros",
]

Initializer = Callable[..., jax.Array]


def _variance_scaling(name: str, rule: str):
    """A jaxrnn name for ``jax.nn.initializers.<name>`` (same arguments, same values)."""
    base = getattr(_jinit, name)

    def factory(*args, **kwargs) -> Initializer:
        return base(*args, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"``jax.nn.initializers.{name}(in_axis=-2, out_axis=-1, ...)``: {rule}, for a weight matrix "
        f"``(in, out)`` such as ``W_xh (I, H)``. Returns ``init(key, shape, dtype) -> array``."
    )
    return factory


glorot_normal = _variance_scaling("glorot_normal", "``N(0, 2 / (in + out))`` truncated (Glorot & Bengio)")
glorot_uniform = _variance_scaling(
    "glorot_uniform", "``U(-a, a)``, ``a = sqrt(6 / (in + out))`` (Glorot & Bengio)"
)
he_normal = _variance_scaling("he_normal", "``N(0, 2 / in)`` truncated (He et al.)")
he_uniform = _variance_scaling("he_uniform", "``U(-a, a)``, ``a = sqrt(6 / in)`` (He et al.)")
lecun_normal = _variance_scaling("lecun_normal", "``N(0, 1 / in)`` truncated (LeCun)")
lecun_uniform = _variance_scaling("lecun_uniform", "``U(-a, a)``, ``a = sqrt(3 / in)`` (LeCun)")


def zeros(key, shape, dtype=jnp.float32) -> jax.Array:
    """Zeros of any shape, e.g. a bias ``(H,)``: ``jax.nn.initializers.zeros``."""
    return _jinit.zeros(key, shape, dtype)


def constant(value, dtype=jnp.float32) -> Initializer:
    """``init(key, shape, dtype)`` filling any shape, e.g. ``(H,)``, with ``value``:
    ``jax.nn.initializers.constant``."""
    value = check.real_number(value, "constant: value")
    return _jinit.constant(value, dtype)


def _square(name: str, shape) -> int:
    shape = tuple(shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}: shape must be square (N, N); got {shape}")
    return shape[0]


def normal(std: float = 0.01) -> Initializer:
    """``N(0, std^2)``; the argument is the standard deviation, as in Pascanu et al.'s code.

    Any shape, e.g. ``(I, H)`` for ``W_xh`` or ``(H, H)`` for ``W_hh``.
    Pascanu et al. 2013 (section 4.1.1): "sigmoid" init ``std = 0.01``, "basic tanh" ``std = 0.1``.
    """
    std = check.real_number(std, "normal: std", low=0.0)

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def uniform(scale: float) -> Initializer:
    """``U(-scale, scale)`` for any shape, e.g. ``(I, H)`` (``jax.nn.initializers.uniform`` is
    ``U(0, scale)``)."""
    scale = check.real_number(scale, "uniform: scale", low=0.0)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def torch_uniform(hidden_size: int) -> Initializer:
    """PyTorch's RNN/LSTM/GRU init: every weight and bias ``~ U(-1/sqrt(H), 1/sqrt(H))``."""
    hidden_size = check.positive_int(hidden_size, "torch_uniform: hidden_size")
    return uniform(1.0 / float(hidden_size) ** 0.5)


def identity(gain: float = 1.0) -> Initializer:
    """``W = gain * I`` for a square recurrent matrix ``(N, N)`` (IRNN, Le et al. 2015).

    With a ReLU unit and zero bias the recurrence then starts as ``h_t = relu(h_{t-1} + W_xh x_t)``:
    the state is copied forward and the Jacobian ``dh_t/dh_{t-1}`` is the identity on active units.
    Le et al. also use a scaled identity (``gain = 0.01``) in some experiments.
    """
    gain = check.real_number(gain, "identity: gain")

    def init(key, shape, dtype=jnp.float32):
        del key
        n = _square("identity", shape)
        return gain * jnp.eye(n, dtype=dtype)

    return init


def orthogonal(scale=1.0, column_axis: int = -1) -> Initializer:
    """``jax.nn.initializers.orthogonal``: a ``(in, out)`` matrix with orthonormal columns (or rows, when
    ``in < out``), the Q of a QR of a Gaussian matrix, times ``scale``. Also for half precision:
    bfloat16 / float16 matrices are drawn in float32 and rounded (LAPACK has no half-precision QR)."""
    scale = check.real_number(scale, "orthogonal: scale")
    column_axis = check.int_at_least(column_axis, "orthogonal: column_axis", minimum=None)
    base = _jinit.orthogonal(scale, column_axis)

    def init(key, shape, dtype=jnp.float32):
        dtype = jnp.dtype(dtype)
        if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
            return base(key, shape, jnp.float32).astype(dtype)
        return base(key, shape, dtype)

    return init


def np_rnn() -> Initializer:
    """Talathi & Vartak 2016 ("np-RNN"): ``W = (B + I) / lambda_max(B + I)``, ``B = R^T R / N``.

    ``R ~ N(0, 1)^{N x N}``. ``B + I`` is symmetric positive definite, so every eigenvalue of ``W``
    is real and in ``(0, 1]``, the largest exactly 1 (it is *not* ``B / lambda_max + I``: public
    implementations of the paper, e.g. ``janivanecky/Numpy-RNNs`` ``nprnn.py``, agree on this form).

    References: S. Talathi, A. Vartak, "Improving performance of recurrent neural network with relu
    nonlinearity", arXiv:1511.03771.
    """

    def init(key, shape, dtype=jnp.float32):
        n = _square("np_rnn", shape)
        r = jax.random.normal(key, (n, n), dtype)
        a = r.T @ r / n + jnp.eye(n, dtype=dtype)
        a = 0.5 * (a + a.T)  # exactly symmetric despite rounding
        return a / jnp.linalg.eigvalsh(a)[-1]

    return init


def sparse(
    n_nonzero: int = 15,
    spectral_radius: float = 0.95,
    std: float = 1.0,
    per: str = "incoming",
) -> Initializer:
    """Pascanu et al. 2013 "smart tanh" recurrent init: sparse, rescaled to a spectral radius.

    For a square ``(N, N)`` recurrent matrix: draw ``W ~ N(0, std^2)``, keep ``n_nonzero`` random
    entries per unit and zero the rest, then ``W <- spectral_radius * W / max|eig(W)|``.

    Args:
      n_nonzero: non-zero connections kept per unit (15 in the paper).
      spectral_radius: target ``max|eig(W)|`` (0.95 in the paper).
      std: standard deviation before rescaling (irrelevant after it; kept for completeness).
      per: ``"incoming"`` (the paper's text: 15 incoming connections per unit, i.e. per column of
        ``W_hh`` in jaxrnn's ``h @ W_hh`` convention) or ``"outgoing"`` (what the authors' code does:
        it zeroes per row in the same row convention).

    The eigenvalues are computed with ``jnp.linalg.eig`` (a non-symmetric eigen-decomposition).
    """
    if per not in ("incoming", "outgoing"):
        raise ValueError(f"sparse: per must be 'incoming' or 'outgoing'; got {per!r}")
    n_nonzero = check.positive_int(n_nonzero, "sparse: n_nonzero")
    spectral_radius = check.real_number(spectral_radius, "sparse: spectral_radius", low=0.0, low_open=True)
    std = check.real_number(std, "sparse: std", low=0.0, low_open=True)

    def init(key, shape, dtype=jnp.float32):
        n = _square("sparse", shape)
        if not 0 < n_nonzero <= n:
            raise ValueError(f"sparse: n_nonzero must be in [1, N={n}]; got {n_nonzero}")
        kw, kp = jax.random.split(key)
        w = std * jax.random.normal(kw, (n, n), dtype)
        # A random permutation per unit; its first n_nonzero entries are the kept connections.
        scores = jax.random.uniform(kp, (n, n))
        ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
        keep = ranks < n_nonzero  # row u: the units that u keeps
        if per == "incoming":
            keep = keep.T  # column j: the units feeding unit j
        w = jnp.where(keep, w, 0.0)
        rho = jnp.max(jnp.abs(jnp.linalg.eigvals(w)))
        return (spectral_radius * w / rho).astype(dtype)

    return init


_BY_NAME = {
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "orthogonal": orthogonal,
    "identity": identity,
    "np_rnn": np_rnn,
    "sparse": sparse,
    "smart_tanh": sparse,
    "zeros": lambda: zeros,
}


def get(init, what: str = "init") -> Initializer:
    """Resolve an initialiser given as a callable or by name (``"orthogonal"``, ``"identity"``, ...).

    The result is called as ``init(key, shape, dtype)``, e.g. ``shape = (H, H)`` for ``W_hh``.
    Named initialisers are built with their default arguments. ``what`` names the argument in the
    error message.
    """
    if callable(init):
        return init
    if isinstance(init, str) and init in _BY_NAME:
        made = _BY_NAME[init]()
        return made
    raise ValueError(
        f"{what}: expected a callable (key, shape, dtype) -> array or one of {sorted(_BY_NAME)}; got {init!r}"
    )
