"""Robust-accuracy experiments as data: ``run_robust_accuracy(**params) -> record``.

Protocol (the paper's, Sec. 3.3 and 4.1): adversarial examples x′ are computed by PGD on the
**undefended** classifier f (oblivious / gray-box threat model); the defended prediction is
f(Q(x′)). Adversarial examples for one (model, ε, images, seed) are computed once, cached on disk
under ``data/cache/adv`` with a checksum, and shared by every defense evaluated on them.

Each (dataset, model, defense + parameters, ε, n, seed, attack) is one record under
``data/results/robust_accuracy/``; tables and figures are assembled from records. A killed run
resumes without redoing finished records (see :mod:`vqdbook.results`).
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache

import torch

from . import PROJECT_ROOT
from .data import load_dataset, spec
from .metrics import wilson_interval
from .results import load_or_run

ADV_CACHE = PROJECT_ROOT / "data" / "cache" / "adv"
#: Attack protocols. Both run the paper's PGD on the undefended f (oblivious threat model); they
#: differ in how ε is read: on [0, 1] pixels (as the paper states) or on normalized inputs.
ATTACKS = {"pgd-oblivious": "ε on [0, 1] pixels (the paper's stated protocol)",
           "pgd-oblivious-normeps": "ε on normalized inputs (x − μ)/σ, i.e. ε·σ on pixels"}
METHODS = ("none", "randdisc", "prd", "swrd")


def paper_defense(dataset: str, method: str, s: int = 1, k: int = 2) -> dict:
    """The paper's defense parameters as a serialisable dict on the [0, 1] scale (Sec. 4.1),
    taken from :data:`vqdbook.quantizers.PAPER_PRESETS` (MNIST σ = τ = 4/255, β = 1; CIFAR-10
    σ = τ = 4/255, β = 0.1·255²; SVHN σ = τ = 4/255, β = 0.5·255²)."""
    from .quantizers import PAPER_PRESETS

    name = spec(dataset).name
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method == "none":
        return {"method": "none"}
    p = PAPER_PRESETS[name]
    d = {"method": method, "s": 1 if method == "randdisc" else s, "k": k, "sigma": p["sigma"], "tau": p["tau"]}
    if method == "swrd":
        d["beta"] = p["beta"]
    return d


def make_quantizer(defense: dict):
    """The ``nn.Module`` for a defense dict (``method`` plus its parameters), or None for ``none``."""
    from . import quantizers as q

    method = defense.get("method")
    if method == "none":
        return None
    if method == "randdisc":
        return q.RandDisc(k=defense["k"], sigma=defense["sigma"], tau=defense["tau"])
    if method == "prd":
        return q.PRD(s=defense["s"], k=defense["k"], sigma=defense["sigma"], tau=defense["tau"])
    if method == "swrd":
        return q.SWRD(s=defense["s"], k=defense["k"], sigma=defense["sigma"], tau=defense["tau"],
                      beta=defense["beta"])
    raise ValueError(f"defense['method'] must be one of {METHODS}; got {method!r}")


def defense_label(defense: dict) -> str:
    m = defense["method"]
    if m == "none":
        return "no defense"
    name = {"randdisc": "RandDisc", "prd": "pRD", "swrd": "swRD"}[m]
    return f"{name} (s={defense['s']}, k={defense['k']})"


@lru_cache(maxsize=4)
def _model(dataset, arch, variant, device):
    from .models import load_pretrained

    return load_pretrained(dataset, arch, variant).to(device)


def _adv_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def adversarial_examples(dataset: str, arch: str | None, variant: str | None, eps: float, n: int,
                         seed: int = 0, attack: str = "pgd-oblivious", device: str = "cpu",
                         batch_size: int = 500, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """x′ for the first ``n`` stratified test images (paper PGD on f), cached with a checksum.

    Returns ``(x_adv, y, seconds spent attacking now)`` (0 when loaded from the cache).
    """
    from .attacks import paper_pgd
    from .models import DEFAULT_ARCH

    name = spec(dataset).name
    arch = arch or DEFAULT_ARCH[name]
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}; got {attack!r}")
    key_params = dict(dataset=name, arch=arch, variant=variant, eps=round(float(eps), 8), n=n, seed=seed,
                      attack=attack)
    path = ADV_CACHE / f"{_adv_key(key_params)}.pt"
    x, y = load_dataset(name, "test", n, seed=seed)
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            digest = hashlib.sha256(blob["x_adv"].numpy().tobytes()).hexdigest()
            if blob["params"] == json.dumps(key_params, sort_keys=True) and digest == blob["sha256"]:
                return blob["x_adv"].float(), y, 0.0
        except Exception:  # unreadable cache: recompute
            pass
    net = _model(name, arch, variant, device)
    t0 = time.time()
    gen = torch.Generator().manual_seed(seed)
    out = []
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(y), batch_size), desc=f"PGD {name} eps={eps:.4g} ({attack})",
                  disable=not progress, leave=False):
        # the normalized-units reading: ε is a radius on the normalized input (x − μ)/σ, so on
        # [0, 1] pixels it is ε·σ (MNIST σ = 0.3081; mean channel σ for colour datasets)
        eps_pixels = eps * (sum(spec(name).std) / len(spec(name).std) if attack == "pgd-oblivious-normeps" else 1.0)
        atk = paper_pgd(net, name, eps_pixels, generator=gen)
        out.append(atk(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
    x_adv = torch.cat(out)
    seconds = time.time() - t0
    ADV_CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"params": json.dumps(key_params, sort_keys=True), "x_adv": x_adv,
                "sha256": hashlib.sha256(x_adv.numpy().tobytes()).hexdigest()}, path)
    return x_adv, y, seconds


def run_robust_accuracy(dataset: str, arch: str | None = None, variant: str | None = None,
                        defense: dict | None = None, eps: float = 0.0, n: int = 1000, seed: int = 0,
                        votes: int = 1, attack: str = "pgd-oblivious", device: str = "cpu",
                        batch_size: int = 500) -> dict:
    """Accuracy of f∘Q on PGD examples of f at radius ``eps`` (ε = 0: natural accuracy).

    Returns a result dict: ``correct``, ``n``, ``accuracy``, ``ci95`` (Wilson), and the seconds
    spent attacking (0 if the x′ were cached) and quantizing + classifying.
    """
    from .defense import Defended
    from .models import DEFAULT_ARCH

    defense = defense or {"method": "none"}
    x_adv, y, t_attack = adversarial_examples(dataset, arch, variant, eps, n, seed, attack, device, batch_size) \
        if eps > 0 else (*load_dataset(dataset, "test", n, seed=seed), 0.0)
    name = spec(dataset).name
    net = _model(name, arch or DEFAULT_ARCH[name], variant, device)
    quantizer = make_quantizer(defense)
    model = net if quantizer is None else Defended(net, quantizer, votes=votes)
    torch.manual_seed(seed + 1)  # the quantizer's randomness
    t0 = time.time()
    with torch.no_grad():
        pred = torch.cat([model(x_adv[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(y), batch_size)])
    t_defend = time.time() - t0
    correct = int((pred == y).sum())
    lo, hi = wilson_interval(correct, len(y))
    return {"correct": correct, "n": len(y), "accuracy": correct / len(y), "ci95": [lo, hi],
            "seconds_attack": round(t_attack, 3), "seconds_defend": round(t_defend, 3)}


def robust_accuracy_record(**params) -> dict:
    """Load the record for ``params`` or run :func:`run_robust_accuracy` and store it."""
    device = params.get("device", "cpu")
    stored = {k: v for k, v in params.items() if k not in ("device", "batch_size")}
    return load_or_run("robust_accuracy", stored, lambda **p: run_robust_accuracy(**p, device=device),
                       device=device)


# ----------------------------------------------------------------------------- the paper's tables

BASELINE_VARIANTS = {"Fast AdvT": "fastat", "MART": "mart", "TRADES": "trades"}
_METHOD_KEYS = {"RandDisc": "randdisc", "pRD": "prd", "swRD": "swrd"}


def table_spec(table: str) -> dict:
    """Dataset, ε grid (paper units and [0, 1]) and rows of one of the paper's Tables 1–3."""
    from . import paper

    tables = {"table1": ("mnist", paper.TABLE1_EPS, paper.TABLE1, 1.0),
              "table2": ("cifar10", paper.TABLE2_EPS, paper.TABLE2, 255.0),
              "table3": ("svhn", paper.TABLE3_EPS, paper.TABLE3, 255.0)}
    if table not in tables:
        raise ValueError(f"table must be one of {sorted(tables)}; got {table!r}")
    dataset, eps_paper, rows, scale = tables[table]
    out_rows = [{"method": "no defense", "variant": None, "defense": {"method": "none"}, "paper": None}]
    for method, s, k, accs in rows:
        if method in BASELINE_VARIANTS:
            out_rows.append({"method": method, "variant": BASELINE_VARIANTS[method],
                             "defense": {"method": "none"}, "paper": list(accs)})
        else:
            out_rows.append({"method": method, "variant": None,
                             "defense": paper_defense(dataset, _METHOD_KEYS[method], s, k), "paper": list(accs)})
    from .models import DEFAULT_ARCH

    return {"table": table, "dataset": dataset, "arch": DEFAULT_ARCH[dataset], "eps_paper": list(eps_paper),
            "eps": [e / scale for e in eps_paper], "rows": out_rows}


