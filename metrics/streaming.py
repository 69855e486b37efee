"""Stateful metrics for training loops: ``update(batch)``, ``compute()``, ``reset()``, ``merge(other)``, ``sync()``.

The torchmetrics pattern over genbench's own estimators: each class keeps the state its metric
needs, and ``compute()`` hands that state to the metric's registry object (``metrics.<name>.METRIC``,
the very ``compute`` that ``genbench eval`` / ``eval-samples`` run, with the same
``MetricInputs`` / ``MetricOptions`` fields), so the numbers are the pipeline's for the same rows.
``compute()`` returns ``{record key: float}`` under the record's key names (``fid``, ``is_mean``,
``kid_mean``, ``precision``, ``bpd``, ``nfe_mean``, ...).

State and memory per metric (d: feature width, K: classes, N: rows held per set):

===============  ===============================================================  =======================================
class            state                                                            memory
===============  ===============================================================  =======================================
FrechetDistance  per set a float64 ``GaussianStats``: n, shift [d], sum [d],      (d² + 2d + 1)·8 B per set for any N
                 sum_outer [d, d] (a sufficient statistic)                        (33.6 MB per set at d = 2048)
InceptionScore   the logits [N, K] float32, in order                              N·K·4 B (202 MB for 50,000 × 1008)
KID              the feature rows [N, d] float32 per set, in order, N ≤ max_rows  N·d·4 B per set (410 MB, 50,000 × 2048)
PRDC             the feature rows [N, d] float32 per set, N ≤ max_rows            N·d·4 B per set, as KID
BitsPerDim       float64 ``GaussianStats`` of the per-example bits/dim (d = 1)    32 B for any N
NFE              four ints: forward calls, examples evaluated, VJPs, samples      4 ints
===============  ===============================================================  =======================================

Why the row metrics keep rows. The Inception Score permutes the N rows with
``RandomState(seed).permutation(N)`` and cuts the result into contiguous splits (torch-fidelity's
convention, :func:`metrics.inception_score.inception_score`); each split's marginal p(y) is the
mean over *its* rows, and which rows share a split depends on the final N. A split's sufficient
statistic (Σ p(y|x) [K], Σ p log p, count) exists only once membership is known, so nothing short
of the logits reproduces the pipeline's number while N is still growing. KID draws its subsets by
row index from the final N1, N2 (``kernel_inception_distance``) and the k-NN radii of PRDC depend
on every row, so both keep the rows too, up to ``max_rows`` per set: an update beyond it raises
(never a silent reservoir: subsampling would change the number).

Row order. IS and KID depend on the order of the rows (through the seeded draws; PRDC is exactly
permutation-invariant). Rows are kept in update order, ``a.merge(b)`` puts b's after a's and
``sync()`` concatenates the ranks in rank order. Give ``update(..., start=i)`` (the global index of
the batch's first row) for every batch to have the rows put in index order instead: shards of
``harness.core.distributed.my_share`` (rank r takes batches r, r + W, ...) then reproduce one
process's order, and numbers, exactly.

Dtypes. Row metrics store float32 rows (the pipeline's ``FeatureSet.features`` are float32);
``FrechetDistance`` accumulates its input in float64 (``GaussianStats``), which for float32 input
is what the pipeline streams.

Semantics shared by every class:

* ``update(...)`` adds a batch and returns ``self``; one-line ``ValueError`` for a non-2-D batch,
  NaN/Inf, or a width other than the first update's.
* ``compute()`` -> ``dict[str, float]``; ``ValueError`` before enough rows. It does not change the state.
* ``reset()`` forgets the generated set, and the reference set unless ``reset_real=False`` or it
  was given by ``set_reference`` (a fixed reference is kept); returns ``self``.
* ``a.merge(b)`` merges **in place** and returns ``a``: a then holds the state of one object
  updated with a's batches, then b's (b unchanged). The settings must match.
* ``sync()`` is a collective over ``torch.distributed`` (every rank calls it, at the same point):
  afterwards every rank holds the union of all ranks' states (row metrics: memory times the world
  size), gathered with ``harness.core.distributed.gather_objects``. Outside a process group it does
  nothing. A synced set is global: ``update`` on it raises until ``reset()`` (so a second sync
  cannot count a rank twice); a second ``sync()`` without new updates is a no-op, and a set that is
  already global (a reference kept with ``reset_real=False``) is not gathered again.
* ``memory_bytes()``: bytes of the state arrays now held.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from harness.core.distributed import gather_objects, world
from harness.core.metric import Metric, MetricInputs
from harness.core.nfe import NFECount, counting
from harness.core.options import MetricOptions, SampleMetricOptions
from metrics import fid, inception_score, kid, prdc
from metrics.bpd import nats_to_bpd
from metrics.fid import GaussianStats, feature_space_label

__all__ = ["KID", "NFE", "PRDC", "BitsPerDim", "FrechetDistance", "InceptionScore", "StreamingMetric"]

M = TypeVar("M", bound="StreamingMetric")

DEFAULT_MAX_ROWS = 50_000
"""Rows per set the row metrics keep by default: the 50k of FID50k / KID50k protocols."""


# ---------------------------------------------------------------- input checks


def _matrix(x: Any, who: str, what: str, width: int | None) -> np.ndarray:
    """``x`` [B, d] (numpy or torch, any device) as a finite float32/float64 numpy array (may share memory)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{who}: {what} must be real numbers, got dtype {t.dtype}")
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        array = t.cpu().numpy()
    else:
        array = np.asarray(x)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{who}: {what} must be real numbers, got dtype {array.dtype}")
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float32)
    if array.ndim != 2:
        raise ValueError(f"{who}: {what} must be 2-D [batch, dim], got shape {tuple(array.shape)}")
    if width is not None and array.shape[1] != width:
        raise ValueError(f"{who}: {what} have dim {array.shape[1]}, expected {width} (the dim of the first update)")
    if not np.isfinite(array).all():
        raise ValueError(f"{who}: {what} contain NaN or Inf")
    return array


