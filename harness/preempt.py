"""Cooperative stopping of training, for preemption (SIGTERM, Slurm's SIGUSR1 or submitit's SIGUSR2,
Ctrl-C) and lost claims.

A signal handler or a worker's heartbeat asks for a stop; the training loop checks between steps,
writes a checkpoint of what it holds and raises ``Preempted``. The run is then unfinished, not
failed: the same command resumes it from that checkpoint.

``stop_on_signals`` turns SIGTERM, SIGUSR1, SIGUSR2 and SIGINT into such a request, so a signal never
raises in the middle of a write or kills a process that holds claims. Work that does not check
the request (data generation, compression, a loop without checkpoints) is not waited for
indefinitely: ``stop_seconds()`` after the first signal, or at once on a second Ctrl-C, the
process's ``on_overdue`` runs (a worker hands its claims back there and exits).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped on request; the same command resumes
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
# SIGUSR2: what a Slurm array submitted through submitit (harness/sweep/slurm.py) gets before its
# time limit, sent to every process of the task, the worker included.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT") if hasattr(signal, name)
)
STOP_SECONDS_ENV = "POLYSCALE_STOP_SECONDS"
# Under Slurm's default KillWait (30 s), the time between its SIGTERM and its SIGKILL.
DEFAULT_STOP_SECONDS = 20.0
PARENT_ENV = "POLYSCALE_PARENT_PID"  # set by a coordinator for its workers: stop when it is gone

_stop = threading.Event()
_reason: list[str] = []
_signals: list[str] = []  # the stop signals received (their names), in order
_signalled = threading.Event()  # set at the first
_overdue = threading.Event()  # set when the stop must happen now
_noting = False  # while ``received`` notes a signal (a handler may interrupt it)


class Preempted(Exception):
    """Training stopped on request after a checkpoint was written; the run resumes later."""


def request_stop(reason: str) -> None:
    """Ask every training loop of this process to checkpoint and stop at its next step."""
    _reason[:] = [reason]
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_reason() -> str | None:
    return _reason[0] if _reason else None


def clear() -> None:
    """Forget a stop request (tests, or a worker that goes on after handing work back); a request
    made by a signal stays."""
    _reason.clear()
    _stop.clear()
    if _signals:
        request_stop(_signals[0])


def signalled() -> str | None:
    """The stop signal this process received first (e.g. "SIGTERM"; "parent exit" when its
    coordinator went), or None."""
    return _signals[0] if _signals else None


def exit_code() -> int:
    """The exit status of a process stopped on request: 130 after Ctrl-C, else 75 (rerun to resume)."""
    return EXIT_INTERRUPTED if signalled() == "SIGINT" else EXIT_PREEMPTED


def stop_seconds() -> float:
    """How long a stop request may take before the process stops anyway: $POLYSCALE_STOP_SECONDS,
    else 20 s."""
    text = os.environ.get(STOP_SECONDS_ENV, "")
    try:
        return max(0.0, float(text)) if text else DEFAULT_STOP_SECONDS
    except ValueError:
        raise ValueError(f"${STOP_SECONDS_ENV}: expected a number of seconds; got {text!r}") from None


def stop_on_signals(on_overdue: Callable[[], None], parent_pid: int | None = None) -> None:
    """From now on SIGTERM, SIGUSR1, SIGUSR2 and SIGINT ask for a stop (``request_stop``) instead of
    killing the process or raising KeyboardInterrupt; so does the death of ``parent_pid``, when
    given (it is polled: a coordinator killed with -9 leaves no worker running).

    ``on_overdue`` runs in a thread of its own ``stop_seconds()`` after the first request, or at
    once on a second Ctrl-C, if the process is still there; it should end the process. Call from
    the main thread.
    """
    seconds = stop_seconds()

    def deadline() -> None:
        _signalled.wait()
        _overdue.wait(seconds)
        on_overdue()

    def handle(signum: int, frame) -> None:
        received(signal.Signals(signum).name)

    # Both threads start here, not in a handler: a handler runs between two bytecodes of the main
    # thread, which may hold a lock that starting a thread needs.
    threading.Thread(target=deadline, name="stop-deadline", daemon=True).start()
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    for number in STOP_SIGNALS:
        signal.signal(number, handle)


def received(name: str) -> None:
    """Take note of a stop signal as the handlers of ``stop_on_signals`` do: ask for a stop, and
    on a second Ctrl-C for a stop now (for a process whose handlers do more, e.g. forward it).

    Two signals can come at once (Slurm signals every process of a task, submitit's requeue sends
    another; a process group gets one and its coordinator forwards it): the second handler then
    runs inside the first, which may hold an event's lock that setting it again would wait for
    forever. So a handler that interrupts another only adds its signal to the list, and the first
    notes every signal listed before it returns."""
    global _noting
    _signals.append(name)
    if _noting:
        return
    _noting = True
    try:
        seen = 0
        while seen < len(_signals):
            seen = len(_signals)
            if _signals.count("SIGINT") > 1:
                _overdue.set()  # Ctrl-C twice: stop now
            request_stop(_signals[0])
            _signalled.set()
    finally:
        _noting = False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    received("parent exit")  # as if the coordinator had sent SIGTERM before it went
