"""Weights to and from PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` and Flax linen cells.

Everything here works on plain arrays: no torch import, no flax import. Parameters come back as
**numpy arrays** in the dtype they came in (torch tensors are read with
``x.detach().cpu().numpy()``; jax arrays with ``np.asarray``); wrap them with ``jnp.asarray`` or pass
them straight to a cell, which accepts numpy arrays.

Conventions (jaxrnn is row-major, ``x @ W``; PyTorch is column-major, ``W @ x``):

=============  ================================  ====================================  ==========
kind           jaxrnn cell                       jaxrnn params                         gate order
=============  ================================  ====================================  ==========
``rnn_tanh``   ``jr.elman(H, "tanh")``           ``W_xh (I, H)  W_hh (H, H)  b (H,)``    --
``rnn_relu``   ``jr.elman(H, "relu")``           same                                  --
``lstm``       ``jr.lstm(H)``                    ``W_xh (I, 4H) W_hh (H, 4H) b (4H,)``   i, f, g, o
``gru``        ``jr.gru(H, reset_after=True)``   ``W_xh (I, 3H) W_hh (H, 3H) b (3H,)``   r, z, n
                                                 ``b_hn (H,)``
=============  ================================  ====================================  ==========

* **PyTorch** (:func:`from_torch`, :func:`to_torch`, whole modules with :func:`from_torch_rnn`,
  :func:`to_torch_rnn`): ``W_xh = weight_ih.T``, ``W_hh = weight_hh.T`` (same gate order, so no
  reordering); torch's two biases are summed into one, ``b = bias_ih + bias_hh``, except the GRU's
  hidden n-gate bias, which sits inside ``r * (h @ W_hn + b_hn)`` and so stays apart as ``b_hn``.
  Going back, only the sum is identifiable: ``bias_ih = b`` and ``bias_hh = 0`` (GRU:
  ``bias_hh = [0, 0, b_hn]``), which act exactly the same. ``proj_size > 0`` is not supported.
  The layouts are time-major ``(T, B, I)``, like torch's default ``batch_first=False``; torch's
  ``h_n (D * L, B, H)`` is converted with :func:`to_torch_state` / :func:`from_torch_state`.
* **Flax linen** (:func:`from_flax`, :func:`to_flax`): ``LSTMCell`` and ``OptimizedLSTMCell``
  (kind ``"lstm"``), ``GRUCell`` (``"gru"``) and ``SimpleCell`` (``"simple"``, i.e. the
  ``rnn_tanh`` layout) store one ``Dense`` per gate, kernels ``(in, H)`` already in the row
  convention; jaxrnn concatenates them along the columns in the gate order above. Flax's LSTM carry
  is ``(c, h)``, jaxrnn's :class:`~jaxrnn.LSTMCarry` is ``(h, c)``: see :func:`from_flax_carry`.

The cells' default ``forget_bias=1.0`` is only added at ``init``; the forward pass has no hidden
constant, so converted parameters behave exactly as in the framework they came from.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Cell, LSTMCarry
from jaxrnn.cells.gru import gru
from jaxrnn.cells.lstm import lstm
from jaxrnn.cells.simple import elman
from jaxrnn.unroll import Layer, bidirectional, stack

__all__ = [
    "from_flax",
    "from_flax_carry",
    "from_torch",
    "from_torch_rnn",
    "from_torch_state",
    "to_flax",
    "to_flax_carry",
    "to_torch",
    "to_torch_rnn",
    "to_torch_state",
]


# --------------------------------------------------------------------------------------------------
# the kinds: one table row each


class _Kind(NamedTuple):
    gates: int  # G: gate blocks of H columns in W_xh / W_hh / b, in torch's order
    cell: Callable[[int], Cell]  # hidden_size -> the jaxrnn cell these params run in
    b_hn: bool  # the last gate's hidden bias stays apart as b_hn (GRU, reset after the matmul)


_TORCH_KINDS = {
    "rnn_tanh": _Kind(1, lambda H: elman(H, "tanh"), False),
    "rnn_relu": _Kind(1, lambda H: elman(H, "relu"), False),
    "lstm": _Kind(4, lstm, False),
    "gru": _Kind(3, lambda H: gru(H, reset_after=True), True),
}


class _FlaxKind(NamedTuple):
    layout: str  # the torch kind with the same jaxrnn layout
    gates: tuple[str, ...]  # Dense suffixes: input "i" + g, hidden "h" + g, in jaxrnn column order
    bias_side: str  # "i" or "h": which Dense of each gate holds the bias that is jaxrnn's b


_FLAX_KINDS = {
    "lstm": _FlaxKind("lstm", ("i", "f", "g", "o"), "h"),  # LSTMCell, OptimizedLSTMCell
    "gru": _FlaxKind("gru", ("r", "z", "n"), "i"),  # GRUCell; hn.bias is b_hn
    "simple": _FlaxKind("rnn_tanh", ("",), "i"),  # SimpleCell (residual=False, tanh)
}


def _kind(kind, table: dict, fn: str):
    if isinstance(kind, str) and kind.lower() in table:
        return table[kind.lower()]
    raise ValueError(f"{fn}: kind must be one of {sorted(table)}; got {kind!r}")


# --------------------------------------------------------------------------------------------------
# shared helpers


def _to_numpy(x, what: str) -> np.ndarray:
    """A numpy array from a numpy/jax array or a torch tensor (without importing torch)."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu()
        try:
            return np.asarray(x.numpy())
        except TypeError as e:  # e.g. torch.bfloat16, which numpy has no dtype for
            raise TypeError(
                f"{what}: cannot convert a torch {x.dtype} tensor to numpy ({e}); "
                f"convert it first, e.g. tensor.float()"
            ) from None
    return np.asarray(x)


