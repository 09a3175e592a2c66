"""Stage 4 — the training run: data -> features -> model + baselines + oracle -> metrics -> MLflow.

:func:`run_training` executes one ``pipelines/*.toml`` config as named steps, each a function
that takes what earlier steps produced and returns a small result object:

1. :func:`load_step` — simulate the seasons if asked, check the tables, build pairs and labels,
   split by season (train on earlier seasons, validate on the latest) and, inside the training
   seasons, hold out applicants (never rows) for early stopping and calibration;
2. :func:`features_step` — fit the feature step, build each split's features once, write them to
   ``data/processed/`` with a manifest of what they came from;
3. :func:`fit_step` — the gradient-boosted model, its calibration and the list-level P(match)
   correction;
4. :func:`baselines_step` — a published-rate lookup and a logistic regression;
5. :func:`evaluate_step` — score them and the oracle on the validation season: metrics by
   applicant type, per-applicant P(match) reliability, permutation importance, plots;
6. :func:`log_step` — log to MLflow, register the model and move the ``champion`` alias only if
   the new model beats the current champion on the same validation rows;
7. :func:`report_step` and :func:`save_step` — the run report, and the champion saved to
   ``models/`` for services, with the catalog it was trained on.

Progress goes to an optional callback as :class:`ProgressEvent` s. A failure anywhere leaves the
previous champion, its alias and ``models/`` untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from smartpick_ml.contracts.config import TrainConfig
from smartpick_ml.contracts.eligibility import ineligible
from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS
from smartpick_ml.data.io import (
    frame_hash,
    sha256_file,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from smartpick_ml.modelling.baselines import RateLookupBaseline, logistic_baseline
from smartpick_ml.modelling.features import FEATURE_NAMES, PairFeatures
from smartpick_ml.modelling.labels import LABEL
from smartpick_ml.modelling.model import MatchModel
from smartpick_ml.modelling.persist import save_model
from smartpick_ml.training import evaluate, run_report
from smartpick_ml.training.importance import permutation_importance_table
from smartpick_ml.training.model_card import CARD_NAME, render_model_card
from smartpick_ml.training.oracle_scores import oracle_column
from smartpick_ml.training.splits import (
    RAW_TABLES,
    Splits,
    ensure_data,
    interviewed_mask,
    load_splits,
)

MODELS = ("model", "logistic", "lookup", "oracle")
#: The run's steps, in order: what a progress display counts.
STEPS: tuple[str, ...] = ("data", "load", "features", "fit", "baselines", "evaluate",
                          "importance", "log", "report")


@dataclass(frozen=True)
class ProgressEvent:
    """One line of a run's progress: the step it belongs to, and whether it opens that step."""

    step: str
    message: str
    starts_step: bool = False


Progress = Callable[[ProgressEvent], None]


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


class _RunClock:
    """Times each step and reports its progress events."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def say(self, step: str, message: str, starts_step: bool = False) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(step, message, starts_step))

    def teller(self, step: str) -> Callable[[str], None]:
        """A plain-text progress callback for a step's helpers (simulation, oracle)."""
        return lambda message: self.say(step, message)

    @contextmanager
    def step(self, name: str, message: str) -> Iterator[None]:
        self.say(name, message, starts_step=True)
        t = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t


# ----------------------------------------------------------------------------- the steps


@dataclass
class RunData:
    """The run's tables and its labelled pairs, split."""

    tables: dict[str, pd.DataFrame]
    splits: Splits

    def labels(self, split: str) -> np.ndarray:
        return getattr(self.splits, split)[LABEL].to_numpy(np.int64)


def load_step(cfg: TrainConfig, say: Callable[[str], None]) -> RunData:
    """Check the tables, join pairs and labels, split them (simulating the data first if the
    config asks for it or the tables are missing)."""
    ensure_data(cfg, say)
    tables, splits = load_splits(cfg)
    return RunData(tables, splits)


