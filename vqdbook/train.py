"""Train classifiers: seeded, resumable after a kill, ending in weights plus a model card.

Resumption is exact: the data order and augmentation of epoch ``e`` come from a generator seeded
by ``(seed, e)``, and each end-of-epoch checkpoint holds the model, optimizer, LR schedule and the
global RNG state (dropout). Killing a run after epoch ``e`` and restarting gives the same weights
as an uninterrupted run.

**Classifiers trained on quantized images (Section 3.5, t-pRD and t-swRD).** ``train(...,
quantizer=QuantizerSpec, init="natural")`` fine-tunes the natural classifier f into f̂ on quantized
training images. Two readings of "the quantized training set obtained by Q_{X̂|X}":

* **on the fly** (the default, :class:`QuantizeTransform`): every training batch is quantized
  after augmentation with fresh noise and fresh codebooks, drawn from a generator seeded by
  ``(seed, epoch)``, so over the epochs f̂ sees many draws of Q_{X̂|X} for each image -- the
  distribution the defense samples from at test time, which is what Section 3.5's argument (f̂
  classifies quantized clean images better) asks for;
* **one frozen draw** (``frozen_draw=True``): the training set is quantized once (seeded), and the
  epochs augment that fixed copy. This is the literal reading of the paper's wording ("the
  quantized training set", "trained on quantized CIFAR10 and SVHN datasets", Sections 3.5 and
  4.4), which names no redraw; it costs one pass of Q over the training set per run (recomputed
  on resume, deterministically) instead of one per epoch.

The committed ``t-prd`` / ``t-swrd`` weights use the on-the-fly reading. A generic ``transform=``
callable can still be applied to each batch after augmentation; if it has ``start_epoch(epoch)``
it is called at the start of every epoch (that is how :class:`QuantizeTransform` reseeds).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import PROJECT_ROOT
from .data import load_dataset, spec
from .models import (
    TQUANT_VARIANTS,
    WEIGHTS_DIR,
    accuracy,
    build_model,
    card_path,
    load_card,
    load_pretrained,
    model_stem,
    save_weights,
    tquant_variant,
    weights_path,
)
from .provenance import provenance
from .quantizers import QuantizerSpec

__all__ = ["train", "augment_batch", "ADV_METHODS", "ADV_DEFAULTS", "DEFAULTS", "FINETUNE", "INITS",
           "CHECKPOINT_DIR", "QuantizeTransform", "quantized_accuracy"]

CHECKPOINT_DIR = PROJECT_ROOT / "data" / "checkpoints"

#: Per-dataset defaults (CPU-sized): (epochs, batch size, peak LR, weight decay, augmentation)
DEFAULTS = {
    "mnist": dict(epochs=4, batch_size=128, lr=0.05, weight_decay=5e-4, augment=False),
    "cifar10": dict(epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, augment=True),
    "svhn": dict(epochs=15, batch_size=128, lr=0.05, weight_decay=5e-4, augment=False),
}


#: Fine-tuning defaults (``init="natural"``): epochs and the peak LR of the one-cycle schedule. The
#: natural weights are already trained, so a few epochs at a peak LR 5x below natural training's
#: adapt f to quantized inputs without starting over; sized for 2 CPU cores, where an on-the-fly
#: swRD s=4 k=25 epoch on CIFAR-10 costs under two natural epochs (``vqdbook bench tquant``).
FINETUNE = {
    "mnist": dict(epochs=2, lr=0.01),
    "cifar10": dict(epochs=3, lr=0.02),
    "svhn": dict(epochs=3, lr=0.02),
}
#: Where the weights start: ``None`` (a fresh seeded initialisation) or ``"natural"`` (the committed
#: natural classifier of the same dataset and architecture, :func:`vqdbook.models.load_pretrained`).
INITS = (None, "natural")
#: Offsets that keep the quantizer's random streams apart from the data order's (``seed * 100_003 + epoch``).
_QUANT_STREAM = 1 << 40
_FROZEN_STREAM = 1 << 41


class QuantizeTransform:
    """Quantize every training batch with fresh noise: the on-the-fly training of t-pRD / t-swRD (Sec. 3.5).

    Each call draws new clustering noise, k-means++ seeds and assignment noise (eq. (1)) from
    a ``torch.Generator`` that :meth:`start_epoch` seeds from ``(seed, epoch)``, so two epochs see
    two different quantized versions of the same image, and a restart after a kill redraws exactly
    what the killed run drew. :func:`train` calls :meth:`start_epoch` before each epoch and the
    transform on each batch after augmentation; :attr:`seconds` accumulates the time spent quantizing.

    Args:
        spec: the quantizer (:class:`~vqdbook.quantizers.QuantizerSpec`; the paper's settings via
            :func:`vqdbook.models.tquant_spec`).
        seed: the run's seed.
        threads: CPU worker threads of the quantizer (default: auto, see :mod:`vqdbook.parallel`);
            results do not depend on it.

    Shapes: ``(B, C, H, W)`` in [0, 1] -> the same shape, quantized and clamped to [0, 1].

    Examples::

        >>> import torch
        >>> from vqdbook.models import tquant_spec
        >>> from vqdbook.train import QuantizeTransform
        >>> t = QuantizeTransform(tquant_spec("mnist", "swrd"), seed=0)
        >>> x = torch.rand(2, 1, 28, 28)
        >>> t.start_epoch(0); a = t(x); t.start_epoch(1); b = t(x)
        >>> t.start_epoch(0); bool(torch.equal(a, t(x))), bool(torch.equal(a, b))
        (True, False)
    """

    def __init__(self, spec: QuantizerSpec, seed: int = 0, *, threads: int | None = None):
        if not isinstance(spec, QuantizerSpec):
            raise TypeError(f"spec must be a vqdbook.quantizers.QuantizerSpec; got {type(spec).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r}")
        self.spec, self.seed, self.threads = spec, seed, threads
        self.generator: torch.Generator | None = None
        self.epoch: int | None = None
        self.seconds = 0.0

    def start_epoch(self, epoch: int) -> None:
        """Seed the generator for ``epoch`` (the draws of an epoch depend on ``(seed, epoch)`` only)."""
        self.epoch = int(epoch)
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + _QUANT_STREAM)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            raise RuntimeError("call start_epoch(epoch) before quantizing (it seeds the epoch's draws)")
        t0 = time.perf_counter()
        # clone: the quantizers compute in inference mode; training needs an ordinary tensor
        out = self.spec(x, self.generator, threads=self.threads).clone()
        self.seconds += time.perf_counter() - t0
        return out

    def params(self) -> dict:
        """The record form (what a checkpoint's configuration stores)."""
        return {"quantizer": self.spec.params(), "draws": "on-the-fly", "seed": self.seed}

    def __repr__(self):
        return f"QuantizeTransform({self.spec.label}, seed={self.seed})"


def quantized_accuracy(model, spec: QuantizerSpec, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                       *, others: dict | None = None) -> dict:
    """Accuracy of ``model`` on one seeded draw of Q(x) (f̂(Q(x)) of Section 3.5), and of ``others``
    (name -> model) on the same quantized images.

    Returns ``{"accuracy": ..., "seed": seed, "n": len(y), **{name: accuracy}}``.

    Examples::

        >>> import torch
        >>> from vqdbook.models import build_model, tquant_spec
        >>> from vqdbook.train import quantized_accuracy
        >>> r = quantized_accuracy(build_model("mnist_cnn", "mnist"), tquant_spec("mnist", "prd"),
        ...                        torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
        >>> sorted(r)
        ['accuracy', 'n', 'seed']
    """
    xq = spec(x, torch.Generator().manual_seed(seed))
    out = {"accuracy": accuracy(model, xq, y), "seed": seed, "n": len(y)}
    for name, other in (others or {}).items():
        out[name] = accuracy(other, xq, y)
    return out


def _check_quantizer(quantizer, ds, method, transform, init):
    """Checks of the Section 3.5 arguments that need no data; returns the spec (or None)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    if quantizer is None:
        return None
    if not isinstance(quantizer, QuantizerSpec):
        raise TypeError(f"quantizer must be a vqdbook.quantizers.QuantizerSpec (e.g. vqdbook.models.tquant_spec"
                        f"({ds.name!r}, 'swrd')); got {type(quantizer).__name__}")
    if quantizer.method not in TQUANT_VARIANTS:
        raise ValueError(f"quantizer.method must be one of {tuple(TQUANT_VARIANTS)}; got {quantizer.method!r}")
    if method != "natural":
        raise ValueError(f"quantizer= trains f̂ naturally on quantized images (Section 3.5); it does not "
                         f"combine with method={method!r}")
    if transform is not None:
        raise ValueError("pass either quantizer= or transform=, not both")
    quantizer.check(torch.zeros(1, ds.channels, ds.size, ds.size))
    return quantizer


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and horizontal flip (standard CIFAR augmentation)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


ADV_METHODS = ("natural", "fastat", "trades", "mart")
#: Attack settings of the baselines (the originals' MNIST ε = 0.3 and CIFAR ε = 8/255; inner PGD kept
#: short for CPU budgets: each inner step costs one more forward/backward pass per batch).
ADV_DEFAULTS = {
    ("mnist", "fastat"): dict(eps=0.3, alpha=0.375),
    ("mnist", "trades"): dict(eps=0.3, alpha=0.1, steps=5, beta=6.0),
    ("mnist", "mart"): dict(eps=0.3, alpha=0.1, steps=5, beta=6.0),
    ("cifar10", "fastat"): dict(eps=8 / 255, alpha=10 / 255),
    ("cifar10", "trades"): dict(eps=8 / 255, alpha=2 / 255, steps=7, beta=6.0),
    ("cifar10", "mart"): dict(eps=8 / 255, alpha=2 / 255, steps=7, beta=6.0),
}


def _adversarial_inputs(model, x, y, method, adv, generator):
    """Training-time adversarial inputs. fastat/mart: x′; trades: cat([x, x′]) (both are needed)."""
    eps, alpha = adv["eps"], adv["alpha"]
    was_training = model.training
    model.eval()
    try:
        if method == "fastat":
            # noise from the CPU generator that orders the data, so a run is the same on any device
            x_adv = (x + eps * (2 * torch.rand(x.shape, generator=generator) - 1).to(x.device)).clamp(0, 1)
            x_adv.requires_grad_(True)
            grad = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)[0]
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
            return x_adv.detach()
        with torch.no_grad():
            p_clean = F.softmax(model(x), 1)
        x_adv = (x + 0.001 * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)
        for _ in range(adv["steps"]):
            x_adv.requires_grad_(True)
            if method == "trades":
                loss = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
            else:
                loss = F.cross_entropy(model(x_adv), y)
            grad = torch.autograd.grad(loss, x_adv)[0]
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
        return torch.cat([x, x_adv.detach()]) if method in ("trades", "mart") else x_adv.detach()
    finally:
        model.train(was_training)


def _ramped(adv: dict, step: int, steps_per_epoch: int) -> dict:
    """``adv`` with ε and α scaled by ``min(1, step / (eps_ramp_epochs * steps_per_epoch))``."""
    ramp = adv.get("eps_ramp_epochs", 0)
    if not ramp:
        return adv
    frac = min(1.0, step / (ramp * steps_per_epoch))
    return {**adv, "eps": adv["eps"] * frac, "alpha": adv["alpha"] * frac}


def _loss(method, model, out, xb, y, adv):
    """Training loss. ``out`` = logits of the inputs the method trains on (x′ for trades/mart)."""
    if method in ("natural", "fastat"):
        return F.cross_entropy(out, y)
    n = len(y)
    logits_clean = model(xb[:n])
    if method == "trades":  # Zhang et al. 2019, eq. (5): CE(x) + β KL(f(x) || f(x′))
        kl = F.kl_div(F.log_softmax(out, 1), F.softmax(logits_clean, 1), reduction="batchmean")
        return F.cross_entropy(logits_clean, y) + adv["beta"] * kl
    # MART (Wang et al. 2020): BCE(f(x′), y) + β · KL(f(x) || f(x′)) · (1 − p_y(x))
    p_adv = F.softmax(out, 1)
    top2 = torch.argsort(p_adv, 1)[:, -2:]
    other = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = F.cross_entropy(out, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), other)
    p_clean = F.softmax(logits_clean, 1)
    true_prob = p_clean.gather(1, y[:, None]).squeeze(1)
    # KL(p_clean || p_adv) per row, written out rather than F.kl_div: kl_div's gradient with respect
    # to a target probability that underflowed to exactly 0 is log(0) = -inf, and -inf times the
    # softmax Jacobian's 0 is NaN (it ended a run within 100 steps once the net became confident)
    kl_rows = (p_clean * (torch.log(p_clean.clamp_min(1e-30)) - torch.log(p_adv + 1e-12))).sum(1)
    kl = (kl_rows * (1.0000001 - true_prob)).mean()
    return bce + adv["beta"] * kl


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(dataset: str, arch: str, *, epochs: int | None = None, batch_size: int | None = None,
          lr: float | None = None, weight_decay: float | None = None, augment: bool | None = None,
          momentum: float = 0.9, seed: int = 0, n_train: int | None = None, variant: str | None = None,
          transform=None, device: str = "cpu", out_dir: Path | None = None,
          checkpoint_dir: Path | None = None, progress: bool = True, stop_after: int | None = None,
          n_test: int | None = None, precision: str = "fp32", method: str = "natural",
          adv: dict | None = None, grad_clip: float | None = None, notes: str = "",
          quantizer: QuantizerSpec | None = None, frozen_draw: bool = False, init: str | None = None) -> dict:
    """Train ``arch`` on ``dataset``'s training split and write weights + a model card.

    SGD with Nesterov momentum and a one-cycle LR schedule, cross-entropy loss. Checkpoints go to
    ``checkpoint_dir`` after every epoch; a later call with the same arguments resumes from there.

    Args:
        n_train: train on a stratified subset of this size (tests, quick runs).
        variant: suffix of the output name (``<dataset>_<arch>_<variant>``).
        transform: callable applied to each training batch after augmentation (under ``no_grad``; its
            time per epoch goes to the history's ``seconds_transform``); if it has
            ``start_epoch(epoch)``, that is called before each epoch, and ``params()``, if present,
            is its record form in the checkpoint's configuration. ``quantizer=`` builds one.
        stop_after: stop (with a checkpoint) after this many epochs in total: simulates a kill.
        precision: ``"fp32"`` or ``"bf16"`` (autocast for forward/backward; about 2x faster on
            CPUs with AVX512-BF16; weights and optimizer stay float32).
        method: ``"natural"`` (the paper's f), or an adversarial-training baseline of Tables 1–3:
            ``"fastat"`` (Wong et al. 2020: FGSM from a random start, step 1.25ε), ``"trades"``
            (Zhang et al. 2019: CE + β·KL(f(x) ‖ f(x′)), x′ by PGD on the KL) or ``"mart"`` (Wang et
            al. 2020: boosted CE on x′ + β·KL·(1 − p_y(x))).
        adv: attack settings for those: ``eps``, ``steps``, ``alpha``, ``beta`` (defaults in
            :data:`ADV_DEFAULTS`, on the [0, 1] scale), and ``eps_ramp_epochs``: grow ε (and α)
            linearly from 0 over this many epochs (default 0: full ε from the first step; MNIST
            MART from scratch at ε = 0.3 does not leave chance level without a ramp).
        grad_clip: clip the gradient's global L2 norm to this value before each step (default: no
            clipping); recorded in the card's config.
        n_test: measure the card's accuracy on a stratified test subset (default: the full test set).
        quantizer: train on images quantized by this :class:`~vqdbook.quantizers.QuantizerSpec` (pRD or
            swRD; Section 3.5's t-pRD / t-swRD): on the fly by default (:class:`QuantizeTransform`,
            fresh draws every batch), or one seeded draw of the whole training set with
            ``frozen_draw=True`` (see the module docstring for the two readings). ``variant``
            defaults to :func:`vqdbook.models.tquant_variant` (``"t-prd"``, ``"t-swrd"`` for the
            paper's settings). The card also holds the accuracy on one seeded draw of the quantized
            test set, of this model and of the natural classifier on the same images.
        init: ``None`` (fresh weights) or ``"natural"``: start from the committed natural
            classifier of ``dataset`` / ``arch`` and fine-tune; then ``epochs`` and ``lr`` default to
            :data:`FINETUNE` instead of :data:`DEFAULTS`. A named ``variant`` (or ``quantizer``) is
            required, so the natural weights are never overwritten by their own fine-tuning.

    Examples::

        >>> from vqdbook.models import tquant_spec
        >>> from vqdbook.train import train
        >>> card = train("mnist", "mnist_cnn", quantizer=tquant_spec("mnist", "swrd"),
        ...              init="natural")                                  # doctest: +SKIP
        >>> card["variant"], card["quantizer"]["k"]                       # doctest: +SKIP
        ('t-swrd', 2)

    Returns:
        The model card (also written as JSON next to the weights), or a partial-status dict when
        ``stop_after`` ended the run early.
    """
    ds = spec(dataset)
    cfg = dict(DEFAULTS[ds.name])
    quantizer = _check_quantizer(quantizer, ds, method, transform, init)
    if init is not None:
        cfg.update(FINETUNE[ds.name])
    if quantizer is not None and variant is None:
        variant = tquant_variant(quantizer, ds.name, frozen=frozen_draw)
    if frozen_draw and quantizer is None:
        raise ValueError("frozen_draw=True needs quantizer= (it is one fixed quantized copy of the training set)")
    if init is not None and variant is None:
        raise ValueError(f"init={init!r} fine-tunes the committed natural weights: name a variant "
                         f"(variant=...), or they would be overwritten by their own fine-tuning")
    for key, val in dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         augment=augment).items():
        if val is not None:
            cfg[key] = val
    if not isinstance(cfg["epochs"], int) or cfg["epochs"] < 1:
        raise ValueError(f"epochs must be an int >= 1; got {cfg['epochs']!r}")
    if method not in ADV_METHODS:
        raise ValueError(f"method must be one of {ADV_METHODS}; got {method!r}")
    adv = {**ADV_DEFAULTS.get((ds.name, method), {}), **(adv or {})} if method != "natural" else {}
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float))
                                  or not math.isfinite(grad_clip) or grad_clip <= 0):
        raise ValueError(f"grad_clip must be a finite number > 0 or None; got {grad_clip!r}")
    cfg.update(method=method, adv=adv, precision=precision, dataset=ds.name, arch=arch, momentum=momentum, seed=seed,
               n_train=n_train, variant=variant,
               transform=None if transform is None else repr(transform))
    if grad_clip is not None:   # only when set, so the configs of earlier checkpoints still match
        cfg["grad_clip"] = float(grad_clip)
    if transform is not None and hasattr(transform, "params"):
        cfg["transform"] = transform.params()
    if quantizer is not None:
        cfg["quantizer"] = quantizer.params()
        cfg["draws"] = "frozen" if frozen_draw else "on-the-fly"
    out_dir = Path(out_dir or WEIGHTS_DIR)
    checkpoint_dir = Path(checkpoint_dir or CHECKPOINT_DIR)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stem = model_stem(ds.name, arch, variant)
    ckpt_path = checkpoint_dir / f"{stem}.ckpt"

    x, y = load_dataset(ds.name, "train", n_train, seed=seed)
    init_info = None   # after the data, so a missing dataset is the first error reported
    if init == "natural":
        natural = load_card(ds.name, arch)
        init_info = {"from": "natural", "weights": natural["weights"], "sha256": natural["sha256"]}
        cfg["init"] = init_info
    steps_per_epoch = math.ceil(len(y) / cfg["batch_size"])
    frozen_seconds = None
    if quantizer is not None and frozen_draw:   # one seeded draw of the whole set, redone on resume
        if progress:
            print(f"quantizing the {len(y)} training images once ({quantizer.label}, frozen draw)", flush=True)
        t0 = time.perf_counter()
        x = quantizer(x, torch.Generator().manual_seed(seed * 100_003 + _FROZEN_STREAM)).clone()
        frozen_seconds = time.perf_counter() - t0
    elif quantizer is not None:
        transform = QuantizeTransform(quantizer, seed)
    torch.manual_seed(seed)
    model = build_model(arch, ds.name)
    if init == "natural":
        model.load_state_dict(load_pretrained(ds.name, arch).state_dict())
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=momentum, nesterov=True,
                          weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps_per_epoch,
                                                pct_start=0.15, anneal_strategy="linear", div_factor=10,
                                                final_div_factor=100)
    start_epoch, history, train_time = 0, [], 0.0
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        # checkpoints written before the baselines existed lack these keys: they were natural runs
        stored = {"method": "natural", "adv": {}, **ck["config"]}
        if stored != json.loads(json.dumps(cfg)):
            raise RuntimeError(f"checkpoint {ckpt_path} was made with another configuration "
                               f"({ck['config']}); delete it to start afresh")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        start_epoch, history, train_time = ck["epoch"], ck["history"], ck["train_time_s"]
        if progress:
            print(f"resuming {stem} after epoch {start_epoch}/{cfg['epochs']}")

    from tqdm.auto import tqdm

    for epoch in range(start_epoch, cfg["epochs"]):
        if stop_after is not None and epoch >= stop_after:
            return {"status": "stopped", "epoch": epoch, "checkpoint": str(ckpt_path)}
        t0 = time.time()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        t_transform = 0.0
        if hasattr(transform, "start_epoch"):
            transform.start_epoch(epoch)
        perm = torch.randperm(len(y), generator=g)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{stem} epoch {epoch + 1}/{cfg['epochs']}",
                   disable=not progress, leave=False, mininterval=5)
        for i in bar:
            idx = perm[i * cfg["batch_size"]:(i + 1) * cfg["batch_size"]]
            xb, yb = x[idx], y[idx]
            if cfg["augment"]:
                xb = augment_batch(xb, g)
            if transform is not None:
                tt = time.perf_counter()
                with torch.no_grad():
                    xb = transform(xb)
                t_transform += time.perf_counter() - tt
            xb, yb = xb.to(device), yb.to(device)
            if method != "natural":
                xb = _adversarial_inputs(model, xb, yb, method, _ramped(adv, epoch * steps_per_epoch + i + 1,
                                                                       steps_per_epoch), g)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = model(xb[len(yb):] if method in ("trades", "mart") else xb)
                loss = _loss(method, model, out, xb, yb, adv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            # the LR this step used; after the final step OneCycleLR extrapolates one step past its end
            lr_used = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        dt = time.time() - t0
        train_time += dt
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
                        "lr_end": lr_used, "seconds": dt})
        if transform is not None:
            history[-1]["seconds_transform"] = t_transform
        _atomic_save({"config": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                      "history": history, "train_time_s": train_time}, ckpt_path)
        if progress:
            print(f"{stem} epoch {epoch + 1}/{cfg['epochs']}: loss {loss_sum / seen:.4f} "
                  f"train acc {correct / seen:.4f} ({dt:.0f} s)", flush=True)

    # The card reports the accuracy of the fp16 weights as stored (on the full test set by default).
    out_dir.mkdir(parents=True, exist_ok=True)
    wpath = out_dir / weights_path(ds.name, arch, variant).name
    sha = save_weights(model, wpath)
    card = {"name": stem, "dataset": ds.name, "arch": arch, "variant": variant, "epochs": cfg["epochs"],
            "n_train": len(y), "config": cfg, "history": history, "train_time_s": round(train_time, 1),
            "weights": wpath.name, "sha256": sha, "storage": "float16 state dict",
            "n_params": sum(p.numel() for p in model.parameters()), "notes": notes,
            **provenance(device)}
    if init_info is not None:
        card["init"] = init_info
    if quantizer is not None:
        card.update(quantizer=quantizer.params(), quantizer_label=quantizer.label, draws=cfg["draws"],
                    lr=cfg["lr"])
        if frozen_seconds is not None:
            card["frozen_draw_seconds"] = round(frozen_seconds, 1)
    cpath = out_dir / card_path(ds.name, arch, variant).name
    cpath.write_text(json.dumps(card, indent=1))
    if out_dir == WEIGHTS_DIR:
        net = load_pretrained(ds.name, arch, variant)
    else:
        net = build_model(arch, ds.name)
        state = torch.load(wpath, weights_only=True)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        net.eval()
    xt, yt = load_dataset(ds.name, "test", n_test)
    card["test_accuracy"] = accuracy(net, xt, yt)
    card["n_test"] = len(yt)
    if quantizer is not None:
        # f̂(Q(x)) on one seeded draw of the quantized test set, and the natural f on the same images
        try:
            others = {"natural_accuracy": load_pretrained(ds.name, arch)}
        except FileNotFoundError:
            others = {}
        q = quantized_accuracy(net, quantizer, xt, yt, seed, others=others)
        card["quantized_test_accuracy"] = q["accuracy"]
        card["natural_quantized_test_accuracy"] = q.get("natural_accuracy")
        card["quantized_test_seed"] = seed
    cpath.write_text(json.dumps(card, indent=1))
    if progress:
        print(f"{stem}: test accuracy {card['test_accuracy']:.4f} on {len(yt)} images; card {cpath}")
        if quantizer is not None:
            nat = card["natural_quantized_test_accuracy"]
            print(f"{stem}: on {quantizer.label}-quantized test images {card['quantized_test_accuracy']:.4f}"
                  + ("" if nat is None else f" (natural f: {nat:.4f})"))
    return card
