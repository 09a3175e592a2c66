"""Loading a logged MLflow model trusts only the project's own type list, never the one the
model's ``MLmodel`` file carries (issue #19): an edited ``MLmodel`` cannot make the loader build
another class, through ``MatchPredictor.load("models:/…")`` or the served pyfunc."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import skops.io as sio
import yaml

from smartpick_ml.contracts.errors import ModelIntegrityError
from smartpick_ml.modelling.logged_model import load_logged_folder
from tests.conftest import isolated_mlflow


class Planted:
    """A class no SmartPick model is built from: what an attacker would make the loader build."""

    def __init__(self) -> None:
        self.payload = "ran"


@pytest.fixture(scope="module")
def logged_folder(small_training_run, tmp_path_factory) -> Path:
    import mlflow

    world = small_training_run
    dest = tmp_path_factory.mktemp("logged")
    with isolated_mlflow(world.tracking_uri, cwd=world.root):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{world.registered_model}@champion", dst_path=str(dest))
    return Path(local)


def test_the_logged_model_loads_with_its_catalog(logged_folder) -> None:
    from smartpick_ml.modelling.model import MatchModel

    model, manifest = load_logged_folder(logged_folder, "champion")
    assert isinstance(model, MatchModel)
    assert manifest["catalog"]["sha256"]


def test_an_edited_mlmodel_cannot_make_the_loader_build_another_class(logged_folder,
                                                                      tmp_path) -> None:
    folder = tmp_path / "edited"
    shutil.copytree(logged_folder, folder)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    skops_file = folder / mlmodel["flavors"]["sklearn"]["pickled_model"]
    sio.dump(Planted(), skops_file)
    planted = f"{Planted.__module__}.{Planted.__qualname__}"
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = [
        *mlmodel["flavors"]["sklearn"].get("skops_trusted_types", []), planted]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    # what MLflow's own loader does with the edited file: it builds the planted class
    import mlflow

    assert isinstance(mlflow.sklearn.load_model(str(folder)), Planted)
    with pytest.raises(ModelIntegrityError, match=planted.replace(".", r"\.")):
        load_logged_folder(folder, "edited")
    from smartpick_ml.serving.pyfunc import _load_pyfunc

    with pytest.raises(ModelIntegrityError, match="Planted"):
        _load_pyfunc(str(folder))
