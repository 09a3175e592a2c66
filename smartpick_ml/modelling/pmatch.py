"""P(match) for a whole list, corrected for what the independence formula misses.

``match-model.md`` §3 gives P(match) = 1 − ∏(1 − q_j), treating programs' decisions as independent
given the applicant's observed features. They are not: the same unobserved strengths (letters,
interview skill) raise or lower every q together, so the formula is over-confident — most for
applicants with many long shots, i.e. IMGs (the reliability plots of every run show it, for the
oracle's q too). :class:`PMatchCalibrator` learns, per applicant type, a monotone map from the
independence P(match) to the realised match rate on held-out applicants of the training seasons.
It keeps the order of lists (a longer list never scores lower) and fixes the level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

MIN_APPLICANTS = 200


def independent_p_match(q: np.ndarray, groups: np.ndarray) -> pd.Series:
    """1 − ∏(1 − q) per group (applicant), computed in log space."""
    log_miss = np.log1p(-np.clip(np.asarray(q, float), 0.0, 1.0 - 1e-12))
    return 1.0 - np.exp(pd.Series(log_miss).groupby(np.asarray(groups)).sum())


class PMatchCalibrator:
    """Monotone per-type map: independence P(match) -> realised P(match)."""

    def fit(self, p_independent: np.ndarray, matched: np.ndarray,
            applicant_type: np.ndarray) -> PMatchCalibrator:
        p = np.asarray(p_independent, float)
        y = np.asarray(matched, float)
        t = np.asarray(applicant_type, dtype=object)
        self.overall_ = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
        self.by_type_ = {}
        for typ in pd.unique(t):
            sel = t == typ
            if sel.sum() >= MIN_APPLICANTS:
                self.by_type_[str(typ)] = IsotonicRegression(
                    y_min=0, y_max=1, out_of_bounds="clip").fit(p[sel], y[sel])
        return self

    def transform(self, p_independent: np.ndarray, applicant_type: str | np.ndarray
                  ) -> np.ndarray:
        p = np.atleast_1d(np.asarray(p_independent, float))
        types = np.broadcast_to(np.asarray(applicant_type, dtype=object), p.shape)
        out = self.overall_.predict(p)
        for typ, iso in self.by_type_.items():
            sel = types == typ
            if sel.any():
                out[sel] = iso.predict(p[sel])
        return out
