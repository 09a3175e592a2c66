"""The Match itself: applicant-proposing deferred acceptance with program quotas.

This is the core of the NRMP's Roth–Peranson algorithm without couples: every applicant applies
down their rank order list; each program tentatively holds the (up to) ``quota`` applicants it
prefers among those who applied so far and rejects the rest; a rejected applicant applies to their
next choice. The result is the applicant-optimal stable matching, which is unique, so the order in
which proposals are processed does not change it.

Input is a flat table of mutually acceptable pairs (the applicant ranked the program *and* the
program ranked the applicant). Program preferences are scores (larger = preferred) with ties
broken by the lower applicant index, so every program's ranking is strict.

Speed: one sort turns the pairs into per-applicant lists in rank order (CSR) and one more turns the
program scores into unique integer priorities; the proposal loop then runs on plain Python lists
with a bounded min-heap of priorities per program. Every pair is proposed at most once, so the loop
does O(n_pairs log quota) work.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MatchResult",
    "blocking_pairs",
    "deferred_acceptance",
]


@dataclass(frozen=True)
class MatchResult:
    """Outcome of a Match.

    Attributes:
        applicant_match: int64 ``(n_applicants,)``, the matched program index or -1 if unmatched.
        pair_matched: bool ``(n_pairs,)``, aligned with the input pairs.
        program_cutoff: float64 ``(n_programs,)``. For a program that filled a positive quota, the
            ``program_score`` of the least-preferred applicant it holds (an applicant scoring
            exactly the cutoff got in only if the tie-break by applicant index favoured them).
            ``-inf`` if it did not fill (it would have taken anyone it ranked), ``+inf`` if its
            quota is 0 (it takes no one). Scores may be infinite, so read ``program_filled`` to
            tell "full" from "not full" rather than testing the cutoff for ``-inf``.
        program_filled: int64 ``(n_programs,)``, the number of applicants matched to the program.
    """

    applicant_match: np.ndarray
    pair_matched: np.ndarray
    program_cutoff: np.ndarray
    program_filled: np.ndarray


@dataclass(frozen=True)
class _Market:
    """Validated inputs as contiguous arrays of fixed dtypes."""

    applicant: np.ndarray  # int64 (n_pairs,)
    program: np.ndarray  # int64 (n_pairs,)
    rank: np.ndarray  # int64 (n_pairs,)
    score: np.ndarray  # float64 (n_pairs,)
    quotas: np.ndarray  # int64 (n_programs,)
    n_applicants: int
    by_applicant: np.ndarray  # int64 (n_pairs,): pair indices sorted by (applicant, rank)

    @property
    def n_pairs(self) -> int:
        return int(self.applicant.shape[0])

    @property
    def n_programs(self) -> int:
        return int(self.quotas.shape[0])


def _int_array(name: str, values: Any) -> np.ndarray:
    """A 1-D int64 array; an empty array of any dtype is accepted (``[]`` is float64)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _first_adjacent_repeat(order: np.ndarray, first: np.ndarray, second: np.ndarray
                           ) -> tuple[int, int] | None:
    """Positions (ascending) of the first two rows that ``order`` places next to each other with
    equal (``first``, ``second``), or None: duplicates are neighbours once sorted by both keys."""
    a, b = first[order], second[order]
    dup = np.flatnonzero((a[1:] == a[:-1]) & (b[1:] == b[:-1]))
    if not dup.size:
        return None
    i, j = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
    return i, j


def _applicant_count(n_applicants: Any) -> int:
    """``n_applicants`` as a non-negative int."""
    try:
        n_app = operator.index(n_applicants)
    except TypeError:
        raise ValueError(
            f"n_applicants must be an integer, got {type(n_applicants).__name__}"
        ) from None
    if n_app < 0:
        raise ValueError(f"n_applicants must be >= 0, got {n_app}")
    return n_app


def _score_array(program_score: Any) -> np.ndarray:
    """``program_score`` as a 1-D float64 array of real numbers."""
    score_in = np.asarray(program_score)
    if score_in.ndim != 1:
        raise ValueError(f"program_score must be 1-dimensional, got shape {score_in.shape}")
    if score_in.size and score_in.dtype.kind not in "biuf":
        raise ValueError(f"program_score must hold real numbers, got dtype {score_in.dtype}")
    return np.ascontiguousarray(score_in, dtype=np.float64)


