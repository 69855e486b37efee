"""One contract for every registered model with a ``tiny_config`` (every family, not only VAEs).

The cases are collected from ``harness.models.MODELS`` at import time, so a family whose module is
listed in ``harness.models.BASELINE_MODULES`` is covered automatically. Per model:

1. build it from ``tiny_config`` (a model with a registered ``teacher`` gets a 3-step teacher
   checkpoint as ``teacher_checkpoint``) and train 3 steps with ``harness.train.train`` on a data set
   matching its ``data_spec.shape``: (2,) -> ``moons-train`` (``8gaussians-train``, whose labels are
   the modes, for a class-conditional model); (1, 28, 28) -> ``mnist5k-train``
   (other shapes are skipped with the reason);
2. ``sample`` (Sampler) returns ``[n, *shape]`` with dtype float32 (continuous) / int64 (discrete)
   and values in range. "Range" means: discrete -> integers in [0, num_categories); continuous
   images -> within ``value_range`` (after the model's own clamp: the harness rounds and clamps
   anyway, but a model whose samples leave its declared range is reporting the wrong spec);
   continuous rows (2-D / tabular) -> finite only, since row data have no declared bounds;
3. ``log_prob`` (LogLikelihood) and ``elbo`` (LowerBound, k = 1 and k = 3) are finite with shape [B]
   on test inputs mapped by the harness (``metrics.likelihood.model_inputs``);
4. checkpoint -> ``harness.runner.load_model`` -> re-save -> load again gives the same weights and
   identical samples at a fixed seed, and sampling twice with one seed is identical;
5. ``evaluate_model(..., metrics=("nfe",))`` records ``nfe_mean`` (> 0) for samplers with a network
   (``net``), and says why it cannot for the others.
"""

from __future__ import annotations

import pytest
import torch

from harness import models
from harness.checkpoint import save_checkpoint
from harness.core.protocols import LogLikelihood, LowerBound, Sampler
from harness.core.rng import BatchRNG

CASES = sorted(name for name in models.MODELS.names() if models.MODELS.get(name).tiny_config is not None)
# Architecture options that build a different network from the same registered name: the contract holds for them too.
VARIANTS = {
    "realnvp[2-scale]": ("realnvp", {"shape": [1, 28, 28], "num_scales": 2, "num_couplings": 1, "hidden": 8,
                                     "conditioner_depth": 2, "batch_size": 16}),
    "pixelcnn-binary[gated]": ("pixelcnn-binary", {"gated": True}),
    "maf[image]": ("maf", {"shape": [1, 8, 8], "hidden": 64}),
    "iaf[image]": ("iaf", {"shape": [1, 8, 8], "hidden": 64}),
    "consistency-ct[image]": ("consistency-ct", {"shape": [1, 28, 28], "base": 8, "batch_size": 8}),
    "consistency-cd[image]": ("consistency-cd", {"shape": [1, 28, 28], "base": 8, "batch_size": 8}),
    "latent-fm[f=1]": ("latent-fm", {"factor": 1, "ae_steps": 0}),
    "cfg-fm[image]": ("cfg-fm", {"shape": [1, 28, 28], "num_classes": 10}),
    "cfg-ddpm[image]": ("cfg-ddpm", {"shape": [1, 28, 28], "num_classes": 10, "base": 8}),
    "latent-fm[f=2]": ("latent-fm", {"factor": 2}),
    "latent-fm[f=7]": ("latent-fm", {"factor": 7}),
}
DATASETS = {(2,): "moons", (1, 28, 28): "mnist5k", (1, 8, 8): "digits"}
NUM_TRAIN = 512  # rows drawn for toy sets (image sets are fixed files)


pytestmark = pytest.mark.usefixtures("one_thread")


