"""Leaderboards: the claim evaluator, suite validation, a tiny end-to-end run, and the byte-exact
rebuild of the committed tables from the committed records."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.leaderboard.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Estimate, estimate, evaluate_claim
from harness.leaderboard.execute import difference, reproduces
from harness.leaderboard.render import build_suite, collect, format_estimate, write_index
from harness.leaderboard.suite import leaderboard_suite_names, load_leaderboard_suite

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


# ----- claim evaluator (pure) -------------------------------------------------------------------


def _claim(kind: str, rows=("a", "b"), **kw) -> Claim:
    return Claim(id="c", statement="s", source="src", column="fid", kind=kind, rows=tuple(rows), **kw)


def test_estimate_over_seeds_uses_t_and_one_seed_uses_its_stderr():
    e = estimate([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.df == 2 and e.se == pytest.approx(1 / math.sqrt(3))
    assert e.half_width() == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t_{2, 0.975}
    one = estimate([5.0], [0.5])
    assert one.df == math.inf and one.half_width() == pytest.approx(1.959964 * 0.5, rel=1e-6)
    assert estimate([7.0]).half_width() == 0.0  # no spread recorded: exact
    assert format_estimate(estimate([1.0, 1.1, 0.9])) == "1.00 ± 0.25"


@pytest.mark.parametrize(("a", "b", "verdict"), [
    ([1.0, 1.1, 0.9], [5.0, 5.1, 4.9], SUPPORTED),
    ([5.0, 5.1, 4.9], [1.0, 1.1, 0.9], NOT_SUPPORTED),
    ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], INCONCLUSIVE),
])
def test_less_gives_the_three_verdicts(a, b, verdict):
    v = evaluate_claim(_claim("less"), {"a": estimate(a), "b": estimate(b)})
    assert v.verdict == verdict, v.evidence
    flipped = evaluate_claim(_claim("greater"), {"a": estimate(a), "b": estimate(b)})
    assert flipped.verdict == {SUPPORTED: NOT_SUPPORTED, NOT_SUPPORTED: SUPPORTED, INCONCLUSIVE: INCONCLUSIVE}[verdict]


def test_chain_ratio_within_exact_and_missing():
    est = {"a": estimate([1.0, 1.1, 0.9]), "b": estimate([2.0, 2.1, 1.9]), "c": estimate([3.0, 3.1, 2.9])}
    assert evaluate_claim(_claim("less", rows=("a", "b", "c")), est).verdict == SUPPORTED
    assert evaluate_claim(_claim("less", rows=("a", "c", "b")), est).verdict == NOT_SUPPORTED
    nfe = {"ddpm": Estimate(274.0, 0.0, math.inf, 1), "fm": Estimate(142.0, 0.0, math.inf, 1)}
    assert evaluate_claim(_claim("ratio", rows=("ddpm", "fm"), at_least=1.5), nfe).verdict == SUPPORTED  # 1.93
    assert evaluate_claim(_claim("ratio", rows=("ddpm", "fm"), at_least=2.0), nfe).verdict == NOT_SUPPORTED
    noisy = {"n": estimate([270.0, 280.0, 250.0]), "d": estimate([140.0, 150.0, 170.0])}
    assert evaluate_claim(_claim("ratio", rows=("n", "d"), at_least=1.7), noisy).verdict == INCONCLUSIVE
    close = {"a": estimate([1.00, 1.01, 0.99]), "b": estimate([1.00, 1.02, 0.98])}
    assert evaluate_claim(_claim("within", margin=0.1), close).verdict == SUPPORTED
    assert evaluate_claim(_claim("within", margin=0.1), est).verdict == NOT_SUPPORTED
    assert evaluate_claim(_claim("within", margin=0.02), close).verdict == INCONCLUSIVE
    missing = evaluate_claim(_claim("less"), {"a": est["a"]})
    assert missing.verdict == INCONCLUSIVE and "no results for b" in missing.evidence[0]


# ----- suite files ------------------------------------------------------------------------------

GOOD = """
name: tiny
title: tiny
dataset: {train: moons-train, eval: moons-test}
seeds: [0, 1]
defaults:
  train: {steps: 30, batch_size: 64, num_train: 500}
  eval: {metrics: [fid, prdc, nfe, straightness], num_samples: 150, feature_extractor: identity, bootstrap: 0}
