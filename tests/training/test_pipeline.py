"""The training run end to end on a tiny simulated world (``small_training_run`` in conftest):
metrics against baselines and the oracle, behaviour of the model, MLflow tracking and the champion
alias, bad configs, and the locally saved model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from threadpoolctl import threadpool_limits

from smartpick_ml.contracts.config import load_train_config
from smartpick_ml.contracts.errors import ConfigError, ModelIntegrityError
from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, request_columns
from smartpick_ml.data.io import sha256_file
from smartpick_ml.modelling import logged_model, persist
from smartpick_ml.modelling.features import FEATURE_NAMES
from tests.conftest import q_on_one_thread as _q

MODELS = ("model", "logistic", "lookup", "oracle")
#: the oracle is the floor; at this tiny scale with 2 replicates its own noise is ~1 %
ORACLE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


def _all_row(metrics: pd.DataFrame, model: str) -> pd.Series:
    rows = metrics[(metrics["model"] == model) & (metrics["group"] == "all")]
    assert len(rows) == 1, model
    return rows.iloc[0]


# ----------------------------------------------------------------------------- metrics and outputs


def test_every_model_is_scored_and_the_model_beats_the_lookup(world) -> None:
    m = world.result.metrics
    assert set(m["model"]) == set(MODELS)
    for name in MODELS:
        r = _all_row(m, name)
        assert r["n"] == len(world.validation)
        for k in ("log_loss", "brier", "roc_auc"):
            assert np.isfinite(r[k]), (name, k)
    model, lookup, oracle = (_all_row(m, n) for n in ("model", "lookup", "oracle"))
    assert model["log_loss"] < lookup["log_loss"]
    assert model["brier"] < lookup["brier"]
    ratio = model["log_loss"] / oracle["log_loss"]
    assert ratio >= 1 - ORACLE_TOLERANCE, f"model beats the oracle floor by too much: {ratio:.4f}"
    assert model["log_loss_vs_reference"] == pytest.approx(ratio)
    assert oracle["log_loss_vs_reference"] == pytest.approx(1.0)
    # every applicant type, IMGs first, then "all"
    groups = m[m["model"] == "model"]["group"].tolist()
    assert groups[0] == "non_us_img" and groups[-1] == "all"


def test_run_writes_metrics_and_plots(world) -> None:
    out = world.result.outputs
    pngs = ("reliability_png", "roc_pr_png", "importance_png", "pmatch_png")
    for key in (*pngs, "metrics_csv"):
        path = Path(out[key])
        assert path.is_file() and path.stat().st_size > 0, key
        assert world.processed_dir in path.parents, key
    for key in pngs:
        assert Path(out[key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    csv = pd.read_csv(out["metrics_csv"])
    assert len(csv) == len(world.result.metrics)
    assert set(csv["model"]) == set(MODELS)
    assert out["model_dir"] == world.model_dir


def test_features_and_manifest_agree(world) -> None:
    path = world.processed_dir / "features.parquet"
    manifest = json.loads((world.processed_dir / "features_manifest.json").read_text())
    feat = pd.read_parquet(path)
    assert len(feat) == sum(manifest["rows"].values()) > 0
    assert feat["split"].value_counts().to_dict() == manifest["rows"]
    assert manifest["rows"]["validation"] == len(world.validation)
    assert manifest["features"] == list(FEATURE_NAMES)
    assert manifest["features_sha256"] == sha256_file(path)
    assert set(manifest["input_sha256"]) == {"programs", "applicants", "applications"}
    # split by applicant, never by row: no applicant in two splits of the same season
    seen = feat.groupby(["season", "applicant_id"])["split"].nunique()
    assert (seen == 1).all()


# ----------------------------------------------------------------------------- MLflow


def _flatten(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = str(obj)
    return out


def test_run_is_tracked_with_config_and_metrics(world) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=world.tracking_uri)
    run = client.get_run(world.result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == _flatten("", world.cfg.model_dump(), {})
    for name in MODELS:
        r = _all_row(world.result.metrics, name)
        assert run.data.metrics[f"{name}.all.log_loss"] == pytest.approx(r["log_loss"])
        assert run.data.metrics[f"{name}.non_us_img.brier"] == pytest.approx(
            world.result.metrics.query("model == @name and group == 'non_us_img'")
            ["brier"].iloc[0])
    assert run.data.tags["alias_decision"] == world.result.champion_decision
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    for f in ("metrics.csv", "reliability_by_type.png", "roc_pr.png", "importance.png",
              "pmatch_deciles.png", "permutation_importance.csv", "summary.json",
              "alias_decision.txt"):
        assert f"evaluation/{f}" in arts, f
    # artifacts live under the experiment's root in the temporary folder, not in ./mlruns
    assert run.info.artifact_uri.startswith(world.artifact_dir.as_uri())
    assert not (world.root / "mlruns").exists()
    # and the fixture left the process environment as it found it
    assert os.environ.get("MLFLOW_TRACKING_URI") != world.tracking_uri


def test_run_records_its_data_lineage_description_and_whole_training(world) -> None:
    """Issue #19: the run lists what it read and trained on (digests and sizes, never rows),
    says what it is, spans the training (not only the logging), and the registered model and
    its version point to the request columns."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=world.tracking_uri)
    run = client.get_run(world.result.run_id)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"programs", "applicants", "applications", "training pairs",
                           "validation pairs"}
    for name, d in inputs.items():
        assert d.dataset.digest and len(d.dataset.digest) <= 20
        rows = {t.key: t.value for t in d.tags}.get("rows")
        assert rows is not None and int(rows) > 0, name
        assert "applicant_id" not in (d.dataset.profile or ""), name  # no rows, no ids
    assert int({t.key: t.value for t in inputs["validation pairs"].tags}["rows"]) == \
        len(world.validation)
    assert "simulated" in run.data.tags["mlflow.note.content"]
    seconds = (run.info.end_time - run.info.start_time) / 1000
    trained = sum(world.result.timings[k] for k in ("features", "fit", "baselines", "evaluate"))
    assert seconds >= trained, (seconds, world.result.timings)
    model = client.get_registered_model(world.registered_model)
    assert "request columns" in model.description
    version = client.get_model_version(world.registered_model, world.result.model_version)
    assert "request_columns" in version.description and world.result.run_id in version.description


