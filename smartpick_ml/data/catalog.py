"""Stage 1 — the program catalog: import the real ERAS interview-rate files, or synthesise one.

Real catalog: a directory of per-specialty CSVs (file name = specialty) in the format of
``../shared/data/program_interview_rates/``. Suppressed values (``-``) become nulls; signal columns
differ per specialty; program names can repeat within a specialty (different sites) and are made
unique by appending the city.

What the files do not contain is filled in by documented, deterministic rules (see
``docs/catalog.md``): PGY-1 positions (each specialty's published 2026 total spread over its
programs), university/community type (from the name), the track (categorical or advanced, drawn at
each specialty's published advanced share), and the IMG-support markers (visa sponsorship, IMG
share, mentorship, orientation), which are *derived* from the program's interview rates for IMGs
and are therefore simulated attributes, not published facts.

PGY-1-only programs (Preliminary Medicine, Preliminary Surgery, Transitional Year) have no file:
their published numbers of programs and positions (NRMP 2025) are placed at programs of the host
specialty (Internal Medicine, General Surgery), whose location and interview rates they copy
(``derive_pgy1_programs``); which hosts, and their interview behaviour, are simulated.

Synthetic catalog: for a bare clone without ``../shared``: same specialties, the same number of
programs each, interview rates drawn from per-specialty distributions measured on the real catalog
(``resources/catalog_figures.json``, rebuilt by ``smartpick catalog figures``), plus the five
programs the product brief names.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from smartpick_ml.contracts.columns import name_list
from smartpick_ml.contracts.errors import DataValidationError
from smartpick_ml.contracts.numeric import clipped_logit
from smartpick_ml.contracts.reference import (
    ADVANCED_SHARE,
    CATALOG_PROGRAM_COUNTS,
    CATALOG_SPECIALTIES,
    CATALOG_SPECIALTY_NAMES,
    PGY1_ONLY_SPECIALTIES,
    RATE_COLUMN_BY_TYPE,
    SEED_PROGRAMS,
    SPECIALTIES,
    SPECIALTY_BY_NAME,
    SPECIALTY_BY_STEM,
    STATE_REGION,
    Specialty,
)
from smartpick_ml.contracts.schemas import PROGRAMS, validate
from smartpick_ml.data.io import read_csv_text

#: catalog CSV column -> programs-table column
CATALOG_COLUMNS: dict[str, str] = {
    "MD": "rate_us_md",
    "DO": "rate_us_do",
    "US IMG": "rate_us_img",
    "Non US IMG": "rate_non_us_img",
    "In-State School": "rate_in_state",
    "Out-Of-State School": "rate_out_of_state",
    "Signal": "rate_signal",
    "Gold Signal": "rate_gold_signal",
    "Silver Signal": "rate_silver_signal",
    "No Signal": "rate_no_signal",
}
REQUIRED_CATALOG_COLUMNS = ("Program", "City", "State", "Region", "MD", "DO", "US IMG",
                            "Non US IMG")
RATE_COLUMNS: tuple[str, ...] = tuple(CATALOG_COLUMNS.values())
TYPE_RATE_COLUMNS: tuple[str, ...] = tuple(RATE_COLUMN_BY_TYPE.values())
#: the rate columns a PGY-1-only program copies from its host (no signals: none of the three
#: tracks takes preference signals)
HOST_RATE_COLUMNS: tuple[str, ...] = (*TYPE_RATE_COLUMNS, "rate_in_state", "rate_out_of_state")
SUPPRESSED = "-"

_UNIVERSITY_PATTERN = re.compile(
    r"Universit|College of Medicine|School of Medicine|Medical College|Health Science|"
    r"Clinic Foundation|Mayo Clinic|Medical School|Grossman", re.IGNORECASE)


def stable_uniform(key: str, salt: str) -> float:
    """A uniform(0, 1) number fixed by ``key`` and ``salt``: the same program always gets the same
    derived attribute, whatever the row order or the run."""
    digest = hashlib.sha256(f"{salt}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _read_specialty_file(path: Path) -> pd.DataFrame:
    stem = path.stem
    table = f"programs ({path.name})"
    if stem not in SPECIALTY_BY_STEM:
        known = ", ".join(sorted(SPECIALTY_BY_STEM))
        raise DataValidationError(table, [
            f"unknown specialty '{stem}' (file name); known: {known}"])
    known = (*REQUIRED_CATALOG_COLUMNS, *CATALOG_COLUMNS)
    raw = read_csv_text(path, table=table, max_columns=len(known))
    missing = [c for c in REQUIRED_CATALOG_COLUMNS if c not in raw.columns]
    if missing:
        raise DataValidationError(table, [f"missing required column(s): {', '.join(missing)}"])
    unknown = [c for c in raw.columns if c not in known]
    if unknown:
        raise DataValidationError(table, [f"unknown column(s): {name_list(unknown)}"])
    problems: list[str] = []
    out = pd.DataFrame({
        "name": raw["Program"], "city": raw["City"], "state": raw["State"],
        "region": raw["Region"]})
    for src, dst in CATALOG_COLUMNS.items():
        if src not in raw.columns:
            out[dst] = np.nan
            continue
        text = raw[src].fillna(SUPPRESSED).str.strip()
        suppressed = text == SUPPRESSED
        values = pd.to_numeric(text.where(~suppressed), errors="coerce")
        bad = ~suppressed & values.isna()
        if bad.any():
            rows = ", ".join(f"line {i + 2}: {raw[src][i]!r}" for i in raw.index[bad][:5])
            problems.append(f"column '{src}': not a number or '-' at {rows}")
        out_of_range = values.notna() & ((values < 0) | (values > 1))
        if out_of_range.any():
            rows = ", ".join(f"line {i + 2}: {values[i]:g}" for i in raw.index[out_of_range][:5])
            problems.append(f"column '{src}': interview rates must be between 0 and 1; got {rows}")
        out[dst] = values
    if problems:
        raise DataValidationError(table, problems)
    for col, src in (("name", "Program"), ("city", "City"), ("state", "State"),
                     ("region", "Region")):
        blank = out[col].isna() | (out[col].str.strip() == "")
        if blank.any():
            rows = ", ".join(str(i + 2) for i in out.index[blank][:5])
            raise DataValidationError(table, [f"column '{src}': empty at line(s) {rows}"])
    # The same institution can run several sites under one program name: keep them all, named
    # apart by city, so names are unique within a specialty.
    dup = out["name"].duplicated(keep=False)
    out.loc[dup, "name"] = out.loc[dup, "name"] + " (" + out.loc[dup, "city"] + ")"
    still = out["name"].duplicated(keep=False)
    if still.any():
        names = sorted(set(out.loc[still, "name"]))[:3]
        raise DataValidationError(table, [f"column 'Program': duplicate program at the same city: "
                                          f"{names}"])
    unknown_state = ~out["state"].isin(list(STATE_REGION))
    if unknown_state.any():
        rows = ", ".join(f"line {i + 2}: {out['state'][i]!r}" for i in out.index[unknown_state][:5])
        raise DataValidationError(table, [f"column 'State': not a US state code at {rows}"])
    # The published files truncate some division names ('Middle Atlanti'); the division follows
    # from the state, so take it from there.
    out["region"] = out["state"].map(STATE_REGION)
    out.insert(0, "specialty", SPECIALTY_BY_STEM[stem].name)
    return out


def import_catalog(directory: str | Path) -> pd.DataFrame:
    """Read a directory of per-specialty interview-rate CSVs into a validated ``programs`` table."""
    d = Path(directory)
    if not d.is_dir():
        raise DataValidationError("programs", [f"catalog directory not found: {d}"])
    files = sorted(p for p in d.glob("*.csv"))
    if not files:
        raise DataValidationError("programs", [f"no .csv files in catalog directory {d}"])
    frames = [_read_specialty_file(p) for p in files]
    programs = pd.concat(frames, ignore_index=True)
    programs = programs.sort_values(["specialty", "name"], kind="stable").reset_index(drop=True)
    return finish_programs(programs)


def _assign_ids(programs: pd.DataFrame) -> pd.Series:
    codes = programs["specialty"].map(lambda s: SPECIALTY_BY_NAME[s].code)
    seq = programs.groupby("specialty").cumcount() + 1
    return codes + "-" + seq.map("{:04d}".format)


def program_type_from_name(name: str) -> str:
    return "university" if _UNIVERSITY_PATTERN.search(name) else "community"


#: Names of uniformed-services programs (Army, Navy and Air Force medical centers and the military
#: consortia), which fill through the military match, not the civilian Main Match. Civilian
#: programs named for a person or a place (Eisenhower Medical Center, Fort Worth) do not match.
MILITARY_NAME = re.compile(
    r"Army Medical Center|Army Community Hospital|Naval Medical Center|Naval Hospital|Air Force"
    r"|Uniformed Services|National Capital Consortium|Military Medical Center"
    r"|Keesler Medical Center|David Grant Medical Center|Tripler|Madigan", re.IGNORECASE)


def derive_military(names: pd.Series) -> pd.Series:
    """Which programs are uniformed-services programs, from their names."""
    return names.map(lambda n: bool(MILITARY_NAME.search(str(n)))).astype(bool)


def assign_positions(programs: pd.DataFrame, totals: dict[str, int] | None = None) -> pd.Series:
    """Spread each specialty's published PGY-1 positions over its programs.

    Weights: university programs are on average larger (1.6×) than community ones, times a
    deterministic per-program size factor (log-normal, σ = 0.45, fixed by the program's name) so
    programs differ in size as real ones do. Rounded by largest remainder so each specialty's total
    is exact; every program gets at least one position.
    """
    totals = {**{s.name: s.positions_2026 for s in SPECIALTIES}, **(totals or {})}
    out = pd.Series(0, index=programs.index, dtype=np.int64)
    for specialty, group in programs.groupby("specialty", sort=False):
        total = int(totals[specialty])
        n = len(group)
        if total < n:
            raise DataValidationError("programs", [
                f"specialty '{specialty}': {total} positions cannot give each of {n} programs one"])
        u = np.array([stable_uniform(f"{specialty}|{nm}", "size") for nm in group["name"]])
        from scipy.stats import norm

        size = np.exp(0.45 * norm.ppf(np.clip(u, 1e-9, 1 - 1e-9)))
        size *= np.where(group["program_type"].to_numpy() == "university", 1.6, 1.0)
        # one position each first, then the rest in proportion to size
        share = size / size.sum() * (total - n)
        base = np.floor(share).astype(np.int64)
        remainder = (total - n) - base.sum()
        order = np.argsort(-(share - base), kind="stable")
        base[order[:remainder]] += 1
        out.loc[group.index] = base + 1
    return out


def derive_tracks(programs: pd.DataFrame) -> pd.Series:
    """Each program's track (simulated for catalog programs).

    A catalog program is ``advanced`` (starts at PGY-2) when a fixed coin keyed by its specialty
    and name falls below its specialty's published advanced share (``ADVANCED_SHARE``), else
    ``categorical``. One track per program is a simplification: real programs may offer both. A
    program of a PGY-1-only specialty has that specialty's track (preliminary or transitional).
    """
    def one(specialty: str, name: str) -> str:
        spec = SPECIALTY_BY_NAME.get(specialty)
        if spec is not None and spec.pgy1_track is not None:
            return spec.pgy1_track
        share = ADVANCED_SHARE.get(specialty, 0.0)
        return "advanced" if stable_uniform(f"{specialty}|{name}", "advanced") < share else \
            "categorical"

    values = [one(s, n) for s, n in zip(programs["specialty"], programs["name"], strict=True)]
    return pd.Series(values, index=programs.index, dtype=object)


def pgy1_positions(spec: Specialty, n_programs: int, totals: dict[str, int] | None = None) -> int:
    """Positions of a PGY-1-only specialty placed at ``n_programs`` programs.

    ``totals[spec.name]`` when given; else the published total when the catalog has hosts for
    all its published programs (the real and the synthetic catalog), and for a partial catalog
    (tests) the published mean size times the programs placed.
    """
    if totals and spec.name in totals:
        return int(totals[spec.name])
    published = spec.programs_2025 or n_programs
    if n_programs >= published:
        return spec.positions_2026
    return max(n_programs, round(spec.positions_2026 * n_programs / published))


def derive_pgy1_programs(programs: pd.DataFrame, totals: dict[str, int] | None = None
                         ) -> pd.DataFrame:
    """The PGY-1-only programs of a catalog (new rows only; ``finish_programs`` adds them).

    For each PGY-1-only specialty: min(its published 2025 programs, non-military programs of its
    host specialty) hosts, in a fixed order (a coin keyed by the host's specialty and name, one
    salt per track), fewer if its positions would not give each one. Each copies its host's name
    (with the specialty appended), city, state, region and interview rates by applicant type and
    in/out-of-state school; it has no signal rates. Which programs host one and their interview
    behaviour are simulated; the numbers of programs and positions are published. A specialty
    the catalog already has rows of is left alone, and one whose host is absent gets none.
    """
    present = set(programs["specialty"])
    frames = []
    for spec in PGY1_ONLY_SPECIALTIES:
        if spec.name in present:
            continue
        hosts = programs[programs["specialty"] == spec.host]
        hosts = hosts[~derive_military(hosts["name"]).to_numpy()]
        n = min(spec.programs_2025 or 0, len(hosts))
        if totals and spec.name in totals:
            n = min(n, max(int(totals[spec.name]), 0))  # at least one position each
        if n == 0:
            continue
        u = np.array([stable_uniform(f"{spec.host}|{name}", f"{spec.pgy1_track}-host")
                      for name in hosts["name"]])
        chosen = hosts.iloc[np.argsort(u, kind="stable")[:n]]
        frame = pd.DataFrame({
            "specialty": spec.name,
            "name": (chosen["name"] + f" ({spec.name})").to_numpy(),
            **{c: chosen[c].to_numpy() for c in ("city", "state", "region")},
            **{c: (chosen[c].to_numpy(dtype=float) if c in chosen else np.full(n, np.nan))
               for c in RATE_COLUMNS if c in HOST_RATE_COLUMNS},
            **{c: np.full(n, np.nan) for c in RATE_COLUMNS if c not in HOST_RATE_COLUMNS},
            "track": spec.pgy1_track,
        })
        frames.append(frame.sort_values("name", kind="stable"))
    if not frames:
        return pd.DataFrame(columns=["specialty", "name", "city", "state", "region",
                                     *RATE_COLUMNS, "track"])
    return pd.concat(frames, ignore_index=True)


#: Visa sponsorship, calibrated on the one published census (Tiako et al., J Grad Med Educ 2022;
#: 14(6):680, 419 Internal Medicine programs: 63.7 % accept J-1, 22.0 % also sponsor H-1B): a
#: program that interviewed non-US IMGs accepts J-1 with this probability (some interview only
#: permanent residents), so that the real catalog's IM programs accept J-1 at 63.7 % in
#: expectation ...
J1_IF_INTERVIEWS_NON_US_IMGS = 0.80
#: ... (a suppressed rate: the share of IM programs with a known rate that is positive) ...
J1_RATE_KNOWN_POSITIVE = 0.79
#: ... and a J-1 program sponsors H-1B with probability base + per_rate x its non-US IMG rate
#: (34.5 % of IM's J-1 programs in expectation).
H1B_IF_J1_BASE, H1B_IF_J1_PER_RATE = 0.19, 5.7


def derive_img_support(programs: pd.DataFrame) -> pd.DataFrame:
    """Derive the IMG-support markers from IMG interview rates (simulated attributes).

    - J-1: a program that interviewed no non-US IMG (rate 0) is taken not to sponsor visas; one with
      a positive rate accepts J-1 by a fixed coin (``J1_IF_INTERVIEWS_NON_US_IMGS``, calibrated on
      the published share of Internal Medicine programs); a suppressed rate by a smaller coin.
    - H-1B: a subset of J-1 programs, more likely the more non-US IMGs they interview.
    - IMG share of residents: the IMG share of the program's expected interviewees, weighting each
      type's interview rate by the national number of applications of that type.
    - Mentorship / orientation: more likely where IMGs are a large share.
    The five programs the product brief names are known to have all markers.
    """
    # national application volumes by type (applicants × applications per applicant, AAIM 2016:
    # ~35 per US graduate, ~77 per IMG; NRMP 2025 applicant counts)
    vol = {"rate_us_md": 20368 * 35, "rate_us_do": 8392 * 35, "rate_us_img": 4587 * 77,
           "rate_non_us_img": 11465 * 77}
    r = {c: programs[c].astype(float) for c in TYPE_RATE_COLUMNS}
    img = r["rate_us_img"] * vol["rate_us_img"] + r["rate_non_us_img"] * vol["rate_non_us_img"]
    all_ = img + r["rate_us_md"] * vol["rate_us_md"] + r["rate_us_do"] * vol["rate_us_do"]
    img_share = (img / all_.where(all_ > 0)).clip(0, 1).round(3)
    keys = (programs["specialty"] + "|" + programs["name"]).tolist()
    u_j1 = np.array([stable_uniform(k, "j1") for k in keys])
    u_h1b = np.array([stable_uniform(k, "h1b") for k in keys])
    u_mentor = np.array([stable_uniform(k, "mentorship") for k in keys])
    u_orient = np.array([stable_uniform(k, "orientation") for k in keys])
    nonus = r["rate_non_us_img"].to_numpy()
    # a suppressed rate hides whether the program interviewed any non-US IMG: weighted by the
    # chance that a known rate is positive
    p_j1 = np.where(np.isnan(nonus), J1_IF_INTERVIEWS_NON_US_IMGS * J1_RATE_KNOWN_POSITIVE,
                    np.where(nonus > 0, J1_IF_INTERVIEWS_NON_US_IMGS, 0.0))
    j1 = u_j1 < p_j1
    p_h1b = np.clip(H1B_IF_J1_BASE + H1B_IF_J1_PER_RATE * np.nan_to_num(nonus, nan=0.03), 0, 0.9)
    h1b = j1 & (u_h1b < p_h1b)
    # an unknown share takes the median of the catalog-file programs, so derived PGY-1-only
    # programs (copies of their hosts' rates) do not shift the markers of the others
    own = img_share[programs["specialty"].isin(CATALOG_SPECIALTY_NAMES).to_numpy()].dropna()
    own = own if len(own) else img_share.dropna()
    share = img_share.fillna(own.median() if len(own) else 0.1).to_numpy()
    mentorship = u_mentor < 0.08 + 0.8 * share
    orientation = u_orient < 0.12 + 0.8 * share
    seed_names = {name for name, *_ in SEED_PROGRAMS}
    is_seed = programs["name"].isin(seed_names).to_numpy()
    # ... except that the data wins for visas: a program that interviewed no non-US IMG (rate 0)
    # does not sponsor one, whatever its institution's reputation.
    seed_visa = is_seed & ~(nonus == 0)
    out = pd.DataFrame(index=programs.index)
    out["sponsors_j1"] = j1 | seed_visa
    out["sponsors_h1b"] = h1b | seed_visa
    out["img_share"] = img_share
    out["img_mentorship"] = mentorship | is_seed
    out["img_orientation"] = orientation | is_seed
    return out


#: Graduation cut-offs programs state (years since graduation) and how often each is stated.
GRADUATION_CUTOFFS = np.array([1.0, 2.0, 3.0, 5.0, 7.0])
GRADUATION_CUTOFF_ODDS = np.array([0.10, 0.20, 0.35, 0.25, 0.10])


def derive_screening(programs: pd.DataFrame) -> pd.DataFrame:
    """Derive the screens a program applies before inviting (simulated attributes).

    Programs filter applications before anyone reads them: a minimum Step 2 CK score and, for
    graduates, a cut-off on years since graduation (FREIDA lists both per program; the NRMP
    Program Director Survey reports Step 2 CK as the most-cited factor in selecting whom to
    interview). The catalog files carry neither, so each program gets fixed coins keyed by its
    name (the same program always gets the same screens):

    - Step 2 CK minimum: stated by 35-65 % of programs, more often the more selective the
      program (a lower MD interview rate than its specialty's others); the floor rises from
      ~210 at open programs to ~245 at the most selective, in steps of 5.
    - Graduation cut-off: stated by ~60 % of programs that interview graduates at all
      (university programs a little more often): 1, 2, 3, 5 or 7 years, 3 the most common.
    These are assumptions of the simulation, not published per-program figures.
    """
    keys = (programs["specialty"] + "|" + programs["name"]).tolist()
    u_has_floor, u_floor, u_has_cut, u_cut = (
        np.array([stable_uniform(k, salt) for k in keys])
        for salt in ("step2-floor", "step2-floor-value", "grad-cutoff", "grad-cutoff-value"))
    rate_md = programs["rate_us_md"].astype(float)
    selectivity = (1.0 - rate_md.groupby(programs["specialty"]).rank(pct=True)).fillna(0.5)
    selectivity = selectivity.to_numpy()
    has_floor = u_has_floor < 0.35 + 0.3 * selectivity
    floor = 5.0 * np.round((212.0 + 30.0 * selectivity + 10.0 * (u_floor - 0.5)) / 5.0)
    img_rate = np.fmax(programs["rate_us_img"].to_numpy(float),
                       programs["rate_non_us_img"].to_numpy(float))
    takes_graduates = ~(img_rate == 0)  # unknown (suppressed) counts as taking graduates
    university = (programs["program_type"] == "university").to_numpy()
    has_cut = takes_graduates & (u_has_cut < 0.55 + 0.1 * university)
    cut = GRADUATION_CUTOFFS[np.searchsorted(np.cumsum(GRADUATION_CUTOFF_ODDS),
                                             u_cut * GRADUATION_CUTOFF_ODDS.sum(), side="right")]
    out = pd.DataFrame(index=programs.index)
    out["step2_minimum"] = np.where(has_floor, floor, np.nan)
    out["max_years_since_graduation"] = np.where(has_cut, cut, np.nan)
    return out


def finish_programs(programs: pd.DataFrame, totals: dict[str, int] | None = None) -> pd.DataFrame:
    """Add tracks and the PGY-1-only programs, then ids, program type, positions, IMG-support
    markers and screens; validate.

    ``totals``: positions per specialty where not the published ones (tests of small catalogs).
    """
    programs = programs.copy()
    tracks = derive_tracks(programs)
    programs["track"] = programs["track"].fillna(tracks) if "track" in programs else tracks
    derived = derive_pgy1_programs(programs, totals)
    if len(derived):
        programs = pd.concat([programs, derived], ignore_index=True)
    counts = programs["specialty"].value_counts()
    totals = {**(totals or {}), **{
        s.name: pgy1_positions(s, int(counts[s.name]), totals)
        for s in PGY1_ONLY_SPECIALTIES if s.name in counts.index}}
    programs.insert(0, "program_id", _assign_ids(programs))
    programs["program_type"] = programs["name"].map(program_type_from_name)
    programs["military"] = derive_military(programs["name"])
    programs["positions"] = assign_positions(programs, totals)
    for derived in (derive_img_support(programs), derive_screening(programs)):
        for col in derived.columns:
            programs[col] = derived[col]
    ordered = [c for c in PROGRAMS.column_names if c in programs.columns]
    return validate(programs[ordered], PROGRAMS)


# --------------------------------------------------------------------------- synthetic catalog

FIGURES_RESOURCE = "catalog_figures.json"


def catalog_figures(programs: pd.DataFrame) -> dict[str, Any]:
    """Summarise a real catalog into the figures the synthetic catalog is drawn from.

    Per catalog specialty (those with a file): program count, share suppressed, share of
    uniformed-services programs, and for each rate column the share of exact zeros and the mean /
    sd of logit(rate) among non-zero values, the share of university programs, and the
    within-specialty correlation of the four applicant types' logits and the university latent
    (shrunk toward the pooled one); overall: that pooled correlation and programs per state.
    Derived PGY-1-only programs are left out.
    """
    figs: dict[str, Any] = {"source": "ERAS 2024 program interview rates (../shared/data/"
                            "program_interview_rates, MIT licence), summarised by "
                            "smartpick catalog figures", "specialties": {}}
    # the specialties with a file; the derived PGY-1-only programs repeat their hosts' rates
    programs = programs[programs["specialty"].isin(CATALOG_SPECIALTY_NAMES)]
    for specialty, g in programs.groupby("specialty"):
        spec: dict[str, Any] = {"programs": int(len(g)),
                                "suppressed_share": round(float(g["rate_us_md"].isna().mean()), 4),
                                "military_share": round(float(
                                    derive_military(g["name"]).mean()), 4),
                                "rates": {}}
        for col in RATE_COLUMNS:
            v = g[col].dropna().to_numpy(dtype=float)
            if len(v) == 0:
                continue
            nz = v[v > 0]
            lg = clipped_logit(nz) if len(nz) else np.array([-4.0])
            spec["rates"][col] = {"zero_share": round(float((v == 0).mean()), 4),
                                  "logit_mean": round(float(lg.mean()), 4),
                                  "logit_sd": round(float(lg.std(ddof=1)) if len(lg) > 1 else 0.5,
                                                    4)}
        figs["specialties"][specialty] = spec
    full = programs.dropna(subset=list(TYPE_RATE_COLUMNS))
    latent = _program_latents(full)
    by_specialty = full["specialty"].to_numpy()
    # within a specialty, not across: pooled, the specialties' different levels make every pair
    # of types look positively correlated, while within one the programs that interview many
    # non-US IMGs often interview fewer US MDs; the synthetic catalog draws within a specialty
    latent -= pd.DataFrame(latent).groupby(by_specialty).transform("mean").to_numpy()
    pooled = _latent_correlation(latent, float((full["program_type"] == "university").mean()))
    figs["type_logit_correlation"] = np.round(pooled, 4).tolist()
    for specialty, spec in figs["specialties"].items():
        own = by_specialty == specialty
        share = float((full["program_type"][own] == "university").mean())
        spec["university_share"] = round(share, 4)
        # shrunk toward the pooled matrix by the specialty's size, so a small one stays stable
        weight = own.sum() / (own.sum() + 100.0)
        corr = (weight * _latent_correlation(latent[own], share) + (1 - weight) * pooled
                if own.sum() > 4 and 0 < share < 1 else pooled)
        spec["type_logit_correlation"] = np.round(corr, 4).tolist()
    figs["programs_per_state"] = {k: int(v) for k, v in
                                  programs["state"].value_counts().sort_index().items()}
    return figs


def load_catalog_figures() -> dict[str, Any]:
    text = resources.files("smartpick_ml").joinpath("resources", FIGURES_RESOURCE).read_text()
    return json.loads(text)


def _program_latents(programs: pd.DataFrame) -> np.ndarray:
    """The four applicant types' logit rates and the university indicator, one row a program."""
    return np.column_stack(
        [clipped_logit(programs[c].to_numpy(dtype=float)) for c in TYPE_RATE_COLUMNS]
        + [(programs["program_type"] == "university").to_numpy(dtype=float)])


def _latent_correlation(latent: np.ndarray, university_share: float) -> np.ndarray:
    """Correlation of the latents, the university column's turned biserial: the synthetic
    catalog thresholds a normal latent at the university share, so it needs the normal's
    correlation, which the 0/1 column understates by ``phi(t) / sqrt(p(1 - p))``."""
    corr = np.nan_to_num(np.corrcoef(latent, rowvar=False))
    p = min(max(university_share, 0.01), 0.99)
    factor = np.sqrt(p * (1 - p)) / (np.exp(-special.ndtri(p) ** 2 / 2) / np.sqrt(2 * np.pi))
    corr[-1, :-1] = corr[:-1, -1] = np.clip(corr[:-1, -1] * factor, -0.95, 0.95)
    np.fill_diagonal(corr, 1.0)
    return corr


def _nearest_correlation(corr: np.ndarray) -> np.ndarray:
    """A positive-definite correlation near ``corr`` (its biserial entries need not be)."""
    values, vectors = np.linalg.eigh(corr)
    fixed = vectors @ np.diag(np.maximum(values, 1e-3)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    return fixed / np.outer(scale, scale)


def _rate_from_latent(z: np.ndarray, figure: dict[str, float]) -> np.ndarray:
    """Rates with the figure's zero share and logit-normal non-zero part, monotone in ``z``.

    The lowest ``zero_share`` of the latent is a zero, so a program closed to one IMG type tends
    to be closed to the other (as in the real catalog); drawn independently, the zeros would cut
    the two types' correlation from ~0.5 to ~0.2.
    """
    u = special.ndtr(z)
    zero = figure["zero_share"]
    above = np.clip((u - zero) / max(1.0 - zero, 1e-9), 1e-6, 1 - 1e-6)
    val = 1 / (1 + np.exp(-(figure["logit_mean"] + figure["logit_sd"] * special.ndtri(above))))
    val[u < zero] = 0.0
    return np.round(val, 2)


def synthetic_catalog(seed: int = 0, figures: dict[str, Any] | None = None) -> pd.DataFrame:
    """A catalog with the real one's shape, drawn from its published-rate distributions; the
    PGY-1-only programs are derived from it as from the real one."""
    figs = figures or load_catalog_figures()
    rng = np.random.default_rng(seed)
    states = list(figs["programs_per_state"])
    state_p = np.array([figs["programs_per_state"][s] for s in states], dtype=float)
    state_p /= state_p.sum()
    rows = []
    seeds_by_specialty: dict[str, list[tuple[str, str, str]]] = {}
    for name, city, state, specialty in SEED_PROGRAMS:
        seeds_by_specialty.setdefault(specialty, []).append((name, city, state))
    for spec in CATALOG_SPECIALTIES:
        f = figs["specialties"][spec.name]
        n = CATALOG_PROGRAM_COUNTS[spec.name]
        st = rng.choice(states, size=n, p=state_p)
        rates = f["rates"]
        corr = _nearest_correlation(np.array(f["type_logit_correlation"]))
        z = rng.multivariate_normal(np.zeros(len(corr)), corr, size=n)
        university = special.ndtr(z[:, -1]) > 1 - f["university_share"]
        data: dict[str, np.ndarray] = {}
        for j, col in enumerate(TYPE_RATE_COLUMNS):
            data[col] = _rate_from_latent(z[:, j], rates[col])
        for col in RATE_COLUMNS[4:]:
            if col not in rates:
                data[col] = np.full(n, np.nan)
                continue
            rf = rates[col]
            # tie the secondary rates to the program's overall openness (the MD z-score)
            zz = 0.6 * z[:, 0] + 0.8 * rng.standard_normal(n)
            val = 1 / (1 + np.exp(-(rf["logit_mean"] + rf["logit_sd"] * zz)))
            val[rng.random(n) < rf["zero_share"]] = 0.0
            data[col] = np.round(val, 2)
        suppressed = rng.random(n) < f["suppressed_share"]
        for col in data:
            data[col][suppressed] = np.nan
        # a uniformed-services program is named as one, so the same rule flags it
        service = [stable_uniform(f"{spec.name}|{i}", "military") < f.get("military_share", 0.0)
                   for i in range(n)]
        # the program type is read from the name, as in the real catalog
        names = [f"{s} {'University' if u else 'Synthetic'} {spec.code} "
                 f"{'Army Medical Center ' if m else ''}Program {i + 1:03d}"
                 for i, (s, m, u) in enumerate(zip(st, service, university, strict=True))]
        cities = [f"{s} City {int(rng.integers(1, 40)):02d}" for s in st]
        frame = pd.DataFrame({"specialty": spec.name, "name": names, "city": cities, "state": st,
                              **data})
        for i, (name, city, state) in enumerate(seeds_by_specialty.get(spec.name, [])):
            frame.loc[i, ["name", "city", "state"]] = [name, city, state]
            # the brief's programs are named for their IMG support: give them IMG-open rates
            frame.loc[i, "rate_us_img"] = max(
                float(np.nan_to_num(frame.loc[i, "rate_us_img"])), 0.1)
            frame.loc[i, "rate_non_us_img"] = max(
                float(np.nan_to_num(frame.loc[i, "rate_non_us_img"])), 0.05)
        frame["region"] = frame["state"].map(STATE_REGION)
        rows.append(frame)
    programs = pd.concat(rows, ignore_index=True)
    programs = programs.sort_values(["specialty", "name"], kind="stable").reset_index(drop=True)
    return finish_programs(programs)


def default_catalog_dir() -> Path | None:
    """``../shared/data/program_interview_rates`` beside the project, if present."""
    here = Path(__file__).resolve().parents[2]  # the project root
    for candidate in (here.parent / "shared" / "data" / "program_interview_rates",
                      Path.cwd().parent / "shared" / "data" / "program_interview_rates"):
        if candidate.is_dir():
            return candidate
    return None


def describe_catalog(source: str | Path | None = "auto") -> str:
    """Which catalog ``load_catalog(source)`` reads, in words (``"auto"`` resolved)."""
    if source is None or str(source) == "auto":
        found = default_catalog_dir()
        return ("the real catalog of ../shared" if found
                else "the synthetic catalog")
    if str(source) == "synthetic":
        return "the synthetic catalog"
    return f"the catalog in {source}"


def load_catalog(source: str | Path | None = "auto", seed: int = 0) -> pd.DataFrame:
    """The catalog a run uses: a directory of CSVs, a saved programs table, or ``"synthetic"``.

    ``"auto"`` takes the real catalog from ``../shared`` when present, else the synthetic one.
    """
    if source is None or str(source) == "auto":
        found = default_catalog_dir()
        return import_catalog(found) if found else synthetic_catalog(seed)
    if str(source) == "synthetic":
        return synthetic_catalog(seed)
    p = Path(source)
    if p.is_dir():
        return import_catalog(p)
    from smartpick_ml.data.io import read_table

    return read_table(p, "programs")
