"""The vector quantizers of Dong & Mao (arXiv 2305.13651): RandDisc, pRD and swRD, batched.

Every quantizer maps a batch of images ``x`` of shape ``(B, C, H, W)`` with values in ``[0, 1]``
to a randomly quantized batch of the same shape, in three steps (Section 3):

1. **patches** -- pixels (RandDisc), non-overlapping ``s x s`` patches (pRD, Section 3.1) or all
   stride-1 ``s x s`` windows (swRD, Section 3.2), each a vector in ``R^(C s^2)``;
2. **codebook** -- clustering noise ``sigma * N(0, I)`` is added to every patch and the noisy patches
   of each image are clustered into ``k`` centres by k-means (greedy k-means++ seeding, as
   scikit-learn; :func:`vqdbook.kmeans.kmeans`), one clustering per image;
3. **assignment** -- fresh assignment noise ``tau * N(0, I)`` is added to every patch and each patch
   is replaced by the centre nearest to its noisy version, eq. (1); swRD then blends the
   overlapping quantized windows pixel by pixel with weights ``softmax(-beta ||p - p_hat||^2)``,
   eqs. (2)-(4).

Conventions (decisions documented here once, referred to everywhere)
--------------------------------------------------------------------
* **Scale.** All images and all parameters are on the ``[0, 1]`` scale. The paper quotes MNIST on
  ``[0, 1]`` (sigma = tau = 4/255, beta = 1) but CIFAR-10 / SVHN on the 0-255 scale (sigma = tau = 4,
  beta = 0.1 resp. 0.5). Noise levels and attack radii convert by dividing by 255; beta multiplies
  the *squared* distance, so it converts by multiplying by ``255**2``: CIFAR-10 beta = 0.1 * 255^2 =
  6502.5, SVHN beta = 0.5 * 255^2 = 32512.5. :func:`vqdbook.paper.from_paper_scale` does the conversion,
  :data:`vqdbook.paper.NOISE` holds the converted values and :class:`QuantizerSpec` /
  :func:`paper_quantizer` use them.
* **sigma vs tau.** Section 3.1 writes the *clustering* noise as ``eps_i ~ N(0, tau^2 I)``, the same
  symbol as the assignment noise ``w_i``. We read it as sigma: the paper's experiments set
  "sigma = tau", and RandDisc (Zhang & Liang), which pRD/swRD extend, uses sigma for the
  clustering noise and tau for the assignment noise. So ``sigma`` = clustering noise, ``tau`` =
  assignment noise; the paper always uses sigma = tau, so the reading changes no reported number.
* **p in eq. (2).** The swRD score ``s_p = -beta ||p - p_hat||^2`` uses the *clean* patch ``p``, as the
  paper writes it (not the noisy ``p + w`` that was used to pick ``p_hat`` in eq. (1)).
* **Clipping.** Centres are means of *noisy* patches and can leave ``[0, 1]`` slightly; the
  returned image is clamped to ``[0, 1]`` (so it is a valid image for the classifier). The centres
  returned with ``return_centers=True`` / ``last_centers`` are the raw, unclamped k-means centres.
* **Padding (pRD).** When ``H`` or ``W`` is not a multiple of ``s`` the image is zero-padded at the
  bottom / right (Section 3.1: "the image is zero-padded so that h/s and w/s are integers"); the
  padded pixels are part of their patches (clustered and noised like the rest) and are cropped
  from the output.
* **Centre layout.** Centres have shape ``(B, k, C*s*s)`` in ``torch.nn.functional.unfold`` order:
  index ``c*s*s + u*s + v`` is channel ``c``, row ``u``, column ``v`` of the patch.
* **Randomness.** The batch is processed in chunks of images (:func:`default_chunk_size`); each
  chunk draws all its noise and k-means++ numbers from its own ``torch.Generator``, seeded from
  ``generator`` (a generator on ``x``'s device) or, when ``None``, from torch's global RNG. So
  ``torch.manual_seed`` or an explicit generator make results bit-reproducible, independent of
  the number of worker threads; the exact sample (not its distribution) depends on the chunk
  size.
* **Threads.** On CPU, chunks run on ``threads`` worker threads (default: ``torch.get_num_threads()``,
  at most one per chunk; :func:`vqdbook.parallel.worker_threads` is the rule) while torch's
  intra-op parallelism is set to 1 for the duration of the call (restored after): see
  :func:`vqdbook.parallel.map_chunks`.
* **Dtypes and devices.** float32 and float64 images are processed in their own dtype (half types
  in float32, the output cast back); everything runs on ``x``'s device.
* **Gradients.** The quantizers are not differentiable (argmin, k-means); they run under
  ``torch.no_grad()`` and return tensors without history. Use BPDA / straight-through estimators
  in attacks.

The functional forms :func:`rand_disc`, :func:`prd`, :func:`swrd` accept ``centers=`` to skip the
clustering and quantize with a given codebook (the mapping ``Q_{X_hat | C, X}`` of Section 3.3),
which is also how the tests compare against a per-image NumPy / scikit-learn reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import paper
from .kmeans import first_argmin, kmeans_batch, take_rows
from .parallel import cpu_single_intra_op, default_chunk_size, map_chunks
from .validation import check_int, check_real

__all__ = [
    "rand_disc", "prd", "swrd", "bit_depth", "RandDisc", "PRD", "SWRD", "BitDepth", "QuantizerSpec",
    "paper_quantizer", "METHODS", "METHOD_NAMES",
    "assign", "swrd_blend", "fit_centers", "patch_matrix", "check_images", "check_geometry", "n_patches",
    "KMEANS_MAX_ITER", "KMEANS_TOL", "KMEANS_INITS",
]

#: k-means settings of the clustering step (scikit-learn's defaults, n_init = 1).
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4
#: Seedings of the clustering step: scikit-learn's greedy k-means++ (the default, as in RandDisc's
#: code) or k distinct random patches (a variant of the reproduction study).
KMEANS_INITS = ("k-means++", "random")


# --------------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------------

_check_int = check_int


def _check_real(value, name, *, positive=False):
    return check_real(value, name, positive=positive)


def check_images(x):
    """Raise unless ``x`` is a float tensor ``(B, C, H, W)``, finite, in [0, 1] (the input of eqs. (1)-(4))."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if x.shape[1] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have C, H, W >= 1, got shape {tuple(x.shape)}")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite (no NaN or inf), with values in [0, 1]")
        lo, hi = torch.aminmax(x)
        if float(lo) < 0.0 or float(hi) > 1.0:
            raise ValueError(f"x values must be in [0, 1], got min {float(lo):.6g}, max {float(hi):.6g}")


