"""MatchPredictor as a service calls it: ``load`` ranks the catalog the model was trained with
(verified, never the working directory's), and the Python API refuses what it would otherwise
drop or misread: signals it cannot see, non-finite weights, counts given as bools; numpy numbers
are taken as the Python numbers they are."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.contracts.errors import ModelIntegrityError
from smartpick_ml.data.catalog import synthetic_catalog
from smartpick_ml.data.io import frame_hash, write_parquet_atomic
from smartpick_ml.inference.predictor import ApplicantProfile, InputError, MatchPredictor
from smartpick_ml.modelling import persist

APPLICANT = {"applicant_type": "non_us_img", "step2_ck": 248, "graduation_year": 2022,
             "season": 2025, "needs_visa": True, "usce_months": 6}
SPECIALTY = "Internal Medicine"


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


@pytest.fixture(scope="module")
def predictor(world) -> MatchPredictor:
    return MatchPredictor.load(world.model_dir)


@pytest.fixture
def model_copy(world, tmp_path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(world.model_dir, dest)
    return dest


def _other_catalog() -> pd.DataFrame:
    """A valid catalog that is not the training one (another synthetic draw)."""
    return synthetic_catalog(seed=11)


def _saved_catalog(model_dir: Path) -> Path:
    return model_dir / persist.read_manifest(model_dir)["catalog"]["file"]


# ------------------------------------------------------------------- the catalog, verified


def test_load_ranks_the_catalog_saved_with_the_model_not_the_working_directory(
        world, tmp_path, monkeypatch):
    """Issue #20 item 4: from a folder holding another catalog in data/raw, ``load`` took that
    one."""
    write_parquet_atomic(_other_catalog(), tmp_path / "data" / "raw" / "programs.parquet")
    monkeypatch.chdir(tmp_path)
    manifest = persist.read_manifest(world.model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model's own catalog: nothing to warn about
        predictor = MatchPredictor.load(world.model_dir)
    assert frame_hash(predictor.programs) == manifest["training_data_sha256"]["programs"]
    used = predictor.manifest["catalog_used"]
    assert used["trained_with"] and used["sha256"] == manifest["catalog"]["sha256"]
    assert Path(used["source"]) == _saved_catalog(world.model_dir)


def test_training_saves_the_catalog_beside_the_model_and_records_it(world):
    manifest = persist.read_manifest(world.model_dir)
    path = _saved_catalog(world.model_dir)
    assert path.parent == world.model_dir and path.name.startswith(persist.CATALOG_PREFIX)
    saved = pd.read_parquet(path)
    assert frame_hash(saved) == manifest["catalog"]["sha256"] \
        == manifest["training_data_sha256"]["programs"]


def _replace_catalog(path: Path) -> None:
    write_parquet_atomic(_other_catalog(), path)


def _drop_a_program(path: Path) -> None:
    write_parquet_atomic(pd.read_parquet(path).iloc[1:], path)


def _rename_a_program(path: Path) -> None:
    table = pd.read_parquet(path)
    table.loc[0, "name"] = "Somewhere Else Program"
    write_parquet_atomic(table, path)


def _not_parquet(path: Path) -> None:
    path.write_bytes(b"not a parquet file")


@pytest.mark.parametrize("damage", [_replace_catalog, _drop_a_program, _rename_a_program,
                                    _not_parquet],
                         ids=["another-catalog", "one-program-fewer", "one-name-changed",
                              "not-parquet"])
def test_a_catalog_that_is_not_the_recorded_one_is_refused(model_copy, damage):
    path = _saved_catalog(model_copy)
    damage(path)
    with pytest.raises(ModelIntegrityError, match=path.name):
        MatchPredictor.load(model_copy)


def test_a_missing_or_unrecorded_catalog_is_refused(model_copy):
    path = _saved_catalog(model_copy)
    path.unlink()
    with pytest.raises(ModelIntegrityError, match=f"missing.*{path.name}"):
        MatchPredictor.load(model_copy)
    manifest_path = model_copy / persist.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    del manifest["catalog"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="records no catalog"):
        MatchPredictor.load(model_copy)


@pytest.mark.parametrize("name", ["../programs.parquet", "/etc/passwd", "", 7])
def test_a_catalog_named_outside_the_model_folder_is_refused(model_copy, name):
    manifest_path = model_copy / persist.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["catalog"]["file"] = name
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="names no valid catalog"):
        MatchPredictor.load(model_copy)


def test_another_catalog_only_when_passed_explicitly_warned_and_recorded(world):
    other = _other_catalog()
    with pytest.warns(UserWarning, match="not the one the model was trained with"):
        predictor = MatchPredictor.load(world.model_dir, programs=other)
    used = predictor.manifest["catalog_used"]
    assert used == {"source": "a DataFrame passed as programs=", "sha256": frame_hash(other),
                    "trained_with": False}
    assert set(predictor.programs["program_id"]) == set(other["program_id"])
    # the training catalog passed explicitly is no surprise: recorded, not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = MatchPredictor.load(world.model_dir, programs=world.raw_dir / "programs.parquet")
    assert same.manifest["catalog_used"]["trained_with"]


def test_an_explicit_catalog_is_held_to_the_programs_contract(world):
    from smartpick_ml.contracts.errors import DataValidationError

    with pytest.raises(DataValidationError, match="positions"):
        MatchPredictor.load(world.model_dir,
                            programs=_other_catalog().assign(positions=-1))


@pytest.fixture
def champion_uri(world):
    with world.isolated_mlflow(world.tracking_uri):
        yield f"models:/{world.registered_model}@champion"


def test_an_mlflow_model_ranks_the_catalog_logged_with_it(world, champion_uri, tmp_path,
                                                           monkeypatch):
    """Issue #20 item 4: ``models:/…`` took ./data/raw/programs.parquet, not the logged catalog."""
    write_parquet_atomic(_other_catalog(), tmp_path / "data" / "raw" / "programs.parquet")
    monkeypatch.chdir(tmp_path)
    predictor = MatchPredictor.load(champion_uri)
    trained = persist.read_manifest(world.model_dir)["training_data_sha256"]["programs"]
    assert frame_hash(predictor.programs) == trained
    used = predictor.manifest["catalog_used"]
    assert used["trained_with"] and Path(used["source"]).name == "programs.parquet"
    assert predictor.manifest["source"] == champion_uri


