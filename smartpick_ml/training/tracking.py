"""MLflow tracking for training runs: params, metrics, plots, the model, the registry alias.

Tracking defaults to ``sqlite:///mlflow.db`` in the working directory and honours
``MLFLOW_TRACKING_URI``. The model is logged by ``modelling.logged_model.log_model`` (one skops
file behind a ``sklearn`` and a ``python_function`` flavour, the training catalog, an explicit
signature and a *synthetic* input example) and registered as ``smartpick-match``. The
``champion`` alias moves to the new version only if it beats the current champion's log-loss on
the same validation rows; otherwise the new version becomes ``challenger``. The decision and its
reason are logged as a tag and an artifact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import TrainConfig
from smartpick_ml.contracts.numeric import log_loss
from smartpick_ml.modelling.model import MatchModel

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
#: A new model must beat the champion's log-loss by at least this relative margin to replace it.
MIN_IMPROVEMENT = 1e-4


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj
    return out


def setup_mlflow(cfg: TrainConfig) -> Any:
    import mlflow

    from smartpick_ml.training.tracking import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri(cfg))
    mlflow.set_experiment(cfg.tracking.experiment)
    return mlflow


def champion_decision(name: str, new_version: str, new_loss: float, va: pd.DataFrame,
                      y_va: np.ndarray, before_promotion: Callable[[], None] | None = None
                      ) -> tuple[str, str]:
    """Compare with the current champion on the same rows; move the alias only if better.

    ``before_promotion`` runs just before the champion alias moves (training saves the model for
    services there): a run killed in it leaves the alias on the previous champion.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()

    def promote() -> None:
        if before_promotion is not None:
            before_promotion()
        client.set_registered_model_alias(name, CHAMPION, new_version)

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no champion yet
        promote()
        return CHAMPION, (f"champion: version {new_version} is the first model "
                          f"(log-loss {new_loss:.5f})")
    if str(current.version) == str(new_version):
        return CHAMPION, "champion: already"
    try:
        old = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
        old_loss = log_loss(y_va, old.predict_proba(va)[:, 1])
    except Exception as exc:  # an incompatible old model cannot defend its title
        promote()
        return CHAMPION, (f"champion: version {new_version} replaces {current.version}, which "
                          f"could not score the validation data ({type(exc).__name__})")
    if new_loss < old_loss * (1 - MIN_IMPROVEMENT):
        promote()
        return CHAMPION, (f"champion: version {new_version} log-loss {new_loss:.5f} beats "
                          f"version {current.version} ({old_loss:.5f}) on the same validation rows")
    client.set_registered_model_alias(name, CHALLENGER, new_version)
    return CHALLENGER, (f"challenger: version {new_version} log-loss {new_loss:.5f} does not beat "
                        f"champion version {current.version} ({old_loss:.5f}); champion unchanged")


#: What the run and the registered model say about themselves in MLflow's UI.
RUN_DESCRIPTION = (
    "SmartPick training run: a calibrated gradient-boosted model of q(applicant, program), the "
    "probability that a residency program would take an applicant, fitted and validated on "
    "Match seasons simulated on the real program catalog (docs/simulation.md). Metrics compare "
    "it with a logistic regression, a published-rate lookup and the simulator's oracle. The "
    "run report is report/report.html.")
MODEL_DESCRIPTION = (
    "q(applicant, program) for the US residency Match, trained on simulated seasons. Serve with "
    "`mlflow models serve -m models:/{name}@champion`; a request is a dataframe_split of "
    "applicant x program pairs (lean: the applicant's columns and program_id) or one applicant "
    "with params.task = 'rank'. The request columns are in this version's metadata "
    "(request_columns) and in docs/schemas.md and docs/serving.md of the project.")


@contextmanager
def training_run(cfg: TrainConfig) -> Iterator[str]:
    """One MLflow run around a whole training (yields its id): opened before the data are read,
    so a run that fails or is interrupted shows as failed, with the steps it reached logged."""
    mlflow = setup_mlflow(cfg)
    with mlflow.start_run(description=RUN_DESCRIPTION) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in
                           _flatten("", cfg.model_dump(), {}).items()})
        yield run.info.run_id


