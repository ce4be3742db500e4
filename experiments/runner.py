"""The machinery every experiment script shares: CLI, training loop, logging, checkpoints, sharding.

An experiment script is a frozen dataclass of settings, a dict of presets, and a ``main`` that hands
its pure functions to :func:`train`::

    @dataclasses.dataclass(frozen=True)
    class Config(runner.TrainConfig):
        length: int = runner.arg(100, "sequence length T", min=1)
        task: str = runner.arg("adding", "which task", choices=("adding", "copy"))

    PRESETS = {"quick": dict(steps=500, batch_size=16), "paper": dict(steps=100_000, batch_size=128)}

    def main(argv=None):
        config = runner.config_cli(Config, PRESETS, argv, name="adding", description=__doc__)
        result = runner.train(config, name="adding", init_fn=..., loss_fn=..., sample_fn=...,
                              optimizer=optax.adam(config.lr))
        plots.plot_run(result.run_dir)

    if __name__ == "__main__":
        runner.run_cli(main)

Command line (:func:`config_cli`, :func:`run_cli`): every field is an option; ``--help`` lists them
with their defaults and the presets. Exit statuses of every script:

* 0 -- done (also a run that diverged under ``--allow-divergence``);
* 2 -- bad command-line input: an unknown option, a value of the wrong type, below its minimum, not
  one of its choices, or a float that is not finite (``--lr nan``, ``--lr inf``: every float option of
  every script must be finite); one line ``error: <message naming the option>`` on stderr, no usage
  dump (:class:`UsageError`; ``experiments.bench`` uses the same :class:`ArgumentParser`);
* 3 -- the training diverged: its loss became NaN or infinite (:class:`Diverged`; one line
  ``error: training diverged: ...`` naming the step and the run directory). ``--allow-divergence``
  makes it a warning line and training goes on (exit 0). Scripts that train several models
  (``sweep.py``'s adding / copying / digits, ``temporal_order``, ``demo``) finish and record every run
  first (a diverged run stops early, its metrics NaN), then exit 3 naming the runs that diverged
  (:func:`report_divergence`);
* 1 -- anything else: a traceback (a bug, not bad input).

What a run leaves in ``runs/<name>/<timestamp>/``:

* ``config.json`` -- the resolved config (preset included), the jax version and the devices;
* ``metrics.jsonl`` -- one JSON object per logged step (``step``, ``loss``, the loss's aux metrics,
  ``grad_norm``, ``eval_fn``'s metrics, ``wall_s``; ``"diverged": true`` on the first logged step
  whose loss is NaN or infinite);
* ``gradient_flow.jsonl`` -- ``{"step", "norms"}`` at the start and the end, when ``flow_fn`` is given;
* ``checkpoints/step_XXXXXXXX.ckpt`` -- the newest ``keep_checkpoints`` checkpoints;
* ``summary.json`` -- the final metrics row, the step training stopped at, why (``stopped_at``,
  ``diverged_at``).

Append-only logs (``metrics.jsonl``, ``gradient_flow.jsonl``, ``temporal_order``'s ``points.jsonl``)
are written a line at a time (:func:`append_jsonl`). A run killed mid-write leaves a torn last line;
on ``--resume`` every appender first calls :func:`repair_jsonl`, which truncates the file to the end
of its last complete line and says so in one ``warning:`` line, so that the next row does not get
glued to the fragment. (:func:`train` then rewrites its two logs from the checkpoint it resumes from.)

Checkpoints: ``flax.serialization`` (msgpack), not orbax. The state here is a few small arrays
(params, optimizer state, step) plus the metric history, so one file per checkpoint is enough, and
one file makes both guarantees simple and exact: it is written to a temporary name, fsync'ed and
``os.replace``'d into place (atomic on POSIX), and it carries a SHA-256 of its payload, so a
truncated or garbled file is *detected* on load (then reported, and the previous checkpoint used).
Orbax writes a directory of tensorstore files with no checksum of the data: a flipped byte in a
chunk may fail to decompress or may restore silently wrong numbers, and its asynchronous
writer threads add machinery (and shutdown-ordering concerns) that a script of this size does not
need. (Orbax's strength, sharded arrays too big for one host, does not arise for these models: the
parameters are replicated on every device.)

Randomness: the PRNG state is ``(seed, step)``. Initial parameters come from
``split(PRNGKey(seed))[0]``; the batch of step ``s`` is ``sample_fn(fold_in(data_key, s))`` and
evaluation uses ``fold_in(eval_key, s)``. So a resumed run draws exactly the batches the
uninterrupted run would have drawn, and ends with bit-identical parameters on the same device set.

Sharding: one ``Mesh`` over all devices (all hosts) with the axis ``"batch"``; parameters and
optimizer state are replicated, batches are split along their batch axis (axis 1 of time-major
``(T, B, ...)`` arrays, axis 0 of ``(B,)`` arrays). The batch is generated *on the devices*, inside
the jitted update (``jax_threefry_partitionable`` makes the random numbers independent of the
sharding), so the same script runs on one CPU, eight GPUs or a TPU slice and gives the same results
up to floating-point summation order. Multi-host: see :func:`maybe_initialize_distributed`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_USAGE",
    "ArgumentParser",
    "Diverged",
    "TrainConfig",
    "TrainResult",
    "UsageError",
    "append_jsonl",
    "arg",
    "batch_shardings",
    "config_cli",
    "latest_checkpoint",
    "load_checkpoint",
    "json_default",
    "make_mesh",
    "maybe_initialize_distributed",
    "new_run_dir",
    "number",
    "read_jsonl",
    "repair_jsonl",
    "report_divergence",
    "resolve_run_dir",
    "run_cli",
    "save_checkpoint",
    "train",
    "write_atomic",
]


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


class UsageError(ValueError):
    """Bad command-line input: :func:`run_cli` prints ``error: <message>`` on one line and exits 2."""


class Diverged(RuntimeError):
    """Training diverged (its loss became NaN or infinite): :func:`run_cli` prints ``error: <message>``
    on one line and exits 3.

    ``result`` is the :class:`TrainResult` of the run that diverged (``None`` for a summary raised by
    :func:`report_divergence` over several runs), so that a script training several models can record
    the diverged one and go on.
    """

    def __init__(self, message: str, result: TrainResult | None = None):
        super().__init__(message)
        self.result = result


def arg(default: Any, help: str = "", *, min: float | None = None, choices: Sequence | None = None):
    """A dataclass field with CLI metadata: help text, a lower bound ``min``, allowed ``choices``.

    Use as ``length: int = arg(100, "sequence length T", min=1)``. ``min`` and ``choices`` are
    checked by :func:`config_cli` (and by ``TrainConfig.__post_init__`` for direct construction), and
    so is, for every float value, that it is finite (not NaN, not infinite).
    """
    metadata = {"help": help, "min": min, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict, set)):
        raise TypeError("arg: use a tuple (immutable) as the default of a frozen config field")
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings :func:`train` reads. Experiment configs subclass it and add their own fields."""

    steps: int = arg(1000, "number of parameter updates", min=1)
    batch_size: int = arg(
        32, "global batch size (split over all devices; must be a multiple of their count)", min=1
    )
    seed: int = arg(0, "PRNG seed (initial parameters, batches, evaluation)", min=0)
    log_every: int = arg(50, "log metrics every this many updates", min=1)
    checkpoint_every: int = arg(500, "write a checkpoint every this many updates (and at the end)", min=1)
    keep_checkpoints: int = arg(3, "how many of the newest checkpoints to keep", min=1)
    run_root: str = arg("runs", "runs are written to RUN_ROOT/<experiment>/<timestamp>/")
    resume: str = arg("", "continue a killed run: its run directory, or 'latest'")
    quiet: bool = arg(False, "no progress bar and no per-step log lines")
    allow_divergence: bool = arg(
        False, "a loss that becomes NaN or infinite is a warning and training goes on (default: exit 3)"
    )
    preset: str = arg("", "a named set of defaults, applied before the other options")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_value(f, getattr(self, f.name))


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_value(f: dataclasses.Field, value) -> None:
    lo, choices = f.metadata.get("min"), f.metadata.get("choices")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"{_option(f.name)} must be a finite number; got {v}")
        if lo is not None and v is not None and v < lo:
            raise UsageError(f"{_option(f.name)} must be >= {lo}; got {v}")
        if choices is not None and v is not None and v not in choices:
            raise UsageError(
                f"{_option(f.name)}: unknown value {v!r}; choose one of {', '.join(map(str, choices))}"
            )


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that an error raises :class:`UsageError` (one line, no usage dump).

    The parser of :func:`config_cli`; a script with a CLI of its own (``experiments.bench``) uses it
    too, with :func:`number` for its numeric options, and calls its ``main`` through :func:`run_cli`,
    so that every bad option is ``error: argument --x: ... (see --help)`` on one line and exit 2.
    ``--help`` prints the usage and exits 0 as usual.
    """

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def number(tp: type = float, *, min: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type=`` converter: ``tp`` (``int`` or ``float``) from a string, checked.

    A float must be finite (``nan``, ``inf``, ``-inf`` are rejected), and with ``min`` the value must
    be ``>= min``. A bad value raises ``argparse.ArgumentTypeError``, which the parser reports as
    ``argument --lr: must be a finite number; got 'nan'`` (with :class:`ArgumentParser`: a
    :class:`UsageError`, one line, exit 2). :func:`config_cli` uses it for every ``int`` and ``float``
    field (also inside ``tuple[...]`` and ``Optional[...]``).
    """
    if tp not in (int, float):
        raise TypeError(f"number: tp must be int or float; got {tp!r}")

    def convert(s: str):
        try:
            v = tp(s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if tp is int else 'a number'}; got {s!r}"
            ) from None
        if tp is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number; got {s!r}")
        if min is not None and v < min:
            raise argparse.ArgumentTypeError(f"must be >= {min}; got {v}")
        return v

    convert.__name__ = tp.__name__
    return convert


