"""Stage 3 — features for q(a, p), one transformer shared by training and inference.

Input is a *pairs frame*: one row per applicant × program, with the applicant's fields, the
program's fields and the preference signal (:data:`PAIR_INPUT_COLUMNS`; :func:`build_pairs` joins
the three tables into it). Everything in it is known when applications are sent: no interview,
rank or match column ever enters. :class:`PairFeatures` turns it into model features, following the
scikit-learn estimator API so the same object runs in training, in a saved model and in a service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from smartpick_ml.contracts.columns import check_series
from smartpick_ml.contracts.eligibility import bool_values
from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.numeric import clipped_logit
from smartpick_ml.contracts.pairs import APPLICANT_INPUTS, PAIR_COLUMN_SPECS, PROGRAM_INPUTS
from smartpick_ml.contracts.reference import (
    APPLICANT_TYPES,
    PGY1_ONLY_SPECIALTIES,
    RATE_COLUMN_BY_TYPE,
    SPECIALTY_NAMES,
    STATE_REGION,
    TYPICAL_STEP2_CK,
)

SIGNAL_CODES = {"none": 0, "signal": 1, "silver": 2, "gold": 3}
SIGNAL_RATE_COLUMN = {"signal": "rate_signal", "silver": "rate_silver_signal",
                      "gold": "rate_gold_signal"}
CATEGORICAL_FEATURES: tuple[str, ...] = ("applicant_type", "specialty")
#: Features whose effect on q must not be negative (monotonic constraints).
INCREASING_FEATURES: tuple[str, ...] = ("step2_ck", "step2_vs_program", "step2_over_minimum",
                                         "years_within_cutoff")

FEATURE_NAMES: tuple[str, ...] = (
    "applicant_type", "specialty", "step2_ck", "step2_vs_program", "step2_over_minimum",
    "years_within_cutoff", "years_since_graduation",
    "usce_months", "publications", "needs_visa", "visa_sponsorship", "same_state", "same_region",
    "positions", "university", "rate_own_type", "logit_rate_own_type", "rate_us_md",
    "rate_non_us_img", "rate_img_vs_md", "rate_in_state", "rate_out_of_state", "img_share",
    "img_mentorship", "img_orientation", "signal", "rate_own_signal", "rate_no_signal",
    "outside_preferred_specialty", "program_take_rate", "applications")

#: Pseudo-applications that pull a program's take rate toward its wider group's (empirical Bayes).
TAKE_RATE_PRIOR_WEIGHT = 50.0
TAKE_RATE_FOLDS = 5

#: Programs an applicant of any specialty ranks for a PGY-1 year: applying there is not a backup.
PGY1_ONLY_NAMES: frozenset[str] = frozenset(s.name for s in PGY1_ONLY_SPECIALTIES)


def outside_preferred_specialty(preferred: np.ndarray, specialty: np.ndarray) -> np.ndarray:
    """1.0 where the program is in another specialty than the applicant prefers (a backup: programs
    rank such applicants lower), 0.0 where it is the preferred one, a PGY-1 year, or no preferred
    specialty is given."""
    given = pd.notna(preferred)
    pgy1 = np.isin(specialty, list(PGY1_ONLY_NAMES))
    return (given & (specialty != preferred) & ~pgy1).astype(float)


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def lookup(values: pd.Series | np.ndarray, table: Mapping[Any, Any],
           dtype: type = float) -> np.ndarray:
    """``table[v]`` for every value (NaN for float, else None, where missing or null), each
    distinct value looked up once (``Series.map`` would hash every one of the millions of
    training pairs)."""
    missing = np.nan if dtype is float else None
    codes, distinct = pd.factorize(values if isinstance(values, pd.Series)
                                   else pd.Series(values, dtype=object))
    found = np.array([*(table.get(v, missing) for v in distinct), missing], dtype=dtype)
    return found[codes]  # a null's code is -1: the trailing missing


#: The columns the features cannot do without (every other input may be absent or null).
NEEDED_COLUMNS: tuple[str, ...] = ("applicant_type", "step2_ck", "graduation_year", "season",
                                   "specialty", "program_id")


def check_pair_inputs(pairs: pd.DataFrame) -> None:
    """Fail with a clear message when a pairs frame lacks the columns the features need, or holds
    an applicant type or specialty the pairs contract does not know (a model fitted on known
    categories must not silently score others)."""
    if not isinstance(pairs, pd.DataFrame):
        raise DataValidationError("pairs", [f"expected a pandas DataFrame, got "
                                            f"{type(pairs).__name__}"])
    missing = [c for c in NEEDED_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataValidationError("pairs", [f"missing required column(s): {', '.join(missing)}"])
    problems = [problem for col in ("applicant_type", "specialty")
                for problem in check_series(PAIR_COLUMN_SPECS[col], pairs[col])[0]]
    if problems:
        raise DataValidationError("pairs", problems)


def own_type_rate(pairs: pd.DataFrame) -> np.ndarray:
    """Each pair's program interview rate for the pair's applicant type (NaN where suppressed)."""
    t = pairs["applicant_type"].to_numpy(dtype=object)
    own = np.full(len(pairs), np.nan)
    for typ, col in RATE_COLUMN_BY_TYPE.items():
        sel = t == typ
        own[sel] = _num(pairs, col)[sel]
    return own


class PairFeatures(TransformerMixin, BaseEstimator):
    """Pairs frame -> model features (pandas out, stable column names and dtypes).

    ``fit`` learns from the training pairs what their applicants could know of each program's
    history: its typical Step 2 CK among the applicants it interviewed (the specialty's for
    programs it has not seen; pass ``interviewed``), and, given the labels ``y``, the share of
    each applicant type's applications it would take (``program_take_rate``, shrunk toward the
    program's all-type share and that toward the type's overall share; NaN without labels or for
    programs not seen).
    """

    def __init__(self, min_interviewees: int = 5):
        self.min_interviewees = min_interviewees

    def fit(self, pairs: pd.DataFrame, y: object = None,
            interviewed: np.ndarray | None = None) -> PairFeatures:
        check_pair_inputs(pairs)
        mask = np.ones(len(pairs), bool) if interviewed is None else np.asarray(interviewed, bool)
        seen = pairs.loc[mask, ["program_id", "specialty", "step2_ck"]]
        by_program = seen.groupby("program_id")["step2_ck"].agg(["mean", "size"])
        by_program = by_program[by_program["size"] >= self.min_interviewees]
        self.program_step2_ = by_program["mean"].astype(float).to_dict()
        by_specialty = seen.groupby("specialty")["step2_ck"].mean()
        self.specialty_step2_ = by_specialty.astype(float).to_dict()
        self.overall_step2_ = float(seen["step2_ck"].mean() if len(seen) else TYPICAL_STEP2_CK)
        self._fit_take_rates(pairs, y)
        self.typical_applications_ = _typical_applications(pairs)
        self.feature_names_out_ = list(FEATURE_NAMES)
        return self

    def applications(self, pairs: pd.DataFrame) -> np.ndarray:
        """The applicant's number of applications, the type's typical number where not given."""
        given = _num(pairs, "applications")
        typical = lookup(pairs["applicant_type"], getattr(self, "typical_applications_", {}))
        return np.where(np.isnan(given), typical, given)

    def _fit_take_rates(self, pairs: pd.DataFrame, y: object) -> None:
        """Per (program, applicant type): the smoothed share of applications taken."""
        self.take_rate_row_, self.take_rate_ = _take_rates(pairs, y)

    def fit_transform(self, pairs: pd.DataFrame, y: object = None,
                      interviewed: np.ndarray | None = None) -> pd.DataFrame:
        """``fit`` then ``transform``, except that each training pair's ``program_take_rate``
        comes from the other applicants' labels (5 folds by applicant): a pair's own label never
        feeds its own feature, which would flatter it in training and not in use."""
        out = self.fit(pairs, y, interviewed=interviewed).transform(pairs)
        if y is None or "applicant_id" not in pairs:
            return out
        fold = (pd.util.hash_array(pairs["applicant_id"].to_numpy(dtype=object)) % TAKE_RATE_FOLDS
                ).astype(np.int64)
        label = np.asarray(y, dtype=object)
        oof = np.full(len(pairs), np.nan)
        for k in range(TAKE_RATE_FOLDS):
            rest = fold != k
            rows, table = _take_rates(pairs[rest], label[rest])
            oof[~rest] = _lookup_take_rate(pairs[~rest], rows, table)
        out["program_take_rate"] = oof
        return out

    def take_rate(self, pairs: pd.DataFrame) -> np.ndarray:
        """Each pair's ``program_take_rate`` (NaN for a program not seen in training)."""
        return _lookup_take_rate(pairs, self.take_rate_row_, self.take_rate_)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(FEATURE_NAMES, dtype=object)

    def transform(self, pairs: pd.DataFrame) -> pd.DataFrame:
        check_pair_inputs(pairs)
        n = len(pairs)
        t = pairs["applicant_type"].to_numpy(dtype=object)
        own = own_type_rate(pairs)
        rate_md, rate_nonus = _num(pairs, "rate_us_md"), _num(pairs, "rate_non_us_img")
        step2 = _num(pairs, "step2_ck")
        typical = lookup(pairs["program_id"], self.program_step2_)
        fallback = lookup(pairs["specialty"], self.specialty_step2_)
        typical = np.where(np.isnan(typical), fallback, typical)
        typical = np.where(np.isnan(typical), self.overall_step2_, typical)
        home = pairs["home_state"].to_numpy(dtype=object) if "home_state" in pairs else \
            np.full(n, None, dtype=object)
        state = pairs["state"].to_numpy(dtype=object) if "state" in pairs else \
            np.full(n, None, dtype=object)
        home_region = lookup(home, STATE_REGION, dtype=object)
        prog_region = lookup(state, STATE_REGION, dtype=object)
        signal = pairs["signal"].fillna("none").to_numpy(dtype=object) if "signal" in pairs \
            else np.full(n, "none", dtype=object)
        own_signal_rate = np.full(n, np.nan)
        for kind, col in SIGNAL_RATE_COLUMN.items():
            sel = signal == kind
            own_signal_rate[sel] = _num(pairs, col)[sel]
        needs = bool_values(pairs, "needs_visa", 0.0)
        j1 = bool_values(pairs, "sponsors_j1")
        h1b = bool_values(pairs, "sponsors_h1b")
        years = _num(pairs, "season") - _num(pairs, "graduation_year")
        sponsorship = np.where(np.isnan(j1) & np.isnan(h1b), np.nan,
                               np.nan_to_num(j1) + 2 * np.nan_to_num(h1b))
        out = pd.DataFrame({
            "applicant_type": pd.Categorical(t, categories=APPLICANT_TYPES),
            "specialty": pd.Categorical(pairs["specialty"].to_numpy(dtype=object),
                                        categories=SPECIALTY_NAMES),
            "step2_ck": step2,
            "step2_vs_program": step2 - typical,
            # margins over the program's published screens (NaN: the program states none)
            "step2_over_minimum": step2 - _num(pairs, "step2_minimum"),
            "years_within_cutoff": _num(pairs, "max_years_since_graduation") - years,
            "years_since_graduation": years,
            "usce_months": _num(pairs, "usce_months"),
            "publications": _num(pairs, "publications"),
            "needs_visa": needs,
            "visa_sponsorship": sponsorship,
            "same_state": (home == state).astype(float),
            "same_region": ((home_region == prog_region) & pd.notna(home_region)).astype(float),
            "positions": _num(pairs, "positions"),
            "university": (pairs["program_type"].to_numpy(dtype=object) == "university"
                           ).astype(float) if "program_type" in pairs else np.full(n, np.nan),
            "rate_own_type": own,
            "logit_rate_own_type": np.where(np.isnan(own), np.nan, clipped_logit(own)),
            "rate_us_md": rate_md,
            "rate_non_us_img": rate_nonus,
            "rate_img_vs_md": clipped_logit(rate_nonus) - clipped_logit(rate_md),
            "rate_in_state": _num(pairs, "rate_in_state"),
            "rate_out_of_state": _num(pairs, "rate_out_of_state"),
            "img_share": _num(pairs, "img_share"),
            "img_mentorship": bool_values(pairs, "img_mentorship"),
            "img_orientation": bool_values(pairs, "img_orientation"),
            "signal": np.nan_to_num(lookup(signal, SIGNAL_CODES), nan=0.0),
            "rate_own_signal": own_signal_rate,
            "rate_no_signal": _num(pairs, "rate_no_signal"),
            "outside_preferred_specialty": outside_preferred_specialty(
                pairs["preferred_specialty"].to_numpy(dtype=object)
                if "preferred_specialty" in pairs else np.full(n, None, dtype=object),
                pairs["specialty"].to_numpy(dtype=object)),
            "program_take_rate": self.take_rate(pairs),
            "applications": self.applications(pairs),
        }, index=pairs.index)
        return out[list(FEATURE_NAMES)]


