"""experiments/temporal_order.py: the Figure 7 sweep end to end (tiny), its engine against runner.train,
the paper's inits and optimizers, the success bookkeeping, and bad input."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import runner, tasks
from experiments import temporal_order as to

TINY = ["--preset", "smoke", "--quiet"]


def _files(run_dir):
    return sorted(os.listdir(run_dir))


def test_smoke_sweep_writes_results_plots_and_table(tmp_path, capsys):
    # --success 1.5: every error (<= 1) is below it, so each seed stops at its first check (step 2 of 4)
    argv = TINY + ["--inits", "basic_tanh", "smart_tanh", "--methods", "MSGD-CR", "--success", "1.5"]
    argv += ["--run-root", str(tmp_path)]
    out = to.main(argv)
    printed = capsys.readouterr().out
    run_dir = out["run_dir"]
    assert {"results.json", "points.jsonl", "success_basic_tanh.png", "success_smart_tanh.png"} <= set(
        _files(run_dir)
    )
    res = json.load(open(os.path.join(run_dir, "results.json")))
    assert len(res["points"]) == 2 and res["status"].startswith("2 of 2 points complete")
    for p in res["points"]:
        assert p["steps_done"] == 2 and p["success_steps"] == [2, 2] and p["rate"] == 1.0
        assert p["paper"] is None  # the figure has no marker at L = 10
    assert "basic_tanh  MSGD-CR    10" in printed and "ours" in printed and "paper" in printed
    # per-seed logs: one row per seed per check (every 2 updates), until success or the cap
    rows = runner.read_jsonl(os.path.join(run_dir, "points", "basic_tanh_MSGD-CR_10.jsonl"))
    assert sorted((r["seed"], r["step"]) for r in rows) == [(0, 2), (1, 2)]

    # --resume skips the finished points: nothing is trained again
    points_path = os.path.join(run_dir, "points.jsonl")
    lines = open(points_path).readlines()
    again = to.main(
        TINY + ["--resume", run_dir, "--inits", "basic_tanh", "smart_tanh", "--methods", "MSGD-CR"]
    )
    assert open(points_path).readlines() == lines
    assert [p["rate"] for p in again["points"]] == [p["rate"] for p in res["points"]]

    # a kill in the middle of writing the second point: --resume cuts the torn line off (and says so),
    # redoes that point and appends it on a line of its own
    with open(points_path, "w") as f:
        f.write(lines[0] + lines[1][: len(lines[1]) // 2])
    capsys.readouterr()
    redone = to.main(
        TINY + ["--resume", run_dir, "--inits", "basic_tanh", "smart_tanh", "--methods", "MSGD-CR"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {points_path}: its last line is torn"), err
    rows = [json.loads(line) for line in open(points_path)]  # every line parses
    assert [(p["init"], p["rate"]) for p in rows] == [("basic_tanh", 1.0), ("smart_tanh", 1.0)]
    assert rows[1] == {**redone["points"][1]} and redone["points"][1]["wall_s"] >= 0


def test_diverged_seeds_are_recorded_and_exit_3_unless_allowed(tmp_path, capsys):
    """SGD with learning rate 1e38: the parameters overflow and the loss becomes infinite."""
    argv = TINY + ["--inits", "basic_tanh", "--methods", "MSGD", "--lr", "1e38", "--run-root", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: to.main(argv))
    assert e.value.code == 3
    captured = capsys.readouterr()
    (run_dir,) = (tmp_path / "temporal_order").iterdir()
    res = json.load(open(run_dir / "results.json"))  # everything is written before the exit
    (point,) = res["points"]
    assert point["diverged_at"] == [4, 4] and point["rate"] == 0.0 and point["complete"]
    assert "diverged at [4, 4]" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged in 2 of 2 runs: "), err
    for words in ("basic_tanh/MSGD/10 seed 0 at step 4", "seed 1 at step 4", "--allow-divergence"):
        assert words in err[0]
    rows = runner.read_jsonl(str(run_dir / "points" / "basic_tanh_MSGD_10.jsonl"))
    assert [r.get("diverged", False) for r in rows if r["step"] == 4] == [True, True]
    # with --allow-divergence the same results are accepted: a warning line, exit status 0
    runner.run_cli(lambda: to.main(["--resume", str(run_dir), "--allow-divergence", "--quiet"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: training diverged in 2 of 2 runs"), err


def test_engine_matches_runner_train(tmp_path):
    """The vmapped, chunked loop gives runner.train's parameters for each seed (MSGD-CR: Omega too)."""
    cfg = to.Config(
        steps=6,
        seeds=2,
        hidden=4,
        batch_size=4,
        eval_every=3,
        eval_size=8,
        success=0.0,
        run_root=str(tmp_path),
    )
    point, params = to.train_point(cfg, "smart_tanh", "MSGD-CR", 10, keep_params=True)
    assert point["steps_done"] == 6 and point["success_steps"] == [None, None] and point["rate"] == 0.0
    assert point["complete"] and len(point["best_error"]) == 2
    fns, opt = to._point_functions(cfg, "smart_tanh", "MSGD-CR", 10)
    fns = {k: fns[k] for k in ("init_fn", "loss_fn", "sample_fn")}
    ref = runner.train(dataclasses.replace(cfg, seed=1, quiet=True), name="ref", optimizer=opt, **fns)
    got = jax.tree.map(lambda a: a[1], params)  # seed index 1 = config.seed + 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), got, ref.params)
    before = fns["init_fn"](jax.random.split(jax.random.PRNGKey(1), 3)[0])
    assert not np.allclose(got["cell"]["W_hh"], before["cell"]["W_hh"])  # it did train


