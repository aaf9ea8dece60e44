"""The paper as data: the published numbers AND the settings of Dong & Mao (arXiv 2305.13651v1).

Everything else in the package imports the paper's settings from here; nothing retypes them.
Two kinds of values live here, kept apart by their comments:

* **the paper's numbers** (Tables 1-3, clean accuracies, Section 4.4's SVHN figure) in the paper's
  own units: MNIST radii on [0, 1], CIFAR-10 / SVHN radii on the 0-255 scale, accuracies in %;
* **the paper's settings** (Section 4.1-4.4: sigma, tau, beta, the PGD protocols, the (s, k) of
  every table row and figure) converted to the **[0, 1] scale** the package works on, with the
  paper's own value in a comment. Noise levels and radii divide by 255; beta, which multiplies a
  *squared* distance in eq. (2), multiplies by 255**2 (:func:`from_paper_scale`).

Where the paper is silent (the s, k grid of Figure 4, SVHN-only Figure 5 on CIFAR-10), the
choice is ours and the comment says so. Nothing here is a result of this project.
"""

from __future__ import annotations

from .validation import check_real

__all__ = [
    "METHOD_LABELS", "QUANTIZERS", "BASELINE_LABELS", "UNITS", "NOISE", "PGD",
    "CLEAN_ACCURACY", "TABLE1_EPS", "TABLE1", "TABLE2_EPS", "TABLE2", "TABLE3_EPS", "TABLE3",
    "TABLES", "TABLE_DATASETS", "DATASET_LABELS", "FIG4_GRID", "FIG5_GRID", "FIG6", "FIG7", "FIG8", "FIG8_SVHN_EPS16",
    "default_sk", "from_paper_scale", "to_paper_units", "eps_label", "eps_unit_suffix",
]

# ----------------------------------------------------------------------------- names

#: The three quantizers, keyed as the package names them, with the paper's spelling.
METHOD_LABELS = {"randdisc": "RandDisc", "prd": "pRD", "swrd": "swRD"}
#: The quantizer keys, in the paper's order (pixel level, patches, sliding windows).
QUANTIZERS = tuple(METHOD_LABELS)
#: The adversarially trained baselines of Tables 1-3, keyed by the training method of
#: :mod:`vqdbook.train` (and the weights' variant name), with the paper's spelling.
BASELINE_LABELS = {"fastat": "Fast AdvT", "mart": "MART", "trades": "TRADES"}

# ----------------------------------------------------------------------------- units and settings

#: How the paper quotes sigma, tau and eps per dataset: the factor from the [0, 1] scale to the
#: paper's units (Section 4.1: MNIST on [0, 1], CIFAR-10 and SVHN on 0-255).
UNITS = {"mnist": 1.0, "cifar10": 255.0, "svhn": 255.0}

#: Section 4.1's quantizer noise and swRD blend per dataset, on the [0, 1] scale.
NOISE = {
    "mnist": {"sigma": 4 / 255, "tau": 4 / 255,     # paper: sigma = tau = 4/255 (quoted on [0, 1])
              "beta": 1.0},                         # paper: beta = 1 (quoted on [0, 1])
    "cifar10": {"sigma": 4 / 255, "tau": 4 / 255,   # paper: sigma = tau = 4 (0-255 scale)
                "beta": 0.1 * 255 ** 2},            # paper: beta = 0.1 (0-255 scale) -> 6502.5
    "svhn": {"sigma": 4 / 255, "tau": 4 / 255,      # paper: sigma = tau = 4 (0-255 scale)
             "beta": 0.5 * 255 ** 2},               # paper: beta = 0.5 (0-255 scale) -> 32512.5
}

#: Section 4.1's PGD protocols: steps and step size as a fraction of eps.
PGD = {
    "mnist": {"steps": 40, "alpha_over_eps": 1 / 20},    # PGD40, alpha = eps/20
    "cifar10": {"steps": 20, "alpha_over_eps": 1 / 10},  # PGD20, alpha = eps/10
    "svhn": {"steps": 20, "alpha_over_eps": 1 / 10},     # PGD20, alpha = eps/10
}

#: Clean test accuracy of the paper's naturally trained ResNet-18 base classifier f (Sec. 4.1), %.
CLEAN_ACCURACY = {"mnist": 98.85, "cifar10": 89.71, "svhn": 94.24}

# ----------------------------------------------------------------------------- Tables 1-3 (the paper's numbers)

