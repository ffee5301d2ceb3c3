"""bench/gpu_check.py (``make gpu-check``) runs on a CPU too: its quick mode passes every section
and writes the report it prints."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_every_section_on_the_cpu_and_writes_its_report(tmp_path):
    out = tmp_path / "report.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--quick", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert report.splitlines() == done.stdout.splitlines()[:-1]  # the file is what it printed
    sections = ["versions", "batched equivalence on the device", "compression on the device vs the CPU"]
    sections += ["same seed on the device and the CPU", "training throughput", "E3 slice"]
    assert [
        line.removeprefix("PASS ").rsplit(" (", 1)[0] for line in report.splitlines() if line.startswith("PASS")
    ] == (sections)
    assert "1 passed" in report and "| E3-sized: 4 x width 1000, d 20000, 16 steps | 4 |" in report
    assert report.rstrip().splitlines()[-1].startswith("all passed in ")
