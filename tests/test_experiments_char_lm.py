"""experiments/char_lm.py: the model against a numpy LSTM, the streamed held-out score against a plain
per-character loop, the unigram reference by counting, greedy sampling by hand, the CLI's errors, and
one end-to-end smoke run (tiny text, a few updates)."""

import collections
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import char_lm, runner, tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 6


# --------------------------------------------------------------------------------------------------
# an independent numpy char-rnn (gate order i, f, g, o; x @ W), float64


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def np_step(params, state, token):
    """One character through the numpy model: ``state`` a list of (h, c) per layer."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.eye(p["W_out"].shape[1])[token]
    if "embed" in p:
        x = x @ p["embed"]
    new = []
    for lp, (h, c) in zip(p["rnn"], state):
        a = x @ lp["W_xh"] + h @ lp["W_hh"] + lp["b"]
        i, f, g, o = np.split(a, 4, axis=-1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(c)
        new.append((h, c))
        x = h
    return new, x @ p["W_out"] + p["b_out"]


def np_zero_state(params, batch=()):
    return [(np.zeros((*batch, lp["W_hh"].shape[0])),) * 2 for lp in params["rnn"]]


def np_log2_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(-1, keepdims=True))) / math.log(2.0)


@pytest.fixture(scope="module", params=[(0, 2), (3, 1)], ids=["onehot-2layers", "embed-1layer"])
def model_params(request):
    embed, layers = request.param
    model = char_lm.build_model(V, hidden=4, layers=layers, embed=embed)
    params = model.init(jax.random.PRNGKey(embed + layers))
    params["b_out"] = jax.random.normal(jax.random.PRNGKey(9), (V,), jnp.float32)  # not all-zero
    return model, params


def test_apply_and_step_match_numpy_lstm(model_params):
    model, params = model_params
    ids = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (7, 2), 0, V))
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    carry, logits = jax.jit(model.apply)(params, jax.nn.one_hot(ids, V, dtype=jnp.float32))
    state, ref = np_zero_state(params, (2,)), []
    for t in range(7):
        state, z = np_step(params, state, ids[t])
        ref.append(z)
    np.testing.assert_allclose(logits, np.stack(ref), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(carry[-1].h, state[-1][0], rtol=1e-4, atol=1e-5)
    # the one-character step used by the sampler is the same model
    step = jax.jit(model.step)
    c = model.initial_carry(params, (2,))
    for t in range(7):
        c, z = step(params, c, jnp.asarray(ids[t]))
        np.testing.assert_allclose(z, ref[t], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("streams, chunk", [(1, 256), (4, 3), (5, 1), (50, 256)])
def test_streamed_bpc_is_the_mean_over_every_character_with_carried_state(model_params, streams, chunk):
    model, params = model_params
    ids = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (24,), 0, V), np.int32)
    got = float(char_lm.streamed_bpc(model, params, ids, streams=streams, chunk=chunk))
    n = len(ids) - 1
    s = min(streams, n)
    length = -(-n // s)
    total = 0.0
    for k in range(s):  # the docstring's loop: each stream from the zero state, carried along
        state = np_zero_state(params)
        for p in range(k * length, min((k + 1) * length, n)):
            state, z = np_step(params, state, ids[p])
            total -= np_log2_softmax(z)[ids[p + 1]]
    np.testing.assert_allclose(got, total / n, rtol=1e-5)


def test_streamed_bpc_rejects_one_character():
    model = char_lm.build_model(V, 2, 1)
    with pytest.raises(ValueError, match="streamed_bpc: ids must hold at least 2"):
        char_lm.streamed_bpc(model, model.init(jax.random.PRNGKey(0)), np.array([1]))


def test_build_model_rejects_bad_sizes():
    with pytest.raises(ValueError, match="build_model: hidden"):
        char_lm.build_model(V, 0, 1)
    with pytest.raises(ValueError, match="build_model: embed"):
        char_lm.build_model(V, 2, 1, embed=-1)


def test_dropout_between_layers_only_with_a_key():
    model = char_lm.build_model(V, 8, 2, dropout=0.5)
    plain = char_lm.build_model(V, 8, 2)
    params = model.init(jax.random.PRNGKey(0))
    xs = jax.nn.one_hot(jnp.arange(10).reshape(5, 2) % V, V, dtype=jnp.float32)
    _, inference = model.apply(params, xs)
    np.testing.assert_array_equal(inference, plain.apply(params, xs)[1])
    _, a = model.apply(params, xs, key=jax.random.PRNGKey(1))
    _, b = model.apply(params, xs, key=jax.random.PRNGKey(2))
    assert not np.allclose(a, inference) and not np.allclose(a, b)


def test_greedy_generation_follows_the_argmax_of_the_model(model_params):
    model, params = model_params
    vocab = tasks.UNKNOWN + "abcde"
    prime = "ab?c"  # '?' is not in the vocabulary: read as UNKNOWN (id 0)
    text = char_lm.generate(model, params, vocab, prime, jax.random.PRNGKey(0), 9, 0.0)
    state = np_zero_state(params)
    for tok in [1, 2, 0, 3]:
        state, z = np_step(params, state, tok)
    expected = []
    for _ in range(9):
        tok = int(np.argmax(z))
        expected.append(vocab[tok])
        state, z = np_step(params, state, tok)
    assert text == "".join(expected)
    # a temperature draws from the key: reproducible, different keys differ
    hot = [char_lm.generate(model, params, vocab, "a", jax.random.PRNGKey(k), 30, 1.0) for k in (5, 5, 6)]
    assert hot[0] == hot[1] != hot[2] and len(hot[0]) == 30
    with pytest.raises(ValueError, match="generate: prime"):
        char_lm.generate(model, params, vocab, "", jax.random.PRNGKey(0), 3, 1.0)


def test_unigram_reference_by_counting():
    corpus = tasks.make_corpus("aaabbc" * 5 + "abd", valid_fraction=0.1)  # 'd' only in the held-out part
    ref = char_lm.unigram_reference(corpus)
    train = tasks.decode(corpus.train, corpus.vocab)
    counts = collections.Counter(train)
    n, v = len(train), len(corpus.vocab)
    entropy = -sum(k / n * math.log2(k / n) for k in counts.values())
    valid = tasks.decode(corpus.valid, corpus.vocab)
    held = -sum(math.log2((counts.get(ch, 0) + 1) / (n + v)) for ch in valid) / len(valid)
    assert tasks.UNKNOWN in valid  # the unseen 'd' is scored as UNKNOWN with its add-one mass
    assert ref["unigram_entropy_train"] == pytest.approx(entropy, rel=1e-12)
    assert ref["unigram_bpc_valid"] == pytest.approx(held, rel=1e-12)
    assert ref["uniform_bpc"] == pytest.approx(math.log2(v))


def test_fixed_windows_are_spread_slices_of_the_held_out_text():
    ids = np.arange(100, 160, dtype=np.int32)
    inp, tgt = char_lm._fixed_windows(ids, 7, 5)
    assert inp.shape == (7, 5)
    np.testing.assert_array_equal(tgt, inp + 1)
    starts = inp[0] - 100
    assert starts[0] == 0 and starts[-1] == 60 - 8  # the first and the last full window
    np.testing.assert_array_equal(inp, starts[None, :] + 100 + np.arange(7)[:, None])


def test_gate_radii_are_the_eigenvalues_of_each_block():
    W = jax.random.normal(jax.random.PRNGKey(0), (5, 20), jnp.float32)
    radii = char_lm._gate_radii(W, 5)
    for k, g in enumerate("ifgo"):
        expected = np.abs(np.linalg.eigvals(np.asarray(W[:, 5 * k : 5 * (k + 1)], np.float64))).max()
        assert float(radii[f"rho_{g}"]) == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------------------------------
# command line


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text("def add(a, b):\n    return a + b\n\n" * 20, encoding="utf-8")
    return str(path)


def test_smoke_run_end_to_end(text_file, tmp_path, capsys):
    argv = ["--preset", "smoke", "--text", text_file, "--run-root", str(tmp_path), "--quiet"]
    results = char_lm.main([*argv, "--embed", "3", "--dropout", "0.3", "--temperatures", "0", "1.0"])
    out = capsys.readouterr().out
    (run_dir,) = [os.path.join(tmp_path, "char_lm", d) for d in os.listdir(tmp_path / "char_lm")]
    for name in ("results.json", "samples.txt", "losses.png", "dynamics.png", "metrics.jsonl"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    with open(os.path.join(run_dir, "results.json")) as f:
        assert json.load(f) == results
    assert results["steps"] == 4 and results["model"] == "2x8 LSTM, embedding 3"
    assert set(results["samples"]) == {"0.0", "1.0"}
    assert all(len(s) == 12 for s in results["samples"].values())
    for key in ("train_bpc", "valid_bpc", "eval_bpc_windows"):  # an untrained model is near uniform
        assert 0.5 * results["uniform_bpc"] < results[key] < 1.5 * results["uniform_bpc"]
    corpus = tasks.make_corpus(open(text_file).read(), 0.1)
    assert results["unigram_bpc_valid"] == char_lm.unigram_reference(corpus)["unigram_bpc_valid"]
    for line in ("unigram, held out", "LSTM, held out (every char)", "LSTM, train (every char)"):
        assert line in out
    assert f"def {results['samples']['1.0']}" in out
    samples = open(os.path.join(run_dir, "samples.txt"), encoding="utf-8").read()
    assert f"def {results['samples']['0.0']}" in samples
    rows = runner.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [2, 4]
    assert {"eval_bpc", "eval_error", "rho", "rho_f", "bpc"} <= set(rows[-1])
    assert rows[-1]["eval_bpc"] == pytest.approx(results["eval_bpc_windows"])


@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["--text", "not a readable file"]),
        (b"", ["--text", "empty"]),
        (b"ab\x00cd", ["--text", "binary"]),
        (b"abcdefghij" * 2, ["--text", "valid split has 2 characters"]),
    ],
    ids=["missing", "empty", "binary", "too-short"],
)
def test_bad_text_is_a_usage_error_naming_text(tmp_path, content, words):
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(runner.UsageError) as e:
        char_lm.main(["--preset", "smoke", "--text", str(path), "--run-root", str(tmp_path), "--quiet"])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--prime", ""], ["--prime"]),
        (["--dropout", "1.0"], ["--dropout", "< 1"]),
        (["--valid-fraction", "0"], ["--valid-fraction"]),
        (["--temperatures", "0.5", "-1"], ["--temperatures", ">= 0.0"]),
        (["--hidden", "0"], ["--hidden"]),
        (["--preset", "huge"], ["--preset", "huge"]),
    ],
)
def test_bad_options_are_usage_errors(argv, words):
    with pytest.raises(runner.UsageError) as e:
        runner.config_cli(char_lm.Config, char_lm.PRESETS, argv)
    for w in words:
        assert w in str(e.value)


def test_presets_are_complete_configs():
    for name in char_lm.PRESETS:
        config = runner.config_cli(char_lm.Config, char_lm.PRESETS, ["--preset", name])
        assert config.preset == name
    paper = runner.config_cli(char_lm.Config, char_lm.PRESETS, ["--preset", "paper"])
    assert (paper.layers, paper.hidden, paper.seq_length, paper.batch_size) == (3, 512, 100, 100)
    assert char_lm.Config().hidden == 128 and char_lm.Config().layers == 2  # char-rnn's defaults


def test_command_line_exit_code_2_on_a_missing_text(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.char_lm", "--text", str(tmp_path / "nope.txt")],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --text") and "Traceback" not in proc.stderr
