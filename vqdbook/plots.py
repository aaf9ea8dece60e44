"""Figures for the book. Each function returns a matplotlib Figure and changes no global style
(:func:`vqdbook.setup` sets the style once)."""

from __future__ import annotations

import numpy as np


def to_numpy_image(x):
    """(C,H,W) tensor in [0,1] → (H,W) or (H,W,C) float array for imshow."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    a = np.clip(a, 0, 1)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def show_image(ax, x, title=None):
    a = to_numpy_image(x)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title is not None:
        ax.set_title(title, fontsize=8)


def image_grid(x, labels=None, class_names=None, ncols=10, title=None, scale=1.0):
    """A grid of images (N,C,H,W) with optional label captions."""
    import matplotlib.pyplot as plt

    n = len(x)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols * 0.9, scale * nrows * 1.0 + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            cap = None
            if labels is not None:
                lab = int(labels[i])
                cap = class_names[lab] if class_names is not None else str(lab)
            show_image(ax, x[i], cap)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_plot(y_true, y_pred, class_names, title=None, ax=None):
    """Row-normalised confusion matrix heatmap (seaborn), counts annotated."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=range(len(class_names)))
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.2, 5.2))
    sns.heatmap(frac, annot=cm, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return fig or ax.figure
