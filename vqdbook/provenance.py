"""Where a number came from: package versions, hardware and the repository commit.

Every record (model card, experiment result, benchmark) embeds :func:`provenance` so a reader
can tell which code, library versions and machine produced it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from . import PROJECT_ROOT, __version__

__all__ = ["sha256_file", "git_commit", "versions", "hardware", "provenance", "project_path"]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The repository's HEAD commit (with ``-dirty`` when the tree has edits), or None.

    ``$VQDBOOK_COMMIT`` overrides it: set it where the code runs from a copy of the tree
    without ``.git`` (a copy of the source tree on another machine), so records made there still name
    their commit.
    """
    if os.environ.get("VQDBOOK_COMMIT"):
        return os.environ["VQDBOOK_COMMIT"]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10).stdout
        return rev + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import numpy
    import sklearn
    import torch
    import torchvision

    return {"python": platform.python_version(), "vqdbook": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__}


def hardware(device: str | None = None) -> dict:
    import torch

    info = {"machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if device is not None:
        info["device"] = str(device)
    return info


def provenance(device: str | None = None) -> dict:
    """Versions, hardware and commit, for embedding in a record."""
    return {"versions": versions(), "hardware": hardware(device), "commit": git_commit()}


def project_path(*parts: str) -> Path:
    return PROJECT_ROOT.joinpath(*parts)
