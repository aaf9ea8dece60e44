"""Figures 4, 5 (accuracy vs s, k and vs noise) and 7 (denoising) as records.

Figures 4 and 5 are grids of ``robust_accuracy`` records (the paper's oblivious protocol) over the
grids of :data:`vqdbook.paper.FIG4_GRID` / :data:`vqdbook.paper.FIG5_GRID`; Figure 7 is one
``fig7`` record per dataset with the settings of :data:`vqdbook.paper.FIG7`.
"""

from __future__ import annotations

import torch

from .. import paper
from ..data import load_dataset, spec
from ..models import DEFAULT_ARCH
from ..quantizers import QuantizerSpec
from ..results import load_or_run, load_record
from .adversarial import robust_accuracy_record

__all__ = ["DEFAULT_N", "FIG7_N", "fig4_configs", "fig5_configs", "run_fig4", "run_fig5", "figure_frame",
           "denoising_examples", "run_fig7", "fig7_frame", "chapter_cells"]

#: Test images per Figure 4 / 5 point (records and the book).
DEFAULT_N = 500
#: Test images per Figure 7 record (records and the book).
FIG7_N = 200


def fig4_configs(dataset: str) -> list[dict]:
    """Figure 4's points: every (ε, panel pRD / swRD, s, k) of the grid; s = 1 is RandDisc."""
    name = spec(dataset).name
    grid = paper.FIG4_GRID[name]
    out = []
    for eps in grid["eps"]:
        for method in ("prd", "swrd"):
            for s in grid["s"]:
                for k in grid["k"]:
                    q = QuantizerSpec.paper(name, "randdisc" if s == 1 else method, s, k)
                    out.append({"eps": eps, "panel": method, "defense": q.params()})
    return out


def fig5_configs(dataset: str) -> list[dict]:
    """Figure 5's points: every (ε, row, σ = τ) of the grid."""
    name = spec(dataset).name
    grid = paper.FIG5_GRID
    out = []
    for eps_255 in grid["eps_255"]:
        for method, s, k in grid["rows"]:
            for v in grid["noise_255"]:
                q = QuantizerSpec.paper(name, method, s, k, sigma=v / 255, tau=v / 255)
                out.append({"eps": eps_255 / 255, "noise_255": v, "defense": q.params()})
    return out


def _cell_params(name, c, n, seed) -> dict:
    return dict(dataset=name, arch=DEFAULT_ARCH[name], variant=None, defense=c["defense"], eps=c["eps"], n=n,
                seed=seed, votes=1, attack="pgd-oblivious")


def _run_configs(dataset, configs, n, seed, device, progress, desc):
    from tqdm.auto import tqdm

    name = spec(dataset).name
    recs = []
    for c in tqdm(sorted(configs, key=lambda c: c["eps"]), desc=desc, disable=not progress):
        rec = robust_accuracy_record(**_cell_params(name, c, n, seed), device=device)
        recs.append({**c, "accuracy": rec["result"]["accuracy"], "ci95": rec["result"]["ci95"]})
    return recs


def run_fig4(datasets=("mnist", "cifar10"), n: int = DEFAULT_N, seed: int = 0, device: str = "cpu", progress=True):
    """Accuracy vs window size s and codebook size k (the paper's Figure 4), as records."""
    return {d: _run_configs(d, fig4_configs(d), n, seed, device, progress, f"fig4 {d}") for d in datasets}


def run_fig5(datasets=("cifar10",), n: int = DEFAULT_N, seed: int = 0, device: str = "cpu", progress=True):
    """Accuracy vs noise σ = τ at ε = 8 and 16 (/255) (the paper's Figure 5), as records."""
    return {d: _run_configs(d, fig5_configs(d), n, seed, device, progress, f"fig5 {d}") for d in datasets}


def figure_frame(which: str, dataset: str, n: int = DEFAULT_N, seed: int = 0):
    """Stored records of Figure 4 or 5 as a DataFrame (missing ones are left out and counted in
    ``attrs["missing"]``)."""
    import pandas as pd

    if which not in ("fig4", "fig5"):
        raise ValueError(f"which must be 'fig4' or 'fig5'; got {which!r}")
    name = spec(dataset).name
    configs = fig4_configs(name) if which == "fig4" else fig5_configs(name)
    rows, missing = [], 0
    for c in configs:
        rec = load_record("robust_accuracy", _cell_params(name, c, n, seed))
        if rec is None:
            missing += 1
            continue
        d = c["defense"]
        rows.append({"eps": c["eps"], "panel": c.get("panel"), "method": d["method"], "s": d["s"], "k": d["k"],
                     "noise_255": c.get("noise_255"), "accuracy": rec["result"]["accuracy"],
                     "ci_lo": rec["result"]["ci95"][0], "ci_hi": rec["result"]["ci95"][1]})
    frame = pd.DataFrame(rows)
    frame.attrs["missing"] = missing
    return frame


# ----------------------------------------------------------------------------- Figure 7 (denoising)

