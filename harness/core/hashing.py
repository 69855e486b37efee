"""Content hashes of weights, independent of the file that holds them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of a state dict: for each name in sorted order, ``name\\0dtype\\0shape\\0`` then the bytes.

    Equal tensors give equal hashes whatever the metadata or file layout around them (a checkpoint's
    file hash changes with, e.g., the wall time of an otherwise identical training).
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
