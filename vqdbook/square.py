r"""Square Attack (L∞): a score-based, gradient-free black-box attack, the check for gradient masking.

Reference: M. Andriushchenko, F. Croce, N. Flammarion and M. Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020 (arXiv 1912.00049), Algorithm 1 with the
L∞ proposal of Algorithm 2; the authors' code is ``square_attack_linf`` in
github.com/max-andr/square-attack, which this module follows where the paper leaves a detail open.

Threat model: **score-based black box**. The attacker sends inputs of its choice and reads the
model's output scores (logits, probabilities or vote fractions); it uses no gradient and needs no
knowledge of the model's insides. Given the defended model f∘Q (``Defended(net, Q)``) it attacks
the defense end to end, Q included, as an adaptive attacker. Because it never differentiates, a
non-differentiable or randomized quantizer cannot hide the loss landscape from it: if Square breaks
f∘Q where PGD (with BPDA and EOT, :mod:`vqdbook.attacks`) does not, the gradient-based robust
accuracy was inflated by gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating
adversarial robustness"). Each query of a randomized model sees fresh randomness; ``votes``
averages the scores of that many independent draws per candidate, the score-based analogue of EOT.

Conventions follow torchattacks and :class:`vqdbook.attacks.PGD`: inputs in [0, 1], the model
normalizes internally, ``attack(x, y)`` returns ``x_adv`` of the same shape, and the model's
train/eval mode is restored afterwards (that of each submodule, as it was).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import CPU_CHUNK, check_xy
from .validation import check_int, check_real

__all__ = ["Square", "p_schedule", "P_HALVINGS", "LOSSES", "MAX_REDRAWS"]

#: Iterations, for a budget of 10,000 queries, after which the square size p halves (the paper's
#: Sec. 4 and ``p_selection`` of the original code); other budgets rescale them (:func:`p_schedule`).
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: Losses the random search minimizes: the margin (the paper's choice for untargeted attacks) or
#: minus the cross-entropy.
LOSSES = ("margin", "ce")
#: Sign draws tried per proposed square before giving up on changing the image (the default of
#: ``Square.max_redraws``). The original code redraws until the square changes the image; for
#: ε > 0 at most one of the 2^c sign vectors leaves a square unchanged, so 64 draws all fail with
#: probability at most 2^-64. ``1`` never redraws, as torchattacks.
MAX_REDRAWS = 64


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """The fraction p of pixels a square covers at iteration ``it`` (0-based) of an ``n_queries``
    run: ``p_init`` halved at each of :data:`P_HALVINGS` (rescaled from 10,000 queries to
    ``n_queries``, as the original code does) that ``it`` has passed.

    Examples::

        >>> from vqdbook.square import p_schedule
        >>> [p_schedule(0.8, it, 10_000) for it in (0, 10, 11, 51, 8001)]
        [0.8, 0.8, 0.4, 0.2, 0.0015625]
        >>> p_schedule(0.8, 11, 1000)        # iteration 11 of 1,000 is iteration 110 of 10,000
        0.2
    """
    it = int(it / n_queries * 10_000)
    return p_init / 2 ** sum(it > t for t in P_HALVINGS)


def _eval(model: nn.Module) -> list:
    """Put ``model`` in eval mode; return each module's previous mode for :func:`_restore`.

    Each module's own flag is kept, not only the top one: ``model.train(was_training)`` would set
    every submodule to the wrapper's mode (a fresh wrapper is in training mode, so an eval-mode
    classifier inside it would come back in training mode, with dropout and batch statistics on)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    return modes


def _restore(modes: list) -> None:
    for m, training in modes:
        m.training = training


