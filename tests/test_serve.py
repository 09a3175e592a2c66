"""The registered champion served by the real MLflow scoring server (``mlflow models serve``).

Starts the server as a subprocess on a free local port against the ``small_training_run`` tracking
store, scores a few synthetic pairs over HTTP, and checks malformed requests get a 4xx with a
message. The server is always stopped (its whole process group) in a ``finally`` block. Takes
~15 s, so it stays in the default suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.features import PAIR_INPUT_COLUMNS, synthetic_pairs

STARTUP_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _request(url: str, body: bytes | None = None, timeout: float = 30.0
             ) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _split_body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split",
                                                                   index=False))}).encode()


@pytest.fixture(scope="module")
def server(small_training_run, tmp_path_factory) -> Iterator[str]:
    """Base URL of ``mlflow models serve -m models:/smartpick-match@champion``."""
    world = small_training_run
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = world.tracking_uri
    # `mlflow models serve` execs `uvicorn` through bash: it must be on PATH even when the
    # virtual environment is not activated
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve",
           "-m", f"models:/{world.registered_model}@champion", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=world.root, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with code {proc.returncode}:\n"
                            f"{_log_tail(log)}")
            try:
                if _request(f"{base}/ping", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after {STARTUP_TIMEOUT:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield base
    finally:
        # the server runs in its own session: stop its whole process group (mlflow + uvicorn)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def test_served_champion_predicts_like_the_trained_model(server, small_training_run) -> None:
    model = small_training_run.model
    pairs = synthetic_pairs(8, seed=4)[list(PAIR_INPUT_COLUMNS)]
    # add real validation rows too: missing rates, missing home state, signals
    va = small_training_run.validation
    pairs = pd.concat([pairs, va[va["rate_us_md"].isna()].head(2)[list(PAIR_INPUT_COLUMNS)],
                       va[va["signal"] != "none"].head(2)[list(PAIR_INPUT_COLUMNS)]],
                      ignore_index=True)
    status, text = _request(f"{server}/invocations", _split_body(pairs))
    assert status == 200, text
    got = np.asarray(json.loads(text)["predictions"], dtype=float)
    assert got.shape == (len(pairs), 2)
    np.testing.assert_allclose(got, model.predict_proba(pairs), rtol=0, atol=1e-12)
    # the hard visa rule survives serving: q = 0 exactly
    blocked = pairs.iloc[:3].assign(applicant_type="non_us_img", needs_visa=True,
                                    sponsors_j1=False, sponsors_h1b=False)
    status, text = _request(f"{server}/invocations", _split_body(blocked))
    assert status == 200, text
    assert [row[1] for row in json.loads(text)["predictions"]] == [0.0, 0.0, 0.0]


def test_unknown_sponsorship_is_served(server, small_training_run) -> None:
    # the programs contract allows unknown sponsorship (null): not a refusal, and not an error
    pairs = synthetic_pairs(4, seed=2)[list(PAIR_INPUT_COLUMNS)]
    pairs["sponsors_j1"] = pd.array([None, True, None, False], dtype="boolean")
    status, text = _request(f"{server}/invocations", _split_body(pairs))
    assert status == 200, text
    got = np.asarray(json.loads(text)["predictions"], dtype=float)
    np.testing.assert_allclose(got, small_training_run.model.predict_proba(pairs), atol=1e-12)


@pytest.mark.parametrize("case", ["missing_column", "not_a_dataframe", "not_json",
                                  "unknown_applicant_type"])
def test_malformed_request_gets_a_4xx_with_a_message(server, case) -> None:
    pairs = synthetic_pairs(3)[list(PAIR_INPUT_COLUMNS)]
    if case == "missing_column":
        body, needle = _split_body(pairs.drop(columns=["step2_ck"])), "step2_ck"
    elif case == "not_a_dataframe":
        body, needle = json.dumps({"rows": [1, 2, 3]}).encode(), "dataframe_split"
    elif case == "not_json":
        body, needle = b"{this is not json", "json"
    else:
        body, needle = _split_body(pairs.assign(applicant_type="martian")), "applicant_type"
    status, text = _request(f"{server}/invocations", body)
    assert 400 <= status < 500, (status, text[:500])
    error = json.loads(text)
    assert error["error_code"] in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE", "MALFORMED_REQUEST"}
    message = error["message"]
    if case == "unknown_applicant_type":
        # the model's own error (DataValidationError) is not an MlflowException: the server
        # answers with a generic message and puts ours in the stack trace it returns
        assert "compatible with the model" in message
        message = error.get("stack_trace", "")
        assert "DataValidationError" in message
    assert needle.lower() in message.lower(), message[:500]
