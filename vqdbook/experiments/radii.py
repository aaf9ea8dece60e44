"""Certified radii and certified-accuracy curves: Theorem 1 (eq. (5)) per image, beside randomized smoothing.

Three record kinds, all through :func:`vqdbook.results.load_or_run`:

``certified_radius`` (one record per image and quantizer)
    The clean image's votes (``t_margin`` draws of ``f(Q(x))``) give a lower confidence bound on
    the margin (:func:`vqdbook.certify.margin_lower_bound`, Clopper-Pearson, Bonferroni over the
    top class and the runner-up, at ``1 - alpha_margin``) and with it the largest KL that eq. (5)
    certifies with ``t`` votes at ``1 - alpha`` (:func:`vqdbook.certify.kl_budget`). Then, from the
    smallest radius of a log-spaced grid up (:func:`vqdbook.certify.radius_grid`, scale sigma =
    4/255), the KL of eq. (6) (both terms, :func:`vqdbook.kl.kl_at`) is estimated at the points of
    :func:`vqdbook.certify.ball_points` (sign corners, PGD on f, PGD on f(Q(.)) with BPDA and
    EOT, random signs) and its largest value is compared with the budget; the certified radius
    is the last grid radius before the first failure, found by bisection of the grid
    (:func:`vqdbook.certify.certified_radius`; the supremum grows with the radius). **The maximum
    over a few points estimates the supremum over the ball; it does not bound it, so the radius
    is an estimate, not a proof.**
``smoothing`` (one record per dataset and noise level)
    CERTIFY of Cohen, Rosenfeld & Kolter (2019) (:func:`vqdbook.certify.smoothing_certify`) on the
    same naturally trained classifier, per image: label (or abstain), l2 radius, and the
    l-infinity radius ``r2 / sqrt(d)`` (:func:`vqdbook.certify.linf_radius`).
``smoothing_art`` (one record per dataset and noise level of :data:`ART_SIGMAS`)
    The same CERTIFY run by IBM ART's ``PyTorchRandomizedSmoothing.certify`` (Nicolae et al. 2018)
    on the same images and classifier, with the same ``n0``, ``n`` and ``alpha``: an independent
    implementation to cross-check ours against (:func:`smoothing_cross_check`).
``kl_validation`` (one record per known problem)
    :func:`vqdbook.kl.kl_gmm` on Gaussian and Gaussian-mixture problems with a known KL in the
    dimensions of the centre vectors (4, 16, 30, 120), repeated: bias and spread against
    ``n_samples`` and ``k_gmm``, with independent samples (the paper's estimate) and with common
    random numbers (the samples of ``q`` are those of ``p`` moved, as the certified radii use).

:func:`certified_curves` renders the first two as certified accuracy against radius (Cohen et al.'s
curves), :func:`validation_frame` the third.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .. import paper
from ..certify import (
    POINT_KINDS,
    ball_points,
    certified_radius,
    kl_budget,
    linf_radius,
    margin_lower_bound,
    radius_grid,
    smoothing_certify,
    sup_over_points,
    vote_frequencies,
)
from ..data import load_dataset, spec
from ..kl import N_MC, derive_seed, kl_at, kl_gaussians, kl_gmm, sample_center_vectors
from ..quantizers import QuantizerSpec
from ..results import load_or_run, load_record
from ..validation import check_int, check_real
from .adversarial import classifier
from .certified import ALPHA, T_VOTES
from .fig6 import N_DRAWS, N_U, kl_quantizer

__all__ = ["N_IMAGES", "N_SAMPLES", "T_MARGIN", "ALPHA_MARGIN", "GRID", "EOT_SAMPLES", "N_MC_RADIUS", "SEARCH",
           "SMOOTHING", "SMOOTHING_SIGMAS", "N_SMOOTHING", "VALIDATION", "curve_grid", "radius_params",
           "run_radius", "run_radii", "radii_frame", "smoothing_params", "run_smoothing", "smoothing_frame",
           "validation_params", "run_validation", "validation_frame", "certified_curves", "curve_summary",
           "best_sigma", "SECOND_TERM_CASE", "second_term_case", "chapter_cells", "ART_SIGMAS",
           "run_smoothing_art", "smoothing_cross_check", "record_status"]

#: Test images per certified-accuracy curve (the first of the stratified test set).
N_IMAGES = {"mnist": 20, "cifar10": 12}
#: Centre-set draws per point for the KL of eq. (9) (common random numbers between x and x').
N_SAMPLES = {"mnist": 2_000, "cifar10": 2_000}
#: Clean draws of f(Q(x)) whose counts bound the margin, and the margin's confidence 1 - ALPHA_MARGIN
#: (Cohen et al.'s alpha). Theorem 1's own t and alpha are :data:`vqdbook.experiments.certified.T_VOTES`
#: and ``ALPHA``.
T_MARGIN, ALPHA_MARGIN = 1000, 0.001
#: The radius grid per dataset, sigma * 2^(j / per_octave) for j / per_octave = low .. high (sigma: the
#: quantizers' clustering noise). CIFAR-10 reaches further down: there the estimated KL at sigma/1024
#: is already above the budget for most images (k-means outcomes that jump, see the chapter).
GRID = {"mnist": {"low": -10, "high": 3, "per_octave": 2}, "cifar10": {"low": -16, "high": 3, "per_octave": 2}}
#: EOT draws per PGD step of the adaptive point (PGD on f(Q(.)) with BPDA).
EOT_SAMPLES = 2
#: Monte-Carlo draws of eq. (9) per point (its standard error is stored; at the KLs that decide a
#: certificate, below 1/2, it is ~0.01).
N_MC_RADIUS = 5_000
#: How the grid is searched (:func:`vqdbook.certify.certified_radius`).
SEARCH = "bisect"
#: Randomized smoothing: selection and estimation draws, confidence (Cohen et al. use n = 100,000).
SMOOTHING = {"n0": 100, "n": 1_000, "alpha": 0.001}
#: Noise levels tried for randomized smoothing, in units of the quantizers' sigma (4/255).
SMOOTHING_SIGMAS = {"mnist": (1, 2, 4, 8, 16, 32), "cifar10": (1, 2, 4, 8)}
#: Images for randomized smoothing per dataset.
N_SMOOTHING = {"mnist": 30, "cifar10": 20}
#: Noise levels (multiples of the quantizers' sigma) at which CERTIFY is cross-checked against IBM ART's
#: implementation on the same images: the quantizers' sigma and the one that serves smoothing best
#: (:func:`best_sigma` on the stored curves: 64/255 on MNIST, 16/255 on CIFAR-10).
ART_SIGMAS = {"mnist": (1, 16), "cifar10": (1, 4)}


def _sigma(dataset: str) -> float:
    return paper.NOISE[spec(dataset).name]["sigma"]


# ============================================================================================
# Theorem 1: certified radius of one image
# ============================================================================================

def radius_params(dataset: str, method: str, index: int, *, seed: int = 0, n_samples: int | None = None,
                  k_gmm: int | None = None, n_mc: int = N_MC_RADIUS, n_u: int = N_U, n_draws: int = N_DRAWS,
                  t: int = T_VOTES, alpha: float = ALPHA, t_margin: int = T_MARGIN,
                  alpha_margin: float = ALPHA_MARGIN, grid: dict | None = None, points=POINT_KINDS,
                  eot_samples: int = EOT_SAMPLES, arch: str | None = None, variant: str | None = None) -> dict:
    """The key of one ``certified_radius`` record (checked): Section 4.2's quantizer
    (:func:`vqdbook.experiments.fig6.kl_quantizer`) and the estimator's and certificate's settings."""
    name = spec(dataset).name
    q = kl_quantizer(name, method)
    grid = dict(GRID[name] if grid is None else grid)
    bad = set(points) - set(POINT_KINDS)
    if bad:
        raise ValueError(f"unknown point kinds {sorted(bad)}; allowed {POINT_KINDS}")
    return {"dataset": name, "method": q.method, "index": check_int(index, "index", 0),
            "seed": check_int(seed, "seed", 0),
            **q.params(), "beta": q.beta,
            "k_gmm": paper.FIG6[name]["k_gmm"] if k_gmm is None else check_int(k_gmm, "k_gmm", 1),
            "n_samples": N_SAMPLES[name] if n_samples is None else check_int(n_samples, "n_samples", 2),
            "n_mc": check_int(n_mc, "n_mc", 2), "n_u": check_int(n_u, "n_u", 1),
            "n_draws": check_int(n_draws, "n_draws", 1), "t": check_int(t, "t", 1),
            "alpha": check_real(alpha, "alpha", low=0.0, high=1.0), "t_margin": check_int(t_margin, "t_margin", 1),
            "alpha_margin": check_real(alpha_margin, "alpha_margin", low=0.0, high=1.0),
            "grid": {"low": int(grid["low"]), "high": int(grid["high"]), "per_octave": int(grid["per_octave"])},
            "points": list(points), "eot_samples": check_int(eot_samples, "eot_samples", 1),
            "search": SEARCH, "arch": arch, "variant": variant}


def run_radius(dataset, method, index, seed, s, k, sigma, tau, beta, k_gmm, n_samples, n_mc, n_u, n_draws, t,
               alpha, t_margin, alpha_margin, grid, points, eot_samples, search, arch, variant) -> dict:
    """Theorem 1's certified radius of test image ``index`` for one quantizer (eq. (5); see the module).

    Returns the clean votes and margin bounds, the KL budget, the certified ``radius`` (0 when
    the certificate fails at the smallest grid radius or the vote is wrong), ``certified_at_zero``
    (correct vote and budget >= 0) and, per radius evaluated, the KL estimate at each point
    (``first`` + ``second`` term, ``first_se``), the largest and whether the certificate held.
    """
    t0 = time.time()
    x_all, y_all = load_dataset(dataset, "test", index + 1, seed=seed)
    x, y = x_all[index:index + 1], y_all[index:index + 1]
    label = int(y[0])
    net = classifier(dataset, arch, variant, "cpu")
    q = QuantizerSpec(method, s, k, sigma, tau, beta)
    g = torch.Generator().manual_seed(derive_seed("votes-cp", dataset, method, s, k, sigma, seed, index))
    freq = vote_frequencies(net, x[0], q, t_margin, g)
    counts = np.rint(freq.numpy() * t_margin).astype(int)
    m = len(counts)
    mlb, p_low, r_up = margin_lower_bound(counts, label, alpha_margin, return_parts=True)
    budget = kl_budget(mlb, m, t, alpha)
    correct = int(np.argmax(counts)) == label
    radii = radius_grid(sigma, grid["low"], grid["high"], grid["per_octave"])
    evaluated = []
    t_votes = time.time() - t0
    if correct and budget >= 0:
        img_seed = derive_seed("radius", dataset, method, s, k, sigma, seed, index)
        samples_p = sample_center_vectors(x[0], q, n_samples, torch.Generator().manual_seed(img_seed))
        cache: dict = {}

        def holds(r):
            pts = ball_points(x, r, points, y=y, net=net, quantizer=q, dataset=dataset,
                              eot_samples=eot_samples, seed=img_seed % (2 ** 31))
            parts = {}

            def estimate(xp):
                e = kl_at(x[0], xp[0], q, k_gmm, n_samples=n_samples, n_u=n_u, n_draws=n_draws, seed=img_seed,
                          n_mc=n_mc, samples_p=samples_p, fit_cache=cache)
                parts[len(parts)] = (e["first"], e["second"], e["first_se"])
                return e["total"]

            t1 = time.time()
            sup = sup_over_points(estimate, pts, budget)
            ok = sup["sup"] <= budget
            names = list(sup["values"])
            evaluated.append({"radius": float(r), "kl": sup["values"],
                              "first": {n: parts[i][0] for i, n in enumerate(names)},
                              "second": {n: parts[i][1] for i, n in enumerate(names)},
                              "first_se": {n: parts[i][2] for i, n in enumerate(names)},
                              "sup": sup["sup"], "argmax": sup["argmax"], "holds": bool(ok),
                              "seconds": round(time.time() - t1, 3)})
            return ok

        radius = certified_radius(radii, holds, search)
    else:
        radius = 0.0
    return {"label": label, "counts": counts.tolist(), "vote": int(np.argmax(counts)), "correct": bool(correct),
            "margin_lower": float(mlb), "p_y_lower": float(p_low), "runner_up_upper": float(r_up),
            "budget": float(budget) if np.isfinite(budget) else None,
            "certified_at_zero": bool(correct and budget >= 0), "radius": float(radius),
            "radii": radii.tolist(), "evaluated": evaluated,
            "seconds": {"votes": round(t_votes, 3), "total": round(time.time() - t0, 3)}}


def run_radii(dataset: str, methods=paper.QUANTIZERS, n_images: int | None = None, *, seed: int = 0,
              progress: bool = True, root=None, load_only: bool = False, **settings) -> list[dict]:
    """``certified_radius`` records of the first ``n_images`` test images for each method (resumable).

    ``settings`` are passed to :func:`radius_params`. With ``load_only`` nothing is computed and
    missing records are left out.
    """
    from tqdm.auto import tqdm

    name = spec(dataset).name
    n_images = N_IMAGES[name] if n_images is None else check_int(n_images, "n_images", 1)
    out = []
    for method in methods:
        for i in tqdm(range(n_images), desc=f"certified radius {name} {method}", disable=not progress):
            params = radius_params(name, method, i, seed=seed, **settings)
            if load_only:
                rec = load_record("certified_radius", params, root=root)
            else:
                rec = load_or_run("certified_radius", params, run_radius, root=root)
            if rec is not None:
                out.append(rec)
    return out


def radii_frame(records: list[dict]):
    """One row per (dataset, method, image): label, vote, margin bound, KL budget, certified radius,
    the radii evaluated and the point that gave the largest KL at the failing radius."""
    import pandas as pd

    rows = []
    for r in records:
        p, res = r["params"], r["result"]
        last = res["evaluated"][-1] if res["evaluated"] else None
        rows.append({"dataset": p["dataset"], "method": p["method"], "index": p["index"], "label": res["label"],
                     "correct": res["correct"], "margin_lower": res["margin_lower"], "budget": res["budget"],
                     "certified_at_zero": res["certified_at_zero"], "radius": res["radius"],
                     "n_radii": len(res["evaluated"]), "argmax_at_last": last["argmax"] if last else None,
                     "kl_at_last": last["sup"] if last else None,
                     "seconds": res["seconds"]["total"]})
    return pd.DataFrame(rows)


# ============================================================================================
# randomized smoothing
# ============================================================================================

def smoothing_params(dataset: str, sigma: float, n_images: int | None = None, *, seed: int = 0,
                     n0: int = SMOOTHING["n0"], n: int = SMOOTHING["n"], alpha: float = SMOOTHING["alpha"],
                     arch: str | None = None, variant: str | None = None) -> dict:
    """The key of one ``smoothing`` record (checked)."""
    name = spec(dataset).name
    return {"dataset": name, "sigma": round(check_real(sigma, "sigma", positive=True), 8),
            "n_images": N_SMOOTHING[name] if n_images is None else check_int(n_images, "n_images", 1),
            "seed": check_int(seed, "seed", 0), "n0": check_int(n0, "n0", 1), "n": check_int(n, "n", 1),
            "alpha": check_real(alpha, "alpha", low=0.0, high=1.0), "arch": arch, "variant": variant}


def run_smoothing(dataset, sigma, n_images, seed, n0, n, alpha, arch, variant) -> dict:
    """CERTIFY (Cohen et al. 2019) with Gaussian noise ``sigma`` on the first ``n_images`` test images
    for the naturally trained classifier: per image the label (or -1, abstain), whether it is
    correct, the l2 radius and the l-infinity radius ``r2 / sqrt(d)``."""
    t0 = time.time()
    x, y = load_dataset(dataset, "test", n_images, seed=seed)
    net = classifier(dataset, arch, variant, "cpu")
    d = int(x[0].numel())
    labels, r2, plow = [], [], []
    for i in range(n_images):
        g = torch.Generator().manual_seed(derive_seed("smoothing", dataset, sigma, seed, i))
        out = smoothing_certify(net, x[i], sigma, n0, n, alpha, g)
        labels.append(out["label"])
        r2.append(out["radius_l2"])
        plow.append(out["p_a_lower"])
    correct = [int(a == b) for a, b in zip(labels, y.tolist())]
    rinf = [float(linf_radius(r, d)) * c for r, c in zip(r2, correct)]
    return {"labels": y.tolist(), "prediction": labels, "correct": correct, "radius_l2": r2,
            "radius_linf": rinf, "p_a_lower": plow, "dim": d, "clean_accuracy": float(np.mean(correct)),
            "seconds": round(time.time() - t0, 3)}


def run_smoothing_art(dataset, sigma, n_images, seed, n0, n, alpha, arch, variant) -> dict:
    """IBM ART's CERTIFY (``PyTorchRandomizedSmoothing.certify``, Nicolae et al. 2018) on the images and
    classifier of :func:`run_smoothing`, with the same ``n0``, ``n``, ``alpha``: an independent
    implementation of Cohen et al.'s algorithm to cross-check ours against. ART draws its noise from
    numpy's global generator (seeded here) and abstains when ``p_A_lower < 1/2`` (ours: ``<= 1/2``).
    Same result fields as :func:`run_smoothing`, plus ART's version."""
    import art
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    t0 = time.time()
    x, y = load_dataset(dataset, "test", n_images, seed=seed)
    net = classifier(dataset, arch, variant, "cpu")
    d = int(x[0].numel())
    rs = PyTorchRandomizedSmoothing(net, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=len(spec(dataset).classes), device_type="cpu", sample_size=n0,
                                    scale=sigma, alpha=alpha)
    state = np.random.get_state()
    np.random.seed(derive_seed("smoothing-art", dataset, sigma, seed) % (2 ** 32))
    try:
        labels, r2 = rs.certify(x.numpy(), n=n, batch_size=500)
    finally:
        np.random.set_state(state)
    labels = [int(v) for v in labels]
    r2 = [float(v) for v in r2]
    correct = [int(a == b) for a, b in zip(labels, y.tolist())]
    rinf = [float(linf_radius(r, d)) * c for r, c in zip(r2, correct)]
    return {"labels": y.tolist(), "prediction": labels, "correct": correct, "radius_l2": r2, "radius_linf": rinf,
            "dim": d, "clean_accuracy": float(np.mean(correct)), "art_version": art.__version__,
            "seconds": round(time.time() - t0, 3)}


