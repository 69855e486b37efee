"""Small project-trained CNN classifiers used as offline, CPU-only feature extractors.

Results computed with these extractors are "Fréchet distance in the mnist-cnn feature space"
(or fashion-mnist-cnn), never FID: the network is a 28×28 grayscale digit/clothing classifier
trained by :mod:`harness.train_classifier`, not Inception-v3.

Architecture (``ARCHITECTURE``), input ``[B, 1, 28, 28]`` float::

    conv3×3(1→32, pad 1) → ReLU → maxpool2      → [B, 32, 14, 14]
    conv3×3(32→64, pad 1) → ReLU → maxpool2     → [B, 64, 7, 7]
    conv3×3(64→64, pad 1) → ReLU → maxpool2     → [B, 64, 3, 3]
    flatten → fc(576→128)  = **features** (pre-ReLU, 128-d)
    → ReLU → dropout(0.25) → fc(128→10) = **logits**

Features are taken *before* the ReLU: post-ReLU activations are sparse (many exact zeros), which
fits the Gaussian assumption of the Fréchet distance badly. Logits feed the Inception-Score
analogue.

Preprocessing (identical for training and extraction, see :func:`preprocess`): uint8 → float/255;
3-channel input → gray with ITU-R BT.601 luma weights; spatial sizes other than 28×28 → 28×28 with
``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``; then
``(x - 0.5) / 0.5``. What was actually applied to the inputs seen so far is recorded in
:meth:`ClassifierFeatures.protocol`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

ARCHITECTURE = "genbench-small-cnn-v1"
INPUT_SIZE = 28
FEATURE_DIM = 128
NUM_CLASSES = 10
NORM_MEAN = 0.5
NORM_STD = 0.5
BT601_WEIGHTS = (0.299, 0.587, 0.114)
RESIZE = {"to": [INPUT_SIZE, INPUT_SIZE], "mode": "bilinear", "antialias": True, "align_corners": False}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ClassifierSpec:
    """Where a registered classifier's weights live and how they are reproduced."""

    name: str
    train_dataset: str
    eval_dataset: str

    @property
    def weights_file(self) -> str:
        return f"{self.name}.pt"

    @property
    def train_command(self) -> str:
        return (
            f"python -m harness.train_classifier --dataset {self.train_dataset} "
            f"--eval-dataset {self.eval_dataset} --out metrics/features/weights/{self.weights_file} --seed 0"
        )


SPECS: dict[str, ClassifierSpec] = {
    spec.name: spec
    for spec in (
        ClassifierSpec("mnist-cnn", "mnist5k-train", "mnist5k-test"),
        ClassifierSpec("fashion-mnist-cnn", "fashion-mnist-train", "fashion-mnist-test"),
    )
}


class SmallCNN(nn.Module):
    """The 28×28 grayscale classifier; ``forward`` returns ``(features, logits)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 3 * 3, FEATURE_DIM)
        self.dropout = nn.Dropout(0.25)
        self.fc2 = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: float ``[B, 1, 28, 28]`` from :func:`preprocess`.

        Returns ``features`` ``[B, 128]`` (pre-ReLU fc1 output) and ``logits`` ``[B, 10]``.
        """
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        features = self.fc1(h.flatten(1))
        logits = self.fc2(self.dropout(F.relu(features)))
        return features, logits


