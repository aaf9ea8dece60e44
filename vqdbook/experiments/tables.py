"""Tables 1-3 (Section 4.1): one ``robust_accuracy`` record per (row, ε); frames and curves from them.

The rows are the paper's (:data:`vqdbook.paper.TABLES`): no defense, the adversarially trained
baselines (classifiers trained by :mod:`vqdbook.train`, no quantizer) and the quantizer rows with
the paper's (s, k) and Section 4.1's noise (:meth:`vqdbook.quantizers.QuantizerSpec.paper`).
"""

from __future__ import annotations

from .. import paper
from ..models import DEFAULT_ARCH
from ..quantizers import QuantizerSpec
from ..results import load_record
from .adversarial import NO_DEFENSE, model_available, robust_accuracy_record

__all__ = ["TABLE_ATTACKS", "DEFAULT_N", "BOOK_N", "STRENGTH_N", "table_spec", "table_cell_params", "run_table",
           "table_frame", "table_curves", "attack_strength_frame", "table_agreement", "chapter_cells"]

#: The attacks a whole table can be run with (both oblivious: x′ from PGD on f).
TABLE_ATTACKS = ("pgd-oblivious", "pgd-oblivious-strong")
#: Test images per cell of ``vqdbook run tableN`` on 2 CPU cores (``--full``: the 10,000 of the paper).
DEFAULT_N = 1000
#: Test images behind the records the book shows: the full test sets.
BOOK_N = {"table1": 10000, "table2": 10000}
#: Test images behind the stronger-attack records the book shows.
STRENGTH_N = {"table1": 10000, "table2": 1000}


def table_spec(table: str) -> dict:
    """Dataset, ε grid (paper units and [0, 1]) and rows of one of the paper's Tables 1–3.

    Each row: ``method`` (the paper's label), ``variant`` (the classifier's weights variant, for
    the adversarially trained baselines), ``defense`` (a :meth:`QuantizerSpec.params` dict or
    :data:`NO_DEFENSE`) and ``paper`` (its accuracies, %).
    """
    if table not in paper.TABLES:
        raise ValueError(f"table must be one of {sorted(paper.TABLES)}; got {table!r}")
    dataset, eps_paper, rows = paper.TABLES[table]
    variants = {label: key for key, label in paper.BASELINE_LABELS.items()}
    out_rows = [{"method": "no defense", "variant": None, "defense": NO_DEFENSE, "paper": None}]
    for method, s, k, accs in rows:
        if method in variants:
            out_rows.append({"method": method, "variant": variants[method], "defense": NO_DEFENSE,
                             "paper": list(accs)})
        else:
            out_rows.append({"method": method, "variant": None,
                             "defense": QuantizerSpec.paper(dataset, method, s, k).params(), "paper": list(accs)})
    unit = paper.UNITS[dataset]
    return {"table": table, "dataset": dataset, "arch": DEFAULT_ARCH[dataset], "eps_paper": list(eps_paper),
            "eps": [e / unit for e in eps_paper], "rows": out_rows}


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


def _trained(sp, row) -> bool:
    return model_available(sp["dataset"], row["variant"])


