"""ReNet: an image layer of four RNNs that sweep the patches of an image vertically and horizontally.

Visin, Kastner, Cho, Matteucci, Courville & Bengio, "ReNet: A Recurrent Neural Network Based
Alternative to Convolutional Networks" (2015); the Politecnico di Milano lecture "Recurrent Neural
Networks" (Ciccone) describes it as four RNNs that scan the pixels of an image in different directions,
top-down + bottom-up and left-right + right-left.

A :class:`ReNet` layer maps images ``(*batch, height, width, C)`` to feature maps
``(*batch, height / ph, width / pw, 2 * H2)``: the image is cut into non-overlapping ``ph x pw``
patches, each flattened to a vector of ``ph * pw * C`` numbers (row-major over ``(ph, pw, C)``:
entry ``(a * pw + b) * C + c`` is pixel ``(a, b)`` of the patch, channel ``c``); a bidirectional sweep
runs down and up every column of patches (each column a sequence), and a second bidirectional sweep
runs left and right along every row of that output. Each sweep is a pair of :func:`jaxrnn.unroll`
calls (forward and backward) over all the columns (rows) of all the images at once, time-major, so
the fused kernels of :mod:`jaxrnn.kernels` run whenever the cell has one. A feature map is an image:
ReNet layers stack (``renet(c2).apply(p2, renet(c1).apply(p1, images))``), as in the paper.
"""

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import validators as check
from jaxrnn.cells.base import Cell
from jaxrnn.unroll import unroll

__all__ = ["ReNet", "renet"]

ORDERS = ("vertical_first", "horizontal_first")
_AXIS = {"vertical": -3, "horizontal": -2}  # the axis of (*batch, rows, cols, features) a sweep runs along