def _check_generator(generator):
    """``generator``: the source of the noise of eq. (1) and the clustering (or None)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_common(s, k, sigma, tau, beta=None):
    """Checks that need no image (module construction); returns the cleaned values."""
    s = _check_int(s, "s", 1, None)
    k = _check_int(k, "k", 1, None)
    sigma = _check_real(sigma, "sigma")
    tau = _check_real(tau, "tau")
    if beta is not None:
        beta = _check_real(beta, "beta", positive=True)
    return s, k, sigma, tau, beta


def n_patches(H, W, s, mode):
    """Number of patches: ``(H-s+1)(W-s+1)`` windows (swRD, eqs. (2)-(4)) or
    ``ceil(H/s) ceil(W/s)`` padded patches (pRD, eq. (1))."""
    if mode == "swrd":
        return (H - s + 1) * (W - s + 1)
    return -(-H // s) * -(-W // s)


def check_geometry(x, s, k, mode, centers=None):
    """Raise unless ``s``, ``k`` (and ``centers``) fit the images ``x`` (patches of eq. (1) when
    ``mode="prd"``, windows of eqs. (2)-(4) when ``mode="swrd"``)."""
    B, C, H, W = x.shape
    if s > min(H, W):
        raise ValueError(f"s must be in [1, {min(H, W)}] (1 to min(H, W) for {H}x{W} images), got {s}")
    n = n_patches(H, W, s, mode)
    if k > n:
        raise ValueError(f"k must be in [1, {n}] (1 to the number of patches of {H}x{W} images "
                         f"with s={s}), got {k}")
    if centers is not None:
        if not isinstance(centers, torch.Tensor):
            raise TypeError(f"centers must be a torch.Tensor of shape (B, k, C*s*s), "
                            f"got {type(centers).__name__}")
        want = (B, k, C * s * s)
        if tuple(centers.shape) != want:
            raise ValueError(f"centers must have shape (B, k, C*s*s) = {want}, got {tuple(centers.shape)}")
        if not centers.is_floating_point() or not bool(torch.isfinite(centers).all()):
            raise ValueError("centers must be a finite floating-point tensor")


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

def _noisy(P, std, generator):
    """``P + std * N(0, I)`` (a new tensor), or ``P`` itself when ``std == 0``: the clustering
    noise (sigma) or the assignment noise ``w_i`` of eq. (1) (tau)."""
    if not std:
        return P
    out = torch.randn(P.shape, generator=generator, dtype=P.dtype, device=P.device)
    return out.mul_(std).add_(P)


def fit_centers(P, k, sigma, generator=None, init="k-means++", max_iter=KMEANS_MAX_ITER):
    """Codebook of each image: k-means of the noisy patches ``P + sigma * N(0, I)``.

    ``P`` is the patch matrix ``(B, n, d)`` (:func:`patch_matrix`). The clustering noise is the
    ``eps_i`` of Section 3.1 (read as sigma, see the module docstring), added before clustering,
    ahead of eq. (1). Returns the raw centres ``(B, k, d)`` (the labels are not needed, so k-means
    skips its final E-step). Runs on the calling thread in one piece:
    the quantizers and :func:`vqdbook.kl.sample_centers` call it inside chunks of
    :func:`vqdbook.parallel.map_chunks`.
    """
    X = _noisy(P, sigma, generator)
    centers, _, _ = kmeans_batch(X.contiguous(), k, init=init, generator=generator,
                                 max_iter=max_iter, tol=KMEANS_TOL, final_estep=False)
    return centers


def _check_kmeans(init, max_iter):
    """The k-means options of the clustering step: ``init`` and ``max_iter``."""
    if init not in KMEANS_INITS:
        raise ValueError(f"init must be one of {KMEANS_INITS} (k-means seeding of the codebook); got {init!r}")
    return init, _check_int(max_iter, "max_iter", 1, None)


def assign(P: torch.Tensor, centers: torch.Tensor, tau: float, generator=None) -> torch.Tensor:
    """Assignment of eq. (1): ``p_hat_i = argmin_{c in codebook} ||p_i + w_i - c||^2`` with ``w_i ~ N(0, tau^2 I)``.

    ``P`` holds the patches ``(B, n, d)`` and ``centers`` the codebooks ``(B, k, d)``; every patch
    gets its own fresh noise ``w_i``. Returns the labels ``(B, n)`` (index of the chosen centre;
    the first one on exact ties). The squared distance is computed as ``||c||^2 - 2 (p + w).c``
    (the ``||p + w||^2`` term does not change the argmin), one batched matrix product.
    """
    Y = _noisy(P, tau, generator)
    centers = centers.to(P.dtype)
    c_sq = (centers * centers).sum(2)
    D = torch.baddbmm(c_sq[:, :, None], centers, Y.transpose(1, 2), alpha=-2.0)   # (B, k, n)
    return first_argmin(D, torch.amin(D, dim=1))


def _window_max(score: torch.Tensor, s: int) -> torch.Tensor:
    """Per-pixel max of the window scores of eq. (2): ``m[i] = max_{windows p covering i} s_p``,
    the shift that makes the softmax of eq. (3) stable.

    ``score (B, Hs, Ws)`` -> ``(B, Hs+s-1, Ws+s-1)``; a separable running max over ``s`` shifts
    of the ``-inf``-padded score map (the same as a stride-1 max-pool of the padded map).
    """
    B, Hs, Ws = score.shape
    p = F.pad(score, (s - 1, s - 1, s - 1, s - 1), value=-math.inf)       # (B, Hs+2s-2, Ws+2s-2)
    H, W = Hs + s - 1, Ws + s - 1
    r = p[:, :, 0:W].clone()
    for v in range(1, s):
        torch.maximum(r, p[:, :, v:v + W], out=r)
    m = r[:, 0:H].clone()
    for u in range(1, s):
        torch.maximum(m, r[:, u:u + H], out=m)
    return m


def swrd_blend(P: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, size: tuple[int, int],
               s: int, beta: float) -> torch.Tensor:
    """swRD blending, eqs. (2)-(4): the quantized windows back into an image, pixel by pixel.

    ``P (B, L, d)`` are the clean windows (``L = (H-s+1)(W-s+1)`` in row-major window order,
    ``d = C*s*s`` in unfold order), ``labels (B, L)`` their centres from eq. (1) and
    ``centers (B, k, d)`` the codebooks. For every window ``p`` the score is
    ``s_p = -beta ||p - p_hat||^2`` (eq. (2), clean ``p``); the weight of window ``p`` at a pixel
    ``i`` it covers is ``exp(s_p) / sum_{p' covering i} exp(s_p')`` (eq. (3)); and the output
    pixel is the weighted sum of the pixel's values in the covering quantized windows (eq. (4)).

    The softmax of eq. (3) is evaluated stably *per pixel*: with ``m[i] = max_{p covering i} s_p``
    (:func:`_window_max`) every term is ``exp(s_p - m[i]) <= 1`` and the largest is exactly 1, so
    the denominator is >= 1 and nothing under- or overflows even for huge ``beta`` (the paper's
    CIFAR-10 beta is 0.1 * 255^2 = 6502.5 on the [0, 1] scale); a single global max would
    underflow to 0/0. Numerator and denominator are overlap-adds over the ``s*s`` window offsets
    (what ``F.fold`` computes). Returns ``(B, C, H, W)`` (not clamped).
    """
    H, W = size
    B, L, d = P.shape
    ss = s * s
    C = d // ss
    Hs, Ws = H - s + 1, W - s + 1
    Q = take_rows(centers.to(P.dtype).contiguous(), labels)                 # (B, L, d): p_hat
    diff = P - Q
    score = torch.linalg.vecdot(diff, diff).mul_(-beta).view(B, Hs, Ws)     # eq. (2)
    if s == 1:  # every pixel is covered by one window: x_hat = p_hat
        return Q.view(B, H, W, C).permute(0, 3, 1, 2).contiguous()
    m = _window_max(score, s)                                                # (B, H, W)
    E = score.new_empty((B, ss, Hs, Ws))
    for u in range(s):
        for v in range(s):
            torch.sub(score, m[:, u:u + Hs, v:v + Ws], out=E[:, u * s + v])
    # exponents below -80 contribute < e^-80 ~ 2e-35 relative to the max window (weight 1): clamp
    # them, because exp() of very negative floats takes a slow path on CPU
    E.clamp_(min=-80.0).exp_()                                               # eq. (3) numerators
    # one transposing copy, so that each of the s*s overlap-adds below reads contiguous planes
    # (reading the (B, L, d) rows with stride d, s*s times over, cost twice as much)
    Qv = Q.transpose(1, 2).contiguous().view(B, C, ss, Hs, Ws)               # (B, C, ss, Hs, Ws)
    num = P.new_zeros((B, C, H, W))
    den = P.new_zeros((B, 1, H, W))
    for u in range(s):
        for v in range(s):
            j = u * s + v
            num[:, :, u:u + Hs, v:v + Ws].addcmul_(Qv[:, :, j], E[:, j, None])
            den[:, 0, u:u + Hs, v:v + Ws] += E[:, j]
    return num.div_(den)                                                     # eq. (4)


def _windows(x: torch.Tensor, s: int) -> torch.Tensor:
    """All stride-1 ``s x s`` windows of ``x (B, C, H, W)`` -- the patches of swRD, eqs. (2)-(4) --
    as ``(B, L, C*s*s)`` in unfold order, windows in row-major order of their top-left corner."""
    B, C, H, W = x.shape
    Hs, Ws = H - s + 1, W - s + 1
    xcl = x.permute(0, 2, 3, 1)                                              # (B, H, W, C) view
    P = x.new_empty((B, Hs, Ws, C, s, s))
    for u in range(s):
        for v in range(s):
            P[:, :, :, :, u, v] = xcl[:, u:u + Hs, v:v + Ws, :]
    return P.view(B, Hs * Ws, C * s * s)


def _pad_to_multiple(x, s):
    """Zero-pad the bottom / right of ``x`` to multiples of ``s`` (pRD, Section 3.1, before eq. (1))."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % s, (-W) % s
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x


