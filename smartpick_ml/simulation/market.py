"""Who applies where: each applicant's preferred specialty, backup specialty and PGY-1 lists.

Real applicants choose a preferred specialty; many add a backup (ranked below the preferred
programs on the same list); applicants to advanced positions (which start at PGY-2) also rank
preliminary or transitional programs on a supplemental list; and some rank preliminary programs as a
fallback at the bottom of their primary list. This module decides all of that from published
figures of the market season (``params.market``, cited in ``pipelines/simulate.toml``) and the
catalog, and leaves every outcome to the season:

- **Volumes from published counts.** The applicants ranking each specialty and PGY-1 track (NRMP)
  fix how many apply there in all. So the number of backups, supplemental and fallback lists is
  set by those counts, never by a match rate.
- **Preferred specialty by type.** The number of applicants of each type preferring each specialty
  is the table closest to "in proportion to the positions the type fills there" whose row totals
  are the type's applicants and whose column totals are the specialty's applicants less its
  backups (iterative proportional fitting, the maximum-entropy table with those margins), with
  no cell below the positions the type fills there (a type's matches come from its applicants).
  Like the published counts it is a table of active applicants (who rank a program); each type's
  applicants whom no program interviews come on top, where that type applies.
- **Who hedges, and with what (mechanism, judgement parameters).** An applicant adds a backup more
  often the more selective the preferred specialty and the weaker the applicant; the backup is a
  less selective specialty, weighted by the backups its published count leaves room for (its
  applicants less those its own fills imply) and by family (surgical or not). Selectivity is
  revealed by who wins: US MD seniors' share of the positions filled. Backup volumes count the
  backup lists that end with a ranked program (``backup_ranking_share``), as the published counts
  do. Stronger applicants lean toward selective specialties (``specialty_strength_sorting``), with
  the counts above kept.

- **Who wins once interviewed** (``type_rank_offsets``, read by the season). The published
  rates set how many of each type a program interviews, not how it ranks them: a type ranks
  higher, at equal observed strength, in the specialties where it fills a larger share of the
  published positions (``rank_type_by_fill_share``).

Simplifications (``docs/simulation.md``): at most one backup specialty; an applicant to advanced
positions ranks the PGY-1 tracks with one probability for each track; a fallback is one
preliminary track (Medicine, or Surgery for surgical specialties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from smartpick_ml.contracts.config import SimulationParams
from smartpick_ml.contracts.numeric import expected_logistic
from smartpick_ml.contracts.reference import (
    APPLICANT_TYPES,
    MATCH_RESULTS,
    RATE_COLUMN_BY_TYPE,
    SPECIALTY_NAMES,
)

#: Specialties whose applicants back up into surgery (and fall back on a surgical preliminary
#: year); every other one is in the non-surgical family.
SURGICAL_SPECIALTIES = frozenset({
    "General Surgery", "Orthopaedic Surgery", "Neurological Surgery", "Otolaryngology",
    "Vascular Surgery", "Thoracic Surgery", "Obstetrics and Gynecology", "Preliminary Surgery"})
PGY1_TRACKS = ("preliminary", "transitional")
#: Where applicants who need only a PGY-1 year apply: a Transitional Year first, Preliminary
#: Medicine after (their fallback).
PGY1_ONLY_FIRST, PGY1_ONLY_THEN = "Transitional Year", "Preliminary Medicine"
#: Programs a typical applicant ranks in their preferred specialty (NRMP Charting Outcomes: matched
#: US seniors rank ~10-12 contiguous programs): sets how many rank both tracks of a specialty.
_TYPICAL_RANKED = 10
_IPF_ROUNDS = 200


@dataclass(frozen=True)
class SpecialtyMarket:
    """Per specialty (in ``SPECIALTY_NAMES`` order): what the choices read."""

    present: np.ndarray  # has programs with positions in this catalog
    pgy1_only: np.ndarray  # preliminary / transitional programs only
    surgical: np.ndarray
    selectivity: np.ndarray  # US MD seniors' share of positions filled, log-odds z-scored
    advanced_share: np.ndarray  # share of positions at advanced-track programs
    mean_rate: np.ndarray  # (n_spec, n_types) mean published interview rate of the programs
    target: np.ndarray  # applicants expected to apply (published count x modelled share x scale)
    size_factor: float  # this season's market relative to the market season's, x scale
    type_growth: np.ndarray  # (n_types,) each type's applicants relative to the market season's,
    # over the market's (1 for every type in the market season)
    filled: np.ndarray  # (n_spec, n_types) published positions filled by type

    @property
    def categorical(self) -> np.ndarray:
        """Specialties an applicant can prefer or back up into."""
        return self.present & ~self.pgy1_only

    @property
    def published_pgy1(self) -> np.ndarray:
        """PGY-1 tracks this catalog has and the market figures count applicants for."""
        return self.present & self.pgy1_only & np.isfinite(self.target)


@dataclass(frozen=True)
class ChoicePlan:
    """Expected-value solution of the market's choices for one season."""

    preferred: np.ndarray  # (n_spec, n_types) expected applicants preferring each specialty
    backup_intercept: float
    backup_to: np.ndarray  # (n_spec, n_spec) P(backup b | preferred s, adds a backup)
    supplemental: np.ndarray  # (n_spec, n_types) P(ranks this PGY-1 track | applies to advanced)
    fallback_share: np.ndarray  # (n_types, 2, n_spec) per type and family (non-surgical,
    # surgical): which PGY-1 track a fallback goes to
    fallback_intercept: np.ndarray  # (n_types, 2) log-odds of a fallback at average strength


