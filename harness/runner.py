"""``genbench eval``: every applicable metric of one model on one data set, in one record.

The planner (``harness.planner``) reads the ``METRICS`` registry: a Sampler gets the sample
metrics (through the same path as ``eval-samples``) and NFE; LogLikelihood / ProbabilityFlow get
``bpd``; LowerBound gets ``elbo_bpd`` and ``iwae_bpd``; Encoder gets active units; FlowTrajectory
gets straightness. A requested metric whose capability is missing is an error; an unrequested
one is listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from harness.config import config_from_dict
from harness.convert import ROUNDING, samples_to_data
from harness.core.device import check_device
from harness.core.distributed import gather_rows, my_share, sum_ints
from harness.core.heartbeat import phase
from harness.core.heartbeat import progress as progress_iter
from harness.core.metric import MetricInputs, ModelData
from harness.core.options import MetricOptions, ModelMetricOptions, SampleMetricOptions
from harness.core.protocols import DataSpec, capabilities
from harness.core.rng import BatchRNG
from harness.datasets import Dataset, load_dataset
from harness.eval_samples import (
    SampleEvalConfig,
    build_extractor,
    check_replicates,
    check_values,
    describe_dataset,
    describe_reference,
    score_datasets,
    select_rows,
)
from harness.planner import check_metric_names, compute_metrics, plan_model_metrics
from harness.reference_stats import ReferenceStats, check_dimension, check_protocol, is_reference_file, read_reference
from harness.store.records import SCHEMA, run_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEvalConfig:
    """Options of ``genbench eval``; exactly one of checkpoint / entry / model.

    The metrics' settings are the sub-configs ``sample_metrics`` and ``model_metrics``
    (``harness.core.options``), shared with ``genbench eval-samples``. ``reference``: a reference
    statistics file (``harness.reference_stats``) the sample metrics compare the samples with,
    instead of ``dataset``'s rows (the model metrics still read ``dataset``);
    ``assume_reference_protocol`` as in ``SampleEvalConfig``.
    """

    dataset: str
    checkpoint: str | None = None
    entry: str | None = None
    model: str | None = None
    model_args: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs for the factory / entry point
    metrics: tuple[str, ...] | None = None  # None: every applicable default metric
    num_samples: int = 1000
    sampler: str | None = None
    steps: int | None = None
    sample_options: tuple[tuple[str, Any], ...] = ()  # other keyword arguments of model.sample, e.g. denoise=False
    seed: int = 0
    device: str = "auto"  # resolved in __post_init__ (harness.core.device.check_device)
    batch_size: int = 100
    feature_extractor: str | None = None
    inception_weights: str | None = None
    resize: str = "tf-bilinear"
    rounding: str = "round"
    sample_metrics: SampleMetricOptions = field(default_factory=SampleMetricOptions)
    model_metrics: ModelMetricOptions = field(default_factory=ModelMetricOptions)
    use_cache: bool = True
    replicates: int = 10  # half-sample replicates for the sample metrics' standard errors; 0: none
    allow_fewer_reference: bool = False  # score more samples than the reference set has rows
    reference: str | None = None
    assume_reference_protocol: bool = False

    def __post_init__(self) -> None:
        given = [n for n in ("checkpoint", "entry", "model") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of --checkpoint, --entry, --model (got {given or 'none'})")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
            check_metric_names(self.metrics)
        for name in ("model_args", "sample_options"):  # a mapping (suite files, JSON) becomes sorted pairs
            value = getattr(self, name)
            pairs = sorted(value.items(), key=lambda kv: kv[0]) if isinstance(value, dict) else [tuple(p) for p in value]
            object.__setattr__(self, name, tuple(pairs))
        for name, cls in (("sample_metrics", SampleMetricOptions), ("model_metrics", ModelMetricOptions)):
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, cls(**getattr(self, name)))
        clash = {k for k, _ in self.sample_options} & {"sampler", "steps", "n", "rng"}
        if clash:
            raise ValueError(f"sample_options may not set {sorted(clash)}; use --sampler / --steps")
        if self.rounding not in ROUNDING:
            raise ValueError(f"rounding {self.rounding!r} is not one of {', '.join(ROUNDING)}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        check_replicates(self.replicates)
        object.__setattr__(self, "device", check_device(self.device))

    @property
    def options(self) -> MetricOptions:
        return MetricOptions(sample=self.sample_metrics, model=self.model_metrics)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ModelEvalConfig:
        """Build from a mapping (suite files); flat sub-config options are routed, unknown keys refused."""
        return config_from_dict(cls, options)


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    description: dict[str, Any]


def load_model(cfg: ModelEvalConfig) -> LoadedModel:
    """Build the model from a checkpoint, an entry point or the registry; describe it for the record."""
    from harness import models

    if cfg.checkpoint:
        from harness.checkpoint import load_checkpoint

        ckpt = load_checkpoint(cfg.checkpoint)
        model = models.build_registered(ckpt.model_name, ckpt.config)
        if isinstance(model, torch.nn.Module):
            try:
                model.load_state_dict(ckpt.state_dict, strict=True)
            except RuntimeError as err:
                raise ValueError(f"checkpoint {cfg.checkpoint} does not fit model {ckpt.model_name!r}: {err}") from None
        description = {"name": ckpt.model_name, "source": "checkpoint", "checkpoint": str(cfg.checkpoint),
                       "checkpoint_sha256": ckpt.sha256, "weights_sha256": ckpt.weights_sha256, "config": ckpt.config,
                       "meta": ckpt.meta}
    elif cfg.entry:
        model = models.load_entry_point(cfg.entry, **dict(cfg.model_args))
        description = {"name": cfg.entry, "source": "entry", "config": dict(cfg.model_args)}
    else:
        model = models.build_registered(cfg.model, dict(cfg.model_args))
        description = {"name": cfg.model, "source": "registry", "config": dict(cfg.model_args)}
    if isinstance(model, torch.nn.Module):
        model = model.to(cfg.device).eval()
        description["parameters"] = sum(p.numel() for p in model.parameters())
    description["class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    if callable(describe := getattr(model, "describe", None)):  # adapters: configs, weights hash, schedule mapping
        description["describe"] = describe()
    description["capabilities"] = capabilities(model)
    return LoadedModel(model=model, description=description)


def _sample_kwargs(model: Any, cfg: ModelEvalConfig) -> dict[str, Any]:
    kwargs = {k: v for k, v in (("sampler", cfg.sampler), ("steps", cfg.steps)) if v is not None}
    kwargs.update(dict(cfg.sample_options))
    if kwargs:
        params = inspect.signature(model.sample).parameters
        missing = [k for k in kwargs if k not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())]
        if missing:
            raise TypeError(f"{type(model).__name__}.sample does not accept {missing}; drop --sampler/--steps/--sample-option")
    return kwargs


def _checked_samples(x: Any, n: int, spec: DataSpec, model: Any) -> torch.Tensor:
    """``x`` on the CPU if it is what ``sample(n, rng)`` must return: a real tensor [n, *data_spec.shape]."""
    where = f"{type(model).__name__}.sample({n}, rng)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} returned {type(x).__name__}, not a torch.Tensor [{n}, {', '.join(map(str, spec.shape))}]")
    if tuple(x.shape) != (n, *spec.shape):
        raise ValueError(f"{where} returned shape {list(x.shape)}; expected [{n}, {', '.join(map(str, spec.shape))}] "
                         "(one row per requested sample, data_spec.shape each)")
    if x.is_complex():
        raise TypeError(f"{where} returned a complex tensor ({x.dtype}); samples must be real")
    if spec.kind == "continuous" and not x.is_floating_point():
        raise TypeError(f"{where} returned {x.dtype} for continuous data (data_spec.kind); return floating-point "
                        f"values in data_spec.value_range {spec.value_range}")
    if spec.kind == "discrete":
        if x.is_floating_point() and not bool((x == x.round()).all()):
            raise TypeError(f"{where} returned non-integer {x.dtype} values for discrete data; return the integer levels "
                            f"0..{(spec.num_categories or 0) - 1}")
        if spec.num_categories is not None and x.numel() and (int(x.min()) < 0 or int(x.max()) >= spec.num_categories):
            raise ValueError(f"{where} returned levels in [{int(x.min())}, {int(x.max())}]; data_spec allows "
                             f"0..{spec.num_categories - 1}")
    return x.detach().cpu()


def draw_samples(model: Any, cfg: ModelEvalConfig, *, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    """Draw ``num_samples`` in batches with per-example seeds; count NFE at the network.

    Under torchrun each rank draws its share of the batches (``harness.core.distributed``); the
    samples are gathered in order on every rank and the NFE counts summed, so the result is one
    process's.
    """
    from harness.core.nfe import DECLARED_ATTRIBUTE, NFECount, counting

    spec: DataSpec = model.data_spec
    kwargs = _sample_kwargs(model, cfg)
    net = getattr(model, "net", None)
    count = NFECount()
    out: dict[int, np.ndarray] = {}
    start = time.perf_counter()
    mine = my_share(range(0, cfg.num_samples, cfg.batch_size))
    phase(f"sampling {cfg.num_samples} examples from {type(model).__name__}")
    for lo in progress_iter(mine, total=len(mine), desc="sampling", bar=progress):
        rng = BatchRNG(cfg.seed, range(lo, min(lo + cfg.batch_size, cfg.num_samples)), device=cfg.device)
        with torch.no_grad():
            if isinstance(net, torch.nn.Module):
                with counting(model) as batch_count:
                    x = model.sample(len(rng), rng, **kwargs)
                count.forward_calls += batch_count.forward_calls
                count.examples += batch_count.examples
            else:
                x = model.sample(len(rng), rng, **kwargs)
        out[lo] = samples_to_data(_checked_samples(x, len(rng), spec, model), spec, rounding=cfg.rounding).numpy()
    gathered = gather_rows(out, cfg.num_samples)
    totals = sum_ints({"forward_calls": count.forward_calls, "examples": count.examples})
    count.forward_calls, count.examples = totals["forward_calls"], totals["examples"]
    wall = time.perf_counter() - start
    samples = torch.from_numpy(gathered)
    settings = getattr(model, "sampling_settings", None)  # the sampler / steps the model resolved its defaults to
    info: dict[str, Any] = {
        "num_samples": cfg.num_samples,
        "batch_size": cfg.batch_size,
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        **(settings(**kwargs) if callable(settings) else {}),
        "wall_time_s": round(wall, 4),
        "samples_per_s": cfg.num_samples / wall if wall > 0 else math.inf,
        "rounding": cfg.rounding if len(spec.shape) == 3 else None,
    }
    if isinstance(net, torch.nn.Module):
        info["nfe"] = count.as_record(meaning="one forward call of model.net on a batch")
        info["nfe_per_sample"] = count.examples / cfg.num_samples
    elif isinstance(declared := getattr(model, DECLARED_ATTRIBUTE, None), (int, float)):
        info["nfe"] = {"declared": declared, "meaning": f"declared by the model ({DECLARED_ATTRIBUTE}); nothing was counted"}
        info["nfe_per_sample"] = float(declared)
    return samples, info


def _iter_batches(data: Dataset, batch_size: int, device: str) -> list[tuple[int, torch.Tensor]]:
    return [(lo, torch.from_numpy(np.ascontiguousarray(data.x[lo : lo + batch_size])).to(device))
            for lo in range(0, len(data), batch_size)]


def _spec_from_data(data: Dataset) -> DataSpec:
    return DataSpec(shape=data.x.shape[1:], kind="continuous", value_range=(-1.0, 1.0))


def _reference_file(cfg: ModelEvalConfig) -> ReferenceStats | None:
    """The ``--reference`` statistics file, read (None without one)."""
    if cfg.reference is None:
        return None
    if not is_reference_file(cfg.reference):
        raise ValueError(f"--reference {cfg.reference!r} is not a reference statistics file (genbench ref's .npz, a "
                         "pytorch-fid / clean-fid / EDM .npz of mu and sigma, an EDM2 .pkl); to score against other "
                         "data, give it as --dataset")
    return read_reference(cfg.reference)


def _check_file_protocol(cfg: ModelEvalConfig, ref: ReferenceStats, data: Dataset) -> None:
    """Refuse a reference file whose feature protocol differs from the extractor the samples will get."""
    if ref.kind != data.kind:
        raise ValueError(f"--reference {ref.path} holds statistics of {ref.kind} data but {cfg.dataset!r} is {data.kind}")
    extractor_cfg = SampleEvalConfig(samples="model", reference=cfg.reference or "", feature_extractor=cfg.feature_extractor,
                                     inception_weights=cfg.inception_weights, resize=cfg.resize, device=cfg.device)
    try:
        extractor = build_extractor(extractor_cfg, data)
    except FileNotFoundError:
        return  # missing weights: handled (skipped or raised) where the sample metrics run
    check_dimension(ref, extractor.name, extractor.feature_dim)
    check_protocol(ref, extractor.protocol(), assume=cfg.assume_reference_protocol)


def _describe_file(cfg: ModelEvalConfig, ref: ReferenceStats, features: dict[str, Any] | None) -> dict[str, Any]:
    if features is None:  # no sample metric ran, so no extractor was built to check the file against
        return ref.describe(cfg.reference or "", "not checked: no sample metric ran")
    sample_cfg = SampleEvalConfig(samples="model", reference=cfg.reference or "",
                                  assume_reference_protocol=cfg.assume_reference_protocol)
    return describe_reference(sample_cfg, ref, None, features, False)


def _feature_hint(dataset: str) -> str:
    """How to run the sample metrics without Inception weights, where the project has a feature network."""
    if dataset.startswith(("mnist", "fashion")):
        return "; or use the project's feature network: --feature-extractor mnist-cnn"
    return ""


def evaluate_model(cfg: ModelEvalConfig, *, progress: bool = True, argv: list[str] | None = None,
                   on_samples: Callable[[torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Evaluate one model on one data set; returns the record (the caller writes it).

    ``on_samples`` receives the generated samples in data space (uint8 images or float rows), when
    any were drawn (e.g. the leaderboard keeps a few for its sample grids).
    """
    start = time.perf_counter()
    loaded = load_model(cfg)
    model = loaded.model
    run, skipped = plan_model_metrics(cfg.metrics, model)
    data = load_dataset(cfg.dataset, num_samples=cfg.num_samples, seed=cfg.seed + 1)
    check_values(data, "dataset")
    spec = getattr(model, "data_spec", None)
    if isinstance(spec, DataSpec) and tuple(data.x.shape[1:]) != tuple(spec.shape):
        raise ValueError(f"model {loaded.description['name']!r} works on examples of shape {tuple(spec.shape)} but "
                         f"{cfg.dataset!r} has examples of shape {tuple(data.x.shape[1:])}; evaluate it on a data set of "
                         "its shape, or build the model for this one (--model-arg, e.g. dim= or shape=)")
    ref_file = _reference_file(cfg)
    ref_rows, ref_name = (len(data), repr(cfg.dataset)) if ref_file is None else (ref_file.rows, str(ref_file.path))
    if ref_rows is not None and cfg.num_samples > ref_rows and not cfg.allow_fewer_reference \
            and any(m.sample_only for m in run):
        raise ValueError(f"--num-samples {cfg.num_samples} exceeds the {ref_rows} rows of {ref_name}, so the sample "
                         f"metrics would compare {cfg.num_samples} samples with {ref_rows} reference rows; lower "
                         "--num-samples, or pass --allow-fewer-reference to accept that")
    data, selection = select_rows(data, min(cfg.num_samples, len(data)), cfg.seed + 1, "dataset")
    if ref_file is not None and any(m.sample_only for m in run):
        _check_file_protocol(cfg, ref_file, data)  # before sampling
    metrics: dict[str, dict[str, Any]] = {}
    features: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    sample_run = [m for m in run if m.sample_only]
    needs_samples = bool(sample_run) or any("model:Sampler" in m.needs for m in run)
    if needs_samples:
        samples, sampling = draw_samples(model, cfg, progress=progress)
        if on_samples is not None:
            on_samples(samples)
        if sample_run:
            kind = "image" if samples.dim() == 4 else "tabular"
            requested = getattr(model, "requested_labels", None)  # a class-conditional model: what each sample was asked to be
            labels = None if requested is None else requested(range(len(samples))).numpy()
            sample_set = Dataset(name="model samples", x=samples.numpy(), labels=labels, kind=kind, source=loaded.description["name"])
            sample_cfg = SampleEvalConfig(
                samples="model", reference=cfg.reference or cfg.dataset, metrics=tuple(m.name for m in sample_run),
                feature_extractor=cfg.feature_extractor, inception_weights=cfg.inception_weights, resize=cfg.resize,
                seed=cfg.seed, batch_size=cfg.batch_size, device=cfg.device, use_cache=cfg.use_cache,
                sample_metrics=cfg.sample_metrics, replicates=cfg.replicates,
                assume_reference_protocol=cfg.assume_reference_protocol,
            )
            try:
                sample_metrics, sample_skipped, features, _ = score_datasets(
                    sample_cfg, sample_set, data if ref_file is None else ref_file, reference_selection=selection,
                    progress=progress, requested=cfg.metrics
                )
            except FileNotFoundError as err:
                from metrics.features.weights_lookup import WeightsNotFoundError

                if cfg.metrics is not None or not isinstance(err, WeightsNotFoundError):
                    raise  # an explicit request for a metric that cannot run stays an error
                reason = f"feature weights not found ({' '.join(str(err).split())}){_feature_hint(cfg.dataset)}"
                log.warning("skipping %s: %s", ", ".join(m.name for m in sample_run), reason)
                sample_metrics, sample_skipped = {}, {m.name: reason for m in sample_run}
            metrics.update(sample_metrics)
            skipped.update(sample_skipped)
    model_run = [m for m in run if not m.sample_only]
    if model_run:
        spec: DataSpec = model.data_spec if hasattr(model, "data_spec") else _spec_from_data(data)
        inputs = MetricInputs(seed=cfg.seed, model=model, sampling=sampling, device=cfg.device, progress=progress,
                              num_samples=cfg.num_samples, batch_size=cfg.batch_size, mixture=data.meta.mixture,
                              data=ModelData(batches=_iter_batches(data, cfg.batch_size, cfg.device), spec=spec,
                                             n=len(data), dataset=data.name))
        model_metrics, model_skipped = compute_metrics(model_run, inputs, cfg.options, requested=cfg.metrics)
        metrics.update(model_metrics)
        skipped.update(model_skipped)
    return {
        "schema": SCHEMA,
        "kind": "eval",
        "run": run_info(device=cfg.device, wall_time_s=time.perf_counter() - start, argv=argv),
        "config": asdict(cfg),
        "model": loaded.description,
        "data": {"dataset": describe_dataset(data, cfg.dataset, selection),
                 **({} if ref_file is None else {"reference": _describe_file(cfg, ref_file, features)})},
        "sampling": sampling,
        "features": features,
        "metrics": metrics,
        "skipped": skipped,
    }
