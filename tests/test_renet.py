"""jr.renet: the four-RNN image layer against a plain-Python loop over the columns and rows of patches that
calls cell.step one patch at a time; both orders, batch dims, jit, gradients, the fused kernels, stacking,
and bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn as jr
from jaxrnn.renet import renet

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)


def _image(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), F64)


def _random_params(layer, in_channels, seed=0):
    """float64 params of ``layer.init``'s shapes, drawn by numpy (no JAX random op to compile)."""
    shapes = jax.eval_shape(functools.partial(layer.init, in_channels=in_channels, dtype=F64), KEY)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), F64), shapes)


# --------------------------------------------------------------------------------------------------
# the reference: plain loops, one cell.step per patch


def _ref_sweep(cell, P, seqs):
    """``seqs[k][t]`` vectors ``(*batch, D)``; returns ``out[k][t] = concat(forward, backward)``."""
    out = []
    for seq in seqs:
        batch = seq[0].shape[:-1]
        fw, s = [], cell.initial_carry(P["forward"], batch)
        for t, x in enumerate(seq):
            s = cell.step(P["forward"], s, x, t)
            fw.append(cell.output(s))
        bw, s = [], cell.initial_carry(P["backward"], batch)
        for t, x in enumerate(reversed(seq)):
            s = cell.step(P["backward"], s, x, t)
            bw.insert(0, cell.output(s))
        out.append([jnp.concatenate([f, b], axis=-1) for f, b in zip(fw, bw)])
    return out


@functools.partial(jax.jit, static_argnums=(0, 1, 4, 5))  # one compile of the whole loop per case
def reference(cell, cell2, params, images, patch_size, order):
    """ReNet by hand: slice each patch out of the image, sweep the columns (rows), then the rows (columns)."""
    ph, pw = patch_size
    I, J = images.shape[-3] // ph, images.shape[-2] // pw
    batch = images.shape[:-3]
    p = [
        [images[..., i * ph : (i + 1) * ph, j * pw : (j + 1) * pw, :].reshape((*batch, -1)) for j in range(J)]
        for i in range(I)
    ]
    if order == "vertical_first":
        cols = _ref_sweep(cell, params["vertical"], [[p[i][j] for i in range(I)] for j in range(J)])
        v = [[cols[j][i] for j in range(J)] for i in range(I)]
        out = _ref_sweep(cell2, params["horizontal"], v)  # out[i][j]
    else:
        rows = _ref_sweep(cell, params["horizontal"], p)  # rows[i][j]
        cols = _ref_sweep(cell2, params["vertical"], [[rows[i][j] for i in range(I)] for j in range(J)])
        out = [[cols[j][i] for j in range(J)] for i in range(I)]
    return jnp.stack([jnp.stack(row, axis=-2) for row in out], axis=-3)


def _close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# module-level layers, so that their jitted apply compiles once per shape
ELMAN, GRU = jr.elman(3), jr.gru(3)
LAYERS = {
    ("elman", "vertical_first"): renet(ELMAN),
    ("elman", "horizontal_first"): renet(ELMAN, order="horizontal_first"),
    ("gru", "vertical_first"): renet(GRU, (2, 2)),
    ("gru", "horizontal_first"): renet(GRU, 2, order="horizontal_first"),
}
CELLS = {"elman": ELMAN, "gru": GRU}
JIT = {k: jax.jit(layer.apply) for k, layer in LAYERS.items()}


@functools.cache
def _params(name, C, order):
    """float64 params, made once per cell and channel count; the other order's are the same, swapped."""
    p = _random_params(LAYERS[name, "vertical_first"], C)
    return p if order == "vertical_first" else {"vertical": p["horizontal"], "horizontal": p["vertical"]}


