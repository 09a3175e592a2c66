"""Where to apply: rank-list probabilities, optimal application portfolios and ERAS fees.

Given per-program probabilities ``q_j = P(program j would take the applicant)`` (treated as
independent given the applicant) and utilities ``U_j >= 0`` (the applicant's value of a program;
being unmatched is worth 0), this module answers:

- ``match_probability``: for a rank list in preference order, P(match at each program), P(match),
  P(unmatched) and E[utility] (design note ``match-model.md`` §3).
- ``optimal_portfolios``: the set of ``h`` programs to apply to that maximises
  E[max utility among the programs in the set that would take you], for every ``h`` up to a limit.
  This is the equal-cost "college application problem" of Kapur & Hong (2022, arXiv:2205.01869):
  optimal portfolios are nested, so a greedy that adds the largest marginal gain is exact.
- ``eras_fee`` / ``fees_for_sizes``: ERAS fees per specialty for a number of applications, with the
  schedules embedded below (so nothing is read from disk).
- ``plan_table``: one row per list length ``h`` with P(match), E[utility], dollars, dollars per
  extra percentage point of P(match), and the gain over the intuitive top-``h``-by-``q*U`` rule.

The applicant ranks programs by utility, descending, ties by lower index; the value of a set does
not depend on how ties are ordered (tied programs are worth the same).
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numba
import numpy as np
import pandas as pd

from smartpick_ml.contracts.errors import SmartPickError

__all__ = [
    "ERAS_FEE_SCHEDULES",
    "USMLE_TRANSCRIPT_FEE_SOURCE",
    "USMLE_TRANSCRIPT_FEE_USD",
    "FeeSchedule",
    "FeeTier",
    "JointList",
    "SignalledList",
    "MatchProbability",
    "PortfolioInputError",
    "PortfolioPath",
    "eras_fee",
    "fees_for_sizes",
    "best_joint_list",
    "best_joint_list_within",
    "best_signalled_list",
    "joint_list_value",
    "match_probability",
    "naive_top_by_ev",
    "optimal_portfolios",
    "plan_table",
    "portfolio_value",
]

ArrayLike1D = Sequence[float] | np.ndarray


class PortfolioInputError(SmartPickError, ValueError):
    """An argument to a portfolio function is invalid; the message names the argument."""


# --------------------------------------------------------------------------------------------
# ERAS fee schedules (copied from shared/reference/eras_fees.json; a test checks they still agree)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeTier:
    """Applications ``first..last`` (inclusive; ``last=None`` = no upper end) in one specialty.

    A tier charges either ``usd_each`` per application in it or ``usd_flat`` once if any
    application falls in it.
    """

    first: int
    last: int | None
    usd_each: int | None = None
    usd_flat: int | None = None


@dataclass(frozen=True)
class FeeSchedule:
    """An ERAS residency fee schedule, charged per specialty (it restarts for each specialty)."""

    name: str  # the key in eras_fees.json
    tiers: tuple[FeeTier, ...]
    sources: tuple[str, ...]


_ERAS_2025 = FeeSchedule(
    name="ERAS_2025_and_2026_seasons",
    tiers=(FeeTier(1, 30, usd_each=11), FeeTier(31, None, usd_each=30)),
    sources=(
        "https://students-residents.aamc.org/applying-residencies-eras/"
        "fee-announcement-2025-eras-residency-applications",
        "https://students-residents.aamc.org/applying-residencies-eras/publication-chapters/"
        "fees-2025-eras-season",
    ),
)
_ERAS_2024 = FeeSchedule(
    name="ERAS_2024_season",
    tiers=(
        FeeTier(1, 10, usd_flat=99),
        FeeTier(11, 20, usd_each=19),
        FeeTier(21, 30, usd_each=23),
        FeeTier(31, None, usd_each=27),
    ),
    sources=(
        "https://students-residents.aamc.org/applying-residencies-eras/"
        "fees-eras-residency-applications",
    ),
)

#: Schedules by season; "2025" and "2026" are the same schedule.
ERAS_FEE_SCHEDULES: Mapping[str, FeeSchedule] = MappingProxyType(
    {"2025": _ERAS_2025, "2026": _ERAS_2025, "2024": _ERAS_2024}
)
#: USMLE transcript fee, charged once per season (not per specialty).
USMLE_TRANSCRIPT_FEE_USD = 80
USMLE_TRANSCRIPT_FEE_SOURCE = "shared/reference/eras_fees.json: other_fees.USMLE_transcript_usd"


def _schedule(schedule: str) -> FeeSchedule:
    try:
        return ERAS_FEE_SCHEDULES[str(schedule)]
    except KeyError:
        known = ", ".join(repr(k) for k in ERAS_FEE_SCHEDULES)
        raise PortfolioInputError(
            f"schedule = {schedule!r}: unknown ERAS fee schedule (known: {known})"
        ) from None


def fees_for_sizes(sizes: Iterable[int] | np.ndarray, schedule: str = "2025") -> np.ndarray:
    """ERAS fee in USD (int64 array) for each number of programs in ``sizes``, one specialty."""
    sched = _schedule(schedule)
    if isinstance(sizes, np.ndarray) and sizes.ndim != 1:
        raise PortfolioInputError(f"sizes has shape {sizes.shape}: must be one-dimensional")
    values = sizes.tolist() if isinstance(sizes, np.ndarray) else list(sizes)
    for i, v in enumerate(values):
        if not _is_count(v):
            raise PortfolioInputError(
                f"sizes[{i}] = {v!r}: must be an integer number of programs >= 0"
            )
    n = np.asarray(values, dtype=np.int64)
    fee = np.zeros(n.shape, dtype=np.int64)
    for tier in sched.tiers:
        last = np.iinfo(np.int64).max if tier.last is None else tier.last
        in_tier = np.clip(np.minimum(n, last) - tier.first + 1, 0, None)
        if tier.usd_flat is not None:
            fee += np.where(in_tier > 0, tier.usd_flat, 0)
        else:
            fee += in_tier * int(tier.usd_each or 0)
    return fee


def eras_fee(n_programs: int, schedule: str = "2025") -> int:
    """ERAS fee in USD for applying to ``n_programs`` programs in one specialty (0 for none)."""
    if not _is_count(n_programs):
        raise PortfolioInputError(
            f"n_programs = {n_programs!r}: must be an integer number of programs >= 0"
        )
    return int(fees_for_sizes([operator.index(n_programs)], schedule)[0])


def _is_count(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 0


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _as_vector(x: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PortfolioInputError(f"{name}: must be a sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise PortfolioInputError(f"{name} has shape {arr.shape}: must be one-dimensional")
    if arr.size == 0:
        raise PortfolioInputError(f"{name} is empty: need at least one program")
    return arr


def _first_bad(arr: np.ndarray, ok: np.ndarray, name: str, rule: str) -> None:
    if not ok.all():
        bad = np.flatnonzero(~ok)
        more = f" ({bad.size} bad values)" if bad.size > 1 else ""
        # .item() so the message shows "nan", not "np.float64(nan)"
        raise PortfolioInputError(f"{name}[{bad[0]}] = {arr[bad[0]].item()!r}: {rule}{more}")


def _check_q(q: object, name: str = "q") -> np.ndarray:
    arr = _as_vector(q, name)
    with np.errstate(invalid="ignore"):  # NaN comparisons are the point here
        ok = np.isfinite(arr) & (arr >= 0.0) & (arr <= 1.0)
    _first_bad(arr, ok, name, "must be a finite probability in [0, 1]")
    return arr


def _check_utility(
    utility: object, n: int, *, nonnegative: bool, name: str = "utility"
) -> np.ndarray:
    arr = _as_vector(utility, name)
    if arr.size != n:
        raise PortfolioInputError(
            f"{name} has length {arr.size} but q has length {n}: must be equal"
        )
    ok = np.isfinite(arr)
    if nonnegative:
        with np.errstate(invalid="ignore"):
            ok &= arr >= 0.0
        _first_bad(arr, ok, name, "must be finite and >= 0")
    else:
        _first_bad(arr, ok, name, "must be finite")
    return arr


def _check_size(value: object, name: str, n: int, what: str = "candidate programs") -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or int(value) < 1:
        raise PortfolioInputError(f"{name} = {value!r}: must be an integer >= 1")
    if int(value) > n:
        raise PortfolioInputError(f"{name} = {value!r}: exceeds the number of {what} ({n})")
    return int(value)


def _preference_order(utility: np.ndarray) -> np.ndarray:
    """Program indices in the applicant's rank order: utility descending, ties by lower index."""
    return np.lexsort((np.arange(utility.size), -utility))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # results live in frozen dataclasses: keep them immutable too
    return a