def test_an_mlflow_model_with_a_changed_catalog_is_refused(world, champion_uri, tmp_path,
                                                           monkeypatch):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=champion_uri))
    changed = tmp_path / "model"
    shutil.copytree(local, changed)
    _drop_a_program(changed / "programs.parquet")
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **_: str(changed))
    with pytest.raises(ModelIntegrityError, match="programs.parquet"):
        MatchPredictor.load(champion_uri)


# ---------------------------------------------------------------------------- signals


def _program_of(predictor: MatchPredictor, specialty: str) -> str:
    return str(predictor.programs.loc[predictor.programs["specialty"] == specialty,
                                      "program_id"].iloc[0])


CALLS = {
    "rank": lambda p, app: p.rank(app, specialty=SPECIALTY),
    "plan": lambda p, app: p.plan(app, specialty=SPECIALTY, max_applications=5),
    "match_probability": lambda p, app: p.match_probability(app, [_program_of(p, SPECIALTY)]),
}


@pytest.mark.parametrize("program_id", ["NOPE", "../../etc", "x" * 100_000])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_signal_to_an_unknown_program_is_refused(predictor, call, program_id):
    """Issue #20 item 8: such signals were dropped without a word."""
    with pytest.raises(InputError, match=r"applicant\.signals") as info:
        CALLS[call](predictor, {**APPLICANT, "signals": {program_id: "gold"}})
    message = str(info.value)
    assert program_id[:20] in message and len(message) < 400


