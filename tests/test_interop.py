"""Weights to and from PyTorch and Flax: round trips, and parity of the converted cells.

The PyTorch checks run without torch: random state_dicts with torch's names and shapes, and the
torch equations written out in numpy as the reference. One optional test compares with real
``torch.nn.LSTM/GRU/RNN`` when torch is installed (CI does not install it).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn import interop

T, B, I, H = 5, 3, 4, 6
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
KINDS = sorted(GATES)
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def torch_state_dict(kind, num_layers=1, bidirectional=False, *, seed=0, dtype=np.float64, bias=True):
    """A random state_dict with the names, shapes and key order of a torch nn.RNN/LSTM/GRU."""
    rng = np.random.default_rng(seed)
    G, D = GATES[kind], 2 if bidirectional else 1
    sd = {}
    for l in range(num_layers):
        n_in = I if l == 0 else D * H
        for sfx in ("", "_reverse")[:D]:
            shapes = [(G * H, n_in), (G * H, H)] + ([(G * H,), (G * H,)] if bias else [])
            for name, shape in zip(NAMES, shapes):
                sd[f"{name}_l{l}{sfx}"] = rng.uniform(-0.6, 0.6, shape).astype(dtype)
    return sd


# --------------------------------------------------------------------------------------------------
# the torch equations in numpy: the reference


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def np_torch_step(kind, w_ih, w_hh, b_ih, b_hh, x, h, c):
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if kind == "rnn_tanh":
        return np.tanh(gi + gh), c
    if kind == "rnn_relu":
        return np.maximum(gi + gh, 0.0), c
    if kind == "lstm":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h, c


def np_torch_rnn(sd, kind, xs, num_layers, bidirectional):
    """torch's ``output, h_n[, c_n]`` for ``xs (T, B, I)`` and zero initial states."""
    inp, h_n, c_n = xs, [], []
    for l in range(num_layers):
        outs = []
        for sfx, steps in (("", range(T)), ("_reverse", range(T - 1, -1, -1)))[: 1 + bidirectional]:
            w = [sd[f"{name}_l{l}{sfx}"] for name in NAMES]
            h = c = np.zeros((B, H), xs.dtype)
            ys = [None] * T
            for t in steps:
                h, c = np_torch_step(kind, *w, inp[t], h, c)
                ys[t] = h
            outs.append(np.stack(ys))
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, axis=-1)
    return inp, np.stack(h_n), np.stack(c_n)


# --------------------------------------------------------------------------------------------------
# torch layout without torch


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)])
def test_torch_round_trip_gives_weights_back_and_biases_that_act_the_same(kind, num_layers, bidirectional):
    sd = torch_state_dict(kind, num_layers, bidirectional, dtype=np.float32)
    for l in range(num_layers):
        for rev in (False, True)[: 1 + bidirectional]:
            params = interop.from_torch(sd, kind, l, rev)
            assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in params.values())
            back = interop.to_torch(params, kind, l, rev)
            sfx = f"_l{l}" + ("_reverse" if rev else "")
            assert list(back) == [n + sfx for n in NAMES]
            for name in ("weight_ih", "weight_hh"):
                np.testing.assert_array_equal(back[name + sfx], sd[name + sfx])
            np.testing.assert_array_equal(
                back["bias_ih" + sfx] + back["bias_hh" + sfx], sd["bias_ih" + sfx] + sd["bias_hh" + sfx]
            )
            if kind == "gru":  # b_hn sits inside r * (...): it must come back in bias_hh, unmerged
                np.testing.assert_array_equal(back["bias_hh" + sfx][2 * H :], sd["bias_hh" + sfx][2 * H :])

    layer, params = interop.from_torch_rnn(sd, kind)
    assert len(params) == num_layers
    assert all(isinstance(p, dict) and (set(p) == {"forward", "backward"}) == bidirectional for p in params)
    back = interop.to_torch_rnn(params, kind)
    assert list(back) == list(sd)  # torch's key order
    for name, a in back.items():
        assert a.shape == sd[name].shape and a.dtype == np.float32
    assert layer.output_size(params) == (1 + bidirectional) * H


