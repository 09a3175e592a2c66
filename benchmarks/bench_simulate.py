"""Benchmark: one full-scale simulated season (scale 1.0) — wall time, peak memory, and the match
alone. Goals (issue #3): season <= 60 s, peak <= 4 GB, deferred acceptance <= 5 s on 2 cores.

Run: .venv/bin/python benchmarks/bench_simulate.py [--scale 1.0] [--season 2025]
The baseline printed beside each figure is measured in the same run: a scale-0.1 season, so the
ratio shows how the cost grows with the market (10x the market should cost about 10x, not 100x).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from smartpick_ml.contracts.config import load_simulate_config
from smartpick_ml.data.catalog import load_catalog
from smartpick_ml.simulation.matching import deferred_acceptance
from smartpick_ml.simulation.season import build_market_inputs, run_market, simulate_season

ROOT = Path(__file__).resolve().parents[1]


def timed_season(programs, season: int, scale: float, params, seed: int):
    t0 = time.perf_counter()
    s = simulate_season(programs, season, scale, params, seed)
    return s, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--season", type=int, default=2025)
    args = ap.parse_args()
    cfg = load_simulate_config(ROOT / "pipelines" / "simulate.toml")
    programs = load_catalog(cfg.catalog, cfg.seed)
    _, base_t = timed_season(programs, args.season, 0.1, cfg.params, cfg.seed)
    season, full_t = timed_season(programs, args.season, args.scale, cfg.params, cfg.seed)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    positions = season.program_outcomes["positions"].to_numpy()
    inputs = build_market_inputs(season.applicants, programs, season.applications, positions,
                                 cfg.params)
    out = run_market(inputs, np.random.default_rng(0))
    idx = np.flatnonzero(out.interviewed)
    da_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        deferred_acceptance(inputs.pair_applicant[idx], inputs.pair_program[idx],
                            out.rank_position[idx], out.program_score[idx], inputs.quotas,
                            inputs.n_applicants)
        da_times.append(time.perf_counter() - t0)
    print(f"market: {len(season.applicants):,} applicants, {int(positions.sum()):,} positions, "
          f"{len(season.applications):,} applications, {len(idx):,} interviews")
    print(f"season (scale {args.scale}): {full_t:.1f} s   [goal <= 60 s; baseline scale 0.1: "
          f"{base_t:.1f} s; ratio {full_t / base_t:.1f}x for {args.scale / 0.1:.0f}x the market]")
    print(f"peak memory (max RSS): {peak_gb:.2f} GB   [goal <= 4 GB]")
    print(f"deferred acceptance alone: median {np.median(da_times):.2f} s, best "
          f"{min(da_times):.2f} s   [goal <= 5 s]")


if __name__ == "__main__":
    main()
