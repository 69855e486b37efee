"""A diffusers ``UNet2DModel`` + noise scheduler as a genbench Sampler and ProbabilityFlow.

Directory layouts accepted by :func:`load_diffusers_unet` (all written by diffusers'
``save_pretrained``), tried in this order:

1. ``DIR/unet/`` (``config.json`` + weights) and ``DIR/scheduler/scheduler_config.json``: the
   standard ``DDPMPipeline.save_pretrained`` layout;
2. ``DIR/config.json`` + weights (the UNet) and ``DIR/scheduler/scheduler_config.json``;
3. ``DIR/config.json`` + weights and ``DIR/scheduler_config.json`` side by side.

Everything is loaded with ``from_pretrained(dir, local_files_only=True)``: no Hub access. Only
``prediction_type="epsilon"`` networks are supported (the network predicts the added noise ε).

Sampling (``sample``): ``"ddpm"`` is ancestral sampling (Ho et al. 2020, Algorithm 2) with
``DDPMScheduler``; ``"ddim"`` is deterministic DDIM (Song, Meng & Ermon 2021, eq. 12 with η=0) with
``DDIMScheduler``; both are built ``from_config`` of the saved scheduler config. One UNet call per
step, so NFE == steps. Initial noise and every per-step noise draw come from per-example
generators (``BatchRNG``), so example i does not depend on the batch it is drawn in.

Seeding (``seeding=``, a model arg and a ``sample`` option; DDIM with η=0 draws only the initial
noise, so both modes give the same DDIM samples):

* ``"genbench"`` (default): the initial noise comes from ``rng`` (stream ``"sample"``) and DDPM's
  per-step noise from ``rng.child("scheduler")`` (stream ``"sample/scheduler"``).
* ``"diffusers"``: one generator per example for both, in diffusers' order (the initial noise, then
  one ``randn`` per step with t > 0 inside ``DDPMScheduler.step``), as ``DDPMPipeline`` and
  ``DDIMPipeline`` do when given a list of generators. Example i of a run with seed s then equals
  the pipeline's output for ``torch.Generator().manual_seed(harness.core.rng.example_seed(s, i))``
  (CPU generator, float32 UNet)::

      from harness.core.rng import example_seed
      gens = [torch.Generator().manual_seed(example_seed(seed, i)) for i in indices]
      images = DDPMPipeline(unet, scheduler)(batch_size=len(gens), generator=gens,
                                             num_inference_steps=steps, output_type="np").images

  and ``(images * 255).round()`` equals genbench's uint8 samples (``tests/test_diffusers_adapter.py``
  checks this for DDPM and DDIM).

Probability flow (``ode_drift``): the discrete betas β_0..β_{N-1} of the scheduler define a
variance-preserving SDE dx = -½β(t)x dt + sqrt(β(t)) dw on t ∈ [0, 1] (Song et al. 2021, eq. 11),
with ᾱ(t) = exp(-∫₀ᵗ β(s) ds) and σ(t) = sqrt(1 - ᾱ(t)). Its probability-flow ODE (eq. 13) with the
score ∇log p_t(x) = -ε(x, t)/σ(t) is

    dx/dt = f(x, t) = -½ β(t) (x - ε(x, t) / σ(t)).

Two mappings from the discrete schedule to β(t) (``pf_ode=``):

* ``"linear"`` (default for ``beta_schedule="linear"``; score_sde's VPSDE): β(t) = β_min + t(β_max -
  β_min) with β_min = N β_0, β_max = N β_{N-1}; the network is queried at timestep t·(N-1). It
  matches the discrete ᾱ_i only to first order in β (Ho et al. 2020's ᾱ_i = Π_{j≤i}(1 - β_j)),
  which is the convention behind the published PF-ODE likelihoods of DDPM checkpoints.
* ``"piecewise"`` (default otherwise; any schedule, including ``trained_betas``): β(t) = -N log(1 -
  β_⌊tN⌋), piecewise constant, so ᾱ(t_i) = Π_{j≤i}(1 - β_j) exactly at t_i = (i+1)/N; the network
  is queried at timestep max(tN - 1, 0), which is i exactly at t_i.

The prior at ``t_span[1] = 1`` is N(0, I); ``describe()["pf_ode"]["alpha_bar_at_prior_time"]``
records how close ᾱ(1) is to 0 (how exact that prior is).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from harness.core.hashing import state_dict_sha256
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

SamplerName = Literal["ddpm", "ddim"]
PFMapping = Literal["linear", "piecewise"]
Seeding = Literal["genbench", "diffusers"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")
PF_MAPPINGS: tuple[str, ...] = ("linear", "piecewise")
SEEDINGS: tuple[str, ...] = ("genbench", "diffusers")
WEIGHTS_HASH = "sha256 over the state_dict tensors in sorted key order: name, dtype, shape, then the raw bytes"
DDIM_DEFAULT_STEPS = 50  # diffusers' DDIMPipeline default, capped at num_train_timesteps

LAYOUT_HELP = (
    "expected a diffusers directory written by save_pretrained: DIR/unet/ (config.json + weights) with "
    "DIR/scheduler/scheduler_config.json (the DDPMPipeline layout), or the UNet's config.json + weights "
    "in DIR with DIR/scheduler/scheduler_config.json or DIR/scheduler_config.json"
)


def _import_diffusers() -> Any:
    """The ``diffusers`` module, or an ImportError saying how to install the optional extra."""
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            "the diffusers adapter needs the optional dependency 'diffusers': "
            "pip install diffusers (or pip install 'genbench[diffusers]')"
        ) from err
    return diffusers


def _find_layout(root: Path) -> tuple[Path, Path]:
    """``(unet_dir, scheduler_dir)`` inside ``root`` for the layouts in the module docstring."""
    if not root.is_dir():
        raise FileNotFoundError(f"diffusers model directory {root} does not exist; {LAYOUT_HELP}")
    for unet_dir, scheduler_dir in ((root / "unet", root / "scheduler"), (root, root / "scheduler"), (root, root)):
        if (unet_dir / "config.json").is_file() and (scheduler_dir / "scheduler_config.json").is_file():
            return unet_dir, scheduler_dir
    found = sorted(p.name for p in root.iterdir())
    raise ValueError(f"{root} is not a diffusers UNet + scheduler directory (it holds {found}); {LAYOUT_HELP}")


def weights_sha256(module: nn.Module) -> str:
    """Hex sha256 of ``module.state_dict()`` (``harness.core.hashing.state_dict_sha256``)."""
    return state_dict_sha256(module.state_dict())


def _plain(config: Any) -> dict[str, Any]:
    """A diffusers config (FrozenDict) as a plain JSON dict (tuples become lists, tensors/arrays lists)."""
    return json.loads(json.dumps(dict(config), default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


class DiffusersUNet(nn.Module):
    """An ε-prediction ``UNet2DModel`` + scheduler config: ``Sampler`` and ``ProbabilityFlow``.

    Attributes:
        net: the UNet, called only as ``self.net(x, timestep).sample`` (NFE is counted there).
        data_spec: ``DataSpec((C, H, W), "continuous", value_range)``.
        sampler, steps, seeding: defaults for ``sample`` (``steps=None``: N for DDPM, min(50, N) for DDIM).
        t_span: ``(t_eps, 1.0)``, data to prior time of the PF-ODE.
    """

    def __init__(self, net: nn.Module, scheduler_config: dict[str, Any], *, sampler: SamplerName = "ddpm",
                 steps: int | None = None, value_range: tuple[float, float] = (-1.0, 1.0), t_eps: float = 1e-5,
                 pf_ode: PFMapping | None = None, seeding: Seeding = "genbench", source: str | None = None) -> None:
        """Wrap ``net`` (a ``UNet2DModel``) with ``scheduler_config`` (a diffusers scheduler config dict).

        Other arguments as in :func:`load_diffusers_unet`; ``source`` is recorded by ``describe``.
        """
        super().__init__()
        diffusers = _import_diffusers()
        cfg = dict(net.config)
        self._check_config(cfg, scheduler_config)
        self.net = net.eval()
        self.scheduler_config = dict(scheduler_config)
        self.source = source
        size = cfg["sample_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.data_spec = DataSpec((cfg["in_channels"], height, width), "continuous", value_range)
        betas = diffusers.DDPMScheduler.from_config(self.scheduler_config).betas.to(torch.float64)
        self.num_train_timesteps = int(betas.numel())
        self._steps_arg = steps
        self.sampler, self.steps = self._check_sampler(sampler, steps)
        self.seeding = self._check_seeding(seeding)
        if not 0.0 < t_eps < 1.0:
            raise ValueError(f"t_eps must be in (0, 1), got {t_eps}")
        self.t_span = (float(t_eps), 1.0)
        is_linear = scheduler_config.get("beta_schedule", "linear") == "linear" and scheduler_config.get("trained_betas") is None
        self.pf_ode = pf_ode or ("linear" if is_linear else "piecewise")
        if self.pf_ode not in PF_MAPPINGS:
            raise ValueError(f"pf_ode must be one of {PF_MAPPINGS}, got {self.pf_ode!r}")
        if self.pf_ode == "linear" and not is_linear:
            raise ValueError("pf_ode='linear' needs beta_schedule='linear' without trained_betas; use pf_ode='piecewise'")
        n = self.num_train_timesteps
        pieces = -n * torch.log1p(-betas)  # piecewise β(t) on [i/N, (i+1)/N)
        self.register_buffer("_betas", betas, persistent=False)
        self.register_buffer("_pieces", pieces, persistent=False)
        self.register_buffer("_cum", torch.cat([betas.new_zeros(1), torch.cumsum(pieces / n, 0)[:-1]]), persistent=False)

    @staticmethod
    def _check_config(unet_config: dict[str, Any], scheduler_config: dict[str, Any]) -> None:
        prediction = scheduler_config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"only prediction_type='epsilon' schedulers are supported, got prediction_type={prediction!r}")
        if unet_config.get("out_channels") != unet_config.get("in_channels"):
            raise ValueError(f"the UNet must predict ε with as many channels as its input (in_channels="
                             f"{unet_config.get('in_channels')}, out_channels={unet_config.get('out_channels')}); "
                             "learned-variance outputs are not supported")
        if unet_config.get("num_class_embeds") is not None or unet_config.get("class_embed_type") is not None:
            raise ValueError("class-conditional UNets (num_class_embeds / class_embed_type) are not supported")
        if unet_config.get("sample_size") is None:
            raise ValueError("the UNet config has no sample_size, so the image shape is unknown")

    def _check_sampler(self, sampler: str, steps: int | None) -> tuple[str, int]:
        n = self.num_train_timesteps
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if steps is None:
            steps = n if sampler == "ddpm" else min(DDIM_DEFAULT_STEPS, n)
        if not 1 <= int(steps) <= n:
            raise ValueError(f"steps must be in [1, num_train_timesteps={n}], got {steps}")
        return sampler, int(steps)

    @staticmethod
    def _check_seeding(seeding: str) -> str:
        if seeding not in SEEDINGS:
            raise ValueError(f"seeding must be one of {SEEDINGS}, got {seeding!r}")
        return seeding

    def sampling_settings(self, *, sampler: SamplerName | None = None, steps: int | None = None,
                          seeding: Seeding | None = None) -> dict[str, Any]:
        """``{"sampler", "steps", "seeding"}`` that ``sample`` uses for these arguments (steps == NFE per sample)."""
        sampler, steps = self._check_sampler(sampler or self.sampler, self._steps_arg if steps is None else steps)
        return {"sampler": sampler, "steps": steps, "seeding": self._check_seeding(seeding or self.seeding)}

    def _scheduler(self, sampler: str) -> Any:
        diffusers = _import_diffusers()
        cls = diffusers.DDPMScheduler if sampler == "ddpm" else diffusers.DDIMScheduler
        return cls.from_config(self.scheduler_config)

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, sampler: SamplerName | None = None, steps: int | None = None,
               seeding: Seeding | None = None) -> Tensor:
        """Draw ``n`` images [n, C, H, W] in model space with ``steps`` UNet calls (NFE == steps).

        ``sampler``/``steps``/``seeding`` default to the ones given at construction. Initial noise
        is ``rng.normal``; DDPM's per-step noise uses the per-example generators of
        ``rng.child("scheduler")`` (``seeding="genbench"``) or of ``rng`` itself, continuing after
        the initial noise (``seeding="diffusers"``); diffusers' ``randn_tensor`` draws example i
        from generator i.
        """
        if n != len(rng):
            raise ValueError(f"n={n} does not match the {len(rng)} examples of rng")
        settings = self.sampling_settings(sampler=sampler, steps=steps, seeding=seeding)
        sampler, steps = settings["sampler"], settings["steps"]
        scheduler = self._scheduler(sampler)
        scheduler.set_timesteps(steps)
        param = next(self.net.parameters())
        step_rng = rng if settings["seeding"] == "diffusers" else rng.child("scheduler")
        x = rng.normal(self.data_spec.shape).to(device=param.device, dtype=param.dtype) * scheduler.init_noise_sigma
        step_kwargs: dict[str, Any] = {"eta": 0.0} if sampler == "ddim" else {"generator": step_rng.generators}
        for t in scheduler.timesteps:
            eps = self.net(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
        return x

    def vp_schedule(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(β(t), ᾱ(t))`` of the continuous VP SDE for times t [B] in [0, 1], float64 [B] each."""
        t = t.to(device=self._betas.device, dtype=torch.float64)
        n = self.num_train_timesteps
        if self.pf_ode == "linear":
            b_min, b_max = n * self._betas[0], n * self._betas[-1]
            return b_min + t * (b_max - b_min), torch.exp(-(b_min * t + 0.5 * t**2 * (b_max - b_min)))
        k = torch.clamp(torch.floor(t * n).long(), 0, n - 1)
        return self._pieces[k], torch.exp(-(self._cum[k] + self._pieces[k] * (t - k.to(torch.float64) / n)))

    def network_timestep(self, t: Tensor) -> Tensor:
        """The (float) diffusers timestep at which the ε-network is queried for time t [B]."""
        n = self.num_train_timesteps
        return t * (n - 1) if self.pf_ode == "linear" else torch.clamp(t * n - 1, min=0.0)

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """PF-ODE drift -½β(t)(x - ε(x, t)/σ(t)) [B, C, H, W] (Song et al. 2021, eq. 13); t is [B]."""
        beta, alpha_bar = self.vp_schedule(t)
        sigma = torch.sqrt(1.0 - alpha_bar)
        view = (-1,) + (1,) * (x.dim() - 1)
        timestep = self.network_timestep(t.to(torch.float64)).to(device=x.device, dtype=x.dtype)
        eps = self.net(x, timestep).sample
        beta, sigma = (v.to(device=x.device, dtype=x.dtype).view(view) for v in (beta, sigma))
        return -0.5 * beta * (x - eps / sigma)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) summed over dimensions, [B] nats."""
        return -0.5 * (z.flatten(1) ** 2 + math.log(2 * math.pi)).sum(1)

    def describe(self) -> dict[str, Any]:
        """What was loaded (configs, weights hash) and how it is sampled and integrated, for the run record."""
        cfg = self.scheduler_config
        n = self.num_train_timesteps
        mapping = {
            "linear": {"beta(t)": "N*beta_0 + t*N*(beta_{N-1} - beta_0) (score_sde VPSDE)", "timestep": "t*(N-1)"},
            "piecewise": {"beta(t)": "-N*log(1 - beta_floor(tN)); alpha_bar exact at t_i=(i+1)/N", "timestep": "max(t*N - 1, 0)"},
        }[self.pf_ode]
        return {
            "adapter": "harness.adapters.diffusers_unet",
            "source": self.source,
            "unet_class": type(self.net).__name__,
            "unet_config": _plain(self.net.config) if hasattr(self.net, "config") else None,
            "unet_sha256": weights_sha256(self.net),
            "unet_sha256_of": WEIGHTS_HASH,
            "scheduler_class": cfg.get("_class_name"),
            "num_train_timesteps": n,
            "beta_schedule": cfg.get("beta_schedule", "linear") if cfg.get("trained_betas") is None else "trained_betas",
            "beta_start": float(self._betas[0]),
            "beta_end": float(self._betas[-1]),
            "prediction_type": cfg.get("prediction_type", "epsilon"),
            "clip_sample": cfg.get("clip_sample"),
            "scheduler_config": _plain(cfg),
            "sampler": self.sampler,
            "steps": self.steps,
            "seeding": self.seeding,
            "pf_ode": {"mapping": self.pf_ode, **mapping, "t_span": list(self.t_span),
                       "alpha_bar_at_prior_time": float(self.vp_schedule(torch.ones(1))[1][0]),
                       "reference": "Song et al. 2021 (ICLR) eq. 11 and 13; Ho et al. 2020 discretisation"},
        }


def load_diffusers_unet(path: str | os.PathLike[str], *, sampler: SamplerName = "ddpm", steps: int | None = None,
                        value_range: tuple[float, float] = (-1.0, 1.0), t_eps: float = 1e-5,
                        pf_ode: PFMapping | None = None, seeding: Seeding = "genbench") -> DiffusersUNet:
    """Load a locally saved diffusers ``UNet2DModel`` + scheduler (layouts in the module docstring), offline.

    Args:
        path: the directory written by ``save_pretrained``.
        sampler, steps: defaults for ``sample`` ("ddpm": steps ≤ N, default N; "ddim": default min(50, N)).
        value_range: model-space value range of the data (diffusers image models use (-1, 1)).
        t_eps: PF-ODE data-side time (score_sde's eps=1e-5).
        pf_ode: "linear" or "piecewise" β(t) mapping (module docstring); None picks by beta_schedule.
        seeding: "genbench" or "diffusers" (DDPMPipeline-compatible) noise draws (module docstring).
    """
    diffusers = _import_diffusers()
    root = Path(path).expanduser()
    unet_dir, scheduler_dir = _find_layout(root)
    class_name = json.loads((unet_dir / "config.json").read_text()).get("_class_name")
    if class_name != "UNet2DModel":
        raise ValueError(f"{unet_dir / 'config.json'} describes a {class_name!r}, not a UNet2DModel; {LAYOUT_HELP}")
    try:
        net = diffusers.UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True)
        scheduler_config = diffusers.DDPMScheduler.load_config(str(scheduler_dir), local_files_only=True)
    except OSError as err:
        raise ValueError(f"cannot load the diffusers model in {root}: {err}; {LAYOUT_HELP}") from err
    return DiffusersUNet(net, dict(scheduler_config), sampler=sampler, steps=steps, value_range=value_range,
                         t_eps=t_eps, pf_ode=pf_ode, seeding=seeding, source=str(root))
