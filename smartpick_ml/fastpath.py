"""The fast path: score every program for one applicant in a few milliseconds, exactly.

``MatchModel.predict_proba`` builds a pandas frame, runs the feature transformer, and lets
scikit-learn walk every tree for every row: ~90 ms for 4,777 programs. For one applicant most of
that work repeats: the program side of every feature never changes, and the applicant side is one
value per request. :class:`FastScorer` therefore

1. builds, once, the model's input matrix for every program (in the booster's own preprocessed
   column order, through the booster's own preprocessing, so categories are coded identically);
2. per request, fills only the applicant-dependent columns (type, Step 2 CK and its gap to the
   program's typical interviewee, experience, home state, signals) in a reused buffer;
3. walks a flattened copy of the trees in compiled code (numba), after *specialising* them on the
   applicant: every split on an applicant-only feature is resolved once per request, so each
   program walks only the splits that depend on it;
4. applies the same calibration, probability floor and visa rule as the model.

``tests/test_fastpath.py`` checks parity with ``MatchModel.predict_proba`` to 1e-6 on a full
season of pairs.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pandas as pd

from smartpick_ml.features import (
    APPLICANT_INPUTS,
    FEATURE_NAMES,
    PROGRAM_INPUTS,
    SIGNAL_CODES,
    SIGNAL_RATE_COLUMN,
    visa_blocked,
)
from smartpick_ml.model import PROB_FLOOR, MatchModel
from smartpick_ml.reference import APPLICANT_TYPES, STATE_REGION

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: features that take one value per request (the applicant's own)
APPLICANT_ONLY = ("applicant_type", "step2_ck", "years_since_graduation", "usce_months",
                  "publications", "needs_visa")
#: features that depend on the applicant *and* the program, or on the request (signals)
PER_REQUEST = ("step2_vs_program", "step2_over_minimum", "years_within_cutoff", "same_state",
               "same_region", "signal", "rate_own_signal")
#: the first ALWAYS_VARYING per-request features differ on every row (margins over the program's
#: typical score and published screens); the others only on in-state / in-region / signalled rows
ALWAYS_VARYING = 3
MAX_LEAVES = 64
# position of a single set bit: multiply by a de Bruijn constant, the top 6 bits index a table
# (64-bit masks for trees of up to 64 leaves, 32-bit -- half the memory traffic -- up to 32)
_DEBRUIJN = {64: (0x03F79D71B4CA8B09, (1 << 64) - 1, 58), 32: (0x077CB531, (1 << 32) - 1, 27)}
_DEBRUIJN_TABLE = {}
for _w, (_c, _m, _s) in _DEBRUIJN.items():
    _DEBRUIJN_TABLE[_w] = np.zeros(_w, np.int64)
    for _k in range(_w):
        _DEBRUIJN_TABLE[_w][(((1 << _k) * _c) & _m) >> _s] = _k


@numba.njit(cache=True)
def _in_bitset(bitsets: np.ndarray, row: int, value: int) -> bool:
    return (bitsets[row, value >> 5] >> np.uint32(value & 31)) & np.uint32(1) == np.uint32(1)


@numba.njit(cache=True)
def _go_left(x: float, feat: int, thr: float, mgl: bool, is_cat: bool, bitset: int,
             raw_bitsets: np.ndarray, known_bitsets: np.ndarray, f_idx_map: np.ndarray) -> bool:
    """One split, exactly as scikit-learn's ``_predict_one_from_raw_data`` decides it."""
    if np.isnan(x):
        return mgl
    if is_cat:
        if x < 0:
            return mgl
        v = int(x)
        if _in_bitset(raw_bitsets, bitset, v):
            return True
        if _in_bitset(known_bitsets, f_idx_map[feat], v):
            return False
        return mgl
    return x <= thr


@numba.njit(cache=True)
def _skip_applicant_splits(j, feature, threshold, mgl, left, right, is_leaf, is_cat, bitset_idx,
                           raw_bitsets, known_bitsets, f_idx_map, applicant_values,
                           is_applicant_feature):
    """From node ``j``, follow the splits on the applicant's own features to the first other."""
    while (not is_leaf[j]) and is_applicant_feature[feature[j]]:
        if _go_left(applicant_values[feature[j]], feature[j], threshold[j], mgl[j], is_cat[j],
                    bitset_idx[j], raw_bitsets, known_bitsets, f_idx_map):
            j = left[j]
        else:
            j = right[j]
    return j


