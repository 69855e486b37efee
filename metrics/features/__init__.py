"""Feature extractors: the :class:`FeatureExtractor` protocol and the ``FEATURES`` registry.

Registry values are factories ``factory(*, device="cpu", **options) -> FeatureExtractor``,
registered as lazy ``"module:attr"`` strings so that listing them (``genbench ls``) imports
neither torch-fidelity nor clean-fid. Add an extractor with one ``FEATURES.register`` line below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from harness.core.registry import Registry

if TYPE_CHECKING:
    import torch


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps a batch of samples to features (and, for IS-capable networks, class logits).

    Attributes:
        name: registry name, e.g. ``"inception-v3"``.
        input_kind: ``"image"`` (uint8 ``[B, C, H, W]``) or ``"tabular"`` (float ``[B, D]``).
        feature_dim: width of ``"features"``, e.g. 2048.
        num_classes: width of ``"logits"`` (1008 for inception-v3), ``None`` if there are none.
    """

    name: str
    input_kind: str
    feature_dim: int
    num_classes: int | None

    def protocol(self) -> dict[str, Any]:
        """JSON-able description needed to reproduce the features: weights file and sha256,
        resize, input size, channels, dtype, library versions, ..."""
        ...

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"features": float32 [B, feature_dim]}`` plus ``"logits": float32 [B, num_classes]``
        when ``num_classes`` is set; always on the CPU."""
        ...


FEATURES: Registry[Callable[..., FeatureExtractor]] = Registry("feature extractor")
FEATURES.register(
    "inception-v3",
    "metrics.features.inception:InceptionV3Extractor",
    description="torch-fidelity's FID Inception-v3: pool3 (2048) + unbiased logits (1008); options resize, weights_path, offline",
)
FEATURES.register("inception-v3-pytorch-fid", "metrics.features.inception_pytorch_fid:InceptionV3PytorchFidExtractor", description="pytorch-fid 0.3.0's FID Inception-v3: pool3 (2048), its bilinear resize and its weights file pt_inception-2015-12-05-6726825d.pth; options weights_path, offline")
FEATURES.register("identity", "metrics.features.identity:IdentityExtractor", description="2-D / tabular rows as float32 features")
FEATURES.register("mnist-cnn", "metrics.features.classifier:mnist_cnn", description="project CNN trained on mnist5k-train: fc1 pre-ReLU (128) + logits (10), 28x28 gray; options weights_path, batch_size")
FEATURES.register("fashion-mnist-cnn", "metrics.features.classifier:fashion_mnist_cnn", description="project CNN trained on fashion-mnist-train: fc1 pre-ReLU (128) + logits (10), 28x28 gray; options weights_path, batch_size")


def get_feature_extractor(name: str, **options: Any) -> FeatureExtractor:
    """Build the registered extractor ``name`` with ``options`` (``device=``, ``resize=``, ...)."""
    return FEATURES.get(name)(**options)