columns: [fid, recall, straightness, nfe_mean]
rows:
  - {id: fm, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, eval: {sampler: euler, steps: 4}}
  - {id: fm8, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, eval: {sampler: euler, steps: 8}}
  - {id: ft, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, init: fm, train: {steps: 10}, seeds: [0]}
references:
  - {label: paper, source: "A et al., Table 1", dataset: CIFAR-10, values: {fid: 3.0}}
claims:
  - {id: fewer, statement: fewer steps, source: test, column: nfe_mean, less: [fm, fm8]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (("title: tiny", "title: tiny\ncolour: red"), r"unknown key\(s\) \['colour'\]"),
    (("model: fm-ot, model_args", "model: fm-oot, model_args"), "fm-oot.*Did you mean .fm-ot"),
    (("metrics: [fid, prdc, nfe, straightness]", "metrics: [fid, fidd]"), "unknown metric 'fidd'"),
    (("columns: [fid, recall, straightness, nfe_mean]", "columns: [fid, recal]"), r"unknown column\(s\) \['recal'\]"),
    (("less: [fm, fm8]", "less: [fm, fm9]"), r"unknown row\(s\) \['fm9'\]"),
    (("column: nfe_mean, less", "column: precision, less"), "not one of the suite's columns"),
    (("eval: {sampler: euler, steps: 4}", "eval: {sampler: euler, stepz: 4}"), "stepz"),
    (("eval: {sampler: euler, steps: 4}", "eval: {seed: 3}"), "set by the leaderboard"),
    (("train: {steps: 30,", "train: {steps: 0,"), "steps must be a positive int"),
    (("{id: fm, model", "{id: fm, init: fm8, model"), "init 'fm8' must name an earlier row"),
    (("less: [fm, fm8]", "ratio: [fm, fm8]"), "ratio needs at_least"),
    (("train: {steps: 10}, seeds: [0]", "train: {steps: 10}, seeds: [0, 5]"), r"starts from row fm, which has no seed\(s\) \[5\]"),
])
def test_suite_errors_name_the_problem(tmp_path, edit, message):
    load_leaderboard_suite(_write(tmp_path, GOOD))  # the unedited file is valid
    with pytest.raises(ValueError, match=message):
        load_leaderboard_suite(_write(tmp_path, GOOD.replace(*edit)))


def test_every_built_in_suite_loads():
    names = leaderboard_suite_names()
    assert "quick" in names
    for name in names:
        suite = load_leaderboard_suite(name)
        assert suite.rows and suite.columns


# ----- records -> tables ------------------------------------------------------------------------


def _record(row: str, seed: int, fid: float, nfe: float) -> dict:
    return {"schema": "genbench.record/2", "kind": "eval", "run": {}, "skipped": {},
            "leaderboard": {"row": row, "seed": seed, "train": {"steps": 1}}, "config": {"num_samples": 10},
            "metrics": {"fid": {"value": fid, "uncertainty": {"std": 0.01}}, "nfe_mean": {"value": nfe}},
            "data": {"dataset": {"shape": [10, 2]}}, "model": {"parameters": 3}}


@pytest.mark.parametrize(("fm", "fm8", "verdict"), [
    ([1.0, 1.1], [3.0, 3.1], SUPPORTED), ([3.0, 3.1], [1.0, 1.1], NOT_SUPPORTED), ([1.0, 3.0], [1.5, 2.5], INCONCLUSIVE),
])
def test_claim_verdicts_from_synthetic_records(tmp_path, fm, fm8, verdict):
    text = GOOD.replace("column: nfe_mean, less", "column: fid, less")
    suite = load_leaderboard_suite(_write(tmp_path, text))
    for row, values in (("fm", fm), ("fm8", fm8)):
        for seed, value in enumerate(values):
            path = tmp_path / "results" / "tiny" / row / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_record(row, seed, value, 4.0)))
    res = collect(suite, tmp_path / "results")
    assert res.verdicts[0].verdict == verdict


