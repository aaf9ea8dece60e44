"""Argument checks shared by the modules: bad input raises a clear error naming the argument."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_real"]


def check_int(value, name: str, low: int, high: int | None = None, what: str = "") -> int:
    """An int (not bool) in ``[low, high]`` (``high=None``: no upper bound); ``what`` adds context."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {rng}{what}, got {value}")
    return value


def check_real(value, name: str, *, positive: bool = False, low: float | None = 0.0,
               high: float | None = None) -> float:
    """A finite real number (not bool) in ``[low, high]`` (``None``: unbounded on that side);
    ``positive=True`` demands ``> 0``. The default is ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0 (allowed range (0, inf)), got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ValueError(f"{name} must be >= {low:g} (allowed range [{low:g}, inf)), got {value}")
        lo = "-inf" if low is None else f"{low:g}"
        raise ValueError(f"{name} must be in [{lo}, {high:g}], got {value}")
    return value
