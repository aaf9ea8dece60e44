"""The committed records against the code (RobustBench's habit): every record under data/results/
validates (checksum, kind, key, schema), and every cell the book renders has its record, under the
key the code computes today. A changed key would otherwise turn table cells into "not run"."""

from __future__ import annotations

import json

import pytest

from vqdbook import experiments
from vqdbook.results import RESULTS_DIR, load_record, params_key

RECORDS = sorted(RESULTS_DIR.glob("*/*.json"))
#: Result fields every record of a kind must hold.
SCHEMA = {
    "robust_accuracy": {"correct", "n", "accuracy", "ci95"},
    "kl": {"kl", "kl_se", "kl_median", "kl_q25", "kl_q75", "labels"},
    "certified": {"margin", "kl", "delta", "certified", "certified_accuracy", "clean_vote_correct"},
    "fig7": {"n", "accuracy_f_adv", "methods"},
    "bench_quantizers": {"configs", "machine"},
    "bench_kl": {"n_samples"},
    "bench_table1": {"seconds_total", "seconds_attack"},
    "bench_tquant": {"seconds_natural", "seconds_tquant", "seconds_quantize", "seconds_train_step", "ratio", "machine"},
    "certified_radius": {"counts", "margin_lower", "budget", "radius", "correct", "evaluated"},
    "smoothing": {"prediction", "correct", "radius_l2", "radius_linf", "clean_accuracy"},
    "smoothing_art": {"prediction", "correct", "radius_l2", "radius_linf", "clean_accuracy", "art_version"},
    "kl_validation": {"points"},
    "adaptive": {"accuracy", "ci95", "correct", "correct_bits", "n", "seconds_attack"},
    "bench_certify": {"per_image", "machine"},
    "bench_eot": {"seconds_batched", "seconds_single_draws", "ratio", "machine"},
    "tquant_margins": {"margin", "vote_correct", "vote_accuracy", "median_margin"},
}
PROVENANCE = {"kind", "params", "params_key", "result", "runtime_s", "created", "checksum", "versions", "hardware",
              "commit"}


def test_there_are_records():
    assert len(RECORDS) > 100


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_committed_record_validates(path):
    doc = json.loads(path.read_text())
    kind = path.parent.name
    assert doc["kind"] == kind
    assert PROVENANCE <= set(doc), f"missing provenance fields {PROVENANCE - set(doc)}"
    assert doc["params_key"] == params_key(doc["params"]) == path.stem
    assert load_record(kind, doc["params"]) is not None, "checksum or key mismatch"
    assert SCHEMA[kind] <= set(doc["result"]), f"missing result fields {SCHEMA[kind] - set(doc['result'])}"
    if kind == "robust_accuracy":
        r = doc["result"]
        assert 0 <= r["correct"] <= r["n"] == doc["params"]["n"]
        assert r["accuracy"] == pytest.approx(r["correct"] / r["n"])
        assert r["ci95"][0] - 1e-12 <= r["accuracy"] <= r["ci95"][1] + 1e-12


def test_every_cell_the_book_renders_has_its_record():
    cells = experiments.chapter_cells()
    assert len(cells) > 200
    missing = [(kind, p) for kind, p in cells if load_record(kind, p) is None]
    assert not missing, f"{len(missing)} cells the book renders have no record, e.g. {missing[:3]}"
