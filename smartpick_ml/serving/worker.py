"""Setting up a process that exists to serve the model (an ``mlflow models serve`` worker)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

#: set by ``mlflow models serve`` for its uvicorn workers (``scoring_server._SERVER_MODEL_PATH``):
#: this process exists to serve the model
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"


def nodelay_on_listeners() -> int:
    """Set ``TCP_NODELAY`` on this process's listening TCP sockets (Linux inherits it into every
    accepted connection); returns how many were changed.

    Why: with ``--workers 2`` or more, uvicorn binds the socket itself with ``proto = 0``, so
    asyncio never sets ``TCP_NODELAY`` on its connections (uvicorn issue #3149): each response
    waits for the client's delayed ACK. The worker loads the model after the socket is handed to
    it and before it accepts, so the loader can fix it. Drop this once uvicorn sets it."""
    import socket

    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return 0
    changed = 0
    for entry in fd_dir.iterdir():
        try:
            fd = int(entry.name)
            if not Path(os.readlink(entry)).name.startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))  # a second handle: closing it keeps fd
        except (OSError, ValueError):
            continue
        with sock:
            try:
                if (sock.family in (socket.AF_INET, socket.AF_INET6)
                        and sock.type == socket.SOCK_STREAM
                        and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                        and not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    changed += 1
            except OSError:
                continue
    return changed


def prepare_server_worker() -> None:
    """Set up a process that exists to serve the model (an ``mlflow models serve`` worker),
    once, after loading it (``docs/benchmarks.md`` has the measurements behind each step):

    - **every failed request is answered 400 with a short message** naming the field
      (``replies.guard_scoring_server``), never 500, a stack trace or the request echoed;

    - **the heap loaded so far leaves the garbage collector's reach** (``gc.freeze``): the
      libraries, model and catalog live as long as the process, and a full collection walking
      them would stall whichever request it lands in;
    - **requests run on one inference thread**: the work is CPU-bound Python holding the GIL,
      so more threads only add hand-offs that raise every request's cost once a worker falls
      behind;
    - **request text stays plain Python strings** (pandas' ``future.infer_string`` off where
      pandas has the option): MLflow builds a DataFrame from every request, and Arrow-backed
      strings would convert each text column to Arrow and back.

    A notebook or service that loads the model with ``mlflow.pyfunc.load_model`` keeps its
    collector, threads and string dtype: this runs only where ``SERVER_MODEL_PATH_ENV`` is set."""
    import asyncio
    import gc
    from concurrent.futures import ThreadPoolExecutor

    from smartpick_ml.serving.replies import guard_scoring_server

    guard_scoring_server()
    gc.collect()
    gc.freeze()
    _plain_request_strings()
    try:
        loop = asyncio.get_running_loop()  # uvicorn loads the app inside its event loop
    except RuntimeError:
        return
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="smartpick-inference"))


def _plain_request_strings() -> None:
    """Infer object (plain ``str``) columns for text, not Arrow strings: see
    :func:`prepare_server_worker`."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the option's deprecation notice, once per worker
        try:
            pd.set_option("future.infer_string", False)
        except pd.errors.OptionError:  # a pandas without the option
            pass
