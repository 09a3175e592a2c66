"""The list-level P(match) under a shared unobserved strength: learnt, smooth, never above the
independence figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr, ndtri

from smartpick_ml.contracts.errors import ModelIntegrityError
from smartpick_ml.modelling.pmatch import (
    PlanCalibration,
    PMatchCalibrator,
    independent_p_match,
)


def _season(n: int, s_true: float, seed: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Applicants whose programs decide through one shared strength z of scale ``s_true``;
    q is each program's average over z (what a calibrated model predicts)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, n)
    ids = np.repeat([f"a{i}" for i in range(n)], sizes)
    q = rng.beta(0.6, 4.0, sizes.sum())
    a = ndtri(q) * np.sqrt(1 + s_true**2)
    z = np.repeat(rng.standard_normal(n), sizes)
    taken = rng.random(len(q)) < ndtr(a + s_true * z)
    matched = pd.Series(taken, index=ids).groupby(level=0, sort=False).any()
    types = pd.Series("non_us_img", index=matched.index)
    return pd.DataFrame({"applicant_id": ids, "q": q}), matched, types


def test_the_shared_strength_is_learnt_and_the_level_is_right():
    pairs, matched, types = _season(6_000, s_true=1.2, seed=1)
    cal = PMatchCalibrator().fit(pairs["q"], pairs["applicant_id"], matched, types)
    assert abs(cal.scale("non_us_img") - 1.2) < 0.25
    stated = cal.p_match(pairs["q"], pairs["applicant_id"], types)
    assert abs(stated.mean() - matched.mean()) < 0.015
    # the independence figure over-states what these applicants get
    independent = independent_p_match(pairs["q"].to_numpy(), pairs["applicant_id"].to_numpy())
    assert independent.mean() > matched.mean() + 0.03


def test_independent_decisions_are_left_alone():
    pairs, matched, types = _season(6_000, s_true=0.0, seed=2)
    cal = PMatchCalibrator().fit(pairs["q"], pairs["applicant_id"], matched, types)
    assert cal.scale("non_us_img") < 0.3


def test_every_program_added_raises_p_match_and_never_past_independence():
    """An isotonic map stated one figure for every list from 45 to 60 programs."""
    pairs, matched, types = _season(2_000, s_true=1.0, seed=3)
    cal = PMatchCalibrator().fit(pairs["q"], pairs["applicant_id"], matched, types)
    q = np.random.default_rng(4).beta(0.6, 4.0, 120)
    prefixes = cal.p_match_of_prefixes(q, "non_us_img")
    assert (np.diff(prefixes) > 0).all()
    independent = -np.expm1(np.cumsum(np.log1p(-q)))
    assert (prefixes <= independent + 1e-12).all()
    assert prefixes[0] == pytest.approx(q[0], rel=1e-6)  # one program: its q
    # one list scored whole equals its last prefix
    whole = cal.p_match(q, np.zeros(len(q), dtype=object), pd.Series({0: "non_us_img"}))
    np.testing.assert_allclose(whole.iloc[0], prefixes[-1], rtol=1e-10)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 120), matched_share=st.floats(0, 1), seed=st.integers(0, 2**16),
       list_length=st.integers(1, 60))
def test_any_data_gives_a_valid_increasing_p_match(n, matched_share, seed, list_length):
    """Too few applicants, everyone matched, no one matched, q of exactly 0 or 1: the answer
    stays a probability that never falls as a list grows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, n)
    ids = np.repeat(np.arange(n), sizes).astype(object)
    q = rng.choice([0.0, 1.0, 0.3, 0.01], size=sizes.sum())
    matched = pd.Series(rng.random(n) < matched_share, index=np.arange(n).astype(object))
    types = pd.Series("us_img", index=matched.index)
    cal = PMatchCalibrator().fit(q, ids, matched, types)
    assert 0.0 <= cal.scale("us_img") <= 5.0
    test_q = rng.choice([0.0, 1.0, 0.2, 1e-6], size=list_length)
    out = cal.p_match_of_prefixes(test_q, "us_img")
    assert np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    assert (np.diff(out) >= -1e-12).all()