@dataclass
class FeatureSet:
    """The fitted feature step and each split's features, built once."""

    features: PairFeatures
    train: pd.DataFrame
    holdout: pd.DataFrame
    validation: pd.DataFrame
    input_sha256: dict[str, str]
    features_sha256: str = ""


def features_step(cfg: TrainConfig, data: RunData) -> FeatureSet:
    """Fit the feature step on the training pairs; write every split's features with a manifest
    of the tables they came from."""
    s = data.splits
    features = PairFeatures()
    train_X = features.fit_transform(s.train, s.train[LABEL].to_numpy(),
                                     interviewed=interviewed_mask(s.train))
    built = FeatureSet(features, train_X, *(features.transform(p) for p in (s.holdout,
                                                                            s.validation)),
                       input_sha256={n: frame_hash(data.tables[n]) for n in RAW_TABLES})
    processed = Path(cfg.data.processed_dir)
    feature_path = processed / "features.parquet"
    frame = pd.concat([X.assign(split=name, label=p[LABEL].to_numpy(),
                                applicant_id=p["applicant_id"].to_numpy(),
                                season=p["season"].to_numpy())
                       for name, X, p in (("train", built.train, s.train),
                                          ("holdout", built.holdout, s.holdout),
                                          ("validation", built.validation, s.validation))],
                      ignore_index=True)
    write_parquet_atomic(frame, feature_path)
    built.features_sha256 = sha256_file(feature_path)
    write_json_atomic(processed / "features_manifest.json", {
        "rows": _split_rows(s), "features": list(FEATURE_NAMES),
        "input_sha256": built.input_sha256, "features_sha256": built.features_sha256})
    return built


def fit_step(cfg: TrainConfig, data: RunData, feats: FeatureSet) -> MatchModel:
    """The gradient-boosted model (early stopping and calibration on held-out applicants), and
    the list-level P(match) correction where outcomes are known."""
    ho = data.splits.holdout
    model = MatchModel(**cfg.model.model_dump(), random_state=cfg.data.seed)
    model.fit_features(feats.features, feats.train, data.labels("train"),
                       holdout_X=feats.holdout, holdout_y=data.labels("holdout"),
                       holdout_groups=ho["applicant_id"].to_numpy())
    if "matched" in ho:
        model.fit_pmatch_calibrator(feats.holdout, ho)
    return model


@dataclass
class Baselines:
    lookup: RateLookupBaseline
    logistic: Pipeline


def baselines_step(cfg: TrainConfig, data: RunData, feats: FeatureSet) -> Baselines:
    """A published-rate lookup, and a logistic regression on a seeded sample of the training
    pairs with exactly the model's (frozen) feature step."""
    tr, y = data.splits.train, data.labels("train")
    interviewed = interviewed_mask(tr)
    lookup = RateLookupBaseline().fit(tr, y, interviewed if interviewed is not None
                                      else np.ones(len(tr), bool))
    rng = np.random.default_rng(cfg.data.seed)
    rows = np.sort(rng.choice(len(tr), size=min(len(tr), cfg.evaluation.logistic_rows),
                              replace=False))
    logistic = logistic_baseline(feats.features, cfg.data.seed)
    logistic.fit(tr.iloc[rows], y[rows])
    return Baselines(lookup, logistic)


@dataclass
class Evaluation:
    """Every model's q on the validation rows, and what was measured from it."""

    scored: pd.DataFrame
    prob_columns: dict[str, str]
    metrics: pd.DataFrame
    per_applicant: dict[str, pd.DataFrame]
    reliability: pd.DataFrame
    oracle_info: dict[str, float]