def test_first_model_is_registered_as_champion(world) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=world.tracking_uri)
    versions = client.search_model_versions(f"name = '{world.registered_model}'")
    assert [str(v.version) for v in versions] == ["1"]
    champion = client.get_model_version_by_alias(world.registered_model, "champion")
    assert str(champion.version) == "1" == world.result.model_version
    assert champion.run_id == world.result.run_id
    assert world.result.champion_decision.startswith("champion: version 1")


def test_logged_model_has_signature_example_and_reproduces_predictions(world) -> None:
    import mlflow

    uri = f"models:/{world.registered_model}@champion"
    va = world.validation
    with world.isolated_mlflow(world.tracking_uri):
        info = mlflow.models.get_model_info(uri)
        assert info.signature is not None
        # no input schema (serving.validate_pairs checks the columns); they are described in
        # the model's metadata, from the same contracts
        assert info.signature.inputs is None
        assert info.signature.outputs is not None
        assert info.signature.params is not None
        assert info.metadata["request_columns"] == json.loads(
            json.dumps(request_columns()))
        assert sorted(info.metadata["request_columns"]["columns"]) == sorted(PAIR_INPUT_COLUMNS)
        assert info.saved_input_example_info is not None
        example = mlflow.models.Model.load(uri).load_input_example(uri)
        loaded = mlflow.sklearn.load_model(uri)
        requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    # declared, pinned to this environment (MLflow's inference would load the model to find them)
    from importlib.metadata import version

    assert f"scikit-learn=={version('scikit-learn')}" in requirements
    assert f"pydantic=={version('pydantic')}" in requirements
    # the package's code travels with the model: only what a registry can install is required
    assert not any(r.startswith("smartpick") for r in requirements), requirements
    assert len(requirements) == len(logged_model.SERVED_DISTRIBUTIONS)
    # the example is synthetic: model inputs only, no applicant identifier
    assert list(example.columns) == list(PAIR_INPUT_COLUMNS)
    assert "applicant_id" not in example.columns
    assert type(loaded) is type(world.model)
    assert np.allclose(_q(loaded, va), _q(world.model, va), rtol=0, atol=1e-12)


def test_worse_model_becomes_challenger_and_champion_stays(world, tmp_path) -> None:
    from mlflow import MlflowClient

    copy = world.copy_store(tmp_path / "second")
    before = copy.files_snapshot(copy.model_dir)
    assert before, "the first run saved no model"
    cfg = load_train_config(copy.write_toml(
        copy.root / "worse.toml",
        copy.config_with(model={"max_iter": 1, "calibration": "none"})))
    second = copy.train(cfg)

    assert second.model_version == "2"
    worse = _all_row(second.metrics, "model")["log_loss"]
    first = _all_row(world.result.metrics, "model")["log_loss"]
    assert worse > first
    client = MlflowClient(tracking_uri=copy.tracking_uri)
    alias = {a: str(client.get_model_version_by_alias(copy.registered_model, a).version)
             for a in ("champion", "challenger")}
    assert alias == {"champion": "1", "challenger": "2"}
    decision = second.champion_decision
    assert decision.startswith("challenger: version 2")
    assert "does not beat champion version 1" in decision
    assert f"{worse:.5f}" in decision and f"{first:.5f}" in decision
    assert client.get_run(second.run_id).data.tags["alias_decision"] == decision
    assert copy.files_snapshot(copy.model_dir) == before
    assert "model_dir" not in second.outputs
    # the fixture's own store is untouched
    own = MlflowClient(tracking_uri=world.tracking_uri)
    assert [str(v.version) for v in own.search_model_versions(
        f"name = '{world.registered_model}'")] == ["1"]


