"""Every entry point applies the same rules: the same applicant rows sent to ``predict`` (a pairs
frame), ``rank`` (a profile), the CLI (a profile file) and the served model (a request frame) are
refused by all of them, each message naming the field, or accepted by all with the same q. What
only a ranking takes (signals by program, preferences) is held to the same rules by ``rank``, the
CLI's profile file and the served ``rank`` task."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from smartpick_ml.cli import main
from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, applicant_pairs
from smartpick_ml.inference.predictor import InputError, MatchPredictor

GOOD = {"applicant_type": "non_us_img", "step2_ck": 248, "graduation_year": 2022,
        "season": 2025, "usce_months": 6, "publications": 2, "needs_visa": True,
        "home_state": None}
SPECIALTY = "Internal Medicine"

#: (what is wrong, the changed fields, the field every refusal must name)
BAD = [
    ("a US MD senior who needs a visa", {"applicant_type": "us_md_senior"}, "needs_visa"),
    ("graduated after the season", {"graduation_year": 2026}, "graduation_year"),
    ("Step 2 CK out of range", {"step2_ck": 400}, "step2_ck"),
    ("Step 2 CK as text", {"step2_ck": "248"}, "step2_ck"),
    ("Step 2 CK a fraction", {"step2_ck": 248.5}, "step2_ck"),
    ("visa as a word", {"needs_visa": "yes"}, "needs_visa"),
    ("visa as a number", {"needs_visa": 1}, "needs_visa"),
    ("unknown applicant type", {"applicant_type": "martian"}, "applicant_type"),
    ("unknown home state", {"home_state": "ZZ"}, "home_state"),
    ("negative clinical experience", {"usce_months": -1}, "usce_months"),
    ("publications a fraction", {"publications": 2.5}, "publications"),
    ("missing Step 2 CK", {"step2_ck": None}, "step2_ck"),
]


@pytest.fixture(scope="module")
def entry(small_training_run):
    from smartpick_ml.serving.pyfunc import ServedMatchModel

    world = small_training_run
    predictor = MatchPredictor.load(world.model_dir)
    programs = predictor.programs[predictor.programs["specialty"] == SPECIALTY].iloc[:3]
    served = ServedMatchModel(predictor.model, predictor.programs, warm_up=False)
    return world, predictor, programs, served


def via_predict(entry, applicant):
    _, predictor, programs, _ = entry
    pairs = applicant_pairs(applicant, programs)[list(PAIR_INPUT_COLUMNS)]
    pairs = pairs.astype({c: object for c in applicant})  # each value exactly as given
    return predictor.predict(pairs)


def via_rank(entry, applicant):
    _, predictor, programs, _ = entry
    ranked = predictor.rank(applicant, specialty=SPECIALTY)
    return ranked.set_index("program_id").loc[programs["program_id"], "q"].to_numpy()


def via_served(entry, applicant):
    _, _, programs, served = entry
    frame = pd.DataFrame({c: pd.Series([applicant[c]] * len(programs), dtype=object)
                          for c in applicant})
    frame["program_id"] = programs["program_id"].to_numpy()
    return np.asarray(served.predict(frame))[:, 1]


def via_cli(entry, applicant, tmp_path):
    world = entry[0]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(applicant))
    return CliRunner().invoke(main, ["rank", "--profile", str(path), "--model",
                                     str(world.model_dir), "--specialty", SPECIALTY, "--top", "3"])


def refusal(call) -> str:
    from mlflow.exceptions import MlflowException

    from smartpick_ml.contracts.errors import DataValidationError

    with pytest.raises((InputError, DataValidationError, MlflowException)) as info:
        call()
    return str(info.value.message if isinstance(info.value, MlflowException) else info.value)


@pytest.mark.parametrize(("what", "change", "field"), BAD, ids=[b[0] for b in BAD])
def test_every_entry_point_refuses_the_same_rows(entry, tmp_path, what, change, field):
    applicant = {**GOOD, **change}
    for name, call in (("predict", lambda: via_predict(entry, applicant)),
                       ("rank", lambda: via_rank(entry, applicant)),
                       ("served", lambda: via_served(entry, applicant))):
        message = refusal(call)
        assert field in message, (name, message)
    result = via_cli(entry, applicant, tmp_path)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert field in result.output, result.output


def test_every_entry_point_accepts_a_good_row_with_the_same_q(entry, tmp_path):
    want = via_predict(entry, GOOD)
    np.testing.assert_allclose(via_rank(entry, GOOD), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(via_served(entry, GOOD), want, rtol=0, atol=1e-9)
    result = via_cli(entry, GOOD, tmp_path)
    assert result.exit_code == 0, result.output


#: what only a ranking takes: (what is wrong, signals, preferences, the field to name). A signal
#: to "<Family Medicine>" goes to a program of that specialty while Internal Medicine is ranked.
BAD_RANKING = [
    ("a signal to an unknown program", {"NOPE": "gold"}, {}, "signals"),
    ("a signal to a path", {"../../etc": "gold"}, {}, "signals"),
    ("a signal to another specialty", {"<Family Medicine>": "signal"}, {}, "signals"),
    ("a signal where the catalog has no signal data", {"<Internal Medicine>": "gold"}, {},
     "signals"),
    ("a NaN preference weight", {}, {"location_weight": math.nan}, "location_weight"),
    ("an infinite preference weight", {}, {"visa_weight": math.inf}, "visa_weight"),
]


def _resolve(predictor, signals):
    programs = predictor.programs
    return {(str(programs.loc[programs["specialty"] == p[1:-1], "program_id"].iloc[0])
             if p.startswith("<") else p): kind for p, kind in signals.items()}


def via_rank_request(entry, signals, preferences, specialty=SPECIALTY):
    return entry[1].rank({**GOOD, "signals": signals}, preferences, specialty=specialty, k=3)


def via_served_rank(entry, signals, preferences, specialty=SPECIALTY):
    frame = pd.DataFrame({c: pd.Series([GOOD[c]], dtype=object) for c in GOOD})
    return entry[3].predict(frame, {"task": "rank", "specialty": specialty, "k": 3,
                                    "signals": json.dumps(signals),
                                    "preferences": json.dumps(preferences)})


def via_cli_profile(entry, signals, preferences, tmp_path, specialty=SPECIALTY):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({**GOOD, "signals": signals, "preferences": preferences}))
    return CliRunner().invoke(main, ["rank", "--profile", str(path), "--model",
                                     str(entry[0].model_dir), "--specialty", specialty,
                                     "--top", "3"])


@pytest.mark.parametrize(("what", "signals", "preferences", "field"), BAD_RANKING,
                         ids=[b[0] for b in BAD_RANKING])
def test_every_ranking_entry_point_refuses_the_same_requests(entry, tmp_path, what, signals,
                                                             preferences, field):
    signals = _resolve(entry[1], signals)
    for name, call in (("rank", lambda: via_rank_request(entry, signals, preferences)),
                       ("served", lambda: via_served_rank(entry, signals, preferences))):
        message = refusal(call)
        assert field in message, (name, message)
    result = via_cli_profile(entry, signals, preferences, tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert field in result.output, result.output


def test_every_ranking_entry_point_takes_a_signal_it_can_see(entry, tmp_path):
    programs = entry[1].programs
    target = str(programs.loc[programs["specialty"] == "Anesthesiology", "program_id"].iloc[0])
    ranked = via_rank_request(entry, {target: "gold"}, {}, "Anesthesiology")
    served = via_served_rank(entry, {target: "gold"}, {}, "Anesthesiology")
    assert list(pd.DataFrame(served)["program_id"]) == list(ranked["program_id"])
    assert via_cli_profile(entry, {target: "gold"}, {}, tmp_path,
                           "Anesthesiology").exit_code == 0
