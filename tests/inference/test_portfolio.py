"""Tests for inference.portfolio: rank-list probabilities against Monte Carlo, the optimiser
against brute-force enumeration, the naive rule's failure, ERAS fees and input validation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from smartpick_ml.inference.portfolio import (
    ERAS_FEE_SCHEDULES,
    USMLE_TRANSCRIPT_FEE_USD,
    MatchProbability,
    PortfolioInputError,
    eras_fee,
    fees_for_sizes,
    match_probability,
    naive_top_by_ev,
    optimal_portfolios,
    plan_table,
    portfolio_value,
)

FEES_JSON = Path(__file__).resolve().parents[3] / "shared" / "reference" / "eras_fees.json"

# Derandomized, no example database, no deadline: CI sees the same instances every run.
PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
RTOL, ATOL = 1e-9, 1e-12


# ------------------------------------------------------------------------------------------
# Brute force (vectorised over all 2^n subsets)
# ------------------------------------------------------------------------------------------


def brute_force_best(q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Best objective over all subsets of each size h = 0..n (index h), by full enumeration."""
    n = q.size
    pref = np.lexsort((np.arange(n), -u))  # the applicant's rank order
    qs, us = q[pref], u[pref]
    masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    mq = np.where(masks, qs, 0.0)  # q of chosen programs, 0 elsewhere
    survive = np.cumprod(1.0 - mq, axis=1)
    before = np.hstack([np.ones((masks.shape[0], 1)), survive[:, :-1]])
    values = (mq * us * before).sum(axis=1)
    sizes = masks.sum(axis=1)
    best = np.full(n + 1, -np.inf)
    np.maximum.at(best, sizes, values)
    return best


def check_against_brute_force(q: np.ndarray, u: np.ndarray) -> None:
    n = q.size
    path = optimal_portfolios(q, u, n)
    best = brute_force_best(q, u)
    assert_allclose(path.expected_utility, best[1:], rtol=RTOL, atol=ATOL)
    # Nested and well-formed: each portfolio extends the previous one by a new program.
    assert sorted(path.order.tolist()) == list(range(n))
    portfolios = path.portfolios()
    for h in range(1, n + 1):
        assert_array_equal(portfolios[h - 1], path.order[:h])
        if h > 1:
            assert set(portfolios[h - 2]) < set(portfolios[h - 1])
        # The reported value is the value of the reported set, not just the sum of the gains.
        assert math.isclose(
            portfolio_value(q, u, portfolios[h - 1]), best[h], rel_tol=RTOL, abs_tol=ATOL
        )
    assert_allclose(path.p_match, 1.0 - np.cumprod(1.0 - q[path.order]), atol=1e-12)


PROBS = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.1, 0.9]), st.floats(0.0, 1.0))
UTILS = st.one_of(st.sampled_from([0.0, 1.0, 2.0, 5.0]), st.floats(0.0, 100.0))


@st.composite
def instances(draw: st.DrawFn, max_n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_n))
    q = np.array(draw(st.lists(PROBS, min_size=n, max_size=n)))
    u = np.array(draw(st.lists(UTILS, min_size=n, max_size=n)))
    return q, u


