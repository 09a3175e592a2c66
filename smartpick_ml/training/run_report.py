"""The run report: one self-contained HTML page per training run, and what notebooks read back.

Every training run ends by rendering a report — data summary, metrics
table (model, baselines, oracle; all applicants and per applicant type), the run's plots, the
alias decision and the config — as **one HTML file with the PNGs embedded**. One file, because it
is then written atomically like every other output (temporary name, rename): a run that dies never
leaves a report whose plots are missing or belong to another run. It is written

- to ``<processed_dir>/run/report.html`` beside the plots, for every run;
- to ``<model_dir>/report.html`` beside the model whenever the model is saved there (champion, or
  an untracked run), so ``models/`` always describes the model it holds;
- to the MLflow run as the artifact ``report/report.html``.

The second half of this module is for notebooks: :func:`project_paths` resolves where a run's
files are from a training config, and :func:`champion_run` reads the champion's metrics and
permutation importance back from MLflow.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.config import TrainConfig, load_train_config
from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS
from smartpick_ml.data.io import write_text_atomic
from smartpick_ml.modelling.labels import LABEL
from smartpick_ml.training.evaluate import ALL_GROUP, REPORT_TYPE_ORDER

REPORT_NAME = "report.html"
#: Validation rows scored by every model (ids, type, label, q per model; no applicant features).
SCORES_NAME = "validation_scores.parquet"
IMPORTANCE_NAME = "permutation_importance.csv"
#: How each scorer is named in reports.
MODEL_LABELS: dict[str, str] = {
    "model": "gradient boosting (calibrated)",
    "logistic": "baseline: logistic regression, same features",
    "lookup": "baseline: published-rate lookup",
    "oracle": "oracle: the true q (floor)",
}
#: Metric columns of the report's table, in order, with their headings.
METRIC_HEADINGS: dict[str, str] = {
    "n": "rows", "base_rate": "label rate", "log_loss": "log-loss",
    "log_loss_vs_reference": "× oracle", "brier": "Brier", "ece": "ECE", "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
}
#: What each of training's plots shows, by its file name.
PLOT_CAPTIONS: dict[str, str] = {
    "reliability_by_type.png": "Calibration of q by applicant type: every model against the "
                               "diagonal (IMGs first).",
    "roc_pr.png": "ROC and precision-recall curves on the validation season.",
    "importance.png": "Permutation importance: log-loss increase when one input is shuffled.",
    "pmatch_deciles.png": "Per-applicant P(match) by decile against realised matches: "
                          "the independence formula is over-confident; the corrected one is not.",
}


# ----------------------------------------------------------------------------- data summary


def data_summary(splits: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per split: seasons, pairs, applicants (all and per type) and the label rate.

    ``splits`` maps a split name to its applicant × program rows (with ``applicant_id``,
    ``applicant_type``, ``season`` and the ``would_take`` label).
    """
    rows = []
    for name, part in splits.items():
        missing = [c for c in ("applicant_id", "applicant_type", "season", LABEL)
                   if c not in part.columns]
        if missing:
            raise ValueError(f"splits[{name!r}]: column(s) {missing} missing")
        per_type = part.drop_duplicates("applicant_id")["applicant_type"].astype(str)
        counts = per_type.value_counts()
        row: dict[str, Any] = {
            "split": name,
            "seasons": ", ".join(str(int(s)) for s in sorted(part["season"].unique())),
            "pairs": len(part),
            "applicants": int(part["applicant_id"].nunique()),
            "label_rate": float(part[LABEL].astype(float).mean()) if len(part) else np.nan,
        }
        row.update({APPLICANT_TYPE_LABELS[t]: int(counts.get(t, 0)) for t in REPORT_TYPE_ORDER})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- rendering


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        if isinstance(v, int | np.integer):
            return f"{v:,}"
        return html.escape(str(v), quote=False)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def metrics_view(metrics: pd.DataFrame) -> pd.DataFrame:
    """Training's metrics table with readable model and group names, "all applicants" first."""
    df = metrics.copy()
    order = {g: i for i, g in enumerate([ALL_GROUP, *REPORT_TYPE_ORDER])}
    df["_g"] = df["group"].map(order).fillna(len(order))
    df["_m"] = df["model"].map({m: i for i, m in enumerate(MODEL_LABELS)}).fillna(len(MODEL_LABELS))
    df = df.sort_values(["_g", "_m"], kind="stable")
    out = pd.DataFrame({
        "applicants": df["group"].map(lambda g: "all applicants" if g == ALL_GROUP
                                      else APPLICANT_TYPE_LABELS.get(g, g)),
        "model": df["model"].map(lambda m: MODEL_LABELS.get(m, m))})
    for col, heading in METRIC_HEADINGS.items():
        if col in df:
            out[heading] = df[col].astype(int) if col == "n" else df[col].astype(float)
    return out.reset_index(drop=True)


