"""Command line: ``vqdbook train|data|bench|run ...`` (``vqdbook -h``).

Every choice comes from the package's registries (datasets, architectures, training methods,
experiments, attacks, variants, benchmarks), combinations the code rejects are refused when the
command line is parsed, and records are written by the functions called here, never by the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


def _train_quantizer(a):
    """``train --quantizer M [--s S] [--k K]``: the QuantizerSpec (the committed variant's settings,
    :func:`vqdbook.models.tquant_spec`, with ``--s`` / ``--k`` replacing its s, k), or None."""
    if a.quantizer is None:
        return None
    from .models import tquant_spec

    q = tquant_spec(a.dataset, a.quantizer)
    changes = {k: v for k, v in (("s", a.s), ("k", a.k)) if v is not None}
    return q.replace(**changes) if changes else q


def _cmd_train(a):
    from .data import DataUnavailableError
    from .train import train

    kwargs = {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "n_train",
                                         "variant", "device", "notes", "precision", "method", "grad_clip",
                                         "frozen_draw", "init", "n_test")}
    kwargs["quantizer"] = _train_quantizer(a)
    if a.no_augment:
        kwargs["augment"] = False
    if a.eps_ramp:
        kwargs["adv"] = {"eps_ramp_epochs": a.eps_ramp}
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    try:
        card = train(a.dataset, a.arch, **kwargs)
    except DataUnavailableError as e:   # the loader's message says what to set or download
        sys.exit(f"vqdbook train: {e}")
    keys = ("name", "test_accuracy", "quantized_test_accuracy", "natural_quantized_test_accuracy",
            "train_time_s", "sha256")
    print(json.dumps({k: card[k] for k in keys if k in card}, indent=1))


def _cmd_data(a):
    from .data import make_bundles

    for name, sha in make_bundles().items():
        print(f"{sha}  {name}")


def _cmd_bench(a):
    from .bench import format_table, record_benchmark

    result, path = record_benchmark(a.what, n=a.n, seed=a.seed)
    if a.what == "quantizers":
        print(format_table(result))
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "cells"}, indent=1))
    print(f"record: {path}")


def _print_frame(frame):
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(frame.to_string(index=False))


def _cmd_run(a):
    from . import paper
    from .experiments import certified, fig6, figures, reproduction, tables

    if a.what in paper.TABLES:
        n = 10000 if a.full else (a.n or tables.DEFAULT_N)
        tables.run_table(a.what, n=n, seed=a.seed, device=a.device, batch_size=a.batch_size, attack=a.attack)
        if a.attack != "pgd-oblivious":
            _print_frame(tables.attack_strength_frame(a.what, n=n, seed=a.seed))
        else:
            _print_frame(tables.table_frame(a.what, n=n, seed=a.seed))
    elif a.what in ("fig4", "fig5", "fig7"):
        default = figures.FIG7_N if a.what == "fig7" else figures.DEFAULT_N
        n = 10000 if a.full else (a.n or default)
        runner = getattr(figures, f"run_{a.what}")
        runner(**({"datasets": tuple(a.datasets)} if a.datasets else {}), n=n, seed=a.seed, device=a.device)
    elif a.what in ("fig6", "certified"):
        runner = fig6.run_fig6 if a.what == "fig6" else certified.run_certified
        for dataset in a.datasets or tuple(paper.FIG6):
            runner(dataset, n_images=a.n or fig6.N_IMAGES, n_samples=a.samples, seed=a.seed, n_mc=a.mc)
    elif a.what == "adaptive":
        from .experiments import adaptive

        budget = {k: getattr(a, k) for k in ("steps", "eot", "queries", "votes") if getattr(a, k) is not None}
        for dataset in a.datasets or tuple(adaptive.BITDEPTH):
            eps = None if a.eps is None else [e / paper.UNITS[dataset] for e in a.eps]
            adaptive.run_adaptive_grid(dataset, eps, n=a.n or adaptive.DEFAULT_N, attacks=a.attacks,
                                       methods=a.methods, eps_reading=a.eps_reading, seed=a.seed, device=a.device,
                                       budget=budget)
        frame = adaptive.adaptive_frame()
        _print_frame(frame[frame["attack"] == "worst-case"][["dataset", "label", "eps", "eps_reading", "n",
                                                              "accuracy", "attacks"]])
    elif a.what == "variants":
        variants = tuple(a.variants or reproduction.VARIANTS)
        for table in a.tables:
            reproduction.run_variants(table, variants=variants, n=a.n, seed=a.seed, device=a.device)
            frame = reproduction.variant_frame(table, variants=variants, n=a.n, seed=a.seed)
            _print_frame(frame)
            _print_frame(reproduction.variant_summary(frame))


def run_targets() -> dict[str, str]:
    """What ``vqdbook run`` can compute: name -> description (from the package's registries)."""
    from . import paper

    out = {t: f"Table {t[-1]} ({d}), robust_accuracy records" for t, (d, _, _) in paper.TABLES.items()}
    out.update({"fig4": "Figure 4: accuracy vs s and k", "fig5": "Figure 5: accuracy vs noise",
                "fig6": "Figure 6: KL estimates (kl records)", "fig7": "Figure 7: denoising (fig7 records)",
                "certified": "Theorem 1's certified accuracy (certified records)",
                "adaptive": "adaptive attacks on f∘Q (adaptive records; worst case per image)",
                "variants": "the reproduction study"})
    return out


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .bench import BENCHMARKS
    from .data import DATASETS
    from .experiments.adaptive import EPS_READINGS, attack_suite
    from .experiments.fig6 import N_SAMPLES
    from .quantizers import METHODS

    BASELINES = ("none", "fastat")
    from .experiments.reproduction import VARIANT_SETTINGS, VARIANTS
    from .experiments.tables import TABLE_ATTACKS
    from .kl import N_MC
    from .models import ARCHS, TQUANT_VARIANTS
    from .train import ADV_METHODS, FINETUNE, INITS

    p = argparse.ArgumentParser(prog="vqdbook", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"vqdbook {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a classifier (seeded, resumable) and write weights + card")
    t.add_argument("--dataset", required=True, choices=list(DATASETS))
    t.add_argument("--arch", required=True, choices=list(ARCHS))
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-train", type=int)
    t.add_argument("--n-test", type=int, help="the card's accuracies on a stratified test subset (default: all)")
    t.add_argument("--variant")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int)
    t.add_argument("--method", choices=list(ADV_METHODS), default="natural",
                   help="natural training (the paper's f) or an adversarial-training baseline")
    t.add_argument("--eps-ramp", type=float, default=0.0,
                   help="adversarial methods: grow ε linearly from 0 over this many epochs")
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    t.add_argument("--grad-clip", type=float, help="clip the gradient's global L2 norm to this value")
    t.add_argument("--notes", default="")
    t.add_argument("--quantizer", choices=list(TQUANT_VARIANTS),
                   help="train on quantized images (Section 3.5: t-pRD, t-swRD), quantized on the fly with "
                        "fresh draws per batch; s, k default to Figure 8's (MNIST: Table 1's)")
    t.add_argument("--s", type=int, help="--quantizer: patch / window size")
    t.add_argument("--k", type=int, help="--quantizer: codebook size")
    t.add_argument("--frozen-draw", action="store_true",
                   help="--quantizer: quantize the training set once (one seeded draw) instead of every batch")
    t.add_argument("--from", dest="init", choices=[i for i in INITS if i],
                   help="start from the committed natural weights and fine-tune (epochs and LR default to "
                        + ", ".join(f"{d}: {v['epochs']} epochs at peak LR {v['lr']}" for d, v in FINETUNE.items())
                        + ")")
    t.set_defaults(func=_cmd_train)

    d = sub.add_parser("data", help="data utilities")
    d.add_argument("action", choices=["bundle"], help="bundle: write data/bundled/* from $VQDBOOK_DATA")
    d.set_defaults(func=_cmd_data)

    b = sub.add_parser("bench", help="benchmarks (write a record under data/results/)",
                       description="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    b.add_argument("what", choices=list(BENCHMARKS))
    b.add_argument("--n", type=int, default=None,
                   help="images per configuration (quantizers: default 256; table1: test images, default 1000)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_cmd_bench)

    targets = run_targets()
    r = sub.add_parser("run", help="run a paper experiment; records go to data/results/ (resumable)",
                       description="; ".join(f"{k}: {v}" for k, v in targets.items()))
    r.add_argument("what", choices=list(targets))
    r.add_argument("--n", type=int, help="test images, a stratified subset (default: the runner's)")
    r.add_argument("--full", action="store_true", help="tables and figures: the paper's 10,000 test images")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--attack", choices=list(TABLE_ATTACKS), default=TABLE_ATTACKS[0],
                   help="tables: the paper's PGD on f, or a stronger one (100 steps, 3 restarts) to check it")
    r.add_argument("--batch-size", type=int, default=500,
                   help="tables: images per attack / quantizer batch (larger on a GPU)")
    r.add_argument("--samples", type=int, default=N_SAMPLES, help="fig6/certified: centre-set samples per image")
    r.add_argument("--mc", type=int, default=N_MC, help="fig6/certified: Monte-Carlo draws of eq. (9)")
    r.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="figures, fig6 and certified only")
    r.add_argument("--tables", nargs="+", choices=list(VARIANT_SETTINGS), default=list(VARIANT_SETTINGS),
                   help="variants only: the tables of the reproduction study")
    r.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   help="variants only: which variants (default: all)")
    r.add_argument("--eps", type=float, nargs="+", help="adaptive: radii in the paper's units (default: the table's)")
    r.add_argument("--eps-reading", choices=list(EPS_READINGS), default=EPS_READINGS[0],
                   help="adaptive: ε on [0, 1] pixels (the paper's protocol) or on normalized inputs")
    r.add_argument("--attacks", nargs="+", choices=list(attack_suite("mnist")), help="adaptive: which attacks")
    r.add_argument("--methods", nargs="+", choices=list(METHODS) + list(BASELINES),
                   help="adaptive: which defenses (default: all)")
    for name, what in (("steps", "iterations of the EOT attacks"), ("eot", "EOT draws per step"),
                       ("queries", "Square's queries"), ("votes", "Square's votes per query")):
        r.add_argument(f"--{name}", type=int, help=f"adaptive: {what} (default: adaptive.BUDGET)")
    r.set_defaults(func=_cmd_run)
    return p


