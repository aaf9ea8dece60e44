"""Theorem 1 of Dong & Mao (arXiv 2305.13651, after RandDisc): margins, delta, the bound, certification.

Theorem 1 (eq. (5)) certifies the majority vote of ``t`` draws of the defended classifier
``f(Q(x'))`` when ``delta = margin^2 / 2 - D_KL(Q_{X^|X=x} || Q_{X^|X=x'}) >= 0``. The KL comes from
the estimators of :mod:`vqdbook.kl` (eqs. (6)-(9)); this module is the arithmetic around it and
the vote frequencies whose margin enters eq. (5).

Decisions
---------
* **Theorem 1.** ``margin`` is the margin of the *randomised* classifier's output distribution:
  class frequencies of ``f(Q(x))`` over ``t_margin`` independent quantizer draws on the clean
  image (:func:`vote_frequencies`), not a softmax mean. ``delta = margin^2 / 2 - KL`` (eq. (5));
  ``bound = 1 - m exp(-2 t delta^2)`` when ``delta >= 0``, else 0, clipped at 0 (a negative lower
  bound on a probability is vacuous). An image is **certified at confidence 1 - alpha** (default
  ``alpha = 0.05``, ``t = 1000`` votes) when its quantized clean image is classified correctly
  (the theorem's assumption: the vote frequencies' argmax is ``y``), ``delta >= 0`` and
  ``bound >= 1 - alpha``; equivalently ``delta >= sqrt(ln(m / alpha) / (2 t))``. ``KL`` is the
  sum of both terms of eq. (7)/(8) by default (``kl_terms="both"``), or the first term only
  (``"first"``, what Figure 6 plots). The margin is itself an estimate from ``t_margin`` draws.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .kl import one_image
from .quantizers import QuantizerSpec
from .validation import check_int, check_real

__all__ = ["margin", "theorem1_delta", "theorem1_bound", "certified_radius_delta", "is_certified",
           "vote_frequencies"]

_int = check_int


def _real(value, name, low=None, high=None):
    return check_real(value, name, low=low, high=high)



def margin(probs, y):
    """Theorem 1's ``margin(x^, y, f) = p_y - max_{j != y} p_j`` of class probabilities ``probs``.

    ``probs`` is ``(m,)`` with an int ``y`` (returns a float) or ``(N, m)`` with ``y (N,)``
    (returns a float64 array). Use the class frequencies of the randomised classifier
    ``f(Q(x))`` (:func:`vote_frequencies`), as the theorem's margin is that of its output
    distribution. Range ``[-1, 1]``; positive iff ``y`` is the unique most probable class.
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64)
    single = p.ndim == 1
    if single:
        if isinstance(y, bool) or not isinstance(y, (numbers.Integral, np.integer)):
            raise TypeError(f"y must be an int class label for 1-D probs, got {type(y).__name__}")
        p = p[None]
        yy = np.array([int(y)])
    else:
        if p.ndim != 2:
            raise ValueError(f"probs must be (m,) or (N, m), got shape {p.shape}")
        yy = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
        if yy.shape != (p.shape[0],) or not np.issubdtype(yy.dtype, np.integer):
            raise ValueError(f"y must be an integer array of shape ({p.shape[0]},), got {yy.shape} {yy.dtype}")
    m = p.shape[1]
    if m < 2:
        raise ValueError(f"probs must have m >= 2 classes, got {m}")
    if (yy < 0).any() or (yy >= m).any():
        raise ValueError(f"y must be in [0, {m - 1}], got {yy.tolist()}")
    rows = np.arange(p.shape[0])
    py = p[rows, yy]
    other = p.copy()
    other[rows, yy] = -np.inf
    out = py - other.max(1)
    return float(out[0]) if single else out