def _model_available(dataset, variant) -> bool:
    from .models import DEFAULT_ARCH, weights_path

    return weights_path(dataset, DEFAULT_ARCH[dataset], variant).is_file()


def run_table(table: str, n: int = 1000, seed: int = 0, device: str = "cpu", progress: bool = True) -> list[dict]:
    """Compute (or load) every record of a paper table for our default classifier; returns them.

    ε-major order so each set of adversarial examples is computed once and reused by all rows.
    Rows whose model is not trained are skipped here and marked in :func:`table_frame`.
    """
    from tqdm.auto import tqdm

    sp = table_spec(table)
    jobs = [(eps, row) for eps in sp["eps"] for row in sp["rows"]
            if _model_available(sp["dataset"], row["variant"])]
    records = []
    for eps, row in tqdm(jobs, desc=f"{table} n={n}", disable=not progress):
        records.append(robust_accuracy_record(dataset=sp["dataset"], arch=sp["arch"], variant=row["variant"],
                                              defense=row["defense"], eps=eps, n=n, seed=seed, votes=1,
                                              attack="pgd-oblivious", device=device))
    return records


def table_frame(table: str, n: int = 1000, seed: int = 0):
    """Our accuracy (±95% CI half-width) beside the paper's, per row and ε, from stored records.

    Returns a pandas DataFrame; missing records or untrained models show as text, not as numbers.
    """
    import pandas as pd

    from .results import load_record

    sp = table_spec(table)
    out = []
    for row in sp["rows"]:
        d = row["defense"]
        line = {"method": row["method"], "s": d.get("s", "–"), "k": d.get("k", "–")}
        trained = _model_available(sp["dataset"], row["variant"])
        for j, (eps, eps_p) in enumerate(zip(sp["eps"], sp["eps_paper"])):
            col = f"ε={eps_p:g}"
            rec = load_record("robust_accuracy", dict(dataset=sp["dataset"], arch=sp["arch"], variant=row["variant"],
                                                      defense=d, eps=eps, n=n, seed=seed, votes=1,
                                                      attack="pgd-oblivious")) if trained else None
            if rec is None:
                line[col + " ours"] = "not trained" if not trained else "not run"
            else:
                r = rec["result"]
                lo, hi = r["ci95"]
                line[col + " ours"] = f"{100 * r['accuracy']:.1f} ± {50 * (hi - lo):.1f}"
                line[col + " Δ"] = (round(100 * r["accuracy"] - row["paper"][j], 1)
                                    if row["paper"] is not None else None)
            line[col + " paper"] = row["paper"][j] if row["paper"] is not None else None
        out.append(line)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- Figures 4 and 5

