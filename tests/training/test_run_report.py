"""The run report every training run writes: where it goes, what it holds, what it refuses."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.reference import APPLICANT_TYPE_LABELS, APPLICANT_TYPES
from smartpick_ml.training import run_report
from smartpick_ml.training.evaluate import ALL_GROUP


@pytest.fixture(scope="module")
def report_text(small_training_run) -> str:
    path = small_training_run.processed_dir / "run" / run_report.REPORT_NAME
    assert path.is_file(), "training did not write the run report beside its plots"
    return path.read_text(encoding="utf-8")


def test_report_beside_plots_and_model_is_the_same_page(small_training_run, report_text):
    beside_model = small_training_run.model_dir / run_report.REPORT_NAME
    assert beside_model.is_file()
    assert beside_model.read_text(encoding="utf-8") == report_text
    assert small_training_run.result.outputs["report_html"].read_text() == report_text


def test_report_embeds_every_plot_on_disk(small_training_run, report_text):
    run_dir = small_training_run.processed_dir / "run"
    plots = sorted(run_dir.glob("*.png"))
    assert len(plots) >= 4  # reliability, ROC/PR, importance, P(match) deciles
    embedded = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', report_text)
    by_name = dict(embedded)
    for png in plots:
        assert png.name in by_name, f"{png.name} is on disk but not in the report"
        assert base64.b64decode(by_name[png.name]) == png.read_bytes()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]


def test_report_holds_metrics_data_decision_and_config(small_training_run, report_text):
    world = small_training_run
    m = world.result.metrics
    row = m[(m["model"] == "model") & (m["group"] == ALL_GROUP)].iloc[0]
    # the metrics as the table prints them, for the model, both baselines and the oracle
    assert f"{row['log_loss']:.4f}" in report_text
    assert f"{row['ece']:.4f}" in report_text
    for name in ("model", "logistic", "lookup", "oracle"):
        assert run_report.MODEL_LABELS[name] in report_text
        r = m[(m["model"] == name) & (m["group"] == "non_us_img")].iloc[0]
        assert f"{r['brier']:.4f}" in report_text
    for t in APPLICANT_TYPES:
        assert APPLICANT_TYPE_LABELS[t] in report_text
    # data summary: the validation split's pair count, and the alias decision verbatim
    assert f"{len(world.validation):,}" in report_text
    assert world.result.champion_decision in report_text
    assert world.result.champion_decision.startswith("champion")
    # the config, with a value only it carries
    assert world.cfg.evaluation.logistic_rows == 20000
    assert '"logistic_rows": 20000' in report_text


def test_report_is_logged_to_mlflow(small_training_run):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=small_training_run.tracking_uri)
    names = [f.path for f in client.list_artifacts(small_training_run.result.run_id, "report")]
    assert f"report/{run_report.REPORT_NAME}" in names


def test_notebook_inputs_written_by_training(small_training_run):
    run_dir = small_training_run.processed_dir / "run"
    scores = pd.read_parquet(run_dir / run_report.SCORES_NAME)
    assert len(scores) == len(small_training_run.validation)
    assert {"applicant_type", "would_take", "model", "logistic", "lookup", "oracle"} <= \
        set(scores.columns)
    # no applicant features (scores only)
    assert "step2_ck" not in scores.columns
    imp = pd.read_csv(run_dir / run_report.IMPORTANCE_NAME)
    assert list(imp.columns) == ["feature", "importance_mean", "importance_std"]


def test_champion_run_reads_metrics_back(small_training_run):
    world = small_training_run
    champ = run_report.champion_run(world.tracking_uri, world.registered_model)
    assert champ.run_id == world.result.run_id
    got = champ.metrics.query("model == 'model' and group == 'all' and metric == 'log_loss'")
    m = world.result.metrics
    want = m[(m["model"] == "model") & (m["group"] == ALL_GROUP)]["log_loss"].iloc[0]
    np.testing.assert_allclose(got["value"].iloc[0], want)
    assert champ.importance is not None and len(champ.importance) > 0


def test_project_paths_from_env(small_training_run, monkeypatch):
    monkeypatch.setenv("SMARTPICK_CONFIG", str(small_training_run.config_path))
    p = run_report.project_paths()
    assert p.model_dir == small_training_run.model_dir
    assert p.run_dir == small_training_run.processed_dir / "run"
    assert p.tracking_uri == small_training_run.tracking_uri


def test_render_refuses_missing_plot(small_training_run, tmp_path):
    world = small_training_run
    out = tmp_path / "report.html"
    with pytest.raises(FileNotFoundError, match="gone.png"):
        text = run_report.render_run_report(
            world.cfg, pd.DataFrame(), world.result.metrics, {"x": tmp_path / "gone.png"},
            pd.DataFrame(), pd.DataFrame(), {}, "d", None, None, {})
        run_report.write_report(text, out)
    assert not out.exists()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(APPLICANT_TYPES), st.integers(0, 1),
                          st.sampled_from([2024, 2025])), min_size=1, max_size=30))
def test_data_summary_counts(rows):
    frame = pd.DataFrame(rows, columns=["applicant_type", "would_take", "season"])
    frame["applicant_id"] = [f"A{i % 7}-{t}" for i, t in enumerate(frame["applicant_type"])]
    s = run_report.data_summary({"validation": frame}).iloc[0]
    assert s["pairs"] == len(frame)
    assert s["applicants"] == frame["applicant_id"].nunique()
    assert sum(s[APPLICANT_TYPE_LABELS[t]] for t in APPLICANT_TYPES) == s["applicants"]
    np.testing.assert_allclose(s["label_rate"], frame["would_take"].mean())


def test_data_summary_names_missing_column():
    with pytest.raises(ValueError, match=r"train.*would_take"):
        run_report.data_summary({"train": pd.DataFrame({"applicant_id": [], "season": [],
                                                        "applicant_type": []})})


# ----------------------------------------------------------------- the season explorer's tables


@pytest.fixture(scope="module")
def season_tables(small_training_run) -> dict[str, pd.DataFrame]:
    from smartpick_ml.data.io import read_table

    raw = small_training_run.raw_dir
    tables = {n: read_table(raw / f"{n}.parquet", n)
              for n in ("programs", "applicants", "applications")}
    tables["program_outcomes"] = pd.read_parquet(raw / "program_outcomes.parquet")
    return tables


def test_applicant_outcomes_one_row_per_applicant(season_tables):
    from smartpick_ml.simulation.report import applicant_outcomes

    a, ap = season_tables["applicants"], season_tables["applications"]
    per = applicant_outcomes(a, ap)
    assert len(per) == len(a)
    assert per["applications"].sum() == len(ap)
    assert per["interviews"].sum() == int(ap["interviewed"].fillna(False).sum())
    matched = ap[ap["matched"].fillna(False).astype(bool)]
    assert per["matched"].sum() == matched[["season", "applicant_id"]].drop_duplicates().shape[0]


def test_match_rates_by_specialty_adds_up(season_tables):
    from smartpick_ml.simulation.report import match_rates_by_specialty

    t = season_tables
    out = match_rates_by_specialty(t["applicants"], t["applications"], t["programs"],
                                   t["program_outcomes"])
    for season, part in out.groupby("season"):
        assert part["applicants"].sum() == (t["applicants"]["season"] == season).sum()
        outcomes = t["program_outcomes"][t["program_outcomes"]["season"] == season]
        assert part["positions"].sum() == outcomes["positions"].sum()
        np.testing.assert_allclose(part["positions_share_pct"].sum(), 100, atol=0.2)
        # every match fills one position: those in the preferred specialty are among them
        season_apps = t["applications"][t["applications"]["season"] == season]
        assert part["filled"].sum() == season_apps["matched"].sum()
        assert (part["matched_in_specialty"] <= part["matched"]).all()
        assert part["matched_in_specialty"].sum() <= part["filled"].sum()
    np.testing.assert_allclose(
        out.drop_duplicates("specialty")["published_positions_share_pct"].sum(), 100, atol=2)
    assert out["match_rate_pct"].between(0, 100).all() and out["fill_pct"].between(0, 100).all()


def test_catalog_summary_counts_every_program(season_tables):
    from smartpick_ml.simulation.report import catalog_summary

    programs = season_tables["programs"]
    out = catalog_summary(programs)
    assert out["programs"].sum() == len(programs)
    assert out["positions"].sum() == programs["positions"].sum()
    assert out["positions"].is_monotonic_decreasing
    assert out["visa_sponsor_pct"].between(0, 100).all()


def test_oracle_distance_is_the_ratio(small_training_run):
    m = small_training_run.result.metrics
    wide = run_report.oracle_distance(m)
    row = m[(m["model"] == "lookup") & (m["group"] == "non_us_img")].iloc[0]
    got = wide.loc[run_report.MODEL_LABELS["lookup"], APPLICANT_TYPE_LABELS["non_us_img"]]
    np.testing.assert_allclose(got, row["log_loss_vs_reference"])
    np.testing.assert_allclose(wide.loc[run_report.MODEL_LABELS["oracle"]], 1.0)
    with pytest.raises(ValueError, match="log_loss_vs_reference"):
        run_report.oracle_distance(m.drop(columns="log_loss_vs_reference"))


def test_the_report_says_its_data_are_simulated(small_training_run) -> None:
    """A reader of the report learns before any figure that the seasons are simulated."""
    from smartpick_ml.training.run_report import SIMULATED_BANNER

    text = small_training_run.result.outputs["report_html"].read_text()
    assert SIMULATED_BANNER in text
    assert text.index("Simulated data") < text.index("<h2>Metrics")


def test_the_promise_section_is_replaced_in_place_or_added_to_an_older_report():
    """``evaluate-plans`` writes its headline into the model's report: where the report has the
    section (not measured yet, or an earlier evaluation) it is replaced; a report rendered
    before the section existed gets it before the run facts."""
    from smartpick_ml.training.run_report import (
        PROMISE_PENDING,
        with_markers,
        with_promise_section,
    )

    report = f"<body><h2>Metrics</h2>{with_markers(PROMISE_PENDING)}<h2>Run facts</h2></body>"
    once = with_promise_section(report, "<h2>Promise</h2><p>+24.7 pp</p>")
    twice = with_promise_section(once, "<h2>Promise</h2><p>+23.0 pp</p>")
    assert "Not measured" not in once and "+24.7" in once
    assert "+24.7" not in twice and twice.count("+23.0") == 1
    assert twice.index("+23.0") < twice.index("Run facts")
    older = with_promise_section("<body><h2>Run facts</h2></body>", "<p>+1 pp</p>")
    assert older.index("+1 pp") < older.index("Run facts")
    assert with_promise_section("<body></body>", "<p>x</p>").endswith("</body>")
