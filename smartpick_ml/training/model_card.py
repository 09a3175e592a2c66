"""The model card: what the model is for, what it learned from, how well it does for each
applicant type, where it must not be trusted, and how to retrain it. Written beside the saved
model (``models/MODEL_CARD.md``) and to the MLflow run (``model_card.md``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from smartpick_ml.contracts.config import TrainConfig
from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS
from smartpick_ml.training.run_report import MODEL_LABELS

CARD_NAME = "MODEL_CARD.md"
_METRICS = (("log_loss", "log-loss"), ("log_loss_vs_reference", "× oracle"), ("ece", "ECE"),
            ("roc_auc", "ROC AUC"))


def _metrics_table(metrics: pd.DataFrame) -> str:
    """The model's metrics per applicant type (all applicants first), as Markdown."""
    rows = metrics[metrics["model"] == "model"]
    groups = ["all", *[g for g in APPLICANT_TYPE_LABELS if g in set(rows["group"])]]
    shown = [(c, h) for c, h in _METRICS if c in rows]
    lines = ["| applicants | " + " | ".join(h for _, h in shown) + " |",
             "|---" * (len(shown) + 1) + "|"]
    for g in groups:
        r = rows[rows["group"] == g]
        if len(r):
            values = " | ".join(f"{float(r[c].iloc[0]):.4f}" for c, _ in shown)
            lines.append(f"| {APPLICANT_TYPE_LABELS.get(g, 'all applicants')} | {values} |")
    return "\n".join(lines)


def render_model_card(cfg: TrainConfig, metrics: pd.DataFrame, summary: dict[str, Any],
                      version: str | None, simulated: bool) -> str:
    """The card as Markdown."""
    data = ("Match seasons **simulated** on the real program catalog and decided by deferred "
            "acceptance (docs/simulation.md): no real applicant's data. Program attributes "
            "other than the published interview rates (positions, visa sponsorship, IMG-support "
            "markers, screens, uniformed-services status) are derived or simulated "
            "(docs/catalog.md)." if simulated else
            "The applications and outcomes in the run's data folder (observed data).")
    baselines = ", ".join(MODEL_LABELS[m] for m in ("logistic", "lookup") if m in MODEL_LABELS)
    return f"""# Model card: SmartPick match model{f' (version {version})' if version else ''}

## Intended use
q(applicant, program): the probability that a US residency program would take an applicant had
they ranked it first. Used to rank programs by expected value and to plan an application list
(`MatchPredictor.rank` / `plan`, the served model). Users: applicants, above all international
medical graduates, through SmartPick; backend services; data scientists comparing models.

## Data
{data} Trained on seasons {', '.join(map(str, cfg.data.train_seasons))}, validated on
{cfg.data.validation_season}, a season it never saw; applicants, never rows, are held out for
early stopping and calibration.

## Metrics on the validation season
{_metrics_table(metrics)}

Compared with {baselines} and the simulator's oracle (the true q, a floor no model beats);
boosting iterations {summary.get('n_iter')}, calibration {summary.get('calibration')}.

## Limitations
- What q says about a real applicant is only as true as the simulated market it learned from.
- A list's P(match) from 1 − ∏(1 − q) is over-confident (programs' decisions share the
  applicant's unseen strengths); use the corrected P(match).
- Programs an applicant cannot enter (no visa sponsored for one who needs it, uniformed-services
  programs) get q = 0 by rule, not by the model.
- Applicants of a type or specialty the training seasons did not contain are outside what it has
  seen.

## Retrain
`smartpick train --config pipelines/train.toml` (or `make run`): simulates the seasons if needed,
trains, evaluates against the baselines and the oracle, logs to MLflow and moves the `champion`
alias only if the new model beats the current one on the same validation rows.
"""