def _check_lengths(applicant: np.ndarray, program: np.ndarray, rank: np.ndarray,
                   score: np.ndarray) -> None:
    """Every pair array as long as ``pair_applicant``."""
    n = applicant.shape[0]
    for name, arr in (
        ("pair_program", program),
        ("applicant_rank", rank),
        ("program_score", score),
    ):
        if arr.shape[0] != n:
            raise ValueError(
                f"{name} has length {arr.shape[0]} but pair_applicant has length {n}; "
                "all pair arrays must have the same length"
            )


def _check_quotas(quota: np.ndarray) -> None:
    """No negative quota."""
    if quota.size and quota.min() < 0:
        bad = int(np.flatnonzero(quota < 0)[0])
        raise ValueError(f"quotas must be >= 0, got quotas[{bad}] = {quota[bad]}")


def _check_pair_values(applicant: np.ndarray, program: np.ndarray, score: np.ndarray,
                       n_app: int, n_prog: int) -> None:
    """Applicant and program indices in range, no NaN score."""
    bad_a = np.flatnonzero((applicant < 0) | (applicant >= n_app))
    if bad_a.size:
        i = int(bad_a[0])
        raise ValueError(
            f"pair_applicant out of range [0, {n_app}): pair_applicant[{i}] = {applicant[i]}"
        )
    bad_p = np.flatnonzero((program < 0) | (program >= n_prog))
    if bad_p.size:
        i = int(bad_p[0])
        raise ValueError(
            f"pair_program out of range [0, {n_prog}) (len(quotas)): "
            f"pair_program[{i}] = {program[i]}"
        )
    nan = np.flatnonzero(np.isnan(score))
    if nan.size:
        raise ValueError(f"program_score contains NaN, first at program_score[{int(nan[0])}]")


def _check_unique_pairs(applicant: np.ndarray, program: np.ndarray, n_app: int,
                        n_prog: int) -> None:
    """No (applicant, program) pair twice."""
    # Duplicates show up as equal neighbours once sorted by an (applicant, x) code. A plain sort
    # of one int64 code is faster than np.lexsort; fall back to it only if the code could
    # overflow.
    if n_app * n_prog < 2**62:
        pair_code = np.sort(applicant * n_prog + program)
        has_dup = bool(np.any(pair_code[1:] == pair_code[:-1]))
    else:
        has_dup = True  # let the slow path below decide
    if has_dup:
        repeat = _first_adjacent_repeat(np.lexsort((program, applicant)), applicant, program)
        if repeat:
            i, j = repeat
            raise ValueError(
                f"duplicate (applicant, program) pair ({applicant[i]}, {program[i]}) in "
                f"pair_applicant/pair_program at positions {i} and {j}"
            )


def _order_by_applicant(applicant: np.ndarray, rank: np.ndarray, n_app: int) -> np.ndarray:
    """Pair indices sorted by (applicant, rank), refusing a rank used twice by one applicant."""
    # The (applicant, rank) order doubles as the CSR layout deferred_acceptance walks.
    r_min, r_max = int(rank.min()), int(rank.max())
    if n_app * (r_max - r_min + 1) < 2**62:
        by_applicant = np.argsort(applicant * (r_max - r_min + 1) + (rank - r_min))
    else:
        by_applicant = np.lexsort((rank, applicant))
    repeat = _first_adjacent_repeat(by_applicant, applicant, rank)
    if repeat:
        i, j = repeat
        raise ValueError(
            f"applicant_rank has duplicate rank {rank[i]} for applicant {applicant[i]} "
            f"at positions {i} and {j}"
        )
    return by_applicant


def _validate(
    pair_applicant: Any,
    pair_program: Any,
    applicant_rank: Any,
    program_score: Any,
    quotas: Any,
    n_applicants: Any,
) -> _Market:
    """Check every documented precondition; raise ValueError naming the argument at fault."""
    n_app = _applicant_count(n_applicants)
    applicant = _int_array("pair_applicant", pair_applicant)
    program = _int_array("pair_program", pair_program)
    rank = _int_array("applicant_rank", applicant_rank)
    quota = _int_array("quotas", quotas)
    score = _score_array(program_score)
    _check_lengths(applicant, program, rank, score)
    _check_quotas(quota)
    if applicant.shape[0] == 0:
        return _Market(applicant, program, rank, score, quota, n_app, np.zeros(0, dtype=np.int64))
    _check_pair_values(applicant, program, score, n_app, quota.shape[0])
    _check_unique_pairs(applicant, program, n_app, quota.shape[0])
    by_applicant = _order_by_applicant(applicant, rank, n_app)
    return _Market(applicant, program, rank, score, quota, n_app, by_applicant)


