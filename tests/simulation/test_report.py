"""The season report counts applicants as the NRMP does: active applicants (who ranked a program),
each once, whatever number of positions they matched to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.reference import SPECIALTY_NAMES
from smartpick_ml.simulation.report import (
    HELD_OUT_MAX_MAE_PP,
    applicant_outcomes,
    backup_lists_by_type,
    chance_within,
    format_report,
    held_out_check,
    match_rates_by_type,
    preferred_specialty_outcomes,
    read_held_out,
)


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Four non-US IMGs preferring Neurology (advanced positions):
    A matches an advanced Neurology program and a Preliminary Medicine year (two matched rows);
    B ranks and does not match; C gets no interview (not active); D matches Internal Medicine."""
    programs = pd.DataFrame({"program_id": ["N1", "P1", "I1"],
                             "specialty": ["Neurology", "Preliminary Medicine",
                                           "Internal Medicine"]})
    applicants = pd.DataFrame({
        "applicant_id": list("ABCD"), "season": 2025, "applicant_type": "non_us_img",
        "preferred_specialty": "Neurology",
        "backup_specialty": [None, None, None, "Internal Medicine"]})
    rows = [  # applicant, program, interviewed, rank position, matched, rank list
        ("A", "N1", True, 1, True, "primary"), ("A", "P1", True, 1, True, "supplemental"),
        ("B", "N1", True, 1, False, "primary"),
        ("C", "N1", False, None, False, "primary"),
        ("D", "N1", True, 1, False, "primary"), ("D", "I1", True, 2, True, "primary")]
    applications = pd.DataFrame(rows, columns=["applicant_id", "program_id", "interviewed",
                                               "rank_position", "matched", "rank_list"])
    applications["season"] = 2025
    applications["rank_position"] = applications["rank_position"].astype("Int64")
    return applicants, applications, programs


def test_an_applicant_no_program_interviewed_is_not_active():
    applicants, applications, _ = _tables()
    out = applicant_outcomes(applicants, applications).set_index("applicant_id")
    assert out["active"].to_dict() == {"A": True, "B": True, "C": False, "D": True}
    assert out.loc["A", "ranked"] == 2 and out.loc["C", "ranked"] == 0


def test_match_rate_by_type_is_of_active_applicants():
    applicants, applications, _ = _tables()
    row = match_rates_by_type(applicants, applications, scale=0.5).iloc[0]
    assert row["applicants"] == 4 and row["active_applicants"] == 3
    # A and D matched, of the three active: C, who never ranked, is not in the denominator
    assert row["match_rate_pct"] == pytest.approx(100 * 2 / 3, abs=0.05)
    assert row["published_active_applicants"] == round(11465 * 0.5)


def test_an_advanced_match_with_its_pgy1_year_counts_once_in_the_preferred_specialty():
    applicants, applications, programs = _tables()
    out = preferred_specialty_outcomes(applicants, applications, programs)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["applicants"] == 3  # A, B, D: C is not active
    assert row["matched_preferred_pct"] == pytest.approx(100 / 3, abs=0.05)  # A
    assert row["matched_any_pct"] == pytest.approx(200 / 3, abs=0.05)  # A and D
    assert row["with_backup_pct"] == pytest.approx(100 / 3, abs=0.05)  # D


def test_backup_lists_count_as_ranked_only_when_a_backup_program_is_ranked():
    """D ranked its backup (Internal Medicine); E added one and got no interview there, so only
    half the backup lists would count in the published applicants ranking a specialty."""
    from pathlib import Path

    from smartpick_ml.contracts.config import load_simulate_config

    applicants, applications, programs = _tables()
    applicants = pd.concat([applicants, pd.DataFrame({
        "applicant_id": ["E"], "season": 2025, "applicant_type": "non_us_img",
        "preferred_specialty": "Neurology", "backup_specialty": "Internal Medicine"})])
    applications = pd.concat([applications, pd.DataFrame({
        "applicant_id": ["E", "E"], "program_id": ["N1", "I1"], "interviewed": [True, False],
        "rank_position": pd.array([1, None], dtype="Int64"), "matched": False,
        "rank_list": "primary", "season": 2025})])
    params = load_simulate_config(
        Path(__file__).resolve().parents[2] / "pipelines" / "simulate.toml").params
    out = backup_lists_by_type(applicants, applications, programs, params)
    row = out[out["applicant_type"] == "non_us_img"].iloc[0]
    assert row["applicants"] == 5 and row["with_backup_pct"] == pytest.approx(40.0)
    assert row["ranks_backup_pct"] == pytest.approx(50.0)
    assert row["assumed_pct"] == pytest.approx(100 * params.types["non_us_img"]
                                               .backup_ranking_share)
    # types without applicants this season have no row to misread
    assert set(out["applicant_type"].astype(str)) == {"non_us_img"}


