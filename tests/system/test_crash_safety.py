"""Crash safety: a training run killed with SIGKILL mid-write loses nothing (issue #6).

A real ``run_training`` runs in a child process on a copy of the small world's tracking store,
processed data and model folder. The child stops at the exact moment under test -- a temporary
file fully written but not yet renamed into place, or half written -- by a hook installed *in the
child only* (it wraps ``os.replace`` or ``Path.write_bytes``; no test code lives in the package),
signals readiness through a file, and the parent kills it with ``SIGKILL`` (no ``finally`` block,
no atexit handler runs). Afterwards:

- every file a reader picks up by name (``features.parquet``, ``manifest.json``, the artifact the
  manifest names) is whole and is the previous version;
- the only debris is hidden ``.tmp-*`` files that match no reader's name or glob;
- the last good model loads, passes its integrity check and predicts exactly as before;
- the MLflow alias ``champion`` still points at the previous version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from smartpick_ml.data.io import TMP_PREFIX, sha256_file
from smartpick_ml.modelling import persist

pytestmark = pytest.mark.crash
CHILD_TIMEOUT_S = 300

#: The child: install the stop hook for one file, then train. ``SMARTPICK_CRASH_*`` are read
#: only here, in the test's own child script.
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    target, mode, ready = (os.environ["SMARTPICK_CRASH_TARGET"], os.environ["SMARTPICK_CRASH_MODE"],
                           Path(os.environ["SMARTPICK_CRASH_READY"]))

    def stop():
        ready.touch()
        time.sleep(3600)  # until SIGKILL

    if mode == "before-rename":  # the temporary file is complete; os.replace has not run
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name.startswith(target):
                stop()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:  # "mid-write": half of the bytes are on disk
        real_write = Path.write_bytes

        def write_bytes(self, data):
            if self.name.startswith(".tmp-" + target):
                with open(self, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                stop()
            return real_write(self, data)

        Path.write_bytes = write_bytes

    import smartpick_ml.training.tracking as tracking
    from smartpick_ml.contracts.config import load_train_config
    from smartpick_ml.training.pipeline import run_training

    # a retrain that wins: any new model replaces the champion, so the run reaches the save
    tracking.MIN_IMPROVEMENT = -1.0
    run_training(load_train_config(sys.argv[1]))
    print("finished without reaching the hook", file=sys.stderr)
    sys.exit(3)
""")


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


