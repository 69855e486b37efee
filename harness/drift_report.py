"""What goes in and out of a drift check besides the records: the user tolerance file, and the
Markdown (pull-request comment) and JSON (machines) reports of a :class:`harness.drift.CheckReport`.

Both reports carry the same content: an overall PASS / DRIFT line, the confidence rule, and per
record pair its context changes (code, libraries, device, model) and one row per metric:
metric, baseline, candidate, delta, tolerance, verdict, and how the tolerance was set (the rule
names its basis, ``paired`` or ``unpaired``; the JSON also has it as ``basis``).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from harness.drift import CheckReport, FieldDifference, MetricResult, Override, RecordComparison

__all__ = ["JSON_SCHEMA", "OVERRIDE_KINDS", "known_metric_keys", "load_tolerances", "parse_tolerances", "report_json", "report_markdown"]

JSON_SCHEMA = "genbench.check/1"
OVERRIDE_KINDS = ("abs", "rel", "z")
_CONTEXT_SHOWN = 12


def known_metric_keys() -> list[str]:
    """Every metric key a record can hold (from the ``METRICS`` registry)."""
    from metrics import metric_keys

    return sorted(metric_keys())


def load_tolerances(path: str | Path) -> dict[str, Override]:
    """Read a YAML or JSON tolerance file ``{metric: {abs|rel|z: number}}``; unknown keys are errors."""
    import yaml

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"tolerance file {source} does not exist") from None
    try:
        data = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"tolerance file {source} is not valid {'JSON' if source.suffix == '.json' else 'YAML'}: {err}") from None
    return parse_tolerances(data, f"tolerance file {source}")


def parse_tolerances(data: Any, where: str = "tolerances") -> dict[str, Override]:
    """Validate ``{metric: {abs|rel|z: number}}``; ``where`` names the source in errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must map metric names to {{abs|rel|z: number}}")
    known = known_metric_keys()
    overrides = {}
    for metric, spec in data.items():
        if metric not in known:
            close = difflib.get_close_matches(str(metric), known, n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ValueError(f"{where}: unknown metric {metric!r}{hint}; known: {', '.join(known)}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in OVERRIDE_KINDS:
            raise ValueError(f"{where}: {metric!r} must have exactly one of "
                             f"{', '.join(OVERRIDE_KINDS)} (e.g. {{\"abs\": 0.5}}), got {spec!r}")
        kind, amount = next(iter(spec.items()))
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount >= 0:
            raise ValueError(f"{where}: {metric}.{kind} must be a number >= 0, got {amount!r}")
        overrides[metric] = Override(kind, float(amount))
    return overrides


def _confidence(report: CheckReport) -> str:
    o = report.options
    seeds = ("runs may differ in seeds; unpaired spreads" if o.across_seeds else
             "seeds must match; paired spreads (of the differences of the two runs' replicates) where both "
             "records hold replicates, else unpaired")
    return (f"false-alarm rate <= {o.family_alpha:g} per record (Bonferroni over its statistically toleranced "
            f"metrics; Student t with Welch-Satterthwaite df); exact for NFE and counts; {seeds}")


def _summary(report: CheckReport) -> str:
    failed = [c for c in report.comparisons if not c.passed]
    rows = [m for c in report.comparisons for m in c.metrics]
    bad = sorted({m.metric for c in failed for m in c.metrics if m.failed})
    if not failed:
        return f"PASS: {len(rows)} metrics in {len(report.comparisons)} record pair(s) within tolerance"
    return (f"DRIFT in {len(failed)} of {len(report.comparisons)} record pair(s)"
            + (f": {', '.join(bad)}" if bad else ""))


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.6g}"


def _change(d: FieldDifference) -> str:
    def short(v: Any) -> str:
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        return text if len(text) <= 40 else text[:37] + "..."

    return f"`{d.path}` {short(d.baseline)} -> {short(d.candidate)}"


def _row(m: MetricResult) -> str:
    tol = "-" if m.tolerance is None else f"±{m.tolerance:.3g}"
    verdict = {"pass": "pass", "info": "info", "drift": "**DRIFT**", "missing": "**MISSING**"}[m.verdict]
    return f"| {m.metric} | {_fmt(m.baseline)} | {_fmt(m.candidate)} | {_fmt(m.delta, True)} | {tol} | {verdict} | {m.rule} |"


def _section(c: RecordComparison) -> list[str]:
    lines = [f"### {c.name}: {'PASS' if c.passed else 'DRIFT'}", ""]
    if c.problem:
        return [*lines, f"**{c.problem}** (baseline: {c.baseline or '-'}, candidate: {c.candidate or '-'})", ""]
    if c.context:
        shown = "; ".join(_change(d) for d in c.context[:_CONTEXT_SHOWN])
        more = f" (+{len(c.context) - _CONTEXT_SHOWN} more)" if len(c.context) > _CONTEXT_SHOWN else ""
        lines += [f"Changed (context, not a mismatch): {shown}{more}", ""]
    lines += ["| metric | baseline | candidate | delta | tolerance | verdict | tolerance rule |",
              "|---|---:|---:|---:|---:|---|---|", *(_row(m) for m in c.metrics), ""]
    return lines


def report_markdown(report: CheckReport) -> str:
    """The report as Markdown, fit for a pull-request comment."""
    lines = [f"## genbench check: {_summary(report)}", "", f"Tolerances: {_confidence(report)}.", ""]
    for c in report.comparisons:
        lines += _section(c)
    return "\n".join(lines).rstrip() + "\n"


def report_json(report: CheckReport) -> dict[str, Any]:
    """The report as a JSON-able dict (schema ``genbench.check/1``), same content as the Markdown."""
    return {
        "schema": JSON_SCHEMA,
        "verdict": "pass" if report.passed else "drift",
        "summary": _summary(report),
        "confidence": {"family_alpha": report.options.family_alpha, "across_seeds": report.options.across_seeds,
                       "rule": _confidence(report)},
        "overrides": {k: {o.kind: o.amount} for k, o in report.options.overrides.items()},
        "records": [
            {"name": c.name, "baseline": c.baseline, "candidate": c.candidate,
             "verdict": "pass" if c.passed else "drift", "problem": c.problem,
             "context": [{"field": d.path, "baseline": d.baseline, "candidate": d.candidate} for d in c.context],
             "metrics": [{"metric": m.metric, "baseline": m.baseline, "candidate": m.candidate, "delta": m.delta,
                          "tolerance": m.tolerance, "verdict": m.verdict, "basis": m.basis, "rule": m.rule}
                         for m in c.metrics]}
            for c in report.comparisons
        ],
    }
