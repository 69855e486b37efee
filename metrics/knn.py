"""Exact k-nearest-neighbour radii and radius tests from working-precision Gram tiles.

Reference distances. Every comparison uses the distance of scikit-learn's ``euclidean_distances``
(which the ``prdc`` package uses): d² = (||x||² + ||y||²) − 2 x·y evaluated in float64, rounded to
the working dtype (float32 for float32 input), clamped at 0 and square-rooted in that dtype.
:func:`exact_distances` computes it pair by pair, each dot product in float64 with one fixed
summation order, so a pair's distance does not depend on where the pair sits or which other pairs
are computed with it: the k-NN metrics are exactly invariant to permuting the rows of either set,
d(x, y) = d(y, x), and bitwise-identical rows are at distance exactly 0.

Screening. Which pairs need a reference distance is found from Gram tiles of mean-centred rows in
the working precision (float32 for float32 input: 1.6 times the float64 rate on CPUs, more on
GPUs). A tile entry a ≈ ||x − y||² carries a rigorous error bound: the dot product's
|fl(x·y) − x·y| ≤ γ_d ||x|| ||y||, γ_d = d·u / (1 − d·u) (Higham 2002, *Accuracy and Stability of
Numerical Algorithms*, §3.1, eq. 3.5), the roundings of the norms and the sum, the centring's
rounding and the reference's own float64 error; :class:`_Bounds` turns a into an interval that
certainly holds the reference distance. A pair whose interval decides a test (``d < r``) is never
recomputed; only pairs within rounding of a radius, and the few candidates of each row's nearest
neighbours, get their float64 reference distance. The same screen in float64 (:func:`_gram64`)
narrows tiles the float32 bound leaves undecided. Centring uses each pass's own mean, so sets far
from the origin or from each other screen as tightly as sets at the origin.

Memory: the features, one [chunk, d] centred copy per tile side, one [chunk, chunk] tile and
O(N · list length) neighbour lists; nothing is O(N²).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from harness.core.heartbeat import progress

__all__ = ["NeighbourLists", "as_feature_tensor", "even_tile", "exact_distances", "exact_kth", "knn_radii",
           "knn_radii_multi", "nearest_rows", "neighbour_lists", "radii_with_fallback", "radius_tests", "squared_norms", "subset_radii"]

_PAIR_CHUNK = 64  # pairs per float64 dot-product call on the CPU (cache-sized gathers)
_DEVICE_PAIR_CHUNK = 1024  # pairs per call elsewhere, zero-padded: one kernel shape for every pair
_LIST_EXTRA = 8  # candidates a neighbour list screens beyond the neighbours it must hold
_DOUBLE_EPS = 2.0**-53


def as_feature_tensor(
    features: np.ndarray | torch.Tensor, name: str, device: str | torch.device | None = None
) -> torch.Tensor:
    """Validate ``features`` [N, d] and return a contiguous float32/float64 tensor (float32 input kept).

    Non-float64 dtypes are converted to float32; numpy input goes to the CPU unless ``device``
    is given; a tensor stays on its device unless ``device`` is given.
    """
    tensor = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_samples, dim], got shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    if device is not None:
        tensor = tensor.to(device)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return tensor.detach().contiguous()


def even_tile(n: int, chunk_size: int) -> int:
    """Tile side ≤ chunk_size that covers n rows in as few tiles as chunk_size does, with < 1 row of
    padding per tile (4500 rows at 2048: three tiles of 1500, not 2048 + 2048 + 404)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return -(-n // -(-n // chunk_size))


# ---------------------------------------------------------------- reference distances


def _dots(x: torch.Tensor, y: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """float64 x[i]·y[j] [P] for index vectors i, j [P], one fixed summation order per pair."""
    if x.device.type == "cpu":
        xn, yn = x.numpy(), y.numpy()
        ii, jj = i.numpy(), j.numpy()
        out = np.empty(len(ii), dtype=np.float64)
        for s in range(0, len(ii), _PAIR_CHUNK):
            out[s : s + _PAIR_CHUNK] = np.einsum("pd,pd->p", xn[ii[s : s + _PAIR_CHUNK]], yn[jj[s : s + _PAIR_CHUNK]],
                                                 dtype=np.float64)
        return torch.from_numpy(out)
    out = torch.empty(len(i), dtype=torch.float64, device=x.device)
    for s in range(0, len(i), _DEVICE_PAIR_CHUNK):
        a, b = x[i[s : s + _DEVICE_PAIR_CHUNK]].double(), y[j[s : s + _DEVICE_PAIR_CHUNK]].double()
        n = a.shape[0]
        if n < _DEVICE_PAIR_CHUNK:
            a = torch.cat([a, a.new_zeros(_DEVICE_PAIR_CHUNK - n, a.shape[1])])
            b = torch.cat([b, b.new_zeros(_DEVICE_PAIR_CHUNK - n, b.shape[1])])
        out[s : s + n] = (a * b).sum(1)[:n]
    return out


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """||x_i||² [N] in float64 by the dot products of :func:`exact_distances` (so d(x, x) = 0 exactly)."""
    rows = torch.arange(x.shape[0], device=x.device)
    return _dots(x, x, rows, rows)


def exact_distances(x: torch.Tensor, y: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                    x_sq: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    """Reference distances d(x[i], y[j]) [P] in x's dtype (see the module docstring).

    Args:
        x: [N_x, d], y: [N_y, d], same dtype and device; i, j: int64 [P] row indices.
        x_sq, y_sq: :func:`squared_norms` of x and y (float64).
    """
    if len(i) == 0:
        return torch.empty(0, dtype=x.dtype, device=x.device)
    sq = (x_sq[i] + y_sq[j]).sub_(_dots(x, y, i, j).to(x_sq.device).mul_(2.0))
    # the square root of the rounded d² in float64, rounded again: the correctly rounded square root
    # (numpy's, hence scikit-learn's); torch's float32 sqrt on CPU is off by one ulp for ~15% of inputs
    return sq.to(x.dtype).clamp_min_(0.0).double().sqrt_().to(x.dtype)


# ---------------------------------------------------------------- screening bounds


@dataclass(frozen=True)
class _Bounds:
    """Rigorous intervals for reference distances from a screening tile entry (module docstring).

    Per pair (i, j), with s = the rows' centred norms and r = their raw norms:
    m = (γ_d/2 + 4u_s)(s_i + s_j)² bounds |a − ||x̃_i − ỹ_j||²| (γ_d from the dot product, 4u_s the
    norms and two additions, since 2 s_i s_j ≤ (s_i + s_j)²/2); ε = 1.01 u_s (s_i + s_j) bounds how far
    the centred rows' distance is from the rows' distance; e = 1.01 (d + 2) 2⁻⁵³ (r_i + r_j)² bounds
    the float64 reference's error in d²; a factor 1 ± 2u_w covers rounding d² to the working dtype
    and its square root.
    """

    d: int
    u_screen: float  # unit roundoff of the screening tiles' dtype
    u_work: float  # unit roundoff of the working dtype

    @property
    def gamma(self) -> float:
        nu = self.d * self.u_screen
        return nu / (1.0 - nu)

    def _terms(self, s_i, s_j, r_i, r_j):
        m = (self.gamma / 2 + 4 * self.u_screen) * (s_i + s_j) ** 2 * 1.01
        eps = 1.01 * self.u_screen * (s_i + s_j)
        e = 1.01 * (self.d + 2) * _DOUBLE_EPS * (r_i + r_j) ** 2
        return m, eps, e

    def interval(self, a, s_i, s_j, r_i, r_j) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) float64 with lo <= reference distance <= hi, for screening values a."""
        m, eps, e = self._terms(s_i, s_j, r_i, r_j)
        a = a.double()
        near = ((a - m).clamp_min(0.0).sqrt() - eps).clamp_min(0.0)
        lo = (near.square() - e).clamp_min(0.0).sqrt() * (1.0 - 2 * self.u_work)
        hi = ((a + m).sqrt() + eps).square().add(e).sqrt() * (1.0 + 2 * self.u_work)
        return lo, hi

    def screen_threshold(self, t, s_i, s_j, r_i, r_j) -> torch.Tensor:
        """float64 A with: reference distance < t implies a < A (−inf where t <= 0: nothing is < 0)."""
        m, eps, e = self._terms(s_i, s_j, r_i, r_j)
        t = torch.as_tensor(t, dtype=torch.float64)
        reach = ((t / (1.0 - 2 * self.u_work)).square() + e).sqrt() + eps
        return torch.where(t > 0, reach.square() + m, torch.full_like(reach, -torch.inf))


def _screen_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 tiles for float32 features unless the device's float32 matmul is reduced (TF32/bf16)."""
    if x.dtype == torch.float32 and (x.device.type == "cpu" or torch.get_float32_matmul_precision() == "highest"):
        return torch.float32
    return torch.float64


def _roundoff(dtype: torch.dtype) -> float:
    return 2.0**-24 if dtype == torch.float32 else _DOUBLE_EPS


def _below(a_dtype: torch.dtype, threshold: torch.Tensor) -> torch.Tensor:
    """``threshold`` (float64) rounded up into a_dtype, so a < threshold implies a < the result."""
    out = threshold.to(a_dtype)
    return torch.where(out.double() < threshold, torch.nextafter(out, torch.full_like(out, torch.inf)), out)


class _Rows:
    """One feature set prepared for screening: its rows, reference norms and centred norms."""

    def __init__(self, x: torch.Tensor, center: torch.Tensor, chunk: int) -> None:
        self.x, self.n, self.chunk = x, x.shape[0], chunk
        self.dtype = _screen_dtype(x)
        self.center = center.to(self.dtype)
        self.sq = squared_norms(x)
        self.raw = self.sq.sqrt()
        self.csq = torch.cat([self.centred(slice(r, min(r + chunk, self.n))).double().square().sum(1)
                              for r in range(0, self.n, chunk)])
        self.s = self.csq.sqrt()
        self.csq_screen = self.csq.to(self.dtype)

    def centred(self, rows: slice) -> torch.Tensor:
        return self.x[rows].to(self.dtype) - self.center

    def starts(self) -> range:
        return range(0, self.n, self.chunk)

    def tile(self, rows: slice, cols: slice, other: _Rows, x_rows: torch.Tensor, x_cols: torch.Tensor) -> torch.Tensor:
        """Screening values a ≈ ||x_i − y_j||² [rows, cols] in the screening dtype."""
        return torch.addmm(other.csq_screen[None, cols], x_rows, x_cols.T, alpha=-2.0).add_(self.csq_screen[rows, None])


def _bounds(x: torch.Tensor) -> _Bounds:
    return _Bounds(d=x.shape[1], u_screen=_roundoff(_screen_dtype(x)), u_work=_roundoff(x.dtype))


# ---------------------------------------------------------------- neighbour lists


@dataclass(frozen=True)
class NeighbourLists:
    """Each row's nearest rows of its own set, with reference distances.

    Attributes:
        idx: int64 [N, L] row indices, nearest first (the row itself, or a copy, at distance 0).
        dist: [N, L] reference distances, ascending, in the features' dtype.
        valid: [N] every row of the set missing from row i's list is at distance >= valid[i]
            (+inf when the list holds every row); a radius read from the list is exact when <= valid.
    """

    idx: torch.Tensor
    dist: torch.Tensor
    valid: torch.Tensor


def _merge(best_a: torch.Tensor, best_i: torch.Tensor, floor: torch.Tensor, rows: slice, a: torch.Tensor, col0: int) -> None:
    """Fold tile ``a`` [rows, c] (columns col0 + 0..c−1) into the running smallest-L candidates of
    ``rows``; ``floor`` keeps the smallest screening value ever dropped from each row's candidates."""
    keep = best_a.shape[1]
    v, p = a.topk(min(keep + 1, a.shape[1]), dim=1, largest=False)
    cand_a, cand_i = torch.cat([best_a[rows], v], 1), torch.cat([best_i[rows], p + col0], 1)
    vv, pp = cand_a.topk(keep + 1, dim=1, largest=False, sorted=True)
    best_a[rows], best_i[rows] = vv[:, :keep], cand_i.gather(1, pp[:, :keep])
    floor[rows] = torch.minimum(floor[rows], vv[:, keep])


def neighbour_lists(x: torch.Tensor, length: int, *, chunk_size: int = 2048, desc: str = "k-NN lists") -> NeighbourLists:
    """Lists of each row's ``length`` nearest rows of x [N, d] (itself included), from one pass over
    the upper-triangular screening tiles; see :class:`NeighbourLists`.

    The ``length`` + 8 candidates of smallest screening value per row get reference distances;
    ``valid`` is the lower bound of every dropped candidate (:meth:`_Bounds.interval`).
    """
    n = x.shape[0]
    length = min(length, n)
    keep = min(length + _LIST_EXTRA, n)
    chunk = even_tile(n, chunk_size)
    rows_ = _Rows(x, x.mean(0, dtype=torch.float64), chunk)
    best_a = torch.full((n, keep), torch.inf, dtype=rows_.dtype, device=x.device)
    best_i = torch.zeros((n, keep), dtype=torch.int64, device=x.device)
    floor = torch.full((n,), torch.inf, dtype=rows_.dtype, device=x.device)
    pairs = [(r0, c0) for r0 in rows_.starts() for c0 in range(r0, n, chunk)]  # the upper triangle
    x_rows, held = None, -1
    for r0, c0 in progress(pairs, total=len(pairs), desc=f"{desc} {n} x {n}", unit="tile"):
        rows, cols = slice(r0, min(r0 + chunk, n)), slice(c0, min(c0 + chunk, n))
        if held != r0:
            x_rows, held = rows_.centred(rows), r0
        x_cols = x_rows if c0 == r0 else rows_.centred(cols)
        a = rows_.tile(rows, cols, rows_, x_rows, x_cols)
        _merge(best_a, best_i, floor, rows, a, c0)
        if c0 != r0:
            _merge(best_a, best_i, floor, cols, a.T, r0)
    own = torch.arange(n, device=x.device).repeat_interleave(keep)
    dist = exact_distances(x, x, own, best_i.reshape(-1), rows_.sq, rows_.sq).view(n, keep)
    dist, order = dist.sort(dim=1, stable=True)
    idx = best_i.gather(1, order)
    bounds = _bounds(x)
    lo, _ = bounds.interval(floor, rows_.s, rows_.s.max(), rows_.raw, rows_.raw.max())
    valid = torch.where(torch.isinf(floor), torch.inf, lo).to(x.dtype)
    return NeighbourLists(idx[:, :length], dist[:, :length], torch.minimum(valid, _upper_inf(dist, length)))


def _upper_inf(dist: torch.Tensor, length: int) -> torch.Tensor:
    """Rows beyond position ``length`` were screened and dropped: they are at >= dist[:, length]."""
    if dist.shape[1] > length:
        return dist[:, length]
    return torch.full((dist.shape[0],), torch.inf, dtype=dist.dtype, device=dist.device)


def subset_radii(lists: NeighbourLists, k: int, members: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(radii [N], exact [N] bool): each row's distance to its k-th nearest other member of the set.

    ``members`` [N] bool selects a subset (None: every row); the radius is the (k+1)-th smallest
    distance to members, the row itself included, as ``prdc``'s ``get_kth_value(d, k + 1)``.
    ``exact`` is False where the list cannot certify it (then call :func:`exact_kth`); rows outside
    the subset get False.
    """
    if members is None:
        radii = lists.dist[:, k]
        return radii, radii <= lists.valid
    hit = members[lists.idx].cumsum(1) >= k + 1
    pos = hit.to(torch.uint8).argmax(1)
    radii = lists.dist.gather(1, pos[:, None])[:, 0]
    return radii, members & hit[:, -1] & (radii <= lists.valid)


def _gram64_sq(x: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    """float64 ||x[rows] − y_j||² [len(rows), N_y] from a float64 Gram product (error <= e of :class:`_Bounds`)."""
    return (x_sq[rows, None] + y_sq[None, :]) - 2.0 * (x[rows].double() @ y.double().T)


def _tight_interval(a64: torch.Tensor, r_i: torch.Tensor, r_j: torch.Tensor, d: int, u_work: float):
    """(lo, hi) of the reference distance from float64 Gram values: twice the reference's error bound."""
    e = 2.02 * (d + 2) * _DOUBLE_EPS * (r_i + r_j) ** 2
    return (a64 - e).clamp_min(0.0).sqrt() * (1.0 - 2 * u_work), (a64 + e).sqrt() * (1.0 + 2 * u_work)


def exact_kth(x: torch.Tensor, rows: torch.Tensor, k: int, members: torch.Tensor | None = None,
              x_sq: torch.Tensor | None = None, block: int = 64) -> torch.Tensor:
    """Reference (k+1)-th smallest distance [len(rows)] from each of ``rows`` to the members of x [N, d].

    For rows a neighbour list cannot certify: float64 Gram values screen the members, and the
    candidates within rounding of the (k+1)-th get reference distances (every tie included).
    """
    x_sq = squared_norms(x) if x_sq is None else x_sq
    cols = torch.arange(x.shape[0], device=x.device) if members is None else members.nonzero()[:, 0]
    raw = x_sq.sqrt()
    out = torch.empty(len(rows), dtype=x.dtype, device=x.device)
    for b0 in range(0, len(rows), block):
        part = rows[b0 : b0 + block]
        a64 = torch.cat([_gram64_sq(x, part, x[cols[c0 : c0 + 4096]], x_sq, x_sq[cols[c0 : c0 + 4096]])
                         for c0 in range(0, len(cols), 4096)], dim=1)
        lo, hi = _tight_interval(a64, raw[part, None], raw[cols][None, :], x.shape[1], _roundoff(x.dtype))
        upper = hi.kthvalue(k + 1, dim=1).values
        pi, pj = (lo <= upper[:, None]).nonzero(as_tuple=True)
        dist = exact_distances(x, x, part[pi], cols[pj], x_sq, x_sq)
        for r in range(len(part)):
            out[b0 + r] = dist[pi == r].kthvalue(k + 1).values
    return out


def radii_with_fallback(x: torch.Tensor, lists: NeighbourLists, k: int, members: torch.Tensor | None,
                        x_sq: torch.Tensor) -> torch.Tensor:
    """Reference radii [N] of the members (−inf elsewhere): from the list, else :func:`exact_kth`."""
    radii, ok = subset_radii(lists, k, members)
    radii = radii.clone()
    inside = torch.ones_like(ok) if members is None else members
    missing = (inside & ~ok).nonzero()[:, 0]
    if len(missing):
        radii[missing] = exact_kth(x, missing, k, members, x_sq)
    radii[~inside] = -torch.inf
    return radii


def radius_tests(real: torch.Tensor, fake: torch.Tensor, r_pr: torch.Tensor, r_dc: torch.Tensor, f_pr: torch.Tensor,
                  fake_masks: torch.Tensor, chunk_size: int) -> dict[str, torch.Tensor]:
    """Precision/recall/density/coverage counts of every subset e from one real × fake screening pass.

    Args:
        r_pr, r_dc: [E, N_real] reference radii per subset (−inf for rows outside it); f_pr: [E, N_fake].
        fake_masks: [E, N_fake] bool, the generated rows of each subset.
    Returns:
        {"fake_in_real": [E, N_fake] bool, "real_in_fake": [E, N_real] bool, "covered": [E, N_real]
        bool, "density": [E] int64}, where a pair (i, j) counts for subset e when d(i, j) < the radius.
    """
    n_real, n_fake, dev = real.shape[0], fake.shape[0], real.device
    num = r_pr.shape[0]
    chunk = even_tile(max(n_real, n_fake), chunk_size)
    center = (real.sum(0, dtype=torch.float64) + fake.sum(0, dtype=torch.float64)) / (n_real + n_fake)
    rr, ff = _Rows(real, center, chunk), _Rows(fake, center, chunk)
    bounds = _bounds(real)
    cap_r = torch.maximum(r_pr, r_dc).amax(0).double()
    cap_f = f_pr.amax(0).double()
    screen_r = _below(rr.dtype, bounds.screen_threshold(cap_r, rr.s, ff.s.max(), rr.raw, ff.raw.max()))
    screen_f = _below(rr.dtype, bounds.screen_threshold(cap_f, ff.s, rr.s.max(), ff.raw, rr.raw.max()))
    fake_in = torch.zeros((num, n_fake), dtype=torch.bool, device=dev)
    real_in = torch.zeros((num, n_real), dtype=torch.bool, device=dev)
    covered = torch.zeros((num, n_real), dtype=torch.bool, device=dev)
    density = torch.zeros(num, dtype=torch.int64, device=dev)
    starts = rr.starts()
    for r0 in progress(starts, total=len(starts), desc=f"k-NN radius tests {n_real} x {n_fake}", unit="row tile"):
        rows = slice(r0, min(r0 + chunk, n_real))
        x_rows = rr.centred(rows)
        for c0 in range(0, n_fake, chunk):
            cols = slice(c0, min(c0 + chunk, n_fake))
            a = rr.tile(rows, cols, ff, x_rows, ff.centred(cols))
            pi, pj = ((a < screen_r[rows, None]) | (a < screen_f[None, cols])).nonzero(as_tuple=True)
            if len(pi) > a.numel() // 8:  # the float32 bound decides too little here: a float64 tile
                gi = torch.arange(rows.start, rows.stop, device=dev)
                a64 = _gram64_sq(real, gi, fake[cols], rr.sq, ff.sq[cols])
                lo, hi = _tight_interval(a64, rr.raw[rows, None], ff.raw[None, cols], real.shape[1], _roundoff(real.dtype))
                pi, pj = ((lo < cap_r[rows, None]) | (lo < cap_f[None, cols])).nonzero(as_tuple=True)
                lo, hi = lo[pi, pj], hi[pi, pj]
                gi, gj = pi + r0, pj + c0
            else:
                gi, gj = pi + r0, pj + c0
                lo, hi = bounds.interval(a[pi, pj], rr.s[gi], ff.s[gj], rr.raw[gi], ff.raw[gj])
            if len(gi) == 0:
                continue
            t_pr, t_dc, t_f = r_pr[:, gi].double(), r_dc[:, gi].double(), f_pr[:, gj].double()
            unsure = torch.zeros(len(gi), dtype=torch.bool, device=dev)
            for t in (t_pr, t_dc, t_f):
                unsure |= ((lo < t) & (hi >= t)).any(0)
            if bool(unsure.any()):
                ref = exact_distances(real, fake, gi[unsure], gj[unsure], rr.sq, ff.sq).double()
                hi = hi.clone()
                hi[unsure] = ref
            inside_pr = hi < t_pr
            inside_dc = (hi < t_dc) & fake_masks[:, gj]
            inside_f = hi < t_f
            e_idx = torch.arange(num, device=dev)[:, None].expand(-1, len(gi))
            fake_in[e_idx[inside_pr], gj.expand(num, -1)[inside_pr]] = True
            covered[e_idx[inside_dc], gi.expand(num, -1)[inside_dc]] = True
            real_in[e_idx[inside_f], gi.expand(num, -1)[inside_f]] = True
            density += inside_dc.sum(1)
    return {"fake_in_real": fake_in, "real_in_fake": real_in, "covered": covered, "density": density}


def knn_radii_multi(
    features: np.ndarray | torch.Tensor, ks: Sequence[int], *, chunk_size: int = 2048
) -> dict[int, torch.Tensor]:
    """Distance from each point to its k-th nearest neighbour, excluding itself, for every k in ks.

    Args:
        features: [N, d] numpy array or tensor, validated by :func:`as_feature_tensor`.
        ks: neighbourhood sizes, each in [1, N−1].
        chunk_size: largest tile side (see :func:`even_tile`).
    Returns:
        {k: radii [N]} in the features' dtype and units — the (k+1)-th smallest reference distance
        of each row including the zero self-distance, as ``prdc``'s ``get_kth_value(d, k + 1)``; a
        row with k or more bitwise-identical copies has radius exactly 0.
    """
    x = as_feature_tensor(features, "features")
    n = x.shape[0]
    if min(ks) < 1 or max(ks) > n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {sorted(ks)}; a set needs at least k+1 samples")
    lists = neighbour_lists(x, max(ks) + 1, chunk_size=chunk_size)
    x_sq = squared_norms(x)
    return {k: radii_with_fallback(x, lists, k, None, x_sq) for k in ks}


def knn_radii(features: np.ndarray | torch.Tensor, k: int, *, chunk_size: int = 2048) -> torch.Tensor:
    """Radii [N]: distance of each row of ``features`` [N, d] to its k-th nearest other row."""
    return knn_radii_multi(features, (k,), chunk_size=chunk_size)[k]


def nearest_rows(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [N_x], index [N_x]) of each row of x [N_x, d] to its nearest row of y [N_y, d],
    exact (``torch.cdist`` without the matrix-multiply expansion) in x's dtype, ``chunk`` rows at a time."""
    found = [torch.cdist(x[lo : lo + chunk], y, compute_mode="donot_use_mm_for_euclid_dist").min(1)
             for lo in range(0, len(x), chunk)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])
