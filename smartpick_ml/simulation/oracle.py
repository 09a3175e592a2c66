"""The truth oracle on saved season tables, and how much its own Monte-Carlo error can move a score.

The oracle's log-loss and Brier score on a season are the floor no model can beat on that data. Its
estimate is an average over ``R`` re-drawn seasons, so it carries Monte-Carlo noise of its own;
:func:`oracle_error_bound` measures what that noise can add to each score, so a report can show the
bound next to the score (goal: under 1 % of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import SimulationParams
from smartpick_ml.contracts.numeric import log_loss
from smartpick_ml.simulation.season import build_market_inputs, oracle_q

EPS = 1e-15


@dataclass(frozen=True)
class OracleScores:
    brier: float
    log_loss: float
    brier_mc_error: float  # expected increase of Brier from the oracle's own noise: mean(se^2)
    log_loss_mc_error: float  # second-order bias of log-loss from that noise (delta method)
    replicates: int

    @property
    def brier_relative_error(self) -> float:
        return self.brier_mc_error / self.brier if self.brier > 0 else 0.0

    @property
    def log_loss_relative_error(self) -> float:
        return self.log_loss_mc_error / self.log_loss if self.log_loss > 0 else 0.0


def oracle_for_season(applicants: pd.DataFrame, programs: pd.DataFrame,
                      applications: pd.DataFrame, program_outcomes: pd.DataFrame, season: int,
                      params: SimulationParams, replicates: int, seed: int,
                      progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Oracle q and its standard error for every application of ``season``.

    Returns ``applicant_id, program_id, season, oracle_q, oracle_se`` in the order of the season's
    rows in ``applications``.
    """
    a = applicants[applicants["season"] == season].reset_index(drop=True)
    ap = applications[applications["season"] == season].reset_index(drop=True)
    if len(a) == 0 or len(ap) == 0:
        raise ValueError(f"season {season}: no applicants or applications to score")
    outcomes = program_outcomes[program_outcomes["season"] == season]
    positions = (outcomes.set_index("program_id")["positions"]
                 .reindex(programs["program_id"]).fillna(0).to_numpy(np.int64))
    inputs = build_market_inputs(a, programs, ap, positions, params)
    res = oracle_q(inputs, np.arange(len(ap)), replicates, seed, progress)
    return pd.DataFrame({"applicant_id": ap["applicant_id"], "program_id": ap["program_id"],
                         "season": ap["season"], "oracle_q": res.q, "oracle_se":
                         res.standard_error})


def oracle_error_bound(y: np.ndarray, q: np.ndarray, se: np.ndarray,
                       replicates: int) -> OracleScores:
    """Scores of the oracle on labels ``y``, and what its Monte-Carlo noise can add to them.

    With q_hat = q + e, E[e] = 0, Var[e] = se^2: Brier rises by mean(se^2) in expectation; log-loss
    rises by mean(se^2 * (y / q^2 + (1 - y) / (1 - q)^2) / 2) to second order.
    """
    y = np.asarray(y, dtype=float)
    q = np.clip(np.asarray(q, dtype=float), EPS, 1 - EPS)
    se = np.asarray(se, dtype=float)
    brier = float(np.mean((q - y) ** 2))
    loss = log_loss(y, q, EPS)
    brier_err = float(np.mean(se**2))
    ll_err = float(np.mean(se**2 * (y / q**2 + (1 - y) / (1 - q) ** 2) / 2))
    return OracleScores(brier, loss, brier_err, ll_err, replicates)
