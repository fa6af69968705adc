"""What every command shares: flags made from a config dataclass, one-line errors, output paths.

    cfg = parse_config(UNetTrainConfig, argv, prog="python -m course_utils train-unet",
                       description="...")

makes one flag per field (`batch_size` -> `--batch-size`; a bool gets `--x/--no-x`; a list
gets `nargs="+"`), plus `--config-file run.json` holding any of the fields. Precedence:
the dataclass defaults, then the file, then the flags given. A field's
`metadata={"help": ..., "choices": ...}` becomes the flag's help and allowed values, and
`metadata={"min": 1}`, `{"max": 1}` (inclusive) or `{"range": (0, 1)}` (exclusive; `math.inf`
for no upper end) its allowed range, which `check_ranges(self)` in the dataclass's
`__post_init__` enforces. An unknown key, a value of the wrong type or out of range in the
file, or a bad flag, is one line on stderr and exit status 2.

`run(main)` turns the errors a user can fix into one line and exit status 2, and Ctrl-C into
one line and exit status 130 (with the step a training run saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: data/, runs/, notebooks/


def repository_url() -> str:
    """`[project.urls] Repository` of pyproject.toml, without a trailing slash ("" when absent): the address
    the notebooks' Colab/Binder links (tools/links.py) and the course website's source buttons use."""
    m = re.search(r'^Repository\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    return m.group(1).rstrip("/") if m else ""


def runs_dir() -> Path:
    """runs/ beside the repository's data/ (git ignores it): where resumable runs live."""
    return ROOT / "runs"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `prog: error: message (see --help)`, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- dataclass fields -> flags
def _kind(tp):
    """(base type, is a list, allows None) of a field's annotation."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"unsupported field type {tp!r}")
        tp = args[0]
    if typing.get_origin(tp) in (list, tuple):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return inner[0], True, optional
    if tp not in (bool, int, float, str):
        raise TypeError(f"unsupported field type {tp!r}")
    return tp, False, optional


def _type_name(base, many, optional) -> str:
    if many:
        name = "a list of " + {bool: "booleans", int: "integers", float: "numbers", str: "strings"}[base]
    else:
        name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[base]
    return name + (" or null" if optional else "")


def _check_value(name, value, base, many, optional, choices):
    """`value` from a JSON file, converted (int -> float), or a one-line reason it does not fit."""
    if value is None:
        return (None, None) if optional else (None, f"{name} must be {_type_name(base, many, optional)}, got null")
    items = value if many else [value]
    if many and not isinstance(value, list):
        return None, f"{name} must be {_type_name(base, many, optional)}, got {json.dumps(value)}"
    out = []
    for v in items:
        ok = (isinstance(v, bool) if base is bool else
              isinstance(v, int) and not isinstance(v, bool) if base is int else
              isinstance(v, (int, float)) and not isinstance(v, bool) if base is float else
              isinstance(v, str))
        if not ok:
            return None, f"{name} must be {_type_name(base, many, optional)}, got {json.dumps(value)}"
        if choices and v not in choices:
            return None, f"{name} must be one of {', '.join(map(str, choices))}, got {json.dumps(v)}"
        out.append(float(v) if base is float else v)
    return (out if many else out[0]), None


# -- allowed ranges (field metadata "min", "max": inclusive; "range": (low, high), exclusive)
def _num(x) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def describe_range(meta) -> str | None:
    """The allowed range a field's metadata declares, in words ('>= 1', 'in (0, 1)'), or None."""
    lo, hi = meta.get("min"), meta.get("max")
    if "range" in meta:
        a, b = meta["range"]
        return f"> {_num(a)}" if b == math.inf else f"< {_num(b)}" if a == -math.inf else f"in ({_num(a)}, {_num(b)})"
    if lo is not None and hi is not None:
        return f"in [{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return None


