"""Argument checks shared by the modules: bad input raises a clear error naming the argument."""

from __future__ import annotations

import numbers


def check_int(value, name: str, low: int, high: int | None = None, what: str = "") -> int:
    """An int (not bool) in ``[low, high]`` (``high=None``: no upper bound); ``what`` adds context."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {rng}{what}, got {value}")
    return value