def patch_matrix(x: torch.Tensor, s: int, mode: str) -> torch.Tensor:
    """The patches the quantizers cluster, as a matrix ``(B, n, C*s*s)`` in unfold order.

    ``mode="prd"``: the ``ceil(H/s) ceil(W/s)`` non-overlapping ``s x s`` patches of eq. (1),
    zero-padded at the bottom / right (Section 3.1; RandDisc is ``s = 1``: pixels), in row-major
    order. ``mode="swrd"``: all ``(H-s+1)(W-s+1)`` stride-1 windows of eqs. (2)-(4).

    Examples::

        >>> import torch
        >>> from vqdbook.quantizers import patch_matrix
        >>> x = torch.rand(2, 3, 32, 32)
        >>> patch_matrix(x, 2, "prd").shape, patch_matrix(x, 4, "swrd").shape
        (torch.Size([2, 256, 12]), torch.Size([2, 841, 48]))
    """
    if mode == "swrd":
        return _windows(x, s)
    if mode != "prd":
        raise ValueError(f"mode must be 'prd' (non-overlapping patches) or 'swrd' (sliding windows); got {mode!r}")
    B, C, H, W = x.shape
    xp = _pad_to_multiple(x, s)
    Hp, Wp = xp.shape[-2:]
    nh, nw = Hp // s, Wp // s
    return xp.reshape(B, C, nh, s, nw, s).permute(0, 2, 4, 1, 3, 5).reshape(B, nh * nw, C * s * s)


