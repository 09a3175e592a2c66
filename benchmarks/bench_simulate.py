"""Benchmark: one full-scale simulated season (scale 1.0, with backups, PGY-1 lists and the
two-pass Match) — wall time, peak memory, and the match alone. Goals (issues #3, #16): season
<= 60 s, peak <= 4 GB, the match <= 5 s on 2 cores.

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
from smartpick_ml.simulation.season import (
    build_market_inputs,
    match_with_supplemental_lists,
    run_market,
    simulate_season,
)

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
        match_with_supplemental_lists(inputs, out.interviewed, out.rank_position,
                                      out.program_score)
        da_times.append(time.perf_counter() - t0)
    print(f"market: {len(season.applicants):,} applicants, {int(positions.sum()):,} positions, "
          f"{len(season.applications):,} applications, {len(idx):,} interviews")
    print(f"season (scale {args.scale}): {full_t:.1f} s   [goal <= 60 s; baseline scale 0.1: "
          f"{base_t:.1f} s; ratio {full_t / base_t:.1f}x for {args.scale / 0.1:.0f}x the market]")
    print(f"peak memory (max RSS): {peak_gb:.2f} GB   [goal <= 4 GB]")
    backups = season.applicants["backup_specialty"].notna().mean()
    supplemental = (season.applications["rank_list"] == "supplemental").mean()
    print(f"lists: {backups:.0%} of applicants with a backup specialty, {supplemental:.1%} of "
          "applications on a supplemental PGY-1 list")
    print(f"the match (two passes of deferred acceptance): median {np.median(da_times):.2f} s, "
          f"best {min(da_times):.2f} s   [goal <= 5 s]")


if __name__ == "__main__":
    main()