# ------------------------------------------------------------------------------------------
# match_probability
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "utility", "p_at", "p_unmatched", "eu"),
    [
        ([0.5, 0.5], None, [0.5, 0.25], 0.25, 0.75),
        ([1.0, 0.7], None, [1.0, 0.0], 0.0, 1.0),
        ([0.0, 0.3], None, [0.0, 0.3], 0.7, 0.3),
        ([0.2, 0.5], [10.0, 4.0], [0.2, 0.4], 0.4, 10 * 0.2 + 4 * 0.5 * 0.8),
        ([0.1, 0.2, 0.5], [3.0, 2.0, 1.0], [0.1, 0.18, 0.36], 0.36, 0.3 + 0.36 + 0.36),
        ([0.0], [7.0], [0.0], 1.0, 0.0),
    ],
)
def test_match_probability_by_hand(q, utility, p_at, p_unmatched, eu) -> None:
    res = match_probability(q, utility)
    assert isinstance(res, MatchProbability)
    assert_allclose(res.p_match_at, p_at, atol=1e-15)
    assert res.p_unmatched == pytest.approx(p_unmatched, abs=1e-15)
    assert res.p_match == pytest.approx(1.0 - p_unmatched, abs=1e-15)
    assert res.expected_utility == pytest.approx(eu, abs=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_match_probability_agrees_with_monte_carlo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 16))
    q = rng.beta(0.6, 1.2, size=n)  # many long shots, some near-safe programs
    u = rng.random(n)
    draws = 200_000
    takes = rng.random((draws, n)) < q  # independent Bernoulli "would take you"
    matched = takes.any(axis=1)
    first = np.argmax(takes, axis=1)  # highest-ranked program that takes you
    freq = np.bincount(first[matched], minlength=n) / draws
    res = match_probability(q, u)
    assert_allclose(res.p_match_at, freq, atol=0.01)
    assert res.p_unmatched == pytest.approx(1.0 - matched.mean(), abs=0.01)
    mc_eu = np.where(matched, u[first], 0.0).mean()
    assert res.expected_utility == pytest.approx(mc_eu, abs=0.01)


@settings(PROPERTY, max_examples=300)
@given(instances(max_n=40))
def test_match_probability_sums_to_one(inst: tuple[np.ndarray, np.ndarray]) -> None:
    q, u = inst
    res = match_probability(q, u)
    assert res.p_match_at.sum() + res.p_unmatched == pytest.approx(1.0, abs=1e-12)
    assert res.p_match + res.p_unmatched == pytest.approx(1.0, abs=1e-12)
    assert np.all(res.p_match_at >= 0.0)
    # Default utility is 1 for every program, so E[U] is P(match).
    assert match_probability(q).expected_utility == pytest.approx(res.p_match, abs=1e-12)


def test_match_probability_is_frozen_and_read_only() -> None:
    res = match_probability([0.3, 0.4])
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.p_match = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        res.p_match_at[0] = 1.0


def test_p_match_is_accurate_for_tiny_probabilities() -> None:
    res = match_probability([1e-12] * 3)
    assert res.p_match == pytest.approx(3e-12, rel=1e-9)


# ------------------------------------------------------------------------------------------
# optimal_portfolios vs brute force
# ------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=1500)
@given(instances())
def test_optimal_portfolios_equal_brute_force(inst: tuple[np.ndarray, np.ndarray]) -> None:
    check_against_brute_force(*inst)


def test_optimal_portfolios_equal_brute_force_random_sweep() -> None:
    """3,000 more seeded instances, half with coarse values so ties and zeros are frequent."""
    rng = np.random.default_rng(20260320)
    for i in range(3000):
        n = int(rng.integers(1, 13))
        if i % 2:
            q = rng.choice([0.0, 0.2, 0.5, 0.8, 1.0], size=n)
            u = rng.choice([0.0, 1.0, 2.0, 3.0], size=n)
        else:
            q = rng.beta(0.5, 0.8, size=n)
            u = rng.lognormal(size=n)
        check_against_brute_force(q, u)


@settings(PROPERTY, max_examples=200)
@given(instances(max_n=30), st.randoms(use_true_random=False), st.floats(0.01, 100.0))
def test_optimal_value_invariant_to_order_and_scales_with_utility(inst, rnd, scale) -> None:
    q, u = inst
    path = optimal_portfolios(q, u, q.size)
    perm = np.arange(q.size)
    rnd.shuffle(perm)
    permuted = optimal_portfolios(q[perm], u[perm], q.size)
    assert_allclose(permuted.expected_utility, path.expected_utility, rtol=RTOL, atol=ATOL)
    scaled = optimal_portfolios(q, u * scale, q.size)
    assert_allclose(scaled.expected_utility, path.expected_utility * scale, rtol=1e-9, atol=1e-9)


