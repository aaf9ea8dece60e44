"""Adaptive attacks on f∘Q: batched EOT, APGD, the runner's records and the per-image worst case."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from vqdbook import Defended, paper, paper_quantizer, results
from vqdbook.attacks import APGD, PGD, AttackSpec, eot_gradient
from vqdbook.checks import NotConvergedWarning, RandomizedDefenseWarning, check_convergence
from vqdbook.data import load_dataset
from vqdbook.experiments import adaptive
from vqdbook.experiments.adversarial import NO_DEFENSE, classifier
from vqdbook.metrics import wilson_interval
from vqdbook.models import load_pretrained
from vqdbook.quantizers import QuantizerSpec


@pytest.fixture(scope="module")
def mnist():
    x, y = load_dataset("mnist", "test", 100)
    return load_pretrained("mnist").eval(), x, y


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    return tmp_path


def _swrd_defended(net, seed=0, **kw):
    return Defended(net, paper_quantizer("mnist", "swrd", s=2, k=2, generator=torch.Generator().manual_seed(seed)),
                    **kw)


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_batched_eot_has_the_distribution_of_separate_draws(mnist):
    """The m draws of one EOT step as one B·m batch give the same gradient distribution as m
    separate forward passes: two-sample KS tests on the gradient's projections."""
    net, x, y = mnist
    xb, yb = x[:4], y[:4]
    model = _swrd_defended(net, bpda=True)
    m, reps = 8, 40
    u = torch.randn(xb[0].shape, generator=torch.Generator().manual_seed(1))
    batched, looped = [], []
    torch.manual_seed(0)
    for _ in range(reps):
        g, _, _ = eot_gradient(model, xb, yb, m)
        batched.append((g * u).flatten(1).sum(1))
        g_loop = sum(eot_gradient(model, xb, yb, 1)[0] for _ in range(m))
        looped.append((g_loop * u).flatten(1).sum(1))
    batched, looped = torch.stack(batched), torch.stack(looped)      # (reps, images)
    for i in range(len(xb)):
        p = stats.ks_2samp(batched[:, i].numpy(), looped[:, i].numpy()).pvalue
        assert p > 0.001, (i, p)
    # and the batched estimate is the sum of m draws: its spread is that of a sum, not of one draw
    single = torch.stack([(eot_gradient(model, xb, yb, 1)[0] * u).flatten(1).sum(1) for _ in range(reps)])
    assert float(batched.std(0).mean()) > 1.5 * float(single.std(0).mean())


def test_undefended_model_adaptive_equals_plain_pgd(results_dir):
    """Without a quantizer the adaptive runner is plain PGD on f: the same examples, the same score."""
    a = AttackSpec("pgd", "adaptive", steps=10, alpha_over_eps=0.25)
    p = adaptive.adaptive_params("mnist", NO_DEFENSE, 0.2, a, 60)
    res = adaptive.run_adaptive(**p)
    net = classifier("mnist")
    x, y = load_dataset("mnist", "test", 60)
    x_adv = PGD(net, eps=0.2, alpha=0.05, steps=10, generator=torch.Generator().manual_seed(0))(x, y)
    with torch.no_grad():
        ok = (net(x_adv).argmax(1) == y).tolist()
    assert res["correct_bits"] == "".join("1" if b else "0" for b in ok)


def test_every_defense_falls_at_a_large_eps(mnist):
    """At ε = 0.5 an image can be made uniformly grey: every defense, attacked adaptively, is near 0."""
    net, x, y = mnist
    x, y = x[:40], y[:40]
    torch.manual_seed(0)
    for q in (None, QuantizerSpec.bitdepth(1), QuantizerSpec.paper("mnist", "randdisc"),
              QuantizerSpec.paper("mnist", "prd"), QuantizerSpec.paper("mnist", "swrd")):
        target = net if q is None else Defended(net, q.build(), bpda=True)
        x_adv = APGD(target, eps=0.5, steps=20, eot_samples=2, generator=torch.Generator().manual_seed(0),
                     check=False)(x, y)
        scorer = net if q is None else Defended(net, q.build())
        assert _acc(scorer, x_adv, y) <= 0.2, q


def test_more_steps_and_more_draws_never_help_the_defense(mnist):
    """On average, a larger budget does not raise accuracy (beyond sampling error)."""
    net, x, y = mnist
    model = _swrd_defended(net, bpda=True)
    scorer = _swrd_defended(net, seed=5)
    acc = {}
    for steps, eot in ((5, 1), (20, 1), (20, 4)):
        torch.manual_seed(1)
        x_adv = APGD(model, eps=0.2, steps=steps, eot_samples=eot, generator=torch.Generator().manual_seed(0),
                     check=False)(x, y)
        acc[(steps, eot)] = _acc(scorer, x_adv, y)
    lo, hi = wilson_interval(int(round(100 * acc[(5, 1)])), 100)
    assert acc[(20, 1)] <= hi and acc[(20, 4)] <= hi
    lo, hi = wilson_interval(int(round(100 * acc[(20, 1)])), 100)
    assert acc[(20, 4)] <= hi


