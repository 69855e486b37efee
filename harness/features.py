"""One feature pass over a data set: features, logits and streaming Gaussian statistics.

Reference sets are cached by content (see ``harness.cache``): the key holds the data's content
hash, the rows used and the extractor's full protocol (weights sha256, resize, channels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness import cache
from harness.core.distributed import all_true, gather_rows, my_share, world
from harness.core.heartbeat import phase
from harness.core.heartbeat import progress as progress_iter
from harness.datasets import Dataset
from metrics.features import FeatureExtractor
from metrics.fid import GaussianStats

log = logging.getLogger(__name__)

CACHE_KIND = "features-v1"

# Protocol fields that describe where the weights were found or which inputs were seen so far,
# not what the features are: left out of the cache key (the weights' sha256 stays in).
_NOT_IN_CACHE_KEY = frozenset({"weights_path", "weights_source", "channels", "resized_from"})


@dataclass(frozen=True)
class FeatureSet:
    """Everything the sample metrics need from one data set.

    Attributes:
        features: float32 [N, d] (kept for KID and the k-NN metrics).
        logits: float32 [N, K] class logits, or None when the extractor has none.
        stats: float64 streaming mean and covariance of ``features`` (for FID), or None when no
            requested metric uses it (its [d, d] sums are then never allocated).
        cached: whether this came from the cache.
    """

    features: np.ndarray
    logits: np.ndarray | None
    stats: GaussianStats | None
    cached: bool = False


def extract_features(
    data: Dataset,
    extractor: FeatureExtractor,
    *,
    batch_size: int,
    desc: str,
    progress: bool = True,
    gaussian: bool = True,
) -> FeatureSet:
    """Run ``extractor`` over ``data.x`` in batches; fail on non-finite features. ``gaussian``:
    also stream the mean and covariance (``FeatureSet.stats``).

    Under torchrun each rank runs its share of the batches (``harness.core.distributed``) and
    every rank gets all rows back in order; the statistics are then streamed over the gathered
    rows batch by batch, in the order one process uses, so they equal its bit for bit.
    """
    n = len(data)
    starts = range(0, n, batch_size)
    mine = my_share(starts)
    features = np.empty((n, extractor.feature_dim), dtype=np.float32)
    logits = np.empty((n, extractor.num_classes), dtype=np.float32) if extractor.num_classes else None
    sharded = world().size > 1
    stats = GaussianStats() if gaussian else None
    with torch.inference_mode():
        phase(f"{desc}: {n} rows through {extractor.name}" + (f" ({len(mine)} of {len(starts)} batches on this rank)"
                                                              if sharded else ""))
        for start in progress_iter(mine, total=len(mine), desc=desc, bar=progress):
            batch = torch.from_numpy(np.ascontiguousarray(data.x[start : start + batch_size]))
            out = extractor(batch)
            feats = out["features"].detach().to("cpu", torch.float32).numpy()
            if not np.isfinite(feats).all():
                raise ValueError(
                    f"feature extractor {extractor.name!r} produced NaN/Inf features for rows "
                    f"{start}..{start + len(batch) - 1} of {data.name!r}; check the input values "
                    "and the extractor weights"
                )
            features[start : start + len(batch)] = feats
            if stats is not None and not sharded:
                on = out["features"].device
                if stats.n == 0 and on.type == "cuda":
                    stats.device = on  # the float64 sums accumulate on the GPU, beside the features
                stats.update(out["features"].detach().to(torch.float32) if stats.device is not None else feats)
            if logits is not None:
                logits[start : start + len(batch)] = out["logits"].detach().to("cpu", torch.float32).numpy()
    if sharded:
        features = _gathered(features, mine, batch_size, n)
        logits = None if logits is None else _gathered(logits, mine, batch_size, n)
        if stats is not None:
            for start in starts:
                stats.update(features[start : start + batch_size])
    return FeatureSet(features=features, logits=logits, stats=stats)


def _gathered(local: np.ndarray, mine: list[int], batch_size: int, n: int) -> np.ndarray:
    """All ranks' rows of ``local`` (this rank filled the batches starting at ``mine``), in order."""
    full = gather_rows({s: local[s : s + batch_size] for s in mine}, n)
    return local[:0] if full is None else full


def reference_cache_description(data: Dataset, extractor: FeatureExtractor, selection: dict[str, Any]) -> dict[str, Any]:
    """What cached reference features depend on (hashed into the cache key)."""
    return {
        "kind": CACHE_KIND,
        "data_content_hash": data.content_hash,
        "selection": selection,
        "extractor": {k: v for k, v in extractor.protocol().items() if k not in _NOT_IN_CACHE_KEY},
    }


def extract_reference_features(
    data: Dataset,
    extractor: FeatureExtractor,
    *,
    selection: dict[str, Any],
    batch_size: int,
    use_cache: bool = True,
    progress: bool = True,
    gaussian: bool = True,
) -> FeatureSet:
    """Like ``extract_features`` but served from, and written to, the content-addressed cache."""
    description = reference_cache_description(data, extractor, selection)
    if not gaussian:
        description["gaussian"] = False  # an entry without the [d, d] sums is another entry
    key = cache.cache_key(description)
    if use_cache:
        stats_keys = ("stats_n", "stats_shift", "stats_sum", "stats_sum_outer") if gaussian else ()
        hit = cache.load(CACHE_KIND, key, required=("features", "logits", *stats_keys))
        usable = hit is not None and hit["features"].shape == (len(data), extractor.feature_dim)
        # under torchrun the pass is sharded, so either every rank uses its cache entry or none does
        if all_true(usable):
            log.info("reference features for %s served from cache %s", data.name, key[:12])
            logits = hit.get("logits")
            return FeatureSet(
                features=hit["features"],
                logits=logits if logits is not None and logits.size else None,
                stats=GaussianStats.from_dict({k[6:]: v for k, v in hit.items() if k.startswith("stats_")}) if gaussian else None,
                cached=True,
            )
    result = extract_features(data, extractor, batch_size=batch_size, desc=f"features {data.name}", progress=progress,
                              gaussian=gaussian)
    if use_cache and world().is_main:
        arrays = {"features": result.features, "logits": result.logits if result.logits is not None else np.empty(0)}
        if result.stats is not None:
            arrays.update({f"stats_{k}": np.asarray(v) for k, v in result.stats.to_dict().items()})
        cache.store(CACHE_KIND, key, arrays, description)
    return result
