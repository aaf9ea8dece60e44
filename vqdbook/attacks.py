"""Attacks: L∞ PGD (the paper's protocol) and its adaptive form (BPDA / straight-through + EOT).

Threat model of the paper (Sec. 3.3, Fig. 3): the attacker knows the classifier f and runs PGD on
f alone; the defender then classifies Q(x′). The quantizer is *not* attacked. This is an
**oblivious** (gray-box) protocol; :func:`paper_pgd` builds it. An adaptive attacker who also knows
Q can attack f∘Q: wrap it as ``Defended(net, Q, bpda=True)`` (identity gradient through Q, the
backward-pass differentiable approximation of Athalye et al. 2018) and average gradients over
random draws of Q (``eot_samples``, expectation over transformation).

Conventions follow torchattacks: inputs in [0, 1], the model normalizes internally, ``attack(x, y)``
returns ``x_adv`` of the same shape, and the model's train/eval mode is restored afterwards.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import paper
from .validation import check_int

__all__ = ["PGD", "paper_pgd", "strong_pgd", "STRONG_PGD", "CPU_CHUNK", "ZeroGradientWarning",
           "RandomizedDefenseWarning"]


class ZeroGradientWarning(UserWarning):
    """The loss gradient w.r.t. the input is zero for many inputs: PGD cannot make progress."""


class RandomizedDefenseWarning(UserWarning):
    """The attacked model is stochastic: single-draw gradients are noisy; use EOT."""


#: Images attacked together on a CPU by default (see ``PGD(chunk_size=...)``).
CPU_CHUNK = 64


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor in [0, 1]; got {x.dtype}")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must be (B,) with B = len(x) = {len(x)}; got shape {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must hold integer labels; got {y.dtype}")
    if len(x) and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must lie in [0, 1]; got range [{x.min().item():.3g}, {x.max().item():.3g}]")


class PGD:
    r"""Projected gradient descent under an L∞ budget (Madry et al., 2018; the paper's attack, Sec. 3.3).

    Maximises the cross-entropy of ``net`` within :math:`\|x' - x\|_\infty \le \varepsilon`,
    :math:`x' \in [0,1]`: ``steps`` signed-gradient steps of size ``alpha``, each followed by
    projection, from a uniform random start in the ball (``random_start``).

    Args:
        net: classifier on [0, 1] inputs returning logits (B, classes).
        eps: radius on the [0, 1] scale (the paper's CIFAR/SVHN ε = 8 is ``8/255``).
        alpha: step size; default ``eps / 10``.
        steps: iterations (≥ 1). The paper uses 40 on MNIST, 20 on CIFAR-10/SVHN.
        random_start: start from a uniform point of the ε-ball.
        eot_samples: gradients averaged over this many forward passes per step (EOT; for
            randomized models such as ``Defended``).
        generator: torch.Generator for the random start (reproducibility).
        check: warn on zero gradients or a randomized model (auto-attack style checks).
        restarts: independent runs from fresh random starts (Madry et al.); per image the first
            run whose ``x_adv`` ``net`` misclassifies is kept (the last run where none does).
        chunk_size: images attacked together. Images are attacked independently, so this changes
            speed, not the attack. ``None`` (default): :data:`CPU_CHUNK` images on a CPU (small
            batches stay in cache; ``vqdbook bench table1`` times the attack) and the whole
            batch on a GPU.

    Shapes: ``x`` (B, C, H, W) float in [0, 1], ``y`` (B,) int64 → ``x_adv`` like ``x``.

    Examples::

        >>> import torch
        >>> from vqdbook import PGD
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> atk = PGD(net, eps=0.1, alpha=0.01, steps=20, generator=torch.Generator().manual_seed(0))
        >>> x_adv = atk(x, y)
        >>> x_adv.shape, bool(((x_adv - x).abs() <= 0.1 + 1e-6).all()), net.training
        (torch.Size([8, 1, 28, 28]), True, False)
    """

    def __init__(self, net: nn.Module, eps: float = 8 / 255, alpha: float | None = None, steps: int = 10,
                 random_start: bool = True, *, eot_samples: int = 1, generator: torch.Generator | None = None,
                 check: bool = True, chunk_size: int | None = None, restarts: int = 1):
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
            raise ValueError(f"eps must be a number in [0, 1] (the [0,1] pixel scale); got {eps!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {steps!r}")
        alpha = eps / 10 if alpha is None else alpha
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"alpha must be a number >= 0; got {alpha!r}")
        if not isinstance(eot_samples, int) or eot_samples < 1:
            raise ValueError(f"eot_samples must be an int >= 1; got {eot_samples!r}")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", 1)
        restarts = check_int(restarts, "restarts", 1)
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True (without it every run is the same)")
        self.restarts = restarts
        self.net, self.eps, self.alpha, self.steps = net, float(eps), float(alpha), steps
        self.random_start, self.eot_samples, self.generator, self.check = random_start, eot_samples, generator, check

    def __repr__(self):
        return (f"PGD(eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, "
                f"random_start={self.random_start}, eot_samples={self.eot_samples}, restarts={self.restarts})")

    def _grad(self, x_adv, y):
        grad = torch.zeros_like(x_adv)
        for _ in range(self.eot_samples):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(self.net(x_adv), y, reduction="sum")
            g = torch.autograd.grad(loss, x_adv, allow_unused=True)[0] if loss.requires_grad else None
            if g is not None:  # None: no path from the input to the loss (e.g. a quantizer under no_grad)
                grad += g
            x_adv = x_adv.detach()
        return grad

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_xy(x, y)
        was_training = self.net.training
        self.net.eval()
        try:
            return self._attack(x, y)
        finally:
            self.net.train(was_training)

    def _attack(self, x, y):
        x = x.detach()
        if self.eps == 0 or len(x) == 0:
            return x.clone()
        with torch.no_grad():
            logits = self.net(x)
        if y.min() < 0 or y.max() >= logits.shape[1]:
            raise ValueError(f"labels y must be in [0, {logits.shape[1] - 1}]; got range "
                             f"[{y.min().item()}, {y.max().item()}]")
        if self.check:
            with torch.no_grad():
                if not torch.allclose(logits, self.net(x), atol=1e-5):
                    warnings.warn("the model gives different outputs for the same input (a randomized "
                                  "defense): single-draw gradients are noisy. Use eot_samples > 1, and "
                                  "report results over several seeds.", RandomizedDefenseWarning, stacklevel=3)
        best = None
        for r in range(self.restarts):
            x_adv = self._run(x, y, warn=r == 0)
            if self.restarts == 1:
                return x_adv
            with torch.no_grad():
                fooled = self.net(x_adv).argmax(1) != y
            if best is None:
                best, done = x_adv, fooled
            else:   # keep the first successful run of each image
                take = fooled & ~done
                best[take] = x_adv[take]
                done |= fooled
        return best

    def _run(self, x, y, warn=True):
        """One PGD run from a fresh random start."""
        x_adv = x.clone()
        if self.random_start:   # drawn for the whole batch at once: the same start for any chunk_size
            noise = torch.rand(x.shape, generator=self.generator, device="cpu").to(x.device)
            x_adv = (x_adv + (2 * noise - 1) * self.eps).clamp(0, 1)
        chunk = self.chunk_size or (CPU_CHUNK if x.device.type == "cpu" else len(x))
        out, zero = [], 0
        for i in range(0, len(x), chunk):
            xa, n_zero = self._steps(x[i:i + chunk], y[i:i + chunk], x_adv[i:i + chunk])
            out.append(xa)
            zero += n_zero
        if self.check and warn and zero > 0.1 * len(x):
            warnings.warn(f"the input gradient is exactly zero for {100 * zero / len(x):.0f}% of the inputs: "
                          "PGD cannot move them (gradient masking, e.g. a non-differentiable "
                          "quantizer). Attack the defense with BPDA (Defended(..., bpda=True)) and "
                          "EOT, or use a gradient-free attack.", ZeroGradientWarning, stacklevel=4)
        return out[0] if len(out) == 1 else torch.cat(out)

    def _steps(self, x, y, x_adv):
        """The PGD iterations for one chunk; also returns how many inputs had a zero first gradient."""
        n_zero = 0
        for step in range(self.steps):
            grad = self._grad(x_adv, y)
            if step == 0:
                n_zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
            x_adv = x_adv.detach() + self.alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
        return x_adv.detach().contiguous(), n_zero


#: A stronger PGD than the paper's, to check that its numbers are not an artefact of a weak
#: attack (auto-attack's advice): 100 steps of α = ε/40 (α·steps = 2.5ε, Madry et al.'s rule)
#: from 3 random starts, per image the first start that succeeds.
STRONG_PGD = {"steps": 100, "alpha_over_eps": 1 / 40, "restarts": 3}


def strong_pgd(net: nn.Module, eps: float, **kwargs) -> PGD:
    """:data:`STRONG_PGD` at radius ``eps`` (on [0, 1]), the same for every dataset."""
    p = STRONG_PGD
    return PGD(net, eps=eps, alpha=eps * p["alpha_over_eps"], steps=p["steps"], restarts=p["restarts"], **kwargs)


def paper_pgd(net: nn.Module, dataset: str, eps: float, **kwargs) -> PGD:
    """The paper's PGD protocol for ``dataset`` at radius ``eps`` (on [0, 1]; CIFAR ε=8 → 8/255):
    MNIST PGD40 with α = ε/20; CIFAR-10 and SVHN PGD20 with α = ε/10 (Sec. 4.1,
    :data:`vqdbook.paper.PGD`). The threat model is the paper's: pass the undefended ``net``
    (oblivious attacker), or ``Defended(net, Q, bpda=True)`` with ``eot_samples`` for an adaptive one.

    Examples::

        >>> import torch
        >>> from vqdbook import paper_pgd
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> x_adv = paper_pgd(net, "cifar10", eps=8 / 255, generator=torch.Generator().manual_seed(0))(x, y)
        >>> bool(((x_adv - x).abs() <= 8 / 255 + 1e-6).all())
        True
    """
    from .data import spec

    p = paper.PGD[spec(dataset).name]
    return PGD(net, eps=eps, alpha=eps * p["alpha_over_eps"], steps=p["steps"], **kwargs)
