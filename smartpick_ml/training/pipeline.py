"""Stage 4 — the training run: data -> features -> model + baselines + oracle -> metrics -> MLflow.

:func:`run_training` executes one ``pipelines/*.toml`` config end to end:

1. check the config and the data before any work (missing files, empty seasons, one-class labels);
2. build pairs and labels (exact ``would_take`` in simulation, censored labels from real outcomes);
3. split by season (train on earlier seasons, validate on the latest) and, inside the training
   seasons, hold out applicants (never rows) for early stopping and calibration;
4. write the processed features with a manifest;
5. fit the model and two baselines (published-rate lookup; logistic regression);
6. score them and the oracle on the validation season: metrics by applicant type, per-applicant
   P(match) reliability, plots, permutation importance;
7. log everything to MLflow, register the model, and move the ``champion`` alias only if the new
   model beats the current champion on the same validation data; save the champion for services.

A failure anywhere leaves the previous champion, its alias and ``models/`` untouched.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import TrainConfig, load_simulate_config
from smartpick_ml.contracts.eligibility import visa_blocked
from smartpick_ml.contracts.errors import ConfigError, DataValidationError
from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS
from smartpick_ml.data.io import (
    read_table,
    sha256_file,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from smartpick_ml.modelling.baselines import RateLookupBaseline, logistic_baseline
from smartpick_ml.modelling.features import (
    FEATURE_NAMES,
    PairFeatures,
    build_pairs,
)
from smartpick_ml.modelling.labels import LABEL, training_labels
from smartpick_ml.modelling.model import MatchModel
from smartpick_ml.training import evaluate

log = logging.getLogger(__name__)
RAW_TABLES = ("programs", "applicants", "applications")
MODELS = ("model", "logistic", "lookup", "oracle")


@dataclass
class TrainResult:
    """What a training run produced, for the CLI, the report and tests."""

    metrics: pd.DataFrame
    applicant_reliability: pd.DataFrame
    model: MatchModel
    run_id: str | None
    model_version: str | None
    champion_decision: str
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data


def ensure_data(cfg: TrainConfig, progress: Callable[[str], None]) -> None:
    """Simulate the default seasons when asked to (or when tables are missing)."""
    raw = Path(cfg.data.raw_dir)
    missing = [t for t in (*RAW_TABLES, "program_outcomes")
               if not (raw / f"{t}.parquet").exists()]
    if cfg.data.simulate == "never":
        if any(t in missing for t in RAW_TABLES):
            raise ConfigError(f"data.simulate = 'never' but {raw} lacks: "
                              f"{', '.join(t for t in missing if t in RAW_TABLES)}")
        return
    if cfg.data.simulate == "always" or missing:
        from smartpick_ml.simulation.season import simulate_to_disk

        sim = load_simulate_config(cfg.data.simulate_config, output_dir=str(raw))
        needed = sorted({*cfg.data.train_seasons, cfg.data.validation_season})
        absent = [s for s in needed if s not in sim.seasons]
        if absent:
            sim = sim.model_copy(update={"seasons": sorted({*sim.seasons, *needed})})
        progress(f"simulating seasons {sim.seasons} at scale {sim.scale}")
        simulate_to_disk(sim, progress=progress)


def load_tables(cfg: TrainConfig) -> dict[str, pd.DataFrame]:
    raw = Path(cfg.data.raw_dir)
    tables = {t: read_table(raw / f"{t}.parquet", t) for t in RAW_TABLES}
    outcomes = raw / "program_outcomes.parquet"
    tables["program_outcomes"] = pd.read_parquet(outcomes) if outcomes.exists() else None
    return tables


def _sample_applicants(ids: pd.Series, fraction: float, seed: int, salt: str) -> np.ndarray:
    """Keep a fixed share of applicants (all of their rows), chosen by a seeded hash of the id."""
    if fraction >= 1.0:
        return np.ones(len(ids), bool)
    codes, distinct = pd.factorize(ids, use_na_sentinel=False)  # each id hashed once, not per row
    h = pd.util.hash_pandas_object(pd.Series(distinct.astype(str), dtype=object)
                                   + f"|{salt}|{seed}", index=False).to_numpy()
    return ((h % 1_000_000) < fraction * 1_000_000)[codes]


def scoped_applications(applications: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """The applications a run joins: its seasons' rows of the sampled applicants (every row of
    each, so labels derived per applicant are unchanged). ``make_splits`` draws the same sample;
    joining only these keeps time and memory in proportion to the sample, not the market."""
    d = cfg.data
    season = applications["season"].to_numpy()
    present = sorted(int(x) for x in np.unique(season))
    for s in [*d.train_seasons, d.validation_season]:
        if s not in present:
            raise ConfigError(f"season {s} has no labelled applications in {d.raw_dir} "
                              f"(seasons present: {present})")
    keep = np.zeros(len(applications), bool)
    for chosen, fraction, salt in ((np.isin(season, d.train_seasons), d.train_sample_fraction,
                                    "train"),
                                   (season == d.validation_season,
                                    d.validation_sample_fraction, "validation")):
        keep[chosen] = _sample_applicants(applications.loc[chosen, "applicant_id"], fraction,
                                          d.seed, salt)
    return applications[keep]


@dataclass
class Splits:
    train: pd.DataFrame
    holdout: pd.DataFrame
    validation: pd.DataFrame


def make_splits(pairs: pd.DataFrame, cfg: TrainConfig) -> Splits:
    """Train on earlier seasons, validate on the latest; hold out applicants, never rows."""
    d = cfg.data
    labelled = pairs[LABEL].notna().to_numpy()
    season = pairs["season"].to_numpy()
    seasons = set(np.unique(season[labelled]).tolist())
    for s in [*d.train_seasons, d.validation_season]:
        if s not in seasons:
            raise ConfigError(f"season {s} has no labelled applications in {d.raw_dir} "
                              f"(seasons present: {sorted(int(x) for x in seasons)})")
    # row masks first, then one copy of the (wide) frame per split
    ids = pairs["applicant_id"]
    train = labelled & np.isin(season, d.train_seasons)
    val = labelled & (season == d.validation_season)
    train[train] = _sample_applicants(ids[train], d.train_sample_fraction, d.seed, "train")
    val[val] = _sample_applicants(ids[val], d.validation_sample_fraction, d.seed, "validation")
    held = np.zeros(len(pairs), bool)
    held[train] = _sample_applicants(ids[train], d.holdout_fraction, d.seed, "holdout")
    splits = Splits(pairs[train & ~held], pairs[held], pairs[val])
    for name in ("train", "holdout", "validation"):
        part = getattr(splits, name)
        classes = part[LABEL].nunique()
        if len(part) == 0 or classes < 2:
            raise ConfigError(f"the {name} split has {len(part)} rows and {classes} label "
                              "class(es): a model needs both outcomes; check seasons and sample "
                              "fractions")
    return splits


def load_splits(cfg: TrainConfig) -> tuple[dict[str, pd.DataFrame], Splits]:
    """The run's tables, and its labelled pairs split into train / hold-out / validation."""
    tables = load_tables(cfg)
    scoped = scoped_applications(tables["applications"], cfg)
    pairs = build_pairs(scoped, tables["applicants"], tables["programs"])
    pairs[LABEL] = training_labels(scoped).to_numpy()
    return tables, make_splits(pairs, cfg)


