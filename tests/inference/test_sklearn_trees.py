"""The adapter to scikit-learn's internals: what it reads, and how it refuses what it cannot."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from smartpick_ml.inference.fastpath import _raw_scores
from smartpick_ml.inference.sklearn_trees import (
    SCIKIT_LEARN_VERSIONS,
    UnsupportedBooster,
    flat_trees,
    preprocessed,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _data(n: int = 300) -> np.ndarray:
    """A numeric column with missing values and a categorical one (codes 0-3)."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 4, n)]).astype(float)
    X[::17, 0] = np.nan
    return X


def _fitted(n_classes: int) -> HistGradientBoostingClassifier:
    X = _data()
    y = ((np.nan_to_num(X[:, 0]) > 0) ^ np.isin(X[:, 1], [1, 3])).astype(int)
    if n_classes == 3:
        y += X[:, 1] == 2
    return HistGradientBoostingClassifier(max_iter=5, categorical_features=[1],
                                          random_state=0).fit(X, y)


def test_the_versions_it_was_written_against_are_the_ones_the_project_allows():
    """Widening scikit-learn's range in pyproject means re-reading the adapter against it."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert f"scikit-learn{SCIKIT_LEARN_VERSIONS}" in [d.replace(" ", "") for d in deps]


def test_flat_trees_keep_each_tree_apart():
    """Trees follow one another: every child lies in its parent's tree."""
    trees = flat_trees(_fitted(2))
    internal = np.flatnonzero(~trees.is_leaf)
    tree_of = np.searchsorted(trees.roots, np.arange(len(trees.feature)), side="right") - 1
    assert len(trees.roots) == 5 and (tree_of >= 0).all()
    np.testing.assert_array_equal(tree_of[trees.left[internal]], tree_of[internal])
    np.testing.assert_array_equal(tree_of[trees.right[internal]], tree_of[internal])
    assert trees.is_categorical.any()


def test_flat_trees_walked_give_the_boosters_own_raw_score():
    """The flat trees and the booster's preprocessing, walked as the fast path walks them, give
    ``decision_function`` -- with missing values, and categories never seen at fit."""
    booster = _fitted(2)
    X = np.vstack([_data(), [[np.nan, 2.0], [0.3, np.nan], [-0.2, 9.0], [1.5, 3.0]]])
    t = flat_trees(booster)
    out = np.empty(len(X))
    _raw_scores(preprocessed(booster, X), t.roots, t.feature, t.threshold,
                t.missing_go_to_left, t.left, t.right, t.is_leaf, t.value, t.is_categorical,
                t.bitset_idx, t.raw_bitsets, t.known_bitsets, t.f_idx_map, t.baseline, out)
    np.testing.assert_allclose(out, booster.decision_function(X), rtol=0, atol=1e-12)


def test_an_unfitted_booster_is_refused_naming_the_versions():
    with pytest.raises(UnsupportedBooster, match=r"_predictors.*scikit-learn>=1\.6"):
        flat_trees(HistGradientBoostingClassifier())


def test_a_multiclass_booster_is_refused():
    with pytest.raises(UnsupportedBooster, match="binary classifier, got 3 trees"):
        flat_trees(_fitted(3))
