"""Certified accuracy via the KL bound (Section 3.4 and 4.2 of Dong & Mao, arXiv 2305.13651).

Theorem 1 (eq. (5)) certifies the majority vote of ``t`` draws of the defended classifier
``f(Q(x'))`` when ``delta = margin^2 / 2 - D_KL(Q_{X^|X=x} || Q_{X^|X=x'}) >= 0``. The KL between
the quantizer's output distributions is bounded by eq. (6) -- for pRD and swRD by Lemma 1,
eqs. (7) and (8) -- as the KL between the *centre-set* distributions ``Q_{C|X}`` (the first term)
plus a sum over patches (pRD, eq. (7)) or pixels (swRD, eq. (8)) of the KL between the
assignment distributions for a fixed centre set (the second term). This module estimates both
terms numerically as Section 4.2 describes, and turns them into certified accuracies.

Pipeline
--------
1. :func:`sample_centers` / :func:`sample_center_vectors` -- draw ``C ~ Q_{C|X=x}`` many times
   (the paper: 10,000 per image). The patches of *one* image are replicated ``n_samples`` times,
   each copy gets independent clustering noise ``sigma * N(0, I)``, and all copies are clustered
   by the package's batched k-means in one call per chunk -- exactly the code path of the
   quantizers (:func:`vqdbook.quantizers._fit_centers`), so the samples have the quantizers'
   distribution (greedy k-means++ seeding, Lloyd with scikit-learn's stopping rule).
2. :func:`sort_centers` -- the paper's map from a *set* of centres to a vector (Section 4.2):
   sort the ``k`` centres by ascending l2 norm and concatenate, ``(B, k, d) -> (B, k*d)``.
3. :func:`kl_gmm` -- eq. (9): fit a Gaussian mixture to each sample set and average
   ``log p_hat(u) - log q_hat(u)`` over ``n_mc`` draws ``u`` from the fitted ``p_hat``.
4. :func:`second_term` -- the second terms of eqs. (7)-(8), by Monte Carlo over the assignment
   noise with common random numbers (see its docstring).
5. :func:`margin`, :func:`theorem1_delta`, :func:`theorem1_bound`, :func:`is_certified` --
   Theorem 1's arithmetic; :func:`run_fig6` (Figure 6) and :func:`run_certified` -- experiments
   stored as records (kinds ``"kl"`` and ``"certified"``, :func:`vqdbook.results.load_or_run`).

Decisions (documented once, referred to everywhere)
---------------------------------------------------
* **Settings** (:data:`FIG6_SETTINGS`). Section 4.2: MNIST ``s = 2, k = 4``, CIFAR-10
  ``s = 2, k = 10``, ``sigma = tau = 4/255`` (the [0, 1] scale; the paper writes "4" for both and
  Section 4.1 quotes MNIST on [0, 1], CIFAR-10 on 0-255: we read 4/255 for both). ``k_gmm = 2``
  (MNIST) and ``8`` (CIFAR-10) for all three defenses. RandDisc is pixel-level, so it uses
  ``s = 1`` with the *same* ``k`` (the paper compares the three defenses "at these settings";
  RandDisc has no ``s``). swRD's ``beta`` (only used by the second term) is the paper's
  Section 4.1 value (MNIST 1, CIFAR-10 0.1 * 255^2 on the [0, 1] scale).
* **Common random numbers.** The clean image ``x`` and the adversarial ``x'`` of one image are
  sampled with the *same* seed (same clustering noise, same k-means++ draws), and the second
  term uses the same assignment noise for both. Each sample set still has exactly its own
  distribution; only the estimators' variance drops, and ``x' = x`` gives exactly 0.
* **Standardisation before the GMM fit.** The centre coordinates vary by ~1e-3 (centres are
  means of many noisy patches), the same order as a typical ``reg_covar``. KL is invariant under
  one invertible affine map applied to both distributions, so both sample sets are shifted by
  the mean of ``samples_p`` and divided, per coordinate, by the standard deviation of
  ``samples_p`` before fitting (``x``'s statistics only, so the fit of ``p_hat`` is shared by all
  ``x'`` of an image); ``reg_covar = 1e-6`` is then negligible (1e-6 of the within-set variance,
  not of the spread between ``x`` and ``x'``). Full covariances: ``d = k*C*s^2`` is 16 for
  MNIST pRD/swRD and 120 for CIFAR-10 pRD/swRD; a full covariance needs at least ``d + 1``
  points per component, so ``kl_gmm`` requires ``n >= k_gmm * (d + 1)`` samples per set
  (CIFAR-10 with ``k_gmm = 8``: 968; the paper's 10,000 gives ~1,250 points per component for
  7,260 covariance parameters -- with fewer samples the fit over-fits and the estimate is
  biased upwards).
* **The estimate is not a bound.** Eq. (9) with fitted mixtures is an *estimate* of the first
  term (biased by the GMM's misfit and the sorting map); we report its Monte-Carlo standard
  error, not a confidence bound. Certified accuracies computed from it inherit this. The MC
  error is the smallest part of the uncertainty: the sorted centre vectors are multimodal
  (k-means local optima), so the fitted mixture -- and the KL -- depend on ``k_gmm`` (as the
  paper notes), on the sample (two independent sets of 2,000 MNIST samples gave estimates 20%
  apart) and on the fit's k-means initialisation, which is not affine-invariant (changing the
  standardisation moved some MNIST estimates by up to ~40%). For CIFAR-10 (120 dimensions,
  ``k_gmm = 8``) 2,000 samples over-fit badly (one pRD example: 414 with 2,000 samples vs 83
  with 10,000): use the paper's 10,000 for numbers, small runs only for trends.
* **Second term.** pRD / RandDisc (eq. (7)): for a fixed centre set ``u`` every patch's output
  is a categorical over the ``k`` centres; its probabilities are estimated from ``n_draws``
  draws of the assignment noise ``w`` (eq. (1)), identical for ``x`` and ``x'``. swRD (eq. (8)):
  given ``u``, each output pixel (eq. (4)) takes finitely many values, but the blend weights of
  eq. (2) use the *clean* patch, so the support points under ``x'`` move away from those under
  ``x`` and the exact KL is infinite for every pixel whose covering windows changed. We
  discretise the output to the 256 levels of an 8-bit image (bin ``round(255 x^)``, the
  resolution of the images the classifier sees) and compare histograms. In both cases the KL
  between empirical categoricals uses add-1/2 (Krichevsky-Trofimov) pseudo-counts on the union
  of the outcomes observed for ``x`` or ``x'`` (identical histograms give exactly 0). A unit whose
  outcome *flips* deterministically contributes about ``log(2 n_draws + 1)`` (the cap of the
  estimator; the true value is larger), so ``n_changed`` (units whose histograms differ) is
  reported beside the value. Averaged over ``n_u`` centre sets ``u ~ Q_{C|X=x}`` taken from the clean samples.
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

import hashlib
import math
import numbers
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .quantizers import METHOD_LABELS as _LABEL
from .validation import check_int

__all__ = [
    "sample_centers", "sample_center_vectors", "sort_centers", "kl_gmm", "kl_gaussians",
    "min_gmm_samples", "second_term", "margin", "theorem1_delta", "theorem1_bound",
    "certified_radius_delta", "is_certified", "vote_frequencies", "run_kl", "kl_record",
    "run_fig6", "fig6_frame", "run_certified", "certified_frame", "bench_center_sampling",
    "FIG6_SETTINGS", "FIG6_EPS", "METHODS",
]

METHODS = ("randdisc", "prd", "swrd")
_ALIASES = {"randdisc": "randdisc", "rd": "randdisc", "prd": "prd", "swrd": "swrd"}

#: Section 4.2's settings on the [0, 1] scale (RandDisc: s = 1, same k; see module docstring).
FIG6_SETTINGS: dict[str, dict] = {
    "mnist": {"s": 2, "k": 4, "sigma": 4 / 255, "tau": 4 / 255, "beta": 1.0, "k_gmm": 2},
    "cifar10": {"s": 2, "k": 10, "sigma": 4 / 255, "tau": 4 / 255, "beta": 0.1 * 255 ** 2, "k_gmm": 8},
}
#: The attack radii of Tables 1 and 2 (on [0, 1]), the default eps grid of :func:`run_fig6`.
FIG6_EPS: dict[str, tuple] = {
    "mnist": (0.02, 0.04, 0.08, 0.16, 0.24, 0.32),
    "cifar10": (2 / 255, 4 / 255, 8 / 255, 16 / 255),
}

#: Centre-set samples per k-means call (one chunk); bounds memory, keeps the working set in cache.
DEFAULT_CHUNK = 256
#: Monte-Carlo samples per ``score_samples`` call in :func:`kl_gmm` (bounds memory).
_MC_BATCH = 25_000


# --------------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------------

_int = check_int


def _real(value, name, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _method(method):
    if not isinstance(method, str) or method.lower() not in _ALIASES:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return _ALIASES[method.lower()]


def _method_s(method, s):
    m = _method(method)
    if m == "randdisc":
        if s not in (None, 1):
            raise ValueError(f"s must be 1 (or None) for RandDisc, which quantizes pixels; got {s!r}")
        return m, 1
    if s is None:
        raise ValueError(f"s (patch / window size) is required for method {m!r}")
    return m, _int(s, "s", 1)


def _image(x, name="x"):
    """One image ``(C, H, W)`` or ``(1, C, H, W)`` -> ``(1, C, H, W)`` float32 in [0, 1]."""
    from .quantizers import _check_x

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (C, H, W) or (1, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"{name} must be ONE image, (C, H, W) or (1, C, H, W); got shape {tuple(x.shape)}")
    _check_x(x)
    return x.detach().float()


def _derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of values (stable across runs and platforms)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# --------------------------------------------------------------------------------------------
# sampling C ~ Q_{C|X=x}
# --------------------------------------------------------------------------------------------

def _patch_matrix(x1: torch.Tensor, method: str, s: int) -> torch.Tensor:
    """The patches of one image ``(1, C, H, W)`` as the quantizers cut them: ``(1, n, C*s*s)``.

    RandDisc: pixels (eq. (1) with ``s = 1``); pRD: non-overlapping ``s x s`` patches, zero-padded
    at the bottom/right (Section 3.1); swRD: all stride-1 windows (Section 3.2). Unfold order.
    """
    from .quantizers import _pad_to_multiple, _windows

    if method == "swrd":
        return _windows(x1, s).contiguous()
    xp = _pad_to_multiple(x1, s)
    _, C, Hp, Wp = xp.shape
    nh, nw = Hp // s, Wp // s
    return xp.view(1, C, nh, s, nw, s).permute(0, 2, 4, 1, 3, 5).reshape(1, nh * nw, C * s * s).contiguous()


_SET_THREADS_LOCK = threading.Lock()


def sample_centers(x: torch.Tensor, method: str, s: int | None, k: int, sigma: float,
                   n_samples: int = 10_000, generator: torch.Generator | None = None, *,
                   chunk: int = DEFAULT_CHUNK, threads: int | None = None,
                   progress: bool = False) -> torch.Tensor:
    """Draw ``n_samples`` independent centre sets ``C ~ Q_{C|X=x}`` of one image (Section 4.2).

    ``Q_{C|X}`` is the codebook step of the quantizers (Section 3.1/3.2, before eq. (1)): add
    clustering noise ``sigma * N(0, I)`` to every patch and cluster the noisy patches into ``k``
    centres. The patches of ``x`` are replicated ``n_samples`` times and the copies -- each with
    its own noise and k-means++ draws -- are clustered by the batched k-means, ``chunk`` copies
    per call, chunks spread over ``threads`` worker threads (torch's intra-op parallelism is set
    to 1 meanwhile: whole chunks in parallel are ~5x faster than intra-op threads on these small
    tensors). Each chunk has its own generator seeded from ``generator`` (or torch's global RNG),
    so the result is reproducible and independent of ``threads`` (not of ``chunk``).

    Parameters
    ----------
    x : tensor (C, H, W) or (1, C, H, W) in [0, 1] -- one image
    method : "randdisc" | "prd" | "swrd"
    s : patch / window size (1 or None for RandDisc)
    k : number of centres
    sigma : clustering noise std on the [0, 1] scale
    n_samples : number of centre sets (the paper: 10,000)

    Returns raw (unsorted) centres, float32 tensor ``(n_samples, k, C*s*s)``.
    """
    from .quantizers import _check_against_x, _fit_centers

    x1 = _image(x)
    method, s = _method_s(method, s)
    k = _int(k, "k", 1)
    sigma = _real(sigma, "sigma", 0.0)
    n_samples = _int(n_samples, "n_samples", 1)
    chunk = _int(chunk, "chunk", 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    _check_against_x(x1, s, k, "swrd" if method == "swrd" else "prd", None)
    threads = torch.get_num_threads() if threads is None else _int(threads, "threads", 1)

    P = _patch_matrix(x1, method, s)                                       # (1, n, d)
    n, d = P.shape[1:]
    starts = list(range(0, n_samples, chunk))
    seeds = torch.randint(0, 2 ** 62, (len(starts),), generator=generator).tolist()
    out = torch.empty((n_samples, k, d), dtype=torch.float32)

    def work(i):
        a = starts[i]
        b = min(a + chunk, n_samples)
        g = torch.Generator().manual_seed(seeds[i])
        with torch.no_grad():
            out[a:b] = _fit_centers(P.expand(b - a, n, d), k, sigma, g)
        return b - a

    from tqdm.auto import tqdm

    bar = tqdm(total=n_samples, desc=f"C ~ Q(C|X) {method}", disable=not progress, leave=False)
    workers = min(threads, len(starts))
    try:
        if workers <= 1:
            for i in range(len(starts)):
                bar.update(work(i))
        else:
            with _SET_THREADS_LOCK:
                prev = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    with ThreadPoolExecutor(workers, thread_name_prefix="vqdbook-kl") as ex:
                        for done in ex.map(work, range(len(starts))):
                            bar.update(done)
                finally:
                    torch.set_num_threads(prev)
    finally:
        bar.close()
    return out


def sort_centers(centers: torch.Tensor) -> torch.Tensor:
    """Section 4.2's map from a centre *set* to a vector: sort by l2 norm, concatenate.

    ``centers (B, k, d) -> (B, k*d)``: the ``k`` centres of each set in ascending order of their
    l2 norm (the vector whose distribution eq. (9) compares). Exact norm ties are broken by the
    coordinates (lexicographically), so the vector depends only on the set, never on the order
    k-means returned the centres in. Accepts a torch tensor or a NumPy array (returns the same).
    """
    is_np = isinstance(centers, np.ndarray)
    if is_np:
        c = torch.from_numpy(centers)
    elif isinstance(centers, torch.Tensor):
        c = centers
    else:
        raise TypeError(f"centers must be a torch.Tensor or numpy array (B, k, d), got {type(centers).__name__}")
    if c.dim() != 3:
        raise ValueError(f"centers must be 3-D (B, k, d), got shape {tuple(c.shape)}")
    if not c.is_floating_point():
        raise TypeError(f"centers must be floating point, got {c.dtype}")
    B, k, d = c.shape
    order = torch.arange(k).expand(B, k)
    # least significant key first, stable sorts: coordinates d-1 .. 0, then the norm
    for j in range(d - 1, -1, -1):
        key = torch.gather(c[:, :, j], 1, order)
        order = torch.gather(order, 1, torch.sort(key, dim=1, stable=True).indices)
    norms = torch.linalg.vector_norm(c, dim=2)
    key = torch.gather(norms, 1, order)
    order = torch.gather(order, 1, torch.sort(key, dim=1, stable=True).indices)
    out = torch.gather(c, 1, order[:, :, None].expand(B, k, d)).reshape(B, k * d)
    return out.numpy() if is_np else out


def sample_center_vectors(x: torch.Tensor, method: str, s: int | None, k: int, sigma: float,
                          n_samples: int = 10_000, generator: torch.Generator | None = None, *,
                          chunk: int = DEFAULT_CHUNK, threads: int | None = None,
                          progress: bool = False) -> torch.Tensor:
    """``n_samples`` draws of the sorted centre vector of ``Q_{C|X=x}`` (Section 4.2, eq. (9)).

    :func:`sample_centers` followed by :func:`sort_centers`: returns ``(n_samples, k*C*s*s)``
    float32. These are the samples to which eq. (9)'s Gaussian mixtures are fitted.
    """
    return sort_centers(sample_centers(x, method, s, k, sigma, n_samples, generator, chunk=chunk,
                                       threads=threads, progress=progress))


# --------------------------------------------------------------------------------------------
# eq. (9): KL between fitted Gaussian mixtures, by Monte Carlo
# --------------------------------------------------------------------------------------------

def min_gmm_samples(k_gmm: int, dim: int) -> int:
    """Fewest samples :func:`kl_gmm` accepts per set: ``k_gmm * (dim + 1)`` (eq. (9)'s fit).

    A full covariance in ``R^dim`` is singular with fewer than ``dim + 1`` points, so each of the
    ``k_gmm`` components needs at least that many.
    """
    return int(k_gmm) * (int(dim) + 1)


def _as_samples(a, name) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    elif not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch.Tensor (n, dim), got {type(a).__name__}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, dim), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point values, got dtype {a.dtype}")
    if a.shape[1] < 1:
        raise ValueError(f"{name} must have dim >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return np.asarray(a, dtype=np.float64)


def _fit_gmm(A: np.ndarray, k_gmm: int, seed: int, reg_covar: float, max_iter: int):
    """scikit-learn's ``GaussianMixture`` (full covariances) fitted to standardised samples."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(k_gmm, covariance_type="full", reg_covar=reg_covar, max_iter=max_iter,
                         random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*converge.*")
        return gm.fit(A)


def kl_gmm(samples_p, samples_q, k_gmm: int, n_mc: int = 100_000, seed: int = 0, *,
           reg_covar: float = 1e-6, max_iter: int = 200, return_se: bool = False,
           return_info: bool = False, _fit_cache: dict | None = None):
    """``D_KL(Q_hat_{C|X=x} || Q_hat_{C|X=x'})`` of eq. (9), between Gaussian mixtures fitted to samples.

    Fits ``GaussianMixture(k_gmm, covariance_type="full", reg_covar, random_state=seed)`` to
    ``samples_p`` (draws from ``Q_{C|X=x}``) and to ``samples_q`` (draws from ``Q_{C|X=x'}``),
    after one common affine standardisation (shift by the mean of ``samples_p``, divide each
    coordinate by its std in ``samples_p``; KL is invariant under it -- see the module
    docstring), then averages ``log p_hat(u) - log q_hat(u)`` over ``n_mc`` draws ``u ~ p_hat``
    (the paper: 100,000).

    Parameters
    ----------
    samples_p, samples_q : arrays (n_p, dim), (n_q, dim) -- same ``dim``, ``n >= k_gmm (dim + 1)``
    k_gmm : int >= 1 -- mixture components (the paper: 2 for MNIST, 8 for CIFAR-10)
    n_mc : int >= 2 -- Monte-Carlo draws
    seed : int -- ``random_state`` of both fits and of the Monte-Carlo draws
    reg_covar, max_iter : passed to ``GaussianMixture`` (``reg_covar`` is on the standardised
        scale, i.e. relative to the variance of ``samples_p``)

    Returns the estimate (float); with ``return_se`` also its Monte-Carlo standard error
    ``std(log p - log q) / sqrt(n_mc)``; with ``return_info`` a dict (``kl``, ``se``,
    ``converged_p``, ``converged_q``, ``n_iter_p``, ``n_iter_q``) instead. The estimate can be
    slightly negative (Monte-Carlo error, of order ``se``); it is exactly 0 when the two sample
    sets are identical.

    Cost: each EM iteration is ~``4 k_gmm n dim^2`` flops; CIFAR-10 (``dim = 120``, ``k_gmm = 8``,
    ``n = 10,000``) takes ~1 s per iteration and ~40-80 iterations on 2 loaded CPU cores, so
    :func:`run_kl` fits ``p_hat`` once per image and reuses it for every eps.
    """
    k_gmm = _int(k_gmm, "k_gmm", 1)
    n_mc = _int(n_mc, "n_mc", 2)
    seed = _int(seed, "seed", 0)
    reg_covar = _real(reg_covar, "reg_covar", 0.0)
    max_iter = _int(max_iter, "max_iter", 1)
    P = _as_samples(samples_p, "samples_p")
    Q = _as_samples(samples_q, "samples_q")
    if P.shape[1] != Q.shape[1]:
        raise ValueError(f"samples_p and samples_q must have the same dimension; got shapes "
                         f"{P.shape} and {Q.shape}")
    dim = P.shape[1]
    need = min_gmm_samples(k_gmm, dim)
    for name, A in (("samples_p", P), ("samples_q", Q)):
        if A.shape[0] < need:
            raise ValueError(f"{name} has {A.shape[0]} samples, too few for a {k_gmm}-component "
                             f"full-covariance mixture in {dim} dimensions: need n_samples >= "
                             f"k_gmm * (dim + 1) = {need}")
    same = P.shape == Q.shape and np.array_equal(P, Q)
    key = (k_gmm, seed, reg_covar, max_iter)
    if _fit_cache is not None and _fit_cache.get("key") == key:
        mu, scale, gp = _fit_cache["fit"]
    else:
        mu = P.mean(0)
        scale = P.std(0)
        ref = max(float(np.abs(P).max()), 1e-300)
        scale[scale <= 1e-12 * ref] = 1.0        # constant coordinates: leave them unscaled
        gp = _fit_gmm((P - mu) / scale, k_gmm, seed, reg_covar, max_iter)
        if _fit_cache is not None:
            _fit_cache.update(key=key, fit=(mu, scale, gp))
    gq = gp if same else _fit_gmm((Q - mu) / scale, k_gmm, seed, reg_covar, max_iter)
    U, _ = gp.sample(n_mc)
    diff = np.empty(n_mc)
    for a in range(0, n_mc, _MC_BATCH):
        u = U[a:a + _MC_BATCH]
        diff[a:a + _MC_BATCH] = gp.score_samples(u) - gq.score_samples(u)
    kl = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(n_mc))
    if return_info:
        return {"kl": kl, "se": se, "converged_p": bool(gp.converged_), "converged_q": bool(gq.converged_),
                "n_iter_p": int(gp.n_iter_), "n_iter_q": int(gq.n_iter_)}
    return (kl, se) if return_se else kl


def kl_gaussians(mean0, cov0, mean1, cov1) -> float:
    """Closed-form ``D_KL(N(mean0, cov0) || N(mean1, cov1))`` (the reference for eq. (9)'s estimator).

    ``0.5 [tr(S1^-1 S0) + (m1 - m0)^T S1^-1 (m1 - m0) - d + ln det S1 - ln det S0]``.
    """
    m0, m1 = np.atleast_1d(np.asarray(mean0, float)), np.atleast_1d(np.asarray(mean1, float))
    S0, S1 = np.atleast_2d(np.asarray(cov0, float)), np.atleast_2d(np.asarray(cov1, float))
    d = m0.shape[0]
    if m1.shape != (d,) or S0.shape != (d, d) or S1.shape != (d, d):
        raise ValueError(f"shapes must be mean (d,), cov (d, d); got {m0.shape}, {S0.shape}, {m1.shape}, {S1.shape}")
    S1inv = np.linalg.inv(S1)
    dm = m1 - m0
    _, ld0 = np.linalg.slogdet(S0)
    _, ld1 = np.linalg.slogdet(S1)
    return float(0.5 * (np.trace(S1inv @ S0) + dm @ S1inv @ dm - d + ld1 - ld0))


# --------------------------------------------------------------------------------------------
# the second term of eqs. (7)-(8)
# --------------------------------------------------------------------------------------------

def _kl_counts(cp: torch.Tensor, cq: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-row KL between empirical categoricals ``cp``, ``cq`` (counts, ``(units, K)``).

    Add-``alpha`` pseudo-counts on the union of observed outcomes of the row (module docstring).
    """
    cp = cp.double()
    cq = cq.double()
    support = (cp + cq) > 0
    a = alpha * support.double()
    p = (cp + a) / (cp + a).sum(1, keepdim=True)
    q = (cq + a) / (cq + a).sum(1, keepdim=True)
    terms = torch.where(support, p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(1e-300))),
                        torch.zeros_like(p))
    return terms.sum(1)


def second_term(x: torch.Tensor, x_adv: torch.Tensor, method: str, s: int | None, tau: float,
                centers: torch.Tensor, *, beta: float | None = None, n_draws: int = 500,
                generator: torch.Generator | None = None, alpha: float = 0.5) -> dict:
    """The second term of Lemma 1, eq. (7) (pRD, RandDisc) or eq. (8) (swRD), by Monte Carlo.

    ``sum_i E_{u ~ Q_{C|X=x}} D_KL(Q_{P^_i | C=u, X=x} || Q_{P^_i | C=u, X=x'})`` over patches
    ``i`` (eq. (7); RandDisc is the ``s = 1`` case: pixels) or the same over output pixels
    ``X^_i`` (eq. (8)), the expectation over ``u`` replaced by the average over the given centre
    sets ``centers (U, k, d)`` (or sorted vectors ``(U, k*d)``), which should be draws from
    ``Q_{C|X=x}`` (e.g. the first rows of :func:`sample_center_vectors`).

    For each ``u``, ``n_draws`` quantizations of ``x`` and of ``x'`` with codebook ``u`` and the
    *same* assignment noise ``w ~ N(0, tau^2 I)`` (eq. (1)) give, per patch, a histogram over the
    ``k`` centres (pRD) or, per pixel, a histogram of the swRD output (eqs. (2)-(4), with
    ``beta``) on the 256 levels of an 8-bit image; the KL between histograms uses add-``alpha``
    pseudo-counts on the union of observed outcomes (see the module docstring for the cap this
    implies). Returns a dict: ``value`` (the term), ``per_u`` (its value for each ``u``),
    ``se_u`` (std over ``u`` / sqrt(U), or 0 for one ``u``), ``n_units`` (patches or pixels),
    ``n_changed`` (mean number of units whose histograms differ), ``max_unit`` (largest per-unit
    KL), ``cap`` (``log(2 n_draws + 1)``, the per-unit value of a deterministic flip).
    """
    from .quantizers import assign, swrd

    method, s = _method_s(method, s)
    x1, x2 = _image(x, "x"), _image(x_adv, "x_adv")
    if x1.shape != x2.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    tau = _real(tau, "tau", 0.0)
    n_draws = _int(n_draws, "n_draws", 1)
    alpha = _real(alpha, "alpha", 0.0)
    if alpha <= 0:
        raise ValueError(f"alpha (pseudo-count) must be > 0, got {alpha}")
    if not isinstance(centers, torch.Tensor):
        raise TypeError(f"centers must be a torch.Tensor (U, k, d) or (U, k*d), got {type(centers).__name__}")
    C = x1.shape[1]
    d = C * s * s
    if centers.dim() == 2:
        if centers.shape[1] % d:
            raise ValueError(f"centers of shape {tuple(centers.shape)}: the vector length must be a "
                             f"multiple of d = C*s*s = {d}")
        centers = centers.reshape(centers.shape[0], -1, d)
    if centers.dim() != 3 or centers.shape[2] != d or centers.shape[0] < 1:
        raise ValueError(f"centers must have shape (U, k, d = C*s*s = {d}), got {tuple(centers.shape)}")
    centers = centers.float()
    U, k, _ = centers.shape
    if method == "swrd":
        if beta is None:
            raise ValueError("beta is required for swRD (eq. (2))")
        beta = _real(beta, "beta", 0.0)
    seeds = torch.randint(0, 2 ** 62, (U,), generator=generator).tolist()
    per_u, changed, max_unit = [], [], 0.0
    for j in range(U):
        u = centers[j:j + 1]
        counts = []
        for img in (x1, x2):
            g = torch.Generator().manual_seed(seeds[j])               # common random numbers
            with torch.no_grad():
                if method == "swrd":
                    M = img.expand(n_draws, *img.shape[1:])
                    out = swrd(M, s, k, 0.0, tau, beta, g, centers=u.expand(n_draws, k, d))
                    levels = torch.round(out * 255).long().clamp_(0, 255).reshape(n_draws, -1)
                    units = levels.shape[1]
                    idx = levels + torch.arange(units)[None, :] * 256
                    counts.append(torch.bincount(idx.reshape(-1), minlength=units * 256).view(units, 256))
                else:
                    P = _patch_matrix(img, method, s)
                    n = P.shape[1]
                    labels = assign(P.expand(n_draws, n, d), u.expand(n_draws, k, d), tau, g)
                    idx = labels + torch.arange(n)[None, :] * k
                    counts.append(torch.bincount(idx.reshape(-1), minlength=n * k).view(n, k))
        kl_units = _kl_counts(counts[0], counts[1], alpha)
        per_u.append(float(kl_units.sum()))
        changed.append(int((counts[0] != counts[1]).any(1).sum()))
        max_unit = max(max_unit, float(kl_units.max()))
    arr = np.array(per_u)
    return {"value": float(arr.mean()), "per_u": per_u,
            "se_u": float(arr.std(ddof=1) / math.sqrt(U)) if U > 1 else 0.0,
            "n_units": int(kl_units.numel()), "n_changed": float(np.mean(changed)),
            "max_unit": max_unit, "cap": math.log(2 * n_draws + 1)}


_second_term = second_term   # run_kl has a parameter of the same name


# --------------------------------------------------------------------------------------------
# Theorem 1
# --------------------------------------------------------------------------------------------

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


def _quantize(xb, method, s, k, sigma, tau, beta, generator):
    from .quantizers import prd, rand_disc, swrd

    if method == "randdisc":
        return rand_disc(xb, k, sigma, tau, generator)
    if method == "prd":
        return prd(xb, s, k, sigma, tau, generator)
    return swrd(xb, s, k, sigma, tau, beta, generator)


@torch.no_grad()
def vote_frequencies(net: torch.nn.Module, x: torch.Tensor, method: str, s: int | None, k: int,
                     sigma: float, tau: float, beta: float | None = None, t: int = 200,
                     generator: torch.Generator | None = None, batch_size: int = 250,
                     num_classes: int | None = None) -> torch.Tensor:
    """Class frequencies of ``f(Q(x))`` over ``t`` independent quantizer draws (Theorem 1's margin).

    Returns a float64 tensor ``(m,)`` summing to 1: the output distribution of the randomised
    classifier on one clean image, whose :func:`margin` enters eq. (5).
    """
    x1 = _image(x)
    method, s = _method_s(method, s)
    t = _int(t, "t", 1)
    counts = None
    for a in range(0, t, batch_size):
        b = min(a + batch_size, t)
        xq = _quantize(x1.expand(b - a, *x1.shape[1:]), method, s, k, sigma, tau, beta, generator)
        logits = net(xq)
        m = num_classes or logits.shape[1]
        c = torch.bincount(logits.argmax(1), minlength=m).double()
        counts = c if counts is None else counts + c
    return counts / t


# --------------------------------------------------------------------------------------------
# experiments (records)
# --------------------------------------------------------------------------------------------

def _settings(dataset, method, s, k, sigma, tau, beta, k_gmm):
    from .data import spec

    name = spec(dataset).name
    if name not in FIG6_SETTINGS:
        raise ValueError(f"dataset must be one of {sorted(FIG6_SETTINGS)} (Section 4.2), got {dataset!r}")
    st = FIG6_SETTINGS[name]
    method = _method(method)
    s = 1 if method == "randdisc" else (st["s"] if s is None else s)
    method, s = _method_s(method, s)
    return name, method, {
        "s": s, "k": st["k"] if k is None else _int(k, "k", 1),
        "sigma": st["sigma"] if sigma is None else _real(sigma, "sigma", 0.0),
        "tau": st["tau"] if tau is None else _real(tau, "tau", 0.0),
        "beta": (st["beta"] if beta is None else _real(beta, "beta", 0.0)) if method == "swrd" else None,
        "k_gmm": st["k_gmm"] if k_gmm is None else _int(k_gmm, "k_gmm", 1),
    }


def _kl_params(dataset, method, eps, n_images, n_samples, k_gmm, n_mc, seed, s, k, sigma, tau, beta,
               second, n_u, n_draws, arch, variant):
    name, method, st = _settings(dataset, method, s, k, sigma, tau, beta, k_gmm)
    eps = round(_real(eps, "eps", 0.0, 1.0), 8)
    n_images = _int(n_images, "n_images", 1)
    n_samples = _int(n_samples, "n_samples", 2)
    d = (3 if name == "cifar10" else 1) * st["s"] ** 2 * st["k"]
    need = min_gmm_samples(st["k_gmm"], d)
    if n_samples < need:
        raise ValueError(f"n_samples={n_samples} is too few for a {st['k_gmm']}-component full-covariance "
                         f"mixture of {d}-dimensional centre vectors: need n_samples >= k_gmm * (dim + 1) = {need}")
    return {"dataset": name, "method": method, "eps": eps, "n_images": n_images, "n_samples": n_samples,
            "n_mc": _int(n_mc, "n_mc", 2), "seed": _int(seed, "seed", 0), **st,
            "second_term": bool(second), "n_u": _int(n_u, "n_u", 1), "n_draws": _int(n_draws, "n_draws", 1),
            "arch": arch, "variant": variant}


def _images(dataset, eps, n_images, seed, arch, variant, progress):
    from .data import load_dataset
    from .experiments import adversarial_examples

    x, y = load_dataset(dataset, "test", n_images, seed=seed)
    if eps == 0:
        return x, x.clone(), y
    x_adv, _, _ = adversarial_examples(dataset, arch, variant, eps, n_images, seed, progress=progress)
    return x, x_adv, y


def run_kl(dataset, method, eps, n_images, n_samples, k_gmm, n_mc, seed, s, k, sigma, tau, beta,
           second_term, n_u, n_draws, arch, variant, *, _cache=None, progress=False) -> dict:
    """One point of Figure 6: eq. (9)'s KL (and eq. (7)/(8)'s second term) for ``n_images`` images.

    For each of the first ``n_images`` stratified test images ``x`` and its PGD example ``x'``
    (:func:`vqdbook.experiments.adversarial_examples`, the paper's protocol; ``x' = x`` at
    ``eps = 0``): ``n_samples`` sorted centre vectors of each (common random numbers), the GMM
    estimate :func:`kl_gmm` with ``k_gmm`` components and ``n_mc`` draws, and (when
    ``second_term``) :func:`second_term` over ``n_u`` centre sets with ``n_draws`` assignment
    draws. Returns per-image lists and summaries (mean, median, quartiles).
    """
    x, x_adv, y = _images(dataset, eps, n_images, seed, arch, variant, progress)
    cache = {} if _cache is None else _cache
    kls, ses, conv, seconds = [], [], [], {"sampling": 0.0, "gmm": 0.0, "second": 0.0}
    sec_vals, sec_changed, sec_units, sec_max = [], [], None, []
    from tqdm.auto import tqdm

    for i in tqdm(range(n_images), desc=f"KL {dataset} {method} eps={eps:.4g}", disable=not progress, leave=False):
        img_seed = _derive_seed("kl", dataset, method, s, k, sigma, seed, i)
        t0 = time.time()
        key = (dataset, method, s, k, sigma, n_samples, seed, i)
        if key not in cache:
            cache[key] = sample_center_vectors(x[i], method, s, k, sigma, n_samples,
                                               torch.Generator().manual_seed(img_seed))
        vp = cache[key]
        vq = vp if eps == 0 else sample_center_vectors(x_adv[i], method, s, k, sigma, n_samples,
                                                       torch.Generator().manual_seed(img_seed))
        t1 = time.time()
        info = kl_gmm(vp, vq, k_gmm, n_mc, seed, return_info=True,
                      _fit_cache=cache.setdefault(("gmm",) + key, {}))
        t2 = time.time()
        kls.append(info["kl"])
        ses.append(info["se"])
        conv.append(info["converged_p"] and info["converged_q"])
        if second_term:
            st = _second_term(x[i], x_adv[i], method, s, tau, vp[:n_u], beta=beta, n_draws=n_draws,
                                          generator=torch.Generator().manual_seed(img_seed + 1))
            sec_vals.append(st["value"])
            sec_changed.append(st["n_changed"])
            sec_max.append(st["max_unit"])
            sec_units = st["n_units"]
        seconds["sampling"] += t1 - t0
        seconds["gmm"] += t2 - t1
        seconds["second"] += time.time() - t2
    arr = np.array(kls)
    out = {"kl": kls, "kl_se": ses, "gmm_converged": conv, "labels": y.tolist(),
           "kl_mean": float(arr.mean()), "kl_median": float(np.median(arr)),
           "kl_q25": float(np.quantile(arr, 0.25)), "kl_q75": float(np.quantile(arr, 0.75)),
           "seconds": {k_: round(v, 3) for k_, v in seconds.items()}}
    if second_term:
        out.update({"second": sec_vals, "second_n_changed": sec_changed, "second_max_unit": sec_max,
                    "second_n_units": sec_units, "second_cap": math.log(2 * n_draws + 1),
                    "second_mean": float(np.mean(sec_vals)),
                    "bound": [a + b for a, b in zip(kls, sec_vals)]})
    return out


def kl_record(dataset: str, method: str, eps: float, *, n_images: int = 5, n_samples: int = 2000,
              k_gmm: int | None = None, n_mc: int = 100_000, seed: int = 0, s: int | None = None,
              k: int | None = None, sigma: float | None = None, tau: float | None = None,
              beta: float | None = None, second_term: bool = True, n_u: int = 4, n_draws: int = 500,
              arch: str | None = None, variant: str | None = None, root=None, progress: bool = False,
              _cache=None, load_only: bool = False) -> dict | None:
    """Load or compute the ``"kl"`` record of one (dataset, method, eps) point of Figure 6 (eq. (9)).

    Unset parameters take Section 4.2's values (:data:`FIG6_SETTINGS`); see :func:`run_kl`.
    """
    from .results import load_or_run

    params = _kl_params(dataset, method, eps, n_images, n_samples, k_gmm, n_mc, seed, s, k, sigma, tau, beta,
                        second_term, n_u, n_draws, arch, variant)
    if load_only:
        from .results import load_record

        return load_record("kl", params, root=root)
    return load_or_run("kl", params, lambda **p: run_kl(**p, _cache=_cache, progress=progress), root=root)


def run_fig6(dataset: str, eps_list=None, n_images: int = 5, n_samples: int = 2000, k_gmm: int | None = None,
             methods=METHODS, seed: int = 0, *, n_mc: int = 100_000, second_term: bool = True,
             progress: bool = True, root=None, load_only: bool = False, **overrides) -> list[dict]:
    """Figure 6: ``D_KL(Q_hat_{C|X=x} || Q_hat_{C|X=x'})`` (eq. (9)) per method, eps and image.

    One ``"kl"`` record per (method, eps) (resumable; see :func:`kl_record`); the clean samples
    of each image are drawn once per method and reused across ``eps``. The CPU-sized defaults
    (5 images, 2,000 samples) are far below the paper's 10,000 samples; pass ``n_samples=10_000``
    (and ``n_mc=100_000``, the default) for the paper's numbers. ``overrides`` may set ``s``,
    ``k``, ``sigma``, ``tau``, ``beta``, ``n_u``, ``n_draws``, ``arch``, ``variant``.
    Returns the records (``record["result"]`` holds the per-image values). With ``load_only``
    nothing is computed: only the stored records are returned (missing points are left out) --
    how the book shows runs too long to execute while it builds.
    """
    from tqdm.auto import tqdm

    from .data import spec

    name = spec(dataset).name
    eps_list = FIG6_EPS.get(name, ()) if eps_list is None else eps_list
    bad = set(overrides) - {"s", "k", "sigma", "tau", "beta", "n_u", "n_draws", "arch", "variant"}
    if bad:
        raise TypeError(f"unexpected keyword argument(s) {sorted(bad)}")
    records = []
    bar = tqdm(total=len(methods) * len(eps_list), desc=f"Figure 6 {name}", disable=not progress)
    for m in methods:
        cache: dict = {}          # clean samples of this method, reused across eps
        for e in eps_list:
            rec = kl_record(name, m, e, n_images=n_images, n_samples=n_samples, k_gmm=k_gmm, n_mc=n_mc,
                            seed=seed, second_term=second_term, root=root, progress=progress,
                            _cache=cache, load_only=load_only, **overrides)
            if rec is not None:
                records.append(rec)
            bar.update(1)
    bar.close()
    return records


def fig6_frame(records: list[dict]):
    """Figure 6's numbers (eq. (9)) as a DataFrame: one row per (method, eps), KL mean / median / quartiles.

    ``second_mean`` is the mean second term of eq. (7)/(8) (absent when it was not computed).
    """
    import pandas as pd

    rows = []
    for r in records:
        p, res = r["params"], r["result"]
        rows.append({"dataset": p["dataset"], "method": _LABEL[p["method"]], "s": p["s"], "k": p["k"],
                     "eps": p["eps"], "n_images": p["n_images"], "n_samples": p["n_samples"],
                     "k_gmm": p["k_gmm"], "kl_mean": res["kl_mean"], "kl_median": res["kl_median"],
                     "kl_q25": res["kl_q25"], "kl_q75": res["kl_q75"],
                     "second_mean": res.get("second_mean")})
    return pd.DataFrame(rows).sort_values(["dataset", "method", "eps"]).reset_index(drop=True)


def fig6_claims(frame) -> dict:
    """The paper's two claims about Figure 6, checked on a :func:`fig6_frame` (median KL over images):
    at the largest ε pRD and swRD lie below RandDisc; at the smallest ε RandDisc is lowest.

    Returns ``{"eps_max", "median_at_max", "large_eps_holds", "eps_min", "lowest_at_min",
    "small_eps_holds"}``; a claim is ``None`` when a quantizer has no record at that ε.
    """
    out = {}
    for which, pick in (("max", max), ("min", min)):
        eps = pick(frame["eps"])
        med = frame[frame["eps"] == eps].set_index("method")["kl_median"]
        complete = set(_LABEL.values()) <= set(med.index)
        out[f"eps_{which}"] = float(eps)
        if which == "max":
            out["median_at_max"] = {m: float(v) for m, v in med.items()}
            out["large_eps_holds"] = bool(med["pRD"] < med["RandDisc"] and med["swRD"] < med["RandDisc"]) \
                if complete else None
        else:
            out["lowest_at_min"] = med.idxmin()
            out["small_eps_holds"] = bool(med.idxmin() == "RandDisc") if complete else None
    return out


def run_certified(dataset: str, eps_list=None, n_images: int = 5, n_samples: int = 2000,
                  k_gmm: int | None = None, methods=METHODS, seed: int = 0, *, t: int = 1000,
                  t_margin: int = 200, alpha: float = 0.05, kl_terms: str = "both",
                  n_mc: int = 100_000, progress: bool = True, root=None, load_only: bool = False,
                  **overrides) -> list[dict]:
    """Certified accuracy by Theorem 1 (eq. (5)) as a function of eps, per method.

    For each method and eps: the KL per image from the ``"kl"`` record (first term, eq. (9),
    plus -- with ``kl_terms="both"`` -- the second term of eq. (7)/(8)); the margin of the clean
    image's vote frequencies over ``t_margin`` quantizer draws (:func:`vote_frequencies`); and
    :func:`is_certified` with ``t`` votes at confidence ``1 - alpha``. One ``"certified"``
    record per (method, eps); ``result["certified_accuracy"]`` is the fraction certified.
    Needs the pretrained classifier (:func:`vqdbook.models.load_pretrained`). With ``load_only``
    only stored records are returned (missing points are left out).
    """
    from tqdm.auto import tqdm

    from .data import spec
    from .results import load_or_run

    name = spec(dataset).name
    if kl_terms not in ("both", "first"):
        raise ValueError(f"kl_terms must be 'both' or 'first', got {kl_terms!r}")
    t = _int(t, "t", 1)
    t_margin = _int(t_margin, "t_margin", 1)
    alpha = _real(alpha, "alpha", 0.0, 1.0)
    bad = set(overrides) - {"s", "k", "sigma", "tau", "beta", "n_u", "n_draws", "arch", "variant"}
    if bad:
        raise TypeError(f"unexpected keyword argument(s) {sorted(bad)}")
    eps_list = FIG6_EPS.get(name, ()) if eps_list is None else eps_list
    margins_cache: dict = {}
    records = []
    for method in methods:
        cache: dict = {}
        for eps in tqdm(eps_list, desc=f"certified {name} {method}", disable=not progress):
            kp = _kl_params(name, method, eps, n_images, n_samples, k_gmm, n_mc, seed,
                            overrides.get("s"), overrides.get("k"), overrides.get("sigma"), overrides.get("tau"),
                            overrides.get("beta"), kl_terms == "both", overrides.get("n_u", 4),
                            overrides.get("n_draws", 500), overrides.get("arch"), overrides.get("variant"))
            params = {**kp, "t": t, "t_margin": t_margin, "alpha": alpha, "kl_terms": kl_terms}

            def fn(**p):
                klp = {k_: p[k_] for k_ in kp}
                rec = load_or_run("kl", klp, lambda **q: run_kl(**q, _cache=cache, progress=progress), root=root)
                res = rec["result"]
                kl = np.array(res["bound"] if p["kl_terms"] == "both" else res["kl"])
                mkey = (p["method"], p["s"], p["k"], p["sigma"], p["tau"], p["beta"])
                if mkey not in margins_cache:
                    margins_cache[mkey] = _clean_votes(p)
                probs, y = margins_cache[mkey]
                mg = margin(probs, y)
                delta = theorem1_delta(mg, kl)
                m = probs.shape[1]
                bound = theorem1_bound(delta, m, p["t"])
                cert = is_certified(probs, y, kl, m, p["t"], p["alpha"])
                return {"margin": mg.tolist(), "kl": kl.tolist(), "delta": np.atleast_1d(delta).tolist(),
                        "bound": np.atleast_1d(bound).tolist(), "certified": np.atleast_1d(cert).tolist(),
                        "clean_vote_correct": (probs.argmax(1) == y).tolist(),
                        "certified_accuracy": float(np.mean(cert)),
                        "delta_needed": certified_radius_delta(m, p["t"], p["alpha"])}

            if load_only:
                from .results import load_record

                rec = load_record("certified", params, root=root)
                if rec is not None:
                    records.append(rec)
                continue
            records.append(load_or_run("certified", params, fn, root=root))
    return records


def _clean_votes(p) -> tuple[np.ndarray, np.ndarray]:
    """Vote frequencies ``(n_images, m)`` of ``f(Q(x))`` on the clean images, and the labels."""
    from .data import load_dataset
    from .experiments import _model
    from .models import DEFAULT_ARCH

    x, y = load_dataset(p["dataset"], "test", p["n_images"], seed=p["seed"])
    net = _model(p["dataset"], p["arch"] or DEFAULT_ARCH[p["dataset"]], p["variant"], "cpu")
    probs = []
    for i in range(len(y)):
        g = torch.Generator().manual_seed(_derive_seed("votes", p["dataset"], p["method"], p["seed"], i))
        probs.append(vote_frequencies(net, x[i], p["method"], p["s"], p["k"], p["sigma"], p["tau"], p["beta"],
                                      p["t_margin"], g).numpy())
    return np.stack(probs), y.numpy()


def certified_frame(records: list[dict]):
    """Certified-accuracy curves (Theorem 1) as a DataFrame: one row per (method, eps)."""
    import pandas as pd

    rows = []
    for r in records:
        p, res = r["params"], r["result"]
        rows.append({"dataset": p["dataset"], "method": _LABEL[p["method"]], "eps": p["eps"],
                     "n_images": p["n_images"], "t": p["t"], "alpha": p["alpha"], "kl_terms": p["kl_terms"],
                     "certified_accuracy": res["certified_accuracy"],
                     "clean_vote_accuracy": float(np.mean(res["clean_vote_correct"])),
                     "median_kl": float(np.median(res["kl"])), "median_margin": float(np.median(res["margin"]))})
    return pd.DataFrame(rows).sort_values(["dataset", "method", "eps"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------

def bench_center_sampling(n_samples: int = 10_000, cases=None, repeats: int = 1, *,
                          chunk: int = DEFAULT_CHUNK, threads: int | None = None) -> dict:
    """Seconds to draw ``n_samples`` centre sets ``C ~ Q_{C|X=x}`` (eq. (9)'s samples) of one real test image.

    ``cases``: iterable of ``(dataset, method, s, k)``; default MNIST pRD ``s=2, k=4`` and
    CIFAR-10 pRD ``s=2, k=10`` (the paper's Figure 6 settings; targets <= 2 s and <= 15 s on 2
    CPU cores), plus RandDisc and swRD at the same ``k``. Returns ``{"dataset/method s= k=":
    best-of-repeats seconds, ..., "threads": ..., "n_samples": ...}``.
    """
    from .data import load_dataset

    if cases is None:
        cases = [("mnist", "prd", 2, 4), ("mnist", "randdisc", 1, 4), ("mnist", "swrd", 2, 4),
                 ("cifar10", "prd", 2, 10), ("cifar10", "randdisc", 1, 10), ("cifar10", "swrd", 2, 10)]
    out = {"n_samples": n_samples, "threads": threads or torch.get_num_threads(), "chunk": chunk}
    for dataset, method, s, k in cases:
        x, _ = load_dataset(dataset, "test", 1)
        best = math.inf
        for r in range(repeats):
            t0 = time.perf_counter()
            sample_center_vectors(x[0], method, s, k, 4 / 255, n_samples, torch.Generator().manual_seed(r),
                                  chunk=chunk, threads=threads)
            best = min(best, time.perf_counter() - t0)
        out[f"{dataset}/{method} s={s} k={k}"] = round(best, 3)
    return out
