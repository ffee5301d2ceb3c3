"""Checkpoints inside a run and resuming from them (harness/train/checkpoint.py).

The truth a resumed run is held to is the same configuration run without interruption into
another results folder: in float64 on a CPU its metrics.jsonl must be the same text and its
summary.json the same values (times excepted).
"""

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import preempt
from harness.cli import main
from harness.config import load_configs, parse_config, run_id, to_dict
from harness.experiments.runner import run_config, run_configs
from harness.tracking.store import checkpoint_dir, read_status, run_dir
from harness.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
EVERY = 20  # train.checkpoint_every of the configurations here


def config(optimizer: str = "adamw", lr: float = 0.01, seed: int = 0, steps: int = 200, **train):
    """A small float64 data experiment (four arms, each its own sampler)."""
    if optimizer not in ("gd", "rprop"):
        train.setdefault("batch_size", 32)
    return parse_config(
        {
            "experiment": "data",
            "seed": seed,
            "device": "cpu",
            "task": {"name": "teacher", "n_train": 200, "n_test": 100},
            "model": {"width": 8},
            "compression": {"k": 2, "size": 30},
            "train": {
                "optimizer": optimizer,
                "lr": lr,
                "steps": steps,
                "eval_every": 10,
                "dtype": "float64",
                "checkpoint_every": EVERY,
                **train,
            },
        }
    )


class StopAt:
    """An observer that asks for a stop when a run records ``step``, and notes every step logged."""

    def __init__(self, step: int | None = None) -> None:
        self.step, self.logged, self.first = step, [], {}

    def run_started(self, *args) -> None:
        pass

    def run_finished(self, *args) -> None:
        pass

    def run_logged(self, rid: str, record: dict) -> None:
        self.logged.append(record["step"])
        self.first.setdefault(rid, record["step"])
        if record["step"] == self.step:
            preempt.request_stop("test")


@pytest.fixture(autouse=True)
def no_stop_left():
    preempt.clear()
    yield
    preempt.clear()


def stop_at(step: int, train) -> None:
    """Run ``train(observers)``, which must stop with Preempted after ``step``."""
    with pytest.raises(preempt.Preempted):
        train([StopAt(step)])
    preempt.clear()


def assert_same_results(reference: Path, resumed: Path, ids) -> None:
    for rid in ids:
        a, b = run_dir(reference, rid), run_dir(resumed, rid)
        assert read_status(reference, rid) == read_status(resumed, rid) != "running"
        assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text(), rid
        steps = [json.loads(line)["step"] for line in (b / "metrics.jsonl").read_text().splitlines()]
        assert len(steps) == len(set(steps))
        summaries = [json.loads((d / "summary.json").read_text()) for d in (a, b)]
        for summary in summaries:
            for key in [k for k in summary if k.endswith("_seconds") or k == "out"]:  # times; the folder
                del summary[key]
        assert summaries[0] == summaries[1], rid


def checkpoint_steps(out: Path, rid: str) -> list[int]:
    return sorted(int(p.stem.removeprefix("step-")) for p in checkpoint_dir(out, rid).glob("step-*.pt"))


def ids_of(c) -> list[str]:
    return [run_id(c, arm) for arm in c.arm_names]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rprop"])
def test_a_stop_request_checkpoints_and_the_rerun_resumes_to_the_same_result(tmp_path, optimizer):
    c = config(optimizer, momentum=0.9) if optimizer == "sgd" else config(optimizer)
    run_config(c, tmp_path / "reference")
    stop_at(50, lambda observers: run_config(c, tmp_path / "cut", observers=observers))
    for rid in ids_of(c):
        assert read_status(tmp_path / "cut", rid) == "running"
        assert checkpoint_steps(tmp_path / "cut", rid) == [40, 50]  # at most two kept
    rerun = StopAt()
    run_config(c, tmp_path / "cut", observers=[rerun])
    assert min(rerun.logged) == 60  # went on after step 50: nothing before it was trained again
    assert_same_results(tmp_path / "reference", tmp_path / "cut", ids_of(c))
    assert not any(checkpoint_dir(tmp_path / "cut", rid).exists() for rid in ids_of(c))


