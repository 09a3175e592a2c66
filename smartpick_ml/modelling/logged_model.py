"""The model as MLflow logs it: one skops file behind two flavours.

- ``sklearn``: ``mlflow.sklearn.load_model(uri)`` returns the :class:`MatchModel`
  (``MatchPredictor.load("models:/…")``, the champion comparison in training);
- ``python_function`` with ``loader_module = smartpick_ml.serving.pyfunc``: ``mlflow.pyfunc`` and
  the scoring server load the skops file and the program catalog the model was trained with
  (``programs.parquet``, logged beside it) into a ``ServedMatchModel``.

The catalog's content hash is recorded in the model's metadata (``catalog_sha256``), and
:func:`load_logged_model` (``MatchPredictor.load("models:/…")``) refuses a logged catalog that
does not match it, as ``MatchPredictor.load("models")`` does with ``manifest.json``.

Training logs the model and the serving side loads it, so this module names the loader by its
module path and imports nothing of the serving runtime. Nothing is cloudpickled. The signature
has the output and the request params and no input schema: the request's columns are checked
in one place against the pairs contract, and described in the model's metadata
(``contracts.pairs.request_columns``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.errors import DataValidationError, ModelIntegrityError
from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, request_columns
from smartpick_ml.data.io import frame_hash, read_table, sha256_file
from smartpick_ml.data.synthetic import synthetic_pairs
from smartpick_ml.modelling.persist import TRUSTED_TYPES, check_match_model

#: the loader of the python_function flavour, named, not imported
LOADER_MODULE = "smartpick_ml.serving.pyfunc"
CATALOG_FILE = "programs.parquet"
#: the model metadata key that records the logged catalog's content hash (``data.io.frame_hash``)
CATALOG_HASH_KEY = "catalog_sha256"
#: the most of a loader's error a message repeats
MAX_MESSAGE_CHARS = 300


TASKS = ("score", "rank", "plan")


#: params of a request and their defaults ("" / 0 = not given)
PARAM_DEFAULTS: dict[str, Any] = {"task": "score", "specialty": "", "k": 0, "explain": False,
                                  "preferences": "", "signals": "", "backup_specialties": "",
                                  "max_applications": 0, "budget": 0.0, "schedule": "2025",
                                  "sizes": "", "choose_signals": False}


#: the distributions the served model imports; declared (pinned to this environment), not
#: inferred: MLflow infers them by loading the model in a subprocess, seconds of every run
#: -- the third-party ones only: the package's own code travels with the model (``code_paths``),
#: so a registry can install every requirement and the model serves without this project
SERVED_DISTRIBUTIONS: tuple[str, ...] = (
    "mlflow", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "skops", "numba",
    "threadpoolctl", "pydantic")


def signature() -> Any:
    """The explicit signature: the ``[P(not take), P(take)]`` output of pair scoring and the
    request params, and no input schema (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    params = ParamSchema([
        ParamSpec("task", "string", PARAM_DEFAULTS["task"]),
        ParamSpec("specialty", "string", PARAM_DEFAULTS["specialty"]),
        ParamSpec("k", "long", PARAM_DEFAULTS["k"]),
        ParamSpec("explain", "boolean", PARAM_DEFAULTS["explain"]),
        ParamSpec("preferences", "string", PARAM_DEFAULTS["preferences"]),
        ParamSpec("signals", "string", PARAM_DEFAULTS["signals"]),
        ParamSpec("backup_specialties", "string", PARAM_DEFAULTS["backup_specialties"]),
        ParamSpec("max_applications", "long", PARAM_DEFAULTS["max_applications"]),
        ParamSpec("budget", "double", PARAM_DEFAULTS["budget"]),
        ParamSpec("schedule", "string", PARAM_DEFAULTS["schedule"]),
        ParamSpec("sizes", "string", PARAM_DEFAULTS["sizes"]),
        ParamSpec("choose_signals", "boolean", PARAM_DEFAULTS["choose_signals"]),
    ])
    return ModelSignature(inputs=None, outputs=Schema([TensorSpec(np.dtype("float64"),
                                                                  (-1, 2))]),
                          params=params)


def request_body(frame: pd.DataFrame, **params: Any) -> bytes:
    """The JSON body of a request: ``frame`` as ``dataframe_split`` (nulls as JSON null), plus
    ``params`` if any -- what a client sends to ``/invocations``."""
    split = json.loads(frame.to_json(orient="split", index=False, double_precision=15))
    body: dict[str, Any] = {"dataframe_split": split}
    if params:
        body["params"] = params
    return json.dumps(body).encode()


def input_example() -> pd.DataFrame:
    """A synthetic example (never a real applicant)."""
    return synthetic_pairs(5)[list(PAIR_INPUT_COLUMNS)]


def pip_requirements() -> list[str]:
    """``SERVED_DISTRIBUTIONS`` at the versions installed here (unpinned if one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in SERVED_DISTRIBUTIONS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def save_model(path: str, mlflow_model: Any, sk_model: Any, programs: pd.DataFrame,
               **kwargs: Any) -> None:
    """Flavour hook for ``mlflow.models.Model.log``: the sklearn flavour (skops), the catalog,
    and a ``python_function`` flavour that loads through this module."""
    import mlflow

    mlflow.sklearn.save_model(sk_model, path, mlflow_model=mlflow_model,
                              serialization_format="skops",
                              skops_trusted_types=list(TRUSTED_TYPES), **kwargs)
    from smartpick_ml.data.io import write_parquet_atomic

    write_parquet_atomic(programs, Path(path) / CATALOG_FILE)
    conf = mlflow_model.flavors["python_function"]
    conf["loader_module"] = LOADER_MODULE
    for key in ("model_path", "predict_fn"):  # the sklearn loader's own settings
        conf.pop(key, None)
    mlflow_model.save(str(Path(path) / "MLmodel"))


def log_model(model: Any, programs: pd.DataFrame, registered_model_name: str | None = None
              ) -> Any:
    """Log (and register) the served model in the active run; returns MLflow's ``ModelInfo``.
    The model carries this package's code (``code_paths``), which MLflow puts first on the
    import path when it loads the model: it loads and serves where the project is not
    installed, with the code it was trained with."""
    from mlflow.models import Model

    package = str(Path(__file__).resolve().parents[1])
    return Model.log(artifact_path=None, name="model", flavor=sys.modules[__name__],
                     code_paths=[package],
                     sk_model=model, programs=programs, signature=signature(),
                     metadata={"request_columns": request_columns(),
                               CATALOG_HASH_KEY: frame_hash(programs)},
                     input_example=input_example(), pip_requirements=pip_requirements(),
                     registered_model_name=registered_model_name)


def load_logged_folder(local: Path, where: str) -> tuple[Any, dict[str, Any]]:
    """The :class:`MatchModel` of a logged MLflow model folder, and a manifest in the shape of
    ``manifest.json`` for its catalog (the logged file and its recorded hash).

    The skops file is loaded trusting only :data:`persist.TRUSTED_TYPES`, never the type list
    the folder's ``MLmodel`` file carries: an edited ``MLmodel`` cannot make it build another
    class. Models logged without a recorded catalog hash get the logged file's own."""
    import sklearn
    import skops.io as sio
    from mlflow.models import Model

    mlmodel = Model.load(str(local / "MLmodel"))
    conf = mlmodel.flavors.get("sklearn") or {}
    saved_with = conf.get("sklearn_version")
    if saved_with != sklearn.__version__:
        warnings.warn(f"model was saved with scikit-learn {saved_with}, this is "
                      f"{sklearn.__version__}: predictions may differ", RuntimeWarning,
                      stacklevel=2)
    model_file = local / str(conf.get("pickled_model", "model.skops"))
    try:
        model = sio.load(model_file, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # skops names the untrusted types it refused
        raise ModelIntegrityError(f"cannot load the model at {where}: "
                                  f"{str(exc)[:MAX_MESSAGE_CHARS]}") from None
    recorded = (mlmodel.metadata or {}).get(CATALOG_HASH_KEY)
    catalog = local / CATALOG_FILE
    if recorded is None and catalog.is_file():  # logged before the hash was recorded
        with contextlib.suppress(DataValidationError):  # unreadable: refused when loaded
            recorded = frame_hash(read_table(catalog, "programs"))
    manifest = {"source": where, "sha256": sha256_file(model_file),
                "catalog": {"file": CATALOG_FILE, "sha256": recorded}}
    return check_match_model(model, where), manifest


def load_logged_model(uri: str) -> tuple[Any, dict[str, Any], Path]:
    """The model at an MLflow model URI (``models:/…``, ``runs:/…``), its catalog manifest (see
    :func:`load_logged_folder`) and the local folder it was downloaded to
    (``persist.load_saved_catalog`` reads the catalog from it)."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    model, manifest = load_logged_folder(local, uri)
    return model, manifest, local
