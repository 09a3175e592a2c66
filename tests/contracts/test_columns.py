"""One declaration, two checkers: the vectorised column check (tables, ``predict``) and the
per-value check (served requests, applicant profiles) give the same verdict on the same values,
and the row rules read the same whichever way the columns come."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.columns import ColumnSpec, check_series, check_values
from smartpick_ml.contracts.pairs import REQUEST_COLUMN_SPECS
from smartpick_ml.contracts.schemas import APPLICANT_ROW_RULES

SPECS = sorted(REQUEST_COLUMN_SPECS.values(), key=lambda s: s.name)

VALUES = st.one_of(
    st.none(), st.just(math.nan), st.just(math.inf), st.just(-math.inf),
    st.booleans(),
    st.integers(-10, 400), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.floats(-5, 400).map(round).map(float),  # whole numbers written as floats
    st.sampled_from(["", "  ", "x", "IM-0001", "non_us_img", "us_md_senior", "NY", "ZZ", "none",
                     "gold", "Internal Medicine", "university", "248", "true"]),
    st.builds(np.int64, st.integers(-10, 400)), st.builds(np.float64, st.floats(-1, 400)),
    st.just(np.bool_(True)),
)


def per_value_verdict(spec: ColumnSpec, values: list) -> bool:
    try:
        check_values(spec, values)
    except ValueError:
        return False
    return True


def vectorised_verdict(spec: ColumnSpec, values: list, dtype: object = None) -> bool:
    problems, _ = check_series(spec, pd.Series(values, dtype=dtype))
    return not problems


@settings(max_examples=500, deadline=None)
@given(spec=st.sampled_from(SPECS), values=st.lists(VALUES, min_size=1, max_size=4))
def test_both_checkers_give_the_same_verdict(spec, values):
    """A column of these values, as a frame built from lists holds it (inferred dtype) or as
    Python objects, is accepted by the vectorised checker exactly when each value is accepted
    one by one."""
    one = per_value_verdict(spec, values)
    for dtype in (None, object):
        vec = vectorised_verdict(spec, values, dtype)
        assert one == vec, f"{spec.name} ({spec.kind}, nullable={spec.nullable}) {values!r}: " \
            f"per value {one}, vectorised ({dtype}) {vec}"


@pytest.mark.parametrize(("spec_name", "values", "ok"), [
    ("step2_ck", [248, 250.0], True),
    ("step2_ck", [400], False),
    ("step2_ck", ["248"], False),
    ("step2_ck", [248.5], False),
    ("step2_ck", [None], False),
    ("needs_visa", ["yes"], False),
    ("needs_visa", [1], False),
    ("needs_visa", [True, False], True),
    ("home_state", [None, "NY"], True),
    ("home_state", ["ZZ"], False),
    ("program_id", ["  "], False),
    ("img_share", [math.inf], False),
    ("img_share", [None, 0.5], True),
])
def test_known_verdicts(spec_name, values, ok):
    spec = REQUEST_COLUMN_SPECS[spec_name]
    assert per_value_verdict(spec, values) is ok
    assert vectorised_verdict(spec, values) is ok


@pytest.mark.parametrize("rule", APPLICANT_ROW_RULES, ids=lambda r: r.column)
def test_row_rules_read_frames_and_arrays_alike(rule):
    rows = {"needs_visa": [True, False, None, True],
            "applicant_type": ["us_md_senior", "us_md_senior", "us_img", "non_us_img"],
            "graduation_year": [2026, 2020, None, 2024], "season": [2025, 2025, 2025, 2024]}
    frame = pd.DataFrame({c: rows[c] for c in rule.needs})
    frame["needs_visa" if "needs_visa" in frame else rule.needs[0]] = \
        frame[rule.needs[0]].astype("boolean" if rule.needs[0] == "needs_visa" else "Float64")
    arrays = {c: np.array([np.nan if v is None else float(v) for v in rows[c]])
              if c != "applicant_type" else np.array(rows[c], dtype=object) for c in rule.needs}
    from_frame = rule.broken_rows(frame)
    from_arrays = rule.broken_rows(arrays)
    np.testing.assert_array_equal(from_frame, from_arrays)
    assert from_frame.tolist() == [True, False, False, False]
    assert rule.broken_rows({}) is None  # a frame without the rule's columns is not checked
    with pytest.raises(ValueError, match=r"^where: .*broken at row\(s\) \[0\]"):
        rule.check(arrays, "where")


@pytest.mark.parametrize("columns", [
    pd.MultiIndex.from_tuples([("applicant", "step2_ck"), ("program", "program_id")]),
    pd.Index([0, 1]),
])
def test_a_pairs_frame_with_odd_column_names_is_refused_naming_them(columns):
    """Issue #20, item 6: MultiIndex or non-text column names get a DataValidationError, not a
    raw pandas ValueError deep in the checks."""
    from smartpick_ml.contracts.errors import DataValidationError
    from smartpick_ml.contracts.pairs import check_pairs_frame

    frame = pd.DataFrame([[248, "IM-0001"]], columns=columns)
    with pytest.raises(DataValidationError, match="column names must be plain text"):
        check_pairs_frame(frame)