def _field_parser(tp) -> tuple[Callable[[str], Any], dict]:
    """``(convert, add_argument kwargs)`` for a field type: int/float/str/bool/tuple/Optional."""
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in targs:
        (inner,) = [a for a in targs if a is not type(None)]
        convert, kw = _field_parser(inner)
        return (lambda s: None if s.lower() == "none" else convert(s)), {**kw, "metavar": "X|none"}
    if origin is tuple:
        if len(targs) == 2 and targs[1] is Ellipsis:
            return _scalar(targs[0]), {"nargs": "*"}
        if targs and len({*targs}) == 1:
            return _scalar(targs[0]), {"nargs": len(targs)}
        raise TypeError(f"config_cli: unsupported tuple type {tp}; use tuple[T, ...] or tuple[T, T]")
    if tp is bool:
        return bool, {"action": argparse.BooleanOptionalAction}
    return _scalar(tp), {}


def _scalar(tp):
    if tp not in (int, float, str):
        raise TypeError(
            f"config_cli: unsupported field type {tp}; use int, float, str, bool, tuple, Optional"
        )
    return tp if tp is str else number(tp)


def config_cli(
    cls: type,
    presets: Mapping[str, Mapping[str, Any]],
    argv: Sequence[str] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    prog: str | None = None,
):
    """Build a frozen config ``cls`` from the command line: defaults < preset < explicit options.

    Every dataclass field ``foo_bar`` becomes ``--foo-bar`` (bools ``--foo-bar/--no-foo-bar``,
    ``tuple[int, ...]`` takes several values, ``Optional[X]`` also takes ``none``); its help text,
    lower bound and choices come from :func:`arg`. Numbers are read by :func:`number`: every ``float``
    option must be finite (``--lr nan``, ``--lr inf`` are errors), in every script. ``--preset NAME``
    (when ``cls`` has a ``preset`` field) applies ``presets[NAME]`` first, then the options given
    explicitly override it. With ``--resume RUN`` (and ``name`` given, to find ``'latest'``) the
    resumed run's saved config takes the place of the defaults, so ``--resume latest`` alone
    continues the run as it was started. In plain Python::

        values = defaults(cls) | saved_config(resume) | presets[preset] | explicit_options
        return cls(**values)

    Args:
      cls: a frozen dataclass (e.g. a subclass of :class:`TrainConfig`).
      presets: preset name -> ``{field: value}``; a typo in a field name raises ``TypeError``.
      argv: the arguments (default ``sys.argv[1:]``).
      name: the experiment name (``run_root/<name>/`` is where ``--resume latest`` looks).
      description: for ``--help`` (e.g. the script's ``__doc__``).
      prog: the command in the usage line; default ``python -m <the module defining cls>`` (e.g.
        ``python -m experiments.adding``, also when it runs as ``__main__``), else
        ``python -m experiments.<name>``.

    Returns:
      an instance of ``cls``.

    Raises:
      UsageError: an unknown option or preset, a bad value (below its ``min``, not in its
        ``choices``, not a number, a float that is NaN or infinite), or a ``ValueError`` from
        ``cls.__post_init__``; its message is one line naming the option. ``--help`` exits 0.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for pname, preset in presets.items():
        unknown = set(preset) - set(fields)
        if unknown:
            raise TypeError(f"config_cli: preset {pname!r} sets unknown fields {sorted(unknown)}")
    epilog = "presets:\n" + "\n".join(
        f"  {p}: " + ", ".join(f"{_option(k)} {v}" for k, v in kv.items()) for p, kv in presets.items()
    )
    first_line = (description or "").strip().splitlines()[0] if description else None
    parser = ArgumentParser(
        prog=prog or _prog(cls, name),
        description=first_line,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    converters = {}
    for f in fields.values():
        convert, kw = _field_parser(hints[f.name])
        converters[f.name] = convert
        if kw.get("action") is None:
            kw["type"] = convert
        choices = f.metadata.get("choices")
        if f.name == "preset":
            choices = tuple(presets)
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        if choices:
            help_text += f" {{{', '.join(map(str, choices))}}}"
        help_text += f" (default: {default!r})"
        parser.add_argument(_option(f.name), dest=f.name, default=argparse.SUPPRESS, help=help_text, **kw)
    explicit = vars(parser.parse_args(argv))

    values = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}
    if explicit.get("resume") and name is not None:
        run_root = explicit.get("run_root", values.get("run_root", "runs"))
        run_dir = resolve_run_dir(explicit["resume"], run_root, name)
        saved = _read_json(os.path.join(run_dir, "config.json"), "--resume")["config"]
        values.update({k: _from_json(v) for k, v in saved.items() if k in fields})
    preset = explicit.get("preset", "")  # a resumed run's preset is already in its saved values
    if preset:
        if preset not in presets:
            raise UsageError(f"--preset: unknown preset {preset!r}; choose one of {', '.join(presets)}")
        values.update(presets[preset])
    values.update(explicit)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)
    except ValueError as e:  # a check in __post_init__; UsageError passes through as it is
        raise UsageError(str(e)) from None


def _prog(cls: type, name: str | None) -> str | None:
    """``python -m <module>`` for the usage line: the module that defines ``cls`` (when it runs as
    ``__main__``, the name ``python -m`` gave it), else ``python -m experiments.<name>``, else argparse's
    default (the file name)."""
    module = getattr(cls, "__module__", None)
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None)
    if module and module != "__main__":
        return f"python -m {module}"
    return f"python -m experiments.{name}" if name else None


def _from_json(v):
    return tuple(v) if isinstance(v, list) else v


#: Exit statuses of :func:`run_cli` (the scripts' exit statuses).
EXIT_USAGE = 2
EXIT_DIVERGED = 3


def run_cli(main: Callable[[], Any]) -> Any:
    """Call ``main()`` and turn the expected failures into one line on stderr and an exit status.

    * :class:`UsageError` (bad command-line input): ``error: <message>``, exit status 2;
    * :class:`Diverged` (the training loss became NaN or infinite, without ``--allow-divergence``):
      ``error: <message>``, exit status 3.

    Other exceptions propagate with their traceback (exit status 1: they are bugs, not bad input).
    """
    try:
        return main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_DIVERGED) from None


# ----------------------------------------------------------------------------------------------
# Devices and sharding
# ----------------------------------------------------------------------------------------------


def maybe_initialize_distributed() -> bool:
    """``jax.distributed.initialize`` for multi-host runs, only when the environment asks for it.

    * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
      ``JAX_PROCESS_ID`` set: initialise with those.
    * ``JAX_DISTRIBUTED=auto``: ``jax.distributed.initialize()`` with jax's own cluster detection
      (SLURM, Open MPI, Cloud TPU pods, Kubernetes).
    * neither: do nothing (single process; all local devices are still used).

    Call it before anything touches the devices. Returns whether it initialised.

    Raises:
      UsageError: ``JAX_COORDINATOR_ADDRESS`` set without the other two variables.
    """
    if os.environ.get("JAX_DISTRIBUTED", "").lower() == "auto":
        jax.distributed.initialize()
        return True
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    try:
        num, pid = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError):
        raise UsageError(
            "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be set to "
            "integers too (or unset JAX_COORDINATOR_ADDRESS for a single-process run)"
        ) from None
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``Mesh`` with axis ``"batch"`` over ``devices`` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), ("batch",))


def _default_batch_axis(leaf) -> int | None:
    ndim = np.ndim(leaf)
    return None if ndim == 0 else (1 if ndim >= 2 else 0)


def batch_shardings(mesh: Mesh, batch, batch_axes=None):
    """``NamedSharding`` per leaf of ``batch``: split along its batch axis over ``mesh``'s ``"batch"``.

    Default batch axis: 1 for time-major ``(T, B, ...)`` leaves (``P(None, "batch")``), 0 for
    ``(B,)`` leaves (``P("batch")``), none (replicated) for scalars. ``batch_axes`` overrides it: a
    pytree prefix of ``batch`` with an int (the axis) or ``None`` (replicate) at each node.
    """
    if batch_axes is None:
        axes = jax.tree.map(_default_batch_axis, batch)
    else:
        axes = jax.tree.map(
            lambda ax, sub: jax.tree.map(lambda _: ax, sub), batch_axes, batch, is_leaf=lambda x: x is None
        )

    def spec(ax):
        return NamedSharding(mesh, P() if ax is None else P(*([None] * ax), "batch"))

    return jax.tree.map(spec, axes, is_leaf=lambda x: x is None)


def _replicated(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def _to_host(tree):
    """numpy copies of replicated arrays (the local replica: works on every host)."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, tree)


