"""Real datasets (MNIST, CIFAR-10, SVHN) as float tensors in [0, 1], verified by checksum.

``load_dataset(name, split, n)`` looks, in order, for:

1. a **mirror folder** named by the environment variable ``VQDBOOK_DATA`` holding the ``.npz``
   layout of ``shared/data/PROVENANCE.md`` (``mnist.npz``; ``cifar10_train_1.npz``,
   ``cifar10_train_2.npz``, ``cifar10_test.npz``; ``svhn.npz`` with ``x_train, y_train, x_test,
   y_test``). Each archive's SHA-256 is checked against the value this module knows (or, for a file
   it does not know, against a ``SHA256SUMS`` file in the mirror).
2. **torchvision** datasets under ``data/raw`` (already downloaded, or downloaded now; torchvision
   verifies its own MD5s). This is the only route to SVHN here.
3. the **bundled evaluation subsets** committed under ``data/bundled`` (1,000 stratified test
   images each of MNIST and CIFAR-10, made from the real data by ``vqdbook data bundle``), so the
   book builds offline on a fresh clone. Because a bundle is exactly ``load_dataset(name, "test",
   1000)`` of the full data, it is used before a download is attempted whenever it can answer.

Subsets are class-stratified and *nested*: classes are interleaved round-robin, each class in a
fixed seeded order, and ``n`` takes the first ``n`` of that order. So the first 100 images of a
1,000-image subset are the 100-image subset, and every prefix is as balanced as the data allows.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import PROJECT_ROOT
from .provenance import sha256_file

__all__ = ["DatasetSpec", "DATASETS", "DataUnavailableError", "spec", "load_dataset", "stratified_order",
           "stratified_indices", "verify_file", "bundle_path", "make_bundles", "ENV_VAR", "RAW_DIR",
           "BUNDLE_DIR", "BUNDLE_N", "SPLITS", "KNOWN_SHA256"]

ENV_VAR = "VQDBOOK_DATA"
RAW_DIR = PROJECT_ROOT / "data" / "raw"
BUNDLE_DIR = PROJECT_ROOT / "data" / "bundled"
BUNDLE_N = 1000
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    size: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: split -> list of (archive, x key, y key) in the mirror folder, concatenated in order
    mirror: dict
    paper_scale: str  # how the paper quotes sigma, tau, eps for this dataset


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", 1, 28, tuple(str(i) for i in range(10)), (0.1307,), (0.3081,),
        {"train": [("mnist.npz", "x_train", "y_train")], "test": [("mnist.npz", "x_test", "y_test")]},
        "[0,1]"),
    "cifar10": DatasetSpec(
        "cifar10", 3, 32,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        {"train": [("cifar10_train_1.npz", "x_train", "y_train"), ("cifar10_train_2.npz", "x_train", "y_train")],
         "test": [("cifar10_test.npz", "x_test", "y_test")]},
        "0-255"),
    "svhn": DatasetSpec(
        "svhn", 3, 32, tuple(str(i) for i in range(10)),
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        {"train": [("svhn.npz", "x_train", "y_train")], "test": [("svhn.npz", "x_test", "y_test")]},
        "0-255"),
}

#: SHA-256 of the mirror archives (shared/data/PROVENANCE.md).
KNOWN_SHA256 = {
    "mnist.npz": "290bf974740ecfe91d1a02b98c88b22d78409fa36bd249be9ac57511faabd73b",
    "cifar10_train_1.npz": "803784e6f2014e7a63d1e61289ca57082444597f044cc79b680ccac858feff06",
    "cifar10_train_2.npz": "1105178313921d70cb91a5c179cb58faa9ef3f4b161395948b0839411e749590",
    "cifar10_test.npz": "19f8938d55b8384460c364b8c4186f3d793e3f5d6779542fb8b7a115d17bdae0",
}


class DataUnavailableError(RuntimeError):
    """No source could provide the requested data; the message says what to set or download."""


def spec(name: str | DatasetSpec) -> DatasetSpec:
    """The :class:`DatasetSpec` of a dataset name (``"cifar10"``, ``"CIFAR-10"``, ...); a spec is returned
    as it is, so functions may be handed either and resolve it once."""
    if isinstance(name, DatasetSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {sorted(DATASETS)}; got {type(name).__name__}")
    key = name.lower().replace("-", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset name={name!r}; allowed: {sorted(DATASETS)}")
    return DATASETS[key]


# ----------------------------------------------------------------------------- subsets

def stratified_order(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """All indices of ``y`` in a class-interleaved, seeded order (see module docstring).

    Round ``j`` takes the ``j``-th image of every class that still has one, classes in label
    order; within a class the order is a permutation drawn from ``numpy.random.default_rng(seed)``.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    longest = max(len(p) for p in per_class)
    # column-major read of a (classes x longest) table padded with -1
    table = np.full((len(per_class), longest), -1, dtype=np.int64)
    for i, p in enumerate(per_class):
        table[i, : len(p)] = p
    order = table.T.reshape(-1)
    return order[order >= 0]


