"""experiments/filtering.py end to end (smoke preset): files, table, the optimum lines against plain numpy
Kalman / forward-backward / Viterbi recursions on the same held-out sequences, resume, bad input."""

import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
from helpers import is_png

from experiments import filtering, runner


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = filtering.main(["--preset", "smoke", "--run-root", root, "--quiet"])
    config = runner.config_cli(filtering.Config, filtering.PRESETS, ["--preset", "smoke"])
    return result, config, out.getvalue()


def test_smoke_writes_results_runs_plots_and_table(smoke):
    result, config, out = smoke
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    assert [(r["part"], r["cell"], r["seed"], r["steps"]) for r in saved["runs"]] == [
        ("lds", "gru", 0, 3),
        ("hmm", "gru", 0, 3),
    ]
    assert is_png(os.path.join(result.sweep_dir, "summary.png"))
    for r in saved["runs"]:
        assert os.path.basename(os.path.dirname(r["run_dir"])) == f"{r['part']}-gru-seed0"
        rows = runner.read_jsonl(os.path.join(r["run_dir"], "metrics.jsonl"))
        assert [row["step"] for row in rows] == [2, 3]
        assert is_png(os.path.join(r["run_dir"], "losses.png"))
        assert os.listdir(os.path.join(r["run_dir"], "checkpoints"))
        # the tabled value is the held-out metric of the last logged step; the gap is to the optimum
        value = r["test_mse"] if r["part"] == "lds" else r["test_log_loss"]
        opt = (
            saved["optima"]["lds"]["kalman"]
            if r["part"] == "lds"
            else saved["optima"]["hmm"]["filter_log_loss"]
        )
        assert value == rows[-1]["eval_loss"] and math.isfinite(value)
        assert r["gap"] == pytest.approx(value - opt) and rows[-1]["eval_gap"] == pytest.approx(value - opt)
        if r["part"] == "hmm":
            assert r["test_accuracy"] == pytest.approx(1 - rows[-1]["eval_error"])
    assert saved["table"] == json.loads(json.dumps(result.table))
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("part ")))
    assert lines[header].split()[:3] == ["part", "method", "held-out"] and "gap %" in lines[header]
    body = lines[header + 2 : header + 2 + len(result.table)]
    for row, line in zip(result.table, body):
        assert line.split()[0] == row["part"] and f"  {row['method']}  " in line
        assert f"  {filtering._fmt(row['value'])}  " in line
    assert body[0].split()[:2] == ["lds", "gru"] and "Kalman filter C A m_t (optimum)" in body[1]
    assert any(line.startswith("hmm   Viterbi path") for line in body)
    assert lines[header + 2 + len(result.table)] == filtering.TABLE_NOTE
    assert lines[-1] == f"results: {result.sweep_dir}/results.json"


def test_lds_system_is_stable_stationary_and_seeded():
    c = filtering.Config(rho=0.9, states=5, observations=3, lds_seed=4)
    p = {k: np.asarray(v, np.float64) for k, v in filtering.lds_system(c).items()}
    assert p["A"].shape == (5, 5) and p["C"].shape == (3, 5) and p["R"].shape == (3, 3)
    assert np.max(np.abs(np.linalg.eigvals(p["A"]))) == pytest.approx(0.9, rel=1e-5)
    np.testing.assert_allclose(p["P0"], p["A"] @ p["P0"] @ p["A"].T + p["Q"], rtol=1e-4, atol=1e-5)
    again = filtering.lds_system(c)
    assert all(np.array_equal(again[k], p[k].astype(np.float32)) for k in p)
    other = filtering.lds_system(filtering.Config(rho=0.9, states=5, observations=3, lds_seed=5))
    assert not np.allclose(other["A"], p["A"])


def numpy_kalman_means(p, ys):
    """Filtered means ``E[x_t | y_0..y_t]`` and covariances of one sequence ``ys (T, m)``, float64."""
    A, C, Q, R = p["A"], p["C"], p["Q"], p["R"]
    m, P = p["mu0"], p["P0"]
    means, covs = [], []
    for t, y in enumerate(ys):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        S = C @ P @ C.T + R
        K = P @ C.T @ np.linalg.inv(S)
        m, P = m + K @ (y - C @ m), (np.eye(len(m)) - K @ C) @ P
        means.append(m)
        covs.append(P)
    return np.array(means), np.array(covs)


