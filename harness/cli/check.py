"""``genbench check``: has a code change moved the metrics? Exit 0 all within tolerance, 1 drift,
2 usage errors, malformed records and protocol mismatches (``harness.drift`` says which fields
count as protocol and how tolerances are set)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.core.atomic import atomic_open
from harness.drift import FAMILY_ALPHA, CheckOptions, check, pair_records
from harness.drift_report import load_tolerances, report_json, report_markdown
from harness.store.records import write_record


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="compare run records with baselines; exit 1 when a metric drifted beyond its uncertainty",
        description="Either --baseline and --candidate (two record files, or two folders of records paired "
        "by file name), or --suite NAME to rerun a suite and compare with its stored baselines.",
    )
    p.add_argument("--baseline", metavar="RECORD_OR_DIR",
                   help="baseline record or folder (with --suite: the baseline folder, default: the suite's)")
    p.add_argument("--candidate", metavar="RECORD_OR_DIR",
                   help="candidate record or folder (with --suite: also write the rerun records to this folder)")
    p.add_argument("--suite", metavar="NAME", help="a built-in suite (e.g. ci-tiny) or a suite .yaml file")
    p.add_argument("--update-baselines", action="store_true",
                   help="with --suite: rerun and (re)write the baselines atomically instead of checking")
    p.add_argument("--tolerances", metavar="FILE", help='YAML/JSON per-metric overrides, e.g. {"fid": {"abs": 0.5}}')
    p.add_argument("--across-seeds", action="store_true",
                   help="allow baseline and candidate to differ in seeds (and seed-generated data)")
    p.add_argument("--alpha", type=float, default=FAMILY_ALPHA,
                   help="false-alarm probability per record pair (default: %(default)s)")
    p.add_argument("--format", choices=("md", "json"), default="md", help="report format (default: %(default)s)")
    p.add_argument("--out", metavar="FILE", help="also write the report here (atomically)")
    p.set_defaults(command=name)


def _suite_pairs(args: argparse.Namespace) -> list[tuple[str, object, object]] | None:
    """Rerun the suite; return (name, baseline path, record) pairs, or None after updating baselines."""
    from harness.suites import load_suite

    suite = load_suite(args.suite)
    folder = Path(args.baseline) if args.baseline else suite.baseline_dir
    if not args.update_baselines and not folder.is_dir():
        raise FileNotFoundError(f"baseline folder {folder} of suite {suite.name!r} does not exist; run from the project "
                                "root, give --baseline DIR, or create the baselines with --update-baselines")
    records = [(run.name, run.execute()) for run in suite.runs]  # everything runs before anything is written
    if args.update_baselines:
        for name, record in records:
            print(f"baseline written to {write_record(folder / f'{name}.json', record)}")
        return None
    if args.candidate:
        for name, record in records:
            write_record(Path(args.candidate) / f"{name}.json", record)
    return [(f"{suite.name}/{name}", p if (p := folder / f"{name}.json").is_file() else None, record)
            for name, record in records]


def run(args: argparse.Namespace) -> int:
    if args.suite is None and (args.update_baselines or not (args.baseline and args.candidate)):
        raise ValueError("give --baseline and --candidate, or --suite NAME (--update-baselines needs --suite)")
    options = CheckOptions(family_alpha=args.alpha, across_seeds=args.across_seeds,
                           overrides=load_tolerances(args.tolerances) if args.tolerances else {})
    pairs = _suite_pairs(args) if args.suite else pair_records(args.baseline, args.candidate)
    if pairs is None:
        return 0
    report = check(pairs, options)
    text = report_markdown(report) if args.format == "md" else json.dumps(report_json(report), indent=2) + "\n"
    print(text, end="")
    if args.out:
        with atomic_open(args.out) as handle:
            handle.write(text.encode("utf-8"))
    return 0 if report.passed else 1
