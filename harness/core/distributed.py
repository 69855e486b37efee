"""Sharded evaluation under ``torchrun``: which batches this rank runs, and the gathers that make
every rank hold the same full arrays afterwards.

Work is split by *batch*, with the batch boundaries of the one-process run (``range(0, n,
batch_size)``): rank r of W takes batches r, r + W, r + 2W, ... Every example is computed exactly
once, by exactly the computation one process does for it (its seeds depend on its global index,
``harness.core.rng.BatchRNG``); nothing is padded. :func:`gather_rows` then puts every rank's rows
back in global order on every rank, so the metrics that follow run on the very arrays one process
would have, and give its numbers bit for bit. Sums of counts are all-reduced (:func:`sum_ints`).

Outside ``torchrun`` (no process group) every function is the identity of a one-rank world.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")

# The ranks wait for each other only at the gathers; the metrics after the last gather run on every
# rank with no collective, so a long metric on one rank cannot time another out.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` (0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this rank writes records and logs progress (rank 0)."""
        return self.rank == 0


def world() -> World:
    """The current process group's rank and size, or the one-rank world when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size())
    return World()


def describe_world() -> dict[str, Any] | None:
    """What a record says of the job: world size, backend and the sharding rule (None in one process)."""
    import torch.distributed as dist

    w = world()
    if w.size == 1:
        return None
    return {"world_size": w.size, "backend": dist.get_backend(),
            "sharding": "batches of the one-process run, batch i on rank i mod world_size; rows gathered in "
                        "global order before any metric (the numbers of one process)"}


def launched_by_torchrun() -> bool:
    """Whether the environment of a ``torchrun`` worker is set (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> World:
    """Join the ``torchrun`` job this process belongs to (NCCL for a CUDA ``device``, gloo otherwise).

    A no-op returning the one-rank world outside torchrun or when a group already exists. Under
    torchrun a CUDA device is this rank's ``LOCAL_RANK`` (``harness.core.device.check_device``
    maps a bare ``cuda`` to it).
    """
    import torch
    import torch.distributed as dist

    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=TIMEOUT)
    return world()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def my_share(items: Sequence[T]) -> list[T]:
    """This rank's items of ``items`` (batches in global order): every ``size``-th from ``rank``."""
    w = world()
    return list(items[w.rank :: w.size])


def map_shared(fn: Callable[[T], R], items: Sequence[T],
               wrap: Callable[[Iterable[int]], Iterable[int]] = lambda positions: positions) -> list[R]:
    """``[fn(item) for item in items]``, each item computed on one rank (item i on rank i mod size),
    the results gathered in item order on every rank (they must pickle). ``wrap`` wraps this
    rank's positions, e.g. in a progress bar."""
    w = world()
    positions = range(w.rank, len(items), w.size)
    local = {i: fn(items[i]) for i in wrap(positions)}
    if w.size == 1:
        return [local[i] for i in range(len(items))]
    merged: dict[int, R] = {}
    for part in _all_gather_objects(local):
        merged.update(part)
    return [merged[i] for i in range(len(items))]


def _all_gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(local: dict[int, np.ndarray], n: int) -> np.ndarray | None:
    """Every rank's rows, in global order, on every rank.

    Args:
        local: {global index of a batch's first row: that batch's rows [B, ...]} for this rank's
            batches; every rank's arrays share dtype and trailing shape.
        n: total rows over all ranks.

    Returns:
        [n, ...] (None when no rank had a row). Raises if the batches do not tile 0..n-1 exactly
        once (a sharding error would otherwise count an example twice or drop it).
    """
    if world().size == 1:
        parts = local
    else:
        parts = {}
        for shard in _all_gather_objects(local):
            parts.update(shard)
    if not parts:
        return None
    starts = sorted(parts)
    covered = 0
    for start in starts:
        if start != covered:
            raise RuntimeError(f"sharded rows do not tile 0..{n - 1}: a batch starts at {start}, expected {covered}")
        covered += len(parts[start])
    if covered != n:
        raise RuntimeError(f"sharded rows cover {covered} of {n} examples")
    return np.concatenate([parts[s] for s in starts])


def gather_objects(local: T) -> list[T]:
    """Every rank's ``local``, in rank order (``[local]`` in a one-rank world)."""
    return [local] if world().size == 1 else _all_gather_objects(local)


def sum_ints(values: dict[str, int]) -> dict[str, int]:
    """The sum over ranks of integer counters (exact: integers are summed as Python ints)."""
    if world().size == 1:
        return dict(values)
    total = {k: 0 for k in values}
    for shard in _all_gather_objects(values):
        for k, v in shard.items():
            total[k] += int(v)
    return total


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (e.g. every rank found its cache entry)."""
    return all(gather_objects(bool(flag)))


def finished_here_writes() -> bool:
    """Wait until every rank has finished its work; True on the one rank that writes (rank 0).

    A rank that failed never reaches this point, so rank 0 waits until torchrun ends the job and
    writes nothing.
    """
    if world().size > 1:
        all_true(True)
    return world().is_main
