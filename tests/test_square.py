"""Square Attack: invariants, strength on the MNIST classifier, a cross-check against torchattacks,
batched votes on randomized models (``Defended``), query accounting, bad arguments, the model's mode.

The model's forward pass is nearly all the cost; the module runs with one intra-op thread (faster
than two on the shared 2-core machine) and keeps the MNIST runs to 100 images."""

import pytest
import torch
import torch.nn as nn

import vqdbook
from vqdbook.data import load_dataset
from vqdbook.defense import Defended
from vqdbook.metrics import wilson_interval
from vqdbook.models import accuracy, load_pretrained
from vqdbook.square import P_HALVINGS, Square, p_schedule


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mnist():
    net = load_pretrained("mnist").eval()
    x, y = load_dataset("mnist", "test", 100)
    return net, x, y


@pytest.fixture(scope="module")
def strong(mnist):
    """The MNIST classifier under Square at ε = 0.3 with 100 queries (shared by two tests)."""
    net, x, y = mnist
    atk = Square(net, eps=0.3, n_queries=100, generator=torch.Generator().manual_seed(0))
    return atk, atk(x, y)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _toy(seed=0, classes=10, hw=8):
    """A small linear classifier on (1, hw, hw) images, and images it classifies as labelled."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(hw * hw, classes)).eval()
    x = torch.rand(12, 1, hw, hw, generator=_gen(seed))
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


# ------------------------------------------------------------------------------------ (a), (b)

def test_stays_in_the_eps_ball_and_in_0_1(mnist, strong):
    _, x, _ = mnist
    atk, x_adv = strong
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_breaks_the_undefended_mnist_classifier(mnist, strong):
    """At ε = 0.3 a hundred queries take the accuracy from ≥ 95% to ≤ 20% (bounds with room for
    another float path), images stop when fooled, and the record matches the model."""
    net, x, y = mnist
    atk, x_adv = strong
    clean, adv = accuracy(net, x, y), accuracy(net, x_adv, y)
    assert clean >= 0.95
    assert adv <= 0.20, adv
    with torch.no_grad():
        fooled_now = net(x_adv).argmax(1) != y
    assert (atk.last_fooled == fooled_now).float().mean() >= 0.98     # the record matches the model
    q = atk.last_queries
    assert q.dtype == torch.int64 and q.shape == (100,)
    assert q.max() <= 100 and q.min() >= 1                             # all clean-correct, all queried
    assert q[~atk.last_fooled].eq(100).all()                           # the robust used the budget
    assert q[atk.last_fooled].float().mean() <= 40                     # easy images stop early


# ------------------------------------------------------------------------------------ (c)

def test_agrees_with_torchattacks(mnist):
    """Same cell (MNIST classifier, ε = 0.2, 30 queries, 100 images, 95% Wilson intervals).

    torchattacks never redraws a square that would change nothing, so part of its queries are
    wasted; ours with ``max_redraws = 1`` runs that same algorithm, and the two accuracies must lie
    in each other's interval. Ours as shipped redraws (as the original code) and is stronger: its
    interval must overlap torchattacks' and its accuracy must not exceed torchattacks' upper end.
    torchattacks draws one square and one sign per iteration for the whole batch, which correlates
    the images of a batch (its accuracy over one batch of 100 swings far more across seeds than a
    binomial would); it runs on 10 batches of 10 with their own seeds, so its images are nearly
    independent, as ours are. Both sides are seeded, so the outcome is fixed on a platform."""
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = mnist
    eps, n_queries, n = 0.2, 30, len(x)

    def correct(x_adv):
        return round(accuracy(net, x_adv, y) * n)

    matched = Square(net, eps=eps, n_queries=n_queries, generator=_gen(0))
    matched.max_redraws = 1
    ours_matched = correct(matched(x, y))
    ours = correct(Square(net, eps=eps, n_queries=n_queries, generator=_gen(0))(x, y))
    peer = []
    with torch.random.fork_rng(devices=[]):      # torchattacks reseeds the global RNG
        for g in range(10):
            sl = slice(10 * g, 10 * g + 10)
            peer.append(torchattacks.Square(net, eps=eps, n_queries=n_queries, seed=g)(x[sl], y[sl]))
    theirs = correct(torch.cat(peer))
    ci = {k: wilson_interval(v, n) for k, v in dict(ours=ours, matched=ours_matched, theirs=theirs).items()}
    msg = f"correct of {n}: ours {ours}, ours without redraw {ours_matched}, torchattacks {theirs}; CIs {ci}"
    assert ci["theirs"][0] <= ours_matched / n <= ci["theirs"][1], msg
    assert ci["matched"][0] <= theirs / n <= ci["matched"][1], msg
    assert ci["ours"][1] >= ci["theirs"][0] and ours / n <= ci["theirs"][1], msg


def test_redraws_make_every_proposal_change_the_image():
    """1-pixel squares on stripes at ±ε: half the sign draws change nothing; with redraws none do."""
    net, x, _ = _toy()
    atk, eps = Square(net, eps=0.1), 0.1
    best = (x + eps * torch.where(torch.arange(8) % 2 == 0, 1.0, -1.0).view(1, 1, 1, 8)).clamp(0, 1)
    rows = cols = torch.arange(8)

    def unchanged(redraws):
        new = atk._propose(x, best, 1, rows, cols, _gen(0), redraws)
        assert ((new - x).abs() <= eps + 1e-6).all() and ((new != best).flatten(1).sum(1) <= 1).all()
        return int((new == best).flatten(1).all(1).sum())

    assert unchanged(64) == 0
    assert unchanged(1) > 0


# ------------------------------------------------------------------------------------ (d) votes

class _Recorder(nn.Module):
    """Wraps a model; records every input batch and whether it was called in training mode."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs, self.modes = net, [], []

    def forward(self, x):
        self.inputs.append(x.clone())
        self.modes.append(self.training)
        return self.net(x)