def _result_from_pairs(m: _Market, matched_pairs: np.ndarray) -> MatchResult:
    """Assemble a MatchResult from the indices of the matched pairs."""
    pair_matched = np.zeros(m.n_pairs, dtype=bool)
    pair_matched[matched_pairs] = True
    applicant_match = np.full(m.n_applicants, -1, dtype=np.int64)
    applicant_match[m.applicant[matched_pairs]] = m.program[matched_pairs]
    filled = np.bincount(m.program[matched_pairs], minlength=m.n_programs).astype(np.int64)

    cutoff = np.full(m.n_programs, -np.inf)
    cutoff[m.quotas == 0] = np.inf
    full = (filled == m.quotas) & (m.quotas > 0)
    if matched_pairs.size:
        # Least-preferred held pair per program: sort held pairs by (program, score, -applicant)
        # and take the first of each program's run.
        held = matched_pairs[
            np.lexsort(
                (-m.applicant[matched_pairs], m.score[matched_pairs], m.program[matched_pairs])
            )
        ]
        hp = m.program[held]
        first = np.ones(held.size, dtype=bool)
        first[1:] = hp[1:] != hp[:-1]
        worst_score = np.full(m.n_programs, -np.inf)
        worst_score[hp[first]] = m.score[held[first]]
        cutoff[full] = worst_score[full]
    return MatchResult(
        applicant_match=applicant_match,
        pair_matched=pair_matched,
        program_cutoff=cutoff,
        program_filled=filled,
    )


def deferred_acceptance(
    pair_applicant: Any,
    pair_program: Any,
    applicant_rank: Any,
    program_score: Any,
    quotas: Any,
    n_applicants: int,
) -> MatchResult:
    """Applicant-proposing deferred acceptance (NRMP Match without couples).

    Args:
        pair_applicant: int ``(n_pairs,)``, applicant index in ``[0, n_applicants)``.
        pair_program: int ``(n_pairs,)``, program index in ``[0, len(quotas))``.
        applicant_rank: int ``(n_pairs,)``, position of the program on the applicant's list,
            smaller = preferred; unique within an applicant (gaps are fine).
        program_score: float ``(n_pairs,)``, the program's liking for the applicant, larger =
            preferred; ties go to the lower applicant index. No NaN.
        quotas: int ``(n_programs,)``, positions per program, ``>= 0``.
        n_applicants: number of applicants (some may appear in no pair).

    Returns:
        The applicant-optimal stable matching as a :class:`MatchResult`.

    Raises:
        ValueError: if an input breaks the contract above; the message names the argument.
    """
    m = _validate(pair_applicant, pair_program, applicant_rank, program_score, quotas, n_applicants)
    if m.n_pairs == 0:
        return _result_from_pairs(m, np.zeros(0, dtype=np.int64))
    n = m.n_pairs

    # Work in CSR order ("position"): each applicant's pairs contiguous and in rank order, so the
    # next choice after position i is i + 1.
    csr = m.by_applicant
    app_c = m.applicant[csr]
    counts = np.bincount(app_c, minlength=m.n_applicants)
    ends = np.cumsum(counts)

    # Program priority: a unique int per pair, larger = preferred, so heaps compare plain ints.
    # A stable sort by descending score keeps CSR (= applicant) order within ties, so the lower
    # applicant index comes first; reversing gives ascending priority. Priorities are global but
    # only ever compared within one program.
    pos_of_prio = np.argsort(-m.score[csr], kind="stable")[::-1]
    prio_of_pos = np.empty(n, dtype=np.int64)
    prio_of_pos[pos_of_prio] = np.arange(n, dtype=np.int64)

    # Plain lists: the hot loop indexes them faster than ndarrays (no scalar boxing per read).
    # Heaps start with one sentinel per slot: -1 (below every priority) for a free slot, n (above
    # every priority) for a program with no usable slot, so the loop needs no "has room?" branch.
    # Slots beyond the number of applicants who ranked the program can never fill: don't allocate.
    slots = np.minimum(m.quotas, np.bincount(m.program, minlength=m.n_programs))
    heaps = [[-1] * q if q else [n] for q in slots.tolist()]
    heap_at = [heaps[p] for p in m.program[csr].tolist()]  # heap of the program at position i
    prio = prio_of_pos.tolist()
    resume_of_prio = (pos_of_prio + 1).tolist()  # where a displaced applicant continues
    end_of_prio = ends[app_c[pos_of_prio]].tolist()  # where their list ends
    start_of = (ends - counts).tolist()
    end_of = ends.tolist()
    heapreplace = heapq.heapreplace

    for a in np.flatnonzero(counts).tolist():
        # Follow the rejection chain begun by applicant a's first proposal until someone takes a
        # free slot or runs out of list. Displaced applicants are handled at once, so there is no
        # queue of free applicants to keep.
        i, e = start_of[a], end_of[a]
        while i < e:
            h = heap_at[i]
            k = prio[i]
            if h[0] < k:  # root = least-preferred holder (or a free slot)
                worst = heapreplace(h, k)
                if worst < 0:
                    break
                i, e = resume_of_prio[worst], end_of_prio[worst]
            else:
                i += 1

    held = np.fromiter(itertools.chain.from_iterable(heaps), dtype=np.int64)
    held = held[(held >= 0) & (held < n)]  # drop sentinels
    return _result_from_pairs(m, np.sort(csr[pos_of_prio[held]]))


