"""Experiment records: resume without recomputation, corrupt records recomputed, table renderer."""

import json

import pandas as pd
import pytest
import torch

from vqdbook import experiments, paper, results
from vqdbook.quantizers import QuantizerSpec


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    return tmp_path


def test_records_resume_and_recompute_corrupt(results_dir, monkeypatch):
    calls = []

    def fake_run(**params):
        calls.append(params["eps"])
        return {"correct": 7, "n": 10, "accuracy": 0.7, "ci95": [0.4, 0.9], "seconds_attack": 0, "seconds_defend": 0}

    monkeypatch.setattr(experiments.adversarial, "run_robust_accuracy", fake_run)
    params = dict(dataset="mnist", arch="mnist_cnn", variant=None, defense={"method": "none"}, eps=0.1, n=10,
                  seed=0, votes=1, attack="pgd-oblivious")
    experiments.robust_accuracy_record(**params)
    experiments.robust_accuracy_record(**params)  # a restarted run finds the record
    assert calls == [0.1]
    path = results.record_path("robust_accuracy", params)
    doc = json.loads(path.read_text())
    doc["result"]["accuracy"] = 0.99
    path.write_text(json.dumps(doc))
    with pytest.warns(results.CorruptRecordWarning):
        rec = experiments.robust_accuracy_record(**params)
    assert calls == [0.1, 0.1] and rec["result"]["accuracy"] == 0.7


def test_table_frame_renders_fixture_records(results_dir):
    sp = experiments.table_spec("table1")
    assert sp["dataset"] == "mnist" and sp["eps_paper"] == list(paper.TABLE1_EPS)
    row = next(r for r in sp["rows"] if r["method"] == "swRD")
    eps = sp["eps"][-1]
    params = dict(dataset="mnist", arch=sp["arch"], variant=None, defense=row["defense"], eps=eps, n=50, seed=0,
                  votes=1, attack="pgd-oblivious")
    results.write_record("robust_accuracy", params,
                         {"correct": 40, "n": 50, "accuracy": 0.8, "ci95": [0.67, 0.89]})
    frame = experiments.table_frame("table1", n=50)
    line = frame[frame["method"] == "swRD"].iloc[0]
    assert line["ε=0.32 ours"] == "80.0 ± 11.0"
    assert line["ε=0.32 paper"] == 95.59
    assert line["ε=0.32 Δ"] == pytest.approx(80.0 - 95.59, abs=0.05)
    assert line["ε=0 ours"] == "not run"
    for method in ("Fast AdvT", "MART", "TRADES"):
        assert frame[frame["method"] == method].iloc[0]["ε=0 ours"] in ("not trained", "not run")
    agree = experiments.table_agreement(["table1"], n=50)
    assert len(agree) == 1 and not agree.iloc[0]["paper in CI"]


def test_paper_defense_units():
    d = QuantizerSpec.paper("cifar10", "swrd", 4, 25).params()
    assert d["sigma"] == pytest.approx(4 / 255) and d["beta"] == pytest.approx(0.1 * 255 ** 2)
    assert QuantizerSpec.paper("mnist", "randdisc", None, 2).params()["s"] == 1
    with pytest.raises(ValueError, match="method"):
        QuantizerSpec.paper("mnist", "jpeg")
    with pytest.raises(ValueError, match="table"):
        experiments.table_spec("table9")


