"""``genbench eval``: every applicable metric of one model on one data set, in one record.

Plan from capabilities: a Sampler gets sample metrics (FID/KID/IS/PRDC through the same path as
``eval-samples``), NFE and samples per second; LogLikelihood gets exact ``bpd``; LowerBound gets
``elbo_bpd`` and ``iwae_bpd``; ProbabilityFlow gets ``bpd`` by the probability-flow ODE (when no
exact likelihood exists); Encoder gets active units. A requested metric whose capability is
missing is an error; an unrequested one is listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.convert import ROUNDING, samples_to_data
from harness.config import config_from_dict
from harness.datasets import Dataset, load_dataset
from harness.eval_samples import SampleEvalConfig, check_values, describe_dataset, score_datasets, select_rows
from harness.core.protocols import DataSpec, Encoder, LogLikelihood, LowerBound, ProbabilityFlow, Sampler, capabilities
from harness.core.rng import BatchRNG
from harness.store.records import SCHEMA, run_info
from metrics.info import SAMPLE_METRICS

log = logging.getLogger(__name__)

MODEL_METRICS = ("nfe", "bpd", "elbo_bpd", "iwae_bpd", "active_units", "straightness")
NEEDS: dict[str, tuple[type, str]] = {
    **{m: (Sampler, "Sampler") for m in (*SAMPLE_METRICS, "nfe")},
    "elbo_bpd": (LowerBound, "LowerBound"),
    "iwae_bpd": (LowerBound, "LowerBound"),
    "active_units": (Encoder, "Encoder"),
}


@dataclass(frozen=True)
class ModelEvalConfig:
    """Options of ``genbench eval``; exactly one of checkpoint / entry / model."""

    dataset: str
    checkpoint: str | None = None
    entry: str | None = None
    model: str | None = None
    model_args: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs for the factory / entry point
    metrics: tuple[str, ...] | None = None  # None: every applicable metric
    num_samples: int = 1000
    sampler: str | None = None
    steps: int | None = None
    sample_options: tuple[tuple[str, Any], ...] = ()  # other keyword arguments of model.sample, e.g. denoise=False
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 100
    feature_extractor: str | None = None
    inception_weights: str | None = None
    resize: str = "tf-bilinear"
    rounding: str = "round"
    num_importance: int = 50
    importance_chunk: int = 100
    ode_divergence: str = "hutchinson"
    ode_probe: str = "rademacher"
    ode_num_probes: int = 1
    ode_solver: str = "dopri5"
    ode_rtol: float = 1e-5
    ode_atol: float = 1e-5
    ode_steps: int = 100
    straightness_steps: int = 100  # Euler steps of the trajectory whose straightness S(Z) is measured
    use_cache: bool = True
    bootstrap: int = 10  # half-sample replicates for the sample metrics' standard errors; 0: none

    def __post_init__(self) -> None:
        given = [n for n in ("checkpoint", "entry", "model") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of --checkpoint, --entry, --model (got {given or 'none'})")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
            known = (*SAMPLE_METRICS, *MODEL_METRICS)
            unknown = [m for m in self.metrics if m not in known]
            if unknown:
                raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(known)}")
        for name in ("model_args", "sample_options"):  # a mapping (suite files, JSON) becomes sorted pairs
            value = getattr(self, name)
            pairs = sorted(value.items(), key=lambda kv: kv[0]) if isinstance(value, dict) else [tuple(p) for p in value]
            object.__setattr__(self, name, tuple(pairs))
        clash = {k for k, _ in self.sample_options} & {"sampler", "steps", "n", "rng"}
        if clash:
            raise ValueError(f"sample_options may not set {sorted(clash)}; use --sampler / --steps")
        if self.rounding not in ROUNDING:
            raise ValueError(f"rounding {self.rounding!r} is not one of {', '.join(ROUNDING)}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        if self.num_importance < 2:
            raise ValueError(f"num_importance (the IWAE k) must be >= 2, got {self.num_importance}")
        if self.straightness_steps < 1:
            raise ValueError(f"straightness_steps must be >= 1, got {self.straightness_steps}")
        if self.bootstrap == 1 or self.bootstrap < 0:
            raise ValueError(f"bootstrap must be 0 (off) or >= 2 replicates, got {self.bootstrap}")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ModelEvalConfig:
        """Build from a mapping (suite files); unknown keys are refused with the known ones listed."""
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
                       "checkpoint_sha256": ckpt.sha256, "config": ckpt.config, "meta": ckpt.meta}
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
    description["capabilities"] = capabilities(model)
    return LoadedModel(model=model, description=description)


def plan_metrics(cfg: ModelEvalConfig, model: Any) -> tuple[list[str], dict[str, str]]:
    """Which metrics run, and why the others are skipped. Requested-but-impossible is an error."""
    skipped: dict[str, str] = {}
    run: list[str] = []
    for metric in (*SAMPLE_METRICS, *MODEL_METRICS):
        if metric == "bpd":
            ok = isinstance(model, (LogLikelihood, ProbabilityFlow))
            need = "LogLikelihood or ProbabilityFlow"
        elif metric == "straightness":
            ok = isinstance(model, ProbabilityFlow) and callable(getattr(model, "integrate", None))
            need = "a flow with integrate(z0, sampler='euler', steps=N, return_trajectory=True) (flow matching)"
        else:
            proto, need = NEEDS[metric]
            ok = isinstance(model, proto)
        if ok and metric == "iwae_bpd" and not getattr(model, "supports_importance_sampling", True):
            ok, need = False, "an importance-weighted bound (supports_importance_sampling is False)"
        requested = cfg.metrics is None or metric in cfg.metrics
        if ok and requested:
            run.append(metric)
        elif requested and cfg.metrics is not None:
            raise TypeError(
                f"metric {metric!r} needs a model implementing {need}, but {type(model).__name__} implements "
                f"{', '.join(capabilities(model)) or 'none of the protocols'}"
            )
        elif not ok:
            skipped[metric] = f"model does not implement {need}"
    return run, skipped


def _sample_kwargs(model: Any, cfg: ModelEvalConfig) -> dict[str, Any]:
    kwargs = {k: v for k, v in (("sampler", cfg.sampler), ("steps", cfg.steps)) if v is not None}
    kwargs.update(dict(cfg.sample_options))
    if kwargs:
        params = inspect.signature(model.sample).parameters
        missing = [k for k in kwargs if k not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())]
        if missing:
            raise TypeError(f"{type(model).__name__}.sample does not accept {missing}; drop --sampler/--steps/--sample-option")
    return kwargs


def draw_samples(model: Any, cfg: ModelEvalConfig, *, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    """Draw ``num_samples`` in batches with per-example seeds; count NFE at the network."""
    from harness.core.nfe import NFECount, counting

    spec: DataSpec = model.data_spec
    kwargs = _sample_kwargs(model, cfg)
    net = getattr(model, "net", None)
    count = NFECount()
    out = []
    start = time.perf_counter()
    for lo in tqdm(range(0, cfg.num_samples, cfg.batch_size), desc="sampling", unit="batch", disable=not progress, leave=False):
        rng = BatchRNG(cfg.seed, range(lo, min(lo + cfg.batch_size, cfg.num_samples)), device=cfg.device)
        with torch.no_grad():
            if isinstance(net, torch.nn.Module):
                with counting(model) as batch_count:
                    x = model.sample(len(rng), rng, **kwargs)
                count.forward_calls += batch_count.forward_calls
                count.examples += batch_count.examples
            else:
                x = model.sample(len(rng), rng, **kwargs)
        out.append(samples_to_data(x.detach().cpu(), spec, rounding=cfg.rounding))
    wall = time.perf_counter() - start
    samples = torch.cat(out)
    info: dict[str, Any] = {
        "num_samples": cfg.num_samples,
        "batch_size": cfg.batch_size,
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        "wall_time_s": round(wall, 4),
        "samples_per_s": cfg.num_samples / wall if wall > 0 else math.inf,
        "rounding": cfg.rounding if len(spec.shape) == 3 else None,
    }
    if isinstance(net, torch.nn.Module):
        info["nfe"] = count.as_record(meaning="one forward call of model.net on a batch")
        info["nfe_per_sample"] = count.examples / cfg.num_samples
    return samples, info


def _iter_batches(data: Dataset, batch_size: int, device: str):
    for lo in range(0, len(data), batch_size):
        yield lo, torch.from_numpy(np.ascontiguousarray(data.x[lo : lo + batch_size])).to(device)


def likelihood_metrics(model: Any, data: Dataset, cfg: ModelEvalConfig, run: list[str], *, progress: bool) -> dict[str, dict[str, Any]]:
    """bpd (exact or PF-ODE), ELBO and IWAE bits/dim, and active units on ``data``."""
    from metrics import likelihood

    spec: DataSpec = model.data_spec if hasattr(model, "data_spec") else _spec_from_data(data)
    batches = list(_iter_batches(data, cfg.batch_size, cfg.device))
    out: dict[str, dict[str, Any]] = {}
    common = {"n": len(data), "dataset": data.name, "seed": cfg.seed}
    if "bpd" in run and isinstance(model, LogLikelihood):
        out["bpd"] = {**likelihood.exact_bpd(model, batches, spec, seed=cfg.seed), **common}
    elif "bpd" in run:
        out["bpd"] = {**_ode_bpd(model, batches, spec, cfg, progress=progress), **common}
    if "elbo_bpd" in run:
        out["elbo_bpd"] = {**likelihood.bound_bpd(model, batches, spec, num_importance=1, seed=cfg.seed), **common}
    if "iwae_bpd" in run:
        out["iwae_bpd"] = {
            **likelihood.bound_bpd(model, batches, spec, num_importance=cfg.num_importance,
                                   chunk=cfg.importance_chunk, seed=cfg.seed),
            **common,
        }
    if "active_units" in run:
        from metrics.active_units import encoder_active_units

        au = encoder_active_units(model, batches, spec=spec, seed=cfg.seed)
        out["active_units"] = {"value": au["active_units"]["count"], **au["active_units"], **common}
        out["kl_active_dims"] = {"value": au["kl_active_dims"]["count"], **au["kl_active_dims"], **common}
    return out


def _spec_from_data(data: Dataset) -> DataSpec:
    return DataSpec(shape=data.x.shape[1:], kind="continuous", value_range=(-1.0, 1.0))


def _ode_bpd(model: Any, batches, spec: DataSpec, cfg: ModelEvalConfig, *, progress: bool) -> dict[str, Any]:
    from harness.core.stats import block_means, mean_and_stderr
    from metrics.likelihood import model_inputs
    from metrics.likelihood_ode import ODELikelihoodConfig, ode_bpd

    ode_cfg = ODELikelihoodConfig(
        divergence=cfg.ode_divergence, probe=cfg.ode_probe, num_probes=cfg.ode_num_probes,
        solver=cfg.ode_solver, rtol=cfg.ode_rtol, atol=cfg.ode_atol, steps=cfg.ode_steps,
    )
    values, nfes, protocol, fields_ = [], [], {}, {}
    forward_calls = vjp_calls = 0
    for lo, x in tqdm(batches, desc="PF-ODE likelihood", unit="batch", disable=not progress, leave=False):
        rng = BatchRNG(cfg.seed, range(lo, lo + len(x)), device=cfg.device)
        inputs, offset, fields_ = model_inputs(x, spec, rng)
        bpd, result = ode_bpd(model, inputs, config=ode_cfg, rng=rng, offset_bits=offset)
        values.append(bpd.cpu())
        nfes.append(result.nfe.cpu())
        forward_calls += result.forward_calls
        vjp_calls += result.vjp_calls
        protocol = result.protocol()
    per_example = torch.cat(values)
    mean, stderr = mean_and_stderr(per_example)
    nfe = torch.cat(nfes).to(torch.float64)
    protocol.update(forward_calls=forward_calls, vjp_calls=vjp_calls)
    return {"value": mean, "stderr": stderr, "block_means": block_means(per_example), **protocol, **fields_, "offset_bits": offset,
            "nfe_mean": float(nfe.mean()), "nfe_max": int(nfe.max())}


def evaluate_model(cfg: ModelEvalConfig, *, progress: bool = True, argv: list[str] | None = None,
                   on_samples: Callable[[torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Evaluate one model on one data set; returns the record (the caller writes it).

    ``on_samples`` receives the generated samples in data space (uint8 images or float rows), when
    any were drawn (e.g. the leaderboard keeps a few for its sample grids).
    """
    start = time.perf_counter()
    loaded = load_model(cfg)
    model = loaded.model
    run, skipped = plan_metrics(cfg, model)
    data = load_dataset(cfg.dataset, num_samples=cfg.num_samples, seed=cfg.seed + 1)
    check_values(data, "dataset")
    data, selection = select_rows(data, min(cfg.num_samples, len(data)), cfg.seed + 1, "dataset")
    metrics: dict[str, dict[str, Any]] = {}
    features: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    wanted_sample_metrics = tuple(m for m in SAMPLE_METRICS if m in run)
    if "nfe" in run or wanted_sample_metrics:
        samples, sampling = draw_samples(model, cfg, progress=progress)
        if on_samples is not None:
            on_samples(samples)
        if "nfe" in run:
            if "nfe_per_sample" in sampling:
                metrics["nfe_mean"] = {"value": sampling["nfe_per_sample"], **sampling["nfe"],
                                       "sampler": cfg.sampler, "steps": cfg.steps}
            else:
                skipped["nfe"] = "model has no `net` module to count evaluations of"
            metrics["samples_per_s"] = {"value": sampling["samples_per_s"], "device": cfg.device,
                                        "batch_size": cfg.batch_size, "wall_time_s": sampling["wall_time_s"]}
        if wanted_sample_metrics:
            kind = "image" if samples.dim() == 4 else "tabular"
            sample_set = Dataset(name="model samples", x=samples.numpy(), labels=None, kind=kind, source=loaded.description["name"])
            sample_cfg = SampleEvalConfig(
                samples="model", reference=cfg.dataset, metrics=wanted_sample_metrics,
                feature_extractor=cfg.feature_extractor, inception_weights=cfg.inception_weights, resize=cfg.resize,
                seed=cfg.seed, batch_size=cfg.batch_size, device=cfg.device, use_cache=cfg.use_cache,
                bootstrap=cfg.bootstrap,
            )
            sample_metrics, sample_skipped, features, _ = score_datasets(
                sample_cfg, sample_set, data, reference_selection=selection, progress=progress
            )
            metrics.update(sample_metrics)
            skipped.update(sample_skipped)
    metrics.update(likelihood_metrics(model, data, cfg, run, progress=progress))
    if "straightness" in run:
        metrics["straightness"] = straightness_metric(model, cfg)
    return {
        "schema": SCHEMA,
        "kind": "eval",
        "run": run_info(device=cfg.device, wall_time_s=time.perf_counter() - start, argv=argv),
        "config": asdict(cfg),
        "model": loaded.description,
        "data": {"dataset": describe_dataset(data, cfg.dataset, selection)},
        "sampling": sampling,
        "features": features,
        "metrics": _json_safe(metrics),
        "skipped": skipped,
    }