#: Default test-set sizes of the runs (tables 1,000 on 2 CPU cores; ``--full`` is 10,000).
DEFAULT_N = {"table1": 1000, "table2": 1000, "table3": 1000, "fig4": 500, "fig5": 500}

#: Figure 4 grid (the paper does not list its grid or ε; these are ours, stated in the book).
FIG4_GRID = {
    "mnist": {"s": [1, 2, 3, 4], "k": [2, 4, 8, 16], "eps": [0.0, 0.16, 0.32]},
    "cifar10": {"s": [1, 2, 3, 4], "k": [5, 10, 25, 50], "eps": [0.0, 8 / 255, 16 / 255]},
}
#: Figure 5: σ = τ sweep (paper: SVHN at ε = 8 and 16; SVHN is unavailable offline, so CIFAR-10 too).
FIG5_GRID = {"noise_255": [0, 2, 4, 8, 16], "eps_255": [8, 16],
             "rows": [("prd", 2, 10), ("swrd", 4, 25)]}


def fig4_configs(dataset: str) -> list[dict]:
    name = spec(dataset).name
    grid = FIG4_GRID[name]
    out = []
    for eps in grid["eps"]:
        for method in ("prd", "swrd"):
            for s in grid["s"]:
                for k in grid["k"]:
                    d = paper_defense(name, "randdisc" if s == 1 else method, s, k)
                    out.append({"eps": eps, "panel": method, "defense": d})
    return out