def test_votes_go_through_the_model_as_one_batch():
    net, x, _ = _toy()
    rec = _Recorder(net)
    s = Square(rec, votes=3).scores(x[:5])
    assert len(rec.inputs) == 1 and rec.inputs[0].shape[0] == 15
    assert torch.equal(rec.inputs[0], x[:5].repeat_interleave(3, 0))     # copies of image i adjacent
    with torch.no_grad():
        assert torch.allclose(s, net(x[:5]), atol=1e-6)                  # a deterministic net: mean = itself
    rec.inputs.clear()
    Square(rec, votes=3, chunk_size=2).scores(x[:5])
    assert [len(b) for b in rec.inputs] == [6, 6, 3]                      # chunk_size counts images


class _Vote(nn.Module):
    """One vote of f∘Q as a one-hot score, so the mean over V copies is a vote fraction."""

    def __init__(self, defended):
        super().__init__()
        self.defended = defended

    def forward(self, x):
        return nn.functional.one_hot(self.defended(x).argmax(1), 10).float()


def test_batched_votes_have_the_distribution_of_separate_passes(mnist):
    """f∘Q with swRD, on the two blends of test digits whose vote is the most uncertain: the vote
    fractions over V copies in one batch are distributed as those over V separate forward passes
    (the class frequencies agree, z ≤ 4), and their spread is the binomial one, p(1-p)/V summed
    over classes (copies sharing a draw of Q would give V times that)."""
    net, x, _ = mnist
    q = vqdbook.paper_quantizer("mnist", "swrd", s=2, k=2, generator=_gen(0))
    model, V, R = _Vote(Defended(net, q)), 3, 30
    blends = 0.5 * x[:16] + 0.5 * x[16:32]
    pilot = Square(model, votes=8).scores(blends)
    xs = blends[pilot.topk(2, dim=1).values[:, 1].topk(2).indices]     # largest runner-up share
    atk = Square(model, votes=V)
    with torch.no_grad():
        batched = torch.stack([atk.scores(xs) for _ in range(R)])                    # (R, 2, 10)
        separate = torch.stack([model(xs) for _ in range(R * V)]).view(R, V, 2, 10).mean(1)
    p = (batched.mean(0) + separate.mean(0)) / 2
    assert p.max(1).values.max() < 0.95                                 # the votes do vary
    se = (2 * p * (1 - p) / (R * V)).sqrt()
    assert ((batched.mean(0) - separate.mean(0)).abs() <= 4 * se + 1e-9).all()
    binomial = (p * (1 - p)).sum(1) / V
    for arm in (batched, separate):
        ratio = arm.var(0).sum(1) / binomial
        assert ((ratio >= 0.45) & (ratio <= 2)).all(), ratio


