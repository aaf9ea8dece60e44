"""Section 3.5's classifiers trained on quantized images (t-pRD, t-swRD): the on-the-fly transform,
training runs with a quantizer (card, resume, frozen draw), argument checks, the CLI, and the
committed weights. Everything runs on MNIST with tiny subsets; the CIFAR-10 models are only loaded."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vqdbook import models, paper
from vqdbook.cli import main
from vqdbook.data import DataUnavailableError, load_dataset
from vqdbook.models import load_pretrained, tquant_spec, tquant_variant
from vqdbook.provenance import sha256_file
from vqdbook.quantizers import QuantizerSpec
from vqdbook.train import QuantizeTransform, train

TINY = dict(epochs=1, batch_size=32, n_train=64, n_test=50, progress=False)


def _images(n=6):
    x, _ = load_dataset("mnist", "test", n)      # the bundled subset: no VQDBOOK_DATA needed
    return x


# ----------------------------------------------------------------------------- the transform

def test_transform_draws_afresh_every_batch_and_epoch_and_a_seed_reproduces_them():
    x = _images()
    t = QuantizeTransform(tquant_spec("mnist", "swrd"), seed=3)
    t.start_epoch(0)
    a0, a0_again = t(x), t(x)                    # two batches of one epoch: fresh draws
    t.start_epoch(1)
    a1 = t(x)
    assert not torch.equal(a0, a0_again) and not torch.equal(a0, a1)
    assert a0.shape == x.shape and 0 <= a0.min() and a0.max() <= 1
    assert not a0.is_inference() and t.seconds > 0
    u = QuantizeTransform(tquant_spec("mnist", "swrd"), seed=3)
    u.start_epoch(1)
    assert torch.equal(u(x), a1)                 # same (seed, epoch): the same draws
    u.start_epoch(0)
    assert torch.equal(u(x), a0) and torch.equal(u(x), a0_again)
    v = QuantizeTransform(tquant_spec("mnist", "swrd"), seed=4)
    v.start_epoch(0)
    assert not torch.equal(v(x), a0)             # another seed: other draws
    assert t.params() == {"quantizer": tquant_spec("mnist", "swrd").params(), "draws": "on-the-fly", "seed": 3}


def test_transform_needs_an_epoch_and_a_spec():
    with pytest.raises(RuntimeError, match="start_epoch"):
        QuantizeTransform(tquant_spec("mnist", "prd"))(_images(1))
    with pytest.raises(TypeError, match="QuantizerSpec"):
        QuantizeTransform("swrd")
    with pytest.raises(TypeError, match="seed"):
        QuantizeTransform(tquant_spec("mnist", "prd"), seed=1.5)


class _Recorder(QuantizeTransform):
    """Remembers what every epoch made of every training image."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: dict[int, dict[bytes, torch.Tensor]] = {}

    def __call__(self, x):
        out = super().__call__(x)
        for xi, oi in zip(x, out):
            self.seen.setdefault(self.epoch, {})[xi.numpy().tobytes()] = oi
        return out


@pytest.mark.usefixtures("mnist_train_split")
def test_training_sees_a_new_quantized_copy_of_each_image_every_epoch(tmp_path):
    spec = tquant_spec("mnist", "prd")
    kw = dict(TINY, epochs=2, variant="rec", out_dir=tmp_path / "w")
    runs = []
    for i, stop in enumerate((None, 1)):          # the second run only repeats epoch 1, from the same seed
        rec = _Recorder(spec, seed=0)
        train("mnist", "mnist_cnn", transform=rec, checkpoint_dir=tmp_path / f"c{i}", stop_after=stop, **kw)
        runs.append(rec.seen)
    first, again = runs
    assert set(first) == {0, 1} and set(first[0]) == set(first[1]) and len(first[0]) == 64
    assert all(not torch.equal(first[0][key], first[1][key]) for key in first[0])
    assert set(again) == {0} and all(torch.equal(first[0][key], again[0][key]) for key in first[0])


# ----------------------------------------------------------------------------- training runs

