"""Validation report of a simulated season against the published figures it is calibrated to."""

from __future__ import annotations

import pandas as pd

from smartpick_ml.reference import APPLICANT_TYPE_LABELS, APPLICANT_TYPES, MATCH_RESULTS


def match_rates_by_type(applicants: pd.DataFrame, applications: pd.DataFrame) -> pd.DataFrame:
    """Per season and applicant type: applicants, match rate, interviews and applications per
    applicant, with the published match rate beside the simulated one."""
    per_app = applications.groupby(["season", "applicant_id"]).agg(
        applications=("program_id", "size"),
        interviews=("interviewed", "sum"),
        matched=("matched", "any"))
    df = applicants.merge(per_app.reset_index(), on=["season", "applicant_id"], how="left")
    df[["applications", "interviews"]] = df[["applications", "interviews"]].fillna(0)
    df["matched"] = df["matched"].fillna(False).astype(bool)
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