def _typical_applications(pairs: pd.DataFrame) -> dict[str, float]:
    """Per applicant type, the median applicant's number of applications (what a request that
    does not say is taken to send)."""
    if "applications" not in pairs:
        return {}
    per = pairs[["applicant_type", "applications"]]
    if "applicant_id" in pairs:
        per = pairs.drop_duplicates(["applicant_id", "season"] if "season" in pairs
                                    else ["applicant_id"])[["applicant_type", "applications"]]
    med = pd.to_numeric(per["applications"], errors="coerce").groupby(
        per["applicant_type"].astype(object)).median().dropna()
    return {str(t): float(v) for t, v in med.items()}


def _take_rates(pairs: pd.DataFrame, y: object) -> tuple[dict[str, int], np.ndarray]:
    """Per (program, applicant type) the smoothed share of labelled applications taken: a row per
    program seen (``{program_id: row}``), a column per applicant type. Shrunk toward the
    program's all-type share scaled by the type's, and that toward the overall share. Plain dict
    and array: what a saved model (skops) may hold without widening its trusted types."""
    empty: tuple[dict[str, int], np.ndarray] = ({}, np.zeros((0, len(APPLICANT_TYPES))))
    if y is None:
        return empty
    label = pd.to_numeric(pd.Series(np.asarray(y, dtype=object)), errors="coerce").to_numpy(
        dtype=float, na_value=np.nan)
    known = ~np.isnan(label)
    if not known.any():
        return empty
    programs, prog_code = np.unique(pairs["program_id"].to_numpy(dtype=object)[known],
                                    return_inverse=True)
    type_code = pd.Categorical(pairs["applicant_type"].to_numpy(dtype=object)[known],
                               categories=APPLICANT_TYPES).codes
    y_known = label[known]
    n_p, n_t = len(programs), len(APPLICANT_TYPES)
    cell = prog_code * n_t + type_code
    count = np.bincount(cell, minlength=n_p * n_t).reshape(n_p, n_t)
    taken = np.bincount(cell, weights=y_known, minlength=n_p * n_t).reshape(n_p, n_t)
    m = TAKE_RATE_PRIOR_WEIGHT
    overall = y_known.mean()
    type_rate = np.where(count.sum(axis=0) > 0,
                         taken.sum(axis=0) / np.maximum(count.sum(axis=0), 1), overall)
    program_rate = (taken.sum(axis=1) + m * overall) / (count.sum(axis=1) + m)
    prior = np.clip(program_rate[:, None] * type_rate[None, :] / max(overall, 1e-9), 0, 1)
    return {str(p): i for i, p in enumerate(programs)}, (taken + m * prior) / (count + m)