def evaluate_step(cfg: TrainConfig, data: RunData, feats: FeatureSet, model: MatchModel,
                  baselines: Baselines, say: Callable[[str], None]) -> Evaluation:
    """Score the model, the baselines and the oracle on the validation season: metrics per
    applicant type against the oracle, and P(match) per applicant."""
    va = data.splits.validation
    scored = va[["applicant_id", "program_id", "season", "applicant_type", LABEL]].copy()
    scored["matched"] = va["matched"].to_numpy() if "matched" in va else False
    scored["model"] = model.proba_from_features(feats.validation, va)[:, 1]
    # the logistic's first step is this same (frozen) feature step: start after it
    scored["logistic"] = np.where(ineligible(va), 0.0,
                                  baselines.logistic[1:].predict_proba(feats.validation)[:, 1])
    scored["lookup"] = baselines.lookup.predict_proba(va)[:, 1]
    scored["oracle"], oracle_info = oracle_column(cfg, data.tables, va, say)
    prob_columns = {name: name for name in MODELS if scored[name].notna().all()}
    reference = "oracle" if "oracle" in prob_columns else None
    metrics = evaluate.metrics_table(scored, prob_columns, reference=reference)
    per_applicant = {name: evaluate.applicant_match_table(scored, name, rank_column=None)
                     for name in prob_columns}
    reliability_of = per_applicant["model"]
    if hasattr(model, "pmatch_calibrator_"):
        corrected = per_applicant["model"].copy()
        stated = model.pmatch_calibrator_.p_match(
            scored["model"].to_numpy(), scored["applicant_id"].to_numpy(),
            corrected.set_index("applicant_id")["applicant_type"])
        corrected["p_match"] = stated.reindex(corrected["applicant_id"]).to_numpy()
        per_applicant["model, P(match) corrected"] = reliability_of = corrected
    return Evaluation(scored, prob_columns, metrics, per_applicant,
                      evaluate.reliability_by_decile(reliability_of), oracle_info)


def plots_step(cfg: TrainConfig, ev: Evaluation, importance: pd.DataFrame) -> dict[str, Path]:
    """The run's plots and its metrics table, beside the processed data."""
    run_dir = Path(cfg.data.processed_dir) / "run"
    outputs = {
        "reliability_png": evaluate.plot_reliability(ev.scored, ev.prob_columns,
                                                     run_dir / "reliability_by_type.png"),
        "roc_pr_png": evaluate.plot_roc_pr(ev.scored, ev.prob_columns, run_dir / "roc_pr.png"),
        "importance_png": evaluate.plot_importance(importance, run_dir / "importance.png"),
        "pmatch_png": evaluate.plot_pmatch_deciles(ev.per_applicant,
                                                   run_dir / "pmatch_deciles.png"),
        "metrics_csv": run_dir / "metrics.csv",
    }
    ev.metrics.to_csv(outputs["metrics_csv"], index=False)
    return outputs


def run_summary(cfg: TrainConfig, data: RunData, model: MatchModel, ev: Evaluation
                ) -> dict[str, Any]:
    """The run's scalars for MLflow and the report."""
    return {"validation_season": cfg.data.validation_season, "rows": _split_rows(data.splits),
            "n_iter": model.n_iter_, "calibration": model.calibration_method_,
            "calibration_scores": model.calibration_scores_, **ev.oracle_info}


def model_manifest(cfg: TrainConfig, feats: FeatureSet, ev: Evaluation, version: str | None,
                   run_id: str | None) -> dict[str, Any]:
    """What ``models/manifest.json`` records beside the saved model."""
    return {"model_version": version, "mlflow_run_id": run_id,
            "input_columns": list(PAIR_INPUT_COLUMNS), "feature_names": list(FEATURE_NAMES),
            "validation_season": cfg.data.validation_season,
            "metrics": _headline_metrics(ev.metrics), "training_data_sha256": feats.input_sha256}


@dataclass
class Logged:
    run_id: str | None = None
    model_version: str | None = None
    decision: str = "not tracked"
    saved: bool = False


