"""Do the defenses survive an attacker who knows them? Adaptive attacks on f∘Q, as ``adaptive`` records.

Each record is one (dataset, classifier, defense, ε, attack with its budget, n images): the
attack of :class:`vqdbook.attacks.AttackSpec` is run on the first ``n`` stratified test images and
the defended classifier f(Q(x′)) is scored with one fresh draw of Q (as the paper's tables score
it). The record keeps, per image, whether the defense still classified it correctly
(``correct_bits``), so :func:`adaptive_frame` can take the worst case over attacks **per image**, as
AutoAttack scores: an image counts as robust only if every attack run on it failed.

Threat models (the attack's ``threat``): ``oblivious`` is the paper's (PGD on the undefended f,
then f(Q(x′))); ``adaptive`` attacks f∘Q itself: straight-through gradients through Q (BPDA), EOT
over Q's randomness, or Square's gradient-free queries on the defended model with votes.

The defenses (:func:`defense_rows`): the undefended f, the adversarially trained f (Fast AdvT),
bit-depth reduction (Feature Squeezing's setting: 1 bit on MNIST, 5 bits on CIFAR-10) and the
quantizer rows of the paper's Tables 1 and 2.
"""

from __future__ import annotations

import time

import torch

from .. import paper
from ..attacks import AttackSpec
from ..data import load_dataset, spec
from ..metrics import wilson_interval
from ..models import DEFAULT_ARCH
from ..quantizers import QuantizerSpec
from ..results import load_or_run, load_record, load_records
from ..validation import check_int
from .adversarial import NO_DEFENSE, classifier, model_available
from .reproduction import VARIANT_SETTINGS

__all__ = ["DEFAULT_N", "BUDGET", "BITDEPTH", "EPS_READINGS", "attack_suite", "attack_key", "defense_rows",
           "adaptive_params", "run_adaptive", "adaptive_record", "run_adaptive_grid", "adaptive_frame", "worst_case",
           "convergence_frame", "convergence_cells", "convergence_worst_case", "eps_on_pixels", "CONVERGENCE",
           "convergence_attacks", "run_convergence", "HEADLINE_RESTARTS", "restart_cells", "CURVES", "curve_spec",
           "curve_eps", "curve_cells", "run_curves", "curves_frame", "curve_summary", "runs_attack",
           "adaptive_table", "adaptive_claims",
           "slug", "HEADLINE", "headline_n", "headline_frame", "headline_full_coverage", "run_headline",
           "chapter_cells", "robust_per_image"]

#: Test images per cell of ``vqdbook run adaptive`` (the chapter states the n behind every number).
DEFAULT_N = 500
#: Bit depth of the Feature Squeezing baseline per dataset (Xu et al. 2018's settings).
BITDEPTH = {"mnist": 1, "cifar10": 5}
#: How ε is read: on [0, 1] pixels (the paper's stated protocol) or on normalized inputs (x − μ)/σ,
#: the reading under which chapter 3 reproduces the paper's Table 1 (ε·σ on pixels).
EPS_READINGS = ("pixels", "normalized")


def eps_on_pixels(dataset: str, eps: float, reading: str = "pixels") -> float:
    """The L∞ radius on [0, 1] pixels of ``eps`` read as ``reading`` (normalized: ``eps`` times the mean channel σ)."""
    if reading not in EPS_READINGS:
        raise ValueError(f"reading must be one of {EPS_READINGS}; got {reading!r}")
    if reading == "pixels":
        return float(eps)
    std = spec(dataset).std
    return float(eps) * sum(std) / len(std)


def attack_suite(dataset: str, steps: int | None = None, eot: int | None = None, queries: int | None = None,
                 votes: int | None = None) -> dict[str, AttackSpec]:
    """The attacks run on every cell, by key: the paper's oblivious PGD, straight-through PGD at the
    paper's budget without EOT, APGD-CE and APGD-DLR with BPDA and EOT, and Square with votes.

    Budgets default to :data:`BUDGET` (chosen where the convergence study stops falling).
    """
    name = spec(dataset).name
    b = BUDGET[name]
    steps, eot = steps or b["steps"], eot or b["eot"]
    queries, votes = queries or b["queries"], votes or b["votes"]
    pgd = paper.PGD[name]
    return {
        "oblivious-pgd": AttackSpec("pgd", "oblivious", steps=pgd["steps"], alpha_over_eps=pgd["alpha_over_eps"]),
        "bpda-pgd": AttackSpec("pgd", "adaptive", steps=pgd["steps"], alpha_over_eps=pgd["alpha_over_eps"]),
        "bpda-eot-apgd-ce": AttackSpec("apgd", "adaptive", steps=steps, eot=eot, loss="ce"),
        "bpda-eot-apgd-dlr": AttackSpec("apgd", "adaptive", steps=steps, eot=eot, loss="dlr"),
        "square": AttackSpec("square", "adaptive", steps=queries, votes=votes),
    }


#: Default budgets of the adaptive attacks per dataset (steps × EOT draws; Square's queries × votes).
BUDGET = {"mnist": {"steps": 100, "eot": 4, "queries": 1000, "votes": 2},
          "cifar10": {"steps": 100, "eot": 4, "queries": 500, "votes": 4}}


def attack_key(a: AttackSpec) -> str:
    """The name of an attack in frames: ``oblivious-pgd``, ``bpda-pgd``, ``bpda-eot-pgd``,
    ``bpda-eot-apgd-ce``, ``bpda-apgd-dlr``, ``square``, ..."""
    if a.threat == "oblivious":
        return f"oblivious-{a.kind}" if a.kind != "apgd" else f"oblivious-apgd-{a.loss}"
    if a.kind == "square":
        return "square"
    eot = "-eot" if a.eot > 1 else ""
    return f"bpda{eot}-pgd" if a.kind == "pgd" else f"bpda{eot}-apgd-{a.loss}"


