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
from pathlib import Path

import torch

from . import PROJECT_ROOT
from .data import load_dataset, spec
from .metrics import wilson_interval
from .results import load_or_run
from .validation import check_int

ADV_CACHE = PROJECT_ROOT / "data" / "cache" / "adv"
#: Attack protocols. The first two run the paper's PGD on the undefended f (oblivious / gray-box
#: threat model) and differ in how ε is read: on [0, 1] pixels (as the paper states) or on
#: normalized inputs. The third is a white-box (adaptive) attack on the defended f∘Q itself.
ATTACKS = {"pgd-oblivious": "oblivious: PGD on f, ε on [0, 1] pixels (the paper's stated protocol)",
           "pgd-oblivious-normeps": "oblivious: PGD on f, ε on normalized inputs (x − μ)/σ, i.e. ε·σ on pixels",
           "pgd-bpda-eot": "white-box: PGD on f∘Q, straight-through (BPDA) gradient of Q, averaged over "
                           "EOT draws of Q; ε on [0, 1] pixels",
           "pgd-oblivious-strong": "oblivious: a stronger PGD on f (100 steps, α = ε/40, 3 random starts; "
                                   "attacks.STRONG_PGD); ε on [0, 1] pixels"}
#: EOT draws per PGD step of the white-box attack (its default).
BPDA_EOT_SAMPLES = 4
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
    # k-means options appear in the dict only when they differ from the defaults (the k-means
    # variant of the reproduction study), so the records of the default protocol keep their keys
    km = {key: defense[key] for key in ("init", "max_iter") if key in defense}
    if method == "randdisc":
        return q.RandDisc(k=defense["k"], sigma=defense["sigma"], tau=defense["tau"], **km)
    if method == "prd":
        return q.PRD(s=defense["s"], k=defense["k"], sigma=defense["sigma"], tau=defense["tau"], **km)
    if method == "swrd":
        return q.SWRD(s=defense["s"], k=defense["k"], sigma=defense["sigma"], tau=defense["tau"],
                      beta=defense["beta"], **km)
    raise ValueError(f"defense['method'] must be one of {METHODS}; got {method!r}")


def defense_label(defense: dict) -> str:
    m = defense["method"]
    if m == "none":
        return "no defense"
    from .quantizers import METHOD_LABELS

    name = METHOD_LABELS[m]
    return f"{name} (s={defense['s']}, k={defense['k']})"


@lru_cache(maxsize=4)
def _model(dataset, arch, variant, device):
    from .models import load_pretrained

    net = load_pretrained(dataset, arch, variant).to(device)
    # channels-last convolutions are faster on CPU (oneDNN) for these small nets (`vqdbook bench table1`)
    return net.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else net