@pytest.mark.usefixtures("mnist_train_split")
def test_tiny_run_writes_a_card_with_the_quantizer_and_both_accuracies(tmp_path):
    spec = tquant_spec("mnist", "swrd")
    card = train("mnist", "mnist_cnn", quantizer=spec, init="natural", out_dir=tmp_path / "w",
                 checkpoint_dir=tmp_path / "c", **TINY)
    assert card["variant"] == "t-swrd" and card["name"] == "mnist_mnist_cnn_t-swrd"
    assert card["quantizer"] == spec.params() == QuantizerSpec.from_params(card["quantizer"]).params()
    assert card["quantizer_label"] == "swRD (s=2, k=2)" and card["draws"] == "on-the-fly"
    assert card["init"] == {"from": "natural", "weights": "mnist_mnist_cnn.pt",
                            "sha256": models.load_card("mnist")["sha256"]}
    assert card["epochs"] == 1 and card["lr"] == card["config"]["lr"]
    for key in ("test_accuracy", "quantized_test_accuracy", "natural_quantized_test_accuracy"):
        assert 0.5 <= card[key] <= 1, key        # started from the 99.6% natural weights
    assert card["quantized_test_seed"] == 0 and card["n_test"] == 50
    assert 0 < card["history"][0]["seconds_transform"] <= card["history"][0]["seconds"]
    on_disk = json.loads((tmp_path / "w" / "mnist_mnist_cnn_t-swrd.json").read_text())
    assert on_disk["sha256"] == sha256_file(tmp_path / "w" / "mnist_mnist_cnn_t-swrd.pt")