def test_optimal_portfolios_match_reevaluating_greedy_at_medium_size() -> None:
    """Against the textbook greedy that re-evaluates the objective from scratch per candidate."""
    rng = np.random.default_rng(7)
    n, h = 80, 25
    q, u = rng.beta(0.7, 1.5, size=n), rng.lognormal(size=n)
    chosen: list[int] = []
    values = []
    for _ in range(h):
        cand = [j for j in range(n) if j not in chosen]
        vals = [portfolio_value(q, u, [*chosen, j]) for j in cand]
        chosen.append(cand[int(np.argmax(vals))])
        values.append(max(vals))
    path = optimal_portfolios(q, u, h)
    assert_allclose(path.expected_utility, values, rtol=1e-12)


def test_large_instance_values_are_consistent() -> None:
    rng = np.random.default_rng(11)
    n, h = 4777, 150
    q, u = rng.beta(0.5, 3.0, size=n), rng.lognormal(sigma=0.5, size=n)
    path = optimal_portfolios(q, u, h)
    assert np.all(np.diff(path.expected_utility) >= -1e-12)  # nested => non-decreasing
    assert np.all(np.diff(path.marginal_gain) <= 1e-12)  # diminishing returns (submodular)
    for k in (1, 10, 75, 150):
        assert path.expected_utility[k - 1] == pytest.approx(
            portfolio_value(q, u, path.portfolio(k)), rel=1e-9
        )


def test_zero_probability_programs_come_last() -> None:
    q = np.array([0.0, 0.4, 0.0, 0.3])
    u = np.array([9.0, 1.0, 9.0, 2.0])
    path = optimal_portfolios(q, u, 4)
    assert set(path.order[:2].tolist()) == {1, 3}
    assert_allclose(path.marginal_gain[2:], 0.0)
    assert path.expected_utility[3] == pytest.approx(2 * 0.3 + 1 * 0.4 * 0.7)


# ------------------------------------------------------------------------------------------
# The intuitive rule (top h by q*U) is not optimal
# ------------------------------------------------------------------------------------------


def test_naive_top_by_ev_is_strictly_worse_with_redundant_safeties() -> None:
    # Programs 0-3: "safeties" (q = 0.9, U = 1, EV 0.9); 4-7: reaches (q = 0.15, U = 5, EV 0.75).
    # Top-4 by EV takes the four safeties; a second safety adds almost nothing once you hold one.
    q = np.array([0.9] * 4 + [0.15] * 4)
    u = np.array([1.0] * 4 + [5.0] * 4)
    naive = naive_top_by_ev(q, u, 4)
    assert_array_equal(naive, [0, 1, 2, 3])
    naive_value = portfolio_value(q, u, naive)
    assert naive_value == pytest.approx(1 - 0.1**4)

    path = optimal_portfolios(q, u, 4)
    best = path.portfolio(4)
    assert sum(i < 4 for i in best) == 1  # one safety, three reaches
    expected = 5 * (1 - 0.85**3) + 1 * 0.9 * 0.85**3
    assert path.expected_utility[3] == pytest.approx(expected)
    assert path.expected_utility[3] == pytest.approx(brute_force_best(q, u)[4])
    assert path.expected_utility[3] - naive_value > 1.4
    assert path.expected_utility[3] / naive_value > 2.4

    table = plan_table(q, u, 4)
    assert table.loc[3, "gain_vs_naive"] == pytest.approx(expected - naive_value)


@pytest.mark.parametrize("h", [2, 3, 5, 10])
def test_naive_can_be_off_by_nearly_a_factor_of_h(h: int) -> None:
    # h sure things (q = 1, U = 1) beat h lotteries (q = eps, U = (1 - delta) / eps) on EV, so the
    # naive rule takes only sure things (value 1); one sure thing + h-1 lotteries is worth ~h.
    eps, delta = 1e-4, 1e-3
    q = np.array([1.0] * h + [eps] * h)
    u = np.array([1.0] * h + [(1 - delta) / eps] * h)
    naive_value = portfolio_value(q, u, naive_top_by_ev(q, u, h))
    assert naive_value == pytest.approx(1.0)
    best = optimal_portfolios(q, u, h).expected_utility[h - 1]
    assert best / naive_value > 0.99 * h


# ------------------------------------------------------------------------------------------
# ERAS fees
# ------------------------------------------------------------------------------------------

