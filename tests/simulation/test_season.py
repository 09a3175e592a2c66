"""The simulated season: determinism, label semantics, oracle, bad parameters, atomic output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.contracts.config import load_simulate_config
from smartpick_ml.contracts.errors import ConfigError, DataValidationError
from smartpick_ml.data.catalog import synthetic_catalog
from smartpick_ml.simulation.matching import blocking_pairs
from smartpick_ml.simulation.report import applicant_outcomes
from smartpick_ml.simulation.season import (
    build_market_inputs,
    oracle_q,
    run_market,
    season_positions,
    simulate_season,
    simulate_to_disk,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "pipelines" / "simulate.toml"
SCALE = 0.03


@pytest.fixture(scope="module")
def programs() -> pd.DataFrame:
    return synthetic_catalog(seed=3)


@pytest.fixture(scope="module")
def params():
    return load_simulate_config(CONFIG).params


@pytest.fixture(scope="module")
def season(programs, params):
    return simulate_season(programs, 2025, SCALE, params, seed=11)


def test_same_seed_gives_byte_identical_tables(tmp_path, programs):
    cfg = load_simulate_config(CONFIG, seasons=[2025], scale=SCALE, seed=5)
    a = simulate_to_disk(cfg.model_copy(update={"output_dir": str(tmp_path / "a")}), programs)
    b = simulate_to_disk(cfg.model_copy(update={"output_dir": str(tmp_path / "b")}), programs)
    c = simulate_to_disk(cfg.model_copy(update={"output_dir": str(tmp_path / "c"), "seed": 6}),
                         programs)
    for name in ("applicants", "applications", "program_outcomes"):
        assert a[name].read_bytes() == b[name].read_bytes(), name
        assert a[name].read_bytes() != c[name].read_bytes(), name


def test_applicant_counts_follow_published_mix(season, params):
    """The published counts are of active applicants (who rank a program): more apply, by each
    type's ``applicants_per_active``, and the active ones come out nearer the published count
    than all who applied (at full scale within 1 %; this small season has fewer positions)."""
    counts = season.applicants["applicant_type"].value_counts()
    active = applicant_outcomes(season.applicants, season.applications).query("active")[
        "applicant_type"].value_counts()
    for t, n in params.applicants[2025].items():
        drawn = round(n * params.types[t].applicants_per_active * SCALE)
        assert counts[t] == drawn
        assert active[t] == pytest.approx(n * SCALE, rel=0.1), t
        if params.types[t].applicants_per_active > 1.05:  # non-US IMGs: many never rank
            assert abs(active[t] - n * SCALE) < abs(drawn - n * SCALE), t
    assert params.types["non_us_img"].applicants_per_active > 1.0


def test_labels_are_consistent(season):
    ap = season.applications
    assert (ap.loc[ap["matched"], "would_take"] == 1).all()
    assert (ap.loc[~ap["interviewed"], "would_take"] == 0).all()
    assert ap.loc[ap["interviewed"], "rank_position"].notna().all()
    assert ap.loc[~ap["interviewed"], "rank_position"].isna().all()
    assert ap.groupby(["applicant_id", "rank_list"])["matched"].sum().max() <= 1
    # a program that did not fill takes everyone it interviewed
    out = season.program_outcomes
    unfilled = set(out.loc[out["filled"] < out["positions"], "program_id"])
    sub = ap[ap["program_id"].isin(unfilled) & ap["interviewed"]]
    assert len(sub) > 0 and (sub["would_take"] == 1).all()
    # an applicant is matched at the best-ranked program of their primary list that would take
    # them (PGY-1 cut-offs are those of the pass that includes the supplemental lists)
    primary = ap[ap["rank_list"] == "primary"]
    best = (primary[primary["would_take"] == 1].sort_values("rank_position")
            .groupby("applicant_id").head(1).set_index("applicant_id")["program_id"])
    matched = primary[primary["matched"]].set_index("applicant_id")["program_id"]
    assert (matched.sort_index() == best.loc[matched.index].sort_index()).all()
    assert set(best.index) == set(matched.index)


def test_supplemental_lists_are_used_only_with_an_advanced_match(season, programs):
    ap = season.applications.merge(programs[["program_id", "track"]], on="program_id")
    supplemental = ap[ap["rank_list"] == "supplemental"]
    assert len(supplemental) > 0
    assert supplemental["track"].isin(["preliminary", "transitional"]).all()
    advanced = set(ap.loc[ap["matched"] & (ap["track"] == "advanced"), "applicant_id"])
    used = set(supplemental.loc[supplemental["matched"], "applicant_id"])
    assert used and used <= advanced
    # supplemental lists are numbered after the primary list
    last_primary = ap[ap["rank_list"] == "primary"].groupby("applicant_id")["rank_position"].max()
    first_supp = supplemental.groupby("applicant_id")["rank_position"].min().dropna()
    both = first_supp.index.intersection(last_primary.dropna().index)
    assert (first_supp[both] > last_primary[both]).all()


def test_backups_and_pgy1_lists_sit_below_the_preferred_specialty(season, programs):
    ap = season.applications[season.applications["interviewed"]].merge(
        programs[["program_id", "specialty"]], on="program_id").merge(
        season.applicants[["applicant_id", "preferred_specialty", "backup_specialty"]],
        on="applicant_id")
    ap = ap[ap["rank_list"] == "primary"]
    preferred = ap["specialty"] == ap["preferred_specialty"]
    worst_preferred = ap[preferred].groupby("applicant_id")["rank_position"].max()
    best_other = ap[~preferred].groupby("applicant_id")["rank_position"].min()
    both = worst_preferred.index.intersection(best_other.index)
    assert len(both) > 0
    assert (best_other[both] > worst_preferred[both]).all()
    # an application outside the preferred specialty is to the backup or a PGY-1 program
    other = ap[~preferred]
    pgy1 = other["specialty"].isin(["Preliminary Medicine", "Preliminary Surgery",
                                    "Transitional Year"])
    assert ((other["specialty"] == other["backup_specialty"]) | pgy1).all()


def test_quotas_respected_and_market_stable(programs, params):
    """Each pass of the Match is stable: the primary lists at categorical and advanced programs,
    and the PGY-1 programs among everyone who proposes to them in the second pass."""
    from smartpick_ml.simulation.matching import deferred_acceptance
    from smartpick_ml.simulation.season import TIER_SUPPLEMENTAL

    rng = np.random.default_rng(0)
    s = simulate_season(programs, 2024, SCALE, params, seed=2)
    positions = s.program_outcomes["positions"].to_numpy()
    assert (s.program_outcomes["filled"] <= positions).all()
    inputs = build_market_inputs(s.applicants, programs, s.applications, positions, params)
    out = run_market(inputs, rng)
    pgy1_pair = inputs.pgy1_program[inputs.pair_program]
    primary = out.interviewed & (inputs.pair_tier != TIER_SUPPLEMENTAL)
    idx = np.flatnonzero(primary)
    market = dict(pair_applicant=inputs.pair_applicant[idx], pair_program=inputs.pair_program[idx],
                  applicant_rank=out.rank_position[idx], program_score=out.program_score[idx],
                  quotas=inputs.quotas, n_applicants=inputs.n_applicants)
    first = deferred_acceptance(**market)
    assert blocking_pairs(first, **market) == []
    # at categorical and advanced programs the season's match is the first pass's
    keep = ~pgy1_pair[idx]
    assert (out.matched[idx][keep] == first.pair_matched[keep]).all()
    # PGY-1 programs: no program and proposer of the second pass would both rather have each other
    second = np.flatnonzero(out.interviewed & pgy1_pair & out.matched)
    assert (np.bincount(inputs.pair_program[second], minlength=inputs.n_programs)
            <= inputs.quotas).all()
    assert (out.program_filled <= inputs.quotas).all()


def test_visa_holders_never_interviewed_where_no_sponsorship(season, programs):
    ap = season.applications.merge(season.applicants[["applicant_id", "needs_visa"]])
    ap = ap.merge(programs[["program_id", "sponsors_j1", "sponsors_h1b"]])
    blocked = ap["needs_visa"] & ~ap["sponsors_j1"].astype(bool) & ~ap["sponsors_h1b"].astype(bool)
    assert blocked.sum() >= 0
    assert not ap.loc[blocked, "interviewed"].any()


def test_imgs_apply_more_widely_than_us_seniors(season):
    n = season.applications.groupby("applicant_id").size().rename("n").reset_index()
    n = n.merge(season.applicants[["applicant_id", "applicant_type"]])
    mean = n.groupby("applicant_type")["n"].mean()
    assert mean["non_us_img"] > 1.5 * mean["us_md_senior"]


def test_oracle_is_smooth_and_calibrated_in_the_large(season, programs, params):
    positions = season.program_outcomes["positions"].to_numpy()
    inputs = build_market_inputs(season.applicants, programs, season.applications, positions,
                                 params)
    pairs = np.arange(len(season.applications))
    res = oracle_q(inputs, pairs, replicates=6, seed=1)
    assert np.isfinite(res.q).all()
    assert ((res.q > 0) | (inputs.invite_offset[pairs] == -np.inf)).all()
    assert (res.q < 1).all()
    y = season.applications["would_take"].to_numpy()
    # the realised labels are one draw of the same process the oracle averages
    assert abs(res.q.mean() - y.mean()) < 0.02
    assert (res.standard_error >= 0).all()
    # oracle beats the best constant
    brier_oracle = np.mean((res.q - y) ** 2)
    brier_const = np.mean((y.mean() - y) ** 2)
    assert brier_oracle < 0.9 * brier_const


def _market_positions(programs, params):
    """Positions the modelled applicants compete for in the market season: the published total
    less those prior graduates filled, for each specialty of the catalog."""
    present = set(programs["specialty"])
    return sum(f.positions - f.prior_graduates for name, f in params.market.items()
               if name in present)


def test_season_positions_scale_in_expectation(programs, params):
    rng = np.random.default_rng(0)
    pos = season_positions(programs, 2025, 0.5, params, rng)
    expected = 0.5 * _market_positions(programs, params)
    assert abs(pos.sum() - expected) < 0.02 * expected
    # each specialty holds its own published total
    by_spec = pd.Series(pos).groupby(programs["specialty"].to_numpy()).sum()
    im = params.market["Internal Medicine"]
    assert by_spec["Internal Medicine"] == pytest.approx(
        0.5 * (im.positions - im.prior_graduates), rel=0.02)


@pytest.mark.parametrize("override, message", [
    ({"scale": 0}, "scale"),
    ({"scale": -1}, "scale"),
    ({"seasons": []}, "seasons"),
    ({"seed": -3}, "seed"),
    ({"unknown_key": 1}, "unknown key"),
])
def test_bad_parameters_fail_before_work(override, message):
    with pytest.raises(ConfigError, match=message):
        load_simulate_config(CONFIG, **override)


@pytest.mark.parametrize("season, message", [
    (2031, "no applicant counts"), (2022, "published match rates by type")])
def test_a_market_season_without_its_figures_fails_naming_the_field(tmp_path, season, message):
    text = CONFIG.read_text()
    assert "\nmarket_season = 2025\n" in text
    text = text.replace("\nmarket_season = 2025\n", f"\nmarket_season = {season}\n")
    if season == 2022:  # has applicant counts, but no published rates by type in the reference
        text = text.replace("[params.applicants.2023]",
                            "[params.applicants.2022]\nus_md_senior = 1\nus_do_senior = 1\n"
                            "us_img = 1\nnon_us_img = 1\n\n[params.applicants.2023]")
    bad = tmp_path / "simulate.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=f"market_season.*{message}|{message}"):
        load_simulate_config(bad)


def test_unknown_season_and_missing_catalog_fail_clearly(tmp_path, programs):
    cfg = load_simulate_config(CONFIG, seasons=[2031], scale=SCALE, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="2031"):
        simulate_to_disk(cfg, programs)
    cfg = load_simulate_config(CONFIG, seasons=[2025], scale=SCALE, output_dir=str(tmp_path),
                               catalog=str(tmp_path / "no-such-catalog"))
    with pytest.raises(DataValidationError, match="not found"):
        simulate_to_disk(cfg)
    assert not list(tmp_path.glob("*.parquet"))


def test_unknown_specialty_in_signals_is_rejected(tmp_path):
    text = CONFIG.read_text() + '\n[params.signals]\n"Pediatric Basket Weaving" = { signal = 5 }\n'

    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="Pediatric Basket Weaving"):
        load_simulate_config(bad)


def test_interrupted_run_leaves_previous_tables(tmp_path, programs, monkeypatch):
    cfg = load_simulate_config(CONFIG, seasons=[2025], scale=SCALE, output_dir=str(tmp_path))
    paths = simulate_to_disk(cfg, programs)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    import smartpick_ml.data.io as io_mod

    real = pd.DataFrame.to_parquet
    calls = {"n": 0}

    def crash_on_second(self, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"half-written")
            raise KeyboardInterrupt("simulated kill")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        simulate_to_disk(cfg.model_copy(update={"seed": 99}), programs)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert not [n for n in after if n.startswith(io_mod.TMP_PREFIX)]
    assert after["applications.parquet"] == before["applications.parquet"]
    assert paths["applicants"].exists()


def test_oracle_error_bound_shrinks_with_replicates(season, programs, params):
    from smartpick_ml.simulation.oracle import oracle_error_bound, oracle_for_season

    y = season.applications["would_take"].to_numpy()
    scores = {}
    for r in (3, 12):
        res = oracle_for_season(season.applicants, programs, season.applications,
                                season.program_outcomes, 2025, params, r, seed=4)
        scores[r] = oracle_error_bound(y, res["oracle_q"].to_numpy(),
                                       res["oracle_se"].to_numpy(), r)
    assert scores[12].brier_mc_error < scores[3].brier_mc_error
    assert 0 < scores[12].brier_relative_error < 0.05
    # both estimates score nearly the same: the noise is small next to the score
    assert abs(scores[12].brier - scores[3].brier) < 0.05 * scores[12].brier


def test_oracle_error_bound_matches_simulated_noise():
    from smartpick_ml.simulation.oracle import oracle_error_bound

    rng = np.random.default_rng(0)
    q = rng.uniform(0.05, 0.95, 200_000)
    y = (rng.random(q.size) < q).astype(float)
    se = np.full(q.size, 0.02)
    noisy = np.clip(q + rng.normal(0, 0.02, q.size), 0.001, 0.999)
    exact = oracle_error_bound(y, q, se, 10)
    measured = np.mean((noisy - y) ** 2) - exact.brier
    assert exact.brier_mc_error == pytest.approx(4e-4)
    assert measured == pytest.approx(exact.brier_mc_error, rel=0.25)


def test_uniformed_services_programs_take_no_part_in_the_main_match(programs, params, season):
    """They fill through the military match: no positions, no applications, no matches."""
    military = programs.loc[programs["military"], "program_id"]
    assert len(military) > 0
    outcomes = season.program_outcomes.set_index("program_id")
    assert (outcomes.loc[military, "positions"] == 0).all()
    assert not season.applications["program_id"].isin(military).any()
    # the civilian programs hold the specialties' positions (scaled to the season)
    share = season.program_outcomes["positions"].sum() / _market_positions(programs, params)
    assert SCALE * 0.9 < share < SCALE * 1.1, share


def test_a_program_short_of_interviewees_stays_close_to_its_published_rates(programs, params):
    """A program whose published rates would leave it short interviews deeper, but only so far:
    a type it interviews ~1 % of does not become one it interviews half of (no false 'gems' for
    IMGs, which a model would learn and recommend)."""
    s = simulate_season(programs, 2025, 0.1, params, seed=4)
    ap = s.applications.merge(s.applicants[["applicant_id", "applicant_type"]]).merge(
        programs[["program_id", "rate_us_md", "rate_us_do", "rate_us_img", "rate_non_us_img"]])
    column = {"us_md_senior": "rate_us_md", "us_do_senior": "rate_us_do",
              "us_img": "rate_us_img", "non_us_img": "rate_non_us_img"}
    ap["rate"] = [row[column[t]] for t, row in zip(ap["applicant_type"],
                                                  ap[list(column.values())].to_dict("records"),
                                                  strict=True)]
    low = ap[ap["rate"] <= 0.02]
    assert len(low) > 1000
    assert low["interviewed"].mean() < 3 * low["rate"].mean() + 0.01
    cells = low.groupby(["program_id", "applicant_type"]).agg(
        n=("interviewed", "size"), share=("interviewed", "mean"))
    # a dozen applicants of a 2 % type can draw 4 invitations by chance (p ~ 0.6 % a cell), so
    # the rule is on the many cells, and no cell comes near the 40-80 % the false gems reached
    share = cells.loc[cells["n"] >= 10, "share"]
    assert (share >= 0.3).mean() <= 0.01 and (share < 0.5).all(), share.sort_values().tail()


def test_the_backup_ranking_shares_the_plan_assumes_are_what_a_season_realises(programs, params):
    """The backup volumes are solved on lists that end with a ranked program, at each type's
    ``backup_ranking_share`` (measured in the simulation): a change to the mechanism that moves
    the realised share away from it would make the backups miss the published counts."""
    from smartpick_ml.simulation.report import backup_lists_by_type

    season = simulate_season(programs, 2025, 0.1, params, seed=11)
    out = backup_lists_by_type(season.applicants, season.applications, programs, params)
    assert len(out) == 4 and (out["with_backup"] >= 100).all()
    np.testing.assert_allclose(out["ranks_backup_pct"], out["assumed_pct"], atol=8.0)


def test_the_types_fill_share_moves_rankings_not_invitations(season, programs, params):
    """How a specialty ranks a type once interviewed (``rank_type_by_fill_share``) leaves every
    invitation as the published rates set it and shifts the program's score of each pair by the
    type's offset in that specialty."""
    from smartpick_ml.contracts.reference import APPLICANT_TYPES, SPECIALTY_NAMES
    from smartpick_ml.simulation.market import type_rank_offsets

    positions = season.program_outcomes["positions"].to_numpy()
    flat = params.model_copy(update={"rank_type_by_fill_share": 0.0})
    with_it = build_market_inputs(season.applicants, programs, season.applications, positions,
                                  params)
    without = build_market_inputs(season.applicants, programs, season.applications, positions,
                                  flat)
    np.testing.assert_allclose(with_it.invite_offset, without.invite_offset, atol=1e-6)
    types = season.applicants["applicant_type"].map(APPLICANT_TYPES.index).to_numpy()
    spec = programs["specialty"].map(SPECIALTY_NAMES.index).to_numpy()
    want = type_rank_offsets(params)[spec[with_it.pair_program], types[with_it.pair_applicant]]
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(with_it.score_obs - without.score_obs, want, atol=1e-9)


