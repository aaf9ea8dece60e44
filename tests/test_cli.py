"""The command line as a contract: ``main([...])`` on each command with small arguments writes its
records (through the functions it calls) where the package says, and refuses bad combinations at
parse time with a message."""

from __future__ import annotations

import numpy as np
import pytest

from vqdbook import __version__, data, results
from vqdbook.cli import main
from vqdbook.experiments import adversarial


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Records, adversarial examples, weights and bundles go to a temporary folder."""
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(adversarial, "ADV_CACHE", tmp_path / "adv")
    return tmp_path


def _kinds(root):
    return sorted(p.parent.name for p in (root / "results").glob("*/*.json"))


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "fig6", "--datasets", "svhn"], "settings for mnist, cifar10 only"),
    (["run", "certified", "--datasets", "svhn"], "settings for mnist, cifar10 only"),
    (["run", "fig5", "--datasets", "mnist"], "0–255 datasets"),
    (["run", "table1", "--datasets", "mnist"], "--datasets applies to"),
    (["run", "fig4", "--attack", "pgd-oblivious-strong"], "--attack applies to the tables only"),
    (["run", "variants", "--full"], "--full applies to tables and figures"),
    (["run", "table1", "--n", "0"], "--n must be >= 1"),
    (["run", "table9"], "invalid choice"),
    (["run", "variants", "--variants", "nope"], "invalid choice"),
    (["train", "--dataset", "imagenet", "--arch", "resnet20"], "invalid choice"),
    (["bench", "gpu"], "invalid choice"),
])
def test_bad_combinations_are_refused_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_run_table_fig7_variants(sandbox, capsys):
    assert main(["run", "table1", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "swRD" in out and "ε=0.32 ours" in out
    assert main(["run", "fig7", "--datasets", "mnist", "--n", "4"]) == 0
    assert main(["run", "variants", "--tables", "table1", "--variants", "protocol", "--n", "4"]) == 0
    kinds = _kinds(sandbox)
    assert kinds.count("fig7") == 1
    # Table 1: every trained row (no defense, 3 quantizers, the trained baselines) at its 7 radii; the
    # study's "protocol" variant at n=4 is the table's own cells at its 3 radii: no new records
    assert kinds.count("robust_accuracy") >= 7 * 4


def test_run_fig6_and_certified(sandbox):
    argv = ["--datasets", "mnist", "--n", "1", "--samples", "40", "--mc", "200"]
    assert main(["run", "fig6", *argv]) == 0
    assert main(["run", "certified", *argv]) == 0
    kinds = _kinds(sandbox)
    assert kinds.count("kl") == 3 * 6 and kinds.count("certified") == 3 * 6   # 3 quantizers x 6 radii


def test_bench_writes_its_record(sandbox, capsys):
    assert main(["bench", "kl"]) == 0
    assert "record:" in capsys.readouterr().out
    assert _kinds(sandbox) == ["bench_kl"]


def test_train_writes_weights_and_card(sandbox, monkeypatch):
    from vqdbook import models, train

    try:
        data.load_dataset("mnist", "train", 64)
    except data.DataUnavailableError:
        pytest.skip("MNIST train split unavailable (set VQDBOOK_DATA)")
    monkeypatch.setattr(train, "WEIGHTS_DIR", sandbox / "weights")
    monkeypatch.setattr(models, "WEIGHTS_DIR", sandbox / "weights")
    monkeypatch.setattr(train, "CHECKPOINT_DIR", sandbox / "ckpt")
    assert main(["train", "--dataset", "mnist", "--arch", "mnist_cnn", "--n-train", "64", "--epochs", "1",
                 "--variant", "cli"]) == 0
    assert sorted(p.name for p in (sandbox / "weights").iterdir()) == ["mnist_mnist_cnn_cli.json",
                                                                      "mnist_mnist_cnn_cli.pt"]


def test_data_bundle_rebuilds_the_committed_subsets(sandbox, monkeypatch):
    if data._mirror_dir() is None:
        pytest.skip(f"the full data is not available (set {data.ENV_VAR})")
    committed = {}
    for name in ("mnist", "cifar10"):
        with np.load(data.bundle_path(name)) as z:
            committed[name] = {key: z[key] for key in ("x", "y", "index")}
    monkeypatch.setattr(data, "BUNDLE_DIR", sandbox / "bundled")
    try:
        assert main(["data", "bundle"]) == 0
        for name, old in committed.items():
            path = data.bundle_path(name)
            assert path.parent == sandbox / "bundled"
            with np.load(path) as new:
                assert all(np.array_equal(new[key], old[key]) for key in old)
    finally:
        data._load_bundle.cache_clear()
        data._verified.cache_clear()
