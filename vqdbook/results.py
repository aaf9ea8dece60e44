"""Results are data: one JSON record per experiment configuration, under ``data/results/``.

A record holds its ``kind`` (e.g. ``robust_accuracy``), its ``params`` (everything that determines
the result, seed included), the ``result``, provenance (versions, hardware, commit), the runtime,
and a SHA-256 ``checksum`` over all of that. :func:`load_record` re-derives the checksum and the
parameter key: a corrupt, edited or mismatched record is reported and ignored, never trusted, so
:func:`load_or_run` recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import PROJECT_ROOT
from .provenance import provenance

__all__ = ["RESULTS_DIR", "CorruptRecordWarning", "params_key", "record_path", "write_record", "load_record",
           "load_records", "load_or_run"]

RESULTS_DIR = PROJECT_ROOT / "data" / "results"


class CorruptRecordWarning(UserWarning):
    """A record on disk failed its checksum or does not match the parameters asked for."""


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def params_key(params: dict) -> str:
    """Short stable hash of the parameters: the record's file name."""
    return hashlib.sha256(_canonical(params).encode()).hexdigest()[:16]


def record_path(kind: str, params: dict, root: Path | None = None) -> Path:
    return Path(root or RESULTS_DIR) / kind / f"{params_key(params)}.json"


def _checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


def write_record(kind: str, params: dict, result, *, runtime_s: float | None = None,
                 device: str | None = None, root: Path | None = None) -> Path:
    """Write one record atomically and return its path."""
    params = json.loads(_canonical(params))  # what is stored is exactly what is hashed
    record = {"kind": kind, "params": params, "params_key": params_key(params),
              "result": json.loads(_canonical(result)), "runtime_s": runtime_s,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **provenance(device)}
    record["checksum"] = _checksum(record)
    path = record_path(kind, params, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_record(kind: str, params: dict, root: Path | None = None) -> dict | None:
    """The stored record for these parameters, or None if absent or not trustworthy (with a warning)."""
    params = json.loads(_canonical(params))
    path = record_path(kind, params, root)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        ok = (record.get("checksum") == _checksum(record) and record.get("kind") == kind
              and record.get("params") == params)
    except (json.JSONDecodeError, AttributeError, TypeError):
        ok = False
    if not ok:
        warnings.warn(f"ignoring {path}: corrupt or made for other parameters; it will be recomputed",
                      CorruptRecordWarning, stacklevel=2)
        return None
    return record


def load_records(kind: str, root: Path | None = None) -> list[dict]:
    """All valid records of a kind (invalid ones are skipped with a warning)."""
    folder = Path(root or RESULTS_DIR) / kind
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            params = json.loads(path.read_text()).get("params", {})
        except json.JSONDecodeError:
            warnings.warn(f"ignoring {path}: not valid JSON", CorruptRecordWarning, stacklevel=2)
            continue
        rec = load_record(kind, params, root)
        if rec is not None:
            out.append(rec)
    return out


def load_or_run(kind: str, params: dict, fn: Callable[..., object], *, root: Path | None = None,
                device: str | None = None, force: bool = False) -> dict:
    """Return the valid stored record for ``params``, or run ``fn(**params)``, store and return it."""
    if not force:
        rec = load_record(kind, params, root)
        if rec is not None:
            return rec
    t0 = time.time()
    result = fn(**params)
    path = write_record(kind, params, result, runtime_s=round(time.time() - t0, 3), device=device, root=root)
    return json.loads(path.read_text())