# ----------------------------------------------------------------------------- bad configs


def _runs(tracking_uri: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def _single_class_raw(world, dest: Path) -> Path:
    shutil.copytree(world.raw_dir, dest)
    apps = pd.read_parquet(dest / "applications.parquet")
    apps["would_take"] = pd.array(np.zeros(len(apps), np.int64), dtype="Int64")
    apps.to_parquet(dest / "applications.parquet", index=False)
    return dest


@pytest.mark.parametrize("case", ["unknown_key", "missing_file", "validation_in_training",
                                  "season_absent", "single_class"])
def test_bad_config_fails_before_training(world, tmp_path, case) -> None:
    copy = world.copy_store(tmp_path / "store")
    snap = copy.files_snapshot
    models, processed = snap(copy.model_dir), snap(copy.processed_dir)
    runs = _runs(copy.tracking_uri)
    path = tmp_path / "bad.toml"
    if case == "unknown_key":
        copy.write_toml(path, copy.config_with(model={"max_iters": 10}))
        expected = r"model\.max_iters: unknown key"
    elif case == "missing_file":
        path = tmp_path / "no-such-config.toml"
        expected = "config file not found"
    elif case == "validation_in_training":
        copy.write_toml(path, copy.config_with(data={"train_seasons": [2024, 2025]}))
        expected = "validation_season 2025 is also a training season"
    elif case == "season_absent":
        copy.write_toml(path, copy.config_with(data={"train_seasons": [2019]}))
        expected = r"season 2019 has no labelled applications.*seasons present: \[2024, 2025\]"
    else:
        raw = _single_class_raw(world, tmp_path / "raw")
        copy.write_toml(path, copy.config_with(data={"raw_dir": str(raw)}))
        expected = r"the train split has \d+ rows and 1 label class"
    with pytest.raises(ConfigError, match=expected):
        copy.train(load_train_config(path))
    assert snap(copy.model_dir) == models
    assert snap(copy.processed_dir) == processed
    assert _runs(copy.tracking_uri) == runs


# ----------------------------------------------------------------------------- local saved model


@pytest.fixture
def model_copy(world, tmp_path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(world.model_dir, dest)
    return dest


def test_saved_model_loads_and_predicts_like_the_trained_one(world, sample) -> None:
    model, manifest = persist.load_model(world.model_dir, strict=True)
    assert np.array_equal(_q(model, sample), _q(world.model, sample))
    assert manifest["model_version"] == "1"
    assert manifest["mlflow_run_id"] == world.result.run_id
    assert manifest["input_columns"] == list(PAIR_INPUT_COLUMNS)
    assert manifest["sha256"] == sha256_file(persist.artifact_path(world.model_dir))
    assert manifest["validation_season"] == 2025
    assert manifest["metrics"]["model.log_loss"] == pytest.approx(
        _all_row(world.result.metrics, "model")["log_loss"])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _swap(path: Path) -> None:
    other, _ = persist.load_model(path.parent)
    other.set_params(random_state=123)  # a different, perfectly valid skops file
    path.write_bytes(sio.dumps(other))


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _swap],
                         ids=["one-byte-flipped", "truncated", "swapped"])
def test_damaged_artifact_is_refused(model_copy, damage) -> None:
    damage(persist.artifact_path(model_copy))
    with pytest.raises(ModelIntegrityError, match="manifest"):
        persist.load_model(model_copy)


def test_missing_artifact_or_manifest_is_refused(model_copy) -> None:
    (persist.artifact_path(model_copy)).unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        persist.load_model(model_copy)
    (model_copy / persist.MANIFEST_NAME).unlink()
    with pytest.raises(ModelIntegrityError, match="no model manifest"):
        persist.load_model(model_copy)


def test_other_sklearn_version_warns_and_strict_refuses(model_copy, sample, world) -> None:
    path = model_copy / persist.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["sklearn_version"] = "1.0.0"
    path.write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match=r"scikit-learn 1\.0\.0"):
        model, _ = persist.load_model(model_copy)
    assert np.array_equal(_q(model, sample.iloc[:50]), _q(world.model, sample.iloc[:50]))
    with pytest.raises(ModelIntegrityError, match=r"scikit-learn 1\.0\.0"):
        persist.load_model(model_copy, strict=True)