def test_independent_p_match_is_one_minus_the_product_of_misses():
    q = np.array([0.5, 0.5, 0.2, 1.0])
    out = independent_p_match(q, np.array(["a", "a", "b", "c"]))
    np.testing.assert_allclose(out.loc[["a", "b", "c"]].to_numpy(), [0.75, 0.2, 1.0])


def test_a_model_saved_with_the_earlier_step_map_still_answers():
    """Models trained before the shared-strength model carry isotonic steps of the
    independence figure; they load and answer as they did."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, 500)
    y = rng.random(500) < p * 0.8
    legacy = PMatchCalibrator()
    legacy.overall_ = IsotonicRegression(out_of_bounds="clip").fit(p, y)
    legacy.by_type_ = {"us_img": IsotonicRegression(out_of_bounds="clip").fit(p[:200], y[:200])}
    assert legacy.is_legacy() and not PMatchCalibrator().is_legacy()
    np.testing.assert_allclose(legacy.transform(p[:50], "non_us_img"),
                               legacy.overall_.predict(p[:50]))
    np.testing.assert_allclose(legacy.transform(p[:50], "us_img"),
                               legacy.by_type_["us_img"].predict(p[:50]))


# ----------------------------------------------------------------------------- plan calibration

def _plans_measured(n: int, intercept: float, slope: float, trials: int, seed: int):
    """Stated figures of ``n`` plans and how often each matched in ``trials`` re-run seasons,
    when the truth is Phi(intercept + slope * probit(stated))."""
    rng = np.random.default_rng(seed)
    stated = rng.uniform(0.03, 0.995, n)
    truth = ndtr(intercept + slope * ndtri(stated))
    return stated, rng.binomial(trials, truth), truth


def test_the_plan_calibration_recovers_the_line_and_the_level():
    stated, wins, truth = _plans_measured(3_000, -0.25, 0.9, 8, seed=11)
    cal = PlanCalibration.fit(stated, wins, np.full(len(stated), 8),
                              np.repeat("non_us_img", len(stated)), "abc", 2025)
    a, b = cal.by_type["non_us_img"]
    assert abs(a + 0.25) < 0.08 and abs(b - 0.9) < 0.08
    calibrated = cal.apply(stated, "non_us_img")
    assert abs(calibrated.mean() - truth.mean()) < 0.01
    assert stated.mean() - truth.mean() > 0.04  # what it corrected
    grid = np.linspace(0.001, 0.999, 500)
    assert (np.diff(cal.apply(grid, "non_us_img")) > 0).all()  # smooth, strictly rising
    assert cal.applicants == {"non_us_img": 3_000} and cal.season == 2025


def test_types_too_small_or_one_sided_keep_their_figures():
    stated, wins, _ = _plans_measured(400, -0.2, 1.0, 5, seed=12)
    types = np.array(["us_img"] * 150 + ["us_md_senior"] * 250)
    wins[150:] = 5  # every US MD senior matched every time: nothing to fit a line to
    cal = PlanCalibration.fit(stated, wins, np.full(400, 5), types, "abc")
    assert cal.by_type == {}
    np.testing.assert_array_equal(cal.apply(stated, "us_img"), stated)
    np.testing.assert_array_equal(cal.apply(stated, "unknown type"), stated)


def test_a_plan_calibration_round_trips_through_its_file_form():
    cal = PlanCalibration({"non_us_img": (-0.3, 0.85)}, "f" * 64, 2025, {"non_us_img": 2000})
    back = PlanCalibration.from_dict(json.loads(json.dumps(cal.to_dict())), "x.json")
    assert back.by_type == cal.by_type and back.model_sha256 == cal.model_sha256
    assert back.season == 2025 and back.applicants == {"non_us_img": 2000}


def test_joint_plans_get_lines_of_their_own_and_fall_back_on_the_single_line():
    single_stated, single_wins, _ = _plans_measured(2_000, -0.2, 0.95, 6, seed=13)
    cal = PlanCalibration.fit(single_stated, single_wins, np.full(2_000, 6),
                              np.repeat("non_us_img", 2_000), "abc", 2025)
    # joint plans run further from their figure than single ones: a line of their own
    stated, wins, truth = _plans_measured(300, -0.5, 0.9, 6, seed=14)
    types = np.array(["non_us_img"] * 260 + ["us_do_senior"] * 40)  # too few DOs for a line
    both = cal.with_joint(stated, wins, np.full(300, 6), types)
    assert set(both.joint_by_type) == {"non_us_img"} and both.by_type == cal.by_type
    nonus = types == "non_us_img"
    joint = both.apply(stated[nonus], "non_us_img", joint=True)
    single = both.apply(stated[nonus], "non_us_img")
    assert abs(joint.mean() - truth[nonus].mean()) < abs(single.mean() - truth[nonus].mean())
    assert abs(joint.mean() - truth[nonus].mean()) < 0.02
    np.testing.assert_array_equal(single, cal.apply(stated[nonus], "non_us_img"))
    # no joint line for the type: the single-specialty line (none here: its figure)
    np.testing.assert_array_equal(both.apply(stated[~nonus], "us_do_senior", joint=True),
                                  stated[~nonus])
    back = PlanCalibration.from_dict(json.loads(json.dumps(both.to_dict())), "x.json")
    assert back.joint_by_type == both.joint_by_type and back.by_type == both.by_type
    # a file written before joint lines existed reads as having none
    old = {k: v for k, v in cal.to_dict().items() if k != "joint_by_type"}
    assert PlanCalibration.from_dict(old, "old.json").joint_by_type == {}


@pytest.mark.parametrize("lines", [[0.1, 1.0], {"non_us_img": {"intercept": 0.1, "slope": 9.0}},
                                   {"non_us_img": None}])
def test_a_malformed_joint_line_is_refused_naming_the_field(lines):
    data = {"kind": "smartpick plan calibration", "model_sha256": "a" * 64, "by_type": {},
            "joint_by_type": lines}
    with pytest.raises(ModelIntegrityError, match="joint_by_type"):
        PlanCalibration.from_dict(data, "cal.json")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**400)
                     | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@pytest.mark.parametrize("line", [{"intercept": 10**400, "slope": 1.0},
                                  {"intercept": 0.1, "slope": float("nan")},
                                  {"intercept": True, "slope": 1.0},
                                  {"intercept": 0.1, "slope": 0.0}, [0.1, 1.0], None])
def test_a_line_that_is_not_two_finite_numbers_is_refused(line):
    data = {"kind": "smartpick plan calibration", "model_sha256": "a" * 64,
            "by_type": {"non_us_img": line}}
    with pytest.raises(ModelIntegrityError, match="by_type.non_us_img"):
        PlanCalibration.from_dict(data, "cal.json")


@settings(max_examples=150, deadline=None)
@given(by_type=_json, sha=_json, kind=st.sampled_from(["smartpick plan calibration", "other"]))
def test_any_malformed_plan_calibration_is_refused_naming_the_field(by_type, sha, kind):
    """Odd types, nesting and sizes anywhere in the file: a clear refusal, never a crash."""
    data = {"kind": kind, "model_sha256": sha, "by_type": by_type}
    if isinstance(by_type, dict):  # also a well-formed line beside the odd ones
        by_type = {**by_type, "us_img": {"intercept": -0.1, "slope": 0.9},
                   "huge": {"intercept": 10**400, "slope": 1.0}}
        data["by_type"] = by_type
    try:
        cal = PlanCalibration.from_dict(data, "cal.json")
    except ModelIntegrityError as exc:
        message = str(exc)
        assert message.startswith("plan calibration cal.json: ") and len(message) < 300
        assert any(f in message for f in ("kind", "model_sha256", "by_type"))
    else:
        assert kind == "smartpick plan calibration" and isinstance(sha, str)
        for a, b in cal.by_type.values():
            assert np.isfinite(a) and 0.2 <= b <= 5.0