def program_tracks(programs: pd.DataFrame) -> np.ndarray:
    """Each program's track; a catalog without the column is all categorical."""
    if "track" not in programs:
        return np.full(len(programs), "categorical", dtype=object)
    return programs["track"].astype(object).fillna("categorical").to_numpy()


def program_specialties(programs: pd.DataFrame) -> np.ndarray:
    """Each program's specialty as its index into ``SPECIALTY_NAMES`` (the catalog's schema
    admits no other specialty)."""
    return programs["specialty"].map({s: i for i, s in enumerate(SPECIALTY_NAMES)}).to_numpy()


def _draw_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row of ``weights`` (non-negative, not normalised), drawn in
    proportion to the row."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def specialty_market(programs: pd.DataFrame, positions: np.ndarray, season: int, scale: float,
                     params: SimulationParams) -> SpecialtyMarket:
    """Read the catalog and the published market figures into per-specialty arrays."""
    n = len(SPECIALTY_NAMES)
    index = {s: i for i, s in enumerate(SPECIALTY_NAMES)}
    spec = program_specialties(programs)
    pos = np.asarray(positions, dtype=float)
    present = np.bincount(spec, weights=pos, minlength=n) > 0
    track = program_tracks(programs)
    pgy1_prog = np.isin(track, PGY1_TRACKS)
    pgy1_only = np.bincount(spec, weights=pgy1_prog.astype(float), minlength=n) > 0
    advanced = np.bincount(spec, weights=pos * (track == "advanced"), minlength=n)
    advanced_share = advanced / np.maximum(np.bincount(spec, weights=pos, minlength=n), 1e-9)
    rates = programs[[RATE_COLUMN_BY_TYPE[t] for t in APPLICANT_TYPES]].astype(float)
    open_ = pos > 0
    mean_rate = (rates[open_].groupby(spec[open_]).mean().reindex(range(n)).fillna(0.0)
                 .to_numpy())
    modelled = sum(params.applicants[params.market_season].values())
    share = modelled / params.active_applicants if params.active_applicants else 1.0
    season_size = sum(params.applicants[season].values()) / max(modelled, 1)
    target = np.full(n, np.nan)
    filled = published_fills(params)
    published_positions = np.zeros(n)
    for name, fig in params.market.items():
        i = index[name]
        target[i] = (fig.applicants_ranking * share * season_size * scale
                     / (1.0 + both_tracks_share(advanced_share[i])))
        published_positions[i] = fig.positions
    selectivity = _selectivity(filled, published_positions, present & ~pgy1_only)
    type_growth = np.array([params.applicants[season][t]
                            / max(params.applicants[params.market_season][t], 1)
                            for t in APPLICANT_TYPES]) / season_size
    return SpecialtyMarket(present=present, pgy1_only=pgy1_only,
                           surgical=np.array([s in SURGICAL_SPECIALTIES for s in SPECIALTY_NAMES]),
                           selectivity=selectivity, advanced_share=advanced_share,
                           mean_rate=mean_rate,
                           target=np.where(present, target, np.nan), filled=filled,
                           size_factor=season_size * scale, type_growth=type_growth)


