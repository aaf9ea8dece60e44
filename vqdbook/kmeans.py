"""Batched k-means in PyTorch: many independent clustering problems at once.

The quantizers of Dong & Mao (arXiv 2305.13651) cluster the (noisy) patches of *each image*
separately (Section 3.1: "The noisy patches are then clustered into k clusters"; Section 3.2:
"Similar to that in pRD, a set c of k cluster centers ... are obtained"). Done per image with
scikit-learn this is the bottleneck of every experiment, so :func:`kmeans` solves a batch of
``B`` independent problems ``X[b]`` (``n`` points in ``R^d`` each) with one tensor program:

* **initialisation** -- scikit-learn's *greedy* k-means++ (``2 + int(ln k)`` candidate centres
  per step, drawn by D^2 sampling; the candidate that most lowers the potential wins), or
  ``"random"`` (k distinct points, like scikit-learn's ``init="random"``), or given centres;
* **Lloyd iterations** with scikit-learn's stopping rule: stop when the labels do not change
  ("strict convergence") or when the squared centre shift summed over all centres is
  ``<= tol * mean_j Var(X[:, j])`` (``sklearn.cluster._kmeans._tolerance``), per problem;
  problems that have converged leave the batch, so late stragglers do not cost the whole batch;
* **empty clusters** are re-seeded as scikit-learn does (``_relocate_empty_clusters_dense``):
  the points farthest from their centre become the centres of the empty clusters;
* a **final E-step** after tolerance-based convergence (or ``max_iter``), so labels match the
  returned centres, and ``inertia`` is the sum of squared distances of the points to the centres
  of their labels -- the same semantics as ``KMeans.inertia_``.

Distances are computed as batched matrix products, ``||x||^2 - 2 x.c + ||c||^2`` (``baddbmm``; in
the Lloyd iterations one ``bmm`` with a column of ones appended to the points, which also counts the
clusters' sizes in the M-step). The centre sums of the M-step are kept from one iteration to the next
and updated with the points that changed cluster (on CPU; from scratch on GPU, where a one-hot matrix
product is deterministic): the running sums equal fresh sums up to float rounding, so a seed gives
the same clustering as summing afresh except where a near-tie in the last bits goes the other way.

Everything runs on the device of ``X``; the only Python loops are over k-means++ steps, Lloyd
iterations and chunks of problems (a few dozen problems per chunk on CPU, all of them on GPU),
never over single problems. On CPU the chunks run on worker threads
(:func:`vqdbook.parallel.map_chunks`).
Randomness comes from ``generator`` (or torch's global RNG), one derived generator per chunk,
so ``torch.manual_seed`` makes results reproducible.
"""

from __future__ import annotations

import math
import numbers

import torch

from .parallel import cpu_single_intra_op, default_chunk_size, map_chunks
from .validation import check_int