def test_our_eot_pgd_agrees_with_torchattacks(mnist):
    """Cross-check with a peer: torchattacks' EOTPGD on a straight-through Defended and our PGD with
    batched EOT give accuracies within each other's 95% interval on one cell."""
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = mnist
    model = _swrd_defended(net, bpda=True)
    scorer = _swrd_defended(net, seed=9)
    torch.manual_seed(0)
    theirs = torchattacks.EOTPGD(model, eps=0.15, alpha=0.03, steps=10, eot_iter=2, random_start=True)(x, y)
    torch.manual_seed(0)
    ours = PGD(model, eps=0.15, alpha=0.03, steps=10, eot_samples=2, generator=torch.Generator().manual_seed(0),
               check=False)(x, y)
    a, b = _acc(scorer, theirs, y), _acc(scorer, ours, y)
    lo_a, hi_a = wilson_interval(int(round(100 * a)), 100)
    lo_b, hi_b = wilson_interval(int(round(100 * b)), 100)
    assert lo_a <= b <= hi_a and lo_b <= a <= hi_b, (a, b)
    assert float((ours - x).abs().max()) <= 0.15 + 1e-6


def test_apgd_beats_or_matches_pgd_on_the_undefended_model(mnist):
    net, x, y = mnist
    pgd = PGD(net, eps=0.15, alpha=0.015, steps=20, generator=torch.Generator().manual_seed(0))(x, y)
    apgd = APGD(net, eps=0.15, steps=20, generator=torch.Generator().manual_seed(0))(x, y)
    assert _acc(net, apgd, y) <= _acc(net, pgd, y) + 0.05
    assert float((apgd - x).abs().max()) <= 0.15 + 1e-6 and 0 <= float(apgd.min()) and float(apgd.max()) <= 1
    assert APGD(net, steps=100).checkpoints()[:3] == [22, 41, 57]


def test_randomized_model_without_eot_warns(mnist):
    net, x, y = mnist
    with pytest.warns(RandomizedDefenseWarning):
        APGD(_swrd_defended(net, bpda=True), eps=0.1, steps=2)(x[:4], y[:4])


