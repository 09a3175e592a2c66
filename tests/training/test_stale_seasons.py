"""`smartpick run` / `train` re-simulate seasons on disk that other parameters or code made,
with the run options they were made with, and never touch tables without a manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smartpick_ml.contracts.config import load_simulate_config, load_train_config
from smartpick_ml.data.io import sha256_file
from smartpick_ml.simulation.season import simulate_to_disk, simulation_fingerprint
from smartpick_ml.training.splits import ensure_data
from tests.conftest import SIMULATE_TOML, write_toml

SCALE = 0.02
SEASONS = [2024, 2025]


def _train_config(root: Path, simulate_config: Path):
    return load_train_config(write_toml(root / "train.toml", {
        "data": {"raw_dir": str(root / "raw"), "processed_dir": str(root / "processed"),
                 "simulate": "if-missing", "simulate_config": str(simulate_config),
                 "train_seasons": [SEASONS[0]], "validation_season": SEASONS[1]}}))


def _other_parameters(root: Path) -> Path:
    """The project's simulation settings with one behavioural parameter changed."""
    text, n = re.subn(r"\nrank_bias = ([-0-9.]+)\n",
                      lambda m: f"\nrank_bias = {float(m.group(1)) + 0.5}\n",
                      SIMULATE_TOML.read_text(), count=1)
    assert n == 1
    path = root / "simulate_other.toml"
    path.write_text(text)
    return path


@pytest.fixture
def simulated(tmp_path: Path) -> Path:
    sim = load_simulate_config(SIMULATE_TOML, seasons=SEASONS, scale=SCALE, catalog="synthetic",
                               output_dir=str(tmp_path / "raw"))
    simulate_to_disk(sim)
    return tmp_path


def _manifest(root: Path) -> dict:
    return json.loads((root / "raw" / "simulation_manifest.json").read_text())


def test_fingerprint_follows_the_parameters_not_the_run_options(tmp_path):
    params = load_simulate_config(SIMULATE_TOML).params
    assert simulation_fingerprint(params) == simulation_fingerprint(
        load_simulate_config(SIMULATE_TOML, scale=0.5, seasons=[2025], seed=3).params)
    assert simulation_fingerprint(params) != simulation_fingerprint(
        load_simulate_config(_other_parameters(tmp_path)).params)


def test_seasons_of_the_current_parameters_are_kept(simulated):
    before = sha256_file(simulated / "raw" / "applications.parquet")
    said: list[str] = []
    ensure_data(_train_config(simulated, SIMULATE_TOML), said.append)
    assert said == []
    assert sha256_file(simulated / "raw" / "applications.parquet") == before


def test_seasons_of_other_parameters_are_simulated_again_with_their_run_options(simulated):
    other = _other_parameters(simulated)
    before = sha256_file(simulated / "raw" / "applications.parquet")
    said: list[str] = []
    ensure_data(_train_config(simulated, other), said.append)
    assert any("other parameters or code" in line for line in said)
    made = _manifest(simulated)
    assert made["simulation_fingerprint"] == simulation_fingerprint(
        load_simulate_config(other).params)
    # the size and seasons they were made with, not the settings file's full-scale default
    assert made["scale"] == SCALE and made["seasons"] == SEASONS and made["catalog"] == "synthetic"
    assert sha256_file(simulated / "raw" / "applications.parquet") != before


def test_tables_without_a_manifest_are_never_replaced(simulated):
    (simulated / "raw" / "simulation_manifest.json").unlink()
    before = sha256_file(simulated / "raw" / "applications.parquet")
    said: list[str] = []
    ensure_data(_train_config(simulated, _other_parameters(simulated)), said.append)
    assert said == []
    assert sha256_file(simulated / "raw" / "applications.parquet") == before


@pytest.mark.parametrize("options", [{"scale": "big"}, {"seasons": 5}, {"scale": 40.0}])
def test_a_manifest_with_unreadable_run_options(simulated, options):
    """The run options a manifest records are read by one rule (the simulation config's):
    `season-report` refuses odd ones, naming them; `manifest_config` gives None."""
    from click.testing import CliRunner

    from smartpick_ml.cli import main
    from smartpick_ml.simulation.season import manifest_config

    path = simulated / "raw" / "simulation_manifest.json"
    path.write_text(json.dumps({**_manifest(simulated), **options}))
    assert manifest_config(_manifest(simulated), load_simulate_config(SIMULATE_TOML)) is None
    doc = simulated / "report.md"
    result = CliRunner().invoke(main, ["season-report", "--data-dir", str(simulated / "raw"),
                                       "--out", str(doc)])
    assert result.exit_code == 2 and "unreadable run options" in result.stderr
    assert "Traceback" not in result.output and not doc.exists()