def test_attacks_a_voting_defended_model(mnist):
    """Defended(votes=3) returns vote fractions; Square(votes=2) pools them over 6 draws."""
    net, x, y = mnist
    q = vqdbook.paper_quantizer("mnist", "swrd", s=2, k=2, generator=_gen(1))
    model = Defended(net, q, votes=3)
    xs, ys = x[:4], y[:4]
    atk = Square(model, eps=0.3, n_queries=8, votes=2, generator=_gen(0))
    s = atk.scores(xs)
    assert torch.allclose(s.sum(1), torch.ones(4)) and torch.allclose(s * 6, (s * 6).round(), atol=1e-5)
    x_adv = atk(xs, ys)
    assert (x_adv - xs).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert atk.last_queries.max() <= 8 and not model.training and not net.training


def test_only_unfooled_images_are_queried():
    """Rows through the model = votes × (B clean checks + the paper's query count), each call
    smaller or equal to the one before (a shrinking active set)."""
    net, x, y = _toy()
    rec = _Recorder(net)
    atk = Square(rec, eps=0.3, n_queries=30, votes=2, generator=_gen(0), chunk_size=1000)
    atk(x, y)
    sizes = [len(b) for b in rec.inputs]
    assert sum(sizes) == 2 * (len(x) + int(atk.last_queries.sum()))
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert atk.last_fooled.any() and atk.last_queries[atk.last_fooled].max() < 30


# ------------------------------------------------------------------------------------ randomness, schedule

def test_reproducible_chunk_invariant_and_no_global_rng():
    net, x, y = _toy()
    state = torch.get_rng_state()
    runs = [Square(net, eps=0.1, n_queries=40, generator=_gen(3), chunk_size=c) for c in (None, 5, 5)]
    outs = [a(x, y) for a in runs]
    assert torch.equal(torch.get_rng_state(), state)                   # the attack never used it
    assert torch.equal(outs[1], outs[2])                               # same seed, same attack
    assert torch.equal(outs[0], outs[1])                               # chunks change speed only
    assert torch.equal(runs[0].last_queries, runs[1].last_queries)
    other = Square(net, eps=0.1, n_queries=40, generator=_gen(4))(x, y)
    assert not torch.equal(other, outs[0])
    assert torch.equal(Square(net, eps=0.1, n_queries=5)(x, y), Square(net, eps=0.1, n_queries=5)(x, y))


