"""Hard eligibility rules: pairs where a program cannot take the applicant, whatever the model says
(q = 0), each with the reason a person reads. Simulation, training, ranking and serving apply the
same functions.

- **Visa**: an applicant who needs a visa cannot train where the program sponsors neither a J-1
  nor an H-1B.
- **Military**: uniformed-services programs fill through the military match and take service
  members only. Every SmartPick applicant applies through the civilian Main Match, so these
  programs are closed to all of them.
- **Published screens**: a Step 2 CK score below the program's published minimum, or more years
  since graduation than its published cut-off. The simulated programs screen such applicants out
  before any interview (``simulation.season.screened_out``), so they cannot match there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def bool_values(frame: pd.DataFrame, col: str, default: float = np.nan) -> np.ndarray:
    """A true/false column as 1.0 / 0.0, NaN where null, ``default`` where absent."""
    if col not in frame:
        return np.full(len(frame), default)
    return pd.to_numeric(frame[col].astype("boolean").astype("Float64"), errors="coerce"
                         ).to_numpy(dtype=float, na_value=np.nan)


def sponsors_visa(programs: pd.DataFrame) -> np.ndarray:
    """Programs that sponsor a J-1 or an H-1B visa; an unknown J-1 status is not a refusal."""
    j1 = np.nan_to_num(bool_values(programs, "sponsors_j1", 1.0), nan=1.0) == 1.0
    h1b = np.nan_to_num(bool_values(programs, "sponsors_h1b", 0.0), nan=0.0) == 1.0
    return j1 | h1b


def visa_blocked(pairs: pd.DataFrame) -> np.ndarray:
    """Pairs where the applicant needs a visa and the program sponsors none: a hard rule, q = 0."""
    return (bool_values(pairs, "needs_visa", 0.0) == 1.0) & ~sponsors_visa(pairs)


def military_closed(pairs: pd.DataFrame) -> np.ndarray:
    """Pairs at a uniformed-services program (closed to a civilian Main Match applicant); an
    unknown status is not a refusal."""
    return np.nan_to_num(bool_values(pairs, "military", 0.0), nan=0.0) == 1.0


def below_minimum(step2_ck: np.ndarray, step2_minimum: np.ndarray) -> np.ndarray:
    """A Step 2 CK score below a published minimum (none published: NaN, no screen)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(step2_ck, float) < np.asarray(step2_minimum, float)


def past_cutoff(years_since_graduation: np.ndarray, max_years: np.ndarray) -> np.ndarray:
    """More years since graduation than a published cut-off (none published: no screen)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(years_since_graduation, float) > np.asarray(max_years, float)


def _column(pairs: pd.DataFrame, col: str) -> np.ndarray:
    if col not in pairs:
        return np.full(len(pairs), np.nan)
    return pd.to_numeric(pairs[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def step2_screened(pairs: pd.DataFrame) -> np.ndarray:
    """Pairs whose applicant's Step 2 CK is below the program's published minimum."""
    return below_minimum(_column(pairs, "step2_ck"), _column(pairs, "step2_minimum"))


def graduation_screened(pairs: pd.DataFrame) -> np.ndarray:
    """Pairs whose applicant graduated longer ago than the program's published cut-off."""
    years = _column(pairs, "season") - _column(pairs, "graduation_year")
    return past_cutoff(years, _column(pairs, "max_years_since_graduation"))


#: each rule and the reason a person reads, in the order they are reported
RULES: tuple[tuple[str, Callable[[pd.DataFrame], np.ndarray]], ...] = (
    ("uniformed-services program: takes service members through the military match only",
     military_closed),
    ("needs a visa; program sponsors neither J-1 nor H-1B", visa_blocked),
    ("Step 2 CK below the program's published minimum", step2_screened),
    ("graduated longer ago than the program's published cut-off", graduation_screened),
)


def ineligible(pairs: pd.DataFrame) -> np.ndarray:
    """Pairs some hard rule closes (q = 0)."""
    out = np.zeros(len(pairs), bool)
    for _, rule in RULES:
        out |= rule(pairs)
    return out


def ineligibility_reasons(pairs: pd.DataFrame) -> np.ndarray:
    """Per pair, the first rule that closes it ("" where none does)."""
    out = np.full(len(pairs), "", dtype=object)
    for reason, rule in reversed(RULES):
        out[rule(pairs)] = reason
    return out