def test_torch_cell_names_and_bias_free_modules():
    sd = {k.removesuffix("_l0"): v for k, v in torch_state_dict("lstm").items()}  # nn.LSTMCell
    params = interop.from_torch(sd, "LSTM", layer=None)  # torch's mode spelling is fine too
    back = interop.to_torch(params, "lstm", layer=None)
    assert sorted(back) == sorted(sd)
    np.testing.assert_array_equal(back["weight_hh"], sd["weight_hh"])

    sd = torch_state_dict("gru", bias=False)
    params = interop.from_torch(sd, "gru")
    np.testing.assert_array_equal(params["b"], np.zeros(3 * H))
    np.testing.assert_array_equal(params["b_hn"], np.zeros(H))
    assert params["b"].dtype == params["b_hn"].dtype == np.float64


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_runs_like_the_torch_equations(kind):
    # one layer, one direction, through from_torch and jr.unroll of the documented cell
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((T, B, I))
    sd = torch_state_dict(kind, seed=2)
    cell = {"rnn_tanh": jr.elman(H), "rnn_relu": jr.elman(H, "relu"), "lstm": jr.lstm(H), "gru": jr.gru(H)}
    final, ys = jr.unroll(cell[kind], interop.from_torch(sd, kind), xs)
    want_ys, want_h, want_c = np_torch_rnn(sd, kind, xs, 1, False)
    np.testing.assert_allclose(ys, want_ys, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cell[kind].output(final), want_h[0], rtol=0, atol=1e-12)

    # the whole 2-layer bidirectional module, through from_torch_rnn
    sd = torch_state_dict(kind, 2, True, seed=3)
    layer, params = interop.from_torch_rnn(sd, kind)
    final, ys = jax.jit(layer.apply)(params, xs)
    want_ys, want_h, want_c = np_torch_rnn(sd, kind, xs, 2, True)
    assert ys.dtype == jnp.float64 and ys.shape == (T, B, 2 * H)
    np.testing.assert_allclose(ys, want_ys, rtol=0, atol=1e-12)
    state = interop.to_torch_state(final)
    if kind == "lstm":
        np.testing.assert_allclose(state[0], want_h, rtol=0, atol=1e-12)
        np.testing.assert_allclose(state[1], want_c, rtol=0, atol=1e-12)
        back = interop.from_torch_state(*state, bidirectional=True)
    else:
        np.testing.assert_allclose(state, want_h, rtol=0, atol=1e-12)
        back = interop.from_torch_state(state, bidirectional=True)
    jax.tree.map(np.testing.assert_array_equal, back, final)


# --------------------------------------------------------------------------------------------------
# Flax linen


FLAX_CELLS = [
    (nn.LSTMCell, "lstm", jr.lstm(H)),
    (nn.OptimizedLSTMCell, "lstm", jr.lstm(H)),
    (nn.GRUCell, "gru", jr.gru(H)),
    (nn.SimpleCell, "simple", jr.elman(H)),
]


@pytest.mark.parametrize("flax_cell,kind,cell", FLAX_CELLS, ids=lambda x: getattr(x, "__name__", None))
def test_flax_parity(flax_cell, kind, cell):
    rng = np.random.default_rng(5)
    xs = jax.random.normal(jax.random.PRNGKey(0), (T, B, I), jnp.float32)
    cell_f = flax_cell(features=H)
    carry0 = jax.tree.map(  # a non-zero initial carry, so that the (c, h) order matters
        lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32),
        cell_f.initialize_carry(jax.random.PRNGKey(1), (B, I)),
    )
    # Flax's own parameter tree (names, shapes, dtypes), filled with random values: biases non-zero
    # (Flax initialises them to zero), and no initialiser to compile
    shapes = jax.eval_shape(cell_f.init, jax.random.PRNGKey(2), carry0, xs[0])
    variables = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), shapes)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))

    step = jax.jit(cell_f.apply)
    carry, ys_f = carry0, []
    for t in range(T):
        carry, y = step(variables, carry, xs[t])
        ys_f.append(y)

    params = interop.from_flax(variables, kind)
    final, ys = jr.unroll(cell, params, xs, interop.from_flax_carry(carry0, kind))
    np.testing.assert_allclose(ys, jnp.stack(ys_f), rtol=0, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5),
        interop.to_flax_carry(final, kind),
        carry,
    )
    if kind == "lstm":
        assert isinstance(interop.from_flax_carry(carry, kind), jr.LSTMCarry)

    back = interop.to_flax(params, kind)
    assert jax.tree.structure(back) == jax.tree.structure(dict(variables["params"]))
    jax.tree.map(np.testing.assert_array_equal, back, dict(variables["params"]))
    jax.tree.map(np.testing.assert_array_equal, interop.from_flax(back, kind), params)


# --------------------------------------------------------------------------------------------------
# real torch (optional)


