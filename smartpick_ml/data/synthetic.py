"""Made-up applicants and pairs on a catalog: the input example stored with a model, docs, smoke
tests and benchmarks. No real applicant is ever used as an example."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from smartpick_ml.contracts.pairs import (
    APPLICANT_INPUTS,
    PAIR_INPUT_COLUMNS,
    PROGRAM_INPUTS,
    applicant_pairs,
)
from smartpick_ml.contracts.reference import APPLICANT_TYPES


def synthetic_pairs(n: int = 5, seed: int = 0) -> pd.DataFrame:
    """A few made-up applicant × program pairs with every model input: for MLflow input examples,
    docs and smoke tests. No real applicant is ever used as an example."""
    from smartpick_ml.data.catalog import synthetic_catalog

    rng = np.random.default_rng(seed)
    programs = synthetic_catalog(seed).sample(n=n, random_state=seed).reset_index(drop=True)
    rows = []
    for i in range(n):
        typ = APPLICANT_TYPES[i % len(APPLICANT_TYPES)]
        img = typ in ("us_img", "non_us_img")
        applicant = {"applicant_type": typ, "step2_ck": int(rng.integers(225, 265)),
                     "graduation_year": 2022 if img else 2025, "season": 2025,
                     "usce_months": int(rng.integers(0, 12)),
                     "publications": int(rng.integers(0, 6)),
                     "needs_visa": typ == "non_us_img",
                     "home_state": None if typ == "non_us_img" else "NY",
                     # in the program's specialty, or the program is their backup
                     "preferred_specialty": (programs["specialty"].iloc[i] if i % 2 == 0
                                             else "Internal Medicine"),
                     "applications": (90 if img else 45) + 5 * i}
        rows.append(applicant_pairs(applicant, programs.iloc[[i]]))
    return pd.concat(rows, ignore_index=True)


@functools.cache
def _synthetic_applicants() -> pd.DataFrame:
    """Made-up applicants of every type (``synthetic_pairs`` draws a catalog: build once)."""
    return synthetic_pairs(40, seed=0)[list(APPLICANT_INPUTS)]


def synthetic_catalog_pairs(programs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Made-up applicants against ``n`` programs of a real catalog, with signals and home states
    varied so every per-request feature moves: for serving tests and benchmarks."""
    rng = np.random.default_rng(seed)
    pool = _synthetic_applicants()
    pairs = pool.iloc[rng.integers(len(pool), size=n)].reset_index(drop=True)
    sample = programs.sample(n=n, random_state=seed).reset_index(drop=True)
    for c in PROGRAM_INPUTS:
        if c in sample.columns:
            pairs[c] = sample[c].to_numpy()
    pairs["signal"] = rng.choice(["none", "signal", "gold", "silver"], size=n)
    us = pairs["applicant_type"] != "non_us_img"
    pairs.loc[us, "home_state"] = np.where(rng.random(int(us.sum())) < 0.5,
                                           pairs.loc[us, "state"], "NY")
    return pairs[[c for c in PAIR_INPUT_COLUMNS if c in pairs.columns]]