def test_tiny_suite_end_to_end_resumes_and_rebuilds_identically(tmp_path, capsys):
    suite_path = _write(tmp_path, GOOD)
    args = ["leaderboard", "--suite", str(suite_path), "--results", str(tmp_path / "results"),
            "--out", str(tmp_path / "lb"), "--work-dir", str(tmp_path / "work")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("tiny/") == 5  # 2 rows x 2 seeds + 1, one log line each
    records = sorted((tmp_path / "results" / "tiny").rglob("seed*.json"))
    assert len(records) == 5
    checkpoints = list((tmp_path / "work" / "checkpoints").glob("*.pt"))
    assert len([p for p in checkpoints if ".step" not in p.name]) == 3  # fm and fm8 share one model per seed
    assert len([p for p in checkpoints if ".step" in p.name]) == 3  # and each its half-way checkpoint
    ft = json.loads((tmp_path / "results" / "tiny" / "ft" / "seed0.json").read_text())["leaderboard"]["train"]
    assert ft["init"] == "fm" and ft["steps"] == 10
    rec = json.loads(records[0].read_text())
    assert rec["leaderboard"]["train"]["steps"] == 30 and rec["metrics"]["nfe_mean"]["value"] in (4.0, 8.0)
    assert rec["metrics"]["straightness"]["value"] > 0
    assert rec["leaderboard"]["convergence"]["step"] == 22 and "fid" in rec["leaderboard"]["convergence"]["metrics"]
    md = (tmp_path / "lb" / "tiny.md").read_text()
    assert "| fm | fm-ot | 2 |" in md and "**supported**" in md and "A et al., Table 1" in md
    # a rerun trains and evaluates nothing, and rebuilding from the records gives the same bytes
    before = {p: p.read_bytes() for p in (tmp_path / "lb").glob("*.*")}
    assert main(args) == 0
    assert "tiny/" not in capsys.readouterr().err
    assert main([*args[:3], "--from-results", *args[3:7]]) == 0
    assert {p: p.read_bytes() for p in (tmp_path / "lb").glob("*.*")} == before
    # a fresh work folder with the records kept: rerunning the fine-tuned row trains the row it starts from first
    shutil.rmtree(tmp_path / "work")
    (tmp_path / "results" / "tiny" / "ft" / "seed0.json").unlink()
    assert main([*args, "--rows", "ft"]) == 0
    assert capsys.readouterr().err.count("tiny/") == 1
    assert len([p for p in (tmp_path / "work" / "checkpoints").glob("*.pt") if ".step" not in p.name]) == 2
    assert (tmp_path / "lb" / "img" / "tiny" / "fm-samples.png").is_file()


def test_a_teacher_row_hands_its_checkpoint_to_the_distilled_row(tmp_path, capsys):
    """``teacher: ROW`` trains that row first and passes its checkpoint as ``teacher_checkpoint``; the
    distilled row's key depends on the teacher's, and a teacher that is not an earlier row is refused."""
    from harness.checkpoint import load_checkpoint
    from harness.leaderboard.execute import train_keys

    text = GOOD.replace("  - {id: ft,", "  - {id: cd, model: consistency-cd, model_args: {hidden: 16, depth: 1, time_dim: 8, "
                        "num_scales: 4}, teacher: fm, seeds: [0], eval: {steps: 2, metrics: [fid, prdc, nfe]}}\n  - {id: ft,")
    suite = load_leaderboard_suite(_write(tmp_path, text))
    assert suite.row("cd").upstream == ("fm",)
    keys = train_keys(suite, 0)
    other = load_leaderboard_suite(_write(tmp_path, text.replace("teacher: fm,", "teacher: fm8,")))
    assert train_keys(other, 0)["cd"] == keys["cd"]  # fm and fm8 are one trained model
    longer = load_leaderboard_suite(_write(tmp_path, text.replace("{id: fm, model: fm-ot,", "{id: fm, model: fm-ot, train: {steps: 31},")))
    assert train_keys(longer, 0)["cd"] != keys["cd"]
    with pytest.raises(ValueError, match="teacher 'ft' must name an earlier row"):
        load_leaderboard_suite(_write(tmp_path, text.replace("teacher: fm,", "teacher: ft,")))
    args = ["leaderboard", "--suite", str(_write(tmp_path, text)), "--results", str(tmp_path / "results"),
            "--out", str(tmp_path / "lb"), "--work-dir", str(tmp_path / "work"), "--rows", "cd"]
    assert main(args) == 0
    record = json.loads((tmp_path / "results" / "tiny" / "cd" / "seed0.json").read_text())
    assert record["leaderboard"]["train"]["teacher"] == "fm"
    ckpt = load_checkpoint(tmp_path / "work" / "checkpoints" / f"{keys['cd']}.pt")
    assert Path(ckpt.config["teacher_checkpoint"]).name == f"{keys['fm']}.pt"


def test_a_rerun_that_reproduces_a_record_keeps_the_stored_file(tmp_path, capsys):
    """A fresh clone has the records and no checkpoints: rerunning retrains and re-evaluates, and a
    record whose metrics and protocol it reproduces stays byte for byte (a clean checkout); only
    --rewrite-records writes it anew."""
    suite_path = _write(tmp_path, GOOD)
    args = ["leaderboard", "--suite", str(suite_path), "--results", str(tmp_path / "results"),
            "--out", str(tmp_path / "lb"), "--work-dir", str(tmp_path / "work"), "--rows", "fm"]
    assert main(args) == 0
    record = tmp_path / "results" / "tiny" / "fm" / "seed0.json"
    samples = record.with_name("seed0.samples.npz")
    before = {p: p.read_bytes() for p in (record, samples)}
    shutil.rmtree(tmp_path / "work")
    assert main(args) == 0
    assert capsys.readouterr().err.count("reproduces the stored record, kept") == 2
    assert {p: p.read_bytes() for p in (record, samples)} == before
    shutil.rmtree(tmp_path / "work")
    assert main([*args, "--rewrite-records"]) == 0
    assert record.read_bytes() != before[record] and "kept" not in capsys.readouterr().err
    new = json.loads(record.read_text())
    assert reproduces(json.loads(before[record]), new)
    assert len(new["leaderboard"]["train"]["weights_sha256"]) == 64 == len(new["model"]["weights_sha256"])


def test_what_reproduces_a_record():
    base = {"run": {"id": "a", "wall_time_s": 1.0, "versions": {"torch": "2.14.1"}},
            "config": {"checkpoint": "/a/x.pt", "num_samples": 100},
            "model": {"config": {"couplings": "/a/couplings/k1.npz"}},
            "metrics": {"fid": {"value": 1.5, "n": 100}, "samples_per_s": {"value": 10.0}},
            "leaderboard": {"train": {"checkpoint_sha256": "aa", "wall_time_s": 3.0}}}
    run_only = {"run": {"id": "b", "wall_time_s": 2.0, "versions": {"torch": "2.14.1"}},
                "config": {"checkpoint": "/b/x.pt", "num_samples": 100},
                "model": {"config": {"couplings": "rel/couplings/k1.npz"}},
                "metrics": {"fid": {"value": 1.5 * (1 + 1e-12), "n": 100}, "samples_per_s": {"value": 99.0}},
                "leaderboard": {"train": {"checkpoint_sha256": "bb", "wall_time_s": 9.0, "torch_threads": 1}}}
    base["leaderboard"]["train"]["torch_threads"] = 2
    assert reproduces(base, run_only)
    moved = json.loads(json.dumps(run_only))
    moved["metrics"]["fid"]["value"] = 1.5 * (1 + 1e-7)
    assert not reproduces(base, moved)
    assert difference(base, moved).startswith("/metrics/fid/value: 1.5 vs 1.50000")
    protocol = json.loads(json.dumps(run_only))
    protocol["config"]["num_samples"] = 200
    assert not reproduces(base, protocol)
    newer = json.loads(json.dumps(run_only))
    newer["run"]["versions"]["torch"] = "2.15.0"
    assert not reproduces(base, newer)
    extra = json.loads(json.dumps(run_only))
    extra["metrics"]["kid_mean"] = {"value": 0.1}
    assert not reproduces(base, extra)
    assert difference(base, extra) == "/metrics/{kid_mean} (present in one only)"
    other_couplings = json.loads(json.dumps(run_only))
    other_couplings["model"]["config"]["couplings"] = "/a/couplings/k2.npz"  # another content key
    assert not reproduces(base, other_couplings)


def test_committed_tables_rebuild_byte_for_byte_from_committed_results(tmp_path):
    """`genbench leaderboard --from-results` reproduces leaderboards/*.md, *.csv and index.html exactly."""
    built = []
    for name in leaderboard_suite_names():
        built.append(build_suite(load_leaderboard_suite(name), ROOT / "results", tmp_path))
    write_index(built, tmp_path)
    committed = ROOT / "leaderboards"
    for name in [*(f"{n}.{ext}" for n in leaderboard_suite_names() for ext in ("md", "csv")), "index.html"]:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), f"{name} differs from the committed file"
    # every figure the tables link to exists in the committed tree
    linked = {line.split("](img/")[1].rstrip(")") for n in leaderboard_suite_names()
              for line in (committed / f"{n}.md").read_text().splitlines() if "](img/" in line}
    missing = [f for f in linked if not (committed / "img" / f).is_file()]
    assert not missing, missing
    shutil.rmtree(tmp_path)


