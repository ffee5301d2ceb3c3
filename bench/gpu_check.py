"""``make gpu-check``: what a GPU machine needs checked before a sweep runs on it, in one report.

Sections, each timed, each PASS or FAIL (the script goes on after a failure and exits 1 at the end):

1. versions: torch, CUDA, the device and its compute capability, TF32 flags as the process has them;
2. batched equivalence: tests/test_train_batched.py's batched-vs-loop tests with their runs on the
   device (POLYSCALE_TEST_DEVICE);
3. compression: ``compress`` of one point set as a device tensor and as a CPU array: support size and
   moment error of each;
4. same seed, two devices: one width and one data configuration in float64, run on the device and on
   the CPU; every logged loss must agree to 1e-6 relative (batches are drawn on the host: the same
   on any device);
5. throughput: bench/train_throughput.py on the device (batched vs one at a time);
6. E3 slice: the first configuration of sweeps/paper/e3.yaml (paper scale) for a slice of its steps,
   and the full sweep's time extrapolated from it.

``--quick`` runs every section at a reduced size (one test, a small E3, a short throughput run), as
it always does on a CPU: ``make gpu-check DEVICE=cpu`` and tests/test_gpu_check.py run it so, and
the script itself is tested on any machine. The full check is sized for at most 8 minutes on one GPU.

Run: .venv/bin/python bench/gpu_check.py [--device cuda] [--quick] [--out report.txt]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from harness.compression import compress
from harness.config import parse_config
from harness.config.sweep_spec import load_sweep
from harness.device import pick_device
from harness.experiments.runner import run_arms

ROOT = Path(__file__).resolve().parent.parent
CROSS_DEVICE_TOLERANCE = 1e-6
# The batched-vs-loop tests that can run on any device (the others test CPU-only stack splitting
# and thread settings).
EQUIVALENCE_TESTS = "reproduce_the_loop or are_reproduced or diverging or float32_batched"
QUICK_EQUIVALENCE_TESTS = "reproduce_the_loop and adamw and data"
QUICK_THROUGHPUT_STEPS = 16
E3_SLICE_STEPS = 1000
QUICK_E3 = ["model.width=300", "compression.size=30", "task.n_train=2000", "task.n_test=1000"]


class Report:
    """Lines printed as they come and kept for the report file; sections PASS or FAIL."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    @contextlib.contextmanager
    def section(self, title: str):
        self.say(f"\n== {title}")
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:  # the report goes on to the next section
            self.failed.append(title)
            self.say(f"FAIL {title}: {type(exc).__name__}: {exc}")
            self.say("".join(traceback.format_exception(exc)).rstrip())
        else:
            self.say(f"PASS {title} ({time.perf_counter() - start:.1f} s)")


def versions(report: Report, device: torch.device) -> None:
    report.say(f"host {socket.gethostname()}, {platform.machine()}, python {platform.python_version()}")
    report.say(f"torch {torch.__version__}, CUDA runtime {torch.version.cuda}, numpy {np.__version__}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report.say(
            f"device {device}: {props.name}, compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} GPU(s) visible"
        )
    else:
        report.say(f"device {device}: {torch.get_num_threads()} torch threads")
    report.say(
        f"TF32 as this process has it: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN "
        f"{torch.backends.cudnn.allow_tf32}, float32 matmul precision {torch.get_float32_matmul_precision()!r} "
        "(runs pin matmul and cuDNN TF32 to their train.tf32, default false)"
    )


def equivalence_tests(report: Report, device: torch.device, quick: bool) -> None:
    selection = QUICK_EQUIVALENCE_TESTS if quick else EQUIVALENCE_TESTS
    env = {**os.environ, "POLYSCALE_TEST_DEVICE": str(device), "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_train_batched.py"]
    done = subprocess.run([*command, "-k", selection], cwd=ROOT, env=env, capture_output=True, text=True)
    report.say(f"pytest -k {selection!r} with POLYSCALE_TEST_DEVICE={device}")
    report.say(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip())
    if done.returncode != 0:
        report.say(done.stdout[-4000:])
        raise RuntimeError(f"pytest exited {done.returncode}")


def compression(report: Report, device: torch.device, quick: bool) -> None:
    d, m, k = (2000, 2, 3) if quick else (100_000, 3, 4)
    size = d // 20
    points = np.random.default_rng(0).uniform(-1, 1, (d, m))
    report.say(f"clustered compression of {d:,} points in {m} dimensions to {size:,}, k = {k}")
    results = {}
    for where in (device, torch.device("cpu")):
        start = time.perf_counter()
        source = torch.as_tensor(points, device=where) if where.type == "cuda" else points
        result = compress(source, k=k, size=size, method="clustered", seed=0)
        results[str(where)] = result
        report.say(
            f"  on {where}: {result.size:,} points, moment error {result.moment_error:.2e}, "
            f"{time.perf_counter() - start:.2f} s"
        )
    on_device, on_cpu = results[str(device)], results["cpu"]
    if on_device.size != on_cpu.size:
        raise AssertionError(f"support sizes differ: {on_device.size} on {device}, {on_cpu.size} on the CPU")
    if not max(on_device.moment_error, on_cpu.moment_error) < 1e-8:
        raise AssertionError("a moment error is not at round-off")


