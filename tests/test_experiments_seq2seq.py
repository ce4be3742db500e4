"""experiments/seq2seq.py end to end (smoke preset): files and table, the task generators and the
tokenisation, the reported greedy exact-match accuracy against a plain numpy encoder-decoder and greedy
loop on the saved parameters (no jaxrnn.decoding), bad input."""

import contextlib
import glob
import io
import json
import os

import jax
import numpy as np
import pytest
from helpers import is_png

from experiments import runner, seq2seq


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = seq2seq.main(["--preset", "smoke", "--run-root", root, "--quiet"])
    config = runner.config_cli(seq2seq.Config, seq2seq.PRESETS, ["--preset", "smoke"])
    return result, config, out.getvalue()


def test_smoke_writes_results_runs_plots_and_table(smoke):
    result, config, out = smoke
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    assert [r["task"] for r in saved["results"]] == list(config.tasks)
    assert is_png(os.path.join(result.sweep_dir, "summary.png"))
    for r in saved["results"]:
        assert os.path.basename(os.path.dirname(r["run_dir"])) == f"{r['task']}-seed0"
        rows = runner.read_jsonl(os.path.join(r["run_dir"], "metrics.jsonl"))
        assert rows[-1]["step"] == r["steps"] == config.steps and "eval_error" in rows[-1]
        assert is_png(os.path.join(r["run_dir"], "losses.png"))
        L = seq2seq.train_range(config, r["task"])
        assert [(x["length"], x["seen"], x["n"]) for x in r["lengths"]] == [
            (k, k <= L, config.n_test) for k in range(1, L + config.extra + 1)
        ]
        assert all(0 <= x["greedy"] <= 1 and 0 <= x["beam"] <= 1 for x in r["lengths"])
        assert len(r["samples"]) == config.n_samples
        for s in r["samples"]:
            assert s["target"] == seq2seq.reference(r["task"], s["source"])
            assert f"{s['source']} -> {s['target']}" in out and f"greedy {s['greedy'] or '(empty)'}" in out
    assert saved["table"] == json.loads(json.dumps(result.table))
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    assert lines[header].split() == ["task", "length", "seen", "n", "greedy", "beam", f"K={config.beam_size}"]
    body = lines[header + 2 : header + 2 + len(result.table)]
    for row, line in zip(result.table, body):
        want = [row["task"], str(row["length"]), "yes" if row["seen"] else "no", str(row["n"])]
        assert line.split() == want + [f"{row['greedy']:.3f}", f"{row['beam']:.3f}"]
    assert lines[header + 2 + len(result.table)] == seq2seq.table_note(config)
    assert lines[-1] == f"results: {result.sweep_dir}/results.json"


@pytest.mark.parametrize(
    "task, source, target",
    [
        ("reverse", "2719", "9172"),
        ("reverse", "0", "0"),
        ("sort", "2719", "1279"),
        ("sort", "90090", "00099"),
        ("add", "123+45", "168"),
        ("add", "999+1", "1000"),
        ("add", "0+0", "0"),
    ],
)
def test_reference(task, source, target):
    assert seq2seq.reference(task, source) == target


@pytest.fixture(scope="module")
def generated():
    """24 strings of each task with lengths 1..3 (one compiled program for the three)."""
    sample = lambda key: {t: seq2seq.sample_batch(t, key, 24, 1, 3) for t in seq2seq.TASKS}
    return jax.jit(sample)(jax.random.PRNGKey(3))


@pytest.mark.parametrize("task", seq2seq.TASKS)
def test_generated_strings_are_the_task(task, generated):
    lo, hi, b = 1, 3, generated[task]
    S, U = seq2seq.source_size(task, hi), seq2seq.target_size(task, hi) + 1
    assert b.src.shape == (S, 24) and b.ys_in.shape == b.ys_out.shape == (U, 24)
    assert all(np.asarray(x).dtype == np.int32 for x in b)
    seen = set()
    for i in range(24):
        source, target = seq2seq.strings(b, i)
        assert target == seq2seq.reference(task, source), (source, target)
        n = int(np.asarray(b.tgt_len)[i])
        assert n == len(target) + 1  # the EOS counts
        assert seq2seq.decode(np.asarray(b.ys_in)[:n, i], stop_at_eos=False) == "^" + target
        assert seq2seq.decode(np.asarray(b.ys_out)[:n, i], stop_at_eos=False) == target + "$"
        operands = source.split("+") if task == "add" else [source]
        assert len(operands) == (2 if task == "add" else 1)
        for x in operands:
            assert x.isdigit() and lo <= len(x) <= hi
            if task == "add":  # numbers: no leading zero
                assert len(x) == 1 or x[0] != "0"
            seen.add(len(x))
    assert seen == {1, 2, 3}


