"""Where results go: the run-folder store and runs.parquet (store), and the observer seam."""

from harness.tracking.observers import RunObserver
from harness.tracking.store import (
    FINISHED,
    STATUSES,
    begin_run,
    end_run,
    is_finished,
    read_status,
    rebuild_table,
    run_dir,
    write_metrics,
)

__all__ = [
    "FINISHED",
    "STATUSES",
    "RunObserver",
    "begin_run",
    "end_run",
    "is_finished",
    "read_status",
    "rebuild_table",
    "run_dir",
    "write_metrics",
]