FEES_2025 = {0: 0, 1: 11, 10: 110, 11: 121, 20: 220, 21: 231, 30: 330, 31: 360, 40: 630}
FEES_2024 = {0: 0, 1: 99, 10: 99, 11: 118, 20: 289, 21: 312, 30: 519, 31: 546, 40: 789}


@pytest.mark.parametrize(
    ("schedule", "n", "fee"),
    [("2025", n, f) for n, f in FEES_2025.items()]
    + [("2026", n, f) for n, f in FEES_2025.items()]
    + [("2024", n, f) for n, f in FEES_2024.items()],
)
def test_eras_fee_at_tier_edges(schedule: str, n: int, fee: int) -> None:
    assert eras_fee(n, schedule) == fee
    assert isinstance(eras_fee(n, schedule), int)


@pytest.mark.parametrize(("schedule", "table"), [("2025", FEES_2025), ("2024", FEES_2024)])
def test_fees_for_sizes_is_vectorised_eras_fee(schedule: str, table: dict[int, int]) -> None:
    sizes = list(table)
    assert fees_for_sizes(sizes, schedule).tolist() == list(table.values())
    assert fees_for_sizes(np.arange(200), schedule).tolist() == [
        eras_fee(n, schedule) for n in range(200)
    ]
    assert np.all(np.diff(fees_for_sizes(np.arange(200), schedule)) >= 0)


def test_fee_assistance_example_from_reference() -> None:
    # eras_fees.json: "43 IM + 7 Radiology = $797" -- fees restart for each specialty.
    assert eras_fee(43) + eras_fee(7) == 797


def test_fee_constants_equal_reference_json() -> None:
    if not FEES_JSON.exists():
        pytest.skip(f"{FEES_JSON} not present")
    ref = json.loads(FEES_JSON.read_text())
    by_season = ref["residency_fees_per_specialty"]
    for key in ("2025", "2026", "2024"):
        sched = ERAS_FEE_SCHEDULES[key]
        want = by_season[sched.name]
        got_tiers = [
            {"from": t.first, "to": t.last}
            | ({"usd_each": t.usd_each} if t.usd_each is not None else {})
            | ({"usd_flat": t.usd_flat} if t.usd_flat is not None else {})
            for t in sched.tiers
        ]
        assert got_tiers == want["tiers"]
        src = want["source"]
        assert list(sched.sources) == (src if isinstance(src, list) else [src])
    assert set(by_season) == {s.name for s in ERAS_FEE_SCHEDULES.values()}
    assert USMLE_TRANSCRIPT_FEE_USD == ref["other_fees"]["USMLE_transcript_usd"]


# ------------------------------------------------------------------------------------------
# plan_table
# ------------------------------------------------------------------------------------------


def test_plan_table_columns_and_arithmetic() -> None:
    rng = np.random.default_rng(3)
    n = 60
    q = rng.beta(0.6, 2.0, size=n)
    q[:5] = 0.0  # ineligible programs: the caller passes q = 0
    u = rng.lognormal(size=n)
    table = plan_table(q, u, n, "2025")
    assert list(table.columns) == [
        "h",
        "added",
        "p_match",
        "expected_utility",
        "fee_usd",
        "usd_per_extra_pp",
        "naive_expected_utility",
        "naive_p_match",
        "gain_vs_naive",
    ]
    assert table["h"].tolist() == list(range(1, n + 1))
    assert (table["fee_usd"] == fees_for_sizes(range(1, n + 1)) + USMLE_TRANSCRIPT_FEE_USD).all()
    path = optimal_portfolios(q, u, n)
    assert_array_equal(table["added"], path.order)
    assert_allclose(table["expected_utility"], path.expected_utility)
    assert_allclose(table["p_match"], path.p_match)

    d_pp = 100 * np.diff(table["p_match"], prepend=0.0)
    d_fee = np.diff(table["fee_usd"], prepend=0)
    rising = d_pp > 0
    assert_allclose(table["usd_per_extra_pp"][rising], d_fee[rising] / d_pp[rising])
    # The five q = 0 programs are added last and buy no probability: NaN, not inf.
    assert table["usd_per_extra_pp"].iloc[-5:].isna().all()
    assert table.loc[0, "usd_per_extra_pp"] == pytest.approx(
        (11 + USMLE_TRANSCRIPT_FEE_USD) / (100 * q[path.order[0]])
    )
    assert (table["gain_vs_naive"] >= -1e-12).all()
    assert_allclose(
        table["gain_vs_naive"], table["expected_utility"] - table["naive_expected_utility"]
    )


