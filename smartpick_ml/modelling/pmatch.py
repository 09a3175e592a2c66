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

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy.optimize import minimize_scalar

from smartpick_ml.contracts.errors import ModelIntegrityError

MIN_APPLICANTS = 200
#: a joint plan's line (plans across specialties) is fitted on the fewer sampled applicants who
#: sent a backup list
MIN_JOINT_APPLICANTS = 50
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


# ----------------------------------------------------------------------------- plans, measured

#: the recalibration's slope is kept in this range: strictly rising, never a step
_SLOPE_BOUNDS = (0.2, 5.0)
_P_EDGE = 1e-6


def _probit(p: np.ndarray) -> np.ndarray:
    return special.ndtri(np.clip(np.asarray(p, float), _P_EDGE, 1 - _P_EDGE))


def _fit_probit_line(stated: np.ndarray, successes: np.ndarray, trials: np.ndarray
                     ) -> tuple[float, float]:
    """(intercept, slope) maximising the binomial likelihood of ``successes`` of ``trials``
    under P = Phi(intercept + slope * probit(stated))."""
    from scipy.optimize import minimize

    x = _probit(stated)
    failures = trials - successes

    def loss(theta: np.ndarray) -> float:
        z = theta[0] + theta[1] * x
        return -float(successes @ special.log_ndtr(z) + failures @ special.log_ndtr(-z))

    best = minimize(loss, np.array([0.0, 1.0]), method="L-BFGS-B",
                    bounds=[(-5.0, 5.0), _SLOPE_BOUNDS])
    return float(best.x[0]), float(best.x[1])