def test_torch_parity_real_modules():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    xs = np.random.default_rng(4).standard_normal((T, B, I)).astype(np.float32)
    modules = {
        "lstm": lambda: torch.nn.LSTM(I, H, num_layers=2, bidirectional=True),
        "gru": lambda: torch.nn.GRU(I, H, num_layers=2, bidirectional=True),
        "rnn_tanh": lambda: torch.nn.RNN(I, H, num_layers=2, bidirectional=True),
        "rnn_relu": lambda: torch.nn.RNN(I, H, num_layers=2, bidirectional=True, nonlinearity="relu"),
    }
    for kind, make in modules.items():
        module = make()
        with torch.no_grad():
            out, state = module(torch.from_numpy(xs))
        layer, params = interop.from_torch_rnn(module.state_dict(), kind)
        assert params[0]["forward"]["W_xh"].dtype == np.float32
        final, ys = jax.jit(layer.apply)(params, xs)
        np.testing.assert_allclose(ys, out.numpy(), rtol=0, atol=1e-5, err_msg=kind)
        mine = interop.to_torch_state(final)
        for a, b in zip(mine if kind == "lstm" else (mine,), state if kind == "lstm" else (state,)):
            np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-5, err_msg=kind)

        again = make()  # and back into torch
        again.load_state_dict({k: torch.from_numpy(v) for k, v in interop.to_torch_rnn(params, kind).items()})
        with torch.no_grad():
            out_again, _ = again(torch.from_numpy(xs))
        np.testing.assert_allclose(out_again.numpy(), out.numpy(), rtol=0, atol=1e-5, err_msg=kind)


# --------------------------------------------------------------------------------------------------
# bad input


def _jaxrnn_params(kind):
    return interop.from_torch(torch_state_dict(kind), kind)


def test_unknown_kind_lists_the_kinds():
    sd = torch_state_dict("lstm")
    for call in (
        lambda: interop.from_torch(sd, "lstmx"),
        lambda: interop.from_torch_rnn(sd, "lstmx"),
        lambda: interop.to_torch(_jaxrnn_params("lstm"), "lstmx"),
        lambda: interop.to_torch_rnn((_jaxrnn_params("lstm"),), "lstmx"),
    ):
        with pytest.raises(
            ValueError, match=r"kind must be one of \['gru', 'lstm', 'rnn_relu', 'rnn_tanh'\]"
        ):
            call()
    with pytest.raises(ValueError, match=r"from_flax: kind must be one of \['gru', 'lstm', 'simple'\]"):
        interop.from_flax({}, "rnn_tanh")
    with pytest.raises(ValueError, match=r"to_flax: kind must be one of .*got 'mgu'"):
        interop.to_flax(_jaxrnn_params("gru"), "mgu")


def test_missing_keys_are_named():
    sd = torch_state_dict("gru", 2)
    with pytest.raises(KeyError, match="from_torch: state_dict has no key 'weight_hh_l0'"):
        interop.from_torch({k: v for k, v in sd.items() if k != "weight_hh_l0"}, "gru")
    with pytest.raises(KeyError, match="no key 'bias_hh_l1'"):  # one bias of the two
        interop.from_torch({k: v for k, v in sd.items() if k != "bias_hh_l1"}, "gru", layer=1)
    with pytest.raises(KeyError, match="'weight_ih_l0_reverse'"):
        interop.from_torch(sd, "gru", reverse=True)
    with pytest.raises(KeyError, match="strip the module prefix"):
        interop.from_torch({"rnn." + k: v for k, v in sd.items()}, "gru")
    with pytest.raises(KeyError, match="has 'weight_ih'.*pass layer=None"):
        interop.from_torch({k.removesuffix("_l0"): v for k, v in sd.items()}, "gru")
    params = _jaxrnn_params("gru")
    del params["b_hn"]  # e.g. jr.gru(H, reset_after=False)
    with pytest.raises(KeyError, match="to_torch: params has no key 'b_hn'.*reset_after=True"):
        interop.to_torch(params, "gru")
    flax_params = interop.to_flax(_jaxrnn_params("gru"), "gru")
    del flax_params["hn"]["bias"]
    with pytest.raises(KeyError, match=r"from_flax: params\['hn'\] has no key 'bias'"):
        interop.from_flax(flax_params, "gru")
    with pytest.raises(KeyError, match="from_flax: params has no key 'ii'"):
        interop.from_flax({"params": interop.to_flax(_jaxrnn_params("rnn_tanh"), "simple")}, "lstm")


def test_wrong_shapes_are_named():
    sd = torch_state_dict("lstm", 2, True)
    bad = {**sd, "weight_ih_l0": sd["weight_ih_l0"][: 3 * H]}
    with pytest.raises(ValueError, match=r"from_torch: state_dict\['weight_ih_l0'\] must have shape"):
        interop.from_torch(bad, "lstm")
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] must have shape \(24, 6\)"):
        interop.from_torch(torch_state_dict("gru"), "lstm")  # a GRU's weights read as an LSTM's
    bad = {**sd, "weight_ih_l1_reverse": sd["weight_ih_l1_reverse"][:, :H]}
    with pytest.raises(ValueError, match=r"from_torch_rnn: state_dict\['weight_ih_l1_reverse'\].*D\*H=12"):
        interop.from_torch_rnn(bad, "lstm")
    params = _jaxrnn_params("lstm")
    with pytest.raises(ValueError, match=r"to_torch: params\['b'\] must have shape \(24,\)"):
        interop.to_torch({**params, "b": params["b"][:H]}, "lstm")
    with pytest.raises(ValueError, match=r"to_flax: params\['W_xh'\] must have shape"):
        interop.to_flax({**params, "W_xh": params["W_xh"][:, :H]}, "lstm")
    flax_params = interop.to_flax(params, "lstm")
    flax_params["hg"]["kernel"] = flax_params["hg"]["kernel"][:, :2]
    with pytest.raises(ValueError, match=r"from_flax: params\['hg'\]\['kernel'\] must have shape \(6, 6\)"):
        interop.from_flax(flax_params, "lstm")