@pytest.mark.parametrize("call", ["rank", "plan"])
def test_a_signal_to_a_program_of_another_specialty_is_refused(predictor, call):
    elsewhere = _program_of(predictor, "Family Medicine")
    with pytest.raises(InputError, match=rf"applicant\.signals: program '{elsewhere}'.*Family"):
        CALLS[call](predictor, {**APPLICANT, "signals": {elsewhere: "signal"}})


def test_a_signal_to_a_program_ranked_is_taken_and_reaches_the_model(predictor):
    plain = predictor.rank(APPLICANT, specialty="Anesthesiology", explain=False)
    target = str(plain.loc[plain["eligible"], "program_id"].iloc[0])
    signalled = predictor.rank({**APPLICANT, "signals": {target: "gold"}},
                               specialty="Anesthesiology", explain=False)
    q = {name: r.set_index("program_id")["q"] for name, r in (("plain", plain),
                                                              ("gold", signalled))}
    moved = q["gold"] != q["plain"].reindex(q["gold"].index)
    assert list(q["gold"].index[moved]) == [target]  # the signalled program's q, and only it


# ---------------------------------------------------------------------- numbers and counts


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_a_non_finite_preference_weight_must_be_a_finite_number(predictor, weight):
    """Issue #20 item 8: NaN was answered "must be ≤ 5"."""
    with pytest.raises(InputError, match=r"preferences\.location_weight: .*finite number") as info:
        predictor.rank(APPLICANT, {"location_weight": weight}, specialty=SPECIALTY)
    assert "less than" not in str(info.value)


def test_numpy_numbers_are_taken_as_python_numbers(predictor):
    """Issue #20 item 8: ``numpy.int64`` values of ``k`` / ``max_applications`` were refused."""
    ranked = predictor.rank(APPLICANT, specialty=SPECIALTY, k=np.int64(7), explain=False)
    pd.testing.assert_frame_equal(
        ranked, predictor.rank(APPLICANT, specialty=SPECIALTY, k=7, explain=False))
    for kwargs in ({"max_applications": np.int64(12)}, {"max_applications": np.int32(12)},
                   {"budget": np.float64(400.0)}, {"budget": np.int64(400)}):
        python = {k: v.item() for k, v in kwargs.items()}
        got = predictor.plan(APPLICANT, specialty=SPECIALTY, **kwargs)
        want = predictor.plan(APPLICANT, specialty=SPECIALTY, **python)
        pd.testing.assert_frame_equal(got["table"], want["table"])


@pytest.mark.parametrize("call, field", [
    (lambda p: p.rank(APPLICANT, specialty=SPECIALTY, k=True), "k"),
    (lambda p: p.rank(APPLICANT, specialty=SPECIALTY, k=np.bool_(True)), "k"),
    (lambda p: p.rank(APPLICANT, specialty=SPECIALTY, k=np.float64(3.0)), "k"),
    (lambda p: p.plan(APPLICANT, specialty=SPECIALTY, max_applications=True), "max_applications"),
    (lambda p: p.plan(APPLICANT, specialty=SPECIALTY, max_applications=np.bool_(True)),
     "max_applications"),
    (lambda p: p.plan(APPLICANT, specialty=SPECIALTY, budget=True), "budget"),
    (lambda p: p.plan(APPLICANT, specialty=SPECIALTY, budget=np.float64("nan")), "budget"),
    (lambda p: p.plan(APPLICANT, specialty=SPECIALTY, budget=10**400), "budget"),
])
def test_bools_and_non_finite_numbers_are_not_counts_or_dollars(predictor, call, field):
    with pytest.raises(InputError, match=rf"^{field}: "):
        call(predictor)


