"""The Linux scheduling policy granian's workers run under: SCHED_BATCH by default.

A one-row request on granian's WSGI interface passes between threads of its worker: the Rust
I/O thread hands it to a Python thread, which wakes the I/O thread again to send the answer.
Under the default policy (SCHED_OTHER) each wake-up preempts the thread that made it, in the
middle of its work: the Python thread can be switched out while it holds the GIL (granian hands
the answer over with the GIL held), the other Python threads woken meanwhile find the GIL taken
and sleep again, and requests are served in the order these switches happen to fall. Under
SCHED_BATCH a thread that is woken waits until the running one blocks or its time slice ends
(batch and idle threads never preempt on wake-up; the tick still does), so each thread finishes
what it holds first. ``python -m bench cost-curve
--configs granian:1:8 granian:1:8:normal`` measures both side by side (docs/benchmark.md).

Lowering a thread's own policy to SCHED_BATCH at nice 0 needs no privilege and no capability, so
the image's non-root user can do it. It is set in granian's master before the workers are
forked: processes and threads inherit it. gunicorn's workers keep SCHED_OTHER: a gevent worker is
one thread, with no hand-off to preempt.
"""
from __future__ import annotations

import os

SCHED_POLICIES = ("batch", "normal")   # SERVE_SCHED_POLICY
DEFAULT_SCHED_POLICY = "batch"
_LINUX_NAMES = {"batch": "SCHED_BATCH", "normal": "SCHED_OTHER"}


def set_policy(policy: str) -> str | None:
    """Put the calling thread (and the threads and processes it starts later) under ``policy``
    (batch or normal). None when it took effect, else why not (the thread keeps its policy)."""
    number = getattr(os, _LINUX_NAMES[policy], None)
    if number is None:
        return f"{_LINUX_NAMES[policy]} does not exist on this platform"
    try:
        os.sched_setscheduler(0, number, os.sched_param(0))
    except OSError as exc:   # a seccomp profile that forbids it, or an RLIMIT_NICE below nice 0
        return f"{_LINUX_NAMES[policy]}: {exc.strerror or exc}"
    return None


def current_policy(tid: int = 0) -> str:
    """The Linux name of thread ``tid``'s policy (0: the calling thread), e.g. ``SCHED_BATCH``."""
    number = os.sched_getscheduler(tid)
    for name in ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO", "SCHED_RR"):
        if getattr(os, name, None) == number:
            return name
    return f"policy {number}"
