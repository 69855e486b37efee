"""`genbench check`: unchanged reruns pass, injected drift is caught (at equal seeds also drift below the
seed-to-seed spread, by the paired rule), seed changes and null changes pass at the nominal rate, and
protocol mismatches and malformed inputs are refused with exit status 2."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from baselines.analytic import LinearGaussianVAE
from harness.core.metric import MetricInputs
from harness.core.options import MetricOptions, ModelMetricOptions, SampleMetricOptions
from harness.planner import half_sample_replicates, metric_named
from metrics.fid import fid_of_rows
from harness.checkpoint import save_checkpoint
from harness.cli import main
from harness.drift import CheckOptions, _paired_spread, check
from harness.pytest_plugin import DriftError, assert_no_drift, genbench_no_drift  # noqa: F401 (fixture)
from harness.runner import ModelEvalConfig, evaluate_model
from harness.store.records import write_record
from harness.core.stats import block_means
from metrics.fid import fid_from_features
from metrics.prdc import compute_prdc_multi_k

REPO = Path(__file__).resolve().parents[1]
VAE_METRICS = "fid,prdc,nfe,bpd,elbo_bpd,active_units"

STEPS_MODEL = '''
import torch
from torch import nn
from harness.core.protocols import DataSpec


class EulerDecay(nn.Module):
    """x(1) of dx/dt = -x from x(0) = 3z by `steps` Euler steps: one `net` call per step."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 2, dtype=torch.float64)
        with torch.no_grad():
            self.net.weight.copy_(-torch.eye(2, dtype=torch.float64))
            self.net.bias.zero_()
        self.data_spec = DataSpec((2,), "continuous")

    def sample(self, n, rng, *, steps=10):
        x = 3.0 * rng.normal((2,), dtype=torch.float64)
        for _ in range(steps):
            x = x + self.net(x) / steps
        return x


def factory():
    return EulerDecay()