def test_whitebox_attack_is_bounded_and_needs_a_defense(tmp_path):
    d = QuantizerSpec.paper("mnist", "prd", 2, 2).params()
    x_adv, y, secs = experiments.adversarial_examples("mnist", None, None, 0.1, 10, attack="pgd-bpda-eot",
                                                      defense=d, eot_samples=2, cache_dir=tmp_path, progress=False)
    from vqdbook.data import load_dataset

    x, _ = load_dataset("mnist", "test", 10)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and secs > 0
    # cached under a key that includes the defense: a second call loads it
    again, _, secs2 = experiments.adversarial_examples("mnist", None, None, 0.1, 10, attack="pgd-bpda-eot",
                                                       defense=d, eot_samples=2, cache_dir=tmp_path, progress=False)
    assert secs2 == 0.0 and torch.equal(again, x_adv)
    with pytest.raises(ValueError, match="defended model"):
        experiments.adversarial_examples("mnist", None, None, 0.1, 10, attack="pgd-bpda-eot", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="eot_samples"):
        experiments.adversarial_examples("mnist", None, None, 0.1, 10, attack="pgd-bpda-eot", defense=d,
                                         eot_samples=0, cache_dir=tmp_path)


def test_variants_change_one_thing_and_render_from_records(results_dir):
    sp = experiments.table_spec("table1")
    row = next(r for r in sp["rows"] if r["method"] == "pRD")
    base = experiments.variant_params("protocol", "table1", row, 0.32, 500)
    for v in experiments.VARIANTS:
        p = experiments.variant_params(v, "table1", row, 0.32, 500)
        changed = {key for key in p if p.get(key) != base.get(key)} | (set(base) - set(p))
        assert len(changed) <= 2, (v, changed)   # the whitebox variant: attack + its eot_samples
        assert (v == "protocol") == (not changed)
    assert base["attack"] == "pgd-oblivious" and "init" not in base["defense"]
    results.write_record("robust_accuracy", base, {"correct": 300, "n": 500, "accuracy": 0.6, "ci95": [0.55, 0.64]})
    wb = experiments.variant_params("whitebox", "table1", row, 0.32, 500)
    results.write_record("robust_accuracy", wb, {"correct": 5, "n": 500, "accuracy": 0.01, "ci95": [0.0, 0.02]})
    frame = experiments.variant_frame("table1", n=500)
    line = frame[(frame["method"] == "pRD") & (frame["ε (paper units)"] == 0.32)].iloc[0]
    assert line["protocol"] == 60.0 and line["whitebox"] == 1.0 and line["paper (%)"] == 89.94
    assert line["normeps"] is None or pd.isna(line["normeps"])
    summary = experiments.variant_summary(frame).set_index("variant")
    assert summary.loc["protocol", "cells"] == 1
    assert summary.loc["protocol", "mean gap (points)"] == pytest.approx(60.0 - 89.94, abs=0.05)
    best = experiments.closest_variant("table1", seed=0)      # protocol 60 vs whitebox 1: paper 89.94
    assert best["variant"] == "protocol"
    with pytest.raises(ValueError, match="variant must be one of"):
        experiments.variant_params("nope", "table1", row, 0.32, 500)


def test_fig7_record_and_frame(results_dir):
    recs = experiments.run_fig7(datasets=("mnist",), n=4, seed=0, progress=False)
    res = recs["mnist"]["result"]
    assert res["n"] == 4 and set(res["methods"]) == {"randdisc", "prd", "swrd"}
    for v in res["methods"].values():
        assert 0 <= v["accuracy_q_adv"] <= 1 and v["mean_psnr_clean_db"] > 0
    frame = experiments.fig7_frame(n=4)
    assert list(frame["method"]) == ["RandDisc", "pRD", "swRD"] and (frame["n"] == 4).all()
    again = experiments.run_fig7(datasets=("mnist",), n=4, seed=0, progress=False)
    assert again["mnist"]["created"] == recs["mnist"]["created"]   # loaded, not recomputed


def test_bench_table1_accounts_for_its_time():
    from vqdbook.bench import run_bench_table1

    r = run_bench_table1(n=10, progress=False)
    assert len(r["cells"]) == 7 * 4   # 7 radii x (no defense, RandDisc, pRD, swRD)
    assert r["seconds_attack"] > 0 and r["seconds_quantize_classify"] > 0
    assert r["seconds_attack"] + r["seconds_quantize_classify"] <= r["seconds_total"]
    assert 0 < r["share_attack"] < 1


