"""Checkpoints inside a run: where they go, when they are due, and which one a run resumes from.

The training loop (harness/train/loop.py) builds a checkpoint's content: the state of every arm
of one ``train_side_by_side`` call (parameters and multiplicities, optimizer and schedule state,
sampler, records so far, status, seconds), the step and the global RNG states. This module writes
it into the checkpoint folder of each run of the call (the store's ``checkpoint_dir``), whole or
not at all (a temporary name, then os.replace); keeps the newest ``KEPT``; and reads back the
newest one that loads and fits the call. A file is one header line (``HEADER``, the format
version, its run id, the SHA-256 of the rest) and torch.save's bytes of the content, encoded once
for all the call's runs: a
file cut short, with a changed byte (which torch.load alone may not notice in tensor data), of
another format (never unpickled), of another run or that does not fit is reported in one
warning line and deleted, and the next older one is tried: a run resumes from a sound checkpoint
or from step 0. A sound file that does not fit the call (other arms, steps or shapes) is reported
and kept.

Optimizer states are kept per arm and per parameter, under harness/train/stacked_optim.py's
names, so either path reads them: a run checkpointed in a batched stack can go on alone (one at a
time through torch.optim) and the other way round, its numbers then within the two paths'
agreement (harness/train/batched.py) rather than bit for bit.

The runner says where a call's checkpoints go by running it inside ``writing_to(Target(...))``;
a call made outside one (``run_arms`` in memory) writes none.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.tracking.store import checkpoint_dir, checkpoint_path, checkpoint_step, write_atomic_with

HEADER = b"polyscale-checkpoint"
FORMAT = 1  # raise it when the content changes: older files are then skipped, never misread
RESULT = "result.pt"  # a finished stage's result, in its subfolder
KEPT = 2  # checkpoints kept per run: the newest may be cut short by a kill, the one before is whole
DEFAULT_SECONDS = 600.0  # wall-clock interval: short runs write none
logger = logging.getLogger(__name__)


@dataclass
class Target:
    """Where one call's checkpoints go: the results folder and the run id of each recorded arm
    (an arm trained only as another's reference has none: its state travels in theirs)."""

    out: Path
    runs: dict[str, str]
    every: int | None = None  # steps between checkpoints (train.checkpoint_every); None: by the clock alone
    seconds: float = DEFAULT_SECONDS
    resume: bool = True  # False: start from step 0 and forget the run's old checkpoints
    on_restore: Callable[[str, list[dict]], None] | None = None  # (arm, its records so far) on a resume
    # A subfolder of each run's checkpoint folder for a stage trained before the run's own
    # training (the imp arm's pruning rounds): its checkpoints and its result (``save_result``)
    # never mix with the run's. "": the run's own training.
    stage: str = ""


_target: contextvars.ContextVar[Target | None] = contextvars.ContextVar("checkpoint_target", default=None)


@contextlib.contextmanager
def writing_to(target: Target) -> Iterator[None]:
    """Training calls made inside (in this thread) checkpoint into ``target``."""
    token = _target.set(target)
    try:
        yield
    finally:
        _target.reset(token)


def current() -> Target | None:
    return _target.get()


class Checkpoints:
    """One call's checkpoints: due by steps or by the clock, written to every run, read back."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.written = time.monotonic()
        if not target.resume:
            for run_id in target.runs.values():
                if target.stage:
                    shutil.rmtree(_folder(target.out, run_id, target.stage), ignore_errors=True)
                else:
                    discard(target.out, run_id)

    def due(self, step: int) -> bool:
        every = self.target.every
        return bool(every and step % every == 0) or time.monotonic() - self.written >= self.target.seconds

    def write(self, state: dict) -> None:
        """``state`` (with its ``step``) into each run's folder; older ones beyond KEPT removed.

        A file that cannot be written (a full disk) is reported and training goes on: the run
        then resumes from an older checkpoint, or from step 0.
        """
        payload = _encode(state)
        out, stage = self.target.out, self.target.stage
        for run_id in self.target.runs.values():
            path = _folder(out, run_id, stage) / checkpoint_path(out, run_id, state["step"]).name
            data = _header(run_id, payload) + payload
            try:
                write_atomic_with(path, lambda tmp, data=data: tmp.write_bytes(data))
            except OSError as exc:
                logger.warning("%s: checkpoint not written (%s); training goes on", path, exc.strerror or exc)
                continue
            for old in _files(out, run_id, stage)[KEPT:]:
                old.unlink(missing_ok=True)
        self.written = time.monotonic()

    def latest(self, problem: Callable[[dict], str | None]) -> dict | None:
        """The newest checkpoint of any of the runs for which ``problem`` finds nothing wrong, or None."""
        if not self.target.resume:
            return None
        out, stage = self.target.out, self.target.stage
        candidates = [(path, run_id) for run_id in self.target.runs.values() for path in _files(out, run_id, stage)]
        for path, run_id in sorted(candidates, key=lambda candidate: checkpoint_step(candidate[0]), reverse=True):
            state, damage = _load(path, run_id)
            why = damage or problem(state)
            if why is None:
                return state
            logger.warning("%s: %s; trying an older checkpoint or step 0", path, why)
            if damage:  # a sound file that does not fit this call is kept: another call may resume from it
                path.unlink(missing_ok=True)
        return None

    def restored(self, arm: str, history: list[dict]) -> None:
        """Tell the runner what a recorded arm's records were at the checkpoint resumed from."""
        if self.target.on_restore is not None and arm in self.target.runs:
            self.target.on_restore(arm, history)


def save_result(target: Target, result: dict) -> None:
    """A finished stage's ``result`` (tensors, lists, numbers) into each run's stage folder, whole
    or not at all, so that a resumed run reads it back (``saved_result``) instead of training the
    stage again. A file that cannot be written is reported: the stage is then trained again."""
    payload = _encode(result)
    for run_id in target.runs.values():
        path = _folder(target.out, run_id, target.stage) / RESULT
        data = _header(run_id, payload) + payload
        try:
            write_atomic_with(path, lambda tmp, data=data: tmp.write_bytes(data))
        except OSError as exc:
            logger.warning(
                "%s: stage result not written (%s); a resumed run trains it again", path, exc.strerror or exc
            )


def saved_result(target: Target) -> dict | None:
    """A stage's result as ``save_result`` wrote it for any of the runs, or None (none sound, or
    ``target.resume`` is False); an unsound file is reported and deleted."""
    if not target.resume:
        return None
    for run_id in target.runs.values():
        path = _folder(target.out, run_id, target.stage) / RESULT
        if not path.exists():
            continue
        result, why = _load(path, run_id)
        if why is None:
            return result
        logger.warning("%s: %s; the stage is trained again", path, why)
        path.unlink(missing_ok=True)
    return None


def discard(out: Path, run_id: str, keep_last: bool = False) -> None:
    """Remove a run's checkpoints (``keep_last``: all but the newest)."""
    if keep_last:
        for old in _files(out, run_id)[1:]:
            old.unlink(missing_ok=True)
        for stage in checkpoint_dir(out, run_id).glob("*/"):  # stages before the run's training: done
            shutil.rmtree(stage, ignore_errors=True)
    else:
        shutil.rmtree(checkpoint_dir(out, run_id), ignore_errors=True)


def rng_state() -> dict:
    """torch's and numpy's global generators (numpy's as plain data, so the file loads weights-only)."""
    numpy = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "numpy": {**numpy, "state": {**numpy["state"], "key": numpy["state"]["key"].tolist()}},
    }


