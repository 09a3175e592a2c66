"""The fast path equals the model, and MatchPredictor behaves as a service needs."""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier

from smartpick_ml.contracts.pairs import APPLICANT_INPUTS
from smartpick_ml.contracts.reference import APPLICANT_TYPES, SPECIALTY_NAMES, STATE_REGION
from smartpick_ml.data.catalog import load_catalog
from smartpick_ml.inference import fastpath
from smartpick_ml.inference.fastpath import (
    COL,
    PARITY_TOLERANCE,
    PER_REQUEST,
    FastScorer,
    _prefix_row,
    _share_rows,
    usable_fast_scorer,
)
from smartpick_ml.inference.predictor import InputError, MatchPredictor


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


@pytest.fixture(scope="module")
def programs(world) -> pd.DataFrame:
    return load_catalog(world.raw_dir / "programs.parquet")


@pytest.fixture(scope="module")
def scorer(world, programs) -> FastScorer:
    return FastScorer(world.model, programs)


@pytest.fixture(scope="module")
def predictor(world, programs) -> MatchPredictor:
    return MatchPredictor.load(world.model_dir, programs=programs)


def test_fast_path_equals_predict_proba_on_a_full_season(world, scorer, programs):
    """Every validation application of the season, scored per applicant by the fast path."""
    val = world.validation
    expected = world.model.predict_proba(val)[:, 1]
    index = pd.Index(programs["program_id"])
    got = np.empty(len(val))
    for _, g in val.groupby("applicant_id", sort=False):
        first = g.iloc[0]
        applicant = {c: first[c] for c in APPLICANT_INPUTS}
        applicant["home_state"] = first["home_state"] if isinstance(first["home_state"], str) \
            else None
        signals = {p: s for p, s in zip(g["program_id"], g["signal"], strict=True) if s != "none"}
        rows = index.get_indexer(g["program_id"])
        got[val.index.get_indexer(g.index)] = scorer.score(applicant, signals, rows)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert scorer.quick  # the QuickScorer path, not the fallback walk


def test_a_scorer_checks_itself_against_the_model_when_built(scorer):
    """The build scores made-up applicants both ways; this model's fast path agrees."""
    assert scorer.usable and scorer.parity_gap <= PARITY_TOLERANCE


def test_a_scorer_that_disagrees_with_the_model_is_not_usable(world, programs, monkeypatch,
                                                              caplog):
    """A fast path fallen behind its model (here its calibration, off by 1e-6) is marked and
    logged at build, and ``usable_fast_scorer`` hands out none."""
    calibrate = FastScorer._calibrate
    monkeypatch.setattr(FastScorer, "_calibrate", lambda self, p: calibrate(self, p) + 1e-6)
    with caplog.at_level(logging.WARNING, logger="smartpick_ml.inference.fastpath"):
        off = FastScorer(world.model, programs)
    assert not off.usable and off.parity_gap > PARITY_TOLERANCE
    assert "disagrees" in caplog.text
    assert usable_fast_scorer(world.model, programs) is None


def test_usable_fast_scorer_only_for_a_match_model_it_can_read(world, programs):
    assert isinstance(usable_fast_scorer(world.model, programs), FastScorer)
    assert usable_fast_scorer(object(), programs) is None
    unreadable = copy.copy(world.model)
    unreadable.booster_ = HistGradientBoostingClassifier()  # unfitted: no trees to read
    assert usable_fast_scorer(unreadable, programs) is None


def test_fallback_walk_equals_quickscorer(world, programs):
    slow = FastScorer(world.model, programs)
    slow.quick = False
    fast = FastScorer(world.model, programs)
    applicant = {"applicant_type": "us_img", "step2_ck": 241, "graduation_year": 2021,
                 "season": 2025, "usce_months": 4, "publications": 1, "needs_visa": False,
                 "home_state": "FL"}
    np.testing.assert_allclose(slow.score(applicant), fast.score(applicant), atol=1e-12)


