"""Tasks, deterministic from a seed: ``load_task(config.task, seed)`` gives a Dataset.

teacher (E2), harmonic (E3), piecewise (E6), digits, mnist, fashion_mnist, cifar10. The symmetric
functions of E1/E7 are not datasets: see ``harness.data.symmetric``.
"""

from __future__ import annotations

from harness.config import TaskConfig
from harness.data import harmonic, piecewise, teacher
from harness.data.dataset import Dataset
from harness.data.images import TORCHVISION, digits_task, torchvision_task


def load_task(task: TaskConfig, seed: int) -> Dataset:
    """The dataset of a supervised task (``task.seed`` overrides ``seed`` when set)."""
    seed = task.seed if task.seed is not None else seed
    n_train, n_test = task.n_train, task.n_test
    if task.name == "teacher":
        noise = teacher.DEFAULT_NOISE if task.noise is None else task.noise
        return teacher.teacher_task(n_train, n_test, input_dim=task.input_dim, width=task.teacher_width,
                                    weight_range=task.teacher_range, noise=noise, seed=seed)
    if task.name == "harmonic":
        noise = harmonic.DEFAULT_NOISE if task.noise is None else task.noise
        return harmonic.harmonic_task(n_train, n_test, order=task.order, frequency=task.frequency, noise=noise, seed=seed)
    if task.name == "piecewise":
        noise = piecewise.DEFAULT_NOISE if task.noise is None else task.noise
        return piecewise.piecewise_task(n_train, n_test, segments=task.segments, context=task.context, noise=noise, seed=seed)
    if task.name == "digits":
        return digits_task(n_train, n_test, seed=seed)
    if task.name in TORCHVISION:
        return torchvision_task(task.name, n_train, n_test, data_root=task.data_root, download=task.download, seed=seed)
    raise ValueError(f"task {task.name!r} is not a dataset (symmetric objects come from harness.data.symmetric)")


__all__ = ["Dataset", "load_task"]
