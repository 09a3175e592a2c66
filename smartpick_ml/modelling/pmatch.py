"""P(match) for a whole list, corrected for what the independence formula misses.

``match-model.md`` §3 gives P(match) = 1 − ∏(1 − q_j), treating programs' decisions as independent
given the applicant's observed features. They are not: the same unobserved strengths (letters,
interview skill) raise or lower every q together, so the formula is over-confident — most for
applicants with many long shots, i.e. IMGs (the reliability plots of every run show it, for the
oracle's q too).

:class:`PMatchCalibrator` models that shared strength directly: given an unobserved strength
``z ~ N(0, 1)``, program j takes the applicant with probability ``Phi(a_j + s z)``, where
``a_j`` is set so that the average over ``z`` is the model's q_j, and the decisions are
independent given ``z``. Then P(match) = 1 − E_z ∏(1 − Phi(a_j + s z)), computed by
Gauss-Hermite quadrature. One number per applicant type, ``s``, is fitted by maximum likelihood
on held-out applicants' own lists. Because it works program by program, it applies to any list
— SmartPick's plans too, which concentrate where q is high — and it is smooth: every program
added raises it, and it never exceeds the independence figure (s = 0 gives that figure).
An isotonic map of the independence figure did this job before, in steps (every list from 45
to 60 programs stated one figure); models saved with it still answer as they did.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy import special
from scipy.optimize import minimize_scalar

MIN_APPLICANTS = 200
#: the largest shared-strength scale fitted (in probits per SD of strength)
MAX_STRENGTH_SD = 5.0
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
_Q_EDGE = 1e-9  # q of exactly 0 or 1 keeps finite log-odds


def independent_p_match(q: np.ndarray, groups: np.ndarray) -> pd.Series:
    """1 − ∏(1 − q) per group (applicant), computed in log space."""
    log_miss = np.log1p(-np.clip(np.asarray(q, float), 0.0, 1.0 - 1e-12))
    return 1.0 - np.exp(pd.Series(log_miss).groupby(np.asarray(groups)).sum())


def _log_misses_by_node(q: np.ndarray, s: float) -> Iterator[tuple[float, np.ndarray]]:
    """For each Gauss-Hermite node z: its weight and log P(program j does not take the
    applicant | z) per program, the decision being ``Phi(a_j + s z)``: a probit, because its
    average over z is exact, ``Phi(a / sqrt(1 + s²))``, so a_j reproduces q_j exactly (one
    program's P(match) is its q). The offsets are computed once for every node."""
    q = np.clip(np.asarray(q, float), _Q_EDGE, 1 - _Q_EDGE)
    a = special.ndtri(q) * np.sqrt(1.0 + s * s)
    for node, weight in zip(_NODES, _WEIGHTS, strict=True):
        yield float(weight), special.log_ndtr(-(a + s * node))


def shared_strength_p_match(q: np.ndarray, groups: np.ndarray, n_groups: int, s: float
                            ) -> np.ndarray:
    """P(match) of each group's list (``groups``: codes 0..n_groups-1) under strength scale s."""
    missed = np.zeros(n_groups)
    for weight, log_miss in _log_misses_by_node(q, s):
        missed += weight * np.exp(np.bincount(groups, weights=log_miss, minlength=n_groups))
    p = 1.0 - missed
    empty = np.bincount(groups, minlength=n_groups) == 0
    return np.where(empty, 0.0, np.clip(p, 0.0, 1.0))


def _lists_of_type(codes: np.ndarray, of_type: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The applications of the applicants ``of_type`` (a mask over applicants): a mask over
    applications, their applicants renumbered 0.., and those applicants' original codes."""
    rows = of_type[codes]
    sub_codes, applicants = pd.factorize(codes[rows])
    return rows, sub_codes, np.asarray(applicants)


def _log_likelihood(q: np.ndarray, groups: np.ndarray, y: np.ndarray, s: float) -> float:
    p = np.clip(shared_strength_p_match(q, groups, len(y), s), 1e-9, 1 - 1e-9)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _fit_scale(q: np.ndarray, groups: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0 or len(np.unique(y)) < 2:
        return 0.0  # nothing to learn from: the independence figure
    best = minimize_scalar(lambda s: -_log_likelihood(q, groups, y, s),
                           bounds=(0.0, MAX_STRENGTH_SD), method="bounded",
                           options={"xatol": 1e-3})
    return float(best.x)


class PMatchCalibrator:
    """P(match) of a list under a shared unobserved strength, one scale per applicant type."""

    def fit(self, q: np.ndarray, applicant_ids: np.ndarray, matched: pd.Series,
            applicant_type: pd.Series) -> PMatchCalibrator:
        """``q`` and ``applicant_ids`` per application; ``matched`` and ``applicant_type`` per
        applicant (indexed by id)."""
        q = np.asarray(q, float)
        codes, ids = pd.factorize(np.asarray(applicant_ids, dtype=object))
        y = matched.reindex(ids).to_numpy(dtype=float)
        types = applicant_type.reindex(ids).to_numpy(dtype=object)
        self.strength_sd_overall_ = _fit_scale(q, codes, y)
        self.strength_sd_ = {}
        for typ in pd.unique(types):
            if (types == typ).sum() < MIN_APPLICANTS:
                continue
            rows, sub_codes, applicants = _lists_of_type(codes, types == typ)
            self.strength_sd_[str(typ)] = _fit_scale(q[rows], sub_codes, y[applicants])
        return self

    def scale(self, applicant_type: str) -> float:
        return self.strength_sd_.get(str(applicant_type), self.strength_sd_overall_)

    def p_match(self, q: np.ndarray, applicant_ids: np.ndarray, applicant_type: pd.Series
                ) -> pd.Series:
        """P(match) of each applicant's list (``applicant_type`` indexed by id)."""
        codes, ids = pd.factorize(np.asarray(applicant_ids, dtype=object))
        q = np.asarray(q, float)
        types = applicant_type.reindex(ids).to_numpy(dtype=object)
        out = np.empty(len(ids))
        for typ in pd.unique(types):
            rows, sub_codes, applicants = _lists_of_type(codes, types == typ)
            out[applicants] = shared_strength_p_match(q[rows], sub_codes, len(applicants),
                                                      self.scale(typ))
        return pd.Series(out, index=ids)

    def p_match_of_prefixes(self, q_in_order: np.ndarray, applicant_type: str) -> np.ndarray:
        """P(match) of the first 1, 2, … programs of one list (the planner's nested lists)."""
        q = np.asarray(q_in_order, float)
        missed = np.zeros(len(q))
        for weight, log_miss in _log_misses_by_node(q, self.scale(applicant_type)):
            missed += weight * np.exp(np.cumsum(log_miss))
        return np.clip(1.0 - missed, 0.0, 1.0)

    # a model saved before the shared-strength model holds isotonic steps of the independence
    # figure (``overall_``, ``by_type_``): it still answers as it did
    def is_legacy(self) -> bool:
        return hasattr(self, "overall_")

    def transform(self, p_independent: np.ndarray, applicant_type: str | np.ndarray
                  ) -> np.ndarray:
        """The earlier step map of the independence figure (legacy models only)."""
        p = np.atleast_1d(np.asarray(p_independent, float))
        types = np.broadcast_to(np.asarray(applicant_type, dtype=object), p.shape)
        out = self.overall_.predict(p)
        for typ, iso in self.by_type_.items():
            sel = types == typ
            if sel.any():
                out[sel] = iso.predict(p[sel])
        return out
