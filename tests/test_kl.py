"""The KL bound of Section 4.2 (eq. (9), Lemma 1) and Theorem 1's certified accuracy (vqdbook.kl)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from vqdbook import certify as C
from vqdbook import kl as K
from vqdbook.data import load_dataset
from vqdbook.experiments import certified as CE
from vqdbook.experiments import fig6 as F6
from vqdbook.quantizers import QuantizerSpec


def _q(method, s, k=4, sigma=4 / 255, tau=4 / 255, beta=None):
    return QuantizerSpec(method, s, k, sigma, tau, beta)


def _gaussian_pair(d, shift, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    B = rng.normal(size=(d, d))
    S0 = A @ A.T / d + 0.5 * np.eye(d)
    S1 = B @ B.T / d + 0.5 * np.eye(d)
    m0 = np.zeros(d)
    m1 = np.full(d, shift / math.sqrt(d))
    return m0, S0, m1, S1, rng


@pytest.fixture(scope="module")
def mnist_image():
    x, y = load_dataset("mnist", "test", 2)
    return x[1]


# ------------------------------------------------------------------ eq. (9) against closed form

@pytest.mark.parametrize("d, shift, k_gmm", [(1, 1.0, 1), (4, 0.5, 1), (4, 2.0, 1), (12, 1.0, 1),
                                              (4, 1.0, 2), (12, 1.0, 2)])
def test_kl_gmm_matches_closed_form_gaussians(d, shift, k_gmm):
    m0, S0, m1, S1, rng = _gaussian_pair(d, shift, seed=d * 10 + int(4 * shift))
    p = rng.multivariate_normal(m0, S0, size=20_000)
    q = rng.multivariate_normal(m1, S1, size=20_000)
    exact = K.kl_gaussians(m0, S0, m1, S1)
    est, se = K.kl_gmm(p, q, k_gmm, n_mc=50_000, seed=0, return_se=True)
    assert abs(est - exact) <= 0.05 * exact, (est, exact)
    assert se < 0.02 * exact


def test_kl_gmm_identical_and_same_distribution():
    m0, S0, _, _, rng = _gaussian_pair(6, 0.0, seed=1)
    p = rng.multivariate_normal(m0, S0, size=5_000)
    q = rng.multivariate_normal(m0, S0, size=5_000)
    assert K.kl_gmm(p, p.copy(), 2, n_mc=10_000) == 0.0                 # identical sample sets
    assert K.kl_gmm(torch.from_numpy(p).float(), torch.from_numpy(p).float(), 1, n_mc=1000) == 0.0
    est, se = K.kl_gmm(p, q, 2, n_mc=20_000, return_se=True)          # same law, other samples
    assert -3 * se <= est < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_gmm_not_negative_beyond_mc_error(seed):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(3_000, 3))
    q = rng.normal(size=(3_000, 3)) * 1.01 + 0.01
    est, se = K.kl_gmm(p, q, 2, n_mc=5_000, seed=seed, return_se=True)
    assert est >= -3 * se


def test_kl_gmm_invariant_to_units():
    # tiny-variance data (like centre coordinates) must give the same KL as rescaled data
    rng = np.random.default_rng(3)
    p = rng.normal(size=(4_000, 3))
    q = rng.normal(size=(4_000, 3)) + 0.5
    a = K.kl_gmm(p, q, 1, n_mc=20_000)
    b = K.kl_gmm(1e-4 * p + 0.3, 1e-4 * q + 0.3, 1, n_mc=20_000)
    assert b == pytest.approx(a, rel=1e-3)


# ------------------------------------------------------------------ the sorting map

def test_sort_centers_is_invariant_to_centre_order():
    g = torch.Generator().manual_seed(0)
    c = torch.rand((50, 6, 4), generator=g)
    c[0, 1] = c[0, 3]                                  # duplicate centre
    c[1, 2] = c[1, 0].flip(0)                          # same norm, other coordinates
    v = K.sort_centers(c)
    assert v.shape == (50, 24)
    norms = torch.linalg.vector_norm(v.view(50, 6, 4), dim=2)
    assert bool((norms[:, 1:] >= norms[:, :-1]).all())
    for _ in range(5):
        perm = torch.stack([torch.randperm(6, generator=g) for _ in range(50)])
        cp = torch.gather(c, 1, perm[:, :, None].expand(50, 6, 4))
        assert torch.equal(K.sort_centers(cp), v)
    assert np.array_equal(K.sort_centers(c.numpy()), v.numpy())


# ------------------------------------------------------------------ Theorem 1

def test_theorem1_arithmetic():
    assert C.margin([0.7, 0.2, 0.1], 0) == pytest.approx(0.5)
    assert C.margin([0.2, 0.7, 0.1], 0) == pytest.approx(-0.5)
    assert C.margin(np.array([[0.5, 0.5, 0.0], [0.1, 0.0, 0.9]]), np.array([0, 2])) == pytest.approx([0.0, 0.8])
    delta = C.theorem1_delta(0.5, 0.05)
    assert delta == pytest.approx(0.075)                                   # 0.5 * 0.25 - 0.05
    assert C.theorem1_bound(delta, 10, 1000) == pytest.approx(1 - 10 * math.exp(-11.25))
    assert C.theorem1_bound(-0.01, 10, 1000) == 0.0                       # delta < 0: nothing
    assert C.theorem1_bound(0.01, 10, 10) == 0.0                          # 1 - 10 e^-0.002 < 0
    assert C.theorem1_bound(0.0, 1, 5) == 0.0
    np.testing.assert_allclose(C.theorem1_bound(np.array([0.1, -0.1]), 2, 100), [1 - 2 * math.exp(-2), 0.0])
    # certified iff delta >= sqrt(ln(m / alpha) / (2 t))
    need = C.certified_radius_delta(10, 1000, 0.05)
    assert need == pytest.approx(math.sqrt(math.log(200) / 2000))
    assert C.theorem1_bound(need, 10, 1000) == pytest.approx(0.95)
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    # margins 0.85, 0.85, -0.5; kl 0.1 -> delta 0.26125 (certified); kl 0.36 -> delta 0.00125 (no)
    cert = C.is_certified(probs, np.array([0, 0, 0]), np.array([0.1, 0.36, 0.0]), t=1000)
    assert cert.tolist() == [True, False, False]


# ------------------------------------------------------------------ bad input

def test_bad_input_gives_clear_errors():
    p = np.random.default_rng(0).normal(size=(200, 4))
    with pytest.raises(ValueError, match="k_gmm"):
        K.kl_gmm(p, p, 0)
    with pytest.raises(TypeError, match="k_gmm"):
        K.kl_gmm(p, p, 1.5)
    with pytest.raises(ValueError, match=r"too few.*k_gmm \* \(dim \+ 1\) = 250"):
        K.kl_gmm(p, p, 50)
    with pytest.raises(ValueError, match="same dimension"):
        K.kl_gmm(p, p[:, :3], 1)
    with pytest.raises(ValueError, match="samples_q must be 2-D"):
        K.kl_gmm(p, p[:, 0], 1)
    with pytest.raises(TypeError, match="samples_p"):
        K.kl_gmm(p.tolist(), p, 1)
    with pytest.raises(ValueError, match="n_mc"):
        K.kl_gmm(p, p, 1, n_mc=1)
    with pytest.raises(ValueError, match="centers must be 3-D"):
        K.sort_centers(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="y must be in"):
        C.margin([0.5, 0.5], 2)
    with pytest.raises(ValueError, match="n_samples=100 is too few"):
        F6.kl_record("cifar10", "prd", 0.0, n_samples=100)


def test_bad_sampling_input(mnist_image):
    with pytest.raises(ValueError, match="method"):
        _q("kmeans", 2, 4, 0.01)
    with pytest.raises(ValueError, match="s must be 1"):
        _q("randdisc", 2, 4, 0.01)
    with pytest.raises(TypeError, match="QuantizerSpec"):
        K.sample_center_vectors(mnist_image, "prd", 8)
    with pytest.raises(ValueError, match="ONE image"):
        K.sample_center_vectors(mnist_image.expand(2, 1, 28, 28), _q("prd", 2, 4, 0.01), 8)
    with pytest.raises(ValueError, match="k must be in"):
        K.sample_center_vectors(mnist_image, _q("prd", 2, 500, 0.01), 8)
    with pytest.raises(ValueError, match="n_samples"):
        K.sample_center_vectors(mnist_image, _q("prd", 2, 4, 0.01), 0)


# ------------------------------------------------------------------ sampling on a real image

@pytest.mark.parametrize("method, s, dim", [("prd", 2, 16), ("swrd", 2, 16), ("randdisc", 1, 4)])
def test_sample_center_vectors_on_mnist(mnist_image, method, s, dim):
    q = _q(method, s, beta=1.0 if method == "swrd" else None)

    def draw(seed, **kw):
        return K.sample_center_vectors(mnist_image, q, 40, torch.Generator().manual_seed(seed), chunk=16, **kw)

    v = draw(0)
    assert v.shape == (40, dim) and v.dtype == torch.float32 and bool(torch.isfinite(v).all())
    assert torch.equal(v, draw(0, threads=1))                 # reproducible, thread-independent
    assert not torch.equal(v, draw(1))
    norms = torch.linalg.vector_norm(v.view(40, 4, -1), dim=2)
    assert bool((norms[:, 1:] >= norms[:, :-1]).all())
    # the samples have the quantizers' codebook distribution: centres lie inside the noisy data range
    assert float(v.min()) > -0.1 and float(v.max()) < 1.1


def test_second_term_zero_for_same_image_and_positive_otherwise(mnist_image):
    cen = K.sample_center_vectors(mnist_image, _q("prd", 2), 3, torch.Generator().manual_seed(0))
    same = K.second_term(mnist_image, mnist_image, _q("prd", 2), cen, n_draws=50)
    assert same["value"] == 0.0 and same["n_changed"] == 0 and same["n_units"] == 196
    x_adv = (mnist_image + 0.3 * (torch.arange(784).view(1, 28, 28) % 2)).clamp(0, 1)
    other = K.second_term(mnist_image, x_adv, _q("prd", 2), cen, n_draws=50)
    assert other["value"] > 0 and other["n_changed"] > 0 and len(other["per_u"]) == 3
    cen_sw = K.sample_center_vectors(mnist_image, _q("swrd", 2, beta=1.0), 2, torch.Generator().manual_seed(0))
    sw = K.second_term(mnist_image, mnist_image, _q("swrd", 2, beta=1.0), cen_sw, n_draws=20)
    assert sw["value"] == 0.0 and sw["n_units"] == 784
    with pytest.raises(ValueError, match="beta"):
        _q("swrd", 2)


def test_fig6_record_at_eps0_is_zero_and_resumes(tmp_path):
    kw = dict(n_images=1, n_samples=40, k_gmm=1, n_mc=2000, n_draws=20, n_u=1, root=tmp_path, progress=False)
    recs = F6.run_fig6("mnist", [0.0], methods=("prd",), **kw)
    res = recs[0]["result"]
    assert recs[0]["kind"] == "kl" and res["kl"] == [0.0] and res["second"] == [0.0]
    again = F6.run_fig6("mnist", [0.0], methods=("prd",), **kw)
    assert again[0]["created"] == recs[0]["created"] and again[0]["runtime_s"] == recs[0]["runtime_s"]
    # load_only: stored points come back, missing ones are left out, nothing is computed
    only = F6.run_fig6("mnist", [0.0, 0.1], methods=("prd",), load_only=True, **kw)
    assert [r["created"] for r in only] == [recs[0]["created"]]
    frame = F6.fig6_frame(recs)
    assert list(frame["method"]) == ["pRD"] and frame["kl_mean"].iloc[0] == 0.0


def test_certified_record_at_eps0(tmp_path):
    # eps = 0: KL = 0, so delta = margin^2 / 2 and a confidently correct image is certified
    recs = CE.run_certified("mnist", [0.0], n_images=1, n_samples=40, k_gmm=1, methods=("prd",), t=1000,
                           t_margin=8, n_mc=2000, n_draws=10, n_u=1, root=tmp_path, progress=False)
    res = recs[0]["result"]
    assert recs[0]["kind"] == "certified" and res["kl"] == [0.0]
    assert res["delta"][0] == pytest.approx(0.5 * res["margin"][0] ** 2)
    assert res["certified"] == [res["margin"][0] > 0 and res["delta"][0] >= res["delta_needed"]]
    assert CE.certified_frame(recs)["certified_accuracy"].iloc[0] == res["certified_accuracy"]
    assert CE.run_certified("mnist", [0.0, 0.1], n_images=1, n_samples=40, k_gmm=1, methods=("prd",), t=1000,
                           t_margin=8, n_mc=2000, n_draws=10, n_u=1, root=tmp_path, progress=False,
                           load_only=True) == recs


def test_fig6_claims_read_the_median_kl_at_both_ends():
    rows = [("RandDisc", 0.1, 5.0), ("pRD", 0.1, 9.0), ("swRD", 0.1, 7.0),
            ("RandDisc", 0.3, 50.0), ("pRD", 0.3, 20.0), ("swRD", 0.3, 60.0)]
    frame = pd.DataFrame([{"method": m, "eps": e, "kl_median": v} for m, e, v in rows])
    c = F6.fig6_claims(frame)
    assert c["eps_max"] == 0.3 and c["median_at_max"]["pRD"] == 20.0
    assert c["large_eps_holds"] is False            # swRD 60 is above RandDisc 50
    assert c["lowest_at_min"] == "RandDisc" and c["small_eps_holds"] is True
    assert F6.fig6_claims(frame[frame["method"] != "swRD"])["large_eps_holds"] is None