class ReNet(NamedTuple):
    """An image layer made by :func:`renet`.

    Fields:

    * ``init(key, in_channels, dtype=jnp.float32) -> params``: ``{"vertical": {"forward": p,
      "backward": p}, "horizontal": {"forward": p, "backward": p}}``, each ``p`` a cell's params.
    * ``apply(params, images) -> features``: ``(*batch, height, width, in_channels)`` to
      ``(*batch, height / ph, width / pw, output_size(params))``.
    * ``output_size(params) -> int``: the number of features per patch, twice the second cell's output
      size.
    * ``name``; ``patch_size``, ``(ph, pw)``; ``order``, ``"vertical_first"`` or ``"horizontal_first"``.
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    output_size: Callable[[Any], int]
    name: str = "renet"
    patch_size: tuple[int, int] = (2, 2)
    order: str = "vertical_first"


def _patch_size(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"renet: patch_size must be an int or a pair (patch_height, patch_width); got {value!r}"
            )
        return (
            check.positive_int(value[0], "renet: patch_size[0] (the patch height)"),
            check.positive_int(value[1], "renet: patch_size[1] (the patch width)"),
        )
    try:
        operator.index(value)
    except TypeError:
        raise TypeError(
            f"renet: patch_size must be an int or a pair (patch_height, patch_width) of positive ints; "
            f"got {value!r}"
        ) from None
    p = check.positive_int(value, "renet: patch_size")
    return p, p


def _patches(images, ph: int, pw: int):
    """``(*batch, I * ph, J * pw, C) -> (*batch, I, J, ph * pw * C)``, each patch flattened row-major."""
    *batch, height, width, C = images.shape
    I, J = height // ph, width // pw
    x = images.reshape((*batch, I, ph, J, pw, C))
    x = jnp.moveaxis(x, -4, -3)  # (*batch, I, J, ph, pw, C)
    return x.reshape((*batch, I, J, ph * pw * C))


def _sweep(cell: Cell, params, x, axis: int):
    """A bidirectional sweep of ``cell`` along ``axis`` of ``x (*batch, I, J, D)``: every line of patches
    along that axis is a sequence; all lines of all images are one batch of one :func:`unroll` per
    direction, time-major. Returns ``(*batch, I, J, 2 * H)``, ``[forward, backward]``."""
    moved = jnp.moveaxis(x, axis, 0)  # (T, *rest, D)
    seq = moved.reshape((moved.shape[0], -1, moved.shape[-1]))  # (T, N, D)
    _, y_f = unroll(cell, params["forward"], seq)
    _, y_b = unroll(cell, params["backward"], seq, reverse=True)
    y = jnp.concatenate([y_f, y_b], axis=-1)
    return jnp.moveaxis(y.reshape((*moved.shape[:-1], y.shape[-1])), 0, axis)


def renet(
    cell: Cell,
    patch_size: int | tuple[int, int] = (2, 2),
    *,
    order: str = "vertical_first",
    cell2: Cell | None = None,
) -> ReNet:
    """A ReNet layer (Visin et al. 2015): four RNNs sweep the patches of an image in four directions.

    The image is cut into ``I x J`` non-overlapping ``ph x pw`` patches ``p[i, j]`` (``i`` the row of
    patches, top to bottom; ``j`` the column, left to right), each flattened to a vector of
    ``ph * pw * C``. With ``order="vertical_first"`` (the paper's order) the first two RNNs (``cell``;
    ``params["vertical"]``) run along every column ``j``, forward top-down and backward bottom-up::

        v_fw[i, j] = output(s),  s = step(P_vf, s, p[i, j])   for i = 0 .. I-1     (s starts at s_0)
        v_bw[i, j] = output(s),  s = step(P_vb, s, p[i, j])   for i = I-1 .. 0
        v[i, j] = concat(v_fw[i, j], v_bw[i, j])                                    # 2 * H1 features

    and the second two (``cell2``; ``params["horizontal"]``) along every row ``i`` of ``v``, forward
    left to right and backward right to left::

        h_fw[i, j] = output(s),  s = step(P_hf, s, v[i, j])   for j = 0 .. J-1
        h_bw[i, j] = output(s),  s = step(P_hb, s, v[i, j])   for j = J-1 .. 0
        features[i, j] = concat(h_fw[i, j], h_bw[i, j])                             # 2 * H2 features

    So every output feature depends on the whole image. ``order="horizontal_first"`` swaps the two
    sweeps: ``cell`` runs along the rows of the patches (``params["horizontal"]``, input ``ph*pw*C``) and
    ``cell2`` along the columns of its output (``params["vertical"]``, input ``2 * H1``). In plain Python,
    for one image and ``order="vertical_first"``::

        def sweep(cell, P, seqs):                        # seqs: a list of lists of vectors
            out = []
            for seq in seqs:
                fw, s = [], cell.initial_carry(P["forward"])
                for t, x in enumerate(seq):
                    s = cell.step(P["forward"], s, x, t); fw.append(cell.output(s))
                bw, s = [], cell.initial_carry(P["backward"])
                for t, x in enumerate(reversed(seq)):
                    s = cell.step(P["backward"], s, x, t); bw.insert(0, cell.output(s))
                out.append([concatenate([f, b]) for f, b in zip(fw, bw)])
            return out
        cols = sweep(cell, params["vertical"], [[p[i][j] for i in range(I)] for j in range(J)])
        v = [[cols[j][i] for j in range(J)] for i in range(I)]
        features = sweep(cell2, params["horizontal"], v)                # features[i][j]

    **Which order.** The paper describes the vertical sweep first: the two vertical RNNs make a composite
    feature map, which the two horizontal RNNs then sweep; that is the default here. The authors'
    Theano/Lasagne code (``fvisin/reseg``, the ReNet layer of ReSeg; read, not run) says the same in its
    ``ReNetLayer`` docstring (first sublayer vertical, second horizontal), but its code comments call the
    first sublayer a "Left/right scan" and the second a "Down/up scan", i.e. horizontal first; which axis
    its reshapes hand to Lasagne's recurrent layers as time (Lasagne reads ``(batch, time, features)``),
    and so which sweep really runs first there, is unverified here. Both orders are offered. Other
    differences from that code: its backward RNN reads the forward RNN's outputs (a stacked pair, not two
    RNNs on the same input); it can run all four RNNs on the input in parallel
    (``stack_sublayers=False``, ``4 * H`` features); one stored version pads images that the patch does
    not divide (here an error) and flattens patches channels-first.

    Args:
      cell: the :class:`~jaxrnn.Cell` of the first sweep (both directions, separate parameters); any cell
        or transform: ``hidden_size`` comes from the cell.
      patch_size: ``(ph, pw)``, or one int for square patches; must divide the image's height and width.
      order: ``"vertical_first"`` (default, the paper's) or ``"horizontal_first"``.
      cell2: the cell of the second sweep (input size ``2 * H1``); default ``cell``'s kind (separate
        parameters).

    Returns:
      A :class:`ReNet` whose ``apply(params, images)`` maps ``(*batch, height, width, C)`` (any number of
      batch dims, also none) to ``(*batch, height / ph, width / pw, 2 * H2)``; params
      ``{"vertical": {"forward", "backward"}, "horizontal": {"forward", "backward"}}``. Each sweep is one
      :func:`jaxrnn.unroll` per direction over the lines of all the images (batch ``batch x J`` columns
      or ``batch x I`` rows), with the cell's fused kernel where it has one. Jit ``apply`` yourself.

    Raises:
      TypeError / ValueError, before tracing: ``cell``/``cell2`` not Cells, a bad ``patch_size`` or
      ``order``; at ``init``, a bad ``in_channels`` or dtype; at ``apply``, params that are not this
      layer's, images of rank < 3 or not real, a height or width that the patch does not divide, a channel
      count other than the params were made for.
    """
    fn = "renet"
    cell = check.cell(cell, fn)
    if cell2 is None:
        cell2 = cell
    elif not isinstance(cell2, Cell):
        raise TypeError(
            f"renet: cell2 must be a jaxrnn Cell (the cell of the second sweep, e.g. jr.gru(64)) or None; "
            f"got {type(cell2).__name__}"
        )
    ph, pw = _patch_size(patch_size)
    if not isinstance(order, str):
        raise TypeError(f"renet: order must be one of {', '.join(map(repr, ORDERS))}; got {order!r}")
    if order not in ORDERS:
        raise ValueError(f"renet: order must be one of {', '.join(map(repr, ORDERS))}; got {order!r}")
    first, second = ("vertical", "horizontal") if order == "vertical_first" else ("horizontal", "vertical")
    cells = {first: cell, second: cell2}

    def init(key, in_channels, dtype=jnp.float32):
        key = check.prng_key(key, "renet.init", optional=False)
        in_channels = check.positive_int(in_channels, "renet.init: in_channels")
        dtype = check.float_dtype(dtype, "renet.init: dtype")
        k1f, k1b, k2f, k2b = jax.random.split(key, 4)
        n_in = ph * pw * in_channels
        p1 = {"forward": cell.init(k1f, n_in, dtype), "backward": cell.init(k1b, n_in, dtype)}
        n_mid = 2 * cell.output_size(p1["forward"])
        p2 = {"forward": cell2.init(k2f, n_mid, dtype), "backward": cell2.init(k2b, n_mid, dtype)}
        return (
            {"vertical": p1, "horizontal": p2} if first == "vertical" else {"vertical": p2, "horizontal": p1}
        )

    def check_params(params):
        where = "renet.apply: params"
        if not isinstance(params, dict) or set(params) != {"vertical", "horizontal"}:
            raise ValueError(
                f"{where} must be a dict with keys 'vertical' and 'horizontal' (make them with "
                f"layer.init(key, in_channels)); got {type(params).__name__}"
                + (f" with keys {sorted(params)}" if isinstance(params, dict) else "")
            )
        for sweep in (first, second):
            p = params[sweep]
            if not isinstance(p, dict) or set(p) != {"forward", "backward"}:
                raise ValueError(
                    f"{where}[\"{sweep}\"] must be a dict with keys 'forward' and 'backward' (make them "
                    f"with layer.init(key, in_channels)); got {type(p).__name__}"
                    + (f" with keys {sorted(p)}" if isinstance(p, dict) else "")
                )
            for direction in ("forward", "backward"):
                check.params(cells[sweep], p[direction], "renet.apply", f'params["{sweep}"]["{direction}"]')
        sizes = {s: cells[s].input_size(params[s]["forward"]) for s in (first, second)}
        for sweep in (first, second):
            back = cells[sweep].input_size(params[sweep]["backward"])
            if back != sizes[sweep]:
                raise ValueError(
                    f'renet.apply: params["{sweep}"]["backward"] take inputs of size {back}, but '
                    f'params["{sweep}"]["forward"] take {sizes[sweep]}: both directions of a sweep read '
                    f"the same sequence (make params with layer.init(key, in_channels))"
                )
        n_mid = 2 * cell.output_size(params[first]["forward"])
        if sizes[second] != n_mid:
            raise ValueError(
                f'renet.apply: params["{second}"] (the second sweep) take inputs of size {sizes[second]}, '
                f'but the first sweep (params["{first}"]) gives 2 x {n_mid // 2} = {n_mid} features (make '
                f"params with layer.init(key, in_channels))"
            )
        if sizes[first] % (ph * pw):
            raise ValueError(
                f'renet.apply: params["{first}"] take inputs of size {sizes[first]}, which is not a whole '
                f"number of {ph}x{pw} patches (ph * pw * in_channels): were they made for another "
                f"patch_size? (make them with this layer's init)"
            )
        return sizes[first] // (ph * pw)

    def apply(params, images):
        in_channels = check_params(params)
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = jnp.asarray(images)
        if images.ndim < 3:
            raise ValueError(
                f"renet.apply: images must have shape (*batch, height, width, channels); got shape "
                f"{tuple(images.shape)} (rank {images.ndim})"
                + (
                    ". Add a channel axis for a grayscale image: images[..., None]"
                    if images.ndim == 2
                    else ""
                )
            )
        dtype = jnp.dtype(images.dtype)
        if jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_:
            images = images.astype(jax.tree.leaves(params[first])[0].dtype)
        elif not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"renet.apply: images must be a real-valued array; got dtype {dtype}")
        *batch, height, width, C = images.shape
        if height % ph or width % pw or height == 0 or width == 0:
            raise ValueError(
                f"renet.apply: the patch_size ({ph}, {pw}) must divide the image's height and width; got "
                f"images of shape {tuple(images.shape)} (height {height}, width {width}). Crop or pad the "
                f"images, or choose another patch_size"
            )
        if C != in_channels:
            raise ValueError(
                f"renet.apply: images have {C} channels (last axis of shape {tuple(images.shape)}), but the "
                f"params were made for in_channels={in_channels} ({ph}x{pw} patches of {in_channels} "
                f"channels: {ph * pw * in_channels} inputs)"
            )
        x = _patches(images, ph, pw)
        x = _sweep(cells[first], params[first], x, _AXIS[first])
        return _sweep(cells[second], params[second], x, _AXIS[second])

    def output_size(params):
        return 2 * cells[second].output_size(params[second]["forward"])

    extra = "" if cell2 is cell else f", cell2={cell2.name}"
    extra += "" if order == "vertical_first" else f", order={order!r}"
    name = f"renet({cell.name}, patch_size=({ph}, {pw}){extra})"
    return ReNet(init, apply, output_size, name, (ph, pw), order)
