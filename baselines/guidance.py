"""Class-conditional flow matching and DDPM with classifier-free guidance (Ho & Salimans 2022,
"Classifier-Free Diffusion Guidance"; seeds 002 and 004#0).

One velocity network v_θ(x, t, y) takes a class label y in 0..C−1 or the null label ∅ = C. Training:
conditional flow matching on the OT path with σ_min = 0 (as ``rectified-flow``: x_t = t x1 + (1 − t) x0,
target x1 − x0; x0 ~ N(0, I) at t = 0, data at t = 1), where each example's label is replaced by ∅
with probability ``p_uncond`` (label dropout), so the same network learns the conditional and the
unconditional field.

Guided sampling at scale w (Ho & Salimans eq. 6, written for the velocity):
ṽ = (1 + w) v_θ(x, t, y) − w v_θ(x, t, ∅); w = 0 is the plain conditional model, larger w trades
diversity for fidelity to y. Integrated from x(0) = ``rng.normal`` to t = 1 by Euler or Heun steps;
a guided step (w ≠ 0) makes two network calls (conditional, then unconditional), both counted as NFE.

``cfg-ddpm`` is the same recipe for DDPM (Ho et al. 2020; ε-prediction, L_simple): ε_θ(x_i, i, y) with
label dropout, and Ho & Salimans' eq. 6 itself, ε̃ = (1 + w) ε_θ(x, i, y) − w ε_θ(x, i, ∅), in the
ancestral or DDIM sampler. Its ELBO and probability-flow ODE are those of the unconditional model
(the null label), i.e. of the marginal p(x).

Requested labels: example i of a sample set gets label i mod C (``requested_labels``), so a metric
can recompute what each sample was asked to be from its global index alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from baselines.ddpm import DDPM, DDPMConfig, check_rng
from baselines.nets import check_field_shape, field_net
from harness.core import ode
from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from harness.core.schedule import linear_decay
from harness.core.validate import finite_positive, in_choices, positive_ints, unit_interval

__all__ = ["GuidedDDPM", "GuidedDDPMConfig", "GuidedFlowConfig", "GuidedFlowMatching", "REGISTRY"]

SAMPLERS = ("euler", "heun")


@dataclass(frozen=True)
class GuidedFlowConfig:
    """Hyper-parameters of a class-conditional flow with classifier-free guidance (saved in checkpoints).

    Attributes:
        num_classes: C (labels 0..C−1; C is the null label).
        p_uncond: probability of replacing a training label by the null label (Ho & Salimans use 0.1 or 0.2).
        guidance: default guidance scale w of ``sample`` (>= 0).
        shape: (D,) rows use ``MLP``; (C, H, W) images (H, W divisible by 4) use ``SmallUNet``.
        hidden, depth: MLP width and hidden layers. base: SmallUNet channels. time_dim: time-embedding size.
        value_range: model-space range of image data; image samples are clamped to it.
        lr, lr_schedule: Adam learning rate, ``"constant"`` or ``"linear"`` (to 0 at ``steps``).
        batch_size, steps: ``genbench train`` defaults.
        sampler, sample_steps: default ODE solver (``euler`` or ``heun``) and its steps.
        ema_decay: EMA of the weights kept by the harness (0: none).
        seed: seed of the weight initialisation.
    """

    num_classes: int = 10
    p_uncond: float = 0.1
    guidance: float = 0.0
    shape: tuple[int, ...] = (1, 28, 28)
    hidden: int = 256
    depth: int = 4
    base: int = 32
    time_dim: int = 32
    value_range: tuple[float, float] = (-1.0, 1.0)
    lr: float = 1e-3
    lr_schedule: str = "constant"
    batch_size: int = 128
    steps: int = 5000
    sampler: str = "euler"
    sample_steps: int = 20
    ema_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        positive_ints(self, "num_classes", "hidden", "depth", "base", "time_dim", "batch_size", "steps", "sample_steps")
        unit_interval(self, "p_uncond", open_low=True, hint=" (the null label must be trained)")
        _check_guidance(self.guidance)
        finite_positive(self, "lr")
        in_choices(self, "lr_schedule", ("constant", "linear"))
        in_choices(self, "sampler", SAMPLERS)
        unit_interval(self, "ema_decay", hint=" (0: no EMA)")
        check_field_shape(self.shape)


def _check_guidance(w: Any) -> float:
    if isinstance(w, bool) or not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
        raise ValueError(f"guidance must be a finite number >= 0 (0: no guidance), got {w!r}")
    return float(w)


class _ClassConditional:
    """What both guided models share: the null label C, the requested labels i mod C, the label check."""

    config: Any

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    def requested_labels(self, indices: Any) -> Tensor:
        """int64 labels of the examples with these global indices: i mod C."""
        return torch.as_tensor(list(indices), dtype=torch.int64) % self.config.num_classes

    def check_labels(self, labels: Tensor) -> None:
        """Raise unless every training label is in 0..C−1."""
        c = self.config.num_classes
        if int(labels.min()) < 0 or int(labels.max()) >= c:
            raise ValueError(f"labels must be in 0..{c - 1} (num_classes={c}), got "
                             f"{int(labels.min())}..{int(labels.max())}")


class GuidedFlowMatching(_ClassConditional, nn.Module):
    """Class-conditional flow matching with label dropout; a Sampler with guidance (module docstring)."""

    uses_labels = True  # harness.train passes each batch's labels to training_step

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        c = GuidedFlowConfig(**kwargs)
        self.config = c
        self.net: nn.Module = field_net(c.shape, hidden=c.hidden, depth=c.depth, base=c.base, time_dim=c.time_dim,
                                        seed=c.seed, num_classes=c.num_classes)
        self.data_spec = DataSpec(c.shape, "continuous", c.value_range)
        self.default_steps, self.default_batch_size = c.steps, c.batch_size

    @property
    def ema_decay(self) -> float | None:
        return self.config.ema_decay or None

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator, labels: Tensor) -> dict[str, float]:
        """One Adam step of L_CFM with label dropout; x0, t and the dropout come from ``generator``."""
        (opt,) = optimizers
        c = self.config
        if c.lr_schedule == "linear":
            linear_decay(opt, c.lr, step, 0, c.steps)
        self.check_labels(labels)
        x1 = batch.to(torch.float32)
        b = x1.shape[0]
        x0 = torch.randn(x1.shape, generator=generator).to(x1.device)
        t = torch.rand(b, generator=generator).to(x1.device)
        drop = (torch.rand(b, generator=generator) < c.p_uncond).to(x1.device)
        y = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        tv = t.reshape(-1, *([1] * (x1.dim() - 1)))
        loss = (self.net(tv * x1 + (1 - tv) * x0, t, y) - (x1 - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    def guided_velocity(self, x: Tensor, t: Tensor, y: Tensor, w: float) -> Tensor:
        """ṽ = (1 + w) v(x, t, y) − w v(x, t, ∅), [B, *shape]; one network call at w = 0, two otherwise."""
        cond = self.net(x, t, y)
        if w == 0:
            return cond
        return (1.0 + w) * cond - w * self.net(x, t, torch.full_like(y, self.null_label))

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, guidance: float | None = None, sampler: str | None = None,
               steps: int | None = None) -> Tensor:
        """[n, *shape] samples of the requested labels (``requested_labels(rng.indices)``) at guidance w."""
        check_rng(n, rng)
        c = self.config
        w = _check_guidance(c.guidance if guidance is None else guidance)
        sampler = sampler or c.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        steps = c.sample_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        param = next(self.parameters())
        y = self.requested_labels(rng.indices).to(param.device)
        x0 = rng.normal(c.shape).to(device=param.device, dtype=param.dtype)
        x = ode.fixed_step(lambda x, t: self.guided_velocity(x, t.to(x.dtype), y, w), x0, 0.0, 1.0, method=sampler,
                           steps=steps)
        return x.clamp(*c.value_range) if len(c.shape) == 3 else x


@dataclass(frozen=True)
class GuidedDDPMConfig(DDPMConfig):
    """:class:`baselines.ddpm.DDPMConfig` plus the class conditioning (saved in checkpoints).

    Attributes (besides DDPM's):
        num_classes: C (labels 0..C−1; C is the null label).
        p_uncond: probability of replacing a training label by the null label.
        guidance: default guidance scale w of ``sample`` (>= 0).
    """

    num_classes: int = 10
    p_uncond: float = 0.1
    guidance: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_ints(self, "num_classes")
        unit_interval(self, "p_uncond", open_low=True, hint=" (the null label must be trained)")
        _check_guidance(self.guidance)


class GuidedDDPM(_ClassConditional, DDPM):
    """Class-conditional DDPM with label dropout and classifier-free guidance (module docstring).
    A Sampler; LowerBound and ProbabilityFlow of the unconditional (null-label) model. Config:
    :class:`GuidedDDPMConfig`."""

    uses_labels = True  # harness.train passes each batch's labels to training_step
    config_class = GuidedDDPMConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._labels: Tensor | None = None  # the labels of the current call; None: the null label
        self._w = 0.0

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.config.num_classes

    def eps_net(self, x: Tensor, t: Tensor) -> Tensor:
        """ε̃ = (1 + w) ε_θ(x, t, y) − w ε_θ(x, t, ∅) for the current call's labels y and scale w
        (one network call at w = 0 or without labels, two otherwise)."""
        null = torch.full((x.shape[0],), self.null_label, dtype=torch.int64, device=x.device)
        if self._labels is None:
            return self.net(x, t, null)
        cond = self.net(x, t, self._labels)
        if self._w == 0:
            return cond
        return (1.0 + self._w) * cond - self._w * self.net(x, t, null)

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator, labels: Tensor) -> dict[str, float]:
        """One step of L_simple with label dropout (drawn from ``generator`` before DDPM's i and ε)."""
        c = self.config
        self.check_labels(labels)
        drop = (torch.rand(len(labels), generator=generator) < c.p_uncond).to(labels.device)
        self._labels, self._w = torch.where(drop, torch.full_like(labels, self.null_label), labels), 0.0
        try:
            return super().training_step(batch, step=step, optimizers=optimizers, generator=generator)
        finally:
            self._labels = None

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, guidance: float | None = None, sampler: str = "ancestral",
               steps: int | None = None, eta: float = 0.0) -> Tensor:
        """[n, *shape] samples of the requested labels (``requested_labels(rng.indices)``) at guidance w,
        by DDPM's ``sampler`` (``ancestral`` or ``ddim``); image samples are clamped to ``value_range``."""
        check_rng(n, rng)
        w = _check_guidance(self.config.guidance if guidance is None else guidance)
        self._labels, self._w = self.requested_labels(rng.indices).to(self.alphas_bar.device), w
        try:
            x = super().sample(n, rng, sampler=sampler, steps=steps, eta=eta)
            return x.clamp(*self.config.value_range) if len(self.config.shape) == 3 else x
        finally:
            self._labels, self._w = None, 0.0


_TINY = {"hidden": 16, "depth": 2, "base": 8, "time_dim": 8, "steps": 5, "batch_size": 16, "sample_steps": 2,
         "guidance": 1.0}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("cfg-fm", "guidance", "baselines.guidance:GuidedFlowMatching",
               "class-conditional flow matching (OT path) with label dropout and classifier-free guidance (Ho & "
               "Salimans 2022): sample at --sample-option guidance=W; labels i mod C; NFE counts both passes",
               tiny_config={**_TINY, "shape": [2], "num_classes": 8}),
    ModelEntry("cfg-ddpm", "guidance", "baselines.guidance:GuidedDDPM",
               "class-conditional DDPM (eps-prediction) with label dropout and classifier-free guidance (Ho & Salimans "
               "2022, eq. 6): sample at --sample-option guidance=W; labels i mod C; bound and PF-ODE of the null label",
               tiny_config={"num_timesteps": 25, "hidden": 16, "depth": 2, "time_dim": 8, "steps": 5, "batch_size": 16,
                            "guidance": 1.0, "shape": [2], "num_classes": 8}),
)