def test_written_tables_mark_every_under_trained_row(tmp_path):
    """The rows whose convergence check failed (``collect``) are labelled so in the table written with
    its figures, and their protocol line says why."""
    suite = load_leaderboard_suite("gan-objectives-2d")
    stalled = collect(suite, ROOT / "results").under_trained
    assert stalled, "the committed GAN rows miss their trained_if threshold: the check has something to find"
    build_suite(suite, ROOT / "results", tmp_path)
    text = (tmp_path / f"{suite.name}.md").read_text()
    for row_id, why in stalled.items():
        label = suite.row(row_id).label
        assert f"| {label} (under-trained) |" in text
        assert f"| under-trained: {'; '.join(why.values())} |" in text


def test_convergence_check_skips_cost_columns_and_says_which_way_a_row_moved(tmp_path):
    """A row's speed at 3/4 of training says nothing about whether it converged: a tenfold change of
    samples/s between the checkpoints flags nothing, while a change of a learned column does, and the
    reason says whether the row was still improving or getting worse (over-fitting)."""
    from harness.leaderboard.columns import COLUMNS

    assert COLUMNS["samples_per_s"].cost and COLUMNS["train_step_ms"].cost and not COLUMNS["elbo_bpd"].cost
    suite = load_leaderboard_suite("ncp-vae")
    shutil.copytree(ROOT / "results" / suite.name, tmp_path / suite.name)
    for key, scale in (("samples_per_s", 10.0), ("high_quality_fraction", 0.1), ("high_quality_fraction", 4.0)):
        for path in (tmp_path / suite.name / "ncp-m500").glob("seed*.json"):
            rec = json.loads(path.read_text())
            earlier = rec["leaderboard"]["convergence"]["metrics"]
            earlier[key]["value"] = rec["metrics"][key]["value"] * scale
            path.write_text(json.dumps(rec))
        why = collect(suite, tmp_path).under_trained.get("ncp-m500", {})
        assert "samples_per_s" not in why
        if key == "high_quality_fraction":
            moved = "(improving)" if scale < 1 else "(getting worse: over-fitting or unstable)"
            assert f"high-quality fraction still moved after step {rec['leaderboard']['convergence']['step']} {moved}" \
                in why[key]


