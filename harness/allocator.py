"""Keep freed memory in the process rather than handing it back to the kernel (glibc only).

Training and evaluation allocate and free activation tensors of 0.5 to 16 MB thousands of times a
second. With glibc's defaults a block above the mmap threshold is a fresh mapping, and a free top
of the heap goes back to the kernel, so the next allocation page-faults all its memory in again.
On a CPU that is a large share of an E3-sized run's time (docs/performance.md). With both
thresholds raised the process keeps its peak memory mapped and reuses it.
"""

from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 1 << 30  # a free heap top is handed back only beyond 1 GB


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where libc is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
