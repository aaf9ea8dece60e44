"""Figure 8 (Sections 3.5 and 4.4): pRD and swRD with the classifier trained on quantized images
(t-pRD, t-swRD), under the paper's oblivious protocol and under adaptive attacks.

For each quantizer Q of Figure 8 (:func:`vqdbook.models.tquant_spec`) two defended classifiers are
compared: f∘Q with the naturally trained f (pRD, swRD) and f̂∘Q with f̂ trained on Q's outputs
(t-pRD, t-swRD: the weights variant ``t-prd`` / ``t-swrd``). Under the oblivious protocol the
attacked classifier is the one the defense uses: PGD on f̂, then f̂(Q(x′)) (``robust_accuracy``
records, :mod:`vqdbook.experiments.adversarial`). Under the adaptive protocol the attacks of
:mod:`vqdbook.experiments.adaptive` attack f̂∘Q itself (``adaptive`` records). What training
changes is shown by the vote margins of Theorem 1 on clean images (``tquant_margins`` records).

Only quantizers whose f̂ is trained appear (:func:`fig8_rows`): the comparison needs both classifiers.

Image counts (sized for 2 shared CPU cores, about 40 CPU-minutes for every record of the chapter):
one oblivious point costs a PGD run on f̂ (about 0.13 CPU-s per image for the MNIST CNN's PGD40 and
for the ResNet-20's PGD20), and there are 18 such runs on MNIST (two f̂, six radii on pixels, three
on normalized inputs) and 4 on CIFAR-10. f's points are the tables' records on :data:`N` = 1,000
images (reused, no new attack); f̂'s run on the first :data:`N_TQUANT` images of the same nested,
class-stratified subset. The adaptive cells of f̂ (:data:`ADAPTIVE_N`) are smaller than f's
(:data:`vqdbook.experiments.adaptive.HEADLINE`): BPDA+EOT APGD-CE quantizes each image 400 times.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import paper
from ..certify import margin, vote_frequencies
from ..data import load_dataset, spec
from ..kl import derive_seed
from ..metrics import wilson_interval
from ..models import DEFAULT_ARCH, TQUANT_VARIANTS, tquant_spec
from ..results import load_or_run, load_record
from . import adaptive
from .adversarial import model_available, robust_accuracy_record
from .reproduction import VARIANT_SETTINGS

__all__ = ["N", "N_TQUANT", "ADAPTIVE_N", "EPS_NORMALIZED", "point_n", "eps_grid", "N_MARGIN", "T_MARGIN",
           "READINGS", "fig8_rows", "oblivious_params", "run_fig8", "fig8_frame", "fig8_gains",
           "run_margins", "margins_frame", "run_adaptive_tquant", "gao_frame", "chapter_cells"]

#: Test images per oblivious Figure 8 point of the natural f (the n of the tables' CPU records, reused).
N = 1000
#: Test images per oblivious Figure 8 point of f̂ (the first of f's nested subset; see the module docstring).
N_TQUANT = {"mnist": 500, "cifar10": 500}
#: Test images per adaptive cell of f̂, every attack of the suite (f's cells are the adaptive chapter's, on
#: ``adaptive.headline_n`` images: more for most attacks, Square on the same prefix as these).
ADAPTIVE_N = {"mnist": 100, "cifar10": 50}
#: Clean test images and quantizer draws per image for the vote margins.
N_MARGIN, T_MARGIN = 200, 100
#: ε readings per dataset (MNIST: both, see chapter 3; CIFAR-10: pixels).
READINGS = {"mnist": ("pixels", "normalized"), "cifar10": ("pixels",)}
#: MNIST's radii under the normalized reading: the large ones of Table 1, where chapter 3 ran that
#: reading (below 0.16 the pixel radius ε·σ is under 0.05 and every classifier is near its clean accuracy).
EPS_NORMALIZED = VARIANT_SETTINGS["table1"]["eps"]
_ATTACK = {"pixels": "pgd-oblivious", "normalized": "pgd-oblivious-normeps"}


def fig8_rows(dataset: str) -> list[dict]:
    """The defended classifiers of Figure 8 for ``dataset``: (method, model, variant, defense, label), f∘Q and
    f̂∘Q for pRD and swRD. A quantizer whose f̂ is not trained (its weights absent) is left out, f's row too."""
    name = spec(dataset).name
    rows = []
    for m in ("prd", "swrd"):
        if not model_available(name, TQUANT_VARIANTS[m]):
            continue
        q = tquant_spec(name, m)
        for model, variant in (("f", None), ("f̂", TQUANT_VARIANTS[m])):
            rows.append({"method": m, "model": model, "variant": variant, "defense": q.params(),
                         "label": ("t-" if variant else "") + q.name + f" (s={q.s}, k={q.k})"})
    return rows


