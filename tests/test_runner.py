"""experiments/runner.py and experiments/plots.py: CLI, logging, checkpoints and resume, sharding, plots.

The experiment under test is tests/runner_toy.py (an Elman RNN with 4 units, T = 5). Subprocess tests
run it as a script, on the CPU, with a persistent compilation cache, as a user would.
"""

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import typing
from subprocess import PIPE

import jax
import numpy as np
import pytest
from flax import serialization

from experiments import plots, runner

sys.path.insert(0, os.path.dirname(__file__))
import runner_toy as toy  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "runner_toy.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path_factory.mktemp("jaxcache"))
    e = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache}
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    # XLA_FLAGS pass through (make test's compile-time flags); the device count is the four-device test's
    e["XLA_FLAGS"] = " ".join(f for f in e.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return e


def run_script(args, env, **kw):
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, **kw)


def rows_without_time(path):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in runner.read_jsonl(path)]


def final_state(run_dir):
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    step = max(runner._ckpt_steps(ckpt_dir))
    return runner.load_checkpoint(runner._ckpt_path(ckpt_dir, step))


def assert_one_line_error(stderr, *words):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def cli(*argv, **kw):
    return runner.config_cli(toy.Config, toy.PRESETS, list(argv), **kw)


def test_cli_defaults_preset_and_overrides():
    assert cli() == toy.Config()
    quick = cli("--preset", "quick")
    assert (quick.steps, quick.batch_size, quick.log_every, quick.preset) == (12, 8, 2, "quick")
    assert quick.lr == toy.Config().lr  # fields the preset does not name keep their defaults
    # explicit options override the preset, wherever they stand
    for argv in (["--preset", "quick", "--steps", "3"], ["--steps", "3", "--preset", "quick"]):
        c = cli(*argv)
        assert (c.steps, c.batch_size) == (3, 8)


def test_cli_types_bools_tuples_optionals():
    c = cli(
        "--no-evaluate", "--quiet", "--widths", "3", "4", "--clip", "0.5", "--lr", "1e-3", "--task", "last"
    )
    assert (c.evaluate, c.quiet, c.widths, c.clip, c.lr, c.task) == (False, True, (3, 4), 0.5, 1e-3, "last")
    assert cli("--evaluate").evaluate is True and cli("--no-quiet").quiet is False
    assert cli("--clip", "none").clip is None and cli("--clip", "2").clip == 2.0
    assert cli("--widths").widths == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 1


def test_cli_help_lists_fields_defaults_and_presets(capsys):
    with pytest.raises(SystemExit) as e:
        cli("--help", description=toy.__doc__)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "an Elman RNN regressing" in out
    for text in ("--batch-size", "(default: 32)", "--no-evaluate", "sequence length T", "{sum, last}"):
        assert text in out, text
    assert "quick: --steps 12, --batch-size 8, --log-every 2" in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--preset", "bogus"], ["--preset", "bogus", "quick, paper"]),
        (["--length", "-3"], ["--length", ">= 1", "-3"]),
        (["--task", "bogus"], ["--task", "bogus", "sum, last"]),
        (["--lr", "abc"], ["--lr", "abc"]),
        (["--lr", "nan"], ["--lr", "finite number", "nan"]),
        (["--lr", "inf"], ["--lr", "finite number", "inf"]),
        (["--lr=-inf"], ["--lr", "finite number", "-inf"]),
        (["--lr", "1e400"], ["--lr", "finite number", "1e400"]),  # overflows to inf
        (["--clip", "NaN"], ["--clip", "finite number", "NaN"]),  # Optional[float]
        (["--bogus"], ["--bogus"]),
        (["--widths", "1", "x"], ["--widths"]),
        (["--resume", "/nonexistent/run"], ["--resume", "/nonexistent/run"]),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: toy.main(argv))
    assert e.value.code == 2
    assert_one_line_error(capsys.readouterr().err, *words)


def test_cli_presets_must_name_fields():
    with pytest.raises(TypeError, match="preset 'p' sets unknown fields \\['stepz'\\]"):
        runner.config_cli(toy.Config, {"p": {"stepz": 1}}, [])