def test_plan_table_schedule_and_transcript_fee() -> None:
    q, u = [0.5] * 12, [1.0] * 12
    t24 = plan_table(q, u, 12, "2024", transcript_fee_usd=0)
    assert t24["fee_usd"].tolist() == fees_for_sizes(range(1, 13), "2024").tolist()
    assert isinstance(t24, pd.DataFrame)


# ------------------------------------------------------------------------------------------
# Validation: ValueError naming the field
# ------------------------------------------------------------------------------------------

Q3, U3 = [0.2, 0.5, 0.9], [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: match_probability([0.1, float("nan")]), r"q\[1\] = nan: must be a finite prob"),
        (lambda: match_probability([0.1, 1.2]), r"q\[1\] = 1\.2"),
        (lambda: match_probability([-0.1]), r"q\[0\] = -0\.1"),
        (lambda: match_probability([float("inf")]), r"q\[0\] = inf"),
        (lambda: match_probability([]), r"q is empty"),
        (lambda: match_probability([[0.1, 0.2]]), r"q has shape \(1, 2\)"),
        (lambda: match_probability(["a"]), r"^q: must be a sequence of numbers"),
        (lambda: match_probability([0.1], [1.0, 2.0]), r"utility has length 2 but q has length 1"),
        (lambda: match_probability([0.1], [float("nan")]), r"utility\[0\] = nan"),
        (lambda: optimal_portfolios(Q3, [1.0, -1.0, 2.0], 2), r"utility\[1\] = -1\.0: .*>= 0"),
        (lambda: optimal_portfolios([0.2, float("nan"), 2.0], U3, 2), r"q\[1\] = nan.*2 bad"),
        (lambda: optimal_portfolios(Q3, U3[:2], 2), r"utility has length 2 but q has length 3"),
        (lambda: optimal_portfolios([], [], 1), r"q is empty"),
        (lambda: optimal_portfolios(Q3, U3, 0), r"max_size = 0: must be an integer >= 1"),
        (lambda: optimal_portfolios(Q3, U3, -2), r"max_size = -2"),
        (lambda: optimal_portfolios(Q3, U3, 2.0), r"max_size = 2\.0"),
        (lambda: optimal_portfolios(Q3, U3, True), r"max_size = True"),
        (lambda: optimal_portfolios(Q3, U3, 4), r"max_size = 4: exceeds the number"),
        (lambda: optimal_portfolios(Q3, U3, 2).portfolio(3), r"^h = 3: exceeds"),
        (lambda: naive_top_by_ev(Q3, U3, 0), r"^h = 0"),
        (lambda: naive_top_by_ev(Q3, [1.0, float("inf"), 1.0], 1), r"utility\[1\] = inf"),
        (lambda: portfolio_value(Q3, U3, [0, 3]), r"indices\[1\] = 3"),
        (lambda: portfolio_value(Q3, U3, [1, 1]), r"indices: contains a program more than once"),
        (lambda: portfolio_value(Q3, U3, [0.5]), r"indices\[0\] = 0\.5"),
        (lambda: eras_fee(-1), r"n_programs = -1"),
        (lambda: eras_fee(2.5), r"n_programs = 2\.5"),
        (lambda: eras_fee(3, "2019"), r"schedule = '2019': unknown ERAS fee schedule"),
        (lambda: fees_for_sizes([1, -2]), r"sizes\[1\] = -2"),
        (lambda: fees_for_sizes([1, 2.5]), r"sizes\[1\] = 2\.5"),
        (lambda: plan_table(Q3, U3, 2, "1999"), r"schedule = '1999'"),
        (lambda: plan_table(Q3, U3, 0), r"max_size = 0"),
        (lambda: plan_table(Q3, U3, 2, transcript_fee_usd=-80), r"transcript_fee_usd = -80"),
    ],
)
def test_bad_input_raises_value_error_naming_the_field(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        call()
    assert isinstance(info.value, PortfolioInputError)


def test_portfolio_value_of_empty_set_is_zero() -> None:
    assert portfolio_value(Q3, U3, []) == 0.0


def _brute_joint_best(qs, us, sizes):
    """The best E[U] over every choice of at most sizes[s] programs per specialty, ranked
    specialty by specialty in order (brute force)."""
    import itertools

    from smartpick_ml.inference.portfolio import joint_list_value

    options = [[c for k in range(min(h, len(q)) + 1)
                for c in itertools.combinations(range(len(q)), k)]
               for q, h in zip(qs, sizes, strict=True)]
    return max(joint_list_value(qs, us, [list(c) for c in combo])
               for combo in itertools.product(*options))


def test_best_joint_list_equals_brute_force_on_1000_instances():
    """Issue #18 (planning a backup specialty): the list across a preferred specialty and up to
    two backups, ranked in that order, is exact: equal to brute force on 1,000 random small
    instances (utilities drawn so a backup's programs are sometimes worth more, sometimes less
    than the preferred ones')."""
    from smartpick_ml.inference.portfolio import best_joint_list, joint_list_value

    rng = np.random.default_rng(2026)
    for _ in range(1000):
        k = int(rng.integers(1, 4))
        ns = rng.integers(1, 5 if k < 3 else 4, size=k)
        qs = [np.round(rng.uniform(0, 1, n) ** rng.uniform(0.5, 3), 3) for n in ns]
        us = [np.round(rng.uniform(0.1, 3, n), 2) for n in ns]
        sizes = [int(rng.integers(0, n + 2)) for n in ns]
        got = best_joint_list(qs, us, sizes)
        want = _brute_joint_best(qs, us, sizes)
        assert got.expected_utility == pytest.approx(want, abs=1e-9)
        assert joint_list_value(qs, us, got.chosen) == pytest.approx(got.expected_utility,
                                                                     abs=1e-9)
        assert all(len(c) <= h for c, h in zip(got.chosen, sizes, strict=True))
        every = np.concatenate([q[c] for q, c in zip(qs, got.chosen, strict=True)])
        assert got.p_match == pytest.approx(1 - np.prod(1 - every), abs=1e-12)


def test_a_backup_never_lowers_the_best_lists_value():
    from smartpick_ml.inference.portfolio import best_joint_list

    rng = np.random.default_rng(7)
    for _ in range(200):
        q1, q2 = rng.uniform(0, 0.6, 6), rng.uniform(0, 0.9, 5)
        u1, u2 = rng.uniform(1, 3, 6), rng.uniform(0.5, 2, 5)
        alone = best_joint_list([q1], [u1], [3])
        for h2 in range(0, 6):
            both = best_joint_list([q1, q2], [u1, u2], [3, h2])
            assert both.expected_utility >= alone.expected_utility - 1e-12


@pytest.mark.parametrize("sizes, message", [([1, -1], "sizes"), ([1, 1.5], "sizes"),
                                            ([True, 1], "sizes"), ([1], "one of each")])
def test_best_joint_list_refuses_bad_sizes(sizes, message):
    from smartpick_ml.inference.portfolio import PortfolioInputError, best_joint_list

    with pytest.raises(PortfolioInputError, match=message):
        best_joint_list([[0.5], [0.5]], [[1.0], [1.0]], sizes)


def _tier_choices(n_chosen: int, allotments: list[int]):
    """Every assignment of signal tiers (0: none) to ``n_chosen`` programs within allotments."""
    import itertools

    for tiers in itertools.product(range(len(allotments) + 1), repeat=n_chosen):
        if all(tiers.count(t) <= a for t, a in enumerate(allotments, 1)):
            yield tiers


def _list_value(q_lists, u_lists) -> float:
    """E[U] of a rank list: specialty by specialty, by utility within each (ties: as given)."""
    value, reach = 0.0, 1.0
    for q, u in zip(q_lists, u_lists, strict=True):
        for i in np.argsort(-np.asarray(u, float), kind="stable"):
            value += reach * q[i] * u[i]
            reach *= 1.0 - q[i]
    return value


def _brute_signalled_best(qts, us, sizes, allotments):
    """The best E[U] over every list (at most sizes[s] programs of specialty s, in order) and
    every way to place each specialty's signals on its programs (brute force)."""
    import itertools

    options = []
    for qt, h, allot in zip(qts, sizes, allotments, strict=True):
        spec = []
        for k in range(min(h, len(qt)) + 1):
            for chosen in itertools.combinations(range(len(qt)), k):
                spec += [(chosen, tiers) for tiers in _tier_choices(k, allot)]
        options.append(spec)
    best = -1.0
    for combo in itertools.product(*options):
        # a program signalled with tier t is the program with q of column t
        qs = [qt[list(c), list(t)] for qt, (c, t) in zip(qts, combo, strict=True)]
        u_of = [u[list(c)] for u, (c, _) in zip(us, combo, strict=True)]
        best = max(best, _list_value(qs, u_of))
    return best


def test_the_joint_plan_with_signals_equals_brute_force_on_1000_instances():
    """Issue #18: programs, signals (one or two tiers) and a backup specialty chosen together are
    exact: equal to brute force on 1,000 random small instances."""
    from smartpick_ml.inference.portfolio import best_joint_list

    rng = np.random.default_rng(18)
    for _ in range(1000):
        ns = [int(rng.integers(1, 5)), int(rng.integers(1, 4))]
        allotments = [[int(rng.integers(0, 3)) for _ in range(int(rng.integers(0, 3)))],
                      [int(rng.integers(0, 2)) for _ in range(int(rng.integers(0, 2)))]]
        qts = []
        for n, allot in zip(ns, allotments, strict=True):
            q0 = np.round(rng.uniform(0, 0.7, n) ** rng.uniform(0.5, 2), 3)
            lifts = [np.minimum(1.0, q0 * rng.uniform(0.8, 3.0, n)) for _ in allot]
            qts.append(np.column_stack([q0, *lifts]))
        us = [np.round(rng.uniform(0.1, 3, n), 1) for n in ns]
        sizes = [int(rng.integers(1, 4)), int(rng.integers(0, 3))]
        signalled = [(qt, a) if a else None for qt, a in zip(qts, allotments, strict=True)]
        got = best_joint_list([qt[:, 0] for qt in qts], us, sizes, signalled)
        want = _brute_signalled_best(qts, us, sizes, allotments)
        assert got.expected_utility == pytest.approx(want, abs=1e-9)
        # what it returns is a list that is worth what it says, within the allotments
        q_taken = [qt[c, t] for qt, c, t in zip(qts, got.chosen, got.tiers, strict=True)]
        u_taken = [u[c] for u, c in zip(us, got.chosen, strict=True)]
        assert _list_value(q_taken, u_taken) == pytest.approx(got.expected_utility, abs=1e-9)
        for c, t, h, allot in zip(got.chosen, got.tiers, sizes, allotments, strict=True):
            assert len(c) <= h and len(set(c.tolist())) == len(c)
            assert all(np.sum(t == k) <= a for k, a in enumerate(allot, 1))


def test_signals_go_where_they_add_most_not_to_the_likeliest_programs():
    """One signal, two programs: a signal that quadruples a long shot's q beats one on a
    near-sure program whose q can barely rise (and the other way round when it can)."""
    from smartpick_ml.inference.portfolio import best_signalled_list

    qt = np.array([[0.9, 0.92], [0.1, 0.4]])
    got = best_signalled_list(qt, np.array([1.0, 1.0]), 2, [1])
    assert dict(zip(got.chosen.tolist(), got.tiers.tolist(), strict=True)) == {0: 0, 1: 1}
    assert got.expected_utility == pytest.approx(1 - 0.1 * 0.6)
    qt[0, 1] = 0.95  # its miss halves: now that is worth more
    got = best_signalled_list(qt, np.array([1.0, 1.0]), 2, [1])
    assert dict(zip(got.chosen.tolist(), got.tiers.tolist(), strict=True)) == {0: 1, 1: 0}


@settings(max_examples=200, deadline=None)
@given(q=st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
                   st.lists(st.lists(st.floats(-1, 2), min_size=0, max_size=5), max_size=5),
                   st.lists(st.lists(st.lists(st.floats(0, 1), max_size=2), max_size=2),
                            max_size=2),
                   st.text(max_size=5), st.none()),
       allotments=st.one_of(st.lists(st.integers(-3, 5), max_size=4), st.lists(st.text(),
                                                                              max_size=2)),
       size=st.one_of(st.integers(-2, 8), st.floats(), st.booleans()))
