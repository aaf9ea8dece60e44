"""vqdbook.data: shapes, ranges, stratification, checksums and every bad input."""

import shutil

import numpy as np
import pytest
import torch

from vqdbook import data
from vqdbook.data import DataUnavailableError, load_dataset, stratified_indices, stratified_order

SHARED = data.PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.fixture
def mirror(monkeypatch):
    if not (SHARED / "mnist.npz").is_file():
        pytest.skip(f"full data mirror not found at {SHARED}")
    monkeypatch.setenv(data.ENV_VAR, str(SHARED))
    return SHARED


@pytest.mark.parametrize("name,shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_bundled_shapes_and_ranges(no_mirror, name, shape):
    x, y, source = load_dataset(name, "test", n=200, return_source=True)
    assert "bundled" in source
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape) == (200, *shape) and tuple(y.shape) == (200,)
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10


def test_stratified_order_is_nested_and_balanced():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=5000)
    order = stratified_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(5000))  # a permutation
    for n in (10, 57, 400):
        idx = stratified_indices(y, n, seed=3)
        assert np.array_equal(idx, order[:n])
        counts = np.bincount(y[idx], minlength=10)
        assert counts.max() - counts.min() <= 1
    assert not np.array_equal(stratified_indices(y, 100, 3), stratified_indices(y, 100, 4))


def test_same_seed_same_subset_and_bundle_matches_full_data(mirror, monkeypatch):
    x1, y1 = load_dataset("cifar10", "test", n=300, seed=0)
    x2, y2 = load_dataset("cifar10", "test", n=300, seed=0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = load_dataset("cifar10", "test", n=300, seed=1)
    assert not torch.equal(x1, x3)
    monkeypatch.delenv(data.ENV_VAR)
    xb, yb, source = load_dataset("cifar10", "test", n=300, return_source=True)
    assert "bundled" in source
    assert torch.equal(x1, xb) and torch.equal(y1, yb)


def test_full_mirror_sizes(mirror):
    x, y = load_dataset("mnist", "test")
    assert x.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    _, y = load_dataset("cifar10", "train", n=1000)
    assert torch.bincount(y).tolist() == [100] * 10


def test_bundle_checksums_match_sums_file():
    from vqdbook.provenance import sha256_file

    lines = (data.BUNDLE_DIR / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line)
    assert set(sums) == {"mnist_test_1000.npz", "cifar10_test_1000.npz"}
    for name, sha in sums.items():
        assert sha256_file(data.BUNDLE_DIR / name) == sha


def test_corrupt_mirror_file_is_detected(tmp_path, monkeypatch):
    if not (SHARED / "mnist.npz").is_file():
        pytest.skip("full data mirror not found")
    bad = tmp_path / "mnist.npz"
    shutil.copy(SHARED / "mnist.npz", bad)
    with open(bad, "r+b") as f:  # flip one byte in the middle
        f.seek(1_000_000)
        b = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([b[0] ^ 0xFF]))
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(DataUnavailableError, match="corrupt"):
        load_dataset("mnist", "test", n=10)


def test_corrupt_bundle_is_detected(tmp_path, monkeypatch, no_mirror):
    folder = tmp_path / "bundled"
    shutil.copytree(data.BUNDLE_DIR, folder)
    with open(folder / "mnist_test_1000.npz", "r+b") as f:
        f.seek(5000)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(data, "BUNDLE_DIR", folder)
    data._load_bundle.cache_clear()
    try:
        with pytest.raises(DataUnavailableError, match="corrupt"):
            load_dataset("mnist", "test", n=10)
    finally:
        data._load_bundle.cache_clear()


def test_mirror_file_without_known_checksum_is_refused(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "svhn.npz", x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.zeros(2))
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(DataUnavailableError, match="SHA256SUMS"):
        load_dataset("svhn", "test", n=2)


def test_missing_source_says_what_to_do(no_mirror):
    with pytest.raises(DataUnavailableError, match="VQDBOOK_DATA"):
        load_dataset("mnist", "test", n=10, seed=5)  # the bundle only holds seed 0
    with pytest.raises(DataUnavailableError, match="SVHN"):
        load_dataset("svhn", "test", n=10)


def test_env_var_not_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DataUnavailableError, match="not a folder"):
        load_dataset("mnist", "test", n=10)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(name="imagenet"), ValueError, "name"),
    (dict(name=3), TypeError, "name"),
    (dict(name="mnist", split="val"), ValueError, "split"),
    (dict(name="mnist", n=0), ValueError, "n must be"),
    (dict(name="mnist", n=-3), ValueError, "n must be"),
    (dict(name="mnist", n=2.5), TypeError, "n must be"),
    (dict(name="mnist", n=True), TypeError, "n must be"),
    (dict(name="mnist", seed="a"), TypeError, "seed"),
])
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_dataset(**kwargs)


def test_n_larger_than_split(mirror):
    with pytest.raises(ValueError, match="exceeds"):
        load_dataset("mnist", "test", n=10001)
