"""The season report counts applicants as the NRMP does: active applicants (who ranked a program),
each once, whatever number of positions they matched to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.simulation.report import (
    applicant_outcomes,
    backup_lists_by_type,
    chance_within,
    match_rates_by_type,
    preferred_specialty_outcomes,
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
