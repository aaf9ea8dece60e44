"""Chunks of independent problems on worker threads: the one scheduler of the package.

The quantizers (one clustering problem per image, :mod:`vqdbook.quantizers`), the batched k-means
(:mod:`vqdbook.kmeans`) and the centre-set sampler of the KL estimator (:mod:`vqdbook.kl`) all
split a batch of independent problems into chunks and run the chunks here:

* every chunk draws its random numbers from its own ``torch.Generator``, seeded from the caller's
  generator (or torch's global RNG), so a seed gives the same result for any number of threads;
* on CPU, torch's intra-op parallelism is set to 1 while any caller is inside
  (:func:`single_intra_op`; one lock, one saved count) and whole chunks run on a shared pool of
  worker threads instead -- on these small tensors that scales better than OpenMP teams, which
  stall badly when the machine is oversubscribed;
* the number of worker threads follows one rule, :func:`worker_threads`: the caller's
  ``threads``, else torch's thread count, at most one per chunk -- never a reading of the
  machine's load;
* on GPU, chunks run one after the other (one chunk is one set of kernel launches).

The chunk size depends on the problem size only (:func:`default_chunk_size`), never on the
batch size or the thread count, so a seed gives the same sample on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["map_chunks", "worker_threads", "single_intra_op", "cpu_single_intra_op", "chunk_seeds",
           "default_chunk_size", "CHUNK_FLOATS", "CHUNK_MIN", "CHUNK_MAX", "DEFAULT_CHUNK_SIZE_GPU"]


# --------------------------------------------------------------------------------------------
# chunks of problems on worker threads
# --------------------------------------------------------------------------------------------

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared worker pool that runs chunks of clustering problems (eq. (1) codebooks)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="vqdbook")
        return _POOL


def chunk_seeds(n: int, generator, device) -> list[int]:
    """One 62-bit seed per chunk, drawn from ``generator`` (or torch's global RNG); each chunk's
    generator then draws its clustering noise, k-means++ numbers and eq. (1) noise."""
    if generator is not None:
        dev = generator.device
    else:
        dev = torch.device(device)
        if dev.type != "cuda":
            dev = torch.device("cpu")
    return torch.randint(0, 2 ** 62, (n,), generator=generator, device=dev).tolist()


def worker_threads(threads: int | None, n_chunks: int) -> int:
    """How many worker threads :func:`map_chunks` uses on CPU -- the package's one thread rule.

    ``threads`` if given, else torch's thread count (``torch.get_num_threads()``, as it was before
    the package set intra-op threads to 1 for the call); never more than there are chunks, never
    fewer than one. torch's count is the number of physical cores unless ``torch.set_num_threads``
    or ``OMP_NUM_THREADS`` says otherwise, so on a machine shared with other work, set one of
    those (or pass ``threads``) to leave cores to it.

    The rule does not look at the machine's load. An earlier rule measured the idle cores
    (``/proc/stat`` over 60 ms) and started fewer workers on a busy machine. Timed on a 2-core
    machine under a load average of about 4 (swRD CIFAR-10, ``s=4, k=25``, 256 images), it ran no
    faster than this rule, and neither rule ran slower than a single worker; the 60 ms reading only
    made the thread count, and the speed, change from run to run. So the count is the caller's.
    """
    n = _INTRA_PREV if _INTRA_DEPTH else torch.get_num_threads()
    n = n if threads is None else int(threads)
    return max(1, min(n, int(n_chunks)))


def map_chunks(fn, B: int, chunk: int, generator, device, threads):
    """``[fn(start, stop, chunk_generator) for each chunk of range(B)]``, in inference mode -- how
    the codebooks of eq. (1) / eqs. (2)-(4) of many images are computed, a chunk at a time.

    Every chunk gets its own ``torch.Generator``, seeded from ``generator`` (or torch's global RNG,
    so ``torch.manual_seed`` makes runs reproducible), hence results do not depend on how chunks
    are scheduled or on the number of threads. On GPU, chunks run one after the other.

    On CPU, torch's intra-op parallelism is set to 1 for the duration of the call (and restored
    after) and whole chunks run on worker threads instead: that scales better than many small
    parallel operations, and OpenMP teams of small operations stall badly when the machine is
    oversubscribed. ``threads`` is the number of workers; ``None`` (the default) means torch's
    thread count, at most one worker per chunk (:func:`worker_threads`, the one rule).
    """
    device = torch.device(device)
    starts = list(range(0, B, chunk))
    seeds = chunk_seeds(len(starts), generator, device)

    def work(i):
        g = torch.Generator(device=device)
        g.manual_seed(seeds[i])
        # inference mode rather than no_grad: less per-op bookkeeping, so the worker threads hold
        # the GIL less (`vqdbook bench quantizers` measures the 2-thread speed). Its tensors may
        # not enter autograd or be changed in place later, so results leave as copies.
        with torch.inference_mode():
            res = fn(starts[i], min(B, starts[i] + chunk), g)
        return tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in res) \
            if isinstance(res, (tuple, list)) else res.clone()

    if device.type != "cpu":
        return [work(i) for i in range(len(starts))]
    with single_intra_op():
        workers = worker_threads(threads, len(starts))
        if workers <= 1:
            return [work(i) for i in range(len(starts))]
        return list(_pool(workers).map(work, range(len(starts))))


def cpu_single_intra_op(fn):
    """Decorator: run ``fn(x, ...)`` with torch's intra-op threads at 1 when ``x`` is a CPU
    tensor (validation, chunking and concatenation included; see :func:`map_chunks` for why)."""
    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            with single_intra_op():
                return fn(x, *args, **kwargs)
        return fn(x, *args, **kwargs)
    return wrapper


_INTRA_LOCK = threading.Lock()
_INTRA_DEPTH = 0
_INTRA_PREV = 1


@contextlib.contextmanager
def single_intra_op():
    """Set torch's intra-op threads to 1 while any caller is inside; yields the previous count.

    Re-entrant and safe when several threads call the quantizers at once: the first to enter
    saves the count, the last to leave restores it.
    """
    global _INTRA_DEPTH, _INTRA_PREV
    with _INTRA_LOCK:
        if _INTRA_DEPTH == 0:
            _INTRA_PREV = torch.get_num_threads()
            if _INTRA_PREV != 1:
                torch.set_num_threads(1)
        _INTRA_DEPTH += 1
        prev = _INTRA_PREV
    try:
        yield prev
    finally:
        with _INTRA_LOCK:
            _INTRA_DEPTH -= 1
            if _INTRA_DEPTH == 0 and _INTRA_PREV != 1:
                torch.set_num_threads(_INTRA_PREV)


#: Default CPU chunk: about this many point coordinates (problems * points * dimension) per
#: chunk, so a chunk's working set stays in cache while per-operation overhead is amortised
#: (32 images for swRD CIFAR-10 s=4, 128 for pRD CIFAR-10 s=4 or swRD MNIST s=2).
CHUNK_FLOATS = 1_300_000
CHUNK_MIN, CHUNK_MAX = 16, 128
#: Problems (images) per chunk on GPU (one chunk is one set of kernel launches: make it large).
DEFAULT_CHUNK_SIZE_GPU = 4096


def default_chunk_size(n_points: int, dim: int, device="cpu") -> int:
    """The chunk size used when ``chunk_size=None``: on CPU ``CHUNK_FLOATS / (n_points * dim)``
    clamped to ``[CHUNK_MIN, CHUNK_MAX]``; on GPU :data:`DEFAULT_CHUNK_SIZE_GPU`. It depends on
    the problem size only -- not on the batch size or the thread count -- so a seed gives the same
    sample on any machine. (For the quantizers a problem is an image and its points are the
    patches of eq. (1) / eqs. (2)-(4).)"""
    if torch.device(device).type != "cpu":
        return DEFAULT_CHUNK_SIZE_GPU
    return min(max(CHUNK_FLOATS // max(1, n_points * dim), CHUNK_MIN), CHUNK_MAX)