def test_the_docs_copy_of_the_season_report_has_every_section_the_report_writes():
    """docs/season_report.md is rebuilt by `smartpick season-report`; a section added to the
    report and missing there means the copy is stale."""
    import re
    from pathlib import Path

    from smartpick_ml.contracts.config import load_simulate_config
    from smartpick_ml.data.catalog import synthetic_catalog
    from smartpick_ml.simulation.report import season_report
    from smartpick_ml.simulation.season import simulate_season

    root = Path(__file__).resolve().parents[2]
    params = load_simulate_config(root / "pipelines" / "simulate.toml").params
    programs = synthetic_catalog(seed=3)
    season = simulate_season(programs, params.market_season, 0.01, params, seed=2)
    fresh = season_report(programs, season.applicants, season.applications,
                          season.program_outcomes, params, 0.01)
    doc = (root / "docs" / "season_report.md").read_text()

    def headings(text: str) -> list[str]:
        return re.findall(r"^## (.+)$", text, re.M)

    assert headings(doc) == headings(fresh)
    assert "Rebuilt by `smartpick season-report`" in doc


def test_an_exact_simulation_misses_small_cells_by_chance():
    """The report's baseline for the positions-filled table: a cell of 2 positions is within
    ±25 % only when exactly 2 fill it (Poisson(2): 27 %); a cell of 1,000 almost always; a
    cell with nothing published never counts as within."""
    p = chance_within(np.array([2.0, 1000.0, 0.0]), 1.0, 0.25)
    assert p[0] == pytest.approx(2 * np.exp(-2.0), abs=1e-12)
    assert p[1] > 0.999999
    assert p[2] == 0.0
    # a tenth of the market: the same cell is a tenth as large, so it misses more often
    assert chance_within(np.array([1000.0]), 0.1, 0.25)[0] < p[1]


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 400.0), st.sampled_from([0.1, 0.5, 1.0]), st.integers(0, 10_000))
def test_the_chance_within_is_what_poisson_draws_give(published, scale, seed):
    """Against Monte-Carlo: the share of Poisson draws around published x scale whose
    simulated figure (draw / scale) is within ±25 % of the published one."""
    draws = np.random.default_rng(seed).poisson(published * scale, 20_000) / scale
    share = np.mean(np.abs(draws / published - 1) <= 0.25 + 1e-12)
    want = chance_within(np.array([published]), scale, 0.25)[0]
    assert 0.0 <= want <= 1.0
    assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / 20_000) + 1e-3


def _img_outcomes(rates: dict[str, float], season: int = 2025) -> pd.DataFrame:
    return pd.DataFrame({"season": season, "specialty": list(rates), "applicants": 100,
                         "matched_preferred_pct": list(rates.values())})


def _published(rates: dict[str, float], season: int = 2025) -> pd.DataFrame:
    return pd.DataFrame({"season": season, "specialty": list(rates),
                         "matched_preferred_pct": list(rates.values())})


_RATE_COLUMNS = ("season", "applicant_type", "applicants", "active_applicants",
                 "published_active_applicants", "match_rate_pct", "published_match_rate_pct",
                 "difference_pp", "interviews_per_applicant", "applications_per_applicant")
SIMULATED = {"Internal Medicine": 60.0, "Neurology": 50.0, "Psychiatry": 45.0,
             "Emergency Medicine": 30.0, "General Surgery": 20.0}


def test_the_held_out_check_judges_how_specialties_differ_not_their_level():
    # the same order and spread, 4 pp lower: a common offset, nothing else
    rows, summary = held_out_check(_img_outcomes(SIMULATED),
                                   _published({k: v - 4 for k, v in SIMULATED.items()}))
    s = summary.iloc[0]
    assert s["specialties"] == 5 and s["rank_correlation"] == pytest.approx(1.0)
    assert s["offset_pp"] == pytest.approx(4.0) and s["mae_pp"] == pytest.approx(0.0)
    assert s["meets_goals"] and rows["difference_less_offset_pp"].abs().max() < 1e-9
    # the specialties in the reverse order: the level is right, the shape is wrong
    reverse = dict(zip(SIMULATED, sorted(SIMULATED.values()), strict=True))
    s = held_out_check(_img_outcomes(SIMULATED), _published(reverse))[1].iloc[0]
    assert s["rank_correlation"] == pytest.approx(-1.0) and not s["meets_goals"]
    assert s["offset_pp"] == pytest.approx(0.0) and s["mae_pp"] > HELD_OUT_MAX_MAE_PP