def oracle_distance(metrics: pd.DataFrame) -> pd.DataFrame:
    """Log-loss over the oracle's, one row per model, one column per applicant type (IMGs first,
    then all applicants): how far each model sits above the floor, 1.0 being the truth itself."""
    if "log_loss_vs_reference" not in metrics:
        raise ValueError("metrics: no log_loss_vs_reference column (was the oracle scored?)")
    wide = metrics.pivot(index="model", columns="group", values="log_loss_vs_reference")
    groups = [g for g in (*REPORT_TYPE_ORDER, ALL_GROUP) if g in wide.columns]
    models = [m for m in MODEL_LABELS if m in wide.index]
    wide = wide.loc[models, groups]
    wide.index = [MODEL_LABELS[m] for m in models]
    wide.columns = ["all applicants" if g == ALL_GROUP else APPLICANT_TYPE_LABELS.get(g, g)
                    for g in groups]
    return wide


def scored_models(scores: pd.DataFrame) -> dict[str, str]:
    """The scorers with a q on every row of a validation-scores table (the oracle exists only on
    simulated data), as the ``prob_columns`` mapping that ``evaluate`` functions take."""
    return {m: m for m in MODEL_LABELS if m in scores and scores[m].notna().all()}


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = PLOT_CAPTIONS.get(path.name, "")
    return (f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption><code>{html.escape(path.name)}</code> — {html.escape(caption)}"
            "</figcaption></figure>")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}figure{margin:1em 0 2em}
