"""Saving and loading a model for services that do not use MLflow.

One artifact (``smartpick-match-<sha256 prefix>.skops``), the program catalog the model was
trained with (``programs-<hash prefix>.parquet``) and ``manifest.json`` (version, scikit-learn
version, feature schema, metrics, training-data hashes, SHA-256 of the artifact, the catalog's
file and content hash), each written atomically, the manifest last.

The artifact is a **skops** file, not a pickle: loading it reconstructs only the types listed in
:data:`TRUSTED_TYPES` and refuses anything else, so a tampered file cannot run arbitrary code. The
loader also refuses an artifact whose bytes do not match the manifest's SHA-256, and warns (or, with
``strict=True``, refuses) when the model was saved by a different scikit-learn version, a manifest
that is not a JSON object, an artifact that holds anything but a :class:`MatchModel`, and a
catalog whose content does not match the hash the manifest records for it
(:func:`load_saved_catalog`): the catalog decides which programs are ranked, so it is part of
what is verified. ``plan-calibration-<sha256 prefix>.json``, written by ``smartpick
evaluate-plans``, recalibrates the stated P(match) of this one model (``pmatch.PlanCalibration``)
and is refused by any other.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sklearn
import skops.io as sio

from smartpick_ml import __version__
from smartpick_ml.contracts.columns import MAX_QUOTED_CHARS, quote
from smartpick_ml.contracts.errors import DataValidationError, ModelIntegrityError
from smartpick_ml.data.io import (
    frame_hash,
    read_table,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from smartpick_ml.modelling.model import MatchModel
from smartpick_ml.modelling.pmatch import PlanCalibration

ARTIFACT_PREFIX = "smartpick-match-"
ARTIFACT_SUFFIX = ".skops"
MANIFEST_NAME = "manifest.json"
CATALOG_PREFIX = "programs-"
PLAN_CALIBRATION_PREFIX = "plan-calibration-"
CATALOG_SUFFIX = ".parquet"
#: Every type a SmartPick model is built from that skops does not trust by default.
TRUSTED_TYPES: tuple[str, ...] = (
    "functools.partial",
    "sklearn.utils.validation.check_array",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "smartpick_ml.modelling.features.PairFeatures",
    "smartpick_ml.modelling.model.MatchModel",
    "smartpick_ml.modelling.model._Calibrator",
    "smartpick_ml.modelling.pmatch.PMatchCalibrator",
)


def untrusted_types(model: Any) -> list[str]:
    """Types in ``model`` that skops would refuse unless trusted (for checks and tests)."""
    return list(sio.get_untrusted_types(data=sio.dumps(model)))


def save_model(model: Any, model_dir: str | Path, manifest_extra: dict[str, Any],
               programs: pd.DataFrame | None = None) -> Path:
    """Write the artifact and the catalog (``programs``, when given) under names that carry their
    hashes, then the manifest naming both.

    Each write is atomic and the previous artifact and catalog are removed only after the new
    manifest is in place: a run killed at any point leaves a manifest whose artifact and catalog
    exist and match it.
    """
    d = Path(model_dir)
    extra = sorted(set(untrusted_types(model)) - set(TRUSTED_TYPES))
    if extra:
        raise ModelIntegrityError(f"model contains types not in TRUSTED_TYPES: {extra}")
    data = sio.dumps(model)
    digest = hashlib.sha256(data).hexdigest()
    artifact = d / f"{ARTIFACT_PREFIX}{digest[:16]}{ARTIFACT_SUFFIX}"
    write_bytes_atomic(artifact, data)
    catalog: dict[str, str] = {}
    if programs is not None:
        content = frame_hash(programs)
        catalog = {"file": f"{CATALOG_PREFIX}{content[:16]}{CATALOG_SUFFIX}", "sha256": content}
        write_parquet_atomic(programs, d / catalog["file"])
    manifest = {
        "artifact": artifact.name,
        "sha256": sha256_file(artifact),
        "smartpick_ml_version": __version__,
        "sklearn_version": sklearn.__version__,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"catalog": catalog} if catalog else {}),
        **manifest_extra,
    }
    write_json_atomic(d / MANIFEST_NAME, manifest)
    # a plan calibration belongs to the model it was fitted for: an earlier one goes with it
    keep = {artifact.name, catalog.get("file"), plan_calibration_path(d, digest).name}
    for old in [*d.glob(f"{ARTIFACT_PREFIX}*{ARTIFACT_SUFFIX}"),
                *d.glob(f"{CATALOG_PREFIX}*{CATALOG_SUFFIX}"),
                *d.glob(f"{PLAN_CALIBRATION_PREFIX}*.json")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return artifact


def artifact_path(model_dir: str | Path) -> Path:
    """The artifact the manifest in ``model_dir`` names."""
    return Path(model_dir) / str(read_manifest(model_dir).get("artifact"))


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelIntegrityError(f"no model manifest at {path}; train a model first "
                                  "(smartpick train)")
    return _json_object(path, "model manifest", "a manifest")


def _json_object(path: Path, what: str, kind: str) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is refused naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"{what} {path} is not valid JSON: "
                                  f"{str(exc)[:MAX_QUOTED_CHARS]}") from None
    except RecursionError:  # [[[[… deeper than the parser goes
        raise ModelIntegrityError(f"{what} {path} is nested too deeply to be {kind}") from None
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{what} {path} must be a JSON object, got "
                                  f"{type(data).__name__}")
    return data


def plan_calibration_path(model_dir: str | Path, model_sha256: str) -> Path:
    """Where the plan calibration of the model with this sha256 lives beside it."""
    return Path(model_dir) / f"{PLAN_CALIBRATION_PREFIX}{model_sha256[:16]}.json"


def save_plan_calibration(calibration: PlanCalibration, path: str | Path) -> Path:
    write_json_atomic(Path(path), calibration.to_dict())
    return Path(path)


def load_plan_calibration(path: str | Path, model_sha256: str | None) -> PlanCalibration:
    """A plan calibration (``smartpick evaluate-plans``), refused unless it was fitted for the
    model with ``model_sha256``: fitted on another model's plans, it would misstate this one's."""
    path = Path(path)
    if not path.is_file():
        raise ModelIntegrityError(f"no plan calibration at {path}")
    calibration = PlanCalibration.from_dict(
        _json_object(path, "plan calibration", "a calibration"), str(path))
    if model_sha256 is None or calibration.model_sha256 != model_sha256:
        raise ModelIntegrityError(
            f"plan calibration {path} was fitted for model {calibration.model_sha256[:12]}…, "
            f"not this one ({str(model_sha256)[:12]}…): run `smartpick evaluate-plans` for it")
    return calibration


def saved_plan_calibration(model_dir: str | Path, manifest: dict[str, Any]
                           ) -> PlanCalibration | None:
    """The plan calibration saved beside a model, if ``evaluate-plans`` wrote one for it."""
    sha = manifest.get("sha256")
    if not isinstance(sha, str):
        return None
    path = plan_calibration_path(model_dir, sha)
    return load_plan_calibration(path, sha) if path.is_file() else None


def _file_named(d: Path, what: str, name: Any) -> Path:
    """The file the manifest names for ``what``: a plain name inside ``d`` (no path parts)."""
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ModelIntegrityError(f"model manifest in {d} names no valid {what} ({quote(name)})")
    path = d / name
    if not path.is_file():
        raise ModelIntegrityError(f"model {what} missing: {path}")
    return path


def check_match_model(model: Any, where: str | Path) -> MatchModel:
    """``model`` if it is a :class:`MatchModel`; a file that deserialises to anything else (a
    list, another estimator) is refused here rather than failing later in ``predict_proba``."""
    if not isinstance(model, MatchModel):
        raise ModelIntegrityError(f"{where} holds a {type(model).__name__}, not a SmartPick "
                                  "MatchModel; refusing to load it")
    return model


def _version_text(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= MAX_QUOTED_CHARS else quote(value)


def load_model(model_dir: str | Path, strict: bool = False) -> tuple[MatchModel, dict[str, Any]]:
    """Load the model in ``model_dir`` after checking it against its manifest."""
    d = Path(model_dir)
    manifest = read_manifest(d)
    artifact = _file_named(d, "artifact", manifest.get("artifact"))
    digest = sha256_file(artifact)
    if digest != manifest.get("sha256"):
        raise ModelIntegrityError(
            f"model artifact {artifact} does not match its manifest (sha256 {digest[:12]}… vs "
            f"{str(manifest.get('sha256'))[:12]}…): it was changed, truncated or swapped; "
            "refusing to load it")
    saved_with = _version_text(manifest.get("sklearn_version"))
    if saved_with != sklearn.__version__:
        message = (f"model was saved with scikit-learn {saved_with}, this is "
                   f"{sklearn.__version__}: predictions may differ; retrain or install "
                   f"scikit-learn=={saved_with}")
        if strict:
            raise ModelIntegrityError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    try:
        model = sio.load(artifact, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # skops raises UntrustedTypesFoundException and others
        raise ModelIntegrityError(f"cannot load model artifact {artifact}: "
                                  f"{str(exc)[:MAX_QUOTED_CHARS]}") from None
    return check_match_model(model, artifact), manifest


def verified_catalog(path: Path, sha256: Any) -> pd.DataFrame:
    """The programs table at ``path`` if its content hash (``data.io.frame_hash``) is
    ``sha256``; a catalog that differs from the one recorded is refused, naming the file."""
    try:
        table = read_table(path, "programs")
    except DataValidationError as exc:
        raise ModelIntegrityError(f"model catalog {path} cannot be read as the programs table: "
                                  f"{str(exc)[:4 * MAX_QUOTED_CHARS]}") from None
    digest = frame_hash(table)
    if digest != sha256:
        raise ModelIntegrityError(
            f"model catalog {path} does not match the model's record of it (sha256 "
            f"{digest[:12]}… vs {str(sha256)[:12]}…): it is not the catalog the model was "
            "trained with; refusing to rank its programs (to rank another catalog on purpose, "
            "pass it to MatchPredictor.load as programs=)")
    return table


def load_saved_catalog(model_dir: str | Path, manifest: dict[str, Any]) -> tuple[pd.DataFrame,
                                                                                 Path]:
    """The catalog saved with the model in ``model_dir``, checked against ``manifest``: the file
    it names, whose content hash must be the one recorded, which must be the training data's."""
    d = Path(model_dir)
    catalog = manifest.get("catalog")
    if not isinstance(catalog, dict):
        raise ModelIntegrityError(
            f"model manifest in {d} records no catalog: the model was saved without the programs "
            "it was trained on; retrain (smartpick train) or pass programs= explicitly")
    path = _file_named(d, "catalog", catalog.get("file"))
    trained = manifest.get("training_data_sha256")
    if isinstance(trained, dict) and trained.get("programs") not in (None, catalog.get("sha256")):
        raise ModelIntegrityError(f"model manifest in {d}: the catalog it names is not the one "
                                  "the training data records (training_data_sha256.programs)")
    return verified_catalog(path, catalog.get("sha256")), path


def recorded_catalog_sha256(manifest: dict[str, Any]) -> str | None:
    """The content hash of the catalog a model was trained with, as its manifest records it
    (the saved catalog's, else the training data's); None when it records neither."""
    for section, key in (("catalog", "sha256"), ("training_data_sha256", "programs")):
        entry = manifest.get(section)
        if isinstance(entry, dict) and isinstance(entry.get(key), str):
            return entry[key]
    return None
