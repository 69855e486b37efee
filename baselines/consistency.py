"""Consistency models (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", ICML; seed 004#2):
one network that maps any point of a probability-flow ODE trajectory to the trajectory's origin.

Conventions (Song et al. 2023, sec. 2, with Karras et al. 2022's VE parameterisation): data x at
σ = ε, the noised state x_σ = x + σ z, z ~ N(0, I), σ in [ε, T] (ε = ``sigma_min`` = 0.002,
T = ``sigma_max`` = 80). The probability-flow ODE is dx/dσ = (x − D(x, σ)) / σ with D the denoiser
E[x | x_σ] (Karras et al. 2022, eq. 3 with s = 1, σ(t) = t).

Consistency function (Song et al. 2023, eq. 5 and Appendix C):

    f_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ)),
    c_skip = σ_d² / ((σ − ε)² + σ_d²),  c_out = σ_d (σ − ε) / sqrt(σ_d² + σ²),
    c_in = 1 / sqrt(σ² + σ_d²),  c_noise = ¼ ln σ   (σ_d = ``sigma_data``),

so f_θ(x, ε) = x exactly (the boundary condition). F_θ is ``self.net`` (an MLP for rows, the
SmallUNet for images; both multiply their time input by 1000, the reference code's 1000 · ¼ ln σ).

Discretisation (eq. in sec. 3, Karras et al. 2022 eq. 5): N points
t_i = (ε^{1/ρ} + (i − 1)/(N − 1) (T^{1/ρ} − ε^{1/ρ}))^ρ, i = 1..N, ρ = 7.

Training (both with the EMA target network θ⁻ ← stopgrad(μ θ⁻ + (1 − μ) θ), the buffer
``target_net``, and λ(t_n) = 1):

* ``"cd"`` — consistency distillation (Algorithm 2): n ~ U{1, …, N − 1}, x_{t_{n+1}} = x + t_{n+1} z,
  x̂_{t_n} = one Heun step (Karras et al. 2022, Algorithm 1) of the teacher's ODE from t_{n+1} to
  t_n, loss d(f_θ(x_{t_{n+1}}, t_{n+1}), f_θ⁻(x̂_{t_n}, t_n)); fixed N = ``num_scales`` and μ = ``target_ema``
  (the paper's CIFAR-10 settings are N = 18, μ = 0.95). The teacher is a trained flow of this project
  (:class:`baselines.flow_matching.FlowMatching` or a subclass whose path ends exactly at the data, such
  as ``fm-ot``, ``rectified-flow``, ``interpolant-linear``, ``interpolant-trig``): its path
  ψ_t = a_t x1 + b_t x0 is the VE state at σ = b_t / a_t scaled by a_t, and its velocity
  v = E[a'_t x1 + b'_t x0 | ψ_t] gives D(x, σ) = E[x1 | ψ_t = a_t x] = (v − b'_t x_t / b_t) / (a'_t − b'_t a_t / b_t)
  (:meth:`ConsistencyModel.teacher_denoiser`). The teacher is named by ``teacher_checkpoint`` and
  loaded by the training loop (``harness.train``); evaluation never needs it.
* ``"ct"`` — consistency training (Algorithm 3), no teacher: x̂_{t_n} = x + t_n z with the same z,
  and the schedules of sec. 5 / Appendix C: N(k) = ⌈sqrt(k/K ((s1 + 1)² − s0²) + s0²) − 1⌉ + 1 and
  μ(k) = exp(s0 ln μ0 / N(k)), k the step, K = ``steps`` (the paper's CIFAR-10 settings: s0 = 2,
  s1 = 150, μ0 = 0.9).

Distances d (``distance``): ``"l2"`` the squared error ‖·‖², ``"l1"`` the absolute error ‖·‖₁ (each
averaged over the example's dimensions, which only rescales the loss). Weighting (``weighting``):
``"uniform"`` λ(t_n) = 1 (Song et al. 2023), or ``"inverse-gap"`` λ(t_n) = 1 / (t_{n+1} − t_n) (Song &
Dhariwal 2023, "Improved techniques for training consistency models").

Sampling (Algorithm 1, multistep): x ← f_θ(T z); for τ in τ_1 > … > τ_{S−1}:
x ← f_θ(x + sqrt(τ² − ε²) z', τ), with fresh z' per step from the example's ``rng``; NFE = S =
``steps``. The times are the first S points of the (S + 1)-point Karras grid from T down to ε (for
S = 2: τ_1 = 2.52 at the defaults), a fixed rule instead of the paper's per-data-set search.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from baselines.nets import check_field_shape, field_net
from harness.core.entries import ModelEntry, pinned
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from harness.core.schedule import linear_decay
from harness.core.validate import finite_positive, in_choices, positive_ints, unit_interval

__all__ = ["ConsistencyConfig", "ConsistencyModel", "REGISTRY", "karras_sigmas"]

MODES = ("cd", "ct")
DISTANCES = ("l2", "l1")
WEIGHTINGS = ("uniform", "inverse-gap")


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """[n] float64 increasing noise levels t_1 = σ_min, …, t_n = σ_max (Karras et al. 2022, eq. 5; n ≥ 2)."""
    i = torch.arange(n, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (lo + i / (n - 1) * (hi - lo)) ** rho


@dataclass(frozen=True)
class ConsistencyConfig:
    """Hyper-parameters of a consistency model (JSON-serialisable; saved in checkpoints).

    Attributes:
        mode: ``"cd"`` (distillation from ``teacher_checkpoint``) or ``"ct"`` (training, no teacher).
        teacher_checkpoint: a genbench checkpoint of a trained flow (module docstring); ``cd`` only.
        distance: ``"l2"`` or ``"l1"``.
        weighting: ``"uniform"`` or ``"inverse-gap"`` (module docstring).
        sigma_min, sigma_max: ε and T (Song et al. 2023: 0.002 and 80).
        sigma_data: σ_d of the boundary-condition scalings (0.5 for images in [−1, 1]; for row data
            the data's standard deviation per coordinate).
        rho: ρ of the Karras grid (7).
        num_scales: N of ``cd`` (the paper's CIFAR-10 value is 18).
        target_ema: μ of ``cd``, μ0 of ``ct`` (the paper: 0.95 and 0.9).
        ct_s0, ct_s1: s0 and s1 of the CT schedule N(k) (the paper: 2 and 150).
        shape: (D,) rows use ``MLP``; (C, H, W) images (H, W divisible by 4) use ``SmallUNet``.
        hidden, depth: MLP width and hidden layers. base: SmallUNet base channels. time_dim: time-embedding size.
        value_range: model-space range of image data; image samples are clamped to it.
        lr: Adam learning rate (the paper: Adam, 4e-4 on CIFAR-10).
        lr_schedule: ``"constant"`` or ``"linear"`` (decay to 0 at ``steps``).
        batch_size, steps: ``genbench train`` defaults (``steps`` is also K of the CT schedule).
        ema_decay: the harness's EMA of the weights used for evaluation (0: none); separate from the target network.
        sample_steps: default number of sampling steps S (NFE).
        seed: seed of the weight initialisation.
    """

    mode: str = "ct"
    teacher_checkpoint: str | None = None
    distance: str = "l2"
    weighting: str = "uniform"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    num_scales: int = 18
    target_ema: float = 0.95
    ct_s0: int = 2
    ct_s1: int = 150
    shape: tuple[int, ...] = (2,)
    hidden: int = 256
    depth: int = 4
    base: int = 32
    time_dim: int = 32
    value_range: tuple[float, float] = (-1.0, 1.0)
    lr: float = 4e-4
    lr_schedule: str = "constant"
    batch_size: int = 256
    steps: int = 5000
    ema_decay: float = 0.0
    sample_steps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        in_choices(self, "mode", MODES)
        in_choices(self, "distance", DISTANCES)
        in_choices(self, "weighting", WEIGHTINGS)
        if self.mode == "ct" and self.teacher_checkpoint is not None:
            raise ValueError("consistency training (mode='ct') has no teacher; drop teacher_checkpoint or use mode='cd'")
        finite_positive(self, "sigma_min", "sigma_max", "sigma_data", "rho", "lr")
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"need sigma_min < sigma_max, got {self.sigma_min!r} and {self.sigma_max!r}")
        unit_interval(self, "target_ema")
        unit_interval(self, "ema_decay", hint=" (0: no EMA)")
        positive_ints(self, "hidden", "depth", "base", "time_dim", "batch_size", "steps", "sample_steps", "ct_s0", "ct_s1")
        if isinstance(self.num_scales, bool) or not isinstance(self.num_scales, int) or self.num_scales < 2:
            raise ValueError(f"num_scales must be an int >= 2 (the grid's end points), got {self.num_scales!r}")
        if not self.ct_s0 < self.ct_s1:
            raise ValueError(f"need ct_s0 < ct_s1, got {self.ct_s0} and {self.ct_s1}")
        in_choices(self, "lr_schedule", ("constant", "linear"))
        check_field_shape(self.shape)
        if len(self.value_range) != 2 or not self.value_range[1] > self.value_range[0]:
            raise ValueError(f"value_range must be (lo, hi) with lo < hi, got {self.value_range}")


class ConsistencyModel(nn.Module):
    """A consistency model trained by distillation (``cd``) or from data (``ct``); a Sampler with NFE = steps.

    ``net(x [B, *shape], c_noise [B]) -> [B, *shape]`` is F_θ; ``target_net`` is θ⁻ (module docstring).
    Config: :class:`ConsistencyConfig` (keyword arguments of the constructor).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        config = ConsistencyConfig(**kwargs)
        self.config = config
        self.net: nn.Module = field_net(config.shape, hidden=config.hidden, depth=config.depth, base=config.base,
                                        time_dim=config.time_dim, seed=config.seed)
        self.target_net = copy.deepcopy(self.net).requires_grad_(False)
        self.data_spec = DataSpec(config.shape, "continuous", config.value_range)
        self.default_steps = config.steps
        self.default_batch_size = config.batch_size
        self.teacher_checkpoint = config.teacher_checkpoint  # loaded by the training loop (harness.train)
        self._teacher: list[nn.Module] = []  # a list, so the teacher is neither a submodule nor saved

    @property
    def ema_decay(self) -> float | None:
        return self.config.ema_decay or None

    # ----- the consistency function ---------------------------------------------------------------

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in), each [B], at noise levels σ [B] (Song et al. 2023, Appendix C)."""
        c = self.config
        sd2 = c.sigma_data**2
        c_skip = sd2 / ((sigma - c.sigma_min) ** 2 + sd2)
        c_out = c.sigma_data * (sigma - c.sigma_min) / torch.sqrt(sd2 + sigma**2)
        c_in = 1.0 / torch.sqrt(sigma**2 + sd2)
        return c_skip, c_out, c_in

    def consistency(self, x: Tensor, sigma: Tensor, *, net: nn.Module | None = None) -> Tensor:
        """f(x, σ) = c_skip x + c_out F(c_in x, ¼ ln σ) for x [B, *shape], σ [B]; ``net`` defaults to θ."""
        view = (-1, *([1] * (x.dim() - 1)))
        c_skip, c_out, c_in = (v.reshape(view).to(x.dtype) for v in self.scalings(sigma))
        out = (net or self.net)(c_in * x, (0.25 * torch.log(sigma)).to(x.dtype))
        return c_skip * x + c_out * out

    # ----- the teacher (cd) ---------------------------------------------------------------------

    def set_teacher(self, teacher: nn.Module) -> None:
        """Attach the trained flow whose ODE ``cd`` distils (frozen; not saved with this model)."""
        if self.config.mode != "cd":
            raise ValueError("only consistency distillation (mode='cd') uses a teacher")
        needed = ("path_coefficients", "net", "config")
        if not all(hasattr(teacher, a) for a in needed) or getattr(teacher.config, "t_max", None) != 1.0:
            raise ValueError(f"the teacher must be a flow-matching model whose path ends at the data (fm-ot, "
                             f"rectified-flow, interpolant-linear, interpolant-trig), got {type(teacher).__name__}"
                             + ("" if not hasattr(teacher, "config") else
                                f" with t_max={getattr(teacher.config, 't_max', None)}"))
        if tuple(teacher.data_spec.shape) != self.config.shape:
            raise ValueError(f"the teacher models shape {tuple(teacher.data_spec.shape)}, this model {self.config.shape}")
        self._teacher[:] = [teacher.eval().requires_grad_(False)]

    def _flow_time(self, teacher: nn.Module, sigma: Tensor) -> Tensor:
        """The teacher's time t [B] with b_t / a_t = σ: bisection on [0, 1] (b/a decreases from ∞ to 0)."""
        lo, hi = torch.zeros_like(sigma), torch.ones_like(sigma)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            a, b, _, _ = teacher.path_coefficients(mid)
            above = b > sigma * a  # b/a > σ: t is larger
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    @torch.no_grad()
    def teacher_denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        """D(x, σ) = E[x1 | ψ_t = a_t x] from the teacher's velocity (module docstring), x [B, *shape], σ [B]."""
        if not self._teacher:
            raise ValueError("consistency distillation needs its teacher: give teacher_checkpoint=FLOW.pt (a trained "
                             "fm-ot / rectified-flow / interpolant checkpoint), which genbench train loads")
        teacher = self._teacher[0]
        t = self._flow_time(teacher, sigma.to(torch.float64))
        view = (-1, *([1] * (x.dim() - 1)))
        a, b, da, db = (v.reshape(view) for v in teacher.path_coefficients(t))
        xt = (a * x.to(torch.float64)).to(x.dtype)
        v = teacher.net(xt, t.to(x.dtype)).to(torch.float64)
        return ((v - db * xt / b) / (da - db * a / b)).to(x.dtype)

    def teacher_heun_step(self, x: Tensor, sigma_from: Tensor, sigma_to: Tensor) -> Tensor:
        """One Heun step of dx/dσ = (x − D(x, σ)) / σ from σ_from to σ_to (Karras et al. 2022, Alg. 1), [B, *shape]."""
        view = (-1, *([1] * (x.dim() - 1)))
        s0, s1 = sigma_from.reshape(view).to(x.dtype), sigma_to.reshape(view).to(x.dtype)
        d0 = (x - self.teacher_denoiser(x, sigma_from)) / s0
        x_euler = x + (s1 - s0) * d0
        d1 = (x_euler - self.teacher_denoiser(x_euler, sigma_to)) / s1
        return x + (s1 - s0) * 0.5 * (d0 + d1)

    # ----- training -----------------------------------------------------------------------------

    def ct_schedule(self, step: int) -> tuple[int, float]:
        """(N(k), μ(k)) of consistency training at step k (Song et al. 2023, Appendix C); (N, μ) for cd."""
        c = self.config
        if c.mode == "cd":
            return c.num_scales, c.target_ema
        n = math.ceil(math.sqrt(step / c.steps * ((c.ct_s1 + 1) ** 2 - c.ct_s0**2) + c.ct_s0**2) - 1) + 1
        return n, math.exp(c.ct_s0 * math.log(c.target_ema) / n) if c.target_ema > 0 else 0.0

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """d(a, b) per example, [B]: mean squared (l2) or mean absolute (l1) difference over the dimensions."""
        diff = (a - b).reshape(a.shape[0], -1)
        return diff.pow(2).mean(-1) if self.config.distance == "l2" else diff.abs().mean(-1)

    def consistency_loss(self, x: Tensor, z: Tensor, n: Tensor, sigmas: Tensor) -> Tensor:
        """Mean over the batch of d(f_θ(x + t_{n+1} z, t_{n+1}), f_θ⁻(x̂_{t_n}, t_n)); n [B] 0-based indices into
        ``sigmas`` [N] (so t_n = sigmas[n], t_{n+1} = sigmas[n + 1]); x̂ by the teacher (cd) or x + t_n z (ct)."""
        view = (-1, *([1] * (x.dim() - 1)))
        t_next, t_cur = sigmas[n + 1].to(x.device), sigmas[n].to(x.device)
        x_next = x + t_next.reshape(view).to(x.dtype) * z
        with torch.no_grad():
            if self.config.mode == "cd":
                x_cur = self.teacher_heun_step(x_next, t_next, t_cur)
            else:
                x_cur = x + t_cur.reshape(view).to(x.dtype) * z
            target = self.consistency(x_cur, t_cur.to(x.dtype), net=self.target_net)
        weight = 1.0 / (t_next - t_cur).to(x.dtype) if self.config.weighting == "inverse-gap" else 1.0
        return (weight * self.distance(self.consistency(x_next, t_next.to(x.dtype)), target)).mean()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.net.parameters(), lr=self.config.lr)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One Adam step on the consistency loss, then θ⁻ ← μ θ⁻ + (1 − μ) θ. z and n come from ``generator``."""
        (opt,) = optimizers
        c = self.config
        if c.lr_schedule == "linear":
            linear_decay(opt, c.lr, step, 0, c.steps)
        num_scales, mu = self.ct_schedule(step)
        x = batch.to(torch.float32)
        z = torch.randn(x.shape, generator=generator).to(x.device)
        n = torch.randint(0, num_scales - 1, (x.shape[0],), generator=generator)
        sigmas = karras_sigmas(num_scales, c.sigma_min, c.sigma_max, c.rho)
        loss = self.consistency_loss(x, z, n, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for target, online in zip(self.target_net.parameters(), self.net.parameters(), strict=True):
                target.lerp_(online, 1.0 - mu)
        return {"loss": float(loss.detach()), "num_scales": float(num_scales)}

    # ----- sampling ---------------------------------------------------------------------------

    def sample_sigmas(self, steps: int) -> Tensor:
        """[steps] float64 times T = τ_0 > τ_1 > … > τ_{S−1}: the first S points of the (S + 1)-point Karras grid."""
        c = self.config
        return karras_sigmas(steps + 1, c.sigma_min, c.sigma_max, c.rho).flip(0)[:steps]

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, steps: int | None = None) -> Tensor:
        """[n, *shape] samples by multistep consistency sampling (Algorithm 1); NFE = ``steps`` (default ``sample_steps``)."""
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        steps = self.config.sample_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        c = self.config
        param = next(self.parameters())
        taus = self.sample_sigmas(steps)
        x = rng.normal(c.shape).to(device=param.device, dtype=param.dtype) * c.sigma_max
        x = self.consistency(x, torch.full((n,), c.sigma_max, device=param.device, dtype=param.dtype))
        for k, tau in enumerate(taus[1:].tolist()):
            z = rng.child(f"step{k + 1}").normal(c.shape).to(device=param.device, dtype=param.dtype)
            x_tau = x + math.sqrt(tau**2 - c.sigma_min**2) * z
            x = self.consistency(x_tau, torch.full((n,), tau, device=param.device, dtype=param.dtype))
        if len(c.shape) == 3:
            x = x.clamp(*c.value_range)
        return x


def consistency_distillation(**overrides: Any) -> ConsistencyModel:
    """``consistency-cd``: :class:`ConsistencyModel` with ``mode="cd"`` (needs ``teacher_checkpoint``)."""
    return ConsistencyModel(**pinned("consistency-cd", "mode", "cd", overrides, {"ct": "consistency-ct"}))


def consistency_training(**overrides: Any) -> ConsistencyModel:
    """``consistency-ct``: :class:`ConsistencyModel` with ``mode="ct"``."""
    return ConsistencyModel(**pinned("consistency-ct", "mode", "ct", overrides, {"cd": "consistency-cd"}))


consistency_distillation.__signature__ = consistency_training.__signature__ = inspect.signature(ConsistencyConfig)  # type: ignore[attr-defined]

_TINY = {"hidden": 16, "depth": 2, "time_dim": 8, "steps": 5, "batch_size": 32, "num_scales": 4, "sample_steps": 2}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("consistency-cd", "consistency", "baselines.consistency:consistency_distillation",
               "consistency distillation (Song et al. 2023, Alg. 2) of a trained flow (teacher_checkpoint=FLOW.pt: "
               "fm-ot, rectified-flow, interpolant-*), Heun teacher steps, EMA target; multistep sampler, NFE = steps",
               tiny_config=dict(_TINY), teacher="fm-ot"),
    ModelEntry("consistency-ct", "consistency", "baselines.consistency:consistency_training",
               "consistency training (Song et al. 2023, Alg. 3): no teacher, schedules N(k) and mu(k); "
               "multistep sampler, NFE = steps", tiny_config=dict(_TINY)),
)
