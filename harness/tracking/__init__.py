"""Where results go: the run-folder store and runs.parquet (store), and the observer seam.

The names below are imported on first use (``harness.lazy``), so that a light submodule such as
``wandb_mirror``, whose modes the command line's parsers list, does not import the store's pandas.
"""

from __future__ import annotations

from harness.lazy import lazy_names

_MODULE_OF = {
    "FINISHED": "store",
    "STATUSES": "store",
    "RunObserver": "observers",
    "begin_run": "store",
    "end_run": "store",
    "is_finished": "store",
    "read_status": "store",
    "rebuild_table": "store",
    "run_dir": "store",
    "write_metrics": "store",
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF)
