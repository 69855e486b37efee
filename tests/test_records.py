"""The typed record: validation on write and read, the schema migration, non-finite values."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.store.records import read_record, write_record
from harness.store.schema import SCHEMA, Record, migrate

ROOT = Path(__file__).resolve().parents[1]
# A record as genbench wrote it in the genbench.record/1 format (results/family-tradeoff/ddpm/seed0.json
# of commit 2afd3ac), kept here so the migration stays tested when committed results are regenerated.
OLD = ROOT / "tests" / "data" / "record-schema1.json"


def test_committed_old_record_migrates_to_the_current_schema():
    raw = json.loads(OLD.read_text())
    assert raw["schema"] == "genbench.record/1"
    new = migrate(raw)
    assert new["schema"] == SCHEMA and raw["schema"] == "genbench.record/1"  # the input is left alone
    assert "bootstrap" not in new["config"] and new["config"]["replicates"] == raw["config"]["bootstrap"]
    for name in ("ode_rtol", "num_importance", "straightness_steps"):
        assert name not in new["config"] and new["config"]["model_metrics"][name] == raw["config"][name]
    unc = new["metrics"]["fid"]["uncertainty"]
    assert unc["num_replicates"] == raw["metrics"]["fid"]["uncertainty"]["num_boot"] and "num_boot" not in unc
    assert new["metrics"]["fid"]["value"] == raw["metrics"]["fid"]["value"]
    Record.from_json(new)  # valid in the current format
    assert read_record(OLD) == new  # reading migrates
    assert migrate(new) is new


def test_migration_turns_non_finite_values_into_null_with_a_reason():
    raw = json.loads(OLD.read_text())
    assert raw["schema"] == "genbench.record/1"
    raw["metrics"]["fid"]["value"] = math.inf
    new = migrate(raw)
    assert new["metrics"]["fid"]["value"] is None and "inf" in new["metrics"]["fid"]["value_reason"]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(schema="genbench.record/9"), "unknown record schema"),
    (lambda r: r.update(kind="train"), "record kind must be one of"),
    (lambda r: r["metrics"]["fid"].update(value=True), "finite number or null"),
    (lambda r: r["metrics"]["fid"].update(value=None), "no 'value_reason'"),
    (lambda r: r["metrics"]["fid"].update(uncertainty={"std": "x"}), "numeric 'std'"),
    (lambda r: r.pop("skipped"), "missing field 'skipped'"),
])
def test_invalid_records_are_refused_when_written(tmp_path, edit, message):
    record = read_record(OLD)
    edit(record)
    with pytest.raises(ValueError, match=message):
        write_record(tmp_path / "r.json", record)
    assert not (tmp_path / "r.json").exists()


def test_output_path_problems_are_found_before_the_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path, tmp_path / "afile" / "r.json"):
        code = main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--num-samples", "50",
                     "--metrics", "fid", "--replicates", "0", "--json", str(bad), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and ("is a folder" in err or "is a file" in err), err


def test_an_infinite_metric_is_stored_as_null_and_printed_as_na(tmp_path, capsys):
    # every sample far from all 8 modes: no high-quality sample, reverse KL over modes is +inf
    far = tmp_path / "far.npz"
    np.savez(far, x=np.full((60, 2), 10.0, dtype=np.float32))
    out = tmp_path / "r.json"
    code = main(["eval-samples", "--samples", str(far), "--reference", "8gaussians-train", "--num-samples", "60",
                 "--metrics", "fid", "--replicates", "0", "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    entry = read_record(out)["metrics"]["mode_reverse_kl"]
    assert entry["value"] is None and "high quality" in entry["value_reason"]
    assert "mode_reverse_kl" in printed and "n/a" in printed


def test_mode_metrics_follow_the_reference_metadata_not_its_name(tmp_path):
    from harness.core.densities import EIGHT_GAUSSIANS
    from harness.datasets import load_dataset

    ref = load_dataset("8gaussians-train", num_samples=300, seed=0)
    path_with, path_without = tmp_path / "ring.npz", tmp_path / "plain.npz"
    np.savez(path_with, x=ref.x, mixture_centers=EIGHT_GAUSSIANS.centers, mixture_std=np.float64(EIGHT_GAUSSIANS.std))
    np.savez(path_without, x=ref.x)
    for reference, has_modes in ((str(path_with), True), (str(path_without), False), ("8gaussians-test", True)):
        out = tmp_path / "m.json"
        assert main(["eval-samples", "--samples", "8gaussians-test", "--reference", reference, "--num-samples", "300",
                     "--metrics", "fid", "--replicates", "0", "--json", str(out), "--quiet"]) == 0
        metrics = read_record(out)["metrics"]
        assert ("modes_covered" in metrics) is has_modes, reference
        if has_modes:
            assert metrics["modes_covered"]["value"] == 8


def test_old_bootstrap_flag_is_accepted_with_a_warning(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--num-samples", "60",
                 "--metrics", "fid", "--bootstrap", "0", "--json", str(out), "--quiet"]) == 0
    assert "now called 'replicates'" in capsys.readouterr().err
    assert read_record(out)["config"]["replicates"] == 0


def test_from_results_checks_every_record_before_writing_any_table(tmp_path, capsys):
    import shutil

    results, out = tmp_path / "results", tmp_path / "out"
    shutil.copytree(ROOT / "results", results)
    victim = results / "vae-latent-sweep" / "z2" / "seed0.json"
    victim.write_text(victim.read_text()[:200])  # truncated
    code = main(["leaderboard", "--from-results", "--results", str(results), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and str(victim) in err and "not readable JSON" in err
    assert not out.exists() or not list(out.glob("*.md"))  # no table of any suite was rewritten


def test_a_bare_null_of_schema_1_reads_with_a_reason(tmp_path):
    raw = json.loads(OLD.read_text())
    raw["metrics"]["fid"]["value"] = None  # how schema 1 stored an infinite reverse KL
    (tmp_path / "r.json").write_text(json.dumps(raw))
    entry = read_record(tmp_path / "r.json")["metrics"]["fid"]
    assert entry["value"] is None and "not finite" in entry["value_reason"]