# --------------------------------------------------------------------------------------------
# 1. Probabilities of a rank list
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchProbability:
    """Outcome probabilities of one rank list (programs in the applicant's preference order).

    Attributes:
        p_match_at: float64 ``(n,)``, P(matched at the i-th program of the list).
        p_match: P(matched anywhere on the list) = 1 - prod(1 - q).
        p_unmatched: prod(1 - q).
        expected_utility: sum_i U_i * p_match_at[i] (unmatched is worth 0).
    """

    p_match_at: np.ndarray
    p_match: float
    p_unmatched: float
    expected_utility: float


def _rank_list_probs(q: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Unvalidated core: P(match at each position), P(match), P(unmatched)."""
    survive = np.cumprod(1.0 - q)  # P(no program at positions 0..i would take you)
    p_at = q.copy()
    p_at[1:] *= survive[:-1]
    # log1p/expm1 keep P(match) accurate when it is tiny (all long shots) as well as near 1.
    with np.errstate(divide="ignore"):  # q == 1 gives log(0) = -inf, which is correct here
        log_unmatched = np.log1p(-q).sum()
    return p_at, float(-np.expm1(log_unmatched)), float(survive[-1])


def match_probability(q: ArrayLike1D, utility: ArrayLike1D | None = None) -> MatchProbability:
    """Probabilities of a rank list ordered by preference: P(match at p_i) = q_i prod_{j<i}(1-q_j).

    ``utility`` (default 1 for every program, so E[U] = P(match)) may be any finite values; it is
    not used to reorder the list.
    """
    qv = _check_q(q)
    uv = (
        np.ones_like(qv) if utility is None else _check_utility(utility, qv.size, nonnegative=False)
    )
    p_at, p_match, p_unmatched = _rank_list_probs(qv)
    return MatchProbability(
        p_match_at=_readonly(p_at),
        p_match=p_match,
        p_unmatched=p_unmatched,
        expected_utility=float(uv @ p_at),
    )


# --------------------------------------------------------------------------------------------
# 2. The portfolio problem (equal costs)
# --------------------------------------------------------------------------------------------


def _value_sorted(q_sorted: np.ndarray, u_sorted: np.ndarray) -> float:
    """Objective for programs already in preference order (no validation)."""
    if q_sorted.size == 0:
        return 0.0
    p_at, _, _ = _rank_list_probs(q_sorted)
    return float(u_sorted @ p_at)


def portfolio_value(q: ArrayLike1D, utility: ArrayLike1D, indices: Iterable[int]) -> float:
    """E[max utility among programs in ``indices`` that would take you] (0 for an empty set)."""
    qv = _check_q(q)
    uv = _check_utility(utility, qv.size, nonnegative=True)
    return _value_of(qv, uv, _check_indices(indices, qv.size))


def _value_of(qv: np.ndarray, uv: np.ndarray, idx: np.ndarray) -> float:
    # Rank the chosen programs as the applicant would: utility descending, ties by index.
    idx = idx[np.lexsort((idx, -uv[idx]))]
    return _value_sorted(qv[idx], uv[idx])


def _check_indices(indices: Iterable[int], n: int) -> np.ndarray:
    raw = list(indices) if not isinstance(indices, np.ndarray) else indices.tolist()
    for i, v in enumerate(raw):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or not 0 <= int(v) < n:
            raise PortfolioInputError(
                f"indices[{i}] = {v!r}: must be an integer program index in [0, {n})"
            )
    idx = np.asarray(raw, dtype=np.int64)
    if np.unique(idx).size != idx.size:
        raise PortfolioInputError("indices: contains a program more than once")
    return idx


@dataclass(frozen=True)
class PortfolioPath:
    """Optimal portfolios for every size ``h = 1..max_size`` (they are nested).

    Attributes:
        order: int64 ``(max_size,)``, program indices in the order the algorithm added them; the
            optimal portfolio of size ``h`` is ``order[:h]``.
        marginal_gain: float64 ``(max_size,)``, E[U] gained by the h-th addition.
        expected_utility: float64 ``(max_size,)``, E[U] of the optimal size-``h`` portfolio at
            index ``h - 1`` (= cumulative sum of ``marginal_gain``).
        p_match: float64 ``(max_size,)``, P(match) = 1 - prod(1 - q) of that portfolio. The
            optimiser maximises E[U], not P(match).
    """

    order: np.ndarray
    marginal_gain: np.ndarray
    expected_utility: np.ndarray
    p_match: np.ndarray

    @property
    def max_size(self) -> int:
        return int(self.order.size)

    def portfolio(self, h: int) -> np.ndarray:
        """Indices of the optimal portfolio of size ``h`` (in the order added)."""
        h = _check_size(h, "h", self.max_size, "portfolios computed (max_size)")
        return self.order[:h]

    def portfolios(self) -> list[np.ndarray]:
        """Every optimal portfolio, ``[order[:1], order[:2], ..., order[:max_size]]``."""
        return [self.order[:h] for h in range(1, self.max_size + 1)]


def optimal_portfolios(q: ArrayLike1D, utility: ArrayLike1D, max_size: int) -> PortfolioPath:
    """Exact optimal application portfolios of every size up to ``max_size`` (O(n log n + n h)).

    Kapur & Hong (2022) show that with equal application costs the optimal portfolio of size
    h + 1 contains the one of size h, so adding the largest marginal gain each step is exact.

    The marginal gains are kept current in O(n) per step by their reduction: once program k
    (probability f, current utility t_k) is in the portfolio, the value of adding any set Y is
    ``f t_k + v'(Y)``, where v' is the same problem with utilities
    ``t_i - f t_k`` for programs the applicant prefers to k and ``(1 - f) t_i`` for the rest.
    (Expand E[max] in preference order and use P(none of Y above k takes you) =
    1 - sum of P(first taker is i).) So the gain of adding i is always ``q_i * t_i`` with the
    current reduced ``t``. The reduction keeps the preference order and ``t >= 0``.

    Ties in the gain go to the program the applicant prefers (higher utility, then lower index).
    """
    qv = _check_q(q)
    uv = _check_utility(utility, qv.size, nonnegative=True)
    h_max = _check_size(max_size, "max_size", qv.size)

    # Work in preference order so "programs preferred to k" is the prefix [:r] (no masks).
    rank_to_idx = _preference_order(uv)
    qs = qv[rank_to_idx]
    t = uv[rank_to_idx].copy()
    gain = np.empty_like(t)
    taken_ranks = np.empty(h_max, dtype=np.int64)
    gains = np.empty(h_max)
    for step in range(h_max):
        np.multiply(qs, t, out=gain)
        gain[taken_ranks[:step]] = -1.0  # gains are >= 0, so taken programs never win again
        r = int(np.argmax(gain))  # first maximum = the most preferred among tied gains
        f, tk = qs[r], t[r]
        taken_ranks[step] = r
        gains[step] = gain[r]
        if f > 0.0:
            t[:r] -= f * tk
            t[r:] *= 1.0 - f

    order = rank_to_idx[taken_ranks]
    with np.errstate(divide="ignore"):  # q == 1 -> log(0) = -inf -> P(match) = 1, as it should
        p_match = -np.expm1(np.cumsum(np.log1p(-qv[order])))
    return PortfolioPath(
        order=_readonly(order),
        marginal_gain=_readonly(gains),
        expected_utility=_readonly(np.cumsum(gains)),
        p_match=_readonly(p_match),
    )


@dataclass(frozen=True)
class JointList:
    """The best list across specialties ranked in a fixed order (preferred first, then each
    backup), for given numbers of programs per specialty.

    Attributes:
        chosen: per specialty, the program indices chosen (each block is ranked by utility).
        expected_utility: E[U] of the whole rank list (unmatched = 0).
        p_match: 1 - prod(1 - q) over every program chosen (independence).
    """

    chosen: tuple[np.ndarray, ...]
    expected_utility: float
    p_match: float
    #: per specialty, the signal tier of each chosen program (0: none; t: ``allotments``'
    #: t-th tier); all 0 where signals were not chosen
    tiers: tuple[np.ndarray, ...] = ()


def joint_list_value(qs: Sequence[ArrayLike1D], utilities: Sequence[ArrayLike1D],
                     chosen: Sequence[Iterable[int]]) -> float:
    """E[U] of a rank list that holds ``chosen[s]`` of specialty ``s``, specialty by specialty in
    the given order and by utility within each: the first program that takes the applicant is
    where they match (programs decide independently)."""
    value, reach = 0.0, 1.0
    for q, u, idx in zip(qs, utilities, chosen, strict=True):
        qv = _check_q(q)
        uv = _check_utility(u, qv.size, nonnegative=True)
        ids = _check_indices(idx, qv.size)
        ids = ids[_preference_order(uv[ids])]
        for i in ids:
            value += reach * qv[i] * uv[i]
            reach *= 1.0 - qv[i]
    return float(value)


def best_joint_list(qs: Sequence[ArrayLike1D], utilities: Sequence[ArrayLike1D],
                    sizes: Sequence[int],
                    signalled: Sequence[tuple[np.ndarray, Sequence[int]] | None] | None = None
                    ) -> JointList:
    """The exact best rank list with at most ``sizes[s]`` programs of specialty ``s``, the
    specialties ranked in the given order (the preferred one first), and where
    ``signalled[s]`` is given, the preference signals of that specialty chosen with it:
    ``(q_by_tier, allotments)``, q of each program with each signal tier (column 0: no signal,
    column t: tier t; column 0 must be ``qs[s]``) and how many signals of each tier there are.

    Why it is exact: the list's value is ``V_1(S_1; w)``, where ``w`` is the value of the rest of
    the list (reached only if no program of ``S_1`` takes the applicant) and
    ``V(S; w) = w + E[max over S of (U - w)]`` with every program of ``S`` ranked above the rest.
    ``V`` rises with ``w`` whatever ``S_1`` is, so the rest is chosen first, to maximise ``w``
    (the same argument down the list); then ``S_1`` is the optimal portfolio of the reduced
    utilities ``max(U - w, 0)`` (Kapur & Hong's nested portfolios; a program worth less than
    ``w`` is never worth ranking above it), of the best size up to ``sizes[0]``. With signals,
    a specialty's list is :func:`best_signalled_list` on top of ``w`` instead.
    """
    if len(qs) != len(utilities) or len(qs) != len(sizes) or not len(qs):
        raise PortfolioInputError("qs, utilities, sizes: one of each per specialty")
    signalled = list(signalled) if signalled is not None else [None] * len(qs)
    if len(signalled) != len(qs):
        raise PortfolioInputError("signalled: one entry (or None) per specialty")
    chosen: list[np.ndarray] = []
    tiers: list[np.ndarray] = []
    w = 0.0
    for q, u, h, sig in zip(reversed(qs), reversed(utilities), reversed(list(sizes)),
                            reversed(signalled), strict=True):
        qv = _check_q(q)
        uv = _check_utility(u, qv.size, nonnegative=True)
        if isinstance(h, bool) or not isinstance(h, numbers.Integral) or int(h) < 0:
            raise PortfolioInputError(f"sizes: {h!r} is not a whole number >= 0")
        h = min(int(h), qv.size)  # at most: a specialty may have fewer programs
        if h == 0:
            chosen.append(np.zeros(0, dtype=np.int64))
            tiers.append(np.zeros(0, dtype=np.int64))
            continue
        if sig is not None:
            best_list = best_signalled_list(sig[0], uv, h, sig[1], below=w)
            chosen.append(best_list.chosen)
            tiers.append(best_list.tiers)
            w = best_list.expected_utility
            continue
        path = optimal_portfolios(qv, np.maximum(uv - w, 0.0), h)
        values = np.concatenate([[0.0], path.expected_utility])
        best = int(np.argmax(values))  # the first maximum: never a program that adds nothing
        chosen.append(path.order[:best])
        tiers.append(np.zeros(best, dtype=np.int64))
        w += float(values[best])
    chosen.reverse()
    tiers.reverse()
    q_taken = [np.asarray(sig[0], float)[idx, t] if sig is not None else _check_q(q)[idx]
               for q, sig, idx, t in zip(qs, signalled, chosen, tiers, strict=True)]
    with np.errstate(divide="ignore"):
        p_match = -np.expm1(sum(float(np.sum(np.log1p(-qt))) for qt in q_taken))
    return JointList(chosen=tuple(_readonly(c) for c in chosen), expected_utility=w,
                     p_match=float(p_match), tiers=tuple(_readonly(t) for t in tiers))


#: the most combinations of backup list sizes a budgeted plan tries (each is one exact joint list)
MAX_BUDGET_COMBINATIONS = 2_000


def best_joint_list_within(qs: Sequence[ArrayLike1D], utilities: Sequence[ArrayLike1D],
                           max_sizes: Sequence[int], budget_usd: float, schedule: str = "2025",
                           signalled: Sequence[tuple[np.ndarray, Sequence[int]] | None]
                           | None = None, fixed_usd: int = 0) -> JointList:
    """:func:`best_joint_list` whose ERAS fees, restarting for each specialty, plus
    ``fixed_usd`` fit ``budget_usd``, with at most ``max_sizes[s]`` programs of specialty s.

    Exact: E[U] never falls when a specialty may take more programs (the optimiser may leave
    them out), so for each allowance of the backups the preferred specialty gets all the budget
    left, and every allowance of the backups that fits is tried: Π(max_sizes[1:] + 1) exact
    joint lists, at most :data:`MAX_BUDGET_COMBINATIONS`."""
    import itertools

    sizes = [int(h) for h in max_sizes]
    if any(h < 0 for h in sizes) or not sizes:
        raise PortfolioInputError("max_sizes: one whole number >= 0 per specialty")
    combos = int(np.prod([h + 1 for h in sizes[1:]]))
    if combos > MAX_BUDGET_COMBINATIONS:
        raise PortfolioInputError(
            f"max_sizes: with a budget every size of the backups is tried ({combos:,} "
            f"combinations; at most {MAX_BUDGET_COMBINATIONS:,}): give the backups smaller "
            "maxima")
    fees = [fees_for_sizes(np.arange(h + 1), schedule) for h in sizes]
    best: JointList | None = None
    for backup_sizes in itertools.product(*(range(h + 1) for h in sizes[1:])):
        left = budget_usd - fixed_usd - sum(int(f[n]) for f, n in zip(fees[1:], backup_sizes,
                                                                       strict=True))
        if left < 0:
            continue
        preferred = int(np.searchsorted(fees[0], left, side="right")) - 1
        plan = best_joint_list(qs, utilities, [preferred, *backup_sizes], signalled)
        if best is None or plan.expected_utility > best.expected_utility + 1e-15:
            best = plan
    if best is None:
        raise PortfolioInputError(f"budget_usd: ${budget_usd:,.0f} does not cover the fixed "
                                  f"${fixed_usd}")
    return best


@dataclass(frozen=True)
class SignalledList:
    """One specialty's best list with its preference signals (:func:`best_signalled_list`).

    Attributes:
        chosen: program indices, ranked by utility (the rank list's order).
        tiers: the signal tier of each (0: none, t: the t-th tier of ``allotments``).
        expected_utility: E[U] of the list on top of what ranks below it (``below``).
    """

    chosen: np.ndarray
    tiers: np.ndarray
    expected_utility: float


#: the most signal tiers a specialty has (gold and silver)
MAX_SIGNAL_TIERS = 2


def best_signalled_list(q_by_tier: np.ndarray, utility: ArrayLike1D, size: int,
                        allotments: Sequence[int], below: float = 0.0) -> SignalledList:
    """The exact best list of at most ``size`` programs and which of them to signal, with at most
    ``allotments[t - 1]`` signals of tier t, ranked above a rest of the list worth ``below``.

    ``q_by_tier[j, 0]`` is program j's q without a signal, ``q_by_tier[j, t]`` with a tier-t
    signal. Nesting fails here (a signal is worth most where q is middling, so the best list
    of h + 1 programs may signal others), so this is a dynamic program instead: with the
    programs in ascending preference, a list's value is built from the bottom as
    ``V <- u_j q_j + (1 - q_j) V`` for each program j ranked above the rest. That step rises
    with V, so among lists of the programs seen so far with the same length and the same
    signals used, only the best can be part of the best whole list: keeping one value per
    (length, signals of each tier) is exact. O(n · size · Π(allotment + 1) · tiers), compiled;
    a brute-force enumeration checks it on random small instances (tests/inference).
    """
    try:
        qt = np.asarray(q_by_tier, dtype=float)
    except (TypeError, ValueError):
        qt = np.zeros(0)
    if qt.ndim != 2 or not 1 <= qt.shape[1] <= MAX_SIGNAL_TIERS + 1 or not qt.shape[0]:
        raise PortfolioInputError(f"q_by_tier: expected q values of shape (programs >= 1, "
                                  f"1..{MAX_SIGNAL_TIERS + 1} tiers), got {qt.shape}")
    for t in range(qt.shape[1]):
        _check_q(qt[:, t], f"q_by_tier[:, {t}]")
    uv = _check_utility(utility, qt.shape[0], nonnegative=True)
    allot = list(allotments) if isinstance(allotments, Sequence) \
        and not isinstance(allotments, str) else None
    if allot is None or len(allot) != qt.shape[1] - 1 or not all(
            _is_count(a) and int(a) >= 0 for a in allot):
        raise PortfolioInputError("allotments: one whole number >= 0 per signal tier of "
                                  "q_by_tier")
    allot = [int(a) for a in allot]
    h = min(_check_size(size, "size", max(qt.shape[0], 1)), qt.shape[0])
    caps = np.zeros(MAX_SIGNAL_TIERS, np.int64)
    caps[:len(allot)] = np.minimum(allot, h)
    q3 = np.zeros((qt.shape[0], MAX_SIGNAL_TIERS + 1))
    q3[:, :qt.shape[1]] = qt
    order = np.lexsort((-np.arange(len(uv)), uv))  # ascending preference: the bottom first
    chosen, tiers, value = _signal_dp(q3[order], uv[order], h, caps, float(below))
    # the DP walks from the top of the list down: chosen is already in rank-list order
    return SignalledList(_readonly(order[chosen]), _readonly(tiers), float(value))


@numba.njit(cache=True)
def _signal_dp(q: np.ndarray, u: np.ndarray, size: int, caps: np.ndarray, below: float
               ) -> tuple[np.ndarray, np.ndarray, float]:
    n = q.shape[0]
    a1, a2 = caps[0], caps[1]
    value = np.full((size + 1, a1 + 1, a2 + 1), -np.inf)
    value[0, 0, 0] = below
    took = np.full((n, size + 1, a1 + 1, a2 + 1), -1, np.int8)
    for j in range(n):
        for k in range(min(size, j + 1), 0, -1):  # from long to short: sources are pre-j
            for g in range(a1 + 1):
                for s in range(a2 + 1):
                    best = value[k, g, s]
                    pick = -1
                    for t in range(3):
                        if t == 1 and g == 0 or t == 2 and s == 0:
                            continue
                        src = value[k - 1, g - (t == 1), s - (t == 2)]
                        if src == -np.inf:
                            continue
                        cand = u[j] * q[j, t] + (1.0 - q[j, t]) * src
                        if cand > best:  # a tie keeps the shorter list, fewer signals
                            best = cand
                            pick = t
                    if pick >= 0:
                        value[k, g, s] = best
                        took[j, k, g, s] = pick
    # the best end state, then back through the programs from the top of the list
    best_k, best_g, best_s, best = 0, 0, 0, value[0, 0, 0]
    for k in range(size + 1):
        for g in range(a1 + 1):
            for s in range(a2 + 1):
                if value[k, g, s] > best:
                    best, best_k, best_g, best_s = value[k, g, s], k, g, s
    chosen = np.empty(best_k, np.int64)
    tiers = np.empty(best_k, np.int64)
    k, g, s, m = best_k, best_g, best_s, 0
    for j in range(n - 1, -1, -1):
        if k == 0:
            break
        t = took[j, k, g, s]
        if t >= 0:
            chosen[m] = j
            tiers[m] = t
            m += 1
            k -= 1
            g -= t == 1
            s -= t == 2
    return chosen, tiers, best


def naive_top_by_ev(q: ArrayLike1D, utility: ArrayLike1D, h: int) -> np.ndarray:
    """The intuitive rule: the ``h`` programs with the largest ``q * U`` (ties by lower index).

    It ignores that admissions overlap (a second safety adds little once you hold one), and can
    be worse than optimal by a factor of up to h (Kapur & Hong 2022).
    """
    qv = _check_q(q)
    uv = _check_utility(utility, qv.size, nonnegative=True)
    h = _check_size(h, "h", qv.size)
    ev = qv * uv
    return np.lexsort((np.arange(ev.size), -ev))[:h]


def usd_per_extra_point(fee_usd: np.ndarray, p_match: np.ndarray) -> np.ndarray:
    """Dollars per extra percentage point of P(match) for lists of length 1, 2, …: the fee the
    h-th program adds over what it adds to P(match) (from no list at all for h = 1); NaN where
    P(match) does not rise."""
    d_fee = np.diff(np.asarray(fee_usd, float), prepend=0.0)
    d_pp = 100.0 * np.diff(np.asarray(p_match, float), prepend=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d_pp > 0.0, d_fee / d_pp, np.nan)


def plan_table(
    q: ArrayLike1D,
    utility: ArrayLike1D,
    max_size: int,
    schedule: str = "2025",
    *,
    transcript_fee_usd: int = USMLE_TRANSCRIPT_FEE_USD,
) -> pd.DataFrame:
    """One row per list length ``h = 1..max_size`` for applications within one specialty.

    Columns:
        h; added (index of the program the optimal list adds at this h);
        p_match, expected_utility: of the optimal size-h portfolio;
        fee_usd: ERAS fee for h programs in one specialty + ``transcript_fee_usd`` (the USMLE
            transcript, once per season; pass 0 if it is already paid for another specialty);
        usd_per_extra_pp: (fee_usd[h] - fee_usd[h-1]) / (100 * (p_match[h] - p_match[h-1])),
            dollars per extra percentage point of P(match); h = 0 means no applications and
            no fee, so the h = 1 row includes the transcript fee; NaN where P(match) did not rise;
        naive_expected_utility, naive_p_match: of the top-h programs by q * U;
        gain_vs_naive: expected_utility - naive_expected_utility, a **difference** (>= 0 up to
            rounding) in utility units; a ratio would be undefined when the naive value is 0.
    """
    qv = _check_q(q)
    uv = _check_utility(utility, qv.size, nonnegative=True)
    h_max = _check_size(max_size, "max_size", qv.size)
    if not _is_count(transcript_fee_usd):
        raise PortfolioInputError(
            f"transcript_fee_usd = {transcript_fee_usd!r}: must be an integer >= 0"
        )
    path = optimal_portfolios(qv, uv, h_max)
    sizes = np.arange(1, h_max + 1)
    fee = fees_for_sizes(sizes, schedule) + int(transcript_fee_usd)

    usd_per_pp = usd_per_extra_point(fee, path.p_match)

    # Top-h by q*U is nested too, so one ordering gives every h.
    naive_order = np.lexsort((np.arange(qv.size), -(qv * uv)))[:h_max]
    naive_ev = np.array([_value_of(qv, uv, naive_order[:h]) for h in sizes], dtype=np.float64)
    with np.errstate(divide="ignore"):
        naive_p = -np.expm1(np.cumsum(np.log1p(-qv[naive_order])))

    return pd.DataFrame(
        {
            "h": sizes,
            "added": path.order,
            "p_match": path.p_match,
            "expected_utility": path.expected_utility,
            "fee_usd": fee,
            "usd_per_extra_pp": usd_per_pp,
            "naive_expected_utility": naive_ev,
            "naive_p_match": naive_p,
            "gain_vs_naive": path.expected_utility - naive_ev,
        }
    )