def _lookup_take_rate(pairs: pd.DataFrame, rows: dict[str, int], table: np.ndarray
                      ) -> np.ndarray:
    out = np.full(len(pairs), np.nan)
    if not rows:
        return out
    row = lookup(pairs["program_id"], rows)
    col = pd.Categorical(pairs["applicant_type"].to_numpy(dtype=object),
                         categories=APPLICANT_TYPES).codes
    ok = ~np.isnan(row) & (col >= 0)
    out[ok] = table[row[ok].astype(np.int64), col[ok]]
    return out


def build_pairs(applications: pd.DataFrame, applicants: pd.DataFrame,
                programs: pd.DataFrame) -> pd.DataFrame:
    """Join applications with applicant and program fields: the pairs frame, in the order of
    ``applications``, plus its outcome columns (kept for labels; never model inputs)."""
    if "applications" not in applicants.columns:
        # what each applicant sent this season, as the applications table records it
        counts = applications.groupby(["applicant_id", "season"]).size().rename("applications")
        applicants = applicants.merge(counts.reset_index(), on=["applicant_id", "season"],
                                      how="left")
    a_cols = ["applicant_id", *(c for c in APPLICANT_INPUTS if c in applicants.columns)]
    p_cols = [c for c in PROGRAM_INPUTS if c in programs.columns]
    out = applications.merge(applicants[a_cols], on=["applicant_id", "season"], how="left",
                             validate="many_to_one")
    out = out.merge(programs[p_cols], on="program_id", how="left", validate="many_to_one")
    missing = out["applicant_type"].isna() | out["specialty"].isna()
    if missing.any():
        raise DataValidationError("applications", [
            f"{int(missing.sum())} application(s) reference an applicant or program that is not "
            f"in the tables (first rows {list(np.flatnonzero(missing)[:5])})"])
    return out


