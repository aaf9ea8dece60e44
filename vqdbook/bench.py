"""Throughput benchmark of the quantizers: the batched torch implementation against a per-image
scikit-learn pipeline, on the same real images.

:func:`run_bench_quantizers` returns a JSON-serialisable record (``dict``); the CLI
(``vqdbook bench quantizers``) and the JSON record writer are meant to wrap it. Nothing here is a
test: timings depend on the machine and on whatever else runs on it, so the record stores the
machine's description, the load average before and after, and best-of-``repeats`` timings
(the least-disturbed run) for both sides.

Configurations: :data:`CONFIGS`, each the paper's quantizer for its dataset
(:meth:`vqdbook.quantizers.QuantizerSpec.paper`: Section 4.1's sigma, tau, beta on the [0, 1] scale).

The baseline does per image what the papers' code does: NumPy patches, NumPy noise,
``sklearn.cluster.KMeans(k, init="k-means++", n_init=1, tol=1e-4)`` on the noisy patches, a NumPy
assignment (eq. (1), distances as ``||c||^2 - 2 y.c``) and, for swRD, NumPy weights and
overlap-add (eqs. (2)-(4)). scikit-learn's k-means is multi-threaded (OpenMP); because OpenMP
threads behave badly on a busy machine, the baseline is timed both with scikit-learn's default
thread count and limited to one thread, and the faster of the two is the baseline
(``baseline_img_s``), which makes the ratio conservative.

Also recorded, for context: ``randn_bound_img_s``, the throughput of drawing only the Gaussian
noise the transform needs (clustering plus assignment noise, ``2 n d`` numbers per image) with
``torch.randn`` -- an upper bound for any implementation that draws that noise with torch;
``profile``, where one thread spends the transform's time (:func:`profile_quantizer`: patches,
noise, greedy k-means++ seeding, Lloyd iterations, assignment, blending); ``inertia``, our mean
k-means inertia against scikit-learn's on the same noisy patches (:func:`mean_inertia`); and, for
swRD CIFAR-10 ``s=4, k=25``, a second baseline: the transform with the batched k-means of the
``torch_kmeans`` library (:func:`bench_torch_kmeans`; an optional dependency, pinned in
``requirements-test.txt`` -- the record says ``"not installed"`` without it).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .parallel import default_chunk_size
from .quantizers import QuantizerSpec, n_patches

__all__ = ["CONFIGS", "TARGETS", "BENCHMARKS", "run_bench_quantizers", "run_bench_table1", "bench_center_sampling",
           "run_bench_eot", "EOT_TARGET_RATIO", "run_bench_tquant", "TQUANT_TARGET_RATIO", "run_bench_certify",
           "record_benchmark", "baseline_quantize", "format_table", "quantizer_config",
           "profile_quantizer", "mean_inertia", "bench_torch_kmeans", "PROFILE_STAGES", "TORCH_KMEANS_CONFIGS",
           "profile_frame", "baselines_frame", "runs_frame", "runs_summary"]

#: name -> (dataset, method, s, k); sigma, tau and beta are the paper's for the dataset.
CONFIGS: dict[str, tuple] = {
    "swrd_cifar_s4_k25": ("cifar10", "swrd", 4, 25),
    "swrd_cifar_s2_k10": ("cifar10", "swrd", 2, 10),
    "swrd_mnist_s2_k2": ("mnist", "swrd", 2, 2),
    "prd_cifar_s4_k25": ("cifar10", "prd", 4, 25),
    "randdisc_cifar_k10": ("cifar10", "randdisc", 1, 10),
}


def quantizer_config(name: str) -> tuple[str, QuantizerSpec]:
    """The dataset and quantizer of a :data:`CONFIGS` entry."""
    dataset, method, s, k = CONFIGS[name]
    return dataset, QuantizerSpec.paper(dataset, method, s, k)

#: The package's speed targets on 2 CPU cores: minimum ratio to the baseline, minimum absolute img/s.
TARGETS: dict[str, dict] = {
    "swrd_cifar_s4_k25": {"min_ratio": 4.0, "min_img_s": 775.0},
    "swrd_mnist_s2_k2": {"min_ratio": 10.0},
    "prd_cifar_s4_k25": {"min_ratio": 20.0},
}
#: Table 1 quick mode (``vqdbook bench table1``): the target wall time on 2 CPU cores.
TABLE1_TARGET_S = 300.0


# --------------------------------------------------------------------------------------------
# the per-image baseline (NumPy + scikit-learn)
# --------------------------------------------------------------------------------------------

def _np_patches(img, s, method):
    """NumPy patches of one image (windows of eqs. (2)-(4) or padded patches of eq. (1))."""
    C, H, W = img.shape
    if method == "swrd":
        v = np.lib.stride_tricks.sliding_window_view(img, (s, s), axis=(1, 2))  # (C, Hs, Ws, s, s)
        return np.ascontiguousarray(v.transpose(1, 2, 0, 3, 4)).reshape(-1, C * s * s)
    Hp, Wp = -(-H // s) * s, -(-W // s) * s
    xp = np.zeros((C, Hp, Wp), dtype=img.dtype)
    xp[:, :H, :W] = img
    v = xp.reshape(C, Hp // s, s, Wp // s, s).transpose(1, 3, 0, 2, 4)
    return np.ascontiguousarray(v).reshape(-1, C * s * s)


def baseline_quantize(img: np.ndarray, method: str, s: int, k: int, sigma: float, tau: float,
                      beta: float | None, rng: np.random.Generator) -> np.ndarray:
    """One image ``(C, H, W)`` through the per-image NumPy + scikit-learn pipeline (eqs. (1)-(4))."""
    from sklearn.cluster import KMeans

    C, H, W = img.shape
    P = _np_patches(img, s, method)
    noisy = (P + sigma * rng.standard_normal(P.shape, dtype=np.float32)).astype(np.float32)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, tol=1e-4,
                random_state=int(rng.integers(2 ** 31 - 1))).fit(noisy)
    cen = km.cluster_centers_.astype(np.float32)
    Y = P + tau * rng.standard_normal(P.shape, dtype=np.float32)
    labels = np.argmin((cen * cen).sum(1)[None, :] - 2.0 * (Y @ cen.T), axis=1)   # eq. (1)
    Phat = cen[labels]
    if method != "swrd":
        Hp, Wp = -(-H // s) * s, -(-W // s) * s
        out = Phat.reshape(Hp // s, Wp // s, C, s, s).transpose(2, 0, 3, 1, 4).reshape(C, Hp, Wp)
        return np.clip(out[:, :H, :W], 0, 1)
    Hs, Ws = H - s + 1, W - s + 1
    score = (-beta * ((P - Phat) ** 2).sum(1)).reshape(Hs, Ws)                  # eq. (2)
    pad = np.pad(score, s - 1, constant_values=-np.inf)
    m = np.lib.stride_tricks.sliding_window_view(pad, (s, s)).max(axis=(2, 3))  # (H, W)
    Pq = Phat.reshape(Hs, Ws, C, s, s)
    num = np.zeros((C, H, W), dtype=np.float32)
    den = np.zeros((H, W), dtype=np.float32)
    for u in range(s):
        for v in range(s):
            e = np.exp(np.maximum(score - m[u:u + Hs, v:v + Ws], -80.0))        # eq. (3)
            num[:, u:u + Hs, v:v + Ws] += Pq[:, :, :, u, v].transpose(2, 0, 1) * e
            den[u:u + Hs, v:v + Ws] += e
    return np.clip(num / den, 0, 1)                                            # eq. (4)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------

def _time(fn, repeats):
    """Best wall time of ``repeats`` runs of ``fn`` (a batch through eq. (1) / eqs. (2)-(4))."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _load(name, n):
    """The first ``n`` stratified test images of ``name`` (the input of eqs. (1)-(4))."""
    from .data import load_dataset

    x, _ = load_dataset(name, "test", n=n)
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _machine():
    """What ran the benchmark: versions and hardware (as every record has, see vqdbook.provenance)."""
    from .provenance import hardware, versions

    return {**versions(), **hardware()}


