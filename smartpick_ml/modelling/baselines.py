"""The baselines every model is compared with: a published-rate lookup with no applicant features,
and a logistic regression on exactly the model's features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from smartpick_ml.contracts.eligibility import ineligible
from smartpick_ml.modelling.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    PairFeatures,
    own_type_rate,
)
from smartpick_ml.modelling.model import PROB_FLOOR


class RateLookupBaseline:
    """Published-rate lookup: the program's interview rate for the applicant's type times the
    specialty's observed P(would take | interviewed). No applicant features at all."""

    def fit(self, pairs: pd.DataFrame, y: np.ndarray, interviewed: np.ndarray
            ) -> RateLookupBaseline:
        inter = pd.Series(np.asarray(interviewed, bool), index=pairs.index)
        took = pd.Series(np.asarray(y, float), index=pairs.index)
        by_spec = took[inter].groupby(pairs.loc[inter, "specialty"]).mean()
        self.take_given_interview_ = by_spec.to_dict()
        self.overall_ = float(took[inter].mean())
        own = own_type_rate(pairs)
        self.rate_fill_ = (pd.Series(own).groupby(pairs["specialty"].to_numpy()).median()
                           .to_dict())
        return self

    def predict_proba(self, pairs: pd.DataFrame) -> np.ndarray:
        own = own_type_rate(pairs)
        fill = pairs["specialty"].map(self.rate_fill_).to_numpy(dtype=float, na_value=0.05)
        own = np.where(np.isnan(own), fill, own)
        k = pairs["specialty"].map(self.take_given_interview_).to_numpy(dtype=float,
                                                                        na_value=self.overall_)
        q = np.clip(own * k, PROB_FLOOR, 1 - PROB_FLOOR)
        q = np.where(ineligible(pairs), 0.0, q)
        return np.column_stack([1 - q, q])


def logistic_on_features(numeric: Sequence[str], seed: int) -> Pipeline:
    """Logistic regression on a feature frame: one-hot ``CATEGORICAL_FEATURES``, the ``numeric``
    columns imputed (with missing-value indicators) and scaled."""
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                              StandardScaler()), list(numeric))])
    return Pipeline([("prep", pre),
                     ("clf", LogisticRegression(max_iter=300, C=1.0, random_state=seed))])


def logistic_baseline(features: PairFeatures, seed: int) -> Pipeline:
    """The logistic baseline on pairs: the model's fitted feature step, frozen, then
    :func:`logistic_on_features`. The logistic sees exactly the model's features (refitting the
    step on the logistic's rows would recompute each program's typical interviewee from a subset,
    and without knowing who was interviewed)."""
    numeric = [f for f in FEATURE_NAMES if f not in CATEGORICAL_FEATURES]
    return Pipeline([("features", FrozenEstimator(features)),
                     *logistic_on_features(numeric, seed).steps])
