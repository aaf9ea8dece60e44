"""Adversarial examples x′ and robust accuracy of f∘Q: the record every table and figure is made of.

Protocol (the paper's, Sec. 3.3 and 4.1): adversarial examples x′ are computed by PGD on the
**undefended** classifier f (oblivious / gray-box threat model); the defended prediction is
f(Q(x′)). Adversarial examples for one (model, ε, images, seed, attack) are computed once, cached
on disk under ``data/cache/adv`` with a checksum, and shared by every defense evaluated on them.

Each (dataset, model, defense + parameters, ε, n, seed, attack) is one ``robust_accuracy`` record
under ``data/results/``; tables and figures are assembled from records. A killed run resumes
without redoing finished records (see :mod:`vqdbook.results`).
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import torch

from .. import PROJECT_ROOT
from ..data import load_dataset, spec
from ..metrics import wilson_interval
from ..quantizers import QuantizerSpec
from ..results import load_or_run
from ..validation import check_int

__all__ = ["ATTACKS", "BPDA_EOT_SAMPLES", "NO_DEFENSE", "ADV_CACHE", "classifier", "adversarial_examples",
           "run_robust_accuracy", "robust_accuracy_record", "model_available"]

ADV_CACHE = PROJECT_ROOT / "data" / "cache" / "adv"
#: Attack protocols. The first two run the paper's PGD on the undefended f (oblivious / gray-box
#: threat model) and differ in how ε is read: on [0, 1] pixels (as the paper states) or on
#: normalized inputs. The third is a white-box (adaptive) attack on the defended f∘Q itself.
ATTACKS = {"pgd-oblivious": "oblivious: PGD on f, ε on [0, 1] pixels (the paper's stated protocol)",
           "pgd-oblivious-normeps": "oblivious: PGD on f, ε on normalized inputs (x − μ)/σ, i.e. ε·σ on pixels",
           "pgd-bpda-eot": "white-box: PGD on f∘Q, straight-through (BPDA) gradient of Q, averaged over "
                           "EOT draws of Q; ε on [0, 1] pixels",
           "pgd-oblivious-strong": "oblivious: a stronger PGD on f (100 steps, α = ε/40, 3 random starts; "
                                   "attacks.STRONG_PGD); ε on [0, 1] pixels"}
#: EOT draws per PGD step of the white-box attack (its default).
BPDA_EOT_SAMPLES = 4
#: The record form of "no defense" (the undefended f, and the adversarially trained baselines).
NO_DEFENSE = {"method": "none"}


@lru_cache(maxsize=4)
def classifier(dataset: str, arch: str | None = None, variant: str | None = None, device: str = "cpu"):
    """The pretrained classifier f, cached (eval mode; channels-last on CPU, which oneDNN runs faster
    for these small nets: `vqdbook bench table1` times it)."""
    from ..models import DEFAULT_ARCH, load_pretrained

    name = spec(dataset).name
    net = load_pretrained(name, arch or DEFAULT_ARCH[name], variant).to(device)
    return net.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else net


def model_available(dataset: str, variant: str | None, arch: str | None = None) -> bool:
    """Whether the weights of this classifier are in the repository (untrained rows say so)."""
    from ..models import DEFAULT_ARCH, weights_path

    name = spec(dataset).name
    return weights_path(name, arch or DEFAULT_ARCH[name], variant).is_file()


def _adv_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def adversarial_examples(dataset: str, arch: str | None, variant: str | None, eps: float, n: int,
                         seed: int = 0, attack: str = "pgd-oblivious", device: str = "cpu",
                         batch_size: int = 500, progress: bool = True, *, defense: dict | None = None,
                         eot_samples: int | None = None, cache_dir=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """x′ for the first ``n`` stratified test images, cached with a checksum.

    The oblivious attacks (the paper's protocol) run the paper's PGD on f alone and ignore
    ``defense``; ``"pgd-bpda-eot"`` runs the same PGD (steps, α/ε) on ``Defended(f, Q, bpda=True)``
    for the quantizer of ``defense`` (a :meth:`QuantizerSpec.params` dict), with gradients averaged
    over ``eot_samples`` draws of Q per step.

    Returns ``(x_adv, y, seconds spent attacking now)`` (0 when loaded from the cache).
    """
    from ..attacks import paper_pgd, strong_pgd
    from ..models import DEFAULT_ARCH

    ds = spec(dataset)
    name = ds.name
    arch = arch or DEFAULT_ARCH[name]
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}; got {attack!r}")
    key_params = dict(dataset=name, arch=arch, variant=variant, eps=round(float(eps), 8), n=n, seed=seed,
                      attack=attack)
    whitebox = attack == "pgd-bpda-eot"
    if whitebox:
        if not defense or QuantizerSpec.from_params(defense) is None:
            raise ValueError("attack='pgd-bpda-eot' attacks a defended model: pass defense= a quantizer "
                             "dict (QuantizerSpec.params(): method randdisc, prd or swrd)")
        eot_samples = BPDA_EOT_SAMPLES if eot_samples is None else eot_samples
        eot_samples = check_int(eot_samples, "eot_samples", 1)
        key_params.update(defense=defense, eot_samples=eot_samples)
    cache_dir = ADV_CACHE if cache_dir is None else Path(cache_dir)
    path = cache_dir / f"{_adv_key(key_params)}.pt"
    x, y = load_dataset(name, "test", n, seed=seed)
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            digest = hashlib.sha256(blob["x_adv"].numpy().tobytes()).hexdigest()
            if blob["params"] == json.dumps(key_params, sort_keys=True) and digest == blob["sha256"]:
                return blob["x_adv"].float(), y, 0.0
        except Exception:  # unreadable cache: recompute
            pass
    net = classifier(name, arch, variant, device)
    if whitebox:
        from ..defense import Defended

        net = Defended(net.eval(), QuantizerSpec.from_params(defense).build(), bpda=True)
        torch.manual_seed(seed + 2)  # the quantizer's draws inside the attack
    t0 = time.time()
    gen = torch.Generator().manual_seed(seed)
    out = []
    from tqdm.auto import tqdm

    # the normalized-units reading: ε is a radius on the normalized input (x − μ)/σ, so on
    # [0, 1] pixels it is ε·σ (MNIST σ = 0.3081; mean channel σ for colour datasets)
    eps_pixels = eps * (sum(ds.std) / len(ds.std) if attack == "pgd-oblivious-normeps" else 1.0)
    for i in tqdm(range(0, len(y), batch_size), desc=f"PGD {name} eps={eps:.4g} ({attack})",
                  disable=not progress, leave=False):
        if attack == "pgd-oblivious-strong":
            atk = strong_pgd(net, eps_pixels, generator=gen)
        else:
            atk = paper_pgd(net, name, eps_pixels, generator=gen,
                            **(dict(eot_samples=eot_samples, check=False) if whitebox else {}))
        out.append(atk(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
    x_adv = torch.cat(out)
    seconds = time.time() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"params": json.dumps(key_params, sort_keys=True), "x_adv": x_adv,
                "sha256": hashlib.sha256(x_adv.numpy().tobytes()).hexdigest()}, path)
    return x_adv, y, seconds


def run_robust_accuracy(dataset: str, arch: str | None = None, variant: str | None = None,
                        defense: dict | None = None, eps: float = 0.0, n: int = 1000, seed: int = 0,
                        votes: int = 1, attack: str = "pgd-oblivious", device: str = "cpu",
                        batch_size: int = 500, eot_samples: int | None = None, cache_dir=None) -> dict:
    """Accuracy of f∘Q on PGD examples at radius ``eps`` (ε = 0: natural accuracy).

    ``defense`` is a :meth:`QuantizerSpec.params` dict or :data:`NO_DEFENSE`. ``attack`` names the
    threat model (:data:`ATTACKS`): by default the paper's oblivious one (x′ from PGD on the
    undefended f, then f(Q(x′))); ``"pgd-bpda-eot"`` is white-box (x′ from PGD with BPDA +
    ``eot_samples`` EOT through f∘Q itself), evaluated with a fresh draw of Q.

    Returns a result dict: ``correct``, ``n``, ``accuracy``, ``ci95`` (Wilson), and the seconds
    spent attacking (0 if the x′ were cached) and quantizing + classifying.
    """
    from ..defense import Defended

    defense = defense or NO_DEFENSE
    x_adv, y, t_attack = adversarial_examples(dataset, arch, variant, eps, n, seed, attack, device, batch_size,
                                              defense=defense, eot_samples=eot_samples, cache_dir=cache_dir) \
        if eps > 0 else (*load_dataset(dataset, "test", n, seed=seed), 0.0)
    net = classifier(spec(dataset).name, arch, variant, device).eval()
    q = QuantizerSpec.from_params(defense)
    model = net if q is None else Defended(net, q.build(), votes=votes)
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
    batch_size = params.get("batch_size", 500)
    # where and in what batches a record was computed are not part of its key (the hardware is in it)
    stored = {k: v for k, v in params.items() if k not in ("device", "batch_size")}
    return load_or_run("robust_accuracy", stored,
                       lambda **p: run_robust_accuracy(**p, device=device, batch_size=batch_size), device=device)
