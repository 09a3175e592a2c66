"""The match model: features -> gradient boosting -> calibration -> eligibility rule.

:class:`MatchModel` follows the scikit-learn estimator API (``__init__`` stores parameters, ``fit``
returns ``self``, learned state ends in ``_``), takes a pairs frame (see ``features``) and returns
``predict_proba`` columns [P(not take), P(take)].

- **Early stopping** uses a held-out set grouped by applicant that the caller passes in: the
  estimator's built-in early stopping splits rows at random, which leaks an applicant's other rows.
- **Calibration** (isotonic, sigmoid or none) is chosen on the held-out set by cross-fitting: each
  method is fitted on one half of its applicants and scored on the other.
- **Negative down-sampling** (``negative_sample_rate`` < 1): the booster sees every positive and a
  seeded share of the negatives, each weighted 1 / rate, so its probabilities stay unbiased; most
  pairs are negatives, so the same time buys more applicants' positives. Features, early stopping
  and calibration always use every row they are given.
- **Monotone** in Step 2 CK by construction (a higher score never lowers q, all else equal).
- **Eligibility** is a hard rule, not a feature (``contracts.eligibility``): q = 0 where a
  program cannot take the applicant (no visa sponsored for one who needs it; a uniformed-services
  program).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from smartpick_ml.contracts.eligibility import ineligible
from smartpick_ml.contracts.numeric import log_loss
from smartpick_ml.modelling.features import INCREASING_FEATURES, PairFeatures
from smartpick_ml.modelling.pmatch import PMatchCalibrator

PROB_FLOOR = 1e-5
CALIBRATION_METHODS = ("none", "sigmoid", "isotonic")


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Log-loss of probabilities as the model would output them (floored at PROB_FLOOR)."""
    return log_loss(y, np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR))


class _Calibrator:
    """A monotone map from raw to calibrated probability."""

    def __init__(self, method: str):
        self.method = method

    def fit(self, p: np.ndarray, y: np.ndarray) -> _Calibrator:
        if self.method == "isotonic":
            self.iso_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        elif self.method == "sigmoid":
            z = np.log(np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR) /
                       (1 - np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR)))
            self.lr_ = LogisticRegression(C=1e6).fit(z.reshape(-1, 1), y)
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return self.iso_.predict(p)
        if self.method == "sigmoid":
            z = np.log(np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR) /
                       (1 - np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR)))
            return self.lr_.predict_proba(z.reshape(-1, 1))[:, 1]
        return p