def test_each_type_fills_the_pgy1_tracks_about_as_published(programs, params):
    """The PGY-1 tracks by type, at a fifth of the market: DOs fill a larger share of the
    Transitional Year than of Preliminary Medicine (published 19 % against 9 %); non-US IMGs fill
    Preliminary Surgery within 40 % of the published count (with one PGY-1 rate for every type
    they filled under half of it)."""
    from smartpick_ml.simulation.report import filled_by_type

    s = simulate_season(programs, 2025, 0.2, params, seed=11)
    f = filled_by_type(s.applicants, s.applications, programs, s.program_outcomes, params, 0.2)
    f = f.set_index(["specialty", "applicant_type"])
    sim = f["simulated"]

    def do_share(track: str) -> float:
        return sim[(track, "us_do_senior")] / sim[track].sum()

    assert do_share("Transitional Year") > 1.3 * do_share("Preliminary Medicine")
    cell = f.loc[("Preliminary Surgery", "non_us_img")]
    assert 0.6 < cell["simulated"] / cell["published"] < 1.4


def _non_us_fill_ratios(programs, params, scale, seed):
    """Non-US IMGs' simulated over published fills, summed over the specialties where they fill
    under a tenth of the published positions, and over the others (PGY-1 tracks aside)."""
    from smartpick_ml.simulation.report import filled_by_type

    s = simulate_season(programs, 2025, scale, params, seed=seed)
    f = filled_by_type(s.applicants, s.applications, programs, s.program_outcomes, params, scale)
    total = f.groupby("specialty")["published"].transform("sum")
    nus = f[(f["applicant_type"] == "non_us_img")
            & ~f["specialty"].isin(["Preliminary Medicine", "Preliminary Surgery",
                                    "Transitional Year"])]
    few = (nus["published"] / total[nus.index]) < 0.10
    return (nus.loc[few, "simulated"].sum() / nus.loc[few, "published"].sum(),
            nus.loc[~few, "simulated"].sum() / nus.loc[~few, "published"].sum())


def test_non_us_imgs_fill_where_they_are_few_about_as_often_as_published(programs, params):
    """Ranked alike once interviewed, non-US IMGs filled the specialties where they are a small
    minority ~40 % more often than published; ranked as each specialty fills with them, within
    a fifth. Where they fill many positions, within 15 % either way."""
    few, many = _non_us_fill_ratios(programs, params, 0.2, seed=11)
    assert few < 1.3 and 0.85 < many < 1.15
    flat = params.model_copy(update={"rank_type_by_fill_share": 0.0})
    assert _non_us_fill_ratios(programs, flat, 0.2, seed=11)[0] > 1.3
