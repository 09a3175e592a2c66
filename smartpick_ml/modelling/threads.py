"""OpenMP thread control around small predict calls, shared by training (permutation importance)
and inference (ranking one applicant)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

#: a batch this small scores faster on one OpenMP thread: waking and spin-waiting the pool costs
#: more than the work, most on a loaded machine; results are the same
SMALL_BATCH_ROWS = 1000


#: one limiter at a time, so concurrent requests cannot restore each other's thread count wrongly
_ONE_THREAD_LOCK = threading.Lock()


@functools.cache
def _threadpools() -> ThreadpoolController:
    """Built on first use, once the model's OpenMP runtime is loaded (cheap limits afterwards)."""
    return ThreadpoolController()


@contextlib.contextmanager
def one_openmp_thread(when: bool = True) -> Iterator[None]:
    """Run the block on one OpenMP thread (if ``when``): small predict calls on a busy 2-core
    machine spend longer waking and spin-waiting the pool than working. Uses one cached
    controller (building one scans every loaded library) under one lock."""
    if not when:
        yield
        return
    with _ONE_THREAD_LOCK, _threadpools().limit(limits=1, user_api="openmp"):
        yield
