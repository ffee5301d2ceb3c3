"""Cooperative stopping of training, for preemption (SIGTERM, Slurm's SIGUSR1) and lost claims.

A signal handler or a worker's heartbeat asks for a stop; the training loop checks between steps,
writes a checkpoint of what it holds and raises ``Preempted``. The run is then unfinished, not
failed: the same command resumes it from that checkpoint.
"""

from __future__ import annotations

import threading

_stop = threading.Event()
_reason: list[str] = []


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
    """Forget a stop request (tests, or a worker that goes on after handing work back)."""
    _reason.clear()
    _stop.clear()
