"""``polyscale sweep --launcher slurm``: the sweep's workers as one Slurm job array, through submitit.

The coordinator checks the cluster (sbatch on PATH, the partition, a queue every node can reach),
enqueues the sweep as the local launcher does, and submits one array of ``tasks`` tasks; each task
runs one ``polyscale worker`` on the sweep's storage (a child process of submitit's, so that the
worker is the same program everywhere). The array's id goes to RESULTS/slurm/jobs.json, where
``polyscale status`` and ``polyscale cancel`` find it. The storage URL reaches the tasks in their
environment (sbatch exports the submitter's), never in a script, a pickle or a command line.

Stopping and requeueing (harness/preempt.py): submitit asks Slurm for SIGUSR2 ``SIGNAL_DELAY``
seconds before the time limit; it reaches every process of the task, so the worker checkpoints its
runs and hands them back, while submitit calls ``SlurmWorker.checkpoint`` (which waits for the
worker to have stopped) and requeues the task, which then claims and resumes them. A task that
Slurm itself requeues or preempts (``scontrol requeue``, PreemptMode=REQUEUE) or cancels gets
SIGTERM: the worker stops the same way, and a requeued task resumes the runs. A task that fails
hands its job back through the queue's heartbeat; the other tasks go on.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import submitit

import harness
from harness import preempt
from harness.config.launcher import LauncherSpec, minutes, sbatch_parameters
from harness.config.sweep_spec import Sweep
from harness.errors import UsageError
from harness.sweep.launch import complete, conclude, enqueue, watch
from harness.sweep.options import SweepOptions, worker_command
from harness.tracking.store import read_json, slurm_dir, slurm_jobs_path, write_json

SIGNAL_DELAY = 90  # seconds before the time limit that SIGUSR2 comes (submitit's default)
UNLIMITED = 365 * 24 * 60  # minutes: the time limit asked for on a partition without one
MAX_TIMEOUTS = 20  # requeues after reaching the time limit; each resumes the runs from checkpoints
POLL_SECONDS = 5.0  # between looks at the array while waiting for it


class WorkerExit(RuntimeError):
    """A task's worker ended with an exit status other than 0 (it is in the task's log)."""


class SlurmWorker:
    """One array task: ``polyscale worker`` with ``argv`` in ``cwd``, importing harness from
    ``root``; its exit status is the task's. submitit pickles it, and calls ``checkpoint`` when the
    task is to be requeued."""

    def __init__(self, argv: list[str], cwd: str, root: str, threads: int) -> None:
        self.argv, self.cwd, self.root, self.threads = argv, cwd, root, threads
        self._child: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_child"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _child=None)

    def __call__(self) -> str:
        path = os.environ.get("PYTHONPATH", "")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([self.root, path]) if path else self.root,
            "OMP_NUM_THREADS": str(self.threads),
            "TQDM_DISABLE": "1",  # step bars do not belong in a log file
        }
        command = [sys.executable, "-m", "harness.cli", "worker", *self.argv]
        self._child = subprocess.Popen(command, cwd=self.cwd, env=env)
        # Polled, not waited for: ``checkpoint`` runs in a signal handler of this thread and waits
        # for the child itself.
        while (code := self._child.poll()) is None:
            time.sleep(1.0)
        if code == preempt.EXIT_PREEMPTED:  # stopped by Slurm (requeue, preemption, scancel): runs handed back
            return f"polyscale worker stopped on {socket.gethostname()}; its runs went back to the queue"
        if code != 0:
            raise WorkerExit(f"polyscale worker exited with status {code} on {socket.gethostname()}")
        return f"polyscale worker done on {socket.gethostname()}"

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Before submitit requeues the task: have the worker checkpoint and hand its runs back
        (SIGUSR1; Slurm's SIGUSR2 reached it too), wait for it, and requeue this same worker."""
        child = self._child
        if child is not None:
            try:
                child.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                pass
            _wait_for_exit(child.pid, preempt.stop_seconds() + 10.0)
        return submitit.helpers.DelayedSubmission(SlurmWorker(self.argv, self.cwd, self.root, self.threads))


def _wait_for_exit(pid: int, seconds: float) -> None:
    """Wait for the child ``pid`` to exit, killing it after ``seconds`` (its claims then come back
    to the queue after the grace period)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped
            return
        if done:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def check_cluster(spec: LauncherSpec, options: SweepOptions) -> str:
    """One-line errors before anything is submitted: no sbatch, no such partition, a queue that
    the array's nodes cannot share. Returns the partition the array goes to."""
    if shutil.which("sbatch") is None:
        raise UsageError("--launcher slurm: sbatch is not on PATH (run on a Slurm login node, or use --launcher local)")
    nodes, default = partitions()
    partition = spec.partition or default
    if partition is None:
        raise UsageError("--launcher slurm: the cluster has no default partition; give --partition NAME")
    if partition not in nodes:
        raise UsageError(
            f"--partition {partition}: no such partition on this cluster (it has: {', '.join(sorted(nodes)) or 'none'})"
        )
    storage = options.storage_url
    on_file = "://" not in storage or storage.startswith("sqlite:")
    if on_file and not spec.shared_fs and set(nodes[partition]) != {socket.gethostname().split(".")[0]}:
        shown = ", ".join(sorted(nodes[partition])[:5]) + (", ..." if len(nodes[partition]) > 5 else "")
        raise UsageError(
            f"--storage {storage}: a queue file on this machine cannot be shared by the nodes of partition "
            f"{partition} ({shown}); give --storage postgresql://..., or put it on a filesystem every node "
            "sees and set shared_fs: true (--shared-fs)"
        )
    return partition


