"""Figure 6 (Section 4.2): the KL between the codebook distributions for x and x′, as ``kl`` records.

One record per (dataset, method, ε): for each of the first ``n_images`` stratified test images x and
its PGD example x′ (the paper's protocol), the estimate of eq. (9) (:func:`vqdbook.kl.kl_gmm` on
:func:`vqdbook.kl.sample_center_vectors`) and the second term of eqs. (7)-(8)
(:func:`vqdbook.kl.second_term`). Settings default to Section 4.2's (:data:`vqdbook.paper.FIG6`,
noise from :data:`vqdbook.paper.NOISE`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .. import kl, paper
from ..data import load_dataset, spec
from ..kl import N_MC, derive_seed, kl_gmm, min_gmm_samples, sample_center_vectors
from ..quantizers import QuantizerSpec
from ..results import load_or_run, load_record
from ..validation import check_int, check_real
from .adversarial import adversarial_examples

__all__ = ["N_IMAGES", "N_SAMPLES", "N_U", "N_DRAWS", "BOOK", "kl_quantizer", "kl_params", "run_kl", "kl_record",
           "run_fig6", "fig6_frame", "fig6_claims", "chapter_cells"]

#: Images per Figure 6 point (the paper does not say how many it used).
N_IMAGES = 5
#: Centre-set draws per image: the paper's 10,000 (2,000 over-fit 8 full-covariance components in
#: 120 dimensions, see :mod:`vqdbook.kl`).
N_SAMPLES = 10_000
#: Centre sets (second term of eqs. (7)-(8)) and assignment draws per centre set.
N_U, N_DRAWS = 4, 500
#: The radii the book shows per dataset (MNIST computed while the book builds; CIFAR-10 from records).
BOOK = {"mnist": {"eps": (0.04, 0.16, 0.32)}, "cifar10": {"eps": (4 / 255, 8 / 255, 16 / 255)}}

_OVERRIDES = {"s", "k", "sigma", "tau", "beta", "n_u", "n_draws", "arch", "variant"}


def kl_quantizer(dataset: str, method: str, s=None, k=None, sigma=None, tau=None, beta=None) -> QuantizerSpec:
    """The quantizer of a Figure 6 point: Section 4.2's s, k and Section 4.1's noise unless given
    (RandDisc, which has no s, uses s = 1 and the same k)."""
    name = spec(dataset).name
    if name not in paper.FIG6:
        raise ValueError(f"dataset must be one of {sorted(paper.FIG6)} (Section 4.2), got {dataset!r}")
    st, noise = paper.FIG6[name], paper.NOISE[name]
    m = QuantizerSpec.canonical(method)
    if m == "randdisc" and s not in (None, 1):
        raise ValueError(f"s must be 1 (or None) for RandDisc, which quantizes pixels; got {s!r}")
    return QuantizerSpec(m, 1 if m == "randdisc" else (st["s"] if s is None else s), st["k"] if k is None else k,
                         noise["sigma"] if sigma is None else sigma, noise["tau"] if tau is None else tau,
                         (noise["beta"] if beta is None else beta) if m == "swrd" else None)


def kl_params(dataset, method, eps, n_images=N_IMAGES, n_samples=N_SAMPLES, k_gmm=None, n_mc=N_MC, seed=0,
              s=None, k=None, sigma=None, tau=None, beta=None, second=True, n_u=N_U, n_draws=N_DRAWS,
              arch=None, variant=None) -> dict:
    """The record parameters of one Figure 6 point (checked; the key of its ``kl`` record)."""
    name = spec(dataset).name
    q = kl_quantizer(name, method, s, k, sigma, tau, beta)
    k_gmm = paper.FIG6[name]["k_gmm"] if k_gmm is None else check_int(k_gmm, "k_gmm", 1)
    eps = round(check_real(eps, "eps", low=0.0, high=1.0), 8)
    n_images = check_int(n_images, "n_images", 1)
    n_samples = check_int(n_samples, "n_samples", 2)
    d = spec(name).channels * q.s ** 2 * q.k
    need = min_gmm_samples(k_gmm, d)
    if n_samples < need:
        raise ValueError(f"n_samples={n_samples} is too few for a {k_gmm}-component full-covariance "
                         f"mixture of {d}-dimensional centre vectors: need n_samples >= k_gmm * (dim + 1) = {need}")
    return {"dataset": name, "method": q.method, "eps": eps, "n_images": n_images, "n_samples": n_samples,
            "n_mc": check_int(n_mc, "n_mc", 2), "seed": check_int(seed, "seed", 0), "s": q.s, "k": q.k,
            "sigma": q.sigma, "tau": q.tau, "beta": q.beta, "k_gmm": k_gmm, "second_term": bool(second),
            "n_u": check_int(n_u, "n_u", 1), "n_draws": check_int(n_draws, "n_draws", 1),
            "arch": arch, "variant": variant}


def _images(dataset, eps, n_images, seed, arch, variant, progress):
    x, y = load_dataset(dataset, "test", n_images, seed=seed)
    if eps == 0:
        return x, x.clone(), y
    x_adv, _, _ = adversarial_examples(dataset, arch, variant, eps, n_images, seed, progress=progress)
    return x, x_adv, y


def run_kl(dataset, method, eps, n_images, n_samples, k_gmm, n_mc, seed, s, k, sigma, tau, beta,
           second_term: bool, n_u, n_draws, arch, variant, *, _cache=None, progress=False) -> dict:
    """One point of Figure 6: eq. (9)'s KL (and eq. (7)/(8)'s second term) for ``n_images`` images.

    For each of the first ``n_images`` stratified test images ``x`` and its PGD example ``x'``
    (:func:`vqdbook.experiments.adversarial.adversarial_examples`, the paper's protocol; ``x' = x``
    at ``eps = 0``): ``n_samples`` sorted centre vectors of each (common random numbers), the GMM
    estimate :func:`vqdbook.kl.kl_gmm` with ``k_gmm`` components and ``n_mc`` draws, and (when
    ``second_term``) :func:`vqdbook.kl.second_term` over ``n_u`` centre sets with ``n_draws``
    assignment draws. Returns per-image lists and summaries (mean, median, quartiles).
    """
    q = QuantizerSpec(method, s, k, sigma, tau, beta)
    x, x_adv, y = _images(dataset, eps, n_images, seed, arch, variant, progress)
    cache = {} if _cache is None else _cache
    kls, ses, conv, seconds = [], [], [], {"sampling": 0.0, "gmm": 0.0, "second": 0.0}
    sec_vals, sec_changed, sec_units, sec_max = [], [], None, []
    from tqdm.auto import tqdm

    for i in tqdm(range(n_images), desc=f"KL {dataset} {method} eps={eps:.4g}", disable=not progress, leave=False):
        img_seed = derive_seed("kl", dataset, method, s, k, sigma, seed, i)
        t0 = time.time()
        key = (dataset, method, s, k, sigma, n_samples, seed, i)
        if key not in cache:
            cache[key] = sample_center_vectors(x[i], q, n_samples, torch.Generator().manual_seed(img_seed))
        vp = cache[key]
        vq = vp if eps == 0 else sample_center_vectors(x_adv[i], q, n_samples, torch.Generator().manual_seed(img_seed))
        t1 = time.time()
        info = kl_gmm(vp, vq, k_gmm, n_mc, seed, return_info=True,
                      _fit_cache=cache.setdefault(("gmm",) + key, {}))
        t2 = time.time()
        kls.append(info["kl"])
        ses.append(info["se"])
        conv.append(info["converged_p"] and info["converged_q"])
        if second_term:
            st = kl.second_term(x[i], x_adv[i], q, vp[:n_u], n_draws=n_draws,
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


def kl_record(dataset: str, method: str, eps: float, *, n_images: int = N_IMAGES, n_samples: int = N_SAMPLES,
              k_gmm: int | None = None, n_mc: int = N_MC, seed: int = 0, s: int | None = None,
              k: int | None = None, sigma: float | None = None, tau: float | None = None,
              beta: float | None = None, second_term: bool = True, n_u: int = N_U, n_draws: int = N_DRAWS,
              arch: str | None = None, variant: str | None = None, root=None, progress: bool = False,
              _cache=None, load_only: bool = False) -> dict | None:
    """Load or compute the ``"kl"`` record of one (dataset, method, eps) point of Figure 6 (eq. (9)).

    Unset parameters take Section 4.2's values (:data:`vqdbook.paper.FIG6`); see :func:`run_kl`.
    With ``load_only`` nothing is computed (``None`` when the record is missing).
    """
    params = kl_params(dataset, method, eps, n_images, n_samples, k_gmm, n_mc, seed, s, k, sigma, tau, beta,
                       second_term, n_u, n_draws, arch, variant)
    if load_only:
        return load_record("kl", params, root=root)
    return load_or_run("kl", params, lambda **p: run_kl(**p, _cache=_cache, progress=progress), root=root)


def run_fig6(dataset: str, eps_list=None, n_images: int = N_IMAGES, n_samples: int = N_SAMPLES,
             k_gmm: int | None = None, methods=paper.QUANTIZERS, seed: int = 0, *, n_mc: int = N_MC,
             second_term: bool = True, progress: bool = True, root=None, load_only: bool = False,
             **overrides) -> list[dict]:
    """Figure 6: ``D_KL(Q_hat_{C|X=x} || Q_hat_{C|X=x'})`` (eq. (9)) per method, eps and image.

    One ``"kl"`` record per (method, eps) (resumable; see :func:`kl_record`); the clean samples
    of each image are drawn once per method and reused across ``eps``. ``overrides`` may set ``s``,
    ``k``, ``sigma``, ``tau``, ``beta``, ``n_u``, ``n_draws``, ``arch``, ``variant``.
    Returns the records (``record["result"]`` holds the per-image values). With ``load_only``
    nothing is computed: only the stored records are returned (missing points are left out) --
    how the book shows runs too long to execute while it builds.
    """
    from tqdm.auto import tqdm

    name = spec(dataset).name
    if name not in paper.FIG6:
        raise ValueError(f"dataset must be one of {sorted(paper.FIG6)} (Section 4.2), got {dataset!r}")
    eps_list = paper.FIG6[name]["eps"] if eps_list is None else eps_list
    bad = set(overrides) - _OVERRIDES
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
        rows.append({"dataset": p["dataset"], "method": paper.METHOD_LABELS[p["method"]], "s": p["s"], "k": p["k"],
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
    labels = set(paper.METHOD_LABELS.values())
    out = {}
    for which, pick in (("max", max), ("min", min)):
        eps = pick(frame["eps"])
        med = frame[frame["eps"] == eps].set_index("method")["kl_median"]
        complete = labels <= set(med.index)
        out[f"eps_{which}"] = float(eps)
        if which == "max":
            out["median_at_max"] = {m: float(v) for m, v in med.items()}
            out["large_eps_holds"] = bool(med["pRD"] < med["RandDisc"] and med["swRD"] < med["RandDisc"]) \
                if complete else None
        else:
            out["lowest_at_min"] = med.idxmin()
            out["small_eps_holds"] = bool(med.idxmin() == "RandDisc") if complete else None
    return out


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The ``kl`` records the book's Figure 6 renders at its settings (:data:`BOOK`)."""
    return [("kl", kl_params(name, m, e, seed=seed)) for name, b in BOOK.items() for m in paper.QUANTIZERS
            for e in b["eps"]]
