"""Tests for training.evaluate: ECE against known answers and properties, the per-row metrics
against scikit-learn, the per-type table, P(match) per applicant, and that plots land atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from smartpick_ml.training.evaluate import (
    applicant_match_table,
    binary_metrics,
    calibration_bins,
    expected_calibration_error,
    metrics_table,
    plot_importance,
    plot_pmatch_deciles,
    plot_reliability,
    plot_roc_pr,
    reliability_by_decile,
)

PROPERTY = settings(deadline=None, derandomize=True, database=None, max_examples=150)
TYPES_IMG_FIRST = ["non_us_img", "us_img", "us_do_senior", "us_md_senior"]


# ---------------------------------------------------------------------------- ECE

@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_ece_near_zero_when_calibrated(strategy: str) -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(y, p, strategy=strategy) < 0.01


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_ece_of_shifted_predictor_is_the_shift(strategy: str) -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.75, 200_000)  # p + 0.2 stays below 1, so the clip never bites
    y = rng.random(p.size) < p
    shifted = np.clip(p + 0.2, 0, 1)
    assert expected_calibration_error(y, shifted, strategy=strategy) == pytest.approx(0.2, abs=0.01)


def test_ece_hand_computed() -> None:
    # uniform, 2 bins: [0.1, 0.2, 0.3] -> mean 0.2, observed 1/3, weight 3/5;
    #                  [0.6, 0.8]      -> mean 0.7, observed 1,   weight 2/5.
    p = [0.1, 0.2, 0.3, 0.6, 0.8]
    y = [0, 0, 1, 1, 1]
    expected = 3 / 5 * abs(1 / 3 - 0.2) + 2 / 5 * abs(1.0 - 0.7)
    assert expected_calibration_error(y, p, n_bins=2, strategy="uniform") == pytest.approx(expected)
    assert expected == pytest.approx(0.2)


def test_ece_drops_empty_bins_and_weights_by_count() -> None:
    # Everything in one uniform bin of ten: 13 empty bins must not count, or dilute the mean.
    p = np.full(4, 0.25)
    y = [1, 0, 0, 0]
    mean_p, rate, counts = calibration_bins(y, p, n_bins=10, strategy="uniform")
    assert counts.tolist() == [4]
    assert expected_calibration_error(y, p, n_bins=10, strategy="uniform") == pytest.approx(0.0)
    # Quantile edges collapse on ties: still one non-empty bin, no NaN.
    assert expected_calibration_error(y, p, n_bins=15) == pytest.approx(0.0)
    assert_allclose(mean_p, [0.25])
    assert_allclose(rate, [0.25])


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    n = draw(st.integers(1, 60))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    p = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n))
    return y, p


@PROPERTY
@given(valid_inputs(), st.integers(1, 30), st.sampled_from(["quantile", "uniform"]))
def test_ece_in_unit_interval(data: tuple[list[int], list[float]], n_bins: int,
                              strategy: str) -> None:
    y, p = data
    ece = expected_calibration_error(y, p, n_bins=n_bins, strategy=strategy)
    assert 0.0 <= ece <= 1.0


@PROPERTY
@given(valid_inputs(), st.sampled_from([math.nan, math.inf, -math.inf, -0.1, 1.5, -1e-9]),
       st.data())
def test_ece_rejects_bad_probabilities(data: tuple[list[int], list[float]], bad: float,
                                       draw: st.DataObject) -> None:
    y, p = data
    p[draw.draw(st.integers(0, len(p) - 1))] = bad
    with pytest.raises(ValueError, match="y_prob"):
        expected_calibration_error(y, p)


@PROPERTY
@given(valid_inputs(), st.sampled_from([2, -1, 0.5, math.nan]), st.data())
def test_ece_rejects_bad_labels(data: tuple[list[int], list[float]], bad: float,
                                draw: st.DataObject) -> None:
    y, p = data
    y_bad: list[float] = list(map(float, y))
    y_bad[draw.draw(st.integers(0, len(y) - 1))] = bad
    with pytest.raises(ValueError, match="y_true"):
        expected_calibration_error(y_bad, p)


@pytest.mark.parametrize("kwargs, name", [
    ({"y_true": [0, 1, 1], "y_prob": [0.2, 0.5]}, "y_true and y_prob"),
    ({"y_true": [], "y_prob": []}, "empty"),
    ({"y_true": [[0, 1]], "y_prob": [[0.2, 0.5]]}, "y_true"),
    ({"y_true": [0, 1], "y_prob": ["a", "b"]}, "y_prob"),
    ({"y_true": [0, 1], "y_prob": [0.2, 0.5], "n_bins": 0}, "n_bins"),
    ({"y_true": [0, 1], "y_prob": [0.2, 0.5], "strategy": "kmeans"}, "strategy"),
])
def test_ece_invalid_arguments_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        expected_calibration_error(**kwargs)


# ---------------------------------------------------------------------------- binary_metrics

def test_binary_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.01, 0.99, 5_000)
    y = (rng.random(p.size) < p).astype(int)
    m = binary_metrics(y, p)
    assert m["n"] == 5_000
    assert_allclose(m["log_loss"], log_loss(y, p), rtol=1e-12)
    assert_allclose(m["brier"], brier_score_loss(y, p), rtol=1e-12)
    assert_allclose(m["roc_auc"], roc_auc_score(y, p), rtol=1e-12)
    assert_allclose(m["pr_auc"], average_precision_score(y, p), rtol=1e-12)
    assert_allclose(m["ece"], expected_calibration_error(y, p))
    assert_allclose(m["base_rate"], y.mean())
    assert_allclose(m["mean_prediction"], p.mean())


def test_binary_metrics_clips_certain_mistakes() -> None:
    assert_allclose(binary_metrics([1], [0.0])["log_loss"], -math.log(1e-15), rtol=1e-12)
    # 1 - 1e-15 is not exact in float64 (the gap is 1.11e-15), hence the looser tolerance.
    assert_allclose(binary_metrics([0], [1.0])["log_loss"], -math.log(1e-15), rtol=0.01)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_aucs(label: int) -> None:
    m = binary_metrics(np.full(20, label), np.linspace(0.05, 0.95, 20))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert all(math.isfinite(m[k]) for k in ("log_loss", "brier", "ece", "base_rate"))


def test_binary_metrics_empty_is_nan() -> None:
    m = binary_metrics([], [])
    assert m["n"] == 0 and math.isnan(m["log_loss"])


# ---------------------------------------------------------------------------- metrics_table

@pytest.fixture(scope="module")
def scored_frame() -> pd.DataFrame:
    """Applications of 400 applicants with an 'oracle' (the truth) and a noisier 'model'."""
    rng = np.random.default_rng(3)
    n_app, per = 400, 6
    types = rng.choice(["us_md_senior", "us_do_senior", "us_img", "non_us_img"], n_app)
    truth = rng.beta(1.0, 4.0, n_app * per)
    y = (rng.random(truth.size) < truth).astype(int)
    ranked = rng.random(truth.size) < 0.6
    frame = pd.DataFrame({
        "applicant_id": np.repeat([f"A{i:04d}" for i in range(n_app)], per),
        "applicant_type": np.repeat(types, per),
        "would_take": pd.array(y, dtype="Int64"),
        "rank_position": pd.array(np.where(ranked, np.tile(np.arange(1, per + 1), n_app), 0),
                                  dtype="Int64"),
        "oracle": truth,
        "model": np.clip(truth + rng.normal(0, 0.08, truth.size), 0.001, 0.999),
    })
    frame.loc[~ranked, "rank_position"] = pd.NA
    # matched: the first ranked program that would take the applicant (deferred acceptance).
    take = frame["would_take"].astype(bool) & frame["rank_position"].notna()
    first = frame[take].sort_values("rank_position").groupby("applicant_id").head(1).index
    frame["matched"] = False
    frame.loc[first, "matched"] = True
    return frame


def test_metrics_table_rows_and_order(scored_frame: pd.DataFrame) -> None:
    table = metrics_table(scored_frame, {"model": "model", "oracle": "oracle"},
                          reference="oracle")
    groups = [*TYPES_IMG_FIRST, "all"]
    assert list(zip(table["model"], table["group"], strict=True)) == (
        [("model", g) for g in groups] + [("oracle", g) for g in groups])
    assert {"roc_auc", "pr_auc", "log_loss", "brier", "ece", "mean_prediction", "base_rate", "n",
            "log_loss_vs_reference"} <= set(table.columns)
    oracle = table[table["model"] == "oracle"]
    assert_allclose(oracle["log_loss_vs_reference"], 1.0)
    all_rows = table[table["group"] == "all"].set_index("model")
    assert all_rows.loc["model", "n"] == len(scored_frame)
    assert all_rows.loc["model", "log_loss_vs_reference"] > 1.0  # the truth is the floor
    assert table.loc[table["group"] != "all", "n"].sum() == 2 * len(scored_frame)


def test_metrics_table_censored_and_missing(scored_frame: pd.DataFrame) -> None:
    df = scored_frame.copy()
    df.loc[df.index[:10], "would_take"] = pd.NA  # censored labels: left out everywhere
    df.loc[df.index[10:30], "oracle"] = np.nan  # oracle missing: left out for the oracle only
    table = metrics_table(df, {"model": "model", "oracle": "oracle"}, reference="oracle")
    all_rows = table[table["group"] == "all"].set_index("model")
    assert all_rows.loc["model", "n"] == len(df) - 10
    assert all_rows.loc["oracle", "n"] == len(df) - 30
    assert np.isfinite(all_rows.loc["model", "log_loss_vs_reference"])


def test_metrics_table_single_class_group_no_raise() -> None:
    df = pd.DataFrame({"applicant_type": ["non_us_img"] * 3 + ["us_md_senior"] * 3,
                       "would_take": [0, 0, 0, 1, 0, 1], "q": [0.1, 0.2, 0.3, 0.6, 0.4, 0.7]})
    table = metrics_table(df, {"m": "q"})
    img = table.set_index("group").loc["non_us_img"]
    assert math.isnan(img["roc_auc"]) and math.isnan(img["pr_auc"])
    assert list(table["group"]) == ["non_us_img", "us_md_senior", "all"]
    assert "log_loss_vs_reference" not in table.columns


def test_metrics_table_rejects_unknown_reference(scored_frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="reference"):
        metrics_table(scored_frame, {"model": "model"}, reference="oracle")
    with pytest.raises(ValueError, match="prob_columns"):
        metrics_table(scored_frame, {"model": "no_such_column"})


# ---------------------------------------------------------------------------- P(match)

def test_applicant_match_table_hand_computed() -> None:
    frame = pd.DataFrame({
        "applicant_id": ["A", "A", "A", "B", "B", "C"],
        "applicant_type": ["us_img", "us_img", "us_img", "us_md_senior", "us_md_senior",
                           "non_us_img"],
        "q": [0.5, 0.2, 0.9, 0.1, 1.0, 0.3],
        "rank_position": pd.array([1, 2, None, 1, 2, None], dtype="Int64"),
        "matched": pd.array([False, True, False, False, None, False], dtype="boolean"),
        "would_take": [0, 1, 0, 0, 1, 0],
    })
    per = applicant_match_table(frame, "q").set_index("applicant_id")
    # A ranks 0.5 and 0.2 (0.9 is off the list); B ranks a certain program; C ranks nothing.
    assert_allclose(per.loc[["A", "B", "C"], "p_match"], [1 - 0.5 * 0.8, 1.0, 0.0])
    assert per["matched"].tolist() == [True, False, False]
    assert per["n_programs"].tolist() == [2, 2, 0]
    assert per.loc["C", "applicant_type"] == "non_us_img"

    # Without a rank list: every application counts.
    per_all = applicant_match_table(frame.drop(columns="rank_position"), "q")
    assert_allclose(per_all["p_match"], [1 - 0.5 * 0.8 * 0.1, 1.0, 0.3])

    # Without matched: falls back to "a ranked program would take them" (B now matched).
    per_lbl = applicant_match_table(frame.drop(columns="matched"), "q")
    assert per_lbl["matched"].tolist() == [True, True, False]


def test_reliability_by_decile(scored_frame: pd.DataFrame) -> None:
    per = applicant_match_table(scored_frame, "oracle")
    rel = reliability_by_decile(per)
    assert list(rel.columns) == ["decile", "mean_predicted", "realised_rate", "count"]
    assert rel["decile"].tolist() == list(range(1, 11))
    assert rel["count"].sum() == len(per) and rel["count"].max() - rel["count"].min() <= 1
    assert rel["mean_predicted"].is_monotonic_increasing
    assert_allclose((rel["mean_predicted"] * rel["count"]).sum() / len(per), per["p_match"].mean())

    by_type = reliability_by_decile(per, n_bins=5, by="applicant_type")
    assert list(by_type.columns) == ["applicant_type", "decile", "mean_predicted",
                                     "realised_rate", "count"]
    assert list(dict.fromkeys(by_type["applicant_type"])) == TYPES_IMG_FIRST
    assert by_type["count"].sum() == len(per)


# ---------------------------------------------------------------------------- plots

def _assert_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_plots_write_png_atomically(scored_frame: pd.DataFrame, tmp_path: Path) -> None:
    models = {"model": "model", "oracle": "oracle"}
    per = {m: applicant_match_table(scored_frame, c) for m, c in models.items()}
    importances = pd.DataFrame({"feature": ["step2_ck", "usce_months", "needs_visa"],
                                "importance_mean": [0.05, 0.02, -0.001],
                                "importance_std": [0.01, 0.005, 0.002]})
    calls = {
        "reliability": lambda p: plot_reliability(scored_frame, models, p),
        "roc_pr": lambda p: plot_roc_pr(scored_frame, models, p),
        "pmatch": lambda p: plot_pmatch_deciles(per, p),
        "importance": lambda p: plot_importance(importances, p),
    }
    for name, call in calls.items():
        folder = tmp_path / name
        target = folder / f"{name}.png"
        out = call(target)
        assert out == target
        _assert_png(target)


def test_failed_plot_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="importances"):
        plot_importance(pd.DataFrame({"feature": ["x"]}), tmp_path / "imp.png")
    assert list(tmp_path.iterdir()) == []


def test_reliability_panels_zoom_to_each_groups_range() -> None:
    """A group whose q stays small is drawn on axes that fit it, not squeezed into 0-0.2 of a
    0-1 panel; a panel whose points reach 0.9 keeps the whole range."""
    from smartpick_ml.training.evaluate import _zoomed_upper

    assert _zoomed_upper([np.array([0.01, 0.12]), np.array([0.02, 0.15])]) == pytest.approx(0.2)
    assert _zoomed_upper([np.array([0.3, 0.92])]) == 1.0
    assert _zoomed_upper([np.array([0.001])]) == pytest.approx(0.1)
    assert _zoomed_upper([]) == 1.0