def set_rng_state(state: dict) -> None:
    numpy = state["numpy"]
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        {**numpy, "state": {**numpy["state"], "key": np.asarray(numpy["state"]["key"], dtype=np.uint32)}}
    )


def _folder(out: Path, run_id: str, stage: str = "") -> Path:
    return checkpoint_dir(out, run_id) / stage if stage else checkpoint_dir(out, run_id)


def _files(out: Path, run_id: str, stage: str = "") -> list[Path]:
    """The run's (or its stage's) checkpoint files, newest step first."""
    return sorted(_folder(out, run_id, stage).glob("step-*.pt"), key=checkpoint_step, reverse=True)


def _encode(content: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


def _header(run_id: str, payload: bytes) -> bytes:
    return b"%s %d %s %s\n" % (HEADER, FORMAT, run_id.encode(), hashlib.sha256(payload).hexdigest().encode())


def _load(path: Path, run_id: str) -> tuple[dict, str | None]:
    """(the checkpoint, None) or ({}, what is wrong with it: unreadable, another format or run)."""
    try:
        header, _, payload = path.read_bytes().partition(b"\n")
    except OSError as exc:
        return {}, f"cannot be read ({exc.strerror or exc})"
    fields = header.split(b" ")
    if len(fields) < 2 or fields[0] != HEADER:
        return {}, "is not a polyscale checkpoint"
    if fields[1] != str(FORMAT).encode():
        return {}, f"has format {fields[1].decode(errors='replace')}, not {FORMAT}"
    if len(fields) != 4:
        return {}, "is not a polyscale checkpoint"
    if fields[2] != run_id.encode():
        return {}, f"written for run {fields[2].decode(errors='replace')!r}"
    if hashlib.sha256(payload).hexdigest().encode() != fields[3]:
        return {}, "is damaged (cut short or changed: its checksum does not match)"
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a file that passed its checksum yet fails in pickle, zip or torch code
        return {}, f"does not load ({type(exc).__name__}: {exc})".splitlines()[0]
    if not isinstance(state, dict):
        return {}, "holds no checkpoint"
    return state, None