def run_datasets(cfg: TrainConfig, data: RunData, feats: FeatureSet) -> dict[str, Any]:
    """What the run read and trained on, for MLflow's dataset lineage: each input table, and the
    training and validation pairs (file, content digest, rows; never a row itself)."""
    raw, processed = Path(cfg.data.raw_dir), Path(cfg.data.processed_dir)
    out: dict[str, Any] = {
        name: {"path": raw / f"{name}.parquet", "sha256": feats.input_sha256[name],
               "rows": len(data.tables[name]), "context": "input"} for name in RAW_TABLES}
    s = data.splits
    for name, rows, context in (("training pairs", len(s.train) + len(s.holdout), "training"),
                                ("validation pairs", len(s.validation), "validation")):
        out[name] = {"path": processed / "features.parquet", "sha256": feats.features_sha256,
                     "rows": rows, "context": context}
    return out


def log_step(cfg: TrainConfig, data: RunData, feats: FeatureSet, model: MatchModel,
             ev: Evaluation, summary: dict[str, Any], outputs: dict[str, Path],
             importance: pd.DataFrame, timings: dict[str, float],
             save: Callable[[str | None, str | None], None]) -> Logged:
    """Log the run to MLflow (its data lineage, results and the model) and register the model;
    ``save`` writes ``models/`` just before the champion alias moves (a run killed while saving
    leaves both on the previous champion)."""
    from smartpick_ml.training.tracking import log_datasets, log_training_run

    log_datasets(run_datasets(cfg, data, feats))
    logged = Logged()

    def save_champion(run_id: str, version: str) -> None:
        save(version, run_id)
        logged.saved = True

    va = data.splits.validation
    logged.run_id, logged.model_version, logged.decision = log_training_run(
        cfg, model, va, data.labels("validation"), ev.scored["model"].to_numpy(), ev.metrics,
        summary, outputs, importance, timings, before_promotion=save_champion)
    return logged


def report_step(cfg: TrainConfig, data: RunData, ev: Evaluation, importance: pd.DataFrame,
                summary: dict[str, Any], logged: Logged, outputs: dict[str, Path],
                timings: dict[str, float]) -> None:
    """Render the run report before anything more is published (a failure leaves no report),
    then write it beside the plots, with the validation scores for notebooks, and to MLflow."""
    s = data.splits
    report = run_report.render_run_report(
        cfg, run_report.data_summary({"train": s.train, "holdout": s.holdout,
                                      "validation": s.validation}),
        ev.metrics, {k: p for k, p in outputs.items() if p.suffix == ".png"}, importance,
        ev.reliability, summary, logged.decision, logged.run_id, logged.model_version, timings)
    run_dir = Path(cfg.data.processed_dir) / "run"
    outputs["model_card"] = run_dir / CARD_NAME
    write_text_atomic(outputs["model_card"], render_model_card(
        cfg, ev.metrics, summary, logged.model_version, simulated=bool(ev.oracle_info)))
    write_parquet_atomic(ev.scored, run_dir / run_report.SCORES_NAME)  # ids, labels, q
    write_text_atomic(run_dir / run_report.IMPORTANCE_NAME, importance.to_csv(index=False))
    outputs["validation_scores"] = run_dir / run_report.SCORES_NAME
    outputs["report_html"] = run_report.write_report(report, run_dir / run_report.REPORT_NAME)
    if logged.run_id is not None:
        run_report.log_report(outputs["report_html"], logged.run_id)
        run_report.log_report(outputs["model_card"], logged.run_id)