def eps_grid(name: str, reading: str = "pixels") -> list[float]:
    """The radii (on [0, 1], as read) of Figure 8 for ``name``: its table's grid on pixels, :data:`EPS_NORMALIZED`
    on normalized inputs."""
    if reading == "normalized":
        return list(EPS_NORMALIZED)
    table = paper.TABLE_DATASETS[name]
    return [e / paper.UNITS[name] for e in paper.TABLES[table][1]]


def point_n(name: str, row: dict) -> int:
    """Images behind one oblivious point: :data:`N` for f (the tables' records), :data:`N_TQUANT` for f̂."""
    return N if row["variant"] is None else N_TQUANT[name]


def oblivious_params(name, row, eps, reading, n=None, seed=0) -> dict:
    """The ``robust_accuracy`` key of one oblivious Figure 8 point (the tables' key for f's rows);
    ``n`` defaults to :func:`point_n`."""
    n = point_n(name, row) if n is None else n
    return dict(dataset=name, arch=DEFAULT_ARCH[name], variant=row["variant"], defense=row["defense"], eps=eps, n=n,
                seed=seed, votes=1, attack=_ATTACK[reading])


def run_fig8(datasets=("mnist", "cifar10"), n: int | None = None, seed: int = 0, device: str = "cpu",
             progress: bool = True) -> list[dict]:
    """The oblivious Figure 8 records: every row of :func:`fig8_rows` at every ε of :func:`eps_grid`, under
    each ε reading of :data:`READINGS` (f's records are the tables' own); ``n`` (default :func:`point_n`)."""
    from tqdm.auto import tqdm

    jobs = [(spec(d).name, r, e, reading) for d in datasets for reading in READINGS[spec(d).name]
            for e in eps_grid(spec(d).name, reading) for r in fig8_rows(d)]
    return [robust_accuracy_record(**oblivious_params(name, r, e, reading, n, seed), device=device)
            for name, r, e, reading in tqdm(jobs, desc="fig8", disable=not progress)]


