"""What each sample metric reports, and what it needs; the ``METRICS`` registry.

The runner plans from these descriptions: it extracts features once per extractor and hands the
same arrays to every metric, and it skips (with the reason) a metric whose need is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    """Static description of a metric.

    Attributes:
        name: registry name, as given to ``--metrics``.
        keys: the keys it writes into a record's ``metrics`` map.
        higher_is_better: per key, the direction of "better" (None: neither, e.g. a std).
        needs: inputs the runner must provide: ``"features"`` (both sets), ``"logits"`` (of the
            generated set), ``"model"`` (later issues).
        description: one line for ``genbench ls metrics``.
        reference: the paper that defines it.
    """

    name: str
    keys: tuple[str, ...]
    higher_is_better: dict[str, bool | None]
    needs: tuple[str, ...]
    description: str
    reference: str


METRICS: Registry[MetricInfo] = Registry("metric")

for _info in (
    MetricInfo(
        name="fid",
        keys=("fid",),
        higher_is_better={"fid": False},
        needs=("features",),
        description="Fréchet distance between Gaussian fits of the feature sets (FID with inception-v3)",
        reference="Heusel et al. 2017, eq. 6",
    ),
    MetricInfo(
        name="kid",
        keys=("kid_mean", "kid_std"),
        higher_is_better={"kid_mean": False, "kid_std": None},
        needs=("features",),
        description="unbiased MMD² with a cubic polynomial kernel over seeded subsets",
        reference="Bińkowski et al. 2018, eq. 4",
    ),
    MetricInfo(
        name="is",
        keys=("is_mean", "is_std"),
        higher_is_better={"is_mean": True, "is_std": None},
        needs=("logits",),
        description="Inception Score of the generated set over splits (needs an extractor with logits)",
        reference="Salimans et al. 2016",
    ),
    MetricInfo(
        name="prdc",
        keys=("precision", "recall", "density", "coverage"),
        higher_is_better={"precision": True, "recall": True, "density": True, "coverage": True},
        needs=("features",),
        description="k-NN precision/recall (k=3) and density/coverage (k=5)",
        reference="Kynkäänniemi et al. 2019; Naeem et al. 2020",
    ),
    MetricInfo(
        name="nfe",
        keys=("nfe_mean", "samples_per_s"),
        higher_is_better={"nfe_mean": False, "samples_per_s": True},
        needs=("model:Sampler",),
        description="network evaluations per sample (counted at the network) and sampling throughput",
        reference="Karras et al. 2022 (EDM) NFE conventions",
    ),
    MetricInfo(
        name="bpd",
        keys=("bpd",),
        higher_is_better={"bpd": False},
        needs=("model:LogLikelihood|ProbabilityFlow",),
        description="bits/dim: exact log-likelihood, or the probability-flow ODE with exact/Hutchinson divergence",
        reference="Dinh et al. 2017; Song et al. 2021, App. D.2",
    ),
    MetricInfo(
        name="elbo_bpd",
        keys=("elbo_bpd",),
        higher_is_better={"elbo_bpd": False},
        needs=("model:LowerBound",),
        description="bits/dim upper bound from the ELBO",
        reference="Kingma & Welling 2014",
    ),
    MetricInfo(
        name="iwae_bpd",
        keys=("iwae_bpd",),
        higher_is_better={"iwae_bpd": False},
        needs=("model:LowerBound",),
        description="bits/dim upper bound from the k-sample importance-weighted bound (k recorded)",
        reference="Burda et al. 2016, eq. 8",
    ),
    MetricInfo(
        name="active_units",
        keys=("active_units", "kl_active_dims"),
        higher_is_better={"active_units": None, "kl_active_dims": None},
        needs=("model:Encoder",),
        description="latent units with Var_x E[z|x] > 1e-2, and dims with mean KL > 0.1",
        reference="Burda et al. 2016, sec. 5.2",
    ),
    MetricInfo(
        name="straightness",
        keys=("straightness",),
        higher_is_better={"straightness": False},
        needs=("model:ProbabilityFlow+integrate",),
        description="straightness S(Z) of a flow's Euler trajectories from the prior (0: straight)",
        reference="Liu et al. 2023, eq. 4",
    ),
):
    METRICS.register(_info.name, _info, description=_info.description)

SAMPLE_METRICS: tuple[str, ...] = ("fid", "kid", "is", "prdc")
"""Metrics computed from sample sets alone (``genbench eval-samples``)."""
