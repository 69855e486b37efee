"""``inception-v3``: torch-fidelity's FID Inception-v3 as a genbench feature extractor.

The network is ``torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3``
(a port of TF ``inception-2015-12-05``), used as a library, never copied. Outputs:

* ``features``: pool3, float32 ``[B, 2048]`` (torch-fidelity's ``"2048"``, used for FID/KID/PR);
* ``logits``: float32 ``[B, 1008]``, torch-fidelity's ``"logits_unbiased"`` (fc *without* its bias),
  which is what torch-fidelity feeds to the Inception Score.

Input: ``uint8 [B, C, H, W]`` with C = 3 (RGB) or C = 1 (grey, repeated to RGB; the protocol
records ``channels: "gray-repeated-to-rgb"``). Any H, W: both resize modes map to 299 x 299.

Resize modes (``resize=``):

* ``"tf-bilinear"`` (default): torch-fidelity's own forward, i.e. TF1-compatible bilinear resize
  inside the network, then ``(x - 128) / 128``. Features equal torch-fidelity's bit for bit on
  CPU (on CUDA its docs promise 1e-4 L_inf for the resize).
* ``"clean"``: clean-fid's ``clean`` mode resize, PIL bicubic on each channel as a float image,
  clipped to [0, 255] and *not* re-quantised, then ``(x - 128) / 128`` and the same trunk.

Weights: see :mod:`metrics.features.weights_lookup`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metrics.features.weights_lookup import OFFICIAL_FILE_NAME, ResolvedWeights, resolve_inception_weights

logger = logging.getLogger(__name__)

RESIZE_MODES = ("tf-bilinear", "clean")
INPUT_SIZE = 299
_FEATURES = ["2048", "logits_unbiased"]
# torch-fidelity's forward, from the normalised 299x299 input up to pool3, module by module.
_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1",
    "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)
_RESIZE_DETAIL = {
    "tf-bilinear": "torch-fidelity interpolate_bilinear_2d_like_tensorflow1x to 299x299 (align_corners=False) on float32",
    "clean": "clean-fid make_resizer('PIL', quantize_after=False, 'bicubic', (299, 299)): per-channel float PIL "
    "bicubic, clip [0,255], no re-quantisation",
}


class WeightsLoadError(RuntimeError, ValueError):
    """A weights file exists but is not a state dict that loads strictly into the network."""


class InceptionV3Extractor:
    """torch-fidelity's FID Inception-v3; see the module docstring for inputs, outputs and modes.

    Args:
        device: where the network runs (any torch device; outputs always come back on the CPU).
        resize: ``"tf-bilinear"`` (torch-fidelity) or ``"clean"`` (clean-fid).
        weights_path: explicit weights file; hashed and recorded, never rejected by hash.
        offline: forbid downloading the weights; ``None`` reads ``GENBENCH_OFFLINE`` / ``HF_HUB_OFFLINE``.
    """

    name = "inception-v3"
    input_kind = "image"
    feature_dim = 2048
    num_classes = 1008

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        resize: str = "tf-bilinear",
        weights_path: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize!r} for inception-v3; allowed: {', '.join(RESIZE_MODES)}")
        self.device = torch.device(device)
        self.resize = resize
        self.weights: ResolvedWeights = resolve_inception_weights(weights_path, offline=offline)
        self._net = _load_network(self.weights).to(self.device)
        self._clean_resizer = _clean_resizer() if resize == "clean" else None
        self._channels_seen: set[str] = set()

    def protocol(self) -> dict[str, Any]:
        """Everything needed to reproduce the features (JSON-able).

        ``channels`` is ``None`` before the first call, else the conventions seen so far
        (``"rgb"``, ``"gray-repeated-to-rgb"``, or both joined by ``"+"``).
        """
        versions = {"torch": version("torch"), "torch-fidelity": version("torch-fidelity")}
        if self.resize == "clean":
            versions.update({"clean-fid": version("clean-fid"), "pillow": version("pillow"), "numpy": version("numpy")})
        return {
            "name": self.name,
            "network": "torch_fidelity FeatureExtractorInceptionV3 (TF inception-2015-12-05 port)",
            "features_layer": "2048 (pool3)",
            "logits_layer": "logits_unbiased (fc without bias, 1008 classes)",
            "weights_file": self.weights.path.name,
            "weights_path": str(self.weights.path),
            "weights_source": self.weights.source,
            "weights_sha256": self.weights.sha256,
            "weights_match_official_sha256_prefix": self.weights.matches_official_prefix,
            "resize": self.resize,
            "resize_detail": _RESIZE_DETAIL[self.resize],
            "input_size": INPUT_SIZE,
            "normalization": "(x - 128) / 128",
            "channels": "+".join(sorted(self._channels_seen)) or None,
            "dtype": "float32",
            "device": str(self.device),
            "versions": versions,
        }

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map ``uint8 [B, C, H, W]`` images to ``{"features": [B, 2048], "logits": [B, 1008]}`` (float32, CPU)."""
        x = self._as_rgb(x).to(self.device)
        with torch.no_grad():
            if self.resize == "tf-bilinear":
                features, logits = self._net(x)
            else:
                features, logits = self._clean_forward(x)
        return {"features": features.float().cpu(), "logits": logits.float().cpu()}

    def _as_rgb(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"inception-v3 expects a torch.Tensor of uint8 images [B, C, H, W], got {type(x).__name__}")
        if x.dtype != torch.uint8:
            raise TypeError(
                f"inception-v3 expects uint8 images in [0, 255], got dtype {x.dtype}; quantise first "
                "(e.g. (x.clamp(0, 1) * 255).round().to(torch.uint8) for images in [0, 1])"
            )
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"inception-v3 expects [B, C, H, W] with C = 3 (RGB) or 1 (grey), got shape {tuple(x.shape)}"
            )
        if x.shape[1] == 1:
            self._channels_seen.add("gray-repeated-to-rgb")
            return x.repeat(1, 3, 1, 1)
        self._channels_seen.add("rgb")
        return x

    def _clean_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch-fidelity's forward cannot be used here: it asserts uint8 input and always applies
        # its TF1 bilinear resize, while clean-fid feeds float, unquantised, already-resized images.
        # So we resize like clean-fid, normalise like torch-fidelity, and run the library's own
        # submodules in the order of its forward (_TRUNK); a test checks this equals forward() at 299.
        assert self._clean_resizer is not None
        images = x.permute(0, 2, 3, 1).cpu().numpy()  # [B, H, W, 3] uint8
        resized = np.stack([self._clean_resizer(image) for image in images])  # [B, 299, 299, 3] float32
        # contiguous(): the permuted view has channels-last strides, which the arithmetic below keeps,
        # and convolutions on channels-last inputs differ from clean-fid's NCHW ones (up to ~1e-4
        # measured); clean-fid's ToTensor + collate hand the network a contiguous NCHW batch.
        nchw = torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous()
        h = (nchw.to(self.device) - 128) / 128
        return _trunk(self._net, h)