def test_the_held_out_check_lists_what_it_cannot_compare():
    published = _published({**SIMULATED, "Thoracic Surgery": 10.0})
    rows, summary = held_out_check(_img_outcomes(SIMULATED), published)
    assert summary.iloc[0]["specialties"] == 5
    assert summary.iloc[0]["not_simulated"] == "Thoracic Surgery"
    assert rows.set_index("specialty").loc["Thoracic Surgery", "simulated_pct"] != \
        rows.set_index("specialty").loc["Thoracic Surgery", "simulated_pct"]  # NaN
    # two specialties give no rank correlation: the report says so rather than printing "nan"
    two = dict(list(SIMULATED.items())[:2])
    text = format_report(pd.DataFrame(columns=list(_RATE_COLUMNS)), pd.DataFrame(
        columns=["season", "specialty", "positions", "filled", "unfilled_pct"]),
        held_out=held_out_check(_img_outcomes(two), _published(two)))
    assert "rank correlation undefined" in text and "misses the goals" in text
    with pytest.raises(DataValidationError, match="column 'season': 2019"):
        held_out_check(_img_outcomes(SIMULATED), _published(SIMULATED, season=2019))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=3, max_size=22,
                unique_by=lambda t: t[1]).map(lambda ps: [(a / 10, b / 10) for a, b in ps]),
       st.floats(-20, 20))
def test_the_held_out_figures_are_the_offset_free_error_and_a_rank_correlation(pairs, shift):
    names = list(SPECIALTY_NAMES[:len(pairs)])
    sim = dict(zip(names, [p[0] for p in pairs], strict=True))
    pub = dict(zip(names, [p[1] for p in pairs], strict=True))
    s = held_out_check(_img_outcomes(sim), _published(pub))[1].iloc[0]
    diff = np.array([p[0] - p[1] for p in pairs])
    assert s["offset_pp"] == pytest.approx(diff.mean(), abs=1e-9)
    assert s["mae_pp"] == pytest.approx(np.abs(diff - diff.mean()).mean(), abs=1e-9)
    # moving every published figure by the same amount moves the offset and nothing else
    moved = held_out_check(_img_outcomes(sim),
                           _published({k: v + shift for k, v in pub.items()}))[1].iloc[0]
    assert moved["offset_pp"] == pytest.approx(s["offset_pp"] - shift, abs=1e-9)
    assert moved["mae_pp"] == pytest.approx(s["mae_pp"], abs=1e-9)
    if not np.isnan(s["rank_correlation"]):
        assert -1 - 1e-9 <= s["rank_correlation"] <= 1 + 1e-9
        assert moved["rank_correlation"] == pytest.approx(s["rank_correlation"], abs=1e-9)


@pytest.mark.parametrize(("text", "says"), [
    ("season,specialty,matched_preferred_pct\n2025,Neurosurgery,50\n", "column 'specialty'"),
    ("season,specialty,matched_preferred_pct\n2025,Neurology,140\n",
     "column 'matched_preferred_pct'"),
    ("season,specialty,matched_preferred_pct\n2025,Neurology,abc\n",
     "column 'matched_preferred_pct'"),
    ("season,specialty,matched_preferred_pct\n2025.5,Neurology,50\n", "column 'season'"),
    ("season,specialty\n2025,Neurology\n", "matched_preferred_pct"),
    ("season,specialty,matched_preferred_pct\n2025,Neurology,50\n2025,Neurology,40\n",
     "key (season, specialty)"),
    ("season;specialty;matched_preferred_pct\n2025;Neurology;50\n", "comma-separated"),
    ("season,specialty,matched_preferred_pct\n", "no rows"),
    ("", "empty"),
])
def test_a_bad_held_out_file_is_refused_naming_the_field(tmp_path, text, says):
    path = tmp_path / "held_out.csv"
    path.write_text(text)
    with pytest.raises(DataValidationError) as err:
        read_held_out(path)
    assert says in str(err.value) and "held_out_rates" in str(err.value)


_cell = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                  st.sampled_from(["", "Neurology", "2025", "[1, 2]", '{"a": 1}', "null",
                                   "True", "\"a,b\""]),
                  st.text(max_size=12))


@settings(max_examples=120, deadline=None)
@given(st.lists(st.lists(_cell, min_size=0, max_size=6), min_size=0, max_size=6),
       st.sampled_from([["season", "specialty", "matched_preferred_pct"],
                        ["season", "specialty", "matched_preferred_pct", "source"],
                        ["specialty", "season"], ["x"]]))
def test_any_held_out_file_reads_or_is_refused_as_held_out_rates(tmp_path_factory, rows, header):
    """Odd structures (ragged rows, nested-looking or non-numeric cells, no rows) either read
    as a valid table or raise the table's validation error, never anything else."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    path = tmp_path_factory.mktemp("held_out") / "held_out.csv"
    path.write_text(buf.getvalue())
    try:
        out = read_held_out(path)
    except DataValidationError as err:
        assert "held_out_rates" in str(err)
    else:
        assert out["matched_preferred_pct"].between(0, 100).all()
        assert set(out["specialty"]) <= set(SPECIALTY_NAMES)
