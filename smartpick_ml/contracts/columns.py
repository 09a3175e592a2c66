"""The rules of a column, declared once, and the two checkers that enforce them.

A :class:`ColumnSpec` says what one column may hold: its kind (text, whole number, number,
true/false), its range or allowed values, and whether it may be null. A :class:`RowRule` says what
several columns of one row must satisfy together. Every table (``schemas``), every pairs frame
and served request (``pairs``) and every applicant profile (``inference.predictor``) takes its
rules from these declarations.

Two checkers read the same declarations, because they serve different sizes:

- :func:`check_series` checks a pandas column, vectorised: millions of rows of a table, or a
  frame a data scientist passes to ``predict``;
- :func:`check_values` checks a list of Python values in a plain loop: the few rows of a served
  request or one applicant profile, where pandas' per-call overhead would cost more than the work.

``tests/contracts/test_columns.py`` checks that both give the same verdict on the same values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Kind = Literal["str", "int", "float", "bool"]


MAX_ROWS_SHOWN = 5
#: the most of one bad value an error message quotes: enough to recognise it, never a whole
#: record echoed back (a reply or a log line must not carry an applicant's data at length)
MAX_QUOTED_CHARS = 80


def name_list(names: Sequence[Any], limit: int = MAX_ROWS_SHOWN * 2) -> str:
    """Names for an error message: the first ``limit``, each quoted, then how many more."""
    shown = ", ".join(quote(n, 40) if not isinstance(n, str) else n[:40] for n in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def quote(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with its full length
    said when longer."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails still gets a message
        return f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a data contract."""

    name: str
    kind: Kind
    description: str
    unit: str = ""
    nullable: bool = False
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None

    @functools.cached_property
    def allowed_set(self) -> frozenset[str]:
        """``allowed`` as a set, for membership tests one value at a time."""
        return frozenset(self.allowed or ())

    def rule_text(self) -> str:
        parts = []
        if self.allowed is not None:
            shown = ", ".join(self.allowed[:6]) + (", …" if len(self.allowed) > 6 else "")
            parts.append(f"one of {{{shown}}}")
        if self.min is not None and self.max is not None:
            parts.append(f"{self.min:g} ≤ x ≤ {self.max:g}")
        elif self.min is not None:
            parts.append(f"x ≥ {self.min:g}")
        elif self.max is not None:
            parts.append(f"x ≤ {self.max:g}")
        return "; ".join(parts) or "any"


def rows_text(index: pd.Index, values: Sequence[object] | None = None) -> str:
    shown = list(index[:MAX_ROWS_SHOWN])
    text = "rows " + ", ".join(str(i) for i in shown)
    if values is not None:
        text += " (values " + ", ".join(quote(v) for v in list(values)[:MAX_ROWS_SHOWN]) + ")"
    if len(index) > MAX_ROWS_SHOWN:
        text += f" and {len(index) - MAX_ROWS_SHOWN} more"
    return text


