"""Ctrl-C during a flow: the fit in Prefect's task thread stops at its next batch.

SIGINT raises KeyboardInterrupt in the main thread only, where a flow waits on its tasks; a fit in
a task thread trained on to its end (minutes), and the process ended only after it, in a long
traceback. `install` (every flow script's bootstrap) records the request, and the Trainer's
`StopOnInterrupt` callback ends the fit at its next batch (errors.Interrupted): its last checkpoint is left for the
same command to resume from. Light on purpose: no torch or Lightning here.

Under trainer=ddp the fit runs in spawned worker processes, each with its own REQUESTED: SIGINT is
forwarded to them (a `kill -INT` of this process alone reaches no worker, which trained on to the
end), and a worker only records it (`install_in_worker`), since a KeyboardInterrupt there ends it
with exit code 0 and no result, and Lightning's launcher then waits for that result forever."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager, suppress
from typing import Iterator

from transferlab.errors import Interrupted

REQUESTED = threading.Event()


def install() -> None:
    """SIGINT sets REQUESTED and reaches the spawned fit workers, then raises KeyboardInterrupt in
    the main thread as Python's default does."""
    def handler(signum, frame) -> None:
        REQUESTED.set()
        for child in multiprocessing.active_children():  # ddp_spawn's workers: Process objects here
            with suppress(ProcessLookupError):  # it ended since active_children() looked
                os.kill(child.pid, signal.SIGINT)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)


def install_in_worker() -> None:
    """In a spawned fit worker: SIGINT (the terminal's, the main process's, or its death) only sets
    REQUESTED, and StopOnInterrupt ends the fit at its next batch with an error the main process sees.
    Nothing in the main process (a copy of the callback there keeps its Ctrl-C). Called while the
    worker unpickles its arguments, where its process name is already set and parent_process() not yet."""
    if multiprocessing.current_process().name != "MainProcess" and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda _signum, _frame: REQUESTED.set())


@contextmanager
def fit_interrupted() -> Iterator[None]:
    """A fit in worker processes that failed after an interrupt here was stopped by it: the failure
    is Interrupted (said in one line, never retried), not the workers' traceback."""
    try:
        yield
    except Exception as exc:
        if REQUESTED.is_set() and not isinstance(exc, Interrupted):
            raise Interrupted() from None
        raise