def published_fills(params: SimulationParams) -> np.ndarray:
    """(n_spec, n_types) the positions each applicant type filled in each specialty in the
    market season (NRMP, ``params.market``); 0 where nothing is published."""
    out = np.zeros((len(SPECIALTY_NAMES), len(APPLICANT_TYPES)))
    for name, fig in params.market.items():
        out[SPECIALTY_NAMES.index(name)] = [fig.filled[t] for t in APPLICANT_TYPES]
    return out


def _selectivity(filled: np.ndarray, positions: np.ndarray, categorical: np.ndarray
                 ) -> np.ndarray:
    """Per specialty: how selective it is, as the log-odds of its positions that US MD seniors
    filled in the market season (the competitiveness index NRMP readers use), z-scored over the
    categorical specialties with published figures; 0 elsewhere. Revealed by who wins the
    positions, not by interview rates, which are high where few apply (Radiation Oncology,
    Child Neurology)."""
    known = categorical & (positions > 0)
    out = np.zeros(len(positions))
    if known.sum() > 1:
        share = filled[known, APPLICANT_TYPES.index("us_md_senior")] / positions[known]
        raw = logit(np.clip(share, 0.01, 0.99))
        out[known] = (raw - raw.mean()) / (raw.std() + 1e-9)
    return out


def type_rank_offsets(params: SimulationParams) -> np.ndarray:
    """(n_spec, n_types) how programs of each specialty rank each applicant type at equal
    observed strength: ``rank_type_by_fill_share`` times the log of the type's share of the
    specialty's published fills over its share of all of them (0 where none are published).

    The published interview rates set how many of each type a program interviews; this sets how
    they fare once interviewed. Specialties that train many IMGs rank them as they rank US
    seniors; those that fill with US seniors rank the few IMGs they interview lower. Without it
    every type turns interviews into matches alike within a specialty, and non-US IMGs fill the
    specialties where they are a small minority half as often again as published."""
    out = np.zeros((len(SPECIALTY_NAMES), len(APPLICANT_TYPES)))
    if params.rank_type_by_fill_share == 0:
        return out
    published = np.isin(SPECIALTY_NAMES, list(params.market))
    # one more position each, so a type that filled none is ranked low, not infinitely low
    filled = published_fills(params)[published] + 1.0
    share = filled / filled.sum(axis=1, keepdims=True)
    overall = filled.sum(axis=0) / filled.sum()
    ratio = np.clip(np.log(share / overall[None, :]), -_MAX_LOG_SHARE_RATIO, _MAX_LOG_SHARE_RATIO)
    out[published] = params.rank_type_by_fill_share * ratio
    return out


#: a type twenty times rarer in a specialty than overall is ranked no lower than that
_MAX_LOG_SHARE_RATIO = 3.0


def both_tracks_share(advanced_share: float | np.ndarray) -> float | np.ndarray:
    """Share of a specialty's applicants who rank programs of both its tracks (categorical and
    advanced), if they rank a typical number of programs, each advanced with the specialty's
    share. The NRMP counts such an applicant once per track, so a specialty's published
    applicants are its distinct applicants x (1 + this share)."""
    a = np.asarray(advanced_share, dtype=float)
    return 1.0 - a**_TYPICAL_RANKED - (1.0 - a) ** _TYPICAL_RANKED