def _kill_training_at(store, target: str, mode: str, tmp: Path) -> None:
    """Run training on ``store`` in a child, stop it at ``target`` and SIGKILL it."""
    ready = tmp / "ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(SMARTPICK_CRASH_TARGET=target, SMARTPICK_CRASH_MODE=mode,
               SMARTPICK_CRASH_READY=str(ready), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store.config_path)],
                             cwd=store.root, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not ready.exists():
            if child.poll() is not None:
                raise AssertionError(f"training ended (exit {child.returncode}) before reaching "
                                     f"{target}: {child.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"training never reached {target}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()


def _debris(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name.startswith(TMP_PREFIX)]


def _assert_debris_is_hidden(folder: Path) -> None:
    """What a killed write leaves: hidden temporary names no reader opens or globs."""
    for p in _debris(folder):
        assert p.name.startswith("."), p
        assert p.suffix not in (".parquet", ".json", ".skops", ".csv"), p


def _champion(store) -> str:
    from mlflow import MlflowClient

    with store.isolated_mlflow():
        client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
        return str(client.get_model_version_by_alias(store.registered_model, "champion").version)


def _assert_last_good_model(store, before_q: np.ndarray, pairs) -> None:
    model, manifest = persist.load_model(store.model_dir, strict=True)
    assert manifest["sha256"] == sha256_file(persist.artifact_path(store.model_dir))
    with threadpool_limits(limits=1, user_api="openmp"):
        q = model.predict_proba(pairs)[:, 1]
    np.testing.assert_array_equal(q, before_q)
    # a reader that globs for artifacts finds only whole ones: each name carries its bytes' hash
    found = list(store.model_dir.glob(f"{persist.ARTIFACT_PREFIX}*{persist.ARTIFACT_SUFFIX}"))
    assert manifest["artifact"] in [p.name for p in found]
    for artifact in found:
        digest = artifact.name[len(persist.ARTIFACT_PREFIX):-len(persist.ARTIFACT_SUFFIX)]
        assert sha256_file(artifact).startswith(digest), artifact.name


@pytest.fixture
def store(world, tmp_path):
    """A private copy of the world's tracking store, processed data and models, with a quick
    config: the child's model only has to reach the save (any new model wins, see CHILD)."""
    copy = world.copy_store(tmp_path / "store")
    data = copy.config_with(model={"max_iter": 5},
                            evaluation={"importance_rows": 200, "importance_repeats": 1,
                                        "logistic_rows": 2000})
    copy.write_toml(copy.config_path, data)
    return copy


@pytest.mark.parametrize("target, mode, folder", [
    ("features.parquet", "before-rename", "processed"),
    (persist.ARTIFACT_PREFIX, "mid-write", "models"),
    pytest.param(persist.MANIFEST_NAME, "before-rename", "models", marks=pytest.mark.slow),
], ids=["processed-features-complete-not-renamed", "model-artifact-half-written",
        "model-manifest-complete-not-renamed"])
def test_sigkill_mid_write_keeps_the_last_good_state(world, store, tmp_path, target, mode,
                                                      folder) -> None:
    sample = world.validation.sample(n=300, random_state=3).reset_index(drop=True)
    model_before, manifest_before = persist.load_model(store.model_dir)
    with threadpool_limits(limits=1, user_api="openmp"):
        q_before = model_before.predict_proba(sample)[:, 1]
    features = store.processed_dir / "features.parquet"
    processed_before = {p.name: sha256_file(p) for p in store.processed_dir.iterdir()
                        if p.is_file()}
    champion_before = _champion(store)

    _kill_training_at(store, target, mode, tmp_path)

    # the kill happened mid-write: the temporary file is there, hidden
    assert _debris(store.root / folder), "the child was not stopped inside an atomic write"
    _assert_debris_is_hidden(store.root)
    # processed data: the previous features file and manifest, byte for byte
    assert sha256_file(features) == processed_before["features.parquet"]
    assert (sha256_file(store.processed_dir / "features_manifest.json")
            == processed_before["features_manifest.json"])
    import pandas as pd

    assert len(pd.read_parquet(features)) > 0
    # the model services load: the previous one, verified, same predictions
    _assert_last_good_model(store, q_before, sample)
    assert persist.read_manifest(store.model_dir)["artifact"] == manifest_before["artifact"]
    assert _champion(store) == champion_before


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_evaluate_plans_stopped_by_sigterm_leaves_no_workers_and_no_files(small_training_run,
                                                                         tmp_path):
    """A `kill` while seasons are re-run on two worker processes: the command stops as Ctrl-C
    does, its workers stop with it (they were left running), and nothing is written."""
    out = tmp_path / "plans"
    config = small_training_run.evaluate_plans_config(
        tmp_path / "evaluate.toml", out, {"non_us_img": 40, "us_md_senior": 20},
        group_share=0.02, replicates=30, n_jobs=2)
    log = tmp_path / "log.txt"
    with open(log, "wb") as fh:
        child = subprocess.Popen([sys.executable, "-m", "smartpick_ml.cli", "evaluate-plans",
                                  "--config", str(config), "--model",
                                  str(small_training_run.model_dir), "--no-track"],
                                 stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(workers) < 2:
            assert child.poll() is None, log.read_text()[-2000:]
            workers = {p for p in _children(child.pid)
                       if "popen_loky" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")}
            time.sleep(0.5)
        assert len(workers) >= 2, log.read_text()[-2000:]
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), "worker processes outlived the command"
        assert not out.exists() and not list(tmp_path.glob(".plans.*"))
    finally:
        if child.poll() is None:
            child.kill()
        for pid in workers:  # never leave a failed run's workers behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
