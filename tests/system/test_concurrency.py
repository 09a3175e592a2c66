"""One MatchPredictor shared by 8 threads answers exactly as it does used sequentially (issue #6).

The concurrent predictor is *freshly loaded*, so its lazy parts (the compiled fast-path scorer, the
utility inputs) are first built while 8 threads race for them -- the moment a shared-state bug
would show. Answers are compared exactly (``assert_frame_equal`` with no tolerance).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from smartpick_ml.contracts.pairs import PAIR_INPUT_COLUMNS, applicant_pairs
from smartpick_ml.inference.predictor import MatchPredictor

THREADS = 8
SPECIALTIES = ("Thoracic Surgery", "Internal Medicine-Pediatrics", "Vascular Surgery")


def _applicants(n: int) -> list[dict]:
    """``n`` different valid applicants, fixed by a seed."""
    rng = np.random.default_rng(20260)
    types = ["us_md_senior", "us_do_senior", "us_img", "non_us_img"]
    out = []
    for i in range(n):
        typ = types[i % 4]
        img = typ.endswith("img")
        out.append({"applicant_type": typ, "step2_ck": int(rng.integers(215, 270)),
                    "graduation_year": int(2026 - (rng.integers(0, 6) if img else 0)),
                    "season": 2026, "usce_months": int(rng.integers(0, 13)) if img else 0,
                    "publications": int(rng.integers(0, 8)),
                    "needs_visa": bool(typ == "non_us_img" and rng.random() < 0.7),
                    "home_state": ["NY", "CA", "TX", None][i % 4]})
    return out


def _tasks(predictor: MatchPredictor, applicants: list[dict]) -> list[tuple[str, int, object]]:
    """(call, applicant index, argument) for rank, match_probability and predict."""
    tasks = []
    for i in range(len(applicants)):
        spec = SPECIALTIES[i % len(SPECIALTIES)]
        ids = predictor.programs.loc[predictor.programs["specialty"] == spec, "program_id"]
        tasks.append(("rank", i, spec))
        tasks.append(("match_probability", i, list(ids.iloc[i % 7: i % 7 + 6])))
        tasks.append(("predict", i, spec))
    return tasks


def _run(predictor: MatchPredictor, applicants: list[dict], task: tuple[str, int, object]):
    call, i, arg = task
    a = applicants[i]
    prefs = {"states": [["NY"], ["CA", "WA"], []][i % 3], "img_support_weight": 0.2 * (i % 5)}
    if call == "rank":
        return predictor.rank(a, prefs, specialty=arg, explain=i % 2 == 0)
    if call == "match_probability":
        res = predictor.match_probability(a, arg, prefs)
        return res["ranks"], {k: v for k, v in res.items() if k != "ranks"}
    programs = predictor.programs[predictor.programs["specialty"] == arg]
    return predictor.predict(applicant_pairs(a, programs)[list(PAIR_INPUT_COLUMNS)])


def _same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.fixture(scope="module")
def world(small_training_run):
    return small_training_run


def test_eight_threads_answer_like_one(world) -> None:
    programs = world.raw_dir / "programs.parquet"
    applicants = _applicants(24)
    with threadpool_limits(limits=1, user_api="openmp"):
        sequential = MatchPredictor.load(world.model_dir, programs=programs)
        tasks = _tasks(sequential, applicants)
        expected = [_run(sequential, applicants, t) for t in tasks]

        shared = MatchPredictor.load(world.model_dir, programs=programs)  # lazy parts unbuilt
        start = threading.Barrier(THREADS)

        def worker(k: int) -> list[tuple[int, object]]:
            start.wait()  # all threads hit the fresh predictor at once
            with threadpool_limits(limits=1, user_api="openmp"):
                return [(j, _run(shared, applicants, tasks[j]))
                        for j in range(k, len(tasks), THREADS)]

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            results = [r for part in pool.map(worker, range(THREADS)) for r in part]
    assert sorted(j for j, _ in results) == list(range(len(tasks)))
    for j, got in results:
        _same(expected[j], got)
