"""Diagnostic (issue #4): which extra information moves the booster, and the logistic baseline?

The model is judged against the oracle (the simulator's true q) and against a logistic regression
on the same features. This rebuilds the run's pairs and splits from the config (the same rows as
``make run``), fits the booster with the config's ``[model]`` settings (``MatchModel.new_booster``:
early stopping on the applicant-grouped hold-out; no calibration, no negative sampling) and the
logistic (``modelling.baselines.logistic_on_features``) on several feature sets, and prints
each one's raw validation log-loss, the booster's gain over the logistic, and where the oracle is
known, what "10 % better than the logistic" would require, as a multiple of the oracle's log-loss:

- the model's pair features;
- without the two logit transforms (``logit_rate_own_type``, ``rate_img_vs_md``): the booster is
  blind to monotone transforms, so this shows how much the logistic owes to them;
- + program history, from the training seasons' applications of *all* applicants (no labels):
  per program and applicant type, the applicant's margin over that type's mean Step 2 CK,
  log(1 + USCE months), log(1 + publications) and years since graduation, that type's
  applications per season, and the program's applications per position;
- + the number of applications the applicant sends (their own list: the oracle knows it);
- both.

None of these extra columns is a model feature; this measures what they would be worth.

    .venv/bin/python scripts/diagnose_information.py [--config pipelines/train.toml]
        [--rows 600000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import load_train_config
from smartpick_ml.contracts.numeric import log_loss
from smartpick_ml.modelling.baselines import logistic_on_features
from smartpick_ml.modelling.features import CATEGORICAL_FEATURES, FEATURE_NAMES, PairFeatures
from smartpick_ml.modelling.labels import LABEL
from smartpick_ml.modelling.model import MatchModel
from smartpick_ml.training.oracle_scores import oracle_column
from smartpick_ml.training.splits import interviewed_mask, load_splits

LOGIT_TRANSFORMS = ["logit_rate_own_type", "rate_img_vs_md"]
POOL = ["pool_step2_margin", "pool_usce_margin", "pool_publications_margin", "pool_years_margin",
        "pool_applications", "applications_per_position"]
SENT = ["applications_sent"]


def applicant_strength_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """The observed parts of an applicant's strength, on the scale the margins use."""
    return pd.DataFrame({
        "step2": frame["step2_ck"].to_numpy(float),
        "usce": np.log1p(frame["usce_months"].to_numpy(float)),
        "publications": np.log1p(frame["publications"].to_numpy(float)),
        "years": (frame["season"] - frame["graduation_year"]).to_numpy(float)})


def program_history(tables: dict[str, pd.DataFrame], seasons: list[int]) -> tuple[pd.DataFrame,
                                                                                   pd.Series]:
    """Per program x applicant type: mean strength parts of its applicants and applications per
    season; per program: applications per position (training seasons only)."""
    apps = tables["applications"]
    apps = apps[apps["season"].isin(seasons)].merge(tables["applicants"], on=["applicant_id",
                                                                              "season"])
    parts = applicant_strength_parts(apps).assign(program_id=apps["program_id"].to_numpy(),
                                                  applicant_type=apps["applicant_type"].to_numpy())
    pool = parts.groupby(["program_id", "applicant_type"]).agg(
        step2=("step2", "mean"), usce=("usce", "mean"), publications=("publications", "mean"),
        years=("years", "mean"), applications=("step2", "size")).reset_index()
    pool["applications"] /= len(seasons)
    outcomes = tables["program_outcomes"]
    positions = outcomes[outcomes["season"].isin(seasons)].groupby("program_id")["positions"].mean()
    per_position = (apps.groupby("program_id").size() / len(seasons)) / positions
    return pool, per_position.rename("applications_per_position")


def with_extras(X: pd.DataFrame, pairs: pd.DataFrame, pool: pd.DataFrame,
                per_position: pd.Series) -> pd.DataFrame:
    X = X.copy()
    m = pairs[["program_id", "applicant_type"]].merge(pool, on=["program_id", "applicant_type"],
                                                      how="left")
    own = applicant_strength_parts(pairs)
    for part, name in (("step2", "pool_step2_margin"), ("usce", "pool_usce_margin"),
                       ("publications", "pool_publications_margin"),
                       ("years", "pool_years_margin")):
        X[name] = own[part].to_numpy() - m[part].to_numpy()
    X["pool_applications"] = m["applications"].to_numpy()
    X["applications_per_position"] = pairs["program_id"].map(per_position).to_numpy(float)
    X["applications_sent"] = pairs.groupby(["season", "applicant_id"])["program_id"].transform(
        "size").to_numpy(float)
    return X


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="pipelines/train.toml")
    ap.add_argument("--rows", type=int, default=600_000, help="booster training rows (sampled)")
    ap.add_argument("--logistic-rows", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_train_config(args.config)
    tables, splits = load_splits(cfg)
    tr, ho, va = splits.train, splits.holdout, splits.validation
    features = PairFeatures().fit(tr, interviewed=interviewed_mask(tr))
    pool, per_position = program_history(tables, list(cfg.data.train_seasons))
    X_tr, X_ho, X_va = (with_extras(features.transform(s), s, pool, per_position)
                        for s in (tr, ho, va))
    y_tr, y_ho, y_va = (s[LABEL].to_numpy(np.int64) for s in (tr, ho, va))
    oracle_q, _ = oracle_column(cfg, tables, va, lambda m: print(m, flush=True))
    oracle = log_loss(y_va, oracle_q) if not np.isnan(oracle_q).any() else None
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(X_tr), size=min(args.rows, len(X_tr)), replace=False))
    logistic_rows = np.sort(rng.choice(len(X_tr), size=min(args.logistic_rows, len(X_tr)),
                                       replace=False))
    settings = MatchModel(**cfg.model.model_dump(), random_state=args.seed)  # its booster's
    print(f"{len(X_tr):,} training pairs (booster {len(rows):,}, logistic "
          f"{len(logistic_rows):,}), {len(X_va):,} validation pairs"
          + (f"; oracle log-loss {oracle:.5f}" if oracle else ""))
    base = list(FEATURE_NAMES)
    sets = {"pair features": base,
            "- logit transforms": [c for c in base if c not in LOGIT_TRANSFORMS],
            "+ program history": base + POOL,
            "+ applications sent": base + SENT,
            "+ both": base + POOL + SENT}
    for name, cols in sets.items():
        t = time.perf_counter()
        booster = settings.new_booster(cols).fit(X_tr.iloc[rows][cols], y_tr[rows],
                                                 X_val=X_ho[cols], y_val=y_ho)
        numeric = [c for c in cols if c not in CATEGORICAL_FEATURES]
        logistic = logistic_on_features(numeric, args.seed).fit(
            X_tr.iloc[logistic_rows][cols], y_tr[logistic_rows])
        b = log_loss(y_va, booster.predict_proba(X_va[cols])[:, 1])
        lg = log_loss(y_va, logistic.predict_proba(X_va[cols])[:, 1])
        needs = (f"   10 % better needs {0.9 * lg:.5f} = {0.9 * lg / oracle:.3f} x oracle "
                 f"(booster at {b / oracle:.3f} x)" if oracle else "")
        print(f"{name:<22} booster {b:.5f} ({booster.n_iter_} trees)   logistic {lg:.5f}   "
              f"gain {1 - b / lg:.1%}{needs}   [{time.perf_counter() - t:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
