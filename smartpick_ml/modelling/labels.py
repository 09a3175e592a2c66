"""Training labels: ``would_take`` — would program p take applicant a had a ranked p first?

Simulated seasons carry the exact label. For real outcome data (rank lists and where each applicant
matched) it follows from the cutoff characterisation of deferred acceptance (Azevedo & Leshno 2016;
``../shared/design/match-model.md`` §2), with censoring:

- the program matched at: 1;
- programs ranked above it: 0 (they rejected the applicant);
- programs ranked below it: unknown — left out of training, never counted as 0;
- an unmatched applicant: 0 for every program on their list;
- applied but not interviewed: 0;
- interviewed but not ranked by the applicant: unknown (we cannot tell whether the program would
  have taken them);
- where the match outcome is missing (``matched`` null on a ranked program, or the matched
  program's rank missing), only programs ranked above every possible match are 0; the rest of
  the list is unknown.
- a supplemental list (``rank_list``: PGY-1 programs of an applicant to advanced positions) is
  read on its own, and only where it matched: an unmatched supplemental list may never have been
  used (it is, only if the applicant matched an advanced position), so its programs are unknown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smartpick_ml.contracts.errors import DataValidationError

LABEL = "would_take"


def labels_from_outcomes(applications: pd.DataFrame) -> pd.Series:
    """Derive ``would_take`` (nullable Int64: 1, 0 or <NA>) from interview, rank, match columns."""
    needed = ("applicant_id", "season", "interviewed", "rank_position", "matched")
    missing = [c for c in needed if c not in applications.columns]
    if missing:
        raise DataValidationError("applications", [
            f"cannot derive would_take: missing outcome column(s) {', '.join(missing)}"])
    ap = applications
    interviewed = ap["interviewed"].astype("boolean")
    matched_flag = ap["matched"].astype("boolean")
    matched = matched_flag.fillna(False).to_numpy(bool)
    rank = pd.to_numeric(ap["rank_position"], errors="coerce").to_numpy(dtype=float)
    ranked = ~np.isnan(rank)
    # a ranked program whose match outcome was not recorded: the applicant may have matched there
    unknown = matched_flag.isna().to_numpy(bool) & ranked
    lists = (ap["rank_list"].fillna("primary") if "rank_list" in ap.columns
             else pd.Series("primary", index=ap.index))
    supplemental = (lists == "supplemental").to_numpy()
    key = [ap["applicant_id"], ap["season"], lists]

    def per_applicant(values: np.ndarray, how: str) -> np.ndarray:
        grouped = pd.Series(values, index=ap.index).groupby(key, dropna=False)
        return grouped.transform(how).to_numpy()

    has_match = per_applicant(matched, "any").astype(bool)
    has_unknown = per_applicant(unknown, "any").astype(bool)
    # every program ranked above this bound rejected the applicant: the match, or, when no match
    # is recorded, the best-ranked program whose outcome is unknown (NaN: no bound is known, e.g.
    # a match whose rank is missing, and then nothing ranked is known to have rejected them)
    bound = np.where(has_match, per_applicant(np.where(matched, rank, np.nan), "max"),
                     per_applicant(np.where(unknown, rank, np.nan), "min"))
    label = np.full(len(ap), np.nan)
    label[matched] = 1
    label[ranked & ~np.isnan(bound) & (rank < bound)] = 0
    # unmatched: rejected by every ranked program (a supplemental list: perhaps never used)
    label[ranked & ~has_match & ~has_unknown & ~supplemental] = 0
    label[(interviewed == False).to_numpy(bool, na_value=False)] = 0  # noqa: E712
    out = pd.Series(label, index=ap.index).astype("Int64")
    return out.rename(LABEL)


def training_labels(applications: pd.DataFrame) -> pd.Series:
    """The label to train on: the exact ``would_take`` where present (simulation), else derived."""
    if LABEL in applications.columns and applications[LABEL].notna().any():
        return applications[LABEL].astype("Int64")
    return labels_from_outcomes(applications)
