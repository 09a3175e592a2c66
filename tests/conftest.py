"""Shared fixtures: small, valid instances of the three contracted tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_programs() -> pd.DataFrame:
    return pd.DataFrame({
        "program_id": ["IM-0001", "IM-0002", "FM-0001"],
        "name": ["Alpha Hospital Program", "Beta University Program", "Gamma Program"],
        "specialty": ["Internal Medicine", "Internal Medicine", "Family Medicine"],
        "city": ["Boston", "Chicago", "Houston"],
        "state": ["MA", "IL", "TX"],
        "region": ["New England", "East North Central", "West South Central"],
        "positions": [12, 30, 8],
        "program_type": ["community", "university", "community"],
        "rate_us_md": [0.3, 0.1, np.nan],
        "rate_us_do": [0.2, 0.05, np.nan],
        "rate_us_img": [0.05, 0.0, np.nan],
        "rate_non_us_img": [0.01, 0.0, np.nan],
        "sponsors_j1": pd.array([True, False, None], dtype="boolean"),
    })


def make_applicants() -> pd.DataFrame:
    return pd.DataFrame({
        "applicant_id": ["A1", "A2", "A3", "A4"],
        "season": [2025, 2025, 2025, 2024],
        "applicant_type": ["us_md_senior", "us_do_senior", "us_img", "non_us_img"],
        "step2_ck": [250, 241, 236, 228],
        "graduation_year": [2025, 2025, 2021, 2019],
        "usce_months": [0, 0, 4, 12],
        "publications": [3, 1, 0, 7],
        "needs_visa": [False, False, False, True],
        "home_state": ["CA", "NY", "FL", None],
        "preferred_specialty": ["Internal Medicine", "Family Medicine", "Internal Medicine",
                                "Psychiatry"],
    })


def make_applications() -> pd.DataFrame:
    return pd.DataFrame({
        "applicant_id": ["A1", "A1", "A2", "A3", "A3"],
        "program_id": ["IM-0001", "IM-0002", "IM-0001", "IM-0001", "IM-0002"],
        "season": [2025, 2025, 2025, 2025, 2025],
        "signal": ["gold", "none", "signal", "none", "silver"],
        "interviewed": pd.array([True, True, False, True, None], dtype="boolean"),
        "rank_position": pd.array([1, 2, None, 1, None], dtype="Int64"),
        "matched": pd.array([True, False, False, False, None], dtype="boolean"),
        "would_take": pd.array([1, 0, 0, None, None], dtype="Int64"),
    })


@pytest.fixture
def programs_frame() -> pd.DataFrame:
    return make_programs()


@pytest.fixture
def applicants_frame() -> pd.DataFrame:
    return make_applicants()


@pytest.fixture
def applications_frame() -> pd.DataFrame:
    return make_applications()


# ------------------------------------------------------------------------ a small trained world
#
# ``small_training_run`` (session scope) simulates two small seasons on the synthetic catalog in
# a temporary folder, trains once on them with MLflow tracking into that folder, and hands back a
# :class:`TrainingWorld` (paths, config, the TrainResult and the validation pairs). Nothing is
# written into the repository: the MLflow experiment's artifact root is created inside the
# temporary folder, the run happens with that folder as the working directory, and the caller's
# ``MLFLOW_*`` environment is hidden during the run and restored afterwards
# (``mlflow.set_tracking_uri`` / ``set_experiment`` write ``MLFLOW_TRACKING_URI`` /
# ``MLFLOW_EXPERIMENT_ID`` into ``os.environ``).

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SIMULATE_TOML = REPO_ROOT / "pipelines" / "simulate.toml"
SMALL_SEASONS = (2024, 2025)
SMALL_SCALE = 0.03


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def write_toml(path: Path, data: dict[str, dict[str, Any]]) -> Path:
    """Write a two-level dict (sections of scalars / lists) as TOML."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def isolated_mlflow(tracking_uri: str | None = None, cwd: Path | None = None) -> Iterator[None]:
    """Hide the caller's ``MLFLOW_*`` environment, optionally point MLflow at ``tracking_uri`` and
    run in ``cwd``; restore the environment, MLflow's global URIs / experiment and the cwd after."""
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    saved_env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    saved = (_tracking_service.utils._tracking_uri, _model_registry.utils._registry_uri,
             fluent._active_experiment_id)
    old_cwd = Path.cwd()
    for k in saved_env:
        del os.environ[k]
    try:
        if tracking_uri is not None:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(old_cwd)
        _tracking_service.utils._tracking_uri = saved[0]
        _model_registry.utils._registry_uri = saved[1]
        fluent._active_experiment_id = saved[2]
        for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
            del os.environ[k]
        os.environ.update(saved_env)


