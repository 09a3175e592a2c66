"""SmartPick ML: a match-likelihood predictor for the US residency Match.

The package follows a row's journey, one subpackage a stage, imports running one way:
``contracts`` (figures, column rules, configs, errors) -> ``data`` (the catalog) ->
``simulation`` (a simulated Match season) and ``modelling`` (labels, features, the model) ->
``training`` (a run: fit, evaluate, track) ; ``modelling`` -> ``inference`` (rank and plan for
one applicant) -> ``serving`` (the MLflow model behind ``mlflow models serve``); plus ``cli``.

For a data scientist::

    from smartpick_ml import load_train_config, run_training
    result = run_training(load_train_config("pipelines/train.toml"))
    result.metrics          # log-loss, Brier, ECE, ROC AUC per model and applicant type

For a service::

    from smartpick_ml import MatchPredictor
    predictor = MatchPredictor.load("models")
    predictor.rank({"applicant_type": "non_us_img", "step2_ck": 248, "graduation_year": 2022,
                    "needs_visa": True}, specialty="Internal Medicine", k=20)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["MatchPredictor", "load_train_config", "run_training", "__version__"]

if TYPE_CHECKING:
    from smartpick_ml.contracts.config import load_train_config
    from smartpick_ml.inference.predictor import MatchPredictor
    from smartpick_ml.training.pipeline import run_training

#: where each public name lives; imported on first use, so ``import smartpick_ml`` stays cheap
#: for the CLI and a service does not load the training stack
_PUBLIC = {"MatchPredictor": "smartpick_ml.inference.predictor",
           "load_train_config": "smartpick_ml.contracts.config",
           "run_training": "smartpick_ml.training.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(name)
