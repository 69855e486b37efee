"""Claims of the literature as checkable statements, and their verdicts from our confidence intervals.

Pure functions: no I/O, no records. A claim compares :class:`Estimate` s of one column (a metric)
for named rows of a leaderboard:

* ``less`` / ``greater`` — a chain ``[a, b, c, ...]``: a < b < c (or a > b > c) for every
  consecutive pair;
* ``ratio`` — mean(numerator) / mean(denominator) >= ``at_least`` (e.g. "OT paths need ~2x fewer
  NFE": ratio of DDPM's NFE to FM-OT's at least 1.5);
* ``within`` — |a − b| <= ``margin`` (an equivalence claim, e.g. "the three std
  parameterisations are practically equivalent");
* ``less`` / ``greater`` of two rows with a ``margin`` — a < b + margin (or a > b − margin): a
  non-inferiority claim ("matches or beats": a is worse than b by less than the margin).

Verdicts come from two-sided ``confidence`` intervals (default 95 %):

* difference d = mean_a − mean_b with standard error sqrt(se_a² + se_b²) and Welch–Satterthwaite
  degrees of freedom (Welch 1947); interval d ± t_{df, 1−α/2}·se;
* ratio on the log scale, log(m_num/m_den) − log(at_least), with the delta-method standard error
  sqrt((se_num/m_num)² + (se_den/m_den)²);
* ``supported`` when the whole interval lies on the claimed side, ``not supported`` when it lies
  wholly on the other side, ``inconclusive`` when it straddles the boundary. A chain is supported
  when every pair is, not supported when any pair is, and inconclusive otherwise. ``within`` is a
  two one-sided test (Schuirmann 1987) at level α = 1 − ``confidence`` (0.05): the two one-sided
  tests at α are decided by the (1 − 2α) interval (90 %), supported when it lies inside
  [−margin, margin], not supported when it lies wholly outside, inconclusive otherwise. A
  non-inferiority claim is the one one-sided test at α of that pair, decided by the same (1 − 2α)
  interval of d ∓ margin.
* Two single-seed rows evaluated on the same examples (a likelihood on one test set) are compared
  paired, from their block means (:func:`_paired_blocks`), instead of by two independent
  standard errors.
* An estimate without a spread (NFE, a count, a single run without a standard error) is exact:
  se = 0, and the comparison is decided by the means.
* **The chance rule.** A claim about models means nothing when a model is no better than a sampler
  that knows nothing of the data's structure (the suite's ``role: chance`` rows: a Gaussian with the
  data's moments, uniform noise, the per-pixel marginals). Every row a claim names (other than a
  data or chance row) must beat every chance row that has the claim's column, by the same interval
  test in the column's better direction; if one does not, the verdict is ``inconclusive (at
  chance)`` whatever the comparison says, and the evidence names the row and the chance row.
* **Under-trained rows.** A row whose model had not converged (one of the suite's claim metrics moved
  by more than twice the spread of a run between its last two checkpoints, at 3/4 of the steps and at
  the end: :func:`converged`) is no evidence for or against a claim on what training learns, whichever
  claim metric moved: a claim naming one is ``inconclusive (under-trained)``, over the chance rule.
  Claims on cost columns (timings, sizes) are exempt; ``harness.leaderboard.render`` builds the map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

from harness.core.stats import bounded_interval, paired_block_stderr

__all__ = ["AT_CHANCE", "UNDER_TRAINED", "INCONCLUSIVE", "NOT_SUPPORTED", "SUPPORTED", "Claim", "Estimate", "Verdict", "beats_chance",
           "estimate", "evaluate_claim"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
AT_CHANCE = "inconclusive (at chance)"
UNDER_TRAINED = "inconclusive (under-trained)"
KINDS = ("less", "greater", "ratio", "within")


@dataclass(frozen=True)
class Estimate:
    """A row's value of one column: mean, standard error and its degrees of freedom.

    ``n`` is the number of seeds it aggregates; ``df`` is ``inf`` for a standard error taken as
    known (one seed with a recorded standard error) and ``n − 1`` for one estimated across seeds.
    """

    mean: float
    se: float
    df: float
    n: int
    blocks: tuple[float, ...] | None = None  # one seed: block means over its evaluation examples
    examples: int | None = None  # how many examples the blocks split
    pair_key: str | None = None  # which examples (data hash + rows): equal keys are paired example by example

    def half_width(self, confidence: float = 0.95) -> float:
        """Half-width of the two-sided ``confidence`` interval of the mean."""
        return _quantile(confidence, self.df) * self.se if self.se > 0 else 0.0

    def interval(self, confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
        """The two-sided ``confidence`` interval of the mean, inside ``bounds`` (``bounded_interval``)."""
        q = _quantile(confidence, self.df) if self.se > 0 else 0.0
        return bounded_interval(self.mean, self.se, q, bounds)


def estimate(values: Sequence[float], stderrs: Sequence[float | None] = (), *,
             blocks: Sequence[float] | None = None, examples: int | None = None,
             pair_key: str | None = None) -> Estimate:
    """Aggregate one column over seeds.

    With two or more seeds the spread across seeds is the evidence: se = sd/√n (ddof 1), df = n − 1.
    With one seed, that run's own standard error (``stderrs[0]``) is used with df = ∞, or 0 when it
    has none (a deterministic quantity such as NFE).
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values to aggregate")
    n = len(vals)
    mean = math.fsum(vals) / n
    if n >= 2:
        var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
        return Estimate(mean=mean, se=math.sqrt(var / n), df=float(n - 1), n=n)
    se = stderrs[0] if stderrs and stderrs[0] is not None else 0.0
    return Estimate(mean=mean, se=float(se), df=math.inf, n=1,
                    blocks=tuple(float(b) for b in blocks) if blocks else None, examples=examples, pair_key=pair_key)


