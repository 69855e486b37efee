"""pytest plugin: assert inside your own tests that a run did not drift from its baseline.

Installed with genbench as a ``pytest11`` entry point, it gives every test the fixture
``genbench_no_drift``, which is :func:`assert_no_drift`::

    from harness.runner import ModelEvalConfig, evaluate_model

    def test_model_metrics_did_not_drift(genbench_no_drift):
        record = evaluate_model(ModelEvalConfig(checkpoint="model.pt", dataset="gaussian-4-test"), progress=False)
        genbench_no_drift("tests/baselines/model.json", record)

The comparison is exactly that of ``genbench check`` (``harness.drift``): a drift fails the test
with the Markdown report as its message; records that are not comparable (protocol mismatch) or
malformed raise ``ValueError`` naming the fields or the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DriftError", "assert_no_drift", "genbench_no_drift"]

RecordLike = Mapping[str, Any] | str | Path


class DriftError(AssertionError):
    """A metric moved beyond its tolerance; the message is the Markdown report."""


def assert_no_drift(baseline: RecordLike, candidate: RecordLike, *,
                    tolerances: Mapping[str, Mapping[str, float]] | str | Path | None = None,
                    alpha: float | None = None, across_seeds: bool = False) -> Any:
    """Fail with :class:`DriftError` unless every metric of ``candidate`` is within tolerance of ``baseline``.

    Args:
        baseline, candidate: a record (dict), a record file, or (both) a folder of records paired
            by file name.
        tolerances: per-metric overrides ``{"fid": {"abs": 0.5}}`` (or ``rel`` / ``z``), or the
            path of a YAML/JSON file holding them.
        alpha: false-alarm probability per record pair (default ``harness.drift.FAMILY_ALPHA``, 1%).
        across_seeds: allow the two runs to differ in seeds.
    Returns:
        The :class:`harness.drift.CheckReport` (when it passed).
    """
    __tracebackhide__ = True  # pytest shows the report, not this function's frame
    from harness.drift import FAMILY_ALPHA, CheckOptions, check, pair_records
    from harness.drift_report import load_tolerances, parse_tolerances, report_markdown

    if tolerances is None:
        overrides = {}
    elif isinstance(tolerances, Mapping):
        overrides = parse_tolerances(dict(tolerances))
    else:
        overrides = load_tolerances(tolerances)
    options = CheckOptions(family_alpha=FAMILY_ALPHA if alpha is None else alpha, across_seeds=across_seeds,
                           overrides=overrides)
    if isinstance(baseline, Mapping) or isinstance(candidate, Mapping):
        pairs = [("record", _side(baseline), _side(candidate))]
    else:
        pairs = pair_records(baseline, candidate)
    report = check(pairs, options)
    if not report.passed:
        raise DriftError("\n" + report_markdown(report))
    return report


def _side(side: RecordLike) -> dict[str, Any] | Path:
    return dict(side) if isinstance(side, Mapping) else Path(side)


@pytest.fixture
def genbench_no_drift() -> Callable[..., Any]:
    """:func:`assert_no_drift`, as a fixture: ``genbench_no_drift(baseline, candidate, **options)``."""
    return assert_no_drift
