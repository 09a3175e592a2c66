"""Diagnostic (issue #4): how much of the model's gap to the oracle is the applicant's own list?

The oracle knows every applicant's whole application list; q(a, p) as the planner uses it sees one
pair. In the simulator (as in the real Match) an applicant attends at most ``max_interviews``
interviews, so an applicant who sends many applications declines some invitations, and those
programs cannot rank them: q at one program falls with the number of applications sent. This adds
that count (``applications_sent``, per applicant and season) to the processed features that
``make run`` wrote (``data/processed/features.parquet``) and fits, with and without it, the
booster with the ``[model]`` settings of the config (``MatchModel.new_booster``: early stopping on
the applicant-grouped hold-out rows; no calibration, no negative sampling) and the logistic
baseline (``train.logistic_on_features``).
Prints raw validation log-loss for each and the model's gain over the logistic.

    .venv/bin/python scripts/diagnose_list_information.py [--config pipelines/train.toml]
        [--rows 600000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from smartpick_ml.config import load_train_config
from smartpick_ml.features import CATEGORICAL_FEATURES, FEATURE_NAMES
from smartpick_ml.model import MatchModel
from smartpick_ml.numeric import log_loss
from smartpick_ml.train import logistic_on_features

EXTRA = "applications_sent"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="pipelines/train.toml")
    ap.add_argument("--rows", type=int, default=600_000, help="training rows (sampled)")
    ap.add_argument("--logistic-rows", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_train_config(args.config)
    settings = MatchModel(**cfg.model.model_dump(), random_state=args.seed)  # its booster's
    df = pd.read_parquet(Path("data/processed/features.parquet"))
    df[EXTRA] = df.groupby(["season", "applicant_id"])["label"].transform("size").astype(float)
    for c in CATEGORICAL_FEATURES:
        df[c] = df[c].astype("category")
    train = df[df["split"] == "train"].sample(frac=1.0, random_state=args.seed)
    hold = df[df["split"] == "holdout"]
    val = df[df["split"] == "validation"]
    y_val = val["label"].to_numpy()
    print(f"{len(train):,} training rows (using {min(args.rows, len(train)):,}), "
          f"{len(val):,} validation rows")
    results = {}
    for name, cols in (("pair features", list(FEATURE_NAMES)),
                       (f"+ {EXTRA}", [*FEATURE_NAMES, EXTRA])):
        t = time.perf_counter()
        tr = train.iloc[:args.rows]
        gbm = settings.new_booster(cols).fit(tr[cols], tr["label"], X_val=hold[cols],
                                             y_val=hold["label"])
        numeric = [c for c in cols if c not in CATEGORICAL_FEATURES]
        lr = logistic_on_features(numeric, args.seed).fit(
            train.iloc[:args.logistic_rows][cols], train.iloc[:args.logistic_rows]["label"])
        g = log_loss(y_val, gbm.predict_proba(val[cols])[:, 1])
        lg = log_loss(y_val, lr.predict_proba(val[cols])[:, 1])
        results[name] = (g, lg)
        print(f"{name:<24} booster {g:.5f} ({gbm.n_iter_} trees)   logistic {lg:.5f}   "
              f"booster better by {1 - g / lg:.1%}   [{time.perf_counter() - t:.0f} s]",
              flush=True)
    (g0, l0), (g1, l1) = results.values()
    print(f"{EXTRA}: booster {g1 / g0 - 1:+.2%}, logistic {l1 / l0 - 1:+.2%}")


if __name__ == "__main__":
    main()
