"""Data contracts: valid tables pass with canonical dtypes; every broken rule is reported by table,
column, rule and offending rows; nothing but DataValidationError ever escapes ``validate``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.columns import SMALL_TEXT_ROWS, check_series
from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.schemas import (
    APPLICANTS,
    APPLICATIONS,
    PROGRAMS,
    SCHEMAS,
    schema_markdown,
    validate,
)

TABLES = ("programs", "applicants", "applications")


def _frame(request: pytest.FixtureRequest, table: str) -> pd.DataFrame:
    return request.getfixturevalue(f"{table}_frame")


def _error(df: pd.DataFrame, table: str) -> str:
    with pytest.raises(DataValidationError) as info:
        validate(df, table)
    assert info.value.table == table
    return str(info.value)


# ------------------------------------------------------------------------------------- valid


@pytest.mark.parametrize("table", TABLES)
def test_valid_table_passes_unchanged(request, table):
    df = _frame(request, table)
    before = df.copy()
    out = validate(df, table)
    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    assert list(out.columns) == [c for c in SCHEMAS[table].column_names if c in df.columns]
    assert len(out) == len(df)
    # validating the output again is a no-op
    pd.testing.assert_frame_equal(validate(out, table), out)


def test_canonical_dtypes(applicants_frame, applications_frame):
    a = validate(applicants_frame, APPLICANTS)
    assert a["step2_ck"].dtype == np.int64
    assert a["needs_visa"].dtype == bool
    assert a["home_state"].tolist() == ["CA", "NY", "FL", None]
    apps = validate(applications_frame, APPLICATIONS)
    assert str(apps["rank_position"].dtype) == "Int64"
    assert str(apps["matched"].dtype) == "boolean"


def test_whole_floats_are_accepted_as_ints(applicants_frame, applications_frame):
    df = applicants_frame.assign(step2_ck=applicants_frame["step2_ck"].astype(float))
    assert validate(df, APPLICANTS)["step2_ck"].tolist() == [250, 241, 236, 228]
    # a nullable int column arriving as float with NaN (as from a CSV) becomes Int64
    apps = applications_frame.assign(rank_position=[1.0, 2.0, np.nan, 1.0, np.nan])
    out = validate(apps, APPLICATIONS)
    assert str(out["rank_position"].dtype) == "Int64"
    assert out["rank_position"].isna().tolist() == [False, False, True, False, True]


def test_optional_columns_may_be_absent_extra_columns_kept(applications_frame):
    df = applications_frame.drop(columns=["signal", "would_take"]).assign(note="x")
    out = validate(df, APPLICATIONS)
    assert "signal" not in out and "would_take" not in out
    assert out.columns[-1] == "note"
    with pytest.raises(DataValidationError, match=r"unknown column\(s\): note"):
        validate(df, APPLICATIONS, allow_extra=False)


def test_non_range_index_is_reset(applicants_frame):
    df = applicants_frame.set_index(pd.Index([10, 11, 12, 13]))
    assert validate(df, APPLICANTS).index.equals(pd.RangeIndex(4))
    # row numbers in messages are positions (0-based), not the caller's labels
    df.loc[12, "step2_ck"] = 999
    assert "rows 2 (values 999)" in _error(df, "applicants")


def test_not_a_dataframe():
    with pytest.raises(DataValidationError, match="expected a pandas DataFrame, got list"):
        validate([1, 2], "programs")  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- corruptions


def _set(col: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def f(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({col: object})
        df.loc[row, col] = value
        return df
    return f


def _two_matches(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["matched"] = pd.array([True, True, False, False, None], dtype="boolean")
    return df


def _matched_not_interviewed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[3, "matched"] = True
    df.loc[3, "interviewed"] = False
    df.loc[3, "rank_position"] = pd.NA
    return df


def _duplicate_key(df: pd.DataFrame) -> pd.DataFrame:
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    df.loc[len(df) - 1, "program_id"] = df.loc[0, "program_id"]
    return df


def _visa_for_md(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[0, "needs_visa"] = True
    return df


def _graduation_after_season(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[1, "graduation_year"] = 2027
    return df


def _ranked_not_interviewed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[2, "rank_position"] = 3
    return df


# (table, corruption, fragments the message must contain)
CORRUPTIONS: dict[str, tuple[str, Callable[[pd.DataFrame], pd.DataFrame], list[str]]] = {
    "missing required column": (
        "applicants", lambda df: df.drop(columns=["step2_ck"]),
        ["missing required column(s): step2_ck"]),
    "missing required columns (programs)": (
        "programs", lambda df: df.drop(columns=["rate_us_md", "state"]),
        ["missing required column(s): state, rate_us_md"]),
    "wrong dtype: text in int column": (
        "applicants", lambda df: df.assign(step2_ck=["250", "241", "abc", "228"]),
        ["column 'step2_ck'", "expected whole numbers", "rows 0, 1, 2, 3", "'abc'"]),
    "wrong dtype: one string among ints": (
        "applicants", _set("usce_months", 2, "four"),
        ["column 'usce_months'", "expected whole numbers", "rows 2 (values 'four')"]),
    "wrong dtype: text in rate column": (
        "programs", _set("rate_us_md", 1, "high"),
        ["column 'rate_us_md'", "expected numbers", "rows 1 (values 'high')"]),
    "wrong dtype: bools in int column": (
        "applicants", lambda df: df.assign(publications=[True, False, True, False]),
        ["column 'publications'", "expected whole numbers", "got dtype bool", "rows 0, 1, 2, 3"]),
    "wrong dtype: fraction in int column": (
        "applicants", lambda df: df.assign(step2_ck=[250.0, 241.5, 236.0, 228.0]),
        ["column 'step2_ck'", "expected whole numbers, got fractions", "rows 1 (values 241.5)"]),
    "wrong dtype: number in text column": (
        "applicants", _set("home_state", 1, 36),
        ["column 'home_state'", "expected text", "rows 1 (values 36)"]),
    "wrong dtype: text in bool column": (
        "applicants", lambda df: df.assign(needs_visa=["no", "no", "no", "yes"]),
        ["column 'needs_visa'", "expected true/false", "rows 0, 1, 2, 3"]),
    "out-of-range step2_ck": (
        "applicants", lambda df: df.assign(step2_ck=[250, 310, 236, 140]),
        ["column 'step2_ck'", "150 ≤ x ≤ 300", "rows 1, 3 (values 310, 140)"]),
    "out-of-range rate": (
        "programs", lambda df: df.assign(rate_non_us_img=[0.01, 1.4, -0.2]),
        ["column 'rate_non_us_img'", "0 ≤ x ≤ 1", "rows 1, 2 (values 1.4, -0.2)"]),
    "infinite rate": (
        "programs", lambda df: df.assign(rate_us_do=[0.2, np.inf, np.nan]),
        ["column 'rate_us_do'", "infinite values at rows 1"]),
    "unknown applicant_type": (
        "applicants", _set("applicant_type", 2, "us_citizen"),
        ["column 'applicant_type'", "must be one of {us_md_senior",
         "rows 2 (values 'us_citizen')"]),
    "unknown state": (
        "programs", _set("state", 0, "ZZ"),
        ["column 'state'", "must be one of", "rows 0 (values 'ZZ')"]),
    "unknown track": (
        "programs", lambda df: df.assign(track=["categorical", "residency", "advanced"]),
        ["column 'track'", "must be one of {categorical, advanced, preliminary, transitional}",
         "rows 1 (values 'residency')"]),
    "unknown signal": (
        "applications", _set("signal", 4, "platinum"),
        ["column 'signal'", "must be one of {none, signal, gold, silver}",
         "rows 4 (values 'platinum')"]),
    "null in non-nullable text": (
        "applicants", _set("applicant_type", 1, None),
        ["column 'applicant_type'", "missing values (not allowed)", "rows 1"]),
    "null in non-nullable int": (
        "applicants", lambda df: df.assign(season=[2025, np.nan, 2025, 2024]),
        ["column 'season'", "missing values (not allowed)", "rows 1"]),
    "blank text": (
        "programs", _set("name", 2, "   "),
        ["column 'name'", "empty text", "rows 2"]),
    "duplicate key": (
        "applications", _duplicate_key,
        ["key (applicant_id, program_id, season) must be unique", "duplicated at rows 5"]),
    "needs_visa for a us_md_senior": (
        "applicants", _visa_for_md,
        ["needs_visa", "only non_us_img applicants can need a visa", "rows 0"]),
    "graduation_year after season": (
        "applicants", _graduation_after_season,
        ["graduation_year", "must not be after the season", "rows 1"]),
    "matched without interviewed": (
        "applications", _matched_not_interviewed,
        ["matched", "can only match an applicant it interviewed", "rows 3"]),
    "ranked without interviewed": (
        "applications", _ranked_not_interviewed,
        ["rank_position", "only rank programs that interviewed them", "rows 2"]),
    "two matches for one applicant": (
        "applications", _two_matches,
        ["matched", "at most one program per season", "rows 0, 1"]),
    "empty frame": (
        "applicants", lambda df: df.iloc[0:0],
        ["the table is empty (no rows)"]),
    "duplicate column names": (
        "programs", lambda df: pd.concat([df, df[["city"]]], axis=1),
        ["duplicate column names: ['city']"]),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_is_reported(request, case):
    table, corrupt, fragments = CORRUPTIONS[case]
    df = corrupt(_frame(request, table))
    msg = _error(df, table)
    assert msg.startswith(f"table '{table}' failed validation")
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in:\n{msg}"


def test_every_problem_is_listed_at_once(applicants_frame):
    df = applicants_frame.assign(step2_ck=[250, 400, 236, 228], usce_months=[0, 0, -1, 12])
    df.loc[3, "applicant_type"] = "alien"
    with pytest.raises(DataValidationError) as info:
        validate(df, APPLICANTS)
    assert len(info.value.problems) == 3
    assert "(3 problems)" in str(info.value)
    cols = sorted(re.findall(r"column '(\w+)'", str(info.value)))
    assert cols == ["applicant_type", "step2_ck", "usce_months"]


def test_row_list_is_truncated():
    df = _frame_applicants_big()
    df["step2_ck"] = 100
    msg = _error(df, "applicants")
    assert "rows 0, 1, 2, 3, 4 (values 100, 100, 100, 100, 100) and 15 more" in msg


def _frame_applicants_big() -> pd.DataFrame:
    n = 20
    return pd.DataFrame({
        "applicant_id": [f"A{i}" for i in range(n)], "season": 2025,
        "applicant_type": "us_img", "step2_ck": 240, "graduation_year": 2020,
        "usce_months": 3, "publications": 0, "needs_visa": False, "home_state": "NJ",
        "preferred_specialty": "Pediatrics"})


def test_huge_and_unsigned_values_do_not_crash(applicants_frame):
    """Whole floats beyond int64 and uint64 values beyond int64 are range errors, not a cast
    crash or a silent wrap-around to a negative number."""
    df = applicants_frame.assign(step2_ck=[250.0, 1e300, 236.0, 228.0])
    assert "column 'step2_ck': must be 150 ≤ x ≤ 300, broken at rows 1 (values 1e+300)" in \
        _error(df, "applicants")
    big = np.array([250, 2**63 + 5, 236, 228], dtype=np.uint64)
    msg = _error(applicants_frame.assign(step2_ck=big), "applicants")
    assert "rows 1 (values 9223372036854775813)" in msg
    ok = applicants_frame.assign(step2_ck=np.array([250, 241, 236, 228], dtype=np.uint64))
    assert validate(ok, APPLICANTS)["step2_ck"].dtype == np.int64


@pytest.mark.parametrize("values", [["none", b"\xff", "gold"], ["none", 3, "gold"]])
def test_categorical_with_non_text_categories_is_not_text(applications_frame, values):
    df = applications_frame.iloc[:3].assign(signal=pd.Series(values, dtype="category"))
    msg = _error(df, "applications")
    assert "column 'signal': expected text, got dtype category at rows 1" in msg


def test_categorical_text_is_accepted(applications_frame):
    df = applications_frame.assign(signal=applications_frame["signal"].astype("category"))
    assert validate(df, APPLICATIONS)["signal"].tolist() == df["signal"].tolist()


def test_complex_rates_are_rejected_not_truncated(programs_frame):
    df = programs_frame.assign(rate_us_md=np.array([0.3 + 0.5j, 0.1, 0.2]))
    msg = _error(df, "programs")
    assert "column 'rate_us_md': expected numbers, got dtype complex128" in msg


def test_track_is_optional_and_takes_the_four_tracks(programs_frame):
    assert not PROGRAMS.column("track").required  # older catalogs have none: categorical
    assert "track" not in validate(programs_frame, PROGRAMS)
    for track in ("categorical", "advanced", "preliminary", "transitional"):
        out = validate(programs_frame.assign(track=track), PROGRAMS)
        assert (out["track"] == track).all()
    msg = _error(programs_frame.assign(track=[None, "advanced", "advanced"]), "programs")
    assert "column 'track'" in msg and "missing values" in msg


def test_schema_markdown_lists_every_column():
    for schema in (PROGRAMS, APPLICANTS, APPLICATIONS):
        md = schema_markdown(schema)
        for c in schema.columns:
            assert f"| `{c.name}` |" in md


# ------------------------------------------------------------------------------ property test

_JUNK = st.one_of(
    st.none(),
    st.just(np.nan),
    st.just(np.inf),
    st.just(-np.inf),
    st.just(pd.NA),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["", " ", "CA", "us_img", "Internal Medicine", "gold", "2025", "true"]),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.just(object()),
    st.just(pd.Timestamp("2025-03-21")),
    st.just(b"\xff"),
    st.just(1 + 2j),
)


def _plausible(schema_name: str, col: str) -> st.SearchStrategy:
    """Values that usually satisfy the column, so that examples also reach the table rules."""
    spec = SCHEMAS[schema_name].column(col)
    if spec.allowed is not None:
        base = st.sampled_from(spec.allowed)
    elif spec.kind == "str":
        base = st.sampled_from(["A1", "A2", "A3", "IM-0001", "IM-0002"])
    elif spec.kind == "bool":
        base = st.booleans()
    elif spec.kind == "int":
        lo = int(spec.min) if spec.min is not None else -5
        hi = int(spec.max) if spec.max is not None else 5
        base = st.integers(min_value=lo, max_value=min(hi, lo + 30))
    else:
        base = st.floats(min_value=spec.min or 0.0, max_value=spec.max or 1.0)
    return base | st.none() if spec.nullable else base


_DTYPES = [object, "Int64", "boolean", "string", "str", "category", float, np.int64, np.uint64,
           np.int8, "Float64", bool, "datetime64[ns]"]


def _column_values(draw, plausible: st.SearchStrategy, n: int) -> list:
    mode = draw(st.sampled_from(["plausible"] * 6 + ["some junk"] * 2 + [
        "floats", "integers", "text", "junk"]))
    if mode == "plausible":
        return [draw(plausible) for _ in range(n)]
    if mode == "some junk":
        return [draw(_JUNK) if draw(st.booleans()) else draw(plausible) for _ in range(n)]
    if mode == "floats":  # NaN, inf, fractions, whole numbers far beyond int64
        return [draw(st.floats() | st.sampled_from([1e300, -2.0**70, 2.0**63, 250.0]))
                for _ in range(n)]
    if mode == "integers":
        return [draw(st.integers(min_value=-(2**64), max_value=2**64)) for _ in range(n)]
    if mode == "text":
        return [draw(st.text(max_size=5)) for _ in range(n)]
    return [draw(_JUNK) for _ in range(n)]


def _series(draw, values: list) -> pd.Series:
    dtype = draw(st.sampled_from([None] * 6 + _DTYPES))
    for attempt in (dtype, None, object):  # fall back when the values cannot take that dtype
        try:
            with warnings.catch_warnings():  # casting junk warns; the test is not about that
                warnings.simplefilter("ignore")
                return pd.Series(values, dtype=attempt)
        except Exception:
            continue
    raise AssertionError("unreachable: any values fit an object Series")


@st.composite
def _frames(draw) -> tuple[pd.DataFrame, str]:
    table = draw(st.sampled_from(TABLES))
    names = SCHEMAS[table].column_names
    n_rows = draw(st.integers(min_value=0, max_value=6) | st.integers(min_value=1, max_value=4))
    # usually every column, sometimes a random subset; now and then strangers
    if draw(st.integers(0, 3)) == 0:
        keep = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    else:
        keep = list(names)
    extra = draw(st.lists(st.sampled_from(["extra", 0, "rate_x", None]), unique=True, max_size=2))
    # either chaos in every column, or a plausible frame with a few columns perturbed
    if draw(st.integers(0, 3)) == 0:
        perturbed = set(keep)
    else:
        perturbed = set(draw(st.lists(st.sampled_from(names), max_size=3)))
    columns: dict[object, pd.Series] = {}
    for col in [*keep, *extra]:
        plausible = _plausible(table, col) if col in names else st.integers()
        if col in perturbed:
            columns[col] = _series(draw, _column_values(draw, plausible, n_rows))
        else:
            columns[col] = pd.Series([draw(plausible) for _ in range(n_rows)], dtype=object
                                     ).infer_objects()
    df = pd.DataFrame(columns) if columns else pd.DataFrame(index=range(n_rows))
    if len(df.columns) and draw(st.integers(0, 9)) == 0:  # duplicated column labels
        df = pd.concat([df, df.iloc[:, [0]]], axis=1)
    if n_rows and draw(st.booleans()):  # an index that is not 0..n-1
        df.index = draw(st.lists(st.integers(-3, 3), min_size=n_rows, max_size=n_rows))
    return df, table


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_frames())
def test_validate_raises_only_data_validation_error(frame_and_table):
    df, table = frame_and_table
    try:
        out = validate(df, table)
    except DataValidationError as exc:
        assert exc.table == table
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    # whatever passes is a valid table: it validates again to the same frame
    assert isinstance(out, pd.DataFrame) and len(out) == len(df)
    pd.testing.assert_frame_equal(validate(out, table), out)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_a_long_text_column_is_judged_as_its_short_self(data):
    """Text columns longer than SMALL_TEXT_ROWS are checked per distinct value (factorised):
    the same verdict, and the same canonical values and dtype, as row by row."""
    table = data.draw(st.sampled_from(TABLES))
    spec = data.draw(st.sampled_from([c for c in SCHEMAS[table].columns if c.kind == "str"]))
    short = _series(data.draw, _column_values(data.draw, _plausible(table, spec.name),
                                              data.draw(st.integers(1, 4))))
    copies = SMALL_TEXT_ROWS // len(short) + 1
    # repeated by position (pd.concat of categoricals hashes their categories, which pandas
    # cannot do for some odd values, e.g. a tuple beside inf)
    long = short.iloc[np.tile(np.arange(len(short)), copies)].reset_index(drop=True)
    short_problems, short_clean = check_series(spec, short)
    long_problems, long_clean = check_series(spec, long)
    assert bool(short_problems) == bool(long_problems)
    if not short_problems:
        assert long_clean.dtype == short_clean.dtype
        assert long_clean.tolist() == short_clean.tolist() * copies
