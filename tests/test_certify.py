"""Certificates (vqdbook.certify): Clopper-Pearson bounds, the margin's lower bound, the certified-radius
search, the sup over points of the ball, randomized smoothing on classifiers whose smoothed output is
known in closed form, and eq. (9)'s estimator on a known Gaussian problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm

from vqdbook import certify as C
from vqdbook import kl as K

# ------------------------------------------------------------------ Clopper-Pearson


@pytest.mark.parametrize("k,n,alpha", [(0, 10, 0.05), (3, 10, 0.05), (10, 10, 0.05), (997, 1000, 0.001),
                                       (500, 1000, 0.0005), (1, 1, 0.1)])
def test_clopper_pearson_matches_scipy_beta_quantiles(k, n, alpha):
    lo = C.clopper_pearson(k, n, alpha, "lower")
    up = C.clopper_pearson(k, n, alpha, "upper")
    assert lo == (0.0 if k == 0 else pytest.approx(beta.ppf(alpha, k, n - k + 1), abs=1e-12))
    assert up == (1.0 if k == n else pytest.approx(beta.ppf(1 - alpha, k + 1, n - k), abs=1e-12))
    assert lo <= k / n <= up


def test_clopper_pearson_closed_forms_and_arrays():
    # all successes: alpha^(1/n); no success: 1 - alpha^(1/n)
    assert C.clopper_pearson(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100))
    assert C.clopper_pearson(0, 100, 0.001, "upper") == pytest.approx(1 - 0.001 ** (1 / 100))
    arr = C.clopper_pearson(np.array([0, 5, 10]), 10, 0.05)
    assert arr.shape == (3,) and arr[0] == 0 and np.all(np.diff(arr) > 0)
    with pytest.raises(ValueError):
        C.clopper_pearson(11, 10, 0.05)
    with pytest.raises(ValueError):
        C.clopper_pearson(1, 10, 0.05, "both")


def test_clopper_pearson_coverage():
    """The lower bound holds with probability >= 1 - alpha (binomial draws, exact coverage check)."""
    from scipy.stats import binom

    n, alpha = 50, 0.05
    for p in (0.1, 0.5, 0.93):
        ks = np.arange(n + 1)
        covered = C.clopper_pearson(ks, n, alpha) <= p
        assert binom.pmf(ks, n, p)[covered].sum() >= 1 - alpha - 1e-12


def test_margin_lower_bound_parts_and_bonferroni():
    counts = np.array([5, 980, 15, 0])
    mlb, p_low, r_up = C.margin_lower_bound(counts, 1, 0.001, return_parts=True)
    assert p_low == pytest.approx(beta.ppf(0.0005, 980, 21))
    per_class = beta.ppf(1 - 0.0005 / 3, 16, 1000 - 15)           # the runner-up's bound, union over 3
    assert r_up == pytest.approx(min(1 - p_low, per_class))
    assert mlb == pytest.approx(p_low - r_up)
    assert mlb < 0.98 - 0.015                                          # below the point estimate
    assert C.margin_lower_bound([1000, 0], 0) == pytest.approx(2 * C.clopper_pearson(1000, 1000, 0.0005) - 1)
    with pytest.raises(ValueError):
        C.margin_lower_bound([1, 2, 3], 3)


def test_kl_budget_is_theorem1_threshold():
    need = C.certified_radius_delta(10, 1000, 0.05)
    assert C.kl_budget(0.9, 10) == pytest.approx(0.5 * 0.81 - need)
    assert C.kl_budget(-0.1, 10) == -math.inf
    # at the budget, eq. (5)'s delta gives exactly the bound 1 - alpha
    mg = 0.8
    delta = C.theorem1_delta(mg, C.kl_budget(mg, 10))
    assert C.theorem1_bound(delta, 10, 1000) == pytest.approx(0.95)


# ------------------------------------------------------------------ certified radius on a grid


def test_radius_grid():
    g = C.radius_grid(4 / 255, -10, 3)
    assert len(g) == 14 and g[0] == pytest.approx(4 / 255 / 1024) and g[-1] == pytest.approx(32 / 255)
    assert np.all(np.diff(C.radius_grid(0.01, -3, 2, 4)) > 0)
    assert C.radius_grid(1.0, 0, 3).max() == 1.0                      # clipped to the [0, 1] scale


def test_certified_radius_search():
    radii = C.radius_grid(4 / 255)
    budget, kl_scale = 0.4, 1e6                                         # KL = kl_scale * r^2
    # delta < 0 everywhere: 0
    assert C.certified_radius(radii, lambda r: False) == 0.0
    assert C.certified_radius(radii, [False] * len(radii)) == 0.0
    # holds everywhere: the grid's end
    assert C.certified_radius(radii, lambda r: True) == radii[-1]
    # a KL growing with r: the last radius with KL <= budget
    r = C.certified_radius(radii, lambda r: kl_scale * r * r <= budget)
    assert kl_scale * r * r <= budget and (r == radii[-1] or kl_scale * (2 * r) ** 2 > budget)
    # stops at the first failure (a later success does not count)
    assert C.certified_radius([1, 2, 3, 4], [True, False, True, True]) == 1
    calls = []
    C.certified_radius([1, 2, 3, 4], lambda r: calls.append(r) or r < 2)
    assert calls == [1, 2]


def test_certified_radius_bisect_equals_scan_for_monotone_certificates():
    radii = C.radius_grid(4 / 255)
    for cut in range(len(radii) + 1):
        holds = [j < cut for j in range(len(radii))]
        calls = []
        r_bisect = C.certified_radius(radii, lambda r: calls.append(r) or r < (radii[cut] if cut < len(radii) else 2),
                                      search="bisect")
        assert r_bisect == C.certified_radius(radii, holds)
        assert len(calls) <= math.ceil(math.log2(len(radii) + 1))
    with pytest.raises(ValueError):
        C.certified_radius(radii, [True] * len(radii), search="bisect")


def test_certified_radius_is_monotone():
    rng = np.random.default_rng(0)
    radii = C.radius_grid(0.01, -8, 2)
    for _ in range(200):
        kl1 = np.maximum.accumulate(rng.exponential(size=len(radii)) * radii * 50)
        kl2 = kl1 * rng.uniform(0, 1, size=len(radii))                 # pointwise smaller KL
        b = rng.uniform(0, 1)
        r1 = C.certified_radius(radii, kl1 <= b)
        r2 = C.certified_radius(radii, kl2 <= b)
        assert r2 >= r1
        assert C.certified_radius(radii, kl1 <= b + 0.1) >= r1           # a larger budget never hurts


def test_certified_radius_rejects_bad_grids():
    with pytest.raises(ValueError):
        C.certified_radius([0.2, 0.1], [True, True])
    with pytest.raises(ValueError):
        C.certified_radius([0.0, 0.1], [True, True])
    with pytest.raises(ValueError):
        C.certified_radius([0.1, 0.2], [True])


# ------------------------------------------------------------------ the sup over points of the ball


def test_sup_over_points_is_at_least_each_estimate():
    x = torch.rand(1, 1, 6, 6) * 0.8 + 0.1
    pts = C.ball_points(x, 0.05, ("plus", "minus", "rand0", "rand1"))
    est = {}

    def estimate(xp):
        v = float((xp - x).sum())
        est[len(est)] = v
        return v

    out = C.sup_over_points(estimate, pts)
    assert out["complete"] and len(out["values"]) == 4
    assert all(out["sup"] >= v for v in out["values"].values())
    assert out["sup"] == max(est.values()) and out["argmax"] == "plus"
    # with a budget the search stops at the first point above it
    out2 = C.sup_over_points(estimate, pts, budget=0.0)
    assert list(out2["values"]) == ["plus"] and not out2["complete"] and out2["sup"] > 0


def test_ball_points_stay_in_the_ball_and_in_range():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    from vqdbook.quantizers import QuantizerSpec

    q = QuantizerSpec("prd", 2, 2, 4 / 255, 4 / 255)
    pts = C.ball_points(x, 0.03, y=y, net=net, quantizer=q, dataset="mnist", seed=1)
    assert set(pts) == set(C.POINT_KINDS)
    for name, make in pts.items():
        xp = make()
        assert xp.shape == x.shape, name
        assert float((xp - x).abs().max()) <= 0.03 + 1e-6, name
        assert float(xp.min()) >= 0 and float(xp.max()) <= 1, name
    assert torch.equal(pts["rand0"](), pts["rand0"]())                  # reproducible
    assert not torch.equal(pts["rand0"](), pts["rand1"]())


# ------------------------------------------------------------------ randomized smoothing


class _Linear2D(torch.nn.Module):
    """Class 1 iff w.x + b > 0: the smoothed p_A is Phi(|w.x + b| / (sigma ||w||)) in closed form."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.tensor(w), float(b)

    def forward(self, z):
        s = z.reshape(len(z), -1) @ self.w + self.b
        return torch.stack([-s, s], 1)


