"""Stage 2 — a simulated Match season on the program catalog, decided by deferred acceptance.

The season, in the order it happens (``docs/simulation.md`` has the full account):

1. **Applicants** by type, in the published numbers for the season (scaled), with Step 2 CK, years
   since graduation, visa need, US clinical experience, publications, home state and one preferred
   specialty; plus a latent quality (letters, interview skill) that no model ever sees.
2. **Applications**: how many by type (AAIM figures) and where: a weighted draw without replacement
   over the specialty's programs, favouring programs that interview the applicant's type, in-state
   and in-region programs. Preference signals go to the applicant's favourite programs.
3. **Interviews**: each program invites each applicant with a probability *anchored on its published
   interview rate for that applicant type* (an offset per program and type makes the expected share
   invited equal the published rate), moved by the applicant's strength, home state and signal; a
   program invites at most ``interviews_per_position`` per position; a non-US IMG needing a visa is
   never invited where the program sponsors none.
4. **Rank lists**: applicants rank every program that interviewed them by their own utility with
   taste noise; programs rank their interviewees by strength plus interview-day noise.
5. **The match**: applicant-proposing deferred acceptance with program quotas.
6. **Labels**: ``would_take`` = the program interviewed the applicant and ranks them at or above
   its cutoff (or did not fill) — exact, because the simulator knows every cutoff.

Steps 1–2 depend only on what a model may observe; steps 3–5 redraw every unobserved quantity, which
is what the oracle (:func:`oracle_q`) re-runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError
from scipy.special import expit, logit
from scipy.stats import norm

from smartpick_ml.contracts.config import SimulateConfig, SimulationParams, TypeParams
from smartpick_ml.contracts.eligibility import (
    below_minimum,
    military_closed,
    past_cutoff,
    sponsors_visa,
)
from smartpick_ml.contracts.errors import ConfigError
from smartpick_ml.contracts.numeric import LOGISTIC_PROBIT, clipped_logit, expected_logistic
from smartpick_ml.contracts.reference import (
    APPLICANT_TYPES,
    PGY1_POSITIONS,
    RATE_COLUMN_BY_TYPE,
    SPECIALTY_NAMES,
    STATE_REGION,
)
from smartpick_ml.contracts.schemas import APPLICANTS, APPLICATIONS, validate
from smartpick_ml.simulation.market import (
    PGY1_TRACKS,
    Choices,
    draw_choices,
    plan_choices,
    program_specialties,
    program_tracks,
    specialty_market,
    type_rank_offsets,
)
from smartpick_ml.simulation.matching import deferred_acceptance

STEP2_REFERENCE_MEAN, STEP2_REFERENCE_SD = 249.0, 15.0  # USMLE, US/Canadian MD first-takers
STEP2_CLIP = (200, 290)
MAX_RATE = 0.97
CHUNK = 4096
#: The specialty the per-type applications figures describe (AAIM 2016: Internal Medicine).
APPLICATIONS_REFERENCE_SPECIALTY = "Internal Medicine"
#: Where an application sits: the primary list holds the preferred specialty's programs, then the
#: backup's, then PGY-1 programs as a fallback; the supplemental list (PGY-1 programs for an
#: applicant to advanced positions) is used only if the applicant matches an advanced position.
TIER_PREFERRED, TIER_BACKUP, TIER_FALLBACK, TIER_SUPPLEMENTAL = 0, 1, 2, 3
#: National share of applications by type (applicants x applications per applicant:
#: NRMP 2025 counts, AAIM ~35 per US graduate and ~77 per IMG), used to average a program's per-type
#: interview rates.
APPLICATION_MIX = np.array([20368 * 35, 8392 * 35, 4587 * 77, 11465 * 77], dtype=float)
APPLICATION_MIX /= APPLICATION_MIX.sum()


@dataclass
class Season:
    """Everything one simulated season produced."""

    season: int
    applicants: pd.DataFrame
    applications: pd.DataFrame
    program_outcomes: pd.DataFrame


@dataclass
class MarketInputs:
    """Per-pair quantities fixed by what is observed (applicants, programs, applications)."""

    n_applicants: int
    n_programs: int
    pair_applicant: np.ndarray  # int64
    pair_program: np.ndarray  # int64
    invite_offset: np.ndarray  # anchored invitation logit before latent and noise (-inf = never)
    invite_latent_weight: float
    score_obs: np.ndarray  # program's observed view of the applicant (ranking score, mean part)
    score_latent_weight: float
    score_noise_sd: float
    applicant_util_obs: np.ndarray  # applicant's observed taste for the program
    applicant_taste_sd: float
    quotas: np.ndarray  # positions per program this season
    capacity: np.ndarray  # interview slots per program
    max_interviews: int
    max_supplemental_interviews: int
    waitlist_margin: float  # log-odds below the invitation threshold a waitlist reaches
    pair_tier: np.ndarray  # TIER_* per pair
    pgy1_program: np.ndarray  # per program: preliminary / transitional
    advanced_program: np.ndarray  # per program: positions start at PGY-2


@dataclass
class MarketOutcome:
    """One draw of the unobserved part of a season."""

    interviewed: np.ndarray
    rank_position: np.ndarray  # applicant's rank of the program (0 = not ranked)
    program_score: np.ndarray
    matched: np.ndarray
    would_take: np.ndarray
    program_cutoff: np.ndarray
    invite_threshold: np.ndarray
    program_filled: np.ndarray
    attend_ratio: np.ndarray  # per applicant: interviews attended / invitations received


# ----------------------------------------------------------------------------- helpers


def _imputed_rates(programs: pd.DataFrame) -> np.ndarray:
    """Published rate per program and type; suppressed values take the specialty's median."""
    out = np.empty((len(programs), len(APPLICANT_TYPES)))
    for j, t in enumerate(APPLICANT_TYPES):
        col = programs[RATE_COLUMN_BY_TYPE[t]].astype(float)
        med = col.groupby(programs["specialty"]).transform("median")
        out[:, j] = col.fillna(med).fillna(col.median()).fillna(0.05).to_numpy()
    return np.clip(out, 0.0, MAX_RATE)


def _prestige(programs: pd.DataFrame, rates: np.ndarray) -> np.ndarray:
    """Selectivity as applicants perceive it: a low US MD interview rate, and university status."""
    md = np.clip(rates[:, 0], 0.01, 0.99)
    z = -logit(md)
    z = (z - z.mean()) / (z.std() + 1e-9)
    return z + 0.5 * (programs["program_type"].to_numpy() == "university")


