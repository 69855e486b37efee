"""Which metrics run, and running them: read from the ``METRICS`` registry, never from a list of names.

* :func:`plan_model_metrics` decides, for ``genbench eval``, which registered metrics a model's
  capabilities allow; a requested metric whose capability is missing, or that could return only
  some of its keys (``Metric.partial_support``), is an error before any work; an unrequested one
  is listed under ``skipped`` with the reason.
* :func:`compute_metrics` runs metrics on the inputs the runner prepared (features extracted once
  per extractor, handed to every metric), skips those whose data needs are unmet (no logits, no
  mixture components) with the reason, adds the metrics that run whenever their needs are met
  (``Metric.default`` with sample-only needs of the reference, like the mode metrics), and
  attaches half-sample uncertainties (:func:`half_sample_replicates`).
"""

from __future__ import annotations

import logging
from typing import Any

from harness.core.heartbeat import phase, progress
from harness.core.metric import NEEDS, Metric, MetricEntry, MetricInputs
from harness.core.protocols import CAPABILITIES
from harness.core.stats import half_sample_rows, half_sample_uncertainty

log = logging.getLogger(__name__)

AUTO_NEEDS = frozenset({"mixture", "density", "train"})
"""A default metric whose needs include one of these runs whenever they are met, requested or not:
they depend on what is known about the reference data (its mixture components, its exact
density, the model's training set given with ``--train``), not on the user's choice."""


def registered() -> list[Metric]:
    from metrics import all_metrics

    return all_metrics()


def metric_named(name: str) -> Metric:
    """The registered metric ``name`` (an unknown name raises with "did you mean")."""
    from metrics import METRICS

    return METRICS.get(name)


def check_metric_names(names: tuple[str, ...]) -> None:
    """Refuse unknown metric names, all at once, with the close matches and the known names."""
    import difflib

    from metrics import METRICS

    known = METRICS.names()
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        close = sorted({c for n in unknown for c in difflib.get_close_matches(n, known, n=2, cutoff=0.5)})
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown metric(s) {unknown}.{hint} Known metrics: {', '.join(known)}")


def sample_metrics() -> list[Metric]:
    """Metrics that two sample sets suffice for (``genbench eval-samples``), in registry order."""
    return [m for m in registered() if m.sample_only]


def _auto(metric: Metric) -> bool:
    return metric.default and bool(AUTO_NEEDS & set(metric.needs))


def model_need_missing(need: str, model: Any) -> bool:
    """Whether ``model`` lacks the capability named by ``need`` (``"model:A|B"``, ``"model:A+importance"``)."""
    spec = need.removeprefix("model:")
    names, _, extra = spec.partition("+")
    ok = any(isinstance(model, CAPABILITIES[name]) for name in names.split("|"))
    if ok and extra == "importance":
        ok = getattr(model, "supports_importance_sampling", True) is not False
    return not ok


def plan_model_metrics(requested: tuple[str, ...] | None, model: Any) -> tuple[list[Metric], dict[str, str]]:
    """(metrics to run, {name: reason} of those skipped) for one model; requested-but-impossible raises.

    Sample-only metrics need a ``Sampler`` (the features come from its samples); whether their data
    needs are met (logits, mixture) is decided once the features exist (:func:`compute_metrics`).
    """
    from harness.core.protocols import capabilities

    run: list[Metric] = []
    skipped: dict[str, str] = {}
    for metric in registered():
        model_needs = [n for n in metric.needs if n.startswith("model:")] or (["model:Sampler"] if metric.sample_only else [])
        missing = [n for n in model_needs if model_need_missing(n, model)]
        wanted = (metric.name in requested) if requested is not None else metric.default and not _auto(metric)
        if not wanted:
            continue
        if not missing:
            partial = metric.partial_support(model) if metric.partial_support is not None else None
            if partial is not None and requested is not None and metric.name in requested:
                raise TypeError(f"metric {metric.name!r} cannot run in full on {type(model).__name__}: {partial}; "
                                f"or drop {metric.name!r} from --metrics")
            if partial is not None:
                skipped[metric.name] = partial
            run.append(metric)
        elif requested is not None and metric.name in requested:
            raise TypeError(
                f"metric {metric.name!r} needs {NEEDS[missing[0]]}, but {type(model).__name__} implements "
                f"{', '.join(capabilities(model)) or 'none of the protocols'}"
            )
        else:
            skipped[metric.name] = f"model does not implement {NEEDS[missing[0]].removeprefix('a model implementing ')}"
    return run, skipped


def data_need_missing(metric: Metric, inputs: MetricInputs) -> str | None:
    """Why ``inputs`` cannot feed ``metric`` (the first unmet data need), or None."""
    for need in metric.needs:
        if need == "features" and inputs.fake_features is None:
            return "no features were extracted"
        if need == "logits" and inputs.fake_logits is None:
            return f"feature extractor {inputs.feature_extractor!r} has no class logits"
        if need == "labels" and inputs.fake_labels is None:
            return "the generated set has no requested labels (only a class-conditional model records them)"
        if need == "real_labels" and inputs.real_labels is None:
            return "the reference set has no class labels (use a labelled data set such as mnist5k-test)"
        if need == "samples" and inputs.samples is None:
            return "the generated set is not tabular rows"
        if need == "mixture" and inputs.mixture is None:
            return "the reference set has no mixture components (DatasetMeta.mixture)"
        if need == "density" and inputs.log_density is None:
            return "the reference set's density is not known (DatasetMeta.log_density)"
        if need == "train" and inputs.train_features is None:
            return "no training set was given (eval-samples --train DATA; the reference is then the held-out set)"
    return None