def _extract(extractor: Any, images: Any, key: str) -> torch.Tensor:
    """``extractor(images)[key]`` as float32 on the CPU, as ``harness.features.extract_features`` takes it."""
    batch = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    with torch.inference_mode():
        out = extractor(batch)
    return out[key].detach().to("cpu", torch.float32)


def _extractor_name(extractor: Any) -> str | None:
    return None if extractor is None else str(getattr(extractor, "name", type(extractor).__name__))


def _values(metric: Metric, inputs: MetricInputs, options: MetricOptions) -> dict[str, float]:
    """The registry metric's ``compute`` on ``inputs``, as {record key: float} (NaN for a value-less entry)."""
    entries = metric.compute(inputs, options)
    return {key: math.nan if entry.value is None else float(entry.value) for key, entry in entries.items()}


# ---------------------------------------------------------------- the parts of a state


class _Gaussian:
    """One set's float64 mean/covariance: streamed (``GaussianStats``) or fixed (mu, sigma) from a file."""

    def __init__(self) -> None:
        self.stats = GaussianStats()
        self.fixed: tuple[np.ndarray, np.ndarray] | None = None
        self.fixed_rows = 0  # rows behind ``fixed`` when known (for the record only)

    @property
    def empty(self) -> bool:
        return self.stats.n == 0 and self.fixed is None

    @property
    def n(self) -> int:
        return self.fixed_rows if self.fixed is not None else self.stats.n

    @property
    def dim(self) -> int | None:
        return int(self.fixed[0].shape[0]) if self.fixed is not None else self.stats.dim

    def merge(self, other: _Gaussian) -> None:
        self.stats = self.stats.merge(other.stats)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        return self.fixed if self.fixed is not None else (self.stats.mean, self.stats.cov)

    def nbytes(self) -> int:
        if self.fixed is not None:
            return int(self.fixed[0].nbytes + self.fixed[1].nbytes)
        s = self.stats  # the count n as 8 bytes, and the arrays
        return 0 if s.shift is None else int(8 + s.shift.nbytes + s.sum.nbytes + s.sum_outer.nbytes)