def _sample(model, n: int = 6, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model.sample(n, BatchRNG(seed, range(n)))


def _check_samples(x: torch.Tensor, spec, n: int) -> None:
    assert tuple(x.shape) == (n, *spec.shape)
    if spec.kind == "discrete":
        assert x.dtype == torch.int64
        assert int(x.min()) >= 0 and int(x.max()) < spec.num_categories
    else:
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()
        if len(spec.shape) == 3:
            lo, hi = spec.value_range
            assert float(x.min()) >= lo and float(x.max()) <= hi


def test_there_are_cases():
    assert CASES, "no registered model has a tiny_config"


@pytest.mark.parametrize("case", CASES + sorted(VARIANTS))
def test_model_contract(case, tmp_path):
    from harness.datasets import load_dataset
    from harness.runner import ModelEvalConfig, evaluate_model, load_model
    from harness.train import TrainConfig, train
    from metrics.likelihood import model_inputs

    name, extra = VARIANTS.get(case, (case, {}))
    tiny_config = {**models.MODELS.get(name).tiny_config, **extra}
    built = models.build_registered(name, tiny_config)
    spec = built.data_spec
    base = DATASETS.get(tuple(spec.shape))
    if getattr(built, "uses_labels", False) and base == "moons":
        base = "8gaussians"  # a class-conditional model needs labels: the mode index of each point
    if base is None:
        pytest.skip(f"no contract data set for shape {spec.shape}; known: {sorted(DATASETS)}")

    teacher = models.MODELS.get(name).teacher
    if teacher is not None:  # a distilled model: a 3-step teacher of the registered kind first
        teacher_out = tmp_path / "teacher.pt"
        train(TrainConfig(model=teacher, dataset=f"{base}-train", out=str(teacher_out), steps=3, seed=0,
                          num_train=NUM_TRAIN), model_config={**models.MODELS.get(teacher).tiny_config, **extra},
              progress=False)
        tiny_config["teacher_checkpoint"] = str(teacher_out)

    out = tmp_path / f"{name}.pt"
    summary = train(TrainConfig(model=name, dataset=f"{base}-train", out=str(out), steps=3, seed=0,
                                num_train=NUM_TRAIN), model_config=dict(tiny_config), progress=False)
    assert summary["steps"] == 3 and out.exists()

    loaded = load_model(ModelEvalConfig(dataset=f"{base}-test", checkpoint=str(out)))
    model = loaded.model
    assert loaded.description["name"] == name

    if isinstance(model, Sampler):
        x = _sample(model)
        _check_samples(x, model.data_spec, 6)
        assert torch.equal(x, _sample(model)), "sampling twice with one seed must give identical samples"
        # save -> load round trip: same weights, identical samples
        again = tmp_path / "again.pt"
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if isinstance(model, torch.nn.Module) else {}
        save_checkpoint(again, model_name=name, config=loaded.description["config"], state_dict=state, meta={})
        reloaded = load_model(ModelEvalConfig(dataset=f"{base}-test", checkpoint=str(again))).model
        assert torch.equal(_sample(reloaded), x)
        record = evaluate_model(ModelEvalConfig(dataset=f"{base}-test", checkpoint=str(out), num_samples=8,
                                                batch_size=8, metrics=("nfe",)), progress=False)
        if isinstance(getattr(model, "net", None), torch.nn.Module):
            assert record["metrics"]["nfe_mean"]["value"] > 0
        else:  # nothing to count (the analytic and reference samplers): they declare it
            assert record["metrics"]["nfe_mean"]["value"] == model.nfe_per_sample == record["metrics"]["nfe_mean"]["declared"]
            assert record["metrics"]["samples_per_s"]["value"] > 0

    data = load_dataset(f"{base}-test", num_samples=16, seed=1)
    raw = torch.as_tensor(data.x[:4])
    inputs, _, _ = model_inputs(raw, model.data_spec, BatchRNG(0, range(4)))
    with torch.no_grad():
        if isinstance(model, LogLikelihood):
            lp = model.log_prob(inputs)
            assert lp.shape == (4,) and torch.isfinite(lp).all()
        if isinstance(model, LowerBound):
            # Models whose bound has no importance-weighted form say so (supports_importance_sampling).
            for k in (1, 3) if getattr(model, "supports_importance_sampling", True) else (1,):
                torch.manual_seed(0)
                bound = model.elbo(inputs, num_importance=k)
                assert bound.shape == (4,) and torch.isfinite(bound).all(), k


@pytest.mark.parametrize("name, field, bad, instead", [
    ("maf", "direction", "iaf", "'iaf'"), ("score-ism", "objective", "dsm", "'score-dsm'"),
    ("vq-vae", "prior", "uniform", "'vq-vae-uniform'"), ("rbm-pcd", "training", "cd", "'rbm'"),
    ("rbm-pcd", "training", "gibbs", "one of the models 'rbm-pcd', 'rbm'"),
    ("score-ssm", "objective", "sliced", "one of the models 'score-ssm', 'score-ism', 'score-dsm'")])
def test_a_model_that_fixes_a_field_refuses_a_contradicting_override(name, field, bad, instead):
    """Registered variants that fix one config field (``maf`` is ``direction="maf"``) refuse the other
    value and name the model that has it, instead of silently building something else."""
    with pytest.raises(ValueError, match=f"{field}='{bad}' contradicts the model '{name}'.*use (the model )?{instead} instead"):
        models.MODELS.get(name).build({field: bad})