def test_a_row_under_trained_on_one_claim_metric_is_under_trained_for_every_claim_but_cost_ones():
    """The committed D3PM rows stopped moving on FD but not on the ELBO: they are under-trained models,
    so the FD claim naming them is no evidence either way; SI-b (a timing ratio) names the
    under-trained trigonometric interpolant and is still decided, since cost says nothing of training."""
    d3pm = collect(load_leaderboard_suite("d3pm"), ROOT / "results")
    fd_only = {r for r, why in d3pm.under_trained.items() if "fid" not in why}
    assert fd_only >= {"uniform", "absorbing"}, d3pm.under_trained
    verdict = {v.claim.id: v for v in d3pm.verdicts}["D3PM-a-fd"]
    assert verdict.verdict == "inconclusive (under-trained)" and "uniform under-trained: ELBO" in "; ".join(verdict.evidence)
    si = collect(load_leaderboard_suite("interpolants"), ROOT / "results")
    assert "si-trig" in si.under_trained
    assert {v.claim.id: v.verdict for v in si.verdicts}["SI-b"] == "supported"


def test_last_phase_start_must_leave_a_checkpoint_inside_the_phase(tmp_path):
    def suite(train):
        path = tmp_path / "t.yaml"
        path.write_text(json.dumps({"name": "t", "title": "t", "description": "t", "seeds": [0], "columns": ["fid"],
                                    "dataset": {"train": "moons-train", "eval": "moons-test"},
                                    "rows": [{"id": "a", "model": "vq-vae", "train": train}]}))
        return load_leaderboard_suite(path)

    assert suite({"steps": 4000, "last_phase_start": 3000}).row("a").train["last_phase_start"] == 3000
    # the committed vq-vae rows train their prior from step 3000 of 4000: checked at 3000 + 3/4 of 1000
    records = [json.loads(p.read_text()) for p in (ROOT / "results" / "vq-vae" / "vq-k32").glob("seed*.json")]
    assert records and {r["leaderboard"]["convergence"]["step"] for r in records} == {3750}
    with pytest.raises(ValueError, match="last_phase_start=3998 needs steps of at least last_phase_start"):
        suite({"steps": 4000, "last_phase_start": 3998})