def test_config_checks_values_when_built_directly():
    with pytest.raises(ValueError, match="--batch-size must be >= 1; got 0"):
        toy.Config(batch_size=0)
    for bad in (math.nan, math.inf, -math.inf):  # presets and saved configs go through here too
        with pytest.raises(runner.UsageError, match=f"--lr must be a finite number; got {bad}"):
            toy.Config(lr=bad)
    with pytest.raises(runner.UsageError, match="--lr must be a finite number; got inf"):
        runner.config_cli(toy.Config, {"p": {"lr": math.inf}}, ["--preset", "p"])


def _float_fields(cls):
    """The options of ``cls`` that hold floats: ``float``, ``tuple[float, ...]``, ``Optional[float]``."""
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        args = {a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis}
        if tp is float or (args and args <= {float}):
            out.append("--" + name.replace("_", "-"))
    return out


def test_every_float_option_of_every_script_must_be_finite():
    from experiments import adding, char_lm, copying, demo, digits, temporal_order

    seen = 0
    for module in (adding, char_lm, copying, demo, digits, temporal_order, toy):
        options = _float_fields(module.Config)
        assert options or module is toy, module.__name__
        for option in options:
            for bad in ("nan", "inf", "-inf", "-nan"):
                with pytest.raises(runner.UsageError) as e:
                    runner.config_cli(module.Config, module.PRESETS, [f"{option}={bad}"])
                msg = str(e.value)
                assert "\n" not in msg and option in msg and "finite number" in msg, (module.__name__, msg)
                seen += 1
    assert seen >= 4 * 20  # lr, clip, momentum, alpha, threshold, dropout, temperatures, ... of 7 scripts


