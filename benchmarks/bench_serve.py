"""Benchmark: the served model under a bounded load on loopback.

Starts `mlflow models serve -m models:/smartpick-match@champion --env-manager local` on 127.0.0.1
(needs `make run` first: mlflow.db + registry), then 8 client threads send 2,000 single-pair
`dataframe_split` requests in all. Prints requests/s and p50/p99 latency (goal: >= 200 req/s,
p99 <= 50 ms), and, as the baseline measured in the same run, the same requests sent one at a time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from smartpick_ml.features import PAIR_INPUT_COLUMNS, synthetic_pairs

CLIENTS, REQUESTS = 8, 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(seed: int) -> bytes:
    frame = synthetic_pairs(1, seed=seed)[list(PAIR_INPUT_COLUMNS)]
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split",
                                                                   index=False))}).encode()


def post(conn: http.client.HTTPConnection, data: bytes) -> float:
    t0 = time.perf_counter()
    conn.request("POST", "/invocations", data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}")
    return time.perf_counter() - t0


def main() -> None:
    port = free_port()
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    env["OMP_NUM_THREADS"] = "1"  # small batches: one thread per worker beats two fighting
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
           "models:/smartpick-match@champion", "--env-manager", "local", "-h", "127.0.0.1",
           "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.5)
        bodies = [body(i % 50) for i in range(50)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for b in bodies[:20]:
            post(conn, b)  # warm-up
        seq = [post(conn, bodies[i % 50]) for i in range(300)]
        latencies: list[float] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine = [post(c, bodies[i % 50]) for i in range(n)]
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(REQUESTS // CLIENTS,))
                   for _ in range(CLIENTS)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        lat = np.array(latencies) * 1000
        print(f"sequential (baseline): {len(seq) / sum(seq):.0f} req/s, p50 "
              f"{np.median(seq) * 1000:.1f} ms")
        print(f"{CLIENTS} clients, {len(lat)} requests: {len(lat) / wall:.0f} req/s "
              f"[goal >= 200], p50 {np.median(lat):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms "
              f"[goal <= 50 ms]")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