def test_paper_inits():
    key = jax.random.PRNGKey(0)
    sig = to.make_cell("sigmoid", 50).init(key, 6)
    assert sig["W_hh"].dtype == jnp.float32
    np.testing.assert_allclose(np.std(np.asarray(sig["W_hh"])), 0.01, rtol=0.05)
    np.testing.assert_allclose(np.std(np.asarray(sig["W_xh"])), 0.01, rtol=0.15)
    assert to.make_cell("sigmoid", 50).hparams["activation"] == "sigmoid"
    basic = to.make_cell("basic_tanh", 50).init(key, 6)
    np.testing.assert_allclose(np.std(np.asarray(basic["W_hh"])), 0.1, rtol=0.05)
    np.testing.assert_array_equal(basic["b"], 0.0)
    smart = to.make_cell("smart_tanh", 50)
    assert smart.hparams["activation"] == "tanh"
    w = np.asarray(smart.init(key, 6)["W_hh"], np.float64)
    np.testing.assert_array_equal((w != 0).sum(axis=1), 15)  # the code: 15 per row (outgoing, h @ W_hh)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w)).max(), 0.95, rtol=1e-4)
    w_in = np.asarray(to.make_cell("smart_tanh", 50, "incoming").init(key, 6)["W_hh"])
    np.testing.assert_array_equal((w_in != 0).sum(axis=0), 15)  # the paper's text: per column
    assert to.out_std("basic_tanh") == 0.1 and to.out_std("sigmoid") == to.out_std("smart_tanh") == 0.01