def _prd_chunk(x, s, k, sigma, tau, generator, centers, init="k-means++", max_iter=KMEANS_MAX_ITER):
    """pRD (RandDisc for ``s = 1``) of one chunk: padding, patches, codebook, eq. (1), crop, clamp."""
    B, C, H, W = x.shape
    P = patch_matrix(x, s, "prd")
    Hp, Wp = -(-H // s) * s, -(-W // s) * s
    nh, nw = Hp // s, Wp // s
    if centers is None:
        centers = fit_centers(P, k, sigma, generator, init, max_iter)
    labels = assign(P, centers, tau, generator)
    Q = take_rows(centers.to(x.dtype).contiguous(), labels)                     # (B, n, d)
    out = Q.view(B, nh, nw, C, s, s).permute(0, 3, 1, 4, 2, 5).reshape(B, C, Hp, Wp)
    return out[:, :, :H, :W].clamp(0.0, 1.0), centers


def _swrd_chunk(x, s, k, sigma, tau, beta, generator, centers, init="k-means++", max_iter=KMEANS_MAX_ITER):
    """swRD of one chunk: windows, codebook, eq. (1) per window, eqs. (2)-(4), clamp."""
    B, C, H, W = x.shape
    P = _windows(x, s)                                                       # (B, L, d)
    if centers is None:
        centers = fit_centers(P, k, sigma, generator, init, max_iter)
    labels = assign(P, centers, tau, generator)
    out = swrd_blend(P, labels, centers, (H, W), s, beta)
    return out.clamp_(0.0, 1.0), centers


def _run_chunks(fn, x, centers, chunk_size, return_centers, k, d, generator, threads, n_patches):
    """Apply ``fn(x_chunk, centers_chunk, chunk_generator)`` to chunks of the batch
    (:func:`vqdbook.parallel.map_chunks`: one generator per chunk, worker threads on CPU)."""
    B = x.shape[0]
    if threads is not None:
        threads = _check_int(threads, "threads", 1, None)
    if chunk_size is None:
        cs = default_chunk_size(n_patches, d, x.device)
    else:
        cs = _check_int(chunk_size, "chunk_size", 1, None)
    if B == 0:
        out = x.detach().clone()
        cen = x.new_empty((0, k, d))
        return (out, cen) if return_centers else out
    out_dtype = x.dtype
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):   # half types: compute in float32
        x = x.float()
    cen_in = None if centers is None else centers.detach()
    results = map_chunks(lambda a, b, g: fn(x[a:b], None if cen_in is None else cen_in[a:b], g),
                          B, cs, generator, x.device, threads)
    outs = [r[0] for r in results]
    cents = [r[1] for r in results]
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    cen = cents[0] if len(cents) == 1 else torch.cat(cents)
    out = out.to(out_dtype)
    return (out, cen) if return_centers else out


# --------------------------------------------------------------------------------------------
# functional forms
# --------------------------------------------------------------------------------------------

def rand_disc(x: torch.Tensor, k: int, sigma: float, tau: float, generator: torch.Generator | None = None,
              *, centers: torch.Tensor | None = None, return_centers: bool = False,
              chunk_size: int | None = None, threads: int | None = None, init: str = "k-means++",
              max_iter: int = KMEANS_MAX_ITER):
    """RandDisc (Zhang & Liang), the pixel-level quantizer: eq. (1) with ``s = 1``.

    Each pixel ``p_i in R^C`` gets clustering noise ``sigma * N(0, I)``; the noisy pixels of each image
    are clustered into ``k`` centres (k-means, greedy k-means++ seeding); then every pixel is
    replaced by the centre nearest to ``p_i + w_i``, ``w_i ~ N(0, tau^2 I)`` -- eq. (1).

    Parameters
    ----------
    x : float tensor (B, C, H, W) with values in [0, 1]
    k : int in [1, H*W] -- codebook size
    sigma : float >= 0 -- clustering noise std on the [0, 1] scale (paper's 0-255 value / 255)
    tau : float >= 0 -- assignment noise std on the [0, 1] scale (paper's 0-255 value / 255)
    generator : torch.Generator, optional -- on x's device; torch's global RNG when None
    centers : tensor (B, k, C), optional -- use this codebook instead of clustering (sigma unused)
    return_centers : bool -- also return the centres ``(B, k, C)``
    chunk_size : int, optional -- images per chunk (default :func:`default_chunk_size`)
    threads : int, optional -- CPU worker threads, one chunk each (default:
        ``torch.get_num_threads()``, at most one per chunk; :func:`vqdbook.parallel.worker_threads`)
    init : "k-means++" | "random" -- seeding of the k-means codebook (default: greedy k-means++)
    max_iter : int >= 1 -- Lloyd iterations at most (default 300, scikit-learn's)

    Returns ``x_hat`` (B, C, H, W) clamped to [0, 1], or ``(x_hat, centers)``.
    """
    return prd(x, 1, k, sigma, tau, generator, centers=centers, return_centers=return_centers,
               chunk_size=chunk_size, threads=threads, init=init, max_iter=max_iter)


