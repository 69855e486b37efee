"""Checking a ``--device`` before any work: a name torch knows, on hardware that is present."""

from __future__ import annotations


def check_device(name: str) -> str:
    """Return ``name`` if torch can run on it here; else raise ValueError saying what to use.

    Accepts what ``torch.device`` accepts (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ...). A CUDA
    device needs ``torch.cuda.is_available()`` and an index below ``torch.cuda.device_count()``;
    ``mps`` needs ``torch.backends.mps.is_available()``.
    """
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {name!r} is not a torch device ({err}); use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return name