def check_images(x: object) -> torch.Tensor:
    """Validate a batch of images: a uint8 tensor ``[B, C, H, W]`` with ``C`` in {1, 3}."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of uint8 images [B, C, H, W], got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(
            f"expected uint8 images with values 0..255, got dtype {x.dtype}; convert with "
            "(x * 255).round().clamp(0, 255).to(torch.uint8) if your images are floats in [0, 1]"
        )
    if x.ndim != 4:
        raise ValueError(f"expected images of shape [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    return x


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` (C in {1, 3}) → normalised float32 ``[B, 1, 28, 28]`` on ``x.device``."""
    h = check_images(x).to(torch.float32) / 255.0
    if h.shape[1] == 3:
        weights = torch.tensor(BT601_WEIGHTS, dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
        h = (h * weights).sum(dim=1, keepdim=True)
    if tuple(h.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        h = F.interpolate(h, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return (h - NORM_MEAN) / NORM_STD


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def load_verified_state_dict(weights_path: Path, retrain_command: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``weights_path`` and its ``.json`` sidecar, check the sha256 and architecture, load on CPU.

    Returns ``(state_dict, sidecar)``. Raises ``FileNotFoundError`` / ``ValueError`` naming the
    command that regenerates the files.
    """
    sidecar_path = weights_path.with_suffix(".json")
    for path in (weights_path, sidecar_path):
        if not path.is_file():
            raise FileNotFoundError(f"classifier file {path} is missing; regenerate it with: {retrain_command}")
    data = weights_path.read_bytes()
    sidecar = json.loads(sidecar_path.read_text())
    actual = sha256_bytes(data)
    if actual != sidecar.get("sha256"):
        raise ValueError(
            f"sha256 of {weights_path} is {actual} but its sidecar {sidecar_path.name} records "
            f"{sidecar.get('sha256')}; the weights were changed or corrupted. Regenerate both with: {retrain_command}"
        )
    if sidecar.get("architecture") != ARCHITECTURE:
        raise ValueError(
            f"{sidecar_path} describes architecture {sidecar.get('architecture')!r}, this code builds "
            f"{ARCHITECTURE!r}; regenerate the weights with: {retrain_command}"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state, sidecar


class ClassifierFeatures:
    """A :class:`~metrics.features.FeatureExtractor` backed by a :class:`SmallCNN`.

    Calling it on uint8 images ``[B, C, H, W]`` returns ``{"features": float32 [B, 128],
    "logits": float32 [B, 10]}`` on CPU, computed in chunks of ``batch_size`` in eval mode without
    gradients. :meth:`protocol` records the weights, preprocessing and the resize / channel
    conversions applied to the inputs seen so far.
    """

    input_kind = "image"
    feature_dim = FEATURE_DIM
    num_classes: int | None = NUM_CLASSES

    def __init__(
        self,
        name: str,
        model: SmallCNN,
        *,
        weights_path: Path,
        sidecar: dict[str, Any],
        device: torch.device,
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.model = model.to(device).eval()
        self.weights_path = weights_path
        self.sidecar = sidecar
        self.device = device
        self.batch_size = batch_size
        self._sizes_seen: set[tuple[int, int]] = set()
        self._channels_seen: set[int] = set()

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features and logits of uint8 images ``x`` ``[B, C, H, W]``; see the class docstring."""
        check_images(x)
        self._sizes_seen.add((int(x.shape[2]), int(x.shape[3])))
        self._channels_seen.add(int(x.shape[1]))
        features, logits = [], []
        with torch.inference_mode():
            for chunk in x.split(self.batch_size):
                f, lg = self.model(preprocess(chunk.to(self.device)))
                features.append(f.float().cpu())
                logits.append(lg.float().cpu())
        if not features:  # B == 0
            return {"features": torch.zeros(0, FEATURE_DIM), "logits": torch.zeros(0, NUM_CLASSES)}
        return {"features": torch.cat(features), "logits": torch.cat(logits)}

    def protocol(self) -> dict[str, Any]:
        """JSON-able description of how features are computed (for result records).

        ``channels`` is ``None`` before the first call, else the conversions seen so far
        (``"gray"``, ``"rgb-to-gray-bt601"``, or both joined by ``"+"``); ``resized_from`` lists
        the input sizes ``[H, W]`` seen so far that were resized to 28×28 (empty if none).
        """
        channel_names = {1: "gray", 3: "rgb-to-gray-bt601"}
        return {
            "name": self.name,
            "label": f"Fréchet distance in the {self.name} feature space (not FID)",
            "network": ARCHITECTURE,
            "features_layer": f"fc1 pre-ReLU ({FEATURE_DIM})",
            "logits_layer": f"fc2 ({NUM_CLASSES} classes)",
            "weights_file": self.weights_path.name,
            "weights_path": str(self.weights_path),
            "weights_sha256": self.sidecar["sha256"],
            "input_dtype": "uint8",
            "input_size": [INPUT_SIZE, INPUT_SIZE],
            "resize": "torch-bilinear-antialias",
            "resize_detail": dict(RESIZE),
            "resized_from": [list(s) for s in sorted(self._sizes_seen) if s != (INPUT_SIZE, INPUT_SIZE)],
            "channels": "+".join(channel_names[c] for c in sorted(self._channels_seen)) or None,
            "normalization": f"(x / 255 - {NORM_MEAN}) / {NORM_STD}",
            "dtype": "float32",
            "device": str(self.device),
            "versions": {"torch": torch.__version__},
            "training": {
                key: self.sidecar.get(key)
                for key in ("dataset", "dataset_content_hash", "seed", "epochs", "eval_dataset", "eval_accuracy", "command")
            },
        }


def load_classifier_features(
    name: str, *, device: str | torch.device = "cpu", weights_path: str | Path | None = None, batch_size: int = 256
) -> ClassifierFeatures:
    """Build the registered classifier ``name`` (a key of :data:`SPECS`) from verified weights."""
    spec = SPECS[name]
    path = Path(weights_path) if weights_path is not None else WEIGHTS_DIR / spec.weights_file
    state, sidecar = load_verified_state_dict(path, spec.train_command)
    model = SmallCNN()
    model.load_state_dict(state)
    logger.info("loaded %s from %s (sha256 %s)", name, path, sidecar["sha256"])
    return ClassifierFeatures(
        name, model, weights_path=path, sidecar=sidecar, device=torch.device(device), batch_size=batch_size
    )


def mnist_cnn(
    *, device: str | torch.device = "cpu", weights_path: str | Path | None = None, batch_size: int = 256
) -> ClassifierFeatures:
    """Factory for the ``mnist-cnn`` extractor (trained on mnist5k-train)."""
    return load_classifier_features("mnist-cnn", device=device, weights_path=weights_path, batch_size=batch_size)


def fashion_mnist_cnn(
    *, device: str | torch.device = "cpu", weights_path: str | Path | None = None, batch_size: int = 256
) -> ClassifierFeatures:
    """Factory for the ``fashion-mnist-cnn`` extractor (trained on fashion-mnist-train)."""
    return load_classifier_features(
        "fashion-mnist-cnn", device=device, weights_path=weights_path, batch_size=batch_size
    )