@pytest.mark.usefixtures("mnist_train_split")
def test_resume_after_a_kill_gives_the_same_weights(tmp_path):
    kw = dict(TINY, epochs=2, quantizer=tquant_spec("mnist", "prd"), init="natural")
    straight = train("mnist", "mnist_cnn", out_dir=tmp_path / "a", checkpoint_dir=tmp_path / "ca", **kw)
    stopped = train("mnist", "mnist_cnn", out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb", stop_after=1, **kw)
    assert stopped["status"] == "stopped"
    resumed = train("mnist", "mnist_cnn", out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb", **kw)
    wa = torch.load(tmp_path / "a" / "mnist_mnist_cnn_t-prd.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "mnist_mnist_cnn_t-prd.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    assert straight["quantized_test_accuracy"] == resumed["quantized_test_accuracy"]
    # another quantizer must not resume this checkpoint
    with pytest.raises(RuntimeError, match="another configuration"):
        train("mnist", "mnist_cnn", out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb", variant="t-prd",
              **{**kw, "quantizer": tquant_spec("mnist", "prd").replace(k=3)})


@pytest.mark.usefixtures("mnist_train_split")
def test_frozen_draw_is_named_and_recorded(tmp_path):
    card = train("mnist", "mnist_cnn", quantizer=tquant_spec("mnist", "prd"), frozen_draw=True,
                 out_dir=tmp_path / "w", checkpoint_dir=tmp_path / "c", **TINY)
    assert card["variant"] == "t-prd-frozen" and card["draws"] == "frozen" and "init" not in card
    assert card["frozen_draw_seconds"] >= 0 and "seconds_transform" not in card["history"][0]


# ----------------------------------------------------------------------------- names and settings

def test_variant_names_and_settings_are_defined_once():
    assert tquant_variant("prd") == "t-prd" and tquant_variant("swRD") == "t-swrd"
    for method, (s, k) in paper.FIG8["cifar10"].items():
        q = tquant_spec("cifar10", method)
        assert (q.s, q.k) == (s, k) and q == QuantizerSpec.paper("cifar10", method, s, k)
        assert tquant_variant(q, "cifar10") == tquant_variant(method)
    for method in ("prd", "swrd"):
        q = tquant_spec("mnist", method)
        assert (q.s, q.k) == paper.default_sk("mnist", method)
    q = tquant_spec("cifar10", "prd")
    assert tquant_variant(q.replace(k=20), "cifar10") == "t-prd-s2-k20"
    assert tquant_variant(q.replace(sigma=0.0), "cifar10").startswith("t-prd-s2-k10-")
    assert tquant_variant(q, "cifar10", frozen=True) == "t-prd-frozen"


@pytest.mark.parametrize("call, error, message", [
    (lambda: tquant_spec("mnist", "bitdepth"), ValueError, "Section 3.5"),
    (lambda: tquant_spec("imagenet", "prd"), ValueError, "dataset"),
    (lambda: tquant_variant(tquant_spec("mnist", "prd")), TypeError, "dataset"),
    (lambda: train("mnist", "mnist_cnn", quantizer="swrd"), TypeError, "QuantizerSpec"),
    (lambda: train("mnist", "mnist_cnn", quantizer=QuantizerSpec.bitdepth(1)), ValueError, "quantizer.method"),
    (lambda: train("mnist", "mnist_cnn", quantizer=tquant_spec("mnist", "prd"), method="fastat"), ValueError,
     "does not combine"),
    (lambda: train("mnist", "mnist_cnn", quantizer=tquant_spec("mnist", "prd"), transform=lambda x: x),
     ValueError, "not both"),
    (lambda: train("mnist", "mnist_cnn", quantizer=tquant_spec("mnist", "prd").replace(s=2, k=500)), ValueError,
     "k must be in"),
    (lambda: train("mnist", "mnist_cnn", frozen_draw=True), ValueError, "needs quantizer"),
    (lambda: train("mnist", "mnist_cnn", init="imagenet"), ValueError, "init must be"),
    (lambda: train("mnist", "mnist_cnn", init="natural"), ValueError, "name a variant"),
    (lambda: load_pretrained("svhn", variant="t-swrd"), FileNotFoundError, "--quantizer swrd --from natural"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("extra, message", [
    (["--s", "2"], "--s needs --quantizer"),
    (["--k", "2", "--frozen-draw"], "--k and --frozen-draw need --quantizer"),
    (["--from", "natural"], "needs --variant"),
    (["--quantizer", "prd", "--method", "fastat"], "not with --method fastat"),
    (["--quantizer", "randdisc", "--s", "2"], "s must be 1 for RandDisc"),
    (["--quantizer", "prd", "--s", "2", "--k", "1000"], "k must be in [1, 196]"),
    (["--quantizer", "swrd", "--s", "0"], "--s must be >= 1"),
    (["--quantizer", "bitdepth"], "invalid choice"),
    (["--from", "scratch", "--quantizer", "prd"], "invalid choice"),
])
def test_cli_refuses_bad_combinations(extra, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "mnist", "--arch", "mnist_cnn", *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_reports_missing_data_with_the_loaders_message_only(monkeypatch):
    from vqdbook import train as train_module

    def unavailable(name, *a, **kw):
        raise DataUnavailableError(f"no source for {name}; SVHN has no offline source in this project")

    monkeypatch.setattr(train_module, "load_dataset", unavailable)
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "svhn", "--arch", "resnet20", "--quantizer", "swrd", "--from", "natural"])
    assert e.value.code == "vqdbook train: no source for svhn; SVHN has no offline source in this project"


@pytest.mark.usefixtures("mnist_train_split")
def test_cli_trains_on_quantized_images(tmp_path, monkeypatch):
    from vqdbook import train as train_module

    weights = tmp_path / "weights"
    weights.mkdir()
    for suffix in (".pt", ".json"):               # the natural weights the fine-tuning starts from
        shutil.copy(models.WEIGHTS_DIR / f"mnist_mnist_cnn{suffix}", weights)
    monkeypatch.setattr(train_module, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(models, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(train_module, "CHECKPOINT_DIR", tmp_path / "ckpt")
    assert main(["train", "--dataset", "mnist", "--arch", "mnist_cnn", "--n-train", "64", "--n-test", "20",
                 "--epochs", "1", "--quantizer", "prd", "--k", "3", "--from", "natural"]) == 0
    card = json.loads((weights / "mnist_mnist_cnn_t-prd-s2-k3.json").read_text())
    assert card["quantizer"] == tquant_spec("mnist", "prd").replace(k=3).params()
    assert load_pretrained("mnist", variant="t-prd-s2-k3") is not None


# ----------------------------------------------------------------------------- the committed models

#: The t-models in data/weights.
COMMITTED = [("mnist", "prd"), ("mnist", "swrd"), ("cifar10", "prd"), ("cifar10", "swrd")]


@pytest.mark.parametrize("dataset, method", COMMITTED, ids=lambda v: v)
def test_committed_tquant_models_load_and_match_their_cards(dataset, method):
    variant = tquant_variant(method)
    net = load_pretrained(dataset, variant=variant)
    assert not net.training
    card = models.load_card(dataset, variant=variant)
    arch = models.DEFAULT_ARCH[dataset]
    assert card["sha256"] == sha256_file(models.weights_path(dataset, arch, variant))
    assert card["quantizer"] == tquant_spec(dataset, method).params() and card["draws"] == "on-the-fly"
    natural = models.load_card(dataset)
    assert card["init"] == {"from": "natural", "weights": natural["weights"], "sha256": natural["sha256"]}
    assert card["n_test"] == 10000 and card["n_train"] == {"mnist": 60000, "cifar10": 50000}[dataset]
    for key in ("test_accuracy", "quantized_test_accuracy"):
        assert 0.5 < card[key] <= 1, key
    # f on quantized images may be far lower (CIFAR-10 pRD), but not at chance
    assert 0.2 < card["natural_quantized_test_accuracy"] <= 1
    # Section 3.5's point: f̂ labels quantized clean images better than f does
    assert card["quantized_test_accuracy"] >= card["natural_quantized_test_accuracy"] - 0.002