def _adv_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def adversarial_examples(dataset: str, arch: str | None, variant: str | None, eps: float, n: int,
                         seed: int = 0, attack: str = "pgd-oblivious", device: str = "cpu",
                         batch_size: int = 500, progress: bool = True, *, defense: dict | None = None,
                         eot_samples: int | None = None, cache_dir=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """x′ for the first ``n`` stratified test images, cached with a checksum.

    The oblivious attacks (the paper's protocol) run the paper's PGD on f alone and ignore
    ``defense``; ``"pgd-bpda-eot"`` runs the same PGD (steps, α/ε) on ``Defended(f, Q, bpda=True)``
    for the quantizer of ``defense``, with gradients averaged over ``eot_samples`` draws of Q per step.

    Returns ``(x_adv, y, seconds spent attacking now)`` (0 when loaded from the cache).
    """
    from .attacks import paper_pgd, strong_pgd
    from .models import DEFAULT_ARCH

    name = spec(dataset).name
    arch = arch or DEFAULT_ARCH[name]
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}; got {attack!r}")
    key_params = dict(dataset=name, arch=arch, variant=variant, eps=round(float(eps), 8), n=n, seed=seed,
                      attack=attack)
    whitebox = attack == "pgd-bpda-eot"
    if whitebox:
        if not defense or defense.get("method", "none") == "none":
            raise ValueError("attack='pgd-bpda-eot' attacks a defended model: pass defense= a quantizer "
                             "dict (method randdisc, prd or swrd)")
        eot_samples = BPDA_EOT_SAMPLES if eot_samples is None else eot_samples
        eot_samples = check_int(eot_samples, "eot_samples", 1)
        key_params.update(defense=defense, eot_samples=eot_samples)
    cache_dir = ADV_CACHE if cache_dir is None else Path(cache_dir)
    path = cache_dir / f"{_adv_key(key_params)}.pt"
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
    if whitebox:
        from .defense import Defended

        net = Defended(net.eval(), make_quantizer(defense), bpda=True)
        torch.manual_seed(seed + 2)  # the quantizer's draws inside the attack
    t0 = time.time()
    gen = torch.Generator().manual_seed(seed)
    out = []
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(y), batch_size), desc=f"PGD {name} eps={eps:.4g} ({attack})",
                  disable=not progress, leave=False):
        # the normalized-units reading: ε is a radius on the normalized input (x − μ)/σ, so on
        # [0, 1] pixels it is ε·σ (MNIST σ = 0.3081; mean channel σ for colour datasets)
        eps_pixels = eps * (sum(spec(name).std) / len(spec(name).std) if attack == "pgd-oblivious-normeps" else 1.0)
        if attack == "pgd-oblivious-strong":
            atk = strong_pgd(net, eps_pixels, generator=gen)
        else:
            atk = paper_pgd(net, name, eps_pixels, generator=gen,
                            **(dict(eot_samples=eot_samples, check=False) if whitebox else {}))
        out.append(atk(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
    x_adv = torch.cat(out)
    seconds = time.time() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"params": json.dumps(key_params, sort_keys=True), "x_adv": x_adv,
                "sha256": hashlib.sha256(x_adv.numpy().tobytes()).hexdigest()}, path)
    return x_adv, y, seconds


def run_robust_accuracy(dataset: str, arch: str | None = None, variant: str | None = None,
                        defense: dict | None = None, eps: float = 0.0, n: int = 1000, seed: int = 0,
                        votes: int = 1, attack: str = "pgd-oblivious", device: str = "cpu",
                        batch_size: int = 500, eot_samples: int | None = None, cache_dir=None) -> dict:
    """Accuracy of f∘Q on PGD examples at radius ``eps`` (ε = 0: natural accuracy).

    ``attack`` names the threat model (:data:`ATTACKS`): by default the paper's oblivious one
    (x′ from PGD on the undefended f, then f(Q(x′))); ``"pgd-bpda-eot"`` is white-box (x′ from
    PGD with BPDA + ``eot_samples`` EOT through f∘Q itself), evaluated with a fresh draw of Q.

    Returns a result dict: ``correct``, ``n``, ``accuracy``, ``ci95`` (Wilson), and the seconds
    spent attacking (0 if the x′ were cached) and quantizing + classifying.
    """
    from .defense import Defended
    from .models import DEFAULT_ARCH

    defense = defense or {"method": "none"}
    x_adv, y, t_attack = adversarial_examples(dataset, arch, variant, eps, n, seed, attack, device, batch_size,
                                              defense=defense, eot_samples=eot_samples, cache_dir=cache_dir) \
        if eps > 0 else (*load_dataset(dataset, "test", n, seed=seed), 0.0)
    name = spec(dataset).name
    net = _model(name, arch or DEFAULT_ARCH[name], variant, device).eval()
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
    batch_size = params.get("batch_size", 500)
    # where and in what batches a record was computed are not part of its key (the hardware is in it)
    stored = {k: v for k, v in params.items() if k not in ("device", "batch_size")}
    return load_or_run("robust_accuracy", stored,
                       lambda **p: run_robust_accuracy(**p, device=device, batch_size=batch_size), device=device)


# ----------------------------------------------------------------------------- the paper's tables

BASELINE_VARIANTS = {"Fast AdvT": "fastat", "MART": "mart", "TRADES": "trades"}
_METHOD_KEYS = {"RandDisc": "randdisc", "pRD": "prd", "swRD": "swrd"}   # paper.TABLE* spelling -> key


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


