"""Slow, obviously-correct reference quantizers: one image at a time, NumPy + scikit-learn.

Written straight from Section 3 of Dong & Mao (arXiv 2305.13651), with explicit loops over
patches / windows and no vectorisation tricks, to check :mod:`vqdbook.quantizers` against:

* RandDisc -- eq. (1) on single pixels (s = 1);
* pRD      -- eq. (1) on non-overlapping s x s patches of the zero-padded image;
* swRD     -- eqs. (2)-(4) on all stride-1 s x s windows, softmax over the windows covering
  each pixel (max-shifted per pixel), with the clean patch p in eq. (2); the sums over the
  windows covering each pixel are accumulated window by window.

Conventions shared with the fast implementation: images ``(C, H, W)`` in [0, 1]; patch vectors
in ``F.unfold`` order (channel, row, column); ``sigma`` is the clustering noise, ``tau`` the
assignment noise; padding at the bottom/right; the output is clipped to [0, 1]. Pass ``centers``
to skip the clustering (then ``sigma`` is unused).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits


def cluster(noisy_patches: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn k-means (greedy k-means++, n_init=1, tol=1e-4) of one image's noisy patches."""
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, tol=1e-4, random_state=seed)
    return km.fit(noisy_patches).cluster_centers_


def nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Eq. (1): index of the centre nearest (squared Euclidean) to each point, by brute force."""
    labels = np.empty(len(points), dtype=np.int64)
    for i, p in enumerate(points):
        labels[i] = int(np.argmin(np.sum((centers - p) ** 2, axis=1)))
    return labels


def _codebook_and_labels(P, k, sigma, tau, rng, centers):
    if centers is None:
        noisy = P + sigma * rng.standard_normal(P.shape)           # clustering noise
        centers = cluster(noisy, k, int(rng.integers(2 ** 31 - 1)))
    centers = np.asarray(centers, dtype=np.float64)
    Y = P + tau * rng.standard_normal(P.shape)                      # assignment noise w_i
    return centers, nearest(Y, centers)


def ref_prd(img: np.ndarray, s: int, k: int, sigma: float, tau: float, rng: np.random.Generator,
            centers: np.ndarray | None = None):
    """pRD, eq. (1): returns ``(x_hat (C, H, W), centers (k, C*s*s))``."""
    img = np.asarray(img, dtype=np.float64)
    C, H, W = img.shape
    Hp, Wp = math.ceil(H / s) * s, math.ceil(W / s) * s
    xp = np.zeros((C, Hp, Wp))
    xp[:, :H, :W] = img                                             # zero padding
    pos = [(i, j) for i in range(0, Hp, s) for j in range(0, Wp, s)]
    P = np.array([xp[:, i:i + s, j:j + s].reshape(-1) for i, j in pos])
    centers, labels = _codebook_and_labels(P, k, sigma, tau, rng, centers)
    out = np.zeros_like(xp)
    for (i, j), lab in zip(pos, labels):
        out[:, i:i + s, j:j + s] = centers[lab].reshape(C, s, s)    # p_hat_i replaces p_i
    return np.clip(out[:, :H, :W], 0.0, 1.0), centers


def ref_rand_disc(img, k, sigma, tau, rng, centers=None):
    """RandDisc: eq. (1) on pixels (pRD with s = 1)."""
    return ref_prd(img, 1, k, sigma, tau, rng, centers)


def ref_swrd(img: np.ndarray, s: int, k: int, sigma: float, tau: float, beta: float,
             rng: np.random.Generator, centers: np.ndarray | None = None):
    """swRD, eqs. (2)-(4): returns ``(x_hat (C, H, W), centers (k, C*s*s))``."""
    img = np.asarray(img, dtype=np.float64)
    C, H, W = img.shape
    Hs, Ws = H - s + 1, W - s + 1
    pos = [(a, b) for a in range(Hs) for b in range(Ws)]            # window top-left corners
    P = np.array([img[:, a:a + s, b:b + s].reshape(-1) for a, b in pos])
    centers, labels = _codebook_and_labels(P, k, sigma, tau, rng, centers)
    Phat = centers[labels]
    score = -beta * np.sum((P - Phat) ** 2, axis=1)                 # eq. (2), clean p
    # per pixel i, m[i] = max of s_p over the windows p covering i (for a stable softmax)
    m = np.full((H, W), -np.inf)
    for (a, b), sp in zip(pos, score):
        m[a:a + s, b:b + s] = np.maximum(m[a:a + s, b:b + s], sp)
    num = np.zeros((C, H, W))
    den = np.zeros((H, W))
    for (a, b), sp, ph in zip(pos, score, Phat):
        e = np.exp(sp - m[a:a + s, b:b + s])                        # eq. (3) numerators
        num[:, a:a + s, b:b + s] += e * ph.reshape(C, s, s)         # eq. (4) numerator
        den[a:a + s, b:b + s] += e                                  # eq. (3) denominator
    return np.clip(num / den, 0.0, 1.0), centers


def ref_batch(fn, x: np.ndarray, *args, seed: int = 0, centers=None):
    """Apply a reference quantizer to every image of ``x (B, C, H, W)``; returns
    ``(x_hat (B, C, H, W), centers (B, k, d))``."""
    rng = np.random.default_rng(seed)
    outs, cents = [], []
    # one thread for scikit-learn: its OpenMP threads crawl when the machine is busy
    with threadpool_limits(limits=1):
        for b in range(len(x)):
            o, c = fn(x[b], *args, rng, None if centers is None else centers[b])
            outs.append(o)
            cents.append(c)
    return np.stack(outs), np.stack(cents)
