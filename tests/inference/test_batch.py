"""Scoring whole seasons (issue #19): ``score_applicants`` and ``smartpick score`` write q for
every applicant × program, equal to the model's own ``predict_proba``, atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from smartpick_ml.cli import main
from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.pairs import APPLICANT_INPUTS, applicant_pairs
from smartpick_ml.inference import batch
from smartpick_ml.inference.batch import score_applicants
from smartpick_ml.inference.predictor import MatchPredictor


@pytest.fixture(scope="module")
def predictor(small_training_run) -> MatchPredictor:
    return MatchPredictor.load(small_training_run.model_dir)


@pytest.fixture(scope="module")
def applicants(small_training_run) -> pd.DataFrame:
    table = pd.read_parquet(small_training_run.raw_dir / "applicants.parquet")
    return table.groupby("applicant_type").head(6).reset_index(drop=True)  # every type


def test_scores_equal_the_models_own_for_every_pair(predictor, applicants, tmp_path,
                                                    monkeypatch) -> None:
    monkeypatch.setattr(batch, "CHUNK_APPLICANTS", 7)  # several chunks, one partial
    out = tmp_path / "scores.parquet"
    summary = score_applicants(predictor, applicants, out)
    scores = pd.read_parquet(out)
    assert summary.pairs == len(scores) == len(applicants) * len(predictor.programs)
    assert scores["q"].dtype == np.float32
    for i in (0, len(applicants) // 2, len(applicants) - 1):
        record = applicants.iloc[i]
        fields = [c for c in APPLICANT_INPUTS if c in record.index]  # applications: optional
        pairs = applicant_pairs(record[fields].to_dict(), predictor.programs)
        with threadpool_limits(limits=1, user_api="openmp"):
            want = predictor.model.predict_proba(pairs)[:, 1]
        got = scores[scores["applicant_id"] == record["applicant_id"]]
        assert list(got["program_id"]) == list(predictor.programs["program_id"])
        np.testing.assert_allclose(got["q"].to_numpy(), want, rtol=0, atol=1e-6)  # float32


def test_one_specialty_and_the_cli(predictor, applicants, small_training_run, tmp_path) -> None:
    src = tmp_path / "applicants.parquet"
    applicants.to_parquet(src)
    out = tmp_path / "im.parquet"
    result = CliRunner().invoke(main, ["score", "--applicants", str(src), "--out", str(out),
                                       "--specialty", "Internal Medicine", "--model",
                                       str(small_training_run.model_dir)])
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out)
    im = predictor.programs.loc[predictor.programs["specialty"] == "Internal Medicine",
                                "program_id"]
    assert set(scores["program_id"]) == set(im)
    assert len(scores) == len(im) * len(applicants)
    assert f"{len(scores):,} pairs" in result.output


def test_bad_applicants_are_refused_before_anything_is_written(predictor, applicants,
                                                               tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"the previous file")
    with pytest.raises(DataValidationError, match="step2_ck"):
        score_applicants(predictor, applicants.assign(step2_ck=400), out)
    with pytest.raises(DataValidationError, match="missing required column"):
        score_applicants(predictor, applicants.drop(columns=["season"]), out)
    assert out.read_bytes() == b"the previous file"
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]  # no temporary left


def test_a_run_that_fails_midway_keeps_the_previous_file(predictor, applicants, tmp_path,
                                                         monkeypatch) -> None:
    monkeypatch.setattr(batch, "CHUNK_APPLICANTS", 3)
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"the previous file")
    calls = {"n": 0}

    def fail_on_second_chunk(done: int, total: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_applicants(predictor, applicants, out, progress=fail_on_second_chunk)
    assert out.read_bytes() == b"the previous file"
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]