class MatchModel(ClassifierMixin, BaseEstimator):
    """Calibrated gradient-boosted model of q(a, p) on a pairs frame."""

    def __init__(self, learning_rate: float = 0.1, max_iter: int = 400, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 100, l2_regularization: float = 1.0,
                 n_iter_no_change: int = 20, calibration: str = "auto",
                 negative_sample_rate: float = 1.0, random_state: int = 0):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.n_iter_no_change = n_iter_no_change
        self.calibration = calibration
        self.negative_sample_rate = negative_sample_rate
        self.random_state = random_state

    def fit(self, pairs: pd.DataFrame, y: np.ndarray, *, holdout_pairs: pd.DataFrame,
            holdout_y: np.ndarray, holdout_groups: np.ndarray,
            interviewed: np.ndarray | None = None) -> MatchModel:
        """Fit on ``pairs``; early-stop and choose calibration on the applicant-grouped hold-out."""
        features = PairFeatures()
        X = features.fit_transform(pairs, y, interviewed=interviewed)
        return self.fit_features(features, X, y,
                                 holdout_X=features.transform(holdout_pairs),
                                 holdout_y=holdout_y, holdout_groups=holdout_groups)

    def fit_features(self, features: PairFeatures, X: pd.DataFrame, y: np.ndarray, *,
                     holdout_X: pd.DataFrame, holdout_y: np.ndarray,
                     holdout_groups: np.ndarray) -> MatchModel:
        """``fit`` from features already built: ``features`` fitted on the training pairs, ``X``
        and ``holdout_X`` its transform of the training and hold-out pairs (the training run
        builds them once, for ``data/processed/`` and for this)."""
        y = np.asarray(y, dtype=np.int64)
        holdout_y = np.asarray(holdout_y, dtype=np.int64)
        self.features_ = features
        # two halves of the hold-out by applicant: one stops the boosting, one calibrates
        groups = pd.Series(holdout_groups).astype(str)
        codes = pd.util.hash_pandas_object(groups, index=False).to_numpy() % 2
        es, cal = codes == 0, codes == 1
        self.booster_ = self.new_booster(X.columns)
        keep, weight = self._negative_sample(y)
        if weight is not None:
            X, y = X[keep], y[keep]
        self.booster_.fit(X, y, sample_weight=weight, X_val=holdout_X[es], y_val=holdout_y[es])
        raw_cal = self.booster_.predict_proba(holdout_X[cal])[:, 1]
        self.calibration_scores_ = self._compare_calibrations(raw_cal, holdout_y[cal],
                                                              groups[cal].to_numpy())
        method = self.calibration
        if method == "auto":
            method = min(self.calibration_scores_, key=self.calibration_scores_.get)
        self.calibration_method_ = method
        self.calibrator_ = _Calibrator(method).fit(raw_cal, holdout_y[cal])
        self.classes_ = np.array([0, 1])
        self.n_iter_ = int(self.booster_.n_iter_)
        return self

    def new_booster(self, columns: Sequence[str]) -> HistGradientBoostingClassifier:
        """An unfitted booster with this model's settings for a feature frame with ``columns``
        (categoricals from the dtypes, increasing where ``INCREASING_FEATURES`` says), early
        stopping on the validation set ``fit`` is given."""
        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate, max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization, categorical_features="from_dtype",
            monotonic_cst={f: 1 for f in INCREASING_FEATURES if f in set(columns)},
            early_stopping=True, n_iter_no_change=self.n_iter_no_change,
            random_state=self.random_state)

    def _negative_sample(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows the booster trains on (every positive, a seeded share of negatives) and their
        weights (1 / rate on the kept negatives; None when nothing is dropped)."""
        rate = float(self.negative_sample_rate)
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"negative_sample_rate: must be in (0, 1], got {rate}")
        if rate == 1.0:
            return np.ones(len(y), bool), None
        rng = np.random.default_rng(self.random_state)
        keep = (y == 1) | (rng.random(len(y)) < rate)
        weight = np.where(y[keep] == 1, 1.0, 1.0 / rate)
        return keep, weight

    @staticmethod
    def _compare_calibrations(p: np.ndarray, y: np.ndarray, groups: np.ndarray
                              ) -> dict[str, float]:
        half = pd.util.hash_pandas_object(pd.Series(groups), index=False).to_numpy() // 2 % 2
        scores = {}
        for method in CALIBRATION_METHODS:
            losses = []
            for fold in (0, 1):
                fit_on, score_on = half == fold, half != fold
                if len(np.unique(y[fit_on])) < 2:
                    losses.append(_log_loss(y[score_on], p[score_on]))
                    continue
                c = _Calibrator(method).fit(p[fit_on], y[fit_on])
                losses.append(_log_loss(y[score_on], c.transform(p[score_on])))
            scores[method] = float(np.mean(losses))
        return scores

    def fit_pmatch_calibrator(self, holdout_X: pd.DataFrame, holdout_pairs: pd.DataFrame
                              ) -> MatchModel:
        """Learn how strongly programs' decisions share the applicant's unobserved strength
        (``pmatch``), on held-out applicants whose outcome (``matched``) is known."""
        q = self.proba_from_features(holdout_X, holdout_pairs)[:, 1]
        per = holdout_pairs.groupby("applicant_id", sort=False).agg(
            matched=("matched", "any"), applicant_type=("applicant_type", "first"))
        self.pmatch_calibrator_ = PMatchCalibrator().fit(
            q, holdout_pairs["applicant_id"].to_numpy(), per["matched"].astype(bool),
            per["applicant_type"])
        return self

    def predict_proba(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.proba_from_features(self.features_.transform(pairs), pairs)

    def proba_from_features(self, X: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """``predict_proba(pairs)`` when ``X = features_.transform(pairs)`` is already built (the
        training run builds each split's features once)."""
        q = self.calibrator_.transform(self.booster_.predict_proba(X)[:, 1])
        q = np.clip(q, PROB_FLOOR, 1 - PROB_FLOOR)
        q = np.where(ineligible(pairs), 0.0, q)
        return np.column_stack([1 - q, q])

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(pairs)[:, 1] >= 0.5).astype(np.int64)