def run_table(table: str, n: int = DEFAULT_N, seed: int = 0, device: str = "cpu", progress: bool = True,
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
    jobs = [(eps, row) for eps in sp["eps"] for row in sp["rows"] if _trained(sp, row)]
    return [robust_accuracy_record(**table_cell_params(sp, row, eps, n, seed, attack), device=device,
                                   batch_size=batch_size)
            for eps, row in tqdm(jobs, desc=f"{table} n={n}", disable=not progress)]


def table_frame(table: str, n: int = DEFAULT_N, seed: int = 0):
    """Our accuracy (±95% CI half-width) beside the paper's, per row and ε, from stored records.

    Returns a pandas DataFrame; missing records or untrained models show as text, not as numbers.
    """
    import pandas as pd

    sp = table_spec(table)
    out = []
    for row in sp["rows"]:
        d = row["defense"]
        line = {"method": row["method"], "s": d.get("s", "–"), "k": d.get("k", "–")}
        trained = _trained(sp, row)
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


def table_curves(table: str, n: int = DEFAULT_N, seed: int = 0, attack: str = "pgd-oblivious"):
    """A table as tidy curves for plotting: one line per (row, ε) with a record, or with a paper value.

    Columns: ``dataset, method, s, k, label, eps`` (on [0, 1]), ``eps_paper``, ``accuracy``, ``ci_lo``,
    ``ci_hi`` (fractions; NaN without a record) and ``paper`` (the paper's accuracy as a fraction;
    NaN where the paper has none). ``attrs["n"]`` is the image count.
    """
    import math

    import pandas as pd

    sp = table_spec(table)
    out = []
    for row in sp["rows"]:
        d = row["defense"]
        q = QuantizerSpec.from_params(d)
        trained = _trained(sp, row)
        for j, (eps, eps_p) in enumerate(zip(sp["eps"], sp["eps_paper"])):
            rec = load_record("robust_accuracy", table_cell_params(sp, row, eps, n, seed, attack)) if trained else None
            p = row["paper"][j] / 100 if row["paper"] is not None else math.nan
            if rec is None and math.isnan(p):
                continue
            r = rec["result"] if rec else {"accuracy": math.nan, "ci95": [math.nan, math.nan]}
            out.append({"dataset": sp["dataset"], "method": row["method"], "s": d.get("s"), "k": d.get("k"),
                        "label": q.label if q else row["method"], "eps": eps, "eps_paper": eps_p,
                        "accuracy": r["accuracy"], "ci_lo": r["ci95"][0], "ci_hi": r["ci95"][1], "paper": p})
    frame = _integer_sk(pd.DataFrame(out))
    frame.attrs["n"] = n
    return frame


def attack_strength_frame(table: str, n: int = DEFAULT_N, seed: int = 0, largest_only: bool = False):
    """The paper's PGD against :data:`vqdbook.attacks.STRONG_PGD` (both oblivious: x′ from f), per
    row and ε > 0, from stored records: a defense or baseline whose accuracy drops a lot under the
    stronger attack was scored by too weak an attack. Cells without both records are left out;
    with ``largest_only`` each row keeps only its ε with the largest drop."""
    import pandas as pd

    sp = table_spec(table)
    out = []
    for row in sp["rows"]:
        if not _trained(sp, row):
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
                        "paper's PGD (%)": round(a, 1), "strong PGD (%)": round(b, 1),
                        "drop (points)": round(a - b, 1)})
    frame = _integer_sk(pd.DataFrame(out))
    if largest_only and not frame.empty:
        keep = frame.groupby(["method", "s", "k"], sort=False, dropna=False)["drop (points)"].idxmax()
        frame = frame.loc[keep].reset_index(drop=True)
    frame.attrs["n"] = n
    return frame


def table_agreement(tables=("table1", "table2"), n: int = DEFAULT_N, seed: int = 0):
    """Per quantizer / baseline row and ε: our accuracy, its 95% CI, the paper's value, whether the
    paper's value lies in our interval, and the gap in points. Only cells with a stored record."""
    import pandas as pd

    out = []
    for table in tables:
        sp = table_spec(table)
        for row in sp["rows"]:
            if row["paper"] is None or not _trained(sp, row):
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


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """Every record the book's tables render, as ``(kind, params)``: each trained row of Tables 1
    and 2 at every ε and :data:`BOOK_N` images (tests check that each one exists)."""
    cells = []
    for table, n in BOOK_N.items():
        sp = table_spec(table)
        cells += [("robust_accuracy", table_cell_params(sp, row, eps, n, seed))
                  for row in sp["rows"] if _trained(sp, row) for eps in sp["eps"]]
    return cells
