"""Small helpers the test modules share (the tests folder is on sys.path: ``from helpers import ...``)."""


def is_png(path) -> bool:
    """Whether the file at ``path`` starts with the PNG signature."""
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"
