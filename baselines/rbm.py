"""Binary restricted Boltzmann machine: exact likelihood by enumeration, AIS beyond, CD-k or PCD training.

The RBM (Smolensky 1986, "Information processing in dynamical systems: foundations of harmony
theory"; Hinton 2002, "Training products of experts by minimizing contrastive divergence")
is the energy model over visible v ∈ {0,1}^D and hidden h ∈ {0,1}^H

    E(v, h) = −vᵀWh − bᵀv − cᵀh,        p(v, h) = exp(−E(v, h)) / Z,

with W [D, H], visible biases b [D] and hidden biases c [H]. Both conditionals factorise:
P(h_j = 1 | v) = σ(c_j + (Wᵀv)_j) and P(v_i = 1 | h) = σ(b_i + (W h)_i), and summing out h gives the
free energy (nats)

    F(v) = −bᵀv − Σ_j softplus(c_j + (Wᵀv)_j),        p(v) = exp(−F(v)) / Z.

Summing out v instead gives log Z = logsumexp_h [cᵀh + Σ_i softplus(b_i + (W h)_i)], a sum over the
2^H hidden states: :meth:`BinaryRBM.exact_log_partition` enumerates it (in chunks, float64) when
H <= ``max_enumerate_hidden``, and then the model is a LogLikelihood (:class:`EnumerableRBM`, what the
:func:`RBM` factory builds). Beyond that the model has no ``log_prob`` (so it does not claim the
capability) and :meth:`BinaryRBM.ais_log_partition` estimates log Z by annealed importance sampling
(Salakhutdinov & Murray 2008, "On the quantitative analysis of deep belief networks": their AIS
section and its RBM case, "ratios of partition functions of two RBMs").

Training (:meth:`BinaryRBM.training_step`) follows the gradient of the surrogate
mean F(v_data) − mean F(v_model), with v_model after k block-Gibbs sweeps (stopped gradient): its
gradient is the log-likelihood gradient −∂F(v)/∂θ + E_model[∂F/∂θ] with the model expectation replaced
by the chain's samples. The chains start at the data (CD-k: Hinton 2002's contrastive-divergence
learning rule for RBMs) or continue from the last step's chains (PCD: Tieleman 2008, "Training
restricted Boltzmann machines using approximations to the likelihood gradient"). The data's hidden
statistics are the exact conditional expectations (through F), not samples.

Sampling runs ``gibbs_steps`` full block-Gibbs sweeps v → h → v from v0 ~ Bernoulli(σ(b)); all
uniforms come from the BatchRNG per example, so sample i does not depend on its batch. ``model.net``
(:class:`RBMNet`, which holds W, b, c) is called once per full sweep: the harness's NFE per sample is
``gibbs_steps``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.core.entries import ModelEntry, pinned
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["RBMConfig", "RBMNet", "BinaryRBM", "EnumerableRBM", "NoExactLikelihood", "RBM", "rbm_pcd", "REGISTRY"]

_ENUMERATE_LIMIT = 24  # 2^24 hidden states is the most exact_log_partition is allowed to enumerate
_STEPS_PER_DRAW = 32  # sampling draws the uniforms of this many sweeps at a time (fixed: results never depend on it)


@dataclass(frozen=True)
class RBMConfig:
    """Hyper-parameters of :class:`BinaryRBM` (saved in checkpoints).

    Attributes:
        shape: per-example shape of the binary data (D = its product visible units); (1, 8, 8) is the
            scikit-learn digits set binarized at 128 (``digits-train`` / ``digits-test``).
        num_hidden: H hidden units.
        training: ``"cd"`` (CD-k, chains start at the batch) or ``"pcd"`` (persistent chains, one per
            batch row, kept in the ``chains`` buffer so checkpoints resume them).
        cd_steps: k, block-Gibbs sweeps per update (for PCD: sweeps the persistent chains advance).
        gibbs_steps: full sweeps per sample in :meth:`BinaryRBM.sample` (the NFE per sample).
        max_enumerate_hidden: exact log Z (and ``log_prob``) when num_hidden <= this (<= 24).
        optimizer: ``"adam"`` (Adam, betas 0.9/0.999) or ``"sgd"`` (with ``momentum``).
        lr: learning rate.
        momentum: SGD momentum in [0, 1) (ignored by Adam).
        weight_decay: L2 penalty on W only (biases are not decayed; Hinton 2010, "A practical guide
            to training RBMs", sec. 10), coupled through the optimizer's ``weight_decay``.
        init_std: W starts N(0, init_std²) (Hinton 2010, sec. 8: 0.01); biases start at 0.
        batch_size, steps: training defaults.
        seed: seeds the parameter initialisation (a forked torch RNG).
    """

    shape: tuple[int, ...] = (1, 8, 8)
    num_hidden: int = 16
    training: Literal["cd", "pcd"] = "cd"
    cd_steps: int = 1
    gibbs_steps: int = 1000
    max_enumerate_hidden: int = 20
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    init_std: float = 0.01
    batch_size: int = 64
    steps: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))  # JSON gives lists
        if not self.shape or any(s < 1 for s in self.shape):
            raise ValueError(f"shape={self.shape}: expected positive sizes, e.g. (1, 8, 8)")
        if self.training not in ("cd", "pcd"):
            raise ValueError(f"training must be 'cd' or 'pcd', got {self.training!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        for name in ("num_hidden", "cd_steps", "gibbs_steps", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_enumerate_hidden <= _ENUMERATE_LIMIT:
            raise ValueError(f"max_enumerate_hidden must be in 0..{_ENUMERATE_LIMIT} (2^H hidden states are "
                             f"enumerated), got {self.max_enumerate_hidden}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0 (0 disables), got {self.weight_decay}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")


class NoExactLikelihood(AttributeError, ValueError):
    """``log_prob`` of an RBM with too many hidden units to enumerate.

    An AttributeError, so ``hasattr(model, "log_prob")`` is False and the model does not claim the
    LogLikelihood capability; a ValueError, so callers who ask anyway get a one-line reason.
    """


class RBMNet(nn.Module):
    """The RBM's parameters W [D, H], b [D], c [H] and one full block-Gibbs sweep.

    ``net(v, u)`` is the sweep (what the harness counts as one NFE): v [B, D] in {0,1}, u [B, H + D]
    uniforms on [0, 1); h_j = 1[u_j < σ(c + Wᵀv)_j], then v'_i = 1[u_{H+i} < σ(b + W h)_i]. Returns
    (h [B, H], v' [B, D]) as 0/1 floats in the parameters' dtype.
    """

    def __init__(self, num_visible: int, num_hidden: int, init_std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(init_std * torch.randn(num_visible, num_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))

    def hidden_logits(self, v: Tensor) -> Tensor:
        """c + Wᵀv, [B, H] (the log-odds of P(h_j = 1 | v))."""
        return self.hidden_bias + v @ self.weight

    def visible_logits(self, h: Tensor) -> Tensor:
        """b + W h, [B, D] (the log-odds of P(v_i = 1 | h))."""
        return self.visible_bias + h @ self.weight.T

    def forward(self, v: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        num_hidden = self.hidden_bias.shape[0]
        h = (u[:, :num_hidden] < torch.sigmoid(self.hidden_logits(v))).to(v.dtype)
        v_next = (u[:, num_hidden:] < torch.sigmoid(self.visible_logits(h))).to(v.dtype)
        return h, v_next


class BinaryRBM(nn.Module):
    """A binary RBM (Sampler; trainable) with exact and AIS log-partition functions.

    No ``log_prob``: this is what :func:`RBM` builds when num_hidden > max_enumerate_hidden (use
    :meth:`ais_log_partition`). :class:`EnumerableRBM` adds the exact ``log_prob``. Tensors of visible
    states are accepted as [B, *shape] or [B, D], with values 0/1 in any dtype.
    """

    def __init__(self, **overrides: object) -> None:
        super().__init__()
        self.config = RBMConfig(**overrides)  # type: ignore[arg-type]
        cfg = self.config
        self.num_visible = int(torch.Size(cfg.shape).numel())
        self.num_hidden = cfg.num_hidden
        self.data_spec = DataSpec(cfg.shape, "discrete", (0.0, 1.0), num_categories=2)
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is restored
            torch.manual_seed(cfg.seed)
            self.net = RBMNet(self.num_visible, cfg.num_hidden, cfg.init_std)
        if cfg.training == "pcd":
            # one persistent chain per batch row, 0/1 floats [B, D]; empty until the first step
            self.register_buffer("chains", torch.zeros(0, self.num_visible))
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.ema_decay = None
        self._log_z_cache: tuple[tuple[Any, ...], float] | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "log_prob":
            raise NoExactLikelihood(
                f"this RBM has num_hidden={self.num_hidden} > max_enumerate_hidden="
                f"{self.config.max_enumerate_hidden}, so log Z is not enumerated and there is no exact log_prob; "
                "estimate log Z with ais_log_partition(...) (AIS) and use -free_energy(x) - log Z")
        return super().__getattr__(name)

    # ---------------------------------------------------------------- parameters and checks

    @property
    def _rbm(self) -> RBMNet:
        """The parameter module, also while ``harness.core.nfe.counting`` wraps ``net``."""
        return getattr(self.net, "module", self.net)

    def _visible(self, v: Tensor) -> Tensor:
        """[B, *shape] or [B, D] 0/1 values -> [B, D] in the parameters' dtype and device."""
        w = self._rbm.weight
        v = torch.as_tensor(v)
        if v.dim() < 1 or tuple(v.shape[1:]) not in (self.config.shape, (self.num_visible,)):
            raise ValueError(f"expected visible states [B, {', '.join(map(str, self.config.shape))}] or "
                             f"[B, {self.num_visible}], got {tuple(v.shape)}")
        v = v.reshape(v.shape[0], self.num_visible)
        if v.numel() and not bool(((v == 0) | (v == 1)).all()):
            raise ValueError("visible states must be 0/1 (binarize the data at 128, as the harness does)")
        return v.to(device=w.device, dtype=w.dtype)

    # ---------------------------------------------------------------- energies and conditionals

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """E(v, h) = −vᵀWh − bᵀv − cᵀh, [B] nats; h [B, H] 0/1."""
        rbm, v = self._rbm, self._visible(v)
        h = h.to(v.dtype)
        return -((v @ rbm.weight) * h).sum(-1) - v @ rbm.visible_bias - h @ rbm.hidden_bias

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = −bᵀv − Σ_j softplus(c_j + (Wᵀv)_j), [B] nats, so p(v) = exp(−F(v)) / Z."""
        rbm, v = self._rbm, self._visible(v)
        return -(v @ rbm.visible_bias) - F.softplus(rbm.hidden_logits(v)).sum(-1)

    def hidden_probs(self, v: Tensor) -> Tensor:
        """P(h_j = 1 | v) = σ(c_j + (Wᵀv)_j), [B, H]."""
        return torch.sigmoid(self._rbm.hidden_logits(self._visible(v)))

    def visible_probs(self, h: Tensor) -> Tensor:
        """P(v_i = 1 | h) = σ(b_i + (W h)_i), [B, D] (flattened visibles); h [B, H] 0/1."""
        rbm = self._rbm
        return torch.sigmoid(rbm.visible_logits(h.to(device=rbm.weight.device, dtype=rbm.weight.dtype)))

    # ---------------------------------------------------------------- partition function

    def exact_log_partition(self, *, chunk: int = 1 << 16) -> float:
        """log Z (nats, float64) by enumerating the 2^H hidden states, ``chunk`` at a time.

        log Z = logsumexp_h [cᵀh + Σ_i softplus(b_i + (W h)_i)] (v summed out in closed form); the
        chunks' logsumexps are combined, so memory is O(chunk · (D + H)). Cached until a parameter
        changes (in-place updates bump the tensors' versions). Not differentiable.

        Raises:
            ValueError: num_hidden > max_enumerate_hidden (use :meth:`ais_log_partition`).
        """
        if self.num_hidden > self.config.max_enumerate_hidden:
            raise ValueError(f"num_hidden={self.num_hidden} > max_enumerate_hidden={self.config.max_enumerate_hidden}: "
                             "2^H hidden states are too many to enumerate; estimate log Z with ais_log_partition(...)")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        rbm = self._rbm
        params = (rbm.weight, rbm.visible_bias, rbm.hidden_bias)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape)) for p in params)
        if self._log_z_cache is not None and self._log_z_cache[0] == key:
            return self._log_z_cache[1]
        with torch.no_grad():
            w, b, c = (p.detach().to(torch.float64) for p in params)
            bits = torch.arange(self.num_hidden, device=w.device)
            parts = []
            for start in range(0, 1 << self.num_hidden, chunk):
                idx = torch.arange(start, min(start + chunk, 1 << self.num_hidden), device=w.device)
                h = ((idx[:, None] >> bits) & 1).to(torch.float64)  # [chunk, H], bit j of the index
                parts.append(torch.logsumexp(h @ c + F.softplus(b + h @ w.T).sum(-1), dim=0))
            log_z = float(torch.logsumexp(torch.stack(parts), dim=0))
        self._log_z_cache = (key, log_z)
        return log_z

    @torch.no_grad()
    def ais_log_partition(self, num_chains: int = 100, num_betas: int = 10_000, seed: int = 0, *,
                          base_rates: Tensor | None = None) -> tuple[float, float]:
        """Annealed importance sampling estimate of log Z: (log Ẑ, its standard error), nats.

        Salakhutdinov & Murray 2008 (AIS for RBMs; base-rate model): the base-rate model A has W = 0,
        hidden biases 0 and visible biases b_A = logit(base_rates), so log Z_A = H log 2 + Σ_i softplus(b_{A,i})
        in closed form. The intermediate distributions over v (hidden units summed out) are

            log p*_β(v) = (1 − β) b_Aᵀv + β bᵀv + Σ_j softplus(β (c_j + (Wᵀv)_j)),

        on the linear schedule β_k = k / (num_betas − 1), k = 0..num_betas−1 (the paper uses a
        piecewise-linear schedule of about 14,500 values). Each chain starts with an exact draw from p_0 and is
        moved at β_1, …, β_{K−1} by one block-Gibbs sweep that leaves p_β invariant: h ~ σ(β (c + Wᵀv)),
        v ~ σ((1 − β) b_A + β (b + W h)). Its log importance weight is
        Σ_k [log p*_{β_k}(v_k) − log p*_{β_{k−1}}(v_k)] (Neal's AIS weight), accumulated in float64, and

            log Ẑ = log Z_A + logsumexp_m(log w_m) − log M,

        with standard error std(w) / (mean(w) √M) (the delta method on Ẑ's relative error). Ẑ is unbiased,
        so log Ẑ tends to underestimate log Z (Jensen), by about se²/2 when the weights are well behaved.

        Args:
            num_chains: M independent chains.
            num_betas: K >= 2 inverse temperatures, both ends included.
            seed: seeds a CPU generator that draws every uniform (the same seed gives the same estimate).
            base_rates: p [D] in (0, 1), the base model's marginals (the paper uses the training set's
                pixel means, smoothed); default σ(b), the model's own visible biases.
        """
        if num_chains < 1 or num_betas < 2:
            raise ValueError(f"AIS needs num_chains >= 1 and num_betas >= 2, got {num_chains} and {num_betas}")
        rbm = self._rbm
        dev = rbm.weight.device
        w, b, c = (p.detach().to(torch.float64) for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
        if base_rates is None:
            b_a = b.clone()
        else:
            p = torch.as_tensor(base_rates, dtype=torch.float64, device=dev).reshape(-1)
            if p.numel() != self.num_visible or not bool(((p > 0) & (p < 1)).all()):
                raise ValueError(f"base_rates must be {self.num_visible} probabilities strictly inside (0, 1); "
                                 "smooth the training marginals, e.g. (count + 1) / (N + 2)")
            b_a = torch.log(p) - torch.log1p(-p)
        log_z_a = self.num_hidden * math.log(2.0) + float(F.softplus(b_a).sum())
        gen = torch.Generator().manual_seed(int(seed))

        def uniform(cols: int) -> Tensor:
            return torch.rand(num_chains, cols, generator=gen, dtype=torch.float64).to(dev)

        def log_p_star(v: Tensor, beta: float) -> Tensor:
            return (1.0 - beta) * (v @ b_a) + beta * (v @ b) + F.softplus(beta * (c + v @ w)).sum(-1)

        betas = torch.linspace(0.0, 1.0, num_betas, dtype=torch.float64).tolist()
        v = (uniform(self.num_visible) < torch.sigmoid(b_a)).to(torch.float64)  # exact draw from p_0
        log_w = torch.zeros(num_chains, dtype=torch.float64, device=dev)
        for k in range(1, num_betas):
            beta_prev, beta = betas[k - 1], betas[k]
            log_w += log_p_star(v, beta) - log_p_star(v, beta_prev)
            if k < num_betas - 1:  # T_k leaves p_{β_k} invariant
                h = (uniform(self.num_hidden) < torch.sigmoid(beta * (c + v @ w))).to(torch.float64)
                v = (uniform(self.num_visible) < torch.sigmoid((1.0 - beta) * b_a + beta * (b + h @ w.T))).to(torch.float64)
        log_mean_w = float(torch.logsumexp(log_w, 0)) - math.log(num_chains)
        rel = torch.exp(log_w - log_w.max())  # weights / max weight
        stderr = float(rel.std(unbiased=True) / rel.mean()) / math.sqrt(num_chains) if num_chains > 1 else math.inf
        return log_z_a + log_mean_w, stderr

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """int64 [n, *shape] 0/1: ``gibbs_steps`` full block-Gibbs sweeps from v0 ~ Bernoulli(σ(b)).

        Example i uses only its own uniforms (v0: ``rng.uniform((D,))``, then ``rng.uniform((s, H + D))``
        for each block of s = 32 sweeps), so its sample does not depend on the batch. ``self.net`` is
        called once per sweep (NFE per sample = gibbs_steps).
        """
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        rbm = self._rbm
        dtype, dev = rbm.weight.dtype, rbm.weight.device
        v = (rng.uniform((self.num_visible,), dtype=dtype).to(dev) < torch.sigmoid(rbm.visible_bias)).to(dtype)
        done = 0
        while done < self.config.gibbs_steps:
            block = min(_STEPS_PER_DRAW, self.config.gibbs_steps - done)
            u = rng.uniform((block, self.num_hidden + self.num_visible), dtype=dtype).to(dev)  # [n, s, H + D]
            for s in range(block):
                _, v = self.net(v, u[:, s])
            done += block
        return v.to(torch.int64).reshape(n, *self.config.shape)

    # ---------------------------------------------------------------- training

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam or SGD with momentum; weight decay on W only."""
        cfg, rbm = self.config, self._rbm
        groups = [{"params": [rbm.weight], "weight_decay": cfg.weight_decay},
                  {"params": [rbm.visible_bias, rbm.hidden_bias], "weight_decay": 0.0}]
        if cfg.optimizer == "adam":
            return [torch.optim.Adam(groups, lr=cfg.lr)]
        return [torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)]

    def _gibbs(self, v: Tensor, sweeps: int, generator: torch.Generator) -> Tensor:
        """``sweeps`` block-Gibbs sweeps from v [B, D] with uniforms from ``generator`` (CPU, then moved)."""
        for _ in range(sweeps):
            u = torch.rand(v.shape[0], self.num_hidden + self.num_visible, generator=generator, dtype=v.dtype)
            _, v = self.net(v, u.to(v.device))
        return v

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One CD-k or PCD update on a 0/1 batch [B, *shape] (int64 from the harness).

        Minimises mean F(v_data) − mean F(v_model) with v_model the chains after ``cd_steps`` sweeps
        (detached; uniforms from ``generator``). PCD chains persist in ``chains`` and restart from the
        batch when the batch size changes. Returns (nats per example, except ``recon_error``):
        ``free_energy_gap`` (the surrogate), ``free_energy_data`` (mean F of the batch) and
        ``recon_error``, the mean squared error per pixel of the mean-field reconstruction
        σ(b + W σ(c + Wᵀv)) (Hinton 2010, sec. 5: a rough guide only, not the objective).
        """
        (opt,) = optimizers
        v_data = self._visible(batch)
        with torch.no_grad():
            if self.config.training == "pcd":
                start = self.chains if self.chains.shape[0] == v_data.shape[0] else v_data
                v_model = self._gibbs(start.to(v_data.dtype), self.config.cd_steps, generator)
                self.chains = v_model.to(self.chains.dtype).clone()
            else:
                v_model = self._gibbs(v_data, self.config.cd_steps, generator)
            recon = torch.sigmoid(self._rbm.visible_logits(torch.sigmoid(self._rbm.hidden_logits(v_data))))
            recon_error = float((recon - v_data).pow(2).mean())
        opt.zero_grad(set_to_none=True)
        f_data = self.free_energy(v_data).mean()
        gap = f_data - self.free_energy(v_model).mean()
        gap.backward()
        opt.step()
        return {"free_energy_gap": gap.item(), "free_energy_data": f_data.item(), "recon_error": recon_error}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The PCD chains have as many rows as the batch that made them: take the checkpoint's size.
        key = prefix + "chains"
        if "chains" in self._buffers and key in state_dict:
            self.chains = torch.zeros_like(state_dict[key], dtype=self.chains.dtype, device=self.chains.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class EnumerableRBM(BinaryRBM):
    """A :class:`BinaryRBM` with num_hidden <= max_enumerate_hidden: exact ``log_prob`` (LogLikelihood)."""

    def __init__(self, **overrides: object) -> None:
        super().__init__(**overrides)
        if self.num_hidden > self.config.max_enumerate_hidden:
            raise ValueError(f"num_hidden={self.num_hidden} > max_enumerate_hidden={self.config.max_enumerate_hidden}: "
                             "build the model with RBM(...), which has no exact log_prob at this size")

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) = −F(x) − log Z, [B] nats; x [B, *shape] 0/1 (int64 from the harness).

        log Z from :meth:`exact_log_partition` (cached); the result has the parameters' dtype.
        """
        f = self.free_energy(x)
        return -f - torch.as_tensor(self.exact_log_partition(), dtype=f.dtype, device=f.device)


def RBM(**overrides: object) -> BinaryRBM:
    """The registry's ``rbm``: an :class:`EnumerableRBM` (exact ``log_prob``) when num_hidden <=
    max_enumerate_hidden, else a :class:`BinaryRBM` (no ``log_prob``; use ``ais_log_partition``).

    Takes the fields of :class:`RBMConfig` (CD-1 by default; ``training="pcd"`` is ``rbm-pcd``).
    """
    cfg = RBMConfig(**overrides)  # type: ignore[arg-type]
    return (EnumerableRBM if cfg.num_hidden <= cfg.max_enumerate_hidden else BinaryRBM)(**overrides)


_PCD_DEFAULTS = {"training": "pcd", "lr": 3e-3}


def rbm_pcd(**overrides: object) -> BinaryRBM:
    """The registry's ``rbm-pcd``: :func:`RBM` with ``training="pcd"`` (Tieleman 2008) and lr 3e-3.

    The smaller default learning rate lets the persistent chains keep up with the parameters: on
    digits (16 hidden units, Adam, 2000-3000 steps) PCD reached 20.4-20.8 test nats at lr 3e-3 and
    21.7-22.4 at 1e-2 (CD-1 prefers 1e-2).
    """
    return RBM(**{**_PCD_DEFAULTS, **pinned("rbm-pcd", "training", "pcd", overrides, {"cd": "rbm"})})


def _signature(defaults: dict[str, object]) -> inspect.Signature:
    return inspect.Signature(
        [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(f.name, f.default),
                           annotation=f.type) for f in fields(RBMConfig)])


for _factory in (BinaryRBM, EnumerableRBM, RBM):
    _factory.__signature__ = _signature({})  # type: ignore[attr-defined]
rbm_pcd.__signature__ = _signature(_PCD_DEFAULTS)  # type: ignore[attr-defined]


_TINY = {"num_hidden": 8, "gibbs_steps": 10, "steps": 20, "batch_size": 32}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("rbm", "ebm", "baselines.rbm:RBM",
               "binary restricted Boltzmann machine trained with CD-k (binarized images, default digits 8x8, "
               "16 hidden units): exact log p(x) by enumerating 2^H hidden states for H <= 20; block-Gibbs "
               "sampling, one network call per sweep", tiny_config=_TINY),
    ModelEntry("rbm-pcd", "ebm", "baselines.rbm:rbm_pcd",
               "binary RBM trained with persistent contrastive divergence (PCD, chains kept in the checkpoint); "
               "exact log p(x) for H <= 20; block-Gibbs sampling", tiny_config=_TINY),
)
