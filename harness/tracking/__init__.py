"""Where results go: the run-folder store and runs.parquet (store), and the observer seam.

The names below are imported on first use (``harness.lazy``), so that a light submodule such as
``wandb_mirror``, whose modes the command line's parsers list, does not import the store's pandas.
"""

from __future__ import annotations

from harness.lazy import lazy_names

_MODULE_OF = {
    "FINISHED": "store",
    "RunObserver": "observers",
    "STATUSES": "store",
    "begin_run": "store",
    "copy_finished": "store",
    "end_run": "store",
    "ensure_writable": "store",
    "error_line": "store",
    "finished_status": "store",
    "is_finished": "store",
    "install": "observers",
    "installed": "observers",
    "is_results_folder": "store",
    "is_alive": "store",
    "process_alive": "store",
    "progress": "store",
    "read_identity": "store",
    "read_metrics": "store",
    "read_status": "store",
    "read_summary": "store",
    "read_wandb_state": "store",
    "rebuild_table": "store",
    "record_problem": "store",
    "run_dir": "store",
    "run_error": "store",
    "run_ids": "store",
    "table_path": "store",
    "write_metrics": "store",
    "write_wandb_state": "store",
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF)
