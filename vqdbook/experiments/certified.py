"""Certified accuracy by Theorem 1 (eq. (5)) from the Figure 6 KL estimates, as ``certified`` records.

One record per (dataset, method, ε): per image, the margin of the clean image's vote frequencies
(:func:`vqdbook.certify.vote_frequencies`), the KL of the matching ``kl`` record
(:mod:`vqdbook.experiments.fig6`), delta, Theorem 1's bound and whether the image is certified.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import paper
from ..certify import certified_radius_delta, is_certified, margin, theorem1_bound, theorem1_delta, vote_frequencies
from ..data import load_dataset, spec
from ..kl import N_MC, derive_seed
from ..quantizers import QuantizerSpec
from ..results import load_or_run, load_record
from ..validation import check_int, check_real
from .adversarial import classifier
from .fig6 import _OVERRIDES, BOOK, N_DRAWS, N_IMAGES, N_SAMPLES, N_U, kl_params, run_kl

__all__ = ["T_VOTES", "T_MARGIN", "ALPHA", "run_certified", "certified_frame", "chapter_cells"]

#: Votes of the majority (Theorem 1's t), clean draws for the margin, and the confidence 1 - alpha.
T_VOTES, T_MARGIN, ALPHA = 1000, 200, 0.05


def _params(name, method, eps, n_images, n_samples, k_gmm, n_mc, seed, t, t_margin, alpha, kl_terms, overrides):
    kp = kl_params(name, method, eps, n_images, n_samples, k_gmm, n_mc, seed,
                   overrides.get("s"), overrides.get("k"), overrides.get("sigma"), overrides.get("tau"),
                   overrides.get("beta"), kl_terms == "both", overrides.get("n_u", N_U),
                   overrides.get("n_draws", N_DRAWS), overrides.get("arch"), overrides.get("variant"))
    return kp, {**kp, "t": t, "t_margin": t_margin, "alpha": alpha, "kl_terms": kl_terms}


def run_certified(dataset: str, eps_list=None, n_images: int = N_IMAGES, n_samples: int = N_SAMPLES,
                  k_gmm: int | None = None, methods=paper.QUANTIZERS, seed: int = 0, *, t: int = T_VOTES,
                  t_margin: int = T_MARGIN, alpha: float = ALPHA, kl_terms: str = "both",
                  n_mc: int = N_MC, progress: bool = True, root=None, load_only: bool = False,
                  **overrides) -> list[dict]:
    """Certified accuracy by Theorem 1 (eq. (5)) as a function of eps, per method.

    For each method and eps: the KL per image from the ``"kl"`` record (first term, eq. (9),
    plus -- with ``kl_terms="both"`` -- the second term of eq. (7)/(8)); the margin of the clean
    image's vote frequencies over ``t_margin`` quantizer draws; and
    :func:`vqdbook.certify.is_certified` with ``t`` votes at confidence ``1 - alpha``. One
    ``"certified"`` record per (method, eps); ``result["certified_accuracy"]`` is the fraction
    certified. With ``load_only`` only stored records are returned (missing points are left out).
    """
    from tqdm.auto import tqdm

    name = spec(dataset).name
    if name not in paper.FIG6:
        raise ValueError(f"dataset must be one of {sorted(paper.FIG6)} (Section 4.2), got {dataset!r}")
    if kl_terms not in ("both", "first"):
        raise ValueError(f"kl_terms must be 'both' or 'first', got {kl_terms!r}")
    t = check_int(t, "t", 1)
    t_margin = check_int(t_margin, "t_margin", 1)
    alpha = check_real(alpha, "alpha", low=0.0, high=1.0)
    bad = set(overrides) - _OVERRIDES
    if bad:
        raise TypeError(f"unexpected keyword argument(s) {sorted(bad)}")
    eps_list = paper.FIG6[name]["eps"] if eps_list is None else eps_list
    margins_cache: dict = {}
    records = []
    for method in methods:
        cache: dict = {}
        for eps in tqdm(eps_list, desc=f"certified {name} {method}", disable=not progress):
            kp, params = _params(name, method, eps, n_images, n_samples, k_gmm, n_mc, seed, t, t_margin, alpha,
                                 kl_terms, overrides)

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
                rec = load_record("certified", params, root=root)
                if rec is not None:
                    records.append(rec)
                continue
            records.append(load_or_run("certified", params, fn, root=root))
    return records


def _clean_votes(p) -> tuple[np.ndarray, np.ndarray]:
    """Vote frequencies ``(n_images, m)`` of ``f(Q(x))`` on the clean images, and the labels."""
    x, y = load_dataset(p["dataset"], "test", p["n_images"], seed=p["seed"])
    net = classifier(p["dataset"], p["arch"], p["variant"], "cpu")
    q = QuantizerSpec(p["method"], p["s"], p["k"], p["sigma"], p["tau"], p["beta"])
    probs = []
    for i in range(len(y)):
        g = torch.Generator().manual_seed(derive_seed("votes", p["dataset"], p["method"], p["seed"], i))
        probs.append(vote_frequencies(net, x[i], q, p["t_margin"], g).numpy())
    return np.stack(probs), y.numpy()


def certified_frame(records: list[dict]):
    """Certified-accuracy curves (Theorem 1) as a DataFrame: one row per (method, eps)."""
    import pandas as pd

    rows = []
    for r in records:
        p, res = r["params"], r["result"]
        rows.append({"dataset": p["dataset"], "method": paper.METHOD_LABELS[p["method"]], "eps": p["eps"],
                     "n_images": p["n_images"], "t": p["t"], "alpha": p["alpha"], "kl_terms": p["kl_terms"],
                     "certified_accuracy": res["certified_accuracy"],
                     "clean_vote_accuracy": float(np.mean(res["clean_vote_correct"])),
                     "median_kl": float(np.median(res["kl"])), "median_margin": float(np.median(res["margin"]))})
    return pd.DataFrame(rows).sort_values(["dataset", "method", "eps"]).reset_index(drop=True)


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The ``certified`` records the book renders at its settings (:data:`vqdbook.experiments.fig6.BOOK`)."""
    return [("certified", _params(name, m, e, N_IMAGES, N_SAMPLES, None, N_MC, seed, T_VOTES, T_MARGIN, ALPHA,
                                  "both", {})[1])
            for name, b in BOOK.items() for m in paper.QUANTIZERS for e in b["eps"]]
