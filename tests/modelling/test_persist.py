"""The model loader refuses what is not a SmartPick model, with ``ModelIntegrityError`` and never
a traceback: a manifest that is not a JSON object (or too deep to read), an artifact that holds
something other than a ``MatchModel`` even when the manifest matches its bytes. Issue #20 item
5: both reached ``AttributeError`` / ``RecursionError``, or a model failing in ``predict_proba``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from click.testing import CliRunner

from smartpick_ml.cli import main
from smartpick_ml.contracts.errors import ModelIntegrityError
from smartpick_ml.data.io import sha256_file
from smartpick_ml.inference.predictor import MatchPredictor
from smartpick_ml.modelling import persist

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE = REPO_ROOT / "examples" / "profile_non_us_img.json"


@pytest.fixture
def model_copy(small_training_run, tmp_path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(small_training_run.model_dir, dest)
    return dest


def _loaders(model_dir: Path):
    """Every way a service or a person loads a model directory."""
    def cli() -> None:
        result = CliRunner().invoke(main, ["rank", "--profile", str(PROFILE), "--model",
                                           str(model_dir)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "error:" in result.output and len(result.output) < 1000
        raise ModelIntegrityError(result.output)

    return {"persist.load_model": lambda: persist.load_model(model_dir),
            "MatchPredictor.load": lambda: MatchPredictor.load(model_dir), "smartpick rank": cli}


@pytest.mark.parametrize("text, said", [
    ("[1]", "must be a JSON object, got list"),
    ('"a string"', "must be a JSON object, got str"),
    ("3.5", "must be a JSON object, got float"),
    ("null", "must be a JSON object, got NoneType"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"artifact": ' + "[" * 200_000 + "]" * 200_000 + "}", "nested too deeply"),
    ("{not json", "not valid JSON"),
], ids=["list", "string", "number", "null", "nested-200k", "nested-200k-in-a-field", "not-json"])
def test_a_malformed_manifest_is_refused(model_copy, text, said):
    (model_copy / persist.MANIFEST_NAME).write_text(text)
    for name, load in _loaders(model_copy).items():
        with pytest.raises(ModelIntegrityError, match=said):
            load()
        assert name  # every loader, the same verdict


@pytest.mark.parametrize("field, value", [
    ("artifact", ["a", "list"]), ("artifact", {"nested": 1}), ("artifact", None),
    ("sha256", 12), ("sklearn_version", "9" * 100_000),
])
def test_manifest_fields_of_the_wrong_type_are_refused_briefly(model_copy, field, value):
    path = model_copy / persist.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest[field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError) as info:
        persist.load_model(model_copy, strict=True)
    assert len(str(info.value)) < 600


def _consistent_artifact(model_dir: Path, obj: object) -> None:
    """Replace the artifact with ``obj`` saved by skops, and make the manifest match it."""
    artifact = persist.artifact_path(model_dir)
    artifact.write_bytes(sio.dumps(obj))
    path = model_dir / persist.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["sha256"] = sha256_file(artifact)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("obj, type_name", [([1, 2, 3], "list"), ({"a": 1}, "dict"),
                                             ("text", "str")])
def test_an_artifact_that_is_not_a_match_model_is_refused_at_load(model_copy, obj, type_name):
    _consistent_artifact(model_copy, obj)
    for load in _loaders(model_copy).values():
        with pytest.raises(ModelIntegrityError, match=f"holds a {type_name}, not a SmartPick"):
            load()


def test_another_estimator_is_refused_at_load(model_copy):
    from sklearn.linear_model import LogisticRegression

    _consistent_artifact(model_copy, LogisticRegression())
    with pytest.raises(ModelIntegrityError):  # skops refuses the untrusted type, or we do
        persist.load_model(model_copy)


def test_a_save_killed_before_the_manifest_keeps_the_last_good_model_and_its_catalog(
        model_copy, monkeypatch):
    """The catalog is named by its content, like the artifact: a save killed after writing a new
    catalog but before the manifest leaves the previous manifest, model and catalog, which still
    load and agree; a finished save then removes the catalog it replaced."""
    from smartpick_ml.data.catalog import synthetic_catalog

    before = MatchPredictor.load(model_copy)
    other = synthetic_catalog(seed=11)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the manifest")

    with monkeypatch.context() as m:
        m.setattr(persist, "write_json_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            persist.save_model(before.model, model_copy, {}, programs=other)
    after = MatchPredictor.load(model_copy)
    assert after.manifest == before.manifest
    assert after.programs.equals(before.programs)
    persist.save_model(before.model, model_copy, {}, programs=other)
    catalogs = sorted(p.name for p in model_copy.glob(
        f"{persist.CATALOG_PREFIX}*{persist.CATALOG_SUFFIX}"))
    assert catalogs == [persist.read_manifest(model_copy)["catalog"]["file"]]
    assert not list(model_copy.glob(".tmp-*"))


# ----------------------------------------------------------------------------- plan calibration

def _nonus_profile() -> dict:
    profile = json.loads(PROFILE.read_text())
    profile.pop("preferences", None)
    return profile


def test_a_plan_calibration_beside_its_model_changes_what_it_states(model_copy):
    """``evaluate-plans`` saves the calibration beside the model; the loader picks it up, says
    so in the manifest, and the stated P(match) is the calibrated one, still rising."""
    from smartpick_ml.modelling.pmatch import PlanCalibration

    plain = MatchPredictor.load(model_copy)
    assert plain.manifest["plan_calibration"] is None
    sha = plain.manifest["sha256"]
    line = (-0.4, 0.9)
    path = persist.save_plan_calibration(PlanCalibration({"non_us_img": line}, sha),
                                         persist.plan_calibration_path(model_copy, sha))
    calibrated = MatchPredictor.load(model_copy)
    assert calibrated.manifest["plan_calibration"] == str(path)
    profile = _nonus_profile()
    before = plain.plan(profile, max_applications=30)["table"]["p_match_corrected"].to_numpy()
    after = calibrated.plan(profile, max_applications=30)["table"]["p_match_corrected"].to_numpy()
    from scipy.special import ndtr, ndtri
    np.testing.assert_allclose(after, ndtr(line[0] + line[1] * ndtri(np.clip(before, 1e-6,
                                                                         1 - 1e-6))))
    assert (np.diff(after)[np.diff(before) > 1e-12] > 0).all()
    # a list the applicant chose is not a plan: the model's own figure
    chosen = calibrated.plan(profile, max_applications=30)["programs"]["program_id"].tolist()
    assert (calibrated.match_probability(profile, chosen)["p_match_corrected"]
            == pytest.approx(plain.match_probability(profile, chosen)["p_match_corrected"]))


def test_a_plan_calibration_of_another_model_is_refused(model_copy, tmp_path):
    from smartpick_ml.modelling.pmatch import PlanCalibration

    foreign = persist.save_plan_calibration(PlanCalibration({"non_us_img": (-0.4, 0.9)},
                                                            "0" * 64), tmp_path / "cal.json")
    with pytest.raises(ModelIntegrityError, match="fitted for model 000000000000"):
        MatchPredictor.load(model_copy, plan_calibration=foreign)
    (tmp_path / "bad.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelIntegrityError, match="nested too deeply"):
        MatchPredictor.load(model_copy, plan_calibration=tmp_path / "bad.json")


def test_saving_a_model_removes_the_calibration_of_the_one_it_replaces(model_copy):
    from smartpick_ml.modelling.pmatch import PlanCalibration

    """A retrained model states its own figures until ``evaluate-plans`` calibrates it: the
    calibration of the model it replaces (and any older one) goes with that model."""
    stale = model_copy / f"{persist.PLAN_CALIBRATION_PREFIX}{'0' * 16}.json"
    persist.save_plan_calibration(PlanCalibration({}, "0" * 64), stale)
    model, manifest = persist.load_model(model_copy)
    replaced = persist.save_plan_calibration(
        PlanCalibration({}, manifest["sha256"]),
        persist.plan_calibration_path(model_copy, manifest["sha256"]))
    extra = {k: v for k, v in manifest.items()
             if k not in {"artifact", "sha256", "saved_at", "catalog"}}
    persist.save_model(model, model_copy, extra,
                       programs=persist.load_saved_catalog(model_copy, manifest)[0])
    new = persist.read_manifest(model_copy)["sha256"]
    assert new != manifest["sha256"]  # skops writes a new file, so a new digest
    assert not stale.exists() and not replaced.exists()
    again = persist.save_plan_calibration(PlanCalibration({}, new),
                                          persist.plan_calibration_path(model_copy, new))
    assert MatchPredictor.load(model_copy).manifest["plan_calibration"] == str(again)