def fig8_frame(n: int | None = None, seed: int = 0):
    """Figure 8 from stored records: one row per (dataset, reading, defended classifier, ε, threat).

    ``threat`` is ``oblivious`` (the paper's protocol, on the classifier the defense uses) or
    ``adaptive worst case`` (the per-image worst case over the adaptive records of that cell, at the
    largest n it was run at). ``n`` defaults to :func:`point_n` per row. Columns: ``dataset, eps_reading,
    method, model, s, k, label, eps, threat, n, accuracy, ci_lo, ci_hi``.
    """
    import pandas as pd

    out = []
    for name in READINGS:
        for reading in READINGS[name]:
            for r in fig8_rows(name):
                for e in eps_grid(name, reading):
                    rec = load_record("robust_accuracy", oblivious_params(name, r, e, reading, n, seed))
                    if rec is None:
                        continue
                    res = rec["result"]
                    out.append({"dataset": name, "eps_reading": reading, "method": r["method"], "model": r["model"],
                                "s": r["defense"]["s"], "k": r["defense"]["k"], "label": r["label"], "eps": e,
                                "threat": "oblivious", "n": res["n"], "accuracy": res["accuracy"],
                                "ci_lo": res["ci95"][0], "ci_hi": res["ci95"][1]})
    adv = adaptive.adaptive_frame()
    if not adv.empty:
        worst = adv[adv["attack"] == "worst-case"]
        for name in READINGS:
            for r in fig8_rows(name):
                variant = r["variant"]
                sub = worst[(worst["dataset"] == name) & (worst["method"] == r["method"])
                            & (worst["s"] == r["defense"]["s"]) & (worst["k"] == r["defense"]["k"])]
                sub = sub[sub["variant"].isna()] if variant is None else sub[sub["variant"] == variant]
                for _, w in sub.iterrows():
                    out.append({"dataset": name, "eps_reading": w["eps_reading"], "method": r["method"],
                                "model": r["model"], "s": r["defense"]["s"], "k": r["defense"]["k"],
                                "label": r["label"], "eps": w["eps"],
                                "threat": "adaptive worst case", "n": w["n"], "accuracy": w["accuracy"],
                                "ci_lo": w["ci_lo"], "ci_hi": w["ci_hi"]})
    return pd.DataFrame(out)


def fig8_gains(frame=None):
    """Figure 8's comparison as numbers: per (dataset, ε reading, quantizer, ε), the oblivious accuracy of
    f∘Q and of f̂∘Q (%, with their n and 95% intervals) and the gain of f̂ in points; ``separated`` says
    whether the two intervals do not overlap. From :func:`fig8_frame` (default: the stored records)."""
    import pandas as pd

    frame = fig8_frame() if frame is None else frame
    out = []
    if frame.empty:
        return pd.DataFrame(out)
    obl = frame[frame["threat"] == "oblivious"]
    for (name, reading, _, eps), g in obl.groupby(["dataset", "eps_reading", "method", "eps"], sort=False):
        f, fh = g[g["model"] == "f"], g[g["model"] == "f̂"]
        if f.empty or fh.empty:
            continue
        f, fh = f.iloc[0], fh.iloc[0]
        out.append({"dataset": name, "ε reading": reading, "ε": paper.eps_label(name, eps), "eps": eps,
                    "quantizer": f["label"], "f∘Q (%)": round(100 * f["accuracy"], 1),
                    "f∘Q 95% CI": f"[{100 * f['ci_lo']:.1f}, {100 * f['ci_hi']:.1f}]", "n (f)": int(f["n"]),
                    "f̂∘Q (%)": round(100 * fh["accuracy"], 1),
                    "f̂∘Q 95% CI": f"[{100 * fh['ci_lo']:.1f}, {100 * fh['ci_hi']:.1f}]", "n (f̂)": int(fh["n"]),
                    "gain (points)": round(100 * (fh["accuracy"] - f["accuracy"]), 1),
                    "separated": bool(fh["ci_lo"] > f["ci_hi"] or f["ci_lo"] > fh["ci_hi"])})
    return pd.DataFrame(out)


def run_adaptive_tquant(dataset: str, *, seed: int = 0, device: str = "cpu", progress: bool = True) -> list[dict]:
    """The adaptive headline cell (:data:`vqdbook.experiments.adaptive.HEADLINE`: its ε and reading) for the
    t-models on :data:`ADAPTIVE_N` images: every attack of :func:`vqdbook.experiments.adaptive.attack_suite`
    on f̂∘Q, Square and APGD-DLR included (f∘Q's are the adaptive chapter's own)."""
    name = spec(dataset).name
    h = adaptive.HEADLINE[name]
    suite = adaptive.attack_suite(name)
    out = []
    for r in fig8_rows(name):
        if r["variant"] is None:
            continue
        for key in suite:
            out.append(adaptive.adaptive_record(name, r["defense"], h["eps"], suite[key], ADAPTIVE_N[name], seed,
                                                variant=r["variant"], eps_reading=h["eps_reading"], device=device,
                                                progress=progress))
    return out