@cpu_single_intra_op
def prd(x: torch.Tensor, s: int, k: int, sigma: float, tau: float, generator: torch.Generator | None = None,
        *, centers: torch.Tensor | None = None, return_centers: bool = False,
        chunk_size: int | None = None, threads: int | None = None, init: str = "k-means++",
        max_iter: int = KMEANS_MAX_ITER):
    """Patched RandDisc (pRD), Section 3.1, eq. (1).

    The image is cut into non-overlapping ``s x s`` patches (zero-padded at the bottom/right when
    ``H`` or ``W`` is not a multiple of ``s``), ``n = ceil(H/s) ceil(W/s)`` vectors in ``R^(C s^2)``.
    Clustering noise ``sigma * N(0, I)`` is added and the noisy patches of each image are clustered
    into ``k`` centres; each patch is then replaced by ``argmin_c ||p_i + w_i - c||^2`` with fresh
    ``w_i ~ N(0, tau^2 I)`` -- eq. (1) -- and the padding is cropped.

    Parameters
    ----------
    x : float tensor (B, C, H, W) with values in [0, 1]
    s : int in [1, min(H, W)] -- patch size
    k : int in [1, n] -- codebook size
    sigma, tau : float >= 0 -- clustering / assignment noise std on the [0, 1] scale
        (the paper's CIFAR-10/SVHN value 4 on the 0-255 scale is 4/255 here)
    generator, centers, return_centers, chunk_size, threads, init, max_iter : as in :func:`rand_disc`;
        ``centers`` has shape
        ``(B, k, C*s*s)`` in unfold order.

    Returns ``x_hat`` (B, C, H, W) clamped to [0, 1], or ``(x_hat, centers (B, k, C*s*s))``.
    """
    check_images(x)
    s, k, sigma, tau, _ = _check_common(s, k, sigma, tau)
    _check_generator(generator)
    check_geometry(x, s, k, "prd", centers)
    init, max_iter = _check_kmeans(init, max_iter)
    d = x.shape[1] * s * s
    n = n_patches(x.shape[2], x.shape[3], s, "prd")
    return _run_chunks(lambda xc, cc, g: _prd_chunk(xc, s, k, sigma, tau, g, cc, init, max_iter),
                       x, centers, chunk_size, return_centers, k, d, generator, threads, n)


@cpu_single_intra_op
def swrd(x: torch.Tensor, s: int, k: int, sigma: float, tau: float, beta: float,
         generator: torch.Generator | None = None, *, centers: torch.Tensor | None = None,
         return_centers: bool = False, chunk_size: int | None = None, threads: int | None = None,
         init: str = "k-means++", max_iter: int = KMEANS_MAX_ITER):
    """Sliding-window RandDisc (swRD), Section 3.2, eqs. (2)-(4).

    All ``L = (H-s+1)(W-s+1)`` stride-1 ``s x s`` windows are the patches. Clustering noise
    ``sigma * N(0, I)`` is added and the noisy windows of each image are clustered into ``k``
    centres; every window gets its own fresh assignment noise ``w ~ N(0, tau^2 I)`` and is quantized
    by eq. (1); each pixel is then the blend of its values in the covering quantized windows with
    weights ``softmax_p(-beta ||p - p_hat||^2)`` over those windows -- eqs. (2)-(4), with the *clean*
    patch ``p`` in eq. (2), as the paper writes it. See :func:`swrd_blend` for the stable softmax.

    Parameters
    ----------
    x : float tensor (B, C, H, W) with values in [0, 1]
    s : int in [1, min(H, W)] -- window size
    k : int in [1, L] -- codebook size
    sigma, tau : float >= 0 -- clustering / assignment noise std on the [0, 1] scale
    beta : float > 0 -- eq. (2) coefficient on the [0, 1] scale: the paper's 0-255-scale value times
        255^2 (CIFAR-10 0.1 -> 6502.5, SVHN 0.5 -> 32512.5; MNIST's beta = 1 is already on [0, 1])
    generator, centers, return_centers, chunk_size, threads, init, max_iter : as in :func:`prd`.

    Returns ``x_hat`` (B, C, H, W) clamped to [0, 1], or ``(x_hat, centers (B, k, C*s*s))``.
    """
    check_images(x)
    s, k, sigma, tau, beta = _check_common(s, k, sigma, tau, beta)
    _check_generator(generator)
    check_geometry(x, s, k, "swrd", centers)
    init, max_iter = _check_kmeans(init, max_iter)
    d = x.shape[1] * s * s
    n = n_patches(x.shape[2], x.shape[3], s, "swrd")
    return _run_chunks(lambda xc, cc, g: _swrd_chunk(xc, s, k, sigma, tau, beta, g, cc, init, max_iter),
                       x, centers, chunk_size, return_centers, k, d, generator, threads, n)


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------

class _Quantizer(nn.Module):
    """Shared plumbing of the modules of eq. (1) / eqs. (2)-(4): ``generator`` attribute,
    ``last_centers`` (raw centres of the last call)."""

    def __init__(self, generator=None, chunk_size=None, init="k-means++", max_iter=KMEANS_MAX_ITER):
        super().__init__()
        _check_generator(generator)
        self.generator = generator
        self.chunk_size = chunk_size
        self.init, self.max_iter = _check_kmeans(init, max_iter)
        self.last_centers: torch.Tensor | None = None

    def _options(self):
        return dict(return_centers=True, chunk_size=self.chunk_size, init=self.init, max_iter=self.max_iter)

    def _kmeans_repr(self):
        if (self.init, self.max_iter) == ("k-means++", KMEANS_MAX_ITER):
            return ""
        return f", init={self.init!r}, max_iter={self.max_iter}"

    def _store(self, result):
        out, centers = result
        self.last_centers = centers
        return out


