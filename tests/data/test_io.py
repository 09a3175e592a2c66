"""Atomic writes leave the previous file or the new one, never half of one; tables round-trip
through CSV and Parquet; a broken CSV is reported by column and CSV line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.schemas import validate
from smartpick_ml.data.io import (
    TMP_PREFIX,
    atomic_path,
    parse_csv_table,
    read_csv_text,
    read_table,
    sha256_file,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX))


# ------------------------------------------------------------------------------ atomic writes


def test_atomic_path_replaces_on_success(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(TMP_PREFIX)
        tmp.write_text("new")
        assert dest.read_text() == "old"  # not visible before the block ends
    assert dest.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_keeps_previous_content_on_error(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(dest) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_creates_nothing_on_error(tmp_path):
    dest = tmp_path / "sub" / "new.txt"
    with pytest.raises(KeyError), atomic_path(dest) as tmp:
        tmp.write_text("x")
        raise KeyError("k")
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_write_parquet_atomic_keeps_previous_file_on_error(tmp_path, applicants_frame):
    dest = tmp_path / "applicants.parquet"
    write_parquet_atomic(validate(applicants_frame, "applicants"), dest)
    before = dest.read_bytes()
    # a column pyarrow cannot serialise: mixed ints and strings in one object column
    bad = applicants_frame.assign(step2_ck=pd.Series([250, "x", 1.5, None], dtype=object))
    with pytest.raises(Exception) as info:
        write_parquet_atomic(bad, dest)
    assert not isinstance(info.value, AssertionError)
    assert dest.read_bytes() == before
    assert _leftovers(tmp_path) == []
    pd.testing.assert_frame_equal(read_table(dest, "applicants"),
                                  validate(applicants_frame, "applicants"))


def test_write_parquet_atomic_is_byte_identical(tmp_path, applications_frame):
    df = validate(applications_frame, "applications")
    write_parquet_atomic(df, tmp_path / "a.parquet")
    write_parquet_atomic(df, tmp_path / "b.parquet")
    assert sha256_file(tmp_path / "a.parquet") == sha256_file(tmp_path / "b.parquet")


def test_text_and_json_writers(tmp_path):
    import numpy as np

    write_text_atomic(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\n".encode()
    write_json_atomic(tmp_path / "j.json", {"b": np.int64(2), "a": np.float64(0.5),
                                            "c": np.arange(2), "p": Path("x")})
    assert (tmp_path / "j.json").read_text() == (
        '{\n  "a": 0.5,\n  "b": 2,\n  "c": [\n    0,\n    1\n  ],\n  "p": "x"\n}\n')
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json_atomic(tmp_path / "k.json", {"o": object()})
    assert not (tmp_path / "k.json").exists()
    assert _leftovers(tmp_path) == []


# -------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("table", ["programs", "applicants", "applications"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_read_table_round_trip(request, tmp_path, table, fmt):
    df = validate(request.getfixturevalue(f"{table}_frame"), table)
    path = tmp_path / f"{table}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        write_parquet_atomic(df, path)
    back = read_table(path, table)
    pd.testing.assert_frame_equal(back, df)


def test_round_trip_of_synthetic_programs(tmp_path):
    from smartpick_ml.data.catalog import synthetic_catalog

    df = synthetic_catalog(seed=1).iloc[::40].reset_index(drop=True)
    df.to_csv(tmp_path / "p.csv", index=False)
    write_parquet_atomic(df, tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "p.csv", "programs"), df)
    pd.testing.assert_frame_equal(read_table(tmp_path / "p.parquet", "programs"), df)


# --------------------------------------------------------------------------------- bad files


def _applicants_csv(tmp_path: Path, applicants_frame: pd.DataFrame) -> Path:
    path = tmp_path / "applicants.csv"
    applicants_frame.to_csv(path, index=False)
    return path


def test_csv_non_numeric_int_is_reported_with_its_line(tmp_path, applicants_frame):
    path = _applicants_csv(tmp_path, applicants_frame)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",241,", ",two-forty,")  # data row 2 = CSV line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as info:
        read_table(path, "applicants")
    msg = str(info.value)
    assert "table 'applicants'" in msg
    assert "column 'step2_ck': not a valid int at CSV line(s) 3: 'two-forty'" in msg


def test_csv_bad_bool_and_bad_float_lines(tmp_path, applicants_frame, programs_frame):
    path = _applicants_csv(tmp_path, applicants_frame.assign(needs_visa=["no", "no", "maybe", "1"]))
    with pytest.raises(DataValidationError, match=r"column 'needs_visa': not a valid bool at "
                                                  r"CSV line\(s\) 4: 'maybe'"):
        read_table(path, "applicants")
    p = tmp_path / "programs.csv"
    programs_frame.astype({"rate_us_do": object}).assign(rate_us_do=["0.2", "x", ""]).to_csv(
        p, index=False)
    with pytest.raises(DataValidationError, match=r"column 'rate_us_do': not a valid float at "
                                                  r"CSV line\(s\) 3: 'x'"):
        read_table(p, "programs")


def test_csv_values_parse_but_break_the_contract(tmp_path, applicants_frame):
    path = _applicants_csv(tmp_path, applicants_frame.assign(step2_ck=[250, 241, 999, 228]))
    with pytest.raises(DataValidationError, match=r"column 'step2_ck': must be 150 ≤ x ≤ 300, "
                                                  r"broken at rows 2 \(values 999\)"):
        read_table(path, "applicants")


def test_csv_bool_spellings(tmp_path, applicants_frame):
    path = _applicants_csv(tmp_path, applicants_frame.assign(needs_visa=["no", "F", "0", "Yes"]))
    assert read_table(path, "applicants")["needs_visa"].tolist() == [False, False, False, True]


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "the file is empty"),
    (b"  \n\n", "the file is empty"),
    (b"\xef\xbb\xbf", "the file is empty"),            # a byte-order mark and nothing else
    (b"\xef\xbb\xbf\n \n", "the file is empty"),
    (b"a,b\n", "header only, no rows"),
    (b"a;b\n1;2\n", "expected comma-separated values, but the header is separated by ';'"),
    (b"a\tb\n1\t2\n", "separated by '\\t'"),
    (b"a,b\n1,2\n3,\xff\n", "not UTF-8 text (invalid byte 0xff on line 3)"),
    (b"a,b\n1,2\n3,4,5\n", "malformed CSV"),
    (b'a,b\n"1,2\n', "malformed CSV"),
    (b"a,b\n1,2,\n3,4,\n", "more fields than the header"),  # every row has a trailing comma
])
def test_read_csv_text_rejects_broken_files(tmp_path, content, fragment):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(DataValidationError) as info:
        read_csv_text(path, table="things")
    assert info.value.table == "things"
    assert "t.csv" in str(info.value)
    assert fragment in str(info.value)
    assert info.value.__cause__ is None  # never a chained pandas traceback


def test_read_csv_text_keeps_text_verbatim(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa,b\nNA,-\n007, x \n".encode())
    df = read_csv_text(path, table="t")
    assert list(df.columns) == ["a", "b"]  # the BOM is not part of the first name
    assert df["a"].tolist() == ["NA", "007"]  # 'NA' is not a missing value, 007 keeps its zeros
    assert df["b"].tolist() == ["-", " x "]


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataValidationError, match="file not found"):
        read_table(tmp_path / "nope.parquet", "programs")
    with pytest.raises(DataValidationError, match="file not found"):
        parse_csv_table(tmp_path / "nope.csv", "programs")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataValidationError, match="bad.parquet: not a readable Parquet file"):
        read_table(bad, "programs")


# ------------------------------------------------------------------------ spreadsheet-safe CSV


def test_csv_for_spreadsheets_escapes_text_that_would_run_as_a_formula(tmp_path):
    """Issue #20 item 8: a program name starting with ``=HYPERLINK(`` went unchanged into the
    exported CSV, where a spreadsheet runs it."""
    import csv

    from smartpick_ml.data.io import write_csv_atomic

    cells = ['=HYPERLINK("http://x","click")', "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain",
             "a=b", None]
    frame = pd.DataFrame({"name": cells, "as_category": pd.Categorical(cells),
                          "as_string": pd.array(cells, dtype="string"),
                          "number": [-1.5, -2, 3, 4, 5, 6, 7, 8, 9]})
    write_csv_atomic(frame, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    want = ["'" + c if c and c[0] in "=+-@\t\r" else (c or "") for c in cells]
    for col in ("name", "as_category", "as_string"):
        assert [r[col] for r in rows] == want, col
    assert [float(r["number"]) for r in rows] == frame["number"].tolist()  # numbers unchanged
    assert frame["name"].iloc[0].startswith("=")  # the caller's frame is not changed
    assert _leftovers(tmp_path) == []