class _Rows:
    """One set's rows [N, d] float32, in chunks tagged with their global start index (or None)."""

    def __init__(self, who: str, max_rows: int) -> None:
        self.who, self.max_rows = who, max_rows
        self.chunks: list[tuple[int | None, np.ndarray]] = []
        self.n = 0

    @property
    def empty(self) -> bool:
        return self.n == 0

    @property
    def dim(self) -> int | None:
        return int(self.chunks[0][1].shape[1]) if self.chunks else None

    def _room(self, more: int, dim: int) -> None:
        if self.n + more > self.max_rows:
            mb = self.max_rows * dim * 4 / 1e6
            raise ValueError(f"{self.who} keeps at most max_rows={self.max_rows} rows per set ({mb:.0f} MB at d={dim}); "
                             f"this would make {self.n + more}: raise max_rows or score fewer rows")

    def add(self, rows: np.ndarray, start: int | None) -> None:
        if start is not None and (isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0):
            raise ValueError(f"{self.who}: start must be a non-negative int (the global index of the batch's first row), "
                             f"got {start!r}")
        if len(rows) == 0:
            return
        self._room(len(rows), rows.shape[1])
        with np.errstate(over="ignore"):
            kept = np.array(rows, dtype=np.float32, copy=True)
        if rows.dtype != np.float32 and not np.isfinite(kept).all():
            raise ValueError(f"{self.who}: rows overflow float32 (|x| > 3.4e38), in which they are kept")
        self.chunks.append((None if start is None else int(start), kept))
        self.n += len(rows)

    def merge(self, other: _Rows) -> None:
        if other.empty:
            return
        if self.dim is not None and other.dim != self.dim:
            raise ValueError(f"{self.who}: cannot merge rows of dim {other.dim} into dim {self.dim}")
        self._room(other.n, other.dim)
        self.chunks.extend(other.chunks)  # chunks are never written to, so sharing them is safe
        self.n += other.n

    def array(self) -> np.ndarray:
        """All rows [N, d] float32: in update order, or in ``start`` order when every batch gave one."""
        given = [start is not None for start, _ in self.chunks]
        if any(given) and not all(given):
            raise ValueError(f"{self.who}: {sum(given)} of {len(given)} batches gave start=; give it for every batch or none")
        chunks = self.chunks
        if all(given):
            chunks = sorted(chunks, key=lambda c: c[0])
            for (a, rows_a), (b, _) in zip(chunks, chunks[1:]):
                if b < a + len(rows_a):
                    raise ValueError(f"{self.who}: the batches at start={a} ({len(rows_a)} rows) and start={b} overlap")
        return np.concatenate([rows for _, rows in chunks]) if chunks else np.empty((0, 0), np.float32)

    def nbytes(self) -> int:
        return sum(rows.nbytes for _, rows in self.chunks)


class _Counts:
    """NFE tallies (Python ints, exact)."""

    def __init__(self) -> None:
        self.forward_calls = self.examples = self.vjp_calls = self.samples = 0

    @property
    def empty(self) -> bool:
        return self.samples == 0

    @property
    def n(self) -> int:
        return self.samples

    def merge(self, other: _Counts) -> None:
        self.forward_calls += other.forward_calls
        self.examples += other.examples
        self.vjp_calls += other.vjp_calls
        self.samples += other.samples

    def nbytes(self) -> int:
        return 4 * 8


# ---------------------------------------------------------------- the shared protocol


