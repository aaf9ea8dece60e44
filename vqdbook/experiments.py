"""Robust-accuracy experiments as data: ``run_robust_accuracy(**params) -> record``.

Protocol (the paper's, Sec. 3.3 and 4.1): adversarial examples x′ are computed by PGD on the
**undefended** classifier f (oblivious / gray-box threat model); the defended prediction is
f(Q(x′)). Adversarial examples for one (model, ε, images, seed) are computed once, cached on disk
under ``data/cache/adv`` with a checksum, and shared by every defense evaluated on them.

Each (dataset, model, defense + parameters, ε, n, seed, attack) is one record under
``data/results/robust_accuracy/``; tables and figures are assembled from records. A killed run
resumes without redoing finished records (see :mod:`vqdbook.results`).
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache

import torch

from . import PROJECT_ROOT
from .data import load_dataset, spec
from .metrics import wilson_interval
from .results import load_or_run

ADV_CACHE = PROJECT_ROOT / "data" / "cache" / "adv"
METHODS = ("none", "randdisc", "prd", "swrd")


def paper_defense(dataset: str, method: str, s: int = 1, k: int = 2) -> dict:
    """The paper's defense parameters on the [0, 1] scale (Sec. 4.1).

    MNIST: σ = τ = 4/255, β = 1. CIFAR-10: σ = τ = 4 (0–255) → 4/255, β = 0.1 → 0.1·255².
    SVHN: σ = τ = 4 → 4/255, β = 0.5 → 0.5·255² (β scales a squared distance).
    """
    name = spec(dataset).name
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method == "none":
        return {"method": "none"}
    beta = {"mnist": 1.0, "cifar10": 0.1 * 255 ** 2, "svhn": 0.5 * 255 ** 2}[name]
    d = {"method": method, "s": 1 if method == "randdisc" else s, "k": k, "sigma": 4 / 255, "tau": 4 / 255}
    if method == "swrd":
        d["beta"] = beta
    return d


def make_quantizer(defense: dict):
    """The ``nn.Module`` for a defense dict (``method`` plus its parameters), or None for ``none``."""
    from . import quantizers as q

    method = defense.get("method")
    if method == "none":
        return None
    if method == "randdisc":
        return q.RandDisc(k=defense["k"], sigma=defense["sigma"], tau=defense["tau"])
    if method == "prd":
        return q.PRD(s=defense["s"], k=defense["k"], sigma=defense["sigma"], tau=defense["tau"])
    if method == "swrd":
        return q.SWRD(s=defense["s"], k=defense["k"], sigma=defense["sigma"], tau=defense["tau"],
                      beta=defense["beta"])
    raise ValueError(f"defense['method'] must be one of {METHODS}; got {method!r}")


def defense_label(defense: dict) -> str:
    m = defense["method"]
    if m == "none":
        return "no defense"
    name = {"randdisc": "RandDisc", "prd": "pRD", "swrd": "swRD"}[m]
    return f"{name} (s={defense['s']}, k={defense['k']})"


@lru_cache(maxsize=4)
def _model(dataset, arch, variant, device):
    from .models import load_pretrained

    return load_pretrained(dataset, arch, variant).to(device)


def _adv_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def adversarial_examples(dataset: str, arch: str | None, variant: str | None, eps: float, n: int,
                         seed: int = 0, attack: str = "pgd-oblivious", device: str = "cpu",
                         batch_size: int = 500, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """x′ for the first ``n`` stratified test images (paper PGD on f), cached with a checksum.

    Returns ``(x_adv, y, seconds spent attacking now)`` (0 when loaded from the cache).
    """
    from .attacks import paper_pgd
    from .models import DEFAULT_ARCH

    name = spec(dataset).name
    arch = arch or DEFAULT_ARCH[name]
    if attack != "pgd-oblivious":
        raise ValueError(f"attack must be 'pgd-oblivious' (PGD on the undefended f); got {attack!r}")
    key_params = dict(dataset=name, arch=arch, variant=variant, eps=round(float(eps), 8), n=n, seed=seed,
                      attack=attack)
    path = ADV_CACHE / f"{_adv_key(key_params)}.pt"
    x, y = load_dataset(name, "test", n, seed=seed)
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            digest = hashlib.sha256(blob["x_adv"].numpy().tobytes()).hexdigest()
            if blob["params"] == json.dumps(key_params, sort_keys=True) and digest == blob["sha256"]:
                return blob["x_adv"].float(), y, 0.0
        except Exception:  # unreadable cache: recompute
            pass
    net = _model(name, arch, variant, device)
    t0 = time.time()
    gen = torch.Generator().manual_seed(seed)
    out = []
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(y), batch_size), desc=f"PGD {name} eps={eps:.4g}", disable=not progress,
                  leave=False):
        atk = paper_pgd(net, name, eps, generator=gen)
        out.append(atk(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
    x_adv = torch.cat(out)
    seconds = time.time() - t0
    ADV_CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"params": json.dumps(key_params, sort_keys=True), "x_adv": x_adv,
                "sha256": hashlib.sha256(x_adv.numpy().tobytes()).hexdigest()}, path)
    return x_adv, y, seconds


def run_robust_accuracy(dataset: str, arch: str | None = None, variant: str | None = None,
                        defense: dict | None = None, eps: float = 0.0, n: int = 1000, seed: int = 0,
                        votes: int = 1, attack: str = "pgd-oblivious", device: str = "cpu",
                        batch_size: int = 500) -> dict:
    """Accuracy of f∘Q on PGD examples of f at radius ``eps`` (ε = 0: natural accuracy).

    Returns a result dict: ``correct``, ``n``, ``accuracy``, ``ci95`` (Wilson), and the seconds
    spent attacking (0 if the x′ were cached) and quantizing + classifying.
    """
    from .defense import Defended
    from .models import DEFAULT_ARCH

    defense = defense or {"method": "none"}
    x_adv, y, t_attack = adversarial_examples(dataset, arch, variant, eps, n, seed, attack, device, batch_size) \
        if eps > 0 else (*load_dataset(dataset, "test", n, seed=seed), 0.0)
    name = spec(dataset).name
    net = _model(name, arch or DEFAULT_ARCH[name], variant, device)
    quantizer = make_quantizer(defense)
    model = net if quantizer is None else Defended(net, quantizer, votes=votes)
    torch.manual_seed(seed + 1)  # the quantizer's randomness
    t0 = time.time()
    with torch.no_grad():
        pred = torch.cat([model(x_adv[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(y), batch_size)])
    t_defend = time.time() - t0
    correct = int((pred == y).sum())
    lo, hi = wilson_interval(correct, len(y))
    return {"correct": correct, "n": len(y), "accuracy": correct / len(y), "ci95": [lo, hi],
            "seconds_attack": round(t_attack, 3), "seconds_defend": round(t_defend, 3)}


def robust_accuracy_record(**params) -> dict:
    """Load the record for ``params`` or run :func:`run_robust_accuracy` and store it."""
    device = params.get("device", "cpu")
    stored = {k: v for k, v in params.items() if k not in ("device", "batch_size")}
    return load_or_run("robust_accuracy", stored, lambda **p: run_robust_accuracy(**p, device=device),
                       device=device)