def test_number_converter():
    to_int, to_float = runner.number(int, min=1), runner.number(float, min=0.0)
    assert to_int("3") == 3 and to_float("0") == 0.0 and to_float("1e-3") == 1e-3
    for convert, s, match in [
        (to_int, "0", "must be >= 1; got 0"),
        (to_int, "1.5", "expected an integer; got '1.5'"),
        (to_float, "x", "expected a number; got 'x'"),
        (to_float, "-1", "must be >= 0.0; got -1.0"),
        (to_float, "nan", "must be a finite number; got 'nan'"),
        (to_float, "-Infinity", "must be a finite number; got '-Infinity'"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(match)):
            convert(s)
    with pytest.raises(TypeError, match="int or float"):
        runner.number(str)


def test_run_cli_lets_bugs_through():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        runner.run_cli(main)


def test_script_bad_input_real_process(env, tmp_path):
    unwritable = tmp_path / "a_file"
    unwritable.write_text("")
    args = (["--preset", "bogus"], ["--run-root", str(unwritable)])
    procs = [  # side by side: each process is mostly its imports
        subprocess.Popen([sys.executable, SCRIPT, *a], env=env, stdout=PIPE, stderr=PIPE, text=True)
        for a in args
    ]
    (_, err_preset), (_, err_root) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [2, 2]
    assert_one_line_error(err_preset, "--preset", "bogus")
    assert_one_line_error(err_root, "--run-root", str(unwritable))


def test_nonfinite_option_and_divergence_real_process(env, tmp_path):
    """Exit 2 for ``--lr nan``; exit 3 for a run whose loss becomes infinite (Adam with lr 1e30: the
    parameters are ~1e30 after one update, the squared error overflows), 0 with --allow-divergence."""
    tiny = ["--steps", "6", "--batch-size", "4", "--log-every", "2", "--no-evaluate", "--quiet"]
    cases = {
        "nan": ["--lr", "nan", "--run-root", str(tmp_path / "nan")],
        "diverge": [*tiny, "--lr", "1e30", "--run-root", str(tmp_path / "diverge")],
        "allow": [*tiny, "--lr", "1e30", "--allow-divergence", "--run-root", str(tmp_path / "allow")],
    }
    procs = {
        k: subprocess.Popen(
            [sys.executable, SCRIPT, *a], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k, a in cases.items()
    }
    out = {k: (p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
    out = {k: (code, stdout, stderr) for k, ((stdout, stderr), code) in out.items()}

    code, _, err = out["nan"]
    assert code == 2
    assert_one_line_error(err, "--lr", "finite number", "'nan'")
    assert not (tmp_path / "nan").exists()

    code, _, err = out["diverge"]
    assert code == 3, err
    (run_dir,) = (tmp_path / "diverge" / "toy").iterdir()
    words = ["training diverged", "loss is inf at step 2", str(run_dir), "--allow-divergence"]
    assert_one_line_error(err, *words)
    summary = json.load(open(run_dir / "summary.json"))
    assert (summary["step"], summary["diverged_at"], summary["final"]["diverged"]) == (2, 2, True)
    assert [r["step"] for r in runner.read_jsonl(str(run_dir / "metrics.jsonl"))] == [2]  # stopped there

    code, stdout, err = out["allow"]
    assert code == 0, err
    (run_dir,) = (tmp_path / "allow" / "toy").iterdir()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: training diverged"), err
    assert "step 2" in lines[0] and "--allow-divergence" in lines[0]
    summary = json.load(open(run_dir / "summary.json"))
    assert (summary["step"], summary["diverged_at"]) == (6, 2) and "step 6" in stdout  # trained on


# ------------------------------------------------------------------------------------------------
# A run in-process: files, checkpoints, corruption, resume
# ------------------------------------------------------------------------------------------------

RUN = dict(steps=6, batch_size=4, log_every=2, checkpoint_every=2, keep_checkpoints=3, quiet=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = toy.Config(run_root=str(tmp_path_factory.mktemp("runs")), **RUN)
    return config, runner.train(config, name="toy", **toy.build(config))


def test_run_writes_config_metrics_flow_and_summary(trained):
    config, result = trained
    assert result.step == 6 and result.stopped_at is None
    assert os.path.dirname(result.run_dir) == os.path.join(config.run_root, "toy")
    saved = json.load(open(os.path.join(result.run_dir, "config.json")))
    assert saved["config"] == json.loads(json.dumps(dataclasses.asdict(config)))
    assert saved["jax_version"] == jax.__version__ and saved["devices"] == [str(d) for d in jax.devices()]
    rows = runner.read_jsonl(os.path.join(result.run_dir, "metrics.jsonl"))
    assert rows == result.rows and [r["step"] for r in rows] == [2, 4, 6]
    for key in ("loss", "error", "grad_norm", "eval_error", "rho", "omega", "wall_s"):
        assert all(isinstance(r[key], float) and np.isfinite(r[key]) for r in rows), key
    # the logged values are what they say: rho of the final W_hh, the loss of the logged step's batch
    W = np.asarray(result.params["cell"]["W_hh"], np.float64)
    np.testing.assert_allclose(rows[-1]["rho"], np.max(np.abs(np.linalg.eigvals(W))), rtol=1e-5)
    flows = runner.read_jsonl(os.path.join(result.run_dir, "gradient_flow.jsonl"))
    assert [f["step"] for f in flows] == [0, 6] and all(len(f["norms"]) == config.length for f in flows)
    summary = json.load(open(os.path.join(result.run_dir, "summary.json")))
    assert summary["step"] == 6 and summary["final"] == rows[-1]
    assert runner._ckpt_steps(os.path.join(result.run_dir, "checkpoints")) == [2, 4, 6]


def test_logged_loss_matches_a_plain_loop(trained):
    """Reference: the docstring's plain-Python loop, eagerly, on one device."""
    config, result = trained
    fns = toy.build(config)
    init_key, data_key, _ = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    params = fns["init_fn"](init_key)
    state = fns["optimizer"].init(params)
    losses = {}
    grad_fn = jax.jit(jax.value_and_grad(fns["loss_fn"], has_aux=True))
    for step in range(1, config.steps + 1):
        batch = fns["sample_fn"](jax.random.fold_in(data_key, step))
        (loss, _), grads = grad_fn(params, batch)
        updates, state = fns["optimizer"].update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        losses[step] = float(loss)
    np.testing.assert_allclose([r["loss"] for r in result.rows], [losses[s] for s in (2, 4, 6)], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), result.params, params)


@pytest.mark.parametrize("damage", ["garble", "truncate", "empty"])
def test_corrupt_newest_checkpoint_falls_back_to_previous(trained, tmp_path, damage):
    _, result = trained
    ckpt_dir = str(tmp_path / "checkpoints")
    shutil.copytree(os.path.join(result.run_dir, "checkpoints"), ckpt_dir)
    newest = runner._ckpt_path(ckpt_dir, 6)
    data = bytearray(open(newest, "rb").read())
    if damage == "garble":
        data[len(data) // 2] ^= 0xFF
    data = data[: len(data) // 2] if damage == "truncate" else b"" if damage == "empty" else data
    open(newest, "wb").write(bytes(data))
    warnings = []
    target = {"params": result.params, "opt": result.opt_state}
    step, state, records = runner.latest_checkpoint(ckpt_dir, target, warn=warnings.append)
    assert step == 4 and [r["step"] for r in records["metrics"]] == [2, 4]
    assert len(warnings) == 1 and newest in warnings[0] and "previous" in warnings[0]
    assert os.path.exists(newest + ".corrupt") and not os.path.exists(newest)  # kept for inspection
    # the state is exactly what the step-4 checkpoint holds
    ref = runner.load_checkpoint(runner._ckpt_path(ckpt_dir, 4))[1]
    jax.tree.map(np.testing.assert_array_equal, serialization.to_state_dict(runner._to_host(state)), ref)
    # every checkpoint bad -> None, each reported
    for s in (2, 4):
        open(runner._ckpt_path(ckpt_dir, s), "wb").write(b"junk")
    assert runner.latest_checkpoint(ckpt_dir, target, warn=warnings.append) is None and len(warnings) == 3


def test_resume_after_corruption_reproduces_the_run(trained, capsys):
    config, result = trained
    run_dir = os.path.join(os.path.dirname(result.run_dir), "copy")
    shutil.copytree(result.run_dir, run_dir)
    newest = runner._ckpt_path(os.path.join(run_dir, "checkpoints"), 6)
    open(newest, "r+b").truncate(100)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    with open(metrics, "a") as f:  # a kill in the middle of writing a row
        f.write('{"step": 8, "loss": 0.')
    resumed = runner.train(dataclasses.replace(config, resume=run_dir), name="toy", **toy.build(config))
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is unusable" in err
    (torn,) = [line for line in err.splitlines() if "torn" in line]
    assert torn.startswith(f"warning: {metrics}: its last line is torn") and "last complete line" in torn
    assert all(json.loads(line) for line in open(metrics))  # every line is a whole row
    assert resumed.run_dir == run_dir and resumed.step == 6
    jax.tree.map(
        np.testing.assert_array_equal, runner._to_host(resumed.params), runner._to_host(result.params)
    )
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(resumed.rows) == strip(result.rows)
    assert rows_without_time(os.path.join(run_dir, "metrics.jsonl")) == strip(result.rows)  # no duplicates
    assert runner.read_jsonl(os.path.join(run_dir, "gradient_flow.jsonl")) == runner.read_jsonl(
        os.path.join(result.run_dir, "gradient_flow.jsonl")
    )


def test_stop_fn_stops_and_resume_keeps_it_stopped(tmp_path):
    config = toy.Config(run_root=str(tmp_path), evaluate=False, **RUN)
    fns = toy.build(config)
    result = runner.train(config, name="toy", stop_fn=lambda r: r["step"] >= 4, **fns)
    assert result.stopped_at == 4 and result.step == 4 and result.rows[-1]["stopped"] is True
    assert json.load(open(os.path.join(result.run_dir, "summary.json")))["stopped_at"] == 4
    again = runner.train(dataclasses.replace(config, resume="latest"), name="toy", **fns)
    assert again.step == 4 and again.stopped_at == 4 and again.run_dir == result.run_dir


def test_resume_config_comes_from_the_run(trained, tmp_path):
    config, result = trained
    c = cli("--resume", result.run_dir, name="toy")
    assert c == dataclasses.replace(config, resume=result.run_dir)
    # a preset the run was started with does not override the options given with it
    run_dir = tmp_path / "toy" / "run1"
    run_dir.mkdir(parents=True)
    saved = dataclasses.asdict(toy.Config(**{**toy.PRESETS["quick"], "steps": 5, "preset": "quick"}))
    (run_dir / "config.json").write_text(json.dumps({"config": saved}))
    c2 = cli("--resume", "latest", "--run-root", str(tmp_path), name="toy")
    assert (c2.steps, c2.batch_size, c2.preset, c2.resume) == (5, 8, "quick", "latest")
    assert cli("--resume", "latest", "--run-root", str(tmp_path), "--steps", "7", name="toy").steps == 7
    with pytest.raises(runner.UsageError, match="--lr \\(run: 0.05, now: 0.1\\)"):
        runner.train(dataclasses.replace(c, lr=0.1), name="toy", **toy.build(c))


def test_diverged_run_stops_raises_and_stays_diverged_on_resume(tmp_path, capsys):
    config = toy.Config(run_root=str(tmp_path), lr=1e30, evaluate=False, **RUN)
    fns = toy.build(config)
    with pytest.raises(runner.Diverged, match="the loss is inf at step 2") as e:
        runner.train(config, name="toy", **fns)
    result = e.value.result
    assert (result.step, result.diverged_at, result.stopped_at) == (2, 2, None)
    assert result.rows[-1]["diverged"] is True and not math.isfinite(result.rows[-1]["loss"])
    assert json.load(open(os.path.join(result.run_dir, "summary.json")))["diverged_at"] == 2
    assert runner._ckpt_steps(os.path.join(result.run_dir, "checkpoints")) == [2]
    # resuming a diverged run trains nothing and says so again
    with pytest.raises(runner.Diverged, match="at step 2") as again:
        runner.train(dataclasses.replace(config, resume="latest"), name="toy", **fns)
    assert again.value.result.step == 2 and again.value.result.run_dir == result.run_dir
    # ... unless divergence is allowed: then it trains on (a warning, no exception)
    capsys.readouterr()
    on = runner.train(dataclasses.replace(config, resume="latest", allow_divergence=True), name="toy", **fns)
    assert (on.step, on.diverged_at) == (6, 2) and [r["step"] for r in on.rows] == [2, 4, 6]
    assert capsys.readouterr().err == ""  # the warning was given when it diverged, not again


def test_report_divergence():
    strict, lenient = toy.Config(), toy.Config(allow_divergence=True)
    runner.report_divergence([], 3, strict)  # nothing diverged: nothing happens
    with pytest.raises(runner.Diverged, match=r"diverged in 1 of 3 runs: a at step 4 \(results: r\)"):
        runner.report_divergence(["a at step 4"], 3, strict, "r")
    runner.report_divergence(["a at step 4"], 3, lenient, "r")  # a warning only


def test_run_cli_exit_statuses(capsys):
    def diverges():
        raise runner.Diverged("training diverged: the loss is nan at step 7")

    with pytest.raises(SystemExit) as e:
        runner.run_cli(diverges)
    assert e.value.code == runner.EXIT_DIVERGED == 3
    assert_one_line_error(capsys.readouterr().err, "training diverged", "step 7")


# ------------------------------------------------------------------------------------------------
# Append-only logs: a torn last line is repaired before appending
# ------------------------------------------------------------------------------------------------

BIG = json.dumps({"text": "x" * 70_000})  # longer than repair_jsonl's 64 KiB read block


@pytest.mark.parametrize(
    "before, after",
    [
        ('{"a": 1}\n{"b": 2}\n', '{"a": 1}\n{"b": 2}\n'),  # intact
        ("", ""),
        ('{"a": 1}\n{"b": 2', '{"a": 1}\n'),  # torn
        ('{"a": 1}\n{"b": 2}', '{"a": 1}\n{"b": 2}\n'),  # whole, only its newline missing
        ('{"a', ""),  # the only line torn
        ('{"a": 1}\n\0\0\0\0', '{"a": 1}\n'),  # a crash's zero-filled tail
        ('{"a": 1}\n\n', '{"a": 1}\n'),
        ("\n", ""),
        ('{"a": 1}\n\udcff\udcfe', '{"a": 1}\n'),  # bytes that are not UTF-8
        (f'{BIG}\n{{"b": "{"y" * 70_000}', f"{BIG}\n"),  # a torn line longer than a read block
        (f"{BIG}\n{BIG}\n", f"{BIG}\n{BIG}\n"),
    ],
)
def test_repair_jsonl(tmp_path, before, after):
    path = str(tmp_path / "log.jsonl")
    with open(path, "wb") as f:
        f.write(before.encode("utf-8", "surrogateescape"))
    said = []
    changed = runner.repair_jsonl(path, warn=said.append)
    assert open(path, "rb").read() == after.encode()
    assert changed == (before != after) and len(said) == int(changed)
    if said:
        assert said[0].startswith(path) and ("torn" in said[0] or "newline" in said[0])
    runner.append_jsonl(path, {"next": math.pi})
    rows = [json.loads(line) for line in open(path)]  # every line parses: nothing glued to a fragment
    assert rows[-1] == {"next": math.pi}
    assert runner.repair_jsonl(path, warn=said.append) is False  # repaired stays repaired


def test_repair_jsonl_missing_file_and_default_warning(tmp_path, capsys):
    assert runner.repair_jsonl(str(tmp_path / "none.jsonl")) is False
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"b"')
    assert runner.repair_jsonl(str(path)) is True
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: {path}: its last line is torn (4 bytes that are not valid JSON: a write cut short by a "
        "kill); truncated the file to its last complete line before appending"
    ]


# ------------------------------------------------------------------------------------------------
# Subprocesses: SIGKILL and --resume; 4 devices against 1
# ------------------------------------------------------------------------------------------------


def test_killed_run_resumes_to_the_same_result(env, tmp_path):
    args = ["--steps", "16", "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "3", "--quiet"]
    reference = subprocess.Popen(
        [sys.executable, SCRIPT, *args, "--run-root", str(tmp_path / "ref")], env=env, stdout=subprocess.PIPE
    )
    killed = subprocess.Popen(
        [sys.executable, SCRIPT, *args, "--run-root", str(tmp_path / "run")],
        env={**env, "RUNNER_TOY_DELAY": "0.3"},
    )
    deadline = time.time() + 60
    while time.time() < deadline and killed.poll() is None:
        runs = list((tmp_path / "run" / "toy").glob("*/checkpoints/step_00000003.ckpt"))
        if runs:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (run_dir,) = (tmp_path / "run" / "toy").iterdir()
    assert not (run_dir / "summary.json").exists()  # it really died midway
    assert len(runner.read_jsonl(str(run_dir / "metrics.jsonl"))) < 16
    # resume with --resume latest alone: the options come from the run's config.json
    p = run_script(["--resume", "latest", "--run-root", str(tmp_path / "run"), "--quiet"], env)
    assert p.returncode == 0, p.stderr
    assert reference.wait() == 0
    (ref_dir,) = (tmp_path / "ref" / "toy").iterdir()
    rows = rows_without_time(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert rows == rows_without_time(ref_dir / "metrics.jsonl")
    for name in ("gradient_flow.jsonl",):
        assert runner.read_jsonl(str(run_dir / name)) == runner.read_jsonl(str(ref_dir / name))
    step, state, _ = final_state(str(run_dir))
    ref_step, ref_state, _ = final_state(str(ref_dir))
    assert step == ref_step == 16
    jax.tree.map(np.testing.assert_array_equal, state, ref_state)


def test_four_devices_equal_one_device(env, tmp_path):
    env4 = {**env, "XLA_FLAGS": f"{env['XLA_FLAGS']} --xla_force_host_platform_device_count=4".strip()}
    args = ["--steps", "6", "--batch-size", "8", "--log-every", "2", "--quiet"]
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(SCRIPT)!r}); import runner_toy as t; "
        f"t.main({args + ['--run-root', str(tmp_path / 'four')]!r}); "
        f"t.main({args + ['--devices', '1', '--run-root', str(tmp_path / 'one')]!r})"
    )
    # a batch that does not split over the 4 devices is refused (run side by side with the training)
    bad = subprocess.Popen(
        [sys.executable, SCRIPT, "--batch-size", "6", "--run-root", str(tmp_path / "bad")],
        env=env4, stdout=PIPE, stderr=PIPE, text=True,
    )  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code], env=env4, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (four,) = (tmp_path / "four" / "toy").iterdir()
    (one,) = (tmp_path / "one" / "toy").iterdir()
    assert len(json.load(open(four / "config.json"))["devices"]) == 4
    assert len(json.load(open(one / "config.json"))["devices"]) == 1
    rows4, rows1 = rows_without_time(four / "metrics.jsonl"), rows_without_time(one / "metrics.jsonl")
    assert [r["step"] for r in rows4] == [r["step"] for r in rows1] == [2, 4, 6]
    for r4, r1 in zip(rows4, rows1):
        np.testing.assert_allclose([r4[k] for k in sorted(r4)], [r1[k] for k in sorted(r1)], rtol=1e-5)
    state4, state1 = final_state(str(four))[1], final_state(str(one))[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state4, state1)
    _, bad_err = bad.communicate(timeout=300)
    assert bad.returncode == 2
    assert_one_line_error(bad_err, "--batch-size 6", "4 devices", "--batch-size 8")
    assert not (tmp_path / "bad").exists()


def test_batch_shardings_axes():
    mesh = runner.make_mesh(jax.devices()[:1])
    batch = {"xs": np.zeros((5, 4, 2)), "y": np.zeros(4), "n": np.zeros(())}
    specs = jax.tree.map(lambda s: tuple(s.spec), runner.batch_shardings(mesh, batch))
    assert specs == {"xs": (None, "batch"), "y": ("batch",), "n": ()}
    specs = jax.tree.map(
        lambda s: tuple(s.spec), runner.batch_shardings(mesh, batch, {"xs": 0, "y": None, "n": None})
    )
    assert specs == {"xs": ("batch",), "y": (), "n": ()}


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_plots_write_pngs(trained, tmp_path):
    _, result = trained
    written = plots.plot_run(result.run_dir)
    assert [os.path.basename(p) for p in written] == ["losses.png", "dynamics.png", "gradient_flow.png"]
    assert all(is_png(p) for p in written)
    path = plots.plot_success(
        {"lstm": {10: 1.0, 20: 0.5}, "rnn": {10: 0.2, 20: 0.0}}, str(tmp_path / "s.png")
    )
    assert is_png(path)
    # nothing to plot -> no file
    assert plots.plot_dynamics([{"step": 1, "loss": 1.0}], str(tmp_path / "d.png")) is None
    assert not (tmp_path / "d.png").exists()


def test_progress_line_leaves_out_metrics_that_do_not_apply():
    """rho(W_hh) is only logged for Elman-type cells and Omega only where it is computed: a row without
    them has no ``rho -`` / ``Omega -`` in its line."""
    lstm = {"step": 3, "loss": 1.5, "error": 0.25, "grad_norm": 2.0}
    assert runner._fmt(lstm) == "loss 1.5  error 0.25  |g| 2"
    elman = {**lstm, "rho": 1.01, "omega": 0.5}
    assert runner._fmt(elman) == "loss 1.5  error 0.25  rho 1.01  Omega 0.5  |g| 2"
    assert runner._fmt({"loss": 1.0, "eval_error": 0.5}) == "loss 1  error 0.5"  # the held-out error
    assert runner._fmt({"loss": math.nan}) == "loss nan"  # a NaN is shown, not dropped


def test_usage_line_is_python_m_of_the_module(monkeypatch):
    adding_like = type("Config", (), {"__module__": "experiments.adding"})
    assert runner._prog(adding_like, "adding") == "python -m experiments.adding"
    as_main = type("Config", (), {"__module__": "__main__"})
    spec = types.SimpleNamespace(name="experiments.digits")  # what `python -m experiments.digits` sets
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", spec, raising=False)
    assert runner._prog(as_main, "digits") == "python -m experiments.digits"
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)  # `python file.py`
    assert runner._prog(as_main, "digits") == "python -m experiments.digits"
    assert runner._prog(as_main, None) is None  # argparse's default
    with pytest.raises(SystemExit):
        runner.config_cli(toy.Config, toy.PRESETS, ["--help"], prog="python -m my.toy")