@pytest.mark.parametrize("call", [
    lambda p, v: p.rank(APPLICANT, specialty=SPECIALTY, k=v),
    lambda p, v: p.plan(APPLICANT, specialty=SPECIALTY, budget=v),
    lambda p, v: p.rank(APPLICANT, specialty=v),
    lambda p, v: p.rank(APPLICANT, {"states": [v]}, specialty=SPECIALTY),
    lambda p, v: p.match_probability(APPLICANT, [v]),
], ids=["k", "budget", "specialty", "preferences.states", "rank_list"])
def test_messages_quote_a_bad_value_briefly(predictor, call):
    with pytest.raises(InputError) as info:
        call(predictor, "Z" * 200_000)
    assert len(str(info.value)) < 400


def test_rank_explains_a_page_by_default_and_as_many_rows_as_asked(predictor):
    """Issue #19: explanations cost several scorings a row, so ``rank`` explains the first
    EXPLAINED_ROWS rows by default (the whole catalog stays fast), n rows when asked, none with
    False; bad values are refused naming the argument."""
    from smartpick_ml.inference.predictor import EXPLAINED_ROWS, InputError

    applicant = {"applicant_type": "us_img", "step2_ck": 245, "graduation_year": 2023,
                 "season": 2025}
    ranked = predictor.rank(applicant)
    explained = ranked["top_factors"].str.len() > 0
    assert len(ranked) == len(predictor.programs) > EXPLAINED_ROWS
    assert explained.iloc[:EXPLAINED_ROWS].all() and not explained.iloc[EXPLAINED_ROWS:].any()
    assert (predictor.rank(applicant, explain=40)["top_factors"].str.len() > 0).sum() == 40
    assert "top_factors" not in predictor.rank(applicant, explain=False)
    # the first rows' explanations do not depend on how many rows are explained
    head = predictor.rank(applicant, k=5)["top_factors"].tolist()
    assert head == ranked["top_factors"].iloc[:5].tolist()
    for bad in (-1, 2.5, "all"):
        with pytest.raises(InputError, match="explain"):
            predictor.rank(applicant, explain=bad)


@pytest.mark.parametrize("value", ["1.0", True, "yes", [1]])
def test_a_preference_weight_must_be_a_number(predictor, value):
    """Issue #20, item 8: a weight given as text or true/false is refused naming it, as the
    served model's JSON would be; numbers (numpy's too) are taken."""
    from smartpick_ml.inference.predictor import InputError

    applicant = {"applicant_type": "us_img", "step2_ck": 245, "graduation_year": 2023,
                 "season": 2025}
    with pytest.raises(InputError, match="preferences.location_weight"):
        predictor.rank(applicant, {"location_weight": value}, specialty="Internal Medicine", k=3)
    for ok in (1, 1.5, np.float64(2.0), np.int64(3)):
        predictor.rank(applicant, {"location_weight": ok}, specialty="Internal Medicine", k=3)


@pytest.mark.parametrize("backups, message", [
    (["Nope"], r"backup_specialties\[0\]: must be one of"),
    (["Family Medicine", 7], r"backup_specialties\[1\]: must be text"),
    ([SPECIALTY], "is the preferred specialty"),
    (["Family Medicine", "Family Medicine"], "appears twice"),
    (["Family Medicine", "Pediatrics", "Psychiatry"], "at most 2"),
    ("Family Medicine", "valid list"),
    ({"a": "Family Medicine"}, "valid list"),
    ([["Family Medicine"]], r"backup_specialties\[0\]: must be text"),
])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_bad_backup_specialty_is_refused_naming_the_field(predictor, call, backups, message):
    """Issue #16: an unknown backup, one equal to the preferred specialty, or more than allowed:
    an error naming the field, whatever the entry point."""
    applicant = {**APPLICANT, "preferred_specialty": SPECIALTY, "backup_specialties": backups}
    with pytest.raises(InputError, match=r"backup_specialties") as info:
        CALLS[call](predictor, applicant)
    assert re.search(message, str(info.value)), str(info.value)
    assert len(str(info.value)) < 500