@numba.njit(cache=True)
def _specialise(roots, feature, threshold, mgl, left, right, is_leaf, is_cat, bitset_idx,
                raw_bitsets, known_bitsets, f_idx_map, applicant_values, is_applicant_feature,
                out_left, out_right, out_roots):
    """Resolve every split on an applicant-only feature: children pointers skip those nodes."""
    n = feature.shape[0]

    for i in range(n):
        out_left[i] = left[i]
        out_right[i] = right[i]
    # follow chains of resolved nodes from each pointer
    for i in range(n):
        if is_leaf[i]:
            continue
        for side in range(2):
            j = _skip_applicant_splits(
                out_left[i] if side == 0 else out_right[i], feature, threshold, mgl, left,
                right, is_leaf, is_cat, bitset_idx, raw_bitsets, known_bitsets, f_idx_map,
                applicant_values, is_applicant_feature)
            if side == 0:
                out_left[i] = j
            else:
                out_right[i] = j
    for t in range(roots.shape[0]):
        out_roots[t] = _skip_applicant_splits(
            roots[t], feature, threshold, mgl, left, right, is_leaf, is_cat, bitset_idx,
            raw_bitsets, known_bitsets, f_idx_map, applicant_values, is_applicant_feature)


@numba.njit(cache=True)
def _raw_scores(X, roots, feature, threshold, mgl, left, right, is_leaf, value, is_cat,
                bitset_idx, raw_bitsets, known_bitsets, f_idx_map, baseline, out):
    for r in range(X.shape[0]):
        total = 0.0
        for t in range(roots.shape[0]):
            j = roots[t]
            while not is_leaf[j]:
                f = feature[j]
                if _go_left(X[r, f], f, threshold[j], mgl[j], is_cat[j], bitset_idx[j],
                            raw_bitsets, known_bitsets, f_idx_map):
                    j = left[j]
                else:
                    j = right[j]
            total += value[j]
        out[r] = baseline + total



# ----------------------------------------------------------------------------- QuickScorer
# Each tree's leaves get one bit each, left to right. A split whose "go left" test fails for a row
# removes its left subtree's leaves; after all failed splits of a tree are applied, the row's exit
# leaf is the lowest bit still set (Lucchese et al., "QuickScorer", SIGIR 2015). That turns a
# branchy walk into bit operations, and lets program-only splits be applied once, at load time.

@numba.njit(cache=True)
def _program_masks(X, internal, tree_of, feature, threshold, mgl, is_cat, bitset_idx, mask,
                   raw_bitsets, known_bitsets, f_idx_map, is_program_feature, n_trees, out):
    """AND of the masks of every failed program-only split, per (program, tree)."""
    for r in range(X.shape[0]):
        for t in range(n_trees):
            out[r, t] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for k in range(internal.shape[0]):
            j = internal[k]
            f = feature[j]
            if not is_program_feature[f]:
                continue
            if not _go_left(X[r, f], f, threshold[j], mgl[j], is_cat[j], bitset_idx[j],
                            raw_bitsets, known_bitsets, f_idx_map):
                out[r, tree_of[j]] &= mask[j]


@numba.njit(cache=True)
def _applicant_masks(applicant_values, internal, tree_of, feature, threshold, mgl, is_cat,
                     bitset_idx, mask, raw_bitsets, known_bitsets, f_idx_map,
                     is_applicant_feature, n_trees, out):
    for t in range(n_trees):
        out[t] = ~mask[0] | mask[0]  # all ones in the masks' own width
    for k in range(internal.shape[0]):
        j = internal[k]
        f = feature[j]
        if not is_applicant_feature[f]:
            continue
        if not _go_left(applicant_values[f], f, threshold[j], mgl[j], is_cat[j], bitset_idx[j],
                        raw_bitsets, known_bitsets, f_idx_map):
            out[tree_of[j]] &= mask[j]


