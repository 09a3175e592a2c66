"""Who applies where: preferred specialty, backups and PGY-1 lists from published figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpick_ml.contracts.config import load_simulate_config
from smartpick_ml.contracts.errors import ConfigError
from smartpick_ml.contracts.reference import APPLICANT_TYPES, MATCH_RESULTS, SPECIALTY_NAMES
from smartpick_ml.data.catalog import synthetic_catalog
from smartpick_ml.simulation.market import (
    _fit_table,
    backup_destinations,
    both_tracks_share,
    draw_choices,
    pgy1_rankers,
    plan_choices,
    specialty_market,
    type_rank_offsets,
)
from smartpick_ml.simulation.season import season_positions

CONFIG = Path(__file__).resolve().parents[2] / "pipelines" / "simulate.toml"


@pytest.fixture(scope="module")
def params():
    return load_simulate_config(CONFIG).params


@pytest.fixture(scope="module")
def market(params):
    programs = synthetic_catalog(seed=3)
    positions = season_positions(programs, 2025, 1.0, params, np.random.default_rng(0))
    return specialty_market(programs, positions, 2025, 1.0, params)


@pytest.fixture(scope="module")
def counts(params):
    """Applicants drawn per type: the published (active) counts x ``applicants_per_active``."""
    return np.array([params.applicants[2025][t] for t in APPLICANT_TYPES], float) \
        * params.per_type("applicants_per_active")


@pytest.fixture(scope="module")
def plan(market, counts, params):
    return plan_choices(market, counts, params)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(0, 10_000))
def test_fitted_table_has_the_given_margins(n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    table = rng.uniform(0.1, 10.0, (n_rows, n_cols))
    cols = rng.uniform(1, 100, n_cols)
    rows = rng.uniform(1, 100, n_rows)
    fitted = _fit_table(table, column_totals=cols, row_totals=rows)
    np.testing.assert_allclose(fitted.sum(axis=1), rows * cols.sum() / rows.sum(), rtol=1e-6)
    np.testing.assert_allclose(fitted.sum(axis=0), cols, rtol=1e-6)
    # it only rescales rows and columns: cross-ratios of the seed are kept
    ratio = (fitted[0, 0] * fitted[1, -1]) / (fitted[0, -1] * fitted[1, 0])
    assert ratio == pytest.approx((table[0, 0] * table[1, -1]) / (table[0, -1] * table[1, 0]))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(0, 10_000), st.floats(0.0, 0.9))
def test_fitted_table_keeps_its_floor_and_margins(n_rows, n_cols, seed, tightness):
    """With a floor the margins still hold and no cell is below it; floors that bind are met."""
    rng = np.random.default_rng(seed)
    table = rng.uniform(0.1, 10.0, (n_rows, n_cols))
    cols = rng.uniform(1, 100, n_cols)
    rows = rng.uniform(1, 100, n_rows)
    rows_scaled = rows * cols.sum() / rows.sum()
    # a feasible floor: a share of the smaller margin, spread over the line
    room = np.minimum(rows_scaled[:, None] / n_cols, cols[None, :] / n_rows)
    lower = tightness * room * rng.uniform(0.0, 1.0, table.shape)
    lower[0, 0] = tightness * room[0, 0]  # at least one that may bind
    fitted = _fit_table(table, column_totals=cols, row_totals=rows, lower=lower)
    assert (fitted >= lower - 1e-9).all()
    np.testing.assert_allclose(fitted.sum(axis=1), rows_scaled, rtol=1e-5)
    np.testing.assert_allclose(fitted.sum(axis=0), cols, rtol=1e-5)


def test_fitted_table_lifts_a_starved_cell_to_its_floor():
    table = np.array([[10.0, 1.0], [1.0, 10.0]])
    cols = np.array([50.0, 50.0])
    fitted = _fit_table(table, column_totals=cols, row_totals=np.array([50.0, 50.0]))
    assert fitted[0, 1] < 10  # unconstrained, the small cell stays small
    floored = _fit_table(table, column_totals=cols, row_totals=np.array([50.0, 50.0]),
                         lower=np.array([[0.0, 20.0], [0.0, 0.0]]))
    assert floored[0, 1] == pytest.approx(20.0, rel=1e-6)
    np.testing.assert_allclose(floored.sum(axis=0), cols, rtol=1e-6)


def test_no_type_prefers_a_specialty_less_often_than_it_fills_it(plan, market, params):
    """A type's matches in a specialty come from its applicants there (backups add few), so the
    plan never gives a type fewer active applicants preferring a specialty than the positions
    it filled there in the published season (here: US seniors in the large specialties backups
    go to)."""
    cat = market.categorical & np.isfinite(market.target)
    floor = market.filled[cat] * market.size_factor
    active = plan.preferred / params.per_type("applicants_per_active")[None, :]
    assert (active[cat] >= floor * (1 - 1e-6)).all()


def test_preferred_counts_add_up_to_each_types_applicants(plan, counts, market, params):
    np.testing.assert_allclose(plan.preferred.sum(axis=0), counts, rtol=1e-6)
    # only those who need just a PGY-1 year (matched in a specialty with its own match) prefer
    # one, a Transitional Year; for everyone else PGY-1 years are fallback or supplemental lists
    from smartpick_ml.simulation.market import PGY1_ONLY_FIRST

    ty = SPECIALTY_NAMES.index(PGY1_ONLY_FIRST)
    only = [params.pgy1_only_applicants[t] for t in APPLICANT_TYPES]
    np.testing.assert_allclose(plan.preferred[ty], only)
    others = market.pgy1_only & (np.arange(len(SPECIALTY_NAMES)) != ty)
    assert (plan.preferred[others] == 0).all()


def test_expected_applicants_per_specialty_meet_the_published_counts(plan, market, counts,
                                                                     params):
    """Active applicants preferring each specialty plus the expected backups that end with a
    ranked program (``backup_ranking_share``) follow the published applicants of each specialty
    (less the double count of applicants ranking both tracks), where no floor was needed: the
    published counts are of applicants who rank. The drawn applicants whom no program will
    interview come on top, with their own type's share, so the totals exceed the published ones
    by exactly that many."""
    from smartpick_ml.contracts.numeric import expected_logistic
    from smartpick_ml.simulation.market import _backup_logit

    rate = expected_logistic(_backup_logit(market, params) + plan.backup_intercept,
                              params.backup_strength_weight)
    has_dest = plan.backup_to.sum(axis=1) > 0
    ranking = has_dest[:, None] * params.per_type("backup_ranking_share")[None, :]
    inflow = plan.backup_to.T @ (plan.preferred * rate * ranking).sum(axis=1)
    active = plan.preferred / params.per_type("applicants_per_active")[None, :]
    cat = market.categorical & np.isfinite(market.target)
    # a specialty whose every type is at the positions it fills (the published fills need more
    # applicants than the published ranking count leaves) has more applicants than published
    at_fills = (active <= market.filled * market.size_factor * (1 + 1e-6)).all(axis=1)
    unfloored = (cat & ~at_fills
                 & (active.sum(axis=1) > 0.11 * np.nan_to_num(market.target)))
    assert unfloored.sum() >= 15
    never_rank = counts.sum() - (counts / params.per_type("applicants_per_active")).sum()
    assert never_rank > 0
    total = plan.preferred.sum(axis=1) + inflow
    np.testing.assert_allclose(total[cat].sum() - market.target[cat].sum(), never_rank,
                               rtol=0.02)
    total_active = active.sum(axis=1) + inflow
    share = total_active / total_active[cat].sum()
    published_share = market.target / market.target[cat].sum()
    np.testing.assert_allclose(share[unfloored], published_share[unfloored], rtol=0.02)


def test_backups_go_to_less_selective_specialties(market, params):
    dest = backup_destinations(market, params)
    rows = dest.sum(axis=1)
    assert np.all((np.abs(rows - 1) < 1e-9) | (rows == 0))
    assert np.all(np.diag(dest) == 0)
    s, b = np.nonzero(dest)
    assert (market.selectivity[b] < market.selectivity[s]).all()
    assert not market.pgy1_only[b].any()
    # the least selective specialty has nowhere to back up to; the most selective has
    least = np.argmin(np.where(market.categorical, market.selectivity, np.inf))
    most = np.argmax(np.where(market.categorical, market.selectivity, -np.inf))
    assert rows[least] == 0 and rows[most] == pytest.approx(1)


def test_selectivity_is_the_share_of_positions_us_md_seniors_fill(market, params):
    """Revealed by who wins the positions, not by interview rates (high where few apply)."""
    cat = market.categorical & np.isfinite(market.target)
    names = np.array(SPECIALTY_NAMES)[cat]
    share = [params.market[n].filled["us_md_senior"] / params.market[n].positions for n in names]
    assert (np.argsort(market.selectivity[cat]) == np.argsort(share)).all()
    assert market.selectivity[cat].mean() == pytest.approx(0, abs=1e-9)
    assert (market.selectivity[~cat] == 0).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(0, 10_000))
def test_selectivity_orders_specialties_by_the_us_md_share_of_their_fills(n, seed):
    """For any published fills: z-scored over the categorical specialties with positions (mean 0,
    SD 1), rising with the share US MD seniors filled, 0 for the rest."""
    from smartpick_ml.simulation.market import _selectivity

    rng = np.random.default_rng(seed)
    positions = rng.integers(0, 500, n).astype(float)
    filled = rng.uniform(0, 1, (n, len(APPLICANT_TYPES))) * positions[:, None] / 4
    categorical = rng.random(n) < 0.8
    out = _selectivity(filled, positions, categorical)
    known = categorical & (positions > 0)
    assert (out[~known] == 0).all()
    if known.sum() > 1:
        share = np.clip(filled[known, 0] / positions[known], 0.01, 0.99)
        order = np.argsort(share, kind="stable")
        assert (np.diff(out[known][order]) >= -1e-9).all()
        assert out[known].mean() == pytest.approx(0, abs=1e-9)
        if np.ptp(share) > 1e-6:
            assert out[known].std() == pytest.approx(1, abs=1e-6)
    else:
        assert (out == 0).all()


def test_backups_go_where_the_published_counts_leave_room(market, params, plan):
    """A specialty whose published applicants are nearly all its own (each type's fills over the
    type's match rate) gets few backups: Pediatrics, with 1.2 applicants a position, gets far fewer
    than Family Medicine, with as many positions as Pediatrics has applicants."""
    from smartpick_ml.simulation.market import _backup_room

    room = _backup_room(market, params)
    cat = market.categorical & np.isfinite(market.target)
    assert (room[cat] >= 0.1 * market.target[cat] - 1e-9).all()
    assert (room[cat] <= market.target[cat] + 1e-9).all()
    peds, fm = SPECIALTY_NAMES.index("Pediatrics"), SPECIALTY_NAMES.index("Family Medicine")
    inflow = plan.backup_to.sum(axis=0)  # backup weight received, each preferred specialty once
    assert room[peds] < 0.5 * room[fm]
    assert inflow[peds] < inflow[fm]


def test_both_tracks_share_is_zero_for_single_track_specialties():
    assert both_tracks_share(0.0) == 0 and both_tracks_share(1.0) == 0
    assert 0 < both_tracks_share(0.5) < 1


def test_drawn_choices_follow_the_plan(market, plan, params, counts):
    rng = np.random.default_rng(5)
    n = 40_000
    type_idx = rng.choice(len(APPLICANT_TYPES), size=n, p=counts / counts.sum())
    strength = rng.standard_normal(n)
    ch = draw_choices(rng, type_idx, strength, market, plan, params)
    assert (ch.preferred >= 0).all()
    # those who need only a PGY-1 year: a Transitional Year, Preliminary Medicine after, nothing
    # else
    from smartpick_ml.simulation.market import PGY1_ONLY_THEN

    only = market.pgy1_only[ch.preferred]
    assert 0 < only.mean() < 0.03
    assert (ch.fallback[only] == SPECIALTY_NAMES.index(PGY1_ONLY_THEN)).all()
    assert (ch.backup[only] == -1).all() and not ch.supplemental[only].any()
    # per type, the share preferring each large specialty is the plan's
    for j in range(len(APPLICANT_TYPES)):
        share = np.bincount(ch.preferred[type_idx == j], minlength=len(SPECIALTY_NAMES))
        share = share / share.sum()
        want = plan.preferred[:, j] / plan.preferred[:, j].sum()
        big = want > 0.05
        np.testing.assert_allclose(share[big], want[big], atol=0.015)
    # stronger applicants lean toward selective specialties
    sel = market.selectivity[ch.preferred]
    assert np.corrcoef(strength, sel)[0, 1] > 0.05
    # weaker applicants add a backup more often; a backup is never the preferred specialty
    has = ch.backup >= 0
    assert strength[has].mean() < strength[~has].mean()
    assert (ch.backup[has] != ch.preferred[has]).all()
    # PGY-1 lists: a supplemental list only for applicants to advanced positions' specialties,
    # a fallback only without one, both only to PGY-1 tracks
    supp = ch.supplemental.any(axis=1)
    assert (market.advanced_share[ch.preferred[supp]] > 0).all()
    assert not (supp & (ch.fallback >= 0)).any()
    assert market.pgy1_only[ch.fallback[ch.fallback >= 0]].all()
    assert market.pgy1_only[np.nonzero(ch.supplemental)[1]].all()


def test_pgy1_rankers_split_each_track_as_the_types_fills_imply(market, params):
    """A PGY-1 track's published applicants, split over the types: they add up to the track's
    count; on a track supplemental lists reach, in proportion to the type's fills over its
    published match rate; on Preliminary Surgery, which only fallbacks reach, over one minus it."""
    got = pgy1_rankers(market, params)
    pgy1 = market.present & market.pgy1_only
    assert pgy1.sum() == 3
    np.testing.assert_allclose(got[pgy1].sum(axis=1), market.target[pgy1], rtol=1e-9)
    assert (got[~pgy1] == 0).all()
    rate = np.array([MATCH_RESULTS[2025][t][1] for t in APPLICANT_TYPES]) / 100
    md, do, nus = (APPLICANT_TYPES.index(t) for t in ("us_md_senior", "us_do_senior",
                                                       "non_us_img"))
    ty, ps = SPECIALTY_NAMES.index("Transitional Year"), SPECIALTY_NAMES.index(
        "Preliminary Surgery")
    f = market.filled
    assert got[ty, do] / got[ty, md] == pytest.approx(
        (f[ty, do] / rate[do]) / (f[ty, md] / rate[md]), rel=1e-6)
    assert got[ps, nus] / got[ps, md] == pytest.approx(
        (f[ps, nus] / (1 - rate[nus])) / (f[ps, md] / (1 - rate[md])), rel=1e-6)


def test_pgy1_rankers_per_applicant_of_each_type_hold_across_seasons(params):
    """The published split is of the market season. In another season each type ranks a PGY-1
    track as often per applicant as then, so a type with fewer applicants has fewer rankers even
    when the season as a whole is about as large."""
    programs = synthetic_catalog(seed=3)
    by_season = {}
    for season in (2023, 2025):
        positions = season_positions(programs, season, 1.0, params, np.random.default_rng(0))
        by_season[season] = pgy1_rankers(
            specialty_market(programs, positions, season, 1.0, params), params)
    pgy1 = by_season[2025].sum(axis=1) > 0
    growth = np.array([params.applicants[2023][t] / params.applicants[2025][t]
                       for t in APPLICANT_TYPES])
    np.testing.assert_allclose(by_season[2023][pgy1] / by_season[2025][pgy1],
                               np.broadcast_to(growth, (pgy1.sum(), len(growth))), rtol=1e-6)
    # the types did not grow alike between these seasons, so this is not the season's size
    assert growth.max() / growth.min() > 1.2


def test_pgy1_lists_follow_each_types_published_fills(market, plan, params, counts):
    """Who ranks which PGY-1 track depends on the type: DOs, who fill Transitional Years 2.5 x as
    often as Preliminary Medicine (NRMP 2025), put a Transitional Year on their supplemental
    lists relatively more often than US MD seniors do; and an applicant falls back on a track of
    their own family (surgical or not) more often than on another."""
    rng = np.random.default_rng(8)
    n = 60_000
    type_idx = rng.choice(len(APPLICANT_TYPES), size=n, p=counts / counts.sum())
    ch = draw_choices(rng, type_idx, rng.standard_normal(n), market, plan, params)
    ty, pm, ps = (SPECIALTY_NAMES.index(s) for s in ("Transitional Year", "Preliminary Medicine",
                                                     "Preliminary Surgery"))
    md, do = APPLICANT_TYPES.index("us_md_senior"), APPLICANT_TYPES.index("us_do_senior")

    def ty_over_pm(t: int) -> float:
        lists = ch.supplemental[type_idx == t]
        return lists[:, ty].sum() / lists[:, pm].sum()

    assert ty_over_pm(do) > 1.5 * ty_over_pm(md)
    fell_back = (ch.fallback >= 0) & ~market.pgy1_only[ch.preferred]
    surgical = market.surgical[ch.preferred]
    to_ps = ch.fallback == ps
    assert to_ps[fell_back & surgical].mean() > 2 * to_ps[fell_back & ~surgical].mean()
    assert to_ps[fell_back & ~surgical].any()  # the other family is not closed


def _bad_config(tmp_path, old, new):
    text = CONFIG.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ('"Dermatology" = { positions = 554', '"Dermatologyy" = { positions = 554', "Dermatologyy"),
    ("prior_graduates = 51", "prior_graduates = 5100", "prior_graduates"),
    ("us_md_senior = 448, ", "", "filled"),
    ("applicants_ranking = 1292", "applicants_ranking = -1", "applicants_ranking"),
])
def test_bad_market_figures_fail_naming_the_field(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        load_simulate_config(_bad_config(tmp_path, old, new))


def test_season_report_compares_the_market_with_published_figures(tmp_path):
    from smartpick_ml.simulation.season import simulate_to_disk

    cfg = load_simulate_config(CONFIG, seasons=[2025], scale=0.03, output_dir=str(tmp_path))
    paths = simulate_to_disk(cfg, synthetic_catalog(seed=3))
    text = paths["report"].read_text()
    for heading in ("Applicants ranking each specialty and track",
                    "Positions filled by applicant type", "Non-US IMGs by preferred specialty"):
        assert heading in text
    assert "| Transitional Year |" in text
    applicants = pd.read_parquet(paths["applicants"])
    assert applicants["backup_specialty"].notna().any()


def test_a_config_without_market_figures_is_refused_naming_them(tmp_path):
    text = CONFIG.read_text()
    start, end = text.index("[params.market]"), text.index("# Preference-signal allotments")
    for body in (text[:start] + text[end:], text[:start] + "[params.market]\n" + text[end:]):
        path = tmp_path / "bad.toml"
        path.write_text(body)
        with pytest.raises(ConfigError, match=r"params\.market"):
            load_simulate_config(path)


def test_programs_rank_a_type_higher_where_it_fills_more_of_the_positions(params):
    """Internal Medicine, which non-US IMGs fill a third of, ranks them up; Orthopaedic Surgery,
    which they fill 2 % of, ranks them down; Dermatology ranks US MD seniors up. Specialties
    without published figures, and a weight of 0, leave ranking alone."""
    off = type_rank_offsets(params)
    spec, ty = SPECIALTY_NAMES.index, APPLICANT_TYPES.index
    assert off[spec("Internal Medicine"), ty("non_us_img")] > 0
    assert off[spec("Orthopaedic Surgery"), ty("non_us_img")] < 0
    assert off[spec("Dermatology"), ty("us_md_senior")] > 0
    assert off[spec("Family Medicine"), ty("us_md_senior")] < 0
    # by hand, one cell: 0.5 x log(type's share of the specialty's fills / its share of all)
    filled = {n: {t: f.filled[t] + 1 for t in APPLICANT_TYPES} for n, f in params.market.items()}
    im = filled["Internal Medicine"]
    overall = sum(f["non_us_img"] for f in filled.values()) / sum(
        sum(f.values()) for f in filled.values())
    want = params.rank_type_by_fill_share * np.log(
        im["non_us_img"] / sum(im.values()) / overall)
    assert off[spec("Internal Medicine"), ty("non_us_img")] == pytest.approx(want)
    unpublished = [i for i, n in enumerate(SPECIALTY_NAMES) if n not in params.market]
    assert (off[unpublished] == 0).all()
    assert (type_rank_offsets(params.model_copy(update={"rank_type_by_fill_share": 0.0}))
            == 0).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(SPECIALTY_NAMES), min_size=1, max_size=8, unique=True),
       st.integers(0, 10_000), st.floats(0.0, 2.0))
def test_type_rank_offsets_are_bounded_and_follow_the_types_share(names, seed, weight):
    """For any published fills (zeros included): finite, within weight x 3 of 0, 0 outside the
    published specialties, and for each type the specialties where it fills a larger share of
    the positions rank it no lower."""
    from smartpick_ml.contracts.config import MarketFigures

    base = load_simulate_config(CONFIG).params
    rng = np.random.default_rng(seed)
    fills = {n: {t: int(rng.integers(0, 3000)) * int(rng.random() < 0.8)
                 for t in APPLICANT_TYPES} for n in names}
    market = {n: MarketFigures(positions=sum(f.values()) + 1, prior_graduates=0,
                               applicants_ranking=sum(f.values()) + 1, filled=f)
              for n, f in fills.items()}
    off = type_rank_offsets(base.model_copy(update={"market": market,
                                                    "rank_type_by_fill_share": weight}))
    assert np.isfinite(off).all()
    assert (np.abs(off) <= weight * 3 + 1e-9).all()
    rows = [SPECIALTY_NAMES.index(n) for n in names]
    assert (np.delete(off, rows, axis=0) == 0).all()
    for j, t in enumerate(APPLICANT_TYPES):
        share = np.array([(fills[n][t] + 1) / (sum(fills[n].values()) + len(APPLICANT_TYPES))
                          for n in names])
        order = np.argsort(share, kind="stable")
        assert (np.diff(off[rows, j][order]) >= -1e-9).all()
