"""Read what W&B offline mode wrote: the records of a ``run-<id>.wandb`` file.

wandb >= 0.19 writes these from its Go core and ships no Python reader. The file is a 7-byte W&B
header followed by LevelDB's log format: 32 KiB blocks of chunks, each with a 7-byte header
(crc32c, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) and a protobuf ``Record`` payload.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path):
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(raw):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer too small for a header: skip to next block
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        chunk = raw[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield _parse(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield _parse(pending + chunk)


def _parse(data: bytes) -> pb.Record:
    record = pb.Record()
    record.ParseFromString(data)
    return record


def offline_run(wandb_dir: Path, run_id: str) -> dict:
    """The run header, config, history rows and final summary of one offline run."""
    [path] = list(Path(wandb_dir).glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    out = {"run_id": None, "group": None, "job_type": None, "config": {}, "history": [], "summary": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(run_id=record.run.run_id, group=record.run.run_group, job_type=record.run.job_type)
            out["config"].update(_items(record.run.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
    return out


def _items(items) -> dict:
    """Key/value items; a key comes either as ``key`` or as the parts of ``nested_key``."""
    return {(item.key or ".".join(item.nested_key)): json.loads(item.value_json) for item in items}
