"""Determinism: the same seed and config give the same data, model and metrics (issue #6).

- Simulation: one season at scale 0.02 on the synthetic catalog, twice, into two folders: every
  table is byte-identical Parquet (and a different seed gives a different season, so the check
  can fail).
- Training: the small world's config run twice (untracked, so no MLflow state carries over) into
  two processed / model folders: identical metrics, features and predictions, of the trained and
  of the saved-and-reloaded models (skops bytes themselves differ: zip timestamps and member
  names).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.contracts.config import load_simulate_config, load_train_config
from smartpick_ml.data.io import sha256_file
from smartpick_ml.modelling import persist

TABLES = ("programs", "applicants", "applications", "program_outcomes")


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


def _simulate(tmp_path, name: str, seed: int) -> dict[str, str]:
    from conftest import SIMULATE_TOML

    from smartpick_ml.simulation.season import simulate_to_disk

    out = tmp_path / name
    cfg = load_simulate_config(SIMULATE_TOML, seasons=[2025], scale=0.02, catalog="synthetic",
                               seed=seed, output_dir=str(out))
    paths = simulate_to_disk(cfg)
    return {t: sha256_file(paths[t]) for t in TABLES}


def test_same_seed_same_tables_byte_for_byte(tmp_path) -> None:
    first = _simulate(tmp_path, "a", seed=5)
    again = _simulate(tmp_path, "b", seed=5)
    assert first == again
    other = _simulate(tmp_path, "c", seed=6)
    assert other["applicants"] != first["applicants"]
    assert other["applications"] != first["applications"]
    # the manifests agree too (row counts, hashes, match rates)
    a = json.loads((tmp_path / "a" / "simulation_manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "simulation_manifest.json").read_text())
    a.pop("output_dir", None), b.pop("output_dir", None)
    assert a == b


def _train(world, tmp_path, name: str):
    data = world.config_with(
        data={"processed_dir": str(tmp_path / name / "processed")},
        model={"max_iter": 10},
        evaluation={"oracle_replicates": 2, "importance_rows": 500, "importance_repeats": 1,
                    "logistic_rows": 5000},
        output={"model_dir": str(tmp_path / name / "models")})
    # the oracle is cached per data hash: share the world's cache so each run does not redo it
    processed = tmp_path / name / "processed"
    processed.mkdir(parents=True)
    for cached in world.processed_dir.glob("oracle_*.parquet"):
        (processed / cached.name).write_bytes(cached.read_bytes())
    cfg = load_train_config(world.write_toml(tmp_path / name / "train.toml", data))
    return world.train(cfg, track=False), cfg


def test_same_config_same_model_metrics_and_predictions(world, tmp_path) -> None:
    first, cfg_a = _train(world, tmp_path, "a")
    again, cfg_b = _train(world, tmp_path, "b")
    pd.testing.assert_frame_equal(first.metrics, again.metrics, check_exact=True)
    pd.testing.assert_frame_equal(first.applicant_reliability, again.applicant_reliability,
                                  check_exact=True)
    # the saved models: skops files are zips whose member names (object ids) and timestamps
    # change from run to run, so their bytes differ; what they load to must not
    man_a = persist.read_manifest(cfg_a.output.model_dir)
    man_b = persist.read_manifest(cfg_b.output.model_dir)
    assert man_a["metrics"] == man_b["metrics"]
    assert man_a["training_data_sha256"] == man_b["training_data_sha256"]
    saved_a, _ = persist.load_model(cfg_a.output.model_dir)
    saved_b, _ = persist.load_model(cfg_b.output.model_dir)
    sample = world.validation.sample(n=2000, random_state=9)
    q = first.model.predict_proba(sample)
    for other in (again.model, saved_a, saved_b):
        np.testing.assert_array_equal(other.predict_proba(sample), q)
    # the processed features are the same table
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "processed" / "features.parquet"),
        pd.read_parquet(tmp_path / "b" / "processed" / "features.parquet"), check_exact=True)
