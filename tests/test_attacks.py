"""PGD invariants, a cross-check against torchattacks, Defended's majority vote, bad inputs."""

import warnings

import pytest
import torch
import torch.nn as nn

from vqdbook.attacks import PGD, RandomizedDefenseWarning, ZeroGradientWarning, paper_pgd
from vqdbook.data import load_dataset
from vqdbook.defense import Defended
from vqdbook.models import accuracy, load_pretrained


@pytest.fixture(scope="module")
def mnist():
    net = load_pretrained("mnist")
    x, y = load_dataset("mnist", "test", n=200)
    return net, x, y


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_pgd_invariants(mnist, eps):
    net, x, y = mnist
    x_adv = PGD(net, eps=eps, alpha=eps / 4, steps=10, generator=torch.Generator().manual_seed(0))(x, y)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(net, x_adv, y) <= accuracy(net, x, y)


def test_more_steps_never_help_the_defender(mnist):
    net, x, y = mnist
    accs = []
    for steps in (1, 5, 20):
        x_adv = PGD(net, eps=0.15, alpha=0.15 / 4, steps=steps, random_start=False)(x, y)
        accs.append(accuracy(net, x_adv, y))
    assert accs[0] >= accs[1] >= accs[2]


def test_restores_train_mode(mnist):
    net, x, y = mnist
    net.train()
    PGD(net, eps=0.1, steps=2)(x[:8], y[:8])
    assert net.training
    net.eval()
    PGD(net, eps=0.1, steps=2)(x[:8], y[:8])
    assert not net.training


def test_paper_presets():
    net = nn.Linear(1, 1)
    a = paper_pgd(net, "mnist", 0.32)
    assert (a.steps, a.alpha) == (40, pytest.approx(0.016))
    b = paper_pgd(net, "cifar10", 8 / 255)
    assert (b.steps, b.alpha) == (20, pytest.approx(0.8 / 255))


def test_agrees_with_torchattacks(mnist):
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = mnist
    eps, alpha, steps = 0.2, 0.2 / 8, 12
    ours = accuracy(net, PGD(net, eps, alpha, steps, generator=torch.Generator().manual_seed(0))(x, y), y)
    torch.manual_seed(0)
    peer = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)
    theirs = accuracy(net, peer(x, y), y)
    assert abs(ours - theirs) <= 0.01 + 1e-9, (ours, theirs)


class CyclingQuantizer(nn.Module):
    """A stub 'quantizer' whose draws are known: it returns the images listed, in turn."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.i = outputs, 0

    def forward(self, x):
        out = self.outputs[self.i % len(self.outputs)]
        self.i += 1
        return out


class FirstPixelClassifier(nn.Module):
    """Predicts the class stored in the first pixel of each image (as a one-hot logit)."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 4).float()


def test_majority_vote_is_what_it_claims():
    draws = [torch.tensor(v, dtype=torch.float32).view(2, 1, 1, 1) for v in ([1, 3], [2, 3], [1, 0], [1, 2], [2, 0])]
    d = Defended(FirstPixelClassifier(), CyclingQuantizer(draws), votes=5)
    x = torch.zeros(2, 1, 1, 1)
    freq = d(x)
    # image 0 drew labels 1,2,1,1,2 -> 1 wins 3:2; image 1 drew 3,3,0,2,0 -> tie 3 vs 0 -> smallest label
    assert torch.allclose(freq[0], torch.tensor([0, 0.6, 0.4, 0]))
    assert torch.allclose(freq[1], torch.tensor([0.4, 0, 0.2, 0.4]))
    d.quantizer.i = 0
    assert d.predict(x).tolist() == [1, 0]
    single = Defended(FirstPixelClassifier(), CyclingQuantizer(draws), votes=1)
    assert single.predict(x).tolist() == [1, 3]


