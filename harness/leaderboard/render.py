"""Leaderboard tables, claims and the HTML page, built from stored records only.

``build_suite`` reads ``<results>/<suite>/<row>/seed<k>.json`` and writes
``<out>/<suite>.md``, ``<out>/<suite>.csv`` and the suite's images under ``<out>/img/<suite>/``;
``write_index`` writes ``<out>/index.html`` over every suite built. Nothing here trains or
evaluates, and nothing depends on the clock or the machine, so rebuilding from the same records
gives the same bytes (the tables and the page; PNG bytes depend on the matplotlib version).

Aggregation over seeds and the claim verdicts: :mod:`harness.leaderboard.claims`.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.atomic import atomic_open
from harness.leaderboard.claims import Estimate, Verdict, converged, estimate, evaluate_claim
from harness.leaderboard.columns import COLUMNS, bpd_kind_conflicts, column_blocks, column_value
from harness.leaderboard.suite import LeaderboardSuite, Row
from harness.store.records import read_record

__all__ = ["SuiteResults", "build_suite", "collect", "render_csv", "render_markdown", "write_index", "write_suite"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class SuiteResults:
    """What a suite's tables are made of: records per row, estimates per row and column, verdicts."""

    suite: LeaderboardSuite
    records: dict[str, list[dict[str, Any]]]  # row id -> records, in seed order
    estimates: dict[str, dict[str, Estimate]]  # row id -> column -> estimate
    verdicts: tuple[Verdict, ...]
    images: tuple[tuple[str, str], ...] = ()  # (caption, file name under img/)
    under_trained: dict[str, dict[str, str]] = field(default_factory=dict)  # row -> column -> why


def collect(suite: LeaderboardSuite, results_dir: Path) -> SuiteResults:
    """Read the suite's records and aggregate every column over seeds; evaluate the claims."""
    records: dict[str, list[dict[str, Any]]] = {}
    for row in suite.rows:
        found = []
        for seed in row.seeds:
            path = Path(results_dir) / suite.name / row.id / f"seed{seed}.json"
            if path.is_file():
                record = read_record(path)  # validated (the error names the file) and migrated
                if record.get("leaderboard", {}).get("row") != row.id:
                    raise ValueError(f"{path} is not a record of row {row.id} of suite {suite.name}")
                found.append(record)
        if found:
            records[row.id] = found
    for col in suite.columns:
        mixed = bpd_kind_conflicts(col, records)
        if mixed:
            raise ValueError(f"suite {suite.name}: column {col!r} would mix kinds of bits/dim {mixed}; use the columns "
                             f"{', '.join(f'{col}_{k}' for k in sorted(set(mixed.values())))} instead")
    estimates: dict[str, dict[str, Estimate]] = {}
    for row_id, recs in records.items():
        per: dict[str, Estimate] = {}
        for col in suite.columns:
            vals = [column_value(r, col) for r in recs]
            if vals and all(v is not None for v in vals):
                blocks = column_blocks(recs[0], col) if len(recs) == 1 else None
                blocks_, examples, which = blocks if blocks else (None, None, None)
                per[col] = estimate([v[0] for v in vals], [v[1] for v in vals],  # type: ignore[index]
                                    blocks=blocks_, examples=examples, pair_key=which)
        estimates[row_id] = per
    under_trained = _convergence(suite, records, estimates)
    verdicts = []
    exempt = frozenset(r.id for r in suite.rows if r.role != "model")
    for claim in suite.claims:
        column = {r: e[claim.column] for r, e in estimates.items() if claim.column in e}
        chance = {r.id: column[r.id] for r in suite.rows if r.role == "chance" and r.id in column
                  and r.eval_dataset in {suite.row(x).eval_dataset for x in claim.rows}}
        # A row that failed its check on any claim column is under-trained for every claim on what
        # training learns; a claim on a cost column (timings, sizes) only sees the trained_if threshold.
        stalled = {r: "; ".join(why.values()) if not COLUMNS[claim.column].cost else why["*"]
                   for r, why in under_trained.items() if not COLUMNS[claim.column].cost or "*" in why}
        verdicts.append(evaluate_claim(claim, column, chance=chance, exempt=exempt,
                                       higher_is_better=COLUMNS[claim.column].higher_is_better, under_trained=stalled))
    return SuiteResults(suite=suite, records=records, estimates=estimates, verdicts=tuple(verdicts),
                        under_trained=under_trained)