@pytest.mark.parametrize(("specialty", "tiers", "match"), [
    ("Anesthesiology", ["gold"] * 6, "6 'gold' signals in Anesthesiology; applicants have 5"),
    ("Anesthesiology", ["signal"], "Anesthesiology signals are 'gold' and 'silver', not 'signal'"),
    ("Pediatrics", ["gold"], "Pediatrics signals are 'signal', not 'gold'"),
    ("Pediatrics", ["signal"] * 6, "6 'signal' signals in Pediatrics; applicants have 5"),
    ("Internal Medicine", ["signal"], "no signal data for Internal Medicine"),
])
@pytest.mark.parametrize("call", ["rank", "plan"])
def test_signals_beyond_the_published_allotment_or_of_a_tier_not_used_are_refused(
        predictor, specialty, tiers, match, call):
    """Issue #18: "gold" and "signal" gave the same q, and any number of signals was taken."""
    ids = predictor.programs.loc[predictor.programs["specialty"] == specialty, "program_id"]
    signals = dict(zip(ids.iloc[:len(tiers)], tiers, strict=True))
    with pytest.raises(InputError, match=rf"applicant\.signals: .*{re.escape(match)}"):
        if call == "rank":
            predictor.rank({**APPLICANT, "signals": signals}, specialty=specialty)
        else:
            predictor.plan({**APPLICANT, "signals": signals}, specialty=specialty,
                           max_applications=5)


def test_signals_within_the_allotment_are_taken(predictor):
    ids = predictor.programs.loc[predictor.programs["specialty"] == "Anesthesiology",
                                 "program_id"]
    signals = {**dict.fromkeys(ids.iloc[:5], "gold"), **dict.fromkeys(ids.iloc[5:15], "silver")}
    ranked = predictor.rank({**APPLICANT, "signals": signals}, specialty="Anesthesiology",
                            explain=False)
    assert len(ranked) == len(ids)


# ------------------------------------------------------------ one list across specialties (#18)

WITH_BACKUPS = {**APPLICANT, "preferred_specialty": SPECIALTY,
                "backup_specialties": ["Family Medicine", "Preliminary Medicine"]}


def test_a_list_across_specialties_is_the_exact_joint_optimum_with_fees_per_specialty(predictor):
    from smartpick_ml.inference.portfolio import USMLE_TRANSCRIPT_FEE_USD, fees_for_sizes

    plan = predictor.plan_across(WITH_BACKUPS, sizes=[20, 8, 4])
    programs = plan["programs"]
    counts = programs["specialty"].value_counts()
    assert plan["programs_per_specialty"] == {s: int(counts.get(s, 0)) for s in
                                              WITH_BACKUPS["backup_specialties"] + [SPECIALTY]}
    assert counts.get(SPECIALTY, 0) <= 20 and counts.get("Family Medicine", 0) <= 8
    # preferred programs first, then each backup in the order given
    order = {s: k for k, s in enumerate([SPECIALTY, *WITH_BACKUPS["backup_specialties"]])}
    assert programs["specialty"].map(order).is_monotonic_increasing
    assert programs["rank"].tolist() == list(range(1, len(programs) + 1))
    # ERAS fees restart for each specialty
    fee = sum(int(fees_for_sizes(np.array([n]), "2025")[0]) for n in counts) \
        + USMLE_TRANSCRIPT_FEE_USD
    assert plan["fee_usd"] == fee
    # the list's value is what the list is worth, by the independence formula
    reach, value = 1.0, 0.0
    for q, u in zip(programs["q"], programs["utility"], strict=True):
        value += reach * q * u
        reach *= 1 - q
    assert plan["expected_utility"] == pytest.approx(value, rel=1e-9)
    assert plan["p_match"] == pytest.approx(1 - reach, rel=1e-9)
    assert 0 < plan["p_match_preferred_corrected"] <= plan["p_match_corrected"] <= plan["p_match"]