class Square:
    r"""L∞ Square Attack (Andriushchenko et al., ECCV 2020): random search over square-shaped updates.

    Minimizes the margin :math:`s_y(x') - \max_{j \ne y} s_j(x')` of the model's scores ``s`` within
    :math:`\|x' - x\|_\infty \le \varepsilon`, :math:`x' \in [0, 1]`, from queries alone:

    1. *Initialisation*: vertical stripes, :math:`x' = \mathrm{clip}(x + \varepsilon\,\delta)` with
       one random sign :math:`\delta \in \{-1, 1\}` per channel and column (shape ``(C, 1, W)``).
    2. *Proposal* (each later query): a square of side :math:`\mathrm{round}(\sqrt{p\,h\,w})`
       (at least 1, at most ``min(H, W)``) at a uniformly random position, per image; inside it each
       channel gets :math:`\pm 2\varepsilon` (one random sign per channel), and the result is projected
       back onto the ε-ball and [0, 1], i.e. the square is set to :math:`\mathrm{clip}(x \pm \varepsilon)`.
       Signs that would leave the image unchanged are redrawn (as in the original code).
    3. *Acceptance*: the candidate replaces the current image when its loss is strictly lower, or
       when it misclassifies.
    4. *Schedule*: ``p`` starts at ``p_init`` and halves after iterations 10, 50, 200, 500, 1000,
       2000, 4000, 6000 and 8000 of a 10,000-query run, rescaled to ``n_queries``
       (:func:`p_schedule`).

    Each image stops as soon as it is misclassified: only the images not yet fooled are queried
    (a shrinking active set), so easy images cost few queries. Images the model already
    misclassifies are returned unchanged.

    **Randomized models.** The score of a candidate is the mean of the model's outputs over
    ``votes`` independent forward passes, made as one batch: each image is repeated ``votes`` times
    (``repeat_interleave``) and the ``B · votes`` copies go through the model together, so a
    randomized model (``Defended``, whose quantizer draws per image) gives each copy its own draw.
    The outputs are averaged *as returned*: logits are averaged as logits, and probabilities or
    vote fractions (``Defended(..., votes=t)`` returns class frequencies of t draws) are averaged
    as frequencies, i.e. pooled over ``votes · t`` draws; the margin is taken on the average. An
    image counts as fooled when the averaged score misclassifies (``argmax != y``; ties go to the
    smallest label, as in :meth:`vqdbook.defense.Defended.predict`). So "fooled" is a statement
    about the query that produced it; evaluate ``x_adv`` with fresh draws for a robust accuracy.
    As in the original, the best loss is not re-estimated, and with noisy scores a lucky draw can
    be accepted; more ``votes`` make the scores less noisy at a proportional cost.

    Args:
        model: classifier on [0, 1] inputs returning scores (B, classes): logits, probabilities or
            vote fractions. Only its outputs are used (no gradients).
        eps: radius on the [0, 1] scale (the paper's CIFAR/SVHN ε = 8 is ``8/255``); in [0, 1].
        n_queries: budget of queries per image (≥ 1), counted as in the paper: the stripe
            initialisation is the first, each square proposal one more; the schedule of ``p`` is
            rescaled to this budget. The check of the clean input (one query per image) is not
            counted, as in the paper.
        p_init: initial fraction of the pixels a square covers, in (0, 1]. The original code's
            default is 0.05 (standard models); its authors use 0.8 against robust models (their
            MNIST-challenge entry), which is also torchattacks' default and ours.
        votes: forward passes averaged per candidate (≥ 1), batched as described above.
        generator: ``torch.Generator`` for every random draw of the attack (stripes, positions,
            signs), so a seed reproduces the attack of a deterministic model; ``None``: a fresh
            generator seeded with 0 on each call (deterministic, like torchattacks' ``seed=0``).
            The global RNG is never used by the attack (a randomized model may use it).
        loss: ``"margin"`` (default, the paper's untargeted loss) or ``"ce"`` (minimize minus the
            cross-entropy: ``log_softmax`` of averaged logits, or the log of the averaged probability
            when the averaged scores are non-negative and sum to 1 per row).
        chunk_size: images whose scores are computed in one forward pass (of ``chunk_size · votes``
            inputs). The attack runs on the whole batch in lockstep and the draws do not depend on
            it, so it changes speed and memory, not the attack. ``None``: :data:`vqdbook.attacks.CPU_CHUNK`
            images on a CPU, the whole active set on a GPU.

    Attributes:
        max_redraws: sign draws tried per square that would change nothing (default
            :data:`MAX_REDRAWS`, as the original code; ``1``: no redraw, as torchattacks, whose
            no-op proposals waste queries, so that it is weaker at small budgets;
            ``tests/test_square.py`` compares the two).
        last_queries: (B,) int64 on the CPU, queries spent per image as counted by the paper (0 for
            images misclassified without attack). The paper reports the mean over the fooled
            images; model forward passes are ``votes`` times these.
        last_fooled: (B,) bool on the CPU, whether the returned image was misclassified by the
            averaged score of its last query (clean-misclassified images included).

    ``last_queries`` and ``last_fooled`` are set by each call.

    Shapes: ``x`` (B, C, H, W) float in [0, 1], ``y`` (B,) int64 → ``x_adv`` like ``x``.

    Examples::

        >>> import torch
        >>> from vqdbook import Square
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> atk = Square(net, eps=0.1, n_queries=50, generator=torch.Generator().manual_seed(0))
        >>> x_adv = atk(x, y)
        >>> x_adv.shape, bool(((x_adv - x).abs() <= 0.1 + 1e-6).all()), net.training
        (torch.Size([8, 1, 28, 28]), True, False)
        >>> atk.last_queries.shape, bool((atk.last_queries <= 50).all())
        (torch.Size([8]), True)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, n_queries: int = 1000, p_init: float = 0.8, *,
                 votes: int = 1, generator: torch.Generator | None = None, loss: str = "margin",
                 chunk_size: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module returning scores (B, classes); "
                            f"got {type(model).__name__}")
        self.eps = check_real(eps, "eps", low=0.0, high=1.0)
        self.n_queries = check_int(n_queries, "n_queries", 1)
        self.p_init = check_real(p_init, "p_init", positive=True, high=1.0)
        self.votes = check_int(votes, "votes", 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", 1)
        self.model, self.generator, self.loss = model, generator, loss
        self.max_redraws = MAX_REDRAWS
        self.last_queries: torch.Tensor | None = None
        self.last_fooled: torch.Tensor | None = None

    def __repr__(self):
        return (f"Square(eps={self.eps:.5g}, n_queries={self.n_queries}, p_init={self.p_init:.5g}, "
                f"votes={self.votes}, loss={self.loss!r})")

    # ---------------------------------------------------------------------------------- scores
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs for ``x`` (B, C, H, W), averaged over ``votes`` forward passes made as
        one batch per chunk (the score the attack sees); (B, classes) float32. The model is put in
        eval mode for the call and the mode of each of its modules restored."""
        modes = _eval(self.model)
        try:
            return self._scores(x)
        finally:
            _restore(modes)

    @torch.no_grad()
    def _scores(self, x):
        chunk = self.chunk_size or (CPU_CHUNK if x.device.type == "cpu" else max(1, len(x)))
        out = []
        for i in range(0, len(x), chunk):
            xb = x[i:i + chunk]
            if self.votes > 1:
                xb = xb.repeat_interleave(self.votes, dim=0)   # image i -> rows i*votes ... i*votes+votes-1
            s = self.model(xb)
            if not isinstance(s, torch.Tensor) or s.dim() != 2 or s.shape[0] != len(xb):
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise ValueError(f"model must return scores of shape (batch, classes) = ({len(xb)}, classes); "
                                 f"got {shape}")
            out.append(s.float().view(-1, self.votes, s.shape[1]).mean(1))
        return torch.cat(out)

    def _objective(self, scores, y):
        """(loss to minimize, fooled) of averaged scores (n, K) for labels y (n,)."""
        s_y = scores.gather(1, y[:, None]).squeeze(1)
        if self.loss == "margin":
            loss = s_y - scores.scatter(1, y[:, None], float("-inf")).amax(1)
        elif self._probabilities:
            loss = s_y.clamp_min(1e-12).log()
        else:
            loss = -F.cross_entropy(scores, y, reduction="none")
        return loss, scores.argmax(1) != y

    # ---------------------------------------------------------------------------------- attack
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_xy(x, y)
        modes = _eval(self.model)
        try:
            return self._attack(x.detach(), y.detach())
        finally:
            _restore(modes)

    def _signs(self, shape, gen, like):
        s = torch.randint(0, 2, shape, generator=gen, device=gen.device)
        return (2 * s - 1).to(device=like.device, dtype=like.dtype)

    def _attack(self, x, y):
        B, C, H, W = x.shape
        gen = self.generator if self.generator is not None else torch.Generator().manual_seed(0)
        self.last_queries = torch.zeros(B, dtype=torch.int64)
        self.last_fooled = torch.zeros(B, dtype=torch.bool)
        x_adv = x.clone()
        if B == 0:
            return x_adv
        clean = self._scores(x)
        k = clean.shape[1]
        if y.min() < 0 or y.max() >= k:
            raise ValueError(f"labels y must be in [0, {k - 1}]; got range [{y.min().item()}, {y.max().item()}]")
        y = y.to(x.device).long()
        self._probabilities = bool((clean >= 0).all()) and bool(((clean.sum(1) - 1).abs() <= 1e-4).all())
        _, fooled_clean = self._objective(clean, y)
        self.last_fooled = fooled_clean.cpu()
        todo = (~fooled_clean).nonzero().squeeze(1)
        if self.eps == 0 or len(todo) == 0:
            return x_adv

        xs, ys, eps = x[todo], y[todo], self.eps
        # 1. vertical stripes: one sign per (image, channel, column)
        best = (xs + eps * self._signs((len(todo), C, 1, W), gen, xs)).clamp(0, 1)
        loss_min, fooled = self._objective(self._scores(best), ys)
        queries = torch.ones(len(todo), dtype=torch.int64, device=x.device)
        rows, cols = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
        redraws = check_int(self.max_redraws, "max_redraws", 1)
        for it in range(self.n_queries - 1):
            act = (~fooled).nonzero().squeeze(1)
            if len(act) == 0:
                break
            p = p_schedule(self.p_init, it, self.n_queries)
            side = min(max(int(round(math.sqrt(p * H * W))), 1), H, W)
            x_new = self._propose(xs[act], best[act], side, rows, cols, gen, redraws)
            loss, f = self._objective(self._scores(x_new), ys[act])
            better = (loss < loss_min[act]) | f
            upd = act[better]
            best[upd], loss_min[upd] = x_new[better], loss[better]
            fooled[act] = f
            queries[act] += 1
        x_adv[todo] = best
        self.last_queries[todo.cpu()] = queries.cpu()
        self.last_fooled[todo.cpu()] = fooled.cpu()
        return x_adv

    def _propose(self, x, best, side, rows, cols, gen, redraws=MAX_REDRAWS):
        """One square per image at a uniform position (the whole range [0, H - side], which the
        original's ``randint(0, h - s)`` misses by one), set to clip(x ± ε) per channel."""
        n, C, H, W = x.shape
        dev = gen.device
        top = torch.randint(0, H - side + 1, (n, 1), generator=gen, device=dev).to(x.device)
        left = torch.randint(0, W - side + 1, (n, 1), generator=gen, device=dev).to(x.device)
        in_rows = (rows >= top) & (rows < top + side)                       # (n, H)
        in_cols = (cols >= left) & (cols < left + side)                     # (n, W)
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]        # (n, 1, H, W)
        x_new = best.clone()
        need = torch.arange(n, device=x.device)
        for _ in range(redraws):   # redraw the signs of squares that would change nothing
            sign = self._signs((len(need), C, 1, 1), gen, x)
            cand = torch.where(mask[need], (x[need] + self.eps * sign).clamp(0, 1), best[need])
            x_new[need] = cand
            need = need[(cand == best[need]).flatten(1).all(1)]
            if len(need) == 0:
                break
        return x_new
