"""Attacks: L∞ PGD (the paper's protocol), APGD (Croce & Hein 2020), both with batched EOT, and the
:class:`AttackSpec` that names an attack and its budget in records.

Threat models. The paper's (Sec. 3.3, Fig. 3) is **oblivious** (gray-box): the attacker knows the
classifier f and runs PGD on f alone; the defender then classifies Q(x′). :func:`paper_pgd` builds
it. An **adaptive** attacker also knows Q and attacks f∘Q: wrap it as ``Defended(net, Q,
bpda=True)`` (identity gradient through Q, the backward-pass differentiable approximation of
Athalye et al. 2018) and average gradients over random draws of Q (``eot_samples``, expectation
over transformation, Athalye et al. 2018). EOT is batched: the ``m`` draws of one step go through
the model as one batch of ``B·m`` images (``repeat_interleave``), so the quantizer sees one large
batch instead of ``m`` small ones. The gradient-free check is :class:`vqdbook.square.Square`.

Conventions follow torchattacks: inputs in [0, 1], the model normalizes internally, ``attack(x, y)``
returns ``x_adv`` of the same shape, and the model's train/eval mode is restored afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import paper
from .checks import RandomizedDefenseWarning, ZeroGradientWarning, check_randomized, check_zero_gradients
from .validation import check_int, check_real

__all__ = ["PGD", "APGD", "AttackSpec", "paper_pgd", "strong_pgd", "eot_gradient",
           "check_xy", "STRONG_PGD", "CPU_CHUNK",
           "ZeroGradientWarning", "RandomizedDefenseWarning"]

#: Images per forward pass on a CPU by default (see ``PGD(chunk_size=...)``): a chunk holds
#: ``max(1, CPU_CHUNK // eot_samples)`` images, whose ``eot_samples`` copies make one batch of about
#: ``CPU_CHUNK`` images, with or without EOT (small batches stay in cache).
CPU_CHUNK = 64


def check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise unless ``x`` is a finite float batch ``(B, C, H, W)`` in [0, 1] and ``y`` its integer labels ``(B,)``."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be torch tensors; got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor in [0, 1]; got {x.dtype}")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must be (B,) with B = len(x) = {len(x)}; got shape {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must hold integer labels; got {y.dtype}")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite (no NaN or inf), with values in [0, 1]")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"x must lie in [0, 1]; got range [{x.min().item():.3g}, {x.max().item():.3g}]")


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
        raise ValueError(f"eps must be a number in [0, 1] (the [0,1] pixel scale); got {eps!r}")
    return float(eps)


def _dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits-ratio loss, per row (higher = closer to misclassified)."""
    srt, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = (srt[:, -1] == z_y).float()
    z_other = srt[:, -2] * top_is_y + srt[:, -1] * (1 - top_is_y)
    return -(z_y - z_other) / (srt[:, -1] - srt[:, -3] + 1e-12)


LOSSES = {"ce": lambda z, y: F.cross_entropy(z, y, reduction="none"), "dlr": _dlr_loss}


def eot_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1, loss: str = "ce"):
    """The expectation-over-transformation gradient of ``loss`` at ``x``, batched.

    The ``m = eot_samples`` copies of each image go through ``model`` as one batch of ``B·m``
    images (each copy gets its own draw of a randomized model's randomness), the per-draw losses
    are summed and differentiated once. Returns ``(grad (B, ...), mean loss per image (B,),
    mean logits per image (B, classes))``. ``grad`` is zero where no gradient path exists (e.g. a
    quantizer without BPDA).
    """
    m = eot_samples
    x = x.detach().requires_grad_(True)
    xr = x if m == 1 else x.repeat_interleave(m, dim=0)
    yr = y if m == 1 else y.repeat_interleave(m)
    logits = model(xr)
    per = LOSSES[loss](logits, yr)
    if per.requires_grad:
        g = torch.autograd.grad(per.sum(), x, allow_unused=True)[0]
    else:
        g = None
    grad = torch.zeros_like(x) if g is None else g
    B = len(x)
    return grad.detach(), per.detach().view(B, m).mean(1), logits.detach().view(B, m, -1).mean(1)