@numba.njit(cache=True, parallel=True)
def _quickscore(X, program_masks, applicant_masks, default_masks, default_row, n_always,
                var_start, var_thr, var_tree, var_mask, nan_start, nan_tree, nan_mask, leaf_start,
                leaf_value, table, debruijn, width_mask, shift, baseline, out):
    """Exit leaves by bit masks. The first ``n_always`` columns of X vary on every row; the
    others only on rows flagged non-default (in-state, signalled), the rest use
    ``default_masks``."""
    n_trees = applicant_masks.shape[0]
    for r in numba.prange(X.shape[0]):
        row_masks = np.empty(n_trees, applicant_masks.dtype)
        n_var = n_always
        if default_row[r]:
            for t in range(n_trees):
                row_masks[t] = program_masks[r, t] & applicant_masks[t] & default_masks[t]
        else:
            n_var = X.shape[1]
            for t in range(n_trees):
                row_masks[t] = program_masks[r, t] & applicant_masks[t]
        for v in range(n_var):
            x = X[r, v]
            if np.isnan(x):
                for k in range(nan_start[v], nan_start[v + 1]):
                    row_masks[nan_tree[k]] &= nan_mask[k]
            else:
                k = var_start[v]
                end = var_start[v + 1]
                while k < end and var_thr[k] < x:
                    row_masks[var_tree[k]] &= var_mask[k]
                    k += 1
        total = 0.0
        for t in range(n_trees):
            m = np.uint64(row_masks[t])
            lowest = m & (~m + np.uint64(1))
            leaf = table[((lowest * debruijn) & width_mask) >> shift]
            total += leaf_value[leaf_start[t] + leaf]
        out[r] = baseline + total