def cross_device(report: Report, device: torch.device, quick: bool) -> None:
    steps = 20 if quick else 200
    common = {"seed": 3, "train": {"optimizer": "adamw", "lr": 0.01, "steps": steps, "batch_size": 64}}
    common["train"].update(eval_every=steps // 4, dtype="float64")
    configs = {
        "width": {
            **common,
            "experiment": "width",
            "task": {"name": "harmonic", "n_train": 2000, "n_test": 1000, "order": 2, "frequency": 3.0},
            "model": {"width": 200},
            "compression": {"k": 3, "size": 40},
        },
        "data": {
            **common,
            "experiment": "data",
            "task": {"name": "teacher", "n_train": 2048, "n_test": 1000},
            "model": {"width": 50},
            "compression": {"k": 3, "size": 200},
        },
    }
    worst = 0.0
    for name, raw in configs.items():
        config = parse_config(raw)
        here, cpu = run_arms(config, device=device), run_arms(config, device=torch.device("cpu"))
        for arm in here:
            pairs = [
                (a[key], b[key])
                for a, b in zip(here[arm].metrics, cpu[arm].metrics, strict=True)
                for key in a
                if key.endswith("loss") and a[key] is not None
            ]
            difference = max(abs(a - b) / max(abs(b), 1e-300) for a, b in pairs)
            worst = max(worst, difference)
            report.say(f"  {name} {arm:>9}: {len(pairs)} losses, largest relative difference {difference:.1e}")
    if worst > CROSS_DEVICE_TOLERANCE:
        raise AssertionError(f"losses differ by {worst:.1e} relative, more than {CROSS_DEVICE_TOLERANCE:g}")


def throughput(report: Report, device: torch.device, quick: bool) -> None:
    command = [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--device", str(device)]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    if quick:
        command += ["--quick", "--steps", str(QUICK_THROUGHPUT_STEPS)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.strip().splitlines():
        report.say(line)
    if done.returncode != 0:
        report.say(done.stderr[-4000:])
        raise RuntimeError(f"bench/train_throughput.py exited {done.returncode}")


def e3_slice(report: Report, device: torch.device, quick: bool) -> None:
    sweep = load_sweep(ROOT / "sweeps" / "paper" / "e3.yaml")
    first = sweep.runs[0].config
    steps = 20 if quick else E3_SLICE_STEPS
    overrides = ["train.epochs=null", f"train.steps={steps}", f"train.eval_every={steps}"]
    config = load_sweep(ROOT / "sweeps" / "paper" / "e3.yaml", overrides + (QUICK_E3 if quick else [])).runs[0].config
    configurations = len({(run.config.seed, run.config.train) for run in sweep.runs})
    report.say(
        f"{'reduced ' if quick else ''}E3: width {config.model.width} -> {config.compression.size}, "
        f"d = {config.task.n_train:,}, arms {', '.join(config.arm_names)}, {config.train.optimizer}, {steps} steps"
    )
    start = time.perf_counter()
    results = run_arms(config, device=device)
    wall = time.perf_counter() - start
    training = sum(result.summary["train_seconds"] for result in results.values())
    compressing = sum(result.summary.get("compress_seconds") or 0.0 for result in results.values())
    rest = max(0.0, wall - training - compressing)  # data, models and the two evaluations
    full_steps, full_evaluations = first.total_steps(), math.ceil(first.total_steps() / first.train.eval_every) + 1
    per_configuration = compressing + training / steps * full_steps + rest / 2 * full_evaluations
    report.say(
        f"  {wall:.1f} s: compression {compressing:.1f} s, training {training:.2f} s "
        f"({1000 * training / steps:.2f} ms per step, all arms), data and 2 evaluations {rest:.1f} s"
    )
    report.say(
        f"  extrapolated to paper scale ({full_steps:,} steps, {full_evaluations} evaluations): "
        f"{per_configuration / 3600:.1f} h per configuration, {configurations * per_configuration / 3600:.1f} h "
        f"for the sweep's {configurations} configurations one after another"
        + (" (reduced sizes: not a paper-scale figure)" if quick else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="every section at a reduced size")
    parser.add_argument(
        "--out", type=Path, default=None, help="report file (default results/gpu-check/HOST-DEVICE.txt)"
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    quick = args.quick or device.type == "cpu"  # full sizes are for a GPU
    out = args.out or ROOT / "results" / "gpu-check" / f"{socket.gethostname()}-{str(device).replace(':', '')}.txt"
    warnings.simplefilter("ignore")
    report = Report()
    report.say(f"polyscale gpu-check on {device}{' (quick)' if quick else ''}, {time.strftime('%Y-%m-%d %H:%M')}")
    start = time.perf_counter()
    for title, check in [
        ("versions", lambda: versions(report, device)),
        ("batched equivalence on the device", lambda: equivalence_tests(report, device, quick)),
        ("compression on the device vs the CPU", lambda: compression(report, device, quick)),
        ("same seed on the device and the CPU", lambda: cross_device(report, device, quick)),
        ("training throughput", lambda: throughput(report, device, quick)),
        ("E3 slice", lambda: e3_slice(report, device, quick)),
    ]:
        with report.section(title):
            check()
    verdict = f"FAILED: {', '.join(report.failed)}" if report.failed else "all passed"
    report.say(f"\n{verdict} in {time.perf_counter() - start:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report.lines) + "\n")
    print(f"report: {out}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
