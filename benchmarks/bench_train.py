"""Benchmark: train the model on one full-scale simulated season (goal <= 10 min on 2 cores).

Uses the tables in data/raw/ (run `make run` first). Trains on every applicant of the season before
the validation season, holds out 20 % of them (grouped) for early stopping and calibration, and
prints the fit time beside the baseline measured in the same run: the same fit on a quarter of
the applicants, so the ratio shows how training time grows with data. Model settings: the
``[model]`` section of ``pipelines/train.toml`` (what ``make run`` trains).
"""

from __future__ import annotations

import time

import pandas as pd

from smartpick_ml.contracts.config import load_train_config
from smartpick_ml.contracts.numeric import log_loss
from smartpick_ml.data.io import read_table
from smartpick_ml.modelling.features import build_pairs
from smartpick_ml.modelling.labels import LABEL
from smartpick_ml.modelling.model import MatchModel


def fit_on(pairs: pd.DataFrame, fraction: float) -> tuple[float, MatchModel, int]:
    ids = pairs["applicant_id"].drop_duplicates()
    keep = set(ids.sample(frac=fraction, random_state=0)) if fraction < 1 else set(ids)
    part = pairs[pairs["applicant_id"].isin(keep)]
    held = pd.util.hash_pandas_object(part["applicant_id"], index=False).to_numpy() % 5 == 0
    tr, ho = part[~held], part[held]
    t0 = time.perf_counter()
    settings = load_train_config("pipelines/train.toml").model.model_dump()
    model = MatchModel(**settings).fit(tr, tr[LABEL].to_numpy(), holdout_pairs=ho,
                             holdout_y=ho[LABEL].to_numpy(),
                             holdout_groups=ho["applicant_id"].to_numpy(),
                             interviewed=tr["interviewed"].to_numpy(bool))
    return time.perf_counter() - t0, model, len(part)


def main() -> None:
    tables = {t: read_table(f"data/raw/{t}.parquet", t)
              for t in ("programs", "applicants", "applications")}
    pairs = build_pairs(tables["applications"], tables["applicants"], tables["programs"])
    seasons = sorted(pairs["season"].unique())
    season, validation = seasons[-2], seasons[-1]
    train = pairs[pairs["season"] == season]
    val = pairs[pairs["season"] == validation].sample(n=300_000, random_state=0)
    base_t, _, base_rows = fit_on(train, 0.25)
    full_t, model, rows = fit_on(train, 1.0)
    loss = log_loss(val[LABEL].to_numpy(), model.predict_proba(val)[:, 1])
    print(f"season {season}: {rows:,} applications ({train['applicant_id'].nunique():,} "
          f"applicants), {model.n_iter_} trees, validation log-loss {loss:.4f}")
    print(f"training on the full season: {full_t:.0f} s   [goal <= 600 s]; baseline (a quarter "
          f"of the applicants, {base_rows:,} rows): {base_t:.0f} s; ratio {full_t / base_t:.1f}x "
          f"for {rows / base_rows:.1f}x the rows")


if __name__ == "__main__":
    main()