def test_width_arms_sharing_a_sampler_with_an_unrecorded_reference_resume_to_the_same_result(tmp_path):
    """The original is trained as the compressed arms' reference without being a run of its own:
    its state travels in their checkpoints."""
    raw = to_dict(config("adamw"))
    raw.update(
        experiment="width",
        arms=["moment", "random"],
        task={"name": "harmonic", "n_train": 200, "n_test": 100, "order": 2, "frequency": 3.0},
        model={"width": 40},
        compression={"k": 2, "size": 15},
    )
    c = parse_config(raw)
    run_config(c, tmp_path / "reference")
    stop_at(50, lambda observers: run_config(c, tmp_path / "cut", observers=observers))
    rerun = StopAt()
    run_config(c, tmp_path / "cut", observers=[rerun])
    assert min(rerun.logged) == 60 and len(ids_of(c)) == 2
    assert_same_results(tmp_path / "reference", tmp_path / "cut", ids_of(c))


def test_a_batched_stack_with_a_diverged_model_resumes_to_the_same_result(tmp_path):
    configs = [config("sgd", 0.05, 0, momentum=0.9), config("sgd", 1e6, 2, momentum=0.9)]  # the second diverges
    jobs = [(c, None) for c in configs]
    run_configs(jobs, tmp_path / "reference")
    stop_at(50, lambda observers: run_configs(jobs, tmp_path / "cut", observers=observers))
    rerun = StopAt()
    run_configs(jobs, tmp_path / "cut", observers=[rerun])
    assert min(rerun.logged) == 60
    ids = [rid for c in configs for rid in ids_of(c)]
    assert {read_status(tmp_path / "cut", rid) for rid in ids} == {"done", "diverged"}
    assert_same_results(tmp_path / "reference", tmp_path / "cut", ids)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rprop"])
def test_a_checkpoint_goes_on_through_the_other_path(tmp_path, optimizer):
    """Checkpointed batched, resumed alone (one at a time), and the other way round: the paths
    agree as closely as they do from step 0 (tests/test_train_batched.py)."""
    c = config(optimizer, momentum=0.9) if optimizer == "sgd" else config(optimizer)
    run_config(c, tmp_path / "reference")
    stop_at(50, lambda observers: run_configs([(c, None)], tmp_path / "batched", observers=observers))
    stop_at(50, lambda observers: run_config(c, tmp_path / "alone", observers=observers))
    for out, resume in ((tmp_path / "batched", run_config), (tmp_path / "alone", run_configs)):
        rerun = StopAt()
        if resume is run_config:
            run_config(c, out, observers=[rerun])
        else:
            run_configs([(c, None)], out, observers=[rerun])
        assert min(rerun.logged) == 60
        for rid in ids_of(c):
            records = [read_records(where, rid) for where in (tmp_path / "reference", out)]
            assert [r["step"] for r in records[0]] == [r["step"] for r in records[1]]
            for a, b in zip(*records):
                for key in ("train_loss", "test_loss", "full_train_loss"):
                    assert b[key] == pytest.approx(a[key], rel=1e-10, abs=0), (rid, a["step"], key)


