"""experiments/forecast.py end to end (smoke preset), each forecast recomputed independently in numpy."""

import contextlib
import io
import json
import math
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import is_png

from experiments import forecast, runner


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = forecast.main(["--preset", "smoke", "--run-root", root, "--quiet"])
    saved = json.load(open(os.path.join(result.run_dir, "results.json")))
    return result, saved["series"]["nile"], out.getvalue()


def runs_of(nile, model):
    return [r for r in nile["runs"] if r["model"] == model]


def split(nile):
    values, n_train = np.array(nile["values"]), nile["n_train"]
    return values, n_train, values[n_train:]


def test_smoke_writes_results_plot_runs_and_table(smoke):
    result, nile, out = smoke
    assert sorted(os.listdir(result.run_dir)) == sorted(
        ["config.json", "results.json", "forecast.png"]
        + [f"nile-{m}-seed0" for m in forecast.TRAINED]
        + ["nile-local_level-full"]
    )
    assert is_png(os.path.join(result.run_dir, "forecast.png"))
    assert (nile["n_train"], nile["n_test"], len(nile["values"])) == (80, 20, 100)
    assert nile["split"] == "train 1871-1950 (80 values), test 1951-1970 (20)"
    assert [r["model"] for r in nile["runs"]] == ["naive", *forecast.MODELS]
    for r in nile["runs"]:
        assert len(r["forecasts"]) == 20 and math.isfinite(r["rmse"]), r["model"]
        if r["model"] in forecast.TRAINED:
            assert r["steps"] == 3 and r["diverged_at"] is None
            assert {"metrics.jsonl", "losses.png", "checkpoints"} <= set(os.listdir(r["run_dir"]))
    # the table: one line per model with the numbers of results.json
    lines = out.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("model ")))
    assert lines[head].split()[:3] == ["model", "RMSE", "MAE"] and "RMSE / naive" in lines[head]
    for row, line in zip(nile["table"], lines[head + 2 : head + 8]):
        assert line.startswith(row["label"]), (row, line)
        cells = line[len(row["label"]) :].split()
        assert cells == [forecast._fmt(row["rmse"]), forecast._fmt(row["mae"])] + [
            f"{row['rmse_ratio']:.3f}",
            f"{row['mae_ratio']:.3f}",
            "1",
        ]
    assert lines[head + 2].startswith("naive (y_t)") and lines[head + 3].startswith("AR(2) by AIC")
    # the check against Durbin & Koopman's variances (the smoke run's 3 updates are far from them)
    check = nile["check"]
    assert lines[head + 8].startswith("nile local level, maximum likelihood on all 100 values")
    assert lines[head + 9] == (
        f"  fitted:    sigma^2_eps = {check['sigma2_eps']:.1f}, sigma^2_eta = {check['sigma2_eta']:.1f} "
        f"(log-likelihood {check['loglik']:.2f})"
    )
    assert lines[head + 10].startswith(
        "  published: sigma^2_eps = 15099, sigma^2_eta = 1469.1 -- Durbin & Koopman"
    )
    assert lines[head + 10].endswith("[RECALL]") and check["steps"] == 3
    assert lines[head + 11].startswith("source tags: [RECALL]")
    assert lines[-1] == f"results: {result.run_dir}/results.json"


def test_naive_rmse_and_ratios(smoke):
    nile = smoke[1]
    values, n_train, test = split(nile)
    (naive,) = runs_of(nile, "naive")
    np.testing.assert_allclose(naive["forecasts"], values[n_train - 1 : -1])
    assert naive["rmse"] == pytest.approx(np.sqrt(np.mean((values[n_train - 1 : -1] - test) ** 2)))
    assert naive["mae"] == pytest.approx(np.mean(np.abs(values[n_train - 1 : -1] - test)))
    for row in nile["table"]:
        assert row["rmse_ratio"] == pytest.approx(row["rmse"] / naive["rmse"])


def numpy_ar(train, p, start):
    """Least squares AR(p) with intercept on rows t >= start of ``train``: (coefficients, intercept, rss)."""
    X = np.stack(
        [train[start - 1 - i : len(train) - 1 - i] for i in range(p)] + [np.ones(len(train) - start)], 1
    )
    coef = np.linalg.lstsq(X, train[start:], rcond=None)[0]
    return coef[:-1], coef[-1], np.sum((train[start:] - X @ coef) ** 2)


def test_ar_order_by_aic_and_forecasts_equal_numpy_lstsq(smoke):
    """Fitted on the raw values (least squares is affine-equivariant, so standardising changes nothing)."""
    nile = smoke[1]
    values, n_train, test = split(nile)
    train, max_order = values[:n_train], 4  # the smoke preset's --ar-max-order
    n = n_train - max_order
    aic = {p: n * np.log(numpy_ar(train, p, max_order)[2] / n) + 2 * (p + 1) for p in range(1, 5)}
    p = min(aic, key=aic.get)
    assert nile["ar_order"] == p
    coef, intercept, _ = numpy_ar(train, p, p)
    expected = [intercept + coef @ values[t - 1 :: -1][:p] for t in range(n_train, len(values))]
    (ar,) = runs_of(nile, "ar")
    np.testing.assert_allclose(ar["forecasts"], expected, rtol=1e-5)
    assert ar["rmse"] == pytest.approx(np.sqrt(np.mean((np.array(expected) - test) ** 2)), rel=1e-5)


