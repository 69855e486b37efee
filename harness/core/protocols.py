"""What a model is, for the harness: a DataSpec and small capability protocols.

A model implements only what it can do. The runner checks each capability with ``isinstance``
(the protocols are runtime-checkable) and records a metric as skipped, with the reason, when the
capability it needs is missing. Users plug in their own models by implementing any of these; no
base class is required.

Units: every log-density is in nats, per example, summed over dimensions (shape [B]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor

from harness.core.rng import BatchRNG


@dataclass(frozen=True)
class DataSpec:
    """Shape and value domain of one example.

    Attributes:
        shape: per-example shape, e.g. (1, 28, 28) or (2,).
        kind: ``"continuous"`` (real values in ``value_range``; 8-bit image data is uniformly
            dequantized before a density is evaluated) or ``"discrete"`` (integer categories
            ``0..num_categories-1``; densities are probability masses).
        value_range: (lo, hi) of model-space values; for 8-bit images the pixel v maps to
            ``lo + (v + u) / 256 * (hi - lo)`` with u ~ U[0, 1).
        num_categories: number of levels for discrete data (e.g. 2 or 256).
    """

    shape: tuple[int, ...]
    kind: Literal["continuous", "discrete"] = "continuous"
    value_range: tuple[float, float] = (-1.0, 1.0)
    num_categories: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "value_range", (float(self.value_range[0]), float(self.value_range[1])))
        if not self.shape or any(s < 1 for s in self.shape):
            raise ValueError(f"DataSpec.shape must be non-empty positive sizes, got {self.shape}")
        if self.kind not in ("continuous", "discrete"):
            raise ValueError(f"DataSpec.kind must be 'continuous' or 'discrete', got {self.kind!r}")
        lo, hi = self.value_range
        if not hi > lo:
            raise ValueError(f"DataSpec.value_range must have lo < hi, got {self.value_range}")
        if self.kind == "discrete" and (self.num_categories is None or self.num_categories < 2):
            raise ValueError("a discrete DataSpec needs num_categories >= 2")

    @property
    def num_dims(self) -> int:
        """D, the number of scalar dimensions per example."""
        n = 1
        for s in self.shape:
            n *= s
        return n


@runtime_checkable
class Sampler(Protocol):
    """Draws samples. ``sample(n, rng)`` returns [n, *data_spec.shape] in model space."""

    data_spec: DataSpec

    def sample(self, n: int, rng: BatchRNG) -> Tensor: ...


@runtime_checkable
class LogLikelihood(Protocol):
    """Exact log-density (continuous) or log-mass (discrete): ``log_prob(x) -> [B]`` nats."""

    def log_prob(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class LowerBound(Protocol):
    """A lower bound on log p(x), [B] nats. ``num_importance=k>1`` is the IWAE bound (Burda et al. 2016, eq. 8).

    ``rng`` is a ``BatchRNG`` over the B examples of ``x``; the model draws all the bound's noise
    from it (e.g. ``rng.normal((k, Z))`` -> [B, k, Z]), so example i's bound does not depend on the
    batch it is in. The harness passes it on every call (``metrics.likelihood.bound_bpd``).

    Older models with ``elbo(x, *, num_importance=1)`` (no ``rng`` parameter) still work: the
    harness then seeds the global torch RNG per batch (inside ``torch.random.fork_rng``), so their
    values depend on the batch composition, and the metric entry says so in ``bound_noise``.
    """

    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG) -> Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    """Gaussian posterior q(z|x): ``encode(x) -> (mean [B, Z], logvar [B, Z])``."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class ProbabilityFlow(Protocol):
    """A probability-flow ODE dx/dt = ode_drift(x, t) from ``t_span[0]`` (data) to ``t_span[1]`` (prior).

    Song et al. 2021, eq. 13. ``prior_log_prob(z) -> [B]`` nats at ``t_span[1]``. ``t`` is a
    tensor of shape [B] (one time per example; per-example adaptive solvers need this).
    """

    t_span: tuple[float, float]

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor: ...

    def prior_log_prob(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class FlowTrajectory(Protocol):
    """A flow whose generative ODE can be traced: ``trajectory(z0, steps=N) -> [N + 1, B, *data_spec.shape]``.

    The N + 1 states of N equal Euler steps of the model's generative ODE, from the prior sample
    z0 [B, *data_spec.shape] (state 0) to the data end (state N), in z0's dtype. Flow matching
    (``baselines.flow_matching``, Lipman et al. 2023 convention) has the prior at t = 0 and the data
    at t = t_max (1, or 1 − t_eps for the VP path), the uniform grid t_k = k t_max / N, i.e. the
    reverse of its ProbabilityFlow ``t_span = (t_max, 0)``. Only the order of the states matters to
    ``metrics.straightness``, which rescales the time grid to [0, 1].
    """

    data_spec: DataSpec

    def trajectory(self, z0: Tensor, *, steps: int) -> Tensor: ...


@runtime_checkable
class Score(Protocol):
    """The score of a noise-smoothed data density: ``score(x) -> [B, *shape]`` = ∇_x log q_σ(x).

    q_σ = p_data * N(0, σ² I) with σ = ``score_noise_std`` (Vincent 2011: the Parzen-smoothed
    density that implicit, sliced and denoising score matching at noise σ all target); σ = 0 means
    the data density itself. Units: 1 / (data units). Time-conditional score networks (a score SDE's
    ``score(x, t)``) are not this capability: they have no single σ.
    """

    score_noise_std: float

    def score(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class Reconstructor(Protocol):
    """An autoencoder's deterministic reconstruction: ``reconstruct(x) -> [B, *shape]`` in model space.

    x [B, *data_spec.shape] in model space (dequantized images); the result is the decoder's mean
    at the encoder's code for x (a VQ-VAE: its nearest codes).
    """

    def reconstruct(self, x: Tensor) -> Tensor: ...


CAPABILITIES: dict[str, type] = {
    "Sampler": Sampler,
    "LogLikelihood": LogLikelihood,
    "LowerBound": LowerBound,
    "Encoder": Encoder,
    "ProbabilityFlow": ProbabilityFlow,
    "FlowTrajectory": FlowTrajectory,
    "Score": Score,
    "Reconstructor": Reconstructor,
}


def capabilities(model: object) -> list[str]:
    """Names of the capability protocols ``model`` implements."""
    return [name for name, proto in CAPABILITIES.items() if isinstance(model, proto)]