def _get(mapping: Mapping, key: str, what: str, fn: str) -> np.ndarray:
    """``mapping[key]`` as numpy, or a KeyError that names the key and says what is there."""
    if key in mapping:
        return _to_numpy(mapping[key], f"{fn}: {what}[{key!r}]")
    keys = sorted(map(str, mapping))
    hint = ""
    prefixed = [k for k in keys if k.endswith("." + key)]
    if prefixed:
        prefix = prefixed[0][: -len(key)]
        hint = (
            f"; it has {prefixed[0]!r}: strip the module prefix, e.g. "
            f"{{k.removeprefix({prefix!r}): v for k, v in {what}.items()}}"
        )
    raise KeyError(
        f"{fn}: {what} has no key {key!r}{hint}; its keys are "
        f"{keys if len(keys) <= 12 else keys[:12] + ['...']}"
    )


def _expect_shape(a: np.ndarray, want: tuple, what: str, why: str, fn: str) -> None:
    if a.shape != tuple(want):
        raise ValueError(f"{fn}: {what} must have shape {tuple(want)} ({why}); got {a.shape}")


def _gates(a: np.ndarray, n: int) -> list[np.ndarray]:
    """Split the last axis into the ``n`` gate blocks of ``H`` columns (copies, in gate order)."""
    return [block.copy() for block in np.split(a, n, axis=-1)]


