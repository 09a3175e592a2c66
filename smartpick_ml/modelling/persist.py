"""Saving and loading a model for services that do not use MLflow.

One artifact (``smartpick-match-<sha256 prefix>.skops``) plus ``manifest.json`` (version,
scikit-learn version, feature schema, metrics, training-data hash, SHA-256 of the artifact),
both written atomically.

The artifact is a **skops** file, not a pickle: loading it reconstructs only the types listed in
:data:`TRUSTED_TYPES` and refuses anything else, so a tampered file cannot run arbitrary code. The
loader also refuses an artifact whose bytes do not match the manifest's SHA-256, and warns (or, with
``strict=True``, refuses) when the model was saved by a different scikit-learn version.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sklearn
import skops.io as sio

from smartpick_ml import __version__
from smartpick_ml.contracts.errors import ModelIntegrityError
from smartpick_ml.data.io import sha256_file, write_bytes_atomic, write_json_atomic

ARTIFACT_PREFIX = "smartpick-match-"
ARTIFACT_SUFFIX = ".skops"
MANIFEST_NAME = "manifest.json"
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


def save_model(model: Any, model_dir: str | Path, manifest_extra: dict[str, Any]) -> Path:
    """Write the artifact under a name that carries its hash, then the manifest naming it.

    Each write is atomic and the previous artifact is removed only after the new manifest is in
    place: a run killed at any point leaves a manifest whose artifact exists and matches it.
    """
    import hashlib

    d = Path(model_dir)
    extra = sorted(set(untrusted_types(model)) - set(TRUSTED_TYPES))
    if extra:
        raise ModelIntegrityError(f"model contains types not in TRUSTED_TYPES: {extra}")
    data = sio.dumps(model)
    digest = hashlib.sha256(data).hexdigest()
    artifact = d / f"{ARTIFACT_PREFIX}{digest[:16]}{ARTIFACT_SUFFIX}"
    write_bytes_atomic(artifact, data)
    manifest = {
        "artifact": artifact.name,
        "sha256": sha256_file(artifact),
        "smartpick_ml_version": __version__,
        "sklearn_version": sklearn.__version__,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **manifest_extra,
    }
    write_json_atomic(d / MANIFEST_NAME, manifest)
    for old in d.glob(f"{ARTIFACT_PREFIX}*{ARTIFACT_SUFFIX}"):
        if old.name != artifact.name:
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
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"model manifest {path} is not valid JSON: {exc}") from None


def load_model(model_dir: str | Path, strict: bool = False) -> tuple[Any, dict[str, Any]]:
    """Load the model in ``model_dir`` after checking it against its manifest."""
    d = Path(model_dir)
    manifest = read_manifest(d)
    name = str(manifest.get("artifact", ""))
    if not name or Path(name).name != name:
        raise ModelIntegrityError(f"model manifest in {d} names no valid artifact ({name!r})")
    artifact = d / name
    if not artifact.is_file():
        raise ModelIntegrityError(f"model artifact missing: {artifact}")
    digest = sha256_file(artifact)
    if digest != manifest.get("sha256"):
        raise ModelIntegrityError(
            f"model artifact {artifact} does not match its manifest (sha256 {digest[:12]}… vs "
            f"{str(manifest.get('sha256'))[:12]}…): it was changed, truncated or swapped; "
            "refusing to load it")
    saved_with = manifest.get("sklearn_version")
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
        raise ModelIntegrityError(f"cannot load model artifact {artifact}: {exc}") from None
    return model, manifest
