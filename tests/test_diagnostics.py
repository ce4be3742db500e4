"""Tests of jaxrnn.diagnostics against numpy, brute-force Jacobians and known linear dynamics.

Every diagnostic is checked eagerly and under ``jax.jit``; shapes are tiny and each jitted function is
compiled once or twice, so the file runs in seconds on a CPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxrnn as jr
from jaxrnn import diagnostics as dg

F32 = jnp.float32
POWER_RTOL = 1e-3  # the accuracy spectral_radius(method="power") documents for these families

jit_spectral_radius = jax.jit(dg.spectral_radius, static_argnames=("method", "num_iters"))
jit_jacobian_norms = jax.jit(dg.jacobian_norms, static_argnums=0, static_argnames=("ord", "log"))
jit_lyapunov = jax.jit(
    dg.lyapunov_spectrum, static_argnums=0, static_argnames=("k", "reorth_every", "burn_in")
)


def _rot(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def _test_matrices(n=8):
    """(name, float32 matrix) pairs, all (n, n), covering what breaks naive power iteration."""
    rng = np.random.default_rng(0)
    mats = []
    for i in range(3):
        mats.append((f"gaussian{i}", rng.standard_normal((n, n))))
    mats.append(("gaussian/sqrt(n)", rng.standard_normal((n, n)) / np.sqrt(n)))
    for i, theta in enumerate((0.4, 1.7, np.pi / 2)):  # dominant complex pair, non-normal
        B = np.diag(rng.uniform(-1.0, 1.0, n))
        B[:2, :2] = 1.3 * _rot(theta)
        S = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
        mats.append((f"rotation-like{i}", S @ B @ np.linalg.inv(S)))
    G = rng.standard_normal((n, n))
    mats.append(("badly scaled", G * np.exp(rng.uniform(-3, 3, n))[:, None] * np.exp(rng.uniform(-3, 3, n))))
    mats.append(("symmetric", (G + G.T) / 2))
    mats.append(("orthogonal", np.linalg.qr(G)[0]))
    mats.append(("permutation", 0.7 * np.roll(np.eye(n), 1, axis=0)))  # n eigenvalues of modulus 0.7
    mats.append(("jordan", 0.9 * np.eye(n) + np.diag(np.ones(n - 1), 1)))  # one Jordan block of size n
    mats.append(("nilpotent", np.triu(np.ones((n, n)), 1)))
    mats.append(("zero", np.zeros((n, n))))
    return [(name, W.astype(np.float32)) for name, W in mats]


# --------------------------------------------------------------------------------------------------
# spectral radius, singular values


def test_spectral_radius_eig_and_power_match_numpy():
    for name, W in _test_matrices():
        want = np.max(np.abs(np.linalg.eigvals(W.astype(np.float64))))
        eig = dg.spectral_radius(jnp.asarray(W))
        power = jit_spectral_radius(jnp.asarray(W), method="power")
        assert eig.dtype == F32 and power.dtype == F32 and power.shape == ()
        if name == "jordan":  # eigenvalues of a perturbed Jordan block move by eps^(1/n): LAPACK's too
            np.testing.assert_allclose(eig, want, rtol=0.2, err_msg=name)
        else:
            np.testing.assert_allclose(eig, want, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(power, want, rtol=POWER_RTOL, atol=1e-6, err_msg=name)
    W = jnp.asarray(_test_matrices()[0][1])
    np.testing.assert_allclose(jit_spectral_radius(W), dg.spectral_radius(W), rtol=1e-6)
    jordan16 = jnp.asarray(
        0.9 * np.eye(16) + np.diag(np.ones(15), 1), F32
    )  # power spans K^15 before balancing
    np.testing.assert_allclose(jit_spectral_radius(jordan16, method="power"), 0.9, rtol=POWER_RTOL)


def test_spectral_radius_power_float64_and_integer_input():
    rng = np.random.default_rng(1)
    B = np.diag(rng.uniform(-1.0, 1.0, 6))
    B[:2, :2] = 1.1 * _rot(2.0)
    S = np.eye(6) + 0.3 * rng.standard_normal((6, 6))
    W = S @ B @ np.linalg.inv(S)
    got = jit_spectral_radius(jnp.asarray(W, jnp.float64), method="power", num_iters=30)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, 1.1, rtol=1e-9)
    # "eig" is differentiable: d|lambda| = Re(conj(lambda) / |lambda| y^H dW x / y^H x)
    ev, V = np.linalg.eig(W)
    i = np.argmax(np.abs(ev))
    x, y = V[:, i], np.linalg.inv(V).conj().T[:, i]
    want = np.real(np.conj(ev[i]) / np.abs(ev[i]) * np.outer(y.conj(), x) / (y.conj() @ x))
    np.testing.assert_allclose(jax.grad(dg.spectral_radius)(jnp.asarray(W)), want, rtol=1e-6, atol=1e-9)
    # integers are promoted to float32: [[0, 2], [1, 0]] has eigenvalues +-sqrt(2)
    got = dg.spectral_radius(jnp.array([[0, 2], [1, 0]], jnp.int32))
    assert got.dtype == F32
    np.testing.assert_allclose(got, np.sqrt(2.0), rtol=1e-5)


def test_max_singular_value():
    rng = np.random.default_rng(2)
    for shape in [(5, 5), (3, 12)]:  # also non-square, e.g. an LSTM's W_hh (H, 4H)
        W = rng.standard_normal(shape).astype(np.float32)
        want = np.linalg.norm(W.astype(np.float64), 2)
        np.testing.assert_allclose(dg.max_singular_value(W), want, rtol=1e-5)
        np.testing.assert_allclose(jax.jit(dg.max_singular_value)(jnp.asarray(W)), want, rtol=1e-5)
    W = jnp.asarray(rng.standard_normal((6, 6)), F32)
    assert dg.max_singular_value(W) >= dg.spectral_radius(W) * (1 - 1e-6)


# --------------------------------------------------------------------------------------------------
# the seed-000 bound


def _elman(hidden, activation="tanh", input_size=2, W_hh=None, seed=0):
    cell = jr.elman(hidden, activation)
    params = cell.init(jax.random.PRNGKey(seed), input_size, F32)
    if W_hh is not None:
        params["W_hh"] = jnp.asarray(W_hh, F32)
    return cell, params


def test_gradient_bound_values():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 4)).astype(np.float32)
    sigma = np.linalg.norm(W.astype(np.float64), 2)
    cell, params = _elman(4, W_hh=W)
    lags = np.arange(6)
    np.testing.assert_allclose(dg.gradient_bound(cell, params, 5), sigma**lags, rtol=1e-5)
    np.testing.assert_allclose(dg.gradient_bound(cell, params, 5, "sigmoid"), (sigma / 4) ** lags, rtol=1e-5)
    np.testing.assert_allclose(dg.gradient_bound(cell, params, 5, 0.5), (sigma / 2) ** lags, rtol=1e-5)
    np.testing.assert_allclose(
        dg.gradient_bound(cell, params, 5, log=True), lags * np.log(sigma), rtol=1e-5, atol=1e-6
    )
    bound = jax.jit(lambda p: dg.gradient_bound(cell, p, 5, "sigmoid"))(params)
    np.testing.assert_allclose(bound, (sigma / 4) ** lags, rtol=1e-5)
    assert bound.shape == (6,) and bound.dtype == F32
    # IRNN: ReLU by construction, W_hh = I
    irnn = jr.irnn(3)
    np.testing.assert_allclose(dg.gradient_bound(irnn, irnn.init(jax.random.PRNGKey(0), 2, F32), 3), 1.0)
    # ctrnn: alpha is read off the cell; eta = 1 - alpha + alpha sigma
    ct = jr.ctrnn(4, alpha=0.25)
    p_ct = {**ct.init(jax.random.PRNGKey(1), 2, F32), "W_hh": jnp.asarray(W)}
    eta = 0.75 + 0.25 * sigma
    np.testing.assert_allclose(dg.gradient_bound(ct, p_ct, 5), eta**lags, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda p: dg.gradient_bound(ct, p, 5))(p_ct), eta**lags, rtol=1e-5)
    learned = jr.learned_initial_state(ct)
    p_learned = {**p_ct, "initial_carry": jnp.zeros((4,), F32)}
    np.testing.assert_allclose(dg.gradient_bound(learned, p_learned, 5), eta**lags, rtol=1e-5)


def test_gradient_bound_bounds_the_measured_norms():
    rng = np.random.default_rng(4)
    xs = jnp.asarray(rng.standard_normal((6, 2)), F32)
    for cell in (jr.elman(4), jr.ctrnn(4, alpha=0.3)):
        params = cell.init(jax.random.PRNGKey(0), 2, F32)
        params["W_hh"] = jnp.asarray(1.5 * rng.standard_normal((4, 4)), F32)
        N = np.asarray(dg.jacobian_norms(cell, params, xs))
        bound = np.asarray(dg.gradient_bound(cell, params, 5))
        t, k = np.tril_indices(6)
        assert np.all(N[t, k] <= bound[t - k] * (1 + 1e-5)), cell.name


# --------------------------------------------------------------------------------------------------
# Jacobians


def _flat_step(cell, params, template):
    _, unravel = ravel_pytree(template)
    return lambda s, x: ravel_pytree(cell.step(params, unravel(s), x))[0]


def _states(cell, params, xs, carry):
    """[s_{-1}, s_0, ..., s_{T-1}] flattened, by a plain Python loop."""
    step = _flat_step(cell, params, carry)
    s = ravel_pytree(carry)[0]
    out = [s]
    for x in xs:
        s = step(s, x)
        out.append(s)
    return out


def _lstm(hidden=2, input_size=3, seed=0):
    cell = jr.lstm(hidden)
    params = cell.init(jax.random.PRNGKey(seed), input_size, F32)
    params = jax.tree.map(lambda p: 1.5 * p, params)  # larger weights: Jacobians far from identity
    carry = jr.LSTMCarry(h=jnp.array([0.3, -0.5], F32), c=jnp.array([1.0, -0.2], F32))
    return cell, params, carry


def test_step_jacobians_match_a_python_loop():
    rng = np.random.default_rng(5)
    cell, params, carry = _lstm()
    xs = jnp.asarray(rng.standard_normal((4, 3)), F32)
    step = _flat_step(cell, params, carry)
    states = _states(cell, params, xs, carry)
    want = np.stack([jax.jacobian(step)(states[t], xs[t]) for t in range(4)])
    got = dg.step_jacobians(cell, params, xs, carry)
    assert got.shape == (4, 4, 4) and got.dtype == F32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = jax.jit(dg.step_jacobians, static_argnums=0)(cell, params, xs, carry)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _brute_force_jacobians(cell, params, xs, carry):
    """{(t, k): ds_t/ds_k} from jax.jacobian of the whole map s_k -> s_t (a plain Python loop)."""
    step = _flat_step(cell, params, carry)
    states = _states(cell, params, xs, carry)
    out = {}
    for t in range(len(xs)):
        for k in range(t + 1):

            def run(s, k=k, t=t):
                for i in range(k + 1, t + 1):
                    s = step(s, xs[i])
                return s

            out[t, k] = np.asarray(jax.jacobian(run)(states[k + 1]), np.float64)  # states[k + 1] is s_k
    return out


def _norms(jacobians, T, ord):
    N = np.zeros((T, T))
    for (t, k), J in jacobians.items():
        N[t, k] = np.linalg.norm(J, ord)
    return N


@pytest.mark.parametrize("kind", ["elman", "lstm"])
def test_jacobian_norms_match_brute_force(kind):
    rng = np.random.default_rng(6)
    if kind == "elman":
        cell, params = _elman(4, "tanh", input_size=3, W_hh=1.2 * rng.standard_normal((4, 4)))
        carry = jnp.asarray(rng.standard_normal(4), F32)
    else:
        cell, params, carry = _lstm()
    xs = jnp.asarray(rng.standard_normal((5, 3)), F32)
    jacobians = _brute_force_jacobians(cell, params, xs, carry)
    for ord in (2, "fro"):
        want = _norms(jacobians, 5, ord)
        got = dg.jacobian_norms(cell, params, xs, carry, ord=ord)
        assert got.shape == (5, 5) and got.dtype == F32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=f"{kind} ord={ord}")
        jitted = jit_jacobian_norms(cell, params, xs, carry, ord=ord)
        np.testing.assert_allclose(jitted, want, rtol=1e-4, atol=1e-7)
        diag = 1.0 if ord == 2 else 2.0  # ||I_4||_F = 2
        np.testing.assert_allclose(np.diag(got), diag, rtol=1e-6)
        assert np.all(np.triu(np.asarray(got), 1) == 0)
    log_n = jit_jacobian_norms(cell, params, xs, carry, ord=2, log=True)
    np.testing.assert_allclose(np.exp(log_n), _norms(jacobians, 5, 2), rtol=1e-4)
    assert np.all(np.asarray(log_n)[np.triu_indices(5, 1)] == -np.inf)


def test_jacobian_norms_long_sequence_is_stable():
    """s_t = a s_{t-1} (identity activation, W_hh = a I): ||ds_t/ds_k|| = a^(t-k) exactly, T = 400."""
    T = 400
    xs = jnp.zeros((T, 1), F32)
    t, k = np.tril_indices(T)
    for a in (0.5, 1.5):
        cell, params = _elman(2, "identity", input_size=1, W_hh=a * np.eye(2))
        log_n = np.asarray(jit_jacobian_norms(cell, params, xs, ord=2, log=True))
        assert np.all(np.isfinite(log_n[t, k]))  # 1.5^399 overflows float32; its log does not
        np.testing.assert_allclose(log_n[t, k], (t - k) * np.log(a), rtol=1e-5, atol=1e-4)
        N = np.asarray(jit_jacobian_norms(cell, params, xs, ord=2))
        assert not np.any(np.isnan(N))
        near = (t - k) <= 100
        np.testing.assert_allclose(N[t, k][near], a ** (t - k)[near], rtol=1e-4)
        if a > 1:  # exp of a log above float32's range is inf, not nan
            far = (t - k) * np.log(a) > 89
            assert np.all(np.isinf(N[t, k][far]))


# --------------------------------------------------------------------------------------------------
# Lyapunov exponents


def test_lyapunov_spectrum_of_linear_recurrences():
    rng = np.random.default_rng(7)
    V = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    xs = jnp.zeros((100, 1), F32)
    carry = jnp.asarray(rng.standard_normal(4), F32)
    # symmetric: distinct real eigenvalues, one negative
    lam = np.array([0.3, -0.7, 0.9, 0.5])
    cell, params = _elman(4, "identity", input_size=1, W_hh=V @ np.diag(lam) @ V.T)
    want = np.sort(np.log(np.abs(lam)))[::-1]
    got = jit_lyapunov(cell, params, xs, carry, burn_in=20)
    assert got.shape == (4,) and got.dtype == F32
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(dg.lyapunov_spectrum(cell, params, xs, carry, burn_in=20), want, atol=1e-4)
    got = jit_lyapunov(cell, params, xs, carry, k=2, reorth_every=7, burn_in=23)
    np.testing.assert_allclose(got, want[:2], atol=1e-4)
    # without burn-in the initial frame costs O(1/T); still close
    np.testing.assert_allclose(jit_lyapunov(cell, params, xs, carry), want, atol=0.05)
    # rotation-scalings: a complex pair r e^(+-i theta) gives log r twice
    B = np.zeros((4, 4))
    B[:2, :2], B[2:, 2:] = 1.1 * _rot(0.7), 0.6 * _rot(2.0)
    params = {**params, "W_hh": jnp.asarray(V @ B @ V.T, F32)}
    got = jit_lyapunov(cell, params, xs, carry, burn_in=20)
    np.testing.assert_allclose(got, np.log([1.1, 1.1, 0.6, 0.6]), atol=1e-4)


def test_lyapunov_spectrum_random_tanh_network_order_to_chaos():
    """s_t = tanh(g s_{t-1} @ W), W ~ N(0, 1/N): stable for g = 0.5, chaotic for g = 2.

    (Mean-field transition at g = 1. At N = 64 a few draws of W settle on a quasi-periodic orbit with
    lambda_1 ~ 0 at g = 2; this seed is a typical one, lambda_1 ~ 0.14.)
    """
    N = 64
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N, N)) / np.sqrt(N)
    cell, params = _elman(N, "tanh", input_size=1)
    params["b"] = jnp.zeros((N,), F32)
    xs = jnp.zeros((500, 1), F32)
    carry = jnp.asarray(rng.standard_normal(N), F32)  # s = 0 is a fixed point: start away from it
    lyap = functools.partial(jit_lyapunov, cell, k=4, burn_in=100)
    stable = lyap({**params, "W_hh": jnp.asarray(0.5 * W, F32)}, xs, carry)
    chaotic = lyap({**params, "W_hh": jnp.asarray(2.0 * W, F32)}, xs, carry)
    assert np.all(np.diff(np.asarray(stable)) <= 0) and np.all(np.diff(np.asarray(chaotic)) <= 0)
    assert stable[0] < -0.3  # ~ log(0.5 rho(W)) ~ log 0.5 at the fixed point
    assert chaotic[0] > 0.05
    assert dg.kaplan_yorke_dimension(stable) == 0
    assert dg.kaplan_yorke_dimension(chaotic) == 4  # more exponents needed: all partial sums >= 0


def test_kaplan_yorke_dimension():
    cases = [
        ([1.0, -2.0], 1.5),
        ([-1.0, -2.0], 0.0),
        ([0.5, 0.2], 2.0),
        ([1.0, 0.5, -1.0, -2.0], 3.25),  # S = 1, 1.5, 0.5, -1.5 -> j = 3, 3 + 0.5 / 2
        ([-2.0, 1.0, -1.0, 0.5], 3.25),  # any order
        ([0.0, -1.0], 1.0),
        ([0.5, -np.inf], 1.0),
        ([0.3], 1.0),
        ([-0.3], 0.0),
    ]
    jitted = jax.jit(dg.kaplan_yorke_dimension)
    for exponents, want in cases:
        lam = jnp.asarray(exponents, F32)
        np.testing.assert_allclose(dg.kaplan_yorke_dimension(lam), want, rtol=1e-6, err_msg=str(exponents))
        np.testing.assert_allclose(jitted(lam), want, rtol=1e-6, err_msg=str(exponents))
    assert dg.kaplan_yorke_dimension(jnp.asarray([1.0, -2.0], F32)).dtype == F32


# --------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_before_tracing():
    W = jnp.ones((3, 3), F32)
    with pytest.raises(ValueError, match=r"spectral_radius: W must be a square matrix .*got shape \(3, 4\)"):
        dg.spectral_radius(jnp.ones((3, 4), F32))
    with pytest.raises(ValueError, match=r"W must be a square matrix .*rank 3"):
        dg.spectral_radius(jnp.ones((2, 3, 3), F32))
    with pytest.raises(TypeError, match="real-valued"):
        dg.spectral_radius(jnp.ones((3, 3), jnp.complex64))
    with pytest.raises(ValueError, match="method must be 'eig'.*got 'qr'"):
        dg.spectral_radius(W, method="qr")
    with pytest.raises(ValueError, match="num_iters must be an int >= 1; got 0"):
        dg.spectral_radius(W, method="power", num_iters=0)
    with pytest.raises(ValueError, match=r"max_singular_value: W must be a matrix \(m, n\)"):
        dg.max_singular_value(jnp.ones((3,), F32))

    cell, params = _elman(3, input_size=2)
    lstm = jr.lstm(3)
    with pytest.raises(ValueError, match="gradient_bound: .*Elman-type cells.*'lstm'.*jacobian_norms"):
        dg.gradient_bound(lstm, lstm.init(jax.random.PRNGKey(0), 2, F32), 3)
    with pytest.raises(ValueError, match="activation must be one of"):
        dg.gradient_bound(cell, params, 3, "softplus")
    custom = jr.elman(3, jnp.sin)  # the bound needs gamma_phi for a custom activation
    with pytest.raises(ValueError, match="custom activation .* pass activation=gamma_phi"):
        dg.gradient_bound(custom, custom.init(jax.random.PRNGKey(0), 2, F32), 3)
    with pytest.raises(ValueError, match="max_lag must be an int >= 0; got -1"):
        dg.gradient_bound(cell, params, -1)
    with pytest.raises(TypeError, match="cell must be a jaxrnn Cell"):
        dg.gradient_bound("elman", params, 3)

    xs = jnp.zeros((5, 2), F32)
    with pytest.raises(
        ValueError, match=r"step_jacobians: xs must have shape \(T, 2\).*got shape \(5, 4, 2\)"
    ):
        dg.step_jacobians(cell, params, jnp.zeros((5, 4, 2), F32))
    with pytest.raises(ValueError, match=r"xs must have shape \(T, \*batch, features\).*rank 1"):
        dg.lyapunov_spectrum(cell, params, jnp.zeros((5,), F32))
    with pytest.raises(ValueError, match=r"xs must have shape \(T, \*batch, 2\).*input_size=2.*got \(5, 3\)"):
        dg.jacobian_norms(cell, params, jnp.zeros((5, 3), F32))
    with pytest.raises(ValueError, match="empty time axis"):
        dg.step_jacobians(cell, params, jnp.zeros((0, 2), F32))
    with pytest.raises(ValueError, match=r"carry leaves must have shapes \[\(3,\)\].*got \[\(4, 3\)\]"):
        dg.step_jacobians(cell, params, xs, jnp.zeros((4, 3), F32))
    for bad in (1, "nuc", True):
        with pytest.raises(ValueError, match="jacobian_norms: ord must be 2 .* or 'fro'"):
            dg.jacobian_norms(cell, params, xs, ord=bad)
    with pytest.raises(ValueError, match="k must be at most n = 3.*got k=4"):
        dg.lyapunov_spectrum(cell, params, xs, k=4)
    with pytest.raises(ValueError, match="k must be an int >= 1; got 0"):
        dg.lyapunov_spectrum(cell, params, xs, k=0)
    with pytest.raises(ValueError, match="reorth_every must be an int >= 1; got 0"):
        dg.lyapunov_spectrum(cell, params, xs, reorth_every=0)
    with pytest.raises(ValueError, match="reorth_every must be an int >= 1; got -2"):
        dg.lyapunov_spectrum(cell, params, xs, reorth_every=-2)
    with pytest.raises(TypeError, match="reorth_every must be an int"):
        dg.lyapunov_spectrum(cell, params, xs, reorth_every=1.5)
    with pytest.raises(ValueError, match=r"burn_in must be smaller than the number of steps T = 5 .*; got 5"):
        dg.lyapunov_spectrum(cell, params, xs, burn_in=5)
    with pytest.raises(ValueError, match=r"kaplan_yorke_dimension: exponents must be a non-empty 1-D"):
        dg.kaplan_yorke_dimension(jnp.zeros((2, 2), F32))
    with pytest.raises(ValueError, match=r"non-empty 1-D array \(n,\); got shape \(0,\)"):
        dg.kaplan_yorke_dimension(jnp.zeros((0,), F32))


def test_all_is_documented():
    assert set(dg.__all__) == {
        "spectral_radius",
        "max_singular_value",
        "gradient_bound",
        "gradient_flow",
        "step_jacobians",
        "jacobian_norms",
        "lyapunov_spectrum",
        "kaplan_yorke_dimension",
    }
    for name in dg.__all__:
        doc = getattr(dg, name).__doc__
        assert doc and "Args:" in doc and "Returns:" in doc and "Raises:" in doc, name


# --------------------------------------------------------------------------------------------------
# state_gradients and gradient_flow


def test_state_gradients_and_gradient_flow_against_brute_force():
    """||dL/ds_k|| from the probes equals the norm of jax.grad of the loss w.r.t. s_k, found by
    rerunning the tail of the sequence from a perturbed s_k in a Python loop."""
    cell = jr.lstm(3)
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    params = jax.tree.map(lambda a: a.astype(jnp.float64) + 0.2, cell.init(k1, 2))
    xs = jax.random.normal(k2, (6, 2, 2), jnp.float64)

    def loss_fn(ys):
        return jnp.sum(ys[-1] ** 2) + 0.1 * jnp.sum(ys**2)

    loss, ys, g = jr.state_gradients(cell, params, xs, loss_fn)
    np.testing.assert_allclose(loss, loss_fn(jr.unroll(cell, params, xs)[1]), rtol=1e-12)

    def states():
        s, out = cell.initial_carry(params, (2,)), []
        for t in range(6):
            s = cell.step(params, s, xs[t])
            out.append(s)
        return out

    traj = states()
    for k in range(6):

        def tail(s_k, k=k):
            s, outs = s_k, list(ys[:k]) + [cell.output(s_k)]
            for t in range(k + 1, 6):
                s = cell.step(params, s, xs[t])
                outs.append(cell.output(s))
            return loss_fn(jnp.stack(outs))

        want = jax.grad(tail)(traj[k])
        jax.tree.map(lambda a, b, k=k: np.testing.assert_allclose(a[k], b, rtol=1e-10, atol=1e-12), g, want)
        norms = np.sqrt(sum(np.sum(np.asarray(leaf) ** 2, axis=-1) for leaf in want))  # (B,)
        curve = jr.gradient_flow(cell, params, xs, loss_fn, reduce="none")
        np.testing.assert_allclose(curve[k], norms, rtol=1e-10)
    mean_curve = jax.jit(lambda p: jr.gradient_flow(cell, p, xs, loss_fn))(params)
    np.testing.assert_allclose(mean_curve, curve.mean(axis=1), rtol=1e-12)


def test_state_gradients_return_states_like_a_python_loop():
    cell = jr.lstm(3)
    params = cell.init(jax.random.PRNGKey(7), 2, jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(8), (5, 2, 2), jnp.float64)
    lengths = jnp.array([5, 3])
    loss_fn = lambda ys: jnp.sum(ys**2)  # noqa: E731
    loss, ys, g, states = jr.state_gradients(cell, params, xs, loss_fn, lengths=lengths, return_states=True)
    loss2, ys2, g2 = jr.state_gradients(cell, params, xs, loss_fn, lengths=lengths)
    np.testing.assert_allclose(loss, loss2, rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), (ys, g), (ys2, g2))
    s = cell.initial_carry(params, (2,))
    for t in range(5):
        s = cell.step(params, s, xs[t])
        for b in range(2):
            want = jax.tree.map(lambda leaf, b=b, t=t: leaf[b] if t < lengths[b] else 0 * leaf[b], s)
            jax.tree.map(
                lambda a, w, t=t, b=b: np.testing.assert_allclose(a[t, b], w, rtol=1e-12), states, want
            )
    # time_axis=1: ys come back batch-major, states stay time first
    _, ys_b, g_b, states_b = jr.state_gradients(
        cell,
        params,
        jnp.moveaxis(xs, 0, 1),
        lambda y: loss_fn(y),
        lengths=lengths,
        return_states=True,
        time_axis=1,
    )
    np.testing.assert_allclose(ys_b, jnp.moveaxis(ys, 0, 1), rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), (g_b, states_b), (g, states))
    with pytest.raises(TypeError, match="return_states must be a bool"):
        jr.state_gradients(cell, params, xs, loss_fn, return_states="yes")


def test_gradient_flow_vanishes_for_a_contracting_linear_rnn():
    cell = jr.elman(2, "identity")
    params = {
        "W_xh": jnp.eye(2, dtype=jnp.float64),
        "W_hh": 0.5 * jnp.eye(2, dtype=jnp.float64),
        "b": jnp.zeros((2,), jnp.float64),
    }
    xs = jnp.ones((8, 2), jnp.float64)
    curve = jr.gradient_flow(cell, params, xs, lambda ys: jnp.sum(ys[-1]))  # no batch dims
    np.testing.assert_allclose(curve, np.sqrt(2.0) * 0.5 ** np.arange(7, -1, -1), rtol=1e-12)


def test_gradient_flow_is_zero_on_padding_and_checks_its_arguments():
    cell = jr.elman(3)
    params = cell.init(jax.random.PRNGKey(0), 2, jnp.float32)
    xs = jnp.ones((5, 2, 2), jnp.float32)
    curve = jr.gradient_flow(
        cell, params, xs, lambda ys: jnp.sum(ys), reduce="none", lengths=jnp.array([5, 2])
    )
    assert np.all(curve[2:, 1] == 0) and np.all(curve[:, 0] > 0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        jr.gradient_flow(cell, params, xs, lambda ys: ys)
    with pytest.raises(ValueError, match="reduce"):
        jr.gradient_flow(cell, params, xs, jnp.sum, reduce="max")
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        jr.state_gradients(cell, params, xs, 3.0)
