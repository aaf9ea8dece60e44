"""Theorem 1 of Dong & Mao (arXiv 2305.13651, after RandDisc): margins, delta, the bound, certified
radii; and randomized smoothing (Cohen, Rosenfeld & Kolter 2019), the rigorous certificate beside it.

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
* **Margin with confidence.** :func:`margin_lower_bound` replaces the margin by a lower
  confidence bound from the vote counts: Clopper-Pearson from below on ``p_y`` and from above on
  the runner-up, Bonferroni across the two (as Cohen et al. bound ``p_A``). :func:`kl_budget` is
  the largest KL that eq. (5) then still certifies, ``margin_lower^2 / 2 - delta_needed``.
* **Certified radius.** The certificate at radius ``r`` must hold for every ``x'`` in the
  l-infinity ``r``-ball, so the KL that enters eq. (5) is its supremum over the ball. We can only
  *estimate* it: the largest KL estimate over a few points of the ball (:func:`ball_points`:
  sign corners, PGD on f and on f(Q(.)), random signs; :func:`sup_over_points`), on a
  log-spaced grid of radii (:func:`radius_grid`). :func:`certified_radius` is the last grid
  radius before the first failure (found by a scan or, since the supremum grows with the radius,
  by bisection). This is an estimate of a supremum of an estimate, not a proof.
* **Randomized smoothing.** :func:`smoothing_certify` is CERTIFY of Cohen et al. (2019) (``n0``
  selection draws, ``n`` estimation draws, Clopper-Pearson at ``alpha``, radius
  ``sigma Phi^-1(p_A_lower)`` in l2, abstain when ``p_A_lower <= 1/2``), a certificate with a
  stated confidence; :func:`linf_radius` converts its l2 radius to l-infinity (``r2 / sqrt(d)``).
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
           "vote_frequencies", "clopper_pearson", "margin_lower_bound", "kl_budget", "radius_grid",
           "certified_radius", "POINT_KINDS", "ball_points", "sup_over_points", "ABSTAIN", "smoothing_counts",
           "smoothing_certify", "linf_radius"]

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


# --------------------------------------------------------------------------------------------
# confidence bounds on the vote frequencies (Clopper-Pearson), the margin's lower bound
# --------------------------------------------------------------------------------------------

def clopper_pearson(k, n, alpha: float, side: str = "lower"):
    """One-sided Clopper-Pearson bound on a binomial proportion from ``k`` successes in ``n`` trials.

    ``side="lower"``: ``Beta(alpha; k, n - k + 1)`` quantile (0 when ``k = 0``), a lower bound on
    ``p`` holding with probability ``>= 1 - alpha``; ``side="upper"``: ``Beta(1 - alpha; k + 1, n - k)``
    (1 when ``k = n``). The bound Cohen et al. (2019) use for ``p_A`` in CERTIFY; the margin of
    eq. (5) is bounded with it in :func:`margin_lower_bound`. Elementwise on arrays.

    Examples::

        >>> from vqdbook.certify import clopper_pearson
        >>> round(clopper_pearson(100, 100, 0.001), 4)        # 0.001 ** (1 / 100)
        0.9333
        >>> clopper_pearson(0, 10, 0.05), clopper_pearson(10, 10, 0.05, "upper")
        (0.0, 1.0)
    """
    from scipy.stats import beta

    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    alpha = _real(alpha, "alpha", 0.0, 1.0)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if (n < 1).any() or (k < 0).any() or (k > n).any() or (k != np.round(k)).any():
        raise ValueError("need integer counts 0 <= k <= n with n >= 1")
    with np.errstate(invalid="ignore"):
        if side == "lower":
            out = np.where(k > 0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
        else:
            out = np.where(k < n, beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1)), 1.0)
    return float(out) if out.ndim == 0 else out


def margin_lower_bound(counts, y: int, alpha: float = 0.001, *, return_parts: bool = False):
    """A lower confidence bound on Theorem 1's margin ``p_y - max_{j != y} p_j`` (eq. (5)) from votes.

    ``counts`` are the class counts of ``n`` independent draws of ``f(Q(x))`` on the clean image
    (``(m,)``, ints). Bonferroni across the two bounds, each at ``alpha / 2``:

    * ``p_y`` from below by Clopper-Pearson (:func:`clopper_pearson`), as Cohen et al. bound ``p_A``;
    * the runner-up from above by ``min(1 - p_y_lower, max_{j != y} U_j)``, where ``U_j`` is the
      Clopper-Pearson upper bound on ``p_j`` at ``alpha / (2 (m - 1))`` (a union bound over the
      ``m - 1`` other classes, so the maximum is covered whichever class it is).

    With probability ``>= 1 - alpha`` over the votes the true margin is at least the returned
    value. ``return_parts=True`` returns ``(margin_lower, p_y_lower, runner_up_upper)``.

    Examples::

        >>> from vqdbook.certify import margin_lower_bound
        >>> round(margin_lower_bound([0, 1000, 0], 1, 0.001), 4)     # all votes for y
        0.9849
        >>> margin_lower_bound([500, 500, 0], 1) < 0
        True
    """
    c = np.asarray(counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else counts)
    if c.ndim != 1 or c.shape[0] < 2:
        raise ValueError(f"counts must be (m,) with m >= 2 classes, got shape {c.shape}")
    if (c < 0).any() or (c != np.round(c)).any():
        raise ValueError("counts must be non-negative integers")
    m = c.shape[0]
    y = _int(y, "y", 0, m - 1)
    n = int(c.sum())
    if n < 1:
        raise ValueError("counts must hold at least one vote")
    alpha = _real(alpha, "alpha", 0.0, 1.0)
    p_low = clopper_pearson(int(c[y]), n, alpha / 2, "lower")
    others = np.delete(c, y)
    u = float(np.max(clopper_pearson(others, n, alpha / (2 * (m - 1)), "upper")))
    r_up = min(1.0 - p_low, u)
    out = p_low - r_up
    return (out, p_low, r_up) if return_parts else out


def kl_budget(margin_lower, m: int, t: int = 1000, alpha: float = 0.05) -> float:
    """The largest KL that Theorem 1 still certifies: ``margin^2 / 2 - delta_needed`` (eq. (5)).

    ``delta_needed`` is :func:`certified_radius_delta` (bound ``1 - m exp(-2 t delta^2) >= 1 - alpha``).
    With a margin's lower bound ``margin_lower`` (:func:`margin_lower_bound`), the vote is certified
    at ``x'`` when ``D_KL(Q_{X^|X=x} || Q_{X^|X=x'}) <= kl_budget``. ``-inf`` when ``margin_lower <= 0``
    (Theorem 1 needs the correct class to lead). Elementwise on arrays.

    Examples::

        >>> from vqdbook.certify import kl_budget
        >>> round(kl_budget(1.0, 10, 1000, 0.05), 4)      # 1/2 - sqrt(ln(200) / 2000)
        0.4485
    """
    mg = np.asarray(margin_lower, dtype=np.float64)
    need = certified_radius_delta(m, t, alpha)
    out = np.where(mg > 0, 0.5 * np.clip(mg, 0, None) ** 2 - need, -np.inf)
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# certified radius on a grid
# --------------------------------------------------------------------------------------------

def radius_grid(scale: float, low: int = -12, high: int = 3, per_octave: int = 1) -> np.ndarray:
    """Log-spaced radii ``scale * 2^(j / per_octave)`` for ``j = low * per_octave .. high * per_octave``.

    The certified-radius search of :func:`certified_radius` runs on such a grid; the quantizers'
    clustering noise ``sigma`` (4/255, :data:`vqdbook.paper.NOISE`) sets its scale. Radii are
    l-infinity on the [0, 1] scale, clipped to at most 1.

    Examples::

        >>> from vqdbook.certify import radius_grid
        >>> radius_grid(1.0, -2, 1).tolist()
        [0.25, 0.5, 1.0, 1.0]
    """
    scale = check_real(scale, "scale", positive=True)
    per_octave = _int(per_octave, "per_octave", 1)
    if not isinstance(low, int) or not isinstance(high, int) or high < low:
        raise ValueError(f"low and high must be ints with low <= high, got {low!r}, {high!r}")
    j = np.arange(low * per_octave, high * per_octave + 1) / per_octave
    return np.minimum(scale * 2.0 ** j, 1.0)


def certified_radius(radii, holds, search: str = "scan") -> float:
    """The certified radius on a grid: the largest ``radii[j]`` such that the certificate holds at
    ``radii[0..j]``; ``0.0`` when it fails at ``radii[0]``.

    ``radii`` ascending, positive. ``holds`` is a sequence of bools (one per radius) or a callable
    ``radius -> bool``. The certificate at ``r`` needs ``delta(r) = margin^2/2 - KL(r) >=
    delta_needed`` (eq. (5)) with ``KL(r)`` the supremum of the KL over the ``r``-ball, which grows
    with ``r``. ``search="scan"`` evaluates from the smallest radius up and stops at the first
    failure; ``search="bisect"`` (callables only) bisects the grid, evaluating about
    ``log2(len(radii))`` radii: it returns the same radius whenever ``holds`` is monotone (true
    up to some radius, false above), as it is for the supremum itself. Either way the result is
    monotone: if ``holds`` implies ``holds2`` radius by radius, the radius from ``holds2`` is at
    least as large (for ``"bisect"``, when both are monotone).

    Examples::

        >>> from vqdbook.certify import certified_radius
        >>> certified_radius([0.1, 0.2, 0.4], [True, True, False])
        0.2
        >>> certified_radius([0.1, 0.2, 0.4], lambda r: r < 0.05)
        0.0
        >>> certified_radius([0.1, 0.2, 0.4, 0.8], lambda r: r < 0.5, search="bisect")
        0.4
    """
    r = np.asarray(radii, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0 or (r <= 0).any() or (np.diff(r) < 0).any():
        raise ValueError("radii must be a non-empty ascending 1-D sequence of positive numbers")
    if search not in ("scan", "bisect"):
        raise ValueError(f"search must be 'scan' or 'bisect', got {search!r}")
    if not callable(holds):
        h = np.asarray(holds, dtype=bool)
        if h.shape != r.shape:
            raise ValueError(f"holds must have one entry per radius ({len(r)}), got shape {h.shape}")
        if search == "bisect":
            raise ValueError("search='bisect' needs a callable holds (a sequence is scanned)")
        holds_at = lambda j: bool(h[j])   # noqa: E731
    else:
        holds_at = lambda j: bool(holds(float(r[j])))   # noqa: E731
    if search == "bisect":
        lo, hi = -1, len(r)                    # holds at lo (or lo = -1), fails at hi (or hi = len)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if holds_at(mid):
                lo = mid
            else:
                hi = mid
        return float(r[lo]) if lo >= 0 else 0.0
    best = 0.0
    for j in range(len(r)):
        if not holds_at(j):
            break
        best = float(r[j])
    return best


# --------------------------------------------------------------------------------------------
# points of the eps-ball at which the KL is estimated, and the sup over them
# --------------------------------------------------------------------------------------------

#: The points of the eps-ball tried for the sup of the KL, in the order they are evaluated:
#: the sign corners x + eps and x - eps, PGD on f (the paper's x'), PGD on f(Q(.)) with BPDA and
#: EOT, and two random sign vectors x + eps * s, s in {-1, 1}^d (all clipped to [0, 1]).
POINT_KINDS = ("plus", "minus", "pgd_f", "pgd_fq", "rand0", "rand1")


def ball_points(x: torch.Tensor, eps: float, kinds=POINT_KINDS, *, y: torch.Tensor | None = None,
                net: torch.nn.Module | None = None, quantizer: QuantizerSpec | None = None,
                dataset: str | None = None, eot_samples: int = 2, seed: int = 0) -> dict:
    """Candidate points ``x'`` of the l-infinity ``eps``-ball around ``x`` (:data:`POINT_KINDS`).

    Returns ``{kind: zero-argument callable returning x' (B, C, H, W)}`` so that costly points
    (the attacks) are computed only if :func:`sup_over_points` gets to them. ``pgd_f`` runs the
    paper's PGD on ``net`` (:func:`vqdbook.attacks.paper_pgd` for ``dataset``), ``pgd_fq`` the same
    on ``Defended(net, Q, bpda=True)`` with ``eot_samples`` EOT draws (adaptive); both need ``y``,
    ``net`` and ``dataset`` (``pgd_fq`` also ``quantizer``). The sign corners and random signs
    need nothing but ``x``. Every point is clipped to [0, 1] and lies in the ball.

    Examples::

        >>> import torch
        >>> from vqdbook.certify import ball_points
        >>> pts = ball_points(torch.full((1, 1, 4, 4), 0.5), 0.1, ("plus", "rand0"))
        >>> round(float(pts["plus"]().max()), 6), round(float((pts["rand0"]() - 0.5).abs().max()), 6)
        (0.6, 0.1)
    """
    from .attacks import paper_pgd
    from .defense import Defended

    eps = _real(eps, "eps", 0.0, 1.0)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("x must be a tensor (B, C, H, W)")
    bad = set(kinds) - set(POINT_KINDS)
    if bad:
        raise ValueError(f"unknown point kinds {sorted(bad)}; allowed: {POINT_KINDS}")
    x = x.detach()

    def corner(sign):
        return lambda: (x + sign * eps).clamp(0, 1)

    def rand(i):
        def make():
            g = torch.Generator().manual_seed(seed * 1000 + i)
            s = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
            return (x + eps * s).clamp(0, 1)
        return make

    def pgd(defended):
        def make():
            if y is None or net is None or dataset is None or (defended and quantizer is None):
                raise ValueError("PGD points need y, net and dataset (and quantizer for pgd_fq)")
            g = torch.Generator().manual_seed(seed)
            if not defended:
                return paper_pgd(net, dataset, eps, generator=g, check=False)(x, y)
            torch.manual_seed(seed + 1)    # the quantizer's draws inside the attack
            model = Defended(net, quantizer.build(), bpda=True)
            return paper_pgd(model, dataset, eps, generator=g, eot_samples=eot_samples, check=False)(x, y)
        return make

    table = {"plus": corner(1.0), "minus": corner(-1.0), "pgd_f": pgd(False), "pgd_fq": pgd(True),
             "rand0": rand(0), "rand1": rand(1)}
    return {k: table[k] for k in kinds}


def sup_over_points(estimate, points: dict, budget: float | None = None) -> dict:
    """The largest estimate over points of the ball: an *estimate of the supremum*, not a bound.

    ``estimate(x') -> float`` (e.g. the KL of eq. (6) at ``x'``); ``points`` maps names to
    ``x'`` or to zero-argument callables returning ``x'`` (:func:`ball_points`). Evaluated in
    order; with ``budget`` the evaluation stops at the first value above it (the certificate has
    already failed). Returns ``{"values": {name: value}, "sup", "argmax", "complete"}``; ``sup`` is
    at least every evaluated value (the maximum of them). No finite set of points proves the
    supremum over the ball: the certificate built on it is an estimate.

    Examples::

        >>> from vqdbook.certify import sup_over_points
        >>> sup_over_points(lambda v: v * v, {"a": 1.0, "b": -3.0, "c": 2.0})["sup"]
        9.0
    """
    if not points:
        raise ValueError("points must name at least one point")
    values = {}
    for name, p in points.items():
        xp = p() if callable(p) else p
        values[name] = float(estimate(xp))
        if budget is not None and values[name] > budget:
            break
    argmax = max(values, key=values.get)
    return {"values": values, "sup": values[argmax], "argmax": argmax, "complete": len(values) == len(points)}


# --------------------------------------------------------------------------------------------
# randomized smoothing (Cohen, Rosenfeld & Kolter 2019): the rigorous anchor
# --------------------------------------------------------------------------------------------

#: The label :func:`smoothing_certify` returns when it abstains.
ABSTAIN = -1


@torch.no_grad()
def smoothing_counts(net: torch.nn.Module, x: torch.Tensor, sigma: float, n: int,
                     generator: torch.Generator | None = None, batch_size: int = 500,
                     num_classes: int | None = None) -> np.ndarray:
    """Class counts of ``net(x + sigma * N(0, I))`` over ``n`` draws (Cohen et al.'s SAMPLEUNDERNOISE).

    ``x`` is one input without a batch dimension (``(C, H, W)`` for an image; any shape the
    net takes per item); the noise is not clipped. Returns an int64 array ``(m,)``.
    """
    sigma = check_real(sigma, "sigma", positive=True)
    n = _int(n, "n", 1)
    x1 = x.detach()
    counts = None
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        noise = torch.randn((b - a, *x1.shape), generator=generator, dtype=x1.dtype)
        logits = net(x1.unsqueeze(0) + sigma * noise)
        m = num_classes or logits.shape[1]
        c = torch.bincount(logits.argmax(1), minlength=m)
        counts = c if counts is None else counts + c
    return counts.numpy().astype(np.int64)


def smoothing_certify(net: torch.nn.Module, x: torch.Tensor, sigma: float, n0: int = 100, n: int = 10_000,
                      alpha: float = 0.001, generator: torch.Generator | None = None, batch_size: int = 500,
                      num_classes: int | None = None) -> dict:
    """CERTIFY of Cohen, Rosenfeld & Kolter (2019): the smoothed classifier's label and l2 radius.

    ``n0`` draws of ``x + sigma * N(0, I)`` select the top class ``c_A``; ``n`` fresh draws give its
    count, ``p_A_lower`` is the one-sided Clopper-Pearson lower bound at ``alpha``
    (:func:`clopper_pearson`); abstain (label :data:`ABSTAIN`, radius 0) if ``p_A_lower <= 1/2``,
    else the radius is ``sigma * Phi^-1(p_A_lower)`` (l2). With probability ``>= 1 - alpha`` a
    returned label is that of the smoothed classifier ``g`` and ``g`` is constant on the l2 ball of
    that radius (their Theorem 1; an l-infinity ball of radius ``r2 / sqrt(d)`` lies inside it:
    :func:`linf_radius`). Returns ``{"label", "radius_l2", "p_a_lower", "count", "n"}``.

    Examples::

        >>> import torch
        >>> from vqdbook.certify import smoothing_certify
        >>> class Sign(torch.nn.Module):        # 1-D: class 1 iff x > 0
        ...     def forward(self, z):
        ...         return torch.cat([-z.reshape(len(z), 1), z.reshape(len(z), 1)], 1)
        >>> out = smoothing_certify(Sign(), torch.tensor([1.0]), 1.0, 50, 5000, 0.001,
        ...                         torch.Generator().manual_seed(0))
        >>> out["label"], 0.85 < out["radius_l2"] <= 1.0       # the true radius is 1
        (1, True)
    """
    from scipy.stats import norm

    sigma = check_real(sigma, "sigma", positive=True)
    n0 = _int(n0, "n0", 1)
    n = _int(n, "n", 1)
    alpha = _real(alpha, "alpha", 0.0, 1.0)
    c0 = smoothing_counts(net, x, sigma, n0, generator, batch_size, num_classes)
    c_a = int(np.argmax(c0))
    c = smoothing_counts(net, x, sigma, n, generator, batch_size, num_classes or len(c0))
    p_low = clopper_pearson(int(c[c_a]), n, alpha, "lower")
    if p_low <= 0.5:
        return {"label": ABSTAIN, "radius_l2": 0.0, "p_a_lower": p_low, "count": int(c[c_a]), "n": n}
    return {"label": c_a, "radius_l2": float(sigma * norm.ppf(p_low)), "p_a_lower": p_low,
            "count": int(c[c_a]), "n": n}


def linf_radius(radius_l2, dim: int):
    """An l2 radius as an l-infinity radius: ``r2 / sqrt(dim)`` (the l-infinity ball of that radius
    lies inside the l2 ball; ``dim`` is the input dimension, 784 for MNIST, 3072 for CIFAR-10).

    Examples::

        >>> from vqdbook.certify import linf_radius
        >>> round(linf_radius(2.8, 784), 12)
        0.1
    """
    dim = _int(dim, "dim", 1)
    r = np.asarray(radius_l2, dtype=np.float64) / math.sqrt(dim)
    return float(r) if r.ndim == 0 else r
