"""The ``genbench`` command: one module per subcommand, each with ``add_parser`` and ``run``.

Under ``torchrun`` (``torchrun --nproc_per_node N -m harness.cli eval ...``) the commands that
evaluate (eval, eval-samples, ref, leaderboard) join the job's process group and shard their passes
(``harness.core.distributed``); rank 0 alone prints and writes, after every rank has finished.

Exit codes: 0 success, 1 a check found drift, 2 bad input, usage, or incomparable records. Expected errors
(bad input, missing files or weights) print one readable ``error:`` line, never a traceback;
``GENBENCH_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from harness import __version__
from harness.cli import check, eval_samples, leaderboard, ls, ref, train
from harness.cli import eval as eval_model
from harness.core.heartbeat import set_log_lines
from harness.core.registry import RegistryError

SUBCOMMANDS = {"eval": eval_model, "eval-samples": eval_samples, "ref": ref, "ls": ls, "train": train, "check": check,
               "leaderboard": leaderboard}

USAGE_ERRORS = (ValueError, FloatingPointError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError, RegistryError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genbench",
        description="Benchmark and evaluation harness for generative models.",
    )
    parser.add_argument("--version", action="version", version=f"genbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        module.add_parser(sub, name)
    return parser


DISTRIBUTED_COMMANDS = ("eval", "eval-samples", "ref", "leaderboard")


def _join_torchrun(args: argparse.Namespace) -> None:
    """Under torchrun: join the process group; ranks other than 0 print nothing but errors."""
    from harness.core.device import check_device
    from harness.core.distributed import init_from_env

    if args.command not in DISTRIBUTED_COMMANDS:
        raise ValueError(f"genbench {args.command} does not run under torchrun; only {', '.join(DISTRIBUTED_COMMANDS)} "
                         "shard their work")
    w = init_from_env(check_device(getattr(args, "device", "cpu")))
    if not w.is_main:
        args.quiet = True
        set_log_lines(False)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of this worker)


def _rank() -> str:
    from harness.core.distributed import world

    w = world()
    return f" (rank {w.rank} of {w.size})" if w.size > 1 else ""


def main(argv: list[str] | None = None) -> int:
    from harness.core.distributed import launched_by_torchrun, shutdown

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_log_lines(not getattr(args, "quiet", False) and not sys.stderr.isatty())
    try:
        if launched_by_torchrun():
            _join_torchrun(args)
        return int(SUBCOMMANDS[args.command].run(args) or 0)
    except USAGE_ERRORS as err:
        if os.environ.get("GENBENCH_DEBUG"):
            raise
        print(f"genbench {args.command}{_rank()}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"genbench {args.command}: error: out of memory; lower --batch-size or --num-samples, "
              "or run on a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files already written are complete (every record and checkpoint is written "
              "whole), the step in progress was not written; rerun the same command to resume "
              "(genbench train: add --resume CHECKPOINT)", file=sys.stderr)
        return 130
    finally:
        shutdown()
