"""The pairs contract: an applicant × program row, what a model takes and a service sends.

A pairs frame carries the applicant's fields, the program's fields and the preference signal;
each column keeps the rule of the table it comes from (``schemas``). A served request comes in
three forms, which differ only in the columns they must carry: *full* pairs, *lean* pairs
(applicant + ``program_id``; the program's fields come from the catalog logged with the model)
and a *ranking* request (one applicant).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.columns import (
    ColumnSpec,
    check_series,
    check_values,
    rows_text,
)
from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.schemas import (
    APPLICANT_ROW_RULES,
    APPLICANTS,
    APPLICATIONS,
    PROGRAMS,
)

APPLICANT_INPUTS: tuple[str, ...] = (
    "applicant_type", "step2_ck", "graduation_year", "season", "usce_months", "publications",
    "needs_visa", "home_state", "preferred_specialty", "applications")


PROGRAM_INPUTS: tuple[str, ...] = (
    "program_id", "specialty", "state", "positions", "program_type", "rate_us_md", "rate_us_do",
    "rate_us_img", "rate_non_us_img", "rate_in_state", "rate_out_of_state", "rate_signal",
    "rate_gold_signal", "rate_silver_signal", "rate_no_signal", "sponsors_j1", "sponsors_h1b",
    "military",
    "img_share", "img_mentorship", "img_orientation", "step2_minimum",
    "max_years_since_graduation")


PAIR_INPUTS: tuple[str, ...] = ("signal",)


#: The columns a model takes, in order: what a service sends for each applicant × program pair.
PAIR_INPUT_COLUMNS: tuple[str, ...] = APPLICANT_INPUTS + PROGRAM_INPUTS + PAIR_INPUTS


#: The contract of each column of a pairs frame (applicant × program rows, what a model takes):
#: every column keeps the rule of the table it comes from.
PAIR_COLUMN_SPECS: dict[str, ColumnSpec] = {
    c.name: c for t in (APPLICATIONS, PROGRAMS, APPLICANTS) for c in t.columns}


# the pairs contract, except that a request may leave a pair's signal null (= "none") and the
# applicant's preferred specialty out or null (= every program is in the preferred specialty)
REQUEST_COLUMN_SPECS: dict[str, ColumnSpec] = {
    **PAIR_COLUMN_SPECS,
    "signal": dataclasses.replace(PAIR_COLUMN_SPECS["signal"], nullable=True),
    "preferred_specialty": dataclasses.replace(PAIR_COLUMN_SPECS["preferred_specialty"],
                                               nullable=True, required=False)}


#: columns a pair-scoring request must carry (the contracts' required columns)
REQUIRED_PAIR_COLUMNS: tuple[str, ...] = tuple(
    c for c in PAIR_INPUT_COLUMNS if c in REQUEST_COLUMN_SPECS and REQUEST_COLUMN_SPECS[c].required)


#: the program's fields a lean request leaves out (taken from the logged catalog)
CATALOG_FIELDS: tuple[str, ...] = tuple(c for c in PROGRAM_INPUTS if c != "program_id")


#: columns a lean pair request must carry: the applicant's and ``program_id``
LEAN_REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    c for c in REQUIRED_PAIR_COLUMNS if c not in CATALOG_FIELDS)


#: columns a ranking request (one applicant) must carry
RANK_REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    c for c in APPLICANT_INPUTS if REQUEST_COLUMN_SPECS[c].required and c != "home_state")


def request_columns() -> dict[str, Any]:
    """The request's columns as the model's MLflow metadata records them (``MLmodel``,
    ``metadata.request_columns``): each pair column's type, rule and nullability from the data
    contracts, and which columns each form of request must carry. What a client reads in place
    of an input schema; ``serving.pyfunc.validate_pairs`` enforces it."""
    return {
        "columns": {c: {"type": spec.kind, "rule": spec.rule_text(), "nullable": spec.nullable,
                        "description": spec.description}
                    for c in PAIR_INPUT_COLUMNS for spec in [REQUEST_COLUMN_SPECS[c]]},
        "required": {"lean": list(LEAN_REQUIRED_COLUMNS), "full": list(REQUIRED_PAIR_COLUMNS),
                     "rank": list(RANK_REQUIRED_COLUMNS)},
        "contract": "docs/schemas.md, docs/serving.md",
    }


def applicant_pairs(applicant: dict, programs: pd.DataFrame,
                    signals: dict[str, str] | None = None) -> pd.DataFrame:
    """The pairs frame of one applicant against ``programs`` (rows in the same order)."""
    block = programs[[c for c in PROGRAM_INPUTS if c in programs.columns]].reset_index(drop=True)
    # an optional field left out of the record is null (the preferred specialty: none given)
    pairs = pd.DataFrame({c: [applicant[c] if REQUEST_COLUMN_SPECS[c].required
                              else applicant.get(c)] * len(block) for c in APPLICANT_INPUTS})
    pairs = pd.concat([pairs, block], axis=1)
    signals = signals or {}
    pairs["signal"] = np.array([signals.get(p, "none") for p in block["program_id"]],
                               dtype=object)
    return pairs


def validate_pairs(frame: Any, required: tuple[str, ...] = REQUIRED_PAIR_COLUMNS
                   ) -> dict[str, np.ndarray]:
    """Check a served request's frame (a few rows) against the pairs contract, in plain Python
    (:func:`columns.check_values`); its columns as arrays (absent optional columns are absent).
    Raises ``ValueError`` naming the column and the rows."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError("pairs: expected a table -- send dataframe_split (or dataframe_records)"
                         f", got {type(frame).__name__}")
    if len(frame) == 0:
        raise ValueError("pairs: empty (no rows to score)")
    # column names as plain Python (a set, a dict): a request's frame is new every time, and a
    # pandas Index lookup costs more than a set's
    labels = frame.columns.tolist()
    present = set(labels)
    if len(present) != len(labels):
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise ValueError(f"pairs: duplicate columns {dup[:10]}")
    missing = [c for c in required if c not in present]
    if missing:
        hint = ""
        if "program_id" not in missing and any(c in CATALOG_FIELDS for c in missing):
            hint = (" (send every program column, or program_id alone to take the program's "
                    "fields from the catalog the model was logged with)")
        raise ValueError(f"pairs: missing required column(s): {', '.join(missing)}{hint}")
    # one conversion of the whole frame to Python objects, then the columns by position:
    # cheaper than column by column, and than selecting the columns first (a pandas copy)
    table = frame.to_numpy(dtype=object).T.tolist()
    pos = {c: i for i, c in enumerate(labels)}
    cols = {c: check_values(REQUEST_COLUMN_SPECS[c], table[pos[c]])
            for c in PAIR_INPUT_COLUMNS if c in present and c in REQUEST_COLUMN_SPECS}
    for rule in APPLICANT_ROW_RULES:
        rule.check(cols, f"pairs.{rule.column}")
    return cols