class _Attack:
    """Shared plumbing: argument checks, eval mode restored, chunks of images, the randomized-model check."""

    def __init__(self, model, eps, eot_samples, generator, check, chunk_size):
        self.model = model
        self.eps = _check_eps(eps)
        self.eot_samples = check_int(eot_samples, "eot_samples", 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator, self.check = generator, bool(check)
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", 1)

    # kept for code that reads ``attack.net``
    @property
    def net(self):
        return self.model

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_xy(x, y)
        modes = [(m, m.training) for m in self.model.modules()]   # each submodule's own mode, restored after
        self.model.eval()
        try:
            return self._attack(x.detach(), y)
        finally:
            for m, mode in modes:
                m.training = mode

    def _chunk(self, device) -> int:
        if self.chunk_size:
            return self.chunk_size
        return max(1, CPU_CHUNK // self.eot_samples) if device.type == "cpu" else 1 << 30

    def _check_labels(self, x, y):
        with torch.no_grad():
            logits = self.model(x[:1])
        if y.min() < 0 or y.max() >= logits.shape[1]:
            raise ValueError(f"labels y must be in [0, {logits.shape[1] - 1}]; got range "
                             f"[{y.min().item()}, {y.max().item()}]")
        if self.check:
            check_randomized(self.model, x[: min(len(x), 8)], self.eot_samples, stacklevel=4)

    def _random_start(self, x):
        """A uniform point of the ε-ball, drawn for the whole batch at once (the same start for any chunk size)."""
        noise = torch.rand(x.shape, generator=self.generator, device="cpu").to(x.device)
        return (x + (2 * noise - 1) * self.eps).clamp(0, 1)

    def _project(self, x_adv, x):
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)


class PGD(_Attack):
    r"""Projected gradient descent under an L∞ budget (Madry et al., 2018; the paper's attack, Sec. 3.3).

    Maximises the cross-entropy of ``model`` within :math:`\|x' - x\|_\infty \le \varepsilon`,
    :math:`x' \in [0,1]`: ``steps`` signed-gradient steps of size ``alpha``, each followed by
    projection, from a uniform random start in the ball (``random_start``).

    Threat model: whatever ``model`` is. The undefended f gives the paper's oblivious attack;
    ``Defended(f, Q, bpda=True)`` with ``eot_samples > 1`` an adaptive one (BPDA + EOT).

    Args:
        model: classifier on [0, 1] inputs returning logits (B, classes).
        eps: radius on the [0, 1] scale (the paper's CIFAR/SVHN ε = 8 is ``8/255``).
        alpha: step size; default ``eps / 10``.
        steps: iterations (≥ 1). The paper uses 40 on MNIST, 20 on CIFAR-10/SVHN.
        random_start: start from a uniform point of the ε-ball.
        eot_samples: gradients summed over this many draws of a randomized model per step (EOT),
            batched: one forward pass of ``B·eot_samples`` images.
        generator: torch.Generator for the random start (reproducibility).
        check: warn on zero gradients or a randomized model attacked without EOT
            (:mod:`vqdbook.checks`).
        restarts: independent runs from fresh random starts (Madry et al.); per image the first
            run whose ``x_adv`` ``model`` misclassifies is kept (the last run where none does).
        chunk_size: images attacked together. Images are attacked independently, so this changes
            speed, not the attack. ``None`` (default): ``CPU_CHUNK // eot_samples`` images on a
            CPU and the whole batch on a GPU.

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

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float | None = None, steps: int = 10,
                 random_start: bool = True, *, eot_samples: int = 1, generator: torch.Generator | None = None,
                 check: bool = True, chunk_size: int | None = None, restarts: int = 1):
        super().__init__(model, eps, eot_samples, generator, check, chunk_size)
        self.steps = check_int(steps, "steps", 1)
        alpha = self.eps / 10 if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"alpha must be a number >= 0; got {alpha!r}")
        self.alpha = float(alpha)
        self.restarts = check_int(restarts, "restarts", 1)
        if self.restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True (without it every run is the same)")
        self.random_start = bool(random_start)

    def __repr__(self):
        return (f"PGD(eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, "
                f"random_start={self.random_start}, eot_samples={self.eot_samples}, restarts={self.restarts})")

    def _attack(self, x, y):
        if self.eps == 0 or len(x) == 0:
            return x.clone()
        self._check_labels(x, y)
        best = None
        for r in range(self.restarts):
            x_adv = self._run(x, y, warn=r == 0)
            if self.restarts == 1:
                return x_adv
            with torch.no_grad():
                fooled = self.model(x_adv).argmax(1) != y
            if best is None:
                best, done = x_adv, fooled
            else:   # keep the first successful run of each image
                take = fooled & ~done
                best[take] = x_adv[take]
                done |= fooled
        return best

    def _run(self, x, y, warn=True):
        """One PGD run from a fresh random start."""
        x_adv = self._random_start(x) if self.random_start else x.clone()
        chunk = self._chunk(x.device)
        out, first_grads = [], []
        for i in range(0, len(x), chunk):
            xa, g0 = self._steps(x[i:i + chunk], y[i:i + chunk], x_adv[i:i + chunk])
            out.append(xa)
            first_grads.append(g0)
        if self.check and warn:
            check_zero_gradients(torch.cat(first_grads), stacklevel=4)
        return out[0] if len(out) == 1 else torch.cat(out)

    def _steps(self, x, y, x_adv):
        """The PGD iterations for one chunk; also returns the first step's gradient (for the checks)."""
        g0 = None
        for step in range(self.steps):
            grad, _, _ = eot_gradient(self.model, x_adv, y, self.eot_samples)
            if step == 0:
                g0 = grad
            x_adv = self._project(x_adv + self.alpha * grad.sign(), x)
        return x_adv.detach().contiguous(), g0


class APGD(_Attack):
    r"""Auto-PGD (Croce & Hein, ICML 2020), L∞, with batched EOT: the attack AutoAttack runs first.

    PGD whose step size needs no tuning: it starts at ``2ε``, uses momentum (``0.75``) and halves
    the step at checkpoints (after 22% of the iterations, then at shrinking intervals of at least
    6%) for each image whose loss rose in fewer than ``rho`` of the steps since the last checkpoint,
    or did not improve at all since then; the iterate then restarts from the best point found.
    ``loss="ce"`` (cross-entropy) or ``"dlr"`` (the difference-of-logits ratio, invariant to the
    logits' scale). With ``eot_samples = m`` every step averages the loss over ``m`` draws of a
    randomized model (one batch of ``B·m`` images), as AutoAttack's randomized version does.

    Returns per image the last iterate at which the model (its logits averaged over the ``m``
    draws) misclassified, or else the iterate with the highest loss. With ``restarts > 1`` the
    runs start from fresh random points and an image keeps the first run that fooled it.

    Args:
        model: classifier on [0, 1] inputs returning logits; for the adaptive threat model
            ``Defended(f, Q, bpda=True)``.
        eps: L∞ radius on [0, 1]. steps: iterations (each costs ``eot_samples`` forward/backward
        passes). loss: ``"ce"`` or ``"dlr"``. eot_samples, generator, check, chunk_size, restarts:
        as :class:`PGD`. rho: the checkpoint's success fraction (0.75). stop_when_fooled: an image
        stops (no more forward passes) once the EOT-averaged model misclassifies it (default; the
        saving that makes EOT affordable on a CPU: fooled images cost nothing more).

    Shapes: ``x`` (B, C, H, W) float in [0, 1], ``y`` (B,) int64 → ``x_adv`` like ``x``.

    Examples::

        >>> import torch
        >>> from vqdbook.attacks import APGD
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> x_adv = APGD(net, eps=0.1, steps=20, generator=torch.Generator().manual_seed(0))(x, y)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all()), bool((x_adv >= 0).all() and (x_adv <= 1).all())
        (True, True)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, *, loss: str = "ce",
                 eot_samples: int = 1, restarts: int = 1, rho: float = 0.75, generator: torch.Generator | None = None,
                 check: bool = True, chunk_size: int | None = None, stop_when_fooled: bool = True):
        super().__init__(model, eps, eot_samples, generator, check, chunk_size)
        self.stop_when_fooled = bool(stop_when_fooled)
        self.steps = check_int(steps, "steps", 1)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
        self.loss = loss
        self.restarts = check_int(restarts, "restarts", 1)
        self.rho = check_real(rho, "rho", low=0.0, high=1.0)

    def __repr__(self):
        return (f"APGD(eps={self.eps:.5g}, steps={self.steps}, loss={self.loss!r}, eot_samples={self.eot_samples}, "
                f"restarts={self.restarts})")

    def checkpoints(self) -> list[int]:
        """Iterations after which the step size may be halved (Croce & Hein's schedule)."""
        n = self.steps
        p_len, decr, p_min = max(int(0.22 * n), 1), max(int(0.03 * n), 1), max(int(0.06 * n), 1)
        out, k = [], p_len
        while k <= n:
            out.append(k)
            p_len = max(p_len - decr, p_min)
            k += p_len
        return out

    def _attack(self, x, y):
        if self.eps == 0 or len(x) == 0:
            return x.clone()
        self._check_labels(x, y)
        best, done = None, None
        for r in range(self.restarts):
            start = self._random_start(x)
            chunk = self._chunk(x.device)
            outs, fooled, g0 = [], [], []
            for i in range(0, len(x), chunk):
                xa, f, g = self._run(x[i:i + chunk], y[i:i + chunk], start[i:i + chunk])
                outs.append(xa)
                fooled.append(f)
                g0.append(g)
            if self.check and r == 0:
                check_zero_gradients(torch.cat(g0), stacklevel=3)
            x_adv, f = torch.cat(outs), torch.cat(fooled)
            if best is None:
                best, done = x_adv, f
            else:
                take = f & ~done
                best[take] = x_adv[take]
                done |= f
        return best

    def _run(self, x, y, x_adv):
        """APGD on one chunk from ``x_adv``; returns (x_out, fooled mask, first gradient).

        With ``stop_when_fooled`` an image leaves the active set (no more forward passes) once the
        model, averaged over the EOT draws, misclassifies it; its output is that iterate.
        """
        B = len(x)
        shape = (B,) + (1,) * (x.dim() - 1)
        step = torch.full(shape, 2 * self.eps, dtype=x.dtype, device=x.device)
        grad, loss, logits = eot_gradient(self.model, x_adv, y, self.eot_samples, self.loss)
        g0 = grad
        best_loss, x_best, grad_best = loss.clone(), x_adv.clone(), grad.clone()
        fooled = logits.argmax(1) != y
        x_found = x_adv.clone()
        x_prev = x_adv.clone()
        checkpoints = set(self.checkpoints())
        last_ckpt, n_incr = 0, torch.zeros(B, device=x.device)
        prev_loss = loss.clone()
        best_at_ckpt = best_loss.clone()
        reduced_last = torch.ones(B, dtype=torch.bool, device=x.device)
        a = 0.75
        for k in range(self.steps):
            act = ~fooled if self.stop_when_fooled else torch.ones_like(fooled)
            if not bool(act.any()):
                break
            z = self._project(x_adv + step * grad.sign(), x)
            if k == 0:
                x_new = z
            else:
                x_new = self._project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x)
            x_prev, x_adv = x_adv, x_new
            ai = act.nonzero().squeeze(1)
            g, lo, lg = eot_gradient(self.model, x_adv[ai], y[ai], self.eot_samples, self.loss)
            grad[ai] = g
            loss = prev_loss.clone()
            loss[ai] = lo
            now_fooled = torch.zeros_like(fooled)
            now_fooled[ai] = lg.argmax(1) != y[ai]
            x_found[now_fooled] = x_adv[now_fooled]
            fooled |= now_fooled
            n_incr += (loss > prev_loss).float()
            prev_loss = loss
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            x_best[better] = x_adv[better]
            grad_best[better] = grad[better]
            if k + 1 in checkpoints:
                h = k + 1 - last_ckpt
                oscillating = n_incr < self.rho * h
                stalled = ~reduced_last & (best_at_ckpt >= best_loss)
                reduce = oscillating | stalled
                step[reduce] /= 2
                x_adv[reduce] = x_best[reduce]
                grad[reduce] = grad_best[reduce]
                reduced_last = reduce
                best_at_ckpt = best_loss.clone()
                n_incr.zero_()
                last_ckpt = k + 1
        out = torch.where(fooled.view(shape), x_found, x_best)
        return out.detach().contiguous(), fooled, g0


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


# --------------------------------------------------------------------------------------------
# one description of an attack
# --------------------------------------------------------------------------------------------

#: The kinds of :class:`AttackSpec`: what each one is.
ATTACK_KINDS = {
    "pgd": "PGD with a fixed step α = alpha_over_eps·ε (Madry et al. 2018)",
    "apgd": "Auto-PGD, CE or DLR loss, step size adapted per image (Croce & Hein 2020)",
    "square": "Square Attack, score-based and gradient-free (Andriushchenko et al. 2020)",
}


@dataclass(frozen=True)
class AttackSpec:
    """One attack and its budget, described once: the form stored in records and the builder.

    ``kind`` in :data:`ATTACK_KINDS`; ``threat`` ``"oblivious"`` (the attack sees f only: the
    paper's protocol) or ``"adaptive"`` (it sees f∘Q through BPDA, with ``eot`` draws per step, or
    ``votes`` draws per query for Square); ``steps`` iterations (queries for Square);
    ``alpha_over_eps`` PGD's step; ``loss`` APGD's; ``restarts`` random starts.

    Examples::

        >>> from vqdbook.attacks import AttackSpec
        >>> a = AttackSpec("apgd", "adaptive", steps=200, eot=16)
        >>> a.label
        'APGD-CE 200×16 EOT (adaptive)'
        >>> AttackSpec.from_params(a.params()) == a
        True
    """

    kind: str
    threat: str = "adaptive"
    steps: int = 100
    eot: int = 1
    restarts: int = 1
    alpha_over_eps: float | None = None
    loss: str = "ce"
    votes: int = 1

    def __post_init__(self):
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"kind must be one of {sorted(ATTACK_KINDS)}; got {self.kind!r}")
        if self.threat not in ("oblivious", "adaptive"):
            raise ValueError(f"threat must be 'oblivious' or 'adaptive'; got {self.threat!r}")
        check_int(self.steps, "steps", 1)
        check_int(self.eot, "eot", 1)
        check_int(self.restarts, "restarts", 1)
        check_int(self.votes, "votes", 1)
        if self.kind == "pgd":
            if self.alpha_over_eps is None:
                object.__setattr__(self, "alpha_over_eps", 2.5 / self.steps)
            check_real(self.alpha_over_eps, "alpha_over_eps", positive=True)
        elif self.alpha_over_eps is not None:
            raise ValueError(f"alpha_over_eps is PGD's; {self.kind} sets its own step")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {self.loss!r}")
        if self.threat == "oblivious" and (self.eot > 1 or self.votes > 1):
            raise ValueError("an oblivious attack sees f only: eot and votes must be 1")
        if self.kind == "square" and self.eot > 1:
            raise ValueError("Square averages its scores over `votes` draws, not `eot`")
        if self.kind != "square" and self.votes > 1:
            raise ValueError("votes is Square's; gradient attacks average over `eot` draws")

    @property
    def name(self) -> str:
        """A short name for tables: ``"APGD-CE"``, ``"PGD"``, ``"Square"``."""
        return {"pgd": "PGD", "apgd": f"APGD-{self.loss.upper()}", "square": "Square"}[self.kind]

    @property
    def label(self) -> str:
        """Name, budget and threat model: ``"APGD-CE 200×16 EOT (adaptive)"``."""
        if self.kind == "square":
            budget = f"{self.steps} queries" + (f" × {self.votes} votes" if self.votes > 1 else "")
        else:
            budget = f"{self.steps}" + (f"×{self.eot} EOT" if self.eot > 1 else " steps")
        rs = f", {self.restarts} restarts" if self.restarts > 1 else ""
        return f"{self.name} {budget}{rs} ({self.threat})"

    def params(self) -> dict:
        """The record form (every field)."""
        return {"kind": self.kind, "threat": self.threat, "steps": self.steps, "eot": self.eot,
                "restarts": self.restarts, "alpha_over_eps": self.alpha_over_eps, "loss": self.loss,
                "votes": self.votes}

    @classmethod
    def from_params(cls, params: dict) -> AttackSpec:
        return cls(**params)

    def replace(self, **changes) -> AttackSpec:
        return replace(self, **changes)

    def build(self, model: nn.Module, eps: float, *, generator: torch.Generator | None = None,
              check: bool = True, chunk_size: int | None = None):
        """The attack on ``model`` at radius ``eps``: :class:`PGD`, :class:`APGD` or :class:`vqdbook.square.Square`.

        ``model`` must already be what the threat model attacks: the undefended f (oblivious) or
        ``Defended(f, Q, bpda=True)`` (adaptive; for Square the defended model with its votes).
        """
        if self.kind == "pgd":
            return PGD(model, eps=eps, alpha=eps * self.alpha_over_eps, steps=self.steps, eot_samples=self.eot,
                       restarts=self.restarts, generator=generator, check=check, chunk_size=chunk_size)
        if self.kind == "apgd":
            return APGD(model, eps=eps, steps=self.steps, loss=self.loss, eot_samples=self.eot,
                        restarts=self.restarts, generator=generator, check=check, chunk_size=chunk_size)
        from .square import Square

        return Square(model, eps=eps, n_queries=self.steps, votes=self.votes, generator=generator)