def _failed_split_masks(scorer: FastScorer, name: str, x: float) -> np.ndarray:
    """Reference for a prefix-table row: the AND, per tree, of the leaf masks of every split on
    ``name`` that ``x`` fails (scikit-learn goes left iff x <= threshold; NaN per split)."""
    nodes = scorer.internal[scorer.feature[scorer.internal] == COL[name]]
    out = np.full(scorer.roots.shape[0], np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64)
    for j in nodes:
        fails = (not scorer.mgl[j]) if np.isnan(x) else x > scorer.threshold[j]
        if fails:
            out[scorer.tree_of[j]] &= scorer.mask[j]
    return out if scorer.width == 64 else out & np.uint64(0xFFFFFFFF)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prefix_table_row_is_the_and_of_the_failed_splits(scorer, data):
    """One table lookup equals the split walk it replaces, at and around every threshold."""
    v = data.draw(st.integers(0, len(PER_REQUEST) - 1), label="feature")
    nodes = scorer.internal[scorer.feature[scorer.internal] == COL[PER_REQUEST[v]]]
    values = [st.just(float("nan")), st.floats(-1e4, 1e4)]
    if len(nodes):
        thr = st.sampled_from(sorted(set(scorer.threshold[nodes].tolist())))
        values += [thr, thr.map(lambda t: np.nextafter(t, np.inf)),
                   thr.map(lambda t: np.nextafter(t, -np.inf))]
    x = data.draw(st.one_of(values), label="x")
    row = _prefix_row(scorer.thresholds, scorer.thr_start, v, x)
    np.testing.assert_array_equal(scorer.prefix[row].astype(np.uint64),
                                  _failed_split_masks(scorer, PER_REQUEST[v], x))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), chunk=st.integers(1, 700))
def test_shared_rows_run_every_row_exactly_once(n, chunk):
    """The calling thread and the helpers together cover range(n), each row once."""
    seen = np.zeros(n, np.int64)
    lock = threading.Lock()

    def run(a: int, b: int) -> None:
        with lock:
            seen[a:b] += 1

    old = fastpath.SHARE_CHUNK_ROWS
    fastpath.SHARE_CHUNK_ROWS = chunk  # module constant read at call time
    try:
        _share_rows(n, run)
    finally:
        fastpath.SHARE_CHUNK_ROWS = old
    assert (seen == 1).all()


def test_shared_rows_score_equals_one_thread(scorer, programs, monkeypatch):
    """Rows shared with a helper thread (small chunks) give bit-identical q to one thread."""
    applicant = {"applicant_type": "us_img", "step2_ck": 238, "graduation_year": 2022,
                 "season": 2025, "usce_months": 3, "publications": 2, "needs_visa": False,
                 "home_state": "NY"}
    signals = {p: "gold" for p in programs["program_id"].iloc[::97]}
    numba.set_num_threads(1)
    try:
        one = scorer.score(applicant, signals)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setattr(fastpath, "SHARE_CHUNK_ROWS", 5)
    for _ in range(3):
        np.testing.assert_array_equal(scorer.score(applicant, signals), one)


def test_wide_masks_equal_narrow_masks(world, scorer, programs, monkeypatch):
    """The 64-bit mask kernel (trees of more than 32 leaves) scores exactly as the 32-bit one."""
    monkeypatch.setattr(fastpath, "NARROW_MASK_LEAVES", 0)
    wide = FastScorer(world.model, programs)
    assert wide.quick and wide.width == 64 and scorer.width == 32
    applicant = {"applicant_type": "non_us_img", "step2_ck": 251, "graduation_year": 2020,
                 "season": 2025, "usce_months": 9, "publications": 0, "needs_visa": True,
                 "home_state": "TX"}
    signals = {p: "silver" for p in programs["program_id"].iloc[::61]}
    np.testing.assert_array_equal(wide.score(applicant, signals), scorer.score(applicant, signals))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(typ=st.sampled_from(APPLICANT_TYPES), step2=st.integers(150, 300),
       years=st.integers(0, 15), usce=st.integers(0, 240), pubs=st.integers(0, 60),
       home=st.one_of(st.none(), st.sampled_from(sorted(STATE_REGION))),
       visa=st.booleans(), n_signals=st.integers(0, 5), seed=st.integers(0, 10_000),
       preferred=st.one_of(st.none(), st.sampled_from(SPECIALTY_NAMES)))
