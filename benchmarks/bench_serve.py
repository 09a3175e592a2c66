"""Benchmark: the served model (``mlflow models serve``) under concurrent clients on loopback.

Serves ``models:/smartpick-match@champion`` (``--env-manager local``, 127.0.0.1; needs a tracking
store with the registered model: ``make run`` writes ``mlflow.db``, or pass ``--tracking-uri``)
with 1 and 2 uvicorn workers, and, as the baseline measured in the same run, the same model saved
the old way (sklearn flavour, skops, ``pyfunc_predict_fn="predict_proba"``, inferred signature).
Each configuration gets single-pair ``dataframe_split`` requests for catalog programs: a
sequential pass (single-client latency), then ``--clients`` threads sending ``--requests`` in all.
Every answer is checked against ``predict_proba`` in this process (wrong answers are counted).

Prints, per configuration: requests/s, p50 / p99 latency, the server's CPU time per request (its
whole process group, from /proc: a figure that does not depend on how busy the machine is), and
the req/s ratio against the baseline. Goal: >= 200 req/s with p99 <= 50 ms, 8 clients.

    .venv/bin/python benchmarks/bench_serve.py [--tracking-uri sqlite:///mlflow.db]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.features import (
    PAIR_INPUT_COLUMNS,
    synthetic_catalog_pairs,
    synthetic_pairs,
)
from smartpick_ml.serving import CATALOG_FILE, request_body

MODEL_URI = "models:/smartpick-match@champion"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_stats(pgid: int) -> tuple[float, int]:
    """(CPU seconds, resident kB) of every live process in the process group ``pgid``."""
    cpu, rss = 0.0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / TICKS
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


@contextmanager
def serve(model_uri: str, tracking_uri: str, workers: int = 1, timeout: float = 180
          ) -> Iterator[tuple[int, int]]:
    """Run ``mlflow models serve``; yields (port, process group id); stops the whole group."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["OMP_NUM_THREADS"] = "1"  # small batches: one thread per worker beats two fighting
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers",
           str(workers)]
    log = tempfile.NamedTemporaryFile(prefix="smartpick-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        up = 0
        while up < workers:  # every worker answers once before the clock starts
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                up += c.getresponse().status == 200
            except OSError:
                time.sleep(0.5)
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"server did not start; log: {log.name}")
        yield port, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        Path(log.name).unlink(missing_ok=True)


def as_received(body: bytes) -> pd.DataFrame:
    split = json.loads(body)["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])


def post(conn: http.client.HTTPConnection, data: bytes) -> tuple[int, bytes, float]:
    t0 = time.perf_counter()
    conn.request("POST", "/invocations", data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    return resp.status, text, time.perf_counter() - t0


Check = Callable[[int, bytes], bool]


def run_load(port: int, pgid: int, work: list[tuple[bytes, Check]], clients: int
             ) -> dict[str, Any]:
    """Send ``work`` from ``clients`` threads (one keep-alive connection each, reopened after
    an error); latencies, wrong answers, 5xx, CPU and RSS of the server group."""
    latencies: list[float] = []
    wrong: list[str] = []
    status_5xx = 0
    lock = threading.Lock()

    def client(k: int) -> None:
        nonlocal status_5xx
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad, n5 = [], [], 0
        for body, check in work[k::clients]:
            try:
                status, text, dt = post(conn, body)
            except (OSError, http.client.HTTPException) as exc:
                bad.append(f"connection: {exc!r}")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(dt)
            n5 += status >= 500
            if not check(status, text):
                bad.append(f"{status}: {text[-200:]!r}")
            if status != 200:  # uvicorn may close after an error answer: start afresh
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        with lock:
            latencies.extend(mine)
            wrong.extend(bad)
            status_5xx += n5

    cpu0, rss0 = group_stats(pgid)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1, rss1 = group_stats(pgid)
    lat = np.asarray(latencies) * 1000
    return {"n": len(work), "rps": len(lat) / wall, "p50": float(np.median(lat)),
            "p99": float(np.percentile(lat, 99)), "cpu_ms": (cpu1 - cpu0) * 1000 / len(work),
            "wrong": wrong, "5xx": status_5xx, "rss0": rss0, "rss1": rss1}


def expect_q(expected: np.ndarray) -> Check:
    def check(status: int, text: bytes) -> bool:
        if status != 200:
            return False
        got = np.asarray(json.loads(text)["predictions"], dtype=float)
        return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=0,
                                                                atol=1e-12))
    return check


