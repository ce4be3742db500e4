"""What the framework modules (:mod:`jaxrnn.nnx`, :mod:`jaxrnn.linen`, :mod:`jaxrnn.eqx`) share: the
error for a framework that is not installed."""

from __future__ import annotations

__all__ = ["missing"]


def missing(module: str, package: str, error: ImportError) -> ImportError:
    """An ImportError that says which extra installs ``package`` for ``module``."""
    extra = {"flax": "flax", "equinox": "equinox"}.get(package, package)
    return ImportError(
        f"{module} needs {package}, which is not installed ({error}); install it with "
        f"pip install 'jaxrnn[{extra}]' (or pip install {package})"
    )