__all__ = ["kmeans", "kmeans_batch", "kmeans_plusplus", "tolerance", "n_local_trials", "first_argmin", "take_rows"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def n_local_trials(k: int) -> int:
    """Number of candidate centres per greedy k-means++ step: ``2 + int(ln k)`` (scikit-learn)."""
    return 2 + int(math.log(k))


def tolerance(X: torch.Tensor, tol: float) -> torch.Tensor:
    """Per-problem absolute tolerance ``tol * mean_j Var(X[b, :, j])`` (shape ``(B,)``).

    This is ``sklearn.cluster._kmeans._tolerance`` (population variance of every feature, averaged
    over features, times ``tol``) applied to each problem of the batch separately. Used by the
    Lloyd iterations of :func:`kmeans`, which cluster the patches of eq. (1) / eqs. (2)-(4).
    """
    return _tolerance(X, _sq_norms(X), tol)


def _tolerance(X, x_sq, tol):
    """:func:`tolerance` given the squared norms: ``tol * mean_j Var(X[:, j]) =
    tol * (mean_i ||x_i||^2 - ||mean_i x_i||^2) / d``, accumulated in float64."""
    B, n, d = X.shape
    if tol == 0:
        return X.new_zeros(B)
    mean = X.mean(1, dtype=torch.float64)
    var = (x_sq.mean(1, dtype=torch.float64) - (mean * mean).sum(1)) / d
    return (var.clamp(min=0) * tol).to(X.dtype)


def _sq_norms(X: torch.Tensor) -> torch.Tensor:
    """``||x_i||^2`` of every point, shape ``(B, n)`` (for the distances of eq. (1))."""
    return (X * X).sum(2)


def first_argmin(D: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """Index of the first minimum of ``D`` along dim 1, given ``vals = D.amin(1)``: the argmin of
    eq. (1) (and of the k-means E-step). Overwrites ``D``.

    ``torch.min(D, dim=1)`` is slow on CPU for reductions over a non-innermost dimension, and so
    are comparisons that produce bool tensors; this formulation (a fast ``amin``, an in-place
    float comparison, a weighting that favours lower indices and an ``amax``) is several times
    faster and keeps scikit-learn's rule: among exact ties, the lowest index wins.
    """
    k = D.shape[1]
    w = torch.arange(k, 0, -1, dtype=D.dtype, device=D.device).view(1, k, *([1] * (D.dim() - 2)))
    top = D.le_(vals.unsqueeze(1)).mul_(w).amax(dim=1)                # k - (first argmin)
    return top.neg_().add_(k).long()


def take_rows(X: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``X[b, idx[b, j]]`` for ``X (B, n, d)`` contiguous and ``idx (B, m)``: ``(B, m, d)`` (e.g.
    the quantized patches ``p_hat`` of eq. (1) from the codebook and the labels).

    One ``index_select`` on the flattened batch (much faster on CPU than advanced indexing).
    """
    B, n, d = X.shape
    off = torch.arange(B, device=X.device)[:, None] * n
    return X.reshape(B * n, d).index_select(0, (idx + off).reshape(-1)).view(B, idx.shape[1], d)


def _check_X(X, name="X"):
    """``X``: a finite float tensor ``(B, n, d)`` (e.g. the noisy patches clustered before eq. (1))."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, n, d), got {type(X).__name__}")
    if X.dim() != 3:
        raise ValueError(f"{name} must be 3-D (B, n, d): a batch of B problems of n points in R^d; "
                         f"got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {X.dtype}")
    if X.shape[0] < 1 or X.shape[1] < 1 or X.shape[2] < 1:
        raise ValueError(f"{name} must have B >= 1, n >= 1, d >= 1; got shape {tuple(X.shape)}")
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")


_check_int = check_int


# --------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------

def _kmeanspp(X, x_sq, k, generator, trials):
    """Greedy k-means++ (scikit-learn's) seeding of the codebooks of eq. (1) / eqs. (2)-(4);
    returns centre indices ``(B, k)`` (long) and each point's nearest centre among them ``(B, n)``
    (the first on exact ties: the labels of a first E-step, which :func:`_lloyd` then skips). See
    :func:`kmeans_plusplus`."""
    B, n, d = X.shape
    dev = X.device
    T = int(trials)
    Xt = X.transpose(1, 2)                                           # (B, d, n) view
    ar = torch.arange(B, device=dev)
    idx = torch.empty((B, k), dtype=torch.long, device=dev)
    labels = torch.zeros((B, n), dtype=torch.long, device=dev)
    first = torch.randint(n, (B,), generator=generator, device=dev)
    idx[:, 0] = first
    c0 = X[ar, first]                                                # (B, d)
    closest = torch.baddbmm(x_sq[:, None, :], c0[:, None, :], Xt, alpha=-2.0).squeeze(1)
    closest.add_(x_sq[ar, first][:, None]).clamp_(min=0)             # (B, n) squared distances
    pot = closest.sum(1)
    if k == 1:
        return idx, labels
    # the uniforms of all k - 1 steps in one draw (same distribution as step-by-step draws)
    uni = torch.rand((B, k - 1, T), generator=generator, device=dev, dtype=X.dtype)
    rowsT = ar * T                                                   # row of problem b in (B*T, n)
    for c in range(1, k):
        cum = torch.cumsum(closest, dim=1)
        r = uni[:, c - 1] * pot[:, None]                              # (B, T)
        cand = torch.searchsorted(cum, r).clamp_(max=n - 1)          # (B, T): D^2 sampling
        # squared distances of the T candidates to all points: ||x||^2 + ||c||^2 - 2 c.x
        dist = torch.add(x_sq[:, None, :], x_sq.gather(1, cand)[:, :, None])     # (B, T, n)
        dist.baddbmm_(take_rows(X, cand), Xt, alpha=-2.0)
        torch.minimum(dist, closest[:, None, :], out=dist)
        cpot = dist.sum(2)                                           # potential per candidate
        best = cpot.argmin(1)                                        # (B,)
        new = dist.view(B * T, n).index_select(0, rowsT + best).clamp_(min=0)
        labels.masked_fill_(new < closest, c)                        # strictly nearer: the new centre
        closest = new
        pot = cpot.gather(1, best[:, None]).squeeze(1)
        idx[:, c] = cand.gather(1, best[:, None]).squeeze(1)
    return idx, labels


@cpu_single_intra_op
def kmeans_plusplus(X: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
                    n_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (scikit-learn's ``_kmeans_plusplus``), batched over problems.

    The first centre is a uniformly drawn point; each further centre is the best of
    ``2 + int(ln k)`` candidates drawn with probability proportional to the squared distance to
    the nearest centre so far (D^2 sampling), "best" meaning the lowest resulting potential
    ``sum_i min_j ||x_i - c_j||^2``. Seeds the clustering of the noisy patches of eq. (1) and
    eqs. (2)-(4). Returns the centre indices, shape ``(B, k)``.
    """
    _check_X(X)
    B, n, d = X.shape
    k = _check_int(k, "k", 1, n)
    T = n_local_trials(k) if n_trials is None else _check_int(n_trials, "n_trials", 1)
    with torch.no_grad():
        X = X.detach().contiguous()
        return _kmeanspp(X, _sq_norms(X), k, generator, T)[0]


# --------------------------------------------------------------------------------------------
# Lloyd
# --------------------------------------------------------------------------------------------

def _estep(Xa, C, koff, w):
    """E-step for centres ``C (B, k, d)``: the nearest-centre rule of eq. (1) without noise.

    ``Xa = [X, 1]`` are the points with a column of ones ``(B, n, d+1)``, so that one batched matrix
    product ``[-2C, ||c||^2] @ Xa^T`` gives ``||c||^2 - 2 x.c`` (the squared distance up to the
    constant ``||x||^2``) without a separate pass for ``||c||^2``; ``w`` holds the weights
    ``k, ..., 1`` ``(1, k, 1)``. Returns ``flat (B, n)`` -- ``b*k + label`` (the label offset into the
    flattened batch) -- for ``koff`` = ``b*k + k`` per problem ``(B, 1)``. Labels are the *first*
    nearest centre among exact ties, as in scikit-learn (see :func:`first_argmin`).
    """
    c_sq = torch.linalg.vecdot(C, C)
    D = torch.bmm(torch.cat([C * -2.0, c_sq[:, :, None]], 2), Xa.transpose(1, 2))   # (B, k, n)
    vals = torch.amin(D, dim=1)
    top = D.le_(vals.unsqueeze(1)).mul_(w).amax(dim=1)              # k - (first argmin)
    return koff - top.long()


def _sums(Xa, flat, k):
    """Cluster sums of the augmented points ``Xa = [X, 1]`` for the labels ``flat`` (``b*k +
    label``): ``(B, k, d+1)``, the sums of the points in ``[..., :d]`` and the cluster sizes in
    ``[..., d]`` (the M-step of eq. (1)'s codebook)."""
    B, n, d1 = Xa.shape
    if Xa.device.type == "cpu":
        return Xa.new_zeros((B * k, d1)).index_add_(0, flat.view(-1), Xa.view(B * n, d1)).view(B, k, d1)
    # on GPUs index_add_ accumulates floats with atomics (run-to-run bit differences);
    # a one-hot matrix product is deterministic
    base = torch.arange(B, device=Xa.device)[:, None] * k
    onehot = Xa.new_zeros((B, k, n)).scatter_(1, (flat - base)[:, None, :], 1.0)
    return torch.bmm(onehot, Xa)


def _centres(S, Xa, C, flat):
    """M-step: new centres ``(B, k, d)`` from the cluster sums and sizes ``S (B, k, d+1)``
    (:func:`_sums`) of the labels ``flat``, with scikit-learn's empty-cluster relocation -- the
    codebook of eq. (1) as Lloyd refines it. ``S`` is not changed."""
    B, k, d1 = S.shape
    d = d1 - 1
    N = S[:, :, d]
    if bool((N == 0).any()):
        sums, counts = S[:, :, :d].clone(), N.clone()
        labels = flat - torch.arange(B, device=S.device)[:, None] * k
        _relocate_empty(sums, counts, counts == 0, Xa[:, :, :d], C, labels)
        return sums.div_(counts.clamp_(min=1)[:, :, None])
    return S[:, :, :d] / N[:, :, None]


def _relocate_empty(sums, counts, empty, X, C, labels):
    """scikit-learn's ``_relocate_empty_clusters_dense``, vectorised over the problems (keeps all
    ``k`` entries of the eq. (1) codebook in use).

    For a problem with ``m`` empty clusters, its ``m`` points farthest from their centre in ``C``
    (the centres the labels were computed for) become the new centres of the empty clusters (in
    order), and are removed from the sums of the clusters they were in. Labels are not changed (as
    in scikit-learn).
    """
    rows = empty.any(1).nonzero().squeeze(1)                         # problems with empties
    emp = empty[rows]                                                # (R, k)
    m = emp.sum(1)                                                   # (R,)
    M = int(m.max())
    lab = labels[rows]
    dist = (X[rows] - take_rows(C[rows].contiguous(), lab)).square_().sum(2)   # (R, n), as scikit-learn
    far = torch.topk(dist, M, dim=1).indices                         # (R, M), farthest first
    # empty cluster ids in increasing order: a stable sort of ~emp puts the empties first
    emp_ids = torch.sort((~emp).to(torch.int8), dim=1, stable=True).indices[:, :M]   # (R, M)
    valid = torch.arange(M, device=rows.device)[None, :] < m[:, None]
    r_idx = rows[:, None].expand_as(far)[valid]
    far_v = far[valid]
    new_v = emp_ids[valid]
    old_v = labels[r_idx, far_v]
    pts = X[r_idx, far_v]                                            # (V, d)
    ones = counts.new_ones(pts.shape[0])
    sums.index_put_((r_idx, old_v), -pts, accumulate=True)
    counts.index_put_((r_idx, old_v), -ones, accumulate=True)
    sums[r_idx, new_v] = pts                                         # centre = that point
    counts[r_idx, new_v] = 1.0


#: On CPU the cluster sums are updated by the points that changed cluster once no more than this
#: share of the batch's points changed (summed afresh otherwise, and always on GPU, where a one-hot
#: matrix product is deterministic).
RUNNING_SUMS_SHARE = 0.25


def _lloyd(X, centers, tol_b, max_iter, final_estep=True, Xa=None, labels=None):
    """Batched Lloyd iterations with scikit-learn's stopping rule (the codebooks of eq. (1) /
    eqs. (2)-(4)); see :func:`kmeans`.

    Per problem, as ``sklearn.cluster._kmeans._kmeans_single_lloyd``: iteration ``i`` assigns the
    points to the current centres (E-step) and recomputes the centres (M-step); it stops when the
    labels equal the previous iteration's ("strict convergence"), or when the squared centre
    shift summed over all centres is ``<= tol_b`` -- then one more E-step makes the labels match
    the final centres (skipped with ``final_estep=False``: the centres are the same, only the
    returned labels are those of the last E-step) -- or after ``max_iter`` iterations.
    Finished problems are recorded and, once a quarter of the batch is finished, dropped from it.

    On CPU the M-step keeps the cluster sums and sizes from one iteration to the next and updates
    them with the points that changed cluster (added to the new one, subtracted from the old one):
    after the first few iterations only a few percent of the points move, and summing all points
    again -- a scattered add per coordinate -- cost more than the E-step's matrix product. The
    running sums equal fresh sums up to float rounding.

    ``Xa = [X, 1]`` may be passed if the caller built it; ``labels`` ``(B, n)``, the nearest of
    ``centers`` for every point (as k-means++ seeding finds them, :func:`_kmeanspp`), replace the
    first E-step.
    """
    B, n, d = X.shape
    k = centers.shape[1]
    dev = X.device
    running = dev.type == "cpu"
    out_c = centers.new_empty((B, k, d))
    out_l = torch.empty((B, n), dtype=torch.long, device=dev)
    out_it = torch.zeros(B, dtype=torch.long, device=dev)

    if Xa is None:                                   # (B, n, d+1): distances and sizes in one product
        Xa = torch.cat([X, X.new_ones((B, n, 1))], 2)
    w = torch.arange(k, 0, -1, dtype=X.dtype, device=dev).view(1, k, 1)
    slot = torch.arange(B, device=dev)               # batch slot -> problem index
    koff = slot[:, None] * k + k
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    finishing = None                                 # slots whose final E-step is due
    C = centers
    flat_old = S = None
    tol_c = tol_b

    def record(where, cents, flat, n_it):
        p = slot[where]
        out_c[p] = cents[where]
        out_l[p] = flat[where] - (koff[where] - k)
        out_it[p] = n_it

    it = 0
    while True:
        if labels is not None:                       # the seeding's labels: the first E-step's
            flat, labels = labels + (koff - k), None
        else:
            flat = _estep(Xa, C, koff, w)
        if finishing is not None:
            # tolerance-converged (or max_iter) last iteration: this E-step with the final centres
            # gives the final labels (scikit-learn reruns it too)
            record(finishing, C, flat, it)
            alive[finishing] = False
            finishing = None
            if not bool(alive.any()):
                break
        if flat_old is None:
            strict = torch.zeros_like(alive)
            S = _sums(Xa, flat, k)
        else:
            ch = flat != flat_old
            strict = ~ch.any(1) & alive
            pi = ch.view(-1).nonzero().squeeze(1)
            if not running or pi.numel() > RUNNING_SUMS_SHARE * ch.numel():
                S = _sums(Xa, flat, k)
            elif pi.numel():                         # the moved points leave one sum, join another
                rows = Xa.view(-1, d + 1).index_select(0, pi)
                Sf = S.view(-1, d + 1)
                Sf.index_add_(0, flat.view(-1).index_select(0, pi), rows)
                Sf.index_add_(0, flat_old.view(-1).index_select(0, pi), rows, alpha=-1)
        new = _centres(S, Xa, C, flat)
        it += 1
        shift = torch.sub(new, C).square_().sum((1, 2))
        conv_tol = shift <= tol_c
        done = alive & (strict | conv_tol) if it < max_iter else alive.clone()
        if bool(done.any()):
            s_idx = strict.nonzero().squeeze(1)
            if s_idx.numel():
                record(s_idx, new, flat, it)
                alive[s_idx] = False
            fin = (done & ~strict).nonzero().squeeze(1)
            if fin.numel():
                if final_estep:
                    finishing = fin
                else:
                    record(fin, new, flat, it)
                    alive[fin] = False
            n_live = int(alive.sum())
            if n_live == 0:
                break
            # drop finished problems from the batch once a quarter of its slots are finished
            if 4 * n_live <= 3 * alive.numel():
                keep = alive.nonzero().squeeze(1)
                K = keep.numel()
                if finishing is not None:
                    finishing = torch.searchsorted(keep, finishing)
                # flat = b*k + label for slot b: re-base on the new slot numbers
                rebase = ((torch.arange(K, device=dev) - keep) * k)[:, None]
                Xa, S, new = Xa.index_select(0, keep), S.index_select(0, keep), new.index_select(0, keep)
                slot, tol_c, flat = slot[keep], tol_c[keep], flat[keep] + rebase
                koff = torch.arange(K, device=dev)[:, None] * k + k
                alive = torch.ones(K, dtype=torch.bool, device=dev)
        C = new
        flat_old = flat
    return out_c, out_l, out_it


def kmeans_batch(X, k, *, init="k-means++", generator=None, max_iter=100, tol=1e-4, final_estep=True):
    """k-means of contiguous ``X (B, n, d)`` on the calling thread, in one piece (the codebooks of
    eq. (1) / eqs. (2)-(4)); returns ``(centers, labels, n_iter)``.

    The building block for callers that already run inside a chunk of
    :func:`vqdbook.parallel.map_chunks` (the quantizers, the KL sampler). No argument checking:
    :func:`kmeans` is the checked, chunked entry point. ``final_estep=False`` skips the E-step
    that follows convergence by tolerance: the centres are the same, but the labels are then those
    of the last E-step (for callers that use only the centres, as the quantizers do).
    """
    B, n, d = X.shape
    dev = X.device
    x_sq = _sq_norms(X)
    Xa = torch.cat([X, X.new_ones((B, n, 1))], 2)
    labels = None
    if isinstance(init, torch.Tensor):
        centers = init.detach().to(dtype=X.dtype, device=dev).clone()
    elif init == "k-means++":
        idx, labels = _kmeanspp(X, x_sq, k, generator, n_local_trials(k))
        centers = take_rows(X, idx)
    else:  # "random": k distinct points, uniformly (scikit-learn's init="random")
        r = torch.rand((B, n), generator=generator, device=dev)
        centers = take_rows(X, torch.argsort(r, dim=1)[:, :k])
    return _lloyd(X, centers, _tolerance(X, x_sq, tol), max_iter, final_estep, Xa=Xa, labels=labels)


def _inertia(X, centers, labels):
    """Sum of squared distances of every point to the centre of its label, per problem (k-means'
    objective for the codebook of eq. (1); ``KMeans.inertia_``)."""
    diff = X - take_rows(centers.contiguous(), labels)
    return (diff * diff).sum((1, 2))


@cpu_single_intra_op
def kmeans(X: torch.Tensor, k: int, *, max_iter: int = 100, tol: float = 1e-4,
           init: str | torch.Tensor = "k-means++", generator: torch.Generator | None = None,
           return_n_iter: bool = False, chunk_size: int | None = None, threads: int | None = None):
    """Cluster each of ``B`` independent point sets ``X[b]`` (n points in R^d) into ``k`` clusters.

    This is the clustering step of the quantizers: pRD clusters the noisy patches before
    eq. (1), swRD the noisy sliding-window patches before eqs. (2)-(4), and RandDisc (the s = 1
    case of eq. (1)) the noisy pixels. It reproduces ``sklearn.cluster.KMeans(k,
    init="k-means++", n_init=1, tol=tol, max_iter=max_iter, algorithm="lloyd")`` on each problem
    (up to the random numbers drawn), but all problems are solved at once.

    Parameters
    ----------
    X : tensor (B, n, d), floating point, finite
        ``B`` independent problems. Any device; all work happens there.
    k : int in [1, n]
        Number of clusters.
    max_iter : int >= 1
        Maximum number of Lloyd iterations per problem.
    tol : float >= 0
        Relative tolerance: a problem stops when the squared centre shift, summed over centres,
        is ``<= tol * mean_j Var(X[b, :, j])`` (scikit-learn's ``_tolerance``), or when its labels
        did not change (strict convergence). Converged problems leave the batch.
    init : "k-means++" | "random" | tensor (B, k, d)
        Greedy k-means++ (scikit-learn's, ``2 + int(ln k)`` local trials), ``k`` distinct points
        drawn uniformly, or explicit initial centres.
    generator : torch.Generator, optional
        Source of randomness (on ``X``'s device); torch's global RNG when ``None``.
    return_n_iter : bool
        Also return the number of Lloyd iterations each problem ran (as ``KMeans.n_iter_``).
    chunk_size : int, optional
        Problems per chunk (default :func:`default_chunk_size`, which depends on ``n`` and ``d``
        only). Each chunk draws its random numbers from its own generator, seeded from
        ``generator``; so for a given seed the result depends on the chunk size, but not on
        ``threads`` or the machine.
    threads : int, optional
        CPU worker threads, each running whole chunks; default: ``torch.get_num_threads()``, at
        most one per chunk (:func:`vqdbook.parallel.worker_threads`). torch's intra-op
        parallelism is 1 during the call.

    Returns
    -------
    centers : tensor (B, k, d)
    labels : long tensor (B, n) -- index of the nearest centre (after a final E-step)
    inertia : tensor (B,) -- ``sum_i ||X[b, i] - centers[b, labels[b, i]]||^2``
    n_iter : long tensor (B,) -- only with ``return_n_iter=True``
    """
    _check_X(X)
    B, n, d = X.shape
    k = _check_int(k, "k", 1, n)
    max_iter = _check_int(max_iter, "max_iter", 1)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number >= 0, got {tol!r}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (B, k, d):
            raise ValueError(f"init tensor must have shape (B, k, d) = {(B, k, d)}, "
                             f"got {tuple(init.shape)}")
    elif init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++', 'random' or a (B, k, d) tensor, got {init!r}")
    if threads is not None:
        threads = _check_int(threads, "threads", 1)
    cs = default_chunk_size(n, d, X.device) if chunk_size is None else _check_int(chunk_size, "chunk_size", 1)
    X = X.detach().contiguous()
    init_t = init.detach() if isinstance(init, torch.Tensor) else None

    def run(a, b, g):
        Xc = X[a:b]
        c, lab, it = kmeans_batch(Xc, k, init=init if init_t is None else init_t[a:b], generator=g,
                                  max_iter=max_iter, tol=float(tol))
        return c, lab, _inertia(Xc, c, lab), it

    parts = map_chunks(run, B, cs, generator, X.device, threads)
    centers, labels, inertia, n_iter = (torch.cat([p[i] for p in parts]) for i in range(4))
    if return_n_iter:
        return centers, labels, inertia, n_iter
    return centers, labels, inertia