def partitions() -> tuple[dict[str, list[str]], str | None]:
    """Each partition's nodes, and the default partition, as ``sinfo`` says."""
    try:
        done = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%P|%N"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--launcher slurm: sinfo did not answer ({exc})") from None
    if done.returncode != 0:
        raise UsageError(f"--launcher slurm: sinfo failed: {_last_line(done.stderr)}")
    nodes: dict[str, list[str]] = {}
    default = None
    for line in done.stdout.splitlines():
        name, _, node = line.strip().partition("|")
        if name.endswith("*"):
            name = default = name[:-1]
        if name:
            nodes.setdefault(name, []).append(node)
    return nodes, default


def partition_minutes(partition: str) -> int:
    """The time limit a task of ``partition`` gets by default: its DefaultTime, else its MaxTime,
    else (both unlimited) ``UNLIMITED``."""
    done = subprocess.run(
        ["sinfo", "--noheader", f"--partition={partition}", "--format=%L|%l"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = done.stdout.strip().splitlines()
    for limit in lines[0].split("|") if lines else []:
        try:
            return minutes(limit, f"partition {partition}'s time limit")
        except UsageError:  # "infinite", "n/a"
            continue
    return UNLIMITED


def launch(sweep: Sweep, options: SweepOptions, spec: LauncherSpec, partition: str, wait: bool) -> int:
    """Enqueue the sweep and submit its array; with ``wait``, watch it to the end and report as
    the local launcher does. The exit status: 0 once submitted (with ``wait``: once complete)."""
    options = absolute(options)
    before, pending, _ = enqueue(sweep, options, f"a Slurm array of {spec.tasks or 1} task(s) on {partition}")
    if not pending:
        return 0 if complete(conclude(sweep, options, before)) else 1
    array = submit(sweep.name, options, spec, partition)
    out = options.out
    print(
        f"submitted Slurm array {array} ({spec.tasks or 1} task(s), partition {partition}); logs in {slurm_dir(out)}\n"
        f"  polyscale status {out}    # the runs and the array's tasks\n"
        f"  polyscale cancel {out}    # end the array (the same sweep command completes the rest)",
        flush=True,
    )
    if not spec.shared_fs and len(partitions()[0].get(partition, [])) > 1:
        print(
            f"  the tasks write their runs to {out} on their own node unless it is on a shared filesystem: "
            f"copy them back and merge them with `polyscale collect {out} --from FOLDER`",
            flush=True,
        )
    if not wait:
        return 0
    try:
        watch(sweep, out, [ArrayWatch(array)], before)
    except KeyboardInterrupt:
        print(f"stopped watching: Slurm array {array} goes on (`polyscale cancel {out}` ends it)", file=sys.stderr)
        return preempt.EXIT_INTERRUPTED
    return 0 if complete(conclude(sweep, options, before)) else 1


def absolute(options: SweepOptions) -> SweepOptions:
    """``options`` with the results folder and a queue file as absolute paths (tasks may start
    elsewhere)."""
    storage = options.storage_url
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return dataclasses.replace(options, out=options.out.resolve(), storage=storage)


def submit(name: str, options: SweepOptions, spec: LauncherSpec, partition: str) -> str:
    """Submit the array of workers through submitit; record and return its id."""
    threads = options.threads or spec.cpus_per_task or 1
    argv, env = worker_command(dataclasses.replace(options, threads=threads))
    root = str(Path(harness.__file__).resolve().parents[1])  # the tree this coordinator runs from
    worker = SlurmWorker(["--sweep", name, *argv], str(Path.cwd()), root, threads)
    executor = submitit.SlurmExecutor(folder=slurm_dir(options.out) / "%j", max_num_timeout=MAX_TIMEOUTS)
    parameters = {
        "job_name": f"polyscale-{name}",
        "partition": partition,
        "account": spec.account,
        "qos": spec.qos,
        "time": spec.time or partition_minutes(partition),  # submitit tells a timeout from a preemption by it
        "gpus_per_task": spec.gpus_per_task,
        "cpus_per_task": spec.cpus_per_task or 1,
        "mem": _sbatch_memory(spec.mem),
        "array_parallelism": spec.array_parallelism or spec.tasks or 1,
        "signal_delay_s": SIGNAL_DELAY,
        "stderr_to_stdout": True,
        # submitit's own process unpickles the worker: it must import this harness too
        "setup": [f"export PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}"],
        "additional_parameters": {"requeue": True, **sbatch_parameters(spec.sbatch)},
    }
    executor.update_parameters(**{key: value for key, value in parameters.items() if value is not None})
    with _environment(env):  # sbatch passes the submitter's environment on to the tasks
        try:
            with executor.batch():
                jobs = [executor.submit(worker) for _ in range(spec.tasks or 1)]
        except subprocess.CalledProcessError as exc:
            detail = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else str(exc.output)
            raise UsageError(f"--launcher slurm: sbatch refused the array: {_last_line(detail) or exc}") from None
    array = jobs[0].job_id.split("_")[0]
    record_array(options.out, array, len(jobs), partition)
    return array


def _sbatch_memory(mem: str | None) -> str | None:
    """``mem`` as sbatch reads it: a bare number is megabytes."""
    return None if mem is None else (mem if mem[-1].isalpha() else f"{mem}M")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def record_array(out: Path, array: str, tasks: int, partition: str) -> None:
    """Add an array to RESULTS/slurm/jobs.json."""
    arrays = recorded_arrays(out)
    submitted = datetime.now(timezone.utc).isoformat(timespec="seconds")
    arrays.append({"job_id": array, "tasks": tasks, "partition": partition, "submitted": submitted})
    write_json(slurm_jobs_path(out), {"arrays": arrays})


def recorded_arrays(out: Path) -> list[dict]:
    """The arrays submitted for RESULTS, oldest first ([] when none was)."""
    path = slurm_jobs_path(out)
    if not path.exists():
        return []
    try:
        arrays = read_json(path).get("arrays", [])
    except (OSError, ValueError, AttributeError):
        raise UsageError(f"{path}: not a list of Slurm arrays; remove it or fix it") from None
    return [a for a in arrays if isinstance(a, dict) and isinstance(a.get("job_id"), str)]


class ArrayWatch:
    """Says, like a worker process's ``poll``, whether an array has ended (no task in squeue)."""

    def __init__(self, array: str) -> None:
        self.array, self.checked, self.ended = array, 0.0, False

    def poll(self) -> int | None:
        if not self.ended and time.monotonic() - self.checked >= POLL_SECONDS:
            self.checked = time.monotonic()
            self.ended = not active_tasks(self.array)
        return 0 if self.ended else None


def active_tasks(array: str) -> dict[str, str]:
    """The array's tasks that squeue lists (pending, running, ...): task id -> state."""
    done = subprocess.run(
        ["squeue", "--noheader", "--array", f"--jobs={array}", "--format=%i|%T"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:  # e.g. "Invalid job id": the controller forgot a finished array
        return {}
    return dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)


def task_states(array: str) -> Counter:
    """How many of the array's tasks are in each state: sacct's record (finished tasks too) where
    accounting is on, else squeue's (pending and running tasks only)."""
    done = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={array}", "--format=JobID,State"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    states: Counter = Counter()
    if done.returncode == 0 and done.stdout.strip():
        for line in done.stdout.splitlines():
            job, _, state = line.partition("|")
            states[state.split()[0] if state else "UNKNOWN"] += _task_count(job)
        return states
    return Counter(active_tasks(array).values())


def _task_count(job: str) -> int:
    """Tasks in a sacct job id: 12_3 is one, 12_[4-7%2] four, 12_[1,3-4] three."""
    if "[" not in job:
        return 1
    ranges = job.split("[", 1)[1].rstrip("]").split("%")[0]
    count = 0
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        count += int(high) - int(low) + 1 if high else 1
    return count


def status_lines(out: Path) -> list[str]:
    """One line per array submitted for RESULTS: its tasks by state."""
    if not recorded_arrays(out):
        return []
    if shutil.which("squeue") is None:
        return [f"slurm: {len(recorded_arrays(out))} array(s) recorded, but squeue is not on PATH"]
    lines = []
    for array in recorded_arrays(out):
        states = task_states(array["job_id"])
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no task known to Slurm now"
        lines.append(
            f"slurm array {array['job_id']} ({array.get('tasks', '?')} tasks, {array.get('partition')}): {counts}"
        )
    return lines


def cancel(out: Path) -> list[str]:
    """scancel the arrays of RESULTS that still have tasks pending or running; their ids."""
    if shutil.which("scancel") is None:
        raise UsageError("cancel: scancel is not on PATH (run on a Slurm login node)")
    cancelled = []
    for array in recorded_arrays(out):
        if active_tasks(array["job_id"]):
            submitit.SlurmJob(folder=slurm_dir(out) / "%j", job_id=array["job_id"]).cancel(check=True)
            cancelled.append(array["job_id"])
    return cancelled


def _last_line(text: str) -> str:
    """The last line of a tool's error output (where sbatch and sinfo say what went wrong)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