def table_cell_params(sp: dict, row: dict, eps: float, n: int, seed: int = 0,
                      attack: str = "pgd-oblivious") -> dict:
    """Record parameters of one cell (row, ε) of a :func:`table_spec` table: the key under which
    :func:`run_table` stores it and the table renderers look it up."""
    return dict(dataset=sp["dataset"], arch=sp["arch"], variant=row["variant"], defense=row["defense"], eps=eps,
                n=n, seed=seed, votes=1, attack=attack)


def _integer_sk(frame):
    """Baseline rows have no s, k: keep the quantizers' as integers (not 2.0) beside the blanks."""
    if not frame.empty:
        frame[["s", "k"]] = frame[["s", "k"]].astype("Int64")
    return frame


#: The attacks a whole table can be run with (both oblivious: x′ from PGD on f).
TABLE_ATTACKS = ("pgd-oblivious", "pgd-oblivious-strong")


def _model_available(dataset, variant) -> bool:
    from .models import DEFAULT_ARCH, weights_path

    return weights_path(dataset, DEFAULT_ARCH[dataset], variant).is_file()


def run_table(table: str, n: int = 1000, seed: int = 0, device: str = "cpu", progress: bool = True,
              batch_size: int = 500, attack: str = "pgd-oblivious") -> list[dict]:
    """Compute (or load) every record of a paper table for our default classifier; returns them.

    ε-major order so each set of adversarial examples is computed once and reused by all rows.
    ``attack``: the paper's oblivious PGD, or ``"pgd-oblivious-strong"`` (see :func:`attack_strength_frame`).
    Rows whose model is not trained are skipped here and marked in :func:`table_frame`.
    """
    from tqdm.auto import tqdm

    if attack not in TABLE_ATTACKS:
        raise ValueError(f"attack must be one of {TABLE_ATTACKS} for a table; got {attack!r}")
    sp = table_spec(table)
    jobs = [(eps, row) for eps in sp["eps"] for row in sp["rows"]
            if _model_available(sp["dataset"], row["variant"])]
    return [robust_accuracy_record(**table_cell_params(sp, row, eps, n, seed, attack), device=device,
                                   batch_size=batch_size)
            for eps, row in tqdm(jobs, desc=f"{table} n={n}", disable=not progress)]


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
            rec = load_record("robust_accuracy", table_cell_params(sp, row, eps, n, seed)) if trained else None
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
DEFAULT_N = {"table1": 1000, "table2": 1000, "table3": 1000, "fig4": 500, "fig5": 500, "fig7": 200}

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


def attack_strength_frame(table: str, n: int = 1000, seed: int = 0, largest_only: bool = False):
    """The paper's PGD against :data:`vqdbook.attacks.STRONG_PGD` (both oblivious: x′ from f), per
    row and ε > 0, from stored records: a defense or baseline whose accuracy drops a lot under the
    stronger attack was scored by too weak an attack. Cells without both records are left out;
    with ``largest_only`` each row keeps only its ε with the largest drop."""
    import pandas as pd

    from .results import load_record

    sp = table_spec(table)
    out = []
    for row in sp["rows"]:
        if not _model_available(sp["dataset"], row["variant"]):
            continue
        d = row["defense"]
        for eps, eps_p in zip(sp["eps"], sp["eps_paper"]):
            if eps == 0:
                continue
            weak = load_record("robust_accuracy", table_cell_params(sp, row, eps, n, seed))
            strong = load_record("robust_accuracy", table_cell_params(sp, row, eps, n, seed, "pgd-oblivious-strong"))
            if weak is None or strong is None:
                continue
            a, b = 100 * weak["result"]["accuracy"], 100 * strong["result"]["accuracy"]
            out.append({"method": row["method"], "s": d.get("s"), "k": d.get("k"), "ε (paper units)": eps_p,
                        "paper's PGD (%)": round(a, 1), "strong PGD (%)": round(b, 1), "drop (points)": round(a - b, 1)})
    frame = _integer_sk(pd.DataFrame(out))
    if largest_only and not frame.empty:
        keep = frame.groupby(["method", "s", "k"], sort=False, dropna=False)["drop (points)"].idxmax()
        frame = frame.loc[keep].reset_index(drop=True)
    frame.attrs["n"] = n
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
                rec = load_record("robust_accuracy", table_cell_params(sp, row, eps, n, seed))
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
    return _integer_sk(pd.DataFrame(out))


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