def load_served(model_uri: str, tracking_uri: str) -> tuple[Any, pd.DataFrame]:
    """The champion's MatchModel and the catalog logged with it."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    return mlflow.sklearn.load_model(str(local)), pd.read_parquet(local / CATALOG_FILE)


def save_sklearn_baseline(model: Any, path: Path) -> str:
    """The model as it used to be logged: sklearn flavour, pyfunc = predict_proba."""
    import mlflow
    from mlflow.models import infer_signature

    from smartpick_ml.persist import TRUSTED_TYPES

    example = synthetic_pairs(5)[list(PAIR_INPUT_COLUMNS)]
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="skops", skops_trusted_types=list(TRUSTED_TYPES),
        pyfunc_predict_fn="predict_proba", pip_requirements=[],
        signature=infer_signature(example, model.predict_proba(example)), input_example=example)
    return str(path)


def measure(label: str, model_uri: str, tracking_uri: str, workers: int, bodies: list[bytes],
            checks: list[Check], clients: int, requests: int) -> dict[str, Any]:
    with serve(model_uri, tracking_uri, workers) as (port, pgid):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for b in bodies[:30]:
            post(conn, b)  # warm-up
        seq = [post(conn, bodies[i % len(bodies)])[2] for i in range(150)]
        work = [(bodies[i % len(bodies)], checks[i % len(bodies)]) for i in range(requests)]
        res = run_load(port, pgid, work, clients)
    res.update(label=label, workers=workers, seq_p50=float(np.median(seq)) * 1000)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                             "sqlite:///mlflow.db"))
    ap.add_argument("--model-uri", default=MODEL_URI)
    ap.add_argument("--workers", default="1,2", help="comma-separated uvicorn worker counts")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--baseline-requests", type=int, default=400,
                    help="requests for the old sklearn-flavour server (0: skip it)")
    args = ap.parse_args()

    model, programs = load_served(args.model_uri, args.tracking_uri)
    bodies = [request_body(synthetic_catalog_pairs(programs, 1, seed=i)) for i in range(100)]
    checks = [expect_q(model.predict_proba(as_received(b))) for b in bodies]
    results = []
    for w in (int(x) for x in args.workers.split(",")):
        results.append(measure("pyfunc (fast path)", args.model_uri, args.tracking_uri, w,
                               bodies, checks, args.clients, args.requests))
    base = None
    if args.baseline_requests:
        with tempfile.TemporaryDirectory() as tmp:
            uri = save_sklearn_baseline(model, Path(tmp) / "sklearn_baseline")
            base = measure("old sklearn flavour", uri, args.tracking_uri, 1, bodies,
                           [lambda s, _t: s == 200] * len(bodies), args.clients,
                           args.baseline_requests)
        results.append(base)
    print(f"{args.clients} clients, single-pair requests (catalog programs), loopback; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'server':<22}{'workers':>8}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'CPU ms/req':>11}{'1-client p50':>13}{'wrong':>6}{'5xx':>5}{'vs old':>8}")
    for r in results:
        ratio = f"{r['rps'] / base['rps']:.1f}x" if base and r is not base else ""
        print(f"{r['label']:<22}{r['workers']:>8}{r['n']:>9}{r['rps']:>8.0f}{r['p50']:>8.1f}"
              f"{r['p99']:>8.1f}{r['cpu_ms']:>11.1f}{r['seq_p50']:>13.1f}{len(r['wrong']):>6}"
              f"{r['5xx']:>5}{ratio:>8}")
    best = max((r for r in results if r is not base), key=lambda r: r["rps"])
    print(f"goal >= 200 req/s with p99 <= 50 ms: best {best['rps']:.0f} req/s, p99 "
          f"{best['p99']:.1f} ms ({best['workers']} worker(s)) -> "
          f"{'met' if best['rps'] >= 200 and best['p99'] <= 50 else 'NOT met'}")
    for r in results:
        if r["wrong"]:
            print(f"{r['label']}, {r['workers']} worker(s): first wrong answers {r['wrong'][:3]}")


if __name__ == "__main__":
    main()
