"""Command line: ``vqdbook train|data|bench|run ...`` (``vqdbook -h``)."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_train(a):
    from .train import train

    kwargs = {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "n_train",
                                         "variant", "device", "notes", "precision", "method", "grad_clip")}
    if a.no_augment:
        kwargs["augment"] = False
    if a.eps_ramp:
        kwargs["adv"] = {"eps_ramp_epochs": a.eps_ramp}
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    card = train(a.dataset, a.arch, **kwargs)
    print(json.dumps({k: card.get(k) for k in ("name", "test_accuracy", "train_time_s", "sha256")}, indent=1))


def _cmd_data(a):
    from .data import make_bundles

    for name, sha in make_bundles().items():
        print(f"{sha}  {name}")


def _cmd_bench(a):
    from .bench import run_bench_quantizers
    from .results import write_record

    if a.what == "table1":
        from .bench import run_bench_table1

        result = run_bench_table1(n=a.n or 1000, seed=a.seed)
        path = write_record("bench_table1", result["params"], result)
        print(json.dumps({k: v for k, v in result.items() if k != "cells"}, indent=1))
    elif a.what == "kl":
        from .kl import bench_center_sampling

        result = bench_center_sampling()
        path = write_record("bench_kl", {"n_samples": result.get("n_samples")}, result)
        print(json.dumps(result, indent=1))
    else:
        from .bench import format_table

        result = run_bench_quantizers(**({} if a.n is None else {"n_images": a.n}), seed=a.seed)
        path = write_record("bench_quantizers", result["params"], result)
        print(format_table(result))
    print(f"record: {path}")


def _cmd_run(a):
    from . import experiments

    n = 10000 if a.full else (a.n or experiments.DEFAULT_N.get(a.what, 1000))
    if a.what in ("table1", "table2", "table3"):
        experiments.run_table(a.what, n=n, seed=a.seed, device=a.device, batch_size=a.batch_size, attack=a.attack)
        if a.attack != "pgd-oblivious":
            print(experiments.attack_strength_frame(a.what, n=n, seed=a.seed).to_string())
            return
        import pandas as pd

        with pd.option_context("display.width", 250, "display.max_columns", 60):
            print(experiments.table_frame(a.what, n=n, seed=a.seed))
        return
    if a.what in ("fig6", "certified"):
        from . import kl

        runner = kl.run_fig6 if a.what == "fig6" else kl.run_certified
        for dataset in a.datasets or ("mnist", "cifar10"):
            runner(dataset, n_images=a.n or 5, n_samples=10000 if a.full else a.samples, seed=a.seed, n_mc=a.mc)
        return
    if a.what == "variants":
        import pandas as pd

        a.variants = tuple(a.variants or experiments.VARIANTS)
        unknown = set(a.variants) - set(experiments.VARIANTS)
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {sorted(experiments.VARIANTS)}")
        for table in a.tables:
            experiments.run_variants(table, variants=a.variants, n=a.n, seed=a.seed, device=a.device)
            frame = experiments.variant_frame(table, variants=a.variants, n=a.n, seed=a.seed)
            with pd.option_context("display.width", 250, "display.max_columns", 60):
                print(frame)
                print(experiments.variant_summary(frame))
        return
    runner = getattr(experiments, f"run_{a.what}", None)
    if runner is None:
        raise SystemExit(f"vqdbook run {a.what}: not implemented yet")
    runner(n=n, seed=a.seed, device=a.device)


def main(argv=None):
    p = argparse.ArgumentParser(prog="vqdbook", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a classifier (seeded, resumable) and write weights + card")
    t.add_argument("--dataset", required=True, choices=["mnist", "cifar10", "svhn"])
    t.add_argument("--arch", required=True, choices=["mnist_cnn", "resnet20", "resnet18"])
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-train", type=int)
    t.add_argument("--variant")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int)
    t.add_argument("--method", choices=["natural", "fastat", "trades", "mart"], default="natural",
                   help="natural training (the paper's f) or an adversarial-training baseline")
    t.add_argument("--eps-ramp", type=float, default=0.0,
                   help="adversarial methods: grow ε linearly from 0 over this many epochs")
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    t.add_argument("--grad-clip", type=float, help="clip the gradient's global L2 norm to this value")
    t.add_argument("--notes", default="")
    t.set_defaults(func=_cmd_train)

    d = sub.add_parser("data", help="data utilities")
    d.add_argument("action", choices=["bundle"], help="bundle: write data/bundled/* from $VQDBOOK_DATA")
    d.set_defaults(func=_cmd_data)

    b = sub.add_parser("bench", help="benchmarks (write a record under data/results/)")
    b.add_argument("what", choices=["quantizers", "kl", "table1"])
    b.add_argument("--n", type=int, default=None,
                   help="images per configuration (quantizers: default 256; table1: test images, default 1000)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser("run", help="run a paper experiment; records go to data/results/ (resumable)")
    r.add_argument("what", choices=["table1", "table2", "table3", "fig4", "fig5", "fig6", "fig7", "certified",
                                   "variants"])
    r.add_argument("--n", type=int, help="test images, a stratified subset (default: tables 1000, figures 500)")
    r.add_argument("--full", action="store_true", help="the paper's 10,000 test images")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--attack", choices=["pgd-oblivious", "pgd-oblivious-strong"], default="pgd-oblivious",
                   help="tables: the paper's PGD on f, or a stronger one (100 steps, 3 restarts) to check it")
    r.add_argument("--batch-size", type=int, default=500,
                   help="tables: images per attack / quantizer batch (larger on a GPU; results do not depend on it "
                        "beyond the quantizer's random draws)")
    r.add_argument("--samples", type=int, default=2000, help="fig6/certified: centre-set samples per image")
    r.add_argument("--mc", type=int, default=20000,
                   help="fig6/certified: Monte-Carlo draws of eq. (9) (the book's 20,000; the paper used 100,000)")
    r.add_argument("--datasets", nargs="+", choices=["mnist", "cifar10", "svhn"], help="fig6/certified only")
    r.add_argument("--tables", nargs="+", choices=["table1", "table2"], default=["table1", "table2"],
                   help="variants only: the tables of the reproduction study")
    r.add_argument("--variants", nargs="+", default=None,
                   help="variants only: which of experiments.VARIANTS (default: all)")
    r.set_defaults(func=_cmd_run)

    a = p.parse_args(argv)
    a.func(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
