"""Data contracts: the three tables every stage reads and writes.

Each table is declared once, as a :class:`TableSchema` of :class:`ColumnSpec` s (meaning, type,
unit, allowed values), plus table-level rules. :func:`validate` checks a DataFrame against it,
vectorised so that millions of application rows validate in well under a second, and raises one
:class:`~smartpick_ml.contracts.errors.DataValidationError`
that names the table, the column, the rule and the
first offending rows. Nothing is coerced silently: a column of the wrong type is an error, never a
cast.
``docs/schemas.md`` is generated from these declarations (``smartpick schemas``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from smartpick_ml.contracts.columns import ColumnSpec, RowRule, check_series, name_list, rows_text
from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.reference import (
    APPLICANT_TYPES,
    REGIONS,
    SPECIALTY_NAMES,
    STATE_REGION,
    TRACKS,
)

SIGNAL_VALUES: tuple[str, ...] = ("none", "signal", "gold", "silver")
PROGRAM_TYPES: tuple[str, ...] = ("university", "community")
STEP2_MIN, STEP2_MAX = 150, 300


TableRule = Callable[[pd.DataFrame], tuple[pd.Series, str] | None]


@dataclass(frozen=True)
class TableSchema:
    """A table's columns, its key and its cross-column rules."""

    name: str
    description: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]
    rules: tuple[TableRule, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _rate(name: str, who: str, required: bool = True) -> ColumnSpec:
    return ColumnSpec(name, "float", f"Share of {who} applicants to this program who were invited "
                      "to interview (ERAS 2024); null where suppressed (too few applicants).",
                      unit="fraction", nullable=True, required=required, min=0.0, max=1.0)


PROGRAMS = TableSchema(
    name="programs",
    description="One row per residency program (a specialty at an institution).",
    key=("program_id",),
    columns=(
        ColumnSpec("program_id", "str", "Stable program identifier, e.g. `IM-0042`."),
        ColumnSpec("name", "str", "Program name as published (unique within a specialty)."),
        ColumnSpec("specialty", "str", "Specialty (canonical name).", allowed=SPECIALTY_NAMES),
        ColumnSpec("city", "str", "City of the program's main site."),
        ColumnSpec("state", "str", "US state or territory, two-letter code.",
                   allowed=tuple(STATE_REGION)),
        ColumnSpec("region", "str", "US Census division.", allowed=REGIONS),
        ColumnSpec("positions", "int", "Positions offered in the Main Match (their first year: "
                   "PGY-2 at an advanced program).",
                   unit="positions", min=1, max=300),
        ColumnSpec("program_type", "str", "University-based or community-based.",
                   allowed=PROGRAM_TYPES),
        ColumnSpec("track", "str", "Match track: `categorical` (PGY-1 through the full residency), "
                   "`advanced` (starts at PGY-2; the applicant also needs a PGY-1 year), "
                   "`preliminary` (a PGY-1 year in medicine or surgery) or `transitional` (a "
                   "rotating PGY-1 year). Derived (simulated): the advanced flag is drawn at the "
                   "specialty's published advanced share, and preliminary / transitional "
                   "programs are placed at host programs. Absent in older catalogs: categorical.",
                   required=False, allowed=TRACKS),
        _rate("rate_us_md", "US MD senior"),
        _rate("rate_us_do", "US DO senior"),
        _rate("rate_us_img", "US-citizen IMG"),
        _rate("rate_non_us_img", "non-US-citizen IMG"),
        _rate("rate_in_state", "in-state-school", required=False),
        _rate("rate_out_of_state", "out-of-state-school", required=False),
        _rate("rate_signal", "signalling (single-signal specialties)", required=False),
        _rate("rate_gold_signal", "gold-signalling", required=False),
        _rate("rate_silver_signal", "silver-signalling", required=False),
        _rate("rate_no_signal", "non-signalling", required=False),
        ColumnSpec("sponsors_j1", "bool", "Accepts residents on an ECFMG-sponsored J-1 visa.",
                   nullable=True, required=False),
        ColumnSpec("sponsors_h1b", "bool", "Sponsors H-1B visas.", nullable=True, required=False),
        ColumnSpec("military", "bool", "A uniformed-services program (Army, Navy, Air Force, the "
                   "military consortia): fills through the military match, closed to civilian "
                   "applicants; derived from the program's name.", nullable=True, required=False),
        ColumnSpec("img_share", "float", "Share of current residents who are IMGs.",
                   unit="fraction", nullable=True, required=False, min=0.0, max=1.0),
        ColumnSpec("img_mentorship", "bool", "Has a structured mentorship programme for IMGs.",
                   nullable=True, required=False),
        ColumnSpec("img_orientation", "bool", "Has an IMG-specific orientation / onboarding.",
                   nullable=True, required=False),
        ColumnSpec("step2_minimum", "float", "Published minimum USMLE Step 2 CK score for an "
                   "interview (FREIDA lists it); null where the program states none.",
                   unit="points", nullable=True, required=False, min=STEP2_MIN, max=STEP2_MAX),
        ColumnSpec("max_years_since_graduation", "float", "Longest time since medical-school "
                   "graduation the program accepts (FREIDA's graduation cut-off); null where "
                   "none.", unit="years", nullable=True, required=False, min=0.0, max=60.0),
    ),
)


#: An applicant's row rules: the batch validator, a served request, ``predict`` and an applicant
#: profile all check these.
VISA_ONLY_FOR_NON_US_IMG = RowRule(
    "needs_visa", ("needs_visa", "applicant_type"),
    "only non_us_img applicants can need a visa (US citizens do not)",
    lambda needs_visa, applicant_type: (needs_visa == 1.0) & (applicant_type != "non_us_img"))
GRADUATION_NOT_AFTER_SEASON = RowRule(
    "graduation_year", ("graduation_year", "season"),
    "must not be after the season (Match year)",
    lambda graduation_year, season: graduation_year > season)
APPLICANT_ROW_RULES: tuple[RowRule, ...] = (VISA_ONLY_FOR_NON_US_IMG, GRADUATION_NOT_AFTER_SEASON)


APPLICANTS = TableSchema(
    name="applicants",
    description="One row per applicant and season. Never logged: these are personal data.",
    key=("applicant_id", "season"),
    columns=(
        ColumnSpec("applicant_id", "str", "Pseudonymous applicant identifier."),
        ColumnSpec("season", "int", "Match year (the spring the Match is run).", unit="year",
                   min=2000, max=2100),
        ColumnSpec("applicant_type", "str", "US MD senior, US DO senior, US-citizen IMG or "
                   "non-US-citizen IMG.", allowed=APPLICANT_TYPES),
        ColumnSpec("step2_ck", "int", "USMLE Step 2 CK score (first attempt).", unit="points",
                   min=STEP2_MIN, max=STEP2_MAX),
        ColumnSpec("graduation_year", "int", "Year of medical-school graduation (expected, for "
                   "seniors).", unit="year", min=1950, max=2100),
        ColumnSpec("usce_months", "int", "Months of hands-on US clinical experience.",
                   unit="months", min=0, max=240),
        ColumnSpec("publications", "int", "Peer-reviewed publications, abstracts and posters.",
                   unit="count", min=0, max=1000),
        ColumnSpec("applications", "int", "Programs the applicant applies to this season, all "
                   "specialties (interviews beyond what one can attend dilute each one); null or "
                   "absent: counted from the applications table, else the type's typical number.",
                   unit="count", min=1, max=2000, nullable=True, required=False),
        ColumnSpec("needs_visa", "bool", "Needs a J-1 or H-1B visa to train (non-US IMGs only)."),
        ColumnSpec("home_state", "str", "State of legal residence or medical school; null if "
                   "none in the US.", nullable=True, allowed=tuple(STATE_REGION)),
        ColumnSpec("preferred_specialty", "str", "Specialty the applicant prefers: their "
                   "programs come first on the rank list.", allowed=SPECIALTY_NAMES),
        ColumnSpec("backup_specialty", "str", "A second specialty the applicant ranks below the "
                   "preferred one; null if none.", nullable=True, required=False,
                   allowed=SPECIALTY_NAMES),
    ),
    rules=APPLICANT_ROW_RULES,
)


#: The applicant's rank lists (NRMP): the primary list, and a supplemental list of PGY-1 programs.
RANK_LISTS: tuple[str, ...] = ("primary", "supplemental")


def _matched_implies_interviewed(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "matched" not in df or "interviewed" not in df:
        return None
    bad = df["matched"].fillna(False).astype(bool) & ~df["interviewed"].fillna(True).astype(bool)
    return bad, "matched: a program can only match an applicant it interviewed"


def _ranked_implies_interviewed(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "rank_position" not in df or "interviewed" not in df:
        return None
    bad = df["rank_position"].notna() & ~df["interviewed"].fillna(True).astype(bool)
    return bad, "rank_position: an applicant can only rank programs that interviewed them"


def _one_match_per_applicant(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    if "matched" not in df:
        return None
    m = df["matched"].fillna(False).astype(bool)
    lists = (df["rank_list"].fillna("primary") if "rank_list" in df
             else pd.Series("primary", index=df.index))
    counts = m.groupby([df["applicant_id"], df["season"], lists]).transform("sum")
    return ((counts > 1) & m, "matched: an applicant matches at most one program per season "
            "and rank list")


APPLICATIONS = TableSchema(
    name="applications",
    description="One row per application (applicant × program × season) with outcomes where known.",
    key=("applicant_id", "program_id", "season"),
    columns=(
        ColumnSpec("applicant_id", "str", "Applicant (→ applicants.applicant_id)."),
        ColumnSpec("program_id", "str", "Program (→ programs.program_id)."),
        ColumnSpec("season", "int", "Match year.", unit="year", min=2000, max=2100),
        ColumnSpec("signal", "str", "Preference signal sent with the application.",
                   required=False, allowed=SIGNAL_VALUES),
        ColumnSpec("rank_list", "str", "The applicant's list holding the application: primary, "
                   "or supplemental (PGY-1 programs for an applicant to advanced positions, used "
                   "only if they match one).", required=False, allowed=RANK_LISTS),
        ColumnSpec("interviewed", "bool", "The program invited the applicant to interview.",
                   nullable=True, required=False),
        ColumnSpec("rank_position", "int", "Position of the program on the applicant's rank "
                   "order list (1 = first choice); null if not ranked.", nullable=True,
                   required=False, min=1, max=500),
        ColumnSpec("matched", "bool", "The applicant matched at this program.", nullable=True,
                   required=False),
        ColumnSpec("would_take", "int", "Training label: 1 if the program would take the applicant "
                   "had they ranked it first, 0 if not, null if unknown (censored).",
                   nullable=True, required=False, min=0, max=1),
    ),
    rules=(_matched_implies_interviewed, _ranked_implies_interviewed, _one_match_per_applicant),
)


#: Published per-specialty outcomes of non-US IMGs that the simulation is judged against but not
#: calibrated to (kept out of ``../shared``), read by ``smartpick season-report --held-out``. Not a
#: table the pipeline reads or writes, so not in :data:`SCHEMAS`.
HELD_OUT_RATES = TableSchema(
    name="held_out_rates",
    description="One row per season and specialty: the published share of non-US IMGs who "
                "preferred the specialty (ranked it first) and matched in it.",
    key=("season", "specialty"),
    columns=(
        ColumnSpec("season", "int", "Match year.", unit="year", min=2000, max=2100),
        ColumnSpec("specialty", "str", "Preferred specialty (canonical name).",
                   allowed=SPECIALTY_NAMES),
        ColumnSpec("matched_preferred_pct", "float", "Published share of the season's non-US "
                   "IMGs preferring the specialty who matched in it.", unit="%", min=0.0,
                   max=100.0),
        ColumnSpec("source", "str", "Where the figure is published.", nullable=True,
                   required=False),
    ),
)

SCHEMAS: dict[str, TableSchema] = {s.name: s for s in (PROGRAMS, APPLICANTS, APPLICATIONS)}


def validate(df: pd.DataFrame, schema: TableSchema | str, *, allow_extra: bool = True
             ) -> pd.DataFrame:
    """Validate ``df`` against ``schema`` and return it with canonical dtypes.

    Raises :class:`DataValidationError` listing every broken rule with the first offending rows.
    Optional columns that are absent are left absent; extra columns are kept unless
    ``allow_extra`` is false.
    """
    schema = SCHEMAS[schema] if isinstance(schema, str) else schema
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(schema.name, [f"expected a pandas DataFrame, got "
                                                f"{type(df).__name__}"])
    problems: list[str] = []
    if len(df) == 0:
        raise DataValidationError(schema.name, ["the table is empty (no rows)"])
    if df.columns.duplicated().any():
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise DataValidationError(schema.name, [f"duplicate column names: {dup[:10]}"])
    missing = [c.name for c in schema.columns if c.required and c.name not in df.columns]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    extra = [c for c in df.columns if c not in schema.column_names]
    if extra and not allow_extra:
        problems.append(f"unknown column(s): {name_list(extra)}")
    out = df.reset_index(drop=True) if not df.index.equals(pd.RangeIndex(len(df))) else df.copy()
    for spec in schema.columns:
        if spec.name not in out.columns:
            continue
        col_problems, canonical = check_series(spec, out[spec.name])
        problems.extend(col_problems)
        if not col_problems:
            out[spec.name] = canonical
    if problems:
        raise DataValidationError(schema.name, problems)
    key = list(schema.key)
    dup = out.duplicated(key, keep="first")
    if dup.any():
        problems.append(f"key ({', '.join(key)}) must be unique; duplicated at "
                        f"{rows_text(out.index[dup])}")
    for rule in schema.rules:
        result = rule(out)
        if result is None:
            continue
        bad, text = result
        if bad.any():
            problems.append(f"{text}; broken at {rows_text(out.index[bad.to_numpy()])}")
    if problems:
        raise DataValidationError(schema.name, problems)
    ordered = [c for c in schema.column_names if c in out.columns]
    return out[ordered + [c for c in out.columns if c not in ordered]]


def schema_markdown(schema: TableSchema) -> str:
    """The contract as a Markdown table (for ``docs/schemas.md``)."""
    lines = [f"### `{schema.name}`", "", schema.description, "",
             f"Key: `{', '.join(schema.key)}`", "",
             "| column | type | required | nullable | unit | allowed | meaning |",
             "|---|---|---|---|---|---|---|"]
    for c in schema.columns:
        lines.append(f"| `{c.name}` | {c.kind} | {'yes' if c.required else 'no'} | "
                     f"{'yes' if c.nullable else 'no'} | {c.unit} | {c.rule_text()} | "
                     f"{c.description} |")
    return "\n".join(lines)