def season_positions(programs: pd.DataFrame, season: int, scale: float,
                     params: SimulationParams, rng: np.random.Generator) -> np.ndarray:
    """Positions per program for a season, stochastic rounding keeping the expected total exact.

    Each specialty's total is the published one of the market season less the positions prior
    graduates filled (``params.market``: the modelled applicants compete for the rest), or the
    catalog's where no figure is given; scaled to the season by the published PGY-1 total and by
    ``scale``. A uniformed-services program offers none: it fills through the military match, so
    the civilian programs hold the specialty's total."""
    ref = PGY1_POSITIONS.get(params.positions_reference_season)
    factor = PGY1_POSITIONS.get(season, ref) / ref if ref else 1.0
    catalog = programs["positions"].to_numpy(dtype=float)
    civilian = np.where(military_closed(programs), 0.0, catalog)
    spec = programs["specialty"].to_numpy()
    names, code = np.unique(spec, return_inverse=True)
    catalog_total = np.bincount(code, weights=catalog)
    total = np.array([params.market[n].positions - params.market[n].prior_graduates
                      if n in params.market else catalog_total[i] for i, n in enumerate(names)])
    refill = total / np.maximum(np.bincount(code, weights=civilian), 1e-9)
    x = civilian * refill[code] * factor * scale
    base = np.floor(x)
    return (base + (rng.random(len(x)) < (x - base))).astype(np.int64)


# ----------------------------------------------------------------------------- applicants


def draw_applicants(rng: np.random.Generator, season: int, scale: float,
                    programs: pd.DataFrame, positions: np.ndarray,
                    params: SimulationParams) -> tuple[pd.DataFrame, Choices]:
    """Applicants of one season (the public ``applicants`` table) and where each applies:
    preferred and backup specialty, PGY-1 lists (:mod:`smartpick_ml.simulation.market`)."""
    if season not in params.applicants:
        raise ConfigError(f"params.applicants has no counts for season {season}; known: "
                          f"{sorted(params.applicants)}")
    state_weight = programs.groupby("state")["positions"].sum()
    states = state_weight.index.to_numpy()
    state_p = state_weight.to_numpy(float) / state_weight.sum()
    frames = []
    for t in APPLICANT_TYPES:
        tp: TypeParams = params.types[t]
        n = int(round(params.applicants[season][t] * tp.applicants_per_active * scale))
        if n == 0:
            continue
        step2 = np.clip(np.rint(rng.normal(tp.step2_mean, tp.step2_sd, n)), *STEP2_CLIP)
        if tp.years_since_graduation_mean > 0:
            gap = np.rint(rng.gamma(1.5, tp.years_since_graduation_mean / 1.5, n))
        else:
            gap = np.zeros(n)
        needs_visa = rng.random(n) < tp.needs_visa_share
        usce = np.where(rng.random(n) < tp.usce_none_share, 0,
                        rng.poisson(tp.usce_months_mean, n))
        k = 1.5  # negative-binomial dispersion: a few applicants have many publications
        pubs = rng.negative_binomial(k, k / (k + tp.publications_mean), n)
        home = rng.choice(states, size=n, p=state_p).astype(object)
        if t == "non_us_img":
            # visa holders have no US home state; permanent residents half the time
            no_home = needs_visa | (rng.random(n) < 0.5)
            home[no_home] = None
        frames.append(pd.DataFrame({
            "applicant_type": t, "step2_ck": step2.astype(np.int64),
            "graduation_year": (season - gap).astype(np.int64),
            "usce_months": np.minimum(usce, APPLICANTS.column("usce_months").max).astype(np.int64),
            "publications": np.minimum(pubs, APPLICANTS.column("publications").max
                                       ).astype(np.int64),
            "needs_visa": needs_visa, "home_state": home}))
    df = pd.concat(frames, ignore_index=True)
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    df.insert(0, "season", np.int64(season))
    df.insert(0, "applicant_id", [f"S{season}-{i:06d}" for i in range(len(df))])
    market = specialty_market(programs, positions, season, scale, params)
    counts = np.array([(df["applicant_type"] == t).sum() for t in APPLICANT_TYPES], float)
    plan = plan_choices(market, counts, params)
    choices = draw_choices(rng, _type_index(df), _strength_within_type(df, params), market, plan,
                           params)
    names = np.asarray(SPECIALTY_NAMES + (None,), dtype=object)
    df["preferred_specialty"] = names[choices.preferred]
    df["backup_specialty"] = names[choices.backup]
    return validate(df, APPLICANTS), choices


# ----------------------------------------------------------------------------- applications


def _observed_strength(applicants: pd.DataFrame, params: SimulationParams) -> np.ndarray:
    """Applicant strength from observed fields only (programs add the latent part)."""
    p = params
    z_step = (applicants["step2_ck"].to_numpy(float) - STEP2_REFERENCE_MEAN) / STEP2_REFERENCE_SD
    gap = applicants["season"].to_numpy(float) - applicants["graduation_year"].to_numpy(float)
    bias = applicants["applicant_type"].map({t: p.types[t].rank_bias for t in APPLICANT_TYPES})
    return (p.score_weight * z_step
            + p.usce_weight * np.log1p(applicants["usce_months"].to_numpy(float))
            + p.publications_weight * np.log1p(applicants["publications"].to_numpy(float))
            - p.years_since_graduation_penalty * np.maximum(gap - 2.0, 0.0)
            + bias.to_numpy(float))


def _strength_within_type(applicants: pd.DataFrame, params: SimulationParams) -> np.ndarray:
    """Observed strength in SD units of the applicant's own type."""
    strength = pd.Series(_observed_strength(applicants, params))
    by_type = strength.groupby(_type_index(applicants))
    return ((strength - by_type.transform("mean"))
            / by_type.transform("std").fillna(1.0).replace(0, 1.0)).to_numpy()


def _application_growth(season: int, params: SimulationParams) -> float:
    """Applications per applicant in ``season`` relative to the reference season."""
    return ((1 + params.application_growth_per_season)
            ** (season - params.applications_reference_season))


def _type_index(applicants: pd.DataFrame) -> np.ndarray:
    """Each applicant's type as its position in ``APPLICANT_TYPES``."""
    return applicants["applicant_type"].map({t: i for i, t in enumerate(APPLICANT_TYPES)}
                                            ).to_numpy()