#: Table 1 (MNIST, PGD40, α = ε/20): ε on [0, 1].
TABLE1_EPS = (0.0, 0.02, 0.04, 0.08, 0.16, 0.24, 0.32)
TABLE1 = [
    # method, s, k, accuracies at TABLE1_EPS
    ("Fast AdvT", None, None, (98.63, 98.12, 97.60, 96.77, 91.44, 87.69, 71.76)),
    ("MART", None, None, (98.24, 96.95, 96.07, 93.56, 90.61, 87.64, 82.58)),
    ("TRADES", None, None, (97.59, 96.68, 95.45, 93.15, 88.86, 78.14, 41.46)),
    ("RandDisc", 1, 2, (98.57, 98.07, 97.67, 96.51, 96.08, 94.56, 62.09)),
    ("pRD", 2, 2, (96.26, 96.12, 95.54, 94.26, 92.26, 91.55, 89.94)),
    ("swRD", 2, 2, (98.80, 98.28, 97.56, 96.77, 96.76, 96.52, 95.59)),
]

#: Table 2 (CIFAR-10, PGD20, α = ε/10): ε on 0–255.
TABLE2_EPS = (0, 2, 4, 8, 16)
TABLE2 = [
    ("Fast AdvT", None, None, (85.51, 73.67, 65.33, 58.65, 22.08)),
    ("MART", None, None, (83.07, 74.25, 65.39, 57.57, 32.19)),
    ("TRADES", None, None, (78.59, 71.27, 63.49, 47.39, 21.95)),
    ("RandDisc", 1, 10, (82.64, 59.10, 40.68, 19.77, 3.54)),
    ("RandDisc", 1, 20, (85.77, 50.61, 21.78, 3.82, 0.24)),
    ("RandDisc", 1, 25, (86.34, 47.31, 17.12, 2.16, 0.07)),
    ("pRD", 2, 10, (62.84, 59.11, 56.65, 52.82, 45.29)),
    ("pRD", 2, 20, (73.65, 66.31, 61.17, 53.51, 37.78)),
    ("swRD", 3, 25, (81.03, 75.32, 71.46, 66.88, 56.03)),
    ("swRD", 4, 25, (77.57, 74.03, 71.16, 68.04, 62.04)),
]

#: Table 3 (SVHN, PGD20, α = ε/10): ε on 0–255.
TABLE3_EPS = (0, 2, 4, 8, 16)
TABLE3 = [
    ("TRADES", None, None, (86.54, 65.55, 57.60, 42.70, 21.78)),
    ("RandDisc", 1, 2, (83.57, 74.11, 62.22, 47.31, 29.18)),
    ("RandDisc", 1, 4, (91.24, 69.76, 43.01, 14.30, 1.46)),
    ("RandDisc", 1, 8, (93.45, 63.48, 30.03, 5.09, 0.14)),
    ("pRD", 2, 2, (75.46, 68.89, 61.51, 52.72, 41.20)),
    ("pRD", 3, 4, (77.37, 71.59, 62.48, 51.14, 38.11)),
    ("pRD", 4, 8, (81.37, 71.76, 61.30, 47.26, 30.70)),
    ("swRD", 4, 2, (77.12, 71.43, 66.12, 57.28, 48.87)),
    ("swRD", 4, 4, (88.79, 80.90, 71.18, 57.72, 41.15)),
    ("swRD", 4, 8, (91.45, 80.22, 67.91, 48.02, 25.84)),
]

#: table -> (dataset, eps grid in the paper's units, rows)
TABLES = {"table1": ("mnist", TABLE1_EPS, TABLE1), "table2": ("cifar10", TABLE2_EPS, TABLE2),
          "table3": ("svhn", TABLE3_EPS, TABLE3)}
#: dataset -> its table
TABLE_DATASETS = {dataset: table for table, (dataset, _, _) in TABLES.items()}
#: dataset -> its name as the paper writes it
DATASET_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "svhn": "SVHN"}

# ----------------------------------------------------------------------------- figures

