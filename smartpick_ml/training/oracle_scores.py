"""The oracle's q for the validation rows: the floor every model is measured against (simulated
seasons only; NaN for real data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import TrainConfig, load_simulate_config
from smartpick_ml.data.io import frame_hash, write_parquet_atomic
from smartpick_ml.modelling.labels import LABEL


def oracle_column(cfg: TrainConfig, tables: dict[str, pd.DataFrame], val: pd.DataFrame,
                  progress: Callable[[str], None]) -> tuple[np.ndarray, dict[str, float]]:
    """Oracle q for the validation rows (cached by data hash), or NaN for real data."""
    outcomes = tables["program_outcomes"]
    season = cfg.data.validation_season
    if outcomes is None or not (outcomes["season"] == season).any():
        return np.full(len(val), np.nan), {}
    from smartpick_ml.simulation.oracle import oracle_error_bound, oracle_for_season

    sim = load_simulate_config(cfg.data.simulate_config)
    apps = tables["applications"]
    key = frame_hash(apps[apps["season"] == season][["applicant_id", "program_id", "signal"]])
    r = cfg.evaluation.oracle_replicates
    cache = Path(cfg.data.processed_dir) / f"oracle_{season}_{key[:12]}_r{r}.parquet"
    if cache.exists():
        oracle = pd.read_parquet(cache)
    else:
        progress(f"oracle: {r} re-drawn seasons")
        oracle = oracle_for_season(tables["applicants"], tables["programs"], apps, outcomes,
                                   season, sim.params, r, sim.seed,
                                   progress=lambda i: progress(f"re-drawn season {i}/{r} (oracle)"))
        write_parquet_atomic(oracle, cache)
    merged = val[["applicant_id", "program_id"]].merge(
        oracle[["applicant_id", "program_id", "oracle_q", "oracle_se"]],
        on=["applicant_id", "program_id"], how="left")
    q = merged["oracle_q"].to_numpy(float)
    bound = oracle_error_bound(val[LABEL].to_numpy(float), q, merged["oracle_se"].to_numpy(float),
                               r)
    return q, {"oracle_replicates": r, "oracle_brier_mc_error": bound.brier_mc_error,
               "oracle_brier_mc_relative": bound.brier_relative_error,
               "oracle_log_loss_mc_error": bound.log_loss_mc_error,
               "oracle_log_loss_mc_relative": bound.log_loss_relative_error}