def too_few_rows(metric: Metric, inputs: MetricInputs, options: Any) -> str | None:
    """Why the sets are too small for sample metric ``metric`` (``Metric.min_samples``), or None."""
    if not metric.sample_only or inputs.fake_features is None:
        return None
    fewest, have = metric.min_samples(options), min(inputs.n_fake, inputs.n_real)
    return f"needs at least {fewest} rows per set, got {have}" if have < fewest else None


def compute_metrics(selected: list[Metric], inputs: MetricInputs, options: Any, *, replicates: int = 0,
                    requested: tuple[str, ...] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Run ``selected`` (plus the automatic metrics whose needs are met) on ``inputs``.

    Returns ({record key: entry as JSON}, {metric name: reason skipped}). With ``replicates`` >= 2,
    every half-sample metric's gated keys get an ``uncertainty`` entry (:func:`half_sample_replicates`).
    """
    chosen = list(selected) + [m for m in sample_metrics() if _auto(m) and m not in selected]
    out: dict[str, MetricEntry] = {}
    ran: list[Metric] = []
    skipped: dict[str, str] = {}
    halves = _replicate_rows(inputs, replicates)
    shared: dict[str, list[dict[str, MetricEntry]]] = {}
    for metric in chosen:
        reason = data_need_missing(metric, inputs)
        if reason is None and (reason := too_few_rows(metric, inputs, options)) is not None:
            if requested is not None and metric.name in requested:
                raise ValueError(f"too few rows for {metric.name}: it {reason}; draw more samples (--num-samples) "
                                 "or drop it from --metrics")
        if reason is not None:
            if not _auto(metric) or (requested is not None and metric.name in requested):
                skipped[metric.name] = reason
            continue
        log.info("computing %s", metric.name)
        phase(f"computing {metric.name}")
        if metric.compute_replicated is not None and halves and _fits(metric, options, halves[0][0], halves[0][1]):
            full, shared[metric.name] = metric.compute_replicated(inputs, options, [(r, rr) for r, rr, _ in halves])
            out.update(full)
        else:
            out.update(metric.compute(inputs, options))
        ran.append(metric)
    entries = {key: entry.to_json() for key, entry in out.items()}
    if replicates:
        for key, uncertainty in half_sample_replicates(ran, inputs, options, replicates, shared=shared).items():
            entries[key]["uncertainty"] = uncertainty
    return entries, skipped


def _replicate_rows(inputs: MetricInputs, replicates: int) -> list[tuple[Any, Any, int]]:
    """The half-samples (generated rows, reference rows, estimator seed) a run's replicates score."""
    if replicates < 2 or inputs.fake_features is None or inputs.real_features is None:
        return []
    return list(half_sample_rows(inputs.n_fake, inputs.n_real, replicates, inputs.seed))


def _fits(metric: Metric, options: Any, rows: Any, ref_rows: Any) -> bool:
    return min(len(rows), len(ref_rows)) >= metric.min_samples(options)


def half_sample_replicates(metrics: list[Metric], inputs: MetricInputs, options: Any, num_replicates: int, *,
                           shared: dict[str, list[dict[str, MetricEntry]]] | None = None) -> dict[str, dict[str, Any]]:
    """Standard errors of the half-sample metrics from ``num_replicates`` half-samples of both sets.

    Replicate r scores rows drawn by ``harness.core.stats.half_sample_rows(n, n_ref, B, seed)``
    with its own estimator seed; a metric is re-estimated on a replicate with the same settings as
    the run (``Metric.replicate_options`` caps what the half-sets cannot hold). Metrics whose
    ``min_samples`` the half-sets cannot meet get no uncertainty (a drift check then compares them
    exactly). ``shared`` holds, per metric name, replicate entries already computed with the run
    (``Metric.compute_replicated``, on the same rows). Returns ``{key: uncertainty entry}``
    (``harness.core.stats.half_sample_uncertainty``).
    """
    shared = shared or {}
    targets = [m for m in metrics if m.uncertainty == "half-sample"]
    if not targets or inputs.fake_features is None or inputs.real_features is None:
        return {}
    n, n_ref = inputs.n_fake, inputs.n_real
    reps: list[dict[str, float]] = []
    phase(f"half-sample replicates: {num_replicates} x {', '.join(m.name for m in targets)}")
    for r, (rows, ref_rows, seed) in enumerate(progress(half_sample_rows(n, n_ref, num_replicates, inputs.seed),
                                                        total=num_replicates, desc="half-sample replicates", unit="replicate")):
        sub = inputs.subset(rows, ref_rows, seed)
        values: dict[str, float] = {}
        for metric in targets:
            opts = metric.replicate_options(options, inputs, len(rows), len(ref_rows)) if metric.replicate_options else options
            if min(len(rows), len(ref_rows)) < metric.min_samples(opts):
                continue
            gated = {k.key for k in metric.keys if k.gate == "statistical"}
            found = shared[metric.name][r] if metric.name in shared else metric.compute(sub, opts)
            for key, entry in found.items():
                if key in gated and entry.value is not None:
                    values[key] = float(entry.value)
        reps.append(values)
    if not reps:
        return {}
    return {key: half_sample_uncertainty([r[key] for r in reps], n=n, n_ref=n_ref, seed=inputs.seed)
            for key in reps[0] if all(key in r for r in reps)}