def _is_text_column(s: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return True
    if isinstance(s.dtype, pd.CategoricalDtype):
        # object categories may hold anything (bytes, numbers): look at the values themselves
        return bool(pd.Series(s.cat.categories, dtype=object).map(type).eq(str).all())
    if pd.api.types.is_object_dtype(s.dtype):
        nonnull = s.dropna()
        return bool(nonnull.map(type).eq(str).all())
    return False


def _is_int_value(v: object) -> bool:
    if isinstance(v, bool | np.bool_):
        return False
    if isinstance(v, int | np.integer):
        return True
    return isinstance(v, float | np.floating) and bool(np.isfinite(v)) and float(v).is_integer()


def _is_real_value(v: object) -> bool:
    number = isinstance(v, int | float | np.integer | np.floating)
    return number and not isinstance(v, bool | np.bool_)


def _wrong_type(where: str, expected: str, s: pd.Series, ok: Callable[[object], bool]) -> str:
    """``column 'x': expected <kind>, got dtype <d>`` plus the first rows whose value is not one."""
    text = f"{where}: expected {expected}, got dtype {s.dtype}"
    values = s.astype(object)
    bad = values.notna() & ~values.map(ok).astype(bool)
    if bad.any():
        text += f" at {rows_text(s.index[bad.to_numpy()], values[bad])}"
    return text


#: below this many rows a text column is checked value by value in plain Python: on the 1-3 rows
#: of a served request that costs microseconds, where pandas' per-call overhead costs milliseconds
SMALL_TEXT_ROWS = 256


def _in_range(spec: ColumnSpec, values: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):
        if spec.min is not None and (values < spec.min).any():
            return False
        return not (spec.max is not None and (values > spec.max).any())


def _clean_column(spec: ColumnSpec, s: pd.Series) -> pd.Series | None:
    """The canonical column if ``s`` is plainly clean, else None (then :func:`check_series`'s
    full checks run and word the problems). Works on numpy arrays: the common case, a clean
    column of the usual dtype, skips a dozen pandas calls per column."""
    dtype = s.dtype
    if spec.kind == "float":
        if not (isinstance(dtype, np.dtype) and dtype.kind in "fiu"):
            return None
        values = s.to_numpy(dtype=np.float64)
        null = np.isnan(values)
        if np.isinf(values).any() or (not spec.nullable and null.any()):
            return None
        if not _in_range(spec, values[~null] if null.any() else values):
            return None
        return s.astype(np.float64)
    if spec.kind == "int":
        if not (isinstance(dtype, np.dtype) and dtype.kind == "i"):
            return None
        if not _in_range(spec, s.to_numpy()):
            return None
        return s.astype("Int64") if spec.nullable else s.astype(np.int64)
    if spec.kind == "bool":
        if isinstance(dtype, np.dtype) and dtype.kind == "b":
            return s.astype("boolean") if spec.nullable else s.astype(bool)
        if isinstance(dtype, pd.BooleanDtype):
            if spec.nullable:
                return s.astype("boolean")
            return s.astype(bool) if not s.isna().any() else None
        return None
    # text: object or string dtype; the values are checked in a plain Python loop
    if isinstance(dtype, pd.CategoricalDtype) or not (
            isinstance(dtype, pd.StringDtype) or pd.api.types.is_object_dtype(dtype)):
        return None
    if len(s) <= SMALL_TEXT_ROWS:
        values = s.to_numpy(dtype=object)
        null = pd.isna(values)
        distinct = values[~null]
    else:
        # a large column (ids, codes) has few distinct values: check each once, and build the
        # object column by indexing them (one string object per distinct value, shared), not by
        # converting every row from Arrow
        try:
            codes, uniques = pd.factorize(s)
        except TypeError:  # unhashable values (lists, dicts): the full checks name them
            return None
        lookup = np.empty(len(uniques) + 1, dtype=object)
        lookup[:-1] = np.asarray(uniques, dtype=object)  # and None last, where code -1 (null) lands
        distinct, null, values = lookup[:-1], codes < 0, lookup[codes]
    if null.any() and not spec.nullable:
        return None
    allowed = spec.allowed
    for v in distinct:
        if type(v) is not str or not v.strip() or (allowed is not None and v not in allowed):
            return None
    if null.any() and len(s) <= SMALL_TEXT_ROWS:
        values = values.copy()
        values[null] = None
    return pd.Series(values, index=s.index, name=s.name, dtype=object)


def _null_column(spec: ColumnSpec, s: pd.Series) -> pd.Series:
    """A column of nulls in the canonical dtype of ``spec``'s kind."""
    dtype = {"str": object, "bool": "boolean", "int": "Int64", "float": np.float64}[spec.kind]
    return pd.Series([None] * len(s), index=s.index, name=s.name, dtype=dtype)


def check_series(spec: ColumnSpec, s: pd.Series) -> tuple[list[str], pd.Series]:
    """Check one column; return problems and the column in its canonical dtype."""
    clean = _clean_column(spec, s)
    if clean is not None:
        return [], clean
    if spec.nullable and s.isna().all():  # nothing but nulls: no value to have a wrong type
        return [], _null_column(spec, s)
    where = f"column '{spec.name}'"
    null = s.isna()
    if spec.kind in ("int", "float") and pd.api.types.is_object_dtype(s.dtype) \
            and s[~null].map(_is_real_value).all():
        # numbers held as Python objects (a frame built from JSON, or cast to object): the same
        # values as a numeric column, so the same verdict
        s = pd.Series([np.nan if is_null(v) else float(v) for v in s], index=s.index,
                      name=s.name, dtype=np.float64)
    check_kind = {"str": _check_text, "bool": _check_bool, "int": _check_int,
                  "float": _check_float}[spec.kind]
    problems, out = check_kind(spec, s, null, where)
    if out is None:  # the wrong type: the values cannot be compared with the rules
        return problems, s
    return problems + _broken_rules(spec, out, null, where), out


def _check_text(spec: ColumnSpec, s: pd.Series, null: pd.Series, where: str
                ) -> tuple[list[str], pd.Series | None]:
    """Text: no other type, no empty text."""
    if not _is_text_column(s):
        return [_wrong_type(where, "text", s, lambda v: isinstance(v, str))], None
    out = s.astype("string") if not isinstance(s.dtype, pd.CategoricalDtype) else s
    out = out.astype(object).where(~null, None)
    blank = ~null & (s.astype(object).where(~null, "x").astype(str).str.strip() == "")
    if blank.any():
        return [f"{where}: empty text at {rows_text(s.index[blank])}"], out
    return [], out


def _check_bool(spec: ColumnSpec, s: pd.Series, null: pd.Series, where: str
                ) -> tuple[list[str], pd.Series | None]:
    """True/false: booleans only (not 0/1, not words)."""
    if not pd.api.types.is_bool_dtype(s.dtype) and not (
            pd.api.types.is_object_dtype(s.dtype)
            and s.dropna().map(lambda v: isinstance(v, _BOOL)).all()):
        return [_wrong_type(where, "true/false", s, lambda v: isinstance(v, _BOOL))], None
    if not spec.nullable and not null.any():
        return [], s.astype(bool)
    return [], s.astype("boolean") if spec.nullable else s


def _check_int(spec: ColumnSpec, s: pd.Series, null: pd.Series, where: str
               ) -> tuple[list[str], pd.Series | None]:
    """Whole numbers: integers, or floats without a fraction that a 64-bit integer can hold."""
    if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_integer_dtype(s.dtype):
        if not pd.api.types.is_float_dtype(s.dtype):
            return [_wrong_type(where, "whole numbers", s, _is_int_value)], None
        frac = ~null & (s.fillna(0) % 1 != 0)
        if frac.any():
            return [f"{where}: expected whole numbers, got fractions at "
                    f"{rows_text(s.index[frac], s[frac])}"], None
        huge = ~null & (s.abs() >= 2.0**63)
        if huge.any():  # whole, but no 64-bit integer can hold it: no cast, no crash
            return [f"{where}: must be {spec.rule_text()}, broken at "
                    f"{rows_text(s.index[huge], s[huge])}"], None
        if spec.nullable or not null.any():  # else reported as missing values
            s = s.astype("Int64")
    if pd.api.types.is_unsigned_integer_dtype(s.dtype):
        huge = ~null & (s.astype(np.float64) >= 2.0**63)
        if huge.any():  # a uint64 this large would wrap round to a negative int64
            return [f"{where}: must be {spec.rule_text()}, broken at "
                    f"{rows_text(s.index[huge], s[huge])}"], None
    if not spec.nullable and not null.any():
        return [], s.astype(np.int64)
    return [], s.astype("Int64") if spec.nullable else s


def _check_float(spec: ColumnSpec, s: pd.Series, null: pd.Series, where: str
                 ) -> tuple[list[str], pd.Series | None]:
    """Numbers: real and finite (null is NaN)."""
    if (pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype)
            or pd.api.types.is_complex_dtype(s.dtype)):
        return [_wrong_type(where, "numbers", s, _is_real_value)], None
    out = s.astype(np.float64)
    inf = np.isinf(out.to_numpy(dtype=np.float64, na_value=np.nan))
    if inf.any():
        return [f"{where}: infinite values at {rows_text(s.index[inf])}"], out
    return [], out


