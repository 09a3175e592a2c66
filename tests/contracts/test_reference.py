"""The embedded reference figures agree with their sources in ../shared/reference (when present)
and are internally consistent (always)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from smartpick_ml.contracts.reference import (
    APPLICANT_TYPE_LABELS,
    APPLICANT_TYPES,
    CATALOG_PROGRAM_COUNTS,
    CATALOG_RATE_COLUMN,
    MATCH_RESULTS,
    PGY1_POSITIONS,
    REGIONS,
    SEED_PROGRAMS,
    SPECIALTIES,
    SPECIALTY_BY_NAME,
    SPECIALTY_BY_STEM,
    STATE_REGION,
)

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
#: applicant_type spelling in match_results_by_applicant_type.csv -> ours
TYPE_IN_FILE = {"US_MD_senior": "us_md_senior", "US_DO_senior": "us_do_senior",
                "US_citizen_IMG": "us_img", "non_US_citizen_IMG": "non_us_img"}


def _rows(name: str) -> list[dict[str, str]]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference file not present: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------- against ../shared/reference


def test_positions_match_nrmp_file():
    published = {r["specialty"]: int(r["positions_2026"]) for r in _rows(
        "positions_by_specialty.csv")}
    for s in SPECIALTIES:
        assert s.nrmp_name in published, f"{s.name}: NRMP name {s.nrmp_name!r} not in the file"
        assert s.positions_2026 == published[s.nrmp_name], s.name
    # every NRMP specialty we do not model is one without a catalog file
    unmapped = set(published) - {s.nrmp_name for s in SPECIALTIES}
    assert unmapped == {"Plastic Surgery (Integrated)", "Public Health and Preventive Medicine"}


@pytest.mark.parametrize("season", sorted(MATCH_RESULTS))
def test_match_results_match_file(season):
    rows = [r for r in _rows("match_results_by_applicant_type.csv") if int(r["year"]) == season]
    assert {TYPE_IN_FILE[r["applicant_type"]] for r in rows} == set(APPLICANT_TYPES)
    for r in rows:
        applicants, rate = MATCH_RESULTS[season][TYPE_IN_FILE[r["applicant_type"]]]
        expected_n = int(r["active_applicants"]) if r["active_applicants"] else None
        assert applicants == expected_n, (season, r["applicant_type"])
        assert rate == pytest.approx(float(r["match_rate_pct"])), (season, r["applicant_type"])


def test_match_results_2025_fully_published():
    rows = _rows("match_results_by_applicant_type.csv")
    got = {TYPE_IN_FILE[r["applicant_type"]]: (int(r["active_applicants"]),
                                                float(r["match_rate_pct"]))
           for r in rows if r["year"] == "2025"}
    assert got == MATCH_RESULTS[2025]
    # matched / applicants agrees with the rate (to the published rounding)
    for r in rows:
        if r["year"] == "2025":
            assert 100 * int(r["matched_pgy1"]) / int(r["active_applicants"]) == pytest.approx(
                float(r["match_rate_pct"]), abs=0.05)


def test_pgy1_positions_match_totals_file():
    published = {int(r["year"]): int(r["pgy1_positions"]) for r in _rows("match_totals.csv")
                 if r["pgy1_positions"]}
    for year, n in PGY1_POSITIONS.items():
        assert published[year] == n, year


# ---------------------------------------------------------------------------- consistency


def test_specialty_tables_consistent():
    assert len(SPECIALTIES) == 22
    assert len({s.code for s in SPECIALTIES}) == 22
    assert len(SPECIALTY_BY_NAME) == len(SPECIALTY_BY_STEM) == 22
    assert set(CATALOG_PROGRAM_COUNTS) == set(SPECIALTY_BY_NAME)
    assert sum(CATALOG_PROGRAM_COUNTS.values()) == 4777
    for s in SPECIALTIES:
        # at least one position per program, and programs stay within the 300-position bound
        assert CATALOG_PROGRAM_COUNTS[s.name] <= s.positions_2026 <= 300 * CATALOG_PROGRAM_COUNTS[
            s.name]


def test_types_and_regions_consistent():
    assert set(APPLICANT_TYPE_LABELS) == set(CATALOG_RATE_COLUMN) == set(APPLICANT_TYPES)
    assert len(STATE_REGION) == 52  # 50 states + DC + PR
    assert len(REGIONS) == 9
    for name, _city, state, specialty in SEED_PROGRAMS:
        assert state in STATE_REGION and specialty in SPECIALTY_BY_NAME, name
    for season, by_type in MATCH_RESULTS.items():
        assert set(by_type) == set(APPLICANT_TYPES), season
        assert all(0 < rate < 100 for _, rate in by_type.values())
