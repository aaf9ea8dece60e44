"""vqdbook.models and vqdbook.train: shapes, committed weights, exact resume after a kill."""

import json
import math

import pytest
import torch

from vqdbook import models
from vqdbook.data import load_dataset
from vqdbook.models import build_model, load_pretrained


@pytest.mark.parametrize("arch,dataset,shape", [
    ("mnist_cnn", "mnist", (1, 28, 28)), ("resnet20", "cifar10", (3, 32, 32)),
    ("resnet18", "cifar10", (3, 32, 32)), ("resnet18", "mnist", (1, 28, 28)),
])
def test_shapes(arch, dataset, shape):
    net = build_model(arch, dataset).eval()
    out = net(torch.rand(2, *shape))
    assert out.shape == (2, 10)


def test_normalization_inside_the_model():
    net = build_model("resnet20", "cifar10")
    norm = net[0]
    x = torch.rand(1, 3, 4, 4)
    assert torch.allclose(norm(x), (x - norm.mean) / norm.std)


def test_unknown_arch():
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg", "mnist")
    with pytest.raises(ValueError, match="mnist_cnn"):
        build_model("mnist_cnn", "cifar10")


# Thresholds sit a few points under each card's full-test-set accuracy: the bundled 1,000 images
# are a sample of the same test set, so a model that loads correctly clears them easily, and a
# model with scrambled weights scores ~10%.
@pytest.mark.parametrize("card", models.list_cards(), ids=lambda c: c["name"])
def test_committed_weights_accuracy_on_bundled_subset(card, monkeypatch):
    monkeypatch.delenv("VQDBOOK_DATA", raising=False)
    net = load_pretrained(card["dataset"], card["arch"], card.get("variant"))
    assert not net.training
    x, y = load_dataset(card["dataset"], "test", n=1000)
    acc = models.accuracy(net, x, y)
    assert acc >= card["test_accuracy"] - 0.03, (acc, card["test_accuracy"])


def test_default_models_exist_with_cards():
    for dataset in ("mnist", "cifar10"):
        card = models.load_card(dataset)
        assert card["sha256"] and card["test_accuracy"] > 0.8 and card["n_test"] == 10000


def test_weights_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    net = build_model("mnist_cnn", "mnist")
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    sha = models.save_weights(net, models.weights_path("mnist", "mnist_cnn", "t"))
    card = {"name": "x", "dataset": "mnist", "arch": "mnist_cnn", "sha256": sha}
    models.card_path("mnist", "mnist_cnn", "t").write_text(json.dumps(card))
    load_pretrained("mnist", "mnist_cnn", "t")  # loads
    card["sha256"] = "0" * 64
    models.card_path("mnist", "mnist_cnn", "t").write_text(json.dumps(card))
    with pytest.raises(RuntimeError, match="does not match"):
        load_pretrained("mnist", "mnist_cnn", "t")


@pytest.mark.usefixtures("mnist_train_split")
def test_train_resume_after_kill_gives_the_same_weights(tmp_path):
    from vqdbook.train import train

    kw = dict(epochs=2, batch_size=64, n_train=256, n_test=100, progress=False, lr=0.05)
    straight = train("mnist", "mnist_cnn", out_dir=tmp_path / "a", checkpoint_dir=tmp_path / "ca", **kw)
    stopped = train("mnist", "mnist_cnn", out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb",
                    stop_after=1, **kw)
    assert stopped["status"] == "stopped" and not (tmp_path / "b").exists()
    resumed = train("mnist", "mnist_cnn", out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb", **kw)
    wa = torch.load(tmp_path / "a" / "mnist_mnist_cnn.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "mnist_mnist_cnn.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert straight["test_accuracy"] == resumed["test_accuracy"]
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    # a changed configuration must not silently resume someone else's checkpoint
    with pytest.raises(RuntimeError, match="another configuration"):
        train("mnist", "mnist_cnn", out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb",
              **{**kw, "lr": 0.01})


def test_eps_ramp_scales_eps_and_alpha_linearly():
    from vqdbook.train import _ramped

    adv = {"eps": 0.3, "alpha": 0.1, "steps": 5, "eps_ramp_epochs": 2}
    half = _ramped(adv, 100, 100)                 # one epoch of a two-epoch ramp
    assert half["eps"] == pytest.approx(0.15) and half["alpha"] == pytest.approx(0.05) and half["steps"] == 5
    assert _ramped(adv, 500, 100)["eps"] == 0.3   # after the ramp: the full radius
    assert _ramped({"eps": 0.3, "alpha": 0.1}, 1, 100)["eps"] == 0.3


def test_mart_loss_gradient_is_finite_when_probabilities_underflow():
    """A confident net gives softmax probabilities that are exactly 0; MART's KL must not turn
    them into NaN gradients (F.kl_div's gradient in its target is log 0 there)."""
    import torch.nn as nn

    from vqdbook.train import _loss

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.mul_(1e4)                     # logit gaps of thousands: exact zeros in softmax
    x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    xb = torch.cat([x, (x + 0.1).clamp(0, 1)])
    loss = _loss("mart", net, net(xb[8:]), xb, y, {"beta": 6.0})
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.usefixtures("mnist_train_split")
def test_grad_clip_is_validated_and_recorded(tmp_path):
    from vqdbook.train import train

    for bad in (0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="grad_clip"):
            train("mnist", "mnist_cnn", epochs=1, n_train=64, grad_clip=bad, out_dir=tmp_path, progress=False)
    card = train("mnist", "mnist_cnn", epochs=1, batch_size=32, n_train=64, n_test=20, progress=False,
                 method="mart", grad_clip=1.0, out_dir=tmp_path / "w", checkpoint_dir=tmp_path / "c")
    assert card["config"]["grad_clip"] == 1.0 and math.isfinite(card["history"][0]["loss"])


@pytest.mark.usefixtures("mnist_train_split")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["fastat", "mart"])
def test_adversarial_training_runs_on_cuda(tmp_path, method):
    from vqdbook.train import train

    card = train("mnist", "mnist_cnn", epochs=1, batch_size=32, n_train=128, n_test=50, progress=False,
                 method=method, device="cuda", out_dir=tmp_path / "w", checkpoint_dir=tmp_path / "c")
    assert card["hardware"]["device"] == "cuda" and math.isfinite(card["history"][0]["loss"])
