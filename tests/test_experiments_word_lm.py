"""experiments/word_lm.py: the tokeniser and the vocabulary on a small text, one end-to-end smoke run
(full and Huffman softmax, a few updates) whose held-out perplexities are recomputed here in numpy from
the saved parameters, the table and the files it writes, and the command line's exit status 2."""

import collections
import contextlib
import io
import json
import math
import os

import jax
import numpy as np
import pytest
from helpers import is_png

import jaxrnn as jr
from experiments import runner, word_lm

LINES = [
    "def add(a, b):",
    "    return a + b",
    "",
    "class Point(object):",
    "    x = add(1, 2)",
    "    y = x * 3",
]
TEXT = "\n".join(LINES * 12) + "\nimport zz_rare\nprint(zz_rare)\n"  # the last line: words unseen in training


# --------------------------------------------------------------------------------------------------
# tokeniser, vocabulary, corpus


def test_tokenize_words_punctuation_and_line_ends():
    assert word_lm.tokenize("x = f(a_1)\n\n  return x.y+2") == [
        "x", "=", "f", "(", "a_1", ")", "<eos>", "return", "x", ".", "y", "+", "2", "<eos>",
    ]  # fmt: skip
    assert word_lm.tokenize("Hello, World!", eos=False) == ["Hello", ",", "World", "!"]
    assert word_lm.tokenize("Hello World", lowercase=True) == ["hello", "world", "<eos>"]
    assert word_lm.tokenize("caf\u00e9 \u00fcber--x") == ["caf\u00e9", "\u00fcber", "-", "-", "x", "<eos>"]
    assert word_lm.tokenize("\n \n\t\n") == []


def test_vocabulary_by_count_then_alphabet_with_unk_first():
    tokens = "b a c b a b d e e".split()
    words, counts = word_lm.build_vocab(tokens, size=3)
    assert words == ["<unk>", "b", "a", "e"]  # b: 3; a and e: 2 (alphabetical); c, d: left out
    assert counts.tolist() == [2, 3, 2, 2] and counts.sum() == len(tokens)
    words, counts = word_lm.build_vocab(tokens, size=10, min_count=2)
    assert words == ["<unk>", "b", "a", "e"] and counts[0] == 2
    np.testing.assert_array_equal(word_lm.encode(["e", "zzz", "b"], words), [3, 0, 1])
    assert word_lm.detokenize([1, 2, 0, 1], ["<unk>", "x", "<eos>"]) == "x\n<unk> x"
    assert word_lm.detokenize([2, 2, 1, 2], ["<unk>", "x", "<eos>"]) == "\n\nx\n"


