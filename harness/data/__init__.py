"""Tasks, deterministic from a seed: ``load_task(config.task, seed)`` gives a Dataset.

With ``task.validation`` > 0 the task draws that fraction of n_train extra training points and
evaluates on them in place of the test split (``hold_out``): tuning measures on those.

teacher (E2), harmonic (E3), piecewise (E6), digits, mnist, fashion_mnist, cifar10. The symmetric
functions of E1/E7 are not datasets: see ``harness.data.symmetric``.
"""

from __future__ import annotations

import math

from harness.config import TaskConfig
from harness.data import harmonic, piecewise, teacher
from harness.data.dataset import Dataset
from harness.data.images import TORCHVISION, digits_task, torchvision_task


def load_task(task: TaskConfig, seed: int) -> Dataset:
    """The dataset of a supervised task (``task.seed`` overrides ``seed`` when set)."""
    n_validation = math.ceil(task.validation * task.n_train)
    data = _generate(task, task.seed if task.seed is not None else seed, task.n_train + n_validation)
    return hold_out(data, n_validation) if n_validation else data


def hold_out(data: Dataset, n: int) -> Dataset:
    """The last ``n`` training points become the evaluation split; the test split is dropped."""
    return Dataset(
        data.name,
        data.x_train[:-n],
        data.y_train[:-n],
        data.x_train[-n:],
        data.y_train[-n:],
        classification=data.classification,
    )


def _generate(task: TaskConfig, seed: int, n_train: int) -> Dataset:
    n_test = task.n_test
    if task.name == "teacher":
        noise = teacher.DEFAULT_NOISE if task.noise is None else task.noise
        return teacher.teacher_task(
            n_train,
            n_test,
            input_dim=task.input_dim,
            width=task.teacher_width,
            weight_range=task.teacher_range,
            noise=noise,
            seed=seed,
            teacher_seed=task.teacher_seed,
        )
    if task.name == "harmonic":
        noise = harmonic.DEFAULT_NOISE if task.noise is None else task.noise
        return harmonic.harmonic_task(
            n_train, n_test, order=task.order, frequency=task.frequency, noise=noise, seed=seed
        )
    if task.name == "piecewise":
        noise = piecewise.DEFAULT_NOISE if task.noise is None else task.noise
        return piecewise.piecewise_task(
            n_train, n_test, segments=task.segments, context=task.context, noise=noise, seed=seed
        )
    if task.name == "digits":
        return digits_task(n_train, n_test, seed=seed)
    if task.name in TORCHVISION:
        return torchvision_task(task.name, n_train, n_test, data_root=task.data_root, download=task.download, seed=seed)
    raise ValueError(f"task {task.name!r} is not a dataset (symmetric objects come from harness.data.symmetric)")


__all__ = ["Dataset", "hold_out", "load_task"]
