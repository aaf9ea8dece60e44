"""The KL bound's estimators (Section 3.4 and 4.2 of Dong & Mao, arXiv 2305.13651).

Theorem 1 (eq. (5)) certifies the majority vote of ``t`` draws of the defended classifier
``f(Q(x'))`` when ``delta = margin^2 / 2 - D_KL(Q_{X^|X=x} || Q_{X^|X=x'}) >= 0``. The KL between
the quantizer's output distributions is bounded by eq. (6) -- for pRD and swRD by Lemma 1,
eqs. (7) and (8) -- as the KL between the *centre-set* distributions ``Q_{C|X}`` (the first term)
plus a sum over patches (pRD, eq. (7)) or pixels (swRD, eq. (8)) of the KL between the
assignment distributions for a fixed centre set (the second term). This module estimates both
terms numerically as Section 4.2 describes. Theorem 1's arithmetic (margins, delta, the bound)
is in :mod:`vqdbook.certify`; the Figure 6 and certified-accuracy records are made by
:mod:`vqdbook.experiments.fig6` and :mod:`vqdbook.experiments.certified`.

Pipeline
--------
1. :func:`sample_centers` / :func:`sample_center_vectors` -- draw ``C ~ Q_{C|X=x}`` many times
   (the paper: 10,000 per image). The patches of *one* image are replicated ``n_samples`` times,
   each copy gets independent clustering noise ``sigma * N(0, I)``, and all copies are clustered
   by the package's batched k-means in one call per chunk -- exactly the code path of the
   quantizers (:func:`vqdbook.quantizers.fit_centers` in chunks of
   :func:`vqdbook.parallel.map_chunks`), so the samples have the quantizers' distribution
   (greedy k-means++ seeding, Lloyd with scikit-learn's stopping rule).
2. :func:`sort_centers` -- the paper's map from a *set* of centres to a vector (Section 4.2):
   sort the ``k`` centres by ascending l2 norm and concatenate, ``(B, k, d) -> (B, k*d)``.
3. :func:`kl_gmm` -- eq. (9): fit a Gaussian mixture to each sample set and average
   ``log p_hat(u) - log q_hat(u)`` over ``n_mc`` draws ``u`` from the fitted ``p_hat``.
4. :func:`second_term` -- the second terms of eqs. (7)-(8), by Monte Carlo over the assignment
   noise with common random numbers (see its docstring).
Every sampler takes the quantizer as one :class:`vqdbook.quantizers.QuantizerSpec` (method, s, k,
sigma, tau, beta), the same description the quantizer modules are built from.

Decisions (documented once, referred to everywhere)
---------------------------------------------------
* **Settings** (:data:`vqdbook.paper.FIG6`). Section 4.2: MNIST ``s = 2, k = 4``, CIFAR-10
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
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import torch

from .parallel import map_chunks
from .quantizers import QuantizerSpec, check_geometry, check_images, fit_centers
from .validation import check_int, check_real

__all__ = [
    "sample_centers", "sample_center_vectors", "sort_centers", "kl_gmm", "kl_gaussians",
    "min_gmm_samples", "second_term", "kl_at", "second_term_exact_1d", "one_image", "derive_seed",
    "DEFAULT_CHUNK", "N_MC",
]

#: Centre-set samples per k-means call (one chunk); bounds memory, keeps the working set in cache.
DEFAULT_CHUNK = 256

#: Monte-Carlo draws of eq. (9) (:func:`kl_gmm`), the one default of this knob (the runners, the
#: CLI and the book read it from here). Section 4.2 draws 100,000; the book's records use 20,000
#: and store the Monte-Carlo standard error beside every estimate.
N_MC = 20_000

#: Monte-Carlo samples per ``score_samples`` call in :func:`kl_gmm` (bounds memory).
_MC_BATCH = 25_000

# --------------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------------

_int = check_int


def _real(value, name, low=None, high=None):
    return check_real(value, name, low=low, high=high)


def _quantizer(q):
    if not isinstance(q, QuantizerSpec):
        raise TypeError(f"quantizer must be a vqdbook.quantizers.QuantizerSpec (e.g. "
                        f"QuantizerSpec.paper('mnist', 'prd', s=2, k=4)), got {type(q).__name__}")
    return q

def one_image(x, name="x"):
    """One image ``(C, H, W)`` or ``(1, C, H, W)`` -> ``(1, C, H, W)`` float32 in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (C, H, W) or (1, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"{name} must be ONE image, (C, H, W) or (1, C, H, W); got shape {tuple(x.shape)}")
    check_images(x)
    return x.detach().float()