def straightness_metric(model: Any, cfg: ModelEvalConfig) -> dict[str, Any]:
    """S(Z) of the learned flow (Liu et al. 2023, eq. 4) on ``num_samples`` Euler trajectories from the prior.

    Starts from z0 ~ N(0, I) (drawn per example from ``BatchRNG(seed, stream="straightness")``) and
    integrates ``model.integrate`` with ``straightness_steps`` Euler steps; the standard error is
    over the per-example values.
    """
    from harness.core.stats import block_means, mean_and_stderr
    from metrics.straightness import straightness_per_example

    per: list[torch.Tensor] = []
    for lo in range(0, cfg.num_samples, cfg.batch_size):
        idx = range(lo, min(lo + cfg.batch_size, cfg.num_samples))
        z0 = BatchRNG(cfg.seed, idx, stream="straightness", device=cfg.device).normal(tuple(model.data_spec.shape))
        _, traj = model.integrate(z0, sampler="euler", steps=cfg.straightness_steps, return_trajectory=True)
        per.append(straightness_per_example(traj).cpu())
    values = torch.cat(per)
    mean, stderr = mean_and_stderr(values)
    return {"value": mean, "stderr": stderr, "block_means": block_means(values), "n": cfg.num_samples, "seed": cfg.seed, "euler_steps": cfg.straightness_steps,
            "definition": "E ∫_0^1 ||dZ/dt - (Z1 - Z0)||^2 dt on the Euler grid, z0 ~ N(0, I) (Liu et al. 2023, eq. 4)"}


def _json_safe(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Replace NaN (e.g. a standard error of one example) by None: records are strict JSON."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return {k: fix(v) for k, v in metrics.items()}