# --------------------------------------------------------------------------------------------
# where the time goes, and a kept library as a second baseline
# --------------------------------------------------------------------------------------------

#: The stages :func:`profile_quantizer` times, in the order the transform runs them.
PROFILE_STAGES = ("patches", "noise (clustering)", "k-means++ seeding", "Lloyd iterations",
                  "noise (assignment)", "assignment", "blending / output")

#: The configurations that also get the torch_kmeans baseline (:func:`bench_torch_kmeans`).
TORCH_KMEANS_CONFIGS = ("swrd_cifar_s4_k25",)


def profile_quantizer(q: QuantizerSpec, x: torch.Tensor, seed: int = 0) -> dict:
    """Where one thread spends the transform's time, stage by stage (:data:`PROFILE_STAGES`).

    Runs the transform of ``x`` the way the quantizer does -- the same chunks, each with its own
    generator, torch's intra-op threads at 1 -- but through the package's public building blocks
    with a clock around each stage: the patches (:func:`vqdbook.quantizers.patch_matrix`), the
    clustering noise, the greedy k-means++ seeding (:func:`vqdbook.kmeans.kmeans_plusplus`), the
    Lloyd iterations (:func:`vqdbook.kmeans.kmeans_batch`), the assignment noise, the assignment
    of eq. (1) (:func:`vqdbook.quantizers.assign`) and, for swRD, the blend of eqs. (2)-(4)
    (:func:`vqdbook.quantizers.swrd_blend`; for pRD and RandDisc, putting the quantized patches
    back into images). Returns ``{"seconds": {stage: s}, "shares": {stage: share of the total},
    "total_s", "img_s", "n_images"}``.
    """
    from .kmeans import kmeans_batch, kmeans_plusplus, take_rows
    from .parallel import single_intra_op
    from .quantizers import KMEANS_TOL, assign, patch_matrix, swrd_blend

    B, C, H, W = x.shape
    s, k = q.s, q.k
    n, d = n_patches(H, W, s, q.mode), C * s * s
    cs = default_chunk_size(n, d, "cpu")
    seconds = dict.fromkeys(PROFILE_STAGES, 0.0)
    g = torch.Generator().manual_seed(seed)
    clock = [time.perf_counter()]

    def lap(stage):
        now = time.perf_counter()
        seconds[stage] += now - clock[0]
        clock[0] = now

    with single_intra_op(), torch.inference_mode():
        for a in range(0, B, cs):
            xc = x[a:a + cs]
            b = xc.shape[0]
            clock[0] = time.perf_counter()
            P = patch_matrix(xc, s, q.mode)
            lap("patches")
            X = torch.randn(P.shape, generator=g).mul_(q.sigma).add_(P)
            lap("noise (clustering)")
            if q.init == "k-means++":
                init = take_rows(X, kmeans_plusplus(X, k, generator=g))
            else:
                init = take_rows(X, torch.argsort(torch.rand((b, n), generator=g), dim=1)[:, :k])
            lap("k-means++ seeding")
            cen, _, _ = kmeans_batch(X, k, init=init, max_iter=q.max_iter, tol=KMEANS_TOL, final_estep=False)
            lap("Lloyd iterations")
            Y = torch.randn(P.shape, generator=g).mul_(q.tau).add_(P)
            lap("noise (assignment)")
            labels = assign(Y, cen, 0.0)
            lap("assignment")
            if q.method == "swrd":
                swrd_blend(P, labels, cen, (H, W), s, q.beta).clamp_(0.0, 1.0)
            else:
                Hp, Wp = -(-H // s) * s, -(-W // s) * s
                out = take_rows(cen, labels).view(b, Hp // s, Wp // s, C, s, s)
                out.permute(0, 3, 1, 4, 2, 5).reshape(b, C, Hp, Wp)[:, :, :H, :W].clamp(0.0, 1.0)
            lap("blending / output")
    total = sum(seconds.values())
    return {"n_images": B, "seconds": {st: round(v, 4) for st, v in seconds.items()},
            "shares": {st: round(v / total, 4) for st, v in seconds.items()},
            "total_s": round(total, 4), "img_s": B / total}


def _noisy_patches(x, q, seed):
    """The patches of ``x`` plus clustering noise (one draw, from ``seed``): what k-means clusters."""
    from .quantizers import patch_matrix

    P = patch_matrix(x, q.s, q.mode)
    return P, torch.randn(P.shape, generator=torch.Generator().manual_seed(seed)).mul_(q.sigma).add_(P)


def mean_inertia(q: QuantizerSpec, x: torch.Tensor, seed: int = 0, *, sklearn_images: int | None = None) -> dict:
    """Mean k-means inertia on the noisy patches of ``x`` (one noise draw): ours
    (:func:`vqdbook.kmeans.kmeans`) and scikit-learn's ``KMeans(k-means++, n_init=1, tol=1e-4)``,
    each image with its own seed; ``ours_rel_sklearn`` = ours / scikit-learn's - 1."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from .kmeans import kmeans
    from .quantizers import KMEANS_TOL

    _, X = _noisy_patches(x, q, seed)
    m = len(X) if sklearn_images is None else min(len(X), sklearn_images)
    ours = kmeans(X, q.k, max_iter=q.max_iter, tol=KMEANS_TOL, init=q.init,
                  generator=torch.Generator().manual_seed(seed))[2].double()
    with threadpool_limits(limits=1):
        sk = np.array([KMeans(q.k, init=q.init, n_init=1, tol=KMEANS_TOL, max_iter=q.max_iter,
                              random_state=seed + b).fit(X[b].numpy()).inertia_ for b in range(m)])
    return {"n_images": m, "sklearn_mean": float(sk.mean()), "ours_mean": float(ours[:m].mean()),
            "ours_rel_sklearn": float(ours[:m].mean() / sk.mean() - 1)}


def bench_torch_kmeans(q: QuantizerSpec, x: torch.Tensor, seed: int = 0, repeats: int = 1) -> dict | str:
    """The transform with ``torch_kmeans.KMeans`` (PyPI ``torch-kmeans``, batched k-means over
    ``(B, N, D)`` in PyTorch) in place of our k-means; ``"not installed"`` without the package.

    Everything but the clustering is ours (patches, noise, eq. (1), eqs. (2)-(4)); the clustering
    is ``KMeans(init_method="k-means++", num_init=1, max_iter, tol=1e-4, seed=seed)`` on the whole
    batch -- its k-means++ (D^2 sampling, one candidate per step: not scikit-learn's greedy
    variant) and its Lloyd loop (pairwise distances of every point to every centre as an
    expanded ``(B, N, K, D)`` difference, stopping when the mean centre shift of *every* problem
    is below ``tol``). Also timed: its Lloyd loop started from our greedy k-means++ seeds, which
    matches scikit-learn's inertia. Timed best of ``repeats`` with torch's threads and with one
    thread (the faster counts); mean inertia relative to scikit-learn's on the same noisy patches.
    """
    import warnings
    from importlib.metadata import version

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # its import warns about torch.jit.script
            import torch_kmeans
    except ImportError:
        return "not installed"

    from .kmeans import kmeans_plusplus, take_rows
    from .quantizers import KMEANS_TOL, assign, swrd_blend

    B, C, H, W = x.shape
    res = {}

    def transform(greedy):
        P, X = _noisy_patches(x, q, seed)
        km = torch_kmeans.KMeans(init_method="k-means++", num_init=1, max_iter=q.max_iter, tol=KMEANS_TOL,
                                 seed=seed, verbose=False, n_clusters=q.k)
        init = take_rows(X, kmeans_plusplus(X, q.k, generator=torch.Generator().manual_seed(seed))) \
            if greedy else None
        r = km(X, k=q.k, centers=init)
        labels = assign(P, r.centers, q.tau, torch.Generator().manual_seed(seed + 1))
        if q.method == "swrd":
            swrd_blend(P, labels, r.centers, (H, W), q.s, q.beta).clamp_(0.0, 1.0)
        res["inertia"] = r.inertia.double()

    prev = torch.get_num_threads()
    out = {"version": version("torch-kmeans"), "n_images": B}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for name, greedy in (("own_kmeans++", False), ("greedy_seeds", True)):
            t_default = _time(lambda: transform(greedy), repeats)
            torch.set_num_threads(1)
            try:
                t_single = _time(lambda: transform(greedy), repeats)
            finally:
                torch.set_num_threads(prev)
            out[name] = {"img_s": B / min(t_default, t_single), "img_s_default_threads": B / t_default,
                         "img_s_single_thread": B / t_single, "inertia_mean": float(res["inertia"].mean())}
    inert = mean_inertia(q, x, seed)
    for name in ("own_kmeans++", "greedy_seeds"):
        out[name]["inertia_rel_sklearn"] = out[name]["inertia_mean"] / inert["sklearn_mean"] - 1
    out["ours_inertia_rel_sklearn"] = inert["ours_rel_sklearn"]
    out["sklearn_inertia_mean"] = inert["sklearn_mean"]
    return out


def run_bench_quantizers(n_images: int = 256, seed: int = 0, *, n_baseline: int | None = 64,
                         repeats: int = 5, configs: list[str] | None = None,
                         threads: int | None = None, n_torch_kmeans: int = 16) -> dict:
    """Time every configuration of :data:`CONFIGS`: ours (batched) vs the per-image baseline.

    Parameters
    ----------
    n_images : images per configuration for our implementation (the first ``n_images`` of the
        stratified test subset of the dataset).
    seed : seeds our generator and the baseline's NumPy generator.
    n_baseline : images for the (slow) baseline, the first ``n_baseline`` of the same images
        (``None``: all ``n_images``).
    repeats : each measurement is repeated and the fastest run kept (the run least disturbed by
        whatever else shares the cores; on a 2-core machine that changes speed from second to second).
    configs : subset of :data:`CONFIGS` names (default: all).
    threads : worker threads for ours (default: ``torch.get_num_threads()``, at most one per chunk;
        :func:`vqdbook.parallel.worker_threads`). ``ours_single_thread`` is always measured with
        one thread.
    n_torch_kmeans : images for the torch_kmeans baseline (:func:`bench_torch_kmeans`, only for
        :data:`TORCH_KMEANS_CONFIGS`; it is slow); 0 skips it.

    Returns a dict: ``{"benchmark": "quantizers", "params": {...}, "machine": {...},
    "load_avg_before": [...], "load_avg_after": [...], "configs": {name: {"ours_img_s",
    "ours_single_thread_img_s", "baseline_img_s", "baseline_default_threads_img_s",
    "baseline_single_thread_img_s", "ratio", "ratio_single_thread", "randn_bound_img_s", "target",
    "meets_target", "profile", "inertia", ...}}}``. ``ratio`` is ours (default threads) over the
    better baseline setting; ``ratio_single_thread`` compares both sides on one thread (the fair
    figure on a busy machine). ``profile`` is :func:`profile_quantizer` on the same images (one
    thread), ``inertia`` is :func:`mean_inertia` on the baseline's images, and the configurations of
    :data:`TORCH_KMEANS_CONFIGS` also get ``torch_kmeans`` (:func:`bench_torch_kmeans`, or
    ``"not installed"``) and ``ratio_torch_kmeans`` (ours over it).
    """
    from threadpoolctl import threadpool_limits

    names = list(CONFIGS) if configs is None else list(configs)
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise ValueError(f"configs must be names from {list(CONFIGS)}, got {unknown}")
    n_base = n_images if n_baseline is None else min(int(n_baseline), n_images)
    record = {
        "benchmark": "quantizers",
        "params": {"n_images": n_images, "n_baseline": n_base, "seed": seed, "repeats": repeats,
                   "threads": "torch" if threads is None else threads,
                   "torch_threads": torch.get_num_threads(), "n_torch_kmeans": n_torch_kmeans},
        "machine": _machine(),
        "load_avg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "configs": {},
    }
    data = {}
    prev_threads = torch.get_num_threads()
    for name in names:
        ds, q = quantizer_config(name)
        method, s, k, beta = q.method, q.s, q.k, q.beta
        if ds not in data:
            data[ds] = _load(ds, n_images)
        x = data[ds]
        B, C, H, W = x.shape
        n, d = n_patches(H, W, s, q.mode), C * s * s
        g = torch.Generator().manual_seed(seed)

        q(x[: min(B, 32)], g, threads=threads)                          # warm-up
        t_ours = _time(lambda: q(x, g, threads=threads), repeats)
        torch.set_num_threads(1)
        try:
            t_ours1 = _time(lambda: q(x, g, threads=1), repeats)
        finally:
            torch.set_num_threads(prev_threads)

        cs = default_chunk_size(n, d, "cpu")
        chunks = [min(cs, B - i) for i in range(0, B, cs)]
        t_randn = _time(lambda: [torch.randn((2, c, n, d), generator=g) for c in chunks], repeats)

        xb = x[:n_base].numpy()

        def base():
            rng = np.random.default_rng(seed)
            for img in xb:
                baseline_quantize(img, method, s, k, q.sigma, q.tau, beta, rng)

        base()                                                           # warm-up (imports)
        t_base = _time(base, repeats)
        with threadpool_limits(limits=1):
            t_base1 = _time(base, repeats)

        ours = B / t_ours
        b_default, b_single = n_base / t_base, n_base / t_base1
        baseline = max(b_default, b_single)
        entry = {
            "method": method, "dataset": ds, "s": s, "k": k, "sigma": q.sigma, "tau": q.tau, "beta": beta,
            "n_patches": n, "patch_dim": d, "chunk_size": cs,
            "ours_img_s": ours, "ours_single_thread_img_s": B / t_ours1,
            "baseline_img_s": baseline, "baseline_default_threads_img_s": b_default,
            "baseline_single_thread_img_s": b_single,
            "ratio": ours / baseline,
            "ratio_single_thread": (B / t_ours1) / b_single,
            "randn_bound_img_s": B / t_randn,
        }
        entry["profile"] = profile_quantizer(q, x, seed)
        entry["inertia"] = mean_inertia(q, x[:n_base], seed)
        if name in TORCH_KMEANS_CONFIGS and n_torch_kmeans:
            tk = bench_torch_kmeans(q, x[:min(B, n_torch_kmeans)], seed)
            entry["torch_kmeans"] = tk
            if isinstance(tk, dict):
                entry["ratio_torch_kmeans"] = ours / tk["own_kmeans++"]["img_s"]
        tgt = TARGETS.get(name)
        if tgt:
            entry["target"] = tgt
            entry["meets_target"] = bool(entry["ratio"] >= tgt.get("min_ratio", 0)
                                         and ours >= tgt.get("min_img_s", 0))
        record["configs"][name] = entry
    record["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return record


def profile_frame(result: dict, config: str = "swrd_cifar_s4_k25"):
    """The ``profile`` of one configuration of a :func:`run_bench_quantizers` result as a table:
    stage, seconds on one thread, share of the transform (%). Empty when the record has none."""
    import pandas as pd

    prof = result.get("configs", {}).get(config, {}).get("profile")
    if not prof:
        return pd.DataFrame(columns=["stage", "seconds (1 thread)", "share (%)"])
    return pd.DataFrame([{"stage": st, "seconds (1 thread)": prof["seconds"][st], "share (%)": 100 * prof["shares"][st]}
                         for st in PROFILE_STAGES if st in prof["seconds"]])


def baselines_frame(result: dict, config: str = "swrd_cifar_s4_k25"):
    """Ours against both baselines for one configuration of a :func:`run_bench_quantizers` result:
    implementation, images timed, img/s, how many times faster ours is, mean k-means inertia
    relative to scikit-learn's (%). torch_kmeans rows only when the record has them."""
    import pandas as pd

    cols = ["implementation", "images", "img/s", "ours is x faster", "inertia vs scikit-learn (%)"]
    e = result.get("configs", {}).get(config)
    if not e:
        return pd.DataFrame(columns=cols)
    ours, inert, params = e["ours_img_s"], e.get("inertia", {}), result["params"]
    rows = [["vqdbook: batched k-means (greedy k-means++)", params["n_images"], ours, 1.0,
             100 * inert["ours_rel_sklearn"] if inert else None],
            ["scikit-learn KMeans per image (greedy k-means++)", params["n_baseline"], e["baseline_img_s"],
             ours / e["baseline_img_s"], 0.0]]
    tk = e.get("torch_kmeans")
    if isinstance(tk, dict):
        for key, label in (("own_kmeans++", "its k-means++"), ("greedy_seeds", "our greedy k-means++ seeds")):
            rows.append([f"torch_kmeans {tk['version']} KMeans, {label}", tk["n_images"], tk[key]["img_s"],
                         ours / tk[key]["img_s"], 100 * tk[key]["inertia_rel_sklearn"]])
    return pd.DataFrame(rows, columns=cols)


def runs_frame(records, config: str = "swrd_cifar_s4_k25"):
    """One row per stored :func:`run_bench_quantizers` record (oldest first) for one configuration:
    when, the load average before the run, ours and the baseline in img/s, the ratio, whether the
    run met :data:`TARGETS`, and the noise-only ``torch.randn`` bound of the same run (how fast the
    machine was: it moves with the host, not with our code). A target is met when it holds run after
    run, which this frame shows."""
    import pandas as pd

    cols = ["created", "commit", "load before", "ours (img/s)", "baseline (img/s)", "ratio", "meets target",
            "noise bound (img/s)"]
    rows = []
    for rec in sorted(records, key=lambda r: r["created"]):
        e = rec["result"].get("configs", {}).get(config)
        if not e:
            continue
        load = rec["result"].get("load_avg_before")
        rows.append([rec["created"], str(rec.get("commit"))[:10], round(load[0], 2) if load else None,
                     e["ours_img_s"], e["baseline_img_s"], e["ratio"], e.get("meets_target"),
                     e.get("randn_bound_img_s")])
    return pd.DataFrame(rows, columns=cols)


def runs_summary(runs, config: str = "swrd_cifar_s4_k25", last: int = 3) -> dict:
    """What the newest ``last`` runs of :func:`runs_frame` say about :data:`TARGETS` of ``config``:
    ``n_runs``; over the newest runs the min and max of our rate (``img_s``), the ``ratio``, the
    baseline's rate (``base``) and the noise-only bound (``bound``), as ``{min,max}_{what}``;
    ``ratio_met`` and ``rate_met`` (how many of them met each target), ``all_met`` (all ``last`` of them
    met both); the largest baseline rate and noise bound over *all* runs (``all_max_base``,
    ``all_max_bound``: how fast the host has been); and ``need``, the factor by which the slowest of
    the newest runs falls short of the rate target (below 1 when it met it)."""
    nan = float("nan")
    tgt = TARGETS[config]
    new = runs.tail(last)
    out = {"n_runs": len(runs), "last": len(new)}
    for what, col in (("img_s", "ours (img/s)"), ("ratio", "ratio"), ("base", "baseline (img/s)"),
                      ("bound", "noise bound (img/s)")):
        v = new[col].dropna() if len(new) else new
        out[f"min_{what}"], out[f"max_{what}"] = (float(v.min()), float(v.max())) if len(v) else (nan, nan)
    for what, col in (("base", "baseline (img/s)"), ("bound", "noise bound (img/s)")):
        v = runs[col].dropna() if len(runs) else runs
        out[f"all_max_{what}"] = float(v.max()) if len(v) else nan
    ratio_ok = new["ratio"] >= tgt.get("min_ratio", 0)
    rate_ok = new["ours (img/s)"] >= tgt.get("min_img_s", 0)
    out["ratio_met"], out["rate_met"] = int(ratio_ok.sum()), int(rate_ok.sum())
    out["all_met"] = bool(len(new) == last and (ratio_ok & rate_ok).all())
    out["need"] = tgt.get("min_img_s", 0) / out["min_img_s"] if len(new) else nan
    return out


def format_table(record: dict) -> str:
    """A plain-text table of a :func:`run_bench_quantizers` record (eq. (1) / eqs. (2)-(4) timings)."""
    rows = [("config", "ours img/s", "ours 1-thr", "baseline img/s", "ratio", "ratio 1-thr",
             "randn bound", "target")]
    for name, e in record["configs"].items():
        tgt = e.get("target")
        t = "-" if not tgt else ("ok" if e["meets_target"] else "MISSED") + " " + ", ".join(
            f"{a}={b:g}" for a, b in tgt.items())
        rows.append((name, f"{e['ours_img_s']:.0f}", f"{e['ours_single_thread_img_s']:.0f}",
                     f"{e['baseline_img_s']:.0f}", f"{e['ratio']:.1f}x", f"{e['ratio_single_thread']:.1f}x",
                     f"{e['randn_bound_img_s']:.0f}", t))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    for name, e in record["configs"].items():
        if "profile" in e:
            lines.append(f"{name} profile (1 thread): " + ", ".join(
                f"{st} {100 * sh:.0f}%" for st, sh in e["profile"]["shares"].items()))
        if "inertia" in e:
            lines.append(f"{name} mean inertia: ours {100 * e['inertia']['ours_rel_sklearn']:+.2f}% vs scikit-learn")
        tk = e.get("torch_kmeans")
        if isinstance(tk, dict):
            lines.append(f"{name} torch_kmeans {tk['version']}: {tk['own_kmeans++']['img_s']:.1f} img/s with its "
                         f"k-means++ (inertia {100 * tk['own_kmeans++']['inertia_rel_sklearn']:+.2f}%), "
                         f"{tk['greedy_seeds']['img_s']:.1f} img/s from greedy seeds "
                         f"(inertia {100 * tk['greedy_seeds']['inertia_rel_sklearn']:+.2f}%); "
                         f"ours is {e['ratio_torch_kmeans']:.0f}x faster")
        elif tk is not None:
            lines.append(f"{name} torch_kmeans: {tk}")
    return "\n".join(lines)


def run_bench_table1(n: int = 1000, seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Wall time of Table 1's quick mode from scratch: MNIST, ``n`` test images, the 7 radii of
    the paper, no defense + RandDisc/pRD/swRD (the paper's s, k), default classifier.

    Adversarial examples go to a temporary folder (nothing cached is reused, no record is
    touched), so the time is what a fresh machine spends. Reports the seconds spent attacking
    (PGD40 on f, once per ε) and quantizing + classifying (every row at every ε), and their shares.
    The target is :data:`TABLE1_TARGET_S`; this measures, it does not assert.
    """
    import tempfile

    from tqdm.auto import tqdm

    from .experiments.adversarial import run_robust_accuracy
    from .experiments.tables import table_spec

    sp = table_spec("table1")
    rows = [r for r in sp["rows"] if r["variant"] is None]
    t_attack = t_defend = 0.0
    cells = []
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for eps in tqdm(sp["eps"], desc=f"table1 quick n={n}", disable=not progress):
            for row in rows:
                r = run_robust_accuracy("mnist", sp["arch"], None, row["defense"], eps, n, seed, device=device,
                                          cache_dir=tmp)
                t_attack += r["seconds_attack"]
                t_defend += r["seconds_defend"]
                cells.append({"method": row["method"], "eps": eps, "accuracy": r["accuracy"]})
    total = time.perf_counter() - t0
    return {"benchmark": "table1_quick", "params": {"n": n, "seed": seed, "device": device,
                                                     "rows": [r["method"] for r in rows], "eps": list(sp["eps"])},
            "machine": _machine(), "load_avg_before": load_before, "load_avg_after": list(os.getloadavg()),
            "seconds_total": round(total, 2), "seconds_attack": round(t_attack, 2),
            "seconds_quantize_classify": round(t_defend, 2),
            "share_attack": round(t_attack / total, 3), "share_quantize_classify": round(t_defend / total, 3),
            "target_seconds": TABLE1_TARGET_S, "meets_target": total <= TABLE1_TARGET_S, "cells": cells}


def bench_center_sampling(n_samples: int = 10_000, cases=None, repeats: int = 1, *,
                          chunk: int | None = None, threads: int | None = None) -> dict:
    """Seconds to draw ``n_samples`` centre sets ``C ~ Q_{C|X=x}`` (eq. (9)'s samples) of one real test image.

    ``cases``: iterable of ``(dataset, method, s, k)``; default MNIST pRD ``s=2, k=4`` and
    CIFAR-10 pRD ``s=2, k=10`` (the paper's Figure 6 settings; targets <= 2 s and <= 15 s on 2
    CPU cores), plus RandDisc and swRD at the same ``k``. Returns ``{"dataset/method s= k=":
    best-of-repeats seconds, ..., "threads": ..., "n_samples": ...}``.
    """
    from .data import load_dataset
    from .kl import DEFAULT_CHUNK, sample_center_vectors

    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if cases is None:
        cases = [("mnist", "prd", 2, 4), ("mnist", "randdisc", 1, 4), ("mnist", "swrd", 2, 4),
                 ("cifar10", "prd", 2, 10), ("cifar10", "randdisc", 1, 10), ("cifar10", "swrd", 2, 10)]
    out = {"n_samples": n_samples, "threads": threads or torch.get_num_threads(), "chunk": chunk}
    for dataset, method, s, k in cases:
        x, _ = load_dataset(dataset, "test", 1)
        best = math.inf
        for r in range(repeats):
            t0 = time.perf_counter()
            sample_center_vectors(x[0], QuantizerSpec.paper(dataset, method, s, k), n_samples,
                                  torch.Generator().manual_seed(r), chunk=chunk, threads=threads)
            best = min(best, time.perf_counter() - t0)
        out[f"{dataset}/{method} s={s} k={k}"] = round(best, 3)
    return out


def run_bench_eot(n_images: int = 64, draws: int = 16, repeats: int = 3, seed: int = 0,
                  config: str = "swrd_cifar_s4_k25") -> dict:
    """Cost of one EOT attack step with ``draws`` draws against ``draws`` single-draw steps.

    The adaptive attack's gradient (:func:`vqdbook.attacks.eot_gradient`) on ``Defended(f, Q,
    bpda=True)`` for ``n_images`` real test images, f the default classifier and Q the quantizer of
    ``config``: once with the ``draws`` copies of each image in one batch (as :class:`~vqdbook.attacks.PGD`
    and :class:`~vqdbook.attacks.APGD` chunk it: ``CPU_CHUNK // draws`` images per forward pass), and
    ``draws`` times with one draw (chunks of ``CPU_CHUNK`` images). ``ratio`` = batched time /
    (``draws`` x single-draw time); the target is at most 1.25 (no per-draw overhead). Best of ``repeats``.
    """
    from .attacks import CPU_CHUNK, eot_gradient
    from .defense import Defended
    from .experiments.adversarial import classifier

    ds, q = quantizer_config(config)
    x = _load(ds, n_images)
    from .data import load_dataset

    _, y = load_dataset(ds, "test", n_images)
    torch.manual_seed(seed)
    model = Defended(classifier(ds), q.build(), bpda=True)

    def batched():
        c = max(1, CPU_CHUNK // draws)
        for i in range(0, n_images, c):
            eot_gradient(model, x[i:i + c], y[i:i + c], draws)

    def single():
        for _ in range(draws):
            for i in range(0, n_images, CPU_CHUNK):
                eot_gradient(model, x[i:i + CPU_CHUNK], y[i:i + CPU_CHUNK], 1)

    load_before = list(os.getloadavg())
    batched()                                                          # warm-up
    t_b, t_s = _time(batched, repeats), _time(single, repeats)
    return {"benchmark": "eot", "params": {"n_images": n_images, "draws": draws, "repeats": repeats, "seed": seed,
                                           "config": config, "threads": torch.get_num_threads()},
            "machine": _machine(), "load_avg_before": load_before, "load_avg_after": list(os.getloadavg()),
            "seconds_batched": round(t_b, 3), "seconds_single_draws": round(t_s, 3), "ratio": round(t_b / t_s, 3),
            "target_ratio": EOT_TARGET_RATIO, "meets_target": t_b / t_s <= EOT_TARGET_RATIO,
            "img_draws_per_s": round(n_images * draws / t_b, 1)}


#: One EOT step with m draws costs at most this many times m single-draw steps (no per-draw overhead).
EOT_TARGET_RATIO = 1.25


def record_benchmark(what: str, *, n: int | None = None, seed: int = 0) -> tuple[dict, Path]:
    """Run one of :data:`BENCHMARKS` and store its result as a record (kind ``bench_<what>``);
    returns ``(result, path)``. This is what ``vqdbook bench <what>`` calls."""
    from .results import write_record

    if what not in BENCHMARKS:
        raise ValueError(f"what must be one of {sorted(BENCHMARKS)}; got {what!r}")
    if what == "quantizers":
        result = run_bench_quantizers(**({} if n is None else {"n_images": n}), seed=seed)
        params = result["params"]
    elif what == "table1":
        result = run_bench_table1(n=n or 1000, seed=seed)
        params = result["params"]
    elif what == "eot":
        result = run_bench_eot(**({} if n is None else {"n_images": n}), seed=seed)
        params = result["params"]
    elif what == "tquant":
        result = run_bench_tquant(**({} if n is None else {"n_batches": n}), seed=seed)
        params = result["params"]
    elif what == "certify":
        result = run_bench_certify(**({} if n is None else {"index": n}), seed=seed)
        params = result["params"]
    else:
        result = bench_center_sampling()
        params = {"n_samples": result.get("n_samples")}
    # every run is kept (its start time is part of the key): a target holds only if it holds run after
    # run, which the appendix shows from these records
    params = {**params, "run_started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return result, write_record(f"bench_{what}", params, result)


#: The benchmarks ``vqdbook bench`` runs: name -> what it times.
BENCHMARKS = {"quantizers": "the quantizers against a per-image scikit-learn pipeline (img/s, ratio)",
              "kl": "drawing 10,000 centre sets C ~ Q(C|X=x) of one image (Section 4.2)",
              "table1": "Table 1 in quick mode from scratch (1,000 MNIST images, wall time)",
              "eot": "one adaptive attack step with 16 EOT draws as one batch vs 16 single-draw steps (swRD CIFAR-10)",
              "tquant": "training on swRD-quantized CIFAR-10 batches (on the fly) vs natural training, "
                        "50 batches of 128 (--n: batches)",
              "certify": "the certified-radius pipeline (Theorem 1) and one smoothing CERTIFY for one test image "
                         "per dataset and quantizer (--n: the image's index)"}


#: An epoch of on-the-fly quantized training (t-swRD, CIFAR-10 s=4 k=25) costs at most this many natural epochs.
TQUANT_TARGET_RATIO = 2.0


def run_bench_tquant(n_batches: int = 50, batch_size: int = 128, seed: int = 0, config: str = "swrd_cifar_s4_k25",
                     precision: str = "fp32") -> dict:
    """Cost of training on quantized images on the fly (Section 3.5) against natural training.

    The same ``n_batches`` batches of ``batch_size`` training images of ``config``'s dataset (a
    stratified subset), augmented as :func:`vqdbook.train.train` augments them (random crop and
    flip), go through the same SGD step of the default classifier started from its natural weights
    (two copies): once as they are (natural training) and once quantized on the fly by
    :class:`vqdbook.train.QuantizeTransform` with ``config``'s quantizer (fresh draws per batch).
    The two runs are interleaved batch by batch, alternating which goes first, so that both see the
    same load on a shared machine; the quantized run times the quantizer and the training step
    apart. ``ratio`` = quantized run / natural run (the cost of an epoch relative to a natural
    epoch); the target is at most :data:`TQUANT_TARGET_RATIO`. Threads: torch's setting. This
    measures, it does not assert; the load average before and after tells how quiet the machine was.

    Examples::

        >>> from vqdbook.bench import run_bench_tquant
        >>> r = run_bench_tquant(n_batches=2, batch_size=8)        # doctest: +SKIP
        >>> r["seconds_tquant"] == r["seconds_quantize"] + r["seconds_train_step"]   # doctest: +SKIP
        True
    """
    import copy

    import torch.nn.functional as F

    from .data import load_dataset
    from .models import DEFAULT_ARCH, load_pretrained
    from .train import DEFAULTS, QuantizeTransform, augment_batch

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")
    ds, q = quantizer_config(config)
    x, y = load_dataset(ds, "train", n_batches * batch_size, seed=seed)
    base = load_pretrained(ds).train()
    cfg = DEFAULTS[ds]
    torch.manual_seed(seed)

    class Run:
        def __init__(self, transform):
            self.model = copy.deepcopy(base).train()
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                       weight_decay=cfg["weight_decay"])
            self.g = torch.Generator().manual_seed(seed)        # the same augmentation in both runs
            self.transform = transform
            if transform is not None:
                transform.start_epoch(0)
            self.t_quantize = self.t_step = 0.0

        def batch(self, i):
            xb, yb = x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]
            if cfg["augment"]:
                xb = augment_batch(xb, self.g)
            t0 = time.perf_counter()
            if self.transform is not None:
                with torch.no_grad():
                    xb = self.transform(xb)
            t1 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(self.model(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.t_quantize += t1 - t0
            self.t_step += time.perf_counter() - t1

    load_before = list(os.getloadavg())
    Run(None).batch(0)                                                   # warm-up (allocator, kernels)
    Run(QuantizeTransform(q, seed)).batch(0)
    natural, tquant = Run(None), Run(QuantizeTransform(q, seed))
    for i in range(n_batches):
        for run in ((natural, tquant) if i % 2 == 0 else (tquant, natural)):
            run.batch(i)
    t_nat = natural.t_step
    t_q, t_step = tquant.t_quantize, tquant.t_step
    t_tq = t_q + t_step
    ratio = t_tq / t_nat
    return {"benchmark": "tquant",
            "params": {"n_batches": n_batches, "batch_size": batch_size, "seed": seed, "config": config,
                       "precision": precision, "threads": torch.get_num_threads(), "arch": DEFAULT_ARCH[ds],
                       "interleaved": True},
            "quantizer": q.params(), "machine": _machine(), "load_avg_before": load_before,
            "load_avg_after": list(os.getloadavg()),
            "seconds_natural": round(t_nat, 2), "seconds_tquant": round(t_tq, 2),
            "seconds_quantize": round(t_q, 2), "seconds_train_step": round(t_step, 2),
            "share_quantize": round(t_q / t_tq, 3), "share_train_step": round(t_step / t_tq, 3),
            "train_step_vs_natural": round(t_step / t_nat, 3),
            "quantize_img_s": round(len(y) / t_q, 1),
            "ratio": round(ratio, 3), "target_ratio": TQUANT_TARGET_RATIO, "meets_target": ratio <= TQUANT_TARGET_RATIO,
            "seconds_per_1000_images": {"natural": round(1000 * t_nat / len(y), 2),
                                        "tquant": round(1000 * t_tq / len(y), 2)}}


def run_bench_certify(datasets=("mnist", "cifar10"), index: int = 0, threads: int = 2, seed: int = 0) -> dict:
    """Wall time of the certified-radius pipeline for one test image, per dataset and quantizer.

    :func:`vqdbook.experiments.radii.run_radius` at the book's settings (Theorem 1, eq. (5): clean
    votes and the margin's Clopper-Pearson bound, then the KL of eq. (6) at the points of the ball
    on the radius grid, searched by bisection), and one randomized-smoothing CERTIFY at the
    quantizers' sigma (:func:`vqdbook.certify.smoothing_certify`, the book's ``n0`` and ``n``), for
    test image ``index``, with torch on ``threads`` threads (restored after). Records the total, the
    votes' share, the radii and points evaluated and the seconds per radius. A measurement, not a
    test: the load average before and after says how busy the machine was.
    """
    from . import paper
    from .certify import smoothing_certify
    from .data import load_dataset
    from .experiments.adversarial import classifier
    from .experiments.radii import SMOOTHING, radius_params, run_radius

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    load_before = list(os.getloadavg())
    out = {}
    try:
        for ds in datasets:
            for method in paper.QUANTIZERS:
                t0 = time.perf_counter()
                res = run_radius(**radius_params(ds, method, index, seed=seed))
                total = time.perf_counter() - t0
                out[f"{ds}/{method}"] = {
                    "seconds": round(total, 3), "seconds_votes": res["seconds"]["votes"],
                    "radii_evaluated": len(res["evaluated"]),
                    "points_evaluated": sum(len(e["kl"]) for e in res["evaluated"]),
                    "seconds_per_radius": [e["seconds"] for e in res["evaluated"]], "radius": res["radius"]}
            x, _ = load_dataset(ds, "test", index + 1, seed=seed)
            net = classifier(ds)
            t0 = time.perf_counter()
            smoothing_certify(net, x[index], paper.NOISE[ds]["sigma"], SMOOTHING["n0"], SMOOTHING["n"],
                              SMOOTHING["alpha"], torch.Generator().manual_seed(seed))
            out[f"{ds}/smoothing"] = {"seconds": round(time.perf_counter() - t0, 3)}
    finally:
        torch.set_num_threads(old)
    return {"benchmark": "certify", "params": {"datasets": list(datasets), "index": index, "threads": threads,
                                               "seed": seed},
            "machine": _machine(), "load_avg_before": load_before, "load_avg_after": list(os.getloadavg()),
            "per_image": out}