# ----------------------------------------------------------------------------------------------
# Run directories and files
# ----------------------------------------------------------------------------------------------


def _read_json(path: str, option: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(
            f"{option}: cannot read {path} ({e}); pass the directory of an existing run"
        ) from None


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file (a last line cut off by a kill is skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def repair_jsonl(path: str, warn: Callable[[str], None] | None = None) -> bool:
    """Make an append-only JSON-lines log safe to append to again: repair a torn last line.

    A run killed while it writes a row leaves the last line cut off (not valid JSON, no newline), and
    a row appended after it would be glued to the fragment. When the last line of ``path`` is not
    valid JSON, the file is truncated to the end of the last complete line (the line before it), and
    ``warn`` (default: ``warning: <message>`` on stderr) gets one line saying so. A last line that is
    valid JSON but lacks its newline gets the newline (also said). Only the last line is looked at: a
    kill tears at most that one (and :func:`read_jsonl` skips any line that does not parse). A
    missing or empty file is left alone.

    Every appender calls it before its first append to an existing log, i.e. on ``--resume``:
    :func:`train` for ``metrics.jsonl`` and ``gradient_flow.jsonl``, ``experiments.temporal_order``
    for ``points.jsonl``; :func:`append_jsonl` writes the rows.

    Returns:
      whether the file was changed.
    """
    warn = warn or _warn
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return False
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        terminated = f.read(1) == b"\n"
        end = size - 1 if terminated else size  # the last line is data[start:end]
        pos, buf = end, b""
        while pos > 0 and b"\n" not in buf:  # read backwards to the newline before the last line
            n = min(1 << 16, pos)
            pos -= n
            f.seek(pos)
            buf = f.read(n) + buf
        start = pos + buf.rfind(b"\n") + 1  # rfind -1 (no newline): pos is 0, start 0
        try:
            json.loads(buf[start - pos :])
            valid = True
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            valid = False
        if valid and terminated:
            return False
        if valid:
            f.seek(size)
            f.write(b"\n")
            msg = f"{path}: its last line had no newline (a write cut short); added the newline"
        else:
            f.truncate(start)
            msg = (
                f"{path}: its last line is torn ({size - start} bytes that are not valid JSON: a write cut "
                f"short by a kill); truncated the file to its last complete line before appending"
            )
        f.flush()
        os.fsync(f.fileno())
    warn(msg)
    return True


def append_jsonl(path: str, row: Mapping[str, Any]) -> None:
    """Append ``row`` to the JSON-lines log ``path`` as one line (``json.dumps(row) + "\\n"``).

    Before the first append to a log that a killed run may have left behind (``--resume``), call
    :func:`repair_jsonl` on it.
    """
    with open(path, "a") as f:
        f.write(json.dumps(row, default=json_default) + "\n")


def resolve_run_dir(resume: str, run_root: str, name: str) -> str:
    """The run directory ``--resume`` names: a path, or ``'latest'`` (newest in ``run_root/name``)."""
    if resume == "latest":
        base = os.path.join(run_root, name)
        runs = (
            sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
            if os.path.isdir(base)
            else []
        )
        if not runs:
            raise UsageError(f"--resume latest: no runs in {base}; start one without --resume")
        return os.path.join(base, runs[-1])
    if not os.path.isfile(os.path.join(resume, "config.json")):
        raise UsageError(f"--resume: {resume} is not a run directory (no config.json); pass one or 'latest'")
    return resume


def new_run_dir(run_root: str, name: str) -> str:
    """Create ``<run_root>/<name>/<timestamp>/`` (and its ``checkpoints/``); UsageError if not writable."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(run_root, name)
    try:
        os.makedirs(base, exist_ok=True)
        for i in range(1000):
            path = os.path.join(base, stamp if i == 0 else f"{stamp}-{i}")
            try:
                os.mkdir(path)
                os.mkdir(os.path.join(path, "checkpoints"))
                return path
            except FileExistsError:
                continue
        raise OSError("too many runs started in the same second")
    except OSError as e:
        raise UsageError(
            f"--run-root: cannot create a run directory in {base} ({e.strerror or e}); "
            "pass a writable directory with --run-root"
        ) from None


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing: a synced temporary file renamed into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _float(x) -> float:
    """A float from a (replicated) scalar array, on any host."""
    return float(x.addressable_data(0)) if isinstance(x, jax.Array) else float(x)


def json_default(x):
    """``json.dumps(default=...)`` for numpy / jax scalars and arrays (as lists), else ``str``."""
    if isinstance(x, (np.generic, jax.Array)):
        return np.asarray(x).tolist()
    return str(x)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

_MAGIC = b"JAXRNN-CKPT-1\n"


def _ckpt_path(ckpt_dir: str, step: int) -> str:
    return os.path.join(ckpt_dir, f"step_{step:08d}.ckpt")


def _ckpt_steps(ckpt_dir: str) -> list[int]:
    steps = []
    for fname in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []:
        if fname.startswith("step_") and fname.endswith(".ckpt"):
            try:
                steps.append(int(fname[5:-5]))
            except ValueError:
                pass
    return sorted(steps)


def save_checkpoint(ckpt_dir: str, step: int, state, records: Mapping[str, Any], keep: int) -> str:
    """Write ``state`` (a pytree) and ``records`` (JSON-able) as ``step_XXXXXXXX.ckpt``, atomically.

    File layout: a magic line, the SHA-256 hex digest of the payload and a newline, then the payload
    (``flax.serialization.msgpack_serialize`` of ``{"step", "state", "records"}``). Written to a
    temporary name, fsync'ed, then ``os.replace``'d; afterwards all but the newest ``keep``
    checkpoints are deleted. Returns the path.
    """
    from flax import serialization

    payload = serialization.msgpack_serialize(
        {"step": step, "state": serialization.to_state_dict(_to_host(state)), "records": json.dumps(records)}
    )
    path = _ckpt_path(ckpt_dir, step)
    write_atomic(path, _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    for old in _ckpt_steps(ckpt_dir)[:-keep]:
        os.remove(_ckpt_path(ckpt_dir, old))
    return path


def load_checkpoint(path: str, target=None):
    """``(step, state, records)`` from :func:`save_checkpoint`'s file; ``state`` shaped like ``target``.

    With ``target=None`` the state is the raw nested dict of numpy arrays (for inspection).

    Raises:
      ValueError: the file is truncated, garbled (checksum mismatch) or not a checkpoint.
    """
    from flax import serialization

    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 65:
        raise ValueError(f"{path}: not a checkpoint (bad header; truncated?)")
    digest, payload = data[len(_MAGIC) : len(_MAGIC) + 64], data[len(_MAGIC) + 65 :]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError(f"{path}: checksum mismatch (truncated or corrupt)")
    raw = serialization.msgpack_restore(payload)
    state = raw["state"] if target is None else serialization.from_state_dict(target, raw["state"])
    return int(raw["step"]), state, json.loads(raw["records"])


def latest_checkpoint(ckpt_dir: str, target, warn=None):
    """The newest checkpoint in ``ckpt_dir`` that loads: ``(step, state, records)`` or ``None``.

    A checkpoint that fails to load (truncated, garbled) is reported through ``warn`` (default:
    a line on stderr naming the file) and the previous one is tried; the bad file is kept, renamed
    to ``*.corrupt``, for inspection.
    """
    warn = warn or _warn
    for step in reversed(_ckpt_steps(ckpt_dir)):
        path = _ckpt_path(ckpt_dir, step)
        try:
            return load_checkpoint(path, target)
        except Exception as e:  # noqa: BLE001 -- any failure to read means: use the previous one
            warn(f"checkpoint {path} is unusable ({e}); falling back to the previous checkpoint")
            if jax.process_index() == 0:
                os.replace(path, path + ".corrupt")
    return None


# ----------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------

_SHOWN = (("loss", "loss"), ("error", "error"), ("rho", "rho"), ("omega", "Omega"), ("grad_norm", "|g|"))


def _fmt(row: Mapping[str, Any]) -> str:
    """The progress line's metrics: ``loss``, ``error``, ``rho``, ``Omega``, ``|g|``, each only when the
    row has it (``error`` falling back to ``eval_error``). A metric that does not apply to a run is never
    in its rows -- ``rho(W_hh)`` for a cell whose ``W_hh`` is not square (the LSTM, the GRU), Omega when
    the run does not compute it -- so its line leaves it out rather than showing ``-``."""
    parts = []
    for key, label in _SHOWN:
        value = row.get(key, row.get(f"eval_{key}"))
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.4g}")
    return "  ".join(parts)


class _Progress:
    """A rich progress bar on a terminal; plain one-line logs otherwise; nothing when quiet."""

    def __init__(self, total: int, start: int, quiet: bool):
        self.quiet, self.total, self.bar = quiet, total, None
        if not quiet and sys.stderr.isatty() and jax.process_index() == 0:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = [TextColumn("step"), MofNCompleteColumn(), BarColumn(bar_width=20)]
            columns += [TextColumn("{task.fields[stats]}"), TimeRemainingColumn()]
            self.bar = Progress(*columns)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, stats="")

    def update(self, step: int, row: Mapping[str, Any] | None = None):
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **({"stats": _fmt(row)} if row else {}))
        elif row is not None and not self.quiet and jax.process_index() == 0:
            print(f"step {step}/{self.total}  {_fmt(row)}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    params: Any  # final parameters (replicated jax arrays)
    opt_state: Any
    step: int  # the last update done
    stopped_at: int | None  # the step ``stop_fn`` ended training at, else None
    rows: list[dict]  # the metrics.jsonl rows, including those of earlier (resumed) sessions
    run_dir: str | None  # None on processes other than 0
    diverged_at: int | None = None  # the first logged step whose training loss was NaN or infinite


def _resume_mismatch(saved: Mapping[str, Any], config) -> list[str]:
    may_differ = {"steps", "resume", "quiet", "preset", "run_root", "keep_checkpoints", "allow_divergence"}
    now = json.loads(json.dumps(dataclasses.asdict(config), default=json_default))
    return [
        f"{_option(k)} (run: {saved.get(k)!r}, now: {now[k]!r})"
        for k in now
        if k not in may_differ and saved.get(k) != now[k]
    ]


def train(
    config: TrainConfig,
    *,
    name: str,
    init_fn: Callable[[jax.Array], Any],
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict]],
    sample_fn: Callable[[jax.Array], Any],
    optimizer: optax.GradientTransformation,
    eval_fn: Callable[[Any, jax.Array], dict] | None = None,
    flow_fn: Callable[[Any, jax.Array], jax.Array] | None = None,
    stop_fn: Callable[[dict], bool] | None = None,
    batch_axes=None,
    mesh: Mesh | None = None,
) -> TrainResult:
    """Train with data parallelism, logging, checkpoints and ``--resume``; the loop every script uses.

    In plain Python (one device, no checkpoints, no logging)::

        init_key, data_key, eval_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
        params = init_fn(init_key);  opt_state = optimizer.init(params)
        for step in range(1, config.steps + 1):
            batch = sample_fn(jax.random.fold_in(data_key, step))
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)  # + value=loss, ...
            params = optax.apply_updates(params, updates)
            if step % config.log_every == 0 or step == config.steps:
                row = {"step": step, "loss": loss, **aux, "grad_norm": global_norm(grads),
                       **eval_fn(params, jax.random.fold_in(eval_key, step))}
                if stop_fn(row): break
                if not isfinite(row["loss"]) and not config.allow_divergence:
                    raise Diverged(...)  # after its row, a checkpoint and summary.json are written

    ``loss``, ``aux`` and ``grad_norm`` of a row belong to the step's batch and the parameters
    *before* its update; ``eval_fn``'s metrics to the parameters *after* it. Everything stays a
    device array inside the jitted step; floats are made only for the logged rows. ``eval_fn``'s keys
    are logged as they are (use ``"error"``, ``"rho"``, ``"omega"`` to have them shown in the progress
    bar). A checkpoint is written every ``checkpoint_every`` steps and at the end.

    Divergence: at each logged step the training loss (already a float there: no extra device sync) is
    checked. The first logged step where it is NaN or infinite is ``diverged_at`` (its row gets
    ``"diverged": true``, ``summary.json`` a ``"diverged_at"``). Then, by default, training stops as
    if ``stop_fn`` had stopped it (a final checkpoint and ``summary.json`` are written) and
    :class:`Diverged` is raised, which :func:`run_cli` reports in one line, exit status 3; resuming a
    run that diverged raises it again. With ``config.allow_divergence`` (``--allow-divergence``) one
    warning line is printed and training goes on; the result's ``diverged_at`` says so. A loss that is
    non-finite only between logged steps and recovers (an optimizer such as
    ``jaxrnn.optim.pascanu_fallback`` skips such updates by design) is not a divergence; one that
    stays non-finite (NaN parameters) is caught at the next logged step.

    Args:
      config: a :class:`TrainConfig` (or subclass): ``steps``, ``batch_size``, ``seed``, ``log_every``,
        ``checkpoint_every``, ``keep_checkpoints``, ``run_root``, ``resume``, ``quiet``,
        ``allow_divergence``; the whole config goes into ``config.json``.
      name: the experiment name; runs go to ``config.run_root/name/<timestamp>/``.
      init_fn: ``key -> params`` (a pytree of arrays).
      loss_fn: ``(params, batch) -> (scalar loss, aux)``, ``aux`` a dict of scalar metrics (e.g.
        ``{"error": ...}``). A key ``"update_args"`` (a dict) is not logged but passed as keyword
        arguments to ``optimizer.update`` (with ``value=loss``) when the optimizer is an
        ``optax.GradientTransformationExtraArgs``.
      sample_fn: ``key -> batch``, jittable; leaves time-major ``(T, B, ...)`` or ``(B, ...)`` with
        ``B = config.batch_size`` (see :func:`batch_shardings`, ``batch_axes``).
      optimizer: an optax transformation.
      eval_fn: ``(params, key) -> dict`` of scalars, jitted, run at each logged step (held-out error,
        ``rho(W_hh)``, Pascanu's Omega, ...).
      flow_fn: ``(params, key) -> (T,)`` gradient-flow curve ``||dL/dh_k||``, recorded at the start
        and the end (``gradient_flow.jsonl``).
      stop_fn: ``row -> bool`` on the host at each logged step (floats); ``True`` stops training (e.g.
        ``lambda r: r["eval_error"] < 0.01``), recorded as ``stopped_at``.
      batch_axes: overrides the batch axis per leaf (see :func:`batch_shardings`).
      mesh: default :func:`make_mesh` over all devices.

    Returns:
      :class:`TrainResult`.

    Raises:
      UsageError: ``batch_size`` not a multiple of the device count, an unwritable ``run_root``, a
        ``resume`` that names no run or whose saved config differs (other than ``steps``).
      Diverged: the training loss became NaN or infinite and ``config.allow_divergence`` is false;
        its ``result`` is the :class:`TrainResult` (run directory, rows, ``diverged_at``).
    """
    mesh = make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if config.batch_size % n_dev:
        k = -(-config.batch_size // n_dev) * n_dev
        raise UsageError(
            f"--batch-size {config.batch_size} is not divisible by the {n_dev} devices; "
            f"pass a multiple of {n_dev} (e.g. --batch-size {k})"
        )
    is_main = jax.process_index() == 0
    init_key, data_key, eval_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)

    # ---- run directory, config.json, and (with --resume) the newest valid checkpoint
    config_row = {
        "name": name,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=json_default)),
        "jax_version": jax.__version__,
        "devices": [str(d) for d in mesh.devices.flat],
        "process_count": jax.process_count(),
    }
    params = init_fn(init_key)
    opt_state = optimizer.init(params)
    step, records = 0, {"metrics": [], "gradient_flow": []}
    if config.resume:
        run_dir = resolve_run_dir(config.resume, config.run_root, name)
        saved = _read_json(os.path.join(run_dir, "config.json"), "--resume")
        diff = _resume_mismatch(saved["config"], config)
        if diff:
            raise UsageError(
                f"--resume {run_dir}: options differ from the run's config.json: {'; '.join(diff)}; "
                "drop them or start a new run"
            )
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        if is_main:  # temporary files of a write that a kill interrupted
            for fname in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []:
                if ".ckpt.tmp" in fname:
                    os.remove(os.path.join(ckpt_dir, fname))
        found = latest_checkpoint(ckpt_dir, {"params": params, "opt": opt_state})
        if found is not None:
            step, state, records = found
            params, opt_state = state["params"], state["opt"]
        elif is_main:
            print(f"warning: no usable checkpoint in {run_dir}; starting from step 0", file=sys.stderr)
    else:
        run_dir = new_run_dir(config.run_root, name) if is_main else None
    ckpt_dir = os.path.join(run_dir, "checkpoints") if run_dir else None
    if is_main:
        write_atomic(os.path.join(run_dir, "config.json"), json.dumps(config_row, indent=2).encode())
        # rewrite the logs from the checkpoint's records: rows after it (from a killed session) go,
        # and so does a torn last line (repair_jsonl says so first)
        for fname, rows in (
            ("metrics.jsonl", records["metrics"]),
            ("gradient_flow.jsonl", records["gradient_flow"]),
        ):
            if config.resume:
                repair_jsonl(os.path.join(run_dir, fname))
            write_atomic(os.path.join(run_dir, fname), "".join(json.dumps(r) + "\n" for r in rows).encode())

    # ---- jitted functions
    replicated = NamedSharding(mesh, P())
    params, opt_state = _replicated((params, opt_state), mesh)
    batch_shape = jax.eval_shape(sample_fn, data_key)
    shardings = batch_shardings(mesh, batch_shape, batch_axes)
    for (path, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(batch_shape), jax.tree.leaves(shardings)):
        axis = len(sh.spec) - 1 if sh.spec else None
        if axis is not None and leaf.shape[axis] % n_dev:
            raise ValueError(
                f"train: sample_fn's leaf {jax.tree_util.keystr(path)} has shape {leaf.shape}; its batch "
                f"axis {axis} must be a multiple of the {n_dev} devices (set batch_axes= if it is another)"
            )
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def update(params, opt_state, step):
        batch = jax.lax.with_sharding_constraint(sample_fn(jax.random.fold_in(data_key, step)), shardings)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        aux = dict(aux)
        update_args = aux.pop("update_args", {})
        if extra_args:
            updates, opt_state = optimizer.update(grads, opt_state, params, value=loss, **update_args)
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}

    update = jax.jit(update, out_shardings=(replicated, replicated, replicated))
    evaluate = jax.jit(lambda p, s: eval_fn(p, jax.random.fold_in(eval_key, s))) if eval_fn else None
    flow = jax.jit(lambda p, s: flow_fn(p, jax.random.fold_in(eval_key, s))) if flow_fn else None

    def record_flow(step):
        if flow is not None:
            norms = np.asarray(flow(params, np.int32(step)).addressable_data(0)).tolist()
            records["gradient_flow"].append({"step": step, "norms": norms})
            if is_main:
                append_jsonl(os.path.join(run_dir, "gradient_flow.jsonl"), records["gradient_flow"][-1])

    def checkpoint(step):
        if is_main:
            save_checkpoint(
                ckpt_dir, step, {"params": params, "opt": opt_state}, records, config.keep_checkpoints
            )

    # ---- the loop
    if step == 0:
        record_flow(0)
    stopped_at = next((r["step"] for r in records["metrics"] if r.get("stopped")), None)
    diverged_at = next((r["step"] for r in records["metrics"] if r.get("diverged")), None)
    halted = lambda: stopped_at is not None or (diverged_at is not None and not config.allow_divergence)
    t0 = time.perf_counter() - (records["metrics"][-1]["wall_s"] if records["metrics"] else 0.0)
    progress = _Progress(config.steps, step, config.quiet)
    try:
        while step < config.steps and not halted():
            step += 1
            params, opt_state, metrics = update(params, opt_state, np.int32(step))
            if step % config.log_every == 0 or step == config.steps:
                if evaluate is not None:
                    metrics = {**metrics, **evaluate(params, np.int32(step))}
                row = {"step": step, **{k: _float(v) for k, v in metrics.items()}}
                row["wall_s"] = round(time.perf_counter() - t0, 3)
                if diverged_at is None and not math.isfinite(row["loss"]):
                    row["diverged"], diverged_at = True, step
                    if config.allow_divergence and is_main:
                        _warn(
                            f"training diverged: the loss is {row['loss']} at step {step}; training on "
                            "(--allow-divergence)"
                        )
                if stop_fn is not None and stop_fn(dict(row)):
                    row["stopped"], stopped_at = True, step
                records["metrics"].append(row)
                if is_main:
                    append_jsonl(os.path.join(run_dir, "metrics.jsonl"), row)
                progress.update(step, row)
            else:
                progress.update(step)
            done = step == config.steps or halted()
            if step % config.checkpoint_every == 0 or done:
                if done and (diverged_at is None or config.allow_divergence):  # not when halted by it
                    record_flow(step)
                checkpoint(step)
    finally:
        progress.close()

    if is_main:
        summary = {
            "name": name,
            "step": step,
            "stopped_at": stopped_at,
            "diverged_at": diverged_at,
            "final": records["metrics"][-1] if records["metrics"] else None,
        }
        write_atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2).encode())
    result = TrainResult(params, opt_state, step, stopped_at, records["metrics"], run_dir, diverged_at)
    if diverged_at is not None and not config.allow_divergence:
        loss = next(r["loss"] for r in records["metrics"] if r["step"] == diverged_at)
        raise Diverged(
            f"training diverged: the loss is {loss} at step {diverged_at} (run {run_dir}); lower the "
            "learning rate or clip the gradients, or pass --allow-divergence to train on regardless",
            result,
        )
    return result


def report_divergence(diverged: Sequence[str], total: int, config: TrainConfig, results: str = "") -> None:
    """Report the runs that diverged, for a script that trains several models, once all are recorded.

    Such a script catches the :class:`Diverged` of each run (``e.result`` is the run's
    :class:`TrainResult`), records the run (its metrics NaN) and goes on with the others; at the end,
    after writing its results, it calls this. Nothing diverged: nothing happens. Otherwise, without
    ``config.allow_divergence``: raises :class:`Diverged` (:func:`run_cli`: one line, exit status 3)
    naming the runs; with it: one ``warning:`` line naming them.

    Args:
      diverged: one label per diverged run, e.g. ``"lstm-T100-seed0 at step 450"``.
      total: how many runs the script trained.
      config: the script's config (``allow_divergence``).
      results: where the results are (a path), for the message.
    """
    if not diverged:
        return
    msg = f"training diverged in {len(diverged)} of {total} runs: {', '.join(diverged)}"
    msg += f" (results: {results})" if results else ""
    if config.allow_divergence:
        if jax.process_index() == 0:
            _warn(f"{msg}; kept (--allow-divergence)")
        return
    raise Diverged(
        f"{msg}; lower the learning rate or clip the gradients, or pass --allow-divergence to accept them"
    )


if __name__ == "__main__":  # a library module: say so and name the scripts (exit 2)
    from experiments import not_a_script

    not_a_script("runner")
