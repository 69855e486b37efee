"""``genbench train``: one loop for every baseline family, with EMA, checkpoints and resume.

A trainable model implements :class:`Trainable`: it builds its own optimizers and performs one
optimisation step on a batch (a GAN does its critic and generator updates inside one step). The
harness owns everything around it: seeded minibatches, the data-to-model-space conversion, an
exponential moving average of the weights where the model asks for one (``ema_decay``), a
progress bar, periodic and final self-describing checkpoints, and resume.

Data reaches ``training_step`` in model space (:func:`data_to_model`): 8-bit images become floats
in ``data_spec.value_range`` (continuous models dequantize themselves if they need to), or integer
levels for discrete models; 2-D and tabular rows are float32 as stored.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from harness.checkpoint import load_checkpoint, save_checkpoint, weights_sha256
from harness.core.device import check_device
from harness.core.ema import EMA
from harness.core.heartbeat import Heartbeat
from harness.core.levels import pixels_to_levels
from harness.core.protocols import DataSpec
from harness.datasets import load_dataset

log = logging.getLogger(__name__)


@runtime_checkable
class Trainable(Protocol):
    """What ``genbench train`` needs from a model (an ``nn.Module`` with a ``data_spec``).

    Optional attributes: ``ema_decay: float | None`` (the harness keeps an EMA of the weights and
    evaluates / saves it), ``default_batch_size: int``, ``default_steps: int``,
    ``uses_labels: bool`` (class-conditional: ``training_step`` also gets ``labels=`` int64 [B], the
    batch's labels), ``init_checkpoint: str | None`` (a genbench checkpoint of the same model whose weights are
    loaded, strictly, before ``configure_optimizers``: fine-tuning), ``teacher_checkpoint: str | None``
    with ``set_teacher(module)`` (a genbench checkpoint of another model, loaded frozen on the same
    device and handed to the model before training: distillation).
    """

    data_spec: DataSpec

    def configure_optimizers(self) -> list[torch.optim.Optimizer]: ...

    # All randomness of a step (noise, timesteps, masks) must be drawn from ``generator`` (on the
    # CPU, then moved), so that a run is reproducible and a resumed run continues identically.
    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]: ...


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``genbench train`` (the model's own hyper-parameters live in its config)."""

    model: str
    dataset: str
    out: str
    steps: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"  # resolved in __post_init__ (harness.core.device.check_device)
    checkpoint_every: int = 0  # 0: only the final checkpoint
    resume: str | None = None
    num_train: int | None = None  # rows drawn for generated (toy) sets; default 10,000

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        object.__setattr__(self, "device", check_device(self.device))


def data_to_model(x: np.ndarray | Tensor, spec: DataSpec) -> Tensor:
    """A data batch (uint8 images [B, C, H, W] or float rows [B, D]) in the model's space."""
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8:
        return x.to(torch.float32)
    if spec.kind == "discrete":  # K levels: round(v (K − 1) / 255) (harness.core.levels; K = 2 binarizes at 128)
        return pixels_to_levels(x, spec.num_categories or 256)
    lo, hi = spec.value_range
    return lo + x.to(torch.float32) * ((hi - lo) / 255.0)


