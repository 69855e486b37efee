"""``identity``: the "feature extractor" for 2-D / tabular data, whose features are the rows themselves.

Decision: the row width is a required option, ``dim``, rather than being taken from the first
call. Callers size their feature buffers from ``feature_dim`` and put ``protocol()`` into cache
keys *before* the first batch, so both must be right from construction on; a wrong width then
fails at the first batch with a message naming both widths.
"""

from __future__ import annotations

from typing import Any

import torch


class IdentityExtractor:
    """Rows ``[B, dim]`` (any real dtype) -> ``{"features": float32 [B, dim]}`` on the CPU; no logits.

    Args:
        dim: the row width D (e.g. 2 for 2-D toy data).
        device: accepted for the common factory signature; nothing runs on it.
    """

    name = "identity"
    input_kind = "tabular"
    num_classes = None

    def __init__(self, *, dim: int, device: str | torch.device = "cpu") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"identity: dim must be a positive int (the row width), got {dim!r}")
        self.feature_dim = dim
        self.device = torch.device(device)

    def protocol(self) -> dict[str, Any]:
        """JSON-able description: the features are the raw rows as float32."""
        return {"name": self.name, "input_kind": self.input_kind, "feature_dim": self.feature_dim, "dtype": "float32"}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, dim]`` rows -> ``{"features": float32 [B, dim]}`` on the CPU."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"identity expects a torch.Tensor of rows [B, D], got {type(x).__name__}")
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"identity expects real-valued rows, got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(
                f"identity expects rows [B, {self.feature_dim}] (dim={self.feature_dim}), got shape {tuple(x.shape)}"
            )
        features = x.detach().to(device="cpu", dtype=torch.float32)
        if not torch.isfinite(features).all():
            raise ValueError("identity: rows contain NaN or inf (after conversion to float32)")
        return {"features": features}