def test_derived_columns_from_a_record():
    from harness.leaderboard.columns import column_value

    record = {"data": {"dataset": {"shape": [500, 1, 28, 28]}}, "model": {"parameters": 7},
              "metrics": {"elbo_bpd": {"value": 0.2, "stderr": 0.01}, "iwae_bpd": {"value": 0.19, "stderr": 0.01},
                          "kl_active_dims": {"value": 2, "kl_per_dim": [3.0, 1.0, 0.05]}}}
    nats = 784 * math.log(2)
    assert column_value(record, "elbo_nll_nats") == pytest.approx((0.2 * nats, 0.01 * nats))
    assert column_value(record, "iwae_nll_nats")[0] == pytest.approx(0.19 * nats)
    assert column_value(record, "kl_nats") == (pytest.approx(4.05), None)
    assert column_value(record, "kl_per_dim")[0] == pytest.approx(1.35)
    assert column_value(record, "recon_nats")[0] == pytest.approx(0.2 * nats - 4.05)
    assert column_value(record, "parameters") == (7.0, None)
    assert column_value(record, "bpd_nll_nats") is None and column_value(record, "fid") is None
    assert column_value(record, "guidance_scale") is None  # no guided sampling recorded
    guided = {**record, "config": {"sample_options": [["guidance", 1.5], ["other", 3]]}}
    assert column_value(guided, "guidance_scale") == (1.5, None)