def check_pairs_frame(pairs: Any, required: tuple[str, ...] = REQUIRED_PAIR_COLUMNS
                      ) -> pd.DataFrame:
    """Check a pairs frame of any size against the pairs contract, vectorised
    (:func:`columns.check_series`): the same rules as :func:`validate_pairs`. Returns the frame
    with its known columns in their canonical dtypes; raises ``DataValidationError`` listing
    every broken rule."""
    if not isinstance(pairs, pd.DataFrame):
        raise DataValidationError("pairs", [f"expected a pandas DataFrame, got "
                                            f"{type(pairs).__name__}"])
    if isinstance(pairs.columns, pd.MultiIndex) or not all(isinstance(c, str)
                                                           for c in pairs.columns):
        raise DataValidationError("pairs", ["column names must be plain text (one level)"])
    if pairs.columns.duplicated().any():
        dup = sorted({str(c) for c in pairs.columns[pairs.columns.duplicated()]})
        raise DataValidationError("pairs", [f"duplicate column names: {dup[:10]}"])
    if len(pairs) == 0:
        raise DataValidationError("pairs", ["empty (no rows to score)"])
    missing = [c for c in required if c not in pairs.columns]
    if missing:
        raise DataValidationError("pairs", [f"missing required column(s): {', '.join(missing)}"])
    problems: list[str] = []
    canonical: dict[str, pd.Series] = {}
    for col in pairs.columns:
        if col in REQUEST_COLUMN_SPECS:
            col_problems, canonical[col] = check_series(REQUEST_COLUMN_SPECS[col], pairs[col])
            problems.extend(col_problems)
    if problems:
        raise DataValidationError("pairs", problems)
    checked = pairs.assign(**canonical)
    for rule in APPLICANT_ROW_RULES:
        result = rule(checked)
        if result is not None and result[0].any():
            problems.append(f"{result[1]}; broken at {rows_text(checked.index[result[0]])}")
    if problems:
        raise DataValidationError("pairs", problems)
    return checked
