"""End-to-end tests of `genbench eval`: capabilities planned, likelihoods, NFE, checkpoints, errors."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from baselines.analytic import AffineFlow
from harness.checkpoint import save_checkpoint
from harness.cli import main
from harness.store.records import read_record


def _eval(tmp_path, *args: str) -> tuple[int, dict | None]:
    out = tmp_path / "record.json"
    code = main(["eval", *args, "--json", str(out), "--quiet"])
    return code, read_record(out) if out.exists() else None


def test_linear_vae_gets_every_applicable_metric(tmp_path):
    code, record = _eval(
        tmp_path, "--model", "linear-gaussian-vae", "--model-arg", "data_dim=4", "--model-arg", "latent_dim=2",
        "--dataset", "gaussian-4-test", "--num-samples", "300", "--num-importance", "20", "--batch-size", "64",
    )
    assert code == 0
    m = record["metrics"]
    assert {"bpd", "elbo_bpd", "iwae_bpd", "active_units", "kl_active_dims", "fid", "kid_mean", "precision",
            "nfe_mean", "samples_per_s"} <= set(m)
    assert "is" in record["skipped"]  # identity features have no logits
    assert set(record["model"]["capabilities"]) >= {"Sampler", "LogLikelihood", "LowerBound", "Encoder"}
    # Bits/dim bounds are upper bounds of the exact value: ELBO >= IWAE_20 >= exact, on the same rows.
    assert m["elbo_bpd"]["value"] >= m["iwae_bpd"]["value"] >= m["bpd"]["value"]
    assert m["iwae_bpd"]["num_importance"] == 20
    assert m["bpd"]["estimator"] == "exact" and m["bpd"]["stderr"] > 0 and m["bpd"]["n"] == 300
    # The decoder (model.net) runs once per batch of samples: one evaluation per sample.
    assert m["nfe_mean"]["value"] == 1.0
    assert m["active_units"]["value"] <= 2


def test_uniform_categorical_is_eight_bits_per_dim(tmp_path):
    code, record = _eval(tmp_path, "--model", "uniform-categorical", "--model-arg", "shape=[1,28,28]",
                         "--dataset", "mnist5k-test", "--metrics", "bpd", "--num-samples", "50")
    assert code == 0
    assert record["metrics"]["bpd"]["value"] == pytest.approx(8.0, abs=1e-12)
    assert record["metrics"]["bpd"]["offset_bits"] == 0


def test_checkpoint_round_trip_records_its_hash(tmp_path):
    model = AffineFlow(3, seed=7)
    with torch.no_grad():
        model.log_scale.add_(0.7)
    path = tmp_path / "flow.pt"
    sha = save_checkpoint(path, model_name="affine-flow", config={"dim": 3, "seed": 7},
                          state_dict=model.state_dict(), meta={"note": "test"})
    code, record = _eval(tmp_path, "--checkpoint", str(path), "--dataset", "gaussian-3-test",
                         "--metrics", "bpd", "--num-samples", "100")
    assert code == 0
    assert record["model"]["checkpoint_sha256"] == sha
    assert record["run"]["host"]["torch_threads"] == torch.get_num_threads()
    from harness.datasets import load_dataset

    x = torch.from_numpy(load_dataset("gaussian-3-test", num_samples=100, seed=1).x).to(torch.float64)
    with torch.no_grad():
        expected = float((-model.log_prob(x) / (3 * math.log(2))).mean())
    assert record["metrics"]["bpd"]["value"] == pytest.approx(expected, rel=1e-10)


def test_probability_flow_bpd_is_recorded_with_its_protocol(tmp_path):
    code, record = _eval(tmp_path, "--model", "gaussian-vp", "--model-arg", "dim=4", "--dataset", "gaussian-4-test",
                         "--metrics", "bpd", "--num-samples", "20", "--ode-divergence", "exact")
    assert code == 0
    bpd = record["metrics"]["bpd"]
    assert bpd["estimator"] == "exact" and bpd["solver"] == "dopri5" and bpd["rtol"] == 1e-5
    assert bpd["nfe_mean"] > 0 and bpd["forward_calls"] > 0
    # The model's score is exact for gaussian-<d>: PF-ODE bits/dim equal the closed form.
    from harness.datasets import gaussian_density, load_dataset

    x = load_dataset("gaussian-4-test", num_samples=20, seed=1).x
    truth = float((-gaussian_density(4).log_prob(x) / (4 * math.log(2))).mean())
    assert bpd["value"] == pytest.approx(truth, abs=1e-3)


def test_requested_metric_without_capability_is_refused(tmp_path, capsys):
    code, record = _eval(tmp_path, "--model", "uniform-categorical", "--model-arg", "shape=[2]",
                         "--dataset", "moons-test", "--metrics", "elbo_bpd")
    assert code == 2 and record is None
    assert "needs a model implementing LowerBound" in capsys.readouterr().err


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    code, record = _eval(tmp_path, "--checkpoint", str(bad), "--dataset", "moons-test")
    assert code == 2 and record is None
    assert str(bad) in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save(AffineFlow(2).state_dict(), foreign)
    code, record = _eval(tmp_path, "--checkpoint", str(foreign), "--dataset", "moons-test")
    assert code == 2 and record is None
    assert "--entry" in capsys.readouterr().err


def test_nan_model_output_is_refused_and_nothing_written(tmp_path, capsys):
    entry = tmp_path / "nan_model.py"
    entry.write_text(textwrap.dedent("""
        import torch
        from harness.core.protocols import DataSpec

        class NaNFlow:
            data_spec = DataSpec((2,))
            def log_prob(self, x):
                return torch.full((x.shape[0],), float("nan"))

        def build():
            return NaNFlow()
    """))
    code, record = _eval(tmp_path, "--entry", f"{entry}:build", "--dataset", "moons-test", "--num-samples", "10")
    assert code == 2 and record is None
    assert "NaN" in capsys.readouterr().err


def test_entry_without_any_capability_is_refused(tmp_path, capsys):
    entry = tmp_path / "nothing.py"
    entry.write_text("def build():\n    return object()\n")
    code, _ = _eval(tmp_path, "--entry", f"{entry}:build", "--dataset", "moons-test")
    assert code == 2
    assert "implements none of the capability protocols" in capsys.readouterr().err


def test_diffusers_unet_through_the_cli(tmp_path):
    pytest.importorskip("diffusers", reason="diffusers is the optional extra genbench[diffusers]")
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    DDPMScheduler(num_train_timesteps=20).save_pretrained(tmp_path / "pipe" / "scheduler")
    code, record = _eval(
        tmp_path, "--model", "diffusers-unet", "--model-arg", f"path={tmp_path / 'pipe'}",
        "--dataset", "digits-test", "--metrics", "nfe,bpd", "--sampler", "ddim", "--steps", "3",
        "--num-samples", "4", "--ode-solver", "euler", "--ode-steps", "3",
    )
    assert code == 0
    m = record["metrics"]
    assert m["nfe_mean"]["value"] == 3.0 and m["nfe_mean"]["steps"] == 3
    assert math.isfinite(m["bpd"]["value"]) and m["bpd"]["offset_bits"] == pytest.approx(7.0)
    assert m["bpd"]["nfe_mean"] == 3.0


def test_ls_models_lists_family_and_capabilities(capsys):
    assert main(["ls", "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "[flow]" in lines["affine-flow"] and "{Sampler, LogLikelihood}" in lines["affine-flow"]
    assert "ProbabilityFlow" in lines["ddpm"] and "LowerBound" in lines["ddpm"]
    assert "Encoder" in lines["vae"]


def test_sample_options_reach_model_sample_and_bad_ones_are_refused(tmp_path, capsys):
    """--sample-option forwards keyword arguments of model.sample (here the score SDE's final denoising step)."""
    from harness.models import MODELS

    tiny = MODELS.get("score-sde-ve").tiny_config
    base = ["--model", "score-sde-ve", *(f"--model-arg={k}={v}" for k, v in tiny.items()), "--dataset", "moons-test",
            "--metrics", "fid", "--num-samples", "50", "--bootstrap", "0", "--sampler", "pc", "--steps", "3"]
    code, with_denoise = _eval(tmp_path, *base)
    code2, without = _eval(tmp_path, *base, "--sample-option", "denoise=false")
    assert code == code2 == 0
    assert without["config"]["sample_options"] == [["denoise", False]]
    assert with_denoise["metrics"]["fid"]["value"] != without["metrics"]["fid"]["value"]
    code, _ = _eval(tmp_path, *base, "--sample-option", "temperature=2")
    assert code == 2 and "does not accept ['temperature']" in capsys.readouterr().err


def test_straightness_of_a_flow_matching_model_is_recorded(tmp_path):
    from harness.models import MODELS

    tiny = MODELS.get("fm-ot").tiny_config
    code, record = _eval(tmp_path, "--model", "fm-ot", *(f"--model-arg={k}={v}" for k, v in tiny.items()),
                         "--dataset", "moons-test", "--metrics", "straightness", "--num-samples", "40")
    assert code == 0
    s = record["metrics"]["straightness"]
    assert s["value"] > 0 and s["stderr"] > 0 and s["euler_steps"] == 100 and len(s["block_means"]) == 20
    code, _ = _eval(tmp_path, "--model", "affine-flow", "--model-arg", "dim=2", "--dataset", "gaussian-2-test",
                    "--metrics", "straightness")
    assert code == 2


def test_unknown_metric_names_are_refused(tmp_path, capsys):
    code, _ = _eval(tmp_path / "x", "--model", "affine-flow", "--model-arg", "dim=2", "--dataset", "gaussian-2-test",
                    "--metrics", "fid,precision")
    assert code == 2 and "unknown metric(s) ['precision']" in capsys.readouterr().err


def test_without_inception_weights_the_unrequested_sample_metrics_are_skipped_and_the_rest_run(tmp_path, monkeypatch, capsys):
    """Offline and without weights: the ELBO and active units of a VAE need no Inception network, so
    `genbench eval` without --metrics runs them and says why FID and the others were skipped; asking
    for FID explicitly stays an error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("GENBENCH_OFFLINE", "1")
    monkeypatch.delenv("GENBENCH_INCEPTION_WEIGHTS", raising=False)
    args = ["eval", "--model", "vae", "--model-arg", "latent_dim=4", "--dataset", "mnist5k-test", "--num-samples", "20",
            "--quiet", "--no-cache", "--replicates", "0"]
    out = tmp_path / "r.json"
    assert main([*args, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert "elbo_bpd" in record["metrics"] and "active_units" in record["metrics"]
    assert "fid" not in record["metrics"]
    assert "weights not found" in record["skipped"]["fid"] and "--feature-extractor mnist-cnn" in record["skipped"]["fid"]
    capsys.readouterr()
    assert main([*args, "--metrics", "fid,elbo_bpd"]) == 2
    assert "inception" in capsys.readouterr().err.lower()


def test_eval_refuses_more_samples_than_reference_rows_unless_allowed(tmp_path, capsys):
    """A 60-row reference: 100 samples against it would be scored against 60 without a word."""
    import numpy as np

    np.savez(tmp_path / "ref.npz", x=np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32))
    args = ["eval", "--model", "affine-flow", "--model-arg", "dim=2", "--dataset", str(tmp_path / "ref.npz"),
            "--num-samples", "100", "--metrics", "fid", "--quiet", "--replicates", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--num-samples 100 exceeds the 60 rows" in err and "--allow-fewer-reference" in err
    out = tmp_path / "r.json"
    assert main([*args, "--allow-fewer-reference", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["data"]["dataset"]["selection"]["n_used"] == 60 and record["metrics"]["fid"]["n_samples"] == 100
