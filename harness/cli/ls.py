"""``genbench ls {datasets,metrics,features}``: what is registered, with one line each."""

from __future__ import annotations

import argparse

from harness.core.registry import Registry


def _registry(what: str) -> Registry:
    if what == "datasets":
        from harness.datasets import DATASETS

        return DATASETS
    if what == "models":
        from harness.models import MODELS

        return MODELS
    if what == "metrics":
        from metrics import METRICS

        return METRICS
    from metrics.features import FEATURES

    return FEATURES


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list registered datasets, models, metrics or feature extractors")
    p.add_argument("what", choices=("datasets", "metrics", "features", "models"))
    p.set_defaults(command=name)


def _model_rows() -> list[tuple[str, str]]:
    """Models with family and capabilities (found by building the tiny or example config)."""
    from harness.models import MODELS
    from harness.core.protocols import capabilities

    rows = []
    for name, description in MODELS.describe():
        entry = MODELS.get(name)
        config = entry.tiny_config if entry.tiny_config is not None else entry.example_config
        caps = "capabilities depend on the files it loads" if config is None else ", ".join(capabilities(entry.build(config)))
        rows.append((name, f"{description}  {{{caps}}}"))
    return rows


def run(args: argparse.Namespace) -> int:
    rows = _model_rows() if args.what == "models" else list(_registry(args.what).describe())
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}".rstrip())
    return 0