def save_step(cfg: TrainConfig, outputs: dict[str, Path]) -> None:
    """The saved model's directory, with a copy of the run report and the model card beside the
    model."""
    model_dir = Path(cfg.output.model_dir)
    outputs["model_dir"] = model_dir
    outputs["model_report"] = run_report.write_report(
        outputs["report_html"].read_text(encoding="utf-8"), model_dir / run_report.REPORT_NAME)
    outputs["model_card_in_model_dir"] = model_dir / CARD_NAME
    write_text_atomic(outputs["model_card_in_model_dir"],
                      outputs["model_card"].read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- the run


def run_training(cfg: TrainConfig, progress: Progress | None = None,
                 track: bool = True) -> TrainResult:
    """Train, evaluate and register a model from one config (``load_train_config``).

    Simulates the seasons first if the config asks for it or the tables are missing, then runs
    the steps of the module docstring. Returns a :class:`TrainResult`: ``metrics`` (log-loss,
    Brier, ECE, ROC AUC of the model, the baselines and the oracle, per applicant type),
    ``applicant_reliability`` (stated against realised P(match) by decile), the fitted ``model``,
    the MLflow ``run_id`` and ``model_version``, the ``champion_decision`` and the files written
    (``outputs``: plots, metrics, the run report, the model directory).

    ``progress`` receives a :class:`ProgressEvent` per step and message (the CLI draws a bar from
    them). ``track=False`` skips MLflow and saves the model to the config's model directory; with
    tracking, one MLflow run spans the training from the features on, so a run that fails or
    is interrupted there shows as failed; a config or data refused by the first step opens none."""
    clock = _RunClock(progress)
    with clock.step("data", "loading, checking and splitting the tables"):
        data = load_step(cfg, clock.teller("data"))
    if not track:
        return _train(cfg, clock, data, track=False)
    from smartpick_ml.training.tracking import training_run

    with training_run(cfg):
        return _train(cfg, clock, data, track=True)


def _train(cfg: TrainConfig, clock: _RunClock, data: RunData, track: bool) -> TrainResult:
    """The steps of the module docstring after the data's, in order."""
    with clock.step("features", "building features"):
        feats = features_step(cfg, data)
    with clock.step("fit", f"training gradient boosting on {len(data.splits.train):,} pairs"):
        model = fit_step(cfg, data, feats)
    with clock.step("baselines", "training baselines"):
        baselines = baselines_step(cfg, data, feats)
    with clock.step("evaluate", "scoring the validation season"):
        ev = evaluate_step(cfg, data, feats, model, baselines, clock.teller("evaluate"))
    with clock.step("importance", "permutation importance"):
        importance = permutation_importance_table(model, data.splits.validation,
                                                  data.labels("validation"), cfg)
    outputs = plots_step(cfg, ev, importance)
    summary = run_summary(cfg, data, model, ev)

    def save(version: str | None, run_id: str | None) -> None:
        # the catalog goes with the model: services rank the programs it was trained on
        save_model(model, cfg.output.model_dir, model_manifest(cfg, feats, ev, version, run_id),
                   programs=data.tables["programs"])

    logged = Logged()
    if track:
        with clock.step("log", "logging to MLflow"):
            logged = log_step(cfg, data, feats, model, ev, summary, outputs, importance,
                              clock.timings, save)
    with clock.step("report", "writing the run report"):
        report_step(cfg, data, ev, importance, summary, logged, outputs, clock.timings)
        if not track:
            save(None, None)
        if logged.saved or not track:
            save_step(cfg, outputs)
    clock.timings["total"] = time.perf_counter() - clock.t0
    return TrainResult(metrics=ev.metrics, applicant_reliability=ev.reliability, model=model,
                       run_id=logged.run_id, model_version=logged.model_version,
                       champion_decision=logged.decision, outputs=outputs,
                       timings=clock.timings)


def _split_rows(splits: Splits) -> dict[str, int]:
    return {"train": len(splits.train), "holdout": len(splits.holdout),
            "validation": len(splits.validation)}


def _headline_metrics(metrics: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in metrics[metrics["group"] == "all"].itertuples():
        for k in ("log_loss", "brier", "ece", "roc_auc"):
            out[f"{r.model}.{k}"] = float(getattr(r, k))
    return out


__all__ = ["TrainResult", "ProgressEvent", "STEPS", "run_training"]