class RandDisc(_Quantizer):
    """RandDisc: pixel-level quantizer, eq. (1) with s = 1 (see :func:`rand_disc`).

    ``sigma`` (clustering noise) and ``tau`` (assignment noise) are on the [0, 1] scale: the paper's
    CIFAR-10/SVHN ``sigma = tau = 4`` (0-255) is ``4/255``. ``forward(x)`` maps ``(B, C, H, W)`` in
    [0, 1] to the same shape, clamped to [0, 1]; the centres ``(B, k, C)`` of the last call are in
    ``self.last_centers``.

    Examples::

        >>> import torch
        >>> from vqdbook import RandDisc
        >>> q = RandDisc(k=2, sigma=4 / 255, tau=4 / 255, generator=torch.Generator().manual_seed(0))
        >>> x_hat = q(torch.rand(2, 1, 28, 28))
        >>> x_hat.shape, q.last_centers.shape        # k centres in R^C per image
        (torch.Size([2, 1, 28, 28]), torch.Size([2, 2, 1]))
        >>> len(x_hat[0].unique()) <= 2              # every pixel is one of the k centres
        True
    """

    def __init__(self, k: int, sigma: float, tau: float, *, generator=None, chunk_size=None,
                 init: str = "k-means++", max_iter: int = KMEANS_MAX_ITER):
        super().__init__(generator, chunk_size, init, max_iter)
        _, self.k, self.sigma, self.tau, _ = _check_common(1, k, sigma, tau)

    def forward(self, x):
        return self._store(rand_disc(x, self.k, self.sigma, self.tau, self.generator,
                                     **self._options()))

    def extra_repr(self):
        return f"k={self.k}, sigma={self.sigma:.6g}, tau={self.tau:.6g}" + self._kmeans_repr()


class PRD(_Quantizer):
    """Patched RandDisc, Section 3.1, eq. (1) (see :func:`prd`).

    Non-overlapping ``s x s`` patches (zero-padded when H or W is not a multiple of s), ``k``
    centres. ``sigma``, ``tau`` on the [0, 1] scale (paper's 0-255 value / 255). ``forward(x)``
    returns the quantized batch clamped to [0, 1]; centres ``(B, k, C*s*s)`` in ``last_centers``.

    Examples::

        >>> import torch
        >>> from vqdbook import PRD
        >>> q = PRD(s=2, k=10, sigma=4 / 255, tau=4 / 255, generator=torch.Generator().manual_seed(0))
        >>> x_hat = q(torch.rand(2, 3, 32, 32))
        >>> x_hat.shape, q.last_centers.shape        # k centres of 3*2*2 values per image
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 10, 12]))
    """

    def __init__(self, s: int, k: int, sigma: float, tau: float, *, generator=None, chunk_size=None,
                 init: str = "k-means++", max_iter: int = KMEANS_MAX_ITER):
        super().__init__(generator, chunk_size, init, max_iter)
        self.s, self.k, self.sigma, self.tau, _ = _check_common(s, k, sigma, tau)

    def forward(self, x):
        return self._store(prd(x, self.s, self.k, self.sigma, self.tau, self.generator,
                               **self._options()))

    def extra_repr(self):
        return f"s={self.s}, k={self.k}, sigma={self.sigma:.6g}, tau={self.tau:.6g}" + self._kmeans_repr()


class SWRD(_Quantizer):
    """Sliding-window RandDisc, Section 3.2, eqs. (2)-(4) (see :func:`swrd`).

    All stride-1 ``s x s`` windows, ``k`` centres, fresh assignment noise per window, per-pixel
    softmax blending with coefficient ``beta`` (on the [0, 1] scale: paper's 0-255 beta times 255^2)
    using the clean patch in eq. (2). ``forward(x)`` returns the blended batch clamped to [0, 1];
    centres ``(B, k, C*s*s)`` in ``last_centers``.

    Examples::

        >>> import torch
        >>> from vqdbook import SWRD, paper
        >>> beta = paper.NOISE["cifar10"]["beta"]          # the paper's 0.1 on the 0-255 scale
        >>> q = SWRD(s=4, k=25, sigma=4 / 255, tau=4 / 255, beta=beta, generator=torch.Generator().manual_seed(0))
        >>> x = torch.rand(2, 3, 32, 32)
        >>> x_hat = q(x)
        >>> x_hat.shape, bool((x_hat >= 0).all() and (x_hat <= 1).all())
        (torch.Size([2, 3, 32, 32]), True)
    """

    def __init__(self, s: int, k: int, sigma: float, tau: float, beta: float, *, generator=None,
                 chunk_size=None, init: str = "k-means++", max_iter: int = KMEANS_MAX_ITER):
        super().__init__(generator, chunk_size, init, max_iter)
        self.s, self.k, self.sigma, self.tau, self.beta = _check_common(s, k, sigma, tau, beta)

    def forward(self, x):
        return self._store(swrd(x, self.s, self.k, self.sigma, self.tau, self.beta, self.generator,
                                **self._options()))

    def extra_repr(self):
        return (f"s={self.s}, k={self.k}, sigma={self.sigma:.6g}, tau={self.tau:.6g}, "
                f"beta={self.beta:.6g}" + self._kmeans_repr())


# --------------------------------------------------------------------------------------------
# the simplest quantizer: bit-depth reduction (a baseline, not the paper's)
# --------------------------------------------------------------------------------------------

def bit_depth(x: torch.Tensor, k: int, *, return_centers: bool = False, **_):
    """Bit-depth reduction (Feature Squeezing, Xu et al. 2018): every pixel rounded to the nearest of
    ``k`` evenly spaced levels ``{0, 1/(k-1), ..., 1}`` (``k = 2``: 1 bit, binarization at 1/2).

    Deterministic and per pixel: the fixed-codebook, noise-free limit of RandDisc. Returns ``x_hat``
    like ``x`` (and, with ``return_centers``, the levels as ``(B, k, C)`` centres).
    """
    check_images(x)
    k = _check_int(k, "k", 2)
    with torch.no_grad():
        out = torch.round(x * (k - 1)) / (k - 1)
    if not return_centers:
        return out
    levels = torch.linspace(0, 1, k, dtype=x.dtype, device=x.device)
    return out, levels[None, :, None].expand(x.shape[0], k, x.shape[1]).contiguous()


