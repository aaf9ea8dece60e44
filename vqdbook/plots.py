"""Figures for the book. Each function returns a matplotlib Figure and changes no global style
(:func:`vqdbook.setup` sets the style once)."""

from __future__ import annotations

import numpy as np

from . import paper

__all__ = ["to_numpy_image", "show_image", "image_grid", "confusion_matrix_plot", "patch_partition_figure",
           "quantized_grid", "fig4_plot", "fig5_plot", "figure7", "fig6_plot", "table_curves_plot", "variant_plot",
           "frame_view", "adaptive_curves_plot", "adaptive_headline_plot",
           "convergence_plot", "certified_curves_plot", "kl_validation_plot",
           "second_term_plot", "fig8_plot"]


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


def patch_partition_figure(x, s: int = 4, windows=((0, 0), (0, 1), (1, 0), (1, 1))):
    """The paper's Figure 2: pRD's non-overlapping s×s patches (left) vs swRD's stride-1 windows (right)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = x.shape[-2:]
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 3.8))
    show_image(a, x, f"pRD: {int(np.ceil(h / s))}×{int(np.ceil(w / s))} non-overlapping {s}×{s} patches")
    for i in range(0, h, s):
        for j in range(0, w, s):
            a.add_patch(Rectangle((j - 0.5, i - 0.5), s, s, fill=False, lw=0.8, ec="#ffcc00"))
    show_image(b, x, f"swRD: {(h - s + 1)}×{(w - s + 1)} stride-1 {s}×{s} windows (4 shown)")
    colors = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00"]
    for (i, j), c in zip(windows, colors):
        b.add_patch(Rectangle((j - 0.5, i - 0.5), s, s, fill=False, lw=1.6, ec=c))
    fig.tight_layout()
    return fig


def quantized_grid(images, row_labels, col_labels, title=None, scale=1.3):
    """A rows×cols grid of images (a list of lists of (C,H,W) tensors) with row/column captions."""
    import matplotlib.pyplot as plt

    nr, nc = len(images), len(images[0])
    fig, axes = plt.subplots(nr, nc, figsize=(scale * nc + 0.8, scale * nr + 0.4), squeeze=False)
    for i in range(nr):
        for j in range(nc):
            show_image(axes[i, j], images[i][j], col_labels[j] if i == 0 else None)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig4_plot(frame, dataset: str):
    """Figure 4: accuracy vs k, one line per s, one panel per (ε, method); bands are 95% CIs."""
    import matplotlib.pyplot as plt

    eps_values = sorted(frame["eps"].unique())
    panels = ["prd", "swrd"]
    fig, axes = plt.subplots(len(panels), len(eps_values), figsize=(3.3 * len(eps_values), 5.4),
                             sharey=True, squeeze=False)
    for i, panel in enumerate(panels):
        for j, eps in enumerate(eps_values):
            ax = axes[i, j]
            sub = frame[(frame["eps"] == eps) & (frame["panel"] == panel)]
            for s, grp in sub.groupby("s"):
                grp = grp.sort_values("k")
                label = "RandDisc (s=1)" if s == 1 else f"s={s}"
                ax.plot(grp["k"], 100 * grp["accuracy"], marker="o", ms=3, label=label)
                ax.fill_between(grp["k"], 100 * grp["ci_lo"], 100 * grp["ci_hi"], alpha=0.15)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{paper.METHOD_LABELS[panel]}, ε = {paper.eps_label(dataset, eps)}", fontsize=9)
            if i == len(panels) - 1:
                ax.set_xlabel("k (centres)")
            if j == 0:
                ax.set_ylabel("accuracy (%)")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Figure 4 ({dataset}): accuracy vs s and k, PGD on f", fontsize=10)
    fig.tight_layout()
    return fig


def fig5_plot(frame, dataset: str):
    """Figure 5: accuracy vs noise σ = τ (0–255 units), one panel per ε."""
    import matplotlib.pyplot as plt

    eps_values = sorted(frame["eps"].unique())
    fig, axes = plt.subplots(1, len(eps_values), figsize=(4 * len(eps_values), 3.2), sharey=True, squeeze=False)
    for j, eps in enumerate(eps_values):
        ax = axes[0, j]
        sub = frame[frame["eps"] == eps]
        for (method, s, k), grp in sub.groupby(["method", "s", "k"]):
            grp = grp.sort_values("noise_255")
            ax.plot(grp["noise_255"], 100 * grp["accuracy"], marker="o", ms=3,
                    label=f"{paper.METHOD_LABELS[method]} s={s}, k={k}")
            ax.fill_between(grp["noise_255"], 100 * grp["ci_lo"], 100 * grp["ci_hi"], alpha=0.15)
        ax.set_title(f"ε = {paper.eps_label(dataset, eps)}", fontsize=9)
        ax.set_xlabel("σ = τ (×1/255)")
        if j == 0:
            ax.set_ylabel("accuracy (%)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"Figure 5 ({dataset}): accuracy vs quantizer noise", fontsize=10)
    fig.tight_layout()
    return fig


def figure7(ex: dict, class_names=None, scale=1.25):
    """The paper's Figure 7 from :func:`vqdbook.experiments.denoising_examples`: per image a row of
    x, x′, then Q(x) and Q(x′) for each quantizer, with PSNR(x, Q(x′)) and f's prediction on Q(x′)."""
    import matplotlib.pyplot as plt

    labels = paper.METHOD_LABELS
    n = len(ex["x"])
    cols = 2 + 2 * len(ex["methods"])
    fig, axes = plt.subplots(n, cols, figsize=(scale * cols, scale * n + 0.6), squeeze=False)
    name = (lambda c: class_names[c]) if class_names is not None else str
    for i in range(n):
        show_image(axes[i, 0], ex["x"][i], "x" if i == 0 else None)
        show_image(axes[i, 1], ex["x_adv"][i], None)
        axes[i, 1].set_title(("x′\n" if i == 0 else "") + f"f: {name(int(ex['pred_x_adv'][i]))}", fontsize=7)
        for j, (m, r) in enumerate(ex["methods"].items()):
            show_image(axes[i, 2 + 2 * j], r["q_x"][i], f"{labels[m]} Q(x)" if i == 0 else None)
            ax = axes[i, 3 + 2 * j]
            show_image(ax, r["q_adv"][i])
            ax.set_title((f"{labels[m]} Q(x′)\n" if i == 0 else "")
                         + f"{r['psnr_adv'][i]:.1f} dB · f: {name(int(r['pred_q_adv'][i]))}", fontsize=7)
    c = ex["config"]
    fig.suptitle(f"ε = {c['eps']:.3g}, s = {c['s']}, k = {c['k']}; PSNR(x, Q(x′)) and f's label on each", fontsize=9)
    fig.tight_layout()
    return fig