def test_check_convergence():
    with pytest.warns(NotConvergedWarning):
        out = check_convergence([10, 20, 40], [80, 60, 30], 100)
    assert not out["converged"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        assert check_convergence([10, 20, 40], [80, 60, 58], 100)["converged"]
    with pytest.raises(ValueError, match="increase"):
        check_convergence([10, 10], [1, 1], 10)


def test_attack_spec_round_trip_and_errors():
    for key, a in adaptive.attack_suite("cifar10").items():
        assert AttackSpec.from_params(a.params()) == a and adaptive.attack_key(a) == key
    with pytest.raises(ValueError, match="oblivious"):
        AttackSpec("apgd", "oblivious", eot=4)
    with pytest.raises(ValueError, match="kind"):
        AttackSpec("fgsm")


def test_frame_and_worst_case_per_image(results_dir, monkeypatch):
    """The worst case is the per-image minimum over the attacks: an image is robust only if it
    survived all of them, which can be lower than every single attack's accuracy."""
    calls = []

    def fake_run(**p):
        bits = {"pgd": "1101", "apgd": "1011", "square": "01"}[p["attack"]["kind"]]
        calls.append(p["attack"]["kind"])
        c, n = bits.count("1"), len(bits)
        lo, hi = wilson_interval(c, n)
        return {"correct_bits": bits, "correct": c, "n": n, "accuracy": c / n, "ci95": [lo, hi], "radius_pixels": 0.1,
                "seconds_attack": 0.0, "seconds_eval": 0.0}

    monkeypatch.setattr(adaptive, "run_adaptive", fake_run)
    q = QuantizerSpec.paper("mnist", "swrd").params()
    recs = [adaptive.adaptive_record("mnist", q, 0.1, AttackSpec("pgd", "adaptive", steps=10), 4),
            adaptive.adaptive_record("mnist", q, 0.1, AttackSpec("apgd", "adaptive", steps=10, eot=2), 4)]
    frame = adaptive.adaptive_frame(recs)
    assert set(frame["attack"]) == {"bpda-pgd", "bpda-eot-apgd-ce", "worst-case"}
    worst = frame[frame["attack"] == "worst-case"].iloc[0]
    assert worst["accuracy"] == 0.5 and worst["attacks"] == 2 and worst["method"] == "swrd"
    assert {"dataset", "method", "s", "k", "eps", "attack", "steps", "eot", "n", "accuracy", "ci_lo",
            "ci_hi"} <= set(frame.columns)
    assert adaptive.adaptive_record("mnist", q, 0.1, AttackSpec("pgd", "adaptive", steps=10), 4) == recs[0]
    assert calls == ["pgd", "apgd"]                                  # the third call loaded the record
    assert np.isclose(frame[frame["attack"] == "bpda-pgd"]["accuracy"].iloc[0], 0.75)
    # an attack run on the first 2 images only (nested subsets) counts for those two
    recs.append(adaptive.adaptive_record("mnist", q, 0.1, AttackSpec("square", "adaptive", steps=10), 2))
    worst = adaptive.adaptive_frame(recs).query("attack == 'worst-case'")
    assert len(worst) == 1 and worst["n"].iloc[0] == 4 and worst["accuracy"].iloc[0] == 0.25
    assert worst["attacks"].iloc[0] == 3 and worst["attacks_all"].iloc[0] == 2


def test_convergence_frame_reads_the_study_cells_only(results_dir, monkeypatch):
    """The convergence curves are the study's cells (CONVERGENCE): a record of the same attack on the
    same defense at another n is another curve and stays out of the default frame."""
    def fake_run(**p):
        bits = "1" * (p["attack"]["steps"] // 10) + "0" * 10
        bits = bits[:p["n"]].ljust(p["n"], "0")
        c, n = bits.count("1"), len(bits)
        return {"correct_bits": bits, "correct": c, "n": n, "accuracy": c / n, "ci95": list(wilson_interval(c, n)),
                "radius_pixels": 0.1, "seconds_attack": 0.0, "seconds_eval": 0.0}

    monkeypatch.setattr(adaptive, "run_adaptive", fake_run)
    study = {"method": "swrd", "s": 2, "k": 2, "eps": 0.1, "eps_reading": "pixels", "n": 8,
             "steps": (10, 20), "eot": (1, 4)}
    monkeypatch.setattr(adaptive, "CONVERGENCE", {"mnist": study})
    monkeypatch.setattr(adaptive, "BUDGET", {"mnist": {"steps": 20, "eot": 4, "queries": 10, "votes": 1}})
    assert len(adaptive.convergence_cells()) == len(adaptive.convergence_attacks("mnist")) == 3
    q = QuantizerSpec.paper("mnist", "swrd", s=2, k=2).params()
    for a in adaptive.convergence_attacks("mnist"):
        adaptive.adaptive_record("mnist", q, 0.1, a, 8)
        adaptive.adaptive_record("mnist", q, 0.1, a, 4)              # the same attacks at another n
    conv = adaptive.convergence_frame()
    assert set(conv["n"]) == {8} and set(conv["varies"]) == {"steps", "eot"}
    assert len(adaptive.convergence_frame(results.load_records("adaptive"))) == 2 * len(conv)


def test_curves_at_the_headline_radius_count_in_the_headline_worst_case():
    """The ε curve of CIFAR-10 runs the main attacks at every radius of Table 2 on a prefix of the headline's
    images: its cells at the headline radius are the headline's attacks on fewer images, and the worst case
    of a cell counts a run on the first n' < n images for those images."""
    h = adaptive.HEADLINE["cifar10"]
    c = adaptive.curve_spec("cifar10", adaptive.HEADLINE["cifar10"]["eps_reading"])
    assert c["n"] <= h["n"] and c["eps_reading"] == h["eps_reading"]
    curve = [p for _, p in adaptive.curve_cells() if p["dataset"] == "cifar10" and abs(p["eps"] - h["eps"]) < 1e-9]
    head = [p for _, p in adaptive.chapter_cells() if p["dataset"] == "cifar10" and p["n"] == h["n"]
            and abs(p["eps"] - h["eps"]) < 1e-9 and p["attack"]["restarts"] == 1]
    pairs = {(repr(p["defense"]), repr(p["attack"])) for p in curve}
    # the curve's attacks are the headline's main ones, on every defense the headline scores
    assert curve and pairs <= {(repr(p["defense"]), repr(p["attack"])) for p in head}
    assert {d for d, _ in pairs} == {repr(p["defense"]) for p in head}
    radii = sorted({round(p["eps"] * 255) for _, p in adaptive.curve_cells() if p["dataset"] == "cifar10"})
    assert radii == [e for e in paper.TABLES[paper.TABLE_DATASETS["cifar10"]][1] if e > 0]
    # a run on fewer images counts for those it saw
    assert adaptive.robust_per_image(["111", "10", "1101"], 4) == [True, False, False, True]


def test_restart_runs_are_the_suites_attack_with_more_starts():
    """The restart runs of the headline cells are APGD-CE at the suite's budget with more random starts,
    on every quantizer row and on the headline's images, so the per-image worst case can use them."""
    from vqdbook.results import params_key

    cells = adaptive.restart_cells()
    book = {params_key(p) for _, p in adaptive.chapter_cells()}
    for name, r in adaptive.HEADLINE_RESTARTS.items():
        mine = [p for _, p in cells if p["dataset"] == name]
        quant = [row for row in adaptive.defense_rows(name) if row["method"] in ("randdisc", "prd", "swrd")]
        assert len(mine) == len(quant) > 0
        b = adaptive.attack_suite(name)["bpda-eot-apgd-ce"]
        for p in mine:
            a = AttackSpec.from_params(p["attack"])
            assert (a.kind, a.loss, a.steps, a.eot, a.restarts) == ("apgd", b.loss, b.steps, b.eot, r) and r > 1
            assert p["n"] == adaptive.HEADLINE[name]["n"] and params_key(p) in book


def test_headline_frame_has_one_row_per_defense_and_attack():
    """The headline table shows one number per (defense, attack): records of the same cell on other
    weights (classifiers trained on quantized images share the quantizer's label) stay out of it."""
    head = adaptive.headline_frame()
    assert len(head)
    assert not head.duplicated(["dataset", "label", "attack"]).any()
    for name in adaptive.HEADLINE:
        allowed = {r["variant"] for r in adaptive.defense_rows(name)}
        seen = {None if v != v else v for v in head[head["dataset"] == name]["variant"]}
        assert seen <= allowed


def test_curves_cover_both_mnist_readings_and_name_a_bad_one():
    """MNIST's ε curve runs on both readings of chapter 3, the same radii on each; an unknown reading is
    refused with the allowed ones named."""
    cells = [p for _, p in adaptive.curve_cells() if p["dataset"] == "mnist"]
    by_reading = {r: sorted({p["eps"] for p in cells if p["eps_reading"] == r}) for r in ("normalized", "pixels")}
    assert by_reading["normalized"] == by_reading["pixels"] == adaptive.curve_eps("mnist", "pixels")
    assert adaptive.curve_spec("mnist")["eps_reading"] == "normalized"
    with pytest.raises(ValueError, match="eps_reading must be one of"):
        adaptive.curve_spec("cifar10", "normalized")
    # the undefended classifier gets the adaptive attacks only (its oblivious PGD is plain PGD)
    none = [r for r in adaptive.defense_rows("mnist") if r["method"] == "none"]
    assert none and not adaptive.runs_attack(none[0], "oblivious-pgd")
    assert adaptive.runs_attack(none[0], "bpda-eot-apgd-ce")


def test_curve_summary_picks_the_best_quantizer_and_counts_radii_above_adversarial_training():
    import pandas as pd

    def row(label, method, eps, attack, acc, lo, hi):
        return {"dataset": "mnist", "eps_reading": "pixels", "label": label, "method": method, "eps": eps,
                "attack": attack, "accuracy": acc, "ci_lo": lo, "ci_hi": hi}

    frame = pd.DataFrame([
        row("RandDisc", "randdisc", 0.1, "worst-case", 0.50, 0.40, 0.60),
        row("swRD", "swrd", 0.1, "worst-case", 0.90, 0.85, 0.95),      # above Fast AdvT's interval
        row("swRD", "swrd", 0.1, "oblivious-pgd", 0.97, 0.9, 1.0),
        row("Fast AdvT", "fastat", 0.1, "worst-case", 0.70, 0.60, 0.80),
        row("RandDisc", "randdisc", 0.3, "worst-case", 0.20, 0.15, 0.25),
        row("swRD", "swrd", 0.3, "worst-case", 0.10, 0.05, 0.15),
        row("Fast AdvT", "fastat", 0.3, "worst-case", 0.30, 0.20, 0.40),
        row("1-bit", "bitdepth", 0.3, "worst-case", 0.60, 0.50, 0.70),
    ])
    s = adaptive.curve_summary(frame, "mnist", "pixels")
    assert s["radii"] == 2 and s["above_fastat"] == 1
    assert (s["min_best"], s["min_best_worst"], s["min_best_oblivious"], s["min_fastat"]) == ("swRD", 90.0, 97.0, 70.0)
    assert (s["max_best"], s["max_best_worst"], s["max_bitdepth"]) == ("RandDisc", 20.0, 60.0)
    assert np.isnan(s["min_bitdepth"]) and np.isnan(s["max_best_oblivious"])
    assert adaptive.curve_summary(frame, "mnist", "normalized") == {}
