"""Checks shared by the frozen config dataclasses of the baselines: each raises a one-line ValueError
that names the field, the rule and the value given."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["chain_bound_call", "finite_positive", "in_choices", "positive_ints", "unit_interval"]


def positive_ints(config: Any, *names: str) -> None:
    """Every named field is an int >= 1 (a bool is refused)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def finite_positive(config: Any, *names: str) -> None:
    """Every named field is a finite number > 0 (a bool is refused)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def unit_interval(config: Any, name: str, *, open_low: bool = False, hint: str = "") -> None:
    """The named field is in [0, 1) (or (0, 1) with ``open_low``); ``hint`` follows the rule in the message."""
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0.0 < value if open_low else 0.0 <= value) \
        and value < 1.0
    if not ok:
        raise ValueError(f"{name} must be in {'(0' if open_low else '[0'}, 1){hint}, got {value!r}")


def in_choices(config: Any, name: str, choices: tuple[Any, ...]) -> None:
    """The named field is one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def chain_bound_call(owner: str, batch: int, num_importance: int, rng: Any, generator: Any) -> None:
    """The arguments of a diffusion chain's ``elbo`` (its T-term bound has no importance-weighted form):
    ``num_importance`` must be 1, ``rng`` and ``generator`` are exclusive, and ``rng`` covers the batch."""
    if num_importance != 1:
        raise NotImplementedError(f"{owner}.elbo supports num_importance=1 only (got {num_importance}): the "
                                  "importance-weighted bound over the T-step chain is not implemented")
    if rng is not None and generator is not None:
        raise ValueError("give elbo either rng or generator, not both")
    if rng is not None and len(rng) != batch:
        raise ValueError(f"rng covers {len(rng)} examples but the batch has {batch}")