def _paired_blocks(a: Estimate, b: Estimate) -> tuple[float, float] | None:
    """(se, df) of mean_a − mean_b from block differences, when both are one seed on the same examples.

    Two rows evaluated on the same test examples share each example's difficulty, so their
    difference is far less noisy than two independent standard errors say. With K block means per
    row (``metrics.bpd.block_means``: contiguous, near-equal blocks fixed by the example count),
    the block differences give the batch-means error with K − 1 degrees of freedom, computed by
    the drift check's :func:`harness.drift.paired_block_stderr`.
    """
    if a.n != 1 or b.n != 1 or not a.blocks or not b.blocks or a.pair_key is None or a.pair_key != b.pair_key:
        return None
    if len(a.blocks) != len(b.blocks) or len(a.blocks) < 3 or a.examples is None or a.examples != b.examples:
        return None
    return paired_block_stderr(list(b.blocks), list(a.blocks), a.examples)


@dataclass(frozen=True)
class Claim:
    """A published claim made checkable over one column of a leaderboard's rows.

    Exactly one of the comparison forms is set; ``rows`` are the row ids it names, in order.
    """

    id: str
    statement: str
    source: str
    column: str
    kind: str  # one of KINDS
    rows: tuple[str, ...]
    at_least: float | None = None  # ratio
    margin: float | None = None  # within; or a non-inferiority margin of a two-row less/greater
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        need = 2 if self.kind in ("ratio", "within") else None
        if len(self.rows) < 2 or (need and len(self.rows) != need):
            raise ValueError(f"claim {self.id}: {self.kind} needs {need or 'at least 2'} rows, got {list(self.rows)}")
        if self.kind == "ratio" and (self.at_least is None or self.at_least <= 0):
            raise ValueError(f"claim {self.id}: ratio needs at_least > 0")
        if self.kind == "within" and (self.margin is None or self.margin < 0):
            raise ValueError(f"claim {self.id}: within needs margin >= 0")
        if self.kind in ("less", "greater") and self.margin is not None and (len(self.rows) != 2 or self.margin < 0):
            raise ValueError(f"claim {self.id}: a {self.kind} claim with a margin (non-inferiority) needs 2 rows and "
                             f"margin >= 0, got {list(self.rows)} and {self.margin}")
        if self.kind == "ratio" and self.margin is not None:
            raise ValueError(f"claim {self.id}: ratio takes at_least, not margin")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"claim {self.id}: confidence must be in (0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class Verdict:
    """The outcome of a claim: the verdict, and the evidence as one line of text per comparison."""

    claim: Claim
    verdict: str
    evidence: tuple[str, ...]


