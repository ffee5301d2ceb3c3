"""Run several tasks up to a common point, serve all their requests at once, let them finish.

Each task is an ordinary function (here: ``run_config`` of one configuration) that, somewhere
inside, calls ``park(request)``. ``run_tasks`` runs the tasks one after another, each in its own
thread, until it parks or returns; then hands every parked request to ``serve`` in one call; then
resumes the parked tasks one after another with their replies, and repeats while any parks again.
Exactly one thread runs at any time (the tasks take turns with the caller), so the tasks need not
be thread-safe and their numbers do not depend on the threads: the threads only keep each task's
call stack alive while it waits.

This is how a sweep worker trains the models of many configurations as one batched model without
the experiments being written for it: their training call parks (harness/train/loop.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

_current = threading.local()


class _Task:
    """One function run in its own thread, in turns with the caller."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.request: Any = None
        self.parked = False
        self.result: Any = None
        self._reply: Any = None
        self._resume = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        _current.task = self
        try:
            self.result = self.function()
        except BaseException as exc:  # the caller decides what a task's exception means
            self.result = exc
        finally:
            self.parked = False
            self._paused.set()

    def park(self, request: Any) -> Any:
        """In the task's thread: hand ``request`` over, wait for the reply (raised if an exception)."""
        self.request, self.parked = request, True
        self._resume.clear()
        self._paused.set()
        self._resume.wait()
        reply, self._reply, self.request = self._reply, None, None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def advance(self, reply: Any = None) -> None:
        """In the caller's thread: let the task run until it parks or returns."""
        self._paused.clear()
        if not self._thread.is_alive() and not self.parked:
            self._thread.start()
        else:
            self.parked, self._reply = False, reply
            self._resume.set()
        self._paused.wait()


def current() -> _Task | None:
    """The task running in this thread, or None outside ``run_tasks``."""
    return getattr(_current, "task", None)


def park(request: Any) -> Any:
    """Hand ``request`` to the ``serve`` of the ``run_tasks`` running this task; return its reply."""
    task = current()
    if task is None:
        raise RuntimeError("park() outside run_tasks")
    return task.park(request)


def run_tasks(functions: Sequence[Callable[[], Any]], serve: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """Each function's return value, or the exception it raised (returned, not raised).

    ``serve`` gets the requests parked in one round and returns one reply per request; if it
    raises, every parked task gets that exception from its ``park`` (so each can record its
    failure) and it is raised here afterwards.
    """
    tasks = [_Task(function) for function in functions]
    for task in tasks:
        task.advance()
    while waiting := [task for task in tasks if task.parked]:
        try:
            replies = serve([task.request for task in waiting])
        except BaseException as exc:
            for task in waiting:
                task.advance(exc)
            raise
        for task, reply in zip(waiting, replies):
            task.advance(reply)
    return [task.result for task in tasks]
