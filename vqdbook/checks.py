"""Sanity checks on attacks, in the spirit of auto-attack's ``checks.py``: each check is a named
function that warns with a message saying what is wrong and what to do.

A robustness number is only as good as the attack behind it. The three ways an evaluation of a
randomized, non-differentiable defense such as f∘Q goes wrong most often (Athalye et al. 2018;
Tramèr et al. 2020; Croce et al. 2022) are checked here:

* :func:`check_zero_gradients` -- the input gradient is exactly zero (gradient masking: the
  quantizer blocks it); attack through BPDA or use a gradient-free attack;
* :func:`check_randomized` -- the model gives different outputs for the same input and is
  attacked without expectation over transformation (EOT);
* :func:`check_convergence` -- accuracy still falls at the largest budget (steps, EOT draws,
  queries) that was run: the attack has not converged and the number is an upper bound only.
"""

from __future__ import annotations

import warnings

import torch

from .metrics import wilson_interval

__all__ = ["ZeroGradientWarning", "RandomizedDefenseWarning", "NotConvergedWarning", "check_zero_gradients",
           "check_randomized", "check_convergence"]


class ZeroGradientWarning(UserWarning):
    """The loss gradient w.r.t. the input is zero for many inputs: a gradient attack cannot make progress."""


class RandomizedDefenseWarning(UserWarning):
    """The attacked model is stochastic and is attacked with single-draw gradients: use EOT."""


class NotConvergedWarning(UserWarning):
    """Accuracy still falls at the largest attack budget that was run: the attack has not converged."""


def check_zero_gradients(grad: torch.Tensor, *, threshold: float = 0.1, stacklevel: int = 2) -> float:
    """Warn when more than ``threshold`` of the inputs have an exactly zero gradient; returns that fraction.

    ``grad`` is ``(B, ...)``: the input gradient of the attack's loss.
    """
    if grad.numel() == 0:
        return 0.0
    frac = float((grad.flatten(1).abs().amax(1) == 0).float().mean())
    if frac > threshold:
        warnings.warn(f"the input gradient is exactly zero for {100 * frac:.0f}% of the inputs: a gradient "
                      "attack cannot move them (gradient masking, e.g. a non-differentiable quantizer). Attack "
                      "the defense with BPDA (Defended(..., bpda=True)) and EOT, or use a gradient-free attack "
                      "(vqdbook.Square).", ZeroGradientWarning, stacklevel=stacklevel + 1)
    return frac


@torch.no_grad()
def check_randomized(model, x: torch.Tensor, eot_samples: int = 1, *, atol: float = 1e-5,
                     stacklevel: int = 2) -> bool:
    """Whether ``model`` gives different outputs for the same ``x`` (a randomized defense); warns when
    it does and ``eot_samples == 1``."""
    randomized = not torch.allclose(model(x), model(x), atol=atol)
    if randomized and eot_samples == 1:
        warnings.warn("the model gives different outputs for the same input (a randomized defense): "
                      "single-draw gradients are noisy. Use eot_samples > 1 (expectation over "
                      "transformation) and report results over several seeds.", RandomizedDefenseWarning,
                      stacklevel=stacklevel + 1)
    return randomized


def check_convergence(budgets, correct, n: int, *, what: str = "steps", stacklevel: int = 2) -> dict:
    """Is the attack converged in its budget? ``budgets`` increasing (steps, EOT draws, queries) and
    ``correct`` the number of images still classified correctly after the attack with each budget,
    out of ``n``.

    The attack counts as converged when the accuracy at the largest budget lies inside the 95%
    Wilson interval of the accuracy at the one before it (doubling the budget no longer lowers it
    beyond sampling error). Otherwise a :class:`NotConvergedWarning` says so. Returns
    ``{"converged", "last_drop", "interval_half_width", "budgets", "accuracy"}``.
    """
    budgets, correct = list(budgets), list(correct)
    if len(budgets) != len(correct) or len(budgets) < 2:
        raise ValueError(f"budgets and correct must have the same length >= 2; got {len(budgets)} and {len(correct)}")
    if any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:])):
        raise ValueError(f"budgets must increase; got {budgets}")
    acc = [c / n for c in correct]
    lo, hi = wilson_interval(correct[-2], n)
    converged = acc[-1] >= lo
    out = {"converged": bool(converged), "last_drop": acc[-2] - acc[-1], "interval_half_width": (hi - lo) / 2,
           "budgets": budgets, "accuracy": acc}
    if not converged:
        warnings.warn(f"accuracy still falls at the largest {what} budget: {100 * acc[-2]:.1f}% at {budgets[-2]} "
                      f"-> {100 * acc[-1]:.1f}% at {budgets[-1]} (beyond the 95% interval of the first). The "
                      f"attack has not converged: the robust accuracy is an upper bound only; run a larger budget.",
                      NotConvergedWarning, stacklevel=stacklevel + 1)
    return out
