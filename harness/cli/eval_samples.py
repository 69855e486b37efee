"""``genbench eval-samples``: sample metrics of a set of samples against a reference set."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.eval_samples import RESIZE_PROTOCOLS, SampleEvalConfig, evaluate_samples
from harness.store.records import write_record


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="FID/KID/IS/precision/recall/density/coverage of samples against a reference set",
        description="X and Y are each an image folder, an .npz file, an IDX or CIFAR-10 folder, or a "
        "dataset name (see `genbench ls datasets`).",
    )
    p.add_argument("--samples", required=True, metavar="X", help="generated samples")
    p.add_argument("--reference", required=True, metavar="Y", help="reference (real) data")
    p.add_argument("--metrics", default="fid,kid,is,prdc", help="comma-separated (default: %(default)s)")
    p.add_argument("--feature-extractor", default=None, metavar="NAME",
                   help="default: inception-v3 for images, identity for tabular data")
    p.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="FID Inception weights file (weights-inception-2015-12-05-6726825d.pth)")
    p.add_argument("--resize", default="tf-bilinear", choices=RESIZE_PROTOCOLS,
                   help="Inception resize protocol (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="use N rows of each set (seeded subset; generated sets draw N)")
    p.add_argument("--seed", type=int, default=0, help="seed for subsets, KID subsets and IS splits")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached reference features")
    p.add_argument("--bootstrap", type=int, default=10, metavar="B",
                   help="half-sample replicates for each metric's standard error, used by `genbench check`; "
                        "costs about B/4 x the run's k-NN metrics and, above 2000 samples, B x its KID "
                        "(default: %(default)s; 0: none)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the run record here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(command=name)


def format_table(record: dict[str, Any]) -> str:
    """The metrics of a record as an aligned text table."""
    rows = []
    for key, entry in record["metrics"].items():
        label = entry.get("label", key)
        space = entry.get("feature_extractor", "")
        rows.append((key, label, f"{entry['value']:.6g}", space))
    rows += [(key, "skipped", "-", reason) for key, reason in record["skipped"].items()]
    header = ("metric", "label", "value", "feature space / note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3]]
    lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[3]))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3] for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = SampleEvalConfig(
        samples=args.samples,
        reference=args.reference,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        feature_extractor=args.feature_extractor,
        inception_weights=args.inception_weights,
        resize=args.resize,
        num_samples=args.num_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        use_cache=not args.no_cache,
        bootstrap=args.bootstrap,
    )
    record = evaluate_samples(cfg, progress=not args.quiet and sys.stderr.isatty(), argv=sys.argv)
    data = record["data"]
    print(f"samples   {data['samples']['name']}  n={data['samples']['selection']['n_used']}")
    print(f"reference {data['reference']['name']}  n={data['reference']['selection']['n_used']}")
    print(f"features  {record['features']['name']}  ({record['run']['wall_time_s']:.1f} s)\n")
    print(format_table(record))
    if args.json:
        path = write_record(args.json, record)
        print(f"\nrecord written to {path}")
    return 0
