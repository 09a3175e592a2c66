"""Behaviour of the trained model (in the Made-With-ML sense), apart from tests of code and data:
directional (a higher Step 2 CK never lowers q), invariance (identity columns, row order and batch
do not change q), minimum functionality (the visa rule; q is a probability on odd inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS
from smartpick_ml.data.synthetic import synthetic_pairs
from tests.conftest import q_on_one_thread as _q


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


def test_higher_step2_never_lowers_q(world, sample) -> None:
    q0 = _q(world.model, sample)
    for delta in (10, 25):
        higher = sample.assign(step2_ck=sample["step2_ck"] + delta)
        q1 = _q(world.model, higher)
        worst = float(np.min(q1 - q0))
        assert worst >= -1e-12, f"+{delta} Step 2 CK lowered q by {-worst:.3g}"
    assert (q1 > q0).mean() > 0.05, "Step 2 CK has no effect at all"


def test_identity_columns_do_not_change_q(world, sample) -> None:
    q0 = _q(world.model, sample)
    renamed = sample.assign(applicant_id="someone-else-" + sample["applicant_id"].astype(str),
                            name="A Renamed Program")
    assert np.array_equal(_q(world.model, renamed), q0)
    # nor does the order of the rows, or which other rows are in the batch
    perm = np.random.default_rng(0).permutation(len(sample))
    assert np.array_equal(_q(world.model, sample.iloc[perm])[np.argsort(perm)], q0)
    assert np.array_equal(_q(world.model, sample.iloc[:7]), q0[:7])


def test_visa_needing_img_gets_zero_at_a_program_sponsoring_no_visa(world, sample) -> None:
    img = sample.assign(applicant_type="non_us_img", needs_visa=True)
    blocked = img.assign(sponsors_j1=False, sponsors_h1b=False)
    q = _q(world.model, blocked)
    assert np.all(q == 0.0)
    assert np.all(world.model.predict_proba(blocked)[:, 0] == 1.0)
    # where a visa is sponsored, q is 0 only where another rule closes the pair (a military
    # program, a published screen the applicant fails)
    from smartpick_ml.contracts.eligibility import ineligible

    for j1, h1b in ((True, False), (False, True), (True, True)):
        pairs = img.assign(sponsors_j1=j1, sponsors_h1b=h1b)
        q_ok = _q(world.model, pairs)
        np.testing.assert_array_equal(q_ok == 0.0, ineligible(pairs), err_msg=f"{j1}, {h1b}")
        assert (~ineligible(pairs)).mean() > 0.5
    # an applicant who needs no visa is not blocked there
    free = blocked.assign(needs_visa=False)
    np.testing.assert_array_equal(_q(world.model, free) == 0.0, ineligible(free))


def test_q_is_a_probability_everywhere(world) -> None:
    va = world.validation
    proba = world.model.predict_proba(va)
    assert proba.shape == (len(va), 2)
    assert np.all(np.isfinite(proba))
    assert np.all((proba >= 0) & (proba <= 1))
    assert np.allclose(proba.sum(axis=1), 1.0)
    # odd but well-formed inputs: extreme scores, missing optional fields, unseen programs
    odd = pd.concat([synthetic_pairs(20, seed=s) for s in range(5)], ignore_index=True)
    n = len(odd)
    odd["step2_ck"] = np.resize([150, 300, 0, 260], n)
    odd["usce_months"] = np.resize([0, 600], n)
    odd["publications"] = np.resize([0, 10_000], n)
    odd["graduation_year"] = np.resize([1970, 2025, 2030], n)
    for col in ("rate_us_md", "rate_us_do", "rate_us_img", "rate_non_us_img", "rate_in_state",
                "rate_out_of_state", "img_share"):
        odd[col] = np.resize([0.0, 1.0, np.nan], n)
    odd["home_state"] = None
    odd["program_id"] = [f"NEW-{i:04d}" for i in range(n)]
    odd["signal"] = np.resize(["none", "gold", "silver", "signal"], n)
    q = world.model.predict_proba(odd[list(PAIR_INPUT_COLUMNS)])
    assert np.all(np.isfinite(q)) and np.all((q >= 0) & (q <= 1))


def test_a_uniformed_services_program_is_never_open_to_a_civilian(world, sample) -> None:
    """Military programs fill through the military match: q = 0 for every applicant, whatever
    the rest of the pair says; the rule touches nothing else."""
    q = _q(world.model, sample.assign(military=True))
    assert np.all(q == 0.0)
    np.testing.assert_array_equal(_q(world.model, sample.assign(military=False)),
                                  _q(world.model, sample))


def test_the_fast_path_closes_uniformed_services_programs_too(world) -> None:
    from smartpick_ml.data.catalog import synthetic_catalog
    from smartpick_ml.inference.fastpath import usable_fast_scorer

    programs = synthetic_catalog(seed=0)
    assert programs["military"].any()
    scorer = usable_fast_scorer(world.model, programs)
    assert scorer is not None
    applicant = {"applicant_type": "us_md_senior", "step2_ck": 255, "graduation_year": 2025,
                 "season": 2025, "usce_months": 0, "publications": 2, "needs_visa": False,
                 "home_state": "NY"}
    q = scorer.score(applicant, None, None)
    assert np.all(q[programs["military"].to_numpy()] == 0.0)
    assert np.all(q[~programs["military"].to_numpy()] > 0.0)


@pytest.mark.parametrize("applicant_type", ["us_md_senior", "non_us_img"])
def test_rank_never_offers_a_uniformed_services_program(world, applicant_type) -> None:
    """Issue #16: for any civilian profile, every military program is ineligible, with the
    reason, and q = 0; every other program keeps its own verdict."""
    from smartpick_ml.inference.predictor import MatchPredictor

    predictor = MatchPredictor.load(world.model_dir)
    programs = predictor.programs
    military = set(programs.loc[programs["military"], "program_id"])
    assert military
    profile = {"applicant_type": applicant_type, "step2_ck": 250, "graduation_year": 2024,
               "season": 2025, "needs_visa": applicant_type == "non_us_img"}
    ranked = predictor.rank(profile)
    closed = ranked[ranked["program_id"].isin(military)]
    assert len(closed) == len(military)
    assert not closed["eligible"].any()
    assert (closed["q"] == 0).all()
    assert closed["reason"].astype(str).str.startswith("uniformed-services").all()
    open_ = ranked[~ranked["program_id"].isin(military)]
    assert (open_["eligible"] | open_["reason"].astype(str).str.contains("visa")).all()


def test_a_program_ranks_an_applicant_who_prefers_another_specialty_lower(world, sample) -> None:
    """Issue #16: programs rank an applicant for whom they are the backup below one who chose
    them; the model learnt it (q falls on average, never rises much), and a PGY-1 year is no
    backup."""
    from smartpick_ml.modelling.features import PGY1_ONLY_NAMES

    chose = sample.assign(preferred_specialty=sample["specialty"])
    elsewhere = sample.assign(preferred_specialty=np.where(
        sample["specialty"] == "Internal Medicine", "Family Medicine", "Internal Medicine"))
    q_chose, q_else = _q(world.model, chose), _q(world.model, elsewhere)
    pgy1 = sample["specialty"].isin(PGY1_ONLY_NAMES).to_numpy()
    assert np.array_equal(q_chose[pgy1], q_else[pgy1])
    backup = ~pgy1 & (q_chose > 0)
    assert backup.sum() > 20
    assert np.mean(q_else[backup]) < 0.95 * np.mean(q_chose[backup])


def test_adding_a_backup_specialty_never_lowers_p_match(world) -> None:
    """Issue #16: P(match) of a list (the stated, corrected figure too) never falls when programs
    of a backup specialty are ranked below it."""
    from smartpick_ml.inference.predictor import MatchPredictor

    predictor = MatchPredictor.load(world.model_dir)
    for applicant_type, preferred, backup in (("non_us_img", "Internal Medicine",
                                               "Family Medicine"),
                                              ("us_md_senior", "Dermatology",
                                               "Internal Medicine")):
        profile = {"applicant_type": applicant_type, "step2_ck": 244, "graduation_year": 2023,
                   "season": 2025, "needs_visa": False, "preferred_specialty": preferred}
        plan = predictor.plan(profile, max_applications=12)
        own = list(plan["programs"]["program_id"])
        base = predictor.match_probability(profile, own)
        extra = predictor.rank({**profile, "backup_specialties": [backup]},
                               specialty=backup, explain=False)
        extra = extra[extra["eligible"]]["program_id"].head(8).tolist()
        with_backup = predictor.match_probability({**profile, "backup_specialties": [backup]},
                                                  own + extra)
        assert with_backup["p_match"] >= base["p_match"] - 1e-12
        assert with_backup["p_match_corrected"] >= base["p_match_corrected"] - 1e-12


def test_rank_covers_the_preferred_and_backup_specialties(world) -> None:
    from smartpick_ml.inference.predictor import MatchPredictor

    predictor = MatchPredictor.load(world.model_dir)
    profile = {"applicant_type": "us_img", "step2_ck": 240, "graduation_year": 2022,
               "season": 2025, "preferred_specialty": "Internal Medicine",
               "backup_specialties": ["Family Medicine", "Preliminary Medicine"]}
    ranked = predictor.rank(profile, explain=False)
    assert set(ranked["specialty"]) == {"Internal Medicine", "Family Medicine",
                                        "Preliminary Medicine"}
    assert len(ranked) == predictor.programs["specialty"].isin(set(ranked["specialty"])).sum()
