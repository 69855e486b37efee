"""``genbench leaderboard``: run leaderboard suites and (re)build their tables, claims and page.

``genbench leaderboard --suite quick`` trains and evaluates what the suite's records lack (resumable),
then rebuilds the tables; ``genbench leaderboard --from-results`` rebuilds every table from the
stored records without training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


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
    p.add_argument("--device", default="cpu")
    p.add_argument("--list", action="store_true", help="list the built-in suites and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    p.set_defaults(command=name)


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
        for suite in suites:
            run_suite(suite, results_dir=Path(args.results), work_dir=Path(args.work_dir), device=args.device,
                      only_rows=rows, progress=progress, rewrite=args.rewrite_records, log=log)
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
