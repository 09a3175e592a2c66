"""Benchmark whole-season scoring (``smartpick score``): pairs per second of
``inference.batch.score_applicants`` against plain ``predict_proba`` on the same pairs, measured
in the same run. Needs a trained model in ``models/`` (``make run``) and its season's applicants
(``data/raw/applicants.parquet``).

    .venv/bin/python benchmarks/bench_score.py [--applicants 2000] [--baseline-applicants 20]

Prints the throughput of each, their ratio, and the seconds a season of 215M pairs would take.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from smartpick_ml.contracts.pairs import APPLICANT_INPUTS, applicant_pairs
from smartpick_ml.inference.batch import score_applicants
from smartpick_ml.inference.predictor import MatchPredictor

SEASON_PAIRS = 215e6  # every applicant x program of a full season (~45k x 4,777)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models")
    ap.add_argument("--applicants", type=int, default=2000)
    ap.add_argument("--baseline-applicants", type=int, default=20)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    predictor = MatchPredictor.load(args.model)
    table = pd.read_parquet("data/raw/applicants.parquet")
    table = table[table["season"] == table["season"].max()].head(args.applicants)
    assert predictor.fast_scorer is not None  # built before timing, as a service would
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = score_applicants(predictor, table, Path(tmp) / "scores.parquet")
        fast_s = time.perf_counter() - t0
    base = table.head(args.baseline_applicants)
    t0 = time.perf_counter()
    with threadpool_limits(limits=os.cpu_count()):
        for record in base[list(APPLICANT_INPUTS)].to_dict("records"):
            predictor.model.predict_proba(applicant_pairs(record, predictor.programs))
    base_s = time.perf_counter() - t0
    fast_rate = summary.pairs / fast_s
    base_rate = len(base) * len(predictor.programs) / base_s
    print(f"{summary.pairs:,} pairs ({summary.applicants:,} applicants x {summary.programs:,} "
          f"programs) in {fast_s:.1f} s: {fast_rate / 1e6:.2f}M pairs/s (incl. writing Parquet)"
          f"   [goal >= 5M pairs/s]")
    print(f"baseline predict_proba: {base_rate / 1e6:.3f}M pairs/s; ratio "
          f"{fast_rate / base_rate:.1f}x; a season of {SEASON_PAIRS / 1e6:.0f}M pairs: "
          f"{SEASON_PAIRS / fast_rate:.0f} s (goal <= 45 s); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
