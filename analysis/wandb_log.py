"""Log an analysis to W&B (job type ``analysis``, in the sweep's group) so the dashboard shows the
verdicts beside the runs. Local files are always written first; a W&B failure only warns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MODES = ("disabled", "offline", "online")
DEFAULT_PROJECT = "polyscale"


def log_analysis(
    mode: str,
    project: str,
    group: str,
    tables: dict[str, pd.DataFrame],
    images: list[Path] = (),
    summary: dict | None = None,
    config: dict | None = None,
) -> bool:
    """Log tables and images to one W&B run; returns whether it worked (never raises)."""
    if mode == "disabled":
        return False
    try:
        import wandb

        run = wandb.init(
            project=project, group=group, job_type="analysis", name=f"analysis-{group}", mode=mode, config=config or {}
        )
        try:
            payload = {
                name: wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
                for name, frame in tables.items()
            }
            payload.update({path.stem: wandb.Image(str(path)) for path in images})
            run.log(payload)
            run.summary.update(summary or {})
        finally:
            run.finish()
        return True
    except Exception as exc:  # any W&B problem (network, auth, service) must not lose the local results
        print(
            f"polyscale: warning: W&B logging failed, local files are unaffected ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return False