def _cell_runs(records, name, row, h, seed):
    """(attack key, attack params as JSON, correct_bits) of every adaptive record of one headline cell of one
    classifier."""
    import json

    from ..attacks import AttackSpec

    out = []
    for rec in records:
        p = rec["params"]
        if (p["dataset"] == name and p["variant"] == row["variant"] and p["defense"] == row["defense"]
                and p["eps_reading"] == h["eps_reading"] and abs(p["eps"] - h["eps"]) < 1e-8 and p["seed"] == seed):
            out.append((adaptive.attack_key(AttackSpec.from_params(p["attack"])),
                        json.dumps(p["attack"], sort_keys=True), rec["result"]["correct_bits"]))
    return out


def _scores(runs, m):
    """Oblivious accuracy and per-image worst case over ``runs`` on the first ``m`` images (an attack run on
    fewer images counts for those it saw, as :func:`vqdbook.experiments.adaptive.worst_case`)."""
    robust = adaptive.robust_per_image([bits for _, _, bits in runs], m)
    obl = [bits for key, _, bits in runs if key == "oblivious-pgd" and len(bits) >= m]
    return (obl[0][:m].count("1") / m if obl else np.nan), sum(robust) / m


def gao_frame(seed: int = 0):
    """Gao et al. (2022)'s claim tested at the headline cells: is f̂∘Q (trained to be invariant to Q)
    easier to attack through Q than f∘Q? Per quantizer and classifier, at the largest n run: how many
    attack records the worst case is over, the oblivious accuracy, the adaptive worst case (both %, the same
    images) and the drop between them; then the like-for-like comparison: the same on the images both
    classifiers were attacked on (the first ``n paired`` of the nested subset: f's cells are larger than
    f̂'s) under the attacks (with their budgets) both were attacked with (``attacks, paired``)."""
    import pandas as pd

    from ..results import load_records

    records = load_records("adaptive")
    out = []
    for name, h in adaptive.HEADLINE.items():
        eps = paper.eps_label(name, h["eps"]) + (" (normalized)" if h["eps_reading"] == "normalized" else "")
        rows = fig8_rows(name)
        runs = {id(r): _cell_runs(records, name, r, h, seed) for r in rows}
        sizes = {id(r): max((len(b) for _, _, b in runs[id(r)]), default=0) for r in rows}
        for r in rows:
            n = sizes[id(r)]
            if not n:
                continue
            mate = [x for x in rows if x["method"] == r["method"] and x is not r]
            m = min(n, sizes[id(mate[0])]) if mate and sizes[id(mate[0])] else 0
            obl, worst = _scores(runs[id(r)], n)
            line = {"dataset": name, "ε": eps, "defense": r["label"], "classifier": r["model"], "n": n,
                    "attacks": len(runs[id(r)]), "oblivious (%)": round(100 * obl, 1),
                    "adaptive worst case (%)": round(100 * worst, 1), "drop (points)": round(100 * (obl - worst), 1),
                    "n paired": m or None}
            common = {a for _, a, _ in runs[id(r)]} & {a for _, a, _ in runs[id(mate[0])]} if m else set()
            longest = {}                              # one run per attack (its largest n): as f̂ had
            for run in runs[id(r)]:
                if run[1] in common and len(run[2]) > len(longest.get(run[1], (None, None, ""))[2]):
                    longest[run[1]] = run
            same = list(longest.values())
            po, pw = _scores(same, m) if same else (np.nan, np.nan)
            line["attacks, paired"] = len(same) or None
            lo, hi = wilson_interval(round(pw * m), m) if same else (np.nan, np.nan)
            line.update({"oblivious, paired (%)": round(100 * po, 1), "worst case, paired (%)": round(100 * pw, 1),
                         "worst case, paired 95% CI": f"[{100 * lo:.1f}, {100 * hi:.1f}]" if same else None,
                         "drop, paired (points)": round(100 * (po - pw), 1)})
            out.append(line)
    frame = pd.DataFrame(out)
    if not frame.empty:
        frame[["n paired", "attacks, paired"]] = frame[["n paired", "attacks, paired"]].astype("Int64")
    return frame