def fig6_plot(frame, dataset: str):
    """Figure 6: KL(Q_C|x ‖ Q_C|x′) vs ε per quantizer; line = median over images, band = quartiles."""
    import matplotlib.pyplot as plt

    sub = frame[frame["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    scale = paper.UNITS[dataset]
    for method, grp in sub.groupby("method"):
        grp = grp.sort_values("eps")
        e = grp["eps"] * scale
        ax.plot(e, grp["kl_median"], marker="o", ms=3, label=method)
        ax.fill_between(e, grp["kl_q25"], grp["kl_q75"], alpha=0.15)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("ε" + (f" ({paper.eps_unit_suffix(dataset)})" if scale != 1 else ""))
    ax.set_ylabel("estimated KL (eq. 9)")
    ax.set_title(f"Figure 6 ({dataset}): median and quartiles over images", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table_curves_plot(frame, title: str | None = None, ncols: int = 3):
    """Tables 1–3 as pictures: accuracy over ε, one panel per row of the table (method, s, k).

    ``frame`` is :func:`vqdbook.experiments.table_curves`. Our accuracy is a line with its 95%
    Wilson band; the paper's numbers are black crosses on the same axes. ε is in the paper's units.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    labels = list(dict.fromkeys(frame["label"]))
    n = len(labels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.1 * nrows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    dataset = frame["dataset"].iloc[0]
    for ax, label in zip(axes.flat, labels):
        sub = frame[frame["label"] == label].sort_values("eps_paper")
        ours = sub.dropna(subset=["accuracy"])
        if len(ours):
            ax.plot(ours["eps_paper"], 100 * ours["accuracy"], marker="o", ms=3, color="C0", label="ours")
            ax.fill_between(ours["eps_paper"], 100 * ours["ci_lo"], 100 * ours["ci_hi"], color="C0", alpha=0.2)
        else:
            ax.text(0.4, 0.1, "not trained here", transform=ax.transAxes, ha="center", va="center", color="0.4")
        theirs = sub.dropna(subset=["paper"])
        if len(theirs):
            ax.plot(theirs["eps_paper"], 100 * theirs["paper"], "x", color="k", ms=5, label="paper")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-3, 103)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes.flat[max(n - ncols, 0):n]:  # the lowest panel of each column carries the ε axis
        ax.set_xlabel("ε" + (f" ({paper.eps_unit_suffix(dataset)})" if paper.eps_unit_suffix(dataset) else ""))
        ax.tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles = [Line2D([], [], color="C0", marker="o", ms=3, label=f"ours (n = {frame.attrs['n']:,})"
                      if "n" in frame.attrs else "ours"),
               Patch(color="C0", alpha=0.2, label="95% interval"),
               Line2D([], [], color="k", marker="x", ms=5, linestyle="none", label="paper")]
    h = fig.get_figheight()
    top = 1.0
    if title:  # the title on the first line, the legend on the next, both above the panels
        fig.suptitle(title, fontsize=10, x=0.01, y=1 - 0.05 / h, ha="left", va="top")
        top -= 0.3 / h
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, top - 0.02 / h), ncols=3, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, top - 0.15 / h))
    return fig


def variant_plot(frame, title: str | None = None, tolerance: float = 5.0, ncols: int = 3):
    """The reproduction study as pictures: per variant, our accuracy against the paper's cell.

    ``frame`` is :func:`vqdbook.experiments.reproduction.variant_frame`: one line per quantizer row
    (``method, s, k``) and radius (``ε (paper units)``), the paper's accuracy (``paper (%)``) and one
    column of ours per variant (NaN / None where the record is missing). One panel per variant:
    each point is one cell, x the paper's accuracy, y ours; colour is the table row, marker the
    radius. Points on the diagonal reproduce the paper; the grey band is ± ``tolerance`` points.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.lines import Line2D

    fixed = ("method", "s", "k", "ε (paper units)", "paper (%)")
    variants = [c for c in frame.columns if c not in fixed]
    n = max(len(variants), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols + 1.7, 2.4 * nrows + 0.5), sharex=True,
                             sharey=True, squeeze=False)
    rows = list(dict.fromkeys(zip(frame["method"], frame["s"], frame["k"])))
    colours = {r: f"C{i % 10}" for i, r in enumerate(rows)}
    radii = list(dict.fromkeys(frame["ε (paper units)"]))
    markers = dict(zip(radii, "os^DvP*X"))
    line = [-3, 103]
    for ax, v in zip(axes.flat, variants):
        ax.fill_between(line, [a - tolerance for a in line], [a + tolerance for a in line], color="0.85", lw=0)
        ax.plot(line, line, color="0.4", lw=0.8)
        ours = pd.to_numeric(frame[v], errors="coerce")
        for (_, r), y in zip(frame.iterrows(), ours):
            if pd.notna(y):
                ax.plot(r["paper (%)"], y, linestyle="none", marker=markers[r["ε (paper units)"]], ms=5,
                        color=colours[(r["method"], r["s"], r["k"])], alpha=0.85)
        have = ours.notna()
        within = int(((ours - frame["paper (%)"]).abs() <= tolerance)[have].sum())
        ax.set_title(f"{v}\n{within} of {int(have.sum())} cells within {tolerance:g} points", fontsize=8)
        ax.set_xlim(*line)
        ax.set_ylim(*line)
        ax.set_aspect("equal")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("paper (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("ours (%)")
    handles = [Line2D([], [], color=colours[r], marker="o", linestyle="none", label=f"{r[0]} s={r[1]}, k={r[2]}")
               for r in rows]
    handles += [Line2D([], [], color="0.3", marker=markers[e], linestyle="none", label=f"ε = {e:g}") for e in radii]
    if title:
        fig.suptitle(title, fontsize=10)
    right = 1 - 1.6 / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7, frameon=False)
    return fig


def frame_view(frame, precision: int | None = None, na_rep: str = "", hide_index: bool = True):
    """A DataFrame as the book shows it to readers: no 0..n index column, no truncated text.

    Returns a pandas ``Styler`` (the notebook displays it as an HTML table). Floats are written with
    ``precision`` decimals, or, by default, with up to 6 significant digits as pandas prints them
    (``77.8``, ``0.02``); missing values (None, NaN, ``pd.NA``) as ``na_rep``. Text cells are never
    cut short, unlike the default DataFrame display. A meaningful index (a pivot's) is kept as
    columns: pass ``frame.reset_index()``.
    """
    import pandas as pd

    def fmt(v):
        if v is None or (not isinstance(v, str) and pd.api.types.is_scalar(v) and pd.isna(v)):
            return na_rep
        if isinstance(v, float):
            return f"{v:.{precision}f}" if precision is not None else f"{v:.6g}"
        return str(v)

    styler = frame.style.format(fmt).set_table_styles(
        [{"selector": "td, th", "props": "padding: 0.15em 0.6em;"}], overwrite=False)
    return styler.hide(axis="index") if hide_index else styler


_ATTACK_STYLE = {
    "oblivious-pgd": dict(color="0.55", ls="--", marker="o", label="oblivious PGD (the paper's protocol)"),
    "bpda-pgd": dict(color="C1", ls="-", marker="s", label="BPDA PGD, no EOT"),
    "bpda-eot-apgd-ce": dict(color="C0", ls="-", marker="^", label="BPDA+EOT APGD-CE"),
    "bpda-eot-apgd-dlr": dict(color="C2", ls="-", marker="v", label="BPDA+EOT APGD-DLR"),
    "square": dict(color="C4", ls=":", marker="D", label="Square (gradient-free)"),
    "worst-case": dict(color="k", ls="-", marker="x", lw=2.2, label="worst case per image"),
}


def adaptive_curves_plot(frame, paper_frame=None, title: str | None = None, ncols: int = 3):
    """Accuracy over ε under each attack, one panel per defense (method, s, k), from
    :func:`vqdbook.experiments.adaptive.adaptive_frame` rows of one dataset and ε reading.

    Lines: every attack run on the cells (bands: 95% Wilson intervals of the worst case); crosses:
    the paper's own (oblivious) numbers when ``paper_frame`` (:func:`vqdbook.experiments.tables.table_curves`)
    is given. ε is in the paper's units.
    """
    import matplotlib.pyplot as plt

    dataset = frame["dataset"].iloc[0]
    unit = paper.UNITS[dataset]
    labels = list(dict.fromkeys(frame.sort_values(["method", "s", "k"], na_position="first")["label"]))
    ncols = min(ncols, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows + 0.7), sharex=True, sharey=True,
                             squeeze=False)
    for ax, label in zip(axes.flat, labels):
        sub = frame[frame["label"] == label]
        for attack, style in _ATTACK_STYLE.items():
            g = sub[sub["attack"] == attack].sort_values("eps")
            if g.empty:
                continue
            x = g["eps"] * unit
            ax.plot(x, 100 * g["accuracy"], ms=3.5, **style)
            if attack == "worst-case":
                ax.fill_between(x, 100 * g["ci_lo"], 100 * g["ci_hi"], color="k", alpha=0.12)
        if paper_frame is not None:
            pp = paper_frame[(paper_frame["label"] == label)].dropna(subset=["paper"])
            pp = pp[pp["eps"] > 0]
            if len(pp):
                ax.plot(pp["eps_paper"], 100 * pp["paper"], "P", color="C3", ms=6, label="paper (oblivious)")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-3, 103)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    suffix = paper.eps_unit_suffix(dataset)
    for ax in axes[-1]:
        ax.set_xlabel("ε" + (f" ({suffix})" if suffix else ""))
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def adaptive_headline_plot(frame, paper_acc: dict | None = None, title: str | None = None):
    """The headline cells: one panel per (dataset, ε), one line per defense; markers for each attack's
    accuracy and the worst case per image with its 95% Wilson interval (black bar).

    ``frame``: :func:`vqdbook.experiments.adaptive.adaptive_frame` rows of the headline cells (each at
    its largest n). ``paper_acc``: optional ``{(dataset, label): accuracy}`` of the paper's own
    (oblivious) numbers at the same ε, drawn as red crosses. A defense that only hides its gradient
    shows a long gap between the grey oblivious marker and the black worst case.
    """
    import matplotlib.pyplot as plt

    rank = {m: i for i, m in enumerate(("none", "fastat", "bitdepth", "randdisc", "prd", "swrd"))}
    panels = list(dict.fromkeys(zip(frame["dataset"], frame["eps"], frame["eps_reading"])))
    heights = [frame[(frame["dataset"] == d) & (frame["eps"] == e)]["label"].nunique() for d, e, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.2, 0.42 * sum(heights) + 1.6 * len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (dataset, eps, reading) in zip(axes[:, 0], panels):
        sub = frame[(frame["dataset"] == dataset) & (frame["eps"] == eps) & (frame["eps_reading"] == reading)]
        order = sub.drop_duplicates("label").assign(_r=lambda f: f["method"].map(rank)).sort_values(["_r", "label"])
        labels = list(order["label"])[::-1]
        for yi, label in enumerate(labels):
            g = sub[sub["label"] == label]
            ax.axhline(yi, color="0.92", lw=0.8, zorder=0)
            for attack, style in _ATTACK_STYLE.items():
                a = g[g["attack"] == attack]
                if a.empty:
                    continue
                st = {k: v for k, v in style.items() if k not in ("ls", "lw")}
                acc = 100 * float(a["accuracy"].iloc[0])
                if attack == "worst-case":
                    ax.plot([100 * float(a["ci_lo"].iloc[0]), 100 * float(a["ci_hi"].iloc[0])], [yi, yi], color="k",
                            lw=3, alpha=0.35, solid_capstyle="butt")
                    st.update(ms=9, mew=2.2)
                ax.plot([acc], [yi], ls="none", ms=st.pop("ms", 6), **st)
            if paper_acc and (dataset, label) in paper_acc:
                ax.plot([100 * paper_acc[(dataset, label)]], [yi], "P", color="C3", ms=7,
                        label="paper (oblivious, its classifier)")
        ns = sorted(set(int(n) for n in sub[sub["attack"] == "worst-case"]["n"]))
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(-2, 102)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_title(f"{paper.DATASET_LABELS[dataset]}, ε = {paper.eps_label(dataset, eps)}"
                     f"{' (normalized inputs)' if reading == 'normalized' else ''}, n = {', '.join(map(str, ns))}",
                     fontsize=9)
    axes[-1, 0].set_xlabel("accuracy of f(Q(x′)) (%)")
    handles, names = [], []
    for ax in axes[:, 0]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if len(panels) == 1 else 0.07, 1, 1))
    return fig


