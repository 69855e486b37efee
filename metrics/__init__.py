"""genbench metrics: feature extractors and metric math, one metric per file.

``METRICS`` lists every metric file; each file ends with a ``METRIC`` object
(``harness.core.metric.Metric``) that the pipeline reads. Adding a metric is one line here plus
its file and tests. Entries are lazy, so listing them imports no metric module.
"""

from __future__ import annotations

from harness.core.metric import Metric
from harness.core.registry import Registry

METRICS: Registry[Metric] = Registry("metric")

for _name, _module, _description in (
    ("fid", "metrics.fid", "Fréchet distance between Gaussian fits of the feature sets (FID with inception-v3)"),
    ("kid", "metrics.kid", "unbiased MMD² with a cubic polynomial kernel over seeded subsets"),
    ("is", "metrics.inception_score", "Inception Score of the generated set over splits (needs an extractor with logits)"),
    ("prdc", "metrics.prdc", "k-NN precision/recall (k=3) and density/coverage (k=5)"),
    ("energy", "metrics.energy", "energy distance between the feature sets (O(n²); runs when asked for)"),
    ("mmd", "metrics.mmd", "unbiased MMD² with multi-scale Gaussian kernels (O(n²); runs when asked for)"),
    ("sw2", "metrics.sliced_wasserstein", "sliced Wasserstein-2 distance over random projections (runs when asked for)"),
    ("fd_inf", "metrics.fd_infinity", "FD extrapolated to infinitely many samples from 15 sample counts (runs when asked for)"),
    ("prd", "metrics.prd", "PRD curve (Sajjadi et al. 2018) from k-means histograms, F8 and F1/8 (runs when asked for)"),
    ("cmmd", "metrics.cmmd", "CMMD: Gaussian-RBF MMD² (sigma 10) x 1000, biased estimator as the reference (runs when asked for)"),
    ("vendi", "metrics.vendi", "Vendi score: effective number of distinct generated samples, cosine kernel (runs when asked for)"),
    ("top_pr", "metrics.top_pr", "TopP&R: precision/recall over KDE supports above a bootstrap band, outlier-robust (runs when asked for)"),
    ("class_fd", "metrics.class_fd", "mean over classes of the FD between samples requested as class k and reference rows of class k (runs when asked for)"),
    ("class_accuracy", "metrics.class_accuracy", "fraction of class-conditional samples the extractor's classifier assigns to their requested label (runs when asked for)"),
    ("modes", "metrics.modes", "modes covered, high-quality fraction, reverse KL (reference with mixture components)"),
    ("ct_test", "metrics.data_copying", "C_T data-copying test against the training set (runs when --train is given)"),
    ("authenticity", "metrics.authenticity", "fraction of samples that are not near-copies of a training row (runs with --train)"),
    ("data_xent", "metrics.data_xent", "cross-entropy of the samples under the data's known density, bits/dim"),
    ("bpd", "metrics.nll", "bits/dim: exact log-likelihood, or the probability-flow ODE"),
    ("elbo_bpd", "metrics.elbo", "bits/dim upper bound from the ELBO"),
    ("iwae_bpd", "metrics.iwae", "bits/dim upper bound from the k-sample importance-weighted bound (k recorded)"),
    ("active_units", "metrics.active_units", "latent units with Var_x E[z|x] > 1e-2, and dims with mean KL > 0.1"),
    ("straightness", "metrics.straightness", "straightness S(Z) of a flow's Euler trajectories from the prior (0: straight)"),
    ("reconstruction", "metrics.reconstruction", "reconstruction MSE per value of an autoencoder, and its code perplexity (runs when asked for)"),
    ("score_error", "metrics.score_error", "Fisher divergence and relative error of a score model against the exact smoothed-mixture score (runs when asked for)"),
    ("density_speed", "metrics.density_speed", "examples scored by the exact log_prob per second and network calls per scored example (runs when asked for)"),
    ("nfe", "metrics.nfe", "network evaluations per sample (counted at the network) and sampling throughput"),
):
    METRICS.register(_name, f"{_module}:METRIC", description=_description)


def all_metrics() -> list[Metric]:
    """Every registered metric, in registration order (the order they run in and of table columns)."""
    return [METRICS.get(name) for name in METRICS.registered()]


def metric_keys() -> dict[str, tuple[Metric, object]]:
    """Record key -> (its metric, its ``MetricKey``), over every registered metric."""
    return {k.key: (m, k) for m in all_metrics() for k in m.keys}