def supplemental_share(advanced_share: float | np.ndarray) -> float | np.ndarray:
    """Share of a specialty's applicants who apply to at least one of its advanced programs and
    so rank PGY-1 programs on a supplemental list: with a typical number of programs ranked, each
    advanced with the specialty's share."""
    a = np.asarray(advanced_share, dtype=float)
    return 1.0 - (1.0 - a) ** _TYPICAL_RANKED


def _fit_table(seed: np.ndarray, column_totals: np.ndarray, row_totals: np.ndarray,
               lower: np.ndarray | None = None) -> np.ndarray:
    """Iterative proportional fitting: ``seed`` scaled per row and per column until its column
    sums are ``column_totals`` and its row sums ``row_totals`` (rescaled to the same total), no
    cell below ``lower``."""
    row_totals = row_totals * column_totals.sum() / max(row_totals.sum(), 1e-12)
    x = seed.astype(float).copy()
    low = np.zeros_like(x) if lower is None else np.asarray(lower, dtype=float)
    for _ in range(_IPF_ROUNDS):
        x = _scale_to_totals(x, row_totals, low, axis=1)
        x = _scale_to_totals(x, column_totals, low, axis=0)
    return x


def _scale_to_totals(x: np.ndarray, totals: np.ndarray, low: np.ndarray, axis: int
                     ) -> np.ndarray:
    """Scale each line of ``x`` (rows: ``axis=1``) by one factor so that its sum, with every
    cell raised to its floor ``low``, is its total."""
    def per_line(v: np.ndarray) -> np.ndarray:
        return v[:, None] if axis == 1 else v[None, :]

    pinned = np.zeros(x.shape, bool)
    while True:  # pinning a cell lowers the factor, which may pin more: at most one pass a cell
        fixed = np.where(pinned, low, 0.0).sum(axis=axis)
        free = np.where(pinned, 0.0, x).sum(axis=axis)
        f = np.maximum(totals - fixed, 0.0) / np.maximum(free, 1e-12)
        now = pinned | (x * per_line(f) < low)
        if (now == pinned).all():
            return np.maximum(x * per_line(f), low)
        pinned = now


def _solve_intercept(expected: callable, target: float) -> float:
    """The intercept c with expected(c) = target (expected rises with c), by bisection."""
    lo, hi = -15.0, 15.0
    if target <= expected(lo):
        return lo
    if target >= expected(hi):
        return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def backup_destinations(market: SpecialtyMarket, params: SimulationParams) -> np.ndarray:
    """P(backup = b | preferred = s): less selective specialties, in proportion to the backups
    each one's published count leaves room for, family-weighted."""
    cat = market.categorical
    w = _backup_room(market, params)[None, :]
    less = market.selectivity[None, :] < market.selectivity[:, None]
    family = np.where(market.surgical[None, :] == market.surgical[:, None],
                      params.backup_family_affinity, 1.0)
    w = w * family * less * cat[None, :] * cat[:, None]
    np.fill_diagonal(w, 0.0)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)


def _backup_room(market: SpecialtyMarket, params: SimulationParams) -> np.ndarray:
    """Per specialty: its published applicants less those its own fills imply (each type's fills
    over the type's published match rate), floored at a tenth of its applicants. Backups go where
    the published count exceeds what the specialty's own applicants account for: many rank
    Internal or Family Medicine below their first choice, few rank Pediatrics."""
    target = np.nan_to_num(np.where(market.categorical, market.target, 0.0))
    own = (market.filled * market.size_factor / _published_rates(params)[None, :]).sum(axis=1)
    return np.maximum(target - own, 0.1 * target)


def _published_rates(params: SimulationParams) -> np.ndarray:
    """Per type: its published match rate in the market season, as a share."""
    return np.array([MATCH_RESULTS[params.market_season][t][1] for t in APPLICANT_TYPES]) / 100