def _broken_rules(spec: ColumnSpec, out: pd.Series, null: pd.Series, where: str) -> list[str]:
    """Nulls where none are allowed, values outside the allowed set or the range."""
    problems = []
    if null.any() and not spec.nullable:
        problems.append(f"{where}: missing values (not allowed) at {rows_text(out.index[null])}")
    present = out[~null]
    if spec.allowed is not None and len(present):
        bad = ~present.isin(spec.allowed)
        if bad.any():
            problems.append(f"{where}: must be {spec.rule_text()}, broken at "
                            f"{rows_text(present.index[bad], present[bad])}")
    if (spec.min is not None or spec.max is not None) and len(present):
        vals = present.astype(np.float64)
        bad = pd.Series(False, index=present.index)
        if spec.min is not None:
            bad |= vals < spec.min
        if spec.max is not None:
            bad |= vals > spec.max
        if bad.any():
            problems.append(f"{where}: must be {spec.rule_text()}, broken at "
                            f"{rows_text(present.index[bad], present[bad])}")
    return problems


_NUMBER = (int, float, np.integer, np.floating)


_BOOL = (bool, np.bool_)


def is_null(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float | np.floating) and v != v)


def rows_at(bad: list[int], values: list[Any] | None = None) -> str:
    if values is None:
        return f"row(s) {bad[:3]}"
    return ", ".join(f"row {i}: {quote(values[i])}" for i in bad[:3])