def defense_rows(dataset: str) -> list[dict]:
    """The defenses of the chapter for ``dataset``: ``method`` (``none``, ``fastat``, ``bitdepth``,
    ``randdisc``, ``prd``, ``swrd``), ``variant`` (the classifier's weights) and ``defense`` (record form)."""
    name = spec(dataset).name
    if name not in BITDEPTH:
        raise ValueError(f"dataset must be one of {sorted(BITDEPTH)}; got {dataset!r}")
    rows = [{"method": "none", "variant": None, "defense": NO_DEFENSE},
            {"method": "fastat", "variant": "fastat", "defense": NO_DEFENSE},
            {"method": "bitdepth", "variant": None, "defense": QuantizerSpec.bitdepth(BITDEPTH[name]).params()}]
    for label, s, k, _ in paper.TABLES[paper.TABLE_DATASETS[name]][2]:
        if label in paper.METHOD_LABELS.values():
            q = QuantizerSpec.paper(name, label, s, k)
            rows.append({"method": q.method, "variant": None, "defense": q.params()})
    return [r for r in rows if model_available(name, r["variant"])]


def runs_attack(row: dict, key: str) -> bool:
    """Whether defense row ``row`` (:func:`defense_rows`) is attacked with suite attack ``key``: every
    row gets every attack, except the undefended classifier, for which the oblivious and the
    straight-through PGD are plain PGD (the suite's APGD runs on it anyway)."""
    return not (row["defense"]["method"] == "none" and key in ("oblivious-pgd", "bpda-pgd"))


def adaptive_params(dataset: str, defense: dict, eps: float, attack: AttackSpec, n: int, seed: int = 0,
                    variant: str | None = None, eps_reading: str = "pixels", arch: str | None = None) -> dict:
    """The record key of one cell under one attack."""
    name = spec(dataset).name
    if eps_reading not in EPS_READINGS:
        raise ValueError(f"eps_reading must be one of {EPS_READINGS}; got {eps_reading!r}")
    QuantizerSpec.from_params(defense)   # validates
    return {"dataset": name, "arch": arch or DEFAULT_ARCH[name], "variant": variant, "defense": defense,
            "eps": round(float(eps), 8), "eps_reading": eps_reading, "n": check_int(n, "n", 1),
            "seed": check_int(seed, "seed", 0), "attack": attack.params(), "eval_votes": 1}