def test_p_schedule_halves_at_the_papers_iterations():
    assert P_HALVINGS == (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
    for k, t in enumerate(P_HALVINGS):
        assert p_schedule(0.8, t, 10_000) == 0.8 / 2 ** k
        assert p_schedule(0.8, t + 1, 10_000) == 0.8 / 2 ** (k + 1)
    assert p_schedule(0.8, 100, 1000) == p_schedule(0.8, 1000, 10_000)        # rescaled to the budget


def test_ce_loss_on_logits_and_probabilities():
    net, x, y = _toy()
    for model in (net, nn.Sequential(net, nn.Softmax(dim=1))):
        atk = Square(model, eps=0.3, n_queries=30, loss="ce", generator=_gen(0))
        x_adv = atk(x, y)
        assert (x_adv - x).abs().max() <= 0.3 + 1e-6
        assert accuracy(net, x_adv, y) < 0.5


def test_misclassified_and_zero_eps_are_returned_unchanged():
    net, x, y = _toy()
    y_wrong = (y + 1) % 10
    atk = Square(net, eps=0.3, n_queries=10, generator=_gen(0))
    assert torch.equal(atk(x, y_wrong), x) and atk.last_fooled.all() and atk.last_queries.eq(0).all()
    atk = Square(net, eps=0.0, n_queries=10)
    assert torch.equal(atk(x, y), x) and not atk.last_fooled.any()
    assert Square(net)(x[:0], y[:0]).shape == (0, 1, 8, 8)


# ------------------------------------------------------------------------------------ (e), (f)

class _PerImageSum(nn.Module):
    """Not a classifier: one number per image."""

    def forward(self, x):
        return x.flatten(1).sum(1)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(eps=-0.1), ValueError, "eps"), (dict(eps=1.5), ValueError, "eps"), (dict(eps="0.1"), TypeError, "eps"),
    (dict(eps=True), TypeError, "eps"), (dict(n_queries=0), ValueError, "n_queries"),
    (dict(n_queries=2.5), TypeError, "n_queries"), (dict(p_init=0.0), ValueError, "p_init"),
    (dict(p_init=1.5), ValueError, "p_init"), (dict(votes=0), ValueError, "votes"),
    (dict(votes=2.0), TypeError, "votes"), (dict(generator=0), TypeError, "generator"),
    (dict(loss="xent"), ValueError, "loss"), (dict(chunk_size=0), ValueError, "chunk_size"),
    (dict(chunk_size=True), TypeError, "chunk_size"),
])
def test_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Square(nn.Linear(1, 1), **kwargs)


def test_bad_model_and_inputs(rejects_bad_inputs):
    with pytest.raises(TypeError, match="model"):
        Square(lambda x: x)
    net, x, y = _toy()
    atk = Square(net, eps=0.1, n_queries=2)
    rejects_bad_inputs(atk, x, y)
    with pytest.raises(ValueError, match="finite"):
        atk(torch.full_like(x[:2], float("nan")), y[:2])
    with pytest.raises(TypeError, match="float"):
        atk((x[:2] * 255).to(torch.uint8), y[:2])
    with pytest.raises(TypeError, match="integer"):
        atk(x[:2], y[:2].float())
    with pytest.raises(ValueError, match="scores of shape"):
        Square(_PerImageSum(), eps=0.1)(x[:2], y[:2])
    atk.max_redraws = 0
    with pytest.raises(ValueError, match="max_redraws"):
        atk(x[:2], y[:2])


def test_restores_the_models_mode():
    net, x, y = _toy()
    rec = _Recorder(net)
    for mode in (True, False):
        rec.train(mode)
        Square(rec, eps=0.1, n_queries=5, votes=2)(x, y)
        assert rec.training is mode and net.training is mode
        Square(rec, votes=2).scores(x)
        assert rec.training is mode
    assert rec.modes and not any(rec.modes)                            # every query in eval mode
    bad = _Recorder(_PerImageSum()).train()
    with pytest.raises(ValueError, match="scores of shape"):
        Square(bad, eps=0.1)(x[:2], y[:2])
    assert bad.training


def test_restores_the_mode_of_each_submodule():
    """A fresh wrapper (training mode) around an eval-mode classifier: both come back as they were
    (``wrapper.train(was_training)`` would switch the classifier to training mode)."""
    net, x, y = _toy()
    net.eval()
    wrapper = _Recorder(net)
    assert wrapper.training and not net.training
    Square(wrapper, eps=0.1, n_queries=3)(x, y)
    Square(wrapper).scores(x)
    assert wrapper.training and not net.training


def test_top_level_name():
    assert vqdbook.Square is Square
