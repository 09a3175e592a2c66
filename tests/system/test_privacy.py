"""Personal data: no raw applicant record leaves a training run except in data products (issue #6).

Two applicants of the small world -- one in a training season, one in the validation season --
get unique marker ids. A whole tracked run (`smartpick train`, through the CLI) then runs on those
tables, and every place a person or a service could read is scanned for the markers:

- the command's stdout and stderr, and every log record of every logger (DEBUG and up);
- MLflow: run params (keys and values), tags, metric names, the registered model's versions and
  tags, the raw tracking database, and every file in the run's artifact root (zip members --
  the skops model -- and Parquet cells decompressed);
- ``models/`` (the artifact services load, its manifest, anything beside it) and the run's
  report files (``processed/run/``: plots, metrics, report).

Decision (documented in ``docs/reliability.md``): Parquet *data products* in ``data/processed``
-- ``features.parquet``, the oracle cache and ``run/validation_scores.parquet`` -- carry the
pseudonymous ``applicant_id`` by design (they are the training data, protected like the raw
tables) and are not scanned; nothing of them is logged to MLflow (that is scanned).
"""

from __future__ import annotations

import io
import logging
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

MARKERS = ("PII-MARKER-7f3a9", "PII-MARKER-c41e2")
#: Data products that may hold applicant ids (see the module docstring).
DATA_PRODUCTS = ("features.parquet", "validation_scores.parquet")


def _data_product(p: Path) -> bool:
    return p.name in DATA_PRODUCTS or (p.name.startswith("oracle_") and p.suffix == ".parquet")


def _plant(raw_src: Path, raw_dst: Path, seasons: tuple[int, int]) -> None:
    """Copy the raw tables, renaming one applicant per season (in applicants and applications)."""
    shutil.copytree(raw_src, raw_dst)
    applicants = pd.read_parquet(raw_dst / "applicants.parquet")
    applications = pd.read_parquet(raw_dst / "applications.parquet")
    for marker, season in zip(MARKERS, seasons, strict=True):
        # an applicant with several applications, so the marker flows through every split
        counts = applications[applications["season"] == season]["applicant_id"].value_counts()
        old = counts.index[0]
        for table in (applicants, applications):
            hit = (table["applicant_id"] == old) & (table["season"] == season)
            assert hit.any()
            table.loc[hit, "applicant_id"] = marker
    applicants.to_parquet(raw_dst / "applicants.parquet", index=False)
    applications.to_parquet(raw_dst / "applications.parquet", index=False)


def _leaks(data: bytes) -> list[str]:
    return [m for m in MARKERS if m.encode() in data]


def _scan_file(path: Path) -> list[str]:
    """Markers found in a file: raw bytes, each zip member decompressed, every Parquet cell."""
    data = path.read_bytes()
    found = _leaks(data)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                found += _leaks(name.encode()) + _leaks(z.read(name))
    if data[:4] == b"PAR1":
        frame = pd.read_parquet(path)
        text = frame.astype(str).to_csv() + ",".join(map(str, frame.columns))
        found += _leaks(text.encode())
    return found


def _scan_tree(root: Path, skip_data_products: bool = False) -> dict[str, list[str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not (skip_data_products and _data_product(p)):
            hits = _scan_file(p)
            if hits:
                out[str(p.relative_to(root))] = hits
    return out


@pytest.fixture(scope="module")
def marked_run(small_training_run, tmp_path_factory):
    """A whole tracked training run (CLI) on tables with the two markers planted."""
    from mlflow import MlflowClient

    from smartpick_ml.cli import main

    w = small_training_run
    root = tmp_path_factory.mktemp("privacy")
    _plant(w.raw_dir, root / "raw", (w.cfg.data.train_seasons[0], w.cfg.data.validation_season))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    data = w.config_with(
        data={"raw_dir": str(root / "raw"), "processed_dir": str(root / "processed")},
        model={"max_iter": 10},
        evaluation={"oracle_replicates": 2, "importance_rows": 500, "importance_repeats": 1,
                    "logistic_rows": 5000},
        tracking={"tracking_uri": tracking_uri}, output={"model_dir": str(root / "models")})
    config = w.write_toml(root / "train.toml", data)
    with w.isolated_mlflow():
        MlflowClient(tracking_uri=tracking_uri).create_experiment(
            w.cfg.tracking.experiment, artifact_location=(root / "mlartifacts").as_uri())

    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        with w.isolated_mlflow(cwd=root), threadpool_limits(limits=1, user_api="openmp"):
            result = CliRunner().invoke(main, ["train", "--config", str(config)])
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    assert result.exit_code == 0, (result.output, result.exception)
    return root, result, logs.getvalue(), tracking_uri, w.cfg.tracking.registered_model


def test_markers_flow_into_the_training_data(marked_run):
    """The planted ids are really used (else the scan below proves nothing)."""
    root, *_ = marked_run
    features = pd.read_parquet(root / "processed" / "features.parquet")
    assert set(MARKERS) <= set(features["applicant_id"])


def test_no_marker_in_console_or_logs(marked_run):
    _, result, logs, *_ = marked_run
    stderr = result.stderr if result.stderr_bytes is not None else ""
    assert "validation season" in result.output  # the run did print its summary
    assert len(logs) > 0  # and the log handler saw records
    for text, where in ((result.output, "stdout"), (stderr, "stderr"), (logs, "logs")):
        assert not _leaks(text.encode()), where


def test_no_marker_in_mlflow(marked_run):
    from mlflow import MlflowClient

    root, _, _, uri, name = marked_run
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for run in runs:
        d = run.data
        text = repr(sorted(d.params.items())) + repr(sorted(d.tags.items())) + repr(
            sorted(d.metrics))
        assert not _leaks(text.encode()), run.info.run_id
    for mv in client.search_model_versions(f"name='{name}'"):
        assert not _leaks(repr((mv.tags, mv.description, mv.source)).encode())
    # the raw store (every table: params, tags, metrics, inputs, traces, registry)
    db = root / "mlflow.db"
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for t in tables:
            rows = con.execute(f'select * from "{t}"').fetchall()  # noqa: S608 (test)
            assert not _leaks(repr(rows).encode()), t
    artifacts = _scan_tree(root / "mlartifacts")
    assert list((root / "mlartifacts").rglob("*.skops")), "the model artifact was scanned"
    assert not artifacts, artifacts


def test_no_marker_in_models_or_run_reports(marked_run):
    root, *_ = marked_run
    assert (root / "models" / "manifest.json").is_file()
    assert not _scan_tree(root / "models")
    run_dir = root / "processed" / "run"
    assert any(p.suffix == ".png" for p in run_dir.iterdir())
    # plots, metrics, the run report, manifests: everything in processed/ but the data products
    assert not _scan_tree(root / "processed", skip_data_products=True)
