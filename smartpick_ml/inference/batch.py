"""Scoring whole seasons: q for every applicant × program of a table of applicants, to Parquet.

Each applicant is scored against every program (or one specialty's) by the compiled fast path
(``fastpath.FastScorer``; ``predict_proba`` where a model cannot use it), in chunks of applicants
written as they are done, so memory stays flat however many pairs a season has. The file is
written under a temporary name and renamed into place at the end: a failed or killed run leaves
no partial output and keeps the previous file.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.pairs import APPLICANT_INPUTS
from smartpick_ml.contracts.schemas import validate
from smartpick_ml.data.io import atomic_path

#: applicants per written row group: large enough for Parquet to compress ids well, small enough
#: that a chunk's pairs stay a few hundred MB at most
CHUNK_APPLICANTS = 512


@dataclass(frozen=True)
class ScoreSummary:
    """What a batch run wrote."""

    path: Path
    applicants: int
    programs: int
    pairs: int


def score_applicants(predictor: Any, applicants: pd.DataFrame, out: str | Path,
                     specialty: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> ScoreSummary:
    """Write q for every applicant of ``applicants`` (the ``applicants`` table's columns) × every
    program of ``predictor``'s catalog (or of ``specialty``) to ``out`` (Parquet): columns
    ``applicant_id``, ``program_id`` (dictionary-encoded) and ``q`` (float32). ``progress(done,
    total)`` is called after each chunk of applicants."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = validate(applicants, "applicants")
    rows = predictor.program_rows(specialty)
    program_ids = pa.array(predictor.programs["program_id"].to_numpy(dtype=object)[rows])
    applicant_ids = table["applicant_id"].to_numpy(dtype=object)
    # optional inputs (the number of applications) may be absent: the model takes its default
    records = table[[c for c in APPLICANT_INPUTS if c in table.columns]].to_dict("records")
    schema = pa.schema([("applicant_id", pa.dictionary(pa.int32(), pa.string())),
                        ("program_id", pa.dictionary(pa.int32(), pa.string())),
                        ("q", pa.float32())])
    n, m = len(records), len(rows)

    def chunk_table(start: int, stop: int, q: np.ndarray) -> Any:
        return pa.table({
            "applicant_id": pa.DictionaryArray.from_arrays(
                np.repeat(np.arange(stop - start, dtype=np.int32), m),
                pa.array(applicant_ids[start:stop])),
            "program_id": pa.DictionaryArray.from_arrays(
                np.tile(np.arange(m, dtype=np.int32), stop - start), program_ids),
            "q": q}, schema=schema)

    # one chunk is written (pyarrow, without the GIL) while the next is scored
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="smartpick-write") as pool:
        pending = None
        for start in range(0, n, CHUNK_APPLICANTS):
            stop = min(n, start + CHUNK_APPLICANTS)
            q = np.concatenate([predictor.score_rows(records[i], rows)
                                for i in range(start, stop)]).astype(np.float32)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, chunk_table(start, stop, q))
            if progress is not None:
                progress(stop, n)
        if pending is not None:
            pending.result()
    return ScoreSummary(Path(out), n, m, n * m)


def read_applicants(path: str | Path) -> pd.DataFrame:
    """An applicants table from Parquet or CSV (``data.io.read_table``'s checks)."""
    from smartpick_ml.data.io import read_table

    p = Path(path)
    if p.suffix.lower() not in (".parquet", ".csv"):
        raise DataValidationError("applicants", [f"{p.name}: expected a .parquet or .csv file"])
    return read_table(p, "applicants")