def _quantile(confidence: float, df: float) -> float:
    p = 0.5 + confidence / 2
    return float(stats.norm.ppf(p)) if math.isinf(df) else float(stats.t.ppf(p, df))


def _welch_df(a: Estimate, b: Estimate) -> float:
    terms = [(e.se**2, e.df) for e in (a, b) if e.se > 0]
    if not terms or any(math.isinf(df) for _, df in terms):
        return math.inf
    num = sum(v for v, _ in terms) ** 2
    return num / sum(v**2 / df for v, df in terms)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _side(lo: float, hi: float, claimed_positive: bool) -> str:
    """Verdict for 'the quantity is > 0' (claimed_positive) or '< 0', from its interval [lo, hi]."""
    if claimed_positive:
        lo, hi = -hi, -lo
    if hi < 0:
        return SUPPORTED
    if lo >= 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _pair(claim: Claim, a: str, b: str, ea: Estimate, eb: Estimate) -> tuple[str, str]:
    """One comparison of a chain (``less``/``greater``) or ``within``."""
    d = ea.mean - eb.mean
    paired = _paired_blocks(ea, eb)
    se, df = paired if paired else (math.hypot(ea.se, eb.se), _welch_df(ea, eb))
    one_sided = claim.kind != "within" and claim.margin is not None  # non-inferiority
    level = 2 * claim.confidence - 1 if claim.kind == "within" or one_sided else claim.confidence  # the 1 − 2α interval
    hw = _quantile(level, df) * se if se > 0 else 0.0
    lo, hi = d - hw, d + hw
    pct = f"{round(level * 100)}% CI" + (f" (TOST at α = {1 - claim.confidence:.2g})" if claim.kind == "within" else "")
    pct += f" (one-sided test at α = {1 - claim.confidence:.2g})" if one_sided else ""
    pct += f", paired over the same examples ({len(ea.blocks)} blocks)" if paired else ""
    interval = f"Δ = {a} − {b} = {_fmt(d)}, {pct} [{_fmt(lo)}, {_fmt(hi)}]" if se > 0 else f"Δ = {a} − {b} = {_fmt(d)} (exact)"
    if claim.kind == "within":
        m = float(claim.margin)  # type: ignore[arg-type]
        if -m <= lo and hi <= m:
            verdict = SUPPORTED
        elif hi < -m or lo > m:
            verdict = NOT_SUPPORTED
        else:
            verdict = INCONCLUSIVE
        return verdict, f"{interval}; margin ±{_fmt(m)}"
    shift = 0.0
    if one_sided:  # a < b + m, i.e. d − m < 0 (less); a > b − m, i.e. d + m > 0 (greater)
        shift = -float(claim.margin) if claim.kind == "less" else float(claim.margin)  # type: ignore[arg-type]
        interval += f"; non-inferiority margin {_fmt(float(claim.margin))}"  # type: ignore[arg-type]
    if se == 0:
        ok = d + shift < 0 if claim.kind == "less" else d + shift > 0
        return (SUPPORTED if ok else NOT_SUPPORTED), interval
    return _side(lo + shift, hi + shift, claimed_positive=claim.kind == "greater"), interval


def _ratio(claim: Claim, num: str, den: str, en: Estimate, ed: Estimate) -> tuple[str, str]:
    if en.mean <= 0 or ed.mean <= 0:
        return INCONCLUSIVE, f"ratio {num}/{den} undefined: means {_fmt(en.mean)}, {_fmt(ed.mean)} are not both positive"
    r = en.mean / ed.mean
    se = math.hypot(en.se / en.mean, ed.se / ed.mean)
    hw = _quantile(claim.confidence, _welch_df(en, ed)) * se if se > 0 else 0.0
    lo, hi = r * math.exp(-hw), r * math.exp(hw)
    target = float(claim.at_least)  # type: ignore[arg-type]
    text = (f"{num}/{den} = {_fmt(r)}, {round(claim.confidence * 100)}% CI [{_fmt(lo)}, {_fmt(hi)}]"
            if se > 0 else f"{num}/{den} = {_fmt(r)} (exact)")
    text += f"; claimed ≥ {_fmt(target)}"
    if se == 0:
        return (SUPPORTED if r >= target else NOT_SUPPORTED), text
    return _side(math.log(lo / target), math.log(hi / target), claimed_positive=True), text


