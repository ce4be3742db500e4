"""Memoryless models for sequences as Cells: delay taps (the autoregressive model AR(p)) and NARX.

The Politecnico di Milano lecture "Recurrent Neural Networks" (Ciccone) opens with the "memoryless
models for sequences" that come before any recurrent hidden state: "autoregressive models with delay
taps" and "feed-forward nets on delay taps". Both predict from the last ``p = order`` inputs only, so
their whole state is a shift register of those inputs -- a deterministic, finite memory. Written as
a :class:`~jaxrnn.Cell` they run under :func:`jaxrnn.unroll` like any recurrent cell (lengths, resets,
batch dims, ``jax.grad``), which makes them the baselines to compare a recurrent model against.

* :func:`delay_taps` -- the linear AR(p) readout ``y_t = b + sum_i x_{t-i} @ W[i]``, and
  :func:`fit_delay_taps`, its closed-form (ridge) least-squares fit.
* :func:`narx` -- a one-hidden-layer feed-forward net on the same taps (Narendra & Parthasarathy's
  NARX model in its series-parallel, open-loop form).

The carry of both is a :class:`DelayCarry`: ``window (*batch, order, I)``, newest input first
(``window[..., i, :] = x_{t-i}``, zeros before the start of the sequence or after a reset), and
``out (*batch, O)``, the readout of the last step.

References: G. U. Yule, "On a method of investigating periodicities in disturbed series" (1927) for
the autoregressive model; G. E. P. Box, G. M. Jenkins, "Time Series Analysis: Forecasting and Control"
(1970) for its least-squares fit; K. S. Narendra, K. Parthasarathy, "Identification and control of
dynamical systems using neural networks", IEEE Transactions on Neural Networks 1(1), 1990.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import activations
from jaxrnn import initialisers as inits
from jaxrnn import validators as check
from jaxrnn.cells.base import Cell, CellFns

__all__ = ["DelayCarry", "delay_taps", "fit_delay_taps", "narx"]


class DelayCarry(NamedTuple):
    """The carry of :func:`delay_taps` and :func:`narx`: ``window (*batch, order, I)``, the last
    ``order`` inputs, newest first (``window[..., 0, :] = x_t``, ``window[..., i, :] = x_{t-i}``, zeros
    before the start of the sequence); ``out (*batch, O)``, the readout computed from that window."""

    window: jax.Array
    out: jax.Array


def _output_size(value, fn: str):
    return None if value is None else check.positive_int(value, f"{fn}: output_size")


def _shift(window, x):
    """``concat([x[None], window[:-1]])`` on the tap axis (-2): ``x`` becomes tap 0."""
    x = x.astype(window.dtype)
    return jnp.concatenate([x[..., None, :], window[..., :-1, :]], axis=-2)


def _flat(window):
    """``(*batch, order, I) -> (*batch, order * I)``: tap ``i``, feature ``j`` at column ``i * I + j``."""
    return window.reshape((*window.shape[:-2], window.shape[-2] * window.shape[-1]))


def _delay_initial_carry(order: int, n_in, n_out):
    def initial_carry(params, batch_shape=()):
        batch_shape = tuple(batch_shape)
        dtype = jax.tree.leaves(params)[0].dtype
        return DelayCarry(
            jnp.zeros((*batch_shape, order, n_in(params)), dtype),
            jnp.zeros((*batch_shape, n_out(params)), dtype),
        )

    return initial_carry


def _identity_projection(params, x):
    return x


def _read_out(carry):
    return carry.out


# --------------------------------------------------------------------------------------------------
# delay taps: the autoregressive model AR(p)


def delay_taps(order: int, output_size: int | None = None) -> Cell:
    """Delay taps: the autoregressive model AR(p), ``p = order``, as a :class:`~jaxrnn.Cell`.

    The "autoregressive model with delay taps" of the Politecnico di Milano lecture "Recurrent Neural
    Networks" (Ciccone): a linear readout of the last ``order`` inputs, no hidden state beyond them::

        y_t = b + sum_{i=0}^{order-1} x_{t-i} @ W[i]          (x_{t-i} = 0 for t - i < 0)

    With ``output_size=None`` the output size is the input size, the natural use: trained (or fitted
    by :func:`fit_delay_taps`) on ``targets[t] = xs[t + 1]``, ``y_t`` predicts ``x_{t+1}`` from
    ``x_t .. x_{t-order+1}`` -- the AR(p) predictor of Yule (1927) and Box & Jenkins (1970).

    Shapes: ``x_t (*batch, I)``; params ``W (order, I, O)``, ``b (O,)`` (``init`` makes both zeros:
    the model is linear, so nothing needs breaking symmetry, and gradient descent from zero stays in
    the span of the data). The carry is a :class:`DelayCarry`, ``window (*batch, order, I)`` (newest
    input first) and ``out (*batch, O)``; the output is ``out``. A reset in :func:`jaxrnn.unroll`
    clears the window. The step, in plain Python::

        def step(params, carry, x):
            window = concatenate([x[None], carry.window[:-1]])        # window[i] = x_{t-i}
            out = params["b"] + sum(window[i] @ params["W"][i] for i in range(order))
            return DelayCarry(window, out)

    so over a sequence ``xs (T, I)``::

        window, ys = zeros((order, I)), []
        for t in range(T):
            window = concatenate([xs[t][None], window[:-1]])
            ys.append(params["b"] + sum(window[i] @ params["W"][i] for i in range(order)))

    Args:
      order: ``p``, the number of taps (``x_t .. x_{t-p+1}``), a positive int.
      output_size: ``O``, a positive int, or ``None`` (default) for ``O = I``.

    Returns:
      A :class:`~jaxrnn.Cell`; ``input_size(params) = params["W"].shape[1]``.
    """
    order = check.positive_int(order, "delay_taps: order")
    output_size = _output_size(output_size, "delay_taps")
    return Cell(delay_taps, _build_delay_taps, {"order": order, "output_size": output_size})


def _build_delay_taps(order: int, output_size) -> CellFns:
    def init(key, input_size, dtype=jnp.float32):
        del key  # zeros: see the docstring
        n_in, dtype = check.init_args("delay_taps", input_size, dtype)
        n_out = n_in if output_size is None else output_size
        return {"W": jnp.zeros((order, n_in, n_out), dtype), "b": jnp.zeros((n_out,), dtype)}

    def recur(params, carry, x):
        window = _shift(carry.window, x)
        W = params["W"]
        out = _flat(window) @ W.reshape((-1, W.shape[-1])) + params["b"]
        return DelayCarry(window, out)

    return CellFns(
        init,
        _delay_initial_carry(order, lambda p: p["W"].shape[1], lambda p: p["W"].shape[2]),
        _identity_projection,
        recur,
        _read_out,
        input_size=lambda params: params["W"].shape[1],
    )


# --------------------------------------------------------------------------------------------------
# NARX: a feed-forward net on the delay taps


def narx(order: int, hidden_size: int, activation="tanh", output_size: int | None = None) -> Cell:
    """NARX: a feed-forward net on delay taps (Narendra & Parthasarathy 1990), as a :class:`~jaxrnn.Cell`.

    The "feed-forward net on delay taps" of the Politecnico di Milano lecture "Recurrent Neural
    Networks" (Ciccone), the nonlinear autoregressive model with exogenous inputs of K. S. Narendra and
    K. Parthasarathy, "Identification and control of dynamical systems using neural networks" (1990),
    in its series-parallel (open-loop) form: the taps hold the *given* inputs -- which may include the
    observed past outputs -- never the model's own predictions. One hidden layer::

        y_t = f(flatten(x_t, x_{t-1}, .., x_{t-order+1}) @ W1 + b1) @ W2 + b2   (x_{t-i} = 0 for t < i)

    Shapes: ``x_t (*batch, I)``; params ``W1 (order * I, H)``, ``b1 (H,)``, ``W2 (H, O)``, ``b2 (O,)``
    (LeCun-normal weights, zero biases); row ``i * I + j`` of ``W1`` reads feature ``j`` of
    ``x_{t-i}``. The carry is a :class:`DelayCarry`, ``window (*batch, order, I)`` (newest input first)
    and ``out (*batch, O)``; the output is ``out``. A reset in :func:`jaxrnn.unroll` clears the window.
    The step, in plain Python::

        def step(params, carry, x):
            window = concatenate([x[None], carry.window[:-1]])        # window[i] = x_{t-i}
            hidden = f(window.reshape(order * I) @ params["W1"] + params["b1"])
            return DelayCarry(window, hidden @ params["W2"] + params["b2"])

    Args:
      order: the number of taps, a positive int.
      hidden_size: ``H``, a positive int.
      activation: ``f``: ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"identity"``, an
        :class:`~jaxrnn.activations.Activation` or an elementwise callable.
      output_size: ``O``, a positive int, or ``None`` (default) for ``O = I``.

    Returns:
      A :class:`~jaxrnn.Cell`; ``input_size(params) = params["W1"].shape[0] // order``.
    """
    hp = dict(
        order=check.positive_int(order, "narx: order"),
        hidden_size=check.positive_int(hidden_size, "narx: hidden_size"),
        activation=activation,
        output_size=_output_size(output_size, "narx"),
    )
    activations.get(activation, "narx: activation")
    return Cell(narx, _build_narx, hp)


def _build_narx(order: int, hidden_size: int, activation, output_size) -> CellFns:
    f = activations.get(activation)
    weight = inits.lecun_normal()

    def init(key, input_size, dtype=jnp.float32):
        n_in, dtype = check.init_args("narx", input_size, dtype)
        n_out = n_in if output_size is None else output_size
        k1, k2 = jax.random.split(key)
        return {
            "W1": weight(k1, (order * n_in, hidden_size), dtype),
            "b1": jnp.zeros((hidden_size,), dtype),
            "W2": weight(k2, (hidden_size, n_out), dtype),
            "b2": jnp.zeros((n_out,), dtype),
        }

    def recur(params, carry, x):
        window = _shift(carry.window, x)
        hidden = f(_flat(window) @ params["W1"] + params["b1"])
        return DelayCarry(window, hidden @ params["W2"] + params["b2"])

    def input_size(params):
        return params["W1"].shape[0] // order

    return CellFns(
        init,
        _delay_initial_carry(order, input_size, lambda p: p["W2"].shape[1]),
        _identity_projection,
        recur,
        _read_out,
        input_size=input_size,
    )


# --------------------------------------------------------------------------------------------------
# the closed-form fit of delay taps


def _windows(xs, order: int):
    """``(T, *batch, I) -> (T, *batch, order * I)``: at step ``t`` the window ``x_t, .., x_{t-order+1}``
    (zeros before the start), flattened as the cells flatten it."""
    T = xs.shape[0]
    taps = []
    for i in range(order):
        if i >= T:
            taps.append(jnp.zeros_like(xs))
        else:
            taps.append(jnp.concatenate([jnp.zeros_like(xs[:i]), xs[: T - i]], axis=0))
    return _flat(jnp.stack(taps, axis=-2))


def fit_delay_taps(xs, targets, order: int, *, lengths=None, start: int = 0, ridge: float = 0.0):
    """The least-squares fit of :func:`delay_taps`: params ``{"W": (order, I, O), "b": (O,)}``.

    Box & Jenkins' least-squares estimate of an AR(p) model (with ``targets[t] = xs[t + 1]``), in
    closed form. Each valid step ``start <= t < lengths[b]`` of each sequence is one row of the design
    matrix:
    the window the cell sees at that step, ``phi_t = (x_t, x_{t-1}, .., x_{t-order+1})`` flattened to
    ``(order * I,)`` (zeros before the start, exactly as :func:`delay_taps` pads), and a 1 for ``b``.
    The fit minimises::

        sum_{b, start <= t < lengths[b]} |targets[t, b] - phi_t @ W.reshape(order * I, O) - b|^2 + ridge |W|^2

    (the bias is not penalised), so ``jr.unroll(delay_taps(order, O), params, xs, lengths=lengths)``
    gives the fitted predictions. In plain Python::

        rows, ys = [], []
        for b in batch:
            for t in range(start, lengths[b]):
                window = [xs[t - i, b] if t >= i else zeros(I) for i in range(order)]
                rows.append(concatenate(window + [[1.0]]))
                ys.append(targets[t, b])
        Phi, Y = array(rows), array(ys)                       # (N, order * I + 1), (N, O)
        D = diag([1.0] * (order * I) + [0.0])                 # no penalty on b
        theta = solve(Phi.T @ Phi + ridge * D, Phi.T @ Y)     # lstsq(Phi, Y) when ridge = 0
        params = {"W": theta[:-1].reshape(order, I, O), "b": theta[-1]}

    It is computed without the normal equations: the intercept absorbs the means (the rows are
    centred, ``b = mean(Y) - mean(phi) @ W``, which is what an unpenalised ``b`` means), and the
    centred problem, stacked with ``sqrt(ridge) * I`` rows for the penalty, is solved by
    ``jnp.linalg.lstsq`` (SVD; the minimum-norm ``W`` when the taps are collinear, e.g. a sequence
    shorter than ``order``; singular values below ``eps * max(N, order * I)`` of the largest count as
    zero, so fit ill-conditioned series in float64). No valid step at all gives zeros.

    ``start = order - 1`` leaves out the windows that reach before the start of the sequence (their
    zero padding), which is Box & Jenkins' conditional least squares for an AR(p) on one series.

    Under ``jax.jit`` ``order``, ``start`` and ``ridge`` are static
    (``static_argnames=("order", "start", "ridge")``);
    ``xs``, ``targets`` and ``lengths`` may be traced.

    Args:
      xs: ``(T, *batch, I)``, time first; any number of batch dims, also none.
      targets: ``(T, *batch, O)``: what the readout at each step should be.
      order: the number of taps ``p``, a positive int.
      lengths: ``(*batch)`` ints in ``[0, T]``; steps ``t >= lengths[b]`` are left out (as
        :func:`jaxrnn.unroll` leaves them out). ``None``: every step.
      start: the first step of each sequence that is a row, an int ``>= 0`` (``order - 1``: full windows
        only).
      ridge: the L2 penalty on ``W``, a finite real number ``>= 0``.

    Returns:
      ``{"W": (order, I, O), "b": (O,)}`` in the promoted dtype of ``xs`` and ``targets`` (at least
      float32).
    """
    fn = "fit_delay_taps"
    order = check.positive_int(order, f"{fn}: order")
    start = check.int_at_least(start, f"{fn}: start", minimum=0)
    ridge = check.real_number(ridge, f"{fn}: ridge", low=0.0)
    xs = check.real_array(xs, f"{fn}: xs")
    targets = check.real_array(targets, f"{fn}: targets")
    if xs.ndim < 2 or xs.shape[0] == 0 or xs.shape[-1] == 0:
        raise ValueError(
            f"{fn}: xs must have shape (T, *batch, I) with T >= 1 and I >= 1, time first; "
            f"got {tuple(xs.shape)}"
        )
    T, batch_shape, n_in = xs.shape[0], tuple(xs.shape[1:-1]), xs.shape[-1]
    if targets.ndim != xs.ndim or tuple(targets.shape[:-1]) != (T, *batch_shape) or targets.shape[-1] == 0:
        raise ValueError(
            f"{fn}: targets must have shape (T, *batch, O) = {(T, *batch_shape)} + (O,) with O >= 1, "
            f"the time and batch dims of xs {tuple(xs.shape)}; got {tuple(targets.shape)}"
        )
    if lengths is not None:
        lengths = check.lengths(lengths, T, batch_shape, fn)
    dtype = jnp.result_type(xs, targets)
    xs, targets = xs.astype(dtype), targets.astype(dtype)
    n_out, n_taps = targets.shape[-1], order * n_in

    t = jnp.arange(T).reshape((T,) + (1,) * len(batch_shape))
    in_range = (t >= start) & (t < (T if lengths is None else lengths))
    valid = jnp.broadcast_to(in_range, (T, *batch_shape)).reshape(-1, 1)
    phi = jnp.where(valid, _windows(xs, order).reshape(-1, n_taps), 0.0)  # padding never reaches it
    y = jnp.where(valid, targets.reshape(-1, n_out), 0.0)
    n = jnp.maximum(jnp.sum(valid), 1).astype(dtype)
    phi_mean, y_mean = jnp.sum(phi, axis=0) / n, jnp.sum(y, axis=0) / n
    a = jnp.where(valid, phi - phi_mean, 0.0)
    rhs = jnp.where(valid, y - y_mean, 0.0)
    if ridge > 0.0:
        a = jnp.concatenate([a, jnp.sqrt(jnp.asarray(ridge, dtype)) * jnp.eye(n_taps, dtype=dtype)])
        rhs = jnp.concatenate([rhs, jnp.zeros((n_taps, n_out), dtype)])
    W = jnp.linalg.lstsq(a, rhs)[0]
    return {"W": W.reshape(order, n_in, n_out), "b": y_mean - phi_mean @ W}
