"""Reading and writing tables and files: atomic writes, strict CSV parsing, validated reads.

Every file is written to a temporary name in the destination folder and renamed into place, so a
reader never sees a half-written file and a killed run leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.schemas import SCHEMAS, TableSchema, validate

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX + dest.name + ".", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions (0666 less umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``df`` as Parquet, atomically. Same data -> byte-identical file."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def write_csv_atomic(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``df`` as CSV for people to open in a spreadsheet, atomically; text cells that a
    spreadsheet would run as a formula are escaped (:func:`spreadsheet_safe`)."""
    # CRLF rows (RFC 4180): the csv writer quotes a cell holding a line terminator character, so
    # a carriage return inside a cell stays in its cell instead of ending the row
    write_text_atomic(path, spreadsheet_safe(df).to_csv(index=False, lineterminator="\r\n"))


#: what makes a spreadsheet read a text cell as a formula (OWASP "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``'`` before every text cell that starts like a formula: a program name such
    as ``=HYPERLINK(...)`` then shows as text instead of running. Numbers are left as they are."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if not (pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)
                or isinstance(s.dtype, pd.CategoricalDtype)):
            continue
        values = s.astype(object)
        risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_STARTS))
        if risky.any():
            out[col] = values.where(~risky, "'" + values[risky].astype(str))
    return out


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of a table (row order included), for manifests and caches: the same values
    and columns give the same hash whatever file they were read from."""
    h = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(map(str, frame.columns)).encode()).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


#: the widest table file read: a table's own columns and room for extras, refused before parsing
#: beyond it (a file of a million columns would otherwise take minutes to refuse)
MAX_TABLE_COLUMNS = 500


def parse_csv_table(path: str | os.PathLike[str], schema: TableSchema | str) -> pd.DataFrame:
    """Read a CSV of a contracted table, converting each column by its spec; never guess silently.

    A value that does not parse as its column's type is reported with its row, not turned into NaN.
    """
    schema = SCHEMAS[schema] if isinstance(schema, str) else schema
    raw = read_csv_text(path, table=schema.name, max_columns=MAX_TABLE_COLUMNS)
    problems: list[str] = []
    out = pd.DataFrame(index=raw.index)
    for col in raw.columns:
        s = raw[col]
        spec = next((c for c in schema.columns if c.name == col), None)
        if spec is None or spec.kind == "str":
            out[col] = s.where(s.notna(), None).astype(object)
            continue
        blank = s.isna() | (s.str.strip() == "")
        text = s.where(~blank).str.strip()
        if spec.kind == "bool":
            low = text.str.lower()
            ok = blank | low.isin(_TRUE | _FALSE)
            out[col] = pd.array(
                [None if b else (v in _TRUE) for v, b in zip(low, blank, strict=True)],
                dtype="boolean")
        else:
            num = pd.to_numeric(text, errors="coerce")
            ok = blank | num.notna()
            out[col] = num
        if not ok.all():
            bad = raw.index[~ok]
            shown = ", ".join(f"{i + 2}: {s[i]!r}" for i in bad[:5])
            problems.append(f"column '{col}': not a valid {spec.kind} at CSV line(s) {shown}"
                            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    if problems:
        raise DataValidationError(schema.name, problems)
    return out


def read_csv_text(path: str | os.PathLike[str], *, table: str, max_columns: int | None = None
                  ) -> pd.DataFrame:
    """Read a CSV as text columns with clear errors for the usual ways a file is broken;
    a header of more than ``max_columns`` fields is refused before the file is parsed."""
    p = Path(path)
    if not p.is_file():
        raise DataValidationError(table, [f"file not found: {p}"])
    data = p.read_bytes()
    if not data.strip():
        raise DataValidationError(table, [f"{p.name}: the file is empty"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataValidationError(table, [f"{p.name}: not UTF-8 text (invalid byte "
                                          f"0x{data[exc.start]:02x} on line {line})"]) from None
    if not text.strip():  # e.g. only a byte-order mark
        raise DataValidationError(table, [f"{p.name}: the file is empty"])
    header = text.splitlines()[0]
    n_columns = len(next(csv.reader([header])))
    if max_columns is not None and n_columns > max_columns:
        raise DataValidationError(table, [
            f"{p.name}: {n_columns:,} columns in the header; expected at most {max_columns}"])
    if "," not in header:
        for other in (";", "\t", "|"):
            if other in header:
                raise DataValidationError(table, [
                    f"{p.name}: expected comma-separated values, but the header is separated "
                    f"by {other!r}"])
    try:
        import io as _io

        df = pd.read_csv(_io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(table, [f"{p.name}: malformed CSV ({exc})"]) from None
    if not isinstance(df.index, pd.RangeIndex):
        # pandas silently turns the first field into the index when every row has one field more
        # than the header (e.g. a trailing comma); that would shift every value one column left.
        raise DataValidationError(table, [
            f"{p.name}: the rows from line 2 on have more fields than the header on line 1 "
            f"({len(df.columns)} columns); a trailing delimiter?"])
    if len(df) == 0:
        raise DataValidationError(table, [f"{p.name}: header only, no rows"])
    return df


def read_table(path: str | os.PathLike[str], table: str) -> pd.DataFrame:
    """Read and validate a contracted table from Parquet or CSV."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(table, [f"file not found: {p}"])
    if p.suffix.lower() == ".csv":
        df = parse_csv_table(p, table)
    else:
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises many types for a corrupt file
            raise DataValidationError(table, [f"{p.name}: not a readable Parquet file ({exc})"]
                                      ) from None
    return validate(df, table)