def test_unsupported_parameters_are_refused():
    sd = torch_state_dict("lstm", 2)
    sd["weight_hr_l0"] = np.zeros((2, H))
    with pytest.raises(ValueError, match=r"from_torch: state_dict has 'weight_hr_l0'.*proj_size"):
        interop.from_torch(sd, "lstm")
    with pytest.raises(ValueError, match=r"from_torch_rnn: state_dict has \['weight_hr_l0'\].*proj_size"):
        interop.from_torch_rnn(sd, "lstm")
    with pytest.raises(ValueError, match=r"from_torch_rnn: .*unexpected keys \[.*'rnn.weight_ih_l0'"):
        interop.from_torch_rnn({"rnn." + k: v for k, v in torch_state_dict("gru").items()}, "gru")
    peephole = {**_jaxrnn_params("lstm"), "p_f": np.zeros(H), "p_i": np.zeros(H), "p_o": np.zeros(H)}
    with pytest.raises(ValueError, match=r"to_torch: params .* extra keys \['p_f', 'p_i', 'p_o'\]"):
        interop.to_torch(peephole, "lstm")
    uni, bi = _jaxrnn_params("gru"), {"forward": _jaxrnn_params("gru"), "backward": _jaxrnn_params("gru")}
    with pytest.raises(ValueError, match="to_torch_rnn: params must be all bidirectional"):
        interop.to_torch_rnn((bi, uni), "gru")
    with pytest.raises(TypeError, match="to_torch_rnn: params must be a non-empty tuple"):
        interop.to_torch_rnn(uni, "gru")


# --------------------------------------------------------------------------------------------------
# flax.nnx cells


@pytest.mark.parametrize(
    ("cls", "kind", "make"),
    [
        ("LSTMCell", "lstm", lambda h: jr.lstm(h)),
        ("OptimizedLSTMCell", "lstm", lambda h: jr.lstm(h)),
        ("GRUCell", "gru", lambda h: jr.gru(h)),
        ("SimpleCell", "simple", lambda h: jr.elman(h)),
    ],
)
def test_nnx_cells_against_their_own_outputs(cls, kind, make):
    from flax import nnx

    I_, H_, B_, T_ = 3, 4, 2, 5
    cell_f = getattr(nnx, cls)(I_, H_, rngs=nnx.Rngs(0))
    state = nnx.state(cell_f, nnx.Param)
    # randomise every parameter (biases start at zero) so that a swapped block cannot pass
    leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    nnx.replace_by_pure_dict(
        state, jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) * 0.5 for k, x in zip(keys, leaves)])
    )
    nnx.update(cell_f, state)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T_, B_, I_))
    for given in (cell_f, nnx.state(cell_f, nnx.Param), nnx.to_pure_dict(nnx.state(cell_f, nnx.Param))):
        params = jax.tree.map(jnp.asarray, interop.from_flax(given, kind))
        carry = cell_f.initialize_carry((B_, I_), rngs=nnx.Rngs(0))
        ys_f = []
        for t in range(T_):
            carry, y = cell_f(carry, xs[t])
            ys_f.append(y)
        final, ys = jr.unroll(make(H_), params, xs)
        np.testing.assert_allclose(ys, jnp.stack(ys_f), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            jax.tree.leaves(final)[0],
            jax.tree.leaves(interop.from_flax_carry(carry, kind))[0],
            rtol=1e-5,
            atol=1e-6,
        )
    back = interop.to_flax(interop.from_flax(cell_f, kind), kind, nnx=cls)
    jax.tree.map(np.testing.assert_array_equal, back, nnx.to_pure_dict(nnx.state(cell_f, nnx.Param)))


def test_to_flax_nnx_refuses_what_nnx_cannot_hold():
    p = jr.gru(3).init(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="to_flax: flax.nnx.GRUCell has no hidden-side bias"):
        interop.to_flax({**p, "b_hn": jnp.ones(3)}, "gru", nnx="GRUCell")
    with pytest.raises(ValueError, match="to_flax: nnx must name the flax.nnx cell for kind='gru'"):
        interop.to_flax(p, "gru", nnx="LSTMCell")
