"""experiments/bench.py at tiny shapes: JSON structure, agreement of the implementations, targets."""

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from subprocess import PIPE

import numpy as np
import pytest

from experiments import bench, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out.json"
    argv = ["--shapes", "tiny", "--repeats", "2", "--warmup", "0", "--json", str(path), "--quiet"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = bench.main(argv)
    return result, json.loads(path.read_text()), out.getvalue()


def test_flop_count_by_hand():
    # LSTM: input product (T*B, D) @ (D, 4H) and T products (B, H) @ (H, 4H), 2 FLOPs per multiply-add
    B, T, D, H = 3, 5, 7, 11
    by_hand = 2 * (T * B) * D * 4 * H + T * 2 * B * H * 4 * H
    assert bench.flops("lstm", B, T, D, H, "fwd") == by_hand
    assert bench.flops("lstm", B, T, D, H, "fwdbwd") == 3 * by_hand
    assert bench.flops("gru", B, T, D, H, "fwd") == by_hand * 3 // 4


def test_sweep_shapes_span_the_accelerator_grid():
    assert sorted({b for b, _, _, _ in bench.SWEEP.values()}) == [1, 16, 256]
    assert sorted({t for _, t, _, _ in bench.SWEEP.values()}) == [100, 1000, 10_000]
    assert all(bench.SHAPES[name] == shape for name, shape in bench.SWEEP.items())
    assert bench.SWEEP["B16T1000"] == (16, 1000, 256, 256)


def test_json_structure_and_meta(tiny):
    result, saved, out = tiny
    assert set(saved) >= {"meta", "speed", "agreement", "matmul_peak", "targets", "markdown"}
    assert "memory" not in saved and "parallel" not in saved  # sections only when asked for
    meta = saved["meta"]
    assert meta["device_kind"] and meta["jax"] and meta["flax"]
    assert (meta["torch"] is not None) == HAS_TORCH
    assert meta["repeats"] == 2 and len(meta["loadavg_before"]) == 3
    impls = {"jaxrnn", "flax"} | ({"torch"} if HAS_TORCH else set())
    if meta["backend"] == "gpu":
        impls |= {"cudnn", "jaxrnn(pallas)"}
    got = {(r["cell"], r["mode"], r["impl"]) for r in saved["speed"]}
    want = {(c, m, i) for c in ("lstm", "gru") for m in ("fwd", "fwdbwd") for i in impls}
    if "cudnn" in impls:
        want -= {("gru", m, "cudnn") for m in ("fwd", "fwdbwd")}
    assert got == want
    for r in saved["speed"]:
        assert r["shape"] == "tiny" and (r["B"], r["T"], r["D"], r["H"]) == bench.SHAPES["tiny"]
        assert 0 < r["min_ms"] <= r["median_ms"] and r["repeats"] == 2
        assert r["flops"] == bench.flops(r["cell"], r["B"], r["T"], r["D"], r["H"], r["mode"])
        assert r["gflops"] == pytest.approx(r["flops"] / (r["median_ms"] * 1e6))
        assert (r["compile_ms"] is None) == (r["impl"] == "torch")
    assert {p["gates"] for p in saved["matmul_peak"]} == {3, 4}
    assert all(p["jax_gflops"] > 0 for p in saved["matmul_peak"])
    # the markdown printed is the one saved, and names the device
    assert out.strip() == saved["markdown"].strip() == result["markdown"].strip()
    assert meta["device_kind"] in out and "| tiny | lstm | fwdbwd |" in out


def test_implementations_agree(tiny):
    _, saved, _ = tiny
    assert {a["cell"] for a in saved["agreement"]} == {"lstm", "gru"}
    for a in saved["agreement"]:
        others = {"flax"} | ({"torch"} if HAS_TORCH else set())
        assert set(a["max_abs_diff"]) >= others
        for diffs in a["max_abs_diff"].values():
            assert set(diffs) == {"ys", "dxs", "dW_hh"}
            assert max(diffs.values()) < 1e-5


def test_targets_not_measured_at_tiny_shapes(tiny):
    _, saved, _ = tiny
    assert saved["targets"] and all(t["status"] == "not measured" for t in saved["targets"])


def test_memory_section():
    argv = ["--no-speed", "--cells", "lstm", "--memory", "--memory-T", "12,48", "--no-torch", "--quiet"]
    result = bench.run(argv)
    rows = result["memory"]
    assert [(r["cell"], r["T"], r["remat"]) for r in rows] == [
        ("lstm", T, m) for T in (12, 48) for m in (False, True)
    ]
    assert result["speed"] == [] and "BPTT peak memory" in result["markdown"]
    for r in rows:
        if "skipped" in r:  # a backend without memory analysis
            continue
        assert r["peak_bytes"] == r["temp_bytes"] + r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"]
        assert r["argument_bytes"] > 0 and r["temp_bytes"] >= 0
        assert (r["B"], r["D"], r["H"]) == tuple(bench.SHAPES["L"][i] for i in (0, 2, 3))
    temp = {(r["T"], r["remat"]): r.get("temp_bytes") for r in rows}
    if None not in temp.values():  # without remat the BPTT residuals grow with T
        assert temp[(48, False)] > temp[(12, False)]


def test_resets_section():
    argv = ["--no-speed", "--cells", "gru", "--resets", "0.3", "--resets-shape", "tiny", "--repeats", "2"]
    result = bench.run([*argv, "--warmup", "0", "--no-torch", "--quiet"])
    rows = result["resets"]
    assert [(r["cell"], r["mode"]) for r in rows] == [("gru", "fwd"), ("gru", "fwdbwd")]
    B, T = bench.SHAPES["tiny"][:2]
    for r in rows:
        assert (r["B"], r["T"], r["rate"]) == (B, T, 0.3) and 0 < r["resets_drawn"] <= B * T
        assert r["max_abs_diff"] <= 1e-4  # the fused path and the reference scan agree
        assert r["fused_over_none"] == r["fused_ms"] / r["none_ms"] > 0
    assert "## Resets (episode boundaries) at B2 T5 D3 H4, rate 0.3" in result["markdown"]


def test_newton_section():
    argv = ["--no-speed", "--cells", "gru", "--newton", "--newton-T", "6", "--newton-convergence-T", "6"]
    argv += [
        "--newton-gains",
        "3",
        "--modes",
        "fwd",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--no-torch",
        "--quiet",
    ]
    result = bench.run(argv)
    rows, conv = result["newton"], result["newton_convergence"]
    assert [r["impl"] for r in rows] == ["sequential", "newton_full", "newton_diagonal"]
    for r in rows[1:]:
        assert r["converged"] and 1 <= r["iterations"] <= 6 and r["max_abs_diff"] < 1e-4
    assert len(conv) == 1 and conv[0]["gain"] == 3.0 and conv[0]["iterations_full"] <= 6
    assert "## Newton's method parallel in time" in result["markdown"]


def test_bf16_section():
    result = bench.run(
        ["--no-speed", "--bf16", "--shapes", "tiny", "--repeats", "2", "--warmup", "0", "--quiet"]
    )
    rows = result["bf16"]
    assert [r["what"] for r in rows] == [
        "recurrent (B,H)@(H,4H)", "input (TB,D)@(D,4H)", "recurrent loop, 5 steps in a scan",
        "LSTM fwd+bwd (bf16: reference scan)",
        "LSTM fwd, fused, bf16 recurrent products (prototype)",
        "LSTM fwd+bwd, fused, bf16 recurrent products (prototype)",
    ]  # fmt: skip
    for r in rows:
        assert (
            r["float32_ms"] > 0
            and r["bfloat16_ms"] > 0
            and r["bf16_over_f32"] == r["bfloat16_ms"] / r["float32_ms"]
        )
    assert all(r["max_rel_diff"] < 2e-2 for r in rows[-2:])  # the prototype computes the same LSTM
    assert "## bfloat16 compute" in result["markdown"]


def test_breakdown_section():
    result = bench.run(
        ["--no-speed", "--breakdown", "--shapes", "tiny", "--repeats", "2", "--warmup", "0", "--quiet"]
    )
    rows = result["breakdown"]
    assert len(rows) == 7 and all(r["shape"] == "tiny" and r["median_ms"] > 0 for r in rows)
    assert rows[0]["what"] == "fused LSTM, forward" and rows[4]["what"] == "fused LSTM, forward+backward"
    assert "## Where the fused LSTM's time goes" in result["markdown"]
    # the parts compute what they say: the BPTT chain both ways, the forward products both ways
    W, a, h0 = np.ones((3, 12)) / 4, np.arange(5 * 2 * 12.0).reshape(5, 2, 12) / 100, np.zeros((2, 3))
    d = h0
    for t in reversed(range(5)):
        d = (a[t] + np.pad(d, ((0, 0), (0, 9)))) @ W.T
    np.testing.assert_allclose(bench._loop_bptt(W, a, h0), d, rtol=1e-5)
    np.testing.assert_allclose(bench._loop_bptt_t(W.T.copy(), a, h0), d, rtol=1e-5)
    Wx, xs = np.ones((4, 12)) / 8, np.arange(5 * 2 * 4.0).reshape(5, 2, 4) / 50
    args = (Wx, W, np.zeros(12), xs, h0)
    np.testing.assert_allclose(bench._loop_products(*args), bench._loop_hoisted(*args), rtol=1e-5)


def test_targets_status():
    def row(shape, cell, impl, ms):
        return {"shape": shape, "cell": cell, "mode": "fwdbwd", "impl": impl, "median_ms": ms}

    rows = [row("S", "lstm", "jaxrnn", 10.0), row("S", "lstm", "flax", 30.0), row("S", "lstm", "torch", 8.0)]
    rows += [row("M", "lstm", "jaxrnn", 10.0), row("M", "lstm", "flax", 15.0)]
    got = {
        (t["shape"], t["cell"], t["against"]): (t["status"], t["ratio"]) for t in bench.targets(rows, False)
    }
    assert got[("S", "lstm", "flax")] == ("met", pytest.approx(1 / 3))
    assert got[("S", "lstm", "torch")] == ("not yet", pytest.approx(1.25))
    assert got[("M", "lstm", "flax")] == ("not yet", pytest.approx(2 / 3))
    assert got[("M", "lstm", "torch")] == ("not measured", None)
    assert got[("L", "gru", "flax")] == ("not measured", None)
    gpu = bench.targets([row("M", "lstm", "jaxrnn", 12.0), row("M", "lstm", "cudnn", 10.0)], True)
    assert [(t["cell"], t["against"], t["status"]) for t in gpu] == [
        ("lstm", "cudnn", "met"),
        ("gru", "torch", "not measured"),
    ]


def test_disagreeing_weights_are_caught(monkeypatch):
    real = bench.interop.to_flax

    def perturbed(params, kind):
        p = real(params, kind)
        p["hi"]["bias"] = np.asarray(p["hi"]["bias"]) + 1e-2
        return p

    monkeypatch.setattr(bench.interop, "to_flax", perturbed)
    argv = [
        "--shapes",
        "tiny",
        "--cells",
        "lstm",
        "--modes",
        "fwd",
        "--repeats",
        "1",
        "--no-torch",
        "--quiet",
    ]
    with pytest.raises(AssertionError, match="flax does not compute the same function"):
        bench.run(argv)


def test_variant_rows_agree_and_targets_use_the_default_path():
    argv = "--shapes tiny --cells gru --modes fwdbwd --fused both --unroll 1,3 --repeats 1 --warmup 0"
    result = bench.run(argv.split() + ["--no-torch", "--quiet"])
    impls = [r["impl"] for r in result["speed"]]
    assert impls == ["jaxrnn", "jaxrnn(fused=False)", "jaxrnn(unroll=3)", "flax"]
    (agree,) = result["agreement"]
    assert set(agree["max_abs_diff"]) == {"jaxrnn(fused=False)", "jaxrnn(unroll=3)", "flax"}
    assert "jaxrnn/jaxrnn(unroll=3)" in result["markdown"]
    assert {t["against"] for t in result["targets"]} == {"flax", "torch"}


def test_parallel_section_reports_missing_module(monkeypatch):
    def missing(name, *a, **k):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(bench.importlib, "import_module", missing)
    result = bench.run(["--no-speed", "--parallel", "--quiet", "--no-torch"])
    assert result["parallel"] == [] and "not available" in result["parallel_note"]
    assert "skipped: jaxrnn.cells.parallel not available" in result["markdown"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--shapes", "X"], ["--shapes", "tiny, S, M, L", "'X'"]),
        (["--shapes", "Q"], ["--shapes", "'Q'"]),
        (["--sweep", "--shapes", "S"], ["--sweep", "drop --shapes"]),
        (["--cells", "lstm,rnn"], ["--cells", "lstm, gru", "'lstm,rnn'"]),
        (["--modes", "bwd"], ["--modes", "'bwd'"]),
        (["--memory-T", "0"], ["--memory-T", "positive ints"]),
        (["--fused", "yes"], ["--fused", "'yes'"]),
        (["--unroll", "0"], ["--unroll"]),
        (["--resets", "-0.1"], ["--resets", ">= 0"]),
        (["--resets", "1.5"], ["--resets", "[0, 1]"]),
        (["--unroll", "a"], ["--unroll"]),
        (["--repeats", "0"], ["--repeats", ">= 1", "got 0"]),
        (["--repeats", "x"], ["--repeats", "integer", "'x'"]),
        (["--warmup", "-1"], ["--warmup", ">= 0"]),
        (["--parallel-width", "0"], ["--parallel-width", ">= 1"]),
        (["--torch-threads", "0"], ["--torch-threads", ">= 1"]),
        (["--atol", "nan"], ["--atol", "finite number", "'nan'"]),
        (["--atol", "inf"], ["--atol", "finite number", "'inf'"]),
        (["--atol=-1"], ["--atol", ">= 0"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, words, capsys):
    """The runner's conventions: one line ``error: ...`` naming the option, exit status 2, no usage."""
    with pytest.raises(runner.UsageError):
        bench.run(argv) if argv[0] in ("--resets", "--sweep") else bench.parser().parse_args(argv)
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: bench.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "usage:" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_command_line_exit_statuses_real_process(tmp_path):
    """``python -m experiments.bench``: a bad option is one line and exit 2; ``--help`` exits 0."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "experiments.bench"]
    procs = [
        subprocess.Popen([*cmd, *a], cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE, text=True)
        for a in (["--repeats", "0"], ["--help"])
    ]
    (_, bad_err, bad_code), (help_out, help_err, help_code) = [
        (*p.communicate(timeout=120), p.returncode) for p in procs
    ]
    assert bad_code == 2
    assert bad_err.strip() == "error: argument --repeats: must be >= 1; got 0 (see --help)"
    assert help_code == 0 and help_err == ""
    assert help_out.startswith("usage: python -m experiments.bench") and "--repeats" in help_out


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        bench.parser().parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in (
        "--shapes",
        "--cells",
        "--modes",
        "--repeats",
        "--warmup",
        "--quick",
        "--unroll",
        "--memory",
        "--parallel",
    ):
        assert opt in text