def stratified_indices(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """The first ``n`` indices of :func:`stratified_order` (class-balanced, nested in ``n``)."""
    return stratified_order(y, seed)[:n]


# ----------------------------------------------------------------------------- sources

def _mirror_dir() -> Path | None:
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataUnavailableError(f"{ENV_VAR}={value!r} is not a folder; point it at a folder of .npz "
                                   "files laid out as in shared/data/PROVENANCE.md, or unset it")
    return path.resolve()


def _expected_sha256(folder: Path, filename: str) -> str | None:
    if filename in KNOWN_SHA256:
        return KNOWN_SHA256[filename]
    sums = folder / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == filename:
                return parts[0]
    return None


@lru_cache(maxsize=None)
def _verified(path: str, size: int, mtime: float, expected: str | None) -> None:
    # keyed on size and mtime so a file replaced on disk is checked again
    if expected is None:
        raise DataUnavailableError(f"{path}: no known SHA-256 and no SHA256SUMS entry beside it; "
                                   "add one (sha256sum FILE >> SHA256SUMS) so the file can be verified")
    actual = sha256_file(path)
    if actual != expected:
        raise DataUnavailableError(f"{path} is corrupt or not the expected file: SHA-256 {actual} != "
                                   f"{expected}. Replace it with a good copy.")


def verify_file(path: Path, expected: str | None) -> None:
    st = path.stat()
    _verified(str(path), st.st_size, st.st_mtime, expected)


@lru_cache(maxsize=8)
def _load_mirror(folder: str, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder_p = Path(folder)
    xs, ys = [], []
    for filename, xkey, ykey in spec(name).mirror[split]:
        path = folder_p / filename
        if not path.is_file():
            raise FileNotFoundError(path)
        verify_file(path, _expected_sha256(folder_p, filename))
        with np.load(path) as z:
            xs.append(z[xkey])
            ys.append(z[ykey])
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _torchvision_dataset(name: str, split: str, download: bool):
    import torchvision.datasets as tvd

    root = str(RAW_DIR)
    if name == "mnist":
        return tvd.MNIST(root, train=split == "train", download=download)
    if name == "cifar10":
        return tvd.CIFAR10(root, train=split == "train", download=download)
    return tvd.SVHN(root, split=split, download=download)


@lru_cache(maxsize=8)
def _load_torchvision(name: str, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine should fail in seconds, not hang
    try:
        ds = _torchvision_dataset(name, split, download)
    finally:
        socket.setdefaulttimeout(old)
    if name == "mnist":
        x, y = ds.data.numpy()[..., None], ds.targets.numpy()
    elif name == "cifar10":
        x, y = ds.data, np.asarray(ds.targets)
    else:
        x, y = ds.data.transpose(0, 2, 3, 1), np.asarray(ds.labels)
    return np.ascontiguousarray(x), y.astype(np.int64)


def bundle_path(name: str) -> Path:
    return BUNDLE_DIR / f"{name}_test_{BUNDLE_N}.npz"


@lru_cache(maxsize=4)
def _load_bundle(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = bundle_path(name)
    if not path.is_file():
        raise FileNotFoundError(path)
    verify_file(path, _expected_sha256(BUNDLE_DIR, path.name))
    with np.load(path) as z:
        return z["x"], z["y"].astype(np.int64), z["index"].astype(np.int64)


def _raw(name: str, split: str, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 NHWC images and labels of the requested subset, and the source they came from."""
    tried = []
    mirror = _mirror_dir()
    if mirror is not None:
        try:
            x, y = _load_mirror(str(mirror), name, split)
            idx = stratified_indices(y, n, seed) if n is not None else slice(None)
            return x[idx], y[idx], f"mirror {mirror}"
        except FileNotFoundError as e:
            tried.append(f"mirror {ENV_VAR}={mirror}: {Path(str(e)).name} missing")
    for download in (False, True):
        if download and name != "svhn" and split == "test" and seed == 0 and n is not None \
                and n <= BUNDLE_N and bundle_path(name).is_file():
            break  # the bundle answers exactly; don't try the network first
        try:
            x, y = _load_torchvision(name, split, download)
            idx = stratified_indices(y, n, seed) if n is not None else slice(None)
            return x[idx], y[idx], f"torchvision {RAW_DIR}"
        except (RuntimeError, OSError) as e:  # not present / download failed
            if download:
                tried.append(f"torchvision download into {RAW_DIR}: {type(e).__name__}: {e}")
    if split == "test" and bundle_path(name).is_file():
        if seed == 0 and n is not None and n <= BUNDLE_N:
            x, y, _ = _load_bundle(name)
            return x[:n], y[:n], f"bundled subset {bundle_path(name)}"
        tried.append(f"bundled subset {bundle_path(name).name}: holds only n<={BUNDLE_N}, seed=0 of the test split")
    hint = (f"set {ENV_VAR} to a folder with the .npz mirror (CI uses ../shared/data), or run where "
            f"torchvision can download into {RAW_DIR}")
    if name == "svhn":
        hint += ". SVHN has no offline source in this project: it needs torchvision's download"
    raise DataUnavailableError(f"no source for {name} split={split} n={n} seed={seed}. Tried: "
                               + "; ".join(tried or ["nothing"]) + f". To fix: {hint}.")


def load_dataset(name: str, split: str = "test", n: int | None = None, *, seed: int = 0,
                 return_source: bool = False):
    """Load a real dataset as ``(x, y)``.

    Args:
        name: ``"mnist"``, ``"cifar10"`` or ``"svhn"``.
        split: ``"train"`` or ``"test"``.
        n: take a class-stratified, nested subset of this size (``None``: the whole split).
        seed: selects the subset; same seed, same images.
        return_source: also return a string naming where the data came from.

    Returns:
        ``x``: ``float32`` tensor ``(N, C, H, W)`` in ``[0, 1]``; ``y``: ``int64`` tensor ``(N,)``.
        With ``return_source``, a third element: the source description.

    Raises:
        ValueError / TypeError: bad ``name``, ``split``, ``n`` or ``seed``.
        DataUnavailableError: no source has the data (the message says what to set or download).

    Examples::

        >>> from vqdbook import load_dataset
        >>> x, y = load_dataset("cifar10", "test", n=20)     # the bundled subset answers offline
        >>> tuple(x.shape), x.dtype, float(x.min()) >= 0 and float(x.max()) <= 1, len(set(y.tolist()))
        ((20, 3, 32, 32), torch.float32, True, 10)
    """
    import torch

    ds = spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"n must be an int or None; got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"n must be >= 1 (or None for the whole split); got {n}")
        n = int(n)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    x, y, source = _raw(ds.name, split, n, int(seed))
    if n is not None and len(y) < n:
        raise ValueError(f"n={n} exceeds the {len(y)} images of {ds.name} {split}")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().div_(255.0)
    yt = torch.from_numpy(np.ascontiguousarray(y))
    return (xt, yt, source) if return_source else (xt, yt)


def make_bundles(names=("mnist", "cifar10"), n: int = BUNDLE_N) -> dict[str, str]:
    """Write ``data/bundled/<name>_test_<n>.npz`` from the full data and update ``SHA256SUMS``.

    The bundle keeps the original test-set indices beside the images so its origin is checkable.
    """
    BUNDLE_DIR.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name in names:
        mirror = _mirror_dir()
        if mirror is None:
            raise DataUnavailableError(f"set {ENV_VAR} to the full data to build bundles")
        x, y = _load_mirror(str(mirror), name, "test")
        idx = stratified_indices(y, n, 0)
        path = BUNDLE_DIR / f"{name}_test_{n}.npz"
        np.savez_compressed(path, x=x[idx], y=y[idx], index=idx)
        sums[path.name] = sha256_file(path)
    sums_file = BUNDLE_DIR / "SHA256SUMS"
    old = {}
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            h, f = line.split()
            old[f] = h
    old.update(sums)
    sums_file.write_text("".join(f"{h}  {f}\n" for f, h in sorted(old.items())))
    _load_bundle.cache_clear()
    _verified.cache_clear()
    return sums
