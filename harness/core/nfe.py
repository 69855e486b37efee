"""Number of function evaluations, counted at the network, never by the sampler.

Wrapping the network module means adaptive solvers, guidance (two passes per step) and
Hutchinson divergence passes are all counted the same way. One *evaluation* is one forward call
of the wrapped module on a batch; per-example NFE equals the number of calls whenever every call
evaluates every example of the batch (fixed-step and batch-synchronous adaptive solvers), which
the record states. A backward pass through the network (a vector-Jacobian product) is counted
separately in ``vjp_calls`` when the caller reports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class NFECount:
    """Counts for one run: forward calls of the network, examples evaluated, VJPs reported."""

    forward_calls: int = 0
    examples: int = 0
    vjp_calls: int = 0

    def as_record(self, *, meaning: str) -> dict[str, object]:
        return {"forward_calls": self.forward_calls, "examples_evaluated": self.examples,
                "vjp_calls": self.vjp_calls, "meaning": meaning}


class NFECounter(nn.Module):
    """Transparent wrapper: ``NFECounter(net)(x, *args)`` calls ``net`` and counts the call.

    The wrapped module's parameters and state dict are unchanged (``module.`` prefix aside, so
    wrap after loading weights).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.count = NFECount()

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        self.count.forward_calls += 1
        self.count.examples += int(x.shape[0]) if x.dim() > 0 else 1
        return self.module(x, *args, **kwargs)

    def reset(self) -> NFECount:
        """Return the counts so far and start again from zero."""
        old, self.count = self.count, NFECount()
        return old


DECLARED_ATTRIBUTE = "nfe_per_sample"
"""A sampler that evaluates no network module declares its NFE per sample under this attribute
(0 for the analytic and reference samplers); counting at ``model.net`` takes precedence."""


def nfe_support(model: object) -> str | None:
    """Why the NFE of ``model``'s sampling cannot be known (None when it can).

    It can when ``model.net`` is a ``torch.nn.Module`` (counted, :func:`counting`) or the model
    declares :data:`DECLARED_ATTRIBUTE` as a number.
    """
    if isinstance(getattr(model, "net", None), nn.Module):
        return None
    if isinstance(getattr(model, DECLARED_ATTRIBUTE, None), (int, float)):
        return None
    return (f"{type(model).__name__} has no `net` module to count network evaluations at and declares no "
            f"`{DECLARED_ATTRIBUTE}`: expose the network as `model.net`, or set `{DECLARED_ATTRIBUTE}` on a "
            "sampler that evaluates a fixed number of networks per sample (0 when none)")


@contextlib.contextmanager
def counting(model: object, attribute: str = "net") -> Iterator[NFECount]:
    """Temporarily wrap ``model.<attribute>`` in an NFECounter; yields the live count.

    >>> class M: net = nn.Identity()
    >>> m = M()
    >>> with counting(m) as c:
    ...     _ = m.net(torch.zeros(3, 2)); _ = m.net(torch.zeros(3, 2))
    >>> c.forward_calls, isinstance(m.net, nn.Identity)
    (2, True)
    """
    original = getattr(model, attribute)
    if not isinstance(original, nn.Module):
        raise TypeError(f"cannot count NFE: {type(model).__name__}.{attribute} is not a torch.nn.Module")
    counter = NFECounter(original)
    setattr(model, attribute, counter)
    try:
        yield counter.count
    finally:
        setattr(model, attribute, original)