def test_smoothing_counts_match_the_closed_form():
    net = _Linear2D([3.0, 4.0], -1.0)
    x = torch.tensor([0.4, 0.2])                                         # w.x + b = 1.0, ||w|| = 5
    sigma, n = 0.5, 40_000
    c = C.smoothing_counts(net, x, sigma, n, torch.Generator().manual_seed(0))
    p1 = norm.cdf(1.0 / (sigma * 5.0))
    assert c.sum() == n
    assert abs(c[1] / n - p1) < 4 * math.sqrt(p1 * (1 - p1) / n)


@pytest.mark.parametrize("dist,sigma", [(0.4, 0.5), (1.0, 0.5), (0.2, 0.25)])
def test_smoothing_certify_radius_matches_the_distance_to_the_boundary(dist, sigma):
    """For a linear classifier, g's true certified l2 radius is the distance to the hyperplane:
    CERTIFY's radius is below it (with prob. >= 1 - alpha) and close to it for large n."""
    net = _Linear2D([0.6, 0.8], 0.0)                                     # unit normal
    x = torch.tensor([0.6, 0.8]) * dist
    out = C.smoothing_certify(net, x, sigma, 100, 20_000, 0.001, torch.Generator().manual_seed(1))
    p_true = norm.cdf(dist / sigma)
    assert out["label"] == 1
    assert out["p_a_lower"] <= p_true
    assert out["radius_l2"] <= dist
    # the slack of a Clopper-Pearson bound from 20,000 draws
    p_ok = C.clopper_pearson(int(round(p_true * 20_000 - 4 * math.sqrt(p_true * (1 - p_true) * 20_000))),
                             20_000, 0.001)
    assert out["radius_l2"] >= sigma * norm.ppf(p_ok)


