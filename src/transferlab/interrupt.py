"""Ctrl-C during a flow: the fit in Prefect's task thread stops at its next batch.

SIGINT raises KeyboardInterrupt in the main thread only, where a flow waits on its tasks; a fit in
a task thread trained on to its end (minutes), and the process ended only after it, in a long
traceback. `install` (every flow script's bootstrap) records the request, and the Trainer's
`StopOnInterrupt` callback ends the fit at its next batch (errors.Interrupted): its last checkpoint is left for the
same command to resume from. Light on purpose: no torch or Lightning here."""

from __future__ import annotations

import signal
import threading

REQUESTED = threading.Event()


def install() -> None:
    """SIGINT sets REQUESTED, then raises KeyboardInterrupt in the main thread as Python's default does."""
    def handler(signum, frame) -> None:
        REQUESTED.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)