figcaption{font-size:13px;color:#555}pre{background:#f6f6f6;padding:1em;font-size:12px;
overflow-x:auto}.decision{font-size:1.1em;padding:.6em 1em;background:#eef6ee;
border-left:4px solid #3a3}.banner{padding:.6em 1em;background:#fff6e0;
border-left:4px solid #e0a000;font-size:1.05em}"""

#: What the reader must know before any figure: where the data came from.
SIMULATED_BANNER = (
    "<strong>Simulated data.</strong> Every applicant, application and outcome in this report "
    "comes from Match seasons simulated on the real program catalog and decided by deferred "
    "acceptance (docs/simulation.md), not from real applicants. The figures say how well the "
    "model learns that market; what they tell a real applicant is only as true as the "
    "simulation.")
OBSERVED_BANNER = ("<strong>Observed data.</strong> Applications and outcomes from the tables in "
                   "the run's data folder; no oracle is known for them.")


def render_run_report(cfg: TrainConfig, data: pd.DataFrame, metrics: pd.DataFrame,
                      plots: Mapping[str, Path], importance: pd.DataFrame,
                      reliability: pd.DataFrame, summary: Mapping[str, Any], decision: str,
                      run_id: str | None, model_version: str | None,
                      timings: Mapping[str, float]) -> str:
    """The run report as one HTML page (PNGs embedded). Pure: reads the plots, writes nothing,
    so a failure here happens before anything is published."""
    missing = [str(p) for p in plots.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"run report: plot(s) not on disk: {missing}")
    season = cfg.data.validation_season
    title = f"SmartPick training run — validation season {season}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    ident = (f"MLflow run <code>{html.escape(run_id)}</code>, registered model "
             f"<code>{html.escape(cfg.tracking.registered_model)}</code> version "
             f"{html.escape(str(model_version))}" if run_id else "not tracked in MLflow")
    oracle = {k: v for k, v in summary.items() if str(k).startswith("oracle_")}
    facts = pd.DataFrame({
        "": ["boosting iterations", "calibration", *[k.replace("_", " ") for k in oracle],
             *[f"seconds: {k}" for k in timings]],
        "value": [str(summary.get("n_iter")), str(summary.get("calibration")),
                  *[f"{float(v):.4g}" for v in oracle.values()],
                  *[f"{float(v):.1f}" for v in timings.values()]]})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{when} · {ident}</p>",
        f"<p class='banner'>{SIMULATED_BANNER if oracle else OBSERVED_BANNER}</p>",
        "<h2>Alias decision</h2>",
        f"<p class='decision'>{html.escape(decision, quote=False)}</p>",
        "<h2>Data</h2>",
        f"<p>Trained on seasons {', '.join(map(str, cfg.data.train_seasons))}, validated on "
        f"{season} (a season the model never saw); applicants, never rows, are held out. "
        f"Label: <code>{LABEL}</code> (the program would take the applicant).</p>",
        _table(data),
        "<h2>Metrics on the validation season</h2>",
        "<p>Lower is better for log-loss, Brier and ECE; × oracle is the model's log-loss over "
        "the oracle's on the same rows (1.0 = as good as the truth).</p>",
        _table(metrics_view(metrics)),
        "<h2>Plots</h2>", *[_image(Path(p)) for p in plots.values()],
        "<h2>What drives q (permutation importance, top 15)</h2>",
        _table(importance.head(15), digits=5),
        "<h2>P(match) reliability by decile (corrected)</h2>", _table(reliability, digits=3),
        with_markers(PROMISE_PENDING),
        "<h2>Run facts</h2>", _table(facts),
        "<h2>Config</h2>",
        "<pre>" + html.escape(json.dumps(cfg.model_dump(), indent=2, default=str), quote=False)
        + "</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


#: the report's section on the promise, written by ``smartpick evaluate-plans`` for this model
PROMISE_START, PROMISE_END = "<!-- smartpick:promise -->", "<!-- /smartpick:promise -->"
PROMISE_PENDING = ("<h2>Does following the plan help? (the promise, measured)</h2><p>Not measured "
                   "for this model yet: <code>smartpick evaluate-plans</code> re-runs the "
                   "validation season with applicants following SmartPick's plan and writes its "
                   "headline here (<code>docs/promise.md</code>).</p>")


def with_markers(section_html: str) -> str:
    return f"{PROMISE_START}\n{section_html}\n{PROMISE_END}"


def with_promise_section(report_html: str, section_html: str) -> str:
    """The report with its promise section replaced by ``section_html`` (added before the run
    facts in a report rendered before the section existed)."""
    start, end = report_html.find(PROMISE_START), report_html.find(PROMISE_END)
    if 0 <= start < end:
        return (report_html[:start] + with_markers(section_html)
                + report_html[end + len(PROMISE_END):])
    anchor = report_html.find("<h2>Run facts</h2>")
    anchor = anchor if anchor >= 0 else report_html.rfind("</body>")
    return report_html[:anchor] + with_markers(section_html) + "\n" + report_html[anchor:]