def test_without_backup_programs_it_is_the_single_specialty_plan(predictor):
    single = predictor.plan({**APPLICANT, "preferred_specialty": SPECIALTY},
                            max_applications=15)["table"].iloc[-1]
    across = predictor.plan_across(WITH_BACKUPS, sizes=[15, 0, 0])
    assert across["expected_utility"] == pytest.approx(single["expected_utility"], rel=1e-9)
    assert across["p_match"] == pytest.approx(single["p_match"], rel=1e-9)


def test_a_plan_across_specialties_states_the_joint_plans_calibration(predictor):
    """A list with backup programs states its figure by the joint plans' line; its preferred
    part, and a list of one specialty, by the single-specialty plans' line."""
    import copy

    from smartpick_ml.modelling.pmatch import PlanCalibration

    typ = WITH_BACKUPS["applicant_type"]
    uncalibrated, calibrated = copy.copy(predictor), copy.copy(predictor)
    uncalibrated.plan_calibration = None
    calibrated.plan_calibration = PlanCalibration({typ: (-0.2, 0.9)}, "0" * 64,
                                                  joint_by_type={typ: (-0.8, 0.7)})
    raw = uncalibrated.plan_across(WITH_BACKUPS, sizes=[15, 6, 0])
    assert raw["programs_per_specialty"]["Family Medicine"] > 0
    both = calibrated.plan_across(WITH_BACKUPS, sizes=[15, 6, 0])
    cal = calibrated.plan_calibration
    assert both["p_match_corrected"] == pytest.approx(
        float(cal.apply(np.array([raw["p_match_corrected"]]), typ, joint=True)[0]))
    assert both["p_match_preferred_corrected"] == pytest.approx(
        float(cal.apply(np.array([raw["p_match_preferred_corrected"]]), typ)[0]))
    np.testing.assert_allclose(both["programs"]["p_match_corrected"],
                               cal.apply(raw["programs"]["p_match_corrected"], typ, joint=True))
    alone = calibrated.plan_across(WITH_BACKUPS, sizes=[15, 0, 0])
    alone_raw = uncalibrated.plan_across(WITH_BACKUPS, sizes=[15, 0, 0])
    assert alone["p_match_corrected"] == pytest.approx(
        float(cal.apply(np.array([alone_raw["p_match_corrected"]]), typ)[0]))


@pytest.mark.parametrize("backup_sizes", [[5, 0], [0, 5], [10, 5], [30, 20]])
def test_room_for_backups_never_lowers_the_expected_value(predictor, backup_sizes):
    alone = predictor.plan_across(WITH_BACKUPS, sizes=[15, 0, 0])
    more = predictor.plan_across(WITH_BACKUPS, sizes=[15, *backup_sizes])
    assert more["expected_utility"] >= alone["expected_utility"] - 1e-12


@pytest.mark.parametrize(("applicant", "kwargs", "field"), [
    ({**APPLICANT, "preferred_specialty": SPECIALTY}, {"sizes": [10]}, "backup_specialties"),
    (WITH_BACKUPS, {"sizes": [10, 5]}, "sizes"),
    (WITH_BACKUPS, {"sizes": None}, "sizes"),
    (WITH_BACKUPS, {"sizes": "10,5,5"}, "sizes"),
    (WITH_BACKUPS, {"sizes": [10, -1, 5]}, "sizes"),
    (WITH_BACKUPS, {"sizes": [10, 5.5, 5]}, "sizes"),
    (WITH_BACKUPS, {"sizes": [10, 5, 5], "specialty_weights": {"Dermatology": 1}},
     "specialty_weights"),
    (WITH_BACKUPS, {"sizes": [10, 5, 5], "specialty_weights": {"Family Medicine": math.nan}},
     "specialty_weights.Family Medicine"),
    ({**WITH_BACKUPS, "signals": {"X": "signal"}}, {"sizes": [10, 5, 5],
                                                     "choose_signals": True}, "applicant.signals"),
])
def test_a_bad_plan_across_specialties_names_the_field(predictor, applicant, kwargs, field):
    with pytest.raises(InputError, match=re.escape(field)):
        predictor.plan_across(applicant, **kwargs)


