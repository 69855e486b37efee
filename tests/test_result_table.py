"""The human-readable table of `genbench eval` / `genbench eval-samples`: value ± uncertainty, feature space, notes."""

from __future__ import annotations

from harness.cli import main
from harness.cli.eval_samples import format_table

HALF = {"std": 9.1234, "num_replicates": 10, "method": "half-sampling", "seed": 0, "scale": 1.0, "replicates": []}


def _kid(value: float, space: str, *, subset_size: int, n: int) -> dict:
    return {"value": value, "feature_extractor": space, "subsets": 100, "subset_size": subset_size,
            "n_samples": n, "n_reference": n}


def _rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.strip()}


def test_rows_show_uncertainty_feature_space_and_kid_caveats() -> None:
    record = {
        "metrics": {
            "fid": {"value": 18.75, "label": "FD[mnist-cnn]", "feature_extractor": "mnist-cnn", "uncertainty": HALF},
            "kid_mean": {**_kid(147.98, "mnist-cnn", subset_size=300, n=300), "uncertainty": {**HALF, "std": 355.2}},
            "kid_std": _kid(8.1e-12, "mnist-cnn", subset_size=300, n=300),
            "is_mean": {"value": 8.2, "feature_extractor": "mnist-cnn", "uncertainty": {**HALF, "std": 0.27}},
            "bpd": {"value": 2.768, "stderr": 0.1034},
            "nfe_mean": {"value": 0.0},
        },
        "skipped": {"elbo_bpd": "model does not implement LowerBound"},
    }
    text = format_table(record)
    rows = _rows(text)
    assert "18.75" in rows["fid"] and "± 9.1 (half-sample se)" in rows["fid"] and "mnist-cnn" in rows["fid"]
    assert "± 360 (half-sample se)" in rows["kid_mean"] and "note 1" in rows["kid_mean"]
    assert "—: one subset" in rows["kid_std"] and "e-12" not in rows["kid_std"]
    assert "mnist-cnn" in rows["is_mean"] and "± 0.27 (half-sample se)" in rows["is_mean"]
    assert "± 0.1 (stderr)" in rows["bpd"] and "±" not in rows["nfe_mean"]
    assert "model does not implement LowerBound" in rows["elbo_bpd"]
    assert ("note 1: KID's kernel (x·y/d+1)^3 assumes features of Inception-like scale; in mnist-cnn its value is "
            "not comparable to published KID") in text.splitlines()


def test_kid_in_inception_space_with_distinct_subsets_prints_its_numbers_and_no_note() -> None:
    record = {"metrics": {"kid_mean": _kid(0.0123, "inception-v3", subset_size=1000, n=5000),
                          "kid_std": _kid(0.00045, "inception-v3", subset_size=1000, n=5000)}, "skipped": {}}
    text = format_table(record)
    rows = _rows(text)
    assert "0.0123" in rows["kid_mean"] and "0.00045" in rows["kid_std"] and "inception-v3" in rows["kid_std"]
    assert "note" not in text.split("\n", 1)[1] and "one subset" not in text


def test_eval_samples_prints_the_new_columns(capsys) -> None:
    code = main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--num-samples", "60",
                 "--metrics", "fid,kid", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert "(half-sample se)" in rows["fid"] and "identity" in rows["fid"]
    assert "—: one subset" in rows["kid_std"]  # KID's subset size is min(1000, 60, 60): every subset is both sets
    assert "in identity its value is not comparable to published KID" in out
