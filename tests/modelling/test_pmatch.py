"""The list-level P(match) correction: smooth, strictly increasing, and right on average."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.modelling.pmatch import PMatchCalibrator, independent_p_match


def _overconfident_lists(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists whose realised rate lies below the independence figure, as shared strengths make
    it: the truth is a flatter logistic of the same log-odds."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.999, n)
    truth = 1 / (1 + np.exp(-(0.2 + 0.6 * np.log(p / (1 - p)))))
    y = rng.random(n) < truth
    types = rng.choice(["non_us_img", "us_md_senior"], n)
    return p, y, types


def test_the_correction_learns_the_overstatement_and_keeps_the_level():
    p, y, types = _overconfident_lists(20_000, seed=1)
    cal = PMatchCalibrator().fit(p, y, types)
    out = cal.transform(p, types)
    assert abs(out.mean() - y.mean()) < 0.005  # the level: a logistic fit's mean is the data's
    grid = np.array([0.5, 0.9, 0.99])
    truth = 1 / (1 + np.exp(-(0.2 + 0.6 * np.log(grid / (1 - grid)))))
    np.testing.assert_allclose(cal.transform(grid, "non_us_img"), truth, atol=0.03)


def test_the_correction_rises_strictly_where_the_independence_figure_does():
    """An isotonic map stated one figure for every list from 45 to 60 programs."""
    p, y, types = _overconfident_lists(5_000, seed=2)
    cal = PMatchCalibrator().fit(p, y, types)
    grid = np.linspace(0.001, 0.9999, 2_000)
    for typ in ("non_us_img", "us_md_senior", "a type it never saw"):
        assert (np.diff(cal.transform(grid, typ)) > 0).all()
    assert cal.transform(np.array([0.0]), "non_us_img")[0] == 0.0  # no programs, no match


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 400), matched_share=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_any_data_gives_a_valid_increasing_map(n, matched_share, seed):
    """Too few lists, everyone matched, no one matched: the map stays a probability that never
    falls as a list grows."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    y = rng.random(n) < matched_share
    cal = PMatchCalibrator().fit(p, y, np.full(n, "us_img"))
    grid = np.linspace(0.0, 1.0, 101)
    out = cal.transform(grid, "us_img")
    assert np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    assert (np.diff(out) >= 0).all()


def test_independent_p_match_is_one_minus_the_product_of_misses():
    q = np.array([0.5, 0.5, 0.2, 1.0])
    out = independent_p_match(q, np.array(["a", "a", "b", "c"]))
    np.testing.assert_allclose(out.loc[["a", "b", "c"]].to_numpy(), [0.75, 0.2, 1.0])


def test_a_model_saved_with_the_earlier_step_map_still_answers():
    """Models trained before the smooth map carry isotonic steps; they load and answer as
    they did."""
    from sklearn.isotonic import IsotonicRegression

    p, y, types = _overconfident_lists(2_000, seed=3)
    legacy = PMatchCalibrator()
    legacy.overall_ = IsotonicRegression(out_of_bounds="clip").fit(p, y)
    legacy.by_type_ = {"us_img": IsotonicRegression(out_of_bounds="clip").fit(p[:500], y[:500])}
    np.testing.assert_allclose(legacy.transform(p[:50], "non_us_img"),
                               legacy.overall_.predict(p[:50]))
    np.testing.assert_allclose(legacy.transform(p[:50], "us_img"),
                               legacy.by_type_["us_img"].predict(p[:50]))
