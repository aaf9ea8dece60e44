"""vqdbook.quantizers: RandDisc, pRD (eq. (1)) and swRD (eqs. (2)-(4)) against the per-image
NumPy + scikit-learn reference of tests/reference_quantizers.py, on real MNIST and CIFAR-10."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import reference_quantizers as R
import torch

from vqdbook import kmeans as K
from vqdbook import quantizers as Q
from vqdbook.data import load_dataset

S4 = 4 / 255
CIFAR_BETA = 0.1 * 255 ** 2


def _images(name, n, start=0):
    x, _ = load_dataset(name, "test", start + n)
    return torch.as_tensor(x[start:start + n], dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# sigma = tau = 0 and the same centres: fast == reference (to float tolerance)
# --------------------------------------------------------------------------------------------

def _fast(method, x, args, centers):
    if method == "rd":
        return Q.rand_disc(x, *args, centers=centers, return_centers=True)
    if method == "prd":
        return Q.prd(x, *args, centers=centers, return_centers=True)
    return Q.swrd(x, *args, centers=centers, return_centers=True)


REF = {"rd": R.ref_rand_disc, "prd": R.ref_prd, "swrd": R.ref_swrd}

EXACT_CASES = [
    # (dataset, method, args (sigma = tau = 0))
    ("mnist", "rd", (4, 0.0, 0.0)),
    ("cifar10", "rd", (6, 0.0, 0.0)),
    ("mnist", "prd", (2, 3, 0.0, 0.0)),
    ("mnist", "prd", (3, 4, 0.0, 0.0)),         # 28 = 9*3 + 1: zero padding
    ("cifar10", "prd", (3, 10, 0.0, 0.0)),      # 32 = 10*3 + 2: zero padding
    ("cifar10", "prd", (4, 25, 0.0, 0.0)),
    ("mnist", "swrd", (2, 2, 0.0, 0.0, 1.0)),
    ("mnist", "swrd", (3, 4, 0.0, 0.0, 50.0)),
    ("cifar10", "swrd", (2, 10, 0.0, 0.0, CIFAR_BETA)),
    ("cifar10", "swrd", (3, 8, 0.0, 0.0, CIFAR_BETA)),
    ("cifar10", "swrd", (4, 25, 0.0, 0.0, CIFAR_BETA)),
]


@pytest.mark.parametrize("name,method,args", EXACT_CASES)
def test_same_centres_no_noise_matches_reference(name, method, args):
    x = _images(name, 2)
    # reference clusters (scikit-learn) -> the fast quantizer uses those centres
    ref_out, ref_c = R.ref_batch(REF[method], x.numpy(), *args, seed=0)
    out64, c64 = _fast(method, x.double(), args, torch.as_tensor(ref_c))
    np.testing.assert_allclose(out64.numpy(), ref_out, rtol=0, atol=1e-10)
    out32, _ = _fast(method, x, args, torch.as_tensor(ref_c, dtype=torch.float32))
    np.testing.assert_allclose(out32.numpy(), ref_out, rtol=0, atol=1e-4)
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    # the fast quantizer's own centres -> the reference uses those
    fo, fc = _fast(method, x.double(), args, None)
    ro, _ = R.ref_batch(REF[method], x.numpy(), *args, seed=0, centers=fc.numpy())
    np.testing.assert_allclose(fo.numpy(), ro, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# with noise: the same distribution (mean and variance over many draws)
# --------------------------------------------------------------------------------------------

def _compare_draws(F, G, x):
    """F (N, C, H, W) fast draws and G (M, C, H, W) reference draws of the same image x."""
    from scipy.stats import ks_2samp

    mF, mG = F.mean(0), G.mean(0)
    vF, vG = F.var(0, ddof=1), G.var(0, ddof=1)
    se = np.sqrt(vF / len(F) + vG / len(G))
    live = se > 1e-6
    z_pix = np.abs(mF - mG)[live] / se[live]
    aF, aG = F.reshape(len(F), -1).mean(1), G.reshape(len(G), -1).mean(1)
    z_img = abs(aF.mean() - aG.mean()) / np.sqrt(aF.var(ddof=1) / len(aF) + aG.var(ddof=1) / len(aG) + 1e-30)
    # per-draw distortion mean |x_hat - x|: its whole distribution, by a two-sample KS test
    dF, dG = np.abs(F - x).mean((1, 2, 3)), np.abs(G - x).mean((1, 2, 3))
    return {"z_pix_max": float(z_pix.max()) if live.any() else 0.0, "z_img": float(z_img),
            "var_ratio": float(vF.sum() / vG.sum()), "ks_p_distortion": float(ks_2samp(dF, dG).pvalue)}


STAT_CASES = [
    # (dataset, image crop, method, args, fast draws, reference draws)
    # the paper's noise level (on CIFAR-10 the clustering's own randomness dominates there)
    ("mnist", (4, 24, 4, 24), "swrd", (2, 2, S4, S4, 1.0), 400, 60),
    ("cifar10", (8, 24, 8, 24), "swrd", (3, 6, S4, S4, CIFAR_BETA), 400, 60),
    ("cifar10", (0, 16, 0, 16), "prd", (2, 10, S4, S4), 400, 60),
    ("cifar10", (8, 24, 8, 24), "rd", (4, S4, S4), 400, 60),
    # larger noise, where these statistics notice sigma -> 0, sigma x2 or tau x1.5 slips
    ("cifar10", (8, 24, 8, 24), "swrd", (3, 6, 0.1, 0.1, 100.0), 400, 60),
    ("cifar10", (0, 16, 0, 16), "prd", (2, 10, 0.1, 0.1), 400, 60),
    ("mnist", (4, 24, 4, 24), "rd", (2, 0.1, 0.1), 400, 60),
]


@pytest.mark.parametrize("name,crop,method,args,N,M", STAT_CASES)
def test_noisy_output_distribution_matches_reference(name, crop, method, args, N, M):
    """With noise the outputs are random; fast and reference draws must agree in distribution:
    every pixel's mean, the image-mean intensity, the distribution of the per-draw distortion
    and the total variance (loosely: it is heavy-tailed, as k-means has several local optima)."""
    x = _images(name, 1, start=4)
    a, b, c, d = crop
    img = x[:, :, a:b, c:d].contiguous()
    F = _fast(method, img.expand(N, -1, -1, -1).contiguous(), args, None)[0].double().numpy()
    G, _ = R.ref_batch(REF[method], img.expand(M, -1, -1, -1).numpy(), *args, seed=1)
    st = _compare_draws(F, G, img.double().numpy())
    print(f"\n{name} {method} {args}: {st}")
    assert st["z_pix_max"] < 5.5          # every pixel's mean agrees
    assert st["z_img"] < 4.0              # the image-mean intensity agrees
    assert st["ks_p_distortion"] > 1e-3   # same distortion distribution
    assert 0.5 < st["var_ratio"] < 2.0    # same amount of randomness (a x255 slip would be far off)
    assert F.var(0).sum() > 0             # the output is random at all


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------

def test_seeds_generator_route():
    x = _images("cifar10", 40)
    f = lambda seed, **kw: Q.swrd(x, 4, 25, S4, S4, CIFAR_BETA, torch.Generator().manual_seed(seed), **kw)
    a, b, c = f(0), f(0), f(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # worker threads and chunking do not change the sample for a given chunk size
    one = f(0, threads=1, chunk_size=16)
    assert torch.equal(one, f(0, threads=2, chunk_size=16))
    assert torch.equal(one, f(0, chunk_size=16))          # threads=None: auto



def test_seeds_manual_seed_route_and_modules():
    x = _images("mnist", 8)
    for make in (lambda: Q.RandDisc(2, S4, S4), lambda: Q.PRD(2, 2, S4, S4),
                 lambda: Q.SWRD(2, 2, S4, S4, 1.0)):
        q = make()
        torch.manual_seed(3)
        a = q(x)
        ca = q.last_centers
        torch.manual_seed(3)
        b = q(x)
        assert torch.equal(a, b) and torch.equal(ca, q.last_centers)
        torch.manual_seed(4)
        c = q(x)
        assert not torch.equal(a, c) and not torch.equal(ca, q.last_centers)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    q1, q2 = Q.SWRD(2, 2, S4, S4, 1.0, generator=g1), Q.SWRD(2, 2, S4, S4, 1.0, generator=g2)
    assert torch.equal(q1(x), q2(x)) and torch.equal(q1.last_centers, q2.last_centers)


def test_swrd_with_s1_is_rand_disc():
    x = _images("cifar10", 4)
    a = Q.swrd(x, 1, 5, S4, S4, CIFAR_BETA, torch.Generator().manual_seed(2))
    b = Q.rand_disc(x, 5, S4, S4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# outputs, centres, numerical stability
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [CIFAR_BETA, 0.5 * 255 ** 2, 1e6, 1e12, 1e-6])
def test_no_nan_for_large_beta(beta):
    x = _images("cifar10", 8)
    out, cen = Q.swrd(x, 4, 25, S4, S4, beta, torch.Generator().manual_seed(0), return_centers=True)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    # every output pixel is a convex combination of its covering quantized windows' values
    assert (out - x).abs().mean() < 0.1


def test_softmax_is_per_pixel_stable_against_reference_at_extreme_beta():
    x = _images("cifar10", 1)
    args = (3, 6, 0.0, 0.0, 1e6)
    ref_out, ref_c = R.ref_batch(R.ref_swrd, x.numpy(), *args, seed=0)
    out, _ = _fast("swrd", x.double(), args, torch.as_tensor(ref_c))
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-10)


def test_shapes_centres_and_clipping():
    x = _images("mnist", 5)
    q = Q.PRD(3, 4, S4, S4)
    out = q(x)
    assert out.shape == x.shape and q.last_centers.shape == (5, 4, 9)
    assert out.min() >= 0 and out.max() <= 1
    out, c = Q.swrd(x, 2, 2, 0.2, 0.2, 1.0, return_centers=True)   # large noise: centres leave [0, 1]
    assert out.min() >= 0 and out.max() <= 1
    assert c.shape == (5, 2, 4)
    xc = _images("cifar10", 3)
    out, c = Q.rand_disc(xc, 10, S4, S4, return_centers=True)
    assert out.shape == xc.shape and c.shape == (3, 10, 3)
    # every RandDisc output pixel is one of its image's (clamped) centres
    for b in range(3):
        pix = out[b].permute(1, 2, 0).reshape(-1, 3)
        gap = (pix[:, None, :] - c[b].clamp(0, 1)[None]).abs().amax(2).min(1).values
        assert gap.max() == 0
    empty = Q.swrd(xc[:0], 2, 2, S4, S4, 1.0)
    assert empty.shape == (0, 3, 32, 32)


def test_quantize_with_given_centres_and_assign():
    x = _images("cifar10", 2)
    out, c = Q.prd(x, 2, 10, S4, S4, torch.Generator().manual_seed(0), return_centers=True)
    again = Q.prd(x, 2, 10, 123.0, 0.0, centers=c)   # sigma is unused with given centres
    assert torch.equal(again, Q.prd(x, 2, 10, 0.0, 0.0, centers=c))
    P = x.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(2, -1, 12)
    lab = Q.assign(P, c, 0.0)
    assert torch.equal(lab, torch.cdist(P, c).argmin(2))
    expect = c[torch.arange(2)[:, None], lab].clamp(0, 1)            # eq. (1), patch by patch
    expect = expect.view(2, 16, 16, 3, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 3, 32, 32)
    assert torch.equal(again, expect)


# --------------------------------------------------------------------------------------------
# presets and scale conversion
# --------------------------------------------------------------------------------------------

def test_presets_and_scale_conversion():
    from vqdbook import paper

    assert paper.from_paper_scale(sigma=4, tau=4, eps=8, beta=0.1) == pytest.approx(
        {"sigma": 4 / 255, "tau": 4 / 255, "eps": 8 / 255, "beta": 6502.5})
    assert paper.from_paper_scale(sigma=4 / 255, beta=1.0, scale="mnist") == pytest.approx(
        {"sigma": 4 / 255, "beta": 1.0})
    assert paper.from_paper_scale(beta=0.5, scale="svhn")["beta"] == pytest.approx(32512.5)
    P = paper.NOISE
    assert P["mnist"]["sigma"] == P["mnist"]["tau"] == pytest.approx(4 / 255) and P["mnist"]["beta"] == 1.0
    assert P["cifar10"]["sigma"] == pytest.approx(4 / 255) and P["cifar10"]["beta"] == pytest.approx(6502.5)
    assert P["svhn"]["beta"] == pytest.approx(32512.5)
    q = Q.paper_quantizer("cifar10", "swrd", s=4, k=25)
    assert isinstance(q, Q.SWRD) and (q.s, q.k, q.beta) == (4, 25, pytest.approx(6502.5))
    assert isinstance(Q.paper_quantizer("mnist", "prd"), Q.PRD)
    rd = Q.paper_quantizer("svhn", "randdisc")
    assert isinstance(rd, Q.RandDisc) and rd.tau == pytest.approx(4 / 255)
    with pytest.raises(ValueError, match="dataset"):
        Q.paper_quantizer("imagenet", "swrd")
    with pytest.raises(ValueError, match="method"):
        Q.paper_quantizer("mnist", "jpeg")


def test_quantizer_spec_is_the_one_description():
    """QuantizerSpec: the paper's settings, the record form (round trip, unchanged keys), the
    module and the functional form all agree."""
    q = Q.QuantizerSpec.paper("cifar10", "pRD", s=2, k=10)
    assert q.method == "prd" and q.label == "pRD (s=2, k=10)" and q.beta is None
    assert q.params() == {"method": "prd", "s": 2, "k": 10, "sigma": 4 / 255, "tau": 4 / 255}
    assert Q.QuantizerSpec.from_params(q.params()) == q and Q.QuantizerSpec.from_params({"method": "none"}) is None
    sw = Q.QuantizerSpec.paper("mnist", "swrd", max_iter=1)
    assert sw.params() == {"method": "swrd", "s": 2, "k": 2, "sigma": 4 / 255, "tau": 4 / 255, "beta": 1.0,
                           "max_iter": 1}
    x, _ = load_dataset("cifar10", "test", 3)
    a = q.build(generator=torch.Generator().manual_seed(5))(x)
    b = q(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert Q.QuantizerSpec.paper("mnist", "rd").s == 1
    with pytest.raises(ValueError, match="beta is only used by swRD"):
        Q.QuantizerSpec("prd", 2, 4, 0.01, 0.01, beta=1.0)
    with pytest.raises(ValueError, match="s must be 1"):
        Q.QuantizerSpec.paper("mnist", "randdisc", s=5)
    with pytest.raises(ValueError, match="unknown quantizer parameter"):
        Q.QuantizerSpec.from_params({"method": "prd", "s": 2, "k": 2, "sigma": 0.0, "tau": 0.0, "votes": 3})


def test_docstrings_name_the_paper_equations():
    for fn in (Q.rand_disc, Q.prd, Q.assign, Q.RandDisc, Q.PRD):
        assert "eq. (1)" in inspect.getdoc(fn), fn
    for fn in (Q.swrd, Q.swrd_blend, Q.SWRD):
        assert "eqs. (2)-(4)" in inspect.getdoc(fn), fn
    assert "eq. (3)" in inspect.getsource(Q.swrd_blend)
    for fn in (K.kmeans, K.kmeans_plusplus, K.tolerance):
        assert "eq. (1)" in inspect.getdoc(fn), fn


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

def _bad_cases():
    x = torch.rand(2, 3, 8, 8)
    swrd = lambda xx=x, s=2, k=3, sigma=S4, tau=S4, beta=1.0, **kw: Q.swrd(xx, s, k, sigma, tau, beta, **kw)
    prd = lambda xx=x, s=2, k=3, sigma=S4, tau=S4, **kw: Q.prd(xx, s, k, sigma, tau, **kw)
    rd = lambda xx=x, k=3, sigma=S4, tau=S4, **kw: Q.rand_disc(xx, k, sigma, tau, **kw)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    inf = x.clone()
    inf[1, 2, 3, 4] = float("inf")
    return [
        (lambda: swrd(xx=x.numpy()), TypeError, "x"),
        (lambda: swrd(xx=x[0]), ValueError, "x"),
        (lambda: prd(xx=x[None]), ValueError, "x"),
        (lambda: rd(xx=(x * 255).to(torch.uint8)), TypeError, "x"),
        (lambda: swrd(xx=nan), ValueError, "x"),
        (lambda: prd(xx=inf), ValueError, "x"),
        (lambda: swrd(xx=x * 255), ValueError, r"^x values must be in \[0, 1\]"),
        (lambda: rd(xx=x - 0.5), ValueError, r"^x values must be in \[0, 1\]"),
        (lambda: swrd(s=0), ValueError, "^s must be"),
        (lambda: prd(s=-1), ValueError, "^s must be"),
        (lambda: swrd(s=9), ValueError, "^s must be"),
        (lambda: prd(s=9), ValueError, "^s must be"),
        (lambda: swrd(s=2.0), TypeError, "^s must be an int"),
        (lambda: prd(s="2"), TypeError, "^s must be an int"),
        (lambda: swrd(k=0), ValueError, "^k must be"),
        (lambda: swrd(k=50), ValueError, r"^k must be in \[1, 49\]"),
        (lambda: prd(k=17), ValueError, r"^k must be in \[1, 16\]"),
        (lambda: rd(k=65), ValueError, r"^k must be in \[1, 64\]"),
        (lambda: rd(k=2.5), TypeError, "^k must be an int"),
        (lambda: swrd(k=True), TypeError, "^k must be an int"),
        (lambda: swrd(sigma=-0.1), ValueError, "sigma"),
        (lambda: prd(tau=-1e-9), ValueError, "tau"),
        (lambda: rd(sigma="big"), TypeError, "sigma"),
        (lambda: swrd(tau=float("nan")), ValueError, "tau"),
        (lambda: swrd(beta=0.0), ValueError, "beta"),
        (lambda: swrd(beta=-1.0), ValueError, "beta"),
        (lambda: swrd(beta=float("inf")), ValueError, "beta"),
        (lambda: swrd(generator=1), TypeError, "generator"),
        (lambda: swrd(centers=torch.rand(2, 3, 5)), ValueError, "centers"),
        (lambda: swrd(chunk_size=0), ValueError, "chunk_size"),
        (lambda: Q.SWRD(2, 3, S4, S4, 0.0), ValueError, "beta"),
        (lambda: Q.PRD(0, 3, S4, S4), ValueError, "^s must be"),
        (lambda: Q.RandDisc(1.5, S4, S4), TypeError, "^k must be an int"),
        (lambda: Q.RandDisc(3, -S4, S4), ValueError, "sigma"),
        (lambda: Q.PRD(2, 17, S4, S4)(x), ValueError, "^k must be"),
        (lambda: swrd(init="kmeans"), ValueError, "^init must be one of"),
        (lambda: prd(max_iter=0), ValueError, "^max_iter must be"),
        (lambda: Q.SWRD(2, 3, S4, S4, 1.0, max_iter=1.5), TypeError, "^max_iter must be an int"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_input(case):
    call, exc, pattern = _bad_cases()[case]
    with pytest.raises(exc, match=pattern):
        call()


def test_kmeans_options_reach_the_clustering():
    """``init``/``max_iter`` (the k-means variants of the reproduction study) change the codebook:
    one Lloyd iteration from random seeds clusters worse than the default, on real patches."""
    x, _ = load_dataset("cifar10", "test", n=16)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    out_def, c_def = Q.prd(x, 2, 10, 0.0, 0.0, g(), return_centers=True)
    out_rnd, c_rnd = Q.prd(x, 2, 10, 0.0, 0.0, g(), return_centers=True, init="random", max_iter=1)
    assert not torch.equal(c_def, c_rnd)
    err = lambda out: ((out - x) ** 2).sum().item()  # noqa: E731  (sigma = tau = 0: the k-means inertia)
    assert err(out_rnd) > err(out_def)
    q = Q.SWRD(2, 3, S4, S4, 1.0, init="random", max_iter=2)
    assert "init='random', max_iter=2" in repr(q) and q(x[:2]).shape == x[:2].shape


# --------------------------------------------------------------------------------------------
# the same transform on a GPU (run where one is present; skipped elsewhere)
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method,args", [("rd", (10, 0.0, 0.0)), ("prd", (2, 10, 0.0, 0.0)),
                                         ("swrd", (4, 25, 0.0, 0.0, CIFAR_BETA))])
def test_cuda_matches_cpu_with_the_same_centres(method, args):
    x = _images("cifar10", 8)
    out_cpu, cen = _fast(method, x, args, None)
    out_gpu, cen_gpu = _fast(method, x.cuda(), args, cen.cuda())
    assert out_gpu.device.type == "cuda" and torch.equal(cen_gpu.cpu(), cen)
    # float32 sums in another order: swRD's β ≈ 6,500 scales distance rounding (~1e-7) into the weights
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-4, rtol=0)
    # and with noise the module runs end to end on the device, reproducibly from a seed
    g1, g2 = (torch.Generator(device="cuda").manual_seed(1) for _ in range(2))
    q = {"rd": Q.RandDisc(10, S4, S4, generator=g1), "prd": Q.PRD(2, 10, S4, S4, generator=g1),
         "swrd": Q.SWRD(4, 25, S4, S4, CIFAR_BETA, generator=g1)}[method]
    a = q(x.cuda())
    q.generator = g2
    assert torch.equal(a, q(x.cuda())) and a.device.type == "cuda"