def test_optimizers_are_sgd_with_clipping_and_omega():
    params = {"W_hh": jnp.ones((2, 2), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    g = {"W_hh": jnp.full((2, 2), 3.0, jnp.float32), "b": jnp.asarray([4.0, 0.0], jnp.float32)}
    norm = np.sqrt(4 * 9 + 16)  # > 1
    og = {"W_hh": jnp.full((2, 2), 0.5, jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    cases = {
        "MSGD": lambda k, v: -0.01 * v,
        "MSGD-C": lambda k, v: -0.01 * v / norm,
    }
    for method, want in cases.items():
        opt = to.make_optimizer(method, 0.01, 1.0, 4.0)
        upd, _ = opt.update(g, opt.init(params), params)
        for k in g:
            np.testing.assert_allclose(upd[k], want(k, np.asarray(g[k])), rtol=1e-5)
    opt = to.make_optimizer("MSGD-CR", 0.01, 1.0, 4.0)
    upd, _ = opt.update(g, opt.init(params), params, omega_grads=og)
    total = {k: np.asarray(g[k]) + 4.0 * np.asarray(og[k]) for k in g}  # added before clipping
    tnorm = np.sqrt(sum((v**2).sum() for v in total.values()))
    for k in g:
        np.testing.assert_allclose(upd[k], -0.01 * total[k] / tnorm, rtol=1e-5)


def test_build_loss_error_and_omega_grads():
    cell = to.make_cell("basic_tanh", 5)
    task = tasks.temporal_order(min_length=12, max_length=12)
    fns = to.build(cell, task, batch_size=3, w_out_std=0.1, omega=True, eval_size=4, flow_size=2)
    params = fns["init_fn"](jax.random.PRNGKey(1))
    batch = fns["sample_fn"](jax.random.PRNGKey(2))
    loss, aux = jax.jit(fns["loss_fn"])(params, batch)
    # reference: a plain Python loop over the steps, softmax cross-entropy on the last state
    h = np.zeros((3, 5))
    p = jax.tree.map(np.asarray, params)
    for t in range(12):
        h = np.tanh(np.asarray(batch.xs[t]) @ p["cell"]["W_xh"] + h @ p["cell"]["W_hh"] + p["cell"]["b"])
    logits = h @ p["W_out"] + p["b_out"]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    tgt = np.asarray(batch.targets)
    np.testing.assert_allclose(loss, -logp[np.arange(3), tgt].mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["error"], np.mean(logits.argmax(-1) != tgt))
    og = aux["update_args"]["omega_grads"]
    assert float(jnp.abs(og["cell"]["W_hh"]).sum()) > 0  # only W_hh gets Omega's gradient
    for k in ("W_xh", "b"):
        np.testing.assert_array_equal(og["cell"][k], 0.0)
    np.testing.assert_array_equal(og["W_out"], 0.0)
    ev = jax.jit(fns["eval_fn"])(params, jax.random.PRNGKey(3))
    np.testing.assert_allclose(ev["rho"], np.abs(np.linalg.eigvals(p["cell"]["W_hh"])).max(), rtol=1e-3)
    assert 0.0 <= ev["eval_error"] <= 1.0 and ev["omega"] >= 0.0


def test_success_bookkeeping():
    assert to.first_success([0.5, 0.02, 0.009, 0.0], [10, 20, 30, 40], 0.01) == 30
    assert to.first_success([0.5, 0.01], [10, 20], 0.01) is None  # strictly under 1%
    assert to.success_rate([10, None, 30, None, None]) == 0.4
    with pytest.raises(ValueError, match="success_rate: no runs"):
        to.success_rate([])
    pts = [
        {"init": "sigmoid", "method": "MSGD", "length": 50, "rate": 0.5},
        {"init": "sigmoid", "method": "MSGD-CR", "length": 50, "rate": 1.0},
        {"init": "sigmoid", "method": "MSGD", "length": 100, "rate": 0.0},
    ]
    assert to.aggregate(pts) == {"sigmoid": {"MSGD": {50: 0.5, 100: 0.0}, "MSGD-CR": {50: 1.0}}}
    assert to.paper_value("smart_tanh", "MSGD-C", 150) == 0.4
    assert to.paper_value("sigmoid", "MSGD-CR", 250) == 0.8
    assert to.paper_value("basic_tanh", "MSGD-C", 75) == 0.4
    assert to.paper_value("smart_tanh", "MSGD", 33) is None


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--lengths", "5"], "--lengths must be >= 10"),
        (["--inits", "relu"], "--inits: unknown value 'relu'"),
        (["--methods", "Adam"], "--methods: unknown value 'Adam'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--sparse-per", "diagonal"], "--sparse-per: unknown value"),
    ],
)
def test_bad_input(tmp_path, argv, match):
    with pytest.raises(runner.UsageError, match=match):
        to.main(argv + ["--run-root", str(tmp_path), "--quiet"])


def test_unknown_init_and_method_in_building_blocks():
    with pytest.raises(runner.UsageError, match="unknown init 'relu'"):
        to.make_cell("relu", 4)
    with pytest.raises(runner.UsageError, match="unknown method 'SGD'"):
        to.make_optimizer("SGD", 0.01, 1.0, 4.0)


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        to.main(["--help"])
    assert e.value.code == 0
    assert "Figure 7" in capsys.readouterr().out


def test_time_limit_says_how_far_it_got(tmp_path, capsys):
    out = to.main(
        TINY
        + [
            "--inits",
            "sigmoid",
            "--methods",
            "MSGD",
            "MSGD-C",
            "--time-limit",
            "1e-9",
            "--run-root",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert out["points"] == [] and out["status"].startswith("0 of 2 points complete")
    assert "not complete (--time-limit 1e-09 min): sigmoid/MSGD/10, sigmoid/MSGD-C/10" in out["status"]
    assert out["status"] in printed