def _backup_logit(market: SpecialtyMarket, params: SimulationParams) -> np.ndarray:
    """(n_spec, n_types) log-odds of adding a backup at average strength, before the intercept."""
    return (params.backup_competitiveness_weight * market.selectivity[:, None]
            + params.per_type("backup_bias")[None, :])


def plan_choices(market: SpecialtyMarket, counts: np.ndarray,
                 params: SimulationParams) -> ChoicePlan:
    """Solve the expected preferred counts, backup level, supplemental and fallback rates so that
    the expected applicants to each specialty and track equal the published ones."""
    cat = market.categorical & np.isfinite(market.target)
    pgy1_only = _pgy1_only_counts(market, params)
    counts = np.maximum(counts - pgy1_only, 0.0)
    dest = backup_destinations(market, params)
    has_dest = dest.sum(axis=1) > 0
    seed = np.where(cat[:, None], market.filled + 1.0, 0.0)
    target = np.nan_to_num(market.target)
    # the published counts are of applicants who rank (active): those whom no program
    # interviews apply but never rank, so they add no backups. The table is fitted on active
    # applicants, so a specialty many IMGs prefer gets its never-ranking IMGs on top
    active_share = 1.0 / params.per_type("applicants_per_active")
    active = counts * active_share
    backups_needed = max(target[cat].sum() - active.sum(), 0.0)
    base = _backup_logit(market, params)
    cols = np.where(cat, target, 0.0)
    # a type cannot fill more positions than it has applicants preferring the specialty (backups
    # add few matches): without this floor the table starves US seniors of the large specialties
    # that absorb the backups, and IMGs fill their positions instead
    floor = np.where(cat[:, None], market.filled * market.size_factor, 0.0)
    # backups count where they rank: many backup lists get no interview
    ranking = has_dest[:, None] * params.per_type("backup_ranking_share")[None, :]
    intercept = 0.0
    for _ in range(30):
        preferred = _fit_table(seed, active, cols, lower=floor) / active_share[None, :]

        def expected(c: float, preferred: np.ndarray = preferred) -> float:
            p = expected_logistic(base + c, params.backup_strength_weight)
            return float((preferred * p * ranking).sum())

        intercept = _solve_intercept(expected, backups_needed)
        rate = expected_logistic(base + intercept, params.backup_strength_weight)
        inflow = dest.T @ (preferred * rate * ranking).sum(axis=1)
        new_cols = np.where(cat, np.maximum(target - inflow, 0.1 * target), 0.0)
        if np.allclose(new_cols, cols, rtol=1e-4, atol=1e-3):
            break
        cols = new_cols
    ty = _index_of(PGY1_ONLY_FIRST)
    if ty is not None and market.present[ty]:
        preferred[ty] = pgy1_only
    supplemental, fallback_share, fallback_intercept = _plan_pgy1(market, preferred, params)
    return ChoicePlan(preferred=preferred, backup_intercept=intercept, backup_to=dest,
                      supplemental=supplemental, fallback_share=fallback_share,
                      fallback_intercept=fallback_intercept)


def _index_of(name: str) -> int | None:
    return SPECIALTY_NAMES.index(name) if name in SPECIALTY_NAMES else None


def _pgy1_only_counts(market: SpecialtyMarket, params: SimulationParams) -> np.ndarray:
    """Per type: applicants who rank only a PGY-1 year (matched in a specialty with its own match),
    scaled like the market's other counts."""
    return np.array([params.pgy1_only_applicants.get(t, 0) for t in APPLICANT_TYPES],
                    dtype=float) * market.size_factor


def _ranks_any(market: SpecialtyMarket, k: int, applications: float | np.ndarray
               ) -> np.ndarray:
    """Per type: P(at least one interview, so a rank) from ``applications`` to track ``k``."""
    return 1.0 - (1.0 - np.clip(market.mean_rate[k], 0.0, 1.0)) ** applications


