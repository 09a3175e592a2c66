"""Data contracts: the three tables every stage reads and writes.

Each table is declared once, as a :class:`TableSchema` of :class:`ColumnSpec` s (meaning, type,
unit, allowed values), plus table-level rules. :func:`validate` checks a DataFrame against it,
vectorised so that millions of application rows validate in well under a second, and raises one
:class:`~smartpick_ml.contracts.errors.DataValidationError`
that names the table, the column, the rule and the
first offending rows. Nothing is coerced silently: a column of the wrong type is an error, never a
cast.
``docs/schemas.md`` is generated from these declarations (``smartpick schemas``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.reference import APPLICANT_TYPES, REGIONS, SPECIALTY_NAMES, STATE_REGION

Kind = Literal["str", "int", "float", "bool"]
SIGNAL_VALUES: tuple[str, ...] = ("none", "signal", "gold", "silver")
PROGRAM_TYPES: tuple[str, ...] = ("university", "community")
STEP2_MIN, STEP2_MAX = 150, 300
MAX_ROWS_SHOWN = 5


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


TableRule = Callable[[pd.DataFrame], tuple[pd.Series, str] | None]


@dataclass(frozen=True)
class TableSchema:
    """A table's columns, its key and its cross-column rules."""

    name: str
    description: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]
    rules: tuple[TableRule, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _rate(name: str, who: str, required: bool = True) -> ColumnSpec:
    return ColumnSpec(name, "float", f"Share of {who} applicants to this program who were invited "
                      "to interview (ERAS 2024); null where suppressed (too few applicants).",
                      unit="fraction", nullable=True, required=required, min=0.0, max=1.0)


PROGRAMS = TableSchema(
    name="programs",
    description="One row per residency program (a specialty at an institution).",
    key=("program_id",),
    columns=(
        ColumnSpec("program_id", "str", "Stable program identifier, e.g. `IM-0042`."),
        ColumnSpec("name", "str", "Program name as published (unique within a specialty)."),
        ColumnSpec("specialty", "str", "Specialty (canonical name).", allowed=SPECIALTY_NAMES),
        ColumnSpec("city", "str", "City of the program's main site."),
        ColumnSpec("state", "str", "US state or territory, two-letter code.",
                   allowed=tuple(STATE_REGION)),
        ColumnSpec("region", "str", "US Census division.", allowed=REGIONS),
        ColumnSpec("positions", "int", "PGY-1 positions offered in the Main Match.",
                   unit="positions", min=1, max=300),
        ColumnSpec("program_type", "str", "University-based or community-based.",
                   allowed=PROGRAM_TYPES),
        _rate("rate_us_md", "US MD senior"),
        _rate("rate_us_do", "US DO senior"),
        _rate("rate_us_img", "US-citizen IMG"),
        _rate("rate_non_us_img", "non-US-citizen IMG"),
        _rate("rate_in_state", "in-state-school", required=False),
        _rate("rate_out_of_state", "out-of-state-school", required=False),
        _rate("rate_signal", "signalling (single-signal specialties)", required=False),
        _rate("rate_gold_signal", "gold-signalling", required=False),
        _rate("rate_silver_signal", "silver-signalling", required=False),
        _rate("rate_no_signal", "non-signalling", required=False),
        ColumnSpec("sponsors_j1", "bool", "Accepts residents on an ECFMG-sponsored J-1 visa.",
                   nullable=True, required=False),
        ColumnSpec("sponsors_h1b", "bool", "Sponsors H-1B visas.", nullable=True, required=False),
        ColumnSpec("img_share", "float", "Share of current residents who are IMGs.",
                   unit="fraction", nullable=True, required=False, min=0.0, max=1.0),
        ColumnSpec("img_mentorship", "bool", "Has a structured mentorship programme for IMGs.",
                   nullable=True, required=False),
        ColumnSpec("img_orientation", "bool", "Has an IMG-specific orientation / onboarding.",
                   nullable=True, required=False),
        ColumnSpec("step2_minimum", "float", "Published minimum USMLE Step 2 CK score for an "
                   "interview (FREIDA lists it); null where the program states none.",
                   unit="points", nullable=True, required=False, min=STEP2_MIN, max=STEP2_MAX),
        ColumnSpec("max_years_since_graduation", "float", "Longest time since medical-school "
                   "graduation the program accepts (FREIDA's graduation cut-off); null where "
                   "none.", unit="years", nullable=True, required=False, min=0.0, max=60.0),
    ),
)


def _visa_only_for_non_us_img(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "needs_visa" not in df or "applicant_type" not in df:
        return None
    bad = df["needs_visa"].fillna(False).astype(bool) & (df["applicant_type"] != "non_us_img")
    return bad, "needs_visa: only non_us_img applicants can need a visa (US citizens do not)"


def _graduation_not_after_season(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "graduation_year" not in df or "season" not in df:
        return None
    bad = df["graduation_year"] > df["season"]
    return bad, "graduation_year: must not be after the season (Match year)"


APPLICANTS = TableSchema(
    name="applicants",
    description="One row per applicant and season. Never logged: these are personal data.",
    key=("applicant_id", "season"),
    columns=(
        ColumnSpec("applicant_id", "str", "Pseudonymous applicant identifier."),
        ColumnSpec("season", "int", "Match year (the spring the Match is run).", unit="year",
                   min=2000, max=2100),
        ColumnSpec("applicant_type", "str", "US MD senior, US DO senior, US-citizen IMG or "
                   "non-US-citizen IMG.", allowed=APPLICANT_TYPES),
        ColumnSpec("step2_ck", "int", "USMLE Step 2 CK score (first attempt).", unit="points",
                   min=STEP2_MIN, max=STEP2_MAX),
        ColumnSpec("graduation_year", "int", "Year of medical-school graduation (expected, for "
                   "seniors).", unit="year", min=1950, max=2100),
        ColumnSpec("usce_months", "int", "Months of hands-on US clinical experience.",
                   unit="months", min=0, max=240),
        ColumnSpec("publications", "int", "Peer-reviewed publications, abstracts and posters.",
                   unit="count", min=0, max=1000),
        ColumnSpec("needs_visa", "bool", "Needs a J-1 or H-1B visa to train (non-US IMGs only)."),
        ColumnSpec("home_state", "str", "State of legal residence or medical school; null if "
                   "none in the US.", nullable=True, allowed=tuple(STATE_REGION)),
        ColumnSpec("preferred_specialty", "str", "Specialty the applicant applies to.",
                   allowed=SPECIALTY_NAMES),
    ),
    rules=(_visa_only_for_non_us_img, _graduation_not_after_season),
)


def _matched_implies_interviewed(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "matched" not in df or "interviewed" not in df:
        return None
    bad = df["matched"].fillna(False).astype(bool) & ~df["interviewed"].fillna(True).astype(bool)
    return bad, "matched: a program can only match an applicant it interviewed"


def _ranked_implies_interviewed(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "rank_position" not in df or "interviewed" not in df:
        return None
    bad = df["rank_position"].notna() & ~df["interviewed"].fillna(True).astype(bool)
    return bad, "rank_position: an applicant can only rank programs that interviewed them"


def _one_match_per_applicant(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "matched" not in df:
        return None
    m = df["matched"].fillna(False).astype(bool)
    counts = m.groupby([df["applicant_id"], df["season"]]).transform("sum")
    return (counts > 1) & m, "matched: an applicant matches at most one program per season"


APPLICATIONS = TableSchema(
    name="applications",
    description="One row per application (applicant × program × season) with outcomes where known.",
    key=("applicant_id", "program_id", "season"),
    columns=(
        ColumnSpec("applicant_id", "str", "Applicant (→ applicants.applicant_id)."),
        ColumnSpec("program_id", "str", "Program (→ programs.program_id)."),
        ColumnSpec("season", "int", "Match year.", unit="year", min=2000, max=2100),
        ColumnSpec("signal", "str", "Preference signal sent with the application.",
                   required=False, allowed=SIGNAL_VALUES),
        ColumnSpec("interviewed", "bool", "The program invited the applicant to interview.",
                   nullable=True, required=False),
        ColumnSpec("rank_position", "int", "Position of the program on the applicant's rank "
                   "order list (1 = first choice); null if not ranked.", nullable=True,
                   required=False, min=1, max=500),
        ColumnSpec("matched", "bool", "The applicant matched at this program.", nullable=True,
                   required=False),
        ColumnSpec("would_take", "int", "Training label: 1 if the program would take the applicant "
                   "had they ranked it first, 0 if not, null if unknown (censored).",
                   nullable=True, required=False, min=0, max=1),
    ),
    rules=(_matched_implies_interviewed, _ranked_implies_interviewed, _one_match_per_applicant),
)


SCHEMAS: dict[str, TableSchema] = {s.name: s for s in (PROGRAMS, APPLICANTS, APPLICATIONS)}


def _rows_text(index: pd.Index, values: Sequence[object] | None = None) -> str:
    shown = list(index[:MAX_ROWS_SHOWN])
    text = "rows " + ", ".join(str(i) for i in shown)
    if values is not None:
        text += " (values " + ", ".join(repr(v) for v in list(values)[:MAX_ROWS_SHOWN]) + ")"
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
        text += f" at {_rows_text(s.index[bad.to_numpy()], values[bad])}"
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
    """The canonical column if ``s`` is plainly clean, else None (then :func:`_check_column`'s
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
        # converting every row from Arrow (~3x faster on 9M applications)
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


def _check_column(spec: ColumnSpec, s: pd.Series) -> tuple[list[str], pd.Series]:
    """Check one column; return problems and the column in its canonical dtype."""
    clean = _clean_column(spec, s)
    if clean is not None:
        return [], clean
    where = f"column '{spec.name}'"
    problems: list[str] = []
    null = s.isna()
    if spec.kind == "str":
        if not _is_text_column(s):
            return [_wrong_type(where, "text", s, lambda v: isinstance(v, str))], s
        out = s.astype("string") if not isinstance(s.dtype, pd.CategoricalDtype) else s
        out = out.astype(object).where(~null, None)
        blank = ~null & (s.astype(object).where(~null, "x").astype(str).str.strip() == "")
        if blank.any():
            problems.append(f"{where}: empty text at {_rows_text(s.index[blank])}")
    elif spec.kind == "bool":
        if not pd.api.types.is_bool_dtype(s.dtype):
            if pd.api.types.is_object_dtype(s.dtype) and s.dropna().map(type).eq(bool).all():
                pass
            else:
                return [_wrong_type(where, "true/false", s, lambda v: isinstance(v, bool))], s
        out = s.astype("boolean") if spec.nullable else s
        if not spec.nullable and not null.any():
            out = s.astype(bool)
    elif spec.kind == "int":
        if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_integer_dtype(s.dtype):
            if pd.api.types.is_float_dtype(s.dtype):
                frac = ~null & (s.fillna(0) % 1 != 0)
                if frac.any():
                    return [f"{where}: expected whole numbers, got fractions at "
                            f"{_rows_text(s.index[frac], s[frac])}"], s
                huge = ~null & (s.abs() >= 2.0**63)
                if huge.any():  # whole, but no 64-bit integer can hold it: no cast, no crash
                    return [f"{where}: must be {spec.rule_text()}, broken at "
                            f"{_rows_text(s.index[huge], s[huge])}"], s
                if not spec.nullable and null.any():
                    pass  # reported below as missing values
                else:
                    s = s.astype("Int64")
            else:
                return [_wrong_type(where, "whole numbers", s, _is_int_value)], s
        if pd.api.types.is_unsigned_integer_dtype(s.dtype):
            huge = ~null & (s.astype(np.float64) >= 2.0**63)
            if huge.any():  # a uint64 this large would wrap round to a negative int64
                return [f"{where}: must be {spec.rule_text()}, broken at "
                        f"{_rows_text(s.index[huge], s[huge])}"], s
        out = s.astype("Int64") if spec.nullable else s
        if not spec.nullable and not null.any():
            out = s.astype(np.int64)
    else:  # float
        if (pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype)
                or pd.api.types.is_complex_dtype(s.dtype)):
            return [_wrong_type(where, "numbers", s, _is_real_value)], s
        out = s.astype(np.float64)
        inf = np.isinf(out.to_numpy(dtype=np.float64, na_value=np.nan))
        if inf.any():
            problems.append(f"{where}: infinite values at {_rows_text(s.index[inf])}")
    if null.any() and not spec.nullable:
        problems.append(f"{where}: missing values (not allowed) at {_rows_text(s.index[null])}")
    present = out[~null]
    if spec.allowed is not None and len(present):
        bad = ~present.isin(spec.allowed)
        if bad.any():
            problems.append(f"{where}: must be {spec.rule_text()}, broken at "
                            f"{_rows_text(present.index[bad], present[bad])}")
    if (spec.min is not None or spec.max is not None) and len(present):
        vals = present.astype(np.float64)
        bad = pd.Series(False, index=present.index)
        if spec.min is not None:
            bad |= vals < spec.min
        if spec.max is not None:
            bad |= vals > spec.max
        if bad.any():
            problems.append(f"{where}: must be {spec.rule_text()}, broken at "
                            f"{_rows_text(present.index[bad], present[bad])}")
    return problems, out


def validate(df: pd.DataFrame, schema: TableSchema | str, *, allow_extra: bool = True
             ) -> pd.DataFrame:
    """Validate ``df`` against ``schema`` and return it with canonical dtypes.

    Raises :class:`DataValidationError` listing every broken rule with the first offending rows.
    Optional columns that are absent are left absent; extra columns are kept unless
    ``allow_extra`` is false.
    """
    schema = SCHEMAS[schema] if isinstance(schema, str) else schema
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(schema.name, [f"expected a pandas DataFrame, got "
                                                f"{type(df).__name__}"])
    problems: list[str] = []
    if len(df) == 0:
        raise DataValidationError(schema.name, ["the table is empty (no rows)"])
    if df.columns.duplicated().any():
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise DataValidationError(schema.name, [f"duplicate column names: {dup}"])
    missing = [c.name for c in schema.columns if c.required and c.name not in df.columns]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    extra = [c for c in df.columns if c not in schema.column_names]
    if extra and not allow_extra:
        problems.append(f"unknown column(s): {', '.join(map(str, extra))}")
    out = df.reset_index(drop=True) if not df.index.equals(pd.RangeIndex(len(df))) else df.copy()
    for spec in schema.columns:
        if spec.name not in out.columns:
            continue
        col_problems, canonical = _check_column(spec, out[spec.name])
        problems.extend(col_problems)
        if not col_problems:
            out[spec.name] = canonical
    if problems:
        raise DataValidationError(schema.name, problems)
    key = list(schema.key)
    dup = out.duplicated(key, keep="first")
    if dup.any():
        problems.append(f"key ({', '.join(key)}) must be unique; duplicated at "
                        f"{_rows_text(out.index[dup])}")
    for rule in schema.rules:
        result = rule(out)
        if result is None:
            continue
        bad, text = result
        if bad.any():
            problems.append(f"{text}; broken at {_rows_text(out.index[bad.to_numpy()])}")
    if problems:
        raise DataValidationError(schema.name, problems)
    ordered = [c for c in schema.column_names if c in out.columns]
    return out[ordered + [c for c in out.columns if c not in ordered]]


def schema_markdown(schema: TableSchema) -> str:
    """The contract as a Markdown table (for ``docs/schemas.md``)."""
    lines = [f"### `{schema.name}`", "", schema.description, "",
             f"Key: `{', '.join(schema.key)}`", "",
             "| column | type | required | nullable | unit | allowed | meaning |",
             "|---|---|---|---|---|---|---|"]
    for c in schema.columns:
        lines.append(f"| `{c.name}` | {c.kind} | {'yes' if c.required else 'no'} | "
                     f"{'yes' if c.nullable else 'no'} | {c.unit} | {c.rule_text()} | "
                     f"{c.description} |")
    return "\n".join(lines)