def test_smoothing_abstains_at_the_boundary():
    net = _Linear2D([1.0, 0.0], 0.0)
    out = C.smoothing_certify(net, torch.tensor([0.0, 0.0]), 0.5, 100, 2_000, 0.001,
                              torch.Generator().manual_seed(2))
    assert out["label"] == C.ABSTAIN and out["radius_l2"] == 0.0


def test_linf_radius():
    assert C.linf_radius(1.0, 4) == 0.5
    assert np.allclose(C.linf_radius(np.array([0.0, 2.8]), 784), [0.0, 0.1])


def test_smoothing_bound_matches_statsmodels():
    """IBM ART's randomized smoothing bounds p_A with statsmodels' proportion_confint (method 'beta',
    at 2 alpha, the lower end): the same numbers as ours."""
    sm = pytest.importorskip("statsmodels.stats.proportion")
    for k, n, alpha in ((990, 1000, 0.001), (730, 1000, 0.001), (9990, 10_000, 0.01)):
        art_lower = sm.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
        assert C.clopper_pearson(k, n, alpha) == pytest.approx(art_lower, abs=1e-12)


def test_smoothing_cross_check_with_art():
    """IBM ART's PyTorchRandomizedSmoothing.certify and ours on the same linear classifier: both
    labels agree and both radii lie within Clopper-Pearson slack of the true radius (the distance
    to the boundary), below it."""
    pytest.importorskip("art")
    pytest.importorskip("statsmodels")
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    net = _Linear2D([0.6, 0.8], 0.0)
    sigma, n, alpha, dist = 0.5, 20_000, 0.001, 0.6
    x = torch.tensor([0.6, 0.8]) * dist
    art_rs = PyTorchRandomizedSmoothing(net, torch.nn.CrossEntropyLoss(), input_shape=(2,), nb_classes=2,
                                        device_type="cpu", sample_size=100, scale=sigma, alpha=alpha)
    np.random.seed(0)
    art_label, art_radius = art_rs.certify(x.numpy()[None], n=n, batch_size=1000)
    ours = C.smoothing_certify(net, x, sigma, 100, n, alpha, torch.Generator().manual_seed(0))
    assert int(art_label[0]) == ours["label"] == 1
    assert float(art_radius[0]) <= dist and ours["radius_l2"] <= dist
    assert abs(float(art_radius[0]) - ours["radius_l2"]) < 0.05            # both ~ sigma * Phi^-1(p_low)