def log_datasets(datasets: Mapping[str, Mapping[str, Any]]) -> None:
    """Record each input table in the active run: its file, content digest and row count, and
    whether it trains or validates (``context``). Never a row: applicants are personal data."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for name, d in datasets.items():
        with warnings.catch_warnings():  # a local path fits several source kinds: any will do
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(d["path"]))
        mlflow.log_input(MetaDataset(source=source, name=name, digest=str(d["sha256"])[:20]),
                         context=str(d["context"]), tags={"rows": str(d["rows"])})


def log_training_run(cfg: TrainConfig, model: MatchModel, va: pd.DataFrame, y_va: np.ndarray,
                     q_va: np.ndarray, metrics: pd.DataFrame, summary: dict[str, Any],
                     outputs: dict[str, Path], importance: pd.DataFrame, timings: dict[str, float],
                     before_promotion: Callable[[str, str], None] | None = None
                     ) -> tuple[str, str, str]:
    """Log a run's results into the active run (:func:`training_run`; a new run if none is
    active); returns (run id, registered version, alias decision). ``q_va`` is the model's q for
    the validation rows ``va`` (scored once by the run).

    ``before_promotion(run_id, version)`` runs only if the new version becomes champion, before
    the alias moves (see :func:`champion_decision`)."""
    mlflow = setup_mlflow(cfg)
    active = mlflow.active_run()
    with contextlib.nullcontext(active) if active else training_run(cfg):
        run_id = mlflow.active_run().info.run_id
        _log_results(mlflow, metrics, summary, outputs, importance, timings)
        version, reason = _register(cfg, model, va, y_va, q_va, run_id, before_promotion)
        return run_id, version, reason


def _log_results(mlflow: Any, metrics: pd.DataFrame, summary: dict[str, Any],
                 outputs: dict[str, Path], importance: pd.DataFrame,
                 timings: dict[str, float]) -> None:
    """Metrics per model and applicant type, the run's scalars and timings, its plots and
    tables."""
    values: dict[str, float] = {}
    for r in metrics.itertuples():
        for k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "log_loss_vs_reference"):
            v = getattr(r, k, float("nan"))
            if v is not None and math.isfinite(float(v)):
                values[f"{r.model}.{r.group}.{k}"] = float(v)
    for k, v in summary.items():
        if isinstance(v, int | float) and math.isfinite(float(v)):
            values[k] = float(v)
    values.update({f"seconds.{k}": v for k, v in timings.items()})
    mlflow.log_metrics(values)
    mlflow.set_tags({"calibration": str(summary.get("calibration")),
                     "validation_season": str(summary.get("validation_season"))})
    for p in outputs.values():
        if Path(p).is_file():
            mlflow.log_artifact(str(p), artifact_path="evaluation")
    with tempfile.TemporaryDirectory() as tmp:
        imp = Path(tmp) / "permutation_importance.csv"
        importance.to_csv(imp, index=False)
        mlflow.log_artifact(str(imp), artifact_path="evaluation")
        (Path(tmp) / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        mlflow.log_artifact(str(Path(tmp) / "summary.json"), artifact_path="evaluation")


def _register(cfg: TrainConfig, model: MatchModel, va: pd.DataFrame, y_va: np.ndarray,
              q_va: np.ndarray, run_id: str,
              before_promotion: Callable[[str, str], None] | None) -> tuple[str, str]:
    """Log and register the served model, describe it, and decide the alias."""
    import mlflow
    from mlflow import MlflowClient

    # the served model: sklearn + pyfunc flavours over one skops file, with the catalog the
    # model was trained on (public program data) for the fast path and ranking
    from smartpick_ml.data.catalog import load_catalog
    from smartpick_ml.modelling.logged_model import log_model

    name = cfg.tracking.registered_model
    programs = load_catalog(Path(cfg.data.raw_dir) / "programs.parquet")
    info = log_model(model, programs, registered_model_name=name)
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.update_registered_model(name, description=MODEL_DESCRIPTION.format(name=name))
    client.update_model_version(name, version, description=(
        f"Trained by run {run_id}; validation season {cfg.data.validation_season}. "
        "Request columns: this version's metadata (request_columns)."))
    alias, reason = champion_decision(
        name, version, log_loss(y_va, q_va), va, y_va,
        None if before_promotion is None else lambda: before_promotion(run_id, version))
    mlflow.set_tag("alias_decision", reason)
    mlflow.log_text(reason + "\n", "evaluation/alias_decision.txt")
    log.info(reason)
    return version, reason


def default_tracking_uri(cfg: TrainConfig) -> str:
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        "sqlite:///mlflow.db"