def test_corpus_split_is_chronological_and_counts_unknown_words():
    corpus = word_lm.make_corpus(TEXT, vocab=100, min_count=1, valid_fraction=0.1, test_fraction=0.1)
    tokens = word_lm.tokenize(TEXT)
    n = len(tokens)
    n_valid = n_test = int(0.1 * n)
    n_train = n - n_valid - n_test
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (n_train, n_valid, n_test)
    train = tokens[:n_train]
    freq = collections.Counter(train)
    assert corpus.train_types == len(freq) and corpus.words[0] == "<unk>"
    assert sorted(corpus.words[1:]) == sorted(freq) and corpus.counts[0] == 0
    assert [corpus.words[i] for i in corpus.train] == train
    assert [corpus.words[i] for i in corpus.test] == [t if t in freq else "<unk>" for t in tokens[-n_test:]]
    unseen = sum(t not in freq for t in tokens[-n_test:])
    assert unseen == 4 and corpus.oov_rate("test") == pytest.approx(
        unseen / n_test
    )  # import, zz_rare x2, print
    q = {w: (freq.get(w, 0) + 1) / (n_train + len(corpus.words)) for w in corpus.words}
    expected = -np.mean([math.log(q[corpus.words[i]]) for i in corpus.test])
    assert word_lm.unigram_nll(corpus, "test") == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# the smoke run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.py"
    path.write_text(TEXT, encoding="utf-8")
    root = str(tmp_path_factory.mktemp("runs"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = word_lm.main(["--preset", "smoke", "--text", str(path), "--run-root", root, "--quiet"])
    corpus = word_lm.make_corpus(TEXT, vocab=40, min_count=1)
    return result, out.getvalue(), corpus


def test_smoke_writes_results_table_plot_and_samples(smoke):
    result, out, corpus = smoke
    res, root = result.results, result.run_dir
    assert sorted(os.listdir(root)) == [
        "config.json", "full", "huffman", "results.json", "samples.txt", "word_lm.png",
    ]  # fmt: skip
    assert is_png(os.path.join(root, "word_lm.png"))
    with open(os.path.join(root, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(res))
    v = len(corpus.words)
    assert res["corpus"]["vocab_size"] == v and res["corpus"]["oov_rate"]["test"] == corpus.oov_rate("test")
    assert [r["softmax"] for r in res["runs"]] == ["full", "huffman"]
    tree = jr.softmax.huffman_tree(corpus.counts)
    n_batch = 4 * 6  # smoke: batch 4 x window 6
    for r in res["runs"]:
        assert r["steps"] == 4 and r["diverged_at"] is None
        assert 1 < r["test_ppl"] < 4 * v and math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0
        rows = runner.read_jsonl(os.path.join(r["run_dir"], "metrics.jsonl"))
        assert [row["step"] for row in rows] == [2, 4] and {"valid_ppl", "test_nll", "ppl"} <= set(rows[-1])
        assert [c["valid_ppl"] for c in r["curve"]] == [row["valid_ppl"] for row in rows]
        assert r["test_nll"] == rows[-1]["test_nll"] and r["valid_nll"] == rows[-1]["valid_nll"]
        assert r["memory"]["xla_temp_bytes"] is None or r["memory"]["xla_temp_bytes"] > 0
    full, huff = res["runs"]
    assert full["memory"]["analytic_bytes"] == 2 * 4 * n_batch * v
    assert huff["memory"]["analytic_bytes"] == 2 * 4 * n_batch * 8 + 9 * n_batch * tree.depth
    assert full["out_params"] == 8 * v + v and huff["out_params"] == (v - 1) * (8 + 1)
    assert full["params"] - full["out_params"] == huff["params"] - huff["out_params"] == v * 8 + 4 * 8 * 17
    assert huff["label"] == f"huffman (depth {tree.depth}, mean {huff['tree']['mean_code_length_train']:.1f})"
    # the table as printed: one line per model and reference, the numbers of results.json
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[head].split()[:5] == ["model", "test", "ppl", "valid", "ppl"]
    for row, line in zip(res["runs"] + res["references"], lines[head + 2 : head + 6]):
        assert line.startswith(row["label"])
        cells = line[len(row["label"]) :].split()
        assert cells[:2] == [f"{row['test_ppl']:.1f}", f"{row['valid_ppl']:.1f}"]
    assert lines[head + 5].startswith("uniform (V)") and f"{float(v):.1f}" in lines[head + 5]
    assert "\n".join(lines[head : head + 6]) == res["table"]
    # samples: 8 vocabulary words each, printed after the prime and in samples.txt
    samples = open(os.path.join(root, "samples.txt"), encoding="utf-8").read()
    for name in ("full", "huffman"):
        text = res["samples"][name]
        assert len(text.split()) + text.count("\n") == 8  # the words of a line, and one <eos> per break
        assert f"def {text}" in out and f"def {text}" in samples


# an independent numpy word LM (float64): gate order i, f, g, o; x @ W


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _paths(children: np.ndarray, root: int) -> dict:
    """word -> [(inner node, bit), ...] from the root, by walking the tree's ``children``."""
    out, todo = {}, [(root, [])]
    while todo:
        node, path = todo.pop()
        for bit in (0, 1):
            child = int(children[node, bit])
            if child < 0:
                out[~child] = [*path, (node, bit)]
            else:
                todo.append((child, [*path, (node, bit)]))
    return out


def _np_nll(params, ids, streams, log_p) -> float:
    """The docstring loop of ``stream_nll``: ``S`` contiguous streams from the zero state."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    n = len(ids) - 1
    s = min(streams, n)
    length = -(-n // s)
    hidden = p["rnn"]["W_hh"].shape[0]
    total = 0.0
    for k in range(s):
        h = c = np.zeros(hidden)
        for t in range(k * length, min((k + 1) * length, n)):
            a = p["embed"][ids[t]] @ p["rnn"]["W_xh"] + h @ p["rnn"]["W_hh"] + p["rnn"]["b"]
            i, f, g, o = np.split(a, 4)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
            total -= log_p(p["out"], h, ids[t + 1])
    return total / n


def _saved_params(run):
    (ckpt,) = os.listdir(os.path.join(run["run_dir"], "checkpoints"))
    step, state, _ = runner.load_checkpoint(os.path.join(run["run_dir"], "checkpoints", ckpt))
    assert step == 4
    return state["params"]


def test_perplexities_are_exp_of_the_mean_nll_recomputed_from_the_saved_params(smoke):
    result, _, corpus = smoke
    full, huff = result.results["runs"]

    def full_log_p(out, h, y):
        z = h @ out["W"] + out["b"]
        return z[y] - z.max() - math.log(np.exp(z - z.max()).sum())

    children = np.asarray(jr.softmax.huffman_tree(corpus.counts).children)
    paths = _paths(children, len(corpus.words) - 2)  # a Huffman tree's root is inner node V - 2

    def tree_log_p(out, h, y):  # sigma(z) for bit 0, sigma(-z) for bit 1, down the path
        return sum(-np.log1p(np.exp(-(1 - 2 * bit) * (out["W"][n] @ h + out["b"][n]))) for n, bit in paths[y])

    streams = word_lm.PRESETS["smoke"]["eval_streams"]
    for run, log_p in ((full, full_log_p), (huff, tree_log_p)):
        params = _saved_params(run)
        for split in ("valid", "test"):
            nll = _np_nll(params, getattr(corpus, split), streams, log_p)
            assert run[f"{split}_nll"] == pytest.approx(nll, rel=1e-5), (run["softmax"], split)
            assert run[f"{split}_ppl"] == pytest.approx(math.exp(nll), rel=1e-5)


def test_time_updates_times_every_update_in_rounds():
    calls = collections.Counter()

    def update(name):
        def fn(state, step):
            calls[name] += 1
            return state + 1

        return fn

    times = word_lm.time_updates({"a": update("a"), "b": update("b")}, {"a": 0, "b": 0}, steps=3, rounds=2)
    assert calls == {"a": 7, "b": 7}  # a warm-up call, then 2 rounds of 3
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2} and min(times["a"] + times["b"]) >= 0


# --------------------------------------------------------------------------------------------------
# command line


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--softmax", "flat"], ["--softmax", "flat"]),
        (["--softmax", "full", "full"], ["--softmax", "at most once"]),
        (["--valid-fraction", "0.5", "--test-fraction", "0.5"], ["--valid-fraction + --test-fraction"]),
        (["--vocab", "0"], ["--vocab", ">= 1"]),
        (["--lr", "nan"], ["--lr", "finite"]),
        (["--text", "no such file.txt"], ["--text", "not a readable file"]),
        (["--corpus", "wiki"], ["--corpus", "stdlib"]),
        (["--preset", "smoke", "--seq-length", "500"], ["split has", "--seq-length"]),
    ],
    ids=["softmax", "twice", "fractions", "vocab", "nan", "missing-text", "corpus", "too-short"],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, words):
    if "--seq-length" in argv:
        (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
        argv = [*argv, "--text", str(tmp_path / "t.txt")]
    with pytest.raises(SystemExit) as e:
        runner.run_cli(lambda: word_lm.main([*argv, "--run-root", str(tmp_path), "--quiet"]))
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0]
    assert not os.path.exists(tmp_path / "word_lm")  # nothing was started


def test_presets_are_complete_configs():
    for name in word_lm.PRESETS:
        assert runner.config_cli(word_lm.Config, word_lm.PRESETS, ["--preset", name]).preset == name
    quick = runner.config_cli(word_lm.Config, word_lm.PRESETS, ["--preset", "quick"])
    assert quick.softmax == ("full", "huffman", "balanced") and quick.vocab >= 10000