# ------------------------------------------------------------------ eq. (9)'s estimator on a known problem


def test_kl_gmm_bias_on_a_known_gaussian_shift_in_16_dimensions():
    """MNIST's pRD/swRD centre vectors have d = 16 and k_gmm = 2: a Gaussian shift with KL 0.5 (the
    certificate's region) with independent samples (the paper's two fits, mean of 3) has a positive
    bias below 0.15 (two 2-component fits of 305 parameters each to 4,000 points over-fit by about
    params / n); with common random numbers (the q samples are the p samples moved, the fit of q
    started from that of p) it is within 5%."""
    rng = np.random.default_rng(0)
    d, n = 16, 4_000
    A = rng.normal(size=(d, d))
    S = A @ A.T / d + 0.5 * np.eye(d)
    u = rng.normal(size=d)
    delta = u * math.sqrt(0.5 / (0.5 * u @ np.linalg.solve(S, u)))
    truth = K.kl_gaussians(np.zeros(d), S, delta, S)
    assert truth == pytest.approx(0.5)
    ind, crn = [], []
    for _ in range(3):
        P = rng.multivariate_normal(np.zeros(d), S, size=n)
        Q = rng.multivariate_normal(delta, S, size=n)
        ind.append(K.kl_gmm(P, Q, 2, n_mc=20_000))
        crn.append(K.kl_gmm(P, P + delta, 2, n_mc=20_000, warm_start=True))
    assert -0.05 <= np.mean(ind) - truth <= 0.15, ind
    assert abs(np.mean(crn) - truth) <= 0.05 * truth, crn


def test_second_term_estimator_against_the_exact_1d_case():
    """RandDisc on a handful of pixels with two fixed centres: second_term's Monte Carlo agrees with
    the closed form where the pixel stays near the boundary, and is capped at log(2 n_draws + 1)
    where the assignment flips deterministically (the truth is larger)."""
    from vqdbook.quantizers import QuantizerSpec

    tau, n_draws = 4 / 255, 4_000
    q = QuantizerSpec("randdisc", 1, 2, 4 / 255, tau)
    x = torch.tensor([[[[0.2, 0.49, 0.5, 0.45, 0.3]]]])
    x_adv = torch.tensor([[[[0.2, 0.5, 0.51, 0.6, 0.3]]]])
    centers = torch.tensor([[[0.0], [1.0]]])
    exact = K.second_term_exact_1d(x.flatten(), x_adv.flatten(), [0.0, 1.0], tau)
    st = K.second_term(x, x_adv, q, centers, n_draws=n_draws, generator=torch.Generator().manual_seed(0))
    assert st["n_changed"] == 3                                          # pixels 1, 2, 3 change
    assert exact[0] == exact[4] == 0.0
    assert exact[3] > st["cap"]                                          # a flip: the truth exceeds the cap
    smooth = exact[1] + exact[2]                                         # the two pixels near the boundary
    assert abs(st["value"] - st["cap"] - smooth) < 0.35 * smooth + 0.02
    assert st["max_unit"] == pytest.approx(st["cap"], rel=0.01)


def test_stored_smoothing_agrees_with_art_on_the_book_images():
    """The book's CERTIFY records against IBM ART's on the same images (independent noise draws): the
    same labels on at least 90% of the images, clean accuracies within 10 points, and l-infinity radii
    within a fifth of the noise level (in l-infinity units) where both certify the same label."""
    from vqdbook.experiments.radii import smoothing_cross_check

    frame = smoothing_cross_check()
    if frame.empty:
        pytest.skip("no smoothing_art records stored")
    assert (frame["label_agreement"] >= 0.9).all(), frame
    assert ((frame["clean_ours"] - frame["clean_art"]).abs() <= 0.1).all(), frame
    dim = frame["dataset"].map({"mnist": 784, "cifar10": 3072})
    assert (frame["max_radius_diff"] <= 0.2 * frame["sigma"] / np.sqrt(dim)).all(), frame