class BitDepth(nn.Module):
    """Bit-depth reduction to ``k`` levels per channel (:func:`bit_depth`; ``k = 2**bits``).

    Examples::

        >>> import torch
        >>> from vqdbook.quantizers import BitDepth
        >>> BitDepth(2)(torch.tensor([[[[0.2, 0.5, 0.7]]]]))
        tensor([[[[0., 0., 1.]]]])
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = _check_int(k, "k", 2)
        self.last_centers = None

    def forward(self, x):
        return bit_depth(x, self.k)

    def extra_repr(self):
        return f"k={self.k}"


# --------------------------------------------------------------------------------------------
# one description of a quantizer
# --------------------------------------------------------------------------------------------

#: Every method a :class:`QuantizerSpec` can describe, with its name: the paper's three and, as the
#: simplest baseline a reviewer would ask about, bit-depth reduction (Feature Squeezing, Xu et al.
#: 2018), which rounds every pixel to one of ``k`` evenly spaced levels (1 bit: ``k = 2``).
METHOD_NAMES = {**paper.METHOD_LABELS, "bitdepth": "bit depth"}
METHODS = tuple(METHOD_NAMES)
_ALIASES = {**{m: m for m in METHODS}, **{v.lower(): m for m, v in paper.METHOD_LABELS.items()},
            "rd": "randdisc", "bit depth": "bitdepth"}
_FUNCTIONS = {"randdisc": lambda x, q, g, **kw: rand_disc(x, q.k, q.sigma, q.tau, g, **kw),
              "prd": lambda x, q, g, **kw: prd(x, q.s, q.k, q.sigma, q.tau, g, **kw),
              "swrd": lambda x, q, g, **kw: swrd(x, q.s, q.k, q.sigma, q.tau, q.beta, g, **kw),
              "bitdepth": lambda x, q, g, **kw: bit_depth(x, q.k, **kw)}


@dataclass(frozen=True)
class QuantizerSpec:
    """One quantizer, described once: method, patch size, codebook size, noise, blend, k-means options.

    The single place where a method name becomes a quantizer: :meth:`build` (the ``nn.Module``),
    :meth:`__call__` (the functional form), :attr:`name` / :attr:`label` (the paper's spelling),
    :meth:`params` / :meth:`from_params` (the form stored in records) and :meth:`paper` (the
    paper's settings for a dataset, Section 4.1). All values are on the [0, 1] scale.

    Fields: ``method`` in ``("randdisc", "prd", "swrd")`` (the paper's spellings and ``"rd"`` are
    accepted); ``s`` patch / window size (1 for RandDisc, which quantizes pixels); ``k`` codebook
    size; ``sigma`` clustering noise; ``tau`` assignment noise (eq. (1)); ``beta`` the eq. (2)
    coefficient (swRD only, ``None`` otherwise); ``init`` and ``max_iter`` of the k-means step.

    Examples::

        >>> from vqdbook.quantizers import QuantizerSpec
        >>> q = QuantizerSpec.paper("cifar10", "swrd", s=4, k=25)
        >>> q.label, round(q.beta, 1)
        ('swRD (s=4, k=25)', 6502.5)
        >>> QuantizerSpec.from_params(q.params()) == q
        True
        >>> q.build()
        SWRD(s=4, k=25, sigma=0.0156863, tau=0.0156863, beta=6502.5)
    """

    method: str
    s: int
    k: int
    sigma: float
    tau: float
    beta: float | None = None
    init: str = "k-means++"
    max_iter: int = KMEANS_MAX_ITER

    def __post_init__(self):
        method = self.canonical(self.method)
        s = _check_int(self.s, "s", 1)
        if method in ("randdisc", "bitdepth") and s != 1:
            raise ValueError(f"s must be 1 for {METHOD_NAMES[method]} (pixel-level), got {s}")
        if method == "bitdepth" and (self.sigma != 0 or self.tau != 0):
            raise ValueError("bit-depth reduction is deterministic: sigma and tau must be 0")
        if method == "bitdepth" and _check_int(self.k, "k", 2) != self.k:
            raise ValueError(f"k (levels) must be >= 2 for bit-depth reduction, got {self.k}")
        _, k, sigma, tau, _ = _check_common(s, self.k, self.sigma, self.tau)
        if method == "swrd":
            if self.beta is None:
                raise ValueError("beta is required for swRD (eq. (2)); see vqdbook.paper.NOISE for the paper's")
            beta = _check_real(self.beta, "beta", positive=True)
        else:
            if self.beta is not None:
                raise ValueError(f"beta is only used by swRD (eq. (2)); pass beta=None for {method!r}")
            beta = None
        init, max_iter = _check_kmeans(self.init, self.max_iter)
        for name, v in (("method", method), ("s", s), ("k", k), ("sigma", sigma), ("tau", tau), ("beta", beta),
                        ("init", init), ("max_iter", max_iter)):
            object.__setattr__(self, name, v)

    # ---- names
    @staticmethod
    def canonical(method: str) -> str:
        """The package's key for a method name: ``"pRD"`` or ``"prd"`` -> ``"prd"``, ``"rd"`` -> ``"randdisc"``."""
        if not isinstance(method, str) or method.lower() not in _ALIASES:
            raise ValueError(f"method must be one of {METHODS} (or the paper's spelling "
                             f"{tuple(paper.METHOD_LABELS.values())}); got {method!r}")
        return _ALIASES[method.lower()]

    @property
    def name(self) -> str:
        """The paper's spelling: ``"RandDisc"``, ``"pRD"`` or ``"swRD"`` (``"bit depth"`` for the baseline)."""
        return METHOD_NAMES[self.method]

    @property
    def label(self) -> str:
        """The method with its (s, k), as tables and legends show it: ``"swRD (s=4, k=25)"``, ``"1-bit"``."""
        if self.method == "bitdepth":
            bits = math.log2(self.k)
            return f"{bits:g}-bit" if bits == int(bits) else f"{self.k} levels"
        return f"{self.name} (s={self.s}, k={self.k})"

    @classmethod
    def bitdepth(cls, bits: int = 1) -> QuantizerSpec:
        """Bit-depth reduction to ``bits`` bits per channel (Xu et al. 2018): ``k = 2**bits`` levels."""
        return cls("bitdepth", 1, 2 ** _check_int(bits, "bits", 1, 16), 0.0, 0.0)

    @property
    def mode(self) -> str:
        """The patch geometry: ``"swrd"`` (sliding windows) or ``"prd"`` (non-overlapping; RandDisc's pixels)."""
        return "swrd" if self.method == "swrd" else "prd"

    # ---- construction
    @classmethod
    def paper(cls, dataset: str, method: str, s: int | None = None, k: int | None = None,
              **overrides) -> QuantizerSpec:
        """The paper's settings for ``dataset`` (Section 4.1, :data:`vqdbook.paper.NOISE`).

        ``s`` and ``k`` default to the first row of ``method`` in the dataset's table;
        ``overrides`` may replace ``sigma``, ``tau``, ``beta`` (on [0, 1]), ``init`` or ``max_iter``.
        """
        name = dataset.lower().replace("-", "") if isinstance(dataset, str) else getattr(dataset, "name", dataset)
        if name not in paper.NOISE:
            raise ValueError(f"dataset must be one of {sorted(paper.NOISE)}, got {dataset!r}")
        bad = set(overrides) - {"sigma", "tau", "beta", "init", "max_iter"}
        if bad:
            raise TypeError(f"unexpected keyword argument(s) {sorted(bad)}; allowed: sigma, tau, beta, init, max_iter")
        m = cls.canonical(method)
        s0, k0 = paper.default_sk(name, m)
        if m == "randdisc":
            if s not in (None, 1):
                raise ValueError(f"s must be 1 for RandDisc (pixel-level), got {s!r}")
            s = 1
        noise = paper.NOISE[name]
        fields = {"sigma": noise["sigma"], "tau": noise["tau"], "beta": noise["beta"] if m == "swrd" else None,
                  **overrides}
        return cls(m, s0 if s is None else s, k0 if k is None else k, **fields)

    def replace(self, **changes) -> QuantizerSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # ---- the record form
    def params(self) -> dict:
        """The form stored in records: ``method, s, k, sigma, tau`` (+ ``beta`` for swRD, + ``init`` /
        ``max_iter`` only when they differ from the defaults, so the paper's protocol keeps its keys)."""
        d = {"method": self.method, "s": self.s, "k": self.k, "sigma": self.sigma, "tau": self.tau}
        if self.method == "swrd":
            d["beta"] = self.beta
        if self.init != "k-means++":
            d["init"] = self.init
        if self.max_iter != KMEANS_MAX_ITER:
            d["max_iter"] = self.max_iter
        return d

    @classmethod
    def from_params(cls, params: dict) -> QuantizerSpec | None:
        """Inverse of :meth:`params`; ``None`` for the record form of no defense, ``{"method": "none"}``."""
        if not isinstance(params, dict) or "method" not in params:
            raise TypeError(f"params must be a dict with a 'method' key, got {params!r}")
        if params["method"] == "none":
            return None
        allowed = {"method", "s", "k", "sigma", "tau", "beta", "init", "max_iter"}
        bad = set(params) - allowed
        if bad:
            raise ValueError(f"unknown quantizer parameter(s) {sorted(bad)}; allowed: {sorted(allowed)}")
        return cls(**params)

    # ---- use
    def build(self, *, generator: torch.Generator | None = None, chunk_size: int | None = None) -> nn.Module:
        """The ``nn.Module``: :class:`RandDisc`, :class:`PRD` or :class:`SWRD`."""
        km = dict(generator=generator, chunk_size=chunk_size, init=self.init, max_iter=self.max_iter)
        if self.method == "bitdepth":
            return BitDepth(self.k)
        if self.method == "randdisc":
            return RandDisc(self.k, self.sigma, self.tau, **km)
        if self.method == "prd":
            return PRD(self.s, self.k, self.sigma, self.tau, **km)
        return SWRD(self.s, self.k, self.sigma, self.tau, self.beta, **km)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, **kwargs):
        """The functional form on a batch ``(B, C, H, W)`` (:func:`rand_disc`, :func:`prd`, :func:`swrd`
        or :func:`bit_depth`); ``kwargs`` (``centers``, ``return_centers``, ``chunk_size``,
        ``threads``) are passed on."""
        if self.method == "bitdepth":
            return _FUNCTIONS[self.method](x, self, generator, **kwargs)
        return _FUNCTIONS[self.method](x, self, generator, init=self.init, max_iter=self.max_iter, **kwargs)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The patch matrix ``(B, n, C*s*s)`` this quantizer clusters (:func:`patch_matrix`)."""
        return patch_matrix(x, self.s, self.mode)

    def check(self, x: torch.Tensor) -> None:
        """Raise unless ``x`` is a valid image batch and ``s``, ``k`` fit its size."""
        check_images(x)
        check_geometry(x, self.s, self.k, self.mode)


def paper_quantizer(dataset: str, method: str, s: int | None = None, k: int | None = None, *,
                    generator: torch.Generator | None = None, chunk_size: int | None = None,
                    **overrides) -> nn.Module:
    """A quantizer module with the paper's settings for ``dataset``, on the [0, 1] scale.

    ``method`` is ``"randdisc"`` (eq. (1), s = 1), ``"prd"`` (eq. (1)) or ``"swrd"`` (eqs. (2)-(4));
    ``s`` and ``k`` default to the first row of the paper's table for that dataset; ``overrides``
    may replace ``sigma``, ``tau`` or ``beta`` (already on the [0, 1] scale; use
    :func:`vqdbook.paper.from_paper_scale` to convert the paper's numbers). See
    :meth:`QuantizerSpec.paper`.

    Examples::

        >>> import torch
        >>> from vqdbook import paper_quantizer
        >>> q = paper_quantizer("cifar10", "swrd", s=4, k=25, generator=torch.Generator().manual_seed(0))
        >>> x = torch.rand(2, 3, 32, 32)
        >>> q(x).shape
        torch.Size([2, 3, 32, 32])
    """
    return QuantizerSpec.paper(dataset, method, s, k, **overrides).build(generator=generator, chunk_size=chunk_size)
