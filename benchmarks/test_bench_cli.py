"""pytest-benchmark: the start-up cost of the command line (issue 18: `--help` in under a second).

Run explicitly: ``python -m pytest benchmarks/test_bench_cli.py --benchmark-only -p no:cacheprovider``.
Each case runs a fresh interpreter, as a user's shell does; the anchor is the cost the parser no
longer pays, ``import torch``, timed in the same run, and the ratio is printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

GENBENCH = str(Path(sys.executable).with_name("genbench"))  # the console script of this environment
COMMANDS = {
    "genbench --help": [GENBENCH, "--help"],
    "genbench eval-samples --help": [GENBENCH, "eval-samples", "--help"],
    "genbench ls metrics": [GENBENCH, "ls", "metrics"],
    "anchor: import torch": [sys.executable, "-c", "import torch"],
}


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_cli_start_up(benchmark, name):
    benchmark.pedantic(_run, args=(COMMANDS[name],), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["command"] = name