def fig5_configs(dataset: str) -> list[dict]:
    name = spec(dataset).name
    out = []
    for eps_255 in FIG5_GRID["eps_255"]:
        for method, s, k in FIG5_GRID["rows"]:
            for v in FIG5_GRID["noise_255"]:
                d = {**paper_defense(name, method, s, k), "sigma": v / 255, "tau": v / 255}
                out.append({"eps": eps_255 / 255, "noise_255": v, "defense": d})
    return out


def _run_configs(dataset, configs, n, seed, device, progress, desc):
    from tqdm.auto import tqdm

    from .models import DEFAULT_ARCH

    name = spec(dataset).name
    recs = []
    for c in tqdm(sorted(configs, key=lambda c: c["eps"]), desc=desc, disable=not progress):
        rec = robust_accuracy_record(dataset=name, arch=DEFAULT_ARCH[name], variant=None, defense=c["defense"],
                                     eps=c["eps"], n=n, seed=seed, votes=1, attack="pgd-oblivious", device=device)
        recs.append({**c, "accuracy": rec["result"]["accuracy"], "ci95": rec["result"]["ci95"]})
    return recs


def run_fig4(datasets=("mnist", "cifar10"), n: int = 500, seed: int = 0, device: str = "cpu", progress=True):
    """Accuracy vs window size s and codebook size k (the paper's Figure 4), as records."""
    return {d: _run_configs(d, fig4_configs(d), n, seed, device, progress, f"fig4 {d}") for d in datasets}


def run_fig5(datasets=("cifar10",), n: int = 500, seed: int = 0, device: str = "cpu", progress=True):
    """Accuracy vs noise σ = τ at ε = 8 and 16 (/255) (the paper's Figure 5), as records."""
    return {d: _run_configs(d, fig5_configs(d), n, seed, device, progress, f"fig5 {d}") for d in datasets}


def figure_frame(which: str, dataset: str, n: int = 500, seed: int = 0):
    """Stored records of Figure 4 or 5 as a DataFrame (missing ones are left out and counted)."""
    import pandas as pd

    from .models import DEFAULT_ARCH
    from .results import load_record

    name = spec(dataset).name
    configs = fig4_configs(name) if which == "fig4" else fig5_configs(name)
    rows, missing = [], 0
    for c in configs:
        rec = load_record("robust_accuracy", dict(dataset=name, arch=DEFAULT_ARCH[name], variant=None,
                                                  defense=c["defense"], eps=c["eps"], n=n, seed=seed, votes=1,
                                                  attack="pgd-oblivious"))
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

def table_agreement(tables=("table1", "table2"), n: int = 1000, seed: int = 0):
    """Per quantizer / baseline row and ε: our accuracy, its 95% CI, the paper's value, whether the
    paper's value lies in our interval, and the gap in points. Only cells with a stored record."""
    import pandas as pd

    from .results import load_record

    out = []
    for table in tables:
        sp = table_spec(table)
        for row in sp["rows"]:
            if row["paper"] is None or not _model_available(sp["dataset"], row["variant"]):
                continue
            for j, (eps, eps_p) in enumerate(zip(sp["eps"], sp["eps_paper"])):
                rec = load_record("robust_accuracy", dict(dataset=sp["dataset"], arch=sp["arch"],
                                                          variant=row["variant"], defense=row["defense"], eps=eps,
                                                          n=n, seed=seed, votes=1, attack="pgd-oblivious"))
                if rec is None:
                    continue
                r = rec["result"]
                lo, hi = 100 * r["ci95"][0], 100 * r["ci95"][1]
                p = row["paper"][j]
                d = row["defense"]
                out.append({"table": table, "method": row["method"], "s": d.get("s"), "k": d.get("k"),
                            "ε (paper units)": eps_p, "ours (%)": round(100 * r["accuracy"], 1),
                            "95% CI": f"[{lo:.1f}, {hi:.1f}]", "paper (%)": p,
                            "paper in CI": lo <= p <= hi, "gap (points)": round(100 * r["accuracy"] - p, 1)})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- Figure 7 (denoising)