@dataclass(frozen=True)
class _ApplicationInputs:
    """What deciding where applicants apply reads: per program, per applicant and per type."""

    rates: np.ndarray  # published interview rate per (program, type)
    mixed_rate: np.ndarray  # per program: rates averaged over the national application mix
    prestige: np.ndarray
    sponsors: np.ndarray
    prog_state: np.ndarray
    prog_region: np.ndarray
    type_idx: np.ndarray
    home: np.ndarray
    home_region: np.ndarray
    needs_visa: np.ndarray
    strength_z: np.ndarray  # observed strength in SD units of the applicant's type
    target_rate: np.ndarray  # per type
    target_prestige: np.ndarray  # per type
    growth: float


def _application_inputs(applicants: pd.DataFrame, programs: pd.DataFrame, season: int,
                        params: SimulationParams) -> _ApplicationInputs:
    """The arrays every chunk of :func:`draw_applications` reads, computed once."""
    rates = _imputed_rates(programs)
    type_idx = _type_index(applicants)
    home = applicants["home_state"].to_numpy(dtype=object)
    return _ApplicationInputs(
        rates=rates, mixed_rate=np.clip(rates @ APPLICATION_MIX, 0.01, 1.0),
        prestige=_prestige(programs, rates), sponsors=sponsors_visa(programs),
        prog_state=programs["state"].to_numpy(dtype=object),
        prog_region=programs["region"].to_numpy(dtype=object),
        type_idx=type_idx, home=home,
        home_region=np.array([STATE_REGION.get(h) if isinstance(h, str) else None
                              for h in home], dtype=object),
        needs_visa=applicants["needs_visa"].to_numpy(),
        strength_z=_strength_within_type(applicants, params),
        target_rate=params.per_type("target_rate_weight"),
        target_prestige=params.per_type("target_prestige_weight"),
        growth=_application_growth(season, params))


def _application_weights(inputs: _ApplicationInputs, a: np.ndarray, prog_idx: np.ndarray,
                         positions: np.ndarray, params: SimulationParams) -> np.ndarray:
    """Log-weight of each (applicant of ``a``, program of ``prog_idx``), before the draw."""
    t = inputs.type_idx[a]
    same_state = inputs.home[a][:, None] == inputs.prog_state[prog_idx][None, :]
    same_region = inputs.home_region[a][:, None] == inputs.prog_region[prog_idx][None, :]
    # A program's share of applications is set by its published rates: interviews per
    # position are similar everywhere, so programs that interview a small share of their
    # applicants are the ones that receive many (volume ~ positions / mean rate). Each type
    # then tilts toward programs that interview its type more than average.
    mix = inputs.mixed_rate[prog_idx][None, :]
    w = (np.log(positions[prog_idx])[None, :] - np.log(mix)
         + inputs.target_rate[t][:, None]
         * (clipped_logit(inputs.rates[prog_idx][:, t].T) - clipped_logit(mix))
         + params.target_home_state_weight * same_state
         + params.target_region_weight * same_region
         + inputs.target_prestige[t][:, None] * inputs.prestige[prog_idx][None, :])
    visa_blocked = inputs.needs_visa[a][:, None] & ~inputs.sponsors[prog_idx][None, :]
    return w - 6.0 * visa_blocked  # a few still apply where they cannot be taken


def _application_counts(rng: np.random.Generator, inputs: _ApplicationInputs,
                        params: SimulationParams) -> np.ndarray:
    """How many programs each applicant applies to in their preferred specialty, before the cap
    at the specialty's number of programs (a backup gets a share of it)."""
    t = inputs.type_idx
    mean_apps = params.per_type("applications_mean")[t]
    sd_log = params.per_type("applications_sd_log")[t]
    # weaker applicants apply more widely (in SD units of their type's strength)
    breadth = np.exp(-params.applications_strength_elasticity * inputs.strength_z)
    return (mean_apps * inputs.growth * breadth
            * np.exp(sd_log * rng.standard_normal(len(t)) - sd_log**2 / 2))


def _application_signals(rng: np.random.Generator, inputs: _ApplicationInputs, rows: np.ndarray,
                         cols: np.ndarray, n_apps: np.ndarray, signal_plan: dict[str, int],
                         params: SimulationParams) -> np.ndarray:
    """Each application's signal: the specialty's signals go to the applicant's favourite
    programs among those applied to (``rows`` / ``cols``: applicant / program, by applicant)."""
    signal = np.full(len(rows), "none", dtype=object)
    if not signal_plan:
        return signal
    fav = (params.applicant_prestige_weight * inputs.prestige[cols]
           + params.applicant_home_weight
           * (inputs.home[rows] == inputs.prog_state[cols]) + rng.gumbel(size=len(rows)))
    row_start = np.concatenate([[0], np.cumsum(n_apps)[:-1]])
    rank_in_row = np.empty(len(rows), dtype=np.int64)
    for s0, k in zip(row_start, n_apps, strict=True):
        rank_in_row[s0 + np.argsort(-fav[s0:s0 + k], kind="stable")] = np.arange(k)
    if "signal" in signal_plan:
        signal[rank_in_row < signal_plan["signal"]] = "signal"
    else:
        gold, silver = signal_plan.get("gold", 0), signal_plan.get("silver", 0)
        signal[rank_in_row < gold + silver] = "silver"
        signal[rank_in_row < gold] = "gold"
    return signal