def _finite_number(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _fit_lines(stated: np.ndarray, successes: np.ndarray, trials: np.ndarray,
               applicant_type: np.ndarray, min_applicants: int
               ) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """One probit line per type with at least ``min_applicants`` applicants and both outcomes
    seen, and the applicants of every type."""
    stated, successes, trials = (np.asarray(v, float) for v in (stated, successes, trials))
    types = np.asarray(applicant_type, dtype=object)
    by_type, counts = {}, {}
    for typ in pd.unique(types):
        sel = types == typ
        counts[str(typ)] = int(sel.sum())
        if sel.sum() < min_applicants or successes[sel].sum() in (0, trials[sel].sum()):
            continue
        by_type[str(typ)] = _fit_probit_line(stated[sel], successes[sel], trials[sel])
    return by_type, counts


class PlanCalibration:
    """The stated P(match) recalibrated on what SmartPick's own plans realised in re-run seasons
    (``smartpick evaluate-plans``): per applicant type, ``Phi(intercept + slope * probit(p))``.

    Why a second step after :class:`PMatchCalibrator`: that one is fitted on applicants' own lists
    of the training seasons. A plan is chosen where q is highest, so the errors of q it picks lean
    optimistic (the optimiser's curse), and the latest season can be harder than the ones trained
    on; neither shows on own lists. A line in probit space with a positive slope keeps the stated
    figure smooth and strictly rising with every program added. It belongs to one model: the
    file records the model's sha256 and is refused by any other.

    A plan across specialties (``plan_across`` with a backup) has lines of its own where enough
    such plans were measured (``joint_by_type``): its P(match) is of a match anywhere on the
    list, which the line fitted on single-specialty plans does not describe."""

    def __init__(self, by_type: dict[str, tuple[float, float]], model_sha256: str,
                 season: int | None = None, applicants: dict[str, int] | None = None,
                 joint_by_type: dict[str, tuple[float, float]] | None = None):
        self.by_type = {str(t): (float(a), float(b)) for t, (a, b) in by_type.items()}
        self.joint_by_type = {str(t): (float(a), float(b))
                              for t, (a, b) in (joint_by_type or {}).items()}
        self.model_sha256 = str(model_sha256)
        self.season = season
        self.applicants = dict(applicants or {})

    @classmethod
    def fit(cls, stated: np.ndarray, successes: np.ndarray, trials: np.ndarray,
            applicant_type: np.ndarray, model_sha256: str, season: int | None = None
            ) -> PlanCalibration:
        """One line per type with at least ``MIN_APPLICANTS`` applicants and both outcomes seen
        (others keep the stated figure): ``stated`` per applicant, and how many of ``trials``
        re-run seasons matched them."""
        by_type, counts = _fit_lines(stated, successes, trials, applicant_type, MIN_APPLICANTS)
        return cls(by_type, model_sha256, season, counts)

    def with_joint(self, stated: np.ndarray, successes: np.ndarray, trials: np.ndarray,
                   applicant_type: np.ndarray) -> PlanCalibration:
        """A copy with lines for joint plans, fitted like :meth:`fit` on their figures (types
        with fewer than ``MIN_JOINT_APPLICANTS`` keep the single-specialty line)."""
        joint, _ = _fit_lines(stated, successes, trials, applicant_type, MIN_JOINT_APPLICANTS)
        return PlanCalibration(self.by_type, self.model_sha256, self.season, self.applicants,
                               joint)

    def apply(self, p: np.ndarray, applicant_type: str, joint: bool = False) -> np.ndarray:
        """The calibrated figure of a plan (``joint``: a plan across specialties, by its own
        line where one was fitted, else the single-specialty line)."""
        line = ((self.joint_by_type.get(str(applicant_type)) if joint else None)
                or self.by_type.get(str(applicant_type)))
        p = np.asarray(p, float)
        if line is None:
            return p
        return special.ndtr(line[0] + line[1] * _probit(p))

    def apply_by_type(self, p: np.ndarray, applicant_types: np.ndarray,
                      joint: bool = False) -> np.ndarray:
        """:meth:`apply` to figures of applicants of several types (one type each)."""
        out = np.asarray(p, float).copy()
        types = np.asarray(applicant_types, dtype=object)
        for typ in pd.unique(types):
            sel = types == typ
            out[sel] = self.apply(out[sel], typ, joint)
        return out

    def to_dict(self) -> dict[str, Any]:
        def lines(by_type: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
            return {t: {"intercept": a, "slope": b} for t, (a, b) in by_type.items()}

        return {"kind": "smartpick plan calibration", "model_sha256": self.model_sha256,
                "season": self.season, "applicants": self.applicants,
                "by_type": lines(self.by_type), "joint_by_type": lines(self.joint_by_type)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> PlanCalibration:
        """Read what :meth:`to_dict` wrote; anything else is refused naming the field."""
        def bad(field: str, why: str) -> ModelIntegrityError:
            return ModelIntegrityError(f"plan calibration {where}: {field} {why}")

        if not isinstance(data, dict) or data.get("kind") != "smartpick plan calibration":
            raise bad("kind", "is not 'smartpick plan calibration'")
        if not isinstance(data.get("model_sha256"), str):
            raise bad("model_sha256", "must be a string")
        def read_lines(field: str, required: bool) -> dict[str, tuple[float, float]]:
            lines = data.get(field) if required else data.get(field, {})
            if not isinstance(lines, dict):
                raise bad(field, "must be an object of applicant types")
            out = {}
            for typ, line in lines.items():
                where_line = f"{field}.{str(typ)[:40]}"
                if not isinstance(line, dict):
                    raise bad(where_line, "must be an object")
                a, b = line.get("intercept"), line.get("slope")
                if not all(_finite_number(v) for v in (a, b)):
                    raise bad(where_line, "needs finite intercept and slope")
                if not _SLOPE_BOUNDS[0] <= b <= _SLOPE_BOUNDS[1]:
                    raise bad(f"{where_line}.slope",
                              f"must lie in [{_SLOPE_BOUNDS[0]}, {_SLOPE_BOUNDS[1]}]")
                out[str(typ)] = (float(a), float(b))
            return out

        by_type = read_lines("by_type", required=True)
        joint = read_lines("joint_by_type", required=False)  # absent in files before joint lines
        season = data.get("season")
        applicants = data.get("applicants")
        return cls(by_type, data["model_sha256"],
                   season if isinstance(season, int) else None,
                   applicants if isinstance(applicants, dict) else None, joint)