def test_bench_runs_frame_keeps_every_run_in_order():
    """Every quantizer benchmark run is its own row, oldest first, with the load it ran under."""
    from vqdbook.bench import runs_frame

    def rec(created, img_s, ok):
        return {"created": created, "commit": "abc", "result": {"load_avg_before": [1.5, 1.0, 0.5], "configs": {
            "swrd_cifar_s4_k25": {"ours_img_s": img_s, "baseline_img_s": 100.0, "ratio": img_s / 100,
                                  "meets_target": ok, "randn_bound_img_s": 3000.0}}}}

    frame = runs_frame([rec("2026-01-02", 800.0, True), rec("2026-01-01", 600.0, False),
                        {"created": "2026-01-03", "result": {"configs": {}}}])
    assert list(frame["ours (img/s)"]) == [600.0, 800.0] and list(frame["meets target"]) == [False, True]
    assert frame["load before"].tolist() == [1.5, 1.5]
    assert frame["noise bound (img/s)"].tolist() == [3000.0, 3000.0]


def test_bench_runs_summary_reads_the_newest_runs_against_the_targets():
    """The appendix's verdict: over the newest three runs, how many met each target, and by how much the
    slowest fell short of the rate target; the host's fastest baseline over all runs."""
    from vqdbook.bench import TARGETS, runs_summary

    tgt = TARGETS["swrd_cifar_s4_k25"]
    rate = tgt["min_img_s"]
    runs = pd.DataFrame({"ours (img/s)": [900.0, rate / 2, rate, 2 * rate],
                         "baseline (img/s)": [150.0, 100.0, 90.0, 120.0],
                         "ratio": [6.0, tgt["min_ratio"] - 1, 5.0, 7.0],
                         "noise bound (img/s)": [3600.0, None, 2500.0, 3000.0]})
    s = runs_summary(runs)
    assert s["n_runs"] == 4 and s["last"] == 3
    assert (s["min_img_s"], s["max_img_s"], s["min_base"], s["max_base"]) == (rate / 2, 2 * rate, 90.0, 120.0)
    assert (s["min_bound"], s["all_max_base"], s["all_max_bound"]) == (2500.0, 150.0, 3600.0)
    assert (s["ratio_met"], s["rate_met"], s["all_met"]) == (2, 2, False)
    assert s["need"] == 2.0
    ok = runs_summary(runs.iloc[[0, 2, 3]])
    assert ok["all_met"] and ok["need"] <= 1.0


def test_attack_strength_frame_pairs_the_two_attacks(results_dir, monkeypatch):
    """The stronger PGD is a table attack of its own (records keyed by it) and the frame puts it
    beside the paper's PGD, cell by cell; it never beats the paper's attack by much on f."""
    monkeypatch.setattr(experiments.adversarial, "ADV_CACHE", results_dir / "adv")
    rows = experiments.table_spec("table1")["rows"][:1]           # no defense: the undefended f
    monkeypatch.setattr(experiments.tables, "table_spec",
                        lambda t, _s=experiments.table_spec: {**_s(t), "rows": rows, "eps": [0.0, 0.16],
                                                              "eps_paper": [0.0, 0.16]})
    for attack in ("pgd-oblivious", "pgd-oblivious-strong"):
        experiments.run_table("table1", n=50, attack=attack, progress=False, batch_size=50)
    frame = experiments.attack_strength_frame("table1", n=50)
    assert list(frame["ε (paper units)"]) == [0.16] and frame.attrs["n"] == 50
    assert frame["strong PGD (%)"].iloc[0] <= frame["paper's PGD (%)"].iloc[0] + 6   # a CI's width at n=50
    largest = experiments.attack_strength_frame("table1", n=50, largest_only=True)
    assert len(largest) == 1 and largest["drop (points)"].iloc[0] == frame["drop (points)"].max()
    with pytest.raises(ValueError, match="attack"):
        experiments.run_table("table1", n=50, attack="pgd-bpda-eot")