class StreamingMetric:
    """Base class: the parts of the state by name, and reset / merge / sync / memory over them.

    Subclasses set ``_parts`` (e.g. ``("real", "fake")``), ``_new_part(name)`` and ``_config()``
    (the settings two states must share to be merged).
    """

    _parts: tuple[str, ...] = ()
    _reference_part: str | None = None  # the part reset_real / set_reference govern

    def __init__(self, *, reset_real: bool = True) -> None:
        self.reset_real = bool(reset_real)
        self._state: dict[str, Any] = {p: self._new_part(p) for p in self._parts}
        self._global: dict[str, bool] = {p: False for p in self._parts}  # synced, or a fixed reference
        self._fixed: set[str] = set()  # parts given by set_reference: kept by reset()

    # subclass hooks
    def _new_part(self, name: str) -> Any:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def _who(self) -> str:
        return type(self).__name__

    def _writable(self, part: str, who: str) -> Any:
        if part in self._fixed:
            raise ValueError(f"{who}: the {part} set was given by set_reference(); build a new metric to change it")
        if self._global[part]:
            raise ValueError(f"{who}: the {part} set already holds every rank's rows (after sync()); call reset() first")
        return self._state[part]

    def _dim(self) -> int | None:
        dims = [self._state[p].dim for p in self._parts if getattr(self._state[p], "dim", None) is not None]
        return dims[0] if dims else None

    def reset(self: M) -> M:
        """Forget the generated set (and the reference set, see the class); returns self."""
        for p in self._parts:
            if p in self._fixed or (p == self._reference_part and not self.reset_real):
                continue
            self._state[p] = self._new_part(p)
            self._global[p] = False
        return self

    def merge(self: M, other: M) -> M:
        """Merge ``other``'s state into this one, in place; returns self (``other`` is unchanged).

        Afterwards self equals one object updated with self's batches, then other's. A set that
        both sides hold globally (a fixed or synced reference) is kept as self's.
        """
        if type(other) is not type(self):
            raise TypeError(f"{self._who}.merge: cannot merge a {type(other).__name__}")
        if other._config() != self._config():
            raise ValueError(f"{self._who}.merge: settings differ: {other._config()} vs {self._config()}")
        staged = {}  # all parts merge, or none (a max_rows error leaves self as it was)
        for p in self._parts:
            mine, theirs = self._state[p], other._state[p]
            if theirs.empty or (self._global[p] and other._global[p]):
                continue
            if self._global[p] or other._global[p]:
                raise ValueError(f"{self._who}.merge: the {p} set of one side is global (after sync() or set_reference()); "
                                 "merge before sync()")
            merged = self._new_part(p)
            merged.merge(mine)
            merged.merge(theirs)
            staged[p] = merged
        self._state.update(staged)
        return self

    def sync(self: M) -> M:
        """Make every rank hold the union of all ranks' states (collective; a no-op outside a process group)."""
        if world().size == 1:
            return self
        pending = [p for p in self._parts if not self._global[p]]
        # a collective even when nothing is pending, so ranks that disagree fail here instead of hanging
        gathered = gather_objects((self._who, self._config(), {p: self._state[p] for p in pending}))
        for rank, (kind, config, parts) in enumerate(gathered):
            if kind != self._who or config != self._config() or sorted(parts) != sorted(pending):
                raise ValueError(f"{self._who}.sync: rank {rank} has a {kind} with {config} and sets {sorted(parts)} to "
                                 f"gather, rank {world().rank} a {self._who} with {self._config()} and {sorted(pending)}: "
                                 "every rank must build the same metric and sync at the same point")
        unions = {}
        for p in pending:
            unions[p] = self._new_part(p)
            for _, _, parts in gathered:
                unions[p].merge(parts[p])
        self._state.update(unions)
        self._global.update({p: True for p in pending})
        return self

    def memory_bytes(self) -> int:
        """Bytes held by the state's arrays now (see the table of the module docstring for the bound)."""
        return sum(self._state[p].nbytes() for p in self._parts)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{p}={getattr(self._state[p], 'n', '?')}" for p in self._parts)
        return f"{self._who}({sizes}, {self.memory_bytes()} bytes)"


class _TwoSets(StreamingMetric):
    """Shared update / set_reference of the metrics that compare a real and a generated feature set."""

    _parts = ("real", "fake")
    _reference_part = "real"

    def __init__(self, extractor: Any = None, *, reset_real: bool = True) -> None:
        self.extractor = extractor
        super().__init__(reset_real=reset_real)

    def _features(self, x: Any, part: str, who: str) -> np.ndarray:
        features = _extract(self.extractor, x, "features") if self.extractor is not None else x
        return _matrix(features, who, f"{part} features", self._dim())


class _RowSets(_TwoSets):
    def __init__(self, extractor: Any = None, *, max_rows: int = DEFAULT_MAX_ROWS, reset_real: bool = True) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"{type(self).__name__}: max_rows must be a positive int, got {max_rows!r}")
        self.max_rows = max_rows
        super().__init__(extractor, reset_real=reset_real)

    def _new_part(self, name: str) -> _Rows:
        return _Rows(self._who, self.max_rows)

    def update(self: M, x: Any, real: bool, *, start: int | None = None) -> M:
        """Add a batch to the reference (``real=True``) or generated set.

        Args:
            x: features [B, d] (numpy or torch, any device and float dtype; kept as float32), or
                the extractor's input (uint8 images [B, C, H, W]) when the metric has an extractor.
            real: which set.
            start: global index of the batch's first row within its set (see the module's "Row
                order"); give it for every batch of a set or for none.
        """
        part = "real" if real else "fake"
        who = f"{self._who}.update"
        rows = self._writable(part, who)
        rows.add(self._features(x, part, who), start)
        return self

    def set_reference(self: M, features: Any) -> M:
        """The whole reference set [N, d] at once, the same on every rank: never gathered by
        ``sync()``, kept by ``reset()``."""
        who = f"{self._who}.set_reference"
        rows = self._new_part("real")
        rows.add(self._features(features, "real", who), None)
        self._state["real"], self._global["real"] = rows, True
        self._fixed.add("real")
        return self

    def _arrays(self, minimum_real: int, minimum_fake: int) -> tuple[np.ndarray, np.ndarray]:
        who = f"{self._who}.compute"
        for part, minimum in (("fake", minimum_fake), ("real", minimum_real)):
            n = self._state[part].n
            if n < minimum:
                raise ValueError(f"{who}: the {part} set has {n} rows; it needs at least {minimum} "
                                 f"(update(x, real={part == 'real'}) first)")
        return self._state["real"].array(), self._state["fake"].array()