def test_killed_save_leaves_the_last_good_model(model_copy, world, monkeypatch) -> None:
    """A save that dies after writing the new artifact but before its manifest: the previous
    manifest still names the previous artifact, which still loads and predicts."""
    before, _ = persist.load_model(model_copy)
    old_artifact = persist.artifact_path(model_copy)
    other = before.set_params(random_state=99)  # any different bytes

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the manifest")

    monkeypatch.setattr(persist, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        persist.save_model(other, model_copy, {})
    model, _ = persist.load_model(model_copy)
    assert persist.artifact_path(model_copy) == old_artifact
    assert model.predict_proba(world.validation.head(50)).shape == (50, 2)
    assert not list(model_copy.glob(".tmp-*"))


# ------------------------------------------------------------------------- negative down-sampling

def _fit_on_validation(world, rate: float):
    from smartpick_ml.modelling.model import MatchModel

    va = world.validation
    ids = va["applicant_id"].astype(str)
    held = pd.util.hash_pandas_object(ids, index=False).to_numpy() % 3 == 0
    tr, ho = va[~held], va[held]
    y_tr, y_ho = tr["would_take"].to_numpy(int), ho["would_take"].to_numpy(int)
    model = MatchModel(max_iter=40, negative_sample_rate=rate, random_state=5)
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(tr, y_tr, holdout_pairs=ho, holdout_y=y_ho,
                  holdout_groups=ho["applicant_id"].to_numpy())
    return model, tr, y_tr


def test_negative_down_sampling_keeps_positives_and_stays_unbiased(world) -> None:
    """Every positive is kept, about ``rate`` of the negatives, the same ones for the same seed;
    the kept negatives' weight 1 / rate keeps the booster's raw probabilities unbiased (without
    it their mean would be ~1 / rate times too high)."""
    rate = 0.3
    model, tr, y = _fit_on_validation(world, rate)
    keep, weight = model._negative_sample(y)
    assert keep[y == 1].all()
    kept_share = keep[y == 0].mean()
    n_neg = int((y == 0).sum())
    assert abs(kept_share - rate) < 4 * np.sqrt(rate * (1 - rate) / n_neg)
    np.testing.assert_array_equal(weight, np.where(y[keep] == 1, 1.0, 1.0 / rate))
    np.testing.assert_array_equal(model._negative_sample(y)[0], keep)  # seeded
    X = model.features_.transform(tr)
    with threadpool_limits(limits=1, user_api="openmp"):
        raw_mean = model.booster_.predict_proba(X)[:, 1].mean()
    assert abs(raw_mean - y.mean()) < 0.15 * y.mean()


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5, float("nan")])
def test_bad_negative_sample_rate_is_refused(world, rate) -> None:
    from smartpick_ml.modelling.model import MatchModel

    with pytest.raises(ValueError, match="negative_sample_rate"):
        MatchModel(negative_sample_rate=rate)._negative_sample(np.array([0, 1, 0]))


def test_logistic_baseline_sees_exactly_the_models_features(world) -> None:
    """"The same features": the logistic's feature step is the model's fitted one, not refitted
    on the logistic's rows (which would recompute each program's typical interviewee from a
    subset, without knowing who was interviewed)."""
    from smartpick_ml.modelling.baselines import logistic_baseline
    from smartpick_ml.modelling.features import PairFeatures
    from smartpick_ml.training.splits import interviewed_mask

    va = world.validation
    features = PairFeatures().fit(va, va["would_take"].to_numpy(), interviewed=interviewed_mask(va))
    before = dict(features.program_step2_)
    subset = va.iloc[: len(va) // 5]
    logistic = logistic_baseline(features, seed=0).fit(subset, subset["would_take"].to_numpy(int))
    assert features.program_step2_ == before
    pd.testing.assert_frame_equal(logistic.named_steps["features"].transform(va),
                                  features.transform(va))
    refit = PairFeatures().fit(subset, subset["would_take"].to_numpy())  # a refitted step's
    assert refit.program_step2_ != before
    assert not np.allclose(refit.take_rate(va), features.take_rate(va), equal_nan=True)


def test_a_model_card_goes_with_the_model_and_the_run(world) -> None:
    """Issue #19: the card beside the saved model and in the MLflow run says what the model is
    for, that its data are simulated, its metrics per applicant type, its limits, how to
    retrain."""
    from mlflow import MlflowClient

    from smartpick_ml.training.model_card import CARD_NAME

    card = (world.model_dir / CARD_NAME).read_text()
    for heading in ("## Intended use", "## Data", "## Metrics on the validation season",
                    "## Limitations", "## Retrain"):
        assert heading in card, heading
    assert "**simulated**" in card
    row = world.result.metrics.query("model == 'model' and group == 'non_us_img'").iloc[0]
    assert f"| Non-US IMG | {row['log_loss']:.4f} |" in card
    client = MlflowClient(tracking_uri=world.tracking_uri)
    arts = {a.path for a in client.list_artifacts(world.result.run_id, "report")}
    assert f"report/{CARD_NAME}" in arts
