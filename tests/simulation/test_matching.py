"""Tests for simulation.matching: deferred acceptance against brute force, stability, order
independence, cutoff semantics, validation, and a medium-size market."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpick_ml.simulation.matching import (
    MatchResult,
    _result_from_pairs,
    _validate,
    blocking_pairs,
    deferred_acceptance,
)

# Derandomized (and no example database) so CI sees the same markets every run; deadline off
# because brute force on the densest 6x4 markets takes tens of milliseconds.
PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Market = dict[str, Any]

# A few repeated values so score ties (broken by applicant index) are common.
SCORES = st.one_of(
    st.sampled_from([-1.0, 0.0, 1.0, 2.0]),
    st.floats(-5, 5, allow_nan=False, allow_infinity=False),
)


@st.composite
def markets(draw: st.DrawFn, max_applicants: int = 6, max_programs: int = 4) -> Market:
    """A random small market: acceptable pairs, ranks with gaps, scores with ties, shuffled."""
    n_app = draw(st.integers(0, max_applicants))
    n_prog = draw(st.integers(0, max_programs))
    quotas = draw(st.lists(st.integers(0, 3), min_size=n_prog, max_size=n_prog))
    rows: list[tuple[int, int, int, float]] = []
    for a in range(n_app):
        listed = [p for p in range(n_prog) if draw(st.booleans())]
        # Unique, arbitrary (possibly negative, gapped) rank values in random order.
        ranks = draw(
            st.lists(st.integers(-3, 12), min_size=len(listed), max_size=len(listed), unique=True)
        )
        for p, r in zip(listed, ranks, strict=True):
            rows.append((a, p, r, draw(SCORES)))
    order = draw(st.permutations(range(len(rows))))
    rows = [rows[i] for i in order]
    return {
        "pair_applicant": np.array([r[0] for r in rows], dtype=np.int64),
        "pair_program": np.array([r[1] for r in rows], dtype=np.int64),
        "applicant_rank": np.array([r[2] for r in rows], dtype=np.int64),
        "program_score": np.array([r[3] for r in rows], dtype=np.float64),
        "quotas": np.array(quotas, dtype=np.int64),
        "n_applicants": n_app,
    }


def assert_same_result(got: MatchResult, want: MatchResult) -> None:
    np.testing.assert_array_equal(got.applicant_match, want.applicant_match)
    np.testing.assert_array_equal(got.pair_matched, want.pair_matched)
    np.testing.assert_array_equal(got.program_cutoff, want.program_cutoff)
    np.testing.assert_array_equal(got.program_filled, want.program_filled)


def naive_blocking_pairs(match: np.ndarray, m: Market) -> list[tuple[int, int]]:
    """Definition-by-loops blocking-pair check, to cross-check the vectorised one."""
    app, prog = m["pair_applicant"].tolist(), m["pair_program"].tolist()
    rank, score = m["applicant_rank"].tolist(), m["program_score"].tolist()
    rank_of = {(a, p): r for a, p, r in zip(app, prog, rank, strict=True)}
    key_of = {(a, p): (s, -a) for a, p, s in zip(app, prog, score, strict=True)}
    holders: dict[int, list[int]] = {}
    for a, p in enumerate(match.tolist()):
        if p >= 0:
            holders.setdefault(p, []).append(a)
    out = []
    for a, p in zip(app, prog, strict=True):
        cur = int(match[a])
        if cur >= 0 and rank_of[(a, cur)] <= rank_of[(a, p)]:
            continue
        h = holders.get(p, [])
        if len(h) < m["quotas"][p] or any(key_of[(b, p)] < key_of[(a, p)] for b in h):
            out.append((a, p))
    return sorted(out)


def check_feasible(r: MatchResult, m: Market) -> None:
    """Shapes/dtypes, quotas respected, every match is an input pair, fields agree."""
    n_app, quotas = m["n_applicants"], m["quotas"]
    assert r.applicant_match.dtype == np.int64 and r.applicant_match.shape == (n_app,)
    assert r.pair_matched.dtype == bool and r.pair_matched.shape == m["pair_applicant"].shape
    assert r.program_cutoff.dtype == np.float64 and r.program_cutoff.shape == quotas.shape
    assert r.program_filled.dtype == np.int64 and r.program_filled.shape == quotas.shape
    assert np.all(r.program_filled <= quotas)
    pa, pp = m["pair_applicant"][r.pair_matched], m["pair_program"][r.pair_matched]
    assert np.unique(pa).size == pa.size  # one program per applicant
    np.testing.assert_array_equal(r.applicant_match[pa], pp)  # matches come from input pairs
    assert int((r.applicant_match >= 0).sum()) == pa.size
    np.testing.assert_array_equal(r.program_filled, np.bincount(pp, minlength=quotas.size))


# ---------------------------------------------------------------------------------------------
# Reference answer by enumeration
# ---------------------------------------------------------------------------------------------


def brute_force_applicant_optimal(**market: Any) -> MatchResult:
    """Reference answer for tiny markets (``market``: the arguments of deferred_acceptance):
    enumerate every matching, keep the stable ones and return the one every applicant weakly
    prefers to all others (the applicant-optimal one).

    Exponential in the number of applicants (<= ~8 here). Shares no code with
    :func:`deferred_acceptance` beyond the module's input validation and result assembly, taken
    from it on purpose: a disagreement can then only come from the matching itself.
    """
    m = _validate(**market)
    # Each applicant's options: one of their pairs, or None (unmatched).
    options: list[list[int | None]] = [[None] for _ in range(m.n_applicants)]
    for idx in range(m.n_pairs):
        options[int(m.applicant[idx])].append(idx)
    quota = m.quotas.tolist()
    app = m.applicant.tolist()
    prog = m.program.tolist()
    rank = m.rank.tolist()
    score = m.score.tolist()

    def program_prefers(i: int, j: int) -> bool:
        """Program of pair i (== program of pair j) prefers i's applicant to j's."""
        return (score[i], -app[i]) > (score[j], -app[j])

    stable: list[tuple[int | None, ...]] = []
    for choice in itertools.product(*options):
        held: list[list[int]] = [[] for _ in range(m.n_programs)]
        for idx in choice:
            if idx is not None:
                held[prog[idx]].append(idx)
        if any(len(h) > q for h, q in zip(held, quota, strict=True)):
            continue
        blocked = False
        for idx in range(m.n_pairs):
            cur = choice[app[idx]]
            if cur is not None and rank[cur] <= rank[idx]:
                continue  # applicant does not prefer this program
            h = held[prog[idx]]
            if len(h) < quota[prog[idx]] or any(program_prefers(idx, j) for j in h):
                blocked = True
                break
        if not blocked:
            stable.append(choice)

    def rank_or_inf(idx: int | None) -> float:
        return float("inf") if idx is None else rank[idx]

    best = [
        s
        for s in stable
        if all(
            all(rank_or_inf(s[a]) <= rank_or_inf(t[a]) for a in range(m.n_applicants))
            for t in stable
        )
    ]
    if len(best) != 1:  # theory guarantees exactly one; anything else is a bug here
        raise AssertionError(f"expected one applicant-optimal stable matching, got {len(best)}")
    matched = np.array([idx for idx in best[0] if idx is not None], dtype=np.int64)
    return _result_from_pairs(m, np.sort(matched))


# ---------------------------------------------------------------------------------------------
# Property tests on small random markets (~3,600 markets in total)
# ---------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=1200)
@given(markets())
def test_equals_brute_force_applicant_optimal(m: Market) -> None:
    assert_same_result(deferred_acceptance(**m), brute_force_applicant_optimal(**m))


@settings(PROPERTY, max_examples=1200)
@given(markets(max_applicants=8, max_programs=5))
def test_stable_and_feasible(m: Market) -> None:
    r = deferred_acceptance(**m)
    check_feasible(r, m)
    assert blocking_pairs(r, **m) == []
    assert naive_blocking_pairs(r.applicant_match, m) == []
    # Cutoff semantics, stated independently of the implementation.
    for p, q in enumerate(m["quotas"].tolist()):
        held = r.pair_matched & (m["pair_program"] == p)
        if q == 0:
            assert r.program_cutoff[p] == np.inf
        elif r.program_filled[p] == q:
            assert r.program_cutoff[p] == m["program_score"][held].min()
        else:
            assert r.program_cutoff[p] == -np.inf


@settings(PROPERTY, max_examples=800)
@given(markets(), st.data())
def test_independent_of_presentation_order(m: Market, data: st.DataObject) -> None:
    base = deferred_acceptance(**m)
    n_pairs, n_prog, n_app = m["pair_applicant"].size, m["quotas"].size, m["n_applicants"]

    # 1. Shuffled pair order: same matching, pair_matched follows the pairs.
    perm = np.array(data.draw(st.permutations(range(n_pairs))), dtype=np.int64)
    shuffled = {k: (v[perm] if k not in ("quotas", "n_applicants") else v) for k, v in m.items()}
    r = deferred_acceptance(**shuffled)
    np.testing.assert_array_equal(r.applicant_match, base.applicant_match)
    np.testing.assert_array_equal(r.pair_matched, base.pair_matched[perm])
    np.testing.assert_array_equal(r.program_cutoff, base.program_cutoff)
    np.testing.assert_array_equal(r.program_filled, base.program_filled)

    # 2. Relabelled programs: same matching up to the relabelling.
    sigma = np.array(data.draw(st.permutations(range(n_prog))), dtype=np.int64)
    quotas = np.empty_like(m["quotas"])
    quotas[sigma] = m["quotas"]
    r = deferred_acceptance(**{**m, "pair_program": sigma[m["pair_program"]], "quotas": quotas})
    sigma_or_unmatched = np.append(sigma, -1)  # index -1 (unmatched) maps to -1
    np.testing.assert_array_equal(r.applicant_match, sigma_or_unmatched[base.applicant_match])
    np.testing.assert_array_equal(r.program_cutoff[sigma], base.program_cutoff)

    # 3. Relabelled applicants. Ties are broken by applicant index, so first make every score
    # strict (the position in the program-preference order) -- same preferences, same matching.
    pa, ps = m["pair_applicant"], m["program_score"]
    strict = np.empty(n_pairs, dtype=np.float64)
    strict[np.lexsort((-pa, ps))] = np.arange(n_pairs)
    r_strict = deferred_acceptance(**{**m, "program_score": strict})
    np.testing.assert_array_equal(r_strict.applicant_match, base.applicant_match)
    pi = np.array(data.draw(st.permutations(range(n_app))), dtype=np.int64)
    r = deferred_acceptance(**{**m, "program_score": strict, "pair_applicant": pi[pa]})
    np.testing.assert_array_equal(r.applicant_match[pi], base.applicant_match)
    np.testing.assert_array_equal(r.pair_matched, base.pair_matched)


@settings(PROPERTY, max_examples=400)
@given(markets(), st.data())
def test_blocking_pairs_matches_definition_on_arbitrary_matchings(
    m: Market, data: st.DataObject
) -> None:
    # Any feasible (usually unstable) matching: applicants take random acceptable programs
    # while those have room.
    match = np.full(m["n_applicants"], -1, dtype=np.int64)
    room = m["quotas"].copy()
    for i in data.draw(st.permutations(range(m["pair_applicant"].size))):
        a, p = int(m["pair_applicant"][i]), int(m["pair_program"][i])
        if match[a] < 0 and room[p] > 0 and data.draw(st.booleans()):
            match[a], room[p] = p, room[p] - 1
    fake = MatchResult(match, np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int64))
    assert blocking_pairs(fake, **m) == naive_blocking_pairs(match, m)


# ---------------------------------------------------------------------------------------------
# Unit tests
# ---------------------------------------------------------------------------------------------


def market(rows: list[tuple[int, int, int, float]], quotas: list[int], n_app: int) -> Market:
    """Market from (applicant, program, rank, score) rows."""
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return {
        "pair_applicant": np.array(cols[0], dtype=np.int64),
        "pair_program": np.array(cols[1], dtype=np.int64),
        "applicant_rank": np.array(cols[2], dtype=np.int64),
        "program_score": np.array(cols[3], dtype=np.float64),
        "quotas": np.array(quotas, dtype=np.int64),
        "n_applicants": n_app,
    }


def test_two_by_two_gives_applicant_optimal_not_program_optimal() -> None:
    # Each applicant's first choice prefers the other applicant: two stable matchings exist;
    # applicant proposing must give each applicant their first choice.
    m = market([(0, 0, 1, 1.0), (0, 1, 2, 2.0), (1, 1, 1, 1.0), (1, 0, 2, 2.0)], [1, 1], 2)
    r = deferred_acceptance(**m)
    np.testing.assert_array_equal(r.applicant_match, [0, 1])
    np.testing.assert_array_equal(r.pair_matched, [True, False, True, False])
    # The program-optimal matching is stable too; the applicant-optimal one is not it.
    program_optimal = MatchResult(
        np.array([1, 0]), r.pair_matched, r.program_cutoff, r.program_filled
    )
    assert blocking_pairs(program_optimal, **m) == []


def test_hand_worked_hospitals_residents_example() -> None:
    # Worked by hand (applicants propose in index order):
    #   A0->P0 held; A1->P4 rejected (quota 0), ->P0 held; A2->P0 displaces A1; A1->P2 held;
    #   A3->P1 held; A4->P2 rejected; A4->P1 displaces A3; A3->P0 displaces A0;
    #   A0->P1 displaces A4; A4->P3 held (P3 does not fill).
    rows = [
        # applicant, program, rank, program's score
        (0, 0, 10, 3.0), (0, 1, 20, 3.0),
        (1, 4, 0, 9.0), (1, 0, 1, 2.0), (1, 2, 2, 1.0),
        (2, 0, 1, 4.0), (2, 1, 2, 1.0), (2, 2, 3, 2.0),
        (3, 1, 5, 0.0), (3, 0, 7, 5.0),
        (4, 2, 1, 0.0), (4, 1, 2, 2.0), (4, 3, 3, 0.5),
    ]  # fmt: skip
    m = market(rows, [2, 1, 1, 3, 0], 6)  # applicant 5 ranks nothing
    r = deferred_acceptance(**m)
    np.testing.assert_array_equal(r.applicant_match, [1, 2, 0, 0, 3, -1])
    np.testing.assert_array_equal(r.program_filled, [2, 1, 1, 1, 0])
    # P0 full: lowest held score 4 (A2); P1: 3 (A0); P2: 1 (A1); P3 not full; P4 quota 0.
    np.testing.assert_array_equal(r.program_cutoff, [4.0, 3.0, 1.0, -np.inf, np.inf])
    expected_pairs = {(0, 1), (1, 2), (2, 0), (3, 0), (4, 3)}
    got_pairs = {(a, p) for a, p, _, _ in np.array(rows, dtype=object)[r.pair_matched]}
    assert got_pairs == expected_pairs
    assert_same_result(r, brute_force_applicant_optimal(**m))


def test_score_tie_goes_to_lower_applicant_index_and_sets_cutoff() -> None:
    m = market([(2, 0, 0, 7.0), (1, 0, 0, 7.0), (0, 0, 0, 3.0)], [1], 3)
    r = deferred_acceptance(**m)
    np.testing.assert_array_equal(r.applicant_match, [-1, 0, -1])
    assert r.program_cutoff[0] == 7.0  # applicant 2 scored the cutoff but lost the tie-break


def test_cutoff_is_lowest_held_score_when_full_else_minus_inf() -> None:
    m = market(
        [(0, 0, 0, 5.0), (1, 0, 0, 2.0), (2, 0, 0, 9.0), (3, 1, 0, 4.0), (4, 1, 0, 8.0)],
        [2, 3],
        5,
    )
    r = deferred_acceptance(**m)
    np.testing.assert_array_equal(r.applicant_match, [0, -1, 0, 1, 1])
    np.testing.assert_array_equal(r.program_cutoff, [5.0, -np.inf])
    np.testing.assert_array_equal(r.program_filled, [2, 2])


@pytest.mark.parametrize(("n_app", "quotas"), [(0, []), (3, []), (3, [2, 0]), (0, [1])])
def test_empty_market(n_app: int, quotas: list[int]) -> None:
    m = {
        "pair_applicant": [],
        "pair_program": [],
        "applicant_rank": [],
        "program_score": [],
        "quotas": quotas,
        "n_applicants": n_app,
    }
    r = deferred_acceptance(**m)
    np.testing.assert_array_equal(r.applicant_match, np.full(n_app, -1))
    assert r.applicant_match.dtype == np.int64
    assert r.pair_matched.shape == (0,) and r.pair_matched.dtype == bool
    np.testing.assert_array_equal(r.program_filled, np.zeros(len(quotas)))
    np.testing.assert_array_equal(r.program_cutoff, [np.inf if q == 0 else -np.inf for q in quotas])
    assert blocking_pairs(r, **m) == []
    assert_same_result(brute_force_applicant_optimal(**m), r)


GOOD: Market = market([(0, 0, 0, 1.0), (0, 1, 1, 2.0), (1, 0, 0, 3.0)], [1, 1], 2)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"pair_program": [0, 1]}, r"pair_program has length 2 .* length 3"),
        ({"applicant_rank": [0, 1]}, r"applicant_rank has length 2"),
        ({"program_score": [1.0]}, r"program_score has length 1"),
        ({"pair_applicant": [0, 0, 2]}, r"pair_applicant out of range \[0, 2\)"),
        ({"pair_applicant": [0, -1, 1]}, r"pair_applicant out of range"),
        ({"pair_program": [0, 1, 2]}, r"pair_program out of range \[0, 2\)"),
        ({"pair_program": [0, 0, 0]}, r"duplicate \(applicant, program\) pair \(0, 0\)"),
        ({"applicant_rank": [4, 4, 0]}, r"applicant_rank has duplicate rank 4 for applicant 0"),
        ({"quotas": [1, -1]}, r"quotas must be >= 0, got quotas\[1\] = -1"),
        ({"program_score": [1.0, np.nan, 2.0]}, r"program_score contains NaN"),
        ({"n_applicants": -1}, r"n_applicants must be >= 0"),
        ({"n_applicants": 2.0}, r"n_applicants must be an integer"),
        ({"pair_applicant": [0.0, 0.0, 1.0]}, r"pair_applicant must hold integers"),
        ({"quotas": [[1, 1]]}, r"quotas must be 1-dimensional"),
        ({"program_score": ["a", "b", "c"]}, r"program_score must hold real numbers"),
    ],
)
def test_validation_errors_name_the_argument(change: Market, pattern: str) -> None:
    bad = {**GOOD, **change}
    with pytest.raises(ValueError, match=pattern):
        deferred_acceptance(**bad)
    with pytest.raises(ValueError, match=pattern):
        brute_force_applicant_optimal(**bad)
    with pytest.raises(ValueError, match=pattern):
        blocking_pairs(deferred_acceptance(**GOOD), **bad)


def test_blocking_pairs_rejects_match_outside_input() -> None:
    fake = MatchResult(np.array([0, 1]), np.zeros(3, bool), np.zeros(2), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="applicant 1 is matched to program 1"):
        blocking_pairs(fake, **GOOD)


# ---------------------------------------------------------------------------------------------
# Medium market
# ---------------------------------------------------------------------------------------------


def random_market(seed: int, n_app: int, n_prog: int) -> Market:
    """Correlated preferences (popular programs, strong applicants) with many score ties."""
    rng = np.random.default_rng(seed)
    quotas = rng.integers(0, 9, size=n_prog)
    popularity = rng.normal(size=n_prog)
    strength = rng.normal(size=n_app)
    lengths = rng.integers(1, 16, size=n_app)
    app = np.repeat(np.arange(n_app), lengths)
    w = np.exp(popularity) / np.exp(popularity).sum()
    prog = np.concatenate([rng.choice(n_prog, size=k, replace=False, p=w) for k in lengths])
    rank = np.concatenate([rng.permutation(k) * 3 for k in lengths])  # gapped, random order
    score = np.round(strength[app] + rng.normal(scale=0.5, size=app.size), 1)  # ties
    perm = rng.permutation(app.size)
    return {
        "pair_applicant": app[perm],
        "pair_program": prog[perm],
        "applicant_rank": rank[perm],
        "program_score": score[perm],
        "quotas": quotas,
        "n_applicants": n_app,
    }


def queue_gale_shapley(m: Market) -> np.ndarray:
    """Independent reference: textbook queue-based Gale-Shapley on dicts."""
    lists: dict[int, list[tuple[int, int]]] = {}
    key: dict[tuple[int, int], tuple[float, int]] = {}
    for a, p, r, s in zip(*(m[k].tolist() for k in list(m)[:4]), strict=True):
        lists.setdefault(a, []).append((r, p))
        key[(a, p)] = (s, -a)
    prefs = {a: [p for _, p in sorted(v)] for a, v in lists.items()}
    held: dict[int, list[int]] = {p: [] for p in range(m["quotas"].size)}
    nxt = dict.fromkeys(prefs, 0)
    free = deque(prefs)
    while free:
        a = free.popleft()
        if nxt[a] >= len(prefs[a]):
            continue
        p = prefs[a][nxt[a]]
        nxt[a] += 1
        held[p].append(a)
        if len(held[p]) > m["quotas"][p]:
            worst = min(held[p], key=lambda b, p=p: key[(b, p)])
            held[p].remove(worst)
            free.append(worst)
    match = np.full(m["n_applicants"], -1, dtype=np.int64)
    for p, h in held.items():
        match[h] = p
    return match


def test_medium_market_is_stable_and_matches_reference() -> None:
    m = random_market(seed=7, n_app=2000, n_prog=300)
    r = deferred_acceptance(**m)
    check_feasible(r, m)
    assert int((r.applicant_match >= 0).sum()) > 1000  # non-trivial market
    assert blocking_pairs(r, **m) == []
    np.testing.assert_array_equal(r.applicant_match, queue_gale_shapley(m))


def test_medium_market_perturbation_is_caught() -> None:
    # Unmatching someone frees a slot they want back: the vectorised check must flag that pair.
    m = random_market(seed=11, n_app=2000, n_prog=300)
    r = deferred_acceptance(**m)
    a = int(np.flatnonzero(r.applicant_match >= 0)[0])
    match = r.applicant_match.copy()
    p = int(match[a])
    match[a] = -1
    broken = MatchResult(match, r.pair_matched, r.program_cutoff, r.program_filled)
    assert (a, p) in blocking_pairs(broken, **m)


def test_deterministic() -> None:
    m = random_market(seed=3, n_app=500, n_prog=60)
    assert_same_result(deferred_acceptance(**m), deferred_acceptance(**m))
