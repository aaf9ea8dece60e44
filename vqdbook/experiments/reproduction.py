"""The reproduction study: one change to the paper's protocol at a time, on the quantizer rows of
Tables 1 and 2 at the large radii, where our numbers and the paper's part ways.

Each cell is a ``robust_accuracy`` record (:func:`vqdbook.experiments.adversarial.robust_accuracy_record`)
whose parameters differ from the table cell's by the variant's change only.
"""

from __future__ import annotations

from ..results import load_record
from .adversarial import BPDA_EOT_SAMPLES, model_available, robust_accuracy_record
from .tables import table_cell_params, table_spec

__all__ = ["VARIANTS", "VARIANT_SETTINGS", "variant_params", "run_variants", "variant_frame", "variant_summary",
           "closest_variant", "chapter_cells"]

#: The reproduction study: each variant changes *one* thing of the paper's protocol, on the
#: quantizer rows of Tables 1 and 2. name -> (description, changes to the record's parameters;
#: ``defense`` entries are merged into the quantizer's dict).
VARIANTS = {
    "protocol": ("the paper's protocol as written: PGD on f, ε on [0, 1] pixels", {}),
    "normeps": ("ε on normalized inputs (x − μ)/σ, i.e. ε·σ on pixels", {"attack": "pgd-oblivious-normeps"}),
    "whitebox": (f"white-box: PGD through f∘Q with BPDA and EOT ({BPDA_EOT_SAMPLES} draws per step)",
                 {"attack": "pgd-bpda-eot", "eot_samples": BPDA_EOT_SAMPLES}),
    "resnet18": ("f is the paper's ResNet-18 architecture (trained here on CPU, see its card)",
                 {"arch": "resnet18"}),
    "kmeans-random": ("k-means seeded with k random patches instead of k-means++", {"defense": {"init": "random"}}),
    "kmeans-1iter": ("k-means++ seeding and a single Lloyd iteration", {"defense": {"max_iter": 1}}),
}
#: Radii (on [0, 1]) and test images of the study per table: the large radii, where we differ.
VARIANT_SETTINGS = {"table1": {"eps": (0.16, 0.24, 0.32), "n": 500},
                    "table2": {"eps": (8 / 255, 16 / 255), "n": 200}}


def variant_params(variant: str, table: str, row: dict, eps: float, n: int, seed: int = 0) -> dict:
    """Record parameters of one cell (quantizer row, ε) of ``table`` under ``variant``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    sp = table_spec(table)
    change = VARIANTS[variant][1]
    params = {**table_cell_params(sp, row, eps, n, seed, change.get("attack", "pgd-oblivious")),
              "arch": change.get("arch", sp["arch"]), "defense": {**row["defense"], **change.get("defense", {})}}
    if "eot_samples" in change:
        params["eot_samples"] = change["eot_samples"]
    return params


def _variant_available(variant, table) -> bool:
    arch = VARIANTS[variant][1].get("arch")
    return arch is None or model_available(table_spec(table)["dataset"], None, arch)


def _variant_cells(table, n):
    if table not in VARIANT_SETTINGS:
        raise ValueError(f"table must be one of {sorted(VARIANT_SETTINGS)}; got {table!r}")
    sp = table_spec(table)
    st = VARIANT_SETTINGS[table]
    n = st["n"] if n is None else n
    rows = [r for r in sp["rows"] if r["variant"] is None and r["defense"]["method"] != "none"]
    return sp, [(eps, row) for eps in st["eps"] for row in rows], n


def run_variants(table: str = "table1", variants=tuple(VARIANTS), n: int | None = None, seed: int = 0,
                 device: str = "cpu", progress: bool = True) -> list[dict]:
    """Run (or load) the reproduction study's records for ``table``: every quantizer row at the
    radii of :data:`VARIANT_SETTINGS`, once per variant of :data:`VARIANTS` (variants whose
    classifier is not trained are skipped)."""
    from tqdm.auto import tqdm

    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"variants must be names from {sorted(VARIANTS)}; got {sorted(unknown)}")
    _, cells, n = _variant_cells(table, n)
    jobs = [(v, eps, row) for v in variants if _variant_available(v, table) for eps, row in cells]
    recs = []
    for v, eps, row in tqdm(jobs, desc=f"variants {table} n={n}", disable=not progress):
        recs.append(robust_accuracy_record(**variant_params(v, table, row, eps, n, seed), device=device))
    return recs


def variant_frame(table: str = "table1", variants=tuple(VARIANTS), n: int | None = None, seed: int = 0):
    """The reproduction study from stored records: one line per quantizer row and ε, the paper's
    accuracy and ours under each variant (``None`` where the record does not exist)."""
    import pandas as pd

    sp, cells, n = _variant_cells(table, n)
    out = []
    for eps, row in cells:
        j = list(sp["eps"]).index(eps)
        d = row["defense"]
        line = {"method": row["method"], "s": d["s"], "k": d["k"], "ε (paper units)": sp["eps_paper"][j],
                "paper (%)": row["paper"][j]}
        for v in variants:
            rec = load_record("robust_accuracy", variant_params(v, table, row, eps, n, seed))
            line[v] = round(100 * rec["result"]["accuracy"], 1) if rec else None
        out.append(line)
    frame = pd.DataFrame(out)
    frame.attrs["n"] = n
    return frame


def variant_summary(frame, tolerance: float = 5.0):
    """Per variant of a :func:`variant_frame`: cells with records, how many are within
    ``tolerance`` points of the paper, and the mean gap (ours − paper) in points."""
    import pandas as pd

    out = []
    for v in [c for c in frame.columns if c in VARIANTS]:
        have = frame.dropna(subset=[v])
        gap = have[v] - have["paper (%)"]
        out.append({"variant": v, "what changes": VARIANTS[v][0], "cells": len(have),
                    f"within {tolerance:g} points": int((gap.abs() <= tolerance).sum()) if len(have) else None,
                    "mean gap (points)": round(float(gap.mean()), 1) if len(have) else None})
    return pd.DataFrame(out)


def closest_variant(table: str, seed: int = 0):
    """The row of :func:`variant_summary` for ``table`` with the most cells within 5 points of the
    paper (ties: the smallest |mean gap|), or None when no variant has records."""
    summary = variant_summary(variant_frame(table, seed=seed)).dropna(subset=["mean gap (points)"])
    if summary.empty:
        return None
    summary["|mean gap|"] = summary["mean gap (points)"].abs()
    return summary.sort_values(["within 5 points", "|mean gap|"], ascending=[False, True]).iloc[0]


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """Every record the reproduction study renders at its default image counts, as ``(kind, params)``
    (variants whose classifier is not trained are left out)."""
    cells = []
    for table in VARIANT_SETTINGS:
        _, pairs, n = _variant_cells(table, None)
        cells += [("robust_accuracy", variant_params(v, table, row, eps, n, seed))
                  for v in VARIANTS if _variant_available(v, table) for eps, row in pairs]
    return cells