def _draw_chunk(rng: np.random.Generator, inputs: _ApplicationInputs, a: np.ndarray,
                n_apps: np.ndarray, prog_idx: np.ndarray, positions: np.ndarray,
                signal_plan: dict[str, int], params: SimulationParams
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_apps`` applications of each applicant of ``a`` to the programs ``prog_idx``: applicant,
    program and signal of each, grouped by applicant."""
    w = _application_weights(inputs, a, prog_idx, positions, params)
    w = w + rng.gumbel(size=w.shape)  # Gumbel-top-k = weighted sampling w/o replacement
    order = np.argsort(-w, axis=1, kind="stable")
    take = np.arange(len(prog_idx))[None, :] < n_apps[:, None]
    rows = np.repeat(a, n_apps)
    cols = prog_idx[order[take]]
    return rows, cols, _application_signals(rng, inputs, rows, cols, n_apps, signal_plan, params)


def _specialty_breadth(rates: np.ndarray, specialty: np.ndarray, positions: np.ndarray,
                       params: SimulationParams) -> dict[int, np.ndarray]:
    """Per specialty and type, applications relative to Internal Medicine (where the AAIM figures
    were measured): applicants apply more widely where programs interview a smaller share of their
    type, (IM's mean rate / the specialty's) ** ``applications_rate_elasticity`` (1 = the same
    expected interviews everywhere)."""
    def mean_rate(name: str) -> np.ndarray | None:
        mask = (specialty == name) & (positions > 0)
        if not mask.any():
            return None
        return np.clip(rates[mask].mean(axis=0), 1e-3, None)

    reference = mean_rate(APPLICATIONS_REFERENCE_SPECIALTY)
    if reference is None:
        return {}
    out = {}
    for k, name in enumerate(SPECIALTY_NAMES):
        rate = mean_rate(name)
        if rate is not None:
            out[k] = (reference / rate) ** params.applications_rate_elasticity
    return out


def _application_lists(rng: np.random.Generator, base: np.ndarray, choices: Choices,
                       params: SimulationParams
                       ) -> list[tuple[int, np.ndarray, np.ndarray, str]]:
    """Every (specialty, applicants, applications wanted, rank list) an applicant applies to:
    the preferred specialty, a share of that to the backup, a few PGY-1 programs on a fallback
    or a supplemental list."""
    def pgy1_counts(n: int, mean: float) -> np.ndarray:
        return 1.0 + rng.poisson(max(mean - 1.0, 0.0), n)

    lists = []
    for k in range(len(SPECIALTY_NAMES)):
        for who, wanted, rank_list in (
                (choices.preferred == k, base, "primary"),
                (choices.backup == k, base * params.backup_applications_share, "primary"),
                (choices.fallback == k, None, "primary"),
                (choices.supplemental[:, k], None, "supplemental")):
            idx = np.flatnonzero(who)
            if len(idx) == 0:
                continue
            mean = (params.supplemental_applications_mean if rank_list == "supplemental"
                    else params.fallback_applications_mean)
            n = wanted[idx] if wanted is not None else pgy1_counts(len(idx), mean)
            lists.append((k, idx, n, rank_list))
    return lists


def draw_applications(rng: np.random.Generator, applicants: pd.DataFrame,
                      programs: pd.DataFrame, positions: np.ndarray, choices: Choices,
                      params: SimulationParams) -> pd.DataFrame:
    """Where each applicant applies and signals (the ``applications`` table, before outcomes).
    ``choices``: each applicant's specialties, from :func:`draw_applicants`."""
    season = int(applicants["season"].iloc[0])
    inputs = _application_inputs(applicants, programs, season, params)
    base = _application_counts(rng, inputs, params)
    specialty = programs["specialty"].to_numpy()
    out_app, out_prog, out_signal, out_list = [], [], [], []
    breadth = _specialty_breadth(inputs.rates, specialty, positions, params)
    for k, app_idx, wanted, rank_list in _application_lists(rng, base, choices, params):
        name = SPECIALTY_NAMES[k]
        prog_idx = np.flatnonzero((specialty == name) & (positions > 0))
        if len(prog_idx) == 0:
            continue
        if rank_list == "primary" and k in breadth:
            wanted = wanted * breadth[k][inputs.type_idx[app_idx]]
        n_apps = np.clip(np.rint(wanted), 1, len(prog_idx)).astype(np.int64)
        signal_plan = params.signals.get(name, {}) if rank_list == "primary" else {}
        for start in range(0, len(app_idx), CHUNK):
            part = slice(start, start + CHUNK)
            rows, cols, signal = _draw_chunk(rng, inputs, app_idx[part], n_apps[part], prog_idx,
                                             positions, signal_plan, params)
            out_app.append(rows)
            out_prog.append(cols)
            out_signal.append(signal)
            out_list.append(np.full(len(rows), rank_list, dtype=object))
    app = np.concatenate(out_app)
    prog = np.concatenate(out_prog)
    order = np.lexsort((prog, app))
    return pd.DataFrame({
        "applicant_id": applicants["applicant_id"].to_numpy(dtype=object)[app[order]],
        "program_id": programs["program_id"].to_numpy(dtype=object)[prog[order]],
        "season": np.int64(season),
        "signal": np.concatenate(out_signal)[order],
        "rank_list": np.concatenate(out_list)[order]})


# ----------------------------------------------------------------------------- the market


def pair_strength(applicants: pd.DataFrame, programs: pd.DataFrame, pair_applicant: np.ndarray,
                  pair_program: np.ndarray, prestige: np.ndarray,
                  params: SimulationParams) -> np.ndarray:
    """Observed strength of each applicant *as each program weighs it*: selective programs weigh
    Step 2 CK more, university programs research more, community programs US clinical
    experience more (what program directors report valuing differs by program kind)."""
    base = _observed_strength(applicants, params)[pair_applicant]
    z_step = ((applicants["step2_ck"].to_numpy(float) - STEP2_REFERENCE_MEAN)
              / STEP2_REFERENCE_SD)[pair_applicant]
    university = (programs["program_type"].to_numpy() == "university")[pair_program]
    step_extra = params.score_weight * (np.exp(params.score_weight_prestige_slope
                                               * prestige[pair_program]) - 1.0)
    research = np.log1p(applicants["publications"].to_numpy(float))[pair_applicant]
    usce = np.log1p(applicants["usce_months"].to_numpy(float))[pair_applicant]
    return (base + step_extra * z_step
            + params.university_publications_weight * research * university
            + params.community_usce_weight * usce * ~university)


def build_market_inputs(applicants: pd.DataFrame, programs: pd.DataFrame,
                        applications: pd.DataFrame, positions: np.ndarray,
                        params: SimulationParams) -> MarketInputs:
    """Everything about a season that the observed tables fix; the oracle reuses it."""
    a_index = pd.Index(applicants["applicant_id"])
    p_index = pd.Index(programs["program_id"])
    pa = a_index.get_indexer(applications["applicant_id"])
    pp = p_index.get_indexer(applications["program_id"])
    if (pa < 0).any() or (pp < 0).any():
        raise ValueError("applications reference unknown applicants or programs")
    rates = _imputed_rates(programs)
    prestige = _prestige(programs, rates)
    t = _type_index(applicants)
    tier = list_tiers(applicants, programs, applications, pa, pp)
    spec = program_specialties(programs)
    # programs rank an applicant for whom they are the backup below equals who chose them
    strength = (pair_strength(applicants, programs, pa, pp, prestige, params)
                - params.backup_rank_penalty * (tier == TIER_BACKUP)
                + type_rank_offsets(params)[spec[pp], t[pa]])
    home = applicants["home_state"].to_numpy(dtype=object)
    same_state = (home[pa] == programs["state"].to_numpy(dtype=object)[pp]).astype(float)
    r = rates[pp, t[pa]]
    # centre strength on the program's applicants of the same type: the published rate is the
    # *average* chance, so strength only moves an applicant around it
    key = pp * len(APPLICANT_TYPES) + t[pa]
    n_key = programs.shape[0] * len(APPLICANT_TYPES)
    cnt = np.bincount(key, minlength=n_key)
    mean_s = np.bincount(key, weights=strength, minlength=n_key) / np.maximum(cnt, 1)
    x = params.interview_strength_weight * (strength - mean_s[key])
    # in-state / out-of-state and signal effects from the program's own published rates
    rin = programs.get("rate_in_state", pd.Series(np.nan, index=programs.index)).to_numpy(float)
    rout = programs.get("rate_out_of_state",
                        pd.Series(np.nan, index=programs.index)).to_numpy(float)
    d_state = np.nan_to_num(np.clip(clipped_logit(rin) - clipped_logit(rout), 0, 3), nan=0.5)
    x = x + d_state[pp] * (same_state - 0.5)
    if "signal" in applications:
        sig = applications["signal"].to_numpy(dtype=object)
        no = programs.get("rate_no_signal", pd.Series(np.nan, index=programs.index)).to_numpy(float)
        for kind, col in (("signal", "rate_signal"), ("gold", "rate_gold_signal"),
                          ("silver", "rate_silver_signal")):
            rs = programs.get(col, pd.Series(np.nan, index=programs.index)).to_numpy(float)
            d = np.nan_to_num(np.clip(clipped_logit(rs) - clipped_logit(no), 0, 4), nan=1.0)
            x = x + (sig == kind) * d[pp]
    # screens: a published Step 2 CK minimum or graduation cut-off removes the application before
    # anyone reads it; the anchoring below then spreads the program's interviews over the rest
    screened = screened_out(applicants, programs, pa, pp)
    x = np.where(screened, -np.inf, x)
    invite_latent = params.interview_strength_weight * params.latent_weight
    # anchor: choose an offset per (program, type) so the expected share invited = published rate
    c = clipped_logit(np.clip(r, 1e-3, MAX_RATE)).copy()
    c_key = np.zeros(n_key)
    target = np.bincount(key, weights=r, minlength=n_key) / np.maximum(cnt, 1)
    for _ in range(12):
        prob = expected_logistic(c_key[key] + x, invite_latent)
        f = np.bincount(key, weights=prob, minlength=n_key) / np.maximum(cnt, 1) - target
        scale = 1.0 / np.sqrt(1.0 + LOGISTIC_PROBIT * invite_latent**2)
        g = np.bincount(key, weights=prob * (1 - prob) * scale, minlength=n_key)
        g = g / np.maximum(cnt, 1)
        c_key = c_key - np.clip(f / np.maximum(g, 1e-6), -3, 3)
    offset = c_key[key] + x
    del c
    never = (r <= 0)
    sponsors = sponsors_visa(programs)
    never |= applicants["needs_visa"].to_numpy(bool)[pa] & ~sponsors[pp]
    offset = np.where(never, -np.inf, offset)
    offset = offset + _interview_enough(offset, pp, invite_latent,
                                        params.min_interviews_per_position * positions)[pp]
    score_obs = strength + params.program_home_state_bonus * same_state
    util = (params.applicant_prestige_weight * prestige[pp]
            + params.applicant_home_weight * same_state)
    capacity = np.ceil(positions * params.interviews_per_position).astype(np.int64)
    return MarketInputs(
        n_applicants=len(applicants), n_programs=len(programs),
        pair_applicant=pa.astype(np.int64), pair_program=pp.astype(np.int64),
        invite_offset=offset, invite_latent_weight=invite_latent,
        score_obs=score_obs, score_latent_weight=params.latent_weight,
        score_noise_sd=params.interview_noise_sd, applicant_util_obs=util,
        applicant_taste_sd=params.applicant_taste_sd, quotas=positions.astype(np.int64),
        capacity=capacity, max_interviews=params.max_interviews_per_applicant,
        max_supplemental_interviews=params.max_supplemental_interviews,
        waitlist_margin=params.waitlist_margin,
        pair_tier=tier, pgy1_program=pgy1_programs(programs),
        advanced_program=program_tracks(programs) == "advanced")


def pgy1_programs(programs: pd.DataFrame) -> np.ndarray:
    """Preliminary and transitional programs (PGY-1 only)."""
    return np.isin(program_tracks(programs), PGY1_TRACKS)


def list_tiers(applicants: pd.DataFrame, programs: pd.DataFrame, applications: pd.DataFrame,
               pa: np.ndarray, pp: np.ndarray) -> np.ndarray:
    """Where each application sits in the applicant's lists (``TIER_*``): the preferred
    specialty first, then the backup, then PGY-1 programs; supplemental lists apart."""
    spec = programs["specialty"].to_numpy(dtype=object)[pp]
    preferred = applicants["preferred_specialty"].to_numpy(dtype=object)[pa]
    backup = (applicants["backup_specialty"].to_numpy(dtype=object)[pa]
              if "backup_specialty" in applicants else np.full(len(pa), None, dtype=object))
    supplemental = (applications["rank_list"].to_numpy(dtype=object) == "supplemental"
                    if "rank_list" in applications else np.zeros(len(pa), bool))
    tier = np.full(len(pa), TIER_PREFERRED, dtype=np.int8)
    tier[pgy1_programs(programs)[pp] & (spec != preferred)] = TIER_FALLBACK
    tier[(spec == backup) & (spec != preferred)] = TIER_BACKUP
    tier[supplemental] = TIER_SUPPLEMENTAL
    return tier


def _interview_enough(offset: np.ndarray, pair_program: np.ndarray, latent: float,
                      wanted: np.ndarray) -> np.ndarray:
    """Per program, the invitation log-odds shift (>= 0) that brings its expected interviews to
    ``wanted``: a program whose published rates would give it too few interviewees to fill
    interviews deeper into its pool, as real programs do. Programs already there keep their
    rates (shift 0); the shift is capped so a program with a thin pool stays short."""
    finite = np.isfinite(offset)
    n = len(wanted)
    shift = np.zeros(n)
    for _ in range(20):
        prob = np.where(finite, expected_logistic(np.where(finite, offset, 0.0)
                                                   + shift[pair_program], latent), 0.0)
        have = np.bincount(pair_program, weights=prob, minlength=n)
        slope = np.bincount(pair_program, weights=prob * (1 - prob), minlength=n)
        step = np.where(have < wanted, (wanted - have) / np.maximum(slope, 1e-6), 0.0)
        shift = np.clip(shift + np.clip(step, 0.0, 1.0), 0.0, _MAX_INTERVIEW_SHIFT)
    return shift


_MAX_INTERVIEW_SHIFT = np.log(3.0)  # at most three times the published odds of an invitation


def screened_out(applicants: pd.DataFrame, programs: pd.DataFrame, pair_applicant: np.ndarray,
                 pair_program: np.ndarray) -> np.ndarray:
    """Pairs a program's published screens reject (below its Step 2 CK minimum, or graduated
    longer ago than its cut-off: ``contracts.eligibility``); programs without the columns screen
    no one."""
    out = np.zeros(len(pair_applicant), bool)
    if "step2_minimum" in programs:
        out |= below_minimum(applicants["step2_ck"].to_numpy(float)[pair_applicant],
                             programs["step2_minimum"].to_numpy(float)[pair_program])
    if "max_years_since_graduation" in programs:
        years = (applicants["season"].to_numpy(float)
                 - applicants["graduation_year"].to_numpy(float))[pair_applicant]
        out |= past_cutoff(years,
                           programs["max_years_since_graduation"].to_numpy(float)[pair_program])
    return out


def _top_k_within_groups(group: np.ndarray, value: np.ndarray, k: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Mask of the ``k[g]`` largest values in each group, and each group's threshold (the largest
    value left out, or -inf where nothing was left out)."""
    order = np.lexsort((-value, group))
    g_sorted = group[order]
    starts = np.searchsorted(g_sorted, g_sorted, side="left")
    rank = np.arange(len(order)) - starts
    keep_sorted = rank < k[g_sorted]
    keep = np.empty(len(order), dtype=bool)
    keep[order] = keep_sorted
    threshold = np.full(len(k), -np.inf)
    first_out = ~keep_sorted & (rank == k[g_sorted])
    threshold[g_sorted[first_out]] = value[order][first_out]
    return keep, threshold


def run_market(inputs: MarketInputs, rng: np.random.Generator) -> MarketOutcome:
    """Draw the unobserved part of a season (latent quality, interview draws, tastes, noise) and
    run the match."""
    m = inputs
    n_pairs = len(m.pair_applicant)
    z = rng.standard_normal(m.n_applicants)
    u_noise = rng.random(n_pairs)
    logistic_noise = np.log(u_noise) - np.log1p(-u_noise)
    invite_u = m.invite_offset + m.invite_latent_weight * z[m.pair_applicant] + logistic_noise
    candidate = invite_u > 0
    # interview capacity: a program invites at most `capacity` of its candidates, the best first
    cand_idx = np.flatnonzero(candidate)
    keep, thr = _top_k_within_groups(m.pair_program[cand_idx], invite_u[cand_idx], m.capacity)
    invited = np.zeros(n_pairs, bool)
    invited[cand_idx[keep]] = True
    invite_threshold = np.maximum(thr, 0.0)
    taste = m.applicant_util_obs + m.applicant_taste_sd * rng.standard_normal(n_pairs)
    # the order of the applicant's primary list: preferred specialty, backup, then PGY-1 programs
    list_order = taste - _TIER_STEP * m.pair_tier
    # applicants attend at most `max_interviews` for their primary list and
    # `max_supplemental_interviews` for a supplemental one, their favourites first ...
    slot = 2 * m.pair_applicant + (m.pair_tier == TIER_SUPPLEMENTAL)
    allowance = np.tile([m.max_interviews, m.max_supplemental_interviews], m.n_applicants)
    inv_idx = np.flatnonzero(invited)
    keep_a, _ = _top_k_within_groups(slot[inv_idx], list_order[inv_idx], allowance)
    interviewed = np.zeros(n_pairs, bool)
    interviewed[inv_idx[keep_a]] = True
    # ... and programs fill declined slots from their waitlist (the next best by invitation
    # utility), which moves interviews from applicants who hoard them to those who have few
    declines = np.bincount(m.pair_program[inv_idx[~keep_a]], minlength=m.n_programs)
    if declines.any():
        # a waitlist holds the near misses: a program short of interviewees does not reach
        # applicants it was far from inviting (a 1 %-rate type stays rare)
        rest = np.flatnonzero(~invited & np.isfinite(m.invite_offset)
                              & (invite_u > -m.waitlist_margin)
                              & (declines[m.pair_program] > 0))
        keep_w, thr_w = _top_k_within_groups(m.pair_program[rest], invite_u[rest], declines)
        wait_idx = rest[keep_w]
        refilled = np.bincount(m.pair_program[wait_idx], minlength=m.n_programs) > 0
        # the waitlist reaches no further than its margin below the invitation threshold
        invite_threshold = np.where(refilled, np.maximum(thr_w, -m.waitlist_margin),
                                    invite_threshold)
        invited[wait_idx] = True
        room = allowance - np.bincount(slot[interviewed], minlength=2 * m.n_applicants)
        keep_r, _ = _top_k_within_groups(slot[wait_idx], list_order[wait_idx], room)
        interviewed[wait_idx[keep_r]] = True
    score = (m.score_obs + m.score_latent_weight * z[m.pair_applicant]
             + m.score_noise_sd * rng.standard_normal(n_pairs))
    rank = _rank_positions(m, interviewed, taste)
    matched, cutoff, filled = match_with_supplemental_lists(m, interviewed, rank, score)
    would_take = interviewed & (score >= cutoff[m.pair_program])
    n_inv = np.bincount(m.pair_applicant[invited], minlength=m.n_applicants)
    n_att = np.bincount(m.pair_applicant[interviewed], minlength=m.n_applicants)
    attend_ratio = np.where(n_inv > 0, n_att / np.maximum(n_inv, 1), 1.0)
    return MarketOutcome(attend_ratio=attend_ratio, interviewed=interviewed, rank_position=rank,
                         program_score=score,
                         matched=matched, would_take=would_take, program_cutoff=cutoff,
                         invite_threshold=invite_threshold, program_filled=filled)


_TIER_STEP = 1e3  # larger than any taste difference: tiers never interleave


def _rank_positions(m: MarketInputs, interviewed: np.ndarray, taste: np.ndarray) -> np.ndarray:
    """Each interviewed pair's position on the applicant's lists (1 = first; 0 = not ranked):
    the primary list by tier then taste, the supplemental list numbered after it."""
    idx = np.flatnonzero(interviewed)
    order = np.lexsort((-taste[idx], m.pair_tier[idx], m.pair_applicant[idx]))
    a_sorted = m.pair_applicant[idx][order]
    starts = np.searchsorted(a_sorted, a_sorted, side="left")
    rank = np.zeros(len(m.pair_applicant), np.int64)
    rank[idx[order]] = np.arange(len(order)) - starts + 1
    return rank


def match_with_supplemental_lists(m: MarketInputs, interviewed: np.ndarray, rank: np.ndarray,
                                   score: np.ndarray
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Match with supplemental PGY-1 lists, in two passes of deferred acceptance.

    1. Every primary list (preferred, backup, fallback PGY-1 programs), all programs.
    2. PGY-1 programs again: applicants matched to an advanced position propose down their
       supplemental list, and everyone whose pass-1 result was a PGY-1 program or nothing
       proposes down the PGY-1 part of their primary list (all of it, for an applicant who
       needs only a PGY-1 year).

    Simplification of the NRMP algorithm (which activates a supplemental list as soon as its
    advanced program tentatively holds the applicant): an applicant displaced from a PGY-1
    program in pass 2 had nothing better on their primary list, so every other match stands.
    Returns per pair ``matched``, per program ``cutoff`` and ``filled``."""
    primary = interviewed & (m.pair_tier != TIER_SUPPLEMENTAL)
    idx = np.flatnonzero(primary)
    first = deferred_acceptance(m.pair_applicant[idx], m.pair_program[idx], rank[idx],
                                score[idx], m.quotas, m.n_applicants)
    matched = np.zeros(len(rank), bool)
    matched[idx] = first.pair_matched
    cutoff, filled = first.program_cutoff.copy(), first.program_filled.copy()
    if not m.pgy1_program.any():
        return matched, cutoff, filled
    held = first.applicant_match
    held_pgy1 = (held < 0) | m.pgy1_program[np.maximum(held, 0)]
    held_advanced = (held >= 0) & m.advanced_program[np.maximum(held, 0)]
    a = m.pair_applicant
    second = interviewed & m.pgy1_program[m.pair_program] & (
        ((m.pair_tier != TIER_SUPPLEMENTAL) & held_pgy1[a])
        | ((m.pair_tier == TIER_SUPPLEMENTAL) & held_advanced[a]))
    idx2 = np.flatnonzero(second)
    quotas = np.where(m.pgy1_program, m.quotas, 0)
    again = deferred_acceptance(a[idx2], m.pair_program[idx2], rank[idx2], score[idx2], quotas,
                                m.n_applicants)
    pgy1_pair = m.pgy1_program[m.pair_program]
    matched[pgy1_pair] = False
    matched[idx2] = again.pair_matched
    cutoff[m.pgy1_program] = again.program_cutoff[m.pgy1_program]
    filled[m.pgy1_program] = again.program_filled[m.pgy1_program]
    return matched, cutoff, filled


# ----------------------------------------------------------------------------- season


def simulate_season(programs: pd.DataFrame, season: int, scale: float,
                    params: SimulationParams, seed: int) -> Season:
    """One full season: applicants, applications, interviews, rank lists, the match, labels."""
    ss = np.random.SeedSequence([seed, season])
    rng_pos, rng_app, rng_apps, rng_market = (np.random.default_rng(s) for s in ss.spawn(4))
    positions = season_positions(programs, season, scale, params, rng_pos)
    if positions.sum() == 0:
        raise ConfigError(f"scale {scale} leaves no positions in season {season}")
    applicants, choices = draw_applicants(rng_app, season, scale, programs, positions, params)
    applications = draw_applications(rng_apps, applicants, programs, positions, choices, params)
    inputs = build_market_inputs(applicants, programs, applications, positions, params)
    out = run_market(inputs, rng_market)
    applications["interviewed"] = out.interviewed
    applications["rank_position"] = pd.array(np.where(out.rank_position > 0, out.rank_position,
                                                      0), dtype="Int64")
    applications.loc[out.rank_position == 0, "rank_position"] = pd.NA
    applications["matched"] = out.matched
    applications["would_take"] = out.would_take.astype(np.int64)
    applications = validate(applications, APPLICATIONS)
    outcomes = pd.DataFrame({
        "program_id": programs["program_id"].to_numpy(), "season": np.int64(season),
        "positions": positions, "filled": out.program_filled,
        "cutoff": out.program_cutoff, "invite_threshold": out.invite_threshold})
    return Season(season, applicants, applications, outcomes)


# ----------------------------------------------------------------------------- oracle

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def analytic_take_probability(inputs: MarketInputs, pairs: np.ndarray,
                              invite_threshold: np.ndarray, cutoff: np.ndarray,
                              attend_ratio: np.ndarray | None = None) -> np.ndarray:
    """P(program would take applicant) for ``pairs`` given one draw's program thresholds,
    integrating the applicant's own latent quality, invitation draw and ranking noise exactly."""
    m = inputs
    off = m.invite_offset[pairs]
    tau = invite_threshold[m.pair_program[pairs]]
    c = cutoff[m.pair_program[pairs]]
    s = m.score_obs[pairs]
    q = np.zeros(len(pairs))
    for node, weight in zip(_GH_NODES, _GH_WEIGHTS, strict=True):
        # off = -inf: never invited (visa rule, rate 0, screens), whatever the program's
        # threshold (which may be -inf too: the NaN of -inf - -inf is masked here)
        with np.errstate(invalid="ignore"):
            gap = off + m.invite_latent_weight * node - tau
        p_inv = np.where(np.isneginf(off), 0.0,
                         expit(np.nan_to_num(gap, nan=0.0, posinf=50.0, neginf=-50.0)))
        p_rank = np.where(np.isneginf(c), 1.0,
                          norm.cdf((s + m.score_latent_weight * node - c) / m.score_noise_sd))
        q += weight * p_inv * p_rank
    if attend_ratio is not None:
        # applicants attend at most max_interviews: scale by the applicant's attendance share in
        # this draw (an approximation: it does not vary with the applicant's own latent quality)
        q *= attend_ratio[m.pair_applicant[pairs]]
    return q


@dataclass
class OracleResult:
    q: np.ndarray  # oracle probability per requested pair
    standard_error: np.ndarray  # Monte-Carlo standard error per pair
    replicates: int


def oracle_q(inputs: MarketInputs, pairs: np.ndarray, replicates: int, seed: int,
             progress: Callable[[int], None] | None = None) -> OracleResult:
    """The true q(a, p) for ``pairs`` (indices into the season's applications).

    Re-runs the unobserved part of the season ``replicates`` times with the applications fixed;
    within each, the pair's own randomness is integrated analytically (Rao-Blackwellised), so the
    estimate never hits exactly 0 or 1 and its Monte-Carlo error comes only from how programs'
    thresholds vary between draws.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0A4C1E]))
    draws = np.empty((replicates, len(pairs)))
    for r in range(replicates):
        out = run_market(inputs, rng)
        draws[r] = analytic_take_probability(inputs, pairs, out.invite_threshold,
                                             out.program_cutoff, out.attend_ratio)
        if progress:
            progress(r + 1)
    q = draws.mean(axis=0)
    se = draws.std(axis=0, ddof=1) / np.sqrt(replicates)
    return OracleResult(q=q, standard_error=se, replicates=replicates)


# ----------------------------------------------------------------------------- to disk


def simulation_fingerprint(params: SimulationParams) -> str:
    """What decides a season besides its run options (seasons, scale, seed, catalog): the
    behavioural parameters and the code of the simulation and of the catalog's derived
    attributes (not the report's, which reads the tables). Seasons on disk made with another
    fingerprint are stale."""
    digest = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode())
    package = Path(__file__).resolve().parents[1]
    code = [p for p in package.glob("simulation/*.py") if p.name != "report.py"]
    for path in sorted([*code, package / "data" / "catalog.py"]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_simulation_manifest(directory: str | Path) -> dict | None:
    """The manifest :func:`simulate_to_disk` wrote beside the tables, or None (real data, or an
    unreadable file)."""
    try:
        made = json.loads((Path(directory) / "simulation_manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return made if isinstance(made, dict) else None


def is_current(made: dict, params: SimulationParams) -> bool:
    """Whether the seasons a manifest describes were made by ``params`` and this code."""
    return made.get("simulation_fingerprint") == simulation_fingerprint(params)


def manifest_config(made: dict, config: SimulateConfig) -> SimulateConfig | None:
    """``config`` with the run options the manifest records (seasons, scale, seed, catalog), or
    None if they are not valid options."""
    options = {k: made[k] for k in ("seasons", "scale", "seed", "catalog") if k in made}
    try:
        return SimulateConfig.model_validate({**config.model_dump(), **options})
    except ValidationError:
        return None


def simulate_to_disk(config: SimulateConfig, programs: pd.DataFrame | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Run every season of ``config`` and write the tables to ``config.output_dir``.

    Writes ``programs``, ``applicants``, ``applications`` and ``program_outcomes`` (Parquet), the
    validation report (Markdown) and a manifest with row counts and file hashes. Every file is
    written to a temporary name and renamed into place, so an interrupted run leaves the previous
    tables as they were.
    """
    from smartpick_ml.data.catalog import describe_catalog, load_catalog
    from smartpick_ml.data.io import (
        sha256_file,
        write_json_atomic,
        write_parquet_atomic,
        write_text_atomic,
    )
    from smartpick_ml.simulation.report import match_rates_by_type, provenance, season_report

    say = progress or (lambda _msg: None)
    supplied = programs
    programs = programs if programs is not None else load_catalog(config.catalog, config.seed)
    unknown = set(config.params.signals) - set(programs["specialty"])
    if unknown:
        raise ConfigError(f"params.signals names specialties not in the catalog: {sorted(unknown)}")
    missing = [s for s in config.seasons if s not in config.params.applicants]
    if missing:
        raise ConfigError(f"seasons {missing} have no applicant counts in params.applicants")
    seasons = []
    for season in config.seasons:
        say(f"season {season}")
        seasons.append(simulate_season(programs, season, config.scale, config.params,
                                       config.seed))
    applicants = pd.concat([s.applicants for s in seasons], ignore_index=True)
    applications = pd.concat([s.applications for s in seasons], ignore_index=True)
    outcomes = pd.concat([s.program_outcomes for s in seasons], ignore_index=True)
    out = Path(config.output_dir)
    paths = {name: out / f"{name}.parquet" for name in
             ("programs", "applicants", "applications", "program_outcomes")}
    for name, frame in (("programs", programs), ("applicants", applicants),
                        ("applications", applications), ("program_outcomes", outcomes)):
        write_parquet_atomic(frame, paths[name])
    fingerprint = simulation_fingerprint(config.params)
    paths["report"] = out / "simulation_report.md"
    source = (describe_catalog(config.catalog) if supplied is None
              else "a catalog supplied by the caller")
    made_by = provenance(config.seasons, config.scale, config.seed, source, len(programs),
                         fingerprint)
    rates = match_rates_by_type(applicants, applications, config.scale)
    write_text_atomic(paths["report"], season_report(programs, applicants, applications,
                                                     outcomes, config.params, config.scale,
                                                     made_by=made_by, rates=rates))
    manifest = {
        "seasons": config.seasons, "scale": config.scale, "seed": config.seed,
        "catalog": config.catalog, "catalog_source": source,
        "simulation_fingerprint": fingerprint,
        "rows": {"programs": len(programs), "applicants": len(applicants),
                 "applications": len(applications)},
        "sha256": {name: sha256_file(p) for name, p in paths.items()},
        "match_rate_by_type": rates.to_dict(orient="records"),
    }
    paths["manifest"] = out / "simulation_manifest.json"
    write_json_atomic(paths["manifest"], manifest)
    return paths
