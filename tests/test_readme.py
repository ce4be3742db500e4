"""The README's Python examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    spaces = []
    for code in blocks:  # each block stands alone, as a reader would paste it
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
        spaces.append(namespace)
    # the quickstart's shapes, as its comments state
    assert spaces[0]["ys"].shape == (100, 16, 128)
    assert spaces[0]["h"].shape == (16, 128)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in head] == ["make demo", "make test"]