def test_lds_optimum_is_a_numpy_kalman_filters(smoke):
    result, config, _ = smoke
    p = {k: np.asarray(v, np.float64) for k, v in filtering.lds_system(config).items()}
    ys = np.asarray(filtering.lds_test_set(config), np.float64)  # (T, n_test, m)
    assert ys.shape == (config.length, config.n_test, config.observations)
    sq, expected, mem1, zero, last = [], [], [], [], []
    sigma0 = p["C"] @ p["P0"] @ p["C"].T + p["R"]
    W = p["C"] @ p["A"] @ p["P0"] @ p["C"].T @ np.linalg.inv(sigma0)
    for b in range(ys.shape[1]):
        y = ys[:, b]
        means, covs = numpy_kalman_means(p, y)
        sq.append(((y[1:] - means[:-1] @ (p["C"] @ p["A"]).T) ** 2).sum(-1))
        expected += [
            np.trace(p["C"] @ (p["A"] @ P @ p["A"].T + p["Q"]) @ p["C"].T + p["R"]) for P in covs[:-1]
        ]
        mem1.append(((y[1:] - y[:-1] @ W.T) ** 2).sum(-1))
        zero.append((y[1:] ** 2).sum(-1))
        last.append(((y[1:] - y[:-1]) ** 2).sum(-1))
    opt = result.optima["lds"]
    assert opt["kalman"] == pytest.approx(np.mean(sq), rel=1e-4)
    assert opt["kalman_expected"] == pytest.approx(np.mean(expected), rel=1e-4)
    assert opt["memory1"] == pytest.approx(np.mean(mem1), rel=1e-4)
    assert opt["zero"] == pytest.approx(np.mean(zero), rel=1e-5)
    assert opt["last_value"] == pytest.approx(np.mean(last), rel=1e-5)


def test_hmm_optimum_is_a_numpy_forward_backward_and_viterbi(smoke):
    result, config, _ = smoke
    pi = np.array(filtering.CASINO["initial"])
    A = np.array(filtering.CASINO["transition"])
    E = np.array(filtering.CASINO["emission"])
    z, rolls = (np.asarray(a) for a in filtering.hmm_test_set(config))  # (T, n_test)
    assert z.shape == rolls.shape == (config.length, config.n_test)
    assert set(np.unique(rolls)) <= set(range(6)) and set(np.unique(z)) <= {0, 1}
    T, B = z.shape
    f_ll, s_ll, f_ok, s_ok, v_ok = [], [], [], [], []
    for b in range(B):
        y, zb = rolls[:, b], z[:, b]
        alpha = np.zeros((T, 2))
        a = pi * E[:, y[0]]
        alpha[0] = a / a.sum()
        for t in range(1, T):
            a = (alpha[t - 1] @ A) * E[:, y[t]]
            alpha[t] = a / a.sum()
        beta = np.ones((T, 2))
        for t in range(T - 2, -1, -1):
            beta[t] = A @ (E[:, y[t + 1]] * beta[t + 1])
            beta[t] /= beta[t].sum()
        gamma = alpha * beta
        gamma /= gamma.sum(1, keepdims=True)
        delta, back = np.log(pi) + np.log(E[:, y[0]]), []
        for t in range(1, T):
            scores = delta[:, None] + np.log(A)
            back.append(scores.argmax(0))
            delta = scores.max(0) + np.log(E[:, y[t]])
        path = [int(delta.argmax())]
        for bp in reversed(back):
            path.append(int(bp[path[-1]]))
        path = np.array(path[::-1])
        f_ll.append(-np.log(alpha[np.arange(T), zb]))
        s_ll.append(-np.log(gamma[np.arange(T), zb]))
        f_ok.append(alpha.argmax(1) == zb)
        s_ok.append(gamma.argmax(1) == zb)
        v_ok.append(path == zb)
    opt = result.optima["hmm"]
    assert opt["filter_log_loss"] == pytest.approx(np.mean(f_ll), rel=1e-5)
    assert opt["smoother_log_loss"] == pytest.approx(np.mean(s_ll), rel=1e-5)
    assert opt["filter_accuracy"] == pytest.approx(np.mean(f_ok))
    assert opt["smoother_accuracy"] == pytest.approx(np.mean(s_ok))
    assert opt["viterbi_accuracy"] == pytest.approx(np.mean(v_ok))
    assert opt["prior_log_loss"] == pytest.approx(np.mean(-np.log(pi[z])), rel=1e-5)
    assert opt["always_fair_accuracy"] == pytest.approx(np.mean(z == 0))


def test_resume_of_a_finished_run_trains_nothing_and_gives_the_same_results(smoke):
    result = smoke[0]
    with contextlib.redirect_stdout(io.StringIO()):
        again = filtering.main(["--resume", result.sweep_dir, "--quiet"])
    assert again.sweep_dir == result.sweep_dir
    assert [r["run_dir"] for r in again.runs] == [r["run_dir"] for r in result.runs]
    assert again.table == result.table


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--parts", "kalman"], ["--parts", "kalman", "lds, hmm"]),
        (["--cells", "gru", "gru"], ["--cells", "at most once"]),
        (["--rho", "1.0"], ["--rho", "< 1"]),
        (["--obs-noise", "0"], ["--obs-noise", "> 0"]),
        (["--length", "1"], ["--length", ">= 2"]),
        (["--lr", "nan"], ["--lr", "finite number"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: filtering.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)