def check_values(spec: ColumnSpec, values: list[Any], where: str | None = None) -> np.ndarray:
    """One column of Python values as numbers (float; NaN = null) or text (object; None = null),
    or a ``ValueError`` naming ``where`` (default ``pairs.<column>``) and the first bad rows."""
    where = where or f"pairs.{spec.name}"
    null = [i for i, v in enumerate(values) if is_null(v)]
    if null and not spec.nullable:
        raise ValueError(f"{where}: missing value (null/NaN) at {rows_at(null)}")
    if spec.kind == "str":
        out = [None if is_null(v) else v for v in values]
        bad = [i for i, v in enumerate(out) if v is not None and not isinstance(v, str)]
        if bad:
            raise ValueError(f"{where}: must be text, got {rows_at(bad, out)}")
        bad = [i for i, v in enumerate(out) if v is not None and not v.strip()]
        if bad:
            raise ValueError(f"{where}: empty text at {rows_at(bad)}")
        if spec.allowed is not None:
            allowed = spec.allowed_set
            bad = [i for i, v in enumerate(out) if v is not None and v not in allowed]
            if bad:
                raise ValueError(f"{where}: must be {spec.rule_text()}, got {rows_at(bad, out)}")
        return np.array(out, dtype=object)
    if spec.kind == "bool":
        bad = [i for i, v in enumerate(values) if not (is_null(v) or isinstance(v, _BOOL))]
        if bad:
            raise ValueError(f"{where}: must be true or false"
                             f"{' or null' if spec.nullable else ''}, got {rows_at(bad, values)}")
        return np.array([np.nan if is_null(v) else float(v) for v in values])
    bad = [i for i, v in enumerate(values)
           if not is_null(v) and (not isinstance(v, _NUMBER) or isinstance(v, _BOOL))]
    if bad:
        raise ValueError(f"{where}: must be a number, got {rows_at(bad, values)}")
    out = [math.nan if is_null(v) else float(v) for v in values]
    lo = -math.inf if spec.min is None else spec.min
    hi = math.inf if spec.max is None else spec.max
    whole = spec.kind == "int"
    bad = [i for i, v in enumerate(out) if v == v and (not math.isfinite(v)
                                                         or (whole and v != round(v)))]
    if bad:
        raise ValueError(f"{where}: must be a finite {'whole number' if whole else 'number'}, "
                         f"got {rows_at(bad, out)}")
    bad = [i for i, v in enumerate(out) if v == v and not lo <= v <= hi]
    if bad:
        raise ValueError(f"{where}: must be {spec.rule_text()}, got {rows_at(bad, out)}")
    return np.array(out)


def _rule_array(values: Any) -> np.ndarray:
    """A column as a row rule reads it: true/false as 1.0 / 0.0 (NaN = null), numbers as floats,
    text as objects."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.astype("boolean").to_numpy(dtype=float, na_value=np.nan)
        if pd.api.types.is_numeric_dtype(values.dtype):
            return values.to_numpy(dtype=float, na_value=np.nan)
        return values.to_numpy(dtype=object)
    return np.asarray(values)


@dataclass(frozen=True)
class RowRule:
    """What several columns of one row must satisfy together, reported under ``column``.

    ``broken`` takes the ``needs`` columns as arrays (see :func:`_rule_array`) and returns which
    rows break the rule; a frame or request without all of them is not checked by it."""

    column: str
    needs: tuple[str, ...]
    text: str
    broken: Callable[..., np.ndarray]

    def broken_rows(self, columns: Mapping[str, Any]) -> np.ndarray | None:
        """Which rows of ``columns`` (a frame, or a mapping of arrays) break the rule."""
        if any(c not in columns for c in self.needs):
            return None
        return np.asarray(self.broken(*(_rule_array(columns[c]) for c in self.needs)), bool)

    def __call__(self, df: pd.DataFrame) -> tuple[pd.Series, str] | None:
        """The rule as a table rule (``schemas.TableSchema.rules``)."""
        bad = self.broken_rows(df)
        if bad is None:
            return None
        return pd.Series(bad, index=df.index), f"{self.column}: {self.text}"

    def check(self, columns: Mapping[str, Any], where: str) -> None:
        """Raise a ``ValueError`` naming ``where`` and the first broken rows, if any."""
        bad = self.broken_rows(columns)
        if bad is not None and bad.any():
            raise ValueError(f"{where}: {self.text}, broken at "
                             f"{rows_at(np.flatnonzero(bad).tolist())}")
