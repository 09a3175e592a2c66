"""Benchmark ``inference.portfolio.optimal_portfolios`` at the sizes SmartPick plans for.

Cases (fixed seed, synthetic q and U): one specialty, n = 650 programs (about Internal Medicine's
count), lists up to h = 120; and the whole catalog, n = 4,777 programs, h = 150. q ~ Beta(0.5, 3)
(mostly long shots, a few likely programs), U ~ lognormal(0, 0.5).

For each case it prints best and median of several runs of ``optimal_portfolios`` (the O(n h)
Kapur & Hong greedy with reduced utilities) and of a baseline measured in the same run: the
textbook greedy that, at every step, re-evaluates the objective from scratch for every remaining
candidate (sort S + {j} into preference order, recompute E[max]) -- batched over candidates with
numpy so the baseline is not slowed by Python loops, O(n h^2 log h) in all. Both must return the
same values. For n = 650 it also times one run of the same greedy as a plain Python loop over
``portfolio_value`` calls, the way it is usually first written.

Run: ``.venv/bin/python benchmarks/bench_portfolio.py``
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from smartpick_ml.inference.portfolio import optimal_portfolios, portfolio_value

SEED = 20260320
CASES = [(650, 120), (4_777, 150)]
FAST_RUNS = 15
BASELINE_RUNS = 3


def make_instance(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + n)
    return rng.beta(0.5, 3.0, size=n), rng.lognormal(sigma=0.5, size=n)


def reevaluating_greedy(q: np.ndarray, u: np.ndarray, h: int) -> np.ndarray:
    """Baseline: greedy whose every candidate's objective is recomputed from scratch (batched).

    Returns the E[U] path. Ties go to the most preferred candidate, as in the fast version.
    """
    n = q.size
    pref = np.lexsort((np.arange(n), -u))  # rank -> index
    qs, us = q[pref], u[pref]
    chosen = np.empty(0, dtype=np.int64)  # ranks
    free = np.ones(n, dtype=bool)
    values = np.empty(h)
    for step in range(h):
        cand = np.flatnonzero(free)  # ranks, ascending = preference order
        sets = np.hstack([np.broadcast_to(chosen, (cand.size, chosen.size)), cand[:, None]])
        sets.sort(axis=1)  # each candidate portfolio in the applicant's rank order
        qq, uu = qs[sets], us[sets]
        before = np.cumprod(1.0 - qq, axis=1)
        before = np.hstack([np.ones((cand.size, 1)), before[:, :-1]])
        v = (uu * qq * before).sum(axis=1)
        best = int(np.argmax(v))
        values[step] = v[best]
        chosen = np.append(chosen, cand[best])
        free[cand[best]] = False
    return values


def loop_greedy(q: np.ndarray, u: np.ndarray, h: int) -> np.ndarray:
    """Baseline as usually first written: a Python loop of ``portfolio_value`` calls."""
    chosen: list[int] = []
    values = np.empty(h)
    remaining = list(range(q.size))
    for step in range(h):
        vals = [portfolio_value(q, u, [*chosen, j]) for j in remaining]
        best = int(np.argmax(vals))
        values[step] = vals[best]
        chosen.append(remaining.pop(best))
    return values


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> int:
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"{'case':>16} | {'optimal_portfolios ms':>22} | {'re-evaluating ms':>18} | ratio")
    print(f"{'':>16} | {'best / median':>22} | {'best / median':>18} | (best)")
    ok = True
    extra = []
    for n, h in CASES:
        q, u = make_instance(n)
        fast_t, path = timed(lambda q=q, u=u, h=h: optimal_portfolios(q, u, h), FAST_RUNS)
        base_t, base_vals = timed(lambda q=q, u=u, h=h: reevaluating_greedy(q, u, h), BASELINE_RUNS)
        same = np.allclose(path.expected_utility, base_vals, rtol=1e-10)
        ok &= same
        fb, fm = min(fast_t) * 1e3, statistics.median(fast_t) * 1e3
        bb, bm = min(base_t) * 1e3, statistics.median(base_t) * 1e3
        label = f"n={n:,} h={h}"
        print(
            f"{label:>16} | {fb:>10.2f} / {fm:>9.2f} | {bb:>8.1f} / {bm:>7.1f} | "
            f"{bb / fb:,.0f}x{'' if same else '  VALUES DIFFER'}"
        )
        if n <= 1000:
            loop_t, loop_vals = timed(lambda q=q, u=u, h=h: loop_greedy(q, u, h), 1)
            ok &= np.allclose(path.expected_utility, loop_vals, rtol=1e-10)
            extra.append(
                f"{label}: Python-loop re-evaluating greedy, 1 run: "
                f"{loop_t[0] * 1e3:,.0f} ms ({loop_t[0] * 1e3 / fb:,.0f}x)"
            )
    for line in extra:
        print(line)
    print("values agree" if ok else "VALUES DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
