"""ipywidgets explorers for the book. Each returns a widget whose state renders in the static book
(the displayed picture is an ``ipywidgets.Image`` holding PNG bytes, saved with the notebook)."""

from __future__ import annotations

import io

import numpy as np

from . import paper

__all__ = ["quantizer_explorer", "denoising_explorer", "kl_explorer", "quantize_one", "quantization_figure",
           "center_tiles"]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _eps_description(name: str) -> str:
    """The ε slider's label, in the paper's units for the dataset: "ε" (MNIST) or "ε (/255)"."""
    suffix = paper.eps_unit_suffix(name)
    return f"ε ({suffix})" if suffix else "ε"


def center_tiles(centers, channels: int, s: int):
    """Centres (k, C*s*s) in unfold order → a list of (C, s, s) tensors, clamped to [0, 1] for display."""
    return [c.reshape(channels, s, s).clamp(0, 1) for c in centers]


def quantization_figure(x, x_hat, centers, s: int, title: str = ""):
    """Original | quantized | |difference| (amplified) | the k centres as patch tiles."""
    import matplotlib.pyplot as plt

    from .plots import show_image

    channels = x.shape[0]
    tiles = center_tiles(centers, channels, s)
    k = len(tiles)
    cols = int(np.ceil(np.sqrt(k)))
    fig = plt.figure(figsize=(9.6, 2.7))
    gs = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 1.05])
    show_image(fig.add_subplot(gs[0]), x, "original x")
    show_image(fig.add_subplot(gs[1]), x_hat, "quantized Q(x)")
    diff = (x_hat - x).abs()
    amp = float(1 / max(diff.max().item(), 1e-6))
    show_image(fig.add_subplot(gs[2]), (diff * amp).clamp(0, 1).mean(0, keepdim=True),
               f"|Q(x) − x| × {amp:.1f}")
    sub = gs[3].subgridspec(cols, cols, wspace=0.08, hspace=0.08)
    for i in range(cols * cols):
        ax = fig.add_subplot(sub[i // cols, i % cols])
        if i < k:
            show_image(ax, tiles[i])
        else:
            ax.axis("off")
    fig.text(0.79, 0.95, f"{k} centres ({s}×{s} patches)", ha="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9, y=1.04)
    return fig


def quantize_one(x, quantizer, seed: int = 0):
    """Quantize one image (C,H,W) with a :class:`vqdbook.quantizers.QuantizerSpec` →
    (x_hat (C,H,W), centres (k, C*s*s)); seeded."""
    import torch

    out, c = quantizer(x.unsqueeze(0), torch.Generator().manual_seed(seed), return_centers=True)
    return out[0], c[0]


def quantizer_explorer(dataset: str = "cifar10", index: int = 0, method: str = "swrd", s: int = 2, k: int = 10,
                       sigma_255: float = 4.0, tau_255: float = 4.0, beta: float | None = None, n_images: int = 50,
                       seed: int = 0):
    """Sliders for dataset, image, method, s, k, σ, τ, β → original, Q(x), difference, centres.

    σ and τ are entered on the paper's 0–255 scale (the package divides by 255); β is entered on the
    [0, 1] scale the package uses (the paper's CIFAR β = 0.1 is 0.1·255² ≈ 6,500 here).
    """
    import ipywidgets as W

    from .data import load_dataset
    from .quantizers import QuantizerSpec

    cache = {}

    def images(name):
        if name not in cache:
            cache[name] = load_dataset(name, "test", n=n_images)
        return cache[name]

    beta = paper.NOISE[dataset]["beta"] if beta is None else beta
    style = {"description_width": "90px"}
    w_data = W.Dropdown(options=list(paper.FIG6), value=dataset, description="dataset", style=style)
    w_index = W.IntSlider(value=index, min=0, max=n_images - 1, description="image", style=style)
    w_method = W.ToggleButtons(options=[(v, key) for key, v in paper.METHOD_LABELS.items()], value=method,
                               description="method", style=style)
    w_s = W.IntSlider(value=s, min=1, max=6, description="s (window)", style=style)
    w_k = W.IntSlider(value=k, min=1, max=40, description="k (centres)", style=style)
    w_sigma = W.FloatSlider(value=sigma_255, min=0, max=32, step=0.5, description="σ (/255)", style=style)
    w_tau = W.FloatSlider(value=tau_255, min=0, max=32, step=0.5, description="τ (/255)", style=style)
    w_beta = W.FloatLogSlider(value=beta, base=10, min=-1, max=6, step=0.1, description="β", style=style)
    w_seed = W.IntText(value=seed, description="seed", style=style, layout=W.Layout(width="180px"))
    img = W.Image(format="png")
    status = W.HTML()

    def update(*_):
        import time

        t0 = time.time()
        x, y = images(w_data.value)
        xi = x[w_index.value]
        m = w_method.value
        w_s.disabled = m == "randdisc"
        w_beta.disabled = m != "swrd"
        try:
            q = QuantizerSpec(m, 1 if m == "randdisc" else w_s.value, w_k.value, w_sigma.value / 255,
                              w_tau.value / 255, w_beta.value if m == "swrd" else None)
            q.check(xi[None])
            x_hat, centers = quantize_one(xi, q, w_seed.value)
        except (ValueError, TypeError) as err:
            status.value = f"<span style='color:#b00'>{err}</span>"
            return
        s_used = q.s
        title = (f"{q.name}: s={s_used}, k={w_k.value}, σ={w_sigma.value:g}/255, "
                 f"τ={w_tau.value:g}/255" + (f", β={w_beta.value:.3g}" if m == "swrd" else ""))
        img.value = _png(quantization_figure(xi, x_hat, centers, s_used, title))
        mse = (x_hat - xi).pow(2).mean().item()
        status.value = (f"label {int(y[w_index.value])} · MSE(Q(x), x) = {mse:.5f} · "
                        f"update {time.time() - t0:.2f} s")

    for w in (w_data, w_index, w_method, w_s, w_k, w_sigma, w_tau, w_beta, w_seed):
        w.observe(update, names="value")
    update()
    controls = W.HBox([W.VBox([w_data, w_method, w_index, w_seed]), W.VBox([w_s, w_k, w_sigma, w_tau, w_beta])])
    box = W.VBox([controls, img, status])
    box.add_class("vqdbook-quantizer-explorer")
    return box


def denoising_explorer(dataset: str = "mnist", index: int = 0, eps: float | None = None, s: int | None = None,
                       k: int | None = None, n_images: int = 50, seed: int = 0):
    """Pick an image, ε and the quantizer parameters; see x, x′ (PGD on f), Q(x), Q(x′) per quantizer.

    ε is entered on the paper's scale for the dataset (MNIST [0, 1]; CIFAR-10 0–255).
    """
    import ipywidgets as W

    from .data import load_dataset, spec
    from .experiments.figures import denoising_examples
    from .models import load_pretrained
    from .plots import figure7

    name = spec(dataset).name
    cfg = {**paper.FIG7[name], **{key: v for key, v in dict(eps=eps, s=s, k=k).items() if v is not None}}
    unit = paper.UNITS[name]
    x_all, y_all = load_dataset(name, "test", n=n_images)
    net = load_pretrained(name)
    style = {"description_width": "90px"}
    w_index = W.IntSlider(value=index, min=0, max=n_images - 1, description="image", style=style)
    w_eps = W.FloatSlider(value=cfg["eps"] * unit, min=0, max=0.4 if unit == 1 else 32,
                          step=0.01 if unit == 1 else 1, description=_eps_description(name), style=style)
    w_s = W.IntSlider(value=cfg["s"], min=1, max=6, description="s", style=style)
    w_k = W.IntSlider(value=cfg["k"], min=1, max=40, description="k", style=style)
    img = W.Image(format="png")
    status = W.HTML()

    def update(*_):
        import time

        t0 = time.time()
        i = w_index.value
        try:
            ex = denoising_examples(name, x_all[i:i + 1], y_all[i:i + 1], eps=w_eps.value / unit, s=w_s.value,
                                    k=w_k.value, seed=seed, net=net)
        except (ValueError, TypeError) as err:
            status.value = f"<span style='color:#b00'>{err}</span>"
            return
        img.value = _png(figure7(ex, spec(name).classes, scale=1.5))
        status.value = f"true label {spec(name).classes[int(y_all[i])]} · update {time.time() - t0:.2f} s"

    for w in (w_index, w_eps, w_s, w_k):
        w.observe(update, names="value")
    update()
    box = W.VBox([W.HBox([W.VBox([w_index, w_eps]), W.VBox([w_s, w_k])]), img, status])
    box.add_class("vqdbook-denoising-explorer")
    return box


def kl_explorer(dataset: str = "mnist", index: int = 0, eps: float | None = None, method: str = "prd",
                n_samples: int = 500, n_images: int = 10, seed: int = 0):
    """Pick an image, ε (PGD on f) and a quantizer: the two clouds of sorted centre vectors
    (C | X=x and C | X=x′, projected on their top two principal components) and the eq. (9) KL."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    import torch

    from . import kl
    from .attacks import paper_pgd
    from .data import load_dataset, spec
    from .experiments.fig6 import kl_quantizer
    from .models import load_pretrained

    name = spec(dataset).name
    k_gmm = paper.FIG6[name]["k_gmm"]
    unit = paper.UNITS[name]
    eps = max(paper.FIG6[name]["eps"]) if eps is None else eps
    x_all, y_all = load_dataset(name, "test", n=n_images)
    net = load_pretrained(name)
    style = {"description_width": "90px"}
    w_index = W.IntSlider(value=index, min=0, max=n_images - 1, description="image", style=style)
    w_eps = W.FloatSlider(value=eps * unit, min=0, max=0.4 if unit == 1 else 32, step=0.01 if unit == 1 else 1,
                          description=_eps_description(name), style=style)
    w_method = W.ToggleButtons(options=[(v, key) for key, v in paper.METHOD_LABELS.items()], value=method,
                               description="method", style=style)
    img = W.Image(format="png")
    status = W.HTML()

    def update(*_):
        import time

        t0 = time.time()
        i, m = w_index.value, w_method.value
        xi, yi = x_all[i:i + 1], y_all[i:i + 1]
        x_adv = paper_pgd(net, name, w_eps.value / unit, generator=torch.Generator().manual_seed(seed))(xi, yi)
        quantizer = kl_quantizer(name, m)
        p = kl.sample_center_vectors(xi[0], quantizer, n_samples, torch.Generator().manual_seed(seed))
        q = kl.sample_center_vectors(x_adv[0], quantizer, n_samples, torch.Generator().manual_seed(seed))
        value = kl.kl_gmm(p, q, k_gmm, seed=seed)
        both = torch.cat([p, q]).double()
        mean = both.mean(0)
        _, _, v = torch.linalg.svd(both - mean, full_matrices=False)
        pp, qq = ((p.double() - mean) @ v[:2].T).numpy(), ((q.double() - mean) @ v[:2].T).numpy()
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        ax.scatter(pp[:, 0], pp[:, 1], s=4, alpha=0.4, label="C | X = x")
        ax.scatter(qq[:, 0], qq[:, 1], s=4, alpha=0.4, label="C | X = x′")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=8, markerscale=3)
        ax.set_title(f"{quantizer.name}, ε = {w_eps.value:g}{paper.eps_unit_suffix(name)}: KL ≈ {value:.1f}",
                     fontsize=9)
        img.value = _png(fig)
        status.value = f"{n_samples} samples per cloud, k_gmm = {k_gmm} · update {time.time() - t0:.1f} s"

    for w in (w_index, w_eps, w_method):
        w.observe(update, names="value")
    update()
    box = W.VBox([W.HBox([W.VBox([w_index, w_eps]), w_method]), img, status])
    box.add_class("vqdbook-kl-explorer")
    return box