def write_report(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a rendered report atomically (a reader never sees half of it)."""
    write_text_atomic(path, text)
    return Path(path)


def log_report(path: Path, run_id: str) -> None:
    """Attach the report to an MLflow run that has already ended (the tracking URI is the one
    ``tracking.setup_mlflow`` set for the run)."""
    from mlflow import MlflowClient

    MlflowClient().log_artifact(run_id, str(path), artifact_path="report")


# ----------------------------------------------------------------------------- for notebooks


@dataclass(frozen=True)
class ProjectPaths:
    """Where one training config's inputs and outputs live, as absolute paths."""

    root: Path
    config: Path
    raw_dir: Path
    processed_dir: Path
    run_dir: Path
    model_dir: Path
    tracking_uri: str
    registered_model: str
    validation_season: int


def find_root(start: Path | None = None) -> Path:
    """The project folder: the nearest parent of ``start`` (default: cwd) holding
    ``pipelines/train.toml`` — notebooks run from ``notebooks/``, the CLI from the root."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pipelines" / "train.toml").is_file():
            return d
    return here


def project_paths(config: str | os.PathLike[str] | None = None) -> ProjectPaths:
    """Resolve a training config's folders and tracking URI against the project root.

    ``config`` defaults to ``$SMARTPICK_CONFIG``, else ``pipelines/train.toml``: a notebook run on
    another world (e.g. a small test season) only needs that one variable. Relative paths in the
    config are taken from the project root, where ``smartpick train`` runs; an empty tracking URI
    means ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db`` — as in training.
    """
    root = find_root()
    path = Path(config or os.environ.get("SMARTPICK_CONFIG") or root / "pipelines" / "train.toml")
    if not path.is_absolute():
        path = (root / path) if (root / path).exists() else path.resolve()
    cfg = load_train_config(path)

    def at_root(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else root / q

    uri = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{at_root(uri[len('sqlite:///'):])}"
    processed = at_root(cfg.data.processed_dir)
    return ProjectPaths(root=root, config=path, raw_dir=at_root(cfg.data.raw_dir),
                        processed_dir=processed, run_dir=processed / "run",
                        model_dir=at_root(cfg.output.model_dir), tracking_uri=uri,
                        registered_model=cfg.tracking.registered_model,
                        validation_season=cfg.data.validation_season)


@dataclass
class ChampionRun:
    """The registered model behind an alias and what its training run logged."""

    name: str
    version: str
    run_id: str
    metrics: pd.DataFrame  # model, group, metric, value
    decision: str
    importance: pd.DataFrame | None


def metrics_from_mlflow(values: Mapping[str, float]) -> pd.DataFrame:
    """MLflow metrics named ``<model>.<group>.<metric>`` as a long table (other keys dropped)."""
    rows = []
    for key, v in values.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] in MODEL_LABELS:
            rows.append({"model": parts[0], "group": parts[1], "metric": parts[2],
                         "value": float(v)})
    return pd.DataFrame(rows, columns=["model", "group", "metric", "value"])


def champion_run(tracking_uri: str, name: str = "smartpick-match",
                 alias: str = "champion") -> ChampionRun:
    """Read the ``alias`` version of ``name`` and its run's metrics, decision and importance."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = client.get_model_version_by_alias(name, alias)
    run = client.get_run(mv.run_id)
    importance = None
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as BAR

    bar_setting = os.environ.get(BAR.name)
    os.environ[BAR.name] = "false"  # one small file: no download bar in a notebook
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=f"evaluation/{IMPORTANCE_NAME}", dst_path=tmp,
                tracking_uri=tracking_uri)
            importance = pd.read_csv(local)
        except Exception:  # an older run without the artifact: the rest is still worth showing
            importance = None
        finally:
            if bar_setting is None:
                os.environ.pop(BAR.name, None)
            else:
                os.environ[BAR.name] = bar_setting
    return ChampionRun(name=name, version=str(mv.version), run_id=mv.run_id,
                       metrics=metrics_from_mlflow(run.data.metrics),
                       decision=run.data.tags.get("alias_decision", ""), importance=importance)


__all__ = ["data_summary", "render_run_report", "write_report", "log_report", "metrics_view",
           "oracle_distance", "scored_models",
           "project_paths", "ProjectPaths", "champion_run", "ChampionRun", "metrics_from_mlflow",
           "REPORT_NAME", "SCORES_NAME", "IMPORTANCE_NAME"]