# ------------------------------------------------------------ signals chosen with the list (#18)

SIGNALLING = {**APPLICANT, "applicant_type": "us_md_senior", "needs_visa": False,
              "graduation_year": 2025, "preferred_specialty": "Anesthesiology",
              "backup_specialties": ["Family Medicine", "Internal Medicine"]}


def test_signals_are_chosen_within_each_specialtys_allotment_and_raise_the_lists_value(
        predictor):
    from smartpick_ml.contracts.reference import SIGNAL_ALLOTMENTS

    sizes = [12, 6, 4]
    plain = predictor.plan_across(SIGNALLING, sizes=sizes)
    chosen = predictor.plan_across(SIGNALLING, sizes=sizes, choose_signals=True)
    programs = chosen["programs"]
    for specialty, part in programs.groupby("specialty"):
        used = part.loc[part["signal"] != "none", "signal"].value_counts().to_dict()
        allowed = SIGNAL_ALLOTMENTS.get(specialty, {})
        assert all(n <= allowed.get(tier, 0) for tier, n in used.items()), (specialty, used)
    assert (programs.loc[programs["specialty"] == "Internal Medicine", "signal"] == "none").all()
    assert set(chosen["signals"]) == set(programs.loc[programs["signal"] != "none",
                                                      "program_id"])
    assert chosen["signals"]  # the model values signals: some are sent
    # the list with its signals is worth at least the best list without: the q shown are the
    # signalled ones, and the value is what they give
    assert chosen["expected_utility"] >= plain["expected_utility"] - 1e-12
    reach, value = 1.0, 0.0
    for q, u in zip(programs["q"], programs["utility"], strict=True):
        value += reach * q * u
        reach *= 1 - q
    assert chosen["expected_utility"] == pytest.approx(value, rel=1e-9)
    # the profile with these signals scores these q
    given = {**SIGNALLING, "signals": chosen["signals"]}
    again = predictor.match_probability(given, programs["program_id"].tolist())
    np.testing.assert_allclose(again["ranks"]["q"], programs["q"], rtol=0, atol=1e-12)
    # down the list: P(match) rises to the list's and the fee to the list's
    assert programs["p_match_corrected"].is_monotonic_increasing
    assert programs["p_match_corrected"].iloc[-1] == pytest.approx(chosen["p_match_corrected"])
    assert programs["fee_usd"].iloc[-1] == chosen["fee_usd"]


def test_one_specialty_is_enough_to_choose_signals(predictor):
    alone = {**SIGNALLING, "backup_specialties": []}
    got = predictor.plan_across(alone, sizes=[10], choose_signals=True)
    assert set(got["programs"]["specialty"]) == {"Anesthesiology"}
    assert len(got["programs"]) <= 10


# ------------------------------------------------------------ published screens (#18)