def _convergence(suite: LeaderboardSuite, records: dict[str, list[dict[str, Any]]],
                 estimates: dict[str, dict[str, Estimate]]) -> dict[str, dict[str, str]]:
    """Row -> {column: why} for the claim columns on which a model row failed its convergence check
    (``claims.converged`` on the record of the checkpoint at 3/4 of the steps, or of the last phase with
    ``last_phase_start``), and {"*": why} for a ``trained_if``
    threshold it did not reach. Cost columns (timings, sizes) are not checked: they measure the machine and the
    configuration, not what training has learned."""
    claimed = {c.column for c in suite.claims if not COLUMNS[c.column].cost}
    out: dict[str, dict[str, str]] = {}
    for row in suite.rows:
        recs = records.get(row.id)
        if row.role != "model" or not recs:
            continue
        for col, threshold in row.trained_if.items():
            est = estimates.get(row.id, {}).get(col)
            better = COLUMNS[col].higher_is_better
            if est is None or (est.mean < threshold if better else est.mean > threshold):
                got = "not measured" if est is None else f"{est.mean:.4g}"
                out.setdefault(row.id, {})["*"] = f"{COLUMNS[col].label} {got}, needs {'≥' if better else '≤'} {threshold:g}"
        if not all("convergence" in r.get("leaderboard", {}) for r in recs):
            continue
        for col in sorted(claimed):
            final = [column_value(r, col) for r in recs]
            earlier = [column_value({**r, "metrics": r["leaderboard"]["convergence"]["metrics"]}, col) for r in recs]
            if any(v is None for v in final + earlier):
                continue
            ok, text = converged([v[0] for v in final], [v[0] for v in earlier], [v[1] for v in final])  # type: ignore[index]
            if not ok:
                step = recs[0]["leaderboard"]["convergence"]["step"]
                better = COLUMNS[col].higher_is_better
                change = sum(v[0] for v in final) - sum(v[0] for v in earlier)  # type: ignore[index]
                how = "" if better is None else " (improving)" if (change > 0) == better else \
                    " (getting worse: over-fitting or unstable)"
                out.setdefault(row.id, {})[col] = f"{COLUMNS[col].label} still moved after step {step}{how}: {text}"
    return out


# ----- number formatting ------------------------------------------------------------------------


def _num(x: float, digits: int = 4) -> str:
    if math.isfinite(x) and x == round(x) and abs(x) < 1e7:
        return str(int(round(x)))
    return f"{x:.{digits}g}"


def format_estimate(e: Estimate, bounds: tuple[float, float] | None = None) -> str:
    """mean ± CI half-width, or for a bounded column mean [lo, hi] (the interval inside the bounds),
    the numbers rounded to the second significant digit of the interval's half-width."""
    hw = e.half_width(CONFIDENCE)
    if not hw > 0:
        return _num(e.mean)
    lo, hi = e.interval(CONFIDENCE, bounds)
    width = (hi - lo) / 2 if bounds is not None else hw
    decimals = max(0, 1 - math.floor(math.log10(width))) if width > 0 else 9
    if decimals > 8:
        return f"{e.mean:.3g} [{lo:.2g}, {hi:.2g}]" if bounds is not None else f"{e.mean:.3g} ± {hw:.2g}"
    if bounds is not None:
        return f"{e.mean:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
    return f"{e.mean:.{decimals}f} ± {hw:.{decimals}f}"


def _header(col: str) -> str:
    c = COLUMNS[col]
    arrow = {True: " ↑", False: " ↓", None: ""}[c.higher_is_better]
    unit = f" ({c.unit})" if c.unit and c.unit != c.label else ""
    return f"{c.label}{unit}{arrow}"