def smoothing_cross_check(datasets=("mnist", "cifar10"), *, root=None, load_only: bool = True,
                          progress: bool = False, seed: int = 0):
    """Our CERTIFY against IBM ART's on the same images, one row per (dataset, sigma) of
    :data:`ART_SIGMAS` whose two records exist: ``n``, ``label_agreement`` (the share of images
    with the same label or both abstaining), both clean accuracies, both mean l-infinity radii
    (0 for wrong or abstained images) and the largest per-image difference of the l-infinity
    radius where both certify the same label. The two use independent noise draws, so radii agree
    up to Monte-Carlo error; where ``p_A`` is near 1 both reach the cap
    ``sigma Phi^-1(alpha^(1 / n))`` and agree exactly."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    for ds in datasets:
        name = spec(ds).name
        for mult in tqdm(ART_SIGMAS[name], desc=f"ART cross-check {name}", disable=not progress):
            params = smoothing_params(name, mult * _sigma(name), seed=seed)
            ours = load_record("smoothing", params, root=root) if load_only else \
                load_or_run("smoothing", params, run_smoothing, root=root)
            theirs = load_record("smoothing_art", params, root=root) if load_only else \
                load_or_run("smoothing_art", params, run_smoothing_art, root=root)
            if ours is None or theirs is None:
                continue
            a, b = ours["result"], theirs["result"]
            pa, pb = np.array(a["prediction"]), np.array(b["prediction"])
            same = (pa == pb) & (pa >= 0)
            diff = np.abs(np.array(a["radius_linf"]) - np.array(b["radius_linf"]))[same]
            rows.append({"dataset": name, "sigma": params["sigma"], "n": params["n_images"],
                         "label_agreement": float(np.mean(pa == pb)),
                         "clean_ours": a["clean_accuracy"], "clean_art": b["clean_accuracy"],
                         "mean_radius_ours": float(np.mean(a["radius_linf"])),
                         "mean_radius_art": float(np.mean(b["radius_linf"])),
                         "max_radius_diff": float(diff.max()) if len(diff) else 0.0})
    return pd.DataFrame(rows, columns=["dataset", "sigma", "n", "label_agreement", "clean_ours", "clean_art",
                                       "mean_radius_ours", "mean_radius_art", "max_radius_diff"])


def _smoothing_records(dataset, sigmas, n_images, seed, root, load_only, progress):
    from tqdm.auto import tqdm

    out = []
    for mult in tqdm(sigmas, desc=f"smoothing {dataset}", disable=not progress):
        params = smoothing_params(dataset, mult * _sigma(dataset), n_images, seed=seed)
        rec = load_record("smoothing", params, root=root) if load_only else \
            load_or_run("smoothing", params, run_smoothing, root=root)
        if rec is not None:
            out.append(rec)
    return out


def smoothing_frame(records: list[dict]):
    """One row per (dataset, sigma): clean accuracy of the smoothed classifier (abstentions count as
    wrong), median and mean certified l-infinity radius (0 for wrong or abstained images)."""
    import pandas as pd

    rows = []
    for r in records:
        p, res = r["params"], r["result"]
        rinf = np.array(res["radius_linf"])
        rows.append({"dataset": p["dataset"], "sigma": p["sigma"], "sigma_255": 255 * p["sigma"], "n": p["n_images"],
                     "n_noise": p["n"], "clean_accuracy": res["clean_accuracy"],
                     "abstained": float(np.mean(np.array(res["prediction"]) < 0)),
                     "median_radius_linf": float(np.median(rinf)), "mean_radius_linf": float(rinf.mean())})
    return pd.DataFrame(rows)


# ============================================================================================
# the curves
# ============================================================================================

def _curve(radii: np.ndarray, at_zero: float, grid: np.ndarray) -> list[float]:
    return [at_zero if r == 0 else float(np.mean(radii >= r)) for r in grid]


def curve_grid(dataset: str) -> np.ndarray:
    """The radii at which :func:`certified_curves` evaluates the curves: 0, then 4 per octave."""
    g = GRID[spec(dataset).name]
    return np.concatenate([[0.0], radius_grid(_sigma(dataset), g["low"], g["high"], 4)])


def certified_curves(datasets=("mnist", "cifar10"), *, root=None, load_only: bool = True, progress: bool = False,
                     seed: int = 0):
    """Certified accuracy against l-infinity radius (Cohen et al.'s curves) for RandDisc, pRD, swRD
    (Theorem 1, eq. (5), estimated radii) and randomized smoothing (certified), as a DataFrame.

    Columns: ``dataset``, ``method`` (``randdisc``, ``prd``, ``swrd``, ``smoothing``), ``sigma`` (the
    quantizers' clustering noise; smoothing's Gaussian noise), ``radius`` (l-infinity, [0, 1]),
    ``certified_accuracy`` (the fraction of the ``n`` test images whose certified radius is at
    least ``radius``; at ``radius = 0`` the clean accuracy of the vote, resp. of the smoothed
    classifier with abstentions counted as errors), ``n``. By default only stored records are used
    (``load_only``); ``load_only=False`` computes the missing ones (hours on 2 CPU cores).
    """
    import pandas as pd

    rows = []
    for ds in datasets:
        name = spec(ds).name
        grid = curve_grid(name)
        recs = run_radii(name, seed=seed, root=root, load_only=load_only, progress=progress)
        for method in paper.QUANTIZERS:
            mine = [r for r in recs if r["params"]["method"] == method]
            if not mine:
                continue
            radii = np.array([r["result"]["radius"] for r in mine])
            clean = float(np.mean([r["result"]["correct"] for r in mine]))
            for r, acc in zip(grid, _curve(radii, clean, grid)):
                rows.append({"dataset": name, "method": method, "sigma": mine[0]["params"]["sigma"],
                             "radius": float(r), "certified_accuracy": acc, "n": len(mine)})
        for rec in _smoothing_records(name, SMOOTHING_SIGMAS[name], None, seed, root, load_only, progress):
            res = rec["result"]
            radii = np.array(res["radius_linf"])
            radii[np.array(res["correct"]) == 0] = -1.0
            for r, acc in zip(grid, _curve(radii, res["clean_accuracy"], grid)):
                rows.append({"dataset": name, "method": "smoothing", "sigma": rec["params"]["sigma"],
                             "radius": float(r), "certified_accuracy": acc, "n": rec["params"]["n_images"]})
    return pd.DataFrame(rows, columns=["dataset", "method", "sigma", "radius", "certified_accuracy", "n"])


def best_sigma(curves, dataset: str) -> float:
    """Smoothing's noise level with the largest average certified radius on ``dataset`` (the area
    under its certified-accuracy curve, ``integral of accuracy(r) dr``, trapezoid on the curve grid;
    wrong and abstained images count 0): the sigma that serves randomized smoothing best."""
    sub = curves[(curves["dataset"] == dataset) & (curves["method"] == "smoothing")]
    if sub.empty:
        raise ValueError(f"no smoothing curves for {dataset!r}")
    area = {s: float(np.trapezoid(g.sort_values("radius")["certified_accuracy"], g.sort_values("radius")["radius"]))
            for s, g in sub.groupby("sigma")}
    return float(max(area, key=area.get))


def curve_summary(curves):
    """Per (dataset, method, sigma): clean accuracy (radius 0), the certified accuracy at the
    smallest grid radius, and ``half_radius``: the largest grid radius at which the certified
    accuracy is still at least half the clean value (0 when it is below half already at the
    smallest grid radius).

    Examples::

        >>> import pandas as pd
        >>> from vqdbook.experiments.radii import curve_summary
        >>> c = pd.DataFrame({"dataset": "mnist", "method": "prd", "sigma": 0.1, "n": 4,
        ...                   "radius": [0.0, 0.01, 0.02, 0.04], "certified_accuracy": [1.0, 0.75, 0.5, 0.25]})
        >>> curve_summary(c)[["clean", "at_smallest", "half_radius"]].values.tolist()
        [[1.0, 0.75, 0.02]]
    """
    import pandas as pd

    rows = []
    for (ds, method, sigma), g in curves.groupby(["dataset", "method", "sigma"], sort=False):
        g = g.sort_values("radius")
        clean = float(g["certified_accuracy"].iloc[0])
        pos = g[g["radius"] > 0]
        ok = pos[pos["certified_accuracy"] >= 0.5 * clean] if clean > 0 else pos.iloc[:0]
        rows.append({"dataset": ds, "method": method, "sigma": sigma, "n": int(g["n"].iloc[0]),
                     "clean": clean, "at_smallest": float(pos["certified_accuracy"].iloc[0]),
                     "half_radius": float(ok["radius"].max()) if len(ok) else 0.0})
    return pd.DataFrame(rows)


# ============================================================================================
# the estimator on problems with a known answer
# ============================================================================================

#: (problem, d, k_gmm) of the validation: the centre-vector dimensions of Section 4.2's settings
#: (RandDisc MNIST 4, pRD/swRD MNIST 16, RandDisc CIFAR-10 30, pRD/swRD CIFAR-10 120) with the
#: paper's k_gmm for that dataset and k_gmm = 1; targets are the true KLs; reps, n_samples grid.
VALIDATION = {"dims": {4: 2, 16: 2, 30: 8, 120: 8}, "targets": (0.0, 0.5, 2.0),
              "n_samples": {4: (2_000, 10_000), 16: (2_000, 10_000), 30: (2_000, 10_000), 120: (2_000,)},
              "reps": {4: 3, 16: 3, 30: 3, 120: 2}, "targets_by_d": {120: (0.0, 0.5)}}


def validation_params(problem: str, d: int, k_gmm: int, n_samples: int, mode: str, *,
                      targets=None, reps: int | None = None, n_mc: int = N_MC,
                      seed: int = 0) -> dict:
    """The key of one ``kl_validation`` record. ``problem``: ``"gaussian"`` (``N(0, S)`` vs ``N(delta, S)``,
    KL in closed form) or ``"mixture"`` (a ``k_true``-component mixture vs the same mixture moved by
    ``delta``, ``k_true`` = the paper's ``k_gmm`` for that dimension, KL by Monte Carlo with the
    true densities); ``mode``: ``"independent"`` or ``"crn"`` (the ``q`` samples are the ``p``
    samples moved by ``delta``)."""
    if problem not in ("gaussian", "mixture"):
        raise ValueError(f"problem must be 'gaussian' or 'mixture', got {problem!r}")
    if mode not in ("independent", "crn"):
        raise ValueError(f"mode must be 'independent' or 'crn', got {mode!r}")
    return {"problem": problem, "d": check_int(d, "d", 1), "k_gmm": check_int(k_gmm, "k_gmm", 1),
            "n_samples": check_int(n_samples, "n_samples", 2), "mode": mode,
            "targets": [float(t) for t in (VALIDATION["targets_by_d"].get(d, VALIDATION["targets"])
                                           if targets is None else targets)],
            "reps": VALIDATION["reps"].get(d, 3) if reps is None else check_int(reps, "reps", 1),
            "n_mc": check_int(n_mc, "n_mc", 2), "seed": check_int(seed, "seed", 0)}


def _problem(problem: str, d: int, seed: int):
    """Weights, means, covariances of p (a Gaussian or a mixture with ``VALIDATION['dims'][d]``
    well separated components of random covariance) and the unit shift direction."""
    rng = np.random.default_rng(derive_seed("kl-validation", problem, d, seed) % (2 ** 32))
    k = 1 if problem == "gaussian" else VALIDATION["dims"].get(d, 2)
    covs = []
    for _ in range(k):
        A = rng.normal(size=(d, d))
        covs.append(A @ A.T / d + 0.5 * np.eye(d))
    means = rng.normal(size=(k, d)) * (0.0 if k == 1 else 4.0)
    w = rng.dirichlet(np.full(k, 5.0)) if k > 1 else np.ones(1)
    direction = rng.normal(size=d)
    return w, means, np.array(covs), direction / np.linalg.norm(direction)


def _mixture_logpdf(u, w, means, covs):
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    comps = [np.log(w[j]) + multivariate_normal(means[j], covs[j]).logpdf(u) for j in range(len(w))]
    return logsumexp(np.stack(comps), axis=0)


def _sample(rng, n, w, means, covs):
    z = rng.choice(len(w), size=n, p=w)
    out = np.empty((n, means.shape[1]))
    for j in range(len(w)):
        idx = np.flatnonzero(z == j)
        out[idx] = rng.multivariate_normal(means[j], covs[j], size=len(idx))
    return out


def _true_kl(problem, w, means, covs, delta, rng):
    """The known answer: closed form for one Gaussian, 200,000-draw Monte Carlo with the true
    densities for a mixture (its standard error is stored beside it)."""
    if problem == "gaussian":
        return kl_gaussians(means[0], covs[0], means[0] + delta, covs[0]), 0.0
    u = _sample(rng, 200_000, w, means, covs)
    diff = _mixture_logpdf(u, w, means, covs) - _mixture_logpdf(u - delta, w, means, covs)
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


def run_validation(problem, d, k_gmm, n_samples, mode, targets, reps, n_mc, seed) -> dict:
    """:func:`vqdbook.kl.kl_gmm` against the known KL (see :func:`validation_params`): per target,
    the true KL, the ``reps`` estimates, their mean bias and standard deviation, and the seconds."""
    t0 = time.time()
    w, means, covs, direction = _problem(problem, d, seed)
    # the shift along `direction` whose Gaussian KL (under the average covariance) is the target
    S = np.einsum("j,jab->ab", w, covs)
    unit = 0.5 * direction @ np.linalg.solve(S, direction)
    rng = np.random.default_rng(derive_seed("kl-validation-draws", problem, d, k_gmm, n_samples, mode, seed)
                                % (2 ** 32))
    out = []
    for target in targets:
        delta = direction * math.sqrt(target / unit)
        truth, truth_se = _true_kl(problem, w, means, covs, delta, rng)
        est = []
        for _ in range(reps):
            P = _sample(rng, n_samples, w, means, covs)
            Q = P + delta if mode == "crn" else _sample(rng, n_samples, w, means, covs) + delta
            est.append(kl_gmm(P, Q, k_gmm, n_mc, 0, warm_start=mode == "crn"))
        est = np.array(est)
        out.append({"target": target, "true_kl": truth, "true_kl_se": truth_se, "estimates": est.tolist(),
                    "bias": float(est.mean() - truth), "std": float(est.std(ddof=1)) if reps > 1 else 0.0})
    return {"points": out, "seconds": round(time.time() - t0, 3)}


def _validation_configs():
    for d, k_paper in VALIDATION["dims"].items():
        for problem in ("gaussian", "mixture"):
            for k_gmm in sorted({1, k_paper}):
                if d >= 120 and problem == "gaussian" and k_gmm > 1:
                    continue          # minutes per fit: in 120 dimensions only the mixture gets the paper's k_gmm
                for n in VALIDATION["n_samples"][d]:
                    if d >= 30 and k_gmm > 1 and n > 2_000:
                        continue      # 8 components in 30 dimensions from 10,000 points: minutes per fit
                    for mode in ("independent", "crn"):
                        if n >= k_gmm * (d + 1):
                            yield problem, d, k_gmm, n, mode


def validation_frame(*, root=None, load_only: bool = True, progress: bool = False):
    """The estimator's bias and spread on the known problems, one row per (problem, d, k_gmm,
    n_samples, mode, target): true KL, mean estimate, bias, standard deviation over reps, reps."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    for cfg in tqdm(list(_validation_configs()), desc="kl validation", disable=not progress):
        params = validation_params(*cfg)
        rec = load_record("kl_validation", params, root=root) if load_only else \
            load_or_run("kl_validation", params, run_validation, root=root)
        if rec is None:
            continue
        for pt in rec["result"]["points"]:
            rows.append({"problem": cfg[0], "d": cfg[1], "k_gmm": cfg[2], "n_samples": cfg[3], "mode": cfg[4],
                         "true_kl": pt["true_kl"], "mean_estimate": float(np.mean(pt["estimates"])),
                         "bias": pt["bias"], "std": pt["std"], "reps": len(pt["estimates"])})
    return pd.DataFrame(rows)


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The ``certified_radius``, ``smoothing`` and ``kl_validation`` records the book renders."""
    cells = [("certified_radius", radius_params(ds, m, i, seed=seed)) for ds in N_IMAGES for m in paper.QUANTIZERS
             for i in range(N_IMAGES[ds])]
    cells += [("smoothing", smoothing_params(ds, mult * _sigma(ds), seed=seed)) for ds in N_SMOOTHING
              for mult in SMOOTHING_SIGMAS[ds]]
    cells += [("smoothing_art", smoothing_params(ds, mult * _sigma(ds), seed=seed)) for ds in ART_SIGMAS
              for mult in ART_SIGMAS[ds]]
    cells += [("kl_validation", validation_params(*cfg)) for cfg in _validation_configs()]
    return cells


def record_status(seed: int = 0, *, root=None):
    """Which of the records the chapter renders (:func:`chapter_cells`) are stored: one row per
    group (``kind``; ``group``: dataset and method for ``certified_radius``, dataset for the
    smoothing kinds, the dimension for ``kl_validation``) with ``expected``, ``present``, ``missing``.

    Examples::

        >>> from vqdbook.experiments.radii import record_status
        >>> st = record_status()                                       # doctest: +SKIP
        >>> st[st["missing"] > 0]                                      # doctest: +SKIP
    """
    import pandas as pd

    counts: dict = {}
    for kind, p in chapter_cells(seed):
        if kind == "certified_radius":
            group = f"{paper.DATASET_LABELS[p['dataset']]} {paper.METHOD_LABELS[p['method']]}"
        elif kind == "kl_validation":
            group = f"d = {p['d']}"
        else:
            group = paper.DATASET_LABELS[p["dataset"]]
        c = counts.setdefault((kind, group), [0, 0])
        c[0] += 1
        c[1] += load_record(kind, p, root=root) is not None
    rows = [{"kind": k, "group": g, "expected": e, "present": n, "missing": e - n} for (k, g), (e, n) in counts.items()]
    return pd.DataFrame(rows, columns=["kind", "group", "expected", "present", "missing"])


# ============================================================================================
# the second term on a case computed exactly
# ============================================================================================

#: The small case of :func:`second_term_case`: pixel values of a 1 x 8 image, RandDisc with two fixed
#: centres (Lemma 1's second term conditions on the codebook), assignment draws per centre set.
SECOND_TERM_CASE = {"pixels": (0.2, 0.3, 0.4, 0.45, 0.47, 0.49, 0.5, 0.51), "centers": (0.25, 0.75),
                    "n_draws": N_DRAWS}


def second_term_case(eps_list=None, *, seed: int = 0):
    """The second term of eq. (7) on a case with a known answer, exact against estimated, per radius.

    RandDisc (``s = 1``) on the 8 pixels of :data:`SECOND_TERM_CASE` with the codebook fixed at two
    centres: pixel ``v`` is assigned to the lower centre with probability
    ``Phi((c0/2 + c1/2 - v) / tau)`` (eq. (1), ``tau`` = 4/255), so the per-pixel KL between ``x``
    and ``x' = x + eps`` is a closed form (:func:`vqdbook.kl.second_term_exact_1d`). Beside it:
    :func:`vqdbook.kl.second_term` with the book's ``n_draws``, the number of pixels whose
    histograms differ, the pixels that flip (assignment probability changed by more than 0.9), and
    ``cap * flips`` with ``cap = log(2 n_draws + 1)``. Seconds to compute; no record.
    """
    import pandas as pd

    from ..kl import second_term, second_term_exact_1d

    case = SECOND_TERM_CASE
    tau = paper.NOISE["mnist"]["tau"]
    q = QuantizerSpec("randdisc", 1, 2, paper.NOISE["mnist"]["sigma"], tau)
    px = torch.tensor(case["pixels"], dtype=torch.float32).reshape(1, 1, 1, -1)
    centers = torch.tensor(case["centers"], dtype=torch.float32).reshape(1, 2, 1)
    mid = float(np.mean(case["centers"]))
    eps_list = radius_grid(tau, -6, 4) if eps_list is None else eps_list
    rows = []
    for e in eps_list:
        xa = (px + e).clamp(0, 1)
        exact = second_term_exact_1d(px.flatten(), xa.flatten(), case["centers"], tau)
        st = second_term(px, xa, q, centers, n_draws=case["n_draws"], generator=torch.Generator().manual_seed(seed))
        from scipy.stats import norm

        a = norm.cdf((mid - px.flatten().numpy()) / tau)
        a2 = norm.cdf((mid - xa.flatten().numpy()) / tau)
        flips = int(np.sum(np.abs(a - a2) > 0.9))
        rows.append({"eps": float(e), "exact": float(exact.sum()), "estimate": st["value"],
                     "n_changed": int(st["n_changed"]), "flips": flips, "cap": st["cap"],
                     "cap_times_flips": st["cap"] * flips, "largest_exact_pixel": float(exact.max())})
    return pd.DataFrame(rows)
