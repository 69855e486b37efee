"""The training loop (harness/train.py): determinism, resume, EMA, divergence, shape errors, the CLI.

All runs use a tiny Gaussian-decoder VAE (``vae-2d``) on 512 rows of ``moons-train``: a few
milliseconds per step, so the whole file takes a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines import vae as vae_module
from harness import models
from harness.checkpoint import load_checkpoint
from harness.train import TrainConfig, train

TINY = {"hidden": 16, "depth": 1, "batch_size": 64}


pytestmark = pytest.mark.usefixtures("one_thread")



def _train(tmp_path, name: str, *, steps: int, seed: int = 0, config: dict | None = None, **kwargs):
    cfg = TrainConfig(model="vae-2d", dataset="moons-train", out=str(tmp_path / name), steps=steps, seed=seed,
                      num_train=512, **kwargs)
    return train(cfg, model_config={**TINY, **(config or {})}, progress=False)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    _train(tmp_path, "a.pt", steps=12)
    _train(tmp_path, "b.pt", steps=12)
    _train(tmp_path, "c.pt", steps=12, seed=1)
    a, b, c = (load_checkpoint(tmp_path / n) for n in ("a.pt", "b.pt", "c.pt"))
    _assert_same(a.state_dict, b.state_dict)
    assert not torch.equal(a.state_dict["net.body.0.weight"], c.state_dict["net.body.0.weight"])
    assert a.meta["step"] == 12 and a.model_name == "vae-2d" and a.meta["family"] == "vae"
    # the thread count changes float reductions, hence the weights: it is part of the provenance
    assert a.meta["torch_threads"] == torch.get_num_threads() and a.meta["device"] == "cpu"


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_equals_uninterrupted_run(tmp_path, ema):
    # 512 rows / batch 64 = 8 batches per epoch: the split at step 10 falls inside the second epoch.
    config = {"ema_decay": ema}
    _train(tmp_path, "full.pt", steps=20, config=config)
    _train(tmp_path, "half.pt", steps=10, config=config)
    _train(tmp_path, "resumed.pt", steps=20, config=config, resume=str(tmp_path / "half.pt"))
    full, resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    _assert_same(full.state_dict, resumed.state_dict)
    _assert_same(full.training_state["model"], resumed.training_state["model"])
    assert torch.equal(full.training_state["generator"], resumed.training_state["generator"])
    assert resumed.meta["step"] == 20


def test_resume_refuses_another_dataset_model_or_seed(tmp_path):
    _train(tmp_path, "half.pt", steps=3)
    for change, words in (({"seed": 1}, "seed 0, not 1"),):
        with pytest.raises(ValueError, match=words):
            _train(tmp_path, "x.pt", steps=6, resume=str(tmp_path / "half.pt"), **change)
    cfg = TrainConfig(model="vae-2d", dataset="8gaussians-train", out=str(tmp_path / "y.pt"), steps=6, num_train=512,
                      resume=str(tmp_path / "half.pt"))
    with pytest.raises(ValueError, match="dataset 'moons-train', not '8gaussians-train'"):
        train(cfg, model_config=dict(TINY), progress=False)
    cfg = TrainConfig(model="vae", dataset="moons-train", out=str(tmp_path / "z.pt"), steps=6, resume=str(tmp_path / "half.pt"))
    with pytest.raises(ValueError, match="model 'vae-2d', not 'vae'"):
        train(cfg, progress=False)


def test_ema_weights_are_saved_and_differ_from_raw(tmp_path):
    decay = 0.9
    model = vae_module.vae_2d(**TINY, ema_decay=decay)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(model="vae-2d", dataset="moons-train", out=str(tmp_path / "one.pt"), steps=1, num_train=512)
    train(cfg, build=lambda: model, progress=False)
    ckpt = load_checkpoint(tmp_path / "one.pt")
    raw = model.state_dict()
    _assert_same({k: v.cpu() for k, v in raw.items()}, ckpt.training_state["model"])
    for k, v in ckpt.state_dict.items():  # one EMA update: shadow = init + (1 - decay) (raw - init)
        torch.testing.assert_close(v, init[k].lerp(raw[k], 1.0 - decay), rtol=0, atol=1e-7)
    assert not torch.equal(ckpt.state_dict["net.body.0.weight"], raw["net.body.0.weight"])
    assert ckpt.meta["ema_decay"] == decay

    _train(tmp_path, "five.pt", steps=5, config={"ema_decay": decay})
    five = load_checkpoint(tmp_path / "five.pt")
    assert not torch.equal(five.state_dict["encoder.body.0.weight"], five.training_state["model"]["encoder.body.0.weight"])


class _Diverging(vae_module.VAE):
    """Reports a NaN loss from step 3 on (the step itself is a normal VAE step)."""

    def training_step(self, batch, *, step, optimizers, generator):
        losses = super().training_step(batch, step=step, optimizers=optimizers, generator=generator)
        return {**losses, "loss": math.nan} if step >= 3 else losses


def test_nan_loss_raises_and_writes_no_final_checkpoint(tmp_path):
    out = tmp_path / "nan.pt"
    cfg = TrainConfig(model="vae-2d", dataset="moons-train", out=str(out), steps=10, num_train=512, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match="diverged at step 3"):
        train(cfg, build=lambda: _Diverging(**{**vae_module.DEFAULTS["vae-2d"], **TINY}), progress=False)
    assert not out.exists()
    assert (tmp_path / "nan.step2.pt").exists()  # the periodic checkpoint before the divergence is kept
    assert not (tmp_path / "nan.step4.pt").exists()


def test_dataset_shape_mismatch_is_a_value_error(tmp_path):
    cfg = TrainConfig(model="vae", dataset="moons-train", out=str(tmp_path / "x.pt"), steps=1, num_train=64)
    with pytest.raises(ValueError, match=r"shape \(2,\).*expects \(1, 28, 28\)"):
        train(cfg, model_config={"latent_dim": 2, "hidden": 8, "depth": 1}, progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_cli_train_end_to_end(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "cli.pt"
    rc = main(["train", "vae-2d", "--dataset", "moons-train", "--steps", "6", "--num-train", "256", "--out", str(out),
               "--model-arg", "hidden=16", "--model-arg", "depth=1", "--model-arg", "objective=iwae",
               "--model-arg", "num_samples=3", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trained vae-2d for 6 steps" in printed and "sha256" in printed
    ckpt = load_checkpoint(out)
    assert ckpt.config["objective"] == "iwae" and ckpt.config["num_samples"] == 3 and ckpt.config["data_shape"] == [2]
    # the checkpoint rebuilds through the registry (config lists become tuples again)
    model = models.build_registered(ckpt.model_name, ckpt.config)
    model.load_state_dict(ckpt.state_dict, strict=True)
    assert model.config.data_shape == (2,)

    rc = main(["train", "vae-2d", "--dataset", "moons-train", "--steps", "2", "--out", str(tmp_path / "bad.pt"),
               "--model-arg", "objective=nope", "--quiet"])
    assert rc == 2 and "objective" in capsys.readouterr().err
