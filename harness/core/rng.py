"""Per-sample seeded randomness: results do not depend on batch size or on which process draws.

Example i of a run with seed s always gets the same random numbers, whether it is drawn in a
batch of 1 or 1000, first or last, on this process or another shard. Each example has its own
``torch.Generator`` seeded from (s, stream, i) through numpy's SeedSequence, which mixes the
three into well-separated 64-bit seeds.

Random draws happen on the CPU and are then moved to the requested device, so CPU and GPU runs
see identical noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

_STREAMS: dict[str, int] = {}


def _stream_id(stream: str) -> int:
    """A stable integer for a stream name (its UTF-8 bytes, little-endian, mod 2**63)."""
    if stream not in _STREAMS:
        _STREAMS[stream] = int.from_bytes(stream.encode("utf-8")[:16].ljust(16, b"\0"), "little") % (2**63)
    return _STREAMS[stream]


def example_seed(seed: int, index: int, stream: str = "sample") -> int:
    """The 63-bit generator seed of example ``index`` in ``stream`` for run seed ``seed``."""
    seq = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, _stream_id(stream), int(index)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class BatchRNG:
    """Random draws for a batch of examples with global indices ``indices``.

    >>> a = BatchRNG(seed=0, indices=range(4)).normal((3,))
    >>> b = BatchRNG(seed=0, indices=[2, 3]).normal((3,))
    >>> bool((a[2:] == b).all())
    True
    """

    def __init__(self, seed: int, indices: Sequence[int] | range, *, stream: str = "sample", device: str | torch.device = "cpu") -> None:
        self.seed = int(seed)
        self.indices = list(indices)
        self.stream = stream
        self.device = torch.device(device)
        self._generators = [torch.Generator().manual_seed(example_seed(self.seed, i, stream)) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def generators(self) -> list[torch.Generator]:
        """The per-example CPU generators, in batch order (for APIs that take one generator per example)."""
        return list(self._generators)

    def _draw(self, draw: Callable[[torch.Generator], Tensor]) -> Tensor:
        return torch.stack([draw(g) for g in self._generators]).to(self.device)

    def normal(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal [B, *shape]."""
        return self._draw(lambda g: torch.randn(tuple(shape), generator=g, dtype=dtype))

    def uniform(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform on [0, 1), [B, *shape]."""
        return self._draw(lambda g: torch.rand(tuple(shape), generator=g, dtype=dtype))

    def rademacher(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
        """±1 with equal probability, [B, *shape] (Hutchinson probes)."""
        return self._draw(lambda g: torch.randint(0, 2, tuple(shape), generator=g).to(dtype) * 2 - 1)

    def randint(self, high: int, shape: Sequence[int]) -> Tensor:
        """Integers in [0, high), int64 [B, *shape]."""
        return self._draw(lambda g: torch.randint(0, high, tuple(shape), generator=g))

    def child(self, stream: str) -> BatchRNG:
        """An independent stream for the same examples (e.g. 'dequantize', 'hutchinson')."""
        return BatchRNG(self.seed, self.indices, stream=f"{self.stream}/{stream}", device=self.device)