def beats_chance(claim: Claim, row: str, chance_row: str, e_row: Estimate, e_chance: Estimate,
                 higher_is_better: bool) -> tuple[bool, str]:
    """Whether ``row`` is better than ``chance_row`` on the claim's column (its interval on the better
    side, at the claim's confidence), with the evidence line."""
    probe = Claim(id=claim.id, statement="", source="", column=claim.column, kind="greater" if higher_is_better else "less",
                  rows=(row, chance_row), confidence=claim.confidence)
    verdict, text = _pair(probe, row, chance_row, e_row, e_chance)
    return verdict == SUPPORTED, f"chance rule: {text}: {'beats' if verdict == SUPPORTED else 'does not beat'} chance"


def converged(final: Sequence[float], earlier: Sequence[float], final_se: Sequence[float | None] = ()) -> tuple[bool, str]:
    """Whether a row's metric agrees between its last two checkpoints (3/4 of the steps, the end).

    The yardstick is the spread of one run: the standard deviation of the final values across seeds
    (ddof 1), or with one seed that run's own standard error. Converged when the mean change over
    the last quarter of training is at most twice that: training on would change the row less than
    running it again with another seed does.
    """
    if len(final) != len(earlier) or not final:
        raise ValueError("final and earlier need one value per seed")
    n = len(final)
    change = math.fsum(final) / n - math.fsum(earlier) / n
    if n >= 2:
        mean = math.fsum(final) / n
        spread = math.sqrt(math.fsum((v - mean) ** 2 for v in final) / (n - 1))
    else:
        spread = float(final_se[0] or 0.0) if final_se else 0.0
    ok = abs(change) <= 2 * spread
    return ok, f"change over the last quarter of training {_fmt(change)}, 2 x the spread of a run {_fmt(2 * spread)}"


def evaluate_claim(claim: Claim, estimates: Mapping[str, Estimate], *, chance: Mapping[str, Estimate] | None = None,
                   exempt: frozenset[str] = frozenset(), higher_is_better: bool | None = None,
                   under_trained: Mapping[str, str] | None = None) -> Verdict:
    """The verdict of ``claim`` from the rows' estimates of its column.

    A row with no estimate (not run yet, or the metric is missing) makes the claim inconclusive
    and the evidence says which row is missing. ``chance`` holds the chance rows' estimates of the
    column; with a direction (``higher_is_better``) every named row not in ``exempt`` (data and
    chance rows) must beat each of them, or the verdict is :data:`AT_CHANCE` (module docstring).
    ``under_trained`` maps rows that failed their convergence check to the reason; a claim naming
    one is :data:`UNDER_TRAINED`.
    """
    missing = [r for r in claim.rows if r not in estimates]
    if missing:
        return Verdict(claim, INCONCLUSIVE, (f"no results for {', '.join(missing)} ({claim.column})",))
    if claim.kind == "ratio":
        num, den = claim.rows
        verdict, text = _ratio(claim, num, den, estimates[num], estimates[den])
        texts = [text]
    else:
        pairs = list(zip(claim.rows, claim.rows[1:]))
        results = [_pair(claim, a, b, estimates[a], estimates[b]) for a, b in pairs]
        verdicts = [v for v, _ in results]
        if all(v == SUPPORTED for v in verdicts):
            verdict = SUPPORTED
        elif any(v == NOT_SUPPORTED for v in verdicts):
            verdict = NOT_SUPPORTED
        else:
            verdict = INCONCLUSIVE
        texts = [t for _, t in results]
    if chance and higher_is_better is not None:
        failed = False
        for row in dict.fromkeys(claim.rows):
            if row in exempt:
                continue
            for chance_row, e_chance in chance.items():
                ok, text = beats_chance(claim, row, chance_row, estimates[row], e_chance, higher_is_better)
                if not ok:
                    failed = True
                    texts.append(text)
        if failed:
            verdict = AT_CHANCE
    stalled = [r for r in dict.fromkeys(claim.rows) if under_trained and r in under_trained]
    if stalled:
        verdict = UNDER_TRAINED
        texts += [f"{r} under-trained: {under_trained[r]}" for r in stalled]  # type: ignore[index]
    return Verdict(claim, verdict, tuple(texts))
