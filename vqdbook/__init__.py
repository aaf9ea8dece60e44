"""vqdbook: vector-quantization adversarial defenses (Dong & Mao, arXiv 2305.13651), reproduced.

Importing the package does nothing but define names: no downloads, no seeding, no plot style
(and no torch import until a name that needs it is used). Call :func:`vqdbook.setup` for those.

The main names are at the top level, as in torchattacks::

    >>> import torch, vqdbook
    >>> q = vqdbook.paper_quantizer("mnist", "swrd", s=2, k=2, generator=torch.Generator().manual_seed(0))
    >>> type(q).__name__, vqdbook.SWRD is type(q)
    ('SWRD', True)

Layers (imports point down only): ``paper``, ``validation``, ``provenance`` (ground); ``data``,
``models``, ``train``, ``parallel``, ``kmeans``, ``quantizers``, ``attacks``, ``defense``, ``kl``,
``certify``, ``metrics`` (core); ``results`` and ``experiments`` (runners: records and frames);
``plots``, ``widgets``, ``bench``, ``cli`` (the face).
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path

#: Top-level name -> the module that defines it (imported on first use).
_LAZY = {
    "RandDisc": "quantizers", "PRD": "quantizers", "SWRD": "quantizers", "QuantizerSpec": "quantizers",
    "paper_quantizer": "quantizers", "PGD": "attacks", "paper_pgd": "attacks", "Defended": "defense",
    "load_dataset": "data", "load_pretrained": "models", "Square": "square",
}

__all__ = ["__version__", "setup", "PROJECT_ROOT", *_LAZY]

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


def __getattr__(name: str):
    """The top-level names of :data:`_LAZY`, imported from their module on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vqdbook' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
