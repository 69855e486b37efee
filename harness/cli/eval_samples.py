"""``genbench eval-samples``: sample metrics of a set of samples against a reference set."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.cli.options import add_extractor_flags, add_flags, add_pass_flags, add_replicates_flag, collect, replicates
from harness.core.options import SampleMetricOptions
from harness.store.records import check_output_path, write_record

# The parser is built without importing torch or a metric module (``genbench --help`` stays fast);
# ``run`` imports the evaluation code.


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="FID/KID/IS/precision/recall/density/coverage of samples against a reference set",
        description="X and Y are each an image folder, an .npz file, an IDX or CIFAR-10 folder, or a "
        "dataset name (see `genbench ls datasets`).",
    )
    p.add_argument("--samples", required=True, metavar="X", help="generated samples")
    p.add_argument("--reference", required=True, metavar="Y",
                   help="reference (real) data, or a reference statistics file: genbench ref's .npz, a pytorch-fid / "
                        "clean-fid / EDM .npz of mu and sigma, an EDM2 .pkl")
    p.add_argument("--assume-reference-protocol", action="store_true",
                   help="accept a statistics file that records no protocol (pytorch-fid, clean-fid, EDM, EDM2) as made "
                        "with this run's extractor, resize and weights; the record says it was assumed")
    p.add_argument("--train", default=None, metavar="T",
                   help="the model's training set: adds the memorisation tests (C_T data-copying, authenticity), "
                   "with Y as the held-out set")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated metric names, of {','.join(metric_names())} those two sample sets "
                        "allow (`genbench ls metrics`; default: every default metric the data allow)")
    add_extractor_flags(p)
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="use N rows of each set (seeded subset; generated sets draw N)")
    p.add_argument("--seed", type=int, default=0, help="seed for subsets, KID subsets and IS splits")
    add_pass_flags(p)
    add_flags(p, SampleMetricOptions, title="sample metrics")
    add_replicates_flag(p, "; costs about B/4 x the run's k-NN metrics and, above 2000 samples, B x its KID")
    p.add_argument("--json", default=None, metavar="OUT", help="write the run record here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(command=name)


def metric_names() -> list[str]:
    """The registered metric names (read from the lazy registry: no metric module is imported)."""
    from metrics import METRICS

    return METRICS.names()


def metric_list(text: str | None) -> tuple[str, ...] | None:
    """``"fid, prdc"`` -> ("fid", "prdc"); None stays None (every default metric)."""
    return None if text is None else tuple(m.strip() for m in text.split(",") if m.strip())


def _value(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    return "n/a" if value is None else f"{value:.6g}"


def _two_digits(x: float) -> str:
    """x to 2 significant digits, positional where %g allows (9.1, 360, 0.025, 1.4e+03 -> 1400)."""
    return f"{float(f'{x:.2g}'):g}"


def _uncertainty(entry: dict[str, Any]) -> str:
    """``± s (kind)``: the half-sample replicates' ``uncertainty.std``, else ``stderr``; "" when neither."""
    unc = entry.get("uncertainty")
    if isinstance(unc, dict) and isinstance(unc.get("std"), (int, float)):
        return f"± {_two_digits(unc['std'])} (half-sample se)"
    if isinstance(entry.get("stderr"), (int, float)):
        return f"± {_two_digits(entry['stderr'])} (stderr)"
    return ""


def _kid_subsets_identical(entry: dict[str, Any]) -> bool:
    """True when every KID subset is the same set: one subset, or subsets of all rows of both sets."""
    size, n, n_ref = entry.get("subset_size"), entry.get("n_samples"), entry.get("n_reference")
    return entry.get("subsets") == 1 or (size is not None and size == n == n_ref)


# Bińkowski et al. 2018 chose the kernel for Inception pool3 features, and published KIDs are in that space.
_KID_SCALE_NOTE = ("KID's kernel (x·y/d+1)^3 assumes features of Inception-like scale; in {space} its value is "
                   "not comparable to published KID")


def format_table(record: dict[str, Any]) -> str:
    """The metrics of a record as an aligned text table, then numbered notes.

    Each row: value, ``± uncertainty (kind)`` where the entry has one, the feature space
    (``feature_extractor``) of feature-space metrics, and a note (``n/a``'s reason, a note number).
    """
    rows, notes = [], []
    for key, entry in record["metrics"].items():
        value, note = _value(entry), entry.get("value_reason", "") if entry.get("value") is None else ""
        space = entry.get("feature_extractor") or ""
        if key == "kid_std" and entry.get("value") is not None and _kid_subsets_identical(entry):
            value = "—: one subset"
            n = entry["n_samples"]
            note = "1 subset drawn" if entry.get("subsets") == 1 else f"every subset is all {n} rows of both sets"
        if key.startswith("kid_") and space and space != "inception-v3":
            kid_note = _KID_SCALE_NOTE.format(space=space)
            if kid_note not in notes:
                notes.append(kid_note)
            note = "; ".join(filter(None, [note, f"note {notes.index(kid_note) + 1}"]))
        rows.append((key, entry.get("label", key), value, _uncertainty(entry), space, note))
    rows += [(key, "skipped", "-", "", "", reason) for key, reason in record["skipped"].items()]
    header = ("metric", "label", "value", "± uncertainty", "feature space", "note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [header, tuple("-" * len(h) if i == len(widths) else "-" * widths[i] for i, h in enumerate(header)), *rows]
    text = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip() for r in lines]
    text += [f"note {i}: {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(text)


def run(args: argparse.Namespace) -> int:
    from harness.core.distributed import finished_here_writes
    from harness.eval_samples import SampleEvalConfig, evaluate_samples

    cfg = SampleEvalConfig(
        samples=args.samples,
        reference=args.reference,
        metrics=metric_list(args.metrics),
        feature_extractor=args.feature_extractor,
        inception_weights=args.inception_weights,
        resize=args.resize,
        num_samples=args.num_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        sample_metrics=collect(args, SampleMetricOptions),
        use_cache=not args.no_cache,
        replicates=replicates(args),
        train=args.train,
        assume_reference_protocol=args.assume_reference_protocol,
    )
    if args.json:
        check_output_path(args.json)
    record = evaluate_samples(cfg, progress=not args.quiet and sys.stderr.isatty(), argv=sys.argv)
    if not finished_here_writes():
        return 0
    if args.json:
        path = write_record(args.json, record)
    data = record["data"]
    print(f"samples   {data['samples']['name']}  n={data['samples']['selection']['n_used']}")
    ref = data["reference"]
    ref_file = ref.get("reference_file")
    n_ref = ref["selection"]["n_used"] if ref["selection"]["n_used"] is not None else "unknown"
    print(f"reference {ref['name']}  n={n_ref}" + (f"  ({ref_file['format']} file, sha256 {ref_file['sha256'][:12]})"
                                                  if ref_file else ""))
    print(f"features  {record['features']['name']}  ({record['run']['wall_time_s']:.1f} s)\n")
    print(format_table(record))
    if args.json:
        print(f"\nrecord written to {path}")
    return 0
