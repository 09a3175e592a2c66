"""The embedded reference figures agree with their sources in ../shared/reference (when present)
and are internally consistent (always)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from smartpick_ml.contracts.reference import (
    ADVANCED_SHARE,
    APPLICANT_TYPE_LABELS,
    APPLICANT_TYPES,
    CATALOG_PROGRAM_COUNTS,
    CATALOG_RATE_COLUMN,
    CATALOG_SPECIALTIES,
    MATCH_RESULTS,
    PGY1_ONLY_SPECIALTIES,
    PGY1_POSITIONS,
    REGIONS,
    SEED_PROGRAMS,
    SPECIALTIES,
    SPECIALTY_BY_NAME,
    SPECIALTY_BY_STEM,
    SPECIALTY_NAMES,
    STATE_REGION,
    TRACKS,
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
    for s in CATALOG_SPECIALTIES:
        assert s.positions_year == 2026, s.name
        assert s.nrmp_name in published, f"{s.name}: NRMP name {s.nrmp_name!r} not in the file"
        assert s.positions_2026 == published[s.nrmp_name], s.name
    # every NRMP specialty we do not model is one without a catalog file
    unmapped = set(published) - {s.nrmp_name for s in CATALOG_SPECIALTIES}
    assert unmapped == {"Plastic Surgery (Integrated)", "Public Health and Preventive Medicine"}
    # the 2026 figures leave out the PGY-1-only programs: theirs are from 2025 (next test)
    assert not {s.nrmp_name for s in PGY1_ONLY_SPECIALTIES} & set(published)


def test_pgy1_only_specialties_match_the_2025_market_file():
    rows = {r["nrmp_specialty"]: r for r in _rows("specialty_market_2025.csv")}
    pgy1_rows = {name for name, r in rows.items() if r["track"] in ("preliminary", "transitional")}
    assert pgy1_rows == {s.nrmp_name for s in PGY1_ONLY_SPECIALTIES}
    for s in PGY1_ONLY_SPECIALTIES:
        r = rows[s.nrmp_name]
        assert (int(r["programs"]), int(r["positions"])) == (s.programs_2025, s.positions_2026)
        assert r["track"] == s.pgy1_track and r["catalog_specialty"] == ""
        assert s.positions_year == 2025


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
    assert len(SPECIALTIES) == 25 and len(CATALOG_SPECIALTIES) == 22
    assert len({s.code for s in SPECIALTIES}) == 25
    assert len(SPECIALTY_BY_NAME) == len(SPECIALTY_NAMES) == 25
    assert len(SPECIALTY_BY_STEM) == 22
    assert set(SPECIALTY_BY_STEM.values()) == set(CATALOG_SPECIALTIES)
    assert set(CATALOG_PROGRAM_COUNTS) == {s.name for s in CATALOG_SPECIALTIES}
    assert sum(CATALOG_PROGRAM_COUNTS.values()) == 4777
    for s in CATALOG_SPECIALTIES:
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


def test_pgy1_only_specialties():
    # appended after the 22 catalog specialties: every existing index is unchanged
    assert SPECIALTIES[:22] == CATALOG_SPECIALTIES
    assert SPECIALTIES[22:] == PGY1_ONLY_SPECIALTIES
    got = {s.name: (s.code, s.nrmp_name, s.positions_2026, s.programs_2025, s.pgy1_track, s.host,
                    s.signal_scheme, s.catalog_stem) for s in PGY1_ONLY_SPECIALTIES}
    assert got == {
        "Preliminary Medicine": ("PMED", "Medicine-Preliminary (PGY-1 Only)", 1600, 329,
                                 "preliminary", "Internal Medicine", "none", None),
        "Preliminary Surgery": ("PSUR", "Surgery-Preliminary (PGY-1 Only)", 1194, 261,
                                "preliminary", "General Surgery", "none", None),
        "Transitional Year": ("TY", "Transitional (PGY-1 Only)", 1860, 236, "transitional",
                              "Internal Medicine", "none", None),
    }
    for s in PGY1_ONLY_SPECIALTIES:
        assert not s.has_catalog_file
        assert s.host in CATALOG_PROGRAM_COUNTS
        # the host has programs enough, and positions give each placed program one (≤ 300)
        assert s.programs_2025 <= CATALOG_PROGRAM_COUNTS[s.host]
        assert s.programs_2025 <= s.positions_2026 <= 300 * s.programs_2025
    for s in CATALOG_SPECIALTIES:
        assert s.has_catalog_file and s.pgy1_track is None and s.host is None


def test_tracks_and_advanced_share():
    assert TRACKS == ("categorical", "advanced", "preliminary", "transitional")
    assert set(ADVANCED_SHARE) == {s.name for s in CATALOG_SPECIALTIES}
    assert all(0.0 <= v < 1.0 for v in ADVANCED_SHARE.values())
    advanced = {k: v for k, v in ADVANCED_SHARE.items() if v > 0}
    assert advanced == pytest.approx({
        "Anesthesiology": 311 / 2116, "Child Neurology": 8 / 203, "Dermatology": 524 / 554,
        "Interventional Radiology": 150 / 202, "Neurology": 228 / 1160,
        "Physical Medicine and Rehabilitation": 334 / 574, "Diagnostic Radiology": 1057 / 1208,
        "Radiation Oncology": 179 / 191})
    # the host specialties of the PGY-1-only programs offer no advanced positions
    assert all(ADVANCED_SHARE[s.host] == 0 for s in PGY1_ONLY_SPECIALTIES)


def test_advanced_share_denominators_match_the_2025_market_file():
    """The shares' denominators are the specialties' 2025 positions (Radiation Oncology: the
    market file lists only its 179 PGY-2 positions; NRMP adds 12 PGY-1)."""
    rows = {r["catalog_specialty"]: int(r["positions"]) for r in _rows(
        "specialty_market_2025.csv") if r["catalog_specialty"] and r["track"] == "categorical"}
    denominators = {"Anesthesiology": 2116, "Child Neurology": 203, "Dermatology": 554,
                    "Interventional Radiology": 202, "Neurology": 1160,
                    "Physical Medicine and Rehabilitation": 574, "Diagnostic Radiology": 1208,
                    "Radiation Oncology": 179 + 12}
    for name, d in denominators.items():
        stem = SPECIALTY_BY_NAME[name].catalog_stem
        expected = rows[stem] + (12 if name == "Radiation Oncology" else 0)
        assert d == expected, name
