"""A service's lean install (issue #19): ``pip install smartpick-ml`` brings only what loading
``models/`` and ranking need; the README's three lines, ``smartpick rank`` and ``smartpick
score`` work in a process where MLflow, matplotlib and tqdm cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINING_STACK = ("mlflow", "matplotlib", "tqdm")

#: runs its argv[1:] as a Python script or the CLI with the training stack unimportable
_BLOCKED = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (lean install)")
sys.meta_path.insert(0, Blocked())
mode, *rest = sys.argv[1:]
if mode == "code":
    exec(rest[0])
else:
    from smartpick_ml.cli import main
    sys.argv = ["smartpick", *rest]
    main()
"""

def readme_service_lines(model_dir: Path) -> str:
    """The README's "From a service" code, as written, pointed at ``model_dir``."""
    text = (REPO / "README.md").read_text()
    block = text.split("## From a service", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert 'MatchPredictor.load("models")' in block
    return block.replace('"models"', repr(str(model_dir))) + \
        '\nprint(len(ranked), float(ranked["q"].max()))\n'


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKED.format(blocked=set(TRAINING_STACK)),
                           *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_the_base_requirements_leave_out_the_training_and_serving_stacks():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for name in TRAINING_STACK:
        assert name not in base, name
    extras = project["optional-dependencies"]
    assert any(d.startswith("mlflow") for d in extras["serve"])
    assert {"mlflow", "matplotlib", "tqdm"} <= {d.split(">")[0].split("=")[0]
                                                for d in extras["train"]}


def test_the_readme_lines_rank_and_score_without_the_training_stack(small_training_run,
                                                                    tmp_path):
    world = small_training_run
    done = _run("code", readme_service_lines(world.model_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    n, best = done.stdout.split()
    assert int(n) == 20 and 0 < float(best) <= 1
    profile = tmp_path / "me.json"
    profile.write_text(json.dumps({"applicant_type": "us_img", "step2_ck": 240,
                                   "graduation_year": 2023, "preferred_specialty":
                                   "Internal Medicine"}))
    done = _run("cli", "rank", "--profile", str(profile), "--model", str(world.model_dir),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "next: smartpick plan" in done.stdout
    import pandas as pd

    applicants = pd.read_parquet(world.raw_dir / "applicants.parquet").head(3)
    applicants.to_parquet(tmp_path / "a.parquet")
    done = _run("cli", "score", "--applicants", str(tmp_path / "a.parquet"), "--out",
                str(tmp_path / "s.parquet"), "--model", str(world.model_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 3 * len(
        pd.read_parquet(next(world.model_dir.glob("programs-*.parquet"))))


def test_a_plot_without_matplotlib_says_what_to_install(tmp_path):
    done = _run("code", "from smartpick_ml.training.evaluate import pyplot; pyplot()",
                cwd=tmp_path)
    assert done.returncode != 0
    assert "pip install 'smartpick-ml[train]'" in done.stderr


@pytest.mark.parametrize("name", TRAINING_STACK)
def test_the_blocker_blocks(name, tmp_path):
    """The check above proves something only if the stack really is unimportable there."""
    done = _run("code", f"import {name}", cwd=tmp_path)
    assert done.returncode != 0 and "lean install" in done.stderr