def read_records(out: Path, rid: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir(out, rid) / "metrics.jsonl").read_text().splitlines()]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scramble(path: Path) -> None:
    """64 random bytes in the tensor data (torch.load alone would load them)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
    path.write_bytes(bytes(data))


def old_format(path: Path) -> None:
    header, _, payload = path.read_bytes().partition(b"\n")
    path.write_bytes(header.replace(b" 1 ", b" 0 ", 1) + b"\n" + payload)


@pytest.mark.parametrize(
    "damage, why",
    [
        (truncate, "is damaged"),
        (scramble, "is damaged"),
        (old_format, "has format 0, not 1"),
        ("foreign", "written for run 'data-"),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage, why):
    c = config("adamw")
    run_config(c, tmp_path / "reference")
    stop_at(50, lambda observers: run_config(c, tmp_path / "cut", observers=observers))
    ids = ids_of(c)
    for rid in ids:  # the newest checkpoint of every run, so none is left to resume at step 50
        newest = checkpoint_dir(tmp_path / "cut", rid) / "step-000000050.pt"
        if damage == "foreign":
            other = ids[(ids.index(rid) + 1) % len(ids)]
            newest.write_bytes((checkpoint_dir(tmp_path / "cut", other) / "step-000000050.pt").read_bytes())
        else:
            damage(newest)
    rerun = StopAt()
    with caplog.at_level(logging.WARNING):
        run_config(c, tmp_path / "cut", observers=[rerun])
    warned = [r.getMessage() for r in caplog.records if "step-000000050.pt" in r.getMessage()]
    assert len(warned) == len(ids) and all(why in line and "\n" not in line for line in warned), warned
    assert min(rerun.logged) == 50  # resumed from the checkpoints at step 40
    assert_same_results(tmp_path / "reference", tmp_path / "cut", ids)


def test_keep_checkpoints_keeps_the_last_one(tmp_path):
    c = config("adamw", steps=100)
    run_config(c, tmp_path / "kept", keep_checkpoints=True)
    for rid in ids_of(c):
        assert checkpoint_steps(tmp_path / "kept", rid) == [80]


def test_the_checkpoint_interval_does_not_enter_the_run_id():
    c = config("adamw")
    raw = to_dict(c)
    raw["train"].pop("checkpoint_every")
    assert ids_of(c) == ids_of(parse_config(raw))


def signal_after_first_checkpoint(command: list[str], folder: Path, signum: int) -> tuple[int, str]:
    """Start ``command``, send it ``signum`` once ``folder`` holds a checkpoint; its exit status and
    standard error."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not list(folder.glob("step-*.pt")) and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def kill_after_first_checkpoint(command: list[str], folder: Path) -> None:
    """Start ``command``, kill -9 it once ``folder`` holds a checkpoint."""
    returncode, _ = signal_after_first_checkpoint(command, folder, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, "the run ended before its first checkpoint"


def rerun_from_checkpoint(spec: Path, cut: Path, ids: list[str]) -> tuple[int, list[int]]:
    """The newest checkpoint step of ``ids`` in ``cut``, and the steps that the same `polyscale run`
    then logs."""
    resumed_at = max(step for rid in ids for step in checkpoint_steps(cut, rid))
    with pytest.MonkeyPatch.context() as patch:
        rerun = StopAt()
        patch.setattr("harness.experiments.runner.run_config", functools.partial(run_config, observers=[rerun]))
        assert main(["run", str(spec), "--out", str(cut)]) == 0
    return resumed_at, rerun.logged


SPEC = """\
experiment: data
device: cpu
task: {name: teacher, n_train: 200, n_test: 100}
model: {width: 8}
compression: {k: 2, size: 30}
arms: [original, moment]
train: {optimizer: adamw, lr: 0.01, steps: 600, batch_size: 32, eval_every: 10, dtype: float64, checkpoint_every: 20}
"""


def test_kill_9_mid_run_then_the_same_command_gives_the_same_result(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    (c,) = load_configs(spec)
    cut, reference = tmp_path / "cut", tmp_path / "reference"
    command = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(cut)]
    kill_after_first_checkpoint(command, checkpoint_dir(cut, ids_of(c)[0]))
    assert all(read_status(cut, rid) == "running" for rid in ids_of(c))
    resumed_at, logged = rerun_from_checkpoint(spec, cut, ids_of(c))
    assert min(logged) == resumed_at + 10
    assert main(["run", str(spec), "--out", str(reference)]) == 0
    assert_same_results(reference, cut, ids_of(c))


def test_sigterm_mid_run_checkpoints_exits_75_and_the_same_command_resumes_from_it(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    (c,) = load_configs(spec)
    cut, reference = tmp_path / "cut", tmp_path / "reference"
    command = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(cut)]
    returncode, stderr = signal_after_first_checkpoint(command, checkpoint_dir(cut, ids_of(c)[0]), signal.SIGTERM)
    assert returncode == 75, stderr
    assert "Traceback" not in stderr and stderr.strip().count("\n") == 0, stderr
    assert all(read_status(cut, rid) == "running" for rid in ids_of(c))
    # The stop came between two steps: the checkpoint written then is the newest, past the
    # periodic ones, and the rerun starts right after it.
    resumed_at, logged = rerun_from_checkpoint(spec, cut, ids_of(c))
    assert min(logged) > resumed_at > 0
    assert main(["run", str(spec), "--out", str(reference)]) == 0
    assert_same_results(reference, cut, ids_of(c))


BATCHED = """\
import sys
from harness.config import load_configs
from harness.experiments.runner import run_configs
run_configs([(c, None) for c in load_configs(sys.argv[1])], sys.argv[2])
"""


def test_kill_9_mid_batched_run_then_the_same_call_gives_the_same_result(tmp_path):
    spec = tmp_path / "specs.yaml"
    spec.write_text(SPEC + "---\n" + SPEC.replace("lr: 0.01", "lr: 0.02"))
    configs = load_configs(spec)
    cut, reference = tmp_path / "cut", tmp_path / "reference"
    command = [sys.executable, "-c", BATCHED, str(spec), str(cut)]
    kill_after_first_checkpoint(command, checkpoint_dir(cut, ids_of(configs[1])[0]))
    ids = [rid for c in configs for rid in ids_of(c)]
    assert all(read_status(cut, rid) == "running" for rid in ids)
    # Each configuration goes on from its newest checkpoint (a kill between two configurations'
    # writes leaves them at different steps), its first record the next evaluation after it.
    resumed_at = {c: max(step for rid in ids_of(c) for step in checkpoint_steps(cut, rid)) for c in configs}
    rerun = StopAt()
    run_configs([(c, None) for c in configs], cut, observers=[rerun])
    assert all(rerun.first[rid] == resumed_at[c] + 10 for c in configs for rid in ids_of(c))
    run_configs([(c, None) for c in configs], reference)
    assert_same_results(reference, cut, ids)


def test_a_checkpoint_that_cannot_be_written_is_reported_and_training_goes_on(tmp_path, caplog):
    c = config("adamw", steps=60)
    run_config(c, tmp_path / "reference")
    for rid in ids_of(c):  # a file where the checkpoint folder would go
        checkpoint_dir(tmp_path / "blocked", rid).parent.mkdir(parents=True)
        checkpoint_dir(tmp_path / "blocked", rid).write_text("")
    with caplog.at_level(logging.WARNING):
        run_config(c, tmp_path / "blocked")
    assert caplog.text.count("checkpoint not written") == 2 * len(ids_of(c))  # steps 20 and 40
    assert_same_results(tmp_path / "reference", tmp_path / "blocked", ids_of(c))


def test_an_arm_added_after_a_checkpoint_trains_apart_and_the_others_resume(tmp_path, caplog):
    """The checkpointed arms go on from their checkpoint; the new arm starts from step 0 in a call
    of its own (it used to take the others back to step 0 and delete their checkpoint)."""
    raw = to_dict(config("adamw"))
    raw.update(
        experiment="width",
        task={"name": "harmonic", "n_train": 200, "n_test": 100, "order": 2, "frequency": 3.0},
        model={"width": 40},
        compression={"k": 2, "size": 15},
    )
    first, added = parse_config({**raw, "arms": ["moment", "random"]}), parse_config({**raw, "arms": ["magnitude"]})
    both = parse_config({**raw, "arms": ["moment", "random", "magnitude"]})
    assert ids_of(both) == ids_of(first) + ids_of(added)  # the arms list names no run
    run_config(first, tmp_path / "reference")
    run_config(added, tmp_path / "reference")
    stop_at(50, lambda observers: run_config(first, tmp_path / "cut", observers=observers))
    rerun = StopAt()
    with caplog.at_level(logging.WARNING):
        run_config(both, tmp_path / "cut", observers=[rerun])
    assert [rerun.first[rid] for rid in ids_of(both)] == [60, 60, 0]
    assert not [r for r in caplog.records if "trying an older checkpoint" in r.getMessage()]
    assert_same_results(tmp_path / "reference", tmp_path / "cut", ids_of(both))


def test_a_sound_checkpoint_that_does_not_fit_the_call_is_kept(tmp_path, caplog):
    c = config("adamw")
    stop_at(50, lambda observers: run_config(c, tmp_path / "cut", observers=observers))
    rid = ids_of(c)[0]
    target = checkpoint.Target(tmp_path / "cut", {"original": rid})
    with caplog.at_level(logging.WARNING):
        assert checkpoint.Checkpoints(target).latest(lambda state: "does not fit") is None
    assert checkpoint_steps(tmp_path / "cut", rid) == [40, 50]
    assert sum("does not fit; trying an older checkpoint" in r.getMessage() for r in caplog.records) == 2
