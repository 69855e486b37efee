"""Choosing and checking a ``--device`` before any work: ``auto``, or a name torch knows on
hardware that is present."""

from __future__ import annotations

import os

AUTO = "auto"


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def auto_device() -> str:
    """The device ``auto`` means here: ``cuda`` if CUDA is available, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if _mps_available() else "cpu"


def check_device(name: str) -> str:
    """The device to run on for ``--device name``; raises ValueError saying what to use instead.

    ``auto`` resolves by :func:`auto_device`; the result, not ``auto``, is what configs and records
    hold, so a record names what ran. Otherwise accepts what ``torch.device`` accepts (``cpu``,
    ``cuda``, ``cuda:N``, ``mps``, ...). A CUDA device needs ``torch.cuda.is_available()`` and an
    index below ``torch.cuda.device_count()``; ``mps`` needs ``torch.backends.mps.is_available()``.
    Under ``torchrun`` a bare ``cuda`` is this worker's GPU, ``cuda:LOCAL_RANK``.
    """
    import torch

    if name == AUTO:
        name = auto_device()
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {name!r} is not a torch device ({err}); use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return name


def math_device(name: str | None) -> str | None:
    """Where the metric math (KID kernels, k-NN tiles) runs for a run on ``name``: the device
    itself when it is a CUDA GPU, else None (numpy / torch on the CPU; MPS has no float64)."""
    return name if name is not None and str(name).startswith("cuda") else None
