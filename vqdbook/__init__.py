"""vqdbook: vector-quantization adversarial defenses (Dong & Mao, arXiv 2305.13651), reproduced.

Importing the package does nothing but define names: no downloads, no seeding, no plot style.
Call :func:`vqdbook.setup` for those.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "setup", "PROJECT_ROOT"]

from pathlib import Path

#: Repository root (the folder holding ``data/`` and ``book/``) when installed editable.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def setup(seed: int = 0, *, style: bool = True, threads: int | None = None) -> None:
    """Seed every RNG, set the book's plot style and (optionally) torch's thread count.

    Notebooks call this once, right after their imports, so each chapter is reproducible
    from a clean kernel.
    """
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(int(threads))
    if style:
        import matplotlib as mpl
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid")
        mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "image.cmap": "gray",
                             "axes.titlesize": "medium"})