def test_bad_signal_inputs_get_a_clear_error(q, allotments, size):
    """Odd shapes, nesting, NaN, negative or mistyped allotments and sizes: a PortfolioInputError
    naming the input, or a valid list."""
    from smartpick_ml.inference.portfolio import PortfolioInputError, best_signalled_list

    try:
        arr = np.asarray(q, dtype=float)
    except (TypeError, ValueError):
        arr = None
    try:
        got = best_signalled_list(q, np.ones(arr.shape[0] if arr is not None and arr.ndim
                                             else 1), size, allotments)
    except PortfolioInputError as exc:
        assert any(name in str(exc) for name in ("q_by_tier", "allotments", "size", "utility"))
    else:
        assert arr is not None and arr.ndim == 2 and np.isfinite(arr).all()
        assert len(got.chosen) == len(got.tiers) <= arr.shape[0]


def test_a_budgeted_joint_plan_equals_brute_force_on_random_instances():
    """Issue #18 ("under ERAS fees"): with a budget, the split of programs (and signals) between
    the preferred specialty and a backup is exact: equal to the best of every list whose fees,
    restarting per specialty, fit the budget."""
    import itertools

    from smartpick_ml.inference.portfolio import best_joint_list_within, fees_for_sizes

    rng = np.random.default_rng(81)
    fee = fees_for_sizes(np.arange(8), "2025")
    for _ in range(400):
        ns = [int(rng.integers(1, 5)), int(rng.integers(1, 4))]
        allot = [int(rng.integers(0, 2))]
        q0 = [np.round(rng.uniform(0, 0.7, n), 3) for n in ns]
        qt = np.column_stack([q0[0], np.minimum(1.0, q0[0] * 2.0)])
        us = [np.round(rng.uniform(0.1, 3, n), 1) for n in ns]
        budget = float(rng.integers(80, 80 + int(fee[5]) + 1))
        signalled = [(qt, allot), None]
        got = best_joint_list_within(q0, us, ns, budget, "2025", signalled, fixed_usd=80)
        best = 0.0
        for k1 in range(ns[0] + 1):
            for k2 in range(ns[1] + 1):
                if fee[k1] + fee[k2] + 80 > budget:
                    continue
                for c1 in itertools.combinations(range(ns[0]), k1):
                    for tiers in _tier_choices(k1, allot):
                        for c2 in itertools.combinations(range(ns[1]), k2):
                            value = _list_value([qt[list(c1), list(tiers)], q0[1][list(c2)]],
                                                [us[0][list(c1)], us[1][list(c2)]])
                            best = max(best, value)
        assert got.expected_utility == pytest.approx(best, abs=1e-9)
        spent = sum(int(fee[len(c)]) for c in got.chosen) + 80
        assert spent <= budget


def test_a_budget_that_cannot_be_searched_or_paid_is_refused():
    from smartpick_ml.inference.portfolio import PortfolioInputError, best_joint_list_within

    q, u = [0.5] * 3, [1.0] * 3
    with pytest.raises(PortfolioInputError, match="max_sizes"):
        best_joint_list_within([q, q, q], [u, u, u], [3, 100, 100], 1_000.0)
    with pytest.raises(PortfolioInputError, match="budget_usd"):
        best_joint_list_within([q], [u], [3], 50.0, fixed_usd=80)
