"""Command-line flags generated from config dataclass fields, so a field and its flag cannot drift.

``add_flags(parser, SampleMetricOptions)`` adds ``--kid-subsets`` and friends: the flag is the
field name with dashes, the type and default are the field's, ``Literal`` fields become choices,
and the help is the field's line under ``Attributes:`` in the dataclass docstring.
``collect(args, SampleMetricOptions)`` builds the sub-config back from the parsed arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, Literal, get_args, get_origin


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its description under ``Attributes:`` in ``cls``'s docstring (names joined by
    commas share one line)."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    body = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    current: list[str] = []
    for line in body.splitlines():
        m = re.match(r"^\s{4,8}([a-z_][a-z0-9_, ]*):\s*(.*)$", line)
        if m and all(re.fullmatch(r"[a-z_][a-z0-9_]*", n.strip()) for n in m.group(1).split(",")):
            current = [n.strip() for n in m.group(1).split(",")]
            for name in current:
                out[name] = m.group(2).strip().replace("``", "")
        elif line.strip() and current:
            for name in current:
                out[name] += " " + line.strip().replace("``", "")
    return out


def _scalar(tp: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """(argparse type, choices) of a field annotation such as ``int | None`` or ``Literal[...]``."""
    args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else [tp]
    tp = args[0]
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        return type(choices[0]), choices
    return tp, None


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, title: str | None = None) -> None:
    """Add one ``--field-name`` flag per field of the dataclass ``cls`` (defaults: the field's)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    group = parser.add_argument_group(title) if title and isinstance(parser, argparse.ArgumentParser) else parser
    for f in dataclasses.fields(cls):
        tp, choices = _scalar(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        text = helps.get(f.name, "")
        metavar = None if choices else {int: "N", float: "X"}.get(tp, "VALUE")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=tp, choices=choices, default=default,
                           metavar=metavar, help=f"{text} (default: {default})".strip())


def collect(args: argparse.Namespace, cls: type) -> Any:
    """``cls`` built from the parsed flags that :func:`add_flags` added."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def add_extractor_flags(parser: argparse.ArgumentParser) -> None:
    """--feature-extractor, --inception-weights and --resize: what a feature pass runs with."""
    from harness.core.options import RESIZE_PROTOCOLS

    parser.add_argument("--feature-extractor", default=None, metavar="NAME",
                        help="default: inception-v3 for images, identity for tabular data")
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="FID Inception weights file (weights-inception-2015-12-05-6726825d.pth)")
    parser.add_argument("--resize", default="tf-bilinear", choices=RESIZE_PROTOCOLS,
                        help="Inception resize protocol (default: %(default)s)")


def add_pass_flags(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --device and --no-cache: how a feature pass runs."""
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="auto", help="torch device: auto (default: cuda if available, else mps, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached reference features")


def add_replicates_flag(parser: argparse.ArgumentParser, extra_help: str = "") -> None:
    """``--replicates B`` (and the old ``--bootstrap B``, accepted with a warning)."""
    text = "half-sample replicates for each sample metric's standard error, used by `genbench check`"
    parser.add_argument("--replicates", type=int, default=None, metavar="B",
                        help=f"{text}{extra_help} (default: 10; 0: none)")
    parser.add_argument("--bootstrap", type=int, default=None, metavar="B", help=argparse.SUPPRESS)


def replicates(args: argparse.Namespace) -> int:
    """The replicate count of ``--replicates``, or of the old ``--bootstrap`` with a warning."""
    import sys

    from harness.config import renamed_option

    if args.bootstrap is not None:
        if args.replicates is not None:
            raise ValueError("give --replicates only (--bootstrap is its old name)")
        print(f"genbench: warning: {renamed_option('bootstrap').replace('option', 'flag', 1)}", file=sys.stderr)
        return args.bootstrap
    return 10 if args.replicates is None else args.replicates
