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
* on GPU, chunks run one after the other (one chunk is one set of kernel launches).

The chunk size depends on the problem size only (:func:`default_chunk_size`), never on the
batch size or the thread count, so a seed gives the same sample on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["map_chunks", "single_intra_op", "cpu_single_intra_op", "chunk_seeds", "default_chunk_size",
           "CHUNK_FLOATS", "CHUNK_MIN", "CHUNK_MAX", "DEFAULT_CHUNK_SIZE_GPU", "IDLE_WINDOW", "IDLE_TTL"]


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


#: The auto thread mode's idle-core measurement: samples (idle jiffies, seconds) are taken while
#: chunks run alone and summed until they span :data:`IDLE_WINDOW` seconds (``/proc/stat`` counts
#: in 10 ms jiffies, so a single short chunk says little); the result is reused for
#: :data:`IDLE_TTL` seconds, so back-to-back calls with few chunks (pRD on a few hundred images
#: makes two) run in parallel from their first chunk.
_IDLE = {"idle": None, "at": -1e9, "jiffies": 0.0, "seconds": 0.0, "last": -1e9}
_IDLE_LOCK = threading.Lock()
IDLE_WINDOW = 0.06
IDLE_TTL = 2.0


def _recent_idle():
    with _IDLE_LOCK:
        if _IDLE["idle"] is not None and time.monotonic() - _IDLE["at"] < IDLE_TTL:
            return _IDLE["idle"]
    return None


def _add_idle_sample(jiffies: float, seconds: float):
    """Add one sample; returns the idle cores once the samples span IDLE_WINDOW, else None."""
    now = time.monotonic()
    with _IDLE_LOCK:
        if now - _IDLE["last"] > IDLE_TTL:   # stale partial samples: start afresh
            _IDLE["jiffies"] = _IDLE["seconds"] = 0.0
        _IDLE["jiffies"] += jiffies
        _IDLE["seconds"] += seconds
        _IDLE["last"] = now
        if _IDLE["seconds"] < IDLE_WINDOW:
            return None
        idle = _IDLE["jiffies"] / _CLK_TCK / _IDLE["seconds"]   # idle cores, on average
        _IDLE.update(idle=idle, at=now, jiffies=0.0, seconds=0.0)
        return idle


def _idle_jiffies():
    """System-wide idle + iowait time in clock ticks (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[4]) + int(fields[5])
    except (OSError, ValueError, IndexError):
        return None


def map_chunks(fn, B: int, chunk: int, generator, device, threads):
    """``[fn(start, stop, chunk_generator) for each chunk of range(B)]``, in inference mode -- how
    the codebooks of eq. (1) / eqs. (2)-(4) of many images are computed, a chunk at a time.

    Every chunk gets its own ``torch.Generator``, seeded from ``generator`` (or torch's global RNG,
    so ``torch.manual_seed`` makes runs reproducible), hence results do not depend on how chunks
    are scheduled or on the number of threads. On GPU, chunks run one after the other.

    On CPU, torch's intra-op parallelism is set to 1 for the duration of the call (and restored
    after) and whole chunks run on worker threads instead: that scales better than many small
    parallel operations, and OpenMP teams of small operations stall badly when the machine is
    oversubscribed. ``threads`` is the number of workers; ``None`` (the default) means *auto*:
    chunks run on the calling thread while the idle CPU time of the machine is measured
    (``/proc/stat``, over at least :data:`IDLE_WINDOW` seconds), and the remaining chunks use up
    to ``torch.get_num_threads()`` workers only
    as far as there were idle cores -- on a machine busy with other work, extra workers only
    fight over the GIL and the cores. A measurement is reused for :data:`IDLE_TTL` seconds, so
    back-to-back calls (a benchmark, the batches of an experiment) skip the lone first chunk.
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
    with single_intra_op() as prev:
        results = []
        if threads is None:
            max_workers = min(prev, len(starts))
            if max_workers > 1:
                idle = _recent_idle()
                while idle is None and len(results) < len(starts):   # measure while chunks run alone
                    j0, t0 = _idle_jiffies(), time.perf_counter()
                    results.append(work(len(results)))
                    j1, t1 = _idle_jiffies(), time.perf_counter()
                    if j0 is None or j1 is None:   # no /proc/stat: assume the cores are free
                        idle = float(max_workers)
                        break
                    idle = _add_idle_sample(j1 - j0, t1 - t0)
                workers = max_workers if idle is None else max(1, min(max_workers, 1 + int(idle + 0.25)))
            else:
                workers = 1
        else:
            workers = min(int(threads), len(starts))
        rest = range(len(results), len(starts))
        if workers <= 1:
            results.extend(work(i) for i in rest)
        else:
            results.extend(_pool(workers).map(work, rest))
        return results


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


try:
    _CLK_TCK = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # pragma: no cover
    _CLK_TCK = 100


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