def theorem1_delta(margin_value, kl):
    """Eq. (5): ``delta = margin^2 / 2 - D_KL(Q_{X^|X=x} || Q_{X^|X=x'})`` (Theorem 1).

    Elementwise on floats or arrays.
    """
    mg = np.asarray(margin_value, dtype=np.float64)
    out = 0.5 * mg ** 2 - np.asarray(kl, dtype=np.float64)
    return float(out) if out.ndim == 0 else out


def theorem1_bound(delta, m: int, t: int):
    """Theorem 1: the majority of ``t`` votes is correct w.p. ``>= 1 - m exp(-2 t delta^2)``.

    Returns that bound when ``delta >= 0`` and 0 otherwise (the theorem says nothing for
    ``delta < 0``), clipped at 0 (a negative lower bound on a probability is vacuous).
    ``m`` is the number of classes, ``t`` the number of votes. Elementwise on arrays.
    """
    m = _int(m, "m", 1)
    t = _int(t, "t", 1)
    dl = np.asarray(delta, dtype=np.float64)
    b = np.where(dl >= 0, 1.0 - m * np.exp(-2.0 * t * dl ** 2), 0.0)
    b = np.clip(b, 0.0, 1.0)
    return float(b) if b.ndim == 0 else b


def certified_radius_delta(m: int, t: int, alpha: float = 0.05) -> float:
    """Smallest ``delta`` with Theorem 1's bound ``>= 1 - alpha``: ``sqrt(ln(m / alpha) / (2 t))``."""
    m = _int(m, "m", 1)
    t = _int(t, "t", 1)
    alpha = _real(alpha, "alpha", 0.0, 1.0)
    if alpha <= 0:
        raise ValueError("alpha must be in (0, 1]")
    return math.sqrt(max(math.log(m / alpha), 0.0) / (2 * t))


def is_certified(probs, y, kl, m: int | None = None, t: int = 1000, alpha: float = 0.05):
    """Theorem 1 at confidence ``1 - alpha``: correct clean vote, ``delta >= 0``, bound ``>= 1 - alpha``.

    ``probs`` are the vote frequencies of ``f(Q(x))`` on the clean image (``(m,)`` or ``(N, m)``),
    ``kl`` the estimated ``D_KL(Q_{X^|X=x} || Q_{X^|X=x'})`` (eq. (6)-(8)); returns a bool (or
    bool array). ``m`` defaults to the number of columns of ``probs``.
    """
    mg = margin(probs, y)
    m = np.asarray(probs).shape[-1] if m is None else m
    delta = theorem1_delta(mg, kl)
    bound = theorem1_bound(delta, m, t)
    ok = (np.asarray(mg) > 0) & (np.asarray(delta) >= 0) & (np.asarray(bound) >= 1 - alpha)
    return bool(ok) if np.ndim(ok) == 0 else ok


@torch.no_grad()
def vote_frequencies(net: torch.nn.Module, x: torch.Tensor, quantizer: QuantizerSpec, t: int = 200,
                     generator: torch.Generator | None = None, batch_size: int = 250,
                     num_classes: int | None = None) -> torch.Tensor:
    """Class frequencies of ``f(Q(x))`` over ``t`` independent quantizer draws (Theorem 1's margin).

    Returns a float64 tensor ``(m,)`` summing to 1: the output distribution of the randomised
    classifier on one clean image, whose :func:`margin` enters eq. (5).
    """
    x1 = one_image(x)
    if not isinstance(quantizer, QuantizerSpec):
        raise TypeError(f"quantizer must be a QuantizerSpec, got {type(quantizer).__name__}")
    t = _int(t, "t", 1)
    counts = None
    for a in range(0, t, batch_size):
        b = min(a + batch_size, t)
        xq = quantizer(x1.expand(b - a, *x1.shape[1:]), generator)
        logits = net(xq)
        m = num_classes or logits.shape[1]
        c = torch.bincount(logits.argmax(1), minlength=m).double()
        counts = c if counts is None else counts + c
    return counts / t
