"""``genbench eval``: evaluate a model (checkpoint, entry point or registered name) on a data set."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from harness.cli.eval_samples import format_table, metric_list, metric_names
from harness.cli.options import add_flags, add_replicates_flag, collect, replicates
from harness.core.options import RESIZE_PROTOCOLS, ROUNDING, ModelMetricOptions, SampleMetricOptions
from harness.store.records import check_output_path, write_record


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="every applicable metric of a model on a data set")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH", help="a genbench checkpoint (.pt)")
    src.add_argument("--entry", metavar="MODULE:FACTORY", help="import MODULE (or FILE.py) and call FACTORY()")
    src.add_argument("--model", metavar="NAME", help="a registered model (genbench ls models)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument for the entry factory or registered model (repeatable; VALUE parsed as JSON if it can be)")
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PATH", help="reference / evaluation data")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of {','.join(metric_names())} (default: all applicable)")
    p.add_argument("--num-samples", type=int, default=1000, metavar="N", help="samples drawn and data rows used")
    p.add_argument("--reference", default=None, metavar="FILE",
                   help="compare the samples with this reference statistics file instead of the data set's rows: "
                        "genbench ref's .npz, a pytorch-fid / clean-fid / EDM .npz of mu and sigma, an EDM2 .pkl "
                        "(model metrics still read --dataset)")
    p.add_argument("--assume-reference-protocol", action="store_true",
                   help="accept a --reference file that records no protocol as made with this run's extractor, "
                        "resize and weights; the record says it was assumed")
    p.add_argument("--allow-fewer-reference", action="store_true",
                   help="accept --num-samples above the data set's rows (the sample metrics then use all its rows)")
    p.add_argument("--sampler", default=None, metavar="NAME", help="passed to model.sample(sampler=...)")
    p.add_argument("--steps", type=int, default=None, metavar="K", help="passed to model.sample(steps=...)")
    p.add_argument("--sample-option", action="append", default=[], metavar="KEY=VALUE",
                   help="another keyword argument of model.sample, e.g. denoise=false (repeatable; VALUE parsed as JSON where it can be)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="torch device: auto (default: cuda if available, else mps, else cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--feature-extractor", default=None, metavar="NAME")
    p.add_argument("--inception-weights", default=None, metavar="FILE")
    p.add_argument("--resize", default="tf-bilinear", choices=RESIZE_PROTOCOLS)
    p.add_argument("--rounding", default="round", choices=ROUNDING, help="model output to uint8 rule")
    add_flags(p, SampleMetricOptions, title="sample metrics")
    add_flags(p, ModelMetricOptions, title="model metrics (likelihood bounds, PF-ODE, straightness)")
    p.add_argument("--ode-probes", type=int, dest="ode_probes_old", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-cache", action="store_true")
    add_replicates_flag(p)
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(command=name)


def parse_model_args(items: list[str]) -> tuple[tuple[str, Any], ...]:
    """``["path=/x", "dim=4"]`` -> (("path", "/x"), ("dim", 4)); values are JSON where they parse."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg {item!r} must look like KEY=VALUE")
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        pairs.append((key, parsed))
    return tuple(pairs)


def run(args: argparse.Namespace) -> int:
    from harness.core.distributed import finished_here_writes

    if args.ode_probes_old is not None:  # the flag's old name
        print("genbench: warning: --ode-probes is now --ode-num-probes", file=sys.stderr)
        args.ode_num_probes = args.ode_probes_old
    from harness.runner import ModelEvalConfig, evaluate_model

    cfg = ModelEvalConfig(
        dataset=args.dataset, checkpoint=args.checkpoint, entry=args.entry, model=args.model,
        model_args=parse_model_args(args.model_arg), metrics=metric_list(args.metrics),
        num_samples=args.num_samples, sampler=args.sampler, steps=args.steps,
        sample_options=parse_model_args(args.sample_option), seed=args.seed, device=args.device,
        batch_size=args.batch_size, feature_extractor=args.feature_extractor, inception_weights=args.inception_weights,
        resize=args.resize, rounding=args.rounding, sample_metrics=collect(args, SampleMetricOptions),
        model_metrics=collect(args, ModelMetricOptions), use_cache=not args.no_cache, replicates=replicates(args),
        allow_fewer_reference=args.allow_fewer_reference, reference=args.reference,
        assume_reference_protocol=args.assume_reference_protocol,
    )
    if args.json:
        check_output_path(args.json)
    record = evaluate_model(cfg, progress=not args.quiet and sys.stderr.isatty(), argv=sys.argv)
    if not finished_here_writes():
        return 0
    if args.json:
        path = write_record(args.json, record)
    model = record["model"]
    print(f"model    {model['name']}  [{', '.join(model['capabilities'])}]")
    print(f"dataset  {record['data']['dataset']['name']}  n={record['data']['dataset']['selection']['n_used']}")
    ref = record["data"].get("reference")
    if ref is not None:
        rows = ref["reference_file"]["rows"]
        print(f"reference {ref['reference_file']['path']}  n={rows if rows is not None else 'unknown'}  "
              f"({ref['reference_file']['format']}, sha256 {ref['reference_file']['sha256'][:12]})")
    print(f"time     {record['run']['wall_time_s']:.1f} s\n")
    print(format_table(record))
    if args.json:
        print(f"\nrecord written to {path}")
    return 0
