"""retain_freed_memory: a freed activation-sized block is reused, not faulted in again from the kernel."""

import platform
import subprocess
import sys

import pytest

from harness.allocator import retain_freed_memory

FAULTS = """
import resource, sys
import numpy as np
from harness.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
np.ones(1 << 20).sum()  # 8 MB: above glibc's default mmap threshold (128 kB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    np.ones(1 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    # By default every 8 MB block is mapped afresh (or the heap top trimmed and regrown): at least one
    # fault per allocation (one per 4 kB page, or per 2 MB with transparent huge pages).
    assert _faults("default") >= 50
    assert _faults("retain") <= 5


def test_elsewhere_it_says_it_did_nothing(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert retain_freed_memory() is False
