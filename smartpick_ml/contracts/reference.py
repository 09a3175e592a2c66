"""Published reference figures the package needs on a bare clone, each with its source.

These are public aggregate figures (not the MIT-licensed catalog in ``../shared/data/``), embedded
so that the synthetic default runs without ``../shared``. ``tests/contracts/test_reference.py``
checks them against the copies in ``../shared/reference/`` whenever that folder is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ApplicantType = Literal["us_md_senior", "us_do_senior", "us_img", "non_us_img"]

#: Per applicant type, in the order used everywhere (arrays, tables, reports): its label, the
#: catalog column of its interview rate, and the programs-table column holding it.
_APPLICANT_TYPE_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("us_md_senior", "US MD senior", "MD", "rate_us_md"),
    ("us_do_senior", "US DO senior", "DO", "rate_us_do"),
    ("us_img", "US-citizen IMG", "US IMG", "rate_us_img"),
    ("non_us_img", "Non-US IMG", "Non US IMG", "rate_non_us_img"),
)
APPLICANT_TYPES: tuple[str, ...] = tuple(row[0] for row in _APPLICANT_TYPE_TABLE)
APPLICANT_TYPE_LABELS: dict[str, str] = {row[0]: row[1] for row in _APPLICANT_TYPE_TABLE}
CATALOG_RATE_COLUMN: dict[str, str] = {row[0]: row[2] for row in _APPLICANT_TYPE_TABLE}
RATE_COLUMN_BY_TYPE: dict[str, str] = {row[0]: row[3] for row in _APPLICANT_TYPE_TABLE}

SignalScheme = Literal["none", "single", "gold_silver"]

#: A program's track in the Match. categorical: PGY-1 through the full residency; advanced: starts
#: at PGY-2 (the applicant also needs a PGY-1 year elsewhere); preliminary: one PGY-1 year in
#: medicine or surgery; transitional: a one-year rotating PGY-1 (Transitional Year).
Track = Literal["categorical", "advanced", "preliminary", "transitional"]
TRACKS: tuple[str, ...] = ("categorical", "advanced", "preliminary", "transitional")


@dataclass(frozen=True)
class Specialty:
    """One specialty: its canonical name, catalog file stem, NRMP name and positions.

    ``positions_2026`` is the NRMP 2026 figure for a catalog specialty; NRMP's 2026 figures leave
    out the PGY-1-only programs, so for those it is the 2025 figure (``positions_year`` says which).
    A PGY-1-only specialty (``pgy1_track`` set) has no catalog file (``catalog_stem`` None): its
    programs are derived from programs of its ``host`` specialty, ``programs_2025`` of them.
    """

    name: str
    code: str
    catalog_stem: str | None
    nrmp_name: str
    positions_2026: int
    signal_scheme: SignalScheme
    pgy1_track: Track | None = None
    host: str | None = None
    programs_2025: int | None = None
    positions_year: int = 2026

    @property
    def has_catalog_file(self) -> bool:
        return self.catalog_stem is not None


# positions_2026: NRMP 2026 Main Residency Match, positions offered in the preferred specialty
# (NRMP Charting Outcomes 2026; ../shared/reference/positions_by_specialty.csv); the PGY-1-only
# entries at the end carry the 2025 figures (see there).
# signal_scheme: read off the catalog's columns (ERAS 2024 season): `Signal`/`No Signal` = single,
# `Gold Signal`/`Silver Signal`/`No Signal` = gold_silver.
SPECIALTIES: tuple[Specialty, ...] = (
    Specialty("Anatomic and Clinical Pathology", "PATH", "Anatomic and Clinical Pathology",
              "Pathology-Anatomic and Clinical", 636, "single"),
    Specialty("Anesthesiology", "ANES", "Anesthesiology", "Anesthesiology", 2290, "gold_silver"),
    Specialty("Child Neurology", "CHNR", "Child Neurology", "Child Neurology", 243, "single"),
    Specialty("Dermatology", "DERM", "Dermatology", "Dermatology", 602, "gold_silver"),
    Specialty("Diagnostic Radiology", "DRAD", "Diagnostic Radiology", "Radiology-Diagnostic", 1268,
              "gold_silver"),
    Specialty("Emergency Medicine", "EM", "Emergency Medicine", "Emergency Medicine", 3198, "none"),
    Specialty("Family Medicine", "FM", "Family Medicine", "Family Medicine", 5491, "single"),
    Specialty("General Surgery", "GS", "General Surgery", "Surgery-General", 1807, "none"),
    Specialty("Internal Medicine-Pediatrics", "MPED", "IM Peds", "Internal Medicine/Pediatrics",
              404, "none"),
    Specialty("Internal Medicine", "IM", "Internal Medicine", "Internal Medicine", 11632, "none"),
    Specialty("Interventional Radiology", "IR", "Interventional Radiology",
              "Interventional Radiology (Integrated)", 245, "gold_silver"),
    Specialty("Neurological Surgery", "NSGY", "Neurological Surgery", "Neurological Surgery", 280,
              "single"),
    Specialty("Neurology", "NEUR", "Neurology", "Neurology", 1260, "none"),
    Specialty("Obstetrics and Gynecology", "OBGY", "Obstetrics and Gynecology",
              "Obstetrics and Gynecology", 1638, "gold_silver"),
    Specialty("Orthopaedic Surgery", "ORTH", "Orthopedic Surgery", "Orthopaedic Surgery", 963,
              "single"),
    Specialty("Otolaryngology", "ENT", "Otolaryngology", "Otolaryngology", 403, "single"),
    Specialty("Physical Medicine and Rehabilitation", "PMR", "PM&R",
              "Physical Medicine and Rehabilitation", 601, "none"),
    Specialty("Pediatrics", "PEDS", "Pediatrics", "Pediatrics", 3185, "single"),
    Specialty("Psychiatry", "PSY", "Psychiatry", "Psychiatry", 2516, "none"),
    Specialty("Radiation Oncology", "RONC", "Rad Onc", "Radiation Oncology", 187, "none"),
    Specialty("Thoracic Surgery", "TS", "Thoracic Surgery", "Thoracic Surgery (Integrated)", 56,
              "single"),
    Specialty("Vascular Surgery", "VS", "Vasc Surg", "Vascular Surgery (Integrated)", 110, "none"),
    # PGY-1-only programs: no catalog file; derived from programs of the host specialty
    # (data/catalog.py, derive_pgy1_programs). Programs and positions: NRMP 2025 Main Residency
    # Match (../shared/reference/specialty_market_2025.csv; docs/nrmp_2025_by_specialty_and_type.md
    # Part 1). Appended last, so the index of every specialty above is unchanged.
    Specialty("Preliminary Medicine", "PMED", None, "Medicine-Preliminary (PGY-1 Only)", 1600,
              "none", pgy1_track="preliminary", host="Internal Medicine", programs_2025=329,
              positions_year=2025),
    Specialty("Preliminary Surgery", "PSUR", None, "Surgery-Preliminary (PGY-1 Only)", 1194,
              "none", pgy1_track="preliminary", host="General Surgery", programs_2025=261,
              positions_year=2025),
    Specialty("Transitional Year", "TY", None, "Transitional (PGY-1 Only)", 1860, "none",
              pgy1_track="transitional", host="Internal Medicine", programs_2025=236,
              positions_year=2025),
)

#: The specialties with a catalog file (one CSV each), and the PGY-1-only ones derived from them.
CATALOG_SPECIALTIES: tuple[Specialty, ...] = tuple(s for s in SPECIALTIES if s.has_catalog_file)
PGY1_ONLY_SPECIALTIES: tuple[Specialty, ...] = tuple(
    s for s in SPECIALTIES if not s.has_catalog_file)

SPECIALTY_BY_NAME: dict[str, Specialty] = {s.name: s for s in SPECIALTIES}
SPECIALTY_BY_STEM: dict[str, Specialty] = {
    s.catalog_stem: s for s in CATALOG_SPECIALTIES if s.catalog_stem is not None}
SPECIALTY_NAMES: tuple[str, ...] = tuple(s.name for s in SPECIALTIES)

#: Preference signals per applicant and tier (ERAS 2024 season, AAMC "Preference Signaling"
#: pages), for the specialties whose catalog files carry signal columns: a ``single`` scheme
#: has ``signal`` only, a ``gold_silver`` one ``gold`` and ``silver``. The simulation draws
#: applicants' signals within them; ``rank`` and ``plan`` refuse a profile that exceeds them.
SIGNAL_ALLOTMENTS: dict[str, dict[str, int]] = {
    "Anatomic and Clinical Pathology": {"signal": 5},
    "Child Neurology": {"signal": 5},
    "Family Medicine": {"signal": 5},
    "Neurological Surgery": {"signal": 30},
    "Orthopaedic Surgery": {"signal": 30},
    "Otolaryngology": {"signal": 25},
    "Pediatrics": {"signal": 5},
    "Thoracic Surgery": {"signal": 10},
    "Anesthesiology": {"gold": 5, "silver": 10},
    "Dermatology": {"gold": 3, "silver": 25},
    "Diagnostic Radiology": {"gold": 4, "silver": 12},
    "Interventional Radiology": {"gold": 3, "silver": 12},
    "Obstetrics and Gynecology": {"gold": 3, "silver": 15},
}
CATALOG_SPECIALTY_NAMES: tuple[str, ...] = tuple(s.name for s in CATALOG_SPECIALTIES)

#: Share of a catalog specialty's 2025 positions that are advanced (start at PGY-2): PGY-2
#: positions / (PGY-1 + PGY-2 positions), NRMP 2025 "Match Results by State, Specialty and
#: Applicant Type" summed over states (docs/nrmp_2025_by_specialty_and_type.md, Part 1). Radiation
#: Oncology: 12 PGY-1 + 179 PGY-2 positions. Every other catalog specialty offers none.
ADVANCED_SHARE: dict[str, float] = {
    **dict.fromkeys(CATALOG_SPECIALTY_NAMES, 0.0),
    "Anesthesiology": 311 / 2116,
    "Child Neurology": 8 / 203,
    "Dermatology": 524 / 554,
    "Interventional Radiology": 150 / 202,
    "Neurology": 228 / 1160,
    "Physical Medicine and Rehabilitation": 334 / 574,
    "Diagnostic Radiology": 1057 / 1208,
    "Radiation Oncology": 179 / 191,
}

#: Programs per catalog specialty in the real catalog (ERAS 2024 interview-rate files, 4,777 in
#: all); the synthetic catalog reproduces these counts. The PGY-1-only programs derived from them
#: come on top (``Specialty.programs_2025``).
CATALOG_PROGRAM_COUNTS: dict[str, int] = {
    "Anatomic and Clinical Pathology": 141, "Anesthesiology": 166, "Child Neurology": 80,
    "Dermatology": 143, "Diagnostic Radiology": 197, "Emergency Medicine": 289,
    "Family Medicine": 777, "General Surgery": 364, "Internal Medicine-Pediatrics": 77,
    "Internal Medicine": 649, "Interventional Radiology": 98, "Neurological Surgery": 118,
    "Neurology": 187, "Obstetrics and Gynecology": 295, "Orthopaedic Surgery": 208,
    "Otolaryngology": 131, "Physical Medicine and Rehabilitation": 108, "Pediatrics": 217,
    "Psychiatry": 330, "Radiation Oncology": 88, "Thoracic Surgery": 36, "Vascular Surgery": 78,
}

#: US states (50 + DC + PR) with their Census division, as the catalog's `Region` column names them.
STATE_REGION: dict[str, str] = {
    **dict.fromkeys(["CT", "ME", "MA", "NH", "RI", "VT"], "New England"),
    **dict.fromkeys(["NJ", "NY", "PA"], "Middle Atlantic"),
    **dict.fromkeys(["IL", "IN", "MI", "OH", "WI"], "East North Central"),
    **dict.fromkeys(["IA", "KS", "MN", "MO", "NE", "ND", "SD"], "West North Central"),
    **dict.fromkeys(["DE", "DC", "FL", "GA", "MD", "NC", "SC", "VA", "WV", "PR"], "South Atlantic"),
    **dict.fromkeys(["AL", "KY", "MS", "TN"], "East South Central"),
    **dict.fromkeys(["AR", "LA", "OK", "TX"], "West South Central"),
    **dict.fromkeys(["AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY"], "Mountain"),
    **dict.fromkeys(["AK", "CA", "HI", "OR", "WA"], "Pacific"),
}
REGIONS: tuple[str, ...] = tuple(dict.fromkeys(STATE_REGION.values()))

#: The five programs the product brief names (../shared/seed/), as the catalog spells them, with
#: the specialty used when the synthetic catalog has to create them.
SEED_PROGRAMS: tuple[tuple[str, str, str, str], ...] = (
    ("University of Southern California/Los Angeles General Medical Center (USC/LA General) "
     "Program", "Los Angeles", "CA", "Internal Medicine"),
    ("Brooklyn Hospital Center Program", "Brooklyn", "NY", "Internal Medicine"),
    ("NYU Grossman School of Medicine Program", "New York", "NY", "Internal Medicine"),
    ("Cleveland Clinic Foundation Program", "Cleveland", "OH", "Internal Medicine"),
    ("University of Illinois College of Medicine at Chicago Program", "Chicago", "IL",
     "Internal Medicine"),
)

#: A typical applicant's USMLE Step 2 CK score: what an explanation compares the applicant's own
#: score against, and a program's typical interviewee when nothing better is known. Between the
#: mean of US MD first-takers (~249) and the median of IMGs who matched in 2026 (248) and of those
#: who did not (242): ../shared/README.md.
TYPICAL_STEP2_CK = 245

#: Main Residency Match PGY-1 results by applicant type (../shared/reference/
#: match_results_by_applicant_type.csv; NRMP / Intealth releases cited there). None = not published.
MATCH_RESULTS: dict[int, dict[str, tuple[int | None, float]]] = {
    # season: type -> (active applicants, PGY-1 match rate %)
    2025: {"us_md_senior": (20368, 93.5), "us_do_senior": (8392, 92.6),
           "us_img": (4587, 67.8), "non_us_img": (11465, 58.0)},
    2024: {"us_md_senior": (None, 93.5), "us_do_senior": (None, 92.3),
           "us_img": (4748, 67.0), "non_us_img": (10024, 58.5)},
    2023: {"us_md_senior": (None, 93.7), "us_do_senior": (None, 91.6),
           "us_img": (4964, 67.6), "non_us_img": (8471, 59.4)},
}

#: PGY-1 positions in the Main Match (../shared/reference/match_totals.csv; NRMP releases).
PGY1_POSITIONS: dict[int, int] = {2023: 37425, 2024: 38494, 2025: 40041}