def run_adaptive(dataset, arch, variant, defense, eps, eps_reading, n, seed, attack, eval_votes=1, *,
                 device: str = "cpu", batch_size: int = 250, progress: bool = False) -> dict:
    """Attack the first ``n`` stratified test images of one cell and score the defended classifier.

    The attacked model is f for an oblivious attack, ``Defended(f, Q, bpda=True)`` for an adaptive
    gradient attack (EOT draws inside the attack), and ``Defended(f, Q)`` for Square (its votes
    inside the attack). Scoring: f(Q(x′)) with ``eval_votes`` fresh draws of Q (1: one draw, as the
    tables). Returns the per-image ``correct_bits`` ("1" robust, "0" not), the accuracy and its
    95% Wilson interval, the seconds spent, and (gradient attacks) how many images the attack itself
    saw misclassified.
    """
    from tqdm.auto import tqdm

    from ..defense import Defended

    a = AttackSpec.from_params(attack)
    x, y = load_dataset(dataset, "test", n, seed=seed)
    net = classifier(dataset, arch, variant, device).eval()
    q = QuantizerSpec.from_params(defense)
    quantizer = None if q is None else q.build()
    if a.threat == "oblivious" or quantizer is None:
        target = net
    else:
        target = Defended(net, quantizer, bpda=a.kind != "square")
    scorer = net if quantizer is None else Defended(net, quantizer, votes=eval_votes)
    radius = eps_on_pixels(dataset, eps, eps_reading)
    if q is None or q.method == "bitdepth":
        # a deterministic model: every EOT copy (or Square vote) gives the same gradient, loss and
        # score, so the m-draw attack is the 1-draw attack step for step; run that (m times cheaper)
        a = a.replace(eot=1, votes=1)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 2)                       # the quantizer's draws inside the attack
    t0 = time.time()
    x_adv, queries = [], []
    for i in tqdm(range(0, n, batch_size), desc=f"{attack_key(a)} {dataset} eps={eps:.4g}", disable=not progress,
                  leave=False):
        atk = a.build(target, radius, generator=gen, check=False)
        x_adv.append(atk(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
        if hasattr(atk, "last_queries"):
            queries.append(atk.last_queries.float().cpu())
    x_adv = torch.cat(x_adv)
    t_attack = time.time() - t0
    if float((x_adv - x).abs().max()) > radius + 1e-5:
        raise RuntimeError("the attack left the ε-ball")   # a bug, never a result
    torch.manual_seed(seed + 1)                       # the quantizer's draws when scoring (as the tables)
    t0 = time.time()
    with torch.no_grad():
        pred = torch.cat([scorer(x_adv[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, n, batch_size)])
    ok = (pred == y)
    correct = int(ok.sum())
    lo, hi = wilson_interval(correct, n)
    out = {"correct_bits": "".join("1" if b else "0" for b in ok.tolist()), "correct": correct, "n": n,
           "accuracy": correct / n, "ci95": [lo, hi], "radius_pixels": radius,
           "seconds_attack": round(t_attack, 3), "seconds_eval": round(time.time() - t0, 3)}
    if queries:
        out["mean_queries"] = float(torch.cat(queries).mean())
    return out


def adaptive_record(dataset: str, defense: dict, eps: float, attack: AttackSpec, n: int, seed: int = 0, *,
                    variant: str | None = None, eps_reading: str = "pixels", device: str = "cpu",
                    batch_size: int = 250, progress: bool = False, load_only: bool = False) -> dict | None:
    """Load the record of one cell under one attack, or run :func:`run_adaptive` and store it."""
    params = adaptive_params(dataset, defense, eps, attack, n, seed, variant, eps_reading)
    if load_only:
        return load_record("adaptive", params)
    return load_or_run("adaptive", params, lambda **p: run_adaptive(**p, device=device, batch_size=batch_size,
                                                                      progress=progress), device=device)


def run_adaptive_grid(dataset: str, eps_list=None, n: int = DEFAULT_N, *, attacks=None, methods=None,
                      eps_reading: str = "pixels", seed: int = 0, device: str = "cpu", progress: bool = True,
                      budget: dict | None = None) -> list[dict]:
    """Every defense of :func:`defense_rows` (or those in ``methods``) at every ε (default: the paper's
    table radii > 0, read as ``eps_reading``) under every attack of :func:`attack_suite` (or the keys in
    ``attacks``); records are computed or loaded. Oblivious and straight-through attacks make no sense
    without a quantizer and are skipped for ``none``/``fastat``, where only the gradient attacks run."""
    from tqdm.auto import tqdm

    name = spec(dataset).name
    table = paper.TABLE_DATASETS[name]
    if eps_list is None:
        eps_list = [e / paper.UNITS[name] for e in paper.TABLES[table][1] if e > 0]
    suite = attack_suite(name, **(budget or {}))
    keys = list(suite) if attacks is None else list(attacks)
    unknown = set(keys) - set(suite)
    if unknown:
        raise ValueError(f"attacks must be keys of attack_suite: {sorted(suite)}; got {sorted(unknown)}")
    rows = [r for r in defense_rows(name) if methods is None or r["method"] in methods]
    jobs = []
    for eps in eps_list:
        for r in rows:
            jobs += [(eps, r, suite[key]) for key in keys if runs_attack(r, key)]
    out = []
    for eps, r, a in tqdm(jobs, desc=f"adaptive {name} n={n}", disable=not progress):
        out.append(adaptive_record(name, r["defense"], eps, a, n, seed, variant=r["variant"], eps_reading=eps_reading,
                                   device=device))
    return out


_BASELINE_LABELS = {"none": "no defense", **paper.BASELINE_LABELS}


#: The convergence study: one cell per dataset, APGD-CE with BPDA run at growing steps (EOT fixed at
#: the suite's) and at growing EOT draws (steps fixed). MNIST: swRD at the largest radius read on
#: normalized inputs (where chapter 3 reproduces the paper's Table 1); CIFAR-10: swRD s=4, k=25 at 8/255.
CONVERGENCE = {
    "mnist": {"method": "swrd", "s": 2, "k": 2, "eps": 0.32, "eps_reading": "normalized", "n": 100,
              "steps": (10, 25, 50, 100, 200), "eot": (1, 2, 4, 8, 16)},
    "cifar10": {"method": "swrd", "s": 4, "k": 25, "eps": 8 / 255, "eps_reading": "pixels", "n": 100,
                "steps": (10, 25, 50, 100, 200, 500), "eot": (1, 2, 4, 8, 16, 32)},
}


def convergence_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The records of the convergence study (:data:`CONVERGENCE`), as ``(kind, params)``."""
    cells = []
    for name, c in CONVERGENCE.items():
        q = QuantizerSpec.paper(name, c["method"], c["s"], c["k"]).params()
        cells += [("adaptive", adaptive_params(name, q, c["eps"], a, c["n"], seed, eps_reading=c["eps_reading"]))
                  for a in convergence_attacks(name)]
    return cells


def convergence_attacks(dataset: str) -> list[AttackSpec]:
    """The attacks of the convergence study of ``dataset`` (:data:`CONVERGENCE`)."""
    c, b = CONVERGENCE[spec(dataset).name], BUDGET[spec(dataset).name]
    out = [AttackSpec("apgd", "adaptive", steps=st, eot=b["eot"]) for st in c["steps"]]
    out += [AttackSpec("apgd", "adaptive", steps=b["steps"], eot=m) for m in c["eot"] if m != b["eot"]]
    return out


def run_convergence(dataset: str, *, seed: int = 0, device: str = "cpu", progress: bool = True) -> list[dict]:
    """Run (or load) the convergence study's records for ``dataset`` (:data:`CONVERGENCE`)."""
    from tqdm.auto import tqdm

    name = spec(dataset).name
    c = CONVERGENCE[name]
    q = QuantizerSpec.paper(name, c["method"], c["s"], c["k"])
    return [adaptive_record(name, q.params(), c["eps"], a, c["n"], seed, eps_reading=c["eps_reading"], device=device)
            for a in tqdm(convergence_attacks(name), desc=f"convergence {name}", disable=not progress)]


def _method(params) -> str:
    d = params["defense"]
    if d["method"] == "none":
        return params["variant"] or "none"
    return d["method"]


def adaptive_frame(records: list[dict] | None = None, *, worst: bool = True):
    """The adaptive records as a DataFrame, one row per record, plus (``worst=True``) one
    ``worst-case`` row per cell: the per-image minimum over every attack run on it at the same n.

    Columns: ``dataset, method`` (``none``, ``fastat``, ``bitdepth``, ``randdisc``, ``prd``,
    ``swrd``), ``s, k, label, eps`` (on [0, 1], as read), ``eps_reading, eps_pixels, attack``
    (:func:`attack_key`, or ``worst-case``), ``threat, steps, eot, votes, n, accuracy, ci_lo,
    ci_hi`` and ``attacks`` (for worst-case rows, how many attacks it is the minimum over; an
    attack run on the first n' < n images counts for those: see :func:`worst_case`).
    """
    import pandas as pd

    records = load_records("adaptive") if records is None else records
    rows = []
    for rec in records:
        p, r = rec["params"], rec["result"]
        a = AttackSpec.from_params(p["attack"])
        q = QuantizerSpec.from_params(p["defense"])
        rows.append({"dataset": p["dataset"], "method": _method(p), "variant": p["variant"],
                     "s": q.s if q else None, "k": q.k if q else None,
                     "label": q.label if q else _BASELINE_LABELS.get(_method(p), _method(p)),
                     "eps": p["eps"], "eps_reading": p["eps_reading"], "eps_pixels": r["radius_pixels"],
                     "attack": attack_key(a), "threat": a.threat, "kind": a.kind, "loss": a.loss, "steps": a.steps,
                     "eot": a.eot, "votes": a.votes, "restarts": a.restarts,
                     "n": p["n"], "seed": p["seed"], "accuracy": r["accuracy"], "ci_lo": r["ci95"][0],
                     "ci_hi": r["ci95"][1], "attacks": 1, "attacks_all": 1, "_bits": r["correct_bits"],
                     "_defense": repr(sorted(p["defense"].items())), "_variant": p["variant"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if worst:
        frame = pd.concat([frame, worst_case(frame)], ignore_index=True)
    frame[["s", "k"]] = frame[["s", "k"]].astype("Int64")
    return frame.drop(columns=["_bits", "_defense", "_variant"]).sort_values(
        ["dataset", "method", "s", "k", "eps_reading", "eps", "n", "attack"]).reset_index(drop=True)


def robust_per_image(bit_strings, n: int) -> list[bool]:
    """The per-image worst case over attack runs: image ``i < n`` is robust only if every run that
    included it left it correctly classified. ``bit_strings`` are the runs' ``correct_bits`` (``"1"``
    = still correct), each over the first images of the nested test subset (a run on fewer images
    counts for those it saw)."""
    robust = [True] * n
    for bits in bit_strings:
        for i, b in enumerate(bits[:n]):
            if b == "0":
                robust[i] = False
    return robust


def worst_case(frame):
    """Per cell (dataset, classifier, defense, ε, reading, seed), at the largest n it was run at: an
    image is robust only if it survived every attack run on it, ``worst-case`` row per cell.

    Test subsets are nested (the first n images of a larger run are the n-image run), so an attack
    run on fewer images (e.g. Square on the first 200 of 500) counts for those images: the worst case
    of image i is the minimum over the attacks whose run included it. ``attacks`` is the number of
    attacks behind the first image (the most); ``attacks_all`` the number that covered every image.
    Attacks at other budgets of the same kind count too: every attack that was run is part of it."""
    import pandas as pd

    keys = ["dataset", "_variant", "_defense", "eps", "eps_reading", "seed"]
    out = []
    for _, grp in frame.groupby(keys, dropna=False, sort=False):
        n = int(grp["n"].max())
        robust = robust_per_image(grp["_bits"], n)
        correct = sum(robust)
        lo, hi = wilson_interval(correct, n)
        first = grp[grp["n"] == n].iloc[0]
        out.append({**{c: first[c] for c in ("dataset", "method", "variant", "s", "k", "label", "eps", "eps_reading",
                                               "eps_pixels", "seed", "_defense", "_variant")},
                    "n": n, "attack": "worst-case", "threat": "adaptive", "kind": None, "loss": None, "steps": None,
                    "eot": None, "votes": None, "accuracy": correct / n, "ci_lo": lo, "ci_hi": hi,
                    "attacks": len(grp), "attacks_all": int((grp["n"] == n).sum()),
                    "_bits": "".join("1" if r else "0" for r in robust)})
    return pd.DataFrame(out)


def _stored(cells) -> list[dict]:
    """The stored records of ``cells`` (``(kind, params)`` pairs), those not computed left out."""
    return [r for r in (load_record(kind, p) for kind, p in cells) if r is not None]


def convergence_frame(records: list[dict] | None = None, seed: int = 0):
    """Accuracy against the attack budget: the rows of :func:`adaptive_frame` (no worst case) of the
    cells that were run at several budgets of one attack (same threat, kind and loss), with a
    ``varies`` column saying which budget changes along the curve (``steps``, ``eot`` or ``votes``).
    ``records`` defaults to the stored records of the convergence study (:func:`convergence_cells`);
    other records of the same cell (another n, another classifier) would be other curves."""
    if records is None:
        records = _stored(convergence_cells(seed))
    frame = adaptive_frame(records, worst=False)
    if frame.empty:
        return frame
    cell = ["dataset", "variant", "method", "s", "k", "eps", "eps_reading", "n", "threat", "kind", "loss"]
    parts = []
    for _, grp in frame.groupby(cell, dropna=False, sort=False):
        for budget, other in (("steps", ["eot", "votes"]), ("eot", ["steps"]), ("votes", ["steps"])):
            for _, g in grp.groupby(other, dropna=False, sort=False):
                if g[budget].nunique() > 1:
                    parts.append(g.assign(varies=budget).sort_values(budget))
    if not parts:
        return frame.iloc[0:0].assign(varies=[])
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


def convergence_worst_case(seed: int = 0):
    """Per dataset of the convergence study: the per-image worst case over all of its runs (every
    budget; each run is also a restart with its own random start and EOT draws), as the rows of
    :func:`adaptive_frame` with ``attack == "worst-case"`` (``attacks`` = the number of runs)."""
    records = _stored(convergence_cells(seed))
    frame = adaptive_frame(records)
    return frame[frame["attack"] == "worst-case"].reset_index(drop=True) if len(frame) else frame


def adaptive_table(frame, dataset: str, eps_reading: str = "pixels", n: int | None = None):
    """One dataset and ε reading of :func:`adaptive_frame` as a table: a row per (defense, ε), a column
    per attack (accuracy in %; an attack run only on the first m of the row's n images gets a column
    ``"<attack> (first m)"``), the worst case with its 95% interval, the drop from the oblivious
    attack to the worst case (points), and the paper's number (its oblivious protocol) where it has one."""
    import pandas as pd

    from .tables import table_spec

    sub = frame[(frame["dataset"] == dataset) & (frame["eps_reading"] == eps_reading)]
    if n is not None:
        sub = sub[sub["n"] == n]
    if sub.empty:
        return pd.DataFrame()
    sp = table_spec(paper.TABLE_DATASETS[dataset])
    paper_acc = {}
    for row in sp["rows"]:
        q = QuantizerSpec.from_params(row["defense"])
        label = q.label if q else _BASELINE_LABELS.get(row["variant"] or "none", row["method"])
        if row["paper"] is not None:
            for e, a in zip(sp["eps"], row["paper"]):
                paper_acc[(label, round(e, 8))] = a
    out = []
    for (label, eps), g in sub.groupby(["label", "eps"], sort=False):
        n_ = int(g["n"].max())
        line = {"defense": label, "method": g["method"].iloc[0], "ε": paper.eps_label(dataset, eps), "eps": eps,
                "n": n_}
        for attack in _ORDER:
            a = g[g["attack"] == attack]
            if not len(a):
                continue
            a = _suite_budget(a[a["n"] == a["n"].max()], dataset)
            m = int(a["n"].iloc[0])
            # an attack run on a prefix of the images: its column says on how many
            line[attack if m == n_ else f"{attack} (first {m})"] = round(100 * a["accuracy"].iloc[0], 1)
        w = g[g["attack"] == "worst-case"]
        if len(w):
            line["worst-case 95% CI"] = f"[{100 * w['ci_lo'].iloc[0]:.1f}, {100 * w['ci_hi'].iloc[0]:.1f}]"
            obl = line.get("oblivious-pgd")
            line["drop (points)"] = None if obl is None else round(obl - line["worst-case"], 1)
        line["paper (oblivious)"] = paper_acc.get((label, round(eps, 8)))   # the paper's ε, either reading
        out.append(line)
    frame = pd.DataFrame(out)
    # attack columns in the order of _ORDER (a prefix run beside its attack), then the rest
    head = ["defense", "method", "ε", "eps", "n"]
    cols = [c for attack in _ORDER for c in frame.columns if c == attack or c.startswith(attack + " (first")]
    frame = frame[head + cols + [c for c in frame.columns if c not in head + cols]]
    rank = {m: i for i, m in enumerate(("none", "fastat", "bitdepth", "randdisc", "prd", "swrd"))}
    frame["_r"] = frame["method"].map(rank)
    return frame.sort_values(["_r", "defense", "eps"]).drop(columns=["_r", "method"]).reset_index(drop=True)


#: Attack columns of :func:`adaptive_table`, weakest threat model first.
_ORDER = ("oblivious-pgd", "bpda-pgd", "bpda-eot-apgd-ce", "bpda-eot-apgd-dlr", "square", "worst-case")


def slug(label: str) -> str:
    """A glue-friendly name for a defense label: ``"swRD (s=4, k=25)"`` -> ``"swrd_s4_k25"``,
    ``"1-bit"`` -> ``"1bit"``."""
    import re

    return re.sub(r"[^a-z0-9]+", "_", label.lower().replace("=", "")).strip("_").replace("1_bit", "1bit") \
        .replace("5_bit", "5bit")


def adaptive_claims(frame) -> dict:
    """The numbers the chapter's verdict rests on, computed from :func:`adaptive_frame`: per dataset
    and ε reading, at each cell's largest n, every defense's oblivious and worst-case accuracy, and
    whether the quantizers do better than the bit-depth baseline under the worst case (their 95%
    intervals do not overlap), as a flat dict for myst-nb glue (``{dataset}_{reading}_{eps}_{defense}_...``).
    Per cell also: ``best_quantizer`` (the quantizer row with the highest worst case, with its
    ``_worst`` and ``_oblivious`` accuracy), ``largest_drop`` (the most points any quantizer loses
    from the oblivious attack to the worst case, and its ``_label``), ``bitdepth_label`` and
    ``bitdepth_worst``, ``above_fastat`` / ``below_fastat`` (the quantizers whose worst-case interval
    lies above / below adversarial training's), and ``rd_worst_min`` / ``_max`` and
    ``rd_oblivious_min`` / ``_max`` (the range over the pRD and swRD rows, the journal version's defenses)."""
    out = {}
    if frame.empty:
        return out
    for (dataset, reading, eps), g in frame.groupby(["dataset", "eps_reading", "eps"], sort=False):
        n = int(g["n"].max())
        g = g[g["n"] == n]
        tag = f"{dataset}_{reading}_{paper.eps_label(dataset, eps).replace('/', '_').replace('.', 'p')}"
        out[f"{tag}_n"] = n
        worst = {}
        for label, h in g.groupby("label", sort=False):
            key = f"{tag}_{slug(label)}"
            for attack in ("oblivious-pgd", "worst-case", "bpda-eot-apgd-ce", "square"):
                a = h[h["attack"] == attack]
                if len(a):
                    out[f"{key}_{attack.replace('-', '_')}"] = round(100 * float(a["accuracy"].iloc[0]), 1)
            w = h[h["attack"] == "worst-case"]
            if len(w):
                worst[label] = (float(w["ci_lo"].iloc[0]), float(w["ci_hi"].iloc[0]), h["method"].iloc[0])
                out[f"{key}_worst_lo"] = round(100 * worst[label][0], 1)
                out[f"{key}_worst_hi"] = round(100 * worst[label][1], 1)
        quant = {lab: v for lab, v in worst.items() if v[2] in paper.QUANTIZERS}
        if quant:
            best = max(quant, key=lambda lab: out[f"{tag}_{slug(lab)}_worst_case"])
            out[f"{tag}_best_quantizer"] = best
            out[f"{tag}_best_quantizer_worst"] = out[f"{tag}_{slug(best)}_worst_case"]
            out[f"{tag}_best_quantizer_oblivious"] = out.get(f"{tag}_{slug(best)}_oblivious_pgd")
            drops = {lab: out[f"{tag}_{slug(lab)}_oblivious_pgd"] - out[f"{tag}_{slug(lab)}_worst_case"]
                     for lab in quant if f"{tag}_{slug(lab)}_oblivious_pgd" in out}
            if drops:
                big = max(drops, key=drops.get)
                out[f"{tag}_largest_drop_label"] = big
                out[f"{tag}_largest_drop"] = round(drops[big], 1)
        base = [v for v in worst.values() if v[2] == "bitdepth"]
        if base:
            lab_b = next(lab for lab, v in worst.items() if v[2] == "bitdepth")
            out[f"{tag}_bitdepth_label"] = lab_b
            out[f"{tag}_bitdepth_worst"] = out[f"{tag}_{slug(lab_b)}_worst_case"]
            lo_b, hi_b, _ = base[0]
            beats = [lab for lab, (lo, hi, m) in worst.items() if m in paper.QUANTIZERS and lo > hi_b]
            below = [lab for lab, (lo, hi, m) in worst.items() if m in paper.QUANTIZERS and hi < lo_b]
            out[f"{tag}_beat_bitdepth"] = ", ".join(beats) if beats else "none"
            out[f"{tag}_below_bitdepth"] = ", ".join(below) if below else "none"
        advt = [v for v in worst.values() if v[2] == "fastat"]
        if advt:
            lo_a, hi_a, _ = advt[0]
            above = [lab for lab, (lo, hi, m) in worst.items() if m in paper.QUANTIZERS and lo > hi_a]
            below = [lab for lab, (lo, hi, m) in worst.items() if m in paper.QUANTIZERS and hi < lo_a]
            out[f"{tag}_above_fastat"] = ", ".join(above) if above else "none"
            out[f"{tag}_below_fastat"] = ", ".join(below) if below else "none"
        # the journal version's two defenses (pRD, swRD): their worst cases and oblivious accuracies
        rd = [lab for lab, v in worst.items() if v[2] in ("prd", "swrd")]
        for what, key in (("worst", "worst_case"), ("oblivious", "oblivious_pgd")):
            vals = [out[f"{tag}_{slug(lab)}_{key}"] for lab in rd if f"{tag}_{slug(lab)}_{key}" in out]
            if vals:
                out[f"{tag}_rd_{what}_min"], out[f"{tag}_rd_{what}_max"] = min(vals), max(vals)
    return out


#: The headline cells the chapter's verdict rests on: per dataset, the radius and ε reading, the
#: images every attack runs on (``n``), and ``prefix``: the attacks run on fewer images (the first
#: ``prefix[key]`` of the same nested subset), because they cost too much on a CPU (Square's random
#: search). :func:`headline_n` reads it.
HEADLINE = {"mnist": {"eps": 0.32, "eps_reading": "normalized", "n": 500, "prefix": {"square": 100}},
            "cifar10": {"eps": 8 / 255, "eps_reading": "pixels", "n": 500, "prefix": {"square": 50}}}
#: Restarts of the main attack (APGD-CE with BPDA and EOT, the suite's budget) on every quantizer of a
#: headline cell, as one more attack of the cell: on CIFAR-10 restarts still lower the worst case
#: (:func:`convergence_worst_case`), so every quantizer gets them, not only the convergence study's.
HEADLINE_RESTARTS = {"cifar10": 3}
_MAIN = ("oblivious-pgd", "bpda-pgd", "bpda-eot-apgd-ce")


def headline_n(dataset: str, attack: str) -> int:
    """The images attack ``attack`` (a key of :func:`attack_suite`) runs on in the headline cell of
    ``dataset`` (:data:`HEADLINE`): its ``prefix`` entry, else ``n``."""
    h = HEADLINE[spec(dataset).name]
    return int(h.get("prefix", {}).get(attack, h["n"]))


#: The ε curves: per dataset, one entry per ε reading, the main attacks (:data:`_MAIN`) on every
#: defense at each radius (read as ``eps_reading``) on the first ``n`` test images. CIFAR-10: every
#: radius of Table 2 on pixels, on the first 100 of the headline's images (at the headline radius these
#: runs count in the headline cell's worst case for the images they saw, :func:`worst_case`). MNIST: the
#: three largest radii of Table 1 on both readings chapter 3 studies -- normalized inputs (where chapter 3
#: reproduces the table; the reproduction study's radii) and pixels (the literal reading) -- on 100
#: images (its RandDisc and swRD cells cost minutes each on a CPU).
CURVES = {"cifar10": ({"eps_reading": "pixels", "n": 100},),
          "mnist": ({"eps_reading": "normalized", "n": 100, "eps": VARIANT_SETTINGS["table1"]["eps"]},
                    {"eps_reading": "pixels", "n": 100, "eps": VARIANT_SETTINGS["table1"]["eps"]})}


def curve_spec(dataset: str, eps_reading: str | None = None) -> dict:
    """The entry of :data:`CURVES` for ``dataset`` read as ``eps_reading`` (default: its first)."""
    name = spec(dataset).name
    specs = CURVES[name]
    if eps_reading is None:
        return specs[0]
    for c in specs:
        if c["eps_reading"] == eps_reading:
            return c
    raise ValueError(f"eps_reading must be one of {[c['eps_reading'] for c in specs]} for {name}, got {eps_reading!r}")


def curve_eps(dataset: str, eps_reading: str | None = None) -> list[float]:
    """The radii (on [0, 1], as read) of a curve of :data:`CURVES` (:func:`curve_spec`): its ``eps``
    where given, else the paper's table radii above 0."""
    name = spec(dataset).name
    c = curve_spec(name, eps_reading)
    if "eps" in c:
        return [float(e) for e in c["eps"]]
    return [e / paper.UNITS[name] for e in paper.TABLES[paper.TABLE_DATASETS[name]][1] if e > 0]


def curve_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The records of the ε curves (:data:`CURVES`), as ``(kind, params)``."""
    cells = []
    for name, specs in CURVES.items():
        suite = attack_suite(name)
        for c in specs:
            for eps in curve_eps(name, c["eps_reading"]):
                for r in defense_rows(name):
                    cells += [("adaptive", adaptive_params(name, r["defense"], eps, suite[key], c["n"], seed,
                                                           r["variant"], c["eps_reading"]))
                              for key in _MAIN if runs_attack(r, key)]
    return cells


def run_curves(dataset: str, eps_reading: str | None = None, *, seed: int = 0, device: str = "cpu",
               progress: bool = True) -> list[dict]:
    """Run (or load) the ε curves of ``dataset`` (:data:`CURVES`): all its readings, or only
    ``eps_reading``."""
    name = spec(dataset).name
    readings = [c["eps_reading"] for c in CURVES[name]] if eps_reading is None else [eps_reading]
    out = []
    for reading in readings:
        c = curve_spec(name, reading)
        out += run_adaptive_grid(name, curve_eps(name, reading), c["n"], attacks=_MAIN, eps_reading=reading,
                                 seed=seed, device=device, progress=progress)
    return out


def curves_frame(seed: int = 0):
    """:func:`adaptive_frame` of the stored ε-curve records (:func:`curve_cells`), worst case included."""
    records = _stored(curve_cells(seed))
    return adaptive_frame(records)


def curve_summary(curves, dataset: str, eps_reading: str) -> dict:
    """What the chapter says of one ε curve (:func:`curves_frame` rows of ``dataset`` read as
    ``eps_reading``), under the worst case per image: ``radii`` (how many), ``n``, ``above_fastat`` (at
    how many radii some quantizer's 95% interval lies above adversarial training's) and, at the
    smallest and largest radius (prefix ``min_`` / ``max_``): ``eps`` (its label), ``best`` (the
    quantizer with the highest worst case), ``best_worst`` and ``best_oblivious`` (its worst case and
    oblivious accuracy), ``fastat`` and ``bitdepth`` (the baselines' worst cases), all in %. Empty
    when the curve has no quantizer records."""
    nan = float("nan")
    sub = curves[(curves["dataset"] == dataset) & (curves["eps_reading"] == eps_reading)] if len(curves) else curves
    if sub.empty:
        return {}
    worst = sub[sub["attack"] == "worst-case"]
    quant = worst[worst["method"].isin(paper.QUANTIZERS)]
    if quant.empty:
        return {}

    def acc(rows, method, e):
        a = rows[(rows["eps"] == e) & (rows["method"] == method)]
        return 100 * float(a["accuracy"].iloc[0]) if len(a) else nan

    eps_all = sorted(quant["eps"].unique())
    out = {"radii": len(eps_all), "n": int(curve_spec(dataset, eps_reading)["n"]), "above_fastat": 0}
    for e in eps_all:
        fa = worst[(worst["eps"] == e) & (worst["method"] == "fastat")]
        if len(fa) and (quant[quant["eps"] == e]["ci_lo"] > float(fa["ci_hi"].iloc[0])).any():
            out["above_fastat"] += 1
    obl = sub[sub["attack"] == "oblivious-pgd"]
    for tag, e in (("min", eps_all[0]), ("max", eps_all[-1])):
        q = quant[quant["eps"] == e].sort_values("accuracy", ascending=False).iloc[0]
        o = obl[(obl["eps"] == e) & (obl["label"] == q["label"])]
        out.update({f"{tag}_eps": paper.eps_label(dataset, e), f"{tag}_best": q["label"],
                    f"{tag}_best_worst": 100 * float(q["accuracy"]),
                    f"{tag}_best_oblivious": 100 * float(o["accuracy"].iloc[0]) if len(o) else nan,
                    f"{tag}_fastat": acc(worst, "fastat", e), f"{tag}_bitdepth": acc(worst, "bitdepth", e)})
    return out


def headline_frame(frame=None):
    """The rows of :func:`adaptive_frame` (or of ``frame``) in the headline cells (:data:`HEADLINE`): per
    defense and attack the run on the most images (an attack run only on a prefix keeps its prefix run),
    the suite's budget where a cell holds several (the convergence study, restarts; they count in the
    worst case, which is computed before), and the worst case at the cell's largest n. Only the
    classifiers of the headline's rows (:func:`defense_rows`) count: records of the same cell on other
    weights (the classifiers trained on quantized images) are other rows with the same label."""
    frame = adaptive_frame() if frame is None else frame
    if frame.empty:
        return frame
    variants = {name: {r["variant"] for r in defense_rows(name)} for name in HEADLINE}

    def in_headline(r):
        h = HEADLINE.get(r["dataset"])
        variant = None if r["variant"] is None or r["variant"] != r["variant"] else r["variant"]
        return (h is not None and abs(r["eps"] - h["eps"]) < 1e-8 and r["eps_reading"] == h["eps_reading"]
                and variant in variants[r["dataset"]])

    keep = frame.apply(in_headline, axis=1)
    sub = frame[keep]
    sub = sub[sub["n"] == sub.groupby(["dataset", "label", "attack"])["n"].transform("max")]
    parts = [_suite_budget(g, name) for (name, _, _), g in sub.groupby(["dataset", "label", "attack"], sort=False)]
    return sub.iloc[0:0] if not parts else \
        __import__("pandas").concat(parts).sort_values(["dataset", "method", "s", "k", "attack"]).reset_index(drop=True)


def headline_full_coverage(seed: int = 0):
    """The headline cells' worst case over only the attacks that ran on all of the cell's ``n`` images
    (:func:`headline_n`), as ``worst-case`` rows of :func:`adaptive_frame`: every image faced the same
    attacks. The headline worst case (:func:`headline_frame`) also counts the runs on a prefix (Square,
    the convergence study, the ε curve), so on those first images it is over more attacks; the gap
    between the two says how much the extra attacks found."""
    records = []
    for name, h in HEADLINE.items():
        cells = [(k, p) for k, p in chapter_cells(seed) if p["dataset"] == name and p["n"] == h["n"]
                 and abs(p["eps"] - h["eps"]) < 1e-8 and p["eps_reading"] == h["eps_reading"]]
        records += _stored(cells)
    frame = adaptive_frame(records) if records else adaptive_frame([])
    return frame[frame["attack"] == "worst-case"].reset_index(drop=True) if len(frame) else frame


def _suite_budget(rows, dataset: str):
    """Of several runs of one attack in one cell (``rows``, one attack key), those at the suite's budget
    (:func:`attack_suite`) if there are any, else all of them."""
    suite = attack_suite(dataset)
    key = rows["attack"].iloc[0]
    if len(rows) < 2 or key not in suite:
        return rows
    b = suite[key]
    at = rows[(rows["steps"] == b.steps) & (rows["eot"] == b.eot) & (rows["votes"] == b.votes)
              & (rows["restarts"].fillna(1) == b.restarts)]
    return at if len(at) else rows


def run_headline(dataset: str, *, seed: int = 0, device: str = "cpu", progress: bool = True) -> list[dict]:
    """Run (or load) the headline cells of ``dataset`` (:data:`HEADLINE`): every defense under every attack
    of the suite, each on :func:`headline_n` images."""
    name = spec(dataset).name
    h = HEADLINE[name]
    kw = dict(eps_reading=h["eps_reading"], seed=seed, device=device, progress=progress)
    out = []
    for n in sorted({headline_n(name, key) for key in attack_suite(name)}, reverse=True):
        keys = [key for key in attack_suite(name) if headline_n(name, key) == n]
        out += run_adaptive_grid(name, [h["eps"]], n=n, attacks=keys, **kw)
    return out


def restart_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The restart runs of :data:`HEADLINE_RESTARTS`: per headline dataset, APGD-CE at the suite's budget
    with that many random starts (per image the first that succeeds) on every quantizer row."""
    cells = []
    for name, r in HEADLINE_RESTARTS.items():
        h, b = HEADLINE[name], attack_suite(name)["bpda-eot-apgd-ce"]
        a = AttackSpec("apgd", "adaptive", steps=b.steps, eot=b.eot, loss=b.loss, restarts=r)
        cells += [("adaptive", adaptive_params(name, row["defense"], h["eps"], a, h["n"], seed, row["variant"],
                                               h["eps_reading"]))
                  for row in defense_rows(name) if row["method"] in ("randdisc", "prd", "swrd")]
    return cells


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """The ``adaptive`` records the chapter's verdict rests on: the convergence study and the
    headline cells (:data:`CONVERGENCE`, :data:`HEADLINE`), as ``(kind, params)``."""
    cells = convergence_cells(seed) + curve_cells(seed) + restart_cells(seed)
    for name, h in HEADLINE.items():
        suite = attack_suite(name)
        for r in defense_rows(name):
            cells += [("adaptive", adaptive_params(name, r["defense"], h["eps"], suite[key], headline_n(name, key),
                                                   seed, r["variant"], h["eps_reading"]))
                      for key in suite if runs_attack(r, key)]
    return cells