def interviewed_mask(pairs: pd.DataFrame) -> np.ndarray | None:
    """Which pairs were interviewed (what ``PairFeatures.fit`` learns programs' typical
    interviewee from); None when the data does not say."""
    if "interviewed" not in pairs:
        return None
    return pairs["interviewed"].astype("boolean").fillna(False).to_numpy(bool)


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of a table (row order included), for manifests and caches."""
    h = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(map(str, frame.columns)).encode()).hexdigest()


# ----------------------------------------------------------------------------- baselines


# ----------------------------------------------------------------------------- the run


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


def run_training(cfg: TrainConfig, progress: Callable[[str], None] | None = None,
                 track: bool = True) -> TrainResult:
    """Run one training config end to end (see the module docstring)."""
    say = progress or (lambda _m: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ensure_data(cfg, say)
    timings["data"] = time.perf_counter() - t0

    say("loading and validating tables")
    tables, splits = load_splits(cfg)
    tr, ho, va = splits.train, splits.holdout, splits.validation
    y_tr, y_ho, y_va = (s[LABEL].to_numpy(np.int64) for s in (tr, ho, va))
    interviewed = interviewed_mask(tr)

    # processed features, with a manifest of what they came from
    say("building features")
    t = time.perf_counter()
    features = PairFeatures().fit(tr, interviewed=interviewed)
    # each split's features are built once: written here, trained and scored on below
    X_tr, X_ho, X_va = (features.transform(s) for s in (tr, ho, va))
    processed = Path(cfg.data.processed_dir)
    feature_path = processed / "features.parquet"
    feat = pd.concat([X.assign(split=name, label=s[LABEL].to_numpy(),
                               applicant_id=s["applicant_id"].to_numpy(),
                               season=s["season"].to_numpy())
                      for name, X, s in (("train", X_tr, tr), ("holdout", X_ho, ho),
                                         ("validation", X_va, va))],
                     ignore_index=True)
    write_parquet_atomic(feat, feature_path)
    input_hashes = {n: frame_hash(tables[n]) for n in RAW_TABLES}
    write_json_atomic(processed / "features_manifest.json", {
        "rows": {"train": len(tr), "holdout": len(ho), "validation": len(va)},
        "features": list(FEATURE_NAMES), "input_sha256": input_hashes,
        "features_sha256": sha256_file(feature_path)})
    del feat
    timings["features"] = time.perf_counter() - t

    say(f"training gradient boosting on {len(tr):,} pairs")
    t = time.perf_counter()
    m = cfg.model
    model = MatchModel(**m.model_dump(), random_state=cfg.data.seed)
    model.fit_features(features, X_tr, y_tr, holdout_X=X_ho, holdout_y=y_ho,
                       holdout_groups=ho["applicant_id"].to_numpy())
    del X_tr
    # list-level P(match): learn how far 1 - prod(1 - q) overstates it, on held-out applicants
    if "matched" in ho:
        from smartpick_ml.modelling.pmatch import PMatchCalibrator, independent_p_match

        q_ho = model.proba_from_features(X_ho, ho)[:, 1]
        p_ind = independent_p_match(q_ho, ho["applicant_id"].to_numpy())
        per = ho.groupby("applicant_id").agg(matched=("matched", "any"),
                                             applicant_type=("applicant_type", "first"))
        per = per.loc[p_ind.index]
        model.pmatch_calibrator_ = PMatchCalibrator().fit(
            p_ind.to_numpy(), per["matched"].to_numpy(bool), per["applicant_type"].to_numpy())
    del X_ho
    timings["model"] = time.perf_counter() - t

    say("training baselines")
    t = time.perf_counter()
    lookup = RateLookupBaseline().fit(tr, y_tr, interviewed if interviewed is not None
                                      else np.ones(len(tr), bool))
    rng = np.random.default_rng(cfg.data.seed)
    rows = rng.choice(len(tr), size=min(len(tr), cfg.evaluation.logistic_rows), replace=False)
    logistic = logistic_baseline(features, cfg.data.seed)
    logistic.fit(tr.iloc[np.sort(rows)], y_tr[np.sort(rows)])
    timings["baselines"] = time.perf_counter() - t

    say("scoring the validation season")
    t = time.perf_counter()
    scored = va[["applicant_id", "program_id", "season", "applicant_type", LABEL]].copy()
    scored["matched"] = va["matched"].to_numpy() if "matched" in va else False
    scored["model"] = model.proba_from_features(X_va, va)[:, 1]
    # the logistic's first step is this same (frozen) feature step: start after it
    scored["logistic"] = np.where(visa_blocked(va), 0.0, logistic[1:].predict_proba(X_va)[:, 1])
    scored["lookup"] = lookup.predict_proba(va)[:, 1]
    scored["oracle"], oracle_info = oracle_column(cfg, tables, va, say)
    prob_columns = {name: name for name in MODELS if scored[name].notna().all()}
    reference = "oracle" if "oracle" in prob_columns else None
    metrics = evaluate.metrics_table(scored, prob_columns, reference=reference)
    per_applicant = {name: evaluate.applicant_match_table(scored, name, rank_column=None)
                     for name in prob_columns}
    if hasattr(model, "pmatch_calibrator_"):
        corrected = per_applicant["model"].copy()
        corrected["p_match"] = model.pmatch_calibrator_.transform(
            corrected["p_match"].to_numpy(), corrected["applicant_type"].to_numpy())
        per_applicant["model, P(match) corrected"] = corrected
        reliability = evaluate.reliability_by_decile(corrected)
    else:
        reliability = evaluate.reliability_by_decile(per_applicant["model"])
    timings["evaluate"] = time.perf_counter() - t

    say("permutation importance")
    t = time.perf_counter()
    importance = permutation_importance_table(model, va, y_va, cfg)
    timings["importance"] = time.perf_counter() - t

    run_dir = Path(cfg.data.processed_dir) / "run"
    outputs = {
        "reliability_png": evaluate.plot_reliability(scored, prob_columns,
                                                     run_dir / "reliability_by_type.png"),
        "roc_pr_png": evaluate.plot_roc_pr(scored, prob_columns, run_dir / "roc_pr.png"),
        "importance_png": evaluate.plot_importance(importance, run_dir / "importance.png"),
        "pmatch_png": evaluate.plot_pmatch_deciles(per_applicant, run_dir / "pmatch_deciles.png"),
    }
    metrics_path = run_dir / "metrics.csv"
    metrics.to_csv(metrics_path, index=False)
    outputs["metrics_csv"] = metrics_path

    summary = {
        "validation_season": cfg.data.validation_season,
        "rows": {"train": len(tr), "holdout": len(ho), "validation": len(va)},
        "n_iter": model.n_iter_, "calibration": model.calibration_method_,
        "calibration_scores": model.calibration_scores_, **oracle_info,
    }
    from smartpick_ml.training import run_report

    data_summary = run_report.data_summary({"train": tr, "holdout": ho, "validation": va})
    run_id = version = None
    decision = "not tracked"
    if track:
        from smartpick_ml.modelling.persist import save_model
        from smartpick_ml.training.tracking import log_training_run

        def save_champion(run_id: str, version: str) -> None:
            # models/ first, then the alias: a run killed while saving leaves both on the previous
            # champion (tests/system/test_crash_safety.py)
            save_model(model, cfg.output.model_dir, {
                "model_version": version, "mlflow_run_id": run_id,
                "input_columns": list(PAIR_INPUT_COLUMNS), "feature_names": list(FEATURE_NAMES),
                "validation_season": cfg.data.validation_season,
                "metrics": _headline_metrics(metrics), "training_data_sha256": input_hashes})

        run_id, version, decision = log_training_run(
            cfg, model, va, y_va, scored["model"].to_numpy(), metrics, summary, outputs,
            importance, timings, before_promotion=save_champion)
    # the run report: rendered before anything is published (a failure leaves no report), then
    # written beside the plots, to the MLflow run, and beside the model when it is saved below
    report = run_report.render_run_report(
        cfg, data_summary, metrics, {k: p for k, p in outputs.items() if p.suffix == ".png"},
        importance, reliability, summary, decision, run_id, version, timings)
    write_parquet_atomic(scored, run_dir / run_report.SCORES_NAME)  # ids, labels, q: for notebooks
    write_text_atomic(run_dir / run_report.IMPORTANCE_NAME, importance.to_csv(index=False))
    outputs["validation_scores"] = run_dir / run_report.SCORES_NAME
    outputs["report_html"] = run_report.write_report(report, run_dir / run_report.REPORT_NAME)
    if run_id is not None:
        run_report.log_report(outputs["report_html"], run_id)
    if track and decision.startswith("champion"):  # saved by save_champion, above
        outputs["model_dir"] = Path(cfg.output.model_dir)
    elif not track:
        from smartpick_ml.modelling.persist import save_model

        save_model(model, cfg.output.model_dir, {
            "model_version": None, "input_columns": list(PAIR_INPUT_COLUMNS),
            "feature_names": list(FEATURE_NAMES), "metrics": _headline_metrics(metrics),
            "validation_season": cfg.data.validation_season,
            "training_data_sha256": input_hashes})
        outputs["model_dir"] = Path(cfg.output.model_dir)
    if "model_dir" in outputs:
        outputs["model_report"] = run_report.write_report(
            report, Path(cfg.output.model_dir) / run_report.REPORT_NAME)
    timings["total"] = time.perf_counter() - t0
    return TrainResult(metrics=metrics, applicant_reliability=reliability, model=model,
                       run_id=run_id, model_version=version, champion_decision=decision,
                       outputs=outputs, timings=timings)


def _headline_metrics(metrics: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in metrics[metrics["group"] == "all"].itertuples():
        for k in ("log_loss", "brier", "ece", "roc_auc"):
            out[f"{r.model}.{k}"] = float(getattr(r, k))
    return out


def permutation_importance_table(model: MatchModel, va: pd.DataFrame, y: np.ndarray,
                                 cfg: TrainConfig) -> pd.DataFrame:
    """Log-loss increase when each input column is shuffled (on a validation sample)."""
    from sklearn.inspection import permutation_importance

    from smartpick_ml.modelling.threads import one_openmp_thread

    rng = np.random.default_rng(cfg.data.seed)
    n = min(len(va), cfg.evaluation.importance_rows)
    idx = np.sort(rng.choice(len(va), size=n, replace=False))
    cols = [c for c in PAIR_INPUT_COLUMNS if c in va.columns and c != "program_id"]
    X = va.iloc[idx][[*cols, "program_id"]].reset_index(drop=True)
    # dozens of small predict calls: one OpenMP thread each (two threads on a busy 2-core
    # machine made this step 5x slower)
    with one_openmp_thread():
        res = permutation_importance(model, X, y[idx], scoring="neg_log_loss",
                                     n_repeats=cfg.evaluation.importance_repeats,
                                     random_state=cfg.data.seed)
    table = pd.DataFrame({"feature": X.columns, "importance_mean": res.importances_mean,
                          "importance_std": res.importances_std})
    table = table[table["feature"] != "program_id"]
    return table.sort_values("importance_mean", ascending=False).reset_index(drop=True)


__all__ = ["TrainResult", "run_training", "make_splits", "RateLookupBaseline",
           "logistic_baseline", "DataValidationError"]
