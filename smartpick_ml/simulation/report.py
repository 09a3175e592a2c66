"""Validation report of a simulated season against the published figures it is calibrated to."""

from __future__ import annotations

import pandas as pd

from smartpick_ml.contracts.reference import (
    APPLICANT_TYPE_LABELS,
    APPLICANT_TYPES,
    MATCH_RESULTS,
    RATE_COLUMN_BY_TYPE,
    SPECIALTIES,
)


def applicant_outcomes(applicants: pd.DataFrame, applications: pd.DataFrame) -> pd.DataFrame:
    """One row per applicant and season: the applicant's row plus ``applications``,
    ``interviews`` and ``matched`` (an applicant with no application keeps a row of zeros)."""
    per_app = applications.groupby(["season", "applicant_id"]).agg(
        applications=("program_id", "size"),
        interviews=("interviewed", "sum"),
        matched=("matched", "any"))
    df = applicants.merge(per_app.reset_index(), on=["season", "applicant_id"], how="left")
    df[["applications", "interviews"]] = df[["applications", "interviews"]].fillna(0).astype(int)
    df["matched"] = df["matched"].fillna(False).astype(bool)
    return df


def match_rates_by_type(applicants: pd.DataFrame, applications: pd.DataFrame) -> pd.DataFrame:
    """Per season and applicant type: applicants, match rate, interviews and applications per
    applicant, with the published match rate beside the simulated one."""
    df = applicant_outcomes(applicants, applications)
    out = df.groupby(["season", "applicant_type"]).agg(
        applicants=("applicant_id", "size"),
        match_rate_pct=("matched", "mean"),
        interviews_per_applicant=("interviews", "mean"),
        applications_per_applicant=("applications", "mean")).reset_index()
    out["match_rate_pct"] = (100 * out["match_rate_pct"]).round(1)
    out["published_match_rate_pct"] = [
        MATCH_RESULTS.get(int(s), {}).get(t, (None, float("nan")))[1]
        for s, t in zip(out["season"], out["applicant_type"], strict=True)]
    out["difference_pp"] = (out["match_rate_pct"] - out["published_match_rate_pct"]).round(1)
    out["applicant_type"] = pd.Categorical(out["applicant_type"], categories=APPLICANT_TYPES,
                                           ordered=True)
    out = out.sort_values(["season", "applicant_type"]).reset_index(drop=True)
    out["applicant_type"] = out["applicant_type"].astype(str)
    return out[["season", "applicant_type", "applicants", "match_rate_pct",
                "published_match_rate_pct", "difference_pp", "interviews_per_applicant",
                "applications_per_applicant"]].round(2)


def unfilled_by_specialty(programs: pd.DataFrame, program_outcomes: pd.DataFrame) -> pd.DataFrame:
    df = program_outcomes.merge(programs[["program_id", "specialty"]], on="program_id")
    out = df.groupby(["season", "specialty"]).agg(positions=("positions", "sum"),
                                                  filled=("filled", "sum")).reset_index()
    out["unfilled"] = out["positions"] - out["filled"]
    out["unfilled_pct"] = (100 * out["unfilled"] / out["positions"].clip(lower=1)).round(1)
    return out


def match_rates_by_specialty(applicants: pd.DataFrame, applications: pd.DataFrame,
                             programs: pd.DataFrame, program_outcomes: pd.DataFrame
                             ) -> pd.DataFrame:
    """Per season and specialty (the one each applicant applies in): applicants, match rate,
    positions and the share filled, and the specialty's share of all positions simulated beside
    its published share (NRMP 2026 positions; no per-specialty match rate by type is published)."""
    df = applicant_outcomes(applicants, applications)
    rates = df.groupby(["season", "preferred_specialty"]).agg(
        applicants=("applicant_id", "size"), matched=("matched", "sum")).reset_index()
    rates = rates.rename(columns={"preferred_specialty": "specialty"})
    fill = unfilled_by_specialty(programs, program_outcomes)
    out = fill[["season", "specialty", "positions", "filled"]].merge(
        rates, on=["season", "specialty"], how="outer")
    out[["positions", "filled", "applicants", "matched"]] = \
        out[["positions", "filled", "applicants", "matched"]].fillna(0).astype(int)
    out["match_rate_pct"] = (100 * out["matched"] / out["applicants"].clip(lower=1)).round(1)
    out["fill_pct"] = (100 * out["filled"] / out["positions"].clip(lower=1)).round(1)
    out["applicants_per_position"] = (out["applicants"] / out["positions"].clip(lower=1)).round(2)
    total = out.groupby("season")["positions"].transform("sum").clip(lower=1)
    out["positions_share_pct"] = (100 * out["positions"] / total).round(2)
    published = {s.name: s.positions_2026 for s in SPECIALTIES}
    out["published_positions_share_pct"] = (
        100 * out["specialty"].map(published) / sum(published.values())).round(2)
    return out.sort_values(["season", "positions"], ascending=[True, False]).reset_index(drop=True)


def catalog_summary(programs: pd.DataFrame) -> pd.DataFrame:
    """Per specialty: programs, PGY-1 positions, the median interview rate of each applicant
    type (published ERAS rates in the real catalog) and the share of programs sponsoring a visa."""
    g = programs.groupby("specialty")
    out = pd.DataFrame({"programs": g.size(), "positions": g["positions"].sum()})
    for t, col in RATE_COLUMN_BY_TYPE.items():
        out[f"median interview rate: {APPLICANT_TYPE_LABELS[t]}"] = g[col].median()
    visa = [c for c in ("sponsors_j1", "sponsors_h1b") if c in programs]
    if visa:
        sponsors = programs[visa].astype("boolean").fillna(False).any(axis=1)
        out["visa_sponsor_pct"] = (100 * sponsors.groupby(programs["specialty"]).mean()).round(1)
    return out.sort_values("positions", ascending=False).reset_index()


def format_report(rates: pd.DataFrame, unfilled: pd.DataFrame) -> str:
    lines = ["# Simulated season — validation report", "",
             "## PGY-1 match rate by applicant type (simulated vs published NRMP)", "",
             "| season | applicant type | applicants | simulated % | published % | diff (pp) | "
             "interviews / applicant | applications / applicant |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rates.itertuples():
        lines.append(f"| {r.season} | {APPLICANT_TYPE_LABELS[r.applicant_type]} | {r.applicants} | "
                     f"{r.match_rate_pct:.1f} | {r.published_match_rate_pct:.1f} | "
                     f"{r.difference_pp:+.1f} | {r.interviews_per_applicant:.1f} | "
                     f"{r.applications_per_applicant:.1f} |")
    lines += ["", "## Positions and unfilled positions by specialty", "",
              "| season | specialty | positions | filled | unfilled % |", "|---|---|---|---|---|"]
    for r in unfilled.itertuples():
        lines.append(f"| {r.season} | {r.specialty} | {r.positions} | {r.filled} | "
                     f"{r.unfilled_pct:.1f} |")
    return "\n".join(lines) + "\n"
