"""Defended classifiers f∘Q (the paper's Fig. 3) with Theorem 1's majority vote."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["Defended"]

class _StraightThrough(torch.autograd.Function):
    """Forward: Q(x). Backward: the identity (BPDA, Athalye et al. 2018)."""

    @staticmethod
    def forward(ctx, x, quantizer):
        with torch.no_grad():
            return quantizer(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Defended(nn.Module):
    """f∘Q: quantize the input with ``quantizer``, then classify with ``net`` (Fig. 3).

    ``forward(x)`` returns logits of ``net(Q(x))`` for one random draw of Q when ``votes == 1``;
    with ``votes = t > 1`` it returns, per class, the fraction of ``t`` independent draws that
    predicted it, and :meth:`predict` is the most frequent label (Theorem 1's majority vote; ties go
    to the smallest label).

    ``bpda=True`` makes the forward pass differentiable with an identity gradient through Q, so
    that :class:`vqdbook.attacks.PGD` can attack the defended model adaptively (use it with
    ``eot_samples`` for the quantizer's randomness). Without it, no gradient flows through Q.

    Shapes: ``x`` (B, C, H, W) in [0, 1] → logits (or vote fractions) (B, classes).

    Examples::

        >>> import torch
        >>> from vqdbook import Defended, paper_quantizer
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
        >>> q = paper_quantizer("mnist", "swrd", s=2, k=2, generator=torch.Generator().manual_seed(0))
        >>> model = Defended(net, q, votes=5)
        >>> x = torch.rand(3, 1, 28, 28)
        >>> model(x).sum(1)            # vote fractions of 5 draws of Q sum to 1
        tensor([1., 1., 1.])
        >>> model.predict(x).shape
        torch.Size([3])
    """

    def __init__(self, net: nn.Module, quantizer: nn.Module, votes: int = 1, *, bpda: bool = False):
        super().__init__()
        if isinstance(votes, bool) or not isinstance(votes, int) or votes < 1:
            raise ValueError(f"votes must be an int >= 1; got {votes!r}")
        self.net, self.quantizer, self.votes, self.bpda = net, quantizer, votes, bpda
        # mirror the wrapped net's mode: a fresh Module is in training mode, and an attack that
        # restores "the model's mode" would otherwise switch an eval-mode net to training mode
        self.train(net.training)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.bpda:
            return _StraightThrough.apply(x, self.quantizer)
        with torch.no_grad():
            return self.quantizer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.votes == 1:
            return self.net(self.quantize(x))
        counts = None
        for _ in range(self.votes):
            with torch.no_grad():
                pred = self.net(self.quantizer(x)).argmax(1)
            onehot = torch.nn.functional.one_hot(pred, self._num_classes(x)).float()
            counts = onehot if counts is None else counts + onehot
        return counts / self.votes

    def _num_classes(self, x):
        if not hasattr(self, "_classes"):
            with torch.no_grad():
                self._classes = self.net(x[:1]).shape[1]
        return self._classes

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels: one draw (``votes == 1``) or the majority over ``votes`` draws."""
        return self.forward(x).argmax(1)