# ---------------------------------------------------------------- the metrics


class FrechetDistance(_TwoSets):
    """Fréchet distance between Gaussian fits of two feature sets (FID with inception-v3; Heusel et
    al. 2017, eq. 6), from streamed float64 means and covariances (ddof=1).

    ``compute()`` -> ``{"fid": d²}`` in squared feature units: ``metrics.fid.METRIC`` on
    (mean, cov) of each set, as the pipeline computes it from its streamed ``GaussianStats``. Any
    extractor gives "the other Fréchet distances" (``label``: ``FID`` for inception-v3, else
    ``FD[<extractor>]``).

    Args:
        extractor: a ``metrics.features.FeatureExtractor``; then ``update`` takes its input
            (uint8 images [B, C, H, W]) and uses ``"features"``. None: ``update`` takes features.
        reset_real: whether ``reset()`` also forgets the reference set (False: stream the
            reference once, then reset only the generated set each evaluation).

    Memory: (d² + 2d + 1)·8 bytes per set whatever N (``GaussianStats``), plus the transient d×d
    factorisations of ``compute()``.
    """

    def _new_part(self, name: str) -> _Gaussian:
        return _Gaussian()

    def _config(self) -> dict[str, Any]:
        return {"extractor": _extractor_name(self.extractor)}

    @property
    def label(self) -> str:
        """``FID`` for inception-v3 features, ``FD[<extractor>]`` otherwise (``FD[None]`` for given features)."""
        return feature_space_label(_extractor_name(self.extractor))

    def update(self, x: Any, real: bool) -> FrechetDistance:
        """Add a batch ``x`` (features [B, d], numpy or torch, any device; or the extractor's input)
        to the reference (``real=True``) or generated set; returns self."""
        part = "real" if real else "fake"
        who = f"{self._who}.update"
        stats = self._writable(part, who)
        stats.stats.update(self._features(x, part, who))
        return self

    def set_reference(self, reference: Any, *, rows: int | None = None) -> FrechetDistance:
        """A fixed reference, the same on every rank (never gathered, kept by ``reset()``).

        Args:
            reference: a ``GaussianStats``; a (mu [d], sigma [d, d]) pair, or an object with ``mu``
                and ``sigma`` (``harness.reference_stats`` files, pytorch-fid / clean-fid npz);
                or the reference features [N, d].
            rows: the rows behind (mu, sigma) (default: the object's ``rows``), for ``n_reference`` only.
        """
        who = f"{self._who}.set_reference"
        part = _Gaussian()
        if isinstance(reference, GaussianStats):
            part.stats = reference.merge(GaussianStats())  # a copy
        elif isinstance(reference, tuple) or hasattr(reference, "sigma"):
            mu, sigma = reference if isinstance(reference, tuple) else (reference.mu, reference.sigma)
            mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
            d = self._dim()
            if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
                raise ValueError(f"{who}: need mu [d] and sigma [d, d], got shapes {mu.shape} and {sigma.shape}")
            if d is not None and mu.shape[0] != d:
                raise ValueError(f"{who}: the reference has dim {mu.shape[0]}, expected {d}")
            if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
                raise ValueError(f"{who}: mu or sigma contain NaN or Inf")
            part.fixed = (mu.copy(), sigma.copy())
            rows = getattr(reference, "rows", None) if rows is None else rows
            part.fixed_rows = int(rows) if rows is not None else 0
        else:
            part.stats.update(self._features(reference, "real", who))
        if part.dim is not None and self._state["fake"].dim not in (None, part.dim):
            raise ValueError(f"{who}: the reference has dim {part.dim}, the generated set {self._state['fake'].dim}")
        self._state["real"], self._global["real"] = part, True
        self._fixed.add("real")
        return self

    def compute(self) -> dict[str, float]:
        """``{"fid": d²}``: ||μ_f − μ_r||² + tr Σ_f + tr Σ_r − 2 tr((Σ_f^{1/2} Σ_r Σ_f^{1/2})^{1/2})."""
        who = f"{self._who}.compute"
        stats = {}
        for part in ("fake", "real"):
            g = self._state[part]
            if g.fixed is None and g.n < 2:
                raise ValueError(f"{who}: the {part} set has {g.n} rows; the covariance needs at least 2 "
                                 f"(update(x, real={part == 'real'}) first)")
            stats[part] = g.mean_cov()
        if stats["fake"][0].shape != stats["real"][0].shape:
            raise ValueError(f"{who}: the sets differ in dim: {stats['fake'][0].shape[0]} vs {stats['real'][0].shape[0]}")
        inputs = MetricInputs(seed=0, fake_stats=stats["fake"], real_stats=stats["real"], real_n=self._state["real"].n,
                              feature_extractor=_extractor_name(self.extractor), feature_dim=self._dim())
        return _values(fid.METRIC, inputs, MetricOptions())