def convergence_plot(frame, title: str | None = None):
    """Accuracy against the attack budget (steps, EOT draws) for the cells of
    :func:`vqdbook.experiments.adaptive.convergence_frame`: one panel per (dataset, varying budget),
    with 95% Wilson bands. A curve still falling at its right end means the attack has not converged."""
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(zip(frame["dataset"], frame["varies"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.9), squeeze=False)
    for ax, (dataset, varies) in zip(axes[0], panels):
        sub = frame[(frame["dataset"] == dataset) & (frame["varies"] == varies)]
        for label, g in sub.groupby("label", sort=False):
            g = g.sort_values(varies)
            ax.plot(g[varies], 100 * g["accuracy"], marker="o", ms=3.5, label=label)
            ax.fill_between(g[varies], 100 * g["ci_lo"], 100 * g["ci_hi"], alpha=0.15)
        fixed = "EOT draws" if varies == "steps" else "steps"
        other = sub["eot" if varies == "steps" else "steps"].iloc[0]
        ax.set_xscale("log", base=2)
        ax.set_xlabel({"steps": "APGD steps", "eot": "EOT draws per step", "votes": "votes per query"}[varies])
        r = sub.iloc[0]
        ax.set_title(f"{dataset}, ε = {paper.eps_label(dataset, r['eps'])}"
                     + (" (normalized)" if r["eps_reading"] == "normalized" else "")
                     + f"; {fixed} = {other}, n = {r['n']}", fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


_CURVE_STYLE = {"randdisc": dict(color="C0", marker="o"), "prd": dict(color="C1", marker="s"),
                "swrd": dict(color="C2", marker="^")}


def certified_curves_plot(curves, best: dict | None = None, datasets=None):
    """Certified accuracy against l-infinity radius (Cohen et al.'s curves), one panel per dataset.

    ``curves`` is :func:`vqdbook.experiments.certified_curves`. Theorem 1's estimated curves for
    RandDisc, pRD and swRD are solid steps; randomized smoothing (certified) is dashed black at the
    quantizers' sigma, dotted at ``best[dataset]`` (the sigma that serves it best) and faint grey
    at the other noise levels tried. The radius axis is logarithmic; radius 0 (clean accuracy of
    the vote, resp. of the smoothed classifier) is drawn at the left edge as open markers.
    """
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(curves["dataset"])) if datasets is None else list(datasets)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.4 * len(datasets), 4.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = curves[curves["dataset"] == ds]
        pos = sub[sub["radius"] > 0]
        left = pos["radius"].min() / 2
        q_sigma = paper.NOISE[ds]["sigma"]
        for method in paper.QUANTIZERS:
            g = sub[sub["method"] == method].sort_values("radius")
            if g.empty:
                continue
            st = _CURVE_STYLE[method]
            gp = g[g["radius"] > 0]
            ax.step(gp["radius"], 100 * gp["certified_accuracy"], where="post", color=st["color"],
                    label=f"{paper.METHOD_LABELS[method]} (Thm. 1, estimated; n={int(g['n'].iloc[0])})")
            ax.plot([left], [100 * g["certified_accuracy"].iloc[0]], st["marker"], mfc="none", color=st["color"])
        sm = sub[sub["method"] == "smoothing"]
        for sigma, g in sm.groupby("sigma"):
            g = g.sort_values("radius")
            gp = g[g["radius"] > 0]
            if abs(sigma - q_sigma) < 1e-6:
                kw = dict(color="k", ls="--", lw=1.6,
                          label=f"smoothing σ = {255 * sigma:.0f}/255 (certified; n={int(g['n'].iloc[0])})")
            elif best and abs(sigma - best.get(ds, -1)) < 1e-6:
                kw = dict(color="k", ls=":", lw=1.8, label=f"smoothing σ = {255 * sigma:.0f}/255 (best)")
            else:
                kw = dict(color="0.7", ls="-", lw=0.8)
            ax.plot(gp["radius"], 100 * gp["certified_accuracy"], **kw)
            if "label" in kw:
                ax.plot([left], [100 * g["certified_accuracy"].iloc[0]], "D", mfc="none", color=kw["color"], ms=4)
        ax.axvline(q_sigma, color="0.5", lw=0.7, ls="-.")
        ax.text(q_sigma, 101, " σ = 4/255", fontsize=7, color="0.4", va="bottom")
        ax.set_xscale("log")
        ax.set_xlim(left / 1.5, pos["radius"].max() * 1.2)
        ax.set_ylim(-3, 108)
        ax.set_xlabel("ℓ∞ radius r (on [0, 1]); open markers: r = 0")
        ax.set_ylabel("certified accuracy at r (%)")
        ax.set_title(paper.DATASET_LABELS[ds], fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    return fig


def kl_validation_plot(frame, target: float = 0.5):
    """The estimator of eq. (9) on problems with a known KL: estimate minus truth against the
    dimension, at the true KL nearest ``target``; one panel per sampling mode (independent samples,
    as the paper; common random numbers, as the certified radii), error bars = std over repetitions.

    ``frame`` is :func:`vqdbook.experiments.validation_frame`.
    """
    import matplotlib.pyplot as plt

    modes = [m for m in ("independent", "crn") if m in set(frame["mode"])]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.5), squeeze=False, sharey=False)
    markers = {"gaussian": "o", "mixture": "s"}
    for ax, mode in zip(axes[0], modes):
        sub = frame[frame["mode"] == mode]
        for (problem, k_gmm, n), g in sub.groupby(["problem", "k_gmm", "n_samples"]):
            g = g.loc[g.groupby("d")["true_kl"].apply(lambda s: (s - target).abs().idxmin())].sort_values("d")
            ax.errorbar(g["d"] * (1.06 if n > 2000 else 0.94), g["bias"], yerr=g["std"], marker=markers[problem],
                        ms=4, capsize=2, lw=0.8, color="C0" if k_gmm == 1 else "C3", mfc="none" if n > 2000 else None,
                        label=f"{problem}, k_gmm={k_gmm if k_gmm == 1 else 'paper'}, n={n:,}")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_xticks([4, 16, 30, 120], ["4", "16", "30", "120"])
        ax.set_xlabel("dimension of the centre vector")
        ax.set_ylabel(f"estimate − true KL (true KL ≈ {target})")
        ax.set_title("independent samples (the paper's estimate)" if mode == "independent"
                     else "common random numbers (the certified radii)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def second_term_plot(frame):
    """The second term of eq. (7) on the exact small case (:func:`vqdbook.experiments.radii.second_term_case`):
    exact value, the Monte-Carlo estimate and cap x flipped pixels, against eps (log-log)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    ax.plot(frame["eps"], frame["exact"], "k-", marker="o", ms=3, label="exact (closed form)")
    ax.plot(frame["eps"], frame["estimate"], "C3--", marker="s", ms=3, label="estimate (Monte Carlo, add-½)")
    flips = frame[frame["flips"] > 0]
    ax.plot(flips["eps"], flips["cap_times_flips"], "C0:", marker="^", ms=3, label="log(2·n_draws+1) × flipped pixels")
    ax.axvline(paper.NOISE["mnist"]["tau"], color="0.5", lw=0.7, ls="-.")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.text(paper.NOISE["mnist"]["tau"], ax.get_ylim()[0] * 1.5, " τ = 4/255", fontsize=7, color="0.4", va="bottom")
    ax.set_xlabel("ε (every pixel moved by +ε)")
    ax.set_ylabel("second term of eq. (7)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _paper_table_row(dataset: str, method: str, s, k):
    """The paper's row of ``method`` (s, k) in ``dataset``'s table: (ε in the paper's units, accuracies in %,
    "Table N"), or None."""
    table = paper.TABLE_DATASETS.get(dataset)
    if table is None:
        return None
    _, eps, rows = paper.TABLES[table]
    for label, s_, k_, accs in rows:
        if label == paper.METHOD_LABELS[method] and (s_, k_) == (s, k):
            return list(eps), list(accs), table.replace("table", "Table ")
    return None


def fig8_plot(frame, dataset: str, eps_reading: str = "pixels", title: str | None = None):
    """Figure 8: accuracy over ε for pRD vs t-pRD and swRD vs t-swRD (one panel per quantizer), from
    :func:`vqdbook.experiments.tquant.fig8_frame`. Lines: the oblivious protocol (PGD on the
    classifier the defense uses) with 95% bands; large markers: the adaptive worst case where it was run;
    black crosses: the paper's numbers for f∘Q where its table has the same (s, k) (Figure 8's pRD and swRD
    curves are those rows; the paper prints no numbers for t-pRD and t-swRD)."""
    import matplotlib.pyplot as plt

    sub = frame[(frame["dataset"] == dataset) & (frame["eps_reading"] == eps_reading)]
    methods = [m for m in ("prd", "swrd") if m in set(sub["method"])]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.1), sharey=True, squeeze=False)
    unit = paper.UNITS[dataset]
    for ax, m in zip(axes[0], methods):
        for model, g in sub[sub["method"] == m].groupby("model", sort=False):
            color = "C0" if model == "f" else "C3"
            o = g[g["threat"] == "oblivious"].sort_values("eps")
            label = o["label"].iloc[0] if len(o) else g["label"].iloc[0]
            if len(o):
                ax.plot(o["eps"] * unit, 100 * o["accuracy"], marker="o", ms=3, color=color,
                        label=f"{label}, oblivious (n = {int(o['n'].max())})")
                ax.fill_between(o["eps"] * unit, 100 * o["ci_lo"], 100 * o["ci_hi"], color=color, alpha=0.15)
            a = g[g["threat"] == "adaptive worst case"]
            if len(a):
                ax.errorbar(a["eps"] * unit, 100 * a["accuracy"],
                            yerr=[100 * (a["accuracy"] - a["ci_lo"]), 100 * (a["ci_hi"] - a["accuracy"])],
                            fmt="*", ms=11, color=color, capsize=3, label=f"{label}, adaptive worst case")
            theirs = _paper_table_row(dataset, m, g["s"].iloc[0], g["k"].iloc[0]) if model == "f" else None
            if theirs is not None:
                ax.plot(*theirs[:2], "x", color="k", ms=5, label=f"the paper, {label} ({theirs[2]})")
        ax.set_title(paper.METHOD_LABELS[m] + " vs t-" + paper.METHOD_LABELS[m], fontsize=9)
        suffix = paper.eps_unit_suffix(dataset)
        ax.set_xlabel("ε" + (f" ({suffix})" if suffix else "") + (" on normalized inputs"
                                                                   if eps_reading == "normalized" else ""))
        ax.set_ylim(-3, 103)
        # the legend goes under the panel, where it hides no point
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1, frameon=False)
    axes[0, 0].set_ylabel("accuracy (%)")
    fig.set_size_inches(4.2 * len(methods), 4.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
