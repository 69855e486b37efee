"""``genbench leaderboard``: run leaderboard suites and (re)build their tables, claims and page.

``genbench leaderboard --suite quick`` trains and evaluates what the suite's records lack (resumable),
then rebuilds the tables; ``genbench leaderboard --from-results`` rebuilds every table from the
stored records without training.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="run leaderboard suites and build leaderboards/ (tables, claims, index.html)",
                       description="Run a suite (train + evaluate the rows its records lack, then rebuild the tables), "
                       "or rebuild every table from stored records with --from-results.")
    p.add_argument("--suite", action="append", default=[], metavar="NAME_OR_PATH",
                   help="a built-in suite (genbench leaderboard --list) or a suite .yaml; repeatable")
    p.add_argument("--from-results", action="store_true", help="only rebuild tables from the records; never train")
    p.add_argument("--rows", default=None, metavar="ID,ID", help="run only these rows (the rows they start from are trained when needed)")
    p.add_argument("--results", default="results", metavar="DIR", help="record folder (default: %(default)s)")
    p.add_argument("--out", default="leaderboards", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--work-dir", default=".genbench", metavar="DIR",
                   help="trained checkpoints and couplings, keyed by content (default: %(default)s)")
    p.add_argument("--rewrite-records", action="store_true",
                   help="write every record anew; by default a stored record that the rerun reproduces (same metrics "
                   "within 1e-9 relative and protocol) is kept byte for byte, so committed results change only when a result does")
    p.add_argument("--device", default="auto", help="torch device: auto (default: cuda if available, else mps, else cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N (row, seed) jobs at once in a local process pool, one torch thread each "
                   "(default 1: one after another in this process)")
    p.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                   help="where the jobs run: local (this machine; --jobs), slurm (a submitit job per (row, seed); "
                   "logs under WORK_DIR/submitit), submitit-local (submitit's local executor, to try a Slurm setup here)")
    p.add_argument("--slurm-partition", default=None, help="Slurm partition (--executor slurm)")
    p.add_argument("--slurm-time-min", type=int, default=60, metavar="MIN", help="time limit per job (default %(default)s)")
    p.add_argument("--slurm-gpus", type=int, default=0, metavar="N", help="GPUs per job (default %(default)s)")
    p.add_argument("--slurm-cpus", type=int, default=1, metavar="N", help="CPUs (and torch threads) per job (default %(default)s)")
    p.add_argument("--list", action="store_true", help="list the built-in suites and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    p.set_defaults(command=name)


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[tuple[Any, int | None]]:
    """(the executor the jobs go to, torch threads per job); (None, None) runs them in this process."""
    from harness.core.distributed import world

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if world().size > 1 and (args.jobs > 1 or args.executor != "local"):
        raise ValueError("under torchrun the suite's jobs run one after another, each sharded over the ranks; "
                         "drop --jobs / --executor")
    if args.executor == "local":
        if args.jobs == 1:
            yield None, None
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from harness.leaderboard.execute import one_torch_thread

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=one_torch_thread) as pool:
            yield pool, 1
        return
    try:
        import submitit
    except ImportError:
        raise ValueError(f"--executor {args.executor} needs submitit: pip install submitit") from None
    folder = Path(args.work_dir) / "submitit" / "%j"
    if args.executor == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.slurm_time_min)
    else:
        if not args.slurm_partition:
            raise ValueError("--executor slurm needs --slurm-partition NAME")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(slurm_partition=args.slurm_partition, timeout_min=args.slurm_time_min,
                                   gpus_per_node=args.slurm_gpus, cpus_per_task=args.slurm_cpus, tasks_per_node=1,
                                   name="genbench-leaderboard")
    yield executor, args.slurm_cpus


def run(args: argparse.Namespace) -> int:
    from harness.leaderboard.execute import run_suite
    from harness.leaderboard.render import collect, write_index, write_suite
    from harness.leaderboard.suite import leaderboard_suite_names, load_leaderboard_suite

    if args.list:
        for name in leaderboard_suite_names():
            s = load_leaderboard_suite(name)
            runs = sum(len(r.seeds) for r in s.rows)
            minutes = f", about {s.expected_minutes:g} min" if s.expected_minutes else ""
            print(f"{name:24s} {s.title} ({len(s.rows)} rows, {runs} runs{minutes})")
        return 0
    if not args.suite and not args.from_results:
        raise ValueError("give --suite NAME (run it), or --from-results (rebuild every table); see --list")
    suites = [load_leaderboard_suite(s) for s in args.suite]
    rows = tuple(r for r in (args.rows or "").split(",") if r)
    if rows and len(suites) != 1:
        raise ValueError("--rows needs exactly one --suite")
    start = time.perf_counter()
    if not args.from_results:
        progress = not args.quiet and sys.stderr.isatty()
        log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        with _executor(args) as (executor, threads):
            for suite in suites:
                run_suite(suite, results_dir=Path(args.results), work_dir=Path(args.work_dir), device=args.device,
                          only_rows=rows, progress=progress, rewrite=args.rewrite_records, log=log, executor=executor,
                          threads=threads)
    from harness.core.distributed import finished_here_writes

    if not finished_here_writes():
        return 0
    # The page shows every built-in suite, plus any suite given by path.
    names = {s.name for s in suites}
    everything = [load_leaderboard_suite(n) for n in leaderboard_suite_names() if n not in names] + suites
    everything.sort(key=lambda s: s.name)
    collected = [collect(s, Path(args.results)) for s in everything]  # every record read and checked first
    built = [write_suite(res, Path(args.results), Path(args.out)) for res in collected]
    index = write_index(built, Path(args.out))
    for res in built:
        if res.suite.name in names or not names:
            verdicts = ", ".join(f"{v.claim.id}: {v.verdict}" for v in res.verdicts) or "no claims"
            print(f"{args.out}/{res.suite.name}.md  ({sum(map(len, res.records.values()))} records; {verdicts})")
    print(f"{index}  ({time.perf_counter() - start:.1f} s)")
    return 0