def _refuse(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Combinations the code would reject, refused at parse time with a message."""
    if a.cmd == "train":
        _refuse_train(p, a)
    if a.cmd != "run":
        return
    from . import paper

    if a.what in ("fig6", "certified") and a.datasets:
        bad = [d for d in a.datasets if d not in paper.FIG6]
        if bad:
            p.error(f"run {a.what}: the paper's KL estimate (Section 4.2) has settings for "
                    f"{', '.join(paper.FIG6)} only, not {', '.join(bad)}")
    if a.what in ("fig4", "fig7") and a.datasets:
        grid = paper.FIG4_GRID if a.what == "fig4" else paper.FIG7
        bad = [d for d in a.datasets if d not in grid]
        if bad:
            p.error(f"run {a.what}: settings exist for {', '.join(grid)} only, not {', '.join(bad)}")
    if a.what == "fig5" and a.datasets:
        bad = [d for d in a.datasets if d not in paper.NOISE or d == "mnist"]
        if bad:
            p.error(f"run fig5: the noise sweep is for the 0–255 datasets (cifar10, svhn), not {', '.join(bad)}")
    if a.what == "adaptive" and a.datasets:
        from .experiments.adaptive import BITDEPTH

        bad = [d for d in a.datasets if d not in BITDEPTH]
        if bad:
            p.error(f"run adaptive: runs on {', '.join(BITDEPTH)} only (the paper's Tables 1 and 2), "
                    f"not {', '.join(bad)}")
    if a.what not in ("fig4", "fig5", "fig7", "fig6", "certified", "adaptive") and a.datasets:
        p.error(f"run {a.what}: --datasets applies to figures, fig6, certified and adaptive only")
    adaptive_only = ("eps", "attacks", "methods", "steps", "eot", "queries", "votes")
    if a.what != "adaptive" and (any(getattr(a, k) is not None for k in adaptive_only)
                                 or a.eps_reading != "pixels"):
        p.error(f"run {a.what}: --eps, --eps-reading, --attacks, --methods and the budgets apply to adaptive only")
    if a.attack != "pgd-oblivious" and a.what not in paper.TABLES:
        p.error(f"run {a.what}: --attack applies to the tables only")
    if a.full and a.what in ("fig6", "certified", "variants"):
        p.error(f"run {a.what}: --full applies to tables and figures; use --n")
    for name in ("n", "samples", "mc", "batch_size", "steps", "eot", "queries", "votes"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _refuse_train(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "n_train", "n_test", "threads", "s", "k"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"train: --{name.replace('_', '-')} must be >= 1, got {v}")
    if a.quantizer is None:
        given = [f for f, v in (("--s", a.s), ("--k", a.k), ("--frozen-draw", a.frozen_draw)) if v]
        if given:
            p.error(f"train: {' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --quantizer "
                    "(the quantizer the training images go through)")
        if a.init and not a.variant:
            p.error("train: --from natural without --quantizer needs --variant (or the natural weights would be "
                    "overwritten by their own fine-tuning)")
        return
    if a.method != "natural":
        p.error(f"train: --quantizer trains naturally on quantized images (Section 3.5); not with --method {a.method}")
    try:
        q = _train_quantizer(a)
        from .data import spec

        ds = spec(a.dataset)
        import torch

        q.check(torch.zeros(1, ds.channels, ds.size, ds.size))
    except (ValueError, TypeError) as e:
        p.error(f"train --quantizer {a.quantizer}: {e}")


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    _refuse(p, a)
    a.func(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