def blocking_pairs(result: MatchResult, **market: Any) -> list[tuple[int, int]]:
    """Input pairs ``(applicant, program)`` that block ``result``, sorted; empty = stable.
    ``market`` is the market ``result`` was computed from, as :func:`deferred_acceptance`'s
    keyword arguments.

    A pair blocks if the applicant is unmatched or ranks the program above their match, and the
    program has a free slot or holds someone it likes less. Vectorised, so it can check full-size
    markets. Uses only ``result.applicant_match`` (not the cutoffs), so it checks
    :func:`deferred_acceptance` independently of its own bookkeeping.

    Raises:
        ValueError: if the inputs are invalid, or an applicant is matched to a program that is
            not one of their input pairs.
    """
    m = _validate(**market)
    match = np.asarray(result.applicant_match, dtype=np.int64)
    if match.shape != (m.n_applicants,):
        raise ValueError(
            f"result.applicant_match has shape {match.shape}, expected ({m.n_applicants},)"
        )
    if m.n_pairs == 0:
        if np.any(match >= 0):
            raise ValueError("result matches applicants but there are no input pairs")
        return []

    # Locate each matched applicant's pair: search (applicant, program) codes.
    n_prog = m.n_programs
    code = m.applicant * n_prog + m.program
    order = np.argsort(code)
    sorted_code = code[order]
    matched_apps = np.flatnonzero(match >= 0)
    want = matched_apps * n_prog + match[matched_apps]
    pos = np.minimum(np.searchsorted(sorted_code, want), m.n_pairs - 1)
    found = sorted_code[pos] == want
    if not np.all(found):
        a = int(matched_apps[np.flatnonzero(~found)[0]])
        raise ValueError(
            f"applicant {a} is matched to program {match[a]}, which is not an input pair"
        )
    held = order[pos]

    # Applicant side: rank of the current match (+inf-like sentinel if unmatched).
    cur_rank = np.full(m.n_applicants, np.iinfo(np.int64).max, dtype=np.int64)
    cur_rank[matched_apps] = m.rank[held]
    applicant_wants = m.rank < cur_rank[m.applicant]

    # Program side: headcount and least-preferred held (score, applicant).
    filled = np.bincount(m.program[held], minlength=n_prog)
    worst_score = np.full(n_prog, np.inf)
    worst_app = np.full(n_prog, -1, dtype=np.int64)
    if held.size:
        h = held[np.lexsort((-m.applicant[held], m.score[held], m.program[held]))]
        hp = m.program[h]
        first = np.ones(h.size, dtype=bool)
        first[1:] = hp[1:] != hp[:-1]
        worst_score[hp[first]] = m.score[h[first]]
        worst_app[hp[first]] = m.applicant[h[first]]
    ws, wa = worst_score[m.program], worst_app[m.program]
    likes_more = (m.score > ws) | ((m.score == ws) & (m.applicant < wa))
    program_wants = (filled[m.program] < m.quotas[m.program]) | (
        (filled[m.program] > 0) & likes_more
    )

    block = np.flatnonzero(applicant_wants & program_wants)
    pairs = sorted(zip(m.applicant[block].tolist(), m.program[block].tolist(), strict=True))
    return pairs