def test_bits_per_dim_of_grey_level_data_is_its_own_kind():
    from harness.leaderboard.columns import COLUMNS, bpd_kind, column_value
    # the dequantization fields metrics.likelihood records for K = 4 and K = 256 levels
    entry = {"value": 1.1, "stderr": 0.01, "dequantization": "none: 4 grey levels, level = round(pixel * 3 / 255)"}
    assert bpd_kind(entry) == "discrete"
    assert bpd_kind({"dequantization": "none: integer levels 0..255"}) == "discrete"
    assert "elbo_bpd_discrete" in COLUMNS
    record = {"metrics": {"elbo_bpd": entry}}
    assert column_value(record, "elbo_bpd_discrete") == (1.1, 0.01)
    assert column_value(record, "elbo_bpd_dequantized") is None


def test_single_seed_rows_on_the_same_examples_are_paired_by_block_means():
    # a hard and an easy half of the test set shared by both rows: the per-row standard errors are large,
    # but row a is better than row b on every block by 0.5
    blocks_b = [10.0 + (5.0 if j % 2 else -5.0) + 0.1 * j for j in range(20)]
    blocks_a = [x - 0.5 + 0.1 * ((7 * j) % 3 - 1) for j, x in enumerate(blocks_b)]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    a = estimate([mean(blocks_a)], [2.0], examples=400, blocks=blocks_a, pair_key="same rows")
    b = estimate([mean(blocks_b)], [2.0], examples=400, blocks=blocks_b, pair_key="same rows")
    paired = evaluate_claim(_claim("less"), {"a": a, "b": b})
    assert paired.verdict == SUPPORTED and "paired" in paired.evidence[0]
    other_rows = estimate([mean(blocks_a)], [2.0], examples=400, blocks=blocks_a, pair_key="other rows")
    assert evaluate_claim(_claim("less"), {"a": other_rows, "b": b}).verdict == INCONCLUSIVE


# ----- evidence rules: chance, convergence, bounded intervals, TOST ------------------------------


def test_a_claim_between_rows_at_chance_is_not_evidence():
    from harness.leaderboard.claims import AT_CHANCE

    good, bad = estimate([10.0, 11.0, 12.0]), estimate([5.0, 5.5, 6.0])
    chance = {"blob": estimate([10.5, 11.0, 11.5])}
    claim = _claim("greater")
    assert evaluate_claim(claim, {"a": good, "b": bad}, higher_is_better=True).verdict == SUPPORTED
    v = evaluate_claim(claim, {"a": good, "b": bad}, chance=chance, higher_is_better=True)
    assert v.verdict == AT_CHANCE and any("a" in t and "does not beat chance" in t for t in v.evidence)
    # ... the rule also holds against "not supported": rows that did not train are not evidence against
    v = evaluate_claim(_claim("less"), {"a": good, "b": bad}, chance=chance, higher_is_better=True)
    assert v.verdict == AT_CHANCE
    better = {"a": estimate([20.0, 21.0, 22.0]), "b": estimate([15.0, 15.5, 16.0])}
    assert evaluate_claim(claim, better, chance=chance, higher_is_better=True).verdict == SUPPORTED
    # data and chance rows themselves are exempt
    assert evaluate_claim(claim, better | {"blob": chance["blob"]}, chance=chance, higher_is_better=True,
                          exempt=frozenset({"blob"})).verdict == SUPPORTED


def test_a_claim_naming_an_under_trained_row_is_inconclusive_never_not_supported():
    from harness.leaderboard.claims import UNDER_TRAINED, converged

    ok, _ = converged([1.0, 1.1, 0.9, 1.05], [1.02, 1.08, 0.93, 1.0])
    moving, text = converged([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.95, 2.0])
    assert ok and not moving and "2 x the spread of a run" in text
    # one seed: the spread of a run is its standard error
    assert converged([1.0], [1.5], [0.1])[0] is False and converged([1.0], [1.15], [0.1])[0] is True
    est = {"a": estimate([5.0, 5.1, 4.9]), "b": estimate([1.0, 1.1, 0.9])}
    assert evaluate_claim(_claim("less"), est).verdict == NOT_SUPPORTED
    v = evaluate_claim(_claim("less"), est, under_trained={"a": "FD still moved"})
    assert v.verdict == UNDER_TRAINED and "a under-trained: FD still moved" in v.evidence