class InceptionScore(StreamingMetric):
    """Inception Score (Salimans et al. 2016, sec. 4): exp(E_x KL(p(y|x) || p(y))) over ``splits``
    splits of the seeded permutation of the rows, mean and std (ddof=0) over splits.

    ``compute()`` -> ``{"is_mean", "is_std"}`` (dimensionless, in [1, K]): ``metrics.inception_score.METRIC``
    on the kept logits with the run's ``seed`` and ``is_splits`` (the pipeline passes its run seed,
    0 by default).

    Args:
        extractor: an extractor with logits (``num_classes`` set); then ``update`` takes its input.
            None: ``update`` takes logits [B, K].
        splits: number of splits (``--is-splits``, 10).
        seed: the run seed (``--seed``) that seeds the shuffle.
        max_rows: most rows kept.

    Memory: the logits, N·K·4 bytes (float32), plus transient float64 copies (2·N·K·8 bytes) in
    ``compute()``; a sufficient statistic is not possible, see the module docstring.
    """

    _parts = ("fake",)

    def __init__(self, extractor: Any = None, *, splits: int = 10, seed: int = 0, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if extractor is not None and not getattr(extractor, "num_classes", None):
            raise ValueError(f"InceptionScore needs an extractor with logits; {_extractor_name(extractor)!r} has none")
        SampleMetricOptions(is_splits=splits)  # validates
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"InceptionScore: max_rows must be a positive int, got {max_rows!r}")
        self.extractor, self.splits, self.seed, self.max_rows = extractor, int(splits), int(seed), max_rows
        super().__init__()

    def _new_part(self, name: str) -> _Rows:
        return _Rows(self._who, self.max_rows)

    def _config(self) -> dict[str, Any]:
        return {"extractor": _extractor_name(self.extractor), "splits": self.splits, "seed": self.seed,
                "max_rows": self.max_rows}

    def update(self, x: Any, *, start: int | None = None) -> InceptionScore:
        """Add logits [B, K] (or the extractor's input); ``start``: the batch's global first index."""
        who = f"{self._who}.update"
        logits = _extract(self.extractor, x, "logits") if self.extractor is not None else x
        rows = self._writable("fake", who)
        rows.add(_matrix(logits, who, "logits", rows.dim), start)
        return self

    def compute(self) -> dict[str, float]:
        n = self._state["fake"].n
        if n < self.splits:
            raise ValueError(f"{self._who}.compute: {n} rows; the Inception Score over splits={self.splits} needs at "
                             f"least {self.splits}")
        logits = self._state["fake"].array()
        inputs = MetricInputs(seed=self.seed, fake_logits=logits, feature_extractor=_extractor_name(self.extractor))
        return _values(inception_score.METRIC, inputs, MetricOptions(sample=SampleMetricOptions(is_splits=self.splits)))