def test_published_screens_close_programs_with_their_reason_everywhere(world, predictor):
    """Issue #18: a Step 2 CK below a program's published minimum, or more years since
    graduation than its cut-off, closes the program (the simulated programs screen such
    applicants out before any interview): q = 0 in the model, the fast path and rank, and plan
    leaves it out with the reason."""
    programs = predictor.programs
    minimum = pd.to_numeric(programs["step2_minimum"], errors="coerce")
    specialty = programs.loc[minimum.notna(), "specialty"].value_counts().index[0]
    in_spec = programs["specialty"] == specialty
    floor = float(minimum[in_spec].dropna().median())
    applicant = {"applicant_type": "us_md_senior", "step2_ck": int(floor) - 1,
                 "graduation_year": 2025, "season": 2025, "preferred_specialty": specialty}
    ranked = predictor.rank(applicant, explain=False)
    screened = ranked["program_id"].isin(programs.loc[in_spec & (minimum > floor - 1),
                                                       "program_id"])
    assert screened.any() and (~screened).any()
    assert (ranked.loc[screened, "q"] == 0).all() and not ranked.loc[screened, "eligible"].any()
    # the first rule that closes a program is its reason (a military program says so)
    reasons = ranked.loc[screened, "reason"].astype(str)
    assert reasons.isin(["Step 2 CK below the program's published minimum",
                         "uniformed-services program: takes service members through the "
                         "military match only"]).all()
    assert (reasons == "Step 2 CK below the program's published minimum").any()
    assert (ranked.loc[~screened & ranked["eligible"], "q"] > 0).all()
    pairs = predictor._pairs(ApplicantProfile(**applicant), predictor.program_rows(specialty))
    np.testing.assert_array_equal(world.model.predict_proba(pairs)[:, 1] == 0,
                                  ~ranked.set_index("program_id").loc[pairs["program_id"],
                                                                      "eligible"].to_numpy())
    plan = predictor.plan(applicant, max_applications=10)
    assert set(plan["excluded"]["program_id"]) >= set(ranked.loc[screened, "program_id"])
    assert not set(plan["programs"]["program_id"]) & set(ranked.loc[screened, "program_id"])
    # a higher score opens them again
    by_score = ranked.loc[screened & (ranked["reason"].astype(str) == "Step 2 CK below the "
                                      "program's published minimum"), "program_id"]
    again = predictor.rank({**applicant, "step2_ck": 280}, explain=False)
    assert again.loc[again["program_id"].isin(by_score), "eligible"].all()


def test_a_graduation_cut_off_closes_a_program_to_an_older_graduate(predictor):
    programs = predictor.programs
    cut = pd.to_numeric(programs["max_years_since_graduation"], errors="coerce")
    if not cut.notna().any():
        pytest.skip("this catalog publishes no graduation cut-off")
    row = programs[cut.notna()].iloc[0]
    years = int(cut[cut.notna()].iloc[0]) + 1
    applicant = {"applicant_type": "non_us_img", "step2_ck": 270, "graduation_year": 2025 - years,
                 "season": 2025, "needs_visa": False, "preferred_specialty": row["specialty"]}
    ranked = predictor.rank(applicant, explain=False).set_index("program_id")
    assert ranked.loc[row["program_id"], "q"] == 0
    assert ranked.loc[row["program_id"], "reason"] == (
        "graduated longer ago than the program's published cut-off")


def test_a_budget_chooses_the_split_between_specialties_within_it(predictor):
    """Issue #18 ("under ERAS fees"): with a budget the sizes are maxima; the list's fees,
    restarting per specialty, with the transcript, fit it, and a larger budget is never worse."""
    sizes = [40, 15, 5]
    tight = predictor.plan_across(WITH_BACKUPS, sizes=sizes, budget=500.0)
    loose = predictor.plan_across(WITH_BACKUPS, sizes=sizes, budget=2_000.0)
    free = predictor.plan_across(WITH_BACKUPS, sizes=sizes)
    assert tight["fee_usd"] <= 500 < free["fee_usd"]
    assert tight["expected_utility"] <= loose["expected_utility"] + 1e-12
    assert loose["expected_utility"] <= free["expected_utility"] + 1e-12
    counts = tight["programs"]["specialty"].value_counts()
    assert all(counts.get(s, 0) <= n for s, n in
               zip([SPECIALTY, *WITH_BACKUPS["backup_specialties"]], sizes, strict=True))
    with pytest.raises(InputError, match="budget"):
        predictor.plan_across(WITH_BACKUPS, sizes=sizes, budget=50.0)
    with pytest.raises(InputError, match="budget"):
        predictor.plan_across(WITH_BACKUPS, sizes=sizes, budget=-1)
    with pytest.raises(InputError, match="sizes"):
        predictor.plan_across(WITH_BACKUPS, sizes=[10, 500, 500], budget=900.0)