# --------------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize("name, C", [("elman", 1), ("gru", 3)])
@pytest.mark.parametrize("order", ["vertical_first", "horizontal_first"])
def test_equals_the_python_loop(name, C, order):
    layer, cell = LAYERS[name, order], CELLS[name]
    params = _params(name, C, order)
    images = _image((2, 4, 6, C))
    want = reference(cell, cell, params, images, (2, 2), order)
    got = JIT[name, order](params, images)
    assert got.shape == (2, 2, 3, 6) == (2, 4 // 2, 6 // 2, layer.output_size(params))
    assert got.dtype == F64
    _close(got, want)
    if (name, order) == ("elman", "horizontal_first"):  # without jit (slow: every scan compiled eagerly)
        _close(layer.apply(params, images), want)


def test_params_layout_and_the_second_sweep_reads_2h():
    layer = renet(ELMAN, cell2=jr.gru(2))
    params = jax.eval_shape(functools.partial(layer.init, in_channels=2), KEY)  # shapes suffice here
    assert set(params) == {"vertical", "horizontal"}
    assert all(set(params[s]) == {"forward", "backward"} for s in params)
    assert ELMAN.input_size(params["vertical"]["forward"]) == 2 * 2 * 2  # ph * pw * C
    assert jr.gru(2).input_size(params["horizontal"]["backward"]) == 2 * 3  # 2 * H1
    assert layer.output_size(params) == 4
    assert layer.patch_size == (2, 2) and layer.order == "vertical_first"
    assert layer.name == "renet(elman, patch_size=(2, 2), cell2=gru)"
    # horizontal_first: the first cell sweeps the rows, so params["horizontal"] read the patches
    flipped = renet(ELMAN, (1, 3), cell2=jr.gru(2), order="horizontal_first")
    fp = jax.eval_shape(functools.partial(flipped.init, in_channels=2), KEY)
    assert ELMAN.input_size(fp["horizontal"]["forward"]) == 1 * 3 * 2
    assert jr.gru(2).input_size(fp["vertical"]["forward"]) == 6
    assert flipped.name == "renet(elman, patch_size=(1, 3), cell2=gru, order='horizontal_first')"
    assert renet(ELMAN, 3).patch_size == (3, 3)
    # init runs: float64 on request, and the four RNNs get their own keys
    real = renet(jr.elman(2)).init(KEY, 1, F64)
    leaves = [real[s][d]["W_hh"] for s in ("vertical", "horizontal") for d in ("forward", "backward")]
    assert all(w.dtype == F64 for w in leaves)
    assert len({np.asarray(w).tobytes() for w in leaves}) == 4


def test_batch_dims_none_one_two():
    """Two batch dims and none against one (which test_equals_the_python_loop checks against the loop)."""
    apply = JIT["gru", "vertical_first"]
    params = _params("gru", 3, "vertical_first")
    images = _image((3, 2, 4, 6, 3), seed=2)
    two = apply(params, images)
    assert two.shape == (3, 2, 2, 3, 6)
    for i in range(3):
        _close(two[i], apply(params, images[i]))
    none = apply(params, images[2, 1])
    assert none.shape == (2, 3, 6)
    _close(two[2, 1], none)


def test_horizontal_first_is_vertical_first_on_the_transposed_grid_of_patches():
    """Independent of the reference: moving patch (i, j) to (j, i) (each patch kept as it is) and swapping
    the sweeps' params turns one order into the other, with the output grid transposed."""
    params = _params("elman", 1, "vertical_first")
    images = _image((2, 4, 6, 1))
    a = JIT["elman", "vertical_first"](params, images)
    swapped = {"vertical": params["horizontal"], "horizontal": params["vertical"]}
    b = JIT["elman", "horizontal_first"](swapped, images)
    assert not np.allclose(np.asarray(a), np.asarray(b))  # the order matters
    # patch (i, j) moved to (j, i), its pixels as they are
    grid = images.reshape(2, 2, 2, 3, 2, 1).transpose(0, 3, 2, 1, 4, 5).reshape(2, 6, 4, 1)
    _close(jnp.swapaxes(JIT["elman", "horizontal_first"](swapped, grid), 1, 2), a)


def test_a_two_layer_stack_with_cell2_and_oblong_patches():
    """A feature map is an image: a second ReNet (another cell for its second sweep, horizontal first,
    1x3 patches) reads the first one's output."""
    first = LAYERS["elman", "vertical_first"]
    second = renet(ELMAN, (1, 3), cell2=jr.gru(2), order="horizontal_first")
    p1 = _params("elman", 1, "vertical_first")
    p2 = _random_params(second, first.output_size(p1), seed=1)

    @jax.jit
    def net(p1, p2, images):
        return second.apply(p2, first.apply(p1, images))

    images = _image((2, 4, 6, 1))
    got = net(p1, p2, images)
    assert got.shape == (2, 2, 1, 4)
    mid = reference(ELMAN, ELMAN, p1, images, (2, 2), "vertical_first")
    _close(got, reference(ELMAN, jr.gru(2), p2, mid, (1, 3), "horizontal_first"))


def test_integer_images_are_promoted_to_the_params_dtype():
    apply = JIT["elman", "vertical_first"]
    params = _params("elman", 1, "vertical_first")
    images = jnp.arange(48).reshape(2, 4, 6, 1) % 3
    got = apply(params, images)
    assert got.dtype == F64
    _close(got, apply(params, images.astype(F64)))


# --------------------------------------------------------------------------------------------------
# gradients and the fused kernels


def test_check_grads_float64():
    layer = renet(jr.gru(2))
    params = _random_params(layer, 1)
    images = _image((2, 4, 1))
    check_grads(jax.jit(layer.apply), (params, images), order=1, modes=("rev",))


def _count(f, *args, what="custom_jvp_call"):
    return str(jax.make_jaxpr(f)(*args)).count(what)


@pytest.mark.parametrize("make", [jr.lstm, jr.gru, jr.elman])
def test_the_fused_kernel_runs_once_per_direction_and_sweep(make):
    cell = make(3)
    layer = renet(cell)
    params = jax.eval_shape(functools.partial(layer.init, in_channels=2), KEY)  # shapes: nothing runs
    images = jax.ShapeDtypeStruct((2, 4, 6, 2), jnp.float32)
    p, xs = params["vertical"]["forward"], jax.ShapeDtypeStruct((2, 6, 8), jnp.float32)
    one = _count(lambda p, x: jr.unroll(cell, p, x), p, xs)
    assert one > _count(lambda p, x: jr.unroll(cell, p, x, fused=False), p, xs)  # the kernel's custom_jvp
    assert _count(layer.apply, params, images) == 4 * one  # four unrolls, each fused
    scans = _count(lambda p, x: jr.unroll(cell, p, x), p, xs, what="scan[")
    assert scans > 0 and _count(layer.apply, params, images, what="scan[") == 4 * scans


# --------------------------------------------------------------------------------------------------
# bad inputs

LAYER = LAYERS["elman", "vertical_first"]
PARAMS = jax.tree.map(  # zeros of the right shapes: the checks read shapes only
    lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(functools.partial(LAYER.init, in_channels=2), KEY)
)
IMAGES = jnp.ones((4, 6, 2), jnp.float32)

BAD = [
    ("cell", lambda: renet("elman"), TypeError, "renet: cell"),
    ("cell2", lambda: renet(ELMAN, cell2=jr.layer(ELMAN)), TypeError, "renet: cell2"),
    ("patch-zero", lambda: renet(ELMAN, (0, 2)), ValueError, "renet: patch_size[0]"),
    ("patch-float", lambda: renet(ELMAN, (2, 1.5)), TypeError, "renet: patch_size[1]"),
    ("patch-triple", lambda: renet(ELMAN, (2, 2, 2)), ValueError, "renet: patch_size"),
    ("patch-str", lambda: renet(ELMAN, "2x2"), TypeError, "renet: patch_size"),
    ("patch-bool", lambda: renet(ELMAN, True), TypeError, "renet: patch_size"),
    ("order", lambda: renet(ELMAN, order="diagonal"), ValueError, "renet: order", "vertical_first"),
    ("order-type", lambda: renet(ELMAN, order=1), TypeError, "renet: order"),
    ("init-channels", lambda: LAYER.init(KEY, 0), ValueError, "renet.init: in_channels"),
    ("init-channels-float", lambda: LAYER.init(KEY, 2.0), TypeError, "renet.init: in_channels"),
    ("init-dtype", lambda: LAYER.init(KEY, 2, jnp.int32), TypeError, "renet.init: dtype"),
    ("init-key", lambda: LAYER.init(0, 2), TypeError, "renet.init: key"),
    ("height", lambda: LAYER.apply(PARAMS, jnp.ones((5, 6, 2))), ValueError, "renet.apply", "patch_size"),
    ("width", lambda: LAYER.apply(PARAMS, jnp.ones((4, 7, 2))), ValueError, "renet.apply", "width 7"),
    ("rank", lambda: LAYER.apply(PARAMS, jnp.ones((4, 6))), ValueError, "renet.apply: images", "[..., None]"),
    (
        "channels",
        lambda: LAYER.apply(PARAMS, jnp.ones((4, 6, 3))),
        ValueError,
        "renet.apply",
        "in_channels=2",
    ),
    ("complex", lambda: LAYER.apply(PARAMS, IMAGES.astype(jnp.complex64)), TypeError, "renet.apply: images"),
    (
        "params-keys",
        lambda: LAYER.apply({"vertical": PARAMS["vertical"]}, IMAGES),
        ValueError,
        "renet.apply: params",
    ),
    (
        "params-direction",
        lambda: LAYER.apply({**PARAMS, "horizontal": {"forward": PARAMS["horizontal"]["forward"]}}, IMAGES),
        ValueError,
        'params["horizontal"]',
        "'backward'",
    ),
    (
        "params-swapped",
        lambda: LAYER.apply({"vertical": PARAMS["horizontal"], "horizontal": PARAMS["vertical"]}, IMAGES),
        ValueError,
        "renet.apply",
        "second sweep",
    ),
    (
        "params-shape",
        lambda: LAYER.apply(
            {
                **PARAMS,
                "vertical": {
                    **PARAMS["vertical"],
                    "backward": {**PARAMS["vertical"]["backward"], "b": jnp.zeros(4)},
                },
            },
            IMAGES,
        ),
        ValueError,
        'params["vertical"]["backward"]["b"]',
    ),
    (
        "params-other-patch",
        lambda: renet(ELMAN, (3, 3)).apply(PARAMS, jnp.ones((6, 6, 2))),
        ValueError,
        "renet.apply",
        "patch_size",
    ),
]


@pytest.mark.parametrize(("call", "exc", "match"), [pytest.param(c, e, m, id=n) for n, c, e, *m in BAD])
def test_bad_input(call, exc, match):
    with pytest.raises(exc) as info:
        call()
    for m in match:
        assert m in str(info.value), f"{m!r} not in {str(info.value)!r}"