#: Figure 4 (accuracy vs s and k): the paper shows the trend but lists neither its grid nor its
#: radii; this grid is ours (s = 1 is RandDisc). Radii on [0, 1].
FIG4_GRID = {
    "mnist": {"s": (1, 2, 3, 4), "k": (2, 4, 8, 16), "eps": (0.0, 0.16, 0.32)},
    "cifar10": {"s": (1, 2, 3, 4), "k": (5, 10, 25, 50), "eps": (0.0, 8 / 255, 16 / 255)},
}
#: Figure 5 (accuracy vs sigma = tau): the paper's radii (PGD20, eps = 8 and 16 on 0-255) on SVHN;
#: the noise grid (0-255 units) and the two rows are ours, run on CIFAR-10 as well.
FIG5_GRID = {"noise_255": (0, 2, 4, 8, 16), "eps_255": (8, 16), "rows": (("prd", 2, 10), ("swrd", 4, 25))}
#: Figure 6 / Section 4.2: the KL estimate's settings (RandDisc, which has no s, uses s = 1 and the
#: same k); sigma = tau = 4 for both (read as 4/255, the NOISE entries); k_gmm components per
#: mixture (the paper: 2 on MNIST, 8 on CIFAR-10); the radii are those of Tables 1 and 2.
FIG6 = {
    "mnist": {"s": 2, "k": 4, "k_gmm": 2, "eps": (0.02, 0.04, 0.08, 0.16, 0.24, 0.32)},
    "cifar10": {"s": 2, "k": 10, "k_gmm": 8, "eps": (2 / 255, 4 / 255, 8 / 255, 16 / 255)},
}
#: Figure 7 / Section 4.3: MNIST PGD40 eps = 0.32, k = 2, s = 2; CIFAR-10 PGD20 eps = 16 (0-255), k = 25, s = 2.
FIG7 = {"mnist": {"eps": 0.32, "s": 2, "k": 2}, "cifar10": {"eps": 16 / 255, "s": 2, "k": 25}}
#: Figure 8 / Section 4.4: (s, k) of pRD / t-pRD and swRD / t-swRD per dataset.
FIG8 = {"cifar10": {"prd": (2, 10), "swrd": (4, 25)}, "svhn": {"prd": (2, 2), "swrd": (4, 2)}}
#: Section 4.4: t-swRD on SVHN at eps = 16 (0-255) reaches 81.45%, 39.65 points above swRD.
FIG8_SVHN_EPS16 = {"t-swrd": 81.45, "gain_over_swrd": 39.65}


# ----------------------------------------------------------------------------- helpers

def default_sk(dataset: str, method: str) -> tuple[int, int]:
    """The (s, k) of the first row of ``method`` in ``dataset``'s table (the package's default)."""
    table = TABLE_DATASETS.get(dataset)
    if table is None:
        raise ValueError(f"dataset must be one of {sorted(TABLE_DATASETS)}; got {dataset!r}")
    label = METHOD_LABELS.get(method)
    for name, s, k, _ in TABLES[table][2]:
        if name == label:
            return s, k
    raise ValueError(f"method must be one of {QUANTIZERS}; got {method!r}")


def from_paper_scale(*, sigma=None, tau=None, eps=None, beta=None, scale: str = "0-255") -> dict:
    """Convert the paper's hyperparameters to the [0, 1] image scale used by this package.

    On the 0-255 scale (the paper's CIFAR-10 and SVHN numbers) noise levels and attack radii are
    divided by 255 (``sigma, tau, eps -> v / 255``), while beta -- which multiplies the *squared*
    patch distance in eq. (2) -- is multiplied by ``255**2`` (``beta -> beta * 255**2``), so that
    ``beta * ||p - p_hat||^2`` is unchanged. With ``scale="[0,1]"`` (the paper's MNIST numbers)
    values are returned unchanged. ``scale`` may also be a dataset name (see :data:`UNITS`).

    Returns a dict with the converted values of the arguments that were given.

    Examples::

        >>> from vqdbook.paper import from_paper_scale
        >>> from_paper_scale(sigma=4, beta=0.1) == {"sigma": 4 / 255, "beta": 6502.5}
        True
        >>> from_paper_scale(eps=0.3, scale="mnist")
        {'eps': 0.3}
    """
    if scale in UNITS:
        f = UNITS[scale]
    elif scale in ("0-255", "[0,1]"):
        f = 255.0 if scale == "0-255" else 1.0
    else:
        raise ValueError(f"scale must be '0-255', '[0,1]' or one of {sorted(UNITS)}, got {scale!r}")
    out = {}
    for name, v in (("sigma", sigma), ("tau", tau), ("eps", eps)):
        if v is not None:
            out[name] = check_real(v, name) / f
    if beta is not None:
        out["beta"] = check_real(beta, "beta", positive=True) * f * f
    return out


def to_paper_units(dataset: str, eps: float) -> float:
    """A radius (or noise level) on [0, 1] in the paper's units for ``dataset`` (CIFAR-10: x 255)."""
    return float(eps) * UNITS[dataset]


def eps_unit_suffix(dataset: str) -> str:
    """``"/255"`` where the paper quotes on 0-255, else ``""`` (for axis labels and captions)."""
    return "" if UNITS[dataset] == 1.0 else "/255"


def eps_label(dataset: str, eps: float) -> str:
    """A radius on [0, 1] as the paper writes it: ``"0.32"`` on MNIST, ``"8/255"`` on CIFAR-10 / SVHN.

    Examples::

        >>> from vqdbook.paper import eps_label
        >>> eps_label("cifar10", 8 / 255), eps_label("mnist", 0.32)
        ('8/255', '0.32')
    """
    return f"{to_paper_units(dataset, eps):.3g}{eps_unit_suffix(dataset)}"
