"""End-to-end tests of `genbench eval-samples`: records, invariances, cache and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.cache import cache_root
from harness.cli import main
from harness.eval_samples import SampleEvalConfig, evaluate_samples
from harness.store.records import read_record

ALL_KEYS = {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density", "coverage"}


def _cache_files() -> set[Path]:
    root = cache_root()
    return set(root.rglob("*")) if root.exists() else set()


def _digits(n: int, *, flip: bool = False) -> np.ndarray:
    """n class-balanced MNIST-5k test digits as uint8 NHWC (optionally mirrored: a clearly different set)."""
    from harness.datasets import load_dataset

    x = load_dataset("mnist5k-test").x[::5][:n]  # the set is sorted by class: stride for balance
    if flip:
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def test_cli_writes_complete_record(tmp_path, capsys):
    out = tmp_path / "rec.json"
    code = main([
        "eval-samples", "--samples", "mnist5k-test", "--reference", "mnist5k-train",
        "--feature-extractor", "mnist-cnn", "--num-samples", "300", "--json", str(out), "--quiet",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "FD[mnist-cnn]" in printed and "precision" in printed
    record = read_record(out)
    assert set(record["metrics"]) == ALL_KEYS
    assert record["skipped"] == {}
    for key, entry in record["metrics"].items():
        assert math.isfinite(entry["value"]), key
        assert entry["feature_extractor"] == "mnist-cnn"
        assert entry["n_samples"] == entry["n_reference"] == 300
    assert record["metrics"]["fid"]["label"] == "FD[mnist-cnn]"
    assert record["metrics"]["precision"]["nearest_k"] == 3
    assert record["metrics"]["coverage"]["nearest_k"] == 5
    assert record["features"]["weights_sha256"]
    assert record["data"]["samples"]["content_hash"] != record["data"]["reference"]["content_hash"]
    # Two held-out sets of real digits: a good model would score like this. Precision and recall
    # of real-vs-real at k=3 sit well above 0.5 and IS approaches the 10 classes.
    assert record["metrics"]["precision"]["value"] > 0.6
    assert record["metrics"]["recall"]["value"] > 0.6
    assert record["metrics"]["is_mean"]["value"] > 5


def test_real_vs_real_beats_real_vs_mirrored(tmp_path):
    same = tmp_path / "same.npz"
    mirrored = tmp_path / "mirrored.npz"
    np.savez(same, arr_0=_digits(200))
    np.savez(mirrored, arr_0=_digits(200, flip=True))
    common = dict(reference="mnist5k-train", feature_extractor="mnist-cnn", metrics=("fid", "prdc"), num_samples=200)
    good = evaluate_samples(SampleEvalConfig(samples=str(same), **common), progress=False)["metrics"]
    bad = evaluate_samples(SampleEvalConfig(samples=str(mirrored), **common), progress=False)["metrics"]
    assert bad["fid"]["value"] > 3 * good["fid"]["value"]
    assert bad["precision"]["value"] < good["precision"]["value"]


def test_metrics_do_not_depend_on_batch_size():
    def run(batch_size: int) -> dict[str, float]:
        cfg = SampleEvalConfig(
            samples="mnist5k-test", reference="mnist5k-train", feature_extractor="mnist-cnn",
            num_samples=150, batch_size=batch_size, use_cache=False,
        )
        return {k: v["value"] for k, v in evaluate_samples(cfg, progress=False)["metrics"].items()}

    small, large = run(7), run(64)
    assert set(small) == ALL_KEYS
    for key in small:
        assert small[key] == pytest.approx(large[key], rel=1e-6, abs=1e-9), key


def test_toy_data_uses_identity_features_and_skips_is():
    cfg = SampleEvalConfig(samples="8gaussians-test", reference="8gaussians-train", num_samples=400)
    record = evaluate_samples(cfg, progress=False)
    assert record["features"]["name"] == "identity"
    assert "is" in record["skipped"] and "logits" in record["skipped"]["is"]
    assert record["metrics"]["fid"]["label"] == "FD[identity]"
    # Two draws of the same 2-D mixture: the Fréchet distance is a small sampling error.
    assert record["metrics"]["fid"]["value"] < 0.1
    far = evaluate_samples(SampleEvalConfig(samples="moons-test", reference="8gaussians-train", num_samples=400), progress=False)
    assert far["metrics"]["fid"]["value"] > 10 * record["metrics"]["fid"]["value"]


def test_reference_features_are_cached_by_content(tmp_path):
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=_digits(120))
    cfg = SampleEvalConfig(samples="mnist5k-test", reference=str(ref), feature_extractor="mnist-cnn",
                           num_samples=120, metrics=("fid",))
    first = evaluate_samples(cfg, progress=False)
    second = evaluate_samples(cfg, progress=False)
    assert not first["data"]["reference"]["features_cached"]
    assert second["data"]["reference"]["features_cached"]
    assert first["metrics"]["fid"]["value"] == second["metrics"]["fid"]["value"]
    # Same path, different content: a cache miss, not stale features.
    changed = _digits(120)
    changed[0, 0, 0, 0] ^= 255
    np.savez(ref, arr_0=changed)
    third = evaluate_samples(cfg, progress=False)
    assert not third["data"]["reference"]["features_cached"]


@pytest.mark.parametrize(
    "make_samples, message",
    [
        (lambda p: np.savez(p, x=np.where(np.arange(200)[:, None] == 3, np.nan, np.ones((200, 2), np.float32))), "NaN"),
        (lambda p: np.savez(p, x=np.full((200, 2), np.inf, np.float32)), "Inf"),
        (lambda p: np.savez(p, x=np.zeros((200, 3), np.float32)), "dimension"),
        (lambda p: np.savez(p, x=np.zeros((3, 2), np.float32)), "exceeds the 3 rows"),
        (lambda p: p.write_bytes(b"this is not a zip file"), "samples.npz"),
    ],
    ids=["nan", "inf", "shape-mismatch", "fewer-than-asked", "unreadable"],
)
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, capsys, make_samples, message):
    samples = tmp_path / "samples.npz"
    make_samples(samples)
    out = tmp_path / "rec.json"
    before = _cache_files()
    code = main(["eval-samples", "--samples", str(samples), "--reference", "8gaussians-train",
                 "--num-samples", "200", "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()
    assert _cache_files() == before


def test_too_few_samples_names_the_minimum(tmp_path, capsys):
    samples = tmp_path / "few.npz"
    np.savez(samples, x=np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32))
    code = main(["eval-samples", "--samples", str(samples), "--reference", "8gaussians-train", "--metrics", "fid,prdc",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "prdc needs at least 6" in err and "is needs" not in err
    # without --metrics, a default metric short of rows is skipped with the reason; the rest run, and
    # IS is skipped for what it lacks here (class logits), not for a count it was never going to use
    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", str(samples), "--reference", "8gaussians-train", "--json", str(out),
                 "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert record["skipped"]["prdc"] == "needs at least 6 rows per set, got 5"
    assert "logits" in record["skipped"]["is"] and "fid" in record["metrics"]


def test_float_images_are_refused_with_the_fix(tmp_path, capsys):
    samples = tmp_path / "float_images.npz"
    np.savez(samples, arr_0=np.random.default_rng(0).uniform(-1, 1, size=(50, 28, 28, 1)).astype(np.float32))
    code = main(["eval-samples", "--samples", str(samples), "--reference", "mnist5k-test",
                 "--feature-extractor", "mnist-cnn", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "uint8" in err


def test_missing_inception_weights_name_the_file(tmp_path, capsys):
    out = tmp_path / "rec.json"
    code = main(["eval-samples", "--samples", "mnist5k-test", "--reference", "mnist5k-train",
                 "--num-samples", "20", "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "weights-inception-2015-12-05-6726825d.pth" in err
    assert "GENBENCH_INCEPTION_WEIGHTS" in err
    assert not out.exists()


def test_unknown_names_suggest_alternatives(capsys):
    assert main(["eval-samples", "--samples", "mnist5k-tset", "--reference", "mnist5k-train", "--quiet"]) == 2
    assert "mnist5k-test" in capsys.readouterr().err
    assert main(["eval-samples", "--samples", "mnist5k-test", "--reference", "mnist5k-train",
                 "--metrics", "fid,kdi", "--quiet"]) == 2
    assert "kid" in capsys.readouterr().err


def test_grayscale_is_repeated_for_inception_and_recorded(inception_weights_path):
    cfg = SampleEvalConfig(
        samples="mnist5k-test", reference="mnist5k-train", num_samples=12, metrics=("fid",),
        inception_weights=str(inception_weights_path), batch_size=12, use_cache=False,
    )
    record = evaluate_samples(cfg, progress=False)
    assert record["features"]["channels"] == "gray-repeated-to-rgb"
    assert record["metrics"]["fid"]["label"] == "FID"
    assert record["metrics"]["fid"]["rank_deficient"] is True


def test_ls_lists_registered_names(capsys):
    assert main(["ls", "datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist5k-train", "digits-test", "25gaussians-train", "gaussian-<d>"):
        assert name in out
    assert main(["ls", "metrics"]) == 0
    assert "prdc" in capsys.readouterr().out
    assert main(["ls", "features"]) == 0
    out = capsys.readouterr().out
    assert "inception-v3" in out and "mnist-cnn" in out


def test_record_json_is_stable_text(tmp_path):
    out = tmp_path / "rec.json"
    assert main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--num-samples", "100",
                 "--json", str(out), "--quiet"]) == 0
    text = out.read_text()
    assert text.endswith("\n")
    assert json.loads(text)["schema"] == "genbench.record/2"


def test_the_gaussian_fit_is_streamed_only_for_metrics_that_read_it(tmp_path, monkeypatch):
    """FD's [d, d] float64 sums are allocated only when a requested metric reads them: rows of
    d = 100,000 with --metrics prdc,kid would otherwise ask for 74.5 GiB."""
    import harness.features as features

    made = []
    real_stats = features.GaussianStats

    def counted():
        made.append(1)
        return real_stats()

    monkeypatch.setattr(features, "GaussianStats", counted)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", x=rng.normal(size=(10, 100_000)).astype(np.float32))
    args = ["eval-samples", "--samples", str(tmp_path / "a.npz"), "--reference", str(tmp_path / "b.npz"),
            "--feature-extractor", "identity", "--replicates", "0", "--no-cache", "--quiet"]
    assert main([*args, "--metrics", "prdc,kid", "--json", str(tmp_path / "r.json")]) == 0
    assert made == [] and "precision" in json.loads((tmp_path / "r.json").read_text())["metrics"]
    small = ["--samples", "moons-test", "--reference", "moons-train", "--num-samples", "50"]
    assert main([*args[:1], *small, *args[5:], "--metrics", "fid"]) == 0
    assert len(made) == 2  # one fit per set when FD is asked for


def test_every_metric_in_one_run_reads_one_feature_pass_per_set(tmp_path, monkeypatch):
    """Ten sample metrics in one eval-samples run: the extractor runs over each set once."""
    from metrics.features.identity import IdentityExtractor

    calls = []
    forward = IdentityExtractor.__call__

    def counted(self, batch):
        calls.append(len(batch))
        return forward(self, batch)

    monkeypatch.setattr(IdentityExtractor, "__call__", counted)
    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--num-samples", "200",
                 "--feature-extractor", "identity", "--batch-size", "50", "--no-cache", "--replicates", "2",
                 "--metrics", "fid,kid,prdc,energy,mmd,sw2,fd_inf,prd,cmmd,vendi", "--json", str(out), "--quiet"]) == 0
    assert calls == [50] * 8  # 200 generated + 200 reference rows, in batches of 50, once each
    metrics = json.loads(out.read_text())["metrics"]
    assert {"fid", "kid_mean", "precision", "energy_distance", "mmd2", "sw2", "fd_inf", "prd_f8", "cmmd", "vendi"} <= set(metrics)
