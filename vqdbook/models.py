"""Classifiers f: normalization inside the model, inputs in [0, 1].

Architectures:

* ``resnet18`` — the paper's base classifier (Sec. 4.1), CIFAR-style: 3×3 stem, stride 1, no
  max-pool (He et al. 2016 as adapted for 32×32 inputs; also used for MNIST with 1 channel).
* ``resnet20`` — He et al.'s CIFAR ResNet-20 (3 stages × 3 basic blocks, 16/32/64 channels);
  the CPU-sized default for 32×32 colour images (~0.27 M parameters).
* ``mnist_cnn`` — a small CNN, the CPU-sized default for MNIST.

``load_pretrained(dataset, arch)`` returns committed weights from ``data/weights/`` (fp16 on disk,
float32 in memory), after checking their SHA-256 against the model card beside them.

Variants: ``None`` is the naturally trained f of the paper; ``"fastat"``, ``"trades"``, ``"mart"`` are the
adversarially trained baselines; ``"t-prd"`` and ``"t-swrd"`` are Section 3.5's classifiers f̂ fine-tuned
on quantized training images (:data:`TQUANT_VARIANTS`, :func:`tquant_variant`, :func:`tquant_spec`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import PROJECT_ROOT, paper
from .data import spec
from .provenance import sha256_file
from .quantizers import QuantizerSpec

__all__ = ["ARCHS", "DEFAULT_ARCH", "WEIGHTS_DIR", "Normalize", "BasicBlock", "ResNet", "SmallCNN",
           "build_model", "model_stem", "weights_path", "card_path", "load_card", "list_cards",
           "save_weights", "load_pretrained", "predict", "accuracy", "cards_frame",
           "TQUANT_VARIANTS", "tquant_variant", "tquant_spec"]

WEIGHTS_DIR = PROJECT_ROOT / "data" / "weights"
ARCHS = ("mnist_cnn", "resnet20", "resnet18")
#: The architecture ``load_pretrained(dataset)`` uses when none is named.
DEFAULT_ARCH = {"mnist": "mnist_cnn", "cifar10": "resnet20", "svhn": "resnet20"}
#: Section 3.5's classifiers f̂ trained on quantized images ("t-pRD", "t-swRD"): quantizer -> the
#: variant name of their weights. RandDisc (``"t-randdisc"``) is not in the paper but trains the same way.
TQUANT_VARIANTS = {m: f"t-{m}" for m in paper.QUANTIZERS}


class Normalize(nn.Module):
    """(x - mean) / std per channel, so every model takes raw [0, 1] images."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stem with stride 1 and no max-pool."""

    def __init__(self, in_channels, widths, blocks, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (w, b) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            for j in range(b):
                layers.append(BasicBlock(cin, w, stride if j == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class SmallCNN(nn.Module):
    """Two conv blocks and an MLP head; ~99.3% on MNIST after a few CPU epochs."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(256, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def build_model(arch: str, dataset: str) -> nn.Sequential:
    """An untrained ``Normalize → network`` for ``dataset`` (``nn.Sequential(norm, net)``)."""
    ds = spec(dataset)
    if arch == "mnist_cnn":
        if ds.size != 28:
            raise ValueError(f"arch='mnist_cnn' expects 28x28 inputs (mnist); got dataset={dataset!r}")
        net = SmallCNN(ds.channels, len(ds.classes))
    elif arch == "resnet20":
        net = ResNet(ds.channels, (16, 32, 64), (3, 3, 3), len(ds.classes))
    elif arch == "resnet18":
        net = ResNet(ds.channels, (64, 128, 256, 512), (2, 2, 2, 2), len(ds.classes))
    else:
        raise ValueError(f"unknown arch={arch!r}; allowed: {ARCHS}")
    return nn.Sequential(Normalize(ds.mean, ds.std), net)


def tquant_spec(dataset: str, method: str) -> QuantizerSpec:
    """The quantizer the committed ``t-<method>`` classifier of ``dataset`` was trained with.

    CIFAR-10 and SVHN: Figure 8's (s, k) (:data:`vqdbook.paper.FIG8`: CIFAR-10 pRD s=2 k=10, swRD
    s=4 k=25); MNIST, which Figure 8 does not show: Table 1's (:func:`vqdbook.paper.default_sk`). RandDisc
    (not in Figure 8): its table's first row. Noise and blend are Section 4.1's (:data:`vqdbook.paper.NOISE`).

    Examples::

        >>> from vqdbook.models import tquant_spec
        >>> tquant_spec("cifar10", "swrd").label, tquant_spec("mnist", "prd").label
        ('swRD (s=4, k=25)', 'pRD (s=2, k=2)')
    """
    name = spec(dataset).name
    m = QuantizerSpec.canonical(method)
    if m not in TQUANT_VARIANTS:
        raise ValueError(f"method must be one of {tuple(TQUANT_VARIANTS)} (Section 3.5); got {method!r}")
    s, k = paper.FIG8.get(name, {}).get(m) or paper.default_sk(name, m)
    return QuantizerSpec.paper(name, m, s, k)


def tquant_variant(method: str | QuantizerSpec, dataset: str | None = None, *, frozen: bool = False) -> str:
    """The variant name of a classifier fine-tuned on ``method``-quantized images (Section 3.5).

    A method name gives the committed variant, ``"t-prd"`` / ``"t-swrd"`` (trained with
    :func:`tquant_spec`); a :class:`~vqdbook.quantizers.QuantizerSpec` with its ``dataset`` gives the
    same name when it is :func:`tquant_spec`'s, else one naming its (s, k) (``"t-prd-s3-k5"``, plus a
    short hash of the parameters when the noise or k-means options differ from the paper's).
    ``frozen=True`` (one fixed quantized copy of the training set) appends ``"-frozen"``.

    Examples::

        >>> from vqdbook.models import tquant_variant
        >>> from vqdbook.quantizers import QuantizerSpec
        >>> tquant_variant("swrd"), tquant_variant(QuantizerSpec.paper("cifar10", "prd", 3, 5), "cifar10")
        ('t-swrd', 't-prd-s3-k5')
    """
    suffix = "-frozen" if frozen else ""
    if isinstance(method, QuantizerSpec):
        q = method
        if q.method not in TQUANT_VARIANTS:
            raise ValueError(f"method must be one of {tuple(TQUANT_VARIANTS)} (Section 3.5); got {q.method!r}")
        if dataset is None:
            raise TypeError("tquant_variant(spec, dataset): the dataset is needed to compare with the paper's settings")
        base = TQUANT_VARIANTS[q.method]
        if q == tquant_spec(dataset, q.method):
            return base + suffix
        name = f"{base}-s{q.s}-k{q.k}"
        if q != QuantizerSpec.paper(spec(dataset).name, q.method, q.s, q.k):
            import hashlib

            digest = hashlib.sha256(json.dumps(q.params(), sort_keys=True).encode()).hexdigest()[:6]
            name += f"-{digest}"
        return name + suffix
    m = QuantizerSpec.canonical(method)
    if m not in TQUANT_VARIANTS:
        raise ValueError(f"method must be one of {tuple(TQUANT_VARIANTS)} (Section 3.5); got {method!r}")
    return TQUANT_VARIANTS[m] + suffix


def model_stem(dataset: str, arch: str, variant: str | None = None) -> str:
    """File stem of a trained model: ``<dataset>_<arch>[_<variant>]`` (variant: e.g. ``fastat``)."""
    return f"{spec(dataset).name}_{arch}" + (f"_{variant}" if variant else "")


def weights_path(dataset: str, arch: str, variant: str | None = None) -> Path:
    return WEIGHTS_DIR / f"{model_stem(dataset, arch, variant)}.pt"


def card_path(dataset: str, arch: str, variant: str | None = None) -> Path:
    return WEIGHTS_DIR / f"{model_stem(dataset, arch, variant)}.json"


def load_card(dataset: str, arch: str | None = None, variant: str | None = None) -> dict:
    arch = arch or DEFAULT_ARCH[spec(dataset).name]
    path = card_path(dataset, arch, variant)
    if not path.is_file():
        how = f"vqdbook train --dataset {dataset} --arch {arch}"
        tq = {v: m for m, v in TQUANT_VARIANTS.items()}
        if variant in tq:
            how += f" --quantizer {tq[variant]} --from natural"
        raise FileNotFoundError(f"no model card {path}; train it with `{how}`")
    return json.loads(path.read_text())


def list_cards() -> list[dict]:
    """Every committed model card, sorted by dataset then architecture."""
    cards = [json.loads(p.read_text()) for p in sorted(WEIGHTS_DIR.glob("*.json"))]
    return sorted(cards, key=lambda c: (c["dataset"], ARCHS.index(c["arch"]) if c["arch"] in ARCHS else 99))


def save_weights(model: nn.Module, path: Path) -> str:
    """Save a state dict in fp16 (halves the repository size; accuracy is re-measured after)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return sha256_file(path)


def load_pretrained(dataset: str, arch: str | None = None, variant: str | None = None, *,
                    map_location="cpu") -> nn.Module:
    """Committed weights for ``dataset`` (``arch`` defaults to :data:`DEFAULT_ARCH`), in eval mode.

    ``variant`` selects another training of the same architecture (e.g. an adversarially
    trained baseline); ``None`` is the naturally trained classifier f of the paper.

    The weights' SHA-256 must match the model card; they load with ``weights_only=True``.
    """
    name = spec(dataset).name
    arch = arch or DEFAULT_ARCH[name]
    if arch not in ARCHS:
        raise ValueError(f"unknown arch={arch!r}; allowed: {ARCHS}")
    card = load_card(name, arch, variant)
    path = weights_path(name, arch, variant)
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} are missing (card exists); re-run training or restore the file")
    actual = sha256_file(path)
    if actual != card["sha256"]:
        raise RuntimeError(f"{path} does not match its card: SHA-256 {actual} != {card['sha256']}")
    model = build_model(arch, name)
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels for ``x`` (N,C,H,W) in [0,1], batched; restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (predict(model, x, batch_size) == y).float().mean().item()


def cards_frame():
    """The committed model cards as a table (pandas DataFrame), with the paper's ResNet-18 beside."""
    import pandas as pd

    from .paper import CLEAN_ACCURACY

    rows = []
    for c in list_cards():
        hw = c.get("hardware", {})
        rows.append({
            "model": c["name"], "dataset": c["dataset"], "arch": c["arch"],
            "variant": c.get("variant") or "natural", "parameters": c.get("n_params"),
            "epochs": c.get("epochs"), "test accuracy (%)": round(100 * c["test_accuracy"], 2),
            "test images": c.get("n_test"),
            "paper ResNet-18 (%)": CLEAN_ACCURACY.get(c["dataset"]),
            "train time (min)": round(c.get("train_time_s", 0) / 60, 1),
            "trained on": hw.get("gpu") or f"{hw.get('cpu_count')} CPU cores ({hw.get('cpu', '?')})",
            "commit": (c.get("commit") or "?")[:10],
        })
    return pd.DataFrame(rows)