def test_tokenisation_round_trip():
    text = seq2seq.TOKENS + "0912+"
    ids = seq2seq.encode(text)
    assert len(seq2seq.TOKENS) == seq2seq.V == 13
    assert ids[:13] == list(range(13)) and ids[seq2seq.EOS] == seq2seq.EOS
    assert seq2seq.decode(ids, stop_at_eos=False) == text
    assert seq2seq.decode(seq2seq.encode("123+45")) == "123+45"
    assert seq2seq.decode(seq2seq.encode("168$77")) == "168"  # stops at the end token
    with pytest.raises(ValueError, match="'x'"):
        seq2seq.encode("12x")


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _lstm_step(p, h, c, x):
    """One step of an i, f, g, o LSTM in float64 numpy: ``[i f g o] = x W_xh + h W_hh + b``."""
    a = x @ p["W_xh"] + h @ p["W_hh"] + p["b"]
    i, f, g, o = np.split(a, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _greedy(params, source: list[int], reverse_source: bool, max_length: int) -> list[int] | None:
    """Encoder over the one-hot source, decoder from its final (h, c), argmax fed back until EOS;
    ``None`` when no EOS within ``max_length`` tokens."""
    H = params["encoder"]["W_hh"].shape[0]
    h, c = np.zeros(H), np.zeros(H)
    for tok in reversed(source) if reverse_source else source:
        h, c = _lstm_step(params["encoder"], h, c, np.eye(seq2seq.V)[tok])
    tok, out = seq2seq.BOS, []
    for _ in range(max_length):
        h, c = _lstm_step(params["decoder"], h, c, params["embed"][tok])
        tok = int(np.argmax(h @ params["W"] + params["b"]))
        if tok == seq2seq.EOS:
            return out
        out.append(tok)
    return None


def test_reported_greedy_accuracy_is_a_plain_numpy_greedy_decoders(smoke):
    result, config, _ = smoke
    saved = json.load(open(os.path.join(result.sweep_dir, "results.json")))
    for r in saved["results"]:
        ckpt = sorted(glob.glob(os.path.join(r["run_dir"], "checkpoints", "step_*.ckpt")))[-1]
        step, state, _ = runner.load_checkpoint(ckpt)
        assert step == r["steps"]
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), state["params"])
        lengths, batch = seq2seq.test_set(config, r["task"])
        max_length = batch.ys_out.shape[0] + 1  # the script's: the longest target, its EOS, one more
        correct, outputs = {}, {}
        for i, k in enumerate(lengths):
            source, target = seq2seq.strings(batch, i)
            out = _greedy(params, seq2seq.encode(source), config.reverse_source, max_length)
            correct.setdefault(int(k), []).append(out is not None and seq2seq.decode(out) == target)
            outputs.setdefault(source, seq2seq.decode(out or []))
        assert {x["length"]: x["greedy"] for x in r["lengths"]} == {k: np.mean(v) for k, v in correct.items()}
        assert any(x["greedy"] > 0 for x in r["lengths"])  # not trivially all wrong
        for s in r["samples"]:  # the printed decodings, token for token
            assert s["greedy"] == outputs[s["source"]]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--tasks", "multiply"], ["--tasks", "multiply", "reverse, sort, add"]),
        (["--tasks", "add", "add"], ["--tasks", "at most once"]),
        (["--beam-size", "0"], ["--beam-size", ">= 1"]),
        (["--length-penalty", "nan"], ["--length-penalty", "finite number"]),
        (["--preset", "huge"], ["--preset", "huge"]),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: seq2seq.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    for w in words:
        assert w in err, (w, err)