class FastScorer:
    """Exact, fast q for one applicant against a fixed set of programs."""

    def __init__(self, model: MatchModel, programs: pd.DataFrame):
        self.model = model
        self.programs = programs.reset_index(drop=True)
        booster = model.booster_
        self._flatten(booster)
        self.baseline = float(np.ravel(booster._baseline_prediction)[0])
        block = self.programs[[c for c in PROGRAM_INPUTS if c in self.programs.columns]]
        n = len(block)
        self.n_programs = n
        # one preprocessed matrix per applicant type (type-specific rate columns + type code)
        self.base: dict[str, np.ndarray] = {}
        self.type_code: dict[str, float] = {}
        features = model.features_
        for typ in APPLICANT_TYPES:
            dummy = pd.DataFrame({"applicant_type": [typ] * n, "step2_ck": 245,
                                  "graduation_year": 2024, "season": 2025, "usce_months": 0,
                                  "publications": 0, "needs_visa": False, "home_state": None})
            pairs = pd.concat([dummy, block], axis=1)
            pairs["signal"] = "none"
            X = features.transform(pairs)
            pre = np.ascontiguousarray(booster._preprocess_X(X, reset=False), dtype=np.float64)
            self.base[typ] = pre
            self.type_code[typ] = float(pre[0, COL["applicant_type"]])
            if typ == APPLICANT_TYPES[0]:
                # typical Step 2 CK of each program's interviewees: 245 - (245 - typical)
                self.typical_step2 = 245.0 - X["step2_vs_program"].to_numpy(float)
        # the programs' published screens (NaN: none stated)
        self.step2_minimum, self.graduation_cutoff = (
            pd.to_numeric(block[col], errors="coerce").to_numpy(float) if col in block
            else np.full(n, np.nan) for col in ("step2_minimum", "max_years_since_graduation"))
        self.state = block["state"].to_numpy(dtype=object)
        self.region = pd.Series(self.state).map(STATE_REGION).to_numpy(dtype=object)
        self._state_codes = {st: i for i, st in enumerate(STATE_REGION)}
        self._region_codes = {rg: i for i, rg in enumerate(dict.fromkeys(STATE_REGION.values()))}
        self.state_code = np.array([self._state_codes.get(x, -2) for x in self.state])
        self.region_code = np.array([self._region_codes.get(x, -2) for x in self.region])
        self.program_index = pd.Index(block["program_id"])
        self.signal_rates = {kind: pd.to_numeric(block[col], errors="coerce").to_numpy(float)
                             if col in block else np.full(n, np.nan)
                             for kind, col in SIGNAL_RATE_COLUMN.items()}
        self.visa_ok = ~visa_blocked(block.assign(needs_visa=True))
        n_nodes = self.feature.shape[0]
        self._left = np.empty(n_nodes, np.int64)
        self._right = np.empty(n_nodes, np.int64)
        self._roots = np.empty(self.roots.shape[0], np.int64)
        self._var_cols = [COL[name] for name in PER_REQUEST]
        self._is_applicant = np.zeros(len(FEATURE_NAMES), np.bool_)
        for name in APPLICANT_ONLY:
            self._is_applicant[COL[name]] = True
        self._calibration = self._calibration_params(model)
        self.quick = self._build_quickscorer()

    def _flatten(self, booster: Any) -> None:
        nodes, bitsets, roots = [], [], []
        offset = bit_offset = 0
        for (predictor,) in booster._predictors:
            nd = predictor.nodes
            roots.append(offset)
            flat = {k: nd[k].copy() for k in ("feature_idx", "num_threshold", "missing_go_to_left",
                                              "left", "right", "is_leaf", "value",
                                              "is_categorical", "bitset_idx")}
            flat["left"] = flat["left"].astype(np.int64) + offset
            flat["right"] = flat["right"].astype(np.int64) + offset
            flat["bitset_idx"] = flat["bitset_idx"].astype(np.int64) + bit_offset
            nodes.append(flat)
            bitsets.append(np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32))
            offset += len(nd)
            bit_offset += len(predictor.raw_left_cat_bitsets)
        cat = lambda k: np.concatenate([f[k] for f in nodes])  # noqa: E731
        self.feature = cat("feature_idx").astype(np.int64)
        self.threshold = cat("num_threshold").astype(np.float64)
        self.mgl = cat("missing_go_to_left").astype(np.bool_)
        self.left = cat("left")
        self.right = cat("right")
        self.is_leaf = cat("is_leaf").astype(np.bool_)
        self.value = cat("value").astype(np.float64)
        self.is_cat = cat("is_categorical").astype(np.bool_)
        self.bitset_idx = cat("bitset_idx")
        raw = [b for b in bitsets if len(b)]
        self.raw_bitsets = np.ascontiguousarray(np.concatenate(raw) if raw else
                                                np.zeros((1, 8), np.uint32))
        known, f_idx_map = booster._bin_mapper.make_known_categories_bitsets()
        self.known_bitsets = np.ascontiguousarray(known, dtype=np.uint32)
        self.f_idx_map = np.asarray(f_idx_map, dtype=np.int64)
        self.roots = np.asarray(roots, dtype=np.int64)

    def _build_quickscorer(self) -> bool:
        """Leaf bits, split masks and per-program masks; False if a tree has too many leaves."""
        n_trees = self.roots.shape[0]
        n_nodes = self.feature.shape[0]
        tree_of = np.empty(n_nodes, np.int64)
        mask = np.zeros(n_nodes, np.uint64)
        leaf_start = np.zeros(n_trees + 1, np.int64)
        leaf_values: list[float] = []
        for t, root in enumerate(self.roots):
            leaves: list[int] = []
            below: dict[int, list[int]] = {}

            # called only within this iteration; the defaults bind this tree's containers
            def walk(j: int, t: int = t, leaves: list[int] = leaves,
                     below: dict[int, list[int]] = below) -> list[int]:
                tree_of[j] = t
                if self.is_leaf[j]:
                    leaves.append(j)
                    return [len(leaves) - 1]
                got = walk(int(self.left[j]), t, leaves, below)
                below[j] = got
                return got + walk(int(self.right[j]), t, leaves, below)

            walk(int(root))
            if len(leaves) > MAX_LEAVES:
                return False
            for j, left_leaves in below.items():
                m = (1 << 64) - 1
                for b in left_leaves:
                    m &= ~(1 << b)
                mask[j] = np.uint64(m)
            leaf_start[t + 1] = leaf_start[t] + len(leaves)
            leaf_values.extend(float(self.value[j]) for j in leaves)
        self.tree_of, self.mask = tree_of, mask
        self.leaf_start = leaf_start
        self.leaf_value = np.asarray(leaf_values, np.float64)
        self.internal = np.flatnonzero(~self.is_leaf).astype(np.int64)
        is_program = np.ones(len(FEATURE_NAMES), np.bool_)
        for name in (*APPLICANT_ONLY, *PER_REQUEST):
            is_program[COL[name]] = False
        self._is_program = is_program
        self.program_masks = {}
        for typ, X in self.base.items():
            out = np.empty((X.shape[0], n_trees), np.uint64)
            _program_masks(X, self.internal, tree_of, self.feature, self.threshold, self.mgl,
                           self.is_cat, self.bitset_idx, mask, self.raw_bitsets,
                           self.known_bitsets, self.f_idx_map, is_program, n_trees, out)
            self.program_masks[typ] = out
        # per-request features: their splits sorted by threshold, and those failing on NaN
        var_start, nan_start = [0], [0]
        thr, trees, masks, nan_trees, nan_masks = [], [], [], [], []
        for name in PER_REQUEST:
            f = COL[name]
            nodes = self.internal[self.feature[self.internal] == f]
            if self.is_cat[nodes].any():
                return False
            order = nodes[np.argsort(self.threshold[nodes], kind="stable")]
            thr.extend(self.threshold[order])
            trees.extend(tree_of[order])
            masks.extend(mask[order])
            var_start.append(len(thr))
            fails_on_nan = nodes[~self.mgl[nodes]]
            nan_trees.extend(tree_of[fails_on_nan])
            nan_masks.extend(mask[fails_on_nan])
            nan_start.append(len(nan_trees))
        self.var_start = np.asarray(var_start, np.int64)
        self.var_thr = np.asarray(thr, np.float64)
        self.var_tree = np.asarray(trees, np.int64)
        self.var_mask = np.asarray(masks, np.uint64)
        self.nan_start = np.asarray(nan_start, np.int64)
        self.nan_tree = np.asarray(nan_trees, np.int64)
        self.nan_mask = np.asarray(nan_masks, np.uint64)
        self._applicant_mask = np.empty(n_trees, np.uint64)
        # masks of the per-request splits (other than the always-varying margins) that fail at
        # their default values: not in-state, not in-region, no signal (own signal rate missing)
        default = np.full(n_trees, np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64)
        for v, x in ((3, 0.0), (4, 0.0), (5, 0.0), (6, np.nan)):
            if np.isnan(x):
                sl = slice(self.nan_start[v], self.nan_start[v + 1])
                pairs = zip(self.nan_tree[sl], self.nan_mask[sl], strict=True)
            else:
                sl = slice(self.var_start[v], self.var_start[v + 1])
                pairs = ((t, m) for t, m, th in zip(self.var_tree[sl], self.var_mask[sl],
                                                    self.var_thr[sl], strict=True) if th < x)
            for t, m in pairs:
                default[t] &= m
        self._default_mask = default
        max_leaves = int(np.max(np.diff(leaf_start)))
        self.width = 32 if max_leaves <= 32 else 64
        if self.width == 32:  # keep the low 32 bits: leaves never use the others
            low = np.uint64(0xFFFFFFFF)
            for name in ("var_mask", "nan_mask", "_default_mask"):
                setattr(self, name, (getattr(self, name) & low).astype(np.uint32))
            self.program_masks = {t: (m & low).astype(np.uint32)
                                  for t, m in self.program_masks.items()}
            self.mask32 = (self.mask & low).astype(np.uint32)
            self._applicant_mask = np.empty(n_trees, np.uint32)
        return True

    @staticmethod
    def _calibration_params(model: MatchModel) -> tuple[str, Any]:
        cal = model.calibrator_
        if cal.method == "isotonic":
            return "isotonic", (np.asarray(cal.iso_.X_thresholds_, float),
                                np.asarray(cal.iso_.y_thresholds_, float))
        if cal.method == "sigmoid":
            return "sigmoid", (float(cal.lr_.coef_[0, 0]), float(cal.lr_.intercept_[0]))
        return "none", None

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        method, params = self._calibration
        if method == "isotonic":
            x, y = params
            return np.interp(p, x, y)
        if method == "sigmoid":
            a, b = params
            z = np.log(np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR) /
                       (1 - np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR)))
            return 1.0 / (1.0 + np.exp(-(a * z + b)))
        return p

    def score(self, applicant: dict[str, Any], signals: dict[str, str] | None = None,
              rows: np.ndarray | None = None) -> np.ndarray:
        """q for every program (or ``rows`` of them) for one validated applicant record."""
        typ = applicant["applicant_type"]
        step2 = float(applicant["step2_ck"])
        # the applicant's own values, in the booster's column order (row 0 carries the type code)
        values = self.base[typ][0].copy()
        values[COL["step2_ck"]] = step2
        years = float(applicant["season"]) - float(applicant["graduation_year"])
        values[COL["years_since_graduation"]] = years
        values[COL["usce_months"]] = float(applicant.get("usce_months", 0))
        values[COL["publications"]] = float(applicant.get("publications", 0))
        values[COL["needs_visa"]] = 1.0 if applicant.get("needs_visa") else 0.0
        # the per-request columns, for the programs asked about
        sel = slice(None) if rows is None else rows
        n = self.n_programs if rows is None else len(rows)
        # scratch arrays are per call, never shared on self: one scorer serves many threads
        # (tests/test_concurrency.py); they cost microseconds
        Xv = np.empty((n, len(PER_REQUEST)))
        Xv[:, 0] = step2 - self.typical_step2[sel]
        Xv[:, 1] = step2 - self.step2_minimum[sel]
        Xv[:, 2] = self.graduation_cutoff[sel] - years
        home = applicant.get("home_state")
        if home is None:
            Xv[:, 3] = 0.0
            Xv[:, 4] = 0.0
        else:
            Xv[:, 3] = self.state_code[sel] == self._state_codes.get(home, -1)
            Xv[:, 4] = self.region_code[sel] == self._region_codes.get(STATE_REGION.get(home), -1)
        Xv[:, 5] = 0.0
        Xv[:, 6] = np.nan
        if signals:
            where = pd.Index(self.program_index[sel]) if rows is not None else self.program_index
            idx = where.get_indexer(list(signals))
            full_idx = self.program_index.get_indexer(list(signals))
            for i, fi, kind in zip(idx, full_idx, signals.values(), strict=True):
                if i >= 0:
                    Xv[i, 5] = SIGNAL_CODES[kind]
                    Xv[i, 6] = self.signal_rates[kind][fi]
        if not self.quick:
            X = np.ascontiguousarray(self.base[typ][sel])
            for k, c in enumerate(self._var_cols):
                X[:, c] = Xv[:, k]
            for c in np.flatnonzero(self._is_applicant):
                X[:, c] = values[c]
            left, right = np.empty_like(self._left), np.empty_like(self._right)
            roots = np.empty_like(self._roots)
            _specialise(self.roots, self.feature, self.threshold, self.mgl, self.left,
                        self.right, self.is_leaf, self.is_cat, self.bitset_idx, self.raw_bitsets,
                        self.known_bitsets, self.f_idx_map, values, self._is_applicant,
                        left, right, roots)
            out = np.empty(len(X))
            _raw_scores(X, roots, self.feature, self.threshold, self.mgl, left,
                        right, self.is_leaf, self.value, self.is_cat, self.bitset_idx,
                        self.raw_bitsets, self.known_bitsets, self.f_idx_map, self.baseline,
                        out)
            return self._finish(out, applicant, rows)
        applicant_mask = np.empty_like(self._applicant_mask)
        _applicant_masks(values, self.internal, self.tree_of, self.feature, self.threshold,
                         self.mgl, self.is_cat, self.bitset_idx,
                         self.mask32 if self.width == 32 else self.mask, self.raw_bitsets,
                         self.known_bitsets, self.f_idx_map, self._is_applicant,
                         self.roots.shape[0], applicant_mask)
        pm = self.program_masks[typ]
        if rows is not None:
            pm = np.ascontiguousarray(pm[rows])
        out = np.empty(len(Xv))
        default_row = (Xv[:, 3] == 0) & (Xv[:, 4] == 0) & (Xv[:, 5] == 0) & np.isnan(Xv[:, 6])
        _quickscore(Xv, pm, applicant_mask, self._default_mask, default_row,
                    ALWAYS_VARYING, self.var_start, self.var_thr, self.var_tree, self.var_mask,
                    self.nan_start, self.nan_tree, self.nan_mask, self.leaf_start, self.leaf_value,
                    _DEBRUIJN_TABLE[self.width], np.uint64(_DEBRUIJN[self.width][0]),
                    np.uint64(_DEBRUIJN[self.width][1]), np.uint64(_DEBRUIJN[self.width][2]),
                    self.baseline, out)
        return self._finish(out, applicant, rows)

    def _finish(self, raw: np.ndarray, applicant: dict[str, Any], rows: np.ndarray | None
                ) -> np.ndarray:
        q = self._calibrate(1.0 / (1.0 + np.exp(-raw)))
        q = np.clip(q, PROB_FLOOR, 1 - PROB_FLOOR)
        if applicant.get("needs_visa"):
            ok = self.visa_ok if rows is None else self.visa_ok[rows]
            q = np.where(ok, q, 0.0)
        return q


__all__ = ["FastScorer", "APPLICANT_INPUTS"]