class KID(_RowSets):
    """Kernel Inception Distance (Bińkowski et al. 2018, eq. 4): unbiased MMD² with the kernel
    (x·y/d + 1)³, mean and std over ``subsets`` seeded subsets of ``subset_size`` rows per set.

    ``compute()`` -> ``{"kid_mean", "kid_std"}`` in squared feature units: ``metrics.kid.METRIC``
    on the kept rows (generated set first, as the pipeline), so the subset size defaults to
    min(1000, N_fake, N_real) as there.

    Args:
        extractor: as :class:`FrechetDistance`.
        subsets: ``--kid-subsets`` (100).
        subset_size: ``--kid-subset-size``; None: min(1000, N_fake, N_real).
        seed: the run seed (``--seed``) of the subset draws.
        max_rows: most rows kept per set (an update beyond it raises).
        reset_real: whether ``reset()`` forgets the reference set too.

    Memory: N·d·4 bytes per set (float32 rows), plus two subsets of subset_size·d float64 and
    three subset_size² kernels in ``compute()``.
    """

    def __init__(self, extractor: Any = None, *, subsets: int = 100, subset_size: int | None = None, seed: int = 0,
                 max_rows: int = DEFAULT_MAX_ROWS, reset_real: bool = True) -> None:
        SampleMetricOptions(kid_subsets=subsets, kid_subset_size=subset_size)  # validates
        self.subsets, self.subset_size, self.seed = int(subsets), subset_size, int(seed)
        super().__init__(extractor, max_rows=max_rows, reset_real=reset_real)

    def _config(self) -> dict[str, Any]:
        return {"extractor": _extractor_name(self.extractor), "subsets": self.subsets, "subset_size": self.subset_size,
                "seed": self.seed, "max_rows": self.max_rows}

    def compute(self) -> dict[str, float]:
        need = self.subset_size or 2
        real, fake = self._arrays(need, need)
        inputs = MetricInputs(seed=self.seed, fake_features=fake, real_features=real,
                              feature_extractor=_extractor_name(self.extractor), feature_dim=fake.shape[1])
        options = SampleMetricOptions(kid_subsets=self.subsets, kid_subset_size=self.subset_size)
        return _values(kid.METRIC, inputs, MetricOptions(sample=options))


class PRDC(_RowSets):
    """k-NN precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020,
    eqs. 1–2), exactly as ``metrics.prdc`` (strict ``<``, radii to the k-th neighbour within a set).

    ``compute()`` -> ``{"precision", "recall", "density", "coverage"}``: ``metrics.prdc.METRIC`` on
    the kept rows with ``pr_k`` (``--pr-nearest-k``, 3) and ``dc_k`` (``--dc-nearest-k``, 5). The
    values are exactly invariant to the order of the rows.

    Memory: N·d·4 bytes per set (float32 rows), plus under 100 MB of tiles and neighbour lists in
    ``compute()`` (``metrics.knn``).
    """

    def __init__(self, extractor: Any = None, *, pr_k: int = 3, dc_k: int = 5, max_rows: int = DEFAULT_MAX_ROWS,
                 reset_real: bool = True) -> None:
        SampleMetricOptions(pr_nearest_k=pr_k, dc_nearest_k=dc_k)  # validates
        self.pr_k, self.dc_k = int(pr_k), int(dc_k)
        super().__init__(extractor, max_rows=max_rows, reset_real=reset_real)

    def _config(self) -> dict[str, Any]:
        return {"extractor": _extractor_name(self.extractor), "pr_k": self.pr_k, "dc_k": self.dc_k,
                "max_rows": self.max_rows}

    def compute(self) -> dict[str, float]:
        real, fake = self._arrays(max(self.pr_k, self.dc_k) + 1, self.pr_k + 1)
        inputs = MetricInputs(seed=0, fake_features=fake, real_features=real,
                              feature_extractor=_extractor_name(self.extractor), feature_dim=fake.shape[1])
        options = SampleMetricOptions(pr_nearest_k=self.pr_k, dc_nearest_k=self.dc_k)
        return _values(prdc.METRIC, inputs, MetricOptions(sample=options))