def test_intervals_of_bounded_metrics_stay_in_range():
    from harness.core.stats import bounded_interval

    recall = estimate([0.02, 0.98, 0.99])  # the symmetric interval is 0.66 ± 1.4
    lo, hi = recall.interval(0.95, (0.0, 1.0))
    assert 0.0 < lo < recall.mean < hi < 1.0
    assert recall.mean - recall.half_width() < 0 and recall.mean + recall.half_width() > 1
    fd = estimate([0.5, 20.0, 1.0])
    lo, hi = fd.interval(0.95, (0.0, math.inf))
    assert 0.0 < lo < fd.mean < hi and fd.mean - fd.half_width() < 0
    assert bounded_interval(3.0, 0.0, 1.96, (0.0, 1.0)) == (3.0, 3.0)
    assert bounded_interval(0.0, 0.1, 1.96, (0.0, 1.0)) == (0.0, pytest.approx(0.196))  # on the bound: clipped
    # far from the bounds the transformed interval is the symmetric one to first order
    lo, hi = bounded_interval(0.5, 0.001, 1.96, (0.0, 1.0))
    assert lo == pytest.approx(0.5 - 0.00196, rel=1e-4) and hi == pytest.approx(0.5 + 0.00196, rel=1e-4)
    assert format_estimate(recall, (0.0, 1.0)) == "0.66 [0.00, 1.00]"


def test_equivalence_uses_the_tost_interval_at_twice_alpha():
    """TOST at α = 0.05 decides with the 90% interval: a difference whose 95% interval pokes out of
    the margin while its 90% interval stays inside is supported."""
    a, b = Estimate(0.0, 0.03, math.inf, 1), Estimate(0.0, 0.0, math.inf, 1)
    margin = 0.055  # 1.645 x 0.03 = 0.049 < 0.055 < 1.96 x 0.03 = 0.059
    v = evaluate_claim(_claim("within", margin=margin), {"a": a, "b": b})
    assert v.verdict == SUPPORTED and "90% CI (TOST at α = 0.05)" in v.evidence[0]


def test_non_inferiority_is_one_sided_at_alpha_with_its_margin():
    """``less: [a, b]`` with a margin m claims a < b + m: decided by the 90% interval of d − m
    (one-sided at α = 0.05). a better than b is supported; a worse by less than m too (when the interval
    says so); a worse by more than m is not supported; a margin with three rows or on a ratio is refused."""
    def est(mean):
        return Estimate(mean, 0.01, math.inf, 1)

    claim = _claim("less", margin=0.05)
    assert evaluate_claim(claim, {"a": est(0.90), "b": est(1.0)}).verdict == SUPPORTED
    assert evaluate_claim(claim, {"a": est(1.02), "b": est(1.0)}).verdict == SUPPORTED  # 0.02 + 1.645 x 0.014 < 0.05
    assert evaluate_claim(claim, {"a": est(1.05), "b": est(1.0)}).verdict == INCONCLUSIVE
    v = evaluate_claim(claim, {"a": est(1.10), "b": est(1.0)})
    assert v.verdict == NOT_SUPPORTED and "non-inferiority margin 0.05" in v.evidence[0] and "90% CI" in v.evidence[0]
    assert evaluate_claim(_claim("greater", margin=0.05), {"a": est(0.99), "b": est(1.0)}).verdict == SUPPORTED
    assert evaluate_claim(_claim("less"), {"a": est(1.05), "b": est(1.0)}).verdict == NOT_SUPPORTED  # no margin: a < b
    with pytest.raises(ValueError, match="needs 2 rows"):
        _claim("less", rows=("a", "b", "c"), margin=0.1)
    with pytest.raises(ValueError, match="ratio takes at_least, not margin"):
        _claim("ratio", at_least=1.0, margin=0.1)
