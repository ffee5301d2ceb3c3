"""Device choice (an explicit request wins; otherwise CUDA when present, else CPU), and CPU threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch's CPU ops on one thread for the duration (nothing changes on other devices).

    For work made of thousands of small tensor ops (compression's reductions; batched training
    through the fused kernels, whose remaining ops are elementwise over a few hundred KB): a second
    intra-op thread buys little, and OpenMP's waking and spin-waiting make such ops several times
    slower (docs/performance.md), more when the cores are shared (parallel sweep workers, other jobs). The
    previous setting is restored afterwards.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
