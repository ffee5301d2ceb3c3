"""Device choice (an explicit request wins; otherwise CUDA when present, else CPU), CPU threads, and
whether CUDA float32 matrix products run in TF32."""

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


@contextmanager
def float32_matmuls(tf32: bool) -> Iterator[None]:
    """CUDA float32 matrix products (and cuDNN convolutions) in TF32 exactly when ``tf32``, for the
    duration, whatever the process was set to (torch's default for cuDNN is on); restored afterwards.

    A process-wide flag, so each training step and evaluation sets its own run's value: runs with
    either setting can share a worker.
    """
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def tf32_in_effect(device: torch.device, dtype: torch.dtype, tf32: bool) -> bool:
    """Whether a run asking for ``tf32`` gets it: float32 on a CUDA device with TF32 units
    (compute capability 8.0, Ampere, or later)."""
    return (
        tf32 and dtype == torch.float32 and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
    )