def test_local_level_forecasts_equal_a_numpy_kalman_loop(smoke):
    """Diffuse start: m = y_1 with variance sigma2_eps; forecast of y_{t+1} = m_t; in the series' units."""
    nile = smoke[1]
    values, n_train, test = split(nile)
    (ll,) = runs_of(nile, "local_level")
    eps, eta = ll["params"]["sigma2_eps"], ll["params"]["sigma2_eta"]
    m, P, preds = values[0], eps, [values[0]]
    for y in values[1:-1]:
        P = P + eta
        K = P / (P + eps)
        m, P = m + K * (y - m), (1 - K) * P
        preds.append(m)
    np.testing.assert_allclose(ll["forecasts"], preds[n_train - 1 :], rtol=1e-5)


def test_lds_forecasts_equal_a_numpy_kalman_loop(smoke):
    nile = smoke[1]
    values, n_train, _ = split(nile)
    (lds,) = runs_of(nile, "lds")
    p = {k: np.array(v) for k, v in lds["params"].items() if k not in ("units", "eigenvalues_A")}
    x = (values - nile["train_mean"]) / nile["train_std"]
    m, P, preds = p["mu0"], p["P0"], []
    for t, y in enumerate(x[:-1]):
        if t:
            m, P = p["A"] @ m, p["A"] @ P @ p["A"].T + p["Q"]
        S = p["C"] @ P @ p["C"].T + p["R"]
        K = P @ p["C"].T @ np.linalg.inv(S)
        m, P = m + K @ (y - p["C"] @ m), (np.eye(len(m)) - K @ p["C"]) @ P
        preds.append((p["C"] @ p["A"] @ m)[0])
    expected = np.array(preds[n_train - 1 :]) * nile["train_std"] + nile["train_mean"]
    np.testing.assert_allclose(lds["forecasts"], expected, rtol=1e-4)


def test_keep_best_keeps_the_parameters_of_least_validation_loss():
    tx = forecast.keep_best()
    params = {"w": jnp.zeros(2, jnp.float32)}
    state = tx.init(params)
    for step, val in enumerate([3.0, 1.0, 2.0, float("nan"), 1.5]):
        params = {"w": jnp.full(2, float(step), jnp.float32)}
        updates, state = tx.update(params, state, params, val_loss=jnp.float32(val), value=0.0)
        np.testing.assert_array_equal(updates["w"], params["w"])  # the updates pass through
    np.testing.assert_array_equal(state.params["w"], [1.0, 1.0])
    assert (float(state.val_loss), int(state.step), int(state.count)) == (1.0, 1, 5)
    chained = optax.chain(optax.adam(0.1), forecast.keep_best())
    assert isinstance(chained, optax.GradientTransformationExtraArgs)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--series", "elnino"], ["--series", "elnino", "nile, sunspots"]),
        (["--models", "arima"], ["--models", "arima"]),
        (["--models", "ar", "ar"], ["--models", "at most once"]),
        (["--test-fraction", "1"], ["--test-fraction", "(0, 1)"]),
        (["--test-fraction", "0.999"], ["--test-fraction", "0 training"]),
        (["--val-fraction", "0.97", "--series", "nile"], ["--val-fraction", "too few"]),
        (["--lr", "nan"], ["--lr", "finite"]),
        (["--lstm-hidden", "0"], ["--lstm-hidden", ">= 1"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: forecast.main(argv + ["--run-root", str(tmp_path)]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "forecast").exists()  # refused before any run directory


def test_a_diverged_run_is_recorded_and_exits_3(tmp_path, capsys):
    """Adam with learning rate 1e30: after one update the NARX output overflows, the loss is infinite."""
    argv = ["--preset", "smoke", "--models", "narx", "--lr", "1e30", "--run-root", str(tmp_path), "--quiet"]
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: forecast.main(argv))
    assert e.value.code == 3
    (run_dir,) = (tmp_path / "forecast").iterdir()
    (narx,) = runs_of(json.load(open(run_dir / "results.json"))["series"]["nile"], "narx")  # written first
    assert narx["diverged_at"] == 2 and narx["steps"] == 2 and math.isnan(narx["rmse"])
    captured = capsys.readouterr()
    assert any(
        line.startswith("NARX(q=2, H=3)") and "nan (1 diverged)" in line for line in captured.out.splitlines()
    )
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: training diverged in 1 of 1 runs: nile-narx-seed0 at step 2"), last