def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of values (stable across runs and platforms)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1

# --------------------------------------------------------------------------------------------
# sampling C ~ Q_{C|X=x}
# --------------------------------------------------------------------------------------------

def sample_centers(x: torch.Tensor, quantizer: QuantizerSpec, n_samples: int = 10_000,
                   generator: torch.Generator | None = None, *, chunk: int = DEFAULT_CHUNK,
                   threads: int | None = None, progress: bool = False) -> torch.Tensor:
    """Draw ``n_samples`` independent centre sets ``C ~ Q_{C|X=x}`` of one image (Section 4.2).

    ``Q_{C|X}`` is the codebook step of the quantizers (Section 3.1/3.2, before eq. (1)): add
    clustering noise ``sigma * N(0, I)`` to every patch and cluster the noisy patches into ``k``
    centres. The patches of ``x`` are replicated ``n_samples`` times and the copies -- each with
    its own noise and k-means++ draws -- are clustered by the batched k-means, ``chunk`` copies
    per call, the chunks run by :func:`vqdbook.parallel.map_chunks` (the quantizers' scheduler:
    one generator per chunk seeded from ``generator``, worker threads on CPU), so the result is
    reproducible and independent of ``threads`` (not of ``chunk``).

    Parameters
    ----------
    x : tensor (C, H, W) or (1, C, H, W) in [0, 1] -- one image
    quantizer : QuantizerSpec -- its method, s, k and sigma are used (tau and beta are not)
    n_samples : number of centre sets (the paper: 10,000)
    chunk : centre sets per k-means call; threads : CPU worker threads (default: the scheduler's)

    Returns raw (unsorted) centres, float32 tensor ``(n_samples, k, C*s*s)``.

    Examples::

        >>> import torch
        >>> from vqdbook.kl import sample_centers
        >>> from vqdbook.quantizers import QuantizerSpec
        >>> q = QuantizerSpec.paper("mnist", "prd", s=2, k=4)
        >>> sample_centers(torch.rand(1, 28, 28), q, 8, torch.Generator().manual_seed(0)).shape
        torch.Size([8, 4, 4])
    """
    x1 = one_image(x)
    q = _quantizer(quantizer)
    n_samples = _int(n_samples, "n_samples", 1)
    chunk = _int(chunk, "chunk", 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_geometry(x1, q.s, q.k, q.mode)
    if threads is not None:
        threads = _int(threads, "threads", 1)
    P = q.patches(x1).contiguous()                                          # (1, n, d)
    n, d = P.shape[1:]
    from tqdm.auto import tqdm

    bar = tqdm(total=n_samples, desc=f"C ~ Q(C|X) {q.name}", disable=not progress, leave=False)

    def work(a, b, g):
        out = fit_centers(P.expand(b - a, n, d), q.k, q.sigma, g, q.init, q.max_iter).float()
        bar.update(b - a)
        return out

    try:
        parts = map_chunks(work, n_samples, chunk, generator, "cpu", threads)
    finally:
        bar.close()
    return parts[0] if len(parts) == 1 else torch.cat(parts)

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

def sample_center_vectors(x: torch.Tensor, quantizer: QuantizerSpec, n_samples: int = 10_000,
                          generator: torch.Generator | None = None, *, chunk: int = DEFAULT_CHUNK,
                          threads: int | None = None, progress: bool = False) -> torch.Tensor:
    """``n_samples`` draws of the sorted centre vector of ``Q_{C|X=x}`` (Section 4.2, eq. (9)).

    :func:`sample_centers` followed by :func:`sort_centers`: returns ``(n_samples, k*C*s*s)``
    float32. These are the samples to which eq. (9)'s Gaussian mixtures are fitted.
    """
    return sort_centers(sample_centers(x, quantizer, n_samples, generator, chunk=chunk,
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

def _fit_gmm(A: np.ndarray, k_gmm: int, seed: int, reg_covar: float, max_iter: int, init=None,
             tol: float = 1e-3):
    """scikit-learn's ``GaussianMixture`` (full covariances) fitted to standardised samples
    (EM started from the fitted mixture ``init`` when given; ``tol=0``: exactly ``max_iter`` steps)."""
    from sklearn.mixture import GaussianMixture

    warm = {} if init is None else dict(weights_init=init.weights_, means_init=init.means_,
                                        precisions_init=init.precisions_)
    gm = GaussianMixture(k_gmm, covariance_type="full", reg_covar=reg_covar, max_iter=max_iter,
                         random_state=seed, tol=tol, **warm)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*converge.*")
        return gm.fit(A)

def kl_gmm(samples_p, samples_q, k_gmm: int, n_mc: int = N_MC, seed: int = 0, *,
           reg_covar: float = 1e-6, max_iter: int = 200, return_se: bool = False,
           return_info: bool = False, warm_start: bool = False, _fit_cache: dict | None = None):
    """``D_KL(Q_hat_{C|X=x} || Q_hat_{C|X=x'})`` of eq. (9), between Gaussian mixtures fitted to samples.

    Fits ``GaussianMixture(k_gmm, covariance_type="full", reg_covar, random_state=seed)`` to
    ``samples_p`` (draws from ``Q_{C|X=x}``) and to ``samples_q`` (draws from ``Q_{C|X=x'}``),
    after one common affine standardisation (shift by the mean of ``samples_p``, divide each
    coordinate by its std in ``samples_p``; KL is invariant under it -- see the module
    docstring), then averages ``log p_hat(u) - log q_hat(u)`` over ``n_mc`` draws ``u ~ p_hat``
    (:data:`N_MC`; the paper: 100,000).

    Parameters
    ----------
    samples_p, samples_q : arrays (n_p, dim), (n_q, dim) -- same ``dim``, ``n >= k_gmm (dim + 1)``
    k_gmm : int >= 1 -- mixture components (the paper: 2 for MNIST, 8 for CIFAR-10)
    n_mc : int >= 2 -- Monte-Carlo draws (default :data:`N_MC`; the paper: 100,000)
    seed : int -- ``random_state`` of both fits and of the Monte-Carlo draws
    reg_covar, max_iter : passed to ``GaussianMixture`` (``reg_covar`` is on the standardised
        scale, i.e. relative to the variance of ``samples_p``)
    warm_start : start the EM of ``q_hat`` from the fitted ``p_hat`` instead of from k-means
        (default False, the paper's two independent fits). For ``x'`` close to ``x`` sampled with
        common random numbers this keeps the components of the two fits matched (no label
        switching between fits) and needs a few EM iterations instead of tens.

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
    gq = gp if same else _fit_gmm((Q - mu) / scale, k_gmm, seed, reg_covar, max_iter,
                                  gp if warm_start else None)
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

def second_term(x: torch.Tensor, x_adv: torch.Tensor, quantizer: QuantizerSpec, centers: torch.Tensor, *,
                n_draws: int = 500, generator: torch.Generator | None = None, alpha: float = 0.5) -> dict:
    """The second term of Lemma 1, eq. (7) (pRD, RandDisc) or eq. (8) (swRD), by Monte Carlo.

    ``sum_i E_{u ~ Q_{C|X=x}} D_KL(Q_{P^_i | C=u, X=x} || Q_{P^_i | C=u, X=x'})`` over patches
    ``i`` (eq. (7); RandDisc is the ``s = 1`` case: pixels) or the same over output pixels
    ``X^_i`` (eq. (8)), the expectation over ``u`` replaced by the average over the given centre
    sets ``centers (U, k, d)`` (or sorted vectors ``(U, k*d)``), which should be draws from
    ``Q_{C|X=x}`` (e.g. the first rows of :func:`sample_center_vectors`).

    For each ``u``, ``n_draws`` quantizations of ``x`` and of ``x'`` with codebook ``u`` and the
    *same* assignment noise ``w ~ N(0, tau^2 I)`` (eq. (1)) give, per patch, a histogram over the
    ``k`` centres (pRD) or, per pixel, a histogram of the swRD output (eqs. (2)-(4), with
    the quantizer's ``beta``) on the 256 levels of an 8-bit image; the KL between histograms uses add-``alpha``
    pseudo-counts on the union of observed outcomes (see the module docstring for the cap this
    implies). Returns a dict: ``value`` (the term), ``per_u`` (its value for each ``u``),
    ``se_u`` (std over ``u`` / sqrt(U), or 0 for one ``u``), ``n_units`` (patches or pixels),
    ``n_changed`` (mean number of units whose histograms differ), ``max_unit`` (largest per-unit
    KL), ``cap`` (``log(2 n_draws + 1)``, the per-unit value of a deterministic flip).
    """
    from .quantizers import assign, swrd

    q = _quantizer(quantizer)
    method, s, tau, beta = q.method, q.s, q.tau, q.beta
    x1, x2 = one_image(x, "x"), one_image(x_adv, "x_adv")
    if x1.shape != x2.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
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
                    P = q.patches(img).contiguous()
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


# --------------------------------------------------------------------------------------------
# eq. (6) at one point x': both terms, common random numbers
# --------------------------------------------------------------------------------------------

def kl_at(x: torch.Tensor, x_adv: torch.Tensor, quantizer: QuantizerSpec, k_gmm: int, *, n_samples: int,
          n_u: int, n_draws: int, seed: int, n_mc: int = N_MC, samples_p=None, second: bool = True,
          warm_start: bool = True, fit_cache: dict | None = None) -> dict:
    """The estimate of eq. (6) at one point: first term (eq. (9)) plus second term (eq. (7)/(8)).

    ``n_samples`` centre vectors of ``x`` and of ``x_adv`` with the same generator seed ``seed``
    (common random numbers: ``x_adv = x`` gives exactly 0), :func:`kl_gmm` with ``k_gmm``
    components (``warm_start``: the fit for ``x_adv`` starts from the fit for ``x``), and
    :func:`second_term` over the first ``n_u`` centre sets with ``n_draws`` assignment draws.
    ``samples_p`` (the centre vectors of ``x`` for this seed) and ``fit_cache`` (a dict) let many
    points of one image share the clean samples and the fit of ``p_hat``. Returns ``{"first",
    "first_se", "second", "second_n_changed", "total"}``; ``second`` is 0 when ``second=False``.
    """
    q = _quantizer(quantizer)
    if samples_p is None:
        samples_p = sample_center_vectors(x, q, n_samples, torch.Generator().manual_seed(seed))
    vq = sample_center_vectors(x_adv, q, n_samples, torch.Generator().manual_seed(seed))
    info = kl_gmm(samples_p, vq, k_gmm, n_mc, 0, return_info=True, warm_start=warm_start,
                  _fit_cache=fit_cache)
    out = {"first": info["kl"], "first_se": info["se"], "second": 0.0, "second_n_changed": 0.0}
    if second:
        st = second_term(x, x_adv, q, torch.as_tensor(samples_p[:n_u]), n_draws=n_draws,
                         generator=torch.Generator().manual_seed(seed + 1))
        out.update(second=st["value"], second_n_changed=st["n_changed"])
    out["total"] = out["first"] + out["second"]
    return out


def second_term_exact_1d(x, x_adv, centers, tau: float) -> np.ndarray:
    """Exact per-pixel second term of eq. (7) for RandDisc with two scalar centres (``s = 1``, ``C = 1``).

    With centres ``c0 < c1`` and assignment noise ``w ~ N(0, tau^2)`` (eq. (1)), pixel ``v`` goes to
    ``c0`` with probability ``a(v) = Phi((c0/2 + c1/2 - v) / tau)``; the per-pixel term is
    ``D_KL(Bern(a(x_i)) || Bern(a(x'_i)))`` (a closed form, computed with log-probabilities so
    that flips far beyond ``tau`` are exact too). The reference for :func:`second_term`'s
    Monte-Carlo estimate and its cap ``log(2 n_draws + 1)`` per flipped pixel.

    Examples::

        >>> from vqdbook.kl import second_term_exact_1d
        >>> second_term_exact_1d([0.2, 0.5], [0.2, 0.6], [0.0, 1.0], 0.05).round(2).tolist()
        [0.0, 1.21]
    """
    from scipy.stats import norm

    c = np.sort(np.asarray(centers, dtype=np.float64).reshape(-1))
    if c.shape != (2,) or c[0] == c[1]:
        raise ValueError("centers must be two distinct scalars")
    tau = _real(tau, "tau")
    if tau <= 0:
        raise ValueError("tau must be > 0")
    v, w = np.asarray(x, np.float64).reshape(-1), np.asarray(x_adv, np.float64).reshape(-1)
    if v.shape != w.shape:
        raise ValueError("x and x_adv must have the same number of pixels")
    mid = c.mean()
    z, z2 = (mid - v) / tau, (mid - w) / tau
    la, lb = norm.logcdf(z), norm.logsf(z)              # log a, log (1 - a)
    la2, lb2 = norm.logcdf(z2), norm.logsf(z2)
    return np.exp(la) * (la - la2) + np.exp(lb) * (lb - lb2)