def _margins(dataset, method, variant, n, t, seed) -> dict:
    from .adversarial import classifier

    x, y = load_dataset(dataset, "test", n, seed=seed)
    net = classifier(dataset, None, variant)
    q = tquant_spec(dataset, method)
    probs = []
    for i in range(n):
        g = torch.Generator().manual_seed(derive_seed("tquant-votes", dataset, method, seed, i))
        probs.append(vote_frequencies(net, x[i], q, t, g).numpy())
    probs = np.stack(probs)
    mg = margin(probs, y.numpy())
    return {"margin": mg.tolist(), "vote_correct": (probs.argmax(1) == y.numpy()).tolist(),
            "vote_accuracy": float((probs.argmax(1) == y.numpy()).mean()), "median_margin": float(np.median(mg))}


def run_margins(datasets=("mnist", "cifar10"), n: int = N_MARGIN, t: int = T_MARGIN, seed: int = 0) -> list[dict]:
    """Theorem 1's margins on clean images for f∘Q and f̂∘Q (``tquant_margins`` records): the class
    frequencies of ``t`` quantizer draws per image (:func:`vqdbook.certify.vote_frequencies`)."""
    out = []
    for d in datasets:
        name = spec(d).name
        for r in fig8_rows(name):
            params = dict(dataset=name, method=r["method"], variant=r["variant"], n=n, t=t, seed=seed)
            out.append(load_or_run("tquant_margins", params, lambda **p: _margins(**p)))
    return out


def margins_frame(n: int = N_MARGIN, t: int = T_MARGIN, seed: int = 0):
    """The stored margin records: per dataset and defended classifier, the majority vote's clean
    accuracy, the margin's mean and quartiles, and the largest KL Theorem 1 tolerates for the median image
    (½ margin², 0 when the median margin is negative: the vote is wrong, nothing is certified)."""
    import pandas as pd

    out = []
    for name in READINGS:
        for r in fig8_rows(name):
            rec = load_record("tquant_margins", dict(dataset=name, method=r["method"], variant=r["variant"], n=n,
                                                     t=t, seed=seed))
            if rec is None:
                continue
            mg = np.array(rec["result"]["margin"])
            out.append({"dataset": name, "defense": r["label"], "classifier": r["model"], "n": n, "votes": t,
                        "vote accuracy (%)": round(100 * rec["result"]["vote_accuracy"], 1),
                        "margin mean": round(float(mg.mean()), 3),
                        "margin q25": round(float(np.quantile(mg, 0.25)), 3),
                        "margin median": round(float(np.median(mg)), 3),
                        "margin q75": round(float(np.quantile(mg, 0.75)), 3),
                        "½ median margin²": round(0.5 * max(float(np.median(mg)), 0.0) ** 2, 4)})
    return pd.DataFrame(out)


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The records the Figure 8 chapter renders: the oblivious points of f and f̂ (f's are the tables'),
    f̂'s adaptive headline cells and the margins."""
    cells = []
    for name in READINGS:
        rows = fig8_rows(name)
        for reading in READINGS[name]:
            cells += [("robust_accuracy", oblivious_params(name, r, e, reading, None, seed))
                      for r in rows for e in eps_grid(name, reading)]
        h = adaptive.HEADLINE[name]
        suite = adaptive.attack_suite(name)
        cells += [("adaptive", adaptive.adaptive_params(name, r["defense"], h["eps"], suite[k], ADAPTIVE_N[name],
                                                        seed, r["variant"], h["eps_reading"]))
                  for r in rows if r["variant"] is not None for k in suite]
        cells += [("tquant_margins", dict(dataset=name, method=r["method"], variant=r["variant"], n=N_MARGIN,
                                          t=T_MARGIN, seed=seed)) for r in rows]
    return cells
