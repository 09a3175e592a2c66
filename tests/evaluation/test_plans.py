"""Plan evaluation in re-run seasons, on the small trained world (scale 0.03)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.contracts.config import EvaluatePlansConfig, load_evaluate_plans_config
from smartpick_ml.contracts.errors import ConfigError
from smartpick_ml.evaluation.plans import (
    SUMMARY_COLUMNS,
    SeasonSource,
    calibrate_stated,
    evaluate_plans,
    format_summary,
    log_evaluation,
    plan_lists,
    reliability_table,
    replace_lists,
    rerun_season,
    summary_table,
    write_evaluation,
)
from smartpick_ml.inference.predictor import MatchPredictor
from smartpick_ml.simulation.season import TIER_PREFERRED


def _config(**run: object) -> EvaluatePlansConfig:
    return EvaluatePlansConfig.model_validate({
        "sample": {"per_type": {"non_us_img": 40, "us_img": 20, "us_do_senior": 20,
                                "us_md_senior": 20}, "group_share": 0.05, "joint": True},
        "replicates": {"min": 2, "max": 3, "max_mc_error_pp": 0.01},
        "adoption": {"non_us_img_shares": [0.1, 0.5], "every_type_share": 0.1},
        "run": {"seed": 5, "n_jobs": 1, **run}})


@pytest.fixture(scope="module")
def source(small_training_run) -> SeasonSource:
    d = small_training_run.cfg.data
    return SeasonSource(d.raw_dir, d.validation_season, d.simulate_config)


@pytest.fixture(scope="module")
def predictor(small_training_run) -> MatchPredictor:
    return MatchPredictor.load(small_training_run.model_dir)


@pytest.fixture(scope="module")
def evaluation(small_training_run, predictor):
    return evaluate_plans(_config(), small_training_run.cfg, predictor)


def _preferred_rows(market, applicant_id):
    apps = market.applications
    return apps[(apps["applicant_id"] == applicant_id)
                & (market.tiers == TIER_PREFERRED)].reset_index(drop=True)


def test_a_plan_equal_to_the_own_list_re_runs_the_season_exactly(source):
    """The plan takes the own rows' places, so the draws line up: the same lists, the same
    season; a different list changes only what it should."""
    market = source.load()
    ids = market.applicants["applicant_id"].iloc[:30]
    own = market.applications[market.applications["applicant_id"].isin(ids)
                              & (market.tiers == TIER_PREFERRED)]
    base = rerun_season(source, None, seed=3, replicate=0)
    same = rerun_season(source, own[["applicant_id", "program_id", "signal"]], 3, 0)
    np.testing.assert_array_equal(base, same)
    assert (base >= 0).mean() > 0.5  # a real season: most applicants match
    assert not np.array_equal(base, rerun_season(source, None, seed=3, replicate=1))


def test_replacing_lists_keeps_everyone_elses_applications(source):
    market = source.load()
    applicant = market.applications.loc[market.tiers == TIER_PREFERRED, "applicant_id"].iloc[0]
    own = _preferred_rows(market, applicant)
    other_programs = market.programs.loc[
        (market.programs["specialty"] == market.applicants.set_index("applicant_id").loc[
            applicant, "preferred_specialty"])
        & ~market.programs["program_id"].isin(own["program_id"]), "program_id"]
    plan = pd.DataFrame({"applicant_id": applicant,
                         "program_id": other_programs.iloc[:max(len(own) - 1, 1)].to_numpy(),
                         "signal": "none"})
    out = replace_lists(market, plan)
    mine = out["applicant_id"] == applicant
    kept = market.applications[market.applications["applicant_id"] != applicant]
    pd.testing.assert_frame_equal(out[~mine].reset_index(drop=True),
                                  kept.reset_index(drop=True))
    # the plan's programs, and the applicant's other lists (backup, PGY-1) untouched
    others_own = market.applications[(market.applications["applicant_id"] == applicant)
                                     & (market.tiers != TIER_PREFERRED)]
    assert set(out.loc[mine, "program_id"]) == set(plan["program_id"]) | set(
        others_own["program_id"])


def test_plans_cost_what_the_own_list_costs_and_keep_the_signals(source, predictor):
    market = source.load()
    ids = market.applications.loc[market.tiers == TIER_PREFERRED, "applicant_id"].unique()[:25]
    planned = plan_lists(predictor, market, list(ids))
    per = planned.per_applicant.set_index("applicant_id")
    eligible_enough = per["programs_plan"] == per["programs_own"]
    assert eligible_enough.mean() > 0.8 and (per["programs_plan"] <= per["programs_own"]).all()
    for applicant_id in ids:
        own = _preferred_rows(market, applicant_id)
        mine = planned.rows[planned.rows["applicant_id"] == applicant_id]
        signalled = set(own.loc[own["signal"] != "none", "program_id"])
        assert signalled <= set(mine["program_id"])
        assert mine["program_id"].is_unique
    stated = per[["stated_plan", "stated_own"]].to_numpy()
    assert ((stated >= 0) & (stated <= 1)).all()


def test_the_evaluation_reports_every_type_with_its_error(evaluation):
    by_type = evaluation.by_type.set_index("applicant_type")
    assert set(by_type.index) == {"non_us_img", "us_img", "us_do_senior", "us_md_senior"}
    assert by_type.loc["non_us_img", "applicants"] > by_type.loc["us_md_senior", "applicants"]
    for col in ("matched_preferred_plan", "matched_preferred_own", "matched_plan"):
        assert by_type[col].between(0, 1).all()
        assert np.isfinite(by_type[f"{col}_mc"]).all() and (by_type[f"{col}_mc"] >= 0).all()
    # a replicate cap below the goal stops at the cap, and says how far it got
    assert evaluation.replicates == 3
    assert evaluation.settings["largest_mc_error_pp"] > 0.01


def test_adoption_counts_the_followers_it_was_asked_for(evaluation, source):
    market = source.load()
    n_img = int((market.applicants["applicant_type"] == "non_us_img").sum())
    adoption = evaluation.adoption
    half = adoption[adoption["season"].str.startswith("50%")
                    & (adoption["applicant_type"] == "non_us_img")]
    assert len(half) == 1
    # applicants with a preferred-specialty list (nearly all) can follow
    assert 0.45 * n_img <= half["followers"].iloc[0] <= 0.5 * n_img + 1
    assert half["followers"].iloc[0] + half["others"].iloc[0] == n_img
    every = adoption[adoption["season"].str.contains("every type")]
    assert set(every["applicant_type"]) == {"non_us_img", "us_img", "us_do_senior",
                                            "us_md_senior"}


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_the_same_seed_gives_the_same_evaluation_on_any_number_of_workers(
        small_training_run, predictor, evaluation, backend):
    """Re-run seasons are independent tasks: two workers give what one process gives."""
    again = evaluate_plans(_config(n_jobs=2, backend=backend), small_training_run.cfg,
                           predictor)
    pd.testing.assert_frame_equal(again.by_type, evaluation.by_type)
    pd.testing.assert_frame_equal(again.adoption, evaluation.adoption)


def test_the_summary_explains_itself_and_files_land(evaluation, tmp_path):
    text = format_summary(evaluation)
    for words in ("same ERAS fee", "Monte-Carlo error", "realised, own list", "Non-US IMG",
                  "When many follow SmartPick", "Stated against realised"):
        assert words in text, words
    paths = write_evaluation(evaluation, tmp_path / "out")
    assert all(p.exists() for p in paths.values())
    assert {"reliability_png", "gain_png"} <= set(paths)
    per = pd.read_parquet(paths["per_applicant"])
    assert {"stated_plan", "realised_plan", "realised_own"} <= set(per.columns)
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_the_summary_table_has_a_row_per_season_and_type_and_all(evaluation):
    table = summary_table(evaluation)
    assert list(table.columns) == SUMMARY_COLUMNS
    sample = table[table["season"] == "sample"].set_index("applicant_type")
    assert set(sample.index) == {"non_us_img", "us_img", "us_do_senior", "us_md_senior", "all"}
    by_type = evaluation.by_type.set_index("applicant_type")
    np.testing.assert_allclose(sample.loc["non_us_img", "realised_gain_pp"],
                               100 * by_type.loc["non_us_img", "matched_preferred_gain"])
    # "all" pools the types by applicants
    parts = sample.drop(index="all")
    expected = np.average(parts["realised_p_match"], weights=parts["n_applicants"])
    assert sample.loc["all", "realised_p_match"] == pytest.approx(expected)
    assert sample.loc["all", "n_applicants"] == parts["n_applicants"].sum()
    half = table[table["season"].str.startswith("50%")
                 & (table["applicant_type"] == "non_us_img")]
    assert half["adoption"].iloc[0] == 0.5
    assert table[["stated_p_match", "realised_p_match"]].stack().between(0, 1).all()


def test_reliability_deciles_cover_every_sampled_applicant(evaluation):
    table = reliability_table(evaluation)
    counts = table.groupby("applicant_type")["n"].sum()
    assert counts.to_dict() == evaluation.per_applicant["applicant_type"].value_counts().to_dict()
    for _, part in table.groupby("applicant_type"):
        assert part["stated"].is_monotonic_increasing
        gap = np.average((part["stated"] - part["realised"]).abs(), weights=part["n"])
        assert part["ece"].iloc[0] == pytest.approx(gap)


def test_the_evaluation_is_logged_to_mlflow_with_the_model_it_evaluates(
        evaluation, small_training_run, tmp_path):
    from mlflow import MlflowClient

    paths = write_evaluation(evaluation, tmp_path / "out", plots=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with small_training_run.isolated_mlflow(uri, cwd=tmp_path):
        run_id = log_evaluation(paths, evaluation, uri, "plans-test", "models", "7")
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.tags["smartpick.model_version"] == "7"
    assert "non_us_img.gain_pp" in run.data.metrics
    assert run.info.status == "FINISHED"


_SAMPLE = "[sample]\nper_type = { us_img = 3 }\n"


@pytest.mark.parametrize(("text", "field"), [
    ("[sample]\nper_type = { martian = 3 }\n", "sample.per_type"),
    ("[sample]\nper_type = { us_img = 0 }\n", "sample.per_type"),
    ("[sample]\nper_type = [1, 2]\n", "sample.per_type"),
    ("[sample]\nper_type = { us_img = { nested = 1 } }\n", "sample.per_type.us_img"),
    ('sample = "all"\n', "sample"),
    (_SAMPLE + "[replicates]\nmin = 5\nmax = 3\n", "replicates"),
    (_SAMPLE + "[adoption]\nnon_us_img_shares = [1.5]\n", "adoption.non_us_img_shares"),
    (_SAMPLE + '[run]\nbackend = "dask"\n', "run.backend"),
    (_SAMPLE + "[run]\nn_jobs = 1e9\n", "run.n_jobs"),
    ("surprise = 1\n" + _SAMPLE, "surprise"),
])
def test_a_bad_config_names_the_field(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_evaluate_plans_config(path)


def test_the_shipped_config_loads():
    cfg = load_evaluate_plans_config("pipelines/evaluate_plans.toml")
    assert cfg.sample.per_type["non_us_img"] >= 2000
    assert all(cfg.sample.per_type[t] >= 1000 for t in cfg.sample.per_type)


def test_a_missing_season_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="smartpick run"):
        SeasonSource(str(tmp_path), 2025, "pipelines/simulate.toml").load()


def test_the_spark_backend_gives_what_one_process_gives(small_training_run, predictor,
                                                        evaluation, local_spark):
    """The same re-run seasons as Spark tasks (joblibspark on local[2]): the same evaluation."""
    on_spark = evaluate_plans(_config(backend="spark", n_jobs=2), small_training_run.cfg,
                              predictor)
    pd.testing.assert_frame_equal(on_spark.by_type, evaluation.by_type)
    pd.testing.assert_frame_equal(on_spark.adoption, evaluation.adoption)


def test_a_failed_write_leaves_the_previous_evaluation_whole(evaluation, tmp_path, monkeypatch):
    out = tmp_path / "plans"
    first = write_evaluation(evaluation, out, plots=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("smartpick_ml.evaluation.plans.reliability_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_evaluation(evaluation, out, plots=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["plans"]  # no staging folder left
    assert set(first) >= {"summary_csv", "reliability_csv"}


def test_an_evaluation_without_adoption_seasons(small_training_run, predictor, tmp_path):
    cfg = _config().model_copy(update={"adoption": _config().adoption.model_copy(
        update={"non_us_img_shares": [], "every_type_share": None})})
    ev = evaluate_plans(cfg, small_training_run.cfg, predictor)
    assert len(ev.adoption) == 0 and len(ev.by_type) == 4
    assert set(summary_table(ev)["season"]) == {"sample"}
    assert "When many follow" not in format_summary(ev)
    write_evaluation(ev, tmp_path / "out")


def test_the_stated_figure_is_calibrated_cross_fitted_on_what_plans_realised():
    """Plans whose stated P(match) runs high: each applicant's calibrated figure comes from the
    line fitted on the other half of the sample, and lands on what plans realised."""
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(3)
    n, trials = 1_200, 6
    types = np.repeat(["non_us_img", "us_md_senior"], n // 2)
    raw = rng.uniform(0.05, 0.99, n)
    truth = ndtr(np.where(types == "non_us_img", -0.3, -0.1) + 0.95 * ndtri(raw))
    planned = pd.DataFrame({"applicant_id": [f"a{i}" for i in range(n + 50)],
                            "applicant_type": [*types, *["non_us_img"] * 50],
                            "stated_plan": [*raw, *[0.8] * 50],
                            "stated_own": [*raw * 0.9, *[0.7] * 50]})
    measured = planned.iloc[:n].assign(realised_plan=rng.binomial(trials, truth) / trials)
    calibration, out = calibrate_stated(planned, measured, trials, "ab" * 32, 2025, seed=1)
    assert set(calibration.by_type) == {"non_us_img", "us_md_senior"}
    np.testing.assert_array_equal(out["stated_plan_uncalibrated"], planned["stated_plan"])
    # a list the applicant chose keeps the model's figure: the calibration is for plans
    np.testing.assert_array_equal(out["stated_own"], planned["stated_own"])
    for typ in ("non_us_img", "us_md_senior"):
        sel = types == typ
        realised = measured["realised_plan"][sel].mean()  # the truth, up to sampling error
        gap_before = raw[sel].mean() - realised
        gap_after = out["stated_plan"].iloc[:n][sel].mean() - realised
        assert gap_before > 0.02 and abs(gap_after) < 0.01, (typ, gap_before, gap_after)
    # outside the sample: the line fitted on all of it
    np.testing.assert_allclose(out["stated_plan"].iloc[n:],
                               calibration.apply(np.full(50, 0.8), "non_us_img"))
    # cross-fitted: not the full line for sampled applicants
    full = calibration.apply(raw[:5], types[0])
    assert not np.allclose(out["stated_plan"].iloc[:5], full, atol=1e-9)
    none, kept = calibrate_stated(planned, measured.iloc[:0], 0, "ab" * 32, 2025, seed=1)
    assert none is None and (kept["stated_plan"] == planned["stated_plan"]).all()


def test_joint_plans_are_calibrated_cross_fitted_on_their_own_outcomes():
    """Joint plans (a match anywhere on the list) whose figure runs high by more than single
    plans': their own line, cross-fitted, lands on what they realised; applicants without a
    joint plan keep no joint figure."""
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(4)
    n, trials = 800, 6
    raw = rng.uniform(0.05, 0.99, n)
    joint_raw = np.where(np.arange(n) < 400, rng.uniform(0.3, 0.99, n), np.nan)
    planned = pd.DataFrame({"applicant_id": [f"a{i}" for i in range(n)],
                            "applicant_type": "non_us_img", "stated_plan": raw,
                            "stated_joint": joint_raw})
    single_truth = ndtr(-0.2 + 0.95 * ndtri(raw))
    joint_truth = ndtr(-0.6 + 0.9 * ndtri(np.nan_to_num(joint_raw, nan=0.5)))
    measured = planned.assign(
        realised_plan=rng.binomial(trials, single_truth) / trials,
        realised_joint_any=np.where(np.isnan(joint_raw), np.nan,
                                    rng.binomial(trials, joint_truth) / trials))
    # 60 US-citizen IMGs with a joint plan: enough for a line on all of them, not on each half
    few = planned.iloc[:60].assign(applicant_id=[f"b{i}" for i in range(60)],
                                   applicant_type="us_img", stated_joint=0.8)
    planned = pd.concat([planned, few], ignore_index=True)
    measured = pd.concat([measured, few.assign(realised_plan=0.7, realised_joint_any=0.9)],
                         ignore_index=True)
    calibration, out = calibrate_stated(planned, measured, trials, "ab" * 32, 2025, seed=1)
    # saved only where the cross-fitted figures were judged by a line of the same kind
    assert set(calibration.joint_by_type) == {"non_us_img"}
    planned, measured, out = planned.iloc[:n], measured.iloc[:n], out.iloc[:n]
    has = ~np.isnan(joint_raw)
    realised = measured["realised_joint_any"][has].mean()
    single_line = calibration.apply(joint_raw[has], "non_us_img").mean()
    assert joint_raw[has].mean() - realised > 0.05 and single_line - realised > 0.02
    assert abs(out["stated_joint"][has].mean() - realised) < 0.015
    assert out["stated_joint"][~has].isna().all()
    np.testing.assert_array_equal(out["stated_joint_uncalibrated"][has], joint_raw[has])


def test_the_evaluation_saves_a_calibration_for_the_model_it_evaluated(evaluation, predictor,
                                                                       tmp_path):
    from smartpick_ml.modelling.persist import load_plan_calibration

    assert evaluation.calibration is not None
    paths = write_evaluation(evaluation, tmp_path / "out", plots=False)
    saved = load_plan_calibration(paths["plan_calibration"], predictor.manifest["sha256"])
    assert saved.season == evaluation.settings["season"]
    per = evaluation.per_applicant
    assert "stated_plan_uncalibrated" in per.columns


def test_the_joint_plan_is_measured_against_the_single_specialty_plan(evaluation, source):
    """Issue #18: sampled applicants with a backup list also follow the joint plan (preferred
    and backup programs and signals chosen together) in seasons paired with the plan groups'."""
    joint = evaluation.joint.set_index("applicant_type")
    assert len(joint) and (joint["applicants"] > 0).all()
    per = evaluation.per_applicant
    with_joint = per["stated_joint"].notna()
    assert joint["applicants"].sum() == with_joint.sum()
    market = source.load()
    has_backup = set(market.applications.loc[market.tiers == 1, "applicant_id"])
    assert set(per.loc[with_joint, "applicant_id"]) <= has_backup
    for col in ("matched_plan", "matched_own", "matched_preferred_plan"):
        assert joint[col].between(0, 1).all() and np.isfinite(joint[f"{col}_mc"]).all()
    # the single plan's side is the sample's plan outcome for the same applicants
    sub = per[with_joint]
    for typ, row in joint.iterrows():
        assert row["matched_own"] == pytest.approx(
            sub.loc[sub["applicant_type"] == typ, "realised_plan_any"].mean())
    assert "The joint plan" in format_summary(evaluation)


def test_a_joint_plan_replaces_both_lists_in_their_own_slots(source, predictor):
    """The joint plan's preferred rows take the preferred list's places and its backup rows
    the backup list's: a joint plan equal to both own lists re-runs the season exactly."""
    market = source.load()
    backup_rows = market.applications[market.tiers == 1]
    applicant_id = backup_rows["applicant_id"].iloc[0]
    mine = market.applications[(market.applications["applicant_id"] == applicant_id)
                               & np.isin(market.tiers, [0, 1])]
    tiers = market.tiers[mine.index]
    same = mine[["applicant_id", "program_id", "signal"]].assign(tier=tiers)
    pd.testing.assert_frame_equal(replace_lists(market, same),
                                  market.applications.reset_index(drop=True))
    np.testing.assert_array_equal(rerun_season(source, same, 3, 0),
                                  rerun_season(source, None, 3, 0))