def _trunk(net: torch.nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pool3 ``[B, 2048]`` and logits_unbiased ``[B, 1008]`` from a normalised ``[B, 3, 299, 299]`` input."""
    for module_name in _TRUNK:
        h = getattr(net, module_name)(h)
    features = torch.flatten(h, 1)
    return features, features.mm(net.fc.weight.T)


def _load_network(weights: ResolvedWeights) -> torch.nn.Module:
    """torch-fidelity's network with ``weights`` loaded strictly; clear errors for bad files."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = weights.path
    _check_state_dict(weights)
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", list(_FEATURES), feature_extractor_weights_path=str(path))
    except RuntimeError as err:
        raise WeightsLoadError(
            f"Inception weights {str(path)!r} (from {weights.source}) could not be loaded into torch-fidelity's "
            f"FID Inception-v3 (strict load_state_dict): {err}"
        ) from err
    logger.info("loaded Inception-v3 weights %s (sha256 %s, %s)", path, weights.sha256, weights.source)
    return net


def _check_state_dict(weights: ResolvedWeights, example: str = OFFICIAL_FILE_NAME) -> dict[str, Any]:
    """Return the state dict in ``weights.path``; :class:`WeightsLoadError` unless it is a plain-tensor ``torch.save`` dict.

    Checked first by ``harness.core.torch_files.preflight`` (zip or legacy format: only tensor
    globals, storages no larger than the file), then loaded with ``weights_only=True``: a clear
    error for files that are not state dicts, no pickled code ever runs and no small file can ask
    for a large allocation (torch-fidelity itself then loads the vetted file with weights_only=False).
    """
    from harness.core.torch_files import preflight

    path = weights.path
    try:
        preflight(Path(path), kind="Inception weights file", allow_legacy=True,
                  hint=f"expected a PyTorch state dict saved with torch.save, e.g. {example}")
    except ValueError as err:
        raise WeightsLoadError(f"Inception weights (from {weights.source}): {err}") from err
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files (UnpicklingError, RuntimeError, ...)
        raise WeightsLoadError(
            f"could not read Inception weights {str(path)!r} (from {weights.source}): {type(err).__name__}: {err}. "
            f"Expected a PyTorch state dict saved with torch.save, e.g. {example}."
        ) from err
    if not isinstance(state_dict, dict):
        raise WeightsLoadError(f"Inception weights {str(path)!r} hold a {type(state_dict).__name__}, not a state dict")
    return state_dict


def _clean_resizer() -> Callable[[np.ndarray], np.ndarray]:
    from cleanfid.resize import make_resizer

    return make_resizer("PIL", False, "bicubic", (INPUT_SIZE, INPUT_SIZE))
