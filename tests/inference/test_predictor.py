"""MatchPredictor as a service calls it: ``load`` ranks the catalog the model was trained with
(verified, never the working directory's)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

from smartpick_ml.contracts.errors import ModelIntegrityError
from smartpick_ml.data.catalog import synthetic_catalog
from smartpick_ml.data.io import frame_hash, write_parquet_atomic
from smartpick_ml.inference.predictor import MatchPredictor
from smartpick_ml.modelling import persist


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


@pytest.fixture
def model_copy(world, tmp_path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(world.model_dir, dest)
    return dest


def _other_catalog() -> pd.DataFrame:
    """A valid catalog that is not the training one (another synthetic draw)."""
    return synthetic_catalog(seed=11)


def _saved_catalog(model_dir: Path) -> Path:
    return model_dir / persist.read_manifest(model_dir)["catalog"]["file"]


# ------------------------------------------------------------------- the catalog, verified


def test_load_ranks_the_catalog_saved_with_the_model_not_the_working_directory(
        world, tmp_path, monkeypatch):
    """Issue #20 item 4: from a folder holding another catalog in data/raw, ``load`` took that
    one."""
    write_parquet_atomic(_other_catalog(), tmp_path / "data" / "raw" / "programs.parquet")
    monkeypatch.chdir(tmp_path)
    manifest = persist.read_manifest(world.model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model's own catalog: nothing to warn about
        predictor = MatchPredictor.load(world.model_dir)
    assert frame_hash(predictor.programs) == manifest["training_data_sha256"]["programs"]
    used = predictor.manifest["catalog_used"]
    assert used["trained_with"] and used["sha256"] == manifest["catalog"]["sha256"]
    assert Path(used["source"]) == _saved_catalog(world.model_dir)


def test_training_saves_the_catalog_beside_the_model_and_records_it(world):
    manifest = persist.read_manifest(world.model_dir)
    path = _saved_catalog(world.model_dir)
    assert path.parent == world.model_dir and path.name.startswith(persist.CATALOG_PREFIX)
    saved = pd.read_parquet(path)
    assert frame_hash(saved) == manifest["catalog"]["sha256"] \
        == manifest["training_data_sha256"]["programs"]


def _replace_catalog(path: Path) -> None:
    write_parquet_atomic(_other_catalog(), path)


def _drop_a_program(path: Path) -> None:
    write_parquet_atomic(pd.read_parquet(path).iloc[1:], path)


def _rename_a_program(path: Path) -> None:
    table = pd.read_parquet(path)
    table.loc[0, "name"] = "Somewhere Else Program"
    write_parquet_atomic(table, path)


def _not_parquet(path: Path) -> None:
    path.write_bytes(b"not a parquet file")


@pytest.mark.parametrize("damage", [_replace_catalog, _drop_a_program, _rename_a_program,
                                    _not_parquet],
                         ids=["another-catalog", "one-program-fewer", "one-name-changed",
                              "not-parquet"])
def test_a_catalog_that_is_not_the_recorded_one_is_refused(model_copy, damage):
    path = _saved_catalog(model_copy)
    damage(path)
    with pytest.raises(ModelIntegrityError, match=path.name):
        MatchPredictor.load(model_copy)


def test_a_missing_or_unrecorded_catalog_is_refused(model_copy):
    path = _saved_catalog(model_copy)
    path.unlink()
    with pytest.raises(ModelIntegrityError, match=f"missing.*{path.name}"):
        MatchPredictor.load(model_copy)
    manifest_path = model_copy / persist.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    del manifest["catalog"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="records no catalog"):
        MatchPredictor.load(model_copy)


@pytest.mark.parametrize("name", ["../programs.parquet", "/etc/passwd", "", 7])
def test_a_catalog_named_outside_the_model_folder_is_refused(model_copy, name):
    manifest_path = model_copy / persist.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["catalog"]["file"] = name
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="names no valid catalog"):
        MatchPredictor.load(model_copy)


def test_another_catalog_only_when_passed_explicitly_warned_and_recorded(world):
    other = _other_catalog()
    with pytest.warns(UserWarning, match="not the one the model was trained with"):
        predictor = MatchPredictor.load(world.model_dir, programs=other)
    used = predictor.manifest["catalog_used"]
    assert used == {"source": "a DataFrame passed as programs=", "sha256": frame_hash(other),
                    "trained_with": False}
    assert set(predictor.programs["program_id"]) == set(other["program_id"])
    # the training catalog passed explicitly is no surprise: recorded, not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = MatchPredictor.load(world.model_dir, programs=world.raw_dir / "programs.parquet")
    assert same.manifest["catalog_used"]["trained_with"]


def test_an_explicit_catalog_is_held_to_the_programs_contract(world):
    from smartpick_ml.contracts.errors import DataValidationError

    with pytest.raises(DataValidationError, match="positions"):
        MatchPredictor.load(world.model_dir,
                            programs=_other_catalog().assign(positions=-1))


@pytest.fixture
def champion_uri(world):
    with world.isolated_mlflow(world.tracking_uri):
        yield f"models:/{world.registered_model}@champion"


def test_an_mlflow_model_ranks_the_catalog_logged_with_it(world, champion_uri, tmp_path,
                                                           monkeypatch):
    """Issue #20 item 4: ``models:/…`` took ./data/raw/programs.parquet, not the logged catalog."""
    write_parquet_atomic(_other_catalog(), tmp_path / "data" / "raw" / "programs.parquet")
    monkeypatch.chdir(tmp_path)
    predictor = MatchPredictor.load(champion_uri)
    trained = persist.read_manifest(world.model_dir)["training_data_sha256"]["programs"]
    assert frame_hash(predictor.programs) == trained
    used = predictor.manifest["catalog_used"]
    assert used["trained_with"] and Path(used["source"]).name == "programs.parquet"
    assert predictor.manifest["source"] == champion_uri


def test_an_mlflow_model_with_a_changed_catalog_is_refused(world, champion_uri, tmp_path,
                                                           monkeypatch):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=champion_uri))
    changed = tmp_path / "model"
    shutil.copytree(local, changed)
    _drop_a_program(changed / "programs.parquet")
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **_: str(changed))
    with pytest.raises(ModelIntegrityError, match="programs.parquet"):
        MatchPredictor.load(champion_uri)
