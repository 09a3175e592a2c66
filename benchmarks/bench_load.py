"""Load test (issue #6): the served model takes a bounded mixed load without a wrong answer.

Serves ``models:/smartpick-match@champion`` like ``bench_serve.py`` (needs ``mlflow.db`` from
``make run``, or ``--tracking-uri``), then ``--clients`` keep-alive connections (8) send
``--requests`` (5,000): about 70 % valid pair-scoring requests of 1-5 catalog programs each, half
of them in the lean form (applicant columns + ``program_id`` + signal), all checked against
``predict_proba`` of the full pairs computed in this process, and 30 % malformed bodies (bad JSON,
wrong shape, unknown specialty, program or applicant type, Step 2 CK out of range, NaN, missing
column, wrong type, empty frame, bad params), each of which must get a 4xx whose message names the
field. Prints p50 / p99, the server group's RSS after warm-up and at the end, and the counts of
wrong answers and 5xx.
Exits non-zero if any answer was wrong, any 5xx came back, or RSS grew by more than 10 %.

    .venv/bin/python benchmarks/bench_load.py [--tracking-uri sqlite:///mlflow.db] [--workers 1]
        [--relog models] [--rev HEAD]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from bench_serve import (
    MODEL_URI,
    Check,
    as_received,
    expect_q,
    lean_body,
    load_served,
    relog,
    run_load,
    serve,
    snapshot,
)

from smartpick_ml.contracts.pairs import APPLICANT_INPUTS
from smartpick_ml.data.synthetic import synthetic_catalog_pairs
from smartpick_ml.modelling.logged_model import request_body


def _with_value(body: bytes, column: str, value: object) -> bytes:
    """``body`` with ``column`` of its first row set to ``value`` (e.g. ``inf``, which pandas'
    ``to_json`` would write as null: ``json.dumps`` writes ``Infinity``)."""
    d = json.loads(body)
    split = d["dataframe_split"]
    split["data"][0][split["columns"].index(column)] = value
    return json.dumps(d).encode()


def bad_request(kind: int, pairs: pd.DataFrame) -> tuple[bytes, str]:
    """One of a dozen malformed requests and the word its error message must contain."""
    cases = [
        (lambda: b"{not json", "json"),
        (lambda: json.dumps({"rows": [1, 2]}).encode(), "dataframe_split"),
        (lambda: request_body(pairs.assign(specialty="Astrology")), "specialty"),
        (lambda: request_body(pairs.assign(applicant_type="martian")), "applicant_type"),
        (lambda: request_body(pairs.assign(step2_ck=400)), "step2_ck"),
        (lambda: request_body(pairs.assign(step2_ck=np.nan)), "step2_ck"),
        (lambda: request_body(pairs.drop(columns=["state"])), "state"),
        (lambda: lean_body(request_body(pairs.assign(program_id="ZZ-0000"))), "program_id"),
        (lambda: lean_body(request_body(pairs.drop(columns=["season"]))), "season"),
        (lambda: request_body(pairs.assign(needs_visa="yes")), "needs_visa"),
        (lambda: request_body(pairs.head(0)), "empty"),
        (lambda: request_body(pairs, task="explain"), "params.task"),
        (lambda: _with_value(request_body(pairs), "rate_us_md", math.inf), "rate_us_md"),
        (lambda: request_body(pd.concat([pairs, pairs])[list(APPLICANT_INPUTS)], task="rank"),
         "one applicant"),
    ]
    make, needle = cases[kind % len(cases)]
    return make(), needle


def expect_4xx(needle: str) -> Check:
    def check(status: int, text: bytes) -> bool:
        if not 400 <= status < 500:
            return False
        return needle.lower() in json.loads(text).get("message", "").lower()
    return check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                             "sqlite:///mlflow.db"))
    ap.add_argument("--model-uri", default=MODEL_URI)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--invalid-share", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--relog", metavar="MODEL_DIR", type=Path,
                    help="serve MODEL_DIR logged into a temporary store (see bench_serve.py)")
    ap.add_argument("--catalog", type=Path, default=Path("data/raw/programs.parquet"))
    ap.add_argument("--rev", help="serve the package as committed at this git revision")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        if args.relog:
            args.tracking_uri = relog(args.relog, args.catalog, Path(tmp))
        run(args, snapshot(args.rev, Path(tmp)) if args.rev else None)


def run(args: argparse.Namespace, code: Path | None) -> None:
    model, programs = load_served(args.model_uri, args.tracking_uri)
    rng = np.random.default_rng(args.seed)
    bodies: list[bytes] = []
    frames_full: dict[int, pd.DataFrame] = {}  # lean requests: their full pairs
    needles: list[str | None] = []  # None: a valid request
    for i in range(args.requests):
        pairs = synthetic_catalog_pairs(programs, int(rng.integers(1, 6)),
                                        seed=args.seed * 100_000 + i)
        if rng.random() < args.invalid_share:
            body, needle = bad_request(int(rng.integers(1 << 30)), pairs)
        else:
            body, needle = request_body(pairs), None
            if i % 2:  # the lean form: same pairs, the program's fields from the catalog
                body = lean_body(body)
                frames_full[i] = pairs
        bodies.append(body)
        needles.append(needle)
    # expected answers: one predict_proba over every valid request's rows
    valid = [i for i, nd in enumerate(needles) if nd is None]
    frames = [as_received(request_body(frames_full[i])) if i in frames_full
              else as_received(bodies[i]) for i in valid]
    q = model.predict_proba(pd.concat(frames, ignore_index=True))
    ends = np.cumsum([len(f) for f in frames])
    expected = dict(zip(valid, np.split(q, ends[:-1]), strict=True))
    work: list[tuple[bytes, Check]] = [
        (b, expect_q(expected[i]) if nd is None else expect_4xx(nd))
        for i, (b, nd) in enumerate(zip(bodies, needles, strict=True))]
    invalid = len(bodies) - len(valid)
    with serve(args.model_uri, args.tracking_uri, args.workers, code=code) as (port, pgid):
        run_load(port, pgid, work[:200], args.clients)  # warm-up: caches, allocator pools
        res = run_load(port, pgid, work, args.clients)
    growth = (res["rss1"] - res["rss0"]) / max(res["rss0"], 1)
    print(f"{args.clients} clients, {res['n']} requests ({invalid} malformed, "
          f"{res['n'] - invalid} valid), {args.workers} worker(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  {res['rps']:.0f} req/s, p50 {res['p50']:.1f} ms, p99 {res['p99']:.1f} ms, "
          f"server CPU {res['cpu_ms']:.1f} ms/request")
    print(f"  wrong answers: {len(res['wrong'])}, 5xx: {res['5xx']}, server RSS "
          f"{res['rss0'] / 1024:.0f} MB -> {res['rss1'] / 1024:.0f} MB ({growth:+.1%})")
    for w in res["wrong"][:5]:
        print(f"  wrong: {w}")
    if res["wrong"] or res["5xx"] or growth > 0.10:
        sys.exit(1)


if __name__ == "__main__":
    main()
