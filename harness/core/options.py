"""Metric options as sub-configs shared by ``genbench eval`` and ``genbench eval-samples``.

Field names are unique across the sub-configs, so a suite file or the command line may give them
flat (``ode_rtol: 1e-4``, ``--ode-rtol 1e-4``) and :func:`split_flat` routes each to its
sub-config. Command-line flags are generated from these fields (``harness.cli.options``), so a
field and its flag cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

RESIZE_PROTOCOLS = ("tf-bilinear", "clean")
"""How images are resized to an extractor's input: torch-fidelity's TF1 bilinear, or clean-fid's PIL bicubic."""
ROUNDING = ("round", "floor")
"""Rules that map a model's continuous output to uint8 pixels."""


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class SampleMetricOptions:
    """Estimator settings of the metrics computed from two sample sets.

    Attributes:
        kid_subsets: KID subsets per estimate (Bińkowski et al. 2018 use 100).
        kid_subset_size: rows per KID subset; None: min(1000, n_samples, n_reference), recorded.
        is_splits: Inception Score splits (Salimans et al. 2016 use 10).
        pr_nearest_k: k of precision / recall (Kynkäänniemi et al. 2019 use 3).
        dc_nearest_k: k of density / coverage (Naeem et al. 2020 use 5).
        mmd_bandwidth: base bandwidth s0 of the MMD's Gaussian kernels (s0 times 1, 1/4, 1/16,
            1/64), in feature units; None: the median distance between reference rows.
        sw_projections: random directions of the sliced Wasserstein-2 distance.
    """

    kid_subsets: int = 100
    kid_subset_size: int | None = None
    is_splits: int = 10
    pr_nearest_k: int = 3
    dc_nearest_k: int = 5
    mmd_bandwidth: float | None = None
    sw_projections: int = 256

    def __post_init__(self) -> None:
        _positive(self, "kid_subsets", "kid_subset_size", "is_splits", "pr_nearest_k", "dc_nearest_k")
        if self.mmd_bandwidth is not None and not self.mmd_bandwidth > 0:
            raise ValueError(f"mmd_bandwidth must be > 0, got {self.mmd_bandwidth}")
        if self.sw_projections < 2:
            raise ValueError(f"sw_projections must be >= 2, got {self.sw_projections}")


@dataclass(frozen=True)
class ModelMetricOptions:
    """Settings of the metrics that need a model: likelihood bounds, the PF-ODE, straightness.

    Attributes:
        num_importance: k of the IWAE bound (Burda et al. 2016 report k = 5000).
        importance_chunk: importance samples per model call (memory, not protocol).
        ode_divergence: ``"exact"`` trace or ``"hutchinson"`` (Grathwohl et al. 2019) in the PF-ODE.
        ode_probe: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        ode_num_probes: Hutchinson probes per example.
        ode_solver: ``"dopri5"`` (adaptive) or fixed-step ``"euler"``, ``"heun"``, ``"rk4"``.
        ode_rtol, ode_atol: tolerances of the adaptive solver.
        ode_steps: steps of a fixed-step solver.
        straightness_steps: Euler steps of the trajectory whose straightness S(Z) is measured.
    """

    num_importance: int = 50
    importance_chunk: int = 100
    ode_divergence: Literal["exact", "hutchinson"] = "hutchinson"
    ode_probe: Literal["rademacher", "gaussian"] = "rademacher"
    ode_num_probes: int = 1
    ode_solver: Literal["dopri5", "euler", "heun", "rk4"] = "dopri5"
    ode_rtol: float = 1e-5
    ode_atol: float = 1e-5
    ode_steps: int = 100
    straightness_steps: int = 100

    def __post_init__(self) -> None:
        if self.num_importance < 2:
            raise ValueError(f"num_importance (the IWAE k) must be >= 2, got {self.num_importance}")
        _positive(self, "importance_chunk", "ode_num_probes", "ode_steps", "straightness_steps")
        for name, allowed in (("ode_divergence", ("exact", "hutchinson")), ("ode_probe", ("rademacher", "gaussian")),
                              ("ode_solver", ("dopri5", "euler", "heun", "rk4"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("ode_rtol", "ode_atol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class MetricOptions:
    """What ``Metric.compute`` receives: the sub-configs of one run."""

    sample: SampleMetricOptions = field(default_factory=SampleMetricOptions)
    model: ModelMetricOptions = field(default_factory=ModelMetricOptions)


SUBCONFIGS: dict[str, type] = {"sample_metrics": SampleMetricOptions, "model_metrics": ModelMetricOptions}
"""Sub-config name (as a field of the run configs) -> its dataclass."""


def split_flat(options: dict[str, Any], subconfigs: dict[str, type]) -> dict[str, Any]:
    """Route flat option names (``kid_subsets``) into their sub-config (``sample_metrics``).

    A sub-config may also be given whole, as a mapping under its own name; giving a field both ways
    is an error. Names that belong to no sub-config are returned unchanged for the caller to check.
    """
    out = dict(options)
    for sub_name, cls in subconfigs.items():
        given = out.pop(sub_name, None)
        nested = dict(given) if isinstance(given, dict) else ({} if given is None else None)
        if nested is None:  # already an instance
            nested = {f.name: getattr(given, f.name) for f in fields(cls)}
        for f in fields(cls):
            if f.name in out:
                if f.name in nested:
                    raise ValueError(f"option {f.name!r} is given twice (flat and under {sub_name!r})")
                nested[f.name] = out.pop(f.name)
        unknown = set(nested) - {f.name for f in fields(cls)}
        if unknown:
            known = ", ".join(f.name for f in fields(cls))
            raise ValueError(f"unknown option(s) {sorted(unknown)} under {sub_name!r}; known: {known}")
        out[sub_name] = cls(**nested)
    return out
