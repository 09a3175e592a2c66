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
    counts = season.applicants["applicant_type"].value_counts()
    for t, n in params.applicants[2025].items():
        assert counts[t] == round(n * SCALE)


def test_labels_are_consistent(season):
    ap = season.applications
    assert (ap.loc[ap["matched"], "would_take"] == 1).all()
    assert (ap.loc[~ap["interviewed"], "would_take"] == 0).all()
    assert ap.loc[ap["interviewed"], "rank_position"].notna().all()
    assert ap.loc[~ap["interviewed"], "rank_position"].isna().all()
    assert ap.groupby("applicant_id")["matched"].sum().max() <= 1
    # a program that did not fill takes everyone it interviewed
    out = season.program_outcomes
    unfilled = set(out.loc[out["filled"] < out["positions"], "program_id"])
    sub = ap[ap["program_id"].isin(unfilled) & ap["interviewed"]]
    assert len(sub) > 0 and (sub["would_take"] == 1).all()
    # an applicant is matched at the best-ranked program that would take them
    best = (ap[ap["would_take"] == 1].sort_values("rank_position")
            .groupby("applicant_id").head(1).set_index("applicant_id")["program_id"])
    matched = ap[ap["matched"]].set_index("applicant_id")["program_id"]
    assert (matched.sort_index() == best.loc[matched.index].sort_index()).all()
    assert set(best.index) == set(matched.index)


def test_quotas_respected_and_market_stable(programs, params):
    rng = np.random.default_rng(0)
    s = simulate_season(programs, 2024, SCALE, params, seed=2)
    positions = s.program_outcomes["positions"].to_numpy()
    assert (s.program_outcomes["filled"] <= positions).all()
    inputs = build_market_inputs(s.applicants, programs, s.applications, positions, params)
    out = run_market(inputs, rng)
    idx = np.flatnonzero(out.interviewed)
    from smartpick_ml.simulation.matching import deferred_acceptance

    market = dict(pair_applicant=inputs.pair_applicant[idx], pair_program=inputs.pair_program[idx],
                  applicant_rank=out.rank_position[idx], program_score=out.program_score[idx],
                  quotas=inputs.quotas, n_applicants=inputs.n_applicants)
    result = deferred_acceptance(**market)
    assert blocking_pairs(result, **market) == []


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


def test_season_positions_scale_in_expectation(programs, params):
    rng = np.random.default_rng(0)
    pos = season_positions(programs, 2025, 0.5, params, rng)
    assert abs(pos.sum() - 0.5 * programs["positions"].sum()) < 0.02 * programs["positions"].sum()


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
    text = CONFIG.read_text().replace('"Pediatrics" = { signal = 5 }',
                                      '"Pediatric Basket Weaving" = { signal = 5 }')
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


def _choice_and_interviews(programs, params, balance):
    """P(specialty | type) at ``balance`` and the interviews per position it implies."""
    from smartpick_ml.contracts.reference import APPLICANT_TYPES, SPECIALTY_NAMES
    from smartpick_ml.simulation.season import _imputed_rates, _specialty_choice

    p = params.model_copy(update={"specialty_interview_balance": balance})
    rates = _imputed_rates(programs)
    spec = programs["specialty"].map({s: i for i, s in enumerate(SPECIALTY_NAMES)}).to_numpy()
    choice = _specialty_choice(2025, 1.0, programs, spec, rates, p)
    counts = np.array([p.applicants[2025][t] for t in APPLICANT_TYPES], float)
    applicants = choice @ counts
    positions = np.bincount(spec, weights=programs["positions"], minlength=len(SPECIALTY_NAMES))
    md_rate = programs.groupby(spec)["rate_us_md"].mean().reindex(range(len(positions)))
    return choice, applicants / np.maximum(positions, 1), md_rate.to_numpy()


@pytest.mark.parametrize("balance", [0.0, 0.3, 1.0])
def test_specialty_choice_is_a_distribution_per_type(programs, params, balance):
    choice, _, _ = _choice_and_interviews(programs, params, balance)
    assert np.all(choice >= 0)
    np.testing.assert_allclose(choice.sum(axis=0), 1.0)


def test_competitive_specialties_draw_more_applicants_per_position(programs, params):
    """The tilt sends applicants toward specialties whose programs interview a small share of
    them: with it, applicants per position fall with the specialty's interview rate; the
    most selective third gains applicants per position, the least selective third loses."""
    _, flat, md_rate = _choice_and_interviews(programs, params, 0.0)
    _, tilted, _ = _choice_and_interviews(programs, params, 1.0)
    ok = np.isfinite(md_rate) & (flat > 0)
    order = np.argsort(md_rate[ok])
    third = max(1, len(order) // 3)
    gain = tilted[ok] / flat[ok]
    assert gain[order[:third]].mean() > 1.0 > gain[order[-third:]].mean()


def test_uniformed_services_programs_take_no_part_in_the_main_match(programs, season):
    """They fill through the military match: no positions, no applications, no matches."""
    military = programs.loc[programs["military"], "program_id"]
    assert len(military) > 0
    outcomes = season.program_outcomes.set_index("program_id")
    assert (outcomes.loc[military, "positions"] == 0).all()
    assert not season.applications["program_id"].isin(military).any()
    # the civilian programs hold the specialties' positions (scaled to the season)
    share = season.program_outcomes["positions"].sum() / programs["positions"].sum()
    assert SCALE * 0.9 < share < SCALE * 1.1, share