#: The paper's Figure 7 settings: MNIST PGD40 ε = 0.32, k = 2, s = 2; CIFAR-10 PGD20 ε = 16/255, k = 25, s = 2.
FIG7 = {"mnist": {"eps": 0.32, "s": 2, "k": 2}, "cifar10": {"eps": 16 / 255, "s": 2, "k": 25}}


def denoising_examples(dataset: str, x: torch.Tensor, y: torch.Tensor, eps: float | None = None,
                       s: int | None = None, k: int | None = None, seed: int = 0, net=None) -> dict:
    """x, x′ = PGD on f (the paper's protocol), and Q(x), Q(x′) for RandDisc, pRD, swRD (Figure 7).

    Returns tensors and, per method, PSNR(x, Q(x′)) and PSNR(x, Q(x)) in dB and f's predictions.
    """
    from .attacks import paper_pgd
    from .metrics import psnr
    from .models import load_pretrained

    name = spec(dataset).name
    cfg = {**FIG7[name], **{key: v for key, v in dict(eps=eps, s=s, k=k).items() if v is not None}}
    net = net or load_pretrained(name)
    x_adv = paper_pgd(net, name, cfg["eps"], generator=torch.Generator().manual_seed(seed))(x, y)
    out = {"x": x, "x_adv": x_adv, "config": cfg, "pred_x_adv": net(x_adv).argmax(1).detach(), "methods": {}}
    for method in ("randdisc", "prd", "swrd"):
        q = make_quantizer(paper_defense(name, method, cfg["s"], cfg["k"]))
        torch.manual_seed(seed)
        qx, qa = q(x), q(x_adv)
        with torch.no_grad():
            out["methods"][method] = {"q_x": qx, "q_adv": qa, "psnr_adv": psnr(x, qa), "psnr_clean": psnr(x, qx),
                                      "pred_q_adv": net(qa).argmax(1)}
    return out


def run_variant_normeps(n: int = 1000, seed: int = 0, device: str = "cpu", progress: bool = True,
                        eps_list=(0.16, 0.24, 0.32)) -> list[dict]:
    """Reproduction study, MNIST: Table 1's quantizer rows with ε read in normalized-input units."""
    from tqdm.auto import tqdm

    sp = table_spec("table1")
    rows = [r for r in sp["rows"] if r["variant"] is None]
    recs = []
    for eps in tqdm(eps_list, desc="normalized-ε variant", disable=not progress):
        for row in rows:
            recs.append(robust_accuracy_record(dataset="mnist", arch=sp["arch"], variant=None, defense=row["defense"],
                                               eps=eps, n=n, seed=seed, votes=1, attack="pgd-oblivious-normeps",
                                               device=device))
    return recs


def variant_frame(eps_list=(0.16, 0.24, 0.32), n: int = 1000, seed: int = 0):
    """Table 1 rows under both readings of ε, beside the paper (stored records only)."""
    import pandas as pd

    from .results import load_record

    sp = table_spec("table1")
    out = []
    for row in sp["rows"]:
        if row["variant"] is not None:
            continue
        for eps in eps_list:
            j = list(sp["eps"]).index(eps)
            line = {"method": row["method"], "ε": eps, "paper (%)": row["paper"][j] if row["paper"] else None}
            for attack, label in (("pgd-oblivious", "ε on pixels (%)"), ("pgd-oblivious-normeps", "ε normalized (%)")):
                rec = load_record("robust_accuracy", dict(dataset="mnist", arch=sp["arch"], variant=None,
                                                          defense=row["defense"], eps=eps, n=n, seed=seed, votes=1,
                                                          attack=attack))
                line[label] = round(100 * rec["result"]["accuracy"], 1) if rec else None
            out.append(line)
    return pd.DataFrame(out)
