"""PNG plots of a run's metrics (matplotlib, Agg backend; imported inside the functions).

* :func:`plot_losses` -- loss and task error against updates (``error_label`` says what the error is);
* :func:`plot_dynamics` -- ``rho(W_hh)`` and Pascanu's Omega against updates;
* :func:`plot_gradient_flow` -- the curve ``||dL/dh_k||`` against ``k``, at the start and the end;
* :func:`plot_success` -- for sweeps, the success rate against the sequence length;
* :func:`plot_run` -- the first three for a run directory written by :func:`experiments.runner.train`.

Each function takes plain rows (dicts, as in ``metrics.jsonl``), writes one PNG and returns its path.
Metrics a row does not have are skipped; a plot with nothing to show is not written (``None``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

__all__ = [
    "error_axis_label",
    "plot_dynamics",
    "plot_gradient_flow",
    "plot_losses",
    "plot_run",
    "plot_success",
    "pyplot",
    "save_figure",
]


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[Mapping], key: str):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def save_figure(fig, path: str) -> str:
    """Save ``fig`` as a PNG at ``path`` (creating its folder), close it, return ``path``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


_LEGEND = {
    "loss": "loss (training batch)",
    "eval_loss": "eval_loss (held-out batch)",
    "error": "error (training batch)",
    "eval_error": "eval_error (held-out batch)",
}


def _curves_plot(rows, panels, path, title) -> str | None:
    """One panel per ``(ylabel, keys, log_y)`` that has data; each key a line against ``step``."""
    panels = [(label, [k for k in keys if _series(rows, k)[0]], log) for label, keys, log in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (label, keys, log) in zip(axes[0], panels):
        for k in keys:
            ax.plot(*_series(rows, k), label=_LEGEND.get(k, k))
        ax.set_xlabel("updates")
        ax.set_ylabel(label)
        if log and all(v > 0 for k in keys for v in _series(rows, k)[1]):
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def error_axis_label(error_label: str | None = None, width: int = 34) -> str:
    """The y label of an error panel: ``"error: <what it is>"`` wrapped to ``width`` characters a line,
    e.g. ``"error: fraction of sequences whose\nsquared error is above 0.04"``; a trailing note in
    parentheses (a source, say) is left out of the axis."""
    import re
    import textwrap

    what = re.sub(r"\s*\([^()]*\)$", "", error_label or "") or "fraction of wrong sequences"
    return "\n".join(textwrap.wrap(f"error: {what}", width))


def plot_losses(
    rows: Sequence[Mapping], path: str, title: str = "", error_label: str | None = None
) -> str | None:
    """Loss (log scale) and task error (``error``, ``eval_error``, ``eval_loss`` if present) vs updates.

    ``error_label`` is what the error measures (e.g. :func:`experiments.tasks.describe_error`, "fraction
    of sequences whose squared error is above 0.04"); the error panel's axis says it."""
    return _curves_plot(
        rows,
        [
            ("loss", ["loss", "eval_loss"], True),
            (error_axis_label(error_label), ["error", "eval_error"], False),
        ],
        path,
        title,
    )


def plot_dynamics(rows: Sequence[Mapping], path: str, title: str = "") -> str | None:
    """``rho(W_hh)`` (with the line ``rho = 1``) and Pascanu's Omega against updates."""
    out = _curves_plot(rows, [("rho(W_hh)", ["rho"], False), ("Omega", ["omega"], False)], path, title)
    return out


def plot_gradient_flow(flows: Sequence[Mapping], path: str, title: str = "") -> str | None:
    """``||dL/dh_k||`` against ``k`` (log scale), one line per row ``{"step", "norms"}``."""
    flows = [f for f in flows if f.get("norms")]
    if not flows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for f in flows:
        ax.plot(range(1, len(f["norms"]) + 1), f["norms"], label=f"after {f['step']} updates")
    ax.set_xlabel("time step k")
    ax.set_ylabel("||dL/dh_k||")
    if all(v > 0 for f in flows for v in f["norms"]):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_success(results: Mapping[str, Mapping[int, float]], path: str, title: str = "") -> str:
    """Success rate against sequence length, one line per model: ``{model: {length: rate}}``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for model, by_length in results.items():
        lengths = sorted(by_length)
        ax.plot(lengths, [by_length[t] for t in lengths], marker="o", label=model)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_run(run_dir: str, error_label: str | None = None) -> list[str]:
    """Write ``losses.png``, ``dynamics.png`` and ``gradient_flow.png`` into ``run_dir``.

    Reads ``metrics.jsonl`` and ``gradient_flow.jsonl``; returns the paths written. ``error_label``:
    what the logged ``error`` is, for the axis of its panel (:func:`plot_losses`).
    """
    from experiments.runner import read_jsonl

    title = os.path.basename(os.path.dirname(os.path.abspath(run_dir)))
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    flow_path = os.path.join(run_dir, "gradient_flow.jsonl")
    flows = read_jsonl(flow_path) if os.path.exists(flow_path) else []
    written = [
        plot_losses(rows, os.path.join(run_dir, "losses.png"), title, error_label),
        plot_dynamics(rows, os.path.join(run_dir, "dynamics.png"), title),
        plot_gradient_flow(flows, os.path.join(run_dir, "gradient_flow.png"), title),
    ]
    return [p for p in written if p is not None]


if __name__ == "__main__":  # a library module: say so and name the scripts (exit 2)
    from experiments import not_a_script

    not_a_script("plots")
