"""Device choice: an explicit request wins; otherwise CUDA when present, else CPU."""

from __future__ import annotations

import torch

from harness.errors import UsageError


def pick_device(requested: str | None = None) -> torch.device:
    """Return the torch device to run on.

    ``requested`` is ``None``/``"auto"`` (CUDA if available, else CPU) or any torch device string.
    Asking for CUDA on a machine without it is a UsageError, not a silent fallback.
    """
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise UsageError(f"--device: {requested!r} is not a torch device (try cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available on this machine (use --device cpu)")
    return device
