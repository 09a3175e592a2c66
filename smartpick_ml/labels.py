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
  have taken them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smartpick_ml.errors import DataValidationError

LABEL = "would_take"


def labels_from_outcomes(applications: pd.DataFrame) -> pd.Series:
    """Derive ``would_take`` (nullable Int64: 1, 0 or <NA>) from interview, rank and match columns."""
    needed = ("applicant_id", "season", "interviewed", "rank_position", "matched")
    missing = [c for c in needed if c not in applications.columns]
    if missing:
        raise DataValidationError("applications", [
            f"cannot derive would_take: missing outcome column(s) {', '.join(missing)}"])
    ap = applications
    interviewed = ap["interviewed"].astype("boolean")
    matched = ap["matched"].astype("boolean").fillna(False).to_numpy(bool)
    rank = pd.to_numeric(ap["rank_position"], errors="coerce").to_numpy(dtype=float)
    key = [ap["applicant_id"], ap["season"]]
    matched_rank = pd.Series(np.where(matched, rank, np.nan), index=ap.index)
    matched_rank = matched_rank.groupby(key).transform("max").to_numpy()
    is_matched_applicant = ~np.isnan(matched_rank)
    label = np.full(len(ap), np.nan)
    ranked = ~np.isnan(rank)
    label[matched] = 1
    label[ranked & is_matched_applicant & (rank < matched_rank)] = 0
    label[ranked & ~is_matched_applicant] = 0
    label[(interviewed == False).to_numpy(bool, na_value=False)] = 0  # noqa: E712
    out = pd.Series(label, index=ap.index).astype("Int64")
    return out.rename(LABEL)


def training_labels(applications: pd.DataFrame) -> pd.Series:
    """The label to train on: the exact ``would_take`` where present (simulation), else derived."""
    if LABEL in applications.columns and applications[LABEL].notna().any():
        return applications[LABEL].astype("Int64")
    return labels_from_outcomes(applications)
