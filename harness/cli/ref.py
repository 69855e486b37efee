"""``genbench ref``: write a portable reference statistics file (mu, sigma, optional features, manifest)."""

from __future__ import annotations

import argparse
import sys

from harness.cli.options import add_extractor_flags, add_pass_flags
from harness.store.records import check_output_path

# The parser is built without importing torch or a metric module (``genbench --help`` stays fast);
# ``run`` imports the extraction code.


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="write reference statistics (mu, sigma; optionally the features) of a data set to an .npz",
        description="DATA is an image folder, an .npz file, an IDX or CIFAR-10 folder, or a dataset name (see "
        "`genbench ls datasets`). The file holds mu (float64 [d]), sigma (float64 [d, d]), with --features the "
        "feature rows (float32 [N, d]), and a manifest (extractor protocol with the weights' sha256, resize, "
        "rows, the data's content hash, versions). Give it to `genbench eval-samples --reference FILE.npz`; "
        "pytorch-fid, clean-fid and EDM read its mu and sigma too.",
    )
    p.add_argument("data", metavar="DATA", help="the reference (real) data")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the reference file to write")
    p.add_argument("--features", action="store_true",
                   help="also store the feature rows, so that KID, PRDC and the other metrics that read reference "
                        "rows can run against the file (N x d float32; 400 MB for 50000 Inception rows)")
    add_extractor_flags(p)
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="use N rows: the seeded subset eval-samples --reference DATA --num-samples N --seed S uses")
    p.add_argument("--seed", type=int, default=0, help="seed of that subset (as eval-samples --seed)")
    add_pass_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(command=name)


def run(args: argparse.Namespace) -> int:
    from harness.eval_samples import ReferenceConfig, make_reference

    cfg = ReferenceConfig(
        data=args.data, out=args.out, features=args.features, feature_extractor=args.feature_extractor,
        inception_weights=args.inception_weights, resize=args.resize, num_samples=args.num_samples, seed=args.seed,
        batch_size=args.batch_size, device=args.device, use_cache=not args.no_cache,
    )
    check_output_path(cfg.out)
    manifest = make_reference(cfg, progress=not args.quiet and sys.stderr.isatty(), argv=sys.argv)
    extractor = manifest["extractor"]
    resize = f", resize {extractor['resize']}" if "resize" in extractor else ""
    held = "mu, sigma and the features" if manifest["holds_features"] else "mu and sigma (statistics only)"
    print(f"reference {manifest['data']['name']}  n={manifest['rows']}  content {manifest['data']['content_hash'][:12]}")
    print(f"features  {extractor['name']}  d={manifest['feature_dim']}{resize}")
    print(f"wrote {cfg.out}: {held}")
    return 0