def test_fast_path_property(world, scorer, programs, typ, step2, years, usce, pubs, home, visa,
                            n_signals, seed, preferred):
    """Arbitrary valid applicants: fast q equals the model's q, finite, in [0, 1] (programs in
    and outside the applicant's preferred specialty)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(programs), size=40, replace=False))
    applicant = {"applicant_type": typ, "step2_ck": step2, "graduation_year": 2025 - years,
                 "season": 2025, "usce_months": usce, "publications": pubs,
                 "needs_visa": visa and typ == "non_us_img", "home_state": home,
                 "preferred_specialty": preferred}
    ids = programs["program_id"].to_numpy()[rows]
    signals = {p: str(rng.choice(["signal", "gold", "silver"])) for p in ids[:n_signals]}
    pairs = pd.DataFrame({c: [applicant.get(c)] * len(rows) for c in APPLICANT_INPUTS})
    block = programs.iloc[rows].reset_index(drop=True)
    pairs = pd.concat([pairs, block], axis=1)
    pairs["signal"] = [signals.get(p, "none") for p in pairs["program_id"]]
    expected = world.model.predict_proba(pairs)[:, 1]
    got = scorer.score(applicant, signals, rows)
    assert np.isfinite(got).all() and ((got >= 0) & (got <= 1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-6)


APPLICANT = {"applicant_type": "non_us_img", "step2_ck": 248, "graduation_year": 2022,
             "season": 2025, "needs_visa": True, "usce_months": 6}


def test_rank_orders_by_ev_with_ineligible_last(predictor):
    ranked = predictor.rank(APPLICANT, {"states": ["NY"]}, explain=False)
    assert len(ranked) == len(predictor.programs)
    eligible = ranked["eligible"].to_numpy()
    assert not (np.diff(eligible.astype(int)) > 0).any()  # eligible block first
    ev = ranked.loc[ranked["eligible"], "ev"].to_numpy()
    assert (np.diff(ev) <= 1e-12).all()
    assert (ranked.loc[~ranked["eligible"], "q"] == 0).all()
    closed = ranked[~ranked["eligible"]]
    military = closed["program_id"].isin(predictor.programs.loc[predictor.programs["military"],
                                                                "program_id"])
    assert closed.loc[military, "reason"].str.startswith("uniformed-services").all()
    # each reason is the first rule of contracts.eligibility that closes the pair
    from smartpick_ml.contracts.eligibility import ineligibility_reasons
    from smartpick_ml.inference.predictor import ApplicantProfile

    rows = predictor._index.get_indexer(ranked["program_id"])
    pairs = predictor._pairs(ApplicantProfile(**APPLICANT), rows)
    assert ranked["reason"].astype(str).tolist() == ineligibility_reasons(pairs).tolist()
    assert closed["reason"].str.contains("visa").any()
    np.testing.assert_allclose(ranked["ev"], ranked["q"] * ranked["utility"])


def test_rank_q_equals_predict(predictor):
    ranked = predictor.rank(APPLICANT, specialty="Internal Medicine", k=15)
    from smartpick_ml.inference.predictor import ApplicantProfile

    profile = ApplicantProfile(**APPLICANT)
    rows = predictor._index.get_indexer(ranked["program_id"])
    np.testing.assert_allclose(ranked["q"], predictor.predict(predictor._pairs(profile, rows)),
                               atol=1e-9)
    assert ranked["top_factors"].map(len).gt(0).any()


def test_rank_whole_catalog_equals_predict(predictor):
    """rank() over every program (the shared all-rows array): q and U as computed row by row."""
    from smartpick_ml.inference.predictor import (
        ApplicantProfile,
        Preferences,
        utility,
        utility_inputs,
    )

    prefs = {"states": ["NY", "CA"], "regions": ["Pacific"], "program_type": "university"}
    ranked = predictor.rank({**APPLICANT, "home_state": "NY"}, prefs, explain=False)
    profile = ApplicantProfile(**APPLICANT, home_state="NY")
    rows = predictor._index.get_indexer(ranked["program_id"])
    assert sorted(rows) == list(range(len(predictor.programs)))
    np.testing.assert_allclose(ranked["q"], predictor.predict(predictor._pairs(profile, rows)),
                               atol=1e-9)
    np.testing.assert_allclose(ranked["utility"], utility(utility_inputs(predictor.programs),
                                                          Preferences(**prefs), rows))


def test_match_probability_and_plan(predictor):
    ranked = predictor.rank(APPLICANT, specialty="Internal Medicine", explain=False)
    ids = list(ranked["program_id"][:6])
    res = predictor.match_probability(APPLICANT, ids)
    q = ranked["q"].to_numpy()[:6]
    assert res["p_match"] == pytest.approx(1 - np.prod(1 - q))
    assert res["p_match"] + res["p_unmatched"] == pytest.approx(1)
    plan = predictor.plan(APPLICANT, specialty="Internal Medicine", max_applications=25)
    t = plan["table"]
    assert list(t["h"]) == list(range(1, len(t) + 1))
    assert (np.diff(t["p_match"]) >= -1e-12).all()
    assert (t["gain_vs_naive"] >= -1e-9).all()
    cheap = predictor.plan(APPLICANT, specialty="Internal Medicine", budget=200)
    assert cheap["fee_usd"] <= 200


@pytest.mark.parametrize("call, field", [
    (lambda p: p.rank({**APPLICANT, "applicant_type": "martian"}), "applicant.applicant_type"),
    (lambda p: p.rank({**APPLICANT, "step2_ck": 333}), "applicant.step2_ck"),
    (lambda p: p.rank({k: v for k, v in APPLICANT.items() if k != "step2_ck"}),
     "applicant.step2_ck"),
    (lambda p: p.rank({**APPLICANT, "step2_ck": "high"}), "applicant.step2_ck"),
    (lambda p: p.rank({**APPLICANT, "step2_ck": float("nan")}), "applicant.step2_ck"),
    (lambda p: p.rank({**APPLICANT, "applicant_type": "us_md_senior"}), "needs_visa"),
    (lambda p: p.rank(APPLICANT, specialty="Astrology"), "specialty"),
    (lambda p: p.rank(APPLICANT, {"states": ["ZZ"]}), "preferences.states"),
    (lambda p: p.match_probability(APPLICANT, []), "rank_list"),
    (lambda p: p.match_probability(APPLICANT, ["NOPE-0001"]), "rank_list"),
    (lambda p: p.plan(APPLICANT, specialty="Internal Medicine", budget=0), "budget"),
    (lambda p: p.plan(APPLICANT, specialty="Internal Medicine", budget=-5), "budget"),
    (lambda p: p.plan(APPLICANT, specialty="Internal Medicine", max_applications=0),
     "max_applications"),
])
def test_bad_input_names_the_field(predictor, call, field):
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        call(predictor)


def test_pmatch_correction_is_monotone_and_lowers_overconfidence(world, predictor):
    cal = getattr(world.model, "pmatch_calibrator_", None)
    assert cal is not None
    q = np.full(40, 0.08)
    for typ in APPLICANT_TYPES:
        out = cal.p_match_of_prefixes(q, typ)
        assert (np.diff(out) > 0).all() and ((out >= 0) & (out <= 1)).all()
    plan = predictor.plan(APPLICANT, specialty="Internal Medicine", max_applications=30)
    t = plan["table"]
    assert (np.diff(t["p_match_corrected"]) >= -1e-12).all()
    # the independence formula is over-confident in the simulation (shared latent strengths)
    assert t["p_match_corrected"].iloc[-1] <= t["p_match"].iloc[-1] + 0.05


def test_stated_p_match_rises_with_every_program_and_prices_points_from_it(predictor):
    """The stated (corrected) P(match) rises wherever the independence figure does, so every
    extra program has a finite price per point, computed from the figure the user is shown."""
    t = predictor.plan(APPLICANT, specialty="Internal Medicine", max_applications=60)["table"]
    rising = np.diff(t["p_match"].to_numpy()) > 1e-9
    assert rising.sum() > 10
    assert (np.diff(t["p_match_corrected"].to_numpy())[rising] > 0).all()
    fee = t["fee_usd"].to_numpy(float)
    expected = np.diff(fee, prepend=0) / (100 * np.diff(t["p_match_corrected"], prepend=0))
    np.testing.assert_allclose(t["usd_per_extra_pp"].to_numpy()[1:][rising],
                               expected[1:][rising])


def test_corrected_p_match_never_below_the_best_single_program(predictor):
    plan = predictor.plan(APPLICANT, specialty="Internal Medicine", max_applications=20)
    t = plan["table"]
    q_added = plan["programs"]["q"].to_numpy()
    assert (t["p_match_corrected"].to_numpy() >= np.maximum.accumulate(q_added) - 1e-12).all()
    one = predictor.match_probability(APPLICANT, [plan["programs"]["program_id"].iloc[0]])
    assert one["p_match_corrected"] >= one["p_match"] - 1e-12  # one program: exactly q


def test_a_us_senior_is_not_steered_to_img_support_programs_by_default(predictor):
    """Issue #18: the default IMG-support weight raised IMG-support programs for a US MD senior.
    For US seniors it is 0 unless they set it; IMGs keep it."""
    md = {"applicant_type": "us_md_senior", "step2_ck": 250, "graduation_year": 2025,
          "preferred_specialty": "Internal Medicine"}
    ranked = predictor.rank(md, explain=False)
    assert (ranked["utility"] == 1.0).all()
    chosen = predictor.rank(md, {"img_support_weight": 1.0}, explain=False)
    assert chosen["utility"].max() > 1.0
    img = predictor.rank({**md, "applicant_type": "non_us_img", "graduation_year": 2022},
                         explain=False)
    assert img["utility"].max() > 1.0


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples")
                                        .glob("profile_*.json")),
                         ids=lambda p: p.stem)
def test_every_example_profile_plans_with_a_stated_p_match_rising_with_each_program(predictor,
                                                                                     path):
    """Issue #17: the stated (corrected) P(match) rises strictly with list length wherever the
    independence figure does, on the example profiles a user starts from."""
    import json

    profile = json.loads(path.read_text())
    preferences = profile.pop("preferences", None)
    t = predictor.plan(profile, preferences, max_applications=40)["table"]
    rising = np.diff(t["p_match"].to_numpy()) > 1e-12
    assert rising.sum() >= 10
    assert (np.diff(t["p_match_corrected"].to_numpy())[rising] > 0).all()
    assert (t["p_match_corrected"] <= t["p_match"] + 1e-12).all()


@pytest.mark.parametrize("column", ["rate_non_us_img", "rate_us_md", "img_share", "positions"])
def test_a_program_input_neutralised_scores_as_the_model_does(world, scorer, programs, column):
    """Issue #19: explanations ask "q had this program a typical value of one input"; the fast
    path answers it by the walk on a program matrix built for that value, as ``predict_proba``
    does on the edited pairs, for programs in and outside the preferred specialty."""
    from smartpick_ml.contracts.pairs import PROGRAM_INPUTS, applicant_pairs

    rng = np.random.default_rng(7)
    values = programs[column].to_numpy(float).copy()
    values[rng.random(len(values)) < 0.5] = np.nanmedian(values)
    rows = rng.choice(len(programs), 60, replace=False)
    signals = {programs["program_id"].iloc[rows[0]]: "signal"}
    for typ in APPLICANT_TYPES:
        applicant = {"applicant_type": typ, "step2_ck": 238, "graduation_year": 2021,
                     "season": 2025, "usce_months": 4, "publications": 2,
                     "needs_visa": typ == "non_us_img", "home_state": "NY",
                     "preferred_specialty": programs["specialty"].iloc[rows[1]],
                     "applications": 60}
        got = scorer.score_with_program_column(applicant, signals, rows, column, values)
        block = programs[[c for c in PROGRAM_INPUTS if c in programs]].iloc[rows]
        pairs = applicant_pairs(applicant, block.assign(**{column: values[rows]}), signals)
        np.testing.assert_allclose(got, world.model.predict_proba(pairs)[:, 1], rtol=0,
                                   atol=1e-9)
    # built once per column and values, then reused
    before = len(scorer._variants)
    scorer.score_with_program_column(applicant, signals, rows, column, values)
    assert len(scorer._variants) == before


def test_explanations_through_the_fast_path_equal_the_models(world, programs, predictor):
    applicant = {"applicant_type": "us_img", "step2_ck": 236, "graduation_year": 2022,
                 "season": 2025, "usce_months": 3, "home_state": "TX",
                 "preferred_specialty": "Internal Medicine",
                 "backup_specialties": ["Family Medicine"]}
    slow = MatchPredictor(world.model, programs, fast_scorer=None)
    assert predictor.fast_scorer is not None
    fast_rank = predictor.rank(applicant, explain=40)
    slow_rank = slow.rank(applicant, explain=40)
    assert fast_rank["top_factors"].tolist() == slow_rank["top_factors"].tolist()


def test_many_signals_score_as_the_model_does_also_on_rows_asked_twice(world, scorer, programs):
    """The planner asks for a whole specialty signalled at once: past a handful of signals the
    fast path reads them from a catalog-wide map; the same q as predict_proba, a program asked
    about twice gets its signal on both rows, and an unknown program id is ignored."""
    from smartpick_ml.contracts.pairs import PROGRAM_INPUTS, applicant_pairs

    rng = np.random.default_rng(11)
    rows = rng.choice(len(programs), 40, replace=False)
    rows = np.concatenate([rows, rows[:3]])  # asked twice
    ids = programs["program_id"].to_numpy()[rows]
    signals = {pid: kind for pid, kind in zip(ids[:25], np.resize(["signal", "gold", "silver"],
                                                                   25), strict=True)}
    applicant = {"applicant_type": "us_img", "step2_ck": 241, "graduation_year": 2023,
                 "season": 2025, "usce_months": 2, "publications": 1, "needs_visa": False,
                 "home_state": "TX", "preferred_specialty": programs["specialty"].iloc[rows[0]],
                 "applications": 50}
    got = scorer.score(applicant, {**signals, "NOPE-0000": "gold"}, rows)
    block = programs[[c for c in PROGRAM_INPUTS if c in programs]].iloc[rows]
    want = world.model.predict_proba(applicant_pairs(applicant, block, signals))[:, 1]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # the few-signals path gives the same answer on the same rows
    few = dict(list(signals.items())[:5])
    np.testing.assert_allclose(scorer.score(applicant, few, rows), world.model.predict_proba(
        applicant_pairs(applicant, block, few))[:, 1], rtol=0, atol=1e-9)
