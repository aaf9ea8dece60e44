"""Small statistics used across experiments: Wilson intervals, PSNR."""

from __future__ import annotations

import math

__all__ = ["wilson_interval", "psnr"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (by default) Wilson score interval for a binomial proportion, as fractions in [0, 1].

    Preferred over the normal approximation because accuracies near 0% or 100% are common here.
    """
    if n <= 0:
        raise ValueError(f"n must be >= 1; got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}]; got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n successes the exact end is 0 or 1 (rounding would leave ~1e-19 on the wrong side)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def psnr(x, y, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB per image, for tensors (B,C,H,W) on [0, data_range]."""
    import torch

    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12))