def pgy1_rankers(market: SpecialtyMarket, params: SimulationParams) -> np.ndarray:
    """(n_spec, n_types) applicants of each type expected to rank each PGY-1 track: its published
    applicants split over the types as their published fills there imply (zero elsewhere). Who
    ranks a track, by type, is not published; who fills it is. A list is used only when nothing
    above it matched: a supplemental list when its applicant matches an advanced position (about
    the type's match rate), a fallback when they match nothing else (one minus the rate). So a
    type's fills imply fills / rate applicants on the tracks supplemental lists reach, and
    fills / (1 - rate) on the surgical track, which only fallbacks reach. In another season each
    type ranks the track as often per applicant as in the market season, whose split is the
    published one (``type_growth``)."""
    pgy1 = market.published_pgy1
    rates = _published_rates(params)
    used = np.where(market.surgical[:, None], 1.0 - rates[None, :], rates[None, :])
    implied = np.where(pgy1[:, None], market.filled / used + 1e-9, 0.0)
    return (np.where(pgy1, np.nan_to_num(market.target), 0.0)[:, None] * implied
            / np.maximum(implied.sum(axis=1, keepdims=True), 1e-12)) * market.type_growth[None, :]


def _plan_pgy1(market: SpecialtyMarket, preferred: np.ndarray, params: SimulationParams
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supplemental and fallback rates that meet each type's ``pgy1_rankers``. Applicants who
    need only a PGY-1 year come first; then a type's applicants to advanced positions on a
    supplemental list (non-surgical tracks, one rate per track and type); the rest fall back on
    the track at the bottom of their primary list, ``backup_family_affinity`` times as often on a
    track of their own family (surgical or not) as on another, so each type and family has its
    own rate. Volumes are solved on *ranking* (at least one interview), as the NRMP counts them."""
    n, n_types = len(SPECIALTY_NAMES), len(APPLICANT_TYPES)
    pgy1 = market.published_pgy1
    target = pgy1_rankers(market, params)
    advanced = preferred * supplemental_share(market.advanced_share)[:, None]
    adv_by_type = advanced.sum(axis=0)  # PGY-1 tracks have no advanced positions
    # applicants who need only a PGY-1 year: those of the first track, who fall back on the other
    only = preferred[_index_of(PGY1_ONLY_FIRST)] if _index_of(PGY1_ONLY_FIRST) is not None \
        else np.zeros(n_types)
    for name, applications in ((PGY1_ONLY_FIRST, params.per_type("applications_mean")),
                               (PGY1_ONLY_THEN, params.fallback_applications_mean)):
        k = _index_of(name)
        if k is not None and pgy1[k]:
            target[k] = np.maximum(target[k] - only * _ranks_any(market, k, applications), 0.0)
    supplemental = np.zeros((n, n_types))
    leftover = target.copy()
    for k in np.flatnonzero(pgy1 & ~market.surgical):
        ranks = adv_by_type * _ranks_any(market, k, params.supplemental_applications_mean)
        supplemental[k] = np.minimum(target[k] / np.maximum(ranks, 1e-9), 0.9)
        leftover[k] = np.maximum(target[k] - supplemental[k] * ranks, 0.0)
    # fallback takers each track needs from each type: its leftover rankers / P(ranks | applies)
    takers = np.zeros((n, n_types))
    for k in np.flatnonzero(pgy1):
        takers[k] = leftover[k] / np.maximum(
            _ranks_any(market, k, params.fallback_applications_mean), 1e-9)
    not_advanced = np.where(market.pgy1_only[:, None], 0.0, preferred - advanced)
    by_family = np.stack([(not_advanced * (market.surgical == surgical)[:, None]).sum(axis=0)
                          for surgical in (False, True)])  # (2, n_types)
    affinity = np.where(market.surgical[None, :] == np.array([[False], [True]]),
                        params.backup_family_affinity, 1.0) * pgy1[None, :]
    fallback_share = np.zeros((n_types, 2, n))
    fallback_intercept = np.full((n_types, 2), -np.inf)
    for t in range(n_types):
        # P(falls back on k | family f) = affinity[f, k] x one factor per track, the factor set
        # so that the track's takers are met
        factor = takers[:, t] / np.maximum(affinity.T @ by_family[:, t], 1e-12)
        p_fallback = affinity * factor[None, :]
        for family in (0, 1):
            total = p_fallback[family].sum()
            if total <= 0 or by_family[family, t] <= 0:
                continue
            fallback_share[t, family] = p_fallback[family] / total
            fallback_intercept[t, family] = _solve_intercept(
                lambda c: expected_logistic(c, params.fallback_strength_weight), min(total, 1.0))
    return supplemental, fallback_share, fallback_intercept


@dataclass(frozen=True)
class Choices:
    """Per applicant: specialty indices (into ``SPECIALTY_NAMES``; -1 = none)."""

    preferred: np.ndarray
    backup: np.ndarray
    fallback: np.ndarray  # the PGY-1 track ranked at the bottom of the primary list
    supplemental: np.ndarray  # (n, n_spec) bool: PGY-1 tracks on a supplemental list


def draw_choices(rng: np.random.Generator, type_idx: np.ndarray, strength_z: np.ndarray,
                 market: SpecialtyMarket, plan: ChoicePlan,
                 params: SimulationParams) -> Choices:
    """Draw every applicant's specialties. ``strength_z``: observed strength in SD units of the
    applicant's type (stronger applicants lean toward selective specialties)."""
    n, n_spec = len(type_idx), len(SPECIALTY_NAMES)
    preferred = np.full(n, -1, dtype=np.int64)
    sorting = params.specialty_strength_sorting
    for j in range(len(APPLICANT_TYPES)):
        members = np.flatnonzero(type_idx == j)
        want = plan.preferred[:, j]
        if len(members) == 0 or want.sum() <= 0:
            continue
        want = want / want.sum() * len(members)
        tilt = np.exp(sorting * np.outer(strength_z[members], market.selectivity))
        mult = np.ones(n_spec)
        for _ in range(50):  # keep the type's expected counts per specialty while tilting
            p = tilt * (mult * want)[None, :]
            p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
            mult *= want / np.maximum(p.sum(axis=0), 1e-12)
            mult = np.where(want > 0, mult, 0.0)
        preferred[members] = _draw_rows(rng, p)
    base = _backup_logit(market, params)[preferred, type_idx]
    p_backup = expit(base + plan.backup_intercept - params.backup_strength_weight * strength_z)
    has_dest = plan.backup_to[preferred].sum(axis=1) > 0
    adds = (rng.random(n) < p_backup) & has_dest
    backup = np.full(n, -1, dtype=np.int64)
    if adds.any():
        backup[adds] = _draw_rows(rng, plan.backup_to[preferred[adds]])
    advanced = rng.random(n) < supplemental_share(market.advanced_share)[preferred]
    supplemental = advanced[:, None] & (rng.random((n, n_spec)) < plan.supplemental.T[type_idx])
    surgical = market.surgical[preferred]
    c = plan.fallback_intercept[type_idx, surgical.astype(int)]
    with np.errstate(invalid="ignore"):
        p_fb = np.where(np.isneginf(c), 0.0,
                        expit(c - params.fallback_strength_weight * strength_z))
    takes = ~advanced & (rng.random(n) < p_fb) & ~market.pgy1_only[preferred]
    fallback = np.full(n, -1, dtype=np.int64)
    then = _index_of(PGY1_ONLY_THEN)
    if then is not None and market.present[then]:
        fallback[market.pgy1_only[preferred] & (preferred != then)] = then
    if takes.any():
        fallback[takes] = _draw_rows(
            rng, plan.fallback_share[type_idx[takes], surgical[takes].astype(int)])
    return Choices(preferred=preferred, backup=backup, fallback=fallback,
                   supplemental=supplemental)
