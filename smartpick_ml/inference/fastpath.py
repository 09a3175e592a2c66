"""The fast path: q of every program for one applicant, exactly as the model computes it.

``MatchModel.predict_proba`` builds a pandas frame, runs the feature transformer, and lets
scikit-learn walk every tree for every row. For one applicant most of that work repeats: the
program side of every feature never changes, and the applicant side is one value per request.
:class:`FastScorer` therefore

1. builds, once, the model's input matrix for every program (in the booster's own preprocessed
   column order, through the booster's own preprocessing, so categories are coded identically);
2. scores with QuickScorer bit masks (see below): each program's splits on program-only features
   are resolved once, at load, into one mask per (program, tree); per request the applicant's
   own splits give one mask per tree, and each per-request feature (the margins over the
   program's typical Step 2 CK and published screens, home state, signals) one *prefix-table*
   row per tree -- the AND of every split it fails, found by a binary search over the feature's
   distinct thresholds. Programs sharing both screens share their screen masks (few groups), so
   a typical row costs three loads, two ANDs and a trailing-zero count per tree;
3. sums the exit leaves' values in tree order from the baseline, as scikit-learn does (the raw
   score is bit-identical), sharing a request's rows with a helper thread per extra core;
4. applies the same calibration, probability floor and eligibility rules as the model.

A model the masks cannot hold (a tree of more than 64 leaves, a categorical per-request split)
falls back to walking the trees after *specialising* them on the applicant (``quick`` False).

The booster's trees come through :mod:`smartpick_ml.inference.sklearn_trees`, the one module that
reads scikit-learn's internals. Every scorer checks itself when built: made-up applicants scored
both ways must agree with ``predict_proba`` to :data:`PARITY_TOLERANCE`, or it is not ``usable``.
``tests/inference/test_fastpath.py`` checks parity to 1e-6 on a full season of pairs, and each
prefix-table row against the split walk it replaces.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import pandas as pd
from numba.cpython.unsafe.numbers import trailing_zeros

from smartpick_ml.contracts.eligibility import (
    below_minimum,
    military_closed,
    past_cutoff,
    visa_blocked,
)
from smartpick_ml.contracts.pairs import APPLICANT_INPUTS, PROGRAM_INPUTS, applicant_pairs
from smartpick_ml.contracts.reference import APPLICANT_TYPES, STATE_REGION, TYPICAL_STEP2_CK
from smartpick_ml.inference.sklearn_trees import (
    FlatTrees,
    UnsupportedBooster,
    flat_trees,
    preprocessed,
)
from smartpick_ml.modelling.features import (
    FEATURE_NAMES,
    PGY1_ONLY_NAMES,
    SIGNAL_CODES,
    SIGNAL_RATE_COLUMN,
)
from smartpick_ml.modelling.model import PROB_FLOOR, MatchModel

log = logging.getLogger(__name__)
#: up to this many signals in a request, each is looked for among the rows asked about
_FEW_SIGNALS = 8

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: a preferred specialty no program is in: the stand-in for "this program is a backup"
_ELSEWHERE = "\x00elsewhere"
#: features that take one value per request (the applicant's own)
APPLICANT_ONLY = ("applicant_type", "step2_ck", "years_since_graduation", "usce_months",
                  "publications", "needs_visa", "applications")
#: features that depend on the applicant *and* the program, or on the request (signals)
PER_REQUEST = ("step2_vs_program", "step2_over_minimum", "years_within_cutoff", "same_state",
               "same_region", "signal", "rate_own_signal")
# (the first three differ on every row: margins over the program's typical score and published
# screens; the others only on in-state / in-region / signalled rows. ``_quickscore`` relies on
# this order.)
MAX_LEAVES = 64
#: trees of at most this many leaves use 32-bit masks (half the memory traffic of 64-bit)
NARROW_MASK_LEAVES = 32
#: rows per chunk when helper threads share a request: enough work to be worth handing over,
#: little enough that a late helper holds the request up only briefly
SHARE_CHUNK_ROWS = 512
#: the largest |q| difference from the model's own ``predict_proba`` a usable scorer may show
PARITY_TOLERANCE = 1e-9
#: programs of the catalog the parity check scores each made-up applicant at
PARITY_PROGRAMS = 25
#: made-up applicants for the parity check: every type, Step 2 CK and years since graduation
#: around the usual screens, one needing a visa (the others get a sampled program's home state)
PARITY_APPLICANTS: tuple[dict[str, Any], ...] = (
    {"applicant_type": "us_md_senior", "step2_ck": 262, "graduation_year": 2025, "season": 2025,
     "usce_months": 0, "publications": 5, "needs_visa": False, "home_state": None,
     "preferred_specialty": "Dermatology", "applications": 90},
    {"applicant_type": "us_do_senior", "step2_ck": 233, "graduation_year": 2024, "season": 2025,
     "usce_months": 2, "publications": 0, "needs_visa": False, "home_state": None,
     "preferred_specialty": None},
    {"applicant_type": "us_img", "step2_ck": 241, "graduation_year": 2018, "season": 2025,
     "usce_months": 8, "publications": 1, "needs_visa": False, "home_state": None,
     "preferred_specialty": "Internal Medicine", "applications": 12},
    {"applicant_type": "non_us_img", "step2_ck": 249, "graduation_year": 2021, "season": 2025,
     "usce_months": 14, "publications": 3, "needs_visa": True, "home_state": None,
     "preferred_specialty": "Family Medicine"},
)

_HELPERS_LOCK = threading.Lock()
_HELPERS: dict[str, Any] = {}


def _helper_pool() -> tuple[ThreadPoolExecutor | None, int]:
    """One helper thread per extra core (built on first use): ``(pool, n_helpers)``."""
    with _HELPERS_LOCK:
        if "pool" not in _HELPERS:
            cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count() or 1)
            _HELPERS["n"] = max(cores - 1, 0)
            _HELPERS["pool"] = (ThreadPoolExecutor(_HELPERS["n"], "smartpick-fastpath")
                                if _HELPERS["n"] else None)
        return _HELPERS["pool"], _HELPERS["n"]


def _share_rows(n: int, run: Callable[[int, int], None]) -> None:
    """Call ``run(a, b)`` (a nogil kernel) over chunks covering ``range(n)``: the calling thread
    and idle helpers take the next chunk in turn. Why not numba's ``prange``: its OpenMP split is
    fixed, so on a busy machine every request waits for its slowest (descheduled) thread, and is
    slower than on one thread. Taking chunks in turn, a late helper costs at most one chunk.
    Helpers are limited by ``numba.get_num_threads()`` (1: all on the calling thread)."""
    pool, n_helpers = _helper_pool()
    n_helpers = min(n_helpers, numba.get_num_threads() - 1, n // SHARE_CHUNK_ROWS - 1)
    if pool is None or n_helpers < 1:
        run(0, n)
        return
    bounds = list(range(0, n, SHARE_CHUNK_ROWS)) + [n]
    counter = itertools.count()  # next() is atomic under the GIL: each chunk is taken once

    def work() -> None:
        for i in iter(counter.__next__, None):
            if i >= len(bounds) - 1:
                return
            run(bounds[i], bounds[i + 1])

    try:
        futures = [pool.submit(work) for _ in range(n_helpers)]
    except RuntimeError:  # the interpreter is shutting down: no new helper work
        futures = []
    work()
    for f in futures:
        if not f.cancel():  # started: it is finishing its last chunk
            f.result()


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


@numba.njit(cache=True)
def _prefix_row(thresholds, thr_start, v, x):
    """Row of feature ``v``'s prefix table for value ``x``: the number of its distinct split
    thresholds ``< x`` (the splits that fail), offset to the table's first row; NaN has its own
    row after the last."""
    lo = thr_start[v]
    end = thr_start[v + 1]
    base = lo + 2 * v  # each feature's table has (distinct thresholds + 2) rows
    if np.isnan(x):
        return base + (end - lo) + 1
    start, hi = lo, end
    while lo < hi:  # binary search, as np.searchsorted(side="left")
        mid = (lo + hi) >> 1
        if thresholds[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return base + (lo - start)


@numba.njit(cache=True)
def _screen_masks(applicant_masks, default_masks, prefix, thresholds, thr_start, step2, years,
                  group_minimum, group_cutoff, out_default, out_other):
    """Per screen group (programs sharing the Step 2 minimum and graduation cutoff) the AND of
    the applicant's masks and both screens' masks: a row then needs one lookup for both; the
    ``out_default`` copy also folds in the default masks (not in-state, no signal)."""
    for g in range(group_minimum.shape[0]):
        a = _prefix_row(thresholds, thr_start, 1, step2 - group_minimum[g])
        b = _prefix_row(thresholds, thr_start, 2, group_cutoff[g] - years)
        for t in range(applicant_masks.shape[0]):
            m = applicant_masks[t] & prefix[a, t] & prefix[b, t]
            out_other[g, t] = m
            out_default[g, t] = m & default_masks[t]


@numba.njit(cache=True, nogil=True)
def _quickscore(program_rows, program_masks, typical_step2, step2, screen_group, screen_default,
                screen_other, X, default_row, prefix, thresholds, thr_start, leaf_values,
                baseline, out):
    """Exit leaves by bit masks. Per row and tree: the program's mask, its screen group's mask
    (applicant and screens folded in), one prefix-table row for the margin over the program's
    typical Step 2 CK, and on non-default rows (in-state, signalled) one row per other per-request
    column of ``X``; the exit leaf is the lowest set bit."""
    n_trees = leaf_values.shape[0]
    for r in range(program_rows.shape[0]):
        p = program_rows[r]
        i0 = _prefix_row(thresholds, thr_start, 0, step2 - typical_step2[p])
        g = screen_group[p]
        total = baseline  # trees added in order from the baseline, as scikit-learn sums them
        if default_row[r]:
            for t in range(n_trees):
                m = program_masks[p, t] & screen_default[g, t] & prefix[i0, t]
                total += leaf_values[t, trailing_zeros(m)]
        else:
            i3 = _prefix_row(thresholds, thr_start, 3, X[r, 3])
            i4 = _prefix_row(thresholds, thr_start, 4, X[r, 4])
            i5 = _prefix_row(thresholds, thr_start, 5, X[r, 5])
            i6 = _prefix_row(thresholds, thr_start, 6, X[r, 6])
            for t in range(n_trees):
                m = (program_masks[p, t] & screen_other[g, t] & prefix[i0, t] & prefix[i3, t]
                     & prefix[i4, t] & prefix[i5, t] & prefix[i6, t])
                total += leaf_values[t, trailing_zeros(m)]
        out[r] = total


class FastScorer:
    """Exact, fast q for one applicant against a fixed set of programs.

    Built for one model and catalog, it ends its build by scoring made-up applicants both ways
    (``parity_gap``: the largest difference from the model's own ``predict_proba``); ``usable``
    is False when that exceeds :data:`PARITY_TOLERANCE`, and the caller should then score through
    ``predict_proba`` (:func:`usable_fast_scorer` does that check for it).
    """

    def __init__(self, model: MatchModel, programs: pd.DataFrame):
        self.model = model
        self.programs = programs.reset_index(drop=True)
        self._adopt_trees(flat_trees(model.booster_))
        block = self.programs[[c for c in PROGRAM_INPUTS if c in self.programs.columns]]
        self.n_programs = len(block)
        self._build_program_matrices(block)
        self._read_program_fields(block)
        self._mark_feature_roles()
        self._calibration = self._calibration_params(model)
        self.quick = self._build_quickscorer()
        self.parity_gap = self._parity_gap()
        self.usable = self.parity_gap <= PARITY_TOLERANCE
        if not self.usable:
            log.warning("fast path disagrees with the model's predict_proba (max |dq| = %.3g, "
                        "tolerance %g): not usable", self.parity_gap, PARITY_TOLERANCE)

    # ------------------------------------------------------------------ build

    def _adopt_trees(self, trees: FlatTrees) -> None:
        """Keep the booster's flat trees as the arrays the kernels take."""
        self.feature, self.threshold = trees.feature, trees.threshold
        self.mgl, self.is_cat, self.bitset_idx = (trees.missing_go_to_left, trees.is_categorical,
                                                  trees.bitset_idx)
        self.left, self.right, self.is_leaf = trees.left, trees.right, trees.is_leaf
        self.value, self.roots, self.baseline = trees.value, trees.roots, trees.baseline
        self.raw_bitsets, self.known_bitsets = trees.raw_bitsets, trees.known_bitsets
        self.f_idx_map = trees.f_idx_map

    def _build_program_matrices(self, block: pd.DataFrame) -> None:
        """The model's input matrix of every program, once per applicant type (type-specific rate
        columns and type code) and per answer to "is the program outside the applicant's
        preferred specialty?", in the booster's preprocessed columns; and each program's typical
        Step 2 CK."""
        self.base: dict[str, np.ndarray] = {}
        self.base_outside: dict[str, np.ndarray] = {}
        self.type_code: dict[str, float] = {}
        self._typical_applications = dict(getattr(self.model.features_,
                                                  "typical_applications_", {}))
        for typ in APPLICANT_TYPES:
            for preferred, store in ((None, self.base), (_ELSEWHERE, self.base_outside)):
                store[typ], X = self._type_matrix(block, typ, preferred)
            self.type_code[typ] = float(self.base[typ][0, COL["applicant_type"]])
            if typ == APPLICANT_TYPES[0]:
                # step2_vs_program is the stand-in's Step 2 CK minus the program's typical one
                self.typical_step2 = TYPICAL_STEP2_CK - X["step2_vs_program"].to_numpy(float)
        self._block = block
        self._variants: dict[tuple[str, str, str, bool], np.ndarray] = {}

    def _type_matrix(self, block: pd.DataFrame, typ: str, preferred: str | None
                     ) -> tuple[np.ndarray, pd.DataFrame]:
        """The booster's input matrix of ``block``'s programs for a stand-in applicant of type
        ``typ`` (every request overwrites the applicant's own columns), and its features."""
        n = len(block)
        dummy = pd.DataFrame({"applicant_type": [typ] * n, "step2_ck": TYPICAL_STEP2_CK,
                              "graduation_year": 2024, "season": 2025, "usce_months": 0,
                              "publications": 0, "needs_visa": False, "home_state": None,
                              "preferred_specialty": preferred}, index=block.index)
        pairs = pd.concat([dummy, block], axis=1)
        pairs["signal"] = "none"
        X = self.model.features_.transform(pairs)
        return preprocessed(self.model.booster_, X), X

    def _variant_matrix(self, column: str, values: np.ndarray, typ: str, outside: bool
                        ) -> np.ndarray:
        """The type's program matrix with one program input replaced by ``values`` across the
        catalog, built once per column, values and type (about 15 ms each)."""
        key = (column, hashlib.sha1(values.tobytes()).hexdigest(), typ, outside)
        matrix = self._variants.get(key)
        if matrix is None:
            block = self._block.assign(**{column: values})
            matrix = self._type_matrix(block, typ, _ELSEWHERE if outside else None)[0]
            self._variants[key] = matrix  # a race builds it twice, never wrongly
        return matrix

    def _read_program_fields(self, block: pd.DataFrame) -> None:
        """The program fields a request is compared with: published screens (NaN: none stated),
        state and region codes, signal rates, visa sponsorship."""
        n = len(block)
        self.step2_minimum, self.graduation_cutoff = (
            pd.to_numeric(block[col], errors="coerce").to_numpy(float) if col in block
            else np.full(n, np.nan) for col in ("step2_minimum", "max_years_since_graduation"))
        self.state = block["state"].to_numpy(dtype=object)
        self.region = pd.Series(self.state).map(STATE_REGION).to_numpy(dtype=object)
        self._state_codes = {st: i for i, st in enumerate(STATE_REGION)}
        self._region_codes = {rg: i for i, rg in enumerate(dict.fromkeys(STATE_REGION.values()))}
        self.state_code = np.array([self._state_codes.get(x, -2) for x in self.state])
        self.region_code = np.array([self._region_codes.get(x, -2) for x in self.region])
        self._row_of = {pid: i for i, pid in enumerate(block["program_id"])}
        self.signal_rates = {kind: pd.to_numeric(block[col], errors="coerce").to_numpy(float)
                             if col in block else np.full(n, np.nan)
                             for kind, col in SIGNAL_RATE_COLUMN.items()}
        self.visa_ok = ~visa_blocked(block.assign(needs_visa=True))
        self.open_to_civilians = ~military_closed(block)
        self.specialty = block["specialty"].to_numpy(dtype=object)
        self.pgy1_only = np.isin(self.specialty, list(PGY1_ONLY_NAMES))

    def _mark_feature_roles(self) -> None:
        """Which columns are the applicant's own, set per request, or the program's alone."""
        self._var_cols = [COL[name] for name in PER_REQUEST]
        self._is_applicant = np.zeros(len(FEATURE_NAMES), np.bool_)
        for name in APPLICANT_ONLY:
            self._is_applicant[COL[name]] = True
        self._is_program = np.ones(len(FEATURE_NAMES), np.bool_)
        for name in (*APPLICANT_ONLY, *PER_REQUEST):
            self._is_program[COL[name]] = False

    def _build_quickscorer(self) -> bool:
        """Leaf bits, split masks, per-program masks and prefix tables; False if a tree has more
        than ``MAX_LEAVES`` leaves or a per-request split is categorical (then the walk scores)."""
        leaves = self._leaf_bits()
        if leaves is None:
            return False
        self.internal = np.flatnonzero(~self.is_leaf).astype(np.int64)
        # the splits a request resolves once for the applicant
        self.applicant_nodes = self.internal[self._is_applicant[self.feature[self.internal]]]
        self.program_masks = {typ: self._program_split_masks(X) for typ, X in self.base.items()}
        self.program_masks_outside = {typ: self._program_split_masks(X)
                                      for typ, X in self.base_outside.items()}
        if not self._build_prefix_tables():
            return False
        self._default_mask = self._default_request_mask()
        self._group_programs_by_screens()
        self._build_leaf_value_table(*leaves)
        if self.width == 32:
            self._narrow_masks()
        self.all_rows = np.arange(self.n_programs, dtype=np.int64)
        self.all_rows.flags.writeable = False
        return True

    def _leaf_bits(self) -> tuple[np.ndarray, list[float]] | None:
        """Each split's mask (``mask``: its left subtree's leaf bits cleared) and tree
        (``tree_of``); returns where each tree's leaves start and their values, or None if a tree
        has more than ``MAX_LEAVES`` leaves."""
        n_trees = self.roots.shape[0]
        self.tree_of = np.empty(self.feature.shape[0], np.int64)
        self.mask = np.zeros(self.feature.shape[0], np.uint64)
        leaf_start = np.zeros(n_trees + 1, np.int64)
        leaf_values: list[float] = []
        for t, root in enumerate(self.roots):
            leaves, below = self._walk_tree(int(root), t)
            if len(leaves) > MAX_LEAVES:
                return None
            for j, left_leaves in below.items():
                m = (1 << 64) - 1
                for b in left_leaves:
                    m &= ~(1 << b)
                self.mask[j] = np.uint64(m)
            leaf_start[t + 1] = leaf_start[t] + len(leaves)
            leaf_values.extend(float(self.value[j]) for j in leaves)
        return leaf_start, leaf_values

    def _walk_tree(self, root: int, t: int) -> tuple[list[int], dict[int, list[int]]]:
        """Tree ``t``'s leaves, left to right, and the leaf bits under each split's left child."""
        leaves: list[int] = []
        below: dict[int, list[int]] = {}

        def walk(j: int) -> list[int]:
            self.tree_of[j] = t
            if self.is_leaf[j]:
                leaves.append(j)
                return [len(leaves) - 1]
            got = walk(int(self.left[j]))
            below[j] = got
            return got + walk(int(self.right[j]))

        walk(root)
        return leaves, below

    def _program_split_masks(self, X: np.ndarray) -> np.ndarray:
        """Per (program, tree) of one type's matrix: the AND of the program-only splits failed."""
        n_trees = self.roots.shape[0]
        out = np.empty((X.shape[0], n_trees), np.uint64)
        _program_masks(X, self.internal, self.tree_of, self.feature, self.threshold, self.mgl,
                       self.is_cat, self.bitset_idx, self.mask, self.raw_bitsets,
                       self.known_bitsets, self.f_idx_map, self._is_program, n_trees, out)
        return out

    def _build_prefix_tables(self) -> bool:
        """One prefix table per per-request feature; False if one of its splits is categorical."""
        # A numeric split fails iff its threshold < x, so the failed splits of a feature are those
        # below x in threshold order, and their AND is one row of a table with a row per distinct
        # threshold (<= 255: the booster's bins): one lookup per tree instead of a walk over
        # every split below x. A last row holds the AND of the splits that send NaN right.
        n_trees = self.roots.shape[0]
        ones = np.uint64(0xFFFFFFFFFFFFFFFF)
        thresholds: list[np.ndarray] = []
        thr_start = [0]
        tables: list[np.ndarray] = []
        for name in PER_REQUEST:
            nodes = self.internal[self.feature[self.internal] == COL[name]]
            if self.is_cat[nodes].any():
                return False
            distinct = np.unique(self.threshold[nodes])
            # where each split's threshold sits among the distinct ones: it fails from row pos + 1
            pos = np.searchsorted(distinct, self.threshold[nodes])
            table = np.full((len(distinct) + 2, n_trees), ones, np.uint64)
            for row in range(1, len(distinct) + 1):
                table[row] = table[row - 1]
                for j in nodes[pos == row - 1]:
                    table[row, self.tree_of[j]] &= self.mask[j]
            for j in nodes[~self.mgl[nodes]]:
                table[-1, self.tree_of[j]] &= self.mask[j]
            thresholds.append(distinct)
            thr_start.append(thr_start[-1] + len(distinct))
            tables.append(table)
        self.thresholds = np.concatenate(thresholds).astype(np.float64)
        self.thr_start = np.asarray(thr_start, np.int64)
        self.prefix = np.concatenate(tables)
        return True

    def _default_request_mask(self) -> np.ndarray:
        """The masks of the per-request splits (other than the always-varying margins) that fail
        at their default values: not in-state, not in-region, no signal (own signal rate NaN)."""
        def row(v: int, x: float) -> int:
            return int(_prefix_row(self.thresholds, self.thr_start, v, x))

        return (self.prefix[row(3, 0.0)] & self.prefix[row(4, 0.0)]
                & self.prefix[row(5, 0.0)] & self.prefix[row(6, np.nan)])

    def _group_programs_by_screens(self) -> None:
        """Programs grouped by their published screens (few distinct pairs in a catalog)."""
        keys = pd.MultiIndex.from_arrays([self.step2_minimum, self.graduation_cutoff])
        self.screen_group = np.asarray(keys.factorize()[0], np.int64)
        first = np.unique(self.screen_group, return_index=True)[1]
        self.group_minimum = self.step2_minimum[first]
        self.group_cutoff = self.graduation_cutoff[first]

    def _build_leaf_value_table(self, leaf_start: np.ndarray, leaf_values: list[float]) -> None:
        """Leaf values by (tree, leaf bit), so the exit leaf's value is one 2-D lookup; and the
        mask width the largest tree needs."""
        n_trees = self.roots.shape[0]
        max_leaves = int(np.max(np.diff(leaf_start)))
        self.width = 32 if max_leaves <= NARROW_MASK_LEAVES else 64
        self.leaf_values = np.zeros((n_trees, self.width), np.float64)
        for t in range(n_trees):
            n_leaves = leaf_start[t + 1] - leaf_start[t]
            self.leaf_values[t, :n_leaves] = leaf_values[leaf_start[t]:leaf_start[t + 1]]
        self.mask_dtype = np.uint32 if self.width == 32 else np.uint64

    def _narrow_masks(self) -> None:
        """Keep the low 32 bits of every mask (leaves never use the others): half the bytes."""
        low = np.uint64(0xFFFFFFFF)
        self.prefix = (self.prefix & low).astype(np.uint32)
        self._default_mask = (self._default_mask & low).astype(np.uint32)
        self.program_masks = {t: (m & low).astype(np.uint32)
                              for t, m in self.program_masks.items()}
        self.program_masks_outside = {t: (m & low).astype(np.uint32)
                                      for t, m in self.program_masks_outside.items()}
        self.mask32 = (self.mask & low).astype(np.uint32)

    def _parity_gap(self) -> float:
        """The largest |q - the model's predict_proba| over :data:`PARITY_APPLICANTS` at a sample
        of the programs, with signals and in-state programs among them (inf if not finite)."""
        if self.n_programs == 0:
            return 0.0
        rows = np.random.default_rng(0).choice(
            self.n_programs, size=min(self.n_programs, PARITY_PROGRAMS), replace=False)
        ids = self.programs["program_id"].to_numpy()[rows]
        requests, frames = [], []
        for i, applicant in enumerate(PARITY_APPLICANTS):
            if applicant["home_state"] is None and not applicant["needs_visa"]:
                applicant = {**applicant, "home_state": self.state[rows[i % len(rows)]]}
            signals = {ids[(i + k) % len(ids)]: kind
                       for k, kind in enumerate(("signal", "gold", "silver"))}
            requests.append((applicant, signals))
            frames.append(applicant_pairs(applicant, self.programs.iloc[rows], signals))
        expected = self.model.predict_proba(pd.concat(frames, ignore_index=True))[:, 1]
        got = np.concatenate([self.score(a, s, rows) for a, s in requests])
        gap = np.abs(got - expected)
        return float(gap.max()) if np.isfinite(gap).all() else math.inf

    # ------------------------------------------------------------------ calibration

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

    # ------------------------------------------------------------------ scoring

    def score(self, applicant: dict[str, Any], signals: dict[str, str] | None = None,
              rows: np.ndarray | None = None) -> np.ndarray:
        """q for every program (or ``rows`` of them) for one validated applicant record."""
        step2 = float(applicant["step2_ck"])
        years = float(applicant["season"]) - float(applicant["graduation_year"])
        values = self._applicant_values(applicant, step2, years)
        request = self._request_columns(applicant, signals, rows)
        outside = self._outside_rows(applicant, rows)
        if self.quick:
            raw = self._raw_by_masks(applicant, values, request, step2, years, rows, outside)
        else:
            raw = self._raw_by_walk(applicant["applicant_type"], values, request, step2, years,
                                    rows, outside)
        return self._finish(raw, applicant, rows)

    def score_with_program_column(self, applicant: dict[str, Any],
                                  signals: dict[str, str] | None, rows: np.ndarray,
                                  column: str, values: np.ndarray) -> np.ndarray:
        """q at ``rows`` had every program's ``column`` been ``values`` (one per catalog row):
        what an explanation asks ("had this program a typical IMG share"). By the tree walk on
        program matrices built once per column and values, so an explanation costs a walk over
        the rows explained, not a pass through the model's feature step."""
        step2 = float(applicant["step2_ck"])
        years = float(applicant["season"]) - float(applicant["graduation_year"])
        typ = applicant["applicant_type"]
        values = np.ascontiguousarray(values, dtype=float)
        own = self._applicant_values(applicant, step2, years)
        request = self._request_columns(applicant, signals, rows)
        outside = self._outside_rows(applicant, rows)
        base = self._variant_matrix(column, values, typ, False)
        base_outside = (self._variant_matrix(column, values, typ, True) if outside is not None
                        else None)
        raw = self._raw_by_walk(typ, own, request, step2, years, rows, outside,
                                base=base, base_outside=base_outside)
        return self._finish(raw, applicant, rows)

    def _outside_rows(self, applicant: dict[str, Any], rows: np.ndarray | None
                      ) -> np.ndarray | None:
        """Which programs asked about lie outside the applicant's preferred specialty (and are
        no PGY-1 year); None if none do."""
        preferred = applicant.get("preferred_specialty")
        if preferred is None:
            return None
        sel = slice(None) if rows is None else rows
        outside = (self.specialty[sel] != preferred) & ~self.pgy1_only[sel]
        return outside if outside.any() else None

    def _applicant_values(self, applicant: dict[str, Any], step2: float, years: float
                          ) -> np.ndarray:
        """The applicant's own values, in the booster's column order (row 0 of the type's matrix
        carries the type code)."""
        values = self.base[applicant["applicant_type"]][0].copy()
        values[COL["step2_ck"]] = step2
        values[COL["years_since_graduation"]] = years
        values[COL["usce_months"]] = float(applicant.get("usce_months", 0))
        values[COL["publications"]] = float(applicant.get("publications", 0))
        values[COL["needs_visa"]] = 1.0 if applicant.get("needs_visa") else 0.0
        sent = applicant.get("applications")
        sent = np.nan if sent is None else float(sent)  # a served null arrives as NaN
        values[COL["applications"]] = (sent if not math.isnan(sent) else
                                       self._typical_applications.get(applicant["applicant_type"],
                                                                      np.nan))
        return values

    def _request_columns(self, applicant: dict[str, Any], signals: dict[str, str] | None,
                         rows: np.ndarray | None) -> np.ndarray:
        """The ``PER_REQUEST`` columns of the programs asked about; the margins (columns 0-2)
        are left unset: only the fallback walk reads them, and fills them itself."""
        sel = slice(None) if rows is None else rows
        n = self.n_programs if rows is None else len(rows)
        # scratch arrays are per call, never shared on self: one scorer serves many threads
        # (tests/system/test_concurrency.py)
        Xv = np.empty((n, len(PER_REQUEST)))
        home = applicant.get("home_state")
        if home is None:
            Xv[:, 3] = 0.0
            Xv[:, 4] = 0.0
        else:
            Xv[:, 3] = self.state_code[sel] == self._state_codes.get(home, -1)
            Xv[:, 4] = self.region_code[sel] == self._region_codes.get(STATE_REGION.get(home), -1)
        Xv[:, 5] = 0.0
        Xv[:, 6] = np.nan
        signals = signals or {}
        if rows is not None and len(signals) > _FEW_SIGNALS:
            # many signals (the planner asks for every program of a specialty signalled): the
            # signal of each catalog row once, then read at ``rows``, not a scan of ``rows`` per
            # signal
            code, rate = np.zeros(self.n_programs), np.full(self.n_programs, np.nan)
            for pid, kind in signals.items():
                fi = self._row_of.get(pid)
                if fi is not None:
                    code[fi], rate[fi] = SIGNAL_CODES[kind], self.signal_rates[kind][fi]
            Xv[:, 5], Xv[:, 6] = code[rows], rate[rows]
            return Xv
        # a handful: a dict lookup each, far fewer than a pandas get_indexer call is worth; a
        # program asked about twice in ``rows`` gets the signal on every row
        for pid, kind in signals.items():
            fi = self._row_of.get(pid)
            if fi is None:
                continue
            for i in ((fi,) if rows is None else np.flatnonzero(rows == fi)):
                Xv[i, 5] = SIGNAL_CODES[kind]
                Xv[i, 6] = self.signal_rates[kind][fi]
        return Xv

    def _raw_by_walk(self, typ: str, values: np.ndarray, Xv: np.ndarray, step2: float,
                     years: float, rows: np.ndarray | None,
                     outside: np.ndarray | None = None, base: np.ndarray | None = None,
                     base_outside: np.ndarray | None = None) -> np.ndarray:
        """Raw scores by walking the trees once specialised on the applicant (the fallback);
        ``base``/``base_outside``: other program matrices than the catalog's own."""
        sel = slice(None) if rows is None else rows
        base = self.base[typ] if base is None else base
        base_outside = self.base_outside[typ] if base_outside is None else base_outside
        Xv[:, 0] = step2 - self.typical_step2[sel]
        Xv[:, 1] = step2 - self.step2_minimum[sel]
        Xv[:, 2] = self.graduation_cutoff[sel] - years
        X = np.ascontiguousarray(base[sel])
        if outside is not None:
            X[outside] = base_outside[sel][outside]
        for k, c in enumerate(self._var_cols):
            X[:, c] = Xv[:, k]
        for c in np.flatnonzero(self._is_applicant):
            X[:, c] = values[c]
        left, right = np.empty_like(self.left), np.empty_like(self.right)
        roots = np.empty_like(self.roots)
        _specialise(self.roots, self.feature, self.threshold, self.mgl, self.left,
                    self.right, self.is_leaf, self.is_cat, self.bitset_idx, self.raw_bitsets,
                    self.known_bitsets, self.f_idx_map, values, self._is_applicant,
                    left, right, roots)
        out = np.empty(len(X))
        _raw_scores(X, roots, self.feature, self.threshold, self.mgl, left,
                    right, self.is_leaf, self.value, self.is_cat, self.bitset_idx,
                    self.raw_bitsets, self.known_bitsets, self.f_idx_map, self.baseline,
                    out)
        return out

    def _applicant_screen_masks(self, values: np.ndarray, step2: float, years: float
                                ) -> tuple[np.ndarray, np.ndarray]:
        """Per screen group, the applicant's own masks ANDed with both screens' masks: with the
        default masks folded in, and without (see ``_screen_masks``)."""
        n_trees = self.roots.shape[0]
        applicant_mask = np.empty(n_trees, self.mask_dtype)
        _applicant_masks(values, self.applicant_nodes, self.tree_of, self.feature, self.threshold,
                         self.mgl, self.is_cat, self.bitset_idx,
                         self.mask32 if self.width == 32 else self.mask, self.raw_bitsets,
                         self.known_bitsets, self.f_idx_map, self._is_applicant,
                         n_trees, applicant_mask)
        screen_default = np.empty((self.group_minimum.shape[0], n_trees), self.mask_dtype)
        screen_other = np.empty_like(screen_default)
        _screen_masks(applicant_mask, self._default_mask, self.prefix, self.thresholds,
                      self.thr_start, step2, years, self.group_minimum, self.group_cutoff,
                      screen_default, screen_other)
        return screen_default, screen_other

    def _raw_by_masks(self, applicant: dict[str, Any], values: np.ndarray, Xv: np.ndarray,
                      step2: float, years: float, rows: np.ndarray | None,
                      outside: np.ndarray | None = None) -> np.ndarray:
        """Raw scores by QuickScorer masks; programs outside the preferred specialty take their
        own program masks."""
        screen_masks = self._applicant_screen_masks(values, step2, years)
        typ = applicant["applicant_type"]
        program_rows = self.all_rows if rows is None else np.asarray(rows, np.int64)
        if outside is None:
            return self._quickscore_rows(applicant, Xv, program_rows, screen_masks,
                                         self.program_masks[typ])
        out = np.empty(len(Xv))
        for flag, masks in ((False, self.program_masks[typ]),
                            (True, self.program_masks_outside[typ])):
            part = np.flatnonzero(outside == flag)
            if len(part):
                out[part] = self._quickscore_rows(applicant, Xv[part], program_rows[part],
                                                  screen_masks, masks)
        return out

    def _quickscore_rows(self, applicant: dict[str, Any], Xv: np.ndarray,
                         program_rows: np.ndarray, screen_masks: tuple[np.ndarray, np.ndarray],
                         program_masks: np.ndarray) -> np.ndarray:
        """Raw scores of ``program_rows`` by QuickScorer masks, the rows shared with the helper
        threads."""
        screen_default, screen_other = screen_masks
        step2 = float(applicant["step2_ck"])
        default_row = (Xv[:, 3] == 0) & (Xv[:, 4] == 0) & (Xv[:, 5] == 0) & np.isnan(Xv[:, 6])
        out = np.zeros(len(Xv))
        if applicant.get("needs_visa"):
            # q is 0 wherever no visa is sponsored (``_finish``): score only the other rows
            keep = np.flatnonzero(self.visa_ok[program_rows])
            program_rows, Xv, default_row = program_rows[keep], Xv[keep], default_row[keep]
            kept = np.empty(len(keep))
        else:
            keep, kept = None, out

        def run(a: int, b: int) -> None:
            _quickscore(program_rows[a:b], program_masks, self.typical_step2, step2,
                        self.screen_group, screen_default, screen_other, Xv[a:b],
                        default_row[a:b], self.prefix, self.thresholds, self.thr_start,
                        self.leaf_values, self.baseline, kept[a:b])

        _share_rows(len(program_rows), run)
        if keep is not None:
            out[keep] = kept
        return out

    def _finish(self, raw: np.ndarray, applicant: dict[str, Any], rows: np.ndarray | None
                ) -> np.ndarray:
        q = self._calibrate(1.0 / (1.0 + np.exp(-raw)))
        q = np.clip(q, PROB_FLOOR, 1 - PROB_FLOOR)
        # the hard rules of ``contracts.eligibility``, as ``MatchModel.predict_proba`` applies them
        sel = slice(None) if rows is None else rows
        ok = self.open_to_civilians[sel]
        if applicant.get("needs_visa"):
            ok = ok & self.visa_ok[sel]
        years = float(applicant["season"]) - float(applicant["graduation_year"])
        ok = ok & ~below_minimum(float(applicant["step2_ck"]), self.step2_minimum[sel]) \
            & ~past_cutoff(years, self.graduation_cutoff[sel])
        return np.where(ok, q, 0.0)


def usable_fast_scorer(model: Any, programs: pd.DataFrame) -> FastScorer | None:
    """A :class:`FastScorer` for ``model`` on ``programs``, or None where the caller must score
    through ``predict_proba``: the model is not a :class:`MatchModel`, its booster's internals are
    not the ones the fast path reads, or the scorer disagrees with it (``usable`` False)."""
    if not isinstance(model, MatchModel):
        return None
    try:
        scorer = FastScorer(model, programs)
    except UnsupportedBooster as exc:
        log.warning("fast path not built: %s", exc)
        return None
    return scorer if scorer.usable else None


__all__ = ["FastScorer", "APPLICANT_INPUTS", "PARITY_TOLERANCE", "usable_fast_scorer"]
