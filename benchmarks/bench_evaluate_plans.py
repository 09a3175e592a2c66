"""Benchmark the plan evaluation (``smartpick evaluate-plans``): its cost against the number of
applicants evaluated and the number of replicates, each run timed in the same process, with the
ratio to the smallest run. Needs a simulated season and a trained model (``make run``).

    .venv/bin/python benchmarks/bench_evaluate_plans.py [--model models] [--n-jobs 2]
        [--applicants 250,1000] [--replicates 2,4]

The sample is split over the four types in the default config's proportions (2 : 1 : 1 : 1);
adoption seasons are left out (each is one more re-run season per replicate). Prints, per run:
applicants, plans, replicates, re-run seasons, seconds planning, seconds re-running, seconds in
all, and the ratio to the first run.
"""

from __future__ import annotations

import argparse
import time
import warnings

from smartpick_ml.contracts.config import EvaluatePlansConfig, load_train_config
from smartpick_ml.evaluation.plans import evaluate_plans
from smartpick_ml.inference.predictor import MatchPredictor

SHARES = {"non_us_img": 0.4, "us_img": 0.2, "us_do_senior": 0.2, "us_md_senior": 0.2}


def _config(applicants: int, replicates: int, n_jobs: int) -> EvaluatePlansConfig:
    return EvaluatePlansConfig.model_validate({
        "sample": {"per_type": {t: max(1, round(share * applicants))
                                for t, share in SHARES.items()}},
        "replicates": {"min": replicates, "max": replicates},
        "adoption": {"non_us_img_shares": [], "every_type_share": None},
        "run": {"n_jobs": n_jobs, "seed": 11}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models")
    ap.add_argument("--train-config", default="pipelines/train.toml")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--applicants", default="250,1000")
    ap.add_argument("--replicates", default="2,4")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    predictor = MatchPredictor.load(args.model)
    train_cfg = load_train_config(args.train_config)
    rows = []
    for n in (int(x) for x in args.applicants.split(",")):
        for r in (int(x) for x in args.replicates.split(",")):
            marks: dict[str, float] = {}

            def note(msg: str, marks: dict[str, float] = marks) -> None:
                if msg.startswith("re-running") and "rerun" not in marks:
                    marks["rerun"] = time.perf_counter()

            t0 = time.perf_counter()
            ev = evaluate_plans(_config(n, r, args.n_jobs), train_cfg, predictor, progress=note)
            total = time.perf_counter() - t0
            planning = marks.get("rerun", t0) - t0
            seasons = r * (1 + ev.settings["groups"])
            rows.append((n, ev.settings["planned"], r, seasons, planning, total - planning,
                         total))
            print(f"{n:6d} applicants, {r} replicates: {total:6.1f} s", flush=True)
    base = rows[0][-1]
    print(f"\n{'applicants':>10} {'plans':>6} {'replicates':>10} {'seasons':>8} "
          f"{'planning s':>10} {'re-runs s':>9} {'total s':>8} {'x first':>8}")
    for n, plans, r, seasons, planning, rerun, total in rows:
        print(f"{n:>10} {plans:>6} {r:>10} {seasons:>8} {planning:>10.1f} {rerun:>9.1f} "
              f"{total:>8.1f} {total / base:>8.2f}")


if __name__ == "__main__":
    main()