def _check_params(params, spec: _Kind, kind: str, fn: str):
    """The jaxrnn params of ``kind`` as numpy: ``(W_xh (I, G*H), W_hh (H, G*H), b (G*H,), b_hn)``.

    ``b_hn (H,)`` for the GRU, ``None`` otherwise. Raises on missing or extra keys and wrong shapes.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{fn}: params must be a dict of arrays (a jaxrnn cell's params); got {type(params).__name__}"
        )
    want = ["W_xh", "W_hh", "b"] + (["b_hn"] if spec.b_hn else [])
    extra = sorted(set(map(str, params)) - set(want))
    if extra:
        raise ValueError(
            f"{fn}: params for kind={kind!r} must have exactly the keys {want}; got extra keys "
            f"{extra} that the target has no place for (peepholes, a learned initial state, "
            f"reset_after=False GRUs and other cells cannot be converted)"
        )
    W_xh, W_hh, b = (_get(params, k, "params", fn) for k in want[:3])
    if W_hh.ndim != 2:
        raise ValueError(f"{fn}: params['W_hh'] must be 2-D (H, {spec.gates}*H); got shape {W_hh.shape}")
    G, H = spec.gates, W_hh.shape[0]
    why = f"G*H with G={G} gates for kind={kind!r} and H={H} from W_hh's rows"
    _expect_shape(W_hh, (H, G * H), "params['W_hh']", why, fn)
    if W_xh.ndim != 2:
        raise ValueError(f"{fn}: params['W_xh'] must be 2-D (input_size, {G * H}); got shape {W_xh.shape}")
    _expect_shape(W_xh, (W_xh.shape[0], G * H), "params['W_xh']", f"(input_size, {why})", fn)
    _expect_shape(b, (G * H,), "params['b']", why, fn)
    b_hn = None
    if spec.b_hn:
        if "b_hn" not in params:
            raise KeyError(
                f"{fn}: params has no key 'b_hn'; kind={kind!r} needs jr.gru(H, reset_after=True)'s params "
                f"(reset applied after the matmul, n = tanh(x_n + r * (h @ W_hn + b_hn)))"
            )
        b_hn = _get(params, "b_hn", "params", fn)
        _expect_shape(b_hn, (H,), "params['b_hn']", f"H={H} from W_hh's rows", fn)
    return W_xh, W_hh, b, b_hn


# --------------------------------------------------------------------------------------------------
# PyTorch: one layer and direction


def _torch_names(layer, reverse, fn: str) -> dict[str, str]:
    if layer is None:  # torch.nn.RNNCell / LSTMCell / GRUCell
        if reverse:
            raise ValueError(
                f"{fn}: reverse=True needs a layer index (torch's *Cell modules have no "
                f"reverse direction); got layer=None"
            )
        sfx = ""
    else:
        try:
            layer = operator.index(layer)
        except TypeError:
            raise TypeError(f"{fn}: layer must be an int >= 0 or None; got {layer!r}") from None
        if layer < 0:
            raise ValueError(f"{fn}: layer must be an int >= 0 or None; got {layer}")
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    return {k: f"{k}{sfx}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}


def from_torch(state_dict, kind: str, layer: int | None = 0, reverse: bool = False) -> dict:
    """jaxrnn params of one layer and direction of a PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

    With ``G`` gates (1 RNN, 4 LSTM, 3 GRU) and hidden size ``H``, torch stores
    ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H,)``, ``bias_hh (G*H,)`` and computes
    ``W_ih x + b_ih + W_hh h + b_hh`` per gate (same gate orders as jaxrnn: i, f, g, o and r, z, n).
    The mapping is::

        W_xh = weight_ih.T                     (I, G*H)
        W_hh = weight_hh.T                     (H, G*H)
        b    = bias_ih + bias_hh               (G*H,)      rnn_tanh, rnn_relu, lstm
        b    = bias_ih + [b_hr, b_hz, 0]       (3H,)       gru (bias_hh = [b_hr, b_hz, b_hn])
        b_hn = bias_hh[2H:]                    (H,)        gru only: n = tanh(x_n + r * (h W_hn + b_hn))

    A module built with ``bias=False`` has no bias keys: the biases are zeros.

    Args:
      state_dict: a mapping from torch's parameter names (``"weight_ih_l0"``, ``"bias_hh_l1_reverse"``,
        ...) to numpy arrays, jax arrays or torch tensors, e.g. ``module.state_dict()``. Exact names:
        strip any module prefix (``"rnn."``) first. Other keys are ignored.
      kind: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"`` (torch's ``mode``, any case).
      layer: which layer ``l`` (the ``_l{l}`` suffix); ``None`` for the state_dict of a
        ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` (names without a suffix).
      reverse: the reverse direction of a bidirectional module (the ``_reverse`` suffix).

    Returns:
      A dict of numpy arrays, the params of ``jr.elman(H, "tanh" | "relu")``, ``jr.lstm(H)`` or
      ``jr.gru(H, reset_after=True)``; dtypes as in ``state_dict``.

    Raises:
      ValueError for an unknown ``kind``, wrong shapes, or a ``weight_hr`` key (``proj_size > 0``,
      not supported); KeyError for a missing weight (or one bias of the two).

    Example::

        lstm_t = torch.nn.LSTM(32, 128)
        params = jr.interop.from_torch(lstm_t.state_dict(), "lstm")
        final, ys = jr.unroll(jr.lstm(128), params, xs)          # == lstm_t(xs)[0], xs (T, B, 32)
    """
    fn = "from_torch"
    spec = _kind(kind, _TORCH_KINDS, fn)
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{fn}: state_dict must be a mapping of torch parameter names to arrays; got "
            f"{type(state_dict).__name__}"
        )
    names = _torch_names(layer, reverse, fn)
    if names["weight_hr"] in state_dict:
        raise ValueError(
            f"{fn}: state_dict has {names['weight_hr']!r}: the torch LSTM was built with proj_size > 0 "
            f"(h = W_hr h after each step); proj_size is not supported by jaxrnn's cells"
        )
    G = spec.gates
    if layer is not None and names["weight_ih"] not in state_dict and "weight_ih" in state_dict:
        raise KeyError(
            f"{fn}: state_dict has no key {names['weight_ih']!r} but has 'weight_ih': it looks like the "
            f"state_dict of a torch.nn.RNNCell/LSTMCell/GRUCell; pass layer=None"
        )
    W_ih = _get(state_dict, names["weight_ih"], "state_dict", fn)
    W_hh = _get(state_dict, names["weight_hh"], "state_dict", fn)
    if W_hh.ndim != 2:
        raise ValueError(
            f"{fn}: state_dict[{names['weight_hh']!r}] must be 2-D ({G}*H, H); got shape {W_hh.shape}"
        )
    H = W_hh.shape[1]
    why = f"G*H rows with G={G} gates for kind={kind!r}, H={H} from {names['weight_hh']}'s columns"
    _expect_shape(W_hh, (G * H, H), f"state_dict[{names['weight_hh']!r}]", why, fn)
    if W_ih.ndim != 2:
        raise ValueError(
            f"{fn}: state_dict[{names['weight_ih']!r}] must be 2-D ({G * H}, input_size); "
            f"got shape {W_ih.shape}"
        )
    _expect_shape(W_ih, (G * H, W_ih.shape[1]), f"state_dict[{names['weight_ih']!r}]", why, fn)
    has = [names[k] in state_dict for k in ("bias_ih", "bias_hh")]
    if any(has):  # both or neither (bias=False)
        b_ih = _get(state_dict, names["bias_ih"], "state_dict", fn)
        b_hh = _get(state_dict, names["bias_hh"], "state_dict", fn)
        for key, a in ((names["bias_ih"], b_ih), (names["bias_hh"], b_hh)):
            _expect_shape(a, (G * H,), f"state_dict[{key!r}]", why, fn)
    else:
        b_ih = b_hh = np.zeros((G * H,), W_hh.dtype)
    params = {"W_xh": W_ih.T.copy(), "W_hh": W_hh.T.copy()}
    if spec.b_hn:  # the last gate's hidden bias stays inside r * (...)
        *merged, hn = _gates(b_hh, G)
        params["b"] = b_ih + np.concatenate([*merged, np.zeros_like(hn)])
        params["b_hn"] = hn
    else:
        params["b"] = b_ih + b_hh
    return params


def to_torch(params, kind: str, layer: int | None = 0, reverse: bool = False) -> dict:
    """PyTorch state_dict entries (numpy arrays) of one layer and direction from jaxrnn params.

    The inverse of :func:`from_torch`::

        weight_ih = W_xh.T                     (G*H, I)
        weight_hh = W_hh.T                     (G*H, H)
        bias_ih   = b                          (G*H,)
        bias_hh   = 0                          (G*H,)      rnn_tanh, rnn_relu, lstm
        bias_hh   = [0, 0, b_hn]               (3H,)       gru

    Only the sum ``bias_ih + bias_hh`` (and the GRU's ``b_hn``) is identifiable, so
    ``to_torch(from_torch(sd))`` gives the weights back exactly and biases that act the same. For a
    torch module built with ``bias=False`` drop the (zero) ``bias_*`` entries.

    Args:
      params: a dict of numpy or jax arrays, the params of ``jr.elman(H, "tanh" | "relu")``,
        ``jr.lstm(H)`` (no peepholes) or ``jr.gru(H, reset_after=True)``.
      kind: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``.
      layer: the layer index of the names (``_l{layer}``); ``None`` for ``torch.nn.*Cell`` names.
      reverse: name the entries for the reverse direction (``_reverse`` suffix).

    Returns:
      ``{"weight_ih_l0": (G*H, I), "weight_hh_l0": (G*H, H), "bias_ih_l0": (G*H,),
      "bias_hh_l0": (G*H,)}`` as C-contiguous numpy arrays in the params' dtype.

    Example::

        sd = jr.interop.to_torch(params, "gru")
        gru_t = torch.nn.GRU(I, H)
        gru_t.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    """
    fn = "to_torch"
    spec = _kind(kind, _TORCH_KINDS, fn)
    names = _torch_names(layer, reverse, fn)
    W_xh, W_hh, b, b_hn = _check_params(params, spec, kind, fn)
    b_hh = np.zeros_like(b)
    if spec.b_hn:
        b_hh[-b_hn.shape[0] :] = b_hn
    return {
        names["weight_ih"]: np.ascontiguousarray(W_xh.T),
        names["weight_hh"]: np.ascontiguousarray(W_hh.T),
        names["bias_ih"]: b.copy(),
        names["bias_hh"]: b_hh,
    }


# --------------------------------------------------------------------------------------------------
# PyTorch: whole multi-layer, possibly bidirectional modules

_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def from_torch_rnn(state_dict, kind: str) -> tuple[Layer, tuple]:
    """A jaxrnn :class:`~jaxrnn.Layer` and its params equal to a whole torch ``nn.RNN/LSTM/GRU``.

    The number of layers ``L``, the hidden size ``H`` and the direction count ``D`` (2 when
    ``*_reverse`` keys exist) are read from the keys and shapes. Layer ``l`` of the module becomes
    ``cell`` (``D = 1``) or ``jr.bidirectional(cell, cell)`` (``D = 2``) with
    ``params[l] = from_torch(state_dict, kind, l)`` (and ``{"forward": ..., "backward":
    from_torch(..., l, reverse=True)}``), stacked with ``jr.stack``. So, with ``xs (T, B, I)``::

        torch:   ys, h_n = module(xs)                    ys (T, B, D*H), h_n (D*L, B, H)
        jaxrnn:  final, ys = layer.apply(params, xs)     same ys; to_torch_state(final) == h_n

    (for ``"lstm"`` torch returns ``(h_n, c_n)`` and so does :func:`to_torch_state`). Torch's
    ``dropout`` between layers acts only in training; pass a key to ``layer.apply`` of a
    ``jr.stack(..., dropout=p)`` for that. ``batch_first=True`` modules take ``(B, T, I)``: use
    ``layer.apply(params, xs, time_axis=1)``.

    Args:
      state_dict: ``module.state_dict()`` (exact names, numpy arrays or torch tensors); every key
        must be one of the module's parameters.
      kind: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``.

    Returns:
      ``(layer, params)``: a ``jr.stack`` Layer of ``L`` layers and the tuple of their params
      (numpy arrays).

    Example::

        gru_t = torch.nn.GRU(8, 16, num_layers=2, bidirectional=True)
        layer, params = jr.interop.from_torch_rnn(gru_t.state_dict(), "gru")
        final, ys = layer.apply(params, xs)              # xs (T, B, 8) -> ys (T, B, 32)
    """
    fn = "from_torch_rnn"
    spec = _kind(kind, _TORCH_KINDS, fn)
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{fn}: state_dict must be a mapping of torch parameter names to arrays; got "
            f"{type(state_dict).__name__}"
        )
    found = {k: _TORCH_KEY.match(str(k)) for k in state_dict}
    unknown = sorted(str(k) for k, m in found.items() if m is None)
    if unknown:
        raise ValueError(
            f"{fn}: state_dict must hold only a torch RNN/LSTM/GRU module's parameters "
            f"(weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ..._reverse); got unexpected keys "
            f"{unknown[:8]} (strip a module prefix, or select the module's own state_dict)"
        )
    matches = [m for m in found.values() if m is not None]
    hr = sorted(m.group(0) for m in matches if m.group(1) == "weight_hr")
    if hr:
        raise ValueError(
            f"{fn}: state_dict has {hr}: the torch LSTM was built with proj_size > 0; "
            f"proj_size is not supported by jaxrnn's cells"
        )
    if not matches:
        raise KeyError(f"{fn}: state_dict has no key 'weight_ih_l0' (it is empty)")
    num_layers = max(int(m.group(2)) for m in matches) + 1
    bidir = any(m.group(3) for m in matches)
    directions = (False, True) if bidir else (False,)
    params, H = [], None
    for l in range(num_layers):
        per_dir = [from_torch(state_dict, kind, l, rev) for rev in directions]
        for p, rev in zip(per_dir, directions):
            sfx = f"_l{l}" + ("_reverse" if rev else "")
            H = p["W_hh"].shape[0] if H is None else H
            if p["W_hh"].shape[0] != H:
                raise ValueError(
                    f"{fn}: state_dict['weight_hh{sfx}'] must have shape ({spec.gates * H}, {H}) (every "
                    f"layer has the hidden size H={H} of weight_hh_l0); got {p['W_hh'].shape[::-1]}"
                )
            if l > 0 and p["W_xh"].shape[0] != len(directions) * H:
                raise ValueError(
                    f"{fn}: state_dict['weight_ih{sfx}'] must have shape ({spec.gates * H}, "
                    f"{len(directions) * H}) (layer {l} reads the D*H={len(directions) * H} outputs of "
                    f"layer {l - 1}); got {p['W_xh'].shape[::-1]}"
                )
        params.append(per_dir[0] if not bidir else {"forward": per_dir[0], "backward": per_dir[1]})
    cell = spec.cell(H)
    layers = [bidirectional(cell, cell) if bidir else cell for _ in range(num_layers)]
    return stack(*layers), tuple(params)


def to_torch_rnn(params, kind: str) -> dict:
    """A torch ``nn.RNN/LSTM/GRU`` state_dict (numpy arrays) from the params of a jaxrnn stack.

    The inverse of :func:`from_torch_rnn`: ``params`` is a tuple (or list) with one entry per layer,
    each a cell's params (unidirectional) or ``{"forward": ..., "backward": ...}`` (bidirectional;
    all layers alike, as torch needs). Each entry goes through :func:`to_torch` with its layer index
    (and ``reverse=True`` for ``"backward"``); keys come in torch's order (layer 0, layer 0 reverse,
    layer 1, ...; ``weight_ih, weight_hh, bias_ih, bias_hh``). Shapes: ``weight_ih_l0 (G*H, I)``,
    ``weight_ih_l{k>0} (G*H, D*H)``, ``weight_hh_l{k} (G*H, H)``, biases ``(G*H,)``.

    Example::

        sd = jr.interop.to_torch_rnn(params, "lstm")
        lstm_t = torch.nn.LSTM(I, H, num_layers=len(params), bidirectional=True)
        lstm_t.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    """
    fn = "to_torch_rnn"
    spec = _kind(kind, _TORCH_KINDS, fn)
    if isinstance(params, Mapping) or not isinstance(params, (tuple, list)) or not params:
        raise TypeError(
            f"{fn}: params must be a non-empty tuple with one entry per layer (as from_torch_rnn "
            f"returns; wrap a single cell's params as (params,)); got {type(params).__name__}"
        )
    bidir = [isinstance(p, Mapping) and set(p) == {"forward", "backward"} for p in params]
    if any(bidir) and not all(bidir):
        raise ValueError(
            f"{fn}: params must be all bidirectional ({{'forward', 'backward'}}) or all "
            f"unidirectional (torch's bidirectional applies to every layer); got "
            f"bidirectional layers {[l for l, b in enumerate(bidir) if b]} of {len(params)}"
        )
    sd, H = {}, None
    for l, p in enumerate(params):
        dirs = [(p["forward"], False), (p["backward"], True)] if bidir[l] else [(p, False)]
        for p_dir, rev in dirs:
            entries = to_torch(p_dir, kind, l, rev)
            sfx = f"_l{l}" + "_reverse" * rev
            w_hh, w_ih = entries["weight_hh" + sfx], entries["weight_ih" + sfx]
            H = w_hh.shape[1] if H is None else H
            if w_hh.shape[1] != H or (l > 0 and w_ih.shape[1] != len(dirs) * H):
                raise ValueError(
                    f"{fn}: params[{l}]{'[backward]' if rev else ''} must have W_hh ({H}, "
                    f"{spec.gates * H}) and W_xh ({len(dirs) * H if l else 'input_size'}, {spec.gates * H}) "
                    f"(hidden size {H} from layer 0); got W_hh {w_hh.shape[::-1]}, W_xh {w_ih.shape[::-1]}"
                )
            sd.update(entries)
    return sd


def to_torch_state(final_carry):
    """Torch's ``h_n`` (and ``c_n``) from the final carry of a jaxrnn stack.

    ``final_carry`` is what ``layer.apply`` of :func:`from_torch_rnn`'s layer returns: a tuple with
    one entry per layer, each a carry (``h (B, H)`` or ``LSTMCarry(h, c)``) or, for bidirectional
    layers, ``(forward_carry, backward_carry)``. A single cell's carry (an array or an
    ``LSTMCarry``) is also accepted. Torch orders ``h_n (D*L, B, H)`` as layer 0 forward, layer 0
    reverse, layer 1 forward, ...::

        h_n[l * D + d] = final_carry[l][d].h       (or final_carry[l].h when D == 1)

    Returns:
      ``h_n`` (a jax array), or ``(h_n, c_n)`` for LSTM carries, as torch returns them.
    """
    if isinstance(final_carry, LSTMCarry) or not isinstance(final_carry, (tuple, list)):
        final_carry = (final_carry,)
    flat = []
    for c in final_carry:
        flat.extend([c] if isinstance(c, LSTMCarry) or not isinstance(c, (tuple, list)) else list(c))
    if all(isinstance(c, LSTMCarry) for c in flat):
        return jnp.stack([c.h for c in flat]), jnp.stack([c.c for c in flat])
    if any(isinstance(c, (LSTMCarry, tuple, list)) for c in flat):
        raise TypeError(
            "to_torch_state: final_carry must be a tuple per layer of arrays or LSTMStates "
            "(pairs of them for bidirectional layers), all of one kind"
        )
    return jnp.stack(flat)


def from_torch_state(h_0, c_0=None, *, bidirectional: bool = False) -> tuple:
    """The initial carry of a jaxrnn stack from torch's ``h_0`` (and ``c_0``), ``(D*L, B, H)``.

    The inverse of :func:`to_torch_state`: returns a tuple with one entry per layer ``l``, the
    carry ``h_0[l]`` (``LSTMCarry(h_0[l], c_0[l])`` when ``c_0`` is given) or, with
    ``bidirectional=True``, the pair ``(carry(h_0[2l]), carry(h_0[2l + 1]))``. Pass it as ``carry``
    to ``layer.apply`` of :func:`from_torch_rnn`'s layer. Torch tensors are converted to numpy.
    """
    fn = "from_torch_state"
    h_0 = _to_numpy(h_0, f"{fn}: h_0") if hasattr(h_0, "detach") else h_0
    c_0 = _to_numpy(c_0, f"{fn}: c_0") if hasattr(c_0, "detach") else c_0
    D = 2 if bidirectional else 1
    if jnp.ndim(h_0) < 2 or jnp.shape(h_0)[0] % D or jnp.shape(h_0)[0] == 0:
        raise ValueError(
            f"{fn}: h_0 must have shape (D*num_layers, *batch, H) with D={D}; got {tuple(jnp.shape(h_0))}"
        )
    if c_0 is not None and jnp.shape(c_0) != jnp.shape(h_0):
        raise ValueError(
            f"{fn}: c_0 must have the shape of h_0, {tuple(jnp.shape(h_0))}; got {tuple(jnp.shape(c_0))}"
        )
    carries = [h_0[i] if c_0 is None else LSTMCarry(h_0[i], c_0[i]) for i in range(jnp.shape(h_0)[0])]
    if D == 1:
        return tuple(carries)
    return tuple((carries[i], carries[i + 1]) for i in range(0, len(carries), 2))


# --------------------------------------------------------------------------------------------------
# Flax linen


def _nnx_pure(params):
    """A ``flax.nnx`` cell or its ``nnx.State`` as the pure dict of its ``nnx.Param`` arrays (flax is
    imported only when such an object is given); anything else unchanged."""
    if not type(params).__module__.startswith("flax.nnx"):
        return params
    from flax import nnx

    state = params if isinstance(params, nnx.State) else nnx.state(params, nnx.Param)
    return nnx.to_pure_dict(state)


def _from_nnx_fused(p, spec, kind: str, fn: str) -> dict:
    """jaxrnn params from the fused NNX layout ``{"dense_i": ..., "dense_h": ...}`` (NNX's
    ``OptimizedLSTMCell``, ``GRUCell`` and ``SimpleCell``: one ``Linear`` per side, gates along the
    columns in jaxrnn's order already)."""
    extra = sorted(set(map(str, p)) - {"dense_i", "dense_h"})
    if extra:
        raise ValueError(
            f"{fn}: NNX params for kind={kind!r} must have exactly dense_i and dense_h; got extra {extra}"
        )
    for name in ("dense_i", "dense_h"):
        if not isinstance(p.get(name), Mapping):
            raise ValueError(
                f"{fn}: NNX params for kind={kind!r} need a dict {name!r} with its kernel; got {sorted(p)}"
            )
    d_i, d_h = p["dense_i"], p["dense_h"]
    W_xh, W_hh = (
        np.asarray(_get(d_i, "kernel", "params['dense_i']", fn)),
        np.asarray(_get(d_h, "kernel", "params['dense_h']", fn)),
    )
    if W_xh.ndim != 2 or W_hh.ndim != 2:
        raise ValueError(f"{fn}: dense_i and dense_h kernels must be 2-D; got {W_xh.shape} and {W_hh.shape}")
    H = W_hh.shape[0]
    G = len(spec.gates)
    why = f"G*H with G={G} gates for kind={kind!r} and H={H} from dense_h's rows"
    _expect_shape(W_hh, (H, G * H), "params['dense_h']['kernel']", why, fn)
    _expect_shape(W_xh, (W_xh.shape[0], G * H), "params['dense_i']['kernel']", why, fn)
    side = d_h if "bias" in d_h else d_i  # LSTM: the bias is dense_h's; GRU and SimpleCell: dense_i's
    b = np.asarray(_get(side, "bias", "params['dense_i' or 'dense_h']", fn))
    _expect_shape(b, (G * H,), "the bias", why, fn)
    out = {"W_xh": W_xh.copy(), "W_hh": W_hh.copy(), "b": b.copy()}
    if _TORCH_KINDS[spec.layout].b_hn:  # NNX's GRUCell has no hidden-side bias: b_hn = 0
        out["b_hn"] = np.zeros((H,), b.dtype)
    return out


def _unwrap_flax(params, fn: str) -> Mapping:
    params = _nnx_pure(params)
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{fn}: params must be a Flax variables dict {{'params': ...}} or its "
            f"'params' entry; got {type(params).__name__}"
        )
    if "params" in params:
        params = params["params"]
    if set(params) == {"cell"}:  # nn.RNN(cell)'s variables
        params = params["cell"]
    return params


def from_flax(params, kind: str) -> dict:
    """jaxrnn params from the params of a Flax linen or NNX ``LSTMCell``/``OptimizedLSTMCell``/
    ``GRUCell``/``SimpleCell``.

    For ``flax.nnx`` give the cell itself, its ``nnx.state`` or ``nnx.to_pure_dict`` of it: NNX's
    ``LSTMCell`` has linen's per-gate layout (its ``if`` gate named ``if_``); its ``OptimizedLSTMCell``,
    ``GRUCell`` and ``SimpleCell`` keep one ``dense_i`` (``(I, G*H)``) and one ``dense_h``
    (``(H, G*H)``) with the gates already in jaxrnn's order, the bias on ``dense_h`` for the LSTM and
    on ``dense_i`` otherwise; NNX's ``GRUCell`` has no hidden-side bias, so ``b_hn`` comes back zero.

    Flax keeps one ``Dense`` per gate (kernel ``(I, H)`` input side, ``(H, H)`` hidden side), in the
    row convention already; jaxrnn concatenates the gates along the columns::

        lstm   (i, f, g, o):  W_xh = [ii|if|ig|io].kernel  (I, 4H)    W_hh = [hi|hf|hg|ho].kernel (H, 4H)
                              b = [hi|hf|hg|ho].bias  (4H,)           (the ii.. Denses have no bias)
        gru    (r, z, n):     W_xh = [ir|iz|in].kernel  (I, 3H)       W_hh = [hr|hz|hn].kernel  (H, 3H)
                              b = [ir|iz|in].bias  (3H,)              b_hn = hn.bias  (H,)
        simple:               W_xh = i.kernel (I, H)   W_hh = h.kernel (H, H)   b = i.bias (H,)

    The cells are ``jr.lstm(H)``, ``jr.gru(H, reset_after=True)`` and ``jr.elman(H, "tanh")`` (Flax's
    default ``gate_fn``/``activation_fn``, SimpleCell with ``residual=False``). Flax's LSTM carry is
    ``(c, h)``, jaxrnn's ``LSTMCarry(h, c)``: convert carries with :func:`from_flax_carry`.

    Args:
      params: the cell's variables ``{"params": {...}}`` or the inner ``{"ii": {"kernel": ...}, ...}``
        (also ``nn.RNN(cell)``'s, with its ``"cell"`` level).
      kind: ``"lstm"``, ``"gru"`` or ``"simple"``.

    Returns:
      A dict of numpy arrays (dtypes as in ``params``).

    Example::

        cell_f = flax.linen.LSTMCell(features=16)
        variables = cell_f.init(key, cell_f.initialize_carry(key, (B, 8)), x)
        params = jr.interop.from_flax(variables, "lstm")
        final, ys = jr.unroll(jr.lstm(16), params, xs)           # xs (T, B, 8)
    """
    fn = "from_flax"
    spec = _kind(kind, _FLAX_KINDS, fn)
    p = _unwrap_flax(params, fn)
    if "dense_i" in p or "dense_h" in p:
        return _from_nnx_fused(p, spec, kind, fn)
    if "if_" in p:  # NNX's LSTMCell names the forget gate's input Linear if_ ("if" is a keyword)
        p = {("if" if k == "if_" else k): v for k, v in p.items()}
    has_b_hn = _TORCH_KINDS[spec.layout].b_hn

    def dense(name: str, with_bias: bool):
        if name not in p:
            _get(p, name, "params", fn)  # raises the KeyError
        sub = p[name]
        if not isinstance(sub, Mapping):
            raise TypeError(f"{fn}: params[{name!r}] must be a dict with 'kernel'; got {type(sub).__name__}")
        keys = {"kernel", "bias"} if with_bias else {"kernel"}
        if set(sub) - keys:
            raise ValueError(
                f"{fn}: params[{name!r}] of kind={kind!r} must have exactly {sorted(keys)}; got {sorted(sub)}"
            )
        kernel = _get(sub, "kernel", f"params[{name!r}]", fn)
        bias = _get(sub, "bias", f"params[{name!r}]", fn) if with_bias else None
        return kernel, bias

    xs, hs, bs = [], [], []
    b_hn = None
    for g in spec.gates:
        k_x, b_x = dense("i" + g, spec.bias_side == "i")
        k_h, b_h = dense("h" + g, spec.bias_side == "h" or (has_b_hn and g == spec.gates[-1]))
        xs.append(k_x)
        hs.append(k_h)
        bs.append(b_x if spec.bias_side == "i" else b_h)
        if has_b_hn and g == spec.gates[-1]:
            b_hn = b_h
    want = {s + g for g in spec.gates for s in "ih"}
    extra = sorted(set(map(str, p)) - want)
    if extra:
        raise ValueError(
            f"{fn}: params for kind={kind!r} must have exactly the Dense modules {sorted(want)}; got "
            f"extra {extra}"
        )
    first = f"params['h{spec.gates[0]}']['kernel']"
    if hs[0].ndim != 2 or xs[0].ndim != 2:
        raise ValueError(
            f"{fn}: Dense kernels must be 2-D (in, H); got {first} of shape {hs[0].shape} "
            f"and params['i{spec.gates[0]}']['kernel'] of shape {xs[0].shape}"
        )
    I, H = xs[0].shape[0], hs[0].shape[1]
    for g, k_x, k_h, b in zip(spec.gates, xs, hs, bs):
        why = f"H={H} from {first}"
        _expect_shape(k_x, (I, H), f"params['i{g}']['kernel']", why, fn)
        _expect_shape(k_h, (H, H), f"params['h{g}']['kernel']", why, fn)
        _expect_shape(b, (H,), f"params['{spec.bias_side}{g}']['bias']", why, fn)
    out = {
        "W_xh": np.concatenate(xs, axis=-1),
        "W_hh": np.concatenate(hs, axis=-1),
        "b": np.concatenate(bs, axis=-1),
    }
    if has_b_hn:
        _expect_shape(b_hn, (H,), "params['hn']['bias']", f"H={H}", fn)
        out["b_hn"] = b_hn.copy()
    return out


def to_flax(params, kind: str, *, nnx: str | None = None) -> dict:
    """Flax linen (or NNX) cell params (the inner ``"params"`` dict, numpy arrays) from jaxrnn params.

    The inverse of :func:`from_flax`: the columns of ``W_xh (I, G*H)``, ``W_hh (H, G*H)`` and
    ``b (G*H,)`` are split into the ``G`` gate blocks of ``H`` columns (``(I, H)``, ``(H, H)``,
    ``(H,)``), named ``"i" + gate`` / ``"h" + gate`` (``lstm``: i, f, g, o with the bias on the
    ``h`` side; ``gru``: r, z, n with the bias on the ``i`` side and ``hn.bias = b_hn``; ``simple``:
    ``i`` with bias and ``h``). ``to_flax(from_flax(p, kind), kind)`` equals ``p`` exactly.

    Args:
      params: jaxrnn params of ``jr.lstm(H)`` (no peepholes), ``jr.gru(H, reset_after=True)`` or
        ``jr.elman(H, "tanh")`` (numpy or jax arrays).
      kind: ``"lstm"``, ``"gru"`` or ``"simple"``.
      nnx: ``None`` for the linen layout; or the ``flax.nnx`` cell class the dict is for, by name:
        ``"LSTMCell"`` (per-gate ``Linear``s as linen, the forget gate's input one named ``if_``),
        ``"OptimizedLSTMCell"``, ``"GRUCell"``, ``"SimpleCell"`` (one ``dense_i``/``dense_h`` pair,
        gates along the columns). NNX's ``GRUCell`` has no hidden-side bias, so ``b_hn`` must be 0.
        Load it with ``state = nnx.state(cell, nnx.Param)``, ``nnx.replace_by_pure_dict(state, d)``,
        ``nnx.update(cell, state)``.

    Example::

        cell_f = flax.linen.GRUCell(features=H)
        carry, y = cell_f.apply({"params": jr.interop.to_flax(params, "gru")}, h, x)
    """
    fn = "to_flax"
    spec = _kind(kind, _FLAX_KINDS, fn)
    layout = _TORCH_KINDS[spec.layout]
    W_xh, W_hh, b, b_hn = _check_params(params, layout, kind, fn)
    nnx_layouts = {"LSTMCell": "lstm", "OptimizedLSTMCell": "lstm", "GRUCell": "gru", "SimpleCell": "simple"}
    if nnx is not None:
        if nnx_layouts.get(nnx) != kind.lower():
            raise ValueError(
                f"{fn}: nnx must name the flax.nnx cell for kind={kind!r}: one of "
                f"{sorted(k for k, v in nnx_layouts.items() if v == kind.lower())}; got {nnx!r}"
            )
        if nnx != "LSTMCell":
            if b_hn is not None and np.any(b_hn != 0):
                raise ValueError(
                    f"{fn}: flax.nnx.GRUCell has no hidden-side bias, so params['b_hn'] must be 0 to "
                    f"convert; "
                    f"got values up to {float(np.max(np.abs(b_hn)))}"
                )
            bias_side = "dense_h" if kind.lower() == "lstm" else "dense_i"
            out = {"dense_i": {"kernel": W_xh.copy()}, "dense_h": {"kernel": W_hh.copy()}}
            out[bias_side]["bias"] = b.copy()
            return out
    n = len(spec.gates)
    out = {}
    for g, k_x, k_h, b_g in zip(spec.gates, _gates(W_xh, n), _gates(W_hh, n), _gates(b, n)):
        out["i" + g] = {"kernel": k_x}
        out["h" + g] = {"kernel": k_h}
        out[spec.bias_side + g]["bias"] = b_g
    if b_hn is not None:
        out["h" + spec.gates[-1]]["bias"] = b_hn.copy()
    if nnx == "LSTMCell":
        out["if_"] = out.pop("if")
    return out


def from_flax_carry(carry, kind: str):
    """A jaxrnn carry from a Flax linen cell's carry: for ``"lstm"`` Flax's ``(c, h)`` becomes
    ``LSTMCarry(h, c)`` (each ``(*batch, H)``); for ``"gru"`` and ``"simple"`` the carry ``h`` is the
    same in both."""
    if _kind(kind, _FLAX_KINDS, "from_flax_carry").layout != "lstm":
        return carry
    c, h = carry
    return LSTMCarry(h=h, c=c)


def to_flax_carry(carry, kind: str):
    """A Flax linen cell's carry from a jaxrnn carry: for ``"lstm"`` ``LSTMCarry(h, c)`` becomes
    Flax's ``(c, h)`` (each ``(*batch, H)``); for ``"gru"`` and ``"simple"`` the carry ``h`` is the
    same in both."""
    if _kind(kind, _FLAX_KINDS, "to_flax_carry").layout != "lstm":
        return carry
    h, c = carry
    return (c, h)