def denoising_examples(dataset: str, x: torch.Tensor, y: torch.Tensor, eps: float | None = None,
                       s: int | None = None, k: int | None = None, seed: int = 0, net=None) -> dict:
    """x, x′ = PGD on f (the paper's protocol), and Q(x), Q(x′) for RandDisc, pRD, swRD (Figure 7).

    Returns tensors and, per method, PSNR(x, Q(x′)) and PSNR(x, Q(x)) in dB and f's predictions.
    """
    from ..attacks import paper_pgd
    from ..metrics import psnr
    from ..models import load_pretrained

    name = spec(dataset).name
    cfg = {**paper.FIG7[name], **{key: v for key, v in dict(eps=eps, s=s, k=k).items() if v is not None}}
    net = net or load_pretrained(name)
    x_adv = paper_pgd(net, name, cfg["eps"], generator=torch.Generator().manual_seed(seed))(x, y)
    out = {"x": x, "x_adv": x_adv, "config": cfg, "pred_x_adv": net(x_adv).argmax(1).detach(), "methods": {}}
    for method in paper.QUANTIZERS:
        q = QuantizerSpec.paper(name, method, 1 if method == "randdisc" else cfg["s"], cfg["k"]).build()
        torch.manual_seed(seed)
        qx, qa = q(x), q(x_adv)
        with torch.no_grad():
            out["methods"][method] = {"q_x": qx, "q_adv": qa, "psnr_adv": psnr(x, qa), "psnr_clean": psnr(x, qx),
                                      "pred_q_adv": net(qa).argmax(1)}
    return out


def _fig7_summary(dataset: str, n: int, seed: int, eps: float, s: int, k: int, batch_size: int = 100) -> dict:
    """Figure 7 over ``n`` test images: per quantizer, the mean PSNR(x, Q(x′)) and PSNR(x, Q(x))
    in dB and the accuracy of f on Q(x′), beside f's accuracy on x′ (the paper's protocol)."""
    from ..models import load_pretrained

    name = spec(dataset).name
    x, y = load_dataset(name, "test", n, seed=seed)
    net = load_pretrained(name)
    acc = {"f(x′)": 0}
    sums = {m: {"psnr_adv": 0.0, "psnr_clean": 0.0, "correct": 0} for m in paper.QUANTIZERS}
    for i in range(0, n, batch_size):
        out = denoising_examples(name, x[i:i + batch_size], y[i:i + batch_size], eps=eps, s=s, k=k,
                                 seed=seed + i, net=net)
        yb = y[i:i + batch_size]
        acc["f(x′)"] += int((out["pred_x_adv"] == yb).sum())
        for m, r in out["methods"].items():
            sums[m]["psnr_adv"] += float(r["psnr_adv"].sum())
            sums[m]["psnr_clean"] += float(r["psnr_clean"].sum())
            sums[m]["correct"] += int((r["pred_q_adv"] == yb).sum())
    return {"n": n, "accuracy_f_adv": acc["f(x′)"] / n,
            "methods": {m: {"mean_psnr_adv_db": v["psnr_adv"] / n, "mean_psnr_clean_db": v["psnr_clean"] / n,
                            "accuracy_q_adv": v["correct"] / n} for m, v in sums.items()}}


def _fig7_params(name, n, seed) -> dict:
    return dict(dataset=name, n=n, seed=seed, **paper.FIG7[name], attack="pgd-oblivious")


def run_fig7(datasets=("mnist", "cifar10"), n: int = FIG7_N, seed: int = 0, device: str = "cpu", progress=True):
    """Figure 7's settings (:data:`vqdbook.paper.FIG7`) over ``n`` test images per dataset, as records
    (kind ``fig7``): mean PSNR(x, Q(x′)), PSNR(x, Q(x)) and accuracy of f on Q(x′) per quantizer."""
    out = {}
    for d in datasets:
        name = spec(d).name
        out[name] = load_or_run("fig7", _fig7_params(name, n, seed), lambda **p: _fig7_summary(
            p["dataset"], p["n"], p["seed"], p["eps"], p["s"], p["k"]), device=device)
    return out


def fig7_frame(n: int = FIG7_N, seed: int = 0):
    """The stored Figure 7 records as a table (datasets without a record are left out)."""
    import pandas as pd

    rows = []
    for name, cfg in paper.FIG7.items():
        rec = load_record("fig7", _fig7_params(name, n, seed))
        if rec is None:
            continue
        r = rec["result"]
        for m in paper.QUANTIZERS:
            v = r["methods"][m]
            rows.append({"dataset": name, "method": paper.METHOD_LABELS[m],
                         "s": 1 if m == "randdisc" else cfg["s"], "k": cfg["k"], "n": r["n"],
                         "PSNR(x, Q(x′)) dB": round(v["mean_psnr_adv_db"], 2),
                         "PSNR(x, Q(x)) dB": round(v["mean_psnr_clean_db"], 2),
                         "accuracy f(Q(x′)) %": round(100 * v["accuracy_q_adv"], 1),
                         "accuracy f(x′) %": round(100 * r["accuracy_f_adv"], 1)})
    return pd.DataFrame(rows)


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """Every record the book's Figures 4, 5 and 7 render, as ``(kind, params)``."""
    cells = [("robust_accuracy", _cell_params(d, c, DEFAULT_N, seed)) for d in ("mnist", "cifar10")
             for c in fig4_configs(d)]
    cells += [("robust_accuracy", _cell_params("cifar10", c, DEFAULT_N, seed)) for c in fig5_configs("cifar10")]
    cells += [("fig7", _fig7_params(name, FIG7_N, seed)) for name in paper.FIG7]
    return cells