def _fig7_summary(dataset: str, n: int, seed: int, eps: float, s: int, k: int, batch_size: int = 100) -> dict:
    """Figure 7 over ``n`` test images: per quantizer, the mean PSNR(x, Q(x′)) and PSNR(x, Q(x))
    in dB and the accuracy of f on Q(x′), beside f's accuracy on x′ (the paper's protocol)."""
    from .models import load_pretrained

    name = spec(dataset).name
    x, y = load_dataset(name, "test", n, seed=seed)
    net = load_pretrained(name)
    acc = {"f(x′)": 0}
    sums = {m: {"psnr_adv": 0.0, "psnr_clean": 0.0, "correct": 0} for m in ("randdisc", "prd", "swrd")}
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


def run_fig7(datasets=("mnist", "cifar10"), n: int = 200, seed: int = 0, device: str = "cpu", progress=True):
    """Figure 7's settings (:data:`FIG7`) over ``n`` test images per dataset, as records
    (kind ``fig7``): mean PSNR(x, Q(x′)), PSNR(x, Q(x)) and accuracy of f on Q(x′) per quantizer."""
    from .results import load_or_run

    out = {}
    for d in datasets:
        name = spec(d).name
        params = dict(dataset=name, n=n, seed=seed, **FIG7[name], attack="pgd-oblivious")
        out[name] = load_or_run("fig7", params, lambda **p: _fig7_summary(
            p["dataset"], p["n"], p["seed"], p["eps"], p["s"], p["k"]), device=device)
    return out


def fig7_frame(n: int = 200, seed: int = 0):
    """The stored Figure 7 records as a table (datasets without a record are left out)."""
    import pandas as pd

    from .quantizers import METHOD_LABELS
    from .results import load_record

    rows = []
    for name, cfg in FIG7.items():
        rec = load_record("fig7", dict(dataset=name, n=n, seed=seed, **cfg, attack="pgd-oblivious"))
        if rec is None:
            continue
        r = rec["result"]
        for m in ("randdisc", "prd", "swrd"):   # the record's keys are stored sorted
            v = r["methods"][m]
            rows.append({"dataset": name, "method": METHOD_LABELS[m],
                         "s": 1 if m == "randdisc" else cfg["s"], "k": cfg["k"], "n": r["n"],
                         "PSNR(x, Q(x′)) dB": round(v["mean_psnr_adv_db"], 2),
                         "PSNR(x, Q(x)) dB": round(v["mean_psnr_clean_db"], 2),
                         "accuracy f(Q(x′)) %": round(100 * v["accuracy_q_adv"], 1),
                         "accuracy f(x′) %": round(100 * r["accuracy_f_adv"], 1)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- reproduction study

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
    from .models import weights_path

    arch = VARIANTS[variant][1].get("arch")
    return arch is None or weights_path(table_spec(table)["dataset"], arch, None).is_file()


def _variant_cells(table, n, seed):
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

    _, cells, n = _variant_cells(table, n, seed)
    jobs = [(v, eps, row) for v in variants if _variant_available(v, table) for eps, row in cells]
    recs = []
    for v, eps, row in tqdm(jobs, desc=f"variants {table} n={n}", disable=not progress):
        recs.append(robust_accuracy_record(**variant_params(v, table, row, eps, n, seed), device=device))
    return recs


def variant_frame(table: str = "table1", variants=tuple(VARIANTS), n: int | None = None, seed: int = 0):
    """The reproduction study from stored records: one line per quantizer row and ε, the paper's
    accuracy and ours under each variant (``None`` where the record does not exist)."""
    import pandas as pd

    from .results import load_record

    sp, cells, n = _variant_cells(table, n, seed)
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


def closest_variant(table: str, seed: int = 0):
    """The row of :func:`variant_summary` for ``table`` with the most cells within 5 points of the
    paper (ties: the smallest |mean gap|), or None when no variant has records."""
    summary = variant_summary(variant_frame(table, seed=seed)).dropna(subset=["mean gap (points)"])
    if summary.empty:
        return None
    summary["|mean gap|"] = summary["mean gap (points)"].abs()
    return summary.sort_values(["within 5 points", "|mean gap|"], ascending=[False, True]).iloc[0]


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
