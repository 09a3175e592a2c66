"""Benchmark: the served model (``mlflow models serve``) under concurrent clients on loopback.

Serves ``models:/smartpick-match@champion`` (``--env-manager local``, 127.0.0.1; needs a tracking
store with the registered model: ``make run`` writes ``mlflow.db``, or pass ``--tracking-uri``, or
``--relog models`` to log ``models/`` through ``modelling.logged_model.log_model`` into a
temporary store) with 1 and 2 uvicorn workers. Each server gets single-pair ``dataframe_split``
requests for catalog programs in both forms, the same pairs: *full* (every pair column) and *lean*
(the applicant's columns, ``program_id`` and the signal; the served model takes the program from
its catalog). Per form: a sequential pass (single-client latency), then ``--clients`` threads
sending ``--requests`` in all (closed loop: the server's capacity, with the queue saturation
builds), then, with ``--rate R`` (default 200), the same requests offered at R per second (open
loop: latency counted from each request's due time, so a server that falls behind is charged for
it). Every answer is checked against ``predict_proba`` of the full pair in this process (wrong
answers are counted). Baselines measured in the same run: ``--before-rev REV`` serves the package
as committed at REV (full pairs, 1 worker), and the same model saved the old way (sklearn flavour,
skops, ``pyfunc_predict_fn="predict_proba"``, inferred signature). ``--rev REV`` serves REV's
package instead of the checkout (other engineers may be editing it).

Prints, per configuration and form: requests/s, p50 / p99 latency, the server's CPU time per
request (its whole process group, from /proc: the figure that depends least on how busy the
machine is), and the req/s ratios against the before-version and the old flavour; then the open
loop's achieved rate and p50 / p99. Goal: the server sustains >= 200 req/s with p99 <= 50 ms (the
open loop at 200 req/s), with capacity to spare (closed loop).

    .venv/bin/python benchmarks/bench_serve.py [--tracking-uri sqlite:///mlflow.db]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_serve.py --relog models --rev HEAD \
        --before-rev 47463bd
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartpick_ml.contracts.pairs import CATALOG_FIELDS, PAIR_INPUT_COLUMNS
from smartpick_ml.data.synthetic import synthetic_catalog_pairs, synthetic_pairs
from smartpick_ml.modelling.logged_model import CATALOG_FILE, request_body

MODEL_URI = "models:/smartpick-match@champion"
#: open-loop connections at the start (more open when all are busy)
OPEN_LOOP_CLIENTS = 16
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
def serve(model_uri: str, tracking_uri: str, workers: int = 1, timeout: float = 180,
          code: Path | None = None) -> Iterator[tuple[int, int]]:
    """Run ``mlflow models serve`` (importing the package from ``code`` if given); yields
    (port, process group id); stops the whole group."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cwd = None
    if code is not None:  # ahead of the editable install; cwd away from the checkout
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
        cwd = str(code)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["OMP_NUM_THREADS"] = "1"  # small batches: one thread per worker beats two fighting
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers",
           str(workers)]
    log = tempfile.NamedTemporaryFile(prefix="smartpick-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        up = 0
        # every worker has loaded the model (uvicorn logs one line each; a ping may be answered
        # by the first worker while the second still loads and takes a core) and answers
        while up < workers or Path(log.name).read_text(errors="replace").count(
                "Application startup complete") < workers:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                up += c.getresponse().status == 200
            except OSError:
                pass
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


Check = Callable[[int, bytes], bool]


def http_request(body: bytes, port: int) -> bytes:
    """The bytes of one keep-alive ``POST /invocations`` (built once, before the clock starts)."""
    return (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


class _Connection:
    """One keep-alive loopback connection of the load generator: sends a prepared request,
    collects the answer (``Content-Length`` framed), reconnects when the server closes."""

    def __init__(self, port: int, sel: selectors.BaseSelector):
        self.port, self.sel = port, sel
        self.sock: socket.socket | None = None
        self.job: int | None = None  # index of the request in flight
        self.queue: list[int] = []  # closed loop: its requests still to send, last first
        self.buf = bytearray()

    def send(self, job: int, data: bytes) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(self.sock, selectors.EVENT_READ, self)
        self.job = job
        self.buf.clear()
        self.sock.sendall(data)  # a few hundred bytes: fits the socket buffer at once

    def receive(self) -> tuple[int, bytes] | None:
        """Read what arrived; (status, body) once the answer is complete, else None."""
        assert self.sock is not None
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection mid-answer")
        self.buf += chunk
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.buf[:head_end]).decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        if len(self.buf) < head_end + 4 + length:
            return None
        status = int(head.split(" ", 2)[1])
        body = bytes(self.buf[head_end + 4:head_end + 4 + length])
        if "connection: close" in head:  # e.g. after an error answer
            self.close()
        self.job = None
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None


def run_load(port: int, pgid: int, work: list[tuple[bytes, Check]], clients: int,
             rate: float | None = None, max_connections: int = 64) -> dict[str, Any]:
    """Send ``work`` over ``clients`` keep-alive connections from one thread (non-blocking
    sockets, requests prepared before the clock starts, answers checked after it stops: the
    generator takes little of the two cores the server needs); latencies, wrong answers, 5xx,
    CPU and RSS of the server group and the generator's own CPU per request.

    ``rate`` None: closed loop, each connection sends its next request when the last is answered
    (the server's capacity; latency then includes the queue that saturation builds). ``rate`` r:
    open loop, request i is due at start + i / r and is sent then on an idle connection (a new
    one if all are busy, up to ``max_connections``); its latency runs from that due time, so a
    server that falls behind is charged for the wait (no coordinated omission)."""
    sel = selectors.DefaultSelector()
    prepared = [http_request(body, port) for body, _ in work]
    n = len(work)
    answers: list[tuple[int, bytes] | None] = [None] * n
    latency = np.full(n, np.nan)
    sent_at = np.zeros(n)
    conns = [_Connection(port, sel) for _ in range(clients)]
    idle = list(conns)
    failures: list[str] = []
    cpu0, rss0 = group_stats(pgid)
    own0 = time.process_time()
    start = time.perf_counter() + 0.02  # open loop: request 0 falls due
    due_next, done = 0, 0

    def dispatch(conn: _Connection, job: int, due: float) -> None:
        sent_at[job] = due
        conn.send(job, prepared[job])

    if rate is None:
        start = time.perf_counter()
        for k, conn in enumerate(conns):
            conn.queue = list(range(k, n, clients))[::-1]
            if conn.queue:
                dispatch(conn, conn.queue.pop(), time.perf_counter())
        idle = []
    while done < n:
        now = time.perf_counter()
        if rate is not None:
            while due_next < n and start + due_next / rate <= now:
                if not idle and len(conns) < max_connections:
                    conns.append(_Connection(port, sel))
                    idle.append(conns[-1])
                if not idle:
                    break  # every connection busy: sent as soon as one frees up, charged from due
                dispatch(idle.pop(), due_next, start + due_next / rate)
                due_next += 1
            # until the next request falls due, or (every connection busy) an answer comes
            wait = (start + due_next / rate - time.perf_counter()) if due_next < n and idle \
                else 0.5
        else:
            wait = 0.5
        for key, _ in sel.select(timeout=max(0.0, min(wait, 0.5))):
            conn: _Connection = key.data
            job = conn.job
            if job is None:  # an idle connection: the server closing it (keep-alive timeout)
                if conn.sock is not None and not conn.sock.recv(1 << 16):
                    conn.close()
                continue
            try:
                answer = conn.receive()
            except (OSError, ValueError, IndexError) as exc:
                failures.append(f"connection: {exc!r}")
                conn.close()
                answer = (0, b"")
            if answer is None:
                continue
            t = time.perf_counter()
            answers[job], latency[job] = answer, t - sent_at[job]
            done += 1
            if rate is None:
                if conn.queue:
                    dispatch(conn, conn.queue.pop(), t)
            else:
                idle.append(conn)
    wall = time.perf_counter() - start
    own = time.process_time() - own0
    cpu1, rss1 = group_stats(pgid)
    for conn in conns:
        conn.close()
    sel.close()
    wrong = list(failures)
    status_5xx = 0
    for (_, check), (status, body) in zip(work, answers, strict=True):  # type: ignore[misc]
        status_5xx += status >= 500
        if status and not check(status, body):
            wrong.append(f"{status}: {body[-200:]!r}")
    lat = latency * 1000
    return {"n": n, "rps": n / wall, "p50": float(np.median(lat)),
            "p99": float(np.percentile(lat, 99)), "cpu_ms": (cpu1 - cpu0) * 1000 / n,
            "client_cpu_ms": own * 1000 / n, "connections": len(conns),
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


def relog(model_dir: Path, catalog: Path, root: Path, name: str = "smartpick-match") -> str:
    """Log the model in ``model_dir`` (checked against its manifest) with the catalog through
    ``modelling.logged_model.log_model`` -- the function training uses -- into a new sqlite
    store under ``root``, registered as ``name`` with the ``champion`` alias; returns the tracking
    URI. Lets the served model be measured as the current code logs it without a new training
    run."""
    import mlflow
    from mlflow import MlflowClient

    from smartpick_ml.data.catalog import load_catalog
    from smartpick_ml.modelling.logged_model import log_model
    from smartpick_ml.modelling.persist import load_model

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    model, _ = load_model(model_dir)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("bench-serve", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = log_model(model, load_catalog(catalog), registered_model_name=name)
    MlflowClient(uri).set_registered_model_alias(name, "champion",
                                                 str(info.registered_model_version))
    return uri


def save_sklearn_baseline(model: Any, path: Path) -> str:
    """The model as it used to be logged: sklearn flavour, pyfunc = predict_proba."""
    import mlflow
    from mlflow.models import infer_signature

    from smartpick_ml.modelling.persist import TRUSTED_TYPES

    example = synthetic_pairs(5)[list(PAIR_INPUT_COLUMNS)]
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="skops", skops_trusted_types=list(TRUSTED_TYPES),
        pyfunc_predict_fn="predict_proba", pip_requirements=[],
        signature=infer_signature(example, model.predict_proba(example)), input_example=example)
    return str(path)


def snapshot(rev: str, root: Path) -> Path:
    """The package as committed at ``rev`` (``git archive``), for a server to import instead of
    the checkout: measures committed code while others edit the working tree, and the code
    before a change in the same run."""
    dest = root / f"code-{rev.replace('/', '_')}"
    dest.mkdir(parents=True)
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "smartpick_ml"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def measure(label: str, model_uri: str, tracking_uri: str, workers: int,
            forms: dict[str, tuple[list[bytes], list[Check]]], clients: int, requests: int,
            code: Path | None = None, rate: float | None = None) -> list[dict[str, Any]]:
    """One server; per request form: warm-up, a sequential pass, the concurrent load (closed
    loop), then, with ``rate``, the same requests offered at ``rate`` per second (open loop)."""
    out = []
    with serve(model_uri, tracking_uri, workers, code=code) as (port, pgid):
        for form, (bodies, checks) in forms.items():
            one = [(bodies[i % len(bodies)], checks[i % len(bodies)]) for i in range(180)]
            run_load(port, pgid, one[:30], 1)  # warm-up
            seq = run_load(port, pgid, one[30:], 1)  # one client, one request at a time
            work = [(bodies[i % len(bodies)], checks[i % len(bodies)]) for i in range(requests)]
            res = run_load(port, pgid, work, clients)
            res.update(label=label, form=form, workers=workers,
                       seq_p50=seq["p50"], wrong=res["wrong"] + seq["wrong"])
            if rate:
                paced = run_load(port, pgid, work, OPEN_LOOP_CLIENTS, rate)
                res.update(paced_rps=paced["rps"], paced_p50=paced["p50"],
                           paced_p99=paced["p99"], paced_cpu_ms=paced["cpu_ms"],
                           paced_client_cpu_ms=paced["client_cpu_ms"],
                           paced_connections=paced["connections"],
                           wrong=res["wrong"] + paced["wrong"],
                           **{"5xx": res["5xx"] + paced["5xx"]})
            out.append(res)
    return out


def in_process_cost(model_uri: str, tracking_uri: str, bodies: list[bytes],
                    repeats: int = 600) -> float:
    """ms of CPU for one request through MLflow's scoring function in this process, no HTTP
    (``scoring_server.invocations``: JSON parsing, schema enforcement if the model has an input
    schema, our model, the answer): how fast the machine is at the moment, to read the server's
    figures against (the same request cost 3.5 ms at one moment and 5.4 ms an hour later)."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    mlflow.set_tracking_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    schema = pyfunc.metadata.get_input_schema()
    for b in bodies[:50]:
        scoring_server.invocations(b, "application/json", pyfunc, schema)
    t = time.process_time()
    for i in range(repeats):
        scoring_server.invocations(bodies[i % len(bodies)], "application/json", pyfunc, schema)
    return (time.process_time() - t) * 1000 / repeats


def lean_body(body: bytes) -> bytes:
    """The lean form of a pair request: the applicant's columns, ``program_id`` and the signal
    (the served model takes the program's fields from its catalog)."""
    return request_body(as_received(body).drop(columns=list(CATALOG_FIELDS), errors="ignore"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                             "sqlite:///mlflow.db"))
    ap.add_argument("--model-uri", default=MODEL_URI)
    ap.add_argument("--relog", metavar="MODEL_DIR", type=Path,
                    help="log MODEL_DIR (e.g. models) with --catalog through "
                         "logged_model.log_model into a temporary tracking store and serve that")
    ap.add_argument("--catalog", type=Path, default=Path("data/raw/programs.parquet"))
    ap.add_argument("--rev", help="serve the package as committed at this git revision "
                                  "(default: the checkout as it is)")
    ap.add_argument("--before-rev", help="also serve this revision's package (full pairs, "
                                         "1 worker): the code before a change, same run")
    ap.add_argument("--workers", default="1,2", help="comma-separated uvicorn worker counts")
    ap.add_argument("--forms", default="full,lean", help="request forms: full and/or lean")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0,
                    help="offered load of the open-loop pass, requests/s (0: skip it)")
    ap.add_argument("--baseline-requests", type=int, default=400,
                    help="requests for the old sklearn-flavour server (0: skip it)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        tracking_uri = args.tracking_uri
        if args.relog:
            tracking_uri = relog(args.relog, args.catalog, root)
        model, programs = load_served(args.model_uri, tracking_uri)
        full = [request_body(synthetic_catalog_pairs(programs, 1, seed=i)) for i in range(100)]
        # every answer against predict_proba of the full pair (the lean form must equal it)
        expected = model.predict_proba(pd.concat([as_received(b) for b in full],
                                                 ignore_index=True))
        checks = [expect_q(expected[[i]]) for i in range(len(full))]
        forms = {"full": (full, checks), "lean": ([lean_body(b) for b in full], checks)}
        forms = {f: forms[f] for f in args.forms.split(",")}
        code = snapshot(args.rev, root) if args.rev else None
        probe_ms = in_process_cost(args.model_uri, tracking_uri, forms.get(
            "lean", ([lean_body(b) for b in full], None))[0])
        results = []
        for w in (int(x) for x in args.workers.split(",")):
            results += measure("pyfunc" + (f" @{args.rev}" if args.rev else ""),
                               args.model_uri, tracking_uri, w, forms, args.clients,
                               args.requests, code, args.rate)
        before = None
        if args.before_rev:
            before = measure(f"pyfunc @{args.before_rev}", args.model_uri, tracking_uri, 1,
                             {"full": forms.get("full", (full, checks))}, args.clients,
                             args.requests, snapshot(args.before_rev, root))[0]
            results.append(before)
        base = None
        if args.baseline_requests:
            uri = save_sklearn_baseline(model, root / "sklearn_baseline")
            base = measure("old sklearn flavour", uri, tracking_uri, 1,
                           {"full": (full, [lambda s, _t: s == 200] * len(full))},
                           args.clients, args.baseline_requests)[0]
            results.append(base)
    print(f"{args.clients} clients, single-pair requests (catalog programs), loopback; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; one lean request "
          f"in-process (no HTTP) {probe_ms:.2f} ms CPU before the servers started")
    print(f"{'server':<24}{'form':>5}{'workers':>8}{'requests':>9}{'req/s':>7}{'p50 ms':>8}"
          f"{'p99 ms':>8}{'CPU ms/req':>11}{'1-client p50':>13}{'wrong':>6}{'5xx':>5}"
          f"{'vs before':>10}{'vs old':>8}")
    for r in results:
        vs_before = (f"{r['rps'] / before['rps']:.1f}x" if before and r is not before and
                     r is not base else "")
        ratio = f"{r['rps'] / base['rps']:.1f}x" if base and r is not base else ""
        print(f"{r['label']:<24}{r['form']:>5}{r['workers']:>8}{r['n']:>9}{r['rps']:>7.0f}"
              f"{r['p50']:>8.1f}{r['p99']:>8.1f}{r['cpu_ms']:>11.1f}{r['seq_p50']:>13.1f}"
              f"{len(r['wrong']):>6}{r['5xx']:>5}{vs_before:>10}{ratio:>8}")
    ours = [r for r in results if r is not base and r is not before]
    best = max(ours, key=lambda r: r["rps"])
    print(f"capacity (closed loop, {args.clients} clients): best {best['rps']:.0f} req/s, p99 "
          f"{best['p99']:.1f} ms at saturation ({best['form']} pairs, {best['workers']} "
          "worker(s))")
    if args.rate:
        print(f"open loop: {args.requests} requests offered at "
              f"{args.rate:.0f} req/s ({OPEN_LOOP_CLIENTS}+ connections; latency from each "
              "request's due time)")
        for r in ours:
            ok = r["paced_rps"] >= 0.97 * args.rate and r["paced_p99"] <= 50
            print(f"  {r['form']:>5}, {r['workers']} worker(s): {r['paced_rps']:.0f} req/s, "
                  f"p50 {r['paced_p50']:.1f} ms, p99 {r['paced_p99']:.1f} ms, server CPU "
                  f"{r['paced_cpu_ms']:.1f} ms/req, generator CPU {r['paced_client_cpu_ms']:.2f} "
                  f"ms/req, {r['paced_connections']} connections -> "
                  f"{'met' if ok else 'NOT met'}   [goal: >= 200 req/s with p99 <= 50 ms]")
    for r in results:
        if r["wrong"]:
            print(f"{r['label']}, {r['form']}, {r['workers']} worker(s): first wrong answers "
                  f"{r['wrong'][:3]}")


if __name__ == "__main__":
    main()
