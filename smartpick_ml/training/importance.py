"""Permutation importance of the model's input columns on the validation season."""

from __future__ import annotations

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import TrainConfig
from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS
from smartpick_ml.modelling.model import MatchModel
from smartpick_ml.modelling.threads import one_openmp_thread


def permutation_importance_table(model: MatchModel, va: pd.DataFrame, y: np.ndarray,
                                 cfg: TrainConfig) -> pd.DataFrame:
    """Log-loss increase when each input column is shuffled (on a validation sample)."""
    from sklearn.inspection import permutation_importance


    rng = np.random.default_rng(cfg.data.seed)
    n = min(len(va), cfg.evaluation.importance_rows)
    idx = np.sort(rng.choice(len(va), size=n, replace=False))
    cols = [c for c in PAIR_INPUT_COLUMNS if c in va.columns and c != "program_id"]
    X = va.iloc[idx][[*cols, "program_id"]].reset_index(drop=True)
    # dozens of small predict calls: one OpenMP thread each, as a thread pool costs more to
    # wake than such a call takes
    with one_openmp_thread():
        res = permutation_importance(model, X, y[idx], scoring="neg_log_loss",
                                     n_repeats=cfg.evaluation.importance_repeats,
                                     random_state=cfg.data.seed)
    table = pd.DataFrame({"feature": X.columns, "importance_mean": res.importances_mean,
                          "importance_std": res.importances_std})
    table = table[table["feature"] != "program_id"]
    return table.sort_values("importance_mean", ascending=False).reset_index(drop=True)
