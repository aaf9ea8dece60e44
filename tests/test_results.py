"""Records: round trip, corrupt-record detection, load_or_run resumption."""

import json
import warnings

import pytest

from vqdbook.results import CorruptRecordWarning, load_or_run, load_record, load_records, record_path, write_record


def test_round_trip_and_provenance(tmp_path):
    params = {"dataset": "mnist", "eps": [0.1, 0.2], "seed": 0}
    path = write_record("demo", params, {"acc": 0.5}, runtime_s=1.0, root=tmp_path)
    rec = load_record("demo", params, root=tmp_path)
    assert rec["result"] == {"acc": 0.5} and rec["params"] == params
    assert {"versions", "hardware", "commit", "checksum", "created"} <= set(rec)
    assert path == record_path("demo", params, tmp_path)


def test_corrupt_record_is_ignored_and_recomputed(tmp_path):
    params = {"a": 1}
    calls = []

    def fn(a):
        calls.append(a)
        return {"value": a * 10}

    rec = load_or_run("demo", params, fn, root=tmp_path)
    assert rec["result"]["value"] == 10 and calls == [1]
    load_or_run("demo", params, fn, root=tmp_path)
    assert calls == [1]  # resumed: not recomputed
    path = record_path("demo", params, tmp_path)
    doc = json.loads(path.read_text())
    doc["result"]["value"] = 99  # tampered
    path.write_text(json.dumps(doc))
    with pytest.warns(CorruptRecordWarning):
        rec = load_or_run("demo", params, fn, root=tmp_path)
    assert rec["result"]["value"] == 10 and calls == [1, 1]
    path.write_text("{not json")
    with pytest.warns(CorruptRecordWarning):
        assert load_record("demo", params, root=tmp_path) is None


def test_record_for_other_params_is_not_trusted(tmp_path):
    p1, p2 = {"a": 1}, {"a": 2}
    write_record("demo", p1, 1, root=tmp_path)
    # a file moved under another configuration's name must not answer for it
    record_path("demo", p1, tmp_path).rename(record_path("demo", p2, tmp_path))
    with pytest.warns(CorruptRecordWarning):
        assert load_record("demo", p2, root=tmp_path) is None


def test_load_records_lists_valid_only(tmp_path):
    write_record("demo", {"a": 1}, 1, root=tmp_path)
    write_record("demo", {"a": 2}, 2, root=tmp_path)
    (tmp_path / "demo" / "junk.json").write_text("{")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        recs = load_records("demo", root=tmp_path)
    assert sorted(r["result"] for r in recs) == [1, 2]