'''


def _run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _eval(path: Path, *args: str) -> Path:
    code, _, err = _run("eval", *args, "--json", str(path), "--quiet")
    assert code == 0, err
    return path


@pytest.fixture(scope="module")
def vae_records(tmp_path_factory) -> dict[str, Path]:
    """A VAE checkpoint (standing in for a trained baseline) evaluated twice, and once with perturbed weights."""
    root = tmp_path_factory.mktemp("vae")
    model = LinearGaussianVAE(4, 2, seed=3)
    config = {"data_dim": 4, "latent_dim": 2, "seed": 3}
    save_checkpoint(root / "vae.pt", model_name="linear-gaussian-vae", config=config, state_dict=model.state_dict(), meta={})
    with torch.no_grad():
        model.net.bias.add_(1.0)  # the injected drift: every decoder output shifted by 1
    save_checkpoint(root / "vae-perturbed.pt", model_name="linear-gaussian-vae", config=config,
                    state_dict=model.state_dict(), meta={})
    common = ("--dataset", "gaussian-4-test", "--num-samples", "200", "--metrics", VAE_METRICS)
    return {
        "baseline": _eval(root / "baseline.json", "--checkpoint", str(root / "vae.pt"), *common),
        "rerun": _eval(root / "rerun.json", "--checkpoint", str(root / "vae.pt"), *common),
        "perturbed": _eval(root / "perturbed.json", "--checkpoint", str(root / "vae-perturbed.pt"), *common),
    }


def test_unchanged_rerun_passes_exactly(vae_records, tmp_path):
    code, out, _ = _run("check", "--baseline", str(vae_records["baseline"]), "--candidate", str(vae_records["rerun"]),
                        "--format", "json", "--out", str(tmp_path / "report.json"))
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == json.loads(out) and report["verdict"] == "pass"
    rows = {m["metric"]: m for m in report["records"][0]["metrics"]}
    assert {"fid", "precision", "bpd", "nfe_mean", "active_units"} <= set(rows)
    # deterministic on CPU at fixed seeds: every gated metric is reproduced bit for bit
    assert all(m["delta"] == 0.0 for m in rows.values() if m["verdict"] != "info")
    assert rows["fid"]["tolerance"] > 0 and rows["nfe_mean"]["rule"] == "exact"
    # equal seeds, replicates on both sides: the paired rule, every paired spread zero
    assert {rows[k]["basis"] for k in ("fid", "precision", "bpd", "elbo_bpd")} == {"paired"}
    assert rows["nfe_mean"]["basis"] is None and "paired" in rows["fid"]["rule"]


def test_records_without_replicates_fall_back_to_the_unpaired_rule(vae_records):
    """Older records (no replicates, no block means) still compare, by the unpaired rule."""
    base = json.loads(vae_records["baseline"].read_text())
    for entry in base["metrics"].values():
        entry.pop("block_means", None)
        if isinstance(entry.get("uncertainty"), dict):
            for k in ("replicates", "scale"):
                entry["uncertainty"].pop(k)
    report = check([("old", base, vae_records["rerun"])], CheckOptions())
    rows = {m.metric: m for m in report.comparisons[0].metrics}
    assert report.passed and rows["fid"].basis == rows["bpd"].basis == "unpaired"
    assert rows["fid"].rule.startswith("unpaired")

def test_perturbed_weights_fail_naming_the_metrics(vae_records):
    code, out, _ = _run("check", "--baseline", str(vae_records["baseline"]), "--candidate", str(vae_records["perturbed"]))
    assert code == 1
    assert out.startswith("## genbench check: DRIFT")
    for metric in ("fid", "bpd"):
        assert f"| {metric} |" in out and any(line.startswith(f"| {metric} |") and "**DRIFT**" in line
                                              for line in out.splitlines())
    assert "model.checkpoint_sha256" in out  # the model changed: context, not a protocol mismatch


@pytest.fixture(scope="module")
def trained_vae2d(tmp_path_factory) -> dict[str, dict]:
    """End to end: a baseline trained by `genbench train`, its decoder's output bias shifted
    by 1.0, 0.4 and 1e-6 (moons spans about 3 units), each evaluated at the same seed as the baseline."""
    from harness.checkpoint import load_checkpoint

    root = tmp_path_factory.mktemp("vae2d")
    ckpt = root / "vae2d.pt"
    code, _, err = _run("train", "vae-2d", "--dataset", "moons-train", "--steps", "300", "--num-train", "2000",
                        "--out", str(ckpt), "--quiet")
    assert code == 0, err
    trained = load_checkpoint(ckpt)
    common = ("--dataset", "moons-test", "--num-samples", "300", "--metrics", "fid,prdc,elbo_bpd")
    records = {"base": _eval(root / "base.json", "--checkpoint", str(ckpt), *common),
               "same": _eval(root / "same.json", "--checkpoint", str(ckpt), *common)}
    for name, shift in (("moved", 1.0), ("small", 0.4), ("tiny", 1e-6)):
        state = {k: v.clone() for k, v in trained.state_dict.items()}
        output_bias = [k for k in state if k.startswith("net.") and k.endswith("bias")][-1]
        state[output_bias] += shift
        save_checkpoint(root / f"{name}.pt", model_name=trained.model_name, config=trained.config, state_dict=state,
                        meta=trained.meta)
        records[name] = _eval(root / f"{name}.json", "--checkpoint", str(root / f"{name}.pt"), *common)
    return {name: json.loads(path.read_text()) for name, path in records.items()}


def _rows(baseline: dict, candidate: dict, **options) -> tuple[bool, dict]:
    report = check([("r", baseline, candidate)], CheckOptions(**options))
    return report.passed, {m.metric: m for m in report.comparisons[0].metrics}


def test_perturbed_trained_baseline_fails(trained_vae2d, tmp_path):
    base = write_record(tmp_path / "base.json", trained_vae2d["base"])
    same = write_record(tmp_path / "same.json", trained_vae2d["same"])
    moved = write_record(tmp_path / "moved.json", trained_vae2d["moved"])
    assert _run("check", "--baseline", str(base), "--candidate", str(same))[0] == 0
    code, out, _ = _run("check", "--baseline", str(base), "--candidate", str(moved))
    assert code == 1, out
    drifted = [line.split("|")[1].strip() for line in out.splitlines() if "**DRIFT**" in line]
    assert drifted, out
    assert "elbo_bpd" in drifted or "fid" in drifted


def test_drift_below_the_seed_spread_is_caught_at_equal_seeds(trained_vae2d):
    """A bias shift of 0.4 moves elbo_bpd by less than a change of seed plausibly would (the unpaired rule of
    --across-seeds passes it), but at equal seeds the sampling noise is shared and the paired rule flags it.
    (A shift of 0.3 is flagged at 7 of 10 seeds with n = 300, 10 of 10 with n = 1000; see harness/drift.py.)"""
    passed, paired = _rows(trained_vae2d["base"], trained_vae2d["small"])
    assert not passed and paired["elbo_bpd"].verdict == "drift" and paired["elbo_bpd"].basis == "paired"
    passed, unpaired = _rows(trained_vae2d["base"], trained_vae2d["small"], across_seeds=True)
    assert passed and unpaired["elbo_bpd"].basis == "unpaired"
    assert abs(paired["elbo_bpd"].delta) < unpaired["elbo_bpd"].tolerance
    assert paired["elbo_bpd"].tolerance < 0.6 * unpaired["elbo_bpd"].tolerance


def test_tiny_changes_and_reruns_pass_the_paired_rule(trained_vae2d):
    """A numerically irrelevant change (bias + 1e-6) moves the metrics systematically, and the paired spread
    shrinks with it; the least relevant effect (5% of the seed-to-seed spread, one count of a k-NN fraction)
    lets it pass. Its paired tolerances are all far below the unpaired ones."""
    assert _rows(trained_vae2d["base"], trained_vae2d["same"])[0]
    passed, paired = _rows(trained_vae2d["base"], trained_vae2d["tiny"])
    assert passed, [(m.metric, m.delta, m.tolerance) for m in paired.values()]
    _, unpaired = _rows(trained_vae2d["base"], trained_vae2d["tiny"], across_seeds=True)
    for key in ("fid", "precision", "recall", "density", "coverage", "elbo_bpd"):
        assert paired[key].basis == "paired" and paired[key].tolerance < 0.2 * unpaired[key].tolerance


def _replicates(fake, real, logits, names, *, num, seed, **sample_options):
    """The half-sample uncertainties of metrics ``names`` on feature rows, as a run records them."""
    inputs = MetricInputs(seed=seed, fake_features=fake, real_features=real, fake_logits=logits,
                          feature_extractor="identity", feature_dim=fake.shape[1])
    options = MetricOptions(sample=SampleMetricOptions(**sample_options))
    return half_sample_replicates([metric_named(n) for n in names], inputs, options, num)


def test_paired_rule_is_calibrated_for_a_null_change():
    """A change that redraws the generated set from the same distribution (reference and seed shared):
    the paired t statistic Δ / s_paired of each metric should exceed the two-sided 5% point (df 9) at
    most ~5% of the time (measured over 200 trials: 0.5-4%). 60 trials here; each metric's count of
    alarms is at most Binomial(60, 0.05), and P(X >= 10) < 0.003."""
    q, trials = stats.t.ppf(0.975, 9), 60
    alarms: dict[str, int] = {}
    for t in range(trials):
        rng = np.random.default_rng(t)
        real = rng.standard_normal((100, 2))
        fakes = [rng.standard_normal((100, 2)) * 1.2 + 0.3 for _ in range(2)]
        full = [{"fid": fid_of_rows(f, real), **compute_prdc_multi_k(real, f, pr_k=3, dc_k=5)} for f in fakes]
        reps = [_replicates(f, real, None, ("fid", "prdc"), num=10, seed=5) for f in fakes]
        for key in reps[0]:
            s, df = _paired_spread({"uncertainty": reps[0][key]}, {"uncertainty": reps[1][key]}, "b", "c")
            assert df == 9 and s > 0
            alarms[key] = alarms.get(key, 0) + int(abs(full[1][key] - full[0][key]) > q * s)
    assert stats.binom.sf(9, trials, 0.05) < 0.003
    assert set(alarms) == {"fid", "precision", "recall", "density", "coverage"}
    assert all(count <= 9 for count in alarms.values()), alarms


def test_block_means_give_the_paired_standard_error_of_bits_per_dim():
    """Block means over equal blocks: the paired spread is std(D_j) / sqrt(K) of the block differences,
    the batch-means standard error of the mean per-example difference; unequal blocks are weighted."""
    rng = np.random.default_rng(0)
    for n in (200, 203):
        b = torch.from_numpy(rng.standard_normal(n) + 3.0)
        c = b + 0.1 + 0.05 * torch.from_numpy(rng.standard_normal(n))
        entries = [{"n": n, "block_means": block_means(v)} for v in (b, c)]
        assert len(entries[0]["block_means"]) == 20
        s, df = _paired_spread(*entries, "b", "c")
        d = np.subtract(entries[1]["block_means"], entries[0]["block_means"])
        assert df == 19
        if n == 200:
            assert s == pytest.approx(np.std(d, ddof=1) / np.sqrt(20), rel=1e-12)
        assert s == pytest.approx(0.05 / np.sqrt(n), rel=0.5)  # per-example sd 0.05 of the differences
    assert _paired_spread({"n": 200, "block_means": [0.0] * 20}, {"n": 201, "block_means": [0.0] * 20}, "b", "c") is None


def test_changed_sampler_steps_fail_naming_nfe(tmp_path):
    entry = tmp_path / "euler.py"
    entry.write_text(STEPS_MODEL)
    common = ("--entry", f"{entry}:factory", "--dataset", "gaussian-2-test", "--num-samples", "200",
              "--metrics", "nfe,fid")
    base = _eval(tmp_path / "steps10.json", *common, "--steps", "10")
    cand = _eval(tmp_path / "steps2.json", *common, "--steps", "2")
    code, out, _ = _run("check", "--baseline", str(base), "--candidate", str(cand))
    assert code == 1  # a drift, not a refusal: the sampler's steps are what is being tested
    nfe = next(line for line in out.splitlines() if line.startswith("| nfe_mean |"))
    assert "| 10 | 2 |" in nfe and "**DRIFT**" in nfe


@pytest.fixture(scope="module")
def seed_pairs() -> list[tuple[dict, dict]]:
    """20 pairs of runs of a tiny model that differ only in their seeds (40 independent seeds)."""
    def run(seed: int) -> dict:
        cfg = ModelEvalConfig(model="linear-gaussian-vae", model_args=(("data_dim", 4), ("latent_dim", 2)),
                              dataset="gaussian-4-test", num_samples=200, seed=seed, use_cache=False,
                              model_metrics=ModelMetricOptions(num_importance=10),
                              metrics=("fid", "prdc", "nfe", "bpd", "elbo_bpd", "iwae_bpd", "active_units"))
        return evaluate_model(cfg, progress=False)

    return [(run(2 * i), run(2 * i + 1)) for i in range(20)]


def test_seed_only_differences_pass_at_the_nominal_rate(seed_pairs):
    """Family-wise alpha = 1% per record pair (8 toleranced metrics, 3 exact ones), so the alarms X over
    20 independent pairs are at most Binomial(20, 0.01): E[X] = 0.2, P(X >= 3) = 0.0010. We assert
    X <= 2 (these seeds give X = 1: elbo_bpd of pair 0, whose per-example bits/dim
    are heavy-tailed for this deliberately mismatched model; 5 alarms in 490 pairs over all the
    configurations tried during development, 1.0%)."""
    alpha, pairs = 0.01, len(seed_pairs)
    assert stats.binom.sf(2, pairs, alpha) < 1.1e-3
    options = CheckOptions(family_alpha=alpha, across_seeds=True)
    alarms = sum(not check([(f"pair {i}", b, c)], options).passed for i, (b, c) in enumerate(seed_pairs))
    assert alarms <= 2
    # ... and the same pairs are refused without --across-seeds: seeds are protocol by default
    with pytest.raises(ValueError, match=r"(?s)config\.seed.*use --across-seeds"):
        check([("pair 0", *seed_pairs[0])], CheckOptions())


def test_tolerance_file_overrides_and_rejects_unknown_keys(seed_pairs, tmp_path):
    base, cand = write_record(tmp_path / "b.json", seed_pairs[0][0]), write_record(tmp_path / "c.json", seed_pairs[0][1])
    args = ("check", "--baseline", str(base), "--candidate", str(cand), "--across-seeds")
    gated = ("fid", "precision", "recall", "density", "coverage", "bpd", "elbo_bpd", "iwae_bpd", "data_xent_bpd")

    def with_file(content: str, name: str = "tol.yaml") -> tuple[int, str, str]:
        (tmp_path / name).write_text(content)
        return _run(*args, "--tolerances", str(tmp_path / name))

    loose = {k: {"abs": 1e9} for k in gated}
    assert with_file(json.dumps(loose), "tol.json")[0] == 0
    assert with_file("".join(f"{k}: {{z: 50}}\n" for k in gated))[0] == 0
    code, out, _ = with_file(json.dumps({**loose, "fid": {"abs": 0}}), "tol.json")
    fid = next(line for line in out.splitlines() if line.startswith("| fid |"))
    assert code == 1 and "**DRIFT**" in fid and "user abs 0" in fid
    assert with_file(json.dumps({**loose, "fid": {"rel": 0}}), "tol.json")[0] == 1
    for content, message in (("fid: {absolute: 0.5}\n", "exactly one of abs, rel, z"),
                             ("fdi: {abs: 0.5}\n", "unknown metric 'fdi' (did you mean fid"),
                             ("fid: {abs: -1}\n", "must be a number >= 0"),
                             ("fid: [abs\n", "not valid YAML")):
        code, _, err = with_file(content)
        assert code == 2 and message in err and "tol.yaml" in err


@pytest.fixture(scope="module")
def sample_record(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("samples") / "r.json"
    code, _, err = _run("eval-samples", "--samples", "8gaussians-test", "--reference", "8gaussians-train",
                        "--num-samples", "120", "--metrics", "fid,prdc", "--json", str(path), "--quiet")
    assert code == 0, err
    return json.loads(path.read_text())


def _mutated(record: dict, edit) -> dict:
    copy = json.loads(json.dumps(record))
    edit(copy)
    return copy


@pytest.mark.parametrize("edit, fields", [
    (lambda r: r["features"].update(name="mnist-cnn"), ["features.name"]),
    (lambda r: r["features"].update(weights_sha256="0" * 64), ["features.weights_sha256"]),
    (lambda r: [r["metrics"][k].update(nearest_k=7) for k in ("precision", "recall")], ["metrics.*.nearest_k"]),
    (lambda r: (r["config"].update(num_samples=100), r["metrics"]["fid"].update(n_samples=100)),
     ["config.num_samples", "metrics.*.n_samples"]),
    (lambda r: r["data"]["reference"].update(content_hash="f" * 64), ["data.reference.content_hash"]),
])
def test_protocol_mismatch_is_refused_naming_fields(sample_record, tmp_path, edit, fields):
    base = write_record(tmp_path / "b.json", sample_record)
    cand = write_record(tmp_path / "c.json", _mutated(sample_record, edit))
    code, out, err = _run("check", "--baseline", str(base), "--candidate", str(cand))
    assert code == 2 and out == ""
    assert "protocol mismatch" in err and all(f in err for f in fields)


def test_solver_tolerance_mismatch_is_refused(tmp_path):
    args = ("--model", "gaussian-vp", "--model-arg", "dim=2", "--dataset", "gaussian-2-test", "--metrics", "bpd",
            "--num-samples", "20", "--ode-divergence", "exact")
    base = _eval(tmp_path / "b.json", *args)
    cand = _eval(tmp_path / "c.json", *args, "--ode-rtol", "1e-3")
    code, _, err = _run("check", "--baseline", str(base), "--candidate", str(cand))
    assert code == 2 and "config.model_metrics.ode_rtol" in err and "metrics.*.rtol" in err


def test_context_changes_are_not_mismatches(sample_record, tmp_path):
    def edit(r: dict) -> None:
        r["run"].update(git_sha="0" * 40, device="cuda:0")
        r["run"]["versions"]["torch"] = "9.9"
        r["config"].update(batch_size=7)
    base = write_record(tmp_path / "b.json", sample_record)
    cand = write_record(tmp_path / "c.json", _mutated(sample_record, edit))
    code, out, _ = _run("check", "--baseline", str(base), "--candidate", str(cand))
    assert code == 0 and "`run.versions.torch` 2" in out and "`run.git_sha`" in out


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not readable JSON"),
    ('{"schema": "other/1"}', "unknown record schema"),
    ("SCHEMA_NO_METRICS", "missing field 'metrics'"),
    ("BAD_VALUE", "metric 'fid' value must be a finite number or null, got 'high'"),
])
def test_malformed_records_name_file_and_problem(sample_record, tmp_path, content, problem):
    base = write_record(tmp_path / "b.json", sample_record)
    bad = tmp_path / "bad.json"
    if content == "SCHEMA_NO_METRICS":
        content = json.dumps({k: v for k, v in sample_record.items() if k != "metrics"})
    elif content == "BAD_VALUE":
        content = json.dumps(_mutated(sample_record, lambda r: r["metrics"]["fid"].update(value="high")))
    bad.write_text(content)
    code, _, err = _run("check", "--baseline", str(base), "--candidate", str(bad))
    assert code == 2 and problem in err and str(bad) in err


def test_folders_pair_by_name_and_missing_pieces_fail(sample_record, tmp_path):
    write_record(tmp_path / "b" / "run.json", sample_record)
    write_record(tmp_path / "b" / "only-baseline.json", sample_record)
    write_record(tmp_path / "c" / "run.json", _mutated(sample_record, lambda r: r["metrics"].pop("coverage")))
    code, out, _ = _run("check", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"))
    assert code == 1
    assert "**no candidate record**" in out and "| coverage |" in out and "**MISSING** | absent from the candidate" in out
    assert _run("check", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c" / "run.json"))[0] == 2
    assert _run("check", "--baseline", str(tmp_path / "b"))[0] == 2


def test_folders_are_compared_recursively_and_unpaired_subfolders_fail(sample_record, tmp_path):
    """A matching top-level record must not hide a drifted or one-sided record in a subfolder."""
    drifted = _mutated(sample_record, lambda r: r["metrics"]["fid"].update(value=r["metrics"]["fid"]["value"] + 5.0))
    for side in ("b", "c"):
        write_record(tmp_path / side / "top.json", sample_record)
    write_record(tmp_path / "b" / "rowA" / "seed0.json", sample_record)
    write_record(tmp_path / "c" / "rowA" / "seed0.json", drifted)
    code, out, _ = _run("check", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"))
    assert code == 1 and "rowA/seed0.json" in out and "DRIFT" in out
    write_record(tmp_path / "c" / "rowA" / "seed0.json", sample_record)  # now equal ...
    write_record(tmp_path / "c" / "rowB" / "seed0.json", sample_record)  # ... but rowB is only in the candidate
    code, out, _ = _run("check", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"))
    assert code == 1 and "rowB/seed0.json" in out and "no baseline record" in out


def test_pytest_fixture_asserts_no_drift(vae_records, genbench_no_drift):
    report = genbench_no_drift(vae_records["baseline"], json.loads(vae_records["rerun"].read_text()))
    assert report.passed
    with pytest.raises(DriftError, match=r"DRIFT.*fid"):
        assert_no_drift(vae_records["baseline"], vae_records["perturbed"])
    assert_no_drift(vae_records["baseline"], vae_records["perturbed"], tolerances={
        k: {"abs": 1e6} for k in ("fid", "precision", "recall", "density", "coverage", "bpd", "elbo_bpd", "data_xent_bpd")})


def test_ci_tiny_suite_passes_against_committed_baselines():
    code, out, err = _run("check", "--suite", "ci-tiny", "--baseline", str(REPO / "results" / "baselines" / "ci-tiny"))
    assert code == 0, out + err
    assert out.startswith("## genbench check: PASS") and out.count("### ci-tiny/") == 3


@pytest.mark.parametrize("content, message", [
    ("name: x\nbaseline_dir: b\nruns: []\nextra: 1\n", "unknown key(s) ['extra']"),
    ("name: x\nbaseline_dir: b\nruns:\n  - {name: a, command: eval-samples, options: {samples: moons-test}, when: now}\n",
     "unknown key(s) ['when']"),
    ("name: x\nbaseline_dir: b\nruns:\n  - {name: a, command: eval-samples, options: {samples: s, reference: r, seeds: 3}}\n",
     "unknown option(s) ['seeds']"),
    ("name: x\nbaseline_dir: b\nruns:\n  - {name: a, command: train, options: {}}\n", "command 'train' is not one of"),
])
def test_suite_files_are_strict(tmp_path, content, message):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(content))
    code, _, err = _run("check", "--suite", str(path))
    assert code == 2 and message in err and str(path) in err


def test_suite_update_writes_baselines_that_then_pass(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nbaseline_dir: unused\nruns:\n  - name: ring\n    command: eval-samples\n"
                     "    options: {samples: rings-test, reference: rings-train, num_samples: 60, metrics: [fid, prdc]}\n")
    assert _run("check", "--suite", str(suite), "--baseline", str(tmp_path / "bl"), "--update-baselines")[0] == 0
    assert (tmp_path / "bl" / "ring.json").is_file()
    assert _run("check", "--suite", str(suite), "--baseline", str(tmp_path / "bl"))[0] == 0
    (tmp_path / "bl" / "ring.json").rename(tmp_path / "bl" / "other.json")
    code, out, _ = _run("check", "--suite", str(suite), "--baseline", str(tmp_path / "bl"))
    assert code == 1 and "**no baseline record**" in out
    code, _, err = _run("check", "--suite", str(suite), "--baseline", str(tmp_path / "none"))
    assert code == 2 and "does not exist" in err


def test_fid_of_rows_matches_fid_both_routes():
    """n >= d: the same d x d route. n < d: the Gram route, exact where the d x d route adds ~sqrt(eps)
    per null eigenvalue of the rank-deficient covariances (~1e-9 relative here)."""
    rng = np.random.default_rng(0)
    for n, d, rel in ((30, 64, 1e-7), (200, 5, 1e-12)):
        x, y = rng.standard_normal((n, d)), rng.standard_normal((n + 3, d)) * 1.3 + 0.2
        assert fid_of_rows(x, y) == pytest.approx(fid_from_features(x, y), rel=rel)
    x = rng.standard_normal((20, 50))
    assert abs(fid_of_rows(x, x)) < 1e-12


def test_half_sample_spread_is_seeded_and_covers_inception_score():
    rng = np.random.default_rng(1)
    fake, real, logits = rng.standard_normal((80, 3)), rng.standard_normal((90, 3)), rng.standard_normal((80, 5))
    opts = {"kid_subsets": 3, "kid_subset_size": 50, "is_splits": 4}
    names = ("fid", "kid", "is", "prdc")
    a = _replicates(fake, real, logits, names, num=4, seed=7, **opts)
    assert a == _replicates(fake, real, logits, names, num=4, seed=7, **opts)
    assert set(a) == {"fid", "kid_mean", "is_mean", "precision", "recall", "density", "coverage"}
    assert all(v["std"] > 0 and v["num_replicates"] == 4 for v in a.values())
    # the replicates are stored; their rows depend only on (seed, sizes, replicate index): a longer run
    # repeats the shorter one's replicates, and so do other features of the same sizes
    assert all(len(v["replicates"]) == 4 and v["std"] == pytest.approx(np.std(v["replicates"], ddof=1) * v["scale"])
               for v in a.values())
    longer = _replicates(fake, real, logits, names, num=6, seed=7, **opts)
    assert all(longer[k]["replicates"][:4] == a[k]["replicates"] for k in a)
    shifted = _replicates(fake + 1.0, real + 1.0, logits, names, num=4, seed=7, **opts)
    assert shifted["fid"]["replicates"] == pytest.approx(a["fid"]["replicates"], rel=1e-9)  # same rows, FD shift-invariant


def test_counts_that_depend_on_the_seed_are_not_gated_across_seeds_unless_given_a_tolerance(seed_pairs):
    """The same model at seeds 0 and 1 can count 21 vs 20 active units: across seeds that is reported,
    not a drift; at one seed it stays an exact gate, and a tolerance gates it across seeds too."""
    import copy

    from harness.drift import Override

    base = seed_pairs[0][0]
    bumped = copy.deepcopy(base)
    bumped["metrics"]["active_units"]["value"] += 1
    row = next(m for m in check([("same seed", base, bumped)], CheckOptions()).comparisons[0].metrics if m.metric == "active_units")
    assert row.verdict == "drift"
    other_seed = copy.deepcopy(seed_pairs[0][1])
    other_seed["metrics"]["active_units"]["value"] = base["metrics"]["active_units"]["value"] + 1
    report = check([("seeds", base, other_seed)], CheckOptions(across_seeds=True))
    row = next(m for m in report.comparisons[0].metrics if m.metric == "active_units")
    assert row.verdict == "info" and "depends on the evaluation seed" in row.rule
    gated = check([("seeds", base, other_seed)], CheckOptions(across_seeds=True, overrides={"active_units": Override("abs", 0.5)}))
    assert next(m for m in gated.comparisons[0].metrics if m.metric == "active_units").verdict == "drift"
    row = next(m for m in report.comparisons[0].metrics if m.metric == "nfe_mean")
    assert row.rule == "exact"  # NFE of a fixed sampler does not depend on the seed: still exact
