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

from smartpick_ml.contracts.schemas import APPLICANTS, APPLICATIONS, PROGRAMS, ColumnSpec

APPLICANT_INPUTS: tuple[str, ...] = (
    "applicant_type", "step2_ck", "graduation_year", "season", "usce_months", "publications",
    "needs_visa", "home_state")


PROGRAM_INPUTS: tuple[str, ...] = (
    "program_id", "specialty", "state", "positions", "program_type", "rate_us_md", "rate_us_do",
    "rate_us_img", "rate_non_us_img", "rate_in_state", "rate_out_of_state", "rate_signal",
    "rate_gold_signal", "rate_silver_signal", "rate_no_signal", "sponsors_j1", "sponsors_h1b",
    "img_share", "img_mentorship", "img_orientation", "step2_minimum",
    "max_years_since_graduation")


PAIR_INPUTS: tuple[str, ...] = ("signal",)


#: The columns a model takes, in order: what a service sends for each applicant × program pair.
PAIR_INPUT_COLUMNS: tuple[str, ...] = APPLICANT_INPUTS + PROGRAM_INPUTS + PAIR_INPUTS


#: The contract of each column of a pairs frame (applicant × program rows, what a model takes):
#: every column keeps the rule of the table it comes from.
PAIR_COLUMN_SPECS: dict[str, ColumnSpec] = {
    c.name: c for t in (APPLICATIONS, PROGRAMS, APPLICANTS) for c in t.columns}


# the pairs contract, except that a request may leave a pair's signal null (= "none")
REQUEST_COLUMN_SPECS: dict[str, ColumnSpec] = {
    **PAIR_COLUMN_SPECS,
    "signal": dataclasses.replace(PAIR_COLUMN_SPECS["signal"], nullable=True)}


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
    pairs = pd.DataFrame({c: [applicant[c]] * len(block) for c in APPLICANT_INPUTS})
    pairs = pd.concat([pairs, block], axis=1)
    signals = signals or {}
    pairs["signal"] = np.array([signals.get(p, "none") for p in block["program_id"]],
                               dtype=object)
    return pairs
