"""The README's Python examples run as written, each block on its own (as a reader would paste it)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 5, "README lost its python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"{README}:block{index}", "exec"), namespace)
    if index == 0:  # the quickstart's shapes, as its comments state
        assert namespace["ys"].shape == (100, 16, 128)
        assert namespace["h"].shape == (16, 128)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in head] == ["make demo", "make test"]
