"""``genbench ls {datasets,metrics,features}``: what is registered, with one line each."""

from __future__ import annotations

import argparse

from harness.registry import Registry


def _registry(what: str) -> Registry:
    if what == "datasets":
        from harness.datasets import DATASETS

        return DATASETS
    if what == "models":
        from harness.models import MODELS

        return MODELS
    if what == "metrics":
        from metrics.info import METRICS

        return METRICS
    from metrics.features import FEATURES

    return FEATURES


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list registered datasets, models, metrics or feature extractors")
    p.add_argument("what", choices=("datasets", "metrics", "features", "models"))
    p.set_defaults(command=name)


def run(args: argparse.Namespace) -> int:
    rows = list(_registry(args.what).describe())
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}".rstrip())
    return 0