def _protocol(row: Row, recs: list[dict[str, Any]]) -> str:
    """One line: training budget and the evaluation protocol, as recorded."""
    r = recs[0]
    train = r["leaderboard"]["train"]
    cfg = r["config"]
    parts = [f"trained {train['steps']} steps" + (f" from {row.init}" if row.init else "")]
    if row.reflow:
        parts.append(f"reflow on {row.reflow['pairs']} pairs from {row.reflow['from']}")
    feats = r.get("features") or {}
    parts.append(f"n={cfg['num_samples']}")
    if cfg.get("sampler") or cfg.get("steps"):
        steps = cfg.get("steps")
        parts.append(f"sampler {cfg.get('sampler') or 'default'}" + (f", {steps} step{'s' if steps != 1 else ''}" if steps else ""))
    if cfg.get("sample_options"):
        parts.append(", ".join(f"{k}={v}" for k, v in cfg["sample_options"]))
    if feats.get("name"):
        sha = feats.get("weights_sha256")
        parts.append(f"features {feats['name']}" + (f" (weights sha256 {sha[:12]})" if sha else ""))
    if "bpd" in r["metrics"]:
        b = r["metrics"]["bpd"]
        how = (f"PF-ODE, {b['solver']} rtol {b.get('rtol')} atol {b.get('atol')}, {b.get('estimator')} divergence"
               if b.get("solver") else "exact log-likelihood")
        parts.append(f"bpd: {how}" + (f"; {b['dequantization']}" if b.get("dequantization") else ""))
    if "iwae_bpd" in r["metrics"]:
        parts.append(f"IWAE k={r['metrics']['iwae_bpd']['num_importance']}")
    return "; ".join(parts)


# ----- Markdown and CSV -------------------------------------------------------------------------


INTERVAL_NOTE = (
    f"Mean ± half-width of the {CONFIDENCE:.0%} confidence interval, or mean [low, high] for a bounded quantity "
    "(fractions on the logit scale, distances, counts and rates on the log scale, so that the interval stays in "
    "range): Student t over seeds; with one seed, 1.96 × that run's standard error (half-sampling for sample "
    "metrics, over examples for likelihoods), which covers the evaluation examples' noise only, not training's. "
    "No interval: exact, or no spread recorded. –: not measured for that model. FD is the Fréchet distance in "
    "the feature space named in the protocol; it is FID only with inception-v3. Rows of role data (a fresh "
    "sample of the data) and chance (a sampler that knows only the data's moments, box or marginals) are "
    "evaluated like the models.")
REFERENCE_NOTE = (
    "Numbers as the seed documents print them (the source names the paper, the table and the seed note). They "
    "are on other data sets, networks and feature spaces, so they are compared with ours only through the "
    "claims below (orderings and ratios), never number to number.")
CLAIM_METHOD = (
    f"Computed from the rows above with {CONFIDENCE:.0%} confidence intervals (Welch t over seeds; one-seed "
    "likelihoods on the same test examples paired by block means; ratios on the log scale; equivalence "
    "(within a margin) by two one-sided tests at α = 0.05, i.e. the 90% interval): supported when the "
    "interval lies on the claimed side, not supported when it lies on the other side, inconclusive when it "
    "straddles; non-inferiority (worse by less than a margin) by the one-sided test at α = 0.05, the same 90% "
    "interval. A claim whose model rows do not all beat every chance row on its column is inconclusive (at "
    "chance); one naming a row that had not converged (any claim metric still moving over the last quarter of "
    "training, or a trained_if threshold missed) is inconclusive (under-trained), since an under-trained model "
    "is evidence neither for nor against the paper.")


def _protocol_rows(res: SuiteResults) -> tuple[list[str], list[list[str]]]:
    s = res.suite
    def check(row: Row) -> str:
        recs = res.records.get(row.id, [])
        if row.role != "model":
            from harness.models import MODELS

            if row.model in MODELS and MODELS.get(row.model).family == "reference":
                return f"{row.role} row: nothing optimised"
            return f"{row.role} row: exempt (a trained model in the {row.role} role is not checked)"
        why = res.under_trained.get(row.id)
        if why:
            return "under-trained: " + "; ".join(why.values())
        conv = [r.get("leaderboard", {}).get("convergence") for r in recs]
        if recs and all(conv):
            return f"converged: claim metrics agree between step {conv[0]['step']} and the end"
        return "not checked (no evaluation of an earlier checkpoint recorded)"

    return ["row", "training and evaluation", "convergence check"], [
        [row.label, _protocol(row, res.records[row.id]) if row.id in res.records else "not run", check(row)] for row in s.rows]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in esc[1:])]