def files_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): to check a folder did not change."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@dataclass
class TrainingWorld:
    """A tiny simulated world, trained once: what ``small_training_run`` returns."""

    root: Path
    raw_dir: Path
    processed_dir: Path
    model_dir: Path
    artifact_dir: Path
    tracking_uri: str
    config_path: Path
    config_data: dict[str, dict[str, Any]]
    cfg: Any  # smartpick_ml.contracts.config.TrainConfig
    result: Any  # smartpick_ml.training.pipeline.TrainResult
    validation: Any  # pandas.DataFrame: the validation pairs (with the would_take label)

    # helpers for tests that build on this world (no need to import conftest)
    write_toml = staticmethod(write_toml)
    files_snapshot = staticmethod(files_snapshot)
    isolated_mlflow = staticmethod(isolated_mlflow)

    def train(self, cfg: Any, **kwargs: Any) -> Any:
        """``run_training(cfg)`` isolated like the fixture's own run (see ``train_quietly``)."""
        return train_quietly(cfg, self.root, **kwargs)

    @property
    def model(self) -> Any:
        return self.result.model

    @property
    def registered_model(self) -> str:
        return self.cfg.tracking.registered_model

    @property
    def y_validation(self) -> np.ndarray:
        return self.validation["would_take"].to_numpy(np.int64)

    def config_with(self, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """A copy of the run's config data with some keys replaced, e.g.
        ``config_with(model={"max_iter": 1}, output={"model_dir": "..."})``."""
        data = {s: dict(v) for s, v in self.config_data.items()}
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return data

    def evaluate_plans_config(self, path: Path, out_dir: Path, per_type: dict[str, int],
                              group_share: float, replicates: int, n_jobs: int = 1,
                              adoption: str = "") -> Path:
        """A small ``evaluate-plans`` config for this world's validation season, written to
        ``path`` (``adoption``: the [adoption] table's TOML, if any)."""
        types = ", ".join(f"{t} = {n}" for t, n in per_type.items())
        path.write_text(
            f'train_config = "{self.config_path}"\n'
            f"[sample]\nper_type = {{ {types} }}\ngroup_share = {group_share}\n"
            f"[replicates]\nmin = {replicates}\nmax = {replicates}\n"
            + (f"[adoption]\n{adoption}\n" if adoption else "")
            + f'[run]\nn_jobs = {n_jobs}\nout_dir = "{out_dir}"\n')
        return path

    def copy_store(self, dest: Path) -> TrainingWorld:
        """A copy of the tracking store, processed dir and model dir under ``dest`` (sharing the
        raw tables and the artifact root), for tests that train again without touching this one."""
        dest.mkdir(parents=True, exist_ok=True)
        db = self.root / "mlflow.db"
        shutil.copy2(db, dest / "mlflow.db")
        shutil.copytree(self.processed_dir, dest / "processed")
        shutil.copytree(self.model_dir, dest / "models")
        data = self.config_with(
            data={"processed_dir": str(dest / "processed")},
            tracking={"tracking_uri": f"sqlite:///{dest / 'mlflow.db'}"},
            output={"model_dir": str(dest / "models")})
        path = write_toml(dest / "train.toml", data)
        from smartpick_ml.contracts.config import load_train_config

        return TrainingWorld(root=dest, raw_dir=self.raw_dir, processed_dir=dest / "processed",
                             model_dir=dest / "models", artifact_dir=self.artifact_dir,
                             tracking_uri=data["tracking"]["tracking_uri"], config_path=path,
                             config_data=data, cfg=load_train_config(path), result=self.result,
                             validation=self.validation)


def train_quietly(cfg: Any, world_root: Path, tracking_uri: str | None = None,
                  **kwargs: Any) -> Any:
    """``run_training`` with MLflow isolated, cwd = ``world_root`` and one OpenMP thread (on a
    small shared machine, OpenMP spin-waiting makes tree prediction ~10x slower under load)."""
    from threadpoolctl import threadpool_limits

    from smartpick_ml.training.pipeline import run_training

    with isolated_mlflow(tracking_uri, cwd=world_root), \
            threadpool_limits(limits=1, user_api="openmp"):
        return run_training(cfg, **kwargs)


@pytest.fixture(scope="session")
def small_training_run(tmp_path_factory: pytest.TempPathFactory) -> TrainingWorld:
    """Simulate seasons 2024-2025 at scale 0.03 (synthetic catalog), train once, track in a
    temporary sqlite store; see :class:`TrainingWorld`."""
    from mlflow import MlflowClient

    from smartpick_ml.contracts.config import load_simulate_config, load_train_config
    from smartpick_ml.modelling.features import build_pairs
    from smartpick_ml.modelling.labels import LABEL, training_labels
    from smartpick_ml.simulation.season import simulate_to_disk
    from smartpick_ml.training.splits import load_tables, make_splits

    root = tmp_path_factory.mktemp("small_world")
    raw, processed, models = root / "raw", root / "processed", root / "models"
    artifacts = root / "mlartifacts"
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    sim = load_simulate_config(SIMULATE_TOML, seasons=list(SMALL_SEASONS), scale=SMALL_SCALE,
                               catalog="synthetic", output_dir=str(raw))
    simulate_to_disk(sim)
    data = {
        "data": {"raw_dir": str(raw), "processed_dir": str(processed), "simulate": "never",
                 "simulate_config": str(SIMULATE_TOML), "train_seasons": [SMALL_SEASONS[0]],
                 "validation_season": SMALL_SEASONS[1], "train_sample_fraction": 1.0,
                 "validation_sample_fraction": 1.0, "holdout_fraction": 0.2, "seed": 7},
        "model": {"max_iter": 60},
        "evaluation": {"oracle_replicates": 2, "importance_rows": 2000,
                       "importance_repeats": 1, "logistic_rows": 20000},
        "tracking": {"tracking_uri": tracking_uri},
        "output": {"model_dir": str(models)},
    }
    config_path = write_toml(root / "train.toml", data)
    cfg = load_train_config(config_path)
    # the experiment's artifact root lives in the temporary folder, not ./mlruns
    with isolated_mlflow():
        MlflowClient(tracking_uri=tracking_uri).create_experiment(
            cfg.tracking.experiment, artifact_location=artifacts.as_uri())
    result = train_quietly(cfg, root)

    tables = load_tables(cfg)
    pairs = build_pairs(tables["applications"], tables["applicants"], tables["programs"])
    pairs[LABEL] = training_labels(tables["applications"]).to_numpy()
    validation = make_splits(pairs, cfg).validation.reset_index(drop=True)
    return TrainingWorld(root=root, raw_dir=raw, processed_dir=processed, model_dir=models,
                         artifact_dir=artifacts, tracking_uri=tracking_uri,
                         config_path=config_path, config_data=data, cfg=cfg, result=result,
                         validation=validation)


@pytest.fixture(scope="session")
def sample(small_training_run: TrainingWorld) -> pd.DataFrame:
    """3000 validation pairs of the small world (all applicant types)."""
    va = small_training_run.validation
    return va.sample(n=min(3000, len(va)), random_state=1).reset_index(drop=True)


def q_on_one_thread(model: Any, pairs: pd.DataFrame) -> np.ndarray:
    """The model's q for ``pairs`` on one OpenMP thread (small batches in tests: a spinning
    thread pool costs more than the work on a busy machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        return model.predict_proba(pairs)[:, 1]


@pytest.fixture(scope="session")
def local_spark():
    """A two-core local Spark (pyspark: in the dev extras; Java 17)."""
    pyspark = pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java (17), which this machine lacks")
    from pyspark.sql import SparkSession

    # Spark's Python workers run this interpreter (with this environment's packages)
    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    os.environ.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("smartpick-tests")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.pyspark.python", sys.executable)
             .config("spark.pyspark.driver.python", sys.executable)
             .getOrCreate())
    yield spark
    spark.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    del pyspark
