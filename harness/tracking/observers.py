"""The seam for mirrors of a run's progress (a W&B mirror, a live dashboard): ``run_config``
calls every observer it is given, as things happen. The results store does not depend on them."""

from __future__ import annotations

from typing import Protocol


class RunObserver(Protocol):
    def run_started(self, run_id: str, arm: str, config: dict) -> None:
        """A run begins; ``config`` is the flattened configuration (dotted keys)."""

    def run_logged(self, run_id: str, record: dict) -> None:
        """One evaluation record (the line metrics.jsonl gets)."""

    def run_finished(self, run_id: str, status: str, summary: dict) -> None:
        """The run ended (done, diverged or failed); ``summary`` is its results-table row."""


_INSTALLED: list[RunObserver] = []


def install(observer: RunObserver) -> None:
    """Make ``observer`` see every run this process records (``run_config`` adds it to the ones it
    is given): how a worker streams each run it trains without every caller passing it along."""
    _INSTALLED.append(observer)


def installed() -> tuple[RunObserver, ...]:
    return tuple(_INSTALLED)