def _our_rows(res: SuiteResults) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the table of our rows (shared by the Markdown and the HTML page)."""
    s = res.suite
    body = []
    for row in s.rows:
        est = res.estimates.get(row.id)
        cells = [(format_estimate(est[c], COLUMNS[c].bounds) if c in est else "–") if est else "not run" for c in s.columns]
        label = row.label + (" (under-trained)" if row.id in res.under_trained else "")
        body.append([label, row.model, str(len(res.records.get(row.id, []))), *cells])
    return ["row", "model", "seeds", *(_header(c) for c in s.columns)], body


PUBLISHED_HEADERS = {"fid": "FID (Inception-v3, published) ↓"}
"""Headers of published columns whose quantity differs from ours of the same key (our ``fid`` column is
the Fréchet distance in the row's own feature space)."""


def _reference_rows(s: LeaderboardSuite) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the published reference rows, over the columns any of them has."""
    cols = [c for c in COLUMNS if any(c in r.values for r in s.references)]
    body = [[r.label, r.source, r.dataset, *(r.printed.get(c, _num(r.values[c])) if c in r.values else "" for c in cols)]
            for r in s.references]
    return ["reference", "source", "data set", *(PUBLISHED_HEADERS.get(c, _header(c)) for c in cols)], body


def _data_line(s: LeaderboardSuite) -> str:
    """Which data the rows train and evaluate on (every pair the rows use)."""
    pairs = list(dict.fromkeys((r.train_dataset, r.eval_dataset) for r in s.rows))
    if len(pairs) == 1:
        return f"trained on `{pairs[0][0]}`, evaluated on `{pairs[0][1]}`"
    return "rows on " + ", ".join(f"`{t}` → `{e}`" for t, e in pairs) + " (trained → evaluated)"


def render_markdown(res: SuiteResults) -> str:
    s = res.suite
    lines = [f"# {s.title}", "", "<!-- generated by `genbench leaderboard`: do not edit; regenerate -->", ""]
    if s.description:
        lines += [s.description, ""]
    lines += [f"Suite `{s.name}` · {_data_line(s)} "
              f"· seeds {', '.join(map(str, s.seeds))}"
              + (f" · about {s.expected_minutes:g} min on 2 CPU cores" if s.expected_minutes else ""),
              "", "## Our runs", ""]
    lines += _table(*_our_rows(res))
    lines += ["", INTERVAL_NOTE, ""]
    lines += ["### Protocol", ""]
    lines += _table(*_protocol_rows(res))
    lines.append("")
    if s.references:
        lines += ["## Published reference rows", "", REFERENCE_NOTE, ""]
        lines += _table(*_reference_rows(s))
        lines.append("")
    if res.verdicts:
        lines += ["## Claims", "", CLAIM_METHOD, ""]
        lines += _table(["claim", "statement", "source", "verdict"],
                        [[v.claim.id, v.claim.statement, v.claim.source, f"**{v.verdict}**"] for v in res.verdicts])
        lines.append("")
        for v in res.verdicts:
            lines += [f"- **{v.claim.id}** ({COLUMNS[v.claim.column].label}): " + "; ".join(v.evidence)]
        lines.append("")
    if res.images:
        lines += ["## Figures", ""] + [f"- [{cap}](img/{name})" for cap, name in res.images] + [""]
    return "\n".join(lines)


def render_csv(res: SuiteResults) -> str:
    """One line per row (ours, then the references): mean and the 95% interval's ends per column."""
    import pandas as pd

    s = res.suite
    records = []
    for row in s.rows:
        est = res.estimates.get(row.id, {})
        rec: dict[str, Any] = {"suite": s.name, "kind": "ours", "row": row.id, "label": row.label, "model": row.model,
                               "dataset": row.eval_dataset, "source": "genbench", "seeds": len(res.records.get(row.id, []))}
        for c in s.columns:
            lo, hi = est[c].interval(CONFIDENCE, COLUMNS[c].bounds) if c in est else (None, None)
            rec[f"{c}_mean"] = est[c].mean if c in est else None
            rec[f"{c}_ci95_lo"], rec[f"{c}_ci95_hi"] = lo, hi
        records.append(rec)
    for r in s.references:
        rec = {"suite": s.name, "kind": "published", "row": "", "label": r.label, "model": "", "dataset": r.dataset,
               "source": r.source, "seeds": None}
        for c in s.columns:
            rec[f"{c}_mean"] = None if c in PUBLISHED_HEADERS else r.values.get(c)
            rec[f"{c}_ci95_lo"] = rec[f"{c}_ci95_hi"] = None
        rec["published_fid"] = r.values.get("fid")
        records.append(rec)
    buf = io.StringIO()
    pd.DataFrame.from_records(records).to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


# ----- figures ----------------------------------------------------------------------------------


def _savefig(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    with atomic_open(path) as handle:
        handle.write(buf.getvalue())


def _image_grid(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] uint8 -> one [rows*H, cols*W(, C)] uint8 mosaic with 1-pixel gaps."""
    n, c, h, w = x.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = x[i].transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def _errbar(e: Estimate, column: str) -> list[list[float]]:
    """matplotlib's [[below], [above]] error of the column's interval (inside its bounds)."""
    lo, hi = e.interval(CONFIDENCE, COLUMNS[column].bounds)
    return [[e.mean - lo], [hi - e.mean]]


def _figures(res: SuiteResults, results_dir: Path, img_dir: Path) -> tuple[tuple[str, str], ...]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    s = res.suite
    out: list[tuple[str, str]] = []
    cols = set(s.columns)
    plots = [(x, y, f"{COLUMNS[y].label} vs {COLUMNS[x].label}") for x, y in
             (("nfe_mean", "fid"), ("nfe_mean", "mmd2"), ("nfe_mean", "sw2"), ("recall", "precision"), ("bpd_nfe", "bpd"),
              ("straightness", "fid"), ("straightness", "mmd2"), ("guidance_scale", "fid"), ("guidance_scale", "precision"),
              ("guidance_scale", "recall"), ("guidance_scale", "class_accuracy"))
             if x in cols and y in cols and sum(x in e and y in e for e in res.estimates.values()) >= 2]
    for x, y, title in plots:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        groups: dict[str | None, list[tuple[float, float]]] = {}
        sizes: dict[str | None, int] = {}
        for row in s.rows:
            if x in res.estimates.get(row.id, {}) and y in res.estimates.get(row.id, {}):
                sizes[row.group] = sizes.get(row.group, 0) + 1
        for row in s.rows:
            est = res.estimates.get(row.id, {})
            if x in est and y in est:
                ex, ey = est[x], est[y]
                ax.errorbar(ex.mean, ey.mean, xerr=_errbar(ex, x), yerr=_errbar(ey, y), fmt="o", ms=4, capsize=2)
                if row.group is None or sizes[row.group] == 1:  # a group's curve is named in the legend
                    ax.annotate(row.id, (ex.mean, ey.mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
                groups.setdefault(row.group, []).append((ex.mean, ey.mean))
        for group, pts in groups.items():
            if group is not None and len(pts) > 1:
                pts.sort()
                ax.plot(*zip(*pts), "-", lw=1, alpha=0.6, label=group)
        if any(g is not None and len(p) > 1 for g, p in groups.items()):
            ax.legend(fontsize=7)
        for axis, key in (("x", x), ("y", y)):
            means = [e[key].mean for e in res.estimates.values() if key in e]
            if means and min(means) > 0 and max(means) / min(means) > 50:
                getattr(ax, f"set_{axis}scale")("log")
        ax.set_xlabel(_header(x))
        ax.set_ylabel(_header(y))
        ax.set_title(f"{s.title}: {title}", fontsize=9)
        ax.grid(alpha=0.3)
        name = f"{s.name}/{y}-vs-{x}.png"
        _savefig(fig, img_dir / name)
        plt.close(fig)
        out.append((title, name))
    for row in s.rows:
        path = Path(results_dir) / s.name / row.id / f"seed{row.seeds[0]}.samples.npz"
        if not path.is_file():
            continue
        with np.load(path) as f:
            x = f["samples"]
        name = f"{s.name}/{row.id}-samples.png"
        if x.ndim == 4:
            buf = io.BytesIO()
            grid = Image.fromarray(_image_grid(x))
            grid = grid.resize((grid.width * 2, grid.height * 2), resample=Image.NEAREST)
            grid.save(buf, format="PNG")
            with atomic_open(img_dir / name) as handle:
                handle.write(buf.getvalue())
        elif x.ndim == 2 and x.shape[1] == 2:
            from harness.datasets import load_dataset

            ref = load_dataset(row.eval_dataset, num_samples=len(x)).x
            fig, ax = plt.subplots(figsize=(3.0, 3.0))
            ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.75", lw=0, label=f"data ({row.eval_dataset})")
            ax.scatter(x[:, 0], x[:, 1], s=1.5, c="tab:blue", alpha=0.6, lw=0, label=f"{len(x)} samples")
            ax.legend(fontsize=6, loc="upper right", markerscale=4)
            ax.set_title(row.label, fontsize=8)
            ax.set_aspect("equal", "datalim")
            ax.tick_params(labelsize=6)
            _savefig(fig, img_dir / name)
            plt.close(fig)
        else:
            continue
        out.append((f"samples: {row.label}", name))
    return tuple(out)


# ----- HTML -------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}.supported{color:#116611;font-weight:bold}.not-supported{color:#aa1111;font-weight:bold}
.inconclusive{color:#886600;font-weight:bold}figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:12px;color:#555}img{max-width:520px}.note{font-size:12px;color:#555}nav a{margin-right:1em}"""


def _html_table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    cell = (lambda x: x) if raw else html.escape
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _suite_html(res: SuiteResults) -> str:
    s = res.suite
    parts = [f'<section id="{s.name}"><h2>{html.escape(s.title)}</h2>']
    if s.description:
        parts.append(f"<p>{html.escape(s.description)}</p>")
    parts.append(f'<p class="note">suite <code>{s.name}</code>; {html.escape(_data_line(s))}; tables: <a href="{s.name}.md">{s.name}.md</a>, '
                 f'<a href="{s.name}.csv">{s.name}.csv</a></p>')
    parts.append(_html_table(*_our_rows(res)))
    parts.append(f'<p class="note">{html.escape(INTERVAL_NOTE)}</p>')
    parts.append("<h3>Protocol</h3>")
    parts.append(_html_table(*_protocol_rows(res)))
    if s.references:
        parts.append("<h3>Published reference rows</h3>")
        parts.append(f'<p class="note">{html.escape(REFERENCE_NOTE)}</p>')
        parts.append(_html_table(*_reference_rows(s)))
    if res.verdicts:
        parts.append("<h3>Claims</h3>")
        parts.append(f'<p class="note">{html.escape(CLAIM_METHOD)}</p>')
        rows = [[html.escape(v.claim.id), html.escape(v.claim.statement), html.escape(v.claim.source),
                 f'<span class="{v.verdict.split(" (")[0].replace(" ", "-")}">{html.escape(v.verdict)}</span>', html.escape("; ".join(v.evidence))]
                for v in res.verdicts]
        parts.append(_html_table(["claim", "statement", "source", "verdict", "evidence"], rows, raw=True))
    if res.images:
        parts.append("<h3>Figures</h3><div>")
        parts += [f'<figure><img src="img/{name}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption></figure>'
                  for cap, name in res.images]
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def write_index(results: list[SuiteResults], out_dir: Path) -> Path:
    """``index.html``: every suite's tables, claims and figures on one page."""
    nav = " ".join(f'<a href="#{r.suite.name}">{html.escape(r.suite.title)}</a>' for r in results)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>genbench leaderboards</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>genbench leaderboards</h1>\n"
            "<p class=\"note\">Generated by <code>genbench leaderboard</code> from the records in <code>results/</code>; "
            "do not edit. Rebuild without training: <code>genbench leaderboard --from-results</code>.</p>\n"
            f"<nav>{nav}</nav>\n" + "\n".join(_suite_html(r) for r in results) + "\n</body></html>\n")
    path = Path(out_dir) / "index.html"
    with atomic_open(path) as handle:
        handle.write(page.encode("utf-8"))
    return path


def build_suite(suite: LeaderboardSuite, results_dir: Path, out_dir: Path, *, figures: bool = True) -> SuiteResults:
    """Write ``<out>/<suite>.md``, ``.csv`` and its figures; return what was built (for the index)."""
    return write_suite(collect(suite, results_dir), results_dir, out_dir, figures=figures)


def write_suite(res: SuiteResults, results_dir: Path, out_dir: Path, *, figures: bool = True) -> SuiteResults:
    """Write the tables and figures of collected results (:func:`collect`); return them with their figures."""
    suite = res.suite
    if figures:
        import shutil

        shutil.rmtree(Path(out_dir) / "img" / suite.name, ignore_errors=True)  # no stale figures
        res = dataclasses.replace(res, images=_figures(res, results_dir, Path(out_dir) / "img"))
    for ext, text in (("md", render_markdown(res)), ("csv", render_csv(res))):
        with atomic_open(Path(out_dir) / f"{suite.name}.{ext}") as handle:
            handle.write(text.encode("utf-8"))
    return res
