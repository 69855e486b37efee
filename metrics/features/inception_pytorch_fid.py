"""``inception-v3-pytorch-fid``: pool3 features exactly as pytorch-fid 0.3.0 computes them.

The network is pytorch-fid's ``fid_inception_v3`` (``pytorch_fid/inception.py``): torchvision's
``Inception3`` (1008 classes, no aux logits) with the TF-FID patches of its ``FIDInceptionA``,
``FIDInceptionC``, ``FIDInceptionE_1`` and ``FIDInceptionE_2`` blocks (average pools that ignore the
zero padding; a max pool in the last block). It is rebuilt here on torchvision's modules, because
pytorch-fid is a test anchor, not a dependency (``tests/test_pytorch_fid_agreement.py`` checks
features and FID against the package on the same weights). The input path is pytorch-fid's
``fid_score``: ``uint8 / 255`` as torchvision's ``ToTensor``, then ``InceptionV3(resize_input=True,
normalize_input=True)``: ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)``
(no antialias) and ``2x - 1``; output ``[B, 2048]`` after the final average pool (block 3).

Input: ``uint8 [B, C, H, W]``, C = 3 (RGB) or 1 (grey, repeated to RGB as PIL's ``convert("RGB")``
does in pytorch-fid; the protocol records it). No logits (``num_classes`` is None): pytorch-fid has
no Inception Score.

How it differs from ``inception-v3`` (torch-fidelity):

* resize and scaling: torch-fidelity resizes with its TF1-compatible bilinear (sample grid
  ``dst * scale``) and normalises ``(x - 128) / 128``; pytorch-fid uses PyTorch's bilinear with
  half-pixel centres (``(dst + 0.5) * scale - 0.5``) on ``x / 255`` and ``2x - 1``, i.e.
  ``(x - 127.5) / 127.5``. Both differences change the features (even for 299x299 inputs, where
  neither resize does anything, through the scaling alone), so never compare the two FIDs.
* weights: pytorch-fid's own file ``pt_inception-2015-12-05-6726825d.pth`` (its release URL, and
  the torch hub cache where pytorch-fid keeps it), found by
  :func:`metrics.features.weights_lookup.resolve_pytorch_fid_weights` (``weights_path=``,
  ``GENBENCH_PYTORCH_FID_WEIGHTS``, the hub cache; a download only when not offline). It has the
  state-dict layout of torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` and the same
  sha256 prefix, but only pytorch-fid's name is looked up; the sha256 is recorded either way.
* the network: the same TF-FID patches; on one normalised 299x299 input both trunks give the same
  pool3 bit for bit on CPU. torch-fidelity's module is not used here, and there are no logits.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

from metrics.features.inception import INPUT_SIZE, InceptionV3Extractor, WeightsLoadError, _check_state_dict
from metrics.features.weights_lookup import PYTORCH_FID_FILE_NAME, ResolvedWeights, resolve_pytorch_fid_weights

logger = logging.getLogger(__name__)

# pytorch_fid.inception.InceptionV3 blocks 0-3, module by module (torchvision's attribute names).
_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
    "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool",
)
RESIZE = "pytorch-fid bilinear, align_corners=False, no antialias"


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool does not count the zero padding (pytorch-fid's "Patch").
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _FIDInceptionA(tv_inception.InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_avg_pool_no_pad(x))]


class _FIDInceptionC(tv_inception.InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_avg_pool_no_pad(x))]


class _FIDInceptionE(tv_inception.InceptionE):
    """``FIDInceptionE_1`` (``pool=_avg_pool_no_pad``, Mixed_7b) or ``FIDInceptionE_2`` (``_max_pool``, Mixed_7c)."""

    pool = staticmethod(_avg_pool_no_pad)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(self.pool(x))]


class _FIDInceptionE2(_FIDInceptionE):
    # pytorch-fid: "The FID Inception model uses max pooling instead of average pooling."
    pool = staticmethod(_max_pool)


def build_fid_inception(state_dict: dict[str, torch.Tensor] | None = None) -> tv_inception.Inception3:
    """pytorch-fid's ``fid_inception_v3()`` network; ``state_dict`` loaded strictly if given.

    With a state dict the modules are built on the meta device and the tensors assigned (no
    random init of 24M parameters that would be overwritten anyway).
    """
    blocks = [
        tv_inception.BasicConv2d, _FIDInceptionA, tv_inception.InceptionB, _FIDInceptionC,
        tv_inception.InceptionD, _FIDInceptionE, tv_inception.InceptionAux,
    ]
    with torch.device("meta" if state_dict is not None else "cpu"):
        net = tv_inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False, inception_blocks=blocks)
        net.Mixed_7c = _FIDInceptionE2(2048)
    if state_dict is not None:
        net.load_state_dict(state_dict, strict=True, assign=True)
    return net.eval()


class InceptionV3PytorchFidExtractor:
    """pytorch-fid's pool3 features; see the module docstring for inputs, resize and weights.

    Args:
        device: where the network runs (outputs always come back on the CPU).
        weights_path: explicit weights file; hashed and recorded, never rejected by hash.
        offline: forbid downloading the weights; ``None`` reads ``GENBENCH_OFFLINE`` / ``HF_HUB_OFFLINE``.
    """

    name = "inception-v3-pytorch-fid"
    input_kind = "image"
    feature_dim = 2048
    num_classes = None

    _as_rgb = InceptionV3Extractor._as_rgb  # uint8 checks, grey repeated to RGB, recorded in _channels_seen

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        weights_path: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.weights: ResolvedWeights = resolve_pytorch_fid_weights(weights_path, offline=offline)
        self._net = _load_network(self.weights).to(self.device)
        self._channels_seen: set[str] = set()

    def protocol(self) -> dict[str, Any]:
        """Everything needed to reproduce the features (JSON-able)."""
        return {
            "name": self.name,
            "network": "pytorch-fid 0.3.0 fid_inception_v3 (torchvision Inception3 + FIDInceptionA/C/E_1/E_2), rebuilt",
            "features_layer": "2048 (pool3, pytorch-fid InceptionV3 block 3)",
            "logits_layer": None,
            "weights_file": self.weights.path.name,
            "weights_path": str(self.weights.path),
            "weights_source": self.weights.source,
            "weights_sha256": self.weights.sha256,
            "weights_match_official_sha256_prefix": self.weights.matches_official_prefix,
            "resize": RESIZE,
            "resize_detail": f"torch.nn.functional.interpolate(size=({INPUT_SIZE}, {INPUT_SIZE}), mode='bilinear', "
            "align_corners=False) on float32 in [0, 1], as pytorch_fid InceptionV3(resize_input=True)",
            "input_size": INPUT_SIZE,
            "input_scaling": "uint8 / 255 (torchvision ToTensor)",
            "normalization": "2x - 1",
            "channels": "+".join(sorted(self._channels_seen)) or None,
            "dtype": "float32",
            "device": str(self.device),
            "versions": {"torch": version("torch"), "torchvision": version("torchvision")},
        }

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map ``uint8 [B, C, H, W]`` images to ``{"features": float32 [B, 2048]}`` on the CPU."""
        h = self._as_rgb(x).to(torch.float32).div(255)  # ToTensor, on the CPU as in pytorch-fid's loader
        with torch.no_grad():
            h = h.to(self.device)
            h = F.interpolate(h, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            h = 2 * h - 1
            for module_name in _TRUNK:
                h = getattr(self._net, module_name)(h)
        return {"features": torch.flatten(h, 1).float().cpu()}


def _load_network(weights: ResolvedWeights) -> tv_inception.Inception3:
    state_dict = _check_state_dict(weights, PYTORCH_FID_FILE_NAME)
    try:
        net = build_fid_inception(state_dict)
    except RuntimeError as err:
        raise WeightsLoadError(
            f"Inception weights {str(weights.path)!r} (from {weights.source}) could not be loaded into pytorch-fid's "
            f"FID Inception-v3 (strict load_state_dict): {' '.join(str(err).split())}"
        ) from err
    logger.info("loaded pytorch-fid Inception-v3 weights %s (sha256 %s, %s)", weights.path, weights.sha256, weights.source)
    return net