def range_problem(name: str, value, meta) -> str | None:
    """Why `value` lies outside the range field `name` declares (one line), or None."""
    allowed = describe_range(meta)
    if allowed is None or value is None:
        return None
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        ok = True  # written so that NaN fails every test
        if "range" in meta:
            ok = meta["range"][0] < v < meta["range"][1]
        if meta.get("min") is not None:
            ok = ok and v >= meta["min"]
        if meta.get("max") is not None:
            ok = ok and v <= meta["max"]
        if not ok:
            what = "an integer" if isinstance(v, int) else "a number"
            return (f"{name} must lie {allowed}, got {_num(v)}" if allowed.startswith("in ") else
                    f"{name} must be {what} {allowed}, got {_num(v)}")
    return None


def flag(name: str) -> str:
    """A field's flag: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def check_ranges(cfg) -> None:
    """Raise a one-line ValueError naming the flag of the first field of dataclass `cfg` outside
    its declared range (call it in `__post_init__`: flags, config files and Python alike)."""
    for f in dataclasses.fields(cfg):
        problem = range_problem(flag(f.name), getattr(cfg, f.name), f.metadata)
        if problem:
            raise ValueError(problem)


def config_parser(cls, prog: str, description: str | None = None) -> Parser:
    """The parser `parse_config` uses: `--config-file` and one flag per field of `cls`."""
    parser = Parser(prog=prog, description=description,
                    epilog="Flags override --config-file, which overrides the defaults.")
    parser.add_argument("--config-file", metavar="JSON",
                        help="a JSON object of any of the options below, by field name (batch_size, ...)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base, many, _ = _kind(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = f.metadata.get("help", "")
        allowed = describe_range(f.metadata)
        default_text = f"default: {default}" + (f"; {allowed}" if allowed else "")
        text = f"{text} ({default_text})" if text else default_text
        text = text.replace("%", "%%")
        if base is bool and not many:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, type=base, default=None, help=text, choices=f.metadata.get("choices"),
                                nargs="+" if many else None, metavar=None if f.metadata.get("choices") else f.name.upper())
    return parser


def read_config_file(cls, path: str, parser: Parser) -> dict:
    """The fields in JSON file `path`, checked against `cls` (parser.error otherwise)."""
    try:
        with open(path) as fh:
            values = json.load(fh)
    except FileNotFoundError:
        parser.error(f"--config-file {path}: no such file")
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"--config-file {path}: cannot be read ({err})")
    except json.JSONDecodeError as err:
        parser.error(f"--config-file {path} is not valid JSON: {err}")
    if not isinstance(values, dict):
        parser.error(f"--config-file {path} must hold a JSON object of options, not {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        hint = ", ".join(sorted(known))
        parser.error(f"--config-file {path}: unknown option(s) {', '.join(unknown)}; the options are {hint}")
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        out[key], problem = _check_value(key, value, *_kind(hints[key]), known[key].metadata.get("choices"))
        if problem:
            parser.error(f"--config-file {path}: {problem}")
    return out


def parse_config(cls, argv=None, prog: str | None = None, description: str | None = None):
    """An instance of dataclass `cls` from the command line `argv` (default: sys.argv[1:])."""
    parser = config_parser(cls, prog or cls.__name__, description)
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config_file")
    values = read_config_file(cls, config_file, parser) if config_file else {}
    given = {k: v for k, v in args.items() if v is not None}
    values.update(given)
    for f in dataclasses.fields(cls):  # name the flag, or the file's key, that is out of range
        if f.name in values:
            problem = range_problem(flag(f.name) if f.name in given else f.name, values[f.name], f.metadata)
            if problem:
                parser.error(problem if f.name in given else f"--config-file {config_file}: {problem}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a __post_init__ check
        parser.error(str(err))


def config_from(cls, cfg=None, overrides=None):
    """`cfg` (an instance of `cls`, None for the defaults, or a checkpoint path) with `overrides`.

    A path is the older calling form, `train_x(path, steps=...)`: train into that checkpoint,
    without an export.
    """
    overrides = dict(overrides or {})
    if cfg is None:
        cfg = cls()
    elif not isinstance(cfg, cls):
        if not isinstance(cfg, (str, os.PathLike)):
            raise TypeError(f"expected a {cls.__name__} or a checkpoint path, got {type(cfg).__name__}")
        overrides = {"checkpoint": str(cfg), "export": None, **overrides}
        cfg = cls()
    return dataclasses.replace(cfg, **overrides)


def describe(cfg) -> str:
    """The config as one line of JSON (what a run prints first)."""
    return json.dumps(dataclasses.asdict(cfg))


# -- output files
def same_file(a, b) -> bool:
    return bool(a) and bool(b) and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def check_writable(path, flag_name: str) -> None:
    """Refuse an output path whose folder cannot be made or written (checked before training)."""
    from ..train import check_writable as _check  # torch: imported only by the commands that train

    _check(path, flag_name)


def check_paths(checkpoint: str | None, export: str | None) -> None:
    """Refuse an export without a checkpoint to read it from, or one that would replace that checkpoint,
    and a checkpoint or export that cannot be written."""
    if export and not checkpoint:
        raise ValueError("--export needs --checkpoint: the exported weights are read from it.")
    if same_file(checkpoint, export):
        raise ValueError(f"--export and --checkpoint are the same file ({export}): the export would replace "
                         "the resumable run; pass another --export.")
    if checkpoint:
        check_writable(checkpoint, "--checkpoint")
    if export:
        check_writable(export, "--export")


def check_outputs(checkpoint: str | None, export: str | None, force: bool = False) -> None:
    """`check_paths`, and refuse to overwrite an existing export unless `force` (what a command checks first)."""
    check_paths(checkpoint, export)
    if export and Path(export).exists() and not force:
        raise ValueError(f"--export {export} exists; pass --force to overwrite it, or another --export.")


def steps_note(result, checkpoint: str | None, steps: int) -> str | None:
    """The line a trainer prints when a resumed run had nothing left to train, else None."""
    if result.step > result.resumed_from:
        return None
    return (f"nothing to train: {checkpoint} already holds step {result.resumed_from} (--steps {steps}); "
            "raise --steps to train on")


# -- running a command
def train_command(cls, train_fn, argv, name: str, description: str, summary=None):
    """The body of every `train-*` command: parse `cls` from flags and `--config-file`, refuse
    outputs it must not overwrite, print the config, train, then print `steps_note` when
    nothing was left to train, else `summary(cfg, result)` (one line). Returns the result."""
    cfg = parse_config(cls, argv, prog=f"python -m course_utils {name}", description=description)
    check_outputs(cfg.checkpoint, cfg.export, cfg.force)
    print(describe(cfg))
    result = train_fn(cfg)
    note = steps_note(result, cfg.checkpoint, cfg.steps)
    if note:
        print(note)
    elif summary is not None:
        print(summary(cfg, result))
    return cfg, result


def run_summary(cfg, result, rate: str) -> str:
    """`CHECKPOINT after N steps; last loss L; RATE` for a finished training command."""
    last = f"; last loss {result.losses[-1]:.4f}" if result.losses else ""
    return f"{cfg.checkpoint or 'no checkpoint'} after {result.step} steps{last}; {rate}"


def interrupted_line(err: KeyboardInterrupt) -> str:
    """What a command prints on Ctrl-C: the step reached, and what was saved to resume from."""
    step, steps = getattr(err, "step", None), getattr(err, "steps", None)
    if step is None:
        return "interrupted"
    head = f"interrupted at step {step} of {steps}"
    checkpoint, saved = getattr(err, "checkpoint", None), getattr(err, "saved_step", None)
    if not checkpoint:
        return f"{head}; nothing was saved (no --checkpoint)"
    if saved != step:
        return f"{head}; {checkpoint} holds step {saved}; run the same command again to resume from there"
    return f"{head}; saved {checkpoint}; run the same command again to resume"


def _debug() -> bool:
    return os.environ.get("COURSE_DEBUG", "") not in ("", "0")


def run(main, argv=None) -> int:
    """`main(argv)` with user errors (ValueError, FileNotFoundError, CheckpointError) as one line,
    `error: ...`, and exit status 2; Ctrl-C as one line (`interrupted at step N of M; saved ...`)
    and exit status 130. `COURSE_DEBUG=1` re-raises them for a traceback."""
    try:
        return main(argv) or 0
    except (ValueError, FileNotFoundError) as err:  # CheckpointError is a ValueError
        if _debug():
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # train.fit has saved the last completed step (TrainingInterrupted)
        if _debug():
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the run
            print(interrupted_line(err), file=sys.stderr, flush=True)
        return 130