def test_bpda_gives_identity_gradient_and_warnings():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    noisy = Defended(net, _Noise(), bpda=False)
    x, y = torch.rand(6, 1, 2, 2), torch.randint(0, 3, (6,))
    with pytest.warns(ZeroGradientWarning):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomizedDefenseWarning)
            PGD(noisy, eps=0.1, steps=1)(x, y)
    st = Defended(net, _Noise(), bpda=True)
    xr = x.clone().requires_grad_(True)
    st(xr).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    with pytest.warns(RandomizedDefenseWarning):            # randomized, attacked without EOT
        PGD(st, eps=0.1, steps=2)(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomizedDefenseWarning)
        PGD(st, eps=0.1, steps=2, eot_samples=2)(x, y)       # with EOT: no warning


def test_defended_mirrors_mode_and_attack_keeps_net_in_eval(mnist):
    """A white-box attack on a fresh ``Defended`` must not switch the wrapped net to training mode."""
    net, x, y = mnist
    net.eval()
    d = Defended(net, _Noise(), bpda=True)
    assert not d.training
    PGD(d, eps=0.1, steps=2, eot_samples=2, check=False)(x[:8], y[:8])
    assert not net.training and not d.training


class _Noise(nn.Module):
    def forward(self, x):
        return (x + 0.1 * torch.randn_like(x)).clamp(0, 1)


def test_restarts_keep_the_first_success_and_never_help_the_defender(mnist):
    """With restarts, an image counts as robust only if every start fails: accuracy under r
    restarts is at most that of the first run alone (the same first start, from the same seed)."""
    net, x, y = mnist
    x, y = x[:100], y[:100]
    one = PGD(net, eps=0.2, alpha=0.02, steps=5, generator=torch.Generator().manual_seed(0))(x, y)
    three = PGD(net, eps=0.2, alpha=0.02, steps=5, restarts=3, generator=torch.Generator().manual_seed(0))(x, y)
    assert (three - x).abs().max() <= 0.2 + 1e-6 and three.min() >= 0 and three.max() <= 1
    with torch.no_grad():
        fooled_one = net(one).argmax(1) != y
    assert torch.equal(three[fooled_one], one[fooled_one])     # the first run's successes are kept
    assert accuracy(net, three, y) <= accuracy(net, one, y)


def test_chunk_size_changes_speed_not_the_attack(mnist):
    """Images are attacked independently: chunks of 7, the CPU default and one batch of 200 agree
    (up to the last bits of the convolutions, which may pick other kernels per batch size)."""
    net, x, y = mnist
    runs = [PGD(net, eps=0.2, alpha=0.02, steps=5, generator=torch.Generator().manual_seed(0), chunk_size=c)(x, y)
            for c in (7, None, 200)]
    for other in runs[1:]:
        assert (other - runs[0]).abs().gt(1e-4).float().mean() < 1e-3   # a sign may flip where a gradient is ~0
        assert other.is_contiguous()
    assert accuracy(net, runs[0], y) == pytest.approx(accuracy(net, runs[2], y), abs=0.01)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(eps=-0.1), ValueError, "eps"), (dict(eps=2.0), ValueError, "eps"),
    (dict(steps=0), ValueError, "steps"), (dict(steps=2.5), TypeError, "steps"),
    (dict(alpha=-1.0), ValueError, "alpha"), (dict(eot_samples=0), ValueError, "eot_samples"),
    (dict(chunk_size=0), ValueError, "chunk_size"), (dict(chunk_size=True), TypeError, "chunk_size"),
    (dict(restarts=0), ValueError, "restarts"), (dict(restarts=2, random_start=False), ValueError, "restarts"),
])
def test_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PGD(nn.Linear(1, 1), **kwargs)


def test_bad_inputs(mnist, rejects_bad_inputs):
    net, x, y = mnist
    atk = PGD(net, eps=0.1, steps=1)
    rejects_bad_inputs(atk, x, y)
    with pytest.raises(TypeError, match="float"):
        atk((x[:2] * 255).to(torch.uint8), y[:2])
    with pytest.raises(ValueError, match="votes"):
        Defended(net, nn.Identity(), votes=0)
