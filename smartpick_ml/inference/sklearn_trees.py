"""The one place that reads scikit-learn's private internals: a fitted booster as plain arrays.

The fast path (:mod:`smartpick_ml.inference.fastpath`) scores with the trees of the model's
``HistGradientBoostingClassifier``, which scikit-learn keeps private. This module, and only this
module, reads them:

- ``booster._predictors``: per boosting iteration, one ``TreePredictor`` per class (one for a
  binary classifier), each with ``nodes`` (a structured array, ``PREDICTOR_RECORD_DTYPE``: the
  fields in ``_NODE_FIELDS`` below) and ``raw_left_cat_bitsets``;
- ``booster._bin_mapper.make_known_categories_bitsets()``: the categories seen at fit;
- ``booster._baseline_prediction``: the raw score the trees' leaf values are added to;
- ``booster._preprocess_X(X, reset=False)``: the column order and category codes the trees read.

Written against scikit-learn 1.6 to 1.9 (``pyproject.toml``: ``>=1.6,<1.10``); the names and node
fields above are the same in the 1.6.0 and 1.9.1 sources. A release that renames one fails here
with :class:`UnsupportedBooster`; one that keeps the names but changes their meaning is caught by
the parity check every :class:`~smartpick_ml.inference.fastpath.FastScorer` runs when it is built.
The fast path's kernels also repeat how scikit-learn's ``_predict_one_from_raw_data`` decides a
split (``fastpath._go_left``); that parity check covers them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: the scikit-learn releases this module was written against (``pyproject.toml``'s range)
SCIKIT_LEARN_VERSIONS = ">=1.6,<1.10"

# node field read -> dtype the kernels take
_NODE_FIELDS: dict[str, type] = {
    "feature_idx": np.int64, "num_threshold": np.float64, "missing_go_to_left": np.bool_,
    "left": np.int64, "right": np.int64, "is_leaf": np.bool_, "value": np.float64,
    "is_categorical": np.bool_, "bitset_idx": np.int64}


class UnsupportedBooster(TypeError):
    """The booster's internals are not the ones this module was written against."""


@dataclass(frozen=True)
class FlatTrees:
    """Every tree of a binary booster as flat node arrays, one tree after another: a node's
    ``left`` / ``right`` index these arrays, ``roots`` holds each tree's first node."""

    feature: np.ndarray  # int64: the split's column of the preprocessed matrix
    threshold: np.ndarray  # float64: a numeric split goes left iff x <= threshold
    missing_go_to_left: np.ndarray  # bool
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64: a leaf's value
    is_categorical: np.ndarray  # bool
    bitset_idx: np.ndarray  # int64: a categorical split's row of raw_bitsets
    raw_bitsets: np.ndarray  # uint32 (n_categorical_splits, 8): the categories that go left
    known_bitsets: np.ndarray  # uint32: the categories seen at fit, one row per feature ...
    f_idx_map: np.ndarray  # int64: ... at the row f_idx_map[feature]
    roots: np.ndarray  # int64
    baseline: float  # the raw score before the first tree


def _private(obj: Any, name: str) -> Any:
    """``obj.<name>``, or an :class:`UnsupportedBooster` naming the versions this reads."""
    try:
        return getattr(obj, name)
    except AttributeError:
        import sklearn

        raise UnsupportedBooster(
            f"{type(obj).__name__} has no {name}: the fast path reads scikit-learn's internals "
            f"as of scikit-learn{SCIKIT_LEARN_VERSIONS}, found {sklearn.__version__}") from None


def _tree_predictors(booster: Any) -> list[Any]:
    """One ``TreePredictor`` per iteration, checked to carry every node field read."""
    trees = []
    for per_class in _private(booster, "_predictors"):
        if len(per_class) != 1:
            raise UnsupportedBooster(f"the fast path takes a binary classifier, got "
                                     f"{len(per_class)} trees per iteration")
        missing = set(_NODE_FIELDS) - set(_private(per_class[0], "nodes").dtype.names)
        if missing:
            raise UnsupportedBooster(f"scikit-learn's tree nodes lack {sorted(missing)} (written "
                                     f"against scikit-learn{SCIKIT_LEARN_VERSIONS})")
        trees.append(per_class[0])
    return trees


def flat_trees(booster: Any) -> FlatTrees:
    """The fitted booster's trees, baseline and category bitsets as :class:`FlatTrees`."""
    fields: dict[str, list[np.ndarray]] = {k: [] for k in _NODE_FIELDS}
    bitsets, roots = [], []
    offset = bit_offset = 0
    for tree in _tree_predictors(booster):
        roots.append(offset)
        for k in _NODE_FIELDS:
            fields[k].append(tree.nodes[k].astype(_NODE_FIELDS[k]))
        # child and bitset indices are per tree: make them index the flat arrays
        fields["left"][-1] += offset
        fields["right"][-1] += offset
        fields["bitset_idx"][-1] += bit_offset
        bitsets.append(np.asarray(tree.raw_left_cat_bitsets, dtype=np.uint32))
        offset += len(tree.nodes)
        bit_offset += len(tree.raw_left_cat_bitsets)
    flat = {k: np.concatenate(v) for k, v in fields.items()}
    raw = [b for b in bitsets if len(b)]
    known, f_idx_map = _private(booster, "_bin_mapper").make_known_categories_bitsets()
    return FlatTrees(
        feature=flat["feature_idx"], threshold=flat["num_threshold"],
        missing_go_to_left=flat["missing_go_to_left"], left=flat["left"], right=flat["right"],
        is_leaf=flat["is_leaf"], value=flat["value"], is_categorical=flat["is_categorical"],
        bitset_idx=flat["bitset_idx"],
        raw_bitsets=np.ascontiguousarray(np.concatenate(raw) if raw else
                                         np.zeros((1, 8), np.uint32)),
        known_bitsets=np.ascontiguousarray(known, dtype=np.uint32),
        f_idx_map=np.asarray(f_idx_map, dtype=np.int64),
        roots=np.asarray(roots, dtype=np.int64),
        baseline=float(np.ravel(_private(booster, "_baseline_prediction"))[0]))


def preprocessed(booster: Any, X: pd.DataFrame) -> np.ndarray:
    """``X`` as the trees read it (the booster's column order and category codes), float64."""
    return np.ascontiguousarray(_private(booster, "_preprocess_X")(X, reset=False),
                                dtype=np.float64)


__all__ = ["SCIKIT_LEARN_VERSIONS", "FlatTrees", "UnsupportedBooster", "flat_trees",
           "preprocessed"]