def _config_dict(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        return {}
    return asdict(config) if is_dataclass(config) else dict(config)


class _Batches:
    """Endless shuffled minibatch indices: a fresh ``randperm`` from ``generator`` at the start of each
    epoch (drawn when the epoch's first batch is taken), the last ``n % batch_size`` rows dropped.

    The current permutation and position are part of the training state (:meth:`state`), so a run
    resumed mid-epoch continues with the same batches as an uninterrupted run.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, state: dict[str, Any] | None = None) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.perm: Tensor | None = state["perm"] if state else None
        self.pos = int(state["pos"]) if state else 0

    def __next__(self) -> Tensor:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict[str, Any] | None:
        return None if self.perm is None else {"perm": self.perm, "pos": self.pos}


def _load_teacher(path: str, device: str) -> nn.Module:
    """The frozen model of the genbench checkpoint ``path`` on ``device`` (a distillation teacher)."""
    from harness.runner import ModelEvalConfig, load_model

    if not Path(path).is_file():
        raise FileNotFoundError(f"teacher_checkpoint {path} does not exist; train the teacher first "
                                "(genbench train fm-ot ... --out FLOW.pt) and pass --model-arg teacher_checkpoint=FLOW.pt")
    return load_model(ModelEvalConfig(dataset="-", checkpoint=path, device=device)).model.requires_grad_(False)


def train(
    cfg: TrainConfig,
    *,
    build: Callable[[], nn.Module] | None = None,
    model_config: dict[str, Any] | None = None,
    progress: bool = True,
    heartbeat: bool = False,
) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; write checkpoints; return a summary.

    ``build`` overrides the registry (tests); ``model_config`` is passed to the registered factory.
    ``progress`` shows a progress bar; ``heartbeat`` (without a bar) prints a progress line every
    30 s or 10% of the steps (``harness.core.heartbeat``), for logs.
    """
    from harness.models import MODELS, build_registered

    start_time = time.perf_counter()
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None and resume.training_state is None:
        raise ValueError(f"{cfg.resume} has no training state (it is an evaluation-only checkpoint); cannot resume")
    if resume is not None:
        for what, theirs, ours in (("model", resume.model_name, cfg.model), ("dataset", resume.meta.get("dataset"), cfg.dataset),
                                   ("seed", resume.meta.get("seed"), cfg.seed)):
            if theirs is not None and theirs != ours:
                raise ValueError(f"--resume {cfg.resume} was trained with {what} {theirs!r}, not {ours!r}; "
                                 f"resume with {'genbench train ' + str(theirs) if what == 'model' else f'--{what} {theirs}'} "
                                 "or start a new run without --resume")
    config = dict(resume.config) if resume is not None else dict(model_config or {})
    model = build() if build is not None else build_registered(cfg.model, config)
    if not isinstance(model, Trainable) or not isinstance(model, nn.Module):
        raise TypeError(f"model {cfg.model!r} is not trainable: it must be an nn.Module with data_spec, "
                        "configure_optimizers() and training_step(...)")
    family = MODELS.get(cfg.model).family if cfg.model in MODELS else "custom"
    model = model.to(cfg.device).train()
    init = getattr(model, "init_checkpoint", None)
    if init and resume is None:
        model.load_state_dict(load_checkpoint(init).state_dict, strict=True)
    teacher = getattr(model, "teacher_checkpoint", None)
    if teacher:
        model.set_teacher(_load_teacher(teacher, cfg.device))
    optimizers = model.configure_optimizers()
    decay = getattr(model, "ema_decay", None)
    ema = EMA(model, decay) if decay else None
    generator = torch.Generator().manual_seed(cfg.seed)  # every random draw of training comes from here
    step = 0
    if resume is not None:
        state = resume.training_state
        model.load_state_dict(state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        if ema is not None:
            ema.shadow.load_state_dict(resume.state_dict)
        generator.set_state(state["generator"])
        step = int(state["step"])
    data = load_dataset(cfg.dataset, num_samples=cfg.num_train, seed=cfg.seed)
    steps = cfg.steps or getattr(model, "default_steps", 1000)
    batch_size = min(cfg.batch_size or getattr(model, "default_batch_size", 128), len(data))
    spec: DataSpec = model.data_spec
    if tuple(data.x.shape[1:]) != spec.shape:
        raise ValueError(f"dataset {cfg.dataset!r} rows have shape {tuple(data.x.shape[1:])} but model "
                         f"{cfg.model!r} expects {spec.shape}; pass a matching model config")
    labels = None
    if getattr(model, "uses_labels", False):  # class-conditional: each batch's labels go to training_step(labels=)
        if data.labels is None:
            raise ValueError(f"model {cfg.model!r} is class-conditional but dataset {cfg.dataset!r} has no labels; "
                             "train it on a labelled set (mnist5k, digits, fashion-mnist, 8gaussians, 25gaussians)")
        labels = torch.as_tensor(data.labels, dtype=torch.int64)
    out = Path(cfg.out)
    history: list[dict[str, float]] = []

    weight_hashes: dict[str, str] = {}

    def checkpoint(path: Path) -> str:
        weights = (ema.shadow if ema is not None else model).state_dict()
        meta = {"family": family, "dataset": cfg.dataset, "dataset_content_hash": data.content_hash,
                "step": step, "seed": cfg.seed, "batch_size": batch_size, "ema_decay": decay,
                "last_losses": history[-1] if history else {}, "wall_time_s": round(time.perf_counter() - start_time, 3),
                "device": str(cfg.device), "torch_threads": torch.get_num_threads()}
        training_state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                          "generator": generator.get_state(), "step": step}
        if batches.state() is not None:
            training_state["batches"] = batches.state()
        weight_hashes[path.name] = weights_sha256(weights)
        return save_checkpoint(path, model_name=cfg.model, config=_config_dict(model), state_dict=weights,
                               meta=meta, training_state=training_state)

    batches = _Batches(len(data), batch_size, generator, resume.training_state.get("batches") if resume else None)
    bar = tqdm(total=steps, initial=step, desc=f"train {cfg.model}", unit="step", disable=not progress)
    beat = Heartbeat(f"train {cfg.model}", steps, start=step, enabled=heartbeat and not progress)
    while step < steps:
        idx = next(batches).numpy()
        batch = data_to_model(data.x[idx], spec).to(cfg.device)
        extra = {"labels": labels[idx].to(cfg.device)} if labels is not None else {}
        losses = model.training_step(batch, step=step, optimizers=optimizers, generator=generator, **extra)
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(f"training diverged at step {step}: {bad}; nothing after the last checkpoint was saved")
        if ema is not None:
            ema.update(model)
        step += 1
        history.append(losses)
        bar.update(1)
        if step % 50 == 0 or step == steps:
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
        beat.update(step, ", ".join(f"{k}={v:.4g}" for k, v in losses.items()))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps:
            checkpoint(out.with_name(f"{out.stem}.step{step}{out.suffix}"))
    bar.close()
    sha = checkpoint(out)
    return {"checkpoint": str(out), "sha256": sha, "weights_sha256": weight_hashes[out.name], "steps": step,
            "last_losses": history[-1] if history else {},
            "wall_time_s": time.perf_counter() - start_time, "torch_threads": torch.get_num_threads()}
