"""The sweep coordinator on a machine with GPUs: it spreads workers over them and sizes their
batches without ever opening a CUDA context (torch.cuda's lazy initialisation is made to fail,
so any call that would open one fails the test); workers on one GPU divide its memory."""

import pytest
import torch

from harness.config import parse_config
from harness.sweep import batching
from harness.sweep.launch import assign_devices

CONFIG = {
    "experiment": "width",
    "task": {"name": "teacher", "n_train": 1000, "n_test": 100},
    "model": {"width": 64},
    "compression": {"k": 1, "size": 10},
    "train": {"steps": 10, "batch_size": 100},
}


@pytest.fixture
def two_gpus_never_initialised(monkeypatch):
    """torch.cuda as on a machine with two GPUs, where opening a context raises."""

    def refuse():
        raise AssertionError("the coordinator opened a CUDA context")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "init", refuse)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *args: refuse())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    yield
    assert not torch.cuda.is_initialized()


def test_assign_devices_spreads_workers_over_the_gpus(two_gpus_never_initialised):
    assert assign_devices("cuda", 5) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]


@pytest.mark.parametrize(("device", "workers", "sharing"), [("cuda", 4, 2), ("cuda", 3, 2), ("cuda:1", 3, 3)])
def test_workers_on_one_gpu_share_its_memory(two_gpus_never_initialised, monkeypatch, device, workers, sharing):
    config = parse_config(CONFIG)
    free = 40 * batching.job_bytes(config)  # room for 40 jobs in all at MEMORY_SHARE 0.5: 20
    monkeypatch.setattr(batching, "gpu_free_memory", lambda where: free)
    configs = [parse_config({**CONFIG, "seed": seed}) for seed in range(200)]
    assert batching.per_worker_batch(configs, workers, device) == 20 // sharing


def test_without_the_gpus_free_memory_the_share_of_jobs_bounds_the_batch(two_gpus_never_initialised, monkeypatch):
    monkeypatch.setattr(batching, "gpu_free_memory", lambda where: None)
    configs = [parse_config({**CONFIG, "seed": seed}) for seed in range(10)]
    assert batching.per_worker_batch(configs, 4, "cuda") == 3


def test_gpu_free_memory_is_none_where_the_child_cannot_tell():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the probe answers")
    assert batching.gpu_free_memory("cuda:0") is None
    assert not torch.cuda.is_initialized()
