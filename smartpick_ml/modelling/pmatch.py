"""P(match) for a whole list, corrected for what the independence formula misses.

``match-model.md`` §3 gives P(match) = 1 − ∏(1 − q_j), treating programs' decisions as independent
given the applicant's observed features. They are not: the same unobserved strengths (letters,
interview skill) raise or lower every q together, so the formula is over-confident — most for
applicants with many long shots, i.e. IMGs (the reliability plots of every run show it, for the
oracle's q too). :class:`PMatchCalibrator` learns, per applicant type, a logistic map from the
log-odds of the independence P(match) to the realised match rate on held-out applicants of the
training seasons. Its slope is kept positive, so the corrected figure rises strictly wherever the
independence figure does (a longer list always states more, and "dollars per extra point" is
never divided by a plateau), and it fixes the level. An isotonic map did the same job in steps:
every list from 45 to 60 programs stated one figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

MIN_APPLICANTS = 200
#: the smallest slope on the log-odds: a flatter map would state nearly one figure for every list
MIN_SLOPE = 0.05
_EDGE = 1e-6  # a list certain to match (q = 1) still has finite log-odds


def independent_p_match(q: np.ndarray, groups: np.ndarray) -> pd.Series:
    """1 − ∏(1 − q) per group (applicant), computed in log space."""
    log_miss = np.log1p(-np.clip(np.asarray(q, float), 0.0, 1.0 - 1e-12))
    return 1.0 - np.exp(pd.Series(log_miss).groupby(np.asarray(groups)).sum())


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), _EDGE, 1 - _EDGE)
    return np.log(p) - np.log1p(-p)


def _fit_line(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of logit P(match) on the log-odds of the independence figure."""
    x = _log_odds(p)[:, None]
    if len(np.unique(y)) < 2:  # everyone matched (or no one): nothing to correct
        return 0.0, 1.0
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    slope = max(float(fit.coef_[0, 0]), MIN_SLOPE)
    # with the slope held, the intercept that reproduces the observed match rate
    intercept = float(fit.intercept_[0])
    if slope != float(fit.coef_[0, 0]):
        intercept = float(np.log(y.mean() / (1 - y.mean())) - slope * x.mean())
    return intercept, slope


class PMatchCalibrator:
    """Smooth, strictly increasing per-type map: independence P(match) -> realised P(match)."""

    def fit(self, p_independent: np.ndarray, matched: np.ndarray,
            applicant_type: np.ndarray) -> PMatchCalibrator:
        p = np.asarray(p_independent, float)
        y = np.asarray(matched, float)
        t = np.asarray(applicant_type, dtype=object)
        self.overall_ = _fit_line(p, y)
        self.by_type_ = {str(typ): _fit_line(p[t == typ], y[t == typ])
                         for typ in pd.unique(t) if (t == typ).sum() >= MIN_APPLICANTS}
        return self

    def transform(self, p_independent: np.ndarray, applicant_type: str | np.ndarray
                  ) -> np.ndarray:
        p = np.atleast_1d(np.asarray(p_independent, float))
        types = np.broadcast_to(np.asarray(applicant_type, dtype=object), p.shape)
        if hasattr(self.overall_, "predict"):  # a model saved before the smooth map: its steps
            return self._legacy_transform(p, types)
        intercept = np.full(p.shape, self.overall_[0])
        slope = np.full(p.shape, self.overall_[1])
        for typ, (a, b) in self.by_type_.items():
            sel = types == typ
            intercept[sel], slope[sel] = a, b
        out = 1.0 / (1.0 + np.exp(-(intercept + slope * _log_odds(p))))
        # an empty list matches no one, whatever the line says at the edge
        return np.where(p <= 0, 0.0, out)

    def _legacy_transform(self, p: np.ndarray, types: np.ndarray) -> np.ndarray:
        out = self.overall_.predict(p)
        for typ, iso in self.by_type_.items():
            sel = types == typ
            if sel.any():
                out[sel] = iso.predict(p[sel])
        return out