class BitsPerDim(StreamingMetric):
    """Negative log-likelihood in bits per dimension, mean and standard error over examples.

    Per example, bpd_i = −log p(x_i) / (D ln 2) + offset_bits (``metrics.bpd.nats_to_bpd``; for
    8-bit images under uniform dequantization offset_bits = ``dequantization_offset_bits(value_range)``,
    Theis et al. 2016, sec. 3.1: 8 for [0, 1], 7 for [-1, 1]). ``compute()`` -> ``{"bpd": mean_i
    bpd_i, "bpd_stderr": std_i(bpd_i, ddof=1) / sqrt(N)}``, the pipeline's ``value`` and ``stderr``
    (``harness.core.stats.mean_and_stderr``); NaN stderr for N = 1. The record's ``block_means``
    (20 contiguous blocks of the final N) are not kept.

    Args:
        num_dims: D, the dimensions of one example (``DataSpec.num_dims``, e.g. 3·32·32).
        offset_bits: the dequantization constant, 0 for continuous or discrete data.

    Memory: a float64 ``GaussianStats`` of the bpd values (count, shift, sum, centred sum of
    squares: 4 × 8 = 32 bytes), whatever N.
    """

    _parts = ("values",)

    def __init__(self, num_dims: int, *, offset_bits: float = 0.0) -> None:
        if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
            raise ValueError(f"BitsPerDim: num_dims must be a positive int (dimensions per example), got {num_dims!r}")
        if not math.isfinite(offset_bits):
            raise ValueError(f"BitsPerDim: offset_bits must be finite, got {offset_bits}")
        self.num_dims, self.offset_bits = int(num_dims), float(offset_bits)
        super().__init__()

    def _new_part(self, name: str) -> _Gaussian:
        return _Gaussian()

    def _config(self) -> dict[str, Any]:
        return {"num_dims": self.num_dims, "offset_bits": self.offset_bits}

    def update(self, log_prob: Any) -> BitsPerDim:
        """Add log p(x) [B] in nats (summed over each example's D dimensions; torch or numpy)."""
        who = f"{self._who}.update"
        values = log_prob.detach() if isinstance(log_prob, torch.Tensor) else torch.as_tensor(np.asarray(log_prob))
        if values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"{who}: log_prob must be real numbers, got dtype {values.dtype}")
        if values.ndim != 1:
            raise ValueError(f"{who}: log_prob must be 1-D [batch] nats per example, got shape {tuple(values.shape)}")
        values = values.to("cpu", torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{who}: log_prob contains {int((~torch.isfinite(values)).sum())} NaN or Inf values")
        bpd = nats_to_bpd(values, self.num_dims, offset_bits=self.offset_bits)
        self._writable("values", who).stats.update(bpd.numpy()[:, None])
        return self

    def compute(self) -> dict[str, float]:
        stats = self._state["values"].stats
        if stats.n == 0:
            raise ValueError(f"{self._who}.compute: no examples yet (update(log_prob) first)")
        stderr = math.sqrt(float(stats.cov[0, 0])) / math.sqrt(stats.n) if stats.n > 1 else math.nan
        return {"bpd": float(stats.mean[0]), "bpd_stderr": stderr}

    @property
    def n(self) -> int:
        """Examples seen."""
        return self._state["values"].stats.n


class NFE(StreamingMetric):
    """Network evaluations per sample, counted at the network (``harness.core.nfe``; the EDM
    convention, Karras et al. 2022, sec. 3).

    ``compute()`` -> ``{"nfe_mean": examples evaluated by the network / samples drawn}``, the
    pipeline's ``nfe_per_sample`` (``harness.runner.draw_samples``): equal to the forward calls
    per batch when every call evaluates the whole batch. ``counts`` gives the raw tallies.

    Memory: four Python ints.
    """

    _parts = ("counts",)

    def __init__(self) -> None:
        super().__init__()

    def _new_part(self, name: str) -> _Counts:
        return _Counts()

    def _config(self) -> dict[str, Any]:
        return {}

    def update(self, count: NFECount, num_samples: int) -> NFE:
        """Add the ``NFECount`` of drawing ``num_samples`` samples (``harness.core.nfe.counting``)."""
        who = f"{self._who}.update"
        if not isinstance(count, NFECount):
            raise ValueError(f"{who}: count must be a harness.core.nfe.NFECount, got {type(count).__name__}")
        values = {"num_samples": num_samples, "forward_calls": count.forward_calls, "examples": count.examples,
                  "vjp_calls": count.vjp_calls}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{who}: {name} must be a non-negative int, got {value!r}")
        if num_samples < 1:
            raise ValueError(f"{who}: num_samples must be >= 1, got {num_samples}")
        tallies = self._writable("counts", who)
        tallies.forward_calls += int(count.forward_calls)
        tallies.examples += int(count.examples)
        tallies.vjp_calls += int(count.vjp_calls)
        tallies.samples += int(num_samples)
        return self

    @contextlib.contextmanager
    def counting(self, model: Any, num_samples: int, attribute: str = "net") -> Iterator[NFECount]:
        """Count ``model.<attribute>``'s calls inside the block and add them for ``num_samples`` samples.

        >>> with nfe.counting(model, num_samples=len(z)):  # doctest: +SKIP
        ...     x = model.sample(len(z), rng)
        """
        with counting(model, attribute) as count:
            yield count
        self.update(count, num_samples)

    @property
    def counts(self) -> dict[str, int]:
        """The tallies: forward_calls, examples_evaluated, vjp_calls, samples."""
        c = self._state["counts"]
        return {"forward_calls": c.forward_calls, "examples_evaluated": c.examples, "vjp_calls": c.vjp_calls,
                "samples": c.samples}

    def compute(self) -> dict[str, float]:
        c = self._state["counts"]
        if c.samples == 0:
            raise ValueError(f"{self._who}.compute: no samples counted yet (update(count, num_samples) first)")
        return {"nfe_mean": c.examples / c.samples}
